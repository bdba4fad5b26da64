//! AnnData output: a Zarr (V2) store that `anndata.read_zarr` opens — `X` = the features (float32,
//! cells × features), `obs` = the metadata frame (its first column is the index), `var` = the feature
//! names, `uns["setdino"]` = the run's metadata as a JSON string.
//!
//! Key decision: written with `zarrs` in the Zarr V2 layout of the AnnData on-disk spec (encoding-type /
//! encoding-version attributes, vlen-utf8 strings, categoricals as codes + categories), which both
//! zarr-python 2 and 3 (anndata 0.8 … 0.12) read. Chunks are uncompressed (float features barely
//! compress); `X` is chunked by rows and written as the rows arrive. The store is built under a temp name
//! beside the target (removed if the write fails) and renamed into place when complete.
use super::frame::{Frame, Values};
use crate::util::atomic::TempFile;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::{Array, ArrayMetadata};
use zarrs::filesystem::FilesystemStore;
use zarrs::group::{Group, GroupMetadata};

type Store = Arc<FilesystemStore>;

/// Bytes per `X` chunk (about; at least one row).
const CHUNK_BYTES: usize = 8 << 20;

fn attrs(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

fn group(store: &Store, path: &str, a: Value) -> Result<()> {
    let m: zarrs::metadata::v2::GroupMetadataV2 =
        serde_json::from_value(json!({"zarr_format": 2}))?;
    let mut g = Group::new_with_metadata(store.clone(), path, GroupMetadata::V2(m))
        .with_context(|| format!("zarr group {path}"))?;
    g.attributes_mut().extend(attrs(a));
    g.store_metadata()
        .with_context(|| format!("writing zarr group {path}"))?;
    Ok(())
}

fn array(
    store: &Store,
    path: &str,
    shape: Vec<u64>,
    chunks: Vec<u64>,
    dtype: &str,
    encoding: Value,
) -> Result<Array<FilesystemStore>> {
    let (fill, filters) = match dtype {
        "|O" => (json!(""), json!([{"id": "vlen-utf8"}])),
        "|b1" => (json!(false), Value::Null),
        _ => (json!(0), Value::Null),
    };
    let m = json!({"zarr_format": 2, "shape": shape, "chunks": chunks, "dtype": dtype, "compressor": null,
                   "fill_value": fill, "order": "C", "filters": filters});
    let m: zarrs::metadata::v2::ArrayMetadataV2 =
        serde_json::from_value(m).with_context(|| format!("zarr array {path}"))?;
    let mut a = Array::new_with_metadata(store.clone(), path, ArrayMetadata::V2(m))
        .with_context(|| format!("zarr array {path}"))?;
    a.attributes_mut().extend(attrs(encoding));
    a.store_metadata()
        .with_context(|| format!("writing zarr array {path}"))?;
    Ok(a)
}

/// A 1-D array of `v` in one chunk, with AnnData's `encoding-type` (`string-array` for `|O`, else `array`).
fn one_dim<T: zarrs::array::Element>(
    store: &Store,
    path: &str,
    dtype: &str,
    v: &[T],
) -> Result<()> {
    let n = u64::try_from(v.len())?;
    let kind = if dtype == "|O" {
        "string-array"
    } else {
        "array"
    };
    let a = array(
        store,
        path,
        vec![n],
        vec![n.max(1)],
        dtype,
        json!({"encoding-type": kind, "encoding-version": "0.2.0"}),
    )?;
    if n > 0 {
        a.store_chunk(&[0], v)
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

fn strings(store: &Store, path: &str, v: &[String]) -> Result<()> {
    let r: Vec<&str> = v.iter().map(String::as_str).collect();
    one_dim(store, path, "|O", &r)
}

fn numeric<T: zarrs::array::Element>(
    store: &Store,
    path: &str,
    dtype: &str,
    v: &[T],
) -> Result<()> {
    one_dim(store, path, dtype, v)
}

fn column(store: &Store, path: &str, v: &Values) -> Result<()> {
    match v {
        Values::Str(s) => strings(store, path, s),
        Values::Cat { codes, levels } => {
            group(
                store,
                path,
                json!({"encoding-type": "categorical", "encoding-version": "0.2.0", "ordered": false}),
            )?;
            let codes: Vec<i32> = codes
                .iter()
                .map(|&c| i32::try_from(c).context("more than 2^31 categories"))
                .collect::<Result<_>>()?;
            numeric(store, &format!("{path}/codes"), "<i4", &codes)?;
            strings(store, &format!("{path}/categories"), levels)
        }
        Values::I64(x) => numeric(store, path, "<i8", x),
        Values::U64(x) => numeric(store, path, "<u8", x),
        Values::F32(x) => numeric(store, path, "<f4", x),
        Values::F64(x) => numeric(store, path, "<f8", x),
        Values::Bool(x) => numeric(store, path, "|b1", x),
    }
}

/// A data frame group: `index` values, then the columns.
fn dataframe(store: &Store, path: &str, index: &[String], cols: &[(&str, &Values)]) -> Result<()> {
    for (name, _) in cols {
        if *name == "_index" || name.contains('/') {
            bail!("AnnData column name {name:?} is reserved or contains '/'");
        }
    }
    let order: Vec<&str> = cols.iter().map(|c| c.0).collect();
    group(
        store,
        path,
        json!({"encoding-type": "dataframe", "encoding-version": "0.2.0", "_index": "_index",
               "column-order": order}),
    )?;
    strings(store, &format!("{path}/_index"), index)?;
    for (name, v) in cols {
        column(store, &format!("{path}/{name}"), v)?;
    }
    Ok(())
}

/// Streams the rows of `X` into an AnnData store.
pub struct AnnDataWriter {
    store: Store,
    x: Array<FilesystemStore>,
    rows: usize,
    dim: usize,
    chunk_rows: usize,
    done: usize,
    pending: Vec<f32>,
    uns: Value,
    /// The store being built (removed if the writer is dropped before `finish`).
    tmp: TempFile,
    dir: PathBuf,
}

impl AnnDataWriter {
    /// `obs`: one row per cell, its first column the index (made text); `var`: the feature names.
    pub fn create(dir: &Path, obs: &Frame, var: &[String], uns: Value) -> Result<AnnDataWriter> {
        let tmp = TempFile::new(dir)?;
        let store: Store = Arc::new(
            FilesystemStore::new(tmp.path())
                .with_context(|| format!("creating {}", tmp.path().display()))?,
        );
        group(
            &store,
            "/",
            json!({"encoding-type": "anndata", "encoding-version": "0.1.0"}),
        )?;
        let rows = obs.rows();
        let dim = var.len();
        let Some((first, rest)) = obs.columns.split_first() else {
            bail!("AnnData obs needs at least an index column");
        };
        let index: Vec<String> = (0..rows).map(|k| first.values.string(k)).collect();
        let cols: Vec<(&str, &Values)> =
            rest.iter().map(|c| (c.name.as_str(), &c.values)).collect();
        dataframe(&store, "/obs", &index, &cols)?;
        dataframe(&store, "/var", var, &[])?;
        for g in ["obsm", "varm", "obsp", "varp", "layers"] {
            group(
                &store,
                &format!("/{g}"),
                json!({"encoding-type": "dict", "encoding-version": "0.1.0"}),
            )?;
        }
        let chunk_rows = (CHUNK_BYTES / (4 * dim.max(1))).clamp(1, rows.max(1));
        let x = array(
            &store,
            "/X",
            vec![rows as u64, dim as u64],
            vec![chunk_rows as u64, dim.max(1) as u64],
            "<f4",
            json!({"encoding-type": "array", "encoding-version": "0.2.0"}),
        )?;
        Ok(AnnDataWriter {
            store,
            x,
            rows,
            dim,
            chunk_rows,
            done: 0,
            pending: Vec::new(),
            uns,
            tmp,
            dir: dir.into(),
        })
    }

    /// Append whole rows of `X`.
    pub fn write(&mut self, rows: &[f32]) -> Result<()> {
        ensure!(
            self.dim == 0 || rows.len().is_multiple_of(self.dim),
            "{} values are not whole rows of {}",
            rows.len(),
            self.dim
        );
        self.pending.extend_from_slice(rows);
        while self.dim > 0 && self.pending.len() >= self.chunk_rows * self.dim {
            self.flush(self.chunk_rows)?;
        }
        Ok(())
    }

    fn flush(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        ensure!(
            self.done + n <= self.rows,
            "more rows of X ({}) than obs rows ({})",
            self.done + n,
            self.rows
        );
        let c = (self.done / self.chunk_rows) as u64;
        let mut chunk = self.pending[..n * self.dim].to_vec();
        // A last, partial chunk is padded to the chunk shape (Zarr V2 stores whole chunks).
        chunk.resize(self.chunk_rows * self.dim, 0.0);
        self.x
            .store_chunk(&[c, 0], &chunk)
            .with_context(|| format!("writing X chunk {c} of {}", self.dir.display()))?;
        self.pending.drain(..n * self.dim);
        self.done += n;
        Ok(())
    }

    /// Write the last rows and `uns`, then move the store into place (replacing an older one).
    pub fn finish(mut self) -> Result<PathBuf> {
        let left = self.pending.len().checked_div(self.dim).unwrap_or(0);
        self.flush(left)?;
        if self.dim == 0 {
            self.done = self.rows;
        }
        ensure!(
            self.done == self.rows,
            "{} rows of X for {} obs rows",
            self.done,
            self.rows
        );
        group(
            &self.store,
            "/uns",
            json!({"encoding-type": "dict", "encoding-version": "0.1.0"}),
        )?;
        let a = array(
            &self.store,
            "/uns/setdino",
            vec![],
            vec![],
            "|O",
            json!({"encoding-type": "string", "encoding-version": "0.2.0"}),
        )?;
        let text = self.uns.to_string();
        a.store_chunk(&[], &[text.as_str()])
            .context("writing uns/setdino")?;
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("replacing {}", self.dir.display()))?;
        }
        self.tmp.commit()?;
        Ok(self.dir)
    }
}

/// An AnnData store read back (what [`AnnDataWriter`] writes): for round-trip tests and `eval`.
pub struct AnnData {
    pub x: Vec<f32>,
    pub n: usize,
    pub d: usize,
    pub obs_index: Vec<String>,
    /// Each obs column as text.
    pub obs: Vec<(String, Vec<String>)>,
    pub var: Vec<String>,
    pub uns: Value,
}

fn read_strings(store: &Store, path: &str) -> Result<Vec<String>> {
    let a = Array::open(store.clone(), path).with_context(|| format!("opening {path}"))?;
    Ok(a.retrieve_array_subset::<Vec<String>>(&a.subset_all())?)
}

fn read_column(store: &Store, path: &str) -> Result<Vec<String>> {
    let g = Group::open(store.clone(), path);
    if let Ok(g) = g {
        if g.attributes().get("encoding-type") == Some(&json!("categorical")) {
            let cats = read_strings(store, &format!("{path}/categories"))?;
            let a = Array::open(store.clone(), &format!("{path}/codes"))?;
            let codes = a.retrieve_array_subset::<Vec<i32>>(&a.subset_all())?;
            return codes
                .iter()
                .map(|&c| {
                    usize::try_from(c)
                        .ok()
                        .and_then(|c| cats.get(c).cloned())
                        .with_context(|| format!("{path}: code {c} out of range"))
                })
                .collect();
        }
    }
    let a = Array::open(store.clone(), path).with_context(|| format!("opening {path}"))?;
    let sub = a.subset_all();
    let dt = a.data_type().clone();
    use zarrs::array::data_type as t;
    fn text<T: ToString>(v: Vec<T>) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }
    Ok(if dt == t::string() {
        a.retrieve_array_subset::<Vec<String>>(&sub)?
    } else if dt == t::int64() {
        text(a.retrieve_array_subset::<Vec<i64>>(&sub)?)
    } else if dt == t::uint64() {
        text(a.retrieve_array_subset::<Vec<u64>>(&sub)?)
    } else if dt == t::float32() {
        text(a.retrieve_array_subset::<Vec<f32>>(&sub)?)
    } else if dt == t::float64() {
        text(a.retrieve_array_subset::<Vec<f64>>(&sub)?)
    } else if dt == t::bool() {
        a.retrieve_array_subset::<Vec<bool>>(&sub)?
            .iter()
            .map(|&b| if b { "True" } else { "False" }.to_string())
            .collect()
    } else {
        bail!("{path}: data type {dt} is not read back")
    })
}

/// Read an AnnData store written by [`AnnDataWriter`].
pub fn read(dir: &Path) -> Result<AnnData> {
    let store: Store =
        Arc::new(FilesystemStore::new(dir).with_context(|| format!("opening {}", dir.display()))?);
    let x = Array::open(store.clone(), "/X").with_context(|| format!("{}: no X", dir.display()))?;
    let shape = x.shape().to_vec();
    ensure!(shape.len() == 2, "{}: X is not 2-D", dir.display());
    let (n, d) = (usize::try_from(shape[0])?, usize::try_from(shape[1])?);
    let xs = x.retrieve_array_subset::<Vec<f32>>(&x.subset_all())?;
    let obs = Group::open(store.clone(), "/obs")?;
    let order: Vec<String> = obs
        .attributes()
        .get("column-order")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let obs_index = read_strings(&store, "/obs/_index")?;
    let mut cols = Vec::new();
    for c in order {
        let v = read_column(&store, &format!("/obs/{c}"))?;
        cols.push((c, v));
    }
    let var = read_strings(&store, "/var/_index")?;
    let u = Array::open(store.clone(), "/uns/setdino")?;
    let s = u.retrieve_array_subset::<Vec<String>>(&u.subset_all())?;
    let uns = serde_json::from_str(s.first().map_or("null", String::as_str))?;
    Ok(AnnData {
        x: xs,
        n,
        d,
        obs_index,
        obs: cols,
        var,
        uns,
    })
}
