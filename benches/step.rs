//! Criterion benchmarks of the CPU backend: ViT-S/16 forward+backward at 96² and 48² (batch 32,
//! images/s) and the reference Set-DINO step for one set of 16 cells (samples/s). The same workloads as
//! `setdino bench` and `../shared/tools/torch_vit_bench.py` (vit, dino sections).
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use setdino::backend::cpu::CpuBackend;
use setdino::bench::{setdino_step, vit_fwd_bwd, Timing};
use setdino::config::ModelConfig;

fn vit(c: &mut Criterion) {
    let cfg = ModelConfig::vits16();
    let be = CpuBackend::<f32>::new();
    let mut g = c.benchmark_group("cpu_vit_s16_fwd_bwd");
    g.sample_size(10);
    for side in [96usize, 48] {
        g.throughput(Throughput::Elements(32));
        g.bench_function(format!("{side}px_batch32"), |b| {
            b.iter_custom(|iters| {
                let r =
                    vit_fwd_bwd(&be, &cfg, 32, side, Timing::cold(iters as usize)).expect("bench");
                std::time::Duration::from_secs_f64(r.times.iter().sum())
            })
        });
    }
    g.finish();
}

fn step(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu_setdino_step");
    g.sample_size(10);
    for (name, cfg) in [
        ("vits16", ModelConfig::vits16()),
        ("tiny", ModelConfig::tiny()),
    ] {
        g.throughput(Throughput::Elements(16));
        g.bench_function(format!("{name}_1set_x16cells"), |b| {
            b.iter_custom(|iters| {
                let r = setdino_step(
                    CpuBackend::<f32>::new(),
                    &cfg,
                    1,
                    16,
                    8,
                    Timing::cold(iters as usize),
                    false, // the CPU backend runs every step directly
                )
                .expect("bench");
                std::time::Duration::from_secs_f64(r.times.iter().sum())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, vit, step);
criterion_main!(benches);
