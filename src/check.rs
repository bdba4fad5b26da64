//! `setdino check`: the first command to run on a new machine. It says which backend is active and why,
//! describes the CUDA device, prints NVRTC's per-kernel register and shared-memory table, and runs one
//! tiny Set-DINO step on the active device against the CPU reference, reporting the worst errors.
use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::config::{ModelConfig, OptimConfig, TeacherInit};
use crate::engine::schedule::StepSchedule;
use crate::engine::step::HostState;
use crate::engine::{Engine, StepBatch};
use crate::util::check::rel_error;
use anyhow::Result;

/// A config small enough to run on the SIMT emulator in well under a second.
pub fn tiny_check_config() -> ModelConfig {
    ModelConfig {
        in_chans: 4,
        patch: 8,
        dim: 32,
        depth: 2,
        heads: 2,
        mlp_hidden: 64,
        ln_eps: 1e-6,
        drop_path: 0.1,
        pos_grid: 28,
        head_hidden: 48,
        head_bottleneck: 16,
        head_layers: 3,
        out_dim: 64,
        global_size: 32,
        local_size: 16,
    }
}

/// One step on `be` (forward, backward, update) → named results for comparison.
fn one_step<B: Backend>(be: B) -> Result<Vec<(String, Vec<f64>)>> {
    let cfg = tiny_check_config();
    let st = HostState::init(&cfg, 3, TeacherInit::SeparateHead);
    let mut eng = Engine::from_host(be, cfg.clone(), &st)?;
    let (s, n, l) = (2usize, 2usize, 2usize);
    let r = s * n;
    let batch = StepBatch {
        global: eng.be.upload(&check_crops(2 * r * 4 * 32 * 32, 1))?,
        local: Some(eng.be.upload(&check_crops(l * r * 4 * 16 * 16, 2))?),
        sets: s,
        set_size: n,
        n_local: l,
    };
    let out = eng.forward_backward(&batch, 0.1, 0.04, Some((1, 0)))?;
    let grads = eng.be.download(&eng.grads)?;
    let sched = StepSchedule {
        lr: 1e-4,
        weight_decay: 0.04,
        momentum: 0.996,
        teacher_temp: 0.04,
        freeze_last_layer: false,
    };
    let optim = OptimConfig {
        eps: 1e-4,
        ..OptimConfig::default()
    };
    eng.update(&optim, &sched, &out.teacher_out)?;
    let h = eng.to_host()?;
    let w = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
    Ok(vec![
        ("loss".into(), vec![out.loss]),
        ("student_out".into(), w(eng.be.download(&out.student_out)?)),
        ("gradients".into(), w(grads)),
        ("student after AdamW".into(), w(h.student)),
        ("teacher after EMA".into(), w(h.teacher)),
        (
            "Adam moments".into(),
            w(h.adam_m.into_iter().chain(h.adam_v).collect()),
        ),
        ("center".into(), w(h.center)),
    ])
}

/// Training steps of the graph self-test: two run directly, one is captured, the rest replay it.
pub const GRAPH_CHECK_STEPS: u64 = 6;

/// [`GRAPH_CHECK_STEPS`] training steps of the tiny config on `be` (as the training loop runs them,
/// drop path on, every scalar moving with the step) with graphs on or off: the final state (student,
/// teacher, moments, center), the steps replayed, and the backend back.
fn graph_run<B: Backend>(be: B, graphs: bool) -> Result<(Vec<f32>, u64, B)> {
    let cfg = tiny_check_config();
    let st = HostState::init(&cfg, 3, TeacherInit::SeparateHead);
    let mut eng = Engine::from_host(be, cfg.clone(), &st)?;
    eng.set_graphs(graphs);
    let optim = OptimConfig {
        eps: 1e-4,
        ..OptimConfig::default()
    };
    let (s, n, l) = (2usize, 2usize, 2usize);
    for t in 0..GRAPH_CHECK_STEPS {
        let batch = StepBatch {
            global: eng
                .be
                .upload(&check_crops(2 * s * n * 4 * 32 * 32, 10 + t))?,
            local: Some(
                eng.be
                    .upload(&check_crops(l * s * n * 4 * 16 * 16, 20 + t))?,
            ),
            sets: s,
            set_size: n,
            n_local: l,
        };
        let x = t as f64;
        let sched = StepSchedule {
            lr: 1e-4 * (1.0 + x),
            weight_decay: 0.04 + 0.01 * x,
            momentum: 0.996 - 0.001 * x,
            teacher_temp: 0.04 + 0.002 * x,
            freeze_last_layer: false,
        };
        eng.train_step_on_device(&batch, &optim, &sched, 7, t, (0, 1))?;
    }
    if let Some(why) = eng.graph_note.take() {
        anyhow::bail!("the step could not be captured: {why}");
    }
    let h = eng.to_host()?;
    let state = [h.student, h.teacher, h.adam_m, h.adam_v, h.center].concat();
    let replays = eng.replayed_steps;
    Ok((state, replays, eng.into_backend()))
}

/// The graph self-test: the tiny model trained [`GRAPH_CHECK_STEPS`] steps on `be` with the step
/// captured and replayed, and again launch by launch. Returns (steps replayed, max|Δ| of the final
/// state, whether it is bit-identical); `None` where the backend does not capture (the CPU).
pub fn graph_self_test<B: Backend>(be: B) -> Result<Option<(u64, f64, bool)>> {
    let (with, replays, be) = graph_run(be, true)?;
    if replays == 0 {
        return Ok(None);
    }
    let (without, _, _) = graph_run(be, false)?;
    let same = with
        .iter()
        .zip(&without)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    let diff = with
        .iter()
        .zip(&without)
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max);
    Ok(Some((replays, diff, same)))
}

/// Deterministic crop values in [−1, 1) for the self-tests.
fn check_crops(len: usize, seed: u64) -> Vec<f32> {
    (0..len)
        .map(|i| (((i as u64 + 1) * (seed * 2_654_435_761 + 1)) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

/// Runs the tiny step on `be` and on the CPU; returns (quantity, max|Δ|, relative error).
pub fn parity_self_test<B: Backend>(be: B) -> Result<Vec<(String, f64, f64)>> {
    // At bf16 the reference is the CPU twin that rounds the GEMM operands where the kernels do.
    let want = one_step(CpuBackend::<f32>::with_precision(be.precision()))?;
    let got = one_step(be)?;
    Ok(got
        .into_iter()
        .zip(want)
        .map(|((name, g), (_, w))| {
            let (d, r) = rel_error(&g, &w);
            (name, d, r)
        })
        .collect())
}
