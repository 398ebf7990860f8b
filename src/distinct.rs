//! Counting distinct values in a few bytes: linear-counting bitmaps.
//!
//! A value sets one bit chosen by its hash; the number of distinct values is estimated from the
//! share of bits still zero (Whang et al., "A linear-time probabilistic counting algorithm"). A
//! bitmap of `m` bits is exact to within a value or two up to about `m / 10` values, within a
//! few percent up to about `m`, and saturates at `m·ln m`. The host context uses 128 bits, the
//! incident evidence 512.

use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Distinct<const WORDS: usize>(pub [u64; WORDS]);

impl<const WORDS: usize> Default for Distinct<WORDS> {
    fn default() -> Self {
        Distinct([0; WORDS])
    }
}

impl<const WORDS: usize> Distinct<WORDS> {
    pub const BITS: u32 = 64 * WORDS as u32;

    pub fn insert(&mut self, value: u64) {
        let h = xxhash_rust::xxh3::xxh3_64(&value.to_le_bytes());
        let bit = (h % u64::from(Self::BITS)) as usize;
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    pub fn union(self, other: Self) -> Self {
        Distinct(std::array::from_fn(|i| self.0[i] | other.0[i]))
    }

    pub fn zeros(&self) -> u32 {
        self.0.iter().map(|w| w.count_zeros()).sum()
    }

    /// The estimated number of distinct values inserted.
    pub fn estimate(&self) -> f32 {
        estimate_of(Self::BITS, self.zeros())
    }

    /// True when every bit is set: the estimate is then a lower bound.
    pub fn saturated(&self) -> bool {
        self.zeros() == 0
    }
}

/// The linear-counting estimate of a bitmap of `bits` bits with `zeros` zero bits.
pub fn estimate_of(bits: u32, zeros: u32) -> f32 {
    let m = bits as f32;
    if zeros == 0 {
        m * m.ln()
    } else {
        // m·ln(m/zeros) rather than -m·ln(zeros/m): the same value, but an empty bitmap gives
        // +0, not -0 (which a max(0.0) may or may not turn into +0, depending on the libm and
        // the optimization level, and which the features CSV would print as "-0").
        m * (m / zeros as f32).ln()
    }
}

/// An address as one number to count: IPv4 as it is, IPv6 folded to 64 bits.
pub fn ip_value(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            (n as u64) ^ ((n >> 64) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_bitmap_estimates_positive_zero() {
        let e = Distinct::<2>::default().estimate();
        assert_eq!(e, 0.0);
        assert!(
            e.is_sign_positive(),
            "an empty set must estimate +0, got {e:?}"
        );
    }

    #[test]
    fn estimates_are_close_below_the_size_and_saturate_past_it() {
        for (n, lo, hi) in [(20u64, 17.0, 23.0), (300, 270.0, 330.0)] {
            let mut b = Distinct::<8>::default();
            for v in 0..n {
                b.insert(v);
            }
            let e = b.estimate();
            assert!((lo..=hi).contains(&e), "estimate {e} for {n} values");
        }
        let mut full = Distinct::<2>::default();
        for v in 0..5000u64 {
            full.insert(v);
        }
        assert!(full.saturated());
        assert_eq!(full.estimate(), 128.0 * 128f32.ln());
    }
}
