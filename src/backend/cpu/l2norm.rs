//! CPU twin of `kernels/l2norm.cu`: `F.normalize(x, dim=-1, eps)` = x / max(‖x‖₂, eps), in the DINO head.
use super::Real;
use rayon::prelude::*;

/// out: (R, C); norm: (R) = ‖inp‖ (unclamped); inp: (R, C).
pub fn l2norm_forward<T: Real>(
    out: &mut [T],
    norm: &mut [T],
    inp: &[T],
    r: usize,
    c: usize,
    eps: T,
) {
    out[..r * c]
        .par_chunks_mut(c)
        .zip(norm[..r].par_iter_mut())
        .zip(inp[..r * c].par_chunks(c))
        .for_each(|((o, nrm), x)| {
            let n2: T = x.iter().map(|&v| v * v).sum();
            let nv = n2.sqrt();
            *nrm = nv;
            let den = nv.max(eps);
            for (a, &v) in o.iter_mut().zip(x) {
                *a = v / den;
            }
        });
}

/// dinp (=): (dy − y·(y·dy))/‖x‖ when ‖x‖ > eps, else dy/eps.
pub fn l2norm_backward<T: Real>(
    dinp: &mut [T],
    dout: &[T],
    out: &[T],
    norm: &[T],
    r: usize,
    c: usize,
    eps: T,
) {
    dinp[..r * c]
        .par_chunks_mut(c)
        .zip(dout[..r * c].par_chunks(c))
        .zip(out[..r * c].par_chunks(c).zip(norm[..r].par_iter()))
        .for_each(|((d, dy), (y, &nv))| {
            if nv > eps {
                let dot: T = y.iter().zip(dy).map(|(&a, &b)| a * b).sum();
                for j in 0..c {
                    d[j] = (dy[j] - y[j] * dot) / nv;
                }
            } else {
                for j in 0..c {
                    d[j] = dy[j] / eps;
                }
            }
        });
}
