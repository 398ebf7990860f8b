//! MQTT publishing: alerts, status and stats to a broker, losing no alert on the way.
//!
//! The alert sink thread serializes each alert once, appends the bytes to a durable on-disk
//! [`outbox`] and writes the same bytes as a JSON line; it never waits for the network. A
//! publisher thread (`publisher`, one tokio current-thread runtime) owns the rumqttc client: it
//! reads the outbox from its head, publishes at QoS 1 with a bounded number in flight, and removes
//! an alert from the outbox only once the broker acknowledged it (PUBACK). It also publishes the
//! retained `status` (with an "offline" last will) and periodic `stats` ([`status`]). This module
//! must not hold up the capture pipeline: the only thing the pipeline waits on is the outbox's
//! own disk write. Topics, payloads and semantics are documented in docs/mqtt.md.

#[cfg(not(feature = "mqtt"))]
mod absent;
#[cfg(feature = "mqtt")]
mod connect;
#[cfg(feature = "mqtt")]
mod link;
#[cfg(feature = "mqtt")]
pub mod outbox;
#[cfg(feature = "mqtt")]
mod publisher;
// Plain data: the agent builds the status identity in every build.
#[cfg_attr(not(feature = "mqtt"), allow(dead_code))]
pub mod status;

#[cfg(not(feature = "mqtt"))]
pub use absent::{Mqtt, MqttSink, Publisher, PublisherWorker};
/// The login and TLS settings of `[mqtt]`, for the collector.
#[cfg(feature = "mqtt")]
pub use connect::Access;
#[cfg(feature = "mqtt")]
pub use publisher::{Mqtt, MqttSink, Publisher, PublisherWorker};

/// How publishing ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Every alert in the outbox was acknowledged by the broker (or dropped, see `dropped`).
    pub delivered_all: bool,
    /// Alerts left in the outbox for the next start.
    pub waiting: u64,
    /// Alerts the broker acknowledged during this run.
    pub published: u64,
    /// Alerts the broker refused in its PUBACK during this run (MQTT 5), dropped.
    pub rejected: u64,
    /// Alerts dropped because the outbox was full or could not be written.
    pub dropped: u64,
    pub outbox: std::path::PathBuf,
    /// A signal ended the wait before the broker had everything.
    pub interrupted: bool,
}

/// Errors that stop MQTT from starting. Problems while running (broker unreachable, refused,
/// bad certificate) are not errors here: they are logged once and retried.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT url {0}")]
    Url(String),
    #[error("cannot read {key} {path}: {source}")]
    ReadFile {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{key} {path}: {problem}")]
    BadFile {
        key: &'static str,
        path: String,
        problem: String,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error(
        "sensor_id {0:?} cannot be used in an MQTT topic (it must not contain '/', '+' or '#'); set sensor_id"
    )]
    SensorId(String),
    #[error("MQTT outbox: {0}")]
    #[cfg(feature = "mqtt")]
    Outbox(#[from] outbox::OutboxError),
}

impl MqttError {
    /// Whether it is the user's to fix, in the config or on the command line (a url, a file, a
    /// certificate, the sensor id), rather than the system's (the outbox cannot be written).
    pub fn is_setting(&self) -> bool {
        match self {
            #[cfg(feature = "mqtt")]
            MqttError::Outbox(_) => false,
            _ => true,
        }
    }
}
