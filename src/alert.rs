//! The alert record: an EVE `alert` event that Suricata's own EVE schema accepts.
//!
//! The fields every EVE consumer reads are where EVE has them: `timestamp` (with a numeric UTC
//! offset), `event_type`, `host` (the sensor), the attacker as `src_ip`/`alert.source`, the victim
//! as `dest_ip`/`alert.target`, `proto`, `alert.signature`/`category`/`severity`, and the flow
//! totals in `flow`. What only edgewatch has (the alert's id and update number, the behaviour
//! class, the model's score, the evidence in numbers) is one object, `alert.context.edgewatch`,
//! where EVE leaves room for a detector's own context. docs/alert-schema.json is the schema.
//! This module owns the record's layout; `incident` decides what goes in it.

use std::fmt::Write;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::packet::{LAST_RFC3339_TS, Micros, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// One alert, as written to JSON lines and MQTT (see docs/alert-schema.json).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    /// When the sensor made this record (packet time in replay), `...+0000`.
    pub timestamp: String,
    pub event_type: String,
    /// The sensor that saw it (`sensor_id`; EVE's name for the sensor).
    pub host: String,
    /// A flow the alert covers (the first one).
    pub flow_id: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub community_id: Option<String>,
    /// The attacker; omitted when many sources share the behaviour (a spoofed flood).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub src_port: Option<u16>,
    /// The victim; omitted when the attacker went for many hosts (a sweep).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dest_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dest_port: Option<u16>,
    pub proto: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub vlan: Vec<u16>,
    pub alert: AlertInfo,
    /// Totals over the flows the alert covers.
    pub flow: FlowInfo,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AlertInfo {
    /// Always "allowed": the sensor watches, it does not block.
    pub action: String,
    pub gid: u32,
    /// One per behaviour ([`signature_of`]).
    pub signature_id: u32,
    pub rev: u32,
    pub signature: String,
    pub category: String,
    /// 1 high to 3 low.
    pub severity: u8,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<Endpoint>,
    pub context: Context,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub ip: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub port: Option<u16>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Context {
    pub edgewatch: Detail,
}

/// edgewatch's own part of an alert.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Detail {
    pub sensor_id: String,
    /// Unique and stable (the same replay gives the same ids); an update keeps it.
    pub alert_id: String,
    /// 0 for the alert itself, then 1, 2, ... for its updates, each with the evidence so far.
    pub update: u32,
    /// True on the last record of an alert: the behaviour stopped, or the sensor did.
    #[serde(rename = "final")]
    pub last: bool,
    /// The behaviour: scan, flood, bruteforce, slowdos (or the model's class name).
    pub class: String,
    /// The highest anomaly score among the flows covered.
    pub score: f32,
    pub model: ModelRef,
    /// Flows covered so far.
    pub count: u64,
    /// First and last evaluation that took part.
    pub first_seen: String,
    pub last_seen: String,
    pub evidence: Evidence,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelRef {
    pub name: String,
    pub version: String,
}

/// What was counted, over `window_s` seconds of the flows' packets. Which numbers a record
/// carries depends on the behaviour (docs/alert-schema.json says which).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    pub window_s: f64,
    pub flows: u64,
    /// Scan: distinct (host, port) pairs probed, distinct hosts and ports, and the probes that
    /// were refused or got no answer. Counts of distinct values are estimates past about 1,000.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub targets: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hosts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ports: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unanswered: Option<u64>,
    /// Brute force: connections that completed and exchanged data (authentication attempts).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sessions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sessions_per_min: Option<f64>,
    /// Brute force: login attempts seen inside those sessions, each session's requests that
    /// the server answered alike in a row (an estimate: the exchanges before the first
    /// password are alike too).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub logins: Option<u64>,
    /// Slow DoS: connections held open, and how long and how slowly on average.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mean_duration_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mean_bytes_per_s: Option<f64>,
    /// Flood: packet and byte rates, and who sends.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub packets_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sources: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub top_sources: Vec<TopSource>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TopSource {
    pub ip: String,
    /// Packets counted for it (a lower bound past the few sources tracked).
    pub packets: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowInfo {
    pub pkts_toserver: u64,
    pub pkts_toclient: u64,
    pub bytes_toserver: u64,
    pub bytes_toclient: u64,
    /// The first packet of the first flow and the last packet of the last, `...+0000`.
    pub start: String,
    pub end: String,
}

/// An instant as EVE writes it: RFC 3339 with microseconds and a numeric UTC offset
/// (`2026-12-06T01:02:03.123456+0000`). RFC 3339 has four-digit years: a time after 9999-12-31
/// (a capture's clock can say anything) is written as that day's last microsecond.
pub fn eve_time(ts: Micros) -> String {
    let mut out = rfc3339(ts);
    if out.ends_with('Z') {
        out.pop();
        out.push_str("+0000");
    }
    out
}

/// RFC 3339 with microseconds, UTC (`...Z`), clamped like [`eve_time`].
pub fn rfc3339(ts: Micros) -> String {
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

/// Suricata-style category, severity, signature and signature id of a behaviour.
pub fn signature_of(class: &str) -> (&'static str, u8, &'static str, u32) {
    match class {
        "scan" => (
            "Detection of a Network Scan",
            2,
            "EDGEWATCH Network scan",
            9_100_001,
        ),
        "flood" | "dos" => (
            "Detection of a Denial of Service Attack",
            1,
            "EDGEWATCH Flood",
            9_100_002,
        ),
        "bruteforce" => (
            "Attempted User Privilege Gain",
            1,
            "EDGEWATCH Brute force",
            9_100_003,
        ),
        "slowdos" => (
            "Detection of a Denial of Service Attack",
            1,
            "EDGEWATCH Slow denial of service",
            9_100_004,
        ),
        _ => (
            "Potentially Bad Traffic",
            3,
            "EDGEWATCH Anomalous traffic",
            9_100_000,
        ),
    }
}

/// Community ID v1 of a flow (its two ends, protocol, and ICMP type and code), from the
/// initiator's point of view.
pub fn community_id(
    (initiator, initiator_port): (IpAddr, u16),
    (responder, responder_port): (IpAddr, u16),
    proto: u8,
    (icmp_type, icmp_code): (u8, u8),
) -> Option<String> {
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP => (Some(initiator_port), Some(responder_port)),
        PROTO_ICMP | PROTO_ICMPV6 => (Some(u16::from(icmp_type)), Some(u16::from(icmp_code))),
        _ => (None, None),
    };
    community_id::calculate_community_id(0, initiator, responder, sport, dport, proto, false).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_microseconds_and_a_numeric_offset() {
        assert_eq!(
            rfc3339(1_714_564_800_123_456),
            "2024-05-01T12:00:00.123456Z"
        );
        assert_eq!(
            eve_time(1_714_564_800_123_456),
            "2024-05-01T12:00:00.123456+0000"
        );
    }

    #[test]
    fn times_after_9999_are_written_as_its_last_microsecond() {
        assert_eq!(rfc3339(LAST_RFC3339_TS), "9999-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(LAST_RFC3339_TS - 1), "9999-12-31T23:59:59.999998Z");
        // nfstream's dhcp_*_endian.pcapng say the year 151991.
        for ts in [LAST_RFC3339_TS + 1, 4_733_000_000_000_000_000, u64::MAX] {
            assert_eq!(rfc3339(ts), "9999-12-31T23:59:59.999999Z");
            assert_eq!(eve_time(ts), "9999-12-31T23:59:59.999999+0000");
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
