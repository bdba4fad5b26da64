//! Fuzzing entry points: one function per parser, taking raw bytes, shared by the `cargo fuzz` targets
//! (fuzz/fuzz_targets/) and the corpus replay in `cargo test` (tests/fuzz_corpus.rs), so the two cannot
//! drift.
//!
//! Key decisions: each function drives the library's real entry point (parsers that take a path get a
//! file in a per-thread scratch directory) and ignores its `Result`: an `Err` is the correct answer to
//! bad input, a panic, an abort or a hang is a bug. Where a parse succeeds, the function also uses what
//! was parsed the way its callers do (reads every tensor, every crop), and asserts the invariants the
//! parser promises, so an accepted-but-inconsistent input is caught too.
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// A directory private to this thread, removed when the thread ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// This thread's scratch directory (created on first use), emptied of `names` before it is returned.
fn scratch(names: &[&str]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let dir = s
            .get_or_insert_with(|| {
                let d = std::env::temp_dir().join(format!(
                    "setdino-fuzz-{}-{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                let _ = std::fs::remove_dir_all(&d);
                std::fs::create_dir_all(&d).expect("creating the fuzz scratch directory");
                Scratch(d)
            })
            .0
            .clone();
        for n in names {
            let _ = std::fs::remove_file(dir.join(n));
        }
        dir
    })
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("writing a fuzz input file");
}

/// Splits `data` at each occurrence of `sep` (at most `max` parts; the last part keeps the rest).
fn split_parts<'a>(data: &'a [u8], sep: &[u8], max: usize) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max {
        match rest.windows(sep.len()).position(|w| w == sep) {
            Some(k) => {
                parts.push(&rest[..k]);
                rest = &rest[k + sep.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// Separator between the files of a multi-file input (cells, store, config targets).
pub const SEP: &[u8] = b"\n--8<--\n";

/// TIFF reader ([`crate::ingest::tiff::read_pages_from_reader`]): every page decodes to planes whose
/// sizes match their dimensions, or an error.
pub fn tiff(data: &[u8]) {
    let path = Path::new("fuzz.tif");
    let r = std::io::Cursor::new(data);
    if let Ok(pages) = crate::ingest::tiff::read_pages_from_reader(r, data.len() as u64, path) {
        for p in &pages {
            assert_eq!(p.data.len(), p.h * p.w, "plane size matches its dimensions");
            if let crate::ingest::tiff::Pixels::F32(v) = &p.data {
                assert!(
                    v.iter().all(|x| x.is_finite()),
                    "non-finite values are errors"
                );
            }
        }
    }
}

/// tiles.csv and cells.csv parsers ([`crate::ingest::table::read_tiles`], [`read_cells`]): input is
/// `tiles.csv SEP cells.csv`; the scratch directory holds `a.tif` and `b.tif` so listed paths can exist.
/// cells.csv is read against the parsed tiles, and against fixed tiles (plate P, well W, tiles 0–3) so
/// it is exercised when tiles.csv fails.
///
/// [`read_cells`]: crate::ingest::table::read_cells
pub fn tables(data: &[u8]) {
    use crate::ingest::table::{read_cells, read_tiles, TilePaths, TileRow};
    let parts = split_parts(data, SEP, 2);
    let dir = scratch(&["tiles.csv", "cells.csv"]);
    for t in ["a.tif", "b.tif"] {
        if !dir.join(t).exists() {
            write(&dir.join(t), b"");
        }
    }
    let (tp, cp) = (dir.join("tiles.csv"), dir.join("cells.csv"));
    write(&tp, parts[0]);
    write(&cp, parts.get(1).copied().unwrap_or(b""));
    let channels = ["a".to_string(), "b".to_string()];
    let named = data.first().is_some_and(|b| b & 1 == 1);
    if let Ok((rows, _)) = read_tiles(&tp, named.then_some(&channels[..])) {
        for r in &rows {
            assert!(r.first_path().is_file(), "listed TIFFs exist");
        }
        check_cells(read_cells(&cp, &rows, &Default::default()), &rows);
    }
    let fixed: Vec<TileRow> = (0..4)
        .map(|t| TileRow {
            plate: "P".into(),
            well: "W".into(),
            tile: t,
            paths: TilePaths::MultiPage(dir.join("a.tif")),
            line: t as usize + 2,
        })
        .collect();
    check_cells(read_cells(&cp, &fixed, &Default::default()), &fixed);
}

fn check_cells(
    table: anyhow::Result<crate::ingest::table::CellTable>,
    tiles: &[crate::ingest::table::TileRow],
) {
    let Ok(table) = table else { return };
    assert_eq!(table.by_tile.len(), tiles.len());
    let mut n = 0;
    for (t, cells) in tiles.iter().zip(&table.by_tile) {
        for c in cells {
            assert!(c.i.is_finite() && c.j.is_finite(), "centroids are finite");
            assert_eq!(c.extra.len(), table.extra_columns.len());
            let m = table.meta(t, c);
            assert_eq!((m.plate.as_str(), m.tile), (t.plate.as_str(), t.tile));
            n += 1;
        }
    }
    assert_eq!(n, table.rows);
}

/// Complexes parser ([`crate::eval::complexes::parse`]): pairs are unordered, distinct and not self
/// pairs.
pub fn complexes(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = crate::eval::complexes::parse(&text, Path::new("fuzz.txt")) {
        for (a, b) in &c.pairs {
            assert!(
                a < b,
                "pairs are stored (smaller, larger) and never self pairs"
            );
        }
    }
}

/// `.npy` header parser ([`crate::store::npy::parse_header`]): an accepted header's shape accounts for
/// exactly the bytes after it.
pub fn npy(data: &[u8]) {
    if let Ok(h) = crate::store::npy::parse_header(data, Path::new("fuzz.npy")) {
        // Checked: a wrapped product would let a huge shape match the bytes present.
        let need = h
            .shape
            .iter()
            .try_fold(h.dtype.size(), |acc, &d| acc.checked_mul(d));
        assert_eq!(need, Some(data.len() - h.data_offset));
    }
}

/// Safetensors / checkpoint loader ([`crate::model::checkpoint::TensorFile::open`]): every tensor is read,
/// the stored config parsed, the model sizes inferred, and the state loaded for a fixed small model.
pub fn checkpoint(data: &[u8]) {
    use crate::model::checkpoint::{infer_config, load_state, stored_config, TensorFile};
    let dir = scratch(&["fuzz.safetensors"]);
    let path = dir.join("fuzz.safetensors");
    write(&path, data);
    let Ok(f) = TensorFile::open(&path) else {
        return;
    };
    let names: Vec<String> = f.names().cloned().collect();
    for n in &names {
        if let Ok(v) = f.get_f64(n) {
            let shape = f.shape(n).expect("a listed tensor has a shape");
            assert_eq!(v.len(), shape.iter().product::<usize>());
        }
    }
    let _ = stored_config(&f);
    for heads in [1, 3] {
        let _ = infer_config(&f, heads, None);
        let _ = infer_config(&f, heads, Some(4.0));
    }
    let _ = load_state(&f, &fuzz_model());
}

/// The model [`checkpoint`] loads: the smallest valid one.
pub fn fuzz_model() -> crate::config::ModelConfig {
    crate::config::ModelConfig {
        in_chans: 1,
        patch: 2,
        dim: 2,
        depth: 1,
        heads: 1,
        mlp_hidden: 2,
        ln_eps: 1e-6,
        drop_path: 0.0,
        pos_grid: 1,
        head_hidden: 2,
        head_bottleneck: 2,
        head_layers: 2,
        out_dim: 2,
        global_size: 2,
        local_size: 2,
    }
}

/// Store reader ([`crate::store::Store::open`], [`crate::store::verify`]): input is `store.json SEP
/// index.bin SEP shard-00000.bin SEP ntc_stats.json SEP meta.tsv`. When the manifest is JSON with the
/// usual fields, the sizes and CRC-32s of index.bin and shard 0 in it are set to the files' real ones
/// (or the fuzzer would rarely get past the checksums). An opened store is read completely.
pub fn store(data: &[u8]) {
    use crate::store::format::{INDEX_FILE, MANIFEST, META_FILE, NTC_FILE};
    let parts = split_parts(data, SEP, 5);
    let shard = crate::store::format::shard_file_name(0);
    let names = [MANIFEST, INDEX_FILE, shard.as_str(), NTC_FILE, META_FILE];
    let dir = scratch(&names);
    for (name, bytes) in names.iter().zip(&parts).skip(1) {
        write(&dir.join(name), bytes);
    }
    let manifest = match serde_json::from_slice::<serde_json::Value>(parts[0]) {
        Ok(mut v) => {
            let fix = |e: Option<&mut serde_json::Value>, bytes: Option<&&[u8]>| {
                if let (Some(serde_json::Value::Object(e)), Some(b)) = (e, bytes) {
                    e.insert("bytes".into(), b.len().into());
                    e.insert("crc32".into(), crc32fast::hash(b).into());
                }
            };
            fix(v.get_mut("index"), parts.get(1));
            fix(v.pointer_mut("/shards/0"), parts.get(2));
            serde_json::to_vec(&v).unwrap_or_else(|_| parts[0].to_vec())
        }
        Err(_) => parts[0].to_vec(),
    };
    write(&dir.join(MANIFEST), &manifest);
    if let Ok(s) = crate::store::Store::open(&dir) {
        let m = s.manifest();
        // Only a store with cells has shards whose length bounds the crop size.
        let mut buf = vec![0f32; if s.is_empty() { 0 } else { s.crop_len() }];
        for k in 0..s.len() {
            let r = *s.record(k);
            let _ = m.batch_name(r.batch);
            if s.crop_f32(k, &mut buf).is_ok() {
                assert!(buf.iter().all(|x| (0.0..=1.0).contains(x)));
            }
            let _ = s.batch_stats(r.batch);
        }
        let _ = s.read_meta();
        let _ = s.report();
    }
    let _ = crate::store::verify(&dir);
}

/// Training configuration ([`crate::train::TrainConfig::load`]): input is `config.toml SEP overrides`,
/// the overrides one `--set key=value` per line. An accepted configuration validates.
pub fn config(data: &[u8]) {
    let parts = split_parts(data, SEP, 2);
    let dir = scratch(&["config.toml"]);
    let path = dir.join("config.toml");
    write(&path, parts[0]);
    let sets: Vec<String> = parts
        .get(1)
        .map(|s| {
            String::from_utf8_lossy(s)
                .lines()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if let Ok(c) = crate::train::TrainConfig::load(Some(&path), &sets) {
        assert!(c.validate().is_ok(), "a loaded configuration validates");
    }
    let _ = crate::train::TrainConfig::load(None, &sets);
}

/// A fuzz entry point: raw input bytes in, nothing out (a panic is the failure).
pub type Target = fn(&[u8]);

/// The targets by name, as the fuzz targets and the corpus replay call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("tiff", tiff),
    ("tables", tables),
    ("complexes", complexes),
    ("npy", npy),
    ("checkpoint", checkpoint),
    ("store", store),
    ("config", config),
];
