//! Command line: one file per subcommand, argument handling only; the work lives in the library.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod import_crops;
pub mod ingest;
pub mod store;
pub mod synth;

/// setdino: Set-DINO for optical pooled screens (ingest, train, embed, evaluate).
#[derive(Parser, Debug)]
#[command(name = "setdino", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect, verify, export or sample a crop store.
    Store(store::StoreArgs),
    /// Make a crop store from an existing .npy crop stack and a metadata table.
    ImportCrops(import_crops::ImportCropsArgs),
    /// TIFF tiles + cell table → crop store (flat-field, percentile clip, crops, NTC stats, report).
    Ingest(ingest::IngestArgs),
    /// Write a synthetic screen with known ground truth (TIFF tiles, cell table, complexes, truth).
    Synth(synth::SynthArgs),
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
        Command::Store(a) => store::run(a),
        Command::ImportCrops(a) => import_crops::run(a),
        Command::Ingest(a) => ingest::run(a),
        Command::Synth(a) => synth::run(a),
    }
}
