//! `similarity_hist.png`: the distributions of gene-gene cosine similarity of all gene pairs (the null)
//! and of the known related pairs, as densities so the two are comparable whatever their counts.
//! Data: `similarity_hist.tsv` (bin edges, counts and densities).
use super::{legend, DrawResult, Figure, Mark, AXIS, PALETTE};
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// One bin of similarity_hist.tsv.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HistRow {
    pub bin_lo: f64,
    pub bin_hi: f64,
    pub null_count: u64,
    pub related_count: u64,
    /// count / (total × bin width): each distribution integrates to 1.
    pub null_density: f64,
    pub related_density: f64,
}

/// Bins of width 2/bins over [−1, 1] from the two count vectors of `eval::recall::histogram`.
pub fn rows(null: &[u64], related: &[u64]) -> Vec<HistRow> {
    let bins = null.len().max(1);
    let width = 2.0 / bins as f64;
    let (tn, tr) = (null.iter().sum::<u64>(), related.iter().sum::<u64>());
    let dens = |c: u64, t: u64| {
        if t == 0 {
            0.0
        } else {
            c as f64 / (t as f64 * width)
        }
    };
    (0..bins)
        .map(|b| {
            let (n, r) = (
                null.get(b).copied().unwrap_or(0),
                related.get(b).copied().unwrap_or(0),
            );
            HistRow {
                bin_lo: -1.0 + b as f64 * width,
                bin_hi: -1.0 + (b + 1) as f64 * width,
                null_count: n,
                related_count: r,
                null_density: dens(n, tn),
                related_density: dens(r, tr),
            }
        })
        .collect()
}

/// The figure.
#[derive(Clone, Debug)]
pub struct SimilarityHist {
    pub title: String,
    pub rows: Vec<HistRow>,
}

pub const NULL_COLOUR: RGBColor = RGBColor(120, 120, 120);
pub const RELATED_COLOUR: RGBColor = PALETTE[3];

impl Figure for SimilarityHist {
    fn size(&self) -> (u32, u32) {
        (760, 440)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let body = super::titled(root, &self.title)?;
        let (plot, side) = body.split_horizontally(540);
        let used: Vec<&HistRow> = self
            .rows
            .iter()
            .filter(|r| r.null_count + r.related_count > 0)
            .collect();
        if used.is_empty() {
            return super::empty_note(&plot, "no gene pairs");
        }
        let lo = used.iter().map(|r| r.bin_lo).fold(f64::INFINITY, f64::min);
        let hi = used
            .iter()
            .map(|r| r.bin_hi)
            .fold(f64::NEG_INFINITY, f64::max);
        let pad = 0.05 * (hi - lo);
        let (x0, x1) = ((lo - pad).max(-1.0), (hi + pad).min(1.0));
        let ymax = used
            .iter()
            .map(|r| r.null_density.max(r.related_density))
            .fold(0.0f64, f64::max)
            * 1.08;
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(62)
            .build_cartesian_2d(x0..x1, 0f64..ymax.max(1e-9))
            .dr()?;
        super::mesh(&mut chart.configure_mesh(), AXIS)
            .x_desc("cosine similarity of two genes' consensus profiles")
            .y_desc("density (per unit of cosine)")
            .x_label_formatter(&|v| super::tick(*v, 2))
            .y_label_formatter(&|v| super::tick(*v, 1))
            .draw()
            .dr()?;
        for (colour, get) in [
            (
                NULL_COLOUR,
                (|r: &HistRow| r.null_density) as fn(&HistRow) -> f64,
            ),
            (RELATED_COLOUR, |r: &HistRow| r.related_density),
        ] {
            chart
                .draw_series(self.rows.iter().filter(|r| get(r) > 0.0).map(|r| {
                    Rectangle::new(
                        [(r.bin_lo, 0.0), (r.bin_hi, get(r))],
                        colour.mix(0.3).filled(),
                    )
                }))
                .dr()?;
            // The outline as a step line over every bin in range.
            let mut path = Vec::new();
            for r in self.rows.iter().filter(|r| r.bin_hi > x0 && r.bin_lo < x1) {
                path.push((r.bin_lo, get(r)));
                path.push((r.bin_hi, get(r)));
            }
            chart
                .draw_series(super::segments(&path, colour.stroke_width(2)))
                .dr()?;
        }
        let (tn, tr) = (
            self.rows.iter().map(|r| r.null_count).sum::<u64>(),
            self.rows.iter().map(|r| r.related_count).sum::<u64>(),
        );
        legend(
            &side.margin(40, 0, 0, 0),
            None,
            &[
                (format!("all gene pairs (n = {tn})"), NULL_COLOUR, Mark::Box),
                (
                    format!("known related pairs (n = {tr})"),
                    RELATED_COLOUR,
                    Mark::Box,
                ),
            ],
        )
    }
}
