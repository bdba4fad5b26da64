//! `comparison.png`: the Table 1 metrics per method, one panel per metric: a bar at the mean over
//! seeds, a whisker of ± one sample s.d., every seed as a dot, the mean printed above the bar, and the
//! recall ceiling (the best any method can reach) as a dashed line on the recall panels.
//! Data: `comparison.tsv`, one line per (method, seed, metric) in fractions, plus `(ceiling)` lines.
use super::{font, legend, method_colours, DrawResult, Figure, Mark, AXIS, SMALL};
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

/// One value of comparison.tsv.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ComparisonRow {
    pub method: String,
    /// Empty on the `(ceiling)` lines.
    pub seed: Option<u64>,
    pub metric: String,
    /// A fraction (the figure shows percent).
    pub value: f64,
}

/// The method name of the recall-ceiling lines.
pub const CEILING: &str = "(ceiling)";

/// The panels: metric key (as in metrics.json), title, whether lower is better.
pub const METRICS: [(&str, &str, bool); 6] = [
    ("batch_knn5", "batch KNN@5", true),
    ("batch_gc5", "batch GC@5", true),
    ("repro_knn5", "repro KNN@5", false),
    ("repro_map", "repro mAP", false),
    ("recall_top5", "recall@5%", false),
    ("recall_top10", "recall@10%", false),
];

/// The figure.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub title: String,
    pub rows: Vec<ComparisonRow>,
}

/// Mean and sample s.d. (0 with one value) of the finite values.
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = f.len() as f64;
    let m = f.iter().sum::<f64>() / n;
    let s = if f.len() > 1 {
        (f.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, s)
}

impl Comparison {
    /// Methods in first-appearance order (without the ceiling).
    pub fn methods(&self) -> Vec<String> {
        super::distinct(
            self.rows
                .iter()
                .filter(|r| r.method != CEILING)
                .map(|r| r.method.clone()),
        )
    }

    /// Per-seed values (in percent) of `method` on `metric`.
    pub fn values(&self, method: &str, metric: &str) -> Vec<f64> {
        self.rows
            .iter()
            .filter(|r| r.method == method && r.metric == metric)
            .map(|r| 100.0 * r.value)
            .collect()
    }

    fn ceiling(&self, metric: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.method == CEILING && r.metric == metric && r.value.is_finite())
            .map(|r| 100.0 * r.value)
    }
}

impl Figure for Comparison {
    fn size(&self) -> (u32, u32) {
        (1180, 640)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let body = super::titled(root, &self.title)?;
        let (grid, side) = body.split_horizontally(930);
        let methods = self.methods();
        if methods.is_empty() {
            return super::empty_note(&grid, "no method was evaluated");
        }
        let colours = method_colours(&methods);
        let k = methods.len() as f64;
        for (panel, &(key, name, lower)) in grid.split_evenly((2, 3)).iter().zip(&METRICS) {
            let stats: Vec<(Vec<f64>, (f64, f64))> = methods
                .iter()
                .map(|m| {
                    let v = self.values(m, key);
                    let s = mean_sd(&v);
                    (v, s)
                })
                .collect();
            let ceiling = self.ceiling(key);
            let ymax = stats
                .iter()
                .flat_map(|(v, (m, s))| {
                    v.iter()
                        .copied()
                        .chain([m + s.max(0.0)])
                        .collect::<Vec<_>>()
                })
                .chain(ceiling)
                .filter(|x| x.is_finite())
                .fold(0.0f64, f64::max);
            let ymax = (ymax * 1.22).max(1.0);
            let arrow = if lower {
                "↓ lower is better"
            } else {
                "↑ higher is better"
            };
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{name} (%)  {arrow}"), font(AXIS))
                .margin(8)
                .x_label_area_size(8)
                .y_label_area_size(46)
                .build_cartesian_2d(-0.6f64..k - 0.4, 0f64..ymax)
                .dr()?;
            super::mesh(&mut chart.configure_mesh(), AXIS)
                .disable_x_mesh()
                .x_labels(0)
                .y_label_formatter(&|v| super::tick(*v, 0))
                .draw()
                .dr()?;
            if let Some(c) = ceiling {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(-0.6, c), (k - 0.4, c)],
                        6,
                        4,
                        RGBColor(90, 90, 90).stroke_width(1),
                    ))
                    .dr()?;
            }
            for (i, ((v, (m, s)), colour)) in stats.iter().zip(&colours).enumerate() {
                let x = i as f64;
                if !m.is_finite() {
                    chart
                        .draw_series(std::iter::once(Text::new(
                            "n/a",
                            (x - 0.15, ymax * 0.05),
                            font(SMALL),
                        )))
                        .dr()?;
                    continue;
                }
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x - 0.34, 0.0), (x + 0.34, *m)],
                        colour.mix(0.75).filled(),
                    )))
                    .dr()?;
                if v.len() > 1 {
                    let (lo, hi) = (m - s, m + s);
                    let black = BLACK.stroke_width(1);
                    chart
                        .draw_series([
                            PathElement::new(vec![(x, lo), (x, hi)], black),
                            PathElement::new(vec![(x - 0.1, lo), (x + 0.1, lo)], black),
                            PathElement::new(vec![(x - 0.1, hi), (x + 0.1, hi)], black),
                        ])
                        .dr()?;
                }
                let n = v.len().max(1) as f64;
                chart
                    .draw_series(v.iter().enumerate().filter(|(_, y)| y.is_finite()).map(
                        |(j, &y)| {
                            let dx = if v.len() > 1 {
                                -0.18 + 0.36 * j as f64 / (n - 1.0)
                            } else {
                                0.0
                            };
                            EmptyElement::at((x + dx, y))
                                + Circle::new((0, 0), 3, WHITE.filled())
                                + Circle::new((0, 0), 3, BLACK.stroke_width(1))
                        },
                    ))
                    .dr()?;
                let top = if v.len() > 1 { m + s } else { *m };
                let top = v
                    .iter()
                    .copied()
                    .filter(|y| y.is_finite())
                    .fold(top, f64::max);
                chart
                    .draw_series(std::iter::once(
                        EmptyElement::at((x, top))
                            + Text::new(
                                format!("{m:.1}"),
                                (0, -6),
                                font(SMALL).pos(Pos::new(HPos::Center, VPos::Bottom)),
                            ),
                    ))
                    .dr()?;
            }
        }
        let mut entries: Vec<(String, RGBColor, Mark)> = methods
            .iter()
            .zip(&colours)
            .map(|(m, c)| {
                let seeds =
                    super::distinct(self.rows.iter().filter(|r| &r.method == m).map(|r| r.seed))
                        .len();
                (
                    format!("{m} ({seeds} seed{})", if seeds == 1 { "" } else { "s" }),
                    *c,
                    Mark::Box,
                )
            })
            .collect();
        entries.push(("recall ceiling".into(), RGBColor(90, 90, 90), Mark::Dashed));
        legend(
            &side.margin(50, 0, 0, 0),
            Some("bar: mean; whisker: ± s.d.; dots: seeds"),
            &entries,
        )
    }
}
