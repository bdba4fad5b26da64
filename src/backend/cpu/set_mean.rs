//! CPU twin of `kernels/set_mean.cu`: Set-DINO's aggregation, the mean over the n consecutive rows of
//! each set (rows are set-major: s·n … s·n+n−1), taken per (set, crop) before the head (algorithm.md §6.3).
use super::Real;
use rayon::prelude::*;

/// out: (S, C); inp: (S·n, C).
pub fn set_mean_forward<T: Real>(out: &mut [T], inp: &[T], s: usize, n: usize, c: usize) {
    let inv = T::one() / T::c(n as f64);
    out[..s * c]
        .par_chunks_mut(c)
        .zip(inp[..s * n * c].par_chunks(n * c))
        .for_each(|(o, x)| {
            o.fill(T::zero());
            for row in x.chunks(c) {
                for (a, &v) in o.iter_mut().zip(row) {
                    *a += v;
                }
            }
            for a in o.iter_mut() {
                *a *= inv;
            }
        });
}

/// dinp: (S·n, C) (=) dout[s]/n for every row of set s.
pub fn set_mean_backward<T: Real>(dinp: &mut [T], dout: &[T], s: usize, n: usize, c: usize) {
    let inv = T::one() / T::c(n as f64);
    dinp[..s * n * c]
        .par_chunks_mut(n * c)
        .zip(dout[..s * c].par_chunks(c))
        .for_each(|(d, g)| {
            for row in d.chunks_mut(c) {
                for (a, &v) in row.iter_mut().zip(g) {
                    *a = v * inv;
                }
            }
        });
}
