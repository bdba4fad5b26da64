//! CPU twin of `kernels/attention.cu`: multi-head self-attention core (no causal mask, no dropout),
//! `softmax(q·kᵀ·HS^-0.5)·v` with the reference's qkv feature layout [3][NH][HS]. Rayon over images.
use super::Real;
use rayon::prelude::*;

/// out: (B, N, C); att: (B, NH, N, N); qkv: (B, N, 3C), C = NH·HS.
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
        .for_each(|((o, a), x)| {
            for h in 0..nh {
                let a = &mut a[h * n * n..(h + 1) * n * n];
                for i in 0..n {
                    let q = &x[i * 3 * c + h * hs..i * 3 * c + h * hs + hs];
                    let row = &mut a[i * n..(i + 1) * n];
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
                    for rj in row.iter_mut() {
                        *rj /= sum;
                    }
                    let od = &mut o[i * c + h * hs..i * c + h * hs + hs];
                    od.fill(T::zero());
                    for (j, &p) in row.iter().enumerate() {
                        let v = &x[j * 3 * c + 2 * c + h * hs..j * 3 * c + 2 * c + h * hs + hs];
                        for (od, &vv) in od.iter_mut().zip(v) {
                            *od += p * vv;
                        }
                    }
                }
            }
        });
}

/// dqkv: (B, N, 3C) (=); datt: (B, NH, N, N) scratch; dout: (B, N, C).
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
        .for_each(|((((dx, da), dy), x), a)| {
            dx.fill(T::zero());
            for h in 0..nh {
                let a = &a[h * n * n..(h + 1) * n * n];
                let da = &mut da[h * n * n..(h + 1) * n * n];
                let qo = h * hs;
                let ko = c + h * hs;
                let vo = 2 * c + h * hs;
                // datt = dout · vᵀ ; dv = attᵀ · dout
                for i in 0..n {
                    let dyi = &dy[i * c + h * hs..i * c + h * hs + hs];
                    for j in 0..n {
                        let v = &x[j * 3 * c + vo..j * 3 * c + vo + hs];
                        da[i * n + j] = dyi.iter().zip(v).map(|(&p, &q)| p * q).sum();
                        let p = a[i * n + j];
                        let dv = &mut dx[j * 3 * c + vo..j * 3 * c + vo + hs];
                        for (d, &g) in dv.iter_mut().zip(dyi) {
                            *d += p * g;
                        }
                    }
                }
                // softmax backward: dpre = att ⊙ (datt − rowsum(att ⊙ datt)), then scaled.
                for i in 0..n {
                    let row_a = &a[i * n..(i + 1) * n];
                    let row_d = &mut da[i * n..(i + 1) * n];
                    let dot: T = row_a.iter().zip(row_d.iter()).map(|(&p, &g)| p * g).sum();
                    for (g, &p) in row_d.iter_mut().zip(row_a) {
                        *g = p * (*g - dot) * scale;
                    }
                }
                // dq = dpre · k ; dk = dpreᵀ · q
                for i in 0..n {
                    for j in 0..n {
                        let g = da[i * n + j];
                        for d in 0..hs {
                            let kj = x[j * 3 * c + ko + d];
                            let qi = x[i * 3 * c + qo + d];
                            dx[i * 3 * c + qo + d] += g * kj;
                            dx[j * 3 * c + ko + d] += g * qi;
                        }
                    }
                }
            }
        });
}
