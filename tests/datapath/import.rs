//! import-crops: export → import round trip, uint16 input, and bad input named precisely.
use crate::common::*;
use setdino::store::export::export;
use setdino::store::import::{import_crops, ImportOptions};
use setdino::store::npy::{header_bytes, write_f32, NpyDtype};
use setdino::store::Store;

fn opts() -> ImportOptions {
    ImportOptions {
        channels: Some(vec!["dna".into(), "actin".into()]),
        ntc_gene: "nontargeting".into(),
        force: false,
        columns: Default::default(),
    }
}

#[test]
fn export_then_import_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_store(&dir.path().join("a"), 9);
    let all: Vec<u32> = (0..9).collect();
    let (npy, tsv) = export(&s, &all, &dir.path().join("x")).unwrap();
    let m = import_crops(&npy, &tsv, &dir.path().join("b"), &opts()).unwrap();
    assert_eq!(m.meta_columns, vec!["extra".to_string()]);
    let t = Store::open(&dir.path().join("b")).unwrap();
    for k in 0..9 {
        assert_eq!(t.crop_u16(k).unwrap(), s.crop_u16(k).unwrap(), "cell {k}");
        let (a, b) = (s.record(k), t.record(k));
        assert_eq!(
            (a.tile, a.cell_id, a.i, a.j, a.flags),
            (b.tile, b.cell_id, b.i, b.j, b.flags)
        );
    }
    assert_eq!(t.ntc_stats(), s.ntc_stats());
    assert_eq!(t.read_meta().unwrap(), s.read_meta().unwrap());
}

#[test]
fn uint16_input_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut bytes = header_bytes(NpyDtype::U16, &[2, 1, 4, 4]);
    let vals: Vec<u16> = (0..32).map(|k| k * 1000).collect();
    bytes.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(d.join("u.npy"), &bytes).unwrap();
    std::fs::write(
        d.join("m.csv"),
        "plate,well,gene,sgRNA,tile\nP,A1,g,g_1,3\nP,A1,nontargeting,n_1,4\n",
    )
    .unwrap();
    let o = ImportOptions {
        channels: None,
        ..opts()
    };
    import_crops(&d.join("u.npy"), &d.join("m.csv"), &d.join("s"), &o).unwrap();
    let s = Store::open(&d.join("s")).unwrap();
    assert_eq!(s.crop_u16(1).unwrap(), &vals[16..]);
    assert_eq!(s.manifest().channels, vec!["ch0".to_string()]);
    assert!(s.record(1).is_ntc() && s.record(0).tile == 3);
    // Missing column.
    std::fs::write(d.join("bad.csv"), "plate,well,gene\nP,A1,g\nP,A1,g\n").unwrap();
    let e = format!(
        "{:#}",
        import_crops(&d.join("u.npy"), &d.join("bad.csv"), &d.join("t"), &o).unwrap_err()
    );
    assert!(e.contains("bad.csv") && e.contains("sgRNA"), "{e}");
    // Row count mismatch.
    std::fs::write(d.join("short.csv"), "plate,well,gene,sgRNA\nP,A1,g,g_1\n").unwrap();
    let e = format!(
        "{:#}",
        import_crops(&d.join("u.npy"), &d.join("short.csv"), &d.join("t"), &o).unwrap_err()
    );
    assert!(e.contains("1 rows") && e.contains("2 crops"), "{e}");
    // Float out of range names crop, channel and pixel; no store is left behind.
    let mut f = vec![0.5f32; 2 * 16];
    f[16 + 5] = 1.5;
    write_f32(&d.join("f.npy"), &[2, 1, 4, 4], &f).unwrap();
    let e = format!(
        "{:#}",
        import_crops(&d.join("f.npy"), &d.join("m.csv"), &d.join("t"), &o).unwrap_err()
    );
    assert!(
        e.contains("crop 1") && e.contains("(1, 1)") && e.contains("1.5"),
        "{e}"
    );
    assert!(Store::open(&d.join("t")).is_err());
    f[16 + 5] = f32::NAN;
    write_f32(&d.join("f.npy"), &[2, 1, 4, 4], &f).unwrap();
    assert!(import_crops(&d.join("f.npy"), &d.join("m.csv"), &d.join("t"), &o).is_err());
}
