//! The feature vector: the ordered list of features, its schema id, and how a flow and its hosts'
//! context become one vector.
//!
//! The vector holds no addresses, no ports as identity and no absolute times, so a model trained
//! in one network applies in another. Counts, byte sizes and durations are log1p-compressed here
//! (a feature's definition); scaling to the model's range lives inside the model graph. Changing
//! anything in this list or its meaning must change [`SCHEMA_VERSION`], which changes the schema
//! id, so an old model is refused instead of silently misread.

use std::cell::Cell;
use std::sync::OnceLock;

use crate::flow::{DirStats, EvalReason, Flow};
use crate::host::HostView;
use crate::packet::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

pub const SCHEMA_VERSION: &str = "edgewatch-features-1";

/// The features, in vector order.
pub const FEATURE_NAMES: &[&str] = &[
    "proto_tcp",
    "proto_udp",
    "proto_icmp",
    "duration_log1p_ms",
    "fwd_pkts_log1p",
    "bwd_pkts_log1p",
    "fwd_bytes_log1p",
    "bwd_bytes_log1p",
    "fwd_len_mean",
    "fwd_len_std",
    "fwd_len_min",
    "fwd_len_max",
    "bwd_len_mean",
    "bwd_len_std",
    "bwd_len_min",
    "bwd_len_max",
    "fwd_iat_mean_log1p_ms",
    "fwd_iat_std_log1p_ms",
    "bwd_iat_mean_log1p_ms",
    "bwd_iat_std_log1p_ms",
    "fwd_syn_log1p",
    "fwd_fin_log1p",
    "fwd_rst_log1p",
    "fwd_psh_log1p",
    "bwd_syn_log1p",
    "bwd_fin_log1p",
    "bwd_rst_log1p",
    "bwd_psh_log1p",
    "fwd_init_window",
    "bwd_init_window",
    "fwd_ttl",
    "bwd_ttl",
    "handshake_complete",
    "answered",
    "icmp_error",
    "first_len_1",
    "first_len_2",
    "first_len_3",
    "first_len_4",
    "first_len_5",
    "first_len_6",
    "first_len_7",
    "first_len_8",
    "fwd_payload_ratio",
    "bwd_payload_ratio",
    "bwd_byte_share",
    "eval_final",
    "src_flows_per_s_short_log1p",
    "src_flows_per_s_long_log1p",
    "src_dst_ports_short_log1p",
    "src_dst_ports_long_log1p",
    "src_dst_hosts_short_log1p",
    "src_dst_hosts_long_log1p",
    "src_tcp_failed_share_short",
    "src_tcp_failed_share_long",
    "src_unanswered_share_short",
    "src_unanswered_share_long",
    "dst_flows_in_per_s_short_log1p",
    "dst_flows_in_per_s_long_log1p",
    "dst_sources_short_log1p",
    "dst_sources_long_log1p",
];

pub const FEATURE_COUNT: usize = FEATURE_NAMES.len();

/// The schema id: a hash of the version and the ordered names, e.g. `ew1-61-3f2a...`.
pub fn schema_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let text = format!("{SCHEMA_VERSION}\n{}", FEATURE_NAMES.join("\n"));
        format!(
            "ew1-{FEATURE_COUNT}-{:016x}",
            xxhash_rust::xxh3::xxh3_64(text.as_bytes())
        )
    })
}

/// ln(1 + x) for counts and rates, as the f32 nearest to libm's `ln_1p(x)`; 0 (never -0) for
/// zero, negative or NaN input.
///
/// From 1 up, libm's `ln(1 + x)` is within a few 1e-16 of it (1 + x is exact to 1.1e-16 there):
/// when that is clearly on one side of an f32 rounding boundary (all but about one value in
/// 10^5), the f32 is the one `ln_1p` rounds to; otherwise, and below 1 (where `1 + x` would lose
/// precision), `ln_1p` decides. `ln` is the faster of the two (6.4 against 14 ns per call in
/// glibc), which replay of the 1M-packet benchmark shows among the scorer's other work
/// (bench/README.md).
fn ln1p(x: f64) -> f32 {
    if (1.0..1e300).contains(&x) {
        let y = (1.0 + x).ln();
        let (low, high) = ((y * (1.0 - 1e-12)) as f32, (y * (1.0 + 1e-12)) as f32);
        if low == high {
            return low;
        }
    }
    if x > 0.0 { x.ln_1p() as f32 } else { 0.0 }
}

/// [`ln1p`] through a small per-thread cache of recent inputs: the same value, computed once
/// for the values that recur (the host context's bitmap estimates take 129 values at most).
fn ln1p_cached(x: f64) -> f32 {
    thread_local! {
        // (input bits, ln1p) by a hash of the bits; (0, 0.0) is right for +0.0.
        static CACHE: Cell<[(u64, f32); 256]> = const { Cell::new([(0, 0.0); 256]) };
    }
    let bits = x.to_bits();
    let slot = (bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize;
    CACHE.with(|cache| {
        let entries: &Cell<[(u64, f32)]> = cache;
        let entry = &entries.as_slice_of_cells()[slot];
        let (key, value) = entry.get();
        if key == bits {
            return value;
        }
        let value = ln1p(x);
        entry.set((bits, value));
        value
    })
}

/// Counts below this have their [`ln1p`] looked up (packet and flag counts mostly are).
const SMALL_COUNTS: usize = 256;

/// [`ln1p`] of a count: the very same value, from a table for small counts.
fn ln1p_count(n: u64) -> f32 {
    static TABLE: OnceLock<[f32; SMALL_COUNTS]> = OnceLock::new();
    match usize::try_from(n) {
        Ok(i) if i < SMALL_COUNTS => {
            TABLE.get_or_init(|| std::array::from_fn(|i| ln1p(i as f64)))[i]
        }
        _ => ln1p(n as f64),
    }
}

/// Fills a feature vector in order, without allocating.
struct Row<'a> {
    out: &'a mut [f32],
    at: usize,
}

impl Row<'_> {
    fn push(&mut self, x: f32) {
        self.out[self.at] = x;
        self.at += 1;
    }

    fn extend(&mut self, xs: impl IntoIterator<Item = f32>) {
        for x in xs {
            self.push(x);
        }
    }
}

fn dir_features(d: &DirStats) -> ([f32; 4], [f32; 2]) {
    if d.pkts == 0 {
        return ([0.0; 4], [0.0; 2]);
    }
    let n = f64::from(d.pkts);
    let mean = d.len_sum / n;
    let var = (d.len_sumsq / n - mean * mean).max(0.0);
    let lens = [
        mean as f32,
        var.sqrt() as f32,
        f32::from(d.len_min),
        f32::from(d.len_max),
    ];
    let gaps = n - 1.0;
    let iat = if gaps > 0.0 {
        let m = d.iat_sum / gaps;
        let v = (d.iat_sumsq / gaps - m * m).max(0.0);
        [ln1p(m), ln1p(v.sqrt())]
    } else {
        [0.0, 0.0]
    };
    (lens, iat)
}

/// Writes the feature vector of `flow` evaluated for `reason`, with the initiator's (`src`) and
/// responder's (`dst`) host context as [short, long] views.
pub fn compute(
    flow: &Flow,
    reason: EvalReason,
    src: &[HostView; 2],
    dst: &[HostView; 2],
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), FEATURE_COUNT);
    let (f, b) = (&flow.fwd, &flow.bwd);
    let (f_len, f_iat) = dir_features(f);
    let (b_len, b_iat) = dir_features(b);
    let proto = flow.key.proto;
    let bool01 = |v: bool| if v { 1.0 } else { 0.0 };
    let ratio = |num: u64, den: u64| {
        if den > 0 {
            num as f32 / den as f32
        } else {
            0.0
        }
    };
    let mut v = Row { out, at: 0 };
    v.extend([
        bool01(proto == PROTO_TCP),
        bool01(proto == PROTO_UDP),
        bool01(proto == PROTO_ICMP || proto == PROTO_ICMPV6),
        ln1p(flow.last.saturating_sub(flow.start) as f64 / 1000.0),
        ln1p_count(u64::from(f.pkts)),
        ln1p_count(u64::from(b.pkts)),
        ln1p(f.bytes as f64),
        ln1p(b.bytes as f64),
    ]);
    v.extend(f_len);
    v.extend(b_len);
    v.extend(f_iat);
    v.extend(b_iat);
    for d in [f, b] {
        for c in [d.syn, d.fin, d.rst, d.psh] {
            v.push(ln1p_count(u64::from(c)));
        }
    }
    v.extend([
        f32::from(f.init_window),
        f32::from(b.init_window),
        f32::from(f.first_ttl),
        f32::from(b.first_ttl),
        bool01(flow.established),
        bool01(b.pkts > 0),
        bool01(flow.icmp_error),
    ]);
    v.extend(flow.first_sizes.iter().map(|&s| f32::from(s)));
    v.extend([
        ratio(f.payload_bytes, f.bytes),
        ratio(b.payload_bytes, b.bytes),
        ratio(b.bytes, f.bytes + b.bytes),
        bool01(reason.is_final()),
    ]);
    let counts: [fn(&HostView) -> f32; 3] =
        [|h| h.flows_out_per_s, |h| h.dst_ports, |h| h.dst_hosts];
    for count in counts {
        v.extend(src.iter().map(|h| ln1p_cached(f64::from(count(h)))));
    }
    v.extend(src.iter().map(|s| s.tcp_failed_share));
    v.extend(src.iter().map(|s| s.unanswered_share));
    v.extend(dst.iter().map(|d| ln1p_cached(f64::from(d.flows_in_per_s))));
    v.extend(dst.iter().map(|d| ln1p_cached(f64::from(d.sources))));
    debug_assert_eq!(v.at, FEATURE_COUNT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_the_same_ln1p_from_the_table() {
        for n in (0..2 * SMALL_COUNTS as u64).chain([65_535, 1 << 40, u64::MAX]) {
            assert_eq!(
                ln1p_count(n).to_bits(),
                ln1p(n as f64).to_bits(),
                "ln1p of {n}"
            );
        }
    }

    /// Log-uniform over [1, 2^48] (byte counts, milliseconds, rates), and the integers.
    fn from_1_up() -> Vec<f64> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut values: Vec<f64> = (0..2_000_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (48.0 * (state >> 11) as f64 / (1u64 << 53) as f64).exp2()
            })
            .collect();
        values.extend((1..200_000).map(f64::from));
        values
    }

    #[test]
    fn ln1p_from_1_up_is_the_f32_of_ln_1p() {
        let mut values = from_1_up();
        values.extend([
            1.0,
            1.0 + f64::EPSILON,
            2f64.powi(52),
            1e300,
            1e308,
            f64::INFINITY,
        ]);
        for x in values {
            assert_eq!(
                ln1p(x).to_bits(),
                (x.ln_1p() as f32).to_bits(),
                "ln1p of {x}"
            );
        }
    }

    #[test]
    fn the_cache_gives_the_same_ln1p() {
        let mut x = 0.0f64;
        for i in 0..20_000u32 {
            // Recurring and new values, zeros, negatives and NaN.
            let v = match i % 4 {
                0 => f64::from(i % 300) / 7.0,
                1 => x,
                2 => -x,
                _ => f64::NAN,
            };
            assert_eq!(ln1p_cached(v).to_bits(), ln1p(v).to_bits(), "ln1p of {v}");
            x += 0.37;
        }
    }

    #[test]
    fn schema_id_is_stable_and_counts_features() {
        assert_eq!(FEATURE_COUNT, 61);
        assert!(schema_id().starts_with("ew1-61-"));
        assert_eq!(schema_id(), schema_id());
        let mut names = FEATURE_NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FEATURE_COUNT, "feature names are unique");
    }
}
