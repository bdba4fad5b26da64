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

/// Bits per sample of a colour type.
fn bits_of(ct: tiff::ColorType) -> Option<u64> {
    use tiff::ColorType::*;
    match ct {
        Gray(b) | GrayA(b) | RGB(b) | RGBA(b) => Some(u64::from(b)),
        Multiband { bit_depth, .. } => Some(u64::from(bit_depth)),
        _ => None,
    }
}

/// Deflate-compressed pages: inflate every strip or tile to its end, so that a damaged stream (an inflate
/// error or a failed Adler-32 check, which the `tiff` crate does not reach because it stops reading once it
/// has the pixels it needs) or a short one is an error naming the file, page and chunk instead of garbage
/// pixels.
fn verify_deflate<R: Read + Seek>(
    dec: &mut Decoder<R>,
    path: &Path,
    page: usize,
    (w, h): (u32, u32),
    ct: tiff::ColorType,
    samples: usize,
    planar: bool,
) -> Result<()> {
    use std::io::SeekFrom;
    use tiff::tags::Tag;
    let p = path.display();
    let compression: Option<u16> = dec
        .find_tag_unsigned(Tag::Compression)
        .with_context(|| format!("{p}: page {page}: reading the Compression tag"))?;
    if !matches!(compression, Some(8) | Some(32946)) {
        return Ok(());
    }
    let tiled = matches!(dec.get_chunk_type(), tiff::decoder::ChunkType::Tile);
    let (off_tag, len_tag, kind) = if tiled {
        (Tag::TileOffsets, Tag::TileByteCounts, "tile")
    } else {
        (Tag::StripOffsets, Tag::StripByteCounts, "strip")
    };
    let offsets: Vec<u64> = dec
        .find_tag_unsigned_vec(off_tag)
        .with_context(|| format!("{p}: page {page}: reading {off_tag:?}"))?
        .with_context(|| format!("{p}: page {page}: no {off_tag:?} tag"))?;
    let lengths: Vec<u64> = dec
        .find_tag_unsigned_vec(len_tag)
        .with_context(|| format!("{p}: page {page}: reading {len_tag:?}"))?
        .with_context(|| format!("{p}: page {page}: no {len_tag:?} tag"))?;
    if offsets.len() != lengths.len() {
        bail!(
            "{p}: page {page}: {} {kind} offsets but {} byte counts; the file is damaged",
            offsets.len(),
            lengths.len()
        );
    }
    let bits = bits_of(ct).with_context(|| format!("{p}: page {page}: unsupported {ct:?}"))?;
    let (width, height) = (u64::from(w), u64::from(h));
    let tag = |dec: &mut Decoder<R>, t: Tag, default: u64| -> Result<u64> {
        Ok(dec
            .find_tag_unsigned::<u64>(t)
            .with_context(|| format!("{p}: page {page}: reading {t:?}"))?
            .unwrap_or(default))
    };
    let (chunk_w, chunk_h) = if tiled {
        (
            tag(dec, Tag::TileWidth, width)?,
            tag(dec, Tag::TileLength, height)?,
        )
    } else {
        (
            width,
            tag(dec, Tag::RowsPerStrip, height)?.clamp(1, height.max(1)),
        )
    };
    let strips_per_band = height.div_ceil(chunk_h.max(1)).max(1);
    let per_pixel = if planar { 1 } else { samples as u64 };
    // The raw chunks are read through the decoder's own stream (it seeks before every read of its own).
    let f = dec.inner();
    let file_len = f
        .seek(SeekFrom::End(0))
        .with_context(|| format!("{p}: page {page}: cannot seek"))?;
    let mut raw = Vec::new();
    let mut out = Vec::new();
    for (k, (&off, &len)) in offsets.iter().zip(&lengths).enumerate() {
        let end = off.checked_add(len).filter(|&e| e <= file_len);
        if end.is_none() {
            bail!(
                "{p}: page {page}: {kind} {k} (offset {off}, {len} bytes) extends past the end of the file \
                 ({file_len} bytes); the file is truncated or damaged"
            );
        }
        let (cw, ch) = if tiled {
            (chunk_w, chunk_h)
        } else {
            // The last strip of each band holds the remaining rows.
            let first_row = (k as u64 % strips_per_band).saturating_mul(chunk_h);
            (chunk_w, chunk_h.min(height.saturating_sub(first_row)))
        };
        let row_bytes = cw
            .saturating_mul(per_pixel)
            .saturating_mul(bits)
            .div_ceil(8);
        let want = row_bytes.saturating_mul(ch);
        raw.clear();
        f.seek(SeekFrom::Start(off))
            .and_then(|_| (&mut *f).take(len).read_to_end(&mut raw))
            .with_context(|| format!("{p}: page {page}: reading {kind} {k}"))?;
        out.clear();
        let inflated = flate2::read::ZlibDecoder::new(raw.as_slice())
            .take(want.saturating_add(1 << 20))
            .read_to_end(&mut out);
        if let Err(e) = inflated {
            bail!(
                "{p}: page {page}: Deflate-compressed {kind} {k} (offset {off}, {len} bytes) does not decode: {e}; \
                 the file is corrupt; HINT: re-export or re-copy the TIFF"
            );
        }
        if (out.len() as u64) < want {
            bail!(
                "{p}: page {page}: Deflate-compressed {kind} {k} decodes to {} bytes, expected {want}; the file is \
                 corrupt or truncated",
                out.len()
            );
        }
    }
    Ok(())
}

/// Decode one page into one plane per sample (chunky or planar layout).
fn decode_page<R: Read + Seek>(
    dec: &mut Decoder<R>,
    path: &Path,
    page: usize,
    budget: &mut usize,
) -> Result<Vec<Page>> {
    let p = path.display();
    let (w32, h32) = dec
        .dimensions()
        .with_context(|| format!("{p}: page {page}: reading dimensions"))?;
    let (w, h) = (
        usize::try_from(w32).context("width beyond the address space")?,
        usize::try_from(h32).context("height beyond the address space")?,
    );
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
    verify_deflate(dec, path, page, (w32, h32), ct, samples, planar)?;
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

/// Encode a TIFF in memory and write it atomically (never a torn file under `path`).
fn write_tiff(
    path: &Path,
    encode: impl FnOnce(&mut std::io::Cursor<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    let mut cur = std::io::Cursor::new(Vec::new());
    encode(&mut cur).with_context(|| format!("writing {}", path.display()))?;
    crate::util::atomic::write_atomic(path, &cur.into_inner())
}

/// Width and height as TIFF dimensions (u32).
fn dims(path: &Path, w: usize, h: usize) -> Result<(u32, u32)> {
    let c = |v: usize| {
        u32::try_from(v)
            .with_context(|| format!("{}: {v} px is beyond TIFF's limit", path.display()))
    };
    Ok((c(w)?, c(h)?))
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
    let (w, h) = dims(path, w, h)?;
    write_tiff(path, |cur| {
        let mut enc = TiffEncoder::new(cur)?.with_compression(match compression {
            TiffCompression::None => Compression::Uncompressed,
            TiffCompression::Lzw => Compression::Lzw,
            TiffCompression::Deflate => Compression::Deflate(tiff::encoder::DeflateLevel::Fast),
        });
        for p in pages {
            enc.write_image::<colortype::Gray16>(w, h, p)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    })
}

/// Write 16-bit RGB pages (interleaved h×w×3).
pub fn write_rgb16(path: &Path, w: usize, h: usize, pages: &[&[u16]]) -> Result<()> {
    use tiff::encoder::{colortype, TiffEncoder};
    let (w, h) = dims(path, w, h)?;
    write_tiff(path, |cur| {
        let mut enc = TiffEncoder::new(cur)?;
        for p in pages {
            enc.write_image::<colortype::RGB16>(w, h, p)?;
        }
        Ok(())
    })
}

/// Write 8-bit grayscale pages.
pub fn write_u8(path: &Path, w: usize, h: usize, pages: &[&[u8]]) -> Result<()> {
    use tiff::encoder::{colortype, TiffEncoder};
    let (w, h) = dims(path, w, h)?;
    write_tiff(path, |cur| {
        let mut enc = TiffEncoder::new(cur)?;
        for p in pages {
            enc.write_image::<colortype::Gray8>(w, h, p)?;
        }
        Ok(())
    })
}

/// Write 32-bit float grayscale pages.
pub fn write_f32(path: &Path, w: usize, h: usize, pages: &[&[f32]]) -> Result<()> {
    use tiff::encoder::{colortype, TiffEncoder};
    let (w, h) = dims(path, w, h)?;
    write_tiff(path, |cur| {
        let mut enc = TiffEncoder::new(cur)?;
        for p in pages {
            enc.write_image::<colortype::Gray32Float>(w, h, p)?;
        }
        Ok(())
    })
}
