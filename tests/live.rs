//! Live capture on a veth pair between two network namespaces that the test creates and removes.
//! Real traffic (ping and an HTTP request) crosses the pair; `edgewatch run` must see the flows
//! and stop cleanly on SIGTERM. Needs root and iproute2 (CI runs as root); traffic stays inside
//! the two namespaces.

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

#[test]
fn run_captures_live_traffic_on_a_veth_pair() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipped: live capture needs root and iproute2");
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
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = agent.stderr.take().unwrap();
    let sink = log.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
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
