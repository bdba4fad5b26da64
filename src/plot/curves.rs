//! `curves.png`: training curves from `log.jsonl` and `val.jsonl`: the loss, the teacher entropy over
//! ln K (1 = uniform teacher, the collapse), KL(teacher ‖ student) and the validation score (known-complex
//! recall at 5 % when the run had complexes, else gene KNN@5) over steps; one colour per method, one
//! line per seed. Data: `curves.tsv` (every logged step and every validation of every run).
use super::{font, legend, method_colours, DrawResult, Figure, Mark, AXIS, TICK};
use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One line of curves.tsv: a logged training step (loss … kl set) or a validation (val_* set).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CurveRow {
    pub method: String,
    pub seed: u64,
    pub step: u64,
    pub loss: Option<f64>,
    pub teacher_entropy: Option<f64>,
    pub entropy_over_lnk: Option<f64>,
    pub kl: Option<f64>,
    pub val_top5_gene: Option<f64>,
    pub val_top5_batch: Option<f64>,
    pub val_recall5: Option<f64>,
}

fn read_config(dir: &Path) -> Result<serde_json::Value> {
    let p = dir.join("config.json");
    serde_json::from_slice(&std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?)
        .with_context(|| format!("{}: not JSON", p.display()))
}

/// The K of a run (config.json's model.out_dim), for entropy / ln K.
pub fn out_dim(dir: &Path) -> Result<usize> {
    read_config(dir)?["config"]["model"]["out_dim"]
        .as_u64()
        .and_then(|k| usize::try_from(k).ok())
        .with_context(|| {
            format!(
                "{}: no config.model.out_dim",
                dir.join("config.json").display()
            )
        })
}

/// How a training run directory is labelled on its own: the method its config describes (DINO for the
/// same-cells strategy, else Set-DINO) and its seed.
pub fn run_label(dir: &Path) -> Result<(String, u64)> {
    let v = read_config(dir)?;
    let method = match v["config"]["data"]["strategy"].as_str() {
        Some("same-cells") => "DINO",
        _ => "Set-DINO",
    };
    Ok((
        method.into(),
        v["config"]["train"]["seed"].as_u64().unwrap_or(0),
    ))
}

/// The rows of one training run directory (log.jsonl, val.jsonl when present, config.json).
pub fn rows_from_run(method: &str, seed: u64, dir: &Path) -> Result<Vec<CurveRow>> {
    let log = crate::train::read_log(dir)?;
    let val = if dir.join("val.jsonl").exists() {
        crate::experiment::read_val(dir)?
    } else {
        Vec::new()
    };
    let ln_k = (out_dim(dir)? as f64).ln();
    let blank = |step: u64| CurveRow {
        method: method.to_string(),
        seed,
        step,
        loss: None,
        teacher_entropy: None,
        entropy_over_lnk: None,
        kl: None,
        val_top5_gene: None,
        val_top5_batch: None,
        val_recall5: None,
    };
    let mut rows: Vec<CurveRow> = log
        .iter()
        .map(|l| CurveRow {
            loss: Some(l.loss),
            teacher_entropy: Some(l.teacher_entropy),
            entropy_over_lnk: Some(l.teacher_entropy / ln_k),
            kl: Some(l.kl),
            ..blank(l.step)
        })
        .collect();
    rows.extend(val.iter().map(|v| CurveRow {
        val_top5_gene: Some(v.val_top5_gene),
        val_top5_batch: Some(v.val_top5_batch),
        val_recall5: v.val_recall5,
        ..blank(v.step)
    }));
    Ok(rows)
}

/// The figure.
#[derive(Clone, Debug)]
pub struct Curves {
    pub title: String,
    pub rows: Vec<CurveRow>,
}

type Get = fn(&CurveRow) -> Option<f64>;

impl Curves {
    fn methods(&self) -> Vec<String> {
        super::distinct(self.rows.iter().map(|r| r.method.clone()))
    }

    /// The four panels: title, y description, value.
    fn panels(&self) -> [(&'static str, &'static str, Get); 4] {
        let recall = self.rows.iter().any(|r| r.val_recall5.is_some());
        [
            ("loss", "cross-entropy (nats)", |r| r.loss),
            (
                "teacher entropy / ln K",
                "1 = uniform teacher (collapse)",
                |r| r.entropy_over_lnk,
            ),
            ("KL(teacher ‖ student)", "nats", |r| r.kl),
            if recall {
                (
                    "validation: complex recall at 5 %",
                    "fraction of related pairs",
                    |r| r.val_recall5,
                )
            } else {
                ("validation: gene KNN@5", "fraction of cells", |r| {
                    r.val_top5_gene
                })
            },
        ]
    }
}

impl Figure for Curves {
    fn size(&self) -> (u32, u32) {
        (1120, 700)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let body = super::titled(root, &self.title)?;
        let (grid, side) = body.split_horizontally(880);
        let methods = self.methods();
        if methods.is_empty() {
            return super::empty_note(&grid, "no logged step");
        }
        let colours = method_colours(&methods);
        let xmax = self.rows.iter().map(|r| r.step).max().unwrap_or(1).max(1) as f64;
        for (panel, (title, ydesc, get)) in grid.split_evenly((2, 2)).iter().zip(self.panels()) {
            let (y0, y1) = super::padded_range(self.rows.iter().filter_map(get), 0.06, (0.0, 1.0));
            let mut chart = ChartBuilder::on(panel)
                .caption(title, font(AXIS + 1))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..xmax, y0..y1)
                .dr()?;
            super::mesh(&mut chart.configure_mesh(), TICK)
                .x_desc("step")
                .y_desc(ydesc)
                .x_label_formatter(&|v| super::tick(*v, 0))
                .y_label_formatter(&|v| {
                    if v.abs() >= 10.0 {
                        super::tick(*v, 0)
                    } else {
                        super::tick(*v, 2)
                    }
                })
                .draw()
                .dr()?;
            for (m, colour) in methods.iter().zip(&colours) {
                let mut seeds: Vec<u64> = self
                    .rows
                    .iter()
                    .filter(|r| &r.method == m)
                    .map(|r| r.seed)
                    .collect();
                seeds.sort_unstable();
                seeds.dedup();
                for s in seeds {
                    let mut pts: Vec<(f64, f64)> = self
                        .rows
                        .iter()
                        .filter(|r| &r.method == m && r.seed == s)
                        .filter_map(|r| {
                            get(r).filter(|v| v.is_finite()).map(|v| (r.step as f64, v))
                        })
                        .collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    chart
                        .draw_series(super::segments(&pts, colour.stroke_width(2)))
                        .dr()?;
                    // Sparse series (validations) also get their points.
                    if pts.len() <= 30 {
                        chart
                            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                            .dr()?;
                    }
                }
            }
        }
        let entries: Vec<(String, RGBColor, Mark)> = methods
            .iter()
            .zip(&colours)
            .map(|(m, c)| (m.clone(), *c, Mark::Line))
            .collect();
        legend(
            &side.margin(50, 0, 0, 0),
            Some("one line per seed"),
            &entries,
        )
    }
}
