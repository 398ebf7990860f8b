//! Live capture on a veth pair between two network namespaces that the test creates and removes.
//! Real traffic (ping and an HTTP request) crosses the pair; `edgewatch run` must see the flows
//! with either capture backend (the tpacket ring also with two fanout threads, and with VLAN
//! tags put back) and stop cleanly on SIGTERM, also as an unprivileged user holding only
//! CAP_NET_RAW (what the packaged services grant), and must say that it needs CAP_NET_RAW when
//! it lacks it, and stop by itself with the error when its alerts cannot be written. Needs
//! root, iproute2 and setpriv (util-linux; CI runs as root); traffic stays inside the two
//! namespaces.

// Live capture needs a backend: the tpacket ring (always built on Linux) or pnet.
#![cfg(any(target_os = "linux", feature = "pnet"))]

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

/// A running `edgewatch run` on ewt0 in the lab's first namespace, with its log.
struct Agent {
    pid: u32,
    log: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
    alerts: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent with `config_text` and waits until it captures. The lab's first child.
    fn start(lab: &mut Lab, config_text: &str) -> Agent {
        Agent::start_writing(lab, config_text, None)
    }

    /// As [`Agent::start`], with the alerts going to `alerts` instead of a file of its own.
    fn start_writing(lab: &mut Lab, config_text: &str, alerts: Option<&str>) -> Agent {
        Agent::start_on(lab, "ewt0", config_text, alerts)
    }

    /// As [`Agent::start_writing`], capturing on `interface` of the lab's first namespace.
    fn start_on(lab: &mut Lab, interface: &str, config_text: &str, alerts: Option<&str>) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let alerts = alerts.map_or_else(|| dir.path().join("alerts.jsonl"), Into::into);
        let cfg = config(dir.path(), config_text);
        let agent = lab.spawn(
            0,
            &[
                bin(),
                "run",
                "--interface",
                interface,
                "--config",
                cfg.to_str().unwrap(),
                "--alerts",
                alerts.to_str().unwrap(),
            ],
        );
        let pid = agent.id();
        let (log, reader) = collect_stderr(agent);
        wait_for("the agent to capture", Duration::from_secs(30), || {
            log.lock()
                .unwrap()
                .contains(&format!("Capturing on {interface}"))
        });
        Agent {
            pid,
            log,
            reader,
            alerts,
            _dir: dir,
        }
    }

    /// Rewrites the agent's config file (for a reload).
    fn rewrite_config(&self, text: &str) {
        config(self._dir.path(), text);
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().contains(needle)
    }

    fn alerts(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.alerts)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn alerts_contain(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.alerts)
            .map(|t| t.contains(needle))
            .unwrap_or(false)
    }

    /// Stops the agent with SIGTERM; checks that it exits cleanly and soon. Returns its log and
    /// its alerts.
    fn stop(self, lab: &mut Lab) -> (String, Vec<serde_json::Value>) {
        sh(&["kill", "-TERM", &self.pid.to_string()]);
        let started = Instant::now();
        let status = lab.children[0].wait().unwrap();
        self.reader.join().unwrap();
        let log = self.log.lock().unwrap().clone();
        assert!(status.success(), "clean exit on SIGTERM: {log}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stops within 5 s of SIGTERM"
        );
        let alerts = std::fs::read_to_string(&self.alerts)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (log, alerts)
    }
}

/// The numbers of `run`'s summary line: packets, flows, alerts, skipped, dropped, dropped by
/// the kernel.
fn summary(log: &str) -> Vec<u64> {
    let line = log
        .lines()
        .find(|l| l.starts_with("run: "))
        .unwrap_or_else(|| panic!("summary line in {log}"));
    let numbers: Vec<u64> = line
        .trim_start_matches("run: ")
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 6, "{line}");
    numbers
}

/// What each capture thread logged when it stopped: (frames, kernel packets, kernel drops);
/// the kernel's numbers are None when the backend cannot read them.
fn thread_reports(log: &str) -> Vec<(u64, Option<(u64, u64)>)> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("Capture on ")?..];
            let after = rest.split(" stopped after ").nth(1)?;
            let frames = after.split(' ').next()?.parse().ok()?;
            let kernel = after.split("(kernel: ").nth(1).map(|k| {
                let n: Vec<u64> = k
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect();
                (n[0], n[1])
            });
            Some((frames, kernel))
        })
        .collect()
}

/// Ping and an HTTP request across the pair; the agent with `backend` must see both flows.
/// Returns the agent's log and alerts.
fn ping_and_http(tag: &str, net: &str, capture: &str) -> (String, Vec<serde_json::Value>) {
    let mut lab = Lab::new(tag, net);
    // Threshold 0: every flow is alerted, so the alerts list the flows the agent saw.
    let agent = Agent::start(
        &mut lab,
        &format!(
            "sensor_id = \"live-test\"\n[capture]\n{capture}\n[alert]\nmode = \"flow\"\n[model]\nthreshold = 0.0\n\
             [flow]\nprobe_eval_s = 0.2\n"
        ),
    );
    lab.spawn(
        0,
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            &format!("{net}.1"),
            "8080",
        ],
    );
    lab.exec(1, &["ping", "-c", "3", "-i", "0.2", &format!("{net}.1")]);
    let fetch = format!(
        "import urllib.request,time\nfor i in range(50):\n  try:\n    urllib.request.urlopen('http://{net}.1:8080/', timeout=2).read(); break\n  except OSError: time.sleep(0.1)\nelse: raise SystemExit(1)"
    );
    lab.exec(1, &["python3", "-c", &fetch]);
    let icmp = format!("\"src_ip\":\"{net}.2\",\"dest_ip\":\"{net}.1\",\"proto\":\"ICMP\"");
    wait_for(
        "the ICMP and TCP flows in the alerts",
        Duration::from_secs(20),
        || agent.alerts_contain(&icmp) && agent.alerts_contain("\"dest_port\":8080"),
    );
    let (log, alerts) = agent.stop(&mut lab);
    let tcp = alerts.iter().find(|a| a["dest_port"] == 8080).unwrap();
    assert_eq!(tcp["src_ip"], format!("{net}.2"));
    assert_eq!(tcp["host"], "live-test");
    assert!(summary(&log)[0] >= 10, "{log}");
    (log, alerts)
}

#[test]
fn run_captures_live_traffic_with_tpacket() {
    if !live_capture_possible() {
        return;
    }
    let tag = format!("{}", std::process::id() % 100_000);
    // The default backend on Linux.
    let (log, _) = ping_and_http(&tag, "10.199.77", "backend = \"auto\"");
    assert!(
        log.contains("Capturing on ewt0 (tpacket, 1 thread"),
        "{log}"
    );
    let [(frames, Some((kernel_packets, kernel_drops)))] = thread_reports(&log)[..] else {
        panic!("one capture thread with kernel counters: {log}");
    };
    // Everything read from the ring was counted by the kernel first, and nothing was lost.
    assert!(frames >= 10 && kernel_packets >= frames, "{log}");
    assert_eq!(kernel_drops, 0, "{log}");
    assert_eq!(summary(&log)[0], frames, "{log}");
    assert_eq!(summary(&log)[5], 0, "{log}");
}

#[cfg(feature = "pnet")]
#[test]
fn run_captures_live_traffic_with_pnet() {
    if !live_capture_possible() {
        return;
    }
    let tag = format!("{}p", std::process::id() % 100_000);
    let (log, _) = ping_and_http(&tag, "10.199.79", "backend = \"pnet\"");
    assert!(log.contains("Capturing on ewt0 (pnet)"), "{log}");
    // pnet's socket does not give the kernel's counters.
    let [(frames, None)] = thread_reports(&log)[..] else {
        panic!("one capture thread without kernel counters: {log}");
    };
    assert_eq!(summary(&log)[0], frames, "{log}");
}

/// Sends three UDP datagrams 10.199.81.2 -> .1 tagged with VLAN 10 and three untagged
/// 10.199.80.2 -> .1, as raw frames on ewt1 (no VLAN device needed).
const SEND_TAGGED: &str = r#"
import socket, struct
def csum(b):
    s = sum(struct.unpack('!10H', b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def ip_udp(src, dst):
    udp = struct.pack('!HHHH', 40000, 5000, 12, 0) + b'ping'
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + udp
macs = b'\xff' * 6 + b'\x02\x00\x00\x00\x00\x02'
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('ewt1', 0))
for _ in range(3):
    s.send(macs + b'\x81\x00' + struct.pack('!H', 10) + b'\x08\x00' + ip_udp('10.199.81.2', '10.199.81.1'))
    s.send(macs + b'\x08\x00' + ip_udp('10.199.80.2', '10.199.80.1'))
"#;

#[test]
fn tpacket_restores_vlan_tags_the_kernel_took_out() {
    if !live_capture_possible() {
        return;
    }
    let tag = format!("{}v", std::process::id() % 100_000);
    let mut lab = Lab::new(&tag, "10.199.80");
    let agent = Agent::start(
        &mut lab,
        "[capture]\nbackend = \"tpacket\"\n[alert]\nmode = \"flow\"\n[model]\nthreshold = 0.0\n[flow]\nprobe_eval_s = 0.2\n",
    );
    // The receiving kernel moves the tag out of the frame into the packet's metadata before
    // packet sockets see it; the ring hands it over beside the frame.
    lab.exec(1, &["python3", "-c", SEND_TAGGED]);
    let flow = |src: &str| format!("\"src_ip\":\"{src}\",\"src_port\":40000");
    wait_for(
        "both UDP flows in the alerts",
        Duration::from_secs(20),
        || agent.alerts_contain(&flow("10.199.81.2")) && agent.alerts_contain(&flow("10.199.80.2")),
    );
    let (log, alerts) = agent.stop(&mut lab);
    let udp_from = |src: &str| {
        alerts
            .iter()
            .find(|a| a["src_ip"] == src && a["proto"] == "UDP")
            .unwrap_or_else(|| panic!("UDP from {src}: {log}"))
    };
    assert_eq!(udp_from("10.199.81.2")["vlan"], serde_json::json!([10]));
    assert_eq!(udp_from("10.199.81.2")["flow"]["pkts_toserver"], 3);
    assert!(udp_from("10.199.80.2").get("vlan").is_none(), "{log}");
}

#[test]
fn tpacket_fanout_spreads_flows_over_capture_threads() {
    if !live_capture_possible() {
        return;
    }
    let tag = format!("{}f", std::process::id() % 100_000);
    let mut lab = Lab::new(&tag, "10.199.82");
    let agent = Agent::start(
        &mut lab,
        "[capture]\nbackend = \"tpacket\"\nthreads = 2\n[alert]\nmode = \"flow\"\n[model]\nthreshold = 0.0\n",
    );
    // 64 UDP flows of 5 packets each (to closed ports: each draws an ICMP port unreachable,
    // which belongs to its flow).
    let send = "import socket,time\nfor p in range(40000, 40064):\n  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n  for i in range(5): s.sendto(b'x' * 32, ('10.199.82.1', p))\n  s.close()\n  time.sleep(0.002)";
    lab.exec(1, &["python3", "-c", send]);
    let udp_flows = |log: &str| log.matches("\"proto\":\"UDP\"").count();
    wait_for(
        "the UDP flows in the alerts",
        Duration::from_secs(20),
        || udp_flows(&std::fs::read_to_string(&agent.alerts).unwrap_or_default()) > 0,
    );
    let (log, _) = agent.stop(&mut lab);
    assert!(log.contains("(tpacket, 2 threads per interface"), "{log}");
    let threads = thread_reports(&log);
    assert_eq!(threads.len(), 2, "{log}");
    // With 64 flows hashed over two sockets, each gets some (all on one: odds of 2^-63).
    for (frames, kernel) in &threads {
        let (kernel_packets, kernel_drops) = kernel.expect("kernel counters");
        assert!(
            *frames > 0 && kernel_packets >= *frames && kernel_drops == 0,
            "{log}"
        );
    }
    let s = summary(&log);
    let frames: u64 = threads.iter().map(|t| t.0).sum();
    assert_eq!(s[0], frames, "{log}");
    assert!(frames >= 64 * 5, "{log}");
    assert!(s[1] >= 64, "64 UDP flows at least: {log}");
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
        "sensor_id = \"least-privilege\"\n[alert]\nmode = \"flow\"\n[model]\nthreshold = 0.0\n[flow]\nprobe_eval_s = 0.2\n",
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

#[test]
fn sighup_reloads_the_model_keeps_the_flows_and_refuses_a_broken_config() {
    if !live_capture_possible() {
        return;
    }
    let tag = format!("{}h", std::process::id() % 100_000);
    let net = "10.199.81";
    let mut lab = Lab::new(&tag, net);
    let base = "sensor_id = \"reload-test\"\n[flow]\nprobe_eval_s = 0.2\n[alert]\nmode = \"flow\"\n[model]\nthreshold = 0.0\n";
    let agent = Agent::start(&mut lab, base);
    let hup = || sh(&["kill", "-HUP", &agent.pid.to_string()]);
    // One ICMP flow (one echo identifier) that lasts through both reloads: 50 echoes, 10 s.
    lab.spawn(1, &["ping", "-c", "50", "-i", "0.2", &format!("{net}.1")]);
    let icmp = |a: &serde_json::Value| a["proto"] == "ICMP" && a["src_ip"] == format!("{net}.2");
    wait_for("an ICMP alert", Duration::from_secs(20), || {
        agent.alerts().iter().any(icmp)
    });
    let first = agent.alerts().into_iter().find(icmp).unwrap();
    assert_eq!(
        first["alert"]["context"]["edgewatch"]["model"]["name"],
        "edgewatch-mlp"
    );

    // A broken config: the agent says why and runs on as before.
    agent.rewrite_config(&format!("{base}no_such_key = 1\n"));
    hup();
    wait_for(
        "the failed reload in the log",
        Duration::from_secs(10),
        || agent.log_contains("Reload failed, still running as before"),
    );
    assert!(
        agent.log_contains("no_such_key"),
        "{}",
        agent.log.lock().unwrap()
    );

    // Another model and a changed [flow] section: the model changes now, [flow] at the next start.
    let model = data("models/baseline.onnx");
    agent.rewrite_config(
        &format!("{base}path = \"{}\"\n", model.display())
            .replace("probe_eval_s = 0.2", "probe_eval_s = 0.3")
            .replace(
                "mode = \"flow\"",
                "mode = \"flow\"\nupdate_interval_s = 5.0",
            ),
    );
    hup();
    wait_for("the reload in the log", Duration::from_secs(10), || {
        agent.log_contains("Reloaded: now scoring with model edgewatch-baseline baseline-1")
    });
    assert!(
        agent.log_contains("Reload: changes to [flow] take effect at the next start"),
        "{}",
        agent.log.lock().unwrap()
    );
    // A new flow is scored by the new model.
    lab.exec(1, &["ping", "-c", "2", "-i", "0.2", &format!("{net}.1")]);
    wait_for(
        "an alert by the reloaded model",
        Duration::from_secs(20),
        || {
            agent.alerts().iter().any(|a| {
                icmp(a)
                    && a["alert"]["context"]["edgewatch"]["model"]["name"] == "edgewatch-baseline"
            })
        },
    );
    // Let the long ping end, then stop: its flow, started before both reloads, is still there
    // and its last evaluation (by the new model) covers the echoes before and after them.
    std::thread::sleep(Duration::from_secs(9));
    let (log, alerts) = agent.stop(&mut lab);
    let long = alerts
        .iter()
        .filter(|a| {
            icmp(a)
                && a["alert"]["context"]["edgewatch"]["model"]["name"] == "edgewatch-baseline"
                && a["flow"]["start"] == first["flow"]["start"]
        })
        .map(|a| a["flow"]["pkts_toserver"].as_u64().unwrap())
        .max();
    assert!(
        long.is_some_and(|pkts| pkts >= 45),
        "the long flow's final alert under the new model: {long:?}\n{log}"
    );
}

#[test]
fn run_stops_with_the_error_when_its_alerts_cannot_be_written() {
    if !live_capture_possible() {
        return;
    }
    let tag = format!("{}w", std::process::id() % 100_000);
    let net = "10.199.83";
    let mut lab = Lab::new(&tag, net);
    // Threshold 0: the ping's flow is alerted, and the alert goes to a full disk.
    let agent = Agent::start_writing(
        &mut lab,
        "[flow]\nprobe_eval_s = 0.2\n[alert]\nmode = \"flow\"\n[model]\nthreshold = 0.0\n",
        Some("/dev/full"),
    );
    lab.exec(1, &["ping", "-c", "3", "-i", "0.2", &format!("{net}.1")]);
    // No signal: the agent stops by itself, with the error.
    wait_for(
        "the agent to stop without an output",
        Duration::from_secs(20),
        || lab.children[0].try_wait().unwrap().is_some(),
    );
    let status = lab.children[0].wait().unwrap();
    agent.reader.join().unwrap();
    let log = agent.log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("edgewatch: error: writing output failed: No space left on device"),
        "{log}"
    );
}

/// Writes raw IPv4 packets into a TUN device it creates, `ewtun0` (a WireGuard or PPP interface
/// looks the same to a packet socket: IP packets without a link header). Prints "ready" once the
/// device exists, waits for a line, writes the packets: UDP from 10.99.0.2 ports 4000.. to
/// 10.99.0.1:5000, which the namespace answers with ICMP port unreachable. Then it holds the
/// device open until stdin closes.
const TUN_WRITER: &str = r#"
import fcntl, os, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"ewtun0", 0x0001 | 0x1000))  # TUNSETIFF: TUN, NO_PI
print("ready", flush=True)
sys.stdin.readline()
def checksum(b):
    s = sum(struct.unpack("!10H", b))
    s = (s & 0xffff) + (s >> 16)
    return ~((s & 0xffff) + (s >> 16)) & 0xffff
for i in range(int(sys.argv[1])):
    udp = struct.pack("!HHHH", 4000 + i, 5000, 8 + 16, 0) + bytes(16)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                               bytes([10, 99, 0, 2]), bytes([10, 99, 0, 1])))
    ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
    os.write(fd, bytes(ip) + udp)
print("sent", flush=True)
sys.stdin.read()
"#;

#[test]
fn run_captures_ip_packets_on_an_interface_without_a_link_header() {
    if !live_capture_possible() {
        return;
    }
    let mut lab = Lab::new("tun", "10.98.0");
    let mut writer = Command::new("ip")
        .args([
            "netns", "exec", &lab.ns[0], "python3", "-c", TUN_WRITER, "5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut said = BufReader::new(writer.stdout.take().unwrap()).lines();
    assert_eq!(said.next().unwrap().unwrap(), "ready");
    lab.exec(0, &["ip", "addr", "add", "10.99.0.1/24", "dev", "ewtun0"]);
    lab.exec(0, &["ip", "link", "set", "ewtun0", "up"]);
    let agent = Agent::start_on(
        &mut lab,
        "ewtun0",
        "[alert]\nmode = \"flow\"\n[model]\nthreshold = 0.0\n[flow]\nprobe_eval_s = 0.2\n",
        None,
    );
    use std::io::Write;
    let mut to_writer = writer.stdin.take().unwrap();
    writeln!(to_writer, "go").unwrap();
    assert_eq!(said.next().unwrap().unwrap(), "sent");
    wait_for("the probes' alerts", Duration::from_secs(10), || {
        agent.alerts_contain("\"src_ip\":\"10.99.0.2\"")
    });
    let (log, alerts) = agent.stop(&mut lab);
    drop(to_writer);
    let _ = writer.wait();
    // Five datagrams in, five ICMP errors out: read as IP, none skipped.
    let [packets, flows, _, skipped, ..] = summary(&log)[..] else {
        unreachable!()
    };
    assert!(packets >= 5 && flows >= 5, "{log}");
    assert_eq!(skipped, 0, "{log}");
    assert!(
        alerts
            .iter()
            .all(|a| a["src_ip"] == "10.99.0.2" && a["dest_ip"] == "10.99.0.1"),
        "{alerts:?}"
    );
}
