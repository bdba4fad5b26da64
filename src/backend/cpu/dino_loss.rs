//! CPU twin of `kernels/dino_loss.cu`: the DINO cross-entropy with centering and sharpening, fused with
//! its gradient w.r.t. the student logits, and the center EMA (algorithm.md §3).
//!
//! L = (1/T)·Σ_{iq∈{0,1}} Σ_{v≠iq} (1/S)·Σ_s −Σ_k q_iq[s,k]·log softmax(z_v[s]/τs)_k,
//! q = softmax((t − center)/τt), T = 2V − 2. dL/dz_v[s] = (1/(T·S·τs))·Σ_{iq∈T(v)} (p_v[s] − q_iq[s]).
use super::Real;
use rayon::prelude::*;

fn softmax_row<T: Real>(out: &mut [T], z: &[T], sub: Option<&[T]>, temp: T) {
    for (j, o) in out.iter_mut().enumerate() {
        let x = match sub {
            Some(c) => z[j] - c[j],
            None => z[j],
        };
        *o = x / temp;
    }
    let mx = out.iter().copied().fold(T::neg_infinity(), T::max);
    let mut sum = T::zero();
    for o in out.iter_mut() {
        *o = (*o - mx).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// loss: (1); dstudent: (V·S, K) (=); tprobs: (2S, K); student: (V·S, K); teacher: (2S, K); center: (K),
/// or None when tprobs already holds the teacher targets (`dino_loss_sinkhorn`).
pub fn dino_loss_forward_backward<T: Real>(
    loss: &mut [T],
    dstudent: &mut [T],
    tprobs: &mut [T],
    student: &[T],
    teacher: &[T],
    center: Option<&[T]>,
    v: usize,
    s: usize,
    k: usize,
    student_temp: f64,
    teacher_temp: f64,
) {
    let tt = T::c(teacher_temp);
    let ts = T::c(student_temp);
    if let Some(center) = center {
        tprobs[..2 * s * k]
            .par_chunks_mut(k)
            .zip(teacher[..2 * s * k].par_chunks(k))
            .for_each(|(q, t)| softmax_row(q, t, Some(&center[..k]), tt));
    }
    let terms = (2 * v - 2) as f64;
    let coef = T::c(1.0 / (terms * s as f64 * student_temp));
    let q: &[T] = tprobs;
    let per_row: Vec<f64> = dstudent[..v * s * k]
        .par_chunks_mut(k)
        .zip(student[..v * s * k].par_chunks(k))
        .enumerate()
        .map(|(row, (d, z))| {
            let (view, si) = (row / s, row % s);
            // log_softmax(z/τs)
            let mut ls = vec![T::zero(); k];
            for (l, &x) in ls.iter_mut().zip(z) {
                *l = x / ts;
            }
            let mx = ls.iter().copied().fold(T::neg_infinity(), T::max);
            let lse = ls.iter().map(|&x| (x - mx).exp()).sum::<T>().ln() + mx;
            for l in ls.iter_mut() {
                *l -= lse;
            }
            let mut row_loss = 0.0f64;
            d.fill(T::zero());
            let mut count = T::zero();
            for iq in 0..2 {
                if iq == view {
                    continue;
                }
                let qr = &q[(iq * s + si) * k..(iq * s + si + 1) * k];
                let ce: T = qr.iter().zip(&ls).map(|(&a, &b)| -a * b).sum();
                row_loss += ce.d();
                for (dj, &qj) in d.iter_mut().zip(qr) {
                    *dj -= qj;
                }
                count += T::one();
            }
            for (dj, &l) in d.iter_mut().zip(&ls) {
                *dj = (*dj + count * l.exp()) * coef;
            }
            row_loss
        })
        .collect();
    let total: f64 = per_row.iter().sum();
    loss[0] = T::c(total / (s as f64 * terms));
}

/// tprobs: (R, K) = the Sinkhorn–Knopp teacher targets of teacher (R, K) (DINOv2's centering):
/// Q = exp((t − max t)/τt) / ΣQ, then `iters` times each prototype column scaled to mass 1/K and each
/// row to 1/R, finally ×R so every row sums to 1. Zero-mass columns or rows stay zero. Sums run in the
/// kernel's order for columns (rows in order); the row sums are plain sums (the kernel reduces a row
/// in a tree: the parity test allows for it).
pub fn dino_loss_sinkhorn<T: Real>(
    tprobs: &mut [T],
    teacher: &[T],
    r: usize,
    k: usize,
    teacher_temp: f64,
    iters: usize,
) {
    let n = r * k;
    let tt = T::c(teacher_temp);
    let mx = teacher[..n].iter().copied().fold(T::neg_infinity(), T::max);
    let mut total = T::zero();
    for (q, &t) in tprobs[..n].iter_mut().zip(&teacher[..n]) {
        *q = ((t - mx) / tt).exp();
        total += *q;
    }
    for q in tprobs[..n].iter_mut() {
        *q /= total;
    }
    let (kn, rn) = (T::c(k as f64), T::c(r as f64));
    for _ in 0..iters {
        for j in 0..k {
            let mut c = T::zero();
            for row in 0..r {
                c += tprobs[row * k + j];
            }
            let scale = if c > T::zero() {
                T::one() / (c * kn)
            } else {
                T::zero()
            };
            for row in 0..r {
                tprobs[row * k + j] *= scale;
            }
        }
        for q in tprobs[..n].chunks_exact_mut(k) {
            let t: T = q.iter().copied().sum();
            let scale = if t > T::zero() {
                T::one() / (t * rn)
            } else {
                T::zero()
            };
            q.iter_mut().for_each(|x| *x *= scale);
        }
    }
    for q in tprobs[..n].iter_mut() {
        *q *= rn;
    }
}

/// center: (K) = m·center + (1 − m)·mean over the R rows of teacher (R, K).
/// stats[4·slot..+4] = (loss[0], mean row entropy of the rp rows of `tprobs`, 1 if the rt ≥ 2 rows of
/// `teacher` all equal the first within 1e-6 else 0, 0): a step's monitoring values (twin of
/// `dino_loss_monitor_f32`).
#[allow(clippy::too_many_arguments)]
pub fn dino_loss_monitor<T: Real>(
    stats: &mut [T],
    loss: &[T],
    tprobs: &[T],
    teacher: &[T],
    slot: usize,
    rp: usize,
    rt: usize,
    k: usize,
) {
    let mut h = T::zero();
    for &q in &tprobs[..rp * k] {
        if q > T::zero() {
            h -= q * q.ln();
        }
    }
    let tol = T::c(1e-6);
    let same = rt >= 2 && (k..rt * k).all(|e| (teacher[e] - teacher[e % k]).abs() <= tol);
    let out = &mut stats[4 * slot..4 * slot + 4];
    out[0] = loss[0];
    out[1] = if rp > 0 {
        h / T::c(rp as f64)
    } else {
        T::zero()
    };
    out[2] = if same { T::one() } else { T::zero() };
    out[3] = T::zero();
}

pub fn dino_loss_center_update<T: Real>(
    center: &mut [T],
    teacher: &[T],
    r: usize,
    k: usize,
    momentum: f64,
) {
    let m = T::c(momentum);
    let om = T::c(1.0 - momentum);
    let rn = T::c(r as f64);
    center[..k].par_iter_mut().enumerate().for_each(|(j, cj)| {
        let mut sum = T::zero();
        for row in 0..r {
            sum += teacher[row * k + j];
        }
        *cj = *cj * m + sum / rn * om;
    });
}

#[cfg(test)]
mod tests {
    use super::dino_loss_monitor;

    #[test]
    fn the_monitor_writes_loss_entropy_and_collapse_into_its_slot_only() {
        let k = 8;
        // uniform targets: entropy ln K; one-hot targets: 0
        let uniform = vec![1.0 / k as f64; 3 * k];
        let mut onehot = vec![0.0; 3 * k];
        for r in 0..3 {
            onehot[r * k + r] = 1.0;
        }
        let distinct: Vec<f64> = (0..3 * k).map(|e| e as f64 * 0.1).collect();
        let same: Vec<f64> = (0..3 * k).map(|e| (e % k) as f64 * 0.1).collect();
        let mut stats = vec![-1.0; 12];
        dino_loss_monitor(&mut stats, &[2.5], &uniform, &distinct, 1, 3, 3, k);
        assert_eq!(&stats[..4], &[-1.0; 4]);
        assert_eq!(stats[4], 2.5);
        assert!((stats[5] - (k as f64).ln()).abs() < 1e-12);
        assert_eq!((stats[6], stats[7]), (0.0, 0.0));
        assert_eq!(&stats[8..], &[-1.0; 4]);
        dino_loss_monitor(&mut stats, &[0.5], &onehot, &same, 2, 3, 3, k);
        assert_eq!(&stats[8..], &[0.5, 0.0, 1.0, 0.0]);
        // one row cannot be called collapsed; a difference just above the tolerance is not collapse
        dino_loss_monitor(&mut stats, &[0.5], &onehot, &same, 0, 1, 1, k);
        assert_eq!(stats[2], 0.0);
        let mut near = same.clone();
        near[2 * k + 3] += 2e-6;
        dino_loss_monitor(&mut stats, &[0.5], &onehot, &near, 0, 3, 3, k);
        assert_eq!(stats[2], 0.0);
    }
}
