use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let (k, c) = (37, 20);
    let (v_off, g_off) = (4, 4 + k * c + 1);
    let np = g_off + k;
    let mut pv = data(np, 80, 1.0);
    for g in pv[g_off..].iter_mut() {
        *g = 1.0 + *g * 0.5;
    }
    let params = up(be, &pv);
    let dw = up(be, &data(k * c, 81, 1.0));
    let mut w = be.zeros(k * c).unwrap();
    let mut nrm = be.zeros(k).unwrap();
    be.weightnorm_forward(&mut w, &mut nrm, &params, v_off, g_off, k, c)
        .unwrap();
    let mut dp = up(be, &data(np, 82, 0.1));
    be.weightnorm_backward(&mut dp, v_off, &dw, &params, g_off, &nrm, k, c)
        .unwrap();
    vec![
        ("w".into(), dl(be, &w)),
        ("norm".into(), dl(be, &nrm)),
        ("dparams".into(), dl(be, &dp)),
    ]
}

#[test]
fn weightnorm_matches_cpu() {
    parity!("weightnorm", run);
}
