//! `pca.png`: the consensus gene profiles projected on their first two principal components, coloured
//! by complex (the eight largest among the profiled genes; the rest grey), so a reader sees whether
//! members of one complex land together. PCA rather than UMAP: no heavy dependency, and the axes mean
//! something (their explained variance is on the labels). Data: `pca.tsv`.
use super::{legend, DrawResult, Figure, Mark, AXIS, PALETTE};
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One gene of pca.tsv.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PcaRow {
    pub gene: String,
    /// The gene's first complex in the complexes file; empty when it is in none.
    pub complex: String,
    pub pc1: f64,
    pub pc2: f64,
    /// Fractions of the total variance on PC1 and PC2 (the same on every line).
    pub pc1_explained: f64,
    pub pc2_explained: f64,
}

/// The first two principal components of the rows of `x` (n × d, row-major): per row (pc1, pc2), and
/// the explained variance fractions. Block power iteration on the centred data (deterministic start),
/// enough for a picture; n < 2 or zero variance gives zeros.
pub fn pca2(x: &[f64], n: usize, d: usize) -> (Vec<(f64, f64)>, (f64, f64)) {
    if n < 2 || d == 0 || x.len() != n * d {
        return (vec![(0.0, 0.0); n], (0.0, 0.0));
    }
    let mut mean = vec![0.0; d];
    for r in x.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n as f64;
        }
    }
    let c: Vec<f64> = x
        .chunks_exact(d)
        .flat_map(|r| r.iter().zip(&mean).map(|(v, m)| v - m))
        .collect();
    let total: f64 = c.iter().map(|v| v * v).sum();
    if total <= 0.0 {
        return (vec![(0.0, 0.0); n], (0.0, 0.0));
    }
    // Xᵀ X v without forming Xᵀ X.
    let apply = |v: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; d];
        for r in c.chunks_exact(d) {
            let s: f64 = r.iter().zip(v).map(|(a, b)| a * b).sum();
            for (o, a) in out.iter_mut().zip(r) {
                *o += s * a;
            }
        }
        out
    };
    let norm = |v: &mut [f64]| {
        let s = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if s > 0.0 {
            v.iter_mut().for_each(|a| *a /= s);
        }
    };
    let mut v1: Vec<f64> = (0..d).map(|k| 1.0 + (k % 7) as f64 * 0.1).collect();
    let mut v2: Vec<f64> = (0..d)
        .map(|k| if k % 2 == 0 { 1.0 } else { -0.7 })
        .collect();
    for _ in 0..300 {
        v1 = apply(&v1);
        norm(&mut v1);
        v2 = apply(&v2);
        let p: f64 = v2.iter().zip(&v1).map(|(a, b)| a * b).sum();
        v2.iter_mut().zip(&v1).for_each(|(a, b)| *a -= p * b);
        norm(&mut v2);
    }
    let proj: Vec<(f64, f64)> = c
        .chunks_exact(d)
        .map(|r| {
            let dot = |v: &[f64]| r.iter().zip(v).map(|(a, b)| a * b).sum::<f64>();
            (dot(&v1), dot(&v2))
        })
        .collect();
    let var = |k: usize| {
        proj.iter()
            .map(|p| if k == 0 { p.0 * p.0 } else { p.1 * p.1 })
            .sum::<f64>()
            / total
    };
    let (e1, e2) = (var(0), var(1));
    (proj, (e1, e2))
}

/// The figure.
#[derive(Clone, Debug)]
pub struct PcaScatter {
    pub title: String,
    pub rows: Vec<PcaRow>,
}

/// Complexes given their own colour (largest first).
const COLOURED: usize = 8;
const OTHER: RGBColor = RGBColor(170, 170, 170);
const NONE: RGBColor = RGBColor(215, 215, 215);

impl PcaScatter {
    /// (complex, count) of the coloured complexes, largest first (ties by name).
    fn top_complexes(&self) -> Vec<(&str, usize)> {
        let mut n: HashMap<&str, usize> = HashMap::new();
        for r in self.rows.iter().filter(|r| !r.complex.is_empty()) {
            *n.entry(r.complex.as_str()).or_default() += 1;
        }
        let mut v: Vec<(&str, usize)> = n.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(COLOURED);
        v
    }
}

impl Figure for PcaScatter {
    fn size(&self) -> (u32, u32) {
        (900, 560)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let body = super::titled(root, &self.title)?;
        let (plot, side) = body.split_horizontally(600);
        if self.rows.len() < 2 {
            return super::empty_note(&plot, "fewer than two gene profiles");
        }
        let (x0, x1) = super::padded_range(self.rows.iter().map(|r| r.pc1), 0.05, (-1.0, 1.0));
        let (y0, y1) = super::padded_range(self.rows.iter().map(|r| r.pc2), 0.05, (-1.0, 1.0));
        let (e1, e2) = (self.rows[0].pc1_explained, self.rows[0].pc2_explained);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(62)
            .build_cartesian_2d(x0..x1, y0..y1)
            .dr()?;
        super::mesh(&mut chart.configure_mesh(), AXIS)
            .x_desc(format!("PC1 ({:.1} % of variance)", 100.0 * e1))
            .y_desc(format!("PC2 ({:.1} % of variance)", 100.0 * e2))
            .x_label_formatter(&|v| super::tick(*v, 2))
            .y_label_formatter(&|v| super::tick(*v, 2))
            .draw()
            .dr()?;
        let top = self.top_complexes();
        let colours: Vec<RGBColor> = PALETTE
            .iter()
            .copied()
            .filter(|c| *c != PALETTE[7])
            .take(COLOURED)
            .collect();
        let colour_of = |r: &PcaRow| -> (RGBColor, u8) {
            if r.complex.is_empty() {
                return (NONE, 0);
            }
            match top.iter().position(|t| t.0 == r.complex) {
                Some(k) => (colours[k % colours.len()], 2),
                None => (OTHER, 1),
            }
        };
        // Grey layers first, so the coloured complexes are drawn on top.
        for layer in 0..3u8 {
            chart
                .draw_series(self.rows.iter().filter_map(|r| {
                    let (c, l) = colour_of(r);
                    (l == layer).then(|| {
                        Circle::new((r.pc1, r.pc2), if layer == 2 { 4 } else { 3 }, c.filled())
                    })
                }))
                .dr()?;
        }
        let mut entries: Vec<(String, RGBColor, Mark)> = top
            .iter()
            .enumerate()
            .map(|(k, (name, n))| {
                let mut s: String = name.chars().take(24).collect();
                if name.chars().count() > 24 {
                    s.push('…');
                }
                (format!("{s} ({n})"), colours[k % colours.len()], Mark::Dot)
            })
            .collect();
        let other = self.rows.iter().filter(|r| colour_of(r).1 == 1).count();
        let none = self.rows.iter().filter(|r| r.complex.is_empty()).count();
        if other > 0 {
            entries.push((format!("other complexes ({other})"), OTHER, Mark::Dot));
        }
        if none > 0 {
            entries.push((format!("in no known complex ({none})"), NONE, Mark::Dot));
        }
        legend(&side.margin(30, 0, 0, 0), Some("complex (genes)"), &entries)
    }
}

#[cfg(test)]
mod tests {
    use super::pca2;

    #[test]
    fn pca_finds_the_dominant_axes() {
        // Points on a line along (1, 1, 0) with a little spread along (0, 0, 1).
        let mut x = Vec::new();
        for k in 0..50 {
            let t = k as f64 - 24.5;
            x.extend([t, t, 0.1 * (k % 5) as f64 - 0.2]);
        }
        let (p, (e1, e2)) = pca2(&x, 50, 3);
        assert!(e1 > 0.99 && e2 > 0.0 && e1 + e2 <= 1.0 + 1e-12, "{e1} {e2}");
        // PC1 is the line coordinate up to sign, √2 · t (the small z spread, slightly correlated with t,
        // tilts it a little).
        let s = -p[0].0.signum();
        for (k, q) in p.iter().enumerate() {
            let t = k as f64 - 24.5;
            assert!((s * q.0 - 2f64.sqrt() * t).abs() < 1e-2, "{k}: {q:?}");
        }
    }
}
