use crate::common::{check_grad, rand_vec};
use setdino::backend::cpu::dino_loss::*;

#[test]
fn dino_loss_gradient_matches_finite_differences() {
    let (v, s, k) = (4, 2, 6);
    let z = rand_vec(v * s * k, 91, 1.0);
    let t = rand_vec(2 * s * k, 92, 1.0);
    let center = rand_vec(k, 93, 0.2);
    let run = |z: &[f64]| {
        let mut loss = vec![0.0];
        let mut dz = vec![0.0; v * s * k];
        let mut q = vec![0.0; 2 * s * k];
        dino_loss_forward_backward(
            &mut loss,
            &mut dz,
            &mut q,
            z,
            &t,
            Some(&center),
            v,
            s,
            k,
            0.1,
            0.04,
        );
        (loss[0], dz)
    };
    let (_, dz) = run(&z);
    check_grad(
        "dino_loss dstudent",
        &z,
        &dz,
        |zz| run(zz).0,
        100,
        crate::TOL,
    );
}

/// The loss equals the definition written out: 2V − 2 terms, same view skipped, teacher centered.
#[test]
fn dino_loss_equals_definition() {
    let (v, s, k) = (3, 2, 4);
    let z = rand_vec(v * s * k, 94, 1.0);
    let t = rand_vec(2 * s * k, 95, 1.0);
    let center = rand_vec(k, 96, 0.2);
    let mut loss = vec![0.0];
    let mut dz = vec![0.0; v * s * k];
    let mut q = vec![0.0; 2 * s * k];
    dino_loss_forward_backward(
        &mut loss,
        &mut dz,
        &mut q,
        &z,
        &t,
        Some(&center),
        v,
        s,
        k,
        0.1,
        0.04,
    );
    let softmax = |x: Vec<f64>| {
        let m = x.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = x.iter().map(|a| (a - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.into_iter().map(|a| a / sum).collect::<Vec<f64>>()
    };
    let mut total = 0.0;
    let mut terms = 0;
    for iq in 0..2 {
        for vv in 0..v {
            if vv == iq {
                continue;
            }
            let mut term = 0.0;
            for si in 0..s {
                let qrow = softmax(
                    (0..k)
                        .map(|j| (t[(iq * s + si) * k + j] - center[j]) / 0.04)
                        .collect(),
                );
                let prow = softmax((0..k).map(|j| z[(vv * s + si) * k + j] / 0.1).collect());
                term += -(0..k).map(|j| qrow[j] * prow[j].ln()).sum::<f64>();
            }
            total += term / s as f64;
            terms += 1;
        }
    }
    assert_eq!(terms, 2 * v - 2);
    assert!(
        (loss[0] - total / terms as f64).abs() < 1e-12,
        "{} vs {}",
        loss[0],
        total / terms as f64
    );
}

#[test]
fn center_update_is_ema_of_teacher_row_mean() {
    let (r, k) = (4, 3);
    let t = rand_vec(r * k, 97, 1.0);
    let mut c = vec![0.5, -0.5, 0.25];
    let c0 = c.clone();
    dino_loss_center_update(&mut c, &t, r, k, 0.9);
    for j in 0..k {
        let mean: f64 = (0..r).map(|i| t[i * k + j]).sum::<f64>() / r as f64;
        assert!((c[j] - (0.9 * c0[j] + 0.1 * mean)).abs() < 1e-14);
    }
}

/// Sinkhorn–Knopp targets: every row a distribution; with enough iterations every prototype holds 1/K
/// of the batch (columns sum to R/K); the top prototype of a row stays on top (each iteration scales
/// whole columns and rows, so a row's order changes only through the column scales).
#[test]
fn sinkhorn_targets_are_balanced_distributions() {
    let (r, k) = (6, 5);
    let t = rand_vec(r * k, 97, 1.0);
    // The largest relative deviation of a column's mass from R/K shrinks with the iterations.
    let mut last = f64::INFINITY;
    for iters in [0, 1, 3, 200] {
        let mut q = vec![0.0; r * k];
        dino_loss_sinkhorn(&mut q, &t, r, k, 0.1, iters);
        if iters > 0 {
            for row in q.chunks_exact(k) {
                let s: f64 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-12, "row sum {s}");
                assert!(row.iter().all(|&x| x >= 0.0));
            }
        }
        let want = r as f64 / k as f64;
        let dev = (0..k)
            .map(|j| ((0..r).map(|i| q[i * k + j]).sum::<f64>() - want).abs() / want)
            .fold(0.0, f64::max);
        assert!(
            dev < last,
            "iters {iters}: column deviation {dev} not below {last}"
        );
        last = dev;
    }
    assert!(
        last < 1e-9,
        "200 iterations leave columns {last} off balance"
    );
    // Zero iterations: the joint softmax, rescaled so rows sum to R·(row mass) (not normalised).
    let mut q = vec![0.0; r * k];
    dino_loss_sinkhorn(&mut q, &t, r, k, 0.1, 0);
    let total: f64 = q.iter().sum();
    assert!((total - r as f64).abs() < 1e-9, "{total}");
    // Identical rows (a collapsed teacher) give uniform targets: SK cannot undo a collapse of the
    // representation, only a dominant prototype.
    let one: Vec<f64> = (0..k).map(|j| j as f64 * 0.3).collect();
    let same: Vec<f64> = (0..r).flat_map(|_| one.clone()).collect();
    dino_loss_sinkhorn(&mut q, &same, r, k, 0.1, 3);
    assert!(
        q.iter().all(|&x| (x - 1.0 / k as f64).abs() < 1e-9),
        "{q:?}"
    );
}
