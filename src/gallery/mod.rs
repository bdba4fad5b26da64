//! Cell galleries: what a gene, a well or a cluster of cells looks like, as PNG sheets of crops from the
//! store, with `gallery.tsv` (which cell is where) and `index.md` (the images).
//!
//! Stages of `setdino gallery` ([`run`]): open the store → form the groups ([`groups`]: by gene or well,
//! a seeded sample of n cells each; [`kmeans`]: by cluster of per-cell features, the n cells nearest
//! each centroid) → fit the contrast stretch ([`render`]: per channel percentiles, over all shown cells
//! or per group) → draw one sheet per group ([`render`], text by [`canvas`]) → write the PNGs,
//! `gallery.tsv` and `index.md`. [`report`] makes the "Galleries" section of `setdino eval --store`.
//!
//! Key decision: a gallery is a pure function of (store, options): the cells are chosen by keyed random
//! streams or by distance, the stretch by exact histograms, and the PNG encoder is deterministic, so the
//! same command writes byte-identical files (checked in `tests/gallery.rs`).
pub mod canvas;
pub mod groups;
pub mod kmeans;
pub mod render;
pub mod report;

use anyhow::{ensure, Context, Result};
use groups::Group;
use render::{Mode, Stretch, Style};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How cells are grouped into galleries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    Gene,
    Well,
    Cluster,
}

impl std::str::FromStr for By {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<By> {
        match s {
            "gene" => Ok(By::Gene),
            "well" => Ok(By::Well),
            "cluster" => Ok(By::Cluster),
            _ => anyhow::bail!("unknown --by `{s}`; HINT: gene, well or cluster"),
        }
    }
}

/// Where the contrast stretch is fitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contrast {
    /// One stretch over every cell shown in the run (groups comparable).
    Shared,
    /// One stretch per group (each sheet uses its full range).
    Group,
}

impl std::str::FromStr for Contrast {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Contrast> {
        match s {
            "shared" => Ok(Contrast::Shared),
            "group" => Ok(Contrast::Group),
            _ => anyhow::bail!("unknown --contrast `{s}`; HINT: shared or group"),
        }
    }
}

/// Everything `setdino gallery` takes.
#[derive(Clone, Debug)]
pub struct GalleryOptions {
    pub store: PathBuf,
    /// Per-cell features stem (needed by `By::Cluster`).
    pub features: Option<PathBuf>,
    pub by: By,
    /// Genes for `By::Gene` (default [`groups::default_genes`]).
    pub genes: Option<Vec<String>>,
    /// Cells shown per group.
    pub n: usize,
    pub out: PathBuf,
    pub mode: Mode,
    pub contrast: Contrast,
    /// k of `By::Cluster`.
    pub clusters: usize,
    pub seed: u64,
    /// Enlargement of each crop pixel (default [`render::auto_zoom`]).
    pub zoom: Option<u32>,
    /// Grid columns (default ⌈√(n·tiles per cell)⌉).
    pub cols: Option<u32>,
}

/// One written sheet.
#[derive(Clone, Debug)]
pub struct Sheet {
    pub group: Group,
    /// File name inside the output directory.
    pub file: String,
}

/// What a run wrote.
#[derive(Clone, Debug)]
pub struct Summary {
    pub sheets: Vec<Sheet>,
    pub tsv: PathBuf,
    pub index: PathBuf,
}

/// Largest allowed `--n`, `--zoom` and `--clusters` (a sheet stays a sensible image, a run a sensible
/// number of files).
pub const MAX_N: usize = 1024;
pub const MAX_ZOOM: u32 = 16;
pub const MAX_CLUSTERS: usize = 256;
/// Most crop pixels (tiles × tile area) on one sheet: 64 M, about 200 MB as RGB.
pub const MAX_SHEET_PIXELS: u64 = 1 << 26;

/// Refuses sheets too large to hold in memory (`--n` × tiles per cell × tile²).
fn check_size(style: &Style, n: usize) -> Result<()> {
    let tile = u64::from(style.tile());
    let px = u64::try_from(n)
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::from(style.tiles_per_cell()))
        .saturating_mul(tile.saturating_mul(tile));
    ensure!(
        px <= MAX_SHEET_PIXELS,
        "a sheet of {n} cells of {} × {} px tiles ({} per cell) has {px} pixels, more than {MAX_SHEET_PIXELS}; \
         HINT: lower --n or --zoom",
        style.tile(),
        style.tile(),
        style.tiles_per_cell()
    );
    Ok(())
}

fn validate(o: &GalleryOptions) -> Result<()> {
    ensure!(
        (1..=MAX_N).contains(&o.n),
        "--n {}: expected 1 … {MAX_N} cells per gallery",
        o.n
    );
    if let Some(z) = o.zoom {
        ensure!(
            (1..=MAX_ZOOM).contains(&z),
            "--zoom {z}: expected 1 … {MAX_ZOOM}"
        );
    }
    if let Some(c) = o.cols {
        ensure!(c >= 1, "--cols must be at least 1");
    }
    ensure!(
        (1..=MAX_CLUSTERS).contains(&o.clusters),
        "--clusters {}: expected 1 … {MAX_CLUSTERS}",
        o.clusters
    );
    ensure!(
        o.by == By::Cluster || o.features.is_none(),
        "--features is only used with --by cluster"
    );
    ensure!(
        o.by == By::Gene || o.genes.is_none(),
        "--genes is only used with --by gene"
    );
    Ok(())
}

/// Stage 1: the groups and their shown cells.
fn form_groups(store: &crate::store::Store, o: &GalleryOptions) -> Result<Vec<Group>> {
    match o.by {
        By::Gene => groups::by_gene(store, o.genes.as_deref(), o.n, o.seed),
        By::Well => Ok(groups::by_well(store, o.n, o.seed)),
        By::Cluster => {
            let stem = o.features.as_deref().context(
                "--by cluster needs --features STEM (per-cell features or embeddings with a `cell` column, \
                 from `setdino features` or `setdino embed`)",
            )?;
            kmeans::by_cluster(store, stem, o.clusters, o.n, o.seed)
        }
    }
}

/// Stage 2: one stretch per group (the same one repeated for `Contrast::Shared`).
fn fit_stretches(
    store: &crate::store::Store,
    groups: &[Group],
    contrast: Contrast,
) -> Result<Vec<Stretch>> {
    match contrast {
        Contrast::Shared => {
            let all: Vec<u32> = groups
                .iter()
                .flat_map(|g| g.shown.iter().copied())
                .collect();
            let st = render::fit_stretch(store, &all)?;
            Ok(vec![st; groups.len()])
        }
        Contrast::Group => groups
            .iter()
            .map(|g| render::fit_stretch(store, &g.shown))
            .collect(),
    }
}

/// A file-name-safe stem: letters, digits, `.`, `-`, `_` kept, anything else `_`.
pub fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `kind-name.png` for each group, made unique with `-2`, `-3` … when two names sanitise alike.
fn file_names(groups: &[Group]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    groups
        .iter()
        .map(|g| {
            let base = format!("{}-{}", g.kind, safe_name(&g.name));
            let mut name = format!("{base}.png");
            let mut k = 2;
            while !seen.insert(name.clone()) {
                name = format!("{base}-{k}.png");
                k += 1;
            }
            name
        })
        .collect()
}

/// The contrast note of the footer.
fn contrast_note(contrast: Contrast) -> String {
    render::contrast_note(match contrast {
        Contrast::Shared => "all galleries",
        Contrast::Group => "this gallery",
    })
}

/// Stage 3: draw and write every sheet.
fn write_sheets(
    store: &crate::store::Store,
    style: &Style,
    groups: Vec<Group>,
    stretches: &[Stretch],
    o: &GalleryOptions,
) -> Result<Vec<Sheet>> {
    let note = contrast_note(o.contrast);
    let files = file_names(&groups);
    let mut sheets = Vec::with_capacity(groups.len());
    for ((g, st), file) in groups.into_iter().zip(stretches).zip(files) {
        let img = render::grid(store, &g.shown, &g.title(), &note, style, st, o.cols)?;
        save_png(&o.out.join(&file), &img)?;
        sheets.push(Sheet { group: g, file });
    }
    Ok(sheets)
}

/// `gallery.tsv`: one line per shown cell: by (gene, well, cluster), group (its name), image, position
/// (row-major in the grid), cell (store index), plate, well, gene.
pub fn tsv_text(store: &crate::store::Store, sheets: &[Sheet]) -> Result<String> {
    let m = store.manifest();
    let mut s = String::from("by\tgroup\timage\tposition\tcell\tplate\twell\tgene\n");
    for sh in sheets {
        for (p, &k) in sh.group.shown.iter().enumerate() {
            let r = store.record(k as usize);
            writeln!(
                s,
                "{}\t{}\t{}\t{p}\t{k}\t{}\t{}\t{}",
                sh.group.kind,
                sh.group.name,
                sh.file,
                m.plates[r.plate as usize],
                m.wells[r.well as usize],
                m.genes[r.gene as usize]
            )?;
        }
    }
    Ok(s)
}

/// `index.md`: settings, the rendering rule, and each image with its counts.
fn index_text(
    store: &crate::store::Store,
    style: &Style,
    sheets: &[Sheet],
    o: &GalleryOptions,
) -> Result<String> {
    let mut s = String::from("# Cell galleries\n\n");
    writeln!(
        s,
        "Store `{}`, {} cells.",
        store.dir().display(),
        store.len()
    )?;
    writeln!(
        s,
        "Grouped by {}, up to {} cells per gallery, seed {}, mode {}; {}.",
        format!("{:?}", o.by).to_lowercase(),
        o.n,
        o.seed,
        format!("{:?}", o.mode).to_lowercase(),
        contrast_note(o.contrast)
    )?;
    writeln!(
        s,
        "Composite colours (additive): {}. Crops are {} px, drawn at {}×; the scale bar is in crop pixels. \
         `gallery.tsv` lists every cell shown (position = row-major place in the grid).\n",
        render::colour_legend(style),
        style.s,
        style.zoom
    )?;
    writeln!(s, "| group | cells | shown | image |\n|---|---|---|---|")?;
    for sh in sheets {
        let g = &sh.group;
        writeln!(
            s,
            "| {} | {} | {} | [{}]({}) |",
            g.label(),
            g.total,
            g.shown.len(),
            sh.file,
            sh.file
        )?;
    }
    for sh in sheets {
        writeln!(
            s,
            "\n## {}\n\n![{}]({})",
            sh.group.label(),
            sh.group.label(),
            sh.file
        )?;
        if !sh.group.note.is_empty() {
            writeln!(s, "\n{}", sh.group.note)?;
        }
    }
    Ok(s)
}

/// Runs `setdino gallery`: writes the PNGs, `gallery.tsv` and `index.md` into `o.out`.
pub fn run(o: &GalleryOptions) -> Result<Summary> {
    validate(o)?;
    let store = crate::store::Store::open(&o.store)?;
    let style = Style::new(&store, o.mode, o.zoom)?;
    check_size(&style, o.n)?;
    let groups = form_groups(&store, o)?;
    let stretches = fit_stretches(&store, &groups, o.contrast)?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let sheets = write_sheets(&store, &style, groups, &stretches, o)?;
    let tsv = o.out.join("gallery.tsv");
    crate::util::atomic::write_atomic(&tsv, tsv_text(&store, &sheets)?.as_bytes())?;
    let index = o.out.join("index.md");
    let text = index_text(&store, &style, &sheets, o)?;
    crate::util::atomic::write_atomic(&index, text.as_bytes())?;
    Ok(Summary { sheets, tsv, index })
}

/// Writes `img` as PNG to `path` atomically.
pub fn save_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    crate::util::atomic::write_atomic(path, &canvas::png_bytes(img)?)
}
