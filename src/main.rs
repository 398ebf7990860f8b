//! The `edgewatch` command line: parses arguments, loads config and model, and hands over to
//! `agent`. Exit codes: 0 success, 1 a runtime failure or a failed `validate`, 2 bad input
//! (arguments, config, model or capture file).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use edgewatch::agent::{self, Output, Pipeline};
use edgewatch::capture::file::CaptureReader;
use edgewatch::capture::live::{self, SystemClock};
use edgewatch::config::{Config, MAX_SECONDS, default_config_text};
use edgewatch::dispatch::WhenFull;
use edgewatch::features::{FEATURE_NAMES, schema_id};
use edgewatch::model::Scorer;
use edgewatch::scoring::Reload;
use edgewatch::sink::JsonLines;

#[derive(Parser)]
#[command(
    name = "edgewatch",
    version,
    about = "Network-anomaly sensor for routers and gateways"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture live on interfaces until SIGTERM or SIGINT, then flush flows and alerts.
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Interface to capture on (repeatable); added to capture.interfaces.
        #[arg(long = "interface", short = 'i')]
        interfaces: Vec<String>,
        /// Where alerts go: "-" for standard output, or a file (default: output.alerts).
        #[arg(long)]
        alerts: Option<String>,
        /// ONNX model file (default: model.path, else the embedded model).
        #[arg(long)]
        model: Option<String>,
        /// Also publish alerts, status and stats to this MQTT broker, mqtt://host:port or
        /// mqtts://host:port (default: mqtt.url).
        #[arg(long, value_name = "URL")]
        mqtt: Option<String>,
        /// Directory for the MQTT outbox (default: state_dir).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Read a pcap or pcapng file through the sensor and write its alerts.
    Replay {
        pcap: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where alerts go: "-" for standard output (the default), or a file.
        #[arg(long)]
        alerts: Option<String>,
        /// Flow worker threads, 1 to 64 (default: flow.workers).
        #[arg(long, value_parser = workers_arg())]
        workers: Option<usize>,
        /// ONNX model file (default: model.path, else the embedded model).
        #[arg(long)]
        model: Option<String>,
        /// Also publish the alerts to this MQTT broker, mqtt://host:port or mqtts://host:port
        /// (default: mqtt.url); exits once the broker acknowledged every alert.
        #[arg(long, value_name = "URL")]
        mqtt: Option<String>,
        /// Directory for the MQTT outbox (default: state_dir).
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// With MQTT, wait at most this long for the broker to acknowledge every alert; the
        /// rest stay in the outbox for the next start.
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        drain_timeout_s: f64,
    },
    /// Write the flow feature vectors of a capture as CSV (what the model is trained on).
    Features {
        /// The capture to read (not needed with --schema).
        #[arg(required_unless_present = "schema")]
        pcap: Option<PathBuf>,
        #[arg(short = 'o', long = "output", required_unless_present = "schema")]
        output: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Flow worker threads, 1 to 64 (default: flow.workers).
        #[arg(long, value_parser = workers_arg())]
        workers: Option<usize>,
        /// Print the feature schema (id and ordered names) as JSON and exit.
        #[arg(long)]
        schema: bool,
    },
    /// Check a config file and the model; exit 0 when both are usable, 1 otherwise.
    Validate {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        model: Option<String>,
    },
    /// Print a documented default config.
    GenerateConfig,
}

/// `--workers`: as many as `flow.workers` may be.
fn workers_arg() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..=64)
}

/// Tags an error the user caused (exit code 2) rather than a runtime failure (exit code 1).
fn bad<E: Into<anyhow::Error>>(e: E) -> anyhow::Error {
    anyhow::Error::new(BadInputMarker).context(format!("{:#}", e.into()))
}

#[derive(Debug, thiserror::Error)]
#[error("bad input")]
struct BadInputMarker;

/// glibc gives each thread that allocates its own malloc arena (up to 8 per core), and each keeps
/// the memory freed into it. The pipeline's few threads hand flows and events to one another; one
/// arena keeps the resident size bounded under a flood (when chosen: 60.1-60.9 MiB, against
/// 62.6-66.0 with two arenas and 64-71 with glibc's default, at the price of some lock contention;
/// since the flow slots and paced flushes, one and two arenas peak alike, 58-61.5 MiB, and neither
/// was measurably faster: bench/README.md, "Random-source SYN flood").
/// MALLOC_ARENA_MAX in the environment still decides. musl's allocator (the static router builds)
/// has no arenas.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            let is_bad_input = e.chain().any(|c| c.is::<BadInputMarker>());
            // The context holds the whole message; the marker is only a tag.
            let message = e
                .chain()
                .next()
                .map(ToString::to_string)
                .unwrap_or_default();
            eprintln!("edgewatch: error: {message}");
            ExitCode::from(if is_bad_input { 2 } else { 1 })
        }
    }
}

/// A capture whose every frame has a link type edgewatch does not read: the same error (and exit
/// code) as a pcap file with such a link type, which is refused when it is opened.
fn unusable(pcap: &std::path::Path, linktype: u32) -> anyhow::Error {
    bad(
        edgewatch::capture::file::CaptureError::UnsupportedLinkType {
            path: pcap.display().to_string(),
            linktype,
        },
    )
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let (config, origin) = Config::load_default_or(path.map(PathBuf::as_path)).map_err(bad)?;
    if let Some(origin) = origin {
        log::debug!("Config read from {}.", origin.display());
    }
    Ok(config)
}

fn load_model(config: &Config, over: Option<&String>) -> anyhow::Result<Scorer> {
    let path = over.cloned().unwrap_or_else(|| config.model.path.clone());
    Scorer::load(&path).map_err(bad)
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::GenerateConfig => {
            print!("{}", default_config_text());
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config, model } => {
            let config = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!(
                        "edgewatch: config is not valid: {}",
                        e.chain()
                            .next()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    );
                    return Ok(ExitCode::from(1));
                }
            };
            match load_model(&config, model.as_ref()) {
                Ok(scorer) => {
                    let info = scorer.info();
                    println!(
                        "config ok; model {} {} from {} ok (feature schema {}, classes [{}], threshold {})",
                        info.name,
                        info.version,
                        info.origin,
                        info.schema,
                        info.classes.join(", "),
                        config.model.threshold.unwrap_or(info.threshold)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!(
                        "edgewatch: model is not usable: {}",
                        e.chain()
                            .next()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    );
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Features {
            pcap,
            output,
            config,
            workers,
            schema,
        } => {
            if schema {
                let doc =
                    serde_json::json!({ "schema_id": schema_id(), "features": FEATURE_NAMES });
                println!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(ExitCode::SUCCESS);
            }
            let (pcap, output) = (
                pcap.expect("clap requires it"),
                output.expect("clap requires it"),
            );
            let config = load_config(config.as_ref())?;
            let reader = CaptureReader::open(&pcap).map_err(bad)?;
            let file = std::fs::File::create(&output)
                .with_context(|| format!("cannot create {}", output.display()))?;
            let csv = Box::new(std::io::BufWriter::new(file));
            let pipeline = Pipeline::spawn(
                &config,
                workers.unwrap_or_else(|| config.workers()),
                Output::Features { csv },
                WhenFull::Block,
            )?;
            let summary = agent::replay(reader, pipeline, &*stop_flag()?)?;
            if let Some(linktype) = summary.unusable_linktype() {
                return Err(unusable(&pcap, linktype));
            }
            eprintln!(
                "features: {} packets, {} flows, {} rows (feature schema {}) written to {} in {:.2} s",
                summary.stats.packets,
                summary.stats.flows_created,
                summary.stats.flows_scored,
                schema_id(),
                output.display(),
                summary.elapsed.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            pcap,
            config,
            alerts,
            workers,
            model,
            mqtt,
            state_dir,
            drain_timeout_s,
        } => {
            let config = load_config(config.as_ref())?;
            let scorer = load_model(&config, model.as_ref())?;
            let reader = CaptureReader::open(&pcap).map_err(bad)?;
            if !(drain_timeout_s.is_finite() && (0.0..=MAX_SECONDS).contains(&drain_timeout_s)) {
                return Err(bad(anyhow::anyhow!(
                    "--drain-timeout-s must be a number of seconds from 0 to {MAX_SECONDS} (a year)"
                )));
            }
            let target = alerts.unwrap_or_else(|| "-".to_string());
            let sink = JsonLines::open(&target)
                .with_context(|| format!("cannot open {target} for alerts"))?;
            let sensor_id = config.sensor_id();
            let mqtt = mqtt_glue::open(
                &config,
                mqtt.as_deref(),
                state_dir.as_ref(),
                &sensor_id,
                &scorer,
                Vec::new(),
                "replay",
            )?;
            let output = Output::Alerts {
                scorer,
                sink: mqtt_glue::sink(mqtt.as_ref(), sink),
                sensor_id,
            };
            let workers = workers.unwrap_or_else(|| config.workers());
            let pipeline = Pipeline::spawn(&config, workers, output, WhenFull::Block)?;
            let publisher = mqtt_glue::start(mqtt, &pipeline, &config)?;
            let stop = stop_flag()?;
            let result = agent::replay(reader, pipeline, &stop);
            let unusable_linktype = result.as_ref().ok().and_then(|s| s.unusable_linktype());
            if let (Ok(summary), None) = (&result, unusable_linktype) {
                let s = &summary.stats;
                let secs = summary.elapsed.as_secs_f64();
                eprintln!(
                    "replay: {} packets, {} flows, {} alerts, {} skipped, {} dropped, {:.3} s, {:.0} packets/s",
                    s.frames,
                    s.flows_created,
                    s.alerts_emitted,
                    s.skipped_total() + s.fragments_unattributed,
                    s.queue_drops,
                    secs,
                    s.frames as f64 / secs.max(1e-9)
                );
            }
            // The broker still gets what the pipeline made when an output or a thread failed.
            // SIGINT or SIGTERM during the wait ends it; what is left stays in the outbox.
            let drain = Duration::from_secs_f64(drain_timeout_s);
            let code = mqtt_glue::finish(publisher, drain, &stop);
            result?;
            if let Some(linktype) = unusable_linktype {
                return Err(unusable(&pcap, linktype));
            }
            Ok(code)
        }
        Command::Run {
            config,
            interfaces,
            alerts,
            model,
            mqtt,
            state_dir,
        } => {
            let config_path = config;
            let config = load_config(config_path.as_ref())?;
            let scorer = load_model(&config, model.as_ref())?;
            let mut names = config.capture.interfaces.clone();
            names.extend(interfaces);
            // Each interface once, in the order given.
            let mut seen = std::collections::HashSet::new();
            names.retain(|n| seen.insert(n.clone()));
            if names.is_empty() {
                return Err(bad(anyhow::anyhow!(
                    "no interface to capture on: give --interface IF or set capture.interfaces in the config"
                )));
            }
            let mut receivers = Vec::new();
            for name in &names {
                let opened = live::open(name, &config.capture).map_err(bad)?;
                let threads = opened.len();
                for (i, receiver) in opened.into_iter().enumerate() {
                    let label = match threads {
                        1 => name.clone(),
                        _ => format!("{name}#{i}"),
                    };
                    receivers.push((label, receiver));
                }
            }
            let target = alerts.unwrap_or_else(|| config.output.alerts.clone());
            let sink = JsonLines::open(&target)
                .with_context(|| format!("cannot open {target} for alerts"))?;
            let sensor_id = config.sensor_id();
            let mqtt = mqtt_glue::open(
                &config,
                mqtt.as_deref(),
                state_dir.as_ref(),
                &sensor_id,
                &scorer,
                names.clone(),
                "run",
            )?;
            let output = Output::Alerts {
                scorer,
                sink: mqtt_glue::sink(mqtt.as_ref(), sink),
                sensor_id,
            };
            let pipeline =
                Pipeline::spawn(&config, config.workers(), output, WhenFull::DropNewest)?;
            let publisher = mqtt_glue::start(mqtt, &pipeline, &config)?;
            let stop = stop_flag()?;
            let reloader = reloader(config_path, model, config.clone())?;
            log::info!(
                "Capturing on {} ({}).",
                names.join(", "),
                capture_setup(&config.capture)
            );
            let result = agent::run_live(
                receivers,
                Arc::new(SystemClock),
                pipeline,
                config.capture.batch_size,
                Duration::from_secs_f64(config.output.stats_interval_s),
                stop,
                Some(reloader),
            );
            if let Ok(s) = &result {
                eprintln!(
                    "run: {} packets, {} flows, {} alerts, {} skipped, {} dropped, {} dropped by the kernel",
                    s.frames,
                    s.flows_created,
                    s.alerts_emitted,
                    s.skipped_total() + s.fragments_unattributed,
                    s.queue_drops,
                    s.kernel_drops
                );
            }
            let no_stop = AtomicBool::new(false);
            let code = mqtt_glue::finish(publisher, RUN_DRAIN_TIMEOUT, &no_stop);
            result?;
            Ok(code)
        }
    }
}

/// SIGHUP: reads the config file and the model again. The model, the threshold, the model's
/// batch size and the [alert] settings change at once; other changed sections are named in the
/// log and wait for a restart. An unusable config or model keeps everything as it was.
fn reloader(
    config_path: Option<PathBuf>,
    model_over: Option<String>,
    started: Config,
) -> anyhow::Result<agent::Reloader> {
    let requested = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, requested.clone())
        .context("installing the SIGHUP handler")?;
    let load = move || -> Result<Reload, String> {
        let config = load_config(config_path.as_ref()).map_err(|e| format!("{e:#}"))?;
        let scorer = load_model(&config, model_over.as_ref()).map_err(|e| format!("{e:#}"))?;
        let pending: Vec<&str> = [
            ("sensor_id", config.sensor_id != started.sensor_id),
            ("state_dir", config.state_dir != started.state_dir),
            ("[capture]", config.capture != started.capture),
            ("[flow]", config.flow != started.flow),
            ("[host]", config.host != started.host),
            ("[output]", config.output != started.output),
            ("[mqtt]", config.mqtt != started.mqtt),
        ]
        .into_iter()
        .filter_map(|(what, changed)| changed.then_some(what))
        .collect();
        if !pending.is_empty() {
            log::warn!(
                "Reload: changes to {} take effect at the next start.",
                pending.join(", ")
            );
        }
        Ok(Reload {
            threshold: config.model.threshold.unwrap_or(scorer.info().threshold),
            scorer,
            alert: config.alert.clone(),
            batch_size: config.model.batch_size,
        })
    };
    Ok(agent::Reloader {
        requested,
        load: Box::new(load),
    })
}

/// The capture backend in words, for the start-up log line.
fn capture_setup(c: &edgewatch::config::CaptureConfig) -> String {
    use edgewatch::config::CaptureBackend;
    match c.backend.resolve() {
        CaptureBackend::Tpacket => format!(
            "tpacket, {} thread{} per interface, {} KiB ring each",
            c.threads,
            if c.threads == 1 { "" } else { "s" },
            c.ring_block_kib * c.ring_blocks
        ),
        b => b.name().to_string(),
    }
}

/// How long `run` keeps sending the outbox after SIGTERM; the rest waits for the next start.
const RUN_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// MQTT for `run` and `replay`, when `--mqtt` or `mqtt.url` names a broker.
#[cfg(feature = "mqtt")]
mod mqtt_glue {
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use edgewatch::agent::Pipeline;
    use edgewatch::alert::ModelRef;
    use edgewatch::config::Config;
    use edgewatch::model::Scorer;
    pub use edgewatch::mqtt::{Mqtt, Publisher};
    use edgewatch::mqtt::{MqttError, status::Identity};
    use edgewatch::sink::{AlertSink, JsonLines};

    use super::bad;

    pub fn open(
        config: &Config,
        url: Option<&str>,
        state_dir: Option<&PathBuf>,
        sensor_id: &str,
        scorer: &Scorer,
        interfaces: Vec<String>,
        mode: &str,
    ) -> anyhow::Result<Option<Mqtt>> {
        let url = url.unwrap_or(&config.mqtt.url);
        if url.is_empty() {
            return Ok(None);
        }
        let model = ModelRef {
            name: scorer.info().name.clone(),
            version: scorer.info().version.clone(),
        };
        let identity = Identity::new(sensor_id, model, interfaces, mode);
        let dir = state_dir
            .cloned()
            .unwrap_or_else(|| PathBuf::from(&config.state_dir));
        match Mqtt::open(&config.mqtt, url, &dir, identity) {
            Ok(mqtt) => Ok(Some(mqtt)),
            Err(e @ (MqttError::Outbox(_) | MqttError::Spawn(_))) => Err(e.into()),
            Err(e) => Err(bad(e)),
        }
    }

    pub fn sink(mqtt: Option<&Mqtt>, lines: JsonLines) -> Box<dyn AlertSink> {
        match mqtt {
            Some(mqtt) => Box::new(mqtt.sink(lines)),
            None => Box::new(lines),
        }
    }

    pub fn start(
        mqtt: Option<Mqtt>,
        pipeline: &Pipeline,
        config: &Config,
    ) -> anyhow::Result<Option<Publisher>> {
        let Some(mqtt) = mqtt else { return Ok(None) };
        let interval = Duration::from_secs_f64(config.output.stats_interval_s);
        Ok(Some(mqtt.start(pipeline.stats.clone(), interval)?))
    }

    /// Waits for the broker to acknowledge what is left, at most `timeout`, and says how it
    /// went. Exit code 1 when alerts are left in the outbox.
    pub fn finish(publisher: Option<Publisher>, timeout: Duration, stop: &AtomicBool) -> ExitCode {
        let Some(publisher) = publisher else {
            return ExitCode::SUCCESS;
        };
        let outcome = publisher.finish(timeout, stop);
        let dropped = if outcome.dropped > 0 {
            format!(
                "; {} dropped because the outbox was full or could not be written",
                outcome.dropped
            )
        } else {
            String::new()
        };
        if outcome.delivered_all && outcome.rejected > 0 {
            eprintln!(
                "mqtt: the broker answered every alert but refused {} of them, which are dropped (see the log for why; {} published{dropped})",
                outcome.rejected, outcome.published
            );
            ExitCode::from(1)
        } else if outcome.delivered_all {
            eprintln!(
                "mqtt: every alert was acknowledged by the broker ({} published{dropped})",
                outcome.published
            );
            ExitCode::SUCCESS
        } else {
            eprintln!(
                "mqtt: gave up after {:.0} s: {} alerts not acknowledged are kept in the outbox {} for the next start ({} published{dropped})",
                timeout.as_secs_f64(),
                outcome.waiting,
                outcome.outbox.display(),
                outcome.published
            );
            ExitCode::from(1)
        }
    }
}

/// A build without the `mqtt` feature: no broker can be named.
#[cfg(not(feature = "mqtt"))]
mod mqtt_glue {
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use edgewatch::agent::Pipeline;
    use edgewatch::config::Config;
    use edgewatch::model::Scorer;
    use edgewatch::sink::{AlertSink, JsonLines};

    use super::bad;

    pub enum Mqtt {}
    pub enum Publisher {}

    pub fn open(
        config: &Config,
        url: Option<&str>,
        _state_dir: Option<&PathBuf>,
        _sensor_id: &str,
        _scorer: &Scorer,
        _interfaces: Vec<String>,
        _mode: &str,
    ) -> anyhow::Result<Option<Mqtt>> {
        let url = url.unwrap_or(&config.mqtt.url);
        if url.is_empty() {
            return Ok(None);
        }
        Err(bad(anyhow::anyhow!(
            "MQTT url {url}: this edgewatch was built without MQTT support (cargo feature `mqtt`)"
        )))
    }

    pub fn sink(mqtt: Option<&Mqtt>, lines: JsonLines) -> Box<dyn AlertSink> {
        match mqtt {
            Some(never) => match *never {},
            None => Box::new(lines),
        }
    }

    pub fn start(
        mqtt: Option<Mqtt>,
        _pipeline: &Pipeline,
        _config: &Config,
    ) -> anyhow::Result<Option<Publisher>> {
        match mqtt {
            Some(never) => match never {},
            None => Ok(None),
        }
    }

    pub fn finish(
        publisher: Option<Publisher>,
        _timeout: Duration,
        _stop: &AtomicBool,
    ) -> ExitCode {
        match publisher {
            Some(never) => match never {},
            None => ExitCode::SUCCESS,
        }
    }
}
