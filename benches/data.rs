//! Data-path throughput: full multi-crop cells per second through sampler + mmap read + augment + normalise
//! (one core and all cores), and ingest tiles per second.
//!
//! Napkin math: a reference GPU step eats 1,024 cells × 10 crops every ~25 ms = 41 k cells/s, so a 16-core
//! node needs ≥ 2.6 k cells/s per core. Run: `cargo bench --bench data`.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use setdino::data::{
    make_step_into, AugmentConfig, NormKind, Normalizer, Sampler, SamplerConfig, StepCrops,
};
use setdino::ingest::tiff::{write_u16, TiffCompression};
use setdino::ingest::{ingest, Illum, IngestOptions};
use setdino::store::{CellMeta, Store, StoreWriter, WriterOptions};
use std::fmt::Write as _;
use std::path::Path;

/// A 4×96×96 store: 8 genes + NTC × 4 wells × 40 cells.
fn bench_store(dir: &Path) -> Store {
    let mut w = StoreWriter::create(
        dir,
        WriterOptions::new(
            96,
            ["dna", "damage", "actin", "tubulin"]
                .map(String::from)
                .to_vec(),
        ),
    )
    .unwrap();
    let mut x = 0x1234_5678u64;
    let mut k = 0u64;
    for well in 0..4 {
        for g in 0..9 {
            let gene = if g == 8 {
                "nontargeting".to_string()
            } else {
                format!("g{g}")
            };
            let metas: Vec<CellMeta> = (0..40)
                .map(|_| {
                    k += 1;
                    CellMeta {
                        plate: "P".into(),
                        well: format!("W{well}"),
                        cell_id: k,
                        gene: gene.clone(),
                        sgrna: format!("{gene}_1"),
                        ..Default::default()
                    }
                })
                .collect();
            let crops: Vec<u16> = (0..40 * 4 * 96 * 96)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 50) as u16
                })
                .collect();
            w.push(&metas, &crops).unwrap();
        }
    }
    w.finish(serde_json::json!({})).unwrap();
    Store::open(dir).unwrap()
}

fn step_throughput(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = bench_store(dir.path());
    let sampler = Sampler::new(
        &store,
        SamplerConfig {
            set_size: 16,
            sets_per_step: 8,
            seed: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let aug = AugmentConfig::for_crop(96);
    let norm = Normalizer::new(
        NormKind::Ntc {
            compat_2sigma: false,
        },
        &store,
    );
    let cells_per_step = 2 * 8 * 16; // cells drawn per step (2 views × S × n), each with 1 global + 4 local crops
    let mut g = c.benchmark_group("data_step");
    g.throughput(Throughput::Elements(cells_per_step as u64));
    g.sample_size(10);
    for threads in [1, rayon::current_num_threads()] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut step = 0u64;
        let mut out = StepCrops::default();
        g.bench_function(
            format!("sampler_mmap_augment_ntc_96px_threads{threads}"),
            |b| {
                b.iter(|| {
                    step += 1;
                    pool.install(|| {
                        make_step_into(
                            &store,
                            &sampler.sample_step(step),
                            &aug,
                            &norm,
                            step,
                            &mut out,
                        )
                        .unwrap()
                    })
                })
            },
        );
    }
    g.finish();
}

fn store_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = bench_store(dir.path());
    let mut g = c.benchmark_group("store_read");
    g.throughput(Throughput::Bytes(
        1000 * store.manifest().crop_bytes() as u64,
    ));
    let mut buf = vec![0f32; store.crop_len()];
    let mut k = 0usize;
    g.bench_function("random_crop_f32_crc_4x96x96_x1000", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                k = (k * 7919 + 13) % store.len();
                store.crop_f32(k, &mut buf).unwrap();
            }
        })
    });
    g.finish();
}

fn ingest_throughput(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (t, n_tiles) = (1024usize, 8);
    let mut tiles = String::from("plate,well,tile,path\n");
    let mut cells = String::from("plate,well,tile,cell_id,i,j,sgRNA,gene\n");
    let mut x = 99u64;
    for k in 0..n_tiles {
        let pages: Vec<Vec<u16>> = (0..4)
            .map(|_| {
                (0..t * t)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 52) as u16 + 1000
                    })
                    .collect()
            })
            .collect();
        let refs: Vec<&[u16]> = pages.iter().map(|p| p.as_slice()).collect();
        write_u16(
            &d.join(format!("t{k}.tif")),
            t,
            t,
            &refs,
            TiffCompression::Deflate,
        )
        .unwrap();
        writeln!(tiles, "P,A1,{k},t{k}.tif").unwrap();
        for q in 0..200 {
            writeln!(
                cells,
                "P,A1,{k},{q},{},{},g_1,g",
                60 + (q * 37) % 900,
                60 + (q * 91) % 900
            )
            .unwrap();
        }
    }
    std::fs::write(d.join("tiles.csv"), tiles).unwrap();
    std::fs::write(d.join("cells.csv"), cells).unwrap();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(n_tiles as u64));
    g.sample_size(10);
    for (name, illum) in [("none", Illum::None), ("auto", Illum::Auto)] {
        g.bench_function(format!("tiles_1024px_4ch_deflate_illum_{name}"), |b| {
            b.iter(|| {
                let mut o = IngestOptions::new(
                    &d.join("tiles.csv"),
                    &d.join("cells.csv"),
                    &d.join("store"),
                );
                o.illum = illum.clone();
                o.force = true;
                ingest(&o).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, step_throughput, store_read, ingest_throughput);
criterion_main!(benches);
