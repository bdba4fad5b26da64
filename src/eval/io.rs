//! Eval inputs and outputs: `STEM.npy` (float32 or float64, (N, D), C order) memory-mapped so that the
//! cell matrix never has to fit in RAM, and `STEM.tsv` (one header line, columns at least
//! `plate well tile gene sgRNA is_ntc`, optional `batch`, extra columns ignored).
//!
//! Key decision: errors name the file, the line and the column; the table is interned into integer ids
//! (batches, genes, sgRNAs) once, so everything downstream works on `u32` labels.
use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Interned strings: id → name and name → id, ids in order of first appearance.
#[derive(Clone, Debug, Default)]
pub struct Dict {
    pub names: Vec<String>,
    map: HashMap<String, u32>,
}

impl Dict {
    /// The id of `name`, adding it if new.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.map.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.map.insert(name.to_string(), i);
        i
    }
    /// The id of `name`, if present.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.map.get(name).copied()
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Per-cell metadata, one entry per row of the feature matrix. batch/gene/sgrna: (N) ids into the dicts.
#[derive(Clone, Debug, Default)]
pub struct CellTable {
    pub batch: Vec<u32>,
    pub gene: Vec<u32>,
    pub sgrna: Vec<u32>,
    pub is_ntc: Vec<bool>,
    pub batches: Dict,
    pub genes: Dict,
    pub sgrnas: Dict,
}

impl CellTable {
    pub fn len(&self) -> usize {
        self.batch.len()
    }
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
    /// Appends one cell (used by tests and by the TSV reader).
    pub fn push(&mut self, batch: &str, gene: &str, sgrna: &str, is_ntc: bool) {
        let b = self.batches.intern(batch);
        let g = self.genes.intern(gene);
        let s = self.sgrnas.intern(sgrna);
        self.batch.push(b);
        self.gene.push(g);
        self.sgrna.push(s);
        self.is_ntc.push(is_ntc);
    }
}

/// `STEM.npy` and `STEM.tsv` from a stem; a trailing `.npy` or `.tsv` on the stem is dropped.
pub fn stem_paths(stem: &Path) -> (PathBuf, PathBuf) {
    let s = stem.to_string_lossy();
    let base = s
        .strip_suffix(".npy")
        .or_else(|| s.strip_suffix(".tsv"))
        .unwrap_or(&s)
        .to_string();
    (
        PathBuf::from(format!("{base}.npy")),
        PathBuf::from(format!("{base}.tsv")),
    )
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim() {
        "1" | "true" | "True" | "TRUE" | "yes" | "y" | "T" => Some(true),
        "0" | "false" | "False" | "FALSE" | "no" | "n" | "F" => Some(false),
        _ => None,
    }
}

/// Parses the cell table text; `path` names the file in errors. Lines are 1-based in messages.
pub fn parse_table(text: &str, path: &Path) -> Result<CellTable> {
    let p = path.display();
    let mut lines = text.lines().enumerate();
    let header = loop {
        match lines.next() {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((_, l)) => break l,
            None => {
                bail!("{p}: empty table; HINT: the first line must be a header naming the columns")
            }
        }
    };
    let cols: Vec<&str> = header.split('\t').map(|c| c.trim()).collect();
    let find = |name: &str| cols.iter().position(|c| *c == name);
    let need = |name: &str| -> Result<usize> {
        find(name).with_context(|| {
            format!(
                "{p}: line 1: no column `{name}` in the header ({}); HINT: required columns are \
                 plate well tile gene sgRNA is_ntc (tab-separated), batch is optional",
                cols.join(", ")
            )
        })
    };
    // `tile` is required (the exchange format has it) but eval does not use it.
    let (ip, iw, _tile, ig, is, in_) = (
        need("plate")?,
        need("well")?,
        need("tile")?,
        need("gene")?,
        need("sgRNA")?,
        need("is_ntc")?,
    );
    let ib = find("batch");
    let ncol = cols.len();
    let mut t = CellTable::default();
    for (lno, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < ncol {
            bail!(
                "{p}: line {}: {} fields, the header has {ncol}; HINT: fields are tab-separated",
                lno + 1,
                f.len()
            );
        }
        let ntc = parse_bool(f[in_]).with_context(|| {
            format!(
                "{p}: line {}, column {} (is_ntc): `{}` is not a boolean (0/1/true/false)",
                lno + 1,
                in_ + 1,
                f[in_]
            )
        })?;
        for (i, name) in [(ig, "gene"), (is, "sgRNA"), (ip, "plate"), (iw, "well")] {
            if f[i].trim().is_empty() {
                bail!(
                    "{p}: line {}, column {} ({name}): empty value",
                    lno + 1,
                    i + 1
                );
            }
        }
        let batch = match ib {
            Some(i) if !f[i].trim().is_empty() => f[i].trim().to_string(),
            Some(i) => bail!(
                "{p}: line {}, column {} (batch): empty value",
                lno + 1,
                i + 1
            ),
            None => format!("{}_{}", f[ip].trim(), f[iw].trim()),
        };
        t.push(&batch, f[ig].trim(), f[is].trim(), ntc);
    }
    Ok(t)
}

/// The per-cell table and matrix of `--features`: `STEM.npy` + `STEM.tsv` (the matrix memory-mapped), or
/// setdino's own `STEM.parquet` / AnnData `STEM.zarr` (`--format parquet|anndata` of embed and features;
/// read into memory). A stem naming one of the files picks its format; a bare stem takes the npy pair when
/// it exists, else the Parquet file, else the AnnData store. Returns the table, the matrix and the path to
/// name in messages.
pub fn open_features(stem: &Path) -> Result<(CellTable, Features, PathBuf)> {
    if let Some(m) = crate::formats::read_matrix(stem)? {
        let table = parse_table(&table_text(&m.header, &m.rows), &m.path)?;
        return Ok((table, Features::from_vec(m.x, m.n, m.d), m.path));
    }
    let (npy, tsv) = stem_paths(stem);
    let table = read_table(&tsv)?;
    let feat = Features::open(&npy)?;
    if feat.n != table.len() {
        bail!(
            "{} has {} rows but {} has {} cells; HINT: the .npy and .tsv of one stem must describe the same cells \
             in the same order",
            npy.display(),
            feat.n,
            tsv.display(),
            table.len()
        );
    }
    Ok((table, feat, npy))
}

/// A header and rows as the tab-separated text [`parse_table`] reads (messages then count rows from 2).
fn table_text(header: &[String], rows: &[Vec<String>]) -> String {
    let mut s = header.join("\t");
    s.push('\n');
    for r in rows {
        s.push_str(&r.join("\t"));
        s.push('\n');
    }
    s
}

/// Reads `STEM.tsv`.
pub fn read_table(path: &Path) -> Result<CellTable> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading cell table {}; HINT: --features STEM expects STEM.npy and STEM.tsv",
            path.display()
        )
    })?;
    parse_table(&text, path)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
}

enum Store {
    Mapped {
        map: Mmap,
        offset: usize,
        dtype: Dtype,
    },
    Owned(Vec<f32>),
}

/// The per-cell feature matrix X: (N, D). Rows are read on demand (memory-mapped file or owned data).
pub struct Features {
    pub n: usize,
    pub d: usize,
    store: Store,
    path: String,
}

impl Features {
    /// Wraps an in-memory matrix x: (N, D) row-major.
    pub fn from_vec(x: Vec<f32>, n: usize, d: usize) -> Self {
        assert_eq!(x.len(), n * d);
        Features {
            n,
            d,
            store: Store::Owned(x),
            path: "<memory>".into(),
        }
    }

    /// Memory-maps `path` (`.npy`, `<f4` or `<f8`, 2-D, C order).
    pub fn open(path: &Path) -> Result<Self> {
        let p = path.display();
        let file = File::open(path).with_context(|| format!("opening features {p}"))?;
        // SAFETY: the file is opened read-only; a concurrent writer truncating it is outside the contract.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {p}"))?;
        if map.len() < 10 || &map[0..6] != b"\x93NUMPY" {
            bail!("{p}: not a .npy file (bad magic); HINT: save the array with numpy.save");
        }
        let (hlen, start) = match map[6] {
            1 => (u16::from_le_bytes([map[8], map[9]]) as usize, 10),
            2 | 3 if map.len() >= 12 => (
                u32::from_le_bytes([map[8], map[9], map[10], map[11]]) as usize,
                12,
            ),
            v => bail!("{p}: .npy format version {v} is not supported (1, 2 or 3 are)"),
        };
        if map.len() < start + hlen {
            bail!("{p}: truncated .npy header");
        }
        let h = String::from_utf8_lossy(&map[start..start + hlen]).to_string();
        let dtype = if h.contains("'<f4'") || h.contains("'float32'") {
            Dtype::F32
        } else if h.contains("'<f8'") || h.contains("'float64'") {
            Dtype::F64
        } else {
            bail!("{p}: dtype in header `{}` is not little-endian float32/float64; HINT: x.astype(np.float32)", h.trim())
        };
        if h.contains("'fortran_order': True") {
            bail!("{p}: Fortran-order array; HINT: np.save(path, np.ascontiguousarray(x))");
        }
        let shape_s = h
            .split("'shape':")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .map(|s| s.trim().trim_start_matches('('))
            .with_context(|| format!("{p}: no shape in header `{}`", h.trim()))?;
        let dims: Vec<usize> = shape_s
            .split(',')
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("{p}: bad shape `{shape_s}`"))?;
        if dims.len() != 2 {
            bail!("{p}: shape {dims:?} is not 2-D (cells, features)");
        }
        let (n, d) = (dims[0], dims[1]);
        let esize = if dtype == Dtype::F32 { 4 } else { 8 };
        let offset = start + hlen;
        let want = n
            .checked_mul(d)
            .and_then(|x| x.checked_mul(esize))
            .and_then(|x| x.checked_add(offset))
            .with_context(|| format!("{p}: shape ({n}, {d}) is too large"))?;
        if map.len() != want {
            bail!(
                "{p}: {} bytes, header says ({n}, {d}) = {want} bytes; HINT: the file is truncated or not C-order",
                map.len()
            );
        }
        Ok(Features {
            n,
            d,
            store: Store::Mapped { map, offset, dtype },
            path: path.display().to_string(),
        })
    }

    /// Copies row i into out: (D) as f64; errors on a non-finite value, naming the row and column.
    pub fn row_into(&self, i: usize, out: &mut [f64]) -> Result<()> {
        let d = self.d;
        match &self.store {
            Store::Owned(x) => {
                for (o, v) in out.iter_mut().zip(&x[i * d..(i + 1) * d]) {
                    *o = *v as f64;
                }
            }
            Store::Mapped { map, offset, dtype } => match dtype {
                Dtype::F32 => {
                    let b = &map[offset + i * d * 4..offset + (i + 1) * d * 4];
                    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64;
                    }
                }
                Dtype::F64 => {
                    let b = &map[offset + i * d * 8..offset + (i + 1) * d * 8];
                    for (o, c) in out.iter_mut().zip(b.chunks_exact(8)) {
                        *o = f64::from_le_bytes(c.try_into().unwrap());
                    }
                }
            },
        }
        if let Some(j) = out[..d].iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: row {i} (table line {}), column {j} is {}; HINT: drop or impute non-finite features first",
                self.path,
                i + 2,
                out[j]
            );
        }
        Ok(())
    }
}

/// Writes x: (R, C) row-major as a float32 `.npy` (format 1.0, data aligned to 64 bytes).
pub fn write_npy_f32(path: &Path, x: &[f32], r: usize, c: usize) -> Result<()> {
    assert_eq!(x.len(), r * c);
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({r}, {c}), }}");
    let total = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.reserve(x.len() * 4);
    for v in x {
        out.extend_from_slice(&v.to_le_bytes());
    }
    crate::util::atomic::write_atomic(path, &out)
}
