//! `setdino eval`: per-cell features → batch-level and consensus gene profiles → batch effect,
//! reproducibility and known-complex recall, exactly as `evaluation.md` defines them.
//!
//! Pipeline (one file per concern): [`io`] reads `STEM.npy` (memory-mapped) + `STEM.tsv` (or setdino's
//! `STEM.parquet` / AnnData `STEM.zarr`);
//! [`normalize`] fits per-batch NTC statistics (and the PCA after `robust`); [`profiles`] averages cells
//! into nodes P[g, b] and consensus C[g]; [`knn`] streams blocked cosine similarities and keeps per-query
//! top-5 lists, [`map`] the per-query AP from the same rows; [`graph`] gives GC@5; [`complexes`] and
//! [`recall`] the consensus metrics; [`report`] and [`plots`] write the outputs.
//!
//! Decisions: the default normalisation is `zscore` (the learned-embedding default of the spec; pass
//! `--normalize robust` for engineered features, which implies `--pca 0.95`); metrics are computed from
//! the f32 profiles exactly as `--dump-profiles` writes them, in f64; memory is O(cells × 3 u32 +
//! profiles × D + genes²/2 f64) and no profiles² matrix exists at once.
pub mod complexes;
pub mod figures;
pub mod graph;
pub mod io;
pub mod knn;
pub mod map;
pub mod normalize;
pub mod profiles;
pub mod recall;
pub mod report;

use anyhow::{bail, Context, Result};
use profiles::{Consensus, Level, Nodes};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Label given to NTC nodes wherever a gene label is needed (never equal to a table gene id).
pub const NTC_LABEL: u32 = u32::MAX - 1;
/// k of every kNN metric.
pub const K: usize = 5;

/// Everything `setdino eval` takes.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub features: PathBuf,
    pub complexes: PathBuf,
    pub out: PathBuf,
    pub normalize: normalize::Method,
    /// Variance fraction of the PCA; None = no PCA.
    pub pca: Option<f64>,
    pub level: Level,
    pub include_ntc: bool,
    pub dump_profiles: Option<PathBuf>,
    /// Format of the dumped profiles (npy + tsv, Parquet or AnnData).
    pub dump_format: crate::formats::Format,
    /// Progress lines on stderr.
    pub verbose: bool,
    /// Figure files (PNG always; SVG too when asked).
    pub figures: crate::plot::Formats,
    /// The crop store of the cells: adds the report's cell galleries (`crate::gallery::report`).
    pub store: Option<PathBuf>,
}

/// Stderr progress with elapsed time; silent when not verbose.
pub struct Log {
    t0: Instant,
    verbose: bool,
}

impl Log {
    pub fn new(verbose: bool) -> Self {
        Log {
            t0: Instant::now(),
            verbose,
        }
    }
    pub fn say(&self, msg: &str) {
        if self.verbose {
            eprintln!("[{:7.1}s] eval: {msg}", self.t0.elapsed().as_secs_f64());
        }
    }
    /// A progress callback for blocked loops that prints about every 10 %.
    pub fn progress<'a>(&'a self, what: &'a str) -> impl Fn(usize, usize) + 'a {
        let last = std::sync::atomic::AtomicUsize::new(0);
        move |done, total| {
            let tenth = (done * 10) / total.max(1);
            if tenth > last.swap(tenth, std::sync::atomic::Ordering::Relaxed) {
                self.say(&format!("{what}: {done}/{total} rows"));
            }
        }
    }
}

/// Labels of the nodes for the batch-level metrics (evaluation.md §2).
/// batch: (n); pos_key: gene (or sgRNA at `--level sgrna`), NTC nodes get NTC_LABEL at gene level;
/// neg_key: gene, NTC_LABEL for NTC nodes; query: non-NTC nodes (the only reproducibility queries).
pub struct NodeLabels {
    pub batch: Vec<u32>,
    pub n_batches: usize,
    pub pos_key: Vec<u32>,
    pub neg_key: Vec<u32>,
    pub query: Vec<bool>,
}

impl NodeLabels {
    pub fn from_nodes(nodes: &Nodes, level: Level, n_batches: usize) -> Self {
        let neg_key: Vec<u32> = (0..nodes.n)
            .map(|i| {
                if nodes.is_ntc[i] {
                    NTC_LABEL
                } else {
                    nodes.gene[i]
                }
            })
            .collect();
        let pos_key = match level {
            Level::Gene => neg_key.clone(),
            Level::Sgrna => nodes.sgrna.clone(),
        };
        NodeLabels {
            batch: nodes.batch.clone(),
            n_batches,
            pos_key,
            neg_key,
            query: nodes.is_ntc.iter().map(|&t| !t).collect(),
        }
    }
}

/// Batch-level results: the four metrics, the neighbour lists, per-node AP and reproducibility hits.
pub struct NodeMetrics {
    pub batch_knn5: f64,
    pub batch_gc5: f64,
    pub repro_knn5: f64,
    pub repro_map: f64,
    pub neighbors: knn::Neighbors,
    pub ap: Vec<Option<f64>>,
    pub repro_hit: Vec<Option<bool>>,
}

/// Batch KNN@5, GC@5, reproducibility KNN@5 and mAP of nodes x: (n, d) f32 (one blocked pass).
pub fn node_metrics(x: &[f32], n: usize, d: usize, lab: &NodeLabels, log: &Log) -> NodeMetrics {
    let z = knn::unit_rows(x, n, d);
    let prog = log.progress("similarities of profiles");
    type Row = (Vec<(u32, f64)>, Option<f64>);
    let rows: Vec<Row> = knn::map_rows(
        &z,
        n,
        &z,
        n,
        d,
        |i, s| {
            let top = knn::top_k(s, i, K);
            let ap = if lab.query[i] {
                map::average_precision(s, |j| {
                    map::relation(&lab.pos_key, &lab.neg_key, &lab.batch, i, j)
                })
            } else {
                None
            };
            (top, ap)
        },
        &prog,
    );
    let (lists, ap): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
    let neighbors = knn::Neighbors { k: K, lists };
    let all = vec![true; n];
    let (batch_knn5, _) = knn::knn_accuracy(&neighbors, &lab.batch, &all);
    let (repro_knn5, repro_hit) = knn::knn_accuracy(&neighbors, &lab.pos_key, &lab.query);
    let (batch_gc5, _) = graph::graph_connectivity(&neighbors, &lab.batch, lab.n_batches);
    let defined: Vec<f64> = ap.iter().flatten().copied().collect();
    let repro_map = if defined.is_empty() {
        f64::NAN
    } else {
        defined.iter().sum::<f64>() / defined.len() as f64
    };
    NodeMetrics {
        batch_knn5,
        batch_gc5,
        repro_knn5,
        repro_map,
        neighbors,
        ap,
        repro_hit,
    }
}

/// Consensus results: the recall metrics, the sorted null, query pairs (consensus row indices) and
/// their similarities.
pub struct ConsensusMetrics {
    pub recall: recall::RecallMetrics,
    pub null: Vec<f64>,
    pub pairs: Vec<(u32, u32)>,
    pub query: Vec<f64>,
    pub unit: Vec<f64>,
}

/// Recall metrics of consensus profiles x: (G, d) whose gene names are `names` against `cx`.
pub fn consensus_metrics(
    x: &[f32],
    g: usize,
    d: usize,
    names: &[&str],
    cx: &complexes::Complexes,
    log: &Log,
) -> ConsensusMetrics {
    let idx: HashMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, i as u32))
        .collect();
    let pairs: Vec<(u32, u32)> = cx
        .pairs
        .iter()
        .filter_map(|(a, b)| Some((*idx.get(a.as_str())?, *idx.get(b.as_str())?)))
        .collect();
    let unit = knn::unit_rows(x, g, d);
    let prog = log.progress("similarities of gene pairs");
    let (null, query) = recall::null_and_query(&unit, g, d, &pairs, &prog);
    let recall = recall::metrics(&null, &query);
    ConsensusMetrics {
        recall,
        null,
        pairs,
        query,
        unit,
    }
}

fn fmt_opt(v: f64) -> String {
    format!("{:.4}", v)
}

/// Runs the whole evaluation and writes every output into `opts.out`.
pub fn run(opts: &EvalOptions) -> Result<report::Metrics> {
    let log = Log::new(opts.verbose);
    let (table, feat, npy) = io::open_features(&opts.features)?;
    if feat.d == 0 || feat.n == 0 {
        bail!(
            "{}: no cells or no features ({} × {})",
            npy.display(),
            feat.n,
            feat.d
        );
    }
    let cx = complexes::read(&opts.complexes)?;
    log.say(&format!(
        "{} cells × {} features, {} batches, {} genes; complexes: {:?}, {} complexes, {} related pairs",
        feat.n,
        feat.d,
        table.batches.len(),
        table.genes.len(),
        cx.format,
        cx.complexes.len(),
        cx.pairs.len()
    ));
    let norm = normalize::fit(&feat, &table, opts.normalize, opts.pca, &|m| log.say(m))?;
    log.say(&format!("normalised ({})", opts.normalize.name()));
    let prof = profiles::build(&feat, &table, &norm, opts.level, opts.include_ntc)?;
    let (nodes, cons) = (&prof.nodes, &prof.consensus);
    log.say(&format!(
        "{} batch-level profiles, {} consensus gene profiles, dim {}",
        nodes.n,
        cons.genes.len(),
        nodes.d
    ));
    warn_unmatched_complexes(&opts.complexes, &cx, &table, cons, &log);
    if let Some(b) = prof.has_ntc.iter().position(|&h| !h) {
        log.say(&format!(
            "warning: batch `{}` has no NTC cell; its consensus centring uses 0",
            table.batches.names[b]
        ));
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating output directory {}", opts.out.display()))?;
    if let Some(dir) = &opts.dump_profiles {
        dump_profiles(dir, &table, nodes, cons, &cx, opts)?;
        log.say(&format!("profiles dumped to {}", dir.display()));
    }
    let lab = NodeLabels::from_nodes(nodes, opts.level, table.batches.len());
    let nm = node_metrics(&nodes.x, nodes.n, nodes.d, &lab, &log);
    log.say(&format!(
        "batch KNN@5 {} | GC@5 {} | repro KNN@5 {} | mAP {}",
        fmt_opt(nm.batch_knn5),
        fmt_opt(nm.batch_gc5),
        fmt_opt(nm.repro_knn5),
        fmt_opt(nm.repro_map)
    ));
    let names: Vec<&str> = cons
        .genes
        .iter()
        .map(|&g| table.genes.names[g as usize].as_str())
        .collect();
    let cm = consensus_metrics(&cons.x, cons.genes.len(), cons.d, &names, &cx, &log);
    let r = &cm.recall;
    log.say(&format!(
        "{} null pairs, {} query pairs | recall@5% {} | @10% {} | pr_auc {} | KS {}",
        r.n_null,
        r.n_query,
        fmt_opt(r.recall_top5),
        fmt_opt(r.recall_top10),
        fmt_opt(r.pr_auc),
        fmt_opt(r.ks)
    ));
    let metrics = report::Metrics {
        batch_knn5: nm.batch_knn5,
        batch_gc5: nm.batch_gc5,
        repro_knn5: nm.repro_knn5,
        repro_map: nm.repro_map,
        recall_top5: r.recall_top5,
        recall_top10: r.recall_top10,
        recall2_5: r.recall2_5,
        recall2_10: r.recall2_10,
        pr_auc: r.pr_auc,
        ks: r.ks,
        cells: table.len(),
        genes: cons.genes.len(),
        batches: table.batches.len(),
        profiles: nodes.n,
        query_pairs: r.n_query,
    };
    write_outputs(opts, &table, nodes, cons, &nm, &cm, &cx, &norm, &metrics)?;
    log.say(&format!("wrote {}", opts.out.display()));
    Ok(metrics)
}

#[allow(clippy::too_many_arguments)]
fn write_outputs(
    opts: &EvalOptions,
    table: &io::CellTable,
    nodes: &Nodes,
    cons: &Consensus,
    nm: &NodeMetrics,
    cm: &ConsensusMetrics,
    cx: &complexes::Complexes,
    norm: &normalize::Normalizer,
    m: &report::Metrics,
) -> Result<()> {
    let out = &opts.out;
    report::write_metrics(&out.join("metrics.json"), m)?;
    let label = opts
        .features
        .file_name()
        .map_or("features".into(), |s| s.to_string_lossy().to_string());
    let pca = norm.pca.as_ref().map_or("none".to_string(), |p| {
        format!(
            "{} components (variance fraction {})",
            p.k,
            opts.pca.unwrap_or(0.0)
        )
    });
    let settings = vec![
        ("features".to_string(), opts.features.display().to_string()),
        (
            "complexes".to_string(),
            format!("{} ({:?})", opts.complexes.display(), cx.format),
        ),
        (
            "normalisation".to_string(),
            opts.normalize.name().to_string(),
        ),
        ("pca".to_string(), pca.clone()),
        (
            "level".to_string(),
            format!("{:?}", opts.level).to_lowercase(),
        ),
        (
            "include NTC nodes".to_string(),
            opts.include_ntc.to_string(),
        ),
    ];
    let names: Vec<&str> = cons
        .genes
        .iter()
        .map(|&g| table.genes.names[g as usize].as_str())
        .collect();
    let galleries = crate::gallery::report::eval_section(
        opts.store.as_deref(),
        &opts.features,
        out,
        &names,
        cx,
        cm,
    )?;
    report::write_report(&out.join("report.md"), &label, m, &settings, &galleries)?;
    let run = serde_json::json!({
        "label": label,
        "features": opts.features.display().to_string(),
        "complexes": opts.complexes.display().to_string(),
        "complexes_format": format!("{:?}", cx.format),
        "normalize": opts.normalize.name(),
        "pca_components": norm.pca.as_ref().map(|p| p.k),
        "pca_fraction": opts.pca,
        "level": format!("{:?}", opts.level).to_lowercase(),
        "include_ntc": opts.include_ntc,
        "profile_dim": nodes.d,
        "map_queries": nm.ap.iter().flatten().count(),
        "null_pairs": cm.recall.n_null,
        "related_pairs_in_file": cx.pairs.len(),
    });
    crate::util::atomic::write_atomic(
        &out.join("run.json"),
        (serde_json::to_string_pretty(&run)? + "\n").as_bytes(),
    )?;
    // Per-gene table.
    let ng = table.genes.len();
    let (_, per_map) = map::mean_ap(&nm.ap, &nodes.gene, ng);
    let mut prof_n = vec![0usize; ng];
    let mut cells_n = vec![0usize; ng];
    let mut hit = vec![(0usize, 0usize); ng];
    for i in 0..nodes.n {
        if nodes.is_ntc[i] {
            continue;
        }
        let g = nodes.gene[i] as usize;
        prof_n[g] += 1;
        cells_n[g] += nodes.n_cells[i] as usize;
        if let Some(h) = nm.repro_hit[i] {
            hit[g].0 += h as usize;
            hit[g].1 += 1;
        }
    }
    let mut rel = vec![(0usize, 0usize); cons.genes.len()];
    for (&(a, b), &q) in cm.pairs.iter().zip(&cm.query) {
        let top = recall::in_top(&cm.null, q, 0.95) as usize;
        for k in [a, b] {
            rel[k as usize].0 += 1;
            rel[k as usize].1 += top;
        }
    }
    let rows: Vec<report::GeneRow> = cons
        .genes
        .iter()
        .enumerate()
        .map(|(k, &g)| {
            let g = g as usize;
            report::GeneRow {
                gene: table.genes.names[g].clone(),
                profiles: prof_n[g],
                cells: cells_n[g],
                map: per_map[g].0,
                map_queries: per_map[g].1,
                repro_knn5: if hit[g].1 == 0 {
                    f64::NAN
                } else {
                    hit[g].0 as f64 / hit[g].1 as f64
                },
                related_pairs: rel[k].0,
                related_in_top5: rel[k].1,
            }
        })
        .collect();
    report::write_per_gene(&out.join("per_gene.tsv"), &rows)?;
    report::write_pairs(
        &out.join("pairs.tsv"),
        &names,
        &cm.pairs,
        &cm.query,
        &cm.null,
    )?;
    figures::write(out, &label, &names, cons, cx, cm, opts.figures)?;
    Ok(())
}

/// `--dump-profiles DIR`: batch_profiles and consensus_profiles (`.npy` + `.tsv`, `.parquet` or an
/// AnnData `.zarr`, by `opts.dump_format`), related_pairs.tsv (the related pairs whose genes are both
/// profiled) and dump.json (level, NTC handling).
pub fn dump_profiles(
    dir: &std::path::Path,
    table: &io::CellTable,
    nodes: &Nodes,
    cons: &Consensus,
    cx: &complexes::Complexes,
    opts: &EvalOptions,
) -> Result<()> {
    use crate::formats::frame::{Frame, Values};
    use crate::formats::{numbered, write_matrix};
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let run = serde_json::json!({
        "command": "eval --dump-profiles", "features": opts.features,
        "level": format!("{:?}", opts.level).to_lowercase(), "normalize": opts.normalize.name(),
    });
    let name = |v: &[String], k: u32| v[k as usize].clone();
    let mut fr = Frame::default();
    fr.push(
        "node",
        Values::I64(
            (0..nodes.n)
                .map(|i| i64::try_from(i).unwrap_or(i64::MAX))
                .collect(),
        ),
    );
    fr.push(
        "gene",
        Values::Str(
            nodes
                .gene
                .iter()
                .map(|&g| name(&table.genes.names, g))
                .collect(),
        ),
    );
    fr.push(
        "sgRNA",
        Values::Str(
            nodes
                .sgrna
                .iter()
                .map(|&s| {
                    if s == profiles::NONE {
                        "*".to_string()
                    } else {
                        name(&table.sgrnas.names, s)
                    }
                })
                .collect(),
        ),
    );
    fr.push(
        "batch",
        Values::Str(
            nodes
                .batch
                .iter()
                .map(|&b| name(&table.batches.names, b))
                .collect(),
        ),
    );
    fr.push(
        "is_ntc",
        Values::I64(nodes.is_ntc.iter().map(|&b| i64::from(b)).collect()),
    );
    fr.push(
        "n_cells",
        Values::I64(nodes.n_cells.iter().map(|&c| i64::from(c)).collect()),
    );
    write_matrix(
        &dir.join("batch_profiles"),
        opts.dump_format,
        fr,
        &numbered("f", nodes.d),
        run.clone(),
        &nodes.x,
    )?;
    let mut fr = Frame::default();
    fr.push(
        "gene",
        Values::Str(
            cons.genes
                .iter()
                .map(|&g| name(&table.genes.names, g))
                .collect(),
        ),
    );
    fr.push(
        "n_batches",
        Values::I64(cons.n_batches.iter().map(|&c| i64::from(c)).collect()),
    );
    write_matrix(
        &dir.join("consensus_profiles"),
        opts.dump_format,
        fr,
        &numbered("f", cons.d),
        run,
        &cons.x,
    )?;
    let profiled: std::collections::HashSet<&str> = cons
        .genes
        .iter()
        .map(|&g| table.genes.names[g as usize].as_str())
        .collect();
    let mut s = String::from("gene1\tgene2\n");
    for (a, b) in &cx.pairs {
        if profiled.contains(a.as_str()) && profiled.contains(b.as_str()) {
            writeln!(s, "{a}\t{b}")?;
        }
    }
    crate::util::atomic::write_atomic(&dir.join("related_pairs.tsv"), s.as_bytes())?;
    let meta = serde_json::json!({
        "level": format!("{:?}", opts.level).to_lowercase(),
        "include_ntc": opts.include_ntc,
        "normalize": opts.normalize.name(),
    });
    crate::util::atomic::write_atomic(
        &dir.join("dump.json"),
        (serde_json::to_string_pretty(&meta)? + "\n").as_bytes(),
    )?;
    Ok(())
}

/// How many of the consensus genes occur in some complex; a clear warning (on stderr, also when not
/// verbose) when none or only one does, since the complex metrics are then undefined (n/a).
fn warn_unmatched_complexes(
    path: &Path,
    cx: &complexes::Complexes,
    table: &io::CellTable,
    cons: &profiles::Consensus,
    log: &Log,
) -> usize {
    let in_cx: std::collections::HashSet<&str> = cx
        .complexes
        .iter()
        .flat_map(|(_, g)| g.iter().map(String::as_str))
        .collect();
    let matched = cons
        .genes
        .iter()
        .filter(|&&g| {
            table
                .genes
                .names
                .get(g as usize)
                .is_some_and(|n| in_cx.contains(n.as_str()))
        })
        .count();
    let msg = format!(
        "{}: {matched} of the {} profiled genes occur in its {} complexes",
        path.display(),
        cons.genes.len(),
        cx.complexes.len()
    );
    if matched < 2 {
        eprintln!(
            "warning: {msg}; the complex metrics (recall, PR-AUC, KS) are n/a; HINT: check that the complexes \
             file uses the same gene names (symbols, case) as the features' gene column"
        );
    } else {
        log.say(&msg);
    }
    matched
}
