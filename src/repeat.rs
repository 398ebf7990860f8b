//! Repeated logins: one client's sessions with one service, one after another, back to back and
//! alike. Password guessing one connection at a time looks like this on the wire whatever a flow
//! model makes of each session (a failed login is a short, ordinary-looking session; the attack
//! is the series), and a service used normally rarely does: browsers open connections side by
//! side, monitoring polls with pauses much longer than its sessions, transfers differ in size.
//!
//! A series is sessions (TCP, data both ways, at most [`SHORT`] long) from one source to one
//! (host, port), each beginning after the one before it ended and within `idle` of it, each
//! sending and receiving within a factor of [`ALIKE`] of the first one's bytes. It is a brute
//! force once it holds `min_sessions` sessions and the client was connected for at least half of
//! its time ([`BACK_TO_BACK`]). Anything else starts a new series. Memory is bounded: at most
//! `max` series (`alert.max_incidents`, about 130 bytes each). A full table forgets the series
//! that can no longer go on (quiet for `idle`), at most once a second; while it is still full, a
//! new (source, service) pair is not followed.

use std::net::IpAddr;

use crate::fasthash::FastMap;
use crate::flow::Flow;
use crate::packet::{Micros, PROTO_TCP};

/// A session longer than this is not one login attempt.
pub const SHORT: Micros = 60_000_000;
/// Sessions are alike when each direction's bytes are within this factor of the first's.
pub const ALIKE: f64 = 2.0;
/// Share of the series' time the client must have been connected.
pub const BACK_TO_BACK: f64 = 0.5;

/// One series of sessions so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Series {
    pub sessions: u64,
    /// First packet of the first session, last packet of the last one.
    pub start: Micros,
    pub end: Micros,
    /// Time the client was connected: the sessions' durations summed.
    pub busy: Micros,
    pub pkts: [u64; 2],
    pub bytes: [u64; 2],
    /// The first session's bytes each way, which the others must be like.
    first: [u64; 2],
    pub score: f32,
}

impl Series {
    fn of(f: &Flow, score: f32) -> Series {
        Series {
            sessions: 1,
            start: f.start,
            end: f.last,
            busy: f.last.saturating_sub(f.start),
            pkts: [u64::from(f.fwd.pkts), u64::from(f.bwd.pkts)],
            bytes: [f.fwd.bytes, f.bwd.bytes],
            first: [f.fwd.bytes, f.bwd.bytes],
            score,
        }
    }

    /// Whether `f` carries the series on: after its last session, soon enough, and alike.
    fn continued_by(&self, f: &Flow, idle: Micros) -> bool {
        let alike = |a: u64, b: u64| {
            let (a, b) = (a.max(1) as f64, b.max(1) as f64);
            a <= b * ALIKE && b <= a * ALIKE
        };
        f.start >= self.end
            && f.start - self.end <= idle
            && alike(f.fwd.bytes, self.first[0])
            && alike(f.bwd.bytes, self.first[1])
    }

    fn add(&mut self, f: &Flow, score: f32) {
        self.sessions += 1;
        self.end = self.end.max(f.last);
        self.busy += f.last.saturating_sub(f.start);
        self.pkts[0] += u64::from(f.fwd.pkts);
        self.pkts[1] += u64::from(f.bwd.pkts);
        self.bytes[0] += f.fwd.bytes;
        self.bytes[1] += f.bwd.bytes;
        self.score = self.score.max(score);
    }

    /// Whether the series is a brute force (its time taken as at least a second, as the
    /// incidents' rates are: a burst of sessions within a second is not "connected half the
    /// time").
    pub fn enough(&self, min_sessions: u64) -> bool {
        let span = self.end.saturating_sub(self.start).max(1_000_000);
        self.sessions >= min_sessions && self.busy as f64 >= BACK_TO_BACK * span as f64
    }
}

/// A flow that could be one login attempt: a short TCP session that exchanged data both ways.
pub fn is_session(f: &Flow) -> bool {
    f.key.proto == PROTO_TCP
        && f.established
        && f.fwd.payload_bytes > 0
        && f.bwd.payload_bytes > 0
        && f.last.saturating_sub(f.start) <= SHORT
}

type SeriesKey = (IpAddr, IpAddr, u16);

pub struct Repeats {
    series: FastMap<SeriesKey, Series>,
    max: usize,
    /// When a full table was last swept (at most once a second).
    swept: Micros,
}

impl Repeats {
    pub fn new(max: usize) -> Repeats {
        Repeats {
            series: FastMap::default(),
            max: max.max(1),
            swept: 0,
        }
    }

    /// Takes a flow's final evaluation at `now` (scored `score`); returns its series when the
    /// flow is a session of one that is (still) a brute force.
    pub fn session(
        &mut self,
        f: &Flow,
        score: f32,
        now: Micros,
        idle: Micros,
        min_sessions: u64,
    ) -> Option<Series> {
        if !is_session(f) {
            return None;
        }
        let key = (f.initiator, f.responder, f.responder_port);
        if let Some(s) = self.series.get_mut(&key) {
            if s.continued_by(f, idle) {
                s.add(f, score);
            } else {
                *s = Series::of(f, score);
            }
            return s.enough(min_sessions).then_some(*s);
        }
        if self.series.len() >= self.max && now >= self.swept.saturating_add(1_000_000) {
            // The series that can no longer be continued go.
            self.swept = now;
            self.series.retain(|_, s| s.end.saturating_add(idle) >= now);
        }
        if self.series.len() >= self.max {
            return None;
        }
        let s = Series::of(f, score);
        self.series.insert(key, s);
        s.enough(min_sessions).then_some(s)
    }

    pub fn clear(&mut self) {
        self.series.clear();
    }
}
