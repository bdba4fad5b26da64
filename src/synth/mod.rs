//! `setdino synth`: a synthetic optical pooled screen with known ground truth, written as a real screen is
//! (multi-page 16-bit TIFF tiles, tiles.csv, cells.csv) plus complexes.tsv (clusters format), truth.json
//! (genes: complex, effect, guide efficiencies; wells: every confounder) and cells_truth.csv (per cell:
//! perturbed or escaper, cell-cycle phase).
//!
//! Cells have four channels: DNA (nucleus with size, shape and chromatin texture), DNA damage (foci),
//! F-actin (cortex ring and stress fibres) and tubulin (a radial network). Each cell has an 8-d phenotype
//! (nucleus size, elongation, DNA level, foci rate, cortex, fibres, tubulin extent, tubulin level). Genes in
//! one complex share an effect direction, scaled per gene; guides have an efficiency, and a cell escapes
//! its perturbation with probability 1 − efficiency; cells are in G1, G2 or M. A complex's direction has 3
//! of the 8 dimensions, drawn by weight: the morphological ones (nucleus size and elongation, foci rate,
//! actin cortex and fibres, tubulin extent) weigh 1, the pure-intensity ones (DNA and tubulin level) 0.1,
//! and an intensity component, when drawn, is halved: gene effects are mostly morphological, which the
//! per-well intensity normalisation does not erase.
//!
//! Confounders, larger than the gene effects on raw intensities; every one is recorded per well in
//! truth.json ([`WellTruth`]):
//! - undone by ingest's flat-field and percentile scaling and per-well normalisation (an affine map per
//!   well and channel): plate illumination field, per-well and plate gain and offset, noise;
//! - not undone by an affine map, each visible in a crop and drawn per well (some with a smaller plate part),
//!   so wells of one plate differ (module [`confound`], ranges on [`WellConfound`]): isotropic blur
//!   (`blur_sigma`) plus anisotropic, rotated point spread and a per-channel (chromatic) focus offset;
//!   staining non-linearity (per channel gamma, then a soft saturation); a smooth background field and
//!   debris specks in some channels; local cell density (more, smaller, more elongated cells in crowded
//!   wells; fewer, larger, rounder ones in sparse wells); bleed-through DNA → damage and actin → tubulin.
//!
//! Their strength is one knob, [`SynthConfig::confound`] (`synth --confound`): 0 = none of the second
//! group but `blur_sigma` (tiles rendered as before they existed), 1 = the default, larger = stronger. A
//! tile is rendered as:
//! cells → staining non-linearity → background and debris → bleed-through → point spread → illumination ×
//! gain + offset + noise → 16-bit quantisation.
//!
//! Key decision: every tile is rendered from its own counter-based random stream (background waves and
//! debris included), so the output is identical for a seed whatever the thread count.
use crate::data::rng::stream;
use crate::ingest::tiff::{write_u16, TiffCompression};
use crate::util::atomic::{write_atomic, TempFile};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};
use rayon::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

pub mod confound;
pub use confound::{Bleed, WellConfound, MAX_CONFOUND};

const DOMAIN_SYNTH: u64 = 0x53594e54;
/// Phenotype dimensions.
pub const PHENO: [&str; 8] = [
    "nucleus_size",
    "nucleus_elongation",
    "dna_level",
    "foci_rate",
    "actin_cortex",
    "actin_fibres",
    "tubulin_extent",
    "tubulin_level",
];
/// Channel names, in page order.
pub const CHANNELS: [&str; 4] = ["dna", "damage", "actin", "tubulin"];

/// Size and shape of a synthetic screen.
#[derive(Clone, Debug, Serialize)]
pub struct SynthConfig {
    pub preset: String,
    pub plates: usize,
    pub wells: usize,
    /// Genes in complexes: complexes × genes_per_complex; plus `null_genes` with no effect.
    pub complexes: usize,
    pub genes_per_complex: usize,
    pub null_genes: usize,
    pub guides_per_gene: usize,
    pub ntc_guides: usize,
    /// Cells per guide per well (NTC guides get twice as many).
    pub cells_per_guide: usize,
    pub tile: usize,
    /// Nucleus radius in pixels; the cell body is about 2.2× larger.
    pub nucleus_radius: f32,
    /// The crop side this scale is designed for (recommended `ingest --crop`).
    pub crop: usize,
    /// Scale of gene effects (log-space norm of a complex's effect vector).
    pub effect: f32,
    /// Strength of the confounders that per-well affine normalisation cannot undo (point spread and
    /// focus, staining non-linearity, background and debris, cell density, bleed-through; see
    /// [`WellConfound`]): every amplitude is multiplied by it. 0 = none, 1 = the default, larger =
    /// stronger, at most [`MAX_CONFOUND`].
    pub confound: f32,
    pub seed: u64,
}

impl SynthConfig {
    /// `demo` (seconds on 2 cores, crop 48: 16 complexes × 4 genes + 16 null genes, about 10 000 cells, a
    /// recall ceiling of 100 % at the top 5 %), `small` (crop 96, a few minutes), `large` (crop 96, a store
    /// of about 0.7 TB: more than a machine's RAM, for scale tests). All have `confound = 1`.
    pub fn preset(name: &str, seed: u64) -> Result<SynthConfig> {
        let base = SynthConfig {
            preset: name.into(),
            plates: 2,
            wells: 3,
            complexes: 16,
            genes_per_complex: 4,
            null_genes: 16,
            guides_per_gene: 2,
            ntc_guides: 4,
            cells_per_guide: 10,
            tile: 256,
            nucleus_radius: 6.0,
            crop: 48,
            effect: 0.6,
            confound: 1.0,
            seed,
        };
        Ok(match name {
            "demo" => base,
            "small" => SynthConfig {
                plates: 3,
                wells: 4,
                complexes: 12,
                null_genes: 12,
                cells_per_guide: 15,
                tile: 1024,
                nucleus_radius: 12.0,
                crop: 96,
                ..base
            },
            "large" => SynthConfig {
                plates: 8,
                wells: 6,
                complexes: 250,
                null_genes: 200,
                guides_per_gene: 4,
                ntc_guides: 20,
                cells_per_guide: 40,
                tile: 2048,
                nucleus_radius: 12.0,
                crop: 96,
                ..base
            },
            _ => bail!("preset {name:?}: expected demo, small or large"),
        })
    }

    fn n_genes(&self) -> usize {
        self.complexes * self.genes_per_complex + self.null_genes
    }

    /// The highest recall of complex pairs a gene–gene similarity ranking can reach at `top_fraction` of
    /// the null (eval's `recall_top5` at 0.05): min(1, top_fraction · P / C), with P = G(G − 1)/2 pairs of
    /// the G non-NTC genes and C = complexes · k(k − 1)/2 related pairs (k genes per complex). NaN when
    /// there are no related pairs (recall is undefined).
    pub fn recall_ceiling(&self, top_fraction: f64) -> f64 {
        let pairs = |n: usize| (n * n.saturating_sub(1) / 2) as f64;
        let related = self.complexes as f64 * pairs(self.genes_per_complex);
        if related == 0.0 {
            return f64::NAN;
        }
        (top_fraction * pairs(self.n_genes()) / related).min(1.0)
    }
}

/// Per-gene truth.
#[derive(Clone, Debug, Serialize)]
pub struct GeneTruth {
    pub gene: String,
    /// Complex name, or None for null genes.
    pub complex: Option<String>,
    /// Effect in phenotype space (log scale), per [`PHENO`] dimension.
    pub effect: Vec<f32>,
    pub guides: Vec<String>,
    /// Efficiency per guide: the probability that a cell is perturbed.
    pub efficiency: Vec<f32>,
}

/// Per-well confounders.
#[derive(Clone, Debug, Serialize)]
pub struct WellTruth {
    pub plate: String,
    pub well: String,
    /// Per channel: gain (plate × well), offset (fraction of full scale).
    pub gain: Vec<f32>,
    pub offset: Vec<f32>,
    pub blur_sigma: f32,
    pub noise: f32,
    /// Plate illumination: strength of the radial fall-off and its centre (fractions of the tile).
    pub illum_strength: f32,
    pub illum_center: (f32, f32),
    /// The confounders per-well affine normalisation cannot undo (flattened into the well's record).
    #[serde(flatten)]
    pub confound: WellConfound,
}

/// One cell to draw.
#[derive(Clone, Debug)]
struct CellPlan {
    gene: usize,
    guide: usize,
    perturbed: bool,
}

/// One tile to render: (well index, tile number, its cells).
type TileJob = (usize, u32, Vec<CellPlan>);

/// Summary of what was written.
#[derive(Clone, Debug, Serialize)]
pub struct SynthSummary {
    pub tiles: usize,
    pub cells: usize,
    pub genes: usize,
    pub out: String,
    pub crop: usize,
}

fn gene_name(cfg: &SynthConfig, g: usize) -> String {
    if g == cfg.n_genes() {
        "nontargeting".into()
    } else {
        format!("G{g:04}")
    }
}

/// The pure-intensity phenotype dimensions (dna_level, tubulin_level): rare in effect directions.
const INTENSITY_DIMS: [usize; 2] = [2, 7];

/// 3 distinct phenotype dimensions drawn without replacement, by weight 1 (morphological) or 0.1
/// (intensity).
fn effect_dims(rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut w: Vec<f32> = (0..PHENO.len())
        .map(|d| {
            if INTENSITY_DIMS.contains(&d) {
                0.1
            } else {
                1.0
            }
        })
        .collect();
    let mut out = Vec::with_capacity(3);
    for _ in 0..3 {
        let mut u = rng.random::<f32>() * w.iter().sum::<f32>();
        let mut pick = w.iter().rposition(|&x| x > 0.0).unwrap_or(0);
        for (d, &x) in w.iter().enumerate() {
            if x > 0.0 && u < x {
                pick = d;
                break;
            }
            u -= x;
        }
        w[pick] = 0.0;
        out.push(pick);
    }
    out
}

/// Build the gene table (effects, guides, efficiencies).
fn genes(cfg: &SynthConfig) -> Vec<GeneTruth> {
    let mut rng = stream(cfg.seed, DOMAIN_SYNTH, &[0]);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut out = Vec::new();
    for cx in 0..cfg.complexes {
        // A sparse direction: 3 of the 8 dimensions drawn by weight (intensity ones rare and halved),
        // unit norm, times the effect size.
        let mut dir = [0f32; 8];
        for d in effect_dims(&mut rng) {
            dir[d] = normal.sample(&mut rng)
                * if INTENSITY_DIMS.contains(&d) {
                    0.5
                } else {
                    1.0
                };
        }
        let norm = dir.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        for k in 0..cfg.genes_per_complex {
            let g = cx * cfg.genes_per_complex + k;
            let strength = rng.random_range(0.6..1.2f32);
            out.push(GeneTruth {
                gene: gene_name(cfg, g),
                complex: Some(format!("C{cx:03}")),
                effect: dir
                    .iter()
                    .map(|x| x / norm * cfg.effect * strength)
                    .collect(),
                guides: (0..cfg.guides_per_gene)
                    .map(|q| format!("{}_sg{q}", gene_name(cfg, g)))
                    .collect(),
                efficiency: (0..cfg.guides_per_gene)
                    .map(|_| rng.random_range(0.5..1.0f32))
                    .collect(),
            });
        }
    }
    for k in 0..cfg.null_genes {
        let g = cfg.complexes * cfg.genes_per_complex + k;
        out.push(GeneTruth {
            gene: gene_name(cfg, g),
            complex: None,
            effect: vec![0.0; 8],
            guides: (0..cfg.guides_per_gene)
                .map(|q| format!("{}_sg{q}", gene_name(cfg, g)))
                .collect(),
            efficiency: (0..cfg.guides_per_gene)
                .map(|_| rng.random_range(0.5..1.0f32))
                .collect(),
        });
    }
    out.push(GeneTruth {
        gene: "nontargeting".into(),
        complex: None,
        effect: vec![0.0; 8],
        guides: (0..cfg.ntc_guides)
            .map(|q| format!("nontargeting_sg{q}"))
            .collect(),
        efficiency: vec![0.0; cfg.ntc_guides],
    });
    out
}

fn wells(cfg: &SynthConfig) -> Vec<WellTruth> {
    let mut out = Vec::new();
    for p in 0..cfg.plates {
        let mut prng = stream(cfg.seed, DOMAIN_SYNTH, &[1, p as u64]);
        let plate_gain: Vec<f32> = (0..4).map(|_| prng.random_range(0.7..1.3f32)).collect();
        let illum_strength = prng.random_range(0.15..0.45f32);
        let illum_center = (
            prng.random_range(0.3..0.7f32),
            prng.random_range(0.3..0.7f32),
        );
        for w in 0..cfg.wells {
            let mut r = stream(cfg.seed, DOMAIN_SYNTH, &[2, p as u64, w as u64]);
            out.push(WellTruth {
                plate: format!("plate{p}"),
                well: format!("{}{}", (b'A' + (w / 3) as u8) as char, w % 3 + 1),
                gain: plate_gain
                    .iter()
                    .map(|g| g * r.random_range(0.85..1.15f32))
                    .collect(),
                offset: (0..4).map(|_| r.random_range(0.0..0.04f32)).collect(),
                blur_sigma: r.random_range(0.0..1.0f32),
                noise: r.random_range(0.004..0.015f32),
                illum_strength,
                illum_center,
                confound: WellConfound::sample(cfg, p, w),
            });
        }
    }
    out
}

/// Cells of one well in placement order.
fn plan_well(cfg: &SynthConfig, genes: &[GeneTruth], w: usize) -> Vec<CellPlan> {
    let mut rng = stream(cfg.seed, DOMAIN_SYNTH, &[3, w as u64]);
    let mut v = Vec::new();
    for (g, gt) in genes.iter().enumerate() {
        let ntc = g == genes.len() - 1;
        for (q, &eff) in gt.efficiency.iter().enumerate() {
            let n = if ntc {
                2 * cfg.cells_per_guide
            } else {
                cfg.cells_per_guide
            };
            // Cell counts vary per (guide, well) by ±25 %.
            let n = ((n as f32) * rng.random_range(0.75..1.25f32)).round() as usize;
            for _ in 0..n {
                v.push(CellPlan {
                    gene: g,
                    guide: q,
                    perturbed: !ntc && rng.random::<f32>() < eff,
                });
            }
        }
    }
    v.shuffle(&mut rng);
    v
}

/// Grid slots of a tile in a well of cell density `density`: spacing ≈ 2.6 body radii ÷ √density, so
/// neighbours rarely touch.
fn slots(cfg: &SynthConfig, density: f32) -> usize {
    let (_, per_row, _) = grid(cfg, density);
    per_row * per_row
}

/// (spacing, slots per row, margin): slots fill the tile inset by 60 % of half a crop, so most cells fit a
/// crop and a few, pushed out by jitter, are skipped at ingest as in a real screen.
fn grid(cfg: &SynthConfig, density: f32) -> (usize, usize, usize) {
    let base = (cfg.nucleus_radius * 2.2 * 2.6).ceil();
    let spacing = (base / density.sqrt()).round().max(1.0) as usize;
    let margin = (cfg.crop as f32 * 0.3) as usize;
    let per_row = (cfg.tile.saturating_sub(2 * margin) / spacing).max(1);
    (spacing, per_row, margin)
}

/// A drawn cell: centroid row, column and cell-cycle phase.
type Placed = (f32, f32, &'static str);

/// Render one tile: canvas (4, T, T) in relative units, then confounders (in the order of the module doc);
/// returns u16 pages and, per cell, its centroid and cell-cycle phase.
fn render_tile(
    cfg: &SynthConfig,
    genes: &[GeneTruth],
    wt: &WellTruth,
    cells: &[CellPlan],
    key: u64,
) -> (Vec<Vec<u16>>, Vec<Placed>) {
    let t = cfg.tile;
    let mut rng = stream(cfg.seed, DOMAIN_SYNTH, &[4, key]);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut canvas = vec![vec![0f32; t * t]; 4];
    let wc = &wt.confound;
    let (spacing, per_row, margin) = grid(cfg, wc.density);
    let mut slot_ids: Vec<usize> = (0..per_row * per_row).collect();
    slot_ids.shuffle(&mut rng);
    let mut centroids = Vec::new();
    for (cell, &slot) in cells.iter().zip(&slot_ids) {
        let (sy, sx) = (slot / per_row, slot % per_row);
        let jitter = spacing as f32 * 0.25;
        let cy =
            margin as f32 + (sy as f32 + 0.5) * spacing as f32 + rng.random_range(-jitter..jitter);
        let cx =
            margin as f32 + (sx as f32 + 0.5) * spacing as f32 + rng.random_range(-jitter..jitter);
        let eff = &genes[cell.gene].effect;
        // Phenotype: exp(effect + cell noise), per dimension.
        let p: Vec<f32> = (0..8)
            .map(|d| {
                ((if cell.perturbed { eff[d] } else { 0.0 }) + 0.12 * normal.sample(&mut rng)).exp()
            })
            .collect();
        let phase = rng.random::<f32>();
        let (g2, mitotic) = (phase > 0.6 && phase <= 0.95, phase > 0.95);
        draw_cell(
            &mut canvas,
            t,
            cy,
            cx,
            &p,
            g2,
            mitotic,
            cfg.nucleus_radius,
            wc.density,
            &mut rng,
        );
        centroids.push((
            cy,
            cx,
            if mitotic {
                "M"
            } else if g2 {
                "G2"
            } else {
                "G1"
            },
        ));
    }
    // Specimen: staining non-linearity, background field, debris, bleed-through.
    for (c, plane) in canvas.iter_mut().enumerate() {
        confound::stain(plane, wc.gamma[c], wc.saturation[c]);
    }
    confound::add_background(&mut canvas, t, wc, &mut rng);
    confound::add_debris(&mut canvas, t, wc, cfg.nucleus_radius / 6.0, &mut rng);
    confound::bleed(&mut canvas, wc);
    // Optics and camera: point spread, illumination × gain, offset, noise, 16-bit quantisation.
    let mut pages = Vec::with_capacity(4);
    for (c, plane) in canvas.iter_mut().enumerate() {
        let iso = if wt.blur_sigma > 0.3 {
            wt.blur_sigma * wt.blur_sigma
        } else {
            0.0
        };
        match wc.psf_cov(c, iso) {
            Some((sxx, syy, sxy)) => confound::aniso_blur(plane, t, sxx, syy, sxy),
            None if wt.blur_sigma > 0.3 => gaussian_blur(plane, t, wt.blur_sigma),
            None => {}
        }
        let mut page = vec![0u16; t * t];
        for (q, o) in page.iter_mut().enumerate() {
            let (y, x) = (
                (q / t) as f32 / t as f32 - wt.illum_center.0,
                (q % t) as f32 / t as f32 - wt.illum_center.1,
            );
            let illum = 1.0 - wt.illum_strength * (y * y + x * x) * 2.0;
            let v = plane[q] * illum * wt.gain[c] * 0.45
                + wt.offset[c]
                + 0.01
                + wt.noise * normal.sample(&mut rng);
            *o = (v.clamp(0.0, 1.0) * 65535.0).round() as u16;
        }
        pages.push(page);
    }
    (pages, centroids)
}

#[allow(clippy::too_many_arguments)]
fn draw_cell(
    canvas: &mut [Vec<f32>],
    t: usize,
    cy: f32,
    cx: f32,
    p: &[f32],
    g2: bool,
    mitotic: bool,
    rn: f32,
    density: f32,
    rng: &mut ChaCha8Rng,
) {
    // Crowding: smaller, more elongated cells where density > 1 (exactly unchanged at 1).
    let rn = rn * density.powf(-0.4);
    let theta = rng.random_range(0.0..std::f32::consts::PI);
    let (s, c) = theta.sin_cos();
    let mut na = rn * p[0] * if g2 { 1.2 } else { 1.0 } * if mitotic { 0.7 } else { 1.0 };
    let elong = (1.15 * p[1] * density.powf(0.4)).max(1.0);
    let mut nb = na / elong;
    na *= elong.sqrt();
    nb *= elong.sqrt();
    let body = rn * 2.2 * if mitotic { 0.75 } else { 1.0 };
    let belong = if mitotic {
        1.0
    } else {
        (rng.random_range(1.0..1.4f32) * density.powf(0.6)).max(1.0)
    };
    let (ba, bb) = (body * belong, body / belong);
    let dna = 0.9 * p[2] * if g2 { 1.5 } else { 1.0 } * if mitotic { 2.0 } else { 1.0 };
    let tex = (
        rng.random_range(0.6..1.2f32),
        rng.random_range(0.6..1.2f32),
        rng.random_range(0.0..6.3f32),
    );
    let foci_n = Poisson::new((2.0 * p[3] * if g2 { 1.5 } else { 1.0 }) as f64)
        .unwrap()
        .sample(rng) as usize;
    let foci: Vec<(f32, f32)> = (0..foci_n)
        .map(|_| {
            let (r, a) = (
                rng.random::<f32>().sqrt() * 0.8,
                rng.random_range(0.0..6.3f32),
            );
            (r * na * a.cos(), r * nb * a.sin())
        })
        .collect();
    let fibre_angle = rng.random_range(0.0..std::f32::consts::PI);
    let (fs, fc) = fibre_angle.sin_cos();
    let fibre_freq = 6.0 / rn;
    let rays = rng.random_range(10..18) as f32;
    let extent = body * 0.6 * p[6];
    let reach = (ba.max(bb) * 1.3).ceil() as i64;
    let (iy, ix) = (cy.round() as i64, cx.round() as i64);
    for y in (iy - reach).max(0)..(iy + reach + 1).min(t as i64) {
        for x in (ix - reach).max(0)..(ix + reach + 1).min(t as i64) {
            let (dy, dx) = (y as f32 - cy, x as f32 - cx);
            let u = dx * c + dy * s;
            let v = -dx * s + dy * c;
            let q = y as usize * t + x as usize;
            let dn = ((u / na).powi(2) + (v / nb).powi(2)).sqrt();
            let db = ((u / ba).powi(2) + (v / bb).powi(2)).sqrt();
            if db > 1.25 {
                continue;
            }
            let inside_n = smooth(1.0 - dn, 0.15);
            let inside_b = smooth(1.0 - db, 0.08);
            // DNA with chromatin texture.
            let texture = 1.0 + 0.3 * (u * tex.0 + tex.2).sin() * (v * tex.1).sin();
            canvas[0][q] += dna * inside_n * texture;
            // Damage: faint nuclear background plus foci.
            let mut dmg = 0.08 * inside_n;
            for &(fu, fv) in &foci {
                let d2 = (u - fu).powi(2) + (v - fv).powi(2);
                dmg += (-d2 / 2.0).exp();
            }
            canvas[1][q] += dmg;
            // Actin: cortex ring, stress fibres, diffuse.
            let cortex = 0.7 * p[4] * (-((db - 1.0) / 0.12).powi(2)).exp();
            let fibre = 0.5
                * p[5]
                * inside_b
                * (0.5 + 0.5 * ((-dx * fs + dy * fc) * fibre_freq).cos()).powi(8);
            canvas[2][q] += cortex + fibre + 0.1 * inside_b;
            // Tubulin: radial network out from the nucleus, decaying with distance.
            let r = (dx * dx + dy * dy).sqrt();
            let ang = dy.atan2(dx);
            let net = 1.0
                * p[7]
                * inside_b
                * (-r / extent.max(1.0)).exp()
                * (0.5 + 0.5 * (ang * rays).cos().abs().powi(4));
            canvas[3][q] += net * (1.0 - 0.7 * inside_n);
        }
    }
}

#[inline]
fn smooth(x: f32, w: f32) -> f32 {
    (x / w).clamp(0.0, 1.0)
}

/// Separable Gaussian blur with clamped edges.
fn gaussian_blur(img: &mut [f32], t: usize, sigma: f32) {
    let r = (3.0 * sigma).ceil() as i64;
    let k: Vec<f32> = (-r..=r)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let ksum: f32 = k.iter().sum();
    let mut tmp = vec![0f32; t * t];
    for y in 0..t {
        for x in 0..t {
            tmp[y * t + x] = (-r..=r)
                .map(|d| {
                    k[(d + r) as usize]
                        * img[y * t + (x as i64 + d).clamp(0, t as i64 - 1) as usize]
                })
                .sum::<f32>()
                / ksum;
        }
    }
    for y in 0..t {
        for x in 0..t {
            img[y * t + x] = (-r..=r)
                .map(|d| {
                    k[(d + r) as usize]
                        * tmp[(y as i64 + d).clamp(0, t as i64 - 1) as usize * t + x]
                })
                .sum::<f32>()
                / ksum;
        }
    }
}

/// The tiles of every well, in well order: cells fill 70 % of a tile's slots (which depend on the well's
/// cell density).
fn tile_jobs(cfg: &SynthConfig, genes: &[GeneTruth], wells: &[WellTruth]) -> Result<Vec<TileJob>> {
    let mut jobs: Vec<TileJob> = Vec::new();
    for (w, wt) in wells.iter().enumerate() {
        let per_tile = slots(cfg, wt.confound.density) * 7 / 10;
        if per_tile == 0 {
            bail!(
                "tile {} is too small for cells of nucleus radius {}",
                cfg.tile,
                cfg.nucleus_radius
            );
        }
        for (k, chunk) in plan_well(cfg, genes, w).chunks(per_tile).enumerate() {
            jobs.push((w, k as u32, chunk.to_vec()));
        }
    }
    Ok(jobs)
}

/// truth.json's notes.
const NOTES: &str = "effect: log-scale change of each phenotype dimension for perturbed cells; a complex's direction has 3 of the 8 dimensions, drawn with weight 1 for the morphological ones (nucleus_size, nucleus_elongation, foci_rate, actin_cortex, actin_fibres, tubulin_extent) and 0.1 for the pure-intensity ones (dna_level, tubulin_level), an intensity component being halved; a cell of guide g is perturbed with probability efficiency[g] (escapers otherwise); cell cycle: 60 % G1, 35 % G2 (larger, brighter nucleus, more foci), 5 % M (small, condensed). wells: gain, offset and the plate illumination are undone by flat-field and per-well affine normalisation (noise averages out); the rest is not, each scaled by config.confound: blur_sigma plus psf_sigma (px, along psf_angle from the x axis and across) plus focus_offset per channel (px, chromatic); per channel gamma then saturation s (v -> v^gamma, then v(1+s)/(1+s v), on the canvas before gain and offset); background (per channel amplitude of a smooth field of wavelength background_scale px, new per tile); debris_rate specks per (100 nucleus_radius/6 px)^2 with brightness debris per channel; density (grid spacing / sqrt(density), cell size x density^-0.4, elongation up); bleed (fraction of one channel added to another). Rendering order: cells, staining non-linearity, background and debris, bleed-through, point spread, illumination x gain + offset + noise, 16-bit quantisation.";

/// Write the screen into `out`; `progress` prints a line per plate.
pub fn synth(cfg: &SynthConfig, out: &Path, progress: bool) -> Result<SynthSummary> {
    if !(cfg.confound.is_finite() && (0.0..=MAX_CONFOUND).contains(&cfg.confound)) {
        bail!(
            "confound strength {} is out of range; HINT: use 0 (none) … {MAX_CONFOUND}, 1 is the default",
            cfg.confound
        );
    }
    std::fs::create_dir_all(out.join("tiles"))
        .with_context(|| format!("creating {}", out.display()))?;
    let genes = genes(cfg);
    let wells = wells(cfg);
    let jobs = tile_jobs(cfg, &genes, &wells)?;
    // Tables go to temp files, renamed into place when complete (tiles.csv last: a screen is complete
    // only when it exists).
    let create = |name: &str| -> Result<(std::io::BufWriter<std::fs::File>, TempFile)> {
        let t = TempFile::new(&out.join(name))?;
        let f = std::fs::File::create(t.path())
            .with_context(|| format!("creating {}", t.path().display()))?;
        Ok((std::io::BufWriter::new(f), t))
    };
    let (mut tiles_csv, tiles_tmp) = create("tiles.csv")?;
    let (mut cells_csv, cells_tmp) = create("cells.csv")?;
    let (mut cells_truth, truth_tmp) = create("cells_truth.csv")?;
    writeln!(cells_truth, "plate,well,tile,cell_id,perturbed,phase")?;
    writeln!(tiles_csv, "plate,well,tile,path")?;
    writeln!(cells_csv, "plate,well,tile,cell_id,i,j,sgRNA,gene")?;
    let mut n_cells = 0;
    let bar = if progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let b = indicatif::ProgressBar::new(jobs.len() as u64);
        if let Ok(st) = indicatif::ProgressStyle::with_template(
            "synth [{bar:30}] {pos}/{len} tiles, {per_sec}, ETA {eta}",
        ) {
            b.set_style(st);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    for plate in 0..cfg.plates {
        let plate_jobs: Vec<(usize, &TileJob)> = jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.0 / cfg.wells == plate)
            .collect();
        let rendered: Vec<Vec<Placed>> = plate_jobs
            .par_iter()
            .map(|&(key, (w, tile, cells))| {
                let wt = &wells[*w];
                let (pages, cents) = render_tile(cfg, &genes, wt, cells, key as u64);
                let refs: Vec<&[u16]> = pages.iter().map(|p| p.as_slice()).collect();
                let path = out
                    .join("tiles")
                    .join(format!("{}_{}_{tile}.tif", wt.plate, wt.well));
                write_u16(&path, cfg.tile, cfg.tile, &refs, TiffCompression::Deflate)?;
                bar.inc(1);
                Ok(cents)
            })
            .collect::<Result<_>>()?;
        for ((_, (w, tile, cells)), cents) in plate_jobs.iter().zip(&rendered) {
            let wt = &wells[*w];
            writeln!(
                tiles_csv,
                "{},{},{tile},tiles/{}_{}_{tile}.tif",
                wt.plate, wt.well, wt.plate, wt.well
            )?;
            for (id, (cell, &(i, j, phase))) in cells.iter().zip(cents).enumerate() {
                let g = &genes[cell.gene];
                writeln!(
                    cells_truth,
                    "{},{},{tile},{id},{},{phase}",
                    wt.plate, wt.well, cell.perturbed as u8
                )?;
                writeln!(
                    cells_csv,
                    "{},{},{tile},{id},{i:.2},{j:.2},{},{}",
                    wt.plate, wt.well, g.guides[cell.guide], g.gene
                )?;
                n_cells += 1;
            }
        }
        if progress && bar.is_hidden() {
            eprintln!("synth: plate {}/{} written", plate + 1, cfg.plates);
        }
    }
    bar.finish_and_clear();
    for w in [tiles_csv, cells_csv, cells_truth] {
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let mut complexes = String::new();
    for cx in 0..cfg.complexes {
        let members: Vec<&str> = genes
            [cx * cfg.genes_per_complex..(cx + 1) * cfg.genes_per_complex]
            .iter()
            .map(|g| g.gene.as_str())
            .collect();
        writeln!(complexes, "C{cx:03}\t{}", members.join(" "))?;
    }
    write_atomic(&out.join("complexes.tsv"), complexes.as_bytes())?;
    let truth = serde_json::json!({
        "config": cfg, "channels": CHANNELS, "phenotype_dimensions": PHENO,
        "genes": genes, "wells": wells,
        "notes": NOTES,
    });
    write_atomic(&out.join("truth.json"), &serde_json::to_vec_pretty(&truth)?)?;
    truth_tmp.commit()?;
    cells_tmp.commit()?;
    tiles_tmp.commit()?;
    Ok(SynthSummary {
        tiles: jobs.len(),
        cells: n_cells,
        genes: genes.len(),
        out: out.display().to_string(),
        crop: cfg.crop,
    })
}

#[cfg(test)]
mod tests;
