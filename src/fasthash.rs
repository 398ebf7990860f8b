//! The hasher of the tables keyed by traffic (flows, hosts, fragments, alert groups).
//!
//! std's SipHash took a fifth of the flow shard's time in `replay` (4 % of all its CPU time,
//! bench/README.md); foldhash hashes a flow key in a few nanoseconds. The keys are chosen by whoever sends the packets, so the hasher is seeded at
//! random: one shared seed per process and one per table, both drawn from std's `RandomState`
//! (the operating system's randomness), never a fixed seed. Only lookups use these hashes:
//! nothing iterates a table in hash order where the order reaches the output.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use foldhash::SharedSeed;
use foldhash::fast::{FoldHasher, SeedableRandomState};

/// A `HashMap` with the randomly seeded fast hasher.
pub type FastMap<K, V> = HashMap<K, V, Seeded>;

/// Builds foldhash hashers with a per-process and a per-table random seed.
#[derive(Clone, Debug)]
pub struct Seeded(SeedableRandomState);

/// 64 random bits: std's `RandomState` keys come from the operating system once per thread
/// and differ for every `RandomState` made.
fn random_u64() -> u64 {
    RandomState::new().hash_one(0x6564_6765_7761_7463u64)
}

impl Default for Seeded {
    fn default() -> Seeded {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(random_u64()));
        Seeded(SeedableRandomState::with_seed(random_u64(), shared))
    }
}

impl BuildHasher for Seeded {
    type Hasher = FoldHasher<'static>;

    fn build_hasher(&self) -> FoldHasher<'static> {
        self.0.build_hasher()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_seeded_differently() {
        let (a, b) = (Seeded::default(), Seeded::default());
        let key = ("10.0.0.1", 443u16);
        assert_ne!(a.hash_one(key), b.hash_one(key));
        assert_eq!(a.hash_one(key), a.clone().hash_one(key));
    }
}
