//! Which cells a gallery shows: groups by gene or by well, and the seeded choice of n cells per group.
//!
//! Key decision: the choice of a group's cells depends only on (seed, the group's kind and name, the
//! group's cells): a ChaCha8 stream keyed by a hash of `kind:name` draws a partial Fisher–Yates sample,
//! shown in ascending cell order. So the same command gives the same cells, and adding or removing
//! another group (another `--genes` list) never changes this one's.
use crate::store::Store;
use anyhow::{bail, Result};
use rand::Rng;

/// Random-stream domain of the galleries' cell choice ("GALL").
pub const DOMAIN_GALLERY: u64 = 0x4741_4c4c;
/// Genes shown by `--by gene` without `--genes`: this many first genes by name, plus the NTC gene.
pub const DEFAULT_GENES: usize = 7;

/// One gallery: a group of cells and the ones shown.
#[derive(Clone, Debug)]
pub struct Group {
    /// `gene`, `well` or `cluster`.
    pub kind: &'static str,
    /// The group's name (gene, `plate_well`, `1` … for clusters).
    pub name: String,
    /// Cells in the group.
    pub total: usize,
    /// Cells shown, in grid order.
    pub shown: Vec<u32>,
    /// How they were chosen, for the title.
    pub how: String,
    /// Extra line for index.md (cluster composition), may be empty.
    pub note: String,
}

impl Group {
    /// `kind name`, e.g. `gene ACTB`.
    pub fn label(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
    /// The title line of its sheet.
    pub fn title(&self) -> String {
        format!(
            "{} — {} cells, {} shown ({})",
            self.label(),
            self.total,
            self.shown.len(),
            self.how
        )
    }
}

/// FNV-1a of a string: the per-group key of the random stream (stable across builds and platforms).
pub fn name_key(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Up to `n` of `cells`, chosen by the stream of (seed, `key`), in ascending order; all of them when
/// there are at most `n`.
pub fn sample(cells: &[u32], n: usize, seed: u64, key: &str) -> Vec<u32> {
    let mut v = cells.to_vec();
    if v.len() > n {
        let mut rng = crate::data::rng::stream(seed, DOMAIN_GALLERY, &[name_key(key)]);
        for i in 0..n {
            let j = rng.random_range(i..v.len());
            v.swap(i, j);
        }
        v.truncate(n);
    }
    v.sort_unstable();
    v
}

/// How a sample was drawn, for titles.
pub fn how(total: usize, n: usize, seed: u64) -> String {
    if total <= n {
        "all".to_string()
    } else {
        format!("random, seed {seed}")
    }
}

/// Cells per gene id (ascending), over all cells or over `subset` only.
pub fn cells_by_gene(store: &Store, subset: Option<&[u32]>) -> Vec<Vec<u32>> {
    let mut by = vec![Vec::new(); store.manifest().genes.len()];
    let recs = store.records();
    let mut add = |k: u32| {
        if let Some(r) = recs.get(k as usize) {
            by[r.gene as usize].push(k);
        }
    };
    match subset {
        Some(s) => s.iter().for_each(|&k| add(k)),
        None => (0..recs.len()).for_each(|k| add(u32::try_from(k).unwrap_or(u32::MAX))),
    }
    for v in &mut by {
        v.sort_unstable();
        v.dedup();
    }
    by
}

/// The default `--by gene` list: the first [`DEFAULT_GENES`] genes by name (byte order, NTC gene left
/// out), then the NTC gene when the store has it.
pub fn default_genes(store: &Store) -> Vec<String> {
    let m = store.manifest();
    let mut names: Vec<&String> = m.genes.iter().filter(|g| **g != m.ntc_gene).collect();
    names.sort();
    let mut out: Vec<String> = names.into_iter().take(DEFAULT_GENES).cloned().collect();
    if m.genes.contains(&m.ntc_gene) {
        out.push(m.ntc_gene.clone());
    }
    out
}

/// The id of gene `name`; an unknown name is an error that names it and lists known genes.
pub fn gene_id(store: &Store, name: &str) -> Result<usize> {
    let genes = &store.manifest().genes;
    if let Some(k) = genes.iter().position(|g| g == name) {
        return Ok(k);
    }
    let mut known: Vec<&str> = genes.iter().map(String::as_str).collect();
    known.sort_unstable();
    let close: Vec<&str> = known
        .iter()
        .copied()
        .filter(|g| g.eq_ignore_ascii_case(name))
        .collect();
    let hint = if close.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", close.join(" or "))
    };
    let shown: Vec<&str> = known.iter().copied().take(12).collect();
    bail!(
        "gene {name:?} is not in the store {}{hint}; HINT: it has {} genes, e.g. {}{}",
        store.dir().display(),
        known.len(),
        shown.join(", "),
        if known.len() > shown.len() {
            ", …"
        } else {
            ""
        }
    )
}

/// `--by gene`: one group per gene of `genes` (default [`default_genes`]), in the order given.
pub fn by_gene(store: &Store, genes: Option<&[String]>, n: usize, seed: u64) -> Result<Vec<Group>> {
    let names = match genes {
        Some(g) => g.to_vec(),
        None => default_genes(store),
    };
    let ids: Vec<usize> = names
        .iter()
        .map(|g| gene_id(store, g))
        .collect::<Result<_>>()?;
    let by = cells_by_gene(store, None);
    Ok(names
        .into_iter()
        .zip(ids)
        .map(|(name, id)| {
            let cells = &by[id];
            Group {
                kind: "gene",
                shown: sample(cells, n, seed, &format!("gene:{name}")),
                how: how(cells.len(), n, seed),
                total: cells.len(),
                name,
                note: String::new(),
            }
        })
        .collect())
}

/// `--by well`: one group per batch (plate_well) in the store's order.
pub fn by_well(store: &Store, n: usize, seed: u64) -> Vec<Group> {
    let m = store.manifest();
    let mut by = vec![Vec::new(); m.batches.len()];
    for (k, r) in store.records().iter().enumerate() {
        by[r.batch as usize].push(u32::try_from(k).unwrap_or(u32::MAX));
    }
    by.into_iter()
        .enumerate()
        .filter(|(_, cells)| !cells.is_empty())
        .map(|(b, cells)| {
            let name = m.batch_name(u32::try_from(b).unwrap_or(u32::MAX));
            Group {
                kind: "well",
                shown: sample(&cells, n, seed, &format!("well:{name}")),
                how: how(cells.len(), n, seed),
                total: cells.len(),
                name,
                note: String::new(),
            }
        })
        .collect()
}
