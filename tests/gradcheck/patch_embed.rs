use crate::common::{check_grad, dot, rand_vec};
use setdino::backend::cpu::matmul::matmul_forward;
use setdino::backend::cpu::patch_embed::*;
use setdino::model::pos::interp_matrix;

#[test]
fn tokens_backward_matches_finite_differences() {
    let (b, g, o, c) = (3, 5, 2, 4);
    let (p, g2) = (o * o, g * g);
    let interp = interp_matrix(g, o);
    let patch = rand_vec(b * p * c, 41, 1.0);
    let cls = rand_vec(c, 42, 1.0);
    let pos = rand_vec((1 + g2) * c, 43, 1.0);
    let up = rand_vec(b * (1 + p) * c, 44, 1.0);
    let fwd = |patch: &[f64], cls: &[f64], pos: &[f64]| {
        let mut x = vec![0.0; b * (1 + p) * c];
        patch_embed_tokens_forward(&mut x, patch, cls, pos, &interp, b, p, g2, c);
        dot(&up, &x)
    };
    let mut dcls = vec![0.0; c];
    let mut dpos = vec![0.0; (1 + g2) * c];
    let mut dpatch = vec![0.0; b * p * c];
    patch_embed_tokens_backward(&mut dcls, &mut dpos, &mut dpatch, &up, &interp, b, p, g2, c);
    check_grad(
        "tokens dpatch_out",
        &patch,
        &dpatch,
        |v| fwd(v, &cls, &pos),
        100,
        crate::TOL,
    );
    check_grad(
        "tokens dcls",
        &cls,
        &dcls,
        |v| fwd(&patch, v, &pos),
        100,
        crate::TOL,
    );
    check_grad(
        "tokens dpos (interp transpose)",
        &pos,
        &dpos,
        |v| fwd(&patch, &cls, v),
        200,
        crate::TOL,
    );
}

/// im2col + matmul equals a direct stride-p convolution (PyTorch Conv2d semantics).
#[test]
fn im2col_matmul_equals_direct_convolution() {
    let (b, ch, h, w, p, d) = (2, 3, 8, 8, 4, 5);
    let img = rand_vec(b * ch * h * w, 45, 1.0);
    let wt = rand_vec(d * ch * p * p, 46, 1.0);
    let bias = rand_vec(d, 47, 1.0);
    let (gh, gw) = (h / p, w / p);
    let mut cols = vec![0.0; b * gh * gw * ch * p * p];
    patch_embed_im2col(&mut cols, &img, b, ch, h, w, p);
    let mut out = vec![0.0; b * gh * gw * d];
    matmul_forward(
        &mut out,
        &cols,
        &wt,
        Some(&bias),
        b * gh * gw,
        ch * p * p,
        d,
    );
    for bi in 0..b {
        for py in 0..gh {
            for px in 0..gw {
                for o in 0..d {
                    let mut s = bias[o];
                    for c in 0..ch {
                        for ky in 0..p {
                            for kx in 0..p {
                                s += wt[((o * ch + c) * p + ky) * p + kx]
                                    * img[((bi * ch + c) * h + py * p + ky) * w + px * p + kx];
                            }
                        }
                    }
                    let got = out[((bi * gh + py) * gw + px) * d + o];
                    assert!(
                        (got - s).abs() < 1e-12,
                        "conv mismatch at {bi},{py},{px},{o}"
                    );
                }
            }
        }
    }
}
