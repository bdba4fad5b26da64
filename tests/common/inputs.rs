//! Tiny generated inputs for the bad-input and crash tests: a TIFF screen (tiles.csv + cells.csv), a small
//! training store, the tiny training settings, and directory snapshots to prove that nothing changed.
#![allow(dead_code)]
use setdino::ingest::tiff::{write_u16, TiffCompression};
use setdino::store::{CellMeta, StoreWriter, WriterOptions};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Tile side (pixels) of [`write_screen`].
pub const TILE: usize = 96;
/// Crop side used with [`write_screen`].
pub const CROP: &str = "16";

/// A generated screen: `tiles.csv` and `cells.csv` in `dir`.
pub struct Screen {
    pub dir: PathBuf,
    pub tiles: PathBuf,
    pub cells: PathBuf,
    /// The TIFF files, one per tile (two pages: dna, actin).
    pub tifs: Vec<PathBuf>,
}

fn lcg(s: &mut u64) -> u64 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *s >> 33
}

/// 1 plate, wells A1 and B2, 2 tiles per well of TILE×TILE px, 2 channels (multi-page u16 TIFFs), 16 cells
/// per tile (genes g0, g1, nontargeting) with centroids well inside the tile.
pub fn write_screen(dir: &Path, compression: TiffCompression) -> Screen {
    std::fs::create_dir_all(dir).unwrap();
    let mut s = 7u64;
    let mut tcsv = String::from("plate,well,tile,path\n");
    let mut ccsv = String::from("plate,well,tile,cell_id,i,j,sgRNA,gene\n");
    let mut tifs = Vec::new();
    let mut id = 0u64;
    for well in ["A1", "B2"] {
        for tile in 0..2u32 {
            let pages: Vec<Vec<u16>> = (0..2)
                .map(|c| {
                    (0..TILE * TILE)
                        .map(|q| {
                            let (y, x) = ((q / TILE) as u64, (q % TILE) as u64);
                            (300 + 40 * c + (x * 7 + y * 3) % 200 + lcg(&mut s) % 3000) as u16
                        })
                        .collect()
                })
                .collect();
            let name = format!("{well}_{tile}.tif");
            let refs: Vec<&[u16]> = pages.iter().map(|p| p.as_slice()).collect();
            let path = dir.join(&name);
            write_u16(&path, TILE, TILE, &refs, compression).unwrap();
            tifs.push(path);
            writeln!(tcsv, "P0,{well},{tile},{name}").unwrap();
            for k in 0..16u64 {
                let i = 10.0 + (lcg(&mut s) % 7500) as f64 / 100.0;
                let j = 10.0 + (lcg(&mut s) % 7500) as f64 / 100.0;
                let gene = ["g0", "g1", "nontargeting"][(k % 3) as usize];
                writeln!(
                    ccsv,
                    "P0,{well},{tile},{id},{i},{j},{gene}_sg{},{gene}",
                    k % 2
                )
                .unwrap();
                id += 1;
            }
        }
    }
    let tiles = dir.join("tiles.csv");
    let cells = dir.join("cells.csv");
    std::fs::write(&tiles, tcsv).unwrap();
    std::fs::write(&cells, ccsv).unwrap();
    Screen {
        dir: dir.to_path_buf(),
        tiles,
        cells,
        tifs,
    }
}

/// The ingest arguments for a screen (after `ingest`).
pub fn ingest_args(s: &Screen, out: &Path) -> Vec<String> {
    vec![
        "ingest".into(),
        "--tiles".into(),
        s.tiles.display().to_string(),
        "--cells".into(),
        s.cells.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--crop".into(),
        CROP.into(),
        "--channels".into(),
        "dna,actin".into(),
    ]
}

/// 1 plate × 3 wells, genes g0..g3 + NTC, 24 cells per (gene, well), 2 channels of 16 px (what the
/// pipeline tests train on).
pub fn train_store(dir: &Path) {
    let mut o = WriterOptions::new(16, vec!["dna".into(), "actin".into()]);
    o.cells_per_shard = 100;
    let mut w = StoreWriter::create(dir, o).unwrap();
    let mut k = 0u64;
    for well in 0..3 {
        for g in 0..5u16 {
            let gene = if g == 4 {
                "nontargeting".to_string()
            } else {
                format!("g{g}")
            };
            for q in 0..24u64 {
                let m = CellMeta {
                    plate: "P0".into(),
                    well: format!("W{well}"),
                    tile: 0,
                    cell_id: k,
                    i: 0.0,
                    j: 0.0,
                    gene: gene.clone(),
                    sgrna: format!("{gene}_{}", q % 2),
                    extra: vec![],
                };
                let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let crop: Vec<u16> = (0..2 * 16 * 16u16)
                    .map(|p| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        ((x >> 52) as u16).wrapping_add(g * 4000 + (p % 16) * 100)
                    })
                    .collect();
                w.push(&[m], &crop).unwrap();
                k += 1;
            }
        }
    }
    w.finish(serde_json::json!({})).unwrap();
}

/// `--set` overrides of a model and loop small enough for a step in milliseconds on a CPU.
pub fn tiny_sets(max_steps: u64, checkpoint_every: u64) -> Vec<String> {
    let mut v: Vec<String> = [
        "model.patch=8",
        "model.pos_grid=28",
        "model.dim=32",
        "model.heads=2",
        "model.mlp_hidden=64",
        "model.depth=2",
        "model.head_hidden=48",
        "model.head_bottleneck=16",
        "model.out_dim=32",
        "data.set_size=4",
        "data.sets_per_step=2",
        "data.n_local=2",
        "data.min_cells=8",
        "train.epochs=2",
        "train.keep_last=100",
        "train.backend=cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("train.max_steps={max_steps}"));
    v.push(format!("train.checkpoint_every={checkpoint_every}"));
    v
}

/// `train --store S --out O --quiet` plus `--set` for each override.
pub fn train_args(store: &Path, out: &Path, sets: &[String]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "train".into(),
        "--store".into(),
        store.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--quiet".into(),
    ];
    for s in sets {
        a.push("--set".into());
        a.push(s.clone());
    }
    a
}

/// Every file under `dir` (relative path → bytes); directories are listed with an empty value.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, dir, &mut m);
    m
}

/// Names in `dir` (not recursive) that look like setdino temps (`.NAME.tmp…` or `.NAME.old…`).
pub fn temps_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    rd.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && (n.contains(".tmp") || n.contains(".old.")))
        .collect()
}

/// The setdino binary built with the tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_setdino")
}

/// Run the binary; returns (success, stderr).
pub fn run_bin(args: &[String], cwd: Option<&Path>) -> (bool, String) {
    let mut c = std::process::Command::new(bin());
    c.args(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
