//! `embed merge`: join the job parts of `embed --shard I/N` (`STEM.part-I-of-N.{npy,tsv,json}`) into the
//! `OUT.npy` + `OUT.tsv` one embed writes.
//!
//! Key decision: the float32 rows are copied byte for byte (never parsed and re-printed), the TSV rows
//! likewise, so the result is the parts' bytes in part order. Before anything is written, every part
//! 0…N−1 must be there exactly once, the parts must agree on checkpoint, store, backbone, normaliser,
//! selection, batch and width, their row counts must add up to the selection, and the `cell` column
//! must increase strictly across the joined table (cell order, no overlap).
use crate::formats::bare_stem;
use crate::store::npy::{header_bytes, parse_header, NpyDtype};
use crate::util::atomic::TempFile;
use crate::util::part::JobPart;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// One part's files and what they hold.
struct Part {
    part: JobPart,
    npy: PathBuf,
    tsv: PathBuf,
    run: Value,
    /// Rows and width of the npy, where its data starts, and the file mapped.
    rows: usize,
    dim: usize,
    data_offset: usize,
    map: memmap2::Mmap,
}

/// The run fields every part must share (name in errors, JSON pointer).
const SHARED: [(&str, &str); 8] = [
    ("checkpoint", "/checkpoint"),
    ("store", "/store"),
    ("backbone", "/backbone"),
    ("normalizer", "/normalizer"),
    ("width", "/dim"),
    ("selected cells", "/part/selected"),
    ("--batch", "/part/batch"),
    ("cell filter", "/part/filter"),
];

/// Open part `given` (a stem or one of its files): its tag, run JSON and npy header.
fn open_part(given: &Path) -> Result<Part> {
    let stem = bare_stem(given);
    let stem = stem.strip_suffix(".json").unwrap_or(&stem).to_string();
    let part = JobPart::from_tag(&stem).with_context(|| {
        format!(
            "{}: not an embed job part; expected STEM.part-I-of-N (or its .npy/.tsv/.json), as `setdino embed \
             --shard I/N` writes",
            given.display()
        )
    })?;
    let (npy, tsv, json) = (
        PathBuf::from(format!("{stem}.npy")),
        PathBuf::from(format!("{stem}.tsv")),
        PathBuf::from(format!("{stem}.json")),
    );
    let run: Value = serde_json::from_slice(
        &std::fs::read(&json).with_context(|| format!("reading {}", json.display()))?,
    )
    .with_context(|| format!("{}: not valid JSON", json.display()))?;
    let f = std::fs::File::open(&npy).with_context(|| format!("opening {}", npy.display()))?;
    // SAFETY: a read-only map of an input file that we do not modify.
    let map = unsafe { memmap2::Mmap::map(&f) }
        .with_context(|| format!("memory-mapping {}", npy.display()))?;
    // Also checks the data length against the shape.
    let h = parse_header(&map, &npy)?;
    if h.dtype != NpyDtype::F32 || h.shape.len() != 2 {
        bail!(
            "{}: {:?} array of shape {:?}, expected float32 rows × width",
            npy.display(),
            h.dtype,
            h.shape
        );
    }
    Ok(Part {
        part,
        npy,
        tsv,
        run,
        rows: h.shape[0],
        dim: h.shape[1],
        data_offset: h.data_offset,
        map,
    })
}

/// Refuse parts whose run differs from part 0's, or whose npy width differs from its run's.
fn check_agree(parts: &[Part]) -> Result<()> {
    let first = &parts[0];
    for p in parts {
        if u64::try_from(p.dim).ok() != p.run["dim"].as_u64() {
            bail!(
                "{}: {} columns, its {}.json says width {}",
                p.npy.display(),
                p.dim,
                p.part.tag(),
                p.run["dim"]
            );
        }
        for (what, ptr) in SHARED {
            let (a, b) = (first.run.pointer(ptr), p.run.pointer(ptr));
            if a != b {
                bail!(
                    "part {} ({}) differs from part {} ({}) in its {what}: {} vs {}; HINT: every part must come \
                     from the same `setdino embed … --shard I/N` command",
                    p.part.index,
                    p.npy.display(),
                    first.part.index,
                    first.npy.display(),
                    b.unwrap_or(&Value::Null),
                    a.unwrap_or(&Value::Null)
                );
            }
        }
    }
    let total: usize = parts.iter().map(|p| p.rows).sum();
    let selected = first.run.pointer("/part/selected").and_then(Value::as_u64);
    if u64::try_from(total).ok() != selected {
        bail!(
            "the parts hold {total} rows, but they were cut from {} selected cells; HINT: a part file was \
             replaced or truncated, re-run its embed",
            selected.map_or("an unknown number of".into(), |s| s.to_string())
        );
    }
    Ok(())
}

/// The joined TSV text: part 0's header, then every part's rows; checks each part's header and row count
/// and that the `cell` column increases strictly across parts.
fn join_tsv(parts: &[Part]) -> Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut header: Option<String> = None;
    let mut last_cell: Option<(u64, &Path)> = None;
    for p in parts {
        let f =
            std::fs::File::open(&p.tsv).with_context(|| format!("opening {}", p.tsv.display()))?;
        let mut lines = BufReader::new(f).lines();
        let h = lines
            .next()
            .transpose()?
            .with_context(|| format!("{}: empty, expected a header", p.tsv.display()))?;
        match &header {
            None => {
                if !h.starts_with("cell\t") {
                    bail!(
                        "{}: header {h:?} does not start with the cell column",
                        p.tsv.display()
                    );
                }
                writeln!(out, "{h}")?;
                header = Some(h);
            }
            Some(first) if *first != h => bail!(
                "{}: header differs from part 0's ({h:?} vs {first:?})",
                p.tsv.display()
            ),
            Some(_) => {}
        }
        let mut rows = 0usize;
        for line in lines {
            let line = line.with_context(|| format!("reading {}", p.tsv.display()))?;
            rows += 1;
            let field = line.split('\t').next().unwrap_or("");
            let cell: u64 = field.parse().with_context(|| {
                format!(
                    "{} line {}: cell {field:?} is not a cell number",
                    p.tsv.display(),
                    rows + 1
                )
            })?;
            if let Some((prev, at)) = last_cell.filter(|&(prev, _)| cell <= prev) {
                bail!(
                    "{} line {}: cell {cell} does not follow cell {prev} (of {}); HINT: the parts overlap or come \
                     from different selections",
                    p.tsv.display(),
                    rows + 1,
                    at.display()
                );
            }
            last_cell = Some((cell, &p.tsv));
            writeln!(out, "{line}")?;
        }
        if rows != p.rows {
            bail!(
                "{}: {rows} rows, {} has {}; HINT: a part file was replaced or truncated",
                p.tsv.display(),
                p.npy.display(),
                p.rows
            );
        }
    }
    Ok(out)
}

/// Copy the float32 rows of every part, in order, behind one header of `rows` × `dim`.
fn join_npy(parts: &[Part], rows: usize, dim: usize, to: &Path) -> Result<()> {
    let f = std::fs::File::create(to).with_context(|| format!("creating {}", to.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 22, f);
    w.write_all(&header_bytes(NpyDtype::F32, &[rows, dim]))?;
    for p in parts {
        w.write_all(&p.map[p.data_offset..])
            .with_context(|| format!("copying {} to {}", p.npy.display(), to.display()))?;
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()
        .with_context(|| format!("syncing {}", to.display()))?;
    Ok(())
}

/// Join the parts (stems or their files, any order) into `OUT.npy` + `OUT.tsv`; returns the two paths,
/// the rows and the width. Stages: open the parts, check each of 0…N−1 is there once, check that they
/// agree, join the tables (checking cell order), then the matrices; both files appear only when done.
pub fn merge(parts: &[PathBuf], out: &Path) -> Result<super::EmbedSummary> {
    let opened = parts
        .iter()
        .map(|p| open_part(p))
        .collect::<Result<Vec<_>>>()?;
    let ordered = JobPart::in_order(opened, |p| p.part, |p| p.npy.display().to_string())?;
    check_agree(&ordered)?;
    let tsv_text = join_tsv(&ordered)?;
    let (rows, dim) = (ordered.iter().map(|p| p.rows).sum(), ordered[0].dim);
    let b = bare_stem(out);
    let (npy_path, tsv_path) = (
        PathBuf::from(format!("{b}.npy")),
        PathBuf::from(format!("{b}.tsv")),
    );
    let npy_tmp = TempFile::new(&npy_path)?;
    join_npy(&ordered, rows, dim, npy_tmp.path())?;
    crate::util::atomic::write_atomic(&tsv_path, &tsv_text)?;
    npy_tmp.commit()?;
    Ok(super::EmbedSummary {
        paths: vec![npy_path, tsv_path],
        cells: rows,
        dim,
    })
}
