//! The one place that wires the agent: its threads, its queues and the order they start and stop
//! in, for every command. `run` takes a [`Plan`] (what to read, what to write, whether to publish
//! on MQTT) and returns the final counters.
//!
//! The threads: capture (one per interface and capture thread, live only) -> the dispatcher (the
//! calling thread) -> flow shards (`ew-flow-N`) -> scoring (`ew-score`) -> the sink (`ew-sink`),
//! and the MQTT publisher (`ew-mqtt`) reading the sink's outbox. Every queue between them is in
//! the table of [`Queues`]. The stages themselves are plain structs (`Dispatcher`, `FlowTable`,
//! `ScoringStage`, sinks) that know nothing about threads; this module only connects them and
//! reports their counters.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use portable_atomic::AtomicU64;

use crate::alert::{Alert, ModelRef};
use crate::capture::file::{CaptureReader, Repairs, Truncation};
use crate::capture::live::{CaptureCounters, Clock, LinkReceiver, READ_TIMEOUT, capture_loop};
use crate::config::{CaptureBackend, Config};
use crate::dispatch::{Batch, Dispatcher, WhenFull};
use crate::flow::{FlowEvent, FlowTable, Order};
use crate::host::HostTable;
use crate::incident::AlertEngine;
use crate::model::Scorer;
use crate::mqtt::status::Identity;
use crate::mqtt::{DrainOutcome, Mqtt, MqttError};
use crate::packet::PacketMeta;
use crate::parse::parse_frame;
use crate::scoring::{Merger, Mode, Reload, ScoringStage};
use crate::signals::{Interrupt, Signals};
use crate::sink::{AlertSink, JsonLines};
use crate::stats::{Snapshot, Stats};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot start a thread: {0}")]
    Spawn(std::io::Error),
    #[error("writing output failed: {0}")]
    Output(std::io::Error),
    #[error("a pipeline thread panicked")]
    Panicked,
    #[error(transparent)]
    Mqtt(#[from] MqttError),
}

/// What the agent reads.
pub enum Input {
    /// A capture file, read as fast as the pipeline takes it: no queue drops a packet.
    Replay(CaptureReader),
    /// Live interfaces, until SIGTERM or SIGINT: a stage that falls behind holds the capture
    /// back, and the tpacket ring holds the packets.
    Live {
        /// One receiver per interface and capture thread, with its name for the logs.
        receivers: Vec<(String, Box<dyn LinkReceiver>)>,
        clock: Arc<dyn Clock>,
        /// Reads the config and the model again on SIGHUP, and says why when they are not
        /// usable.
        reload: Option<Box<dyn FnMut() -> Result<Reload, String>>>,
    },
}

/// What the pipeline produces. Made once per run, so its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// Alerts as JSON lines (and on MQTT, when the plan names a broker).
    Alerts {
        scorer: Scorer,
        lines: JsonLines,
        sensor_id: String,
    },
    /// The flows' feature vectors as CSV.
    Features { csv: Box<dyn std::io::Write + Send> },
}

/// The broker alerts, status and stats are also published to.
pub struct MqttPlan {
    /// `mqtt.url` or `--mqtt`.
    pub url: String,
    /// Where the outbox lives.
    pub state_dir: PathBuf,
    /// Named in the status message (empty for a replay).
    pub interfaces: Vec<String>,
}

/// Everything one command asks of the agent.
pub struct Plan {
    pub input: Input,
    pub output: Output,
    /// Flow shards, 1 to 64.
    pub workers: usize,
    pub mqtt: Option<MqttPlan>,
    /// With MQTT, how long the end waits for the broker to acknowledge what is left.
    pub drain: Duration,
    pub signals: Signals,
    /// Called once the pipeline has drained, before the wait for the broker (the command's
    /// summary line).
    pub drained: Box<dyn FnOnce(&Summary)>,
}

/// How a run went.
pub struct Summary {
    pub stats: Snapshot,
    pub elapsed: Duration,
    /// Replay: where the capture file stops early, if it does.
    pub truncation: Option<Truncation>,
    /// Replay: what the capture reader repaired or skipped (each also logged as a warning).
    pub repairs: Repairs,
    /// With MQTT: how the final wait for the broker went.
    pub delivery: Option<DrainOutcome>,
}

impl Summary {
    /// The link type that made the whole capture unusable: every frame was on an interface whose
    /// link type edgewatch does not read (a pcap file with such a link type is refused at open).
    pub fn unusable_linktype(&self) -> Option<u32> {
        (self.stats.frames == 0 && self.repairs.unsupported_frames > 0)
            .then_some(self.repairs.unsupported_linktype)
            .flatten()
    }
}

/// Runs the plan to its end: the end of the file, or a signal for live capture. Then flushes
/// every flow, writes the last alerts and, with MQTT, waits for the broker (at most
/// `plan.drain`; in `run` a second SIGTERM or SIGINT, in `replay` any, ends that wait).
// Returned once per process: the size of the error does not matter.
#[allow(clippy::result_large_err)]
pub fn run(cfg: &Config, plan: Plan) -> Result<Summary, Failure> {
    let Plan {
        input,
        output,
        workers,
        mqtt,
        drain,
        signals,
        drained,
    } = plan;
    let live = matches!(input, Input::Live { .. });
    let queues = Queues::new(cfg, live);
    log::debug!("Queues: {queues}.");
    let stats = Arc::new(Stats::default());
    let (output, mqtt) = open_outputs(cfg, output, mqtt, live)?;
    let pipeline = Pipeline::spawn(cfg, workers, output, &queues, live, stats.clone())?;
    let publisher = match mqtt {
        Some(mqtt) => {
            let interval = Duration::from_secs_f64(cfg.output.stats_interval_s);
            let (worker, handle) = mqtt.publisher(stats, interval);
            match spawn("ew-mqtt", move || worker.run()) {
                Ok(thread) => Some((handle, thread)),
                Err(e) => {
                    let _ = pipeline.finish();
                    return Err(e.into());
                }
            }
        }
        None => None,
    };
    // `run`: the first SIGTERM or SIGINT ends the capture, a later one the wait for the broker.
    // `replay`: any ends the wait (the one that stopped the reading too).
    let mut drain_interrupt = None;
    let result = match input {
        Input::Replay(reader) => replay(reader, pipeline, &signals),
        Input::Live {
            receivers,
            clock,
            reload,
        } => {
            let stats_interval = Duration::from_secs_f64(cfg.output.stats_interval_s);
            let live = Live {
                receivers,
                clock,
                reload,
                capture_queue: queues.capture,
                batch_size: cfg.capture.batch_size,
                stats_interval,
            };
            run_live(live, pipeline, &signals, &mut drain_interrupt)
        }
    };
    if let Ok(summary) = &result {
        drained(summary);
    }
    // The broker still gets what the pipeline made when an output or a thread failed.
    let delivery = publisher.map(|(handle, thread)| {
        let interrupt = drain_interrupt.unwrap_or_else(|| signals.any_interrupt());
        handle.finish(drain, interrupt);
        thread
            .join()
            .unwrap_or_else(|_| handle.outcome_after_panic())
    });
    match result {
        Ok(summary) => Ok(Summary {
            delivery,
            ..summary
        }),
        Err(error) => Err(Failure { error, delivery }),
    }
}

/// A run that failed: why, and with MQTT how the final wait for the broker went (the alerts made
/// before the failure still go out).
#[derive(Debug)]
pub struct Failure {
    pub error: AgentError,
    pub delivery: Option<DrainOutcome>,
}

impl From<AgentError> for Failure {
    fn from(error: AgentError) -> Failure {
        Failure {
            error,
            delivery: None,
        }
    }
}

/// The sink (JSON lines, and the MQTT outbox with a broker) and the stage mode for an output.
fn open_outputs(
    cfg: &Config,
    output: Output,
    mqtt: Option<MqttPlan>,
    live: bool,
) -> Result<(PipelineOutput, Option<Mqtt>), AgentError> {
    let (scorer, lines, sensor_id) = match output {
        Output::Alerts {
            scorer,
            lines,
            sensor_id,
        } => (scorer, lines, sensor_id),
        Output::Features { csv } => return Ok((PipelineOutput::Features { csv }, None)),
    };
    let mqtt = match mqtt {
        Some(plan) => {
            let model = ModelRef {
                name: scorer.info().name.clone(),
                version: scorer.info().version.clone(),
            };
            let mode = if live { "run" } else { "replay" };
            let identity = Identity::new(&sensor_id, model, plan.interfaces, mode);
            Some(Mqtt::open(&cfg.mqtt, &plan.url, &plan.state_dir, identity)?)
        }
        None => None,
    };
    let sink: Box<dyn AlertSink> = match &mqtt {
        Some(mqtt) => Box::new(mqtt.sink(lines)),
        None => Box::new(lines),
    };
    let output = PipelineOutput::Alerts {
        scorer,
        sink,
        sensor_id,
    };
    Ok((output, mqtt))
}

/// What the pipeline's threads produce, with the sink opened.
enum PipelineOutput {
    Alerts {
        scorer: Scorer,
        sink: Box<dyn AlertSink>,
        sensor_id: String,
    },
    Features {
        csv: Box<dyn std::io::Write + Send>,
    },
}

/// One bounded queue between two stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    pub name: &'static str,
    /// In messages (batches of packets, reports, alert batches).
    pub capacity: usize,
    pub when_full: WhenFull,
}

impl Queue {
    fn channel<T>(&self) -> (Sender<T>, Receiver<T>) {
        bounded(self.capacity)
    }
}

/// Every in-memory queue of the pipeline; the MQTT outbox (a file) is the sink's, see
/// docs/architecture.md. Each queue that drops has a counter of its own in the stats:
/// `capture_queue_drops` and `shard_queue_drops` (packets), and `queue_drops`, their sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queues {
    /// Capture threads -> dispatcher (live only), batches of up to `capture.batch_size`
    /// packets. A tpacket capture thread waits, and its ring (`capture.ring_blocks` ×
    /// `capture.ring_block_kib`, far larger than the queues) holds the packets meanwhile: when
    /// the ring is full the kernel drops and counts (`kernel_drops`). pnet's socket buffer is
    /// small and its drops are not counted, so a pnet capture thread drops its batch instead.
    pub capture: Queue,
    /// Dispatcher -> each flow shard, batches of packets: the dispatcher waits, so a stage that
    /// falls behind for a burst (a mass expiry of flows under a flood) holds the capture back
    /// rather than losing packets. A file never loses a packet. Live, a batch that finds its
    /// queue full while the capture's ring is half full (pnet: half the capture queue waits)
    /// starts shedding bare SYNs but one in eight until it is a quarter full or less
    /// (`shed_syns`, `shed_episodes`; see
    /// `WhenFull::ShedThenBlock`), so that a flood of new flows slows the flows' packets as
    /// little as it can.
    pub shard: Queue,
    /// Flow shards -> scoring, reports of flow events: a shard waits.
    pub report: Queue,
    /// Scoring -> sink, batches of alerts: scoring waits.
    pub alert: Queue,
    /// SIGHUP -> scoring, a reloaded model: a reload that finds one waiting is skipped (logged).
    pub reload: Queue,
}

impl Queues {
    pub fn new(cfg: &Config, live: bool) -> Queues {
        let (shard_capacity, shard_when_full) = match live {
            true => (cfg.capture.queue_capacity, WhenFull::ShedThenBlock),
            false => (
                cfg.capture.queue_capacity.div_ceil(REPLAY_QUEUE_DIVISOR),
                WhenFull::Block,
            ),
        };
        let capture_when_full = match cfg.capture.backend.resolve() {
            CaptureBackend::Tpacket => WhenFull::Block,
            _ => WhenFull::DropNewest,
        };
        let queue = |name, capacity, when_full| Queue {
            name,
            capacity,
            when_full,
        };
        Queues {
            capture: queue("capture", CAPTURE_QUEUE, capture_when_full),
            shard: queue("shard", shard_capacity, shard_when_full),
            report: queue("report", REPORT_QUEUE, WhenFull::Block),
            alert: queue("alert", ALERT_QUEUE, WhenFull::Block),
            reload: queue("reload", 1, WhenFull::DropNewest),
        }
    }

    pub fn all(&self) -> [Queue; 5] {
        [
            self.capture,
            self.shard,
            self.report,
            self.alert,
            self.reload,
        ]
    }
}

impl std::fmt::Display for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, q) in self.all().iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{} {} ({:?})", q.name, q.capacity, q.when_full)?;
        }
        Ok(())
    }
}

/// The shard workers' messages to the scorer: events in order, then the watermark reached.
struct ShardReport {
    shard: usize,
    events: Vec<FlowEvent>,
    watermark: Order,
}

/// A running pipeline, fed through its dispatcher.
struct Pipeline {
    dispatcher: Dispatcher,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<Result<(), AgentError>>>,
    /// Hands a reloaded model and settings to the scoring stage.
    reload_tx: Sender<Reload>,
    /// Packets the capture threads dropped at their queue (live only).
    capture_queue_drops: u64,
}

/// Batches of packets from the capture threads to the dispatcher, at most.
const CAPTURE_QUEUE: usize = 64;
/// Scorer reports and alert batches, at most.
const REPORT_QUEUE: usize = 16;
const ALERT_QUEUE: usize = 64;
/// Live capture scores flows once they have waited this long (or once a batch is full), so that
/// the model mostly runs on full batches, as in replay, and an alert still leaves within a
/// fraction of a second. Reports reach the scorer at least every READ_TIMEOUT on a quiet link
/// (the dispatcher's ticks), so a flow waits at most about this plus READ_TIMEOUT.
const LIVE_SCORE_DELAY: Duration = Duration::from_millis(50);
/// Evaluations per report when a shard flushes its table.
const FLUSH_CHUNK: usize = 256;
/// A report holds this many events at most: a shard sends them once it has this many (after
/// each packet, and after the timers at the end of a batch), in pieces of this many when a
/// packet's timers fired thousands. Under a flood every packet starts a flow: the reports, and
/// the memory the report queue holds, would otherwise grow with the batches of packets.
const REPORT_EVENTS: usize = 256;
/// Room for the events gathered before a report goes: a packet (and the timers it fires) may
/// add a few past REPORT_EVENTS.
const REPORT_ROOM: usize = REPORT_EVENTS + REPORT_EVENTS / 8;
/// Replay hands packets on in batches this many times `capture.batch_size`, for a fraction of the
/// hand-overs between threads; live capture keeps the configured batches, for alert latency.
const REPLAY_BATCH_SCALE: usize = 4;
/// Replay's shard queues hold `capture.queue_capacity` divided by this many of its larger
/// batches: twice the packets of live capture's queues, so that the stages wait on each other
/// less.
const REPLAY_QUEUE_DIVISOR: usize = 2;

impl Pipeline {
    /// Starts the flow shards, the scoring stage and the sink. `live` hands packets on in the
    /// configured batches and scores flows within LIVE_SCORE_DELAY, for alert latency; a file
    /// lets the stages fill larger batches.
    fn spawn(
        cfg: &Config,
        workers: usize,
        output: PipelineOutput,
        queues: &Queues,
        live: bool,
        stats: Arc<Stats>,
    ) -> Result<Pipeline, AgentError> {
        let workers = workers.max(1);
        let mut threads = Vec::new();
        let scale = if live { 1 } else { REPLAY_BATCH_SCALE };
        let (alert_tx, alert_rx) = queues.alert.channel::<Vec<Alert>>();
        let (report_tx, report_rx) = queues.report.channel::<ShardReport>();

        let (mode, sink) = stage_mode(cfg, output);

        let mut shard_txs = Vec::with_capacity(workers);
        // The shards' final flushes keep in step (see FlushPace).
        let pace = Arc::new(FlushPace::new(workers));
        for shard in 0..workers {
            let (tx, rx) = queues.shard.channel::<Batch>();
            shard_txs.push(tx);
            let table = FlowTable::new(&cfg.flow, cfg.flow.max_flows.div_ceil(workers))
                .evaluating_logins_at(cfg.alert.bruteforce_min_logins);
            let report_tx = report_tx.clone();
            let stats = stats.clone();
            let pace = pace.clone();
            threads.push(spawn(&format!("ew-flow-{shard}"), move || {
                shard_worker(shard, table, rx, report_tx, stats, &pace);
                Ok(())
            })?);
        }
        drop(report_tx);

        let hosts = HostTable::new(&cfg.host);
        let mut stage = ScoringStage::new(hosts, mode);
        stage.write_header().map_err(AgentError::Output)?;
        let scorer_stats = stats.clone();
        let (reload_tx, reload_rx) = queues.reload.channel::<Reload>();
        threads.push(spawn("ew-score", move || {
            scoring_worker(
                stage,
                workers,
                report_rx,
                reload_rx,
                alert_tx,
                scorer_stats,
                live,
            )
        })?);

        if let Some(mut sink) = sink {
            let stats = stats.clone();
            threads.push(spawn("ew-sink", move || {
                // A failed write ends the thread: the scorer's sends fail from then on, and
                // `Pipeline::broken` stops the reader (replay) or the capture (run).
                for alerts in alert_rx {
                    sink.write(&alerts).map_err(AgentError::Output)?;
                    Stats::add(&stats.alerts_written, alerts.len() as u64);
                }
                sink.close().map_err(AgentError::Output)
            })?);
        }

        let dispatcher = Dispatcher::new(
            shard_txs,
            cfg.capture.batch_size * scale,
            cfg.flow.max_fragments,
            queues.shard.when_full,
        );
        Ok(Pipeline {
            dispatcher,
            stats,
            threads,
            reload_tx,
            capture_queue_drops: 0,
        })
    }

    /// Hands a reloaded model and alert settings to the scoring stage, which takes them between
    /// two reports (within a tick). False if a reload is still waiting to be taken.
    fn reload(&self, reload: Reload) -> bool {
        self.reload_tx.try_send(reload).is_ok()
    }

    /// True when a pipeline thread has stopped before its input ended: it failed (the features
    /// file or the alert output could not be written, a thread panicked), and
    /// [`Pipeline::finish`] says why.
    fn broken(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Publishes the dispatcher's counters.
    fn publish_dispatch(&self) {
        let c = &self.dispatcher.counters;
        Stats::set(&self.stats.packets, c.packets);
        Stats::set(&self.stats.time_backwards, c.time_backwards);
        Stats::set(&self.stats.fragments_unattributed, c.fragments_unattributed);
        Stats::set(&self.stats.capture_queue_drops, self.capture_queue_drops);
        Stats::set(&self.stats.shard_queue_drops, c.queue_drops);
        Stats::set(&self.stats.shed_syns, c.shed_syns);
        Stats::set(&self.stats.shed_episodes, c.shed_episodes);
        Stats::set(
            &self.stats.queue_drops,
            c.queue_drops.saturating_add(self.capture_queue_drops),
        );
    }

    /// Drains everything: flushes the flows, scores them, closes the alert windows and waits for
    /// the sink. Returns the final counters.
    fn finish(mut self) -> Result<Snapshot, AgentError> {
        self.dispatcher.flush();
        self.publish_dispatch();
        let Pipeline {
            dispatcher,
            stats,
            threads,
            reload_tx: _,
            capture_queue_drops: _,
        } = self;
        drop(dispatcher); // closes the shard queues: the workers flush and stop
        let mut result = Ok(());
        for t in threads {
            let r = t.join().map_err(|_| AgentError::Panicked).and_then(|r| r);
            if result.is_ok() {
                result = r;
            }
        }
        result.map(|()| stats.snapshot())
    }
}

/// The scoring stage's work for an output, and the sink its alerts go to.
fn stage_mode(cfg: &Config, output: PipelineOutput) -> (Mode, Option<Box<dyn AlertSink>>) {
    match output {
        PipelineOutput::Alerts {
            scorer,
            sink,
            sensor_id,
        } => {
            let threshold = cfg.model.threshold.unwrap_or(scorer.info().threshold);
            log::info!(
                "Model {} {} loaded from {} (threshold {threshold}).",
                scorer.info().name,
                scorer.info().version,
                scorer.info().origin
            );
            let engine = AlertEngine::new(&cfg.alert, sensor_id, scorer.info(), threshold);
            let mode = Mode::Alerts {
                scorer,
                engine: Box::new(engine),
                batch_size: cfg.model.batch_size,
            };
            (mode, Some(sink))
        }
        PipelineOutput::Features { csv } => (Mode::Features { csv }, None),
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, AgentError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(AgentError::Spawn)
}

fn shard_worker(
    shard: usize,
    mut table: FlowTable,
    rx: Receiver<Batch>,
    tx: Sender<ShardReport>,
    stats: Arc<Stats>,
    pace: &FlushPace,
) {
    // Marks this shard's flush as done however the thread ends, so no other shard waits for it.
    struct Done<'a>(&'a FlushPace, usize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.done(self.1);
        }
    }
    let _done = Done(pace, shard);
    let mut published = Published {
        counters: table.counters,
        active: 0,
        emergency: false,
    };
    // Hands events on to the scorer; false once the scorer is gone.
    let report = |events: Vec<FlowEvent>, watermark: Order| {
        tx.send(ShardReport {
            shard,
            events,
            watermark,
        })
        .is_ok()
    };
    // A shard's events come in order, so the last one is a watermark.
    let last_order = |events: &[FlowEvent]| events.last().map_or(Order::ZERO, FlowEvent::order);
    // Sends the events in reports of REPORT_EVENTS, each with its last event's order as the
    // watermark, and keeps the rest (fewer) for later. The flows of a flood can expire together,
    // thousands of evaluations from one packet's timers: the scorer starts on them at once, and
    // no report holds more than REPORT_EVENTS. False once the scorer is gone.
    let send_full = |events: &mut Vec<FlowEvent>| {
        if events.len() < REPORT_EVENTS {
            return true;
        }
        let mut all = std::mem::take(events).into_iter();
        while all.len() >= REPORT_EVENTS {
            let piece: Vec<FlowEvent> = all.by_ref().take(REPORT_EVENTS).collect();
            let watermark = last_order(&piece);
            if !report(piece, watermark) {
                return false;
            }
        }
        events.reserve(REPORT_ROOM);
        events.extend(all);
        true
    };
    let mut events = Vec::new();
    for batch in rx {
        for p in &batch.packets {
            table.process(p, &mut events);
            if !send_full(&mut events) {
                return;
            }
        }
        table.advance(batch.reached.ts, &mut events);
        if !send_full(&mut events) {
            return;
        }
        publish_flow_counters(&stats, &table, &mut published);
        // The next batch's events likely number about the same: room for them up front.
        let room = events.len().min(REPORT_ROOM);
        if !report(
            std::mem::replace(&mut events, Vec::with_capacity(room)),
            batch.reached,
        ) {
            return;
        }
    }
    // Flush orders are the same in every shard (time reached, then flow start), so each chunk's
    // last event is a watermark: the scorer can merge the shards' flushes as they come.
    let mut open = true;
    let mut chunks = 0;
    table.flush_in_chunks(FLUSH_CHUNK, |chunk| {
        chunks += 1;
        pace.step(shard, chunks);
        let watermark = last_order(chunk);
        open = open && report(std::mem::take(chunk), watermark);
    });
    publish_flow_counters(&stats, &table, &mut published);
    if open {
        report(events, Order::END);
    }
}

/// Keeps the shards' final flushes in step.
///
/// The scorer releases a shard's flushed flows only as far as every shard's flush has got. A
/// shard flushing ahead of the others (or before they have finished their input) would pile its
/// whole table up in the merger: under a flood, megabytes at the very end of the run. So a shard
/// sends its chunk n only once every other shard has sent chunk n - FLUSH_LEAD or is done.
struct FlushPace {
    /// Chunks each shard has sent (usize::MAX once it is done).
    sent: std::sync::Mutex<Vec<usize>>,
    moved: std::sync::Condvar,
}

/// Chunks a shard's flush may run ahead of the slowest shard's.
const FLUSH_LEAD: usize = 2;

impl FlushPace {
    fn new(shards: usize) -> FlushPace {
        FlushPace {
            sent: std::sync::Mutex::new(vec![0; shards]),
            moved: std::sync::Condvar::new(),
        }
    }

    /// `shard` is about to send its chunk `n` (from 1): waits until it may.
    fn step(&self, shard: usize, n: usize) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent[shard] = n - 1;
        self.moved.notify_all();
        while !may_send(&sent, n) {
            sent = self.moved.wait(sent).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn done(&self, shard: usize) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent[shard] = usize::MAX;
        self.moved.notify_all();
    }
}

/// Whether a shard may send its chunk `n` when the shards have sent `sent` chunks each.
fn may_send(sent: &[usize], n: usize) -> bool {
    sent.iter()
        .min()
        .is_none_or(|&low| low.saturating_add(FLUSH_LEAD) >= n)
}

/// What a shard published last: its counters, table size and emergency state.
struct Published {
    counters: crate::flow::FlowCounters,
    active: u64,
    emergency: bool,
}

/// Adds what a shard counted since its last report to the shared counters.
fn publish_flow_counters(stats: &Stats, table: &FlowTable, published: &mut Published) {
    let (c, before) = (table.counters, &published.counters);
    Stats::add(&stats.flows_created, c.flows_created - before.flows_created);
    Stats::add(&stats.flows_evicted, c.flows_evicted - before.flows_evicted);
    Stats::add(&stats.flow_emergencies, c.emergencies - before.emergencies);
    Stats::add(&stats.flow_evaluations, c.evaluations - before.evaluations);
    Stats::add(
        &stats.icmp_errors_attributed,
        c.icmp_errors_attributed - before.icmp_errors_attributed,
    );
    Stats::add(
        &stats.icmp_errors_unattributed,
        c.icmp_errors_unattributed - before.icmp_errors_unattributed,
    );
    Stats::add(
        &stats.packets_after_end,
        c.packets_after_end - before.packets_after_end,
    );
    // Gauges go up and down: a wrapping add of the difference is a signed add.
    let active = table.len() as u64;
    Stats::add(&stats.flows_active, active.wrapping_sub(published.active));
    let emergency = table.in_emergency();
    Stats::add(
        &stats.flow_workers_in_emergency,
        u64::from(emergency).wrapping_sub(u64::from(published.emergency)),
    );
    *published = Published {
        counters: c,
        active,
        emergency,
    };
}

fn scoring_worker(
    mut stage: ScoringStage,
    shards: usize,
    rx: Receiver<ShardReport>,
    reload_rx: Receiver<Reload>,
    alert_tx: Sender<Vec<Alert>>,
    stats: Arc<Stats>,
    live: bool,
) -> Result<(), AgentError> {
    let mut merger = Merger::new(shards);
    // Since when flows have been waiting to be scored (live capture only).
    let mut pending_since: Option<Instant> = None;
    let mut released = Vec::new();
    let mut alerts = Vec::new();
    let send = |alerts: &mut Vec<Alert>| {
        if !alerts.is_empty() {
            let _ = alert_tx.send(std::mem::take(alerts));
        }
    };
    for report in rx {
        merger.push(report.shard, report.events, report.watermark, &mut released);
        stage
            .handle(&mut released, &mut alerts)
            .map_err(AgentError::Output)?;
        let low = merger.low_watermark();
        if low != Order::END {
            // A file lets the batches fill; live capture scores what has waited long enough.
            let due = live && pending_since.is_some_and(|t| t.elapsed() >= LIVE_SCORE_DELAY);
            stage
                .settle(low.ts, due, &mut alerts)
                .map_err(AgentError::Output)?;
        }
        pending_since = match stage.has_pending() {
            true => pending_since.or_else(|| Some(Instant::now())),
            false => None,
        };
        if let Ok(reload) = reload_rx.try_recv() {
            let (name, version) = (
                reload.scorer.info().name.clone(),
                reload.scorer.info().version.clone(),
            );
            stage
                .reload(reload, &mut alerts)
                .map_err(AgentError::Output)?;
            log::info!("Reloaded: now scoring with model {name} {version}.");
        }
        send(&mut alerts);
        publish_scoring(&stats, &stage);
    }
    stage.finish(&mut alerts).map_err(AgentError::Output)?;
    send(&mut alerts);
    publish_scoring(&stats, &stage);
    Ok(())
}

fn publish_scoring(stats: &Stats, stage: &ScoringStage) {
    let c = stage.counters;
    Stats::set(&stats.flows_scored, c.flows_scored.max(c.rows_written));
    Stats::set(&stats.late_scores, c.late_scores);
    Stats::set(&stats.inference_batches, c.inference_batches);
    Stats::set(&stats.inference_us, c.inference_us);
    let h = stage.hosts().counters;
    Stats::set(&stats.hosts_tracked, stage.hosts().len() as u64);
    Stats::set(&stats.hosts_untracked, h.hosts_untracked);
    if let Some(engine) = stage.engine() {
        let a = engine.counters;
        Stats::set(&stats.flows_above_threshold, a.flows_above_threshold);
        Stats::set(&stats.alerts_emitted, a.alerts_emitted);
        Stats::set(&stats.alert_updates, a.alert_updates);
        Stats::set(&stats.incidents_evicted, a.incidents_evicted);
        Stats::set(&stats.alerts_suppressed, a.alerts_suppressed);
        Stats::set(&stats.flows_aggregated, a.flows_aggregated);
        Stats::set(&stats.flows_unscored, a.flows_unscored);
    }
}

/// Reads a capture file through a pipeline until its end, then drains it.
fn replay(
    mut reader: CaptureReader,
    mut pipeline: Pipeline,
    signals: &Signals,
) -> Result<Summary, AgentError> {
    let started = Instant::now();
    let mut frames = 0u64;
    let mut bytes = 0u64;
    let mut skipped = [0u64; crate::parse::Skip::ALL.len()];
    while let Some(frame) = reader.next_frame() {
        frames += 1;
        bytes += u64::from(frame.wire_len);
        match parse_frame(frame.link, frame.ts, frame.data, frame.wire_len) {
            Ok(meta) => pipeline.dispatcher.push(meta),
            Err(skip) => skipped[skip.index()] += 1,
        }
        if frames.is_multiple_of(65536) {
            publish_capture(&pipeline, frames, bytes, &skipped);
            if signals.stopped() {
                log::warn!(
                    "Stopped by a signal after {frames} frames; flushing the flows read so far."
                );
                break;
            }
            if pipeline.broken() {
                break;
            }
        }
    }
    publish_capture(&pipeline, frames, bytes, &skipped);
    let truncation = reader.truncation().cloned();
    if let Some(t) = &truncation {
        log::warn!(
            "The capture stops early after {} records: {}. Processed up to that point.",
            t.after_records,
            t.detail
        );
    }
    let repairs = reader.repairs().clone();
    log_repairs(&repairs);
    let stats = pipeline.finish()?;
    if stats.skipped_total() > 0 {
        let reasons: Vec<String> = stats
            .skipped
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        log::info!(
            "Skipped {} frames that could not be used: {}.",
            stats.skipped_total(),
            reasons.join(", ")
        );
    }
    if stats.time_backwards > 0 {
        log::info!(
            "The capture's clock went backwards {} times; those packets took the latest time seen.",
            stats.time_backwards
        );
    }
    Ok(Summary {
        stats,
        elapsed: started.elapsed(),
        truncation,
        repairs,
        delivery: None,
    })
}

/// One warning for each kind of repair the capture reader made.
fn log_repairs(r: &Repairs) {
    if let Some(field) = r.linktype_upper_bits {
        log::warn!(
            "The link-type field 0x{field:08x} has FCS-length or reserved bits set; read as link \
             type {}.",
            field & 0x03ff_ffff
        );
    }
    if r.fraction_carried > 0 {
        log::warn!(
            "{} records have a sub-second timestamp field of a second or more; it was carried \
             into the seconds.",
            r.fraction_carried
        );
    }
    if r.ts_after_9999 > 0 {
        log::warn!(
            "{} records are dated after 9999-12-31; alerts show 9999-12-31T23:59:59.999999 for \
             them{}.",
            r.ts_after_9999,
            if r.ts_clamped > 0 {
                format!(
                    ", and {} past the year 294,000 were clamped to it",
                    r.ts_clamped
                )
            } else {
                String::new()
            }
        );
    }
    if r.bad_options > 0 {
        log::warn!(
            "{} pcapng interface options could not be read; those interfaces keep microsecond \
             timestamps without an offset.",
            r.bad_options
        );
    }
    if r.unsupported_frames > 0 {
        log::warn!(
            "{} frames were on interfaces with an unsupported link type (such as {}) and were \
             skipped.",
            r.unsupported_frames,
            r.unsupported_linktype.unwrap_or_default()
        );
    }
}

fn publish_capture(pipeline: &Pipeline, frames: u64, bytes: u64, skipped: &[u64]) {
    Stats::set(&pipeline.stats.frames, frames);
    Stats::set(&pipeline.stats.bytes, bytes);
    for (i, n) in skipped.iter().enumerate() {
        Stats::set(&pipeline.stats.skipped[i], *n);
    }
    pipeline.publish_dispatch();
}

/// How far behind the wall clock a quiet link's clock is set. A frame can reach the dispatcher
/// that long after its timestamp: a tpacket block is handed over up to READ_TIMEOUT after its
/// first frame, and a partial batch waits up to READ_TIMEOUT more. Set closer, the clock would
/// run ahead of frames still on their way, and those would be counted as time_backwards and
/// re-stamped; flow timers fire this much later, which no timeout notices.
const TICK_LAG: Duration = Duration::from_millis(3 * READ_TIMEOUT.as_millis() as u64);

/// Live capture's input and settings.
struct Live {
    receivers: Vec<(String, Box<dyn LinkReceiver>)>,
    clock: Arc<dyn Clock>,
    reload: Option<Box<dyn FnMut() -> Result<Reload, String>>>,
    capture_queue: Queue,
    batch_size: usize,
    stats_interval: Duration,
}

/// Captures on live interfaces until a signal (or a failed pipeline thread) stops it, then
/// flushes every flow and alert.
/// `drain_interrupt` is set when the input ends: the interrupt that then ends the wait for the
/// broker.
fn run_live(
    live: Live,
    mut pipeline: Pipeline,
    signals: &Signals,
    drain_interrupt: &mut Option<Interrupt>,
) -> Result<Summary, AgentError> {
    let started = Instant::now();
    let Live {
        receivers,
        clock,
        mut reload,
        capture_queue,
        batch_size,
        stats_interval,
    } = live;
    let stop = signals.stop_flag();
    let counters: Vec<Arc<CaptureCounters>> = receivers
        .iter()
        .map(|_| Arc::new(CaptureCounters::default()))
        .collect();
    let (captures, rx) = match start_captures(
        receivers,
        &counters,
        &clock,
        batch_size,
        capture_queue,
        stop,
    ) {
        Ok(started) => started,
        Err(e) => {
            let _ = pipeline.finish();
            return Err(e);
        }
    };

    let mut last_stats = Instant::now();
    loop {
        match rx.recv_timeout(READ_TIMEOUT) {
            Ok(batch) => {
                // Shedding begins at a full shard queue only while the capture is half full
                // behind it, and ends once it is a quarter full or less: the fullest tpacket
                // ring (the buffer that absorbs a burst, so shedding waits until it is half
                // used), else the capture queue.
                let (waiting, capacity) = counters
                    .iter()
                    .filter_map(|c| c.ring_fill())
                    .max_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)))
                    .unwrap_or((rx.len(), capture_queue.capacity));
                pipeline.dispatcher.set_backlog(waiting, capacity);
                for p in batch {
                    pipeline.dispatcher.push(p);
                }
                // Live: hand every capture batch on at once, for alert latency.
                pipeline.dispatcher.flush();
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => pipeline
                .dispatcher
                .tick(clock.now().saturating_sub(TICK_LAG.as_micros() as u64)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
        publish_live(&mut pipeline, &counters);
        if pipeline.broken() {
            // Nothing would come of the packets: stop, and let `finish` say why.
            stop.store(true, Ordering::Relaxed);
            break;
        }
        if let Some(load) = &mut reload
            && signals.take_reload()
        {
            apply_reload(&pipeline, load);
        }
        if last_stats.elapsed() >= stats_interval {
            last_stats = Instant::now();
            log::info!(
                "Stats: {}",
                serde_json::to_string(&pipeline.stats.snapshot()).unwrap_or_default()
            );
        }
    }
    // The input has ended: from here a SIGTERM or SIGINT ends the wait for the broker.
    *drain_interrupt = Some(signals.next_interrupt());
    // A capture thread still waiting for room (the pipeline broke) gets an error once the queue
    // is gone; after a stop the threads have already hung up.
    drop(rx);
    let mut capture_panicked = false;
    for handle in captures {
        capture_panicked |= handle.join().is_err();
    }
    publish_live(&mut pipeline, &counters);
    let stats = pipeline.finish()?;
    log::info!(
        "Stats at the end: {}",
        serde_json::to_string(&stats).unwrap_or_default()
    );
    if capture_panicked {
        return Err(AgentError::Panicked);
    }
    Ok(Summary {
        stats,
        elapsed: started.elapsed(),
        truncation: None,
        repairs: Repairs::default(),
        delivery: None,
    })
}

/// Starts one capture thread per receiver, each sending its batches to the capture queue. On
/// failure, the threads already started are stopped.
fn start_captures(
    receivers: Vec<(String, Box<dyn LinkReceiver>)>,
    counters: &[Arc<CaptureCounters>],
    clock: &Arc<dyn Clock>,
    batch_size: usize,
    queue: Queue,
    stop: &Arc<AtomicBool>,
) -> Result<CaptureThreads, AgentError> {
    let (tx, rx) = queue.channel::<Vec<PacketMeta>>();
    let when_full = queue.when_full;
    let mut captures = Vec::new();
    for ((name, mut receiver), counters) in receivers.into_iter().zip(counters.iter().cloned()) {
        let (tx, thread_stop, clock) = (tx.clone(), stop.clone(), clock.clone());
        let thread = spawn(&format!("ew-cap-{name}"), move || {
            let result = capture_loop(
                receiver.as_mut(),
                clock.as_ref(),
                batch_size,
                &thread_stop,
                &tx,
                when_full,
                &counters,
            );
            log_capture_end(&name, &counters, result);
        });
        match thread {
            Ok(t) => captures.push(t),
            Err(e) => {
                // A thread waiting for room in the queue gets an error once it is gone.
                stop.store(true, Ordering::Relaxed);
                drop(rx);
                for t in captures {
                    let _ = t.join();
                }
                return Err(e);
            }
        }
    }
    Ok((captures, rx))
}

/// The capture threads and the queue they send their batches to.
type CaptureThreads = (Vec<JoinHandle<()>>, Receiver<Vec<PacketMeta>>);

/// Reads the config and the model again and hands them to the scoring stage. Reading the model
/// takes milliseconds; the capture threads keep filling their queue meanwhile, and nothing in
/// the flow tables is touched.
fn apply_reload(pipeline: &Pipeline, load: &mut dyn FnMut() -> Result<Reload, String>) {
    match load() {
        Ok(r) => {
            if !pipeline.reload(r) {
                log::warn!("Reload skipped: the previous one is still being applied.");
            }
        }
        Err(why) => log::error!("Reload failed, still running as before: {why}"),
    }
}

fn log_capture_end(name: &str, counters: &CaptureCounters, result: std::io::Result<()>) {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    match result {
        Ok(()) if counters.kernel_stats.load(Ordering::Relaxed) => log::info!(
            "Capture on {name} stopped after {} frames (kernel: {} packets, {} dropped).",
            n(&counters.frames),
            n(&counters.kernel_packets),
            n(&counters.kernel_drops)
        ),
        Ok(()) => log::info!(
            "Capture on {name} stopped after {} frames.",
            n(&counters.frames)
        ),
        Err(e) => log::error!("Capture on {name} failed: {e}"),
    }
}

fn publish_live(pipeline: &mut Pipeline, counters: &[Arc<CaptureCounters>]) {
    let sum = |f: fn(&CaptureCounters) -> &AtomicU64| {
        counters
            .iter()
            .map(|c| f(c).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    Stats::set(&pipeline.stats.frames, sum(|c| &c.frames));
    Stats::set(&pipeline.stats.bytes, sum(|c| &c.bytes));
    for (i, slot) in pipeline.stats.skipped.iter().enumerate() {
        Stats::set(
            slot,
            counters
                .iter()
                .map(|c| c.skipped[i].load(Ordering::Relaxed))
                .sum(),
        );
    }
    pipeline.capture_queue_drops = sum(|c| &c.queue_drops);
    pipeline.publish_dispatch();
    Stats::set(&pipeline.stats.kernel_packets, sum(|c| &c.kernel_packets));
    Stats::set(&pipeline.stats.kernel_drops, sum(|c| &c.kernel_drops));
    Stats::set(&pipeline.stats.kernel_freezes, sum(|c| &c.kernel_freezes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_runs_at_most_flush_lead_chunks_ahead_of_the_slowest_shard() {
        // Shard 1 has sent nothing yet: shard 0 may send its first FLUSH_LEAD chunks only.
        assert!(may_send(&[FLUSH_LEAD - 1, 0], FLUSH_LEAD));
        assert!(!may_send(&[FLUSH_LEAD, 0], FLUSH_LEAD + 1));
        // Once shard 1 has sent one chunk, shard 0 may send one more.
        assert!(may_send(&[FLUSH_LEAD, 1], FLUSH_LEAD + 1));
        assert!(!may_send(&[FLUSH_LEAD + 1, 1], FLUSH_LEAD + 2));
        // A shard that is done holds nobody back.
        assert!(may_send(&[40, usize::MAX], 41));
    }

    #[test]
    fn a_shard_waits_for_the_slowest_and_goes_on_when_it_is_done() {
        let pace = Arc::new(FlushPace::new(2));
        let (sent_tx, sent_rx) = bounded::<usize>(8);
        let ahead = {
            let pace = pace.clone();
            std::thread::spawn(move || {
                for n in 1..=5 {
                    pace.step(0, n);
                    sent_tx.send(n).unwrap();
                }
                pace.done(0);
            })
        };
        // Shard 0 sends FLUSH_LEAD chunks, then must wait for shard 1 to send its first.
        for n in 1..=FLUSH_LEAD {
            assert_eq!(sent_rx.recv().unwrap(), n);
        }
        pace.step(1, 1);
        pace.step(1, 2); // shard 1 has now sent one chunk
        assert_eq!(sent_rx.recv().unwrap(), FLUSH_LEAD + 1);
        pace.done(1);
        let rest: Vec<usize> = sent_rx.iter().collect();
        assert_eq!(rest, (FLUSH_LEAD + 2..=5).collect::<Vec<_>>());
        ahead.join().unwrap();
        assert_eq!(pace.sent.lock().unwrap()[0], usize::MAX);
    }

    #[test]
    fn only_a_pnet_capture_drops_at_a_queue() {
        let cfg = Config::default();
        let replay = Queues::new(&cfg, false);
        let live = Queues::new(&cfg, true);
        assert_eq!(replay.shard.when_full, WhenFull::Block);
        assert_eq!(live.shard.when_full, WhenFull::ShedThenBlock);
        let mut tpacket = cfg.clone();
        tpacket.capture.backend = CaptureBackend::Tpacket;
        assert_eq!(
            Queues::new(&tpacket, true).capture.when_full,
            WhenFull::Block
        );
        let mut pnet = cfg.clone();
        pnet.capture.backend = CaptureBackend::Pnet;
        assert_eq!(
            Queues::new(&pnet, true).capture.when_full,
            WhenFull::DropNewest
        );
        assert_eq!(live.shard.capacity, cfg.capture.queue_capacity);
        assert_eq!(
            replay.shard.capacity,
            cfg.capture.queue_capacity.div_ceil(REPLAY_QUEUE_DIVISOR)
        );
        let names: Vec<&str> = live.all().iter().map(|q| q.name).collect();
        assert_eq!(names, ["capture", "shard", "report", "alert", "reload"]);
    }
}
