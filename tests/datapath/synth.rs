//! synth: deterministic by seed for any thread count, the files a screen has, a store the sampler accepts,
//! the confounder knob (neutral at 0, wells of one plate differing at 1, recorded in truth.json) and its flag.
use clap::Parser;
use setdino::cli::{run, Cli, Command};
use setdino::data::{Sampler, SamplerConfig};
use setdino::ingest::{ingest, Illum, IngestOptions};
use setdino::store::Store;
use setdino::synth::{synth, SynthConfig};
use std::collections::BTreeMap;
use std::path::Path;

/// A small screen: 2 plates × 2 wells, 2 complexes of 3 genes + 1 null gene, 160 px tiles.
pub(crate) fn tiny(seed: u64) -> SynthConfig {
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

fn truth(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("truth.json")).unwrap()).unwrap()
}

/// Cells in the first tile of each well (a full tile: 70 % of the well's grid slots).
fn first_tile_cells(dir: &Path) -> Vec<usize> {
    let cells = std::fs::read_to_string(dir.join("cells.csv")).unwrap();
    let mut n: BTreeMap<(String, String), usize> = BTreeMap::new();
    for l in cells.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        if f[2] == "0" {
            *n.entry((f[0].into(), f[1].into())).or_default() += 1;
        }
    }
    n.into_values().collect()
}

/// The new confounders' fields of a well record, as numbers.
fn confound_fields(w: &serde_json::Value) -> Vec<(&'static str, Vec<f64>)> {
    let nums = |v: &serde_json::Value| -> Vec<f64> {
        match v {
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| x.get("fraction").unwrap_or(x).as_f64().unwrap())
                .collect(),
            x => vec![x.as_f64().unwrap()],
        }
    };
    [
        "psf_sigma",
        "focus_offset",
        "gamma",
        "saturation",
        "background",
        "debris_rate",
        "density",
        "bleed",
    ]
    .into_iter()
    .map(|k| (k, nums(&w[k])))
    .collect()
}

#[test]
fn confound_knob_neutral_at_zero_and_per_well_at_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = |k: f32| SynthConfig {
        wells: 3,
        confound: k,
        ..tiny(9)
    };
    synth(&cfg(0.0), &d.join("k0"), false).unwrap();
    synth(&cfg(1.0), &d.join("k1"), false).unwrap();
    let (t0, t1) = (truth(&d.join("k0")), truth(&d.join("k1")));
    assert_eq!(t0["config"]["confound"].as_f64(), Some(0.0));
    assert_eq!(t1["config"]["confound"].as_f64(), Some(1.0));
    let (w0, w1) = (
        t0["wells"].as_array().unwrap(),
        t1["wells"].as_array().unwrap(),
    );
    assert_eq!(w0.len(), 6);
    for w in w0 {
        for (k, v) in confound_fields(w) {
            let neutral = if k == "gamma" || k == "density" {
                1.0
            } else {
                0.0
            };
            assert!(v.iter().all(|&x| x == neutral), "{k} = {v:?} at confound 0");
        }
    }
    for (a, b) in w0.iter().zip(w1) {
        for k in ["gain", "offset", "blur_sigma", "noise", "illum_strength"] {
            assert_eq!(
                a[k], b[k],
                "the existing confounder {k} does not depend on the knob"
            );
        }
        assert_eq!(b["bleed"][0]["from"], "dna");
        assert_eq!(b["bleed"][1]["to"], "tubulin");
    }
    // At confound 1, every new confounder differs between every two wells of plate0 (wells 0..3).
    for i in 0..3 {
        for j in i + 1..3 {
            for ((k, a), (_, b)) in confound_fields(&w1[i])
                .into_iter()
                .zip(confound_fields(&w1[j]))
            {
                assert!(
                    a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3),
                    "{k}: {a:?} vs {b:?}"
                );
                let neutral = if k == "gamma" || k == "density" {
                    1.0
                } else {
                    0.0
                };
                assert!(
                    a.iter().any(|&x| (x - neutral).abs() > 1e-3),
                    "{k} = {a:?} at confound 1"
                );
            }
        }
    }
    // Density: a full tile holds the same number of cells in every well at 0, not at 1.
    let (n0, n1) = (
        first_tile_cells(&d.join("k0")),
        first_tile_cells(&d.join("k1")),
    );
    assert!(n0.iter().all(|&n| n == n0[0]), "{n0:?}");
    assert!(n1.iter().any(|&n| n != n1[0]), "{n1:?}");
}

#[test]
fn confound_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s").display().to_string();
    let strength = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
        Command::Synth(a) => a.confound,
        c => panic!("parsed as {c:?}"),
    };
    assert_eq!(
        strength(&["setdino", "synth", "--out", &out]),
        1.0,
        "default"
    );
    assert_eq!(
        strength(&["setdino", "synth", "--out", &out, "--confound", "0.5"]),
        0.5
    );
    for bad in ["-1", "NaN", "5"] {
        let e = run(Cli::try_parse_from([
            "setdino",
            "synth",
            "--out",
            &out,
            &format!("--confound={bad}"),
        ])
        .unwrap())
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("confound strength"),
            "{bad}: {e:#}"
        );
    }
    assert!(
        !dir.path().join("s").exists(),
        "nothing is written for a bad strength"
    );
    assert!(Cli::try_parse_from(["setdino", "synth", "--out", &out, "--confound", "x"]).is_err());
}
