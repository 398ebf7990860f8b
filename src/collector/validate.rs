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
    /// Not JSON, not the schema, a topic that is not `<prefix>/<id>/alert|status|stats`, or
    /// (the JSON pointer of) an alert field whose value cannot be stored.
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
                    Ok(row) if row.sensor_id == sensor => Message::Alert(row),
                    Ok(_) => Message::Invalid("sensor_id differs from the topic"),
                    Err(field) => Message::Invalid(field),
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
                            .saturating_add(n("queue_drops").unwrap_or(0))
                            .saturating_add(n("shed_syns").unwrap_or(0)),
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

/// Microseconds since the Unix epoch of an RFC 3339 UTC time: "2024-05-01T12:00:00.000001Z",
/// or with the offset written `+0000` (as EVE does) or `+00:00`.
pub fn parse_time_us(text: &str) -> Option<i64> {
    let utc = ["Z", "+0000", "+00:00"]
        .iter()
        .find_map(|suffix| text.strip_suffix(suffix))
        .unwrap_or(text);
    let t = humantime::parse_rfc3339_weak(utc).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_micros()).ok()
}

/// The JSON pointer of one of edgewatch's own fields in an alert (`alert.context.edgewatch`).
macro_rules! ew {
    ($field:literal) => {
        concat!("/alert/context/edgewatch/", $field)
    };
}

/// Why a schema-valid alert has no columns: the JSON pointer of the field that does not fit
/// (a time the pattern admits but the calendar does not, a number beyond i64).
type Field = &'static str;

fn text(v: &Value, pointer: Field) -> Result<String, Field> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(pointer)
}

/// An optional string: absent is None, present must be a string.
fn optional_text(v: &Value, pointer: Field) -> Result<Option<String>, Field> {
    v.pointer(pointer).map(|_| text(v, pointer)).transpose()
}

fn int(v: &Value, pointer: Field) -> Result<i64, Field> {
    v.pointer(pointer).and_then(Value::as_i64).ok_or(pointer)
}

fn optional_int(v: &Value, pointer: Field) -> Result<Option<i64>, Field> {
    v.pointer(pointer).map(|_| int(v, pointer)).transpose()
}

fn number(v: &Value, pointer: Field) -> Result<f64, Field> {
    v.pointer(pointer).and_then(Value::as_f64).ok_or(pointer)
}

fn boolean(v: &Value, pointer: Field) -> Result<bool, Field> {
    v.pointer(pointer).and_then(Value::as_bool).ok_or(pointer)
}

fn time_us(v: &Value, pointer: Field) -> Result<i64, Field> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(parse_time_us)
        .ok_or(pointer)
}

/// The columns of a schema-valid alert (docs/alert-schema.json): the attacker and victim at the
/// top level (either may be absent), the rest in `alert` and `alert.context.edgewatch`.
fn alert_row(v: &Value, body: &str, received_us: i64) -> Result<AlertRow, Field> {
    Ok(AlertRow {
        alert_id: text(v, ew!("alert_id"))?,
        update: int(v, ew!("update"))?,
        is_final: boolean(v, ew!("final"))?,
        ts_us: time_us(v, "/timestamp")?,
        received_us,
        sensor_id: text(v, ew!("sensor_id"))?,
        category: text(v, "/alert/category")?,
        signature: text(v, "/alert/signature")?,
        class: text(v, ew!("class"))?,
        severity: int(v, "/alert/severity")?,
        score: number(v, ew!("score"))?,
        src_ip: optional_text(v, "/src_ip")?,
        src_port: optional_int(v, "/src_port")?,
        dest_ip: optional_text(v, "/dest_ip")?,
        dest_port: optional_int(v, "/dest_port")?,
        proto: text(v, "/proto")?,
        count: int(v, ew!("count"))?,
        first_us: time_us(v, ew!("first_seen"))?,
        last_us: time_us(v, ew!("last_seen"))?,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `edgewatch replay tests/data/lab-mini.pcap` with sensor_id "r1": the last
    /// record (update 1, final) of the SYN flood.
    const ALERT: &str = r#"{"timestamp":"2026-11-23T20:54:53.852193+0000","event_type":"alert","host":"r1","flow_id":5742114205574508,"src_ip":"10.77.0.66","dest_ip":"10.77.0.10","dest_port":22,"proto":"TCP","alert":{"action":"allowed","gid":1,"signature_id":9100002,"rev":1,"signature":"EDGEWATCH Flood","category":"Detection of a Denial of Service Attack","severity":1,"source":{"ip":"10.77.0.66"},"target":{"ip":"10.77.0.10","port":22},"context":{"edgewatch":{"sensor_id":"r1","alert_id":"05046746423150033f1811004f45ada9","update":1,"final":true,"class":"flood","score":1.0,"model":{"name":"edgewatch-mlp","version":"mlp-6.1-int8"},"count":1492,"first_seen":"2026-11-23T20:54:52.979544+0000","last_seen":"2026-11-23T20:54:53.852193+0000","evidence":{"window_s":0.873,"flows":1492,"packets_per_s":4476.0,"bytes_per_s":208880.0,"sources":1,"top_sources":[{"ip":"10.77.0.66","packets":4476}]}}}},"flow":{"pkts_toserver":2984,"pkts_toclient":1492,"bytes_toserver":143232,"bytes_toclient":65648,"start":"2026-11-23T20:54:52.979522+0000","end":"2026-11-23T20:54:53.852193+0000"}}"#;

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
        assert_eq!(row.ts_us, 1_795_467_293_852_193);
        assert_eq!(
            (row.first_us, row.last_us),
            (1_795_467_292_979_544, 1_795_467_293_852_193)
        );
        assert_eq!(row.alert_id, "05046746423150033f1811004f45ada9");
        assert_eq!(
            (row.update, row.is_final, row.class.as_str(), row.count),
            (1, true, "flood", 1492)
        );
        assert_eq!(
            (row.src_ip.as_deref(), row.src_port, row.dest_ip.as_deref()),
            (Some("10.77.0.66"), None, Some("10.77.0.10"))
        );
        assert_eq!(
            (row.dest_port, row.severity, row.score, row.body.as_str()),
            (Some(22), 1, 1.0, ALERT)
        );
        // A flood from many sources names no attacker.
        let many = ALERT
            .replace(r#""src_ip":"10.77.0.66","#, "")
            .replace(r#""source":{"ip":"10.77.0.66"},"#, "");
        match v.classify(
            "edgewatch/v1",
            "edgewatch/v1/r1/alert",
            many.as_bytes(),
            65536,
            5,
        ) {
            Message::Alert(row) => assert_eq!(row.src_ip, None),
            other => panic!("{other:?}"),
        }
        // The pattern admits a 13th month; the columns do not.
        let month = ALERT.replace("2026-11-23T20:54:52.979544", "2026-13-23T20:54:52.979544");
        assert_eq!(
            v.classify(
                "edgewatch/v1",
                "edgewatch/v1/r1/alert",
                month.as_bytes(),
                65536,
                5
            ),
            Message::Invalid("/alert/context/edgewatch/first_seen")
        );
        // A record of the version 1 layout is refused.
        let v1 = ALERT.replace(r#""host":"r1","#, r#""sensor_id":"r1","#);
        assert_eq!(
            v.classify(
                "edgewatch/v1",
                "edgewatch/v1/r1/alert",
                v1.as_bytes(),
                65536,
                5
            ),
            Message::Invalid("schema")
        );
        let wrong = ALERT.replace("\"severity\":1", "\"severity\":9");
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
