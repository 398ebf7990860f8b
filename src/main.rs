//! The `edgewatch` command line: parses arguments, loads config and model, and hands over to
//! `agent`. Exit codes: 0 success, 1 a runtime failure or a failed `validate`, 2 bad input
//! (arguments, config, model or capture file).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use edgewatch::agent::{self, AgentError, Failure, Input, MqttPlan, Output, Plan, Summary};
use edgewatch::capture::file::CaptureReader;
use edgewatch::capture::live::{self, LinkReceiver, SystemClock};
use edgewatch::config::{Config, MAX_SECONDS, default_config_text};
use edgewatch::features::{FEATURE_NAMES, schema_id};
use edgewatch::model::Scorer;
use edgewatch::mqtt::DrainOutcome;
use edgewatch::scoring::Reload;
use edgewatch::signals::Signals;
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
    Run(RunArgs),
    /// Read a pcap or pcapng file through the sensor and write its alerts.
    Replay(ReplayArgs),
    /// Write the flow feature vectors of a capture as CSV (what the model is trained on).
    Features(FeaturesArgs),
    /// Check a config file and the model; exit 0 when both are usable, 1 otherwise.
    Validate(ValidateArgs),
    /// Print a documented default config.
    GenerateConfig,
}

#[derive(Args)]
struct RunArgs {
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
}

#[derive(Args)]
struct ReplayArgs {
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
}

#[derive(Args)]
struct FeaturesArgs {
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
}

#[derive(Args)]
struct ValidateArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    model: Option<String>,
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
/// the memory freed into it; the pipeline's threads hand flows and events to one another, so one
/// arena keeps the resident size bounded under a flood, at the price of some lock contention
/// (bench/README.md, "Random-source SYN flood"). MALLOC_ARENA_MAX in the environment still
/// decides. musl's allocator (the static router builds) has no arenas.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

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
            eprintln!("edgewatch: error: {}", first_message(&e));
            ExitCode::from(if is_bad_input { 2 } else { 1 })
        }
    }
}

fn first_message(e: &anyhow::Error) -> String {
    e.chain()
        .next()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// A capture whose every frame has a link type edgewatch does not read: the same error (and exit
/// code) as a pcap file with such a link type, which is refused when it is opened.
fn unusable(pcap: &Path, linktype: u32) -> anyhow::Error {
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

fn open_lines(target: &str) -> anyhow::Result<JsonLines> {
    JsonLines::open(target).with_context(|| format!("cannot open {target} for alerts"))
}

/// The broker from `--mqtt`, else `mqtt.url`; none when both are empty.
fn mqtt_plan(
    config: &Config,
    url: Option<String>,
    state_dir: Option<PathBuf>,
    interfaces: Vec<String>,
) -> Option<MqttPlan> {
    let url = url.unwrap_or_else(|| config.mqtt.url.clone());
    (!url.is_empty()).then(|| MqttPlan {
        url,
        state_dir: state_dir.unwrap_or_else(|| PathBuf::from(&config.state_dir)),
        interfaces,
    })
}

/// Runs the agent. When it fails, says first how the wait for the broker went (the alerts made
/// before the failure still went out); a broker's address, credentials or certificates that
/// cannot be used are the user's to fix (exit code 2).
fn run_agent(config: &Config, plan: Plan) -> anyhow::Result<Summary> {
    let drain = plan.drain;
    agent::run(config, plan).map_err(|Failure { error, delivery }| {
        delivery_report(delivery.as_ref(), drain);
        match &error {
            AgentError::Mqtt(m) if m.is_setting() => bad(error),
            _ => error.into(),
        }
    })
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::GenerateConfig => {
            print!("{}", default_config_text());
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(args) => Ok(validate(args.config.as_ref(), args.model.as_ref())),
        Command::Features(args) if args.schema => {
            let doc = serde_json::json!({ "schema_id": schema_id(), "features": FEATURE_NAMES });
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Features(args) => features(args),
        Command::Replay(args) => replay(args),
        Command::Run(args) => run(args),
    }
}

/// `features`: the flows' feature vectors of a capture as CSV.
fn features(args: FeaturesArgs) -> anyhow::Result<ExitCode> {
    let FeaturesArgs {
        pcap,
        output,
        config,
        workers,
        schema: _,
    } = args;
    let signals = Signals::install(false).context("installing signal handlers")?;
    let (pcap, output) = (
        pcap.expect("clap requires it"),
        output.expect("clap requires it"),
    );
    let config = load_config(config.as_ref())?;
    let reader = CaptureReader::open(&pcap).map_err(bad)?;
    let file = std::fs::File::create(&output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let plan = Plan {
        input: Input::Replay(reader),
        output: Output::Features {
            csv: Box::new(std::io::BufWriter::new(file)),
        },
        workers: workers.unwrap_or_else(|| config.workers()),
        mqtt: None,
        drain: Duration::ZERO,
        signals,
        drained: Box::new(|_| {}),
    };
    let summary = run_agent(&config, plan)?;
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

/// `replay`: a capture file through the sensor.
fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let ReplayArgs {
        pcap,
        config,
        alerts,
        workers,
        model,
        mqtt,
        state_dir,
        drain_timeout_s,
    } = args;
    let signals = Signals::install(false).context("installing signal handlers")?;
    let config = load_config(config.as_ref())?;
    let scorer = load_model(&config, model.as_ref())?;
    let reader = CaptureReader::open(&pcap).map_err(bad)?;
    if !(drain_timeout_s.is_finite() && (0.0..=MAX_SECONDS).contains(&drain_timeout_s)) {
        return Err(bad(anyhow::anyhow!(
            "--drain-timeout-s must be a number of seconds from 0 to {MAX_SECONDS} (a year)"
        )));
    }
    let drain = Duration::from_secs_f64(drain_timeout_s);
    let plan = Plan {
        input: Input::Replay(reader),
        output: Output::Alerts {
            scorer,
            lines: open_lines(alerts.as_deref().unwrap_or("-"))?,
            sensor_id: config.sensor_id(),
        },
        workers: workers.unwrap_or_else(|| config.workers()),
        mqtt: mqtt_plan(&config, mqtt, state_dir, Vec::new()),
        drain,
        signals,
        drained: Box::new(|summary| {
            if summary.unusable_linktype().is_some() {
                return;
            }
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
        }),
    };
    let summary = run_agent(&config, plan)?;
    if let Some(linktype) = summary.unusable_linktype() {
        return Err(unusable(&pcap, linktype));
    }
    Ok(delivery_report(summary.delivery.as_ref(), drain))
}

/// `run`: live capture until SIGTERM or SIGINT.
fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs {
        config,
        interfaces,
        alerts,
        model,
        mqtt,
        state_dir,
    } = args;
    let signals = Signals::install(true).context("installing signal handlers")?;
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
    let receivers = open_interfaces(&names, &config)?;
    let target = alerts.unwrap_or_else(|| config.output.alerts.clone());
    log::info!(
        "Capturing on {} ({}).",
        names.join(", "),
        capture_setup(&config.capture)
    );
    let plan = Plan {
        input: Input::Live {
            receivers,
            clock: Arc::new(SystemClock),
            reload: Some(reloader(config_path, model, config.clone())),
        },
        output: Output::Alerts {
            scorer,
            lines: open_lines(&target)?,
            sensor_id: config.sensor_id(),
        },
        workers: config.workers(),
        mqtt: mqtt_plan(&config, mqtt, state_dir, names),
        drain: RUN_DRAIN_TIMEOUT,
        signals,
        drained: Box::new(|summary| {
            let s = &summary.stats;
            eprintln!(
                "run: {} packets, {} flows, {} alerts, {} skipped, {} dropped, {} dropped by the kernel",
                s.frames,
                s.flows_created,
                s.alerts_emitted,
                s.skipped_total() + s.fragments_unattributed,
                s.queue_drops,
                s.kernel_drops
            );
        }),
    };
    let summary = run_agent(&config, plan)?;
    Ok(delivery_report(
        summary.delivery.as_ref(),
        RUN_DRAIN_TIMEOUT,
    ))
}

/// `validate`: exit code 0 when the config and the model are usable, 1 otherwise.
fn validate(config: Option<&PathBuf>, model: Option<&String>) -> ExitCode {
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgewatch: config is not valid: {}", first_message(&e));
            return ExitCode::from(1);
        }
    };
    match load_model(&config, model) {
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgewatch: model is not usable: {}", first_message(&e));
            ExitCode::from(1)
        }
    }
}

/// Opens every capture thread's receiver on each interface, named for the logs.
fn open_interfaces(
    names: &[String],
    config: &Config,
) -> anyhow::Result<Vec<(String, Box<dyn LinkReceiver>)>> {
    let mut receivers = Vec::new();
    for name in names {
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
    Ok(receivers)
}

/// SIGHUP: reads the config file and the model again. The model, the threshold, the model's
/// batch size and the [alert] settings change at once; other changed sections are named in the
/// log and wait for a restart. An unusable config or model keeps everything as it was.
fn reloader(
    config_path: Option<PathBuf>,
    model_over: Option<String>,
    started: Config,
) -> Box<dyn FnMut() -> Result<Reload, String>> {
    Box::new(move || {
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

/// Says how the final wait for the broker went. Exit code 1 when alerts are left in the outbox
/// or the broker refused some.
fn delivery_report(delivery: Option<&DrainOutcome>, timeout: Duration) -> ExitCode {
    let Some(outcome) = delivery else {
        return ExitCode::SUCCESS;
    };
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
        let why = match outcome.interrupted {
            true => "stopped waiting on a signal".to_string(),
            false => format!("gave up after {:.0} s", timeout.as_secs_f64()),
        };
        eprintln!(
            "mqtt: {why}: {} alerts not acknowledged are kept in the outbox {} for the next start ({} published{dropped})",
            outcome.waiting,
            outcome.outbox.display(),
            outcome.published
        );
        ExitCode::from(1)
    }
}
