//! The data pipeline the engine drives: store + sampler + augmentation + normaliser behind
//! `step(t)`, plus a background prefetcher that prepares the next steps while the engine computes.
//!
//! Key decision: the prefetcher is a plain thread and a bounded channel (depth = steps in flight) whose
//! work runs on rayon's global pool; buffers handed back with `recycle` are reused, so a long run does not
//! allocate (and page-fault) 300 MB per step.
use super::augment::{make_step_part_into, AugmentConfig, StepCrops};
use super::normalize::{NormKind, Normalizer};
use super::sampler::{Sampler, SamplerConfig};
use crate::store::Store;
use anyhow::{bail, Result};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

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
        let all = self.sampler.sample_step(step);
        let (rank, ranks) = self.part;
        let per = all.len() / ranks.max(1);
        make_step_part_into(
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
    pub fn prefetch(self: Arc<Self>, start: u64, depth: usize) -> Prefetch {
        let (tx, rx): (SyncSender<(u64, Result<StepCrops>)>, _) = sync_channel(depth.max(1));
        let (back_tx, back_rx) = sync_channel::<StepCrops>(depth.max(1) + 2);
        let handle = std::thread::spawn(move || {
            for step in start.. {
                let mut buf = back_rx.try_recv().unwrap_or_default();
                let r = self.step_into(step, &mut buf).map(|_| buf);
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
pub struct Prefetch {
    rx: Option<Receiver<(u64, Result<StepCrops>)>>,
    back: SyncSender<StepCrops>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Prefetch {
    /// Hand a consumed step's buffers back for reuse (dropped if the queue is full).
    pub fn recycle(&self, buf: StepCrops) {
        let _ = self.back.try_send(buf);
    }
}

impl Iterator for Prefetch {
    type Item = (u64, Result<StepCrops>);
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // NOTE: dropping the receiver makes the producer's next send fail, so it exits after at most one step.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
