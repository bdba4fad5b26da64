use crate::{data, dl, parity, up, Outs};
use setdino::backend::{AdamWHyper, Backend};

fn run<B: Backend>(be: &B) -> Outs {
    let n = 1500;
    let mut p = up(be, &data(n, 110, 1.0));
    let mut m = up(be, &data(n, 111, 0.1));
    let vv: Vec<f32> = data(n, 112, 0.01).iter().map(|x| x.abs()).collect();
    let mut v = up(be, &vv);
    let g = up(be, &data(n, 113, 1.0));
    let t = 3;
    let h = AdamWHyper {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.04,
        bias_correction1: 1.0 - 0.9f64.powi(t),
        bias_correction2_sqrt: (1.0 - 0.999f64.powi(t)).sqrt(),
    };
    be.adamw_update(&mut p, &mut m, &mut v, &g, 100, 1237, h)
        .unwrap(); // a sub-range
    vec![
        ("params".into(), dl(be, &p)),
        ("m".into(), dl(be, &m)),
        ("v".into(), dl(be, &v)),
    ]
}

#[test]
fn adamw_matches_cpu() {
    parity!("adamw", run);
}
