//! `setdino report`: argument handling for `plot::regen`.
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// Long help of `setdino report --help`.
pub const LONG_ABOUT: &str = "\
Redraw the figures of a directory from the TSVs saved beside them, without recomputing anything.

DIR may be an eval output (pr_curve, similarity_hist, adjacency, pca), an experiment or demo output
(comparison, curves, and every eval/<method>/seed<k>/ below it) or a training run (its log.jsonl and
val.jsonl become curves.tsv, then curves.png). Subdirectories are searched 3 levels deep. Edit a TSV,
rerun, and the figure follows; each file written is printed.

Examples:
  setdino report setdino-demo            # every figure of a demo
  setdino report run/eval --svg          # PNG and SVG of one eval
  setdino report runs/setdino/seed7      # training curves of one run";

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The directory (eval, experiment, demo or training run).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Also write every figure as SVG (beside its PNG).
    #[arg(long)]
    pub svg: bool,
}

pub fn run(a: ReportArgs) -> Result<()> {
    let files = crate::plot::regen::regenerate(&a.dir, crate::plot::Formats { svg: a.svg })?;
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no figure data found (expected pr_curve.tsv, similarity_hist.tsv, adjacency.tsv, pca.tsv, \
         comparison.tsv, curves.tsv or a training run's log.jsonl + config.json, up to 3 levels down)",
        a.dir.display()
    );
    for f in &files {
        println!("{}", f.display());
    }
    Ok(())
}
