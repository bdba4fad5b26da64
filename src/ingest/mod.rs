//! `setdino ingest`: TIFF tiles + cell table → crop store (flat-field, percentile clip, crops, NTC stats,
//! report).
//!
//! Plate by plate: a plate that fits `cache_bytes` (4 GiB) decoded is read once; a larger one is streamed
//! (at most a few tiles per thread in memory) and read once per pass. Pass A reads the plate's tiles for
//! the flat-field mean and the value range that bounds the float histogram (skipped for integer data with
//! `--illum none`, whose histogram is exact over 0…65535); pass B histograms the corrected pixels for the percentiles; pass C crops. Tiles are decoded
//! in parallel chunks and the crops appended in table order, so the store does not depend on thread count.
//! A crop covers rows ⌊i⌋ − crop/2 … ⌊i⌋ + crop/2 − 1 (columns likewise); cells whose box leaves the tile
//! are skipped and counted in the report. With `--shard I/N` the run is one job part: it crops a
//! contiguous slice of the tiles into a partial store for `store merge` (see [`Plan`]).
pub mod clip;
pub mod illum;
pub mod table;
pub mod tiff;

use crate::store::writer::{StoreWriter, WriterOptions};
use crate::store::CellMeta;
use crate::util::part::JobPart;
use anyhow::{bail, Context, Result};
use clip::{clip_unorm, Hist};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use table::{CellRow, CellTable, TilePaths, TileRow};
use tiff::Pixels;

/// Flat-field mode.
#[derive(Clone, Debug, PartialEq)]
pub enum Illum {
    Auto,
    None,
    Dir(PathBuf),
}

impl std::str::FromStr for Illum {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Illum> {
        Ok(match s {
            "auto" => Illum::Auto,
            "none" => Illum::None,
            d => Illum::Dir(PathBuf::from(d)),
        })
    }
}

/// Options of `ingest`.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub tiles: PathBuf,
    pub cells: PathBuf,
    pub out: PathBuf,
    pub channels: Option<Vec<String>>,
    /// Renames of the cell table's columns (`--columns gene=gene_symbol_0,…`).
    pub columns: crate::formats::table::ColumnMap,
    pub crop: u32,
    pub illum: Illum,
    /// Lower and upper percentiles (0.1, 99.9).
    pub clip: (f64, f64),
    pub ntc_gene: String,
    pub force: bool,
    /// Crops per shard (default: about 1 GiB).
    pub cells_per_shard: Option<usize>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// A plate whose decoded tiles (2 bytes per pixel and channel for 8/16-bit data, 4 for float) fit in this many bytes is decoded once
    /// and kept for all passes; a larger plate is streamed and re-read per pass.
    pub cache_bytes: usize,
    /// Run only this job part (`--shard I/N`) and write a partial store (see [`Plan`]).
    pub part: Option<JobPart>,
}

impl IngestOptions {
    pub fn new(tiles: &Path, cells: &Path, out: &Path) -> IngestOptions {
        IngestOptions {
            tiles: tiles.into(),
            cells: cells.into(),
            out: out.into(),
            channels: None,
            columns: Default::default(),
            crop: 96,
            illum: Illum::Auto,
            clip: (0.1, 99.9),
            ntc_gene: "nontargeting".into(),
            force: false,
            cells_per_shard: None,
            progress: false,
            cache_bytes: 4 << 30,
            part: None,
        }
    }
}

/// A decoded tile: one plane per channel.
struct Tile {
    h: usize,
    w: usize,
    planes: Vec<Pixels>,
    integer: bool,
}

/// Call `f(pixel index, value)` for every pixel of a plane, monomorphised per sample type.
#[inline]
fn for_each_px(p: &Pixels, mut f: impl FnMut(usize, f32)) {
    match p {
        Pixels::U16(v) => v.iter().enumerate().for_each(|(q, &x)| f(q, x as f32)),
        Pixels::F32(v) => v.iter().enumerate().for_each(|(q, &x)| f(q, x)),
    }
}

fn read_tile(t: &TileRow, channels: &[String]) -> Result<Tile> {
    let pages = match &t.paths {
        TilePaths::MultiPage(p) => {
            let pages = tiff::read_pages(p)?;
            if pages.len() != channels.len() {
                bail!(
                    "{}: {} channel plane(s) (pages × samples per pixel), expected {} (one per channel: {}); tiles.csv line {}",
                    p.display(),
                    pages.len(),
                    channels.len(),
                    channels.join(","),
                    t.line
                );
            }
            pages
        }
        TilePaths::OmeZarr(p) => crate::formats::ome_zarr::Image::open(p)
            .and_then(|img| img.read(channels))
            .with_context(|| format!("tiles.csv line {}", t.line))?,
        TilePaths::PerChannel(ps) => ps
            .iter()
            .map(|p| {
                let mut v = tiff::read_pages(p)?;
                if v.len() != 1 {
                    bail!(
                        "{}: {} pages, expected 1 (one file per channel); tiles.csv line {}",
                        p.display(),
                        v.len(),
                        t.line
                    );
                }
                Ok(v.remove(0))
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let (h, w) = (pages[0].h, pages[0].w);
    for (k, p) in pages.iter().enumerate() {
        if (p.h, p.w) != (h, w) {
            bail!(
                "{}: channel {k} is {}×{}, channel 0 is {h}×{w}; tiles.csv line {}",
                t.first_path().display(),
                p.h,
                p.w,
                t.line
            );
        }
    }
    let integer = pages.iter().all(|p| p.data.is_integer());
    Ok(Tile {
        h,
        w,
        integer,
        planes: pages.into_iter().map(|p| p.data).collect(),
    })
}

fn check_size(t: &TileRow, tile: &Tile, h: usize, w: usize) -> Result<()> {
    if (tile.h, tile.w) != (h, w) {
        bail!(
            "{}: tile is {}×{}, the first tile of plate {:?} is {h}×{w}; HINT: all tiles of a plate must have one size \
             (tiles.csv line {})",
            t.first_path().display(),
            tile.h,
            tile.w,
            t.plate,
            t.line
        );
    }
    Ok(())
}

/// Per-channel statistics of pass A.
#[derive(Clone)]
struct PassA {
    sum: Vec<Vec<f64>>,
    min: Vec<f32>,
    max: Vec<f32>,
}

impl PassA {
    fn new(c: usize, plane: usize, with_sum: bool) -> PassA {
        PassA {
            sum: if with_sum {
                vec![vec![0.0; plane]; c]
            } else {
                vec![]
            },
            min: vec![f32::INFINITY; c],
            max: vec![f32::NEG_INFINITY; c],
        }
    }
    fn add(mut self, t: &Tile) -> PassA {
        for (c, p) in t.planes.iter().enumerate() {
            let (mut mn, mut mx) = (self.min[c], self.max[c]);
            match self.sum.get_mut(c) {
                Some(s) => for_each_px(p, |q, v| {
                    s[q] += v as f64;
                    mn = mn.min(v);
                    mx = mx.max(v);
                }),
                None => for_each_px(p, |_, v| {
                    mn = mn.min(v);
                    mx = mx.max(v);
                }),
            }
            (self.min[c], self.max[c]) = (mn, mx);
        }
        self
    }
    fn merge(mut self, o: PassA) -> PassA {
        for (a, b) in self.sum.iter_mut().zip(&o.sum) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        for c in 0..self.min.len() {
            self.min[c] = self.min[c].min(o.min[c]);
            self.max[c] = self.max[c].max(o.max[c]);
        }
        self
    }
}

/// Correct one pixel: divide by the field when there is one.
#[inline]
fn corrected(v: f32, ff: Option<&Vec<f32>>, k: usize) -> f32 {
    match ff {
        Some(f) => v / f[k],
        None => v,
    }
}

/// The options that need no input file: checked before anything is read or written.
fn check_options(opts: &IngestOptions) -> Result<()> {
    let crop = opts.crop;
    if crop == 0 || !crop.is_multiple_of(2) {
        bail!("--crop {crop}: the crop side must be even and > 0");
    }
    let (plo, phi) = opts.clip;
    if !(0.0..=100.0).contains(&plo) || !(0.0..=100.0).contains(&phi) || plo >= phi {
        bail!("--clip {plo},{phi}: expected two percentiles 0 ≤ lo < hi ≤ 100");
    }
    if let Illum::Dir(d) = &opts.illum {
        if !d.is_dir() {
            bail!(
                "--illum {}: not a directory (nor auto or none)",
                d.display()
            );
        }
    }
    if opts.cells_per_shard == Some(0) {
        bail!("--cells-per-shard 0: must be ≥ 1");
    }
    if let Some(ch) = &opts.channels {
        let mut seen = std::collections::HashSet::new();
        for name in ch {
            if name.is_empty() {
                bail!("--channels: an empty channel name; expected comma-separated names like dna,actin");
            }
            if !seen.insert(name) {
                bail!(
                    "--channels: channel {name:?} is listed twice; each channel must be distinct"
                );
            }
        }
    }
    Ok(())
}

/// The crop must fit in the tiles of a plate.
fn check_crop_fits(crop: usize, plate: &str, h: usize, w: usize, first: &TileRow) -> Result<()> {
    if crop > h || crop > w {
        bail!(
            "--crop {crop} is larger than the tiles of plate {plate:?} ({h}×{w} px, e.g. {}, tiles.csv line {}); no \
             cell can be cropped; HINT: use a --crop of at most {}",
            first.first_path().display(),
            first.line,
            h.min(w) / 2 * 2
        );
    }
    Ok(())
}

/// A cell skipped because its crop box leaves the tile.
#[derive(Clone, Debug)]
struct Skipped {
    line: u32,
    /// `line` (text cell table) or `row` (Parquet).
    unit: &'static str,
    cell_id: u64,
    plate: String,
    well: String,
    tile: u32,
    i: f32,
    j: f32,
}

impl Skipped {
    fn json(&self) -> serde_json::Value {
        let key = if self.unit == "row" {
            "cells_table_row"
        } else {
            "cells_csv_line"
        };
        serde_json::json!({key: self.line, "cell_id": self.cell_id, "plate": self.plate,
            "well": self.well, "tile": self.tile, "i": self.i, "j": self.j})
    }
    fn describe(&self) -> String {
        format!(
            "{} {} (cell {}, plate {}, well {}, tile {}, centroid {}, {})",
            self.unit, self.line, self.cell_id, self.plate, self.well, self.tile, self.i, self.j
        )
    }
}

/// At most this many skipped cells are listed by name in report.json (all are counted).
const SKIPPED_LISTED: usize = 10_000;

/// "line 3 (…), line 9 (…) and 4 more" for the first few skipped cells.
fn name_skipped(skipped: &[Skipped], total: u64) -> String {
    let first: Vec<String> = skipped.iter().take(3).map(Skipped::describe).collect();
    let more = total.saturating_sub(first.len() as u64);
    if more > 0 {
        format!("{} and {more} more", first.join(", "))
    } else {
        first.join(", ")
    }
}

/// After the crops: no cell written is an error (except in a job part, which may hold none; the merge
/// checks the whole), skipped cells a warning; both name the first few.
fn check_skipped(opts: &IngestOptions, t: &mut Totals) -> Result<()> {
    let crop = opts.crop;
    let (written, skipped_edge, skipped) = (t.written, t.skipped_edge, &t.skipped);
    if written == 0 && skipped_edge > 0 && opts.part.is_none() {
        bail!(
            "{}: no cell could be cropped: all {skipped_edge} cells' {crop}×{crop} boxes leave their tile, e.g. {}; \
             nothing was written to {}; HINT: check the centroid columns i (row) and j (column) and --crop",
            opts.cells.display(),
            name_skipped(skipped, skipped_edge),
            opts.out.display()
        );
    }
    if skipped_edge > 0 {
        let msg = format!(
            "{}: {skipped_edge} cell(s) skipped because their {crop}×{crop} box leaves the tile: {} (report.json lists \
             them under skipped_cells)",
            opts.cells.display(),
            name_skipped(skipped, skipped_edge)
        );
        eprintln!("warning: {msg}");
        t.warnings.push(msg);
    }
    Ok(())
}

/// One plate's tiles (indices into tiles.csv), decoded once and kept when they fit the cache budget;
/// otherwise every pass re-reads them.
struct Plate<'a> {
    name: &'a str,
    tiles: &'a [TileRow],
    channels: &'a [String],
    idx: Vec<usize>,
    /// The tiles pass C crops (all of `idx` unless this is a job part).
    crop_idx: Vec<usize>,
    h: usize,
    w: usize,
    /// The first tile has 8/16-bit samples.
    integer: bool,
    cache: Option<HashMap<usize, Arc<Tile>>>,
    /// Tile reads so far.
    reads: u64,
}

impl<'a> Plate<'a> {
    /// Read the plate's first tile (size, sample type, crop check) and, when the plate fits
    /// `opts.cache_bytes`, decode all of its tiles.
    fn open(
        name: &'a str,
        tiles: &'a [TileRow],
        channels: &'a [String],
        opts: &IngestOptions,
        crop: usize,
        bar: &indicatif::ProgressBar,
    ) -> Result<Plate<'a>> {
        let idx: Vec<usize> = (0..tiles.len())
            .filter(|&k| tiles[k].plate == name)
            .collect();
        let first = read_tile(&tiles[idx[0]], channels)?;
        let (h, w) = (first.h, first.w);
        check_crop_fits(crop, name, h, w, &tiles[idx[0]])?;
        let sample_bytes = if first.integer { 2 } else { 4 };
        let mut p = Plate {
            name,
            tiles,
            channels,
            crop_idx: idx.clone(),
            idx,
            h,
            w,
            integer: first.integer,
            cache: None,
            reads: 1,
        };
        drop(first);
        let bytes = p
            .idx
            .len()
            .saturating_mul(channels.len())
            .saturating_mul(h.saturating_mul(w))
            .saturating_mul(sample_bytes);
        if bytes <= opts.cache_bytes {
            bar.set_message(format!("plate {name}: decoding"));
            let v = p
                .idx
                .par_iter()
                .map(|&k| Ok((k, p.read(k)?)))
                .collect::<Result<HashMap<_, _>>>()?;
            p.reads += p.idx.len() as u64;
            p.cache = Some(v);
        }
        Ok(p)
    }

    fn read(&self, k: usize) -> Result<Arc<Tile>> {
        let t = read_tile(&self.tiles[k], self.channels)?;
        check_size(&self.tiles[k], &t, self.h, self.w)?;
        Ok(Arc::new(t))
    }

    /// Tile `k` (of tiles.csv), from the cache or read again.
    fn load(&self, k: usize) -> Result<Arc<Tile>> {
        match self.cache.as_ref().and_then(|m| m.get(&k)) {
            Some(t) => Ok(t.clone()),
            None => self.read(k),
        }
    }

    /// Count one pass over the tiles (reads only when not cached).
    fn pass_done(&mut self) {
        if self.cache.is_none() {
            self.reads += self.idx.len() as u64;
        }
    }

    /// At most one fold accumulator (flat-field sums, histograms: megabytes each) per thread.
    fn min_len(&self) -> usize {
        self.idx.len().div_ceil(rayon::current_num_threads().max(1))
    }
}

/// Pass A: flat-field sums and value range (skipped for integer data with `--illum none`).
fn pass_a(
    p: &mut Plate,
    opts: &IngestOptions,
    bar: &indicatif::ProgressBar,
) -> Result<Option<PassA>> {
    if opts.illum == Illum::None && p.integer {
        bar.inc(p.idx.len() as u64);
        return Ok(None);
    }
    bar.set_message(format!("plate {}: flat-field and range", p.name));
    let (c, plane) = (p.channels.len(), p.h * p.w);
    let empty = || PassA::new(c, plane, opts.illum == Illum::Auto);
    let pr: &Plate = p;
    let a = pr
        .idx
        .par_iter()
        .with_min_len(pr.min_len())
        .try_fold(empty, |acc, &k| -> Result<PassA> {
            let t = pr.load(k)?;
            bar.inc(1);
            Ok(acc.add(&t))
        })
        .try_reduce(empty, |x, y| Ok(x.merge(y)))?;
    p.pass_done();
    Ok(Some(a))
}

/// The flat fields of the plate's channels (none with `--illum none`).
fn flat_fields(
    p: &Plate,
    opts: &IngestOptions,
    a: Option<&PassA>,
) -> Result<Option<Vec<Vec<f32>>>> {
    let (h, w) = (p.h, p.w);
    Ok(match &opts.illum {
        Illum::None => None,
        Illum::Auto => {
            let a = a.context("internal: pass A is required for --illum auto")?;
            let n = p.idx.len() as f64;
            Some(
                (0..p.channels.len())
                    .map(|ch| {
                        let mean: Vec<f64> = a.sum[ch].iter().map(|s| s / n).collect();
                        illum::field_from_mean(&mean, h, w).with_context(|| {
                            format!("plate {:?}, channel {}", p.name, p.channels[ch])
                        })
                    })
                    .collect::<Result<_>>()?,
            )
        }
        Illum::Dir(d) => Some(
            p.channels
                .iter()
                .map(|ch| illum::read_field(d, p.name, ch, h, w))
                .collect::<Result<_>>()?,
        ),
    })
}

/// Empty histograms per channel, bounded by pass A's range (divided by the field's range).
fn empty_hists(c: usize, a: Option<&PassA>, fields: Option<&[Vec<f32>]>) -> Vec<Hist> {
    (0..c)
        .map(|ch| {
            let (mn, mx) = a.map_or((0.0, 65535.0), |a| (a.min[ch] as f64, a.max[ch] as f64));
            match fields {
                None if a.is_none() => Hist::integer(),
                None => Hist::float(mn, mx),
                Some(f) => {
                    let fmin = f[ch].iter().cloned().fold(f32::INFINITY, f32::min) as f64;
                    let fmax = f[ch].iter().cloned().fold(0.0f32, f32::max) as f64;
                    let cands = [mn / fmin, mn / fmax, mx / fmin, mx / fmax];
                    let lo = cands.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = cands.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    // Widen by a relative epsilon: f32 division may land a hair outside the f64 bound.
                    Hist::float(lo - 1e-6 * lo.abs(), hi + 1e-6 * hi.abs())
                }
            }
        })
        .collect()
}

/// Lower and upper clip bound per channel.
type ClipBounds = Vec<(f64, f64)>;

/// Pass B: histograms of the corrected pixels; returns them with the clip bounds per channel (a constant
/// channel is a warning).
fn pass_b(
    p: &mut Plate,
    opts: &IngestOptions,
    a: Option<&PassA>,
    fields: Option<&[Vec<f32>]>,
    bar: &indicatif::ProgressBar,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Hist>, ClipBounds)> {
    let plate = p.name;
    bar.set_message(format!("plate {plate}: percentiles"));
    let hists = empty_hists(p.channels.len(), a, fields);
    let empty = || {
        hists
            .iter()
            .map(|x| Hist {
                counts: vec![0; x.counts.len()],
                ..x.clone()
            })
            .collect::<Vec<_>>()
    };
    let pr: &Plate = p;
    let hists = pr
        .idx
        .par_iter()
        .with_min_len(pr.min_len())
        .try_fold(empty, |mut hs, &k| -> Result<Vec<Hist>> {
            let t = pr.load(k)?;
            if hs[0].exact && !t.integer {
                bail!(
                    "{}: float samples, but the first tile of plate {plate:?} is integer; HINT: use one sample type \
                     per plate (tiles.csv line {})",
                    pr.tiles[k].first_path().display(),
                    pr.tiles[k].line
                );
            }
            for (ch, px) in t.planes.iter().enumerate() {
                let ff = fields.map(|f| &f[ch]);
                let h = &mut hs[ch];
                for_each_px(px, |q, v| h.add(corrected(v, ff, q)));
            }
            bar.inc(1);
            Ok(hs)
        })
        .try_reduce(empty, |x, y| Ok(x.into_iter().zip(&y).map(|(a, b)| a.merge(b)).collect()))?;
    p.pass_done();
    let (plo, phi) = opts.clip;
    let bounds: Vec<(f64, f64)> = hists
        .iter()
        .map(|hh| Ok((hh.percentile(plo)?, hh.percentile(phi)?)))
        .collect::<Result<_>>()?;
    for (ch, &(lo, hi)) in bounds.iter().enumerate() {
        if hi <= lo {
            let msg = format!(
                "plate {plate}, channel {}: clip percentiles are equal ({lo}); the channel is constant and its crops are all 0",
                p.channels[ch]
            );
            eprintln!("warning: {msg}");
            warnings.push(msg);
        }
    }
    Ok((hists, bounds))
}

/// Pass C: crop every cell of the plate, in table order, into the store; returns (written, skipped) and
/// lists the skipped cells (up to [`SKIPPED_LISTED`] in all).
#[allow(clippy::too_many_arguments)]
fn pass_c(
    p: &mut Plate,
    cells: &CellTable,
    crop: usize,
    fields: Option<&[Vec<f32>]>,
    bounds: &[(f64, f64)],
    writer: &mut StoreWriter,
    bar: &indicatif::ProgressBar,
    skipped: &mut Vec<Skipped>,
) -> Result<(u64, u64)> {
    bar.set_message(format!("plate {}: crops", p.name));
    let chunk = rayon::current_num_threads().max(1) * 2;
    let (mut written, mut edge_total) = (0u64, 0u64);
    let pr: &Plate = p;
    for group in pr.crop_idx.chunks(chunk) {
        let results: Vec<(Vec<CellMeta>, Vec<u16>, Vec<Skipped>)> = group
            .par_iter()
            .map(|&k| {
                let t = pr.load(k)?;
                let r = crop_tile(
                    &t,
                    &pr.tiles[k],
                    &cells.by_tile[k],
                    cells,
                    crop,
                    fields,
                    bounds,
                );
                bar.inc(1);
                Ok(r)
            })
            .collect::<Result<_>>()?;
        for (metas, crops, edge) in results {
            writer.push(&metas, &crops)?;
            written += metas.len() as u64;
            edge_total += edge.len() as u64;
            let room = SKIPPED_LISTED.saturating_sub(skipped.len());
            skipped.extend(edge.into_iter().take(room));
        }
    }
    p.pass_done();
    Ok((written, edge_total))
}

/// The report entry of one plate.
fn plate_json(
    p: &Plate,
    written: u64,
    edge: u64,
    hists: &[Hist],
    bounds: &[(f64, f64)],
    fields: Option<&[Vec<f32>]>,
) -> serde_json::Value {
    serde_json::json!({
        "plate": p.name, "tiles": p.crop_idx.len(), "tile_size": [p.h, p.w], "cells_written": written,
        "skipped": {"box_leaves_tile": edge},
        "channels": p.channels.iter().enumerate().map(|(ch, name)| serde_json::json!({
            "channel": name,
            "clip_lo": bounds[ch].0, "clip_hi": bounds[ch].1,
            "clip_exact": hists[ch].exact,
            "clip_precision": if hists[ch].exact { 0.0 } else { hists[ch].width / 2.0 },
            "flat_field": fields.map(|f| {
                let mn = f[ch].iter().cloned().fold(f32::INFINITY, f32::min);
                let mx = f[ch].iter().cloned().fold(0.0f32, f32::max);
                serde_json::json!({"min": mn, "max": mx})
            }),
        })).collect::<Vec<_>>(),
    })
}

/// Everything read before the first tile: the tile table, the channel names and the cell table.
struct Inputs {
    tiles: Vec<TileRow>,
    channels: Vec<String>,
    cells: CellTable,
}

/// Read tiles.csv, name the channels (from `--channels`, the tile table's columns, an OME-Zarr image's
/// labels, else `ch0…`) and read the cell table.
fn read_inputs(opts: &IngestOptions) -> Result<Inputs> {
    let (tiles, names) = table::read_tiles(&opts.tiles, opts.channels.as_deref())?;
    let channels: Vec<String> = match names {
        Some(n) => n,
        None => {
            let p = tiles[0].first_path();
            if let TilePaths::OmeZarr(_) = tiles[0].paths {
                crate::formats::ome_zarr::Image::open(p)?.channel_names()
            } else {
                (0..tiff::read_pages(p)?.len())
                    .map(|k| format!("ch{k}"))
                    .collect()
            }
        }
    };
    let cells = table::read_cells(&opts.cells, &tiles, &opts.columns)?;
    Ok(Inputs {
        tiles,
        channels,
        cells,
    })
}

/// Which plates this run visits (first-seen order of tiles.csv) and which tiles it crops.
///
/// Job parts (`--shard I/N`, [`JobPart`]): the units are the tiles in the order a one-process ingest crops
/// them (plates in first-seen order of tiles.csv, a plate's tiles in tiles.csv order). Part I crops the
/// contiguous range [`JobPart::range`] of that list (balanced by tiles, ±1), so `store merge`, which
/// concatenates the parts in part order, restores the one-process cell order exactly. The flat field and
/// the clip percentiles are per plate and need every tile of the plate, so each part computes them
/// (passes A and B) over all tiles of every plate it crops from: it reads those tiles again, which is cheap
/// next to cropping and writing, and a part overlaps at most two plates' boundaries. The numbers are
/// then the one-process ones (integer data sum exactly; histograms are counts). Everything global over
/// cells (dictionaries, batch ids, NTC statistics) is rebuilt by the merge from the concatenated cells
/// ([`crate::store::merge`]).
struct Plan {
    plates: Vec<String>,
    /// Per tile of tiles.csv: cropped by this run.
    crop: Vec<bool>,
    /// What the part is and the settings every part must share (report.json `part`), for a job part.
    part: Option<serde_json::Value>,
}

/// The tiles of tiles.csv in the order a one-process ingest crops them (see [`Plan`]).
fn tile_order(tiles: &[TileRow]) -> Vec<usize> {
    let mut plates: Vec<&str> = Vec::new();
    for t in tiles {
        if !plates.contains(&t.plate.as_str()) {
            plates.push(&t.plate);
        }
    }
    plates
        .iter()
        .flat_map(|p| (0..tiles.len()).filter(move |&k| tiles[k].plate == *p))
        .collect()
}

fn plan(opts: &IngestOptions, inputs: &Inputs, cells_per_shard: usize) -> Result<Plan> {
    let tiles = &inputs.tiles;
    let order = tile_order(tiles);
    let mut crop = vec![opts.part.is_none(); tiles.len()];
    let part = match opts.part {
        None => None,
        Some(part) => {
            if part.count > order.len() {
                bail!(
                    "--shard {}/{}: {} parts, but {} lists only {} tiles; HINT: use at most {} parts",
                    part.index,
                    part.count,
                    part.count,
                    opts.tiles.display(),
                    order.len(),
                    order.len()
                );
            }
            let range = part.range(order.len());
            for &k in &order[range.clone()] {
                crop[k] = true;
            }
            let mut crc = crc32fast::Hasher::new();
            for &k in &order {
                let t = &tiles[k];
                crc.update(format!("{}\t{}\t{}\n", t.plate, t.well, t.tile).as_bytes());
            }
            Some(serde_json::json!({
                "index": part.index, "count": part.count, "tiles": [range.start, range.end],
                "settings": {
                    "channels": inputs.channels, "crop": opts.crop, "illum": illum_name(&opts.illum),
                    "clip_percentiles": [opts.clip.0, opts.clip.1], "ntc_gene": opts.ntc_gene,
                    "cells_per_shard": cells_per_shard, "tiles": order.len(),
                    "tiles_crc32": format!("{:08x}", crc.finalize()), "cells_in_table": inputs.cells.rows,
                },
            }))
        }
    };
    let mut plates: Vec<String> = Vec::new();
    for &k in order.iter().filter(|&&k| crop[k]) {
        if !plates.contains(&tiles[k].plate) {
            plates.push(tiles[k].plate.clone());
        }
    }
    Ok(Plan { plates, crop, part })
}

fn illum_name(illum: &Illum) -> String {
    match illum {
        Illum::Auto => "auto".to_string(),
        Illum::None => "none".to_string(),
        Illum::Dir(d) => d.display().to_string(),
    }
}

/// The store writer's options: channels, crop, metadata columns, crops per shard file.
fn writer_options(opts: &IngestOptions, inputs: &Inputs) -> WriterOptions {
    let mut wo = WriterOptions::new(opts.crop, inputs.channels.clone());
    wo.ntc_gene = opts.ntc_gene.clone();
    wo.meta_columns = inputs.cells.extra_columns.clone();
    wo.force = opts.force;
    wo.created_by = match opts.part {
        None => format!("setdino {} ingest", env!("CARGO_PKG_VERSION")),
        Some(p) => format!(
            "setdino {} ingest --shard {}/{} (a part: join with `setdino store merge`)",
            env!("CARGO_PKG_VERSION"),
            p.index,
            p.count
        ),
    };
    wo.allow_empty = opts.part.is_some();
    if let Some(n) = opts.cells_per_shard {
        wo.cells_per_shard = n;
    }
    wo
}

/// What the plates added up to.
#[derive(Default)]
struct Totals {
    written: u64,
    skipped_edge: u64,
    tile_reads: u64,
    tiles_cropped: u64,
    warnings: Vec<String>,
    skipped: Vec<Skipped>,
    plates: Vec<serde_json::Value>,
}

/// One plate: passes A (flat-field, range) and B (percentiles) over all its tiles, C (crops) over the
/// tiles the plan crops.
fn ingest_plate(
    plate: &str,
    inputs: &Inputs,
    plan: &Plan,
    opts: &IngestOptions,
    writer: &mut StoreWriter,
    bar: &indicatif::ProgressBar,
    t: &mut Totals,
) -> Result<()> {
    let crop = usize::try_from(opts.crop).context("--crop: too large")?;
    let mut p = Plate::open(plate, &inputs.tiles, &inputs.channels, opts, crop, bar)?;
    p.crop_idx.retain(|&k| plan.crop[k]);
    let a = pass_a(&mut p, opts, bar)?;
    let fields = flat_fields(&p, opts, a.as_ref())?;
    let (hists, bounds) = pass_b(
        &mut p,
        opts,
        a.as_ref(),
        fields.as_deref(),
        bar,
        &mut t.warnings,
    )?;
    let (written, edge) = pass_c(
        &mut p,
        &inputs.cells,
        crop,
        fields.as_deref(),
        &bounds,
        writer,
        bar,
        &mut t.skipped,
    )?;
    t.tile_reads += p.reads;
    t.tiles_cropped += p.crop_idx.len() as u64;
    t.written += written;
    t.skipped_edge += edge;
    if bar.is_hidden() && opts.progress {
        eprintln!(
            "plate {plate}: {} tiles, {written} cells written, {edge} skipped (box leaves tile)",
            p.crop_idx.len()
        );
    }
    t.plates.push(plate_json(
        &p,
        written,
        edge,
        &hists,
        &bounds,
        fields.as_deref(),
    ));
    Ok(())
}

/// report.json of an ingest (or of one job part).
fn report_json(
    opts: &IngestOptions,
    inputs: &Inputs,
    plan: Plan,
    t: Totals,
    secs: f64,
) -> serde_json::Value {
    let mut report = serde_json::json!({
        "command": "ingest",
        "tiles_csv": opts.tiles, "cells_csv": opts.cells,
        "channels": inputs.channels, "crop": opts.crop,
        "illum": illum_name(&opts.illum),
        "illum_estimator": "auto: pixel-wise mean of the plate's tiles, 3× box filter of radius min(H,W)/16 (clamped edges), normalised to mean 1, floored at 1e-3",
        "clip_percentiles": [opts.clip.0, opts.clip.1],
        "tiles": t.tiles_cropped, "tile_reads": t.tile_reads,
        "cells_in_table": inputs.cells.rows, "cells_written": t.written,
        "skipped": {"box_leaves_tile": t.skipped_edge},
        "skipped_cells": t.skipped.iter().map(Skipped::json).collect::<Vec<_>>(),
        "skipped_cells_truncated": t.skipped_edge > t.skipped.len() as u64,
        "plates": t.plates,
        "warnings": t.warnings,
        "seconds": secs, "tiles_per_second": t.tiles_cropped as f64 / secs.max(1e-9),
    });
    if let Some(part) = plan.part {
        report["part"] = part;
    }
    report
}

/// Run the ingest (or one job part of it, `opts.part`); returns the report (also written into the
/// store). Stages: options, input tables, the plan (plates, tiles to crop: [`Plan`]), the store writer,
/// then per plate passes A, B and C ([`ingest_plate`]), then the report and the store's atomic move into
/// place.
pub fn ingest(opts: &IngestOptions) -> Result<serde_json::Value> {
    let t0 = std::time::Instant::now();
    check_options(opts)?;
    let inputs = read_inputs(opts)?;
    let wo = writer_options(opts, &inputs);
    let plan = plan(opts, &inputs, wo.cells_per_shard)?;
    let mut writer = StoreWriter::create(&opts.out, wo)?;
    let bar = progress_bar(opts.progress, plan_reads(&inputs.tiles, &plan));
    let mut totals = Totals::default();
    for plate in &plan.plates {
        ingest_plate(plate, &inputs, &plan, opts, &mut writer, &bar, &mut totals)?;
    }
    bar.finish_and_clear();
    check_skipped(opts, &mut totals)?;
    let report = report_json(opts, &inputs, plan, totals, t0.elapsed().as_secs_f64());
    writer.finish(report.clone())?;
    Ok(report)
}

/// Tile reads the progress bar counts: passes A and B over every tile of a visited plate, C over the
/// cropped ones.
fn plan_reads(tiles: &[TileRow], plan: &Plan) -> u64 {
    let visited = tiles
        .iter()
        .filter(|t| plan.plates.contains(&t.plate))
        .count();
    let cropped = plan.crop.iter().filter(|&&c| c).count();
    (2 * visited + cropped) as u64
}

/// The first row (column) of a crop box of side `crop` centred at ⌊x⌋ = `f`, when the box lies within
/// `0..len`; checked arithmetic, so any centroid is safe.
fn box_start(f: i64, crop: usize, len: usize) -> Option<usize> {
    let half = i64::try_from(crop / 2).ok()?;
    let start = usize::try_from(f.checked_sub(half)?).ok()?;
    (start.checked_add(crop)? <= len).then_some(start)
}

/// Crop every cell of one tile; returns (metadata, crops (N, C, crop, crop), cells skipped at the edge).
fn crop_tile(
    t: &Tile,
    row: &TileRow,
    rows: &[CellRow],
    table: &CellTable,
    crop: usize,
    fields: Option<&[Vec<f32>]>,
    bounds: &[(f64, f64)],
) -> (Vec<CellMeta>, Vec<u16>, Vec<Skipped>) {
    let mut metas = Vec::new();
    let mut out = Vec::new();
    let mut edge = Vec::new();
    for cell in rows {
        let (Some(r0), Some(c0)) = (box_start(cell.fi, crop, t.h), box_start(cell.fj, crop, t.w))
        else {
            edge.push(Skipped {
                line: cell.line,
                unit: table.unit(),
                cell_id: cell.cell_id,
                plate: row.plate.clone(),
                well: row.well.clone(),
                tile: row.tile,
                i: cell.i,
                j: cell.j,
            });
            continue;
        };
        for (ch, p) in t.planes.iter().enumerate() {
            let ff = fields.map(|f| &f[ch]);
            let (lo, hi) = bounds[ch];
            for y in 0..crop {
                let row = (r0 + y) * t.w + c0;
                match p {
                    Pixels::U16(v) => out.extend(
                        (row..row + crop)
                            .map(|q| clip_unorm(corrected(v[q] as f32, ff, q), lo, hi)),
                    ),
                    Pixels::F32(v) => out.extend(
                        (row..row + crop).map(|q| clip_unorm(corrected(v[q], ff, q), lo, hi)),
                    ),
                }
            }
        }
        metas.push(table.meta(row, cell));
    }
    (metas, out, edge)
}

fn progress_bar(on: bool, len: u64) -> indicatif::ProgressBar {
    if !on {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} tile reads, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
