//! The scheduler: what happens to each packet, and when it leaves. No I/O here, so all of it
//! is unit-tested with made-up clocks.
//!
//! Pipeline per direction (times in ns since start):
//!   up   (inner -> outer): loss -> shared access-link shaper -> path shaper -> path delay -> out
//!   down (outer -> inner): loss -> path shaper -> path delay -> shared access-link shaper -> out
//! A shaper is a token bucket (GCRA virtual scheduling) with a bounded queue in front: a packet
//! that would wait longer than the queue holds is dropped and counted. The departure time of a
//! FIFO shaper is known when the packet arrives, so the up direction needs one timer per packet;
//! on the down direction packets of different paths reach the access link out of arrival order,
//! so they get a second timer when they reach it.

use crate::config::{Config, DirParams, JitterDist, DOWN, UP};
use crate::rng::Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counters {
    pub rx: u64,
    pub rx_bytes: u64,
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    /// forwarded packets that were held (release time after arrival)
    pub delayed: u64,
    pub dropped_loss: u64,
    /// queue in front of a rate limit was full (path or access link)
    pub dropped_queue: u64,
    /// more than max_packets in flight in the emulator
    pub dropped_overflow: u64,
    /// the send on the other interface failed
    pub dropped_tx: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.rx += o.rx;
        self.rx_bytes += o.rx_bytes;
        self.forwarded += o.forwarded;
        self.forwarded_bytes += o.forwarded_bytes;
        self.delayed += o.delayed;
        self.dropped_loss += o.dropped_loss;
        self.dropped_queue += o.dropped_queue;
        self.dropped_overflow += o.dropped_overflow;
        self.dropped_tx += o.dropped_tx;
    }
}

/// Token bucket with a bounded FIFO in front, computed analytically (GCRA virtual scheduling):
/// a packet of s bytes arriving at a leaves at d = max(a, tat - tau), then tat = max(tat, a) + s/R.
#[derive(Clone, Debug)]
pub struct Shaper {
    bytes_per_ns: f64,
    tau_ns: f64,
    max_wait_ns: f64,
    tat: f64,
}

impl Shaper {
    pub fn new(rate_mbit: f64, burst_bytes: f64, queue_bytes: f64) -> Shaper {
        let bytes_per_ns = rate_mbit * 1e6 / 8.0 / 1e9;
        Shaper { bytes_per_ns, tau_ns: burst_bytes / bytes_per_ns, max_wait_ns: queue_bytes / bytes_per_ns, tat: 0.0 }
    }

    /// Departure time of a packet arriving at `arrival` (arrivals must not go back in time),
    /// or None when the queue is full (the packet is dropped; the bucket is unchanged).
    pub fn admit(&mut self, arrival: u64, bytes: usize) -> Option<u64> {
        let a = arrival as f64;
        let depart = (self.tat - self.tau_ns).max(a);
        if depart - a > self.max_wait_ns {
            return None;
        }
        self.tat = self.tat.max(a) + bytes as f64 / self.bytes_per_ns;
        Some(depart.ceil() as u64)
    }
}

/// One direction of one path.
#[derive(Debug)]
pub struct PathDir {
    delay_ns: f64,
    jitter_ns: f64,
    dist: JitterDist,
    loss: f64,
    reorder: bool,
    shaper: Option<Shaper>,
    last_release: u64,
    rng: Rng,
    pub c: Counters,
}

impl PathDir {
    pub fn new(p: &DirParams, rng: Rng) -> PathDir {
        PathDir {
            delay_ns: p.delay_ms * 1e6,
            jitter_ns: p.jitter_ms * 1e6,
            dist: p.jitter_dist,
            loss: p.loss,
            reorder: p.reorder,
            shaper: (p.rate_mbit > 0.0).then(|| Shaper::new(p.rate_mbit, p.burst(), p.queue())),
            last_release: 0,
            rng,
            c: Counters::default(),
        }
    }

    fn lost(&mut self) -> bool {
        self.loss > 0.0 && self.rng.f64() < self.loss
    }

    /// Release time after the propagation delay for a packet that leaves the shaper at t.
    fn delayed(&mut self, t: u64) -> u64 {
        let mut d = self.delay_ns;
        if self.jitter_ns > 0.0 {
            d += match self.dist {
                JitterDist::Uniform => (2.0 * self.rng.f64() - 1.0) * self.jitter_ns,
                JitterDist::Normal => self.rng.normal().clamp(-3.0, 3.0) * self.jitter_ns,
            };
        }
        let mut r = t + d.max(0.0).round() as u64;
        if !self.reorder {
            r = r.max(self.last_release);
            self.last_release = r;
        }
        r
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// down direction: the packet reaches the access-link shaper
    Link,
    /// the packet leaves on the other interface
    Out,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    t: u64,
    seq: u64,
    stage: Stage,
    dir: u8,
    path: u32,
    slot: u32,
    arrival: u64,
    bytes: u32,
}

/// What `pop_due` hands back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Due {
    /// send `slot` on the interface of direction `dir`; `path` and `held` are for the counters
    Send { dir: usize, path: usize, slot: u32, held: bool },
    /// dropped at the access link (counted already); free `slot`
    Drop { slot: u32 },
}

#[derive(Debug)]
pub struct Path {
    pub name: String,
    pub dir: [PathDir; 2],
}

pub struct Scheduler {
    pub paths: Vec<Path>,
    /// (network, mask, path index), longest prefix first
    table: Vec<(u128, u128, usize)>,
    link: [Option<Shaper>; 2],
    pub link_dropped_queue: [u64; 2],
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
    max_in_flight: usize,
}

impl Scheduler {
    pub fn new(cfg: &Config) -> Scheduler {
        let paths = cfg
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| Path {
                name: p.name.clone(),
                dir: [
                    PathDir::new(&p.dir[UP], Rng::new(cfg.seed, 2 * i as u64)),
                    PathDir::new(&p.dir[DOWN], Rng::new(cfg.seed, 2 * i as u64 + 1)),
                ],
            })
            .collect();
        let mut table: Vec<(u128, u128, usize, u8)> = Vec::new();
        for (i, p) in cfg.paths.iter().enumerate() {
            for x in &p.prefixes {
                table.push((x.addr, crate::config::mask(x.len), i, x.len));
            }
        }
        table.sort_by(|a, b| b.3.cmp(&a.3));
        Scheduler {
            paths,
            table: table.into_iter().map(|(a, m, i, _)| (a, m, i)).collect(),
            link: [0, 1].map(|d| cfg.link[d].as_ref().map(|l| Shaper::new(l.rate_mbit, l.burst(), l.queue()))),
            link_dropped_queue: [0, 0],
            heap: BinaryHeap::new(),
            seq: 0,
            max_in_flight: cfg.max_packets,
        }
    }

    /// The path of a remote address (None: not an IP/ARP frame): longest prefix, else the default.
    pub fn lookup(&self, remote: Option<u128>) -> usize {
        if let Some(ip) = remote {
            for &(net, m, i) in &self.table {
                if ip & m == net {
                    return i;
                }
            }
        }
        0
    }

    pub fn in_flight(&self) -> usize {
        self.heap.len()
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.peek().map(|e| e.0.t)
    }

    #[allow(clippy::too_many_arguments)]
    fn push(&mut self, t: u64, stage: Stage, dir: usize, path: usize, slot: u32, arrival: u64, bytes: usize) {
        self.seq += 1;
        let ev = Event { t, seq: self.seq, stage, dir: dir as u8, path: path as u32, slot, arrival, bytes: bytes as u32 };
        self.heap.push(Reverse(ev));
    }

    /// A packet of `bytes` arrived at `now` in direction `dir`. Returns false when it was dropped
    /// (loss, a full queue or too many packets in flight; counted): the caller frees `slot`.
    pub fn on_packet(&mut self, now: u64, dir: usize, remote: Option<u128>, bytes: usize, slot: u32) -> bool {
        let pi = self.lookup(remote);
        let in_flight = self.heap.len();
        let pd = &mut self.paths[pi].dir[dir];
        pd.c.rx += 1;
        pd.c.rx_bytes += bytes as u64;
        if in_flight >= self.max_in_flight {
            pd.c.dropped_overflow += 1;
            return false;
        }
        if pd.lost() {
            pd.c.dropped_loss += 1;
            return false;
        }
        let mut t = now;
        if dir == UP {
            if let Some(l) = self.link[UP].as_mut() {
                match l.admit(t, bytes) {
                    Some(d) => t = d,
                    None => {
                        self.link_dropped_queue[UP] += 1;
                        pd.c.dropped_queue += 1;
                        return false;
                    }
                }
            }
        }
        if let Some(s) = pd.shaper.as_mut() {
            match s.admit(t, bytes) {
                Some(d) => t = d,
                None => {
                    pd.c.dropped_queue += 1;
                    return false;
                }
            }
        }
        let r = pd.delayed(t);
        let stage = if dir == DOWN && self.link[DOWN].is_some() { Stage::Link } else { Stage::Out };
        self.push(r, stage, dir, pi, slot, now, bytes);
        true
    }

    /// The next event due at or before `now`, if any.
    pub fn pop_due(&mut self, now: u64) -> Option<Due> {
        loop {
            let e = self.heap.peek()?.0;
            if e.t > now {
                return None;
            }
            self.heap.pop();
            match e.stage {
                Stage::Out => {
                    return Some(Due::Send { dir: e.dir as usize, path: e.path as usize, slot: e.slot, held: e.t > e.arrival });
                }
                Stage::Link => {
                    let l = self.link[DOWN].as_mut().expect("link stage without a link shaper");
                    match l.admit(e.t, e.bytes as usize) {
                        Some(d) => self.push(d, Stage::Out, e.dir as usize, e.path as usize, e.slot, e.arrival, e.bytes as usize),
                        None => {
                            self.link_dropped_queue[DOWN] += 1;
                            self.paths[e.path as usize].dir[DOWN].c.dropped_queue += 1;
                            return Some(Due::Drop { slot: e.slot });
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_ip, Config};

    const MS: u64 = 1_000_000;

    fn cfg(json: &str) -> Config {
        Config::from_json(json).unwrap()
    }

    /// Drain every event up to `until`, returning (time, slot) of the sends.
    fn drain(s: &mut Scheduler, until: u64) -> Vec<(u64, u32)> {
        let mut out = vec![];
        while let Some(t) = s.next_deadline() {
            if t > until {
                break;
            }
            if let Some(Due::Send { slot, .. }) = s.pop_due(t) {
                out.push((t, slot));
            }
        }
        out
    }

    #[test]
    fn longest_prefix_wins_and_unmatched_use_default() {
        let s = Scheduler::new(&cfg(r#"{"paths": [
            {"name": "net", "prefixes": ["198.51.100.0/24", "2001:db8::/32"]},
            {"name": "host", "prefixes": ["198.51.100.80"]}]}"#));
        assert_eq!(s.lookup(parse_ip("198.51.100.80")), 2);
        assert_eq!(s.lookup(parse_ip("198.51.100.81")), 1);
        assert_eq!(s.lookup(parse_ip("2001:db8:5::1")), 1);
        assert_eq!(s.lookup(parse_ip("203.0.113.1")), 0);
        assert_eq!(s.lookup(None), 0);
        // an IPv4 prefix never matches an IPv6 address with the same low bits
        assert_eq!(s.lookup(parse_ip("::c633:6450")), 0);
    }

    #[test]
    fn fixed_delay_per_path_and_direction() {
        let mut s = Scheduler::new(&cfg(r#"{"default": {"delay_ms": 1},
            "paths": [{"prefixes": "10.0.0.2", "up": {"delay_ms": 30}, "down": {"delay_ms": 70}}]}"#));
        let far = parse_ip("10.0.0.2");
        assert!(s.on_packet(0, UP, far, 100, 1));
        assert!(s.on_packet(0, DOWN, far, 100, 2));
        assert!(s.on_packet(0, UP, parse_ip("10.0.0.3"), 100, 3));
        assert_eq!(drain(&mut s, u64::MAX), vec![(MS, 3), (30 * MS, 1), (70 * MS, 2)]);
        assert_eq!(s.pop_due(u64::MAX), None);
    }

    #[test]
    fn jitter_keeps_order_unless_reorder_is_on() {
        for reorder in [false, true] {
            let mut s = Scheduler::new(&cfg(&format!(
                r#"{{"seed": 3, "default": {{"delay_ms": 50, "jitter_ms": 20, "reorder": {reorder}}}}}"#
            )));
            let n = 2000u32;
            for i in 0..n {
                assert!(s.on_packet(i as u64 * 100_000, UP, None, 100, i)); // one packet per 0.1 ms
            }
            let out = drain(&mut s, u64::MAX);
            assert_eq!(out.len(), n as usize);
            let in_order = out.windows(2).all(|w| w[0].1 < w[1].1);
            assert_eq!(in_order, !reorder, "reorder={reorder}");
            // each packet is held between delay - jitter and delay + jitter (+ the wait for its predecessor)
            let mut sum = 0.0;
            for &(t, slot) in &out {
                let held = (t - slot as u64 * 100_000) as f64 / MS as f64;
                assert!(held >= 30.0 - 1e-6, "{held}");
                if reorder {
                    assert!(held <= 70.0 + 1e-6, "{held}");
                }
                sum += held;
            }
            let mean = sum / n as f64;
            if reorder {
                assert!((mean - 50.0).abs() < 1.0, "mean {mean}"); // uniform jitter is unbiased
            } else {
                assert!(mean > 50.0 && mean < 70.0, "mean {mean}"); // order costs extra delay
            }
        }
    }

    #[test]
    fn loss_rate_and_reproducibility() {
        let run = |seed: u64| {
            let mut s = Scheduler::new(&cfg(&format!(r#"{{"seed": {seed}, "default": {{"loss": 0.03}}}}"#)));
            let kept: Vec<bool> = (0..100_000u32).map(|i| s.on_packet(i as u64, UP, None, 64, i)).collect();
            (kept, s.paths[0].dir[UP].c)
        };
        let (a, ca) = run(5);
        let (b, _) = run(5);
        let (c, _) = run(6);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let lost = ca.dropped_loss as f64 / 100_000.0;
        assert!((lost - 0.03).abs() < 0.003, "{lost}");
        assert_eq!(ca.rx, 100_000);
    }

    #[test]
    fn loss_streams_are_independent_per_path() {
        // the loss pattern of one path does not change when another path carries traffic
        let pattern = |other: bool| {
            let mut s = Scheduler::new(&cfg(r#"{"seed": 1, "default": {"loss": 0.2},
                "paths": [{"prefixes": "10.0.0.9", "loss": 0.2}]}"#));
            let mut kept = vec![];
            for i in 0..1000u32 {
                if other {
                    s.on_packet(i as u64, UP, parse_ip("10.0.0.9"), 64, 0);
                }
                kept.push(s.on_packet(i as u64, UP, None, 64, i));
            }
            kept
        };
        assert_eq!(pattern(false), pattern(true));
    }

    #[test]
    fn shaper_rate_burst_and_queue() {
        // 8 Mbit/s = 1 byte/us; burst 3000 B; queue 10,000 B
        let mut sh = Shaper::new(8.0, 3000.0, 10_000.0);
        // a back-to-back train of 1000-byte packets at t=0
        let mut departs = vec![];
        let mut dropped = 0;
        for _ in 0..20 {
            match sh.admit(0, 1000) {
                Some(d) => departs.push(d),
                None => dropped += 1,
            }
        }
        // burst: the first 4 (3000 B of credit + the packet itself) leave at once, then one per ms
        assert_eq!(&departs[..4], &[0, 0, 0, 0]);
        assert_eq!(departs[4], 1_000_000);
        assert_eq!(departs[5], 2_000_000);
        // queue: waits up to 10 ms are admitted, the rest are dropped
        assert_eq!(*departs.last().unwrap(), 10_000_000);
        assert_eq!(departs.len(), 14);
        assert_eq!(dropped, 6);
        // after an idle second the bucket is full again
        assert_eq!(sh.admit(1_000_000_000, 1000), Some(1_000_000_000));
    }

    #[test]
    fn shaped_path_long_run_rate() {
        let mut s = Scheduler::new(&cfg(r#"{"paths": [{"prefixes": "10.0.0.2", "rate_mbit": 12, "queue_ms": 1000}]}"#));
        let far = parse_ip("10.0.0.2");
        // offer 24 Mbit/s of 1500-byte packets for 1 s: one per 0.5 ms
        for i in 0..2000u32 {
            s.on_packet(i as u64 * 500_000, UP, far, 1500, i);
        }
        let out = drain(&mut s, u64::MAX);
        let c = s.paths[1].dir[UP].c;
        assert_eq!(c.rx, 2000);
        assert_eq!(c.dropped_queue as usize + out.len(), 2000);
        // 12 Mbit/s for the 1 s of offered load plus a 1 s queue: about 2000 packets of which half wait
        let sent_in_first_second = out.iter().filter(|(t, _)| *t < 1_000_000_000).count();
        assert!((990..=1010).contains(&sent_in_first_second), "{sent_in_first_second}");
    }

    #[test]
    fn shared_access_link_on_both_directions() {
        // two remote paths share a 1 byte/us link: whatever the path, the link paces them
        let mut s = Scheduler::new(&cfg(r#"{"link": {"rate_mbit": 8, "burst_bytes": 1000, "queue_ms": 100},
            "paths": [{"prefixes": "10.0.0.2", "delay_ms": 5}, {"prefixes": "10.0.0.3", "delay_ms": 1}]}"#));
        for (i, ip) in ["10.0.0.2", "10.0.0.3", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            assert!(s.on_packet(0, UP, parse_ip(ip), 1000, i as u32));
        }
        let up = drain(&mut s, u64::MAX);
        // link departures 0, 0, 1, 2 ms (1000 B burst + the packet), then each path's delay
        assert_eq!(up, vec![(MS, 1), (3 * MS, 3), (5 * MS, 0), (6 * MS, 2)]);
        // down: the paths' delays come first, then the link in order of arrival at it
        for (i, ip) in ["10.0.0.2", "10.0.0.3", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            assert!(s.on_packet(100 * MS, DOWN, parse_ip(ip), 1000, 10 + i as u32));
        }
        let down = drain(&mut s, u64::MAX);
        // at the link: slots 11, 13 at 101 ms (burst), slots 10, 12 at 105 ms (the bucket refilled)
        assert_eq!(down, vec![(101 * MS, 11), (101 * MS, 13), (105 * MS, 10), (105 * MS, 12)]);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn overflow_bound() {
        let mut s = Scheduler::new(&cfg(r#"{"max_packets": 100, "default": {"delay_ms": 10}}"#));
        let kept = (0..150u32).filter(|&i| s.on_packet(0, UP, None, 64, i)).count();
        assert_eq!(kept, 100);
        assert_eq!(s.paths[0].dir[UP].c.dropped_overflow, 50);
    }
}
