//! The central collector (`edgewatch-collector`, cargo feature `collector`): MQTT ingest of the
//! sensors' alerts, status and stats into SQLite or PostgreSQL, and a web UI and JSON API on top.
//!
//! Data flow: [`ingest`] (one thread with the MQTT 5 client) hands every message to the writer
//! thread, which validates it ([`validate`]), commits a batch in one transaction ([`store`]) and
//! only then acknowledges the batch's messages to the broker, so a crash loses nothing. [`web`]
//! serves the UI and API from its own read connections. [`run`] wires the threads; this module
//! also owns the configuration and the counters that `/metrics` reports. docs/collector.md
//! documents it all.

pub mod ingest;
pub mod store;
pub mod validate;
pub mod web;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::config::MqttConfig;

/// Where the collector reads its config when `--config` is not given (if the file exists).
pub const DEFAULT_CONFIG: &str = "/etc/edgewatch/collector.toml";

/// The collector's config file: top-level keys plus the `[mqtt]` section of the sensor's config
/// (url, username, password_file, ca_file, client certificate, keepalive_s, topic_prefix,
/// reconnect_min_s, reconnect_max_s).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// `sqlite:PATH` or `postgres://user@host:port/db`.
    pub db: String,
    /// Address of the web UI and API.
    pub listen: String,
    /// The MQTT 5 shared-subscription group: collectors with the same group split the alerts.
    pub group: String,
    /// MQTT client id; unique per collector and stable across restarts (it names the persistent
    /// session). Empty: `edgewatch-collector-<group>-<host name>`.
    pub client_id: String,
    /// Web UI and API user for HTTP basic auth; empty: no auth (keep `listen` on localhost then).
    pub http_user: String,
    /// A file whose first line is the web password (basic auth, or `Authorization: Bearer`).
    pub http_password_file: String,
    /// Alerts received longer ago than this are deleted; 0 keeps them forever.
    pub retention_days: f64,
    /// Most alerts kept; past it the oldest received are deleted. 0: no limit.
    pub max_alerts: u64,
    /// An alert, status or stats payload longer than this is counted as oversized and skipped.
    pub max_payload_bytes: usize,
    /// Largest MQTT packet accepted (told to the broker, which drops larger ones for us).
    pub max_packet_bytes: u32,
    /// Messages committed together in one transaction, at most.
    pub batch_size: usize,
    /// How long a batch waits for more messages before it is committed.
    pub batch_wait_ms: u64,
    /// Messages the broker may send before they are acknowledged (MQTT 5 receive maximum).
    pub receive_maximum: u16,
    pub mqtt: MqttConfig,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            db: "sqlite:/var/lib/edgewatch-collector/alerts.db".to_string(),
            listen: "127.0.0.1:8080".to_string(),
            group: "edgewatch".to_string(),
            client_id: String::new(),
            http_user: String::new(),
            http_password_file: String::new(),
            retention_days: 90.0,
            max_alerts: 10_000_000,
            max_payload_bytes: 64 * 1024,
            max_packet_bytes: 16 * 1024 * 1024,
            batch_size: 500,
            batch_wait_ms: 20,
            receive_maximum: 1000,
            mqtt: MqttConfig {
                url: "mqtt://127.0.0.1:1883".to_string(),
                ..MqttConfig::default()
            },
        }
    }
}

/// Errors that stop the collector from starting.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("cannot read the config {path}: {source}")]
    ReadConfig {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    ParseConfig { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::MqttError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {message}; set listen (or --listen) to a free address")]
    Listen { addr: String, message: String },
    #[error("cannot start a thread: {0}")]
    Spawn(std::io::Error),
}

impl CollectorConfig {
    /// Reads `path`, or the built-in defaults when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<CollectorConfig, CollectorError> {
        let Some(path) = path else {
            return Ok(CollectorConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| CollectorError::ReadConfig {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg: CollectorConfig =
            toml::from_str(&text).map_err(|e| CollectorError::ParseConfig {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        // A file that gives [mqtt] without url keeps the collector's default broker.
        if cfg.mqtt.url.is_empty() {
            cfg.mqtt.url = CollectorConfig::default().mqtt.url;
        }
        Ok(cfg)
    }

    /// Checks what can be checked without connecting.
    pub fn check(&self) -> Result<(), CollectorError> {
        let bad = |m: String| Err(CollectorError::Invalid(m));
        if self.group.is_empty() || self.group.contains(['/', '+', '#']) {
            return bad(format!(
                "group {:?} cannot name an MQTT shared subscription: use letters, digits, '-' or '_'",
                self.group
            ));
        }
        if self.mqtt.protocol == crate::config::MqttProtocol::V311 {
            return bad(
                "mqtt.protocol = \"3.1.1\": the collector needs MQTT 5 (shared subscriptions); \
                 remove the key"
                    .to_string(),
            );
        }
        if self.batch_size == 0 || self.receive_maximum == 0 {
            return bad("batch_size and receive_maximum must be at least 1".to_string());
        }
        if self.batch_size > 100_000 {
            return bad(format!(
                "batch_size must be at most 100000, not {}",
                self.batch_size
            ));
        }
        if let Err((key, problem)) = self.mqtt.validate() {
            return bad(format!("{key} {problem}"));
        }
        if self.retention_days.is_nan() || self.retention_days < 0.0 {
            return bad("retention_days must be 0 (keep forever) or more".to_string());
        }
        if self.http_password_file.is_empty() != self.http_user.is_empty() {
            return bad("set both http_user and http_password_file, or neither".to_string());
        }
        store::DbUrl::parse(&self.db)?;
        Ok(())
    }

    pub fn client_id(&self) -> String {
        if !self.client_id.is_empty() {
            return self.client_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let host = if host.is_empty() { "host" } else { &host };
        format!("edgewatch-collector-{}-{host}", self.group)
    }
}

/// What the collector counts; `/metrics` shows every field.
#[derive(Default)]
pub struct Metrics {
    pub messages_received: AtomicU64,
    /// Alert records of a new `alert_id`: alerts stored.
    pub alerts_ingested: AtomicU64,
    /// Alert records with a higher `update` than the stored one, which they replaced.
    pub alerts_updated: AtomicU64,
    /// Alert records whose `update` was stored already or is older than the stored one (a
    /// resend after a lost PUBACK, a replay, an update overtaken by a later one).
    pub alerts_duplicate: AtomicU64,
    /// Messages that are not JSON or do not match the alert schema, or status/stats that are
    /// not JSON objects, or topics the collector does not know.
    pub messages_invalid: AtomicU64,
    /// Payloads over `max_payload_bytes`.
    pub messages_oversized: AtomicU64,
    pub status_messages: AtomicU64,
    pub stats_messages: AtomicU64,
    /// Transactions committed.
    pub db_commits: AtomicU64,
    /// Failed transactions (retried: their messages are not acknowledged until committed).
    pub db_errors: AtomicU64,
    /// Alerts deleted by retention.
    pub alerts_expired: AtomicU64,
    pub mqtt_connects: AtomicU64,
    pub mqtt_errors: AtomicU64,
    pub http_requests: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text format.
    pub fn prometheus(&self) -> String {
        let rows: [(&str, &AtomicU64, &str); 14] = [
            (
                "messages_received",
                &self.messages_received,
                "MQTT messages received",
            ),
            (
                "alerts_ingested",
                &self.alerts_ingested,
                "Alerts stored (records of a new alert_id)",
            ),
            (
                "alerts_updated",
                &self.alerts_updated,
                "Alert updates stored (records with a higher update than the stored one)",
            ),
            (
                "alerts_duplicate",
                &self.alerts_duplicate,
                "Alert records that changed nothing (update stored already, or older)",
            ),
            (
                "messages_invalid",
                &self.messages_invalid,
                "Messages skipped: not JSON, not the alert schema, unknown topic",
            ),
            (
                "messages_oversized",
                &self.messages_oversized,
                "Messages skipped: payload over max_payload_bytes",
            ),
            (
                "status_messages",
                &self.status_messages,
                "Sensor status messages stored",
            ),
            (
                "stats_messages",
                &self.stats_messages,
                "Sensor stats messages stored",
            ),
            (
                "db_commits",
                &self.db_commits,
                "Database transactions committed",
            ),
            (
                "db_errors",
                &self.db_errors,
                "Database transactions failed (retried)",
            ),
            (
                "alerts_expired",
                &self.alerts_expired,
                "Alerts deleted by retention",
            ),
            (
                "mqtt_connects",
                &self.mqtt_connects,
                "Connections to the MQTT broker",
            ),
            ("mqtt_errors", &self.mqtt_errors, "MQTT connection errors"),
            ("http_requests", &self.http_requests, "HTTP requests served"),
        ];
        let mut out = String::with_capacity(2048);
        for (name, value, help) in rows {
            let v = value.load(Ordering::Relaxed);
            out.push_str(&format!(
                "# HELP edgewatch_collector_{name}_total {help}.\n\
                 # TYPE edgewatch_collector_{name}_total counter\n\
                 edgewatch_collector_{name}_total {v}\n"
            ));
        }
        out
    }
}

/// Starts the writer, the MQTT ingest and the web server, and runs until SIGINT or SIGTERM.
pub fn run(cfg: CollectorConfig) -> Result<(), CollectorError> {
    cfg.check()?;
    let metrics = Arc::new(Metrics::default());
    let db = store::DbUrl::parse(&cfg.db)?;
    // The writer's store runs the schema migrations before anything reads.
    let writer_store = store::open(&db, true)?;
    log::info!(
        "Database {} is ready (schema version {}).",
        db,
        store::SCHEMA_VERSION
    );
    let validator = Arc::new(validate::Validator::new());
    let server = web::Server::bind(&cfg, &db, metrics.clone())?;
    log::info!("Web UI and API on http://{}/", server.addr());
    let ingest = ingest::start(&cfg, writer_store, validator, metrics.clone())?;
    let web_threads = server.spawn(2)?;

    let term = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, term.clone()).map_err(CollectorError::Spawn)?;
    }
    while !term.load(Ordering::Relaxed) && !ingest.finished() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    log::info!("Stopping: committing what was received.");
    ingest.stop();
    drop(web_threads);
    Ok(())
}
