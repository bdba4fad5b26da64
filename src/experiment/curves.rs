//! Training curves of an experiment's learned runs: `curves.tsv` (every logged step of every run, and
//! the validations) and `curves.png` (`plot::curves`: loss, teacher entropy / ln K, KL(teacher ‖
//! student), the validation score over steps; one colour per method, one line per seed), plus one line
//! per run saying whether and where it collapsed.
use crate::plot::{self, curves, Formats};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Entropy above this fraction of ln K counts as a uniform teacher (the trainer's collapse rule).
const UNIFORM: f64 = 0.99;

/// Writes curves.tsv and curves.png under `out` for `runs` = (method label, seed, run dir); returns
/// the per-run collapse notes for the report.
pub fn write(out: &Path, runs: &[(String, u64, PathBuf)], formats: Formats) -> Result<Vec<String>> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (method, seed, dir) in runs {
        rows.extend(curves::rows_from_run(method, *seed, dir)?);
        let log = crate::train::read_log(dir)?;
        let ln_k = (curves::out_dim(dir)? as f64).ln();
        notes.push(note(method, *seed, &log, ln_k));
    }
    crate::util::tsv::write(&out.join("curves.tsv"), &rows)?;
    plot::save(
        &curves::Curves {
            title: plot::regen::curves_title(),
            rows,
        },
        &out.join("curves"),
        formats,
    )?;
    Ok(notes)
}

/// One line per run: where the teacher first became uniform (if it did), and how it ended.
fn note(method: &str, seed: u64, log: &[crate::train::LogLine], ln_k: f64) -> String {
    let first_uniform = log.iter().find(|l| l.teacher_entropy > UNIFORM * ln_k);
    let last = log.last();
    let end = last.map_or("no step logged".to_string(), |l| {
        format!(
            "at its last step ({}) the teacher entropy is {:.2} ln K and KL {:.3}",
            l.step,
            l.teacher_entropy / ln_k,
            l.kl
        )
    });
    match first_uniform {
        Some(l) => format!(
            "{method} seed {seed}: the teacher became uniform (entropy > {UNIFORM} ln K) at step {}; {end}",
            l.step
        ),
        None => format!("{method} seed {seed}: no uniform teacher; {end}"),
    }
}
