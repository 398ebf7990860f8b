//! `edgewatch-collector`: the central side. Subscribes to the sensors' alerts, status and stats
//! over MQTT 5, stores them in SQLite or PostgreSQL and serves a web UI and JSON API.
//! docs/collector.md documents it; this file is only the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use edgewatch::collector::{self, CollectorConfig};

#[derive(Parser)]
#[command(
    name = "edgewatch-collector",
    version,
    about = "Central collector for edgewatch sensors"
)]
struct Args {
    /// Config file (TOML); default /etc/edgewatch/collector.toml when it exists.
    #[arg(long)]
    config: Option<PathBuf>,
    /// MQTT broker, mqtt://host:port or mqtts://host:port (overrides mqtt.url).
    #[arg(long)]
    mqtt: Option<String>,
    /// Database: sqlite:PATH or postgres://user@host:port/db (overrides db).
    #[arg(long)]
    db: Option<String>,
    /// Address of the web UI and API (overrides listen; default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// MQTT shared-subscription group (overrides group).
    #[arg(long)]
    group: Option<String>,
    /// MQTT client id, unique per collector (overrides client_id).
    #[arg(long)]
    client_id: Option<String>,
    /// Check the config and exit (0 valid, 1 not).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let path = args.config.clone().or_else(|| {
        let default = PathBuf::from(collector::DEFAULT_CONFIG);
        default.exists().then_some(default)
    });
    let mut cfg = match CollectorConfig::load(path.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("edgewatch-collector: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(v) = args.mqtt {
        cfg.mqtt.url = v;
    }
    if let Some(v) = args.db {
        cfg.db = v;
    }
    if let Some(v) = args.listen {
        cfg.listen = v;
    }
    if let Some(v) = args.group {
        cfg.group = v;
    }
    if let Some(v) = args.client_id {
        cfg.client_id = v;
    }
    if args.check {
        return match cfg.check() {
            Ok(()) => {
                println!("config is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edgewatch-collector: {e}");
                ExitCode::from(1)
            }
        };
    }
    match collector::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgewatch-collector: {e}");
            ExitCode::from(2)
        }
    }
}
