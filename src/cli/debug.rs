//! `setdino debug step`: one Set-DINO loss + gradient evaluation for given weights and inputs, the
//! PyTorch-parity interface (design.md §8). Drop path is off; the center is the checkpoint's.
use crate::backend::select::{run_on_at, OnBackend};
use crate::backend::Backend;
use crate::engine::{Engine, StepBatch};
use crate::model::checkpoint::{infer_config, load_state, write_tensors, OutTensor, TensorFile};
use crate::model::params::ParamLayout;
use anyhow::{ensure, Result};
use clap::{Args, Subcommand};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DebugCmd {
    /// One loss + gradient evaluation (no optimizer step), for parity checks against PyTorch.
    ///
    /// Reads the weights from CHECKPOINT (`student.*`, `teacher.*`, `dino_loss.center`; sizes are read
    /// from the shapes), the crops from INPUTS (`global` f32 [2, R, C, H, W], optional `local` f32
    /// [L, R, C, h, w], R = S·n rows, set-major), and writes to OUT: `loss` [1], the gradient of every
    /// trainable student tensor under its own name, `student_out` [(2+L)·S, K] and `teacher_out`
    /// [2·S, K] (head outputs before the temperatures).
    Step(StepArgs),
}

#[derive(Args, Debug)]
pub struct StepArgs {
    /// Safetensors file with the student, teacher and center tensors (reference state-dict names).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Safetensors file with `global` [2, R, C, H, W] and optionally `local` [L, R, C, h, w].
    #[arg(long)]
    pub inputs: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Attention heads (not recoverable from the tensor shapes).
    #[arg(long)]
    pub num_heads: usize,
    /// MLP hidden size as a multiple of the embedding dim; checked against the fc1 shape.
    #[arg(long)]
    pub mlp_ratio: Option<f64>,
    /// Cells per set n (rows s·n … s·n+n−1 form set s); 1 disables the set mean.
    #[arg(long, default_value_t = 1)]
    pub set_size: usize,
    /// Teacher temperature τt (the Set-DINO reference run uses 0.01).
    #[arg(long, default_value_t = 0.01)]
    pub teacher_temp: f64,
    /// Student temperature τs.
    #[arg(long, default_value_t = 0.1)]
    pub student_temp: f64,
    /// Backend: cpu (the reference), simt (the CUDA kernels on the CPU emulator), cuda, or auto.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// GEMM precision: f32 (the reference), bf16 (tensor-core operands, f32 accumulation: on cpu the
    /// twin that rounds where the kernels do), or auto (bf16 on cuda, f32 elsewhere).
    #[arg(long, default_value = "auto")]
    pub precision: String,
}

pub fn run(cmd: DebugCmd) -> Result<()> {
    match cmd {
        DebugCmd::Step(a) => step(a),
    }
}

struct Job<'a>(&'a StepArgs);

impl OnBackend for Job<'_> {
    type Out = ();
    fn run<B: Backend>(self, be: B) -> Result<()> {
        step_on(be, self.0)
    }
}

fn step(a: StepArgs) -> Result<()> {
    run_on_at(&a.backend, &a.precision, Job(&a))
}

fn step_on<B: Backend>(be: B, a: &StepArgs) -> Result<()> {
    let ck = TensorFile::open(&a.checkpoint)?;
    let inp = TensorFile::open(&a.inputs)?;
    let mut cfg = infer_config(&ck, a.num_heads, a.mlp_ratio)?;
    let ip = a.inputs.display();
    let gshape = inp
        .shape("global")
        .map(|s| s.to_vec())
        .ok_or_else(|| anyhow::anyhow!("{ip}: tensor 'global' [2, R, C, H, W] is missing"))?;
    ensure!(
        gshape.len() == 5 && gshape[0] == 2,
        "{ip}: 'global' must be [2, R, C, H, W], got {gshape:?}"
    );
    let (r, ch, h, w) = (gshape[1], gshape[2], gshape[3], gshape[4]);
    ensure!(
        ch == cfg.in_chans,
        "{ip}: 'global' has {ch} channels but the patch embedding expects {}",
        cfg.in_chans
    );
    ensure!(h == w, "{ip}: crops must be square, got {h}×{w}");
    ensure!(
        h % cfg.patch == 0,
        "{ip}: crop side {h} is not a multiple of the patch size {}",
        cfg.patch
    );
    ensure!(
        a.set_size > 0 && r % a.set_size == 0,
        "{ip}: R = {r} rows is not a multiple of --set-size {}",
        a.set_size
    );
    cfg.global_size = h;
    let (local, nl) = match inp.shape("local").map(|s| s.to_vec()) {
        Some(ls) => {
            ensure!(
                ls.len() == 5
                    && ls[1] == r
                    && ls[2] == ch
                    && ls[3] == ls[4]
                    && ls[3] % cfg.patch == 0,
                "{ip}: 'local' must be [L, {r}, {ch}, h, h] with h a multiple of {}, got {ls:?}",
                cfg.patch
            );
            cfg.local_size = ls[3];
            (Some(be.upload(&inp.get_f32("local")?)?), ls[0])
        }
        None => (None, 0),
    };
    cfg.validate()?;
    let (state, _) = load_state(&ck, &cfg)?;
    let global = be.upload(&inp.get_f32("global")?)?;
    let s = r / a.set_size;
    let mut eng = Engine::from_host(be, cfg.clone(), &state)?;
    let batch = StepBatch {
        global,
        local,
        sets: s,
        set_size: a.set_size,
        n_local: nl,
    };
    let out = eng.forward_backward(&batch, a.student_temp, a.teacher_temp, None)?;
    let grads = eng.be.download(&eng.grads)?;
    let layout = ParamLayout::new(&cfg);
    let mut t: Vec<OutTensor> = vec![("loss".into(), vec![1], vec![out.loss as f32])];
    for sp in layout.specs.iter().filter(|s| s.trainable) {
        t.push((
            format!("student.{}", sp.name),
            sp.shape.clone(),
            grads[sp.off..sp.off + sp.len].to_vec(),
        ));
    }
    let k = cfg.out_dim;
    t.push((
        "student_out".into(),
        vec![(2 + nl) * s, k],
        eng.be.download(&out.student_out)?,
    ));
    t.push((
        "teacher_out".into(),
        vec![2 * s, k],
        eng.be.download(&out.teacher_out)?,
    ));
    write_tensors(&a.out, &t, HashMap::new())?;
    eprintln!(
        "debug step: loss {:.6}  ({} sets × {} cells, {} local crops, {}) → {}",
        out.loss,
        s,
        a.set_size,
        nl,
        eng.be.name(),
        a.out.display()
    );
    Ok(())
}
