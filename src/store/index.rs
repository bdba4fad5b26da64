//! Cell selection over the index: by plate, well, gene, explicit cell numbers; used by export, the
//! sampler's train/val/test splits and embedding.
//!
//! Key decision: names are matched exactly against the store's dictionaries, and a name the store does
//! not have is an error listing the known ones (a typo must not silently select nothing).
use super::reader::Store;
use anyhow::{bail, Result};

/// A selection of cells; `None` means no restriction on that field.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CellFilter {
    pub plates: Option<Vec<String>>,
    pub wells: Option<Vec<String>>,
    pub genes: Option<Vec<String>>,
    /// Keep only NTC cells.
    #[serde(default)]
    pub ntc_only: bool,
}

/// Map names to a membership mask over a dictionary.
fn mask(what: &str, dict: &[String], names: &Option<Vec<String>>) -> Result<Option<Vec<bool>>> {
    let Some(names) = names else { return Ok(None) };
    let mut m = vec![false; dict.len()];
    for n in names {
        match dict.iter().position(|d| d == n) {
            Some(k) => m[k] = true,
            None => {
                let shown: Vec<&str> = dict.iter().take(20).map(|s| s.as_str()).collect();
                bail!(
                    "{what} {n:?} is not in the store; HINT: known {what}s are {shown:?}{}",
                    if dict.len() > 20 { " …" } else { "" }
                )
            }
        }
    }
    Ok(Some(m))
}

impl CellFilter {
    /// Indices of the selected cells, ascending.
    pub fn select(&self, store: &Store) -> Result<Vec<u32>> {
        let m = store.manifest();
        let p = mask("plate", &m.plates, &self.plates)?;
        let w = mask("well", &m.wells, &self.wells)?;
        let g = mask("gene", &m.genes, &self.genes)?;
        let ok = |mk: &Option<Vec<bool>>, id: u32| mk.as_ref().is_none_or(|v| v[id as usize]);
        Ok(store
            .records()
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                ok(&p, r.plate)
                    && ok(&w, r.well)
                    && ok(&g, r.gene)
                    && (!self.ntc_only || r.is_ntc())
            })
            .map(|(k, _)| k as u32)
            .collect())
    }
}

/// Parse a comma-separated list (`None` for an empty or missing argument).
/// A comma-separated list of names for `flag` where every item must be present and distinct (channel
/// names): `a,,b` and `a,a` are errors naming the flag and the item.
pub fn parse_names(flag: &str, s: Option<&str>) -> anyhow::Result<Option<Vec<String>>> {
    let Some(s) = s else { return Ok(None) };
    let items: Vec<String> = s.split(',').map(|x| x.trim().to_string()).collect();
    let mut seen = std::collections::HashSet::new();
    for (k, x) in items.iter().enumerate() {
        anyhow::ensure!(
            !x.is_empty(),
            "{flag} {s:?}: item {} is empty; expected comma-separated names like dna,actin",
            k + 1
        );
        anyhow::ensure!(
            seen.insert(x.as_str()),
            "{flag} {s:?}: {x:?} is listed twice; each name must be distinct"
        );
    }
    Ok(Some(items))
}

pub fn parse_list(s: Option<&str>) -> Option<Vec<String>> {
    s.map(|s| {
        s.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
    })
    .filter(|v| !v.is_empty())
}
