//! Job parts for clusters (`--shard I/N`): an ingest in 3 parts joined by `store merge` is the one-process
//! store (index, shard files, crops, dictionaries, NTC statistics, exports byte for byte); an embed in 3
//! parts joined by `embed merge` is the one-process embedding bit for bit (CPU backend); bad `--shard`
//! values and missing, repeated or mismatched parts are refused with messages naming the flag or part.
use clap::Parser;
use setdino::cli::{run, Cli};
use setdino::store::{verify, CellMeta, Store, StoreWriter, WriterOptions};
use setdino::synth::synth;
use std::path::{Path, PathBuf};

/// Run the CLI in-process; the error as text.
fn cli(args: &[&str]) -> Result<(), String> {
    let mut v = vec!["setdino"];
    v.extend_from_slice(args);
    let parsed = Cli::try_parse_from(&v).map_err(|e| e.to_string())?;
    run(parsed).map_err(|e| format!("{e:#}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small synthetic screen (2 plates × 2 wells, 4 channels) whose cell table has an extra column `note`.
fn screen(dir: &Path) -> (PathBuf, PathBuf) {
    let cfg = super::synth::tiny(11);
    synth(&cfg, dir, false).unwrap();
    let cells = dir.join("cells.csv");
    let text = std::fs::read_to_string(&cells).unwrap();
    let mut out = String::new();
    for (k, line) in text.lines().enumerate() {
        let extra = if k == 0 {
            "note".to_string()
        } else {
            format!("n{k}")
        };
        out.push_str(&format!("{line},{extra}\n"));
    }
    std::fs::write(&cells, out).unwrap();
    (dir.join("tiles.csv"), cells)
}

/// `ingest` of the screen into `out` with `extra` flags.
fn ingest(tiles: &Path, cells: &Path, out: &Path, extra: &[&str]) -> Result<(), String> {
    let mut a = vec![
        "ingest",
        "--tiles",
        s(tiles),
        "--cells",
        s(cells),
        "--out",
        s(out),
        "--crop",
        "32",
        "--cells-per-shard",
        "37",
    ];
    a.extend_from_slice(extra);
    cli(&a)
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn ingest_in_three_parts_and_merge_equals_one_ingest() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (tiles, cells) = screen(&d.join("screen"));
    ingest(&tiles, &cells, &d.join("one"), &[]).unwrap();
    let parts: Vec<PathBuf> = (0..3).map(|i| d.join(format!("part{i}"))).collect();
    for (i, p) in parts.iter().enumerate() {
        ingest(&tiles, &cells, p, &["--shard", &format!("{i}/3")]).unwrap();
    }
    // The parts are real slices: each holds cells, a plate is split between two of them.
    let stores: Vec<Store> = parts.iter().map(|p| Store::open(p).unwrap()).collect();
    assert!(stores.iter().all(|s| !s.is_empty()));
    let plates_of = |s: &Store| s.manifest().plates.clone();
    assert!(
        plates_of(&stores[0])
            .iter()
            .any(|p| plates_of(&stores[1]).contains(p))
            || plates_of(&stores[1])
                .iter()
                .any(|p| plates_of(&stores[2]).contains(p)),
        "a plate spans two parts, so the per-plate flat field and percentiles are shared"
    );
    // Given out of order.
    cli(&[
        "store",
        "merge",
        s(&parts[2]),
        s(&parts[0]),
        s(&parts[1]),
        "--out",
        s(&d.join("merged")),
    ])
    .unwrap();
    verify(&d.join("merged")).unwrap();
    let (one, merged) = (
        Store::open(&d.join("one")).unwrap(),
        Store::open(&d.join("merged")).unwrap(),
    );
    assert_eq!(
        merged.len(),
        stores.iter().map(Store::len).sum::<usize>(),
        "every part's cells"
    );
    assert_eq!(merged.len(), one.len());
    assert!(
        one.manifest().shards.len() > 3,
        "crops span several shard files"
    );
    // Index, dictionaries, shard files (sizes and CRCs) and NTC statistics: exactly the one-process store's.
    assert_eq!(merged.records(), one.records());
    let (a, b) = (one.manifest(), merged.manifest());
    assert_eq!(
        (&b.plates, &b.wells, &b.batches, &b.genes, &b.sgrnas),
        (&a.plates, &a.wells, &a.batches, &a.genes, &a.sgrnas)
    );
    assert_eq!(
        (&b.channels, b.crop, &b.meta_columns),
        (&a.channels, a.crop, &a.meta_columns)
    );
    assert_eq!(b.shards, a.shards);
    assert_eq!(b.index, a.index);
    assert!(!one.ntc_stats().is_empty());
    assert_eq!(merged.ntc_stats(), one.ntc_stats());
    for f in ["ntc_stats.json", "meta.tsv", "index.bin", "shard-00000.bin"] {
        assert!(
            bytes(&d.join("merged").join(f)) == bytes(&d.join("one").join(f)),
            "{f}"
        );
    }
    for k in 0..one.len() {
        assert_eq!(
            merged.crop_u16(k).unwrap(),
            one.crop_u16(k).unwrap(),
            "crop {k}"
        );
    }
    // Exports (crops as float32 + the metadata table) byte-equal.
    for (store, stem) in [("one", "exp_one"), ("merged", "exp_merged")] {
        cli(&[
            "store",
            "export",
            s(&d.join(store)),
            "--out",
            s(&d.join(stem)),
        ])
        .unwrap();
    }
    for ext in ["npy", "tsv"] {
        assert!(
            bytes(&d.join(format!("exp_one.{ext}"))) == bytes(&d.join(format!("exp_merged.{ext}"))),
            "exported {ext}"
        );
    }
    // The report adds the parts up and keeps the per-plate clip bounds.
    let (ra, rb) = (one.report().unwrap(), merged.report().unwrap());
    for key in ["cells_written", "tiles", "cells_in_table"] {
        assert_eq!(rb[key], ra[key], "{key}");
    }
    assert_eq!(rb["skipped"], ra["skipped"]);
    let bounds = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        r["plates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| serde_json::json!([p["plate"], p["tiles"], p["cells_written"], p["channels"]]))
            .collect()
    };
    assert_eq!(bounds(&rb), bounds(&ra));
    assert_eq!(rb["merged_from"].as_array().unwrap().len(), 3);
}

/// The error of a CLI call that must fail.
fn fails(args: &[&str]) -> String {
    cli(args).expect_err("expected an error")
}

#[test]
fn bad_shard_values_and_bad_parts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (tiles, cells) = screen(&d.join("screen"));
    let ing = |out: &str, extra: &[&str]| ingest(&tiles, &cells, &d.join(out), extra);
    for (spec, want) in [
        (
            "a/3",
            "--shard \"a/3\": part index I \"a\" is not a non-negative integer",
        ),
        ("1/x", "part count N \"x\""),
        ("3/3", "part index 3 is not below the part count 3"),
        ("0/0", "the part count N must be ≥ 1"),
        ("0/1000", "1000 parts, but"),
    ] {
        let e = ing("bad", &["--shard", spec]).unwrap_err();
        assert!(e.contains(want), "--shard {spec}: {e}");
        assert!(
            !d.join("bad").exists(),
            "nothing written for --shard {spec}"
        );
    }
    // `--shard N` takes I from $SLURM_ARRAY_TASK_ID (a child process, so the environment is its own).
    let bin = env!("CARGO_BIN_EXE_setdino");
    let child = |task: Option<&str>| {
        let mut c = std::process::Command::new(bin);
        c.args([
            "ingest",
            "--tiles",
            s(&tiles),
            "--cells",
            s(&cells),
            "--crop",
            "32",
        ]);
        c.args([
            "--out",
            s(&d.join("slurm")),
            "--cells-per-shard",
            "37",
            "--shard",
            "3",
        ]);
        match task {
            Some(t) => c.env("SLURM_ARRAY_TASK_ID", t),
            None => c.env_remove("SLURM_ARRAY_TASK_ID"),
        };
        let o = c.output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, e) = child(None);
    assert!(!ok && e.contains("$SLURM_ARRAY_TASK_ID is not set"), "{e}");
    let (ok, e) = child(Some("3"));
    assert!(
        !ok && e.contains("part index 3 (from $SLURM_ARRAY_TASK_ID)"),
        "{e}"
    );
    let (ok, e) = child(Some("2"));
    assert!(ok, "{e}");
    let r = Store::open(&d.join("slurm")).unwrap().report().unwrap();
    assert_eq!(
        (r["part"]["index"].as_u64(), r["part"]["count"].as_u64()),
        (Some(2), Some(3))
    );

    // Parts 0 and 1 of 3 (part 2 is the Slurm run above); a part with another --clip; a whole store.
    for i in 0..2 {
        ing(&format!("p{i}"), &["--shard", &format!("{i}/3")]).unwrap();
    }
    ing("p1clip", &["--shard", "1/3", "--clip", "1,99"]).unwrap();
    ing("whole", &[]).unwrap();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let merge = |names: &[&str]| {
        let mut a: Vec<String> = vec!["store".into(), "merge".into()];
        a.extend(names.iter().map(|n| p(n)));
        a.extend(["--out".into(), p("merged")]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fails(&a)
    };
    let e = merge(&["p0", "slurm"]);
    assert!(e.contains("part(s) 1 of 3 missing"), "{e}");
    let e = merge(&["p0", "p1", "p1", "slurm"]);
    assert!(e.contains("are both part 1 of 3"), "{e}");
    let e = merge(&["p0", "p1clip", "slurm"]);
    assert!(
        e.contains("part 1") && e.contains("p1clip") && e.contains("clip percentiles (--clip)"),
        "{e}"
    );
    let e = merge(&["p0", "p1", "whole"]);
    assert!(e.contains("whole") && e.contains("not a job part"), "{e}");
    assert!(
        !d.join("merged").exists(),
        "no merged store after a refusal"
    );
    // A part of another split (2 parts) does not mix with parts of 3.
    ing("q0", &["--shard", "0/2"]).unwrap();
    let e = merge(&["p0", "p1", "q0"]);
    assert!(
        e.contains("part 0 of 2") && e.contains("part 0 of 3"),
        "{e}"
    );
}

#[test]
fn an_empty_part_is_a_valid_store() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut o = WriterOptions::new(8, vec!["dna".into()]);
    o.allow_empty = true;
    StoreWriter::create(&d.join("empty"), o)
        .unwrap()
        .finish(serde_json::json!({}))
        .unwrap();
    let st = Store::open(&d.join("empty")).unwrap();
    assert!(st.is_empty() && st.manifest().shards.is_empty());
    verify(&d.join("empty")).unwrap();
    // A store without cells is still refused by default.
    let o = WriterOptions::new(8, vec!["dna".into()]);
    let e = StoreWriter::create(&d.join("none"), o)
        .unwrap()
        .finish(serde_json::json!({}))
        .unwrap_err();
    assert!(format!("{e:#}").contains("no cells were written"), "{e:#}");
}

/// A 3-channel store of 16 px crops (what the tiny fixture checkpoint embeds), 2 plates × 2 wells.
fn embed_store(dir: &Path, n: usize) {
    let mut o = WriterOptions::new(16, vec!["a".into(), "b".into(), "c".into()]);
    o.cells_per_shard = 10;
    let mut w = StoreWriter::create(dir, o).unwrap();
    for k in 0..n {
        let m = super::common::cell_meta(k, 2, 2, 3);
        let meta = CellMeta { extra: vec![], ..m };
        w.push(&[meta], &super::common::crop_values(k, 3, 16))
            .unwrap();
    }
    w.finish(serde_json::json!({})).unwrap();
}

#[test]
fn embed_in_three_parts_and_merge_equals_one_embed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    embed_store(&d.join("store"), 61);
    let ckpt = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/step_tiny/checkpoint.safetensors"
    );
    let store = d.join("store");
    let embed_with = |out: &Path, batch: &str, extra: &[&str]| {
        let mut a = vec![
            "embed",
            "--checkpoint",
            ckpt,
            "--num-heads",
            "2",
            "--store",
            s(&store),
            "--out",
            s(out),
            "--backend",
            "cpu",
            "--batch",
            batch,
            "--plates",
            "P0,P1",
        ];
        a.extend_from_slice(extra);
        cli(&a)
    };
    let embed = |out: &Path, extra: &[&str]| embed_with(out, "7", extra);
    embed(&d.join("one"), &[]).unwrap();
    for i in 0..3 {
        embed(&d.join("emb"), &["--shard", &format!("{i}/3")]).unwrap();
    }
    let part = |i: usize, ext: &str| d.join(format!("emb.part-{i}-of-3.{ext}"));
    let rows = |p: &Path| bytes(p).iter().filter(|&&b| b == b'\n').count() - 1;
    let sizes: Vec<usize> = (0..3).map(|i| rows(&part(i, "tsv"))).collect();
    // 61 cells = 9 batches of 7 (the last of 5): 3 batches per part.
    assert_eq!(sizes, vec![21, 21, 19]);
    let merge = |parts: &[PathBuf], out: &str| {
        let mut a = vec!["embed", "merge"];
        a.extend(parts.iter().map(|p| s(p)));
        let out = d.join(out);
        a.extend(["--out", s(&out)]);
        cli(&a)
    };
    // Given out of order, as stems and as any of their files.
    let given = [part(1, "npy"), d.join("emb.part-2-of-3"), part(0, "tsv")];
    merge(&given, "merged").unwrap();
    for ext in ["npy", "tsv"] {
        assert!(
            bytes(&d.join(format!("one.{ext}"))) == bytes(&d.join(format!("merged.{ext}"))),
            "merged.{ext} equals one embed's, byte for byte"
        );
    }
    let (shape, x) = super::common::read_npy_f32(&d.join("merged.npy"));
    assert_eq!(shape, vec![61, 48]);
    assert!(x.iter().all(|v| v.is_finite()) && x.iter().any(|&v| v != 0.0));

    // Errors: a missing part, a repeated part, a part of another run, bad --shard, a non-npy part.
    let e = merge(&[part(0, "npy"), part(2, "npy")], "x").unwrap_err();
    assert!(e.contains("part(s) 1 of 3 missing"), "{e}");
    let twice = [
        part(0, "npy"),
        part(0, "tsv"),
        part(1, "npy"),
        part(2, "npy"),
    ];
    let e = merge(&twice, "x").unwrap_err();
    assert!(e.contains("are both part 0 of 3"), "{e}");
    // Part 1 of a run with another --batch.
    embed_with(&d.join("mix"), "5", &["--shard", "1/3"]).unwrap();
    let mixed = [part(0, "npy"), d.join("mix.part-1-of-3"), part(2, "npy")];
    let e = merge(&mixed, "x").unwrap_err();
    assert!(e.contains("part 1") && e.contains("--batch: 5 vs 7"), "{e}");
    let e = embed(&d.join("bad"), &["--shard", "2/2/2"]).unwrap_err();
    assert!(e.contains("--shard \"2/2/2\""), "{e}");
    let e = embed(&d.join("bad"), &["--shard", "0/10"]).unwrap_err();
    assert!(e.contains("make only 9 batch(es) of --batch 7"), "{e}");
    let e = embed(&d.join("bad"), &["--shard", "0/3", "--format", "parquet"]).unwrap_err();
    assert!(e.contains("--shard with --format parquet"), "{e}");
    assert!(!d.join("x.npy").exists() && !d.join("x.tsv").exists());
}
