//! Command line: one file per subcommand, argument handling only; the work lives in the library.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod bench;
pub mod bench_kernels;
pub mod check;
pub mod debug;
pub mod demo;
pub mod embed;
pub mod eval;
pub mod experiment;
pub mod features;
pub mod gallery;
pub mod import_crops;
pub mod ingest;
pub mod report;
pub mod store;
pub mod synth;
pub mod train;

/// setdino: Set-DINO for optical pooled screens (ingest, train, embed, evaluate).
#[derive(Parser, Debug)]
#[command(name = "setdino", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole pipeline on a built-in synthetic screen; prints the paper's Table 1 (start here).
    Demo(demo::DemoArgs),
    /// Write a synthetic screen with known ground truth (TIFF tiles, cell table, complexes, truth).
    Synth(synth::SynthArgs),
    /// TIFF tiles + cell table → crop store (flat-field, percentile clip, crops, NTC stats, report).
    Ingest(ingest::IngestArgs),
    /// Make a crop store from an existing .npy crop stack and a metadata table.
    ImportCrops(import_crops::ImportCropsArgs),
    /// Inspect, verify, merge (job parts), export or sample a crop store.
    Store(store::StoreArgs),
    /// Train Set-DINO / DINO on a crop store (TOML config + --set overrides; --resume).
    Train(train::TrainArgs),
    /// Per-cell embeddings of a store's cells with a trained checkpoint → STEM.npy + STEM.tsv.
    Embed(embed::EmbedCmd),
    /// Engineered per-cell features (the classical baseline) → STEM.npy + STEM.tsv + STEM.features.tsv.
    Features(features::FeaturesArgs),
    /// Cell galleries: PNG grids of crops per gene, well or k-means cluster of features.
    #[command(long_about = gallery::LONG_ABOUT)]
    Gallery(gallery::GalleryArgs),
    /// Metrics of per-cell embeddings or features: batch effect, reproducibility, known-complex recall.
    #[command(long_about = eval::LONG_ABOUT)]
    Eval(eval::EvalArgs),
    /// The ablation on a store: DINO, Set-DINO and a random-init control over seeds, with intervals.
    #[command(long_about = experiment::LONG_ABOUT)]
    Experiment(experiment::ExperimentArgs),
    /// Redraw the figures of an eval, experiment, demo or training-run directory from its saved TSVs.
    #[command(long_about = report::LONG_ABOUT)]
    Report(report::ReportArgs),
    /// First command on a new machine: backend, CUDA device, NVRTC kernel table, parity self-test.
    Check(check::CheckArgs),
    /// Throughput of the ViT forward+backward and the Set-DINO step (compare with torch_vit_bench.py).
    Bench(bench::BenchArgs),
    /// Developer tools: parity interfaces against PyTorch.
    #[command(subcommand)]
    Debug(debug::DebugCmd),
}

/// Parse the command line and run the chosen subcommand; errors are printed with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Check(a) => check::run(a),
        Command::Train(a) => train::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Debug(c) => debug::run(c),
        Command::Features(a) => features::run(a),
        Command::Store(a) => store::run(a),
        Command::ImportCrops(a) => import_crops::run(a),
        Command::Ingest(a) => ingest::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Gallery(a) => gallery::run(a),
        Command::Experiment(a) => experiment::run(a),
        Command::Report(a) => report::run(a),
    }
}
