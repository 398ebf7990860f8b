//! What the inference benchmarks share.

use edgewatch::features::FEATURE_COUNT;

/// `n` deterministic, varied feature vectors in the features' usual ranges (0 to 10), one after
/// the other.
pub fn feature_rows(n: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 10_000) as f32 / 1000.0
    };
    (0..n * FEATURE_COUNT).map(|_| next()).collect()
}
