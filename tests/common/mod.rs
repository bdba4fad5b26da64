//! Shared test helpers: seeded random inputs, finite-difference gradient checks, tensor comparison.
#![allow(dead_code)]
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// n values ~ U(-1, 1)·scale from `seed`.
pub fn rand_vec(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (r.random::<f64>() * 2.0 - 1.0) * scale)
        .collect()
}

/// n values ~ U(-1, 1) as f32.
pub fn rand_vec_f32(n: usize, seed: u64, scale: f64) -> Vec<f32> {
    rand_vec(n, seed, scale)
        .into_iter()
        .map(|x| x as f32)
        .collect()
}

/// Σ w·y.
pub fn dot(w: &[f64], y: &[f64]) -> f64 {
    w.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// Central finite differences of `f` at `x` on every coordinate (or `max_coords` spread evenly),
/// compared with `analytic`: |fd − an| ≤ tol·max(1, max|an|). Panics with the worst coordinate.
pub fn check_grad(
    name: &str,
    x: &[f64],
    analytic: &[f64],
    mut f: impl FnMut(&[f64]) -> f64,
    max_coords: usize,
    tol: f64,
) {
    assert_eq!(x.len(), analytic.len(), "{name}: length");
    let h = 1e-6;
    let scale = analytic.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let stride = (x.len() / max_coords.max(1)).max(1);
    let mut xp = x.to_vec();
    let mut worst = (0usize, 0.0f64, 0.0f64, 0.0f64);
    let mut checked = 0;
    for i in (0..x.len()).step_by(stride) {
        let orig = xp[i];
        xp[i] = orig + h;
        let fp = f(&xp);
        xp[i] = orig - h;
        let fm = f(&xp);
        xp[i] = orig;
        let fd = (fp - fm) / (2.0 * h);
        let err = (fd - analytic[i]).abs();
        if std::env::var("GC_VERBOSE").is_ok() {
            eprintln!("  {name} [{i}] fd {fd:.6e} an {:.6e}", analytic[i]);
        }
        if err > worst.1 {
            worst = (i, err, fd, analytic[i]);
        }
        checked += 1;
    }
    let rel = worst.1 / scale;
    eprintln!(
        "{name:<40} {} coords  max|fd-an| {:.2e}  rel {:.2e}",
        checked, worst.1, rel
    );
    assert!(
        rel <= tol,
        "{name}: coordinate {} finite difference {} vs analytic {} (rel {rel:.3e} > {tol:.1e})",
        worst.0,
        worst.2,
        worst.3
    );
    assert!(
        analytic.iter().any(|&v| v != 0.0),
        "{name}: analytic gradient is identically zero"
    );
}
