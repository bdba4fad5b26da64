//! CPU twin of `kernels/residual.cu`: residual add with per-sample stochastic-depth scale, and CLS-row
//! gather/scatter and column placement for the backbone outputs.
use super::Real;
use rayon::prelude::*;

/// out[b] = inp[b] + scale[b]·branch[b]; each sample has M elements; scale: (B).
pub fn residual_forward<T: Real>(
    out: &mut [T],
    inp: &[T],
    branch: &[T],
    scale: &[T],
    b: usize,
    m: usize,
) {
    out[..b * m]
        .par_chunks_mut(m)
        .zip(
            inp[..b * m]
                .par_chunks(m)
                .zip(branch[..b * m].par_chunks(m)),
        )
        .zip(scale[..b].par_iter())
        .for_each(|((o, (x, y)), &s)| {
            for j in 0..m {
                o[j] = x[j] + s * y[j];
            }
        });
}

/// dbranch[b] (=) scale[b]·dout[b].
pub fn residual_backward<T: Real>(dbranch: &mut [T], dout: &[T], scale: &[T], b: usize, m: usize) {
    dbranch[..b * m]
        .par_chunks_mut(m)
        .zip(dout[..b * m].par_chunks(m))
        .zip(scale[..b].par_iter())
        .for_each(|((d, g), &s)| {
            for j in 0..m {
                d[j] = s * g[j];
            }
        });
}

/// out: (B, C) = x[:, 0, :]; x: (B, N, C).
pub fn residual_cls_gather<T: Real>(out: &mut [T], x: &[T], b: usize, n: usize, c: usize) {
    for bi in 0..b {
        out[bi * c..(bi + 1) * c].copy_from_slice(&x[bi * n * c..bi * n * c + c]);
    }
}

/// dx (=): dout on the CLS rows dx[:, 0, :], 0 on every other row; dx: (B, N, C); dout: (B, C).
pub fn residual_cls_scatter<T: Real>(dx: &mut [T], dout: &[T], b: usize, n: usize, c: usize) {
    for (bi, sample) in dx[..b * n * c].chunks_mut(n * c).enumerate() {
        sample[..c].copy_from_slice(&dout[bi * c..(bi + 1) * c]);
        sample[c..].fill(T::zero());
    }
}

/// out[:, col_off..col_off + C] = inp; out: (R, TC); inp: (R, C).
pub fn residual_copy_cols<T: Real>(
    out: &mut [T],
    inp: &[T],
    r: usize,
    c: usize,
    tc: usize,
    col_off: usize,
) {
    for row in 0..r {
        out[row * tc + col_off..row * tc + col_off + c]
            .copy_from_slice(&inp[row * c..(row + 1) * c]);
    }
}
