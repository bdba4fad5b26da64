//! `setdino eval`: argument handling for the evaluation; the work is in `crate::eval`.
use crate::eval::{normalize::Method, profiles::Level, EvalOptions};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

/// Long help of `setdino eval --help`.
pub const LONG_ABOUT: &str = "\
Evaluate per-cell embeddings or features: batch effect, reproducibility and known-complex recall.

Cells are normalised per batch (well) against that batch's non-targeting controls (NTC), averaged
into batch-level gene profiles P[gene, batch] and consensus gene profiles C[gene].
  On P (cosine, exact 5 nearest neighbours):
    batch KNN@5, batch GC@5     lower = less batch effect
    repro KNN@5, repro mAP      higher = a gene finds itself in other batches
  On C (all gene pairs form the null; related pairs come from the complexes file):
    recall at the top 5 % / 10 % (one- and two-tailed), pr_auc, KS statistic
Definitions: evaluation.md. Memory and time scale with profiles, not cells (the cell matrix is
memory-mapped): 30 000 profiles take about 20 s with 128 features and 100 s with 1536 on 2 cores.

Writes into OUT: metrics.json (fractions), report.md (the Table 1 row in %), per_gene.tsv,
pairs.tsv, run.json (settings), and four figures, each as PNG (SVG too with --svg) with its data
as TSV: pr_curve, similarity_hist, adjacency (+ adjacency_genes.tsv), pca. `setdino report OUT`
redraws them from the TSVs. With --store STORE (the crop store of the cells), report.md also shows
cell galleries (OUT/galleries/*.png): the genes of up to 4 best-recalled complexes and the 3 nearest
genes of 3 query genes, a row of cells per gene.

Examples:
  setdino eval --features run/embed --complexes allComplexes.txt --out run/eval
  setdino eval --features run/embed --complexes allComplexes.txt --store STORE --out run/eval  # + galleries
  setdino eval --features feats --complexes clusters.tsv --out eval_feats --normalize robust
  setdino eval --features run/embed --complexes pairs.csv --out e --dump-profiles   # then:
  python tests/reference/cross_check_eval.py e   # copairs, scib, EFAAR, sklearn, scipy agree?";

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Stem of the per-cell table: STEM.npy (float32, cells × features, C order) and STEM.tsv (header
    /// line; columns plate well tile gene sgRNA is_ntc, optional batch, default plate_well); or the
    /// STEM.parquet / STEM.zarr (AnnData) that `embed` and `features` write with --format.
    #[arg(long, value_name = "STEM")]
    pub features: PathBuf,
    /// Known complexes: CORUM allComplexes.txt, a clusters TSV (name<TAB>gene gene …) or a pairs CSV
    /// (header entity1,entity2); the format is detected.
    #[arg(long, value_name = "FILE")]
    pub complexes: PathBuf,
    /// Output directory (created).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Per-batch normalisation against NTC cells: zscore (default; for learned embeddings), robust
    /// (median/MAD then PCA; for engineered features), center, none.
    #[arg(long, default_value = "zscore", value_name = "METHOD")]
    pub normalize: String,
    /// Keep the fewest PCA components explaining more than this variance fraction (0 < F < 1; 1 keeps
    /// all; 0 turns PCA off). Default: 0.95 with --normalize robust, no PCA otherwise.
    #[arg(long, value_name = "F")]
    pub pca: Option<f64>,
    /// Batch-level nodes per gene (default) or per sgRNA (then the same sgRNA in another batch is the
    /// positive for reproducibility, and other sgRNAs of the gene are left out).
    #[arg(long, default_value = "gene", value_name = "LEVEL")]
    pub level: String,
    /// Add one node per (NTC sgRNA, batch): counted by batch KNN and GC, negatives for mAP, never queries.
    #[arg(long)]
    pub include_ntc: bool,
    /// Also write the batch-level and consensus profiles (.npy + .tsv) to DIR (default OUT/profiles), so
    /// every metric can be recomputed elsewhere (tests/reference/cross_check_eval.py).
    #[arg(long, value_name = "DIR")]
    pub dump_profiles: Option<Option<PathBuf>>,
    /// Format of the dumped profiles: npy (NAME.npy + NAME.tsv), parquet (NAME.parquet: the profile's
    /// columns, then f0…; `pd.read_parquet`) or anndata (NAME.zarr; `anndata.read_zarr`).
    #[arg(long, value_enum, default_value_t = crate::formats::Format::Npy, requires = "dump_profiles")]
    pub format: crate::formats::Format,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Also write every figure as SVG (beside its PNG), for papers.
    #[arg(long)]
    pub svg: bool,
    /// The crop store the cells come from: adds cell galleries of the best-recalled complexes and of
    /// nearest-neighbour genes to report.md (OUT/galleries/*.png).
    #[arg(long, value_name = "STORE")]
    pub store: Option<PathBuf>,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let normalize: Method = a.normalize.parse()?;
    let level = match a.level.as_str() {
        "gene" => Level::Gene,
        "sgrna" | "sgRNA" => Level::Sgrna,
        l => bail!("unknown --level `{l}`; HINT: gene or sgrna"),
    };
    let pca = match (a.pca, normalize) {
        (Some(f), _) if !(0.0..=1.0).contains(&f) || f.is_nan() => {
            bail!("--pca {f} is outside [0, 1]; HINT: a variance fraction such as 0.95, or 0 for no PCA")
        }
        (Some(0.0), _) => None,
        (Some(f), _) => Some(f),
        (None, Method::Robust) => Some(0.95),
        (None, _) => None,
    };
    let dump_profiles = a
        .dump_profiles
        .map(|p| p.unwrap_or_else(|| a.out.join("profiles")));
    let opts = EvalOptions {
        features: a.features,
        complexes: a.complexes,
        out: a.out,
        normalize,
        pca,
        level,
        include_ntc: a.include_ntc,
        dump_profiles,
        dump_format: a.format,
        verbose: !a.quiet,
        figures: crate::plot::Formats { svg: a.svg },
        store: a.store,
    };
    let m = crate::eval::run(&opts)?;
    print!("{}", crate::eval::report::table1("this run", &m));
    println!("metrics: {}", opts.out.join("metrics.json").display());
    Ok(())
}
