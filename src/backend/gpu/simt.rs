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

/// A buffer of the emulated device, laid out like a GPU allocation that faults on overruns: it starts
/// 256-byte aligned (as `cuMemAlloc`), and the page after its last 256-byte block is mapped
/// `PROT_NONE`, so a kernel reading or writing past the end faults; the emulator catches the fault
/// and the launch fails with the kernel and the argument named. Blocks carved from one arena
/// (`Device::alloc_arena`) share one mapping, each still followed by its own guard page.
pub struct SimtMem {
    ptr: *mut f32,
    len: usize,
    /// The mapping the buffer lies in, unmapped when its last buffer is dropped.
    map: std::sync::Arc<Mapping>,
}

// SAFETY: SimtMem owns its block of the mapping exclusively (like a Vec); access goes through &/&mut.
unsafe impl Send for SimtMem {}
// SAFETY: shared references only read.
unsafe impl Sync for SimtMem {}

/// One anonymous mapping holding one or more buffers.
struct Mapping {
    map: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is only unmapped (on drop); the buffers in it are accessed through SimtMem.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping a mapping this value owns; no buffer refers to it any more (each holds the Arc).
        unsafe { libc::munmap(self.map, self.len) };
    }
}

impl SimtMem {
    fn new(n: usize) -> Result<Self> {
        let mut one = Self::in_one_mapping(&[n])?;
        one.pop()
            .ok_or_else(|| anyhow::anyhow!("simt: no buffer mapped"))
    }
    /// Buffers of `sizes[k]` floats in one zeroed mapping, in order, each 256-byte aligned and ending
    /// where its own guard page begins.
    fn in_one_mapping(sizes: &[usize]) -> Result<Vec<Self>> {
        let page = page_size();
        let spans: Vec<(usize, usize)> = sizes
            .iter()
            .map(|&n| {
                let bytes = (4 * n.max(1)).next_multiple_of(256);
                (bytes, bytes.next_multiple_of(page))
            })
            .collect();
        let map_len: usize = spans.iter().map(|&(_, data)| data + page).sum();
        // SAFETY: a fresh anonymous private mapping; checked for failure below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len.max(page),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            bail!(
                "simt: cannot map {} buffer(s) of {} floats in all",
                sizes.len(),
                sizes.iter().sum::<usize>()
            );
        }
        let mapping = std::sync::Arc::new(Mapping {
            map,
            len: map_len.max(page),
        });
        let mut out = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for (&n, &(bytes, data)) in sizes.iter().zip(&spans) {
            // SAFETY: at + data + page ≤ map_len, so the guard page lies inside the mapping.
            let guard = unsafe { (map as *mut u8).add(at + data) };
            // SAFETY: changing the protection of a page of our own mapping (unmapped by `mapping` on
            // the error path).
            if unsafe { libc::mprotect(guard as *mut _, page, libc::PROT_NONE) } != 0 {
                bail!("simt: cannot protect the guard page of a buffer");
            }
            // SAFETY: data ≥ bytes, so the block [guard − bytes, guard) is inside this buffer's span,
            // 256-byte aligned (guard is page aligned, bytes a multiple of 256). Anonymous maps are zeroed.
            let ptr = unsafe { guard.sub(bytes) } as *mut f32;
            out.push(SimtMem {
                ptr,
                len: n,
                map: mapping.clone(),
            });
            at += data + page;
        }
        Ok(out)
    }
    fn as_slice(&self) -> &[f32] {
        // SAFETY: ptr points at len initialised (zeroed or written) floats owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
    /// Whether `self` and `other` lie in the same mapping (one allocation of the emulated device).
    pub fn same_allocation(&self, other: &SimtMem) -> bool {
        std::sync::Arc::ptr_eq(&self.map, &other.map)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096).max(4096)
}

/// What the emulator counted during one launch (`simt_cpu.h`, `struct Counters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Warp-level `mma.sync` instructions.
    pub mma: u64,
    /// Bytes requested by `cp.async` (zero-fill excluded).
    pub cp_async_bytes: u64,
    /// Distinct 32-byte global sectors touched, summed over warp-wide `cp.async` instructions.
    pub cp_async_sectors: u64,
    /// 8×8 matrices (shared-memory phases) loaded by `ldmatrix`.
    pub ldmatrix_phases: u64,
    /// Extra shared-memory wavefronts of those phases (bank-conflict replays).
    pub ldmatrix_replays: u64,
    /// Warp-wide `cp.async` instructions.
    pub cp_async_instr: u64,
}

impl Counters {
    /// Fraction of the bytes of the touched sectors that were requested (1.0: every sector fully used).
    pub fn sector_efficiency(&self) -> f64 {
        if self.cp_async_sectors == 0 {
            return 1.0;
        }
        self.cp_async_bytes as f64 / (32.0 * self.cp_async_sectors as f64)
    }
}

/// One launch as the emulator saw it.
#[derive(Clone, Debug)]
pub struct LaunchRecord {
    pub kernel: Kernel,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub counters: Counters,
}

/// One piece of work recorded while capturing (`Device::capture_begin`).
#[derive(Clone, Debug)]
enum GraphOp {
    Launch {
        k: Kernel,
        cfg: LaunchCfg,
        args: Vec<KArg>,
    },
    Memset {
        addr: u64,
        words: usize,
    },
    Copy {
        dst: u64,
        src: u64,
        words: usize,
    },
}

/// The emulator's CUDA graph: the recorded launches, memsets and copies, replayed in order.
#[derive(Clone, Debug, Default)]
pub struct SimtGraph {
    ops: Vec<GraphOp>,
}

/// The emulated device. With `recording()`, every launch's counters are kept (`launches`).
#[derive(Default)]
pub struct Simt {
    log: Option<std::sync::Mutex<Vec<LaunchRecord>>>,
    /// Launches are checked and recorded but not run; memsets and device copies are skipped.
    dry: bool,
    /// While capturing: the work recorded so far (`Device::capture_begin`).
    capture: std::sync::Mutex<Option<Vec<GraphOp>>>,
}

impl Simt {
    pub fn new() -> Self {
        Simt {
            log: None,
            dry: false,
            capture: Default::default(),
        }
    }
    /// An emulator that records every launch with its counters.
    pub fn recording() -> Self {
        Simt {
            log: Some(std::sync::Mutex::new(Vec::new())),
            dry: false,
            capture: Default::default(),
        }
    }
    /// An emulator that records every launch (grid, block; no counters) without running it, and skips
    /// memsets and device copies: the launch sequence of a workload far too large to emulate (a step's
    /// work does not depend on the values), for `setdino bench --what kernels`. Results are meaningless.
    pub fn dry() -> Self {
        Simt {
            log: Some(std::sync::Mutex::new(Vec::new())),
            dry: true,
            capture: Default::default(),
        }
    }
    /// Records `op` when capturing (`true`: recorded, not to be run now).
    fn captured(&self, op: impl FnOnce() -> GraphOp) -> Result<bool> {
        let mut c = self
            .capture
            .lock()
            .map_err(|_| anyhow::anyhow!("simt capture state poisoned"))?;
        Ok(match c.as_mut() {
            Some(ops) => {
                ops.push(op());
                true
            }
            None => false,
        })
    }
    /// Fails while capturing: `what` needs the host, which a CUDA graph cannot replay.
    fn not_capturing(&self, what: &str) -> Result<()> {
        let c = self
            .capture
            .lock()
            .map_err(|_| anyhow::anyhow!("simt capture state poisoned"))?;
        anyhow::ensure!(
            c.is_none(),
            "simt: {what} while a graph is being captured (a captured step must not allocate, upload, \
             download or wait for the device)"
        );
        Ok(())
    }
    /// The launches recorded so far (empty unless built with `recording`), and clears the record.
    pub fn take_launches(&self) -> Vec<LaunchRecord> {
        match &self.log {
            Some(m) => m
                .lock()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

impl Simt {
    fn record(&self, kernel: Kernel, cfg: LaunchCfg, counters: Counters) {
        if let Some(Ok(mut v)) = self.log.as_ref().map(|l| l.lock()) {
            v.push(LaunchRecord {
                kernel,
                grid: cfg.grid,
                block: cfg.block,
                counters,
            });
        }
    }
}

/// For an out-of-bounds fault: which pointer argument's buffer the address is past the end of (the
/// nearest pointer argument below the address; buffers end against their guard page).
fn fault_culprit(k: Kernel, args: &[KArg], msg: &str) -> Option<String> {
    let hex = msg
        .split("at address 0x")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let addr = u64::from_str_radix(hex, 16).ok()?;
    let names = super::registry::KERNEL_PARAMS.get(k as usize)?;
    let (idx, p) = args
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match *a {
            KArg::Ptr(p) if p != 0 && p <= addr => Some((i, p)),
            _ => None,
        })
        .max_by_key(|&(_, p)| p)?;
    let page = page_size() as u64;
    let past_end = addr - (addr & !(page - 1));
    let name = names.get(idx).copied().unwrap_or("?");
    Some(format!(
        "; the address is {past_end} bytes past the end of the buffer behind argument {idx} `{name}` \
         (it points {} bytes before the fault)",
        addr - p
    ))
}

/// Counters of the last launch made on the calling thread.
fn last_counters() -> Counters {
    let mut c = [0u64; 6];
    // SAFETY: writes exactly 6 u64 (simt::N_COUNTERS) into `c`.
    unsafe { ffi::simt_last_counters(c.as_mut_ptr()) };
    Counters {
        mma: c[0],
        cp_async_bytes: c[1],
        cp_async_sectors: c[2],
        ldmatrix_phases: c[3],
        ldmatrix_replays: c[4],
        cp_async_instr: c[5],
    }
}

/// Storage for one argument, 8-byte aligned, addressed by the `void*` array.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
union Slot {
    u: u64,
    i: i32,
    f: f32,
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
        self.not_capturing("an allocation")?;
        SimtMem::new(n)
    }
    fn alloc_arena(&self, sizes: &[usize]) -> Result<Vec<SimtMem>> {
        self.not_capturing("an allocation")?;
        SimtMem::in_one_mapping(sizes)
    }
    fn same_allocation(&self, a: &SimtMem, b: &SimtMem) -> bool {
        a.same_allocation(b)
    }
    fn htod(&self, host: &[f32]) -> Result<SimtMem> {
        self.not_capturing("an upload")?;
        let mut m = SimtMem::new(host.len())?;
        m.as_mut_slice().copy_from_slice(host);
        Ok(m)
    }
    fn dtoh(&self, m: &SimtMem) -> Result<Vec<f32>> {
        self.not_capturing("a download")?;
        Ok(m.as_slice().to_vec())
    }
    fn mem_len(&self, m: &SimtMem) -> usize {
        m.len
    }
    fn memset_zero(&self, m: &mut SimtMem) -> Result<()> {
        let (addr, words) = (m.ptr as u64, m.len);
        if self.captured(|| GraphOp::Memset { addr, words })? {
            return Ok(());
        }
        if !self.dry {
            m.as_mut_slice().fill(0.0);
        }
        Ok(())
    }
    fn htod_into(&self, host: &[f32], m: &mut SimtMem, off: usize) -> Result<()> {
        self.not_capturing("an upload")?;
        let dst = off
            .checked_add(host.len())
            .and_then(|end| m.as_mut_slice().get_mut(off..end));
        let Some(dst) = dst else {
            bail!("htod_into: {} words at {off} into {}", host.len(), m.len);
        };
        dst.copy_from_slice(host);
        Ok(())
    }
    fn copy_d2d(
        &self,
        dst: &mut SimtMem,
        dst_off: usize,
        src: &SimtMem,
        src_off: usize,
        n: usize,
    ) -> Result<()> {
        anyhow::ensure!(
            dst_off + n <= dst.len && src_off + n <= src.len,
            "simt d2d copy of {n} words out of bounds"
        );
        let (d, sr) = (
            dst.ptr as u64 + 4 * dst_off as u64,
            src.ptr as u64 + 4 * src_off as u64,
        );
        if self.captured(|| GraphOp::Copy {
            dst: d,
            src: sr,
            words: n,
        })? {
            return Ok(());
        }
        if !self.dry {
            dst.as_mut_slice()[dst_off..dst_off + n]
                .copy_from_slice(&src.as_slice()[src_off..src_off + n]);
        }
        Ok(())
    }
    fn addr(&self, m: &SimtMem) -> u64 {
        m.ptr as u64
    }
    fn addr_mut(&self, m: &mut SimtMem) -> u64 {
        m.ptr as u64
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
        if self.captured(|| GraphOp::Launch {
            k,
            cfg,
            args: args.to_vec(),
        })? {
            return Ok(());
        }
        self.run(k, cfg, args)
    }
    fn synchronize(&self) -> Result<()> {
        self.not_capturing("a synchronisation")
    }
    /// The emulator has no clock worth reading: a modelled time stands in (`bench --what kernels`).
    type Mark = ();
    fn mark(&self) -> Result<Option<()>> {
        Ok(None)
    }
    fn elapsed_ms(&self, _: &(), _: &()) -> Result<f64> {
        Ok(0.0)
    }
    /// The emulator has one stream and synchronous copies: staged at once, in order.
    fn upload_staged(
        &self,
        _slot: usize,
        words: usize,
        fill: &mut dyn FnMut(&mut [f32]),
        dsts: &mut [(&mut SimtMem, usize, usize)],
        _fresh: bool,
    ) -> Result<()> {
        self.not_capturing("an upload")?;
        let mut host = vec![0f32; words];
        fill(&mut host);
        for (m, at, n) in dsts.iter_mut() {
            let src = host
                .get(*at..*at + *n)
                .ok_or_else(|| anyhow::anyhow!("staged range {at}+{n} outside {words} words"))?;
            self.htod_into(src, m, 0)?;
        }
        Ok(())
    }
    type Graph = SimtGraph;
    fn capture_begin(&self) -> Result<()> {
        let mut c = self
            .capture
            .lock()
            .map_err(|_| anyhow::anyhow!("simt capture state poisoned"))?;
        anyhow::ensure!(c.is_none(), "simt: a capture is already under way");
        *c = Some(Vec::new());
        Ok(())
    }
    fn capture_end(&self) -> Result<SimtGraph> {
        let ops = self
            .capture
            .lock()
            .map_err(|_| anyhow::anyhow!("simt capture state poisoned"))?
            .take()
            .ok_or_else(|| anyhow::anyhow!("simt: capture_end without capture_begin"))?;
        Ok(SimtGraph { ops })
    }
    fn replay(&self, g: &SimtGraph) -> Result<()> {
        self.not_capturing("a graph replay")?;
        for op in &g.ops {
            match op {
                GraphOp::Launch { k, cfg, args } => self.run(*k, *cfg, args)?,
                _ if self.dry => {}
                &GraphOp::Memset { addr, words } => {
                    // SAFETY: `addr` is the start of a device buffer of `words` words, kept alive for the
                    // graph's lifetime by its owner (Device::replay's contract).
                    unsafe { std::ptr::write_bytes(addr as *mut f32, 0, words) }
                }
                &GraphOp::Copy { dst, src, words } => {
                    // SAFETY: both ranges were bounds-checked at capture and are kept alive by the
                    // graph's owner (Device::replay's contract); `copy` allows overlap, as memmove.
                    unsafe { std::ptr::copy(src as *const f32, dst as *mut f32, words) }
                }
            }
        }
        Ok(())
    }
}

impl Simt {
    /// Runs one launch now (checked arity).
    fn run(&self, k: Kernel, cfg: LaunchCfg, args: &[KArg]) -> Result<()> {
        if self.dry {
            self.record(k, cfg, Counters::default());
            return Ok(());
        }
        let mut slots: Vec<Slot> = args
            .iter()
            .map(|a| match *a {
                KArg::Ptr(p) => Slot { u: p },
                KArg::I32(i) => Slot { i },
                KArg::F32(f) => Slot { f },
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
            let culprit = fault_culprit(k, args, &msg).unwrap_or_default();
            bail!(
                "simt launch of {} (grid {:?}, block {:?}) failed: {msg}{culprit}",
                k.name(),
                cfg.grid,
                cfg.block
            );
        }
        if self.log.is_some() {
            self.record(k, cfg, last_counters());
        }
        Ok(())
    }
}
