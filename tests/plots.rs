//! The figures: a golden image (a fixed PR curve against a committed PNG, within a tolerance that a
//! moved point or a changed label exceeds), a structural check of every figure type (size, ink inside
//! the plot area, the series' colours present, empty data drawn as a note), and `setdino report`
//! redrawing from the TSVs exactly what the library drew.
//!
//! `SETDINO_BLESS=1 cargo test --release --test plots` rewrites the golden PNG after an intended change.
use image::RgbImage;
use plotters::style::RGBColor;
use setdino::plot::{
    self, adjacency, bars, curves, hist, method_colour, pr, render_rgb, scatter, Figure,
};
use std::path::{Path, PathBuf};

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_pr_curve.png")
}

fn pr_rows(shift: f64) -> Vec<pr::PrRow> {
    (1..=20u32)
        .map(|k| {
            let recall = (0.08 * f64::from(k)).min(1.0).powf(0.7);
            let precision = 0.3 / (1.0 + 0.25 * f64::from(k)) + if k == 5 { shift } else { 0.0 };
            pr::PrRow {
                top_percent: k,
                threshold: 0.5 - 0.02 * f64::from(k),
                n_above: 100 * k as usize,
                related_above: (recall * 200.0) as usize,
                precision,
                recall,
                null_pairs: 10_000,
                related_pairs: 200,
            }
        })
        .collect()
}

fn golden_figure(shift: f64, title: &str) -> pr::PrCurve {
    pr::PrCurve {
        title: title.into(),
        rows: pr_rows(shift),
    }
}

/// (mean absolute channel difference in 0…255, fraction of pixels with a channel off by more than 40).
fn diff(a: &RgbImage, b: &RgbImage) -> (f64, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let (mut sum, mut off) = (0u64, 0u64);
    for (p, q) in a.pixels().zip(b.pixels()) {
        let d: Vec<u64> = (0..3).map(|c| u64::from(p[c].abs_diff(q[c]))).collect();
        sum += d.iter().sum::<u64>();
        off += u64::from(d.iter().any(|&x| x > 40));
    }
    let n = u64::from(a.width()) * u64::from(a.height());
    (sum as f64 / (3 * n) as f64, off as f64 / n as f64)
}

/// The tolerance: anti-aliasing or font-hinting drift passes, a moved point or other text does not.
fn within(d: (f64, f64)) -> bool {
    d.0 <= 0.05 && d.1 <= 1e-4
}

#[test]
fn golden_pr_curve_matches_the_committed_png() {
    let got = render_rgb(&golden_figure(0.0, "Golden figure: fixed PR curve")).unwrap();
    let path = golden_path();
    if std::env::var_os("SETDINO_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        got.save(&path).unwrap();
    }
    let want = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SETDINO_BLESS=1 creates it)", path.display()))
        .to_rgb8();
    let d = diff(&got, &want);
    assert!(within(d), "differs from {}: {d:?}", path.display());
    // The comparison can fail: the same figure with one point moved, or another title, is rejected.
    let moved = render_rgb(&golden_figure(0.03, "Golden figure: fixed PR curve")).unwrap();
    let d = diff(&moved, &want);
    assert!(
        !within(d),
        "a moved point passed as the golden image: {d:?}"
    );
    let retitled = render_rgb(&golden_figure(0.0, "Golden figure: fixed PR curvE")).unwrap();
    let d = diff(&retitled, &want);
    assert!(
        !within(d),
        "a changed title passed as the golden image: {d:?}"
    );
}

fn is_close(p: &image::Rgb<u8>, c: RGBColor, tol: u8) -> bool {
    p[0].abs_diff(c.0) <= tol && p[1].abs_diff(c.1) <= tol && p[2].abs_diff(c.2) <= tol
}

/// Renders `fig` and checks its size, that the middle of the picture has ink, and that each colour in
/// `colours` covers at least `min_px` pixels (the series were drawn, in their colours).
fn structural<F: Figure>(
    name: &str,
    fig: &F,
    colours: &[RGBColor],
    min_px: usize,
    tol: u8,
) -> RgbImage {
    let img = render_rgb(fig).unwrap();
    let (w, h) = fig.size();
    assert_eq!(img.dimensions(), (w, h), "{name}: size");
    // The central half of the picture (where every figure's plot area is) holds ink.
    let ink = img
        .enumerate_pixels()
        .filter(|(x, y, _)| *x > w / 4 && *x < 3 * w / 4 && *y > h / 4 && *y < 3 * h / 4)
        .filter(|(_, _, p)| p[0] < 200 || p[1] < 200 || p[2] < 200)
        .count();
    assert!(ink > 200, "{name}: only {ink} ink pixels in the plot area");
    // Not a blot: most of the picture stays background.
    let white = img
        .pixels()
        .filter(|p| p[0] > 245 && p[1] > 245 && p[2] > 245)
        .count();
    assert!(
        white * 2 > (w * h) as usize,
        "{name}: {white} white pixels of {}",
        w * h
    );
    for &c in colours {
        let n = img.pixels().filter(|p| is_close(p, c, tol)).count();
        assert!(
            n >= min_px,
            "{name}: colour {c:?} covers {n} px (< {min_px})"
        );
    }
    img
}

fn hist_fig() -> hist::SimilarityHist {
    let null: Vec<u64> = (0..100)
        .map(|b| {
            let x = (b as f64 - 50.0) / 8.0;
            (2000.0 * (-x * x / 2.0).exp()) as u64
        })
        .collect();
    let rel: Vec<u64> = (0..100)
        .map(|b| {
            let x = (b as f64 - 70.0) / 6.0;
            (40.0 * (-x * x / 2.0).exp()) as u64
        })
        .collect();
    hist::SimilarityHist {
        title: "histogram".into(),
        rows: hist::rows(&null, &rel),
    }
}

fn adjacency_fig() -> adjacency::Adjacency {
    let m = 40;
    let genes: Vec<adjacency::GeneRow> = (0..m)
        .map(|k| adjacency::GeneRow {
            index: k,
            gene: format!("G{k}"),
            complex: format!("complex {}", k / 5),
        })
        .collect();
    let mut r = vec![false; m * m];
    let mut p = vec![false; m * m];
    for i in 0..m {
        for j in 0..m {
            r[i * m + j] = i != j && i / 5 == j / 5;
            p[i * m + j] = i != j && (i / 5 == j / 5 || (i + j) % 17 == 0);
        }
    }
    adjacency::Adjacency::from_matrices("adjacency".into(), genes, &r, &p).unwrap()
}

fn pca_fig() -> scatter::PcaScatter {
    let rows = (0..60)
        .map(|k| {
            let c = k % 6;
            scatter::PcaRow {
                gene: format!("G{k}"),
                complex: if c == 5 {
                    String::new()
                } else {
                    format!("C{c}")
                },
                pc1: c as f64 + 0.05 * (k as f64).sin(),
                pc2: (c as f64 * 1.3).cos() + 0.05 * (k as f64).cos(),
                pc1_explained: 0.4,
                pc2_explained: 0.2,
            }
        })
        .collect();
    scatter::PcaScatter {
        title: "pca".into(),
        rows,
    }
}

const METHODS: [&str; 4] = ["Engineered features", "DINO", "Set-DINO", "Random-init ViT"];

fn bars_fig() -> bars::Comparison {
    let mut rows = Vec::new();
    for (i, m) in METHODS.iter().enumerate() {
        for seed in 0..3u64 {
            for (key, _, _) in bars::METRICS {
                rows.push(bars::ComparisonRow {
                    method: m.to_string(),
                    seed: Some(seed),
                    metric: key.into(),
                    value: 0.1 + 0.05 * i as f64 + 0.01 * seed as f64,
                });
            }
        }
    }
    rows.push(bars::ComparisonRow {
        method: bars::CEILING.into(),
        seed: None,
        metric: "recall_top5".into(),
        value: 0.4,
    });
    bars::Comparison {
        title: "bars".into(),
        rows,
    }
}

fn curves_fig() -> curves::Curves {
    let mut rows = Vec::new();
    for (mi, m) in METHODS[1..3].iter().enumerate() {
        // The two methods' curves apart, so neither hides the other.
        let off = mi as f64;
        for seed in 0..2u64 {
            for step in 0..50u64 {
                let t = step as f64;
                rows.push(curves::CurveRow {
                    method: m.to_string(),
                    seed,
                    step,
                    loss: Some(5.0 - 0.02 * t + 0.1 * seed as f64 - off),
                    teacher_entropy: Some(3.0),
                    entropy_over_lnk: Some(0.5 + 0.005 * t - 0.2 * off),
                    kl: Some(0.5 / (1.0 + t) + 0.3 * off),
                    val_top5_gene: None,
                    val_top5_batch: None,
                    val_recall5: None,
                });
                if step % 10 == 0 {
                    rows.push(curves::CurveRow {
                        method: m.to_string(),
                        seed,
                        step,
                        loss: None,
                        teacher_entropy: None,
                        entropy_over_lnk: None,
                        kl: None,
                        val_top5_gene: Some(0.1),
                        val_top5_batch: Some(0.2),
                        val_recall5: Some(0.1 + 0.002 * t + 0.05 * off),
                    });
                }
            }
        }
    }
    curves::Curves {
        title: "curves".into(),
        rows,
    }
}

#[test]
fn every_figure_type_is_sized_inked_and_coloured() {
    let blue = method_colour("DINO", 0);
    let red = method_colour("Set-DINO", 0);
    structural(
        "pr",
        &golden_figure(0.0, "pr"),
        &[plot::PALETTE[0]],
        100,
        12,
    );
    structural(
        "hist",
        &hist_fig(),
        &[hist::RELATED_COLOUR, hist::NULL_COLOUR],
        100,
        12,
    );
    structural(
        "adjacency",
        &adjacency_fig(),
        &[plot::PALETTE[3], plot::PALETTE[0]],
        500,
        12,
    );
    structural(
        "pca",
        &pca_fig(),
        &[plot::PALETTE[0], plot::PALETTE[1]],
        30,
        12,
    );
    let brown = method_colour("Engineered features", 0);
    let grey = method_colour("Random-init ViT", 0);
    // Bars are drawn at 75 % opacity over white.
    let mix = |c: RGBColor| {
        let f = |v: u8| ((f64::from(v) * 0.75 + 255.0 * 0.25).round()) as u8;
        RGBColor(f(c.0), f(c.1), f(c.2))
    };
    structural(
        "bars",
        &bars_fig(),
        &[mix(blue), mix(red), mix(brown), mix(grey)],
        500,
        12,
    );
    // Anti-aliased 2 px lines: few pixels of the exact colour, so a looser match.
    structural("curves", &curves_fig(), &[red, blue], 100, 40);
}

#[test]
fn figures_without_data_render_a_note_not_an_error() {
    let no_series = |name: &str, img: &RgbImage, c: RGBColor| {
        let n = img.pixels().filter(|p| is_close(p, c, 12)).count();
        assert!(n < 20, "{name}: {n} pixels of series colour without data");
        let ink = img.pixels().filter(|p| p[0] < 128).count();
        assert!(ink > 50, "{name}: no note drawn");
    };
    let img = render_rgb(&pr::PrCurve {
        title: "t".into(),
        rows: Vec::new(),
    })
    .unwrap();
    no_series("pr", &img, plot::PALETTE[0]);
    let img = render_rgb(&bars::Comparison {
        title: "t".into(),
        rows: Vec::new(),
    })
    .unwrap();
    no_series("bars", &img, plot::PALETTE[0]);
    let img = render_rgb(&adjacency::Adjacency {
        title: "t".into(),
        genes: Vec::new(),
        pairs: Vec::new(),
    })
    .unwrap();
    no_series("adjacency", &img, plot::PALETTE[3]);
    let img = render_rgb(&scatter::PcaScatter {
        title: "t".into(),
        rows: Vec::new(),
    })
    .unwrap();
    no_series("pca", &img, plot::PALETTE[0]);
}

#[test]
fn report_redraws_from_the_tsvs_what_the_library_drew() {
    use setdino::util::tsv;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An eval directory's TSVs (titles come from run.json's label) and an experiment's two.
    std::fs::write(d.join("run.json"), r#"{"label": "fixture"}"#).unwrap();
    let [t_pr, t_hist, t_adj, t_pca] = setdino::eval::figures::titles("fixture");
    let mut fig_pr = golden_figure(0.0, &t_pr);
    tsv::write(&d.join("pr_curve.tsv"), &fig_pr.rows).unwrap();
    let mut fig_hist = hist_fig();
    fig_hist.title = t_hist;
    tsv::write(&d.join("similarity_hist.tsv"), &fig_hist.rows).unwrap();
    let mut fig_adj = adjacency_fig();
    fig_adj.title = t_adj;
    tsv::write(&d.join("adjacency_genes.tsv"), &fig_adj.genes).unwrap();
    tsv::write(&d.join("adjacency.tsv"), &fig_adj.pairs).unwrap();
    let mut fig_pca = pca_fig();
    fig_pca.title = t_pca;
    tsv::write(&d.join("pca.tsv"), &fig_pca.rows).unwrap();
    let mut fig_bars = bars_fig();
    fig_bars.title = plot::regen::bars_title();
    tsv::write(&d.join("comparison.tsv"), &fig_bars.rows).unwrap();
    let mut fig_curves = curves_fig();
    fig_curves.title = plot::regen::curves_title();
    tsv::write(&d.join("curves.tsv"), &fig_curves.rows).unwrap();

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_setdino"))
        .args(["report", "--svg"])
        .arg(d)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = String::from_utf8_lossy(&o.stdout);
    for stem in [
        "pr_curve",
        "similarity_hist",
        "adjacency",
        "pca",
        "comparison",
        "curves",
    ] {
        for ext in ["png", "svg"] {
            assert!(
                listed.contains(&format!("{stem}.{ext}")),
                "{stem}.{ext} not written:\n{listed}"
            );
        }
        let svg = std::fs::read_to_string(d.join(format!("{stem}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<text"),
            "{stem}.svg"
        );
    }
    // Pixel-identical to drawing the same data in process: nothing was recomputed or lost in the TSVs.
    let same = |stem: &str, img: RgbImage| {
        let back = image::open(d.join(format!("{stem}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(diff(&img, &back), (0.0, 0.0), "{stem}");
    };
    same("pr_curve", render_rgb(&fig_pr).unwrap());
    same("similarity_hist", render_rgb(&fig_hist).unwrap());
    same("adjacency", render_rgb(&fig_adj).unwrap());
    same("pca", render_rgb(&fig_pca).unwrap());
    same("comparison", render_rgb(&fig_bars).unwrap());
    same("curves", render_rgb(&fig_curves).unwrap());
    // Editing a TSV changes the figure.
    fig_pr.rows[4].precision += 0.05;
    tsv::write(&d.join("pr_curve.tsv"), &fig_pr.rows).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_setdino"))
        .arg("report")
        .arg(d)
        .output()
        .unwrap();
    assert!(o.status.success());
    same("pr_curve", render_rgb(&fig_pr).unwrap());
    // A bad value names the file and the line.
    std::fs::write(
        d.join("pca.tsv"),
        "gene\tcomplex\tpc1\tpc2\tpc1_explained\tpc2_explained\nA\tC\t0.1\tx\t0.5\t0.2\n",
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_setdino"))
        .arg("report")
        .arg(d)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("pca.tsv") && e.contains("line 2"), "{e}");
}

#[test]
fn report_on_a_directory_without_figure_data_says_what_it_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_setdino"))
        .arg("report")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("no figure data") && e.contains("pr_curve.tsv"),
        "{e}"
    );
}
