//! `setdino store info | verify | merge | export | sample`: argument handling only; the work is in `crate::store`.
use crate::store::{export, index::parse_list, merge, verify, CellFilter, Store};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Inspect, verify, merge (job parts), export or sample a crop store.
#[derive(Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub action: StoreAction,
}

#[derive(Subcommand, Debug)]
pub enum StoreAction {
    /// Summary: cells, channels, crop size, plates, wells, genes, shards, NTC statistics.
    Info {
        store: PathBuf,
        /// Print the manifest summary as JSON.
        #[arg(long)]
        json: bool,
        /// Also print the NTC statistics (mean ± std per channel) of every batch.
        #[arg(long)]
        ntc: bool,
    },
    /// Check every file's size and checksum, every header and every crop's checksum.
    Verify { store: PathBuf },
    /// Join the partial stores of `ingest --shard I/N` into the store one ingest writes.
    ///
    /// The parts (one per job part, given in any order) are joined in part order: cells in the
    /// one-process order, dictionaries and NTC statistics recomputed from the crops. Every part 0…N−1 must
    /// be given once, and the parts must agree on channels, crop size and ingest settings. (Job parts are
    /// not the store's shard-NNNNN.bin data files.)
    Merge {
        /// The partial stores (the --out directories of the ingest parts).
        #[arg(required = true, value_name = "PART")]
        parts: Vec<PathBuf>,
        /// The merged store (a new or empty directory, or an existing store with --force).
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing store at --out (swapped in only when the merged one is complete).
        #[arg(long)]
        force: bool,
    },
    /// Export chosen cells to STEM.npy (float32 N×C×H×W in [0,1]) and STEM.tsv (metadata; STEM.parquet
    /// with --format parquet). `import-crops` reads either back.
    Export {
        store: PathBuf,
        /// Output stem: writes STEM.npy and STEM.tsv (or STEM.parquet).
        #[arg(long)]
        out: PathBuf,
        /// Format of the metadata table: tsv, or parquet (typed columns; `pd.read_parquet`).
        #[arg(long, value_enum, default_value_t = MetaFormat::Tsv)]
        format: MetaFormat,
        /// Comma-separated plates to keep.
        #[arg(long)]
        plates: Option<String>,
        /// Comma-separated wells to keep.
        #[arg(long)]
        wells: Option<String>,
        /// Comma-separated genes to keep.
        #[arg(long)]
        genes: Option<String>,
        /// Comma-separated cell numbers (store order), applied after the filters above.
        #[arg(long)]
        cells: Option<String>,
        /// Keep at most this many cells (the first ones in store order).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Write one training step's tensors (sampler + augmentation + normaliser) as STEM_global.npy
    /// (2, R, C, G, G), STEM_local.npy (L, R, C, Lc, Lc) and STEM_cells.tsv (row → cell), R = sets × set size.
    Sample(SampleArgs),
}

/// The metadata table format of `store export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MetaFormat {
    Tsv,
    Parquet,
}

/// Arguments of `store sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    pub store: PathBuf,
    /// Output stem.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub step: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sets per step (S).
    #[arg(long, default_value_t = 32)]
    pub sets: usize,
    /// Cells per set (n).
    #[arg(long, default_value_t = 16)]
    pub set_size: usize,
    /// gene or sgrna.
    #[arg(long, default_value = "gene")]
    pub group_by: String,
    /// cross-batch, within-batch or same-cells.
    #[arg(long, default_value = "cross-batch")]
    pub strategy: String,
    /// Minimum cells per (batch, perturbation) (default max(n, 20)).
    #[arg(long)]
    pub min_cells: Option<usize>,
    /// none, zscore, ntc or ntc-2sigma.
    #[arg(long, default_value = "ntc")]
    pub normalizer: String,
    /// fixed (post-fix augmentations) or paper (the two pre-fix quirks).
    #[arg(long, default_value = "fixed")]
    pub augment_compat: String,
    /// Local crops per set (even).
    #[arg(long, default_value_t = 8)]
    pub n_local: usize,
    /// Global and local output sides (default: the crop side and half of it).
    #[arg(long)]
    pub global_size: Option<usize>,
    #[arg(long)]
    pub local_size: Option<usize>,
}

fn sample(a: SampleArgs) -> Result<()> {
    use crate::data::{AugmentConfig, Pipeline, SamplerConfig};
    use crate::store::npy::write_f32;
    use std::io::Write;
    let store = std::sync::Arc::new(Store::open(&a.store)?);
    let crop = store.crop();
    let scfg = SamplerConfig {
        group_by: a.group_by.parse()?,
        strategy: a.strategy.parse()?,
        set_size: a.set_size,
        sets_per_step: a.sets,
        min_cells: a.min_cells,
        seed: a.seed,
        ..Default::default()
    };
    let mut acfg = AugmentConfig::for_crop(crop);
    acfg.seed = a.seed;
    acfg.n_local = a.n_local;
    acfg.compat = a.augment_compat.parse()?;
    acfg.global_size = a.global_size.unwrap_or(crop);
    acfg.local_size = a.local_size.unwrap_or(crop / 2);
    let p = Pipeline::new(store.clone(), scfg, acfg, a.normalizer.parse()?)?;
    let draws = p.sampler.sample_step(a.step);
    let t = p.step(a.step)?;
    let (r, c, g, l) = (t.rows(), t.channels, t.global_size, t.local_size);
    let stem = a.out.to_string_lossy().into_owned();
    if let Some(d) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    write_f32(
        std::path::Path::new(&format!("{stem}_global.npy")),
        &[2, r, c, g, g],
        &t.global,
    )?;
    write_f32(
        std::path::Path::new(&format!("{stem}_local.npy")),
        &[t.n_local, r, c, l, l],
        &t.local,
    )?;
    let m = store.manifest();
    let mut f: Vec<u8> = Vec::new();
    writeln!(f, "view\trow\tset\tslot\tcell\tbatch\tgene\tsgRNA")?;
    for (s, d) in draws.iter().enumerate() {
        for v in 0..2 {
            for (k, &cell) in d.cells[v].iter().enumerate() {
                let rec = store.record(cell as usize);
                writeln!(
                    f,
                    "{v}\t{}\t{s}\t{k}\t{cell}\t{}\t{}\t{}",
                    s * a.set_size + k,
                    m.batch_name(rec.batch),
                    m.genes[rec.gene as usize],
                    m.sgrnas[rec.sgrna as usize]
                )?;
            }
        }
    }
    crate::util::atomic::write_atomic(std::path::Path::new(&format!("{stem}_cells.tsv")), &f)?;
    println!("step {}: {} sets × {} cells → {stem}_global.npy (2, {r}, {c}, {g}, {g}), {stem}_local.npy ({}, {r}, {c}, {l}, {l}), {stem}_cells.tsv", a.step, t.sets, t.set_size, t.n_local);
    Ok(())
}

pub fn run(args: StoreArgs) -> Result<()> {
    match args.action {
        StoreAction::Sample(a) => sample(a),
        StoreAction::Info { store, json, ntc } => {
            let s = Store::open(&store)?;
            let m = s.manifest();
            let bytes: u64 = m.shards.iter().map(|e| e.bytes).sum();
            let summary = serde_json::json!({
                "store": store, "format": m.format, "version": m.version, "cells": m.cells,
                "crop": m.crop, "channels": m.channels, "dtype": m.dtype, "shards": m.shards.len(),
                "shard_bytes": bytes, "plates": m.plates, "wells": m.wells, "batches": m.batches.len(),
                "genes": m.genes.len(), "sgrnas": m.sgrnas.len(), "ntc_gene": m.ntc_gene,
                "ntc_cells": s.records().iter().filter(|r| r.is_ntc()).count(),
                "batches_with_ntc_stats": s.ntc_stats().len(), "meta_columns": m.meta_columns,
                "created_by": m.created_by,
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!("store      {}", store.display());
                println!("cells      {} ({} NTC)", m.cells, summary["ntc_cells"]);
                println!(
                    "crops      {} × {}×{} u16-unorm, channels {}",
                    m.channels.len(),
                    m.crop,
                    m.crop,
                    m.channels.join(",")
                );
                println!(
                    "shards     {} ({:.2} GB)",
                    m.shards.len(),
                    bytes as f64 / 1e9
                );
                println!("plates     {}", m.plates.join(","));
                println!("wells      {}", m.wells.join(","));
                println!(
                    "batches    {} ({} with NTC statistics)",
                    m.batches.len(),
                    s.ntc_stats().len()
                );
                println!(
                    "genes      {}  sgRNAs {}  (NTC gene {:?})",
                    m.genes.len(),
                    m.sgrnas.len(),
                    m.ntc_gene
                );
                if !m.meta_columns.is_empty() {
                    println!("metadata   {}", m.meta_columns.join(","));
                }
                println!("written by {}", m.created_by);
                if let Ok(r) = s.report() {
                    if let Some(n) = r.get("cells_in_table") {
                        println!(
                            "ingest     {} cells in the table, {} skipped (box leaves tile)",
                            n, r["skipped"]["box_leaves_tile"]
                        );
                    }
                }
            }
            if ntc {
                for b in s.ntc_stats() {
                    let per: Vec<String> = b
                        .channels
                        .iter()
                        .zip(&m.channels)
                        .map(|(c, name)| format!("{name} {:.4}±{:.4}", c.mean, c.std))
                        .collect();
                    println!(
                        "ntc {}_{} ({} cells): {}",
                        b.plate,
                        b.well,
                        b.ntc_cells,
                        per.join("  ")
                    );
                }
            }
            Ok(())
        }
        StoreAction::Merge { parts, out, force } => {
            let m = merge::merge(&parts, &out, force)?;
            println!(
                "merged {} parts: {} cells in {} shard file(s) → {} (check it with `setdino store verify`)",
                parts.len(),
                m.cells,
                m.shards.len(),
                out.display()
            );
            Ok(())
        }
        StoreAction::Verify { store } => {
            let r = verify(&store)?;
            println!(
                "OK {}: {} files, {} bytes, {} cells verified",
                store.display(),
                r.files,
                r.bytes,
                r.cells
            );
            Ok(())
        }
        StoreAction::Export {
            store,
            out,
            plates,
            wells,
            genes,
            cells,
            limit,
            format,
        } => {
            let s = Store::open(&store)?;
            let filter = CellFilter {
                plates: parse_list(plates.as_deref()),
                wells: parse_list(wells.as_deref()),
                genes: parse_list(genes.as_deref()),
                ntc_only: false,
            };
            let mut sel = filter.select(&s)?;
            if let Some(list) = parse_list(cells.as_deref()) {
                let keep: std::collections::HashSet<u32> = sel.iter().copied().collect();
                let mut chosen = Vec::with_capacity(list.len());
                for x in list {
                    let k: u32 = x
                        .parse()
                        .with_context(|| format!("--cells: {x:?} is not a cell number"))?;
                    if k as usize >= s.len() {
                        bail!(
                            "--cells: cell {k} out of range; the store has {} cells (0..{})",
                            s.len(),
                            s.len()
                        );
                    }
                    if keep.contains(&k) {
                        chosen.push(k);
                    }
                }
                sel = chosen;
            }
            if let Some(n) = limit {
                sel.truncate(n);
            }
            if sel.is_empty() {
                bail!("no cells selected; HINT: check --plates/--wells/--genes/--cells against `setdino store info`");
            }
            let (npy, tsv) = export::export_with(&s, &sel, &out, format == MetaFormat::Parquet)?;
            println!(
                "exported {} cells to {} and {}",
                sel.len(),
                npy.display(),
                tsv.display()
            );
            Ok(())
        }
    }
}
