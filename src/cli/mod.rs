//! Command line: one file per subcommand, argument handling only; the work lives in the library.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod bench;
pub mod check;
pub mod debug;
pub mod eval;

/// setdino: Set-DINO for optical pooled screens (ingest, train, embed, evaluate).
#[derive(Parser, Debug)]
#[command(name = "setdino", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Throughput of the ViT forward+backward and the Set-DINO step (compare with torch_vit_bench.py).
    Bench(bench::BenchArgs),
    /// First command on a new machine: backend, CUDA device, NVRTC kernel table, parity self-test.
    Check(check::CheckArgs),
    /// Developer tools: parity interfaces against PyTorch.
    #[command(subcommand)]
    Debug(debug::DebugCmd),
    /// Metrics of per-cell embeddings or features: batch effect, reproducibility, known-complex recall.
    #[command(long_about = eval::LONG_ABOUT)]
    Eval(eval::EvalArgs),
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
        Command::Bench(a) => bench::run(a),
        Command::Check(a) => check::run(a),
        Command::Debug(c) => debug::run(c),
        Command::Eval(a) => eval::run(a),
    }
}
