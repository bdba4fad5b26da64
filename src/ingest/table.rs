//! Parsing of the two ingest tables: tiles.csv (`plate,well,tile,path` or `plate,well,tile,path_<channel>…`;
//! `path` names a multi-page TIFF or an OME-Zarr image directory) and the cell table, CSV/TSV or Parquet
//! (`plate,well,tile,cell_id,i,j,sgRNA,gene` plus any extra columns, kept as metadata; `--columns` renames).
//!
//! Key decision: errors name the file, the 1-based line (header = line 1) and the column; relative TIFF
//! paths are resolved against the directory of tiles.csv, so a screen directory can be moved as a whole
//! (falling back to the working directory when only that resolves).
use crate::formats::table::{ColumnMap, Numbering, Table};
use crate::store::CellMeta;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where a tile's channels are.
#[derive(Clone, Debug, PartialEq)]
pub enum TilePaths {
    /// One multi-page TIFF, one page per channel in channel order.
    MultiPage(PathBuf),
    /// One single-page TIFF per channel, in channel order.
    PerChannel(Vec<PathBuf>),
    /// An OME-Zarr image group (level 0; channels by omero label, else in order).
    OmeZarr(PathBuf),
}

/// A row of tiles.csv.
#[derive(Clone, Debug, PartialEq)]
pub struct TileRow {
    pub plate: String,
    pub well: String,
    pub tile: u32,
    pub paths: TilePaths,
    /// Line in tiles.csv.
    pub line: usize,
}

impl TileRow {
    /// The first file of the tile (for messages).
    pub fn first_path(&self) -> &Path {
        match &self.paths {
            TilePaths::MultiPage(p) | TilePaths::OmeZarr(p) => p,
            TilePaths::PerChannel(v) => &v[0],
        }
    }
}

fn header_pos(path: &Path, header: &[String], name: &str, expect: &str) -> Result<usize> {
    header.iter().position(|h| h == name).with_context(|| {
        format!(
            "{}: no column {name:?} (columns: {header:?}); HINT: expected {expect}",
            path.display()
        )
    })
}

/// `unit` is `line` (text tables) or `row` (Parquet).
fn parse_u32_at(path: &Path, unit: &str, line: usize, col: &str, v: &str) -> Result<u32> {
    v.trim().parse::<u32>().with_context(|| {
        format!(
            "{}: {unit} {line}, column {col}: {v:?} is not a non-negative integer",
            path.display()
        )
    })
}

/// Read tiles.csv; `channels` (from `--channels`) fixes the channel order; returns the rows and the channel
/// names (from `path_<channel>` columns, `--channels`, or `ch0…` for multi-page files when not given).
pub fn read_tiles(
    path: &Path,
    channels: Option<&[String]>,
) -> Result<(Vec<TileRow>, Option<Vec<String>>)> {
    const EXPECT: &str = "plate,well,tile,path or plate,well,tile,path_<channel>…";
    let src = Table::open(path, &ColumnMap::default())?;
    let header = src.header.clone();
    let numbering = src.numbering;
    let unit = numbering.unit();
    let (ip, iw, it) = (
        header_pos(path, &header, "plate", EXPECT)?,
        header_pos(path, &header, "well", EXPECT)?,
        header_pos(path, &header, "tile", EXPECT)?,
    );
    let base = path.parent().unwrap_or(Path::new("."));
    let per_channel: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter_map(|(k, h)| h.strip_prefix("path_").map(|c| (k, c.to_string())))
        .collect();
    let single = header.iter().position(|h| h == "path");
    let (layout, names): (Vec<usize>, Option<Vec<String>>) = match (single, per_channel.is_empty())
    {
        (Some(k), true) => (vec![k], channels.map(|c| c.to_vec())),
        (None, false) => {
            let cols: Vec<usize> = match channels {
                None => per_channel.iter().map(|x| x.0).collect(),
                Some(cs) => cs
                    .iter()
                    .map(|c| {
                        per_channel.iter().find(|x| &x.1 == c).map(|x| x.0).with_context(|| {
                            format!("{}: no column path_{c} for channel {c:?} of --channels; HINT: columns are {header:?}", path.display())
                        })
                    })
                    .collect::<Result<_>>()?,
            };
            let names = cols
                .iter()
                .map(|&k| header[k]["path_".len()..].to_string())
                .collect();
            (cols, Some(names))
        }
        (Some(_), false) => bail!(
            "{}: has both `path` and `path_<channel>` columns; HINT: use one layout, {EXPECT}",
            path.display()
        ),
        (None, true) => bail!(
            "{}: no `path` or `path_<channel>` column; HINT: expected {EXPECT}",
            path.display()
        ),
    };
    let mut rows = Vec::new();
    let mut seen: HashMap<(String, String, u32), usize> = HashMap::new();
    for rec in src.records() {
        let (k, rec) = rec?;
        let line = numbering.number(k);
        let get = |c: usize| rec.get(c).unwrap_or("").trim().to_string();
        let resolve = |c: usize| -> Result<PathBuf> {
            let v = get(c);
            if v.is_empty() {
                bail!(
                    "{}: {unit} {line}, column {}: empty path",
                    path.display(),
                    header[c]
                );
            }
            let p = PathBuf::from(&v);
            // Relative paths: from the directory of tiles.csv, else (if only that exists) from the
            // working directory.
            Ok(
                if p.is_absolute() || (!base.join(&p).exists() && p.exists()) {
                    p
                } else {
                    base.join(p)
                },
            )
        };
        let paths = if single.is_some() {
            let p = resolve(layout[0])?;
            if crate::formats::ome_zarr::is_ome_zarr(&p) {
                TilePaths::OmeZarr(p)
            } else {
                TilePaths::MultiPage(p)
            }
        } else {
            TilePaths::PerChannel(layout.iter().map(|&c| resolve(c)).collect::<Result<_>>()?)
        };
        let files: Vec<&PathBuf> = match &paths {
            TilePaths::MultiPage(p) => vec![p],
            TilePaths::PerChannel(v) => v.iter().collect(),
            TilePaths::OmeZarr(_) => Vec::new(),
        };
        for f in files {
            if !f.is_file() {
                bail!(
                    "{}: {unit} {line}: TIFF {} does not exist (nor is it an OME-Zarr image directory); HINT: relative \
                     paths are taken from the directory of tiles.csv (or the working directory)",
                    path.display(),
                    f.display()
                );
            }
        }
        let row = TileRow {
            plate: get(ip),
            well: get(iw),
            tile: parse_u32_at(path, unit, line, "tile", &get(it))?,
            paths,
            line,
        };
        if let Some(prev) = seen.insert((row.plate.clone(), row.well.clone(), row.tile), line) {
            bail!(
                "{}: {unit} {line}: tile ({}, {}, {}) already listed on {unit} {prev}",
                path.display(),
                row.plate,
                row.well,
                row.tile
            );
        }
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("{}: no tiles listed", path.display());
    }
    Ok((rows, names))
}

/// A row of cells.csv, compact (about 70 bytes plus extra columns): plate, well and tile are those of its
/// tile row; gene and sgRNA are ids into [`CellTable`]'s dictionaries.
#[derive(Clone, Debug)]
pub struct CellRow {
    pub cell_id: u64,
    /// Centroid as written, for the index.
    pub i: f32,
    pub j: f32,
    /// ⌊i⌋ and ⌊j⌋, taken from the f64 value as written (the f32 above may round up across an integer).
    pub fi: i64,
    pub fj: i64,
    pub gene: u32,
    pub sgrna: u32,
    /// Line in cells.csv (header = line 1), or 1-based row of a Parquet table.
    pub line: u32,
    pub extra: Vec<String>,
}

/// cells.csv grouped by tile (index into the tile rows).
#[derive(Clone, Debug, Default)]
pub struct CellTable {
    pub by_tile: Vec<Vec<CellRow>>,
    pub genes: Vec<String>,
    pub sgrnas: Vec<String>,
    pub extra_columns: Vec<String>,
    pub rows: usize,
    /// How `CellRow::line` counts (text lines or Parquet rows); None for a table built in memory.
    pub numbering: Option<Numbering>,
}

impl CellTable {
    /// `line` or `row`: the unit of [`CellRow::line`].
    pub fn unit(&self) -> &'static str {
        self.numbering.unwrap_or(Numbering::Lines).unit()
    }
}

impl CellTable {
    /// The store metadata of a cell of tile `t`.
    pub fn meta(&self, t: &TileRow, c: &CellRow) -> CellMeta {
        CellMeta {
            plate: t.plate.clone(),
            well: t.well.clone(),
            tile: t.tile,
            cell_id: c.cell_id,
            i: c.i,
            j: c.j,
            gene: self.genes[c.gene as usize].clone(),
            sgrna: self.sgrnas[c.sgrna as usize].clone(),
            extra: c.extra.clone(),
        }
    }
}

fn intern(dict: &mut Vec<String>, ids: &mut HashMap<String, u32>, s: &str) -> u32 {
    if let Some(&k) = ids.get(s) {
        return k;
    }
    // Ids are u32: at most one per cells.csv line, whose count is checked to fit.
    let k = u32::try_from(dict.len()).unwrap_or(u32::MAX);
    dict.push(s.to_string());
    ids.insert(s.to_string(), k);
    k
}

/// Largest |centroid| accepted (2^32: TIFF dimensions are u32).
const MAX_CENTROID: f64 = 4_294_967_296.0;

/// ⌊x⌋ of a centroid already checked against [`MAX_CENTROID`].
fn floor_i64(x: f64) -> i64 {
    debug_assert!(x.abs() < MAX_CENTROID);
    // In range by the check of the caller, so the conversion is exact.
    x.floor() as i64
}

/// Read the cell table (CSV/TSV or Parquet, columns renamed by `map`) and group the cells by tile. A cell
/// in a tile not in tiles.csv, or with a non-finite centroid, is an error naming the line (row for Parquet).
pub fn read_cells(path: &Path, tiles: &[TileRow], map: &ColumnMap) -> Result<CellTable> {
    const EXPECT: &str = "plate,well,tile,cell_id,i,j,sgRNA,gene";
    let src = Table::open(path, map)?;
    let header = src.header.clone();
    let numbering = src.numbering;
    let unit = numbering.unit();
    let names = [
        "plate", "well", "tile", "cell_id", "i", "j", "sgRNA", "gene",
    ];
    let pos: Vec<usize> = names
        .iter()
        .map(|n| src.column(n, EXPECT))
        .collect::<Result<_>>()?;
    let extra: Vec<usize> = (0..header.len()).filter(|k| !pos.contains(k)).collect();
    let index: HashMap<(&str, &str, u32), usize> = tiles
        .iter()
        .enumerate()
        .map(|(k, t)| ((t.plate.as_str(), t.well.as_str(), t.tile), k))
        .collect();
    let mut table = CellTable {
        by_tile: vec![Vec::new(); tiles.len()],
        numbering: Some(numbering),
        ..Default::default()
    };
    let (mut gene_ids, mut sgrna_ids) = (HashMap::new(), HashMap::new());
    // (tile row, cell_id) → line of its first row.
    let mut seen: HashMap<(usize, u64), usize> = HashMap::new();
    for rec in src.records() {
        let (k, rec) = rec?;
        let line = numbering.number(k);
        let get = |c: usize| rec.get(pos[c]).unwrap_or("").trim();
        let coord = |c: usize| -> Result<f64> {
            let v = get(c);
            let x: f64 = v.parse().with_context(|| {
                format!(
                    "{}: {unit} {line}, column {}: {v:?} is not a number",
                    path.display(),
                    names[c]
                )
            })?;
            if !x.is_finite() {
                bail!(
                    "{}: {unit} {line}, column {}: centroid {v:?} is not finite; expected a pixel coordinate",
                    path.display(),
                    names[c]
                );
            }
            // TIFF dimensions are below 2^32: a centroid beyond ±2^32 cannot lie in any tile, and the range
            // keeps ⌊x⌋ exact in i64 arithmetic and the value finite as the index's f32.
            if x.abs() >= MAX_CENTROID {
                bail!(
                    "{}: {unit} {line}, column {}: centroid {v:?} is out of range; expected a pixel coordinate with \
                     |value| < 2^32",
                    path.display(),
                    names[c]
                );
            }
            Ok(x)
        };
        let tile = parse_u32_at(path, unit, line, "tile", get(2))?;
        let cell_id = get(3).parse::<u64>().with_context(|| {
            format!(
                "{}: {unit} {line}, column cell_id: {:?} is not a non-negative integer",
                path.display(),
                get(3)
            )
        })?;
        let Some(&t) = index.get(&(get(0), get(1), tile)) else {
            bail!(
                "{}: {unit} {line}: cell {cell_id} is in tile (plate {:?}, well {:?}, tile {tile}), which tiles.csv does not \
                 list; HINT: every cell's plate, well and tile must match a row of tiles.csv",
                path.display(),
                get(0),
                get(1)
            );
        };
        let (i, j) = (coord(4)?, coord(5)?);
        if let Some(prev) = seen.insert((t, cell_id), line) {
            bail!(
                "{}: {unit} {line}: cell (plate {:?}, well {:?}, tile {tile}, cell_id {cell_id}) is already listed on \
                 {unit} {prev}; HINT: each cell must appear once (remove the repeated row, or give the cells distinct \
                 cell_id values)",
                path.display(),
                get(0),
                get(1)
            );
        }
        let sgrna = intern(&mut table.sgrnas, &mut sgrna_ids, get(6));
        let gene = intern(&mut table.genes, &mut gene_ids, get(7));
        table.by_tile[t].push(CellRow {
            cell_id,
            i: i as f32,
            j: j as f32,
            fi: floor_i64(i),
            fj: floor_i64(j),
            gene,
            sgrna,
            line: u32::try_from(line).with_context(|| {
                format!("{}: {unit} {line}: more than 2^32 rows", path.display())
            })?,
            extra: extra
                .iter()
                .map(|&c| rec.get(c).unwrap_or("").to_string())
                .collect(),
        });
        table.rows += 1;
    }
    table.extra_columns = extra.iter().map(|&k| header[k].clone()).collect();
    Ok(table)
}
