//! `setdino experiment` on a small two-plate store: every (method, seed) row, the paired intervals, the
//! held-out plate kept out of training and validation, the random-init control initialised per seed,
//! the curves, and the sweep that never reads the evaluation plate.
use setdino::experiment::{plan, run, ExperimentOptions, Method};
use setdino::store::{CellMeta, Store, StoreWriter, WriterOptions};
use std::path::Path;

/// 2 plates × 3 wells, genes g0..g5 + NTC, 24 cells per (gene, well), 2 channels of 16 px; genes of one
/// complex (g0–g2, g3–g5) share a brightness pattern.
fn store(dir: &Path) {
    let mut o = WriterOptions::new(16, vec!["dna".into(), "actin".into()]);
    o.cells_per_shard = 200;
    let mut w = StoreWriter::create(dir, o).unwrap();
    let mut k = 0u64;
    for plate in 0..2 {
        for well in 0..3 {
            for g in 0..7u16 {
                let gene = if g == 6 {
                    "nontargeting".to_string()
                } else {
                    format!("g{g}")
                };
                for q in 0..24u64 {
                    let m = CellMeta {
                        plate: format!("P{plate}"),
                        well: format!("W{well}"),
                        tile: 0,
                        cell_id: k,
                        i: 0.0,
                        j: 0.0,
                        gene: gene.clone(),
                        sgrna: format!("{gene}_{}", q % 2),
                        extra: vec![],
                    };
                    let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    let complex = if g == 6 { 0 } else { 1 + g / 3 };
                    let crop: Vec<u16> = (0..2 * 16 * 16u16)
                        .map(|p| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let pattern = if (p / 16 + p % 16) % (complex + 2) == 0 {
                                9000
                            } else {
                                0
                            };
                            ((x >> 52) as u16).wrapping_add(pattern + g * 500 + well as u16 * 700)
                        })
                        .collect();
                    w.push(&[m], &crop).unwrap();
                    k += 1;
                }
            }
        }
    }
    w.finish(serde_json::json!({})).unwrap();
}

fn complexes(path: &Path) {
    std::fs::write(path, "C0\tg0 g1 g2\nC1\tg3 g4 g5\n").unwrap();
}

/// A model small enough for a step in milliseconds.
fn tiny() -> Vec<String> {
    [
        "model.patch=8",
        "model.pos_grid=28",
        "model.dim=32",
        "model.heads=2",
        "model.mlp_hidden=64",
        "model.depth=2",
        "model.head_hidden=48",
        "model.head_bottleneck=16",
        "model.out_dim=32",
        "data.n_local=2",
        "data.min_cells=8",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn options(dir: &Path) -> ExperimentOptions {
    ExperimentOptions {
        store: dir.join("store"),
        complexes: dir.join("complexes.tsv"),
        out: dir.join("exp"),
        methods: vec![Method::Dino, Method::SetDino, Method::Random],
        seeds: 2,
        seed: 3,
        steps: 3,
        train_plates: None,
        eval_plates: None,
        train_wells: None,
        eval_wells: None,
        backend: "cpu".into(),
        sets: tiny(),
        features: None,
        sweep: None,
        resamples: 200,
        jobs: 2,
        figures: Default::default(),
        progress: false,
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn experiment_rows_intervals_and_held_out_plate() {
    let tmp = tempfile::tempdir().unwrap();
    store(&tmp.path().join("store"));
    complexes(&tmp.path().join("complexes.tsv"));
    let o = options(tmp.path());
    let s = run(&o).expect("experiment");
    assert_eq!(s.train.plates, Some(vec!["P0".to_string()]));
    assert_eq!(s.eval.plates, Some(vec!["P1".to_string()]));
    let names: Vec<&str> = s.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(names, ["DINO", "Set-DINO", "Random-init ViT"]);
    for r in &s.rows {
        assert_eq!(r.seeds.len(), 2, "{}", r.method);
        assert_eq!(
            r.seeds.iter().map(|x| x.seed).collect::<Vec<_>>(),
            [3, 4],
            "seeds count up from --seed"
        );
        for x in &r.seeds {
            let m = &x.metrics;
            for v in [m.batch_knn5, m.repro_map, m.recall_top5, m.recall_top10] {
                assert!((0.0..=1.0).contains(&v), "{}: {v}", r.method);
            }
            assert_eq!(
                m.batches, 3,
                "evaluated on the 3 wells of the held-out plate only"
            );
            assert_eq!(m.cells, 3 * 7 * 24);
        }
    }
    // Training and validation never saw the evaluation plate; the learned runs trained for 3 steps.
    for r in s.rows.iter().filter(|r| r.slug != "random") {
        for x in &r.seeds {
            let dir = x.run_dir.as_ref().unwrap();
            let c = json(&dir.join("config.json"));
            assert_eq!(
                c["config"]["data"]["train_plates"],
                serde_json::json!(["P0"])
            );
            assert_eq!(c["config"]["data"]["val_plates"], serde_json::json!(["P0"]));
            assert_eq!(c["config"]["train"]["seed"], x.seed);
            let log = setdino::train::read_log(dir).unwrap();
            assert_eq!(log.len(), 3);
        }
    }
    // The control: an untrained network per seed (different seeds, different embeddings).
    let emb =
        |seed: u64| std::fs::read(o.out.join(format!("embeddings/random-seed{seed}.npy"))).unwrap();
    assert_ne!(emb(3), emb(4));
    assert!(!o.out.join("runs/random/seed3/log.jsonl").exists());
    // Comparisons: Set-DINO − DINO and both against the control, over the 6 pairs and 6 genes.
    let pairs: Vec<(&str, &str)> = s
        .comparisons
        .iter()
        .map(|c| (c.a.as_str(), c.b.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("Set-DINO", "DINO"),
            ("DINO", "Random-init ViT"),
            ("Set-DINO", "Random-init ViT")
        ]
    );
    for c in &s.comparisons {
        for i in [c.recall_top5, c.recall_top10, c.repro_map] {
            assert!(i.lo <= i.hi && i.lo.is_finite(), "{c:?}");
            assert!(i.estimate >= -1.0 && i.estimate <= 1.0);
        }
        assert_eq!(c.recall_top5.units, 6);
        assert_eq!(c.repro_map.units, 6);
    }
    // The Set-DINO − DINO recall estimate is the difference of the seed-mean recalls.
    let mean = |k: usize| {
        s.rows[k]
            .seeds
            .iter()
            .map(|x| x.metrics.recall_top5)
            .sum::<f64>()
            / 2.0
    };
    assert!((s.comparisons[0].recall_top5.estimate - (mean(1) - mean(0))).abs() < 1e-12);
    // Ceiling: 15 gene pairs, 6 related; top 5 % holds at most 1 pair → 1/6.
    assert!(
        (s.ceiling_top5 - 1.0 / 6.0).abs() < 1e-12,
        "{}",
        s.ceiling_top5
    );
    let report = std::fs::read_to_string(o.out.join("report.md")).unwrap();
    for want in [
        "| DINO | 2 |",
        "| Random-init ViT | 2 |",
        "Set-DINO − DINO",
        "ceiling",
        "curves.png",
    ] {
        assert!(report.contains(want), "report.md lacks {want:?}");
    }
    // One collapse note per learned run, saying whether and where its teacher became uniform.
    let notes = report
        .lines()
        .filter(|l| l.starts_with("- DINO seed") || l.starts_with("- Set-DINO seed"))
        .count();
    assert_eq!(notes, 4, "{report}");
    let png = std::fs::read(o.out.join("curves.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let curves = std::fs::read_to_string(o.out.join("curves.tsv")).unwrap();
    // 4 learned runs × 3 steps + their validations.
    assert!(curves.lines().filter(|l| l.starts_with("DINO\t")).count() >= 6);
    let r = json(&o.out.join("results.json"));
    assert_eq!(r["rows"].as_array().unwrap().len(), 3);
    // One run at a time gives the same rows, bit for bit, as two side by side.
    let mut one = options(tmp.path());
    one.out = tmp.path().join("exp1");
    one.methods = vec![Method::Dino];
    one.jobs = 1;
    let s1 = run(&one).unwrap();
    for (a, b) in s1.rows[0].seeds.iter().zip(&s.rows[0].seeds) {
        assert_eq!(
            serde_json::to_string(&a.metrics).unwrap(),
            serde_json::to_string(&b.metrics).unwrap()
        );
    }
}

#[test]
fn sweep_reads_only_training_plates_and_plan_refuses_overlap() {
    let tmp = tempfile::tempdir().unwrap();
    store(&tmp.path().join("store"));
    complexes(&tmp.path().join("complexes.tsv"));
    let mut o = options(tmp.path());
    o.methods = vec![Method::Dino, Method::SetDino];
    o.seeds = 1;
    o.steps = 2;
    o.sweep = Some(("optim.lr".into(), vec!["1e-3".into(), "1e-2".into()]));
    run(&o).expect("sweep");
    let md = std::fs::read_to_string(o.out.join("sweep.md")).unwrap();
    assert_eq!(md.lines().filter(|l| l.starts_with("| DINO |")).count(), 2);
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| Set-DINO |")).count(),
        2
    );
    assert!(md.contains("Chosen:"));
    let tsv = std::fs::read_to_string(o.out.join("sweep.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 5);
    // Nothing was embedded or evaluated: the evaluation plate was not read.
    assert!(!o.out.join("embeddings").exists() && !o.out.join("eval").exists());
    let c = json(&o.out.join("sweep/dino/optim.lr=1e-2/seed3/config.json"));
    assert_eq!(c["config"]["optim"]["lr"], 1e-2);
    assert_eq!(c["config"]["data"]["val_plates"], serde_json::json!(["P0"]));

    let st = Store::open(&o.store).unwrap();
    let mut bad = options(tmp.path());
    bad.train_plates = Some(vec!["P0".into(), "P1".into()]);
    let e = plan(&st, &bad).unwrap_err();
    assert!(
        format!("{e:#}").contains("both a training and an evaluation plate"),
        "{e:#}"
    );
    bad.train_plates = Some(vec!["P9".into()]);
    assert!(format!("{:#}", plan(&st, &bad).unwrap_err()).contains("P9"));
    // A split by wells: the named training wells, the others held out, on every plate.
    let mut w = options(tmp.path());
    w.train_wells = Some(vec!["W0".into(), "W1".into()]);
    let (t, e) = plan(&st, &w).unwrap();
    assert_eq!(t.wells, Some(vec!["W0".to_string(), "W1".to_string()]));
    assert_eq!(e.wells, Some(vec!["W2".to_string()]));
    w.eval_wells = Some(vec!["W1".into()]);
    let e = plan(&st, &w).unwrap_err();
    assert!(format!("{e:#}").contains("in both the training"), "{e:#}");
}
