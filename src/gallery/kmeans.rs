//! `--by cluster`: per-cell features (`STEM.npy` + `STEM.tsv` with its `cell` column, or setdino's
//! `STEM.parquet` / AnnData `STEM.zarr`) → a deterministic
//! k-means → one group per cluster, showing the cells nearest its centroid.
//!
//! Key decisions:
//! - Columns are standardised (mean 0, s.d. 1 over the table's cells; constant columns become 0) so no
//!   feature dominates by its unit; distances are squared Euclidean in that space.
//! - k-means++ seeding and Lloyd iterations (at most [`MAX_ITERS`], until no assignment changes) run on at
//!   most [`FIT_MAX`] rows (a seeded sample of the table when it is larger), then every row is assigned
//!   to its nearest centroid. Draws come from the project's keyed ChaCha8 streams
//!   (`data::rng::stream(seed, DOMAIN_KMEANS, …)`); sums run in row order in f64; so a run is
//!   reproducible bit for bit at any thread count. An empty cluster takes the row farthest from its
//!   centroid.
//! - Clusters are numbered 1 … K by size (largest first; ties by seeding order); a cluster's gallery
//!   shows its `n` cells nearest the centroid, nearest first (ties by row).
//! - The table must describe this store's cells: every `cell` must exist, and where the table has
//!   `plate`, `well` or `gene` columns they must match the store's record of that cell.
use super::groups::Group;
use crate::eval::io::{stem_paths, Features};
use crate::store::Store;
use anyhow::{bail, ensure, Context, Result};
use rand::Rng;
use rayon::prelude::*;
use std::path::Path;

/// Random-stream domain of the clustering ("KMNS").
pub const DOMAIN_KMEANS: u64 = 0x4b4d_4e53;
/// Most rows the centroids are fitted on.
pub const FIT_MAX: usize = 10_000;
/// Most Lloyd iterations.
pub const MAX_ITERS: usize = 100;

/// A features table matched to a store: the matrix and the store cell of each row.
pub struct FeatureCells {
    pub features: Features,
    /// (N) store cell index of each row.
    pub cells: Vec<u32>,
}

/// Reads the `cell` column of `STEM.tsv` (None when the table has no such column) and checks each row's
/// cell, plate, well and gene (the columns present) against `store`.
pub fn read_cells(tsv: &Path, store: &Store) -> Result<Option<Vec<u32>>> {
    let text = std::fs::read_to_string(tsv).with_context(|| {
        format!(
            "reading {}; HINT: --features STEM expects STEM.npy and STEM.tsv (or STEM.parquet / STEM.zarr)",
            tsv.display()
        )
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        bail!("{}: empty table", tsv.display());
    };
    let cols: Vec<String> = header.split('\t').map(|c| c.trim().to_string()).collect();
    let rows = lines.map(|(k, l)| (k + 1, l.split('\t').map(|f| f.trim().to_string()).collect()));
    match_cells(&tsv.display().to_string(), "line", &cols, rows, store)
}

/// The `cell` column of a table given as a header and (number, fields) rows (None when it has no such
/// column), each row's cell, plate, well and gene (the columns present) checked against `store`; `unit`
/// names the numbering in messages (`line`, `row`).
fn match_cells(
    p: &str,
    unit: &str,
    cols: &[String],
    rows: impl Iterator<Item = (usize, Vec<String>)>,
    store: &Store,
) -> Result<Option<Vec<u32>>> {
    let find = |n: &str| cols.iter().position(|c| c == n);
    let Some(ic) = find("cell") else {
        return Ok(None);
    };
    let m = store.manifest();
    let checks = [("plate", &m.plates), ("well", &m.wells), ("gene", &m.genes)];
    let mut cells = Vec::new();
    for (lno, f) in rows {
        let raw = f.get(ic).map_or("", String::as_str);
        let k: u32 = raw.parse().with_context(|| {
            format!("{p}: {unit} {lno}, column `cell`: {raw:?} is not a cell index")
        })?;
        ensure!(
            (k as usize) < store.len(),
            "{p}: {unit} {lno}: cell {k}, but the store {} has {} cells; HINT: the features were not computed \
             from this store",
            store.dir().display(),
            store.len()
        );
        let r = store.record(k as usize);
        for (name, dict) in checks {
            let Some(i) = find(name) else { continue };
            let id = match name {
                "plate" => r.plate,
                "well" => r.well,
                _ => r.gene,
            };
            let want = &dict[id as usize];
            let got = f.get(i).map_or("", String::as_str);
            ensure!(
                got == want,
                "{p}: {unit} {lno}: cell {k} has {name} {got:?}, the store {} says {want:?}; HINT: the features \
                 rows do not match the store (computed from another store?)",
                store.dir().display()
            );
        }
        cells.push(k);
    }
    Ok(Some(cells))
}

impl FeatureCells {
    /// Opens `STEM.npy` and `STEM.tsv` (or setdino's STEM.parquet / STEM.zarr) and matches them to `store`.
    pub fn open(stem: &Path, store: &Store) -> Result<FeatureCells> {
        if let Some(m) = crate::formats::read_matrix(stem)? {
            let p = m.path.display().to_string();
            let features = Features::from_vec(m.x, m.n, m.d);
            let numbered = m.rows.into_iter().enumerate().map(|(k, r)| (k + 1, r));
            let cells = match_cells(&p, "row", &m.header, numbered, store)?
                .with_context(|| format!("{p}: no `cell` column (AnnData: obs index)"))?;
            ensure!(
                features.n > 0 && features.d > 0,
                "{p}: no cells or no features"
            );
            return Ok(FeatureCells { features, cells });
        }
        let (npy, tsv) = stem_paths(stem);
        let features = Features::open(&npy)?;
        let cells = read_cells(&tsv, store)?.with_context(|| {
            format!(
                "{}: no `cell` column; HINT: --by cluster needs the store cell index of each row, as \
                 `setdino embed` and `setdino features` write it",
                tsv.display()
            )
        })?;
        ensure!(
            cells.len() == features.n,
            "{} has {} rows but {} has {} cells; HINT: the features rows do not match their table",
            npy.display(),
            features.n,
            tsv.display(),
            cells.len()
        );
        ensure!(
            features.n > 0 && features.d > 0,
            "{}: no cells or no features",
            npy.display()
        );
        Ok(FeatureCells { features, cells })
    }
}

/// Column means and standard deviations (population) over all rows, in f64.
fn column_stats(f: &Features) -> Result<(Vec<f64>, Vec<f64>)> {
    let (n, d) = (f.n, f.d);
    let mut row = vec![0f64; d];
    let (mut sum, mut sq) = (vec![0f64; d], vec![0f64; d]);
    for i in 0..n {
        f.row_into(i, &mut row)?;
        for ((s, q), &v) in sum.iter_mut().zip(&mut sq).zip(&row) {
            *s += v;
            *q += v * v;
        }
    }
    let nf = n as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / nf).collect();
    let sd = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / nf - m * m).max(0.0).sqrt())
        .collect();
    Ok((mean, sd))
}

/// Row `i` standardised into `out` ((D) f64).
fn standard_row(f: &Features, i: usize, mean: &[f64], sd: &[f64], out: &mut [f64]) -> Result<()> {
    f.row_into(i, out)?;
    for ((v, m), s) in out.iter_mut().zip(mean).zip(sd) {
        *v = if *s > 1e-12 { (*v - m) / s } else { 0.0 };
    }
    Ok(())
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index and squared distance of the nearest of `k` centroids (lowest index on ties).
fn nearest(x: &[f64], cent: &[f64], d: usize) -> (usize, f64) {
    let mut best = (0usize, f64::INFINITY);
    for (c, mu) in cent.chunks_exact(d).enumerate() {
        let e = dist2(x, mu);
        if e < best.1 {
            best = (c, e);
        }
    }
    best
}

/// k-means++ seeding on rows x: (m, d).
fn seed_centroids(x: &[f64], d: usize, k: usize, seed: u64) -> Vec<f64> {
    let m = x.len() / d;
    let mut rng = crate::data::rng::stream(seed, DOMAIN_KMEANS, &[1]);
    let first = rng.random_range(0..m);
    let mut cent = x[first * d..(first + 1) * d].to_vec();
    let mut best: Vec<f64> = x.chunks_exact(d).map(|r| dist2(r, &cent)).collect();
    while cent.len() < k * d {
        let total: f64 = best.iter().sum();
        let pick = if total > 0.0 {
            let t = rng.random::<f64>() * total;
            let mut acc = 0.0;
            best.iter().position(|&b| {
                acc += b;
                acc > t
            })
        } else {
            None
        };
        // All rows coincide with a centroid (or rounding ran past the end): take the farthest row.
        let c = pick.unwrap_or_else(|| argmax(&best));
        let mu = x[c * d..(c + 1) * d].to_vec();
        for (b, r) in best.iter_mut().zip(x.chunks_exact(d)) {
            *b = b.min(dist2(r, &mu));
        }
        cent.extend_from_slice(&mu);
    }
    cent
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Lloyd iterations on rows x: (m, d) from `cent`; returns the final centroids.
fn lloyd(x: &[f64], d: usize, k: usize, mut cent: Vec<f64>) -> Vec<f64> {
    let mut assign: Vec<usize> = vec![usize::MAX; x.len() / d];
    for _ in 0..MAX_ITERS {
        let near: Vec<(usize, f64)> = x
            .par_chunks_exact(d)
            .map(|r| nearest(r, &cent, d))
            .collect();
        let changed = near.iter().zip(&assign).any(|(n, &a)| n.0 != a);
        assign = near.iter().map(|n| n.0).collect();
        if !changed {
            break;
        }
        let mut sum = vec![0f64; k * d];
        let mut count = vec![0usize; k];
        for (r, &a) in x.chunks_exact(d).zip(&assign) {
            count[a] += 1;
            for (s, v) in sum[a * d..(a + 1) * d].iter_mut().zip(r) {
                *s += v;
            }
        }
        let far: Vec<f64> = near.iter().map(|n| n.1).collect();
        for c in 0..k {
            if count[c] == 0 {
                let i = argmax(&far);
                sum[c * d..(c + 1) * d].copy_from_slice(&x[i * d..(i + 1) * d]);
                count[c] = 1;
            }
            let nc = count[c] as f64;
            for (mu, s) in cent[c * d..(c + 1) * d]
                .iter_mut()
                .zip(&sum[c * d..(c + 1) * d])
            {
                *mu = s / nc;
            }
        }
    }
    cent
}

/// The result: per row its cluster (0-based, in size order) and squared distance to the centroid.
pub struct Clustering {
    pub k: usize,
    pub assign: Vec<usize>,
    pub dist: Vec<f64>,
}

/// Clusters the rows of `fc` into `k` groups (module docs).
pub fn cluster(fc: &FeatureCells, k: usize, seed: u64) -> Result<Clustering> {
    let f = &fc.features;
    let (n, d) = (f.n, f.d);
    ensure!(k >= 1, "--clusters must be at least 1");
    ensure!(
        k <= n,
        "--clusters {k}, but the features have only {n} cells; HINT: use fewer clusters"
    );
    let (mean, sd) = column_stats(f)?;
    let fit_rows = super::groups::sample(
        &(0..u32::try_from(n).unwrap_or(u32::MAX)).collect::<Vec<_>>(),
        FIT_MAX,
        seed,
        "kmeans:fit",
    );
    let mut x = vec![0f64; fit_rows.len() * d];
    for (out, &i) in x.chunks_exact_mut(d).zip(&fit_rows) {
        standard_row(f, i as usize, &mean, &sd, out)?;
    }
    let cent = lloyd(&x, d, k, seed_centroids(&x, d, k, seed));
    drop(x);
    let near: Vec<(usize, f64)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut row = vec![0f64; d];
            standard_row(f, i, &mean, &sd, &mut row).map(|_| nearest(&row, &cent, d))
        })
        .collect::<Result<_>>()?;
    // Relabel by size, largest first (ties by centroid index).
    let mut size = vec![0usize; k];
    near.iter().for_each(|r| size[r.0] += 1);
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by_key(|&c| (std::cmp::Reverse(size[c]), c));
    let mut rank = vec![0usize; k];
    for (r, &c) in order.iter().enumerate() {
        rank[c] = r;
    }
    Ok(Clustering {
        k,
        assign: near.iter().map(|r| rank[r.0]).collect(),
        dist: near.iter().map(|r| r.1).collect(),
    })
}

/// The 3 most frequent of `names[id(cell)]` over `cells`, e.g. `ACTB 40 %, nontargeting 12 %`.
fn most_frequent(cells: &[u32], names: &[String], id: impl Fn(u32) -> u32) -> String {
    let mut count = vec![0usize; names.len()];
    for &k in cells {
        count[id(k) as usize] += 1;
    }
    let mut ids: Vec<usize> = (0..names.len()).filter(|&g| count[g] > 0).collect();
    ids.sort_by_key(|&g| (std::cmp::Reverse(count[g]), g));
    let total = cells.len().max(1) as f64;
    let parts: Vec<String> = ids
        .iter()
        .take(3)
        .map(|&g| format!("{} {:.0} %", names[g], 100.0 * count[g] as f64 / total))
        .collect();
    parts.join(", ")
}

/// A cluster's most frequent genes and wells (a cluster of one well is a batch effect).
fn composition(store: &Store, cells: &[u32]) -> String {
    let m = store.manifest();
    let batches: Vec<String> = (0..m.batches.len())
        .map(|b| m.batch_name(u32::try_from(b).unwrap_or(u32::MAX)))
        .collect();
    format!(
        "Most frequent genes: {}. Most frequent wells: {}.",
        most_frequent(cells, &m.genes, |k| store.record(k as usize).gene),
        most_frequent(cells, &batches, |k| store.record(k as usize).batch)
    )
}

/// `--by cluster`: one group per cluster, its `n` cells nearest the centroid (nearest first).
pub fn by_cluster(store: &Store, stem: &Path, k: usize, n: usize, seed: u64) -> Result<Vec<Group>> {
    let fc = FeatureCells::open(stem, store)?;
    let cl = cluster(&fc, k, seed)?;
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); cl.k];
    for (i, &c) in cl.assign.iter().enumerate() {
        rows[c].push(i);
    }
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(c, mut members)| {
            let all: Vec<u32> = members.iter().map(|&i| fc.cells[i]).collect();
            members.sort_by(|&a, &b| cl.dist[a].total_cmp(&cl.dist[b]).then(a.cmp(&b)));
            Group {
                kind: "cluster",
                name: format!("{}", c + 1),
                total: members.len(),
                shown: members.iter().take(n).map(|&i| fc.cells[i]).collect(),
                how: format!("k-means, k = {}, nearest the centroid first", cl.k),
                note: composition(store, &all),
            }
        })
        .collect())
}
