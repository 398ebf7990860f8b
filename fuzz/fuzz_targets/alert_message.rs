//! The collector's decoding of an MQTT message (`Validator::classify`: topic, JSON, the alert
//! schema, the stored columns) on arbitrary payloads.
//!
//! Input: byte 0 picks the topic (alert, status, stats, or the bytes up to the first newline as
//! the topic itself), the rest is the payload.
#![no_main]

use std::sync::OnceLock;

use edgewatch::collector::store::SensorUpdate;
use edgewatch::collector::validate::{Message, Validator};
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "edgewatch/v1";
const MAX_PAYLOAD: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    let validator = VALIDATOR.get_or_init(Validator::new);
    let [pick, rest @ ..] = data else {
        return;
    };
    let (topic, payload) = match pick % 4 {
        0 => ("edgewatch/v1/r1/alert".to_string(), rest),
        1 => ("edgewatch/v1/r1/status".to_string(), rest),
        2 => ("edgewatch/v1/r1/stats".to_string(), rest),
        _ => {
            let at = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let topic = String::from_utf8_lossy(&rest[..at]).into_owned();
            (topic, rest.get(at + 1..).unwrap_or(&[]))
        }
    };
    match validator.classify(PREFIX, &topic, payload, MAX_PAYLOAD, 42) {
        Message::Alert(row) => {
            assert_eq!(row.body.as_bytes(), payload);
            assert!(topic.ends_with("/alert"));
            assert!((1..=3).contains(&row.severity), "{row:?}");
            assert_eq!(row.received_us, 42);
        }
        Message::Sensor(SensorUpdate::Stats {
            packets,
            drops,
            outbox_depth,
            alerts_published,
            uptime_s,
            ..
        }) => {
            assert!(topic.ends_with("/stats"));
            // Counters are unsigned in the message: never negative once stored.
            for n in [packets, drops, outbox_depth, alerts_published, uptime_s] {
                assert!(n >= 0, "{n}");
            }
        }
        Message::Sensor(SensorUpdate::Status { .. }) => assert!(topic.ends_with("/status")),
        Message::Oversized => assert!(payload.len() > MAX_PAYLOAD),
        Message::Invalid(_) => {}
    }
});
