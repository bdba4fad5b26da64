//! From a store to training tensors: the set sampler (algorithm.md §6.1–6.2), multi-crop augmentation
//! (§5) and normalisers (§7.3), with counter-based random streams.
//!
//! Key decision: every random draw is a pure function of (seed, step, set, cell, crop), so a step's
//! tensors are bit-identical for any thread count and after any resume.
//!
//! ```text
//! let store = Arc::new(Store::open(dir)?);
//! let p = Pipeline::new(store, SamplerConfig::default(), AugmentConfig::for_crop(96), NormKind::Ntc { compat_2sigma: false })?;
//! let t = p.step(step)?;   // t.global: (2, R, C, 96, 96), t.local: (8, R, C, 48, 48), R = S·n set-major
//! ```
pub mod augment;
pub mod device_step;
pub mod fastpow;
pub mod normalize;
pub mod pipeline;
pub mod rng;
pub mod sampler;

pub use augment::{make_step, make_step_into, AugmentCompat, AugmentConfig, StepCrops};
pub use normalize::{NormKind, Normalizer};
pub use pipeline::{Pipeline, Prefetch};
pub use sampler::{GroupBy, Sampler, SamplerConfig, SetDraw, Strategy};
