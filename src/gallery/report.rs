//! The "Galleries" section of `setdino eval --store STORE`: cells of the best-recalled complexes and of
//! the nearest-neighbour genes of a few query genes, as sheets with one labelled row per gene.
//!
//! Key decisions (bounded: at most [`MAX_COMPLEXES`] + [`MAX_QUERIES`] images of at most
//! [`MAX_ROWS`] × [`CELLS_PER_ROW`] crops, whatever the screen's size):
//! - Complexes: those with the most related pairs in the top 5 % of all gene-pair similarities (the
//!   recall's rule), at least one, ties in file order; rows are the complex's profiled genes with the
//!   most such pairs inside it (ties by name).
//! - Query genes: the genes with the most recalled pairs (ties by name), skipping genes already shown
//!   on an earlier neighbour sheet (so the sheets show different genes); neighbours are the 3 genes of
//!   highest cosine similarity of consensus profiles (exactly what eval's recall uses).
//! - A row shows [`CELLS_PER_ROW`] cells of the gene chosen as `setdino gallery --by gene --n 6` chooses
//!   them (seed 0), among the evaluated cells when the features table has a `cell` column, else among
//!   all the store's cells of that gene; one contrast stretch per image.
use super::groups::{cells_by_gene, sample};
use super::render::{self, Mode, Row, Style};
use crate::eval::complexes::Complexes;
use crate::eval::io::stem_paths;
use crate::eval::recall::in_top;
use crate::eval::ConsensusMetrics;
use crate::store::Store;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

/// Complexes shown.
pub const MAX_COMPLEXES: usize = 4;
/// Query genes shown (each with its [`NEIGHBOURS`] nearest genes).
pub const MAX_QUERIES: usize = 3;
pub const NEIGHBOURS: usize = 3;
/// Most gene rows of a complex sheet.
pub const MAX_ROWS: usize = 6;
/// Cells per row.
pub const CELLS_PER_ROW: usize = 6;
/// Seed of the per-gene cell choice.
const SEED: u64 = 0;

/// The section when `--store` was not given.
pub fn without_store() -> String {
    "## Galleries\n\nNo cell galleries: add `--store STORE` (the crop store these cells come from) to see the cells \
     of the best-recalled complexes and of nearest-neighbour genes here, or run `setdino gallery --store STORE \
     --by gene --genes G1,G2 --out DIR`.\n"
        .to_string()
}

/// What the sheets are drawn from.
struct Ctx<'a> {
    store: &'a Store,
    style: Style,
    /// Consensus gene names and, per name, the cells of that gene.
    names: &'a [&'a str],
    cells: Vec<Vec<u32>>,
    /// Recalled related pairs per consensus gene, and per pair (i < j).
    recalled_of: Vec<usize>,
    recalled: HashMap<(u32, u32), bool>,
}

impl Ctx<'_> {
    /// A row for consensus gene `g`.
    fn row(&self, g: usize, detail: String) -> Row {
        let name = self.names[g];
        let all = &self.cells[g];
        Row {
            label: name.to_string(),
            detail: format!("{detail}{} cells", all.len()),
            cells: sample(all, CELLS_PER_ROW, SEED, &format!("gene:{name}")),
        }
    }
}

/// Per consensus gene, its cells in the store (evaluated cells only when the table says which).
fn gene_cells(store: &Store, features: &Path, names: &[&str]) -> Result<(Vec<Vec<u32>>, bool)> {
    let (_, tsv) = stem_paths(features);
    let subset = super::kmeans::read_cells(&tsv, store)?;
    let by = cells_by_gene(store, subset.as_deref());
    let ids: HashMap<&str, usize> = store
        .manifest()
        .genes
        .iter()
        .enumerate()
        .map(|(k, g)| (g.as_str(), k))
        .collect();
    let cells = names
        .iter()
        .map(|n| ids.get(n).map_or_else(Vec::new, |&k| by[k].clone()))
        .collect();
    Ok((cells, subset.is_some()))
}

/// Recalled flags of the related pairs and their count per gene.
fn recalled(cm: &ConsensusMetrics, g: usize) -> (HashMap<(u32, u32), bool>, Vec<usize>) {
    let mut per = vec![0usize; g];
    let mut map = HashMap::new();
    for (&(a, b), &q) in cm.pairs.iter().zip(&cm.query) {
        let hit = !cm.null.is_empty() && in_top(&cm.null, q, 0.95);
        map.insert((a.min(b), a.max(b)), hit);
        if hit {
            per[a as usize] += 1;
            per[b as usize] += 1;
        }
    }
    (map, per)
}

/// A complex to show.
struct ComplexPick {
    name: String,
    /// (consensus gene, its recalled pairs inside the complex), best first, at most [`MAX_ROWS`].
    rows: Vec<(usize, usize)>,
    /// Profiled genes, recalled pairs and profiled pairs of the complex.
    members: usize,
    hits: usize,
    pairs: usize,
}

/// The complexes to show (module docs).
fn pick_complexes(ctx: &Ctx, cx: &Complexes) -> Vec<ComplexPick> {
    let idx: HashMap<&str, usize> = ctx.names.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut picked = Vec::new();
    for (name, genes) in &cx.complexes {
        let mut members: Vec<usize> = genes
            .iter()
            .filter_map(|g| idx.get(g.as_str()).copied())
            .collect();
        members.sort_unstable();
        members.dedup();
        let mut inside = vec![0usize; members.len()];
        let (mut hits, mut pairs) = (0, 0);
        for (x, &a) in members.iter().enumerate() {
            for (y, &b) in members.iter().enumerate().skip(x + 1) {
                let key = (u32::try_from(a).unwrap_or(0), u32::try_from(b).unwrap_or(0));
                let Some(&hit) = ctx.recalled.get(&key) else {
                    continue;
                };
                pairs += 1;
                if hit {
                    hits += 1;
                    inside[x] += 1;
                    inside[y] += 1;
                }
            }
        }
        if hits > 0 {
            let n = members.len();
            let mut rows: Vec<(usize, usize)> = members.into_iter().zip(inside).collect();
            rows.sort_by(|p, q| q.1.cmp(&p.1).then(ctx.names[p.0].cmp(ctx.names[q.0])));
            rows.truncate(MAX_ROWS);
            picked.push(ComplexPick {
                name: name.clone(),
                rows,
                members: n,
                hits,
                pairs,
            });
        }
    }
    // Stable: ties keep file order.
    picked.sort_by_key(|q| std::cmp::Reverse(q.hits));
    picked.truncate(MAX_COMPLEXES);
    picked
}

/// The query genes and their nearest genes by cosine of unit consensus rows `unit`: (G, d).
fn pick_neighbours(ctx: &Ctx, unit: &[f64]) -> Vec<(usize, Vec<(usize, f64)>)> {
    let g = ctx.names.len();
    if g < 2 {
        return Vec::new();
    }
    let d = unit.len() / g;
    let mut order: Vec<usize> = (0..g).collect();
    order.sort_by(|&a, &b| {
        ctx.recalled_of[b]
            .cmp(&ctx.recalled_of[a])
            .then(ctx.names[a].cmp(ctx.names[b]))
    });
    let mut shown = std::collections::HashSet::new();
    let mut out = Vec::new();
    for q in order {
        if out.len() == MAX_QUERIES {
            break;
        }
        if shown.contains(&q) {
            continue;
        }
        let zq = &unit[q * d..(q + 1) * d];
        let mut sims: Vec<(usize, f64)> = (0..g)
            .filter(|&j| j != q)
            .map(|j| {
                (
                    j,
                    zq.iter()
                        .zip(&unit[j * d..(j + 1) * d])
                        .map(|(a, b)| a * b)
                        .sum(),
                )
            })
            .collect();
        sims.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        sims.truncate(NEIGHBOURS);
        shown.insert(q);
        shown.extend(sims.iter().map(|s| s.0));
        out.push((q, sims));
    }
    out
}

/// Draws one rows sheet into `dir/file` and returns its markdown (image and caption).
fn sheet(
    ctx: &Ctx,
    dir: &Path,
    file: &str,
    title: &str,
    rows: &[Row],
    caption: &str,
) -> Result<String> {
    let cells: Vec<u32> = rows.iter().flat_map(|r| r.cells.iter().copied()).collect();
    let st = render::fit_stretch(ctx.store, &cells)?;
    let note = render::contrast_note("this image");
    let img = render::rows(
        ctx.store,
        rows,
        CELLS_PER_ROW,
        title,
        &note,
        &ctx.style,
        &st,
    )?;
    super::save_png(&dir.join(file), &img)?;
    Ok(format!("![{title}](galleries/{file})\n\n{caption}\n\n"))
}

/// Writes the gallery images into `out/galleries/` and returns the report's "Galleries" section.
/// `names`: consensus gene names (the rows of `cm.unit`); `features`: the eval's features stem.
pub fn eval_section(
    store: Option<&Path>,
    features: &Path,
    out: &Path,
    names: &[&str],
    cx: &Complexes,
    cm: &ConsensusMetrics,
) -> Result<String> {
    let Some(store_dir) = store else {
        return Ok(without_store());
    };
    let store = Store::open(store_dir).context("galleries (--store)")?;
    let (cells, from_table) = gene_cells(&store, features, names)?;
    let (recalled, recalled_of) = recalled(cm, names.len());
    let ctx = Ctx {
        style: Style::new(&store, Mode::Composite, None)?,
        store: &store,
        names,
        cells,
        recalled_of,
        recalled,
    };
    let dir = out.join("galleries");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let which = if from_table {
        "the evaluated cells"
    } else {
        "all the store's cells of each gene: the features table has no `cell` column"
    };
    let mut s = String::from("## Galleries\n\n");
    writeln!(
        s,
        "Cells of `{}` ({which}), {CELLS_PER_ROW} per gene chosen with seed {SEED}; composite colours: \
         {}.\n",
        store.dir().display(),
        render::colour_legend(&ctx.style)
    )?;
    s.push_str(&complex_sheets(&ctx, cx, &dir)?);
    s.push_str(&neighbour_sheets(&ctx, &cm.unit, &dir)?);
    Ok(s)
}

fn complex_sheets(ctx: &Ctx, cx: &Complexes, dir: &Path) -> Result<String> {
    let picked = pick_complexes(ctx, cx);
    if picked.is_empty() {
        return Ok(
            "No complex has a related pair in the top 5 %, so no complex gallery.\n\n".to_string(),
        );
    }
    let mut s = String::new();
    for (k, c) in picked.iter().enumerate() {
        let rows: Vec<Row> = c
            .rows
            .iter()
            .map(|&(g, n)| ctx.row(g, format!("{n} recalled · ")))
            .collect();
        let name = &c.name;
        let title = format!(
            "Complex {name}: {} of its {} gene pairs in the top 5 %",
            c.hits, c.pairs
        );
        let caption = format!(
            "Complex {name}: {} of its {} profiled genes, one row each ({CELLS_PER_ROW} cells), those with the \
             most pairs of this complex in the top 5 % of similarities first (\"recalled\").",
            rows.len(),
            c.members
        );
        s.push_str(&sheet(
            ctx,
            dir,
            &format!("complex-{}.png", k + 1),
            &title,
            &rows,
            &caption,
        )?);
    }
    Ok(s)
}

fn neighbour_sheets(ctx: &Ctx, unit: &[f64], dir: &Path) -> Result<String> {
    let mut s = String::new();
    for (q, near) in pick_neighbours(ctx, unit) {
        let name = ctx.names[q];
        let mut rows = vec![ctx.row(q, "query · ".to_string())];
        rows.extend(
            near.iter()
                .map(|&(g, c)| ctx.row(g, format!("cos {c:.2} · "))),
        );
        let title = format!("Nearest genes of {name} (cosine of consensus profiles)");
        let list: Vec<String> = near
            .iter()
            .map(|&(g, c)| format!("{} (cosine {c:.2})", ctx.names[g]))
            .collect();
        let caption = format!(
            "{name} (top row) and its nearest genes by consensus-profile similarity: {}; {CELLS_PER_ROW} cells \
             each.",
            list.join(", ")
        );
        let file = format!("neighbours-{}.png", super::safe_name(name));
        s.push_str(&sheet(ctx, dir, &file, &title, &rows, &caption)?);
    }
    Ok(s)
}
