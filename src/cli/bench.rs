//! `setdino bench`: throughput of the ViT forward+backward and of the full Set-DINO step on a backend,
//! printed as a table (and JSON with every timing), for side-by-side runs with torch_vit_bench.py.
use crate::backend::select::{run_on_at, OnBackend};
use crate::backend::Backend;
use crate::bench::{setdino_step, vit_fwd_bwd, BenchResult, Timing};
use crate::config::ModelConfig;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to measure: vit (fwd+bwd at the global and local crop sizes), step (Set-DINO step), all;
    /// kernels: every kernel of one Set-DINO step (--sets, --set-size, --n-local) with its FLOPs,
    /// compulsory bytes, bound, time and share of the GPU's peak, then the step's ms, samples/s, cells/s
    /// and MFU: measured with CUDA events on --backend cuda, modelled for --gpu on --backend simt (the
    /// reference step: --sets 32 --set-size 16 --n-local 8); gemm-counters (with --backend simt): the
    /// emulator's counters of every GEMM launch of one Linear forward+backward per ViT shape (--batch
    /// rows): mma instructions against FLOPs/4096, cp.async bytes and 32-byte sectors, ldmatrix phases and
    /// bank-conflict replays; launches (with --backend simt): the kernel launches of one Set-DINO step,
    /// per kernel.
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
    /// Global crop side in pixels (default: the preset's; the demo trains the tiny model at 48).
    #[arg(long)]
    pub global_px: Option<usize>,
    /// Local crop side in pixels (default: the preset's; the demo trains the tiny model at 24).
    #[arg(long)]
    pub local_px: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Warm-up runs before the timed ones (at least this many, and for at least --warmup-secs).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Keep warming up for at least this many seconds: a VM's cores reach their steady clock only after
    /// a few seconds of load, so short warm-ups time the ramp (0 turns it off).
    #[arg(long, default_value_t = 3.0)]
    pub warmup_secs: f64,
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// Backend: cpu, simt (slow: the emulator), cuda, or auto.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// GEMM precision: auto (bf16 on cuda, f32 elsewhere), f32 or bf16.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Also write every result (with all timings) to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// After the measurement, time every op of the CPU backend over --repeats more runs of each
    /// workload and print where the time goes: per op family (calls, ms per run, share, GFLOP/s of the
    /// GEMMs), per GEMM shape, and the time outside the GEMMs (--backend cpu only).
    #[arg(long)]
    pub profile: bool,
    /// The GPU whose peaks `--what kernels` models on the emulator (h100, h200, a100; default h100), or
    /// takes for the %-of-peak columns on CUDA (default: the device's name).
    #[arg(long)]
    pub gpu: Option<String>,
    /// Capture the step as a CUDA graph and replay it, as training does (on, off; default on for the
    /// GPU backends). With it on, the step's counters are those of a replay, and the same step run
    /// launch by launch is printed beside them.
    #[arg(long)]
    pub graphs: Option<String>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.profile && a.backend != "cpu" {
        bail!(
            "--profile times the CPU backend's ops: use --backend cpu (got '{}')",
            a.backend
        );
    }
    if a.what == "kernels" {
        return super::bench_kernels::run(&a, &bench_config(&a)?);
    }
    if a.what == "gemm-counters" {
        return kernel_counters(&a);
    }
    if a.what == "launches" {
        return step_launches(&a);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.unwrap_or(0))
        .build()?;
    pool.install(|| run_on_at(&a.backend, &a.precision, Job(&a)))
}

struct Job<'a>(&'a BenchArgs);

impl OnBackend for Job<'_> {
    type Out = ();
    fn run<B: Backend>(self, be: B) -> Result<()> {
        bench(self.0, be)
    }
}

fn timing(a: &BenchArgs) -> Timing {
    Timing {
        warmup: a.warmup,
        warmup_secs: a.warmup_secs,
        repeats: a.repeats,
    }
}

/// The preset named by --config with the crop sides of --global-px / --local-px, checked by the model
/// config's own validation.
fn bench_config(a: &BenchArgs) -> Result<ModelConfig> {
    let mut cfg = ModelConfig::preset(&a.config)?;
    cfg.global_size = a.global_px.unwrap_or(cfg.global_size);
    cfg.local_size = a.local_px.unwrap_or(cfg.local_size);
    cfg.validate().with_context(|| {
        format!(
            "--global-px {} --local-px {} with the {} preset (patch size {})",
            cfg.global_size, cfg.local_size, a.config, cfg.patch
        )
    })?;
    Ok(cfg)
}

fn bench<B: Backend>(a: &BenchArgs, be: B) -> Result<()> {
    let cfg = bench_config(a)?;
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
        let line = |what: &str, c: &crate::backend::counters::Counts| {
            println!(
                "    {what}: {} graph launches, {} launches, {} allocations, {} memsets, {} d2d copies, {} host syncs, {} uploads ({} B), {} B down",
                c.graph_launches, c.launches, c.allocs, c.memsets, c.copies, c.host_syncs, c.uploads, c.h2d_bytes, c.d2h_bytes
            );
        };
        if let Some(c) = &r.per_step {
            line("per step", c);
        }
        if let Some(c) = &r.per_step_uncaptured {
            line("per step, uncaptured", c);
        }
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        if let (Some(arena), Some(all)) = (r.arena_bytes, r.allocated_bytes) {
            match r.backend.starts_with("cpu") {
                true => println!(
                    "    memory (the step's buffers and the pool they return to): {:.1} MiB",
                    mib(arena)
                ),
                false => println!(
                    "    device memory: the step's temporaries in one arena of {:.1} MiB; {:.1} MiB allocated since start-up (the model's state, the first step's blocks, freed when the arena was carved, and the arena)",
                    mib(arena),
                    mib(all)
                ),
            }
        }
    };
    if a.what == "vit" || a.what == "all" {
        for side in [cfg.global_size, cfg.local_size] {
            let r = vit_fwd_bwd(&be, &cfg, a.batch, side, timing(a))?;
            print(&r);
            results.push(r);
        }
    }
    if a.what == "step" || a.what == "all" {
        let graphs = match a.graphs.as_deref() {
            None => be.is_device(),
            Some("on") => true,
            Some("off") => false,
            Some(other) => bail!("--graphs must be on or off (got '{other}')"),
        };
        let r = setdino_step(be, &cfg, a.sets, a.set_size, a.n_local, timing(a), graphs)?;
        print(&r);
        results.push(r);
    }
    if results.is_empty() {
        bail!(
            "--what must be vit, step, all, kernels or launches (got '{}')",
            a.what
        );
    }
    let profiles = if a.profile {
        profile_cpu(a, &cfg)?
    } else {
        Vec::new()
    };
    if let Some(p) = &a.json {
        let doc = serde_json::json!({ "results": results, "profiles": profiles });
        crate::util::atomic::write_atomic(p, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    }
    Ok(())
}

/// `--profile`: the same workloads again on the CPU backend with every op timed (one warm-up run, then
/// --repeats profiled runs each).
fn profile_cpu(a: &BenchArgs, cfg: &ModelConfig) -> Result<Vec<serde_json::Value>> {
    use crate::backend::cpu::{profile, CpuBackend};
    use crate::backend::select::{precision_for, Choice};
    let be = CpuBackend::<f32>::with_precision(precision_for(&Choice::Cpu, &a.precision)?);
    let mut out = Vec::new();
    if a.what == "vit" || a.what == "all" {
        for side in [cfg.global_size, cfg.local_size] {
            vit_fwd_bwd(&be, cfg, a.batch, side, Timing::cold(1))?;
            profile::start();
            let r = vit_fwd_bwd(&be, cfg, a.batch, side, Timing::cold(a.repeats))?;
            out.push(print_profile(&r, a.repeats));
        }
    }
    if a.what == "step" || a.what == "all" {
        setdino_step(
            be.clone(),
            cfg,
            a.sets,
            a.set_size,
            a.n_local,
            Timing::cold(1),
            false,
        )?;
        profile::start();
        let r = setdino_step(
            be,
            cfg,
            a.sets,
            a.set_size,
            a.n_local,
            Timing::cold(a.repeats),
            false,
        )?;
        out.push(print_profile(&r, a.repeats));
    }
    Ok(out)
}

/// Prints the op table recorded during `runs` runs of `r` (per run), and returns it for the JSON.
fn print_profile(r: &BenchResult, runs: usize) -> serde_json::Value {
    let table = crate::backend::cpu::profile::stop();
    let runs_f = runs.max(1) as f64;
    let wall = r.median_s * runs_f; // ≈ the profiled runs' wall time
    let ops: f64 = table
        .iter()
        .filter(|(k, _)| !k.starts_with("gemm "))
        .map(|(_, e)| e.secs)
        .sum();
    let gemm: f64 = table
        .iter()
        .filter(|(k, _)| k.as_str() == "matmul_forward" || k.as_str() == "matmul_backward")
        .map(|(_, e)| e.secs)
        .sum();
    println!(
        "  profile of {} ({runs} runs): ops {:.1} ms per run ({:.0}% of the wall time), GEMMs {:.1} ms ({:.0}% of the ops), outside the GEMMs {:.1} ms",
        r.name,
        1e3 * ops / runs_f,
        100.0 * ops / wall.max(1e-12),
        1e3 * gemm / runs_f,
        100.0 * gemm / ops.max(1e-12),
        1e3 * (ops - gemm) / runs_f
    );
    let mut rows: Vec<_> = table.iter().collect();
    rows.sort_by(|a, b| b.1.secs.total_cmp(&a.1.secs));
    println!(
        "  {:<52} {:>8} {:>10} {:>7} {:>9}",
        "op (gemm rows: R×I×O)", "calls", "ms/run", "share", "GFLOP/s"
    );
    for (k, e) in &rows {
        let gf = if e.flops > 0.0 {
            format!("{:.1}", e.flops / e.secs.max(1e-12) / 1e9)
        } else {
            "-".into()
        };
        println!(
            "  {:<52} {:>8.1} {:>10.2} {:>6.1}% {:>9}",
            k,
            e.calls as f64 / runs_f,
            1e3 * e.secs / runs_f,
            100.0 * e.secs / ops.max(1e-12),
            gf
        );
    }
    serde_json::json!({
        "workload": r.name,
        "runs": runs,
        "ops_s_per_run": ops / runs_f,
        "gemm_s_per_run": gemm / runs_f,
        "table": table.iter().map(|(k, e)| serde_json::json!({"op": k, "entry": e})).collect::<Vec<_>>(),
    })
}

/// The recording emulator and the model preset of `--what gemm-counters|launches` (which need `--backend simt`).
/// Both are about the tensor-core kernels: `--precision auto` means bf16 here.
fn recording_simt(
    a: &BenchArgs,
    does: &str,
) -> Result<(
    crate::backend::gpu::GpuBackend<crate::backend::gpu::simt::Simt>,
    ModelConfig,
)> {
    use crate::backend::gpu::simt::Simt;
    use crate::backend::gpu::GpuBackend;
    use crate::backend::select::{precision_for, Choice};
    if a.backend != "simt" {
        bail!(
            "--what {} {does} in the emulator: use --backend simt (got '{}')",
            a.what,
            a.backend
        );
    }
    let cfg = bench_config(a)?;
    let prec = match a.precision.as_str() {
        "auto" => crate::backend::Precision::Bf16,
        p => precision_for(&Choice::Simt, p)?,
    };
    Ok((GpuBackend::with_precision(Simt::recording(), prec), cfg))
}

/// `--what launches`: every kernel launch of one Set-DINO step on the emulator, counted per kernel
/// (the second step: the first also uploads the position-interpolation matrices).
fn step_launches(a: &BenchArgs) -> Result<()> {
    let (be, cfg) = recording_simt(a, "records the launches")?;
    let (mut eng, batch) = crate::bench::step_engine(be, &cfg, a.sets, a.set_size, a.n_local)?;
    let (optim, sched) = crate::bench::step_hyper();
    eng.train_step(&batch, &optim, &sched, 1, 0)?;
    eng.be.dev.take_launches();
    eng.train_step(&batch, &optim, &sched, 1, 1)?;
    let launches = eng.be.dev.take_launches();
    let mut per: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
    for l in &launches {
        let e = per.entry(l.kernel.name()).or_default();
        e.0 += 1;
        e.1 += l.counters.mma;
    }
    println!(
        "one Set-DINO step, {} set(s) × {} cells, {} local crops, config {} (depth {}), on {}",
        a.sets,
        a.set_size,
        a.n_local,
        a.config,
        cfg.depth,
        eng.be.name()
    );
    println!("{:<40} {:>9} {:>12}", "kernel", "launches", "mma");
    let mut rows: Vec<_> = per.into_iter().collect();
    rows.sort_by_key(|(name, (n, _))| (std::cmp::Reverse(*n), *name));
    for (name, (n, mma)) in rows {
        println!("{name:<40} {n:>9} {mma:>12}");
    }
    println!("{:<40} {:>9}", "total", launches.len());
    Ok(())
}

/// `--what gemm-counters`: the SIMT emulator's per-launch counters for the Linear layers of the model.
fn kernel_counters(a: &BenchArgs) -> Result<()> {
    let (be, cfg) = recording_simt(a, "counts instructions")?;
    let prec = be.precision;
    let (c, f) = (cfg.dim, cfg.mlp_hidden);
    let r = a.batch;
    println!("{} on {}; {r} rows per Linear layer", prec, be.name());
    println!(
        "{:<36} {:>16} {:>10} {:>10} {:>12} {:>10} {:>7} {:>9} {:>8}",
        "kernel",
        "grid",
        "mma",
        "FLOP/4096",
        "cp.async B",
        "sectors",
        "used",
        "ldmatrix",
        "replays"
    );
    for (name, i, o) in [
        ("qkv", c, 3 * c),
        ("proj", c, c),
        ("fc1", c, f),
        ("fc2", f, c),
    ] {
        // the weights as the step keeps them: with the bf16 copy AdamW writes
        let mut params = be.upload(&vec![0.01f32; o * i + o])?;
        be.keep_bf16_copy(&mut params)?;
        let x = be.upload(&vec![0.5f32; r * i])?;
        let dy = be.upload(&vec![0.25f32; r * o])?;
        let mut y = be.zeros(r * o)?;
        let mut dx = be.zeros(r * i)?;
        let mut dp = be.zeros(o * i + o)?;
        be.matmul_forward(&mut y, &x, &params, 0, Some(o * i), r, i, o)?;
        be.matmul_backward(
            Some(&mut dx),
            &mut dp,
            0,
            Some(o * i),
            &dy,
            &x,
            &params,
            0,
            r,
            i,
            o,
        )?;
        println!(
            "{name}: R {r}, I {i}, O {o} ({:.1} MFLOP per GEMM)",
            2e-6 * (r * i * o) as f64
        );
        for l in be.dev.take_launches() {
            let k = &l.counters;
            println!(
                "  {:<34} {:>16} {:>10} {:>10} {:>12} {:>10} {:>6.1}% {:>9} {:>8}",
                l.kernel.name(),
                format!("{:?}", l.grid),
                k.mma,
                if k.mma > 0 {
                    (2 * r * i * o / 4096).to_string()
                } else {
                    "-".into()
                },
                k.cp_async_bytes,
                k.cp_async_sectors,
                100.0 * k.sector_efficiency(),
                k.ldmatrix_phases,
                k.ldmatrix_replays
            );
        }
    }
    Ok(())
}
