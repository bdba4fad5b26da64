//! `Cuda`: a real GPU through cudarc (dynamic loading, one non-default stream). At start-up every kernel module is
//! compiled by NVRTC for the device's own architecture and loaded as CUBIN; every entry point is resolved
//! into a table indexed by `Kernel`, so a missing symbol fails at start-up, not mid-training.
use super::{nvrtc, Device, KArg, Kernel, LaunchCfg, ALL_MODULES, KERNEL_NAMES};
use anyhow::{anyhow, bail, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// The second stream: step inputs copied from page-locked staging (`upload_staged`).
    copy_stream: Arc<CudaStream>,
    /// The two staging slots of `upload_staged`.
    staging: std::sync::Mutex<[Staging; 2]>,
    funcs: Vec<CudaFunction>,
    desc: String,
    /// ptxas report of every kernel, as compiled for this device.
    pub report: Vec<nvrtc::KernelReport>,
}

/// Device memory of `Cuda`: its own allocation, or a block carved from an arena (`alloc_arena`), which the
/// block keeps alive and never frees itself.
pub struct CudaMem {
    /// `None` only while being dropped.
    slice: Option<CudaSlice<f32>>,
    /// The allocation a carved block lies in.
    arena: Option<Arc<CudaSlice<f32>>>,
}

impl CudaMem {
    fn own(slice: CudaSlice<f32>) -> Self {
        CudaMem {
            slice: Some(slice),
            arena: None,
        }
    }
}

impl std::ops::Deref for CudaMem {
    type Target = CudaSlice<f32>;
    fn deref(&self) -> &CudaSlice<f32> {
        self.slice
            .as_ref()
            .expect("a CudaMem's slice is only taken when it is dropped")
    }
}

impl std::ops::DerefMut for CudaMem {
    fn deref_mut(&mut self) -> &mut CudaSlice<f32> {
        self.slice
            .as_mut()
            .expect("a CudaMem's slice is only taken when it is dropped")
    }
}

impl Drop for CudaMem {
    fn drop(&mut self) {
        if self.arena.is_some() {
            // A carved block: its memory belongs to the arena (freed with the arena's last block).
            if let Some(s) = self.slice.take() {
                let _ = s.leak();
            }
        }
    }
}

/// One slot of the double-buffered input staging.
#[derive(Default)]
struct Staging {
    /// Page-locked host memory the slot's transfer is written into.
    pinned: Option<cudarc::driver::PinnedHostSlice<f32>>,
    /// The copy out of `pinned` (the host waits for it before writing `pinned` again).
    copied: Option<cudarc::driver::CudaEvent>,
    /// The compute stream's work up to the call after this slot's last use: the copy into this
    /// slot's device memory waits for it.
    compute_done: Option<cudarc::driver::CudaEvent>,
}

impl Drop for Staging {
    fn drop(&mut self) {
        // The page-locked memory is freed with the slot: not while a copy may still read it.
        if let Some(done) = &self.copied {
            let _ = done.synchronize();
        }
    }
}

/// An event that only orders work (no timing).
fn sync_event(stream: &CudaStream) -> Result<cudarc::driver::CudaEvent> {
    stream
        .record_event(Some(
            cudarc::driver::sys::CUevent_flags::CU_EVENT_DISABLE_TIMING,
        ))
        .map_err(|e| anyhow!("cuda event: {e:?}"))
}

/// Why the CUDA device cannot be used, or the context.
pub fn probe(ordinal: usize) -> std::result::Result<Arc<CudaContext>, String> {
    if std::env::var_os("SETDINO_FORCE_CPU").is_some() {
        return Err("SETDINO_FORCE_CPU is set".into());
    }
    // SAFETY: a probe that dlopens libcuda and returns false when it cannot; it does not panic.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver: libcuda.so/libcuda.so.1 not loadable".into());
    }
    // cudarc panics (not Err) on a libcuda missing symbols, also inside DriverError's Debug: keep every
    // driver call and its formatting under catch_unwind with the panic hook silenced.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| match CudaContext::new(ordinal) {
        Ok(ctx) => Ok(ctx),
        Err(e) => Err(format!("CUDA driver present but unusable: {e:?}")),
    });
    std::panic::set_hook(prev);
    match r {
        Ok(x) => x,
        Err(_) => Err("the CUDA driver panicked while loading (incompatible libcuda?)".into()),
    }
}

impl Cuda {
    /// Opens device `ordinal` and compiles every kernel module for it.
    pub fn new(ordinal: usize) -> Result<Self> {
        let ctx = probe(ordinal).map_err(|e| anyhow!(e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| anyhow!("compute capability: {e:?}"))?;
        let arch = format!("sm_{major}{minor}");
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        // One non-default stream (the legacy NULL stream cannot be captured into a CUDA graph and
        // synchronises with every other stream). Every allocation, launch, collective and free of this
        // device is ordered on it (module contract), so cudarc's cross-stream event tracking has nothing
        // to order: it is turned off before the first slice, saving an event per buffer use. The one
        // exception, the second stream's input copies (`upload_staged`), orders itself with explicit
        // events.
        // SAFETY: no CudaSlice of this context is used on any other stream except by upload_staged,
        // whose copies wait for, and are waited for by, the compute stream through events.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| anyhow!("creating the device's stream: {e:?}"))?;
        let copy_stream = ctx
            .new_stream()
            .map_err(|e| anyhow!("creating the device's copy stream: {e:?}"))?;
        let mut by_name = std::collections::HashMap::new();
        let mut report = Vec::new();
        for m in ALL_MODULES {
            let t0 = std::time::Instant::now();
            let c = nvrtc::compile(m, &arch, false)?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(c.cubin))
                .map_err(|e| anyhow!("loading kernels/{}.cu: {e:?}", m.name))?;
            for e in m.entries {
                let f = module.load_function(e).map_err(|err| {
                    anyhow!("kernels/{}.cu: entry {e} not found: {err:?}", m.name)
                })?;
                if let Some(bytes) = dynamic_smem_opt_in(e) {
                    // Above 48 KiB of dynamic shared memory a kernel must opt in (cuFuncSetAttribute).
                    f.set_attribute(
                        cudarc::driver::sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        bytes,
                    )
                    .map_err(|err| anyhow!("{e}: cannot allow {bytes} B of dynamic shared memory: {err:?}"))?;
                }
                by_name.insert(*e, f);
            }
            report.extend(c.report);
            log::debug(&format!(
                "nvrtc: compiled {}.cu for {arch} in {:.2}s",
                m.name,
                t0.elapsed().as_secs_f64()
            ));
        }
        let mut funcs = Vec::with_capacity(KERNEL_NAMES.len());
        for n in KERNEL_NAMES {
            match by_name.remove(n) {
                Some(f) => funcs.push(f),
                None => bail!("kernel {n} missing after loading all modules"),
            }
        }
        Ok(Cuda {
            desc: format!("cuda: {name} ({arch}, device {ordinal})"),
            ctx,
            stream,
            copy_stream,
            staging: Default::default(),
            funcs,
            report,
        })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The one stream every launch, copy and collective of this device is ordered on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

/// Kernels that may launch with more than the default 48 KiB of dynamic shared memory, and how much they
/// may use: the bf16 attention backward needs (4·NP·(HP+8) + 2·NP·(NP+8))·2 B, 55 296 B at N = HS = 64.
fn dynamic_smem_opt_in(entry: &str) -> Option<i32> {
    matches!(entry, "attention_forward_bf16" | "attention_backward_bf16").then_some(64 * 1024)
}

mod log {
    pub fn debug(msg: &str) {
        if std::env::var_os("SETDINO_VERBOSE").is_some() {
            eprintln!("{msg}");
        }
    }
}

impl Device for Cuda {
    type Mem = CudaMem;

    fn describe(&self) -> String {
        self.desc.clone()
    }
    fn alloc_zeros(&self, n: usize) -> Result<Self::Mem> {
        self.stream
            .alloc_zeros::<f32>(n.max(1))
            .map(CudaMem::own)
            .map_err(|e| anyhow!("cuda alloc of {n} floats: {e:?}"))
    }
    fn alloc_arena(&self, sizes: &[usize]) -> Result<Vec<Self::Mem>> {
        // Each block starts 256-byte (64-word) aligned, as cuMemAlloc's allocations do.
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut total = 0usize;
        for &n in sizes {
            offsets.push(total);
            total += n.max(1).next_multiple_of(64);
        }
        let arena = self
            .stream
            .alloc_zeros::<f32>(total.max(1))
            .map_err(|e| anyhow!("cuda arena of {total} floats: {e:?}"))?;
        let arena = Arc::new(arena);
        let (base, _sync) = arena.device_ptr(&self.stream);
        Ok(offsets
            .iter()
            .zip(sizes)
            .map(|(&off, &n)| {
                // SAFETY: [off, off + n) lies inside the arena (total ≥ off + n); the block is never
                // freed through this slice (CudaMem::drop leaks it) and the Arc keeps the arena alive.
                let slice = unsafe {
                    self.stream
                        .upgrade_device_ptr::<f32>(base + 4 * off as u64, n.max(1))
                };
                CudaMem {
                    slice: Some(slice),
                    arena: Some(arena.clone()),
                }
            })
            .collect())
    }
    fn same_allocation(&self, a: &Self::Mem, b: &Self::Mem) -> bool {
        match (&a.arena, &b.arena) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y),
            _ => self.addr(a) == self.addr(b),
        }
    }
    fn htod(&self, host: &[f32]) -> Result<Self::Mem> {
        if host.is_empty() {
            return self.alloc_zeros(1);
        }
        self.stream
            .clone_htod(host)
            .map(CudaMem::own)
            .map_err(|e| anyhow!("cuda htod: {e:?}"))
    }
    fn dtoh(&self, m: &Self::Mem) -> Result<Vec<f32>> {
        self.stream
            .clone_dtoh(&**m)
            .map_err(|e| anyhow!("cuda dtoh: {e:?}"))
    }
    fn mem_len(&self, m: &Self::Mem) -> usize {
        m.len()
    }
    fn memset_zero(&self, m: &mut Self::Mem) -> Result<()> {
        self.stream
            .memset_zeros(&mut **m)
            .map_err(|e| anyhow!("cuda memset: {e:?}"))
    }
    fn htod_into(&self, host: &[f32], m: &mut Self::Mem, off: usize) -> Result<()> {
        let end = off.checked_add(host.len()).filter(|&e| e <= m.len());
        let Some(end) = end else {
            bail!(
                "cuda htod_into: {} floats at {off} into {}",
                host.len(),
                m.len()
            );
        };
        let mut dst = m.slice_mut(off..end);
        self.stream
            .memcpy_htod(host, &mut dst)
            .map_err(|e| anyhow!("cuda htod: {e:?}"))
    }
    fn copy_d2d(
        &self,
        dst: &mut Self::Mem,
        dst_off: usize,
        src: &Self::Mem,
        src_off: usize,
        n: usize,
    ) -> Result<()> {
        let s = src.slice(src_off..src_off + n);
        let mut d = dst.slice_mut(dst_off..dst_off + n);
        self.stream
            .memcpy_dtod(&s, &mut d)
            .map_err(|e| anyhow!("cuda dtod: {e:?}"))
    }
    fn addr(&self, m: &Self::Mem) -> u64 {
        let (p, _sync) = m.device_ptr(&self.stream);
        p
    }
    fn addr_mut(&self, m: &mut Self::Mem) -> u64 {
        let (p, _sync) = m.device_ptr_mut(&self.stream);
        p
    }
    fn launch(&self, k: Kernel, cfg: LaunchCfg, args: &[KArg]) -> Result<()> {
        // Argument storage first, then the void* array pointing at it (cuLaunchKernel's convention).
        let mut store: Vec<[u8; 32]> = args
            .iter()
            .map(|a| {
                let mut b = [0u8; 32];
                match *a {
                    KArg::Ptr(p) => b[..8].copy_from_slice(&p.to_ne_bytes()),
                    KArg::I32(i) => b[..4].copy_from_slice(&i.to_ne_bytes()),
                    KArg::F32(f) => b[..4].copy_from_slice(&f.to_ne_bytes()),
                }
                b
            })
            .collect();
        let mut ptrs: Vec<*mut std::ffi::c_void> =
            store.iter_mut().map(|b| b.as_mut_ptr() as *mut _).collect();
        let f = &self.funcs[k as usize];
        // SAFETY: the arguments match the kernel's parameter list (same order and sizes, generated from
        // the .cu signature); every pointer is inside a live buffer of this context (module contract).
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                (cfg.grid[0], cfg.grid[1], cfg.grid[2]),
                (cfg.block[0], cfg.block[1], cfg.block[2]),
                cfg.smem,
                self.stream.cu_stream(),
                &mut ptrs,
            )
        }
        .map_err(|e| anyhow!("launch of {}: {e:?}", k.name()))
    }
    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| anyhow!("cuda synchronize: {e:?}"))
    }
    /// A timing event recorded on the stream.
    type Mark = cudarc::driver::CudaEvent;
    fn mark(&self) -> Result<Option<Self::Mark>> {
        self.stream
            .record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map(Some)
            .map_err(|e| anyhow!("cuda event: {e:?}"))
    }
    fn elapsed_ms(&self, start: &Self::Mark, end: &Self::Mark) -> Result<f64> {
        start
            .elapsed_ms(end)
            .map(f64::from)
            .map_err(|e| anyhow!("cuda event time: {e:?}"))
    }
    fn upload_staged(
        &self,
        slot: usize,
        words: usize,
        fill: &mut dyn FnMut(&mut [f32]),
        dsts: &mut [(&mut Self::Mem, usize, usize)],
        fresh: bool,
    ) -> Result<()> {
        let e = |what: &'static str| move |err| anyhow!("cuda staged upload: {what}: {err:?}");
        let mut st = self
            .staging
            .lock()
            .map_err(|_| anyhow!("cuda staging poisoned"))?;
        let (slot, other) = (slot % 2, 1 - slot % 2);
        // The host waits for the copy that last read this slot's staging (two calls back).
        if let Some(done) = &st[slot].copied {
            done.synchronize()
                .map_err(e("waiting for the staging slot"))?;
        }
        if st[slot].pinned.as_ref().is_none_or(|p| p.len() < words) {
            // Its copy is done (waited above).
            st[slot].pinned = None;
            // SAFETY: page-locked host memory of this context; every word read is written by `fill`
            // first (the copies below read only [0, words)).
            let p = unsafe {
                self.ctx
                    .alloc_pinned::<f32>(words.max(1).next_power_of_two())
            }
            .map_err(e("allocating page-locked memory"))?;
            st[slot].pinned = Some(p);
        }
        let pinned = st[slot].pinned.as_mut().expect("allocated above");
        let ptr = pinned.as_mut_ptr().map_err(e("page-locked memory"))?;
        // SAFETY: `words` ≤ the allocation's length; no copy reads it now (waited above).
        let host = unsafe { std::slice::from_raw_parts_mut(ptr, words) };
        // `fill` writes every word (Device::upload_staged's contract).
        fill(host);
        // Everything the compute stream has been given so far (up to the step after the one that reads
        // the other slot): the copy into the other slot's memory, next call, waits for it.
        st[other].compute_done = Some(sync_event(&self.stream)?);
        // The copy into this slot's device memory waits until the step that last read it is done.
        if let Some(done) = &st[slot].compute_done {
            self.copy_stream
                .wait(done)
                .map_err(e("ordering the copy"))?;
        }
        if fresh {
            let alloc = sync_event(&self.stream)?;
            self.copy_stream
                .wait(&alloc)
                .map_err(e("ordering the copy"))?;
        }
        for (m, at, n) in dsts.iter_mut() {
            let src = host
                .get(*at..*at + *n)
                .ok_or_else(|| anyhow!("staged range {at}+{n} outside {words} words"))?;
            anyhow::ensure!(*n <= m.len(), "staged range of {n} words into {}", m.len());
            let (dst, _sync) = m.device_ptr_mut(&self.stream);
            // SAFETY: `dst` is device memory of this context holding ≥ n words, not read or written by the
            // compute stream until it waits for the event recorded below, nor by earlier work still
            // running (the copy stream waited above); `src` is page-locked and not rewritten before the
            // copy completes (the next write to this slot waits for `copied`).
            unsafe {
                cudarc::driver::result::memcpy_htod_async(dst, src, self.copy_stream.cu_stream())
            }
            .map_err(e("copying"))?;
        }
        let copied = sync_event(&self.copy_stream)?;
        self.stream
            .wait(&copied)
            .map_err(e("waiting for the copy"))?;
        st[slot].copied = Some(copied);
        Ok(())
    }
    type Graph = CapturedGraph;
    fn capture_begin(&self) -> Result<()> {
        // Thread-local mode: another thread's unsafe API call (e.g. a cuMalloc) does not invalidate
        // this capture; this thread's would, which is what the GpuBackend's checks rule out.
        self.stream
            .begin_capture(
                cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            )
            .map_err(|e| anyhow!("cuda stream capture: {e:?}"))
    }
    fn capture_end(&self) -> Result<Self::Graph> {
        let g = self
            .stream
            .end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0))
            .map_err(|e| anyhow!("cuda end of stream capture: {e:?}"))?
            .ok_or_else(|| anyhow!("cuda stream capture recorded no work"))?;
        // Uploaded now, so the first replay does not pay the set-up.
        g.upload()
            .map_err(|e| anyhow!("cuda graph upload: {e:?}"))?;
        Ok(CapturedGraph(g))
    }
    fn replay(&self, g: &Self::Graph) -> Result<()> {
        g.0.launch()
            .map_err(|e| anyhow!("cuda graph launch: {e:?}"))
    }
}

/// An instantiated CUDA graph of this device's stream.
pub struct CapturedGraph(cudarc::driver::CudaGraph);

// SAFETY: the graph is only launched on its own stream, from calls serialised by the engine that owns it
// (a `&mut` step); CUDA graph objects may be used from any thread when access is serialised.
unsafe impl Send for CapturedGraph {}
