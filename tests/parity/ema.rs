use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run<B: Backend>(be: &B) -> Outs {
    let n = 777;
    let mut t = up(be, &data(n, 120, 1.0));
    let s = up(be, &data(n, 121, 1.0));
    be.ema_update(&mut t, &s, 700, 0.996).unwrap();
    vec![("teacher".into(), dl(be, &t))]
}

#[test]
fn ema_matches_cpu() {
    parity!("ema", run);
}
