//! `--backend auto|cpu|cuda|simt`: picks a backend and runs generic code on it. `auto` probes CUDA without
//! ever panicking (is_culib_present, then CudaContext::new under catch_unwind) and falls back to the CPU
//! reference with a one-line reason on stderr.
use super::cpu::CpuBackend;
use super::gpu::cuda::Cuda;
use super::gpu::simt::Simt;
use super::gpu::GpuBackend;
use super::{Backend, Precision};
use anyhow::{bail, Result};

/// Code that runs on whichever backend is chosen (Rust closures cannot be generic, visitors can).
pub trait OnBackend {
    type Out;
    fn run<B: Backend>(self, be: B) -> Result<Self::Out>;
}

/// The chosen backend and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Cpu,
    Cuda,
    Simt,
}

/// Decides which backend `name` means here, with the reason (for `auto`).
pub fn decide(name: &str) -> Result<(Choice, String)> {
    match name {
        "cpu" => Ok((Choice::Cpu, "requested".into())),
        "simt" => Ok((Choice::Simt, "requested".into())),
        "cuda" => Ok((Choice::Cuda, "requested".into())),
        "auto" => match super::gpu::cuda::probe(0) {
            Ok(_) => Ok((Choice::Cuda, "a CUDA device is present".into())),
            Err(reason) => Ok((Choice::Cpu, format!("no usable GPU ({reason})"))),
        },
        other => bail!("unknown backend '{other}'; expected auto, cpu, cuda or simt"),
    }
}

/// `--precision auto|f32|bf16` on `choice`: `auto` is bf16 on CUDA (tensor cores) and f32 on the CPU
/// reference and the emulator (the parity reference).
pub fn precision_for(choice: &Choice, precision: &str) -> Result<Precision> {
    match precision {
        "auto" => Ok(match choice {
            Choice::Cuda => Precision::Bf16,
            Choice::Cpu | Choice::Simt => Precision::F32,
        }),
        other => other
            .parse()
            .map_err(|e: anyhow::Error| e.context("--precision (train.precision)")),
    }
}

/// Runs `job` on the backend `name` at the default precision (`auto`).
pub fn run_on<J: OnBackend>(name: &str, job: J) -> Result<J::Out> {
    run_on_at(name, "auto", job)
}

/// Runs `job` on the backend `name` at `precision` (auto, f32 or bf16); `auto` backends report their
/// choice on stderr in one line.
pub fn run_on_at<J: OnBackend>(name: &str, precision: &str, job: J) -> Result<J::Out> {
    let (choice, reason) = decide(name)?;
    let prec = precision_for(&choice, precision)?;
    if name == "auto" {
        eprintln!("backend: {choice:?} ({reason}), precision {prec}");
    }
    match choice {
        Choice::Cpu => job.run(CpuBackend::<f32>::with_precision(prec)),
        Choice::Simt => job.run(GpuBackend::with_precision(Simt::new(), prec)),
        Choice::Cuda => match Cuda::new(0) {
            Ok(dev) => job.run(GpuBackend::with_precision(dev, prec)),
            Err(e) if name == "auto" => {
                let prec = precision_for(&Choice::Cpu, precision)?;
                eprintln!(
                    "backend: Cpu (the CUDA device failed to start: {e:#}), precision {prec}"
                );
                job.run(CpuBackend::<f32>::with_precision(prec))
            }
            Err(e) => Err(e.context("--backend cuda")),
        },
    }
}
