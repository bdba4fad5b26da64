//! `setdino check`: backend detection, CUDA device facts, the NVRTC kernel table, a parity self-test.
use crate::backend::gpu::{nvrtc, ALL_MODULES};
use crate::backend::select::{decide, run_on_at, Choice, OnBackend};
use crate::backend::Backend;
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Backend to check: auto (what training would use), cpu, cuda or simt.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Architecture for the NVRTC table when no GPU is present.
    #[arg(long, default_value = "sm_90")]
    pub arch: String,
    /// GEMM precision of the self-test: auto (bf16 on cuda, f32 elsewhere), f32 or bf16 (compared with
    /// the CPU twin that rounds at the same points).
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Largest relative error the self-test accepts.
    #[arg(long, default_value_t = 1e-3)]
    pub tol: f64,
}

struct SelfTest;
impl OnBackend for SelfTest {
    type Out = (String, Vec<(String, f64, f64)>);
    fn run<B: Backend>(self, be: B) -> Result<Self::Out> {
        let name = be.name();
        Ok((name, crate::check::parity_self_test(be)?))
    }
}

struct GraphTest;
impl OnBackend for GraphTest {
    type Out = Option<(u64, f64, bool)>;
    fn run<B: Backend>(self, be: B) -> Result<Self::Out> {
        crate::check::graph_self_test(be)
    }
}

pub fn run(a: CheckArgs) -> Result<()> {
    let (choice, reason) = decide(&a.backend)?;
    println!("backend      {choice:?} ({reason})");
    let mut arch = a.arch.clone();
    match crate::backend::gpu::cuda::probe(0) {
        Ok(ctx) => {
            let (maj, min) = ctx.compute_capability().unwrap_or((0, 0));
            arch = format!("sm_{maj}{min}");
            let mut drv = 0i32;
            // SAFETY: out-parameter; the driver is loaded (probe succeeded).
            let _ = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut drv) };
            println!(
                "cuda         {} | compute capability {maj}.{min} | driver {}.{} | {:.1} GiB",
                ctx.name().unwrap_or_default(),
                drv / 1000,
                (drv % 1000) / 10,
                ctx.total_mem().unwrap_or(0) as f64 / (1u64 << 30) as f64
            );
        }
        Err(why) => println!("cuda         not available: {why}"),
    }
    if nvrtc::available() {
        let (ma, mi) = nvrtc::version().unwrap_or((0, 0));
        println!(
            "nvrtc        {ma}.{mi}: compiling {} modules for {arch} (ptxas warnings as errors)",
            ALL_MODULES.len()
        );
        println!(
            "  {:<46} {:>5} {:>10} {:>7}",
            "kernel", "regs", "smem (B)", "spills"
        );
        for m in ALL_MODULES {
            match nvrtc::compile(m, &arch, true) {
                Ok(c) => {
                    for k in c.report {
                        println!(
                            "  {:<46} {:>5} {:>10} {:>7}",
                            k.name, k.registers, k.smem_bytes, k.spill_bytes
                        );
                    }
                }
                Err(e) => println!("  {}.cu FAILED: {e:#}", m.name),
            }
        }
    } else {
        println!("nvrtc        not found (HINT: pip install --target .cuda-tools nvidia-cuda-nvrtc-cu12==12.9.86, or set SETDINO_NVRTC_LIB)");
    }
    // On the CPU reference the self-test compares the SIMT device with it (the GPU code path).
    let target = if choice == Choice::Cpu {
        "simt"
    } else {
        a.backend.as_str()
    };
    let (name, rows) = run_on_at(target, &a.precision, SelfTest)?;
    println!(
        "self-test    one tiny Set-DINO step on {name} vs the CPU reference at the same precision"
    );
    let mut worst = 0f64;
    for (q, d, r) in &rows {
        println!(
            "  {q:<24} max|Δ| {d:.2e}  rel {r:.2e}  {}",
            if *r <= a.tol { "OK" } else { "FAIL" }
        );
        worst = worst.max(*r);
    }
    if worst > a.tol || !worst.is_finite() {
        bail!(
            "parity self-test failed: worst relative error {worst:.2e} > {:.0e}",
            a.tol
        );
    }
    // The captured step (CUDA graph) against the same steps launch by launch, on the same device.
    match run_on_at(target, &a.precision, GraphTest)? {
        None => println!("graph        not captured on this backend (the CPU runs steps directly)"),
        Some((replays, diff, same)) => {
            let verdict = if diff <= a.tol * 1e-3 { "OK" } else { "FAIL" };
            println!(
                "graph        {} training steps, {replays} replayed from a captured graph: final state max|Δ| {diff:.2e} vs launch by launch ({}) {verdict}",
                crate::check::GRAPH_CHECK_STEPS,
                if same { "bit-identical" } else { "not bit-identical" },
            );
            if verdict == "FAIL" {
                bail!("graph self-test failed: the replayed steps end {diff:.2e} away from the direct ones");
            }
        }
    }
    println!("all good (worst relative error {worst:.2e})");
    Ok(())
}
