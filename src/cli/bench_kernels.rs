//! `setdino bench --what kernels`: every kernel of one Set-DINO step with its FLOPs, bytes, the bound it
//! hits and its time — measured with CUDA events on a GPU (median over --repeats steps), modelled on the
//! emulator (`roofline`), which runs the step dry (launches recorded, not executed) so the reference
//! step's full size costs seconds.
use super::bench::BenchArgs;
use crate::backend::gpu::profile::{per_kernel, LaunchProfile};
use crate::backend::gpu::{Device, GpuBackend};
use crate::backend::select::{decide, precision_for, Choice};
use crate::backend::Precision;
use crate::config::ModelConfig;
use crate::roofline::{launch_model, peaks_for, rows, summary, GpuPeaks, KernelRow, StepSummary};
use anyhow::{bail, Context, Result};
use serde::Serialize;

#[derive(Serialize)]
struct Report {
    config: String,
    backend: String,
    sets: usize,
    set_size: usize,
    n_local: usize,
    global_px: usize,
    local_px: usize,
    kernels: Vec<KernelRow>,
    step: StepSummary,
}

pub fn run(a: &BenchArgs, cfg: &ModelConfig) -> Result<()> {
    let (choice, _) = decide(&a.backend)?;
    // the tensor-core kernels are what the table is about: auto means bf16 on the emulator too
    let prec = match (a.precision.as_str(), &choice) {
        ("auto", _) => Precision::Bf16,
        (p, c) => precision_for(c, p)?,
    };
    // --gpu names the peaks; without it, the device's own name, else an H100 SXM
    let gpu = |described: &str| -> Result<GpuPeaks> {
        match a.gpu.as_deref() {
            Some(name) => peaks_for(name).with_context(|| {
                format!("--gpu: no peaks for '{name}'; expected h100, h200 or a100")
            }),
            None => Ok(peaks_for(described).unwrap_or(crate::roofline::H100_SXM)),
        }
    };
    match choice {
        Choice::Cpu => bail!(
            "--what kernels profiles the GPU kernels: use --backend simt (modelled times) or cuda \
             (measured); for the CPU's ops use --profile"
        ),
        Choice::Simt => {
            let be = GpuBackend::with_precision(crate::backend::gpu::simt::Simt::dry(), prec);
            let peaks = gpu("h100")?;
            table(a, cfg, be, peaks, 1)
        }
        Choice::Cuda => {
            let be = GpuBackend::with_precision(crate::backend::gpu::cuda::Cuda::new(0)?, prec);
            let peaks = gpu(&crate::backend::Backend::name(&be))?;
            table(a, cfg, be, peaks, a.repeats.max(1))
        }
    }
}

fn table<D: Device>(
    a: &BenchArgs,
    cfg: &ModelConfig,
    be: GpuBackend<D>,
    peaks: GpuPeaks,
    repeats: usize,
) -> Result<()> {
    let (mut eng, batch) = crate::bench::step_engine(be, cfg, a.sets, a.set_size, a.n_local)?;
    let (optim, sched) = crate::bench::step_hyper();
    // warm-up: the first step allocates its arena and uploads the interpolation tables
    let mut it = 0;
    for _ in 0..a.warmup.max(1) {
        eng.train_step_on_device(&batch, &optim, &sched, 1, it, (0, 1))?;
        it += 1;
    }
    let mut steps: Vec<Vec<LaunchProfile>> = Vec::new();
    for _ in 0..repeats {
        eng.be.start_profile();
        eng.train_step_on_device(&batch, &optim, &sched, 1, it, (0, 1))?;
        steps.push(eng.be.take_profile()?);
        it += 1;
    }
    let mut kernels = rows(&per_kernel(&steps, |l| launch_model(l, &peaks)), &peaks);
    let flop = crate::bench::step_flop(cfg, a.sets, a.set_size, a.n_local);
    let step = summary(&kernels, &peaks, flop, a.sets * a.set_size);
    kernels.sort_by(|x, y| y.ms.total_cmp(&x.ms));
    let report = Report {
        config: a.config.clone(),
        backend: crate::backend::Backend::name(&eng.be),
        sets: a.sets,
        set_size: a.set_size,
        n_local: a.n_local,
        global_px: cfg.global_size,
        local_px: cfg.local_size,
        kernels,
        step,
    };
    print(&report);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn print(r: &Report) {
    let s = &r.step;
    let how = if s.measured {
        format!("MEASURED on {} (CUDA events, median of steps)", r.backend)
    } else {
        format!(
            "MODELLED for {} (roofline with the design efficiencies of src/roofline.rs; the emulator's launches, not its time)",
            s.gpu.name
        )
    };
    println!(
        "one Set-DINO step: {} set(s) × {} cells, 2 × {} px + {} × {} px, config {}; {how}",
        r.sets, r.set_size, r.global_px, r.n_local, r.local_px, r.config
    );
    println!(
        "{:<44} {:>6} {:>7} {:>10} {:>10} {:>8} {:>8} {:>9} {:>8} {:>8} {:>6}",
        "kernel",
        "calls",
        "minCTA",
        "GFLOP",
        "MB",
        "FLOP/B",
        "bound",
        "ms",
        "TFLOP/s",
        "GB/s",
        "%peak"
    );
    for k in &r.kernels {
        let t = &k.total;
        println!(
            "{:<44} {:>6} {:>7} {:>10.2} {:>10.2} {:>8.1} {:>8} {:>9.4} {:>8.1} {:>8.0} {:>6.1}",
            t.kernel,
            t.launches,
            t.min_ctas,
            t.flop / 1e9,
            t.bytes as f64 / 1e6,
            k.intensity,
            k.bound,
            k.ms,
            k.tflops,
            k.gbs,
            k.pct_of_peak
        );
    }
    println!(
        "step: {} launches, {:.3} ms, {:.0} samples/s, {:.0} cells/s, MFU {:.1} % of {} bf16 dense ({:.2} TFLOP model, kernels state {:.2} TFLOP; {:.2} GB compulsory traffic)",
        s.launches,
        s.ms,
        s.samples_per_s,
        s.cells_per_s,
        s.mfu_pct,
        s.gpu.name,
        s.step_flop / 1e12,
        s.kernel_flop / 1e12,
        s.bytes as f64 / 1e9
    );
}
