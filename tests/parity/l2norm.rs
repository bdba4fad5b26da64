use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let (r, c) = (7, 37);
    let mut xv = data(r * c, 70, 1.0);
    for v in xv[3 * c..4 * c].iter_mut() {
        *v = 0.0; // a row below eps: the clamped branch
    }
    let x = up(be, &xv);
    let dy = up(be, &data(r * c, 71, 1.0));
    let mut y = be.zeros(r * c).unwrap();
    let mut nrm = be.zeros(r).unwrap();
    be.l2norm_forward(&mut y, &mut nrm, &x, r, c, 1e-12)
        .unwrap();
    let mut dx = be.zeros(r * c).unwrap();
    be.l2norm_backward(&mut dx, &dy, &y, &nrm, r, c, 1e-12)
        .unwrap();
    // The clamped row's gradient is dy/eps (~1e12): compare it scaled.
    let mut dxs = dl(be, &dx);
    for v in dxs[3 * c..4 * c].iter_mut() {
        *v *= 1e-12;
    }
    vec![
        ("out".into(), dl(be, &y)),
        ("norm".into(), dl(be, &nrm)),
        ("dinp".into(), dxs),
    ]
}

#[test]
fn l2norm_matches_cpu() {
    parity!("l2norm", run);
}
