//! CPU twin of `kernels/weightnorm.cu`: the weight-normalised last layer, W = g·V/‖V‖ with one norm per
//! output row (`nn.utils.weight_norm(dim=0)`); g is fixed at 1 in the reference and gets no gradient.
use super::Real;
use rayon::prelude::*;

/// w: (K, C); norm: (K); v: (K, C); g: (K).
pub fn weightnorm_forward<T: Real>(
    w: &mut [T],
    norm: &mut [T],
    v: &[T],
    g: &[T],
    k: usize,
    c: usize,
) {
    w[..k * c]
        .par_chunks_mut(c)
        .zip(norm[..k].par_iter_mut())
        .zip(v[..k * c].par_chunks(c).zip(g[..k].par_iter()))
        .for_each(|((wr, nrm), (vr, &gk))| {
            let nv = vr.iter().map(|&x| x * x).sum::<T>().sqrt();
            *nrm = nv;
            let f = gk / nv;
            for (a, &x) in wr.iter_mut().zip(vr) {
                *a = x * f;
            }
        });
}

/// dv: (K, C) (+=) g/‖v‖·(dw − v̂·(v̂·dw)).
pub fn weightnorm_backward<T: Real>(
    dv: &mut [T],
    dw: &[T],
    v: &[T],
    g: &[T],
    norm: &[T],
    k: usize,
    c: usize,
) {
    dv[..k * c]
        .par_chunks_mut(c)
        .zip(dw[..k * c].par_chunks(c))
        .zip(
            v[..k * c]
                .par_chunks(c)
                .zip(g[..k].par_iter().zip(norm[..k].par_iter())),
        )
        .for_each(|((d, gw), (vr, (&gk, &nv)))| {
            let dot: T = vr.iter().zip(gw).map(|(&a, &b)| a * b).sum::<T>() / nv;
            let f = gk / nv;
            for j in 0..c {
                d[j] += f * (gw[j] - vr[j] / nv * dot);
            }
        });
}
