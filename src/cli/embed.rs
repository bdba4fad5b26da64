//! `setdino embed`: argument handling for src/embed.rs.
use crate::embed::{embed, EmbedOptions};
use crate::formats::Format;
use crate::store::index::parse_list;
use crate::store::CellFilter;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Per-cell embeddings (teacher CLS tokens of the last 4 blocks, 4×C wide) → STEM.npy + STEM.tsv
/// (or STEM.parquet, or an AnnData store STEM.zarr, with --format).
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// A setdino checkpoint, or a converted reference checkpoint (then also --num-heads).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(long)]
    pub store: PathBuf,
    /// Output stem: writes STEM.npy and STEM.tsv (or STEM.parquet / STEM.zarr, see --format).
    #[arg(long)]
    pub out: PathBuf,
    /// npy: STEM.npy (float32) + STEM.tsv (numpy + pandas); parquet: one STEM.parquet with the cell columns
    /// then emb0…embD-1 (`pd.read_parquet`); anndata: an AnnData Zarr store STEM.zarr (`anndata.read_zarr`;
    /// X = embeddings, obs = cells).
    #[arg(long, value_enum, default_value_t = Format::Npy)]
    pub format: Format,
    /// Only these plates (comma-separated names).
    #[arg(long)]
    pub plates: Option<String>,
    /// Only these wells (comma-separated names).
    #[arg(long)]
    pub wells: Option<String>,
    /// Embed with the student backbone instead of the teacher.
    #[arg(long)]
    pub student: bool,
    /// Cells per forward batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// GEMM precision: auto (bf16 on cuda, f32 on cpu and simt), f32 or bf16.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Normaliser override (default: the one the checkpoint was trained with, else zscore).
    #[arg(long)]
    pub normalize: Option<String>,
    /// Attention heads, for checkpoints without setdino metadata.
    #[arg(long)]
    pub num_heads: Option<usize>,
}

pub fn run(a: EmbedArgs) -> Result<()> {
    let s = embed(EmbedOptions {
        checkpoint: a.checkpoint,
        store: a.store,
        out: a.out,
        filter: CellFilter {
            plates: parse_list(a.plates.as_deref()),
            wells: parse_list(a.wells.as_deref()),
            genes: None,
            ntc_only: false,
        },
        student: a.student,
        batch: a.batch,
        backend: a.backend,
        precision: a.precision,
        normalizer: a.normalize,
        num_heads: a.num_heads,
        progress: true,
        format: a.format,
    })?;
    let paths: Vec<String> = s.paths.iter().map(|p| p.display().to_string()).collect();
    eprintln!(
        "embedded {} cells × {} → {}",
        s.cells,
        s.dim,
        paths.join(" + ")
    );
    Ok(())
}
