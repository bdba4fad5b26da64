//! Figures of the eval, experiment and demo reports, drawn with `plotters` (bitmap and SVG backends).
//!
//! Key decisions:
//! - Text is rasterised by `ab_glyph` from DejaVu Sans embedded in the binary (`assets/fonts`, with its
//!   licence), registered once as plotters' `sans-serif`: no system font or fontconfig, so CI and a fresh
//!   laptop render the same pixels. SVG files name the same family and keep text as text.
//! - PNG is drawn into an RGB buffer and encoded with the `image` crate already used by the project
//!   (plotters' own encoder would pull a second `image` version with JPEG).
//! - Every figure is a plain data type with its TSV (`util::tsv`), so `setdino report DIR` redraws it from
//!   the saved numbers without recomputing anything ([`regen`]).
//! - Legends sit in their own strip beside the plot area, never over the data; each method has one
//!   colour across every figure ([`method_colour`]).
pub mod adjacency;
pub mod bars;
pub mod curves;
pub mod hist;
pub mod pr;
pub mod regen;
pub mod scatter;
pub mod text;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The embedded figure font (DejaVu Sans, Bitstream Vera licence: assets/fonts/LICENSE-DejaVu.txt).
pub(crate) static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The family every figure asks for.
pub const FAMILY: &str = "sans-serif";

fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    anyhow::ensure!(ok, "the embedded figure font could not be parsed");
    Ok(())
}

/// Which files a figure is written as: always PNG, SVG as well when asked (`--svg`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Formats {
    pub svg: bool,
}

/// A figure: its pixel size and how it draws itself on any plotters backend.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

/// Plotters' drawing errors (generic over the backend) as anyhow errors.
pub trait DrawResult<T> {
    fn dr(self) -> Result<T>;
}

impl<T, E: std::fmt::Display> DrawResult<T> for std::result::Result<T, E> {
    fn dr(self) -> Result<T> {
        self.map_err(|e| anyhow!("drawing: {e}"))
    }
}

/// Supersampling factor of the bitmaps: drawn at 3× and box-filtered down.
const SUPERSAMPLE: u32 = 3;

/// Renders `fig` as RGB pixels (row-major, 3 bytes per pixel), anti-aliased by supersampling.
pub fn render_rgb<F: Figure>(fig: &F) -> Result<image::RgbImage> {
    register_font()?;
    let (w, h) = fig.size();
    let s = SUPERSAMPLE;
    let (bw, bh) = (w * s, h * s);
    let n = usize::try_from(u64::from(bw) * u64::from(bh) * 3).context("figure too large")?;
    let mut buf = vec![0u8; n];
    {
        let root =
            text::Crisp::new(BitMapBackend::with_buffer(&mut buf, (bw, bh)), s).into_drawing_area();
        root.fill(&WHITE).dr()?;
        fig.draw(&root)?;
        root.present().dr()?;
    }
    let big = image::RgbImage::from_raw(bw, bh, buf).context("figure buffer has the wrong size")?;
    let area = f64::from(s * s);
    Ok(image::RgbImage::from_fn(w, h, |x, y| {
        let mut acc = [0u32; 3];
        for dy in 0..s {
            for dx in 0..s {
                let p = big.get_pixel(x * s + dx, y * s + dy);
                for c in 0..3 {
                    acc[c] += u32::from(p[c]);
                }
            }
        }
        image::Rgb(acc.map(|v| (f64::from(v) / area).round() as u8))
    }))
}

/// Renders `fig` as an SVG document.
pub fn render_svg<F: Figure>(fig: &F) -> Result<String> {
    register_font()?;
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, fig.size()).into_drawing_area();
        root.fill(&WHITE).dr()?;
        fig.draw(&root)?;
        root.present().dr()?;
    }
    Ok(s)
}

/// Writes `fig` to `stem.png` (and `stem.svg` with `formats.svg`); returns the files written.
pub fn save<F: Figure>(fig: &F, stem: &Path, formats: Formats) -> Result<Vec<PathBuf>> {
    let png = stem.with_extension("png");
    let img = render_rgb(fig)?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .with_context(|| format!("encoding {}", png.display()))?;
    crate::util::atomic::write_atomic(&png, bytes.get_ref())?;
    let mut out = vec![png];
    if formats.svg {
        let svg = stem.with_extension("svg");
        crate::util::atomic::write_atomic(&svg, render_svg(fig)?.as_bytes())?;
        out.push(svg);
    }
    Ok(out)
}

// ---- shared style ----

/// Title, axis-description, tick and legend font sizes (pixels).
pub const TITLE: u32 = 20;
pub const AXIS: u32 = 15;
pub const TICK: u32 = 13;
pub const SMALL: u32 = 12;

pub fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

/// Categorical colours (Tableau 10 order) for series that are not one of the known methods.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of a method in every figure: DINO blue, Set-DINO red, the random-init control grey,
/// engineered features brown; anything else takes the palette by its index among the unknown ones.
pub fn method_colour(label: &str, index: usize) -> RGBColor {
    let l = label.to_ascii_lowercase();
    if l.contains("set-dino") || l.contains("setdino") {
        PALETTE[1]
    } else if l.contains("dino") {
        PALETTE[0]
    } else if l.contains("random") {
        PALETTE[7]
    } else if l.contains("engineered") {
        PALETTE[5]
    } else {
        [
            PALETTE[2], PALETTE[3], PALETTE[4], PALETTE[6], PALETTE[8], PALETTE[9],
        ][index % 6]
    }
}

/// Colours for a list of method labels, known methods first by name, the rest in order.
pub fn method_colours(labels: &[String]) -> Vec<RGBColor> {
    let mut unknown = 0;
    labels
        .iter()
        .map(|l| {
            let c = method_colour(l, unknown);
            if !["dino", "random", "engineered"]
                .iter()
                .any(|k| l.to_ascii_lowercase().contains(k))
            {
                unknown += 1;
            }
            c
        })
        .collect()
}

/// How a legend entry is marked.
#[derive(Clone, Copy, Debug)]
pub enum Mark {
    Line,
    Dashed,
    Dot,
    Box,
}

/// A legend drawn in its own area (a strip beside the plot): one row per entry, top to bottom.
pub fn legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: Option<&str>,
    entries: &[(String, RGBColor, Mark)],
) -> Result<()> {
    let row = 20i32;
    let mut y = 8i32;
    if let Some(t) = title {
        area.draw_text(t, &font(SMALL), (8, y)).dr()?;
        y += row;
    }
    for (label, colour, mark) in entries {
        let cy = y + 7;
        match mark {
            Mark::Line => area
                .draw(&PathElement::new(
                    vec![(8, cy), (30, cy)],
                    colour.stroke_width(2),
                ))
                .dr()?,
            Mark::Dashed => {
                for x0 in [8, 17, 26] {
                    area.draw(&PathElement::new(
                        vec![(x0, cy), (x0 + 5, cy)],
                        colour.stroke_width(2),
                    ))
                    .dr()?;
                }
            }
            Mark::Dot => area.draw(&Circle::new((19, cy), 4, colour.filled())).dr()?,
            Mark::Box => area
                .draw(&Rectangle::new(
                    [(10, cy - 6), (28, cy + 6)],
                    colour.filled(),
                ))
                .dr()?,
        }
        area.draw_text(label, &font(SMALL), (36, y)).dr()?;
        y += row;
    }
    Ok(())
}

/// A centred note on an area, for a figure without data ("no related pairs were profiled").
pub fn empty_note<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let style = font(AXIS).pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Center,
        plotters::style::text_anchor::VPos::Center,
    ));
    let x = i32::try_from(w / 2).unwrap_or(0);
    let y = i32::try_from(h / 2).unwrap_or(0);
    area.draw_text(text, &style, (x, y)).dr()
}

/// The mesh every chart shares: tick and axis-description fonts, major grid lines only, light grey.
pub fn mesh<'m, 'a, 'b, X, Y, DB>(
    m: &'m mut plotters::chart::MeshStyle<'a, 'b, X, Y, DB>,
    axis: u32,
) -> &'m mut plotters::chart::MeshStyle<'a, 'b, X, Y, DB>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
    DB: DrawingBackend,
{
    m.label_style(font(TICK))
        .axis_desc_style(font(axis))
        .max_light_lines(0)
        .bold_line_style(RGBColor(225, 225, 225))
}

/// The distinct values of `items` in first-appearance order (methods as the rows list them, seeds).
pub fn distinct<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in items {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// A polyline as separate segments. plotters strokes a wide polyline as one polygon with mitred joins,
/// and a sharp reversal (a noisy loss curve) then shoots a spike far outside the data; segments have
/// no joins.
pub fn segments(
    pts: &[(f64, f64)],
    style: ShapeStyle,
) -> impl Iterator<Item = PathElement<(f64, f64)>> + '_ {
    pts.windows(2)
        .map(move |w| PathElement::new(vec![w[0], w[1]], style))
}

/// A tick label with `digits` decimals; never "-0.00".
pub fn tick(v: f64, digits: usize) -> String {
    let s = format!("{v:.digits$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// A range covering `values` (finite ones) with `pad` of its width on each side; `fallback` when there
/// is none or it is empty.
pub fn padded_range(
    values: impl Iterator<Item = f64>,
    pad: f64,
    fallback: (f64, f64),
) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return fallback;
    }
    let w = if hi > lo { hi - lo } else { lo.abs().max(1e-3) };
    (lo - pad * w, hi + pad * w)
}

/// Draws a title line centred at the top of `root` and returns the area below it.
pub fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>> {
    root.titled(title, font(TITLE)).dr()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_have_no_negative_zero() {
        assert_eq!(super::tick(-0.001, 2), "0.00");
        assert_eq!(super::tick(-0.01, 2), "-0.01");
        assert_eq!(super::tick(-0.4, 0), "0");
        assert_eq!(super::tick(12.345, 1), "12.3");
    }
}
