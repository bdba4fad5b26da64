//! Eval outputs (evaluation.md §4): `metrics.json` (flat, exactly the spec's keys, fractions; an
//! undefined metric is `null`), `report.md` (the paper's Table 1 row in %), `per_gene.tsv`,
//! `pairs.tsv`, and `run.json` (settings and extra counts, kept out of metrics.json).
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// metrics.json, field names exactly as evaluation.md §4.
#[derive(Clone, Debug, Serialize)]
pub struct Metrics {
    pub batch_knn5: f64,
    pub batch_gc5: f64,
    pub repro_knn5: f64,
    pub repro_map: f64,
    pub recall_top5: f64,
    pub recall_top10: f64,
    pub recall2_5: f64,
    pub recall2_10: f64,
    pub pr_auc: f64,
    pub ks: f64,
    pub cells: usize,
    pub genes: usize,
    pub batches: usize,
    pub profiles: usize,
    pub query_pairs: usize,
}

/// One row of per_gene.tsv.
#[derive(Clone, Debug)]
pub struct GeneRow {
    pub gene: String,
    pub profiles: usize,
    pub cells: usize,
    pub map: f64,
    pub map_queries: usize,
    pub repro_knn5: f64,
    pub related_pairs: usize,
    pub related_in_top5: usize,
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.2}", 100.0 * v)
    } else {
        "n/a".into()
    }
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "nan".into()
    }
}

/// Writes metrics.json.
pub fn write_metrics(path: &Path, m: &Metrics) -> Result<()> {
    let s = serde_json::to_string_pretty(m)? + "\n";
    crate::util::atomic::write_atomic(path, s.as_bytes())
}

/// The Table 1 header and row (percentages) for `label`.
pub fn table1(label: &str, m: &Metrics) -> String {
    format!(
        "| features | batch KNN@5 ↓ | batch GC@5 ↓ | repro KNN@5 ↑ | repro mAP ↑ | recall 5% ↑ | recall 10% ↑ |\n\
         |---|---|---|---|---|---|---|\n\
         | {label} | {} | {} | {} | {} | {} | {} |\n",
        pct(m.batch_knn5),
        pct(m.batch_gc5),
        pct(m.repro_knn5),
        pct(m.repro_map),
        pct(m.recall_top5),
        pct(m.recall_top10)
    )
}

/// Writes report.md: the Table 1 row, the other recall numbers, counts, settings, the figures and
/// `galleries` (the "Galleries" section, `crate::gallery::report`).
pub fn write_report(
    path: &Path,
    label: &str,
    m: &Metrics,
    settings: &[(String, String)],
    galleries: &str,
) -> Result<()> {
    let mut s = String::new();
    writeln!(s, "# setdino eval: {label}\n")?;
    writeln!(s, "{}", table1(label, m))?;
    writeln!(
        s,
        "| two-tailed recall 5% | two-tailed recall 10% | pr_auc | KS |\n|---|---|---|---|\n| {} | {} | {} | {} |\n",
        pct(m.recall2_5),
        pct(m.recall2_10),
        pct(m.pr_auc),
        if m.ks.is_finite() { format!("{:.4}", m.ks) } else { "n/a".into() }
    )?;
    writeln!(
        s,
        "Counts: {} cells, {} batches, {} batch-level profiles, {} genes with a consensus profile, {} related pairs with both genes profiled.\n",
        m.cells, m.batches, m.profiles, m.genes, m.query_pairs
    )?;
    writeln!(s, "Settings:\n")?;
    for (k, v) in settings {
        writeln!(s, "- {k}: {v}")?;
    }
    writeln!(
        s,
        "\nDefinitions: `evaluation.md` (batch-level profiles for KNN, GC and mAP; consensus profiles for recall). \
         Values are percentages; `metrics.json` holds the same numbers as fractions.\n"
    )?;
    s.push_str(&figures_md());
    s.push_str(galleries);
    crate::util::atomic::write_atomic(path, s.as_bytes())
}

/// Writes per_gene.tsv (one line per gene with a consensus profile).
pub fn write_per_gene(path: &Path, rows: &[GeneRow]) -> Result<()> {
    let mut s = String::from(
        "gene\tprofiles\tcells\tmap\tmap_queries\trepro_knn5\trelated_pairs\trelated_in_top5\n",
    );
    for r in rows {
        writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.gene,
            r.profiles,
            r.cells,
            num(r.map),
            r.map_queries,
            num(r.repro_knn5),
            r.related_pairs,
            r.related_in_top5
        )?;
    }
    crate::util::atomic::write_atomic(path, s.as_bytes())
}

/// Writes pairs.tsv: one line per known complex pair with both consensus profiles (the recall's
/// queries): the genes, their cosine similarity, the fraction of the null strictly below it, and
/// whether it is in the top 5 % / 10 % (the one-tailed rule of recall_top5 / recall_top10). The
/// experiment's bootstrap over pairs resamples these lines.
pub fn write_pairs(
    path: &Path,
    names: &[&str],
    pairs: &[(u32, u32)],
    query: &[f64],
    null: &[f64],
) -> Result<()> {
    use super::recall::{below, in_top};
    let mut s = String::from("gene_a\tgene_b\tcosine\tnull_below\ttop5\ttop10\n");
    for (&(a, b), &q) in pairs.iter().zip(query) {
        let frac = if null.is_empty() {
            f64::NAN
        } else {
            below(null, q) as f64 / null.len() as f64
        };
        writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{}",
            names[a as usize],
            names[b as usize],
            num(q),
            num(frac),
            u8::from(!null.is_empty() && in_top(null, q, 0.95)),
            u8::from(!null.is_empty() && in_top(null, q, 0.9))
        )?;
    }
    crate::util::atomic::write_atomic(path, s.as_bytes())
}

/// The figures section of an eval's report.md: each figure with a one-line caption and its data file.
pub fn figures_md() -> String {
    let mut s = String::from("## Figures\n\n");
    for (file, alt, caption) in [
        (
            "pr_curve",
            "precision-recall",
            "Precision and recall of the known complex pairs when the top 1 … 20 % of all gene-pair \
             similarities are called related; the dashed line is chance (the related fraction of all pairs).",
        ),
        (
            "similarity_hist",
            "similarity histograms",
            "Cosine similarity of the known related pairs against all gene pairs (the null), as densities: \
             the further right the related pairs sit, the better the profiles recall complexes.",
        ),
        (
            "adjacency",
            "adjacency",
            "Genes in complex order: known related pairs (left) next to the pairs in the top 5 % of \
             similarities (right); a good embedding repeats the left panel's squares on the right.",
        ),
        (
            "pca",
            "PCA of gene profiles",
            "Consensus gene profiles on their first two principal components, coloured by complex (the \
             eight largest); members of one complex should land together.",
        ),
    ] {
        let _ = writeln!(s, "![{alt}]({file}.png)\n\n{caption} Data: `{file}.tsv`.\n");
    }
    s
}
