//! Formats users' pipelines speak: OME-Zarr images and a Parquet cell table written by independent
//! writers (ome-zarr-py / zarr-python / pandas + pyarrow: tests/reference/make_ome_zarr_fixture.py,
//! committed under tests/fixtures/ome_zarr) are read back exactly, and ingest gives the same store from
//! OME-Zarr + Parquet as from TIFF + CSV; `store export --format parquet` imports back unchanged.
use setdino::formats::ome_zarr::Image;
use setdino::formats::table::ColumnMap;
use setdino::ingest::tiff::{write_u16, Pixels, TiffCompression};
use setdino::ingest::{ingest, Illum, IngestOptions};
use setdino::store::npy::{parse_header, NpyDtype};
use setdino::store::Store;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ome_zarr")
}

/// The numpy copy of an image's level 0 (C × Y × X) as f32 values and whether it is an integer type.
fn npy_pixels(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    // numpy writes uint8 as '|u1', which the store's npy reader does not take: read it here.
    let text = String::from_utf8_lossy(&bytes[..128.min(bytes.len())]).into_owned();
    if text.contains("'|u1'") {
        let hl = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
        let shape_txt = &text[text.find("'shape': (").unwrap() + 10..];
        let shape: Vec<usize> = shape_txt[..shape_txt.find(')').unwrap()]
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        return (
            shape,
            bytes[10 + hl..].iter().map(|&b| f32::from(b)).collect(),
        );
    }
    let h = parse_header(&bytes, path).unwrap();
    let data = &bytes[h.data_offset..];
    let vals = match h.dtype {
        NpyDtype::U16 => data
            .chunks_exact(2)
            .map(|c| f32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        NpyDtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    };
    (h.shape, vals)
}

#[test]
fn ome_zarr_images_from_independent_writers_read_back_exactly() {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("index.json")).unwrap()).unwrap();
    let entries = index.as_array().unwrap();
    assert_eq!(
        entries.len(),
        5,
        "v0.4 blosc, v0.5 zstd, gzip uint8, raw float32, v0.5 sharded"
    );
    for e in entries {
        let name = e["name"].as_str().unwrap();
        let img = Image::open(&fixture().join(format!("{name}.zarr"))).unwrap();
        let (shape, want) = npy_pixels(&fixture().join(format!("{name}.npy")));
        let labels: Option<Vec<String>> = e["labels"]
            .as_array()
            .map(|v| v.iter().map(|x| x.as_str().unwrap().to_string()).collect());
        assert_eq!(img.labels, labels, "{name}: omero labels");
        assert_eq!(img.channels(), shape[0], "{name}");
        let names = img.channel_names();
        let pages = img.read(&names).unwrap();
        assert_eq!(pages.len(), shape[0]);
        let plane = shape[1] * shape[2];
        for (c, p) in pages.iter().enumerate() {
            assert_eq!((p.h, p.w), (shape[1], shape[2]), "{name}");
            let integer = e["dtype"] != "float32";
            assert_eq!(p.data.is_integer(), integer, "{name}: u8/u16 stay integers");
            let got = p.data.to_f32();
            assert_eq!(
                got,
                want[c * plane..(c + 1) * plane],
                "{name}: channel {c} differs"
            );
        }
    }
}

#[test]
fn ome_zarr_channels_by_label_and_bad_images_named() {
    let img = Image::open(&fixture().join("v05_zstd.zarr")).unwrap();
    let all = img.read(&img.channel_names()).unwrap();
    // By label, in the order asked.
    let two = img.read(&["actin".into(), "DAPI".into()]).unwrap();
    assert_eq!(two[0].data, all[2].data);
    assert_eq!(two[1].data, all[0].data);
    let e = format!("{:#}", img.read(&["GFP".into()]).unwrap_err());
    assert!(e.contains("GFP") && e.contains("tubulin"), "{e}");
    // No labels: by position, and the count must match.
    let img = Image::open(&fixture().join("v04_gzip.zarr")).unwrap();
    assert_eq!(img.channel_names(), vec!["ch0", "ch1"]);
    let e = format!(
        "{:#}",
        img.read(&["a".into(), "b".into(), "c".into()]).unwrap_err()
    );
    assert!(e.contains("2 channels, expected 3"), "{e}");
    // A time series is refused, not silently cut to its first plane.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("t2.zarr");
    copy_dir(&fixture().join("v04_gzip.zarr"), &copy);
    let za = copy.join("s0/.zarray");
    let meta = std::fs::read_to_string(&za).unwrap();
    std::fs::write(&za, meta.replacen("1,", "2,", 1)).unwrap();
    let e = format!("{:#}", Image::open(&copy).unwrap_err());
    assert!(e.contains("axis t has 2 planes"), "{e}");
    // Not an image group.
    let e = format!("{:#}", Image::open(&copy.join("s0")).unwrap_err());
    assert!(e.contains("multiscales"), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &p);
        } else {
            std::fs::copy(e.path(), &p).unwrap();
        }
    }
}

/// The tiles of the fixture's cell table: P1/A1/0 = v04_blosc, P1/A2/0 = v05_zstd.
const TILES: [(&str, &str); 2] = [("A1", "v04_blosc"), ("A2", "v05_zstd")];

fn ingest_with(dir: &Path, tiles: &str, cells: &Path, columns: &str, out: &str) -> Store {
    let t = dir.join(format!("{out}_tiles.csv"));
    std::fs::write(&t, tiles).unwrap();
    let mut o = IngestOptions::new(&t, cells, &dir.join(out));
    o.crop = 8;
    o.illum = Illum::None;
    o.columns = columns.parse::<ColumnMap>().unwrap();
    ingest(&o).unwrap();
    Store::open(&dir.join(out)).unwrap()
}

fn assert_same_store(a: &Store, b: &Store) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.manifest().channels, b.manifest().channels);
    assert_eq!(a.manifest().genes, b.manifest().genes);
    assert_eq!(a.manifest().meta_columns, b.manifest().meta_columns);
    for k in 0..a.len() {
        assert_eq!(a.crop_u16(k).unwrap(), b.crop_u16(k).unwrap(), "cell {k}");
        let (x, y) = (a.record(k), b.record(k));
        assert_eq!(
            (x.cell_id, x.i, x.j, x.gene, x.sgrna, x.batch),
            (y.cell_id, y.i, y.j, y.gene, y.sgrna, y.batch),
            "cell {k}"
        );
    }
    assert_eq!(a.read_meta().unwrap(), b.read_meta().unwrap());
}

#[test]
fn ingest_of_ome_zarr_and_parquet_equals_tiff_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // TIFF copies of the OME-Zarr pixels (multi-page, channel order DAPI, tubulin, actin).
    let mut tiff_rows = String::from("plate,well,tile,path\n");
    let mut zarr_rows = String::from("plate,well,tile,path\n");
    for (well, name) in TILES {
        let img = Image::open(&fixture().join(format!("{name}.zarr"))).unwrap();
        let pages = img.read(&img.channel_names()).unwrap();
        let planes: Vec<Vec<u16>> = pages
            .iter()
            .map(|p| match &p.data {
                Pixels::U16(v) => v.clone(),
                Pixels::F32(_) => panic!("{name} is uint16"),
            })
            .collect();
        let refs: Vec<&[u16]> = planes.iter().map(Vec::as_slice).collect();
        let tif = d.join(format!("{name}.tif"));
        write_u16(&tif, pages[0].w, pages[0].h, &refs, TiffCompression::Lzw).unwrap();
        tiff_rows += &format!("P1,{well},0,{}\n", tif.display());
        zarr_rows += &format!(
            "P1,{well},0,{}\n",
            fixture().join(format!("{name}.zarr")).display()
        );
    }
    let map = "gene=gene_symbol_0,sgRNA=sgRNA_0,i=i_0,j=j_0,cell_id=label";
    let csv = fixture().join("cells.csv");
    let pq = fixture().join("cells.parquet");
    let base = ingest_with(d, &tiff_rows, &csv, map, "tiff_csv");
    assert_eq!(base.manifest().channels, vec!["ch0", "ch1", "ch2"]);
    assert_eq!(base.manifest().meta_columns, vec!["area", "phase"]);
    assert!(base.len() > 20, "most of the 28 cells fit");
    // Parquet (pyarrow, with a pandas index column that is not a column of the table).
    let from_pq = ingest_with(d, &tiff_rows, &pq, map, "tiff_pq");
    assert_same_store(&base, &from_pq);
    // OME-Zarr tiles: channel names come from the omero labels.
    let from_zarr = ingest_with(d, &zarr_rows, &pq, map, "zarr_pq");
    assert_eq!(
        from_zarr.manifest().channels,
        vec!["DAPI", "tubulin", "actin"]
    );
    for k in 0..base.len() {
        assert_eq!(base.crop_u16(k).unwrap(), from_zarr.crop_u16(k).unwrap());
    }
    // Without the mapping: the missing column, the file, the columns it has and the option to use.
    let t = d.join("t.csv");
    std::fs::write(&t, &tiff_rows).unwrap();
    let mut o = IngestOptions::new(&t, &pq, &d.join("bad"));
    o.crop = 8;
    let e = format!("{:#}", ingest(&o).unwrap_err());
    assert!(
        e.contains("cells.parquet")
            && e.contains("no column \"cell_id\"")
            && e.contains("gene_symbol_0")
            && e.contains("--columns cell_id="),
        "{e}"
    );
}

#[test]
fn export_as_parquet_imports_back_unchanged() {
    use setdino::store::export::export_with;
    use setdino::store::import::{import_crops, ImportOptions};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rows = String::from("plate,well,tile,path\n");
    for (well, name) in TILES {
        rows += &format!(
            "P1,{well},0,{}\n",
            fixture().join(format!("{name}.zarr")).display()
        );
    }
    let map = "gene=gene_symbol_0,sgRNA=sgRNA_0,i=i_0,j=j_0,cell_id=label";
    let s = ingest_with(d, &rows, &fixture().join("cells.parquet"), map, "s");
    let all: Vec<u32> = (0..u32::try_from(s.len()).unwrap()).collect();
    let (npy, meta) = export_with(&s, &all, &d.join("x"), true).unwrap();
    assert_eq!(meta, d.join("x.parquet"));
    let o = ImportOptions {
        channels: Some(s.manifest().channels.clone()),
        ntc_gene: "nontargeting".into(),
        force: false,
        columns: ColumnMap::default(),
    };
    import_crops(&npy, &meta, &d.join("back"), &o).unwrap();
    let t = Store::open(&d.join("back")).unwrap();
    assert_same_store(&s, &t);
}
