//! Validation during training (algorithm.md §8.1): embed the held-out cells with the student backbone
//! (as the reference's Lightning validation does), z-score each feature against the NTC cells of its well,
//! average per (well, gene) into batch-level profiles, drop NTC profiles, and report gene and batch KNN@5
//! (`setdino eval`'s exact kNN and vote rules) and the collapse monitor: the singular values d of the
//! covariance of the profiles, `ratio_svg` = 100·#(d > 1e-4)/features and `median_svg` = median(log d).
//! With a complexes file (`train.val_complexes`), also the known-complex recall at 5 % of gene profiles
//! (each gene's batch-level profiles averaged), the signal the experiment's sweep selects on: per-well
//! gene KNN@5 sits near chance when a gene has few cells per well.
use crate::backend::Backend;
use crate::data::augment::plain_view;
use crate::data::normalize::Normalizer;
use crate::engine::Engine;
use crate::eval::complexes::Complexes;
use crate::eval::{consensus_metrics, node_metrics, Log, NodeLabels};
use crate::store::Store;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One validation result.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ValMetrics {
    pub step: u64,
    pub epoch: u64,
    /// KNN@5 accuracy of the gene label (higher: reproducible phenotypes).
    pub val_top5_gene: f64,
    /// KNN@5 accuracy of the batch (well) label (lower: less batch effect).
    pub val_top5_batch: f64,
    pub ratio_svg: f64,
    pub median_svg: f64,
    pub profiles: usize,
    /// Known-complex recall at 5 % of the validation cells' gene profiles (when complexes are given and
    /// at least one related pair is profiled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_recall5: Option<f64>,
}

/// Embeddings (N, D) of `cells` with the student backbone.
fn embed_cells<B: Backend>(
    eng: &mut Engine<B>,
    store: &Store,
    norm: &Normalizer,
    cells: &[u32],
) -> Result<(Vec<f32>, usize)> {
    // The global training views' size, as `setdino embed` uses by default.
    let side = eng.cfg.global_size;
    let cl = store.channels() * side * side;
    let mut out = Vec::new();
    let mut dim = 0;
    for chunk in cells.chunks(256) {
        let mut host = vec![0f32; chunk.len() * cl];
        for (buf, &k) in host.chunks_mut(cl).zip(chunk) {
            plain_view(store, k as usize, norm, side, buf)?;
        }
        let imgs = eng.be.upload(&host)?;
        let (e, d) = eng.embed(&imgs, chunk.len(), side, false)?;
        dim = d;
        out.extend(e);
    }
    Ok((out, dim))
}

/// Validation on `cells` (their wells are the batches).
pub fn validate<B: Backend>(
    eng: &mut Engine<B>,
    store: &Store,
    norm: &Normalizer,
    cells: &[u32],
    complexes: Option<&Complexes>,
    step: u64,
    epoch: u64,
) -> Result<ValMetrics> {
    let (x, d) = embed_cells(eng, store, norm, cells)?;
    let n = cells.len();
    let rec = |i: usize| store.record(cells[i] as usize);
    // NTC z-score per well (population std; + 1e-6 keeps a constant feature finite).
    let mut by_batch: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        by_batch.entry(rec(i).batch).or_default().push(i);
    }
    let mut z = vec![0f64; n * d];
    for rows in by_batch.values() {
        let ntc: Vec<usize> = rows.iter().copied().filter(|&i| rec(i).is_ntc()).collect();
        ensure!(
            !ntc.is_empty(),
            "validation: a well without NTC cells cannot be standardised"
        );
        for j in 0..d {
            let m = ntc.iter().map(|&i| x[i * d + j] as f64).sum::<f64>() / ntc.len() as f64;
            let v = ntc
                .iter()
                .map(|&i| (x[i * d + j] as f64 - m).powi(2))
                .sum::<f64>()
                / ntc.len() as f64;
            let s = v.sqrt() + 1e-6;
            for &i in rows {
                z[i * d + j] = (x[i * d + j] as f64 - m) / s;
            }
        }
    }
    // Batch-level profiles of the non-NTC genes.
    let mut groups: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        if !rec(i).is_ntc() {
            groups
                .entry((rec(i).batch, rec(i).gene))
                .or_default()
                .push(i);
        }
    }
    let np = groups.len();
    ensure!(
        np >= 6,
        "validation needs at least 6 (well, gene) profiles, got {np}"
    );
    let mut prof = vec![0f32; np * d];
    let mut batch_ids: Vec<u32> = Vec::with_capacity(np);
    let mut gene_ids: Vec<u32> = Vec::with_capacity(np);
    let mut batch_map: BTreeMap<u32, u32> = BTreeMap::new();
    for (p, ((b, g), rows)) in groups.iter().enumerate() {
        for j in 0..d {
            prof[p * d + j] =
                (rows.iter().map(|&i| z[i * d + j]).sum::<f64>() / rows.len() as f64) as f32;
        }
        let nb = batch_map.len() as u32;
        batch_ids.push(*batch_map.entry(*b).or_insert(nb));
        gene_ids.push(*g);
    }
    let val_recall5 = complexes.and_then(|cx| {
        let names = &store.manifest().genes;
        gene_recall5(&prof, &gene_ids, d, names, cx)
    });
    let labels = NodeLabels {
        batch: batch_ids,
        n_batches: batch_map.len(),
        pos_key: gene_ids.clone(),
        neg_key: gene_ids,
        query: vec![true; np],
    };
    let m = node_metrics(&prof, np, d, &labels, &Log::new(false));
    let (ratio_svg, median_svg) = collapse_monitor(&prof, np, d);
    Ok(ValMetrics {
        step,
        epoch,
        val_top5_gene: m.repro_knn5,
        val_top5_batch: m.batch_knn5,
        ratio_svg,
        median_svg,
        profiles: np,
        val_recall5,
    })
}

/// Recall at 5 % of the gene profiles: each gene's batch-level profiles (rows of `prof` with their gene
/// ids) averaged, against `cx`. None when no related pair is among the profiled genes.
fn gene_recall5(
    prof: &[f32],
    gene_ids: &[u32],
    d: usize,
    names: &[String],
    cx: &Complexes,
) -> Option<f64> {
    let mut by_gene: BTreeMap<u32, (Vec<f64>, usize)> = BTreeMap::new();
    for (row, &g) in prof.chunks_exact(d).zip(gene_ids) {
        let e = by_gene.entry(g).or_insert_with(|| (vec![0.0; d], 0));
        for (a, &v) in e.0.iter_mut().zip(row) {
            *a += v as f64;
        }
        e.1 += 1;
    }
    let g = by_gene.len();
    let mut x = Vec::with_capacity(g * d);
    let mut gene_names = Vec::with_capacity(g);
    for (id, (sum, n)) in &by_gene {
        x.extend(sum.iter().map(|v| (v / *n as f64) as f32));
        gene_names.push(names.get(*id as usize).map_or("", String::as_str));
    }
    let m = consensus_metrics(&x, g, d, &gene_names, cx, &Log::new(false));
    (m.recall.n_query > 0).then_some(m.recall.recall_top5)
}

/// (100·#(d > 1e-4)/D, median(log d)) of the singular values d of the covariance of rows x: (n, D).
pub fn collapse_monitor(x: &[f32], n: usize, d: usize) -> (f64, f64) {
    let mut mean = vec![0f64; d];
    for row in x.chunks_exact(d) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64 / n as f64;
        }
    }
    let mut cov = nalgebra::DMatrix::<f64>::zeros(d, d);
    for row in x.chunks_exact(d) {
        let c: Vec<f64> = row.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
        for a in 0..d {
            for b in a..d {
                cov[(a, b)] += c[a] * c[b];
            }
        }
    }
    let den = (n.max(2) - 1) as f64;
    for a in 0..d {
        for b in a..d {
            let v = cov[(a, b)] / den;
            cov[(a, b)] = v;
            cov[(b, a)] = v;
        }
    }
    // A symmetric PSD matrix: its singular values are the absolute eigenvalues.
    let mut s: Vec<f64> = nalgebra::SymmetricEigen::new(cov)
        .eigenvalues
        .iter()
        .map(|v| v.abs())
        .collect();
    s.sort_by(f64::total_cmp);
    let ratio = 100.0 * s.iter().filter(|&&v| v > 1e-4).count() as f64 / d as f64;
    let logs: Vec<f64> = s.iter().map(|v| v.max(1e-300).ln()).collect();
    let median = if logs.len() % 2 == 1 {
        logs[logs.len() / 2]
    } else {
        (logs[logs.len() / 2 - 1] + logs[logs.len() / 2]) / 2.0
    };
    (ratio, median)
}
