//! The galleries' drawing surface: an RGB image with clipped filled rectangles and text.
//!
//! Key decision: text is laid out and rasterised here with `ab_glyph` from the embedded figure font
//! ([`crate::plot::FONT`], DejaVu Sans) straight into the image, each glyph's coverage blended over what
//! lies beneath. The galleries are pixel images (crops copied 1:1 or enlarged by whole pixels), so they
//! do not go through the figures' supersampled plotters backend, which would resample the crops.
use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use anyhow::{anyhow, Result};
use image::{Rgb, RgbImage};

/// An RGB colour.
pub type Colour = [u8; 3];

/// The embedded font, parsed once per gallery.
#[derive(Clone)]
pub struct Text {
    font: FontRef<'static>,
}

impl Text {
    pub fn new() -> Result<Text> {
        let font = FontRef::try_from_slice(crate::plot::FONT)
            .map_err(|e| anyhow!("the embedded figure font could not be parsed: {e}"))?;
        Ok(Text { font })
    }

    /// Glyphs of `s` at `size` px (ascent to descent) with their fractional pen positions.
    fn layout(&self, size: f32, s: &str) -> (Vec<(ab_glyph::GlyphId, f32)>, f32, PxScale) {
        let scale = PxScale::from(size.max(1.0));
        let sf = self.font.as_scaled(scale);
        let mut pen = 0.0f32;
        let mut prev = None;
        let mut glyphs = Vec::with_capacity(s.len());
        for ch in s.chars() {
            let id = sf.glyph_id(ch);
            if let Some(p) = prev {
                pen += sf.kern(p, id);
            }
            glyphs.push((id, pen));
            pen += sf.h_advance(id);
            prev = Some(id);
        }
        (glyphs, pen, scale)
    }

    /// Advance width of `s` at `size`, in whole pixels (rounded up).
    pub fn width(&self, size: f32, s: &str) -> u32 {
        let w = self.layout(size, s).1.ceil().max(0.0);
        // A text line is far below u32::MAX pixels; saturate rather than wrap.
        w.min(1e9) as u32
    }

    /// Draws `s` with its top (the font's ascent line) at `y` and its pen start at `x`; returns the
    /// advance width in pixels. Pixels outside the image are dropped.
    pub fn draw(&self, img: &mut RgbImage, x: f32, y: f32, size: f32, s: &str, c: Colour) -> u32 {
        let (glyphs, width, scale) = self.layout(size, s);
        let ascent = self.font.as_scaled(scale).ascent();
        for (id, pen) in glyphs {
            let g = id.with_scale_and_position(scale, point(x + pen, y + ascent));
            let Some(o) = self.font.outline_glyph(g) else {
                continue;
            };
            let b = o.px_bounds();
            o.draw(|gx, gy, cov| {
                let px = i64::from(gx) + b.min.x.floor().clamp(-1e9, 1e9) as i64;
                let py = i64::from(gy) + b.min.y.floor().clamp(-1e9, 1e9) as i64;
                blend(img, px, py, c, cov);
            });
        }
        width.ceil().clamp(0.0, 1e9) as u32
    }
}

/// Blends `c` with coverage `cov` over the pixel (x, y), if it is inside the image.
fn blend(img: &mut RgbImage, x: i64, y: i64, c: Colour, cov: f32) {
    let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y)) else {
        return;
    };
    if x >= img.width() || y >= img.height() || cov <= 0.0 {
        return;
    }
    let a = cov.min(1.0);
    let p = img.get_pixel_mut(x, y);
    for (dst, &src) in p.0.iter_mut().zip(&c) {
        let v = f32::from(*dst) * (1.0 - a) + f32::from(src) * a;
        *dst = v.round().clamp(0.0, 255.0) as u8;
    }
}

/// A new image of `w` × `h` filled with `bg`.
pub fn blank(w: u32, h: u32, bg: Colour) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(bg))
}

/// Fills the rectangle at (x, y) of `w` × `h`, clipped to the image.
pub fn fill_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Colour) {
    let x1 = x.saturating_add(w).min(img.width());
    let y1 = y.saturating_add(h).min(img.height());
    for yy in y..y1 {
        for xx in x..x1 {
            img.put_pixel(xx, yy, Rgb(c));
        }
    }
}

/// `c` mixed with white by `t` (0 = c, 1 = white): channel colours made readable as text on a dark
/// background (pure blue text on near-black is hard to read).
pub fn lighten(c: Colour, t: f32) -> Colour {
    c.map(|v| {
        (f32::from(v) + (255.0 - f32::from(v)) * t)
            .round()
            .clamp(0.0, 255.0) as u8
    })
}

/// PNG bytes of `img` (deterministic: the same pixels give the same bytes).
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| anyhow!("encoding a gallery PNG: {e}"))?;
    Ok(bytes.into_inner())
}
