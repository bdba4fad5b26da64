//! Checkpoints and tensor files: safetensors with the reference state-dict names (`student.*`,
//! `teacher.*`, `dino_loss.center`), AdamW moments as `optim.exp_avg.<student name>` and
//! `optim.exp_avg_sq.<student name>`, and metadata (model config JSON, step, epoch, seed, Adam step
//! counts). PyTorch's `safetensors.torch.load_file` reads them directly. Writes are atomic.
use crate::config::ModelConfig;
use crate::engine::step::HostState;
use crate::model::params::{ParamLayout, CENTER, LAST_V};
use crate::util::atomic::write_atomic;
use anyhow::{bail, ensure, Context, Result};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Format tag stored in the metadata.
pub const FORMAT: &str = "setdino.checkpoint/1";

/// One tensor's place in a mapped file.
#[derive(Clone, Debug)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A memory-mapped safetensors file with typed accessors.
pub struct TensorFile {
    path: PathBuf,
    map: memmap2::Mmap,
    entries: HashMap<String, Entry>,
    metadata: HashMap<String, String>,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the file is mapped read-only; setdino never writes a file it has mapped (checkpoints are
        // replaced by rename), so the mapping stays valid for the lifetime of `map`.
        let map = unsafe { memmap2::Mmap::map(&f) }
            .with_context(|| format!("mapping {}", path.display()))?;
        let st = SafeTensors::deserialize(&map).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid safetensors file: {e}; HINT: checkpoints and inputs are written by \
                 `safetensors.torch.save_file` or by setdino",
                path.display()
            )
        })?;
        let base = map.as_ptr() as usize;
        let mut entries = HashMap::new();
        for (name, view) in st.tensors() {
            let start = view.data().as_ptr() as usize - base;
            entries.insert(
                name,
                Entry {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    start,
                    end: start + view.data().len(),
                },
            );
        }
        let (_, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| anyhow::anyhow!("{}: bad header: {e}", path.display()))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(TensorFile {
            path: path.to_path_buf(),
            map,
            entries,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries.get(name).with_context(|| {
            format!(
                "{}: tensor '{name}' is missing; HINT: `python -c \"from safetensors import safe_open; \
                 print(list(safe_open('{}', 'np').keys()))\"` lists what it holds",
                self.path.display(),
                self.path.display()
            )
        })
    }

    /// The tensor as f64 values (F32, F64, F16 and BF16 are accepted); a tensor holding non-finite values
    /// (NaN, ±inf) is an error naming it and counting them.
    pub fn get_f64(&self, name: &str) -> Result<Vec<f64>> {
        let v = self.get_f64_raw(name)?;
        check_finite(&self.path, name, v.iter().map(|x| x.is_finite()))?;
        Ok(v)
    }

    fn get_f64_raw(&self, name: &str) -> Result<Vec<f64>> {
        let e = self.entry(name)?;
        let b = &self.map[e.start..e.end];
        Ok(match e.dtype {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            Dtype::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            other => bail!(
                "{}: tensor '{name}' has dtype {other:?}; expected a float type (F32, F64, F16, BF16)",
                self.path.display()
            ),
        })
    }

    /// The tensor as f32 values (finite, and within the f32 range).
    pub fn get_f32(&self, name: &str) -> Result<Vec<f32>> {
        let v: Vec<f32> = self.get_f64(name)?.into_iter().map(|x| x as f32).collect();
        check_finite(&self.path, name, v.iter().map(|x| x.is_finite()))?;
        Ok(v)
    }

    /// The tensor as f32, checking its shape (`[1, K]` and `[K]` style differences are errors).
    pub fn get_f32_shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let e = self.entry(name)?;
        ensure!(
            e.shape == shape,
            "{}: tensor '{name}' has shape {:?} but the model config expects {:?}",
            self.path.display(),
            e.shape,
            shape
        );
        self.get_f32(name)
    }
}

/// Error naming `name` of `path` when any of `finite` is false (counting them).
fn check_finite(path: &Path, name: &str, finite: impl Iterator<Item = bool>) -> Result<()> {
    let (mut bad, mut n) = (0usize, 0usize);
    for ok in finite {
        n += 1;
        bad += usize::from(!ok);
    }
    ensure!(
        bad == 0,
        "{}: tensor '{name}' holds {bad} non-finite value(s) (NaN or ±inf, or beyond the f32 range) of {n}; \
         HINT: the file is damaged or comes from a run that diverged; use an earlier checkpoint",
        path.display()
    );
    Ok(())
}

/// A tensor to write: name, shape, f32 values.
pub type OutTensor = (String, Vec<usize>, Vec<f32>);

/// Writes f32 tensors (and metadata) to `path` atomically.
pub fn write_tensors(
    path: &Path,
    tensors: &[OutTensor],
    metadata: HashMap<String, String>,
) -> Result<()> {
    // Never write a file that its reader would refuse.
    for (n, _, v) in tensors {
        check_finite(path, n, v.iter().map(|x| x.is_finite()))
            .context("refusing to write non-finite values")?;
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let mut b = Vec::with_capacity(v.len() * 4);
            for x in v {
                b.extend_from_slice(&x.to_le_bytes());
            }
            (n.clone(), s.clone(), b)
        })
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (n, s, b) in &bytes {
        let v = safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
            .map_err(|e| anyhow::anyhow!("tensor {n}: {e}"))?;
        views.push((n.clone(), v));
    }
    let meta = if metadata.is_empty() {
        None
    } else {
        Some(metadata)
    };
    let out = safetensors::serialize(views, meta)
        .map_err(|e| anyhow::anyhow!("serialising {}: {e}", path.display()))?;
    write_atomic(path, &out)
}

/// Training position and provenance stored with a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainMeta {
    /// Global iteration of the next step.
    pub step: u64,
    pub epoch: u64,
    /// Seed of every random stream (streams are keyed by (seed, step, …), so this is the RNG state).
    pub seed: u64,
    /// Free-form JSON (training config, data config) for the trainer.
    #[serde(default)]
    pub extra: serde_json::Value,
}

fn slice(v: &[f32], s: &crate::model::ParamSpec) -> Vec<f32> {
    v[s.off..s.off + s.len].to_vec()
}

/// Saves the full training state.
pub fn save_checkpoint(
    path: &Path,
    cfg: &ModelConfig,
    state: &HostState,
    meta: &TrainMeta,
) -> Result<()> {
    let layout = ParamLayout::new(cfg);
    let mut t: Vec<OutTensor> = Vec::new();
    for s in &layout.specs {
        t.push((
            format!("student.{}", s.name),
            s.shape.clone(),
            slice(&state.student, s),
        ));
    }
    for s in &layout.specs {
        t.push((
            format!("teacher.{}", s.name),
            s.shape.clone(),
            slice(&state.teacher, s),
        ));
    }
    t.push((CENTER.into(), vec![1, cfg.out_dim], state.center.clone()));
    for s in layout.specs.iter().filter(|s| s.trainable) {
        t.push((
            format!("optim.exp_avg.student.{}", s.name),
            s.shape.clone(),
            slice(&state.adam_m, s),
        ));
        t.push((
            format!("optim.exp_avg_sq.student.{}", s.name),
            s.shape.clone(),
            slice(&state.adam_v, s),
        ));
    }
    let mut md = HashMap::new();
    md.insert("format".into(), FORMAT.into());
    md.insert("model_config".into(), serde_json::to_string(cfg)?);
    md.insert("train".into(), serde_json::to_string(meta)?);
    md.insert("adam_step".into(), state.adam_step.to_string());
    md.insert(
        "adam_step_last_layer".into(),
        state.adam_step_last.to_string(),
    );
    // Per-tensor Adam step counts, PyTorch's optimizer view of the same information.
    let steps: HashMap<String, u64> = layout
        .specs
        .iter()
        .filter(|s| s.trainable)
        .map(|s| {
            let n = if s.name == LAST_V {
                state.adam_step_last
            } else {
                state.adam_step
            };
            (format!("student.{}", s.name), n)
        })
        .collect();
    md.insert("optim_steps".into(), serde_json::to_string(&steps)?);
    write_tensors(path, &t, md)
}

/// Loads a checkpoint for `cfg` (shapes are checked tensor by tensor). Files without optimizer state or
/// metadata (e.g. a converted reference checkpoint) load with zero moments and step 0.
pub fn load_state(file: &TensorFile, cfg: &ModelConfig) -> Result<(HostState, TrainMeta)> {
    let layout = ParamLayout::new(cfg);
    let mut st = HostState {
        student: vec![0.0; layout.n],
        teacher: vec![0.0; layout.n],
        adam_m: vec![0.0; layout.n],
        adam_v: vec![0.0; layout.n],
        center: vec![0.0; cfg.out_dim],
        adam_step: 0,
        adam_step_last: 0,
    };
    for s in &layout.specs {
        let v = file.get_f32_shaped(&format!("student.{}", s.name), &s.shape)?;
        st.student[s.off..s.off + s.len].copy_from_slice(&v);
        let v = file.get_f32_shaped(&format!("teacher.{}", s.name), &s.shape)?;
        st.teacher[s.off..s.off + s.len].copy_from_slice(&v);
        for (prefix, dst) in [
            ("optim.exp_avg.student.", &mut st.adam_m),
            ("optim.exp_avg_sq.student.", &mut st.adam_v),
        ] {
            let name = format!("{prefix}{}", s.name);
            if file.contains(&name) {
                let v = file.get_f32_shaped(&name, &s.shape)?;
                dst[s.off..s.off + s.len].copy_from_slice(&v);
            }
        }
    }
    let center_shape = file.shape(CENTER).map(|s| s.to_vec());
    st.center = match center_shape.as_deref() {
        Some([1, k]) | Some([k]) if *k == cfg.out_dim => file.get_f32(CENTER)?,
        Some(other) => bail!(
            "{}: tensor '{CENTER}' has shape {other:?} but the model config expects [1, {}]",
            file.path().display(),
            cfg.out_dim
        ),
        None => file.get_f32(CENTER)?, // produces the "missing" error with its hint
    };
    let md = file.metadata();
    let parse_u64 = |k: &str| -> Result<u64> {
        match md.get(k) {
            Some(v) => v.parse().with_context(|| {
                format!(
                    "{}: metadata '{k}' = '{v}' is not an integer",
                    file.path().display()
                )
            }),
            None => Ok(0),
        }
    };
    st.adam_step = parse_u64("adam_step")?;
    st.adam_step_last = parse_u64("adam_step_last_layer")?;
    let meta = match md.get("train") {
        Some(j) => serde_json::from_str(j).with_context(|| {
            format!(
                "{}: metadata 'train' is not valid JSON",
                file.path().display()
            )
        })?,
        None => TrainMeta::default(),
    };
    Ok((st, meta))
}

/// The model config stored in a setdino checkpoint's metadata, if any.
pub fn stored_config(file: &TensorFile) -> Result<Option<ModelConfig>> {
    match file.metadata().get("model_config") {
        Some(j) => Ok(Some(serde_json::from_str(j).with_context(|| {
            format!(
                "{}: metadata 'model_config' is not a valid model config",
                file.path().display()
            )
        })?)),
        None => Ok(None),
    }
}

/// Infers the model sizes from the tensor shapes of a checkpoint holding `student.*` tensors (what
/// `debug step` does with a PyTorch-written file). Heads cannot be read from shapes and are given.
pub fn infer_config(
    file: &TensorFile,
    heads: usize,
    mlp_ratio: Option<f64>,
) -> Result<ModelConfig> {
    let p = file.path().display().to_string();
    let shape = |n: &str| -> Result<Vec<usize>> {
        file.shape(n)
            .map(|s| s.to_vec())
            .with_context(|| format!("{p}: tensor '{n}' is missing; cannot infer the model sizes"))
    };
    let pw = shape("student.backbone.patch_embed.proj.weight")?;
    ensure!(
        pw.len() == 4 && pw[2] == pw[3],
        "{p}: patch_embed.proj.weight must be (C, CH, p, p), got {pw:?}"
    );
    let (dim, in_chans, patch) = (pw[0], pw[1], pw[2]);
    let pos = shape("student.backbone.pos_embed")?;
    ensure!(
        pos.len() == 3 && pos[0] == 1 && pos[2] == dim,
        "{p}: pos_embed must be (1, 1+G², {dim}), got {pos:?}"
    );
    let g2 = pos[1].saturating_sub(1);
    let grid = (g2 as f64).sqrt().round() as usize;
    ensure!(
        pos[1] > 1 && grid.checked_mul(grid) == Some(g2),
        "{p}: pos_embed has {} tokens, which is not 1 + a square grid",
        pos[1]
    );
    let mut depth = 0;
    while file.contains(&format!("student.backbone.blocks.{depth}.norm1.weight")) {
        depth += 1;
    }
    ensure!(
        depth > 0,
        "{p}: no student.backbone.blocks.*; is this a Set-DINO/DINO checkpoint?"
    );
    let fc1 = shape("student.backbone.blocks.0.mlp.fc1.weight")?;
    ensure!(
        fc1.len() == 2,
        "{p}: blocks.0.mlp.fc1.weight must be (F, {dim}), got {fc1:?}"
    );
    let mlp_hidden = fc1[0];
    if let Some(r) = mlp_ratio {
        ensure!(
            (dim as f64 * r).round() as usize == mlp_hidden,
            "{p}: --mlp-ratio {r} gives hidden {} but mlp.fc1.weight is {fc1:?}",
            (dim as f64 * r).round() as usize
        );
    }
    ensure!(
        heads > 0 && dim % heads == 0,
        "--num-heads {heads} must divide the embedding dim {dim}"
    );
    let mut head_layers = 0;
    while file.contains(&format!("student.head.mlp.{}.weight", 2 * head_layers)) {
        head_layers += 1;
    }
    ensure!(
        head_layers >= 2,
        "{p}: expected student.head.mlp.0/2/... weights (at least 2 layers)"
    );
    let h0 = shape("student.head.mlp.0.weight")?;
    let hl = shape(&format!(
        "student.head.mlp.{}.weight",
        2 * (head_layers - 1)
    ))?;
    ensure!(
        h0.len() == 2 && hl.len() == 2,
        "{p}: head.mlp weights must be matrices, got {h0:?} and {hl:?}"
    );
    let wv = shape("student.head.last_layer.weight_v")?;
    ensure!(
        wv.len() == 2 && wv[1] == hl[0],
        "{p}: last_layer.weight_v {wv:?} does not match bottleneck {}",
        hl[0]
    );
    let cfg = ModelConfig {
        in_chans,
        patch,
        dim,
        depth,
        heads,
        mlp_hidden,
        ln_eps: 1e-6,
        drop_path: 0.0,
        pos_grid: grid,
        head_hidden: h0[0],
        head_bottleneck: hl[0],
        head_layers,
        out_dim: wv[0],
        global_size: patch,
        local_size: patch,
    };
    Ok(cfg)
}
