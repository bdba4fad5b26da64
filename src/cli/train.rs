//! `setdino train`: argument handling for the trainer (src/train.rs).
use crate::train::{train, RunRecord, TrainConfig, TrainOptions};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Train Set-DINO (or the DINO baseline) on a crop store.
///
/// Examples:
///   setdino train --store STORE --out runs/setdino                       (tiny preset, Set-DINO)
///   setdino train --config cfg.toml --set data.set_size=16 --store STORE --out RUN
///   setdino train --set data.strategy=same-cells --set data.set_size=1 --store STORE --out runs/dino
///   setdino train --resume RUN                                           (continue exactly)
///   setdino train --set train.data_parallel=2 --store STORE --out RUN     (2 CPU ranks, one process)
///   torchrun --standalone --nproc_per_node 4 --no-python setdino train --set train.backend=cuda \
///       --store STORE --out RUN                                          (4 GPUs, NCCL; README)
///
/// The TOML file has an optional `preset = "tiny" | "vits16"` and the sections [model], [optim], [data],
/// [train] (see README); every key can also be set with --set section.key=value.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML configuration (over a preset).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a configuration key, e.g. --set optim.lr=1e-3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// The crop store to train on.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// The run directory (config.json, log.jsonl, checkpoints/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long, conflicts_with_all = ["config", "out"])]
    pub resume: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Stop after this global step (with a checkpoint), schedules unchanged; continue with --resume.
    #[arg(long)]
    pub stop_at: Option<u64>,
    /// GEMM precision (same as --set train.precision=…): auto (bf16 on cuda, f32 on cpu and simt),
    /// f32, or bf16 (tensor-core GEMM operands, f32 accumulation and f32 master weights).
    #[arg(long)]
    pub precision: Option<String>,
}

pub fn run(mut a: TrainArgs) -> Result<()> {
    if let Some(p) = a.precision.take() {
        a.sets.push(format!("train.precision={p}"));
    }
    let opts = match &a.resume {
        Some(run) => {
            let p = run.join("config.json");
            let text = std::fs::read_to_string(&p).with_context(|| {
                format!("--resume {}: cannot read {}", run.display(), p.display())
            })?;
            let rec: RunRecord = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a run record", p.display()))?;
            let mut config = rec.config;
            if !a.sets.is_empty() {
                // Overrides on resume (e.g. a longer step budget) go through the same validation.
                let mut t = toml::Table::try_from(&config)?;
                for s in &a.sets {
                    let (k, v) = s
                        .split_once('=')
                        .with_context(|| format!("--set {s}: expected key=value"))?;
                    let tmp: toml::Table = toml::from_str(&format!("{k} = {v}"))
                        .or_else(|_| toml::from_str(&format!("{k} = \"{v}\"")))
                        .with_context(|| format!("--set {s}"))?;
                    merge(&mut t, tmp);
                }
                config = toml::Value::Table(t)
                    .try_into()
                    .map_err(|e| anyhow::anyhow!("--set: {e}"))?;
                config.validate()?;
            }
            TrainOptions {
                config,
                store: a.store.clone().unwrap_or(rec.store),
                out: run.clone(),
                resume: true,
                progress: !a.quiet,
                stop_at: a.stop_at,
            }
        }
        None => {
            let (Some(store), Some(out)) = (&a.store, &a.out) else {
                bail!("train needs --store STORE and --out RUN (or --resume RUN)");
            };
            TrainOptions {
                config: TrainConfig::load(a.config.as_deref(), &a.sets)?,
                store: store.clone(),
                out: out.clone(),
                resume: false,
                progress: !a.quiet,
                stop_at: a.stop_at,
            }
        }
    };
    let s = train(opts)?;
    let replayed = if s.replayed_steps > 0 {
        format!(
            " ({} as replays of a captured CUDA graph)",
            s.replayed_steps
        )
    } else {
        String::new()
    };
    eprintln!(
        "trained {} steps{replayed} (now at step {}); checkpoint {}",
        s.steps_done,
        s.last_step,
        s.checkpoint.display()
    );
    Ok(())
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}
