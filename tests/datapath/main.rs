//! Data-path tests in one binary (link time): store, import, sampler, augmentation, ingest.
mod common;
mod import;
mod store;
