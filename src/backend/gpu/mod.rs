//! The GPU backend: `GpuBackend<D: Device>` launches the kernels of `kernels/*.cu`. The launch code is
//! device-agnostic; `Device` has two implementations: `Cuda` (cudarc, NVRTC at start-up, one stream)
//! and `Simt` (the same kernel text compiled by g++ against the CPU SIMT emulator), so every line of the
//! GPU path runs in `cargo test` on machines without a GPU.
//!
//! Safety contract of every launch (written once here): one stream, launches are ordered; every pointer
//! handed to a kernel is `addr(buffer) + 4·offset` with `offset + extent ≤ len` checked before the launch;
//! outputs are taken from `&mut` buffers, so they are disjoint from the inputs.
#![allow(clippy::too_many_arguments)]
pub mod cuda;
pub mod launch;
pub mod nccl;
pub mod nvrtc;
pub mod profile;
pub mod registry;
pub mod simt;

pub use registry::{Kernel, KernelModule, ALL_MODULES, KERNEL_NAMES};

use anyhow::Result;

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchCfg {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub smem: u32,
}

impl LaunchCfg {
    /// One thread per element: block 256, grid CEIL_DIV(n, 256) (tcnn's `linear_kernel`).
    pub fn linear(n: usize) -> Self {
        LaunchCfg {
            grid: [n.div_ceil(256).max(1) as u32, 1, 1],
            block: [256, 1, 1],
            smem: 0,
        }
    }
    /// `rows` warps, 8 per block of 256 threads.
    pub fn warp_per_row(rows: usize) -> Self {
        LaunchCfg {
            grid: [rows.div_ceil(8).max(1) as u32, 1, 1],
            block: [256, 1, 1],
            smem: 0,
        }
    }
    /// One block of `threads` per row.
    pub fn block_per_row(rows: usize, threads: u32) -> Self {
        LaunchCfg {
            grid: [rows.max(1) as u32, 1, 1],
            block: [threads, 1, 1],
            smem: 0,
        }
    }
}

/// One kernel argument.
#[derive(Clone, Copy, Debug)]
pub enum KArg {
    /// A device address.
    Ptr(u64),
    I32(i32),
    F32(f32),
}

/// Memory and launches on one device. Buffers are arrays of 32-bit words holding f32 values; a bf16
/// tensor of n elements lives in a buffer of ⌈n/2⌉ words (two per word, the lower index in the low half),
/// always at offset 0 of its own buffer (16-byte aligned, as cp.async needs).
pub trait Device: Send + Sync {
    type Mem: Send + Sync;
    /// e.g. `cuda: NVIDIA H100 (sm_90)` or `simt (CPU emulator, 2 workers)`.
    fn describe(&self) -> String;
    fn alloc_zeros(&self, n: usize) -> Result<Self::Mem>;
    /// Buffers of `sizes[k]` words carved in order from one zeroed allocation (the step's arena,
    /// `GpuBackend::settle_arena`), each 256-byte aligned; the allocation is freed when the last of them
    /// is dropped.
    fn alloc_arena(&self, sizes: &[usize]) -> Result<Vec<Self::Mem>>;
    /// Whether `a` and `b` lie in the same allocation (carved from one arena, or the same buffer).
    fn same_allocation(&self, a: &Self::Mem, b: &Self::Mem) -> bool;
    fn htod(&self, host: &[f32]) -> Result<Self::Mem>;
    fn dtoh(&self, m: &Self::Mem) -> Result<Vec<f32>>;
    fn mem_len(&self, m: &Self::Mem) -> usize;
    /// Zeroes all of `m` (`cuMemsetD32Async`).
    fn memset_zero(&self, m: &mut Self::Mem) -> Result<()>;
    /// Copies `host` into `m[off..off + host.len()]` (bounds checked here).
    fn htod_into(&self, host: &[f32], m: &mut Self::Mem, off: usize) -> Result<()>;
    /// dst[dst_off..+n] = src[src_off..+n] (bounds checked by the caller).
    fn copy_d2d(
        &self,
        dst: &mut Self::Mem,
        dst_off: usize,
        src: &Self::Mem,
        src_off: usize,
        n: usize,
    ) -> Result<()>;
    /// Device address of element 0 (read access).
    fn addr(&self, m: &Self::Mem) -> u64;
    /// Device address of element 0 (the kernel writes through it).
    fn addr_mut(&self, m: &mut Self::Mem) -> u64;
    /// Launches `k`; the arguments are in the kernel's parameter order.
    fn launch(&self, k: Kernel, cfg: LaunchCfg, args: &[KArg]) -> Result<()>;
    fn synchronize(&self) -> Result<()>;
    /// A point in the stream's work for timing (a CUDA event); `None` where the device has no timer.
    type Mark: Send;
    fn mark(&self) -> Result<Option<Self::Mark>>;
    /// Milliseconds between two marks (after a `synchronize`).
    fn elapsed_ms(&self, start: &Self::Mark, end: &Self::Mark) -> Result<f64>;
    /// One staged upload of a step's inputs (`Backend::upload_step_inputs`): `fill` writes every one of the `words`
    /// of the transfer into host staging slot `slot` (0 or 1), then each `(memory, first word, words)` of
    /// `dsts` receives its range. CUDA: page-locked staging, copied on a second stream that first waits
    /// until the compute stream has finished everything issued before the previous call (so the step that
    /// last read this slot's device memory, two calls back, is done), and the compute stream waits for the
    /// copy; `fresh`: a destination was just allocated on the compute stream (the copy waits for that too).
    /// Elsewhere: copied at once.
    fn upload_staged(
        &self,
        slot: usize,
        words: usize,
        fill: &mut dyn FnMut(&mut [f32]),
        dsts: &mut [(&mut Self::Mem, usize, usize)],
        fresh: bool,
    ) -> Result<()>;
    /// Work recorded between `capture_begin` and `capture_end` (a CUDA graph), run by `replay`.
    type Graph: Send;
    /// From now on launches, memsets and device copies are recorded, not run (CUDA stream capture);
    /// allocations, uploads, downloads and synchronisation fail until `capture_end`.
    fn capture_begin(&self) -> Result<()>;
    /// Ends the recording (instantiated, ready to launch).
    fn capture_end(&self) -> Result<Self::Graph>;
    /// Runs the recorded work on the stream (`cuGraphLaunch`). Every address it recorded must still be
    /// live memory of this device: the caller (`GpuBackend`'s graph arena, the engine's buffers) keeps it.
    fn replay(&self, g: &Self::Graph) -> Result<()>;
}

/// A `Backend` buffer of the GPU backend: device memory and its element type (`DType`). An f32 buffer of
/// `len` elements holds `len` words; a bf16 one ⌈len/2⌉ words, always at offset 0 of its own allocation
/// (16-byte aligned, as cp.async needs). An f32 parameter buffer may carry `bf16`, a copy with the same
/// element offsets that every op writing the buffer keeps equal to round_bf16 of it
/// (`Backend::keep_bf16_copy`).
///
/// Dropping a buffer hands its memory (and its bf16 copy) back to the backend's [`Pool`], where the next
/// request for the same number of words takes it: from the second training step on, the step allocates
/// nothing on the device (the counters of `Backend::counts` show it).
pub struct GpuBuf<M> {
    /// `None` only while being dropped.
    pub(crate) mem: Option<M>,
    pub(crate) dtype: crate::backend::DType,
    pub(crate) len: usize,
    pub(crate) bf16: Option<M>,
    /// Where the memory goes when the buffer is dropped.
    pub(crate) home: std::sync::Weak<Pool<M>>,
}

/// Device memory given back by dropped buffers, reused by requests of exactly its size (a step asks for
/// the same sizes every time, so exact reuse reaches a steady state with no allocation, and no buffer is
/// ever handed out larger than asked).
pub struct Pool<M> {
    free: std::sync::Mutex<Vec<M>>,
}

impl<M> Default for Pool<M> {
    fn default() -> Self {
        Pool {
            free: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl<M> Pool<M> {
    fn put(&self, m: M) {
        if let Ok(mut f) = self.free.lock() {
            f.push(m);
        }
    }
    /// A free block of exactly `words` words (as `len` measures them), if any.
    pub(crate) fn take_exact(&self, words: usize, len: impl Fn(&M) -> usize) -> Option<M> {
        let mut f = self.free.lock().ok()?;
        let k = f.iter().rposition(|m| len(m) == words)?;
        Some(f.swap_remove(k))
    }
    /// Takes every free block `keep` selects out of the pool.
    pub(crate) fn take_where(&self, keep: impl Fn(&M) -> bool) -> Vec<M> {
        let Ok(mut f) = self.free.lock() else {
            return Vec::new();
        };
        let (taken, rest): (Vec<M>, Vec<M>) = f.drain(..).partition(|m| keep(m));
        *f = rest;
        taken
    }
    /// Frees every block held for reuse.
    pub(crate) fn clear(&self) {
        if let Ok(mut f) = self.free.lock() {
            f.clear();
        }
    }
    /// Words held for reuse.
    pub fn held(&self, len: impl Fn(&M) -> usize) -> usize {
        self.free
            .lock()
            .map(|f| f.iter().map(len).sum())
            .unwrap_or(0)
    }
}

impl<M> Drop for GpuBuf<M> {
    fn drop(&mut self) {
        if let Some(pool) = self.home.upgrade() {
            if let Some(m) = self.mem.take() {
                pool.put(m);
            }
            if let Some(m) = self.bf16.take() {
                pool.put(m);
            }
        }
    }
}

impl<M> GpuBuf<M> {
    /// The device memory.
    pub(crate) fn mem(&self) -> &M {
        self.mem
            .as_ref()
            .expect("a GpuBuf's memory is only taken when it is dropped")
    }
    pub(crate) fn mem_mut(&mut self) -> &mut M {
        self.mem
            .as_mut()
            .expect("a GpuBuf's memory is only taken when it is dropped")
    }
    pub fn dtype(&self) -> crate::backend::DType {
        self.dtype
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Whether a bf16 copy is kept beside this buffer.
    pub fn has_bf16_copy(&self) -> bool {
        self.bf16.is_some()
    }
}

/// Host clipping tables and their device copies.
type RangeCache<M> = std::sync::Mutex<Vec<(Vec<(usize, usize)>, std::sync::Arc<M>)>>;

/// The Backend over a device; `launch.rs` holds the op-by-op launch code.
pub struct GpuBackend<D: Device> {
    pub dev: D,
    /// GEMM precision: `Bf16` runs the Linear layers on the tensor-core kernels.
    pub precision: crate::backend::Precision,
    /// Rows of the forward and data-gradient bf16 GEMM tiles (128 or 64); `None` picks per shape
    /// (`launch::gemm_tile_rows`). Tests fix it to run both tiles on small shapes.
    pub(crate) gemm_tile: Option<usize>,
    /// Device copies of clipping range tables, keyed by the host table (uploaded once).
    pub(crate) range_cache: RangeCache<D::Mem>,
    /// Scratch buffers (bf16 operand copies, split-K partial sums), reused across ops. Reuse is safe:
    /// the one stream orders every launch that reads a scratch buffer before the next one writes it.
    pub(crate) scratch: std::sync::Mutex<Vec<D::Mem>>,
    /// Launches, allocations, syncs and bytes moved (`Backend::counts`).
    pub(crate) counters: crate::backend::counters::OpCounters,
    /// Memory of dropped buffers, for reuse (see [`GpuBuf`]).
    pub(crate) pool: std::sync::Arc<Pool<D::Mem>>,
    /// The per-launch profile (`start_profile`), `None` when off.
    pub(crate) profiler: std::sync::Mutex<Option<profile::Profiler<D::Mark>>>,
    pub(crate) profiling: std::sync::atomic::AtomicBool,
    /// While a graph is being captured: the addresses of the pooled and scratch blocks the recorded work
    /// was handed, and the counters when it began.
    pub(crate) capture: std::sync::Mutex<Option<(Vec<u64>, crate::backend::counters::Counts)>>,
    /// The device memory of the two input slots of `upload_step_inputs` (a dropped input buffer returns
    /// to its slot's pool, reused two calls later), and the next slot.
    pub(crate) input_pools: [std::sync::Arc<Pool<D::Mem>>; 2],
    pub(crate) input_slot: std::sync::atomic::AtomicUsize,
    /// Set when carving an arena failed (`settle_arena`): the step's buffers then stay separate
    /// allocations from the pool, as before the arena, and no carving is tried again.
    pub(crate) arena_failed: std::sync::atomic::AtomicBool,
}

/// A captured step (`Backend::capture_begin` … `capture_end`) and the memory of its temporaries.
pub struct GpuGraph<D: Device> {
    graph: D::Graph,
    /// Pooled and scratch blocks the recorded work used that were free again when the capture ended:
    /// owned here, so no other buffer is handed them while the graph can still write them.
    arena: Vec<D::Mem>,
    /// What the recorded work asks of the device each replay (launches, memsets, copies).
    pub recorded: crate::backend::counters::Counts,
}

impl<D: Device> GpuGraph<D> {
    /// Words of device memory the graph owns (its temporaries).
    pub fn arena_words(&self, dev: &D) -> usize {
        self.arena.iter().map(|m| dev.mem_len(m)).sum()
    }
}

impl<D: Device> GpuBackend<D> {
    pub fn new(dev: D) -> Self {
        Self::with_precision(dev, crate::backend::Precision::F32)
    }
    pub fn with_precision(dev: D, precision: crate::backend::Precision) -> Self {
        GpuBackend {
            dev,
            precision,
            gemm_tile: None,
            range_cache: std::sync::Mutex::new(Vec::new()),
            scratch: std::sync::Mutex::new(Vec::new()),
            counters: Default::default(),
            pool: Default::default(),
            profiler: std::sync::Mutex::new(None),
            profiling: std::sync::atomic::AtomicBool::new(false),
            capture: std::sync::Mutex::new(None),
            input_pools: Default::default(),
            input_slot: Default::default(),
            arena_failed: Default::default(),
        }
    }
    /// Starts recording every launch with its FLOPs, bytes and (on CUDA) time ([`profile`]).
    pub fn start_profile(&self) {
        if let Ok(mut p) = self.profiler.lock() {
            *p = Some(profile::Profiler::default());
        }
        self.profiling
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    /// Stops recording and returns the launches since `start_profile`, timed where the device has
    /// timers (waits for the device).
    pub fn take_profile(&self) -> Result<Vec<profile::LaunchProfile>> {
        self.profiling
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.dev.synchronize()?;
        let taken = self
            .profiler
            .lock()
            .map_err(|_| anyhow::anyhow!("profiler poisoned"))?
            .take();
        let mut out = Vec::new();
        for (mut l, marks) in taken.map(|p| p.launches).unwrap_or_default() {
            if let Some((a, b)) = marks {
                l.ms = Some(self.dev.elapsed_ms(&a, &b)?);
            }
            out.push(l);
        }
        Ok(out)
    }
    /// While profiling: the buffer argument at `addr` spans `bytes`.
    pub(crate) fn note_extent(&self, addr: u64, bytes: u64) {
        if self.profiling.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(Some(p)) = self.profiler.lock().as_deref_mut() {
                p.extent(addr, bytes);
            }
        }
    }
    /// While profiling: the next launch does `flop` model FLOPs.
    pub(crate) fn note_flop(&self, flop: f64) {
        if self.profiling.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(Some(p)) = self.profiler.lock().as_deref_mut() {
                p.flop(flop);
            }
        }
    }
    /// Fixes the rows of the forward and data-gradient bf16 GEMM tiles (128 or 64), or lets the launch
    /// pick per shape (`None`, the default).
    pub fn set_gemm_tile(&mut self, rows: Option<usize>) -> Result<()> {
        anyhow::ensure!(
            matches!(rows, None | Some(64) | Some(128)),
            "bf16 GEMM tile rows must be 64 or 128, got {rows:?}"
        );
        self.gemm_tile = rows;
        Ok(())
    }
    /// A scratch buffer of at least `words` 32-bit words (contents undefined); give it back with `give`.
    pub(crate) fn take(&self, words: usize) -> Result<D::Mem> {
        let mut pool = self
            .scratch
            .lock()
            .map_err(|_| anyhow::anyhow!("scratch pool poisoned"))?;
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, m)| self.dev.mem_len(m) >= words)
            .min_by_key(|(_, m)| self.dev.mem_len(m))
            .map(|(k, _)| k);
        match best {
            Some(k) => {
                let m = pool.swap_remove(k);
                self.note_taken(&m);
                Ok(m)
            }
            None => {
                drop(pool);
                self.alloc(words)
            }
        }
    }
    /// `n` zeroed words: a pooled block of that size zeroed with a memset, else a new allocation (counted).
    pub(crate) fn alloc(&self, n: usize) -> Result<D::Mem> {
        self.alloc_for(n, true)
    }
    /// `n` words: a pooled block of that size (zeroed with a memset when `zero`), else a new, zeroed
    /// allocation (counted).
    pub(crate) fn alloc_for(&self, n: usize, zero: bool) -> Result<D::Mem> {
        let words = n.max(1);
        if let Some(mut m) = self.pool.take_exact(words, |m| self.dev.mem_len(m)) {
            self.note_taken(&m);
            if zero {
                self.counters.memset();
                self.dev.memset_zero(&mut m)?;
            }
            return Ok(m);
        }
        self.not_capturing("allocates", words)?;
        self.counters.alloc_zeroed(words);
        self.dev.alloc_zeros(n)
    }
    /// While capturing: remembers that the recorded work uses block `m`.
    fn note_taken(&self, m: &D::Mem) {
        if let Ok(mut c) = self.capture.lock() {
            if let Some((taken, _)) = c.as_mut() {
                taken.push(self.dev.addr(m));
            }
        }
    }
    /// Fails while capturing: a graph cannot replay work that needs the host.
    fn not_capturing(&self, what: &str, words: usize) -> Result<()> {
        let capturing = self.capture.lock().map(|c| c.is_some()).unwrap_or(true);
        anyhow::ensure!(
            !capturing,
            "the step being captured {what} ({words} words): a captured step must take every buffer \
             from the pool (run one step uncaptured first) and must not upload, download or wait"
        );
        Ok(())
    }
    /// Device memory holding `host`: a pooled block of that size written by a copy, else a new
    /// allocation (counted).
    pub(crate) fn htod(&self, host: &[f32]) -> Result<D::Mem> {
        self.not_capturing("uploads", host.len())?;
        if !host.is_empty() {
            if let Some(mut m) = self.pool.take_exact(host.len(), |m| self.dev.mem_len(m)) {
                self.counters.upload_into(host.len());
                self.dev.htod_into(host, &mut m, 0)?;
                return Ok(m);
            }
        }
        self.counters.upload(host.len());
        self.dev.htod(host)
    }
    /// Carves every block held for reuse (the pool's, and the scratch buffers') from one new allocation,
    /// the step's arena: called after a step that had to allocate, so that its temporaries (whose sizes
    /// the configuration fixes) come from one allocation from then on, and the captured step addresses
    /// one region. The old blocks are freed first (stream-ordered), then the arena is allocated (zeroed,
    /// counted as one allocation); every block keeps its size, so the next step takes each buffer from
    /// the arena exactly as it took it from the pool. Returns whether it carved (false: nothing held, or
    /// everything held already lies in one allocation).
    ///
    /// If the one allocation fails (e.g. a fragmented device pool has no contiguous block of the total
    /// although it had the separate ones), a note says so once, the pool stays empty (the next step
    /// allocates its buffers one by one again) and carving is not tried again: the step runs as it did
    /// before the arena existed.
    pub fn settle_arena(&self) -> Result<bool> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.arena_failed.load(Relaxed) {
            return Ok(false);
        }
        self.not_capturing("carves its arena", 0)?;
        let pooled = self.pool.take_where(|_| true);
        let scratch = std::mem::take(
            &mut *self
                .scratch
                .lock()
                .map_err(|_| anyhow::anyhow!("scratch pool poisoned"))?,
        );
        let first = pooled.first().or(scratch.first());
        let one = first.is_none_or(|f| {
            pooled
                .iter()
                .chain(&scratch)
                .all(|m| self.dev.same_allocation(f, m))
        });
        if one {
            // Nothing held, or already one arena: put everything back as it was.
            for m in pooled {
                self.pool.put(m);
            }
            for m in scratch {
                self.give(m);
            }
            return Ok(false);
        }
        let sizes: Vec<usize> = pooled
            .iter()
            .chain(&scratch)
            .map(|m| self.dev.mem_len(m))
            .collect();
        let n_pooled = pooled.len();
        drop(pooled);
        drop(scratch);
        let total: usize = sizes.iter().sum();
        let mut carved = match self.dev.alloc_arena(&sizes) {
            Ok(c) => c,
            Err(e) => {
                self.arena_failed.store(true, Relaxed);
                eprintln!(
                    "note: the step's {} buffers ({:.1} MiB) could not be carved from one allocation \
                     ({e:#}); they stay separate allocations",
                    sizes.len(),
                    total as f64 * 4.0 / (1u64 << 20) as f64
                );
                return Ok(false);
            }
        };
        self.counters.arena(total);
        for m in carved.drain(n_pooled..) {
            self.give(m);
        }
        for m in carved {
            self.pool.put(m);
        }
        Ok(true)
    }
    /// How many allocations the blocks held for reuse (pool and scratch) lie in: 1 after `settle_arena`.
    pub fn pooled_allocations(&self) -> usize {
        let Ok(f) = self.pool.free.lock() else {
            return 0;
        };
        let Ok(sc) = self.scratch.lock() else {
            return 0;
        };
        let mut firsts: Vec<&D::Mem> = Vec::new();
        for m in f.iter().chain(sc.iter()) {
            if !firsts.iter().any(|r| self.dev.same_allocation(r, m)) {
                firsts.push(m);
            }
        }
        firsts.len()
    }
    /// Device words held in the pool for reuse.
    pub fn pooled_words(&self) -> usize {
        self.pool.held(|m| self.dev.mem_len(m))
    }
    /// Waits for the stream, then copies `m` to the host (counted as one host sync).
    pub(crate) fn dtoh_synced(&self, m: &D::Mem) -> Result<Vec<f32>> {
        self.not_capturing("downloads", self.dev.mem_len(m))?;
        self.dev.synchronize()?;
        let words = self.dev.dtoh(m)?;
        self.counters.download(words.len());
        Ok(words)
    }
    pub(crate) fn give(&self, m: D::Mem) {
        if let Ok(mut pool) = self.scratch.lock() {
            pool.push(m);
        }
    }
}
