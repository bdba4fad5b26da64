//! Known gene relationships (evaluation.md §3): CORUM `allComplexes.txt`, a clusters TSV
//! (`name<TAB>gene gene …`) or a pairs CSV (header `entity1,entity2`), detected from the header line.
//!
//! Key decisions: related pairs are a set of unordered gene-name pairs (duplicates and both orders count
//! once, self pairs dropped); names match exactly; CORUM rows are not filtered by organism (names of other
//! species rarely match a screen's gene names; filter the file first if they might).
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// The detected file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Corum,
    Clusters,
    Pairs,
}

/// Complexes in file order (a pairs file gives one two-gene complex per line) and the related pairs,
/// each stored as (smaller name, larger name).
#[derive(Clone, Debug)]
pub struct Complexes {
    pub format: Format,
    pub complexes: Vec<(String, Vec<String>)>,
    pub pairs: BTreeSet<(String, String)>,
}

/// The unordered pair (a, b) as stored in `Complexes::pairs`.
pub fn pair_key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// Reads and parses a complexes file.
pub fn read(path: &Path) -> Result<Complexes> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading complexes file {}", path.display()))?;
    parse(&text, path)
}

/// Parses complexes text; `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Complexes> {
    let p = path.display();
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, first)) = lines.next() else {
        bail!("{p}: empty complexes file");
    };
    let tab_cols: Vec<&str> = first.split('\t').map(str::trim).collect();
    let csv_cols: Vec<&str> = first.split(',').map(str::trim).collect();
    let mut complexes = Vec::new();
    let format = if let Some(ci) = tab_cols.iter().position(|c| *c == "subunits(Gene name)") {
        let ni = tab_cols.iter().position(|c| *c == "ComplexName");
        for (lno, l) in lines {
            let f: Vec<&str> = l.split('\t').collect();
            let Some(genes) = f.get(ci) else {
                bail!(
                    "{p}: line {lno}: {} fields, column {} (subunits(Gene name)) is missing",
                    f.len(),
                    ci + 1
                );
            };
            let name = ni
                .and_then(|i| f.get(i))
                .map_or(format!("line {lno}"), |s| s.to_string());
            let g: Vec<String> = genes
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "None")
                .map(String::from)
                .collect();
            complexes.push((name, g));
        }
        Format::Corum
    } else if csv_cols.contains(&"entity1") && csv_cols.contains(&"entity2") {
        let a = csv_cols.iter().position(|c| *c == "entity1").unwrap();
        let b = csv_cols.iter().position(|c| *c == "entity2").unwrap();
        for (lno, l) in lines {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let (Some(x), Some(y)) = (f.get(a), f.get(b)) else {
                bail!("{p}: line {lno}: expected columns entity1,entity2, got `{l}`");
            };
            if x.is_empty() || y.is_empty() {
                bail!("{p}: line {lno}: empty gene name in `{l}`");
            }
            complexes.push((format!("line {lno}"), vec![x.to_string(), y.to_string()]));
        }
        Format::Pairs
    } else if tab_cols.len() == 2 {
        for (lno, l) in std::iter::once((1, first)).chain(lines) {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 2 {
                bail!(
                    "{p}: line {lno}: {} tab-separated fields; a clusters file has `name<TAB>genes separated by spaces`",
                    f.len()
                );
            }
            let g: Vec<String> = f[1].split_whitespace().map(String::from).collect();
            complexes.push((f[0].trim().to_string(), g));
        }
        Format::Clusters
    } else {
        bail!(
            "{p}: unknown complexes format (first line `{}`); HINT: accepted are CORUM allComplexes.txt \
             (tab-separated with a `subunits(Gene name)` column), a clusters TSV (`name<TAB>gene gene …`) \
             and a pairs CSV with header `entity1,entity2`",
            first.chars().take(120).collect::<String>()
        );
    };
    let mut pairs = BTreeSet::new();
    for (_, genes) in &complexes {
        for (i, a) in genes.iter().enumerate() {
            for b in &genes[i + 1..] {
                if a != b {
                    pairs.insert(pair_key(a, b));
                }
            }
        }
    }
    Ok(Complexes {
        format,
        complexes,
        pairs,
    })
}
