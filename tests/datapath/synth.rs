//! synth: deterministic by seed for any thread count, the files a screen has, and a store the sampler accepts.
use setdino::data::{Sampler, SamplerConfig};
use setdino::ingest::{ingest, Illum, IngestOptions};
use setdino::store::Store;
use setdino::synth::{synth, SynthConfig};
use std::path::Path;

fn tiny(seed: u64) -> SynthConfig {
    SynthConfig {
        plates: 2,
        wells: 2,
        complexes: 2,
        genes_per_complex: 3,
        null_genes: 1,
        cells_per_guide: 12,
        tile: 160,
        ..SynthConfig::preset("demo", seed).unwrap()
    }
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    for sub in [dir.to_path_buf(), dir.join("tiles")] {
        for e in std::fs::read_dir(&sub).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                v.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn deterministic_and_ingestible() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let s = one
        .install(|| synth(&tiny(5), &d.join("a"), false))
        .unwrap();
    three
        .install(|| synth(&tiny(5), &d.join("b"), false))
        .unwrap();
    synth(&tiny(6), &d.join("c"), false).unwrap();
    let (a, b, c) = (
        files(&d.join("a")),
        files(&d.join("b")),
        files(&d.join("c")),
    );
    assert!(a == b, "same seed, same bytes, whatever the thread count");
    assert!(a != c, "another seed, another screen");
    assert_eq!(s.genes, 8);
    let truth_cells = std::fs::read_to_string(d.join("a/cells_truth.csv")).unwrap();
    assert_eq!(truth_cells.lines().count(), s.cells + 1);
    let escapers = truth_cells
        .lines()
        .skip(1)
        .filter(|l| l.contains(",0,"))
        .count();
    assert!(
        escapers > 0 && escapers < s.cells,
        "some cells escape their perturbation (NTC cells count as 0)"
    );
    let complexes = std::fs::read_to_string(d.join("a/complexes.tsv")).unwrap();
    assert_eq!(
        complexes,
        "C000\tG0000 G0001 G0002\nC001\tG0003 G0004 G0005\n"
    );
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("a/truth.json")).unwrap()).unwrap();
    assert_eq!(truth["genes"].as_array().unwrap().len(), 8);
    assert_eq!(truth["wells"].as_array().unwrap().len(), 4);
    // Genes of one complex share an effect direction; null genes have none.
    let eff = |k: usize| -> Vec<f64> {
        truth["genes"][k]["effect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let cos = |a: &[f64], b: &[f64]| {
        a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>()
            / (a.iter().map(|x| x * x).sum::<f64>() * b.iter().map(|x| x * x).sum::<f64>()).sqrt()
    };
    assert!((cos(&eff(0), &eff(1)) - 1.0).abs() < 1e-5);
    assert!(eff(6).iter().all(|&x| x == 0.0));
    // Ingest it and build a sampler.
    let mut o = IngestOptions::new(
        &d.join("a/tiles.csv"),
        &d.join("a/cells.csv"),
        &d.join("store"),
    );
    o.crop = 48;
    o.illum = Illum::Auto;
    let r = ingest(&o).unwrap();
    let store = Store::open(&d.join("store")).unwrap();
    assert_eq!(store.manifest().channels, vec!["ch0", "ch1", "ch2", "ch3"]);
    assert_eq!(r["cells_in_table"].as_u64().unwrap() as usize, s.cells);
    assert!(
        store.len() as f64 > 0.85 * s.cells as f64,
        "most cells fit a crop"
    );
    let cfg = SamplerConfig {
        set_size: 8,
        sets_per_step: 4,
        min_cells: Some(12),
        ..Default::default()
    };
    let sampler = Sampler::new(&store, cfg).unwrap();
    assert_eq!(sampler.perts().len(), 8, "every gene and the NTC qualify");
}
