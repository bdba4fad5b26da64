//! `Precision`: the GEMM precision of a backend and the mixed-precision policy.
use anyhow::Result;

/// Arithmetic precision of a backend's GEMMs (`--precision`, config key `train.precision`).
///
/// The mixed-precision policy, written once here: with `Bf16`, the operands of every Linear-layer GEMM
/// (forward `x·Wᵀ`, data gradient `dy·W`, weight gradient `dyᵀ·x`) are rounded to bf16 (round to
/// nearest even) and the products are accumulated in f32; outputs, bias and bias gradients, master
/// weights, AdamW moments, the center, LayerNorm statistics, softmax, the loss and every reduction stay
/// f32. `F32` computes everything in the backend's scalar type (the parity reference).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
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
