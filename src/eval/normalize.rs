//! Per-batch normalisation against the batch's NTC cells (evaluation.md §1.1), feature by feature, and the
//! PCA that follows `robust`. Statistics are f64; the cell matrix is streamed, never copied whole.
//!
//! Key decisions: `robust` is pycytominer `RobustMAD` (median, 1.4826·MAD, ε = 1e-18; even counts take the
//! mean of the two middle values as pandas/numpy do); PCA has scikit-learn `PCA(n_components=f)`
//! semantics (mean-centred, ddof = 1, smallest k with cumulative explained-variance ratio **strictly**
//! greater than f, components sign-fixed as `svd_flip(u_based_decision=False)`), fitted on the covariance
//! with nalgebra's symmetric eigendecomposition (the number of features, not of cells, sets its cost).
//! A feature whose NTC MAD is exactly 0 in some batch (e.g. a solidity that is 1 for every digital nucleus)
//! has no usable scale: RobustMAD's ε would multiply it by 1e18 and let it dominate every similarity. Such
//! features are dropped (set to 0 everywhere) before the PCA, as pycytominer's variance-threshold feature
//! selection would, and their number is reported.
use super::io::{CellTable, Features};
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::str::FromStr;

/// Normalisation methods of evaluation.md §1.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Zscore,
    Robust,
    Center,
    None,
}

impl FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "zscore" => Method::Zscore,
            "robust" => Method::Robust,
            "center" => Method::Center,
            "none" => Method::None,
            _ => bail!("unknown normalisation `{s}`; HINT: one of zscore, robust, center, none"),
        })
    }
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Zscore => "zscore",
            Method::Robust => "robust",
            Method::Center => "center",
            Method::None => "none",
        }
    }
}

/// A fitted PCA. mean: (D), components: (K, D) row-major, ratio: explained-variance ratio of every
/// eigenvalue in descending order (min(N, D) entries).
#[derive(Clone, Debug)]
pub struct Pca {
    pub d: usize,
    pub k: usize,
    pub mean: Vec<f64>,
    pub components: Vec<f64>,
    pub ratio: Vec<f64>,
}

/// scikit-learn's component count for a variance fraction f in (0, 1):
/// `searchsorted(cumsum(ratio), f, side="right") + 1`, i.e. the smallest k with cumsum[k-1] > f, capped
/// at ratio.len(). f ≥ 1 keeps every component.
pub fn n_components(ratio: &[f64], f: f64) -> usize {
    if f >= 1.0 {
        return ratio.len();
    }
    let mut c = 0.0f64;
    let mut below = 0;
    for r in ratio {
        c += r;
        if c <= f {
            below += 1;
        } else {
            break;
        }
    }
    (below + 1).min(ratio.len()).max(1)
}

impl Pca {
    /// From the mean (D) and the covariance cov: (D, D) (ddof = 1) of `n_samples` rows.
    pub fn from_covariance(mean: Vec<f64>, cov: &[f64], n_samples: usize, f: f64) -> Pca {
        let d = mean.len();
        let m = nalgebra::DMatrix::from_row_slice(d, d, cov);
        let eig = nalgebra::SymmetricEigen::new(m);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let max_k = n_samples.min(d).max(1);
        let ev: Vec<f64> = order[..max_k]
            .iter()
            .map(|&i| eig.eigenvalues[i].max(0.0))
            .collect();
        let total: f64 = order.iter().map(|&i| eig.eigenvalues[i].max(0.0)).sum();
        let ratio: Vec<f64> = ev
            .iter()
            .map(|e| if total > 0.0 { e / total } else { 0.0 })
            .collect();
        let k = n_components(&ratio, f);
        let mut components = vec![0.0; k * d];
        for (r, &i) in order[..k].iter().enumerate() {
            let v = eig.eigenvectors.column(i);
            // svd_flip(u_based_decision=False): the largest |entry| of each component is positive.
            let mut big = 0;
            for j in 0..d {
                if v[j].abs() > v[big].abs() {
                    big = j;
                }
            }
            let s = if v[big] < 0.0 { -1.0 } else { 1.0 };
            for j in 0..d {
                components[r * d + j] = s * v[j];
            }
        }
        Pca {
            d,
            k,
            mean,
            components,
            ratio,
        }
    }

    /// Fits on in-memory rows x: (N, D).
    pub fn fit(x: &[f64], n: usize, d: usize, f: f64) -> Pca {
        let mut mean = vec![0.0; d];
        for row in x.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0.0; d * d];
        for row in x.chunks_exact(d) {
            for a in 0..d {
                let da = row[a] - mean[a];
                for b in 0..d {
                    cov[a * d + b] += da * (row[b] - mean[b]);
                }
            }
        }
        let ddof = (n.max(2) - 1) as f64;
        cov.iter_mut().for_each(|c| *c /= ddof);
        Pca::from_covariance(mean, &cov, n, f)
    }

    /// out: (K) = (x − mean) · componentsᵀ; x: (D).
    pub fn project(&self, x: &[f64], out: &mut [f64]) {
        for (r, o) in out.iter_mut().enumerate().take(self.k) {
            let c = &self.components[r * self.d..(r + 1) * self.d];
            *o = c
                .iter()
                .zip(x.iter().zip(&self.mean))
                .map(|(c, (x, m))| c * (x - m))
                .sum();
        }
    }
}

/// The fitted normalisation: x' = (x − loc[b]) / scale[b] feature by feature, then the optional PCA.
/// loc, scale: (B, D).
#[derive(Clone, Debug)]
pub struct Normalizer {
    pub method: Method,
    pub d_in: usize,
    pub loc: Vec<f64>,
    pub scale: Vec<f64>,
    pub pca: Option<Pca>,
}

impl Normalizer {
    /// Width of the normalised (and projected) space.
    pub fn d_out(&self) -> usize {
        self.pca.as_ref().map_or(self.d_in, |p| p.k)
    }
    /// In place on one row x: (D) of batch b.
    pub fn affine(&self, b: usize, x: &mut [f64]) {
        let d = self.d_in;
        let (l, s) = (
            &self.loc[b * d..(b + 1) * d],
            &self.scale[b * d..(b + 1) * d],
        );
        for j in 0..d {
            x[j] = (x[j] - l[j]) / s[j];
        }
    }
    /// The PCA projection (or a copy when there is none) of an affinely normalised x: (D) → (d_out).
    pub fn project(&self, x: &[f64]) -> Vec<f64> {
        match &self.pca {
            Some(p) => {
                let mut o = vec![0.0; p.k];
                p.project(x, &mut o);
                o
            }
            None => x.to_vec(),
        }
    }
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Location and scale (D) of one batch's NTC rows x: (M, D) for `method`.
pub fn batch_stats(x: &[f64], m: usize, d: usize, method: Method) -> (Vec<f64>, Vec<f64>) {
    let mut loc = vec![0.0; d];
    let mut scale = vec![1.0; d];
    match method {
        Method::None => {}
        Method::Zscore | Method::Center => {
            for row in x.chunks_exact(d) {
                for (l, v) in loc.iter_mut().zip(row) {
                    *l += v;
                }
            }
            loc.iter_mut().for_each(|l| *l /= m as f64);
            if method == Method::Zscore {
                let mut var = vec![0.0; d];
                for row in x.chunks_exact(d) {
                    for j in 0..d {
                        var[j] += (row[j] - loc[j]) * (row[j] - loc[j]);
                    }
                }
                for j in 0..d {
                    scale[j] = (var[j] / m as f64).sqrt() + 1e-6;
                }
            }
        }
        Method::Robust => {
            let mut col = vec![0.0; m];
            for j in 0..d {
                for (c, row) in col.iter_mut().zip(x.chunks_exact(d)) {
                    *c = row[j];
                }
                col.sort_by(f64::total_cmp);
                let med = median_sorted(&col);
                for c in col.iter_mut() {
                    *c = (*c - med).abs();
                }
                col.sort_by(f64::total_cmp);
                loc[j] = med;
                scale[j] = 1.4826 * median_sorted(&col) + 1e-18;
            }
        }
    }
    (loc, scale)
}

/// Fits the per-batch statistics on each batch's NTC cells and, when `pca` is Some(f), a PCA on all
/// normalised cells. Errors when a batch has no NTC cell and the method needs one.
pub fn fit(
    feat: &Features,
    table: &CellTable,
    method: Method,
    pca: Option<f64>,
    log: &dyn Fn(&str),
) -> Result<Normalizer> {
    let (nb, d) = (table.batches.len(), feat.d);
    let mut ntc: Vec<Vec<usize>> = vec![Vec::new(); nb];
    for i in 0..table.len() {
        if table.is_ntc[i] {
            ntc[table.batch[i] as usize].push(i);
        }
    }
    if method != Method::None {
        if let Some(b) = ntc.iter().position(|v| v.is_empty()) {
            bail!(
                "batch `{}` has no NTC cell, so `--normalize {}` cannot be fitted for it; HINT: check the \
                 is_ntc column, or use --normalize none",
                table.batches.names[b],
                method.name()
            );
        }
    }
    let stats: Vec<(Vec<f64>, Vec<f64>)> = ntc
        .par_iter()
        .map(|cells| -> Result<_> {
            let mut x = vec![0.0; cells.len() * d];
            for (r, &i) in cells.iter().enumerate() {
                feat.row_into(i, &mut x[r * d..(r + 1) * d])?;
            }
            Ok(batch_stats(&x, cells.len(), d, method))
        })
        .collect::<Result<_>>()?;
    let mut norm = Normalizer {
        method,
        d_in: d,
        loc: stats.iter().flat_map(|s| s.0.iter().copied()).collect(),
        scale: stats.iter().flat_map(|s| s.1.iter().copied()).collect(),
        pca: None,
    };
    if method == Method::Robust {
        let zero_mad: Vec<usize> = (0..d)
            .filter(|&j| (0..nb).any(|b| norm.scale[b * d + j] <= 1e-18))
            .collect();
        for &j in &zero_mad {
            for b in 0..nb {
                // (x − loc)/∞ = 0: the feature no longer contributes.
                norm.scale[b * d + j] = f64::INFINITY;
            }
        }
        if !zero_mad.is_empty() {
            log(&format!(
                "robust: {} of {d} features have zero NTC MAD in some batch and are dropped",
                zero_mad.len()
            ));
        }
    }
    if let Some(f) = pca {
        log(&format!(
            "pca: fitting on {} normalised cells × {d} features",
            feat.n
        ));
        norm.pca = Some(fit_pca(feat, table, &norm, f)?);
        let p = norm.pca.as_ref().unwrap();
        log(&format!(
            "pca: {} components explain {:.4} of the variance (threshold {f})",
            p.k,
            p.ratio[..p.k].iter().sum::<f64>()
        ));
    }
    Ok(norm)
}

const CHUNK: usize = 2048;

/// PCA over all normalised cells, streamed in chunks of rows: one pass for the mean, one for the
/// covariance (a GEMM per chunk, accumulated).
fn fit_pca(feat: &Features, table: &CellTable, norm: &Normalizer, f: f64) -> Result<Pca> {
    let (n, d) = (feat.n, feat.d);
    if n < 2 {
        bail!("PCA needs at least 2 cells, got {n}");
    }
    let load = |start: usize, buf: &mut [f64]| -> Result<usize> {
        let rows = (n - start).min(CHUNK);
        buf[..rows * d]
            .par_chunks_mut(d)
            .enumerate()
            .try_for_each(|(r, row)| -> Result<()> {
                feat.row_into(start + r, row)?;
                norm.affine(table.batch[start + r] as usize, row);
                Ok(())
            })?;
        Ok(rows)
    };
    let mut buf = vec![0.0; CHUNK * d];
    let mut mean = vec![0.0; d];
    for start in (0..n).step_by(CHUNK) {
        let rows = load(start, &mut buf)?;
        for row in buf[..rows * d].chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0; d * d];
    for start in (0..n).step_by(CHUNK) {
        let rows = load(start, &mut buf)?;
        buf[..rows * d].par_chunks_mut(d).for_each(|row| {
            for (v, m) in row.iter_mut().zip(&mean) {
                *v -= m;
            }
        });
        // SAFETY: cov is (d, d) with row stride d; lhs = bufᵀ: element (a, r) = buf[r·d + a] (col stride d,
        // row stride 1) over rows r < rows ≤ CHUNK; rhs = buf (rows, d) row-major. All in bounds.
        unsafe {
            gemm::gemm(
                d,
                d,
                rows,
                cov.as_mut_ptr(),
                1,
                d as isize,
                true,
                buf.as_ptr(),
                d as isize,
                1,
                buf.as_ptr(),
                1,
                d as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
    }
    cov.iter_mut().for_each(|c| *c /= (n - 1) as f64);
    Ok(Pca::from_covariance(mean, &cov, n, f))
}
