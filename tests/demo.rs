//! `setdino demo --quick` end to end (synth → ingest → features → DINO and Set-DINO → embed → eval):
//! the table has the three rows with finite metrics in [0, 100] %, and the report and per-method eval
//! outputs exist.
use setdino::demo::{run, DemoOptions};

#[test]
fn quick_demo_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let rows = run(&DemoOptions {
        out: out.clone(),
        quick: true,
        backend: "cpu".into(),
        seed: 7,
    })
    .expect("demo --quick");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].method, "Engineered features");
    assert!(rows[1].method.starts_with("DINO") && rows[2].method.starts_with("Set-DINO"));
    for r in &rows {
        let m = &r.metrics;
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
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| Engineered features |") && report.contains("| Set-DINO"));
    for slug in ["engineered", "dino", "setdino"] {
        assert!(
            out.join(format!("eval/{slug}/metrics.json")).exists(),
            "{slug}"
        );
    }
}
