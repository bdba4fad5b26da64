//! `--backend auto|cpu|cuda|simt`: picks a backend and runs generic code on it. `auto` probes CUDA without
//! ever panicking (is_culib_present, then CudaContext::new under catch_unwind) and falls back to the CPU
//! reference with a one-line reason on stderr.
use super::cpu::CpuBackend;
use super::gpu::cuda::Cuda;
use super::gpu::simt::Simt;
use super::gpu::GpuBackend;
use super::Backend;
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

/// Runs `job` on the backend `name`; `auto` reports its choice on stderr in one line.
pub fn run_on<J: OnBackend>(name: &str, job: J) -> Result<J::Out> {
    let (choice, reason) = decide(name)?;
    if name == "auto" {
        eprintln!("backend: {choice:?} ({reason})");
    }
    match choice {
        Choice::Cpu => job.run(CpuBackend::<f32>::new()),
        Choice::Simt => job.run(GpuBackend::new(Simt::new())),
        Choice::Cuda => match Cuda::new(0) {
            Ok(dev) => job.run(GpuBackend::new(dev)),
            Err(e) if name == "auto" => {
                eprintln!("backend: Cpu (the CUDA device failed to start: {e:#})");
                job.run(CpuBackend::<f32>::new())
            }
            Err(e) => Err(e.context("--backend cuda")),
        },
    }
}
