use crate::common::{check_grad, dot, rand_vec};
use setdino::backend::cpu::weightnorm::*;

#[test]
fn weightnorm_backward_matches_finite_differences() {
    let (k, c) = (5, 6);
    let v = rand_vec(k * c, 81, 1.0);
    let g: Vec<f64> = rand_vec(k, 82, 0.5).iter().map(|x| x + 1.0).collect();
    let up = rand_vec(k * c, 83, 1.0);
    let mut w = vec![0.0; k * c];
    let mut nrm = vec![0.0; k];
    weightnorm_forward(&mut w, &mut nrm, &v, &g, k, c);
    let mut dv = vec![0.0; k * c];
    weightnorm_backward(&mut dv, &up, &v, &g, &nrm, k, c);
    check_grad(
        "weightnorm dv",
        &v,
        &dv,
        |vv| {
            let mut w = vec![0.0; k * c];
            let mut n = vec![0.0; k];
            weightnorm_forward(&mut w, &mut n, vv, &g, k, c);
            dot(&up, &w)
        },
        100,
        crate::TOL,
    );
}
