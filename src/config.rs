//! Configuration: the model (ViT + DINO head) and the training hyper-parameters, with the presets
//! `vits16` (the reference run of algorithm.md §0) and `tiny` (CPU demos and tests). Every size is
//! configurable; `validate` explains what is wrong in terms of the user's settings.
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// ViT backbone and DINO head sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Image channels (CH).
    pub in_chans: usize,
    /// Patch size p (square patches, stride p).
    pub patch: usize,
    /// Embedding dim C.
    pub dim: usize,
    /// Number of blocks L.
    pub depth: usize,
    /// Attention heads NH; head size HS = C / NH.
    pub heads: usize,
    /// MLP hidden size F (4·C in the reference).
    pub mlp_hidden: usize,
    /// LayerNorm epsilon (1e-6).
    pub ln_eps: f64,
    /// Student stochastic-depth rate of the last block; block i gets rate·i/(L−1).
    pub drop_path: f64,
    /// Side of the learned positional grid: the reference builds it for 224 px, so 224 / patch.
    pub pos_grid: usize,
    /// Head MLP hidden size (2048).
    pub head_hidden: usize,
    /// Head bottleneck size before L2 normalisation (256).
    pub head_bottleneck: usize,
    /// Number of linear layers in the head MLP (3).
    pub head_layers: usize,
    /// Prototypes K (out_dim).
    pub out_dim: usize,
    /// Global crop side (96).
    pub global_size: usize,
    /// Local crop side (48).
    pub local_size: usize,
}

impl ModelConfig {
    /// The reference run: ViT-S/16, 4 channels, head 384→2048→2048→256→K=2048, crops 96 and 48.
    pub fn vits16() -> Self {
        ModelConfig {
            in_chans: 4,
            patch: 16,
            dim: 384,
            depth: 12,
            heads: 6,
            mlp_hidden: 1536,
            ln_eps: 1e-6,
            drop_path: 0.1,
            pos_grid: 14,
            head_hidden: 2048,
            head_bottleneck: 256,
            head_layers: 3,
            out_dim: 2048,
            global_size: 96,
            local_size: 48,
        }
    }

    /// A small model that trains at usable speed on 2 CPU cores: 32 px crops, patch 8, dim 96, depth 4.
    pub fn tiny() -> Self {
        ModelConfig {
            in_chans: 4,
            patch: 8,
            dim: 96,
            depth: 4,
            heads: 3,
            mlp_hidden: 384,
            ln_eps: 1e-6,
            drop_path: 0.1,
            pos_grid: 28,
            head_hidden: 256,
            head_bottleneck: 64,
            head_layers: 3,
            out_dim: 256,
            global_size: 32,
            local_size: 16,
        }
    }

    /// A preset by name (`vits16` or `tiny`).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "vits16" | "vit_small" => Ok(Self::vits16()),
            "tiny" => Ok(Self::tiny()),
            other => bail!("unknown model preset '{other}'; expected one of: vits16, tiny"),
        }
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    /// Tokens N = 1 + (side / patch)² for a square crop of `side` pixels.
    pub fn tokens(&self, side: usize) -> usize {
        1 + (side / self.patch) * (side / self.patch)
    }

    /// Per-block drop-path rates, `torch.linspace(0, rate, depth)`.
    pub fn drop_path_rates(&self) -> Vec<f64> {
        (0..self.depth)
            .map(|i| {
                if self.depth > 1 {
                    self.drop_path * i as f64 / (self.depth - 1) as f64
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Checks internal consistency; the message names the offending setting.
    pub fn validate(&self) -> Result<()> {
        let pos = |n: usize, what: &str| -> Result<()> {
            if n == 0 {
                bail!("model.{what} must be positive");
            }
            Ok(())
        };
        pos(self.in_chans, "in_chans")?;
        pos(self.patch, "patch")?;
        pos(self.dim, "dim")?;
        pos(self.depth, "depth")?;
        pos(self.heads, "heads")?;
        pos(self.mlp_hidden, "mlp_hidden")?;
        pos(self.pos_grid, "pos_grid")?;
        pos(self.head_hidden, "head_hidden")?;
        pos(self.head_bottleneck, "head_bottleneck")?;
        pos(self.out_dim, "out_dim")?;
        if !self.dim.is_multiple_of(self.heads) {
            bail!(
                "model.dim ({}) must be divisible by model.heads ({})",
                self.dim,
                self.heads
            );
        }
        if self.head_layers < 2 {
            bail!(
                "model.head_layers must be at least 2 (got {})",
                self.head_layers
            );
        }
        for (what, side) in [
            ("global_size", self.global_size),
            ("local_size", self.local_size),
        ] {
            if side == 0 || side % self.patch != 0 {
                bail!(
                    "model.{what} ({side}) must be a positive multiple of model.patch ({})",
                    self.patch
                );
            }
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            bail!("model.drop_path must be in [0, 1), got {}", self.drop_path);
        }
        check_f64("model.ln_eps", self.ln_eps, Range::Positive)?;
        Ok(())
    }
}

/// The allowed range of a float setting.
#[derive(Clone, Copy, Debug)]
pub enum Range {
    /// Finite and ≥ 0.
    NonNegative,
    /// Finite and > 0.
    Positive,
    /// In [0, 1].
    Unit,
    /// In [0, 1).
    UnitOpen,
}

/// Check a float setting; the message names the key, the value and the allowed range.
pub fn check_f64(key: &str, v: f64, range: Range) -> Result<()> {
    let (ok, what) = match range {
        Range::NonNegative => (v.is_finite() && v >= 0.0, "a finite number ≥ 0"),
        Range::Positive => (v.is_finite() && v > 0.0, "a finite number > 0"),
        Range::Unit => ((0.0..=1.0).contains(&v), "in [0, 1]"),
        Range::UnitOpen => ((0.0..1.0).contains(&v), "in [0, 1)"),
    };
    if !ok {
        bail!("{key} = {v}: must be {what}");
    }
    Ok(())
}

/// Check an integer setting that must be at least `min`.
pub fn check_min(key: &str, v: u64, min: u64) -> Result<()> {
    if v < min {
        bail!("{key} = {v}: must be ≥ {min}");
    }
    Ok(())
}

/// How the teacher's DINO head is initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherInit {
    /// DINO: the teacher is a copy of the whole student.
    Copy,
    /// Set-DINO reference code: backbone copied, head initialised separately (algorithm.md §4.2).
    SeparateHead,
}

/// Optimisation hyper-parameters and schedules (algorithm.md §0, §3, §4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Base learning rate before the linear scaling by sets/256.
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: usize,
    pub weight_decay: f64,
    pub weight_decay_end: f64,
    pub momentum_teacher: f64,
    pub teacher_temp: f64,
    pub warmup_teacher_temp: f64,
    pub warmup_teacher_temp_epochs: usize,
    pub student_temp: f64,
    pub center_momentum: f64,
    /// Per-tensor gradient clipping norm; 0 disables it.
    pub clip_grad: f64,
    /// Epochs during which the student's last layer gets no update.
    pub freeze_last_layer: usize,
    /// Linear lr warm-up in steps; when set it replaces `warmup_epochs` (a short run's warm-up is then
    /// independent of how the step budget is divided into schedule epochs).
    #[serde(default)]
    pub warmup_steps: Option<u64>,
    /// Steps during which the student's last layer gets no update; when set it replaces
    /// `freeze_last_layer` (epochs).
    #[serde(default)]
    pub freeze_last_layer_steps: Option<u64>,
    /// Weight of DINOv2's KoLeo term on the student's global CLS tokens (0 = off, the reference
    /// objective). It spreads the cells of a step apart, which keeps small-batch runs from collapsing.
    #[serde(default)]
    pub koleo_weight: f64,
    /// Sinkhorn–Knopp iterations for the teacher targets (DINOv2's centering: every prototype gets an
    /// equal share of the step's rows, which rules out one prototype for every set); 0 = the reference's
    /// center EMA. DINOv2 uses 3. It needs many teacher rows per step against K: with R = 2·sets rows
    /// ≪ K each target spreads over ≥ K/R prototypes, and on the demo (R = 8 or 64, K = 256) the teacher
    /// went uniform sooner than with the center (docs/experiment.md).
    #[serde(default)]
    pub sinkhorn_iters: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub teacher_init: TeacherInit,
}

impl Default for OptimConfig {
    /// The reference run (algorithm.md §0).
    fn default() -> Self {
        OptimConfig {
            lr: 5e-4,
            min_lr: 1e-6,
            warmup_epochs: 10,
            weight_decay: 0.04,
            weight_decay_end: 0.4,
            momentum_teacher: 0.998,
            teacher_temp: 0.01,
            warmup_teacher_temp: 0.01,
            warmup_teacher_temp_epochs: 20,
            student_temp: 0.1,
            center_momentum: 0.9,
            clip_grad: 3.0,
            freeze_last_layer: 1,
            warmup_steps: None,
            freeze_last_layer_steps: None,
            koleo_weight: 0.0,
            sinkhorn_iters: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            teacher_init: TeacherInit::Copy,
        }
    }
}

impl OptimConfig {
    /// Range of every setting; the message names the key (`optim.…`) and the allowed range.
    pub fn validate(&self) -> Result<()> {
        use Range::*;
        for (key, v, r) in [
            ("optim.lr", self.lr, NonNegative),
            ("optim.min_lr", self.min_lr, NonNegative),
            ("optim.weight_decay", self.weight_decay, NonNegative),
            ("optim.weight_decay_end", self.weight_decay_end, NonNegative),
            ("optim.momentum_teacher", self.momentum_teacher, Unit),
            ("optim.teacher_temp", self.teacher_temp, Positive),
            (
                "optim.warmup_teacher_temp",
                self.warmup_teacher_temp,
                Positive,
            ),
            ("optim.student_temp", self.student_temp, Positive),
            ("optim.center_momentum", self.center_momentum, Unit),
            ("optim.clip_grad", self.clip_grad, NonNegative),
            ("optim.koleo_weight", self.koleo_weight, NonNegative),
            ("optim.beta1", self.beta1, UnitOpen),
            ("optim.beta2", self.beta2, UnitOpen),
            ("optim.eps", self.eps, Positive),
        ] {
            check_f64(key, v, r)?;
        }
        anyhow::ensure!(
            self.sinkhorn_iters <= 100,
            "optim.sinkhorn_iters = {} is out of range; HINT: 0 (the center EMA) or a few (DINOv2 uses 3), at most 100",
            self.sinkhorn_iters
        );
        Ok(())
    }
}

/// Step geometry: sets per step, cells per set, local crops, epochs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Sets per step S (the "batch" of the lr scaling rule).
    pub sets_per_step: usize,
    /// Cells per set n.
    pub set_size: usize,
    /// Local crops L (even: half from each global view's cells).
    pub n_local: usize,
    pub epochs: usize,
    pub steps_per_epoch: usize,
    pub seed: u64,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            sets_per_step: 32,
            set_size: 16,
            n_local: 8,
            epochs: 300,
            steps_per_epoch: 1000,
            seed: 1234,
        }
    }
}

impl StepConfig {
    pub fn validate(&self) -> Result<()> {
        if self.sets_per_step == 0 || self.set_size == 0 {
            bail!("sets_per_step and set_size must be positive");
        }
        if !self.n_local.is_multiple_of(2) {
            bail!(
                "n_local must be even (half per global view), got {}",
                self.n_local
            );
        }
        if self.epochs == 0 || self.steps_per_epoch == 0 {
            bail!("epochs and steps_per_epoch must be positive");
        }
        Ok(())
    }
}
