//! Small shared utilities: atomic file writes, deterministic random streams, tensor comparison, job parts.
pub mod atomic;
pub mod check;
pub mod part;
pub mod progress;
pub mod rng;
pub mod tsv;
