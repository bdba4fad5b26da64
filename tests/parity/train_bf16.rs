//! A 200-step training run with bf16 tensor-core GEMMs on the emulator against the f32 CPU reference:
//! the loss curves stay within a stated band of each other.
use crate::common::rand_vec_f32;
use setdino::backend::cpu::CpuBackend;
use setdino::backend::gpu::simt::Simt;
use setdino::backend::gpu::GpuBackend;
use setdino::backend::{Backend, Precision};
use setdino::config::{ModelConfig, OptimConfig, TeacherInit};
use setdino::engine::schedule::StepSchedule;
use setdino::engine::step::HostState;
use setdino::engine::{Engine, StepBatch};

pub const STEPS: u64 = 200;

fn cfg() -> ModelConfig {
    ModelConfig {
        in_chans: 2,
        patch: 8,
        dim: 16,
        depth: 1,
        heads: 2,
        mlp_hidden: 32,
        ln_eps: 1e-6,
        drop_path: 0.0,
        pos_grid: 28,
        head_hidden: 32,
        head_bottleneck: 16,
        head_layers: 3,
        out_dim: 24,
        global_size: 16,
        local_size: 8,
    }
}

/// Loss per step of a run over 4 fixed batches (cycled, so the model can fit them and the loss moves).
pub fn losses<B: Backend>(be: B) -> Vec<f64> {
    let c = cfg();
    let st = HostState::init(&c, 5, TeacherInit::Copy);
    let mut eng = Engine::from_host(be, c.clone(), &st).expect("engine");
    let optim = OptimConfig {
        eps: 1e-6,
        ..OptimConfig::default()
    };
    let (s, n) = (2usize, 2usize);
    let batches: Vec<StepBatch<B>> = (0..4u64)
        .map(|k| StepBatch {
            global: eng
                .be
                .upload(&rand_vec_f32(2 * s * n * 2 * 16 * 16, 900 + k, 1.0))
                .expect("upload"),
            local: None,
            sets: s,
            set_size: n,
            n_local: 0,
        })
        .collect();
    let mut out = Vec::new();
    for step in 0..STEPS {
        let sched = StepSchedule {
            lr: 2e-3,
            weight_decay: 0.04,
            momentum: 0.99,
            teacher_temp: 0.04,
            freeze_last_layer: false,
        };
        let b = &batches[(step % 4) as usize];
        let lo = eng
            .forward_backward(b, 0.1, sched.teacher_temp, None)
            .expect("step");
        out.push(lo.loss);
        eng.update(&optim, &sched, &lo.teacher_out).expect("update");
    }
    out
}

/// Band: |loss_bf16 − loss_f32| ≤ 0.05·max(loss_f32, 0.5) at every step (5 % of the loss, or 0.025
/// where the loss is small: relative gaps of tiny losses are noise). Why 5 %: the bf16 forward moves
/// the head outputs by ~7e-3 of their scale at step 0 (tests/parity/step.rs), and the loss reads them
/// through 1/τs = 10 and 1/τt = 25, so the first steps, with the sharp random-init teacher, are the
/// most sensitive (measured 3.5 % at step 1); later the curves agree to ~1 % while the loss falls from
/// 0.79 to 0.04 and climbs to ~3.1 (towards ln K, the DINO loss on random crops). The curve must move
/// by more than 1.0, so the band is not met by two flat curves.
#[test]
fn bf16_loss_curve_stays_within_five_percent_of_f32_over_200_steps() {
    let f32_run = losses(CpuBackend::<f32>::new());
    let bf16_run = losses(GpuBackend::with_precision(Simt::new(), Precision::Bf16));
    for k in (0..8).chain((10..f32_run.len()).step_by(20)) {
        eprintln!("step {k:>3}: f32 {:.4} bf16 {:.4}", f32_run[k], bf16_run[k]);
    }
    let mut worst = (0usize, 0.0f64);
    for (k, (a, b)) in bf16_run.iter().zip(&f32_run).enumerate() {
        let r = (a - b).abs() / (0.05 * b.abs().max(0.5));
        if r > worst.1 {
            worst = (k, r);
        }
    }
    eprintln!(
        "worst gap {:.0}% of the band, at step {}",
        100.0 * worst.1,
        worst.0
    );
    let max = f32_run.iter().cloned().fold(f64::MIN, f64::max);
    let min = f32_run.iter().cloned().fold(f64::MAX, f64::min);
    assert!(max - min > 1.0, "the loss must move: {min}..{max}");
    assert!(bf16_run.iter().all(|l| l.is_finite()), "bf16 loss finite");
    assert!(
        worst.1 <= 1.0,
        "bf16 loss left the band at step {}",
        worst.0
    );
}
