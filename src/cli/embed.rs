//! `setdino embed` and `setdino embed merge`: argument handling for src/embed.rs and src/embed/merge.rs.
use crate::embed::{embed_part, EmbedOptions, EmbedSummary};
use crate::formats::Format;
use crate::store::index::parse_list;
use crate::store::CellFilter;
use crate::util::part::JobPart;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `setdino embed …` (embed cells) or `setdino embed merge …` (join job parts).
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EmbedCmd {
    #[command(subcommand)]
    pub action: Option<EmbedAction>,
    #[command(flatten)]
    pub args: Option<EmbedArgs>,
}

#[derive(Subcommand, Debug)]
pub enum EmbedAction {
    /// Join the job parts of `embed --shard I/N` into the OUT.npy + OUT.tsv one embed writes.
    ///
    /// The parts (STEM.part-I-of-N.{npy,tsv,json}, given in any order) must hold every part 0…N−1 once,
    /// from the same checkpoint, store, selection and --batch, rows in cell order.
    Merge {
        /// The parts: their stems (STEM.part-I-of-N) or any of their files.
        #[arg(required = true, value_name = "PART")]
        parts: Vec<PathBuf>,
        /// Output stem: writes OUT.npy and OUT.tsv.
        #[arg(long)]
        out: PathBuf,
    },
}

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
    /// Side in pixels each crop is resized to (nearest, the whole crop) before the network. Default: the
    /// size of the checkpoint's global training views (`model.global_size`), i.e. cells at the scale the
    /// model was trained on (the tiny model sees 48-px crops at 32 px); for a checkpoint without setdino
    /// metadata, the store's crop side. A multiple of the patch size.
    #[arg(long, value_name = "PX")]
    pub input_size: Option<usize>,
    /// Embed only job part I of N (0-based) for a cluster: `--shard I/N`, or `--shard N` to take I from
    /// $SLURM_ARRAY_TASK_ID (a Slurm array, sbatch --array=0-(N-1)). A part is a contiguous slice of the
    /// selected cells in cell order (whole --batch batches), written to STEM.part-I-of-N.{npy,tsv,json};
    /// `setdino embed merge PART… --out STEM` joins them into the files one embed writes.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Devices to embed on, comma-separated (e.g. 0,1,2,3), each taking whole batches in turn; the files
    /// are the same as with one device. Default with --backend cuda: every visible GPU
    /// (CUDA_VISIBLE_DEVICES applies). With --backend simt: 0,1 runs two emulated devices.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub devices: Option<Vec<usize>>,
}

pub fn run(c: EmbedCmd) -> Result<()> {
    let s = match (c.action, c.args) {
        (Some(EmbedAction::Merge { parts, out }), _) => crate::embed::merge::merge(&parts, &out)?,
        (None, Some(a)) => embed_cells(a)?,
        (None, None) => anyhow::bail!(
            "embed: expected --checkpoint, --store and --out (or `embed merge PART… --out STEM`); see `setdino \
             embed --help`"
        ),
    };
    let paths: Vec<String> = s.paths.iter().map(|p| p.display().to_string()).collect();
    eprintln!(
        "embedded {} cells × {} → {}",
        s.cells,
        s.dim,
        paths.join(" + ")
    );
    Ok(())
}

fn embed_cells(a: EmbedArgs) -> Result<EmbedSummary> {
    let part = a
        .shard
        .as_deref()
        .map(|s| JobPart::parse("--shard", s))
        .transpose()?;
    embed_part(
        EmbedOptions {
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
            input_size: a.input_size,
            progress: true,
            format: a.format,
            devices: a.devices,
        },
        part,
    )
}
