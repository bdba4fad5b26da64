use crate::common::{check_grad, dot, rand_vec};
use setdino::backend::cpu::layernorm::*;

#[test]
fn layernorm_backward_matches_finite_differences() {
    let (r, c) = (70, 6); // more rows than one reduction chunk
    let x: Vec<f64> = rand_vec(r * c, 11, 2.0).iter().map(|v| v + 0.5).collect();
    let w: Vec<f64> = rand_vec(c, 12, 0.5).iter().map(|v| v + 1.0).collect();
    let b = rand_vec(c, 13, 0.5);
    let up = rand_vec(r * c, 14, 1.0);
    let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut out = vec![0.0; r * c];
        let (mut m, mut s) = (vec![0.0; r], vec![0.0; r]);
        layernorm_forward(&mut out, &mut m, &mut s, x, w, b, r, c, 1e-6);
        dot(&up, &out)
    };
    let mut out = vec![0.0; r * c];
    let (mut m, mut s) = (vec![0.0; r], vec![0.0; r]);
    layernorm_forward(&mut out, &mut m, &mut s, &x, &w, &b, r, c, 1e-6);
    let mut dx = vec![0.0; r * c];
    let mut dw = vec![0.0; c];
    let mut db = vec![0.0; c];
    layernorm_backward(&mut dx, &mut dw, &mut db, &up, &x, &w, &m, &s, r, c);
    check_grad(
        "layernorm dinp",
        &x,
        &dx,
        |v| fwd(v, &w, &b),
        200,
        crate::TOL,
    );
    check_grad(
        "layernorm dweight",
        &w,
        &dw,
        |v| fwd(&x, v, &b),
        100,
        crate::TOL,
    );
    check_grad(
        "layernorm dbias",
        &b,
        &db,
        |v| fwd(&x, &w, v),
        100,
        crate::TOL,
    );
}
