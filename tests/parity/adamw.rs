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
    // the record at an odd offset of a scalar buffer, as the step keeps three
    let mut hb = be.zeros(20).unwrap();
    be.upload_scalars(&mut hb, 5, &h.words()).unwrap();
    be.adamw_update(&mut p, &mut m, &mut v, &g, 100, 1237, (&hb, 5))
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

/// With a kept bf16 copy (`keep_bf16_copy`), AdamW runs `adamw_update_bf16`: the f32 master equals the
/// plain update, and the copy equals round_bf16 of the master everywhere, inside the updated range
/// (odd bounds) and outside it (rounded when the copy was made).
#[test]
fn adamw_bf16_writes_the_weight_copy_in_the_same_pass() {
    use setdino::backend::cpu::optim;
    use setdino::backend::gpu::{simt::Simt, GpuBackend};
    use setdino::backend::Precision;
    let g = GpuBackend::with_precision(Simt::recording(), Precision::Bf16);
    let n = 1500;
    let (lo, hi) = (101, 1237);
    let h = AdamWHyper {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.04,
        bias_correction1: 0.1,
        bias_correction2_sqrt: 0.001f64.sqrt(),
    };
    let (p0, m0, g0) = (data(n, 110, 1.0), data(n, 111, 0.1), data(n, 113, 1.0));
    let v0: Vec<f32> = data(n, 112, 0.01).iter().map(|x| x.abs()).collect();
    let mut p = up(&g, &p0);
    g.keep_bf16_copy(&mut p).unwrap();
    let (mut m, mut v, gr) = (up(&g, &m0), up(&g, &v0), up(&g, &g0));
    let mut hb = g.zeros(8).unwrap();
    g.upload_scalars(&mut hb, 0, &h.words()).unwrap();
    g.adamw_update(&mut p, &mut m, &mut v, &gr, lo, hi, (&hb, 0))
        .unwrap();
    assert!(g
        .dev
        .take_launches()
        .iter()
        .any(|l| l.kernel == setdino::backend::gpu::Kernel::adamw_update_bf16));
    let (mut tp, mut t16, mut tm, mut tv) = (p0.clone(), vec![0f32; n], m0.clone(), v0.clone());
    for (k, x) in t16.iter_mut().enumerate() {
        *x = optim_round(p0[k]);
    }
    optim::adamw_update_bf16(
        &mut tp[lo..hi],
        &mut t16[lo..hi],
        &mut tm[lo..hi],
        &mut tv[lo..hi],
        &g0[lo..hi],
        &h.words().map(|x| x as f32),
    );
    let master = dl(&g, &p);
    crate::compare(
        "adamw bf16",
        &vec![("params".into(), master.clone())],
        &vec![("params".into(), tp)],
    );
    let copy = g.download_bf16_copy(&p).unwrap().expect("a kept copy");
    let rounded: Vec<f32> = master.iter().map(|&x| optim_round(x)).collect();
    assert_eq!(
        copy, rounded,
        "the copy is round_bf16 of the device's own master"
    );
    crate::compare_rounded("adamw bf16 copy", &copy, &t16);
}

fn optim_round(x: f32) -> f32 {
    setdino::backend::cpu::matmul::round_bf16(x)
}
