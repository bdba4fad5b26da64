//! Parquet output: the metadata columns of a [`Frame`] followed by one float32 column per feature, in one
//! file that `pandas.read_parquet` loads as one data frame.
//!
//! Key decision: the low-level column writer of the `parquet` crate (no Arrow arrays): rows arrive in
//! batches (an embedding run streams them) and are written in row groups of at most 64 MiB of features
//! ([`group_rows`]), so memory stays at one row group whatever the table's length. Strings are dictionary-encoded, features are plain
//! float32; Snappy-compressed (pandas' default). Two key-value entries let setdino (and a reader who cares)
//! find the features again: `setdino.feature_columns` (the first feature column and the count) and
//! `setdino.meta` (the run's JSON).
use super::frame::{Frame, Values};
use anyhow::{ensure, Context, Result};
use parquet::basic::{Compression, LogicalType, Repetition, Type as Physical};
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnPath, Type};
use std::path::Path;
use std::sync::Arc;

/// Rows per row group at most (pandas/pyarrow's default is 1 Mi rows; fewer keep memory bounded).
pub const ROWS_PER_GROUP: usize = 65_536;
/// Feature bytes buffered per row group at most: a 1536-wide embedding gets 10 922-row groups.
pub const GROUP_BYTES: usize = 64 << 20;

/// Rows per row group for `dim` float32 features: [`GROUP_BYTES`] of features, 1 … [`ROWS_PER_GROUP`].
pub fn group_rows(dim: usize) -> usize {
    (GROUP_BYTES / (4 * dim.max(1))).clamp(1, ROWS_PER_GROUP)
}

fn column_type(name: &str, v: &Values) -> Result<Type> {
    let (phys, logical) = match v {
        Values::Str(_) | Values::Cat { .. } => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
        Values::I64(_) => (Physical::INT64, None),
        Values::U64(_) => (Physical::INT64, Some(LogicalType::integer(64, false))),
        Values::F32(_) => (Physical::FLOAT, None),
        Values::F64(_) => (Physical::DOUBLE, None),
        Values::Bool(_) => (Physical::BOOLEAN, None),
    };
    Ok(Type::primitive_type_builder(name, phys)
        .with_repetition(Repetition::REQUIRED)
        .with_logical_type(logical)
        .build()?)
}

/// Streams rows of features into a Parquet file beside their metadata frame.
pub struct ParquetWriter {
    w: SerializedFileWriter<std::fs::File>,
    meta: Frame,
    dim: usize,
    /// Rows written so far and features of the rows not yet in a row group.
    done: usize,
    pending: Vec<f32>,
    path: String,
    /// Rows per row group ([`group_rows`] of the width unless set).
    group: usize,
}

impl ParquetWriter {
    /// `meta` holds every row's metadata; `features` names the `dim` feature columns; `run` is stored as
    /// the `setdino.meta` key-value entry.
    pub fn create(
        path: &Path,
        meta: Frame,
        features: &[String],
        run: &serde_json::Value,
    ) -> Result<ParquetWriter> {
        let mut fields = Vec::new();
        for c in &meta.columns {
            fields.push(Arc::new(column_type(&c.name, &c.values)?));
        }
        for f in features {
            fields.push(Arc::new(column_type(f, &Values::F32(Vec::new()))?));
        }
        let schema = Type::group_type_builder("schema")
            .with_fields(fields)
            .build()?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            .set_created_by(format!("setdino {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![
                KeyValue::new(
                    "setdino.feature_columns".into(),
                    serde_json::json!({"first": meta.columns.len(), "count": features.len()})
                        .to_string(),
                ),
                KeyValue::new("setdino.meta".into(), run.to_string()),
            ]));
        for c in &meta.columns {
            if matches!(c.values, Values::Str(_) | Values::Cat { .. }) {
                props =
                    props.set_column_dictionary_enabled(ColumnPath::from(c.name.as_str()), true);
            }
        }
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let w = SerializedFileWriter::new(f, Arc::new(schema), Arc::new(props.build()))
            .with_context(|| format!("{}: Parquet schema", path.display()))?;
        Ok(ParquetWriter {
            w,
            meta,
            dim: features.len(),
            done: 0,
            pending: Vec::new(),
            path: path.display().to_string(),
            group: group_rows(features.len()),
        })
    }

    /// Rows per row group (at least 1), instead of [`group_rows`]'s choice.
    pub fn with_group_rows(mut self, n: usize) -> ParquetWriter {
        self.group = n.max(1);
        self
    }

    /// Append whole rows of features (a multiple of `dim` values).
    pub fn write(&mut self, rows: &[f32]) -> Result<()> {
        ensure!(
            self.dim == 0 || rows.len().is_multiple_of(self.dim),
            "{}: {} values are not whole rows of {}",
            self.path,
            rows.len(),
            self.dim
        );
        self.pending.extend_from_slice(rows);
        let n = self.group;
        while self.dim > 0 && self.pending.len() >= n * self.dim {
            self.flush(n)?;
        }
        Ok(())
    }

    /// Write the first `n` pending rows as one row group.
    fn flush(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let (a, b) = (self.done, self.done + n);
        ensure!(
            b <= self.meta.rows(),
            "{}: more feature rows ({b}) than metadata rows ({})",
            self.path,
            self.meta.rows()
        );
        let mut rg = self.w.next_row_group()?;
        let mut k = 0usize;
        while let Some(mut col) = rg.next_column()? {
            let nm = self.meta.columns.len();
            if k < nm {
                write_meta_column(col.untyped(), &self.meta.columns[k].values, a, b)?;
            } else {
                let f = k - nm;
                let vals: Vec<f32> = (0..n).map(|r| self.pending[r * self.dim + f]).collect();
                if let ColumnWriter::FloatColumnWriter(t) = col.untyped() {
                    t.write_batch(&vals, None, None)?;
                }
            }
            col.close()?;
            k += 1;
        }
        rg.close()?;
        self.pending.drain(..n * self.dim);
        self.done = b;
        Ok(())
    }

    /// Write the last row group and the footer; every metadata row must have had its features.
    pub fn finish(mut self) -> Result<()> {
        let left = self
            .pending
            .len()
            .checked_div(self.dim)
            .unwrap_or(self.meta.rows() - self.done);
        self.flush(left)?;
        ensure!(
            self.done == self.meta.rows(),
            "{}: {} feature rows for {} metadata rows",
            self.path,
            self.done,
            self.meta.rows()
        );
        let f = self.w.into_inner()?;
        f.sync_all()?;
        Ok(())
    }
}

fn write_meta_column(w: &mut ColumnWriter<'_>, v: &Values, a: usize, b: usize) -> Result<()> {
    match (w, v) {
        (ColumnWriter::ByteArrayColumnWriter(t), v @ (Values::Str(_) | Values::Cat { .. })) => {
            let vals: Vec<ByteArray> = (a..b)
                .map(|k| ByteArray::from(v.string(k).as_str()))
                .collect();
            t.write_batch(&vals, None, None)?;
        }
        (ColumnWriter::Int64ColumnWriter(t), Values::I64(x)) => {
            t.write_batch(&x[a..b], None, None)?;
        }
        (ColumnWriter::Int64ColumnWriter(t), Values::U64(x)) => {
            // UINT_64 is stored as the two's-complement bit pattern (the format's definition).
            let vals: Vec<i64> = x[a..b].iter().map(|&u| u as i64).collect();
            t.write_batch(&vals, None, None)?;
        }
        (ColumnWriter::FloatColumnWriter(t), Values::F32(x)) => {
            t.write_batch(&x[a..b], None, None)?;
        }
        (ColumnWriter::DoubleColumnWriter(t), Values::F64(x)) => {
            t.write_batch(&x[a..b], None, None)?;
        }
        (ColumnWriter::BoolColumnWriter(t), Values::Bool(x)) => {
            t.write_batch(&x[a..b], None, None)?;
        }
        _ => anyhow::bail!("internal: Parquet column type does not match its values"),
    }
    Ok(())
}

/// A Parquet file read back: metadata columns as text and the features (for round trips and `eval`).
pub struct ParquetTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub feature_names: Vec<String>,
    pub features: Vec<f32>,
}

/// Read a file written by [`ParquetWriter`] (the `setdino.feature_columns` entry says which columns are
/// features).
pub fn read(path: &Path) -> Result<ParquetTable> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let r = SerializedFileReader::new(f)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let kv = r
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    let fc = kv
        .iter()
        .find(|e| e.key == "setdino.feature_columns")
        .and_then(|e| e.value.as_deref())
        .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
        .with_context(|| {
            format!(
                "{}: no setdino.feature_columns entry; HINT: only files written by setdino (--format parquet) say \
                 which columns are features",
                path.display()
            )
        })?;
    let first = fc["first"]
        .as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .unwrap_or(0);
    let names: Vec<String> = r
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    ensure!(
        first <= names.len(),
        "{}: feature columns start past the end",
        path.display()
    );
    let mut out = ParquetTable {
        header: names[..first].to_vec(),
        rows: Vec::new(),
        feature_names: names[first..].to_vec(),
        features: Vec::new(),
    };
    for row in r.into_iter() {
        let row = row.with_context(|| format!("reading {}", path.display()))?;
        let mut meta = Vec::with_capacity(first);
        for (k, (_, v)) in row.get_column_iter().enumerate() {
            if k < first {
                meta.push(super::table::field_text(v));
            } else {
                match v {
                    Field::Float(x) => out.features.push(*x),
                    other => anyhow::bail!(
                        "{}: feature column {} holds {other}, expected float32",
                        path.display(),
                        names[k]
                    ),
                }
            }
        }
        out.rows.push(meta);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_written_in_uneven_batches_over_several_groups_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut meta = Frame::default();
        meta.push("cell", Values::I64((0..10).collect()));
        meta.push(
            "gene",
            Values::Cat {
                codes: (0..10).map(|k| k % 3).collect(),
                levels: vec!["a".into(), "b".into(), "c".into()],
            },
        );
        meta.push("ok", Values::Bool((0..10).map(|k| k % 2 == 0).collect()));
        let x: Vec<f32> = (0..20).map(|k| k as f32 * 0.5 - 3.0).collect();
        let names = vec!["f0".to_string(), "f1".to_string()];
        let mut w = ParquetWriter::create(&path, meta, &names, &serde_json::json!({"k": 1}))
            .unwrap()
            .with_group_rows(3);
        for part in [&x[..8], &x[8..18], &x[18..]] {
            w.write(part).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(row_groups(&path), 4, "10 rows in groups of 3");
        let t = read(&path).unwrap();
        assert_eq!(t.features, x);
        assert_eq!(t.header, vec!["cell", "gene", "ok"]);
        assert_eq!(t.rows[4], vec!["4", "b", "True"]);
        assert_eq!(t.feature_names, names);
        // A wrong number of rows is an error, not a short file.
        let mut meta = Frame::default();
        meta.push("cell", Values::I64(vec![0, 1]));
        let w = ParquetWriter::create(&path, meta, &names, &serde_json::json!({})).unwrap();
        assert!(w.finish().is_err());
    }

    fn row_groups(path: &Path) -> usize {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let r = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        r.metadata().num_row_groups()
    }
}
