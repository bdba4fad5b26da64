//! `setdino bench`: throughput of the ViT forward+backward and of the full Set-DINO step on a backend,
//! printed as a table (and JSON with every timing), for side-by-side runs with torch_vit_bench.py.
use crate::backend::select::{run_on, OnBackend};
use crate::backend::Backend;
use crate::bench::{setdino_step, vit_fwd_bwd, BenchResult};
use crate::config::ModelConfig;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to measure: vit (fwd+bwd at the global and local crop sizes), step (Set-DINO step), all.
    #[arg(long, default_value = "all")]
    pub what: String,
    /// Model preset: vits16 (the reference run) or tiny.
    #[arg(long, default_value = "vits16")]
    pub config: String,
    /// Images per ViT forward+backward.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Sets and cells per set for the step (the reference measurement is 1 set of 16 cells).
    #[arg(long, default_value_t = 1)]
    pub sets: usize,
    #[arg(long, default_value_t = 16)]
    pub set_size: usize,
    /// Local crops per set.
    #[arg(long, default_value_t = 8)]
    pub n_local: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// Backend: cpu, simt (slow: the emulator), cuda, or auto.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Also write every result (with all timings) to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()?;
    pool.install(|| run_on(&a.backend, Job(&a)))
}

struct Job<'a>(&'a BenchArgs);

impl OnBackend for Job<'_> {
    type Out = ();
    fn run<B: Backend>(self, be: B) -> Result<()> {
        bench(self.0, be)
    }
}

fn bench<B: Backend>(a: &BenchArgs, be: B) -> Result<()> {
    let cfg = ModelConfig::preset(&a.config)?;
    let mut results: Vec<BenchResult> = Vec::new();
    let print = |r: &BenchResult| {
        println!(
            "{:<58} {:>9.2} items/s  median {:>8.1} ms  best {:>8.1} ms  {:>7.1} GFLOP/s  [{}]",
            r.name,
            r.items_per_s,
            r.median_s * 1e3,
            r.best_s * 1e3,
            r.gflops,
            r.backend
        );
    };
    if a.what == "vit" || a.what == "all" {
        for side in [cfg.global_size, cfg.local_size] {
            let r = vit_fwd_bwd(&be, &cfg, a.batch, side, a.warmup, a.repeats)?;
            print(&r);
            results.push(r);
        }
    }
    if a.what == "step" || a.what == "all" {
        let r = setdino_step(be, &cfg, a.sets, a.set_size, a.n_local, a.warmup, a.repeats)?;
        print(&r);
        results.push(r);
    }
    if results.is_empty() {
        bail!("--what must be vit, step or all (got '{}')", a.what);
    }
    if let Some(p) = &a.json {
        crate::util::atomic::write_atomic(p, serde_json::to_string_pretty(&results)?.as_bytes())?;
    }
    Ok(())
}
