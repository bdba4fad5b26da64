//! `adjacency.png` (the paper's Fig. 2c): over the profiled genes in complex order, the known related
//! pairs (left) next to the pairs predicted related, the top 5 % of gene-pair similarities (right).
//! Blocks of genes placed by the same complex are outlined in both panels and named on the left (as
//! many names as fit without overlapping). Data: `adjacency_genes.tsv` (the order and each gene's
//! complex) and `adjacency.tsv` (every pair, i < j, that is related or predicted).
use super::{font, DrawResult, Figure, PALETTE, SMALL};
use anyhow::{ensure, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

/// One gene of the picture, in drawing order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GeneRow {
    pub index: usize,
    pub gene: String,
    /// The complex that placed the gene (its first in the complexes file).
    pub complex: String,
}

/// One marked pair (i < j, indices into the gene order).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PairRow {
    pub i: usize,
    pub j: usize,
    pub gene_i: String,
    pub gene_j: String,
    pub related: u8,
    pub predicted: u8,
}

/// The figure.
#[derive(Clone, Debug)]
pub struct Adjacency {
    pub title: String,
    pub genes: Vec<GeneRow>,
    pub pairs: Vec<PairRow>,
}

impl Adjacency {
    /// From the two full (m, m) row-major matrices and the gene order.
    pub fn from_matrices(
        title: String,
        genes: Vec<GeneRow>,
        related: &[bool],
        predicted: &[bool],
    ) -> Result<Self> {
        let m = genes.len();
        ensure!(
            related.len() == m * m && predicted.len() == m * m,
            "adjacency matrices must be {m} × {m}"
        );
        let mut pairs = Vec::new();
        for i in 0..m {
            for j in i + 1..m {
                let (r, p) = (related[i * m + j], predicted[i * m + j]);
                if r || p {
                    pairs.push(PairRow {
                        i,
                        j,
                        gene_i: genes[i].gene.clone(),
                        gene_j: genes[j].gene.clone(),
                        related: u8::from(r),
                        predicted: u8::from(p),
                    });
                }
            }
        }
        Ok(Adjacency {
            title,
            genes,
            pairs,
        })
    }

    /// Runs of genes with the same complex: (first index, end index, complex).
    fn blocks(&self) -> Vec<(usize, usize, &str)> {
        let mut out: Vec<(usize, usize, &str)> = Vec::new();
        for (k, g) in self.genes.iter().enumerate() {
            match out.last_mut() {
                Some(b) if b.2 == g.complex => b.1 = k + 1,
                _ => out.push((k, k + 1, g.complex.as_str())),
            }
        }
        out
    }
}

const LABELS: i32 = 190;
const RELATED: RGBColor = PALETTE[3];
const PREDICTED: RGBColor = PALETTE[0];

impl Figure for Adjacency {
    fn size(&self) -> (u32, u32) {
        (1120, 560)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let body = super::titled(root, &self.title)?;
        let m = self.genes.len();
        if m < 2 {
            return super::empty_note(&body, "fewer than two profiled genes in known complexes");
        }
        let (w, h) = body.dim_in_pixel();
        let (w, h) = (i32::try_from(w)?, i32::try_from(h)?);
        let gap = 40;
        let side = ((w - LABELS - gap - 20) / 2).min(h - 70).max(10);
        let top = 30;
        let cell = f64::from(side) / m as f64;
        let xs = [LABELS, LABELS + side + gap];
        let px = |x0: i32, k: usize| x0 + (k as f64 * cell).round() as i32;
        let frame = RGBColor(90, 90, 90);
        let n_rel = self.pairs.iter().filter(|p| p.related == 1).count();
        let n_pred = self.pairs.iter().filter(|p| p.predicted == 1).count();
        let captions = [
            format!("known related pairs ({n_rel})"),
            format!("predicted: top 5 % of similarities ({n_pred})"),
        ];
        let centre = Pos::new(HPos::Center, VPos::Top);
        let blocks = self.blocks();
        for (panel, &x0) in xs.iter().enumerate() {
            body.draw_text(
                &captions[panel],
                &font(SMALL + 1).pos(centre),
                (x0 + side / 2, 6),
            )
            .dr()?;
            for b in &blocks {
                let (a, e) = (b.0, b.1);
                body.draw(&Rectangle::new(
                    [(px(x0, a), top + px(0, a)), (px(x0, e), top + px(0, e))],
                    RGBColor(235, 235, 235).filled(),
                ))
                .dr()?;
            }
            let colour = if panel == 0 { RELATED } else { PREDICTED };
            for p in &self.pairs {
                let on = if panel == 0 { p.related } else { p.predicted } == 1;
                if !on {
                    continue;
                }
                for (r, c) in [(p.i, p.j), (p.j, p.i)] {
                    let (x, y) = (px(x0, c), top + px(0, r));
                    let (x1, y1) = (px(x0, c + 1).max(x + 1), (top + px(0, r + 1)).max(y + 1));
                    body.draw(&Rectangle::new([(x, y), (x1, y1)], colour.filled()))
                        .dr()?;
                }
            }
            body.draw(&Rectangle::new(
                [(x0, top), (x0 + side, top + side)],
                frame.stroke_width(1),
            ))
            .dr()?;
        }
        // Complex names at their blocks' centres, skipping any that would overlap the one above.
        let right = Pos::new(HPos::Right, VPos::Center);
        let mut last: Option<i32> = None;
        let line = i32::try_from(SMALL)? + 2;
        let mut shown = 0;
        for b in &blocks {
            let y = top + (px(0, b.0) + px(0, b.1)) / 2;
            if last.is_some_and(|l| y - l < line) {
                continue;
            }
            let mut name: String = b.2.chars().take(26).collect();
            if b.2.chars().count() > 26 {
                name.push('…');
            }
            body.draw_text(&name, &font(SMALL).pos(right), (LABELS - 8, y))
                .dr()?;
            last = Some(y);
            shown += 1;
        }
        body.draw_text(
            &format!(
                "{m} genes in complex order; shaded squares: {} complexes ({} named)",
                blocks.len(),
                shown
            ),
            &font(SMALL).pos(centre),
            (LABELS + side + gap / 2, top + side + 10),
        )
        .dr()?;
        Ok(())
    }
}
