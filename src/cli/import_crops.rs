//! `setdino import-crops`: argument handling only; the work is in `crate::store::import`.
use crate::formats::table::ColumnMap;
use crate::store::import::{import_crops, ImportOptions};
use crate::store::index::parse_names;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Make a crop store from crops you already have: a `.npy` stack and a metadata table.
#[derive(Args, Debug)]
pub struct ImportCropsArgs {
    /// Crops: float32 in [0,1] or uint16, shape N×C×H×W (C order), H = W.
    #[arg(long)]
    pub npy: PathBuf,
    /// Metadata, one row per crop (TSV, CSV or Parquet): plate, well, gene, sgRNA; optional tile, cell_id,
    /// i, j; other columns are kept as metadata.
    #[arg(long)]
    pub meta: PathBuf,
    /// Read differently named columns of --meta: NAME=COLUMN,… (e.g. gene=gene_symbol_0,sgRNA=sgRNA_0).
    #[arg(long, default_value = "")]
    pub columns: ColumnMap,
    /// Output store directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Channel names, comma-separated (default ch0,ch1,…).
    #[arg(long)]
    pub channels: Option<String>,
    /// Gene name of the non-targeting controls.
    #[arg(long, default_value = "nontargeting")]
    pub ntc_gene: String,
    /// Replace an existing store at --out (the new one is built beside it and swapped in only when
    /// complete; a directory that is not a store is never written into).
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: ImportCropsArgs) -> Result<()> {
    let opts = ImportOptions {
        channels: parse_names("--channels", a.channels.as_deref())?,
        ntc_gene: a.ntc_gene,
        force: a.force,
        columns: a.columns,
    };
    let m = import_crops(&a.npy, &a.meta, &a.out, &opts)?;
    println!(
        "imported {} cells ({} batches, {} genes) into {}",
        m.cells,
        m.batches.len(),
        m.genes.len(),
        a.out.display()
    );
    Ok(())
}
