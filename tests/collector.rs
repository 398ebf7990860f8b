//! The collector end to end: real sensors (`edgewatch replay --mqtt`) publish to a real
//! mosquitto, real collectors (`edgewatch-collector`) store into SQLite or a throwaway
//! PostgreSQL (Debian `postgresql`, initdb/pg_ctl in a temp dir), and a headless Chromium (Debian
//! `chromium`) loads the web UI. Each test starts its own servers on free loopback ports and
//! stops them when done; every wait polls a condition up to a deadline.
#![cfg(feature = "collector")]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);

fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgewatch")
}

fn collector_bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgewatch-collector")
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

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// mosquitto

struct Broker {
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let port = free_port();
        let store = dir.join("mosquitto");
        std::fs::create_dir_all(&store).unwrap();
        let conf = store.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence true\npersistence_location {}/\nmax_queued_messages 0\n\
                 log_dest file {}/mosquitto.log\nlog_type all\n\
                 listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n",
                path(&store),
                path(&store)
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto runs (apt-get install mosquitto)");
        wait_for("mosquitto to listen", DEADLINE, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Broker {
            port,
            log: store.join("mosquitto.log"),
            child,
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("mosquitto had exited ({status}); its log ends with:");
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: a throwaway cluster in a temp dir. root cannot run postgres, so as root the
// cluster belongs to `nobody`.

struct Postgres {
    port: u16,
    data: PathBuf,
    as_nobody: bool,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Postgres {
    fn pg(as_nobody: bool, tool: &str) -> Command {
        let exe = format!("{PG_BIN}/{tool}");
        if as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--", &exe]);
            c
        } else {
            Command::new(exe)
        }
    }

    fn start(dir: &Path) -> Postgres {
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "PostgreSQL 15 is needed: apt-get install -y postgresql"
        );
        let as_nobody = is_root();
        let root = dir.join("pg");
        std::fs::create_dir_all(&root).unwrap();
        if as_nobody {
            let ok = Command::new("chown")
                .args(["-R", "nobody", path(dir)])
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the PostgreSQL dir to nobody");
        }
        let data = root.join("data");
        let out = Postgres::pg(as_nobody, "initdb")
            .args(["-D", path(&data), "-U", "ew", "--auth=trust", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            path(&root)
        );
        let out = Postgres::pg(as_nobody, "pg_ctl")
            .args(["-D", path(&data), "-o", &options, "-l"])
            .arg(root.join("pg.log"))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(root.join("pg.log")).unwrap_or_default()
        );
        Postgres {
            port,
            data,
            as_nobody,
        }
    }

    fn url(&self) -> String {
        format!("postgres://ew@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Postgres::pg(self.as_nobody, "pg_ctl")
            .args(["-D", path(&self.data), "-m", "immediate", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

// ---------------------------------------------------------------------------------------------
// the collector

struct Collector {
    args: Vec<String>,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Collector {
    fn start(dir: &Path, broker: &Broker, db: &str, client_id: &str) -> Collector {
        let port = free_port();
        let args = vec![
            "--mqtt".to_string(),
            broker.url(),
            "--db".to_string(),
            db.to_string(),
            "--listen".to_string(),
            format!("127.0.0.1:{port}"),
            "--group".to_string(),
            "g".to_string(),
            "--client-id".to_string(),
            client_id.to_string(),
        ];
        let mut c = Collector {
            args,
            port,
            log: dir.join(format!("{client_id}.log")),
            child: None,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(collector_bin())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("edgewatch-collector runs");
        self.child = Some(child);
        let port = self.port;
        wait_for("the collector's /healthz", DEADLINE, || {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("collector exited with {status}: {}", self.log_text());
            }
            get(port, "/healthz").is_some_and(|(s, _)| s == 200)
        });
        wait_for("the collector to connect", DEADLINE, || {
            self.metric("mqtt_connects") > 0
        });
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn sigkill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn metric(&self, name: &str) -> u64 {
        metric(self.port, name)
    }

    fn get(&self, p: &str) -> (u16, String) {
        get(self.port, p).unwrap_or_else(|| panic!("GET {p} answered"))
    }

    fn json(&self, p: &str) -> serde_json::Value {
        let (status, body) = self.get(p);
        assert_eq!(status, 200, "GET {p}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {p}: {e}: {body}"))
    }

    fn total(&self) -> u64 {
        self.json("/api/alerts?limit=1")["total"].as_u64().unwrap()
    }

    /// Every stored alert's id and update, through the paginated API.
    fn all_ids(&self) -> Vec<(String, u64)> {
        let mut ids = Vec::new();
        loop {
            let page = self.json(&format!("/api/alerts?limit=1000&offset={}", ids.len()));
            let alerts = page["alerts"].as_array().unwrap();
            if alerts.is_empty() {
                break;
            }
            ids.extend(alerts.iter().map(id_and_update));
        }
        ids
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An alert record's `alert_id` and `update` (under `alert.context.edgewatch`).
fn id_and_update(a: &serde_json::Value) -> (String, u64) {
    let e = &a["alert"]["context"]["edgewatch"];
    (
        e["alert_id"].as_str().unwrap().to_string(),
        e["update"].as_u64().unwrap(),
    )
}

/// GET over HTTP/1.0: (status, body), or None when nothing answers.
fn get(port: u16, p: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {p} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn metric(port: u16, name: &str) -> u64 {
    let Some((200, text)) = get(port, "/metrics") else {
        return 0;
    };
    let key = format!("edgewatch_collector_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} in {text}"))
}

// ---------------------------------------------------------------------------------------------
// sensors

/// `every_flow`: every flow of lab-mini.pcap alerts (~1500 alerts, one record each), no
/// incidents. Otherwise the default incidents: 4 alerts in 9 records (updates, final updates).
/// Fast reconnects either way.
fn write_config(dir: &Path, sensor_id: &str, every_flow: bool) -> PathBuf {
    let file = dir.join(format!("{sensor_id}.toml"));
    let alerts = if every_flow {
        "[model]\nthreshold = 0.0\n[alert]\nmode = \"flow\"\nmax_alerts_per_s = 1000000.0\n"
    } else {
        ""
    };
    let text = format!(
        "sensor_id = \"{sensor_id}\"\n{alerts}\
         [mqtt]\nreconnect_min_s = 0.2\nreconnect_max_s = 1.0\n"
    );
    std::fs::write(&file, text).unwrap();
    file
}

struct Agent {
    alerts: PathBuf,
    child: Child,
}

impl Agent {
    fn start(dir: &Path, broker: &Broker, sensor_id: &str, every_flow: bool) -> Agent {
        let config = write_config(dir, sensor_id, every_flow);
        let alerts = dir.join(format!("{sensor_id}.jsonl"));
        let state = dir.join(format!("{sensor_id}-state"));
        let child = Command::new(agent_bin())
            .arg("replay")
            .arg(data("lab-mini.pcap"))
            .arg("--config")
            .arg(&config)
            .arg("--alerts")
            .arg(&alerts)
            .args(["--mqtt", &broker.url()])
            .arg("--state-dir")
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgewatch runs");
        Agent { alerts, child }
    }

    /// Waits for a clean exit (every record acknowledged by the broker); each record's alert id
    /// and update, in the order written.
    fn finish(mut self) -> Vec<(String, u64)> {
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "replay failed: {err}");
        records(&self.alerts)
    }
}

fn records(alerts: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(alerts)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| id_and_update(&serde_json::from_str(l).unwrap()))
        .collect()
}

fn read_records(dir: &Path, sensor_id: &str) -> Vec<(String, u64)> {
    records(&dir.join(format!("{sensor_id}.jsonl")))
}

/// alert_id -> the highest update written: what the store must hold.
fn newest(records: &[(String, u64)]) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for (id, update) in records {
        let u = m.entry(id.clone()).or_insert(*update);
        *u = (*u).max(*update);
    }
    m
}

/// Asserts that the store holds exactly the alerts of `expected`, each once, each as its
/// newest update.
fn assert_exactly(c: &Collector, expected: &HashMap<String, u64>) {
    wait_for(
        &format!("{} alerts in the store", expected.len()),
        DEADLINE,
        || c.total() >= expected.len() as u64,
    );
    let ids = c.all_ids();
    let stored: HashMap<String, u64> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), stored.len(), "an alert stored twice");
    assert_eq!(
        stored.len(),
        expected.len(),
        "stored {} alerts, the sensors wrote {}",
        stored.len(),
        expected.len()
    );
    assert!(
        stored.keys().collect::<HashSet<_>>() == expected.keys().collect::<HashSet<_>>(),
        "the stored alerts are the ones written"
    );
    let stale = expected.iter().filter(|(id, u)| stored[*id] != **u).count();
    assert_eq!(stale, 0, "every alert stored as its newest update");
    assert_eq!(c.total(), expected.len() as u64);
}

// ---------------------------------------------------------------------------------------------

fn two_collectors_store_each_alert_once(dir: &Path, db: &str) -> (Collector, Collector) {
    let broker = Broker::start(dir);
    let a = Collector::start(dir, &broker, db, "ca");
    let b = Collector::start(dir, &broker, db, "cb");
    let s1 = Agent::start(dir, &broker, "s1", true);
    let s2 = Agent::start(dir, &broker, "s2", true);
    let s3 = Agent::start(dir, &broker, "s3", false);
    let mut records = s1.finish();
    records.extend(s2.finish());
    let from_s3 = s3.finish();
    assert!(
        from_s3.iter().any(|(_, update)| *update > 0),
        "s3's incidents are updated: {from_s3:?}"
    );
    records.extend(from_s3);
    let expected = newest(&records);
    let written = expected.len();
    let per_sensor: usize = ["s1", "s2", "s3"]
        .iter()
        .map(|s| newest(&read_records(dir, s)).len())
        .sum();
    assert_eq!(written, per_sensor, "alert ids are unique across sensors");
    assert!(
        written > 1000,
        "lab-mini.pcap gives ~1500 alerts per sensor"
    );
    assert_exactly(&a, &expected);
    let (ia, ib) = (a.metric("alerts_ingested"), b.metric("alerts_ingested"));
    let updated = a.metric("alerts_updated") + b.metric("alerts_updated");
    let dup = a.metric("alerts_duplicate") + b.metric("alerts_duplicate");
    println!(
        "{db}: sensors wrote {} records of {written} alerts; collector a stored {ia}, b {ib}, \
         updates {updated}, duplicates {dup}; /api/alerts total {}",
        records.len(),
        a.total()
    );
    assert_eq!(
        ia + ib,
        written as u64,
        "each alert stored once between the two"
    );
    assert_eq!(
        ia + ib + updated + dup,
        records.len() as u64,
        "every record counted once"
    );
    // The two collectors share the topic: an update can reach one of them after a later
    // update of the same alert reached the other, and then changes nothing. Only updates can.
    assert!(
        dup <= (records.len() - written) as u64,
        "no record delivered to both collectors"
    );
    assert!(ia > 0 && ib > 0, "the shared subscription split the load");
    wait_for("the sensors' stats and status", DEADLINE, || {
        let sensors = a.json("/api/sensors");
        let s = sensors["sensors"].as_array().unwrap();
        s.len() == 3
            && s.iter()
                .all(|s| s["packets"].as_i64() > Some(0) && s["status"] == "offline")
    });
    // The broker is stopped with `broker` here; the collectors keep serving the stored data.
    drop(broker);
    (a, b)
}

#[test]
fn sqlite_two_collectors_store_each_alert_once_and_the_ui_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", path(&dir.path().join("alerts.db")));
    let (a, _b) = two_collectors_store_each_alert_once(dir.path(), &db);
    ui_shows_incidents_alerts_sensors_and_filters(dir.path(), &a);
}

/// The two agents publish while collector "ca" is SIGKILLed, then restarted with the same
/// session: every alert ends up stored, each once.
fn kill_and_restart_misses_nothing(dir: &Path, db: &str) {
    let broker = Broker::start(dir);
    let mut a = Collector::start(dir, &broker, db, "ca");
    let b = Collector::start(dir, &broker, db, "cb");
    let s1 = Agent::start(dir, &broker, "s1", true);
    let s2 = Agent::start(dir, &broker, "s2", true);
    wait_for("collector a to store some alerts", DEADLINE, || {
        a.metric("alerts_ingested") > 0
    });
    let before = a.metric("alerts_ingested");
    a.sigkill();
    let killed_at = b.total();
    let mut records = s1.finish();
    records.extend(s2.finish());
    let expected = newest(&records);
    a.spawn();
    assert_exactly(&b, &expected);
    println!(
        "{db}: killed collector a after it stored {before} (store held {killed_at}); after its \
         restart it stored {} more ({} duplicates); b stored {}; total {} = {} written",
        a.metric("alerts_ingested"),
        a.metric("alerts_duplicate"),
        b.metric("alerts_ingested"),
        b.total(),
        expected.len()
    );
}

#[test]
fn sqlite_collector_killed_and_restarted_while_alerts_flow_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", path(&dir.path().join("alerts.db")));
    kill_and_restart_misses_nothing(dir.path(), &db);
}

#[test]
fn postgres_two_collectors_and_a_restart_store_each_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(dir.path());
    let first = dir.path().join("first");
    std::fs::create_dir_all(&first).unwrap();
    let (a, b) = two_collectors_store_each_alert_once(&first, &pg.url());
    drop((a, b));
    // A fresh database for the second part.
    let out = Command::new("psql")
        .args([
            &pg.url(),
            "-c",
            "DROP TABLE alerts, sensors, schema_version",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = dir.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    kill_and_restart_misses_nothing(&second, &pg.url());
}

#[test]
fn invalid_wrong_schema_and_oversized_messages_are_counted_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let db = format!("sqlite:{}", path(&dir.path().join("alerts.db")));
    let c = Collector::start(dir.path(), &broker, &db, "ca");
    let good = r#"{"timestamp":"2024-05-01T12:00:00.000001+0000","event_type":"alert","host":"r1","flow_id":7,"src_ip":"10.0.0.1","src_port":1234,"dest_ip":"10.0.0.2","dest_port":80,"proto":"TCP","alert":{"action":"allowed","gid":1,"signature_id":9100001,"rev":1,"signature":"EDGEWATCH Network scan","category":"Detection of a Network Scan","severity":2,"source":{"ip":"10.0.0.1"},"target":{"ip":"10.0.0.2"},"context":{"edgewatch":{"sensor_id":"r1","alert_id":"0123456789abcdef0123456789abcdef","update":0,"final":false,"class":"scan","score":0.9,"model":{"name":"m","version":"1"},"count":8,"first_seen":"2024-05-01T12:00:00.000000+0000","last_seen":"2024-05-01T12:00:00.000001+0000","evidence":{"window_s":0.5,"flows":8,"targets":8,"hosts":1,"ports":8,"unanswered":8}}}},"flow":{"pkts_toserver":1,"pkts_toclient":0,"bytes_toserver":60,"bytes_toclient":0,"start":"2024-05-01T12:00:00.000000+0000","end":"2024-05-01T12:00:00.000001+0000"}}"#;
    let wrong_schema = good
        .replace("\"severity\":2", "\"severity\":\"high\"")
        .replace(
            "0123456789abcdef0123456789abcdef",
            "f123456789abcdef0123456789abcdef",
        );
    let big = vec![b'x'; 10 * 1024 * 1024];
    let mut options = rumqttc::MqttOptions::new("tester", "127.0.0.1", broker.port);
    options.set_max_packet_size(32 << 20, 32 << 20);
    let (client, mut connection) = rumqttc::Client::new(options, 16);
    let topic = "edgewatch/v1/r1/alert";
    let q = rumqttc::QoS::AtLeastOnce;
    client
        .publish(topic, q, false, b"{not json".to_vec())
        .unwrap();
    client
        .publish(topic, q, false, wrong_schema.into_bytes())
        .unwrap();
    client.publish(topic, q, false, big).unwrap();
    client
        .publish(topic, q, false, good.as_bytes().to_vec())
        .unwrap();
    let mut acked = 0;
    for event in connection.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = event {
            acked += 1;
            if acked == 4 {
                break;
            }
        }
        event.expect("publishing works");
    }
    wait_for("the good alert after the bad ones", DEADLINE, || {
        c.total() == 1
    });
    wait_for("the counters", DEADLINE, || {
        c.metric("messages_invalid") == 2 && c.metric("messages_oversized") == 1
    });
    println!(
        "invalid {}, oversized {}, ingested {}, mqtt connects {}",
        c.metric("messages_invalid"),
        c.metric("messages_oversized"),
        c.metric("alerts_ingested"),
        c.metric("mqtt_connects")
    );
    assert_eq!(c.metric("alerts_ingested"), 1);
    assert_eq!(c.metric("mqtt_connects"), 1, "the connection stayed up");
    let (status, body) = c.get("/api/alerts/0123456789abcdef0123456789abcdef");
    assert_eq!((status, body.as_str()), (200, good));
    assert_eq!(c.get("/api/alerts/f123456789abcdef0123456789abcdef").0, 404);
    assert_eq!(c.get("/api/alerts?since=yesterday").0, 400);
}

// ---------------------------------------------------------------------------------------------
// the UI, in a real browser

fn chromium(dir: &Path, extra: &[&str], url: &str) -> String {
    let profile = dir.join("chromium-profile");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", path(&profile)))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs (apt-get install chromium)");
    assert!(
        out.status.success(),
        "chromium {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The values of `attr="..."` in the DOM, in order.
fn attr_values(dom: &str, attr: &str) -> Vec<String> {
    let key = format!("{attr}=\"");
    dom.match_indices(&key)
        .map(|(i, _)| {
            let rest = &dom[i + key.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

fn ui_shows_incidents_alerts_sensors_and_filters(dir: &Path, c: &Collector) {
    let base = format!("http://127.0.0.1:{}", c.port);

    // Incidents: one row per attacker, victim and class.
    let api = c.json("/api/incidents?limit=200");
    let incidents = api["incidents"].as_array().unwrap();
    let total = api["total"].as_u64().unwrap();
    let alerts_in_incidents: i64 = incidents
        .iter()
        .map(|i| i["alerts"].as_i64().unwrap())
        .sum();
    assert!(
        total > 0 && total < c.total(),
        "{total} incidents of {} alerts",
        c.total()
    );
    if total <= 200 {
        assert_eq!(
            alerts_in_incidents as u64,
            c.total(),
            "each alert in one incident"
        );
    }
    let dom = chromium(dir, &["--dump-dom"], &format!("{base}/"));
    let rows = attr_values(&dom, "data-incident");
    assert_eq!(
        rows.len() as u64,
        total.min(50),
        "the first page of incidents is shown"
    );
    assert!(
        dom.contains(&format!("{total} incidents")),
        "the total is shown"
    );
    assert!(dom.contains("<rect"), "the chart is drawn");
    assert!(
        attr_values(&dom, "data-alert-id").is_empty(),
        "no incident is open"
    );

    // An incident opened from the URL lists its alerts inside it.
    let big = incidents
        .iter()
        .max_by_key(|i| i["alerts"].as_i64())
        .unwrap();
    let key = format!(
        "{}/{}/{}",
        big["src_ip"].as_str().unwrap(),
        big["dest_ip"].as_str().unwrap(),
        big["class"].as_str().unwrap()
    );
    let dom = chromium(
        dir,
        &["--dump-dom"],
        &format!(
            "{base}/?open={}",
            key.replace('/', "%2F").replace('*', "%2A")
        ),
    );
    let inside = attr_values(&dom, "data-alert-id");
    let n = big["alerts"].as_u64().unwrap();
    assert_eq!(inside.len() as u64, n.min(50), "incident {key}: its alerts");
    for id in big["alert_ids"].as_array().unwrap() {
        assert!(inside.contains(&id.as_str().unwrap().to_string()));
    }
    println!(
        "UI: {total} incidents; the largest ({key}) opens with {} of {n} alerts",
        inside.len()
    );

    // The alerts page.
    let dom = chromium(dir, &["--dump-dom"], &format!("{base}/alerts"));
    let rows = attr_values(&dom, "data-alert-id");
    assert_eq!(rows.len(), 50, "the first page of alerts is shown");
    assert!(
        dom.contains(&format!("{} alerts", c.total())),
        "the total is shown"
    );

    // A filter from the URL: only sensor s2's alerts of one category.
    let first: serde_json::Value =
        serde_json::from_str(&c.get(&format!("/api/alerts/{}", rows[0])).1).unwrap();
    let category = first["alert"]["category"].as_str().unwrap().to_string();
    let api = c.json(&format!(
        "/api/alerts?sensor=s2&category={}&limit=1000",
        category.replace(' ', "+")
    ));
    let matching = api["total"].as_u64().unwrap();
    assert!(matching > 0);
    let url = format!(
        "{base}/alerts?sensor=s2&category={}",
        category.replace(' ', "%20")
    );
    let dom = chromium(dir, &["--dump-dom"], &url);
    let sensors = attr_values(&dom, "data-sensor");
    let categories = attr_values(&dom, "data-category");
    assert_eq!(sensors.len() as u64, matching.min(50));
    assert!(
        sensors.iter().all(|s| s == "s2"),
        "only s2's rows: {sensors:?}"
    );
    assert!(categories.iter().all(|c| *c == category));
    assert!(dom.contains(&format!("{matching} alerts matching the filters")));
    println!(
        "UI: filter sensor=s2&category={category} shows {} rows of {matching}",
        sensors.len()
    );

    let dom = chromium(dir, &["--dump-dom"], &format!("{base}/sensors"));
    assert_eq!(attr_values(&dom, "data-sensor-id"), ["s1", "s2", "s3"]);
    let dom = chromium(dir, &["--dump-dom"], &format!("{base}/alerts/{}", rows[0]));
    assert!(dom.contains("alert-detail") && dom.contains(&rows[0]));

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("collector-ui.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        dir,
        &[
            &format!("--screenshot={}", path(&shot)),
            "--window-size=1280,900",
            "--hide-scrollbars",
        ],
        &format!("{base}/"),
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} written ({size} bytes)",
        shot.display()
    );
    println!("UI screenshot: {}", shot.display());
}
