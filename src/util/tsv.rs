//! Tab-separated tables with a header line, one serde struct per row: what every figure's data file
//! (`*.tsv` beside each PNG) is written and read back with. Errors name the file and the line.
use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// Writes `rows` to `path` (atomically) with a header of the struct's field names.
pub fn write<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut w = csv::WriterBuilder::new()
        .delimiter(b'\t')
        .from_writer(Vec::new());
    for r in rows {
        w.serialize(r)
            .with_context(|| format!("writing a row of {}", path.display()))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    // A table without rows is an empty file (serde names the fields only when it serializes a row);
    // `read` gives it back as no rows.
    crate::util::atomic::write_atomic(path, &bytes)
}

/// Reads every row of `path`; a missing column or an unparsable value names the file and its line.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .flexible(false)
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, row) in r.deserialize::<T>().enumerate() {
        // Line 1 is the header.
        out.push(row.with_context(|| format!("{}: line {}", path.display(), i + 2))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Row {
        name: String,
        value: f64,
        maybe: Option<f64>,
    }

    #[test]
    fn rows_round_trip_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tsv");
        let rows = vec![
            Row {
                name: "a b".into(),
                value: 0.25,
                maybe: None,
            },
            Row {
                name: "c".into(),
                value: f64::NAN,
                maybe: Some(-1e-9),
            },
        ];
        write(&p, &rows).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("name\tvalue\tmaybe\n"), "{text}");
        let back: Vec<Row> = read(&p).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], rows[0]);
        assert!(back[1].value.is_nan() && back[1].maybe == Some(-1e-9));
        std::fs::write(&p, "name\tvalue\tmaybe\nx\t1\t\ny\tnot-a-number\t\n").unwrap();
        let e = format!("{:#}", read::<Row>(&p).unwrap_err());
        assert!(e.contains("line 3"), "{e}");
        write::<Row>(&p, &[]).unwrap();
        assert!(read::<Row>(&p).unwrap().is_empty());
    }
}
