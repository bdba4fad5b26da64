//! One Set-DINO training step over any `Backend` (algorithm.md §3, §4.1, §6.3):
//! teacher on the 2 global crops → set mean → head; student on all 2 + L crops → set mean per
//! (set, crop) → head; DINO loss with the current center; backward; center update; per-tensor clipping;
//! last-layer freeze; AdamW by decay range; EMA teacher. The flat buffers (student, teacher, grads,
//! Adam moments) share the layout of `model::params`.
use super::head::{head_backward, head_forward, HeadOffs};
use super::schedule::StepSchedule;
use super::vit::{
    backbone_backward, backbone_forward, embedding, flat_scales, BackboneOffs, DropScales,
};
use crate::backend::{AdamWHyper, Backend};
use crate::comm::{Communicator, Solo};
use crate::config::{ModelConfig, OptimConfig, TeacherInit};
use crate::data::device_step::{render_into, render_on, RawStep};
use crate::model::params::ParamLayout;
use crate::model::pos::interp_matrix;
use crate::util::rng::{self, purpose};
use anyhow::{ensure, Result};
use rand::Rng;
use std::collections::HashMap;

/// The crops of one step, set-major rows (rows s·n … s·n+n−1 are set s).
pub struct StepBatch<B: Backend> {
    /// (2, R, CH, G, G), R = S·n.
    pub global: B::Buf,
    /// (L, R, CH, l, l) when L > 0.
    pub local: Option<B::Buf>,
    pub sets: usize,
    pub set_size: usize,
    pub n_local: usize,
}

/// Loss and head outputs of one forward/backward.
pub struct LossOut<B: Backend> {
    /// The DINO cross-entropy.
    pub loss: f64,
    /// The weighted KoLeo term (0 when `koleo_weight` is 0); the objective is `loss + koleo`.
    pub koleo: f64,
    /// ((2 + L)·S, K) student head outputs, view-major.
    pub student_out: B::Buf,
    /// (2·S, K) teacher head outputs.
    pub teacher_out: B::Buf,
}

/// One forward/backward with the loss left on the device (`Engine::forward_backward_on_device`): what the
/// training loop needs without waiting for the device.
pub struct DeviceLoss<B: Backend> {
    /// (1) the DINO cross-entropy (the mean over the ranks of a data-parallel group).
    pub loss: B::Buf,
    /// The weighted KoLeo term, on the host (0 and no sync when `koleo_weight` is 0).
    pub koleo: f64,
    /// (2·S, K) the teacher targets the loss used (centered softmax, or Sinkhorn–Knopp), this rank's rows.
    pub tprobs: B::Buf,
    pub student_out: B::Buf,
    /// (2·S, K) teacher head outputs (every rank's, in a data-parallel group).
    pub teacher_out: B::Buf,
}

/// One step's monitoring values, read from the device (`Engine::read_monitor`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepMonitor {
    pub loss: f64,
    /// Mean entropy of the teacher targets (over the whole step's rows).
    pub entropy: f64,
    /// Every teacher row equal to the first (within 1e-6).
    pub same_rows: bool,
}

/// Epsilon of the KoLeo term's log and of its division by the row norm (DINOv2's 1e-8).
pub const KOLEO_EPS: f64 = 1e-8;

/// The KoLeo term's forward state over G groups of R rows of C features.
struct KoleoActs<B: Backend> {
    y: B::Buf,
    norm: B::Buf,
    nn: B::Buf,
    dist: B::Buf,
    g: usize,
    r: usize,
    c: usize,
}

impl<B: Backend> KoleoActs<B> {
    fn forward(be: &B, x: &B::Buf, g: usize, r: usize, c: usize) -> Result<Self> {
        let mut y = be.zeros(g * r * c)?;
        let mut norm = be.zeros(g * r)?;
        be.l2norm_forward(&mut y, &mut norm, x, g * r, c, KOLEO_EPS)?;
        let mut nn = be.zeros(g * r)?;
        let mut dist = be.zeros(g * r)?;
        be.koleo_forward(&mut nn, &mut dist, &y, g, r, c)?;
        Ok(KoleoActs {
            y,
            norm,
            nn,
            dist,
            g,
            r,
            c,
        })
    }
    /// Adds the term's gradient into `dx`; returns the term.
    fn backward(&self, be: &B, dx: &mut B::Buf, weight: f64) -> Result<f64> {
        let mut loss = be.zeros(1)?;
        be.koleo_backward(
            dx, &mut loss, &self.nn, &self.dist, &self.y, &self.norm, self.g, self.r, self.c,
            weight, KOLEO_EPS,
        )?;
        Ok(be.download_f64(&loss)?[0])
    }
}

/// Model state on a backend: student, teacher, gradients, AdamW moments, DINO center, step counts.
pub struct Engine<B: Backend> {
    pub be: B,
    pub cfg: ModelConfig,
    pub layout: ParamLayout,
    pub bb: BackboneOffs,
    pub hd: HeadOffs,
    pub student: B::Buf,
    pub teacher: B::Buf,
    pub grads: B::Buf,
    pub adam_m: B::Buf,
    pub adam_v: B::Buf,
    /// (K) the DINO center.
    pub center: B::Buf,
    /// AdamW step count of every trainable tensor except the last layer.
    pub adam_step: u64,
    /// AdamW step count of `head.last_layer.weight_v` (it does not advance while frozen).
    pub adam_step_last: u64,
    /// Weight of the KoLeo term on the student's global CLS tokens (`optim.koleo_weight`; 0 = off, the
    /// reference objective).
    pub koleo_weight: f64,
    /// Sinkhorn–Knopp iterations of the teacher targets (`optim.sinkhorn_iters`; 0 = the center EMA).
    pub sinkhorn_iters: usize,
    /// The data-parallel group this replica belongs to ([`Solo`] = one process, the default). With W
    /// ranks, a batch holds this rank's S/W sets of the step's S: the gradients are averaged over the
    /// ranks and the teacher rows gathered, so every replica applies the same update.
    pub comm: Box<dyn Communicator<B>>,
    interp: HashMap<usize, B::Buf>,
    trainable_ranges: Vec<(usize, usize)>,
    /// (4 · slots) per-step monitoring values written on the device (`monitor`), read by `read_monitor`.
    monitor: Option<B::Buf>,
    /// The step's scalars on the device ([`scalar_words`] layout): AdamW, EMA, teacher temperature and
    /// drop-path draws, refreshed by one upload per step, read by the kernels (so a captured step
    /// replays with each step's values).
    scalars: Option<B::Buf>,
    /// Whether `train_step_on_device` captures the step into a graph and replays it (`set_graphs`).
    graphs: bool,
    /// The shape of the last step run directly while graphs are on, and the input buffers it ran on:
    /// the next step of the same shape is captured on them (every other buffer it needs is then in the
    /// backend's pool).
    graph_warm: Option<Warm<B>>,
    /// The captured step, replayed while the step keeps its shape.
    captured: Option<CapturedStep<B>>,
    /// Why capturing failed, if it did (graphs are then off); the trainer reports it once.
    pub graph_note: Option<String>,
    /// Training steps run as a replay of a captured graph (the capturing step included).
    pub replayed_steps: u64,
    /// Recordings that failed since graphs were turned on (the second turns them off).
    capture_failures: u32,
}

/// Offsets of the step's scalar buffer (`Engine::scalars`): three AdamW records (decayed tensors,
/// undecayed tensors, the last layer), the EMA momentum pair, the teacher temperature, then the
/// drop-path scales of the student's global and local groups. `update` writes words
/// [0, `TEACHER_TEMP`), the forward [`TEACHER_TEMP`, end); a training step writes all in one upload.
pub mod scalar_words {
    use crate::backend::ADAMW_WORDS;
    pub const ADAMW_DECAY: usize = 0;
    pub const ADAMW_NO_DECAY: usize = ADAMW_WORDS;
    pub const ADAMW_LAST: usize = 2 * ADAMW_WORDS;
    /// (momentum, 1 − momentum)
    pub const EMA: usize = 3 * ADAMW_WORDS;
    pub const TEACHER_TEMP: usize = EMA + 3;
    pub const DROP: usize = TEACHER_TEMP + 1;
}

/// What makes two training steps replayable by one graph: the buffer shapes, and the work issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StepKey {
    sets: usize,
    set_size: usize,
    n_local: usize,
    global: usize,
    local: usize,
    scalars: usize,
    drop_local: Option<usize>,
    drop_global: bool,
    freeze_last_layer: bool,
}

/// A training step recorded as a graph (`Backend::capture_begin`), with the buffers it reads and
/// writes that outlive the recording. Field order: the graph is dropped before the memory it addresses.
struct CapturedStep<B: Backend> {
    graph: B::Graph,
    key: StepKey,
    /// The step's crops at the addresses the graph reads: each step's batch is copied in.
    inputs: StepBatch<B>,
    /// The loss, targets and teacher rows the graph writes (the monitor reads them after each replay).
    out: DeviceLoss<B>,
}

/// Steps run directly before a capture (`Engine::set_graphs`).
struct Warm<B: Backend> {
    /// The shape of the steps.
    key: StepKey,
    /// Where the steps' crops are copied (the captured step reads them there).
    inputs: StepBatch<B>,
    /// The last one allocated nothing: the backend's pool holds every buffer the step asks for.
    settled: bool,
}

/// One training step as planned by `train_step_on_device` (its scalars already staged).
#[derive(Clone, Copy)]
struct Plan<'a> {
    optim: &'a OptimConfig,
    sched: &'a StepSchedule,
    staged: Staged,
    key: StepKey,
    /// The monitoring slot and the slots of the monitor buffer.
    slot: (usize, usize),
}

/// Where the forward finds its drop-path draws in the scalar buffer.
#[derive(Clone, Copy, Debug)]
struct Staged {
    drop_global: bool,
    /// Offset of the local group's draws (`None`: no drop path, or no local crops).
    drop_local: Option<usize>,
}

/// Host copies of the state, for checkpoints.
#[derive(Clone, Debug)]
pub struct HostState {
    pub student: Vec<f32>,
    pub teacher: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub center: Vec<f32>,
    pub adam_step: u64,
    pub adam_step_last: u64,
}

impl HostState {
    /// A fresh model: student initialised from `seed`, teacher a copy (or with its own head),
    /// zero moments and center.
    pub fn init(cfg: &ModelConfig, seed: u64, teacher_init: TeacherInit) -> Self {
        let layout = ParamLayout::new(cfg);
        let student = layout.init(seed, purpose::INIT);
        let mut teacher = student.clone();
        if teacher_init == TeacherInit::SeparateHead {
            layout.init_head(&mut teacher, seed, purpose::TEACHER_HEAD_INIT);
        }
        HostState {
            adam_m: vec![0.0; layout.n],
            adam_v: vec![0.0; layout.n],
            center: vec![0.0; cfg.out_dim],
            student,
            teacher,
            adam_step: 0,
            adam_step_last: 0,
        }
    }
}

/// Where a training step's crops come from ([`Engine::train_step_from`]).
pub enum StepCropsIn<'a, B: Backend> {
    /// Crops already on the device: copied into the engine's input buffers where the step runs on those
    /// (while a shape warms up, and into a captured step's inputs before each replay).
    Batch(&'a StepBatch<B>),
    /// The distinct cells and every crop's parameters (`data::device_step`): rendered and normalised on
    /// the device straight into the buffers the step reads.
    Raw(&'a RawStep),
}

// Copy for any backend (a derive would ask B: Copy): both variants are shared references.
impl<B: Backend> Clone for StepCropsIn<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for StepCropsIn<'_, B> {}

/// A step's batch shape: sets, cells per set, local crops, and the words of both crop buffers.
struct CropShape {
    sets: usize,
    set_size: usize,
    n_local: usize,
    global: usize,
    local: usize,
}

impl<B: Backend> StepCropsIn<'_, B> {
    fn shape(&self, be: &B) -> CropShape {
        match self {
            StepCropsIn::Batch(b) => CropShape {
                sets: b.sets,
                set_size: b.set_size,
                n_local: b.n_local,
                global: be.buf_len(&b.global),
                local: b.local.as_ref().map_or(0, |l| be.buf_len(l)),
            },
            StepCropsIn::Raw(raw) => {
                let (global, local) = raw.crop_words();
                CropShape {
                    sets: raw.sets,
                    set_size: raw.set_size,
                    n_local: raw.n_local,
                    global,
                    local,
                }
            }
        }
    }
    /// `dst`'s crops = these (same shapes): a device copy, or the render itself.
    fn write_into(&self, be: &B, dst: &mut StepBatch<B>) -> Result<()> {
        match self {
            StepCropsIn::Batch(src) => {
                be.copy(&mut dst.global, 0, &src.global, 0, be.buf_len(&src.global))?;
                if let (Some(d), Some(s)) = (dst.local.as_mut(), src.local.as_ref()) {
                    be.copy(d, 0, s, 0, be.buf_len(s))?;
                }
                Ok(())
            }
            StepCropsIn::Raw(raw) => render_into(be, raw, dst),
        }
    }
}

/// Per-sample drop-path scales for one forward group, from the stream (seed, step, group, block, branch).
pub fn drop_scales(cfg: &ModelConfig, seed: u64, step: u64, group: u64, b: usize) -> DropScales {
    let rates = cfg.drop_path_rates();
    let draw = |l: usize, branch: u64, rate: f64| -> Vec<f32> {
        if rate <= 0.0 {
            return vec![1.0; b];
        }
        let keep = 1.0 - rate;
        let mut r = rng::stream(&[seed, purpose::DROP_PATH, step, group, l as u64, branch]);
        (0..b)
            .map(|_| {
                let u: f64 = r.random();
                ((keep + u).floor() / keep) as f32
            })
            .collect()
    };
    Some(
        rates
            .iter()
            .enumerate()
            .map(|(l, &rate)| (draw(l, 0, rate), draw(l, 1, rate)))
            .collect(),
    )
}

impl<B: Backend> Engine<B> {
    /// Uploads `state` to the backend.
    pub fn from_host(be: B, cfg: ModelConfig, state: &HostState) -> Result<Self> {
        cfg.validate()?;
        let layout = ParamLayout::new(&cfg);
        ensure!(
            state.student.len() == layout.n && state.teacher.len() == layout.n,
            "state holds {} parameters, the config needs {}",
            state.student.len(),
            layout.n
        );
        ensure!(
            state.center.len() == cfg.out_dim,
            "center length != out_dim"
        );
        let bb = BackboneOffs::new(&cfg, &layout);
        let hd = HeadOffs::new(&cfg, &layout);
        let trainable_ranges = layout.trainable_ranges();
        // The weights the bf16 GEMMs read: kept beside the f32 masters, written by AdamW and the EMA.
        let mut student = be.upload(&state.student)?;
        be.keep_bf16_copy(&mut student)?;
        let mut teacher = be.upload(&state.teacher)?;
        be.keep_bf16_copy(&mut teacher)?;
        Ok(Engine {
            student,
            teacher,
            grads: be.zeros(layout.n)?,
            adam_m: be.upload(&state.adam_m)?,
            adam_v: be.upload(&state.adam_v)?,
            center: be.upload(&state.center)?,
            adam_step: state.adam_step,
            adam_step_last: state.adam_step_last,
            koleo_weight: 0.0,
            sinkhorn_iters: 0,
            comm: Box::new(Solo),
            be,
            cfg,
            layout,
            bb,
            hd,
            interp: HashMap::new(),
            monitor: None,
            trainable_ranges,
            scalars: None,
            graphs: false,
            graph_warm: None,
            captured: None,
            graph_note: None,
            replayed_steps: 0,
            capture_failures: 0,
        })
    }

    /// Downloads the state (for checkpoints and tests).
    pub fn to_host(&self) -> Result<HostState> {
        Ok(HostState {
            student: self.be.download(&self.student)?,
            teacher: self.be.download(&self.teacher)?,
            adam_m: self.be.download(&self.adam_m)?,
            adam_v: self.be.download(&self.adam_v)?,
            center: self.be.download(&self.center)?,
            adam_step: self.adam_step,
            adam_step_last: self.adam_step_last,
        })
    }

    fn ensure_interp(&mut self, side: usize) -> Result<()> {
        if !self.interp.contains_key(&side) {
            let o = side / self.cfg.patch;
            let m: Vec<f32> = interp_matrix(self.cfg.pos_grid, o)
                .into_iter()
                .map(|x| x as f32)
                .collect();
            let buf = self.be.upload(&m)?;
            self.interp.insert(side, buf);
        }
        Ok(())
    }

    /// Replaces the interpolation matrix of `side` (tests use this to run the f64 backend on an
    /// f64-exact matrix).
    pub fn set_interp(&mut self, side: usize, m: B::Buf) {
        self.captured = None; // it reads the matrix being replaced
        self.interp.insert(side, m);
    }

    /// Turns graph capture of [`Engine::train_step_on_device`] on or off. On (where the backend can
    /// capture: the GPU backends), the first step of a shape runs directly, the second is captured,
    /// and every later step of that shape is one replay of the captured work: no launches from the
    /// host beyond the batch copy, the replay and the monitor (the counters show it). A
    /// data-parallel group and the KoLeo term (which reads a value back) run directly. With graphs
    /// on, the engine's parameter and state buffers must be written in place, never replaced.
    pub fn set_graphs(&mut self, on: bool) {
        self.graphs = on;
        self.capture_failures = 0;
        self.graph_warm = None;
        self.captured = None;
    }

    /// The backend back (the engine's buffers return to its pool).
    pub fn into_backend(self) -> B {
        self.be
    }

    /// Whether the last step was a replay of (or the capture of) a graph.
    pub fn graph_active(&self) -> bool {
        self.captured.is_some()
    }

    /// The scalar buffer of `words` words (reallocated, and the captured step dropped, if its size
    /// changes).
    fn ensure_scalars(&mut self, words: usize) -> Result<()> {
        if self.scalars.as_ref().map(|b| self.be.buf_len(b)) != Some(words) {
            self.captured = None;
            self.scalars = Some(self.be.zeros(words)?);
        }
        Ok(())
    }

    /// One upload of `words` into the scalar buffer at `off` (sized to at least `min_len` first).
    fn stage(&mut self, off: usize, words: &[f64], min_len: usize) -> Result<()> {
        let have = self.scalars.as_ref().map_or(0, |b| self.be.buf_len(b));
        if have < min_len {
            self.ensure_scalars(min_len)?;
        }
        let buf = self.scalars.as_mut().expect("sized above");
        self.be.upload_scalars(buf, off, words)
    }

    /// Words [`scalar_words::TEACHER_TEMP`, end) of the scalar buffer for one forward/backward: the
    /// teacher temperature and the step's drop-path draws (global group, then local group).
    fn forward_words(
        &self,
        (r, nl): (usize, usize),
        teacher_temp: f64,
        drop: Option<(u64, u64)>,
    ) -> (Vec<f64>, Staged) {
        let dg = drop.and_then(|(seed, step)| self.part_drop_scales(seed, step, 0, 2, r));
        let dl = match (drop, nl) {
            (Some((seed, step)), nl) if nl > 0 => self.part_drop_scales(seed, step, 1, nl, r),
            _ => None,
        };
        let mut words = vec![teacher_temp];
        words.extend(flat_scales(&dg).into_iter().map(f64::from));
        let local_off = scalar_words::TEACHER_TEMP + words.len();
        words.extend(flat_scales(&dl).into_iter().map(f64::from));
        let staged = Staged {
            drop_global: dg.is_some(),
            drop_local: dl.is_some().then_some(local_off),
        };
        (words, staged)
    }

    /// Words [0, `TEACHER_TEMP`) of the scalar buffer for the update after the current step: the
    /// AdamW records at the next step counts, and the EMA momentum.
    fn update_words(&self, optim: &OptimConfig, sched: &StepSchedule) -> Vec<f64> {
        let hyper = |t: u64, wd: f64| {
            AdamWHyper {
                lr: sched.lr,
                beta1: optim.beta1,
                beta2: optim.beta2,
                eps: optim.eps,
                weight_decay: wd,
                bias_correction1: 1.0 - optim.beta1.powi(t as i32),
                bias_correction2_sqrt: (1.0 - optim.beta2.powi(t as i32)).sqrt(),
            }
            .words()
        };
        let mut w = Vec::with_capacity(scalar_words::TEACHER_TEMP);
        w.extend(hyper(self.adam_step + 1, sched.weight_decay));
        w.extend(hyper(self.adam_step + 1, 0.0));
        w.extend(hyper(self.adam_step_last + 1, sched.weight_decay));
        w.extend([sched.momentum, 1.0 - sched.momentum, 0.0]);
        debug_assert_eq!(w.len(), scalar_words::TEACHER_TEMP);
        w
    }

    /// Set-DINO loss and gradients (into `self.grads`, zeroed first) for one batch. `drop` = Some((seed,
    /// step)) enables the student's stochastic depth. Does not touch the center or the parameters.
    /// In a data-parallel group (`comm`, W > 1) the batch is this rank's S/W sets: the gradients and the
    /// loss returned are the means over the ranks (the one-process values up to summation order), and
    /// `teacher_out` holds every rank's teacher rows in the one-process order.
    pub fn forward_backward(
        &mut self,
        batch: &StepBatch<B>,
        student_temp: f64,
        teacher_temp: f64,
        drop: Option<(u64, u64)>,
    ) -> Result<LossOut<B>> {
        let out = self.forward_backward_on_device(batch, student_temp, teacher_temp, drop)?;
        Ok(LossOut {
            loss: self.be.download_f64(&out.loss)?[0],
            koleo: out.koleo,
            student_out: out.student_out,
            teacher_out: out.teacher_out,
        })
    }

    /// [`Engine::forward_backward`] without waiting for the device: the loss stays in a device buffer
    /// (a data-parallel group averages it there), so the step issues no host sync unless KoLeo is on.
    pub fn forward_backward_on_device(
        &mut self,
        batch: &StepBatch<B>,
        student_temp: f64,
        teacher_temp: f64,
        drop: Option<(u64, u64)>,
    ) -> Result<DeviceLoss<B>> {
        let shape = (batch.sets * batch.set_size, batch.n_local);
        let (words, staged) = self.forward_words(shape, teacher_temp, drop);
        let t = scalar_words::TEACHER_TEMP;
        self.stage(t, &words, t + words.len())?;
        self.forward_backward_staged(batch, student_temp, staged)
    }

    /// The forward/backward on the staged scalars (no upload: the step's draws are in the buffer).
    fn forward_backward_staged(
        &mut self,
        batch: &StepBatch<B>,
        student_temp: f64,
        staged: Staged,
    ) -> Result<DeviceLoss<B>> {
        let cfg = self.cfg.clone();
        let (s, n, nl) = (batch.sets, batch.set_size, batch.n_local);
        let r = s * n;
        let v = 2 + nl;
        let (c, k) = (cfg.dim, cfg.out_dim);
        let (gs, ls) = (cfg.global_size, cfg.local_size);
        ensure!(
            nl == 0 || batch.local.is_some(),
            "n_local = {nl} but no local crops were given"
        );
        self.ensure_interp(gs)?;
        if nl > 0 {
            self.ensure_interp(ls)?;
        }
        let be = &self.be;
        let ig = &self.interp[&gs];
        be.fill(&mut self.grads, 0, self.layout.n, 0.0)?;

        // Teacher: global crops only, no drop path.
        let t_out = {
            let acts = backbone_forward(
                be,
                &cfg,
                &self.bb,
                &self.teacher,
                ig,
                &batch.global,
                2 * r,
                gs,
                None,
            )?;
            let mut mean = be.uninit(2 * s * c)?; // written whole
            be.set_mean_forward(&mut mean, &acts.out, 2 * s, n, c)?;
            head_forward(be, &cfg, &self.hd, &self.teacher, mean, 2 * s)?.logits
        };
        // Every rank's teacher rows, in the one-process order (the center, the Sinkhorn targets and the
        // collapse checks see the global batch).
        let t_all = self.gather_views(&t_out, 2, s)?;

        // Student: global group, then local group; the drop-path draws come from the scalar buffer.
        let scales = self.scalars.as_ref();
        let staged_buf =
            scales.ok_or_else(|| anyhow::anyhow!("the step's scalars were not staged"))?;
        let teacher_temp = (staged_buf, scalar_words::TEACHER_TEMP);
        let sg = backbone_forward(
            be,
            &cfg,
            &self.bb,
            &self.student,
            ig,
            &batch.global,
            2 * r,
            gs,
            scales
                .filter(|_| staged.drop_global)
                .map(|b| (b, scalar_words::DROP)),
        )?;
        // KoLeo over each global view's r cells (the rows are view-major).
        let koleo = if self.koleo_weight > 0.0 {
            Some(KoleoActs::forward(be, &sg.out, 2, r, c)?)
        } else {
            None
        };
        let sl = match (&batch.local, nl) {
            (Some(local), nl) if nl > 0 => {
                let il = &self.interp[&ls];
                Some(backbone_forward(
                    be,
                    &cfg,
                    &self.bb,
                    &self.student,
                    il,
                    local,
                    nl * r,
                    ls,
                    staged.drop_local.and_then(|off| scales.map(|b| (b, off))),
                )?)
            }
            _ => None,
        };
        let mut cls_all = be.uninit(v * r * c)?; // the copies below fill it
        be.copy(&mut cls_all, 0, &sg.out, 0, 2 * r * c)?;
        if let Some(sl) = &sl {
            be.copy(&mut cls_all, 2 * r * c, &sl.out, 0, nl * r * c)?;
        }
        let mut mean = be.uninit(v * s * c)?;
        be.set_mean_forward(&mut mean, &cls_all, v * s, n, c)?;
        let head = head_forward(be, &cfg, &self.hd, &self.student, mean, v * s)?;

        // (=) outputs of the loss (tprobs of the centered softmax or of Sinkhorn–Knopp)
        let mut loss = be.uninit(1)?;
        let mut dlogits = be.uninit(v * s * k)?;
        let mut tprobs = be.uninit(2 * s * k)?;
        let center = if self.sinkhorn_iters > 0 {
            match &t_all {
                None => be.dino_loss_sinkhorn(
                    &mut tprobs,
                    &t_out,
                    2 * s,
                    k,
                    teacher_temp,
                    self.sinkhorn_iters,
                )?,
                Some(all) => {
                    // Sinkhorn–Knopp normalises over the global batch; this rank keeps its rows.
                    let world = self.comm.world();
                    let mut probs = be.zeros(2 * s * world * k)?;
                    be.dino_loss_sinkhorn(
                        &mut probs,
                        all,
                        2 * s * world,
                        k,
                        teacher_temp,
                        self.sinkhorn_iters,
                    )?;
                    let first = self.comm.rank() * s;
                    for v in 0..2 {
                        be.copy(
                            &mut tprobs,
                            v * s * k,
                            &probs,
                            (v * s * world + first) * k,
                            s * k,
                        )?;
                    }
                }
            }
            None
        } else {
            Some(&self.center)
        };
        be.dino_loss_forward_backward(
            &mut loss,
            &mut dlogits,
            &mut tprobs,
            &head.logits,
            &t_out,
            center,
            v,
            s,
            k,
            student_temp,
            teacher_temp,
        )?;

        let dmean = head_backward(
            be,
            &cfg,
            &self.hd,
            &self.student,
            &mut self.grads,
            &head,
            &dlogits,
        )?;
        let mut dcls_all = be.uninit(v * r * c)?; // (=)
        be.set_mean_backward(&mut dcls_all, &dmean, v * s, n, c)?;
        let mut dcls = be.uninit(2 * r * c)?; // the copy fills it
        be.copy(&mut dcls, 0, &dcls_all, 0, 2 * r * c)?;
        let koleo = match &koleo {
            Some(k) => k.backward(be, &mut dcls, self.koleo_weight)?,
            None => 0.0,
        };
        backbone_backward(
            be,
            &cfg,
            &self.bb,
            &self.student,
            &mut self.grads,
            ig,
            &sg,
            &dcls,
        )?;
        if let Some(sl) = &sl {
            let il = &self.interp[&ls];
            let mut dcl = be.uninit(nl * r * c)?; // the copy fills it
            be.copy(&mut dcl, 0, &dcls_all, 2 * r * c, nl * r * c)?;
            backbone_backward(
                be,
                &cfg,
                &self.bb,
                &self.student,
                &mut self.grads,
                il,
                sl,
                &dcl,
            )?;
        }
        let koleo = if self.comm.world() > 1 {
            // The mean over ranks of their means over S/W sets is the mean over the S sets.
            self.comm.all_reduce_mean(&self.be, &mut self.grads)?;
            self.comm.all_reduce_mean(&self.be, &mut loss)?;
            if self.koleo_weight > 0.0 {
                self.comm.mean_of(&self.be, &[koleo])?[0]
            } else {
                koleo
            }
        } else {
            koleo
        };
        Ok(DeviceLoss {
            loss,
            koleo,
            tprobs,
            student_out: head.logits,
            teacher_out: t_all.unwrap_or(t_out),
        })
    }

    /// Writes `out`'s monitoring values (loss, teacher-target entropy, equal teacher rows) into slot
    /// `slot` of a device buffer of `slots` (one launch, no sync); [`Engine::read_monitor`] reads them.
    pub fn monitor(&mut self, out: &DeviceLoss<B>, slot: usize, slots: usize) -> Result<()> {
        ensure!(slot < slots, "monitor slot {slot} of {slots}");
        let k = self.cfg.out_dim;
        self.ensure_monitor(slots)?;
        let stats = self.monitor.as_mut().expect("allocated above");
        let rp = self.be.buf_len(&out.tprobs) / k;
        let rt = self.be.buf_len(&out.teacher_out) / k;
        self.be.dino_loss_monitor(
            stats,
            &out.loss,
            &out.tprobs,
            &out.teacher_out,
            slot,
            rp,
            rt,
            k,
        )
    }

    /// Allocates the monitoring buffer for `slots` steps, unless it has that size. Call it before the
    /// first step, so it does not take a block the step's own buffers would reuse from the pool.
    pub fn ensure_monitor(&mut self, slots: usize) -> Result<()> {
        let fits = self
            .monitor
            .as_ref()
            .is_some_and(|m| self.be.buf_len(m) == 4 * slots);
        if !fits {
            self.monitor = Some(self.be.zeros(4 * slots)?);
        }
        Ok(())
    }

    /// The first `n` slots of the monitoring buffer (one download: a host sync). In a data-parallel group
    /// the entropies (of each rank's rows) are averaged over the ranks: the whole step's mean.
    pub fn read_monitor(&self, n: usize) -> Result<Vec<StepMonitor>> {
        let Some(m) = &self.monitor else {
            return Ok(Vec::new());
        };
        let v = self.be.download_f64(m)?;
        ensure!(4 * n <= v.len(), "{n} monitor slots of {}", v.len() / 4);
        let mut entropy: Vec<f64> = (0..n).map(|i| v[4 * i + 1]).collect();
        if self.comm.world() > 1 && n > 0 {
            entropy = self.comm.mean_of(&self.be, &entropy)?;
        }
        Ok((0..n)
            .map(|i| StepMonitor {
                loss: v[4 * i],
                entropy: entropy[i],
                same_rows: v[4 * i + 2] > 0.5,
            })
            .collect())
    }

    /// Drop-path scales of this rank's rows of a forward group of `views` × R (R = `r`, this rank's rows
    /// per view): drawn for the global group (`views` × W·R rows) and sliced, so a sample's draw does not
    /// depend on how many ranks share the step.
    fn part_drop_scales(
        &self,
        seed: u64,
        step: u64,
        group: u64,
        views: usize,
        r: usize,
    ) -> DropScales {
        let (rank, world) = (self.comm.rank(), self.comm.world());
        let all = drop_scales(&self.cfg, seed, step, group, views * r * world);
        if world == 1 {
            return all;
        }
        let part = |v: Vec<f32>| -> Vec<f32> {
            (0..views)
                .flat_map(|vi| v[(vi * world + rank) * r..(vi * world + rank + 1) * r].to_vec())
                .collect()
        };
        all.map(|blocks| {
            blocks
                .into_iter()
                .map(|(a, b)| (part(a), part(b)))
                .collect()
        })
    }

    /// With W > 1 ranks: every rank's (`views`, `s`, K) rows gathered into (`views`, W·s, K), rank r's
    /// rows at W·… offset r·s of each view (the one-process row order); `None` for one rank.
    fn gather_views(&self, rows: &B::Buf, views: usize, s: usize) -> Result<Option<B::Buf>> {
        let (world, k, be) = (self.comm.world(), self.cfg.out_dim, &self.be);
        if world == 1 {
            return Ok(None);
        }
        let mut gathered = be.zeros(world * views * s * k)?;
        self.comm.all_gather(be, rows, &mut gathered)?;
        let mut out = be.zeros(world * views * s * k)?;
        for q in 0..world {
            for v in 0..views {
                be.copy(
                    &mut out,
                    (v * world + q) * s * k,
                    &gathered,
                    (q * views + v) * s * k,
                    s * k,
                )?;
            }
        }
        Ok(Some(out))
    }

    /// After the loss: center update from all teacher rows, clipping, freeze, AdamW, EMA.
    pub fn update(
        &mut self,
        optim: &OptimConfig,
        sched: &StepSchedule,
        teacher_out: &B::Buf,
    ) -> Result<()> {
        let words = self.update_words(optim, sched);
        self.stage(0, &words, scalar_words::DROP)?;
        self.update_staged(optim, sched, teacher_out)
    }

    /// [`Engine::update`] on the staged scalars (no upload).
    fn update_staged(
        &mut self,
        optim: &OptimConfig,
        sched: &StepSchedule,
        teacher_out: &B::Buf,
    ) -> Result<()> {
        let be = &self.be;
        let sc = self
            .scalars
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the step's scalars were not staged"))?;
        let rows = be.buf_len(teacher_out) / self.cfg.out_dim;
        be.dino_loss_center_update(
            &mut self.center,
            teacher_out,
            rows,
            self.cfg.out_dim,
            optim.center_momentum,
        )?;
        if optim.clip_grad > 0.0 {
            be.reduce_clip_per_tensor(&mut self.grads, &self.trainable_ranges, optim.clip_grad)?;
        }
        let l = &self.layout;
        let ranges = [
            (0, l.decay_end, scalar_words::ADAMW_DECAY),
            (l.last_end, l.trainable_end, scalar_words::ADAMW_NO_DECAY),
        ];
        let last = (!sched.freeze_last_layer).then_some((
            l.decay_end,
            l.last_end,
            scalar_words::ADAMW_LAST,
        ));
        for (lo, hi, at) in ranges.into_iter().chain(last) {
            be.adamw_update(
                &mut self.student,
                &mut self.adam_m,
                &mut self.adam_v,
                &self.grads,
                lo,
                hi,
                (sc, at),
            )?;
        }
        be.ema_update(
            &mut self.teacher,
            &self.student,
            l.n,
            (sc, scalar_words::EMA),
        )?;
        self.advance_optimizer(sched.freeze_last_layer);
        Ok(())
    }

    /// The AdamW step counts after an update (the last layer's does not advance while frozen).
    fn advance_optimizer(&mut self, freeze_last_layer: bool) {
        self.adam_step += 1;
        if !freeze_last_layer {
            self.adam_step_last += 1;
        }
    }

    /// One full training step at global iteration `step`; returns the loss.
    pub fn train_step(
        &mut self,
        batch: &StepBatch<B>,
        optim: &OptimConfig,
        sched: &StepSchedule,
        seed: u64,
        step: u64,
    ) -> Result<f64> {
        let drop = self.drop_draw(seed, step);
        let out = self.forward_backward(batch, optim.student_temp, sched.teacher_temp, drop)?;
        self.update(optim, sched, &out.teacher_out)?;
        Ok(out.loss)
    }

    /// The stochastic-depth draw of step `step` (none without drop path).
    fn drop_draw(&self, seed: u64, step: u64) -> Option<(u64, u64)> {
        (self.cfg.drop_path > 0.0).then_some((seed, step))
    }

    /// One training step as the training loop runs it: [`Engine::train_step`] without the loss download
    /// (the loss and the teacher's health go to monitoring slot `slot` of `slots`): no host sync unless
    /// KoLeo is on. Returns the weighted KoLeo term (0 when off). With graphs on
    /// ([`Engine::set_graphs`]), a step of an already captured shape is one replay.
    pub fn train_step_on_device(
        &mut self,
        batch: &StepBatch<B>,
        optim: &OptimConfig,
        sched: &StepSchedule,
        seed: u64,
        step: u64,
        slot: (usize, usize),
    ) -> Result<f64> {
        self.train_step_from(StepCropsIn::Batch(batch), optim, sched, seed, step, slot)
    }

    /// [`Engine::train_step_on_device`] on crops given either on the device or as the raw cells and
    /// crop parameters ([`StepCropsIn::Raw`]), which are rendered straight into the buffers the step
    /// reads: when the step replays its captured graph, into the graph's inputs (no copy).
    pub fn train_step_from(
        &mut self,
        crops: StepCropsIn<B>,
        optim: &OptimConfig,
        sched: &StepSchedule,
        seed: u64,
        step: u64,
        (slot, slots): (usize, usize),
    ) -> Result<f64> {
        let drop = self.drop_draw(seed, step);
        self.ensure_monitor(slots)?;
        let shape = crops.shape(&self.be);
        // Every scalar of the step in one upload: the update's words, then the forward's.
        let (fwd, staged) = self.forward_words(
            (shape.sets * shape.set_size, shape.n_local),
            sched.teacher_temp,
            drop,
        );
        let mut words = self.update_words(optim, sched);
        words.extend(fwd);
        self.ensure_scalars(words.len())?;
        self.stage(0, &words, words.len())?;
        let key = StepKey {
            sets: shape.sets,
            set_size: shape.set_size,
            n_local: shape.n_local,
            global: shape.global,
            local: shape.local,
            scalars: words.len(),
            drop_local: staged.drop_local,
            drop_global: staged.drop_global,
            freeze_last_layer: sched.freeze_last_layer,
        };
        let plan = Plan {
            optim,
            sched,
            staged,
            key,
            slot: (slot, slots),
        };
        let before = self.be.counts();
        let koleo = self.run_planned(crops, plan)?;
        // A step that had to allocate: its temporaries are in the pool now; carve them from one
        // allocation (the GPU backends' arena), which every later step and the captured graph use.
        if let (Some(b), Some(a)) = (before, self.be.counts()) {
            if a.since(b).allocs > 0 {
                self.be.settle_arena()?;
            }
        }
        Ok(koleo)
    }

    /// The planned step: directly, as a replay of its captured graph, by capturing it, or directly on
    /// the engine's input buffers while its shape warms up.
    fn run_planned(&mut self, crops: StepCropsIn<B>, plan: Plan) -> Result<f64> {
        let capturable = self.graphs && self.comm.world() == 1 && self.koleo_weight == 0.0;
        if !capturable {
            return match crops {
                StepCropsIn::Batch(batch) => self.direct_step(batch, plan),
                StepCropsIn::Raw(raw) => {
                    let batch = render_on(&self.be, raw)?;
                    self.direct_step(&batch, plan)
                }
            };
        }
        if self.captured.as_ref().is_some_and(|c| c.key == plan.key) {
            self.replay_step(crops, plan)?;
            return Ok(0.0);
        }
        match self.graph_warm.take().filter(|w| w.key == plan.key) {
            Some(w) if w.settled => self.capture_step(w.inputs, crops, plan),
            warm => self.warm_step(warm, crops, plan),
        }
    }

    /// A step of a shape not captured yet, run directly on input buffers of the engine's own (those of
    /// `warm`, the earlier steps of this shape, if any), which a later step is captured on once a step of
    /// this shape allocated nothing (every buffer it needs is then in the backend's pool).
    fn warm_step(
        &mut self,
        warm: Option<Warm<B>>,
        crops: StepCropsIn<B>,
        plan: Plan,
    ) -> Result<f64> {
        self.captured = None;
        let mut inputs = match warm {
            Some(w) => w.inputs,
            None => {
                let be = &self.be;
                StepBatch {
                    global: be.uninit(plan.key.global)?,
                    local: match plan.key.local {
                        0 => None,
                        n => Some(be.uninit(n)?),
                    },
                    sets: plan.key.sets,
                    set_size: plan.key.set_size,
                    n_local: plan.key.n_local,
                }
            }
        };
        crops.write_into(&self.be, &mut inputs)?;
        let before = self.be.counts();
        let koleo = self.direct_step(&inputs, plan)?;
        let settled = match (before, self.be.counts()) {
            (Some(b), Some(a)) => a.since(b).allocs == 0,
            _ => false,
        };
        self.graph_warm = Some(Warm {
            key: plan.key,
            inputs,
            settled,
        });
        Ok(koleo)
    }

    /// The step on the staged scalars, launch by launch; returns the weighted KoLeo term.
    fn direct_step(&mut self, batch: &StepBatch<B>, plan: Plan) -> Result<f64> {
        let out = self.forward_backward_staged(batch, plan.optim.student_temp, plan.staged)?;
        self.monitor(&out, plan.slot.0, plan.slot.1)?;
        self.update_staged(plan.optim, plan.sched, &out.teacher_out)?;
        Ok(out.koleo)
    }

    /// Copies the step's crops into the captured inputs, replays the captured step, then writes the
    /// monitor slot.
    fn replay_step(&mut self, crops: StepCropsIn<B>, plan: Plan) -> Result<()> {
        let mut c = self.captured.take().expect("checked by the caller");
        let r = (|| {
            crops.write_into(&self.be, &mut c.inputs)?;
            self.be.replay(&c.graph)?;
            self.replayed_steps += 1;
            self.advance_optimizer(plan.sched.freeze_last_layer);
            self.monitor(&c.out, plan.slot.0, plan.slot.1)
        })();
        self.captured = Some(c);
        r
    }

    /// Records this step as a graph and runs it by replaying it once. If recording fails, the step runs
    /// directly and the shape warms up again; if it fails a second time, graphs are turned off (the
    /// reason kept in `graph_note`).
    fn capture_step(
        &mut self,
        mut inputs: StepBatch<B>,
        crops: StepCropsIn<B>,
        plan: Plan,
    ) -> Result<f64> {
        self.captured = None;
        crops.write_into(&self.be, &mut inputs)?;
        let steps = (self.adam_step, self.adam_step_last);
        if !self.be.capture_begin()? {
            self.graphs = false;
        } else {
            let recorded = self
                .forward_backward_staged(&inputs, plan.optim.student_temp, plan.staged)
                .and_then(|out| {
                    self.update_staged(plan.optim, plan.sched, &out.teacher_out)?;
                    Ok(out)
                });
            // Always end the recording, also after an error.
            let graph = self.be.capture_end();
            match (recorded, graph) {
                (Ok(out), Ok(graph)) => {
                    // The recording ran nothing: this replay is the step.
                    self.be.replay(&graph)?;
                    self.replayed_steps += 1;
                    self.monitor(&out, plan.slot.0, plan.slot.1)?;
                    self.captured = Some(CapturedStep {
                        graph,
                        key: plan.key,
                        inputs,
                        out,
                    });
                    return Ok(0.0);
                }
                (Err(e), _) | (_, Err(e)) => {
                    (self.adam_step, self.adam_step_last) = steps;
                    self.capture_failures += 1;
                    if self.capture_failures < 2 {
                        // Once: e.g. the pool was emptied (after a validation pass) between the step
                        // that settled and this one. Warm up again; the step runs directly.
                        let warm = Some(Warm {
                            key: plan.key,
                            inputs,
                            settled: false,
                        });
                        return self.warm_step(warm, crops, plan);
                    }
                    self.graph_note = Some(format!("{e:#}"));
                    self.graphs = false;
                }
            }
        }
        // Graphs are off now: the step runs directly on the inputs, which hold its crops.
        self.direct_step(&inputs, plan)
    }

    /// Per-image 4×C embeddings (CLS of the last 4 blocks after the final norm) of `imgs`
    /// (B, CH, side, side), with the teacher (default for inference) or the student, no drop path.
    pub fn embed(
        &mut self,
        imgs: &B::Buf,
        b: usize,
        side: usize,
        teacher: bool,
    ) -> Result<(Vec<f32>, usize)> {
        self.ensure_interp(side)?;
        let params = if teacher {
            &self.teacher
        } else {
            &self.student
        };
        let acts = backbone_forward(
            &self.be,
            &self.cfg,
            &self.bb,
            params,
            &self.interp[&side],
            imgs,
            b,
            side,
            None,
        )?;
        let (out, width) = embedding(&self.be, &self.cfg, &self.bb, params, &acts)?;
        Ok((self.be.download(&out)?, width))
    }
}
