//! Fuzz target `npy`: see `setdino::fuzzing::npy` (shared with the corpus replay in tests/fuzz_corpus.rs).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| setdino::fuzzing::npy(data));
