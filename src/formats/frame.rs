//! A small typed column table: the cell metadata (and profile metadata) that every output format writes —
//! TSV text, Parquet columns, AnnData `obs`.
//!
//! Key decision: repeated names (plate, well, batch, gene, sgRNA) are categorical columns (codes into one
//! list of levels), as the store keeps them: a 10-million-cell table does not hold 50 million strings, and
//! AnnData gets pandas categoricals, which is what scanpy users expect for grouping.
use std::fmt::Write as _;

/// The values of one column.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    Str(Vec<String>),
    /// Codes into `levels`.
    Cat {
        codes: Vec<u32>,
        levels: Vec<String>,
    },
    I64(Vec<i64>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Str(v) => v.len(),
            Values::Cat { codes, .. } => codes.len(),
            Values::I64(v) => v.len(),
            Values::U64(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::Bool(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Row `k` as text (TSV): floats in Rust's shortest round-trip form, booleans `True`/`False`.
    pub fn text(&self, k: usize, out: &mut String) {
        match self {
            Values::Str(v) => out.push_str(&v[k]),
            Values::Cat { codes, levels } => out.push_str(&levels[codes[k] as usize]),
            Values::I64(v) => write!(out, "{}", v[k]).unwrap_or(()),
            Values::U64(v) => write!(out, "{}", v[k]).unwrap_or(()),
            Values::F32(v) => write!(out, "{}", v[k]).unwrap_or(()),
            Values::F64(v) => write!(out, "{}", v[k]).unwrap_or(()),
            Values::Bool(v) => out.push_str(if v[k] { "True" } else { "False" }),
        }
    }
    /// Row `k` as a string (for Parquet and AnnData string columns).
    pub fn string(&self, k: usize) -> String {
        let mut s = String::new();
        self.text(k, &mut s);
        s
    }
}

/// A named column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub values: Values,
}

/// Columns of equal length.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    pub columns: Vec<Column>,
}

impl Frame {
    /// Append a column (its length must match the others).
    pub fn push(&mut self, name: &str, values: Values) {
        debug_assert!(self.columns.is_empty() || values.len() == self.rows());
        self.columns.push(Column {
            name: name.to_string(),
            values,
        });
    }
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.values.len())
    }
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }
    /// Write as tab-separated text with a header line.
    pub fn write_tsv(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(w, "{}", self.names().join("\t"))?;
        let mut line = String::new();
        for k in 0..self.rows() {
            line.clear();
            for (c, col) in self.columns.iter().enumerate() {
                if c > 0 {
                    line.push('\t');
                }
                col.values.text(k, &mut line);
            }
            line.push('\n');
            w.write_all(line.as_bytes())?;
        }
        Ok(())
    }
}
