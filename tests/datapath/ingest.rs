//! Ingest: crops equal an independent recomputation of the rules (numpy-style percentiles by sorting,
//! flat-field by division, crop box from ⌊i⌋, ⌊j⌋), for `--illum none` (exact) and a given field (DIR);
//! `auto` removes most of a known vignetting; bad input names the file and the line or page.
use setdino::ingest::tiff::{write_f32, write_u16, write_u8, TiffCompression};
use setdino::ingest::{ingest, Illum, IngestOptions};
use setdino::store::Store;
use std::fmt::Write as _;
use std::path::Path;

const H: usize = 40;
const W: usize = 48;
const C: usize = 3;
const CROP: usize = 16;
const CH: [&str; 3] = ["dna", "actin", "tub"];

struct Screen {
    /// (plate, well, tile) in tiles.csv order, with raw planes per channel.
    tiles: Vec<(String, String, u32, Vec<Vec<f32>>)>,
    /// (tile index, cell_id, i, j, gene, sgRNA, area) in cells.csv order.
    cells: Vec<(usize, u64, f64, f64, String, String, String)>,
}

fn lcg(s: &mut u64) -> u64 {
    *s = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *s >> 33
}

/// P0: one multi-page LZW TIFF per tile (u16); P1: one file per channel (u8, u16 Deflate, u16 raw).
fn write_screen(dir: &Path, vignette: bool) -> Screen {
    let mut s = 42u64;
    let mut tiles = Vec::new();
    let mut tcsv_multi = String::from("plate,well,tile,path\n");
    let mut tcsv_per = String::from("plate,well,tile,path_dna,path_actin,path_tub\n");
    for (pi, plate) in ["P0", "P1"].iter().enumerate() {
        for well in ["A1", "B2"] {
            for tile in 0..2u32 {
                let planes: Vec<Vec<f32>> = (0..C)
                    .map(|c| {
                        (0..H * W)
                            .map(|q| {
                                let (y, x) = ((q / W) as f32, (q % W) as f32);
                                let base = 200.0
                                    + 50.0 * c as f32
                                    + 30.0 * ((x * 0.3 + y * 0.2).sin() + 1.0);
                                let v = base + (lcg(&mut s) % 400) as f32;
                                let v = if vignette {
                                    v * (0.6 + 0.8 * x / W as f32)
                                } else {
                                    v
                                };
                                if pi == 1 && c == 0 {
                                    (v / 8.0).floor().min(255.0)
                                } else {
                                    v.floor()
                                }
                            })
                            .collect()
                    })
                    .collect();
                let name = format!("{plate}_{well}_{tile}");
                if pi == 0 {
                    let u: Vec<Vec<u16>> = planes
                        .iter()
                        .map(|p| p.iter().map(|&v| v as u16).collect())
                        .collect();
                    let pages: Vec<&[u16]> = u.iter().map(|v| v.as_slice()).collect();
                    write_u16(
                        &dir.join(format!("{name}.tif")),
                        W,
                        H,
                        &pages,
                        TiffCompression::Lzw,
                    )
                    .unwrap();
                    writeln!(tcsv_multi, "{plate},{well},{tile},{name}.tif").unwrap();
                } else {
                    let p0: Vec<u8> = planes[0].iter().map(|&v| v as u8).collect();
                    write_u8(&dir.join(format!("{name}_dna.tif")), W, H, &[&p0]).unwrap();
                    let p1: Vec<u16> = planes[1].iter().map(|&v| v as u16).collect();
                    write_u16(
                        &dir.join(format!("{name}_actin.tif")),
                        W,
                        H,
                        &[&p1],
                        TiffCompression::Deflate,
                    )
                    .unwrap();
                    let p2: Vec<u16> = planes[2].iter().map(|&v| v as u16).collect();
                    write_u16(
                        &dir.join(format!("{name}_tub.tif")),
                        W,
                        H,
                        &[&p2],
                        TiffCompression::None,
                    )
                    .unwrap();
                    writeln!(
                        tcsv_per,
                        "{plate},{well},{tile},{name}_dna.tif,{name}_actin.tif,{name}_tub.tif"
                    )
                    .unwrap();
                }
                tiles.push((plate.to_string(), well.to_string(), tile, planes));
            }
        }
    }
    // One table per layout: P0's multi-page files, P1's per-channel files.
    std::fs::write(dir.join("tiles_multi.csv"), tcsv_multi).unwrap();
    std::fs::write(dir.join("tiles_per.csv"), tcsv_per).unwrap();
    let mut cells = Vec::new();
    for (t, _) in tiles.iter().enumerate() {
        for k in 0..12u64 {
            let i = (lcg(&mut s) % (H as u64 * 100)) as f64 / 100.0;
            let j = (lcg(&mut s) % (W as u64 * 100)) as f64 / 100.0;
            let gene = ["gA", "gB", "nontargeting"][(k % 3) as usize].to_string();
            cells.push((
                t,
                100 + k,
                i,
                j,
                gene.clone(),
                format!("{gene}_{}", k % 2),
                format!("{}", k * 7),
            ));
        }
    }
    Screen { tiles, cells }
}

fn write_cells(dir: &Path, sc: &Screen, plates: &[&str], name: &str) {
    let mut s = String::from("plate,well,tile,cell_id,i,j,sgRNA,gene,area\n");
    for (t, id, i, j, g, sg, area) in &sc.cells {
        let (p, w, tile, _) = &sc.tiles[*t];
        if plates.contains(&p.as_str()) {
            writeln!(s, "{p},{w},{tile},{id},{i},{j},{sg},{g},{area}").unwrap();
        }
    }
    std::fs::write(dir.join(name), s).unwrap();
}

/// numpy.percentile(x, p), linear interpolation, on sorted values.
fn np_percentile(sorted: &[f64], p: f64) -> f64 {
    let h = (p / 100.0) * (sorted.len() - 1) as f64;
    let k = h.floor() as usize;
    let t = h - k as f64;
    let (a, b) = (sorted[k], sorted[(k + 1).min(sorted.len() - 1)]);
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

/// Expected crops of one plate, in store order; `field` divides each channel (already normalised).
fn expected(sc: &Screen, plate: &str, field: Option<&Vec<Vec<f32>>>) -> Vec<(u64, Vec<u16>)> {
    let tiles: Vec<usize> = (0..sc.tiles.len())
        .filter(|&t| sc.tiles[t].0 == plate)
        .collect();
    let corr = |t: usize, c: usize, q: usize| -> f32 {
        let v = sc.tiles[t].3[c][q];
        field.map_or(v, |f| v / f[c][q])
    };
    let bounds: Vec<(f64, f64)> = (0..C)
        .map(|c| {
            let mut all: Vec<f64> = tiles
                .iter()
                .flat_map(|&t| (0..H * W).map(move |q| (t, q)))
                .map(|(t, q)| corr(t, c, q) as f64)
                .collect();
            all.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (np_percentile(&all, 0.1), np_percentile(&all, 99.9))
        })
        .collect();
    let mut out = Vec::new();
    for &t in &tiles {
        for (ct, id, i, j, ..) in &sc.cells {
            if *ct != t {
                continue;
            }
            let (r0, c0) = (i.floor() as i64 - 8, j.floor() as i64 - 8);
            if r0 < 0 || c0 < 0 || r0 + 16 > H as i64 || c0 + 16 > W as i64 {
                continue;
            }
            let mut crop = Vec::new();
            for (c, &(lo, hi)) in bounds.iter().enumerate() {
                for y in 0..CROP {
                    for x in 0..CROP {
                        let v = corr(t, c, (r0 as usize + y) * W + c0 as usize + x) as f64;
                        crop.push((((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 65535.0).round() as u16);
                    }
                }
            }
            out.push((*id, crop));
        }
    }
    out
}

fn opts(dir: &Path, tiles: &str, cells: &str, out: &str, illum: Illum) -> IngestOptions {
    let mut o = IngestOptions::new(&dir.join(tiles), &dir.join(cells), &dir.join(out));
    o.crop = CROP as u32;
    o.illum = illum;
    o.channels = Some(CH.iter().map(|s| s.to_string()).collect());
    o.cells_per_shard = Some(7);
    o
}

fn compare(store: &Store, want: &[(u64, Vec<u16>)], tol: u16) {
    assert_eq!(store.len(), want.len());
    for (k, (id, crop)) in want.iter().enumerate() {
        assert_eq!(
            store.record(k).cell_id,
            *id,
            "cell order follows tiles.csv then cells.csv"
        );
        let got = store.crop_u16(k).unwrap();
        let worst = got
            .iter()
            .zip(crop)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= tol, "cell {k}: max difference {worst} LSB");
    }
}

#[test]
fn illum_none_is_exact_for_both_layouts_and_bit_depths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sc = write_screen(d, false);
    for (plate, tiles) in [("P0", "tiles_multi.csv"), ("P1", "tiles_per.csv")] {
        let cells = format!("cells_{plate}.csv");
        write_cells(d, &sc, &[plate], &cells);
        let report = ingest(&opts(d, tiles, &cells, plate, Illum::None)).unwrap();
        let store = Store::open(&d.join(plate)).unwrap();
        let want = expected(&sc, plate, None);
        compare(&store, &want, 0);
        assert_eq!(report["cells_in_table"], 48);
        assert_eq!(
            report["cells_written"].as_u64().unwrap() as usize,
            want.len()
        );
        assert_eq!(
            report["skipped"]["box_leaves_tile"].as_u64().unwrap() as usize,
            48 - want.len()
        );
        assert!(report["plates"][0]["channels"][0]["clip_exact"]
            .as_bool()
            .unwrap());
        assert_eq!(store.manifest().meta_columns, vec!["area".to_string()]);
        assert!(
            want.len() > 5 && want.len() < 48,
            "some cells kept, some skipped at the edge"
        );
        setdino::store::verify(&d.join(plate)).unwrap();
        // Streaming (no plate cache) gives the same store.
        let mut o = opts(d, tiles, &cells, &format!("{plate}_stream"), Illum::None);
        o.cache_bytes = 0;
        let r2 = ingest(&o).unwrap();
        assert!(r2["tile_reads"].as_u64().unwrap() > report["tile_reads"].as_u64().unwrap());
        compare(
            &Store::open(&d.join(format!("{plate}_stream"))).unwrap(),
            &want,
            0,
        );
    }
}

#[test]
fn illum_dir_matches_independent_division() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sc = write_screen(d, false);
    write_cells(d, &sc, &["P0"], "cells.csv");
    let fd = d.join("illum");
    std::fs::create_dir(&fd).unwrap();
    let mut fields = Vec::new();
    for (c, ch) in CH.iter().enumerate() {
        // Scale 3: the store must not care (the field is renormalised to mean 1).
        let f: Vec<f32> = (0..H * W)
            .map(|q| 3.0 * (0.7 + 0.6 * (q % W) as f32 / W as f32 + 0.01 * c as f32))
            .collect();
        write_f32(&fd.join(format!("P0_{ch}.tif")), W, H, &[&f]).unwrap();
        let mean = f.iter().map(|&x| x as f64).sum::<f64>() / f.len() as f64;
        fields.push(
            f.iter()
                .map(|&x| (x as f64 / mean) as f32)
                .collect::<Vec<f32>>(),
        );
    }
    let r = ingest(&opts(
        d,
        "tiles_multi.csv",
        "cells.csv",
        "s",
        Illum::Dir(fd),
    ))
    .unwrap();
    assert!(!r["plates"][0]["channels"][1]["clip_exact"]
        .as_bool()
        .unwrap());
    compare(
        &Store::open(&d.join("s")).unwrap(),
        &expected(&sc, "P0", Some(&fields)),
        1,
    );
}

#[test]
fn illum_auto_removes_most_vignetting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sc = write_screen(d, true);
    // Cells at the far left and far right of every tile.
    let mut s = String::from("plate,well,tile,cell_id,i,j,sgRNA,gene\n");
    for (p, w, t, _) in sc.tiles.iter().filter(|t| t.0 == "P0") {
        writeln!(s, "{p},{w},{t},1,20,8,x_1,x\n{p},{w},{t},2,20,40,x_1,x").unwrap();
    }
    std::fs::write(d.join("lr.csv"), s).unwrap();
    let ratio = |illum: Illum, out: &str| -> f64 {
        ingest(&opts(d, "tiles_multi.csv", "lr.csv", out, illum)).unwrap();
        let st = Store::open(&d.join(out)).unwrap();
        let mean = |k: usize| {
            st.crop_u16(k).unwrap()[256..512]
                .iter()
                .map(|&v| v as f64)
                .sum::<f64>()
                / 256.0
        };
        (0..st.len())
            .step_by(2)
            .map(|k| mean(k + 1) / mean(k))
            .sum::<f64>()
            / (st.len() / 2) as f64
    };
    let raw = ratio(Illum::None, "none");
    let auto = ratio(Illum::Auto, "auto");
    assert!(
        raw > 1.5,
        "the right side is brighter without correction ({raw})"
    );
    assert!(
        (auto - 1.0).abs() < 0.35 * (raw - 1.0),
        "auto flat-field removes most of it ({auto} vs {raw})"
    );
}

fn ingest_err(d: &Path, tiles: &str, cells: &str) -> String {
    let e = format!(
        "{:#}",
        ingest(&opts(d, tiles, cells, "bad", Illum::None)).unwrap_err()
    );
    assert!(
        Store::open(&d.join("bad")).is_err(),
        "nothing half-written looks complete"
    );
    e
}

#[test]
fn bad_input_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sc = write_screen(d, false);
    write_cells(d, &sc, &["P0"], "cells.csv");
    std::fs::write(
        d.join("nocol.csv"),
        "plate,well,tile,cell_id,i,sgRNA,gene\nP0,A1,0,1,5,a,b\n",
    )
    .unwrap();
    let e = ingest_err(d, "tiles_multi.csv", "nocol.csv");
    assert!(e.contains("nocol.csv") && e.contains("\"j\""), "{e}");
    std::fs::write(
        d.join("unk.csv"),
        "plate,well,tile,cell_id,i,j,sgRNA,gene\nP0,A1,0,1,20,20,a,b\nP0,A1,9,2,20,20,a,b\n",
    )
    .unwrap();
    let e = ingest_err(d, "tiles_multi.csv", "unk.csv");
    assert!(
        e.contains("unk.csv") && e.contains("line 3") && e.contains("tile 9"),
        "{e}"
    );
    std::fs::write(
        d.join("nan.csv"),
        "plate,well,tile,cell_id,i,j,sgRNA,gene\nP0,A1,0,1,nan,20,a,b\n",
    )
    .unwrap();
    let e = ingest_err(d, "tiles_multi.csv", "nan.csv");
    assert!(
        e.contains("nan.csv") && e.contains("line 2") && e.contains("not finite"),
        "{e}"
    );
    // Wrong size: replace one tile by a smaller one.
    let small = vec![0u16; 10 * 10];
    let base = std::fs::read_to_string(d.join("tiles_multi.csv")).unwrap();
    write_u16(
        &d.join("small.tif"),
        10,
        10,
        &[&small, &small, &small],
        TiffCompression::None,
    )
    .unwrap();
    std::fs::write(
        d.join("t_small.csv"),
        base.replace("P0_B2_1.tif", "small.tif"),
    )
    .unwrap();
    let e = ingest_err(d, "t_small.csv", "cells.csv");
    assert!(e.contains("small.tif") && e.contains("10×10"), "{e}");
    // Wrong page count.
    write_u16(
        &d.join("two.tif"),
        W,
        H,
        &[&vec![0u16; H * W], &vec![0u16; H * W]],
        TiffCompression::None,
    )
    .unwrap();
    std::fs::write(d.join("t_two.csv"), base.replace("P0_A1_1.tif", "two.tif")).unwrap();
    let e = ingest_err(d, "t_two.csv", "cells.csv");
    assert!(
        e.contains("two.tif") && e.contains("2 channel plane(s)") && e.contains("expected 3"),
        "{e}"
    );
    // Unreadable file.
    std::fs::write(d.join("junk.tif"), b"not a tiff at all").unwrap();
    std::fs::write(
        d.join("t_junk.csv"),
        base.replace("P0_A1_0.tif", "junk.tif"),
    )
    .unwrap();
    let e = ingest_err(d, "t_junk.csv", "cells.csv");
    assert!(e.contains("junk.tif"), "{e}");
    std::fs::write(
        d.join("t_missing.csv"),
        base.replace("P0_A1_0.tif", "missing.tif"),
    )
    .unwrap();
    let e = ingest_err(d, "t_missing.csv", "cells.csv");
    assert!(
        e.contains("missing.tif") && e.contains("line 2") && e.contains("does not exist"),
        "{e}"
    );
    // A byte-order mark and spaces in the header are tolerated.
    std::fs::write(
        d.join("t_bom.csv"),
        format!("\u{feff} {}", base.replacen(",", " , ", 1)),
    )
    .unwrap();
    ingest(&opts(d, "t_bom.csv", "cells.csv", "bom", Illum::None)).unwrap();
    // Non-finite float value, in a per-channel layout: names the file and page.
    let mut f = vec![1.0f32; H * W];
    f[3 * W + 5] = f32::NAN;
    write_f32(&d.join("nan.tif"), W, H, &[&f]).unwrap();
    let per = std::fs::read_to_string(d.join("tiles_per.csv"))
        .unwrap()
        .replace("P1_A1_0_tub.tif", "nan.tif");
    std::fs::write(d.join("t_nan.csv"), per).unwrap();
    write_cells(d, &sc, &["P1"], "cells1.csv");
    let e = ingest_err(d, "t_nan.csv", "cells1.csv");
    assert!(
        e.contains("nan.tif") && e.contains("page 0") && e.contains("row 3, column 5"),
        "{e}"
    );
    // Missing tile-table column.
    std::fs::write(d.join("t_nocol.csv"), "plate,well,path\nP0,A1,x.tif\n").unwrap();
    let e = ingest_err(d, "t_nocol.csv", "cells.csv");
    assert!(e.contains("t_nocol.csv") && e.contains("\"tile\""), "{e}");
}

#[test]
fn rgb_tiff_samples_are_channels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (h, w) = (32, 36);
    let px: Vec<u16> = (0..h * w * 3).map(|k| ((k * 37) % 5000) as u16).collect();
    setdino::ingest::tiff::write_rgb16(&d.join("rgb.tif"), w, h, &[&px]).unwrap();
    let pages = setdino::ingest::tiff::read_pages(&d.join("rgb.tif")).unwrap();
    assert_eq!(pages.len(), 3);
    for (s, p) in pages.iter().enumerate() {
        assert!(p.data.is_integer() && (p.h, p.w) == (h, w));
        assert!(
            p.data
                .to_f32()
                .iter()
                .enumerate()
                .all(|(q, &v)| v == px[q * 3 + s] as f32),
            "sample {s} de-interleaved"
        );
    }
    std::fs::write(
        d.join("tiles.csv"),
        "plate,well,tile,path\nP,A1,0,rgb.tif\n",
    )
    .unwrap();
    std::fs::write(
        d.join("cells.csv"),
        "plate,well,tile,cell_id,i,j,sgRNA,gene\nP,A1,0,1,16.5,18,s,g\n",
    )
    .unwrap();
    let mut o = IngestOptions::new(&d.join("tiles.csv"), &d.join("cells.csv"), &d.join("s"));
    o.crop = 16;
    o.illum = Illum::None;
    ingest(&o).unwrap();
    let st = Store::open(&d.join("s")).unwrap();
    assert_eq!(st.manifest().channels, vec!["ch0", "ch1", "ch2"]);
    assert_eq!(st.len(), 1);
}

#[test]
fn tiff_fixtures_written_by_tifffile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cases: [(&str, usize, usize, usize, u32, f32, bool); 4] = [
        ("tiled_u16_deflate.tif", 2, 40, 48, 65536, 1.0, true),
        ("planar_u16.tif", 3, 20, 24, 65536, 1.0, true),
        ("bigtiff_u8.tif", 2, 20, 24, 256, 1.0, true),
        ("imagej_f32.tif", 3, 20, 24, 65536, 7.0, false),
    ];
    for (file, n, h, w, m, div, integer) in cases {
        let pages = setdino::ingest::tiff::read_pages(&dir.join(file)).unwrap();
        assert_eq!(pages.len(), n, "{file}");
        for (p, pg) in pages.iter().enumerate() {
            assert_eq!(
                (pg.h, pg.w, pg.data.is_integer()),
                (h, w, integer),
                "{file}"
            );
            for (q, &v) in pg.data.to_f32().iter().enumerate() {
                let want = ((131 * (q / w) + 17 * (q % w) + 1000 * p) as u32 % m) as f32 / div;
                assert_eq!(v, want, "{file} plane {p} pixel {q}");
            }
        }
    }
}
