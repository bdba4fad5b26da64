use crate::common::{check_grad, dot, rand_vec};
use setdino::backend::cpu::gelu::*;

#[test]
fn gelu_backward_matches_finite_differences() {
    let x = rand_vec(50, 31, 4.0);
    let up = rand_vec(50, 32, 1.0);
    let mut dx = vec![0.0; 50];
    gelu_backward(&mut dx, &up, &x);
    check_grad(
        "gelu dinp",
        &x,
        &dx,
        |v| {
            let mut out = vec![0.0; 50];
            gelu_forward(&mut out, v);
            dot(&up, &out)
        },
        50,
        crate::TOL,
    );
}

#[test]
fn gelu_is_exact_erf_form() {
    // GELU(1) = 0.5·(1 + erf(1/√2)) = 0.841344746068543 (not the tanh approximation 0.841191990607...).
    let mut out = [0.0f64];
    gelu_forward(&mut out, &[1.0]);
    assert!((out[0] - 0.841_344_746_068_543).abs() < 1e-14);
}
