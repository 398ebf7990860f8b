//! The publisher thread, and the alert sink that feeds it through the outbox.
//!
//! One thread runs a tokio current-thread runtime. Each connection attempt gets a fresh rumqttc
//! client and event loop; a task polls the event loop without ever being cancelled and forwards
//! its events, and the main task reacts to them, to new alerts (the doorbell), to the stats timer
//! and to the request to finish. Requests left in a dead connection's queue die with it: after a
//! reconnect, publishing starts again from the outbox's head, so an alert whose PUBACK was lost
//! is sent again (at least once, never lost).
//!
//! Acknowledgements are matched to alerts by packet id: rumqttc reports `Outgoing::Publish(pkid)`
//! for requests in the order they were queued, then `Incoming::PubAck(pkid)`.
//!
//! The protocol is MQTT 5 unless `mqtt.protocol` says otherwise; with "auto", a broker that
//! refuses MQTT 5 gets 3.1.1 on the very next attempt ([`link`](super::link)).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::connect::{CLIENT_INFLIGHT, Problem, ProblemKind, Settings};
use super::link::{self, Client, Events, LinkError, LinkEvent, V5Failure, Version};
use super::outbox::Outbox;
use super::status::{Identity, PublishCounters, stats_payload, status_payload};
use super::{DrainOutcome, MqttError};
use crate::alert::Alert;
use crate::config::{MqttConfig, MqttProtocol};
use crate::signals::Interrupt;
use crate::sink::{AlertSink, JsonLines};
use crate::stats::Stats;

/// Alerts published and not yet acknowledged, at most. Refilled when half are acknowledged, so
/// reading the outbox costs about two element reads per alert.
const WINDOW: usize = 64;
const REFILL_AT: usize = WINDOW / 2;
/// The client's request queue: the window plus status, stats and disconnect, so `try_publish`
/// does not fail for lack of room.
const REQUEST_QUEUE: usize = WINDOW + 16;
/// How long a clean shutdown waits for the broker to acknowledge the "offline" status.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

const _: () = assert!(WINDOW + 4 < CLIENT_INFLIGHT as usize);

/// MQTT, set up and not yet publishing: settings checked, files read, outbox open.
pub struct Mqtt {
    settings: Settings,
    outbox: Arc<Outbox>,
    doorbell: Arc<Notify>,
    identity: Identity,
}

impl Mqtt {
    /// Reads the config's files and opens the outbox in `state_dir`. `url` is `mqtt.url` or the
    /// `--mqtt` override.
    pub fn open(
        cfg: &MqttConfig,
        url: &str,
        state_dir: &Path,
        identity: Identity,
    ) -> Result<Mqtt, MqttError> {
        let settings = Settings::new(cfg, url, &identity.sensor_id, &identity)?;
        let max_bytes = (cfg.outbox_max_mb * 1e6) as u64;
        let outbox = Arc::new(Outbox::open(state_dir, max_bytes)?);
        let waiting = outbox.counters().depth;
        if waiting > 0 {
            log::info!(
                "The MQTT outbox {} holds {waiting} alerts from an earlier run; they go out first.",
                outbox.path().display()
            );
        }
        Ok(Mqtt {
            settings,
            outbox,
            doorbell: Arc::new(Notify::new()),
            identity,
        })
    }

    /// The alert sink: JSON lines as before, and the outbox.
    pub fn sink(&self, lines: JsonLines) -> MqttSink {
        MqttSink {
            lines,
            outbox: self.outbox.clone(),
            doorbell: self.doorbell.clone(),
            failing: false,
            lines_failed: None,
        }
    }

    /// The publisher, to run on a thread of its own, and the handle that tells it to finish.
    /// `stats` are the pipeline's counters, published every `stats_interval`.
    pub fn publisher(
        self,
        stats: Arc<Stats>,
        stats_interval: Duration,
    ) -> (PublisherWorker, Publisher) {
        let (finish_tx, finish_rx) = watch::channel(None);
        let outbox = self.outbox.clone();
        let worker = Worker {
            settings: self.settings,
            outbox: self.outbox,
            doorbell: self.doorbell,
            identity: self.identity,
            stats,
            stats_interval,
            started: Instant::now(),
            published: 0,
            rejected: 0,
            last_rejection: None,
            connects: 0,
            finish_rx,
            finish_at: None,
            interrupt: None,
            interrupted: false,
            finish_closed: false,
            rng: seed(),
        };
        let publisher = Publisher {
            finish: finish_tx,
            outbox,
        };
        (PublisherWorker { worker }, publisher)
    }
}

/// The publisher's work, for a thread of its own: [`PublisherWorker::run`] returns once it has
/// finished.
pub struct PublisherWorker {
    worker: Worker,
}

impl PublisherWorker {
    /// Publishes until asked to finish (see [`Publisher::finish`]), on a tokio current-thread
    /// runtime of its own.
    pub fn run(self) -> DrainOutcome {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(rt) => rt.block_on(self.worker.run()),
            Err(e) => {
                log::error!("Cannot start the MQTT runtime: {e}. Alerts stay in the outbox.");
                self.worker.outcome(false)
            }
        }
    }
}

/// Tells the running publisher to finish.
pub struct Publisher {
    finish: watch::Sender<Option<Finish>>,
    outbox: Arc<Outbox>,
}

/// A request to finish: by `at` at the latest, at once when `interrupt` fires.
#[derive(Clone, Debug)]
struct Finish {
    at: Instant,
    interrupt: Interrupt,
}

/// How often a finishing publisher looks for an interrupt.
const INTERRUPT_CHECK: Duration = Duration::from_millis(100);

impl Publisher {
    /// Asks the publisher to send what is left in the outbox, within `timeout` or until
    /// `interrupt` fires, then to say "offline" and disconnect. Alerts not acknowledged by then
    /// stay in the outbox.
    pub fn finish(&self, timeout: Duration, interrupt: Interrupt) {
        let _ = self.finish.send(Some(Finish {
            at: Instant::now() + timeout,
            interrupt,
        }));
    }

    /// The outcome when the publisher's thread panicked: what the outbox still holds.
    pub fn outcome_after_panic(&self) -> DrainOutcome {
        let c = self.outbox.counters();
        DrainOutcome {
            delivered_all: false,
            waiting: c.depth,
            published: 0,
            rejected: 0,
            dropped: c.dropped,
            outbox: self.outbox.path().to_path_buf(),
            interrupted: false,
        }
    }
}

/// Writes each alert as a JSON line and appends the very same bytes to the outbox.
pub struct MqttSink {
    lines: JsonLines,
    outbox: Arc<Outbox>,
    doorbell: Arc<Notify>,
    /// The outbox cannot be written.
    failing: bool,
    /// The JSON lines output's first failed write.
    lines_failed: Option<io::Error>,
}

impl AlertSink for MqttSink {
    fn write(&mut self, alerts: &[Alert]) -> io::Result<()> {
        let docs = alerts
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()?;
        // The outbox first: an alert is on disk before the publisher can see it.
        match self.outbox.append(&docs) {
            Ok(()) => {
                if self.failing {
                    log::info!("The MQTT outbox can be written again.");
                    self.failing = false;
                }
                self.doorbell.notify_one();
            }
            Err(e) => {
                if !self.failing {
                    log::error!(
                        "Cannot write alerts to the MQTT outbox ({e}); they go to the JSON lines output only and are counted as alerts_outbox_dropped."
                    );
                    self.failing = true;
                }
            }
        }
        // The JSON lines output: once it fails, the alerts go on to MQTT alone, and `close`
        // returns the error, so the run still ends with it. With both outputs failing, it stops.
        if self.lines_failed.is_none()
            && let Err(e) = self.lines.write_serialized(&docs)
        {
            if !self.failing {
                log::error!("Cannot write the alerts' JSON lines ({e}); they go on to MQTT only.");
            }
            self.lines_failed = Some(e);
        }
        match &self.lines_failed {
            Some(e) if self.failing => Err(io::Error::new(e.kind(), e.to_string())),
            _ => Ok(()),
        }
    }

    fn close(&mut self) -> io::Result<()> {
        self.doorbell.notify_one();
        match self.lines_failed.take() {
            Some(e) => Err(e),
            None => self.lines.close(),
        }
    }
}

/// What a publish was, to know what its PUBACK acknowledges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Alert(u64),
    Status,
    Stats,
    Goodbye,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goodbye {
    NotSent,
    Sent,
    Acked,
    Disconnecting,
}

/// One connection attempt and what is in flight on it.
struct Session {
    version: Version,
    client: Client,
    events: Events,
    poller: tokio::task::JoinHandle<()>,
    connected: bool,
    /// Alerts sent on this connection, by sequence number, with whether they were acknowledged.
    inflight: VecDeque<(u64, bool)>,
    next_seq: u64,
    /// Publishes queued in the client that have no packet id yet, in order.
    unassigned: VecDeque<Tag>,
    by_pkid: HashMap<u16, Tag>,
    /// A publish the client holds back because its packet id is still in use (out-of-order acks).
    collision: Option<(u16, Tag)>,
    /// That publish, sent: it takes the packet id over once the id's PUBACK is processed.
    resolved: Option<(u16, Tag)>,
    goodbye: Goodbye,
    goodbye_deadline: Option<Instant>,
    disconnected: bool,
}

impl Session {
    fn start(settings: &Settings, version: Version) -> Session {
        let (client, events, poller) = link::start(settings, version, REQUEST_QUEUE);
        Session::new(version, client, events, poller)
    }

    /// A connection attempt that has not connected yet, with nothing in flight.
    fn new(
        version: Version,
        client: Client,
        events: Events,
        poller: tokio::task::JoinHandle<()>,
    ) -> Session {
        Session {
            version,
            client,
            events,
            poller,
            connected: false,
            inflight: VecDeque::with_capacity(WINDOW),
            next_seq: 0,
            unassigned: VecDeque::new(),
            by_pkid: HashMap::new(),
            collision: None,
            resolved: None,
            goodbye: Goodbye::NotSent,
            goodbye_deadline: None,
            disconnected: false,
        }
    }

    fn publish(&mut self, topic: &str, retain: bool, payload: Vec<u8>, tag: Tag) -> bool {
        let queued = self.client.try_publish(topic, retain, payload);
        if queued {
            self.unassigned.push_back(tag);
        }
        queued
    }

    /// Returns what a PUBACK acknowledges, and why the broker refused it if it did. A refused
    /// alert is settled all the same: sending it again would be refused again.
    fn on_event(&mut self, event: LinkEvent) -> Option<(Tag, Option<String>)> {
        match event {
            LinkEvent::Connected => self.connected = true,
            LinkEvent::Published(pkid) => match self.collision {
                Some((held, _)) if held == pkid => self.resolved = self.collision.take(),
                _ => {
                    if let Some(tag) = self.unassigned.pop_front() {
                        self.by_pkid.insert(pkid, tag);
                    }
                }
            },
            LinkEvent::AwaitAck(pkid) => {
                if let Some(tag) = self.unassigned.pop_front() {
                    self.collision = Some((pkid, tag));
                }
            }
            LinkEvent::PubAck { pkid, refused } => {
                let tag = self.by_pkid.remove(&pkid);
                if let Some((pkid, next)) = self.resolved.take_if(|(p, _)| *p == pkid) {
                    self.by_pkid.insert(pkid, next);
                }
                if let Some(Tag::Alert(seq)) = tag
                    && let Ok(i) = self.inflight.binary_search_by_key(&seq, |e| e.0)
                {
                    self.inflight[i].1 = true;
                }
                return tag.map(|t| (t, refused));
            }
            LinkEvent::Disconnected => self.disconnected = true,
            LinkEvent::Other => {}
        }
        None
    }
}

struct Worker {
    settings: Settings,
    outbox: Arc<Outbox>,
    doorbell: Arc<Notify>,
    identity: Identity,
    stats: Arc<Stats>,
    stats_interval: Duration,
    started: Instant,
    published: u64,
    /// Alerts the broker refused (MQTT 5 PUBACK reason codes), and the last reason logged.
    rejected: u64,
    last_rejection: Option<String>,
    connects: u64,
    finish_rx: watch::Receiver<Option<Finish>>,
    finish_at: Option<Instant>,
    /// Ends the finishing early (a second SIGTERM in `run`, any in `replay`).
    interrupt: Option<Interrupt>,
    /// The `Publisher` is gone: nothing more will be asked.
    finish_closed: bool,
    /// The interrupt fired.
    interrupted: bool,
    rng: u64,
}

/// What a connection's loop ended with.
enum End {
    Finished(DrainOutcome),
    Failed(Option<LinkError>),
}

impl Worker {
    async fn run(mut self) -> DrainOutcome {
        let mut attempt = 0u32;
        let mut last_problem: Option<Problem> = None;
        let mut stats_timer = tokio::time::interval_at(
            tokio::time::Instant::now() + self.stats_interval,
            self.stats_interval.max(Duration::from_millis(100)),
        );
        stats_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut version = self.settings.first_version();
        let mut negotiation = Negotiation::new(self.settings.protocol);
        loop {
            let mut session = Session::start(&self.settings, version);
            let end = self
                .connection(&mut session, &mut stats_timer, &mut last_problem)
                .await;
            session.poller.abort();
            let error = match end {
                End::Finished(outcome) => return outcome,
                End::Failed(error) => error,
            };
            if session.connected {
                attempt = 0;
                negotiation.settle();
            } else if let Some(e) = &error
                && let Some(next) = negotiation.after_failure(version, e, &self.settings.url)
            {
                let retry_now = next == Version::V311;
                version = next;
                if retry_now {
                    continue;
                }
            }
            if let Some(e) = &error {
                let problem = self.settings.describe(e, session.connected);
                if last_problem.as_ref() != Some(&problem) {
                    let (min, max) = (
                        self.settings.reconnect_min.as_secs_f64(),
                        self.settings.reconnect_max.as_secs_f64(),
                    );
                    let text = format!(
                        "{}. Retrying every {min}-{max} s; alerts wait in the outbox ({} now).",
                        problem.text,
                        self.outbox.counters().depth
                    );
                    match problem.kind {
                        ProblemKind::Unreachable | ProblemKind::Lost => log::warn!("{text}"),
                        ProblemKind::Refused | ProblemKind::Tls => log::error!("{text}"),
                    }
                    last_problem = Some(problem);
                }
            }
            let delay = self.backoff(attempt);
            attempt = attempt.saturating_add(1);
            let wake = Instant::now() + delay;
            loop {
                if let Some(outcome) = self.finish_while_disconnected() {
                    return outcome;
                }
                let until = self
                    .wake_by(Some(self.finish_at.map_or(wake, |f| f.min(wake))))
                    .unwrap_or(wake);
                if Instant::now() >= wake {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    r = self.finish_rx.changed(), if !self.finish_closed => self.on_finish_request(r.is_ok()),
                }
            }
        }
    }

    /// Runs one connection until it fails or publishing is finished.
    async fn connection(
        &mut self,
        s: &mut Session,
        stats_timer: &mut tokio::time::Interval,
        last_problem: &mut Option<Problem>,
    ) -> End {
        loop {
            if let Some(end) = self.step_finish(s) {
                return end;
            }
            // Once "offline" is sent only its own timeout counts (see step_finish).
            let deadline = self.wake_by(s.goodbye_deadline.or(self.finish_at));
            tokio::select! {
                event = s.events.recv() => {
                    let mut next = event;
                    // Take every event already there before touching the outbox once.
                    loop {
                        match next {
                            Some(Ok(event)) => {
                                let was_connected = s.connected;
                                if let Some((tag, refused)) = s.on_event(event) {
                                    match refused {
                                        Some(why) => self.on_refused(tag, why),
                                        None if matches!(tag, Tag::Alert(_)) => self.published += 1,
                                        None => {}
                                    }
                                    // A refused "offline" ends the goodbye too: the broker answered.
                                    if tag == Tag::Goodbye {
                                        s.goodbye = Goodbye::Acked;
                                    }
                                }
                                if s.connected && !was_connected {
                                    self.on_connected(s, last_problem);
                                }
                            }
                            // Acknowledgements that came before the failure still count.
                            Some(Err(e)) => {
                                self.settle(s);
                                return End::Failed(Some(e));
                            }
                            None => {
                                self.settle(s);
                                return End::Failed(None);
                            }
                        }
                        match s.events.try_recv() {
                            Ok(event) => next = Some(event),
                            Err(_) => break,
                        }
                    }
                }
                _ = self.doorbell.notified() => {}
                _ = stats_timer.tick() => {
                    if s.connected && s.goodbye == Goodbye::NotSent {
                        self.publish_stats(s);
                    }
                }
                r = self.finish_rx.changed(), if !self.finish_closed => self.on_finish_request(r.is_ok()),
                _ = sleep_until(deadline), if deadline.is_some() => {}
            }
            self.settle(s);
            self.fill(s);
        }
    }

    fn on_connected(&mut self, s: &mut Session, last_problem: &mut Option<Problem>) {
        self.connects += 1;
        *last_problem = None;
        log::info!(
            "Connected to MQTT broker {} as {} with {}; {} alerts waiting in the outbox.",
            self.settings.url,
            self.settings.client_id,
            s.version,
            self.outbox.counters().depth
        );
        let topic = self.settings.topics.status.clone();
        s.publish(
            &topic,
            true,
            status_payload(&self.identity, true),
            Tag::Status,
        );
    }

    /// A publish the broker refused in its PUBACK (MQTT 5). Logged when the reason changes, not
    /// per alert; the count is in stats.
    fn on_refused(&mut self, tag: Tag, why: String) {
        let topics = &self.settings.topics;
        let (what, topic) = match tag {
            Tag::Alert(_) => {
                self.rejected += 1;
                ("alerts", &topics.alert)
            }
            Tag::Status | Tag::Goodbye => ("the status", &topics.status),
            Tag::Stats => ("stats", &topics.stats),
        };
        if self.last_rejection.as_deref() != Some(why.as_str()) {
            log::error!(
                "MQTT broker {} refuses {what} on {topic}: {why}. Check the broker's ACL for this sensor; refused alerts are dropped and counted as alerts_rejected.",
                self.settings.url
            );
            self.last_rejection = Some(why);
        }
    }

    fn on_finish_request(&mut self, sender_alive: bool) {
        if sender_alive {
            let finish = self.finish_rx.borrow().clone();
            if let Some(f) = finish {
                self.finish_at = Some(f.at);
                self.interrupt = Some(f.interrupt);
            }
        } else {
            // The agent went away without asking: finish now.
            self.finish_closed = true;
            self.finish_at = Some(Instant::now());
        }
    }

    /// Moves finishing on: once the outbox is empty, final stats, "offline", disconnect.
    fn step_finish(&mut self, s: &mut Session) -> Option<End> {
        self.check_interrupt();
        let deadline = self.finish_at?;
        let now = Instant::now();
        if self.outbox.is_empty() {
            if !s.connected {
                return Some(End::Finished(self.outcome(true)));
            }
            match s.goodbye {
                Goodbye::NotSent => {
                    self.publish_stats(s);
                    let topic = self.settings.topics.status.clone();
                    if s.publish(
                        &topic,
                        true,
                        status_payload(&self.identity, false),
                        Tag::Goodbye,
                    ) {
                        s.goodbye = Goodbye::Sent;
                        s.goodbye_deadline = Some(now + GOODBYE_TIMEOUT);
                    } else {
                        // No room in the client's queue: every alert is acknowledged, and the
                        // broker publishes the "offline" last will once the connection drops.
                        // Waiting for room would spin (the finishing deadline has passed).
                        return Some(End::Finished(self.outcome(true)));
                    }
                }
                Goodbye::Sent if s.goodbye_deadline.is_some_and(|d| now >= d) => {
                    return Some(End::Finished(self.outcome(true)));
                }
                Goodbye::Sent => {}
                Goodbye::Acked => {
                    if !s.client.try_disconnect() {
                        return Some(End::Finished(self.outcome(true)));
                    }
                    s.goodbye = Goodbye::Disconnecting;
                }
                Goodbye::Disconnecting
                    if s.disconnected || s.goodbye_deadline.is_some_and(|d| now >= d) =>
                {
                    return Some(End::Finished(self.outcome(true)));
                }
                Goodbye::Disconnecting => {}
            }
            return None;
        }
        (now >= deadline).then(|| End::Finished(self.outcome(false)))
    }

    /// An interrupt moves the finishing deadline to now.
    fn check_interrupt(&mut self) {
        if self.interrupt.as_ref().is_some_and(Interrupt::happened) {
            self.interrupt = None;
            self.interrupted = true;
            let now = Instant::now();
            self.finish_at = Some(self.finish_at.map_or(now, |at| at.min(now)));
        }
    }

    /// When a wait must end at the latest: at `deadline`, and while an interrupt may come, soon
    /// enough to notice it.
    fn wake_by(&self, deadline: Option<Instant>) -> Option<Instant> {
        match &self.interrupt {
            Some(_) => {
                let check = Instant::now() + INTERRUPT_CHECK;
                Some(deadline.map_or(check, |d| d.min(check)))
            }
            None => deadline,
        }
    }

    fn finish_while_disconnected(&mut self) -> Option<DrainOutcome> {
        self.check_interrupt();
        let deadline = self.finish_at?;
        let empty = self.outbox.is_empty();
        (empty || Instant::now() >= deadline).then(|| self.outcome(empty))
    }

    fn outcome(&self, delivered_all: bool) -> DrainOutcome {
        let c = self.outbox.counters();
        DrainOutcome {
            delivered_all: delivered_all && c.depth == 0,
            waiting: c.depth,
            published: self.published,
            rejected: self.rejected,
            dropped: c.dropped,
            outbox: self.outbox.path().to_path_buf(),
            interrupted: self.interrupted,
        }
    }

    fn publish_stats(&mut self, s: &mut Session) {
        let c = self.outbox.counters();
        let mqtt = PublishCounters {
            alerts_published: self.published,
            alerts_outbox_dropped: c.dropped,
            alerts_rejected: self.rejected,
            outbox_depth: c.depth,
            outbox_bytes: c.bytes,
            mqtt_connects: self.connects,
        };
        let payload = stats_payload(
            &self.identity.sensor_id,
            self.started.elapsed().as_secs(),
            &self.stats.snapshot(),
            mqtt,
        );
        let topic = self.settings.topics.stats.clone();
        s.publish(&topic, false, payload, Tag::Stats);
    }

    /// Drops what the broker acknowledged (and what the outbox dropped) from the front of the
    /// window, and removes the acknowledged alerts from the outbox.
    fn settle(&mut self, s: &mut Session) {
        let head = self.outbox.head_seq();
        let mut acked_through = None;
        while let Some(&(seq, acked)) = s.inflight.front() {
            if !(acked || seq < head) {
                break;
            }
            s.inflight.pop_front();
            if acked {
                acked_through = Some(seq);
            }
        }
        if let Some(seq) = acked_through
            && let Err(e) = self.outbox.remove_through(seq)
        {
            log::error!(
                "Cannot remove acknowledged alerts from the MQTT outbox: {e}. They may be sent again."
            );
        }
    }

    /// Hands the next alerts of the outbox to the client, up to the window.
    fn fill(&mut self, s: &mut Session) {
        if !s.connected || s.goodbye != Goodbye::NotSent || s.inflight.len() > REFILL_AT {
            return;
        }
        let docs = match self.outbox.read_from(s.next_seq, WINDOW - s.inflight.len()) {
            Ok(docs) => docs,
            Err(e) => {
                log::error!("Cannot read the MQTT outbox: {e}.");
                return;
            }
        };
        let topic = self.settings.topics.alert.clone();
        for (seq, doc) in docs {
            if !s.publish(&topic, false, doc, Tag::Alert(seq)) {
                break;
            }
            s.inflight.push_back((seq, false));
            s.next_seq = seq + 1;
        }
    }

    /// The wait before connection attempt `attempt + 1`: doubling from the minimum up to the
    /// maximum, then a random 50-100 % of that, so sensors do not reconnect in step.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let min = self.settings.reconnect_min.as_secs_f64();
        let max = self.settings.reconnect_max.as_secs_f64();
        let base = (min * 2f64.powi(attempt.min(30) as i32)).min(max);
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64(base * (0.5 + 0.5 * jitter))
    }
}

/// With `protocol = "auto"`: which version the next attempt speaks. MQTT 5 first; 3.1.1 right
/// after an MQTT 5 attempt the broker refused, or one that got no CONNACK at all (then it is
/// only tentative: if 3.1.1 gets no answer either, the next attempt is MQTT 5 again). The
/// version that first connects stays until the agent restarts.
struct Negotiation {
    auto: bool,
    settled: bool,
    tentative: bool,
    said: bool,
}

impl Negotiation {
    fn new(protocol: MqttProtocol) -> Negotiation {
        Negotiation {
            auto: protocol == MqttProtocol::Auto,
            settled: false,
            tentative: false,
            said: false,
        }
    }

    fn settle(&mut self) {
        self.settled = true;
    }

    /// The version for the next attempt after `version` failed before its CONNACK with `e`,
    /// or None to keep it.
    fn after_failure(
        &mut self,
        version: Version,
        e: &LinkError,
        url: &crate::config::BrokerUrl,
    ) -> Option<Version> {
        if !self.auto || self.settled {
            return None;
        }
        match version {
            Version::V5 => {
                let failure = link::v5_failure(e);
                self.tentative = match failure {
                    V5Failure::Refused => false,
                    V5Failure::Silent => true,
                    V5Failure::Other => return None,
                };
                if !self.said {
                    self.said = true;
                    let why = match failure {
                        V5Failure::Refused => "does not speak MQTT 5",
                        _ => "did not answer an MQTT 5 connection",
                    };
                    log::info!("MQTT broker {url} {why} ({e}); trying MQTT 3.1.1.");
                }
                Some(Version::V311)
            }
            Version::V311 => self.tentative.then_some(Version::V5),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        // A client whose event loop is never polled: only the bookkeeping is exercised.
        let (client, _eventloop) =
            rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 8);
        let (_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let poller = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .spawn(async {});
        let mut s = Session::new(Version::V311, Client::V311(client), events, poller);
        s.connected = true;
        s
    }

    fn ack(pkid: u16) -> LinkEvent {
        LinkEvent::PubAck {
            pkid,
            refused: None,
        }
    }

    #[test]
    fn acks_are_matched_by_packet_id_even_out_of_order() {
        let mut s = session();
        for seq in 0..3 {
            s.unassigned.push_back(Tag::Alert(seq));
            s.inflight.push_back((seq, false));
        }
        s.unassigned.push_back(Tag::Status);
        for pkid in 1..=4 {
            assert_eq!(s.on_event(LinkEvent::Published(pkid)), None);
        }
        assert_eq!(s.on_event(ack(2)), Some((Tag::Alert(1), None)));
        assert_eq!(s.on_event(ack(4)), Some((Tag::Status, None)));
        let refused = LinkEvent::PubAck {
            pkid: 1,
            refused: Some("NotAuthorized".to_string()),
        };
        assert_eq!(
            s.on_event(refused),
            Some((Tag::Alert(0), Some("NotAuthorized".to_string())))
        );
        assert_eq!(
            s.inflight,
            VecDeque::from(vec![(0, true), (1, true), (2, false)])
        );
        // An ack nobody is waiting for changes nothing.
        assert_eq!(s.on_event(ack(9)), None);
    }

    #[test]
    fn a_held_back_publish_takes_its_packet_id_after_the_old_ack() {
        let mut s = session();
        s.unassigned.extend([Tag::Alert(0), Tag::Alert(1)]);
        s.on_event(LinkEvent::Published(1));
        // Alert 1 would reuse packet id 1, still in flight: the client holds it back.
        s.on_event(LinkEvent::AwaitAck(1));
        // On PUBACK 1 the client sends alert 1 with id 1 and then reports the ack.
        s.on_event(LinkEvent::Published(1));
        assert_eq!(s.on_event(ack(1)), Some((Tag::Alert(0), None)));
        assert_eq!(s.on_event(ack(1)), Some((Tag::Alert(1), None)));
    }
}
