//! Minimal `.npy` IO (format 1.0 to 3.0): little-endian `<f4` and `<u2` arrays in C order, which is what
//! export writes and import-crops reads.
//!
//! Key decision: hand-written header parsing (the format is a short Python-literal dict) rather than a
//! dependency; anything else (Fortran order, other dtypes, big-endian) is rejected with a hint.
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// Element type of an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    F32,
    U16,
}

impl NpyDtype {
    pub fn size(self) -> usize {
        match self {
            NpyDtype::F32 => 4,
            NpyDtype::U16 => 2,
        }
    }
    fn descr(self) -> &'static str {
        match self {
            NpyDtype::F32 => "<f4",
            NpyDtype::U16 => "<u2",
        }
    }
}

/// A parsed header: dtype, shape and the byte offset of the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: NpyDtype,
    pub shape: Vec<usize>,
    pub data_offset: usize,
}

/// The header bytes (magic, version 1.0, dict padded so data starts at a multiple of 64).
pub fn header_bytes(dtype: NpyDtype, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape_s}, }}",
        dtype.descr()
    );
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Parse the header at the start of `bytes`; `path` names the file in errors.
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<NpyHeader> {
    let p = path.display();
    if bytes.len() < 10 || &bytes[0..6] != b"\x93NUMPY" {
        bail!("{p}: not a .npy file (bad magic); HINT: save the array with numpy.save");
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
            12,
        ),
        v => bail!("{p}: .npy format version {v} is not supported (1, 2 or 3 are)"),
    };
    if bytes.len() < start + hlen {
        bail!("{p}: truncated .npy header");
    }
    let h = std::str::from_utf8(&bytes[start..start + hlen])
        .with_context(|| format!("{p}: header is not text"))?;
    let field = |key: &str| -> Result<&str> {
        let k = h
            .find(&format!("'{key}'"))
            .with_context(|| format!("{p}: header has no '{key}': {h}"))?;
        let rest = &h[k + key.len() + 2..];
        let colon = rest
            .find(':')
            .with_context(|| format!("{p}: malformed header: {h}"))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr = field("descr")?;
    let dtype = if descr.starts_with("'<f4'") {
        NpyDtype::F32
    } else if descr.starts_with("'<u2'") {
        NpyDtype::U16
    } else {
        bail!(
            "{p}: dtype {} is not supported; HINT: expected float32 ('<f4') or uint16 ('<u2'), e.g. \
             arr.astype(np.float32)",
            descr.split(',').next().unwrap_or(descr)
        );
    };
    if field("fortran_order")?.starts_with("True") {
        bail!("{p}: array is in Fortran order; HINT: save np.ascontiguousarray(arr)");
    }
    let s = field("shape")?;
    let close = s
        .find(')')
        .with_context(|| format!("{p}: malformed shape in header: {h}"))?;
    let Some(dims) = s.strip_prefix('(').and_then(|t| t.get(..close - 1)) else {
        bail!("{p}: malformed shape in header (expected a tuple): {h}");
    };
    let shape = dims
        .split(',')
        .map(|x| x.trim())
        .filter(|x| !x.is_empty())
        .map(|x| {
            x.trim_end_matches('L')
                .parse::<usize>()
                .with_context(|| format!("{p}: bad shape entry {x:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let data_offset = start + hlen;
    let need = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
    if need != Some(bytes.len() - data_offset) {
        bail!(
            "{p}: {} data bytes, shape {shape:?} of {} needs {}; HINT: the file is truncated",
            bytes.len() - data_offset,
            dtype.descr(),
            need.map_or("more than fit in memory".to_string(), |n| n.to_string())
        );
    }
    Ok(NpyHeader {
        dtype,
        shape,
        data_offset,
    })
}

/// Streaming writer of a float32 `.npy` whose shape is known up front.
pub struct NpyWriter {
    w: std::io::BufWriter<std::fs::File>,
    left: usize,
    path: std::path::PathBuf,
}

impl NpyWriter {
    pub fn create(path: &Path, shape: &[usize]) -> Result<NpyWriter> {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        w.write_all(&header_bytes(NpyDtype::F32, shape))?;
        Ok(NpyWriter {
            w,
            left: shape.iter().product(),
            path: path.to_path_buf(),
        })
    }

    pub fn write(&mut self, values: &[f32]) -> Result<()> {
        if values.len() > self.left {
            bail!(
                "{}: more values written than the shape holds",
                self.path.display()
            );
        }
        self.left -= values.len();
        self.w
            .write_all(bytemuck::cast_slice(values))
            .with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn finish(self) -> Result<()> {
        if self.left != 0 {
            bail!(
                "{}: {} values missing at finish",
                self.path.display(),
                self.left
            );
        }
        let f = self.w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    }
}

/// Write a whole float32 array (temp file, then rename: never a torn file under `path`).
pub fn write_f32(path: &Path, shape: &[usize], values: &[f32]) -> Result<()> {
    let tmp = crate::util::atomic::TempFile::new(path)?;
    let mut w = NpyWriter::create(tmp.path(), shape)?;
    w.write(values)?;
    w.finish()?;
    tmp.commit()
}
