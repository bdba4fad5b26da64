use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let n = 1000; // not a multiple of the block size
    let x = up(be, &data(n, 1, 4.0));
    let dy = up(be, &data(n, 2, 1.0));
    let mut y = be.zeros(n).unwrap();
    let mut dx = be.zeros(n).unwrap();
    be.gelu_forward(&mut y, &x, n).unwrap();
    be.gelu_backward(&mut dx, &dy, &x, n).unwrap();
    vec![("out".into(), dl(be, &y)), ("dinp".into(), dl(be, &dx))]
}

#[test]
fn gelu_matches_cpu() {
    parity!("gelu", run);
}
