//! Engineered features on hand-made crops with known answers (disc, ellipse, L shape, uniform, linear and
//! radial images), the mask rules, determinism across thread counts and chunk sizes, and `setdino features`
//! end to end on a tiny store (shapes, TSV columns, non-finite accounting, filters, atomic output).
use clap::Parser;
use setdino::cli::{run, Cli};
use setdino::features::mask::{convex_hull, otsu_threshold, select_component, shape};
use setdino::features::{
    cell_features, compute_features, dna_channel, feature_specs, help_table, masks, n_features,
    FeatureOptions, Scratch, CHANNEL_FEATURES, SHAPE_FEATURES,
};
use setdino::store::{CellMeta, Store, StoreWriter, WriterOptions};
use std::f64::consts::PI;
use std::path::Path;

/// A C×S×S crop filled by `f(channel, row, col)`.
fn crop(c: usize, s: usize, f: impl Fn(usize, f64, f64) -> f32) -> Vec<f32> {
    let mut v = Vec::with_capacity(c * s * s);
    for ch in 0..c {
        for i in 0..s {
            for j in 0..s {
                v.push(f(ch, i as f64, j as f64));
            }
        }
    }
    v
}

/// Inside the ellipse with semi-axes (a along columns, b along rows) rotated by `theta`, centred at `c0`.
fn in_ellipse(i: f64, j: f64, c0: f64, a: f64, b: f64, theta: f64) -> bool {
    let (y, x) = (i - c0, j - c0);
    let (u, v) = (
        x * theta.cos() + y * theta.sin(),
        -x * theta.sin() + y * theta.cos(),
    );
    (u / a).powi(2) + (v / b).powi(2) <= 1.0
}

fn features_of(crop: &[f32], c: usize, s: usize) -> (Vec<f32>, Vec<String>) {
    let names: Vec<String> = (0..c).map(|k| format!("c{k}")).collect();
    let mut out = vec![0f32; n_features(c)];
    cell_features(&mut out, crop, c, s, 0, &mut Scratch::default());
    let specs = feature_specs(&names);
    (out, specs.into_iter().map(|s| s.name).collect())
}

fn get(v: &[f32], names: &[String], name: &str) -> f32 {
    v[names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no feature {name}"))]
}

#[test]
fn feature_count_names_and_docs_agree() {
    let ch: Vec<String> = ["dna", "damage", "actin", "tubulin"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let specs = feature_specs(&ch);
    assert_eq!(specs.len(), 97);
    assert_eq!(n_features(4), 97);
    assert_eq!(n_features(1), 31);
    let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 97, "feature names are unique");
    // Every feature is documented in the module doc table and in --help.
    let doc = include_str!("../src/features/mod.rs");
    let help = help_table();
    for (n, _, _) in SHAPE_FEATURES.iter().chain(CHANNEL_FEATURES.iter()) {
        let cell = if n.starts_with("radial_") {
            "`radial_0` … `radial_3`".to_string()
        } else {
            format!("| `{n}` |")
        };
        assert!(doc.contains(&cell), "{n} missing from the module doc table");
        assert!(help.contains(n), "{n} missing from --help");
    }
    assert!(doc.contains("`corr_a_b`") && help.contains("corr_<a>_<b>"));
}

#[test]
fn disc_has_known_area_round_shape_and_full_solidity() {
    let (s, r) = (64usize, 12.0f64);
    let c0 = (s as f64 - 1.0) / 2.0;
    // DNA: a disc of radius r; channel 1: a textured cell of radius 20 around it.
    let img = crop(2, s, |ch, i, j| {
        let d2 = (i - c0).powi(2) + (j - c0).powi(2);
        match ch {
            0 if d2 <= r * r => 0.8,
            0 => 0.1,
            _ if d2 <= r * r => 0.3,
            _ if d2 <= 400.0 => 0.5 + 0.01 * ((i + 2.0 * j) % 7.0) as f32,
            _ => 0.05,
        }
    });
    let (f, n) = features_of(&img, 2, s);
    let area = get(&f, &n, "nuc_area") as f64;
    assert!((area / (PI * r * r) - 1.0).abs() < 0.02, "area {area}");
    assert!(get(&f, &n, "nuc_eccentricity") < 0.05);
    assert!(get(&f, &n, "nuc_solidity") > 0.98);
    assert!(get(&f, &n, "nuc_solidity") <= 1.0);
    for ax in ["nuc_major_axis", "nuc_minor_axis"] {
        assert!(
            (get(&f, &n, ax) as f64 / (2.0 * r) - 1.0).abs() < 0.03,
            "{ax}"
        );
    }
    assert!(get(&f, &n, "nuc_centre_offset") < 1e-4);
    assert!((get(&f, &n, "c0_nuc_mean") - 0.8).abs() < 1e-6);
    assert!(get(&f, &n, "c0_nuc_std") < 1e-6);
    assert!((get(&f, &n, "c0_nuc_median") - 0.8).abs() < 1e-6);
    assert!((get(&f, &n, "c0_nuc_integrated") as f64 - 0.8 * area).abs() < 1e-3);
    assert!((get(&f, &n, "c1_nuc_mean") - 0.3).abs() < 1e-6);
    // Crack perimeter of a digital disc ≈ 8r.
    let p = get(&f, &n, "nuc_perimeter") as f64;
    assert!((p / (8.0 * r) - 1.0).abs() < 0.05, "perimeter {p}");
    assert!(get(&f, &n, "c0_mass_displacement") < 1e-3);
    let cell = get(&f, &n, "cell_area") as f64;
    assert!((cell / (PI * 400.0) - 1.0).abs() < 0.02, "cell area {cell}");
    assert!((get(&f, &n, "nuc_cell_area_ratio") as f64 - area / cell).abs() < 1e-6);
    assert!(get(&f, &n, "cell_eccentricity") < 0.05);
    assert!((get(&f, &n, "c0_cyto_mean") - 0.1).abs() < 1e-6);
    assert!(get(&f, &n, "c1_cyto_mean") > 0.5);
    assert!(f.iter().all(|x| x.is_finite()), "{f:?}");
}

#[test]
fn ellipse_eccentricity_and_axes_match() {
    let (s, a, b) = (80usize, 20.0f64, 10.0f64);
    let c0 = (s as f64 - 1.0) / 2.0;
    let want = (1.0 - (b / a).powi(2)).sqrt();
    for theta in [0.0, 0.5, 1.2] {
        let img = crop(1, s, |_, i, j| {
            if in_ellipse(i, j, c0, a, b, theta) {
                1.0
            } else {
                0.0
            }
        });
        let (f, n) = features_of(&img, 1, s);
        let e = get(&f, &n, "nuc_eccentricity") as f64;
        assert!((e - want).abs() < 0.01, "theta {theta}: {e} vs {want}");
        assert!((get(&f, &n, "nuc_major_axis") as f64 / (2.0 * a) - 1.0).abs() < 0.03);
        assert!((get(&f, &n, "nuc_minor_axis") as f64 / (2.0 * b) - 1.0).abs() < 0.04);
        assert!((get(&f, &n, "nuc_area") as f64 / (PI * a * b) - 1.0).abs() < 0.02);
        assert!(get(&f, &n, "nuc_solidity") > 0.97);
    }
}

#[test]
fn l_shape_solidity_is_exact_and_hull_is_ccw() {
    // 10×10 square without its 5×5 bottom-right corner: 75 pixels; the hull of the pixel centres adds the
    // 10 lattice points of the cut-off corner with i + j ≤ 13.
    let s = 16;
    let mut m = vec![false; s * s];
    for i in 0..10 {
        for j in 0..10 {
            m[(i + 3) * s + j + 3] = !(i >= 5 && j >= 5);
        }
    }
    let sh = shape(&m, s);
    assert_eq!(sh.area, 75.0);
    assert!((sh.solidity - 75.0 / 85.0).abs() < 1e-12, "{}", sh.solidity);
    let h = convex_hull(&[(0, 0), (0, 2), (1, 1), (2, 0), (2, 2), (1, 0)]);
    assert_eq!(h, vec![(0, 0), (2, 0), (2, 2), (0, 2)]);
    assert_eq!(convex_hull(&[(0, 0), (1, 1), (2, 2)]), vec![(0, 0), (2, 2)]);
    // A single pixel and a line have solidity 1; an empty mask is undefined.
    let mut one = vec![false; s * s];
    one[5 * s + 5] = true;
    assert_eq!(shape(&one, s).solidity, 1.0);
    let mut line = vec![false; s * s];
    for j in 2..9 {
        line[4 * s + j] = true;
    }
    assert_eq!(shape(&line, s).solidity, 1.0);
    assert_eq!(shape(&line, s).eccentricity, 1.0);
    assert!(shape(&vec![false; s * s], s).solidity.is_nan());
}

#[test]
fn masks_pick_the_central_component_fill_holes_and_otsu_splits_modes() {
    let s = 40;
    let c0 = (s as f64 - 1.0) / 2.0;
    // A ring (with a hole) at the centre, and a bigger blob in a corner.
    let img = crop(1, s, |_, i, j| {
        let d = ((i - c0).powi(2) + (j - c0).powi(2)).sqrt();
        let corner = (i - 4.0).powi(2) + (j - 4.0).powi(2) <= 16.0;
        if (4.0..=8.0).contains(&d) || corner {
            0.9
        } else {
            0.2
        }
    });
    let t = otsu_threshold(&img).unwrap();
    assert!(t > 0.2 && t < 0.9, "{t}");
    assert!(otsu_threshold(&[0.5; 10]).is_none());
    let (nuc, cell) = masks(&img, 1, s, 0, &mut Scratch::default());
    let filled = (0..s * s)
        .filter(|&p| {
            let (i, j) = ((p / s) as f64, (p % s) as f64);
            ((i - c0).powi(2) + (j - c0).powi(2)).sqrt() <= 8.0
        })
        .count();
    assert_eq!(
        nuc.iter().filter(|&&m| m).count(),
        filled,
        "hole filled, corner blob dropped"
    );
    assert!(!nuc[4 * s + 4]);
    assert!(nuc.iter().zip(&cell).all(|(&n, &c)| !n || c), "N ⊆ M");
    // Without a component at the centre, the one nearest to it wins.
    let mut fg = vec![false; s * s];
    fg[2 * s + 2] = true;
    fg[25 * s + 28] = true;
    let (mut out, mut l, mut st) = (vec![false; s * s], Vec::new(), Vec::new());
    select_component(&mut out, &fg, s, None, &mut l, &mut st);
    assert!(out[25 * s + 28] && !out[2 * s + 2]);
}

#[test]
fn uniform_channel_has_zero_contrast_and_undefined_correlation() {
    let s = 32;
    let c0 = (s as f64 - 1.0) / 2.0;
    let img = crop(2, s, |ch, i, j| match ch {
        0 if (i - c0).powi(2) + (j - c0).powi(2) <= 64.0 => 0.7,
        0 => 0.1,
        _ => 0.4,
    });
    let (f, n) = features_of(&img, 2, s);
    assert_eq!(get(&f, &n, "c1_glcm_contrast"), 0.0);
    assert_eq!(get(&f, &n, "c1_glcm_homogeneity"), 1.0);
    assert!(get(&f, &n, "c1_glcm_correlation").is_nan());
    assert!(get(&f, &n, "corr_c0_c1").is_nan());
    assert_eq!(get(&f, &n, "c1_grad_mean"), 0.0);
    assert!((get(&f, &n, "c1_nuc_mean") - 0.4).abs() < 1e-6);
    // A fully constant crop: empty nucleus, cell = whole crop; undefined values are NaN, never garbage.
    let flat = crop(2, s, |_, _, _| 0.5);
    let (f, n) = features_of(&flat, 2, s);
    assert_eq!(get(&f, &n, "nuc_area"), 0.0);
    assert!(get(&f, &n, "c0_nuc_mean").is_nan());
    assert_eq!(get(&f, &n, "cell_area"), (s * s) as f32);
    assert!((get(&f, &n, "c0_radial_0") - 0.5).abs() < 1e-6);
}

#[test]
fn linear_transforms_have_correlation_one() {
    let s = 32;
    let c0 = (s as f64 - 1.0) / 2.0;
    let base = |i: f64, j: f64| {
        let d2 = (i - c0).powi(2) + (j - c0).powi(2);
        (0.8 * (-d2 / 60.0).exp() + 0.01 * ((i * 7.0 + j * 3.0) % 5.0)) as f32
    };
    let img = crop(3, s, |ch, i, j| match ch {
        0 => base(i, j),
        1 => 0.5 * base(i, j) + 0.1,
        _ => 0.9 - 0.7 * base(i, j),
    });
    let (f, n) = features_of(&img, 3, s);
    assert!((get(&f, &n, "corr_c0_c1") - 1.0).abs() < 1e-5);
    assert!((get(&f, &n, "corr_c0_c2") + 1.0).abs() < 1e-5);
    assert!((get(&f, &n, "corr_c1_c2") + 1.0).abs() < 1e-5);
    // Co-occurrence statistics are invariant to increasing affine maps (quantised on M's min–max).
    for t in ["glcm_contrast", "glcm_homogeneity", "glcm_correlation"] {
        let (a, b) = (
            get(&f, &n, &format!("c0_{t}")),
            get(&f, &n, &format!("c1_{t}")),
        );
        assert!((a - b).abs() < 1e-2 * a.abs().max(1.0), "{t}: {a} vs {b}");
    }
}

#[test]
fn radial_profile_of_a_radially_increasing_image_increases() {
    let s = 48;
    let c0 = (s as f64 - 1.0) / 2.0;
    let img = crop(2, s, |ch, i, j| {
        let d = ((i - c0).powi(2) + (j - c0).powi(2)).sqrt();
        match ch {
            0 if d <= 6.0 => 0.9,
            0 => 0.05,
            _ => (d / s as f64) as f32,
        }
    });
    let (f, n) = features_of(&img, 2, s);
    let r: Vec<f32> = (0..4)
        .map(|k| get(&f, &n, &format!("c1_radial_{k}")))
        .collect();
    assert!(r.windows(2).all(|w| w[0] < w[1]), "{r:?}");
    // The area-weighted mean distance in the ring [a, b) is (2/3)(b³ − a³)/(b² − a²).
    for (k, v) in r.iter().enumerate() {
        let (a, b) = (k as f64 * s as f64 / 8.0, (k + 1) as f64 * s as f64 / 8.0);
        let want = 2.0 / 3.0 * (b.powi(3) - a.powi(3)) / (b * b - a * a) / s as f64;
        assert!((*v as f64 - want).abs() < 0.01, "ring {k}: {v} vs {want}");
    }
}

#[test]
fn dna_channel_rules() {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(dna_channel(&v(&["actin", "DNA"]), None).unwrap(), 1);
    assert_eq!(dna_channel(&v(&["a", "b", "DAPI"]), None).unwrap(), 2);
    assert_eq!(dna_channel(&v(&["dna", "dna_damage"]), None).unwrap(), 0);
    assert_eq!(
        dna_channel(&v(&["x", "nuclei_dapi_stain"]), None).unwrap(),
        1
    );
    assert_eq!(dna_channel(&v(&["x", "y"]), None).unwrap(), 0);
    let e = dna_channel(&v(&["DNA", "dna"]), None).unwrap_err();
    assert!(e.to_string().contains("--dna-channel"), "{e}");
    assert!(dna_channel(&v(&["dna_a", "dapi_b"]), None).is_err());
    assert_eq!(
        dna_channel(&v(&["x", "Hoechst"]), Some("hoechst")).unwrap(),
        1
    );
    assert_eq!(dna_channel(&v(&["DNA", "dna"]), Some("dna")).unwrap(), 1);
    let e = dna_channel(&v(&["x", "y"]), Some("dna")).unwrap_err();
    assert!(e.to_string().contains("HINT"), "{e}");
}

/// A tiny store: S = 24, channels (actin, DAPI), 2 plates × 2 wells, genes g0, g1 and NTC; cell k has a
/// nucleus of radius 3 + k % 5 at a small offset; cell 5 is a constant crop.
fn tiny_store(dir: &Path, n: usize) -> Store {
    let s = 24usize;
    let mut o = WriterOptions::new(s as u32, vec!["actin".into(), "DAPI".into()]);
    o.cells_per_shard = 7;
    let mut w = StoreWriter::create(dir, o).unwrap();
    for k in 0..n {
        let g = k % 3;
        let gene = if g == 2 {
            "nontargeting".to_string()
        } else {
            format!("g{g}")
        };
        let meta = CellMeta {
            plate: format!("P{}", k % 2),
            well: format!("W{}", (k / 2) % 2),
            tile: (k % 4) as u32,
            cell_id: k as u64,
            i: k as f32,
            j: 1.5,
            sgrna: format!("{gene}_sg{}", k % 2),
            gene,
            extra: vec![],
        };
        let r = 3.0 + (k % 5) as f64;
        let (ci, cj) = (11.5 + (k % 3) as f64 - 1.0, 11.5 + (k % 2) as f64);
        let px: Vec<u16> = crop(2, s, |ch, i, j| {
            if k == 5 {
                return 0.3;
            }
            let d = ((i - ci).powi(2) + (j - cj).powi(2)).sqrt();
            let noise = (((i as usize * 31 + j as usize * 17 + k * 7) % 11) as f64) / 200.0;
            let v = match ch {
                1 if d <= r => 0.8,
                1 => 0.05,
                _ if d <= r + 5.0 => 0.4 + 0.02 * d,
                _ => 0.02,
            };
            (v + noise) as f32
        })
        .into_iter()
        .map(|x| (x.clamp(0.0, 1.0) * 65535.0).round() as u16)
        .collect();
        w.push(&[meta], &px).unwrap();
    }
    w.finish(serde_json::json!({"test": true})).unwrap();
    Store::open(dir).unwrap()
}

fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let h = setdino::store::npy::parse_header(&bytes, path).unwrap();
    let v = bytes[h.data_offset..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (h.shape, v)
}

#[test]
fn deterministic_across_thread_counts_and_chunk_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let store = tiny_store(&dir.path().join("s"), 23);
    let cells: Vec<u32> = (0..23).collect();
    let mut outs = Vec::new();
    for (threads, chunk) in [(1, 4096), (2, 3), (3, 1)] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let stem = dir.path().join(format!("f{threads}"));
        let opts = FeatureOptions {
            chunk,
            ..FeatureOptions::default()
        };
        let r = pool
            .install(|| compute_features(&store, &cells, &stem, &opts))
            .unwrap();
        assert_eq!(r.dna_channel, "DAPI");
        outs.push(std::fs::read(&r.paths[0]).unwrap());
    }
    assert!(outs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn cli_end_to_end_on_a_tiny_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = tiny_store(&d.join("s"), 23);
    let stem = d.join("out/feat");
    let cli = |extra: &[&str]| {
        let mut v = vec![
            "setdino".to_string(),
            "features".into(),
            "--store".into(),
            d.join("s").display().to_string(),
            "--out".into(),
            stem.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        run(Cli::try_parse_from(v).unwrap())
    };
    cli(&[]).unwrap();
    let f = 11 + 20 * 2 + 1;
    let (shape, vals) = read_npy(&d.join("out/feat.npy"));
    assert_eq!(shape, vec![23, f]);
    assert!(vals.iter().all(|x| x.is_finite()));
    let tsv = std::fs::read_to_string(d.join("out/feat.tsv")).unwrap();
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines.len(), 24);
    let header: Vec<&str> = lines[0].split('\t').collect();
    for col in [
        "cell", "plate", "well", "batch", "tile", "cell_id", "gene", "sgRNA", "is_ntc",
    ] {
        assert!(header.contains(&col), "missing column {col}: {header:?}");
    }
    let row2: Vec<&str> = lines[3].split('\t').collect();
    assert_eq!(&row2[..4], &["2", "P0", "W1", "P0_W1"]);
    assert_eq!(
        row2[header.iter().position(|&h| h == "is_ntc").unwrap()],
        "True"
    );
    // The feature list: one line per column, with the non-finite count of the constant crop (cell 5).
    let ft = std::fs::read_to_string(d.join("out/feat.features.tsv")).unwrap();
    let ft: Vec<Vec<&str>> = ft.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(ft.len(), f + 1);
    assert_eq!(
        ft[0],
        vec!["index", "name", "unit", "nonfinite_replaced", "description"]
    );
    let names: Vec<&str> = ft[1..].iter().map(|r| r[1]).collect();
    assert_eq!(names[11], "actin_nuc_mean");
    assert_eq!(names[f - 1], "corr_actin_DAPI");
    let nonfinite = |name: &str| ft[1 + names.iter().position(|&n| n == name).unwrap()][3];
    assert_eq!(nonfinite("actin_nuc_mean"), "1");
    assert_eq!(nonfinite("nuc_area"), "0");
    // Cell 5's undefined values are 0 in the matrix; its defined ones are kept.
    let row5 = &vals[5 * f..6 * f];
    assert_eq!(
        row5[names.iter().position(|&n| n == "actin_nuc_mean").unwrap()],
        0.0
    );
    assert_eq!(
        row5[names.iter().position(|&n| n == "cell_area").unwrap()],
        576.0
    );
    // Nucleus areas follow the drawn radii (cells 0..4 have r = 3..7).
    for k in 0..5 {
        if k == 5 {
            continue;
        }
        let r = 3.0 + k as f64;
        let a = vals[k * f] as f64;
        assert!((a / (PI * r * r) - 1.0).abs() < 0.25, "cell {k}: area {a}");
    }
    // Filters, an explicit DNA channel, and no temp files left behind.
    cli(&["--plates", "P1", "--wells", "W0", "--dna-channel", "dapi"]).unwrap();
    let (shape, _) = read_npy(&d.join("out/feat.npy"));
    let want = store
        .records()
        .iter()
        .filter(|r| {
            let m = store.manifest();
            m.plates[r.plate as usize] == "P1" && m.wells[r.well as usize] == "W0"
        })
        .count();
    assert_eq!(shape, vec![want, f]);
    let left: Vec<String> = std::fs::read_dir(d.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(cli(&["--dna-channel", "tubulin"]).is_err());
    assert!(cli(&["--plates", "nope"]).is_err());
}
