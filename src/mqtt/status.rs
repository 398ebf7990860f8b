//! What the sensor says about itself on MQTT: the topics, the retained status and the stats.
//!
//! Plain data and serialization only; the publisher decides when each message goes out.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::alert::{ModelRef, rfc3339};
use crate::stats::Snapshot;

/// The three topics of one sensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    pub alert: String,
    pub status: String,
    pub stats: String,
}

impl Topics {
    pub fn new(prefix: &str, sensor_id: &str) -> Topics {
        let base = format!("{prefix}/{sensor_id}");
        Topics {
            alert: format!("{base}/alert"),
            status: format!("{base}/status"),
            stats: format!("{base}/stats"),
        }
    }
}

/// Who this sensor is, for the status message.
#[derive(Clone, Debug, Serialize)]
pub struct Identity {
    pub sensor_id: String,
    /// The edgewatch version.
    pub version: String,
    pub model: ModelRef,
    /// Interfaces captured on (empty for a replay).
    pub interfaces: Vec<String>,
    /// "run" or "replay".
    pub mode: String,
    /// When this process started (RFC 3339).
    pub started: String,
}

impl Identity {
    pub fn new(sensor_id: &str, model: ModelRef, interfaces: Vec<String>, mode: &str) -> Identity {
        Identity {
            sensor_id: sensor_id.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            model,
            interfaces,
            mode: mode.to_string(),
            started: now_rfc3339(),
        }
    }
}

/// The retained status message: "online" on connect, "offline" as the last will and on a clean
/// shutdown.
#[derive(Serialize)]
struct Status<'a> {
    status: &'a str,
    #[serde(flatten)]
    identity: &'a Identity,
}

pub fn status_payload(identity: &Identity, online: bool) -> Vec<u8> {
    let status = Status {
        status: if online { "online" } else { "offline" },
        identity,
    };
    serde_json::to_vec(&status).expect("a status serializes")
}

/// MQTT's own counters, reported with the pipeline's.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PublishCounters {
    /// Alerts the broker acknowledged.
    pub alerts_published: u64,
    /// Alerts dropped because the outbox was full or could not be written.
    pub alerts_outbox_dropped: u64,
    /// Alerts the broker refused in its PUBACK (MQTT 5 only: e.g. the ACL denies the topic).
    pub alerts_rejected: u64,
    /// Alerts waiting in the outbox (including those in flight).
    pub outbox_depth: u64,
    pub outbox_bytes: u64,
    /// Connections made to the broker since start.
    pub mqtt_connects: u64,
}

#[derive(Serialize)]
struct StatsMessage<'a> {
    timestamp: String,
    sensor_id: &'a str,
    uptime_s: u64,
    #[serde(flatten)]
    pipeline: &'a Snapshot,
    #[serde(flatten)]
    mqtt: PublishCounters,
}

pub fn stats_payload(
    sensor_id: &str,
    uptime_s: u64,
    pipeline: &Snapshot,
    mqtt: PublishCounters,
) -> Vec<u8> {
    let message = StatsMessage {
        timestamp: now_rfc3339(),
        sensor_id,
        uptime_s,
        pipeline,
        mqtt,
    };
    serde_json::to_vec(&message).expect("stats serialize")
}

fn now_rfc3339() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    rfc3339(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_what_the_collector_reads() {
        let id = Identity::new(
            "gw1",
            ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
            vec!["eth0".into()],
            "run",
        );
        let v: serde_json::Value = serde_json::from_slice(&status_payload(&id, true)).unwrap();
        assert_eq!(v["status"], "online");
        assert_eq!(v["sensor_id"], "gw1");
        assert_eq!(v["interfaces"][0], "eth0");
        assert_eq!(v["model"]["name"], "m");
        let v: serde_json::Value = serde_json::from_slice(&status_payload(&id, false)).unwrap();
        assert_eq!(v["status"], "offline");

        let snap = Snapshot {
            alerts_emitted: 7,
            ..Snapshot::default()
        };
        let mqtt = PublishCounters {
            alerts_published: 5,
            outbox_depth: 2,
            ..PublishCounters::default()
        };
        let v: serde_json::Value =
            serde_json::from_slice(&stats_payload("gw1", 9, &snap, mqtt)).unwrap();
        assert_eq!(v["alerts_emitted"], 7);
        assert_eq!(v["alerts_published"], 5);
        assert_eq!(v["outbox_depth"], 2);
        assert_eq!(v["uptime_s"], 9);
        assert!(v["skipped"].is_object());
    }

    #[test]
    fn topics() {
        let t = Topics::new("edgewatch/v1", "gw1");
        assert_eq!(t.alert, "edgewatch/v1/gw1/alert");
        assert_eq!(t.status, "edgewatch/v1/gw1/status");
        assert_eq!(t.stats, "edgewatch/v1/gw1/stats");
    }
}
