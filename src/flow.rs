//! Bidirectional flows: the canonical key, per-flow statistics and the bounded flow table.
//!
//! A shard worker owns one [`FlowTable`]. It is a plain struct driven by packet time: every call
//! to [`FlowTable::process`] first fires the timers due at the packet's timestamp, so the events
//! it emits depend only on the packets, never on the wall clock or on batch boundaries. The table
//! emits [`FlowEvent`]s (a flow started, a flow is evaluated); it never scores or alerts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;

use crate::config::FlowConfig;
use crate::fasthash::Seeded;
use crate::packet::{
    Micros, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PacketKind, PacketMeta, tcp_flags,
};

/// Canonical 5-tuple plus VLAN: the lower (address, port) pair first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    pub lo: IpAddr,
    pub hi: IpAddr,
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    pub vlan: [u16; 2],
}

impl FlowKey {
    /// The key of a packet, and whether the packet travels from `lo` to `hi`.
    pub fn of(p: &PacketMeta) -> (FlowKey, bool) {
        let from_lo = (p.src, p.sport) <= (p.dst, p.dport);
        let (lo, hi, lo_port, hi_port) = if from_lo {
            (p.src, p.dst, p.sport, p.dport)
        } else {
            (p.dst, p.src, p.dport, p.sport)
        };
        (
            FlowKey {
                lo,
                hi,
                lo_port,
                hi_port,
                proto: p.proto,
                vlan: p.vlan,
            },
            from_lo,
        )
    }

    /// A stable 64-bit hash (the same on every run and every machine).
    pub fn stable_hash(&self, salt: u64) -> u64 {
        let mut buf = [0u8; 64];
        let mut n = 0;
        for ip in [self.lo, self.hi] {
            let octets = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            buf[n..n + 16].copy_from_slice(&octets);
            n += 16;
        }
        buf[n..n + 2].copy_from_slice(&self.lo_port.to_be_bytes());
        buf[n + 2..n + 4].copy_from_slice(&self.hi_port.to_be_bytes());
        buf[n + 4] = self.proto;
        buf[n + 5..n + 7].copy_from_slice(&self.vlan[0].to_be_bytes());
        buf[n + 7..n + 9].copy_from_slice(&self.vlan[1].to_be_bytes());
        buf[n + 9..n + 17].copy_from_slice(&salt.to_be_bytes());
        xxhash_rust::xxh3::xxh3_64(&buf[..n + 17])
    }
}

/// An address as one number, for hashing: an IPv4 address and the IPv6 address `::a.b.c.d`
/// give the same number, which only costs a collision.
fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Four writes instead of the ten or so of a derived `Hash` (the addresses' variants and bytes,
/// the ports, the protocol, the VLAN array): hashing the key was 2.5 % of replay's CPU time. Keys
/// that are equal write the same numbers.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(ip_bits(self.lo));
        state.write_u128(ip_bits(self.hi));
        state.write_u64(
            (u64::from(self.lo_port) << 48)
                | (u64::from(self.hi_port) << 32)
                | (u64::from(self.vlan[0]) << 16)
                | u64::from(self.vlan[1]),
        );
        state.write_u8(self.proto);
    }
}

/// The 64 bits of a 128-bit product, folded: a fixed, fast mix (foldhash's core step).
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// The shard of a packet: a fixed hash of its flow's 5-tuple, the same in both directions and in
/// every run (so a replay splits its flows the same way each time). The ports are part of it so
/// that the many flows of one pair of hosts (a flood, a scan) spread over all the shards: each
/// shard owns `max_flows / shards` of the table, and a pair's flows are not limited to one of
/// them. An ICMP error carries the 5-tuple it quotes, so it reaches the shard of the flow it is
/// about. A few multiplications: it runs for every packet in the reading thread.
pub fn shard_of(p: &PacketMeta, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mix = |ip: IpAddr, port: u16| {
        let bits = ip_bits(ip);
        let ip = fold_mul(
            (bits as u64) ^ 0x243f_6a88_85a3_08d3,
            ((bits >> 64) as u64) ^ 0x1319_8a2e_0370_7344,
        );
        fold_mul(ip ^ u64::from(port), 0x082e_fa98_ec4e_6c89)
    };
    // Symmetric: XOR of the two ends; the protocol apart, so TCP and UDP of one pair differ.
    let ends = mix(p.src, p.sport) ^ mix(p.dst, p.dport) ^ u64::from(p.proto);
    let h = fold_mul(ends, 0xa409_3822_299f_31d0 | 1);
    ((u128::from(h) * shards as u128) >> 64) as usize
}

/// Statistics of one direction of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DirStats {
    pub pkts: u32,
    pub bytes: u64,
    pub payload_bytes: u64,
    pub len_min: u16,
    pub len_max: u16,
    pub len_sum: f64,
    pub len_sumsq: f64,
    pub last_ts: Micros,
    /// Inter-arrival times in milliseconds.
    pub iat_sum: f64,
    pub iat_sumsq: f64,
    pub syn: u16,
    pub fin: u16,
    pub rst: u16,
    pub psh: u16,
    pub ack: u16,
    pub init_window: u16,
    pub first_ttl: u8,
}

impl DirStats {
    fn add(&mut self, p: &PacketMeta) {
        let len = p.ip_len;
        if self.pkts == 0 {
            self.len_min = len;
            self.len_max = len;
            self.init_window = p.tcp_window;
            self.first_ttl = p.ttl;
        } else {
            self.len_min = self.len_min.min(len);
            self.len_max = self.len_max.max(len);
            let iat_ms = p.ts.saturating_sub(self.last_ts) as f64 / 1000.0;
            self.iat_sum += iat_ms;
            self.iat_sumsq += iat_ms * iat_ms;
        }
        self.pkts = self.pkts.saturating_add(1);
        self.bytes += u64::from(len);
        self.payload_bytes += u64::from(p.payload_len);
        let l = f64::from(len);
        self.len_sum += l;
        self.len_sumsq += l * l;
        self.last_ts = p.ts;
        let f = p.tcp_flags;
        let count = |c: &mut u16, bit: u8| {
            if f & bit != 0 {
                *c = c.saturating_add(1);
            }
        };
        count(&mut self.syn, tcp_flags::SYN);
        count(&mut self.fin, tcp_flags::FIN);
        count(&mut self.rst, tcp_flags::RST);
        count(&mut self.psh, tcp_flags::PSH);
        count(&mut self.ack, tcp_flags::ACK);
    }
}

/// A flow evaluated early is evaluated again when it has this many times more packets.
pub const EVAL_GROWTH: u64 = 4;

/// The packet count at which a flow with `evals` evaluations so far is evaluated early:
/// `early`, then `early` × 4, × 16, ...
fn early_eval_at(early: u32, evals: u8) -> u64 {
    EVAL_GROWTH
        .checked_pow(u32::from(evals))
        .and_then(|g| g.checked_mul(u64::from(early)))
        .unwrap_or(u64::MAX)
}

/// How long after a handshake that completed after the flow's first evaluation the connection
/// is seen whether it is held ([`EvalReason::Held`]; at the next hundredth of a second): a
/// second, or three times the handshake's own time (SYN to ACK, a round trip or more) if that is
/// longer. An ordinary request is answered, and the connection closed or its next request sent,
/// within a round trip or two; over a satellite path one second is less than two.
const HELD_EVAL: Micros = 1_000_000;

/// Whether an open connection is held the way a slow DoS holds it: no request on it answered in
/// full (a request never ended, or an answer read slowly), less than a full-size segment of
/// data either way (not a download over a long path, its first answer still coming), and the
/// server heard from since the client's last data (an answer withheld, not one delayed by a
/// path grown slower since the handshake: a link queueing a flood's downloads).
fn held(f: &Flow) -> bool {
    const SEGMENT: u64 = 1460;
    f.established
        && f.heard
        && f.exchanges.none_answered()
        && f.fwd.payload_bytes < SEGMENT
        && f.bwd.payload_bytes < SEGMENT
}

/// Whether a flow with `evals` evaluations may have one more before its final one, which is
/// kept for its end: at most `max_evals` in all.
fn evals_left(evals: u8, max_evals: u8) -> bool {
    evals < max_evals.saturating_sub(1)
}

/// Why a flow is being evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalReason {
    /// After the first `early_eval_packets` packets, and again at `early_eval_packets` ×
    /// [`EVAL_GROWTH`]^n packets, n being the evaluations so far (within `max_evals`): a flood
    /// in one flow is scored while it grows, not only when it ends.
    Early,
    /// `probe_eval_s` after the start, for a flow not evaluated yet.
    Probe,
    /// Every `active_timeout_s` of a long flow.
    Active,
    /// When a TCP session's requests answered alike in a row (its login attempts, see
    /// [`Exchanges`]) reach `alert.bruteforce_min_logins`: a slow password guesser's session
    /// is judged when its attempts are enough, not when it ends.
    Logins,
    /// When the flow's peer refuses it with an ICMP error after its first evaluation: a UDP
    /// probe refused over a long link (the refusal comes after the probe evaluation), whose
    /// flow would otherwise be judged again only when it has been idle for `udp_timeout_s`.
    Refused,
    /// [`HELD_EVAL`] (or three handshake times) after a TCP handshake that completed after the
    /// flow's first evaluation, if the connection is still open and held the way a slow DoS
    /// holds it (`held`).
    /// Over a path longer than `probe_eval_s` the probe evaluation sees a SYN, and a connection
    /// a slow DoS holds open would next be evaluated many seconds later. Not scored: the flow
    /// keeps the verdict it had (a flood's counts as a slow DoS's), with what it shows now
    /// (`AlertEngine::offer_standing`).
    Held,
    /// TCP ended (FIN both ways, or RST).
    TcpEnd,
    /// Idle timeout.
    Idle,
    /// Evicted from a full table.
    Evicted,
    /// End of input or shutdown.
    Flush,
}

impl EvalReason {
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            EvalReason::Early
                | EvalReason::Probe
                | EvalReason::Active
                | EvalReason::Refused
                | EvalReason::Held
                | EvalReason::Logins
        )
    }
}

/// How a connection attempt went, as far as the host context cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    TcpEstablished,
    /// Refused with a RST or an ICMP error before the handshake completed.
    TcpRejected,
    /// No answer to the SYN (yet).
    TcpHalfOpen,
    Answered,
    Unanswered,
}

/// One flow. `fwd` is the initiator's direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flow {
    pub key: FlowKey,
    /// Unique id of this flow (the key and its start time, hashed).
    pub uid: u64,
    pub initiator: IpAddr,
    pub responder: IpAddr,
    pub initiator_port: u16,
    pub responder_port: u16,
    pub start: Micros,
    pub last: Micros,
    pub fwd: DirStats,
    pub bwd: DirStats,
    /// Signed IP lengths of the first 8 packets: positive from the initiator.
    pub first_sizes: [i16; 8],
    pub syn_seen: bool,
    pub synack_seen: bool,
    pub established: bool,
    pub closed: bool,
    /// An ICMP error came back for this flow.
    pub icmp_error: bool,
    /// One came from the host the quoted packet was for (a port unreachable from the target
    /// itself), not from a router on the way (no route, TTL exceeded, filtered).
    pub icmp_from_peer: bool,
    /// ICMP type and code of the initiator's first packet (for the Community ID).
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub evals: u8,
    pub last_active_eval: Micros,
    /// When to see whether a connection established after its first evaluation is held
    /// ([`EvalReason::Held`]), in hundredths of a second after its start (2 bytes fit where a
    /// [`Micros`] would make every flow 8 bytes larger); 0: not to.
    pub held_check_cs: u16,
    /// Its requests and their answers (TCP).
    pub exchanges: Exchanges,
    /// TCP: the responder has sent a packet (an acknowledgement at least) since the
    /// initiator's last data: what the initiator sent has reached it.
    pub heard: bool,
}

/// A TCP session's requests and answers, as far as telling logins apart goes. An exchange is
/// the client's data up to the server's answer and that answer's data, up to the client's next
/// data. Two exchanges are alike when the answers are the same size, at least
/// [`Exchanges::MIN_ANSWER`] bytes, and the requests within [`Exchanges::REQUEST_SLACK`] bytes:
/// a server refusing password after password gives the same short answer each time, however
/// the session is encrypted (a password's length moves its request by a cipher block or two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exchanges {
    /// The exchange in progress: the client's bytes, then the server's answer so far.
    request: u16,
    answer: u16,
    /// The last complete exchange.
    last: (u16, u16),
    /// Complete exchanges in a row alike, up to the last one, and the most in a row so far.
    run: u8,
    most: u8,
}

impl Exchanges {
    /// Answers shorter than this (an empty ACK's byte, a 2-byte MQTT PINGRESP) tell nothing.
    pub const MIN_ANSWER: u16 = 16;
    /// Requests alike differ by at most this many bytes.
    pub const REQUEST_SLACK: u16 = 32;

    fn add(&mut self, from_client: bool, payload: u16) {
        if payload == 0 {
            return;
        }
        if from_client {
            if self.answer > 0 {
                self.close();
            }
            self.request = self.request.saturating_add(payload);
        } else if self.request > 0 {
            self.answer = self.answer.saturating_add(payload);
        }
    }

    fn close(&mut self) {
        let now = (self.request, self.answer);
        self.run = if Self::alike(self.last, now) {
            self.run.saturating_add(1)
        } else {
            1
        };
        self.most = self.most.max(self.run);
        self.last = now;
        (self.request, self.answer) = (0, 0);
    }

    fn alike((req_a, ans_a): (u16, u16), (req_b, ans_b): (u16, u16)) -> bool {
        ans_a == ans_b && ans_a >= Self::MIN_ANSWER && req_a.abs_diff(req_b) <= Self::REQUEST_SLACK
    }

    /// Whether no request has been answered in full yet (the client has not spoken again after
    /// an answer): a slow DoS's connection, its request never ended, or its answer read slowly.
    pub fn none_answered(&self) -> bool {
        self.most == 0
    }

    /// Whether a request has been answered, in full or in part: the server serves.
    pub fn answered(&self) -> bool {
        self.most > 0 || self.answer > 0
    }

    /// The most exchanges in a row alike, the one in progress counted when it has an answer.
    pub fn most_alike(&self) -> u8 {
        let mut done = *self;
        if done.answer > 0 {
            done.close();
        }
        done.most
    }
}

impl Flow {
    /// When to see whether it is held ([`EvalReason::Held`]), if at all.
    pub fn held_check(&self) -> Option<Micros> {
        (self.held_check_cs > 0).then(|| self.start + u64::from(self.held_check_cs) * 10_000)
    }

    pub fn packets(&self) -> u32 {
        self.fwd.pkts.saturating_add(self.bwd.pkts)
    }

    pub fn outcome(&self) -> Outcome {
        if self.key.proto == PROTO_TCP {
            if self.established {
                Outcome::TcpEstablished
            } else if self.bwd.rst > 0 || self.icmp_error || (self.synack_seen && self.fwd.rst > 0)
            {
                Outcome::TcpRejected
            } else if self.synack_seen {
                Outcome::TcpEstablished
            } else {
                Outcome::TcpHalfOpen
            }
        } else if self.bwd.pkts > 0 && !self.icmp_error {
            Outcome::Answered
        } else {
            Outcome::Unanswered
        }
    }
}

/// Total order of events, the same whatever the number of shards: timer events at their
/// deadline sort before packet events at the same time (class 0 < 1), packet events follow the
/// capture's sequence numbers, and the final flush comes after everything at its time (class 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Order {
    pub ts: Micros,
    pub class: u8,
    pub a: u64,
    pub b: u64,
}

impl Order {
    pub const ZERO: Order = Order {
        ts: 0,
        class: 0,
        a: 0,
        b: 0,
    };
    pub const END: Order = Order {
        ts: Micros::MAX,
        class: u8::MAX,
        a: u64::MAX,
        b: u64::MAX,
    };
}

/// What a flow table tells the scorer.
#[derive(Clone, Debug, PartialEq)]
pub enum FlowEvent {
    Start {
        order: Order,
        flow: Flow,
    },
    Eval {
        order: Order,
        flow: Flow,
        reason: EvalReason,
        first_outcome: Option<Outcome>,
    },
}

impl FlowEvent {
    pub fn order(&self) -> Order {
        match self {
            FlowEvent::Start { order, .. } | FlowEvent::Eval { order, .. } => *order,
        }
    }
}

/// Counters owned by one flow table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub packets: u64,
    pub flows_created: u64,
    pub flows_evicted: u64,
    pub evaluations: u64,
    pub icmp_errors_attributed: u64,
    /// ICMP errors about a flow the table does not hold.
    pub icmp_errors_unattributed: u64,
    /// Packets of TCP flows that had already ended (late ACKs, retransmitted RSTs).
    pub packets_after_end: u64,
    /// Times the table went into emergency mode.
    pub emergencies: u64,
}

/// Timeouts in microseconds, converted once from the config.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Timeouts {
    tcp_handshake: Micros,
    tcp_established: Micros,
    tcp_closed: Micros,
    udp: Micros,
    icmp: Micros,
    active: Micros,
    probe: Micros,
}

/// Stale timer entries tolerated before the heap is compacted: this many, plus an eighth of the
/// table's capacity.
const TIMER_SLACK: usize = 64;

/// The most timer entries a table of `capacity` flows holds (one per flow plus stale ones).
pub fn timer_bound(capacity: usize) -> usize {
    capacity + capacity / 8 + TIMER_SLACK
}

fn micros(s: f64) -> Micros {
    (s.max(0.0) * 1e6) as Micros
}

/// Where a flow is stored in its table (see [`FlowMap`]).
type Slot = u32;

/// A timer: the deadline, the flow's uid and its slot. Ordered by deadline, then uid (the slot
/// only breaks ties between entries of the same flow).
type Timer = (Micros, u64, Slot);

/// The timer entries of a table, taken in order.
///
/// A new flow's first deadline is its start plus a fixed time (the probe evaluation, or its idle
/// timeout when that is shorter), so most entries come in order: those go to the back of a
/// queue, in O(1), and only the others into a heap. The earliest entry is the earlier of the
/// queue's front and the heap's top, so entries leave in the same order as from one heap. Under
/// a flood of new flows nearly every entry takes the queue.
#[derive(Default)]
struct Timers {
    /// Entries in order: each no earlier than the one before it.
    queue: VecDeque<Timer>,
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    /// Timers holding `entries`.
    fn from_vec(mut entries: Vec<Timer>) -> Timers {
        entries.sort_unstable();
        Timers {
            queue: VecDeque::from(entries),
            heap: BinaryHeap::new(),
        }
    }

    fn len(&self) -> usize {
        self.queue.len() + self.heap.len()
    }

    fn peek(&self) -> Option<Timer> {
        match (self.queue.front(), self.heap.peek()) {
            (Some(&q), Some(&Reverse(h))) => Some(q.min(h)),
            (q, h) => q.copied().or(h.map(|&Reverse(h)| h)),
        }
    }

    fn pop(&mut self) -> Option<Timer> {
        let from_queue = match (self.queue.front(), self.heap.peek()) {
            (Some(q), Some(Reverse(h))) => q < h,
            (q, _) => q.is_some(),
        };
        if from_queue {
            self.queue.pop_front()
        } else {
            self.heap.pop().map(|Reverse(h)| h)
        }
    }

    /// Adds an entry. A container grows by half at a time and never past `bound` entries
    /// (doubling would leave up to half of the table's second-largest allocation unused).
    fn push(&mut self, entry: Timer, bound: usize) {
        let grow = |len: usize| (len / 2).max(64).min(bound.saturating_sub(len)).max(1);
        if self.queue.back().is_none_or(|&last| last <= entry) {
            if self.queue.len() == self.queue.capacity() {
                self.queue.reserve_exact(grow(self.queue.len()));
            }
            self.queue.push_back(entry);
        } else {
            if self.heap.len() == self.heap.capacity() {
                self.heap.reserve_exact(grow(self.heap.len()));
            }
            self.heap.push(Reverse(entry));
        }
    }

    /// Every entry, in no order.
    fn into_vec(self) -> Vec<Timer> {
        let mut entries = Vec::from(self.queue);
        entries.extend(self.heap.into_iter().map(|Reverse(e)| e));
        entries
    }
}

/// The flows of a table: slots in fixed-size chunks, and a hash table of slot numbers by key.
///
/// A timer names its flow's slot, so firing it needs no hashing and no key comparison, and a
/// heap entry is 24 bytes, not 64. Chunks are added as the table grows and never move (no
/// reallocation, no copy, no reservation for a capacity that may never be used); freed slots are
/// reused first, so the chunks hold at most as many flows as the table ever did at once. A
/// bucket is 4 bytes: under a flood's churn the hash table may need twice its capacity in
/// buckets (deleted entries leave tombstones until a rehash). The hash is seeded at random
/// (`fasthash`): keys come from the network.
struct FlowMap {
    index: hashbrown::HashTable<Slot>,
    chunks: Vec<Box<[Option<Flow>]>>,
    /// Slots handed out so far (the used part of the chunks).
    used: Slot,
    free: Vec<Slot>,
    hasher: Seeded,
}

/// Slots per chunk: a chunk is about 300 KB.
const CHUNK: usize = 1024;

impl FlowMap {
    fn with_capacity(capacity: usize) -> FlowMap {
        FlowMap {
            index: hashbrown::HashTable::with_capacity(capacity),
            chunks: Vec::new(),
            used: 0,
            free: Vec::new(),
            hasher: Seeded::default(),
        }
    }

    fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The slot of the flow stored under `key`.
    fn find(&self, key: &FlowKey) -> Option<Slot> {
        let chunks = &self.chunks;
        self.index
            .find(self.hash(key), |&s| {
                let s = s as usize;
                chunks[s / CHUNK][s % CHUNK]
                    .as_ref()
                    .is_some_and(|f| f.key == *key)
            })
            .copied()
    }

    fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        let slot = self.find(key)?;
        self.slot_mut(slot)
    }

    fn slot(&self, slot: Slot) -> Option<&Flow> {
        let slot = slot as usize;
        self.chunks.get(slot / CHUNK)?[slot % CHUNK].as_ref()
    }

    fn slot_mut(&mut self, slot: Slot) -> Option<&mut Flow> {
        let slot = slot as usize;
        self.chunks.get_mut(slot / CHUNK)?[slot % CHUNK].as_mut()
    }

    fn cell(&mut self, slot: Slot) -> &mut Option<Flow> {
        let slot = slot as usize;
        &mut self.chunks[slot / CHUNK][slot % CHUNK]
    }

    /// Adds a flow whose key is not in the map; returns its slot.
    fn insert(&mut self, flow: Flow) -> Slot {
        let hash = self.hash(&flow.key);
        let slot = self.free.pop().unwrap_or_else(|| {
            if self.used as usize == self.chunks.len() * CHUNK {
                self.chunks.push(vec![None; CHUNK].into_boxed_slice());
            }
            self.used += 1;
            self.used - 1
        });
        *self.cell(slot) = Some(flow);
        let chunks = &self.chunks;
        let hasher = &self.hasher;
        self.index.insert_unique(hash, slot, |&s| {
            let s = s as usize;
            chunks[s / CHUNK][s % CHUNK]
                .as_ref()
                .map_or(0, |f| hasher.hash_one(f.key))
        });
        slot
    }

    /// Takes the flow out of `slot`, which must hold one.
    fn remove_slot(&mut self, slot: Slot) -> Flow {
        let flow = self.cell(slot).take().expect("the slot holds a flow");
        let hash = self.hash(&flow.key);
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.free.push(slot);
        flow
    }

    fn any_slot(&self) -> Option<Slot> {
        self.index.iter().next().copied()
    }

    /// The flows and their slots.
    fn iter(&self) -> impl Iterator<Item = (Slot, &Flow)> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.iter())
            .enumerate()
            .filter_map(|(s, f)| Some((s as Slot, f.as_ref()?)))
    }

    /// Removes every flow.
    fn clear(&mut self) {
        self.index.clear();
        self.chunks.clear();
        self.used = 0;
        self.free.clear();
    }
}

/// When the flow ends by inactivity (or, once ended, leaves the table), under the idle timeouts
/// `t` (emergency mode shortens them).
fn idle_deadline(t: &Timeouts, f: &Flow) -> Micros {
    let idle = match f.key.proto {
        _ if f.closed || (f.fwd.fin > 0 && f.bwd.fin > 0) => t.tcp_closed,
        PROTO_TCP if f.established || f.synack_seen => t.tcp_established,
        PROTO_TCP => t.tcp_handshake,
        PROTO_ICMP | PROTO_ICMPV6 => t.icmp,
        _ => t.udp,
    };
    f.last + idle
}

/// The flow's next timer: idle end (under `idle`), probe evaluation or active-timeout evaluation
/// (under `normal`, which emergency mode leaves alone).
fn deadline(idle: &Timeouts, normal: &Timeouts, f: &Flow) -> Micros {
    let mut d = idle_deadline(idle, f);
    if f.closed {
        return d;
    }
    if f.evals == 0 {
        d = d.min(f.start + normal.probe);
    }
    if let Some(at) = f.held_check() {
        d = d.min(at);
    }
    d.min(f.last_active_eval + normal.active)
}

/// Emits an evaluation of `flow` (the stored flow, or one just taken out of the table) and
/// counts it in the flow.
fn eval_event(
    flow: &mut Flow,
    order: Order,
    reason: EvalReason,
    counters: &mut FlowCounters,
    out: &mut Vec<FlowEvent>,
) {
    let first_outcome = (flow.evals == 0).then(|| flow.outcome());
    flow.evals = flow.evals.saturating_add(1);
    counters.evaluations += 1;
    out.push(FlowEvent::Eval {
        order,
        flow: *flow,
        reason,
        first_outcome,
    });
}

/// A bounded flow table with timers, driven by packet time.
pub struct FlowTable {
    flows: FlowMap,
    /// Deadlines, lazily updated: an entry may be earlier than its flow's real deadline.
    timers: Timers,
    capacity: usize,
    timeouts: Timeouts,
    /// The idle timeouts of emergency mode (the others as in `timeouts`).
    emergency_timeouts: Timeouts,
    /// Emergency mode begins at this many flows and ends under `emergency_leave`.
    emergency_enter: usize,
    emergency_leave: usize,
    emergency: bool,
    early_eval_packets: u32,
    max_evals: u8,
    /// Login attempts in a row at which a session is evaluated (0: never for that).
    login_eval: u8,
    now: Micros,
    pub counters: FlowCounters,
}

impl FlowTable {
    pub fn new(cfg: &FlowConfig, capacity: usize) -> FlowTable {
        let capacity = capacity.max(1);
        let timeouts = Timeouts {
            tcp_handshake: micros(cfg.tcp_handshake_timeout_s),
            tcp_established: micros(cfg.tcp_established_timeout_s),
            tcp_closed: micros(cfg.tcp_closed_timeout_s),
            udp: micros(cfg.udp_timeout_s),
            icmp: micros(cfg.icmp_timeout_s),
            active: micros(cfg.active_timeout_s).max(1),
            probe: micros(cfg.probe_eval_s),
        };
        let scale = |us: Micros| (us as f64 * cfg.emergency_timeout_scale) as Micros;
        let emergency_timeouts = Timeouts {
            tcp_handshake: scale(timeouts.tcp_handshake),
            tcp_established: scale(timeouts.tcp_established),
            tcp_closed: scale(timeouts.tcp_closed),
            udp: scale(timeouts.udp),
            icmp: scale(timeouts.icmp),
            ..timeouts
        };
        let share = |s: f64| ((capacity as f64 * s).ceil() as usize).clamp(1, capacity);
        FlowTable {
            flows: FlowMap::with_capacity(capacity),
            timers: Timers::default(),
            capacity,
            timeouts,
            emergency_timeouts,
            emergency_enter: share(cfg.emergency_enter),
            emergency_leave: share(cfg.emergency_leave),
            emergency: false,
            early_eval_packets: cfg.early_eval_packets,
            max_evals: cfg.max_evals_per_flow.max(1),
            login_eval: 0,
            now: 0,
            counters: FlowCounters::default(),
        }
    }

    /// Evaluates a TCP session when its login attempts (requests answered alike in a row,
    /// [`Exchanges`]) reach `attempts` (0: never for that; at most 255).
    pub fn evaluating_logins_at(mut self, attempts: u64) -> FlowTable {
        self.login_eval = u8::try_from(attempts).unwrap_or(u8::MAX);
        self
    }

    /// Whether the table is in emergency mode (shorter idle timeouts under a flood).
    pub fn in_emergency(&self) -> bool {
        self.emergency
    }

    /// Enters emergency mode when the table has filled up to its mark. Every timer is
    /// recomputed with the shorter timeouts (once per entry): the lazy timers may run early,
    /// never late.
    fn check_emergency_enter(&mut self) {
        if self.emergency || self.flows.len() < self.emergency_enter {
            return;
        }
        self.emergency = true;
        self.counters.emergencies += 1;
        log::warn!(
            "Flow table at {} of {} flows: emergency mode, idle timeouts shortened until it is \
             back under {}.",
            self.flows.len(),
            self.capacity,
            self.emergency_leave
        );
        let timers: Vec<_> = self
            .flows
            .iter()
            // A deadline already passed fires just after the packet that got us here: events
            // must stay in order.
            .map(|(slot, f)| (self.deadline(f).max(self.now + 1), f.uid, slot))
            .collect();
        self.timers = Timers::from_vec(timers);
    }

    /// Leaves emergency mode once enough flows have gone.
    fn check_emergency_leave(&mut self) {
        if self.emergency && self.flows.len() < self.emergency_leave {
            self.emergency = false;
            log::info!(
                "Flow table back under {} flows: emergency mode over ({} flows evicted so far).",
                self.emergency_leave,
                self.counters.flows_evicted
            );
        }
    }

    /// The timeouts in force.
    fn timeouts(&self) -> &Timeouts {
        if self.emergency {
            &self.emergency_timeouts
        } else {
            &self.timeouts
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The timer entries held (for the boundedness property tests).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// The flow's next timer (see [`deadline`]) under the current timeouts.
    fn deadline(&self, f: &Flow) -> Micros {
        deadline(self.timeouts(), &self.timeouts, f)
    }

    /// Fires every timer due at or before `now`. One lookup per timer: the flow is read, changed
    /// and, when it ends, removed through the same table entry.
    pub fn advance(&mut self, now: Micros, out: &mut Vec<FlowEvent>) {
        self.now = self.now.max(now);
        let (probe, active) = (self.timeouts.probe, self.timeouts.active);
        while let Some((due, hash, slot)) = self.timers.peek() {
            if due > self.now {
                break;
            }
            self.timers.pop();
            let idle = *self.timeouts();
            let Some(flow) = self.flows.slot_mut(slot) else {
                continue;
            };
            if flow.uid != hash {
                continue; // an entry of an earlier flow in the same slot
            }
            let real = deadline(&idle, &self.timeouts, flow);
            if real > due {
                self.push_timer((real, hash, slot));
                continue;
            }
            let order = Order {
                ts: due,
                class: 0,
                a: hash,
                b: 0,
            };
            if flow.closed {
                self.flows.remove_slot(slot);
                continue;
            }
            if idle_deadline(&idle, flow) <= due {
                let mut flow = self.flows.remove_slot(slot);
                eval_event(&mut flow, order, EvalReason::Idle, &mut self.counters, out);
                continue;
            }
            if flow.evals == 0 && flow.start + probe <= due {
                eval_event(flow, order, EvalReason::Probe, &mut self.counters, out);
            } else if flow.held_check().is_some_and(|at| at <= due) {
                flow.held_check_cs = 0;
                if held(flow) && evals_left(flow.evals, self.max_evals) {
                    eval_event(flow, order, EvalReason::Held, &mut self.counters, out);
                }
            } else if flow.last_active_eval + active <= due {
                flow.last_active_eval = due;
                if evals_left(flow.evals, self.max_evals) {
                    eval_event(flow, order, EvalReason::Active, &mut self.counters, out);
                }
            }
            let next = deadline(&idle, &self.timeouts, flow);
            self.push_timer((next, hash, slot));
        }
        self.check_emergency_leave();
    }

    /// Emits an evaluation of a flow that is no longer stored.
    fn emit_eval(
        &mut self,
        mut flow: Flow,
        order: Order,
        reason: EvalReason,
        out: &mut Vec<FlowEvent>,
    ) {
        eval_event(&mut flow, order, reason, &mut self.counters, out);
    }

    /// Accounts one packet. Timers due at its timestamp fire first.
    pub fn process(&mut self, p: &PacketMeta, out: &mut Vec<FlowEvent>) {
        self.advance(p.ts, out);
        self.counters.packets += 1;
        let mut sub = 0u64;
        let mut order = || {
            sub += 1;
            Order {
                ts: p.ts,
                class: 1,
                a: p.seq,
                b: sub,
            }
        };

        if let PacketKind::IcmpError { reporter } = p.kind {
            // An error is evidence about the flow it quotes (refused, unreachable), which is in
            // this shard: the dispatcher shards it by the quoted 5-tuple. It is not made a flow
            // of its own: that flow would blame the reporter (a victim answering a scan, a
            // router answering a traceroute), and, sharded by another 5-tuple than its packets,
            // it would split with the number of workers. An error about a flow this table does
            // not hold (one direction of traffic seen, or the flow gone) is only counted.
            // A refusal by the peer after the flow's first evaluation is evaluated when it
            // comes (within `max_evals_per_flow`, the last kept for the end); one before it is
            // seen by that first evaluation.
            let (key, _) = FlowKey::of(p);
            match self.flows.get_mut(&key) {
                Some(flow) if !flow.closed => {
                    let refusal = reporter == p.dst && !flow.icmp_from_peer;
                    flow.icmp_error = true;
                    flow.icmp_from_peer |= reporter == p.dst;
                    self.counters.icmp_errors_attributed += 1;
                    if refusal && flow.evals > 0 && evals_left(flow.evals, self.max_evals) {
                        let reason = EvalReason::Refused;
                        eval_event(flow, order(), reason, &mut self.counters, out);
                    }
                }
                _ => self.counters.icmp_errors_unattributed += 1,
            }
            return;
        }
        self.process_normal(p, &mut order, out)
    }

    fn process_normal(
        &mut self,
        p: &PacketMeta,
        order: &mut impl FnMut() -> Order,
        out: &mut Vec<FlowEvent>,
    ) {
        let (key, _) = FlowKey::of(p);
        let idle = *self.timeouts();
        let is_syn = p.is_bare_syn();

        if let Some(slot) = self.flows.find(&key) {
            let flow = self
                .flows
                .slot_mut(slot)
                .expect("a found slot holds its flow");
            if !flow.closed {
                // Only a TCP packet with data can add an exchange.
                let watch_logins = self.login_eval > 0 && p.payload_len > 0;
                let logins_before = watch_logins.then(|| flow.exchanges.most_alike());
                let was_established = flow.established;
                let ended = update(flow, p);
                let more_evals = evals_left(flow.evals, self.max_evals);
                // Established after its first evaluation: held a while longer with no request
                // answered, it is a held connection.
                let held_check =
                    (flow.evals > 0 && !was_established && flow.established).then(|| {
                        let handshake = p.ts.saturating_sub(flow.start);
                        let at = p.ts + HELD_EVAL.max(3 * handshake);
                        let after = at.saturating_sub(flow.start) / 10_000 + 1;
                        flow.held_check_cs = u16::try_from(after).unwrap_or(0);
                        (flow.held_check(), flow.uid)
                    });
                let reached_early = (flow.evals == 0 || more_evals)
                    && u64::from(flow.packets())
                        == early_eval_at(self.early_eval_packets, flow.evals);
                let reached_logins = more_evals
                    && logins_before.is_some_and(|before| {
                        before < self.login_eval && flow.exchanges.most_alike() >= self.login_eval
                    });
                if ended {
                    flow.closed = true;
                    eval_event(flow, order(), EvalReason::TcpEnd, &mut self.counters, out);
                    let (next, uid) = (deadline(&idle, &self.timeouts, flow), flow.uid);
                    self.push_timer((next, uid, slot));
                } else if reached_early {
                    eval_event(flow, order(), EvalReason::Early, &mut self.counters, out);
                } else if reached_logins {
                    eval_event(flow, order(), EvalReason::Logins, &mut self.counters, out);
                }
                if let Some((Some(at), uid)) = held_check {
                    self.push_timer((at, uid, slot));
                }
                return;
            }
            if !is_syn {
                flow.last = p.ts;
                self.counters.packets_after_end += 1;
                return;
            }
            // A new SYN after the end starts a new flow; the old one was already evaluated.
            self.flows.remove_slot(slot);
        }

        if self.flows.len() >= self.capacity {
            self.evict_one(order(), out);
        }
        let flow = new_flow(key, p);
        let hash = flow.uid;
        self.counters.flows_created += 1;
        out.push(FlowEvent::Start {
            order: order(),
            flow,
        });
        let next = self.deadline(&flow);
        let slot = self.flows.insert(flow);
        self.push_timer((next, hash, slot));
        self.check_emergency_enter();
        if self.timers.len() > timer_bound(self.capacity) {
            self.compact_timers();
        }
        if self.early_eval_packets <= 1
            && let Some(stored) = self.flows.slot_mut(slot)
        {
            eval_event(stored, order(), EvalReason::Early, &mut self.counters, out);
        }
    }

    /// Adds a timer entry.
    fn push_timer(&mut self, entry: Timer) {
        self.timers.push(entry, timer_bound(self.capacity) + 1);
    }

    /// Drops timer entries of flows that are gone, keeping one entry (the earliest) per flow.
    fn compact_timers(&mut self) {
        let mut entries = std::mem::take(&mut self.timers).into_vec();
        entries.sort_unstable();
        let mut seen = std::collections::HashSet::with_capacity(self.flows.len());
        entries.retain(|(_, uid, slot)| {
            self.flows.slot(*slot).is_some_and(|f| f.uid == *uid) && seen.insert(*uid)
        });
        self.timers = Timers::from_vec(entries);
    }

    /// Evicts the flow closest to its deadline.
    fn evict_one(&mut self, order: Order, out: &mut Vec<FlowEvent>) {
        let mut retries = 8;
        while let Some((due, hash, slot)) = self.timers.pop() {
            let Some(flow) = self.flows.slot(slot) else {
                continue;
            };
            if flow.uid != hash {
                continue;
            }
            let real = self.deadline(flow);
            if real > due && retries > 0 {
                retries -= 1;
                self.push_timer((real, hash, slot));
                continue;
            }
            let flow = self.flows.remove_slot(slot);
            self.counters.flows_evicted += 1;
            if !flow.closed {
                self.emit_eval(flow, order, EvalReason::Evicted, out);
            }
            return;
        }
        // No timer left for any flow (cannot happen: every flow has one); keep the bound anyway.
        if let Some(slot) = self.flows.any_slot() {
            let flow = self.flows.remove_slot(slot);
            self.counters.flows_evicted += 1;
            self.emit_eval(flow, order, EvalReason::Evicted, out);
        }
    }

    /// Evaluates and removes every flow (end of input or shutdown), in start order, at the
    /// time reached (the same in every shard: the dispatcher's last position reaches them all).
    pub fn flush(&mut self, out: &mut Vec<FlowEvent>) {
        self.flush_in_chunks(usize::MAX, |chunk| out.append(chunk));
    }

    /// [`flush`](Self::flush), handing the evaluations out `chunk` at a time, so a full table
    /// never sits in memory twice (once as flows, once as events).
    pub fn flush_in_chunks(&mut self, chunk: usize, mut emit: impl FnMut(&mut Vec<FlowEvent>)) {
        let mut flows: Vec<(Micros, u64, Slot)> = self
            .flows
            .iter()
            .filter(|(_, f)| !f.closed)
            .map(|(slot, f)| (f.start, f.uid, slot))
            .collect();
        self.timers = Timers::default();
        self.emergency = false;
        flows.sort_unstable();
        let mut out = Vec::with_capacity(chunk.min(flows.len()));
        for (_, _, slot) in flows {
            let flow = self.flows.remove_slot(slot);
            let order = Order {
                ts: self.now,
                class: 2,
                a: flow.start,
                b: flow.uid,
            };
            self.emit_eval(flow, order, EvalReason::Flush, &mut out);
            if out.len() >= chunk {
                emit(&mut out);
                out.clear();
            }
        }
        // What is left are ended flows, already evaluated.
        self.flows.clear();
        if !out.is_empty() {
            emit(&mut out);
        }
    }
}

fn new_flow(key: FlowKey, p: &PacketMeta) -> Flow {
    // The initiator is the SYN's sender; the receiver of a SYN-ACK; else the first sender.
    let synack = p.proto == PROTO_TCP
        && p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == (tcp_flags::SYN | tcp_flags::ACK);
    let (initiator, responder, iport, rport) = if synack {
        (p.dst, p.src, p.dport, p.sport)
    } else {
        (p.src, p.dst, p.sport, p.dport)
    };
    let mut flow = Flow::blank(
        key,
        key.stable_hash(p.ts),
        (initiator, iport),
        (responder, rport),
        p.ts,
    );
    (flow.icmp_type, flow.icmp_code) = (p.icmp_type, p.icmp_code);
    update(&mut flow, p);
    flow
}

impl Flow {
    /// A flow from `initiator` to `responder` that starts at `start`, with nothing counted.
    fn blank(
        key: FlowKey,
        uid: u64,
        (initiator, initiator_port): (IpAddr, u16),
        (responder, responder_port): (IpAddr, u16),
        start: Micros,
    ) -> Flow {
        Flow {
            key,
            uid,
            initiator,
            responder,
            initiator_port,
            responder_port,
            start,
            last: start,
            fwd: DirStats::default(),
            bwd: DirStats::default(),
            first_sizes: [0; 8],
            syn_seen: false,
            synack_seen: false,
            established: false,
            closed: false,
            icmp_error: false,
            icmp_from_peer: false,
            icmp_type: 0,
            icmp_code: 0,
            evals: 0,
            last_active_eval: start,
            held_check_cs: 0,
            exchanges: Exchanges::default(),
            heard: false,
        }
    }
}

/// Adds a packet to a flow. Returns true when the packet ends a TCP flow.
fn update(flow: &mut Flow, p: &PacketMeta) -> bool {
    let fwd = p.src == flow.initiator && p.sport == flow.initiator_port;
    let n = flow.packets() as usize;
    if n < flow.first_sizes.len() {
        let len = i16::try_from(p.ip_len).unwrap_or(i16::MAX);
        flow.first_sizes[n] = if fwd { len } else { -len };
    }
    flow.last = flow.last.max(p.ts);
    if fwd {
        flow.fwd.add(p);
    } else {
        flow.bwd.add(p);
    }
    if p.proto != PROTO_TCP {
        return false;
    }
    flow.exchanges.add(fwd, p.payload_len);
    flow.heard = !fwd || (flow.heard && p.payload_len == 0);
    let fins_before = flow.fwd.fin > 0 && flow.bwd.fin > 0;
    let f = p.tcp_flags;
    let syn = f & tcp_flags::SYN != 0;
    let ack = f & tcp_flags::ACK != 0;
    if syn && !ack && fwd {
        flow.syn_seen = true;
    } else if syn && ack && !fwd {
        flow.synack_seen = true;
    } else if ack && fwd && flow.synack_seen && !flow.established {
        flow.established = true;
    }
    if f & tcp_flags::RST != 0 {
        return true;
    }
    // FIN both ways ends the flow with the ACK of the second FIN (or at the closed timeout).
    fins_before && ack && f & tcp_flags::FIN == 0
}

#[cfg(test)]
impl Exchanges {
    /// A session's exchanges with `n` refusals in a row (84-byte requests, 44-byte answers).
    pub(crate) fn refused_in_a_row(n: u8) -> Exchanges {
        let mut x = Exchanges::default();
        for _ in 0..n {
            x.add(true, 84);
            x.add(false, 44);
        }
        x
    }
}

/// Flows built by hand for the tests of the stages after the flow table.
#[cfg(test)]
impl Flow {
    /// A flow of `proto` from `a:aport` to `b:bport` that starts and ends at `start`, with no
    /// packets counted and its `uid` given.
    pub(crate) fn for_test(
        proto: u8,
        (a, aport): (IpAddr, u16),
        (b, bport): (IpAddr, u16),
        start: Micros,
        uid: u64,
    ) -> Flow {
        let ((lo, lo_port), (hi, hi_port)) = if (a, aport) <= (b, bport) {
            ((a, aport), (b, bport))
        } else {
            ((b, bport), (a, aport))
        };
        let key = FlowKey {
            lo,
            hi,
            lo_port,
            hi_port,
            proto,
            vlan: [0; 2],
        };
        Flow::blank(key, uid, (a, aport), (b, bport), start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::packet::PROTO_UDP;
    use std::net::Ipv4Addr;

    fn pkt(
        ts: Micros,
        seq: u64,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        flags: u8,
    ) -> PacketMeta {
        PacketMeta {
            seq,
            ip_len: 60,
            tcp_flags: flags,
            tcp_window: 64240,
            ..PacketMeta::for_test(ts, PROTO_TCP, (src, sport), (dst, dport))
        }
    }

    const A: [u8; 4] = [10, 0, 0, 9];
    const B: [u8; 4] = [10, 0, 0, 1];
    use tcp_flags::{ACK, FIN, RST, SYN};

    fn evals(out: &[FlowEvent]) -> Vec<(EvalReason, Option<Outcome>)> {
        out.iter()
            .filter_map(|e| match e {
                FlowEvent::Eval {
                    reason,
                    first_outcome,
                    ..
                } => Some((*reason, *first_outcome)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn handshake_and_fin_both_ways_end_the_flow_once() {
        let cfg = Config::default().flow;
        let mut t = FlowTable::new(&cfg, 100);
        let mut out = Vec::new();
        let seq = [
            pkt(1_000, 1, A, 40000, B, 80, SYN),
            pkt(1_100, 2, B, 80, A, 40000, SYN | ACK),
            pkt(1_200, 3, A, 40000, B, 80, ACK),
            pkt(2_000, 4, A, 40000, B, 80, FIN | ACK),
            pkt(2_100, 5, B, 80, A, 40000, FIN | ACK),
            pkt(2_200, 6, A, 40000, B, 80, ACK),
        ];
        for p in &seq {
            t.process(p, &mut out);
        }
        assert_eq!(
            evals(&out),
            vec![(EvalReason::TcpEnd, Some(Outcome::TcpEstablished))]
        );
        let FlowEvent::Start { flow, .. } = &out[0] else {
            panic!("first event is the start")
        };
        assert_eq!(flow.initiator, IpAddr::V4(Ipv4Addr::from(A)));
        let FlowEvent::Eval { flow, .. } = &out[1] else {
            panic!("then the end")
        };
        assert_eq!(
            flow.packets(),
            6,
            "the ACK of the second FIN is the flow's last packet"
        );
        t.process(&pkt(2_300, 7, B, 80, A, 40000, ACK), &mut out);
        assert_eq!(
            t.counters.packets_after_end, 1,
            "a late packet is absorbed by the ended flow"
        );
        // A new SYN on the same 5-tuple starts a new flow.
        t.process(&pkt(3_000, 8, A, 40000, B, 80, SYN), &mut out);
        assert_eq!(t.counters.flows_created, 2);
    }

    #[test]
    fn rst_from_responder_is_a_rejection() {
        let cfg = Config::default().flow;
        let mut t = FlowTable::new(&cfg, 100);
        let mut out = Vec::new();
        t.process(&pkt(1_000, 1, A, 40001, B, 23, SYN), &mut out);
        t.process(&pkt(1_050, 2, B, 23, A, 40001, RST | ACK), &mut out);
        assert_eq!(
            evals(&out),
            vec![(EvalReason::TcpEnd, Some(Outcome::TcpRejected))]
        );
    }

    #[test]
    fn an_icmp_error_says_whether_the_target_or_a_router_sent_it() {
        let cfg = Config::default().flow;
        let mut t = FlowTable::new(&cfg, 100);
        let mut out = Vec::new();
        let error = |seq, from: [u8; 4], dport| PacketMeta {
            seq,
            kind: PacketKind::IcmpError {
                reporter: IpAddr::V4(Ipv4Addr::from(from)),
            },
            ..PacketMeta::for_test(2_000, PROTO_UDP, (A, 40000), (B, dport))
        };
        // A port unreachable from the target; a TTL exceeded from a router on the way.
        for (i, (dport, from)) in [(161, B), (33434, [10, 0, 0, 254])].into_iter().enumerate() {
            let seq = 2 * i as u64;
            let probe = PacketMeta {
                seq,
                ..PacketMeta::for_test(1_000, PROTO_UDP, (A, 40000), (B, dport))
            };
            t.process(&probe, &mut out);
            t.process(&error(seq + 1, from, dport), &mut out);
        }
        t.flush(&mut out);
        let flows: Vec<(u16, bool, bool)> = out
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Eval { flow, .. } => {
                    Some((flow.responder_port, flow.icmp_error, flow.icmp_from_peer))
                }
                _ => None,
            })
            .collect();
        assert_eq!(flows.len(), 2, "{flows:?}");
        assert!(flows.contains(&(161, true, true)), "{flows:?}");
        assert!(flows.contains(&(33434, true, false)), "{flows:?}");
    }

    #[test]
    fn alike_answers_in_a_row_are_counted_as_logins() {
        let count = |exchanges: &[(u16, u16)]| {
            let mut x = Exchanges::default();
            for &(request, answer) in exchanges {
                x.add(true, request);
                x.add(false, answer);
            }
            x.most_alike()
        };
        // An SSH client guessing passwords: key exchange, then a 44-byte refusal to each
        // password (a longer password a block longer); the last exchange, answered, is still
        // open (no request after it) and counts.
        let mut guesses = vec![(23, 41), (904, 1660), (48, 524), (60, 44)];
        guesses.extend([84, 84, 100, 84, 84].map(|request| (request, 44)));
        assert_eq!(count(&guesses), 6);
        let mut x = Exchanges::default();
        x.add(true, 84);
        assert_eq!(x.most_alike(), 0, "a request with no answer is no exchange");
        // MQTT keep-alives: 2-byte answers tell nothing.
        assert_eq!(count(&[(2, 2); 10]), 1);
        // A session whose answers differ (a shell, a web page each time).
        assert_eq!(count(&[(36, 36), (40, 1200), (36, 600), (52, 36)]), 1);
        // A request split over packets, and an answer too, are one exchange each.
        let mut x = Exchanges::default();
        for _ in 0..3 {
            x.add(true, 40);
            x.add(true, 44);
            x.add(false, 20);
            x.add(false, 24);
        }
        assert_eq!(x.most_alike(), 3);
    }

    #[test]
    fn a_session_is_evaluated_when_its_logins_reach_the_minimum() {
        let cfg = Config::default().flow;
        let mut t = FlowTable::new(&cfg, 100).evaluating_logins_at(4);
        let mut out = Vec::new();
        let mut seq = 0;
        let mut send =
            |t: &mut FlowTable, out: &mut Vec<FlowEvent>, from_client, payload, flags| {
                seq += 1;
                let ts = seq * 100_000;
                let p = if from_client {
                    pkt(ts, seq, A, 40022, B, 22, flags)
                } else {
                    pkt(ts, seq, B, 22, A, 40022, flags)
                };
                t.process(
                    &PacketMeta {
                        payload_len: payload,
                        ..p
                    },
                    out,
                );
            };
        send(&mut t, &mut out, true, 0, SYN);
        send(&mut t, &mut out, false, 0, SYN | ACK);
        send(&mut t, &mut out, true, 0, ACK);
        for _ in 0..6 {
            send(&mut t, &mut out, true, 84, ACK);
            send(&mut t, &mut out, false, 44, ACK);
        }
        let logins: Vec<u8> = out
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Eval {
                    reason: EvalReason::Logins,
                    flow,
                    ..
                } => Some(flow.exchanges.most_alike()),
                _ => None,
            })
            .collect();
        assert_eq!(logins, vec![4], "evaluated once, at the 4th answer");
    }

    #[test]
    fn a_connection_established_after_its_probe_evaluation_is_seen_held_three_handshakes_later() {
        let cfg = Config::default().flow;
        let rtt = 700_000;
        let data = |p: PacketMeta, len: u16| PacketMeta {
            payload_len: len,
            ..p
        };
        // The handshake completes 0.7 s in, after the probe evaluation; a request begins, and
        // the server acknowledges it a round trip later.
        let run = |answered: bool, sent: u16, acked: bool| {
            let mut t = FlowTable::new(&cfg, 100);
            let mut out = Vec::new();
            t.process(&pkt(0, 0, A, 40000, B, 80, SYN), &mut out);
            t.process(&pkt(rtt, 1, B, 80, A, 40000, SYN | ACK), &mut out);
            t.process(&pkt(rtt + 1, 2, A, 40000, B, 80, ACK), &mut out);
            t.process(&data(pkt(rtt + 2, 3, A, 40000, B, 80, ACK), sent), &mut out);
            if acked {
                t.process(&pkt(2 * rtt + 2, 4, B, 80, A, 40000, ACK), &mut out);
            }
            if answered {
                let (answer, next) = (
                    pkt(2 * rtt + 9, 5, B, 80, A, 40000, ACK),
                    pkt(2 * rtt + 10, 6, A, 40000, B, 80, ACK),
                );
                t.process(&data(answer, 500), &mut out);
                t.process(&data(next, 200), &mut out);
            }
            t.advance(rtt + 1 + 3 * (rtt + 1) + 10_000, &mut out);
            evals(&out).into_iter().map(|(r, _)| r).collect::<Vec<_>>()
        };
        assert_eq!(run(false, 200, true), [EvalReason::Probe, EvalReason::Held]);
        // A request answered, or a full segment sent, is no held connection; nor is one whose
        // server has not been heard from since the request (the path grew slower since the
        // handshake: its answer may still be on its way).
        assert_eq!(run(true, 200, true), [EvalReason::Probe]);
        assert_eq!(run(false, 1460, true), [EvalReason::Probe]);
        assert_eq!(run(false, 200, false), [EvalReason::Probe]);
    }

    #[test]
    fn a_refusal_after_the_probe_evaluation_is_evaluated_when_it_comes() {
        let cfg = Config::default().flow;
        let mut t = FlowTable::new(&cfg, 100);
        let mut out = Vec::new();
        let probe_at = micros(cfg.probe_eval_s);
        let error = |seq, ts, from: [u8; 4], dport| PacketMeta {
            seq,
            kind: PacketKind::IcmpError {
                reporter: IpAddr::V4(Ipv4Addr::from(from)),
            },
            ..PacketMeta::for_test(ts, PROTO_UDP, (A, 40000), (B, dport))
        };
        // UDP probes over a long link: the target's port unreachable comes 0.74 s after each,
        // after its probe evaluation; a router's TTL exceeded does too, and is no refusal.
        let probes = [(161, B), (33434, [10, 0, 0, 254])];
        for (i, (dport, _)) in probes.into_iter().enumerate() {
            let seq = 2 * i as u64;
            let probe = PacketMeta {
                seq,
                ..PacketMeta::for_test(seq, PROTO_UDP, (A, 40000), (B, dport))
            };
            t.process(&probe, &mut out);
        }
        t.advance(probe_at + 2, &mut out);
        for (i, (dport, from)) in probes.into_iter().enumerate() {
            t.process(&error(2 * i as u64 + 1, 740_000, from, dport), &mut out);
        }
        // A second error from the target is no news.
        t.process(&error(5, 800_000, B, 161), &mut out);
        let seen: Vec<(EvalReason, u16, bool)> = out
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Eval {
                    reason,
                    flow,
                    order,
                    ..
                } => Some((*reason, flow.responder_port, order.ts == 740_000)),
                _ => None,
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (EvalReason::Probe, 161, false),
                (EvalReason::Probe, 33434, false),
                (EvalReason::Refused, 161, true),
            ],
            "the target's refusal is evaluated when it comes, once"
        );
        let refused = out.iter().rev().find_map(|e| match e {
            FlowEvent::Eval { flow, .. } => Some(*flow),
            _ => None,
        });
        assert!(refused.is_some_and(|f| f.icmp_from_peer && f.evals == 2));
    }

    #[test]
    fn a_growing_flow_is_evaluated_again_at_8x_its_packets() {
        let cfg = Config::default().flow;
        let mut t = FlowTable::new(&cfg, 100);
        let mut out = Vec::new();
        // One established TCP flow, 1 ms per packet, far more packets than 8 * 8 * 8.
        t.process(&pkt(0, 0, A, 40003, B, 80, SYN), &mut out);
        t.process(&pkt(10, 1, B, 80, A, 40003, SYN | ACK), &mut out);
        for i in 2..5_000u64 {
            t.process(&pkt(i * 1_000, i, A, 40003, B, 80, ACK), &mut out);
        }
        let at: Vec<u32> = out
            .iter()
            .filter_map(|e| match e {
                FlowEvent::Eval { reason, flow, .. } => {
                    assert_eq!(*reason, EvalReason::Early);
                    Some(flow.packets())
                }
                _ => None,
            })
            .collect();
        let early = cfg.early_eval_packets;
        assert_eq!(
            at,
            vec![early, early * 4, early * 16, early * 64],
            "early evaluations up to max_evals_per_flow - 1, the last one left for the end"
        );
    }

    #[test]
    fn unanswered_syn_is_probed_then_times_out() {
        let cfg = Config::default().flow;
        let mut t = FlowTable::new(&cfg, 100);
        let mut out = Vec::new();
        t.process(&pkt(0, 1, A, 40002, B, 443, SYN), &mut out);
        t.advance(micros(cfg.probe_eval_s), &mut out);
        assert_eq!(
            evals(&out),
            vec![(EvalReason::Probe, Some(Outcome::TcpHalfOpen))]
        );
        t.advance(micros(cfg.tcp_handshake_timeout_s), &mut out);
        assert_eq!(evals(&out)[1], (EvalReason::Idle, None));
        assert!(t.is_empty());
        let Some(FlowEvent::Eval { order, .. }) = out.last() else {
            panic!()
        };
        assert_eq!(
            order.ts,
            micros(cfg.tcp_handshake_timeout_s),
            "evaluated at its deadline"
        );
    }

    #[test]
    fn full_table_evicts_and_counts() {
        let cfg = Config::default().flow;
        let mut t = FlowTable::new(&cfg, 3);
        let mut out = Vec::new();
        for i in 0..10u16 {
            t.process(
                &pkt(u64::from(i), u64::from(i), A, 1000 + i, B, 80, SYN),
                &mut out,
            );
            assert!(t.len() <= 3);
        }
        assert_eq!(t.counters.flows_evicted, 7);
        assert_eq!(
            evals(&out)
                .iter()
                .filter(|(r, _)| *r == EvalReason::Evicted)
                .count(),
            7
        );
    }

    #[test]
    fn emergency_mode_shortens_timeouts_while_the_table_is_nearly_full() {
        let cfg = Config::default().flow; // enter at 90 %, leave under 70 %, timeouts × 0.1
        let mut t = FlowTable::new(&cfg, 100);
        let mut out = Vec::new();
        let syn = |i: u16, ts: Micros| pkt(ts, u64::from(i), A, 1000 + i, B, 80, SYN);
        // 89 half-open flows in the first 89 ms: under the mark.
        for i in 0..89u16 {
            t.process(&syn(i, 1_000_000 + u64::from(i) * 1000), &mut out);
        }
        assert!(!t.in_emergency());
        assert_eq!(t.counters.emergencies, 0);
        // The 90th flow reaches 90 %.
        t.process(&syn(89, 1_100_000), &mut out);
        assert!(t.in_emergency());
        assert_eq!(t.counters.emergencies, 1);
        // The handshake timeout is 10 s, 1 s in emergency mode: 1.2 s later, the 90 flows have
        // ended by inactivity (evaluated, not evicted) and the mode is over.
        out.clear();
        t.process(&syn(500, 2_300_000), &mut out);
        let idle = evals(&out)
            .iter()
            .filter(|(r, _)| *r == EvalReason::Idle)
            .count();
        assert_eq!(idle, 90);
        assert_eq!(t.counters.flows_evicted, 0);
        assert_eq!(t.len(), 1);
        assert!(!t.in_emergency());
        // Events stay in order across the switch.
        assert!(out.windows(2).all(|w| w[0].order() <= w[1].order()));
        // Back to normal timeouts: a flow idle for 1.2 s is still there.
        t.process(&syn(501, 3_500_000), &mut out);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn chunked_flush_equals_flush() {
        let cfg = Config::default().flow;
        let fill = |t: &mut FlowTable| {
            let mut out = Vec::new();
            for i in 0..50u16 {
                t.process(
                    &pkt(u64::from(i), u64::from(i), A, 1000 + i, B, 80, SYN),
                    &mut out,
                );
            }
        };
        let (mut a, mut b) = (FlowTable::new(&cfg, 64), FlowTable::new(&cfg, 64));
        fill(&mut a);
        fill(&mut b);
        let mut whole = Vec::new();
        a.flush(&mut whole);
        let mut chunks = Vec::new();
        let mut pieces = Vec::new();
        b.flush_in_chunks(7, |c| {
            assert!(c.len() <= 7);
            pieces.push(c.len());
            chunks.append(c);
        });
        assert_eq!(whole.len(), 50);
        assert_eq!(whole, chunks);
        assert_eq!(pieces.len(), 8);
    }

    #[test]
    fn a_packet_and_its_reply_have_one_key_and_one_hash() {
        let hasher = Seeded::default();
        let there = pkt(0, 0, A, 40000, B, 443, SYN);
        let back = pkt(1, 1, B, 443, A, 40000, SYN | ACK);
        let (k1, from_lo1) = FlowKey::of(&there);
        let (k2, from_lo2) = FlowKey::of(&back);
        assert_eq!(k1, k2);
        assert_ne!(from_lo1, from_lo2);
        assert_eq!(hasher.hash_one(k1), hasher.hash_one(k2));
        let other_vlan = FlowKey {
            vlan: [10, 0],
            ..k1
        };
        let other_port = FlowKey {
            lo_port: 40001,
            ..k1
        };
        assert_ne!(hasher.hash_one(k1), hasher.hash_one(other_vlan));
        assert_ne!(hasher.hash_one(k1), hasher.hash_one(other_port));
    }

    #[test]
    fn shards_are_the_same_both_ways_and_evenly_used() {
        let v4 = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let v6 = |i: u32| {
            IpAddr::V6(std::net::Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | u128::from(i),
            ))
        };
        let packet = |src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8| PacketMeta {
            src,
            dst,
            sport,
            dport,
            proto,
            ..pkt(0, 0, [0; 4], 0, [0; 4], 0, 0)
        };
        let spread = |flows: &[PacketMeta], shards: usize| {
            let mut used = vec![0usize; shards];
            for p in flows {
                let shard = shard_of(p, shards);
                let reply = packet(p.dst, p.src, p.dport, p.sport, p.proto);
                assert_eq!(shard, shard_of(&reply, shards), "{p:?}");
                used[shard] += 1;
            }
            let even = flows.len() / shards;
            for n in &used {
                assert!(
                    n.abs_diff(even) < even / 20,
                    "{shards} shards used {used:?}"
                );
            }
        };
        // 630 LAN hosts talking to 40 servers each: the pairs of a small office, both families.
        let mut office = Vec::new();
        for host in 0..630 {
            for server in 0..40 {
                let (a, b) = if host % 5 == 0 {
                    (v6(host), v6(100_000 + server * 7919))
                } else {
                    (v4(host), v4(0x00c6_1200 + server * 7919))
                };
                office.push(packet(a, b, 40_000 + (host % 1000) as u16, 443, PROTO_TCP));
            }
        }
        // One attacker and one victim: SYNs from every source port to port 80, then UDP to every
        // port from one source port.
        let (attacker, victim) = (v4(66), v4(10));
        let mut pair = Vec::new();
        for port in 1024..=65535u16 {
            pair.push(packet(attacker, victim, port, 80, PROTO_TCP));
            pair.push(packet(attacker, victim, 5353, port, 17));
        }
        for shards in [2, 3, 4, 8] {
            spread(&office, shards);
            spread(&pair, shards);
        }
        assert_eq!(shard_of(&pair[0], 1), 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::config::Config;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn arb_packet() -> impl Strategy<Value = (u8, u8, u16, u16, u8, u8, u64)> {
        // (src host, dst host, sport, dport, proto selector, tcp flags, time step µs)
        (
            0u8..6,
            0u8..6,
            1u16..6,
            prop_oneof![Just(22u16), Just(53), Just(80)],
            0u8..3,
            any::<u8>(),
            0u64..3_000_000,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Timer entries leave in the order one heap would give them, whichever way they were
        /// pushed: in order (a new flow's first deadline), out of order (a later one), or with
        /// deadlines equal and uids not.
        #[test]
        fn timers_leave_in_heap_order(
            ops in proptest::collection::vec((0u8..4, 0u64..50, 0u64..4), 1..300),
        ) {
            let mut timers = Timers::default();
            let mut reference = BinaryHeap::new();
            // The last deadline fired, and the last of those pushed in order.
            let (mut fired, mut latest) = (0, 0);
            for (slot, (op, step, uid)) in ops.into_iter().enumerate() {
                if op == 0 {
                    let e = timers.pop();
                    prop_assert_eq!(e, reference.pop().map(|Reverse(e)| e));
                    fired = e.map_or(fired, |(due, _, _)| due);
                    continue;
                }
                // A deadline is never before the last one fired: new flows' come in order
                // (op 1), others anywhere after it (op 2 and 3).
                let due = if op == 1 { latest.max(fired) + step } else { fired + step };
                latest = if op == 1 { due } else { latest };
                let entry = (due, uid, slot as Slot);
                timers.push(entry, usize::MAX);
                reference.push(Reverse(entry));
                prop_assert_eq!(timers.len(), reference.len());
                prop_assert_eq!(timers.peek(), reference.peek().map(|&Reverse(e)| e));
            }
            let mut rest = Vec::new();
            while let Some(e) = timers.pop() {
                rest.push(e);
            }
            prop_assert_eq!(rest, reference.into_sorted_vec().into_iter().rev().map(|Reverse(e)| e).collect::<Vec<_>>());
        }

        /// The table never holds more than its capacity, every packet is accounted for, and every
        /// flow is evaluated at least once by the end (probe, end, timeout, eviction or flush).
        #[test]
        fn bounded_conserving_and_every_flow_evaluated(
            packets in proptest::collection::vec(arb_packet(), 1..400),
            capacity in 1usize..20,
        ) {
            let cfg = Config::default().flow;
            let mut table = FlowTable::new(&cfg, capacity);
            let mut out = Vec::new();
            let mut ts = 1_000_000u64;
            for (i, (s, d, sport, dport, proto, flags, step)) in packets.iter().enumerate() {
                ts += step;
                let proto = [PROTO_TCP, crate::packet::PROTO_UDP, PROTO_ICMP][*proto as usize];
                let p = PacketMeta {
                    ts,
                    seq: i as u64 + 1,
                    vlan: [0; 2],
                    src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, *s)),
                    dst: IpAddr::V4(Ipv4Addr::new(10, 0, 1, *d)),
                    sport: *sport,
                    dport: *dport,
                    proto,
                    ip_len: 60,
                    payload_len: 0,
                    tcp_flags: if proto == PROTO_TCP { *flags } else { 0 },
                    tcp_window: 1000,
                    ttl: 64,
                    icmp_type: 8,
                    icmp_code: 0,
                    kind: PacketKind::Normal,
                    fragment: None,
                };
                table.process(&p, &mut out);
                prop_assert!(table.len() <= capacity);
                prop_assert!(table.timer_entries() <= timer_bound(capacity), "timers stay bounded");
            }
            table.flush(&mut out);
            prop_assert!(table.is_empty());
            let mut started = std::collections::HashSet::new();
            let mut evaluated = std::collections::HashSet::new();
            let mut final_packets = 0u64;
            let mut last_order = Order::ZERO;
            for e in &out {
                prop_assert!(e.order() >= last_order, "events come out in order");
                last_order = e.order();
                match e {
                    FlowEvent::Start { flow, .. } => { started.insert(flow.uid); }
                    FlowEvent::Eval { flow, reason, .. } => {
                        evaluated.insert(flow.uid);
                        if reason.is_final() {
                            final_packets += u64::from(flow.packets());
                        }
                    }
                }
            }
            prop_assert_eq!(&started, &evaluated, "every flow evaluated");
            prop_assert_eq!(table.counters.packets, packets.len() as u64);
            prop_assert_eq!(final_packets + table.counters.packets_after_end, packets.len() as u64, "packets conserved");
        }
    }
}
