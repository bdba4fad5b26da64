use crate::common::{check_grad, dot, rand_vec};
use setdino::backend::cpu::matmul::*;

#[test]
fn matmul_backward_matches_finite_differences() {
    let (r, i, o) = (5, 7, 3);
    let x = rand_vec(r * i, 1, 1.0);
    let w = rand_vec(o * i, 2, 1.0);
    let b = rand_vec(o, 3, 1.0);
    let up = rand_vec(r * o, 4, 1.0);
    let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut out = vec![0.0; r * o];
        matmul_forward(&mut out, x, w, Some(b), r, i, o);
        dot(&up, &out)
    };
    let mut dx = vec![0.0; r * i];
    let mut dw = vec![0.0; o * i];
    let mut db = vec![0.0; o];
    matmul_backward_input(&mut dx, &up, &w, r, i, o);
    matmul_backward_weight(&mut dw, &up, &x, r, i, o);
    matmul_backward_bias(&mut db, &up, r, o);
    check_grad("matmul dinp", &x, &dx, |v| fwd(v, &w, &b), 1000, crate::TOL);
    check_grad(
        "matmul dweight",
        &w,
        &dw,
        |v| fwd(&x, v, &b),
        1000,
        crate::TOL,
    );
    check_grad(
        "matmul dbias",
        &b,
        &db,
        |v| fwd(&x, &w, v),
        1000,
        crate::TOL,
    );
}

#[test]
fn matmul_forward_equals_naive_and_weight_grad_accumulates() {
    let (r, i, o) = (67, 33, 17);
    let x = rand_vec(r * i, 5, 1.0);
    let w = rand_vec(o * i, 6, 1.0);
    let mut out = vec![0.0; r * o];
    matmul_forward(&mut out, &x, &w, None, r, i, o);
    for a in 0..r {
        for c in 0..o {
            let want: f64 = (0..i).map(|k| x[a * i + k] * w[c * i + k]).sum();
            assert!((out[a * o + c] - want).abs() < 1e-12);
        }
    }
    // Parameter grads are +=: two calls give twice one call.
    let up = rand_vec(r * o, 7, 1.0);
    let mut once = vec![0.0; o * i];
    matmul_backward_weight(&mut once, &up, &x, r, i, o);
    let mut twice = vec![0.0; o * i];
    matmul_backward_weight(&mut twice, &up, &x, r, i, o);
    matmul_backward_weight(&mut twice, &up, &x, r, i, o);
    for (a, b) in once.iter().zip(&twice) {
        assert!((2.0 * a - b).abs() < 1e-12);
    }
}
