//! `setdino gallery` and eval's galleries on small hand-made stores: the documented sheet size and grid
//! layout, the composite and grey colour mapping pixel by pixel, byte-identical reruns, well groups,
//! k-means clusters, the errors for unknown genes and mismatched features, and eval's "Galleries" section.
use clap::Parser;
use setdino::cli::{run, Cli};
use setdino::gallery::render::{scale_bar_px, Mode, Style, FOOTER, GAP, HEADER, MARGIN};
use setdino::store::{CellMeta, Store, StoreWriter, WriterOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Crop side of the test stores.
const S: usize = 8;

/// A store with channels (dna, actin), S×S crops; cell k has `cells[k]` = (plate, well, gene) and
/// pixel (ch, i, j) = `px(k, ch, i, j)`.
fn make_store(
    dir: &Path,
    cells: &[(String, String, String)],
    px: impl Fn(usize, usize, usize, usize) -> u16,
) {
    let mut o = WriterOptions::new(S as u32, vec!["dna".into(), "actin".into()]);
    o.cells_per_shard = 7;
    let mut w = StoreWriter::create(dir, o).unwrap();
    for (k, (plate, well, gene)) in cells.iter().enumerate() {
        let meta = CellMeta {
            plate: plate.clone(),
            well: well.clone(),
            tile: 0,
            cell_id: k as u64,
            i: 10.0,
            j: 10.0,
            gene: gene.clone(),
            sgrna: format!("{gene}_sg0"),
            extra: vec![],
        };
        let mut crop = Vec::with_capacity(2 * S * S);
        for ch in 0..2 {
            for i in 0..S {
                for j in 0..S {
                    crop.push(px(k, ch, i, j));
                }
            }
        }
        w.push(&[meta], &crop).unwrap();
    }
    w.finish(serde_json::json!({"test": true})).unwrap();
}

/// `per` cells of each gene in each of 2 plates × 2 wells, genes `genes` in turn.
fn layout(genes: &[&str], per: usize) -> Vec<(String, String, String)> {
    let mut v = Vec::new();
    for p in 0..2 {
        for w in ["A1", "B2"] {
            for g in genes {
                for _ in 0..per {
                    v.push((format!("P{p}"), w.to_string(), g.to_string()));
                }
            }
        }
    }
    v
}

/// A textured crop: values 0, 30000 or 60000 depending on (k, ch, i, j).
fn texture(k: usize, ch: usize, i: usize, j: usize) -> u16 {
    match (k * 3 + ch * 5 + i * 7 + j * 11) % 5 {
        0 | 1 => 0,
        2 => 30000,
        _ => 60000,
    }
}

fn gallery(args: &[&str]) -> anyhow::Result<()> {
    let mut v = vec!["setdino", "gallery"];
    v.extend_from_slice(args);
    run(Cli::try_parse_from(v)?)
}

/// `gallery --by cluster --features STEM --clusters K` on store `st`, into `out`.
fn cluster(st: &Path, stem: &Path, k: usize, out: &Path) -> anyhow::Result<()> {
    let k = k.to_string();
    gallery(&[
        "--store",
        &s(st),
        "--by",
        "cluster",
        "--features",
        &s(stem),
        "--clusters",
        &k,
        "--out",
        &s(out),
    ])
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// gallery.tsv as rows of column → value.
fn read_tsv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
    lines
        .map(|l| {
            head.iter()
                .zip(l.split('\t'))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn png(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

#[test]
fn sheet_size_follows_the_documented_grid_layout() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s");
    make_store(&st, &layout(&["g0", "g1"], 3), texture); // 12 cells of g0, 12 of g1
    let out = dir.path().join("g");
    let store = Store::open(&st).unwrap();
    // Composite: 12 cells at zoom 16 → tile 128; --cols 3 → 3 × 4 grid.
    gallery(&[
        "--store",
        &s(&st),
        "--genes",
        "g0",
        "--zoom",
        "16",
        "--cols",
        "3",
        "--out",
        &s(&out),
    ])
    .unwrap();
    let img = png(&out.join("gene-g0.png"));
    let tile = (S * 16) as u32;
    assert_eq!(img.width(), MARGIN + 3 * tile + 2 * GAP + MARGIN);
    assert_eq!(img.height(), HEADER + 4 * tile + 3 * GAP + FOOTER);
    // Automatic columns: ⌈√12⌉ = 4 → 4 × 3.
    gallery(&[
        "--store",
        &s(&st),
        "--genes",
        "g0",
        "--zoom",
        "16",
        "--out",
        &s(&out),
    ])
    .unwrap();
    let img = png(&out.join("gene-g0.png"));
    assert_eq!(img.width(), MARGIN + 4 * tile + 3 * GAP + MARGIN);
    assert_eq!(img.height(), HEADER + 3 * tile + 2 * GAP + FOOTER);
    // Channels: 2 tiles per cell → cols = ⌈√24⌉ = 5, rows 3, blocks of 2 tiles, gaps of 3·GAP, and the
    // channel-name column on the left.
    gallery(&[
        "--store",
        &s(&st),
        "--genes",
        "g0",
        "--zoom",
        "16",
        "--mode",
        "channels",
        "--out",
        &s(&out),
    ])
    .unwrap();
    let img = png(&out.join("gene-g0.png"));
    let block = 2 * tile + GAP;
    let labels = Style::new(&store, Mode::Channels, Some(16))
        .unwrap()
        .label_column();
    assert!(labels > 3 * GAP, "the column holds the names");
    assert_eq!(
        img.width(),
        MARGIN + labels + 5 * tile + 4 * 3 * GAP + MARGIN
    );
    assert_eq!(img.height(), HEADER + 3 * block + 2 * 3 * GAP + FOOTER);
    // A sheet narrower than its title grows to fit it, the grid keeping its place.
    gallery(&[
        "--store",
        &s(&st),
        "--genes",
        "g0",
        "--n",
        "1",
        "--zoom",
        "1",
        "--out",
        &s(&out),
    ])
    .unwrap();
    let img = png(&out.join("gene-g0.png"));
    assert!(img.width() > MARGIN + S as u32 + MARGIN);
    assert_eq!(img.height(), HEADER + S as u32 + FOOTER);
}

#[test]
fn crop_pixels_appear_at_their_grid_position_in_the_documented_colours() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s");
    let cells = layout(&["g0", "g1"], 1);
    make_store(&st, &cells, texture);
    let out = dir.path().join("g");
    let zoom = 3usize;
    gallery(&[
        "--store",
        &s(&st),
        "--genes",
        "g0",
        "--zoom",
        "3",
        "--cols",
        "3",
        "--out",
        &s(&out),
    ])
    .unwrap();
    let img = png(&out.join("gene-g0.png"));
    let rows = read_tsv(&out.join("gallery.tsv"));
    assert_eq!(rows.len(), 4);
    // Over the shown crops 0 and 60000 are far more than 0.5 % of the pixels of each channel, so the
    // stretch is [0, 60000]: dna (blue) and actin (green, the first non-DNA colour) add up.
    let level = |v: u16| (255.0 * f32::from(v) / 60000.0).round() as u8;
    let tile = S * zoom;
    for r in &rows {
        let p: usize = r["position"].parse().unwrap();
        let k: usize = r["cell"].parse().unwrap();
        assert_eq!(cells[k].2, "g0");
        let (x0, y0) = (
            MARGIN as usize + (p % 3) * (tile + GAP as usize),
            HEADER as usize + (p / 3) * (tile + GAP as usize),
        );
        for i in 0..S {
            for j in 0..S {
                let want = [0, level(texture(k, 1, i, j)), level(texture(k, 0, i, j))];
                for (dy, dx) in [(0, 0), (zoom - 1, zoom - 1), (1, 2)] {
                    let got = img
                        .get_pixel((x0 + j * zoom + dx) as u32, (y0 + i * zoom + dy) as u32)
                        .0;
                    assert_eq!(got, want, "cell {k} at position {p}, crop pixel ({i}, {j})");
                }
            }
        }
    }
    // The mid value 30000 is half way: 127.5 rounds to 128.
    assert_eq!(level(30000), 128);
    // Channels mode: grey levels, dna tile above the actin tile.
    gallery(&[
        "--store",
        &s(&st),
        "--genes",
        "g0",
        "--zoom",
        "3",
        "--cols",
        "1",
        "--mode",
        "channels",
        "--out",
        &s(&out),
    ])
    .unwrap();
    let img = png(&out.join("gene-g0.png"));
    let rows = read_tsv(&out.join("gallery.tsv"));
    let store = Store::open(&st).unwrap();
    let x0 = (MARGIN
        + Style::new(&store, Mode::Channels, Some(3))
            .unwrap()
            .label_column()) as usize;
    for r in &rows {
        let p: usize = r["position"].parse().unwrap();
        let k: usize = r["cell"].parse().unwrap();
        let y0 = HEADER as usize + p * (2 * tile + GAP as usize + 3 * GAP as usize);
        for (ch, dy) in [(0, 0), (1, tile + GAP as usize)] {
            for (i, j) in [(0, 0), (3, 5), (7, 7)] {
                let g = level(texture(k, ch, i, j));
                let got = img
                    .get_pixel((x0 + j * zoom) as u32, (y0 + dy + i * zoom) as u32)
                    .0;
                assert_eq!(got, [g, g, g], "cell {k} channel {ch} pixel ({i}, {j})");
            }
        }
    }
}

#[test]
fn same_command_gives_identical_bytes_and_the_seed_changes_the_choice() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s");
    make_store(&st, &layout(&["g0", "g1", "nontargeting"], 6), texture);
    let run_into = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut a = vec![
            "--store".to_string(),
            s(&st),
            "--by".into(),
            "well".into(),
            "--n".into(),
            "5".into(),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        a.extend(["--out".to_string(), s(&out)]);
        gallery(&a.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(&out).unwrap() {
            let e = e.unwrap();
            files.insert(
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            );
        }
        files
    };
    let a = run_into("a", &[]);
    let b = run_into("b", &[]);
    assert_eq!(
        a.len(),
        4 + 2,
        "4 wells, gallery.tsv, index.md: {:?}",
        a.keys()
    );
    assert_eq!(a, b);
    let c = run_into("c", &["--seed", "7"]);
    assert_ne!(
        a["gallery.tsv"], c["gallery.tsv"],
        "18 cells per well, 5 shown: another seed picks others"
    );
    // Default genes: the first 7 by name (here g0, g1) plus the NTC gene.
    let out = dir.path().join("d");
    gallery(&["--store", &s(&st), "--out", &s(&out)]).unwrap();
    let groups: BTreeSet<String> = read_tsv(&out.join("gallery.tsv"))
        .into_iter()
        .map(|r| r["group"].clone())
        .collect();
    assert_eq!(
        groups,
        ["g0", "g1", "nontargeting"]
            .iter()
            .map(|x| x.to_string())
            .collect()
    );
}

#[test]
fn well_groups_hold_only_that_wells_cells() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s");
    make_store(&st, &layout(&["g0", "g1", "nontargeting"], 3), texture);
    let out = dir.path().join("g");
    gallery(&[
        "--store",
        &s(&st),
        "--by",
        "well",
        "--n",
        "4",
        "--out",
        &s(&out),
    ])
    .unwrap();
    let store = Store::open(&st).unwrap();
    let m = store.manifest();
    let rows = read_tsv(&out.join("gallery.tsv"));
    let mut per: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in &rows {
        let k: usize = r["cell"].parse().unwrap();
        let rec = store.record(k);
        // The store's own record, not the TSV's columns, decides the well.
        assert_eq!(m.batch_name(rec.batch), r["group"], "cell {k}");
        assert_eq!(format!("{}_{}", r["plate"], r["well"]), r["group"]);
        assert_eq!(r["image"], format!("well-{}.png", r["group"]));
        per.entry(r["group"].clone()).or_default().push(k);
    }
    assert_eq!(per.len(), 4);
    for (g, cells) in &per {
        assert_eq!(cells.len(), 4, "{g}: 9 cells, 4 shown");
        let set: BTreeSet<_> = cells.iter().collect();
        assert_eq!(set.len(), 4, "{g}: distinct cells");
        assert!(out.join(format!("well-{g}.png")).exists());
    }
    let index = std::fs::read_to_string(out.join("index.md")).unwrap();
    assert!(
        index.contains("(well-P0_A1.png)") && index.contains("| well P1_B2 | 9 | 4 |"),
        "{index}"
    );
}

#[test]
fn unknown_gene_is_an_error_naming_it_and_known_genes() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s");
    make_store(&st, &layout(&["ACTB", "TUBB"], 1), texture);
    let out = dir.path().join("g");
    let e = gallery(&[
        "--store",
        &s(&st),
        "--genes",
        "ACTB,NOPE",
        "--out",
        &s(&out),
    ])
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("\"NOPE\"") && msg.contains("ACTB") && msg.contains("TUBB"),
        "{msg}"
    );
    let e = gallery(&["--store", &s(&st), "--genes", "actb", "--out", &s(&out)]).unwrap_err();
    assert!(format!("{e:#}").contains("did you mean ACTB"), "{e:#}");
    assert!(
        !out.join("gallery.tsv").exists(),
        "nothing written on an error"
    );
    let e = gallery(&["--store", &s(&st), "--by", "cluster", "--out", &s(&out)]).unwrap_err();
    assert!(format!("{e:#}").contains("--features"), "{e:#}");
}

/// Features STEM.npy + STEM.tsv: row r describes store cell `cells[r]` with feature vector `x[r]`.
fn write_features(stem: &Path, store: &Path, cells: &[u32], x: &[Vec<f32>]) {
    let st = Store::open(store).unwrap();
    let m = st.manifest();
    let d = x[0].len();
    let flat: Vec<f32> = x.iter().flatten().copied().collect();
    setdino::eval::io::write_npy_f32(&stem.with_extension("npy"), &flat, x.len(), d).unwrap();
    let mut t = String::from("cell\tplate\twell\ttile\tgene\tsgRNA\tis_ntc\n");
    for &k in cells {
        let r = st.record(k as usize);
        t += &format!(
            "{k}\t{}\t{}\t0\t{}\t{}\t{}\n",
            m.plates[r.plate as usize],
            m.wells[r.well as usize],
            m.genes[r.gene as usize],
            m.sgrnas[r.sgrna as usize],
            if r.is_ntc() { "True" } else { "False" }
        );
    }
    std::fs::write(stem.with_extension("tsv"), t).unwrap();
}

#[test]
fn clusters_of_obviously_separate_features_become_separate_galleries() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s");
    make_store(&st, &layout(&["g0", "g1", "g2"], 2), texture); // 24 cells
                                                               // Rows in a shuffled cell order; cells with (k * 7) % 24 < 12 sit near +10, the others near −10.
    let cells: Vec<u32> = (0..24u32).map(|r| (r * 5) % 24).collect();
    let side = |k: u32| (k * 7) % 24 < 12;
    let x: Vec<Vec<f32>> = cells
        .iter()
        .map(|&k| {
            let c = if side(k) { 10.0 } else { -10.0 };
            vec![
                c + 0.01 * (k % 5) as f32,
                c - 0.02 * (k % 3) as f32,
                c,
                0.3 * (k % 3) as f32,
                1.0,
            ]
        })
        .collect();
    let stem = dir.path().join("feat");
    write_features(&stem, &st, &cells, &x);
    let out = dir.path().join("g");
    cluster(&st, &stem, 2, &out).unwrap();
    let rows = read_tsv(&out.join("gallery.tsv"));
    let mut per: BTreeMap<String, BTreeSet<bool>> = BTreeMap::new();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let k: u32 = r["cell"].parse().unwrap();
        per.entry(r["group"].clone()).or_default().insert(side(k));
        *count.entry(r["group"].clone()).or_default() += 1;
    }
    assert_eq!(per.len(), 2, "{per:?}");
    assert!(
        per.values().all(|v| v.len() == 1),
        "each cluster holds one side only: {per:?}"
    );
    let sides: BTreeSet<bool> = per.values().flatten().copied().collect();
    assert_eq!(sides.len(), 2, "the two clusters are the two sides");
    assert!(count.values().all(|&c| c == 12), "{count:?}");
    // Deterministic: the same clustering twice.
    let out2 = dir.path().join("g2");
    cluster(&st, &stem, 2, &out2).unwrap();
    assert_eq!(
        std::fs::read(out.join("cluster-1.png")).unwrap(),
        std::fs::read(out2.join("cluster-1.png")).unwrap()
    );
    // The same features as setdino's Parquet and AnnData outputs give the same galleries.
    use setdino::formats::{frame::Frame, frame::Values, write_matrix, Format};
    let s_ = Store::open(&st).unwrap();
    let m = s_.manifest();
    let mut fr = Frame::default();
    fr.push(
        "cell",
        Values::I64(cells.iter().map(|&k| i64::from(k)).collect()),
    );
    let name = |v: &[String], id: u32| v[id as usize].clone();
    let recs: Vec<_> = cells.iter().map(|&k| s_.record(k as usize)).collect();
    fr.push(
        "plate",
        Values::Str(recs.iter().map(|r| name(&m.plates, r.plate)).collect()),
    );
    fr.push(
        "gene",
        Values::Str(recs.iter().map(|r| name(&m.genes, r.gene)).collect()),
    );
    let flat: Vec<f32> = x.iter().flatten().copied().collect();
    let names = setdino::formats::numbered("f", x[0].len());
    for (f, ext) in [(Format::Parquet, "parquet"), (Format::Anndata, "zarr")] {
        let other = dir.path().join("other");
        write_matrix(&other, f, fr.clone(), &names, serde_json::json!({}), &flat).unwrap();
        let o = dir.path().join(format!("g_{ext}"));
        cluster(&st, &other.with_extension(ext), 2, &o).unwrap();
        assert_eq!(
            std::fs::read(out.join("gallery.tsv")).unwrap(),
            std::fs::read(o.join("gallery.tsv")).unwrap(),
            "{ext}"
        );
    }
}

#[test]
fn features_that_do_not_match_the_store_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s");
    make_store(&st, &layout(&["g0", "g1"], 1), texture); // 8 cells
    let out = dir.path().join("g");
    let stem = dir.path().join("feat");
    let x = vec![vec![1.0f32, 2.0]; 8];
    let try_cluster = || cluster(&st, &stem, 2, &out).map_err(|e| format!("{e:#}"));
    // A cell index beyond the store.
    write_features(&stem, &st, &(0..8).collect::<Vec<_>>(), &x);
    let t = std::fs::read_to_string(stem.with_extension("tsv")).unwrap();
    std::fs::write(stem.with_extension("tsv"), t.replacen("\n7\t", "\n70\t", 1)).unwrap();
    let e = try_cluster().unwrap_err();
    assert!(e.contains("cell 70") && e.contains("8 cells"), "{e}");
    // A gene that is not the store's gene of that cell.
    write_features(&stem, &st, &(0..8).collect::<Vec<_>>(), &x);
    let t = std::fs::read_to_string(stem.with_extension("tsv")).unwrap();
    std::fs::write(
        stem.with_extension("tsv"),
        t.replacen("\tg0\t", "\tg1\t", 1),
    )
    .unwrap();
    let e = try_cluster().unwrap_err();
    assert!(e.contains("do not match the store"), "{e}");
    // More table rows than matrix rows.
    write_features(&stem, &st, &(0..8).collect::<Vec<_>>(), &x[..6]);
    let e = try_cluster().unwrap_err();
    assert!(e.contains("6 rows") && e.contains("8 cells"), "{e}");
    // More clusters than cells.
    write_features(&stem, &st, &(0..8).collect::<Vec<_>>(), &x);
    let e = cluster(&st, &stem, 9, &out).unwrap_err();
    assert!(format!("{e:#}").contains("--clusters 9"), "{e:#}");
}

#[test]
fn eval_with_a_store_adds_galleries_and_without_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s");
    let genes = [
        "G0",
        "G1",
        "G2",
        "G3",
        "G4",
        "G5",
        "G6",
        "G7",
        "nontargeting",
        "nontargeting",
    ];
    make_store(&st, &layout(&genes, 3), texture);
    let n = Store::open(&st).unwrap().len();
    let recs: Vec<String> = {
        let store = Store::open(&st).unwrap();
        (0..n)
            .map(|k| store.manifest().genes[store.record(k).gene as usize].clone())
            .collect()
    };
    // G0 and G1 share a profile (axis 0), every other gene Gg has its own axis g; NTC cells sit at 0;
    // a little per-cell noise. With 8 genes (28 pairs) only the most similar pair is in the top 5 %.
    let x: Vec<Vec<f32>> = (0..n)
        .map(|k| {
            let axis = match recs[k].as_str() {
                "G0" | "G1" => Some(0),
                "nontargeting" => None,
                g => g[1..].parse::<usize>().ok(),
            };
            let e = ((k * 37) % 11) as f32 / 20.0 - 0.25;
            (0..8)
                .map(|j| if Some(j) == axis { 3.0 } else { 0.0 } + e * (j as f32 - 3.5))
                .collect()
        })
        .collect();
    let stem = dir.path().join("feat");
    write_features(&stem, &st, &(0..n as u32).collect::<Vec<_>>(), &x);
    let cx = dir.path().join("cx.tsv");
    std::fs::write(&cx, "c01\tG0 G1\nc23\tG2 G3\n").unwrap();
    let eval = |out: &Path, store: Option<&Path>| {
        let mut a = vec![
            "setdino".to_string(),
            "eval".into(),
            "--features".into(),
            s(&stem),
            "--complexes".into(),
        ];
        a.extend([s(&cx), "--out".into(), s(out), "--quiet".into()]);
        if let Some(p) = store {
            a.extend(["--store".into(), s(p)]);
        }
        run(Cli::try_parse_from(a).unwrap()).unwrap();
        std::fs::read_to_string(out.join("report.md")).unwrap()
    };
    let without = eval(&dir.path().join("e0"), None);
    let sec = &without[without.find("## Galleries").expect("a Galleries section")..];
    assert!(
        sec.contains("--store STORE") && !sec.contains(".png"),
        "{sec}"
    );
    let out = dir.path().join("e1");
    let with = eval(&out, Some(&st));
    let sec = &with[with.find("## Galleries").expect("a Galleries section")..];
    let links: Vec<&str> = sec
        .split("](")
        .skip(1)
        .map(|t| &t[..t.find(')').unwrap()])
        .collect();
    assert!(links.iter().any(|l| l.contains("complex-")), "{sec}");
    assert!(links.iter().any(|l| l.contains("neighbours-G0")), "{sec}");
    for l in &links {
        assert!(out.join(l).exists(), "{l} is linked but missing");
    }
    // A complex of 2 profiled genes: 2 rows of tiles (zoom 8 for 8-px crops).
    let img = png(&out.join(links.iter().find(|l| l.contains("complex-")).unwrap()));
    let tile = (S * setdino::gallery::render::auto_zoom(S) as usize) as u32;
    assert_eq!(img.height(), HEADER + 2 * tile + 2 * GAP + FOOTER);
    assert!(sec.contains("G1 (cosine"), "G0's nearest gene is G1: {sec}");
    assert_eq!(scale_bar_px(S), 2);
}
