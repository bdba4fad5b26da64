//! PNG figures of the report: the precision–recall curve, the similarity histograms (related pairs vs
//! the null) and the adjacency picture (related pairs next to the predicted top 5 %, the paper's Fig. 2c).
//!
//! Key decision: the `image` crate (PNG encoder only, default features off) plus the public-domain
//! `font8x8` bitmap font, drawn with a few primitives here. That is a small, pure-Rust build with no
//! font files or system libraries; `plotters` would need a TrueType font shipped or found at run time
//! for any text. The figures are simple line/step/matrix plots, which is all the report needs.
use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

type C = Rgb<u8>;
const WHITE: C = Rgb([255, 255, 255]);
const BLACK: C = Rgb([0, 0, 0]);
const GREY: C = Rgb([150, 150, 150]);
const LIGHT: C = Rgb([225, 225, 225]);
const RED: C = Rgb([200, 40, 40]);
const BLUE: C = Rgb([40, 90, 200]);

struct Canvas {
    img: RgbImage,
}

impl Canvas {
    fn new(w: u32, h: u32) -> Self {
        Canvas {
            img: RgbImage::from_pixel(w, h, WHITE),
        }
    }
    fn px(&mut self, x: i64, y: i64, c: C) {
        if x >= 0 && y >= 0 && (x as u32) < self.img.width() && (y as u32) < self.img.height() {
            self.img.put_pixel(x as u32, y as u32, c);
        }
    }
    fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: C) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.px(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: C) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.px(xx, yy, c);
            }
        }
    }
    /// 8×8 glyphs (ASCII), scaled by `s`.
    fn text(&mut self, x: i64, y: i64, t: &str, c: C, s: i64) {
        for (k, ch) in t.chars().enumerate() {
            let g = font8x8::legacy::BASIC_LEGACY[(ch as usize).min(127)];
            for (row, bits) in g.iter().enumerate() {
                for col in 0..8 {
                    if bits >> col & 1 == 1 {
                        self.rect(x + (k as i64 * 8 + col) * s, y + row as i64 * s, s, s, c);
                    }
                }
            }
        }
    }
    fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        self.img
            .write_to(&mut bytes, image::ImageFormat::Png)
            .with_context(|| format!("encoding {}", path.display()))?;
        crate::util::atomic::write_atomic(path, bytes.get_ref())
    }
}

/// A plotting frame: data ranges mapped to a pixel rectangle, with axes, ticks and labels.
struct Frame {
    left: i64,
    top: i64,
    w: i64,
    h: i64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn map(&self, x: f64, y: f64) -> (i64, i64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        (
            self.left + (fx * self.w as f64).round() as i64,
            self.top + self.h - (fy * self.h as f64).round() as i64,
        )
    }
    fn draw(&self, cv: &mut Canvas, title: &str, xlabel: &str, ylabel: &str, ticks: usize) {
        for t in 0..=ticks {
            let f = t as f64 / ticks as f64;
            let xv = self.x.0 + f * (self.x.1 - self.x.0);
            let yv = self.y.0 + f * (self.y.1 - self.y.0);
            let (px, _) = self.map(xv, self.y.0);
            let (_, py) = self.map(self.x.0, yv);
            cv.line(px, self.top, px, self.top + self.h, LIGHT);
            cv.line(self.left, py, self.left + self.w, py, LIGHT);
            let step = (self.x.1 - self.x.0) / ticks as f64;
            let xl = fmt_tick_step(xv, step);
            cv.text(
                px - 4 * xl.len() as i64,
                self.top + self.h + 6,
                &xl,
                BLACK,
                1,
            );
            let yl = fmt_tick_step(yv, (self.y.1 - self.y.0) / ticks as f64);
            cv.text(self.left - 8 * yl.len() as i64 - 6, py - 4, &yl, BLACK, 1);
        }
        let (l, t, w, h) = (self.left, self.top, self.w, self.h);
        cv.line(l, t, l + w, t, BLACK);
        cv.line(l, t + h, l + w, t + h, BLACK);
        cv.line(l, t, l, t + h, BLACK);
        cv.line(l + w, t, l + w, t + h, BLACK);
        cv.text(l, t - 24, title, BLACK, 2);
        cv.text(
            l + w / 2 - 4 * xlabel.len() as i64,
            t + h + 22,
            xlabel,
            BLACK,
            1,
        );
        cv.text(4, t - 10, ylabel, BLACK, 1);
    }
}

/// A tick label with as many decimals as the tick spacing needs (at least 1, at most 4 beyond it).
fn fmt_tick_step(v: f64, step: f64) -> String {
    let dec = if step.is_finite() && step > 0.0 {
        ((-step.log10()).ceil() + 1.0).clamp(1.0, 6.0) as usize
    } else {
        2
    };
    let s = format!("{v:.dec$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        return s.trim_start_matches('-').to_string();
    }
    s
}

/// pr_curve.png: precision (y) against recall (x) at the top 1 … 20 % of the null; every fifth point
/// is labelled with its percentage. points: (top_percent, precision, recall).
pub fn pr_curve_png(path: &Path, points: &[(u32, f64, f64)]) -> Result<()> {
    let mut cv = Canvas::new(640, 480);
    let ymax = points
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let xmax = points
        .iter()
        .map(|p| p.2)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let fr = Frame {
        left: 70,
        top: 50,
        w: 540,
        h: 370,
        x: (0.0, (xmax * 1.1).clamp(0.05, 1.0)),
        y: (0.0, (ymax * 1.1).clamp(0.01, 1.0)),
    };
    fr.draw(
        &mut cv,
        "precision-recall, top 1-20% of null",
        "recall",
        "precision",
        5,
    );
    let pts: Vec<(u32, i64, i64)> = points
        .iter()
        .filter(|p| p.1.is_finite() && p.2.is_finite())
        .map(|p| {
            let (x, y) = fr.map(p.2, p.1);
            (p.0, x, y)
        })
        .collect();
    for w in pts.windows(2) {
        cv.line(w[0].1, w[0].2, w[1].1, w[1].2, BLUE);
    }
    for &(pc, x, y) in &pts {
        cv.rect(x - 2, y - 2, 5, 5, BLUE);
        if pc % 5 == 0 || pc == 1 {
            cv.text(x + 5, y - 12, &format!("{pc}%"), BLACK, 1);
        }
    }
    cv.save(path)
}

/// similarity_hist.png: densities of the null (grey) and the related pairs (red) over cosine
/// similarity in [−1, 1]; hists are counts per equal-width bin.
pub fn histograms_png(path: &Path, null_hist: &[u64], related_hist: &[u64]) -> Result<()> {
    let mut cv = Canvas::new(640, 480);
    let bins = null_hist.len();
    let dens = |h: &[u64]| -> Vec<f64> {
        let t: u64 = h.iter().sum();
        h.iter()
            .map(|&c| {
                if t == 0 {
                    0.0
                } else {
                    c as f64 / t as f64 * bins as f64 / 2.0
                }
            })
            .collect()
    };
    let (dn, dr) = (dens(null_hist), dens(related_hist));
    let ymax = dn
        .iter()
        .chain(&dr)
        .fold(0.0f64, |a, &b| a.max(b))
        .max(1e-9)
        * 1.1;
    let fr = Frame {
        left: 70,
        top: 50,
        w: 540,
        h: 370,
        x: (-1.0, 1.0),
        y: (0.0, ymax),
    };
    fr.draw(
        &mut cv,
        "cosine similarity: related vs null",
        "cosine similarity",
        "density",
        4,
    );
    for (d, c) in [(&dn, GREY), (&dr, RED)] {
        let mut prev: Option<(i64, i64)> = None;
        for (b, &v) in d.iter().enumerate() {
            let x0 = -1.0 + 2.0 * b as f64 / bins as f64;
            let x1 = -1.0 + 2.0 * (b + 1) as f64 / bins as f64;
            let (a, y) = fr.map(x0, v);
            let (e, _) = fr.map(x1, v);
            if let Some((px, py)) = prev {
                cv.line(px, py, a, y, c);
            }
            cv.line(a, y, e, y, c);
            prev = Some((e, y));
        }
    }
    cv.rect(460, 60, 12, 3, GREY);
    cv.text(478, 56, "null", BLACK, 1);
    cv.rect(460, 76, 12, 3, RED);
    cv.text(478, 72, "related", BLACK, 1);
    cv.save(path)
}

/// adjacency.png: two m × m matrices side by side, related pairs (left) and pairs predicted in the top
/// 5 % of the null (right), genes in the given (complex) order. related, predicted: (m, m) row-major.
pub fn adjacency_png(path: &Path, related: &[bool], predicted: &[bool], m: usize) -> Result<()> {
    let cell = (480 / m.max(1)).clamp(1, 16) as i64;
    let side = cell * m as i64;
    let (w, h) = ((side * 2 + 60) as u32, (side + 60) as u32);
    let mut cv = Canvas::new(w.max(320), h.max(100));
    cv.text(20, 10, "related (CORUM)", BLACK, 1);
    cv.text(40 + side, 10, "predicted top 5%", BLACK, 1);
    for (panel, mat) in [related, predicted].into_iter().enumerate() {
        let x0 = 20 + panel as i64 * (side + 20);
        let y0 = 30;
        cv.rect(x0 - 1, y0 - 1, side + 2, side + 2, GREY);
        cv.rect(x0, y0, side, side, WHITE);
        for i in 0..m {
            for j in 0..m {
                if mat[i * m + j] {
                    cv.rect(
                        x0 + j as i64 * cell,
                        y0 + i as i64 * cell,
                        cell,
                        cell,
                        BLACK,
                    );
                }
            }
        }
    }
    cv.save(path)
}

/// One line of a panel: a legend label, a palette index (the same index = the same colour in every
/// panel) and its (x, y) points.
pub struct Series {
    pub label: String,
    pub colour: usize,
    pub points: Vec<(f64, f64)>,
}

/// One panel of [`panels_png`].
pub struct Panel {
    pub title: String,
    pub xlabel: String,
    pub ylabel: String,
    pub series: Vec<Series>,
}

/// Colours of [`Series::colour`]: blue, red, green, orange, purple, then repeating.
const PALETTE: [C; 5] = [
    BLUE,
    RED,
    Rgb([40, 150, 60]),
    Rgb([230, 140, 20]),
    Rgb([130, 60, 170]),
];

/// Line panels in a grid of two columns (e.g. training curves), each with its own axes; one legend
/// (label per colour, first occurrence) at the top. Non-finite points are skipped.
pub fn panels_png(path: &Path, panels: &[Panel]) -> Result<()> {
    let (pw, ph) = (480i64, 320i64);
    let rows = panels.len().div_ceil(2).max(1) as i64;
    let mut cv = Canvas::new((2 * pw) as u32, (rows * ph + 30) as u32);
    let mut legend: Vec<(usize, &str)> = Vec::new();
    for (k, p) in panels.iter().enumerate() {
        let (ox, oy) = ((k as i64 % 2) * pw, 30 + (k as i64 / 2) * ph);
        let pts = || {
            p.series
                .iter()
                .flat_map(|s| &s.points)
                .filter(|q| q.0.is_finite() && q.1.is_finite())
        };
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts() {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        let fr = Frame {
            left: ox + 70,
            top: oy + 58,
            w: pw - 100,
            h: ph - 100,
            x: (x0, x1),
            y: (y0 - pad, y1 + pad),
        };
        fr.draw(&mut cv, &p.title, &p.xlabel, "", 4);
        cv.text(ox + 70, oy + 46, &p.ylabel, GREY, 1);
        for s in &p.series {
            let c = PALETTE[s.colour % PALETTE.len()];
            let v: Vec<(i64, i64)> = s
                .points
                .iter()
                .filter(|q| q.0.is_finite() && q.1.is_finite())
                .map(|&(x, y)| fr.map(x, y))
                .collect();
            for w in v.windows(2) {
                cv.line(w[0].0, w[0].1, w[1].0, w[1].1, c);
            }
            if v.len() == 1 {
                cv.rect(v[0].0 - 2, v[0].1 - 2, 5, 5, c);
            }
            if !legend.iter().any(|l| l.0 == s.colour) {
                legend.push((s.colour, &s.label));
            }
        }
    }
    let mut x = 10;
    for (c, label) in legend {
        cv.rect(x, 12, 14, 4, PALETTE[c % PALETTE.len()]);
        cv.text(x + 20, 9, label, BLACK, 1);
        x += 40 + 8 * label.len() as i64;
    }
    cv.save(path)
}
