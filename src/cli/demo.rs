//! `setdino demo`: argument handling for src/demo.rs.
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Run the whole pipeline on a built-in synthetic screen and print the paper's Table 1 layout for
/// engineered features, DINO, Set-DINO and a random-init control, 3 seeds each, with bootstrap intervals
/// and training curves in OUT/report.md (about 13 minutes on 2 CPU cores; --quick about 1).
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output directory (screen, store, runs, embeddings, eval, report.md).
    #[arg(long, default_value = "setdino-demo")]
    pub out: PathBuf,
    /// The short version: 40 training steps per run instead of 1000 (a smoke test of the pipeline; the
    /// rows then measure almost untrained networks).
    #[arg(long)]
    pub quick: bool,
    #[arg(long, default_value = "auto")]
    pub backend: String,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Also write every figure as SVG (beside its PNG), for papers.
    #[arg(long)]
    pub svg: bool,
}

pub fn run(a: DemoArgs) -> Result<()> {
    crate::demo::run(&crate::demo::DemoOptions {
        out: a.out,
        quick: a.quick,
        backend: a.backend,
        seed: a.seed,
        figures: crate::plot::Formats { svg: a.svg },
    })?;
    Ok(())
}
