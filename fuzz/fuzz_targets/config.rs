//! Fuzz target `config`: see `setdino::fuzzing::config` (shared with the corpus replay in tests/fuzz_corpus.rs).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| setdino::fuzzing::config(data));
