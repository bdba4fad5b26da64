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

use crate::backend::gpu::cuda::Cuda;
use crate::backend::gpu::simt::Simt;
use crate::backend::gpu::GpuBackend;
use crate::backend::select::{decide, precision_for, run_on_at, Choice, OnBackend};
use crate::backend::Backend;
use crate::config::ModelConfig;
use crate::data::augment::plain_view;
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
    /// Side in pixels the crops are resized to before the network (nearest, the whole crop): `None` = the
    /// checkpoint's global training view (`model.global_size`, the scale the model learned cells at; the
    /// store's crop side for a checkpoint without setdino metadata).
    pub input_size: Option<usize>,
    /// Devices to embed on, batches in turn: CUDA ordinals (default: every visible GPU), or that many
    /// emulated devices on simt; `None` elsewhere (one engine).
    pub devices: Option<Vec<usize>>,
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
/// written as `STEM.part-I-of-N.{npy,tsv,json}` (npy format only). On CUDA every visible GPU (or
/// `devices`) embeds whole batches in turn; the files are the same whatever the number of devices.
pub fn embed_part(opts: EmbedOptions, part: Option<JobPart>) -> Result<EmbedSummary> {
    let (choice, _) = decide(&opts.backend)?;
    let prec = precision_for(&choice, &opts.precision)?;
    match (choice, opts.devices.clone()) {
        (Choice::Cuda, devices) => {
            let devices = match devices {
                Some(d) => d,
                None => (0..visible_gpus()?).collect(),
            };
            let make = |d: usize| -> Result<GpuBackend<Cuda>> {
                Ok(GpuBackend::with_precision(
                    Cuda::new(d).with_context(|| format!("--devices: GPU {d}"))?,
                    prec,
                ))
            };
            embed_devices(&make, &devices, &opts, part)
        }
        (Choice::Simt, Some(devices)) => {
            // Emulated devices: how the multi-device path is tested without GPUs.
            let make = |_: usize| Ok(GpuBackend::with_precision(Simt::new(), prec));
            embed_devices(&make, &devices, &opts, part)
        }
        (Choice::Cpu, Some(d)) if d.len() > 1 => bail!(
            "--devices {d:?} with the cpu backend: the CPU reference already uses every core in one engine; HINT: drop --devices (it is for --backend cuda, or simt to test)"
        ),
        _ => {
            let backend = opts.backend.clone();
            let precision = opts.precision.clone();
            run_on_at(&backend, &precision, Job(opts, part))
        }
    }
}

/// How many CUDA devices this process sees (`CUDA_VISIBLE_DEVICES` applies).
fn visible_gpus() -> Result<usize> {
    crate::backend::gpu::cuda::probe(0).map_err(|e| anyhow::anyhow!(e))?;
    let n = cudarc::driver::CudaContext::device_count()
        .map_err(|e| anyhow::anyhow!("counting CUDA devices: {e:?}"))?;
    Ok(usize::try_from(n).unwrap_or(0).max(1))
}

struct Job(EmbedOptions, Option<JobPart>);
impl OnBackend for Job {
    type Out = EmbedSummary;
    fn run<B: Backend>(self, be: B) -> Result<EmbedSummary> {
        let plan = Plan::new(&self.0)?;
        let mut eng = Engine::from_host(be, plan.cfg.clone(), &plan.state)?;
        plan.write(&self.0, self.1, |cells, sink| {
            for chunk in cells.chunks(self.0.batch) {
                sink(chunk, plan.embed_batch(&mut eng, chunk, &self.0)?)?;
            }
            Ok(())
        })
    }
}

/// The cells of job part `p` of `cells`: whole batches of `batch` cells, a contiguous range of them.
fn part_cells(cells: &[u32], batch: usize, p: JobPart) -> Result<&[u32]> {
    let batches = cells.len().div_ceil(batch);
    if p.count > batches {
        bail!(
            "--shard {}/{}: {} parts, but the {} selected cells make only {batches} batch(es) of --batch {batch}; HINT: use at most {batches} parts, or a smaller --batch",
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

/// What an embed computes, resolved before any backend exists: the model fitted to the store's crops,
/// the weights, the normaliser and the selected cells.
struct Plan {
    cfg: ModelConfig,
    state: crate::engine::step::HostState,
    store: Store,
    norm: Normalizer,
    norm_name: String,
    selected: Vec<u32>,
    dim: usize,
    /// Side of the network's input: every crop is resized to it ([`plain_view`]).
    side: usize,
}

/// Receives each batch's cells and embeddings, in cell order.
type Sink<'a> = &'a mut dyn FnMut(&[u32], Vec<f32>) -> Result<()>;

impl Plan {
    fn new(o: &EmbedOptions) -> Result<Plan> {
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
        // Training renders a cell's global views at `global_size` from the whole stored crop (zoom 0.9–1),
        // so that is the scale the model knows cells at; embedding the crop at its own side would show
        // them larger by crop / global_size (1.5× for the tiny model on 48-px crops).
        let side = match o.input_size {
            Some(s) => s,
            None if stored_config(&file)?.is_some() => cfg.global_size,
            None => store.crop(),
        };
        ensure!(
            side >= cfg.patch && side % cfg.patch == 0,
            "input size {side} px (the store's crops are {} px) is not a positive multiple of the patch size {}; \
             HINT: --input-size N with N a multiple of {}",
            store.crop(),
            cfg.patch,
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
        let dim = cfg.depth.min(4) * cfg.dim;
        Ok(Plan {
            cfg,
            state,
            store,
            norm,
            norm_name,
            selected,
            dim,
            side,
        })
    }

    /// The embeddings of one batch of cells (normalised full crops, no augmentation).
    fn embed_batch<B: Backend>(
        &self,
        eng: &mut Engine<B>,
        chunk: &[u32],
        o: &EmbedOptions,
    ) -> Result<Vec<f32>> {
        let side = self.side;
        let cl = self.store.channels() * side * side;
        let mut host = vec![0f32; chunk.len() * cl];
        use rayon::prelude::*;
        host.par_chunks_mut(cl)
            .zip(chunk.par_iter())
            .try_for_each(|(buf, &k)| plain_view(&self.store, k as usize, &self.norm, side, buf))?;
        let imgs = eng.be.upload(&host)?;
        let (emb, width) = eng.embed(&imgs, chunk.len(), side, !o.student)?;
        let dim = self.dim;
        ensure!(width == dim, "embedding width {width} != {dim}");
        if let Some(q) = emb.iter().position(|x| !x.is_finite()) {
            let bad = emb.iter().filter(|x| !x.is_finite()).count();
            bail!(
                "{}: the embedding of cell {} is non-finite ({bad} non-finite values in this batch of {} cells); \
                 nothing was written; HINT: check the checkpoint and the store (`setdino store verify`)",
                o.checkpoint.display(),
                chunk[q / dim],
                chunk.len()
            );
        }
        Ok(emb)
    }

    /// Opens the output (the whole selection or job part `part`), lets `compute` feed it every batch
    /// in cell order, and finishes the files.
    fn write(
        &self,
        o: &EmbedOptions,
        part: Option<JobPart>,
        compute: impl FnOnce(&[u32], Sink) -> Result<()>,
    ) -> Result<EmbedSummary> {
        let (cells, out) = match part {
            None => (&self.selected[..], o.out.clone()),
            Some(p) => {
                ensure!(
                    o.format == Format::Npy,
                    "--shard with --format {}: job parts are written as npy + tsv; HINT: drop --format (`embed merge` \
                     joins the parts)",
                    o.format.name()
                );
                (
                    part_cells(&self.selected, o.batch, p)?,
                    part_stem(&o.out, p),
                )
            }
        };
        let store = &self.store;
        self.norm
            .check_batches(cells.iter().map(|&k| store.record(k as usize).batch))?;
        let dim = self.dim;
        let mut run = serde_json::json!({
            "command": "embed", "setdino": env!("CARGO_PKG_VERSION"),
            "checkpoint": o.checkpoint, "store": o.store, "backbone": if o.student { "student" } else { "teacher" },
            "normalizer": self.norm_name, "cells": cells.len(), "dim": dim,
            "crop": store.crop(), "input_size": self.side,
            "layers": "CLS token of the last 4 blocks after the final LayerNorm, concatenated",
        });
        if let Some(p) = part {
            run["part"] = serde_json::json!({"index": p.index, "count": p.count, "selected": self.selected.len(),
                "batch": o.batch, "filter": o.filter});
        }
        let mut w = MatrixWriter::create(
            &out,
            o.format,
            cell_frame(store, cells)?,
            &numbered("emb", dim),
            run.clone(),
        )?;
        let bar = if o.progress {
            crate::util::progress::bar(cells.len() as u64, "cells")
        } else {
            indicatif::ProgressBar::hidden()
        };
        compute(cells, &mut |chunk: &[u32], emb: Vec<f32>| {
            w.write(&emb)?;
            bar.inc(chunk.len() as u64);
            Ok(())
        })?;
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
}

/// Embeds on several devices: device `devices[d]` embeds batches d, d + D, d + 2D, … on its own thread
/// (its own context, stream and copy of the weights) and hands them over through a queue of two; the
/// writer takes batch k from device k mod D, so the files are in cell order and equal a one-device run's
/// (every batch holds the same cells either way). `make` opens a device; it runs on that device's thread.
fn embed_devices<B, F>(
    make: &F,
    devices: &[usize],
    o: &EmbedOptions,
    part: Option<JobPart>,
) -> Result<EmbedSummary>
where
    B: Backend,
    F: Fn(usize) -> Result<B> + Sync,
{
    ensure!(!devices.is_empty(), "--devices: no device given");
    let mut seen = devices.to_vec();
    seen.sort_unstable();
    seen.dedup();
    ensure!(
        seen.len() == devices.len(),
        "--devices {devices:?}: a device is listed twice"
    );
    let plan = Plan::new(o)?;
    let plan = &plan;
    plan.write(o, part, |cells, sink| {
        let batches: Vec<&[u32]> = cells.chunks(o.batch).collect();
        let n = devices.len();
        std::thread::scope(|s| -> Result<()> {
            let mut queues = Vec::with_capacity(n);
            for (d, &dev) in devices.iter().enumerate() {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<f32>>>(2);
                queues.push(rx);
                let mine: Vec<&[u32]> = batches.iter().skip(d).step_by(n).copied().collect();
                s.spawn(move || {
                    let eng = make(dev)
                        .and_then(|be| Engine::from_host(be, plan.cfg.clone(), &plan.state));
                    let mut eng = match eng {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = tx.send(Err(e.context(format!("opening device {dev}"))));
                            return;
                        }
                    };
                    for chunk in mine {
                        let r = plan.embed_batch(&mut eng, chunk, o);
                        let failed = r.is_err();
                        if tx.send(r).is_err() || failed {
                            return;
                        }
                    }
                });
            }
            // The receivers go out of scope on an error, so the other devices stop at their next batch.
            for (k, chunk) in batches.iter().enumerate() {
                let emb = queues[k % n]
                    .recv()
                    .map_err(|_| anyhow::anyhow!("device {} stopped early", devices[k % n]))??;
                sink(chunk, emb)?;
            }
            Ok(())
        })
    })
}
