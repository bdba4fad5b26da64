//! Deterministic random streams. Every stream is a ChaCha8 generator seeded from a hash of a key tuple
//! (seed, purpose, step, ...), so a draw never depends on thread count, order of work or earlier draws.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Purpose tags keep streams for different uses apart.
pub mod purpose {
    pub const INIT: u64 = 1;
    pub const TEACHER_HEAD_INIT: u64 = 2;
    pub const DROP_PATH: u64 = 3;
    pub const TEST_DATA: u64 = 4;
}

/// SplitMix64 finaliser: a bijective mixer used to fold key words into one seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A generator for the key tuple `key` (order matters).
pub fn stream(key: &[u64]) -> ChaCha8Rng {
    let mut h = 0x6a09_e667_f3bc_c908u64;
    for &k in key {
        h = mix(h ^ mix(k));
    }
    ChaCha8Rng::seed_from_u64(h)
}
