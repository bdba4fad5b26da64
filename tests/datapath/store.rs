//! Crop store: round trip, random access, export, NTC statistics, and corruption detected by both
//! `verify` and the reader.
use crate::common::*;
use setdino::store::format::{FileHeader, HEADER_BYTES, MANIFEST, SHARD_MAGIC};
use setdino::store::{export::export, verify, CellFilter, Store};
use std::path::Path;

#[test]
fn round_trip_and_random_access() {
    let dir = tempfile::tempdir().unwrap();
    let n = 23;
    let s = small_store(dir.path(), n);
    assert_eq!(s.len(), n);
    assert_eq!(s.manifest().shards.len(), 5, "5 cells per shard");
    // Random order access returns exactly what was written, with the right metadata.
    for &k in &[22usize, 0, 13, 5, 4, 17, 9] {
        assert_eq!(
            s.crop_u16(k).unwrap(),
            &crop_values(k, 2, 8)[..],
            "cell {k}"
        );
        let r = s.record(k);
        let want = cell_meta(k, 2, 2, 3);
        let m = s.manifest();
        assert_eq!(m.plates[r.plate as usize], want.plate);
        assert_eq!(m.wells[r.well as usize], want.well);
        assert_eq!(m.genes[r.gene as usize], want.gene);
        assert_eq!(m.sgrnas[r.sgrna as usize], want.sgrna);
        assert_eq!(
            (r.tile, r.cell_id, r.i, r.j),
            (want.tile, want.cell_id, want.i, want.j)
        );
        assert_eq!(r.is_ntc(), want.gene == "nontargeting");
        assert_eq!((r.shard as usize, r.slot as usize), (k / 5, k % 5));
    }
    let mut f = vec![0f32; s.crop_len()];
    s.crop_f32(3, &mut f).unwrap();
    assert!(f
        .iter()
        .zip(crop_values(3, 2, 8))
        .all(|(a, b)| *a == b as f32 / 65535.0));
    assert!(s.crop_u16(n).is_err());
    assert_eq!(s.read_meta().unwrap()[7], vec!["x7".to_string()]);
    verify(dir.path()).unwrap();
}

#[test]
fn ntc_stats_match_direct_computation() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_store(dir.path(), 40);
    for st in s.ntc_stats() {
        let cells: Vec<usize> = (0..s.len())
            .filter(|&k| s.record(k).is_ntc() && s.record(k).batch == st.batch)
            .collect();
        assert_eq!(st.ntc_cells as usize, cells.len());
        for c in 0..2 {
            let mut v: Vec<f64> = cells
                .iter()
                .flat_map(|&k| s.crop_u16(k).unwrap()[c * 64..(c + 1) * 64].to_vec())
                .map(|x| x as f64 / 65535.0)
                .collect();
            let n = v.len() as f64;
            let mean = v.iter().sum::<f64>() / n;
            let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let med = |v: &[f64]| {
                if v.len() % 2 == 1 {
                    v[v.len() / 2]
                } else {
                    0.5 * (v[v.len() / 2 - 1] + v[v.len() / 2])
                }
            };
            let m = med(&v);
            let mut d: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
            d.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let cs = &st.channels[c];
            assert!(
                (cs.mean - mean).abs() < 1e-12 && (cs.std - std).abs() < 1e-12,
                "batch {} ch {c}",
                st.batch
            );
            assert!(
                (cs.median - m).abs() < 1e-12 && (cs.mad - med(&d)).abs() < 1e-9,
                "batch {} ch {c}",
                st.batch
            );
        }
    }
    assert_eq!(s.ntc_stats().len(), 4, "every batch has NTC cells");
}

#[test]
fn export_writes_npy_and_tsv() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_store(dir.path(), 12);
    let sel = CellFilter {
        plates: Some(vec!["P1".into()]),
        ..Default::default()
    }
    .select(&s)
    .unwrap();
    assert!(
        !sel.is_empty()
            && sel
                .iter()
                .all(|&k| s.manifest().plates[s.record(k as usize).plate as usize] == "P1")
    );
    let out = dir.path().join("out/x");
    let (npy, tsv) = export(&s, &sel, &out).unwrap();
    let (shape, v) = read_npy_f32(&npy);
    assert_eq!(shape, vec![sel.len(), 2, 8, 8]);
    for (row, &k) in sel.iter().enumerate() {
        let want = crop_values(k as usize, 2, 8);
        assert!(v[row * 128..(row + 1) * 128]
            .iter()
            .zip(&want)
            .all(|(a, &b)| *a == b as f32 / 65535.0));
    }
    let text = std::fs::read_to_string(tsv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "cell\tplate\twell\tbatch\ttile\tcell_id\ti\tj\tgene\tsgRNA\tis_ntc\textra"
    );
    assert_eq!(lines.len(), sel.len() + 1);
    let f: Vec<&str> = lines[1].split('\t').collect();
    let k = sel[0] as usize;
    let m = cell_meta(k, 2, 2, 3);
    assert_eq!(f[0], k.to_string());
    assert_eq!(f[3], format!("{}_{}", m.plate, m.well));
    assert_eq!(f[8], m.gene);
    assert_eq!(f[11], format!("x{k}"));
    assert!(CellFilter {
        genes: Some(vec!["nope".into()]),
        ..Default::default()
    }
    .select(&s)
    .is_err());
}

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn patch(path: &Path, at: usize, f: impl Fn(u8) -> u8) {
    let mut b = std::fs::read(path).unwrap();
    b[at] = f(b[at]);
    std::fs::write(path, b).unwrap();
}

#[test]
fn truncated_shard_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    small_store(dir.path(), 12);
    let p = dir.path().join("shard-00001.bin");
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let e = err_of(Store::open(dir.path()));
    assert!(
        e.contains("shard-00001.bin") && e.contains("truncated"),
        "{e}"
    );
    let e = err_of(verify(dir.path()));
    assert!(e.contains("shard-00001.bin") && e.contains("bytes"), "{e}");
}

#[test]
fn flipped_payload_byte_is_rejected_and_located() {
    let dir = tempfile::tempdir().unwrap();
    small_store(dir.path(), 12);
    // Cell 7 is shard 1, slot 2; flip one byte in the middle of its crop.
    let p = dir.path().join("shard-00001.bin");
    patch(&p, HEADER_BYTES + 2 * 256 + 100, |b| b ^ 0x10);
    let s = Store::open(dir.path()).unwrap();
    assert!(
        s.crop_u16(6).is_ok() && s.crop_u16(8).is_ok(),
        "neighbours still read"
    );
    let e = err_of(s.crop_u16(7));
    assert!(
        e.contains("cell 7") && e.contains("shard-00001.bin") && e.contains("checksum"),
        "{e}"
    );
    let e = err_of(verify(dir.path()));
    assert!(e.contains("CRC-32") && e.contains("cell 7"), "{e}");
}

#[test]
fn flipped_header_or_index_byte_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    small_store(dir.path(), 12);
    let p = dir.path().join("shard-00000.bin");
    patch(&p, 1, |b| b ^ 1);
    let e = err_of(Store::open(dir.path()));
    assert!(
        e.contains("bad magic") && e.contains("shard-00000.bin"),
        "{e}"
    );
    assert!(err_of(verify(dir.path())).contains("bad magic"));
    patch(&p, 1, |b| b ^ 1);
    verify(dir.path()).unwrap();
    // A flipped byte in the index: caught by the index checksum at open.
    patch(&dir.path().join("index.bin"), HEADER_BYTES + 60, |b| b ^ 4);
    let e = err_of(Store::open(dir.path()));
    assert!(e.contains("index.bin") && e.contains("CRC-32"), "{e}");
}

#[test]
fn wrong_version_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    small_store(dir.path(), 12);
    // Shard header version 2.
    let p = dir.path().join("shard-00002.bin");
    let mut b = std::fs::read(&p).unwrap();
    let h = FileHeader::parse(&b, SHARD_MAGIC, &p).unwrap();
    b[..HEADER_BYTES].copy_from_slice(&FileHeader { version: 2, ..h }.to_bytes());
    std::fs::write(&p, &b).unwrap();
    let e = err_of(Store::open(dir.path()));
    assert!(
        e.contains("shard-00002.bin") && e.contains("version 2"),
        "{e}"
    );
    assert!(err_of(verify(dir.path())).contains("version 2"));
    // Manifest version 99.
    let dir2 = tempfile::tempdir().unwrap();
    small_store(dir2.path(), 12);
    let mp = dir2.path().join(MANIFEST);
    let text = std::fs::read_to_string(&mp)
        .unwrap()
        .replace("\"version\": 1,", "\"version\": 99,");
    std::fs::write(&mp, text).unwrap();
    let e = err_of(Store::open(dir2.path()));
    assert!(e.contains("store.json") && e.contains("99"), "{e}");
    assert!(err_of(verify(dir2.path())).contains("99"));
}

#[test]
fn incomplete_store_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    small_store(dir.path(), 12);
    std::fs::remove_file(dir.path().join(MANIFEST)).unwrap();
    let e = err_of(Store::open(dir.path()));
    assert!(e.contains("incomplete store"), "{e}");
    // A writer dropped before finish leaves no manifest.
    let d2 = tempfile::tempdir().unwrap();
    let mut w = setdino::store::StoreWriter::create(
        d2.path(),
        setdino::store::WriterOptions::new(8, vec!["a".into()]),
    )
    .unwrap();
    w.push(&[cell_meta(0, 1, 1, 1)], &crop_values(0, 1, 8))
        .unwrap_err(); // extra column count mismatch
    drop(w);
    assert!(err_of(Store::open(d2.path())).contains("store.json"));
    // Refuses to overwrite a complete store without force.
    let d3 = tempfile::tempdir().unwrap();
    small_store(d3.path(), 3);
    let e = err_of(
        setdino::store::StoreWriter::create(
            d3.path(),
            setdino::store::WriterOptions::new(8, vec!["a".into()]),
        )
        .map(|_| ()),
    );
    assert!(
        e.contains("already holds a store") && e.contains("--force"),
        "{e}"
    );
}
