//! `import-crops`: crops a user already has (`.npy` float32 in [0, 1] or uint16, N×C×H×W) plus a metadata
//! table (TSV, CSV or Parquet, one row per crop) → crop store.
//!
//! Key decision: float crops outside [0, 1] or non-finite are an error naming the cell and row, not
//! silently clipped, because a wrongly normalised stack would train on garbage. Columns `cell`, `batch` and
//! `is_ntc` are derived by the store and ignored on input, so an exported stack imports back unchanged.
use super::npy::{parse_header, NpyDtype};
use super::writer::{to_unorm, CellMeta, StoreWriter, WriterOptions};
use super::Manifest;
use crate::formats::table::{ColumnMap, Table};
use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use rayon::prelude::*;
use std::path::Path;

/// Options of `import-crops`.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Channel names; default `ch0..chC-1`.
    pub channels: Option<Vec<String>>,
    pub ntc_gene: String,
    pub force: bool,
    /// Renames of the metadata table's columns (`--columns gene=gene_symbol_0,…`).
    pub columns: ColumnMap,
}

const REQUIRED: [&str; 4] = ["plate", "well", "gene", "sgRNA"];
const DERIVED: [&str; 3] = ["cell", "batch", "is_ntc"];

/// A header name without surrounding spaces or a UTF-8 byte-order mark (as spreadsheet exports write).
pub fn clean_header(s: &str) -> String {
    s.trim().trim_start_matches('\u{feff}').trim().to_string()
}

/// Parse one metadata row into a `CellMeta`; `cols` maps the known columns to positions.
fn meta_row(
    rec: &csv::StringRecord,
    cols: &[Option<usize>; 8],
    extra: &[usize],
    path: &Path,
    k: usize,
    row: &str,
) -> Result<CellMeta> {
    let get = |k: usize| cols[k].map(|c| rec.get(c).unwrap_or("").trim());
    let num = |k: usize, name: &str| -> Result<Option<f64>> {
        match get(k) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<f64>().map(Some).with_context(|| {
                format!(
                    "{}: {row}, column {name}: {v:?} is not a number",
                    path.display()
                )
            }),
        }
    };
    let uint = |k: usize, name: &str, default: u64| -> Result<u64> {
        match get(k) {
            None | Some("") => Ok(default),
            Some(v) => v.parse::<u64>().with_context(|| {
                format!(
                    "{}: {row}, column {name}: {v:?} is not a non-negative integer",
                    path.display()
                )
            }),
        }
    };
    // A missing centroid is NaN ("unknown"); a given one must be a finite f32.
    let centroid = |v: Option<f64>, name: &str| -> Result<f32> {
        match v {
            None => Ok(f32::NAN),
            Some(x) if x.is_finite() && x.abs() <= f64::from(f32::MAX) => Ok(x as f32),
            Some(x) => bail!(
                "{}: {row}, column {name}: {x} is not a finite coordinate (|value| ≤ 3.4e38)",
                path.display()
            ),
        }
    };
    Ok(CellMeta {
        plate: get(0).unwrap().to_string(),
        well: get(1).unwrap().to_string(),
        gene: get(2).unwrap().to_string(),
        sgrna: get(3).unwrap().to_string(),
        tile: u32::try_from(uint(4, "tile", 0)?).with_context(|| {
            format!(
                "{}: {row}, column tile: expected an integer < 2^32",
                path.display()
            )
        })?,
        cell_id: uint(5, "cell_id", u64::try_from(k).unwrap_or(u64::MAX))?,
        i: centroid(num(6, "i")?, "i")?,
        j: centroid(num(7, "j")?, "j")?,
        extra: extra
            .iter()
            .map(|&c| rec.get(c).unwrap_or("").to_string())
            .collect(),
    })
}

/// Import `npy` + `meta` into a new store at `out`.
pub fn import_crops(npy: &Path, meta: &Path, out: &Path, opts: &ImportOptions) -> Result<Manifest> {
    let f = std::fs::File::open(npy).with_context(|| format!("opening {}", npy.display()))?;
    // SAFETY: read-only map of an input file that we do not modify.
    let map =
        unsafe { Mmap::map(&f) }.with_context(|| format!("memory-mapping {}", npy.display()))?;
    let h = parse_header(&map, npy)?;
    if h.shape.len() != 4 || h.shape[2] != h.shape[3] || h.shape[2] == 0 || h.shape[1] == 0 {
        bail!("{}: shape {:?}, expected N×C×H×W with H = W; HINT: crops must be square, channels first", npy.display(), h.shape);
    }
    let (n, c, s) = (h.shape[0], h.shape[1], h.shape[2]);
    let channels = opts
        .channels
        .clone()
        .unwrap_or_else(|| (0..c).map(|k| format!("ch{k}")).collect());
    if channels.len() != c {
        bail!(
            "--channels names {} channels, {} has {c}",
            channels.len(),
            npy.display()
        );
    }
    // Metadata table: CSV/TSV or Parquet, columns renamed by --columns; duplicates are refused by `open`.
    let table = Table::open(meta, &opts.columns)?;
    let header = table.header.clone();
    let numbering = table.numbering;
    let pos = |name: &str| header.iter().position(|h| h == name);
    for r in REQUIRED {
        if pos(r).is_none() {
            bail!(
                "{}: no column {r:?} (columns: {header:?}); HINT: the table needs plate, well, gene, sgRNA and may have \
                 tile, cell_id, i, j",
                meta.display()
            );
        }
    }
    let names = [
        "plate", "well", "gene", "sgRNA", "tile", "cell_id", "i", "j",
    ];
    let cols: [Option<usize>; 8] = std::array::from_fn(|k| pos(names[k]));
    let extra: Vec<usize> = (0..header.len())
        .filter(|&k| !names.contains(&header[k].as_str()) && !DERIVED.contains(&header[k].as_str()))
        .collect();
    let mut metas = Vec::with_capacity(n);
    for rec in table.records() {
        let (k, rec) = rec?;
        let at = format!("{} {}", numbering.unit(), numbering.number(k));
        metas.push(meta_row(&rec, &cols, &extra, meta, k, &at)?);
    }
    if metas.len() != n {
        bail!(
            "{}: {} rows, {} holds {n} crops; HINT: one metadata row per crop, in the same order",
            meta.display(),
            metas.len(),
            npy.display()
        );
    }
    let side = u32::try_from(s)
        .with_context(|| format!("{}: crop side {s} is too large", npy.display()))?;
    let mut wo = WriterOptions::new(side, channels);
    wo.ntc_gene = opts.ntc_gene.clone();
    wo.meta_columns = extra.iter().map(|&k| header[k].clone()).collect();
    wo.created_by = format!("setdino {} import-crops", env!("CARGO_PKG_VERSION"));
    wo.force = opts.force;
    let mut w = StoreWriter::create(out, wo)?;
    let len = c * s * s;
    let data = &map[h.data_offset..];
    const CHUNK: usize = 1024;
    let mut buf = vec![0u16; CHUNK * len];
    for start in (0..n).step_by(CHUNK) {
        let m = CHUNK.min(n - start);
        let out_chunk = &mut buf[..m * len];
        match h.dtype {
            NpyDtype::U16 => {
                let src = &data[start * len * 2..(start + m) * len * 2];
                out_chunk
                    .par_iter_mut()
                    .zip(src.par_chunks_exact(2))
                    .for_each(|(o, b)| *o = u16::from_le_bytes([b[0], b[1]]));
            }
            NpyDtype::F32 => {
                let src = &data[start * len * 4..(start + m) * len * 4];
                out_chunk.par_chunks_mut(len).zip(src.par_chunks(len * 4)).enumerate().try_for_each(|(q, (o, b))| {
                    for (p, (o, v)) in o.iter_mut().zip(b.chunks_exact(4)).enumerate() {
                        let x = f32::from_le_bytes(v.try_into().unwrap());
                        if !(0.0..=1.0).contains(&x) {
                            let cell = start + q;
                            bail!(
                                "{}: crop {cell} (metadata {} {}), channel {}, pixel ({}, {}): value {x} is not in [0, 1]; \
                                 HINT: float crops must be finite and normalised to [0, 1] (or pass uint16)",
                                npy.display(),
                                numbering.unit(),
                                numbering.number(cell),
                                p / (s * s),
                                (p % (s * s)) / s,
                                p % s
                            );
                        }
                        *o = to_unorm(x);
                    }
                    Ok(())
                })?;
            }
        }
        w.push(&metas[start..start + m], out_chunk)?;
    }
    let report = serde_json::json!({
        "command": "import-crops", "npy": npy, "meta": meta, "cells": n, "channels": c, "crop": s,
        "dtype": format!("{:?}", h.dtype),
    });
    w.finish(report)
}
