//! The model's data layout: one parameter table that drives names, shapes, init, weight-decay groups and
//! offsets in one flat buffer (params, grads, Adam moments and the teacher share it), the bicubic
//! positional-embedding interpolation matrix, and checkpoint IO.
//!
//! Dimension glossary (used in every shape comment): `B` images in a forward group, `V` views (crops) per
//! set, `S` sets, `n` cells per set, `N = 1 + P` tokens, `P = (H/p)·(W/p)` patches, `C` embed dim, `NH`
//! heads, `HS = C/NH`, `L` blocks, `F` MLP hidden, `K` prototypes, `CH, H, W` image channels and size,
//! `G2` learned positional grid cells, `R` generic row count.
pub mod checkpoint;
pub mod params;
pub mod pos;

pub use params::{Init, ParamLayout, ParamSpec};
