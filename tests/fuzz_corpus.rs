//! Replay of the fuzz corpus (fuzz/corpus/<target>/) and of the fixed crash inputs
//! (fuzz/regressions/<target>/) through the same functions the fuzz targets call
//! (`setdino::fuzzing`): every input must return, Ok or Err, without a panic. One test per target.
use std::path::{Path, PathBuf};
use std::time::Instant;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for sub in ["corpus", "regressions"] {
        let Ok(rd) = std::fs::read_dir(root.join(sub).join(target)) else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().is_file() {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str) {
    let f = setdino::fuzzing::TARGETS
        .iter()
        .find(|t| t.0 == target)
        .map(|t| t.1)
        .unwrap();
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "fuzz/corpus/{target}/ is empty; the corpus is committed with the fuzz targets"
    );
    let t0 = Instant::now();
    let mut failed = Vec::new();
    for p in &files {
        let data = std::fs::read(p).unwrap();
        if std::panic::catch_unwind(|| f(&data)).is_err() {
            failed.push(p.display().to_string());
        }
    }
    eprintln!(
        "{target}: {} inputs in {:.2} s",
        files.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "{target}: panicked on {failed:#?}");
}

#[test]
fn every_target_has_a_replay() {
    let names: Vec<&str> = setdino::fuzzing::TARGETS.iter().map(|t| t.0).collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.path()
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .collect();
    files.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        files, sorted,
        "one fuzz target per setdino::fuzzing::TARGETS entry"
    );
    for n in names {
        let src = std::fs::read_to_string(dir.join(format!("{n}.rs"))).unwrap();
        assert!(
            src.contains(&format!("setdino::fuzzing::{n}(data)")),
            "fuzz target {n} calls setdino::fuzzing::{n}"
        );
    }
}

#[test]
fn tiff() {
    replay("tiff");
}
#[test]
fn tables() {
    replay("tables");
}
#[test]
fn complexes() {
    replay("complexes");
}
#[test]
fn npy() {
    replay("npy");
}
#[test]
fn checkpoint() {
    replay("checkpoint");
}
#[test]
fn store() {
    replay("store");
}
#[test]
fn config() {
    replay("config");
}
