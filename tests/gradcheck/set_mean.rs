use crate::common::{check_grad, dot, rand_vec};
use setdino::backend::cpu::set_mean::*;

#[test]
fn set_mean_backward_matches_finite_differences() {
    let (s, n, c) = (3, 4, 5);
    let x = rand_vec(s * n * c, 61, 1.0);
    let up = rand_vec(s * c, 62, 1.0);
    let mut dx = vec![0.0; s * n * c];
    set_mean_backward(&mut dx, &up, s, n, c);
    check_grad(
        "set_mean dinp",
        &x,
        &dx,
        |v| {
            let mut out = vec![0.0; s * c];
            set_mean_forward(&mut out, v, s, n, c);
            dot(&up, &out)
        },
        100,
        crate::TOL,
    );
    // The mean is over consecutive rows: set 1 is rows 4..8.
    let mut out = vec![0.0; s * c];
    set_mean_forward(&mut out, &x, s, n, c);
    let want: f64 = (4..8).map(|row| x[row * c + 2]).sum::<f64>() / 4.0;
    assert!((out[c + 2] - want).abs() < 1e-14);
}
