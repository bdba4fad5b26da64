//! CPU twin of `kernels/patch_embed.cu`: im2col for the stride-p Conv2d patch embedding (the matmul is
//! `matmul.rs`), and token assembly: CLS token, positional embeddings interpolated from the learned grid
//! by the fixed bicubic map (model/pos.rs), and their backward (the transpose).
use super::Real;
use rayon::prelude::*;

/// out: (B·P, CH·p·p), columns in Conv2d weight order (ch, ky, kx); img: (B, CH, H, W); rows row-major
/// over the (H/p, W/p) patch grid (`flatten(2).transpose(1, 2)`).
pub fn patch_embed_im2col<T: Real>(
    out: &mut [T],
    img: &[T],
    b: usize,
    ch: usize,
    h: usize,
    w: usize,
    p: usize,
) {
    let (gh, gw) = (h / p, w / p);
    let k = ch * p * p;
    out[..b * gh * gw * k]
        .par_chunks_mut(k)
        .enumerate()
        .for_each(|(row, o)| {
            let bi = row / (gh * gw);
            let pi = row % (gh * gw);
            let (py, px) = (pi / gw, pi % gw);
            for c in 0..ch {
                for ky in 0..p {
                    let src = ((bi * ch + c) * h + py * p + ky) * w + px * p;
                    let dst = (c * p + ky) * p;
                    o[dst..dst + p].copy_from_slice(&img[src..src + p]);
                }
            }
        });
}

/// pos_patch: (P, C) = interp (P, G2) · grid (G2, C), grid = pos[1..].
fn interp_pos<T: Real>(pos: &[T], interp: &[T], p: usize, g2: usize, c: usize) -> Vec<T> {
    let mut out = vec![T::zero(); p * c];
    out.par_chunks_mut(c).enumerate().for_each(|(i, o)| {
        for g in 0..g2 {
            let wgt = interp[i * g2 + g];
            if wgt != T::zero() {
                let src = &pos[(1 + g) * c..(2 + g) * c];
                for (a, &s) in o.iter_mut().zip(src) {
                    *a += wgt * s;
                }
            }
        }
    });
    out
}

/// x: (B, N, C) with N = 1 + P; patch_out: (B·P, C); cls: (C); pos: (1 + G2, C); interp: (P, G2).
pub fn patch_embed_tokens_forward<T: Real>(
    x: &mut [T],
    patch_out: &[T],
    cls: &[T],
    pos: &[T],
    interp: &[T],
    b: usize,
    p: usize,
    g2: usize,
    c: usize,
) {
    let pp = interp_pos(pos, interp, p, g2, c);
    let n = 1 + p;
    x[..b * n * c]
        .par_chunks_mut(n * c)
        .enumerate()
        .for_each(|(bi, xb)| {
            for j in 0..c {
                xb[j] = cls[j] + pos[j];
            }
            for i in 0..p {
                for j in 0..c {
                    xb[(1 + i) * c + j] = patch_out[(bi * p + i) * c + j] + pp[i * c + j];
                }
            }
        });
}

/// dcls: (C) (+=); dpos: (1 + G2, C) (+=); dpatch_out: (B·P, C) (=); dx: (B, N, C).
pub fn patch_embed_tokens_backward<T: Real>(
    dcls: &mut [T],
    dpos: &mut [T],
    dpatch_out: &mut [T],
    dx: &[T],
    interp: &[T],
    b: usize,
    p: usize,
    g2: usize,
    c: usize,
) {
    let n = 1 + p;
    dpatch_out[..b * p * c]
        .par_chunks_mut(p * c)
        .enumerate()
        .for_each(|(bi, d)| d.copy_from_slice(&dx[(bi * n + 1) * c..(bi + 1) * n * c]));
    // Sum over images, in image order, for every (token, channel).
    let mut sum = vec![T::zero(); n * c];
    sum.par_chunks_mut(c).enumerate().for_each(|(t, s)| {
        for bi in 0..b {
            for (a, &g) in s
                .iter_mut()
                .zip(&dx[(bi * n + t) * c..(bi * n + t + 1) * c])
            {
                *a += g;
            }
        }
    });
    for j in 0..c {
        dcls[j] += sum[j];
        dpos[j] += sum[j];
    }
    // dgrid (G2, C) += interpᵀ · sum[1..]
    dpos[c..(1 + g2) * c]
        .par_chunks_mut(c)
        .enumerate()
        .for_each(|(g, d)| {
            for i in 0..p {
                let wgt = interp[i * g2 + g];
                if wgt != T::zero() {
                    for (a, &s) in d.iter_mut().zip(&sum[(1 + i) * c..(2 + i) * c]) {
                        *a += wgt * s;
                    }
                }
            }
        });
}
