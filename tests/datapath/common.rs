//! Shared helpers: small deterministic stores written through the public writer.
use setdino::store::{CellMeta, Store, StoreWriter, WriterOptions};
use std::path::Path;

/// A deterministic pseudo-random u16 crop for cell `k` (C, S, S).
pub fn crop_values(k: usize, c: usize, s: usize) -> Vec<u16> {
    let mut x = (k as u64).wrapping_mul(0x9E3779B97F4A7C15) ^ 0xD1B54A32D192ED03;
    (0..c * s * s)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 48) as u16
        })
        .collect()
}

/// Metadata of a synthetic cell: `plates` × `wells` batches, genes g0.. plus NTC, cells spread evenly.
pub fn cell_meta(k: usize, plates: usize, wells: usize, genes: usize) -> CellMeta {
    let b = k % (plates * wells);
    let g = (k / (plates * wells)) % (genes + 1);
    let gene = if g == genes {
        "nontargeting".to_string()
    } else {
        format!("g{g}")
    };
    CellMeta {
        plate: format!("P{}", b / wells),
        well: format!("W{}", b % wells),
        tile: (k % 7) as u32,
        cell_id: k as u64 * 3,
        i: 50.0 + k as f32,
        j: 60.5,
        sgrna: format!("{gene}_sg{}", k % 2),
        gene,
        extra: vec![format!("x{k}")],
    }
}

/// Write a store of `n` cells with C = 2, S = 8 and 5 cells per shard.
pub fn small_store(dir: &Path, n: usize) -> Store {
    let mut o = WriterOptions::new(8, vec!["dna".into(), "actin".into()]);
    o.cells_per_shard = 5;
    o.meta_columns = vec!["extra".into()];
    let mut w = StoreWriter::create(dir, o).unwrap();
    let metas: Vec<CellMeta> = (0..n).map(|k| cell_meta(k, 2, 2, 3)).collect();
    let crops: Vec<u16> = (0..n).flat_map(|k| crop_values(k, 2, 8)).collect();
    // Two pushes, to exercise shard rollover across calls.
    let h = n / 2;
    w.push(&metas[..h], &crops[..h * 128]).unwrap();
    w.push(&metas[h..], &crops[h * 128..]).unwrap();
    w.finish(serde_json::json!({"test": true})).unwrap();
    Store::open(dir).unwrap()
}

/// Read a `.npy` float32 file written by export: (shape, values).
pub fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let h = setdino::store::npy::parse_header(&bytes, path).unwrap();
    let v: Vec<f32> = bytes[h.data_offset..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (h.shape, v)
}

/// A screen-like store: `plates` × `wells` batches, genes g0..g{genes-1} plus NTC, `per` cells per (gene,
/// batch), plus gene "rare" present in one batch only and gene "thin" with 3 cells per batch. C = 2.
pub fn screen_store(
    dir: &Path,
    crop: usize,
    plates: usize,
    wells: usize,
    genes: usize,
    per: usize,
) -> Store {
    let mut o = WriterOptions::new(crop as u32, vec!["dna".into(), "actin".into()]);
    o.cells_per_shard = 97;
    let mut w = StoreWriter::create(dir, o).unwrap();
    let mut k = 0usize;
    let mut push = |w: &mut StoreWriter, plate: usize, well: usize, gene: &str, guide: usize| {
        let m = CellMeta {
            plate: format!("P{plate}"),
            well: format!("W{well}"),
            tile: 0,
            cell_id: k as u64,
            i: 0.0,
            j: 0.0,
            gene: gene.to_string(),
            sgrna: format!("{gene}_{guide}"),
            extra: vec![],
        };
        w.push(&[m], &crop_values(k, 2, crop)).unwrap();
        k += 1;
    };
    for plate in 0..plates {
        for well in 0..wells {
            for g in 0..=genes {
                let gene = if g == genes {
                    "nontargeting".to_string()
                } else {
                    format!("g{g}")
                };
                for q in 0..per {
                    push(&mut w, plate, well, &gene, q % 2);
                }
            }
            for _ in 0..3 {
                push(&mut w, plate, well, "thin", 0);
            }
        }
    }
    for _ in 0..per {
        push(&mut w, 0, 0, "rare", 0);
    }
    w.finish(serde_json::json!({})).unwrap();
    Store::open(dir).unwrap()
}
