//! MQTT ingest: an MQTT 5 client with a persistent session and manual acknowledgements, and the
//! writer thread that stores what it receives.
//!
//! Alerts and stats come through shared subscriptions (`$share/<group>/<prefix>/+/alert|stats`),
//! so the broker splits them between the collectors of a group; the retained status goes only to
//! plain subscriptions, so every collector subscribes to `<prefix>/+/status` itself (a status
//! stored twice is the same row). A message is acknowledged (PUBACK) only after the transaction
//! holding it committed: a collector that dies before that gets it again from the broker, and
//! the record's `alert_id` and `update` make the second store a no-op. The broker sends at most
//! `receive_maximum` unacknowledged messages, which bounds every queue here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{Client, Event, MqttOptions};

use super::store::{Store, now_us};
use super::validate::{Message, Validator};
use super::{CollectorConfig, CollectorError, Metrics};
use crate::config::{BrokerUrl, check_build};
use crate::mqtt::{Access, MqttError};

/// How long the broker keeps a stopped collector's session (and queues its share of messages):
/// a week, so that a collector taken out of service for good does not hold messages forever.
const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// A received publish and the connection it came on: acknowledging it on a later connection
/// would acknowledge whatever the broker resent under the same packet id.
struct Received {
    connection: u64,
    publish: Publish,
}

/// The running ingest.
pub struct Ingest {
    stop: Arc<AtomicBool>,
    client: Client,
    writer: Option<JoinHandle<()>>,
}

impl Ingest {
    /// Whether the writer thread ended on its own (it never should).
    pub fn finished(&self) -> bool {
        self.writer.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Commits and acknowledges the batch in hand, then disconnects; unacknowledged messages
    /// stay with the broker for the next start.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let _ = self.client.try_disconnect();
    }
}

/// The topics to subscribe to.
pub fn filters(prefix: &str, group: &str) -> [String; 3] {
    [
        format!("$share/{group}/{prefix}/+/alert"),
        format!("$share/{group}/{prefix}/+/stats"),
        format!("{prefix}/+/status"),
    ]
}

pub fn start(
    cfg: &CollectorConfig,
    store: Box<dyn Store>,
    validator: Arc<Validator>,
    metrics: Arc<Metrics>,
) -> Result<Ingest, CollectorError> {
    let url = BrokerUrl::parse(&cfg.mqtt.url).map_err(MqttError::Url)?;
    check_build(&url).map_err(MqttError::Url)?;
    let access = Access::new(&cfg.mqtt, &url)?;
    let client_id = cfg.client_id();
    let mut options = MqttOptions::new(client_id.clone(), url.host.clone(), url.port);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_S))
        .set_keep_alive(Duration::from_secs(
            cfg.mqtt.keepalive_s.round().max(1.0) as u64
        ))
        .set_max_packet_size(Some(cfg.max_packet_bytes))
        .set_receive_maximum(Some(cfg.receive_maximum))
        .set_manual_acks(true)
        .set_connection_timeout(10);
    if let Some((user, password)) = access.credentials {
        options.set_credentials(user, password);
    }
    if let Some(transport) = access.transport {
        options.set_transport(transport);
    }
    let capacity = usize::from(cfg.receive_maximum) * 2 + 16;
    let (client, mut connection) = Client::new(options, capacity);
    // Bounded by the broker's flow control: at most receive_maximum unacknowledged messages
    // exist, and this queue holds twice that, so the MQTT thread never blocks on it.
    let (tx, rx) = crossbeam_channel::bounded::<Received>(capacity);
    let stop = Arc::new(AtomicBool::new(false));
    let current = Arc::new(AtomicU64::new(0));

    let filters = filters(&cfg.mqtt.topic_prefix, &cfg.group);
    let (sub, m, cur, st) = (
        client.clone(),
        metrics.clone(),
        current.clone(),
        stop.clone(),
    );
    let min_wait = Duration::from_secs_f64(cfg.mqtt.reconnect_min_s.max(0.05));
    let max_wait = Duration::from_secs_f64(cfg.mqtt.reconnect_max_s.max(0.05));
    let shown = url.to_string();
    std::thread::Builder::new()
        .name("ew-col-mqtt".into())
        .spawn(move || {
            let mut wait = min_wait;
            let mut last_problem = String::new();
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        cur.fetch_add(1, Ordering::Relaxed);
                        Metrics::add(&m.mqtt_connects, 1);
                        log::info!(
                            "Connected to MQTT broker {shown} as {client_id} (session {}).",
                            if ack.session_present {
                                "resumed"
                            } else {
                                "new"
                            }
                        );
                        last_problem.clear();
                        wait = min_wait;
                        for f in &filters {
                            if sub.try_subscribe(f.clone(), QoS::AtLeastOnce).is_err() {
                                log::error!(
                                    "Cannot subscribe to {f}: the MQTT client queue is full."
                                );
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let connection = cur.load(Ordering::Relaxed);
                        if tx
                            .send(Received {
                                connection,
                                publish,
                            })
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as R;
                        for reason in ack.return_codes {
                            if !matches!(reason, R::Success(_)) {
                                log::error!(
                                    "MQTT broker {shown} refused a subscription ({reason:?}); \
                                     check its ACL and that it supports shared subscriptions."
                                );
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if st.load(Ordering::Relaxed) {
                            break;
                        }
                        Metrics::add(&m.mqtt_errors, 1);
                        let problem = e.to_string();
                        if problem != last_problem {
                            log::warn!(
                                "MQTT broker {shown}: {problem}. Retrying every {:.1}-{:.0} s.",
                                min_wait.as_secs_f64(),
                                max_wait.as_secs_f64()
                            );
                            last_problem = problem;
                        }
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(max_wait);
                    }
                }
            }
        })
        .map_err(CollectorError::Spawn)?;

    let writer = Writer {
        store,
        validator,
        metrics,
        client: client.clone(),
        current,
        prefix: cfg.mqtt.topic_prefix.clone(),
        max_payload: cfg.max_payload_bytes,
        batch_size: cfg.batch_size,
        batch_wait: Duration::from_millis(cfg.batch_wait_ms),
        retention_us: (cfg.retention_days > 0.0).then_some((cfg.retention_days * 86_400e6) as i64),
        max_alerts: (cfg.max_alerts > 0).then_some(cfg.max_alerts),
        stop: stop.clone(),
    };
    let writer = std::thread::Builder::new()
        .name("ew-col-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(CollectorError::Spawn)?;
    Ok(Ingest {
        stop,
        client,
        writer: Some(writer),
    })
}

struct Writer {
    store: Box<dyn Store>,
    validator: Arc<Validator>,
    metrics: Arc<Metrics>,
    client: Client,
    current: Arc<AtomicU64>,
    prefix: String,
    max_payload: usize,
    batch_size: usize,
    batch_wait: Duration,
    retention_us: Option<i64>,
    max_alerts: Option<u64>,
    stop: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Received>) {
        let mut next_retention = Instant::now();
        let mut batch = Vec::with_capacity(self.batch_size);
        while !self.stop.load(Ordering::Relaxed) {
            if Instant::now() >= next_retention {
                self.retention();
                next_retention = Instant::now() + RETENTION_EVERY;
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(m) => batch.push(m),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let deadline = Instant::now() + self.batch_wait;
            while batch.len() < self.batch_size {
                match rx.recv_deadline(deadline) {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if !self.commit(&batch) {
                break;
            }
            let current = self.current.load(Ordering::Relaxed);
            for m in batch.drain(..) {
                if m.connection == current {
                    let _ = self.client.ack(&m.publish);
                }
            }
        }
    }

    /// Stores a batch, retrying until it is committed; false when told to stop first (the
    /// batch is then left unacknowledged for the broker to send again).
    fn commit(&mut self, batch: &[Received]) -> bool {
        let m = &self.metrics;
        let now = now_us();
        let mut alerts = Vec::with_capacity(batch.len());
        let mut sensors = Vec::new();
        let (mut invalid, mut oversized) = (0, 0);
        for r in batch {
            let topic = String::from_utf8_lossy(&r.publish.topic);
            match self.validator.classify(
                &self.prefix,
                &topic,
                &r.publish.payload,
                self.max_payload,
                now,
            ) {
                Message::Alert(row) => alerts.push(row),
                Message::Sensor(update) => sensors.push(update),
                Message::Oversized => oversized += 1,
                Message::Invalid(_) => invalid += 1,
            }
        }
        let mut wait = Duration::from_millis(100);
        let mut last_problem = String::new();
        let done = loop {
            match self.store.insert(&alerts, &sensors) {
                Ok(done) => break done,
                Err(e) => {
                    Metrics::add(&m.db_errors, 1);
                    let problem = e.to_string();
                    if problem != last_problem {
                        log::error!(
                            "Cannot store {} messages: {problem}. Retrying; they stay \
                             unacknowledged with the broker meanwhile.",
                            batch.len()
                        );
                        last_problem = problem;
                    }
                    if self.stop.load(Ordering::Relaxed) {
                        return false;
                    }
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        };
        if !last_problem.is_empty() {
            log::info!("Storing works again.");
        }
        Metrics::add(&m.messages_received, batch.len() as u64);
        Metrics::add(&m.alerts_ingested, done.new);
        Metrics::add(&m.alerts_updated, done.updated);
        Metrics::add(&m.alerts_duplicate, done.duplicate);
        Metrics::add(&m.messages_invalid, invalid);
        Metrics::add(&m.messages_oversized, oversized);
        for s in &sensors {
            match s {
                super::store::SensorUpdate::Status { .. } => Metrics::add(&m.status_messages, 1),
                super::store::SensorUpdate::Stats { .. } => Metrics::add(&m.stats_messages, 1),
            }
        }
        Metrics::add(&m.db_commits, 1);
        true
    }

    fn retention(&mut self) {
        if self.retention_us.is_none() && self.max_alerts.is_none() {
            return;
        }
        let before = self.retention_us.map(|age| now_us() - age);
        match self.store.prune(before, self.max_alerts) {
            Ok(0) => {}
            Ok(n) => {
                Metrics::add(&self.metrics.alerts_expired, n);
                log::info!("Retention deleted {n} alerts.");
            }
            Err(e) => {
                Metrics::add(&self.metrics.db_errors, 1);
                log::error!("Retention failed: {e}.");
            }
        }
    }
}
