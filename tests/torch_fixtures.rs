//! PyTorch parity (correctness ladder rung 2): the fixtures in `tests/fixtures/` were written by
//! `tests/reference/make_fixtures.py` (float64 PyTorch). One full step is replayed on the CPU backend in
//! f32 (relative error ≤ 1e-4 per tensor, max|Δ|/max|ref|) and in f64 (≤ 1e-9): loss, head outputs, every
//! gradient, then every parameter, Adam moment and the center after clipping, AdamW, EMA and centering.
use setdino::backend::cpu::CpuBackend;
use setdino::backend::Backend;
use setdino::config::OptimConfig;
use setdino::engine::schedule::StepSchedule;
use setdino::engine::{Engine, StepBatch};
use setdino::model::checkpoint::{infer_config, load_state, TensorFile};
use setdino::model::params::ParamLayout;
use setdino::model::pos::interp_matrix;
use setdino::util::check::report_line;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Fixture {
    ck: TensorFile,
    inp: TensorFile,
    exp: TensorFile,
    hyper: serde_json::Value,
}

fn open(name: &str) -> Fixture {
    let d = fixture(name);
    let hyper: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("hyper.json")).expect("hyper.json"))
            .expect("hyper json");
    Fixture {
        ck: TensorFile::open(&d.join("checkpoint.safetensors")).expect("checkpoint"),
        inp: TensorFile::open(&d.join("inputs.safetensors")).expect("inputs"),
        exp: TensorFile::open(&d.join("expected.safetensors")).expect("expected"),
        hyper,
    }
}

fn h(f: &Fixture, k: &str) -> f64 {
    f.hyper[k]
        .as_f64()
        .unwrap_or_else(|| panic!("hyper.json: {k}"))
}

/// Runs the fixture on backend `B`; `exact` uploads the f64 values of the fixture instead of f32.
fn run<B: Backend>(be: B, name: &str, tol: f64, exact: bool, upload64: impl Fn(&[f64]) -> B::Buf) {
    let f = open(name);
    let heads = f.hyper["num_heads"].as_u64().expect("num_heads") as usize;
    let n = f.hyper["set_size"].as_u64().expect("set_size") as usize;
    let mut cfg = infer_config(&f.ck, heads, Some(h(&f, "mlp_ratio"))).expect("config");
    let gs = f.inp.shape("global").expect("global").to_vec();
    cfg.global_size = gs[3];
    let local_shape = f.inp.shape("local").map(|s| s.to_vec());
    let nl = local_shape.as_ref().map_or(0, |s| s[0]);
    if let Some(ls) = &local_shape {
        cfg.local_size = ls[3];
    }
    let (state, _) = load_state(&f.ck, &cfg).expect("state");
    let layout = ParamLayout::new(&cfg);
    let mut eng = Engine::from_host(be, cfg.clone(), &state).expect("engine");
    let load = |file: &TensorFile, key: &str| file.get_f64(key).expect(key);
    if exact {
        let mut st = vec![0.0; layout.n];
        let mut te = vec![0.0; layout.n];
        for s in &layout.specs {
            st[s.off..s.off + s.len].copy_from_slice(&load(&f.ck, &format!("student.{}", s.name)));
            te[s.off..s.off + s.len].copy_from_slice(&load(&f.ck, &format!("teacher.{}", s.name)));
        }
        eng.student = upload64(&st);
        eng.teacher = upload64(&te);
        eng.center = upload64(&load(&f.ck, "dino_loss.center"));
        for side in [cfg.global_size, cfg.local_size] {
            eng.set_interp(
                side,
                upload64(&interp_matrix(cfg.pos_grid, side / cfg.patch)),
            );
        }
    }
    let up = |v: Vec<f64>| -> B::Buf {
        if exact {
            upload64(&v)
        } else {
            eng.be
                .upload(&v.iter().map(|&x| x as f32).collect::<Vec<_>>())
                .expect("upload")
        }
    };
    let batch = StepBatch {
        global: up(load(&f.inp, "global")),
        local: if nl > 0 {
            Some(up(load(&f.inp, "local")))
        } else {
            None
        },
        sets: gs[1] / n,
        set_size: n,
        n_local: nl,
    };
    let out = eng
        .forward_backward(&batch, h(&f, "student_temp"), h(&f, "teacher_temp"), None)
        .expect("forward_backward");

    let mut fails = Vec::new();
    let mut check = |label: &str, got: &[f64], want: &[f64]| {
        let (ok, line) = report_line(label, got, want, tol);
        eprintln!("{line}");
        if !ok {
            fails.push(label.to_string());
        }
    };
    check("loss", &[out.loss], &load(&f.exp, "loss"));
    let dl = |b: &B::Buf| eng.be.download_f64(b).expect("download");
    check(
        "student_out",
        &dl(&out.student_out),
        &load(&f.exp, "student_out"),
    );
    check(
        "teacher_out",
        &dl(&out.teacher_out),
        &load(&f.exp, "teacher_out"),
    );
    let grads = dl(&eng.grads);
    for s in layout.specs.iter().filter(|s| s.trainable) {
        let key = format!("grad.student.{}", s.name);
        check(&key, &grads[s.off..s.off + s.len], &load(&f.exp, &key));
    }

    let betas = f.hyper["betas"].as_array().expect("betas");
    let optim = OptimConfig {
        clip_grad: h(&f, "clip_grad"),
        beta1: betas[0].as_f64().expect("beta1"),
        beta2: betas[1].as_f64().expect("beta2"),
        eps: h(&f, "eps"),
        center_momentum: h(&f, "center_momentum"),
        ..OptimConfig::default()
    };
    let freeze = f.hyper["freeze_last_layer"].as_bool().expect("freeze");
    let sched = StepSchedule {
        lr: h(&f, "lr"),
        weight_decay: h(&f, "weight_decay"),
        momentum: h(&f, "ema_momentum"),
        teacher_temp: h(&f, "teacher_temp"),
        freeze_last_layer: freeze,
    };
    eng.update(&optim, &sched, &out.teacher_out)
        .expect("update");
    let dl = |b: &B::Buf| eng.be.download_f64(b).expect("download");
    let (st, te, m, v) = (
        dl(&eng.student),
        dl(&eng.teacher),
        dl(&eng.adam_m),
        dl(&eng.adam_v),
    );
    for s in &layout.specs {
        let r = s.off..s.off + s.len;
        let k = format!("after.student.{}", s.name);
        check(&k, &st[r.clone()], &load(&f.exp, &k));
        let k = format!("after.teacher.{}", s.name);
        check(&k, &te[r.clone()], &load(&f.exp, &k));
        let km = format!("after.optim.exp_avg.student.{}", s.name);
        if f.exp.contains(&km) {
            check(&km, &m[r.clone()], &load(&f.exp, &km));
            let kv = format!("after.optim.exp_avg_sq.student.{}", s.name);
            check(&kv, &v[r.clone()], &load(&f.exp, &kv));
        } else if s.trainable {
            // Frozen last layer: no Adam state at all.
            assert!(
                freeze && s.name == "head.last_layer.weight_v",
                "missing Adam state for {}",
                s.name
            );
            assert!(m[r.clone()].iter().chain(&v[r]).all(|&x| x == 0.0));
        }
    }
    check(
        "after.dino_loss.center",
        &dl(&eng.center),
        &load(&f.exp, "after.dino_loss.center"),
    );
    assert!(
        fails.is_empty(),
        "{name}: tensors over tolerance {tol:e}: {fails:?}"
    );
}

#[test]
fn step_tiny_f32_matches_pytorch() {
    let be = CpuBackend::<f32>::new();
    run(be, "step_tiny", 1e-4, false, |v| {
        v.iter().map(|&x| x as f32).collect()
    });
}

#[test]
fn step_tiny_f64_matches_pytorch() {
    run(CpuBackend::<f64>::new(), "step_tiny", 1e-9, true, |v| {
        v.to_vec().into()
    });
}

#[test]
fn step_n1_frozen_f32_matches_pytorch() {
    let be = CpuBackend::<f32>::new();
    run(be, "step_tiny_n1", 1e-4, false, |v| {
        v.iter().map(|&x| x as f32).collect()
    });
}

#[test]
fn step_n1_frozen_f64_matches_pytorch() {
    run(CpuBackend::<f64>::new(), "step_tiny_n1", 1e-9, true, |v| {
        v.to_vec().into()
    });
}
