//! Training-run properties on the CPU backend: bit-identical reruns (20 steps), independence of the
//! thread count, checkpoint round trip and bit-exact resume, the last-layer freeze, shape errors.
#[path = "common/mod.rs"]
mod common;

use setdino::backend::cpu::CpuBackend;
use setdino::backend::Backend;
use setdino::config::{ModelConfig, OptimConfig, StepConfig, TeacherInit};
use setdino::engine::schedule;
use setdino::engine::step::HostState;
use setdino::engine::{Engine, StepBatch};
use setdino::model::checkpoint::{load_state, save_checkpoint, TensorFile, TrainMeta};

fn cfg() -> ModelConfig {
    ModelConfig {
        depth: 2,
        ..ModelConfig::tiny()
    }
}

fn steps() -> StepConfig {
    StepConfig {
        sets_per_step: 2,
        set_size: 2,
        n_local: 2,
        epochs: 4,
        steps_per_epoch: 5,
        seed: 99,
    }
}

fn optim() -> OptimConfig {
    OptimConfig {
        lr: 0.05, // large, so that 20 steps move the weights visibly
        warmup_epochs: 1,
        freeze_last_layer: 1,
        ..OptimConfig::default()
    }
}

fn batch(c: &ModelConfig, sc: &StepConfig, step: u64) -> StepBatch<CpuBackend<f32>> {
    let r = sc.sets_per_step * sc.set_size;
    let (g, l, ch) = (c.global_size, c.local_size, c.in_chans);
    StepBatch {
        global: common::rand_vec_f32(2 * r * ch * g * g, 1000 + step, 1.0).into(),
        local: Some(common::rand_vec_f32(sc.n_local * r * ch * l * l, 2000 + step, 1.0).into()),
        sets: sc.sets_per_step,
        set_size: sc.set_size,
        n_local: sc.n_local,
    }
}

/// Runs steps [from, to) and returns the losses.
fn run(eng: &mut Engine<CpuBackend<f32>>, from: u64, to: u64) -> Vec<f64> {
    let (c, sc, o) = (cfg(), steps(), optim());
    (from..to)
        .map(|it| {
            let sched = schedule::at(&o, &sc, it as usize);
            eng.train_step(&batch(&c, &sc, it), &o, &sched, sc.seed, it)
                .expect("step")
        })
        .collect()
}

fn fresh() -> Engine<CpuBackend<f32>> {
    let st = HostState::init(&cfg(), steps().seed, TeacherInit::Copy);
    Engine::from_host(CpuBackend::new(), cfg(), &st).expect("engine")
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn twenty_steps_are_bit_identical_across_runs_and_thread_counts() {
    let mut a = fresh();
    let la = run(&mut a, 0, 20);
    let mut b = fresh();
    let lb = run(&mut b, 0, 20);
    assert_eq!(bits(&la), bits(&lb), "losses differ between identical runs");
    assert_eq!(
        a.to_host().expect("a").student,
        b.to_host().expect("b").student
    );
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let lc = one.install(|| {
        let mut c = fresh();
        run(&mut c, 0, 20)
    });
    assert_eq!(bits(&la), bits(&lc), "losses depend on the thread count");
    assert!(la.iter().all(|l| l.is_finite()));
    assert_ne!(la[0], la[19], "training changes the loss");
}

#[test]
fn checkpoint_resume_is_bit_exact() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ck.safetensors");
    let mut straight = fresh();
    let full = run(&mut straight, 0, 8);

    let mut first = fresh();
    let head = run(&mut first, 0, 5);
    let meta = TrainMeta {
        step: 5,
        epoch: 1,
        seed: steps().seed,
        extra: serde_json::Value::Null,
    };
    save_checkpoint(&path, &cfg(), &first.to_host().expect("host"), &meta).expect("save");
    let file = TensorFile::open(&path).expect("open");
    let (st, m2) = load_state(&file, &cfg()).expect("load");
    assert_eq!(m2, meta);
    let orig = first.to_host().expect("host");
    assert_eq!(st.student, orig.student);
    assert_eq!(st.teacher, orig.teacher);
    assert_eq!(st.adam_m, orig.adam_m);
    assert_eq!(st.adam_v, orig.adam_v);
    assert_eq!(st.center, orig.center);
    assert_eq!(
        (st.adam_step, st.adam_step_last),
        (orig.adam_step, orig.adam_step_last)
    );
    let mut resumed = Engine::from_host(CpuBackend::new(), cfg(), &st).expect("engine");
    let tail = run(&mut resumed, 5, 8);
    let joined: Vec<f64> = head.into_iter().chain(tail).collect();
    assert_eq!(
        bits(&full),
        bits(&joined),
        "resumed losses differ from the uninterrupted run"
    );
}

#[test]
fn last_layer_is_frozen_during_the_first_epoch() {
    let mut e = fresh();
    let layout = e.layout.clone();
    let v = layout.get("head.last_layer.weight_v").expect("v").clone();
    let q = layout
        .get("backbone.blocks.0.attn.qkv.weight")
        .expect("qkv")
        .clone();
    let before = e.to_host().expect("host");
    run(&mut e, 0, 5); // epoch 0 (5 steps per epoch)
    let mid = e.to_host().expect("host");
    assert_eq!(mid.adam_step, 5);
    assert_eq!(mid.adam_step_last, 0, "no Adam step while frozen");
    assert_eq!(
        before.student[v.off..v.off + v.len],
        mid.student[v.off..v.off + v.len],
        "weight_v must not move (no update, no decay) in epoch 0"
    );
    assert_ne!(
        before.student[q.off..q.off + q.len],
        mid.student[q.off..q.off + q.len]
    );
    // The teacher's last layer still follows the EMA (of an unchanged student layer: stays equal).
    run(&mut e, 5, 6);
    let after = e.to_host().expect("host");
    assert_eq!(after.adam_step_last, 1);
    assert_ne!(
        mid.student[v.off..v.off + v.len],
        after.student[v.off..v.off + v.len]
    );
}

#[test]
fn loading_a_checkpoint_with_wrong_shapes_names_the_tensor_and_both_shapes() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ck.safetensors");
    let e = fresh();
    save_checkpoint(
        &path,
        &cfg(),
        &e.to_host().expect("host"),
        &TrainMeta::default(),
    )
    .expect("save");
    let other = ModelConfig {
        dim: 48,
        heads: 3,
        ..cfg()
    };
    let file = TensorFile::open(&path).expect("open");
    let err = load_state(&file, &other)
        .expect_err("must fail")
        .to_string();
    assert!(
        err.contains("student.backbone.patch_embed.proj.weight"),
        "{err}"
    );
    assert!(
        err.contains("[96, 4, 8, 8]") && err.contains("[48, 4, 8, 8]"),
        "{err}"
    );
}

#[test]
fn teacher_starts_as_copy_or_with_its_own_head() {
    let c = cfg();
    let copy = HostState::init(&c, 5, TeacherInit::Copy);
    assert_eq!(copy.student, copy.teacher);
    let sep = HostState::init(&c, 5, TeacherInit::SeparateHead);
    let layout = setdino::model::ParamLayout::new(&c);
    for s in &layout.specs {
        let (a, b) = (
            &sep.student[s.off..s.off + s.len],
            &sep.teacher[s.off..s.off + s.len],
        );
        let same = a == b;
        let random_head = s.name.starts_with("head.")
            && !matches!(
                s.init,
                setdino::model::Init::Zeros | setdino::model::Init::Ones
            );
        assert_eq!(same, !random_head, "{}", s.name);
    }
    let be = CpuBackend::<f32>::new();
    assert_eq!(
        be.download(&be.upload(&copy.center).expect("up"))
            .expect("down"),
        copy.center
    );
}

/// Every output the step takes with `uninit` (written whole by its op, handed out from the pool as the
/// last user left it) is written before it is read: with those buffers NaN-filled instead, 7 steps
/// (KoLeo on, the last layer unfrozen at step 5) and an embedding give the same bits as with zeroed ones,
/// and the pool is reused from step to step.
#[test]
fn poisoned_uninit_buffers_change_no_bit_of_training_or_embedding() {
    let state = HostState::init(&cfg(), steps().seed, TeacherInit::Copy);
    let run_on = |be: CpuBackend<f32>| {
        let mut eng = Engine::from_host(be, cfg(), &state).expect("engine");
        eng.koleo_weight = 0.1;
        let losses = run(&mut eng, 0, 7);
        let c = cfg();
        let imgs = eng
            .be
            .upload(&common::rand_vec_f32(
                3 * c.in_chans * c.global_size * c.global_size,
                7,
                1.0,
            ))
            .expect("imgs");
        let emb = eng.embed(&imgs, 3, c.global_size, true).expect("embed").0;
        (losses, emb, eng.to_host().expect("host"))
    };
    let (la, ea, ha) = run_on(CpuBackend::new());
    let poisoned = CpuBackend::new().poison_uninit();
    let (lb, eb, hb) = run_on(poisoned.clone());
    assert!(la.iter().all(|l| l.is_finite()), "{la:?}");
    assert_eq!(bits(&la), bits(&lb), "losses");
    assert_eq!(ea, eb, "embeddings");
    assert_eq!(ha.student, hb.student);
    assert_eq!(ha.teacher, hb.teacher);
    assert_eq!(ha.center, hb.center);
    assert_eq!((ha.adam_m, ha.adam_v), (hb.adam_m, hb.adam_v));
    assert!(
        poisoned.pooled_elements() > 0,
        "the engine's dropped buffers went back to the pool"
    );
}

/// The CPU side of the step's fixed arena (`Backend::counts` of the CPU backend): after the first step,
/// every step does the same host work, allocates nothing (every buffer comes from the pool the first step
/// filled, which stays the same size), clears only its accumulators (fewer memsets than the first step's
/// allocations: outputs written whole are not cleared), uploads only its scalars, and launches and waits
/// for nothing.
#[test]
fn after_the_first_step_the_cpu_step_allocates_nothing_and_clears_only_accumulators() {
    let mut eng = fresh();
    let (mut per, mut pooled) = (Vec::new(), Vec::new());
    let (c, sc, o) = (cfg(), steps(), optim());
    for it in 0..5u64 {
        let sched = schedule::at(&o, &sc, it as usize);
        let before = eng.be.counts().expect("the CPU backend counts");
        // the step the training loop runs (one upload of its scalars)
        eng.train_step_on_device(&batch(&c, &sc, it), &o, &sched, sc.seed, it, (0, 1))
            .expect("step");
        per.push(eng.be.counts().expect("counts").since(before));
        pooled.push(eng.be.pooled_elements());
    }
    assert!(per[1..].iter().all(|d| *d == per[1]), "{per:?}");
    assert!(pooled[1..].iter().all(|&p| p == pooled[1]), "{pooled:?}");
    let (first, s) = (per[0], per[1]);
    assert!(first.allocs > 0 && first.alloc_bytes > 0, "{first:?}");
    assert_eq!((s.allocs, s.alloc_bytes), (0, 0), "{s:?}");
    assert!(
        s.memsets > 0 && s.memsets < first.allocs,
        "{s:?} vs {first:?}"
    );
    assert_eq!((s.launches, s.host_syncs, s.graph_launches), (0, 0, 0));
    assert_eq!(s.uploads, 1, "the step's scalars: {s:?}");
    assert!(!eng.be.is_device());
}

/// `data.augment_gamma` / `data.augment_offset` reach every crop's draw: the `tiny` preset's ranges make
/// each drawn photometric transform the identity, a range set with `--set` bounds the draws (and they
/// vary), `vits16` keeps the reference's ranges, and an inverted or non-positive gamma range is refused
/// with the key named.
#[test]
fn photometric_ranges_come_from_the_config() {
    use rand::SeedableRng;
    use setdino::data::augment::CropParams;
    use setdino::train::TrainConfig;
    let draws = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let cfg = TrainConfig::load(None, &sets).unwrap();
        let aug = cfg.data.augment(32, &cfg.model, 1).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (mut g, mut o) = (Vec::new(), Vec::new());
        for _ in 0..40 {
            for p in [
                CropParams::draw_global(&mut rng, &aug, 32, 4),
                CropParams::draw_local(&mut rng, &aug, 32, 4),
            ] {
                g.extend(p.gamma);
                o.extend(p.offset);
            }
        }
        (g, o)
    };
    let (g, o) = draws(&[]);
    assert!(g.iter().all(|&x| x == 1.0) && o.iter().all(|&x| x == 0.0));
    let (g, o) = draws(&[
        "data.augment_gamma=[0.8, 1.25]",
        "data.augment_offset=[-0.1, 0.1]",
    ]);
    assert!(g.iter().all(|&x| (0.8..=1.25).contains(&x)));
    assert!(o.iter().all(|&x| (-0.1..=0.1).contains(&x)));
    assert!(g.iter().any(|&x| x < 0.95) && g.iter().any(|&x| x > 1.1));
    assert!(o.iter().any(|&x| x < -0.05) && o.iter().any(|&x| x > 0.05));
    let vits16 = TrainConfig::preset("vits16").unwrap();
    let reference = vits16.data.augment(96, &vits16.model, 1).unwrap();
    assert_eq!(
        (reference.gamma, reference.offset),
        ((0.5, 1.5), (-0.3, 0.3))
    );
    for bad in [
        "data.augment_gamma=[1.5, 0.5]",
        "data.augment_gamma=[0.0, 1.0]",
        "data.augment_offset=[0.2, -0.2]",
    ] {
        let e = TrainConfig::load(None, &[bad.to_string()]).unwrap_err();
        let key = bad.split('=').next().unwrap();
        assert!(format!("{e:#}").contains(key), "{bad}: {e:#}");
    }
}
