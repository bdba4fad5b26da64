//! TIFF reading for ingest (8/16/32-bit integer and 32/64-bit float, single- and multi-page, strips or
//! tiles, chunky or planar multi-sample pixels, uncompressed, LZW or Deflate, via the `tiff` crate) and a
//! small writer used by `synth` and tests.
//!
//! Key decision: every page and sample becomes an f32 plane (channels = pages × samples, in order) with an
//! `integer` flag (8/16-bit unsigned), so the percentile clip can be exact for integer data; non-finite float
//! values are an error naming the page, row and column.
use anyhow::{bail, Context, Result};
use std::io::{BufReader, Read, Seek};
use std::path::Path;
use tiff::decoder::{Decoder, DecodingResult, Limits};

/// Row-major pixels of one plane: 8/16-bit unsigned samples stay integers (half the memory of f32, and
/// exactly histogrammable); every other sample type is converted to f32.
#[derive(Clone, Debug, PartialEq)]
pub enum Pixels {
    U16(Vec<u16>),
    F32(Vec<f32>),
}

impl Pixels {
    pub fn len(&self) -> usize {
        match self {
            Pixels::U16(v) => v.len(),
            Pixels::F32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True for 8- and 16-bit unsigned samples.
    pub fn is_integer(&self) -> bool {
        matches!(self, Pixels::U16(_))
    }
    /// Pixel `k` as f32.
    #[inline]
    pub fn get(&self, k: usize) -> f32 {
        match self {
            Pixels::U16(v) => v[k] as f32,
            Pixels::F32(v) => v[k],
        }
    }
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Pixels::U16(v) => v.iter().map(|&x| x as f32).collect(),
            Pixels::F32(v) => v.clone(),
        }
    }
}

/// One channel plane (a grayscale page, or one sample of a multi-sample page).
#[derive(Clone, Debug)]
pub struct Page {
    pub h: usize,
    pub w: usize,
    pub data: Pixels,
}

/// Split interleaved (chunky) or consecutive (planar) samples into one plane per sample.
fn split<T: Copy>(data: Vec<T>, samples: usize, planar: bool, plane: usize) -> Vec<Vec<T>> {
    if samples == 1 {
        vec![data]
    } else if planar {
        data.chunks(plane).map(|c| c.to_vec()).collect()
    } else {
        (0..samples)
            .map(|s| data.iter().skip(s).step_by(samples).copied().collect())
            .collect()
    }
}

/// Samples per pixel of a colour type we can split into channels.
fn samples_of(ct: tiff::ColorType) -> Option<usize> {
    use tiff::ColorType::*;
    match ct {
        Gray(_) => Some(1),
        GrayA(_) => Some(2),
        RGB(_) => Some(3),
        RGBA(_) => Some(4),
        Multiband { num_samples, .. } => Some(num_samples as usize),
        _ => None,
    }
}

/// Decode one page into one plane per sample (chunky or planar layout).
fn decode_page<R: Read + Seek>(
    dec: &mut Decoder<R>,
    path: &Path,
    page: usize,
    budget: &mut usize,
) -> Result<Vec<Page>> {
    let p = path.display();
    let (w, h) = dec
        .dimensions()
        .with_context(|| format!("{p}: page {page}: reading dimensions"))?;
    let (w, h) = (w as usize, h as usize);
    let ct = dec
        .colortype()
        .with_context(|| format!("{p}: page {page}: reading colour type"))?;
    let Some(samples) = samples_of(ct) else {
        bail!("{p}: page {page} is {ct:?}; HINT: expected grayscale (one channel per page) or multi-sample pixels");
    };
    let planar = matches!(
        dec.find_tag(tiff::tags::Tag::PlanarConfiguration)
            .ok()
            .flatten()
            .and_then(|v| v.into_u16().ok()),
        Some(2)
    );
    let Some(expect) = w.checked_mul(h).and_then(|n| n.checked_mul(samples)) else {
        bail!("{p}: page {page}: {w}×{h} pixels × {samples} samples per pixel is too large");
    };
    if expect == 0 {
        bail!("{p}: page {page}: empty image ({w}×{h} pixels × {samples} samples per pixel)");
    }
    let mut img = DecodingResult::U8(Vec::new());
    dec.read_image_to_buffer(&mut img)
        .with_context(|| format!("{p}: page {page}: decoding pixels (is the file complete?)"))?;
    let data: Pixels = match img {
        DecodingResult::U8(v) => Pixels::U16(v.into_iter().map(u16::from).collect()),
        DecodingResult::U16(v) => Pixels::U16(v),
        DecodingResult::U32(v) => Pixels::F32(v.into_iter().map(|x| x as f32).collect()),
        DecodingResult::I8(v) => Pixels::F32(v.into_iter().map(f32::from).collect()),
        DecodingResult::I16(v) => Pixels::F32(v.into_iter().map(f32::from).collect()),
        DecodingResult::I32(v) => Pixels::F32(v.into_iter().map(|x| x as f32).collect()),
        DecodingResult::F32(v) => Pixels::F32(v),
        DecodingResult::F64(v) => Pixels::F32(v.into_iter().map(|x| x as f32).collect()),
        _ => bail!("{p}: page {page}: sample type not supported; HINT: use 8- or 16-bit integer or 32-bit float samples"),
    };
    if data.len() != expect {
        bail!(
            "{p}: page {page}: {} samples for {w}×{h} pixels × {samples} samples per pixel",
            data.len()
        );
    }
    // Decoded sizes are bounded per page by the decoder limits; bound the sum over pages the same way (a
    // small file can list many pages that share one strip).
    let bytes = data.len() * if data.is_integer() { 2 } else { 4 };
    if bytes > *budget {
        bail!(
            "{p}: page {page}: the pages decode to more bytes than a file of this size can hold; HINT: the \
             file is damaged"
        );
    }
    *budget -= bytes;
    let planes: Vec<Pixels> = match data {
        Pixels::U16(v) => split(v, samples, planar, w * h)
            .into_iter()
            .map(Pixels::U16)
            .collect(),
        Pixels::F32(v) => {
            if let Some(k) = v.iter().position(|x| !x.is_finite()) {
                let (q, smp) = if planar {
                    (k % (w * h), k / (w * h))
                } else {
                    (k / samples, k % samples)
                };
                bail!(
                    "{p}: page {page}: non-finite value {} at row {}, column {} (sample {smp})",
                    v[k],
                    q / w,
                    q % w
                );
            }
            split(v, samples, planar, w * h)
                .into_iter()
                .map(Pixels::F32)
                .collect()
        }
    };
    Ok(planes.into_iter().map(|data| Page { h, w, data }).collect())
}

/// Decoded bytes allowed per byte of file (LZW expands at most about 2730:1, Deflate about 1032:1).
const DECODE_RATIO: usize = 4096;
/// Decoded bytes always allowed, whatever the file size.
const DECODE_MIN: usize = 16 << 20;

/// Read every page of a TIFF, one plane per page and sample: pages in order, samples within a page in order.
pub fn read_pages(path: &Path) -> Result<Vec<Page>> {
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("{}: cannot stat", path.display()))?
        .len();
    read_pages_from_reader(BufReader::new(f), len, path)
}

/// [`read_pages`] from any seekable reader of `len` bytes; `path` names the file in errors. Declared
/// image sizes are checked against what `len` bytes can decode to, so a damaged header is an error, not
/// an unbounded allocation.
///
/// A panic inside the decoder (the `tiff` crate overflows on some damaged headers when built with
/// overflow checks) is an error naming the file too.
pub fn read_pages_from_reader<R: Read + Seek>(r: R, len: u64, path: &Path) -> Result<Vec<Page>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_all(r, len, path)))
        .unwrap_or_else(|e| {
            let msg = e
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            bail!(
                "{}: the TIFF decoder failed ({msg}); HINT: the file is damaged",
                path.display()
            )
        })
}

fn decode_all<R: Read + Seek>(r: R, len: u64, path: &Path) -> Result<Vec<Page>> {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let mut budget = len.saturating_mul(DECODE_RATIO).max(DECODE_MIN);
    let mut limits = Limits::default();
    limits.decoding_buffer_size = budget;
    limits.intermediate_buffer_size = budget;
    limits.ifd_value_size = len.max(1 << 20);
    let mut dec = Decoder::new(r)
        .with_context(|| format!("{}: not a readable TIFF", path.display()))?
        .with_limits(limits);
    let mut pages = decode_page(&mut dec, path, 0, &mut budget)?;
    let mut n = 1;
    while dec.more_images() {
        dec.next_image()
            .with_context(|| format!("{}: page {n}: cannot read directory", path.display()))?;
        pages.extend(decode_page(&mut dec, path, n, &mut budget)?);
        n += 1;
    }
    Ok(pages)
}

/// Compression for [`write_u16`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TiffCompression {
    None,
    Lzw,
    Deflate,
}

/// Write 16-bit grayscale pages (each h×w, row-major) to a TIFF.
pub fn write_u16(
    path: &Path,
    w: usize,
    h: usize,
    pages: &[&[u16]],
    compression: TiffCompression,
) -> Result<()> {
    use tiff::encoder::{colortype, Compression, TiffEncoder};
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc =
        TiffEncoder::new(std::io::BufWriter::new(f))?.with_compression(match compression {
            TiffCompression::None => Compression::Uncompressed,
            TiffCompression::Lzw => Compression::Lzw,
            TiffCompression::Deflate => Compression::Deflate(tiff::encoder::DeflateLevel::Fast),
        });
    for p in pages {
        enc.write_image::<colortype::Gray16>(w as u32, h as u32, p)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Write 16-bit RGB pages (interleaved h×w×3).
pub fn write_rgb16(path: &Path, w: usize, h: usize, pages: &[&[u16]]) -> Result<()> {
    use tiff::encoder::{colortype, TiffEncoder};
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = TiffEncoder::new(std::io::BufWriter::new(f))?;
    for p in pages {
        enc.write_image::<colortype::RGB16>(w as u32, h as u32, p)?;
    }
    Ok(())
}

/// Write 8-bit grayscale pages.
pub fn write_u8(path: &Path, w: usize, h: usize, pages: &[&[u8]]) -> Result<()> {
    use tiff::encoder::{colortype, TiffEncoder};
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = TiffEncoder::new(std::io::BufWriter::new(f))?;
    for p in pages {
        enc.write_image::<colortype::Gray8>(w as u32, h as u32, p)?;
    }
    Ok(())
}

/// Write 32-bit float grayscale pages.
pub fn write_f32(path: &Path, w: usize, h: usize, pages: &[&[f32]]) -> Result<()> {
    use tiff::encoder::{colortype, TiffEncoder};
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = TiffEncoder::new(std::io::BufWriter::new(f))?;
    for p in pages {
        enc.write_image::<colortype::Gray32Float>(w as u32, h as u32, p)?;
    }
    Ok(())
}
