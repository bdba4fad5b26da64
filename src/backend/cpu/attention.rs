//! CPU twin of `kernels/attention.cu`: multi-head self-attention core (no causal mask, no dropout),
//! `softmax(q·kᵀ·HS^-0.5)·v` with the reference's qkv feature layout [3][NH][HS]. Rayon over images.
use super::small_gemm::{gemm_nn, transpose};
use super::{dot, sum8_by, Real};
use rayon::prelude::*;

/// out: (B, N, C); att: (B, NH, N, N); qkv: (B, N, 3C), C = NH·HS. Per image and head, the scores
/// S = q·kᵀ and the output P·v are small register-blocked products (`small_gemm`) reading q and v in
/// place (rows of stride 3C) and kᵀ from a transposed copy.
pub fn attention_forward<T: Real>(
    out: &mut [T],
    att: &mut [T],
    qkv: &[T],
    b: usize,
    n: usize,
    nh: usize,
    hs: usize,
) {
    let c = nh * hs;
    let scale = T::c(1.0 / (hs as f64).sqrt());
    out[..b * n * c]
        .par_chunks_mut(n * c)
        .zip(att[..b * nh * n * n].par_chunks_mut(nh * n * n))
        .zip(qkv[..b * n * 3 * c].par_chunks(n * 3 * c))
        .for_each_init(
            || vec![T::zero(); hs * n],
            |kt, ((o, a), x)| {
                for h in 0..nh {
                    let a = &mut a[h * n * n..(h + 1) * n * n];
                    let (qo, ko, vo) = (h * hs, c + h * hs, 2 * c + h * hs);
                    transpose(kt, n, &x[ko..], 3 * c, n, hs);
                    gemm_nn(a, n, &x[qo..], 3 * c, kt, n, n, n, hs, false);
                    for row in a.chunks_exact_mut(n) {
                        softmax_scaled(row, scale);
                    }
                    gemm_nn(&mut o[h * hs..], c, a, n, &x[vo..], 3 * c, n, hs, n, false);
                }
            },
        );
}

/// row ← softmax(row · scale), max-subtracted; the exponentials in their own (vectorized) pass and
/// their sum with 8 fixed-order partial sums.
fn softmax_scaled<T: Real>(row: &mut [T], scale: T) {
    let mut mx = T::neg_infinity();
    for rj in row.iter_mut() {
        *rj *= scale;
        mx = mx.max(*rj);
    }
    for rj in row.iter_mut() {
        *rj = (*rj - mx).exp_fast();
    }
    let sum = sum8_by(row, |v| v);
    for rj in row.iter_mut() {
        *rj /= sum;
    }
}

/// dqkv: (B, N, 3C) (=); datt: (B, NH, N, N) scratch; dout: (B, N, C). Per image and head:
/// dP = dy·vᵀ, dv = Pᵀ·dy, dS = P ⊙ (dP − rowsum(P ⊙ dP))·scale, dq = dS·k, dk = dSᵀ·q, each a small
/// register-blocked product written once into its slice of dqkv.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<T: Real>(
    dqkv: &mut [T],
    datt: &mut [T],
    dout: &[T],
    qkv: &[T],
    att: &[T],
    b: usize,
    n: usize,
    nh: usize,
    hs: usize,
) {
    let c = nh * hs;
    let scale = T::c(1.0 / (hs as f64).sqrt());
    dqkv[..b * n * 3 * c]
        .par_chunks_mut(n * 3 * c)
        .zip(datt[..b * nh * n * n].par_chunks_mut(nh * n * n))
        .zip(dout[..b * n * c].par_chunks(n * c))
        .zip(qkv[..b * n * 3 * c].par_chunks(n * 3 * c))
        .zip(att[..b * nh * n * n].par_chunks(nh * n * n))
        .for_each_init(
            || (vec![T::zero(); hs * n], vec![T::zero(); n * n]),
            |(vt, tr), ((((dx, da), dy), x), a)| {
                for h in 0..nh {
                    let a = &a[h * n * n..(h + 1) * n * n];
                    let da = &mut da[h * n * n..(h + 1) * n * n];
                    let (qo, ko, vo) = (h * hs, c + h * hs, 2 * c + h * hs);
                    let dyh = &dy[h * hs..];
                    // dP = dy · vᵀ ; dv = Pᵀ · dy
                    transpose(vt, n, &x[vo..], 3 * c, n, hs);
                    gemm_nn(da, n, dyh, c, vt, n, n, n, hs, false);
                    transpose(tr, n, a, n, n, n);
                    gemm_nn(&mut dx[vo..], 3 * c, tr, n, dyh, c, n, hs, n, false);
                    // softmax backward, then the score scale
                    for (row_d, row_a) in da.chunks_exact_mut(n).zip(a.chunks_exact(n)) {
                        let pd = dot(row_a, row_d);
                        for (g, &p) in row_d.iter_mut().zip(row_a) {
                            *g = p * (*g - pd) * scale;
                        }
                    }
                    // dq = dS · k ; dk = dSᵀ · q
                    gemm_nn(
                        &mut dx[qo..],
                        3 * c,
                        da,
                        n,
                        &x[ko..],
                        3 * c,
                        n,
                        hs,
                        n,
                        false,
                    );
                    transpose(tr, n, da, n, n, n);
                    gemm_nn(
                        &mut dx[ko..],
                        3 * c,
                        tr,
                        n,
                        &x[qo..],
                        3 * c,
                        n,
                        hs,
                        n,
                        false,
                    );
                }
            },
        );
}

/// Twin of `attention_forward_bf16`: q, k, v rounded to bf16; scores, softmax and the row log-sum-exp in
/// the scalar type; P rounded to bf16 before P·v. out: (B, N, C) (=); lse: (B, NH, N) (=).
pub fn attention_forward_bf16<T: Real>(
    out: &mut [T],
    lse: &mut [T],
    qkv: &[T],
    b: usize,
    n: usize,
    nh: usize,
    hs: usize,
) {
    let c = nh * hs;
    let scale = T::c(1.0 / (hs as f64).sqrt());
    let x16: Vec<T> = super::matmul::matmul_forward_round_bf16(&qkv[..b * n * 3 * c]);
    out[..b * n * c]
        .par_chunks_mut(n * c)
        .zip(lse[..b * nh * n].par_chunks_mut(nh * n))
        .zip(x16.par_chunks(n * 3 * c))
        .for_each(|((o, l), x)| {
            let mut row = vec![T::zero(); n];
            for h in 0..nh {
                for i in 0..n {
                    let q = &x[i * 3 * c + h * hs..i * 3 * c + h * hs + hs];
                    let mut mx = T::neg_infinity();
                    for (j, rj) in row.iter_mut().enumerate() {
                        let k = &x[j * 3 * c + c + h * hs..j * 3 * c + c + h * hs + hs];
                        let dot: T = q.iter().zip(k).map(|(&u, &v)| u * v).sum();
                        *rj = dot * scale;
                        mx = mx.max(*rj);
                    }
                    let mut sum = T::zero();
                    for rj in row.iter_mut() {
                        *rj = (*rj - mx).exp();
                        sum += *rj;
                    }
                    let inv = T::one() / sum;
                    l[h * n + i] = mx + sum.ln();
                    let od = &mut o[i * c + h * hs..i * c + h * hs + hs];
                    od.fill(T::zero());
                    for (j, &e) in row.iter().enumerate() {
                        let p = super::matmul::round_bf16(e * inv);
                        let v = &x[j * 3 * c + 2 * c + h * hs..j * 3 * c + 2 * c + h * hs + hs];
                        for (od, &vv) in od.iter_mut().zip(v) {
                            *od += p * vv;
                        }
                    }
                }
            }
        });
}

/// Twin of `attention_backward_bf16`: P recomputed from the log-sum-exp (f32), dP = bf16(dout)·bf16(v)ᵀ,
/// dS = P ⊙ (dP − Σ_j P·dP), dq = bf16(dS)·bf16(k)·scale, dk = bf16(dS)ᵀ·bf16(q)·scale,
/// dv = bf16(P)ᵀ·bf16(dout). dqkv: (B, N, 3C) (=).
pub fn attention_backward_bf16<T: Real>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    lse: &[T],
    b: usize,
    n: usize,
    nh: usize,
    hs: usize,
) {
    use super::matmul::{matmul_forward_round_bf16 as round_all, round_bf16};
    let c = nh * hs;
    let scale = T::c(1.0 / (hs as f64).sqrt());
    let x16 = round_all(&qkv[..b * n * 3 * c]);
    let dy16 = round_all(&dout[..b * n * c]);
    dqkv[..b * n * 3 * c]
        .par_chunks_mut(n * 3 * c)
        .zip(dy16.par_chunks(n * c))
        .zip(x16.par_chunks(n * 3 * c))
        .zip(lse[..b * nh * n].par_chunks(nh * n))
        .for_each(|(((dx, dy), x), l)| {
            dx.fill(T::zero());
            let (mut p, mut ds) = (vec![T::zero(); n * n], vec![T::zero(); n * n]);
            for h in 0..nh {
                let (qo, ko, vo) = (h * hs, c + h * hs, 2 * c + h * hs);
                for i in 0..n {
                    let q = &x[i * 3 * c + qo..i * 3 * c + qo + hs];
                    let dyi = &dy[i * c + h * hs..i * c + h * hs + hs];
                    let mut dsum = T::zero();
                    for j in 0..n {
                        let k = &x[j * 3 * c + ko..j * 3 * c + ko + hs];
                        let v = &x[j * 3 * c + vo..j * 3 * c + vo + hs];
                        let s: T = q.iter().zip(k).map(|(&u, &w)| u * w).sum::<T>() * scale;
                        let pij = (s - l[h * n + i]).exp();
                        let dp: T = dyi.iter().zip(v).map(|(&u, &w)| u * w).sum();
                        p[i * n + j] = pij;
                        ds[i * n + j] = dp;
                        dsum += pij * dp;
                    }
                    for j in 0..n {
                        ds[i * n + j] = p[i * n + j] * (ds[i * n + j] - dsum);
                    }
                }
                for i in 0..n {
                    for j in 0..n {
                        let (pb, sb) = (round_bf16(p[i * n + j]), round_bf16(ds[i * n + j]));
                        for d in 0..hs {
                            let (qi, kj) = (x[i * 3 * c + qo + d], x[j * 3 * c + ko + d]);
                            dx[i * 3 * c + qo + d] += sb * kj * scale;
                            dx[j * 3 * c + ko + d] += sb * qi * scale;
                            dx[j * 3 * c + vo + d] += pb * dy[i * c + h * hs + d];
                        }
                    }
                }
            }
        });
}
