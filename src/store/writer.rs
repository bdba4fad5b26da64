//! Streaming store writer: crops go to shard files as they come, index records to `index.bin`, and the
//! manifest is written last, all in a sibling temp directory that is renamed into place when complete, so
//! an interrupted write never looks like a store and never touches the old one.
//!
//! Key decision: one appender, fed in batches whose crop checksums are computed in parallel; the work
//! that is worth parallelising (decoding and cropping tiles) happens upstream, and a single appender
//! keeps the cell order, and so the store, independent of the thread count.
use super::format::*;
use super::ntc::NtcAccumulator;
use crate::util::atomic::{parent_dir, sync_dir, TempFile};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Metadata of one cell, as given to the writer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CellMeta {
    pub plate: String,
    pub well: String,
    pub tile: u32,
    pub cell_id: u64,
    /// Centroid row and column (NaN when unknown).
    pub i: f32,
    pub j: f32,
    pub gene: String,
    pub sgrna: String,
    /// Values of the extra metadata columns, in [`WriterOptions::meta_columns`] order.
    pub extra: Vec<String>,
}

/// What a new store holds.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    pub crop: u32,
    pub channels: Vec<String>,
    pub ntc_gene: String,
    /// Crops per shard file (the last shard may hold fewer).
    pub cells_per_shard: usize,
    pub meta_columns: Vec<String>,
    pub created_by: String,
    /// Replace an existing store in the directory (swapped in when the new one is complete).
    pub force: bool,
    /// Finish even with no cells (a job part of a sharded ingest may crop none; `store merge` checks the
    /// whole).
    pub allow_empty: bool,
}

impl WriterOptions {
    /// Options with shards of about 1 GiB.
    pub fn new(crop: u32, channels: Vec<String>) -> WriterOptions {
        let crop_bytes = 2 * channels.len().max(1) * (crop as usize) * (crop as usize);
        WriterOptions {
            crop,
            channels,
            ntc_gene: "nontargeting".into(),
            cells_per_shard: ((1usize << 30) / crop_bytes.max(1)).max(1),
            meta_columns: Vec::new(),
            created_by: format!("setdino {}", env!("CARGO_PKG_VERSION")),
            force: false,
            allow_empty: false,
        }
    }
}

/// String → dense id, in first-seen order.
#[derive(Default)]
struct Dict {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Dict {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&k) = self.ids.get(s) {
            return k;
        }
        let k = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), k);
        k
    }
}

/// A binary file being appended to: header placeholder first, count patched at close.
struct OpenBin {
    path: PathBuf,
    w: BufWriter<File>,
    payload_crc: crc32fast::Hasher,
    count: u64,
    payload_bytes: u64,
}

impl OpenBin {
    fn create(path: PathBuf) -> Result<OpenBin> {
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 22, f);
        w.write_all(&[0u8; HEADER_BYTES])
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(OpenBin {
            path,
            w,
            payload_crc: crc32fast::Hasher::new(),
            count: 0,
            payload_bytes: 0,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        self.w
            .write_all(bytes)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.payload_crc.update(bytes);
        self.payload_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Patch the header, fsync, and return the manifest entry (CRC of the whole file).
    fn close(self, magic: [u8; 8], dims: [u32; 3]) -> Result<FileEntry> {
        let OpenBin {
            path,
            w,
            payload_crc,
            count,
            payload_bytes,
        } = self;
        let mut f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("flushing {}", path.display()))?;
        let header = FileHeader {
            magic,
            version: FORMAT_VERSION,
            dims,
            count,
        }
        .to_bytes();
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&header)
            .with_context(|| format!("writing header of {}", path.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", path.display()))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.combine(&payload_crc);
        Ok(FileEntry {
            file: path.file_name().unwrap().to_string_lossy().into_owned(),
            bytes: HEADER_BYTES as u64 + payload_bytes,
            crc32: crc.finalize(),
            count,
        })
    }
}

/// Writes a store; see the module docs. Call [`StoreWriter::finish`] to make it a store.
pub struct StoreWriter {
    /// Where the files are written (the temp directory).
    dir: PathBuf,
    /// Where the store goes.
    target: PathBuf,
    /// The temp directory, removed on drop unless the store was finished.
    tmp: Option<TempFile>,
    opts: WriterOptions,
    crop_len: usize,
    plates: Dict,
    wells: Dict,
    genes: Dict,
    sgrnas: Dict,
    batches: Vec<BatchKey>,
    batch_ids: HashMap<BatchKey, u32>,
    shard: Option<OpenBin>,
    shards: Vec<FileEntry>,
    index: OpenBin,
    meta: Option<csv::Writer<BufWriter<File>>>,
    ntc: NtcAccumulator,
    cells: u64,
}

/// Why `dir` cannot receive a new store, if it cannot: a complete store there needs `force`; anything else
/// that is not an empty directory is refused (setdino never deletes files it did not write).
fn check_target(dir: &Path, force: bool) -> Result<()> {
    let manifest = dir.join(MANIFEST);
    if manifest.exists() {
        if !force {
            bail!(
                "{} already holds a store ({} exists); HINT: pass --force to replace it, or choose another --out",
                dir.display(),
                manifest.display()
            );
        }
        if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!(
                "--force: {} is a symbolic link; a store is replaced by swapping its directory; HINT: pass the \
                 directory it points to",
                dir.display()
            );
        }
        if is_cwd(dir) {
            bail!(
                "--force: {} is the working directory; a store is replaced by swapping its directory, which the \
                 working directory cannot be; HINT: run from the parent directory with --out <name>",
                dir.display()
            );
        }
        return Ok(());
    }
    match std::fs::symlink_metadata(dir) {
        Err(_) => Ok(()),
        Ok(m) if !m.is_dir() => bail!(
            "{} exists and is not a directory; HINT: choose a new directory for --out",
            dir.display()
        ),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir)
                .with_context(|| format!("listing {}", dir.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>();
            if entries.is_empty() {
                return Ok(());
            }
            entries.sort();
            entries.truncate(5);
            bail!(
                "{} is not empty and is not a setdino store (no {MANIFEST}; it holds {}); setdino does not write a \
                 store into it, nor delete files it did not write; HINT: choose a new or empty directory for --out",
                dir.display(),
                entries.join(", ")
            )
        }
    }
}

/// `dir` with a file name (`.` and `..` resolved), so that a sibling temp directory can be named.
fn named_dir(dir: &Path) -> Result<PathBuf> {
    if dir.file_name().is_some() {
        return Ok(dir.to_path_buf());
    }
    std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))
}

/// Move the finished store `tmp` to `dir`: the old store (if any) is renamed aside, the new one renamed in,
/// then the old one's files (those its manifest lists) removed; anything else the old directory held is
/// moved into the new store directory.
fn swap_in(tmp: &Path, dir: &Path, force: bool) -> Result<()> {
    check_target(dir, force)?;
    let old_manifest = dir.join(MANIFEST);
    if !old_manifest.exists() {
        if dir.is_dir() {
            // Empty (checked above).
            if is_cwd(dir) {
                // Replacing the working directory would leave the user's shell in a deleted one.
                return move_files_in(tmp, dir);
            }
            std::fs::remove_dir(dir)
                .with_context(|| format!("replacing empty {}", dir.display()))?;
        }
        std::fs::rename(tmp, dir)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
        sync_dir(&parent_dir(dir));
        return Ok(());
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let aside = parent_dir(dir).join(format!(".{name}.old.{}.{nanos}", std::process::id()));
    std::fs::rename(dir, &aside)
        .with_context(|| format!("renaming the old store {} aside", dir.display()))?;
    if let Err(e) = std::fs::rename(tmp, dir) {
        // Put the old store back.
        let _ = std::fs::rename(&aside, dir);
        return Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()));
    }
    sync_dir(&parent_dir(dir));
    remove_old_store(&aside, dir)
}

fn is_cwd(dir: &Path) -> bool {
    match (std::fs::canonicalize(dir), std::env::current_dir()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Move the files of the finished store `tmp` into the empty directory `dir`, the manifest last (so `dir`
/// looks like a store only when complete), then remove `tmp`.
fn move_files_in(tmp: &Path, dir: &Path) -> Result<()> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(tmp)
        .with_context(|| format!("listing {}", tmp.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| n != MANIFEST)
        .collect();
    names.push(MANIFEST.into());
    for n in names {
        std::fs::rename(tmp.join(&n), dir.join(&n))
            .with_context(|| format!("moving {} into {}", n.to_string_lossy(), dir.display()))?;
    }
    sync_dir(dir);
    std::fs::remove_dir(tmp).with_context(|| format!("removing {}", tmp.display()))
}

/// Remove the files of the old store at `aside` that its manifest lists; move every other entry into
/// `dir` (the user's files stay where they were); remove `aside` when it is then empty.
fn remove_old_store(aside: &Path, dir: &Path) -> Result<()> {
    let m: Option<Manifest> = std::fs::read(aside.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(m) = &m {
        let listed = m
            .shards
            .iter()
            .chain(std::iter::once(&m.index))
            .chain(&m.files)
            .map(|f| f.file.as_str());
        for f in listed {
            // Only plain names (a manifest never lists paths).
            if !f.contains('/') && !f.is_empty() && f != "." && f != ".." {
                let _ = std::fs::remove_file(aside.join(f));
            }
        }
        let _ = std::fs::remove_file(aside.join(MANIFEST));
    }
    let mut left = Vec::new();
    for e in std::fs::read_dir(aside).with_context(|| format!("listing {}", aside.display()))? {
        let e = e?;
        let target = dir.join(e.file_name());
        if target.exists() || std::fs::rename(e.path(), &target).is_err() {
            left.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    if left.is_empty() {
        std::fs::remove_dir(aside).with_context(|| format!("removing {}", aside.display()))?;
    } else {
        eprintln!(
            "warning: the replaced store's directory held files setdino did not write and that clash with the new \
             store's names; they are kept in {}: {}",
            aside.display(),
            left.join(", ")
        );
    }
    Ok(())
}

impl StoreWriter {
    /// Start a store for `dir`. It is written into a sibling temp directory (`.NAME.tmp.PID.SEQ`) and moved
    /// into place by [`StoreWriter::finish`], so a failed or killed write leaves `dir` as it was. An existing
    /// store in `dir` is an error unless `opts.force`; a non-empty directory that is not a store is always
    /// an error. Temp directories of earlier, killed writes of the same `dir` are removed.
    pub fn create(dir: &Path, opts: WriterOptions) -> Result<StoreWriter> {
        if opts.channels.is_empty() || opts.crop == 0 {
            bail!("a store needs at least one channel and a crop size > 0");
        }
        if opts.cells_per_shard == 0 {
            bail!("cells per shard must be ≥ 1");
        }
        let target = named_dir(dir)?;
        check_target(&target, opts.force)?;
        let tmp = TempFile::new(&target)?;
        std::fs::create_dir(tmp.path())
            .with_context(|| format!("creating store directory {}", tmp.path().display()))?;
        let work = tmp.path().to_path_buf();
        let index = OpenBin::create(work.join(INDEX_FILE))?;
        let meta = if opts.meta_columns.is_empty() {
            None
        } else {
            let path = work.join(META_FILE);
            let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            let mut w = csv::WriterBuilder::new()
                .delimiter(b'\t')
                .from_writer(BufWriter::new(f));
            w.write_record(&opts.meta_columns)?;
            Some(w)
        };
        let crop_len = opts.channels.len() * (opts.crop as usize).pow(2);
        let ntc = NtcAccumulator::new(opts.channels.len(), crop_len / opts.channels.len());
        Ok(StoreWriter {
            dir: work,
            target,
            tmp: Some(tmp),
            opts,
            crop_len,
            plates: Dict::default(),
            wells: Dict::default(),
            genes: Dict::default(),
            sgrnas: Dict::default(),
            batches: Vec::new(),
            batch_ids: HashMap::new(),
            shard: None,
            shards: Vec::new(),
            index,
            meta,
            ntc,
            cells: 0,
        })
    }

    /// Number of values of one crop: C·H·W.
    pub fn crop_len(&self) -> usize {
        self.crop_len
    }

    /// Cells written so far.
    pub fn cells(&self) -> u64 {
        self.cells
    }

    /// Append cells. crops: (N, C, H, W) u16 unorm, N = cells.len().
    pub fn push(&mut self, cells: &[CellMeta], crops: &[u16]) -> Result<()> {
        if crops.len() != cells.len() * self.crop_len {
            bail!(
                "store writer: {} crop values for {} cells, expected {} ({} per cell)",
                crops.len(),
                cells.len(),
                cells.len() * self.crop_len,
                self.crop_len
            );
        }
        let crcs: Vec<u32> = crops
            .par_chunks(self.crop_len.max(1))
            .map(|c| crc32fast::hash(bytemuck::cast_slice(c)))
            .collect();
        for (k, cell) in cells.iter().enumerate() {
            if cell.extra.len() != self.opts.meta_columns.len() {
                bail!(
                    "store writer: cell {} has {} extra metadata values, expected {} ({:?})",
                    self.cells,
                    cell.extra.len(),
                    self.opts.meta_columns.len(),
                    self.opts.meta_columns
                );
            }
            let crop = &crops[k * self.crop_len..(k + 1) * self.crop_len];
            if self
                .shard
                .as_ref()
                .is_some_and(|s| s.count as usize >= self.opts.cells_per_shard)
            {
                self.close_shard()?;
            }
            if self.shard.is_none() {
                let path = self.dir.join(shard_file_name(self.shards.len()));
                self.shard = Some(OpenBin::create(path)?);
            }
            let shard = self.shard.as_mut().unwrap();
            let slot = shard.count as u32;
            shard.append(bytemuck::cast_slice(crop))?;
            shard.count += 1;
            let plate = self.plates.id(&cell.plate);
            let well = self.wells.id(&cell.well);
            let key = BatchKey { plate, well };
            let batch = *self.batch_ids.entry(key).or_insert_with(|| {
                self.batches.push(key);
                (self.batches.len() - 1) as u32
            });
            let is_ntc = cell.gene == self.opts.ntc_gene;
            let rec = CellRecord {
                shard: self.shards.len() as u32,
                slot,
                plate,
                well,
                batch,
                tile: cell.tile,
                gene: self.genes.id(&cell.gene),
                sgrna: self.sgrnas.id(&cell.sgrna),
                cell_id: cell.cell_id,
                i: cell.i,
                j: cell.j,
                flags: if is_ntc { FLAG_NTC } else { 0 },
                crc: crcs[k],
            };
            self.index.append(bytemuck::bytes_of(&rec))?;
            self.index.count += 1;
            if let Some(m) = self.meta.as_mut() {
                m.write_record(&cell.extra).context("writing meta.tsv")?;
            }
            if is_ntc {
                self.ntc.add(batch, crop);
            }
            self.cells += 1;
        }
        Ok(())
    }

    fn close_shard(&mut self) -> Result<()> {
        if let Some(s) = self.shard.take() {
            let c = self.opts.crop;
            self.shards
                .push(s.close(SHARD_MAGIC, [self.opts.channels.len() as u32, c, c])?);
        }
        Ok(())
    }

    /// Close every file, write the NTC statistics and `report`, then the manifest (atomically). Only now is
    /// the directory a store.
    pub fn finish(mut self, report: serde_json::Value) -> Result<Manifest> {
        if self.cells == 0 && !self.opts.allow_empty {
            bail!(
                "no cells were written to {}; HINT: check the cell table, the crop size and the plate/well filters \
                 (the report lists skipped cells)",
                self.target.display()
            );
        }
        self.close_shard()?;
        let index = self.index.close(INDEX_MAGIC, [RECORD_BYTES as u32, 0, 0])?;
        let mut files = Vec::new();
        if let Some(m) = self.meta.take() {
            let f = m
                .into_inner()
                .map_err(|e| anyhow::anyhow!("flushing meta.tsv: {e}"))?;
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            let path = self.dir.join(META_FILE);
            let (bytes, crc32) = file_crc32(&path)?;
            files.push(FileEntry {
                file: META_FILE.into(),
                bytes,
                crc32,
                count: self.cells,
            });
        }
        let stats = self
            .ntc
            .finish(&self.batches, &self.plates.names, &self.wells.names);
        for (name, value) in [
            (NTC_FILE, serde_json::to_vec_pretty(&stats)?),
            (REPORT_FILE, serde_json::to_vec_pretty(&report)?),
        ] {
            let path = self.dir.join(name);
            write_atomic(&path, &value)?;
            files.push(FileEntry {
                file: name.into(),
                bytes: value.len() as u64,
                crc32: crc32fast::hash(&value),
                count: 0,
            });
        }
        let manifest = Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            crop: self.opts.crop,
            channels: self.opts.channels.clone(),
            dtype: "u16-unorm".into(),
            cells: self.cells,
            ntc_gene: self.opts.ntc_gene.clone(),
            shards: std::mem::take(&mut self.shards),
            index,
            files,
            plates: std::mem::take(&mut self.plates.names),
            wells: std::mem::take(&mut self.wells.names),
            batches: std::mem::take(&mut self.batches),
            genes: std::mem::take(&mut self.genes.names),
            sgrnas: std::mem::take(&mut self.sgrnas.names),
            meta_columns: self.opts.meta_columns.clone(),
            created_by: self.opts.created_by.clone(),
        };
        write_atomic(
            &self.dir.join(MANIFEST),
            &serde_json::to_vec_pretty(&manifest)?,
        )?;
        sync_dir(&self.dir);
        swap_in(&self.dir, &self.target, self.opts.force)?;
        if let Some(t) = self.tmp.take() {
            t.keep();
        }
        Ok(manifest)
    }
}

/// Quantise a value in [0, 1] to u16 unorm: round(x·65535), clamped.
#[inline]
pub fn to_unorm(x: f32) -> u16 {
    (x.clamp(0.0, 1.0) * 65535.0).round() as u16
}
