//! CPU twin of `kernels/layernorm.cu`: LayerNorm over the channel dim, biased variance
//! (torch.nn.LayerNorm, eps 1e-6 in the ViT). Saves mean and rstd for the backward.
use super::{combine8, sum8_by, Real, REDUCE_CHUNK};
use rayon::prelude::*;

/// out: (R, C); mean, rstd: (R); inp: (R, C); w, b: (C).
pub fn layernorm_forward<T: Real>(
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    inp: &[T],
    w: &[T],
    b: &[T],
    r: usize,
    c: usize,
    eps: T,
) {
    let cn = T::c(c as f64);
    out[..r * c]
        .par_chunks_mut(c)
        .zip(mean[..r].par_iter_mut())
        .zip(rstd[..r].par_iter_mut())
        .zip(inp[..r * c].par_chunks(c))
        .for_each(|(((o, m), s), x)| {
            let mu = sum8_by(x, |v| v) / cn;
            let var = sum8_by(x, |v| (v - mu) * (v - mu)) / cn;
            let rs = T::one() / (var + eps).sqrt();
            for j in 0..c {
                o[j] = (x[j] - mu) * rs * w[j] + b[j];
            }
            *m = mu;
            *s = rs;
        });
}

/// `layernorm_forward_residual_f32`: x (=) = inp + scale[row / n]·branch, then LayerNorm(x) as
/// `layernorm_forward` (same arithmetic, so the fused and unfused schedules agree bit for bit).
pub fn layernorm_forward_residual<T: Real>(
    x: &mut [T],
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    inp: &[T],
    branch: &[T],
    scale: &[T],
    w: &[T],
    b: &[T],
    r: usize,
    c: usize,
    n: usize,
    eps: T,
) {
    x[..r * c]
        .par_chunks_mut(n * c)
        .zip(inp[..r * c].par_chunks(n * c))
        .zip(branch[..r * c].par_chunks(n * c))
        .zip(scale[..r / n].par_iter())
        .for_each(|(((x, a), y), &s)| {
            for j in 0..x.len() {
                x[j] = a[j] + s * y[j];
            }
        });
    layernorm_forward(out, mean, rstd, x, w, b, r, c, eps);
}

/// `layernorm_forward_bf16`: `layernorm_forward` with the output rounded to bf16 (stored as bf16).
pub fn layernorm_forward_bf16<T: Real>(
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    inp: &[T],
    w: &[T],
    b: &[T],
    r: usize,
    c: usize,
    eps: T,
) {
    layernorm_forward(out, mean, rstd, inp, w, b, r, c, eps);
    round_in_place(&mut out[..r * c]);
}

/// `layernorm_forward_residual_bf16`: `layernorm_forward_residual` with the LayerNorm output rounded
/// to bf16 (x stays f32: it is the residual stream).
pub fn layernorm_forward_residual_bf16<T: Real>(
    x: &mut [T],
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    inp: &[T],
    branch: &[T],
    scale: &[T],
    w: &[T],
    b: &[T],
    r: usize,
    c: usize,
    n: usize,
    eps: T,
) {
    layernorm_forward_residual(x, out, mean, rstd, inp, branch, scale, w, b, r, c, n, eps);
    round_in_place(&mut out[..r * c]);
}

fn round_in_place<T: Real>(v: &mut [T]) {
    v.par_iter_mut()
        .for_each(|x| *x = super::matmul::round_bf16(*x));
}

/// dinp: (R, C) (+=); dw, db: (C) (+=).
pub fn layernorm_backward<T: Real>(
    dinp: &mut [T],
    dw: &mut [T],
    db: &mut [T],
    dout: &[T],
    inp: &[T],
    w: &[T],
    mean: &[T],
    rstd: &[T],
    r: usize,
    c: usize,
) {
    let cn = T::c(c as f64);
    // Input gradient, row-parallel.
    dinp[..r * c]
        .par_chunks_mut(c)
        .zip(dout[..r * c].par_chunks(c))
        .zip(inp[..r * c].par_chunks(c))
        .zip(mean[..r].par_iter().zip(rstd[..r].par_iter()))
        .for_each(|(((di, dy), x), (&mu, &rs))| {
            let (x, dy, w) = (&x[..c], &dy[..c], &w[..c]);
            // 8 partial sums of each, combined in a fixed order (vectorizes; deterministic)
            let (mut a_dn, mut a_dnx) = ([T::zero(); 8], [T::zero(); 8]);
            let full = c - c % 8;
            for j0 in (0..full).step_by(8) {
                for l in 0..8 {
                    let j = j0 + l;
                    let dn = dy[j] * w[j];
                    a_dn[l] += dn;
                    a_dnx[l] += dn * ((x[j] - mu) * rs);
                }
            }
            let (mut t_dn, mut t_dnx) = (T::zero(), T::zero());
            for j in full..c {
                let dn = dy[j] * w[j];
                t_dn += dn;
                t_dnx += dn * ((x[j] - mu) * rs);
            }
            let (sum_dn, sum_dn_xhat) = (combine8(a_dn, t_dn), combine8(a_dnx, t_dnx));
            let mean_dn = sum_dn / cn;
            let mean_dn_xhat = sum_dn_xhat / cn;
            for j in 0..c {
                let xhat = (x[j] - mu) * rs;
                di[j] += (dy[j] * w[j] - mean_dn - xhat * mean_dn_xhat) * rs;
            }
        });
    // Parameter gradients, fixed-size row chunks then an ordered sum.
    let rows: Vec<usize> = (0..r).step_by(REDUCE_CHUNK).collect();
    let partial: Vec<(Vec<T>, Vec<T>)> = rows
        .par_iter()
        .map(|&r0| {
            let mut gw = vec![T::zero(); c];
            let mut gb = vec![T::zero(); c];
            for row in r0..(r0 + REDUCE_CHUNK).min(r) {
                let (mu, rs) = (mean[row], rstd[row]);
                for j in 0..c {
                    let dy = dout[row * c + j];
                    gw[j] += dy * (inp[row * c + j] - mu) * rs;
                    gb[j] += dy;
                }
            }
            (gw, gb)
        })
        .collect();
    for (gw, gb) in partial {
        for j in 0..c {
            dw[j] += gw[j];
            db[j] += gb[j];
        }
    }
}
