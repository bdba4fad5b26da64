use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let (b, n, c) = (3, 10, 37);
    let m = n * c;
    let x = up(be, &data(b * m, 50, 1.0));
    let br = up(be, &data(b * m, 51, 1.0));
    let scale = up(be, &[0.0, 1.25, 1.0]);
    let mut y = be.zeros(b * m).unwrap();
    be.residual_forward(&mut y, &x, &br, &scale, b, m).unwrap();
    let mut dbr = be.zeros(b * m).unwrap();
    be.residual_backward(&mut dbr, &br, &scale, b, m).unwrap();
    let mut cls = be.zeros(b * c).unwrap();
    be.residual_cls_gather(&mut cls, &x, b, n, c).unwrap();
    let mut dx = up(be, &data(b * m, 52, 1.0));
    be.residual_cls_scatter(&mut dx, &cls, b, n, c).unwrap();
    let mut cat = up(be, &data(b * 4 * c, 53, 1.0));
    be.residual_copy_cols(&mut cat, &cls, b, c, 4 * c, 2 * c)
        .unwrap();
    vec![
        ("forward".into(), dl(be, &y)),
        ("backward".into(), dl(be, &dbr)),
        ("cls_gather".into(), dl(be, &cls)),
        ("cls_scatter".into(), dl(be, &dx)),
        ("copy_cols".into(), dl(be, &cat)),
    ]
}

#[test]
fn residual_matches_cpu() {
    parity!("residual", run);
}
