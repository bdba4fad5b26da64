//! Data-path tests in one binary (link time): store, import, sampler, augmentation, ingest.
mod augment;
mod cli;
mod common;
mod formats;
mod import;
mod ingest;
mod sampler;
mod store;
mod synth;
