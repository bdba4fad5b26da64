//! The full Set-DINO step on the SIMT device against the CPU reference, over 3 steps on a tiny config
//! with n > 1 and local crops: loss, every gradient, every parameter, Adam moment and teacher tensor,
//! and the center, compared tensor by tensor; and the embedding path.
use crate::common::rand_vec_f32;
use setdino::backend::counters::Counts;
use setdino::backend::cpu::CpuBackend;
use setdino::backend::gpu::simt::Simt;
use setdino::backend::gpu::GpuBackend;
use setdino::backend::Backend;
use setdino::config::{ModelConfig, OptimConfig, TeacherInit};
use setdino::engine::schedule::StepSchedule;
use setdino::engine::step::{scalar_words, HostState};
use setdino::engine::{Engine, StepBatch};
use setdino::util::check::report_line;

fn cfg() -> ModelConfig {
    ModelConfig {
        in_chans: 3,
        patch: 8,
        dim: 24,
        depth: 2,
        heads: 2,
        mlp_hidden: 40,
        ln_eps: 1e-6,
        drop_path: 0.2,
        pos_grid: 28,
        head_hidden: 36,
        head_bottleneck: 20,
        head_layers: 3,
        out_dim: 37,
        global_size: 24,
        local_size: 16,
    }
}

const S: usize = 2;
const N: usize = 3;
const L: usize = 2;

fn batch<B: Backend>(be: &B, step: u64) -> StepBatch<B> {
    let r = S * N;
    StepBatch {
        global: be
            .upload(&rand_vec_f32(2 * r * 3 * 24 * 24, 500 + step, 1.0))
            .unwrap(),
        local: Some(
            be.upload(&rand_vec_f32(L * r * 3 * 16 * 16, 600 + step, 1.0))
                .unwrap(),
        ),
        sets: S,
        set_size: N,
        n_local: L,
    }
}

/// The schedule point of the compared steps (the last layer frozen or not).
fn sched(freeze_last_layer: bool) -> StepSchedule {
    StepSchedule {
        lr: 1e-3,
        weight_decay: 0.04,
        momentum: 0.99,
        teacher_temp: 0.04,
        freeze_last_layer,
    }
}

/// Runs 3 steps and returns (name, values) of everything to compare.
fn run<B: Backend>(be: B) -> Vec<(String, Vec<f32>)> {
    let c = cfg();
    let mut st = HostState::init(&c, 42, TeacherInit::SeparateHead);
    st.center = rand_vec_f32(c.out_dim, 7, 0.1);
    let mut eng = Engine::from_host(be, c.clone(), &st).unwrap();
    // eps 1e-4: the key part of attn.qkv.bias has an exactly-zero true gradient, so both backends see only
    // rounding noise there; with eps 1e-8 Adam would turn that noise into ±lr updates (tests/reference/README.md).
    let optim = OptimConfig {
        eps: 1e-4,
        ..OptimConfig::default()
    };
    let mut out = Vec::new();
    for step in 0..3u64 {
        let sched = sched(step == 0);
        let b = batch(&eng.be, step);
        let lo = eng
            .forward_backward(&b, 0.1, sched.teacher_temp, Some((9, step)))
            .unwrap();
        out.push((format!("step{step}.loss"), vec![lo.loss as f32]));
        out.push((
            format!("step{step}.student_out"),
            eng.be.download(&lo.student_out).unwrap(),
        ));
        out.push((
            format!("step{step}.teacher_out"),
            eng.be.download(&lo.teacher_out).unwrap(),
        ));
        let grads = eng.be.download(&eng.grads).unwrap();
        for s in eng.layout.specs.iter().filter(|s| s.trainable) {
            out.push((
                format!("step{step}.grad.{}", s.name),
                grads[s.off..s.off + s.len].to_vec(),
            ));
        }
        eng.update(&optim, &sched, &lo.teacher_out).unwrap();
    }
    let h = eng.to_host().unwrap();
    for s in &eng.layout.specs {
        let r = s.off..s.off + s.len;
        out.push((format!("student.{}", s.name), h.student[r.clone()].to_vec()));
        out.push((format!("teacher.{}", s.name), h.teacher[r.clone()].to_vec()));
        out.push((format!("exp_avg.{}", s.name), h.adam_m[r.clone()].to_vec()));
        out.push((format!("exp_avg_sq.{}", s.name), h.adam_v[r].to_vec()));
    }
    out.push(("dino_loss.center".into(), h.center.clone()));
    // The embedding path (teacher, CLS of the last blocks after the final norm).
    let imgs = eng
        .be
        .upload(&rand_vec_f32(5 * 3 * 24 * 24, 700, 1.0))
        .unwrap();
    let (emb, width) = eng.embed(&imgs, 5, 24, true).unwrap();
    assert_eq!(width, 2 * c.dim);
    out.push(("embedding".into(), emb));
    out
}

/// Step 0 (loss, head outputs, every gradient) is held to 1e-4 relative (max|Δ|/max|ref|). Later steps and
/// the final state get 2e-3: Adam normalises every element's step to about lr whatever the gradient's size,
/// so f32 rounding differences in near-zero gradients (tiny head biases) grow over the steps. A broken
/// kernel is off by O(1).
#[test]
fn three_setdino_steps_on_simt_match_cpu() {
    let want = run(CpuBackend::<f32>::new());
    let got = run(GpuBackend::new(Simt::new()));
    let (fails, _) = compare_runs(&got, &want, |name| {
        Some(if name.starts_with("step0.") {
            1e-4
        } else {
            2e-3
        })
    });
    assert!(fails.is_empty(), "tensors over tolerance: {fails:?}");
}

/// Compares two runs tensor by tensor (max|Δ|/max|ref| ≤ `tol(name)`, skipped where `tol` is None):
/// the names over tolerance and the worst relative error.
fn compare_runs(
    got: &[(String, Vec<f32>)],
    want: &[(String, Vec<f32>)],
    tol: impl Fn(&str) -> Option<f64>,
) -> (Vec<String>, f64) {
    let mut fails = Vec::new();
    let mut worst: f64 = 0.0;
    for ((name, g), (_, w)) in got.iter().zip(want) {
        let Some(t) = tol(name) else { continue };
        let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
        let w64: Vec<f64> = w.iter().map(|&x| x as f64).collect();
        let (ok, line) = report_line(name, &g64, &w64, t);
        eprintln!("{line}");
        worst = worst.max(rel(&g64, &w64));
        if !ok {
            fails.push(name.clone());
        }
    }
    (fails, worst)
}

/// The bf16 step (tensor-core GEMMs through the emulator) against the CPU twin that rounds the GEMM
/// operands to bf16 at the same points. Step 0 (loss, head outputs, every gradient) is held to the f32
/// parity's 1e-4 (measured ~1e-7: both sides compute the same rounded products and differ only in f32
/// summation order). Later steps and the final state get 1.2e-2 = 3 bf16 ulps (2⁻⁸ relative spacing):
/// after an update, a weight whose f32 value differs in its last bit between the backends can round to
/// the neighbouring bf16 value, a one-ulp jump in that operand that every later GEMM sees (measured
/// 6.7e-3 at step 2). A layout or fragment bug is off by O(1).
#[test]
fn three_bf16_setdino_steps_on_simt_match_the_rounding_twin() {
    use setdino::backend::Precision;
    let want = run(CpuBackend::<f32>::with_precision(Precision::Bf16));
    let got = run(GpuBackend::with_precision(Simt::new(), Precision::Bf16));
    let (fails, worst) = compare_runs(&got, &want, |name| {
        Some(if name.starts_with("step0.") {
            1e-4
        } else {
            1.2e-2
        })
    });
    eprintln!("worst max|Δ|/max|ref| {worst:.2e}");
    assert!(fails.is_empty(), "tensors over tolerance: {fails:?}");
}

/// max|Δ|/max|ref| allowed between a bf16 and an f32 (or f64) step of a depth-`l` ViT: 8u·(L + 2).
fn bf16_band(l: usize) -> f64 {
    8.0 * (l as f64 + 2.0) / 512.0
}

fn rel(g: &[f64], w: &[f64]) -> f64 {
    let d = g
        .iter()
        .zip(w)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let m = w.iter().map(|x| x.abs()).fold(0.0, f64::max);
    if m > 0.0 {
        d / m
    } else {
        d
    }
}

/// bf16 against the f32 reference, step 0 (loss, head outputs, every gradient): the mixed-precision
/// error itself. Estimate (`bf16_band`): bf16 has a unit roundoff u = 2⁻⁹; a GEMM with both operands
/// rounded is off by ≈ 2u relative per product; the longest path (patch embedding → L blocks → head →
/// loss and back) crosses about 4 rounded GEMM operands per block and per head/embedding stage, so the
/// band is 8u·(L + 2) in max|Δ|/max|ref| per tensor: 6.25e-2 for L = 2 (measured 3.7e-2, worst in the
/// first block's gradients, the end of the longest path). It holds for this config; it is not a bound
/// in general: a sharp teacher temperature or a LayerNorm over few channels amplifies bf16's error past
/// it (up to ~2× on random configs, measured with PyTorch rounding at the same points), so
/// `tests/reference/check_debug_step.py --precision bf16` measures PyTorch's own bf16 error per config
/// and holds the binary to 4× that.
#[test]
fn bf16_step_is_within_the_derived_band_of_the_f32_reference() {
    use setdino::backend::Precision;
    let want = run(CpuBackend::<f32>::new());
    let got = run(GpuBackend::with_precision(Simt::new(), Precision::Bf16));
    let band = bf16_band(cfg().depth);
    let (fails, worst) = compare_runs(&got, &want, |name| {
        name.starts_with("step0.").then_some(band)
    });
    eprintln!("worst max|Δ|/max|ref| at step 0: {worst:.2e}");
    assert!(
        worst > 1e-5,
        "bf16 must differ from f32 (is the bf16 path running?)"
    );
    assert!(fails.is_empty(), "tensors over the bf16 band: {fails:?}");
}

/// The bf16 forward of the backbone reads every block's GEMM operands as they are stored: the LayerNorm,
/// attention and GELU outputs are bf16 buffers and the weights come from the kept bf16 copy, so the only
/// conversion pass (`matmul_forward_round_bf16`) left is the one for the im2col patches, whatever the
/// depth; without the kept copy, each GEMM rounds its weight.
#[test]
fn bf16_backbone_forward_launches_no_conversion_pass_per_block() {
    use setdino::backend::gpu::Kernel;
    use setdino::backend::Precision;
    use setdino::engine::vit::{backbone_forward, BackboneOffs};
    use setdino::model::params::ParamLayout;
    use setdino::model::pos::interp_matrix;
    for depth in [1usize, 2] {
        let cfg = ModelConfig { depth, ..cfg() };
        let layout = ParamLayout::new(&cfg);
        let offs = BackboneOffs::new(&cfg, &layout);
        let (b, side) = (3usize, cfg.global_size);
        let g = GpuBackend::with_precision(Simt::recording(), Precision::Bf16);
        let interp: Vec<f32> = interp_matrix(cfg.pos_grid, side / cfg.patch)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        let (interp, imgs) = (
            g.upload(&interp).unwrap(),
            g.upload(&rand_vec_f32(b * cfg.in_chans * side * side, 5, 1.0))
                .unwrap(),
        );
        let host = layout.init(3, 0);
        for keep in [true, false] {
            let mut params = g.upload(&host).unwrap();
            if keep {
                g.keep_bf16_copy(&mut params).unwrap();
            }
            g.dev.take_launches();
            let acts =
                backbone_forward(&g, &cfg, &offs, &params, &interp, &imgs, b, side, None).unwrap();
            let launches = g.dev.take_launches();
            let count = |k: Kernel| launches.iter().filter(|l| l.kernel == k).count();
            let gemms = count(Kernel::matmul_forward_bf16)
                + count(Kernel::matmul_forward_gelu_bf16)
                + count(Kernel::matmul_forward_residual_bf16);
            assert_eq!(gemms, 1 + 4 * depth, "patch embedding + 4 GEMMs per block");
            let rounds = count(Kernel::matmul_forward_round_bf16);
            let want = if keep { 1 } else { 1 + gemms };
            assert_eq!(
                rounds, want,
                "conversion passes, depth {depth}, kept copy {keep}"
            );
            assert_eq!(
                count(Kernel::residual_forward_f32),
                0,
                "residual adds are fused"
            );
            for a in &acts.blocks {
                for buf in [&a.ln1, &a.attn_o, &a.ln2, &a.gelu] {
                    assert_eq!(g.dtype(buf), setdino::backend::DType::Bf16);
                }
            }
        }
    }
}

/// `Backend::counts` on the emulator, which counts what the CUDA device would be asked to do: after the
/// first step (which uploads the interpolation matrices and the clipping table once) every step asks for
/// the same work; the counted launches are the emulator's recorded ones; the step waits for the device
/// once (the loss, 4 bytes); it uploads only the per-sample drop-path scales (and a ones vector) of each
/// forward group: 2R (teacher) + (1 + 2·depth)·(2 + L)·R floats; and it allocates nothing: dropped
/// buffers go back to the backend's pool and the next step takes them (zeroed by a memset), while the
/// pool itself stays the same size.
#[test]
fn the_step_asks_the_device_for_the_same_work_every_step_and_never_waits_for_it() {
    let c = cfg();
    let st = HostState::init(&c, 42, TeacherInit::Copy);
    let mut eng = Engine::from_host(GpuBackend::new(Simt::recording()), c.clone(), &st).unwrap();
    let optim = OptimConfig::default();
    let (mut per, mut held) = (Vec::new(), Vec::new());
    for step in 0..5u64 {
        let sched = sched(false);
        let b = batch(&eng.be, step);
        eng.be.dev.take_launches();
        let before = eng.be.counts().expect("the GPU backend counts");
        eng.train_step_on_device(&b, &optim, &sched, 1, step, (step as usize % 3, 3))
            .unwrap();
        let d = eng.be.counts().unwrap().since(before);
        assert_eq!(d.launches as usize, eng.be.dev.take_launches().len());
        per.push(d);
        held.push(eng.be.pooled_words());
    }
    assert!(
        per[1..].iter().all(|d| *d == per[1]),
        "steady state: {per:?}"
    );
    assert!(
        held[1..].iter().all(|&h| h == held[1]),
        "the pool does not grow: {held:?}"
    );
    assert!(per[0].allocs > 0);
    let s = per[1];
    // the loss and the teacher's health stay on the device (read every log_every steps by the loop)
    assert_eq!((s.host_syncs, s.d2h_bytes), (0, 0));
    let r = (S * N) as u64;
    // one upload: the step's scalars (AdamW, EMA, teacher temperature) and drop-path draws (2 branches
    // × depth × every crop of both student groups); the ones of the teacher's forward are filled on the
    // device
    assert_eq!(s.uploads, 1, "{s:?}");
    let floats = 2 * c.depth as u64 * (2 + L as u64) * r;
    assert_eq!(s.h2d_bytes, 4 * (scalar_words::DROP as u64 + floats));
    // From the second step on, every buffer comes from the pool of the first: zeroed by a memset only
    // where an op accumulates into it (`zeros`), not where its producer writes it whole (`uninit`).
    assert_eq!(s.allocs, 0, "{s:?}");
    assert_eq!(s.alloc_bytes, 0, "{s:?}");
    assert!(s.memsets > 0 && s.memsets < s.launches, "{s:?}");
    assert!(eng.be.is_device() && !CpuBackend::<f32>::new().is_device());
}

/// The step's temporaries live in one allocation once the first step has run: the first step allocates
/// its buffers one by one, then (`GpuBackend::settle_arena`) every block in the pool and the scratch list
/// is carved from one new allocation (counted as one, its size reported as the arena), and every later
/// step takes its buffers from that arena and allocates nothing; the pool keeps its size.
#[test]
fn after_the_first_step_the_steps_temporaries_are_carved_from_one_allocation() {
    let c = cfg();
    let st = HostState::init(&c, 42, TeacherInit::Copy);
    let mut eng = Engine::from_host(GpuBackend::new(Simt::new()), c.clone(), &st).unwrap();
    let optim = OptimConfig::default();
    let mut per = Vec::new();
    for step in 0..3u64 {
        let b = batch(&eng.be, step);
        let before = eng.be.counts().unwrap();
        eng.train_step_on_device(&b, &optim, &sched(false), 1, step, (0, 1))
            .unwrap();
        per.push((
            eng.be.counts().unwrap().since(before),
            eng.be.pooled_allocations(),
            eng.be.pooled_words(),
        ));
    }
    let (first, held_in, words) = per[0];
    assert!(first.allocs > 2, "{first:?}");
    assert_eq!(held_in, 1, "the pool's blocks lie in one allocation");
    assert!(
        first.arena_bytes >= 4 * words as u64 && words > 0,
        "{first:?}, {words} pooled words"
    );
    for &(d, held_in, w) in &per[1..] {
        assert_eq!((d.allocs, d.alloc_bytes), (0, 0), "{d:?}");
        assert_eq!((held_in, w), (1, words));
        assert_eq!(d.arena_bytes, first.arena_bytes);
    }
}

/// The profile of `bench --what kernels` (src/backend/gpu/profile.rs) against the emulator's own
/// counters: every launch that runs tensor-core instructions states model FLOPs, never more than its
/// `mma.sync` instructions do (4096 FLOPs each for m16n8k16; more where tiles are padded or attention
/// recomputes its scores), every launch states the bytes of its buffers, and the CTAs are the grid's.
#[test]
fn the_kernel_profile_states_flops_that_the_tensor_core_instructions_cover() {
    use setdino::backend::Precision;
    let cfg = ModelConfig::preset("tiny").unwrap();
    let be = GpuBackend::with_precision(Simt::recording(), Precision::Bf16);
    let (mut eng, batch) = setdino::bench::step_engine(be, &cfg, 1, 2, 2).unwrap();
    let (optim, sched) = setdino::bench::step_hyper();
    eng.train_step(&batch, &optim, &sched, 1, 0).unwrap();
    eng.be.dev.take_launches();
    eng.be.start_profile();
    eng.train_step(&batch, &optim, &sched, 1, 1).unwrap();
    let profile = eng.be.take_profile().unwrap();
    let record = eng.be.dev.take_launches();
    assert_eq!(profile.len(), record.len());
    let (mut stated, mut done) = (0.0, 0.0);
    for (p, r) in profile.iter().zip(&record) {
        let name = r.kernel.name();
        assert_eq!(p.kernel.name(), name);
        assert_eq!(
            p.ctas,
            r.grid.iter().map(|&g| u64::from(g)).product::<u64>()
        );
        assert!(p.bytes > 0, "{name} states no bytes");
        assert!(p.ms.is_none(), "the emulator has no timer");
        let mma_flop = 4096.0 * r.counters.mma as f64;
        if r.counters.mma > 0 {
            assert!(
                p.flop > 0.0 && p.flop <= mma_flop,
                "{name}: states {} FLOPs, its mma instructions do {mma_flop}",
                p.flop
            );
            stated += p.flop;
            done += mma_flop;
        } else if name.ends_with("_bf16") {
            assert_eq!(p.flop, 0.0, "{name} runs no mma but states FLOPs");
        }
    }
    assert!(stated > 0.0);
    // the tiny model at 32/16 px has 5- and 2-token images: padding to 16-row tiles is most of the work
    eprintln!("tensor-core FLOPs executed / stated: {:.2}", done / stated);
    assert!(done / stated < 8.0, "{}", done / stated);
}

/// The training loop's step (`train_step_on_device`, loss to a monitoring slot, read every few steps)
/// computes the same training as `train_step`: the same losses, read back in one go, and the same state.
fn deferred_reads_match_step_by_step<B: Backend>(make: impl Fn() -> B) {
    let c = cfg();
    let st = HostState::init(&c, 42, TeacherInit::Copy);
    let optim = OptimConfig::default();
    let mut now = Engine::from_host(make(), c.clone(), &st).unwrap();
    let mut later = Engine::from_host(make(), c.clone(), &st).unwrap();
    let mut losses = Vec::new();
    for step in 0..3u64 {
        let sched = sched(false);
        losses.push(
            now.train_step(&batch(&now.be, step), &optim, &sched, 1, step)
                .unwrap(),
        );
        let b = batch(&later.be, step);
        later
            .train_step_on_device(&b, &optim, &sched, 1, step, (step as usize, 3))
            .unwrap();
    }
    let read = later.read_monitor(3).unwrap();
    for (m, l) in read.iter().zip(&losses) {
        assert_eq!(m.loss, *l);
        assert!(m.entropy > 0.0 && m.entropy <= (c.out_dim as f64).ln() + 1e-6);
        assert!(!m.same_rows);
    }
    assert_eq!(
        now.to_host().unwrap().student,
        later.to_host().unwrap().student
    );
}

#[test]
fn the_loops_deferred_reads_give_the_step_by_step_losses() {
    deferred_reads_match_step_by_step(CpuBackend::<f32>::new);
    deferred_reads_match_step_by_step(|| GpuBackend::new(Simt::new()));
}

/// The schedule of step `t` of a short run whose every scalar changes each step (lr, weight decay,
/// momentum, teacher temperature), the last layer frozen for the first 3 steps.
fn moving_sched(t: u64) -> StepSchedule {
    let x = t as f64;
    StepSchedule {
        lr: 1e-3 * (1.0 + 0.3 * x),
        weight_decay: 0.04 + 0.01 * x,
        momentum: 0.99 - 0.002 * x,
        teacher_temp: 0.04 + 0.003 * x,
        freeze_last_layer: t < 3,
    }
}

/// What `graph_run` returns: the final state, every step's monitor values and counts, the engine.
type GraphRun = (HostState, Vec<f64>, Vec<Counts>, Engine<GpuBackend<Simt>>);

/// Steps 0..`steps` on the simt device with graphs on or off; the state and every step's monitor values.
fn graph_run(graphs: bool, steps: u64) -> GraphRun {
    graph_run_with(graphs, steps, |_, _| {})
}

/// `graph_run`, calling `after(engine, t)` after each step t.
fn graph_run_with(
    graphs: bool,
    steps: u64,
    mut after: impl FnMut(&mut Engine<GpuBackend<Simt>>, u64),
) -> GraphRun {
    let c = cfg();
    let mut st = HostState::init(&c, 42, TeacherInit::SeparateHead);
    st.center = rand_vec_f32(c.out_dim, 7, 0.1);
    let mut eng = Engine::from_host(GpuBackend::new(Simt::new()), c.clone(), &st).unwrap();
    eng.set_graphs(graphs);
    let optim = OptimConfig::default();
    let mut per = Vec::new();
    for t in 0..steps {
        let b = batch(&eng.be, t);
        let before = eng.be.counts().unwrap();
        eng.train_step_on_device(
            &b,
            &optim,
            &moving_sched(t),
            5,
            t,
            (t as usize, steps as usize),
        )
        .unwrap();
        per.push(eng.be.counts().unwrap().since(before));
        after(&mut eng, t);
    }
    assert!(eng.graph_note.is_none(), "{:?}", eng.graph_note);
    let mon = eng
        .read_monitor(steps as usize)
        .unwrap()
        .iter()
        .flat_map(|m| [m.loss, m.entropy, f64::from(u8::from(m.same_rows))])
        .collect();
    (eng.to_host().unwrap(), mon, per, eng)
}

/// A captured step replays the step exactly: 10 steps whose scalars all change every step (and the last
/// layer unfreezes at step 3, which re-captures) leave the same bits in every parameter, moment and
/// the center, and the same monitor values, as the same steps run launch by launch; the replayed steps
/// ask the host for one graph launch, the batch copies and the monitor launch, allocate nothing and
/// upload only the step's scalars.
#[test]
fn a_captured_step_replays_the_direct_step_bit_for_bit() {
    let steps = 10;
    let (direct, mon_d, per_d, _) = graph_run(false, steps);
    let (graph, mon_g, per_g, eng) = graph_run(true, steps);
    assert!(eng.graph_active());
    for (name, a, b) in [
        ("student", &direct.student, &graph.student),
        ("teacher", &direct.teacher, &graph.teacher),
        ("adam_m", &direct.adam_m, &graph.adam_m),
        ("adam_v", &direct.adam_v, &graph.adam_v),
        ("center", &direct.center, &graph.center),
    ] {
        let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "{name} differs between the direct and the replayed steps"
        );
    }
    assert_eq!(
        (direct.adam_step, direct.adam_step_last),
        (graph.adam_step, graph.adam_step_last)
    );
    assert_eq!((graph.adam_step, graph.adam_step_last), (10, 7));
    assert_eq!(mon_d, mon_g, "monitor values");
    assert!(per_d.iter().all(|d| d.graph_launches == 0));
    // A shape's steps run directly until one allocates nothing (0, 1 frozen; 3, 4 not: the new shape
    // frees the old graph's memory); the next is captured and run by one replay (2, 5); the rest replay.
    let replays: Vec<u64> = per_g.iter().map(|d| d.graph_launches).collect();
    assert_eq!(replays, vec![0, 0, 1, 0, 0, 1, 1, 1, 1, 1]);
    for t in 6..10 {
        let d = per_g[t];
        // host work of a replayed step: 2 batch copies, the graph, the monitor kernel
        assert_eq!(
            (d.launches, d.copies, d.memsets, d.allocs),
            (1, 2, 0, 0),
            "step {t}: {d:?}"
        );
        assert_eq!((d.uploads, d.host_syncs), (1, 0), "step {t}: {d:?}");
        assert_eq!(d.h2d_bytes, per_d[t].h2d_bytes, "the same scalars go up");
        assert!(
            per_d[t].launches > 50 * d.launches,
            "{:?} vs {d:?}",
            per_d[t]
        );
    }
}

/// Crops handed over raw (`StepCropsIn::Raw`, what training on a GPU backend does) are rendered
/// straight into the buffers the step reads: a replayed step copies nothing (the batch path copies its
/// two crop buffers into the graph's inputs), and the run is bit-identical to rendering each step into a
/// batch of its own and passing that.
#[test]
fn raw_crops_are_rendered_into_the_captured_inputs_without_a_copy() {
    use setdino::data::device_step::render_on;
    use setdino::engine::step::StepCropsIn;
    let run = |raw_path: bool| {
        let c = cfg();
        let st = HostState::init(&c, 42, TeacherInit::SeparateHead);
        let mut eng = Engine::from_host(GpuBackend::new(Simt::new()), c, &st).unwrap();
        eng.set_graphs(true);
        let optim = OptimConfig::default();
        let mut per = Vec::new();
        for t in 0..8u64 {
            let raw = setdino::bench::step_raw(&cfg(), S, N, L, t);
            let before = eng.be.counts().unwrap();
            if raw_path {
                let crops = StepCropsIn::Raw(&raw);
                eng.train_step_from(crops, &optim, &moving_sched(t), 5, t, (t as usize, 8))
                    .unwrap();
            } else {
                let b = render_on(&eng.be, &raw).unwrap();
                eng.train_step_on_device(&b, &optim, &moving_sched(t), 5, t, (t as usize, 8))
                    .unwrap();
            }
            per.push(eng.be.counts().unwrap().since(before));
        }
        let mon: Vec<f64> = eng
            .read_monitor(8)
            .unwrap()
            .iter()
            .flat_map(|m| [m.loss, m.entropy])
            .collect();
        (eng.to_host().unwrap(), mon, per)
    };
    let (batch, mon_b, per_b) = run(false);
    let (raw, mon_r, per_r) = run(true);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&raw.student) == bits(&batch.student), "student");
    assert!(bits(&raw.teacher) == bits(&batch.teacher), "teacher");
    assert!(bits(&raw.adam_v) == bits(&batch.adam_v), "adam_v");
    assert!(bits(&raw.center) == bits(&batch.center), "center");
    assert_eq!(mon_b, mon_r);
    // The last layer unfreezes at step 3: steps 3, 4 warm the new shape up, 5 captures it (recording
    // counts the work it records), 6 and 7 replay.
    for t in 5..8 {
        let (b, r) = (per_b[t], per_r[t]);
        assert_eq!(
            (b.graph_launches, r.graph_launches),
            (1, 1),
            "step {t} replays"
        );
        assert_eq!(b.copies, r.copies + 2, "step {t}: {b:?} vs {r:?}");
        assert_eq!((b.launches, b.uploads), (r.launches, r.uploads), "step {t}");
        assert_eq!(r.allocs, 0, "step {t}: {r:?}");
    }
    for (t, &r) in per_r.iter().enumerate().skip(6) {
        // a replay: the render (one launch per crop group), the graph, the monitor; no copy
        assert_eq!(
            (r.launches, r.copies, r.memsets),
            (2 + 1, 0, 0),
            "step {t}: {r:?}"
        );
    }
}

/// Capturing refuses work a graph cannot replay: an upload (or a download) while recording fails
/// with a message that says so, and the recording ends cleanly; recording runs nothing, the replay
/// runs it; the pooled memory the recorded work used belongs to the graph afterwards.
#[test]
fn capture_refuses_uploads_and_downloads() {
    let be = GpuBackend::new(Simt::new());
    let mut buf = be.zeros(8).unwrap();
    drop(be.zeros(16).unwrap()); // a pooled block for the recorded work to take
    assert!(be.capture_begin().unwrap());
    let up = be
        .upload(&[1.0; 8])
        .err()
        .expect("an upload while capturing fails");
    assert!(format!("{up:#}").contains("captured"), "{up:#}");
    let down = be
        .download(&buf)
        .expect_err("a download while capturing fails");
    assert!(format!("{down:#}").contains("captured"), "{down:#}");
    be.fill(&mut buf, 0, 8, 2.0).unwrap(); // recorded, not run
                                           // a temporary of the recorded work: taken from the pool (zeroed by a recorded memset), dropped
    let mut tmp = be.zeros(16).unwrap();
    be.fill(&mut tmp, 0, 16, 3.0).unwrap();
    drop(tmp);
    let g = be.capture_end().unwrap();
    // the graph owns the temporary's memory: the pool no longer offers it
    assert_eq!(g.arena_words(&be.dev), 16);
    assert_eq!(be.pooled_words(), 0);
    assert_eq!((g.recorded.launches, g.recorded.memsets), (2, 1));
    assert_eq!(
        be.download(&buf).unwrap(),
        vec![0.0; 8],
        "recording runs nothing"
    );
    be.replay(&g).unwrap();
    assert_eq!(
        be.download(&buf).unwrap(),
        vec![2.0; 8],
        "the replay runs it"
    );
    assert!(CpuBackend::<f32>::new().capture_begin().is_ok_and(|c| !c));
}

/// `setdino check`'s graph self-test: on simt the captured steps replay and end bit-identical to the
/// launch-by-launch run; the CPU reference captures nothing.
#[test]
fn the_check_commands_graph_self_test_replays_on_simt_and_skips_the_cpu() {
    let r = setdino::check::graph_self_test(GpuBackend::new(Simt::new())).unwrap();
    let (replays, diff, same) = r.expect("simt captures");
    assert!(replays >= 2, "{replays}");
    assert!(same && diff == 0.0);
    assert!(setdino::check::graph_self_test(CpuBackend::<f32>::new())
        .unwrap()
        .is_none());
}

/// The trainer frees the backend's pool after a validation pass (`release_pooled`). When that happens
/// between the step that settled a shape and the one to be captured, the recording would allocate: the
/// step then runs directly, the shape warms up again, and later steps replay; the run ends bit-identical
/// to the launch-by-launch one, with no note (graphs stay on).
#[test]
fn an_emptied_pool_before_the_capture_warms_up_again() {
    let steps = 8u64;
    let (direct, _, _, _) = graph_run(false, steps);
    let (got, _, per, _) = graph_run_with(true, steps, |eng, t| {
        if t == 4 {
            eng.be.release_pooled(); // step 4 settled the unfrozen shape; step 5 was to be captured
        }
    });
    let replays: Vec<u64> = per.iter().map(|d| d.graph_launches).collect();
    assert_eq!(
        replays,
        vec![0, 0, 1, 0, 0, 0, 0, 1],
        "re-warmed after the emptied pool"
    );
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&got.student) == bits(&direct.student));
    assert!(bits(&got.teacher) == bits(&direct.teacher));
    assert!(bits(&got.adam_v) == bits(&direct.adam_v));
    assert_eq!(got.adam_step, direct.adam_step);
}
