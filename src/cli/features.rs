//! `setdino features`: argument handling only; the work is in `crate::features`.
use crate::features::{compute_features, help_table, FeatureOptions};
use crate::formats::Format;
use crate::store::{index::parse_list, CellFilter, Store};
use anyhow::{bail, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Engineered per-cell features (the classical baseline) → STEM.npy (float32 N×F), STEM.tsv (cell
/// metadata: cell plate well batch tile cell_id i j gene sgRNA is_ntc …) and STEM.features.tsv (names,
/// units, definitions, non-finite counts).
#[derive(Args, Debug)]
#[command(after_long_help = help_table())]
pub struct FeaturesArgs {
    /// The crop store.
    #[arg(long)]
    pub store: PathBuf,
    /// Output stem: writes STEM.npy, STEM.tsv and STEM.features.tsv (or STEM.parquet / STEM.zarr instead of
    /// the first two, see --format).
    #[arg(long)]
    pub out: PathBuf,
    /// npy: STEM.npy + STEM.tsv; parquet: one STEM.parquet (cell columns, then one column per feature);
    /// anndata: an AnnData Zarr store STEM.zarr (X = features, obs = cells, var = feature names).
    #[arg(long, value_enum, default_value_t = Format::Npy)]
    pub format: Format,
    /// Comma-separated plates to keep.
    #[arg(long)]
    pub plates: Option<String>,
    /// Comma-separated wells to keep.
    #[arg(long)]
    pub wells: Option<String>,
    /// DNA channel by name (default: the channel named dna/dapi/hoechst, else channel 0).
    #[arg(long)]
    pub dna_channel: Option<String>,
}

pub fn run(a: FeaturesArgs) -> Result<()> {
    let store = Store::open(&a.store)?;
    let filter = CellFilter {
        plates: parse_list(a.plates.as_deref()),
        wells: parse_list(a.wells.as_deref()),
        genes: None,
        ntc_only: false,
    };
    let cells = filter.select(&store)?;
    if cells.is_empty() {
        bail!("no cells selected; HINT: check --plates/--wells against `setdino store info`");
    }
    let opts = FeatureOptions {
        dna_channel: a.dna_channel,
        progress: std::io::stderr().is_terminal(),
        format: a.format,
        ..FeatureOptions::default()
    };
    let r = compute_features(&store, &cells, &a.out, &opts)?;
    println!(
        "features: {} cells × {} features (DNA channel {:?}) in {:.1} s ({:.0} cells/s) → {}, {}",
        r.cells,
        r.features,
        r.dna_channel,
        r.seconds,
        r.cells as f64 / r.seconds.max(1e-9),
        r.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        r.features_tsv.display()
    );
    let total: u64 = r.nonfinite.iter().sum();
    if total > 0 {
        let names = crate::features::feature_specs(&store.manifest().channels);
        let mut worst: Vec<(u64, &str)> = r
            .nonfinite
            .iter()
            .zip(&names)
            .filter(|(&n, _)| n > 0)
            .map(|(&n, s)| (n, s.name.as_str()))
            .collect();
        worst.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let shown: Vec<String> = worst
            .iter()
            .take(8)
            .map(|(n, s)| format!("{s} {n}"))
            .collect();
        eprintln!(
            "warning: replaced {total} non-finite values by 0 in {} of {} cells (undefined for that cell, e.g. \
             an empty nucleus mask or a constant region); most: {}; per-feature counts in {}",
            r.cells_with_nonfinite,
            r.cells,
            shown.join(", "),
            r.features_tsv.display()
        );
    }
    Ok(())
}
