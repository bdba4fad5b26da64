//! Engineered per-cell features, the classical baseline of `setdino features` (issue 5 item 3): intensity,
//! shape, radial, texture and colocalisation measurements on each stored crop, computed from the crop
//! alone (C×S×S in [0, 1]); for C = 4 channels that is 11 + 20·4 + 6 = 97 features.
//!
//! Key decision: masks are derived per crop from the pixels (no segmentation input), by the rules below;
//! every value is a deterministic function of one crop, so the output does not depend on the thread count.
//!
//! Masks (pixel (i, j) has its centre at row i, column j; the crop centre is ((S−1)/2, (S−1)/2)):
//! - **nucleus N**: Otsu threshold of the DNA channel (256 bins over the crop's [min, max], skimage
//!   `threshold_otsu`), foreground `x > t`; the 8-connected component containing the crop centre, or the
//!   one with a pixel nearest to it (ties: first in raster order); holes (background not 4-connected to the
//!   crop border) filled. A constant DNA channel gives an empty N.
//! - **cell M**: Otsu foreground of the mean of the non-DNA channels (of the DNA channel when it is the
//!   only one), united with N; the 8-connected component
//!   containing N (or nearest the crop centre when N is empty); holes filled. When that is empty (a
//!   constant crop), M is the whole crop.
//! - **cytoplasm**: M minus N. **centre** c: the centroid of N, or the crop centre when N is empty.
//!
//! Features (intensity unit: the store's [0, 1] scale; px: pixels). Shape, in this order:
//!
//! | name | definition | unit |
//! | --- | --- | --- |
//! | `nuc_area` | pixels in N | px² |
//! | `nuc_perimeter` | 4-connected crack length of N (≈ 4/π × the Euclidean perimeter of a disc) | px |
//! | `nuc_eccentricity` | sqrt(1 − λ2/λ1), λ the eigenvalues of N's pixel-coordinate covariance | 1 |
//! | `nuc_solidity` | area / pixels whose centres lie in the convex hull (monotone chain) of N's pixel centres | 1 |
//! | `nuc_major_axis` | 4·sqrt(λ1) (skimage `major_axis_length`) | px |
//! | `nuc_minor_axis` | 4·sqrt(λ2) | px |
//! | `nuc_centre_offset` | distance from N's centroid to the crop centre | px |
//! | `cell_area` | pixels in M | px² |
//! | `cell_eccentricity` | as `nuc_eccentricity`, for M | 1 |
//! | `cell_solidity` | as `nuc_solidity`, for M | 1 |
//! | `nuc_cell_area_ratio` | `nuc_area` / `cell_area` | 1 |
//!
//! Then for each channel `ch` (named as in the store), in store order, `ch_` followed by:
//!
//! | name | definition | unit |
//! | --- | --- | --- |
//! | `nuc_mean` | mean over N | intensity |
//! | `nuc_std` | population standard deviation over N | intensity |
//! | `nuc_q25` | 25th percentile over N (linear interpolation, numpy default) | intensity |
//! | `nuc_median` | median over N | intensity |
//! | `nuc_q75` | 75th percentile over N | intensity |
//! | `nuc_integrated` | sum over N | intensity·px² |
//! | `cyto_mean` | mean over the cytoplasm | intensity |
//! | `cyto_std` | population standard deviation over the cytoplasm | intensity |
//! | `cyto_median` | median over the cytoplasm | intensity |
//! | `cyto_integrated` | sum over the cytoplasm | intensity·px² |
//! | `radial_0` … `radial_3` | mean over the whole crop of the pixels at distance d from c with k·S/8 ≤ d < (k+1)·S/8 | intensity |
//! | `grad_mean` | mean over M of the gradient magnitude (central differences, one-sided at the crop border) | intensity/px |
//! | `grad_std` | population standard deviation over M of the gradient magnitude | intensity/px |
//! | `glcm_contrast` | Σ p(a,b)(a−b)² of the co-occurrence matrix below | level² |
//! | `glcm_homogeneity` | Σ p(a,b) / (1 + (a−b)²) | 1 |
//! | `glcm_correlation` | Σ p(a,b)(a−μ)(b−μ) / σ² (undefined, so non-finite, when σ = 0) | 1 |
//! | `mass_displacement` | distance from c to the intensity-weighted centroid of the channel over M | px |
//!
//! Co-occurrence: the channel over M quantised to 16 levels on M's [min, max]
//! (`min(⌊16·(x − min)/(max − min)⌋, 15)`, all level 0 when max = min); pixel pairs at distance 1 in the
//! four directions 0°, 45°, 90°, 135° with both pixels in M, counted symmetrically and pooled into one
//! matrix p normalised to sum 1 (so μ and σ are those of either marginal).
//!
//! Then, for each channel pair a < b in store order, `corr_a_b`: the Pearson correlation of the two
//! channels over M (unit 1; undefined when either is constant there).
//!
//! Values that are undefined for a cell (an empty region, a zero variance) are computed as NaN; the
//! runner replaces every non-finite value by 0 and reports how many per feature.
pub mod mask;
pub mod run;

pub use run::{compute_features, dna_channel, FeatureOptions, FeatureSummary};

use mask::{otsu_threshold, select_component, shape};

/// One output column: name, definition and unit.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureSpec {
    pub name: String,
    pub description: String,
    pub unit: &'static str,
}

/// Shape features: (name, definition, unit), in output order.
pub const SHAPE_FEATURES: [(&str, &str, &str); 11] = [
    ("nuc_area", "pixels in the nucleus mask N", "px^2"),
    ("nuc_perimeter", "4-connected crack length of N", "px"),
    (
        "nuc_eccentricity",
        "sqrt(1 - l2/l1) of N's pixel-coordinate covariance eigenvalues",
        "1",
    ),
    (
        "nuc_solidity",
        "area / pixels in the convex hull of N's pixel centres",
        "1",
    ),
    ("nuc_major_axis", "4 sqrt(l1) of N", "px"),
    ("nuc_minor_axis", "4 sqrt(l2) of N", "px"),
    (
        "nuc_centre_offset",
        "distance from N's centroid to the crop centre",
        "px",
    ),
    ("cell_area", "pixels in the cell mask M", "px^2"),
    ("cell_eccentricity", "sqrt(1 - l2/l1) of M", "1"),
    ("cell_solidity", "area / convex hull pixels of M", "1"),
    ("nuc_cell_area_ratio", "nuc_area / cell_area", "1"),
];

/// Per-channel features: (suffix, definition, unit), in output order; names are `{channel}_{suffix}`.
pub const CHANNEL_FEATURES: [(&str, &str, &str); 20] = [
    ("nuc_mean", "mean over the nucleus N", "intensity"),
    ("nuc_std", "population std over N", "intensity"),
    ("nuc_q25", "25th percentile over N", "intensity"),
    ("nuc_median", "median over N", "intensity"),
    ("nuc_q75", "75th percentile over N", "intensity"),
    ("nuc_integrated", "sum over N", "intensity*px^2"),
    ("cyto_mean", "mean over the cytoplasm M \\ N", "intensity"),
    ("cyto_std", "population std over M \\ N", "intensity"),
    ("cyto_median", "median over M \\ N", "intensity"),
    ("cyto_integrated", "sum over M \\ N", "intensity*px^2"),
    (
        "radial_0",
        "mean over the crop at distance [0, S/8) from the nucleus centroid",
        "intensity",
    ),
    (
        "radial_1",
        "mean over the crop at distance [S/8, 2S/8) from the nucleus centroid",
        "intensity",
    ),
    (
        "radial_2",
        "mean over the crop at distance [2S/8, 3S/8) from the nucleus centroid",
        "intensity",
    ),
    (
        "radial_3",
        "mean over the crop at distance [3S/8, S/2) from the nucleus centroid",
        "intensity",
    ),
    (
        "grad_mean",
        "mean gradient magnitude over M (central differences)",
        "intensity/px",
    ),
    (
        "grad_std",
        "population std of the gradient magnitude over M",
        "intensity/px",
    ),
    (
        "glcm_contrast",
        "co-occurrence contrast, distance 1, 4 directions, 16 levels over M",
        "level^2",
    ),
    (
        "glcm_homogeneity",
        "co-occurrence homogeneity sum p/(1+(a-b)^2)",
        "1",
    ),
    (
        "glcm_correlation",
        "co-occurrence correlation (undefined when the region is constant)",
        "1",
    ),
    (
        "mass_displacement",
        "distance from the nucleus centroid to the intensity-weighted centroid over M",
        "px",
    ),
];

/// Rings of the radial profile.
pub const RINGS: usize = 4;
/// Grey levels of the co-occurrence matrix.
pub const GLCM_LEVELS: usize = 16;

/// Number of features for `c` channels: 11 + 20·c + c(c−1)/2.
pub fn n_features(c: usize) -> usize {
    SHAPE_FEATURES.len() + CHANNEL_FEATURES.len() * c + c * c.saturating_sub(1) / 2
}

/// A channel name made safe for a column name (whitespace and tabs become `_`).
fn column_safe(name: &str) -> String {
    name.chars()
        .map(|ch| if ch.is_whitespace() { '_' } else { ch })
        .collect()
}

/// Names, definitions and units of the features for these channels, in output order.
pub fn feature_specs(channels: &[String]) -> Vec<FeatureSpec> {
    let mut v: Vec<FeatureSpec> = SHAPE_FEATURES
        .iter()
        .map(|&(n, d, u)| FeatureSpec {
            name: n.to_string(),
            description: d.to_string(),
            unit: u,
        })
        .collect();
    for ch in channels {
        let ch = column_safe(ch);
        for &(n, d, u) in &CHANNEL_FEATURES {
            v.push(FeatureSpec {
                name: format!("{ch}_{n}"),
                description: format!("{ch}: {d}"),
                unit: u,
            });
        }
    }
    for a in 0..channels.len() {
        for b in a + 1..channels.len() {
            let (x, y) = (column_safe(&channels[a]), column_safe(&channels[b]));
            v.push(FeatureSpec {
                name: format!("corr_{x}_{y}"),
                description: format!("Pearson correlation of {x} and {y} over the cell mask M"),
                unit: "1",
            });
        }
    }
    v
}

/// The feature table as plain text, for `setdino features --help`.
pub fn help_table() -> String {
    let mut s = String::from(
        "Masks: nucleus N = Otsu threshold of the DNA channel, the 8-connected component at (or nearest) \
         the crop centre, holes filled; cell M = Otsu foreground of the mean of the non-DNA channels united \
         with N, the component containing N, holes filled (whole crop if empty); cytoplasm = M \\ N.\n\n\
         Features (for C channels: 11 + 20 C + C(C-1)/2; 97 for 4 channels):\n",
    );
    for (n, d, u) in SHAPE_FEATURES {
        s.push_str(&format!("  {n:<24} {d} [{u}]\n"));
    }
    for (n, d, u) in CHANNEL_FEATURES {
        s.push_str(&format!("  {:<24} {d} [{u}]\n", format!("<ch>_{n}")));
    }
    s.push_str("  corr_<a>_<b>             Pearson correlation of channels a < b over M [1]\n\n");
    s.push_str(
        "Undefined values (empty region, zero variance) are replaced by 0 and counted per feature in \
         STEM.features.tsv.",
    );
    s
}

/// Per-thread buffers for [`cell_features`]; reuse one per thread so the per-cell path allocates nothing.
#[derive(Default)]
pub struct Scratch {
    fg: Vec<bool>,
    nuc: Vec<bool>,
    cell: Vec<bool>,
    cyto: Vec<bool>,
    label: Vec<u32>,
    stack: Vec<u32>,
    mean_img: Vec<f32>,
    vals: Vec<f32>,
    grad: Vec<f32>,
    quant: Vec<u8>,
}

/// Values over `region` of `img` into `vals` (cleared first).
fn gather(vals: &mut Vec<f32>, img: &[f32], region: &[bool]) {
    vals.clear();
    vals.extend(img.iter().zip(region).filter(|(_, &m)| m).map(|(&x, _)| x));
}

/// Mean and population std of `v` (NaN when empty).
fn mean_std(v: &[f32]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// Quantile q of sorted `v` with linear interpolation (numpy's default); NaN when empty.
fn quantile_sorted(v: &[f32], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let h = (v.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] as f64 + (h - lo as f64) * (v[hi] as f64 - v[lo] as f64)
}

/// Co-occurrence contrast, homogeneity, correlation of `q` (levels, S×S) over `region`; see the module doc.
pub fn glcm_stats(q: &[u8], region: &[bool], s: usize) -> (f64, f64, f64) {
    let l = GLCM_LEVELS;
    let mut p = [[0f64; GLCM_LEVELS]; GLCM_LEVELS];
    let mut total = 0f64;
    for i in 0..s {
        for j in 0..s {
            let a = i * s + j;
            if !region[a] {
                continue;
            }
            // 0°, 45° (up-right), 90° (down), 135° (down-right) seen from (i, j); pairs counted both ways.
            for (di, dj) in [(0i64, 1i64), (-1, 1), (1, 0), (1, 1)] {
                let (ii, jj) = (i as i64 + di, j as i64 + dj);
                if ii < 0 || jj < 0 || ii >= s as i64 || jj >= s as i64 {
                    continue;
                }
                let b = ii as usize * s + jj as usize;
                if !region[b] {
                    continue;
                }
                let (x, y) = (q[a] as usize, q[b] as usize);
                p[x][y] += 1.0;
                p[y][x] += 1.0;
                total += 2.0;
            }
        }
    }
    if total == 0.0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let (mut contrast, mut homog, mut mu) = (0f64, 0f64, 0f64);
    for (a, row) in p.iter().enumerate().take(l) {
        for (b, &c) in row.iter().enumerate().take(l) {
            let pr = c / total;
            let d = (a as f64 - b as f64).powi(2);
            contrast += pr * d;
            homog += pr / (1.0 + d);
            mu += pr * a as f64;
        }
    }
    let (mut var, mut cov) = (0f64, 0f64);
    for (a, row) in p.iter().enumerate().take(l) {
        for (b, &c) in row.iter().enumerate().take(l) {
            let pr = c / total;
            var += pr * (a as f64 - mu).powi(2);
            cov += pr * (a as f64 - mu) * (b as f64 - mu);
        }
    }
    let corr = if var > 0.0 { cov / var } else { f64::NAN };
    (contrast, homog, corr)
}

/// Pearson correlation of `x` and `y` over `region` (NaN when fewer than 2 pixels or a zero variance).
pub fn pearson(x: &[f32], y: &[f32], region: &[bool]) -> f64 {
    let (mut n, mut sx, mut sy) = (0f64, 0f64, 0f64);
    for ((&a, &b), &m) in x.iter().zip(y).zip(region) {
        if m {
            n += 1.0;
            sx += a as f64;
            sy += b as f64;
        }
    }
    if n < 2.0 {
        return f64::NAN;
    }
    let (mx, my) = (sx / n, sy / n);
    let (mut cxy, mut cxx, mut cyy) = (0f64, 0f64, 0f64);
    for ((&a, &b), &m) in x.iter().zip(y).zip(region) {
        if m {
            let (da, db) = (a as f64 - mx, b as f64 - my);
            cxy += da * db;
            cxx += da * da;
            cyy += db * db;
        }
    }
    if cxx <= 0.0 || cyy <= 0.0 {
        return f64::NAN;
    }
    (cxy / (cxx * cyy).sqrt()).clamp(-1.0, 1.0)
}

/// Nucleus and cell masks of a crop by the module-doc rules. crop: (C, S, S); nuc, cell: (S, S).
pub fn masks(
    crop: &[f32],
    c: usize,
    s: usize,
    dna: usize,
    sc: &mut Scratch,
) -> (Vec<bool>, Vec<bool>) {
    compute_masks(crop, c, s, dna, sc);
    (sc.nuc.clone(), sc.cell.clone())
}

fn compute_masks(crop: &[f32], c: usize, s: usize, dna: usize, sc: &mut Scratch) {
    let n = s * s;
    let centre_pixel = None;
    sc.fg.clear();
    sc.fg.resize(n, false);
    sc.nuc.resize(n, false);
    sc.cell.resize(n, false);
    let dna_img = &crop[dna * n..(dna + 1) * n];
    if let Some(t) = otsu_threshold(dna_img) {
        for (f, &x) in sc.fg.iter_mut().zip(dna_img) {
            *f = x > t;
        }
    }
    select_component(
        &mut sc.nuc,
        &sc.fg,
        s,
        centre_pixel,
        &mut sc.label,
        &mut sc.stack,
    );

    // Cell image: the mean of the non-DNA channels (all channels when the DNA channel is the only one).
    let others: Vec<usize> = (0..c).filter(|&ch| ch != dna || c == 1).collect();
    sc.mean_img.clear();
    sc.mean_img.resize(n, 0.0);
    for &ch in &others {
        for (m, &x) in sc.mean_img.iter_mut().zip(&crop[ch * n..(ch + 1) * n]) {
            *m += x / others.len() as f32;
        }
    }
    sc.fg.fill(false);
    if let Some(t) = otsu_threshold(&sc.mean_img) {
        for (f, &x) in sc.fg.iter_mut().zip(&sc.mean_img) {
            *f = x > t;
        }
    }
    for (f, &m) in sc.fg.iter_mut().zip(&sc.nuc) {
        *f |= m;
    }
    let seed = sc.nuc.iter().position(|&m| m);
    select_component(&mut sc.cell, &sc.fg, s, seed, &mut sc.label, &mut sc.stack);
    if !sc.cell.iter().any(|&m| m) {
        sc.cell.fill(true);
    }
}

/// All features of one crop, in [`feature_specs`] order; undefined values are NaN.
/// crop: (C, S, S) in [0, 1]; out: (F) with F = [`n_features`]`(c)`; `dna` indexes the DNA channel.
pub fn cell_features(
    out: &mut [f32],
    crop: &[f32],
    c: usize,
    s: usize,
    dna: usize,
    sc: &mut Scratch,
) {
    assert_eq!(crop.len(), c * s * s, "crop length is not C·S·S");
    assert_eq!(
        out.len(),
        n_features(c),
        "output length is not n_features(C)"
    );
    assert!(dna < c, "DNA channel {dna} out of range for {c} channels");
    let n = s * s;
    compute_masks(crop, c, s, dna, sc);

    let nuc = shape(&sc.nuc, s);
    let cell = shape(&sc.cell, s);
    let c0 = (s as f64 - 1.0) / 2.0;
    let centre = if nuc.area > 0.0 {
        nuc.centroid
    } else {
        (c0, c0)
    };
    let offset = ((nuc.centroid.0 - c0).powi(2) + (nuc.centroid.1 - c0).powi(2)).sqrt();
    let shape_vals = [
        nuc.area,
        nuc.perimeter,
        nuc.eccentricity,
        nuc.solidity,
        nuc.major_axis,
        nuc.minor_axis,
        offset,
        cell.area,
        cell.eccentricity,
        cell.solidity,
        nuc.area / cell.area,
    ];
    let mut k = 0;
    for v in shape_vals {
        out[k] = v as f32;
        k += 1;
    }

    sc.cyto.clear();
    sc.cyto
        .extend(sc.cell.iter().zip(&sc.nuc).map(|(&m, &nn)| m && !nn));
    let ring_w = s as f64 / 8.0;
    for ch in 0..c {
        let img = &crop[ch * n..(ch + 1) * n];
        let mut vals = [f64::NAN; CHANNEL_FEATURES.len()];

        gather(&mut sc.vals, img, &sc.nuc);
        let (m, sd) = mean_std(&sc.vals);
        sc.vals.sort_unstable_by(|a, b| a.total_cmp(b));
        vals[0] = m;
        vals[1] = sd;
        vals[2] = quantile_sorted(&sc.vals, 0.25);
        vals[3] = quantile_sorted(&sc.vals, 0.5);
        vals[4] = quantile_sorted(&sc.vals, 0.75);
        vals[5] = sc.vals.iter().map(|&x| x as f64).sum();

        gather(&mut sc.vals, img, &sc.cyto);
        let (m, sd) = mean_std(&sc.vals);
        sc.vals.sort_unstable_by(|a, b| a.total_cmp(b));
        vals[6] = m;
        vals[7] = sd;
        vals[8] = quantile_sorted(&sc.vals, 0.5);
        vals[9] = sc.vals.iter().map(|&x| x as f64).sum();

        let mut ring_sum = [0f64; RINGS];
        let mut ring_n = [0f64; RINGS];
        for i in 0..s {
            for j in 0..s {
                let d = ((i as f64 - centre.0).powi(2) + (j as f64 - centre.1).powi(2)).sqrt();
                let r = (d / ring_w) as usize;
                if r < RINGS {
                    ring_sum[r] += img[i * s + j] as f64;
                    ring_n[r] += 1.0;
                }
            }
        }
        for r in 0..RINGS {
            vals[10 + r] = ring_sum[r] / ring_n[r];
        }

        sc.grad.clear();
        for i in 0..s {
            for j in 0..s {
                if !sc.cell[i * s + j] {
                    continue;
                }
                let (i0, i1) = (i.saturating_sub(1), (i + 1).min(s - 1));
                let (j0, j1) = (j.saturating_sub(1), (j + 1).min(s - 1));
                let gy = (img[i1 * s + j] - img[i0 * s + j]) / (i1 - i0).max(1) as f32;
                let gx = (img[i * s + j1] - img[i * s + j0]) / (j1 - j0).max(1) as f32;
                sc.grad.push((gx * gx + gy * gy).sqrt());
            }
        }
        let (gm, gs) = mean_std(&sc.grad);
        vals[14] = gm;
        vals[15] = gs;

        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for (&x, &m) in img.iter().zip(&sc.cell) {
            if m {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        sc.quant.clear();
        sc.quant.extend(img.iter().map(|&x| {
            if hi > lo {
                (((x - lo) / (hi - lo) * GLCM_LEVELS as f32) as usize).min(GLCM_LEVELS - 1) as u8
            } else {
                0
            }
        }));
        let (con, hom, cor) = glcm_stats(&sc.quant, &sc.cell, s);
        vals[16] = con;
        vals[17] = hom;
        vals[18] = cor;

        let (mut w, mut wi, mut wj) = (0f64, 0f64, 0f64);
        for i in 0..s {
            for j in 0..s {
                if sc.cell[i * s + j] {
                    let x = img[i * s + j] as f64;
                    w += x;
                    wi += x * i as f64;
                    wj += x * j as f64;
                }
            }
        }
        vals[19] = if w > 0.0 {
            ((wi / w - centre.0).powi(2) + (wj / w - centre.1).powi(2)).sqrt()
        } else {
            f64::NAN
        };

        for v in vals {
            out[k] = v as f32;
            k += 1;
        }
    }
    for a in 0..c {
        for b in a + 1..c {
            out[k] = pearson(
                &crop[a * n..(a + 1) * n],
                &crop[b * n..(b + 1) * n],
                &sc.cell,
            ) as f32;
            k += 1;
        }
    }
    debug_assert_eq!(k, out.len());
}
