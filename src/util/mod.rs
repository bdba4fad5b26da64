//! Small shared utilities: atomic file writes, deterministic random streams, tensor comparison.
pub mod atomic;
pub mod check;
pub mod progress;
pub mod rng;
pub mod tsv;
