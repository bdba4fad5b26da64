//! Text for the bitmap figures: a backend wrapper that lays out and rasterises text itself with
//! `ab_glyph` from the embedded font, and hands everything else to the wrapped backend.
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

/// A bitmap backend whose text is drawn by [`layout`] (see the module note).
pub struct Crisp<B> {
    pub inner: B,
    font: Option<FontRef<'static>>,
}

impl<B: DrawingBackend> Crisp<B> {
    pub fn new(inner: B) -> Self {
        Crisp {
            inner,
            font: font(),
        }
    }
}

impl<B: DrawingBackend> DrawingBackend for Crisp<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
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
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let Some(f) = &self.font else {
            return self.inner.estimate_text_size(text, style);
        };
        let l = layout(f, text, style.size());
        Ok((
            l.width.ceil().max(0.0) as u32,
            (l.ascent - l.descent).ceil().max(0.0) as u32,
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
        let l = layout(&f, text, style.size());
        let height = l.ascent - l.descent;
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
        let (w, h) = self.get_size();
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
