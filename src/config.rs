//! Configuration: the TOML file, its defaults and its validation.
//!
//! Each key is defined once below, with `section!`: its doc comment, type, default and checks.
//! From that come the structs, their `Default`, validation (an error names the full key), the
//! text `generate-config` prints ([`default_config_text`]) and docs/config.md
//! ([`reference_markdown`]). Unknown keys are an error naming the key. This module only
//! describes settings; it opens no file other than the config itself.

mod broker;
pub mod spec;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use broker::{BrokerUrl, check_build};
use spec::{
    Key, Setting, at_least, between, count, positive, require, seconds, section, value_settings,
};

/// Where `run` and `replay` look for a config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/edgewatch/edgewatch.toml";

/// The longest time span a `*_s` key takes: a year. Longer is a typo, and start-up turns some of
/// them into a `Duration`, which cannot hold every finite f64 (1e20 s panics).
pub const MAX_SECONDS: f64 = 365.0 * 86_400.0;

/// The most batches a flow worker's queue holds: its slots are allocated up front.
pub const MAX_QUEUE_CAPACITY: u64 = 65_536;

/// The most entries a flow, host, fragment or alert-window table may be given: far above any
/// router's memory, but below what an allocation can ask for.
pub const MAX_TABLE: u64 = 1 << 24;

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

section! {
    /// The agent's configuration (see docs/config.md); `Default` is what a missing key means.
    pub struct Config {
        /// Name of this sensor in alerts and MQTT topics. Empty: the host name.
        sensor_id: String = String::new();
        /// Directory for state kept across restarts (the MQTT outbox); --state-dir overrides it.
        state_dir: String = "/var/lib/edgewatch".into() => |_, dir| {
            require(!dir.is_empty(), "must not be empty")
        };
        capture: CaptureConfig = CaptureConfig::default();
        flow: FlowConfig = FlowConfig::default();
        host: HostConfig = HostConfig::default();
        model: ModelConfig = ModelConfig::default();
        alert: AlertConfig = AlertConfig::default();
        output: OutputConfig = OutputConfig::default();
        mqtt: MqttConfig = MqttConfig::default();
    }
}

section! {
    /// How packets are read from the network (`run`; `replay` reads a file).
    pub struct CaptureConfig in "capture." {
        /// Interfaces that `edgewatch run` captures on (--interface adds to this list).
        interfaces: Vec<String> = Vec::new();
        /// How to read them: "tpacket" (Linux: a memory-mapped TPACKET_V3 ring, no system call per
        /// packet, kernel timestamps, kernel drop counters), "pnet" (pnet's AF_PACKET socket, one
        /// system call per packet; the portable fallback, cargo feature pnet) or "auto" (tpacket on
        /// Linux, else pnet).
        backend: CaptureBackend = CaptureBackend::Auto => |_, backend| {
            let why = match backend.resolve() {
                CaptureBackend::Tpacket => "is Linux only",
                _ => "needs a build with the cargo feature \"pnet\"",
            };
            let name = backend.resolve().name();
            require(backend.built(), format!("\"{name}\" {why}: choose another backend"))
        };
        /// Capture threads per interface (tpacket only). Above 1, the interface's packets are
        /// spread over the threads by a hash of their addresses (PACKET_FANOUT, fragments
        /// reassembled first), so each flow stays on one thread. 1 suits a small router; a core per
        /// thread at most.
        threads: usize = 1 => between(1, 64), |c: &CaptureConfig, &threads| {
            let backend = c.backend.resolve();
            require(
                threads <= 1 || backend == CaptureBackend::Tpacket,
                format!(
                    "above 1 needs capture.backend = \"tpacket\" (PACKET_FANOUT), not \"{}\"",
                    backend.name()
                ),
            )
        };
        /// The size of each block of a capture thread's tpacket ring (a power of two, a multiple of
        /// the page size). The kernel hands a block over when it is full or 100 ms after its first
        /// packet, and keeps the first 256 bytes of each packet (the headers), so 2 MiB hold about
        /// 6,500 packets; when every block is full, packets are dropped and counted as
        /// kernel_drops. Memory: threads x interfaces x ring_blocks x ring_block_kib.
        ring_block_kib: usize = 128 => |_, &kib| {
            require(
                kib.is_power_of_two() && (4..=4096).contains(&kib),
                format!("must be a power of two from 4 to 4096, not {kib}"),
            )
        };
        /// The number of blocks in each capture thread's tpacket ring (see ring_block_kib).
        ring_blocks: usize = 16 => between(2, 1024), |c: &CaptureConfig, &blocks| {
            let mib = c.ring_block_kib * blocks / 1024;
            require(
                c.ring_block_kib * blocks <= 256 * 1024,
                format!(
                    "times capture.ring_block_kib must be at most 256 MiB per ring, not {mib} MiB"
                ),
            )
        };
        /// Put the interfaces in promiscuous mode (see traffic not addressed to this host).
        promiscuous: bool = true;
        /// Packets per batch handed from a capture thread to the dispatcher, and from the
        /// dispatcher to each flow worker. Replay hands on batches 4 times as large, with queues
        /// (below) half as long: twice the packets in flight.
        batch_size: usize = 128 => count(1, 4096);
        /// Batches each flow worker's queue holds. When it is full the dispatcher waits: live,
        /// the capture waits and the tpacket ring holds the packets; replay never loses a
        /// packet. Workers can be this far apart, and the scorer holds the events of the one ahead
        /// until the other catches up: under a flood, each batch of this queue costs about 90 KB
        /// there.
        queue_capacity: usize = 16 => count(1, MAX_QUEUE_CAPACITY);
    }
}

/// How live capture reads an interface (`capture.backend`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
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

section! {
    /// How packets become flows, and when a flow is evaluated.
    pub struct FlowConfig in "flow." {
        /// Flow worker threads; flows are sharded over them by their 5-tuple. 0: one per CPU, at
        /// most 4.
        workers: usize = 0 => count(0, 64);
        /// Most flows held at once (over all workers). When full, the flow closest to its timeout
        /// is evaluated and evicted (counted as flows_evicted).
        max_flows: usize = 65536 => count(1, MAX_TABLE);
        /// Idle timeout of a TCP flow whose handshake has not completed.
        tcp_handshake_timeout_s: f64 = 10.0 => seconds;
        /// Idle timeout of an established TCP flow.
        tcp_established_timeout_s: f64 = 300.0 => seconds;
        /// How long an ended TCP flow (FIN both ways, or RST) keeps absorbing late packets.
        tcp_closed_timeout_s: f64 = 5.0 => seconds;
        /// Idle timeout of a UDP flow.
        udp_timeout_s: f64 = 30.0 => seconds;
        /// Idle timeout of an ICMP flow (echo flows are grouped by identifier).
        icmp_timeout_s: f64 = 10.0 => seconds;
        /// A long flow is evaluated again every active_timeout_s while it lasts.
        active_timeout_s: f64 = 120.0 => seconds;
        /// Evaluate a flow as soon as it has this many packets, for fast alerts, and again at 4,
        /// 16 and 64 times as many (so a flood inside one flow is scored while it lasts).
        early_eval_packets: u32 = 8;
        /// Evaluate a flow that has not been evaluated yet this long after its first packet (so
        /// single-packet probes and floods are scored within about half a second).
        probe_eval_s: f64 = 0.5 => seconds;
        /// Evaluations per flow at most, the final one included (it always happens).
        max_evals_per_flow: u8 = 5;
        /// IP datagrams whose later fragments are waiting to be attributed to a flow, at most.
        max_fragments: usize = 1024 => count(0, MAX_TABLE);
        /// Emergency mode (under a flood of new flows): when a flow worker's table reaches this
        /// share of its flows, the idle timeouts above shrink by emergency_timeout_scale, so that
        /// the flows a flood leaves behind expire (and are evaluated) instead of pushing out live
        /// ones. The mode ends when the table is back under emergency_leave. Entries are counted as
        /// flow_emergencies.
        emergency_enter: f64 = 0.9 => |f: &FlowConfig, &enter| {
            let leave = f.emergency_leave;
            require(
                leave > 0.0 && leave < enter && enter <= 1.0,
                format!(
                    "flow.emergency_leave ({leave}) and flow.emergency_enter ({enter}) must be \
                     shares of the table with 0 < emergency_leave < emergency_enter <= 1"
                ),
            )
        };
        /// The share of the table under which emergency mode ends.
        emergency_leave: f64 = 0.7;
        /// The factor applied to the idle timeouts during emergency mode.
        emergency_timeout_scale: f64 = 0.1 => |_, &scale| {
            require(
                scale > 0.0 && scale <= 1.0,
                format!("must be above 0 and at most 1, not {scale}"),
            )
        };
    }
}

section! {
    /// The per-host context of each flow's features.
    pub struct HostConfig in "host." {
        /// The short sliding window of the per-host context (new flows per second, distinct ports
        /// and hosts, failed and unanswered attempts).
        short_window_s: f64 = 2.0 => seconds;
        /// The long sliding window of the per-host context (at least as long as the short one).
        long_window_s: f64 = 30.0 => seconds, |h: &HostConfig, &long| {
            require(long >= h.short_window_s, "must not be shorter than host.short_window_s")
        };
        /// Hosts tracked at most; when full, hosts idle for a long window are forgotten first and
        /// new hosts beyond the bound are not tracked (counted as hosts_untracked).
        max_hosts: usize = 16384 => count(1, MAX_TABLE);
    }
}

section! {
    /// The anomaly model that scores each flow evaluation.
    pub struct ModelConfig in "model." {
        /// ONNX model file. Empty: the model embedded in the binary.
        path: String = String::new();
        /// Alert when a flow's anomaly score is at or above this. Unset: the model's own
        /// edgewatch.threshold metadata.
        threshold: Option<f32> = None, example 0.5 => |_, threshold| match threshold {
            Some(t) => {
                require((0.0..=1.0).contains(t), format!("must be between 0 and 1, not {t}"))
            }
            None => Ok(()),
        };
        /// Flows scored per inference call at most (bigger batches cost less per flow). Replay fills
        /// its batches; live capture also scores a batch once its oldest flow has waited 50 ms,
        /// so a quiet link still alerts within a fraction of a second.
        batch_size: usize = 256 => count(1, 65_536);
    }
}

section! {
    /// What is alerted, and how often.
    pub struct AlertConfig in "alert." {
        /// "incident": one alert per behaviour and episode (a source's scan or brute force, a flood
        /// or slow DoS against a victim), raised once its evidence reaches the minimums below and
        /// updated (same alert_id, next update number) while it goes on. "flow": one alert per flow
        /// evaluation the model scores at or above the threshold, nothing grouped.
        mode: AlertMode = AlertMode::Incident;
        /// Alert records per second at most over the whole sensor (final updates always go out);
        /// the rest are counted as alerts_suppressed.
        max_alerts_per_s: f64 = 50.0 => positive;
        /// Incidents (and candidates still gathering evidence) tracked at once at most; past it the
        /// least recently active one is closed or dropped.
        max_incidents: usize = 8192 => count(1, MAX_TABLE);
        /// An incident with no new flow evaluation for this long, and none of its flows still
        /// open, is over: its alert gets a final update, and the same behaviour later is a new
        /// alert.
        incident_idle_s: f64 = 30.0 => seconds;
        /// An alert is updated at most this often while its incident grows (a flood's sooner
        /// when a source it did not name has sent `flood_min_packets` on its own, or one it named
        /// as much since it came back after 2 s without a packet, a slow DoS's likewise with 3 x
        /// `slowdos_min_connections`, any incident's when it resumes after
        /// 2 s without a packet with its minimum of new flows (`scan_min_targets`,
        /// `bruteforce_min_sessions`, `flood_min_flows`, `slowdos_min_connections`; a UDP or
        /// ICMP flood's also with `flood_min_packets` packets): a second after the last record
        /// at the soonest).
        update_interval_s: f64 = 10.0 => seconds;
        /// A scan is alerted once its source has probed this many distinct (host, port)
        /// targets, ...
        scan_min_targets: u64 = 5 => at_least(1);
        /// ... at this many targets per second or more (over their time, at least a second).
        /// Targets must also form a grid: ports of one host, one port of many hosts, or as many
        /// targets as four times the fewer of hosts and ports (peers each reached on a port of
        /// their own are not a scan).
        scan_min_targets_per_s: f64 = 1.0 => positive;
        /// A brute force: this many sessions from one source to one service that exchanged
        /// data, ...
        bruteforce_min_sessions: u64 = 4 => at_least(1);
        /// ... at this many sessions per minute or more (over their time, at least a second).
        bruteforce_min_sessions_per_min: f64 = 20.0 => positive;
        /// A brute force also: this many login attempts in the sessions (of at most 60 s) the
        /// model flags as one, however few the sessions. A session's attempts are its requests the server
        /// answered alike in a row (answers of one size, 16 bytes or more; requests within 32
        /// bytes): refusing password after password, a server gives the same short answer each
        /// time, encrypted or not. A slow guesser (one password every few seconds, several in
        /// one SSH connection) makes too few sessions for the session count. 0: off.
        bruteforce_min_logins: u64 = 4;
        /// A brute force also, whatever the model scores: this many sessions (TCP, data both ways,
        /// at most 60 s each) from one source to one service, one after another (never two at
        /// once), each within `incident_idle_s` of the one before, back to back (connected at
        /// least half of their time, taken as at least a second) and alike (bytes each way
        /// within a factor of 2 of the first session's): password guessing one connection at a
        /// time. 0: off.
        bruteforce_repeat_min_sessions: u64 = 10;
        /// A flood: this many flows against one victim (and a source of a TCP flood or slow DoS
        /// is named in its `top_sources` once it has this many flows in it; a TCP flood that
        /// established this many connections explains its leading source's brute force or slow
        /// DoS of the same service), ...
        flood_min_flows: u64 = 8 => at_least(1);
        /// ... or this many UDP or ICMP packets in fewer flows (one 5-tuple can carry a flood;
        /// with `flow.early_eval_packets` = 8 its fourth early evaluation, at 512 packets,
        /// reaches 500; four flows at their third, at 128 packets each), ...
        flood_min_packets: u64 = 500 => at_least(1);
        /// ... at this many packets per second or more sent to the victim (over their time, at
        /// least a second): a flood sends, and a download the victim serves is no flood of it.
        flood_min_packets_per_s: f64 = 100.0 => positive;
        /// Lone attempts (a SYN or datagram or two, unanswered) to one host are a flood of it,
        /// whatever the model scores them, when this many distinct sources send them (spoofed
        /// or many-bot floods), at the flood's rate: one alert about the victim, not a scan
        /// candidate per source.
        flood_min_sources: u64 = 16 => at_least(2);
        /// A slow DoS: this many TCP connections held against one service.
        slowdos_min_connections: u64 = 16 => at_least(1);
    }
}

/// What an alert stands for (see `incident`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AlertMode {
    /// One alert per behaviour and episode, updated while it goes on.
    #[default]
    Incident,
    /// One alert per flow evaluation at or above the threshold.
    Flow,
}

section! {
    /// Where alerts and stats go besides MQTT.
    pub struct OutputConfig in "output." {
        /// Where alerts go as JSON lines: "-" for standard output, or a file path (appended).
        alerts: String = "-".into();
        /// Seconds between two stats reports (logged; published on MQTT when configured).
        stats_interval_s: f64 = 60.0 => seconds;
    }
}

section! {
    /// MQTT publishing of alerts, status and stats (see docs/mqtt.md). An empty `url` turns it off.
    /// The collector's config (collector.toml) has this section too.
    pub struct MqttConfig in "mqtt." {
        /// Broker to publish alerts, status and stats to (see docs/mqtt.md): "mqtt://host:port", or
        /// "mqtts://host:port" for TLS. Empty: MQTT is off. --mqtt URL overrides it.
        url: String = String::new() => |_, url| match url.as_str() {
            "" => Ok(()),
            url => check_build(&BrokerUrl::parse(url)?),
        };
        /// Protocol version: "auto" (MQTT 5, or 3.1.1 when the broker does not speak 5), "5" or
        /// "3.1.1".
        protocol: MqttProtocol = MqttProtocol::Auto;
        /// User name to log in with. Empty: no login.
        username: String = String::new();
        /// File holding the password (its first line). Empty: no password.
        password_file: String = String::new();
        /// PEM file of the CA certificates that sign the broker's certificate (mqtts only). Empty:
        /// the system's trusted CAs.
        ca_file: String = String::new() => tls_only;
        /// PEM file of this sensor's client certificate (chain), for brokers that authenticate
        /// clients by certificate (mqtts only). Empty: no client certificate.
        client_cert_file: String = String::new() => tls_only;
        /// PEM file of the private key that goes with client_cert_file (mqtts only).
        client_key_file: String = String::new() => tls_only, |m: &MqttConfig, key| {
            require(
                m.url.is_empty() || m.client_cert_file.is_empty() == key.is_empty(),
                "and mqtt.client_cert_file go together: set both or neither",
            )
        };
        /// Seconds between keep-alive pings when nothing else is sent; the broker declares the
        /// sensor offline (its last will) after 1.5 times this without a word. The MQTT client
        /// refuses less than 5 s.
        keepalive_s: f64 = 60.0 => |_, &s| {
            require(
                s.is_finite() && (5.0..=65535.0).contains(&s),
                format!("must be between 5 and 65535 seconds, not {s}"),
            )
        };
        /// Topics are <topic_prefix>/<sensor_id>/alert, .../status and .../stats.
        topic_prefix: String = "edgewatch/v1".into() => |_, prefix| {
            require(
                !(prefix.is_empty() || prefix.ends_with('/') || prefix.contains(['+', '#', '\0'])),
                format!(
                    "must be a non-empty topic without wildcards or a trailing '/', not {prefix:?}"
                ),
            )
        };
        /// Wait between reconnection attempts: starts at reconnect_min_s, doubles up to
        /// reconnect_max_s, with random jitter so that a fleet does not reconnect in step.
        reconnect_min_s: f64 = 1.0 => seconds;
        /// The longest wait between two reconnection attempts.
        reconnect_max_s: f64 = 60.0 => seconds, |m: &MqttConfig, &max| {
            require(max >= m.reconnect_min_s, "must not be shorter than mqtt.reconnect_min_s")
        };
        /// Alerts not yet acknowledged by the broker wait in an outbox file under state_dir, which
        /// survives restarts and crashes. Past this size the oldest are dropped (counted as
        /// alerts_outbox_dropped in stats).
        outbox_max_mb: f64 = 16.0 => positive;
    }
}

/// A TLS file given with an mqtt:// url: the setting would be silently ignored.
#[allow(clippy::ptr_arg, reason = "a check takes the key's value as declared")]
fn tls_only(m: &MqttConfig, file: &String) -> Result<(), String> {
    let plain = BrokerUrl::parse(&m.url).is_ok_and(|url| !url.tls);
    require(
        !plain || file.is_empty(),
        "is only used with TLS: give an mqtts:// url",
    )
}

/// The MQTT protocol version to speak (`mqtt.protocol`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum MqttProtocol {
    /// MQTT 5, or 3.1.1 when the broker does not speak 5.
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "5")]
    V5,
    #[serde(rename = "3.1.1")]
    V311,
}

value_settings! { CaptureBackend, AlertMode, MqttProtocol }

/// Every section header and key of the config, in file order, with its default.
pub fn keys() -> Vec<Key> {
    let mut keys = Vec::new();
    let root = Key {
        name: "",
        doc: &[],
        section: true,
        default: None,
        example: None,
    };
    Config::default().add_keys(root, &mut keys);
    keys
}

/// The documented default configuration, printed by `edgewatch generate-config`.
pub fn default_config_text() -> String {
    let mut text = String::from(
        "# edgewatch configuration (TOML). Every key is optional; the values below are the \
         defaults.\n# Check a file with `edgewatch validate --config FILE`. Unknown keys are an \
         error.\n\n",
    );
    for key in keys() {
        if key.section && key.name.is_empty() {
            continue;
        }
        if key.section {
            text.push('\n');
        }
        for line in key.doc {
            text += &format!("#{line}\n");
        }
        let name = key.short_name();
        text += &match (key.section, key.default, key.example) {
            (true, ..) => format!("[{name}]\n"),
            (false, Some(default), _) => format!("{name} = {default}\n"),
            (false, None, Some(example)) => format!("# {name} = {example}\n"),
            (false, None, None) => format!("# {name} = (unset)\n"),
        };
    }
    text
}

/// docs/config.md: every key with its default, unit and meaning.
pub fn reference_markdown() -> String {
    let mut md = String::from(
        "# Configuration reference\n\n\
         Generated from the key definitions in src/config.rs: do not edit, run\n\
         `EDGEWATCH_UPDATE_DOCS=1 cargo test config_doc` after changing them.\n\n\
         Every key is optional; a missing key has its default. `edgewatch generate-config` prints\n\
         the same as a commented config file, and `edgewatch validate --config FILE` checks a\n\
         file. Unknown keys are an error that names the key.\n",
    );
    let cell = |text: String| text.replace('|', "\\|");
    for key in keys() {
        if key.section {
            let title = match key.name {
                "" => "Top level".to_string(),
                name => format!("`[{name}]`"),
            };
            md += &format!("\n## {title}\n\n");
            // The root's doc comment describes the struct, not the top-level keys.
            if !key.name.is_empty() {
                md += &format!("{}\n\n", key.doc_text());
            }
            md += "| key | default | unit | meaning |\n|---|---|---|---|\n";
            continue;
        }
        let default = match (&key.default, &key.example) {
            (Some(default), _) => format!("`{default}`"),
            (None, Some(example)) => format!("unset (e.g. `{example}`)"),
            (None, None) => "unset".to_string(),
        };
        md += &format!(
            "| `{}` | {} | {} | {} |\n",
            key.name,
            cell(default),
            key.unit().unwrap_or(""),
            cell(key.doc_text())
        );
    }
    md
}

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
        config
            .validate()
            .map_err(|(key, problem)| ConfigError::Invalid {
                path: origin.to_string(),
                key,
                problem,
            })?;
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
        let text = default_config_text();
        let parsed = Config::parse(&text, "default").expect("default config parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn every_key_is_documented() {
        // Each key line in the generated config is preceded by a comment line.
        let text = default_config_text();
        let lines: Vec<&str> = text.lines().collect();
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
    fn every_key_is_generated_once() {
        // "section.key" for each key line of the text, commented-out examples included.
        let mut section = String::new();
        let mut generated = Vec::new();
        for line in default_config_text().lines() {
            if let Some(name) = line.strip_prefix('[') {
                section = format!("{}.", name.trim_end_matches(']'));
            } else if let Some((name, _)) = line.trim_start_matches("# ").split_once(" = ")
                && !name.contains(' ')
            {
                generated.push(format!("{section}{name}"));
            }
        }
        let table: Vec<String> = keys()
            .into_iter()
            .filter(|k| !k.section)
            .map(|k| k.name.to_string())
            .collect();
        assert_eq!(generated, table);
        assert!(table.iter().all(|k| !k.is_empty()));
        let mut unique = table.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), table.len());
        assert!(table.contains(&"model.threshold".to_string()));
        assert!(default_config_text().contains("\n# threshold = 0.5\n"));
    }

    #[test]
    fn every_key_is_in_its_section() {
        let mut section = "";
        for key in keys() {
            if key.section {
                section = key.name;
                assert!(!key.doc.is_empty() || section.is_empty(), "{section}");
            } else if section.is_empty() {
                assert!(!key.name.contains('.'), "{}", key.name);
            } else {
                assert_eq!(key.name, format!("{section}.{}", key.short_name()));
            }
        }
        let key = |name: &str| keys().into_iter().find(|k| k.name == name).unwrap();
        assert_eq!(key("flow.udp_timeout_s").unit(), Some("seconds"));
        assert_eq!(key("alert.max_alerts_per_s").unit(), Some("per second"));
        assert_eq!(key("flow.max_flows").unit(), None);
        assert_eq!(
            key("mqtt.topic_prefix").default.as_deref(),
            Some("\"edgewatch/v1\"")
        );
    }

    /// docs/config.md is generated from the key definitions; this fails when it is out of date.
    #[test]
    fn config_doc_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md");
        let generated = reference_markdown();
        if std::env::var_os("EDGEWATCH_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/config.md differs from the key definitions in src/config.rs: regenerate it \
             with `EDGEWATCH_UPDATE_DOCS=1 cargo test config_doc`"
        );
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
