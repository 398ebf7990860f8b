//! Collector figures for docs/collector.md: how fast alerts are validated and stored (batches of
//! 500 in one transaction, as the writer thread does), and how long the API takes to answer a
//! page of alerts once many are stored.
//!
//! ```sh
//! cargo run --release --features collector --example collector_ingest            # SQLite
//! EW_BENCH_DB=postgres://ew@127.0.0.1:5432/postgres cargo run --release --features collector --example collector_ingest
//! EW_BENCH_ROWS=1000000 (default) sets how many alerts are stored before the API is timed.
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgewatch::collector::store::{self, DbUrl};
use edgewatch::collector::validate::{Message, Validator};
use edgewatch::collector::{CollectorConfig, Metrics, web};

/// (class, signature_id, signature, category) of the four behaviours.
const CLASSES: [(&str, u32, &str, &str); 4] = [
    (
        "scan",
        9100001,
        "EDGEWATCH Network scan",
        "Detection of a Network Scan",
    ),
    (
        "flood",
        9100002,
        "EDGEWATCH Flood",
        "Detection of a Denial of Service Attack",
    ),
    (
        "bruteforce",
        9100003,
        "EDGEWATCH Brute force",
        "Attempted User Privilege Gain",
    ),
    (
        "slowdos",
        9100004,
        "EDGEWATCH Slow denial of service",
        "Detection of a Denial of Service Attack",
    ),
];

fn alert(i: u64) -> String {
    let sensor = format!("router-{:03}", i % 100);
    let ts = 1_714_564_800_000_000u64 + i * 1000;
    let (secs, micros) = (ts / 1_000_000, ts % 1_000_000);
    let t =
        humantime::format_rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string();
    let timestamp = format!("{}.{micros:06}+0000", t.trim_end_matches('Z'));
    let (class, sid, signature, category) = CLASSES[(i % 4) as usize];
    let (src, dest) = (
        format!("10.{}.{}.{}", i % 7, i % 251, i % 253),
        format!("192.168.{}.{}", i % 3, i % 250),
    );
    serde_json::json!({
        "timestamp": timestamp,
        "event_type": "alert",
        "host": sensor,
        "flow_id": i,
        "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        "src_ip": src,
        "src_port": 1024 + i % 60000,
        "dest_ip": dest,
        "dest_port": 443,
        "proto": "TCP",
        "alert": {
            "action": "allowed", "gid": 1, "signature_id": sid, "rev": 1,
            "signature": signature,
            "category": category,
            "severity": 1 + i % 3,
            "source": {"ip": src},
            "target": {"ip": dest, "port": 443},
            "context": {"edgewatch": {
                "sensor_id": sensor,
                "alert_id": format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())),
                "update": 0, "final": false, "class": class, "score": 0.93,
                "model": {"name": "edgewatch-mlp", "version": "2024.05"},
                "count": 1, "first_seen": timestamp, "last_seen": timestamp,
                "evidence": {"window_s": 0.0, "flows": 1}
            }}
        },
        "flow": {
            "pkts_toserver": 12, "pkts_toclient": 9, "bytes_toserver": 1804, "bytes_toclient": 5210,
            "start": timestamp, "end": timestamp
        }
    })
    .to_string()
}

fn get(addr: &str, path: &str) -> (Duration, usize) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.1 200") || body.starts_with(b"HTTP/1.0 200"));
    (start.elapsed(), body.len())
}

fn main() {
    let rows: u64 = std::env::var("EW_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("EW_BENCH_DB")
        .unwrap_or_else(|_| format!("sqlite:{}", dir.path().join("bench.db").display()));
    let db = DbUrl::parse(&url).unwrap();
    let mut s = store::open(&db, true).unwrap();
    let validator = Validator::new();
    println!("database {db}, {rows} alerts of ~{} bytes", alert(0).len());

    // Ingest: validate + insert, 500 per transaction. Only that is timed, not making up the
    // synthetic alerts.
    let batch = 500;
    let mut busy = Duration::ZERO;
    let mut i = 0;
    let mut report = Instant::now();
    // EW_BENCH_ROWS=0 with EW_BENCH_DB: only the API figures, over what the database holds.
    while i < rows {
        let n = batch.min(rows - i);
        let bodies: Vec<(String, String)> = (i..i + n)
            .map(|j| {
                (
                    format!("edgewatch/v1/router-{:03}/alert", j % 100),
                    alert(j),
                )
            })
            .collect();
        let start = Instant::now();
        let mut alerts = Vec::with_capacity(n as usize);
        for (topic, body) in &bodies {
            match validator.classify("edgewatch/v1", topic, body.as_bytes(), 65536, 0) {
                Message::Alert(row) => alerts.push(row),
                other => panic!("{other:?}"),
            }
        }
        s.insert(&alerts, &[]).unwrap();
        busy += start.elapsed();
        i += n;
        if report.elapsed() > Duration::from_secs(15) {
            println!(
                "  {i} stored, {:.0} alerts/s so far",
                i as f64 / busy.as_secs_f64()
            );
            report = Instant::now();
        }
    }
    if rows == 0 {
        return api(&db);
    }
    let secs = busy.as_secs_f64();
    println!(
        "ingest: {rows} alerts in {secs:.1} s = {:.0} alerts/s (validate + insert, batches of {batch})",
        rows as f64 / secs
    );
    // Validation alone, for the share it takes.
    let bodies: Vec<String> = (0..20_000).map(alert).collect();
    let start = Instant::now();
    for b in &bodies {
        let _ = validator.classify(
            "edgewatch/v1",
            "edgewatch/v1/router-000/alert",
            b.as_bytes(),
            65536,
            0,
        );
    }
    println!(
        "  of which schema validation: {:.1} µs per alert",
        start.elapsed().as_secs_f64() * 1e6 / bodies.len() as f64
    );
    // Duplicates (a resent batch) cost:
    let again: Vec<_> = (0..batch)
        .map(|j| {
            match validator.classify(
                "edgewatch/v1",
                &format!("edgewatch/v1/router-{:03}/alert", j % 100),
                alert(j).as_bytes(),
                65536,
                0,
            ) {
                Message::Alert(row) => row,
                _ => unreachable!(),
            }
        })
        .collect();
    let start = Instant::now();
    let done = s.insert(&again, &[]).unwrap();
    assert_eq!(done.duplicate, batch);
    println!(
        "  a resent batch of {batch} duplicates: {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );

    api(&db);
}

/// API latency over HTTP, with what the database holds.
fn api(db: &DbUrl) {
    let cfg = CollectorConfig {
        listen: "127.0.0.1:0".to_string(),
        ..CollectorConfig::default()
    };
    let server = web::Server::bind(&cfg, db, Arc::new(Metrics::default())).unwrap();
    let addr = server.addr();
    let _threads = server.spawn(2).unwrap();
    for (what, path) in [
        ("first page of 50, no filter", "/api/alerts?limit=50"),
        (
            "page 100 of 50 (offset 5000)",
            "/api/alerts?limit=50&offset=5000",
        ),
        (
            "one sensor, first page",
            "/api/alerts?sensor=router-042&limit=50",
        ),
        (
            "one sensor + class + severity",
            "/api/alerts?sensor=router-042&class=flood&severity=2&limit=50",
        ),
        ("source IP", "/api/alerts?src_ip=10.3.100.17&limit=50"),
        (
            "time range (1 h of 1000 s)",
            "/api/alerts?since=2024-05-01T12:00:00Z&until=2024-05-01T13:00:00Z&limit=50",
        ),
        (
            "one alert by id",
            &format!(
                "/api/alerts/{:032x}",
                xxhash_rust::xxh3::xxh3_128(&7u64.to_le_bytes())
            ),
        ),
        ("timeline (chart), no filter", "/api/timeline"),
        ("sensors", "/api/sensors"),
    ] {
        let _ = get(&addr, path);
        let mut times: Vec<Duration> = (0..10).map(|_| get(&addr, path).0).collect();
        times.sort();
        let bytes = get(&addr, path).1;
        println!(
            "API {what}: median {:.1} ms, max {:.1} ms ({bytes} bytes)",
            times[5].as_secs_f64() * 1e3,
            times[9].as_secs_f64() * 1e3
        );
    }
}
