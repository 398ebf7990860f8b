//! The packages' files against the agent they install: the Debian conffile is exactly what
//! `generate-config` prints, and the OpenWrt init script turns the UCI config it ships (and a
//! filled-in one) into a TOML config that the agent accepts, holding the UCI values, and asks
//! procd for the unprivileged jailed user. When cross-built musl binaries are there
//! (cross/build.sh), the .ipk packages are built and checked with packaging/openwrt/test-ipk.sh.
//! Needs /bin/sh, sed and awk; the .ipk check also python3.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use edgewatch::config::{
    AlertConfig, CaptureBackend, CaptureConfig, Config, FlowConfig, HostConfig, MqttConfig,
};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn debian_conffile_is_the_generated_config() {
    let o = run(&["generate-config"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let committed = std::fs::read_to_string(repo("packaging/debian/edgewatch.toml")).unwrap();
    assert!(
        committed == String::from_utf8(o.stdout).unwrap(),
        "packaging/debian/edgewatch.toml differs from `edgewatch generate-config`: regenerate it \
         with `cargo run -- generate-config > packaging/debian/edgewatch.toml`"
    );
}

/// What the init script made of a UCI config: the TOML file (if any) and procd's calls.
struct Rendered {
    _dir: tempfile::TempDir,
    toml: PathBuf,
    procd: String,
}

/// Runs the init script's start_service on `uci` (the text of /etc/config/edgewatch), as on an
/// image with ujail when `jail`.
fn render(uci: &str, jail: bool) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let uci_file = dir.path().join("edgewatch.uci");
    std::fs::write(&uci_file, uci).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg(repo("packaging/openwrt/render-init.sh"))
        .arg(&uci_file)
        .arg(dir.path());
    if jail {
        cmd.arg("jail");
    }
    let o = cmd.output().expect("sh runs");
    assert!(
        o.status.success(),
        "render-init.sh failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Rendered {
        toml: dir.path().join("edgewatch.toml"),
        procd: std::fs::read_to_string(dir.path().join("procd.log")).unwrap(),
        _dir: dir,
    }
}

fn shipped_uci() -> String {
    std::fs::read_to_string(repo("packaging/openwrt/files/edgewatch.config")).unwrap()
}

/// The shipped UCI config with `option NAME 'VALUE'` lines replaced.
fn with_options(uci: &str, options: &[(&str, &str)]) -> String {
    uci.lines()
        .map(|line| {
            let key = line.trim_start().strip_prefix("option ").unwrap_or("");
            match options
                .iter()
                .find(|(name, _)| key.split_whitespace().next() == Some(*name))
            {
                Some((name, value)) => format!("\toption {name} '{value}'"),
                None => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn validate(toml: &Path) {
    let o = run(&["validate", "--config", toml.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "edgewatch validate rejects the config the init script wrote: {}\n{}",
        stderr(&o),
        std::fs::read_to_string(toml).unwrap()
    );
}

#[test]
fn openwrt_default_uci_config_gives_the_agent_defaults() {
    let uci = with_options(&shipped_uci(), &[("enabled", "1")]);
    let out = render(&uci, true);
    validate(&out.toml);
    let config = Config::load(&out.toml).unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let defaults = Config::default();
    // The deliberate differences: a router's memory. The ring, the flow, host and incident
    // bounds are smaller (packaging/README.md, "Memory"), and the outbox lives in RAM (/var).
    let expected = Config {
        sensor_id: hostname.trim().to_string(),
        capture: CaptureConfig {
            interfaces: vec!["br-lan".to_string()],
            ring_blocks: 8,
            ..defaults.capture
        },
        flow: FlowConfig {
            max_flows: 8192,
            ..defaults.flow
        },
        host: HostConfig {
            max_hosts: 4096,
            ..defaults.host
        },
        alert: AlertConfig {
            max_incidents: 1024,
            ..defaults.alert
        },
        mqtt: MqttConfig {
            outbox_max_mb: 4.0,
            ..defaults.mqtt
        },
        ..defaults
    };
    assert_eq!(config, expected);

    let toml = out.toml.to_str().unwrap();
    for line in [
        format!("procd_set_param command /usr/bin/edgewatch run --config {toml}"),
        format!("procd_set_param file {toml}"),
        "procd_set_param respawn 3600 5 5".to_string(),
        "procd_set_param user edgewatch".to_string(),
        "procd_set_param group edgewatch".to_string(),
        "procd_set_param no_new_privs 1".to_string(),
        format!(
            "procd_set_param capabilities {}",
            repo("packaging/openwrt/files/edgewatch.json").display()
        ),
        format!("procd_add_jail_mount {toml}"),
        "procd_add_jail_mount_rw /var/lib/edgewatch".to_string(),
    ] {
        assert!(
            out.procd.lines().any(|l| l == line),
            "no `{line}` in\n{}",
            out.procd
        );
    }
}

#[test]
fn openwrt_uci_options_reach_the_agent_config() {
    let mut uci = with_options(
        &shipped_uci(),
        &[
            ("enabled", "1"),
            ("sensor_id", r#"gw "north" \1"#),
            ("promiscuous", "0"),
            ("capture_backend", "tpacket"),
            ("capture_threads", "2"),
            ("ring_block_kib", "64"),
            ("ring_blocks", "8"),
            ("alerts", "/tmp/edgewatch/alerts.jsonl"),
            ("state_dir", "/mnt/usb/edgewatch"),
            ("model", "/etc/edgewatch/model.onnx"),
            ("threshold", "0.25"),
            ("workers", "2"),
            ("max_flows", "20000"),
            ("max_hosts", "2048"),
            ("max_incidents", "512"),
            ("max_alerts_per_s", "12.5"),
            ("stats_interval_s", "30"),
            ("mqtt_url", "mqtts://broker.example:8883"),
            ("mqtt_username", "gw-north"),
            ("mqtt_password_file", "/etc/edgewatch/password"),
            ("mqtt_ca_file", "/etc/edgewatch/ca.pem"),
            ("mqtt_client_cert_file", "/etc/edgewatch/cert.pem"),
            ("mqtt_client_key_file", "/etc/edgewatch/key.pem"),
            ("mqtt_topic_prefix", "site/7"),
            ("mqtt_outbox_max_mb", "2"),
        ],
    );
    uci = uci.replace(
        "\tlist interface 'br-lan'",
        "\tlist interface 'br-lan'\n\tlist interface 'eth1'",
    );
    let out = render(&uci, false);
    let config = Config::load(&out.toml).unwrap();
    assert_eq!(config.sensor_id, r#"gw "north" \1"#);
    assert_eq!(config.capture.interfaces, ["br-lan", "eth1"]);
    assert!(!config.capture.promiscuous);
    assert_eq!(config.capture.backend, CaptureBackend::Tpacket);
    assert_eq!(config.capture.threads, 2);
    assert_eq!(config.capture.ring_block_kib, 64);
    assert_eq!(config.capture.ring_blocks, 8);
    assert_eq!(config.output.alerts, "/tmp/edgewatch/alerts.jsonl");
    assert_eq!(config.state_dir, "/mnt/usb/edgewatch");
    assert_eq!(config.model.path, "/etc/edgewatch/model.onnx");
    assert_eq!(config.model.threshold, Some(0.25));
    assert_eq!(config.flow.workers, 2);
    assert_eq!(config.flow.max_flows, 20000);
    assert_eq!(config.host.max_hosts, 2048);
    assert_eq!(config.alert.max_incidents, 512);
    assert_eq!(config.alert.max_alerts_per_s, 12.5);
    assert_eq!(config.output.stats_interval_s, 30.0);
    assert_eq!(config.mqtt.url, "mqtts://broker.example:8883");
    assert_eq!(config.mqtt.username, "gw-north");
    assert_eq!(config.mqtt.password_file, "/etc/edgewatch/password");
    assert_eq!(config.mqtt.ca_file, "/etc/edgewatch/ca.pem");
    assert_eq!(config.mqtt.client_cert_file, "/etc/edgewatch/cert.pem");
    assert_eq!(config.mqtt.client_key_file, "/etc/edgewatch/key.pem");
    assert_eq!(config.mqtt.topic_prefix, "site/7");
    assert_eq!(config.mqtt.outbox_max_mb, 2.0);
    // Without ujail the agent runs as root, unjailed.
    assert!(!out.procd.contains("procd_set_param user"), "{}", out.procd);
    assert!(!out.procd.contains("procd_add_jail"), "{}", out.procd);
}

#[test]
fn openwrt_disabled_sensor_starts_nothing() {
    let out = render(&shipped_uci(), true);
    assert!(!out.toml.exists());
    assert_eq!(out.procd, "");
}

/// Builds and checks an .ipk for each router target whose musl binary is there.
#[test]
fn openwrt_packages_of_the_cross_built_binaries() {
    let target_dir = Path::new(bin()).parent().unwrap().parent().unwrap();
    let targets = [
        "aarch64-unknown-linux-musl",
        "armv7-unknown-linux-musleabihf",
        "mipsel-unknown-linux-musl",
        "mips-unknown-linux-musl",
        "x86_64-unknown-linux-musl",
    ];
    let built: Vec<&str> = targets
        .into_iter()
        .filter(|t| target_dir.join(t).join("router/edgewatch").is_file())
        .collect();
    if built.is_empty() {
        eprintln!(
            "skipped: no musl binary in {} (cross/build.sh TARGET)",
            target_dir.display()
        );
        return;
    }
    let mut ipks = Vec::new();
    for target in built {
        let o = Command::new(repo("packaging/openwrt/build-ipk.sh"))
            .arg(target)
            .env("CARGO_TARGET_DIR", target_dir)
            .output()
            .expect("build-ipk.sh runs");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "build-ipk.sh {target}: {text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let ipk = text
            .split_whitespace()
            .find(|w| w.ends_with(".ipk"))
            .unwrap_or_else(|| panic!("no .ipk named in {text}"));
        ipks.push(ipk.to_string());
    }
    let o = Command::new(repo("packaging/openwrt/test-ipk.sh"))
        .args(&ipks)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("EDGEWATCH", bin())
        .output()
        .expect("test-ipk.sh runs");
    assert!(
        o.status.success(),
        "test-ipk.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
