//! Per-launch profile of the GPU backend (`setdino bench --what kernels`): for every kernel launch, its
//! model FLOPs (stated by the op that launches it: GEMMs 2·R·I·O, attention 4·B·N²·C forward and
//! 8·B·N²·C backward; 0 for the memory-bound kernels), its compulsory bytes (the extent of every buffer
//! argument, each counted once: what the launch must at least read or write) and, on a device that has
//! timers (CUDA events), its measured time. Off unless started: the launch path then costs one lock.
use super::Kernel;
use std::collections::HashMap;

/// One profiled launch.
#[derive(Clone, Debug)]
pub struct LaunchProfile {
    pub kernel: Kernel,
    /// Thread blocks of the launch (CTAs).
    pub ctas: u64,
    /// Model FLOPs (0 where the op states none).
    pub flop: f64,
    /// Compulsory global-memory bytes: each buffer argument's extent once.
    pub bytes: u64,
    /// Measured time (CUDA events), `None` on a device without timers (the emulator).
    pub ms: Option<f64>,
}

/// What the backend collects while profiling: the extent of every address handed to a kernel, the
/// FLOPs stated for the next launch, and the launches with their timer marks.
pub(crate) struct Profiler<M> {
    extents: HashMap<u64, u64>,
    next_flop: f64,
    pub(crate) launches: Vec<(LaunchProfile, Option<(M, M)>)>,
}

impl<M> Default for Profiler<M> {
    fn default() -> Self {
        Profiler {
            extents: HashMap::new(),
            next_flop: 0.0,
            launches: Vec::new(),
        }
    }
}

impl<M> Profiler<M> {
    /// The buffer argument at `addr` spans `bytes`.
    pub(crate) fn extent(&mut self, addr: u64, bytes: u64) {
        if addr != 0 {
            self.extents.insert(addr, bytes);
        }
    }
    /// The next launch does `flop` model FLOPs.
    pub(crate) fn flop(&mut self, flop: f64) {
        self.next_flop = flop;
    }
    /// The record of a launch of `kernel` with `ptrs` (its pointer arguments), taking the stated FLOPs.
    pub(crate) fn record(
        &mut self,
        kernel: Kernel,
        ctas: u64,
        ptrs: impl Iterator<Item = u64>,
    ) -> LaunchProfile {
        let mut seen: Vec<u64> = Vec::new();
        let mut bytes = 0;
        for p in ptrs.filter(|&p| p != 0) {
            if !seen.contains(&p) {
                seen.push(p);
                bytes += self.extents.get(&p).copied().unwrap_or(0);
            }
        }
        LaunchProfile {
            kernel,
            ctas,
            flop: std::mem::take(&mut self.next_flop),
            bytes,
            ms: None,
        }
    }
}

/// Launches of one kernel summed over a step.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KernelTotal {
    pub kernel: String,
    pub launches: u64,
    /// CTAs of the smallest launch (a launch with fewer CTAs than SMs leaves SMs idle).
    pub min_ctas: u64,
    pub flop: f64,
    pub bytes: u64,
    /// Measured ms per step (CUDA), `None` on the emulator.
    pub ms: Option<f64>,
    /// Modelled ms per step (the sum of the model's time of each launch), and of it the time of launches
    /// bound by compute, by memory and by launch latency.
    pub model_ms: f64,
    pub model_ms_by_bound: [f64; 3],
}

/// The launches of one step summed per kernel (in order of first launch); `model` gives a launch's
/// modelled seconds and its bound (0 compute, 1 memory, 2 latency).
fn one_step(
    launches: &[LaunchProfile],
    model: &impl Fn(&LaunchProfile) -> (f64, usize),
) -> Vec<KernelTotal> {
    let mut order: Vec<KernelTotal> = Vec::new();
    let mut at: HashMap<&'static str, usize> = HashMap::new();
    for l in launches {
        let name = l.kernel.name();
        let k = *at.entry(name).or_insert_with(|| {
            order.push(KernelTotal {
                kernel: name.to_string(),
                min_ctas: u64::MAX,
                ..Default::default()
            });
            order.len() - 1
        });
        let t = &mut order[k];
        t.launches += 1;
        t.min_ctas = t.min_ctas.min(l.ctas);
        t.flop += l.flop;
        t.bytes += l.bytes;
        if let Some(ms) = l.ms {
            *t.ms.get_or_insert(0.0) += ms;
        }
        let (secs, bound) = model(l);
        t.model_ms += 1e3 * secs;
        t.model_ms_by_bound[bound.min(2)] += 1e3 * secs;
    }
    order
}

/// Per kernel over identical steps (`steps`, each a step's launches): launches, FLOPs, bytes and modelled
/// time of one step, and the median over the steps of its measured time per step.
pub fn per_kernel(
    steps: &[Vec<LaunchProfile>],
    model: impl Fn(&LaunchProfile) -> (f64, usize),
) -> Vec<KernelTotal> {
    let each: Vec<Vec<KernelTotal>> = steps.iter().map(|s| one_step(s, &model)).collect();
    let Some(first) = each.first() else {
        return Vec::new();
    };
    let mut out = first.clone();
    for (k, t) in out.iter_mut().enumerate() {
        let mut ms: Vec<f64> = each
            .iter()
            .filter_map(|s| s.get(k).filter(|u| u.kernel == t.kernel).and_then(|u| u.ms))
            .collect();
        ms.sort_by(f64::total_cmp);
        t.ms = ms.get(ms.len() / 2).copied();
    }
    out
}
