//! The data pipeline the engine drives: store + sampler + augmentation + normaliser behind
//! `step(t)`, plus a background prefetcher that prepares the next steps while the engine computes.
//!
//! Key decision: the prefetcher is a plain thread and a bounded channel (depth = steps in flight) whose
//! work runs on rayon's global pool; buffers handed back with `recycle` are reused, so a long run does not
//! allocate (and page-fault) 300 MB per step.
use super::augment::{make_step_part_into, AugmentConfig, StepCrops};
use super::device_step::{make_raw_step_part_into, RawStep};
use super::normalize::{NormKind, Normalizer};
use super::sampler::{Sampler, SamplerConfig, SetDraw};
use crate::store::Store;
use anyhow::{bail, Result};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// A renderer of a part of a step (`make_step_part_into`, `make_raw_step_part_into`).
type MakePart<T> =
    fn(&Store, &[SetDraw], usize, &AugmentConfig, &Normalizer, u64, &mut T) -> Result<()>;

/// Store, sampler, augmentation and normaliser of one training run.
pub struct Pipeline {
    pub store: Arc<Store>,
    pub sampler: Sampler,
    pub augment: AugmentConfig,
    pub normalizer: Normalizer,
    /// (rank, ranks): the part of each step this pipeline prepares — sets rank·S/W … (rank+1)·S/W − 1
    /// of the step's S (data-parallel training); (0, 1) prepares whole steps.
    pub part: (usize, usize),
}

impl Pipeline {
    /// Build and check: the normaliser must cover every batch the sampler can draw.
    pub fn new(
        store: Arc<Store>,
        sampler: SamplerConfig,
        augment: AugmentConfig,
        norm: NormKind,
    ) -> Result<Pipeline> {
        let crop = store.crop();
        if augment.global_size == 0 || augment.local_size == 0 {
            bail!(
                "augmentation output sizes must be > 0 (global {}, local {})",
                augment.global_size,
                augment.local_size
            );
        }
        if augment.local_center >= crop / 2 {
            bail!("local crop centre range ±{} does not fit a {crop}-pixel crop; HINT: AugmentConfig::for_crop({crop})", augment.local_center);
        }
        let sampler = Sampler::new(&store, sampler)?;
        let normalizer = Normalizer::new(norm, &store);
        normalizer.check_batches(
            sampler
                .perts()
                .iter()
                .flat_map(|p| p.groups.iter().map(|g| g.0)),
        )?;
        Ok(Pipeline {
            store,
            sampler,
            augment,
            normalizer,
            part: (0, 1),
        })
    }

    /// Prepare only part `rank` of `ranks` of every step (data-parallel training). The step's sets are
    /// still drawn once from (seed, step), so the parts of all ranks make up the one-process step.
    pub fn set_part(&mut self, rank: usize, ranks: usize) -> Result<()> {
        let s = self.sampler.config().sets_per_step;
        if ranks == 0 || rank >= ranks || !s.is_multiple_of(ranks) {
            bail!("data.sets_per_step = {s} cannot be split into {ranks} equal parts (rank {rank}); HINT: make it a multiple of the number of ranks");
        }
        self.part = (rank, ranks);
        Ok(())
    }

    /// The tensors of step `step` (this pipeline's part of it) into `out` (reusing its buffers).
    pub fn step_into(&self, step: u64, out: &mut StepCrops) -> Result<()> {
        self.part_of(step, out, make_step_part_into)
    }

    /// The inputs of step `step` (this pipeline's part) for augmentation on the device: the distinct
    /// cells' stored crops and every crop's parameters (`device_step`), into `out`.
    pub fn raw_step_into(&self, step: u64, out: &mut RawStep) -> Result<()> {
        self.part_of(step, out, make_raw_step_part_into)
    }

    /// `make` on this pipeline's sets of step `step` (drawn once for the whole step, then split).
    fn part_of<T>(&self, step: u64, out: &mut T, make: MakePart<T>) -> Result<()> {
        let all = self.sampler.sample_step(step);
        let (rank, ranks) = self.part;
        let per = all.len() / ranks.max(1);
        make(
            &self.store,
            &all[rank * per..(rank + 1) * per],
            rank * per,
            &self.augment,
            &self.normalizer,
            step,
            out,
        )
    }

    /// The tensors of step `step`.
    pub fn step(&self, step: u64) -> Result<StepCrops> {
        let mut out = StepCrops::default();
        self.step_into(step, &mut out)?;
        Ok(out)
    }

    /// Produce steps `start, start+1, …` in the background, at most `depth` ahead of the consumer.
    pub fn prefetch(self: Arc<Self>, start: u64, depth: usize) -> Prefetch<StepCrops> {
        self.spawn(start, depth, Pipeline::step_into)
    }

    /// [`Pipeline::prefetch`] of the steps' raw inputs, for augmentation on the device.
    pub fn prefetch_raw(self: Arc<Self>, start: u64, depth: usize) -> Prefetch<RawStep> {
        self.spawn(start, depth, Pipeline::raw_step_into)
    }

    fn spawn<T: Default + Send + 'static>(
        self: Arc<Self>,
        start: u64,
        depth: usize,
        make: fn(&Pipeline, u64, &mut T) -> Result<()>,
    ) -> Prefetch<T> {
        let (tx, rx): (SyncSender<(u64, Result<T>)>, _) = sync_channel(depth.max(1));
        let (back_tx, back_rx) = sync_channel::<T>(depth.max(1) + 2);
        let handle = std::thread::spawn(move || {
            for step in start.. {
                let mut buf = back_rx.try_recv().unwrap_or_default();
                let r = make(&self, step, &mut buf).map(|_| buf);
                let failed = r.is_err();
                if tx.send((step, r)).is_err() || failed {
                    break;
                }
            }
        });
        Prefetch {
            rx: Some(rx),
            back: back_tx,
            handle: Some(handle),
        }
    }
}

/// Background step producer; iterate to receive `(step, tensors)` in order. An error ends the stream.
pub struct Prefetch<T = StepCrops> {
    rx: Option<Receiver<(u64, Result<T>)>>,
    back: SyncSender<T>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl<T> Prefetch<T> {
    /// Hand a consumed step's buffers back for reuse (dropped if the queue is full).
    pub fn recycle(&self, buf: T) {
        let _ = self.back.try_send(buf);
    }
}

impl<T> Iterator for Prefetch<T> {
    type Item = (u64, Result<T>);
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        // NOTE: dropping the receiver makes the producer's next send fail, so it exits after at most one step.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
