//! The bad-input matrix of issue 8: each bad input gives an error (or a clear warning) that names the file,
//! the line or the key and what was expected, and no user file changes (snapshots before and after).
#[path = "common/inputs.rs"]
mod inputs;

use clap::Parser;
use inputs::*;
use setdino::cli::{run, Cli};
use setdino::ingest::tiff::TiffCompression;
use std::path::Path;

/// Run the CLI in-process; the error as `{e:#}`.
fn cli(args: &[String]) -> anyhow::Result<()> {
    let mut v = vec!["setdino".to_string()];
    v.extend_from_slice(args);
    run(Cli::try_parse_from(v)?)
}

fn err(args: &[String]) -> String {
    match cli(args) {
        Ok(()) => panic!("expected an error from {args:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Replace line `line` (1-based) of a text file.
fn set_line(p: &Path, line: usize, text: &str) {
    let t = std::fs::read_to_string(p).unwrap();
    let mut lines: Vec<String> = t.lines().map(String::from).collect();
    lines[line - 1] = text.to_string();
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

fn append_line(p: &Path, text: &str) {
    let mut t = std::fs::read_to_string(p).unwrap();
    t.push_str(text);
    t.push('\n');
    std::fs::write(p, t).unwrap();
}

fn line_of(p: &Path, line: usize) -> String {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .nth(line - 1)
        .unwrap()
        .to_string()
}

/// Case 1: a centroid beyond i64 (1e30, 9.3e18) is an error naming the file, line and column, not a panic.
#[test]
fn huge_centroids_are_errors_not_panics() {
    let t = tempfile::tempdir().unwrap();
    let sc = write_screen(&t.path().join("in"), TiffCompression::None);
    for (v, col) in [("1e30", "j"), ("9.3e18", "i"), ("-1e300", "j")] {
        let l = line_of(&sc.cells, 5);
        let mut f: Vec<&str> = l.split(',').collect();
        f[if col == "i" { 4 } else { 5 }] = v;
        set_line(&sc.cells, 5, &f.join(","));
        let before = snapshot(t.path());
        let e = err(&ingest_args(&sc, &t.path().join("out")));
        assert!(
            e.contains("cells.csv") && e.contains("line 5") && e.contains(&format!("column {col}")),
            "{e}"
        );
        assert!(e.contains("out of range"), "{e}");
        assert_eq!(before, snapshot(t.path()), "nothing written");
        set_line(&sc.cells, 5, &l);
    }
}

/// Vague case: out-of-tile centroids are listed in report.json and the first few named on stderr.
#[test]
fn out_of_tile_cells_are_listed_and_named() {
    let t = tempfile::tempdir().unwrap();
    let sc = write_screen(&t.path().join("in"), TiffCompression::None);
    // Line 3 leaves the tile (j far outside), line 7 is at the very edge (i = 2: the box starts at -6).
    let mut f: Vec<String> = line_of(&sc.cells, 3).split(',').map(String::from).collect();
    f[5] = "1000000000".into();
    set_line(&sc.cells, 3, &f.join(","));
    let mut f: Vec<String> = line_of(&sc.cells, 7).split(',').map(String::from).collect();
    f[4] = "2".into();
    set_line(&sc.cells, 7, &f.join(","));
    let out = t.path().join("out");
    let (ok, stderr) = run_bin(&ingest_args(&sc, &out), None);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("2 cell(s) skipped")
            && stderr.contains("line 3")
            && stderr.contains("line 7"),
        "{stderr}"
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let lines: Vec<u64> = r["skipped_cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cells_csv_line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 7]);
    assert_eq!(r["skipped"]["box_leaves_tile"], 2);
}

/// Case 2: a Deflate strip with 400 bytes XOR'd mid-page is an error naming the file and page.
#[test]
fn corrupt_deflate_strip_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let sc = write_screen(&t.path().join("in"), TiffCompression::Deflate);
    let tif = &sc.tifs[1];
    corrupt_first_strip(tif, 1);
    let before = snapshot(t.path());
    let e = err(&ingest_args(&sc, &t.path().join("out")));
    assert!(
        e.contains(&tif.display().to_string()) && e.contains("page 1") && e.contains("Deflate"),
        "{e}"
    );
    assert_eq!(before, snapshot(t.path()), "nothing written");
}

/// XOR 400 bytes in the middle of page `page`'s first strip.
fn corrupt_first_strip(tif: &Path, page: usize) {
    let f = std::fs::File::open(tif).unwrap();
    let mut dec = tiff::decoder::Decoder::new(std::io::BufReader::new(f)).unwrap();
    for _ in 0..page {
        dec.next_image().unwrap();
    }
    let offs: Vec<u64> = dec
        .find_tag_unsigned_vec(tiff::tags::Tag::StripOffsets)
        .unwrap()
        .unwrap();
    let lens: Vec<u64> = dec
        .find_tag_unsigned_vec(tiff::tags::Tag::StripByteCounts)
        .unwrap()
        .unwrap();
    drop(dec);
    let (off, len) = (offs[0] as usize, lens[0] as usize);
    assert!(
        len > 800,
        "strip of {len} bytes is too short to corrupt 400 bytes of"
    );
    let mut b = std::fs::read(tif).unwrap();
    let mid = off + len / 2 - 200;
    for x in &mut b[mid..mid + 400] {
        *x ^= 0x5A;
    }
    std::fs::write(tif, b).unwrap();
}

/// Case 3: a repeated cell row, and two rows of one cell with different centroids, name both lines.
#[test]
fn duplicated_cells_name_both_lines() {
    let t = tempfile::tempdir().unwrap();
    let sc = write_screen(&t.path().join("in"), TiffCompression::None);
    let orig = std::fs::read_to_string(&sc.cells).unwrap();
    let n = orig.lines().count();
    append_line(&sc.cells, &line_of(&sc.cells, 4));
    let e = err(&ingest_args(&sc, &t.path().join("out")));
    assert!(
        e.contains("cells.csv") && e.contains(&format!("line {}", n + 1)) && e.contains("line 4"),
        "{e}"
    );
    std::fs::write(&sc.cells, &orig).unwrap();
    let mut f: Vec<String> = line_of(&sc.cells, 6).split(',').map(String::from).collect();
    f[4] = "50.5".into();
    f[5] = "40.25".into();
    append_line(&sc.cells, &f.join(","));
    let e = err(&ingest_args(&sc, &t.path().join("out")));
    assert!(
        e.contains(&format!("line {}", n + 1)) && e.contains("line 6") && e.contains("cell_id"),
        "{e}"
    );
    assert!(!t.path().join("out").exists());
}

/// Case 4: `--force` over a store with an ingest that then fails keeps the old store intact; a successful
/// `--force` replaces it and leaves no temp directory.
#[test]
fn failed_force_ingest_keeps_the_old_store() {
    let t = tempfile::tempdir().unwrap();
    let sc = write_screen(&t.path().join("in"), TiffCompression::Deflate);
    let out = t.path().join("out");
    cli(&ingest_args(&sc, &out)).unwrap();
    let old = snapshot(&out);
    corrupt_first_strip(&sc.tifs[2], 0);
    let mut a = ingest_args(&sc, &out);
    a.push("--force".into());
    let e = err(&a);
    assert!(e.contains(&sc.tifs[2].display().to_string()), "{e}");
    assert_eq!(old, snapshot(&out), "the old store is untouched");
    cli(&s(&["store", "verify", &out.display().to_string()])).unwrap();
    assert!(temps_in(t.path()).is_empty(), "{:?}", temps_in(t.path()));
    // A successful --force replaces it (different crop size), and a user file in it survives.
    let sc2 = write_screen(&t.path().join("in2"), TiffCompression::None);
    std::fs::write(out.join("my_notes.txt"), "keep me").unwrap();
    let mut a = ingest_args(&sc2, &out);
    a[8] = "24".into();
    a.push("--force".into());
    cli(&a).unwrap();
    let st = setdino::store::Store::open(&out).unwrap();
    assert_eq!(st.crop(), 24);
    assert_eq!(
        std::fs::read_to_string(out.join("my_notes.txt")).unwrap(),
        "keep me"
    );
    assert!(temps_in(t.path()).is_empty(), "{:?}", temps_in(t.path()));
}

/// Case 5: ingest into a directory that is not a store deletes nothing (also `--out .`).
#[test]
fn non_store_directory_is_never_cleaned() {
    let t = tempfile::tempdir().unwrap();
    let sc = write_screen(&t.path().join("in"), TiffCompression::None);
    let user = t.path().join("mine");
    std::fs::create_dir(&user).unwrap();
    for f in [
        "report.json",
        "meta.tsv",
        "shard-00000.bin",
        "index.bin",
        ".x.tmp",
    ] {
        std::fs::write(user.join(f), f).unwrap();
    }
    let before = snapshot(t.path());
    let e = err(&ingest_args(&sc, &user));
    assert!(
        e.contains(&user.display().to_string()) && e.contains("not a setdino store"),
        "{e}"
    );
    let mut a = ingest_args(&sc, &user);
    a.push("--force".into());
    assert!(err(&a).contains("not a setdino store"));
    assert_eq!(before, snapshot(t.path()));
    // `--out .` in a directory of user files.
    let a = ingest_args(&sc, Path::new("."));
    let (ok, stderr) = run_bin(&a, Some(&user));
    assert!(!ok && stderr.contains("not a setdino store"), "{stderr}");
    assert_eq!(before, snapshot(t.path()));
    // `--out .` in an empty working directory fills that directory (it is not replaced); `--force` there
    // is refused (a store is replaced by swapping its directory) and leaves the store as it was.
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (ok, stderr) = run_bin(&a, Some(&empty));
    assert!(ok, "{stderr}");
    setdino::store::Store::open(&empty).unwrap();
    assert!(temps_in(t.path()).is_empty(), "{:?}", temps_in(t.path()));
    let store_before = snapshot(&empty);
    let mut a = a.clone();
    a.push("--force".into());
    let (ok, stderr) = run_bin(&a, Some(&empty));
    assert!(!ok && stderr.contains("working directory"), "{stderr}");
    assert_eq!(store_before, snapshot(&empty));
}

/// Case 6: export of a damaged store leaves no `.npy` under the final name and no temp; stale temps of
/// the same output are removed by the next export.
#[test]
fn failed_export_leaves_no_output() {
    let t = tempfile::tempdir().unwrap();
    let st = t.path().join("store");
    train_store(&st);
    // Damage a crop in the middle of the shard (same size: the store opens, the CRC of that crop fails).
    let shard = st.join("shard-00000.bin");
    let mut b = std::fs::read(&shard).unwrap();
    let k = b.len() / 2;
    b[k] ^= 0xFF;
    std::fs::write(&shard, b).unwrap();
    let stem = t.path().join("x");
    let a = s(&[
        "store",
        "export",
        &st.display().to_string(),
        "--out",
        &stem.display().to_string(),
    ]);
    let e = err(&a);
    assert!(e.contains("CRC") || e.contains("crc"), "{e}");
    assert!(!t.path().join("x.npy").exists() && !t.path().join("x.tsv").exists());
    assert!(temps_in(t.path()).is_empty(), "{:?}", temps_in(t.path()));
    // A stale temp of a killed export (dead pid) is removed by the next export of the same stem; a temp
    // of a live process (ours) and a user's look-alike are not.
    let good = t.path().join("good");
    train_store(&good);
    let stale = t.path().join(".x.npy.tmp.99999999.3");
    let live = t
        .path()
        .join(format!(".x.npy.tmp.{}.999", std::process::id()));
    let lookalike = t.path().join("x.npy.tmp");
    for p in [&stale, &live, &lookalike] {
        std::fs::write(p, "old").unwrap();
    }
    let a = s(&[
        "store",
        "export",
        &good.display().to_string(),
        "--out",
        &stem.display().to_string(),
        "--limit",
        "5",
    ]);
    cli(&a).unwrap();
    assert!(t.path().join("x.npy").exists());
    assert!(!stale.exists() && live.exists() && lookalike.exists());
}

/// Cases 7–9 and `teacher_temp = 0`: the config is validated as a whole before any work; the message
/// names the key and the allowed range, and the run directory is not created.
#[test]
fn out_of_range_config_values_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let st = t.path().join("store");
    train_store(&st);
    let out = t.path().join("run");
    for (set, key, range) in [
        ("optim.lr=-1e-3", "optim.lr", "≥ 0"),
        ("optim.lr=nan", "optim.lr", "finite"),
        (
            "optim.momentum_teacher=2.0",
            "optim.momentum_teacher",
            "[0, 1]",
        ),
        ("optim.teacher_temp=0", "optim.teacher_temp", "> 0"),
        ("optim.weight_decay=inf", "optim.weight_decay", "finite"),
        ("optim.student_temp=-0.1", "optim.student_temp", "> 0"),
        ("optim.beta2=1.0", "optim.beta2", "[0, 1)"),
        ("data.set_size=0", "data.set_size", "≥ 1"),
        ("train.keep_last=0", "train.keep_last", "≥ 1"),
        ("data.n_local=3", "data.n_local", "even"),
        ("model.ln_eps=0", "model.ln_eps", "> 0"),
    ] {
        let e = err(&train_args(&st, &out, &[set.to_string()]));
        assert!(e.contains(key) && e.contains(range), "{set}: {e}");
        assert!(!out.exists(), "{set}: the run directory was created");
    }
}

/// Case 9b: a diverging run stops at the non-finite loss or state, and every checkpoint written is finite
/// (the message points at the last one).
#[test]
fn diverging_training_points_at_a_finite_checkpoint() {
    let t = tempfile::tempdir().unwrap();
    let st = t.path().join("store");
    train_store(&st);
    // lr 1e38: finite weights after the first update, then a NaN loss; lr 1e300: the f32 update overflows,
    // so the state itself becomes non-finite before its checkpoint.
    for (k, lr) in ["1e38", "1e300"].iter().enumerate() {
        let out = t.path().join(format!("run{k}"));
        let mut sets = tiny_sets(12, 1);
        sets.push(format!("optim.lr={lr}"));
        sets.push("optim.warmup_epochs=0".into());
        sets.push("optim.clip_grad=0".into());
        let e = err(&train_args(&st, &out, &sets));
        assert!(
            e.contains("non-finite") && e.contains("last finite checkpoint"),
            "{e}"
        );
        let ckpts: Vec<_> = std::fs::read_dir(out.join("checkpoints"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        for p in &ckpts {
            let f = setdino::model::checkpoint::TensorFile::open(p).unwrap();
            for n in f.names() {
                f.get_f32(n)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            }
        }
        let named = ckpts.iter().any(|p| e.contains(&p.display().to_string()));
        assert!(
            named || (ckpts.is_empty() && e.contains("none")),
            "{lr}: {e}"
        );
        if *lr == "1e300" {
            assert!(e.contains("training state became non-finite"), "{e}");
        }
    }
}

/// Rewrite the safetensors file `p` with `n` NaN values in tensor `name`.
fn poison(p: &Path, name: &str, n: usize) {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let t = owned.iter_mut().find(|t| t.0 == name).unwrap();
    for k in 0..n {
        t.2[4 * k..4 * k + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(k, s, d)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, meta.metadata().clone()).unwrap();
    std::fs::write(p, out).unwrap();
}

/// Cases 10–11 and `--num-heads`: a checkpoint with NaN weights is refused on load (tensor named, values
/// counted), nothing is written; `--num-heads` contradicting the checkpoint's config is an error.
#[test]
fn embed_refuses_nan_checkpoints_and_contradicting_heads() {
    let t = tempfile::tempdir().unwrap();
    let st = t.path().join("store");
    train_store(&st);
    let out = t.path().join("run");
    cli(&train_args(&st, &out, &tiny_sets(2, 2))).unwrap();
    let ck = out.join("checkpoints/step-00000002.safetensors");
    let emb = t.path().join("emb");
    let embed = |extra: &[&str]| {
        let mut a = s(&[
            "embed",
            "--checkpoint",
            &ck.display().to_string(),
            "--store",
            &st.display().to_string(),
            "--out",
            &emb.display().to_string(),
            "--backend",
            "cpu",
        ]);
        a.extend(s(extra));
        a
    };
    let e = err(&embed(&["--num-heads", "5"]));
    assert!(
        e.contains("--num-heads 5") && e.contains("model.heads = 2") && e.contains("step-00000002"),
        "{e}"
    );
    cli(&embed(&["--num-heads", "2"])).unwrap();
    std::fs::remove_file(t.path().join("emb.npy")).unwrap();
    std::fs::remove_file(t.path().join("emb.tsv")).unwrap();
    let name = "teacher.backbone.blocks.0.attn.qkv.weight";
    poison(&ck, name, 7);
    let before = snapshot(t.path());
    let e = err(&embed(&[]));
    assert!(
        e.contains(name) && e.contains("7 non-finite") && e.contains("step-00000002"),
        "{e}"
    );
    assert_eq!(before, snapshot(t.path()));
    // The same checkpoint cannot be resumed from either.
    let e = err(&s(&[
        "train",
        "--resume",
        &out.display().to_string(),
        "--quiet",
    ]));
    assert!(e.contains(name), "{e}");
}

/// Vague cases of ingest's options and tables: each an error naming the flag or the file and column.
#[test]
fn ingest_option_and_table_errors() {
    let t = tempfile::tempdir().unwrap();
    let sc = write_screen(&t.path().join("in"), TiffCompression::None);
    let out = t.path().join("out");
    let before = snapshot(t.path());
    let with = |f: &dyn Fn(&mut Vec<String>)| {
        let mut a = ingest_args(&sc, &out);
        f(&mut a);
        err(&a)
    };
    let e = with(&|a| a[8] = "512".into());
    assert!(
        e.contains("--crop 512") && e.contains("larger than the tiles") && e.contains("96×96"),
        "{e}"
    );
    let e = with(&|a| a[10] = "dna,,actin".into());
    assert!(e.contains("--channels") && e.contains("empty"), "{e}");
    let e = with(&|a| a[10] = "dna,dna".into());
    assert!(
        e.contains("--channels") && e.contains("\"dna\" is listed twice"),
        "{e}"
    );
    let e = with(&|a| a.extend(s(&["--cells-per-shard", "0"])));
    assert!(
        e.contains("--cells-per-shard 0") && e.contains("≥ 1"),
        "{e}"
    );
    assert_eq!(before, snapshot(t.path()));
    // Two `gene` columns.
    let text = std::fs::read_to_string(&sc.cells).unwrap();
    let dup: String = text
        .lines()
        .enumerate()
        .map(|(k, l)| {
            if k == 0 {
                format!("{l},gene\n")
            } else {
                format!("{l},x\n")
            }
        })
        .collect();
    std::fs::write(&sc.cells, dup).unwrap();
    let e = err(&ingest_args(&sc, &out));
    assert!(
        e.contains("cells.csv")
            && e.contains("\"gene\" appears twice")
            && e.contains("columns 8 and 9"),
        "{e}"
    );
    assert!(!out.exists());
}

/// Vague case: eval with complexes that match no profiled gene warns, naming the file and the count.
#[test]
fn eval_warns_when_no_gene_is_in_a_complex() {
    let t = tempfile::tempdir().unwrap();
    let st = t.path().join("store");
    train_store(&st);
    let f = t.path().join("f");
    cli(&s(&[
        "features",
        "--store",
        &st.display().to_string(),
        "--out",
        &f.display().to_string(),
        "--dna-channel",
        "dna",
    ]))
    .unwrap();
    let cx = t.path().join("cx.csv");
    std::fs::write(&cx, "entity1,entity2\nFOO,BAR\nBAZ,QUX\n").unwrap();
    let a = s(&[
        "eval",
        "--features",
        &f.display().to_string(),
        "--complexes",
        &cx.display().to_string(),
        "--out",
        &t.path().join("ev").display().to_string(),
        "--quiet",
    ]);
    let (_, stderr) = run_bin(&a, None);
    assert!(
        stderr.contains("warning")
            && stderr.contains(&cx.display().to_string())
            && stderr.contains("0 of the 4 profiled genes"),
        "{stderr}"
    );
}

/// Vague case: stale `.tmp.PID` files of killed checkpoint and feature writes are removed by the next
/// write of the same output.
#[test]
fn stale_checkpoint_and_feature_temps_are_removed() {
    let t = tempfile::tempdir().unwrap();
    let st = t.path().join("store");
    train_store(&st);
    let out = t.path().join("run");
    cli(&train_args(&st, &out, &tiny_sets(2, 1))).unwrap();
    let ckd = out.join("checkpoints");
    let stale = ckd.join(".step-00000003.safetensors.tmp.99999999.0");
    let legacy = ckd.join(".step-00000004.safetensors.tmp.99999998");
    std::fs::write(&stale, "x").unwrap();
    std::fs::write(&legacy, "x").unwrap();
    cli(&s(&[
        "train",
        "--resume",
        &out.display().to_string(),
        "--quiet",
        "--set",
        "train.max_steps=3",
    ]))
    .unwrap();
    assert!(!stale.exists() && !legacy.exists());
    assert!(temps_in(&ckd).is_empty(), "{:?}", temps_in(&ckd));
    let f = t.path().join("f");
    let fstale = t.path().join(".f.npy.tmp.99999999");
    std::fs::write(&fstale, "x").unwrap();
    cli(&s(&[
        "features",
        "--store",
        &st.display().to_string(),
        "--out",
        &f.display().to_string(),
        "--dna-channel",
        "dna",
    ]))
    .unwrap();
    assert!(!fstale.exists());
    assert!(temps_in(t.path()).is_empty(), "{:?}", temps_in(t.path()));
}

/// `bench --global-px/--local-px`: a crop side that the patch does not divide is an error naming the flag,
/// the value and the patch size, before any work.
#[test]
fn bench_crop_sides_must_be_multiples_of_the_patch() {
    for (flag, value, what) in [("--global-px", "50", "step"), ("--local-px", "0", "vit")] {
        let e = err(&s(&[
            "bench",
            "--backend",
            "cpu",
            "--config",
            "tiny",
            "--what",
            what,
            flag,
            value,
            "--warmup",
            "0",
            "--warmup-secs",
            "0",
            "--repeats",
            "1",
        ]));
        assert!(
            e.contains(&format!("{flag} {value}")) && e.contains("patch size 8"),
            "{flag} {value}: {e}"
        );
    }
}

/// `bench --what kernels` on the emulator: the kernel table of a step, modelled for the named GPU and
/// labelled as modelled (every kernel's time sums to the step's); an unknown `--gpu` and the CPU backend
/// are refused with what to use instead.
#[test]
fn bench_kernels_models_a_named_gpu_and_refuses_what_it_cannot_model() {
    let t = tempfile::tempdir().unwrap();
    let json = t.path().join("k.json");
    let base = [
        "bench",
        "--what",
        "kernels",
        "--config",
        "tiny",
        "--sets",
        "1",
        "--set-size",
        "2",
        "--n-local",
        "2",
        "--warmup",
        "1",
    ];
    let mut args = s(&base);
    args.extend(s(&["--backend", "simt", "--gpu", "h200", "--json"]));
    args.push(json.display().to_string());
    cli(&args).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let step = &v["step"];
    assert_eq!(step["gpu"]["name"], "H200");
    assert_eq!(step["measured"], false);
    let kernels = v["kernels"].as_array().unwrap();
    let ms: f64 = kernels.iter().map(|k| k["ms"].as_f64().unwrap()).sum();
    assert!((ms - step["ms"].as_f64().unwrap()).abs() < 1e-9);
    assert!(kernels
        .iter()
        .any(|k| k["class"] == "TensorGemm" && k["flop"].as_f64().unwrap() > 0.0));
    assert!(kernels
        .iter()
        .all(|k| k["measured"] == false && k["bytes"].as_u64().unwrap() > 0));
    let mut bad = s(&base);
    bad.extend(s(&["--backend", "simt", "--gpu", "b200"]));
    let e = err(&bad);
    assert!(
        e.contains("--gpu") && e.contains("b200") && e.contains("h100"),
        "{e}"
    );
    let mut cpu = s(&base);
    cpu.extend(s(&["--backend", "cpu"]));
    let e = err(&cpu);
    assert!(
        e.contains("--backend simt") && e.contains("--profile"),
        "{e}"
    );
}
