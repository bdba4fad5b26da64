//! `setdino report DIR`: redraws every figure whose TSV is in DIR (and in its subdirectories: an
//! experiment's `eval/<method>/seed<k>/`), from the saved numbers only. A training run directory
//! given as DIR (`log.jsonl` + `config.json`, no `curves.tsv`) first gets its `curves.tsv` from the logs.
use super::{adjacency, bars, curves, hist, pr, scatter, Formats};
use crate::util::tsv;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// How deep `regenerate` looks below DIR (experiment/eval/<method>/seed<k> is 3).
const DEPTH: usize = 3;

/// The label an eval directory's figures are titled with (run.json's `label`, else the directory name).
fn eval_label(dir: &Path) -> String {
    let from_run = std::fs::read(dir.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["label"].as_str().map(str::to_string));
    from_run.unwrap_or_else(|| {
        dir.file_name()
            .map_or("eval".into(), |s| s.to_string_lossy().to_string())
    })
}

/// Redraws the figures of `dir` (and below); returns the files written, in order.
pub fn regenerate(dir: &Path, formats: Formats) -> Result<Vec<PathBuf>> {
    anyhow::ensure!(dir.is_dir(), "{}: not a directory", dir.display());
    let mut out = Vec::new();
    walk(dir, formats, 0, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, formats: Formats, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    out.extend(one_dir(dir, formats, depth == 0)?);
    if depth == DEPTH {
        return Ok(());
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    for s in subs {
        walk(&s, formats, depth + 1, out)?;
    }
    Ok(())
}

/// The figures of one directory.
/// `top`: DIR itself, the only place a training run's logs are turned into curves.tsv (an experiment's
/// runs/ are drawn together in its own curves.png).
fn one_dir(dir: &Path, formats: Formats, top: bool) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let has = |f: &str| dir.join(f).is_file();
    if has("pr_curve.tsv") || has("similarity_hist.tsv") || has("adjacency.tsv") || has("pca.tsv") {
        let [t_pr, t_hist, t_adj, t_pca] = crate::eval::figures::titles(&eval_label(dir));
        if has("pr_curve.tsv") {
            let fig = pr::PrCurve {
                title: t_pr,
                rows: tsv::read(&dir.join("pr_curve.tsv"))?,
            };
            out.extend(super::save(&fig, &dir.join("pr_curve"), formats)?);
        }
        if has("similarity_hist.tsv") {
            let fig = hist::SimilarityHist {
                title: t_hist,
                rows: tsv::read(&dir.join("similarity_hist.tsv"))?,
            };
            out.extend(super::save(&fig, &dir.join("similarity_hist"), formats)?);
        }
        if has("adjacency.tsv") && has("adjacency_genes.tsv") {
            let fig = adjacency::Adjacency {
                title: t_adj,
                genes: tsv::read(&dir.join("adjacency_genes.tsv"))?,
                pairs: tsv::read(&dir.join("adjacency.tsv"))?,
            };
            check_adjacency(dir, &fig)?;
            out.extend(super::save(&fig, &dir.join("adjacency"), formats)?);
        }
        if has("pca.tsv") {
            let fig = scatter::PcaScatter {
                title: t_pca,
                rows: tsv::read(&dir.join("pca.tsv"))?,
            };
            out.extend(super::save(&fig, &dir.join("pca"), formats)?);
        }
    }
    if has("comparison.tsv") {
        let fig = bars::Comparison {
            title: bars_title(),
            rows: tsv::read(&dir.join("comparison.tsv"))?,
        };
        out.extend(super::save(&fig, &dir.join("comparison"), formats)?);
    }
    if top && !has("curves.tsv") && has("log.jsonl") && has("config.json") {
        let (method, seed) = curves::run_label(dir)?;
        let rows = curves::rows_from_run(&method, seed, dir)?;
        tsv::write(&dir.join("curves.tsv"), &rows)?;
        out.push(dir.join("curves.tsv"));
    }
    if has("curves.tsv") {
        let fig = curves::Curves {
            title: curves_title(),
            rows: tsv::read(&dir.join("curves.tsv"))?,
        };
        out.extend(super::save(&fig, &dir.join("curves"), formats)?);
    }
    Ok(out)
}

/// Indices in adjacency.tsv must point into adjacency_genes.tsv.
fn check_adjacency(dir: &Path, a: &adjacency::Adjacency) -> Result<()> {
    let m = a.genes.len();
    if let Some((k, p)) = a
        .pairs
        .iter()
        .enumerate()
        .find(|(_, p)| p.i >= m || p.j >= m || p.i >= p.j)
    {
        anyhow::bail!(
            "{}: line {}: pair ({}, {}) is not i < j < {m} (the genes in adjacency_genes.tsv)",
            dir.join("adjacency.tsv").display(),
            k + 2,
            p.i,
            p.j
        );
    }
    Ok(())
}

/// The experiment's figure titles.
pub fn bars_title() -> String {
    "Methods compared on the held-out plates (Table 1 metrics)".into()
}
pub fn curves_title() -> String {
    "Training curves".into()
}
