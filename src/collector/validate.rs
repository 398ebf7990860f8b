//! Which message is which, and whether an alert is one: the topic names the sensor and the kind,
//! the payload must be JSON and an alert must match docs/alert-schema.json (embedded, so the
//! collector checks exactly what the tests and the docs say).
//!
//! Pure functions over bytes; nothing here touches the database or the network.

use serde_json::Value;

use super::store::{AlertRow, SensorUpdate};

const SCHEMA: &str = include_str!("../../docs/alert-schema.json");

/// What a message turned out to be. Short-lived, one at a time: the large variant is fine.
#[derive(Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Message {
    Alert(AlertRow),
    Sensor(SensorUpdate),
    Oversized,
    /// Not JSON, not the schema, or a topic that is not `<prefix>/<id>/alert|status|stats`.
    Invalid(&'static str),
}

pub struct Validator {
    schema: jsonschema::Validator,
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    pub fn new() -> Validator {
        let schema: Value = serde_json::from_str(SCHEMA).expect("the embedded schema is JSON");
        Validator {
            schema: jsonschema::validator_for(&schema).expect("the embedded schema compiles"),
        }
    }

    /// Classifies one MQTT message. `prefix` is `mqtt.topic_prefix`, `received_us` the
    /// collector's clock.
    pub fn classify(
        &self,
        prefix: &str,
        topic: &str,
        payload: &[u8],
        max_payload: usize,
        received_us: i64,
    ) -> Message {
        let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
            return Message::Invalid("topic");
        };
        let Some((sensor, kind)) = rest.split_once('/') else {
            return Message::Invalid("topic");
        };
        if sensor.is_empty() || !matches!(kind, "alert" | "status" | "stats") {
            return Message::Invalid("topic");
        }
        if payload.len() > max_payload {
            return Message::Oversized;
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            return Message::Invalid("utf-8");
        };
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return Message::Invalid("json");
        };
        match kind {
            "alert" => {
                if !self.schema.is_valid(&value) {
                    return Message::Invalid("schema");
                }
                match alert_row(&value, text, received_us) {
                    Some(row) if row.sensor_id == sensor => Message::Alert(row),
                    Some(_) => Message::Invalid("sensor_id differs from the topic"),
                    None => Message::Invalid("schema"),
                }
            }
            _ => {
                let Some(obj) = value.as_object() else {
                    return Message::Invalid("json");
                };
                let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
                // A counter beyond i64 (the database's integer) is stored as i64::MAX.
                let n = |k: &str| {
                    obj.get(k)
                        .and_then(Value::as_u64)
                        .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                };
                Message::Sensor(if kind == "status" {
                    SensorUpdate::Status {
                        sensor_id: sensor.to_string(),
                        online: s("status").as_deref() == Some("online"),
                        version: s("version").unwrap_or_default(),
                        model: obj
                            .get("model")
                            .map(|m| {
                                format!(
                                    "{} {}",
                                    m.get("name").and_then(Value::as_str).unwrap_or(""),
                                    m.get("version").and_then(Value::as_str).unwrap_or("")
                                )
                                .trim()
                                .to_string()
                            })
                            .unwrap_or_default(),
                        mode: s("mode").unwrap_or_default(),
                        started: s("started").unwrap_or_default(),
                        at_us: received_us,
                    }
                } else {
                    SensorUpdate::Stats {
                        sensor_id: sensor.to_string(),
                        packets: n("packets").unwrap_or(0),
                        drops: n("kernel_drops")
                            .unwrap_or(0)
                            .saturating_add(n("queue_drops").unwrap_or(0)),
                        outbox_depth: n("outbox_depth").unwrap_or(0),
                        alerts_published: n("alerts_published").unwrap_or(0),
                        uptime_s: n("uptime_s").unwrap_or(0),
                        body: text.to_string(),
                        at_us: received_us,
                    }
                })
            }
        }
    }
}

/// Microseconds since the Unix epoch of an RFC 3339 time ("2024-05-01T12:00:00.000001Z").
pub fn parse_time_us(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(text.trim_end_matches('Z')).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_micros()).ok()
}

/// The columns of a schema-valid alert.
fn alert_row(v: &Value, body: &str, received_us: i64) -> Option<AlertRow> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let port = |k: &str| v.get(k).and_then(Value::as_i64);
    let alert = v.get("alert")?;
    Some(AlertRow {
        alert_id: s("alert_id")?,
        ts_us: parse_time_us(v.get("timestamp")?.as_str()?)?,
        received_us,
        sensor_id: s("sensor_id")?,
        category: alert.get("category")?.as_str()?.to_string(),
        signature: alert.get("signature")?.as_str()?.to_string(),
        severity: alert.get("severity")?.as_i64()?,
        score: alert.get("score")?.as_f64()?,
        src_ip: s("src_ip")?,
        src_port: port("src_port"),
        dest_ip: s("dest_ip")?,
        dest_port: port("dest_port"),
        proto: s("proto")?,
        count: v.get("count")?.as_i64()?,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALERT: &str = r#"{"timestamp":"2024-05-01T12:00:00.000001Z","event_type":"alert","sensor_id":"r1","alert_id":"0123456789abcdef0123456789abcdef","flow_id":7,"src_ip":"10.0.0.1","src_port":1234,"dest_ip":"10.0.0.2","dest_port":80,"proto":"TCP","alert":{"category":"scan","signature":"edgewatch anomaly: scan","severity":2,"score":0.9,"model":{"name":"m","version":"1"}},"flow":{"pkts_toserver":1,"pkts_toclient":0,"bytes_toserver":60,"bytes_toclient":0,"start":"a","end":"b"},"count":1}"#;

    #[test]
    fn alerts_are_checked_against_the_schema_and_the_topic() {
        let v = Validator::new();
        let Message::Alert(row) = v.classify(
            "edgewatch/v1",
            "edgewatch/v1/r1/alert",
            ALERT.as_bytes(),
            65536,
            5,
        ) else {
            panic!("a valid alert");
        };
        assert_eq!(row.ts_us, 1_714_564_800_000_001);
        assert_eq!(
            (row.src_port, row.severity, row.body.as_str()),
            (Some(1234), 2, ALERT)
        );
        let wrong = ALERT.replace("\"severity\":2", "\"severity\":9");
        assert_eq!(
            v.classify(
                "edgewatch/v1",
                "edgewatch/v1/r1/alert",
                wrong.as_bytes(),
                65536,
                5
            ),
            Message::Invalid("schema")
        );
        assert!(matches!(
            v.classify(
                "edgewatch/v1",
                "edgewatch/v1/r2/alert",
                ALERT.as_bytes(),
                65536,
                5
            ),
            Message::Invalid(_)
        ));
        assert_eq!(
            v.classify(
                "edgewatch/v1",
                "edgewatch/v1/r1/alert",
                b"{not json",
                65536,
                5
            ),
            Message::Invalid("json")
        );
        assert_eq!(
            v.classify(
                "edgewatch/v1",
                "edgewatch/v1/r1/alert",
                ALERT.as_bytes(),
                100,
                5
            ),
            Message::Oversized
        );
        assert_eq!(
            v.classify("edgewatch/v1", "other/r1/alert", ALERT.as_bytes(), 65536, 5),
            Message::Invalid("topic")
        );
    }

    #[test]
    fn stats_and_status_update_the_sensor() {
        let v = Validator::new();
        let stats = br#"{"sensor_id":"r1","packets":10,"kernel_drops":1,"queue_drops":2,"outbox_depth":3,"uptime_s":4}"#;
        match v.classify("p", "p/r1/stats", stats, 65536, 9) {
            Message::Sensor(SensorUpdate::Stats {
                packets,
                drops,
                outbox_depth,
                ..
            }) => {
                assert_eq!((packets, drops, outbox_depth), (10, 3, 3))
            }
            other => panic!("{other:?}"),
        }
        // Counters beyond i64 saturate: they neither wrap negative nor overflow in the sum.
        let huge = br#"{"packets":18446744073709551615,"kernel_drops":9223372036854775807,"queue_drops":9223372036854775807}"#;
        match v.classify("p", "p/r1/stats", huge, 65536, 9) {
            Message::Sensor(SensorUpdate::Stats { packets, drops, .. }) => {
                assert_eq!((packets, drops), (i64::MAX, i64::MAX))
            }
            other => panic!("{other:?}"),
        }
        let status = br#"{"status":"online","version":"0.1.0","model":{"name":"m","version":"2"}}"#;
        match v.classify("p", "p/r1/status", status, 65536, 9) {
            Message::Sensor(SensorUpdate::Status { online, model, .. }) => {
                assert!(online);
                assert_eq!(model, "m 2");
            }
            other => panic!("{other:?}"),
        }
    }
}
