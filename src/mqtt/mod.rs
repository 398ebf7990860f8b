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

use std::fmt;

#[cfg(feature = "mqtt")]
mod connect;
#[cfg(feature = "mqtt")]
mod link;
#[cfg(feature = "mqtt")]
pub mod outbox;
#[cfg(feature = "mqtt")]
mod publisher;
// Plain data: the agent builds the status identity in every build.
#[cfg(not(feature = "mqtt"))]
mod absent;
#[cfg_attr(not(feature = "mqtt"), allow(dead_code))]
pub mod status;

#[cfg(not(feature = "mqtt"))]
pub use absent::{Mqtt, MqttSink, Publisher, PublisherWorker};
/// The login and TLS settings of `[mqtt]`, for the collector.
#[cfg(feature = "mqtt")]
pub use connect::Access;
#[cfg(feature = "mqtt")]
pub use publisher::{Mqtt, MqttSink, Publisher, PublisherWorker};

use crate::config::MqttConfig;

/// A broker address from `mqtt.url` or `--mqtt`: `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    /// Parses a url; the error says what a valid one looks like.
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let expected = "expected mqtt://host:port or mqtts://host:port";
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(format!("{url:?} is not an MQTT url: {expected}"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) {
            return Err(format!(
                "{url:?}: {expected} (no path, user or query; see mqtt.username)"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        // "[v6]:port", "[v6]", "host:port" or "host".
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '[' in the host"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| format!("{url:?}: {expected}"))?,
                    ),
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host: {expected}"));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    return Err(format!(
                        "{url:?}: the port must be a number from 1 to 65535"
                    ));
                }
            },
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Whether this build can serve `url`: MQTT and TLS are cargo features a router build may leave
/// out.
pub fn check_build(url: &BrokerUrl, _cfg: &MqttConfig) -> Result<(), String> {
    if !cfg!(feature = "mqtt") {
        return Err(
            "this edgewatch was built without MQTT support (cargo feature `mqtt`); \
                    leave mqtt.url empty or install a build with MQTT"
                .to_string(),
        );
    }
    if url.tls && !cfg!(feature = "tls") {
        return Err(format!(
            "{url} needs TLS but this edgewatch was built without it (cargo feature `tls`); \
             use an mqtt:// url or a build with TLS"
        ));
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = BrokerUrl::parse("mqtt://broker.lan:1884").unwrap();
        assert_eq!(
            u,
            BrokerUrl {
                tls: false,
                host: "broker.lan".into(),
                port: 1884
            }
        );
        assert_eq!(BrokerUrl::parse("mqtts://10.0.0.1").unwrap().port, 8883);
        assert_eq!(BrokerUrl::parse("mqtt://h/").unwrap().port, 1883);
        let v6 = BrokerUrl::parse("mqtt://[::1]:1999").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 1999));
        assert_eq!(v6.to_string(), "mqtt://[::1]:1999");
        for bad in [
            "tcp://h:1",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://u:p@h:1",
            "mqtt://h:1/topic",
            "h:1883",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
