use crate::{data, dl, parity, up, Outs};
use setdino::backend::Backend;

fn run_shape<B: Backend>(be: &B, r: usize, i: usize, o: usize, bias: bool) -> Outs {
    // Parameters live at offsets inside a larger flat buffer, as in the engine.
    let (w_off, b_off) = (7, 7 + o * i + 3);
    let np = b_off + o + 5;
    let params = up(be, &data(np, 10 + r as u64, 0.5));
    let x = up(be, &data(r * i, 11, 1.0));
    let dy = up(be, &data(r * o, 12, 1.0));
    let mut y = be.zeros(r * o).unwrap();
    be.matmul_forward(&mut y, &x, &params, w_off, bias.then_some(b_off), r, i, o)
        .unwrap();
    let mut dx = be.zeros(r * i).unwrap();
    let mut dp = up(be, &data(np, 13, 0.1)); // nonzero: parameter grads accumulate
    be.matmul_backward(
        Some(&mut dx),
        &mut dp,
        w_off,
        bias.then_some(b_off),
        &dy,
        &x,
        &params,
        w_off,
        r,
        i,
        o,
    )
    .unwrap();
    vec![
        ("out".into(), dl(be, &y)),
        ("dinp".into(), dl(be, &dx)),
        ("dparams".into(), dl(be, &dp)),
    ]
}

fn run<B: Backend>(be: &B) -> Outs {
    let mut outs = Vec::new();
    for &(r, i, o, bias) in &[
        (185, 20, 36, true),
        (37, 64, 17, true),
        (10, 1, 3, false),
        (74, 33, 96, true),
        (33, 17, 16, true), // R = 2·16 + 1: a last tile of one row
    ] {
        for (n, v) in run_shape(be, r, i, o, bias) {
            outs.push((format!("{n}[{r}x{i}x{o}]"), v));
        }
    }
    outs
}

pub fn run_all() {
    parity!("matmul", run);
}

#[test]
fn matmul_matches_cpu() {
    run_all();
}
