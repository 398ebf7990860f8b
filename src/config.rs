//! Configuration: the TOML file, its defaults and its validation.
//!
//! Every key is documented in [`DEFAULT_CONFIG`], which `generate-config` prints; a test keeps
//! that text and [`Config::default`] identical. Unknown keys are an error naming the key. This
//! module only describes settings; it opens no file other than the config itself.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where `run` and `replay` look for a config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/edgewatch/edgewatch.toml";

/// The longest time span a `*_s` key takes: a year. Longer is a typo, and start-up turns some of
/// them into a `Duration`, which cannot hold every finite f64 (1e20 s panics).
pub const MAX_SECONDS: f64 = 365.0 * 86_400.0;

/// The most batches a flow worker's queue holds: its slots are allocated up front.
pub const MAX_QUEUE_CAPACITY: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path}: {key} {problem}")]
    Invalid {
        path: String,
        key: &'static str,
        problem: String,
    },
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of this sensor in alerts and MQTT topics; empty means the host name.
    pub sensor_id: String,
    pub capture: CaptureConfig,
    pub flow: FlowConfig,
    pub host: HostConfig,
    pub model: ModelConfig,
    pub alert: AlertConfig,
    pub output: OutputConfig,
    /// Directory for state kept across restarts (the MQTT outbox).
    pub state_dir: String,
    pub mqtt: MqttConfig,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    pub interfaces: Vec<String>,
    pub backend: CaptureBackend,
    pub threads: usize,
    pub ring_block_kib: usize,
    pub ring_blocks: usize,
    pub promiscuous: bool,
    pub batch_size: usize,
    pub queue_capacity: usize,
}

/// How live capture reads an interface (`capture.backend`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CaptureBackend {
    /// `tpacket` on Linux, `pnet` elsewhere.
    Auto,
    /// A TPACKET_V3 memory-mapped ring, with PACKET_FANOUT for several threads (Linux).
    Tpacket,
    /// pnet's AF_PACKET socket, one system call per frame (cargo feature `pnet`).
    Pnet,
}

impl CaptureBackend {
    /// The backend `auto` stands for on this system.
    pub fn resolve(self) -> CaptureBackend {
        match self {
            CaptureBackend::Auto if cfg!(target_os = "linux") => CaptureBackend::Tpacket,
            CaptureBackend::Auto => CaptureBackend::Pnet,
            b => b,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CaptureBackend::Auto => "auto",
            CaptureBackend::Tpacket => "tpacket",
            CaptureBackend::Pnet => "pnet",
        }
    }

    /// Whether this build can capture with the backend.
    pub fn built(self) -> bool {
        let (linux, pnet) = (cfg!(target_os = "linux"), cfg!(feature = "pnet"));
        if self.resolve() == CaptureBackend::Tpacket {
            linux
        } else {
            pnet
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FlowConfig {
    pub workers: usize,
    pub max_flows: usize,
    pub tcp_handshake_timeout_s: f64,
    pub tcp_established_timeout_s: f64,
    pub tcp_closed_timeout_s: f64,
    pub udp_timeout_s: f64,
    pub icmp_timeout_s: f64,
    pub active_timeout_s: f64,
    pub early_eval_packets: u32,
    pub probe_eval_s: f64,
    pub max_evals_per_flow: u8,
    pub max_fragments: usize,
    pub emergency_enter: f64,
    pub emergency_leave: f64,
    pub emergency_timeout_scale: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    pub short_window_s: f64,
    pub long_window_s: f64,
    pub max_hosts: usize,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub path: String,
    pub threshold: Option<f32>,
    pub batch_size: usize,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    pub mode: AlertMode,
    pub max_alerts_per_s: f64,
    pub max_incidents: usize,
    pub incident_idle_s: f64,
    pub update_interval_s: f64,
    pub scan_min_targets: u64,
    pub scan_min_targets_per_s: f64,
    pub bruteforce_min_sessions: u64,
    pub bruteforce_min_sessions_per_min: f64,
    pub flood_min_flows: u64,
    pub flood_min_packets: u64,
    pub flood_min_packets_per_s: f64,
    pub slowdos_min_connections: u64,
}

/// What an alert stands for (see `incident`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AlertMode {
    /// One alert per behaviour and episode, updated while it goes on.
    #[default]
    Incident,
    /// One alert per flow evaluation at or above the threshold.
    Flow,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub alerts: String,
    pub stats_interval_s: f64,
}

/// MQTT publishing (see docs/mqtt.md). An empty `url` turns it off.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub url: String,
    pub protocol: MqttProtocol,
    pub username: String,
    pub password_file: String,
    pub ca_file: String,
    pub client_cert_file: String,
    pub client_key_file: String,
    pub keepalive_s: f64,
    pub topic_prefix: String,
    pub reconnect_min_s: f64,
    pub reconnect_max_s: f64,
    pub outbox_max_mb: f64,
}

/// The MQTT protocol version to speak (`mqtt.protocol`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum MqttProtocol {
    /// MQTT 5, or 3.1.1 when the broker does not speak 5.
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "5")]
    V5,
    #[serde(rename = "3.1.1")]
    V311,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sensor_id: String::new(),
            capture: CaptureConfig::default(),
            flow: FlowConfig::default(),
            host: HostConfig::default(),
            model: ModelConfig::default(),
            alert: AlertConfig::default(),
            output: OutputConfig::default(),
            state_dir: "/var/lib/edgewatch".to_string(),
            mqtt: MqttConfig::default(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: String::new(),
            protocol: MqttProtocol::Auto,
            username: String::new(),
            password_file: String::new(),
            ca_file: String::new(),
            client_cert_file: String::new(),
            client_key_file: String::new(),
            keepalive_s: 60.0,
            topic_prefix: "edgewatch/v1".to_string(),
            reconnect_min_s: 1.0,
            reconnect_max_s: 60.0,
            outbox_max_mb: 16.0,
        }
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interfaces: Vec::new(),
            backend: CaptureBackend::Auto,
            threads: 1,
            ring_block_kib: 128,
            ring_blocks: 16,
            promiscuous: true,
            batch_size: 128,
            queue_capacity: 16,
        }
    }
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            workers: 0,
            max_flows: 65536,
            tcp_handshake_timeout_s: 10.0,
            tcp_established_timeout_s: 300.0,
            tcp_closed_timeout_s: 5.0,
            udp_timeout_s: 30.0,
            icmp_timeout_s: 10.0,
            active_timeout_s: 120.0,
            early_eval_packets: 8,
            probe_eval_s: 0.5,
            max_evals_per_flow: 4,
            max_fragments: 1024,
            emergency_enter: 0.9,
            emergency_leave: 0.7,
            emergency_timeout_scale: 0.1,
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            short_window_s: 2.0,
            long_window_s: 30.0,
            max_hosts: 16384,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            path: String::new(),
            threshold: None,
            batch_size: 256,
        }
    }
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            mode: AlertMode::Incident,
            max_alerts_per_s: 50.0,
            max_incidents: 8192,
            incident_idle_s: 30.0,
            update_interval_s: 10.0,
            scan_min_targets: 8,
            scan_min_targets_per_s: 1.0,
            bruteforce_min_sessions: 4,
            bruteforce_min_sessions_per_min: 20.0,
            flood_min_flows: 8,
            flood_min_packets: 1000,
            flood_min_packets_per_s: 100.0,
            slowdos_min_connections: 16,
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            alerts: "-".to_string(),
            stats_interval_s: 60.0,
        }
    }
}

/// The most entries a flow, host, fragment or alert-window table may be given.
pub const MAX_TABLE: usize = 1 << 24;

impl MqttConfig {
    /// Checks the section on its own; a url given with `--mqtt` is checked again when used.
    /// Returns the faulty key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.reconnect_max_s < self.reconnect_min_s {
            return Err((
                "mqtt.reconnect_max_s",
                "must not be shorter than mqtt.reconnect_min_s".to_string(),
            ));
        }
        for (key, value) in [
            ("mqtt.reconnect_min_s", self.reconnect_min_s),
            ("mqtt.reconnect_max_s", self.reconnect_max_s),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= MAX_SECONDS) {
                return Err((
                    key,
                    format!(
                        "must be a positive number of seconds up to {MAX_SECONDS} (a year), not {value}"
                    ),
                ));
            }
        }
        // The MQTT client refuses a keep-alive under 5 s.
        if !(self.keepalive_s.is_finite() && (5.0..=65535.0).contains(&self.keepalive_s)) {
            return Err((
                "mqtt.keepalive_s",
                format!(
                    "must be between 5 and 65535 seconds, not {}",
                    self.keepalive_s
                ),
            ));
        }
        let prefix = &self.topic_prefix;
        if prefix.is_empty() || prefix.ends_with('/') || prefix.contains(['+', '#', '\0']) {
            return Err((
                "mqtt.topic_prefix",
                format!(
                    "must be a non-empty topic without wildcards or a trailing '/', not {prefix:?}"
                ),
            ));
        }
        if self.url.is_empty() {
            return Ok(());
        }
        let url = crate::mqtt::BrokerUrl::parse(&self.url).map_err(|e| ("mqtt.url", e))?;
        crate::mqtt::check_build(&url, self).map_err(|e| ("mqtt.url", e))?;
        if !url.tls {
            for (key, value) in [
                ("mqtt.ca_file", &self.ca_file),
                ("mqtt.client_cert_file", &self.client_cert_file),
                ("mqtt.client_key_file", &self.client_key_file),
            ] {
                if !value.is_empty() {
                    return Err((
                        key,
                        "is only used with TLS: give an mqtts:// url".to_string(),
                    ));
                }
            }
        }
        if self.client_cert_file.is_empty() != self.client_key_file.is_empty() {
            return Err((
                "mqtt.client_key_file",
                "and mqtt.client_cert_file go together: set both or neither".to_string(),
            ));
        }
        Ok(())
    }
}

/// The documented default configuration, printed by `edgewatch generate-config`.
pub const DEFAULT_CONFIG: &str = r#"# edgewatch configuration (TOML). Every key is optional; the values below are the defaults.
# Check a file with `edgewatch validate --config FILE`. Unknown keys are an error.

# Name of this sensor in alerts and MQTT topics. Empty: the host name.
sensor_id = ""
# Directory for state kept across restarts (the MQTT outbox); --state-dir overrides it.
state_dir = "/var/lib/edgewatch"

[capture]
# Interfaces that `edgewatch run` captures on (--interface adds to this list).
interfaces = []
# How to read them: "tpacket" (Linux: a memory-mapped TPACKET_V3 ring, no system call per
# packet, kernel timestamps, kernel drop counters), "pnet" (pnet's AF_PACKET socket, one
# system call per packet; the portable fallback, cargo feature pnet) or "auto" (tpacket on
# Linux, else pnet).
backend = "auto"
# Capture threads per interface (tpacket only). Above 1, the interface's packets are spread
# over the threads by a hash of their addresses (PACKET_FANOUT, fragments reassembled first),
# so each flow stays on one thread. 1 suits a small router; a core per thread at most.
threads = 1
# The tpacket ring of each capture thread: ring_blocks blocks of ring_block_kib KiB (a power
# of two, a multiple of the page size). The kernel hands a block over when it is full or 100 ms
# after its first packet, and keeps the first 256 bytes of each packet (the headers), so
# 2 MiB hold about 6,500 packets; when every block is full, packets are dropped and counted as
# kernel_drops. Memory: threads x interfaces x ring_blocks x ring_block_kib.
ring_block_kib = 128
# (the number of blocks in each ring)
ring_blocks = 16
# Put the interfaces in promiscuous mode (see traffic not addressed to this host).
promiscuous = true
# Packets per batch handed from the capture thread to a flow worker. Replay hands on batches 4
# times as large, with queues (below) half as long: twice the packets in flight.
batch_size = 128
# Batches each flow worker's queue holds. Live capture drops the newest batch when the queue is
# full (counted as queue drops); replay waits instead, so replay never loses a packet. Workers
# can be this far apart, and the scorer holds the events of the one ahead until the other
# catches up: under a flood, each batch of this queue costs about 90 KB there.
queue_capacity = 16

[flow]
# Flow worker threads; flows are sharded over them by their 5-tuple. 0: one per CPU, at most 4.
workers = 0
# Most flows held at once (over all workers). When full, the flow closest to its timeout is
# evaluated and evicted (counted as flows_evicted).
max_flows = 65536
# Idle timeout of a TCP flow whose handshake has not completed.
tcp_handshake_timeout_s = 10.0
# Idle timeout of an established TCP flow.
tcp_established_timeout_s = 300.0
# How long an ended TCP flow (FIN both ways, or RST) keeps absorbing late packets.
tcp_closed_timeout_s = 5.0
# Idle timeout of a UDP flow.
udp_timeout_s = 30.0
# Idle timeout of an ICMP flow (echo flows are grouped by identifier).
icmp_timeout_s = 10.0
# A long flow is evaluated again every active_timeout_s while it lasts.
active_timeout_s = 120.0
# Evaluate a flow as soon as it has this many packets, for fast alerts, and again at 8 and 64
# times as many (so a flood inside one flow is scored while it lasts).
early_eval_packets = 8
# Evaluate a flow that has not been evaluated yet this long after its first packet
# (so single-packet probes and floods are scored within about half a second).
probe_eval_s = 0.5
# Evaluations per flow at most, the final one included (it always happens).
max_evals_per_flow = 4
# IP datagrams whose later fragments are waiting to be attributed to a flow, at most.
max_fragments = 1024
# Emergency mode (under a flood of new flows): when a flow worker's table reaches this share of
# its flows, the idle timeouts above shrink by emergency_timeout_scale, so that the flows a
# flood leaves behind expire (and are evaluated) instead of pushing out live ones. The mode
# ends when the table is back under emergency_leave. Entries are counted as flow_emergencies.
emergency_enter = 0.9
# (the share of the table under which emergency mode ends)
emergency_leave = 0.7
# (the factor applied to the idle timeouts during emergency mode)
emergency_timeout_scale = 0.1

[host]
# The short and the long sliding window of the per-host context (new flows per second,
# distinct ports and hosts, failed and unanswered attempts). The short window:
short_window_s = 2.0
# The long window (at least as long as the short one):
long_window_s = 30.0
# Hosts tracked at most; when full, hosts idle for a long window are forgotten first and
# new hosts beyond the bound are not tracked (counted as hosts_untracked).
max_hosts = 16384

[model]
# ONNX model file. Empty: the model embedded in the binary.
path = ""
# Alert when a flow's anomaly score is at or above this. Unset: the model's own
# edgewatch.threshold metadata.
# threshold = 0.5
# Flows scored per inference call at most (live, a batch also ends with each batch of packets, so
# a quiet link scores at once; replay fills its batches; bigger batches cost less per flow).
batch_size = 256

[alert]
# "incident": one alert per behaviour and episode (a source's scan or brute force, a flood or
# slow DoS against a victim), raised once its evidence reaches the minimums below and updated
# (same alert_id, next update number) while it goes on. "flow": one alert per flow evaluation
# the model scores at or above the threshold, nothing grouped.
mode = "incident"
# Alert records per second at most over the whole sensor (final updates always go out); the
# rest are counted as alerts_suppressed.
max_alerts_per_s = 50.0
# Incidents (and candidates still gathering evidence) tracked at once at most; past it the least
# recently active one is closed or dropped.
max_incidents = 8192
# An incident with no new flow for this long is over: its alert gets a final update, and the
# same behaviour later is a new alert.
incident_idle_s = 30.0
# An alert is updated at most this often while its incident grows.
update_interval_s = 10.0
# A scan is alerted once its source has probed this many distinct (host, port) targets, ...
scan_min_targets = 8
# ... at this many targets per second or more (over their time, at least a second). Targets
# must also form a grid: many ports of few hosts, few ports of many hosts, or many of both
# (peers each reached on a port of its own are not a scan).
scan_min_targets_per_s = 1.0
# A brute force: this many sessions from one source to one service that exchanged data, ...
bruteforce_min_sessions = 4
# ... at this many sessions per minute or more (over their time, at least a second).
bruteforce_min_sessions_per_min = 20.0
# A flood: this many flows against one victim, ...
flood_min_flows = 8
# ... or this many UDP or ICMP packets in fewer flows (one 5-tuple can carry a flood), ...
flood_min_packets = 1000
# ... at this many packets per second or more (over their time, at least a second).
flood_min_packets_per_s = 100.0
# A slow DoS: this many TCP connections held against one service.
slowdos_min_connections = 16

[output]
# Where alerts go as JSON lines: "-" for standard output, or a file path (appended).
alerts = "-"
# Seconds between two stats reports (logged; published on MQTT when configured).
stats_interval_s = 60.0

[mqtt]
# Broker to publish alerts, status and stats to (see docs/mqtt.md): "mqtt://host:port", or
# "mqtts://host:port" for TLS. Empty: MQTT is off. --mqtt URL overrides it.
url = ""
# Protocol version: "auto" (MQTT 5, or 3.1.1 when the broker does not speak 5), "5" or "3.1.1".
protocol = "auto"
# User name to log in with. Empty: no login.
username = ""
# File holding the password (its first line). Empty: no password.
password_file = ""
# PEM file of the CA certificates that sign the broker's certificate (mqtts only).
# Empty: the system's trusted CAs.
ca_file = ""
# PEM files of this sensor's client certificate (chain) and private key, for brokers that
# authenticate clients by certificate (mqtts only). Empty: no client certificate.
client_cert_file = ""
# (the private key that goes with client_cert_file)
client_key_file = ""
# Seconds between keep-alive pings when nothing else is sent; the broker declares the sensor
# offline (its last will) after 1.5 times this without a word.
keepalive_s = 60.0
# Topics are <topic_prefix>/<sensor_id>/alert, .../status and .../stats.
topic_prefix = "edgewatch/v1"
# Wait between reconnection attempts: starts at reconnect_min_s, doubles up to
# reconnect_max_s, with random jitter so that a fleet does not reconnect in step.
reconnect_min_s = 1.0
# (the longest wait between two attempts)
reconnect_max_s = 60.0
# Alerts not yet acknowledged by the broker wait in an outbox file under state_dir, which
# survives restarts and crashes. Past this size the oldest are dropped (counted as
# alerts_outbox_dropped in stats).
outbox_max_mb = 16.0
"#;

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Config::parse(&text, &display)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The explicit `--config` file, else the system one when present, else the defaults.
    pub fn load_default_or(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        match path {
            Some(p) => Ok((Config::load(p)?, Some(p.to_path_buf()))),
            None => {
                let system = Path::new(DEFAULT_CONFIG_PATH);
                if system.exists() {
                    Ok((Config::load(system)?, Some(system.to_path_buf())))
                } else {
                    Ok((Config::default(), None))
                }
            }
        }
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: &str| ConfigError::Invalid {
            path: origin.to_string(),
            key,
            problem: problem.to_string(),
        };
        let positive = [
            (
                "flow.tcp_handshake_timeout_s",
                self.flow.tcp_handshake_timeout_s,
            ),
            (
                "flow.tcp_established_timeout_s",
                self.flow.tcp_established_timeout_s,
            ),
            ("flow.tcp_closed_timeout_s", self.flow.tcp_closed_timeout_s),
            ("flow.udp_timeout_s", self.flow.udp_timeout_s),
            ("flow.icmp_timeout_s", self.flow.icmp_timeout_s),
            ("flow.active_timeout_s", self.flow.active_timeout_s),
            ("flow.probe_eval_s", self.flow.probe_eval_s),
            ("host.short_window_s", self.host.short_window_s),
            ("host.long_window_s", self.host.long_window_s),
            ("alert.incident_idle_s", self.alert.incident_idle_s),
            ("alert.update_interval_s", self.alert.update_interval_s),
            ("output.stats_interval_s", self.output.stats_interval_s),
        ];
        for (key, value) in positive {
            if !(value.is_finite() && value > 0.0 && value <= MAX_SECONDS) {
                return Err(invalid(
                    key,
                    &format!(
                        "must be a positive number of seconds up to {MAX_SECONDS} (a year), not {value}"
                    ),
                ));
            }
        }
        for (key, value) in [
            ("alert.max_alerts_per_s", self.alert.max_alerts_per_s),
            (
                "alert.flood_min_packets_per_s",
                self.alert.flood_min_packets_per_s,
            ),
            (
                "alert.scan_min_targets_per_s",
                self.alert.scan_min_targets_per_s,
            ),
            (
                "alert.bruteforce_min_sessions_per_min",
                self.alert.bruteforce_min_sessions_per_min,
            ),
            ("mqtt.outbox_max_mb", self.mqtt.outbox_max_mb),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(
                    key,
                    &format!("must be a positive number, not {value}"),
                ));
            }
        }
        let nonzero = [
            ("capture.batch_size", self.capture.batch_size),
            ("capture.queue_capacity", self.capture.queue_capacity),
            ("flow.max_flows", self.flow.max_flows),
            ("host.max_hosts", self.host.max_hosts),
            ("alert.max_incidents", self.alert.max_incidents),
            ("model.batch_size", self.model.batch_size),
        ];
        for (key, value) in nonzero {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        for (key, value) in [
            ("alert.scan_min_targets", self.alert.scan_min_targets),
            (
                "alert.bruteforce_min_sessions",
                self.alert.bruteforce_min_sessions,
            ),
            ("alert.flood_min_flows", self.alert.flood_min_flows),
            ("alert.flood_min_packets", self.alert.flood_min_packets),
            (
                "alert.slowdos_min_connections",
                self.alert.slowdos_min_connections,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        // Table bounds far above any router's memory, but below what an allocation can ask for.
        for (key, value, max) in [
            ("flow.max_flows", self.flow.max_flows, MAX_TABLE),
            ("flow.max_fragments", self.flow.max_fragments, MAX_TABLE),
            ("host.max_hosts", self.host.max_hosts, MAX_TABLE),
            ("alert.max_incidents", self.alert.max_incidents, MAX_TABLE),
            ("model.batch_size", self.model.batch_size, 65_536),
        ] {
            if value > max {
                return Err(invalid(key, &format!("must be at most {max}, not {value}")));
            }
        }
        self.validate_capture()
            .map_err(|(key, problem)| invalid(key, &problem))?;
        if self.capture.queue_capacity > MAX_QUEUE_CAPACITY {
            return Err(invalid(
                "capture.queue_capacity",
                &format!("must be at most {MAX_QUEUE_CAPACITY}"),
            ));
        }
        if self.capture.batch_size > 4096 {
            return Err(invalid("capture.batch_size", "must be at most 4096"));
        }
        if self.flow.workers > 64 {
            return Err(invalid("flow.workers", "must be at most 64"));
        }
        let f = &self.flow;
        if !(f.emergency_leave > 0.0
            && f.emergency_leave < f.emergency_enter
            && f.emergency_enter <= 1.0)
        {
            return Err(invalid(
                "flow.emergency_enter",
                &format!(
                    "flow.emergency_leave ({}) and flow.emergency_enter ({}) must be shares of the \
                     table with 0 < emergency_leave < emergency_enter <= 1",
                    f.emergency_leave, f.emergency_enter
                ),
            ));
        }
        if !(f.emergency_timeout_scale > 0.0 && f.emergency_timeout_scale <= 1.0) {
            return Err(invalid(
                "flow.emergency_timeout_scale",
                &format!(
                    "must be above 0 and at most 1, not {}",
                    f.emergency_timeout_scale
                ),
            ));
        }
        if self.host.long_window_s < self.host.short_window_s {
            return Err(invalid(
                "host.long_window_s",
                "must not be shorter than host.short_window_s",
            ));
        }
        if let Some(t) = self.model.threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(invalid(
                "model.threshold",
                &format!("must be between 0 and 1, not {t}"),
            ));
        }
        self.mqtt
            .validate()
            .map_err(|(key, problem)| invalid(key, &problem))?;
        if self.state_dir.is_empty() {
            return Err(invalid("state_dir", "must not be empty"));
        }
        Ok(())
    }

    /// Checks the capture backend and its ring. Returns the faulty key and what is wrong.
    fn validate_capture(&self) -> Result<(), (&'static str, String)> {
        let c = &self.capture;
        let backend = c.backend.resolve();
        if !c.backend.built() {
            let why = match backend {
                CaptureBackend::Tpacket => "is Linux only",
                _ => "needs a build with the cargo feature \"pnet\"",
            };
            return Err((
                "capture.backend",
                format!("\"{}\" {why}: choose another backend", backend.name()),
            ));
        }
        if !(1..=64).contains(&c.threads) {
            return Err((
                "capture.threads",
                format!("must be between 1 and 64, not {}", c.threads),
            ));
        }
        if c.threads > 1 && backend != CaptureBackend::Tpacket {
            return Err((
                "capture.threads",
                format!(
                    "above 1 needs capture.backend = \"tpacket\" (PACKET_FANOUT), not \"{}\"",
                    backend.name()
                ),
            ));
        }
        let kib = c.ring_block_kib;
        if !(kib.is_power_of_two() && (4..=4096).contains(&kib)) {
            return Err((
                "capture.ring_block_kib",
                format!("must be a power of two from 4 to 4096, not {kib}"),
            ));
        }
        if !(2..=1024).contains(&c.ring_blocks) {
            return Err((
                "capture.ring_blocks",
                format!("must be between 2 and 1024, not {}", c.ring_blocks),
            ));
        }
        if kib * c.ring_blocks > 256 * 1024 {
            return Err((
                "capture.ring_blocks",
                format!(
                    "times capture.ring_block_kib must be at most 256 MiB per ring, not {} MiB",
                    kib * c.ring_blocks / 1024
                ),
            ));
        }
        Ok(())
    }

    /// Flow workers to run: the configured number, or one per CPU (at most 4).
    pub fn workers(&self) -> usize {
        match self.flow.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            n => n,
        }
    }

    /// The sensor id: the configured one, else the host name.
    pub fn sensor_id(&self) -> String {
        if !self.sensor_id.is_empty() {
            return self.sensor_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "edgewatch".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_config_is_the_default() {
        let parsed = Config::parse(DEFAULT_CONFIG, "default").expect("default config parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn every_key_is_documented() {
        // Each key line in the generated config is preceded by a comment line.
        let lines: Vec<&str> = DEFAULT_CONFIG.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let is_key = line.contains(" = ") && !line.starts_with('#');
            if is_key {
                assert!(
                    lines[i - 1].starts_with('#'),
                    "key without a comment: {line}"
                );
            }
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[flow]\nmax_flow = 3\n", "test.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_flow"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn mqtt_section_is_checked() {
        let err = Config::parse("[mqtt]\nurl = \"http://x\"\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.url"), "{err}");
        let err = Config::parse(
            "[mqtt]\nurl = \"mqtt://h:1883\"\nca_file = \"ca.pem\"\n",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("mqtt.ca_file") && err.contains("mqtts://"),
            "{err}"
        );
        let err = Config::parse("[mqtt]\nreconnect_min_s = 10\nreconnect_max_s = 5\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.reconnect_max_s"), "{err}");
        let err = Config::parse("[mqtt]\ntopic_prefix = \"a/#\"\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.topic_prefix"), "{err}");
        let ok = Config::parse(
            "state_dir = \"/tmp/x\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1884\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(ok.mqtt.url, "mqtt://127.0.0.1:1884");
        assert_eq!(ok.mqtt.protocol, MqttProtocol::Auto);
        let v311 = Config::parse("[mqtt]\nprotocol = \"3.1.1\"\n", "x").unwrap();
        assert_eq!(v311.mqtt.protocol, MqttProtocol::V311);
        let err = Config::parse("[mqtt]\nprotocol = \"4\"\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("protocol") && err.contains("3.1.1"), "{err}");
    }

    #[test]
    fn capture_backend_and_ring_are_checked() {
        let tp = Config::parse(
            "[capture]\nbackend = \"tpacket\"\nthreads = 2\nring_block_kib = 64\n",
            "x",
        );
        if cfg!(target_os = "linux") {
            let tp = tp.unwrap();
            assert_eq!(tp.capture.backend, CaptureBackend::Tpacket);
            assert_eq!((tp.capture.threads, tp.capture.ring_block_kib), (2, 64));
        } else {
            let err = tp.unwrap_err().to_string();
            assert!(
                err.contains("capture.backend") && err.contains("Linux"),
                "{err}"
            );
        }
        let err = Config::parse("[capture]\nbackend = \"pcap\"\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("backend") && err.contains("tpacket"), "{err}");
        let pnet = Config::parse("[capture]\nbackend = \"pnet\"\n", "x");
        assert_eq!(pnet.is_ok(), cfg!(feature = "pnet"), "{pnet:?}");
        if cfg!(feature = "pnet") {
            let err = Config::parse("[capture]\nbackend = \"pnet\"\nthreads = 2\n", "x")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("capture.threads") && err.contains("tpacket"),
                "{err}"
            );
        }
        for (text, key) in [
            ("threads = 0", "capture.threads"),
            ("ring_block_kib = 96", "capture.ring_block_kib"),
            ("ring_block_kib = 2", "capture.ring_block_kib"),
            ("ring_blocks = 1", "capture.ring_blocks"),
            (
                "ring_block_kib = 4096\nring_blocks = 128",
                "capture.ring_blocks",
            ),
        ] {
            let err = Config::parse(&format!("[capture]\n{text}\n"), "x")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::parse("[flow]\nudp_timeout_s = -1\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("flow.udp_timeout_s"), "{err}");
        let err = Config::parse("[model]\nthreshold = 2.0\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.threshold"), "{err}");
        let err = Config::parse("[host]\nshort_window_s = 60\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("host.long_window_s"), "{err}");
    }

    /// `stats_interval_s = 1e20` was accepted, and `Duration::from_secs_f64` panics on it at
    /// start-up (the config fuzz target checks every validated time span converts).
    #[test]
    fn time_spans_beyond_a_year_are_refused() {
        for key in [
            "[output]\nstats_interval_s",
            "[mqtt]\nreconnect_max_s",
            "[flow]\nudp_timeout_s",
        ] {
            let err = Config::parse(&format!("{key} = 1e20\n"), "x")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("must be a positive number of seconds up to 31536000 (a year), not 100000000000000000000"),
                "{key}: {err}"
            );
        }
        let year = Config::parse("[flow]\ntcp_established_timeout_s = 31536000\n", "x").unwrap();
        assert!(
            std::time::Duration::try_from_secs_f64(year.flow.tcp_established_timeout_s).is_ok()
        );
        let err = Config::parse("[alert]\nmax_alerts_per_s = inf\n", "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("alert.max_alerts_per_s must be a positive number, not inf"),
            "{err}"
        );
    }

    #[test]
    fn queue_capacity_is_bounded() {
        // The queue's slots are allocated up front: 1e12 batches would abort the agent.
        let err = Config::parse("[capture]\nqueue_capacity = 1000000000000\n", "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("capture.queue_capacity must be at most 65536"),
            "{err}"
        );
        assert!(Config::parse("[capture]\nqueue_capacity = 65536\n", "x").is_ok());
    }

    /// Each of these was accepted and then aborted the agent at start-up: a table that cannot be
    /// allocated, a keep-alive the MQTT client refuses, a reconnect wait that is not a Duration.
    #[test]
    fn values_that_would_stop_the_agent_at_start_up_are_refused() {
        for (text, message) in [
            (
                "[flow]\nmax_flows = 9223372036854775807\n",
                "flow.max_flows must be at most 16777216",
            ),
            (
                "[host]\nmax_hosts = 100000000000\n",
                "host.max_hosts must be at most 16777216",
            ),
            (
                "[mqtt]\nkeepalive_s = 2\n",
                "mqtt.keepalive_s must be between 5 and 65535 seconds, not 2",
            ),
            (
                "[mqtt]\nreconnect_min_s = inf\nreconnect_max_s = inf\n",
                "mqtt.reconnect_min_s must be a positive number of seconds",
            ),
        ] {
            let err = Config::parse(text, "x").unwrap_err().to_string();
            assert!(err.contains(message), "{text}: {err}");
        }
        assert!(Config::parse("[mqtt]\nkeepalive_s = 5\n", "x").is_ok());
    }
}
