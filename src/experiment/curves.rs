//! Training curves of an experiment's learned runs: `curves.tsv` (every logged step of every run, and
//! the validations) and `curves.png` (loss, teacher entropy / ln K, KL(teacher ‖ student), validation
//! gene KNN@5 over steps; one colour per method, one line per seed), plus one line per run saying
//! whether and where it collapsed.
use crate::eval::plots::{panels_png, Panel, Series};
use crate::util::atomic::write_atomic;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Entropy above this fraction of ln K counts as a uniform teacher (the trainer's collapse rule).
const UNIFORM: f64 = 0.99;

/// Writes curves.tsv and curves.png under `out` for `runs` = (method label, seed, run dir); returns
/// the per-run collapse notes for the report.
pub fn write(out: &Path, runs: &[(String, u64, PathBuf)]) -> Result<Vec<String>> {
    let mut tsv = String::from(
        "method\tseed\tstep\tloss\tteacher_entropy\tentropy_over_lnk\tkl\tval_top5_gene\tval_top5_batch\n",
    );
    let mut methods: Vec<&str> = Vec::new();
    let mut panels: Vec<Panel> = [
        ("loss", "cross-entropy"),
        ("teacher entropy / ln K", "1 = uniform (collapse)"),
        ("KL(teacher||student)", "nats"),
        ("val gene KNN@5", "training plates' cells"),
    ]
    .into_iter()
    .map(|(t, y)| Panel {
        title: t.into(),
        xlabel: "step".into(),
        ylabel: y.into(),
        series: Vec::new(),
    })
    .collect();
    let mut notes = Vec::new();
    for (method, seed, dir) in runs {
        let colour = match methods.iter().position(|m| m == method) {
            Some(i) => i,
            None => {
                methods.push(method);
                methods.len() - 1
            }
        };
        let log = crate::train::read_log(dir)?;
        let val = if dir.join("val.jsonl").exists() {
            super::read_val(dir)?
        } else {
            Vec::new()
        };
        let cfg = read_out_dim(dir)?;
        let ln_k = (cfg as f64).ln();
        let mut series: Vec<Vec<(f64, f64)>> = vec![Vec::new(); 4];
        for l in &log {
            let x = l.step as f64;
            series[0].push((x, l.loss));
            series[1].push((x, l.teacher_entropy / ln_k));
            series[2].push((x, l.kl));
            let _ = writeln!(
                tsv,
                "{method}\t{seed}\t{}\t{}\t{}\t{}\t{}\t\t",
                l.step,
                l.loss,
                l.teacher_entropy,
                l.teacher_entropy / ln_k,
                l.kl
            );
        }
        for v in &val {
            series[3].push((v.step as f64, v.val_top5_gene));
            let _ = writeln!(
                tsv,
                "{method}\t{seed}\t{}\t\t\t\t\t{}\t{}",
                v.step, v.val_top5_gene, v.val_top5_batch
            );
        }
        for (p, pts) in panels.iter_mut().zip(series) {
            p.series.push(Series {
                label: method.clone(),
                colour,
                points: pts,
            });
        }
        notes.push(note(method, *seed, &log, ln_k));
    }
    write_atomic(&out.join("curves.tsv"), tsv.as_bytes())?;
    panels_png(&out.join("curves.png"), &panels)?;
    Ok(notes)
}

fn read_out_dim(dir: &Path) -> Result<usize> {
    let p = dir.join("config.json");
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
    )
    .with_context(|| format!("{}: not JSON", p.display()))?;
    v["config"]["model"]["out_dim"]
        .as_u64()
        .and_then(|k| usize::try_from(k).ok())
        .with_context(|| format!("{}: no config.model.out_dim", p.display()))
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
