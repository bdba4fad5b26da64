//! Input tables (tiles, cells, crop metadata) as string records, from CSV/TSV or Parquet, with an optional
//! column mapping (`--columns gene=gene_symbol_0,sgRNA=sgRNA_0`).
//!
//! Key decision: a Parquet table is read through the same string records as a CSV one, with every value
//! formatted the way pandas' `to_csv` writes it (integers in decimal, floats as the shortest text that
//! parses back to the same value, booleans `True`/`False`, nulls empty), so the CSV and Parquet paths of
//! ingest give identical stores and every downstream check (types, ranges, duplicates) is written once.
//! Positions in messages are `line N` for text tables (the header is line 1) and `row N` (1-based, data
//! rows only) for Parquet.
use crate::store::import::clean_header;
use anyhow::{bail, Context, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `--columns canonical=source,…`: the table's column `source` is read as `canonical`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColumnMap(pub Vec<(String, String)>);

impl std::str::FromStr for ColumnMap {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<ColumnMap> {
        let mut v: Vec<(String, String)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((a, b)) = part.split_once('=') else {
                bail!("--columns {s:?}: {part:?} is not NAME=COLUMN; HINT: e.g. --columns gene=gene_symbol_0,sgRNA=sgRNA_0,i=i_0,j=j_0");
            };
            let (a, b) = (a.trim().to_string(), b.trim().to_string());
            if a.is_empty() || b.is_empty() {
                bail!("--columns {s:?}: {part:?} has an empty name; HINT: NAME=COLUMN, e.g. gene=gene_symbol_0");
            }
            if v.iter().any(|(x, _)| *x == a) {
                bail!("--columns {s:?}: {a:?} is mapped twice");
            }
            v.push((a, b));
        }
        Ok(ColumnMap(v))
    }
}

impl ColumnMap {
    /// Rename the mapped columns of `header`; a source column that is missing, or a target name that the
    /// table already has as another column, is an error naming the file.
    fn apply(&self, path: &Path, header: &mut [String]) -> Result<()> {
        let original = header.to_vec();
        for (to, from) in &self.0 {
            let Some(k) = original.iter().position(|h| h == from) else {
                bail!(
                    "{}: --columns {to}={from}: no column {from:?} (columns: {original:?})",
                    path.display()
                );
            };
            if let Some(j) = original.iter().position(|h| h == to).filter(|&j| j != k) {
                if !self.0.iter().any(|(_, f)| *f == original[j]) {
                    bail!(
                        "{}: --columns {to}={from}: the table already has a column {to:?} (column {}); HINT: map \
                         that one too, or drop the mapping",
                        path.display(),
                        j + 1
                    );
                }
            }
            header[k] = to.clone();
        }
        Ok(())
    }
}

/// How a table's rows are numbered in messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numbering {
    /// Text: the header is line 1, the first data row line 2.
    Lines,
    /// Parquet: data rows from 1.
    Rows,
}

impl Numbering {
    /// `line` or `row`.
    pub fn unit(self) -> &'static str {
        match self {
            Numbering::Lines => "line",
            Numbering::Rows => "row",
        }
    }
    /// The number of data row `k` (0-based).
    pub fn number(self, k: usize) -> usize {
        match self {
            Numbering::Lines => k + 2,
            Numbering::Rows => k + 1,
        }
    }
}

enum Source {
    Text(csv::Reader<std::fs::File>),
    Parquet {
        rows: parquet::record::reader::RowIter<'static>,
        /// Positions (in the schema's top-level fields) of the kept columns.
        keep: Vec<usize>,
    },
}

/// An open table: its cleaned (and mapped) header and its records.
pub struct Table {
    pub path: PathBuf,
    pub header: Vec<String>,
    pub numbering: Numbering,
    source: Source,
}

/// True if the file is Parquet (by its `PAR1` magic, whatever its name).
pub fn is_parquet(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"PAR1"
}

impl Table {
    /// Open a CSV/TSV (tab-separated if the header line has a tab) or Parquet table.
    pub fn open(path: &Path, map: &ColumnMap) -> Result<Table> {
        let (mut header, numbering, source) = if is_parquet(path) {
            open_parquet(path)?
        } else {
            open_text(path)?
        };
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (k, h) in header.iter().enumerate() {
            if let Some(prev) = seen.insert(h.as_str(), k) {
                bail!(
                    "{}: {}: column {h:?} appears twice (columns {} and {}); HINT: each column name must be \
                     distinct",
                    path.display(),
                    match numbering {
                        Numbering::Lines => "line 1 (header)",
                        Numbering::Rows => "schema",
                    },
                    prev + 1,
                    k + 1
                );
            }
        }
        map.apply(path, &mut header)?;
        Ok(Table {
            path: path.into(),
            header,
            numbering,
            source,
        })
    }

    /// Position of column `name`, or an error listing the columns and what was expected.
    pub fn column(&self, name: &str, expect: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no column {name:?} (columns: {:?}); HINT: expected {expect}, or map a column of another name \
                 with --columns {name}=COLUMN",
                self.path.display(),
                self.header
            )
        })
    }

    /// `line N` / `row N` for data row `k` (0-based).
    pub fn at(&self, k: usize) -> String {
        format!("{} {}", self.numbering.unit(), self.numbering.number(k))
    }

    /// The next record (fields in header order), or None at the end.
    pub fn next_record(&mut self, k: usize) -> Result<Option<csv::StringRecord>> {
        let at = self.at(k);
        let path = self.path.display().to_string();
        match &mut self.source {
            Source::Text(r) => {
                let mut rec = csv::StringRecord::new();
                let more = r
                    .read_record(&mut rec)
                    .with_context(|| format!("{path}: {at}"))?;
                Ok(more.then_some(rec))
            }
            Source::Parquet { rows, keep } => {
                let Some(row) = rows.next() else {
                    return Ok(None);
                };
                let row = row.with_context(|| format!("{path}: {at}"))?;
                let fields: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
                let mut rec = csv::StringRecord::new();
                for &c in keep.iter() {
                    rec.push_field(&field_text(fields[c]));
                }
                Ok(Some(rec))
            }
        }
    }

    /// Every record with its 0-based index.
    pub fn records(mut self) -> impl Iterator<Item = Result<(usize, csv::StringRecord)>> {
        let mut k = 0usize;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            match self.next_record(k) {
                Ok(Some(r)) => {
                    k += 1;
                    Some(Ok((k - 1, r)))
                }
                Ok(None) => {
                    done = true;
                    None
                }
                Err(e) => {
                    done = true;
                    Some(Err(e))
                }
            }
        })
    }
}

fn open_text(path: &Path) -> Result<(Vec<String>, Numbering, Source)> {
    use std::io::BufRead;
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut first = String::new();
    std::io::BufReader::new(f)
        .read_line(&mut first)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let delim = if first.contains('\t') { b'\t' } else { b',' };
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delim)
        .from_path(path)
        .with_context(|| format!("{}: cannot open", path.display()))?;
    let header: Vec<String> = r
        .headers()
        .with_context(|| format!("{}: line 1 (header)", path.display()))?
        .iter()
        .map(clean_header)
        .collect();
    Ok((header, Numbering::Lines, Source::Text(r)))
}

fn open_parquet(path: &Path) -> Result<(Vec<String>, Numbering, Source)> {
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let reader = SerializedFileReader::new(f)
        .with_context(|| format!("{}: not a readable Parquet file", path.display()))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let mut header = Vec::new();
    let mut keep = Vec::new();
    for (k, t) in schema.root_schema().get_fields().iter().enumerate() {
        // pandas writes a non-default index as `__index_level_0__`: not a column of the table.
        if t.name().starts_with("__index_level_") {
            continue;
        }
        if !t.is_primitive() {
            bail!(
                "{}: column {:?} is nested (a list, map or struct); HINT: the table's columns must be plain values",
                path.display(),
                t.name()
            );
        }
        header.push(clean_header(t.name()));
        keep.push(k);
    }
    Ok((
        header,
        Numbering::Rows,
        Source::Parquet {
            rows: reader.into_iter(),
            keep,
        },
    ))
}

/// A Parquet value as pandas' `to_csv` would write it.
pub fn field_text(f: &Field) -> String {
    match f {
        Field::Null => String::new(),
        Field::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Field::Byte(x) => x.to_string(),
        Field::Short(x) => x.to_string(),
        Field::Int(x) => x.to_string(),
        Field::Long(x) => x.to_string(),
        Field::UByte(x) => x.to_string(),
        Field::UShort(x) => x.to_string(),
        Field::UInt(x) => x.to_string(),
        Field::ULong(x) => x.to_string(),
        Field::Float(x) => x.to_string(),
        Field::Double(x) => x.to_string(),
        Field::Str(s) => s.clone(),
        Field::Bytes(b) => String::from_utf8_lossy(b.data()).into_owned(),
        other => other.to_string(),
    }
}
