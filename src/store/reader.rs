//! Memory-mapped store reader: O(1) access to any cell's crop by index; nothing is loaded beyond the
//! manifest, the NTC statistics and the mapped index.
//!
//! Key decision: `open` checks what is cheap and catches whole-file damage (manifest, every header,
//! every file length, the index checksum and its ids); each crop's own CRC-32 is checked when it is read
//! (on by default, about 5 µs per 4×96×96 crop), so a flipped byte in a shard is an error, never a silently
//! wrong training sample. `store verify` checks everything up front.
use super::format::*;
use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// An open crop store.
pub struct Store {
    dir: PathBuf,
    manifest: Manifest,
    index: Mmap,
    shards: Vec<Mmap>,
    ntc: Vec<BatchStats>,
    /// batch id → position in `ntc`
    ntc_by_batch: Vec<Option<usize>>,
    check_crc: bool,
}

fn map_file(path: &Path) -> Result<Mmap> {
    let f = File::open(path).with_context(|| {
        format!(
            "opening {}; HINT: a file listed in store.json is missing, the store is damaged",
            path.display()
        )
    })?;
    // SAFETY: store files are written once and never modified in place; a concurrent external
    // modification would only change the bytes we read, which the CRC checks then reject.
    unsafe { Mmap::map(&f) }.with_context(|| format!("memory-mapping {}", path.display()))
}

/// Read and check `store.json` (format name and version).
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    if !dir.is_dir() {
        bail!("{}: no such store directory", dir.display());
    }
    if !path.exists() {
        let partial = std::fs::read_dir(dir)?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("shard-"));
        if partial {
            bail!(
                "{}: no {MANIFEST}, so this is an incomplete store (a write was interrupted); HINT: re-run the ingest \
                 or import with --force",
                dir.display()
            );
        }
        bail!("{}: not a crop store (no {MANIFEST}); HINT: create one with `setdino ingest` or `setdino import-crops`", dir.display());
    }
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{}: not valid JSON; HINT: the manifest is damaged",
            path.display()
        )
    })?;
    let version = value.get("version").and_then(|v| v.as_u64());
    if value.get("format").and_then(|v| v.as_str()) != Some(FORMAT_NAME) {
        bail!("{}: `format` is not \"{FORMAT_NAME}\"; HINT: this is not a setdino crop store manifest", path.display());
    }
    if version != Some(FORMAT_VERSION as u64) {
        bail!(
            "{}: format version {:?}, this build reads version {FORMAT_VERSION}; HINT: re-create the store with this \
             version of setdino",
            path.display(),
            version
        );
    }
    let m: Manifest = serde_json::from_value(value).with_context(|| {
        format!(
            "{}: fields missing or of the wrong type; HINT: the manifest is damaged",
            path.display()
        )
    })?;
    if m.dtype != "u16-unorm" {
        bail!(
            "{}: dtype {:?}, expected \"u16-unorm\"",
            path.display(),
            m.dtype
        );
    }
    check_manifest(&m, &path)?;
    Ok(m)
}

/// What the readers rely on beyond the field types: listed files are plain names inside the store
/// directory, the crop size is positive and its byte count representable, and batches refer to existing
/// plates and wells.
fn check_manifest(m: &Manifest, path: &Path) -> Result<()> {
    let p = path.display();
    for e in m.shards.iter().chain([&m.index]).chain(&m.files) {
        let plain = !e.file.is_empty()
            && e.file != "."
            && e.file != ".."
            && !e.file.contains(['/', '\\', '\0']);
        if !plain {
            bail!("{p}: file {:?} is not a plain file name inside the store directory; HINT: the manifest is damaged", e.file);
        }
    }
    let crop = m.crop as usize;
    let bytes = crop
        .checked_mul(crop)
        .and_then(|x| x.checked_mul(m.channels.len()))
        .and_then(|x| x.checked_mul(2))
        .filter(|&x| x <= isize::MAX as usize);
    if m.crop == 0 || m.channels.is_empty() || bytes.is_none() {
        bail!(
            "{p}: crops of {} channels × {} × {} pixels are not a valid crop size; HINT: the manifest is damaged",
            m.channels.len(),
            m.crop,
            m.crop
        );
    }
    for (k, b) in m.batches.iter().enumerate() {
        if b.plate as usize >= m.plates.len() || b.well as usize >= m.wells.len() {
            bail!(
                "{p}: batch {k} refers to plate {} / well {}, but there are {} plates and {} wells; HINT: the \
                 manifest is damaged",
                b.plate,
                b.well,
                m.plates.len(),
                m.wells.len()
            );
        }
    }
    Ok(())
}

fn check_len(
    path: &Path,
    actual: usize,
    entry: &FileEntry,
    expected_from_header: u64,
) -> Result<()> {
    if actual as u64 != entry.bytes {
        bail!(
            "{}: {actual} bytes, store.json says {}; HINT: the file is truncated or was replaced, re-create the store",
            path.display(),
            entry.bytes
        );
    }
    if actual as u64 != expected_from_header {
        bail!(
            "{}: {actual} bytes, its header implies {expected_from_header}; HINT: the file is truncated or damaged",
            path.display()
        );
    }
    Ok(())
}

impl Store {
    /// Open a store; see the module docs for what is checked.
    pub fn open(dir: &Path) -> Result<Store> {
        let manifest = read_manifest(dir)?;
        let crop_bytes = manifest.crop_bytes() as u64;
        // Index: header, length, checksum, ids in range.
        let ipath = dir.join(&manifest.index.file);
        let index = map_file(&ipath)?;
        let h = FileHeader::parse(&index, INDEX_MAGIC, &ipath)?;
        if h.dims[0] as usize != RECORD_BYTES {
            bail!(
                "{}: record size {} in header, expected {RECORD_BYTES}",
                ipath.display(),
                h.dims[0]
            );
        }
        if h.count != manifest.cells {
            bail!(
                "{}: {} records, store.json says {} cells; HINT: the store is damaged",
                ipath.display(),
                h.count,
                manifest.cells
            );
        }
        check_len(
            &ipath,
            index.len(),
            &manifest.index,
            (HEADER_BYTES as u64).saturating_add(h.count.saturating_mul(RECORD_BYTES as u64)),
        )?;
        let crc = crc32fast::hash(&index);
        if crc != manifest.index.crc32 {
            bail!(
                "{}: CRC-32 {crc:08x}, store.json says {:08x}; HINT: the index is damaged, re-create the store",
                ipath.display(),
                manifest.index.crc32
            );
        }
        // Shards: header, dims, count, length.
        let mut shards = Vec::with_capacity(manifest.shards.len());
        for (k, e) in manifest.shards.iter().enumerate() {
            let path = dir.join(&e.file);
            let map = map_file(&path)?;
            let h = FileHeader::parse(&map, SHARD_MAGIC, &path)?;
            let want = [manifest.channels.len() as u32, manifest.crop, manifest.crop];
            if h.dims != want {
                bail!("{}: crops of {:?} (C, H, W), store.json says {want:?}; HINT: the header is damaged", path.display(), h.dims);
            }
            if h.count != e.count {
                bail!(
                    "{}: {} crops in header, store.json says {}; HINT: the header is damaged",
                    path.display(),
                    h.count,
                    e.count
                );
            }
            check_len(
                &path,
                map.len(),
                e,
                (HEADER_BYTES as u64).saturating_add(h.count.saturating_mul(crop_bytes)),
            )?;
            if e.file != shard_file_name(k) {
                bail!(
                    "store.json: shard {k} is named {:?}, expected {:?}",
                    e.file,
                    shard_file_name(k)
                );
            }
            shards.push(map);
        }
        let store_tmp = Store {
            dir: dir.to_path_buf(),
            manifest,
            index,
            shards,
            ntc: Vec::new(),
            ntc_by_batch: Vec::new(),
            check_crc: true,
        };
        store_tmp.check_records()?;
        let mut store = store_tmp;
        // NTC statistics.
        let npath = dir.join(NTC_FILE);
        let ntc: Vec<BatchStats> =
            serde_json::from_slice(&std::fs::read(&npath).with_context(|| {
                format!("reading {}; HINT: the store is damaged", npath.display())
            })?)
            .with_context(|| {
                format!(
                    "{}: not valid NTC statistics; HINT: the store is damaged",
                    npath.display()
                )
            })?;
        let mut by = vec![None; store.manifest.batches.len()];
        for (k, s) in ntc.iter().enumerate() {
            if s.batch as usize >= by.len() || s.channels.len() != store.manifest.channels.len() {
                bail!(
                    "{}: entry {k} has batch {} / {} channels, inconsistent with store.json",
                    npath.display(),
                    s.batch,
                    s.channels.len()
                );
            }
            by[s.batch as usize] = Some(k);
        }
        store.ntc = ntc;
        store.ntc_by_batch = by;
        Ok(store)
    }

    fn check_records(&self) -> Result<()> {
        let m = &self.manifest;
        for (k, r) in self.records().iter().enumerate() {
            let bad = (r.shard as usize) >= m.shards.len()
                || r.slot as u64 >= m.shards[r.shard as usize].count
                || r.plate as usize >= m.plates.len()
                || r.well as usize >= m.wells.len()
                || r.batch as usize >= m.batches.len()
                || r.gene as usize >= m.genes.len()
                || r.sgrna as usize >= m.sgrnas.len();
            if bad {
                bail!(
                    "{}: record {k} refers to a shard, slot or dictionary entry that does not exist ({r:?}); HINT: the \
                     index is damaged",
                    self.dir.join(&m.index.file).display()
                );
            }
        }
        Ok(())
    }

    /// Turn per-read crop checksums on or off (on by default).
    pub fn set_check_crc(&mut self, on: bool) {
        self.check_crc = on;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// Number of cells.
    pub fn len(&self) -> usize {
        self.manifest.cells as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Channels.
    pub fn channels(&self) -> usize {
        self.manifest.channels.len()
    }
    /// Crop height = width.
    pub fn crop(&self) -> usize {
        self.manifest.crop as usize
    }
    /// C·H·W.
    pub fn crop_len(&self) -> usize {
        self.manifest.crop_len()
    }

    /// All index records, in cell order.
    pub fn records(&self) -> &[CellRecord] {
        bytemuck::cast_slice(&self.index[HEADER_BYTES..])
    }

    /// The index record of cell `k`.
    pub fn record(&self, k: usize) -> &CellRecord {
        &self.records()[k]
    }

    /// Crop of cell `k`: (C, H, W) u16 unorm, borrowed from the memory map; CRC-checked unless turned off.
    pub fn crop_u16(&self, k: usize) -> Result<&[u16]> {
        self.check_crop(k)?;
        Ok(self.crop_u16_unchecked(k))
    }

    /// Crop of cell `k` without its checksum (for callers that ran [`Store::check_crop`] already).
    /// Panics if `k` is out of range.
    pub fn crop_u16_unchecked(&self, k: usize) -> &[u16] {
        bytemuck::cast_slice(self.crop_bytes(k))
    }

    fn crop_bytes(&self, k: usize) -> &[u8] {
        let r = self.record(k);
        let cb = self.manifest.crop_bytes();
        let start = HEADER_BYTES + r.slot as usize * cb;
        &self.shards[r.shard as usize][start..start + cb]
    }

    /// Check that cell `k` exists and (unless checks are off) that its crop matches its CRC-32.
    pub fn check_crop(&self, k: usize) -> Result<()> {
        if k >= self.len() {
            bail!("cell {k} out of range: the store has {} cells", self.len());
        }
        if self.check_crc {
            let r = self.record(k);
            let crc = crc32fast::hash(self.crop_bytes(k));
            if crc != r.crc {
                bail!(
                    "{}: crop of cell {k} (slot {}) fails its checksum (CRC-32 {crc:08x}, index says {:08x}); HINT: the \
                     shard is damaged, run `setdino store verify {}`",
                    self.dir.join(&self.manifest.shards[r.shard as usize].file).display(),
                    r.slot,
                    r.crc,
                    self.dir.display()
                );
            }
        }
        Ok(())
    }

    /// Crop of cell `k` as f32 in [0, 1] (value / 65535, as numpy computes it). out: (C, H, W)
    pub fn crop_f32(&self, k: usize, out: &mut [f32]) -> Result<()> {
        let src = self.crop_u16(k)?;
        for (o, &v) in out.iter_mut().zip(src) {
            *o = v as f32 / 65535.0;
        }
        Ok(())
    }

    /// NTC statistics of every batch that has NTC cells.
    pub fn ntc_stats(&self) -> &[BatchStats] {
        &self.ntc
    }

    /// NTC statistics of batch `b`, if it has NTC cells.
    pub fn batch_stats(&self, b: u32) -> Option<&BatchStats> {
        self.ntc_by_batch
            .get(b as usize)
            .copied()
            .flatten()
            .map(|k| &self.ntc[k])
    }

    /// Extra metadata rows (one per cell, in cell order), read from `meta.tsv`; empty when there is none.
    pub fn read_meta(&self) -> Result<Vec<Vec<String>>> {
        if self.manifest.meta_columns.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.dir.join(META_FILE);
        let mut r = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .from_path(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut rows = Vec::with_capacity(self.len());
        for (k, rec) in r.records().enumerate() {
            let rec = rec.with_context(|| format!("{}: row {}", path.display(), k + 2))?;
            rows.push(rec.iter().map(String::from).collect());
        }
        if rows.len() != self.len() {
            bail!(
                "{}: {} rows, expected {}; HINT: the store is damaged",
                path.display(),
                rows.len(),
                self.len()
            );
        }
        Ok(rows)
    }

    /// Read the ingest/import report.
    pub fn report(&self) -> Result<serde_json::Value> {
        let path = self.dir.join(REPORT_FILE);
        Ok(serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?)
    }
}
