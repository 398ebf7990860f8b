//! Per-host context over a short and a long sliding window, bounded in memory.
//!
//! The scorer updates it from flow events in their global order, so it is the same whatever the
//! number of shards. Each window is two buckets (the current one and the one before), weighted
//! as a sliding-window counter; distinct ports and hosts are counted with 128-bit linear-counting
//! bitmaps, which are exact up to a few dozen values and saturate near 600. A host costs about
//! 350 bytes. This module knows nothing of features or models; see `features`.

use std::net::IpAddr;
use std::sync::OnceLock;

use crate::config::HostConfig;
use crate::fasthash::FastMap;
use crate::flow::{Flow, Outcome};
use crate::packet::Micros;

#[derive(Clone, Copy, Debug, Default)]
struct Bitmap([u64; 2]);

impl Bitmap {
    fn insert(&mut self, value: u64) {
        let h = xxhash_rust::xxh3::xxh3_64(&value.to_le_bytes());
        let bit = (h % 128) as usize;
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn union(self, other: Bitmap) -> Bitmap {
        Bitmap([self.0[0] | other.0[0], self.0[1] | other.0[1]])
    }

    /// Linear-counting estimate of the distinct values inserted.
    fn estimate(self) -> f32 {
        // It depends only on the number of zero bits: computed once per count, not per call
        // (the scorer asks for six estimates per evaluation).
        static ESTIMATES: OnceLock<[f32; 129]> = OnceLock::new();
        let table = ESTIMATES.get_or_init(|| std::array::from_fn(|z| estimate_of(z as u32)));
        table[(self.0[0].count_zeros() + self.0[1].count_zeros()) as usize]
    }
}

/// Linear-counting estimate of a 128-bit bitmap with `zeros` zero bits (0 to 128).
fn estimate_of(zeros: u32) -> f32 {
    let m = 128.0f32;
    let zeros = zeros as f32;
    if zeros == 0.0 {
        m * m.ln()
    } else {
        // m·ln(m/zeros) rather than -m·ln(zeros/m): the same value, but an empty bitmap gives
        // +0, not -0 (which a max(0.0) may or may not turn into +0, depending on the libm and
        // the optimization level, and which the features CSV would print as "-0").
        m * (m / zeros).ln()
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    flows_out: u32,
    flows_in: u32,
    tcp_attempts: u32,
    tcp_failed: u32,
    other_attempts: u32,
    other_unanswered: u32,
    dst_ports: Bitmap,
    dst_hosts: Bitmap,
    sources: Bitmap,
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    start: Micros,
    cur: Bucket,
    prev: Bucket,
}

impl Window {
    fn roll(&mut self, now: Micros, len: Micros) {
        if now < self.start + len {
            return;
        }
        if now < self.start + 2 * len {
            self.prev = self.cur;
            self.start += len;
        } else {
            self.prev = Bucket::default();
            self.start = now - (now - self.start) % len;
        }
        self.cur = Bucket::default();
    }

    /// The weight of the previous bucket at `now` (sliding-window approximation).
    fn prev_weight(&self, now: Micros, len: Micros) -> f32 {
        let into = now.saturating_sub(self.start).min(len) as f32;
        1.0 - into / len as f32
    }
}

#[derive(Clone, Copy, Debug)]
struct HostEntry {
    short: Window,
    long: Window,
    last_seen: Micros,
}

/// A host's context at one moment, as the feature vector uses it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostView {
    pub flows_out_per_s: f32,
    pub dst_ports: f32,
    pub dst_hosts: f32,
    /// Share of TCP attempts that were refused or left half-open.
    pub tcp_failed_share: f32,
    /// Share of UDP/ICMP flows that got no answer (or an ICMP error).
    pub unanswered_share: f32,
    pub flows_in_per_s: f32,
    pub sources: f32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCounters {
    pub hosts: u64,
    pub hosts_untracked: u64,
    pub hosts_expired: u64,
}

pub struct HostTable {
    /// Boxed, as the flow table's flows: spare buckets then cost a pointer, not an entry.
    hosts: FastMap<IpAddr, Box<HostEntry>>,
    short_len: Micros,
    long_len: Micros,
    max_hosts: usize,
    last_sweep: Micros,
    pub counters: HostCounters,
}

impl HostTable {
    pub fn new(cfg: &HostConfig) -> HostTable {
        HostTable {
            hosts: FastMap::default(),
            short_len: ((cfg.short_window_s * 1e6) as Micros).max(1),
            long_len: ((cfg.long_window_s * 1e6) as Micros).max(1),
            max_hosts: cfg.max_hosts,
            last_sweep: 0,
            counters: HostCounters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    fn entry(&mut self, ip: IpAddr, now: Micros) -> Option<&mut HostEntry> {
        if !self.hosts.contains_key(&ip) && self.hosts.len() >= self.max_hosts {
            // Forget hosts quiet for two long windows, at most once per short window.
            if now >= self.last_sweep + self.short_len {
                self.last_sweep = now;
                let horizon = now.saturating_sub(2 * self.long_len);
                let before = self.hosts.len();
                self.hosts.retain(|_, h| h.last_seen >= horizon);
                self.counters.hosts_expired += (before - self.hosts.len()) as u64;
            }
            if self.hosts.len() >= self.max_hosts {
                self.counters.hosts_untracked += 1;
                return None;
            }
        }
        let (short_len, long_len) = (self.short_len, self.long_len);
        let counters = &mut self.counters;
        let e = self.hosts.entry(ip).or_insert_with(|| {
            counters.hosts += 1;
            Box::new(HostEntry {
                short: Window {
                    start: now - now % short_len,
                    ..Window::default()
                },
                long: Window {
                    start: now - now % long_len,
                    ..Window::default()
                },
                last_seen: now,
            })
        });
        e.short.roll(now, short_len);
        e.long.roll(now, long_len);
        e.last_seen = e.last_seen.max(now);
        Some(e)
    }

    /// A flow started at `now`.
    pub fn flow_started(&mut self, flow: &Flow, now: Micros) {
        if let Some(e) = self.entry(flow.initiator, now) {
            for b in [&mut e.short.cur, &mut e.long.cur] {
                b.flows_out = b.flows_out.saturating_add(1);
                b.dst_ports.insert(u64::from(flow.responder_port));
                b.dst_hosts.insert(ip_value(flow.responder));
            }
        }
        if let Some(e) = self.entry(flow.responder, now) {
            for b in [&mut e.short.cur, &mut e.long.cur] {
                b.flows_in = b.flows_in.saturating_add(1);
                b.sources.insert(ip_value(flow.initiator));
            }
        }
    }

    /// A flow's outcome became known (at its first evaluation).
    pub fn outcome(&mut self, flow: &Flow, outcome: Outcome, now: Micros) {
        let Some(e) = self.entry(flow.initiator, now) else {
            return;
        };
        for b in [&mut e.short.cur, &mut e.long.cur] {
            match outcome {
                Outcome::TcpEstablished => b.tcp_attempts = b.tcp_attempts.saturating_add(1),
                Outcome::TcpRejected | Outcome::TcpHalfOpen => {
                    b.tcp_attempts = b.tcp_attempts.saturating_add(1);
                    b.tcp_failed = b.tcp_failed.saturating_add(1);
                }
                Outcome::Answered => b.other_attempts = b.other_attempts.saturating_add(1),
                Outcome::Unanswered => {
                    b.other_attempts = b.other_attempts.saturating_add(1);
                    b.other_unanswered = b.other_unanswered.saturating_add(1);
                }
            }
        }
    }

    /// The short- and long-window views of a host at `now` (zero for an untracked host).
    pub fn view(&mut self, ip: IpAddr, now: Micros) -> [HostView; 2] {
        let (short_len, long_len) = (self.short_len, self.long_len);
        match self.hosts.get_mut(&ip) {
            None => [HostView::default(); 2],
            Some(e) => {
                e.short.roll(now, short_len);
                e.long.roll(now, long_len);
                [view(&e.short, now, short_len), view(&e.long, now, long_len)]
            }
        }
    }
}

fn ip_value(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            (n as u64) ^ ((n >> 64) as u64)
        }
    }
}

fn view(w: &Window, now: Micros, len: Micros) -> HostView {
    let pw = w.prev_weight(now, len);
    let sum = |f: fn(&Bucket) -> u32| f(&w.cur) as f32 + f(&w.prev) as f32 * pw;
    let share = |num: f32, den: f32| if den > 0.0 { (num / den).min(1.0) } else { 0.0 };
    let secs = len as f32 / 1e6;
    HostView {
        flows_out_per_s: sum(|b| b.flows_out) / secs,
        dst_ports: w.cur.dst_ports.union(w.prev.dst_ports).estimate(),
        dst_hosts: w.cur.dst_hosts.union(w.prev.dst_hosts).estimate(),
        tcp_failed_share: share(sum(|b| b.tcp_failed), sum(|b| b.tcp_attempts)),
        unanswered_share: share(sum(|b| b.other_unanswered), sum(|b| b.other_attempts)),
        flows_in_per_s: sum(|b| b.flows_in) / secs,
        sources: w.cur.sources.union(w.prev.sources).estimate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bitmap_estimates_positive_zero() {
        let e = Bitmap::default().estimate();
        assert_eq!(e, 0.0);
        assert!(
            e.is_sign_positive(),
            "an empty set must estimate +0, got {e:?}"
        );
    }

    #[test]
    fn estimates_come_from_the_formula() {
        let mut b = Bitmap::default();
        for v in 0..2000u64 {
            let zeros = b.0[0].count_zeros() + b.0[1].count_zeros();
            assert_eq!(b.estimate().to_bits(), estimate_of(zeros).to_bits());
            b.insert(v);
        }
        assert_eq!(
            b.estimate(),
            128.0 * 128f32.ln(),
            "saturated after 2000 values"
        );
    }

    #[test]
    fn bitmap_estimate_is_close_for_small_sets() {
        let mut b = Bitmap::default();
        for port in 0..20u64 {
            b.insert(port);
        }
        let e = b.estimate();
        assert!((17.0..=23.0).contains(&e), "estimate {e} for 20 values");
        let mut full = Bitmap::default();
        for v in 0..5000u64 {
            full.insert(v);
        }
        assert!(full.estimate() > 500.0);
    }

    #[test]
    fn window_slides() {
        let len = 1_000_000;
        let mut w = Window::default();
        w.cur.flows_out = 10;
        w.roll(1_500_000, len);
        assert_eq!(w.prev.flows_out, 10);
        assert_eq!(w.start, 1_000_000);
        let v = view(&w, 1_500_000, len);
        assert!((v.flows_out_per_s - 5.0).abs() < 1e-3, "{v:?}");
        w.roll(10_000_000, len);
        assert_eq!(w.prev.flows_out, 0);
    }
}
