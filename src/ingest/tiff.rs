//! TIFF reading for ingest (8/16-bit integer and 32-bit float grayscale, single- and multi-page, strips
//! or tiles, uncompressed, LZW or Deflate, via the `tiff` crate) and a small writer used by `synth` and tests.
//!
//! Key decision: every page becomes an f32 plane (exact for integers up to 2^24) plus an `integer` flag, so
//! the percentile clip can be exact for integer data; non-finite float values are an error naming the page.
use anyhow::{bail, Context, Result};
use std::io::BufReader;
use std::path::Path;
use tiff::decoder::{Decoder, DecodingResult, Limits};

/// One grayscale page.
#[derive(Clone, Debug)]
pub struct Page {
    pub h: usize,
    pub w: usize,
    /// Row-major pixels.
    pub data: Vec<f32>,
    /// True for 8- and 16-bit unsigned integer samples (exactly histogrammable).
    pub integer: bool,
}

fn decode_page(
    dec: &mut Decoder<BufReader<std::fs::File>>,
    path: &Path,
    page: usize,
) -> Result<Page> {
    let p = path.display();
    let (w, h) = dec
        .dimensions()
        .with_context(|| format!("{p}: page {page}: reading dimensions"))?;
    let ct = dec
        .colortype()
        .with_context(|| format!("{p}: page {page}: reading colour type"))?;
    if !matches!(ct, tiff::ColorType::Gray(_)) {
        bail!("{p}: page {page} is {ct:?}, expected one grayscale sample per pixel; HINT: save one channel per page");
    }
    let img = dec
        .read_image()
        .with_context(|| format!("{p}: page {page}: decoding pixels (is the file complete?)"))?;
    let (data, integer): (Vec<f32>, bool) = match img {
        DecodingResult::U8(v) => (v.into_iter().map(f32::from).collect(), true),
        DecodingResult::U16(v) => (v.into_iter().map(f32::from).collect(), true),
        DecodingResult::U32(v) => (v.into_iter().map(|x| x as f32).collect(), false),
        DecodingResult::F32(v) => (v, false),
        DecodingResult::F64(v) => (v.into_iter().map(|x| x as f32).collect(), false),
        _ => bail!("{p}: page {page}: sample type not supported; HINT: use 8- or 16-bit unsigned or 32-bit float"),
    };
    if data.len() != (w as usize) * (h as usize) {
        bail!(
            "{p}: page {page}: {} samples for {w}×{h}; HINT: one sample per pixel expected",
            data.len()
        );
    }
    if !integer {
        if let Some(k) = data.iter().position(|x| !x.is_finite()) {
            bail!(
                "{p}: page {page}: non-finite value {} at row {}, column {}",
                data[k],
                k / w as usize,
                k % w as usize
            );
        }
    }
    Ok(Page {
        h: h as usize,
        w: w as usize,
        data,
        integer,
    })
}

/// Read every page of a TIFF.
pub fn read_pages(path: &Path) -> Result<Vec<Page>> {
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut dec = Decoder::new(BufReader::new(f))
        .with_context(|| format!("{}: not a readable TIFF", path.display()))?
        .with_limits(Limits::unlimited());
    let mut pages = vec![decode_page(&mut dec, path, 0)?];
    while dec.more_images() {
        dec.next_image().with_context(|| {
            format!(
                "{}: page {}: cannot read directory",
                path.display(),
                pages.len()
            )
        })?;
        pages.push(decode_page(&mut dec, path, pages.len())?);
    }
    Ok(pages)
}

/// Count the pages of a TIFF without decoding pixels.
pub fn page_count(path: &Path) -> Result<usize> {
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut dec = Decoder::new(BufReader::new(f))
        .with_context(|| format!("{}: not a readable TIFF", path.display()))?;
    let mut n = 1;
    while dec.more_images() {
        dec.next_image()?;
        n += 1;
    }
    Ok(n)
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
