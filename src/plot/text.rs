//! The bitmap figures' backend: a wrapper that supersamples everything plotters draws (anti-aliased
//! lines and markers after the box filter in `plot::render_rgb`), and lays out and rasterises text
//! itself with `ab_glyph` from the embedded font.
//!
//! Why: plotters' own ab_glyph path rounds each glyph's pen position down to a pixel and drops the
//! glyphs' side bearings, so letters sit unevenly ("T raining"). Here pen positions stay fractional,
//! each glyph is placed at its outline's real bounds, and the kerning of the font applies; the layout
//! box (what anchors and axis-label areas are sized from) is the same advance width, ascent to descent.
use super::FONT;
use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use plotters::prelude::DrawingBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

fn font() -> Option<FontRef<'static>> {
    FontRef::try_from_slice(FONT).ok()
}

/// Glyph placements of `text` at `size`: (glyph, pen x), the total advance, ascent and descent.
struct Line {
    glyphs: Vec<(ab_glyph::GlyphId, f32)>,
    width: f32,
    ascent: f32,
    descent: f32,
    scale: PxScale,
}

fn layout(f: &FontRef<'static>, text: &str, size: f64) -> Line {
    // plotters' convention (its own ab_glyph path): `size` is the font's ascent-to-descent height.
    let scale = PxScale::from((size as f32).max(1.0));
    let sf = f.as_scaled(scale);
    let mut pen = 0.0f32;
    let mut prev = None;
    let mut glyphs = Vec::with_capacity(text.len());
    for c in text.chars() {
        let id = sf.glyph_id(c);
        if let Some(p) = prev {
            pen += sf.kern(p, id);
        }
        glyphs.push((id, pen));
        pen += sf.h_advance(id);
        prev = Some(id);
    }
    Line {
        glyphs,
        width: pen,
        ascent: sf.ascent(),
        descent: sf.descent(),
        scale,
    }
}

/// A style with its stroke scaled by the supersampling factor.
struct Scaled {
    color: BackendColor,
    width: u32,
}

impl BackendStyle for Scaled {
    fn color(&self) -> BackendColor {
        self.color
    }
    fn stroke_width(&self) -> u32 {
        self.width
    }
}

/// A bitmap backend that supersamples: plotters draws on a logical canvas of `inner`'s size / `scale`,
/// every coordinate and stroke is scaled up, and the caller box-filters the buffer back down, so lines,
/// circles and polygons come out anti-aliased (plotters' bitmap rasteriser does not anti-alias them).
/// Text is laid out by [`layout`] (see the module note) at the scaled size.
pub struct Crisp<B> {
    pub inner: B,
    scale: i32,
    font: Option<FontRef<'static>>,
}

impl<B: DrawingBackend> Crisp<B> {
    /// `inner` must be `scale` times the logical size in both directions.
    pub fn new(inner: B, scale: u32) -> Self {
        Crisp {
            inner,
            scale: i32::try_from(scale.max(1)).unwrap_or(1),
            font: font(),
        }
    }
    /// A logical point → the centre of its block of inner pixels.
    fn pt(&self, p: BackendCoord) -> BackendCoord {
        (
            p.0 * self.scale + self.scale / 2,
            p.1 * self.scale + self.scale / 2,
        )
    }
    fn style<S: BackendStyle>(&self, s: &S) -> Scaled {
        Scaled {
            color: s.color(),
            width: s.stroke_width() * self.scale.unsigned_abs(),
        }
    }
}

impl<B: DrawingBackend> DrawingBackend for Crisp<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        let (w, h) = self.inner.get_size();
        let s = self.scale.unsigned_abs();
        (w / s, h / s)
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let (x, y) = (point.0 * self.scale, point.1 * self.scale);
        let e = self.scale - 1;
        self.inner.draw_rect((x, y), (x + e, y + e), &color, true)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let st = self.style(style);
        if from.0 == to.0 || from.1 == to.1 {
            // Axis-aligned (grid lines, frames): a filled block keeps them crisp and exactly as wide.
            let w = i32::try_from(st.width).unwrap_or(1);
            let (a, b) = (self.pt(from), self.pt(to));
            let (h0, h1) = (-(w / 2), (w - 1) - w / 2);
            let ul = (a.0.min(b.0) + h0, a.1.min(b.1) + h0);
            let br = (a.0.max(b.0) + h1, a.1.max(b.1) + h1);
            return self.inner.draw_rect(ul, br, &st.color, true);
        }
        let (a, b) = (self.pt(from), self.pt(to));
        self.inner.draw_line(a, b, &st)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let s = self.scale;
        let st = self.style(style);
        if fill {
            let ul = (upper_left.0 * s, upper_left.1 * s);
            let br = (bottom_right.0 * s + s - 1, bottom_right.1 * s + s - 1);
            return self.inner.draw_rect(ul, br, &st.color, true);
        }
        let (ul, br) = (upper_left, bottom_right);
        for (p, q) in [
            ((ul.0, ul.1), (br.0, ul.1)),
            ((br.0, ul.1), (br.0, br.1)),
            ((br.0, br.1), (ul.0, br.1)),
            ((ul.0, br.1), (ul.0, ul.1)),
        ] {
            self.draw_line(p, q, style)?;
        }
        Ok(())
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let pts: Vec<BackendCoord> = path.into_iter().collect();
        if pts.len() == 2 {
            return self.draw_line(pts[0], pts[1], style);
        }
        let st = self.style(style);
        let pts: Vec<BackendCoord> = pts.into_iter().map(|p| self.pt(p)).collect();
        self.inner.draw_path(pts, &st)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let st = self.style(style);
        let c = self.pt(center);
        self.inner
            .draw_circle(c, radius * self.scale.unsigned_abs(), &st, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let st = self.style(style);
        let v: Vec<BackendCoord> = vert.into_iter().map(|p| self.pt(p)).collect();
        self.inner.fill_polygon(v, &st)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        (iw, ih): (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        // Not used by the figures; drawn pixel by pixel (RGB) for completeness.
        for (k, px) in src.chunks_exact(3).enumerate() {
            let (x, y) = (k as u32 % iw.max(1), k as u32 / iw.max(1));
            if y >= ih {
                break;
            }
            let p = (
                pos.0 + i32::try_from(x).unwrap_or(0),
                pos.1 + i32::try_from(y).unwrap_or(0),
            );
            self.draw_pixel(
                p,
                BackendColor {
                    alpha: 1.0,
                    rgb: (px[0], px[1], px[2]),
                },
            )?;
        }
        Ok(())
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let Some(f) = &self.font else {
            return self.inner.estimate_text_size(text, style);
        };
        let k = self.scale as f32;
        let l = layout(f, text, style.size() * f64::from(self.scale));
        Ok((
            (l.width / k).ceil().max(0.0) as u32,
            ((l.ascent - l.descent) / k).ceil().max(0.0) as u32,
        ))
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let Some(f) = self.font.clone() else {
            return self.inner.draw_text(text, style, pos);
        };
        let l = layout(&f, text, style.size() * f64::from(self.scale));
        let height = l.ascent - l.descent;
        let pos = (pos.0 * self.scale, pos.1 * self.scale);
        // The anchor moves the box's top-left corner, in the text's own (unrotated) frame.
        let dx = match style.anchor().h_pos {
            HPos::Left => 0.0,
            HPos::Right => -l.width,
            HPos::Center => -l.width / 2.0,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0.0,
            VPos::Center => -height / 2.0,
            VPos::Bottom => -height,
        };
        let trans = style.transform();
        let (w, h) = self.inner.get_size();
        let (w, h) = (i64::from(w), i64::from(h));
        for &(id, pen) in &l.glyphs {
            let g = id.with_scale_and_position(l.scale, point(dx + pen, dy + l.ascent));
            let Some(o) = f.outline_glyph(g) else {
                continue;
            };
            let b = o.px_bounds();
            let mut err = Ok(());
            o.draw(|x, y, cov| {
                if err.is_err() || cov <= 0.0 {
                    return;
                }
                // Glyph pixel → text frame (bounds are whole pixels) → rotation → the canvas.
                let gx = b.min.x as i32 + x as i32;
                let gy = b.min.y as i32 + y as i32;
                let (tx, ty) = trans.transform(gx, gy);
                let (px, py) = (pos.0 + tx, pos.1 + ty);
                if i64::from(px) >= 0
                    && i64::from(px) < w
                    && i64::from(py) >= 0
                    && i64::from(py) < h
                {
                    err = self.inner.draw_pixel(
                        (px, py),
                        BackendColor {
                            alpha: color.alpha * f64::from(cov.min(1.0)),
                            rgb: color.rgb,
                        },
                    );
                }
            });
            err?;
        }
        Ok(())
    }
}
