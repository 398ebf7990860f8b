//! MQTT publishing against a real mosquitto (Debian package `mosquitto`, and `openssl` for the
//! TLS test), and against amqtt (PyPI, tests/requirements.txt), a broker that speaks MQTT 3.1.1
//! only. Each test starts its own broker on a free loopback port with a config in its own
//! temporary directory and kills it when done; every wait polls a condition up to a deadline.
#![cfg(feature = "mqtt")]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, ConnectionError, Event, MqttOptions, Packet, QoS};

const DEADLINE: Duration = Duration::from_secs(60);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgewatch")
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` until it holds, failing the test after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A config that turns lab-mini.pcap into ~1500 alerts (every flow alerts, no aggregation or
/// rate limit), with fast reconnects.
fn write_config(dir: &Path, sensor_id: &str, mqtt_extra: &str) -> PathBuf {
    let file = dir.join(format!("{sensor_id}.toml"));
    let text = format!(
        "sensor_id = \"{sensor_id}\"\n\
         [model]\nthreshold = 0.0\n\
         [alert]\nmode = \"flow\"\nmax_alerts_per_s = 1000000.0\n\
         [mqtt]\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n{mqtt_extra}"
    );
    std::fs::write(&file, text).unwrap();
    file
}

fn lines(file: &Path) -> Vec<Vec<u8>> {
    std::fs::read(file)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// mosquitto

struct Broker {
    port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// A broker on `port` with one anonymous listener (plus `extra` config), persistent sessions
    /// kept in `dir` across a stop and start.
    fn plain(dir: &Path, port: u16, extra: &str) -> Broker {
        let listener = format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}");
        Broker::with_config(dir, port, &listener)
    }

    fn with_config(dir: &Path, port: u16, listeners: &str) -> Broker {
        let store = dir.join("mosquitto");
        std::fs::create_dir_all(&store).unwrap();
        let conf = store.join("mosquitto.conf");
        let log = store.join("mosquitto.log");
        let text = format!(
            "user root\npersistence true\npersistence_location {}/\nmax_queued_messages 0\n\
             log_dest file {}\nlog_type all\n{listeners}",
            path(&store),
            path(&log)
        );
        std::fs::write(&conf, text).unwrap();
        let mut broker = Broker {
            port,
            conf,
            log,
            child: None,
        };
        broker.start();
        broker
    }

    fn start(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (apt-get install mosquitto)");
        self.child = Some(child);
        let port = self.port;
        wait_for("mosquitto to listen", DEADLINE, || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mosquitto exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (mosquitto saves its sessions) and wait until it is gone.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("broker running");
        sigterm(&child);
        child.wait().unwrap();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a subscriber

#[derive(Clone, Debug)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

struct Subscriber {
    client: Client,
    msgs: Arc<Mutex<Vec<Msg>>>,
    subscribed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes at QoS 1 and keeps reconnecting; a `persistent` session keeps receiving what
    /// the broker queued for it while it was away. Returns once the broker confirmed the
    /// subscription.
    fn new(port: u16, id: &str, filter: &str, persistent: bool) -> Subscriber {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_clean_session(!persistent);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(options, 64);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, m, s, st, filter) = (
            client.clone(),
            msgs.clone(),
            subscribed.clone(),
            stop.clone(),
            filter.to_string(),
        );
        let thread = std::thread::spawn(move || {
            for event in connection.iter() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => s.store(true, Ordering::Relaxed),
                    Ok(Event::Incoming(Packet::Publish(p))) => m.lock().unwrap().push(Msg {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    }),
                    Ok(_) => {}
                    Err(ConnectionError::RequestsDone) => break,
                    // The broker is away: try again a little later.
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let sub = Subscriber {
            client,
            msgs,
            subscribed,
            stop,
            thread: Some(thread),
        };
        wait_for("the subscription", DEADLINE, || {
            sub.subscribed.load(Ordering::Relaxed)
        });
        sub
    }

    fn messages(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    fn on(&self, suffix: &str) -> Vec<Msg> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic.ends_with(suffix))
            .collect()
    }

    /// Distinct alert payloads received.
    fn alert_set(&self) -> HashSet<Vec<u8>> {
        self.on("/alert").into_iter().map(|m| m.payload).collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
        if let Some(t) = self.thread.take() {
            // Detached: it ends at its next event (the disconnect).
            drop(t);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the agent

struct Agent {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Agent {
    fn spawn(args: &[&str]) -> Agent {
        let mut child = Command::new(bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgewatch runs");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, text) = (child.stderr.take().unwrap(), stderr.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut t = text.lock().unwrap();
                t.push_str(&line);
                t.push('\n');
            }
        });
        Agent {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// `replay lab-mini.pcap` with `config`, writing `alerts` and publishing to the broker on
    /// `port` through an outbox in `state`.
    fn replay(config: &Path, alerts: &Path, port: u16, state: &Path) -> Agent {
        Agent::replay_with(config, alerts, port, state, &[])
    }

    /// The same with more arguments.
    fn replay_with(config: &Path, alerts: &Path, port: u16, state: &Path, more: &[&str]) -> Agent {
        let pcap = data("lab-mini.pcap");
        let url = format!("mqtt://127.0.0.1:{port}");
        let mut args = vec![
            "replay",
            path(&pcap),
            "--config",
            path(config),
            "--alerts",
            path(alerts),
            "--mqtt",
            &url,
            "--state-dir",
            path(state),
        ];
        args.extend_from_slice(more);
        Agent::spawn(&args)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_stderr(&self, what: &str) {
        wait_for(&format!("{what:?} on the agent's stderr"), DEADLINE, || {
            self.stderr().contains(what)
        });
    }

    /// Waits for the exit, returns the status and everything written to stderr.
    fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    r.join().unwrap();
                }
                return (status, self.stderr());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "the agent did not exit within {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.stderr()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to a child process.
fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {}", child.id());
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

// ---------------------------------------------------------------------------------------------
// the tests

#[test]
fn replay_publishes_every_alert_byte_identical_with_status_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Broker::plain(dir.path(), port, "");
    let sub = Subscriber::new(port, "t-identical-sub", "edgewatch/v1/ident/#", false);
    let config = write_config(dir.path(), "ident", "");
    let alerts = dir.path().join("alerts.jsonl");
    let url = format!("mqtt://127.0.0.1:{port}");
    let pcap = data("lab-mini.pcap");
    let args = [
        "replay",
        path(&pcap),
        "--config",
        path(&config),
        "--alerts",
        path(&alerts),
    ];
    let state = dir.path().join("state");
    let agent = Agent::spawn(&[&args[..], &["--mqtt", &url, "--state-dir", path(&state)]].concat());
    let (status, stderr) = agent.wait(DEADLINE);
    assert!(status.success(), "replay failed:\n{stderr}");
    assert!(
        stderr.contains("mqtt: every alert was acknowledged by the broker"),
        "{stderr}"
    );
    // MQTT 5 by default; mosquitto logs the version of each client ("p5": MQTT 5).
    assert!(stderr.contains("as ident with MQTT 5;"), "{stderr}");
    assert!(
        broker.log_text().contains("as ident (p5,"),
        "{}",
        broker.log_text()
    );

    let written = lines(&alerts);
    assert!(
        written.len() > 1000,
        "the config should make many alerts, got {}",
        written.len()
    );
    wait_for("every alert on the broker", DEADLINE, || {
        sub.on("/alert").len() >= written.len()
    });
    let received: Vec<Vec<u8>> = sub.on("/alert").into_iter().map(|m| m.payload).collect();
    // Same bytes, same order, none twice: nothing went wrong on the way.
    assert_eq!(received.len(), written.len());
    assert!(
        received == written,
        "the MQTT payloads differ from the JSON lines"
    );
    assert!(
        sub.on("/alert")
            .iter()
            .all(|m| m.topic == "edgewatch/v1/ident/alert")
    );

    // Status: "online" first, "offline" (retained) after the clean exit; and the final stats.
    wait_for("the offline status", DEADLINE, || {
        sub.on("/status")
            .iter()
            .any(|m| m.payload.windows(9).any(|w| w == b"\"offline\""))
    });
    let status: Vec<serde_json::Value> = sub
        .on("/status")
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(status.first().unwrap()["status"], "online");
    assert_eq!(status.last().unwrap()["status"], "offline");
    assert_eq!(status[0]["sensor_id"], "ident");
    assert_eq!(status[0]["mode"], "replay");
    let stats: Vec<serde_json::Value> = sub
        .on("/stats")
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let last = stats.last().expect("final stats published");
    assert_eq!(last["alerts_emitted"], written.len() as u64);
    assert_eq!(last["alerts_published"], written.len() as u64);
    assert_eq!(last["outbox_depth"], 0);
    assert!(last["frames"].as_u64().unwrap() > 10_000);
    // The outbox is empty and stays on disk for the next start.
    assert!(state.join("mqtt-outbox.qf").exists());
}

#[test]
fn alerts_go_on_to_the_broker_when_the_json_lines_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::plain(dir.path(), port, "");
    let sub = Subscriber::new(port, "t-full-sub", "edgewatch/v1/full/alert", false);
    let config = write_config(dir.path(), "full", "");
    // The same replay without MQTT, into a file: the alerts the broker must get.
    let expected_file = dir.path().join("expected.jsonl");
    let pcap = data("lab-mini.pcap");
    let o = Command::new(bin())
        .args(["replay", path(&pcap), "--config", path(&config)])
        .args(["--alerts", path(&expected_file)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = lines(&expected_file);
    assert!(expected.len() > 1000, "{}", expected.len());

    let state = dir.path().join("state");
    let agent = Agent::replay(&config, Path::new("/dev/full"), port, &state);
    let (status, stderr) = agent.wait(DEADLINE);
    // The JSON lines fail once, MQTT gets every alert, and the run still ends with the error.
    assert_eq!(count(&stderr, "they go on to MQTT only"), 1, "{stderr}");
    assert!(
        stderr.contains("mqtt: every alert was acknowledged by the broker"),
        "{stderr}"
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("edgewatch: error: writing output failed: No space left on device"),
        "{stderr}"
    );
    wait_for("every alert on the broker", DEADLINE, || {
        sub.on("/alert").len() >= expected.len()
    });
    let received: Vec<Vec<u8>> = sub.on("/alert").into_iter().map(|m| m.payload).collect();
    assert!(
        received == expected,
        "{} alerts received, {} expected",
        received.len(),
        expected.len()
    );
}

#[test]
fn broker_outage_mid_run_loses_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = Broker::plain(dir.path(), port, "");
    // A persistent session: the broker keeps it (and what it queued for it) across the restart.
    let sub = Subscriber::new(port, "t-outage-sub", "edgewatch/v1/outage/alert", true);
    let config = write_config(dir.path(), "outage", "");

    // The agent writes its JSON lines into a FIFO that this test reads: the pipeline can only run
    // about a pipe buffer ahead of the reader, which paces the replay.
    let fifo = dir.path().join("alerts.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let url = format!("mqtt://127.0.0.1:{port}");
    let pcap = data("lab-mini.pcap");
    let state = dir.path().join("state");
    let agent = Agent::spawn(&[
        "replay",
        path(&pcap),
        "--config",
        path(&config),
        "--alerts",
        path(&fifo),
        "--mqtt",
        &url,
        "--state-dir",
        path(&state),
        "--drain-timeout-s",
        "60",
    ]);
    let mut reader = BufReader::new(std::fs::File::open(&fifo).unwrap());
    let mut written: Vec<Vec<u8>> = Vec::new();
    let mut read_lines = |n: usize, into: &mut Vec<Vec<u8>>| {
        for _ in 0..n {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).unwrap() == 0 {
                return false;
            }
            line.pop();
            into.push(line);
        }
        true
    };

    // Phase 1: broker up, alerts flow.
    assert!(read_lines(300, &mut written));
    wait_for("alerts before the outage", DEADLINE, || {
        sub.alert_set().len() >= 200
    });

    // Phase 2: broker down while the replay goes on.
    broker.stop();
    let before_outage = written.len();
    assert!(read_lines(600, &mut written), "the replay ended early");
    agent.wait_stderr("Lost the connection to MQTT broker");
    std::thread::sleep(Duration::from_secs(3)); // the outage itself

    // Phase 3: broker back; read the rest of the alerts.
    broker.start();
    while read_lines(1, &mut written) {}
    assert!(
        written.len() > before_outage + 600,
        "alerts after the outage"
    );
    let (status, stderr) = agent.wait(DEADLINE);
    assert!(status.success(), "replay failed:\n{stderr}");
    assert!(
        stderr.contains("mqtt: every alert was acknowledged by the broker"),
        "{stderr}"
    );
    // One line for the loss, not one per reconnection attempt.
    assert_eq!(
        count(&stderr, "Lost the connection to MQTT broker"),
        1,
        "{stderr}"
    );
    assert!(count(&stderr, "is unreachable") <= 1, "{stderr}");

    let expected: HashSet<Vec<u8>> = written.into_iter().collect();
    wait_for("every alert after the outage", DEADLINE, || {
        sub.alert_set().is_superset(&expected)
    });
    assert_eq!(
        sub.alert_set(),
        expected,
        "only the replay's alerts, byte-identical"
    );
}

#[test]
fn outbox_survives_sigkill_while_the_broker_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there yet
    let config = write_config(dir.path(), "crash", "");
    let alerts = dir.path().join("alerts.jsonl");
    let url = format!("mqtt://127.0.0.1:{port}");
    let state = dir.path().join("state");
    let long_drain = ["--drain-timeout-s", "600"];
    let agent = Agent::replay_with(&config, &alerts, port, &state, &long_drain);
    // The summary line comes once the pipeline has finished: every alert is in the outbox.
    agent.wait_stderr("replay: ");
    agent.wait_stderr("is unreachable");
    std::thread::sleep(Duration::from_secs(1)); // a few reconnection attempts
    let stderr = agent.kill9();
    assert_eq!(
        count(&stderr, "is unreachable"),
        1,
        "one line, not one per attempt:\n{stderr}"
    );
    let written = lines(&alerts);
    assert!(written.len() > 1000);

    // Broker up, the agent again (on a capture without alerts): it sends the outbox.
    let _broker = Broker::plain(dir.path(), port, "");
    let sub = Subscriber::new(port, "t-crash-sub", "edgewatch/v1/crash/alert", false);
    let empty = data("basic.pcapng");
    let again = dir.path().join("again.jsonl");
    let agent = Agent::spawn(&[
        "replay",
        path(&empty),
        "--alerts",
        path(&again),
        "--mqtt",
        &url,
        "--state-dir",
        path(&state),
        "--config",
        path(&config),
    ]);
    let (status, stderr) = agent.wait(DEADLINE);
    assert!(status.success(), "second replay failed:\n{stderr}");
    assert!(stderr.contains("alerts from an earlier run"), "{stderr}");
    assert!(
        lines(&again).len() < 10,
        "the second capture adds (almost) nothing"
    );
    let expected: HashSet<Vec<u8>> = written.into_iter().collect();
    wait_for("the outbox of the killed agent", DEADLINE, || {
        sub.alert_set().is_superset(&expected)
    });
}

/// `replay`'s wait for the broker ends at a SIGTERM: the alerts stay in the outbox, and the exit
/// code and the last line say so. (Without the signal it would wait 600 s.)
#[test]
fn sigterm_ends_the_wait_for_a_dead_broker() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let config = write_config(dir.path(), "hurry", "");
    let alerts = dir.path().join("alerts.jsonl");
    let state = dir.path().join("state");
    let long_drain = ["--drain-timeout-s", "600"];
    let agent = Agent::replay_with(&config, &alerts, port, &state, &long_drain);
    // The summary line comes once the pipeline has drained, before the wait for the broker.
    agent.wait_stderr("replay: ");
    agent.wait_stderr("is unreachable");
    sigterm(&agent.child);
    let (status, stderr) = agent.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{stderr}");
    let written = lines(&alerts).len();
    assert!(
        stderr.contains(&format!(
            "mqtt: stopped waiting on a signal: {written} alerts not acknowledged are kept in the outbox"
        )),
        "{stderr}"
    );
}

#[test]
fn status_is_online_retained_then_offline_when_the_agent_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::plain(dir.path(), port, "");
    let config = write_config(dir.path(), "live", "");
    let url = format!("mqtt://127.0.0.1:{port}");
    let state = dir.path().join("state");
    let alerts = dir.path().join("alerts.jsonl");
    // `run` lives until it is stopped; capturing on loopback needs root (CAP_NET_RAW).
    let agent = Agent::spawn(&[
        "run",
        "--interface",
        "lo",
        "--config",
        path(&config),
        "--alerts",
        path(&alerts),
        "--mqtt",
        &url,
        "--state-dir",
        path(&state),
    ]);
    agent.wait_stderr("Connected to MQTT broker");
    // A subscriber that arrives later gets the retained status.
    let is_status = |m: &Msg, s: &str| {
        serde_json::from_slice::<serde_json::Value>(&m.payload)
            .map(|v| v["status"] == s)
            .unwrap_or(false)
    };
    let late = Subscriber::new(port, "t-status-late", "edgewatch/v1/live/status", false);
    wait_for("the retained online status", DEADLINE, || {
        late.messages().iter().any(|m| is_status(m, "online"))
    });
    let online = late
        .messages()
        .into_iter()
        .find(|m| is_status(m, "online"))
        .unwrap();
    assert!(online.retain, "the status is retained");
    let v: serde_json::Value = serde_json::from_slice(&online.payload).unwrap();
    assert_eq!(v["interfaces"][0], "lo");
    assert_eq!(v["mode"], "run");
    assert!(v["version"].is_string() && v["model"]["name"].is_string() && v["started"].is_string());

    let stderr = agent.kill9();
    wait_for("the last will", DEADLINE, || {
        late.messages().iter().any(|m| is_status(m, "offline"))
    });
    // And it stays: a newcomer reads "offline".
    let newcomer = Subscriber::new(port, "t-status-new", "edgewatch/v1/live/status", false);
    wait_for("the retained offline status", DEADLINE, || {
        !newcomer.messages().is_empty()
    });
    let last = newcomer.messages().pop().unwrap();
    assert!(last.retain && is_status(&last, "offline"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// protocol versions

/// amqtt, a broker that speaks MQTT 3.1.1 only (it answers an MQTT 5 CONNECT with the 3.1.1
/// CONNACK "unacceptable protocol version"), with an anonymous listener on `port`.
struct Amqtt {
    child: Child,
    log: PathBuf,
}

impl Amqtt {
    fn start(dir: &Path, port: u16) -> Amqtt {
        let conf = dir.join("amqtt.yaml");
        let log = dir.join("amqtt.log");
        std::fs::write(
            &conf,
            format!(
                "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n\
                 plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
            ),
        )
        .unwrap();
        let python = std::env::var("EDGEWATCH_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let child = Command::new(python)
            .args([
                "-c",
                "import sys; from amqtt.scripts.broker_script import main; sys.argv = ['amqtt', '-c', sys.argv[1]]; sys.exit(main())",
            ])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 runs");
        let mut broker = Amqtt { child, log };
        wait_for("amqtt to listen", DEADLINE, || {
            if let Some(status) = broker.child.try_wait().unwrap() {
                panic!(
                    "amqtt exited with {status} (pip install -r tests/requirements.txt): {}",
                    std::fs::read_to_string(&broker.log).unwrap_or_default()
                );
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        broker
    }
}

impl Drop for Amqtt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_broker_that_speaks_only_3_1_1_gets_3_1_1_and_every_alert() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Amqtt::start(dir.path(), port);
    let sub = Subscriber::new(port, "t-v311-sub", "edgewatch/v1/old/alert", false);
    let config = write_config(dir.path(), "old", "");
    let alerts = dir.path().join("alerts.jsonl");
    let state = dir.path().join("state");
    let agent = Agent::replay(&config, &alerts, port, &state);
    let (status, stderr) = agent.wait(DEADLINE * 2);
    assert!(status.success(), "replay failed:\n{stderr}");
    // amqtt misreads the MQTT 5 CONNECT (its will properties) and waits for more bytes, so the
    // first attempt times out; the next one speaks 3.1.1.
    assert!(
        stderr.contains("did not answer an MQTT 5 connection"),
        "{stderr}"
    );
    assert!(stderr.contains("as old with MQTT 3.1.1;"), "{stderr}");
    // The fallback is not an error and is said once.
    assert_eq!(count(&stderr, "trying MQTT 3.1.1."), 1, "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    let broker_log = std::fs::read_to_string(&broker.log).unwrap_or_default();
    assert!(
        broker_log.contains("Invalid connection"),
        "amqtt should have rejected the MQTT 5 attempt:\n{broker_log}"
    );

    let written = lines(&alerts);
    assert!(written.len() > 1000, "{}", written.len());
    wait_for("every alert on amqtt", DEADLINE, || {
        sub.alert_set().len() >= written.len()
    });
    let expected: HashSet<Vec<u8>> = written.into_iter().collect();
    assert_eq!(sub.alert_set(), expected);
}

#[test]
fn protocol_3_1_1_when_the_config_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let broker = Broker::plain(dir.path(), port, "");
    let config = write_config(dir.path(), "v311", "protocol = \"3.1.1\"\n");
    let state = dir.path().join("state");
    let agent = Agent::replay(&config, Path::new("/dev/null"), port, &state);
    let (status, stderr) = agent.wait(DEADLINE);
    assert!(status.success(), "replay failed:\n{stderr}");
    assert!(stderr.contains("as v311 with MQTT 3.1.1;"), "{stderr}");
    // "p2" is mosquitto's name for MQTT 3.1.1.
    assert!(
        broker.log_text().contains("as v311 (p2,"),
        "{}",
        broker.log_text()
    );
}

#[test]
fn alerts_the_broker_refuses_are_counted_once_and_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The ACL lets this sensor publish its status and stats, but not alerts.
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic read edgewatch/v1/acl/#\n\
         topic write edgewatch/v1/acl/status\n\
         topic write edgewatch/v1/acl/stats\n",
    )
    .unwrap();
    // mosquitto 2.0.11 with max_queued_messages 0 (the other tests' setting) drops an MQTT 5
    // client's connection right after denying its publish: here it gets a finite queue.
    let _broker = Broker::plain(
        dir.path(),
        port,
        &format!("acl_file {}\nmax_queued_messages 1000\n", path(&acl)),
    );
    let sub = Subscriber::new(port, "t-acl-sub", "edgewatch/v1/acl/#", false);
    let config = write_config(dir.path(), "acl", "");
    let alerts = dir.path().join("alerts.jsonl");
    let state = dir.path().join("state");
    let agent = Agent::replay(&config, &alerts, port, &state);
    let (status, stderr) = agent.wait(DEADLINE);
    let written = lines(&alerts).len();
    assert!(written > 1000, "{written}");
    // Exit 1: the alerts did not get through, and replay says how many and why.
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("refused {written} of them")),
        "{stderr}"
    );
    assert!(
        stderr.contains("refuses alerts on edgewatch/v1/acl/alert: NotAuthorized"),
        "{stderr}"
    );
    assert_eq!(
        count(&stderr, "refuses alerts"),
        1,
        "logged once:\n{stderr}"
    );

    // Status and stats went through; the final stats count the refused alerts.
    wait_for("the offline status", DEADLINE, || {
        sub.on("/status")
            .iter()
            .any(|m| m.payload.windows(9).any(|w| w == b"\"offline\""))
    });
    assert!(sub.on("/alert").is_empty());
    let stats: serde_json::Value =
        serde_json::from_slice(&sub.on("/stats").last().expect("stats").payload).unwrap();
    assert_eq!(stats["alerts_rejected"], written as u64);
    assert_eq!(stats["alerts_published"], 0);
    assert_eq!(stats["outbox_depth"], 0);
}

// ---------------------------------------------------------------------------------------------
// TLS and authentication

#[cfg(feature = "tls")]
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

#[cfg(feature = "tls")]
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate signed by it, and an
/// unrelated CA.
#[cfg(feature = "tls")]
fn make_pki(dir: &Path) -> Pki {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subj) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN=edgewatch test {ca}"),
        );
        let args = [
            &["req", "-x509"][..],
            &ec,
            &["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj],
        ]
        .concat();
        openssl(dir, &args);
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn) in [("server", "127.0.0.1"), ("client", "tls-sensor")] {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let subj = format!("/CN={cn}");
        openssl(
            dir,
            &[
                &["req", "-new"][..],
                &ec,
                &["-keyout", &key, "-out", &csr, "-subj", &subj],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        other_ca: dir.join("other-ca.pem"),
    }
}

#[test]
#[cfg(feature = "tls")]
fn tls_with_client_certificate_and_the_errors_of_a_wrong_ca_or_password() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    std::fs::write(dir.path().join("passwords"), "").unwrap();
    let passwords = dir.path().join("passwords");
    assert!(
        Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&passwords)
            .args(["sensor", "right"])
            .status()
            .unwrap()
            .success()
    );
    let (plain, tls, auth) = (free_port(), free_port(), free_port());
    // Three listeners: anonymous (for the test's subscriber), TLS with client certificates, and
    // user name and password.
    let listeners = format!(
        "per_listener_settings true\n\
         listener {plain} 127.0.0.1\nallow_anonymous true\n\
         listener {tls} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
         use_identity_as_username true\nallow_anonymous false\n\
         listener {auth} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        path(&pki.ca),
        path(&pki.server_cert),
        path(&pki.server_key),
        path(&passwords)
    );
    let _broker = Broker::with_config(dir.path(), plain, &listeners);
    let sub = Subscriber::new(plain, "t-tls-sub", "edgewatch/v1/#", false);
    let pcap = data("lab-mini.pcap");
    let replay = |name: &str, url: &str, mqtt: &str, timeout: &str| {
        let config = write_config(dir.path(), name, mqtt);
        let alerts = dir.path().join(format!("{name}.jsonl"));
        let state = dir.path().join(format!("state-{name}"));
        let agent = Agent::spawn(&[
            "replay",
            path(&pcap),
            "--config",
            path(&config),
            "--alerts",
            path(&alerts),
            "--mqtt",
            url,
            "--state-dir",
            path(&state),
            "--drain-timeout-s",
            timeout,
        ]);
        let (status, stderr) = agent.wait(DEADLINE);
        (status, stderr, lines(&alerts))
    };

    // The right CA and a client certificate: everything arrives.
    let good = format!(
        "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        path(&pki.ca),
        path(&pki.client_cert),
        path(&pki.client_key)
    );
    let (status, stderr, written) =
        replay("tlsgood", &format!("mqtts://127.0.0.1:{tls}"), &good, "60");
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("mqtt: every alert was acknowledged"),
        "{stderr}"
    );
    let expected: HashSet<Vec<u8>> = written.into_iter().collect();
    wait_for("the alerts sent over TLS", DEADLINE, || {
        sub.alert_set().is_superset(&expected)
    });

    // A CA that did not sign the broker's certificate: one clear line, retries, alerts kept.
    let wrong_ca = format!(
        "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        path(&pki.other_ca),
        path(&pki.client_cert),
        path(&pki.client_key)
    );
    let (status, stderr, _) = replay(
        "tlswrongca",
        &format!("mqtts://127.0.0.1:{tls}"),
        &wrong_ca,
        "3",
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        count(&stderr, "its certificate is not accepted"),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("mqtt.ca_file"), "{stderr}");
    assert!(stderr.contains("kept in the outbox"), "{stderr}");

    // No client certificate where the broker requires one.
    let no_cert = format!("ca_file = \"{}\"\n", path(&pki.ca));
    let (status, stderr, _) = replay(
        "tlsnocert",
        &format!("mqtts://127.0.0.1:{tls}"),
        &no_cert,
        "3",
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(count(&stderr, "TLS with MQTT broker"), 1, "{stderr}");

    // A wrong password: one clear line.
    std::fs::write(dir.path().join("wrong-password"), "wrong\n").unwrap();
    let wrong_pw = format!(
        "username = \"sensor\"\npassword_file = \"{}\"\n",
        path(&dir.path().join("wrong-password"))
    );
    let (status, stderr, _) = replay(
        "wrongpw",
        &format!("mqtt://127.0.0.1:{auth}"),
        &wrong_pw,
        "3",
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(count(&stderr, "refused the connection"), 1, "{stderr}");
    assert!(stderr.contains("mqtt.password_file"), "{stderr}");

    // The right password works.
    std::fs::write(dir.path().join("right-password"), "right\n").unwrap();
    let right_pw = format!(
        "username = \"sensor\"\npassword_file = \"{}\"\n",
        path(&dir.path().join("right-password"))
    );
    let (status, stderr, _) = replay(
        "rightpw",
        &format!("mqtt://127.0.0.1:{auth}"),
        &right_pw,
        "60",
    );
    assert!(status.success(), "{stderr}");
}

#[test]
fn a_damaged_outbox_is_moved_aside_and_the_agent_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _broker = Broker::plain(dir.path(), port, "");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut junk = vec![0u8; 4096];
    std::io::repeat(0x5a).read_exact(&mut junk).unwrap();
    std::fs::write(state.join("mqtt-outbox.qf"), junk).unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let pcap = data("lab-mini.pcap");
    let alerts = dir.path().join("alerts.jsonl");
    let agent = Agent::spawn(&[
        "replay",
        path(&pcap),
        "--alerts",
        path(&alerts),
        "--mqtt",
        &url,
        "--state-dir",
        path(&state),
    ]);
    let (status, stderr) = agent.wait(DEADLINE);
    assert!(status.success(), "{stderr}");
    assert_eq!(count(&stderr, "is damaged"), 1, "{stderr}");
    assert!(stderr.contains("moved it aside"), "{stderr}");
    let aside = std::fs::read_dir(&state)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".damaged-")
        })
        .count();
    assert_eq!(aside, 1);
}
