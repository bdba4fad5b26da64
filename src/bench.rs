//! Throughput measurements shared by `setdino bench` and `benches/step.rs`: ViT forward+backward
//! (images/s) and the full Set-DINO step (samples/s), with a FLOP model to report GFLOP/s. The workloads
//! mirror `../shared/tools/torch_vit_bench.py` so the two can be run side by side.
use crate::backend::Backend;
use crate::config::{ModelConfig, OptimConfig, TeacherInit};
use crate::data::device_step::RawStep;
use crate::engine::schedule::StepSchedule;
use crate::engine::step::{HostState, StepCropsIn};
use crate::engine::vit::{backbone_backward, backbone_forward, BackboneOffs};
use crate::engine::{Engine, StepBatch};
use crate::model::params::ParamLayout;
use crate::model::pos::interp_matrix;
use anyhow::Result;
use serde::Serialize;
use std::time::Instant;

/// One measured workload.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub name: String,
    pub backend: String,
    pub threads: usize,
    /// Items (images or samples) per iteration.
    pub items: usize,
    /// Seconds per iteration, every repeat.
    pub times: Vec<f64>,
    pub median_s: f64,
    pub best_s: f64,
    /// Items per second at the median time.
    pub items_per_s: f64,
    /// Model FLOP per iteration (matmuls and attention, fwd + bwd where trained).
    pub flop: f64,
    pub gflops: f64,
    /// One step's launches, allocations, memsets, copies, host syncs and bytes moved, counted after the
    /// timed runs, where the backend counts (the GPU backends; `Backend::counts`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_step: Option<crate::backend::counters::Counts>,
    /// The memory the step's temporaries live in once warm: on the GPU backends the arena they are carved
    /// from (one allocation, `GpuBackend::settle_arena`); on the CPU its pool's buffers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arena_bytes: Option<u64>,
    /// Bytes allocated since the engine was built: the model's state, the step's temporaries, and on
    /// the GPU backends both the first step's blocks (freed when the arena was carved) and the arena.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_bytes: Option<u64>,
    /// Where `per_step` counts a replayed graph: the same step run launch by launch (what the graph
    /// holds, plus the host's own calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_step_uncaptured: Option<crate::backend::counters::Counts>,
}

fn summarise(
    name: String,
    backend: String,
    items: usize,
    flop: f64,
    times: Vec<f64>,
) -> BenchResult {
    let mut s = times.clone();
    s.sort_by(|a, b| a.total_cmp(b));
    let median = s[s.len() / 2];
    BenchResult {
        name,
        backend,
        threads: rayon::current_num_threads(),
        items,
        median_s: median,
        best_s: s[0],
        items_per_s: items as f64 / median,
        flop,
        gflops: flop / median / 1e9,
        times,
        per_step: None,
        arena_bytes: None,
        allocated_bytes: None,
        per_step_uncaptured: None,
    }
}

/// How a workload is timed: warm-up runs until both `warmup` runs and `warmup_secs` seconds are done
/// (on a VM the cores reach their steady clock only after a few seconds of load: measured here, a
/// tiny step takes ~240 ms for its first 2 s and ~145 ms from then on), then `repeats` timed runs.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub warmup: usize,
    pub warmup_secs: f64,
    pub repeats: usize,
}

impl Timing {
    /// `repeats` timed runs with no warm-up (the profiler's passes, `cargo bench`).
    pub fn cold(repeats: usize) -> Self {
        Timing {
            warmup: 0,
            warmup_secs: 0.0,
            repeats,
        }
    }

    /// Runs `f` through the warm-up, then `repeats` times; the seconds of each timed run.
    fn run(&self, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
        let t_warm = Instant::now();
        let mut done = 0;
        while done < self.warmup || t_warm.elapsed().as_secs_f64() < self.warmup_secs {
            f()?;
            done += 1;
        }
        let mut times = Vec::with_capacity(self.repeats);
        for _ in 0..self.repeats {
            let t0 = Instant::now();
            f()?;
            times.push(t0.elapsed().as_secs_f64());
        }
        Ok(times)
    }
}

/// Forward FLOP of one image of side `side` through the backbone (2·MACs of every matmul + attention).
pub fn vit_forward_flop(cfg: &ModelConfig, side: usize) -> f64 {
    let p = (side / cfg.patch).pow(2) as f64;
    let n = p + 1.0;
    let (c, f) = (cfg.dim as f64, cfg.mlp_hidden as f64);
    let patch = patch_embed_flop(cfg, side);
    let per_block = 2.0 * n * (3.0 * c * c + c * c + 2.0 * c * f) + 4.0 * n * n * c;
    patch + cfg.depth as f64 * per_block
}

/// Forward FLOP of the head on one row.
pub fn head_forward_flop(cfg: &ModelConfig) -> f64 {
    let mut fl = 0.0;
    for (i, o) in crate::model::params::head_dims(cfg) {
        fl += 2.0 * (i * o) as f64;
    }
    fl + 2.0 * (cfg.head_bottleneck * cfg.out_dim) as f64
}

/// Model FLOPs of one Set-DINO step (`../shared/spec/performance.md` §1.3): the student's forward +
/// backward (3 × forward) on 2 global and `n_local` local crops of each of the sets·n cells, with the
/// head on the (2 + n_local)·sets set means, and the teacher's forward on the global crops and 2·sets
/// means. The reference step (32 × 16, 8 locals, 96/48 px, K = 2048) is 11.94 TFLOP.
pub fn step_flop(cfg: &ModelConfig, sets: usize, n: usize, n_local: usize) -> f64 {
    let r = sets * n;
    let (g, l) = (cfg.global_size, cfg.local_size);
    // backward = 2 × forward, but the patch embedding needs no input gradient (the image has none)
    let fwd_bwd = |side: usize| 3.0 * vit_forward_flop(cfg, side) - patch_embed_flop(cfg, side);
    let student = (2 * r) as f64 * fwd_bwd(g)
        + (n_local * r) as f64 * fwd_bwd(l)
        + 3.0 * ((2 + n_local) * sets) as f64 * head_forward_flop(cfg);
    let teacher =
        (2 * r) as f64 * vit_forward_flop(cfg, g) + (2 * sets) as f64 * head_forward_flop(cfg);
    student + teacher
}

/// Forward FLOP of the patch embedding of one image: 2·patches·(P²·channels)·D.
pub fn patch_embed_flop(cfg: &ModelConfig, side: usize) -> f64 {
    let p = (side / cfg.patch).pow(2) as f64;
    2.0 * p * (cfg.in_chans * cfg.patch * cfg.patch * cfg.dim) as f64
}

/// ViT forward + backward on `batch` images of `side` pixels, loss = mean of squares of the final CLS
/// features (as torch_vit_bench.py), no drop path.
pub fn vit_fwd_bwd<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    batch: usize,
    side: usize,
    timing: Timing,
) -> Result<BenchResult> {
    let layout = ParamLayout::new(cfg);
    let offs = BackboneOffs::new(cfg, &layout);
    let params = be.upload(&layout.init(1, 1))?;
    let mut grads = be.zeros(layout.n)?;
    let interp: Vec<f32> = interp_matrix(cfg.pos_grid, side / cfg.patch)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    let interp = be.upload(&interp)?;
    let imgs: Vec<f32> = (0..batch * cfg.in_chans * side * side)
        .map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 1000.0)
        .collect();
    let imgs = be.upload(&imgs)?;
    let times = timing.run(|| {
        let acts = backbone_forward(be, cfg, &offs, &params, &interp, &imgs, batch, side, None)?;
        // d(mean(out²))/d out = 2·out/numel
        let out = be.download(&acts.out)?;
        let scale = 2.0 / out.len() as f32;
        let dout = be.upload(&out.iter().map(|&x| x * scale).collect::<Vec<_>>())?;
        be.fill(&mut grads, 0, layout.n, 0.0)?;
        backbone_backward(be, cfg, &offs, &params, &mut grads, &interp, &acts, &dout)?;
        // synchronise: a download waits for every launch before it (the small `dout`, not the 22 M
        // gradients, whose copy would be timed as part of the step)
        let _ = be.download(&dout)?;
        Ok(())
    })?;
    let flop = 3.0 * vit_forward_flop(cfg, side) * batch as f64;
    Ok(summarise(
        format!("vit_fwd_bwd {}px batch {batch}", side),
        be.name(),
        batch,
        flop,
        times,
    ))
}

/// The full Set-DINO step (teacher + student forwards, loss, backward, clip, AdamW, EMA, center) for
/// `sets` sets of `n` cells with `n_local` local crops; items = sets·n samples. `graphs`: the step is
/// captured and replayed as the training loop does on a GPU backend (`Engine::set_graphs`; no effect
/// on the CPU backend).
pub fn setdino_step<B: Backend>(
    be: B,
    cfg: &ModelConfig,
    sets: usize,
    n: usize,
    n_local: usize,
    timing: Timing,
    graphs: bool,
) -> Result<BenchResult> {
    let (mut eng, batch) = step_engine(be, cfg, sets, n, n_local)?;
    eng.set_graphs(graphs);
    // On a device the crops go up as training hands them over: the raw cells and crop records, rendered
    // on the device straight into the buffers the step reads (no copy into a captured step's inputs).
    let raw = eng
        .be
        .is_device()
        .then(|| step_raw(cfg, sets, n, n_local, 0));
    let crops = match &raw {
        Some(raw) => StepCropsIn::Raw(raw),
        None => StepCropsIn::Batch(&batch),
    };
    let (optim, sched) = step_hyper();
    let r = sets * n;
    let (g, l) = (cfg.global_size, cfg.local_size);
    let mut it = 0u64;
    let times = timing.run(|| {
        eng.train_step_from(crops, &optim, &sched, 1, it, (0, 1))?;
        it += 1;
        let _ = eng.read_monitor(1)?; // synchronise (what the training loop does every log_every steps)
        Ok(())
    })?;
    let mut res = summarise(
        format!("setdino_step {sets} set(s) × {n} cells, 2×{g}px + {n_local}×{l}px"),
        eng.be.name(),
        r,
        step_flop(cfg, sets, n, n_local),
        times,
    );
    if graphs {
        // Warm until the step replays (a shape is captured once a direct step of it allocated nothing).
        for _ in 0..3 {
            if eng.graph_active() {
                break;
            }
            step_counts(&mut eng, crops, it)?;
            it += 1;
        }
    }
    res.per_step = step_counts(&mut eng, crops, it)?;
    if let Some(why) = eng.graph_note.take() {
        eprintln!(
            "note: the step could not be captured as a graph ({why}); it ran launch by launch"
        );
    }
    let counts = eng.be.counts();
    res.arena_bytes = counts.map(|c| match eng.be.is_device() {
        true => c.arena_bytes,
        false => c.alloc_bytes,
    });
    res.allocated_bytes = counts.map(|c| c.alloc_bytes);
    if graphs && eng.graph_active() {
        // The same step launch by launch, once the pool holds its buffers again (the graph's were freed).
        eng.set_graphs(false);
        for k in 1..=3 {
            step_counts(&mut eng, crops, it + k)?;
        }
        res.per_step_uncaptured = step_counts(&mut eng, crops, it + 4)?;
    }
    Ok(res)
}

/// What one more training step (at iteration `it`, after warm-up) asks of the device, where the backend
/// counts: the step as the training loop runs it (`Engine::train_step_from`), without the bench's
/// synchronising read of the monitor.
pub fn step_counts<B: Backend>(
    eng: &mut Engine<B>,
    crops: StepCropsIn<B>,
    it: u64,
) -> Result<Option<crate::backend::counters::Counts>> {
    let (optim, sched) = step_hyper();
    let Some(before) = eng.be.counts() else {
        return Ok(None);
    };
    eng.train_step_from(crops, &optim, &sched, 1, it, (0, 1))?;
    Ok(eng.be.counts().map(|after| after.since(before)))
}

/// Step `step`'s crops as a training run on a device hands them over (`data::device_step`): one stored
/// crop of the global side per cell (deterministic u16 values that change with `step`) and every crop's
/// render record, drawn by the data path's augmentation (2 global and `n_local` local views per cell).
pub fn step_raw(cfg: &ModelConfig, sets: usize, n: usize, n_local: usize, step: u64) -> RawStep {
    use crate::data::augment::{crop_params, AugmentConfig};
    use crate::data::device_step::render_record;
    let (r, c, crop) = (sets * n, cfg.in_chans, cfg.global_size);
    let shift = usize::try_from(step % 60_000).unwrap_or(0);
    let cells = (0..r * c * crop * crop)
        .map(|i| ((i * 2_654_435_761usize + shift * 7919) % 60_000) as u16)
        .collect();
    let acfg = AugmentConfig::for_crop(crop);
    let records = |views: usize, first: u64| {
        let mut out = Vec::new();
        for v in 0..views {
            for i in 0..r {
                let p = crop_params(&acfg, crop, c, step, i / n, i % n, first + v as u64);
                render_record(&p, i, &mut out);
            }
        }
        out
    };
    RawStep {
        cells,
        global_params: records(2, 0),
        local_params: records(n_local, 2),
        global_stats: Vec::new(),
        local_stats: Vec::new(),
        norm: None,
        sets,
        set_size: n,
        channels: c,
        crop,
        global_size: cfg.global_size,
        local_size: cfg.local_size,
        n_local,
    }
}

/// The optimiser settings and schedule point of the benchmark step.
pub fn step_hyper() -> (OptimConfig, StepSchedule) {
    (
        OptimConfig::default(),
        StepSchedule {
            lr: 1e-4,
            weight_decay: 0.04,
            momentum: 0.998,
            teacher_temp: 0.01,
            freeze_last_layer: false,
        },
    )
}

/// An engine at a fresh initialisation and a deterministic batch of `sets` sets of `n` cells with
/// `n_local` local crops: what the benchmark step runs.
pub fn step_engine<B: Backend>(
    be: B,
    cfg: &ModelConfig,
    sets: usize,
    n: usize,
    n_local: usize,
) -> Result<(Engine<B>, StepBatch<B>)> {
    let st = HostState::init(cfg, 1, TeacherInit::Copy);
    let eng = Engine::from_host(be, cfg.clone(), &st)?;
    let r = sets * n;
    let (g, l, ch) = (cfg.global_size, cfg.local_size, cfg.in_chans);
    let fill = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    };
    let batch = StepBatch {
        global: eng.be.upload(&fill(2 * r * ch * g * g))?,
        local: if n_local > 0 {
            Some(eng.be.upload(&fill(n_local * r * ch * l * l))?)
        } else {
            None
        },
        sets,
        set_size: n,
        n_local,
    };
    Ok((eng, batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_step_costs_what_the_performance_spec_says() {
        // ../shared/spec/performance.md §1: ViT-S/16 forward at 96 px 1.6248 GFLOP, at 48 px 0.4336;
        // the reference step (32 sets × 16 cells, 8 locals, 96/48 px, K = 2048) 11.938 TFLOP.
        let cfg = ModelConfig::preset("vits16").unwrap();
        assert_eq!(
            (cfg.global_size, cfg.local_size, cfg.out_dim),
            (96, 48, 2048)
        );
        assert!((vit_forward_flop(&cfg, 96) / 1e9 - 1.6248).abs() < 5e-4);
        assert!((vit_forward_flop(&cfg, 48) / 1e9 - 0.4336).abs() < 5e-4);
        let step = step_flop(&cfg, 32, 16, 8) / 1e12;
        assert!((step - 11.938).abs() < 2e-3, "{step}");
    }
}
