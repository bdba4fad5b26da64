//! CPU twin of `kernels/koleo.cu`: the KoLeo regulariser of DINOv2 (Sablayrolles et al. 2019, "Spreading
//! vectors for similarity search"), −(w/N)·Σᵢ log(‖ŷᵢ − ŷ_nn(i)‖ + eps) over the L2-normalised student
//! CLS tokens ŷ of each global view, where nn(i) is the row of the same group with the largest cosine
//! similarity. It pushes every cell away from its nearest neighbour within the step, so the
//! representation cannot collapse to one point even when the DINO teacher has only a few rows to centre.
//!
//! Rows are grouped: G groups of R consecutive rows (one group per global view); a row's neighbour is
//! searched in its own group only. The nearest-neighbour index is stored as a float (exact below 2²⁴).
use super::Real;
use rayon::prelude::*;

/// Per row: nn (the index within the group of the row, other than itself, with the largest ŷᵢ·ŷⱼ; ties
/// go to the lower index) and dist = ‖ŷᵢ − ŷ_nn‖₂. y: (G·R, C) L2-normalised rows.
pub fn koleo_forward<T: Real>(nn: &mut [T], dist: &mut [T], y: &[T], g: usize, r: usize, c: usize) {
    nn[..g * r]
        .par_iter_mut()
        .zip(dist[..g * r].par_iter_mut())
        .enumerate()
        .for_each(|(row, (nn_out, d_out))| {
            let base = (row / r) * r;
            let yi = &y[row * c..(row + 1) * c];
            let mut best = T::neg_infinity();
            let mut arg = if row == base { base + 1 } else { base };
            for j in base..base + r {
                if j == row {
                    continue;
                }
                let yj = &y[j * c..(j + 1) * c];
                let s: T = yi.iter().zip(yj).map(|(&a, &b)| a * b).sum();
                if s > best {
                    best = s;
                    arg = j;
                }
            }
            let yj = &y[arg * c..(arg + 1) * c];
            let d2: T = yi.iter().zip(yj).map(|(&a, &b)| (a - b) * (a - b)).sum();
            *nn_out = T::c((arg - base) as f64);
            *d_out = d2.sqrt();
        });
}

/// coefficient of (ŷᵢ − ŷ_nn(i)) in ∂loss/∂ŷᵢ: −(w/N) / ((d + eps)·max(d, eps)).
fn coef<T: Real>(d: T, scale: T, eps: T) -> T {
    -scale / ((d + eps) * d.max(eps))
}

/// loss (=, 1 value) = −(w/N)·Σᵢ log(distᵢ + eps), summed in row order, N = G·R; dinp (+=): the
/// gradient with respect to the un-normalised rows x (ŷ = x/‖x‖, `norm` = ‖x‖ from `l2norm_forward`):
/// for row a, gₐ = cₐ(ŷₐ − ŷ_nn(a)) − Σ_{i: nn(i)=a} cᵢ(ŷᵢ − ŷₐ) (i ascending), then
/// dinpₐ += (gₐ − ŷₐ(ŷₐ·gₐ)) / max(‖xₐ‖, eps).
pub fn koleo_backward<T: Real>(
    dinp: &mut [T],
    loss: &mut [T],
    nn: &[T],
    dist: &[T],
    y: &[T],
    norm: &[T],
    g: usize,
    r: usize,
    c: usize,
    weight: T,
    eps: T,
) {
    let n = g * r;
    let scale = weight / T::c(n as f64);
    let mut acc = T::zero();
    for &d in &dist[..n] {
        acc += (d + eps).ln();
    }
    loss[0] = -scale * acc;
    dinp[..n * c]
        .par_chunks_mut(c)
        .enumerate()
        .for_each(|(a, dx)| {
            let base = (a / r) * r;
            let ya = &y[a * c..(a + 1) * c];
            let mut gr = vec![T::zero(); c];
            let own = base + nn[a].to_usize().unwrap_or(0);
            let ca = coef(dist[a], scale, eps);
            let yo = &y[own * c..(own + 1) * c];
            for k in 0..c {
                gr[k] = ca * (ya[k] - yo[k]);
            }
            for i in base..base + r {
                if i == a || base + nn[i].to_usize().unwrap_or(0) != a {
                    continue;
                }
                let ci = coef(dist[i], scale, eps);
                let yi = &y[i * c..(i + 1) * c];
                for k in 0..c {
                    gr[k] -= ci * (yi[k] - ya[k]);
                }
            }
            let dot: T = ya.iter().zip(&gr).map(|(&p, &q)| p * q).sum();
            let den = norm[a].max(eps);
            for k in 0..c {
                dx[k] += (gr[k] - ya[k] * dot) / den;
            }
        });
}
