//! `Precision`: the GEMM precision of a backend and the mixed-precision policy.
use anyhow::Result;

/// Arithmetic precision of a backend's GEMMs (`--precision`, config key `train.precision`).
///
/// The mixed-precision policy, written once here: with `Bf16`, the operands of every Linear-layer GEMM
/// (forward `x·Wᵀ`, data gradient `dy·W`, weight gradient `dyᵀ·x`) are rounded to bf16 (round to
/// nearest even) and the products are accumulated in f32; outputs, bias and bias gradients, master
/// weights, AdamW moments, the center, LayerNorm statistics, softmax, the loss and every reduction stay
/// f32, and so does the head's prototype layer (its logits are divided by the temperatures:
/// `Backend::matmul_forward_full`). Attention over at most `ATTENTION_BF16_MAX` tokens (head size at most the same) rounds q, k, v,
/// dout and the P and dS operands to bf16 (the tensor-core kernel); longer sequences stay f32. `F32` computes everything in the backend's scalar type (the parity reference).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

/// Longest sequence and largest head size of the bf16 attention kernels; longer sequences run the f32
/// attention (on every backend, so the twin stays the twin).
pub const ATTENTION_BF16_MAX: usize = 64;

impl Precision {
    /// Whether attention over `n` tokens with head size `hs` runs at bf16.
    pub fn bf16_attention(self, n: usize, hs: usize) -> bool {
        self == Precision::Bf16 && n <= ATTENTION_BF16_MAX && hs <= ATTENTION_BF16_MAX
    }
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Element type of a backend buffer. Parameters, gradients, optimizer state, the residual stream and every
/// output a reduction or the loss reads are `F32`; with `Precision::Bf16` the activations whose only
/// readers are GEMM operands (LayerNorm outputs, the attention output, the GELU output: see
/// `Backend::zeros_act`) are stored as `Bf16`, and parameter buffers carry a bf16 copy that the optimizer
/// and the EMA write in the same pass as the f32 master (`Backend::keep_bf16_copy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DType {
    #[default]
    F32,
    Bf16,
    /// Unsigned 16-bit values (raw crops uploaded for augmentation on the device), two per word.
    U16,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::U16 => "u16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => anyhow::bail!("unknown precision '{other}'; expected f32 or bf16"),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
