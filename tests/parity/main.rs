//! Every kernel against its CPU twin (correctness ladder rung 3): each test runs the same `Backend` op on
//! `CpuBackend<f32>` and on `GpuBackend<Simt>` (the kernel text compiled by g++ against the SIMT emulator)
//! with seeded inputs at awkward shapes (5, 10 and 37 tokens; dims that are not multiples of the tile
//! sizes) and compares every output: |got − want| ≤ ATOL + RTOL·|want|. One module per `kernels/*.cu`.
#[path = "../common/mod.rs"]
mod common;

mod adamw;
mod attention;
mod augment;
mod dino_loss;
mod ema;
mod gelu;
mod koleo;
mod l2norm;
mod layernorm;
mod matmul;
mod patch_embed;
mod reduce;
mod residual;
mod set_mean;
mod simt_emulator;
mod step;
mod train_bf16;
mod weightnorm;

use setdino::backend::cpu::CpuBackend;
use setdino::backend::gpu::simt::Simt;
use setdino::backend::gpu::GpuBackend;
use setdino::backend::Backend;

pub const ATOL: f64 = 1e-5;
pub const RTOL: f64 = 1e-4;

/// Named outputs of one op run.
pub type Outs = Vec<(String, Vec<f32>)>;

/// Seeded input values in [-scale, scale].
pub fn data(n: usize, seed: u64, scale: f64) -> Vec<f32> {
    common::rand_vec_f32(n, seed, scale)
}

/// Compares two runs tensor by tensor; prints the first mismatches and the worst index on failure.
pub fn compare(op: &str, got: &Outs, want: &Outs) {
    assert_eq!(got.len(), want.len(), "{op}: output count");
    for ((name, g), (_, w)) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "{op}/{name}: length");
        let mut bad = Vec::new();
        let mut worst = (0usize, 0.0f64);
        for (idx, (&a, &b)) in g.iter().zip(w).enumerate() {
            let (a, b) = (a as f64, b as f64);
            let err = (a - b).abs();
            let lim = ATOL + RTOL * b.abs();
            if err > lim || err.is_nan() {
                bad.push((idx, a, b));
            }
            let ratio = err / lim;
            if ratio > worst.1 || ratio.is_nan() {
                worst = (idx, ratio);
            }
        }
        eprintln!(
            "{op}/{name:<12} {} values, worst at {} ({:.1}% of tolerance)",
            g.len(),
            worst.0,
            100.0 * worst.1
        );
        assert!(
            bad.is_empty(),
            "{op}/{name}: {} of {} values differ; first: {:?}; worst index {}",
            bad.len(),
            g.len(),
            &bad[..bad.len().min(5)],
            worst.0
        );
    }
}

/// Compares bf16-stored outputs: each value equals the twin's or is its bf16 neighbour (the f32 value
/// before rounding may differ by an f32 ulp and land on the other side of a rounding midpoint), and at
/// most 1 % of the values are neighbours.
pub fn compare_rounded(op: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{op}: length");
    let mut neighbours = 0usize;
    for (idx, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            a.to_bits() & 0xffff,
            0,
            "{op}[{idx}] = {a} is not a bf16 value"
        );
        if a.to_bits() == b.to_bits() {
            continue;
        }
        let (ha, hb) = ((a.to_bits() >> 16) as i32, (b.to_bits() >> 16) as i32);
        assert!(
            (ha - hb).abs() == 1 && a.signum() == b.signum(),
            "{op}[{idx}]: {a} vs twin {b} (more than one bf16 step apart)"
        );
        neighbours += 1;
    }
    eprintln!("{op}: {} values, {neighbours} one bf16 step off", got.len());
    assert!(
        neighbours * 100 <= got.len(),
        "{op}: {neighbours} of {} values one bf16 step off",
        got.len()
    );
}

/// Runs `op` on the CPU reference and on the SIMT device and compares.
pub fn check<F1, F2>(name: &str, cpu_op: F1, gpu_op: F2)
where
    F1: Fn(&CpuBackend<f32>) -> Outs,
    F2: Fn(&GpuBackend<Simt>) -> Outs,
{
    let want = cpu_op(&CpuBackend::<f32>::new());
    let got = gpu_op(&GpuBackend::new(Simt::new()));
    compare(name, &got, &want);
}

/// Runs `op` on the bf16-rounding CPU twin and on the SIMT device with bf16 tensor-core GEMMs.
pub fn check_bf16<F1, F2>(name: &str, cpu_op: F1, gpu_op: F2)
where
    F1: Fn(&CpuBackend<f32>) -> Outs,
    F2: Fn(&GpuBackend<Simt>) -> Outs,
{
    use setdino::backend::Precision;
    let want = cpu_op(&CpuBackend::<f32>::with_precision(Precision::Bf16));
    // both GEMM tiles (the launch picks per shape; these small shapes would all get 64 rows)
    for rows in [64, 128] {
        let mut be = GpuBackend::with_precision(Simt::new(), Precision::Bf16);
        be.set_gemm_tile(Some(rows)).expect("a valid tile");
        let got = gpu_op(&be);
        compare(&format!("{name} (tile {rows}×64)"), &got, &want);
    }
}

/// Both backends through one generic function: `parity!(name, f)` where `f<B: Backend>(&B) -> Outs`.
#[macro_export]
macro_rules! parity {
    ($name:expr, $f:ident) => {
        $crate::check($name, |b| $f(b), |b| $f(b))
    };
}

/// Serialises the tests that change the emulator's schedule (a process-wide setting).
pub static SCHEDULE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

unsafe extern "C" {
    /// -1: $SIMT_SCHEDULE; 0 forward; 1 reverse; 2 one warp at a time.
    fn simt_set_schedule(mode: i32);
}

/// Kernels with barriers (block reductions, shared-memory tiles) must also pass when the emulator runs
/// each block's threads in reverse order, and one warp at a time as far as the barriers allow (a
/// missing `__syncthreads` before reading what other warps wrote shows up); `.ci/run` additionally
/// runs this whole binary with `SIMT_SCHEDULE=reverse` and `SIMT_SCHEDULE=warps`.
#[test]
fn barrier_kernels_pass_in_reverse_and_warp_serial_schedules() {
    let _g = SCHEDULE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for mode in [1, 2] {
        // SAFETY: a process-wide emulator setting, restored below; tests changing it hold SCHEDULE_LOCK.
        unsafe { simt_set_schedule(mode) };
        let r = std::panic::catch_unwind(|| {
            matmul::run_all();
            matmul::run_all_bf16();
            attention::run_all_bf16();
            layernorm::run_all();
            dino_loss::run_all();
            reduce::run_all();
            simt_emulator::reduce_check();
        });
        // SAFETY: as above.
        unsafe { simt_set_schedule(-1) };
        if let Err(e) = r {
            eprintln!("failed in schedule mode {mode} (1 reverse, 2 warps)");
            std::panic::resume_unwind(e);
        }
    }
}

/// Download helper.
pub fn dl<B: Backend>(be: &B, b: &B::Buf) -> Vec<f32> {
    be.download(b).expect("download")
}
/// Upload helper.
pub fn up<B: Backend>(be: &B, v: &[f32]) -> B::Buf {
    be.upload(v).expect("upload")
}
