//! `setdino embed`: per-cell 4×C embeddings (CLS of the last 4 blocks after the final LayerNorm; the
//! teacher by default, as the reference's inference) of a store's cells, streamed in batches to
//! `STEM.npy` (float32, N × 4C) + `STEM.tsv` (the store export's columns), or `STEM.parquet` (the same
//! columns, then `emb0…`) or an AnnData store `STEM.zarr` (`--format`), written under temporary names and
//! renamed at the end so a crash never leaves a file that looks complete.
//!
//! Key decision: the crops get only the normaliser (no augmentation), the full stored crop, as the
//! reference's inference dataset; the normaliser is the one the checkpoint was trained with unless given.
//!
//! Job parts (`--shard I/N`, [`embed_part`]): part I embeds a contiguous slice of the selected cells (in
//! cell order), made of whole batches of the one-process run, to `STEM.part-I-of-N.{npy,tsv}` plus
//! `STEM.part-I-of-N.json` (what was embedded, for the checks of `embed merge`, [`merge`]). Every cell is
//! embedded in the same batch as in one process, so the parts concatenate to its bytes on one backend.
pub mod merge;

use crate::backend::select::{run_on_at, OnBackend};
use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::data::augment::plain_crop;
use crate::data::normalize::{NormKind, Normalizer};
use crate::engine::Engine;
use crate::formats::{bare_stem, numbered, Format, MatrixWriter};
use crate::model::checkpoint::{infer_config, load_state, stored_config, TensorFile};
use crate::store::export::cell_frame;
use crate::store::{CellFilter, Store};
use crate::util::part::JobPart;
use anyhow::{bail, ensure, Context, Result};
use std::path::PathBuf;

/// What to embed and how.
pub struct EmbedOptions {
    pub checkpoint: PathBuf,
    pub store: PathBuf,
    pub out: PathBuf,
    pub filter: CellFilter,
    /// Use the student backbone instead of the teacher.
    pub student: bool,
    pub batch: usize,
    pub backend: String,
    /// GEMM precision: auto (bf16 on cuda, f32 elsewhere), f32 or bf16.
    pub precision: String,
    /// Override the training normaliser (`ntc`, `ntc-2sigma`, `zscore`, `none`).
    pub normalizer: Option<String>,
    /// Heads, for checkpoints without setdino metadata (e.g. a converted reference checkpoint).
    pub num_heads: Option<usize>,
    pub progress: bool,
    /// Output format of the embeddings and their cell table.
    pub format: Format,
}

/// Paths and size of the written embeddings.
#[derive(Clone, Debug)]
pub struct EmbedSummary {
    /// The files (or AnnData store) written: STEM.npy + STEM.tsv, STEM.parquet or STEM.zarr.
    pub paths: Vec<PathBuf>,
    pub cells: usize,
    pub dim: usize,
}

/// Model config and the normaliser recorded in a checkpoint.
pub fn checkpoint_config(
    file: &TensorFile,
    num_heads: Option<usize>,
) -> Result<(ModelConfig, Option<String>)> {
    let norm = file
        .metadata()
        .get("train")
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .and_then(|v| {
            v["extra"]["data"]["normalizer"]
                .as_str()
                .map(|s| s.to_string())
        });
    match stored_config(file)? {
        Some(c) => {
            if let Some(h) = num_heads.filter(|&h| h != c.heads) {
                anyhow::bail!(
                    "--num-heads {h} contradicts {}, whose own model config has model.heads = {}; HINT: drop \
                     --num-heads (it is only for checkpoints without setdino metadata)",
                    file.path().display(),
                    c.heads
                );
            }
            Ok((c, norm))
        }
        None => {
            let heads = num_heads.with_context(|| {
                format!(
                    "{} has no setdino metadata; pass --num-heads (6 for the reference ViT-S/16)",
                    file.path().display()
                )
            })?;
            Ok((infer_config(file, heads, None)?, norm))
        }
    }
}

pub fn embed(opts: EmbedOptions) -> Result<EmbedSummary> {
    embed_part(opts, None)
}

/// [`embed`], or with `part` only that job part of the selected cells (see the module docs); a part is
/// written as `STEM.part-I-of-N.{npy,tsv,json}` (npy format only).
pub fn embed_part(opts: EmbedOptions, part: Option<JobPart>) -> Result<EmbedSummary> {
    let backend = opts.backend.clone();
    let precision = opts.precision.clone();
    run_on_at(&backend, &precision, Job(opts, part))
}

struct Job(EmbedOptions, Option<JobPart>);
impl OnBackend for Job {
    type Out = EmbedSummary;
    fn run<B: Backend>(self, be: B) -> Result<EmbedSummary> {
        embed_on(be, &self.0, self.1)
    }
}

/// The cells of job part `p` of `cells`: whole batches of `batch` cells, a contiguous range of them.
fn part_cells(cells: &[u32], batch: usize, p: JobPart) -> Result<&[u32]> {
    let batches = cells.len().div_ceil(batch);
    if p.count > batches {
        bail!(
            "--shard {}/{}: {} parts, but the {} selected cells make only {batches} batch(es) of --batch {batch};              HINT: use at most {batches} parts, or a smaller --batch",
            p.index,
            p.count,
            p.count,
            cells.len()
        );
    }
    let r = p.range(batches);
    Ok(&cells[r.start * batch..(r.end * batch).min(cells.len())])
}

/// Where part `p` of an output stem goes: `STEM.part-I-of-N` (the format's suffixes follow).
pub fn part_stem(out: &std::path::Path, p: JobPart) -> PathBuf {
    PathBuf::from(format!("{}.{}", bare_stem(out), p.tag()))
}

fn embed_on<B: Backend>(be: B, o: &EmbedOptions, part: Option<JobPart>) -> Result<EmbedSummary> {
    ensure!(o.batch >= 1, "--batch {}: must be ≥ 1", o.batch);
    let file = TensorFile::open(&o.checkpoint)?;
    let (mut cfg, trained_norm) = checkpoint_config(&file, o.num_heads)?;
    let store = Store::open(&o.store)?;
    ensure!(
        store.channels() == cfg.in_chans,
        "{} has {} channels but the model was trained on {}",
        o.store.display(),
        store.channels(),
        cfg.in_chans
    );
    let side = store.crop();
    ensure!(
        side % cfg.patch == 0,
        "store crops of {side} px are not a multiple of the patch size {}",
        cfg.patch
    );
    cfg.global_size = side;
    cfg.local_size = (side / 2).max(cfg.patch) / cfg.patch * cfg.patch;
    cfg.drop_path = 0.0;
    let (state, _) = load_state(&file, &cfg)?;
    let norm_name = o
        .normalizer
        .clone()
        .or(trained_norm)
        .unwrap_or_else(|| "zscore".into());
    let norm = Normalizer::new(norm_name.parse::<NormKind>()?, &store);
    let selected = o.filter.select(&store)?;
    ensure!(
        !selected.is_empty(),
        "no cells selected in {}",
        o.store.display()
    );
    let (cells, out) = match part {
        None => (&selected[..], o.out.clone()),
        Some(p) => {
            ensure!(
                o.format == Format::Npy,
                "--shard with --format {}: job parts are written as npy + tsv; HINT: drop --format (`embed merge` \
                 joins the parts)",
                o.format.name()
            );
            (part_cells(&selected, o.batch, p)?, part_stem(&o.out, p))
        }
    };
    norm.check_batches(cells.iter().map(|&k| store.record(k as usize).batch))?;
    let mut eng = Engine::from_host(be, cfg.clone(), &state)?;
    let dim = cfg.depth.min(4) * cfg.dim;
    let mut run = serde_json::json!({
        "command": "embed", "setdino": env!("CARGO_PKG_VERSION"),
        "checkpoint": o.checkpoint, "store": o.store, "backbone": if o.student { "student" } else { "teacher" },
        "normalizer": norm_name, "cells": cells.len(), "dim": dim,
        "layers": "CLS token of the last 4 blocks after the final LayerNorm, concatenated",
    });
    if let Some(p) = part {
        run["part"] = serde_json::json!({"index": p.index, "count": p.count, "selected": selected.len(),
            "batch": o.batch, "filter": o.filter});
    }
    let mut w = MatrixWriter::create(
        &out,
        o.format,
        cell_frame(&store, cells)?,
        &numbered("emb", dim),
        run.clone(),
    )?;
    let bar = if o.progress {
        crate::util::progress::bar(cells.len() as u64, "cells")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let cl = store.crop_len();
    let bs = o.batch;
    for chunk in cells.chunks(bs) {
        let mut host = vec![0f32; chunk.len() * cl];
        use rayon::prelude::*;
        host.par_chunks_mut(cl)
            .zip(chunk.par_iter())
            .try_for_each(|(buf, &k)| plain_crop(&store, k as usize, &norm, buf))?;
        let imgs = eng.be.upload(&host)?;
        let (emb, width) = eng.embed(&imgs, chunk.len(), side, !o.student)?;
        ensure!(width == dim, "embedding width {width} != {dim}");
        if let Some(q) = emb.iter().position(|x| !x.is_finite()) {
            let bad = emb.iter().filter(|x| !x.is_finite()).count();
            anyhow::bail!(
                "{}: the embedding of cell {} is non-finite ({bad} non-finite values in this batch of {} cells); \
                 nothing was written; HINT: check the checkpoint and the store (`setdino store verify`)",
                o.checkpoint.display(),
                chunk[q / dim],
                chunk.len()
            );
        }
        w.write(&emb)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let mut paths = w.finish()?;
    if part.is_some() {
        let json = PathBuf::from(format!("{}.json", bare_stem(&out)));
        crate::util::atomic::write_atomic(&json, &serde_json::to_vec_pretty(&run)?)?;
        paths.push(json);
    }
    Ok(EmbedSummary {
        paths,
        cells: cells.len(),
        dim,
    })
}
