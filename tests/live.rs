//! Live capture on a veth pair between two network namespaces that the test creates and removes.
//! Real traffic (ping and an HTTP request) crosses the pair; `edgewatch run` must see the flows
//! and stop cleanly on SIGTERM, also as an unprivileged user holding only CAP_NET_RAW (what the
//! packaged services grant), and must say that it needs CAP_NET_RAW when it lacks it. Needs root,
//! iproute2 and setpriv (util-linux; CI runs as root); traffic stays inside the two namespaces.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("command runs");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Two namespaces joined by a veth pair; removed on drop, with every process started in them.
struct Lab {
    ns: [String; 2],
    children: Vec<Child>,
}

impl Lab {
    fn new(tag: &str, net: &str) -> Lab {
        let ns = [format!("ewt-{tag}-a"), format!("ewt-{tag}-b")];
        for n in &ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
            sh(&["ip", "netns", "add", n]);
        }
        let lab = Lab {
            ns: ns.clone(),
            children: Vec::new(),
        };
        sh(&[
            "ip", "link", "add", "ewt0", "netns", &ns[0], "type", "veth", "peer", "name", "ewt1",
            "netns", &ns[1],
        ]);
        for (i, n) in ns.iter().enumerate() {
            sh(&[
                "ip",
                "-n",
                n,
                "addr",
                "add",
                &format!("{net}.{}/24", i + 1),
                "dev",
                &format!("ewt{i}"),
            ]);
            sh(&["ip", "-n", n, "link", "set", &format!("ewt{i}"), "up"]);
            sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn spawn(&mut self, ns: usize, args: &[&str]) -> &mut Child {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns[ns]])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in namespace");
        self.children.push(child);
        self.children.last_mut().unwrap()
    }

    fn exec(&self, ns: usize, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.ns[ns]];
        full.extend_from_slice(args);
        sh(&full);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether this machine can run the live tests (root and iproute2); says why not otherwise.
fn live_capture_possible() -> bool {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipped: live capture needs root and iproute2");
        return false;
    }
    true
}

/// `setpriv` arguments that turn root into the unprivileged user nobody (65534) with no
/// supplementary groups and no new privileges, holding `caps` (e.g. "+net_raw", or "" for none)
/// as ambient capabilities, the way systemd's AmbientCapabilities= and procd's capabilities
/// file hand them to the agent.
fn as_nobody_with(caps: &str) -> Vec<String> {
    let caps = if caps.is_empty() {
        String::new()
    } else {
        format!(",{caps}")
    };
    vec![
        "setpriv".to_string(),
        "--reuid=65534".to_string(),
        "--regid=65534".to_string(),
        "--clear-groups".to_string(),
        format!("--inh-caps=-all{caps}"),
        format!("--ambient-caps=-all{caps}"),
        format!("--bounding-set=-all{caps}"),
        "--no-new-privs".to_string(),
    ]
}

fn setpriv_available() -> bool {
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs setpriv (util-linux)");
        return false;
    }
    true
}

/// A copy of the binary and a config in a directory the unprivileged user can read, and an
/// alerts file it can write.
struct Unprivileged {
    _dir: tempfile::TempDir,
    bin: String,
    config: String,
    alerts: std::path::PathBuf,
}

impl Unprivileged {
    fn new(config_text: &str) -> Unprivileged {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &std::path::Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(dir.path(), 0o755);
        let copy = dir.path().join("edgewatch");
        std::fs::copy(bin(), &copy).unwrap();
        mode(&copy, 0o755);
        let config = config(dir.path(), config_text);
        mode(&config, 0o644);
        let alerts = dir.path().join("alerts.jsonl");
        std::fs::write(&alerts, "").unwrap();
        mode(&alerts, 0o666);
        Unprivileged {
            bin: copy.to_str().unwrap().to_string(),
            config: config.to_str().unwrap().to_string(),
            alerts,
            _dir: dir,
        }
    }
}

/// The capability sets and user ids of a running process, from /proc/PID/status.
fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn collect_stderr(child: &mut Child) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    (log, reader)
}

#[test]
fn run_captures_live_traffic_on_a_veth_pair() {
    if !live_capture_possible() {
        return;
    }
    let tag = format!("{}", std::process::id() % 100_000);
    let mut lab = Lab::new(&tag, "10.199.77");
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    // Threshold 0: every flow is alerted, so the alerts list the flows the agent saw.
    let cfg = config(
        dir.path(),
        "sensor_id = \"live-test\"\n[model]\nthreshold = 0.0\n[flow]\nprobe_eval_s = 0.2\n",
    );

    let agent = lab.spawn(
        0,
        &[
            bin(),
            "run",
            "--interface",
            "ewt0",
            "--config",
            cfg.to_str().unwrap(),
            "--alerts",
            alerts.to_str().unwrap(),
        ],
    );
    let pid = agent.id();
    let (log, reader) = collect_stderr(agent);
    wait_for("the agent to capture", Duration::from_secs(30), || {
        log.lock().unwrap().contains("Capturing on ewt0")
    });

    lab.spawn(
        0,
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            "10.199.77.1",
            "8080",
        ],
    );
    lab.exec(1, &["ping", "-c", "3", "-i", "0.2", "10.199.77.1"]);
    let fetch = "import urllib.request,time\nfor i in range(50):\n  try:\n    urllib.request.urlopen('http://10.199.77.1:8080/', timeout=2).read(); break\n  except OSError: time.sleep(0.1)\nelse: raise SystemExit(1)";
    lab.exec(1, &["python3", "-c", fetch]);

    let seen = |needle: &str| {
        std::fs::read_to_string(&alerts)
            .map(|t| t.contains(needle))
            .unwrap_or(false)
    };
    wait_for(
        "the ICMP and TCP flows in the alerts",
        Duration::from_secs(20),
        || {
            seen("\"src_ip\":\"10.199.77.2\",\"dest_ip\":\"10.199.77.1\",\"proto\":\"ICMP\"")
                && seen("\"dest_port\":8080")
        },
    );

    sh(&["kill", "-TERM", &pid.to_string()]);
    let started = Instant::now();
    let status = lab.children[0].wait().unwrap();
    reader.join().unwrap();
    assert!(
        status.success(),
        "clean exit on SIGTERM: {}",
        log.lock().unwrap()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stops within 5 s of SIGTERM"
    );
    let log = log.lock().unwrap();
    let summary = log
        .lines()
        .find(|l| l.starts_with("run: "))
        .unwrap_or_else(|| panic!("summary line in {log}"));
    let packets: u64 = summary
        .trim_start_matches("run: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(packets >= 10, "{summary}");
    let text = std::fs::read_to_string(&alerts).unwrap();
    let tcp: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|a| a["dest_port"] == 8080)
        .unwrap();
    assert_eq!(tcp["src_ip"], "10.199.77.2");
    assert_eq!(tcp["sensor_id"], "live-test");
}

#[test]
fn run_captures_as_nobody_holding_only_cap_net_raw() {
    if !live_capture_possible() || !setpriv_available() {
        return;
    }
    let tag = format!("{}u", std::process::id() % 100_000);
    let mut lab = Lab::new(&tag, "10.199.78");
    // Threshold 0: every flow is alerted, so the alerts list the flows the agent saw.
    let agent_files = Unprivileged::new(
        "sensor_id = \"least-privilege\"\n[model]\nthreshold = 0.0\n[flow]\nprobe_eval_s = 0.2\n",
    );
    let mut args = as_nobody_with("+net_raw");
    let bin = agent_files.bin.as_str();
    let cfg = agent_files.config.as_str();
    let alerts = agent_files.alerts.to_str().unwrap();
    args.extend(
        [
            bin,
            "run",
            "--interface",
            "ewt0",
            "--config",
            cfg,
            "--alerts",
            alerts,
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = lab.spawn(0, &args);
    let pid = agent.id();
    let (log, reader) = collect_stderr(agent);
    wait_for("the agent to capture", Duration::from_secs(30), || {
        log.lock().unwrap().contains("Capturing on ewt0")
    });
    // `ip netns exec` and setpriv exec the agent, so the child is the agent itself.
    assert_eq!(proc_status(pid, "Uid"), "65534\t65534\t65534\t65534");
    let cap_net_raw = format!("{:016x}", 1u64 << 13);
    assert_eq!(
        proc_status(pid, "CapEff"),
        cap_net_raw,
        "effective capabilities"
    );
    assert_eq!(proc_status(pid, "CapBnd"), cap_net_raw, "bounding set");
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");

    lab.exec(1, &["ping", "-c", "3", "-i", "0.2", "10.199.78.1"]);
    let icmp = "\"src_ip\":\"10.199.78.2\",\"dest_ip\":\"10.199.78.1\",\"proto\":\"ICMP\"";
    wait_for(
        "the ICMP flow in the alerts",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&agent_files.alerts)
                .map(|t| t.contains(icmp))
                .unwrap_or(false)
        },
    );

    sh(&["kill", "-TERM", &pid.to_string()]);
    let status = lab.children[0].wait().unwrap();
    reader.join().unwrap();
    let log = log.lock().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {log}");
    assert!(
        log.lines().any(|l| l.starts_with("run: ")),
        "summary line in {log}"
    );
}

#[test]
fn run_without_cap_net_raw_says_it_needs_it() {
    if !live_capture_possible() || !setpriv_available() {
        return;
    }
    let agent_files = Unprivileged::new("sensor_id = \"no-capability\"\n");
    // Opening the packet socket fails before any packet is read, so the loopback interface of
    // the test's own namespace is enough.
    let mut args = as_nobody_with("");
    let cfg = agent_files.config.as_str();
    args.push(agent_files.bin.clone());
    args.extend(["run", "--interface", "lo", "--config", cfg].map(String::from));
    let out = Command::new(&args[0])
        .args(&args[1..])
        .output()
        .expect("setpriv runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot open a packet socket on lo") && err.contains("CAP_NET_RAW"),
        "{err}"
    );
    assert!(err.contains("setcap cap_net_raw+ep"), "{err}");
    assert_eq!(
        err.matches("Operation not permitted").count(),
        1,
        "the OS error once: {err}"
    );
}
