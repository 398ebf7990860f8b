//! The scoring stage: merges the shards' events into one global order, keeps the host context,
//! builds feature vectors and either scores them in batches (alerts) or writes them out (CSV for
//! training). One thread; everything here is plain data driven by the events it is given.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Instant;

use crate::alert::Alert;
use crate::features::{FEATURE_COUNT, FEATURE_NAMES};
use crate::flow::{EvalReason, Flow, FlowEvent, Order};
use crate::host::HostTable;
use crate::incident::AlertEngine;
use crate::model::Scorer;
use crate::packet::{Micros, proto_name};

/// Puts the events of several shards back into one order.
///
/// Each shard sends its events in order with a watermark (all its events up to the watermark
/// have been sent); an event is released once every shard's watermark has reached it. Each
/// shard's reports wait in their own queue as they came, already in order, so releasing one
/// compares the queues' first events only and moves it once, out of its report (with one shard,
/// everything passes straight through).
pub struct Merger {
    /// Per shard, the reports with events still held, oldest first; none is empty.
    queues: Vec<VecDeque<std::vec::IntoIter<FlowEvent>>>,
    watermarks: Vec<Order>,
}

impl Merger {
    pub fn new(shards: usize) -> Merger {
        Merger {
            queues: (0..shards).map(|_| VecDeque::new()).collect(),
            watermarks: vec![Order::ZERO; shards],
        }
    }

    /// Takes a shard's events and its new watermark; returns the events now safe to process, in order.
    pub fn push(
        &mut self,
        shard: usize,
        events: Vec<FlowEvent>,
        watermark: Order,
        out: &mut Vec<FlowEvent>,
    ) {
        self.watermarks[shard] = self.watermarks[shard].max(watermark);
        // One shard, nothing held: its events are all released, as they are (no copy).
        if self.queues.len() == 1
            && self.queues[0].is_empty()
            && out.is_empty()
            && events
                .last()
                .is_none_or(|e| e.order() <= self.watermarks[0])
        {
            *out = events;
            return;
        }
        if !events.is_empty() {
            self.queues[shard].push_back(events.into_iter());
        }
        let low = self.low_watermark();
        loop {
            // The queue whose first event comes first (the lowest shard on a tie).
            let mut next: Option<(usize, Order)> = None;
            for (i, queue) in self.queues.iter().enumerate() {
                if let Some(e) = queue.front().and_then(|report| report.as_slice().first())
                    && next.is_none_or(|(_, best)| e.order() < best)
                {
                    next = Some((i, e.order()));
                }
            }
            match next {
                Some((i, order)) if order <= low => {
                    let queue = &mut self.queues[i];
                    if let Some(report) = queue.front_mut() {
                        out.extend(report.next());
                        if report.as_slice().is_empty() {
                            queue.pop_front();
                        }
                    }
                }
                _ => break,
            }
        }
    }

    /// The lowest watermark: everything before it has been released.
    pub fn low_watermark(&self) -> Order {
        self.watermarks.iter().copied().min().unwrap_or(Order::END)
    }

    pub fn held(&self) -> usize {
        self.queues
            .iter()
            .flatten()
            .map(|report| report.as_slice().len())
            .sum()
    }
}

/// What a reload (SIGHUP) changes in the scoring stage.
pub struct Reload {
    pub scorer: Scorer,
    pub threshold: f32,
    pub alert: crate::config::AlertConfig,
    pub batch_size: usize,
}

/// What the stage does with feature vectors.
pub enum Mode {
    Alerts {
        scorer: Scorer,
        engine: Box<AlertEngine>,
        batch_size: usize,
    },
    Features {
        csv: Box<dyn Write + Send>,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScoringCounters {
    pub flows_scored: u64,
    pub inference_batches: u64,
    pub inference_us: u64,
    pub rows_written: u64,
}

struct Pending {
    ts: Micros,
    flow: Flow,
    reason: EvalReason,
}

pub struct ScoringStage {
    hosts: HostTable,
    mode: Mode,
    pending: Vec<Pending>,
    rows: Vec<f32>,
    pub counters: ScoringCounters,
}

impl ScoringStage {
    pub fn new(hosts: HostTable, mode: Mode) -> ScoringStage {
        ScoringStage {
            hosts,
            mode,
            pending: Vec::new(),
            rows: Vec::new(),
            counters: ScoringCounters::default(),
        }
    }

    pub fn hosts(&self) -> &HostTable {
        &self.hosts
    }

    /// Ends the stage and hands its model or CSV writer back (the pipeline fuzz target keeps one
    /// loaded model for all its inputs).
    pub fn into_mode(self) -> Mode {
        self.mode
    }

    pub fn engine(&self) -> Option<&AlertEngine> {
        match &self.mode {
            Mode::Alerts { engine, .. } => Some(engine),
            Mode::Features { .. } => None,
        }
    }

    /// Writes the CSV header (features mode).
    pub fn write_header(&mut self) -> std::io::Result<()> {
        if let Mode::Features { csv } = &mut self.mode {
            let mut header = String::from(
                "flow_uid,src_ip,src_port,dest_ip,dest_port,proto,vlan,start,end,eval_ts,eval_reason",
            );
            for name in FEATURE_NAMES {
                header.push(',');
                header.push_str(name);
            }
            writeln!(csv, "{header}")?;
        }
        Ok(())
    }

    /// Handles events in global order.
    pub fn handle(
        &mut self,
        events: &mut Vec<FlowEvent>,
        alerts: &mut Vec<Alert>,
    ) -> std::io::Result<()> {
        for event in events.drain(..) {
            match event {
                FlowEvent::Start { order, flow } => self.hosts.flow_started(&flow, order.ts),
                FlowEvent::Eval {
                    order,
                    flow,
                    reason,
                    first_outcome,
                } => {
                    let ts = order.ts;
                    if let Some(outcome) = first_outcome {
                        self.hosts.outcome(&flow, outcome, ts);
                    }
                    let src = self.hosts.view(flow.initiator, ts);
                    let dst = self.hosts.view(flow.responder, ts);
                    let at = self.rows.len();
                    self.rows.resize(at + FEATURE_COUNT, 0.0);
                    crate::features::compute(&flow, reason, &src, &dst, &mut self.rows[at..]);
                    self.pending.push(Pending { ts, flow, reason });
                    let full = match &self.mode {
                        Mode::Alerts { batch_size, .. } => self.pending.len() >= *batch_size,
                        Mode::Features { .. } => true,
                    };
                    if full {
                        self.run_batch(alerts)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every event up to `now` has been handled: scores (or writes) what is pending, then lets
    /// the alert engine reach `now`.
    ///
    /// Unless `eager`, a batch that is not full yet is kept for the events to come (replay,
    /// where nobody waits for an alert: the model then runs on full batches). The alerts are the
    /// same either way: the events still to come are later than `now`, and offering the first
    /// of them moves the engine on to its time before anything else happens.
    pub fn settle(
        &mut self,
        now: Micros,
        eager: bool,
        alerts: &mut Vec<Alert>,
    ) -> std::io::Result<()> {
        if !eager && !self.pending.is_empty() {
            return Ok(());
        }
        self.run_batch(alerts)?;
        if let Mode::Alerts { engine, .. } = &mut self.mode {
            engine.advance(now, alerts);
        }
        Ok(())
    }

    /// Switches to another model, threshold and alert settings (SIGHUP). What is pending is
    /// scored with the old model, and the open alert windows are closed and emitted under it
    /// (their classes are the old model's); the flows and the host context carry on.
    pub fn reload(&mut self, reload: Reload, alerts: &mut Vec<Alert>) -> std::io::Result<()> {
        self.run_batch(alerts)?;
        if let Mode::Alerts {
            scorer,
            engine,
            batch_size,
        } = &mut self.mode
        {
            engine.flush(alerts);
            engine.reconfigure(&reload.alert, reload.scorer.info(), reload.threshold);
            *scorer = reload.scorer;
            *batch_size = reload.batch_size;
        }
        Ok(())
    }

    /// End of input: score the rest and close every alert window.
    pub fn finish(&mut self, alerts: &mut Vec<Alert>) -> std::io::Result<()> {
        self.run_batch(alerts)?;
        match &mut self.mode {
            Mode::Alerts { engine, .. } => engine.flush(alerts),
            Mode::Features { csv } => csv.flush()?,
        }
        Ok(())
    }

    fn run_batch(&mut self, alerts: &mut Vec<Alert>) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match &mut self.mode {
            Mode::Alerts { scorer, engine, .. } => {
                let started = Instant::now();
                let scores = scorer.score(&self.rows);
                self.counters.inference_us += started.elapsed().as_micros() as u64;
                self.counters.inference_batches += 1;
                match scores {
                    Ok(scores) => {
                        self.counters.flows_scored += scores.len() as u64;
                        for (p, score) in self.pending.iter().zip(scores) {
                            engine.offer(p.ts, &p.flow, p.reason, score, alerts);
                        }
                    }
                    Err(e) => log::error!(
                        "Model inference failed, {} flows not scored: {e}",
                        self.pending.len()
                    ),
                }
            }
            Mode::Features { csv } => {
                for (i, p) in self.pending.iter().enumerate() {
                    write_row(
                        csv,
                        p,
                        &self.rows[i * FEATURE_COUNT..(i + 1) * FEATURE_COUNT],
                    )?;
                    self.counters.rows_written += 1;
                }
            }
        }
        self.pending.clear();
        self.rows.clear();
        Ok(())
    }
}

fn reason_name(r: EvalReason) -> &'static str {
    match r {
        EvalReason::Early => "early",
        EvalReason::Probe => "probe",
        EvalReason::Active => "active",
        EvalReason::TcpEnd => "tcp_end",
        EvalReason::Idle => "idle",
        EvalReason::Evicted => "evicted",
        EvalReason::Flush => "flush",
    }
}

fn write_row(csv: &mut dyn Write, p: &Pending, features: &[f32]) -> std::io::Result<()> {
    let f = &p.flow;
    let vlan = f
        .key
        .vlan
        .iter()
        .filter(|&&v| v != 0)
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(".");
    let secs = |t: Micros| format!("{}.{:06}", t / 1_000_000, t % 1_000_000);
    write!(
        csv,
        "{:016x},{},{},{},{},{},{},{},{},{},{}",
        f.uid,
        f.initiator,
        f.initiator_port,
        f.responder,
        f.responder_port,
        proto_name(f.key.proto),
        vlan,
        secs(f.start),
        secs(f.last),
        secs(p.ts),
        reason_name(p.reason)
    )?;
    for x in features {
        // Shortest text that reads back as the same f32.
        write!(csv, ",{x}")?;
    }
    writeln!(csv)?;
    Ok(())
}
