//! CPU twin of `kernels/augment.cu`: render augmented crops from raw crops and per-crop parameters, and
//! the NTC and per-image z-score normalisers, on backend buffers. (The data path's own renderer,
//! `data::augment::CropParams::render`, is the production CPU path; tests/parity/augment.rs ties the
//! two together.)
use super::Real;
use rayon::prelude::*;

/// cv2.INTER_NEAREST source index: min(⌊d · (1 / (out / in))⌋, in − 1), in f64.
fn nearest(d: usize, size: usize, n_in: usize) -> usize {
    let inv = 1.0 / (size as f64 / n_in as f64);
    ((d as f64 * inv).floor() as usize).min(n_in - 1)
}

/// out: (n, C, size, size); src: (cells, C, crop, crop) raw values 0 … 65535; params: (n, 8 + 2C).
pub fn augment_render<T: Real>(
    out: &mut [T],
    src: &[T],
    params: &[T],
    n: usize,
    c: usize,
    crop: usize,
    size: usize,
) {
    let pl = 8 + 2 * c;
    out[..n * c * size * size]
        .par_chunks_mut(c * size * size)
        .enumerate()
        .for_each(|(k, o)| {
            let p: Vec<f64> = params[k * pl..(k + 1) * pl].iter().map(|x| x.d()).collect();
            let (ud, lr, rot) = (p[0] != 0.0, p[1] != 0.0, p[2] != 0.0);
            let (r0, rows, c0, cols, cell) = (
                p[3] as usize,
                p[4] as usize,
                p[5] as usize,
                p[6] as usize,
                p[7] as usize,
            );
            for ch in 0..c {
                let (gamma, offset) = (T::c(p[8 + ch]), T::c(p[8 + c + ch]));
                for y in 0..size {
                    for x in 0..size {
                        let (mut ti, mut tj) =
                            (r0 + nearest(y, size, rows), c0 + nearest(x, size, cols));
                        if rot {
                            (ti, tj) = (tj, crop - 1 - ti);
                        }
                        if lr {
                            tj = crop - 1 - tj;
                        }
                        if ud {
                            ti = crop - 1 - ti;
                        }
                        let v = src[((cell * c + ch) * crop + ti) * crop + tj] / T::c(65535.0);
                        let g = if gamma == T::one() { v } else { v.powf(gamma) };
                        o[(ch * size + y) * size + x] = (g + offset).max(T::zero()).min(T::one());
                    }
                }
            }
        });
}

/// x (in place): (n, C, HW) = (x − mean)·inv; stats: (n, C, 2).
pub fn augment_normalize_ntc<T: Real>(x: &mut [T], stats: &[T], n: usize, c: usize, hw: usize) {
    x[..n * c * hw]
        .par_chunks_mut(hw)
        .enumerate()
        .for_each(|(kc, v)| {
            let (m, inv) = (stats[2 * kc], stats[2 * kc + 1]);
            v.iter_mut().for_each(|a| *a = (*a - m) * inv);
        });
}

/// x (in place): per (crop, channel) (x − mean)/(std + 1e-6), population std.
pub fn augment_normalize_zscore<T: Real>(x: &mut [T], n: usize, c: usize, hw: usize) {
    x[..n * c * hw].par_chunks_mut(hw).for_each(|v| {
        let nn = T::c(hw as f64);
        let mean = v.iter().copied().sum::<T>() / nn;
        let var = v.iter().map(|&a| (a - mean) * (a - mean)).sum::<T>() / nn;
        let inv = T::one() / (var.sqrt() + T::c(1e-6));
        v.iter_mut().for_each(|a| *a = (*a - mean) * inv);
    });
}
