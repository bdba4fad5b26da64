//! Tables and matrices in the formats users' pipelines speak: CSV/TSV and Parquet tables in
//! ([`table`]), OME-Zarr tiles in ([`ome_zarr`]), and feature matrices out as `.npy` + `.tsv`, one Parquet
//! file, or an AnnData Zarr store ([`MatrixWriter`]).
pub mod anndata;
pub mod frame;
pub mod ome_zarr;
pub mod parquet;
pub mod table;

use anyhow::{Context, Result};
use frame::Frame;
use std::path::{Path, PathBuf};

/// The output format of a feature matrix (`--format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// STEM.npy (float32, rows × features) + STEM.tsv (the metadata), for numpy + pandas.
    #[default]
    Npy,
    /// STEM.parquet: the metadata columns, then one float32 column per feature (`pd.read_parquet`).
    Parquet,
    /// STEM.zarr: an AnnData store (`anndata.read_zarr`; X = features, obs = metadata).
    Anndata,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Npy => "npy",
            Format::Parquet => "parquet",
            Format::Anndata => "anndata",
        }
    }
}

/// An output stem without any of the formats' suffixes.
pub fn bare_stem(stem: &Path) -> String {
    let s = stem.to_string_lossy();
    let mut b: &str = &s;
    for suf in [".npy", ".tsv", ".parquet", ".zarr"] {
        if let Some(x) = b.strip_suffix(suf) {
            b = x;
            break;
        }
    }
    b.trim_end_matches('/').to_string()
}

/// The files (or store) a matrix output of `format` writes for `stem`.
pub fn output_paths(stem: &Path, format: Format) -> Vec<PathBuf> {
    let b = bare_stem(stem);
    match format {
        Format::Npy => vec![format!("{b}.npy").into(), format!("{b}.tsv").into()],
        Format::Parquet => vec![format!("{b}.parquet").into()],
        Format::Anndata => vec![format!("{b}.zarr").into()],
    }
}

enum Inner {
    Npy {
        w: crate::store::npy::NpyWriter,
        npy: crate::util::atomic::TempFile,
        tsv: crate::util::atomic::TempFile,
        meta: Frame,
    },
    Parquet {
        w: Box<parquet::ParquetWriter>,
        file: crate::util::atomic::TempFile,
    },
    AnnData(Box<anndata::AnnDataWriter>),
}

/// Writes a rows × features float32 matrix and its row metadata in one of the [`Format`]s, streaming the
/// rows; nothing appears at the final paths unless `finish` succeeds.
pub struct MatrixWriter {
    inner: Inner,
    paths: Vec<PathBuf>,
}

impl MatrixWriter {
    /// `meta`: one row per matrix row (the first column is the AnnData index); `features`: the column
    /// names; `run`: metadata stored in the Parquet footer / AnnData `uns["setdino"]` (not in npy).
    pub fn create(
        stem: &Path,
        format: Format,
        meta: Frame,
        features: &[String],
        run: serde_json::Value,
    ) -> Result<MatrixWriter> {
        let paths = output_paths(stem, format);
        if let Some(d) = paths[0].parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        use crate::util::atomic::TempFile;
        let inner = match format {
            Format::Npy => {
                let npy = TempFile::new(&paths[0])?;
                let tsv = TempFile::new(&paths[1])?;
                let w = crate::store::npy::NpyWriter::create(
                    npy.path(),
                    &[meta.rows(), features.len()],
                )?;
                Inner::Npy { w, npy, tsv, meta }
            }
            Format::Parquet => {
                let file = TempFile::new(&paths[0])?;
                let w = Box::new(parquet::ParquetWriter::create(
                    file.path(),
                    meta,
                    features,
                    &run,
                )?);
                Inner::Parquet { w, file }
            }
            Format::Anndata => Inner::AnnData(Box::new(anndata::AnnDataWriter::create(
                &paths[0], &meta, features, run,
            )?)),
        };
        Ok(MatrixWriter { inner, paths })
    }

    /// Append whole rows.
    pub fn write(&mut self, rows: &[f32]) -> Result<()> {
        match &mut self.inner {
            Inner::Npy { w, .. } => w.write(rows),
            Inner::Parquet { w, .. } => w.write(rows),
            Inner::AnnData(w) => w.write(rows),
        }
    }

    /// Complete the output and move it into place; returns the paths written.
    pub fn finish(self) -> Result<Vec<PathBuf>> {
        match self.inner {
            Inner::Npy { w, npy, tsv, meta } => {
                w.finish()?;
                let f = std::fs::File::create(tsv.path())
                    .with_context(|| format!("creating {}", tsv.path().display()))?;
                let mut b = std::io::BufWriter::new(f);
                meta.write_tsv(&mut b)
                    .with_context(|| format!("writing {}", tsv.path().display()))?;
                b.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                tsv.commit()?;
                npy.commit()?;
            }
            Inner::Parquet { w, file } => {
                w.finish()?;
                file.commit()?;
            }
            Inner::AnnData(w) => {
                w.finish()?;
            }
        }
        Ok(self.paths)
    }
}

/// Write a whole in-memory matrix (`x`: rows × features, row-major).
pub fn write_matrix(
    stem: &Path,
    format: Format,
    meta: Frame,
    features: &[String],
    run: serde_json::Value,
    x: &[f32],
) -> Result<Vec<PathBuf>> {
    let mut w = MatrixWriter::create(stem, format, meta, features, run)?;
    w.write(x)?;
    w.finish()
}

/// `prefix0 … prefix{d-1}`.
pub fn numbered(prefix: &str, d: usize) -> Vec<String> {
    (0..d).map(|k| format!("{prefix}{k}")).collect()
}

/// A matrix output of setdino read back whole: the metadata header and rows as text (AnnData: `cell` =
/// the obs index, then the obs columns), the row-major matrix and the file it came from.
pub struct LoadedMatrix {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub x: Vec<f32>,
    pub n: usize,
    pub d: usize,
    pub path: PathBuf,
}

/// `STEM.parquet` or the AnnData `STEM.zarr` that `--format` wrote, or None when the npy pair is meant:
/// a stem naming a file picks its format; a bare stem takes the npy pair when `STEM.npy` exists, else the
/// Parquet file, else the AnnData store.
pub fn read_matrix(stem: &Path) -> Result<Option<LoadedMatrix>> {
    let s = stem.to_string_lossy();
    let b = bare_stem(stem);
    let (pq, zarr) = (
        PathBuf::from(format!("{b}.parquet")),
        PathBuf::from(format!("{b}.zarr")),
    );
    let bare = !(s.ends_with(".npy")
        || s.ends_with(".tsv")
        || s.ends_with(".parquet")
        || s.ends_with(".zarr"));
    let no_npy = bare && !Path::new(&format!("{b}.npy")).exists();
    if s.ends_with(".parquet") || (no_npy && pq.exists()) {
        let t = parquet::read(&pq)?;
        let (n, d) = (t.rows.len(), t.feature_names.len());
        return Ok(Some(LoadedMatrix {
            header: t.header,
            rows: t.rows,
            x: t.features,
            n,
            d,
            path: pq,
        }));
    }
    if s.ends_with(".zarr") || (no_npy && zarr.exists()) {
        let a = anndata::read(&zarr)?;
        let mut header = vec!["cell".to_string()];
        header.extend(a.obs.iter().map(|(c, _)| c.clone()));
        let rows = (0..a.n)
            .map(|k| {
                let mut r = vec![a.obs_index[k].clone()];
                r.extend(a.obs.iter().map(|(_, v)| v[k].clone()));
                r
            })
            .collect();
        return Ok(Some(LoadedMatrix {
            header,
            rows,
            x: a.x,
            n: a.n,
            d: a.d,
            path: zarr,
        }));
    }
    Ok(None)
}
