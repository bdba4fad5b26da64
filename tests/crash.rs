//! Crash tests: the real binary is SIGKILLed at several points of `ingest`, `train`, `embed`, `features`
//! and `store export`. After each kill no output looks valid unless it is (a store only with store.json
//! and a passing `store verify`; an `.npy` under its final name only when complete; every checkpoint
//! readable and finite), the re-run (`train --resume`) succeeds, and no temp files are left behind.
#[path = "common/inputs.rs"]
mod inputs;

use clap::Parser;
use inputs::*;
use setdino::cli::{run, Cli};
use setdino::ingest::tiff::TiffCompression;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn cli(args: &[String]) -> anyhow::Result<()> {
    let mut v = vec!["setdino".to_string()];
    v.extend_from_slice(args);
    run(Cli::try_parse_from(v)?)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Start the binary, SIGKILL it after `ms` milliseconds unless it has finished; returns whether it had
/// finished by itself (successfully).
fn kill_after(args: &[String], ms: u64) -> bool {
    let mut c = Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    let done = c.try_wait().unwrap();
    if done.is_none() {
        c.kill().unwrap();
    }
    // Reap it, so its pid is no longer alive (stale-temp detection relies on that).
    let status = c.wait().unwrap();
    done.is_some() && status.success()
}

/// Delays (ms) spread over a command's run time.
const DELAYS: [u64; 5] = [5, 30, 80, 160, 320];

/// A store directory is either absent or complete (store.json present and `store verify` passing).
fn assert_store_absent_or_valid(dir: &Path) {
    if !dir.exists() {
        return;
    }
    assert!(
        dir.join("store.json").exists(),
        "{} exists without store.json",
        dir.display()
    );
    cli(&s(&["store", "verify", &dir.display().to_string()]))
        .unwrap_or_else(|e| panic!("{} does not verify: {e:#}", dir.display()));
}

/// An `.npy` under its final name is complete (header and size agree) with `rows` rows.
fn assert_npy_absent_or_complete(p: &Path, rows: usize) {
    if !p.exists() {
        return;
    }
    let b = std::fs::read(p).unwrap();
    let h = setdino::store::npy::parse_header(&b, p)
        .unwrap_or_else(|e| panic!("{} is incomplete: {e:#}", p.display()));
    assert_eq!(h.shape[0], rows, "{}", p.display());
}

#[test]
fn killed_ingest_leaves_no_half_store_and_reruns() {
    let t = tempfile::tempdir().unwrap();
    let sc = write_screen(&t.path().join("in"), TiffCompression::Deflate);
    let mut killed = 0;
    for (k, ms) in DELAYS.iter().enumerate() {
        let out = t.path().join(format!("out{k}"));
        let finished = kill_after(&ingest_args(&sc, &out), *ms);
        killed += usize::from(!finished);
        assert_store_absent_or_valid(&out);
        if finished {
            assert!(out.join("store.json").exists());
        }
        // The re-run (with --force when the killed one completed) succeeds and removes its temps.
        let mut a = ingest_args(&sc, &out);
        a.push("--force".into());
        cli(&a).unwrap();
        assert_store_absent_or_valid(&out);
        assert!(temps_in(t.path()).is_empty(), "{:?}", temps_in(t.path()));
    }
    assert!(killed >= 1, "no ingest was killed before it finished");
    // Killed while replacing a store with --force: the old one or the new one, never neither.
    let out = t.path().join("out0");
    for ms in DELAYS {
        let mut a = ingest_args(&sc, &out);
        a.push("--force".into());
        kill_after(&a, ms);
        assert!(
            out.join("store.json").exists(),
            "the store vanished (kill at {ms} ms)"
        );
        assert_store_absent_or_valid(&out);
    }
}

/// Every checkpoint (non-temp) in `run` loads and is finite.
fn assert_checkpoints_valid(run: &Path) {
    let Ok(rd) = std::fs::read_dir(run.join("checkpoints")) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let f = setdino::model::checkpoint::TensorFile::open(&e.path())
            .unwrap_or_else(|err| panic!("{name}: {err:#}"));
        for n in f.names() {
            f.get_f32(n).unwrap_or_else(|err| panic!("{name}: {err:#}"));
        }
    }
}

#[test]
fn killed_training_resumes_and_downstream_kills_leave_no_partial_output() {
    let t = tempfile::tempdir().unwrap();
    let st = t.path().join("store");
    train_store(&st);
    let run_dir = t.path().join("run");
    let total = 40u64;
    let sets = tiny_sets(total, 1);
    let mut killed_runs = 0;
    for ms in [60, 130, 200, 300, 400, 550, 700] {
        let has_ckpt = std::fs::read_dir(run_dir.join("checkpoints"))
            .map(|r| {
                r.flatten()
                    .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
            })
            .unwrap_or(false);
        let a = if has_ckpt {
            s(&[
                "train",
                "--resume",
                &run_dir.display().to_string(),
                "--quiet",
            ])
        } else {
            train_args(&st, &run_dir, &sets)
        };
        if !kill_after(&a, ms) {
            killed_runs += 1;
        }
        assert_checkpoints_valid(&run_dir);
    }
    // Finish the run from wherever the kills left it.
    let has_ckpt = std::fs::read_dir(run_dir.join("checkpoints"))
        .map(|r| {
            r.flatten()
                .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
        })
        .unwrap_or(false);
    if has_ckpt {
        cli(&s(&[
            "train",
            "--resume",
            &run_dir.display().to_string(),
            "--quiet",
        ]))
        .unwrap();
    } else {
        cli(&train_args(&st, &run_dir, &sets)).unwrap();
    }
    assert_checkpoints_valid(&run_dir);
    let ckd = run_dir.join("checkpoints");
    assert!(ckd.join(format!("step-{total:08}.safetensors")).exists());
    assert!(temps_in(&ckd).is_empty(), "{:?}", temps_in(&ckd));
    assert!(temps_in(&run_dir).is_empty(), "{:?}", temps_in(&run_dir));
    let log = setdino::train::read_log(&run_dir).unwrap();
    assert_eq!(
        log.last().unwrap().step,
        total - 1,
        "the log reaches the last step"
    );
    assert!(
        killed_runs >= 1,
        "no training run was killed before it finished"
    );

    // embed, features and store export: killed at several points, then re-run.
    let ck = ckd.join(format!("step-{total:08}.safetensors"));
    let cells = 360;
    let out = t.path().join("o");
    let commands: Vec<(Vec<String>, &str)> = vec![
        (
            s(&[
                "embed",
                "--checkpoint",
                &ck.display().to_string(),
                "--store",
                &st.display().to_string(),
                "--out",
                &out.join("emb").display().to_string(),
                "--backend",
                "cpu",
                "--batch",
                "16",
            ]),
            "emb",
        ),
        (
            s(&[
                "features",
                "--store",
                &st.display().to_string(),
                "--out",
                &out.join("feat").display().to_string(),
                "--dna-channel",
                "dna",
            ]),
            "feat",
        ),
        (
            s(&[
                "store",
                "export",
                &st.display().to_string(),
                "--out",
                &out.join("exp").display().to_string(),
            ]),
            "exp",
        ),
    ];
    for (args, stem) in &commands {
        for ms in [5, 20, 60, 150] {
            kill_after(args, ms);
            assert_npy_absent_or_complete(&out.join(format!("{stem}.npy")), cells);
            if out.join(format!("{stem}.npy")).exists() {
                assert!(
                    out.join(format!("{stem}.tsv")).exists(),
                    "{stem}.tsv missing"
                );
            }
        }
        cli(args).unwrap();
        assert_npy_absent_or_complete(&out.join(format!("{stem}.npy")), cells);
        assert!(out.join(format!("{stem}.npy")).exists());
        assert!(temps_in(&out).is_empty(), "{stem}: {:?}", temps_in(&out));
    }
}
