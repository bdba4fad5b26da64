//! The `setdino features` runner: stream the selected cells of a store through [`super::cell_features`] and
//! write `STEM.npy` (float32, N×F, C order) + `STEM.tsv` (cell metadata), or `STEM.parquet` / an AnnData
//! `STEM.zarr` (`--format`), and `STEM.features.tsv` (the columns).
//!
//! Key decision: chunks of cells in store order, rayon inside a chunk, one sequential writer; memory is one
//! chunk of rows, and every file is written to a temp name and renamed into place only when complete.
use super::{cell_features, feature_specs, n_features, Scratch};
use crate::formats::{bare_stem, Format, MatrixWriter};
use crate::store::export::cell_frame;
use crate::store::Store;
use crate::util::atomic::TempFile;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How to run.
#[derive(Clone, Debug)]
pub struct FeatureOptions {
    /// DNA channel by name; `None` picks it as [`dna_channel`] says.
    pub dna_channel: Option<String>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Cells per chunk (rows held in memory at once).
    pub chunk: usize,
    /// Output format of the matrix and its cell table (STEM.features.tsv is written for every format).
    pub format: Format,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        FeatureOptions {
            dna_channel: None,
            progress: false,
            chunk: 4096,
            format: Format::Npy,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct FeatureSummary {
    pub cells: usize,
    pub features: usize,
    pub dna_channel: String,
    /// Non-finite values replaced by 0, per feature (F).
    pub nonfinite: Vec<u64>,
    /// Cells with at least one replaced value.
    pub cells_with_nonfinite: u64,
    /// The matrix output: STEM.npy + STEM.tsv, STEM.parquet or STEM.zarr.
    pub paths: Vec<PathBuf>,
    pub features_tsv: PathBuf,
    pub seconds: f64,
}

/// Index of the DNA channel. `requested`: a channel name (exact, then case-insensitive). Otherwise the one
/// channel named `dna`, `dapi` or `hoechst` (case-insensitive), else the one whose name contains one of
/// them, else channel 0. Two candidates at the same step are an error.
pub fn dna_channel(channels: &[String], requested: Option<&str>) -> Result<usize> {
    if channels.is_empty() {
        bail!("the store has no channels");
    }
    if let Some(r) = requested {
        if let Some(k) = channels.iter().position(|c| c == r) {
            return Ok(k);
        }
        let hits: Vec<usize> = (0..channels.len())
            .filter(|&k| channels[k].eq_ignore_ascii_case(r))
            .collect();
        return match hits.as_slice() {
            [k] => Ok(*k),
            _ => bail!(
                "--dna-channel {r:?} is not a channel of the store; HINT: its channels are {channels:?}"
            ),
        };
    }
    const NAMES: [&str; 3] = ["dna", "dapi", "hoechst"];
    let lower: Vec<String> = channels.iter().map(|c| c.to_ascii_lowercase()).collect();
    let exact: Vec<usize> = (0..channels.len())
        .filter(|&k| NAMES.contains(&lower[k].as_str()))
        .collect();
    let contains: Vec<usize> = (0..channels.len())
        .filter(|&k| NAMES.iter().any(|n| lower[k].contains(n)))
        .collect();
    for hits in [exact, contains] {
        match hits.as_slice() {
            [] => continue,
            [k] => return Ok(*k),
            _ => bail!(
                "several channels look like DNA: {:?}; HINT: choose one with --dna-channel",
                hits.iter().map(|&k| &channels[k]).collect::<Vec<_>>()
            ),
        }
    }
    Ok(0)
}

/// Compute the features of `cells` (store indices, in output order) and write the three files for `stem`
/// (a trailing `.npy`/`.tsv` is dropped). Nothing is left at the final paths if it fails.
pub fn compute_features(
    store: &Store,
    cells: &[u32],
    stem: &Path,
    opts: &FeatureOptions,
) -> Result<FeatureSummary> {
    let t0 = std::time::Instant::now();
    let names = &store.manifest().channels;
    let dna = dna_channel(names, opts.dna_channel.as_deref())?;
    let (c, s) = (store.channels(), store.crop());
    let nf = n_features(c);
    let specs = feature_specs(names);
    debug_assert_eq!(specs.len(), nf);
    let features_tsv = PathBuf::from(format!("{}.features.tsv", bare_stem(stem)));
    let ft = TempFile::new(&features_tsv)?;
    let run = serde_json::json!({
        "command": "features", "setdino": env!("CARGO_PKG_VERSION"), "store": store.dir(),
        "dna_channel": names[dna], "cells": cells.len(), "features": nf,
    });
    let names_f: Vec<String> = specs.iter().map(|sp| sp.name.clone()).collect();
    let mut w = MatrixWriter::create(stem, opts.format, cell_frame(store, cells)?, &names_f, run)?;
    let bar = if opts.progress {
        crate::util::progress::bar(cells.len() as u64, "cells")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut rows = vec![0f32; opts.chunk.max(1) * nf];
    let mut nonfinite = vec![0u64; nf];
    let mut cells_with_nonfinite = 0u64;
    for chunk in cells.chunks(opts.chunk.max(1)) {
        let rows = &mut rows[..chunk.len() * nf];
        rows.par_chunks_mut(nf)
            .zip(chunk.par_iter())
            .try_for_each_init(
                || (Scratch::default(), vec![0f32; store.crop_len()]),
                |(sc, buf), (row, &k)| -> Result<()> {
                    store.crop_f32(k as usize, buf)?;
                    cell_features(row, buf, c, s, dna, sc);
                    Ok(())
                },
            )?;
        for row in rows.chunks_mut(nf) {
            let mut bad = false;
            for (v, n) in row.iter_mut().zip(nonfinite.iter_mut()) {
                if !v.is_finite() {
                    *v = 0.0;
                    *n += 1;
                    bad = true;
                }
            }
            cells_with_nonfinite += u64::from(bad);
        }
        w.write(rows)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    write_feature_table(ft.path(), &specs, &nonfinite)?;
    let paths = w.finish()?;
    ft.commit()?;
    Ok(FeatureSummary {
        cells: cells.len(),
        features: nf,
        dna_channel: names[dna].clone(),
        nonfinite,
        cells_with_nonfinite,
        paths,
        features_tsv,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// `STEM.features.tsv`: each feature's index, name, unit, replaced non-finite count and definition.
fn write_feature_table(path: &Path, specs: &[super::FeatureSpec], nonfinite: &[u64]) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut t = std::io::BufWriter::new(f);
    writeln!(t, "index\tname\tunit\tnonfinite_replaced\tdescription")?;
    for (k, sp) in specs.iter().enumerate() {
        writeln!(
            t,
            "{k}\t{}\t{}\t{}\t{}",
            sp.name, sp.unit, nonfinite[k], sp.description
        )?;
    }
    t.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}
