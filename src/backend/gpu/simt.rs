//! `Simt`: the kernels compiled by g++ (build.rs, `cc`) against `kernels/simt/simt_cpu.h` and run on CPU
//! fibers with exact barrier, shuffle and atomic semantics. Slow, exact and available everywhere. Device
//! memory is host memory; `SIMT_WORKERS` and `SIMT_SCHEDULE=reverse` tune the emulator.
use super::{Device, KArg, Kernel, LaunchCfg};
use anyhow::{bail, Result};
use std::ffi::{c_void, CStr};

type SimtLauncher =
    unsafe extern "C" fn(*const u32, *const u32, std::os::raw::c_ulong, *const *mut c_void) -> i32;

mod ffi {
    use super::SimtLauncher;
    include!(concat!(env!("OUT_DIR"), "/simt_ffi.rs"));
}

/// A buffer of the emulated device.
pub struct SimtMem {
    data: Vec<f32>,
}

/// The emulated device.
#[derive(Default)]
pub struct Simt;

impl Simt {
    pub fn new() -> Self {
        Simt
    }
}

/// Storage for one argument, 8-byte aligned, addressed by the `void*` array.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
union Slot {
    u: u64,
    i: i32,
    f: f32,
    h: super::AdamWHyperC,
}

impl Device for Simt {
    type Mem = SimtMem;

    fn describe(&self) -> String {
        let workers = std::env::var("SIMT_WORKERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        format!("simt (CPU SIMT emulator, {workers} workers)")
    }
    fn alloc_zeros(&self, n: usize) -> Result<SimtMem> {
        Ok(SimtMem { data: vec![0.0; n] })
    }
    fn htod(&self, host: &[f32]) -> Result<SimtMem> {
        Ok(SimtMem {
            data: host.to_vec(),
        })
    }
    fn dtoh(&self, m: &SimtMem) -> Result<Vec<f32>> {
        Ok(m.data.clone())
    }
    fn mem_len(&self, m: &SimtMem) -> usize {
        m.data.len()
    }
    fn copy_d2d(
        &self,
        dst: &mut SimtMem,
        dst_off: usize,
        src: &SimtMem,
        src_off: usize,
        n: usize,
    ) -> Result<()> {
        dst.data[dst_off..dst_off + n].copy_from_slice(&src.data[src_off..src_off + n]);
        Ok(())
    }
    fn addr(&self, m: &SimtMem) -> u64 {
        m.data.as_ptr() as u64
    }
    fn addr_mut(&self, m: &mut SimtMem) -> u64 {
        m.data.as_mut_ptr() as u64
    }
    fn launch(&self, k: Kernel, cfg: LaunchCfg, args: &[KArg]) -> Result<()> {
        let arity = super::registry::KERNEL_ARITY[k as usize];
        if args.len() != arity {
            bail!(
                "{}: {} arguments given, the kernel takes {arity}",
                k.name(),
                args.len()
            );
        }
        let mut slots: Vec<Slot> = args
            .iter()
            .map(|a| match *a {
                KArg::Ptr(p) => Slot { u: p },
                KArg::I32(i) => Slot { i },
                KArg::F32(f) => Slot { f },
                KArg::AdamW(h) => Slot { h },
            })
            .collect();
        let ptrs: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| s as *mut Slot as *mut c_void)
            .collect();
        let f = ffi::SIMT_LAUNCHERS[k as usize];
        // SAFETY: the launcher unpacks exactly `arity` arguments (checked above) of the kernel's declared
        // types from `ptrs`; the GpuBackend launch code passes pointers inside live buffers (module
        // contract in gpu/mod.rs); the launch is synchronous, so `slots` outlives it.
        let rc = unsafe {
            f(
                cfg.grid.as_ptr(),
                cfg.block.as_ptr(),
                cfg.smem as _,
                ptrs.as_ptr(),
            )
        };
        if rc != 0 {
            // SAFETY: simt_last_error returns a NUL-terminated thread-local string owned by the emulator.
            let msg = unsafe { CStr::from_ptr(ffi::simt_last_error()) }
                .to_string_lossy()
                .into_owned();
            bail!(
                "simt launch of {} (grid {:?}, block {:?}) failed: {msg}",
                k.name(),
                cfg.grid,
                cfg.block
            );
        }
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
