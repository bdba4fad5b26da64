//! CPU twins of `kernels/adamw.cu`, `kernels/ema.cu` and `kernels/reduce.cu`: per-tensor gradient
//! clipping (DINO `clip_gradients`), AdamW with PyTorch's single-tensor semantics, the EMA teacher.
use super::Real;
use rayon::prelude::*;

/// For each tensor (off, len): coef = max_norm/(‖g‖ + 1e-6); g *= coef when coef < 1.
pub fn reduce_clip_per_tensor<T: Real>(grads: &mut [T], ranges: &[(usize, usize)], max_norm: f64) {
    let norms: Vec<f64> = ranges
        .par_iter()
        .map(|&(off, len)| {
            // in f64, with 8 fixed-order partial sums (vectorizes; deterministic)
            let g = &grads[off..off + len];
            let mut acc = [0f64; 8];
            let mut ch = g.chunks_exact(8);
            for c in &mut ch {
                for l in 0..8 {
                    acc[l] += c[l].d() * c[l].d();
                }
            }
            let tail: f64 = ch.remainder().iter().map(|&v| v.d() * v.d()).sum();
            super::combine8(acc, tail).sqrt()
        })
        .collect();
    for (&(off, len), &nrm) in ranges.iter().zip(&norms) {
        let coef = max_norm / (nrm + 1e-6);
        if coef < 1.0 {
            let cf = T::c(coef);
            grads[off..off + len].par_iter_mut().for_each(|g| *g *= cf);
        }
    }
}

/// AdamW over matching slices: p *= 1 − lr·wd; m = lerp(m, g, 1 − β1); v = β2·v + (1 − β2)·g²;
/// p −= (lr/bc1)·m/(√v/√bc2 + ε). `h`: the words of `AdamWHyper::words` (at least 7).
pub fn adamw_update<T: Real>(p: &mut [T], m: &mut [T], v: &mut [T], g: &[T], h: &[T]) {
    let [decay, w1, b2, w2, step, bc2, eps] = [h[0], h[1], h[2], h[3], h[4], h[5], h[6]];
    p.par_iter_mut()
        .zip(m.par_iter_mut())
        .zip(v.par_iter_mut().zip(g.par_iter()))
        .for_each(|((p, m), (v, &g))| {
            *p *= decay;
            *m += w1 * (g - *m);
            *v = *v * b2 + w2 * g * g;
            let denom = v.sqrt() / bc2 + eps;
            *p -= step * (*m / denom);
        });
}

/// teacher = m·teacher + (1 − m)·student; `momentum` = (m, 1 − m).
pub fn ema_update<T: Real>(teacher: &mut [T], student: &[T], momentum: &[T]) {
    let (m, om) = (momentum[0], momentum[1]);
    teacher
        .par_iter_mut()
        .zip(student.par_iter())
        .for_each(|(t, &s)| *t = *t * m + om * s);
}

/// `adamw_update_bf16`: `adamw_update`, and the bf16 copy of the updated parameters in the same pass.
pub fn adamw_update_bf16<T: Real>(
    p: &mut [T],
    p_bf16: &mut [T],
    m: &mut [T],
    v: &mut [T],
    g: &[T],
    h: &[T],
) {
    adamw_update(p, m, v, g, h);
    round_into(p_bf16, p);
}

/// `ema_update_bf16`: `ema_update`, and the bf16 copy of the updated teacher in the same pass.
pub fn ema_update_bf16<T: Real>(
    teacher: &mut [T],
    teacher_bf16: &mut [T],
    student: &[T],
    momentum: &[T],
) {
    ema_update(teacher, student, momentum);
    round_into(teacher_bf16, teacher);
}

fn round_into<T: Real>(dst: &mut [T], src: &[T]) {
    dst.par_iter_mut()
        .zip(src.par_iter())
        .for_each(|(d, &s)| *d = super::matmul::round_bf16(s));
}
