//! The user-facing pipeline on a small generated store: train → resume equivalence (bit-identical
//! losses on the CPU backend), checkpoint rotation, embedding shapes and CPU/SIMT agreement, and the
//! errors for bad configurations and missing files.
#[path = "common/inputs.rs"]
mod inputs;

use setdino::embed::{embed, EmbedOptions};
use setdino::formats::Format;
use setdino::store::{CellFilter, Store};
use setdino::train::{read_log, train, TrainConfig, TrainOptions};
use std::path::Path;

/// 1 plate × 3 wells, genes g0..g3 + NTC, 24 cells per (gene, well), 2 channels of 16 px.
/// The shared small training store (3 wells × 5 genes × 24 cells, 2 channels, 16 px), opened once to
/// check it is complete.
fn store(dir: &Path) {
    inputs::train_store(dir);
    Store::open(dir).unwrap();
}

fn config() -> TrainConfig {
    TrainConfig::load(
        None,
        &[
            "model.patch=8".into(),
            "model.pos_grid=28".into(),
            "model.dim=32".into(),
            "model.heads=2".into(),
            "model.mlp_hidden=64".into(),
            "model.depth=2".into(),
            "model.head_hidden=48".into(),
            "model.head_bottleneck=16".into(),
            "model.out_dim=32".into(),
            "data.set_size=4".into(),
            "data.sets_per_step=2".into(),
            "data.n_local=2".into(),
            "data.min_cells=8".into(),
            "train.epochs=2".into(),
            "train.max_steps=12".into(),
            "train.checkpoint_every=4".into(),
            "train.keep_last=2".into(),
            "train.backend=cpu".into(),
        ],
    )
    .expect("config")
}

fn opts(
    cfg: &TrainConfig,
    store: &Path,
    out: &Path,
    resume: bool,
    stop_at: Option<u64>,
) -> TrainOptions {
    TrainOptions {
        config: cfg.clone(),
        store: store.to_path_buf(),
        out: out.to_path_buf(),
        resume,
        progress: false,
        stop_at,
    }
}

#[test]
fn resume_is_bit_identical_to_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("store");
    store(&s);
    let cfg = config();
    let a = train(opts(&cfg, &s, &tmp.path().join("a"), false, None)).unwrap();
    assert_eq!(a.steps_done, 12);
    let b1 = train(opts(&cfg, &s, &tmp.path().join("b"), false, Some(5))).unwrap();
    assert_eq!((b1.steps_done, b1.last_step), (5, 5));
    let b2 = train(opts(&cfg, &s, &tmp.path().join("b"), true, None)).unwrap();
    assert_eq!((b2.steps_done, b2.last_step), (7, 12));
    let la = read_log(&tmp.path().join("a")).unwrap();
    let lb = read_log(&tmp.path().join("b")).unwrap();
    assert_eq!(la.len(), 12);
    assert_eq!(lb.len(), 12, "the resumed log continues without duplicates");
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x.step, y.step);
        assert_eq!(
            x.loss.to_bits(),
            y.loss.to_bits(),
            "step {}: {} vs {}",
            x.step,
            x.loss,
            y.loss
        );
        assert_eq!(x.lr.to_bits(), y.lr.to_bits());
    }
    assert!(la.iter().all(|l| l.loss.is_finite()));
    // The collapse monitors: the teacher's entropy lies in [0, ln K], the KL to the student is ≥ 0 (to
    // rounding) and the two add up to the loss; they too resume bit-identically.
    let ln_k = (cfg.model.out_dim as f64).ln();
    for (x, y) in la.iter().zip(&lb) {
        assert!(
            x.teacher_entropy >= 0.0 && x.teacher_entropy <= ln_k + 1e-9,
            "step {}: entropy {} outside [0, ln K = {ln_k}]",
            x.step,
            x.teacher_entropy
        );
        assert!(x.kl >= -1e-4, "step {}: KL {} < 0", x.step, x.kl);
        assert!((x.teacher_entropy + x.kl - x.loss).abs() < 1e-9);
        assert_eq!(x.teacher_entropy.to_bits(), y.teacher_entropy.to_bits());
    }
    assert!(
        la.iter().any(|l| l.kl > 1e-3),
        "an untrained student differs from its teacher somewhere"
    );
    // keep_last = 2: only the two newest checkpoints remain.
    let ck: Vec<_> = std::fs::read_dir(tmp.path().join("a/checkpoints"))
        .unwrap()
        .collect();
    assert_eq!(ck.len(), 2);
    // A fresh run refuses a directory that already holds checkpoints.
    let e = train(opts(&cfg, &s, &tmp.path().join("a"), false, None)).unwrap_err();
    assert!(format!("{e:#}").contains("--resume"), "{e:#}");
}

/// On a GPU backend the training loop replays a captured step (`train.cuda_graphs`, on by default):
/// on simt the run logs the same losses and teacher entropies, bit for bit, as the same run launch by
/// launch, and writes the same final checkpoint; a run stopped at step 5 and resumed (capturing again
/// after the restart) logs them too.
#[test]
fn captured_training_steps_log_the_same_run_as_launch_by_launch() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("store");
    store(&s);
    let mut on = config();
    on.train.backend = "simt".into();
    let mut off = on.clone();
    off.train.cuda_graphs = Some(false);
    let a = train(opts(&on, &s, &tmp.path().join("on"), false, None)).unwrap();
    let b = train(opts(&off, &s, &tmp.path().join("off"), false, None)).unwrap();
    assert!(a.replayed_steps >= 6, "{} steps replayed", a.replayed_steps);
    assert_eq!(b.replayed_steps, 0);
    let c1 = train(opts(&on, &s, &tmp.path().join("resumed"), false, Some(5))).unwrap();
    let c2 = train(opts(&on, &s, &tmp.path().join("resumed"), true, None)).unwrap();
    assert_eq!((c1.last_step, c2.last_step), (5, 12));
    assert!(c2.replayed_steps > 0);
    let log = |name: &str| read_log(&tmp.path().join(name)).unwrap();
    let (la, lb, lc) = (log("on"), log("off"), log("resumed"));
    assert_eq!((la.len(), lb.len(), lc.len()), (12, 12, 12));
    for ((x, y), z) in la.iter().zip(&lb).zip(&lc) {
        for w in [y, z] {
            assert_eq!(x.step, w.step);
            assert_eq!(x.loss.to_bits(), w.loss.to_bits(), "step {}", x.step);
            assert_eq!(x.teacher_entropy.to_bits(), w.teacher_entropy.to_bits());
        }
    }
    let state = |p: &Path| {
        use setdino::model::checkpoint::{load_state, stored_config, TensorFile};
        let f = TensorFile::open(p).unwrap();
        let (st, _) = load_state(&f, &stored_config(&f).unwrap().unwrap()).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        [st.student, st.teacher, st.adam_m, st.adam_v, st.center].map(|v| bits(&v))
    };
    let sa = state(&a.checkpoint);
    assert!(
        sa == state(&b.checkpoint),
        "final checkpoints, graphs on and off"
    );
    assert!(
        sa == state(&c2.checkpoint),
        "final checkpoints, uninterrupted and resumed"
    );
}

/// The training loop reads the loss and the teacher's health from the device every `train.log_every`
/// steps (and before each checkpoint): the log still has one line per step, bit-identical to reading
/// every step; and the device backend (simt: log_every 20, so read only at checkpoints and the end; crops
/// rendered on the device from the cells' stored crops and the CPU's parameters) logs the same run as
/// the CPU (crops augmented on the host) to f32 rounding.
#[test]
fn reading_the_device_every_few_steps_logs_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("store");
    store(&s);
    let every_step = config();
    let mut every_five = config();
    every_five.train.log_every = Some(5);
    let mut simt = config();
    simt.train.backend = "simt".into();
    for (name, cfg) in [("one", &every_step), ("five", &every_five), ("simt", &simt)] {
        let r = train(opts(cfg, &s, &tmp.path().join(name), false, None)).unwrap();
        assert_eq!(r.steps_done, 12, "{name}");
    }
    let log = |name: &str| read_log(&tmp.path().join(name)).unwrap();
    let (one, five, dev) = (log("one"), log("five"), log("simt"));
    assert_eq!((one.len(), five.len(), dev.len()), (12, 12, 12));
    for ((a, b), c) in one.iter().zip(&five).zip(&dev) {
        assert_eq!((a.step, b.step, c.step), (a.step, a.step, a.step));
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "step {}", a.step);
        assert_eq!(a.teacher_entropy.to_bits(), b.teacher_entropy.to_bits());
        assert_eq!(a.lr.to_bits(), b.lr.to_bits());
        assert!(
            (a.loss - c.loss).abs() < 1e-4 * a.loss.abs().max(1.0),
            "step {}: {} vs {}",
            a.step,
            a.loss,
            c.loss
        );
        assert!((a.teacher_entropy - c.teacher_entropy).abs() < 1e-4);
    }
}

#[test]
fn the_max_input_size_sets_the_training_views_and_the_embedding_input() {
    use setdino::embed::checkpoint_config;
    use setdino::model::checkpoint::TensorFile;
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("store");
    store(&s);
    // 16-px crops seen at 8 px (locals at 4): the views are rendered at that size, or the step's
    // shapes would not match the model's and training would fail.
    let mut cfg = config();
    cfg.model.patch = 4;
    cfg.data.max_input_size = Some(8);
    cfg.train.max_steps = Some(2);
    let r = train(opts(&cfg, &s, &tmp.path().join("run"), false, None)).unwrap();
    let (m, _) = checkpoint_config(&TensorFile::open(&r.checkpoint).unwrap(), None).unwrap();
    assert_eq!((m.global_size, m.local_size), (8, 4));
    let run = |input_size: Option<usize>, out: &str| {
        let e = embed(EmbedOptions {
            checkpoint: r.checkpoint.clone(),
            store: s.clone(),
            out: tmp.path().join(out),
            filter: CellFilter::default(),
            student: false,
            batch: 64,
            backend: "cpu".into(),
            precision: "auto".into(),
            normalizer: None,
            num_heads: None,
            progress: false,
            format: Format::Npy,
            input_size,
            devices: None,
        })
        .unwrap();
        std::fs::read(&e.paths[0]).unwrap()
    };
    // By default embed shows cells at the training views' scale; the crop's own side is another input.
    let (default, eight, full) = (run(None, "d"), run(Some(8), "e8"), run(Some(16), "e16"));
    assert_eq!(default, eight);
    assert_ne!(default, full);
    // A cap at or above the crop's side changes nothing.
    let mut plain = config();
    plain.data.max_input_size = Some(32);
    plain.train.max_steps = Some(1);
    let r = train(opts(&plain, &s, &tmp.path().join("plain"), false, None)).unwrap();
    let (m, _) = checkpoint_config(&TensorFile::open(&r.checkpoint).unwrap(), None).unwrap();
    assert_eq!((m.global_size, m.local_size), (16, 8));
    // A size the patches do not tile is refused, naming the key.
    cfg.data.max_input_size = Some(6);
    let e = train(opts(&cfg, &s, &tmp.path().join("bad"), false, None)).unwrap_err();
    assert!(
        format!("{e:#}").contains("data.max_input_size = 6"),
        "{e:#}"
    );
}

#[test]
fn embed_writes_aligned_npy_and_tsv_and_simt_agrees_with_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("store");
    store(&s);
    let mut cfg = config();
    cfg.train.max_steps = Some(3);
    let r = train(opts(&cfg, &s, &tmp.path().join("run"), false, None)).unwrap();
    let run_with = |backend: &str, out: &str, format: Format, devices: Option<Vec<usize>>| {
        embed(EmbedOptions {
            checkpoint: r.checkpoint.clone(),
            store: s.clone(),
            out: tmp.path().join(out),
            filter: CellFilter {
                wells: Some(vec!["W2".into()]),
                ..CellFilter::default()
            },
            student: false,
            batch: 17,
            backend: backend.into(),
            precision: "auto".into(),
            normalizer: None,
            num_heads: None,
            progress: false,
            format,
            input_size: None,
            devices,
        })
    };
    let run_as =
        |backend: &str, out: &str, format: Format| run_with(backend, out, format, None).unwrap();

    let run = |backend: &str, out: &str| run_as(backend, out, Format::Npy);
    let a = run("cpu", "cpu");
    let b = run("simt", "simt");
    assert_eq!(
        (a.cells, a.dim),
        (120, 64),
        "W2 holds 5 genes × 24 cells; 2 blocks × 32"
    );
    let read = |p: &Path| -> Vec<f32> {
        let bytes = std::fs::read(p).unwrap();
        let h = setdino::store::npy::parse_header(&bytes, p).unwrap();
        assert_eq!(h.shape, vec![120, 64]);
        bytes[h.data_offset..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (x, y) = (read(&a.paths[0]), read(&b.paths[0]));
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = x
        .iter()
        .zip(&y)
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(
        diff <= 1e-4 * max,
        "simt vs cpu embeddings: max diff {diff} (scale {max})"
    );
    // Three emulated devices taking the 8 batches of 17 cells in turn write the one-device files.
    let c = run_with("simt", "simt3", Format::Npy, Some(vec![0, 1, 2])).unwrap();
    for (p, q) in b.paths.iter().zip(&c.paths) {
        assert_eq!(
            std::fs::read(p).unwrap(),
            std::fs::read(q).unwrap(),
            "{}",
            q.display()
        );
    }
    let e = run_with("cpu", "cpu2", Format::Npy, Some(vec![0, 1])).unwrap_err();
    assert!(
        format!("{e:#}").contains("--devices [0, 1] with the cpu backend"),
        "{e:#}"
    );
    let e = run_with("simt", "simt2", Format::Npy, Some(vec![1, 1])).unwrap_err();
    assert!(format!("{e:#}").contains("listed twice"), "{e:#}");
    let tsv = std::fs::read_to_string(&a.paths[1]).unwrap();
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines.len(), 121);
    assert!(lines[0].starts_with("cell\tplate\twell\tbatch\ttile"));
    assert!(lines[1..]
        .iter()
        .all(|l| l.split('\t').nth(2) == Some("W2")));
    // The same embeddings and cell table as Parquet and as an AnnData store (read back by our readers;
    // tests/reference/formats_check.py opens them with pandas and anndata).
    let rows: Vec<Vec<String>> = lines[1..]
        .iter()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect();
    let header: Vec<String> = lines[0].split('\t').map(String::from).collect();
    let p = run_as("cpu", "pq", Format::Parquet);
    assert_eq!(p.paths, vec![tmp.path().join("pq.parquet")]);
    let t = setdino::formats::parquet::read(&p.paths[0]).unwrap();
    assert_eq!(
        t.features, x,
        "Parquet features equal the npy's bit for bit"
    );
    assert_eq!(
        (t.header.clone(), t.rows.clone()),
        (header.clone(), rows.clone())
    );
    assert_eq!(t.feature_names[0], "emb0");
    let z = run_as("cpu", "ad", Format::Anndata);
    assert_eq!(z.paths, vec![tmp.path().join("ad.zarr")]);
    let ad = setdino::formats::anndata::read(&z.paths[0]).unwrap();
    assert_eq!((ad.n, ad.d), (120, 64));
    assert_eq!(ad.x, x, "AnnData X equals the npy bit for bit");
    assert_eq!(
        ad.obs_index,
        rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>()
    );
    for (c, (name, vals)) in ad.obs.iter().enumerate() {
        assert_eq!(name, &header[c + 1]);
        let want: Vec<String> = rows.iter().map(|r| r[c + 1].clone()).collect();
        assert_eq!(vals, &want, "obs column {name}");
    }
    assert_eq!(ad.uns["command"], "embed");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(left.is_empty(), "temps left behind: {left:?}");
}

#[test]
fn validation_runs_on_held_out_wells_and_is_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("store");
    store(&s);
    let mut cfg = config();
    cfg.data.train_wells = Some(vec!["W0".into(), "W1".into()]);
    cfg.data.val_wells = Some(vec!["W0".into(), "W2".into()]);
    cfg.train.val_every_epochs = 1;
    cfg.train.max_steps = Some(4);
    let out = tmp.path().join("run");
    train(opts(&cfg, &s, &out, false, None)).unwrap();
    let text = std::fs::read_to_string(out.join("val.jsonl")).unwrap();
    let vals: Vec<setdino::validate::ValMetrics> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!vals.is_empty());
    assert_eq!(vals[0].step, 0, "the untrained network is validated first");
    let v = vals.last().unwrap();
    assert_eq!(v.step, 4);
    assert_eq!(v.profiles, 8, "2 wells × 4 genes (NTC dropped)");
    for x in [v.val_top5_gene, v.val_top5_batch] {
        assert!((0.0..=1.0).contains(&x), "{x}");
    }
    assert!(v.ratio_svg > 0.0 && v.ratio_svg <= 100.0 && v.median_svg.is_finite());
}

#[test]
fn collapse_monitor_counts_the_rank_of_the_profiles() {
    // Rows spanning a 2-dimensional subspace of 4 features: 2 of 4 singular values above 1e-4.
    let mut x = Vec::new();
    for i in 0..10 {
        let (a, b) = (i as f32, (i * i % 7) as f32);
        x.extend([a, b, a + b, 0.0]);
    }
    let (ratio, median) = setdino::validate::collapse_monitor(&x, 10, 4);
    assert!((ratio - 50.0).abs() < 1e-9, "{ratio}");
    assert!(median.is_finite());
    // Identical rows: a collapsed representation.
    let (ratio, _) = setdino::validate::collapse_monitor(&[1.0, 2.0, 3.0].repeat(5), 5, 3);
    assert_eq!(ratio, 0.0);
}

#[test]
fn bad_configurations_and_missing_files_give_clear_errors() {
    let e = TrainConfig::load(None, &["data.sett_size=4".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("sett_size"), "{e:#}");
    let e = TrainConfig::load(None, &["data.strategy=sideways".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("sideways"), "{e:#}");
    let e = TrainConfig::load(None, &["model.dim=30".into(), "model.heads=4".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("divisible"), "{e:#}");
    let e = TrainConfig::load(Some(Path::new("/nonexistent/cfg.toml")), &[]).unwrap_err();
    assert!(format!("{e:#}").contains("/nonexistent/cfg.toml"), "{e:#}");
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "preset = \"tiny\"\n[optim\nlr = 1\n").unwrap();
    let e = TrainConfig::load(Some(&bad), &[]).unwrap_err();
    assert!(format!("{e:#}").contains("bad.toml"), "{e:#}");
    let e = train(opts(
        &config(),
        &tmp.path().join("no_store"),
        &tmp.path().join("run"),
        false,
        None,
    ))
    .unwrap_err();
    assert!(format!("{e:#}").contains("no_store"), "{e:#}");
}
