//! Per-host context over a short and a long sliding window, bounded in memory.
//!
//! The scorer updates it from flow events in their global order, so it is the same whatever the
//! number of shards. Each window is two buckets (the current one and the one before), weighted
//! as a sliding-window counter; distinct ports and hosts are counted with 128-bit linear-counting
//! bitmaps (`distinct`), which are exact up to a few dozen values and saturate near 600. A host costs about
//! 350 bytes. This module knows nothing of features or models; see `features`.

use std::net::IpAddr;
use std::sync::OnceLock;

use crate::config::HostConfig;
use crate::distinct::{Distinct, estimate_of, ip_value};
use crate::fasthash::FastMap;
use crate::flow::{Flow, Outcome};
use crate::packet::Micros;

/// 128 bits a set: a host costs little, and the features need counts up to a few hundred.
type Bitmap = Distinct<2>;

/// The estimate of a host bitmap, from a table: it depends only on the number of zero bits, and
/// the scorer asks for six estimates per evaluation.
fn estimate(b: Bitmap) -> f32 {
    static ESTIMATES: OnceLock<[f32; 129]> = OnceLock::new();
    let table = ESTIMATES.get_or_init(|| std::array::from_fn(|z| estimate_of(128, z as u32)));
    table[b.zeros() as usize]
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

fn view(w: &Window, now: Micros, len: Micros) -> HostView {
    let pw = w.prev_weight(now, len);
    let sum = |f: fn(&Bucket) -> u32| f(&w.cur) as f32 + f(&w.prev) as f32 * pw;
    let share = |num: f32, den: f32| if den > 0.0 { (num / den).min(1.0) } else { 0.0 };
    let secs = len as f32 / 1e6;
    HostView {
        flows_out_per_s: sum(|b| b.flows_out) / secs,
        dst_ports: estimate(w.cur.dst_ports.union(w.prev.dst_ports)),
        dst_hosts: estimate(w.cur.dst_hosts.union(w.prev.dst_hosts)),
        tcp_failed_share: share(sum(|b| b.tcp_failed), sum(|b| b.tcp_attempts)),
        unanswered_share: share(sum(|b| b.other_unanswered), sum(|b| b.other_attempts)),
        flows_in_per_s: sum(|b| b.flows_in) / secs,
        sources: estimate(w.cur.sources.union(w.prev.sources)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_table_is_the_formula() {
        let mut b = Bitmap::default();
        assert!(estimate(b).is_sign_positive() && estimate(b) == 0.0);
        for v in 0..2000u64 {
            assert_eq!(estimate(b).to_bits(), b.estimate().to_bits());
            b.insert(v);
        }
        assert_eq!(
            estimate(b),
            128.0 * 128f32.ln(),
            "saturated after 2000 values"
        );
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
