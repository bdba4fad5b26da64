//! `setdino ingest`: argument handling only; the work is in `crate::ingest`.
use crate::formats::table::ColumnMap;
use crate::ingest::{ingest, Illum, IngestOptions};
use crate::store::index::parse_names;
use crate::util::part::JobPart;
use anyhow::{Context, Result};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

/// TIFF tiles + cell table → crop store (flat-field, percentile clip, crops, NTC stats, report).
#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Tile table: plate,well,tile,path (one multi-page TIFF per tile, pages in channel order, or an
    /// OME-Zarr image directory such as plate.zarr/A/1/0, read at level 0) or plate,well,tile,path_<channel>…
    /// (one single-page TIFF per channel).
    #[arg(long)]
    pub tiles: PathBuf,
    /// Cell table, CSV, TSV or Parquet: plate,well,tile,cell_id,i,j,sgRNA,gene (+ extra columns kept as
    /// metadata).
    #[arg(long)]
    pub cells: PathBuf,
    /// Read differently named columns of --cells: NAME=COLUMN,… (e.g. for Brieflow/ops tables:
    /// gene=gene_symbol_0,sgRNA=sgRNA_0,i=i_0,j=j_0,cell_id=label).
    #[arg(long, default_value = "")]
    pub columns: ColumnMap,
    /// Output store directory (new or empty, or an existing store with --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Channel names in page order, comma-separated (default: from path_<channel> columns, an OME-Zarr
    /// image's omero labels, else ch0,ch1,…). For OME-Zarr images with labels, picks channels by label.
    #[arg(long)]
    pub channels: Option<String>,
    /// Crop side in pixels (even).
    #[arg(long, default_value_t = 96)]
    pub crop: u32,
    /// Flat-field: auto (estimated per plate and channel), none, or a directory of <plate>_<channel>.tif.
    #[arg(long, default_value = "auto")]
    pub illum: String,
    /// Lower and upper clip percentiles.
    #[arg(long, default_value = "0.1,99.9")]
    pub clip: String,
    /// Gene name of the non-targeting controls.
    #[arg(long, default_value = "nontargeting")]
    pub ntc_gene: String,
    /// Crops per shard file (default: about 1 GiB per shard).
    #[arg(long)]
    pub cells_per_shard: Option<usize>,
    /// Keep a plate's decoded tiles in memory across the passes when they fit in this many MiB
    /// (2 bytes per pixel and channel for 8/16-bit data, 4 for float); larger plates are streamed and re-read per pass.
    #[arg(long, default_value_t = 4096)]
    pub cache_mb: usize,
    /// Replace an existing store at --out (the new one is built beside it and swapped in only when
    /// complete; a directory that is not a store is never written into).
    #[arg(long)]
    pub force: bool,
    /// Run job part I of N (0-based) for a cluster: `--shard I/N`, or `--shard N` to take I from
    /// $SLURM_ARRAY_TASK_ID (a Slurm array, sbatch --array=0-(N-1)). Each part crops a contiguous range of
    /// the tiles (plates in tiles.csv order) into its own partial store at --out; `setdino store merge
    /// PART… --out STORE` joins them into the store a single ingest writes. A "part" here is a slice of
    /// the job, not one of a store's shard-NNNNN.bin data files (those are --cells-per-shard).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
}

pub fn run(a: IngestArgs) -> Result<()> {
    let clip: Vec<f64> = a
        .clip
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f64>()
                .with_context(|| format!("--clip {:?}: expected two numbers like 0.1,99.9", a.clip))
        })
        .collect::<Result<_>>()?;
    anyhow::ensure!(
        clip.len() == 2,
        "--clip {:?}: expected two numbers like 0.1,99.9",
        a.clip
    );
    let mut o = IngestOptions::new(&a.tiles, &a.cells, &a.out);
    o.channels = parse_names("--channels", a.channels.as_deref())?;
    o.columns = a.columns;
    o.crop = a.crop;
    o.illum = a.illum.parse::<Illum>()?;
    o.clip = (clip[0], clip[1]);
    o.ntc_gene = a.ntc_gene;
    o.force = a.force;
    o.cells_per_shard = a.cells_per_shard;
    o.cache_bytes = a.cache_mb.checked_mul(1 << 20).with_context(|| {
        format!(
            "--cache-mb {}: too large for this machine's address space",
            a.cache_mb
        )
    })?;
    o.progress = std::io::stderr().is_terminal();
    o.part = a
        .shard
        .as_deref()
        .map(|s| JobPart::parse("--shard", s))
        .transpose()?;
    let r = ingest(&o)?;
    if let Some(p) = o.part {
        print!("part {} of {}: ", p.index, p.count);
    }
    println!(
        "ingested {} tiles: {} of {} cells written, {} skipped (box leaves tile), {:.1} tiles/s → {}",
        r["tiles"], r["cells_written"], r["cells_in_table"], r["skipped"]["box_leaves_tile"], r["tiles_per_second"].as_f64().unwrap_or(0.0),
        a.out.display()
    );
    Ok(())
}
