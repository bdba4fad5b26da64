//! `setdino experiment`: argument handling for src/experiment.
use crate::experiment::{ExperimentOptions, Method};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// What `setdino experiment --help` prints above the options.
pub const LONG_ABOUT: &str = "The ablation on a store: DINO, Set-DINO and a random-init ViT, each over several \
training seeds, for the same step budget and crops per step; embedded and evaluated on held-out plates (or \
wells); the Table 1 metrics as mean ± s.d., paired bootstrap intervals of the differences, the recall ceiling \
and the training curves in OUT/report.md (protocol: docs/experiment.md).

Example:
  setdino experiment --store STORE --complexes complexes.tsv --methods dino,setdino,random \\
    --seeds 3 --steps 1000 --jobs 2 --out exp

Hyper-parameters: --sweep optim.lr=1e-3,3e-3,1e-2 trains every method × value × seed and scores each on \
validation cells of the training plates only (never the evaluation plates); pass the chosen value back with \
--set optim.lr=….";

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// Crop store (`setdino ingest`).
    #[arg(long)]
    pub store: PathBuf,
    /// Known complexes (clusters TSV or pairs CSV, as `eval --complexes`).
    #[arg(long)]
    pub complexes: PathBuf,
    /// Output directory (runs, embeddings, eval, report.md, results.json, curves.png).
    #[arg(long)]
    pub out: PathBuf,
    /// Comma-separated rows: dino, setdino, random (the untrained control).
    #[arg(long, default_value = "dino,setdino,random")]
    pub methods: String,
    /// Training seeds per method: --seed, --seed + 1, …
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Training steps per run (the same for every method; the demo's budget, at which the tiny defaults were chosen).
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Comma-separated training plates (default: every plate but the last).
    #[arg(long)]
    pub train_plates: Option<String>,
    /// Comma-separated evaluation plates, held out from training (default: the last plate).
    #[arg(long)]
    pub eval_plates: Option<String>,
    /// Comma-separated training wells: a split by wells (within --train-plates, or every plate) instead
    /// of by plates. A one-plate store without --train-wells/--eval-wells trains on its first half of
    /// wells and evaluates on the second.
    #[arg(long)]
    pub train_wells: Option<String>,
    /// Comma-separated held-out evaluation wells (default with --train-wells: the other wells).
    #[arg(long)]
    pub eval_wells: Option<String>,
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Training config overrides for every run (dotted keys, TOML values), after the method's own.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Engineered features of the evaluation cells (`setdino features` stem), evaluated as a row.
    #[arg(long)]
    pub features: Option<PathBuf>,
    /// KEY=V1,V2,…: a validation-only sweep of one setting (see above) instead of the experiment.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Training runs at a time, each on cores / jobs threads (the results are the same for any value;
    /// 2 on a 2-core machine is faster for small models).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Bootstrap resamples of the intervals.
    #[arg(long, default_value_t = 2000)]
    pub resamples: usize,
    /// Also write every figure as SVG (beside its PNG), for papers.
    #[arg(long)]
    pub svg: bool,
}

fn list(s: &Option<String>) -> Option<Vec<String>> {
    s.as_ref().map(|v| {
        v.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    })
}

pub fn run(a: ExperimentArgs) -> Result<()> {
    let methods = a
        .methods
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<Method>>>()?;
    let sweep = match &a.sweep {
        Some(s) => {
            let (k, v) = s
                .split_once('=')
                .with_context(|| format!("--sweep {s:?}: expected KEY=V1,V2,…"))?;
            Some((k.trim().to_string(), sweep_values(v)?))
        }
        None => None,
    };
    let s = crate::experiment::run(&ExperimentOptions {
        store: a.store,
        complexes: a.complexes,
        out: a.out.clone(),
        methods,
        seeds: a.seeds,
        seed: a.seed,
        steps: a.steps,
        train_plates: list(&a.train_plates),
        eval_plates: list(&a.eval_plates),
        train_wells: list(&a.train_wells),
        eval_wells: list(&a.eval_wells),
        backend: a.backend,
        sets: a.sets,
        features: a.features,
        sweep,
        resamples: a.resamples,
        jobs: a.jobs,
        figures: crate::plot::Formats { svg: a.svg },
        progress: true,
    })?;
    if !s.rows.is_empty() {
        println!("{}", crate::experiment::table(&s.rows));
        println!("report: {}", a.out.join("report.md").display());
    }
    Ok(())
}

/// The values of `--sweep KEY=V1,V2,…`, split on the commas outside brackets, so an array value such as
/// `[0.8,1.25]` stays whole: `[1,1],[0.8,1.25]` is two values.
fn sweep_values(v: &str) -> Result<Vec<String>> {
    let (mut out, mut depth, mut cur) = (Vec::new(), 0usize, String::new());
    for c in v.chars() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .with_context(|| format!("--sweep values {v:?}: a ']' without its '['"))?
            }
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    anyhow::ensure!(depth == 0, "--sweep values {v:?}: a '[' is not closed");
    out.push(cur.trim().to_string());
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sweep_values_keep_arrays_whole() {
        let v = super::sweep_values("[1,1], [0.8,1.25],2e-3").unwrap();
        assert_eq!(v, ["[1,1]", "[0.8,1.25]", "2e-3"]);
        assert_eq!(super::sweep_values("1e-3,3e-3").unwrap(), ["1e-3", "3e-3"]);
        assert!(super::sweep_values("[1,1").is_err());
        assert!(super::sweep_values("1]").is_err());
    }
}
