//! `pr_curve.png`: precision against recall of the known complex pairs when the top 1 … 20 % of all
//! gene-pair similarities are called related, with the 1, 5, 10 and 20 % points marked and labelled and
//! the chance precision (the related fraction of all pairs) as a dashed line. Data: `pr_curve.tsv`.
use super::{font, legend, DrawResult, Figure, Mark, AXIS, PALETTE};
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// One line of pr_curve.tsv.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PrRow {
    pub top_percent: u32,
    /// The smallest similarity counted as "above".
    pub threshold: f64,
    pub n_above: usize,
    pub related_above: usize,
    pub precision: f64,
    pub recall: f64,
    /// All gene pairs (the null) and the related pairs among them: chance precision is their ratio.
    pub null_pairs: usize,
    pub related_pairs: usize,
}

/// The figure.
#[derive(Clone, Debug)]
pub struct PrCurve {
    pub title: String,
    pub rows: Vec<PrRow>,
}

/// The points labelled with their top-k %.
const LABELLED: [u32; 4] = [1, 5, 10, 20];

impl PrCurve {
    fn chance(&self) -> Option<f64> {
        let r = self.rows.first()?;
        (r.null_pairs > 0).then(|| r.related_pairs as f64 / r.null_pairs as f64)
    }
}

impl Figure for PrCurve {
    fn size(&self) -> (u32, u32) {
        (760, 480)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let body = super::titled(root, &self.title)?;
        let (plot, side) = body.split_horizontally(560);
        let pts: Vec<&PrRow> = self
            .rows
            .iter()
            .filter(|r| r.precision.is_finite() && r.recall.is_finite())
            .collect();
        if pts.is_empty() {
            return super::empty_note(&plot, "no related pair was profiled: no curve");
        }
        let chance = self.chance();
        let ymax = pts
            .iter()
            .map(|r| r.precision)
            .chain(chance)
            .fold(0.0f64, f64::max);
        // Headroom for the labels above the points.
        let ymax = (ymax * 1.18).clamp(1e-3, 1.0);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(62)
            .build_cartesian_2d(0f64..1f64, 0f64..ymax)
            .dr()?;
        super::mesh(&mut chart.configure_mesh(), AXIS)
            .x_desc("recall (fraction of related pairs called)")
            .y_desc("precision (fraction of called pairs related)")
            .x_label_formatter(&|v| super::tick(*v, 1))
            .y_label_formatter(&|v| super::tick(*v, 2))
            .draw()
            .dr()?;
        let colour = PALETTE[0];
        if let Some(c) = chance {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, c), (1.0, c)],
                    6,
                    4,
                    RGBColor(120, 120, 120).stroke_width(2),
                ))
                .dr()?;
        }
        let line: Vec<(f64, f64)> = pts.iter().map(|r| (r.recall, r.precision)).collect();
        chart
            .draw_series(super::segments(&line, colour.stroke_width(2)))
            .dr()?;
        chart
            .draw_series(
                pts.iter()
                    .map(|r| Circle::new((r.recall, r.precision), 3, colour.filled())),
            )
            .dr()?;
        // Each label goes where it covers the least of the curve: above-right first (the curve usually
        // falls to the right), else below-right, above-left, below-left.
        let px: Vec<(i32, i32)> = pts
            .iter()
            .map(|r| chart.backend_coord(&(r.recall, r.precision)))
            .collect();
        let mut samples = Vec::new();
        for w in px.windows(2) {
            for t in 0..=20 {
                let f = f64::from(t) / 20.0;
                samples.push((
                    f64::from(w[0].0) + f * f64::from(w[1].0 - w[0].0),
                    f64::from(w[0].1) + f * f64::from(w[1].1 - w[0].1),
                ));
            }
        }
        let style = font(super::SMALL);
        for (r, &(x, y)) in pts.iter().zip(&px) {
            if !LABELLED.contains(&r.top_percent) {
                continue;
            }
            let label = format!("top {} %", r.top_percent);
            let (tw, th) = root.estimate_text_size(&label, &style).dr()?;
            let (tw, th) = (i32::try_from(tw)?, i32::try_from(th)?);
            let candidates = [(7, -th - 6), (7, 6), (-tw - 7, -th - 6), (-tw - 7, 6)];
            let covered = |&(dx, dy): &(i32, i32)| {
                let (x0, y0) = (f64::from(x + dx - 2), f64::from(y + dy - 2));
                let (x1, y1) = (x0 + f64::from(tw + 4), y0 + f64::from(th + 4));
                samples
                    .iter()
                    .filter(|s| s.0 >= x0 && s.0 <= x1 && s.1 >= y0 && s.1 <= y1)
                    .count()
            };
            let best = candidates
                .iter()
                .min_by_key(|c| covered(c))
                .copied()
                .unwrap_or(candidates[0]);
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((r.recall, r.precision))
                        + Circle::new((0, 0), 5, colour.stroke_width(2))
                        + Text::new(label, best, style.clone()),
                ))
                .dr()?;
        }
        let mut entries = vec![("precision, recall".to_string(), colour, Mark::Line)];
        if let Some(c) = chance {
            entries.push((
                format!("chance ({:.2} %)", 100.0 * c),
                RGBColor(120, 120, 120),
                Mark::Dashed,
            ));
        }
        legend(&side.margin(40, 0, 0, 0), None, &entries)
    }
}
