use crate::common::{check_grad, dot, rand_vec};
use setdino::backend::cpu::residual::*;

#[test]
fn residual_branch_backward_matches_finite_differences() {
    let (b, m) = (4, 6);
    let x = rand_vec(b * m, 51, 1.0);
    let br = rand_vec(b * m, 52, 1.0);
    let scale = vec![0.0, 1.25, 1.25, 1.0]; // a dropped sample, two kept ones, no drop path
    let up = rand_vec(b * m, 53, 1.0);
    let mut dbr = vec![0.0; b * m];
    residual_backward(&mut dbr, &up, &scale, b, m);
    check_grad(
        "residual dbranch",
        &br,
        &dbr,
        |v| {
            let mut out = vec![0.0; b * m];
            residual_forward(&mut out, &x, v, &scale, b, m);
            dot(&up, &out)
        },
        100,
        crate::TOL,
    );
    assert!(
        dbr[..m].iter().all(|&g| g == 0.0),
        "a dropped sample gets no gradient"
    );
}
