//! The eval's figures and the TSVs behind them: `pr_curve`, `similarity_hist`, `adjacency` and `pca`
//! (`plot` draws them; `setdino report` redraws them from the TSVs alone).
use super::profiles::Consensus;
use super::{complexes, recall, ConsensusMetrics};
use crate::plot::{self, adjacency, hist, pr, scatter, Formats};
use crate::util::tsv;
use anyhow::Result;
use std::collections::HashMap;
use std::path::Path;

/// Most genes drawn in the adjacency picture.
pub const ADJACENCY_MAX_GENES: usize = 400;

/// The figure titles (shared with `setdino report`, which has only the label).
pub fn titles(label: &str) -> [String; 4] {
    [
        format!("Precision–recall of known complex pairs: {label}"),
        format!("Gene-pair similarities, related vs all: {label}"),
        format!("Known complexes vs predicted pairs: {label}"),
        format!("Gene profiles on their first two principal components: {label}"),
    ]
}

/// Writes the four TSVs and figures into `out`.
pub fn write(
    out: &Path,
    label: &str,
    names: &[&str],
    cons: &Consensus,
    cx: &complexes::Complexes,
    cm: &ConsensusMetrics,
    formats: Formats,
) -> Result<()> {
    let [t_pr, t_hist, t_adj, t_pca] = titles(label);
    let prs: Vec<pr::PrRow> = cm
        .recall
        .pr_curve
        .iter()
        .map(|p| pr::PrRow {
            top_percent: p.top_percent,
            threshold: p.threshold,
            n_above: p.n_above,
            related_above: p.related_above,
            precision: p.precision,
            recall: p.recall,
            null_pairs: cm.null.len(),
            related_pairs: cm.query.len(),
        })
        .collect();
    tsv::write(&out.join("pr_curve.tsv"), &prs)?;
    plot::save(
        &pr::PrCurve {
            title: t_pr,
            rows: prs,
        },
        &out.join("pr_curve"),
        formats,
    )?;

    let hrows = hist::rows(
        &recall::histogram(&cm.null, 100),
        &recall::histogram(&cm.query, 100),
    );
    tsv::write(&out.join("similarity_hist.tsv"), &hrows)?;
    plot::save(
        &hist::SimilarityHist {
            title: t_hist,
            rows: hrows,
        },
        &out.join("similarity_hist"),
        formats,
    )?;

    let (genes, rmat, pmat) = adjacency_matrices(names, cons, cx, cm);
    let adj = adjacency::Adjacency::from_matrices(t_adj, genes, &rmat, &pmat)?;
    tsv::write(&out.join("adjacency_genes.tsv"), &adj.genes)?;
    tsv::write(&out.join("adjacency.tsv"), &adj.pairs)?;
    plot::save(&adj, &out.join("adjacency"), formats)?;

    let first = first_complex(cx);
    let g = cons.genes.len();
    let (proj, (e1, e2)) = scatter::pca2(&cm.unit, g, cons.d);
    let prows: Vec<scatter::PcaRow> = names
        .iter()
        .zip(&proj)
        .map(|(n, p)| scatter::PcaRow {
            gene: n.to_string(),
            complex: first.get(n).map_or(String::new(), |c| c.to_string()),
            pc1: p.0,
            pc2: p.1,
            pc1_explained: e1,
            pc2_explained: e2,
        })
        .collect();
    tsv::write(&out.join("pca.tsv"), &prows)?;
    plot::save(
        &scatter::PcaScatter {
            title: t_pca,
            rows: prows,
        },
        &out.join("pca"),
        formats,
    )?;
    Ok(())
}

/// Each gene's first complex in file order.
fn first_complex(cx: &complexes::Complexes) -> HashMap<&str, &str> {
    let mut m = HashMap::new();
    for (name, genes) in &cx.complexes {
        for g in genes {
            m.entry(g.as_str()).or_insert(name.as_str());
        }
    }
    m
}

/// The related and predicted (top 5 % of the null) matrices over profiled genes in complex order
/// (first appearance in the complexes file), at most ADJACENCY_MAX_GENES genes. Returns the genes in
/// that order with the complex that placed each, and the two (m, m) row-major matrices.
fn adjacency_matrices(
    names: &[&str],
    cons: &Consensus,
    cx: &complexes::Complexes,
    cm: &ConsensusMetrics,
) -> (Vec<adjacency::GeneRow>, Vec<bool>, Vec<bool>) {
    let slot: HashMap<&str, usize> = names.iter().enumerate().map(|(k, &n)| (n, k)).collect();
    let mut order: Vec<(usize, &str)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    'outer: for (cname, genes) in &cx.complexes {
        for gname in genes {
            if let Some(&k) = slot.get(gname.as_str()) {
                if seen.insert(k) {
                    order.push((k, cname.as_str()));
                    if order.len() == ADJACENCY_MAX_GENES {
                        break 'outer;
                    }
                }
            }
        }
    }
    let m = order.len();
    let d = cons.d;
    let mut rmat = vec![false; m * m];
    let mut pmat = vec![false; m * m];
    for (a, &(i, _)) in order.iter().enumerate() {
        for (b, &(j, _)) in order.iter().enumerate() {
            if a == b {
                continue;
            }
            rmat[a * m + b] = cx.pairs.contains(&complexes::pair_key(names[i], names[j]));
            let s: f64 = cm.unit[i * d..(i + 1) * d]
                .iter()
                .zip(&cm.unit[j * d..(j + 1) * d])
                .map(|(x, y)| x * y)
                .sum();
            pmat[a * m + b] = !cm.null.is_empty() && recall::in_top(&cm.null, s, 0.95);
        }
    }
    let genes = order
        .iter()
        .enumerate()
        .map(|(index, &(k, c))| adjacency::GeneRow {
            index,
            gene: names[k].to_string(),
            complex: c.to_string(),
        })
        .collect();
    (genes, rmat, pmat)
}
