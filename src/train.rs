//! `setdino train`: Set-DINO / DINO training from a crop store. Configuration is a TOML file over a
//! preset, with `--set key=value` overrides (unknown keys are errors that name the key). The loop: the data
//! pipeline (sampler → mmap read → augment → normalise, prefetched in the background) feeds the Set-DINO
//! step on the chosen backend; every step is logged to `RUN/log.jsonl`; checkpoints are written atomically
//! every N steps and at the end, keeping the last k; Ctrl-C writes a checkpoint and exits cleanly; a
//! non-finite loss or a collapsed teacher stops training with a message.
//!
//! Key decision: every random stream is keyed by (seed, step, …) — sampler, augmentation, drop path — and
//! the checkpoint holds the whole optimizer state, so `--resume` continues exactly; on the CPU backend the
//! losses after a resume are bit-identical to an uninterrupted run.
use crate::backend::gpu::cuda::Cuda;
use crate::backend::gpu::nccl::NcclComm;
use crate::backend::gpu::GpuBackend;
use crate::backend::select::{decide, precision_for, run_on_at, Choice, OnBackend};
use crate::backend::Backend;
use crate::comm::{local_group, Communicator, Launch, LocalComm, Solo};
use crate::config::{ModelConfig, OptimConfig, StepConfig};
use crate::data::augment::{AugmentCompat, AugmentConfig, StepCrops};
use crate::data::device_step::RawStep;
use crate::data::normalize::NormKind;
use crate::data::pipeline::{Pipeline, Prefetch};
use crate::data::sampler::{GroupBy, SamplerConfig, Strategy};
use crate::engine::schedule;
use crate::engine::step::{HostState, StepCropsIn};
use crate::engine::{Engine, StepBatch};
use crate::model::checkpoint::{load_state, save_checkpoint, TensorFile, TrainMeta};
use crate::store::{CellFilter, Store};
use crate::util::atomic::write_atomic;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What the sampler and augmentation use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// `gene` or `sgrna`: what the cells of a set share.
    pub group_by: String,
    /// `cross-batch` (Set-DINO), `within-batch`, or `same-cells` (the DINO baseline with set_size 1).
    pub strategy: String,
    pub set_size: usize,
    pub sets_per_step: usize,
    /// Local crops per set (even).
    pub n_local: usize,
    /// `ntc`, `ntc-2sigma` (the reference's quirk), `zscore` or `none`.
    pub normalizer: String,
    /// `fixed` (post-fix augmentations) or `paper` (the two pre-fix quirks).
    pub augment_compat: String,
    /// Per-channel gamma range of every crop, `[lo, hi]` (absent: the reference's `[0.5, 1.5]`); `[1, 1]`
    /// turns the exponent off.
    #[serde(default)]
    pub augment_gamma: Option<(f64, f64)>,
    /// Per-channel additive offset range, `[lo, hi]` (absent: the reference's `[-0.3, 0.3]`; the `paper`
    /// quirk widens its top to 0.5); `[0, 0]` turns it off.
    #[serde(default)]
    pub augment_offset: Option<(f64, f64)>,
    /// Largest side in pixels of the global views, the network's input: crops larger than it are resized
    /// down to it (the whole crop, zoomed; local views at half of it), smaller ones are seen at their own
    /// side; absent: every view at the store's crop side (the reference). A smaller input shows every
    /// cell at a smaller scale for less compute; `setdino embed` uses the size the checkpoint trained at.
    #[serde(default)]
    pub max_input_size: Option<usize>,
    /// Minimum cells per (batch, perturbation); default max(set_size, 20).
    pub min_cells: Option<usize>,
    pub min_batches: usize,
    /// Training cells: plates and wells (all when absent).
    pub train_plates: Option<Vec<String>>,
    pub train_wells: Option<Vec<String>>,
    /// Validation cells (held-out wells or plates); no validation when both are absent.
    pub val_plates: Option<Vec<String>>,
    pub val_wells: Option<Vec<String>>,
}

impl DataSection {
    /// The augmentation of a run on `crop`-pixel crops: the reference's, rendering views at the model's
    /// `global_size` / `local_size` (see `fit_model_to_store`), with this section's local-crop count,
    /// compatibility mode and photometric ranges.
    pub fn augment(&self, crop: usize, model: &ModelConfig, seed: u64) -> Result<AugmentConfig> {
        let mut aug = AugmentConfig::for_crop(crop);
        (aug.global_size, aug.local_size) = (model.global_size, model.local_size);
        aug.n_local = self.n_local;
        aug.compat = self.augment_compat.parse()?;
        if let Some(g) = self.augment_gamma {
            aug.gamma = g;
        }
        if let Some(o) = self.augment_offset {
            aug.offset = o;
        }
        aug.seed = seed;
        Ok(aug)
    }
}

/// Loop settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopSection {
    /// Epochs as the reference defines them (algorithm.md §6.2); schedules span them.
    pub epochs: usize,
    /// Stop after this many steps (a step budget) even if the epochs are not done.
    pub max_steps: Option<u64>,
    pub seed: u64,
    /// auto, cpu, cuda or simt.
    pub backend: String,
    /// GEMM precision: auto (bf16 on cuda, f32 on cpu and simt), f32 or bf16 (`backend::Precision`).
    #[serde(default = "auto_precision")]
    pub precision: String,
    pub checkpoint_every: u64,
    pub keep_last: usize,
    /// Steps in flight in the background data pipeline.
    pub prefetch: usize,
    /// Stop when the teacher's outputs are identical across rows for this many consecutive steps.
    pub collapse_patience: u64,
    /// Validate every this many epochs (and at the end) when validation cells are configured; 0 = never.
    pub val_every_epochs: usize,
    /// At most this many validation cells (evenly spaced over the selection).
    pub val_max_cells: usize,
    /// A complexes file (the `eval --complexes` formats): validation then also reports the known-complex
    /// recall at 5 % of the validation cells' gene profiles (`val_recall5`).
    #[serde(default)]
    pub val_complexes: Option<PathBuf>,
    /// Data-parallel ranks: each computes S/W of the step's S sets, the gradients are averaged and the
    /// teacher rows gathered, so the run computes the one-process step for any W. Absent: the launcher
    /// decides (torchrun's or Slurm's variables, one process per GPU, NCCL), else 1. Set without a
    /// launcher: W ranks as threads of this process (cpu and simt backends). Must divide sets_per_step.
    #[serde(default)]
    pub data_parallel: Option<usize>,
    /// Read the loss and the teacher's health back from the device every this many steps (one host sync
    /// each time; log.jsonl still gets a line per step, with the window's mean cells/s). Also read
    /// before every validation, checkpoint and the end, so a non-finite loss is caught before its
    /// state is saved. Absent: 1 on the CPU backend (every op is synchronous), 20 on a GPU backend.
    #[serde(default)]
    pub log_every: Option<u64>,
    /// Augment on the device: the CPU reads the store and draws each crop's parameters, the device
    /// renders and normalises the crops (`augment.cu`; the same crops as the CPU path to rounding, and
    /// each distinct cell's crop is uploaded once). Absent: on for GPU backends (cuda, simt), off on cpu.
    #[serde(default)]
    pub device_augment: Option<bool>,
    /// Capture the training step into a CUDA graph and replay it: the first step of a shape runs
    /// launch by launch, the second is recorded, every later one is a single graph launch (plus the
    /// batch copy and the monitor). Absent: on for GPU backends (cuda, simt), no effect on cpu. A step
    /// that cannot be captured (KoLeo on, several ranks) runs directly.
    #[serde(default)]
    pub cuda_graphs: Option<bool>,
}

fn auto_precision() -> String {
    "auto".into()
}

/// The whole training configuration (what `RUN/config.json` records).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub optim: OptimConfig,
    pub data: DataSection,
    pub train: LoopSection,
}

impl TrainConfig {
    /// `tiny` (CPU demos; Set-DINO cross-batch, by gene, n = 4) or `vits16` (the reference run).
    pub fn preset(name: &str) -> Result<TrainConfig> {
        let data = DataSection {
            group_by: "gene".into(),
            strategy: "cross-batch".into(),
            set_size: 8,
            sets_per_step: 4,
            n_local: 4,
            normalizer: "ntc".into(),
            augment_compat: "fixed".into(),
            augment_gamma: None,
            augment_offset: None,
            max_input_size: None,
            min_cells: None,
            min_batches: 2,
            train_plates: None,
            train_wells: None,
            val_plates: None,
            val_wells: None,
        };
        let train = LoopSection {
            epochs: 10,
            max_steps: None,
            seed: 1234,
            backend: "auto".into(),
            precision: auto_precision(),
            checkpoint_every: 200,
            keep_last: 3,
            prefetch: 2,
            collapse_patience: 50,
            val_every_epochs: 5,
            val_max_cells: 20000,
            val_complexes: None,
            data_parallel: None,
            log_every: None,
            device_augment: None,
            cuda_graphs: None,
        };
        match name {
            "tiny" => Ok(TrainConfig {
                model: ModelConfig::tiny(),
                // The reference's teacher temperature (0.01, sharper than DINO's 0.04: less prone to the
                // uniform collapse); a faster teacher (0.99) for short CPU runs; the base lr and the set
                // shape (8 sets × 4 cells, peak lr 1e-3 × 8/256 = 3.125e-5) and no photometric
                // augmentation: Set-DINO's choice in the validation-only sweeps of docs/experiment.md.
                // DINO's: `experiment::DINO_LR`.
                optim: OptimConfig {
                    lr: crate::experiment::SETDINO_LR,
                    warmup_epochs: 1,
                    teacher_temp: 0.01,
                    warmup_teacher_temp: 0.01,
                    warmup_teacher_temp_epochs: 0,
                    momentum_teacher: crate::experiment::SETDINO_MOMENTUM,
                    // Short runs: the last layer is frozen for 20 steps (2 % of the demo's 1000), not for
                    // one of the ten schedule epochs the step budget is divided into.
                    freeze_last_layer_steps: Some(20),
                    ..OptimConfig::default()
                },
                data: DataSection {
                    set_size: 4,
                    sets_per_step: 8,
                    // The gamma and offset draws made the tiny model's teachers drift to uniform
                    // (docs/experiment.md); per-well NTC normalisation already removes each well's
                    // affine intensity differences.
                    augment_gamma: Some((1.0, 1.0)),
                    augment_offset: Some((0.0, 0.0)),
                    // Views of at most 32 px (48-px demo crops: cells at 2/3 scale): the trained rows
                    // beat the untrained network by more, at half the compute of 48-px views
                    // (docs/experiment.md, "Views of 32 px").
                    max_input_size: Some(32),
                    ..data
                },
                train,
            }),
            "vits16" => Ok(TrainConfig {
                model: ModelConfig::vits16(),
                optim: OptimConfig::default(),
                data: DataSection {
                    set_size: 16,
                    sets_per_step: 32,
                    n_local: 8,
                    ..data
                },
                train: LoopSection {
                    epochs: 300,
                    checkpoint_every: 1000,
                    ..train
                },
            }),
            other => bail!("unknown preset '{other}'; expected tiny or vits16"),
        }
    }

    /// Reads `path` (TOML; `preset = "tiny"` picks the base, default tiny), then applies `--set key=value`
    /// overrides (dotted keys, TOML values; a bare word is taken as a string).
    pub fn load(path: Option<&Path>, sets: &[String]) -> Result<TrainConfig> {
        let mut user: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("{}: not valid TOML", p.display()))?
            }
            None => toml::Table::new(),
        };
        for s in sets {
            let (k, v) = s.split_once('=').with_context(|| {
                format!("--set {s}: expected key=value, e.g. --set data.set_size=8")
            })?;
            let val: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
                Ok(t) => t
                    .get("v")
                    .cloned()
                    .unwrap_or_else(|| toml::Value::String(v.into())),
                Err(_) => toml::Value::String(v.to_string()),
            };
            set_dotted(&mut user, k.trim(), val)?;
        }
        let preset = match user.remove("preset") {
            Some(toml::Value::String(p)) => p,
            Some(other) => bail!("preset must be a string, got {other}"),
            None => "tiny".into(),
        };
        let base = TrainConfig::preset(&preset)?;
        let mut merged = toml::Table::try_from(&base).context("serialising the preset")?;
        overlay(&mut merged, &user, "")?;
        let cfg: TrainConfig = toml::Value::Table(merged)
            .try_into()
            .map_err(|e| anyhow::anyhow!("invalid training configuration: {e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The whole configuration, before any work: every numeric key is range-checked (the message names
    /// the key path and the allowed range), then the names and the model's consistency.
    pub fn validate(&self) -> Result<()> {
        use crate::config::check_min;
        let d = &self.data;
        let t = &self.train;
        for (key, v, min) in [
            ("data.set_size", d.set_size as u64, 1),
            ("data.sets_per_step", d.sets_per_step as u64, 1),
            ("data.min_batches", d.min_batches as u64, 1),
            ("data.min_cells", d.min_cells.map_or(1, |v| v as u64), 1),
            ("train.epochs", t.epochs as u64, 1),
            ("train.max_steps", t.max_steps.unwrap_or(1), 1),
            ("train.checkpoint_every", t.checkpoint_every, 1),
            ("train.keep_last", t.keep_last as u64, 1),
            ("train.collapse_patience", t.collapse_patience, 1),
            ("train.log_every", t.log_every.unwrap_or(1), 1),
            ("train.val_max_cells", t.val_max_cells as u64, 1),
            (
                "train.data_parallel",
                t.data_parallel.unwrap_or(1) as u64,
                1,
            ),
        ] {
            check_min(key, v, min)?;
        }
        ensure!(
            d.n_local.is_multiple_of(2),
            "data.n_local = {}: must be even (half of the local crops per global view)",
            d.n_local
        );
        self.optim.validate()?;
        self.model.validate()?;
        self.steps(1).validate()?;
        d.group_by.parse::<GroupBy>()?;
        d.strategy.parse::<Strategy>()?;
        d.normalizer.parse::<NormKind>()?;
        d.augment_compat.parse::<AugmentCompat>()?;
        for (key, range, lowest) in [
            ("data.augment_gamma", d.augment_gamma, f64::MIN_POSITIVE),
            ("data.augment_offset", d.augment_offset, f64::NEG_INFINITY),
        ] {
            if let Some((lo, hi)) = range {
                ensure!(
                    lo.is_finite() && hi.is_finite() && lo >= lowest && lo <= hi,
                    "{key} = [{lo}, {hi}]: expected [lo, hi] with lo <= hi{}",
                    if lowest > 0.0 { " and lo > 0" } else { "" }
                );
            }
        }
        Ok(())
    }

    /// The step geometry for the schedules.
    pub fn steps(&self, steps_per_epoch: u64) -> StepConfig {
        StepConfig {
            sets_per_step: self.data.sets_per_step,
            set_size: self.data.set_size,
            n_local: self.data.n_local,
            epochs: self.train.epochs,
            steps_per_epoch: steps_per_epoch.max(1) as usize,
            seed: self.train.seed,
        }
    }
}

fn set_dotted(t: &mut toml::Table, key: &str, v: toml::Value) -> Result<()> {
    match key.split_once('.') {
        None => {
            t.insert(key.to_string(), v);
            Ok(())
        }
        Some((head, rest)) => {
            let e = t
                .entry(head.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match e {
                toml::Value::Table(sub) => set_dotted(sub, rest, v),
                _ => bail!("--set {key}: '{head}' is not a table"),
            }
        }
    }
}

fn overlay(base: &mut toml::Table, user: &toml::Table, prefix: &str) -> Result<()> {
    for (k, v) in user {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(u)) => overlay(b, u, &path)?,
            (Some(_), _) => {
                base.insert(k.clone(), v.clone());
            }
            (None, _)
                if prefix == "data"
                    || prefix == "train"
                    || prefix.is_empty()
                    || prefix == "model"
                    || prefix == "optim" =>
            {
                // Optional keys (e.g. data.min_cells) are absent from the serialised preset.
                base.insert(k.clone(), v.clone());
            }
            (None, _) => bail!("unknown configuration key '{path}'"),
        }
    }
    Ok(())
}

/// One line of `log.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LogLine {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub wd: f64,
    pub momentum: f64,
    pub teacher_temp: f64,
    pub cells_per_s: f64,
    /// Mean entropy of the teacher's centred, sharpened distributions (what the student is taught);
    /// ln K means a uniform teacher (collapse), 0 a one-hot one.
    #[serde(default)]
    pub teacher_entropy: f64,
    /// Mean KL(teacher ‖ student) over the loss's view pairs: every teacher view meets the same number
    /// of student views, so the cross-entropy loss = mean teacher entropy + this KL (computed as their
    /// difference). Near 0 with a high entropy: the student matches a uniform teacher.
    #[serde(default)]
    pub kl: f64,
    /// The weighted KoLeo term (`optim.koleo_weight` × its mean −log nearest-neighbour distance), added
    /// to `loss` in the objective; 0 when off. It falls as the cells of a step spread apart.
    #[serde(default)]
    pub koleo: f64,
}

/// Where a run lives.
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("log.jsonl")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
    pub fn checkpoint(&self, step: u64) -> PathBuf {
        self.checkpoints()
            .join(format!("step-{step:08}.safetensors"))
    }
    /// Checkpoints by step, ascending.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut v = Vec::new();
        let d = self.checkpoints();
        if !d.exists() {
            return Ok(v);
        }
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(n) = name
                .strip_prefix("step-")
                .and_then(|s| s.strip_suffix(".safetensors"))
            {
                if let Ok(step) = n.parse() {
                    v.push((step, p));
                }
            }
        }
        v.sort();
        Ok(v)
    }
    /// Remove the temps that killed checkpoint writes left in the checkpoint directory (those of
    /// processes no longer running; see [`crate::util::atomic::remove_stale_temps`]).
    pub fn remove_stale_temps(&self) -> Result<usize> {
        let d = self.checkpoints();
        let Ok(entries) = std::fs::read_dir(&d) else {
            return Ok(0);
        };
        let mut targets = std::collections::BTreeSet::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((target, _)) = name
                .strip_prefix('.')
                .and_then(|n| n.split_once(".safetensors.tmp"))
            {
                targets.insert(format!("{target}.safetensors"));
            }
        }
        let mut n = 0;
        for t in targets {
            n += crate::util::atomic::remove_stale_temps(&d.join(t))?;
        }
        Ok(n)
    }
    pub fn latest(&self) -> Result<Option<(u64, PathBuf)>> {
        Ok(self.list()?.pop())
    }
}

/// What `RUN/config.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub config: TrainConfig,
    pub store: PathBuf,
}

/// Options of one invocation.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub config: TrainConfig,
    pub store: PathBuf,
    pub out: PathBuf,
    /// Continue from the run's latest checkpoint.
    pub resume: bool,
    /// Show a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Stop this invocation after this global step (checkpointing there), without changing the schedules:
    /// for time-boxed jobs; continue with `--resume`.
    pub stop_at: Option<u64>,
}

/// Result of a run.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps_done: u64,
    pub last_step: u64,
    pub losses: Vec<f64>,
    pub checkpoint: PathBuf,
    pub interrupted: bool,
    /// `RUN/best.safetensors`: the checkpoint with the best validation gene KNN@5 (the reference's model
    /// selection, `ModelCheckpoint` on `val_top1_acc`), when validation ran.
    pub best: Option<PathBuf>,
    /// Steps run as one replay of a captured graph (`train.cuda_graphs`; 0 on the CPU backend).
    pub replayed_steps: u64,
}

/// What `RUN/best.json` records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BestRecord {
    pub step: u64,
    pub val_top5_gene: f64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Best effort: a second handler (e.g. in tests) is not an error worth failing a run for.
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    });
}

/// Trains (or resumes) a run: one process, a data-parallel job started by torchrun or Slurm (one process
/// per GPU, NCCL), or `train.data_parallel = W` ranks as threads of this process (CPU and SIMT backends).
pub fn train(opts: TrainOptions) -> Result<TrainSummary> {
    let launch = Launch::from_env()?;
    let want = opts.config.train.data_parallel;
    match launch {
        Some(l) => {
            if let Some(w) = want.filter(|&w| w != l.world) {
                bail!(
                    "train.data_parallel = {w} but {} started {} ranks; HINT: drop the key (the launcher decides) or make them equal",
                    l.source,
                    l.world
                );
            }
            train_nccl(opts, &l)
        }
        None if want.unwrap_or(1) > 1 => train_local_group(opts, want.unwrap_or(1)),
        None => {
            let backend = opts.config.train.backend.clone();
            let precision = opts.config.train.precision.clone();
            run_on_at(&backend, &precision, Job { opts, comm: None })
        }
    }
}

struct Job {
    opts: TrainOptions,
    comm: Option<LocalComm>,
}

impl OnBackend for Job {
    type Out = TrainSummary;
    fn run<B: Backend>(self, be: B) -> Result<TrainSummary> {
        let comm: Box<dyn Communicator<B>> = match self.comm {
            Some(c) => Box::new(c),
            None => Box::new(Solo),
        };
        train_on(be, self.opts, comm)
    }
}

/// `train.data_parallel = W` without a launcher: W ranks as threads, each with its own backend, averaging
/// gradients through host copies. Returns rank 0's summary; the first real failure wins over the
/// "a rank left" errors it causes in the others.
fn train_local_group(opts: TrainOptions, world: usize) -> Result<TrainSummary> {
    let (choice, _) = decide(&opts.config.train.backend)?;
    ensure!(
        choice != Choice::Cuda,
        "train.data_parallel = {world} on CUDA runs one process per GPU; HINT: torchrun --standalone --nproc_per_node {world} --no-python setdino train … (or srun), which sets RANK and WORLD_SIZE"
    );
    let comms = local_group(world)?;
    let results: Vec<Result<TrainSummary>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|c| {
                let mut o = opts.clone();
                if c.rank() > 0 {
                    o.progress = false;
                }
                let (b, p) = (
                    o.config.train.backend.clone(),
                    o.config.train.precision.clone(),
                );
                s.spawn(move || {
                    run_on_at(
                        &b,
                        &p,
                        Job {
                            opts: o,
                            comm: Some(c),
                        },
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a data-parallel rank panicked")))
            })
            .collect()
    });
    let mut first = None;
    let mut rank0 = None;
    for (rank, r) in results.into_iter().enumerate() {
        match r {
            Ok(sum) if rank == 0 => rank0 = Some(sum),
            Ok(_) => {}
            Err(e) => {
                let secondary = format!("{e:#}").contains("left the data-parallel group");
                if first.as_ref().is_none_or(|(sec, _)| *sec && !secondary) {
                    first = Some((secondary, e.context(format!("data-parallel rank {rank}"))));
                }
            }
        }
    }
    match (first, rank0) {
        (Some((_, e)), _) => Err(e),
        (None, Some(sum)) => Ok(sum),
        (None, None) => bail!("rank 0 returned no summary"),
    }
}

/// One process of a launcher-started job: the GPU `LOCAL_RANK`, NCCL between the processes.
fn train_nccl(opts: TrainOptions, launch: &Launch) -> Result<TrainSummary> {
    let (choice, _) = decide(&opts.config.train.backend)?;
    ensure!(
        choice == Choice::Cuda,
        "{} started {} ranks, but multi-process data-parallel training needs the cuda backend (NCCL); HINT: --set train.backend=cuda on GPU nodes, or run one process with train.data_parallel = W for in-process CPU ranks",
        launch.source,
        launch.world
    );
    let prec = precision_for(&choice, &opts.config.train.precision)?;
    let visible = crate::backend::gpu::cuda::probe(0)
        .map_err(|e| anyhow::anyhow!(e))
        .and_then(|_| {
            cudarc::driver::CudaContext::device_count()
                .map_err(|e| anyhow::anyhow!("counting CUDA devices: {e:?}"))
        })
        .with_context(|| format!("rank {} of {}", launch.rank, launch.world))?;
    let ordinal = launch.device(usize::try_from(visible).unwrap_or(0))?;
    let dev = Cuda::new(ordinal).with_context(|| {
        format!(
            "rank {} of {}: opening GPU {ordinal} (local rank {})",
            launch.rank, launch.world, launch.local_rank
        )
    })?;
    let comm = NcclComm::init(&dev, launch)?;
    let mut opts = opts;
    opts.progress &= launch.rank == 0;
    train_on(GpuBackend::with_precision(dev, prec), opts, Box::new(comm))
}

/// The run's inputs, resolved: configuration fitted to the store, this rank's data pipeline, the step
/// budget and the schedules' epoch length.
struct Prepared {
    cfg: TrainConfig,
    store: Arc<Store>,
    pipe: Arc<Pipeline>,
    total: u64,
    sched_spe: u64,
    steps: StepConfig,
}

fn prepare(opts: &TrainOptions, rank: usize, world: usize) -> Result<Prepared> {
    opts.config.validate()?;
    let store = Arc::new(Store::open(&opts.store)?);
    let mut cfg = opts.config.clone();
    fit_model_to_store(&mut cfg, &store, rank == 0)?;
    let crop = store.crop();
    let d = &cfg.data;
    let sampler_cfg = SamplerConfig {
        group_by: d.group_by.parse()?,
        strategy: d.strategy.parse()?,
        set_size: d.set_size,
        sets_per_step: d.sets_per_step,
        min_cells: d.min_cells,
        min_batches: d.min_batches,
        repeats_per_epoch: None,
        seed: cfg.train.seed,
        filter: CellFilter {
            plates: d.train_plates.clone(),
            wells: d.train_wells.clone(),
            genes: None,
            ntc_only: false,
        },
    };
    let aug = d.augment(crop, &cfg.model, cfg.train.seed)?;
    let mut pipe = Pipeline::new(store.clone(), sampler_cfg, aug, d.normalizer.parse()?)?;
    pipe.set_part(rank, world)?;
    let spe = pipe.sampler.steps_per_epoch();
    ensure!(spe > 0, "the training split yields no complete step; HINT: fewer sets per step or more perturbations");
    // With a step budget shorter than the epochs, the schedules (warm-up, cosine) span the budget: an
    // "epoch" of the schedules becomes budget / epochs steps. The data epochs are unchanged.
    let total = (cfg.train.epochs as u64 * spe).min(cfg.train.max_steps.unwrap_or(u64::MAX));
    let sched_spe = if total < cfg.train.epochs as u64 * spe {
        total.div_ceil(cfg.train.epochs as u64).max(1)
    } else {
        spe
    };
    let steps = cfg.steps(sched_spe);
    Ok(Prepared {
        cfg,
        store,
        pipe: Arc::new(pipe),
        total,
        sched_spe,
        steps,
    })
}

/// Fresh state, or the run's latest checkpoint with `--resume` (every rank reads it; the step and the
/// data order do not depend on the number of ranks, so a run may resume on another number of them).
/// Only the writer (rank 0) refuses a run directory that already holds checkpoints.
fn initial_state(
    run: &RunDir,
    cfg: &TrainConfig,
    resume: bool,
    writer: bool,
) -> Result<(HostState, u64)> {
    if resume {
        let (step, path) = run.latest()?.with_context(|| {
            format!("--resume: no checkpoint in {}", run.checkpoints().display())
        })?;
        let file = TensorFile::open(&path)?;
        let (st, meta) = load_state(&file, &cfg.model)?;
        ensure!(
            meta.step == step,
            "{}: metadata step {} != file name step {step}",
            path.display(),
            meta.step
        );
        if writer {
            eprintln!("resuming {} at step {step}", run.dir.display());
        }
        return Ok((st, step));
    }
    if writer {
        ensure!(
            run.latest()?.is_none(),
            "{} already holds checkpoints; HINT: use --resume {} or a new --out",
            run.dir.display(),
            run.dir.display()
        );
    }
    Ok((
        HostState::init(&cfg.model, cfg.train.seed, cfg.optim.teacher_init),
        0,
    ))
}

/// The writer's run directory: config.json, log.jsonl opened for appending (lines after a resumed
/// checkpoint dropped).
fn open_run_files(
    run: &RunDir,
    cfg: &TrainConfig,
    store: &Path,
    start: u64,
) -> Result<std::fs::File> {
    std::fs::create_dir_all(run.checkpoints())
        .with_context(|| format!("creating {}", run.dir.display()))?;
    run.remove_stale_temps()?;
    let record = RunRecord {
        config: cfg.clone(),
        store: std::fs::canonicalize(store).unwrap_or(store.to_path_buf()),
    };
    write_atomic(
        &run.config(),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    truncate_jsonl(&run.log(), |s| s < start)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.log())
        .with_context(|| format!("opening {}", run.log().display()))
}

/// The validation cells (evenly spaced, at most `val_max_cells`), none when no validation split is set.
fn validation_cells(cfg: &TrainConfig, store: &Store) -> Result<Vec<u32>> {
    let d = &cfg.data;
    if d.val_plates.is_none() && d.val_wells.is_none() {
        return Ok(Vec::new());
    }
    let all = CellFilter {
        plates: d.val_plates.clone(),
        wells: d.val_wells.clone(),
        genes: None,
        ntc_only: false,
    }
    .select(store)?;
    let keep = cfg.train.val_max_cells.max(1);
    Ok(if all.len() > keep {
        (0..keep).map(|i| all[i * all.len() / keep]).collect()
    } else {
        all
    })
}

/// The teacher's health at one step: the entropy the log reports, and whether it looks collapsed.
/// The steps' inputs in flight: crops augmented on the CPU and uploaded as f32, or (on a GPU backend) the
/// distinct cells' stored crops and the crops' parameters, rendered and normalised on the device
/// (`data::device_step`: the same parameters, so the same crops to rounding).
enum Feed {
    Host(Prefetch<StepCrops>),
    Device(Prefetch<RawStep>),
}

/// One step's crops as the feed hands them over: on the device already (uploaded from the CPU's
/// augmentation), or the raw cells and crop parameters, which the engine renders straight into the
/// buffers its step reads (`Engine::train_step_from`).
enum Fed<B: Backend> {
    OnDevice(StepBatch<B>),
    Raw(RawStep),
}

impl<B: Backend> Fed<B> {
    fn crops(&self) -> StepCropsIn<'_, B> {
        match self {
            Fed::OnDevice(b) => StepCropsIn::Batch(b),
            Fed::Raw(raw) => StepCropsIn::Raw(raw),
        }
    }
}

impl Feed {
    /// The next step's crops for `be`; the host buffers go back to the producer once uploaded (`recycle`
    /// for the raw ones, after the step has rendered them).
    fn next_batch<B: Backend>(&mut self, be: &B) -> Option<(u64, Result<Fed<B>>)> {
        match self {
            Feed::Host(p) => {
                let (s, r) = p.next()?;
                Some((
                    s,
                    r.and_then(|c| {
                        let b = upload_crops(be, &c);
                        p.recycle(c);
                        b.map(Fed::OnDevice)
                    }),
                ))
            }
            Feed::Device(p) => {
                let (s, r) = p.next()?;
                Some((s, r.map(Fed::Raw)))
            }
        }
    }
    /// Hands a step's host buffers back to the producer.
    fn recycle<B: Backend>(&self, fed: Fed<B>) {
        if let (Feed::Device(p), Fed::Raw(raw)) = (self, fed) {
            p.recycle(raw);
        }
    }
}

/// A step's CPU-augmented crops on `be`.
fn upload_crops<B: Backend>(be: &B, crops: &StepCrops) -> Result<StepBatch<B>> {
    Ok(StepBatch {
        global: be.upload(&crops.global)?,
        local: if crops.n_local > 0 {
            Some(be.upload(&crops.local)?)
        } else {
            None
        },
        sets: crops.sets,
        set_size: crops.set_size,
        n_local: crops.n_local,
    })
}

/// A step run but not yet read back: its host-side values (the device holds its loss and health).
struct Pending {
    step: u64,
    sched: schedule::StepSchedule,
    koleo: f64,
}

/// The training loop's view of steps in flight: the monitoring slots are read every `every` steps, then
/// each step gets its log line, its non-finite and collapse checks and its progress update.
struct Watch {
    every: usize,
    pending: Vec<Pending>,
    /// When the first pending step started (cells/s of a window: the device is waited for at its end).
    window: Instant,
    cells_per_step: f64,
    collapsed_for: u64,
    losses: Vec<f64>,
    progress: bool,
    total: u64,
}

/// `train.log_every`, or its default: 1 where every op is synchronous anyway (the CPU backend: reading
/// costs nothing), 20 on a device backend (one host sync per 20 steps).
fn log_every(cfg: &TrainConfig, device: &bool) -> usize {
    let every = cfg.train.log_every.unwrap_or(if *device { 20 } else { 1 });
    usize::try_from(every).unwrap_or(usize::MAX).max(1)
}

/// Whether `eng` runs on a device backend (`Backend::is_device`).
fn be_kind<B: Backend>(eng: &Engine<B>) -> bool {
    eng.be.is_device()
}

impl Watch {
    /// Reads the pending steps' monitoring values (one host sync) and, step by step: stops on a
    /// non-finite loss or a collapse that lasted `train.collapse_patience` steps, writes the log line,
    /// moves the progress bar.
    #[allow(clippy::too_many_arguments)]
    fn drain<B: Backend>(
        &mut self,
        eng: &mut Engine<B>,
        run: &RunDir,
        cfg: &TrainConfig,
        writer: bool,
        sched_spe: u64,
        bar: &indicatif::ProgressBar,
        mut log: Option<&mut std::fs::File>,
    ) -> Result<()> {
        let read = eng.read_monitor(self.pending.len())?;
        let n = self.pending.len().max(1) as f64;
        let cells_per_s = self.cells_per_step * n / self.window.elapsed().as_secs_f64().max(1e-9);
        let ln_k = (cfg.model.out_dim as f64).ln();
        // the engine has applied every pending step: its state is that of the step after the last
        let now = self.pending.last().map_or(0, |p| p.step + 1);
        for (p, m) in std::mem::take(&mut self.pending).into_iter().zip(read) {
            let step = p.step;
            if !(m.loss + p.koleo).is_finite() {
                bar.abandon();
                bail!(
                    "the loss became non-finite ({}) at step {step}; the last finite checkpoint is {}; HINT: lower optim.lr or raise optim.teacher_temp",
                    m.loss,
                    last_finite(run)
                );
            }
            let uniform = m.entropy > 0.99 * ln_k;
            if uniform || m.same_rows {
                self.collapsed_for += 1;
                if self.collapsed_for >= cfg.train.collapse_patience {
                    bar.abandon();
                    let ck = if writer {
                        checkpoint(run, cfg, eng, now, sched_spe)?
                            .display()
                            .to_string()
                    } else {
                        "written by rank 0".into()
                    };
                    bail!(
                        "training collapsed at step {step}: {} for {} steps (loss {:.4}, ln K = {ln_k:.4}); checkpoint {ck}; HINT: lower optim.teacher_temp or optim.lr, or raise optim.momentum_teacher",
                        if uniform { "the teacher's distribution is uniform (entropy > 0.99 ln K)" } else { "the teacher gave the same output for every set" },
                        self.collapsed_for,
                        m.loss,
                    );
                }
            } else {
                self.collapsed_for = 0;
            }
            let line = LogLine {
                step,
                epoch: step / sched_spe,
                loss: m.loss,
                lr: p.sched.lr,
                wd: p.sched.weight_decay,
                momentum: p.sched.momentum,
                teacher_temp: p.sched.teacher_temp,
                cells_per_s,
                teacher_entropy: m.entropy,
                kl: m.loss - m.entropy,
                koleo: p.koleo,
            };
            if let Some(log) = log.as_mut() {
                writeln!(log, "{}", serde_json::to_string(&line)?).context("writing log.jsonl")?;
            }
            self.losses.push(m.loss);
            let done = step + 1;
            bar.set_position(done);
            bar.set_message(format!("loss {:.4}  {cells_per_s:.0} cells/s", m.loss));
            if bar.is_hidden() && self.progress && (done % 50 == 0 || done == self.total) {
                // Plain log lines when stderr is not a terminal.
                eprintln!(
                    "step {done}/{} loss {:.4} ({cells_per_s:.0} cells/s)",
                    self.total, m.loss
                );
            }
        }
        self.window = Instant::now();
        Ok(())
    }
}

fn train_on<B: Backend>(
    be: B,
    opts: TrainOptions,
    comm: Box<dyn Communicator<B>>,
) -> Result<TrainSummary> {
    // Rank 0 writes the run directory; the other ranks of a data-parallel job never write into it.
    let writer = comm.rank() == 0;
    let run = RunDir {
        dir: opts.out.clone(),
    };
    let Prepared {
        cfg,
        store,
        pipe,
        total,
        sched_spe,
        steps,
    } = prepare(&opts, comm.rank(), comm.world())?;
    let d = &cfg.data;
    let (state, start) = initial_state(&run, &cfg, opts.resume, writer)?;
    let mut log = if writer {
        Some(open_run_files(&run, &cfg, &opts.store, start)?)
    } else {
        None
    };
    let val_cells = validation_cells(&cfg, &store)?;
    let val_every = cfg.train.val_every_epochs as u64;
    let val_complexes = match &cfg.train.val_complexes {
        Some(p) => Some(crate::eval::complexes::read(p).context("train.val_complexes")?),
        None => None,
    };
    let validating = !val_cells.is_empty() && val_every > 0;
    let mut val_log = if validating && writer {
        truncate_jsonl(&run.dir.join("val.jsonl"), |s| s <= start)?;
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(run.dir.join("val.jsonl"))
                .with_context(|| format!("opening {}", run.dir.join("val.jsonl").display()))?,
        )
    } else {
        None
    };
    let best_json = run.dir.join("best.json");
    let mut best: Option<BestRecord> = match std::fs::read_to_string(&best_json) {
        Ok(t) if opts.resume => serde_json::from_str::<BestRecord>(&t)
            .ok()
            .filter(|b| b.step <= start),
        _ => None,
    };
    let mut eng = Engine::from_host(be, cfg.model.clone(), &state)?;
    eng.koleo_weight = cfg.optim.koleo_weight;
    eng.sinkhorn_iters = cfg.optim.sinkhorn_iters;
    eng.comm = comm;
    install_ctrlc();
    INTERRUPTED.store(false, Ordering::SeqCst);
    let bar = progress_bar(opts.progress, start, total);
    let cells_per_step =
        (d.sets_per_step * d.set_size * if d.strategy == "same-cells" { 1 } else { 2 }) as f64;
    let mut watch = Watch {
        // never more slots than steps to run (the device buffer holds 4 values per slot)
        every: log_every(&cfg, &be_kind(&eng))
            .min(usize::try_from(total.saturating_sub(start)).unwrap_or(usize::MAX))
            .max(1),
        pending: Vec::new(),
        window: Instant::now(),
        cells_per_step,
        collapsed_for: 0,
        losses: Vec::new(),
        progress: opts.progress,
        total,
    };
    let mut last_ckpt: Option<PathBuf> = None;
    let mut step = start;
    let mut interrupted = false;
    // Every rank validates (the replicas are identical, so they agree on a collapse and stop together);
    // only the writer records the results and keeps best.safetensors.
    let mut val = validating.then(|| Validation {
        store: &store,
        normalizer: &pipe.normalizer,
        cells: &val_cells,
        log: val_log.as_mut(),
        best: &mut best,
        run: &run,
        cfg: &cfg,
        sched_spe,
        complexes: val_complexes.as_ref(),
    });
    if let (Some(v), 0) = (val.as_mut(), start) {
        // The untrained network's score: where the curves start, and the bar training must clear.
        bar.suspend(|| v.run(&mut eng, 0))?;
    }
    if start < total {
        eng.ensure_monitor(watch.every)?;
        eng.set_graphs(cfg.train.cuda_graphs.unwrap_or(be_kind(&eng)));
        let on_device = cfg.train.device_augment.unwrap_or(be_kind(&eng));
        let mut feed = if on_device {
            Feed::Device(pipe.clone().prefetch_raw(start, cfg.train.prefetch))
        } else {
            Feed::Host(pipe.clone().prefetch(start, cfg.train.prefetch))
        };
        while let Some((s, batch)) = feed.next_batch(&eng.be) {
            debug_assert_eq!(s, step);
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    // the steps run so far keep their log lines (a drain's own stop takes precedence)
                    watch.drain(&mut eng, &run, &cfg, writer, sched_spe, &bar, log.as_mut())?;
                    return Err(e.context(format!("preparing the crops of step {s}")));
                }
            };
            let sched = schedule::at(&cfg.optim, &steps, step as usize);
            // No host sync: the loss and the teacher's health go to a device slot, read every
            // `log_every` steps (and before validation, checkpoints and the end) by `drain`.
            let koleo = eng.train_step_from(
                batch.crops(),
                &cfg.optim,
                &sched,
                cfg.train.seed,
                step,
                (watch.pending.len(), watch.every),
            )?;
            feed.recycle(batch);
            if let Some(why) = eng.graph_note.take() {
                bar.suspend(|| {
                    eprintln!("note: the training step could not be captured as a graph ({why}); running it launch by launch")
                });
            }
            watch.pending.push(Pending { step, sched, koleo });
            step += 1;
            let epoch_end = step % sched_spe == 0 && (step / sched_spe) % val_every.max(1) == 0;
            let val_due = val.is_some() && (epoch_end || step == total);
            // Ctrl-C may reach the ranks of a job at different steps: they stop where any of them asks.
            interrupted = eng.comm.any(&eng.be, INTERRUPTED.load(Ordering::SeqCst))?;
            let stop_here = opts.stop_at.is_some_and(|s| step >= s);
            let due = step % cfg.train.checkpoint_every == 0 || step == total;
            // Every rank drains at the same steps (a data-parallel drain averages over the ranks), and
            // always before a checkpoint: none is written after an unread non-finite loss.
            if watch.pending.len() == watch.every || due || interrupted || stop_here || val_due {
                watch.drain(&mut eng, &run, &cfg, writer, sched_spe, &bar, log.as_mut())?;
            }
            if let (Some(v), true) = (val.as_mut(), val_due) {
                bar.suspend(|| v.run(&mut eng, step))?;
            }
            if writer && (due || interrupted || stop_here) {
                last_ckpt = Some(checkpoint(&run, &cfg, &eng, step, sched_spe)?);
            }
            if interrupted || stop_here || step >= total {
                break;
            }
        }
    }
    bar.finish_and_clear();
    if let Some(log) = log.as_mut() {
        log.flush().ok();
    }
    let ck = match last_ckpt {
        Some(p) => p,
        None if !writer => run.checkpoint(step),
        None => match run.latest()? {
            Some((_, p)) => p,
            None => checkpoint(&run, &cfg, &eng, step, sched_spe)?,
        },
    };
    if interrupted && writer {
        eprintln!(
            "interrupted: checkpoint written at step {step} ({}); continue with --resume {}",
            ck.display(),
            run.dir.display()
        );
    }
    Ok(TrainSummary {
        steps_done: step - start,
        last_step: step,
        losses: watch.losses,
        checkpoint: ck,
        interrupted,
        best: best.map(|_| run.dir.join("best.safetensors")),
        replayed_steps: eng.replayed_steps,
    })
}

/// One validation of the training loop: embed the validation cells, append to val.jsonl, keep
/// `best.safetensors` when the gene KNN@5 improves, and stop on a rank-0 collapse.
struct Validation<'a> {
    store: &'a Store,
    normalizer: &'a crate::data::normalize::Normalizer,
    cells: &'a [u32],
    /// val.jsonl, on the writer (rank 0) only; the other ranks validate without recording.
    log: Option<&'a mut std::fs::File>,
    best: &'a mut Option<BestRecord>,
    run: &'a RunDir,
    cfg: &'a TrainConfig,
    sched_spe: u64,
    complexes: Option<&'a crate::eval::complexes::Complexes>,
}

impl Validation<'_> {
    fn run<B: Backend>(&mut self, eng: &mut Engine<B>, step: u64) -> Result<()> {
        let epoch = step / self.sched_spe;
        let v = crate::validate::validate(
            eng,
            self.store,
            self.normalizer,
            self.cells,
            self.complexes,
            step,
            epoch,
        );
        // The validation batches' buffers are not the step's sizes: free them rather than keep them.
        eng.be.release_pooled();
        let v = v?;
        let Some(log) = self.log.as_mut() else {
            return stop_if_collapsed(&v, step);
        };
        writeln!(log, "{}", serde_json::to_string(&v)?).context("writing val.jsonl")?;
        let recall = v
            .val_recall5
            .map(|r| format!(", complex recall@5% {:.1}", 100.0 * r))
            .unwrap_or_default();
        eprintln!(
            "validation at step {step}: gene KNN@5 {:.3}, batch KNN@5 {:.3}, ratio_svg {:.1}%, median_svg {:.2}{recall}",
            v.val_top5_gene, v.val_top5_batch, v.ratio_svg, v.median_svg
        );
        if self
            .best
            .as_ref()
            .is_none_or(|b| v.val_top5_gene > b.val_top5_gene)
        {
            let meta = TrainMeta {
                step,
                epoch,
                seed: self.cfg.train.seed,
                extra: serde_json::to_value(self.cfg)?,
            };
            save_checkpoint(
                &self.run.dir.join("best.safetensors"),
                &self.cfg.model,
                &eng.to_host()?,
                &meta,
            )?;
            let b = BestRecord {
                step,
                val_top5_gene: v.val_top5_gene,
            };
            write_atomic(
                &self.run.dir.join("best.json"),
                serde_json::to_string_pretty(&b)?.as_bytes(),
            )?;
            *self.best = Some(b);
        }
        stop_if_collapsed(&v, step)
    }
}

fn stop_if_collapsed(v: &crate::validate::ValMetrics, step: u64) -> Result<()> {
    if v.ratio_svg == 0.0 {
        bail!(
            "training collapsed at step {step}: every singular value of the validation profiles' covariance is ≤ 1e-4; HINT: lower optim.lr or optim.teacher_temp"
        );
    }
    Ok(())
}

/// The crops decide the model's input: channels and sizes follow the store (global crops are the
/// store's crops, local ones half their side). `note` prints a line when the channels change.
pub fn fit_model_to_store(cfg: &mut TrainConfig, store: &Store, note: bool) -> Result<()> {
    let crop = store.crop();
    if cfg.model.in_chans != store.channels() {
        if note {
            eprintln!(
                "note: model.in_chans {} → {} (the store's channels)",
                cfg.model.in_chans,
                store.channels()
            );
        }
        cfg.model.in_chans = store.channels();
    }
    let (side, what) = match cfg.data.max_input_size {
        Some(m) if m < crop => (
            m,
            format!("data.max_input_size = {m} (the store's crops are {crop} px)"),
        ),
        _ => (crop, format!("store crops of {crop} px")),
    };
    let patch = cfg.model.patch.max(1);
    ensure!(
        side > 0 && side.is_multiple_of(patch) && (side / 2).is_multiple_of(patch),
        "{what} need a patch size dividing {side} and {}; model.patch is {}",
        side / 2,
        cfg.model.patch
    );
    (cfg.model.global_size, cfg.model.local_size) = (side, side / 2);
    cfg.validate()?;
    Ok(())
}

/// Mean entropy of softmax((t − center)/τ) over the teacher rows t: (2S, K) (what the student is taught).
/// Mean entropy of the Sinkhorn–Knopp targets the student is taught (the kernel's CPU twin in f64).
fn checkpoint<B: Backend>(
    run: &RunDir,
    cfg: &TrainConfig,
    eng: &Engine<B>,
    step: u64,
    spe: u64,
) -> Result<PathBuf> {
    let path = run.checkpoint(step);
    let meta = TrainMeta {
        step,
        epoch: step / spe.max(1),
        seed: cfg.train.seed,
        extra: serde_json::to_value(cfg)?,
    };
    let host = eng.to_host()?;
    let parts = [
        ("student weights", &host.student),
        ("teacher weights", &host.teacher),
        ("Adam first moments", &host.adam_m),
        ("Adam second moments", &host.adam_v),
        ("loss center", &host.center),
    ];
    for (what, v) in parts {
        let bad = v.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            bail!(
                "the training state became non-finite at step {step} ({bad} non-finite values in the {what}); no \
                 checkpoint was written for it; the last finite checkpoint is {}; HINT: lower optim.lr or raise \
                 optim.teacher_temp, then --resume from that checkpoint",
                last_finite(run)
            );
        }
    }
    save_checkpoint(&path, &cfg.model, &host, &meta)?;
    let all = run.list()?;
    if all.len() > cfg.train.keep_last {
        for (_, old) in &all[..all.len() - cfg.train.keep_last] {
            std::fs::remove_file(old)
                .with_context(|| format!("removing old checkpoint {}", old.display()))?;
        }
    }
    Ok(path)
}

/// The run's latest checkpoint, for messages (every checkpoint written is finite: [`checkpoint`] refuses
/// a non-finite state).
fn last_finite(run: &RunDir) -> String {
    match run.latest() {
        Ok(Some((_, p))) => p.display().to_string(),
        _ => "none (no checkpoint was written yet)".into(),
    }
}

/// Keeps only the lines of a JSONL file whose "step" satisfies `keep` (a resumed run rewrites what
/// follows its checkpoint: step logs before `start`, validation results up to and including it).
fn truncate_jsonl(path: &Path, keep: impl Fn(u64) -> bool) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut kept = String::new();
    for l in text.lines() {
        let step = serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v["step"].as_u64());
        if step.is_some_and(&keep) {
            kept.push_str(l);
            kept.push('\n');
        }
    }
    write_atomic(path, kept.as_bytes())
}

fn progress_bar(show: bool, start: u64, total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !show || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_position(start);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Reads one JSON value per line of `path`; `what` names a line in errors.
fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a {what}", path.display(), i + 1))
        })
        .collect()
}

/// Reads the log of a run.
pub fn read_log(run: &Path) -> Result<Vec<LogLine>> {
    read_jsonl(&run.join("log.jsonl"), "log line")
}

/// Reads a run's validations (val.jsonl).
pub fn read_val(run: &Path) -> Result<Vec<crate::validate::ValMetrics>> {
    read_jsonl(&run.join("val.jsonl"), "validation line")
}
