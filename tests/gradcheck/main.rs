//! Finite-difference checks (f64) of every CPU backward, one module per kernel family, plus the whole
//! Set-DINO step. Each builds L = Σ w·f(x) with a random w, runs the backward with dout = w and
//! compares with central differences.
#[path = "../common/mod.rs"]
mod common;

mod attention;
mod dino_loss;
mod gelu;
mod koleo;
mod l2norm;
mod layernorm;
mod matmul;
mod patch_embed;
mod residual;
mod set_mean;
mod step;
mod weightnorm;

/// Tolerance for f64 central differences, relative to the largest gradient entry.
pub const TOL: f64 = 1e-6;
