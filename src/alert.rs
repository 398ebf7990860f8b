//! Alerts: the EVE-compatible record, and the engine that turns scored flows into alerts.
//!
//! The engine applies the threshold, merges alerts for the same (source, destination, protocol,
//! class) within `alert_window_s` into one alert with a `count` (the first one goes out at once, the rest
//! of each window when the window ends, for as long as the activity goes on), and enforces a
//! global rate limit. It runs on packet time, so replay output does not depend on the wall clock.
//! It formats records; writing them is the sinks' job.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::AlertConfig;
use crate::fasthash::FastMap;
use crate::flow::{EvalReason, Flow};
use crate::model::{ModelInfo, Score};
use crate::packet::{
    LAST_RFC3339_TS, Micros, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, proto_name,
};

/// One alert, as written to JSON lines and MQTT (see docs/alert-schema.json).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    pub timestamp: String,
    pub event_type: String,
    pub sensor_id: String,
    pub alert_id: String,
    pub flow_id: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub community_id: Option<String>,
    pub src_ip: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub src_port: Option<u16>,
    pub dest_ip: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dest_port: Option<u16>,
    pub proto: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub vlan: Vec<u16>,
    pub alert: AlertInfo,
    pub flow: FlowInfo,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertInfo {
    pub category: String,
    pub signature: String,
    pub severity: u8,
    pub score: f32,
    pub model: ModelRef,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowInfo {
    pub pkts_toserver: u64,
    pub pkts_toclient: u64,
    pub bytes_toserver: u64,
    pub bytes_toclient: u64,
    pub start: String,
    pub end: String,
}

/// RFC 3339 with microseconds, UTC. RFC 3339 has four-digit years: a time after 9999-12-31 (a
/// capture's clock can say anything) is written as that day's last microsecond.
pub fn rfc3339(ts: Micros) -> String {
    use std::fmt::Write;
    let ts = ts.min(LAST_RFC3339_TS);
    let mut out = String::with_capacity(27);
    match write!(
        out,
        "{}",
        humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(ts))
    ) {
        Ok(()) => out,
        Err(_) => "9999-12-31T23:59:59.999999Z".to_string(),
    }
}

/// Suricata-style category and severity of a model class.
fn category_of(class: &str) -> (&'static str, u8) {
    match class {
        "scan" => ("Detection of a Network Scan", 2),
        "flood" | "dos" | "slowdos" => ("Detection of a Denial of Service Attack", 1),
        "bruteforce" => ("Attempted User Privilege Gain", 1),
        _ => ("Potentially Bad Traffic", 3),
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertCounters {
    pub flows_above_threshold: u64,
    pub alerts_emitted: u64,
    /// Alerts not emitted because of `max_alerts_per_s`.
    pub alerts_suppressed: u64,
    /// Flows merged into an aggregated alert rather than alerted on their own.
    pub flows_aggregated: u64,
}

/// Source, destination, protocol and class. The protocol is part of it because an alert record
/// has one `proto`: a TCP flood next to a UDP flood between the same hosts is two alerts.
type GroupKey = (IpAddr, IpAddr, u8, usize);

/// The open window of one (source, destination, protocol, class).
struct Group {
    window_end: Micros,
    /// Boxed: most windows under a flood never gather a second flow.
    pending: Option<Box<Pending>>,
}

/// What a window has gathered since its last alert.
struct Pending {
    first: Flow,
    score: f32,
    count: u64,
    pkts: [u64; 2],
    bytes: [u64; 2],
    start: Micros,
    end: Micros,
    /// The evaluation that opened this batch: the alert's `timestamp`.
    first_ts: Micros,
    /// The latest evaluation gathered: when the alert is due (rate limit, id).
    last_ts: Micros,
    src_port_varies: bool,
    dest_port_varies: bool,
}

impl Pending {
    fn new(ts: Micros, flow: &Flow, score: f32) -> Pending {
        Pending {
            first: *flow,
            score,
            count: 1,
            pkts: [u64::from(flow.fwd.pkts), u64::from(flow.bwd.pkts)],
            bytes: [flow.fwd.bytes, flow.bwd.bytes],
            start: flow.start,
            end: flow.last,
            first_ts: ts,
            last_ts: ts,
            src_port_varies: false,
            dest_port_varies: false,
        }
    }

    fn add(&mut self, ts: Micros, flow: &Flow, score: f32) {
        self.count += 1;
        self.score = self.score.max(score);
        self.pkts[0] += u64::from(flow.fwd.pkts);
        self.pkts[1] += u64::from(flow.bwd.pkts);
        self.bytes[0] += flow.fwd.bytes;
        self.bytes[1] += flow.bwd.bytes;
        self.start = self.start.min(flow.start);
        self.end = self.end.max(flow.last);
        self.first_ts = self.first_ts.min(ts);
        self.last_ts = self.last_ts.max(ts);
        self.src_port_varies |= flow.initiator_port != self.first.initiator_port;
        self.dest_port_varies |= flow.responder_port != self.first.responder_port;
    }
}

pub struct AlertEngine {
    sensor_id: String,
    model: ModelRef,
    classes: Vec<String>,
    threshold: f32,
    window: Micros,
    groups: FastMap<GroupKey, Group>,
    deadlines: BinaryHeap<Reverse<(Micros, GroupKey)>>,
    /// Flows already counted in a window (flow uid -> that window's end), so a flow evaluated
    /// twice in one window counts once.
    counted: FastMap<u64, Micros>,
    max_tracked: usize,
    tokens: f64,
    rate: f64,
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
            sensor_id,
            model: ModelRef {
                name: String::new(),
                version: String::new(),
            },
            classes: Vec::new(),
            threshold,
            window: 1,
            groups: FastMap::default(),
            deadlines: BinaryHeap::new(),
            counted: FastMap::default(),
            max_tracked: 1,
            // A full bucket to start with.
            tokens: cfg.max_alerts_per_s,
            rate: cfg.max_alerts_per_s,
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
        self.threshold = threshold;
        self.window = ((cfg.alert_window_s * 1e6) as Micros).max(1);
        self.max_tracked = cfg.max_windows.max(1);
        self.rate = cfg.max_alerts_per_s;
        self.tokens = self.tokens.min(self.rate.max(1.0));
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Offers one scored evaluation made at `ts`.
    pub fn offer(
        &mut self,
        ts: Micros,
        flow: &Flow,
        reason: EvalReason,
        score: Score,
        out: &mut Vec<Alert>,
    ) {
        self.advance(ts, out);
        if reason.is_final() {
            self.counted.remove(&flow.uid);
        }
        if score.anomaly < self.threshold {
            return;
        }
        self.counters.flows_above_threshold += 1;
        let class = score.class.unwrap_or(usize::MAX);
        let key = (flow.initiator, flow.responder, flow.key.proto, class);
        match self.groups.get_mut(&key) {
            None => {
                let window_end = ts + self.window;
                if self.groups.len() < self.max_tracked {
                    self.groups.insert(
                        key,
                        Group {
                            window_end,
                            pending: None,
                        },
                    );
                    self.deadlines.push(Reverse((window_end, key)));
                    if !reason.is_final() && self.counted.len() < self.max_tracked {
                        self.counted.insert(flow.uid, window_end);
                    }
                }
                let p = Pending::new(ts, flow, score.anomaly);
                self.emit(&p, class, out);
            }
            Some(group) => {
                if self.counted.get(&flow.uid) == Some(&group.window_end) {
                    return;
                }
                if !reason.is_final() && self.counted.len() < self.max_tracked {
                    self.counted.insert(flow.uid, group.window_end);
                }
                self.counters.flows_aggregated += 1;
                match &mut group.pending {
                    Some(p) => p.add(ts, flow, score.anomaly),
                    None => group.pending = Some(Box::new(Pending::new(ts, flow, score.anomaly))),
                }
            }
        }
    }

    /// Closes the windows that ended at or before `now`, emitting what they gathered.
    pub fn advance(&mut self, now: Micros, out: &mut Vec<Alert>) {
        while let Some(&Reverse((end, key))) = self.deadlines.peek() {
            if end > now {
                break;
            }
            self.deadlines.pop();
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            match group.pending.take() {
                Some(p) => {
                    // Activity went on: alert and open the next window.
                    group.window_end = end + self.window;
                    self.deadlines.push(Reverse((group.window_end, key)));
                    self.emit(&p, key.3, out);
                }
                None => {
                    self.groups.remove(&key);
                }
            }
        }
    }

    /// Emits every pending window (end of input or shutdown).
    pub fn flush(&mut self, out: &mut Vec<Alert>) {
        self.advance(Micros::MAX, out);
        self.groups.clear();
        self.counted.clear();
    }

    fn emit(&mut self, p: &Pending, class: usize, out: &mut Vec<Alert>) {
        // Token bucket on packet time.
        let now = p.last_ts;
        if now > self.last_refill {
            let elapsed = (now - self.last_refill) as f64 / 1e6;
            self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
            self.last_refill = now;
        }
        if self.tokens < 1.0 {
            self.counters.alerts_suppressed += 1;
            return;
        }
        self.tokens -= 1.0;
        self.counters.alerts_emitted += 1;
        out.push(self.record(p, class));
    }

    fn record(&self, p: &Pending, class: usize) -> Alert {
        let f = &p.first;
        let class_name = self.classes.get(class).map_or("anomaly", String::as_str);
        let (category, severity) = category_of(class_name);
        let has_ports = matches!(f.key.proto, PROTO_TCP | PROTO_UDP);
        let ports_vary = p.src_port_varies || p.dest_port_varies;
        let community_id = (!ports_vary).then(|| community_id(f)).flatten();
        let mut id_input = Vec::with_capacity(64);
        id_input.extend_from_slice(self.sensor_id.as_bytes());
        id_input.extend_from_slice(&f.uid.to_le_bytes());
        id_input.extend_from_slice(&(class as u64).to_le_bytes());
        id_input.extend_from_slice(&p.last_ts.to_le_bytes());
        id_input.extend_from_slice(&p.count.to_le_bytes());
        let alert_id = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&id_input));
        let mut vlan: Vec<u16> = f.key.vlan.iter().copied().filter(|&v| v != 0).collect();
        vlan.truncate(2);
        Alert {
            timestamp: rfc3339(p.first_ts),
            event_type: "alert".to_string(),
            sensor_id: self.sensor_id.clone(),
            alert_id,
            flow_id: f.uid & ((1 << 53) - 1),
            community_id,
            src_ip: f.initiator.to_string(),
            src_port: (has_ports && !p.src_port_varies).then_some(f.initiator_port),
            dest_ip: f.responder.to_string(),
            dest_port: (has_ports && !p.dest_port_varies).then_some(f.responder_port),
            proto: proto_name(f.key.proto).to_string(),
            vlan,
            alert: AlertInfo {
                category: category.to_string(),
                signature: format!("EDGEWATCH anomalous traffic: {class_name}"),
                severity,
                score: (p.score * 10_000.0).round() / 10_000.0,
                model: self.model.clone(),
            },
            flow: FlowInfo {
                pkts_toserver: p.pkts[0],
                pkts_toclient: p.pkts[1],
                bytes_toserver: p.bytes[0],
                bytes_toclient: p.bytes[1],
                start: rfc3339(p.start),
                end: rfc3339(p.end),
            },
            count: p.count,
        }
    }
}

/// Community ID v1 of a flow, from the initiator's point of view.
pub fn community_id(f: &Flow) -> Option<String> {
    let (sport, dport) = match f.key.proto {
        PROTO_TCP | PROTO_UDP => (Some(f.initiator_port), Some(f.responder_port)),
        PROTO_ICMP | PROTO_ICMPV6 => (Some(u16::from(f.icmp_type)), Some(u16::from(f.icmp_code))),
        _ => (None, None),
    };
    community_id::calculate_community_id(
        0,
        f.initiator,
        f.responder,
        sport,
        dport,
        f.key.proto,
        false,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{PacketKind, PacketMeta};

    /// A model with two classes, scan and flood.
    fn test_model() -> ModelInfo {
        ModelInfo {
            origin: "test".into(),
            name: "m".into(),
            version: "1".into(),
            schema: String::new(),
            classes: vec!["scan".into(), "flood".into()],
            threshold: 0.5,
        }
    }

    /// A flood's packet to 192.0.2.1:80: a TCP SYN, or a UDP datagram.
    fn flood_packet(ts: Micros, seq: u64, src: IpAddr, sport: u16, proto: u8) -> PacketMeta {
        PacketMeta {
            ts,
            seq,
            vlan: [0; 2],
            src,
            dst: IpAddr::from([192, 0, 2, 1]),
            sport,
            dport: 80,
            proto,
            ip_len: 40,
            payload_len: 0,
            tcp_flags: if proto == PROTO_TCP {
                crate::packet::tcp_flags::SYN
            } else {
                0
            },
            tcp_window: 1024,
            ttl: 64,
            icmp_type: 0,
            icmp_code: 0,
            kind: PacketKind::Normal,
            fragment: None,
        }
    }

    #[test]
    fn open_windows_are_bounded_and_sources_past_the_bound_still_alert() {
        use crate::flow::{FlowEvent, FlowTable};
        let mut cfg = crate::config::Config::default();
        cfg.alert.max_windows = 4;
        cfg.alert.max_alerts_per_s = 1000.0;
        let mut engine = AlertEngine::new(&cfg.alert, "s".into(), &test_model(), 0.5);
        // One SYN each from 10 sources (a random-source flood), scored as floods.
        let mut table = FlowTable::new(&cfg.flow, 64);
        let mut events = Vec::new();
        for i in 0..10u8 {
            let p = flood_packet(
                1_000_000 + u64::from(i),
                u64::from(i),
                IpAddr::from([198, 51, 100, i]),
                40000,
                PROTO_TCP,
            );
            table.process(&p, &mut events);
        }
        let flood = Score {
            anomaly: 0.9,
            class: Some(1),
        };
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            if let FlowEvent::Start { flow, .. } = e {
                engine.offer(
                    1_000_100 + i as u64,
                    flow,
                    EvalReason::Probe,
                    flood,
                    &mut out,
                );
                assert!(engine.groups.len() <= 4, "windows bounded");
            }
        }
        assert_eq!(engine.groups.len(), 4);
        // Every source alerted: 4 opened a window, 6 went past the bound without one.
        assert_eq!(out.len(), 10);
        assert_eq!(engine.counters.alerts_emitted, 10);
        // The same source again within its window is merged, not alerted again.
        if let FlowEvent::Start { flow, .. } = &events[0] {
            engine.offer(1_000_200, flow, EvalReason::Idle, flood, &mut out);
        }
        assert_eq!(out.len(), 10);
        assert_eq!(engine.counters.flows_aggregated, 1);
    }

    #[test]
    fn flows_of_two_protocols_between_the_same_hosts_are_two_alerts() {
        use crate::flow::{FlowEvent, FlowTable};
        let cfg = crate::config::Config::default();
        let mut engine = AlertEngine::new(&cfg.alert, "s".into(), &test_model(), 0.5);
        // One attacker floods one server with TCP SYNs and UDP datagrams at once, from new
        // source ports: every packet a flow, every flow scored as a flood.
        let mut table = FlowTable::new(&cfg.flow, 1024);
        let mut events = Vec::new();
        for i in 0..40u16 {
            let proto = if i % 2 == 0 { PROTO_TCP } else { PROTO_UDP };
            let p = flood_packet(
                1_000_000 + u64::from(i) * 1000,
                u64::from(i),
                IpAddr::from([198, 51, 100, 7]),
                40000 + i,
                proto,
            );
            table.process(&p, &mut events);
        }
        let flood = Score {
            anomaly: 0.9,
            class: Some(1),
        };
        let mut out = Vec::new();
        for e in &events {
            if let FlowEvent::Start { order, flow } = e {
                engine.offer(order.ts, flow, EvalReason::Probe, flood, &mut out);
            }
        }
        engine.flush(&mut out);
        let of = |proto: &str| -> Vec<u64> {
            out.iter()
                .filter(|a| a.proto == proto)
                .map(|a| a.count)
                .collect()
        };
        // Per protocol: the first flow at once, the other 19 in one merged alert.
        assert_eq!(of("TCP"), [1, 19], "{out:#?}");
        assert_eq!(of("UDP"), [1, 19], "{out:#?}");
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn rfc3339_has_microseconds() {
        assert_eq!(
            rfc3339(1_714_564_800_123_456),
            "2024-05-01T12:00:00.123456Z"
        );
    }

    #[test]
    fn rfc3339_writes_times_after_9999_as_its_last_microsecond() {
        assert_eq!(rfc3339(LAST_RFC3339_TS), "9999-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(LAST_RFC3339_TS - 1), "9999-12-31T23:59:59.999998Z");
        // nfstream's dhcp_*_endian.pcapng say the year 151991.
        for ts in [LAST_RFC3339_TS + 1, 4_733_000_000_000_000_000, u64::MAX] {
            assert_eq!(rfc3339(ts), "9999-12-31T23:59:59.999999Z");
        }
    }

    #[test]
    fn community_id_matches_the_spec_example() {
        // From the Community ID spec's baseline: TCP 128.232.110.120:34855 -> 66.35.250.204:80.
        let id = community_id::calculate_community_id(
            0,
            "128.232.110.120".parse().unwrap(),
            "66.35.250.204".parse().unwrap(),
            Some(34855),
            Some(80),
            6,
            false,
        )
        .unwrap();
        assert_eq!(id, "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
    }
}
