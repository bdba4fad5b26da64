use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let (s, n, c) = (3, 5, 37);
    let x = up(be, &data(s * n * c, 60, 1.0));
    let dy = up(be, &data(s * c, 61, 1.0));
    let mut y = be.zeros(s * c).unwrap();
    be.set_mean_forward(&mut y, &x, s, n, c).unwrap();
    let mut dx = be.zeros(s * n * c).unwrap();
    be.set_mean_backward(&mut dx, &dy, s, n, c).unwrap();
    vec![
        ("forward".into(), dl(be, &y)),
        ("backward".into(), dl(be, &dx)),
    ]
}

#[test]
fn set_mean_matches_cpu() {
    parity!("set_mean", run);
}
