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
            &mut loss, &mut dz, &mut q, z, &t, &center, v, s, k, 0.1, 0.04,
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
        &mut loss, &mut dz, &mut q, &z, &t, &center, v, s, k, 0.1, 0.04,
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
