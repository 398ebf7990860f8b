//! Where the pipeline's threads and queues are made: capture -> dispatcher -> flow shards ->
//! scoring -> sinks (the MQTT publisher starts its own thread, `mqtt::publisher`).
//!
//! Every queue is a bounded crossbeam channel whose policy is named where it is created. The
//! stages themselves are plain structs (`Dispatcher`, `FlowTable`, `ScoringStage`, sinks) that
//! know nothing about threads; this module only connects them and reports their counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::alert::Alert;
use crate::capture::file::{CaptureReader, Repairs, Truncation};
use crate::capture::live::{CaptureCounters, Clock, LinkReceiver, READ_TIMEOUT, capture_loop};
use crate::config::Config;
use crate::dispatch::{Batch, Dispatcher, WhenFull};
use crate::flow::{FlowEvent, FlowTable, Order};
use crate::host::HostTable;
use crate::incident::AlertEngine;
use crate::model::Scorer;
use crate::packet::PacketMeta;
use crate::parse::parse_frame;
use crate::scoring::{Merger, Mode, Reload, ScoringStage};
use crate::sink::AlertSink;
use crate::stats::{Snapshot, Stats};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot start a thread: {0}")]
    Spawn(std::io::Error),
    #[error("writing output failed: {0}")]
    Output(std::io::Error),
    #[error("a pipeline thread panicked")]
    Panicked,
}

/// What the pipeline produces.
pub enum Output {
    Alerts {
        scorer: Scorer,
        sink: Box<dyn AlertSink>,
        sensor_id: String,
    },
    Features {
        csv: Box<dyn std::io::Write + Send>,
    },
}

/// The shard workers' messages to the scorer: events in order, then the watermark reached.
struct ShardReport {
    shard: usize,
    events: Vec<FlowEvent>,
    watermark: Order,
}

/// A running pipeline, fed through its dispatcher.
pub struct Pipeline {
    pub dispatcher: Dispatcher,
    pub stats: Arc<Stats>,
    threads: Vec<JoinHandle<Result<(), AgentError>>>,
    /// Hands a reloaded model and settings to the scoring stage.
    reload_tx: Sender<Reload>,
    /// Batches the capture threads dropped at the dispatcher's queue, in packets (live only):
    /// part of `queue_drops` with the dispatcher's own.
    capture_queue_drops: u64,
}

/// Queue of scorer reports and of alert batches, in messages.
const REPORT_QUEUE: usize = 16;
const ALERT_QUEUE: usize = 64;
/// Evaluations per report when a shard flushes its table.
const FLUSH_CHUNK: usize = 256;
/// A shard reports its events at least every this many. Under a flood every packet starts a
/// flow: the reports, and the memory the report queue holds, would otherwise grow with the
/// batches of packets.
const REPORT_EVENTS: usize = 256;
/// Room for a report's events: a packet (and the timers it fires) may add a few past the mark.
const REPORT_ROOM: usize = REPORT_EVENTS + REPORT_EVENTS / 8;
/// Replay hands packets on in batches this many times `capture.batch_size`, for a fraction of the
/// hand-overs between threads; live capture keeps the configured batches, for alert latency.
const REPLAY_BATCH_SCALE: usize = 4;
/// Replay's shard queues hold `capture.queue_capacity` divided by this many of its larger
/// batches: twice the packets of live capture's queues. With the reports' queue as long as live
/// capture's, this lets the stages wait on each other less (replay 7 % faster, half the context
/// switches; docs/history.md, "replay, the seventh round") for 3 MiB more at the flood's peak.
const REPLAY_QUEUE_DIVISOR: usize = 2;

impl Pipeline {
    /// Starts the flow shards, the scoring stage and the sink.
    pub fn spawn(
        cfg: &Config,
        workers: usize,
        output: Output,
        when_full: WhenFull,
    ) -> Result<Pipeline, AgentError> {
        let stats = Arc::new(Stats::default());
        let workers = workers.max(1);
        let mut threads = Vec::new();
        let (scale, divisor) = match when_full {
            WhenFull::Block => (REPLAY_BATCH_SCALE, REPLAY_QUEUE_DIVISOR),
            WhenFull::DropNewest => (1, 1),
        };

        // Scorer -> sink: blocks when full; the sink is the slowest stage only when its disk is.
        let (alert_tx, alert_rx) = bounded::<Vec<Alert>>(ALERT_QUEUE);
        // Shards -> scorer: blocks when full (back-pressure into the shard queues).
        let (report_tx, report_rx) = bounded::<ShardReport>(REPORT_QUEUE);

        let (mode, sink) = match output {
            Output::Alerts {
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
                (
                    Mode::Alerts {
                        scorer,
                        engine: Box::new(engine),
                        batch_size: cfg.model.batch_size,
                    },
                    Some(sink),
                )
            }
            Output::Features { csv } => (Mode::Features { csv }, None),
        };

        let mut shard_txs = Vec::with_capacity(workers);
        // The shards' final flushes keep in step (see FlushPace).
        let pace = Arc::new(FlushPace::new(workers));
        for shard in 0..workers {
            // Dispatcher -> shard: policy chosen by the caller (block for replay, drop live).
            let (tx, rx) = bounded::<Batch>(cfg.capture.queue_capacity.div_ceil(divisor));
            shard_txs.push(tx);
            let table = FlowTable::new(&cfg.flow, cfg.flow.max_flows.div_ceil(workers));
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
        let (reload_tx, reload_rx) = bounded::<Reload>(1);
        // Live capture (drop when full) scores every batch of packets at once, for alert
        // latency; replay (block) lets the scorer fill its batches.
        let eager = when_full == WhenFull::DropNewest;
        threads.push(spawn("ew-score", move || {
            scoring_worker(
                stage,
                workers,
                report_rx,
                reload_rx,
                alert_tx,
                scorer_stats,
                eager,
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
            when_full,
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
    pub fn reload(&self, reload: Reload) -> bool {
        self.reload_tx.try_send(reload).is_ok()
    }

    /// True when a pipeline thread has stopped before its input ended: it failed (the features
    /// file or the alert output could not be written, a thread panicked), and
    /// [`Pipeline::finish`] says why.
    pub fn broken(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Publishes the dispatcher's counters.
    pub fn publish_dispatch(&self) {
        let c = &self.dispatcher.counters;
        Stats::set(&self.stats.packets, c.packets);
        Stats::set(&self.stats.time_backwards, c.time_backwards);
        Stats::set(&self.stats.fragments_unattributed, c.fragments_unattributed);
        Stats::set(
            &self.stats.queue_drops,
            c.queue_drops.saturating_add(self.capture_queue_drops),
        );
    }

    /// Drains everything: flushes the flows, scores them, closes the alert windows and waits for
    /// the sink. Returns the final counters.
    pub fn finish(mut self) -> Result<Snapshot, AgentError> {
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

fn spawn(
    name: &str,
    f: impl FnOnce() -> Result<(), AgentError> + Send + 'static,
) -> Result<JoinHandle<Result<(), AgentError>>, AgentError> {
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
    let mut events = Vec::new();
    for batch in rx {
        for p in &batch.packets {
            table.process(p, &mut events);
            if events.len() >= REPORT_EVENTS {
                let watermark = last_order(&events);
                let full = std::mem::replace(&mut events, Vec::with_capacity(REPORT_ROOM));
                if !report(full, watermark) {
                    return;
                }
            }
        }
        table.advance(batch.reached.ts, &mut events);
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
        while sent
            .iter()
            .min()
            .is_some_and(|&low| low.saturating_add(FLUSH_LEAD) < n)
        {
            sent = self.moved.wait(sent).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn done(&self, shard: usize) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent[shard] = usize::MAX;
        self.moved.notify_all();
    }
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
    eager: bool,
) -> Result<(), AgentError> {
    let mut merger = Merger::new(shards);
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
            stage
                .settle(low.ts, eager, &mut alerts)
                .map_err(AgentError::Output)?;
        }
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
    }
}

/// The outcome of reading a capture file through the pipeline.
pub struct ReplaySummary {
    pub stats: Snapshot,
    pub elapsed: Duration,
    pub truncation: Option<Truncation>,
    /// What the reader repaired or skipped (each also logged as a warning).
    pub repairs: Repairs,
}

impl ReplaySummary {
    /// The link type that made the whole capture unusable: every frame was on an interface whose
    /// link type edgewatch does not read (a pcap file with such a link type is refused at open).
    pub fn unusable_linktype(&self) -> Option<u32> {
        (self.stats.frames == 0 && self.repairs.unsupported_frames > 0)
            .then_some(self.repairs.unsupported_linktype)
            .flatten()
    }
}

/// Reads a capture file through a pipeline until its end, then drains it.
pub fn replay(
    mut reader: CaptureReader,
    mut pipeline: Pipeline,
    stop: &AtomicBool,
) -> Result<ReplaySummary, AgentError> {
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
            if stop.load(Ordering::Relaxed) {
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
    Ok(ReplaySummary {
        stats,
        elapsed: started.elapsed(),
        truncation,
        repairs,
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

/// Reloads on request (SIGHUP): `requested` is set by the signal handler, `load` reads the
/// config and model again and says why when they are not usable.
pub struct Reloader {
    pub requested: Arc<AtomicBool>,
    pub load: Box<dyn FnMut() -> Result<Reload, String>>,
}

/// Captures on live interfaces until `stop` is set, then flushes every flow and alert.
pub fn run_live(
    receivers: Vec<(String, Box<dyn LinkReceiver>)>,
    clock: Arc<dyn Clock>,
    mut pipeline: Pipeline,
    batch_size: usize,
    stats_interval: Duration,
    stop: Arc<AtomicBool>,
    mut reloader: Option<Reloader>,
) -> Result<Snapshot, AgentError> {
    // Capture threads -> dispatcher: capture drops the newest batch when full (never stalls).
    let (tx, rx) = bounded::<Vec<PacketMeta>>(64);
    let counters: Vec<Arc<CaptureCounters>> = receivers
        .iter()
        .map(|_| Arc::new(CaptureCounters::default()))
        .collect();
    let mut captures = Vec::new();
    for ((name, mut receiver), counters) in receivers.into_iter().zip(counters.iter().cloned()) {
        let (tx, stop, clock) = (tx.clone(), stop.clone(), clock.clone());
        let handle = std::thread::Builder::new()
            .name(format!("ew-cap-{name}"))
            .spawn(move || {
                match capture_loop(
                    receiver.as_mut(),
                    clock.as_ref(),
                    batch_size,
                    &stop,
                    &tx,
                    &counters,
                ) {
                    Ok(()) => {
                        let n = |c: &portable_atomic::AtomicU64| c.load(Ordering::Relaxed);
                        let frames = n(&counters.frames);
                        if counters.kernel_stats.load(Ordering::Relaxed) {
                            log::info!(
                                "Capture on {name} stopped after {frames} frames (kernel: {} \
                                 packets, {} dropped).",
                                n(&counters.kernel_packets),
                                n(&counters.kernel_drops)
                            );
                        } else {
                            log::info!("Capture on {name} stopped after {frames} frames.");
                        }
                    }
                    Err(e) => log::error!("Capture on {name} failed: {e}"),
                }
            })
            .map_err(AgentError::Spawn)?;
        captures.push(handle);
    }
    drop(tx);

    let mut last_stats = Instant::now();
    loop {
        match rx.recv_timeout(READ_TIMEOUT) {
            Ok(batch) => {
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
        if let Some(r) = &mut reloader
            && r.requested.swap(false, Ordering::Relaxed)
        {
            // Reading the model takes milliseconds; the capture threads keep filling their
            // queue meanwhile, and nothing in the flow tables is touched.
            match (r.load)() {
                Ok(reload) => {
                    if !pipeline.reload(reload) {
                        log::warn!("Reload skipped: the previous one is still being applied.");
                    }
                }
                Err(why) => log::error!("Reload failed, still running as before: {why}"),
            }
        }
        if last_stats.elapsed() >= stats_interval {
            last_stats = Instant::now();
            log::info!(
                "Stats: {}",
                serde_json::to_string(&pipeline.stats.snapshot()).unwrap_or_default()
            );
        }
    }
    for handle in captures {
        let _ = handle.join();
    }
    publish_live(&mut pipeline, &counters);
    pipeline.finish()
}

fn publish_live(pipeline: &mut Pipeline, counters: &[Arc<CaptureCounters>]) {
    let sum = |f: fn(&CaptureCounters) -> &portable_atomic::AtomicU64| {
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
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_flush_runs_at_most_flush_lead_chunks_ahead_of_the_slowest_shard() {
        let pace = Arc::new(FlushPace::new(2));
        let reached = Arc::new(AtomicUsize::new(0));
        let ahead = {
            let (pace, reached) = (pace.clone(), reached.clone());
            std::thread::spawn(move || {
                for n in 1..=5 {
                    pace.step(0, n);
                    reached.store(n, Ordering::SeqCst);
                }
                pace.done(0);
            })
        };
        // Waits for shard 0 to reach `n` chunks, then checks that it goes no further.
        let stops_at = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while reached.load(Ordering::SeqCst) < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(reached.load(Ordering::SeqCst), n);
        };
        // Shard 1 has sent nothing yet: shard 0 may send its first FLUSH_LEAD chunks only.
        stops_at(FLUSH_LEAD);
        pace.step(1, 1);
        pace.step(1, 2); // shard 1 has now sent one chunk
        stops_at(FLUSH_LEAD + 1);
        pace.done(1);
        ahead.join().unwrap();
        assert_eq!(reached.load(Ordering::SeqCst), 5);
    }
}
