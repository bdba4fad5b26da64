//! Export chosen cells to `stem.npy` (float32 in [0, 1], N×C×H×W, C order) and `stem.tsv` (one header line,
//! one row per cell, same order), the exchange format Python users read with numpy and pandas.
//!
//! Key decision: the TSV always has `cell plate well batch tile cell_id i j gene sgRNA is_ntc` (cell = index
//! in the store, batch = `plate_well`, is_ntc as `True`/`False`), followed by the store's extra columns.
use super::npy::NpyWriter;
use super::reader::Store;
use crate::formats::frame::{Frame, Values};
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
    export_with(store, cells, stem, false)
}

/// [`export`], with the metadata as `STEM.parquet` instead of `STEM.tsv` when `parquet` (the same columns,
/// typed: plate/well/batch/gene/sgRNA as strings, cell/tile/cell_id as integers, i/j float32, is_ntc
/// boolean; `import-crops --meta STEM.parquet` reads it back).
pub fn export_with(
    store: &Store,
    cells: &[u32],
    stem: &Path,
    parquet: bool,
) -> Result<(PathBuf, PathBuf)> {
    let (npy, tsv) = stem_paths(stem);
    let meta_path = if parquet {
        tsv.with_extension("parquet")
    } else {
        tsv
    };
    if let Some(d) = npy.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let (c, s) = (store.channels(), store.crop());
    // Temp names, renamed into place only when complete (a failed or killed export leaves no file that
    // looks complete; the guards remove the temps of a failed one).
    let npy_t = TempFile::new(&npy)?;
    let mut w = NpyWriter::create(npy_t.path(), &[cells.len(), c, s, s])?;
    let mut buf = vec![0f32; store.crop_len()];
    for &k in cells {
        store.crop_f32(k as usize, &mut buf)?;
        w.write(&buf)?;
    }
    w.finish()?;
    if parquet {
        let run =
            serde_json::json!({"command": "store export", "store": store.dir(), "crops": npy});
        crate::formats::write_matrix(
            &meta_path,
            crate::formats::Format::Parquet,
            cell_frame(store, cells)?,
            &[],
            run,
            &[],
        )?;
    } else {
        let tsv_t = TempFile::new(&meta_path)?;
        write_cell_tsv(store, cells, tsv_t.path())?;
        tsv_t.commit()?;
    }
    npy_t.commit()?;
    Ok((npy, meta_path))
}

/// The metadata of `cells` (in that order): the fixed columns ([`TSV_COLUMNS`]), then the store's extra
/// columns (as text). Plate, well, batch, gene and sgRNA are categorical over the store's dictionaries.
pub fn cell_frame(store: &Store, cells: &[u32]) -> Result<Frame> {
    let m = store.manifest();
    let meta = store.read_meta()?;
    let recs: Vec<_> = cells.iter().map(|&k| store.record(k as usize)).collect();
    let cat = |f: &dyn Fn(&crate::store::CellRecord) -> u32, levels: Vec<String>| Values::Cat {
        codes: recs.iter().map(|r| f(r)).collect(),
        levels,
    };
    let batches: Vec<String> = (0..m.batches.len())
        .map(|b| m.batch_name(u32::try_from(b).unwrap_or(u32::MAX)))
        .collect();
    let mut fr = Frame::default();
    fr.push(
        "cell",
        Values::I64(cells.iter().map(|&k| i64::from(k)).collect()),
    );
    fr.push("plate", cat(&|r| r.plate, m.plates.clone()));
    fr.push("well", cat(&|r| r.well, m.wells.clone()));
    fr.push("batch", cat(&|r| r.batch, batches));
    fr.push(
        "tile",
        Values::I64(recs.iter().map(|r| i64::from(r.tile)).collect()),
    );
    fr.push(
        "cell_id",
        Values::U64(recs.iter().map(|r| r.cell_id).collect()),
    );
    fr.push("i", Values::F32(recs.iter().map(|r| r.i).collect()));
    fr.push("j", Values::F32(recs.iter().map(|r| r.j).collect()));
    fr.push("gene", cat(&|r| r.gene, m.genes.clone()));
    fr.push("sgRNA", cat(&|r| r.sgrna, m.sgrnas.clone()));
    fr.push(
        "is_ntc",
        Values::Bool(recs.iter().map(|r| r.is_ntc()).collect()),
    );
    for (c, name) in m.meta_columns.iter().enumerate() {
        let col = cells
            .iter()
            .map(|&k| {
                meta.get(k as usize)
                    .and_then(|row| row.get(c))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        fr.push(name, Values::Str(col));
    }
    Ok(fr)
}

/// The metadata table of `cells` (in that order) as TSV: [`cell_frame`]'s columns.
pub fn write_cell_tsv(store: &Store, cells: &[u32], tsv: &Path) -> Result<()> {
    let fr = cell_frame(store, cells)?;
    let f = std::fs::File::create(tsv).with_context(|| format!("creating {}", tsv.display()))?;
    let mut t = std::io::BufWriter::new(f);
    fr.write_tsv(&mut t)
        .with_context(|| format!("writing {}", tsv.display()))?;
    t.flush()?;
    t.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}
