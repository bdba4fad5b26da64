//! setdino: Set-DINO training and inference for optical pooled screens.
//!
//! A tour of the crate, in reading order:
//! - [`config`]: model and training configuration, presets `vits16` and `tiny`.
//! - [`model`]: the parameter table (names, shapes, init, decay groups, offsets in one flat buffer) and
//!   checkpoint IO (safetensors with the reference state-dict names).
//! - [`backend`]: the `Backend` trait (one method per kernel entry point) and the CPU reference.
//! - [`engine`]: the Set-DINO step, written once over `Backend`: ViT, head, loss, optimizer, EMA, schedules.
//! - [`ingest`]: TIFF tiles + cell table → crop store (flat-field, percentile clip, crops, report).
//! - [`store`]: the crop store (mmap shards of u16-unorm crops, cell index, NTC stats, manifest), verify, export.
//! - [`synth`]: a synthetic screen with known ground truth (TIFF tiles, cell table, complexes, truth).
//! - [`features`]: engineered per-cell features (intensity, shape, radial, texture, colocalisation), the
//!   classical baseline.
//! - [`data`]: the set sampler, multi-crop augmentation and normalisers (what the engine trains on).
//! - [`eval`]: per-cell features → batch-level and consensus gene profiles → batch effect,
//!   reproducibility and known-complex recall, with the report and its figures (evaluation.md).
//! - [`gallery`]: cell galleries (PNG grids of crops per gene, well or k-means cluster; eval's galleries).
//! - [`plot`]: every figure (plotters, embedded font, PNG + SVG) with its TSV; `setdino report` redraws.
//! - [`experiment`]: the ablation (DINO, Set-DINO, random-init over seeds, bootstrap intervals, curves)
//!   that `demo` runs and users run on their own stores.
//! - [`comm`]: data-parallel collectives (the `Communicator` trait; in-process ranks; the launcher's
//!   variables and the NCCL id rendezvous); NCCL itself is `backend::gpu::nccl`.
//! - [`cli`]: one file per subcommand; argument handling only.
//! - [`fuzzing`]: one entry point per parser on raw bytes, for the fuzz targets and the corpus replay test.
pub mod backend;
pub mod bench;
pub mod check;
pub mod cli;
pub mod comm;
pub mod config;
pub mod data;
pub mod demo;
pub mod embed;
pub mod engine;
pub mod eval;
pub mod experiment;
pub mod features;
pub mod formats;
pub mod fuzzing;
pub mod gallery;
pub mod ingest;
pub mod model;
pub mod plot;
pub mod roofline;
pub mod store;
pub mod synth;
pub mod train;
pub mod util;
pub mod validate;
