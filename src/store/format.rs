//! On-disk format of a crop store: the manifest (`store.json`), shard headers and index records.
//!
//! Key decision: every binary file starts with a 64-byte header (8-byte magic, u32 version, sizes), is
//! little-endian, and is covered by a CRC-32 in the manifest; each crop additionally carries its own CRC-32
//! in its index record, so the memory-mapped reader can detect a flipped byte in the one crop it reads
//! without checksumming terabytes at open.
//!
//! Layout, readable without setdino (numpy):
//! - header (64 bytes): magic `[u8; 8]`, version u32 @8, header size u32 @12 (= 64), dims `[u32; 3]` @16,
//!   count u64 @32, zeros @40..64.
//! - `shard-NNNNN.bin`: header (dims = C, H, W; count = crops), then `np.memmap(path, '<u2', offset=64,
//!   shape=(count, C, H, W))`; value / 65535 gives [0, 1].
//! - `index.bin`: header (dims = 56, 0, 0; count = cells), then records of dtype
//!   `[('shard','<u4'), ('slot','<u4'), ('plate','<u4'), ('well','<u4'), ('batch','<u4'), ('tile','<u4'),
//!   ('gene','<u4'), ('sgrna','<u4'), ('cell_id','<u8'), ('i','<f4'), ('j','<f4'), ('flags','<u4'),
//!   ('crc','<u4')]`; ids index the lists in `store.json`, `batches[b]` is a (plate, well) pair.
use anyhow::{bail, Context, Result};
use bytemuck::{Pod, Zeroable};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[cfg(target_endian = "big")]
compile_error!("the crop store is little-endian and read by casting memory maps; big-endian hosts are unsupported");

/// Version of the store layout written by this build; readers accept exactly this version.
pub const FORMAT_VERSION: u32 = 1;
/// Value of `format` in `store.json`.
pub const FORMAT_NAME: &str = "setdino-crop-store";
/// Magic of a shard file (crops).
pub const SHARD_MAGIC: [u8; 8] = *b"SDCROPS\0";
/// Magic of the cell index file.
pub const INDEX_MAGIC: [u8; 8] = *b"SDINDEX\0";
/// Size of every binary header; payloads start here (a multiple of 8, so records stay aligned).
pub const HEADER_BYTES: usize = 64;
/// Manifest file name: a directory is a complete store only once this file exists.
pub const MANIFEST: &str = "store.json";
/// Index file name.
pub const INDEX_FILE: &str = "index.bin";
/// Extra per-cell metadata columns (TSV, one row per cell in index order), present when the input had any.
pub const META_FILE: &str = "meta.tsv";
/// Per-(batch, channel) NTC pixel statistics.
pub const NTC_FILE: &str = "ntc_stats.json";
/// The ingest or import report.
pub const REPORT_FILE: &str = "report.json";

/// Flag bit in [`CellRecord::flags`]: the cell's gene is the non-targeting control.
pub const FLAG_NTC: u32 = 1;

/// Shard file name for shard number `k`.
pub fn shard_file_name(k: usize) -> String {
    format!("shard-{k:05}.bin")
}

/// Header shared by shard and index files (64 bytes, little-endian).
/// Shard: `dims` = (channels, height, width), `count` = crops. Index: `dims` = (record bytes, 0, 0),
/// `count` = records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub dims: [u32; 3],
    pub count: u64,
}

impl FileHeader {
    /// Serialise into the fixed 64-byte layout (unused bytes are zero).
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(&self.magic);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
        for (k, d) in self.dims.iter().enumerate() {
            b[16 + 4 * k..20 + 4 * k].copy_from_slice(&d.to_le_bytes());
        }
        b[32..40].copy_from_slice(&self.count.to_le_bytes());
        b
    }

    /// Parse and check magic, version and header size; `what` names the file in errors.
    pub fn parse(bytes: &[u8], expect_magic: [u8; 8], what: &Path) -> Result<FileHeader> {
        if bytes.len() < HEADER_BYTES {
            bail!(
                "{}: file is {} bytes, shorter than its {HEADER_BYTES}-byte header; HINT: the file is truncated, \
                 re-run the ingest or import that wrote this store",
                what.display(),
                bytes.len()
            );
        }
        let magic: [u8; 8] = bytes[0..8].try_into().unwrap();
        if magic != expect_magic {
            bail!(
                "{}: bad magic {:?}, expected {:?}; HINT: is this a setdino store file, and was it overwritten?",
                what.display(),
                String::from_utf8_lossy(&magic),
                String::from_utf8_lossy(&expect_magic)
            );
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            bail!(
                "{}: format version {version}, this build reads version {FORMAT_VERSION}; HINT: re-create the store \
                 with this version of setdino (ingest or import-crops)",
                what.display()
            );
        }
        let hb = u32_at(12);
        if hb as usize != HEADER_BYTES {
            bail!("{}: header size field is {hb}, expected {HEADER_BYTES}; HINT: the header is corrupt", what.display());
        }
        if bytes[40..HEADER_BYTES].iter().any(|&x| x != 0) {
            bail!(
                "{}: reserved header bytes are not zero; HINT: the header is corrupt",
                what.display()
            );
        }
        Ok(FileHeader {
            magic,
            version,
            dims: [u32_at(16), u32_at(20), u32_at(24)],
            count: u64::from_le_bytes(bytes[32..40].try_into().unwrap()),
        })
    }
}

/// One cell in the binary index (48 bytes, `#[repr(C)]`, little-endian). Dictionary ids refer to the
/// lists in [`Manifest`]; `batch` is the (plate, well) pair, the experimental batch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct CellRecord {
    /// Shard number and slot within it.
    pub shard: u32,
    pub slot: u32,
    pub plate: u32,
    pub well: u32,
    pub batch: u32,
    pub tile: u32,
    pub gene: u32,
    pub sgrna: u32,
    /// Cell id within its tile, as given by the cell table.
    pub cell_id: u64,
    /// Centroid row and column in tile pixels (NaN when unknown, e.g. imported crops).
    pub i: f32,
    pub j: f32,
    /// Bit 0: NTC. Other bits zero.
    pub flags: u32,
    /// CRC-32 of the crop's bytes (C·H·W little-endian u16).
    pub crc: u32,
}

/// Bytes of one index record.
pub const RECORD_BYTES: usize = std::mem::size_of::<CellRecord>();
const _: () = assert!(RECORD_BYTES == 56);

impl CellRecord {
    pub fn is_ntc(&self) -> bool {
        self.flags & FLAG_NTC != 0
    }
}

/// A file listed in the manifest with its size and checksum (CRC-32 of the whole file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
    /// Crops in a shard, records in the index; 0 for other files.
    #[serde(default)]
    pub count: u64,
}

/// A batch: one (plate, well) pair, by dictionary id.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct BatchKey {
    pub plate: u32,
    pub well: u32,
}

/// The `store.json` manifest. It is written last, atomically; its presence makes the directory a store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// Crop height = width in pixels.
    pub crop: u32,
    pub channels: Vec<String>,
    /// Always `"u16-unorm"`: value / 65535 in [0, 1].
    pub dtype: String,
    pub cells: u64,
    pub ntc_gene: String,
    pub shards: Vec<FileEntry>,
    pub index: FileEntry,
    /// Other files (NTC stats, report, meta).
    pub files: Vec<FileEntry>,
    pub plates: Vec<String>,
    pub wells: Vec<String>,
    pub batches: Vec<BatchKey>,
    pub genes: Vec<String>,
    pub sgrnas: Vec<String>,
    /// Names of the extra metadata columns in `meta.tsv` (empty when there is none).
    pub meta_columns: Vec<String>,
    /// What wrote the store, e.g. `"setdino 0.1.0 ingest"`.
    pub created_by: String,
}

impl Manifest {
    /// Channels × crop × crop.
    pub fn crop_len(&self) -> usize {
        self.channels.len() * (self.crop as usize) * (self.crop as usize)
    }
    /// Bytes of one crop in a shard.
    pub fn crop_bytes(&self) -> usize {
        2 * self.crop_len()
    }
    /// Display name of a batch: `plate_well`.
    pub fn batch_name(&self, b: u32) -> String {
        let k = self.batches[b as usize];
        format!(
            "{}_{}",
            self.plates[k.plate as usize], self.wells[k.well as usize]
        )
    }
}

/// Per-(batch, channel) statistics of NTC pixels, computed over the stored (quantised) crops, un-augmented.
/// `std` is the population std (ddof 0); `mad` is the raw median absolute deviation (multiply by 1.4826 for
/// a σ-consistent estimate; the reference saves MAD × 1.48).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChannelStats {
    pub mean: f64,
    pub std: f64,
    pub median: f64,
    pub mad: f64,
}

/// NTC statistics of one batch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchStats {
    pub batch: u32,
    pub plate: String,
    pub well: String,
    pub ntc_cells: u64,
    pub channels: Vec<ChannelStats>,
}

/// Write `bytes` to `path` atomically (see [`crate::util::atomic::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::util::atomic::write_atomic(path, bytes)
}

/// CRC-32 of a whole file, streamed.
pub fn file_crc32(path: &Path) -> Result<(u64, u32)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, h.finalize()))
}
