//! Flat-field (illumination) correction per (plate, channel): every tile is divided by a field of mean 1.
//!
//! Estimator for `--illum auto`: the pixel-wise mean of the plate's raw tiles, smoothed by three passes of
//! a separable box filter of radius r = max(1, min(H, W)/16) with edge clamping (≈ a Gaussian of
//! σ ≈ r·√2, wide enough to average over cells and keep only the optics' slow vignetting), divided by its
//! mean, and floored at 1e-3 so no pixel is divided by ~0. `DIR` reads `<plate>_<channel>.tif` (float or
//! integer) and also rescales it to mean 1; the scale does not matter because the percentile clip that
//! follows is scale-invariant.
use super::tiff::read_pages;
use anyhow::{bail, Result};
use std::path::Path;

/// Minimum of a normalised field.
pub const FIELD_FLOOR: f32 = 1e-3;

/// One pass of a box filter of radius `r` along rows (stride 1) or columns, with clamped edges: a running
/// sum over a line padded by r copies of its end values.
fn box_pass(src: &[f64], dst: &mut [f64], h: usize, w: usize, r: usize, along_rows: bool) {
    let (n, lines, step, line_step) = if along_rows {
        (w, h, 1, w)
    } else {
        (h, w, w, 1)
    };
    let norm = 1.0 / (2 * r + 1) as f64;
    let mut line = vec![0f64; n + 2 * r + 1];
    for l in 0..lines {
        let base = l * line_step;
        for (q, v) in line.iter_mut().enumerate() {
            let k = q.saturating_sub(r).min(n - 1);
            *v = src[base + k * step];
        }
        // line[q] holds src[clamp(q − r)], so the window of output k is line[k ..= k + 2r].
        let mut acc: f64 = line[..2 * r + 1].iter().sum();
        for k in 0..n {
            dst[base + k * step] = acc * norm;
            acc += line[k + 2 * r + 1] - line[k];
        }
    }
}

/// Smooth a mean image (h×w) and normalise it to mean 1 (see the module docs).
pub fn field_from_mean(mean: &[f64], h: usize, w: usize) -> Result<Vec<f32>> {
    let r = (h.min(w) / 16).max(1);
    let mut a = mean.to_vec();
    let mut b = vec![0f64; a.len()];
    for _ in 0..3 {
        box_pass(&a, &mut b, h, w, r, true);
        box_pass(&b, &mut a, h, w, r, false);
    }
    normalise(a.into_iter().map(|x| x as f32).collect())
}

/// Rescale to mean 1 and floor at [`FIELD_FLOOR`]; an all-zero or negative-mean field is an error.
pub fn normalise(f: Vec<f32>) -> Result<Vec<f32>> {
    let mean = f.iter().map(|&x| x as f64).sum::<f64>() / f.len() as f64;
    if !(mean > 0.0 && mean.is_finite()) {
        bail!("illumination field has mean {mean}; HINT: the tiles of this plate and channel are empty or negative, use --illum none");
    }
    Ok(f.into_iter()
        .map(|x| ((x as f64 / mean) as f32).max(FIELD_FLOOR))
        .collect())
}

/// Read `<dir>/<plate>_<channel>.tif` (one page, h×w, positive) and normalise it to mean 1.
pub fn read_field(dir: &Path, plate: &str, channel: &str, h: usize, w: usize) -> Result<Vec<f32>> {
    let path = dir.join(format!("{plate}_{channel}.tif"));
    let pages = read_pages(&path)?;
    let p = &pages[0];
    if pages.len() != 1 || p.h != h || p.w != w {
        bail!(
            "{}: {} page(s) of {}×{}, expected one page of {h}×{w} (the tile size of plate {plate:?})",
            path.display(),
            pages.len(),
            p.h,
            p.w
        );
    }
    let data = p.data.to_f32();
    if let Some(k) = data.iter().position(|&x| x <= 0.0) {
        bail!("{}: value {} at row {}, column {} is not positive; HINT: an illumination field divides the tile", path.display(), data[k], k / w, k % w);
    }
    normalise(data)
}
