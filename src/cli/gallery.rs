//! `setdino gallery`: argument handling only; the work is in `crate::gallery`.
use crate::gallery::GalleryOptions;
use crate::store::index::parse_names;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Long help of `setdino gallery --help`.
pub const LONG_ABOUT: &str = "\
Cell galleries: look at what a gene, a well or a cluster of cells looks like.

Writes into DIR one PNG per group (a grid of crops from the store, titled with the group, its number
of cells and how many are shown, the channels' colours and a scale bar in crop pixels), gallery.tsv
(by, group, image, position in the grid, store cell index, plate, well, gene of every cell shown)
and index.md (the images, the settings, each cluster's most frequent genes and wells).

Groups (--by):
  gene      the genes of --genes, or by default the first 7 genes by name plus the NTC gene;
            n cells of each, drawn at random with --seed (the same command gives the same cells)
  well      every plate_well of the store, n random cells each
  cluster   k-means (--clusters K, k-means++ from --seed, standardised columns) of the per-cell
            features or embeddings --features STEM (STEM.npy + STEM.tsv with a `cell` column, or
            STEM.parquet / STEM.zarr, as `setdino features` and `setdino embed` write them); each
            cluster shows its n cells nearest the centroid, nearest first
Rendering (--mode):
  composite one false-colour tile per cell: the DNA channel (dna/dapi/hoechst) blue, the others
            green, red, magenta, cyan, yellow, white in store order, added up
  channels  one grey tile per channel, stacked under each cell, channel names on the left
Contrast: per channel, the 0.5th–99.5th percentile of the shown crops' stored values is stretched to
the full range, over all galleries of the run (--contrast shared, brightness comparable) or per
gallery (--contrast group). Crops are enlarged by whole pixels (--zoom, default: tiles ≥ 64 px).

Examples:
  setdino gallery --store STORE --by gene --genes ACTB,TUBB,nontargeting --out gal/genes
  setdino gallery --store STORE --by well --n 25 --mode channels --out gal/wells
  setdino features --store STORE --out feat/all
  setdino gallery --store STORE --by cluster --features feat/all --clusters 8 --out gal/clusters";

#[derive(Args, Debug)]
pub struct GalleryArgs {
    /// The crop store.
    #[arg(long, value_name = "STORE")]
    pub store: PathBuf,
    /// Group by gene, well or cluster.
    #[arg(long, default_value = "gene", value_name = "BY")]
    pub by: String,
    /// Comma-separated genes for --by gene (default: the first 7 genes by name plus the NTC gene).
    #[arg(long, value_name = "G1,G2")]
    pub genes: Option<String>,
    /// Per-cell features or embeddings (STEM.npy + STEM.tsv with a `cell` column), for --by cluster.
    #[arg(long, value_name = "STEM")]
    pub features: Option<PathBuf>,
    /// Number of k-means clusters for --by cluster.
    #[arg(long, default_value_t = 8, value_name = "K")]
    pub clusters: usize,
    /// Cells shown per gallery.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub n: usize,
    /// composite (false colour) or channels (one grey row per channel).
    #[arg(long, default_value = "composite", value_name = "MODE")]
    pub mode: String,
    /// shared (one stretch for every gallery of the run) or group (one per gallery).
    #[arg(long, default_value = "shared", value_name = "SCOPE")]
    pub contrast: String,
    /// Seed of the cell choice (and of k-means).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Screen pixels per crop pixel (default: the smallest making a tile at least 64 px).
    #[arg(long, value_name = "Z")]
    pub zoom: Option<u32>,
    /// Grid columns (default: about square).
    #[arg(long, value_name = "C")]
    pub cols: Option<u32>,
    /// Output directory (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(a: GalleryArgs) -> Result<()> {
    let opts = GalleryOptions {
        store: a.store,
        features: a.features,
        by: a.by.parse()?,
        genes: parse_names("--genes", a.genes.as_deref())?,
        n: a.n,
        out: a.out,
        mode: a.mode.parse()?,
        contrast: a.contrast.parse()?,
        clusters: a.clusters,
        seed: a.seed,
        zoom: a.zoom,
        cols: a.cols,
    };
    let s = crate::gallery::run(&opts)?;
    for sh in &s.sheets {
        println!(
            "{}: {} of {} cells → {}",
            sh.group.label(),
            sh.group.shown.len(),
            sh.group.total,
            opts.out.join(&sh.file).display()
        );
    }
    println!(
        "{} galleries → {}, {}",
        s.sheets.len(),
        s.tsv.display(),
        s.index.display()
    );
    Ok(())
}
