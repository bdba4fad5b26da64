//! Multi-crop augmentation (algorithm.md §5): per cell, 2 global views (D4, zoom, gamma+offset) and L local
//! views (D4, gamma+offset, local crop), each followed by the normaliser, written set-major for the engine.
//!
//! Key decisions: (1) every crop's parameters come from the stream (seed, step, set, cell slot, crop index),
//! crop index v ∈ {0, 1} for globals and 2 + l for locals, so the tensors are independent of thread count;
//! parameters are plain structs the GPU path can draw identically. (2) D4, zoom window and nearest resize
//! compose into one gather index per output pixel; gamma+offset is pointwise, so applying it after the
//! local crop equals the reference's order (full image first). (3) Nearest resize follows cv2.INTER_NEAREST:
//! src = min(⌊dst · (1 / (out/in))⌋, in − 1) in f64. (4) x^γ uses [`super::fastpow`] (within 1e-6 of
//! powf; γ = 1 is exact). (5) `AugmentCompat::Paper` restores the two pre-fix quirks (§5.4): offset
//! ~ U(−0.3, +0.5) and the zoom window always in the bottom-right corner.
use super::fastpow::{exp2_neg, log2_table};
use super::normalize::Normalizer;
use super::rng::{stream, DOMAIN_AUGMENT};
use super::sampler::SetDraw;
use crate::store::Store;
use anyhow::{bail, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Post-fix behaviour (default) or the paper's pre-fix quirks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AugmentCompat {
    #[default]
    Fixed,
    Paper,
}

impl std::str::FromStr for AugmentCompat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fixed" | "none" => Ok(AugmentCompat::Fixed),
            "paper" => Ok(AugmentCompat::Paper),
            _ => bail!("augment compat {s:?}: expected fixed or paper"),
        }
    }
}

/// Augmentation settings; [`AugmentConfig::for_crop`] scales the reference's 96-pixel values.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Output side of global views (the reference: the stored crop side, 96).
    pub global_size: usize,
    /// Output side of local views (48).
    pub local_size: usize,
    /// Local crop indices per set (8): 0..L/2 are made from view 0's cells, L/2..L from view 1's, so each
    /// drawn cell gets one global and L/2 local crops.
    pub n_local: usize,
    /// Zoom scale range, U(lo, hi) (0.9, 1.0).
    pub zoom: (f64, f64),
    /// Gamma (exponent) range, per channel (0.5, 1.5).
    pub gamma: (f64, f64),
    /// Additive offset range, per channel (−0.3, 0.3); the paper quirk widens the top to 0.5.
    pub offset: (f64, f64),
    /// Local crop side as a fraction of the stored crop, per axis (0.4, 0.6).
    pub local_scale: (f64, f64),
    /// Local crop centres lie within ±this many pixels of the crop centre (20 at 96).
    pub local_center: usize,
    pub compat: AugmentCompat,
    pub seed: u64,
}

impl AugmentConfig {
    /// Reference settings for a stored crop of side `crop` (global = crop, local = crop/2).
    pub fn for_crop(crop: usize) -> AugmentConfig {
        AugmentConfig {
            global_size: crop,
            local_size: crop / 2,
            n_local: 8,
            zoom: (0.9, 1.0),
            gamma: (0.5, 1.5),
            offset: (-0.3, 0.3),
            local_scale: (0.4, 0.6),
            local_center: ((20 * crop) as f64 / 96.0).round() as usize,
            compat: AugmentCompat::Fixed,
            seed: 0,
        }
    }
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig::for_crop(96)
    }
}

/// An element of the dihedral group D4, applied as flip rows, flip columns, then rot90 (numpy `k=1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct D4 {
    pub flip_ud: bool,
    pub flip_lr: bool,
    pub rot90: bool,
}

impl D4 {
    fn draw(rng: &mut ChaCha8Rng) -> D4 {
        D4 {
            flip_ud: rng.random_bool(0.5),
            flip_lr: rng.random_bool(0.5),
            rot90: rng.random_bool(0.5),
        }
    }

    /// Source pixel (row, col) of pixel (i, j) of the transformed w×w image.
    #[inline]
    pub fn src(&self, i: usize, j: usize, w: usize) -> (usize, usize) {
        let (mut i, mut j) = (i, j);
        if self.rot90 {
            // np.rot90(k=1, axes=(1, 2)): out[i, j] = in[j, w-1-i]
            (i, j) = (j, w - 1 - i);
        }
        if self.flip_lr {
            j = w - 1 - j;
        }
        if self.flip_ud {
            i = w - 1 - i;
        }
        (i, j)
    }
}

/// Parameters of one crop: D4 element, a window [r0, r0+rows) × [c0, c0+cols) of the transformed image,
/// and per-channel gamma and offset.
#[derive(Clone, Debug, PartialEq)]
pub struct CropParams {
    pub d4: D4,
    pub r0: usize,
    pub rows: usize,
    pub c0: usize,
    pub cols: usize,
    pub gamma: Vec<f32>,
    pub offset: Vec<f32>,
}

fn draw_photometric(
    rng: &mut ChaCha8Rng,
    cfg: &AugmentConfig,
    channels: usize,
) -> (Vec<f32>, Vec<f32>) {
    let hi = match cfg.compat {
        AugmentCompat::Fixed => cfg.offset.1,
        AugmentCompat::Paper => 0.5,
    };
    let mut g = Vec::with_capacity(channels);
    let mut o = Vec::with_capacity(channels);
    for _ in 0..channels {
        g.push(uniform(rng, cfg.gamma) as f32);
        o.push(uniform(rng, (cfg.offset.0, hi)) as f32);
    }
    (g, o)
}

#[inline]
fn uniform(rng: &mut ChaCha8Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

impl CropParams {
    /// Global view (§5.2): D4, zoom side = round_half_even(crop·s), window offset uniform in [0, crop − side]
    /// per axis (paper: crop − side), gamma and offset per channel.
    pub fn draw_global(
        rng: &mut ChaCha8Rng,
        cfg: &AugmentConfig,
        crop: usize,
        channels: usize,
    ) -> CropParams {
        let d4 = D4::draw(rng);
        let s = uniform(rng, cfg.zoom);
        let side = ((crop as f64 * s).round_ties_even() as usize).clamp(1, crop);
        let (r0, c0) = match cfg.compat {
            AugmentCompat::Fixed => (
                rng.random_range(0..=crop - side),
                rng.random_range(0..=crop - side),
            ),
            AugmentCompat::Paper => (crop - side, crop - side),
        };
        let (gamma, offset) = draw_photometric(rng, cfg, channels);
        CropParams {
            d4,
            r0,
            rows: side,
            c0,
            cols: side,
            gamma,
            offset,
        }
    }

    /// Local view (§5.3): D4, gamma and offset per channel, then a window centred at an integer in
    /// [max(0, h/2 − c), min(h, h/2 + c)) per axis with half-sides ⌊⌊s·h⌋ / 2⌋, s ~ U(0.4, 0.6) per axis.
    pub fn draw_local(
        rng: &mut ChaCha8Rng,
        cfg: &AugmentConfig,
        crop: usize,
        channels: usize,
    ) -> CropParams {
        let d4 = D4::draw(rng);
        let (gamma, offset) = draw_photometric(rng, cfg, channels);
        let h = crop;
        let lo = (h / 2).saturating_sub(cfg.local_center);
        let hi = (h / 2 + cfg.local_center).min(h).max(lo + 1);
        let ch = rng.random_range(lo..hi);
        let cw = rng.random_range(lo..hi);
        let sh = uniform(rng, cfg.local_scale);
        let sw = uniform(rng, cfg.local_scale);
        let oh = ((sh * h as f64) as usize / 2).max(1);
        let ow = ((sw * h as f64) as usize / 2).max(1);
        let (r0, r1) = (ch.saturating_sub(oh), (ch + oh).min(h));
        let (c0, c1) = (cw.saturating_sub(ow), (cw + ow).min(h));
        CropParams {
            d4,
            r0,
            rows: r1 - r0,
            c0,
            cols: c1 - c0,
            gamma,
            offset,
        }
    }

    /// Render into out: (C, size, size) in [0, 1] from src: (C, crop, crop) u16 unorm.
    pub fn render(&self, src: &[u16], crop: usize, size: usize, out: &mut [f32]) {
        let plane = crop * crop;
        let map = |n_in: usize, start: usize| -> Vec<usize> {
            let inv = 1.0 / (size as f64 / n_in as f64);
            (0..size)
                .map(|d| start + ((d as f64 * inv).floor() as usize).min(n_in - 1))
                .collect()
        };
        let (rmap, cmap) = (map(self.rows, self.r0), map(self.cols, self.c0));
        let mut idx = Vec::with_capacity(size * size);
        for &ti in &rmap {
            for &tj in &cmap {
                let (i, j) = self.d4.src(ti, tj, crop);
                idx.push(i * crop + j);
            }
        }
        let table = log2_table();
        let mut logs = vec![0f32; size * size];
        for (c, o) in out.chunks_mut(size * size).enumerate() {
            let s = &src[c * plane..(c + 1) * plane];
            let (g, off) = (self.gamma[c], self.offset[c]);
            if g == 1.0 {
                // Exact identity (v / 65535), as for an un-augmented crop.
                for (o, &k) in o.iter_mut().zip(&idx) {
                    *o = (s[k] as f32 / 65535.0 + off).clamp(0.0, 1.0);
                }
            } else {
                // Gather first (scalar), then a branch-free loop the compiler vectorises.
                for (l, &k) in logs.iter_mut().zip(&idx) {
                    *l = table[s[k] as usize];
                }
                for (o, &l) in o.iter_mut().zip(&logs) {
                    *o = (exp2_neg(g * l) + off).clamp(0.0, 1.0);
                }
            }
        }
    }
}

/// Crop index of global view `v` (0, 1) and of local view `l` (2 + l) in the random-stream key.
pub fn crop_index_global(v: usize) -> u64 {
    v as u64
}
pub fn crop_index_local(l: usize) -> u64 {
    2 + l as u64
}

/// The parameters of one crop, from its key alone.
pub fn crop_params(
    cfg: &AugmentConfig,
    crop: usize,
    channels: usize,
    step: u64,
    set: usize,
    slot: usize,
    crop_index: u64,
) -> CropParams {
    let mut rng = stream(
        cfg.seed,
        DOMAIN_AUGMENT,
        &[step, set as u64, slot as u64, crop_index],
    );
    if crop_index < 2 {
        CropParams::draw_global(&mut rng, cfg, crop, channels)
    } else {
        CropParams::draw_local(&mut rng, cfg, crop, channels)
    }
}

/// The tensors of one training step, set-major: row r = s·n + k is cell k of set s.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepCrops {
    /// (2, R, C, G, G)
    pub global: Vec<f32>,
    /// (L, R, C, Lc, Lc); locals 0..L/2 from view 0's cells, L/2..L from view 1's.
    pub local: Vec<f32>,
    pub sets: usize,
    pub set_size: usize,
    pub channels: usize,
    pub global_size: usize,
    pub local_size: usize,
    pub n_local: usize,
}

impl StepCrops {
    /// R = sets · set size.
    pub fn rows(&self) -> usize {
        self.sets * self.set_size
    }
}

/// Augment and normalise the cells of `draws` (one step) into set-major global and local tensors.
pub fn make_step(
    store: &Store,
    draws: &[SetDraw],
    cfg: &AugmentConfig,
    norm: &Normalizer,
    step: u64,
) -> Result<StepCrops> {
    let mut out = StepCrops::default();
    make_step_into(store, draws, cfg, norm, step, &mut out)?;
    Ok(out)
}

/// [`make_step`] into existing buffers (no allocation once they have reached their size; a step of the
/// reference run is 2 × 151 MB of f32, so reuse matters).
pub fn make_step_into(
    store: &Store,
    draws: &[SetDraw],
    cfg: &AugmentConfig,
    norm: &Normalizer,
    step: u64,
    out: &mut StepCrops,
) -> Result<()> {
    make_step_part_into(store, draws, 0, cfg, norm, step, out)
}

/// [`make_step_into`] for a part of a step: `draws` are the step's sets `first_set …`, and each crop's
/// random stream is keyed by its set's index in the whole step, so a data-parallel rank renders exactly
/// the crops one process would for those sets.
pub fn make_step_part_into(
    store: &Store,
    draws: &[SetDraw],
    first_set: usize,
    cfg: &AugmentConfig,
    norm: &Normalizer,
    step: u64,
    out: &mut StepCrops,
) -> Result<()> {
    let (n, _) = check_step(store, draws, cfg, norm)?;
    let (c, crop) = (store.channels(), store.crop());
    let (g, lsz, nl) = (cfg.global_size, cfg.local_size, cfg.n_local);
    let r = draws.len() * n;
    out.global.resize(2 * r * c * g * g, 0.0);
    out.local.resize(nl * r * c * lsz * lsz, 0.0);
    let unit =
        |view: usize, row: usize, crop_index: u64, size: usize, o: &mut [f32]| -> Result<()> {
            let (s, k) = (row / n, row % n);
            let cell = draws[s].cells[view][k] as usize;
            let p = crop_params(cfg, crop, c, step, first_set + s, k, crop_index);
            p.render(store.crop_u16_unchecked(cell), crop, size, o);
            norm.apply(store.record(cell).batch, o, c)
        };
    out.global
        .par_chunks_mut(c * g * g)
        .enumerate()
        .try_for_each(|(u, o)| {
            let (v, row) = (u / r, u % r);
            unit(v, row, crop_index_global(v), g, o)
        })?;
    out.local
        .par_chunks_mut(c * lsz * lsz)
        .enumerate()
        .try_for_each(|(u, o)| {
            let (l, row) = (u / r, u % r);
            unit(l / (nl / 2).max(1), row, crop_index_local(l), lsz, o)
        })?;
    (
        out.sets,
        out.set_size,
        out.channels,
        out.global_size,
        out.local_size,
        out.n_local,
    ) = (draws.len(), n, c, g, lsz, nl);
    Ok(())
}

/// Checks one step's draws before rendering: every set has n cells in both views, an even number of
/// local crops, normaliser statistics for every batch, and each distinct cell's crop checksum (once: a cell
/// feeds 1 global and L/2 local crops). Returns n and the distinct cells, sorted.
pub fn check_step(
    store: &Store,
    draws: &[SetDraw],
    cfg: &AugmentConfig,
    norm: &Normalizer,
) -> Result<(usize, Vec<u32>)> {
    let n = draws.first().map_or(0, |d| d.cells[0].len());
    if draws
        .iter()
        .any(|d| d.cells[0].len() != n || d.cells[1].len() != n)
    {
        bail!("make_step: every set needs the same number of cells in both views");
    }
    if !cfg.n_local.is_multiple_of(2) {
        bail!(
            "the number of local crops must be even (half per view), got {}",
            cfg.n_local
        );
    }
    norm.check_batches(draws.iter().flat_map(|d| d.batches))?;
    let mut distinct: Vec<u32> = draws
        .iter()
        .flat_map(|d| d.cells.iter().flatten().copied())
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
        .par_iter()
        .try_for_each(|&k| store.check_crop(k as usize))?;
    Ok((n, distinct))
}

/// The un-augmented, normalised crop of cell `k` (for embedding). out: (C, crop, crop)
pub fn plain_crop(store: &Store, k: usize, norm: &Normalizer, out: &mut [f32]) -> Result<()> {
    store.crop_f32(k, out)?;
    norm.apply(store.record(k).batch, out, store.channels())
}

/// The un-augmented, normalised crop of cell `k` resized to `size` × `size` the way training renders a
/// global view at zoom 1 (the whole crop, nearest resize, no D4, no gamma or offset), so a model embeds
/// cells at the scale it was trained on. `size` = the crop side gives [`plain_crop`] exactly.
/// out: (C, size, size)
pub fn plain_view(
    store: &Store,
    k: usize,
    norm: &Normalizer,
    size: usize,
    out: &mut [f32],
) -> Result<()> {
    let (crop, c) = (store.crop(), store.channels());
    if size == crop {
        return plain_crop(store, k, norm, out);
    }
    let whole = CropParams {
        d4: D4 {
            flip_ud: false,
            flip_lr: false,
            rot90: false,
        },
        r0: 0,
        rows: crop,
        c0: 0,
        cols: crop,
        gamma: vec![1.0; c],
        offset: vec![0.0; c],
    };
    whole.render(store.crop_u16(k)?, crop, size, out);
    norm.apply(store.record(k).batch, out, c)
}
