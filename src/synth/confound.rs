//! The confounders of a synthetic well that a per-well, per-channel affine normalisation cannot undo, and
//! that a single crop shows: focus and point spread, staining non-linearity, background texture and debris,
//! local cell density, and channel bleed-through. Their strength is one knob, [`SynthConfig::confound`]:
//! every amplitude below is multiplied by it (0 = none of them, 1 = the ranges documented on
//! [`WellConfound`], larger = stronger, up to [`MAX_CONFOUND`]).
//!
//! Key decision: point spread, focus, staining and density are the sum of a plate part (stream
//! `[5, plate]`) and a larger well part (stream `[6, plate, well]`), background, debris and bleed-through
//! are per well, so wells of one plate differ from each other as well as plates from plates;
//! the per-tile parts (background waves, debris) come from the tile's own stream, drawn only when their
//! amplitude is non-zero, so `confound = 0` renders as the generator did before these confounders existed.
use super::{SynthConfig, CHANNELS, DOMAIN_SYNTH};
use crate::data::rng::stream;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde::Serialize;
use std::f32::consts::PI;

/// The largest accepted [`SynthConfig::confound`].
pub const MAX_CONFOUND: f32 = 4.0;

/// Channel pairs (from, to) that leak: DNA → damage, actin → tubulin.
const BLEED_PAIRS: [(usize, usize); 2] = [(0, 1), (2, 3)];

/// A fraction of one channel's light recorded in another.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bleed {
    pub from: String,
    pub to: String,
    /// canvas[to] += fraction · canvas[from].
    pub fraction: f32,
}

/// Per-well confounders beyond gain, offset, isotropic blur, noise and illumination. Ranges are at
/// `confound = 1`; lengths in pixels scale with `nucleus_radius / 6` (so the demo's numbers read as is).
#[derive(Clone, Debug, Serialize)]
pub struct WellConfound {
    /// Anisotropic point spread: Gaussian sigmas (px) along the axis at `psf_angle` and across it: major
    /// 0.2–1.8 (plate 0.2–0.6 + well 0–1.2), minor 0.35–1 × major. Combined with `blur_sigma`.
    pub psf_sigma: [f32; 2],
    /// Angle of the major axis from the column (x) axis towards the row (y) axis, radians in [0, π).
    pub psf_angle: f32,
    /// Per channel: extra isotropic defocus sigma (px), 0–1.2 (plate 0–0.3 + well 0–0.9): chromatic focus.
    pub focus_offset: Vec<f32>,
    /// Per channel staining non-linearity, applied to the canvas before everything else: v ↦ v^gamma,
    /// gamma 0.70–1.43 (log: plate ±0.1 + well ±0.26) …
    pub gamma: Vec<f32>,
    /// … then the soft clip v ↦ v·(1 + s)/(1 + s·v) with s = saturation 0–1 (plate 0–0.2 + well 0–0.8),
    /// which keeps v = 1 at 1.
    pub saturation: Vec<f32>,
    /// Per channel amplitude (canvas units, where a nucleus is about 1) of a smooth background field in
    /// [0, amplitude] that changes from tile to tile: 0.008–0.25.
    pub background: Vec<f32>,
    /// Wavelength of the background field's waves (px): 18–72 (each wave 0.6–1.6 × this).
    pub background_scale: f32,
    /// Debris specks per (100 · nucleus_radius / 6 px)², 0–3; each speck a Gaussian blob (sigma 0.6–2 px,
    /// elongation 1–1.5, peak 0.6–2) …
    pub debris_rate: f32,
    /// … drawn with this brightness per channel (0: not in that channel; about half the channels, ≥ 1).
    pub debris: Vec<f32>,
    /// Local cell density ρ, 0.61–1.65 (log: plate ±0.1 + well ±0.4): grid spacing ÷ √ρ (more cells per
    /// tile), cell and nucleus size × ρ^−0.4, body elongation × ρ^0.6 and nucleus elongation × ρ^0.4.
    pub density: f32,
    /// Bleed-through fractions, 0–0.15 each: DNA → damage, actin → tubulin.
    pub bleed: Vec<Bleed>,
}

impl WellConfound {
    /// Draw the confounders of well `w` of plate `p`.
    pub(super) fn sample(cfg: &SynthConfig, p: usize, w: usize) -> WellConfound {
        let k = cfg.confound;
        let sr = cfg.nucleus_radius / 6.0;
        let nc = CHANNELS.len();
        let mut pr = stream(cfg.seed, DOMAIN_SYNTH, &[5, p as u64]);
        let plate_psf = pr.random_range(0.2..0.6f32);
        let plate_focus: Vec<f32> = (0..nc).map(|_| pr.random_range(0.0..0.3f32)).collect();
        let plate_gamma: Vec<f32> = (0..nc).map(|_| pr.random_range(-0.1..0.1f32)).collect();
        let plate_sat: Vec<f32> = (0..nc).map(|_| pr.random_range(0.0..0.2f32)).collect();
        let plate_density = pr.random_range(-0.1..0.1f32);
        let mut r = stream(cfg.seed, DOMAIN_SYNTH, &[6, p as u64, w as u64]);
        let major = k * sr * (plate_psf + r.random_range(0.0..1.2f32));
        let minor = major * r.random_range(0.35..1.0f32);
        let psf_angle = r.random_range(0.0..PI);
        let focus_offset = plate_focus
            .iter()
            .map(|f| k * sr * (f + r.random_range(0.0..0.9f32)))
            .collect();
        let gamma = plate_gamma
            .iter()
            .map(|g| (k * (g + r.random_range(-0.26..0.26f32))).exp())
            .collect();
        let saturation = plate_sat
            .iter()
            .map(|s| k * (s + r.random_range(0.0..0.8f32)))
            .collect();
        let amp = r.random_range(0.02..0.25f32);
        let background = (0..nc)
            .map(|_| k * amp * r.random_range(0.4..1.0f32))
            .collect();
        let background_scale = sr * r.random_range(18.0..72.0f32);
        let debris_rate = k * r.random_range(0.0..3.0f32);
        let mut debris: Vec<f32> = (0..nc)
            .map(|_| {
                if r.random::<f32>() < 0.5 {
                    r.random_range(0.5..1.0f32)
                } else {
                    0.0
                }
            })
            .collect();
        if debris.iter().all(|&b| b == 0.0) {
            let c = r.random_range(0..nc);
            debris[c] = r.random_range(0.5..1.0f32);
        }
        let density = (k * (plate_density + r.random_range(-0.4..0.4f32))).exp();
        let bleed = BLEED_PAIRS
            .iter()
            .map(|&(a, b)| Bleed {
                from: CHANNELS[a].into(),
                to: CHANNELS[b].into(),
                fraction: k * r.random_range(0.0..0.15f32),
            })
            .collect();
        WellConfound {
            psf_sigma: [major, minor],
            psf_angle,
            focus_offset,
            gamma,
            saturation,
            background,
            background_scale,
            debris_rate,
            debris,
            density,
            bleed,
        }
    }

    /// Covariance (sxx, syy, sxy) in px² of the point spread of channel `c`, with `iso` (px²) added to
    /// both axes; None when the well has no point-spread confounder in that channel.
    pub(super) fn psf_cov(&self, c: usize, iso: f32) -> Option<(f32, f32, f32)> {
        let [su, sv] = self.psf_sigma;
        let f = self.focus_offset.get(c).copied().unwrap_or(0.0);
        if su == 0.0 && sv == 0.0 && f == 0.0 {
            return None;
        }
        let (s, co) = self.psf_angle.sin_cos();
        let (u2, v2) = (su * su, sv * sv);
        let iso = iso + f * f;
        Some((
            u2 * co * co + v2 * s * s + iso,
            u2 * s * s + v2 * co * co + iso,
            (u2 - v2) * s * co,
        ))
    }
}

/// Staining non-linearity of one channel's canvas (T·T): v ↦ v^gamma, then v ↦ v·(1 + s)/(1 + s·v).
pub(super) fn stain(plane: &mut [f32], gamma: f32, sat: f32) {
    if gamma == 1.0 && sat == 0.0 {
        return;
    }
    for v in plane.iter_mut() {
        let g = v.max(0.0).powf(gamma);
        *v = g * (1.0 + sat) / (1.0 + sat * g);
    }
}

/// Plane waves in a tile's background field: enough for an isotropic-looking texture, not a grating.
const WAVES: usize = 8;

/// Add the tile's smooth background field ([`WAVES`] random plane waves of the well's wavelength, values in
/// [0, 1] scaled by the channel's amplitude) to the canvas (4, T·T); draws from `rng` only when the well
/// has a background.
pub(super) fn add_background(
    canvas: &mut [Vec<f32>],
    t: usize,
    wc: &WellConfound,
    rng: &mut ChaCha8Rng,
) {
    if wc.background.iter().all(|&a| a == 0.0) {
        return;
    }
    // cos(kx·x + ky·y + φ) = cos(kx·x + φ)·cos(ky·y) − sin(kx·x + φ)·sin(ky·y): per wave, a row and a column
    // table instead of a cosine per pixel.
    let waves: Vec<[Vec<f32>; 4]> = (0..WAVES)
        .map(|_| {
            let dir = rng.random_range(0.0..2.0 * PI);
            let lambda = wc.background_scale * rng.random_range(0.6..1.6f32);
            let phase = rng.random_range(0.0..2.0 * PI);
            let (kx, ky) = (2.0 * PI / lambda * dir.cos(), 2.0 * PI / lambda * dir.sin());
            let col = |f: fn(f32) -> f32, k: f32, ph: f32| -> Vec<f32> {
                (0..t).map(|i| f(k * i as f32 + ph)).collect()
            };
            [
                col(f32::cos, kx, phase),
                col(f32::sin, kx, phase),
                col(f32::cos, ky, 0.0),
                col(f32::sin, ky, 0.0),
            ]
        })
        .collect();
    let mut field = vec![0.5f32; t * t];
    for [cx, sx, cy, sy] in &waves {
        for y in 0..t {
            let row = &mut field[y * t..(y + 1) * t];
            for (x, f) in row.iter_mut().enumerate() {
                *f += (cx[x] * cy[y] - sx[x] * sy[y]) / (2 * WAVES) as f32;
            }
        }
    }
    for (plane, &a) in canvas.iter_mut().zip(&wc.background) {
        if a != 0.0 {
            for (v, f) in plane.iter_mut().zip(&field) {
                *v += a * f;
            }
        }
    }
}

/// Add the tile's debris specks to the canvas (4, T·T); `sr` = nucleus_radius / 6. Draws from `rng` only
/// when the well has debris.
pub(super) fn add_debris(
    canvas: &mut [Vec<f32>],
    t: usize,
    wc: &WellConfound,
    sr: f32,
    rng: &mut ChaCha8Rng,
) {
    let rate = f64::from(wc.debris_rate) * (t * t) as f64 / (1e4 * f64::from(sr * sr));
    let Ok(pois) = Poisson::new(rate) else {
        return; // rate 0: no debris
    };
    let n = pois.sample(rng) as usize;
    for _ in 0..n {
        let (cy, cx) = (
            rng.random_range(0.0..t as f32),
            rng.random_range(0.0..t as f32),
        );
        let sigma = sr * rng.random_range(0.6..2.0f32);
        let elong = rng.random_range(1.0..1.5f32);
        let (sa, sb) = (sigma * elong.sqrt(), sigma / elong.sqrt());
        let (s, c) = rng.random_range(0.0..PI).sin_cos();
        let peak = rng.random_range(0.6..2.0f32);
        let reach = (3.0 * sa).ceil() as i64;
        let (iy, ix) = (cy.round() as i64, cx.round() as i64);
        for y in (iy - reach).max(0)..(iy + reach + 1).min(t as i64) {
            for x in (ix - reach).max(0)..(ix + reach + 1).min(t as i64) {
                let (dy, dx) = (y as f32 - cy, x as f32 - cx);
                let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
                let g = peak * (-0.5 * ((u / sa).powi(2) + (v / sb).powi(2))).exp();
                let q = y as usize * t + x as usize;
                for (plane, &b) in canvas.iter_mut().zip(&wc.debris) {
                    if b != 0.0 {
                        plane[q] += b * g;
                    }
                }
            }
        }
    }
}

/// Channel bleed-through on the canvas (4, T·T): canvas[to] += fraction · canvas[from] (pairs disjoint).
pub(super) fn bleed(canvas: &mut [Vec<f32>], wc: &WellConfound) {
    for b in &wc.bleed {
        let (Some(from), Some(to)) = (
            CHANNELS.iter().position(|&c| c == b.from),
            CHANNELS.iter().position(|&c| c == b.to),
        ) else {
            continue;
        };
        if b.fraction == 0.0 || from == to {
            continue;
        }
        let src = canvas[from].clone();
        for (v, s) in canvas[to].iter_mut().zip(&src) {
            *v += b.fraction * s;
        }
    }
}

/// Normalised sampled Gaussian of variance `var` (px²): (radius, taps −radius..=radius).
fn kernel(var: f32) -> (i64, Vec<f32>) {
    let r = (3.0 * var.sqrt()).ceil() as i64;
    let k: Vec<f32> = (-r..=r)
        .map(|d| (-((d * d) as f32) / (2.0 * var)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    (r, k.into_iter().map(|w| w / sum).collect())
}

/// Gaussian blur of the (T, T) image `img` with covariance [[sxx, sxy], [sxy, syy]] (px²; x = column,
/// y = row), in two 1-D passes (Geusebroek, Smeulders & van de Weijer 2003): along rows with variance
/// sxx − sxy²/syy, then along the sheared direction (sxy/syy, 1) with variance syy in y, linearly
/// interpolated in x. Edges are clamped; a pass with variance under 0.01 px² is skipped.
pub(super) fn aniso_blur(img: &mut [f32], t: usize, sxx: f32, syy: f32, sxy: f32) {
    let ti = t as i64;
    let (vx, slope) = if syy > 0.01 {
        ((sxx - sxy * sxy / syy).max(0.0), sxy / syy)
    } else {
        (sxx, 0.0)
    };
    let mut tmp = vec![0f32; t * t];
    if vx > 0.01 {
        let (r, k) = kernel(vx);
        for y in 0..t {
            let row = &img[y * t..(y + 1) * t];
            for x in 0..t {
                tmp[y * t + x] = (-r..=r)
                    .map(|d| k[(d + r) as usize] * row[(x as i64 + d).clamp(0, ti - 1) as usize])
                    .sum();
            }
        }
    } else {
        tmp.copy_from_slice(img);
    }
    if syy <= 0.01 {
        img.copy_from_slice(&tmp);
        return;
    }
    let (r, k) = kernel(syy);
    for y in 0..t {
        for x in 0..t {
            let mut acc = 0f32;
            for d in -r..=r {
                let row = &tmp[(y as i64 + d).clamp(0, ti - 1) as usize * t..][..t];
                let xf = x as f32 + slope * d as f32;
                let x0 = xf.floor();
                let fr = xf - x0;
                let x0 = x0 as i64;
                let a = row[x0.clamp(0, ti - 1) as usize];
                let b = row[(x0 + 1).clamp(0, ti - 1) as usize];
                acc += k[(d + r) as usize] * (a + fr * (b - a));
            }
            img[y * t + x] = acc;
        }
    }
}
