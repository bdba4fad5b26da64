//! Export chosen cells to `stem.npy` (float32 in [0, 1], N×C×H×W, C order) and `stem.tsv` (one header line,
//! one row per cell, same order), the exchange format Python users read with numpy and pandas.
//!
//! Key decision: the TSV always has `cell plate well batch tile cell_id i j gene sgRNA is_ntc` (cell = index
//! in the store, batch = `plate_well`, is_ntc as `True`/`False`), followed by the store's extra columns.
use super::npy::NpyWriter;
use super::reader::Store;
use crate::util::atomic::TempFile;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `stem.npy` and `stem.tsv` paths for an output stem (a trailing `.npy` or `.tsv` is dropped).
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

/// The fixed TSV columns.
pub const TSV_COLUMNS: [&str; 11] = [
    "cell", "plate", "well", "batch", "tile", "cell_id", "i", "j", "gene", "sgRNA", "is_ntc",
];

/// Write the selected cells; returns the two paths.
pub fn export(store: &Store, cells: &[u32], stem: &Path) -> Result<(PathBuf, PathBuf)> {
    let (npy, tsv) = stem_paths(stem);
    if let Some(d) = npy.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let (c, s) = (store.channels(), store.crop());
    // Temp names, renamed into place only when complete (a failed or killed export leaves no file that
    // looks complete; the guards remove the temps of a failed one).
    let (npy_t, tsv_t) = (TempFile::new(&npy)?, TempFile::new(&tsv)?);
    let mut w = NpyWriter::create(npy_t.path(), &[cells.len(), c, s, s])?;
    let mut buf = vec![0f32; store.crop_len()];
    for &k in cells {
        store.crop_f32(k as usize, &mut buf)?;
        w.write(&buf)?;
    }
    w.finish()?;
    write_cell_tsv(store, cells, tsv_t.path())?;
    tsv_t.commit()?;
    npy_t.commit()?;
    Ok((npy, tsv))
}

/// The metadata table of `cells` (in that order): the fixed columns, then the store's extra columns.
pub fn write_cell_tsv(store: &Store, cells: &[u32], tsv: &Path) -> Result<()> {
    let m = store.manifest();
    let meta = store.read_meta()?;
    let f = std::fs::File::create(tsv).with_context(|| format!("creating {}", tsv.display()))?;
    let mut t = std::io::BufWriter::new(f);
    let mut header: Vec<String> = TSV_COLUMNS.iter().map(|s| s.to_string()).collect();
    header.extend(m.meta_columns.iter().cloned());
    writeln!(t, "{}", header.join("\t"))?;
    for &k in cells {
        let r = store.record(k as usize);
        write!(
            t,
            "{k}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            m.plates[r.plate as usize],
            m.wells[r.well as usize],
            m.batch_name(r.batch),
            r.tile,
            r.cell_id,
            r.i,
            r.j,
            m.genes[r.gene as usize],
            m.sgrnas[r.sgrna as usize],
            if r.is_ntc() { "True" } else { "False" }
        )?;
        if let Some(row) = meta.get(k as usize) {
            for v in row {
                write!(t, "\t{v}")?;
            }
        }
        writeln!(t)?;
    }
    t.flush()?;
    t.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}
