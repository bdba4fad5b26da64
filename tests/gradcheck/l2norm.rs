use crate::common::{check_grad, dot, rand_vec};
use setdino::backend::cpu::l2norm::*;

#[test]
fn l2norm_backward_matches_finite_differences() {
    let (r, c) = (4, 7);
    let x = rand_vec(r * c, 71, 1.0);
    let up = rand_vec(r * c, 72, 1.0);
    let mut y = vec![0.0; r * c];
    let mut nrm = vec![0.0; r];
    l2norm_forward(&mut y, &mut nrm, &x, r, c, 1e-12);
    for row in y.chunks(c) {
        let n2: f64 = row.iter().map(|v| v * v).sum();
        assert!((n2 - 1.0).abs() < 1e-12, "rows have unit norm");
    }
    let mut dx = vec![0.0; r * c];
    l2norm_backward(&mut dx, &up, &y, &nrm, r, c, 1e-12);
    check_grad(
        "l2norm dinp",
        &x,
        &dx,
        |v| {
            let mut y = vec![0.0; r * c];
            let mut n = vec![0.0; r];
            l2norm_forward(&mut y, &mut n, v, r, c, 1e-12);
            dot(&up, &y)
        },
        100,
        crate::TOL,
    );
}
