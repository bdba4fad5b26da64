use crate::common::{check_grad, rand_vec};
use setdino::backend::cpu::koleo::*;
use setdino::backend::cpu::l2norm::l2norm_forward;

/// The KoLeo loss of x (G·R, C) through the L2 normalisation, with the neighbours fixed by x itself.
fn loss_of(x: &[f64], g: usize, r: usize, c: usize, w: f64, eps: f64) -> (f64, Vec<f64>, Vec<f64>) {
    let n = g * r;
    let (mut y, mut nrm) = (vec![0.0; n * c], vec![0.0; n]);
    l2norm_forward(&mut y, &mut nrm, x, n, c, eps);
    let (mut nn, mut dist) = (vec![0.0; n], vec![0.0; n]);
    koleo_forward(&mut nn, &mut dist, &y, g, r, c);
    let mut loss = [0.0];
    let mut dx = vec![0.0; n * c];
    koleo_backward(&mut dx, &mut loss, &nn, &dist, &y, &nrm, g, r, c, w, eps);
    (loss[0], dx, nn)
}

#[test]
fn koleo_backward_matches_finite_differences() {
    let (g, r, c, w, eps) = (2, 5, 6, 0.7, 1e-8);
    let x = rand_vec(g * r * c, 90, 1.0);
    let (loss, dx, nn) = loss_of(&x, g, r, c, w, eps);
    // The loss is −(w/N)·Σ log d ≥ −w·log 2 (unit vectors are at most 2 apart).
    assert!(loss >= -w * 2f64.ln() - 1e-12, "loss {loss}");
    // Each neighbour lies in its own group and is not the row itself.
    for (i, &j) in nn.iter().enumerate() {
        assert!(
            j >= 0.0 && (j as usize) < r && j as usize != i % r,
            "row {i}: nn {j}"
        );
    }
    // The neighbours do not change under the small perturbations of the check (distances are far from
    // ties for this seed), so the loss is smooth there.
    check_grad(
        "koleo dinp",
        &x,
        &dx,
        |v| loss_of(v, g, r, c, w, eps).0,
        100,
        crate::TOL,
    );
}

#[test]
fn koleo_gradient_spreads_the_nearest_pair() {
    // A step against the gradient moves the closest pair apart: their distance grows.
    let (g, r, c) = (1, 4, 3);
    let mut x = vec![1.0, 0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let (_, dx, nn) = loss_of(&x, g, r, c, 1.0, 1e-8);
    assert_eq!(
        (nn[0], nn[1]),
        (1.0, 0.0),
        "rows 0 and 1 are each other's neighbours"
    );
    let d01 = |x: &[f64]| {
        let (a, b) = (&x[0..3], &x[3..6]);
        let (na, nb) = (
            a.iter().map(|v| v * v).sum::<f64>().sqrt(),
            b.iter().map(|v| v * v).sum::<f64>().sqrt(),
        );
        a.iter()
            .zip(b)
            .map(|(p, q)| (p / na - q / nb).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let before = d01(&x);
    for (v, d) in x.iter_mut().zip(&dx) {
        *v -= 1e-3 * d;
    }
    assert!(d01(&x) > before, "distance {before} did not grow");
}
