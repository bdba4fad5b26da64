//! `setdino demo --quick` end to end (synth → ingest → features → experiment: DINO, Set-DINO and the
//! random-init control over 3 seeds → embed → eval): the table's rows with finite metrics in [0, 100] %,
//! the seed intervals and bootstrap comparisons, the curves, and the report.
use setdino::demo::{run, DemoOptions};

#[test]
fn quick_demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let s = run(&DemoOptions {
        out: out.clone(),
        quick: true,
        backend: "cpu".into(),
        seed: 7,
        figures: Default::default(),
    })
    .expect("demo --quick");
    let names: Vec<&str> = s.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        names,
        ["Engineered features", "DINO", "Set-DINO", "Random-init ViT"]
    );
    for r in &s.rows {
        assert_eq!(
            r.seeds.len(),
            if r.slug == "engineered" { 1 } else { 3 },
            "{}",
            r.method
        );
        for x in &r.seeds {
            let m = &x.metrics;
            for v in [
                m.batch_knn5,
                m.batch_gc5,
                m.repro_knn5,
                m.repro_map,
                m.recall_top5,
                m.recall_top10,
            ] {
                assert!((0.0..=1.0).contains(&v), "{}: {v}", r.method);
            }
            assert!(
                m.profiles > 0 && m.genes > 0 && m.batches == 3,
                "{}: {} batches",
                r.method,
                m.batches
            );
        }
    }
    // The screen has enough complexes that recall is far from its ceiling.
    assert!(s.ceiling_top5 > 0.9, "ceiling {}", s.ceiling_top5);
    assert_eq!(s.comparisons.len(), 4);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for want in [
        "| Engineered features |",
        "| Set-DINO |",
        "| Random-init ViT | 3 |",
        "Set-DINO − DINO",
        "curves.png",
    ] {
        assert!(report.contains(want), "report.md lacks {want:?}");
    }
    for dir in [
        "eval/engineered",
        "eval/dino/seed7",
        "eval/setdino/seed9",
        "eval/random/seed8",
    ] {
        assert!(out.join(dir).join("metrics.json").exists(), "{dir}");
    }
    assert!(out.join("screen/truth.json").exists());
}
