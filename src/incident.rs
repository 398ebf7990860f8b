//! Incidents: scored flow evaluations become one alert per behaviour and episode.
//!
//! The model scores flows; a behaviour is seen across them. Each flow evaluation at or above
//! the threshold counts towards the incident of its class, keyed by who behaves:
//!
//! | behaviour | incident of | alert when (`[alert]` settings) |
//! |---|---|---|
//! | scan | a source | `scan_min_targets` distinct (host, port) probed at `scan_min_targets_per_s`, as a grid (few hosts or few ports, or hosts x ports); TCP probes of any class count too, and attempts their target refused (or TCP ones it never answered) whatever the model scores |
//! | bruteforce | a source at one service (host, port) | `bruteforce_min_sessions` sessions that exchanged data at `bruteforce_min_sessions_per_min`; or `bruteforce_min_logins` login attempts in those sessions (requests answered alike in a row, `flow::Exchanges`); or, whatever the model scores, `bruteforce_repeat_min_sessions` sessions one after another, back to back and alike (`repeat`) |
//! | flood | a victim, whoever sends | `flood_min_flows` flows (or `flood_min_packets` packets of UDP/ICMP), at `flood_min_packets_per_s` or more sent to the victim |
//! | flood of lone attempts | a victim | `flood_min_sources` sources, `flood_min_flows` flows at `flood_min_packets_per_s` |
//! | slowdos | a victim's TCP service | `slowdos_min_connections` connections |
//! | anything else | a (source, victim) pair | its first flow |
//!
//! each also by protocol (an alert record has one). A flood or slow DoS names its top sources by
//! the packets of their flows; a TCP one only those of `flood_min_flows` flows in it (a client's
//! download the model calls flood, by its server's context, is counted, not named). A lone attempt
//! (a SYN or a datagram or two, unanswered) that the model calls a probe is a probe when one source
//! sends many and part of a flood when many sources send one each, as a flood from spoofed sources
//! does: when the victim (one host, not a multicast or broadcast group) has seen
//! `flood_min_sources` sources lately in its host context, the attempt's first evaluation also
//! counts towards the victim's flood, whatever the model scores it (one SYN from a random address
//! is nothing to score; the flood's minimums decide), and once that flood is alerted with
//! `flood_min_sources` sources, its sources get no scan candidates of their own (a scanner already
//! tracked keeps its candidate). A flagged TCP connection attempt that got nowhere (a SYN, no
//! payload either way, refused, unanswered or reset by its initiator) also counts towards its
//! source's scan whatever its class: the class head confuses scan and flood on such flows, and the
//! scan's minimums decide (a flood of one target stays one target); one the class head calls flood,
//! from a source port its source's scan sent probes from before (the last of them to another
//! target), counts in that scan and not in its victim's flood (`swept_from_its_port`: a scanner's
//! probes leave from one port, a flood tool's SYNs each from their own). A lone attempt among them
//! to a victim whose flood is alerted from `flood_min_sources` sources is one of that flood's
//! packets: it makes no scan candidate of its own either. Once a flood is alerted, such an attempt
//! (or any TCP attempt that got nowhere from one of the flood's named top sources while it floods,
//! a probe of its scan too) counts in it without a score (`absorbs`): under a flood of new flows,
//! scoring each would be the sensor's dearest work, to learn what the alert says already. A brute
//! force or slow DoS of the source that leads an alerted flood (or, for a brute force, slow DoS) of
//! the same service, while it sends in it, raises nothing (`explained`), if that flood established
//! connections (`flood_min_flows`): a flood's kept-alive connections repeat one request, like a
//! guesser's sessions, and over a long path look held; one attack is alerted once. A sweep's SYNs
//! hold nothing open. A connection flagged a slow DoS or a TCP flood at its probe evaluation,
//! before its handshake completed, counts as held in its service's slow DoS at its held evaluation,
//! unscored (`offer_standing`); one its server answers instead counts in its victim's TCP flood
//! when scored below the threshold (an HTTP flood's connections over a long path, each an ordinary
//! client's, `answered_flood`).
//! Two behaviours count whatever the model scores, each of their flows looking ordinary: a TCP
//! attempt its target refused or never answered, or a UDP datagram its target refused, counts
//! towards its source's scan (silence only at its last evaluation: an answer may be slow to come; a
//! refusal when it comes, see `EvalReason::Refused`); and a series of sessions one after another
//! (`repeat`) is a brute force. A session the model flags as a brute force also counts the
//! passwords tried inside it (`flow::Exchanges`). Until its evidence is enough an incident is a
//! candidate and raises nothing: one flow the model finds odd is not an attack (a candidate older
//! than twice the time its minimums take at their minimum rate starts over, so that old evidence
//! does not dilute a burst). Then it raises one alert, and updates it (the same `alert_id`, the
//! next `update` number, the evidence so far) at most every `update_interval_s` while it goes on (a
//! flood's sooner when a new source has sent `flood_min_packets` on its own, or a named one as much
//! since it came back after two seconds without a packet, a slow DoS's likewise with the packets of
//! `slowdos_min_connections` handshakes, any incident's when it resumes after its flows have been
//! quiet for two seconds with its minimum of new flows, or a UDP or ICMP flood's with
//! `flood_min_packets` packets: the same attacker's next scan of its victim), and a last time
//! (`final`) when it has been quiet for `incident_idle_s` (no evaluation counted, and none of its
//! flows open: a one-flow flood evaluated early and next at its end is one incident). A flow counts
//! once in an incident however often it is evaluated; its later evaluations add only what it sent
//! since. A flow that has shown nothing since the evaluation that counted it (no packet, no
//! refusal) keeps that verdict: its next evaluation (its idle end, usually) counts only where it
//! counted, whatever the model makes of it in its endpoints' context of then.
//!
//! Memory is bounded: `max_incidents` incidents and candidates, the least recently active one
//! going first (a candidate dropped, an incident closed), four times as many flows
//! remembered as counted (one entry a flow, a probe's share of its source's scan included) and
//! as many again by what they had shown alone, once that table is full (with the default
//! settings the two hold as many flows as the flow table), and as many series of sessions
//! (`repeat`) as incidents. It runs on packet time, so replay output does not depend on the
//! wall clock. It builds records (`alert`); writing them is the sinks' job.
//!
//! With `mode = "flow"` every evaluation at or above the threshold is an alert of its own (for
//! tests, model comparisons and receivers that group alerts themselves).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;

use crate::alert::{
    Alert, AlertInfo, Context, Detail, Endpoint, Evidence, FlowInfo, ModelRef, TopSource,
    community_id, eve_time, signature_of,
};
use crate::config::{AlertConfig, AlertMode};
use crate::distinct::{Distinct, ip_value};
use crate::fasthash::FastMap;
use crate::flow::{EvalReason, Flow, Outcome};
use crate::model::{ModelInfo, Score};
use crate::packet::{Micros, PROTO_TCP, PROTO_UDP, proto_name};
use crate::repeat::{self, Repeats, Series};

/// What an incident is about, from the model's class name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Behaviour {
    Scan,
    Flood,
    Bruteforce,
    SlowDos,
    Other,
}

impl Behaviour {
    fn of(class: &str) -> Behaviour {
        match class {
            "scan" => Behaviour::Scan,
            "flood" | "dos" => Behaviour::Flood,
            "bruteforce" => Behaviour::Bruteforce,
            "slowdos" => Behaviour::SlowDos,
            _ => Behaviour::Other,
        }
    }
}

/// Who an incident is about: the attacker, the victim and the victim's port, as the behaviour
/// says (unused parts are `None` and 0). Ordered, so that incidents quiet at the same moment
/// close in the same order on every run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    class: usize,
    attacker: Option<IpAddr>,
    victim: Option<IpAddr>,
    port: u16,
    proto: u8,
}

impl Key {
    fn of(behaviour: Behaviour, class: usize, f: &Flow) -> Key {
        let (attacker, victim, port) = match behaviour {
            Behaviour::Scan => (Some(f.initiator), None, 0),
            Behaviour::Bruteforce => (Some(f.initiator), Some(f.responder), f.responder_port),
            Behaviour::Flood => (None, Some(f.responder), 0),
            Behaviour::SlowDos => (None, Some(f.responder), f.responder_port),
            Behaviour::Other => (Some(f.initiator), Some(f.responder), 0),
        };
        Key {
            class,
            attacker,
            victim,
            port,
            proto: f.key.proto,
        }
    }
}

/// An alert raised for an incident.
#[derive(Clone, Debug)]
struct Raised {
    alert_id: String,
    update: u32,
    at: Micros,
    flows: u64,
    packets: u64,
    /// The top sources the last record named.
    named: [Option<IpAddr>; TOP_SOURCES],
}

/// Sources tracked for a flood's `top_sources` (space-saving: the counts are estimates).
const TOP_SOURCES: usize = 4;

/// Source ports tracked in an incident ([`Incident::count_src_port`]).
const SRC_PORTS: usize = 4;

/// How long after the last packet an alerted flood (or slow DoS) counted from one of its
/// sources that source's part in it still goes on, for what the source does next
/// ([`AlertEngine::absorbs`], [`AlertEngine::explained`]): flows are evaluated 0.5 s after an
/// unanswered start (`flow.probe_eval_s`), at packet counts and at their end, so the last
/// packet counted lags the sending.
const FLOOD_GOES_ON: Micros = 2_000_000;

/// How long an incident's flows must have been quiet (no packet seen of any) for a new flow to
/// resume it ([`Incident::resumed`]): as long as a flood's source's part goes on after its last
/// packet counted.
const LULL: Micros = FLOOD_GOES_ON;

/// A source in the space-saving count: its address, its count, and how much of that count it
/// may have inherited from the source it replaced (its count is at least `count - error`).
#[derive(Clone, Copy, Debug, Default)]
struct TopSlot {
    ip: Option<IpAddr>,
    count: u64,
    error: u64,
    /// The last packet of its flows counted.
    last: Micros,
    /// Its new flows counted since it took the slot: a lower bound of its flows in the incident.
    flows: u32,
    /// The packets it sent since it came back (a new flow of it [`LULL`] after its last packet)
    /// and the last record went out: 0 if it has not.
    back: u64,
}

impl TopSlot {
    /// The packets its source sent for sure.
    fn sure(&self) -> u64 {
        self.count - self.error
    }

    /// The source, if a record names it: one that sent 2 packets or more for sure, in
    /// `min_flows` flows or more. Sources with a packet or so each (spoofed ones) leave nothing
    /// sure above their floor.
    fn named(&self, min_flows: u32) -> Option<IpAddr> {
        self.ip
            .filter(|_| self.sure() >= 2 && self.flows >= min_flows)
    }
}

/// A source port in an incident's Misra-Gries count ([`Incident::count_src_port`]).
#[derive(Clone, Copy, Debug, Default)]
struct PortSlot {
    port: u16,
    count: u32,
    /// The target (host and port) of the last flow from it, as `Incident::targets` hashes it.
    last_to: u64,
}

impl PortSlot {
    /// Whether the slot counts `port` (a slot counted down to 0 is free).
    fn holds(&self, port: u16) -> bool {
        self.count > 0 && self.port == port
    }
}

/// What an incident keeps of its first flow: the record's `flow_id`, ports, VLAN and
/// Community ID come from it. 56 bytes, against 312 for a whole [`Flow`]: a flood of spoofed
/// sources makes thousands of candidates.
#[derive(Clone, Copy, Debug)]
struct First {
    uid: u64,
    initiator: IpAddr,
    responder: IpAddr,
    initiator_port: u16,
    responder_port: u16,
    proto: u8,
    icmp_type: u8,
    icmp_code: u8,
    vlan: [u16; 2],
}

impl First {
    fn of(f: &Flow) -> First {
        First {
            uid: f.uid,
            initiator: f.initiator,
            responder: f.responder,
            initiator_port: f.initiator_port,
            responder_port: f.responder_port,
            proto: f.key.proto,
            icmp_type: f.icmp_type,
            icmp_code: f.icmp_code,
            vlan: f.key.vlan,
        }
    }

    fn community_id(&self) -> Option<String> {
        community_id(
            (self.initiator, self.initiator_port),
            (self.responder, self.responder_port),
            self.proto,
            (self.icmp_type, self.icmp_code),
        )
    }
}

#[derive(Clone, Debug)]
struct Incident {
    behaviour: Behaviour,
    key: Key,
    first: First,
    raised: Option<Raised>,
    /// First and last evaluation counted.
    first_ts: Micros,
    last_ts: Micros,
    /// First and last packet of the flows counted.
    start: Micros,
    end: Micros,
    flows: u64,
    pkts: [u64; 2],
    bytes: [u64; 2],
    score: f32,
    sources_vary: bool,
    victims_vary: bool,
    src_ports_vary: bool,
    dst_ports_vary: bool,
    targets: Distinct<8>,
    hosts: Distinct<8>,
    ports: Distinct<8>,
    sources: Distinct<8>,
    unanswered: u64,
    sessions: u64,
    /// Login attempts in those sessions: each session's requests answered alike in a row.
    logins: u64,
    /// TCP connections established (handshake completed): what a slow DoS holds. A SYN flood's
    /// half-open attempts are not held connections.
    held: u64,
    /// Of `flows`, the lone attempts counted for a flood of many sources.
    lone: u64,
    /// Flows counted here whose last evaluation is still to come (of those `counted` holds):
    /// while one is open the incident has not gone quiet. A one-flow flood is evaluated early
    /// and then at its end, which can be minutes later.
    open: u32,
    /// New flows since the incident went quiet for [`LULL`] and resumed (0: it has not since
    /// its last record), and where the first of them started: the same attacker back after a
    /// pause, on the same victim, is news that the next record tells at once.
    resumed: u32,
    resumed_at: Micros,
    /// The packets of those new flows (both ways, as [`Incident::enough`] counts a UDP or
    /// ICMP flood's): such a flood resumes in one flow.
    resumed_pkts: u64,
    /// Sum of the counted flows' durations.
    duration: Micros,
    top: [TopSlot; TOP_SOURCES],
    /// The source ports its new flows came from most (Misra-Gries: a port sent from more
    /// than a fifth of the time is here), for a scan: a scanner's probes leave from one port.
    src_ports: [PortSlot; SRC_PORTS],
    /// The flows a source needs in it to be named ([`TopSlot::named`]): 0 but in a TCP flood or
    /// slow DoS.
    source_min_flows: u32,
    /// A brute force by its repeated sessions (`repeat`), whatever the model scored them.
    repeated: bool,
}

/// How a flow's evaluation counts in an incident.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Counting {
    /// As one of its flows: `before` is what the flow gave so far (to this incident or another).
    Evaluation { before: Option<Counted> },
    /// As a lone attempt towards a flood of many sources, once.
    LoneAttempt,
}

/// A SYN or a datagram or two that got nothing back: a probe, or one of a spoofed flood's
/// packets.
fn lone_attempt(f: &Flow) -> bool {
    f.fwd.pkts <= 2
        && f.bwd.payload_bytes == 0
        && matches!(
            f.outcome(),
            Outcome::TcpHalfOpen | Outcome::TcpRejected | Outcome::Unanswered
        )
}

/// A flow's target, its responder's host and port, as one value for [`Distinct`].
fn target_of(f: &Flow) -> u64 {
    ip_value(f.responder) ^ (u64::from(f.responder_port) << 48)
}

/// Whether `ip` is one host's address (not a multicast group, a broadcast or unspecified).
fn unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

/// A TCP connection attempt that got nowhere: opened with a SYN, no payload either way, and
/// refused, unanswered, or reset by its initiator (a connect scan's probe of an open port).
fn is_probe(f: &Flow) -> bool {
    f.key.proto == PROTO_TCP
        && f.syn_seen
        && f.fwd.payload_bytes == 0
        && f.bwd.payload_bytes == 0
        && (matches!(f.outcome(), Outcome::TcpRejected | Outcome::TcpHalfOpen) || f.fwd.rst > 0)
}

/// A connection attempt that got nowhere by its target's doing, the evidence a scan leaves
/// whatever a model makes of each probe: a TCP SYN never established, no payload either way,
/// refused by the target (a reset, or an ICMP error the target itself sent) or never answered;
/// or a datagram or two the target refused with an ICMP error. An error from a router on the way
/// (no route, TTL exceeded) says the path is broken, not that the target refused: a host with
/// no working route tries server after server, traceroute's probes expire hop after hop. Nor
/// does an attempt its initiator reset count: clients cancel connections they no longer need
/// (happy eyeballs, preconnects), a scanner's refused and unanswered probes are most of its
/// probes.
fn refused_or_unanswered(f: &Flow) -> bool {
    f.bwd.payload_bytes == 0
        && match f.key.proto {
            PROTO_TCP => {
                let refused = f.icmp_from_peer || f.bwd.rst > 0;
                let answered = f.icmp_error || f.synack_seen || f.bwd.pkts > 0;
                f.syn_seen && !f.established && f.fwd.payload_bytes == 0 && (refused || !answered)
            }
            // A UDP probe may carry a payload (nmap's for DNS, SNMP, ...).
            PROTO_UDP => f.fwd.pkts <= 2 && f.icmp_from_peer,
            _ => false,
        }
}

/// What a counted flow has given its incident so far.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counted {
    key: Key,
    pkts: [u32; 2],
    bytes: [u64; 2],
    duration: Micros,
    unanswered: bool,
    session: bool,
    held: bool,
    /// A session's requests answered alike in a row (`Exchanges`): its login attempts.
    logins: u8,
    /// Its peer had refused it with an ICMP error.
    refused: bool,
    /// Given, the same, to its source's scan too: a probe of another class (in a byte of
    /// padding, so a probe needs no entry of its own).
    probe: bool,
}

impl Counted {
    /// Nothing given yet.
    fn none(key: Key) -> Counted {
        Counted {
            key,
            pkts: [0; 2],
            bytes: [0; 2],
            duration: 0,
            unanswered: false,
            session: false,
            held: false,
            logins: 0,
            refused: false,
            probe: false,
        }
    }

    fn of(key: Key, f: &Flow) -> Counted {
        Counted::none(key).now(f)
    }

    /// What the flow gave the incident of `key` so far, if it was counted there: the incident
    /// of its class, or its source's scan (`scan`) as a probe.
    fn share(self, key: Key, scan: Option<Key>) -> Option<Counted> {
        if self.key == key {
            Some(self)
        } else if self.probe && scan == Some(key) {
            Some(Counted {
                key,
                probe: false,
                ..self
            })
        } else {
            None
        }
    }

    /// What the flow says now (the numbers the incident should hold for it).
    fn now(self, f: &Flow) -> Counted {
        Counted {
            pkts: [f.fwd.pkts, f.bwd.pkts],
            bytes: [f.fwd.bytes, f.bwd.bytes],
            duration: f.last.saturating_sub(f.start),
            unanswered: !matches!(f.outcome(), Outcome::TcpEstablished | Outcome::Answered),
            session: f.established && f.fwd.payload_bytes > 0 && f.bwd.payload_bytes > 0,
            held: f.established,
            // A long session's alike exchanges are keep-alives and polls, not logins.
            logins: if f.last.saturating_sub(f.start) <= repeat::SHORT {
                f.exchanges.most_alike()
            } else {
                0
            },
            refused: f.icmp_from_peer,
            ..self
        }
    }

    /// Whether the flow has shown nothing since it gave this: no packet either way, no refusal.
    fn unchanged(self, f: &Flow) -> bool {
        self.pkts == [f.fwd.pkts, f.bwd.pkts] && self.refused == f.icmp_from_peer
    }
}

/// What a flow has shown, in one number: its packets both ways (wrapping at 2^31) and whether
/// its peer refused it. `Counted::unchanged` for a flow remembered by this alone.
fn shown(f: &Flow) -> u32 {
    (f.fwd.pkts.wrapping_add(f.bwd.pkts) & 0x7fff_ffff) | (u32::from(f.icmp_from_peer) << 31)
}

impl Incident {
    fn new(behaviour: Behaviour, key: Key, ts: Micros, f: &Flow, cfg: &AlertConfig) -> Incident {
        // A TCP flood or slow DoS is many connections: a source with fewer than a flood's
        // minimum of flows in it is no attacker of it, however many packets it counts. The model
        // flags a client's download from a flooded server a flood by its host's context, and a
        // few bulk transfers outweigh a flood's SYNs or short requests; they would lead it.
        let source_min_flows = match behaviour {
            Behaviour::Flood | Behaviour::SlowDos if key.proto == PROTO_TCP => {
                u32::try_from(cfg.flood_min_flows).unwrap_or(u32::MAX)
            }
            // One UDP or ICMP flow can carry a flood, and a source whose slot another took and
            // that came back on its flow's next evaluation has no new flow counted.
            _ => 0,
        };
        Incident {
            behaviour,
            key,
            first: First::of(f),
            raised: None,
            first_ts: ts,
            last_ts: ts,
            // Set by the first `take`.
            start: Micros::MAX,
            end: 0,
            flows: 0,
            pkts: [0; 2],
            bytes: [0; 2],
            score: 0.0,
            sources_vary: false,
            victims_vary: false,
            src_ports_vary: false,
            dst_ports_vary: false,
            targets: Distinct::default(),
            hosts: Distinct::default(),
            ports: Distinct::default(),
            sources: Distinct::default(),
            unanswered: 0,
            sessions: 0,
            logins: 0,
            held: 0,
            lone: 0,
            open: 0,
            resumed: 0,
            resumed_at: 0,
            resumed_pkts: 0,
            duration: 0,
            top: [TopSlot::default(); TOP_SOURCES],
            src_ports: [PortSlot::default(); SRC_PORTS],
            source_min_flows,
            repeated: false,
        }
    }

    /// Takes a flow's evaluation: `before` is what the flow gave so far (`None`: a new flow);
    /// `fresh`: the incident was just made, so the flow is new to it either way.
    fn take(
        &mut self,
        ts: Micros,
        f: &Flow,
        score: f32,
        before: Option<Counted>,
        now: Counted,
        fresh: bool,
    ) {
        let new_flow = before.is_none() || fresh;
        if new_flow {
            if self.flows > 0 && f.start >= self.end.saturating_add(LULL) {
                self.resumed = 1;
                self.resumed_at = f.start;
                self.resumed_pkts = 0;
            } else if self.resumed_with(f) {
                self.resumed = self.resumed.saturating_add(1);
            }
            self.flows += 1;
            let first = &self.first;
            self.sources_vary |= f.initiator != first.initiator;
            self.victims_vary |= f.responder != first.responder;
            self.src_ports_vary |= f.initiator_port != first.initiator_port;
            self.dst_ports_vary |= f.responder_port != first.responder_port;
            self.targets.insert(target_of(f));
            self.hosts.insert(ip_value(f.responder));
            self.ports.insert(u64::from(f.responder_port));
            self.sources.insert(ip_value(f.initiator));
            self.count_src_port(f.initiator_port, target_of(f));
        }
        self.last_ts = self.last_ts.max(ts);
        self.first_ts = self.first_ts.min(ts);
        // A flow counted before (in an incident of this key that has closed since) takes part
        // from its previous evaluation on, so an old flow does not stretch a new episode.
        let since = before.map_or(f.start, |b| f.start.saturating_add(b.duration));
        self.start = self.start.min(since);
        self.end = self.end.max(f.last);
        self.score = self.score.max(score);
        let before = before.unwrap_or(Counted::none(now.key));
        let new_pkts = [0, 1].map(|d| u64::from(now.pkts[d].saturating_sub(before.pkts[d])));
        for (d, new) in new_pkts.iter().enumerate() {
            self.pkts[d] += new;
            self.bytes[d] += now.bytes[d].saturating_sub(before.bytes[d]);
        }
        self.duration += now.duration.saturating_sub(before.duration);
        // Outcomes can change between evaluations (a late answer): what counts is the latest.
        self.unanswered = (self.unanswered + u64::from(now.unanswered))
            .saturating_sub(u64::from(before.unanswered));
        self.sessions =
            (self.sessions + u64::from(now.session)).saturating_sub(u64::from(before.session));
        self.logins =
            (self.logins + u64::from(now.logins)).saturating_sub(u64::from(before.logins));
        self.held = (self.held + u64::from(now.held)).saturating_sub(u64::from(before.held));
        if self.resumed_with(f) {
            self.resumed_pkts += new_pkts[0] + new_pkts[1];
        }
        let start = new_flow.then_some(f.start);
        self.count_source(f.initiator, new_pkts[0] + new_pkts[1], start, f.last);
    }

    /// Whether `f` is one of the flows since the incident resumed.
    fn resumed_with(&self, f: &Flow) -> bool {
        self.resumed > 0 && f.start >= self.resumed_at
    }

    /// What a record has told is no longer news: the flows since a resumption, and the
    /// packets of sources back after a pause.
    fn told(&mut self) {
        self.resumed = 0;
        self.resumed_pkts = 0;
        self.top.iter_mut().for_each(|s| s.back = 0);
    }

    /// Counts a new flow's source port, and the target it went to (Misra-Gries): its slot's
    /// count goes up, or it takes a free slot, or every count goes down by one.
    fn count_src_port(&mut self, port: u16, to: u64) {
        if let Some(slot) = self.src_ports.iter_mut().find(|s| s.holds(port)) {
            slot.count = slot.count.saturating_add(1);
            slot.last_to = to;
        } else if let Some(slot) = self.src_ports.iter_mut().find(|s| s.count == 0) {
            *slot = PortSlot {
                port,
                count: 1,
                last_to: to,
            };
        } else {
            self.src_ports.iter_mut().for_each(|s| s.count -= 1);
        }
    }

    /// Whether new flows came from `port` before, the last of them to another target than `to`:
    /// sure to be found if more than one in `SRC_PORTS + 1` of them did, never if none did.
    /// Flows of one 5-tuple one after another (a SYN sent again and again, each refused) are
    /// no sweep.
    fn swept_from(&self, port: u16, to: u64) -> bool {
        self.port_slot(port).is_some_and(|s| s.last_to != to)
    }

    /// The slot of `port`, if new flows came from it lately.
    fn port_slot(&self, port: u16) -> Option<&PortSlot> {
        self.src_ports.iter().find(|s| s.holds(port))
    }

    /// Space-saving count of the sources' packets (of their flows, both ways), and of their
    /// flows (`start`: where this one started, if it is new to the incident).
    fn count_source(&mut self, ip: IpAddr, packets: u64, start: Option<Micros>, last: Micros) {
        if packets == 0 {
            return;
        }
        let flows = u32::from(start.is_some());
        if let Some(slot) = self.top.iter_mut().find(|s| s.ip == Some(ip)) {
            if start.is_some_and(|at| at >= slot.last.saturating_add(LULL)) {
                slot.back = packets;
            } else if slot.back > 0 {
                slot.back += packets;
            }
            slot.count += packets;
            slot.last = slot.last.max(last);
            slot.flows = slot.flows.saturating_add(flows);
            return;
        }
        // The smallest (or an empty) slot takes it, with that slot's count as its floor.
        if let Some(slot) = self.top.iter_mut().min_by_key(|s| s.count) {
            *slot = TopSlot {
                ip: Some(ip),
                count: slot.count + packets,
                error: slot.count,
                last,
                flows,
                back: 0,
            };
        }
    }

    /// The source of `slot`, if a record names it.
    fn named(&self, slot: &TopSlot) -> Option<IpAddr> {
        slot.named(self.source_min_flows)
    }

    /// Takes the evidence of a series of repeated sessions (which may hold flows counted
    /// already: the larger of each count stands).
    fn absorb(&mut self, s: &Series) {
        self.repeated = true;
        self.start = self.start.min(s.start);
        self.end = self.end.max(s.end);
        self.flows = self.flows.max(s.sessions);
        self.sessions = self.sessions.max(s.sessions);
        for d in 0..2 {
            self.pkts[d] = self.pkts[d].max(s.pkts[d]);
            self.bytes[d] = self.bytes[d].max(s.bytes[d]);
        }
        self.duration = self.duration.max(s.busy);
        self.score = self.score.max(s.score);
    }

    fn window_s(&self) -> f64 {
        self.end.saturating_sub(self.start) as f64 / 1e6
    }

    fn packets(&self) -> u64 {
        self.pkts[0] + self.pkts[1]
    }

    /// Packets per second over the flows' time, at least a second of it.
    fn packets_per_s(&self) -> f64 {
        self.packets() as f64 / self.window_s().max(1.0)
    }

    /// Whether the evidence is enough to raise an alert.
    fn enough(&self, cfg: &AlertConfig) -> bool {
        match self.behaviour {
            Behaviour::Scan => {
                let targets = f64::from(self.targets.estimate());
                let fewest = f64::from(self.hosts.estimate().min(self.ports.estimate()));
                reaches(targets, cfg.scan_min_targets)
                    && targets / self.window_s().max(1.0) >= cfg.scan_min_targets_per_s
                    // A grid of hosts x ports, not one port per host: P2P and discovery
                    // clients reach many peers, each on a port of its own. One host or one
                    // port is a grid; two hosts (or ports) need 8 targets, and 5 hosts on 2
                    // ports (a client trying server after server, refused) are none.
                    && (fewest <= 1.5 || fewest * 4.0 <= targets)
            }
            Behaviour::Bruteforce => {
                self.repeated
                    || (cfg.bruteforce_min_logins > 0 && self.logins >= cfg.bruteforce_min_logins)
                    || (self.sessions >= cfg.bruteforce_min_sessions
                        && self.sessions as f64 * 60.0 / self.window_s().max(1.0)
                            >= cfg.bruteforce_min_sessions_per_min)
            }
            Behaviour::Flood => {
                // One UDP or ICMP 5-tuple can carry a flood; one TCP connection that much
                // traffic is a transfer its receiver accepted.
                let many = self.flows.saturating_sub(self.lone) >= cfg.flood_min_flows
                    || (self.key.proto != PROTO_TCP && self.packets() >= cfg.flood_min_packets)
                    || (self.flows >= cfg.flood_min_flows && self.many_sources(cfg));
                // The rate is of what its victim is sent: a flood sends. A download the victim
                // serves (a client acknowledging every other packet) is no flood of it.
                let sent_per_s = self.pkts[0] as f64 / self.window_s().max(1.0);
                many && sent_per_s >= cfg.flood_min_packets_per_s
            }
            // Holding connections open is a TCP attack (UDP "connections" are datagrams), and a
            // connection is held once established: half-open attempts are a SYN flood's.
            Behaviour::SlowDos => {
                self.key.proto == PROTO_TCP && self.held >= cfg.slowdos_min_connections
            }
            Behaviour::Other => self.flows >= 1,
        }
    }

    /// Whether `ip` is a source it names that sent within [`FLOOD_GOES_ON`] before `at`: an
    /// attack of that source that goes on.
    fn sending(&self, ip: IpAddr, at: Micros) -> bool {
        self.top
            .iter()
            .any(|s| self.named(s) == Some(ip) && at <= s.last.saturating_add(FLOOD_GOES_ON))
    }

    /// Whether `ip` has sent the most of its sources: whose attack it mostly is. A source that
    /// joined another's flood with a few connections the model called flood is no reason to
    /// take its own attack for that flood.
    fn leads(&self, ip: IpAddr) -> bool {
        let most = self.top.iter().map(TopSlot::sure).max().unwrap_or(0);
        self.top
            .iter()
            .any(|s| s.ip == Some(ip) && s.sure() == most)
    }

    /// Whether its flows went to `port`: the port of its first, or any when they vary (a flood
    /// of many ports).
    fn hits_port(&self, port: u16) -> bool {
        self.dst_ports_vary || self.first.responder_port == port
    }

    /// Whether `flood_min_sources` distinct sources took part.
    fn many_sources(&self, cfg: &AlertConfig) -> bool {
        reaches(f64::from(self.sources.estimate()), cfg.flood_min_sources)
    }

    /// Whether this is an alerted flood of lone attempts from many (spoofed) sources.
    fn alerted_from_many_lone_sources(&self, cfg: &AlertConfig) -> bool {
        self.raised.is_some() && self.lone > 0 && self.many_sources(cfg)
    }

    fn evidence(&self) -> Evidence {
        let count = |d: &Distinct<8>| d.estimate().round() as u64;
        let window_s = round3(self.window_s());
        let mut e = Evidence {
            window_s,
            flows: self.flows,
            ..Evidence::default()
        };
        let per_flow = |total: f64| round3(total / self.flows.max(1) as f64);
        match self.behaviour {
            Behaviour::Scan => {
                e.targets = Some(count(&self.targets));
                e.hosts = Some(count(&self.hosts));
                e.ports = Some(count(&self.ports));
                e.unanswered = Some(self.unanswered);
            }
            Behaviour::Bruteforce => {
                e.sessions = Some(self.sessions);
                e.sessions_per_min = Some(round3(
                    self.sessions as f64 * 60.0 / self.window_s().max(1.0),
                ));
                e.logins = Some(self.logins);
            }
            Behaviour::Flood => {
                e.packets_per_s = Some(round3(self.packets_per_s()));
                e.bytes_per_s = Some(round3(
                    (self.bytes[0] + self.bytes[1]) as f64 / self.window_s().max(1.0),
                ));
                e.sources = Some(count(&self.sources));
                e.top_sources = self.top_sources();
            }
            Behaviour::SlowDos => {
                e.connections = Some(self.held);
                e.sources = Some(count(&self.sources));
                e.top_sources = self.top_sources();
                // Per connection: its bytes over its time, on average.
                let duration_s = self.duration as f64 / 1e6;
                e.mean_duration_s = Some(per_flow(duration_s));
                e.mean_bytes_per_s = Some(round3(
                    (self.bytes[0] + self.bytes[1]) as f64 / duration_s.max(1.0),
                ));
            }
            Behaviour::Other => {}
        }
        e
    }

    /// The top sources a record names now.
    fn named_sources(&self) -> [Option<IpAddr>; TOP_SOURCES] {
        let mut named = [None; TOP_SOURCES];
        for (n, s) in named.iter_mut().zip(&self.top) {
            *n = self.named(s);
        }
        named
    }

    /// Whether a top source that the last record did not name, and the next one will, has sent
    /// `packets` for sure: a flood's worth on its own; or one it named has sent that much since
    /// it came back after a pause (its next attack on the same victim).
    fn newcomer(&self, named: &[Option<IpAddr>; TOP_SOURCES], packets: u64) -> bool {
        self.top.iter().any(|s| {
            self.named(s).is_some_and(|ip| {
                let new = !named.contains(&Some(ip)) && s.sure() >= packets;
                new || s.back >= packets
            })
        })
    }

    fn top_sources(&self) -> Vec<TopSource> {
        // Under a spoofed flood no top source is named.
        let mut top: Vec<(IpAddr, u64)> = self
            .top
            .iter()
            .filter_map(|s| Some((self.named(s)?, s.sure())))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.into_iter()
            .map(|(ip, packets)| TopSource {
                ip: ip.to_string(),
                packets,
            })
            .collect()
    }
}

/// Whether a distinct-count estimate reaches a minimum count: within half of it, as the
/// estimates are exact only near small counts.
fn reaches(estimate: f64, min: u64) -> bool {
    estimate >= min as f64 - 0.5
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertCounters {
    pub flows_above_threshold: u64,
    /// Alerts raised (each is one incident; its updates are not counted here).
    pub alerts_emitted: u64,
    /// Updates of raised alerts, the final ones included.
    pub alert_updates: u64,
    /// Records not written because of `max_alerts_per_s`.
    pub alerts_suppressed: u64,
    /// Flow evaluations counted into an incident that had already raised its alert.
    pub flows_aggregated: u64,
    /// Incidents and candidates dropped to stay within `max_incidents`.
    pub incidents_evicted: u64,
    /// Flow evaluations counted into an alerted flood unscored ([`AlertEngine::absorbs`]).
    pub flows_unscored: u64,
}

/// How an alerted flood takes an attempt unscored ([`AlertEngine::absorbs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absorbed {
    /// From one of the sources its alert names: one of its flows.
    Named,
    /// A lone attempt of a flood from many sources.
    Lone,
}

pub struct AlertEngine {
    cfg: AlertConfig,
    sensor_id: String,
    model: ModelRef,
    classes: Vec<String>,
    /// The model's flood class, which lone attempts of many sources count towards.
    flood_class: Option<usize>,
    /// The model's scan class, which probes of other classes count towards too.
    scan_class: Option<usize>,
    /// The model's brute-force class, which repeated sessions count towards too.
    bruteforce_class: Option<usize>,
    /// The model's slow DoS class, whose alert can explain a brute force (`explained`).
    slowdos_class: Option<usize>,
    threshold: f32,
    /// Boxed: the table keeps spare and deleted buckets (up to three quarters of it), which then
    /// cost a pointer each rather than a whole incident.
    incidents: FastMap<Key, Box<Incident>>,
    /// When each incident may have gone quiet: (deadline, key). Stale entries are skipped.
    deadlines: BinaryHeap<Reverse<(Micros, Key)>>,
    /// Flows counted in an incident, with what they gave (removed at their final evaluation).
    counted: FastMap<u64, Counted>,
    /// Flows counted while `counted` was full, by id alone with what they had shown then
    /// ([`shown`]): a flood of more flows than `counted` holds would otherwise have the rest
    /// judged afresh at their idle end, when the flood is over and its refused datagrams look
    /// like a scan's probes. About a sixth of a `counted` entry each, as many at most.
    overflow: FastMap<u64, u32>,
    /// Series of sessions, for brute forces the model does not see (`repeat`).
    repeats: Repeats,
    tokens: f64,
    last_refill: Micros,
    pub counters: AlertCounters,
}

impl AlertEngine {
    pub fn new(
        cfg: &AlertConfig,
        sensor_id: String,
        model: &ModelInfo,
        threshold: f32,
    ) -> AlertEngine {
        let mut engine = AlertEngine {
            cfg: cfg.clone(),
            sensor_id,
            model: ModelRef {
                name: String::new(),
                version: String::new(),
            },
            classes: Vec::new(),
            flood_class: None,
            scan_class: None,
            bruteforce_class: None,
            slowdos_class: None,
            threshold,
            incidents: FastMap::default(),
            deadlines: BinaryHeap::new(),
            counted: FastMap::default(),
            overflow: FastMap::default(),
            repeats: Repeats::new(cfg.max_incidents),
            // A full bucket to start with.
            tokens: cfg.max_alerts_per_s,
            last_refill: 0,
            counters: AlertCounters::default(),
        };
        engine.reconfigure(cfg, model, threshold);
        engine
    }

    /// Takes a model, threshold and settings: at start, and on a reload (after
    /// [`flush`](Self::flush)).
    pub fn reconfigure(&mut self, cfg: &AlertConfig, model: &ModelInfo, threshold: f32) {
        self.model = ModelRef {
            name: model.name.clone(),
            version: model.version.clone(),
        };
        self.classes = model.classes.clone();
        let class_of = |b: Behaviour| model.classes.iter().position(|c| Behaviour::of(c) == b);
        self.flood_class = class_of(Behaviour::Flood);
        self.scan_class = class_of(Behaviour::Scan);
        self.bruteforce_class = class_of(Behaviour::Bruteforce);
        self.slowdos_class = class_of(Behaviour::SlowDos);
        self.threshold = threshold;
        self.cfg = cfg.clone();
        self.tokens = self.tokens.min(cfg.max_alerts_per_s.max(1.0));
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    fn idle(&self) -> Micros {
        micros(self.cfg.incident_idle_s)
    }

    /// Offers one scored evaluation made at `ts`. `victim_sources`: the distinct sources that
    /// started flows to the flow's responder lately (its host context's short window).
    pub fn offer(
        &mut self,
        ts: Micros,
        flow: &Flow,
        reason: EvalReason,
        score: Score,
        victim_sources: f32,
        out: &mut Vec<Alert>,
    ) {
        self.advance(ts, out);
        let min_sessions = self.cfg.bruteforce_repeat_min_sessions;
        let series =
            (reason.is_final() && self.cfg.mode == AlertMode::Incident && min_sessions > 0)
                .then(|| {
                    let idle = self.idle();
                    self.repeats
                        .session(flow, score.anomaly, ts, idle, min_sessions)
                })
                .flatten();
        self.judge(ts, flow, reason, score, victim_sources, out);
        if let Some(series) = series {
            let counted = score.anomaly >= self.threshold && score.class == self.bruteforce_class;
            self.repeated_logins(ts, flow, score.anomaly, series, counted, out);
        }
    }

    /// Whether an evaluation of `flow` at `ts` counts in an alerted flood as one more of its
    /// attempts, whatever the model would score it, so that it needs no score: a TCP connection
    /// attempt that got nowhere ([`is_probe`]) to a victim whose flood is alerted, from one of
    /// the flood's named top sources while it floods ([`Incident::sending`]), or, in a flood of
    /// lone attempts from many sources, a lone attempt from a source with no scan of its own
    /// tracked (as [`AlertEngine::judge`] counts it: one of the flood's packets, its score
    /// beside the point). Under a flood of new flows the model would otherwise score every one
    /// of them, the dearest work of the sensor, to learn what the alert already says. The
    /// engine decides at the evaluation's own turn (the caller advances it to `ts` first), so
    /// what is counted does not depend on how evaluations are batched. Says how the flood takes
    /// it, for [`AlertEngine::offer_absorbed`].
    pub fn absorbs(&self, flow: &Flow) -> Option<Absorbed> {
        if self.cfg.mode != AlertMode::Incident || !is_probe(flow) {
            return None;
        }
        let incident = self
            .incidents
            .get(&Key::of(Behaviour::Flood, self.flood_class?, flow))
            .filter(|i| i.raised.is_some())?;
        // A named source's attempt while the flood goes on: once it has stopped, the source's
        // next attempts are scored again.
        if incident.sending(flow.initiator, flow.start) {
            return Some(Absorbed::Named);
        }
        let scanning = || {
            self.scan_class.is_some_and(|s| {
                self.incidents
                    .contains_key(&Key::of(Behaviour::Scan, s, flow))
            })
        };
        (lone_attempt(flow) && incident.alerted_from_many_lone_sources(&self.cfg) && !scanning())
            .then_some(Absorbed::Lone)
    }

    /// Counts an evaluation made at `ts` that [`AlertEngine::absorbs`] takes in its victim's
    /// flood (`how`: what it answered), as [`AlertEngine::judge`] would with the flood's class:
    /// a named source's attempt as one of the flood's flows, a lone attempt of many sources at
    /// its first evaluation only (not remembered: a spoofed flood's flows would fill the table
    /// of counted flows). The engine has been advanced to `ts` ([`AlertEngine::advance`])
    /// before asking.
    pub fn offer_absorbed(
        &mut self,
        ts: Micros,
        flow: &Flow,
        reason: EvalReason,
        how: Absorbed,
        out: &mut Vec<Alert>,
    ) {
        let Some(flood) = self.flood_class else {
            return;
        };
        self.counters.flows_unscored += 1;
        if self.overflowed_unchanged(reason, flow) {
            return;
        }
        let before = self.counted_before(reason, flow);
        let key = Key::of(Behaviour::Flood, flood, flow);
        match how {
            Absorbed::Named => {
                self.count_flagged(Behaviour::Flood, key, ts, flow, 0.0, before, reason, out)
            }
            Absorbed::Lone if flow.evals <= 1 => {
                self.count(key, ts, flow, 0.0, Counting::LoneAttempt, out);
            }
            Absorbed::Lone => {}
        }
    }

    /// Counts an evaluation that brings news of its flow but no score (a connection held,
    /// [`EvalReason::Held`]) in the slow DoS the flow counted in before, with what it shows
    /// now: the flow keeps the verdict it had. A slow DoS's connections over a long path are
    /// flagged at their probe evaluation, a SYN not answered yet, and count as held from here
    /// on, not from their next evaluation seconds later. A connection a TCP flood counted at
    /// its SYN counts in the slow DoS of its service instead: a flood's connections are left
    /// half-open (a SYN flood) or answered (an HTTP flood), and the class head calls a slow
    /// DoS's SYNs a flood as often as not. Only a slow DoS counts held connections; a flow
    /// counted elsewhere, or nowhere, waits for its next evaluation. The engine has been
    /// advanced to `ts` before.
    pub fn offer_standing(
        &mut self,
        ts: Micros,
        flow: &Flow,
        reason: EvalReason,
        out: &mut Vec<Alert>,
    ) {
        if self.cfg.mode != AlertMode::Incident {
            return;
        }
        let Some(before) = self.counted.get(&flow.uid).copied() else {
            return;
        };
        let key = match Behaviour::of(self.class_name(before.key.class)) {
            Behaviour::SlowDos => before.key,
            Behaviour::Flood if flow.key.proto == PROTO_TCP => match self.slowdos_class {
                Some(slowdos) => Key::of(Behaviour::SlowDos, slowdos, flow),
                None => return,
            },
            _ => return,
        };
        let counting = Counting::Evaluation {
            before: Some(before),
        };
        self.count(key, ts, flow, 0.0, counting, out);
        let now = Counted {
            probe: before.probe,
            ..Counted::of(key, flow)
        };
        self.remember(reason, flow, now);
    }

    /// What the flow gave its incident at its evaluation before this one, if any; at its last
    /// evaluation the record goes (and the incident no longer waits for the flow).
    fn counted_before(&mut self, reason: EvalReason, flow: &Flow) -> Option<Counted> {
        if !reason.is_final() {
            return self.counted.get(&flow.uid).copied();
        }
        let before = self.counted.remove(&flow.uid);
        if let Some(b) = before {
            self.set_open(b.key, false);
        }
        before
    }

    /// Counts one evaluation in the incidents it is evidence of.
    fn judge(
        &mut self,
        ts: Micros,
        flow: &Flow,
        reason: EvalReason,
        score: Score,
        victim_sources: f32,
        out: &mut Vec<Alert>,
    ) {
        if self.overflowed_unchanged(reason, flow) {
            return;
        }
        let before = self.counted_before(reason, flow);
        // A flow that has shown nothing since the evaluation that counted it keeps that
        // verdict: judged again (at its idle end, usually) it is judged by its endpoints' context
        // of now, and a lone datagram of a flood that has ended would be a probe of the scan its
        // source runs next. Such an evaluation counts in no incident the flow was not counted in.
        let scan_of_source = self.scan_class.map(|s| Key::of(Behaviour::Scan, s, flow));
        let settled_elsewhere = |key: Key| {
            before.is_some_and(|b| b.unchanged(flow) && b.share(key, scan_of_source).is_none())
        };
        let to_flooded = lone_attempt(flow)
            && unicast(flow.responder)
            && reaches(f64::from(victim_sources), self.cfg.flood_min_sources);
        if score.anomaly < self.threshold {
            if self.cfg.mode != AlertMode::Incident {
                return;
            }
            if let Some(key) = self.answered_flood(flow, before) {
                let behaviour = Behaviour::Flood;
                self.count_flagged(behaviour, key, ts, flow, score.anomaly, before, reason, out);
            } else if to_flooded {
                // A lone attempt to a victim that many sources reach counts towards its flood
                // whatever the model scores it: one SYN from a random address is nothing to
                // score, a flood of them is (the flood's minimums decide). A multicast or
                // broadcast group is no victim: many devices announce themselves there.
                self.count_lone_attempt(ts, flow, score.anomaly, out);
            } else if (reason.is_final() || flow.icmp_from_peer)
                && refused_or_unanswered(flow)
                && let Some(scan) = self.scan_class
            {
                // A connection attempt its target refused, or that nothing answered to its end,
                // is evidence of its source's scan whatever the model scores it: the scan's
                // minimums (distinct targets, as a grid) decide. Silence is judged at the flow's
                // end only, so that an answer slow to come over a long link is not taken for
                // it; a refusal is final when it comes (a UDP flow ends only when it has been
                // idle for `flow.udp_timeout_s`).
                let key = Key::of(Behaviour::Scan, scan, flow);
                if settled_elsewhere(key) {
                    return;
                }
                let behaviour = Behaviour::Scan;
                self.count_flagged(behaviour, key, ts, flow, score.anomaly, before, reason, out);
            }
            return;
        }
        self.counters.flows_above_threshold += 1;
        let class = score.class.unwrap_or(usize::MAX);
        let class_name = self.class_name(class);
        let behaviour = Behaviour::of(class_name);
        let key = Key::of(behaviour, class, flow);
        if self.cfg.mode == AlertMode::Flow {
            let mut one = Incident::new(behaviour, key, ts, flow, &self.cfg);
            one.take(ts, flow, score.anomaly, None, Counted::of(key, flow), true);
            let id = alert_id(&self.sensor_id, &key, flow.uid, ts);
            one.raised = Some(Raised {
                alert_id: id,
                update: 0,
                at: ts,
                flows: 1,
                packets: one.packets(),
                named: one.named_sources(),
            });
            if self.take_token(ts) {
                self.counters.alerts_emitted += 1;
                out.push(self.record(&one, ts, true));
            }
            return;
        }
        // A probe the class head calls flood, sent from a source port its source's scan sent
        // probes from before, to another target, is one of that scan's probes only
        // (`swept_from_its_port`).
        let (behaviour, key) = match self.swept_from_its_port(behaviour, flow, before) {
            Some(scan) => (Behaviour::Scan, scan),
            None => (behaviour, key),
        };
        if settled_elsewhere(key) {
            return;
        }
        if behaviour == Behaviour::Scan
            && to_flooded
            && let Some(victim) = self.count_lone_attempt(ts, flow, score.anomaly, out)
        {
            let spoofed = self
                .incidents
                .get(&victim)
                .is_some_and(|i| i.alerted_from_many_lone_sources(&self.cfg));
            if spoofed && !self.incidents.contains_key(&key) {
                return;
            }
        }
        self.count_flagged(behaviour, key, ts, flow, score.anomaly, before, reason, out);
    }

    /// The scan `flow` is a probe of, when the class head calls it a flood (`behaviour`) but
    /// its source's scan sent probes from its source port before, the last of them to another
    /// target (host and port): a sweep from one source port. A scanner crafts its probes from
    /// one port (nmap's SYN scans, retries from another), a flood tool sends each SYN from a
    /// port of its own (a half-open connection each, to fill its victim's backlog), as the
    /// kernel does for each `connect`. A fast SYN scan is no flood, however many probes a second
    /// it sends: its probes count in its scan, not in their victim's flood as well. A probe
    /// counted in the scan before (`before`) stays there while its port is one the scan's
    /// flows come from (it may be the last flow from it).
    fn swept_from_its_port(
        &self,
        behaviour: Behaviour,
        flow: &Flow,
        before: Option<Counted>,
    ) -> Option<Key> {
        if behaviour != Behaviour::Flood || !is_probe(flow) {
            return None;
        }
        let scan = Key::of(Behaviour::Scan, self.scan_class?, flow);
        let incident = self.incidents.get(&scan)?;
        let port = flow.initiator_port;
        let swept = incident.swept_from(port, target_of(flow));
        let stays = before.is_some_and(|b| b.key == scan) && incident.port_slot(port).is_some();
        (swept || stays).then_some(scan)
    }

    /// The TCP flood of its victim that `flow`, scored below the threshold, counts in: a
    /// connection flagged a flood or a slow DoS at its probe evaluation, a SYN not answered yet
    /// (one of a burst from its source, over a path longer than `probe_eval_s`), that its
    /// server has since answered. Such a connection is judged by what it turned out to be: held,
    /// no request answered, it is a slow DoS's ([`AlertEngine::offer_standing`]); served, it is
    /// one of a flood of requests (an HTTP flood's, kept alive or not), though scored alone it
    /// is an ordinary client's (over a long path, a request every round trip or a download). The
    /// flood's minimums (connections, packets sent a second) decide.
    fn answered_flood(&self, flow: &Flow, before: Option<Counted>) -> Option<Key> {
        let b = before?;
        let flagged_at_syn = !b.held
            && matches!(
                Behaviour::of(self.class_name(b.key.class)),
                Behaviour::Flood | Behaviour::SlowDos
            );
        (flagged_at_syn
            && flow.key.proto == PROTO_TCP
            && flow.established
            && flow.exchanges.answered())
        .then_some(Key::of(Behaviour::Flood, self.flood_class?, flow))
    }

    /// Counts an evaluation (scored `score`) as evidence of `behaviour`, flagged so or taken
    /// whatever its score, in the incident of `key`, and, if it is a probe of another
    /// behaviour, in its source's scan too; remembers what it gave.
    #[allow(clippy::too_many_arguments)]
    fn count_flagged(
        &mut self,
        behaviour: Behaviour,
        key: Key,
        ts: Micros,
        flow: &Flow,
        score: f32,
        before: Option<Counted>,
        reason: EvalReason,
        out: &mut Vec<Alert>,
    ) {
        let counting = Counting::Evaluation { before };
        self.count(key, ts, flow, score, counting, out);
        let mut now = Counted::of(key, flow);
        // A flagged connection attempt that got nowhere is a probe whatever the class head calls
        // it (it confuses scan and flood on such flows): it is also evidence of its source's
        // scan, and the scan's minimums (distinct targets, as a grid) decide whether it is one.
        // A flood of one target stays one target.
        if let Some(scan) = self.probe_scan(behaviour, flow) {
            self.count(scan, ts, flow, score, counting, out);
            now.probe = true;
        }
        self.remember(reason, flow, now);
    }

    /// Remembers what a flow gave its incident (`now`) until its last evaluation, which is then
    /// not counted again; the incident stays open meanwhile. A flow already remembered is
    /// remembered anew however full the table is; a new one that finds it full is remembered in
    /// `overflow`, by what it has shown only (and keeps no incident open).
    fn remember(&mut self, reason: EvalReason, flow: &Flow, now: Counted) {
        if reason.is_final() {
            return;
        }
        let bound = self.cfg.max_incidents.saturating_mul(4);
        if self.counted.len() < bound || self.counted.contains_key(&flow.uid) {
            let was = self.counted.insert(flow.uid, now).map(|c| c.key);
            if was != Some(now.key) {
                if let Some(was) = was {
                    self.set_open(was, false);
                }
                self.set_open(now.key, true);
            }
        } else if self.overflow.len() < bound || self.overflow.contains_key(&flow.uid) {
            self.overflow.insert(flow.uid, shown(flow));
        }
    }

    /// Whether this last evaluation of `flow` is of a flow counted while the table of counted
    /// flows was full (`overflow`) that has shown nothing since: it then counts nowhere, as a
    /// flow remembered in full would count only where it counted, adding nothing. Forgets the
    /// flow at its last evaluation.
    fn overflowed_unchanged(&mut self, reason: EvalReason, flow: &Flow) -> bool {
        if !reason.is_final() || self.overflow.is_empty() {
            return false;
        }
        let was = self.overflow.remove(&flow.uid);
        was == Some(shown(flow)) && !self.counted.contains_key(&flow.uid)
    }

    /// A session of a series of repeated sessions that is a brute force: the brute force of its
    /// source at its service takes the series' evidence (and the flow, unless the model's brute
    /// force counted it already: `counted`).
    fn repeated_logins(
        &mut self,
        ts: Micros,
        flow: &Flow,
        score: f32,
        series: Series,
        counted: bool,
        out: &mut Vec<Alert>,
    ) {
        let Some(class) = self.bruteforce_class else {
            return;
        };
        let key = Key::of(Behaviour::Bruteforce, class, flow);
        self.open_incident(Behaviour::Bruteforce, key, ts, flow, out);
        let Some(incident) = self.incidents.get_mut(&key) else {
            return;
        };
        if !counted {
            incident.take(ts, flow, score, None, Counted::of(key, flow), true);
        }
        incident.absorb(&series);
        self.progress(key, ts, out);
    }

    /// Counts a lone attempt towards its victim's flood, at its first evaluation only (the table
    /// counts it before it hands it on: a lone attempt has little to add later); returns the
    /// victim's flood key (None: the model has no flood class).
    fn count_lone_attempt(
        &mut self,
        ts: Micros,
        flow: &Flow,
        score: f32,
        out: &mut Vec<Alert>,
    ) -> Option<Key> {
        let victim = Key::of(Behaviour::Flood, self.flood_class?, flow);
        if flow.evals <= 1 {
            self.count(victim, ts, flow, score, Counting::LoneAttempt, out);
        }
        Some(victim)
    }

    /// Counts a flow of the incident of `key` as open (its last evaluation to come) or no longer.
    fn set_open(&mut self, key: Key, open: bool) {
        if let Some(i) = self.incidents.get_mut(&key) {
            i.open = if open {
                i.open.saturating_add(1)
            } else {
                i.open.saturating_sub(1)
            };
        }
    }

    /// The scan of `flow`'s source, if the flow counts there as a probe besides the incident of
    /// its class (`behaviour`).
    fn probe_scan(&self, behaviour: Behaviour, flow: &Flow) -> Option<Key> {
        if behaviour == Behaviour::Scan || !is_probe(flow) {
            return None;
        }
        let scan = Key::of(Behaviour::Scan, self.scan_class?, flow);
        // As for the lone attempts the model calls probes (those of another class count in a
        // flood as its flows, not as lone attempts): one to a victim whose flood is alerted
        // from `flood_min_sources` sources is one of its packets (from a spoofed source), and
        // makes no scan candidate (a scanner already tracked keeps its candidate).
        let spoofed = lone_attempt(flow)
            && self.flood_class.is_some_and(|flood| {
                let victim = Key::of(Behaviour::Flood, flood, flow);
                self.incidents
                    .get(&victim)
                    .is_some_and(|i| i.raised.is_some() && i.many_sources(&self.cfg))
            });
        (!spoofed || self.incidents.contains_key(&scan)).then_some(scan)
    }

    /// Counts a flow's evaluation in the incident of `key`, making it if needed, and raises or
    /// updates its alert. The caller remembers what the flow gave (`counted`).
    fn count(
        &mut self,
        key: Key,
        ts: Micros,
        flow: &Flow,
        score: f32,
        counting: Counting,
        out: &mut Vec<Alert>,
    ) {
        let behaviour = Behaviour::of(self.class_name(key.class));
        let before = match counting {
            Counting::Evaluation { before } => before,
            Counting::LoneAttempt => None,
        };
        // A flow counts once per incident: a later evaluation adds what it sent since.
        let scan = self.scan_class.map(|s| Key::of(Behaviour::Scan, s, flow));
        let before = before.and_then(|c| c.share(key, scan));
        let now = Counted::of(key, flow);
        // A new incident of a key seen before (the last one went quiet and closed): the flow
        // is one of its flows, with what it sent since its last evaluation.
        let fresh = self.open_incident(behaviour, key, ts, flow, out);
        let Some(incident) = self.incidents.get_mut(&key) else {
            return;
        };
        incident.take(ts, flow, score, before, now, fresh);
        if counting == Counting::LoneAttempt {
            incident.lone += 1;
        }
        self.progress(key, ts, out);
    }

    /// Makes the incident of `key` if there is none; returns whether it is new. A candidate
    /// counting evaluations for longer than [`AlertEngine::candidate_life`] without enough
    /// evidence starts over, new, at this one: its minimums are rates over its time, and a
    /// trickle of odd flows would otherwise dilute the burst that follows it (a source's lone
    /// probes, then a scan of 16 ports in a second).
    fn open_incident(
        &mut self,
        behaviour: Behaviour,
        key: Key,
        ts: Micros,
        flow: &Flow,
        out: &mut Vec<Alert>,
    ) -> bool {
        let life = self.candidate_life(behaviour);
        if let Some(incident) = self.incidents.get_mut(&key) {
            if incident.raised.is_some() || ts.saturating_sub(incident.first_ts) <= life {
                return false;
            }
            let open = incident.open;
            **incident = Incident::new(behaviour, key, ts, flow, &self.cfg);
            incident.open = open;
            return true;
        }
        self.make_room(ts, out);
        self.incidents.insert(
            key,
            Box::new(Incident::new(behaviour, key, ts, flow, &self.cfg)),
        );
        self.deadlines.push(Reverse((ts + self.idle(), key)));
        true
    }

    /// How long a candidate of `behaviour` gathers evidence before it starts over: twice the
    /// time its minimums take at their minimum rate (a scan's 5 targets at 1 a second: 10 s),
    /// at most `incident_idle_s` (a slow DoS's connections have no rate).
    fn candidate_life(&self, behaviour: Behaviour) -> Micros {
        let cfg = &self.cfg;
        let at_least_s = match behaviour {
            Behaviour::Scan => cfg.scan_min_targets as f64 / cfg.scan_min_targets_per_s,
            Behaviour::Bruteforce => {
                cfg.bruteforce_min_sessions as f64 * 60.0 / cfg.bruteforce_min_sessions_per_min
            }
            Behaviour::Flood => cfg.flood_min_packets as f64 / cfg.flood_min_packets_per_s,
            Behaviour::SlowDos | Behaviour::Other => f64::INFINITY,
        };
        micros((2.0 * at_least_s.max(1.0)).min(cfg.incident_idle_s))
    }

    /// Raises the alert of the incident of `key` once its evidence is enough, or updates it.
    fn progress(&mut self, key: Key, ts: Micros, out: &mut Vec<Alert>) {
        let Some(incident) = self.incidents.get(&key) else {
            return;
        };
        match &incident.raised {
            None if incident.enough(&self.cfg) && !self.explained(incident) => {
                self.raise(key, ts, out)
            }
            None => {}
            Some(r) => {
                self.counters.flows_aggregated += 1;
                let due = ts >= r.at + micros(self.cfg.update_interval_s);
                let grew = incident.flows > r.flows || incident.packets() > r.packets;
                // A new source that sends a flood's worth on its own, or a slow DoS's (its
                // minimum of connections, a handshake's 3 packets each at the fewest), is news
                // (a second attacker): told a second after the last record at the soonest, not
                // at the next interval. Spoofed sources each send too little to be one.
                let worth = match incident.behaviour {
                    Behaviour::Flood => Some(self.cfg.flood_min_packets),
                    Behaviour::SlowDos => Some(self.cfg.slowdos_min_connections.saturating_mul(3)),
                    _ => None,
                };
                // So is the attack resumed after a lull with its minimum's worth of new flows
                // (the same source's next scan, or its flood after its scan, of the same victim),
                // or, for a UDP or ICMP flood, of packets (one flow can carry it): one
                // incident, but what it does now is told at once.
                let minimum = match incident.behaviour {
                    Behaviour::Scan => self.cfg.scan_min_targets,
                    Behaviour::Bruteforce => self.cfg.bruteforce_min_sessions,
                    Behaviour::Flood => self.cfg.flood_min_flows,
                    Behaviour::SlowDos => self.cfg.slowdos_min_connections,
                    Behaviour::Other => u64::MAX,
                };
                let resumed_in_packets = incident.behaviour == Behaviour::Flood
                    && key.proto != PROTO_TCP
                    && incident.resumed > 0
                    && incident.resumed_pkts >= self.cfg.flood_min_packets;
                let joined = ts >= r.at + 1_000_000
                    && (worth.is_some_and(|packets| incident.newcomer(&r.named, packets))
                        || u64::from(incident.resumed) >= minimum
                        || resumed_in_packets);
                if (due && grew) || joined {
                    self.update(key, ts, false, out);
                }
            }
        }
    }

    /// Whether a brute force or slow DoS candidate is the connections of another alerted attack
    /// on its service seen otherwise: a TCP flood of its victim (for either), or a slow DoS of
    /// its service (for a brute force), whose alert is out, hits its port, and names the
    /// candidate's source as its leading one ([`Incident::leads`]), still sending at the
    /// candidate's last packet ([`Incident::sending`]), and has established `flood_min_flows`
    /// connections: a flood of SYNs (a port sweep the class head calls flood, its source's
    /// slow DoS SYNs counted in it at their probe evaluation) holds none open, and explaining
    /// the slow DoS by it would keep it untold while it lasts. An HTTP flood that keeps its
    /// connections alive repeats one request on each, and so does a slow read of one page: a
    /// password guesser's session to the logins count; over a long path a flood's connections
    /// look held and slow. That is one attack, alerted once. The candidate stays one: if its
    /// source goes on after the other attack has stopped, its alert is raised then.
    fn explained(&self, candidate: &Incident) -> bool {
        let key = candidate.key;
        if key.proto != PROTO_TCP {
            return false;
        }
        // The incidents of the victim's TCP floods and of its service's slow DoS.
        let of_victim = |class: Option<usize>, port| {
            class.map(|class| Key {
                class,
                attacker: None,
                victim: key.victim,
                port,
                proto: PROTO_TCP,
            })
        };
        let flood = of_victim(self.flood_class, 0);
        let explaining = match candidate.behaviour {
            Behaviour::Bruteforce => [flood, of_victim(self.slowdos_class, key.port)],
            Behaviour::SlowDos => [flood, None],
            _ => return false,
        };
        explaining
            .into_iter()
            .flatten()
            .filter_map(|k| self.incidents.get(&k))
            .any(|other| {
                let sending = |ip: IpAddr| other.sending(ip, candidate.end) && other.leads(ip);
                let sources_sending = match key.attacker {
                    Some(attacker) => sending(attacker),
                    // Every source is in a slot (no more than the slots), and each one leads:
                    // one source.
                    None => {
                        candidate.sources.estimate() <= TOP_SOURCES as f32
                            && candidate.top.iter().filter_map(|s| s.ip).all(sending)
                    }
                };
                other.raised.is_some()
                    && sources_sending
                    && other.hits_port(key.port)
                    && other.held >= self.cfg.flood_min_flows
            })
    }

    /// Closes the incidents quiet for `incident_idle_s` at `now`, with a final update for those
    /// that raised an alert.
    pub fn advance(&mut self, now: Micros, out: &mut Vec<Alert>) {
        while let Some((quiet_at, key)) = self.quietest() {
            if quiet_at > now {
                break;
            }
            self.deadlines.pop();
            if self.incidents.get(&key).is_some_and(|i| i.open > 0) {
                // Not quiet while a flow of it is open: looked at again an idle time later.
                let again = quiet_at.saturating_add(self.idle());
                self.deadlines.push(Reverse((again, key)));
                continue;
            }
            self.close(key, quiet_at, out);
        }
    }

    /// The incident quiet for longest, and when it goes (or went) quiet: the top of `deadlines`
    /// once it is up to date. Deadlines are refreshed lazily: an entry whose incident has been
    /// active since goes back with the real one, and one whose incident is gone is dropped.
    fn quietest(&mut self) -> Option<(Micros, Key)> {
        let idle = self.idle();
        while let Some(&Reverse((deadline, key))) = self.deadlines.peek() {
            let Some(incident) = self.incidents.get(&key) else {
                self.deadlines.pop();
                continue;
            };
            let quiet_at = incident.last_ts.saturating_add(idle);
            if quiet_at > deadline {
                self.deadlines.pop();
                self.deadlines.push(Reverse((quiet_at, key)));
                continue;
            }
            return Some((deadline, key));
        }
        None
    }

    /// Ends every incident (end of input or shutdown), with a final update for each alert.
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        let mut keys: Vec<(Micros, Key)> = self
            .incidents
            .iter()
            .map(|(k, i)| (i.last_ts, *k))
            .collect();
        keys.sort();
        for (last_ts, key) in keys {
            self.close(key, last_ts, out);
        }
        self.deadlines.clear();
        self.counted.clear();
        self.overflow.clear();
        self.repeats.clear();
    }

    fn close(&mut self, key: Key, at: Micros, out: &mut Vec<Alert>) {
        if self.incidents.get(&key).is_some_and(|i| i.raised.is_some()) {
            self.update(key, at, true, out);
        }
        self.incidents.remove(&key);
    }

    /// Keeps the incidents within `max_incidents`: the one quiet for longest goes.
    fn make_room(&mut self, now: Micros, out: &mut Vec<Alert>) {
        while self.incidents.len() >= self.cfg.max_incidents.max(1) {
            let Some((_, key)) = self.quietest() else {
                return;
            };
            self.deadlines.pop();
            let at = self.incidents.get(&key).map_or(now, |i| i.last_ts.min(now));
            self.counters.incidents_evicted += 1;
            self.close(key, at, out);
        }
    }

    fn raise(&mut self, key: Key, ts: Micros, out: &mut Vec<Alert>) {
        if !self.take_token(ts) {
            // Stays a candidate: it raises its alert at its next flow if a token is there.
            return;
        }
        let Some(incident) = self.incidents.get_mut(&key) else {
            return;
        };
        incident.told();
        incident.raised = Some(Raised {
            alert_id: alert_id(&self.sensor_id, &key, incident.first.uid, incident.first_ts),
            update: 0,
            at: ts,
            flows: incident.flows,
            packets: incident.packets(),
            named: incident.named_sources(),
        });
        self.counters.alerts_emitted += 1;
        let record = self.record(&self.incidents[&key], ts, false);
        out.push(record);
    }

    fn update(&mut self, key: Key, ts: Micros, last: bool, out: &mut Vec<Alert>) {
        // A final update always goes out (it closes the alert for its receivers); the ones
        // before it only within the rate limit.
        if !last && !self.take_token(ts) {
            return;
        }
        let Some(incident) = self.incidents.get_mut(&key) else {
            return;
        };
        let (flows, packets, named) =
            (incident.flows, incident.packets(), incident.named_sources());
        incident.told();
        let Some(r) = &mut incident.raised else {
            return;
        };
        r.update += 1;
        r.at = ts;
        r.flows = flows;
        r.packets = packets;
        r.named = named;
        self.counters.alert_updates += 1;
        let record = self.record(&self.incidents[&key], ts, last);
        out.push(record);
    }

    /// Token bucket on packet time.
    fn take_token(&mut self, now: Micros) -> bool {
        let rate = self.cfg.max_alerts_per_s;
        if now > self.last_refill {
            let elapsed = (now - self.last_refill) as f64 / 1e6;
            self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
            self.last_refill = now;
        }
        if self.tokens < 1.0 {
            self.counters.alerts_suppressed += 1;
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    fn class_name(&self, class: usize) -> &str {
        self.classes.get(class).map_or("anomaly", String::as_str)
    }

    fn record(&self, i: &Incident, ts: Micros, last: bool) -> Alert {
        let f = &i.first;
        let class_name = self.class_name(i.key.class);
        let (category, severity, signature, signature_id) = signature_of(class_name);
        let has_ports = matches!(i.key.proto, PROTO_TCP | PROTO_UDP);
        let attacker = i.key.attacker.or((!i.sources_vary).then_some(f.initiator));
        let victim = i.key.victim.or((!i.victims_vary).then_some(f.responder));
        let src_port = (has_ports && !i.src_ports_vary).then_some(f.initiator_port);
        let dest_port =
            (has_ports && (i.key.port != 0 || !i.dst_ports_vary)).then_some(f.responder_port);
        let raised = i.raised.as_ref();
        let mut vlan: Vec<u16> = f.vlan.iter().copied().filter(|&v| v != 0).collect();
        vlan.truncate(2);
        Alert {
            timestamp: eve_time(ts),
            event_type: "alert".to_string(),
            host: self.sensor_id.clone(),
            flow_id: f.uid & ((1 << 53) - 1),
            community_id: (i.flows == 1).then(|| f.community_id()).flatten(),
            src_ip: attacker.map(|ip| ip.to_string()),
            src_port,
            dest_ip: victim.map(|ip| ip.to_string()),
            dest_port,
            proto: proto_name(i.key.proto).to_string(),
            vlan,
            alert: AlertInfo {
                action: "allowed".to_string(),
                gid: 1,
                signature_id,
                rev: 1,
                signature: signature.to_string(),
                category: category.to_string(),
                severity,
                source: attacker.map(|ip| Endpoint {
                    ip: ip.to_string(),
                    port: None,
                }),
                target: victim.map(|ip| Endpoint {
                    ip: ip.to_string(),
                    port: dest_port,
                }),
                context: Context {
                    edgewatch: Detail {
                        sensor_id: self.sensor_id.clone(),
                        alert_id: raised.map_or_else(String::new, |r| r.alert_id.clone()),
                        update: raised.map_or(0, |r| r.update),
                        last,
                        class: class_name.to_string(),
                        score: (i.score * 10_000.0).round() / 10_000.0,
                        model: self.model.clone(),
                        count: i.flows,
                        first_seen: eve_time(i.first_ts),
                        last_seen: eve_time(i.last_ts),
                        evidence: i.evidence(),
                    },
                },
            },
            flow: FlowInfo {
                pkts_toserver: i.pkts[0],
                pkts_toclient: i.pkts[1],
                bytes_toserver: i.bytes[0],
                bytes_toclient: i.bytes[1],
                start: eve_time(i.start),
                end: eve_time(i.end),
            },
        }
    }
}

/// Unique and stable: the sensor, the incident's key, its first flow and when it began.
fn alert_id(sensor: &str, key: &Key, first_uid: u64, first_ts: Micros) -> String {
    let mut input = Vec::with_capacity(96);
    input.extend_from_slice(sensor.as_bytes());
    input.push(0);
    input.extend_from_slice(&(key.class as u64).to_le_bytes());
    for ip in [key.attacker, key.victim] {
        match ip {
            Some(ip) => input.extend_from_slice(ip.to_string().as_bytes()),
            None => input.push(b'*'),
        }
        input.push(0);
    }
    input.extend_from_slice(&key.port.to_le_bytes());
    input.push(key.proto);
    input.extend_from_slice(&first_uid.to_le_bytes());
    input.extend_from_slice(&first_ts.to_le_bytes());
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&input))
}

fn micros(s: f64) -> Micros {
    (s * 1e6) as Micros
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlertConfig;
    use crate::flow::{DirStats, Exchanges};
    use crate::model::ModelInfo;
    use crate::packet::{PROTO_ICMP, PROTO_UDP};
    use std::collections::{HashMap, HashSet};
    use std::net::Ipv4Addr;

    const BENIGN: usize = 0;
    const SCAN: usize = 1;
    const BRUTE: usize = 2;
    const FLOOD: usize = 3;
    const SLOW: usize = 4;

    fn engine(cfg: &AlertConfig) -> AlertEngine {
        let model = ModelInfo {
            origin: "test".into(),
            name: "m".into(),
            version: "1".into(),
            schema: "s".into(),
            classes: ["benign", "scan", "bruteforce", "flood", "slowdos"]
                .map(String::from)
                .to_vec(),
            threshold: 0.5,
        };
        AlertEngine::new(cfg, "t".into(), &model, 0.5)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    /// A flow from `src` to `dst:dport` over [start, start + len] (µs): a probe left
    /// unanswered, or (`session`) a TCP connection that exchanged data both ways.
    fn flow(proto: u8, src: u8, dst: u8, dport: u16, start: Micros, session: bool) -> Flow {
        let (a, b) = (ip(src), ip(dst));
        let dir = |pkts: u32, payload: u64| DirStats {
            pkts,
            bytes: 60 * u64::from(pkts) + payload,
            payload_bytes: payload,
            ..DirStats::default()
        };
        let uid = u64::from(src) << 40 | u64::from(dst) << 32 | u64::from(dport) << 16 | start;
        Flow {
            last: start + 100_000,
            fwd: dir(if session { 8 } else { 1 }, if session { 300 } else { 0 }),
            bwd: dir(if session { 6 } else { 0 }, if session { 200 } else { 0 }),
            syn_seen: proto == PROTO_TCP,
            synack_seen: session,
            established: session,
            closed: session,
            ..Flow::for_test(proto, (a, 40000), (b, dport), start, uid)
        }
    }

    /// Offers each flow once at its end, scored as `class`, with the distinct sources of its
    /// responder so far as its host context; then ends every incident.
    fn run(cfg: &AlertConfig, class: usize, flows: &[Flow]) -> Vec<Alert> {
        run_scored(cfg, class, 0.99, flows)
    }

    /// `run` with the anomaly score `anomaly` for every flow.
    fn run_scored(cfg: &AlertConfig, class: usize, anomaly: f32, flows: &[Flow]) -> Vec<Alert> {
        let mut e = engine(cfg);
        let mut out = Vec::new();
        let mut seen: HashMap<IpAddr, HashSet<IpAddr>> = HashMap::new();
        for f in flows {
            let score = Score {
                anomaly,
                class: Some(class),
            };
            let sources = seen.entry(f.responder).or_default();
            sources.insert(f.initiator);
            e.offer(
                f.last,
                f,
                EvalReason::Idle,
                score,
                sources.len() as f32,
                &mut out,
            );
        }
        e.flush(&mut out);
        out
    }

    fn detail(a: &Alert) -> &Detail {
        &a.alert.context.edgewatch
    }

    /// The alerts' (class, source, victim, count of the last record).
    fn incidents(out: &[Alert]) -> Vec<(String, Option<String>, Option<String>, u64)> {
        let mut seen: Vec<_> = out
            .iter()
            .filter(|a| detail(a).last)
            .map(|a| {
                let d = detail(a);
                (
                    d.class.clone(),
                    a.src_ip.clone(),
                    a.dest_ip.clone(),
                    d.count,
                )
            })
            .collect();
        seen.sort();
        seen
    }

    #[test]
    fn lone_syns_from_many_sources_are_a_flood_of_their_victim() {
        // 200 sources, one SYN each, 5 ms apart, to one web server: what a spoofed SYN flood
        // looks like, each flow scored as a probe.
        let flows: Vec<Flow> = (0..200u64)
            .map(|i| flow(PROTO_TCP, 20 + i as u8, 1, 80, i * 5_000, false))
            .collect();
        let out = run(&AlertConfig::default(), SCAN, &flows);
        // The first 15, before the victim had 16 sources, stay their sources' candidates.
        assert_eq!(
            incidents(&out),
            [("flood".to_string(), None, Some(ip(1).to_string()), 185)]
        );
        let raised = &out[0];
        assert_eq!(detail(raised).update, 0);
        assert_eq!(raised.dest_port, Some(80));
        let evidence = &detail(raised).evidence;
        assert!(evidence.sources.unwrap() >= 16, "{evidence:?}");
        // One SYN per source: none of them is named as a top source.
        assert!(evidence.top_sources.is_empty(), "{evidence:?}");
    }

    #[test]
    fn lone_attempts_from_many_sources_flood_their_victim_whatever_their_score() {
        // The same spoofed flood with every SYN scored benign: still one flood of the victim.
        let flows: Vec<Flow> = (0..200u64)
            .map(|i| flow(PROTO_TCP, 20 + i as u8, 1, 80, i * 5_000, false))
            .collect();
        let out = run_scored(&AlertConfig::default(), SCAN, 0.01, &flows);
        assert_eq!(
            incidents(&out),
            [("flood".to_string(), None, Some(ip(1).to_string()), 185)]
        );
        // Devices announcing themselves to a multicast group are no flood of it.
        let group = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 251));
        let announcements: Vec<Flow> = flows
            .iter()
            .map(|f| Flow {
                responder: group,
                ..*f
            })
            .collect();
        let out = run_scored(&AlertConfig::default(), SCAN, 0.01, &announcements);
        assert!(out.is_empty(), "{out:?}");
        // Nor is a flood scored benign in one flow of its own.
        let out = run_scored(&AlertConfig::default(), SCAN, 0.01, &flows[..1]);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_one_flow_flood_evaluated_at_its_end_minutes_later_is_one_alert() {
        // One UDP flow of 10,000 packets a second for 90 s: early evaluations at 8, 32, 128 and
        // 512 packets, then its last one 30 s after it ends (idle timeout), 120 s on, long after
        // `incident_idle_s` (30 s) of no evaluation.
        let mut e = engine(&AlertConfig::default());
        let mut out = Vec::new();
        let mut f = flow(PROTO_UDP, 9, 1, 53, 0, false);
        let score = Score {
            anomaly: 0.99,
            class: Some(FLOOD),
        };
        for (pkts, reason) in [
            (8u32, EvalReason::Early),
            (32, EvalReason::Early),
            (128, EvalReason::Early),
            (512, EvalReason::Early),
            (900_000, EvalReason::Idle),
        ] {
            f.fwd.pkts = pkts;
            f.fwd.bytes = 100 * u64::from(pkts);
            f.last = u64::from(pkts) * 100;
            let ts = if reason == EvalReason::Idle {
                120_000_000
            } else {
                f.last
            };
            f.evals += 1;
            e.offer(ts, &f, reason, score, 1.0, &mut out);
        }
        e.flush(&mut out);
        let ids: HashSet<&str> = out.iter().map(|a| detail(a).alert_id.as_str()).collect();
        assert_eq!(ids.len(), 1, "{out:#?}");
        let last = out.last().unwrap();
        assert!(detail(last).last, "{last:?}");
        assert_eq!(last.flow.pkts_toserver, 900_000, "{last:?}");
    }

    #[test]
    fn lone_syns_from_one_source_stay_a_scan() {
        // The same 200 SYNs from one source, to 200 ports: a port scan, not a flood.
        let flows: Vec<Flow> = (0..200u64)
            .map(|i| flow(PROTO_TCP, 9, 1, 1000 + i as u16, i * 5_000, false))
            .collect();
        let out = run(&AlertConfig::default(), SCAN, &flows);
        assert_eq!(
            incidents(&out),
            [(
                "scan".to_string(),
                Some(ip(9).to_string()),
                Some(ip(1).to_string()),
                200
            )]
        );
    }

    #[test]
    fn a_scanner_tracked_before_a_spoofed_flood_keeps_its_scan() {
        // A scanner probes ports of host 2 while host 1 takes a flood of lone SYNs from 150
        // sources; the scanner's probes keep counting as its scan.
        let mut flows: Vec<Flow> = (0..150u64)
            .map(|i| flow(PROTO_TCP, 100 + i as u8, 1, 80, i * 5_000, false))
            .collect();
        flows.extend((0..20u64).map(|i| flow(PROTO_TCP, 9, 2, 1000 + i as u16, i * 40_000, false)));
        flows.sort_by_key(|f| f.last);
        let out = run(&AlertConfig::default(), SCAN, &flows);
        assert_eq!(
            incidents(&out),
            [
                ("flood".to_string(), None, Some(ip(1).to_string()), 135),
                (
                    "scan".to_string(),
                    Some(ip(9).to_string()),
                    Some(ip(2).to_string()),
                    20
                ),
            ]
        );
    }

    /// Offers each (flow, class, reason) at the flow's end, with one source for its victim; then
    /// ends every incident.
    fn run_each(cfg: &AlertConfig, evaluations: &[(&Flow, usize, EvalReason)]) -> Vec<Alert> {
        let mut e = engine(cfg);
        let mut out = Vec::new();
        for &(f, class, reason) in evaluations {
            let score = Score {
                anomaly: 0.99,
                class: Some(class),
            };
            e.offer(f.last, f, reason, score, 1.0, &mut out);
        }
        e.flush(&mut out);
        out
    }

    #[test]
    fn probes_the_class_head_calls_flood_count_towards_their_sources_scan() {
        // 6 connect probes of one host's ports, 0.1 s apart, 2 of them called flood: 4 called
        // scan are short of scan_min_targets (5), the 6 probes are not.
        let probes: Vec<Flow> = (0..6u16)
            .map(|i| flow(PROTO_TCP, 9, 1, 1000 + i, u64::from(i) * 100_000, false))
            .collect();
        let class = |i: usize| if i.is_multiple_of(3) { FLOOD } else { SCAN };
        let all: Vec<_> = (probes.iter().enumerate())
            .map(|(i, f)| (f, class(i), EvalReason::Idle))
            .collect();
        let scan = (
            "scan".to_string(),
            Some(ip(9).to_string()),
            Some(ip(1).to_string()),
        );
        let (c, s, d) = scan.clone();
        assert_eq!(
            incidents(&run_each(&AlertConfig::default(), &all)),
            [(c, s, d, 6)]
        );
        let called_scan: Vec<_> = all.iter().filter(|e| e.1 == SCAN).copied().collect();
        assert!(run_each(&AlertConfig::default(), &called_scan).is_empty());
        // Evaluated twice, called flood and then scan, each probe still counts once.
        let twice: Vec<_> = (probes.iter())
            .flat_map(|f| [(f, FLOOD, EvalReason::Early), (f, SCAN, EvalReason::Idle)])
            .collect();
        let (c, s, d) = scan;
        assert_eq!(
            incidents(&run_each(&AlertConfig::default(), &twice)),
            [(c, s, d, 6)]
        );
    }

    #[test]
    fn a_sweep_from_one_source_port_is_a_scan_not_a_flood() {
        // 200 SYNs from one source to ports 1-100 of hosts 1 and 2 in turn, one every 2 ms,
        // refused, called flood: from one source port, a scanner's probes; each from a port
        // of its own, a flood tool's SYNs (and its source's scan: the class head calls them
        // probes too).
        let sweep = |own_ports: bool| -> Vec<Flow> {
            (0..200u16)
                .map(|i| {
                    let host = 1 + (i % 2) as u8;
                    let mut f = flow(PROTO_TCP, 9, host, 1 + i / 2, u64::from(i) * 2_000, false);
                    f.bwd.pkts = 1;
                    f.bwd.rst = 1;
                    if own_ports {
                        f.initiator_port = 2000 + i;
                    }
                    f
                })
                .collect()
        };
        let classes = |out: &[Alert]| -> Vec<String> {
            let mut c: Vec<_> = incidents(out).into_iter().map(|i| i.0).collect();
            c.sort();
            c
        };
        let one_port = run(&AlertConfig::default(), FLOOD, &sweep(false));
        assert_eq!(classes(&one_port), ["scan"]);
        assert_eq!(incidents(&one_port)[0].3, 200);
        let own_ports = run(&AlertConfig::default(), FLOOD, &sweep(true));
        assert_eq!(classes(&own_ports), ["flood", "flood", "scan"]);

        // Each probe evaluated at 0.5 s, before its refusal came back over a long path, and
        // again at its end, refused, while it is still the last flow from its port (a probe a
        // second): it stays its scan's.
        let slow: Vec<Flow> = (0..20u16)
            .map(|i| flow(PROTO_TCP, 9, 1, 1 + i, u64::from(i) * 1_000_000, false))
            .collect();
        let mut e = engine(&AlertConfig::default());
        let mut out = Vec::new();
        let flood = Score {
            anomaly: 0.99,
            class: Some(FLOOD),
        };
        for syn in &slow {
            e.offer(
                syn.start + 500_000,
                syn,
                EvalReason::Probe,
                flood,
                1.0,
                &mut out,
            );
            let refused = Flow {
                bwd: DirStats {
                    pkts: 1,
                    rst: 1,
                    ..syn.bwd
                },
                ..*syn
            };
            e.offer(
                syn.start + 800_000,
                &refused,
                EvalReason::Idle,
                flood,
                1.0,
                &mut out,
            );
        }
        let flood_flows = (e.incidents.values())
            .filter(|i| i.behaviour == Behaviour::Flood)
            .map(|i| i.flows);
        assert!(
            flood_flows.max() <= Some(1),
            "only the first probe is the flood's"
        );
    }

    #[test]
    fn a_flood_of_one_target_from_one_source_stays_a_flood() {
        // 20 half-open connections of 100 SYNs each, one every 10 ms, from one source to one
        // service: probes, but of one target.
        let flood: Vec<Flow> = (0..20u64)
            .map(|i| {
                let mut f = flow(PROTO_TCP, 9, 1, 443, i * 10_000, false);
                f.fwd.pkts = 100;
                f
            })
            .collect();
        assert_eq!(
            incidents(&run(&AlertConfig::default(), FLOOD, &flood)),
            [(
                "flood".to_string(),
                Some(ip(9).to_string()),
                Some(ip(1).to_string()),
                20
            )]
        );
    }

    #[test]
    fn a_floods_further_attempts_count_in_it_unscored() {
        // One source's half-open connections to one service, one every 10 ms, called flood.
        let mut e = engine(&AlertConfig::default());
        let mut out = Vec::new();
        let syn = |i: u64| {
            let mut f = flow(PROTO_TCP, 9, 1, 443, i * 10_000, false);
            f.initiator_port = 1024 + i as u16;
            f.fwd.pkts = 3;
            f
        };
        let flood = Score {
            anomaly: 0.99,
            class: Some(FLOOD),
        };
        let mut i = 0;
        while out.is_empty() {
            assert_eq!(
                e.absorbs(&syn(i)),
                None,
                "nothing to count in before the alert"
            );
            e.offer(syn(i).last, &syn(i), EvalReason::Idle, flood, 1.0, &mut out);
            i += 1;
        }
        // Its next attempts count there whatever the model would say; another source's probe
        // of the victim, or a connection that got somewhere, still needs a score.
        let next = syn(i);
        assert_eq!(e.absorbs(&next), Some(Absorbed::Named));
        let mut scanner = flow(PROTO_TCP, 7, 1, 22, next.start, false);
        assert_eq!(e.absorbs(&scanner), None);
        scanner.responder_port = 443;
        assert_eq!(
            e.absorbs(&scanner),
            None,
            "a flood of one source takes only its own"
        );
        assert_eq!(
            e.absorbs(&flow(PROTO_TCP, 9, 1, 443, next.start, true)),
            None
        );
        for j in i..i + 50 {
            e.advance(syn(j).last, &mut out);
            let how = e.absorbs(&syn(j)).expect("one of the flood's attempts");
            e.offer_absorbed(syn(j).last, &syn(j), EvalReason::Idle, how, &mut out);
        }
        assert_eq!(e.counters.flows_unscored, 50);
        assert_eq!(e.counters.flows_above_threshold, i);
        e.flush(&mut out);
        assert_eq!(
            incidents(&out),
            [(
                "flood".to_string(),
                Some(ip(9).to_string()),
                Some(ip(1).to_string()),
                i + 50
            )]
        );
        // Once the flood has gone quiet and closed, an attempt needs its score again.
        assert_eq!(e.absorbs(&syn(i + 50)), None);
    }

    #[test]
    fn a_floods_source_is_scored_again_once_it_stops_and_its_probes_make_its_scan() {
        // One source's half-open attempts at port 443 called flood, one every 10 ms, until the
        // flood is alerted and 50 more.
        let mut e = engine(&AlertConfig::default());
        let mut out = Vec::new();
        let syn = |port: u16, start: Micros| {
            let mut f = flow(PROTO_TCP, 9, 1, port, start, false);
            f.initiator_port = 1024 + (start / 10_000) as u16;
            f.fwd.pkts = 3;
            f
        };
        let flood = Score {
            anomaly: 0.99,
            class: Some(FLOOD),
        };
        let mut t = 0;
        while out.is_empty() {
            assert!(t < 10_000_000, "no flood alert");
            e.offer(
                t + 100_000,
                &syn(443, t),
                EvalReason::Probe,
                flood,
                1.0,
                &mut out,
            );
            t += 10_000;
        }
        // While it goes on, its attempts at other ports are taken unscored too, and they are
        // probes of its scan: 16 ports in 0.16 s are a scan alert of their own.
        for port in 1..=16 {
            let f = syn(port, t);
            e.advance(f.last, &mut out);
            let how = e.absorbs(&f).expect("one of the flood's attempts");
            e.offer_absorbed(f.last, &f, EvalReason::Probe, how, &mut out);
            t += 10_000;
        }
        let scans = |out: &[Alert]| out.iter().filter(|a| detail(a).class == "scan").count();
        assert_eq!(scans(&out), 1, "{out:?}");
        // 5 s after its last attempt the flood has stopped, though its incident is open: the
        // source's next attempt needs its score.
        assert_eq!(e.absorbs(&syn(443, t + 5_000_000)), None);
        assert_eq!(e.absorbs(&syn(443, t + 1_000_000)), Some(Absorbed::Named));
    }

    #[test]
    fn a_floods_kept_alive_connections_are_not_also_a_brute_force_or_slow_dos() {
        // `flooder` floods port 80 of host 1 with 40 connections 10 ms apart called flood, each
        // one request after another answered alike (a keep-alive flood); then source 9 makes 40
        // more, called brute force or slow DoS by turns (after 4 of its own called flood, when
        // another source floods).
        let conn = |src: u8, i: u64| Flow {
            exchanges: Exchanges::refused_in_a_row(6),
            ..flow(PROTO_TCP, src, 1, 80, i * 10_000, true)
        };
        let offer = |flooder: Option<u8>| {
            let mut evals = Vec::new();
            if let Some(src) = flooder {
                evals.extend((0..40).map(|i| (conn(src, i), FLOOD)));
            }
            if flooder == Some(8) {
                evals.extend((40..44).map(|i| (conn(9, i), FLOOD)));
            }
            evals.extend((44..84).map(|i| (conn(9, i), if i % 2 == 0 { BRUTE } else { SLOW })));
            let mut e = engine(&AlertConfig::default());
            let mut out = Vec::new();
            for (f, class) in &evals {
                let score = Score {
                    anomaly: 0.99,
                    class: Some(*class),
                };
                e.offer(f.last, f, EvalReason::Idle, score, 1.0, &mut out);
            }
            e.flush(&mut out);
            let mut classes: Vec<String> = out.iter().map(|a| detail(a).class.clone()).collect();
            classes.sort();
            classes.dedup();
            classes
        };
        assert_eq!(offer(Some(9)), ["flood"]);
        // Without the flood they are what the model calls them, and so they are beside another
        // source's flood that they joined with a few connections.
        assert_eq!(offer(None), ["bruteforce", "slowdos"]);
        assert_eq!(offer(Some(8)), ["bruteforce", "flood", "slowdos"]);
    }

    #[test]
    fn a_flow_that_showed_nothing_new_keeps_its_verdict() {
        // A UDP flood to incrementing ports from one source, 600 datagrams 1 ms apart, called
        // flood while it runs and scan at their idle end (judged in a context of later).
        let datagrams: Vec<Flow> = (0..600u16)
            .map(|i| flow(PROTO_UDP, 9, 1, 1000 + i, u64::from(i) * 1_000, false))
            .collect();
        let twice: Vec<_> = (datagrams.iter())
            .flat_map(|f| [(f, FLOOD, EvalReason::Early), (f, SCAN, EvalReason::Idle)])
            .collect();
        let flood = (
            "flood".to_string(),
            Some(ip(9).to_string()),
            Some(ip(1).to_string()),
            600,
        );
        assert_eq!(
            incidents(&run_each(&AlertConfig::default(), &twice)),
            std::slice::from_ref(&flood)
        );
        // So too when more of them are open at once than the engine remembers in full (4 x 100):
        // the rest are remembered by what they had shown.
        let small = AlertConfig {
            max_incidents: 100,
            ..AlertConfig::default()
        };
        let ended_later = |ends: &[Flow]| {
            let mut e = engine(&small);
            let mut out = Vec::new();
            let score = |class| Score {
                anomaly: 0.99,
                class: Some(class),
            };
            for f in &datagrams {
                e.offer(f.last, f, EvalReason::Early, score(FLOOD), 1.0, &mut out);
            }
            for f in ends {
                let ts = f.last + 30_000_000;
                e.offer(ts, f, EvalReason::Idle, score(SCAN), 1.0, &mut out);
            }
            e.flush(&mut out);
            incidents(&out)
        };
        assert_eq!(ended_later(&datagrams), std::slice::from_ref(&flood));
        // Refused by their target after the flood's evaluation, they have news: the refusals
        // are judged, and refused datagrams to 600 ports are a scan too.
        let refused: Vec<Flow> = (datagrams.iter())
            .map(|f| Flow {
                icmp_error: true,
                icmp_from_peer: true,
                ..*f
            })
            .collect();
        let news: Vec<_> = (datagrams.iter().zip(&refused))
            .flat_map(|(f, r)| [(f, FLOOD, EvalReason::Early), (r, SCAN, EvalReason::Idle)])
            .collect();
        let mut scan = flood.clone();
        scan.0 = "scan".to_string();
        assert_eq!(
            incidents(&run_each(&AlertConfig::default(), &news)),
            [flood.clone(), scan.clone()]
        );
        assert_eq!(ended_later(&refused), [flood, scan]);
    }

    #[test]
    fn lone_syns_called_flood_make_no_scan_candidates_once_their_flood_is_alerted() {
        // A spoofed SYN flood, each SYN called flood: each is a probe of its source, until the
        // victim's flood is alerted from many sources.
        let mut e = engine(&AlertConfig::default());
        let mut out = Vec::new();
        let mut raised_at = None;
        for i in 0..200u64 {
            let f = flow(PROTO_TCP, 20 + i as u8, 1, 80, i * 5_000, false);
            let score = Score {
                anomaly: 0.99,
                class: Some(FLOOD),
            };
            e.offer(f.last, &f, EvalReason::Idle, score, 1.0, &mut out);
            if raised_at.is_none() && !out.is_empty() {
                raised_at = Some(i as usize);
            }
        }
        let scans = e.incidents.keys().filter(|k| k.class == SCAN).count();
        let raised_at = raised_at.expect("the flood is alerted");
        assert!(raised_at < 150, "{raised_at}");
        assert_eq!(scans, raised_at);
        e.flush(&mut out);
        assert_eq!(
            incidents(&out),
            [("flood".to_string(), None, Some(ip(1).to_string()), 200)]
        );
    }

    #[test]
    fn a_fast_port_sweep_is_one_scan_alert_with_its_final_update() {
        // 20 ports of one host, 0.1 s apart.
        let flows: Vec<Flow> = (0..20)
            .map(|i| flow(PROTO_TCP, 9, 1, 1000 + i, u64::from(i) * 100_000, false))
            .collect();
        let out = run(&AlertConfig::default(), SCAN, &flows);
        let ids: Vec<(&str, u32, bool)> = out
            .iter()
            .map(|a| {
                (
                    detail(a).alert_id.as_str(),
                    detail(a).update,
                    detail(a).last,
                )
            })
            .collect();
        assert!(out.len() >= 2, "{ids:?}");
        assert!(
            ids.iter().all(|(id, ..)| *id == ids[0].0),
            "one alert: {ids:?}"
        );
        assert_eq!((ids[0].1, ids[0].2), (0, false));
        assert!(ids.last().unwrap().2, "the last record is final");
        let last = detail(out.last().unwrap());
        assert_eq!(last.class, "scan");
        assert_eq!(last.count, 20);
        assert_eq!(last.evidence.hosts, Some(1));
        assert_eq!(last.evidence.ports, Some(20));
        assert_eq!(last.evidence.unanswered, Some(20));
        assert_eq!(out[0].src_ip.as_deref(), Some("10.0.0.9"));
    }

    /// The times of an incident's records but its final one; `out` holds one incident's only.
    fn records_before_final(out: &[Alert]) -> Vec<String> {
        assert!(
            out.iter()
                .all(|a| detail(a).alert_id == detail(&out[0]).alert_id),
            "one alert"
        );
        (out.iter())
            .filter(|a| !detail(a).last)
            .map(|a| a.timestamp.clone())
            .collect()
    }

    #[test]
    fn a_scan_resumed_after_a_lull_is_told_at_once() {
        // 20 ports of one host, 0.1 s apart, from 0 s; then the same 20 ports again from
        // `resume` s on: the source's next scan of its victim, one incident with the first.
        let records = |resume: f64| {
            let probe = |i: u64, at: f64| flow(PROTO_TCP, 9, 1, 1000 + i as u16, micros(at), false);
            let mut flows: Vec<Flow> = (0..20).map(|i| probe(i, i as f64 * 0.1)).collect();
            flows.extend((0..20).map(|i| probe(i, resume + i as f64 * 0.1)));
            let out = run(&AlertConfig::default(), SCAN, &flows);
            records_before_final(&out)
        };
        // Quiet 4 s (the last probe's packets end at 2.0 s): the record after the raise comes
        // with the fifth probe of the second scan (at 6.5 s), not at the 10 s update.
        let resumed = records(6.0);
        assert_eq!(resumed.len(), 2, "{resumed:?}");
        assert!(
            resumed[1] >= eve_time(6_000_000) && resumed[1] < eve_time(7_000_000),
            "{resumed:?}"
        );
        // Quiet for less than the lull: the scan goes on, updated at the interval only.
        assert_eq!(records(2.5).len(), 1);
    }

    #[test]
    fn a_one_flow_flood_resumed_after_a_lull_is_told_at_once() {
        // An ICMP flood of host 1 by source 9 in one flow, then, `resume` s later, a second
        // flood in a new flow, each evaluated early at 8, 32, 128 and 512 packets (one every
        // 2 ms) and at its end 3 s later.
        let records = |resume: f64| {
            let mut e = engine(&AlertConfig::default());
            let mut out = Vec::new();
            let score = Score {
                anomaly: 0.99,
                class: Some(FLOOD),
            };
            for (n, at) in [(0u64, 0.0), (1, resume)] {
                let start = micros(at);
                let mut f = flow(PROTO_ICMP, 9, 1, 0, start, false);
                f.uid = n;
                for pkts in [8u32, 32, 128, 512] {
                    f.fwd.pkts = pkts;
                    f.last = start + u64::from(pkts) * 2_000;
                    e.offer(f.last, &f, EvalReason::Early, score, 1.0, &mut out);
                }
                f.fwd.pkts = 1500;
                f.last = start + 3_000_000;
                e.offer(f.last, &f, EvalReason::Idle, score, 1.0, &mut out);
            }
            e.flush(&mut out);
            records_before_final(&out)
        };
        // Raised at the first flow's 512th packet (1.02 s); quiet 3 s after its end, the
        // flood resumes: the record after the raise comes with the second flow's 512th packet
        // (7.02 s), not at the 10 s update or only in the final record.
        let resumed = records(6.0);
        assert_eq!(resumed.len(), 2, "{resumed:?}");
        assert_eq!(resumed[1], eve_time(7_024_000), "{resumed:?}");
        // Quiet for less than the lull: the flood goes on, updated at the interval only.
        assert_eq!(records(3.5).len(), 1);
    }

    #[test]
    fn a_named_source_back_after_a_pause_is_told_at_once() {
        // Source 9 floods UDP/53 of host 1 with a flow of 100 packets every 0.1 s for 2 s;
        // source 8 with one every 0.5 s for 12 s, so that the incident never goes quiet;
        // source 9 comes back at `back` s for 2 s more.
        let records = |back: f64| {
            let burst = |src: u8, at: f64| {
                let mut f = flow(PROTO_UDP, src, 1, 53, micros(at), false);
                f.fwd.pkts = 100;
                f
            };
            let mut flows: Vec<Flow> = (0..20).map(|i| burst(9, i as f64 * 0.1)).collect();
            flows.extend((0..24).map(|i| burst(8, i as f64 * 0.5)));
            flows.extend((0..20).map(|i| burst(9, back + i as f64 * 0.1)));
            flows.sort_by_key(|f| f.last);
            records_before_final(&run(&AlertConfig::default(), FLOOD, &flows))
        };
        // Raised at 0.4 s; back at 6 s, source 9 has sent a flood's worth (500 packets) again
        // with its fifth flow (ending at 6.5 s): told then, not at the 10 s update.
        let resumed = records(6.0);
        assert_eq!(resumed.len(), 2, "{resumed:?}");
        assert_eq!(resumed[1], eve_time(6_500_000), "{resumed:?}");
        // Back after less than the lull: its flood goes on, updated at the interval only.
        let on = records(3.0);
        assert_eq!(on.len(), 2, "{on:?}");
        assert!(on[1] >= eve_time(10_500_000), "{on:?}");
    }

    #[test]
    fn peers_each_on_a_port_of_their_own_are_not_a_scan() {
        // 30 hosts, each on its own port (P2P), as fast as the sweep above.
        let flows: Vec<Flow> = (0..30)
            .map(|i| {
                flow(
                    PROTO_UDP,
                    9,
                    100 + i as u8,
                    20000 + i,
                    u64::from(i) * 100_000,
                    false,
                )
            })
            .collect();
        assert!(run(&AlertConfig::default(), SCAN, &flows).is_empty());
        // The same hosts on one port is a sweep.
        let sweep: Vec<Flow> = (0..30u16)
            .map(|i| {
                flow(
                    PROTO_UDP,
                    9,
                    100 + i as u8,
                    161,
                    u64::from(i) * 100_000,
                    false,
                )
            })
            .collect();
        assert!(!run(&AlertConfig::default(), SCAN, &sweep).is_empty());
        // A client trying 5 servers on two ports in turn: fewer targets (7) than four times
        // the fewer of hosts and ports (2). 5 ports of one host are a scan.
        let tries: Vec<Flow> = (0..7u16)
            .map(|i| {
                let port = if i.is_multiple_of(2) { 443 } else { 8443 };
                let start = u64::from(i) * 20_000;
                flow(PROTO_UDP, 9, 100 + (i % 5) as u8, port, start, false)
            })
            .collect();
        assert!(run(&AlertConfig::default(), SCAN, &tries).is_empty());
        let ports: Vec<Flow> = (0..5u16)
            .map(|i| flow(PROTO_TCP, 9, 1, 1000 + i, u64::from(i) * 100_000, false))
            .collect();
        assert_eq!(run(&AlertConfig::default(), SCAN, &ports).len(), 2);
    }

    #[test]
    fn a_slow_trickle_of_probes_is_not_a_scan() {
        // 12 ports of one host, one every 5 s: 0.2 targets per second.
        let flows: Vec<Flow> = (0..12)
            .map(|i| flow(PROTO_TCP, 9, 1, 1000 + i, u64::from(i) * 5_000_000, false))
            .collect();
        let cfg = AlertConfig {
            incident_idle_s: 60.0,
            ..AlertConfig::default()
        };
        assert!(run(&cfg, SCAN, &flows).is_empty());
    }

    #[test]
    fn a_trickle_of_probes_does_not_hide_the_scan_after_it() {
        // 5 ports of one host, one every 10 s, then 16 more within a second.
        let trickle = (0..5u16).map(|i| (1000 + i, u64::from(i) * 10_000_000));
        let burst = (0..16u16).map(|i| (2000 + i, 45_000_000 + u64::from(i) * 50_000));
        let flows: Vec<Flow> = trickle
            .chain(burst)
            .map(|(port, start)| flow(PROTO_TCP, 9, 1, port, start, false))
            .collect();
        let out = run(&AlertConfig::default(), SCAN, &flows);
        assert_eq!(incidents(&out).len(), 1, "{:?}", incidents(&out));
        let first = detail(&out[0]);
        assert_eq!(first.class, "scan");
        let min = AlertConfig::default().scan_min_targets;
        assert!(first.evidence.targets >= Some(min), "{:?}", first.evidence);
        assert!(first.evidence.window_s < 10.0, "{:?}", first.evidence);
    }

    #[test]
    fn brute_force_needs_sessions_at_a_pace() {
        let cfg = AlertConfig {
            incident_idle_s: 120.0,
            ..AlertConfig::default()
        };
        // 10 sessions to ssh, 0.2 s apart.
        let fast: Vec<Flow> = (0..10u16)
            .map(|i| flow(PROTO_TCP, 9, 1, 22, u64::from(i) * 200_000, true))
            .collect();
        let out = run(&cfg, BRUTE, &fast);
        assert!(!out.is_empty());
        assert_eq!(detail(&out[0]).evidence.sessions, Some(4));
        // 10 sessions, 10 s apart: 6 per minute.
        let slow: Vec<Flow> = (0..10u16)
            .map(|i| flow(PROTO_TCP, 9, 1, 22, u64::from(i) * 10_000_000, true))
            .collect();
        assert!(run(&cfg, BRUTE, &slow).is_empty());
        // Probes that never got a session are not login attempts.
        let probes: Vec<Flow> = (0..10u16)
            .map(|i| flow(PROTO_TCP, 9, 1, 22, u64::from(i) * 200_000, false))
            .collect();
        assert!(run(&cfg, BRUTE, &probes).is_empty());
    }

    #[test]
    fn passwords_refused_in_one_session_are_a_brute_force() {
        let cfg = AlertConfig::default();
        // One SSH session of 14 s, flagged: 4 requests refused alike in a row.
        let session = |refused: u8, start: Micros| Flow {
            last: start + 14_000_000,
            exchanges: Exchanges::refused_in_a_row(refused),
            ..flow(PROTO_TCP, 9, 1, 22, start, true)
        };
        let out = run(&cfg, BRUTE, &[session(4, 0)]);
        assert_eq!(incidents(&out).len(), 1, "{out:?}");
        let e = &detail(&out[0]).evidence;
        assert_eq!((e.sessions, e.logins), (Some(1), Some(4)));
        // 3 are not enough, nor are 4 the model does not flag, nor 4 in a session of minutes
        // (keep-alives answered alike).
        assert!(run(&cfg, BRUTE, &[session(3, 0)]).is_empty());
        assert!(run_scored(&cfg, BENIGN, 0.0, &[session(4, 0)]).is_empty());
        let long = Flow {
            last: 300_000_000,
            ..session(4, 0)
        };
        assert!(run(&cfg, BRUTE, &[long]).is_empty());
        // Two at a time in two sessions side by side (a guesser over a long link).
        let out = run(&cfg, BRUTE, &[session(2, 0), session(2, 1_000)]);
        assert_eq!(detail(&out[0]).evidence.logins, Some(4));
        let off = AlertConfig {
            bruteforce_min_logins: 0,
            ..cfg
        };
        assert!(run(&off, BRUTE, &[session(4, 0)]).is_empty());
    }

    /// `n` sessions to ssh, each `len` µs long, one starting every `every` µs, with `fwd`
    /// payload bytes (the client's).
    fn logins(n: u16, len: Micros, every: Micros, fwd: impl Fn(u16) -> u64) -> Vec<Flow> {
        (0..n)
            .map(|i| {
                let mut f = flow(PROTO_TCP, 9, 1, 22, u64::from(i) * every, true);
                f.last = f.start + len;
                f.fwd.payload_bytes = fwd(i);
                f.fwd.bytes = 480 + fwd(i);
                f
            })
            .collect()
    }

    #[test]
    fn sessions_back_to_back_are_a_brute_force_whatever_the_model_scores() {
        // 12 logins of 2 s, one every 2.1 s: 28 a minute, each scored benign.
        let out = run_scored(
            &AlertConfig::default(),
            BRUTE,
            0.0,
            &logins(12, 2_000_000, 2_100_000, |_| 300),
        );
        assert!(!out.is_empty());
        assert_eq!(detail(&out[0]).class, "bruteforce");
        assert_eq!(detail(&out[0]).evidence.sessions, Some(10));
        assert_eq!(detail(out.last().unwrap()).evidence.sessions, Some(12));
        assert_eq!(incidents(&out).len(), 1, "{:?}", incidents(&out));
        assert_eq!(out[0].dest_port, Some(22));
        // Slower than the model's brute force (6 a minute) is still one when back to back.
        let slow = run_scored(
            &AlertConfig::default(),
            BRUTE,
            0.0,
            &logins(12, 8_000_000, 10_000_000, |_| 300),
        );
        assert!(!slow.is_empty());
        // The model's brute force of the same service and the series are one incident.
        let both = run(
            &AlertConfig::default(),
            BRUTE,
            &logins(12, 2_000_000, 2_100_000, |_| 300),
        );
        assert_eq!(incidents(&both).len(), 1, "{:?}", incidents(&both));
        assert_eq!(detail(both.last().unwrap()).evidence.sessions, Some(12));
        // Off.
        let off = AlertConfig {
            bruteforce_repeat_min_sessions: 0,
            ..AlertConfig::default()
        };
        assert!(
            run_scored(&off, BRUTE, 0.0, &logins(12, 2_000_000, 2_100_000, |_| 300)).is_empty()
        );
    }

    #[test]
    fn sessions_side_by_side_with_pauses_or_unlike_are_not_a_brute_force() {
        let cfg = AlertConfig::default();
        // Side by side (a browser): 2 s sessions, one every second.
        assert!(
            run_scored(&cfg, BRUTE, 0.0, &logins(20, 2_000_000, 1_000_000, |_| 300)).is_empty()
        );
        // Polling: 0.5 s sessions every 10 s.
        assert!(run_scored(&cfg, BRUTE, 0.0, &logins(20, 500_000, 10_000_000, |_| 300)).is_empty());
        // Within one second (a benchmark), however many.
        assert!(run_scored(&cfg, BRUTE, 0.0, &logins(40, 10_000, 20_000, |_| 300)).is_empty());
        // Transfers of different sizes.
        let sizes = |i: u16| 300 << (i % 4);
        assert!(run_scored(&cfg, BRUTE, 0.0, &logins(20, 2_000_000, 2_100_000, sizes)).is_empty());
    }

    #[test]
    fn refused_attempts_are_a_scan_whatever_the_model_scores() {
        let cfg = AlertConfig::default();
        // SYNs to 12 ports of one host, 0.1 s apart, refused, each scored benign.
        let refused: Vec<Flow> = (0..12u16)
            .map(|i| {
                let mut f = flow(PROTO_TCP, 9, 1, 1000 + i, u64::from(i) * 100_000, false);
                f.bwd.pkts = 1;
                f.bwd.rst = 1;
                f
            })
            .collect();
        let out = run_scored(&cfg, BENIGN, 0.0, &refused);
        assert_eq!(
            incidents(&out),
            [(
                "scan".into(),
                Some("10.0.0.9".into()),
                Some("10.0.0.1".into()),
                12
            )]
        );
        // Unanswered to their end: the same.
        let unanswered: Vec<Flow> = (0..12u16)
            .map(|i| flow(PROTO_TCP, 9, 1, 1000 + i, u64::from(i) * 100_000, false))
            .collect();
        assert_eq!(
            incidents(&run_scored(&cfg, BENIGN, 0.0, &unanswered)).len(),
            1
        );
        // Answered, then cancelled by the client (happy eyeballs, preconnects): not a scan.
        let cancelled: Vec<Flow> = refused
            .iter()
            .map(|f| Flow {
                bwd: DirStats { rst: 0, ..f.bwd },
                fwd: DirStats { rst: 1, ..f.fwd },
                synack_seen: true,
                ..*f
            })
            .collect();
        assert!(run_scored(&cfg, BENIGN, 0.0, &cancelled).is_empty());
        // Still waiting for an answer at an early evaluation (a long link) is not silence.
        let mut e = engine(&cfg);
        let mut early = Vec::new();
        let benign = Score {
            anomaly: 0.0,
            class: Some(BENIGN),
        };
        for f in &unanswered {
            e.offer(f.last, f, EvalReason::Probe, benign, 1.0, &mut early);
        }
        assert!(early.is_empty());
        // Unreachable by a router's word (no route): the path is broken, the target refused
        // nothing.
        let no_route: Vec<Flow> = unanswered
            .iter()
            .map(|f| Flow {
                icmp_error: true,
                ..*f
            })
            .collect();
        assert!(run_scored(&cfg, BENIGN, 0.0, &no_route).is_empty());
        // UDP datagrams to 12 ports, refused by the target itself: a scan. The same refused
        // by routers (traceroute's expired probes), or unanswered, are not.
        let datagrams = |from_peer: bool, error: bool| -> Vec<Flow> {
            (0..12u16)
                .map(|i| Flow {
                    icmp_error: error,
                    icmp_from_peer: from_peer,
                    ..flow(PROTO_UDP, 9, 1, 1000 + i, u64::from(i) * 100_000, false)
                })
                .collect()
        };
        assert_eq!(
            incidents(&run_scored(&cfg, BENIGN, 0.0, &datagrams(true, true))).len(),
            1
        );
        assert!(run_scored(&cfg, BENIGN, 0.0, &datagrams(false, true)).is_empty());
        assert!(run_scored(&cfg, BENIGN, 0.0, &datagrams(false, false)).is_empty());
        // A refusal counts when it comes, once: at an early evaluation, and not again at the
        // flow's end (a UDP flow's idle timeout later).
        let mut e = engine(&cfg);
        let mut out = Vec::new();
        let refused = datagrams(true, true);
        for f in &refused {
            e.offer(f.last, f, EvalReason::Probe, benign, 1.0, &mut out);
        }
        assert_eq!(out.len(), 1, "raised at the early evaluations");
        for f in &refused {
            e.offer(
                f.last + 30_000_000,
                f,
                EvalReason::Idle,
                benign,
                1.0,
                &mut out,
            );
        }
        e.flush(&mut out);
        assert_eq!(incidents(&out).len(), 1);
        assert_eq!(incidents(&out)[0].3, 12, "{:?}", incidents(&out));
    }

    #[test]
    fn a_slow_dos_holds_tcp_connections() {
        let held = |proto| -> Vec<Flow> {
            (0..20u16)
                .map(|i| flow(proto, 9, 1, 80, u64::from(i) * 10_000, true))
                .collect()
        };
        let out = run(&AlertConfig::default(), SLOW, &held(PROTO_TCP));
        assert!(!out.is_empty());
        assert_eq!(detail(&out[0]).evidence.connections, Some(16));
        assert!(run(&AlertConfig::default(), SLOW, &held(PROTO_UDP)).is_empty());
        // A SYN flood's half-open attempts hold nothing, whatever the class head calls them.
        let half_open: Vec<Flow> = (0..20u16)
            .map(|i| flow(PROTO_TCP, 9, 1, 80, u64::from(i) * 10_000, false))
            .collect();
        assert!(run(&AlertConfig::default(), SLOW, &half_open).is_empty());
    }

    /// Offers each connection attempt of `syns` (over a long path) scored `score` at its probe
    /// evaluation, a SYN not answered yet.
    fn offer_probes(e: &mut AlertEngine, syns: &[Flow], score: Score, out: &mut Vec<Alert>) {
        for syn in syns {
            e.offer(syn.start + 500_000, syn, EvalReason::Probe, score, 1.0, out);
        }
    }

    /// The connection of attempt `syn`, its handshake completed since.
    fn established(syn: &Flow) -> Flow {
        Flow {
            established: true,
            synack_seen: true,
            ..*syn
        }
    }

    /// Offers each connection attempt of `syns` (over a long path) flagged `score` at its
    /// probe evaluation, a SYN not answered yet; then each held 1.7 s after its start
    /// (`EvalReason::Held`), 40 packets in. Returns how many alerts the probes made.
    fn probe_then_hold(
        e: &mut AlertEngine,
        syns: &[Flow],
        score: Score,
        out: &mut Vec<Alert>,
    ) -> usize {
        offer_probes(e, syns, score, out);
        let after_probes = out.len();
        for syn in syns {
            let mut held = established(syn);
            held.fwd.pkts = 40;
            let at = held.start + 1_700_000;
            e.advance(at, out);
            e.offer_standing(at, &held, EvalReason::Held, out);
        }
        after_probes
    }

    #[test]
    fn connections_held_after_a_late_handshake_count_in_their_slow_dos() {
        // 20 connections over a long path, flagged at their probe evaluation, a SYN not
        // answered yet; 1.7 s later each is held (`EvalReason::Held`), 40 packets in.
        let offer = |class: usize| {
            let mut e = engine(&AlertConfig::default());
            let mut out = Vec::new();
            let score = Score {
                anomaly: 0.99,
                class: Some(class),
            };
            let syns: Vec<Flow> = (0..20)
                .map(|i| flow(PROTO_TCP, 9, 1, 80, i * 10_000, false))
                .collect();
            let from_probes = probe_then_hold(&mut e, &syns, score, &mut out);
            assert_eq!(from_probes, 0, "half-open attempts hold nothing");
            out
        };
        // Flagged slow DoS, or flood: a flood's connections are left half-open or answered,
        // held ones are a slow DoS's whatever the class head called their SYNs.
        for class in [SLOW, FLOOD] {
            let out = offer(class);
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!(detail(&out[0]).class, "slowdos");
            assert_eq!(detail(&out[0]).evidence.connections, Some(16));
        }
        // Held connections are a slow DoS's evidence only: flagged a scan, they add nothing.
        assert!(offer(SCAN).is_empty());
    }

    #[test]
    fn connections_flagged_at_their_syn_then_served_are_a_flood() {
        // Over a long path, source 9 opens 20 connections to port 80 of host 1 at once, flagged
        // at their probe evaluation (SYNs not answered yet); 1.7 s in, each is established,
        // 16 packets each way, and scored benign.
        let offer = |probe_class: usize, answered: u8| {
            let mut e = engine(&AlertConfig::default());
            let mut out = Vec::new();
            let score = |anomaly: f32| Score {
                anomaly,
                class: Some(probe_class),
            };
            let syns: Vec<Flow> = (0..20)
                .map(|i| flow(PROTO_TCP, 9, 1, 80, i * 10_000, false))
                .collect();
            offer_probes(&mut e, &syns, score(0.99), &mut out);
            for syn in &syns {
                let mut busy = Flow {
                    last: syn.start + 1_700_000,
                    exchanges: Exchanges::refused_in_a_row(answered),
                    ..established(syn)
                };
                busy.fwd.pkts = 16;
                busy.bwd.pkts = 16;
                e.offer(
                    busy.last,
                    &busy,
                    EvalReason::Early,
                    score(0.01),
                    1.0,
                    &mut out,
                );
            }
            e.flush(&mut out);
            incidents(&out)
        };
        // Each with its requests answered: a flood of requests, whether the class head called
        // their SYNs a slow DoS or a flood.
        for class in [SLOW, FLOOD] {
            for answered in [1, 3] {
                let out = offer(class, answered);
                assert_eq!(out.len(), 1, "{out:?}");
                assert_eq!(out[0].0, "flood");
                assert_eq!(out[0].1, Some(ip(9).to_string()), "{out:?}");
            }
        }
        // No request answered (held, a slow DoS's if still so at its held evaluation): no
        // flood. SYNs called a scan (one port of one host, no scan): nothing either.
        assert!(offer(SLOW, 0).is_empty());
        assert!(offer(SCAN, 1).is_empty());
    }

    #[test]
    fn a_sweep_called_flood_explains_no_slow_dos_of_its_source() {
        // Source 9 sweeps 200 ports of host 1 in a second, each SYN from a port of its own,
        // called flood (alerted as one, no connection established); then, over a long path, it
        // opens 20 connections to port 80 whose SYNs are called flood at their probe
        // evaluation, each held 1.7 s later.
        let mut e = engine(&AlertConfig::default());
        let mut out = Vec::new();
        let flood = Score {
            anomaly: 0.99,
            class: Some(FLOOD),
        };
        let sweep: Vec<Flow> = (0..200u16)
            .map(|i| {
                let mut f = flow(PROTO_TCP, 9, 1, 1000 + i, u64::from(i) * 5_000, false);
                f.initiator_port = 2000 + i;
                f
            })
            .collect();
        offer_probes(&mut e, &sweep, flood, &mut out);
        assert!(out.iter().any(|a| detail(a).class == "flood"), "{out:?}");
        let syns: Vec<Flow> = (0..20)
            .map(|i| flow(PROTO_TCP, 9, 1, 80, 1_500_000 + i * 10_000, false))
            .collect();
        probe_then_hold(&mut e, &syns, flood, &mut out);
        // The sweep held no connection open: the slow DoS is not its connections seen otherwise.
        assert!(out.iter().any(|a| detail(a).class == "slowdos"), "{out:?}");
    }

    #[test]
    fn a_flow_evaluated_again_counts_once() {
        let mut e = engine(&AlertConfig::default());
        let mut out = Vec::new();
        let score = Score {
            anomaly: 0.99,
            class: Some(SLOW),
        };
        let f = flow(PROTO_TCP, 9, 1, 80, 0, true);
        for reason in [EvalReason::Probe, EvalReason::Early, EvalReason::Active] {
            e.offer(f.last, &f, reason, score, 1.0, &mut out);
        }
        e.flush(&mut out);
        assert!(out.is_empty(), "one connection is not a slow DoS");
    }

    #[test]
    fn a_second_source_flooding_the_same_victim_is_told_at_once() {
        // Source 9 floods UDP/53 of host 1 with a flow of 1,000 packets every 0.1 s; 2 s in,
        // source 8 joins with flows of the same size. Spoofed sources (one packet each) join
        // too: they tell nothing.
        let burst = |src: u8, port: u16, i: u64, pkts: u32| {
            let mut f = flow(PROTO_UDP, src, 1, port, i * 100_000, false);
            f.fwd.pkts = pkts;
            f
        };
        let mut flows: Vec<Flow> = (0..40).map(|i| burst(9, 53, i, 1000)).collect();
        flows.extend((20..40).map(|i| burst(100 + i as u8, 53, i, 1)));
        flows.extend((20..40).map(|i| burst(8, 5353, i, 1000)));
        flows.sort_by_key(|f| f.last);
        let out = run(&AlertConfig::default(), FLOOD, &flows);
        let named = |a: &Alert, src: u8| {
            let ip = ip(src).to_string();
            detail(a).evidence.top_sources.iter().any(|s| s.ip == ip)
        };
        let first = out.iter().find(|a| named(a, 8)).expect("source 8 named");
        assert!(
            detail(first).update >= 1 && !detail(first).last,
            "{first:?}"
        );
        // Packet time starts at 0 here: the records' times compare as strings.
        let at = &first.timestamp;
        assert!(
            *at >= eve_time(2_000_000) && *at < eve_time(3_000_000),
            "told at {at}, not at the next 10 s update"
        );
        assert!(out.iter().all(|a| !named(a, 120)), "a spoofed source named");
    }

    #[test]
    fn a_tcp_flood_names_no_client_of_a_download_or_two() {
        // Source 9 floods host 1:80 with a SYN a flow, 200 in a second; source 5, a client,
        // downloads from it in two connections of 4,500 packets each, which the model (by its
        // host's context) calls flood too: more packets than the flood's, two connections.
        let mut flows: Vec<Flow> = (0..200)
            .map(|i| flow(PROTO_TCP, 9, 1, 80, i * 5_000, false))
            .collect();
        for start in [100_000, 500_000] {
            let mut f = flow(PROTO_TCP, 5, 1, 80, start, true);
            (f.fwd.pkts, f.bwd.pkts) = (1500, 3000);
            f.last = start + 400_000;
            flows.push(f);
        }
        flows.sort_by_key(|f| f.last);
        let out = run(&AlertConfig::default(), FLOOD, &flows);
        assert!(!out.is_empty());
        for a in &out {
            let named: Vec<&str> = (detail(a).evidence.top_sources.iter())
                .map(|s| s.ip.as_str())
                .collect();
            assert_eq!(named, ["10.0.0.9"], "{a:?}");
        }
        // A source of as many connections as a flood needs is one of its sources.
        for i in 0..8u64 {
            let mut f = flow(PROTO_TCP, 5, 1, 80, 600_000 + i * 10_000, true);
            (f.fwd.pkts, f.bwd.pkts) = (1500, 3000);
            flows.push(f);
        }
        flows.sort_by_key(|f| f.last);
        let out = run(&AlertConfig::default(), FLOOD, &flows);
        let last = out.iter().find(|a| detail(a).last).expect("a final record");
        let named = |ip: &str| (detail(last).evidence.top_sources.iter()).any(|s| s.ip == ip);
        assert!(named("10.0.0.5") && named("10.0.0.9"), "{last:?}");
    }

    #[test]
    fn a_second_source_joining_a_slow_dos_is_told_at_once() {
        // Source 9 opens a held connection to host 1:80 every 0.05 s from 0 s (alerted at the
        // 16th); 2 s in, source 8 does the same.
        let held = |src: u8, i: u64| {
            let mut f = flow(PROTO_TCP, src, 1, 80, i * 50_000, false);
            f.established = true;
            f.synack_seen = true;
            f.fwd.pkts = 3;
            f.bwd.pkts = 1;
            f
        };
        let mut flows: Vec<Flow> = (0..200).map(|i| held(9, i)).collect();
        flows.extend((40..200).map(|i| held(8, i)));
        flows.sort_by_key(|f| f.last);
        let out = run(&AlertConfig::default(), SLOW, &flows);
        let names_8 =
            |a: &&Alert| (detail(a).evidence.top_sources.iter()).any(|s| s.ip == "10.0.0.8");
        let first = out.iter().find(names_8).expect("source 8 named");
        assert!(detail(first).update >= 1, "{first:?}");
        let at = &first.timestamp;
        assert!(
            *at >= eve_time(2_000_000) && *at < eve_time(3_500_000),
            "told at {at}, not at the next 10 s update"
        );
    }

    #[test]
    fn a_flood_is_what_its_victim_is_sent() {
        // 8 connections to one server within a second, called flood: 10 packets sent to it and
        // 200 back each (downloads it serves) are no flood of it; 200 sent and 10 back are.
        let flows = |sent: u32, back: u32| -> Vec<Flow> {
            (0..8u64)
                .map(|i| {
                    let mut f = flow(PROTO_TCP, 9, 1, 443, i * 100_000, true);
                    (f.fwd.pkts, f.bwd.pkts) = (sent, back);
                    f
                })
                .collect()
        };
        let cfg = AlertConfig::default();
        assert!(run(&cfg, FLOOD, &flows(10, 200)).is_empty());
        assert_eq!(
            incidents(&run(&cfg, FLOOD, &flows(200, 10))),
            [(
                "flood".to_string(),
                Some(ip(9).to_string()),
                Some(ip(1).to_string()),
                8
            )]
        );
    }

    #[test]
    fn one_udp_flow_can_flood_one_tcp_connection_cannot() {
        let one = |proto| {
            let mut f = flow(proto, 9, 1, 67, 0, proto == PROTO_TCP);
            f.fwd.pkts = 5000;
            f.last = 2_000_000;
            f
        };
        let out = run(&AlertConfig::default(), 3, &[one(PROTO_UDP)]);
        assert!(!out.is_empty());
        assert_eq!(detail(&out[0]).class, "flood");
        assert!(run(&AlertConfig::default(), 3, &[one(PROTO_TCP)]).is_empty());
    }

    #[test]
    fn a_long_flow_keeps_its_incident_open_between_its_evaluations() {
        let mut e = engine(&AlertConfig::default());
        let mut out = Vec::new();
        let score = Score {
            anomaly: 0.99,
            class: Some(3),
        };
        // A UDP flood in one flow: 5,000 packets in its first second, evaluated then...
        let mut f = flow(PROTO_UDP, 9, 1, 53, 0, false);
        f.fwd.pkts = 5000;
        f.last = 1_000_000;
        e.offer(f.last, &f, EvalReason::Early, score, 1.0, &mut out);
        // ... and next at its active timeout, 120 s on, 60,000 packets later: no evaluation
        // for 30 s, but its flow is open, so the incident has not gone quiet.
        f.fwd.pkts += 60_000;
        f.last = 121_000_000;
        e.offer(f.last, &f, EvalReason::Active, score, 1.0, &mut out);
        e.flush(&mut out);
        let alerts: Vec<(&str, u64, u64)> = out
            .iter()
            .map(|a| {
                let d = detail(a);
                (d.alert_id.as_str(), d.count, a.flow.pkts_toserver)
            })
            .collect();
        let ids: HashSet<&str> = alerts.iter().map(|a| a.0).collect();
        assert_eq!(ids.len(), 1, "one episode: {alerts:?}");
        // Raised at the first evaluation, updated with the packets sent since.
        assert_eq!(alerts.first().unwrap().2, 5_000, "{alerts:?}");
        assert_eq!(
            alerts.last().unwrap(),
            &(alerts[0].0, 1, 65_000),
            "{alerts:?}"
        );
    }

    #[test]
    fn a_full_table_closes_the_incident_quiet_for_longest() {
        let cfg = AlertConfig {
            max_incidents: 2,
            ..AlertConfig::default()
        };
        let probe = |src, port, at| flow(PROTO_TCP, src, 1, port, at, false);
        // 9 starts first and keeps probing; 8 probes once; then 7 needs room.
        let mut flows = vec![probe(9, 1000, 0), probe(8, 1000, 50_000)];
        flows.extend((1..6).map(|i| probe(9, 1000 + i, u64::from(i) * 100_000)));
        flows.push(probe(7, 1000, 600_000));
        flows.extend((6..10).map(|i| probe(9, 1000 + i, u64::from(i) * 100_000)));
        let out = run(&cfg, SCAN, &flows);
        let last = out.last().expect("9's scan is alerted");
        assert_eq!(last.src_ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(detail(last).count, 10, "9's incident kept all its probes");
    }
}
