//! The roofline of a training step, kernel by kernel (`setdino bench --what kernels`, `docs/performance.md`):
//! each kernel's model FLOPs and compulsory bytes (from the GPU backend's launch profile), the bound it
//! hits on a given GPU, and the time it is designed to take there. On CUDA the times are measured (CUDA
//! events); on the emulator they are **modelled** with the efficiencies below, and say so.
//!
//! The model of one launch: t = max(FLOPs ÷ (peak · e_compute · fill), bytes ÷ (bandwidth · e_memory ·
//! fill), t_min), where fill = min(1, CTAs ÷ SMs) (a launch with fewer blocks than SMs leaves the rest
//! idle) and t_min is the floor of a launch that does almost nothing (a kernel in a captured graph still
//! takes a few µs from start to drain). A kernel's time is the sum over its launches; the step's is the
//! sum over kernels: launches back to back, as a CUDA graph replays them, with no host gaps.
use crate::backend::gpu::profile::{KernelTotal, LaunchProfile};
use serde::Serialize;

/// A GPU's peaks (dense, from the vendor's data sheets; `../shared/spec/performance.md` §2.1).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GpuPeaks {
    pub name: &'static str,
    pub sms: u32,
    /// Dense bf16 tensor-core TFLOP/s (FP32 accumulate).
    pub bf16_tflops: f64,
    /// FP32 FMA (non-tensor) TFLOP/s.
    pub f32_tflops: f64,
    /// HBM bandwidth, TB/s.
    pub hbm_tbs: f64,
}

pub const H100_SXM: GpuPeaks = GpuPeaks {
    name: "H100 SXM",
    sms: 132,
    bf16_tflops: 989.0,
    f32_tflops: 67.0,
    hbm_tbs: 3.35,
};
pub const H200: GpuPeaks = GpuPeaks {
    name: "H200",
    sms: 132,
    bf16_tflops: 989.0,
    f32_tflops: 67.0,
    hbm_tbs: 4.8,
};
pub const A100: GpuPeaks = GpuPeaks {
    name: "A100 SXM",
    sms: 108,
    bf16_tflops: 312.0,
    f32_tflops: 19.5,
    hbm_tbs: 2.039,
};

/// `h100`, `h200` or `a100` (case-insensitive), or the GPU a CUDA device description names.
pub fn peaks_for(name: &str) -> Option<GpuPeaks> {
    let n = name.to_ascii_lowercase();
    [("h200", H200), ("h100", H100_SXM), ("a100", A100)]
        .into_iter()
        .find(|(k, _)| n.contains(k))
        .map(|(_, p)| p)
}

/// What a kernel is, for the efficiency it is designed to reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Class {
    /// A bf16 tensor-core GEMM (`matmul_*_bf16` with FLOPs).
    TensorGemm,
    /// bf16 fused attention on tensor cores (one CTA per image, all heads).
    TensorAttention,
    /// An f32 CUDA-core kernel with FLOPs (the f32 GEMMs and attention).
    SimtMath,
    /// Everything else: LayerNorm, GELU, residuals, reductions, the loss, AdamW, EMA, copies.
    Memory,
}

impl Class {
    /// The class of a launch of `kernel` that states `flop` model FLOPs.
    pub fn of(kernel: &str, flop: f64) -> Class {
        let bf16 = kernel.ends_with("_bf16");
        match (flop > 0.0, bf16, kernel.starts_with("attention")) {
            (false, _, _) => Class::Memory,
            (true, true, true) => Class::TensorAttention,
            (true, true, false) => Class::TensorGemm,
            (true, false, _) => Class::SimtMath,
        }
    }
    /// The fraction of the compute peak designed for, and why (docs/performance.md).
    pub fn compute_efficiency(self) -> f64 {
        match self {
            // 128×64 tiles, cp.async double buffering, K = 384…1536: CUTLASS reaches 70–80 % on
            // large square GEMMs; short K and tile quantisation at R ≈ 38 k rows leave ~60 %.
            Class::TensorGemm => 0.60,
            // 37 tokens, head dim 64: 48×64 padded tiles, softmax between two small MMAs per head.
            Class::TensorAttention => 0.20,
            // 16×16 shared-memory tiles without register blocking (llm.c's kernel 1–2 class).
            Class::SimtMath => 0.25,
            Class::Memory => 1.0,
        }
    }
    fn peak(self, gpu: &GpuPeaks) -> f64 {
        1e12 * match self {
            Class::TensorGemm | Class::TensorAttention => gpu.bf16_tflops,
            Class::SimtMath | Class::Memory => gpu.f32_tflops,
        }
    }
}

/// Bound indices of [`launch_model`].
pub const BOUNDS: [&str; 3] = ["compute", "memory", "latency"];

/// The modelled seconds of one launch on `gpu` and its bound (an index into [`BOUNDS`]).
pub fn launch_model(l: &LaunchProfile, gpu: &GpuPeaks) -> (f64, usize) {
    let class = Class::of(l.kernel.name(), l.flop);
    let fill = (l.ctas as f64 / f64::from(gpu.sms)).clamp(1e-3, 1.0);
    let t_compute = l.flop / (class.peak(gpu) * class.compute_efficiency() * fill);
    let t_memory = l.bytes as f64 / (gpu.hbm_tbs * 1e12 * MEMORY_EFFICIENCY * fill);
    let t_floor = LAUNCH_FLOOR_US * 1e-6;
    if t_floor >= t_compute.max(t_memory) {
        (t_floor, 2)
    } else if t_compute >= t_memory {
        (t_compute, 0)
    } else {
        (t_memory, 1)
    }
}

/// Fraction of HBM bandwidth a streaming kernel is designed to reach.
pub const MEMORY_EFFICIENCY: f64 = 0.70;
/// The floor of one launch, µs (start, one wave, drain), inside a graph.
pub const LAUNCH_FLOOR_US: f64 = 2.0;

/// One row of the kernel table.
#[derive(Clone, Debug, Serialize)]
pub struct KernelRow {
    #[serde(flatten)]
    pub total: KernelTotal,
    pub class: Class,
    /// FLOP per byte.
    pub intensity: f64,
    /// "compute", "memory" or "latency": what sets the (modelled or measured) time.
    pub bound: &'static str,
    /// Time per step, ms: measured where `measured`, else modelled.
    pub ms: f64,
    pub measured: bool,
    pub tflops: f64,
    pub gbs: f64,
    /// Achieved share of the bound's peak (compute peak for compute-bound, bandwidth otherwise), %.
    pub pct_of_peak: f64,
}

/// The kernel table on `gpu` (totals from `profile::per_kernel` with [`launch_model`]): measured times
/// where the profile has them, else modelled ones.
pub fn rows(totals: &[KernelTotal], gpu: &GpuPeaks) -> Vec<KernelRow> {
    totals
        .iter()
        .map(|t| {
            let class = Class::of(&t.kernel, t.flop);
            let bound = (0..3)
                .max_by(|&a, &b| t.model_ms_by_bound[a].total_cmp(&t.model_ms_by_bound[b]))
                .map_or("latency", |i| BOUNDS[i]);
            let (ms, measured) = match t.ms {
                Some(ms) => (ms, true),
                None => (t.model_ms, false),
            };
            let secs = (ms * 1e-3).max(1e-12);
            let (tflops, gbs) = (t.flop / secs / 1e12, t.bytes as f64 / secs / 1e9);
            let pct_of_peak = if bound == "compute" {
                100.0 * tflops * 1e12 / class.peak(gpu)
            } else {
                100.0 * gbs / (gpu.hbm_tbs * 1e3)
            };
            KernelRow {
                total: t.clone(),
                class,
                intensity: t.flop / (t.bytes as f64).max(1.0),
                bound,
                ms,
                measured,
                tflops,
                gbs,
                pct_of_peak,
            }
        })
        .collect()
}

/// The whole step from its kernel rows.
#[derive(Clone, Debug, Serialize)]
pub struct StepSummary {
    pub gpu: GpuPeaks,
    pub measured: bool,
    pub launches: u64,
    /// Sum of the kernels' times, ms (no host gaps: a captured graph).
    pub ms: f64,
    /// Model FLOPs of the step (`bench::step_flop`), and the kernels' own sum.
    pub step_flop: f64,
    pub kernel_flop: f64,
    pub bytes: u64,
    pub samples_per_s: f64,
    pub cells_per_s: f64,
    /// Model FLOPs per second ÷ the bf16 dense peak, %.
    pub mfu_pct: f64,
}

/// `samples` = sets · n per step; `cells` = 2 · samples (two views of distinct cells).
pub fn summary(rows: &[KernelRow], gpu: &GpuPeaks, step_flop: f64, samples: usize) -> StepSummary {
    let ms: f64 = rows.iter().map(|r| r.ms).sum();
    let secs = (ms * 1e-3).max(1e-12);
    StepSummary {
        gpu: *gpu,
        measured: rows.iter().all(|r| r.measured) && !rows.is_empty(),
        launches: rows.iter().map(|r| r.total.launches).sum(),
        ms,
        step_flop,
        kernel_flop: rows.iter().map(|r| r.total.flop).sum(),
        bytes: rows.iter().map(|r| r.total.bytes).sum(),
        samples_per_s: samples as f64 / secs,
        cells_per_s: 2.0 * samples as f64 / secs,
        mfu_pct: 100.0 * step_flop / secs / (gpu.bf16_tflops * 1e12),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::profile::per_kernel;
    use crate::backend::gpu::Kernel;

    fn launch(kernel: Kernel, ctas: u64, flop: f64, bytes: u64) -> LaunchProfile {
        LaunchProfile {
            kernel,
            ctas,
            flop,
            bytes,
            ms: None,
        }
    }

    fn table(launches: Vec<LaunchProfile>, gpu: &GpuPeaks) -> Vec<KernelRow> {
        rows(&per_kernel(&[launches], |l| launch_model(l, gpu)), gpu)
    }

    #[test]
    fn a_big_gemm_is_compute_bound_a_stream_memory_bound_and_a_tiny_launch_latency_bound() {
        let r = table(
            vec![
                launch(Kernel::matmul_forward_bf16, 1000, 1e12, 1 << 30),
                launch(Kernel::gelu_forward_f32, 1000, 0.0, 1 << 30),
                launch(Kernel::reduce_fill_f32, 1, 0.0, 4),
            ],
            &H100_SXM,
        );
        assert_eq!(
            r.iter().map(|r| r.bound).collect::<Vec<_>>(),
            ["compute", "memory", "latency"]
        );
        // 1 TFLOP at 60 % of 989 TFLOP/s
        assert!((r[0].ms - 1e3 / (989.0 * 0.6)).abs() < 1e-9);
        assert!((r[0].pct_of_peak - 60.0).abs() < 1e-9);
        // 1 GiB at 70 % of 3.35 TB/s
        assert!((r[1].pct_of_peak - 70.0).abs() < 1e-9);
        assert!((r[2].ms - LAUNCH_FLOOR_US * 1e-3).abs() < 1e-12);
        let s = summary(&r, &H100_SXM, 1e12, 512);
        assert!(!s.measured);
        assert!((s.ms - r.iter().map(|r| r.ms).sum::<f64>()).abs() < 1e-12);
        assert!(s.mfu_pct < 60.0 && s.mfu_pct > 0.0);
    }

    #[test]
    fn measured_times_replace_the_model_and_few_blocks_slow_a_launch_down() {
        let mut l = launch(Kernel::matmul_forward_bf16, 1000, 1e12, 1 << 20);
        l.ms = Some(4.0);
        let r = table(vec![l.clone()], &H200);
        assert!(r[0].measured && r[0].ms == 4.0);
        assert!((r[0].tflops - 250.0).abs() < 1e-9);
        l.ms = None;
        let full = table(vec![l.clone()], &H200)[0].ms;
        let mut half = l.clone();
        half.ctas = 66; // half the SMs
        assert!((table(vec![half.clone()], &H200)[0].ms / full - 2.0).abs() < 1e-9);
        // launches are modelled one by one: a small launch does not slow a big one of the same kernel
        let both = table(vec![l, half], &H200)[0].ms;
        assert!((both - 3.0 * full).abs() < 1e-9);
    }

    #[test]
    fn devices_are_found_by_name() {
        assert_eq!(peaks_for("cuda: NVIDIA H200 (sm_90)").unwrap().name, "H200");
        assert_eq!(peaks_for("NVIDIA H100 80GB HBM3").unwrap().hbm_tbs, 3.35);
        assert_eq!(peaks_for("a100").unwrap().sms, 108);
        assert!(peaks_for("simt").is_none());
    }
}
