//! What a backend did, counted: kernel launches, device allocations and the memsets that zero them,
//! device-to-device copies, host synchronisations and the bytes moved each way. The GPU backend counts
//! at the one place each happens (`GpuBackend::go`, `alloc`, `htod`, `dtoh`), so the SIMT emulator reports
//! exactly what the CUDA device would be asked to do; `setdino bench --what step` prints them per step.
//! The CPU backend counts its pool's allocations and memsets and its uploads (`backend/cpu/pool.rs`).
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Running totals (shared, lock-free).
#[derive(Debug, Default)]
pub struct OpCounters {
    launches: AtomicU64,
    allocs: AtomicU64,
    memsets: AtomicU64,
    copies: AtomicU64,
    host_syncs: AtomicU64,
    uploads: AtomicU64,
    h2d_bytes: AtomicU64,
    d2h_bytes: AtomicU64,
    alloc_bytes: AtomicU64,
    graph_launches: AtomicU64,
    arena_bytes: AtomicU64,
}

/// A snapshot of the totals, or the difference of two. In JSON (`setdino bench --json`) the fields of a
/// step's counts carry the `_per_step` names of issue 14's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Kernel launches.
    #[serde(rename = "launches_per_step")]
    pub launches: u64,
    /// Device allocations (`cuMemAllocAsync`).
    #[serde(rename = "device_allocs_per_step")]
    pub allocs: u64,
    /// Memsets (a new allocation is zeroed: `alloc_zeros`; a pooled block handed out by `zeros`).
    #[serde(rename = "memsets_per_step")]
    pub memsets: u64,
    /// Device-to-device copies (`cuMemcpyDtoDAsync`).
    #[serde(rename = "d2d_copies_per_step")]
    pub copies: u64,
    /// Host waits for the device (each download synchronises the stream).
    #[serde(rename = "host_syncs_per_step")]
    pub host_syncs: u64,
    /// Host-to-device copies.
    #[serde(rename = "uploads_per_step")]
    pub uploads: u64,
    #[serde(rename = "h2d_bytes_per_step")]
    pub h2d_bytes: u64,
    #[serde(rename = "d2h_bytes_per_step")]
    pub d2h_bytes: u64,
    /// Bytes of device memory allocated (never freed while a step runs: dropped buffers go to the pool).
    /// Of a snapshot taken in steady state: the whole arena the step works in.
    #[serde(rename = "device_bytes_allocated_per_step")]
    pub alloc_bytes: u64,
    /// Replays of a captured step (`cuGraphLaunch`): the launches, memsets and copies inside a graph are
    /// not counted again (the host issues one call for all of them).
    #[serde(rename = "graph_launches_per_step")]
    pub graph_launches: u64,
    /// Bytes of the last arena carved (`GpuBackend::settle_arena`): the step's temporaries in one
    /// allocation. A level, not a count: `since` keeps the later value.
    #[serde(rename = "arena_bytes")]
    pub arena_bytes: u64,
}

fn bytes(words: usize) -> u64 {
    u64::try_from(words).unwrap_or(u64::MAX).saturating_mul(4)
}

impl OpCounters {
    pub fn launch(&self) {
        self.launches.fetch_add(1, Relaxed);
    }
    /// One replay of a captured graph.
    pub fn graph_launch(&self) {
        self.graph_launches.fetch_add(1, Relaxed);
    }
    /// An arena of `words` 32-bit words carved (one zeroed allocation, counted as such).
    pub fn arena(&self, words: usize) {
        self.alloc_zeroed(words);
        self.arena_bytes.store(bytes(words), Relaxed);
    }
    /// A new allocation of `words` 32-bit words, zeroed.
    pub fn alloc_zeroed(&self, words: usize) {
        self.allocs.fetch_add(1, Relaxed);
        self.alloc_bytes.fetch_add(bytes(words), Relaxed);
        self.memsets.fetch_add(1, Relaxed);
    }
    /// A pooled block zeroed for reuse.
    pub fn memset(&self) {
        self.memsets.fetch_add(1, Relaxed);
    }
    /// An upload of `words` 32-bit words into a pooled block.
    pub fn upload_into(&self, words: usize) {
        self.uploads.fetch_add(1, Relaxed);
        self.h2d_bytes.fetch_add(bytes(words), Relaxed);
    }
    pub fn copy(&self) {
        self.copies.fetch_add(1, Relaxed);
    }
    /// An upload of `words` 32-bit words (a fresh allocation).
    pub fn upload(&self, words: usize) {
        self.uploads.fetch_add(1, Relaxed);
        self.allocs.fetch_add(1, Relaxed);
        self.alloc_bytes.fetch_add(bytes(words), Relaxed);
        self.h2d_bytes.fetch_add(bytes(words), Relaxed);
    }
    /// A synchronising download of `words` 32-bit words.
    pub fn download(&self, words: usize) {
        self.host_syncs.fetch_add(1, Relaxed);
        self.d2h_bytes.fetch_add(bytes(words), Relaxed);
    }
    pub fn snapshot(&self) -> Counts {
        Counts {
            launches: self.launches.load(Relaxed),
            allocs: self.allocs.load(Relaxed),
            memsets: self.memsets.load(Relaxed),
            copies: self.copies.load(Relaxed),
            host_syncs: self.host_syncs.load(Relaxed),
            uploads: self.uploads.load(Relaxed),
            h2d_bytes: self.h2d_bytes.load(Relaxed),
            d2h_bytes: self.d2h_bytes.load(Relaxed),
            alloc_bytes: self.alloc_bytes.load(Relaxed),
            graph_launches: self.graph_launches.load(Relaxed),
            arena_bytes: self.arena_bytes.load(Relaxed),
        }
    }
}

impl Counts {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            launches: self.launches.saturating_sub(earlier.launches),
            allocs: self.allocs.saturating_sub(earlier.allocs),
            memsets: self.memsets.saturating_sub(earlier.memsets),
            copies: self.copies.saturating_sub(earlier.copies),
            host_syncs: self.host_syncs.saturating_sub(earlier.host_syncs),
            uploads: self.uploads.saturating_sub(earlier.uploads),
            h2d_bytes: self.h2d_bytes.saturating_sub(earlier.h2d_bytes),
            d2h_bytes: self.d2h_bytes.saturating_sub(earlier.d2h_bytes),
            alloc_bytes: self.alloc_bytes.saturating_sub(earlier.alloc_bytes),
            graph_launches: self.graph_launches.saturating_sub(earlier.graph_launches),
            arena_bytes: self.arena_bytes,
        }
    }
}
