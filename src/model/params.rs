//! The parameter table. `ParamLayout::new` lists every tensor of one network (backbone + head) under its
//! reference state-dict name (without the `student.`/`teacher.` prefix), then orders the flat buffer as
//! [decayed tensors | last_layer.weight_v | non-decayed tensors | frozen (weight_g)], so AdamW is one
//! launch per range and EMA, zero-grad and clipping are flat operations.
use crate::config::ModelConfig;
use crate::util::rng;
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// How a tensor is initialised (algorithm.md §1.2, §2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// `trunc_normal_(std)` with absolute limits ±2 (PyTorch's defaults a=−2, b=2).
    TruncNormal(f64),
    /// U(−bound, bound): PyTorch's default Conv2d/Linear init, kaiming_uniform(a=√5) ⇒ bound = 1/√fan_in.
    Uniform(f64),
    Zeros,
    Ones,
}

/// One tensor of the table.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    /// Reference name without the network prefix, e.g. `backbone.blocks.3.attn.qkv.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    /// In AdamW group 0 (decayed): not a bias and ndim ≠ 1 (`get_params_groups`).
    pub decay: bool,
    /// False only for `head.last_layer.weight_g` (g ≡ 1, `requires_grad=False`).
    pub trainable: bool,
    pub init: Init,
    /// Offset into the flat buffer, in elements.
    pub off: usize,
    pub len: usize,
}

/// Names of the tensors of block `i`.
pub struct BlockNames {
    pub norm1_w: String,
    pub norm1_b: String,
    pub qkv_w: String,
    pub qkv_b: String,
    pub proj_w: String,
    pub proj_b: String,
    pub norm2_w: String,
    pub norm2_b: String,
    pub fc1_w: String,
    pub fc1_b: String,
    pub fc2_w: String,
    pub fc2_b: String,
}

impl BlockNames {
    pub fn new(i: usize) -> Self {
        let p = |s: &str| format!("backbone.blocks.{i}.{s}");
        BlockNames {
            norm1_w: p("norm1.weight"),
            norm1_b: p("norm1.bias"),
            qkv_w: p("attn.qkv.weight"),
            qkv_b: p("attn.qkv.bias"),
            proj_w: p("attn.proj.weight"),
            proj_b: p("attn.proj.bias"),
            norm2_w: p("norm2.weight"),
            norm2_b: p("norm2.bias"),
            fc1_w: p("mlp.fc1.weight"),
            fc1_b: p("mlp.fc1.bias"),
            fc2_w: p("mlp.fc2.weight"),
            fc2_b: p("mlp.fc2.bias"),
        }
    }
}

pub const PATCH_W: &str = "backbone.patch_embed.proj.weight";
pub const PATCH_B: &str = "backbone.patch_embed.proj.bias";
pub const CLS: &str = "backbone.cls_token";
pub const POS: &str = "backbone.pos_embed";
pub const NORM_W: &str = "backbone.norm.weight";
pub const NORM_B: &str = "backbone.norm.bias";
pub const LAST_V: &str = "head.last_layer.weight_v";
pub const LAST_G: &str = "head.last_layer.weight_g";
/// The DINO center buffer (not a parameter; stored beside the networks).
pub const CENTER: &str = "dino_loss.center";

/// Name of head MLP linear layer `j` (Sequential indices 0, 2, 4, … because GELUs sit between).
pub fn head_mlp_name(j: usize, what: &str) -> String {
    format!("head.mlp.{}.{what}", 2 * j)
}

/// Offsets, ranges and the table for one network.
#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub specs: Vec<ParamSpec>,
    /// Total elements.
    pub n: usize,
    /// [0, decay_end): decayed tensors except the last layer.
    pub decay_end: usize,
    /// [decay_end, last_end): `head.last_layer.weight_v` (decayed, own Adam step count: the freeze).
    pub last_end: usize,
    /// [last_end, trainable_end): not decayed. [trainable_end, n): frozen (`weight_g`).
    pub trainable_end: usize,
}

impl ParamLayout {
    pub fn new(cfg: &ModelConfig) -> Self {
        let d = cfg.dim;
        let mut t: Vec<ParamSpec> = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, init: Init| {
            let is_bias = name.ends_with(".bias");
            let decay = !is_bias && shape.len() != 1;
            let trainable = name != LAST_G;
            let len = shape.iter().product();
            t.push(ParamSpec {
                name,
                shape,
                decay,
                trainable,
                init,
                off: 0,
                len,
            });
        };
        let fan_patch = cfg.in_chans * cfg.patch * cfg.patch;
        let kb = 1.0 / (fan_patch as f64).sqrt();
        add(
            PATCH_W.into(),
            vec![d, cfg.in_chans, cfg.patch, cfg.patch],
            Init::Uniform(kb),
        );
        add(PATCH_B.into(), vec![d], Init::Uniform(kb));
        add(CLS.into(), vec![1, 1, d], Init::TruncNormal(0.02));
        add(
            POS.into(),
            vec![1, cfg.pos_grid * cfg.pos_grid + 1, d],
            Init::TruncNormal(0.02),
        );
        for i in 0..cfg.depth {
            let b = BlockNames::new(i);
            add(b.norm1_w, vec![d], Init::Ones);
            add(b.norm1_b, vec![d], Init::Zeros);
            add(b.qkv_w, vec![3 * d, d], Init::TruncNormal(0.02));
            add(b.qkv_b, vec![3 * d], Init::Zeros);
            add(b.proj_w, vec![d, d], Init::TruncNormal(0.02));
            add(b.proj_b, vec![d], Init::Zeros);
            add(b.norm2_w, vec![d], Init::Ones);
            add(b.norm2_b, vec![d], Init::Zeros);
            add(b.fc1_w, vec![cfg.mlp_hidden, d], Init::TruncNormal(0.02));
            add(b.fc1_b, vec![cfg.mlp_hidden], Init::Zeros);
            add(b.fc2_w, vec![d, cfg.mlp_hidden], Init::TruncNormal(0.02));
            add(b.fc2_b, vec![d], Init::Zeros);
        }
        add(NORM_W.into(), vec![d], Init::Ones);
        add(NORM_B.into(), vec![d], Init::Zeros);
        for (j, (i, o)) in head_dims(cfg).into_iter().enumerate() {
            add(
                head_mlp_name(j, "weight"),
                vec![o, i],
                Init::TruncNormal(0.02),
            );
            add(head_mlp_name(j, "bias"), vec![o], Init::Zeros);
        }
        add(
            LAST_V.into(),
            vec![cfg.out_dim, cfg.head_bottleneck],
            Init::Uniform(1.0 / (cfg.head_bottleneck as f64).sqrt()),
        );
        add(LAST_G.into(), vec![cfg.out_dim, 1], Init::Ones);

        // Order: decayed (not last layer) | weight_v | not decayed | frozen. Stable within each class.
        let class = |s: &ParamSpec| -> u8 {
            if !s.trainable {
                3
            } else if s.name == LAST_V {
                1
            } else if s.decay {
                0
            } else {
                2
            }
        };
        let mut order: Vec<usize> = (0..t.len()).collect();
        order.sort_by_key(|&i| class(&t[i]));
        let mut off = 0;
        let mut ends = [0usize; 4];
        for &i in &order {
            t[i].off = off;
            off += t[i].len;
            ends[class(&t[i]) as usize] = off;
        }
        // Classes are contiguous and each is non-empty except possibly none; fill ends monotonically.
        let decay_end = ends[0];
        let last_end = ends[1].max(decay_end);
        let trainable_end = ends[2].max(last_end);
        ParamLayout {
            specs: t,
            n: off,
            decay_end,
            last_end,
            trainable_end,
        }
    }

    /// The tensor called `name` (without prefix).
    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }

    /// Offset of `name`. Panics on a name that is not in the table, which is a programming error.
    pub fn off(&self, name: &str) -> usize {
        match self.get(name) {
            Some(s) => s.off,
            None => panic!("parameter {name} is not in the table"),
        }
    }

    /// Trainable tensors as (off, len) ranges, in table order (for per-tensor clipping).
    pub fn trainable_ranges(&self) -> Vec<(usize, usize)> {
        self.specs
            .iter()
            .filter(|s| s.trainable)
            .map(|s| (s.off, s.len))
            .collect()
    }

    /// A freshly initialised flat buffer. Draws happen in table order from one stream keyed by
    /// (seed, purpose), so the result does not depend on anything else.
    pub fn init(&self, seed: u64, purpose: u64) -> Vec<f32> {
        let mut buf = vec![0f32; self.n];
        let mut r = rng::stream(&[seed, purpose]);
        for s in &self.specs {
            init_tensor(&mut buf[s.off..s.off + s.len], s.init, &mut r);
        }
        buf
    }

    /// Re-initialise only the head tensors of `buf` (the reference's separate teacher head).
    pub fn init_head(&self, buf: &mut [f32], seed: u64, purpose: u64) {
        let mut r = rng::stream(&[seed, purpose]);
        for s in self.specs.iter().filter(|s| s.name.starts_with("head.")) {
            init_tensor(&mut buf[s.off..s.off + s.len], s.init, &mut r);
        }
    }
}

/// (in, out) of each head MLP linear layer: C → hidden → … → hidden → bottleneck.
pub fn head_dims(cfg: &ModelConfig) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut i = cfg.dim;
    for j in 0..cfg.head_layers {
        let o = if j + 1 == cfg.head_layers {
            cfg.head_bottleneck
        } else {
            cfg.head_hidden
        };
        v.push((i, o));
        i = o;
    }
    v
}

fn init_tensor<R: Rng>(out: &mut [f32], init: Init, r: &mut R) {
    match init {
        Init::Zeros => out.fill(0.0),
        Init::Ones => out.fill(1.0),
        Init::Uniform(b) => {
            for x in out {
                *x = r.random_range(-b..b) as f32;
            }
        }
        Init::TruncNormal(std) => {
            let nd = Normal::new(0.0, std).expect("std is a positive constant of the table");
            for x in out {
                // Rejection sampling inside the absolute limits [-2, 2].
                let v = loop {
                    let v: f64 = nd.sample(r);
                    if (-2.0..=2.0).contains(&v) {
                        break v;
                    }
                };
                *x = v as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// algorithm.md §1.5: 21,763,968 backbone + 6,035,712 head parameters for ViT-S/16, 4 channels, K 2048.
    #[test]
    fn vits16_parameter_count_matches_reference_checkpoint() {
        let l = ParamLayout::new(&ModelConfig::vits16());
        let backbone: usize = l
            .specs
            .iter()
            .filter(|s| s.name.starts_with("backbone."))
            .map(|s| s.len)
            .sum();
        let head: usize = l
            .specs
            .iter()
            .filter(|s| s.name.starts_with("head."))
            .map(|s| s.len)
            .sum();
        assert_eq!(backbone, 21_763_968);
        assert_eq!(head, 6_035_712);
        assert_eq!(l.n, backbone + head);
        let trainable: usize = l.specs.iter().filter(|s| s.trainable).map(|s| s.len).sum();
        assert_eq!(2 * trainable, 55_595_264, "AdamW state size of §1.5");
        assert_eq!(l.get(POS).map(|s| s.shape.clone()), Some(vec![1, 197, 384]));
    }

    #[test]
    fn decay_groups_and_buffer_order() {
        let l = ParamLayout::new(&ModelConfig::tiny());
        for s in &l.specs {
            let want = !s.name.ends_with(".bias") && s.shape.len() != 1;
            assert_eq!(s.decay, want, "{}", s.name);
            let in_decay = s.off < l.decay_end;
            let in_last = s.off >= l.decay_end && s.off < l.last_end;
            let in_nodecay = s.off >= l.last_end && s.off < l.trainable_end;
            match s.name.as_str() {
                LAST_V => assert!(in_last),
                LAST_G => assert!(!s.trainable && s.off >= l.trainable_end),
                _ if s.decay => assert!(in_decay, "{}", s.name),
                _ => assert!(in_nodecay, "{}", s.name),
            }
        }
        for name in [CLS, POS, PATCH_W] {
            assert!(
                l.get(name).map(|s| s.decay).unwrap_or(false),
                "{name} is decayed"
            );
        }
        // Tensors tile the buffer without gaps or overlaps.
        let mut spans: Vec<(usize, usize)> = l.specs.iter().map(|s| (s.off, s.len)).collect();
        spans.sort();
        let mut at = 0;
        for (o, n) in spans {
            assert_eq!(o, at);
            at += n;
        }
        assert_eq!(at, l.n);
    }

    #[test]
    fn init_follows_the_reference_distributions() {
        let cfg = ModelConfig::vits16();
        let l = ParamLayout::new(&cfg);
        let buf = l.init(1234, 1);
        let stats = |name: &str| {
            let s = l.get(name).expect("tensor");
            let v = &buf[s.off..s.off + s.len];
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            let max = v.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
            (mean, std, max)
        };
        let (_, std, max) = stats("backbone.blocks.0.attn.qkv.weight");
        assert!(
            (std - 0.02).abs() < 2e-4,
            "trunc_normal std 0.02, got {std}"
        );
        assert!(max < 0.2);
        // kaiming_uniform(a=√5): U(±1/√fan_in), std = bound/√3.
        let (_, std, max) = stats(PATCH_W);
        assert!(max <= 1.0 / 32.0 && (std - 1.0 / 32.0 / 3f64.sqrt()).abs() < 1e-3);
        let (_, std, max) = stats(LAST_V);
        assert!(max <= 1.0 / 16.0 && (std - 1.0 / 16.0 / 3f64.sqrt()).abs() < 1e-3);
        assert_eq!(stats(LAST_G), (1.0, 0.0, 1.0));
        assert_eq!(stats("backbone.blocks.3.norm1.weight"), (1.0, 0.0, 1.0));
        assert_eq!(stats("head.mlp.2.bias"), (0.0, 0.0, 0.0));
        // Deterministic by seed.
        assert_eq!(buf, l.init(1234, 1));
        assert_ne!(buf, l.init(1235, 1));
    }
}
