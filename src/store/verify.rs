//! `store verify`: every file's size and CRC-32 against the manifest, every header, and every crop's
//! own CRC-32 against the index, so damage is both detected and located (file, cell, slot).
//!
//! Key decision: collect all problems (up to a limit) instead of stopping at the first, since a user
//! deciding whether to re-ingest wants the extent of the damage.
use super::format::*;
use super::reader::{read_manifest, Store};
use anyhow::{bail, Result};
use rayon::prelude::*;
use std::path::Path;

/// What `verify` checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub files: usize,
    pub bytes: u64,
    pub cells: u64,
}

const MAX_PROBLEMS: usize = 20;

/// Verify a store completely; an error lists every problem found (up to 20).
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let m = read_manifest(dir)?;
    let mut entries: Vec<&FileEntry> = m.shards.iter().collect();
    entries.push(&m.index);
    entries.extend(m.files.iter());
    let mut problems: Vec<String> = entries
        .par_iter()
        .filter_map(|e| {
            let path = dir.join(&e.file);
            match file_crc32(&path) {
                Err(err) => Some(format!("{err:#}")),
                Ok((n, _)) if n != e.bytes => Some(format!(
                    "{}: {n} bytes, store.json says {}; HINT: truncated or replaced",
                    path.display(),
                    e.bytes
                )),
                Ok((_, crc)) if crc != e.crc32 => Some(format!(
                    "{}: CRC-32 {crc:08x}, store.json says {:08x}; HINT: the file is damaged",
                    path.display(),
                    e.crc32
                )),
                Ok(_) => None,
            }
        })
        .collect();
    match Store::open(dir) {
        Err(e) => problems.push(format!("{e:#}")),
        Ok(store) => {
            let bad: Vec<String> = (0..store.len())
                .into_par_iter()
                .filter_map(|k| store.crop_u16(k).err().map(|e| format!("{e:#}")))
                .collect();
            problems.extend(bad);
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(MAX_PROBLEMS);
        bail!(
            "store {} failed verification ({n} problem{}):\n  {}{}",
            dir.display(),
            if n == 1 { "" } else { "s" },
            problems.join("\n  "),
            if n > MAX_PROBLEMS { "\n  …" } else { "" }
        );
    }
    Ok(VerifyReport {
        files: entries.len() + 1,
        bytes: entries.iter().map(|e| e.bytes).sum(),
        cells: m.cells,
    })
}
