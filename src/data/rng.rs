//! Counter-based random streams: a key (seed, domain, counters…) is hashed into a ChaCha8 seed, so any
//! draw can be recomputed from its key alone, independent of thread count, order or resume point.
//!
//! Key decision: splitmix64 chaining for the hash (cheap, well mixed, stable forever); streams for
//! different purposes are separated by a domain constant so they never collide.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Domain of the epoch permutation of perturbations (key: epoch).
pub const DOMAIN_EPOCH: u64 = 0x45504f43;
/// Domain of one set's draw of batches and cells (key: step, set).
pub const DOMAIN_SET: u64 = 0x53455453;
/// Domain of one crop's augmentation parameters (key: step, set, cell slot, crop index).
pub const DOMAIN_AUGMENT: u64 = 0x41554730;

#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random stream for `key` under `seed` and `domain`.
pub fn stream(seed: u64, domain: u64, key: &[u64]) -> ChaCha8Rng {
    let mut h = splitmix64(seed ^ splitmix64(domain));
    for &k in key {
        h = splitmix64(h ^ splitmix64(k.wrapping_add(0x632B_E59B_D9B4_E019)));
    }
    let mut s = [0u8; 32];
    for (q, chunk) in s.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&splitmix64(h.wrapping_add(q as u64)).to_le_bytes());
    }
    ChaCha8Rng::from_seed(s)
}
