//! The whole Set-DINO loss (teacher and student ViTs, set mean, head, DINO loss with center) against
//! finite differences in f64, tensor by tensor, with stochastic depth on (fixed masks) and local crops.
use crate::common::{check_grad, rand_vec};
use setdino::backend::cpu::CpuBackend;
use setdino::config::{ModelConfig, TeacherInit};
use setdino::engine::step::HostState;
use setdino::engine::{Engine, StepBatch};

pub fn tiny_cfg() -> ModelConfig {
    ModelConfig {
        in_chans: 2,
        patch: 4,
        dim: 8,
        depth: 3,
        heads: 2,
        mlp_hidden: 12,
        ln_eps: 1e-6,
        drop_path: 0.5,
        pos_grid: 3,
        head_hidden: 10,
        head_bottleneck: 6,
        head_layers: 3,
        out_dim: 7,
        global_size: 8,
        local_size: 4,
    }
}

#[test]
fn whole_step_gradient_matches_finite_differences() {
    whole_step(0.0);
}

/// With the KoLeo term on the student's global CLS tokens: the objective is loss + koleo.
#[test]
fn whole_step_with_koleo_matches_finite_differences() {
    whole_step(0.5);
}

fn whole_step(koleo_weight: f64) {
    let cfg = tiny_cfg();
    let mut st = HostState::init(&cfg, 7, TeacherInit::SeparateHead);
    // Move every parameter away from its init (LN weights 1, biases 0) so every path is exercised.
    for (i, x) in st.student.iter_mut().enumerate() {
        *x += 0.3 * (((i * 7919) % 1000) as f32 / 1000.0 - 0.5);
    }
    for (i, x) in st.teacher.iter_mut().enumerate() {
        *x += 0.3 * (((i * 104_729) % 1000) as f32 / 1000.0 - 0.5);
    }
    st.center = rand_vec(cfg.out_dim, 3, 0.3)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let be = CpuBackend::<f64>::new();
    let mut eng = Engine::from_host(be, cfg.clone(), &st).expect("engine");
    eng.koleo_weight = koleo_weight;
    let (s, n, nl) = (2, 2, 2);
    let r = s * n;
    let batch = StepBatch::<CpuBackend<f64>> {
        global: rand_vec(2 * r * 2 * 8 * 8, 4, 1.0).into(),
        local: Some(rand_vec(nl * r * 2 * 4 * 4, 5, 1.0).into()),
        sets: s,
        set_size: n,
        n_local: nl,
    };
    let drop = Some((11u64, 3u64));
    let out = eng.forward_backward(&batch, 0.1, 0.04, drop).expect("fb");
    assert_eq!(out.koleo != 0.0, koleo_weight > 0.0, "koleo {}", out.koleo);
    let grads = eng.grads.clone();
    let x0 = eng.student.clone();
    let layout = eng.layout.clone();
    for spec in layout.specs.iter().filter(|s| s.trainable) {
        let range = spec.off..spec.off + spec.len;
        let sub = x0[range.clone()].to_vec();
        check_grad(
            &format!("step d{}", spec.name),
            &sub,
            &grads[range.clone()],
            |v| {
                eng.student[range.clone()].copy_from_slice(v);
                let out = eng.forward_backward(&batch, 0.1, 0.04, drop).expect("fb");
                out.loss + out.koleo
            },
            24,
            crate::TOL,
        );
        eng.student[range].copy_from_slice(&sub);
    }
    // weight_g is frozen: no gradient reaches the buffer.
    let g = layout.get("head.last_layer.weight_g").expect("weight_g");
    assert!(grads[g.off..g.off + g.len].iter().all(|&v| v == 0.0));
}
