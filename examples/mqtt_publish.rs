//! Measures MQTT publishing against a local mosquitto: outbox append cost per alert, alerts per
//! second published at QoS 1 (outbox -> broker -> PUBACK -> removed), and the memory the outbox
//! path holds. Needs `mosquitto` on the PATH.
//!
//!     cargo run --release --example mqtt_publish -- [ALERTS] [nodelay]
//!
//! ALERTS defaults to 20000. `nodelay` sets mosquitto's `set_tcp_nodelay true`: without it the
//! broker's small PUBACKs meet Nagle's algorithm and delayed ACKs, and publishing stalls for
//! tens of milliseconds at a time.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgewatch::alert::{Alert, ModelRef};
use edgewatch::config::MqttConfig;
use edgewatch::mqtt::Mqtt;
use edgewatch::mqtt::outbox::Outbox;
use edgewatch::mqtt::status::Identity;
use edgewatch::signals::Interrupt;
use edgewatch::sink::{AlertSink, JsonLines};
use edgewatch::stats::Stats;

const SAMPLE: &str = r#"{"timestamp":"2026-11-23T20:54:52.998400+0000","event_type":"alert","host":"bench","flow_id":5742114205574508,"src_ip":"10.77.0.66","dest_ip":"10.77.0.10","dest_port":22,"proto":"TCP","alert":{"action":"allowed","gid":1,"signature_id":9100002,"rev":1,"signature":"EDGEWATCH Flood","category":"Detection of a Denial of Service Attack","severity":1,"source":{"ip":"10.77.0.66"},"target":{"ip":"10.77.0.10","port":22},"context":{"edgewatch":{"sensor_id":"bench","alert_id":"8bb9530510b9f2a45810976f55d8020a","update":0,"final":false,"class":"flood","score":1.0,"model":{"name":"edgewatch-mlp","version":"mlp-6.1-int8"},"count":34,"first_seen":"2026-11-23T20:54:52.979544+0000","last_seen":"2026-11-23T20:54:52.998400+0000","evidence":{"window_s":0.019,"flows":34,"packets_per_s":102.0,"bytes_per_s":4760.0,"sources":1,"top_sources":[{"ip":"10.77.0.66","packets":102}]}}}},"flow":{"pkts_toserver":68,"pkts_toclient":34,"bytes_toserver":3264,"bytes_toclient":1496,"start":"2026-11-23T20:54:52.979522+0000","end":"2026-11-23T20:54:52.998400+0000"}}"#;

/// Resident and peak resident memory of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("mosquitto.conf");
    let nodelay = std::env::args().nth(2).is_some_and(|a| a == "nodelay");
    let mut text = format!(
        "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
    );
    if nodelay {
        text.push_str("set_tcp_nodelay true\n");
    }
    std::fs::write(&conf, text).unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto on the PATH");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let sample: Alert = serde_json::from_str(SAMPLE).unwrap();
    let alerts: Vec<Alert> = (0..n)
        .map(|i| {
            let mut a = sample.clone();
            a.alert.context.edgewatch.alert_id = format!("{i:032x}");
            a
        })
        .collect();
    let docs: Vec<Vec<u8>> = alerts
        .iter()
        .map(|a| serde_json::to_vec(a).unwrap())
        .collect();
    let avg_len = docs.iter().map(Vec::len).sum::<usize>() / n;
    println!("alerts: {n}, {avg_len} bytes each on average");

    // Outbox append alone (write + fdatasync per batch), batches of 1 and of 64.
    for batch in [1usize, 64] {
        let sub = dir.path().join(format!("append-{batch}"));
        let outbox = Outbox::open(&sub, 1 << 30).unwrap();
        let count = if batch == 1 { n.min(2000) } else { n };
        let t = Instant::now();
        for chunk in docs[..count].chunks(batch) {
            outbox.append(chunk).unwrap();
        }
        let per = t.elapsed().as_secs_f64() / count as f64;
        println!(
            "outbox append, batches of {batch:>2}: {:.1} µs per alert",
            per * 1e6
        );
    }

    // The agent's path: sink (serialize once, append, JSON line) -> publisher -> broker.
    let (rss0, _) = memory_kib();
    let cfg = MqttConfig {
        outbox_max_mb: 1000.0,
        ..MqttConfig::default()
    };
    let model = ModelRef {
        name: "bench".into(),
        version: "0".into(),
    };
    let identity = Identity::new("bench", model, Vec::new(), "replay");
    let url = format!("mqtt://127.0.0.1:{port}");
    let mqtt = Mqtt::open(&cfg, &url, &dir.path().join("state"), identity).unwrap();
    let mut sink = mqtt.sink(JsonLines::new(Box::new(std::io::sink())));
    let t = Instant::now();
    for chunk in alerts.chunks(64) {
        sink.write(chunk).unwrap();
    }
    sink.close().unwrap();
    let sink_time = t.elapsed();
    let (rss1, _) = memory_kib();
    println!(
        "sink (serialize + outbox + JSON line), batches of 64: {:.1} µs per alert",
        sink_time.as_secs_f64() / n as f64 * 1e6
    );

    let t = Instant::now();
    let (worker, publisher) = mqtt.publisher(Arc::new(Stats::default()), Duration::from_secs(3600));
    publisher.finish(Duration::from_secs(600), Interrupt::never());
    let outcome = worker.run();
    let publish_time = t.elapsed();
    let (rss2, hwm) = memory_kib();
    assert!(outcome.delivered_all, "{outcome:?}");
    println!(
        "published and acknowledged (QoS 1, from the outbox): {} alerts in {:.2} s = {:.0} alerts/s",
        outcome.published,
        publish_time.as_secs_f64(),
        outcome.published as f64 / publish_time.as_secs_f64()
    );
    println!(
        "memory: RSS {rss0} KiB before the outbox, {rss1} KiB with {n} alerts in it, {rss2} KiB after publishing; peak {hwm} KiB"
    );
    let _ = broker.kill();
    let _ = broker.wait();
}
