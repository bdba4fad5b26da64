//! Data-path tests in one binary (link time): store, import, sampler, augmentation, ingest, job parts.
mod augment;
mod cli;
mod common;
mod formats;
mod import;
mod ingest;
mod sampler;
mod shard;
mod store;
mod synth;
