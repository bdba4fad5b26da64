//! The Set-DINO set sampler (algorithm.md §6.1–6.2): filtering, the epoch of perturbations, and per step
//! `sets_per_step` sets of `n` cells of one perturbation drawn from one or two batches (wells).
//!
//! Key decision: an epoch is a permutation of the perturbation list (each perturbation repeated as in the
//! reference), seeded by (seed, epoch); step t takes sets [t·S, (t+1)·S) of its epoch (drop-last), and each
//! set's batches and cells come from the stream (seed, step, set). So `sample_step(t)` depends on nothing but
//! (seed, t) and the store: any step can be recomputed, and a resume is exact.
use super::rng::{stream, DOMAIN_EPOCH, DOMAIN_SET};
use crate::store::{CellFilter, Store};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What a set's cells share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GroupBy {
    Gene,
    Sgrna,
}

/// How the two views of a set are drawn (algorithm.md §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Strategy {
    /// Two distinct batches (wells), n cells each: the Set-DINO default.
    CrossBatch,
    /// One batch, two independent draws of n cells (they may overlap).
    WithinBatch,
    /// One batch, one draw of n cells used for both views.
    SameCells,
}

impl std::str::FromStr for GroupBy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gene" => Ok(GroupBy::Gene),
            "sgrna" | "sgRNA" | "guide" => Ok(GroupBy::Sgrna),
            _ => bail!("group-by {s:?}: expected gene or sgrna"),
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cross-batch" | "cross_batch" => Ok(Strategy::CrossBatch),
            "within-batch" | "within_batch" => Ok(Strategy::WithinBatch),
            "same-cells" | "same_cells" | "same_cell" => Ok(Strategy::SameCells),
            _ => bail!("strategy {s:?}: expected cross-batch, within-batch or same-cells"),
        }
    }
}

/// Sampler settings; `Default` is the reference run (by gene, cross-batch, n = 16, 32 sets per step).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerConfig {
    pub group_by: GroupBy,
    pub strategy: Strategy,
    /// Cells per set (n).
    pub set_size: usize,
    /// Sets per step (S).
    pub sets_per_step: usize,
    /// Minimum cells of a (batch, perturbation) group; `None` = max(n, 20).
    pub min_cells: Option<usize>,
    /// Minimum number of qualifying batches of a perturbation.
    pub min_batches: usize,
    /// Times each perturbation appears per epoch; `None` = the reference's max(1, 16/n)·(4 by gene, 1 by
    /// sgRNA)·10.
    pub repeats_per_epoch: Option<usize>,
    pub seed: u64,
    /// The cells to sample from (the split): plates, wells, genes.
    pub filter: CellFilter,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            group_by: GroupBy::Gene,
            strategy: Strategy::CrossBatch,
            set_size: 16,
            sets_per_step: 32,
            min_cells: None,
            min_batches: 2,
            repeats_per_epoch: None,
            seed: 0,
            filter: CellFilter::default(),
        }
    }
}

/// One set: its perturbation (gene or sgRNA dictionary id), the batch of each view, and the store cell
/// indices of each view (n each). For `SameCells` both views hold the same cells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetDraw {
    pub pert: u32,
    pub batches: [u32; 2],
    pub cells: [Vec<u32>; 2],
}

/// A perturbation that passed filtering: its qualifying (batch, cells) groups.
#[derive(Clone, Debug)]
pub struct Pert {
    pub id: u32,
    pub groups: Vec<(u32, Vec<u32>)>,
}

/// The sampler; see the module docs.
pub struct Sampler {
    cfg: SamplerConfig,
    perts: Vec<Pert>,
    repeats: usize,
    steps_per_epoch: u64,
    cache: Mutex<Option<(u64, Arc<Vec<u32>>)>>,
}

impl Sampler {
    /// Filter the store's cells and group them (algorithm.md §6.1).
    pub fn new(store: &Store, cfg: SamplerConfig) -> Result<Sampler> {
        let n = cfg.set_size;
        if n == 0 || cfg.sets_per_step == 0 {
            bail!(
                "set size and sets per step must be ≥ 1 (got {n} and {})",
                cfg.sets_per_step
            );
        }
        let min_cells = cfg.min_cells.unwrap_or(n.max(20));
        if min_cells < n {
            bail!("min cells per (batch, perturbation) is {min_cells}, below the set size {n}; HINT: a set draws n cells without replacement");
        }
        let cells = cfg.filter.select(store)?;
        let mut groups: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
        for &k in &cells {
            let r = store.record(k as usize);
            let p = match cfg.group_by {
                GroupBy::Gene => r.gene,
                GroupBy::Sgrna => r.sgrna,
            };
            groups.entry((p, r.batch)).or_default().push(k);
        }
        let mut perts: Vec<Pert> = Vec::new();
        for ((p, b), v) in groups {
            if v.len() < min_cells {
                continue;
            }
            match perts.last_mut() {
                Some(last) if last.id == p => last.groups.push((b, v)),
                _ => perts.push(Pert {
                    id: p,
                    groups: vec![(b, v)],
                }),
            }
        }
        perts.retain(|p| p.groups.len() >= cfg.min_batches.max(1));
        if cfg.strategy == Strategy::CrossBatch && cfg.min_batches < 2 {
            perts.retain(|p| p.groups.len() >= 2);
        }
        if perts.is_empty() {
            bail!(
                "no perturbation has ≥ {} batches with ≥ {min_cells} cells among the {} selected cells; HINT: lower \
                 min_cells or the set size, or widen the plate/well selection",
                cfg.min_batches.max(1),
                cells.len()
            );
        }
        let repeats = cfg.repeats_per_epoch.unwrap_or_else(|| {
            (16 / n).max(1) * if cfg.group_by == GroupBy::Gene { 4 } else { 1 } * 10
        });
        let items = perts.len() as u64 * repeats.max(1) as u64;
        let steps_per_epoch = items / cfg.sets_per_step as u64;
        if steps_per_epoch == 0 {
            bail!(
                "an epoch has {items} sets, fewer than the {} sets of one step; HINT: raise repeats_per_epoch or lower \
                 sets_per_step",
                cfg.sets_per_step
            );
        }
        Ok(Sampler {
            cfg,
            perts,
            repeats: repeats.max(1),
            steps_per_epoch,
            cache: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }
    /// The perturbations that passed filtering, by ascending dictionary id.
    pub fn perts(&self) -> &[Pert] {
        &self.perts
    }
    /// Steps per epoch (drop-last).
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }
    /// Cells in a step: 2 views × S sets × n cells, as rows R = S·n per view.
    pub fn rows(&self) -> usize {
        self.cfg.sets_per_step * self.cfg.set_size
    }

    /// The epoch's permutation of perturbation slots (indices into `perts`), cached for the last epoch.
    fn epoch_order(&self, epoch: u64) -> Arc<Vec<u32>> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((e, v)) = c.as_ref() {
            if *e == epoch {
                return v.clone();
            }
        }
        let mut v: Vec<u32> = (0..self.perts.len() as u32)
            .flat_map(|p| std::iter::repeat_n(p, self.repeats))
            .collect();
        v.shuffle(&mut stream(self.cfg.seed, DOMAIN_EPOCH, &[epoch]));
        let v = Arc::new(v);
        *c = Some((epoch, v.clone()));
        v
    }

    /// The S sets of step `step`; a pure function of (seed, step).
    pub fn sample_step(&self, step: u64) -> Vec<SetDraw> {
        let epoch = step / self.steps_per_epoch;
        let within = (step % self.steps_per_epoch) as usize;
        let order = self.epoch_order(epoch);
        let s = self.cfg.sets_per_step;
        (0..s)
            .map(|q| self.draw_set(&self.perts[order[within * s + q] as usize], step, q as u64))
            .collect()
    }

    fn draw_set(&self, p: &Pert, step: u64, set: u64) -> SetDraw {
        let mut rng = stream(self.cfg.seed, DOMAIN_SET, &[step, set]);
        let n = self.cfg.set_size;
        let g = p.groups.len();
        let pick = |rng: &mut rand_chacha::ChaCha8Rng, cells: &[u32]| -> Vec<u32> {
            rand::seq::index::sample(rng, cells.len(), n)
                .into_iter()
                .map(|k| cells[k])
                .collect()
        };
        match self.cfg.strategy {
            Strategy::CrossBatch => {
                let a = rng.random_range(0..g);
                let mut b = rng.random_range(0..g - 1);
                if b >= a {
                    b += 1;
                }
                let ca = pick(&mut rng, &p.groups[a].1);
                let cb = pick(&mut rng, &p.groups[b].1);
                SetDraw {
                    pert: p.id,
                    batches: [p.groups[a].0, p.groups[b].0],
                    cells: [ca, cb],
                }
            }
            Strategy::WithinBatch => {
                let a = rng.random_range(0..g);
                let ca = pick(&mut rng, &p.groups[a].1);
                let cb = pick(&mut rng, &p.groups[a].1);
                SetDraw {
                    pert: p.id,
                    batches: [p.groups[a].0; 2],
                    cells: [ca, cb],
                }
            }
            Strategy::SameCells => {
                let a = rng.random_range(0..g);
                let ca = pick(&mut rng, &p.groups[a].1);
                SetDraw {
                    pert: p.id,
                    batches: [p.groups[a].0; 2],
                    cells: [ca.clone(), ca],
                }
            }
        }
    }
}
