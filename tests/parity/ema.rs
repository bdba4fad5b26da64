use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let n = 777;
    let mut t = up(be, &data(n, 120, 1.0));
    let s = up(be, &data(n, 121, 1.0));
    let mut mb = be.zeros(3).unwrap();
    be.upload_scalars(&mut mb, 1, &[0.996, 1.0 - 0.996])
        .unwrap();
    be.ema_update(&mut t, &s, 700, (&mb, 1)).unwrap();
    vec![("teacher".into(), dl(be, &t))]
}

#[test]
fn ema_matches_cpu() {
    parity!("ema", run);
}

/// With a kept bf16 copy, the EMA runs `ema_update_bf16`: the copy is round_bf16 of the new teacher, and
/// the master equals the plain update.
#[test]
fn ema_bf16_writes_the_weight_copy_in_the_same_pass() {
    use setdino::backend::cpu::{matmul::round_bf16, optim};
    use setdino::backend::gpu::{simt::Simt, GpuBackend};
    use setdino::backend::Precision;
    let g = GpuBackend::with_precision(Simt::new(), Precision::Bf16);
    let n = 999;
    let (t0, s0) = (crate::data(n, 120, 1.0), crate::data(n, 121, 1.0));
    let mut t = crate::up(&g, &t0);
    g.keep_bf16_copy(&mut t).unwrap();
    let s = crate::up(&g, &s0);
    let mut mb = g.zeros(2).unwrap();
    g.upload_scalars(&mut mb, 0, &[0.996, 1.0 - 0.996]).unwrap();
    g.ema_update(&mut t, &s, n, (&mb, 0)).unwrap();
    let (mut tt, mut t16) = (t0.clone(), vec![0f32; n]);
    optim::ema_update_bf16(&mut tt, &mut t16, &s0, &[0.996, (1.0 - 0.996f64) as f32]);
    let master = crate::dl(&g, &t);
    crate::compare(
        "ema bf16",
        &vec![("teacher".into(), master.clone())],
        &vec![("teacher".into(), tt)],
    );
    let copy = g.download_bf16_copy(&t).unwrap().expect("a kept copy");
    assert_eq!(
        copy,
        master.iter().map(|&x| round_bf16(x)).collect::<Vec<_>>()
    );
    crate::compare_rounded("ema bf16 copy", &copy, &t16);
}
