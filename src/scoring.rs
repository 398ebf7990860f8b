//! The scoring stage: merges the shards' events into one global order, keeps the host context,
//! builds feature vectors and either scores them in batches (alerts) or writes them out (CSV for
//! training). One thread; everything here is plain data driven by the events it is given.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Instant;

use crate::alert::Alert;
use crate::features::{FEATURE_COUNT, FEATURE_NAMES};
use crate::flow::{EvalReason, Flow, FlowEvent, Order};
use crate::host::{HostTable, HostView};
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
    /// Model runs on a single flow: an evaluation left unscored because the engine took it as
    /// one more of a flood's attempts, which it no longer took at its turn.
    pub late_scores: u64,
    pub inference_batches: u64,
    pub inference_us: u64,
    pub rows_written: u64,
}

struct Pending {
    ts: Micros,
    flow: Flow,
    reason: EvalReason,
    /// The responder's distinct sources in its host context's short window.
    victim_sources: f32,
    /// Its feature row in `rows`, scored with the batch; or, for an evaluation the alert engine
    /// took as one more attempt of an alerted flood when it came ([`AlertEngine::absorbs`]),
    /// its endpoints' host views in `spare`, made into a row and scored only if the engine no
    /// longer takes it at its turn.
    row: Row,
}

#[derive(Clone, Copy)]
enum Row {
    Batch,
    Spare(usize),
    /// None: the evaluation is not scored, the flow keeps its verdict
    /// ([`AlertEngine::offer_standing`]).
    Standing,
}

/// The source's and the victim's host views of an evaluation, as they were when it came.
type Views = [[HostView; 2]; 2];

pub struct ScoringStage {
    hosts: HostTable,
    mode: Mode,
    pending: Vec<Pending>,
    rows: Vec<f32>,
    spare: Vec<Views>,
    pub counters: ScoringCounters,
}

impl ScoringStage {
    pub fn new(hosts: HostTable, mode: Mode) -> ScoringStage {
        ScoringStage {
            hosts,
            mode,
            pending: Vec::new(),
            rows: Vec::new(),
            spare: Vec::new(),
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
                    if reason == EvalReason::Held {
                        // No row: the model is not asked (nor trained on such evaluations).
                        if let Mode::Alerts { .. } = self.mode {
                            self.pending.push(Pending {
                                ts,
                                flow,
                                reason,
                                victim_sources: 0.0,
                                row: Row::Standing,
                            });
                        }
                        continue;
                    }
                    let src = self.hosts.view(flow.initiator, ts);
                    let dst = self.hosts.view(flow.responder, ts);
                    // A flood's attempt as the engine stands now: likely unscored at its turn.
                    let unscored = match &self.mode {
                        Mode::Alerts { engine, .. } => engine.absorbs(&flow).is_some(),
                        Mode::Features { .. } => false,
                    };
                    let row = if unscored {
                        self.spare.push([src, dst]);
                        Row::Spare(self.spare.len() - 1)
                    } else {
                        let at = self.rows.len();
                        self.rows.resize(at + FEATURE_COUNT, 0.0);
                        crate::features::compute(&flow, reason, &src, &dst, &mut self.rows[at..]);
                        Row::Batch
                    };
                    self.pending.push(Pending {
                        ts,
                        flow,
                        reason,
                        victim_sources: dst[0].sources,
                        row,
                    });
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

    /// Whether flows wait to be scored (or written).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
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
                let counters = &mut self.counters;
                let mut timed = |rows: &[f32]| {
                    let started = Instant::now();
                    let scores = scorer.score(rows);
                    counters.inference_us += started.elapsed().as_micros() as u64;
                    counters.inference_batches += 1;
                    if let Ok(scores) = &scores {
                        counters.flows_scored += scores.len() as u64;
                    }
                    scores
                };
                let scores = if self.rows.is_empty() {
                    Ok(Vec::new())
                } else {
                    timed(&self.rows)
                };
                match scores {
                    Ok(scores) => {
                        let mut scores = scores.into_iter();
                        for p in &self.pending {
                            // The engine decides at each evaluation's turn whether it counts
                            // unscored, whatever was guessed when it came.
                            let batch_score = match p.row {
                                Row::Batch => scores.next(),
                                Row::Spare(_) | Row::Standing => None,
                            };
                            engine.advance(p.ts, alerts);
                            if let Row::Standing = p.row {
                                engine.offer_standing(p.ts, &p.flow, p.reason, alerts);
                                continue;
                            }
                            if let Some(how) = engine.absorbs(&p.flow) {
                                engine.offer_absorbed(p.ts, &p.flow, p.reason, how, alerts);
                                continue;
                            }
                            let score = match (batch_score, p.row) {
                                (Some(score), _) => score,
                                (None, Row::Spare(at)) => {
                                    counters.late_scores += 1;
                                    let [src, dst] = &self.spare[at];
                                    let mut row = [0.0; FEATURE_COUNT];
                                    crate::features::compute(&p.flow, p.reason, src, dst, &mut row);
                                    match timed(&row).map(|s| s.into_iter().next()) {
                                        Ok(Some(score)) => score,
                                        Ok(None) => continue,
                                        Err(e) => {
                                            log::error!(
                                                "Model inference failed, 1 flow not scored: {e}"
                                            );
                                            continue;
                                        }
                                    }
                                }
                                (None, Row::Batch | Row::Standing) => continue,
                            };
                            engine.offer(p.ts, &p.flow, p.reason, score, p.victim_sources, alerts);
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
        self.spare.clear();
        Ok(())
    }
}

fn reason_name(r: EvalReason) -> &'static str {
    match r {
        EvalReason::Early => "early",
        EvalReason::Probe => "probe",
        EvalReason::Active => "active",
        EvalReason::Refused => "refused",
        EvalReason::Held => "held",
        EvalReason::Logins => "logins",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Flow;
    use crate::packet::PROTO_UDP;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// A flow event with the given order; `uid` tells events with equal orders apart.
    fn event(order: Order, uid: u64) -> FlowEvent {
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
        );
        let flow = Flow::for_test(PROTO_UDP, (a, 4000), (b, 53), order.ts, uid);
        FlowEvent::Start { order, flow }
    }

    /// The event of packet `seq` (time `seq` × 100), as a flow table orders it.
    fn packet(seq: u64) -> FlowEvent {
        event(
            Order {
                ts: seq * 100,
                class: 1,
                a: seq,
                b: 0,
            },
            seq,
        )
    }

    /// An end-of-input flush event at time `ts` of a flow that started at `start`.
    fn flushed(ts: Micros, start: u64, uid: u64) -> FlowEvent {
        event(
            Order {
                ts,
                class: 2,
                a: start,
                b: uid,
            },
            uid,
        )
    }

    /// The position the dispatcher reports after packet `seq` (its `reached`).
    fn reached(seq: u64) -> Order {
        Order {
            ts: seq * 100,
            class: 1,
            a: seq,
            b: u64::MAX,
        }
    }

    fn uid(e: &FlowEvent) -> u64 {
        match e {
            FlowEvent::Start { flow, .. } | FlowEvent::Eval { flow, .. } => flow.uid,
        }
    }

    fn uids(events: &[FlowEvent]) -> Vec<u64> {
        events.iter().map(uid).collect()
    }

    /// Pushes one report and returns what it released.
    fn push(m: &mut Merger, shard: usize, events: Vec<FlowEvent>, watermark: Order) -> Vec<u64> {
        let mut out = Vec::new();
        m.push(shard, events, watermark, &mut out);
        uids(&out)
    }

    #[test]
    fn shards_out_of_step_are_released_in_one_order_once_every_watermark_passed() {
        // Packets 1..=11: shard 0 gets the odd ones and runs far ahead, shard 1 gets 2, 6 and 10
        // and lags, shard 2 gets no packet at all, only empty batches that move its watermark.
        let mut m = Merger::new(3);
        let ahead = [1, 3, 5, 7, 9, 11].map(packet).to_vec();
        assert_eq!(push(&mut m, 0, ahead, reached(12)), [0u64; 0]);
        assert_eq!(push(&mut m, 1, vec![packet(2)], reached(4)), [0u64; 0]);
        // Shards 0 and 1 are past packet 4, but shard 2 has not said anything yet.
        assert_eq!(m.low_watermark(), Order::ZERO);
        assert_eq!(m.held(), 7);
        // An empty batch from the idle shard releases everything up to the lowest watermark.
        assert_eq!(push(&mut m, 2, Vec::new(), reached(4)), [1, 2, 3]);
        assert_eq!(m.held(), 4);
        // The idle shard moves on; shard 1 still holds everything after packet 4 back.
        assert_eq!(push(&mut m, 2, Vec::new(), reached(12)), [0u64; 0]);
        assert_eq!(m.low_watermark(), reached(4));
        assert_eq!(
            push(&mut m, 1, vec![packet(6), packet(10)], reached(12)),
            [5, 6, 7, 9, 10, 11]
        );
        assert_eq!(m.held(), 0);

        // End of input: the shards flush their tables in chunks whose watermark is the chunk's
        // last event, then send the end. Flush events sort after every packet at their time.
        let end = 1200;
        assert_eq!(
            push(
                &mut m,
                0,
                vec![flushed(end, 50, 100)],
                flushed(end, 50, 100).order()
            ),
            [0u64; 0]
        );
        assert_eq!(
            push(
                &mut m,
                0,
                vec![flushed(end, 70, 101)],
                flushed(end, 70, 101).order()
            ),
            [0u64; 0]
        );
        assert_eq!(push(&mut m, 0, Vec::new(), Order::END), [0u64; 0]);
        assert_eq!(
            push(
                &mut m,
                1,
                vec![flushed(end, 60, 102)],
                flushed(end, 60, 102).order()
            ),
            [0u64; 0]
        );
        // Shard 2 ends: shard 1's watermark is now the lowest and equals its last event, so
        // that event goes too; shard 0's later one waits for shard 1's end.
        assert_eq!(push(&mut m, 2, Vec::new(), Order::END), [100, 102]);
        assert_eq!(m.held(), 1);
        assert_eq!(push(&mut m, 1, Vec::new(), Order::END), [101]);
        assert_eq!(m.held(), 0);
        assert_eq!(m.low_watermark(), Order::END);
    }

    #[test]
    fn equal_orders_from_two_shards_go_lowest_shard_first_whatever_came_first() {
        let order = Order {
            ts: 500,
            class: 0,
            a: 42,
            b: 0,
        };
        for first in [0, 1] {
            let mut m = Merger::new(2);
            let uid_of = |shard: usize| 10 + shard as u64;
            let second = 1 - first;
            let mut out = Vec::new();
            m.push(first, vec![event(order, uid_of(first))], order, &mut out);
            assert!(out.is_empty());
            m.push(second, vec![event(order, uid_of(second))], order, &mut out);
            assert_eq!(uids(&out), [10, 11], "shard {first} reported first");
        }
    }

    #[test]
    fn a_watermark_never_goes_back() {
        let mut m = Merger::new(2);
        assert_eq!(
            push(&mut m, 0, vec![packet(1), packet(3)], reached(5)),
            [0u64; 0]
        );
        assert_eq!(push(&mut m, 1, Vec::new(), reached(2)), [1]);
        // An empty flush chunk reports Order::ZERO as its watermark: it must not hold shard 1
        // back again, nor let anything of shard 0 out early.
        assert_eq!(push(&mut m, 1, Vec::new(), Order::ZERO), [0u64; 0]);
        assert_eq!(m.low_watermark(), reached(2));
        assert_eq!(push(&mut m, 1, vec![packet(4)], reached(5)), [3, 4]);
    }

    #[test]
    fn one_shard_passes_events_through_up_to_its_watermark() {
        let mut m = Merger::new(1);
        assert_eq!(
            push(&mut m, 0, vec![packet(1), packet(2)], reached(2)),
            [1, 2]
        );
        // A report reaching past its watermark (not one the shards send, but possible): the
        // rest waits.
        assert_eq!(push(&mut m, 0, vec![packet(3), packet(4)], reached(3)), [3]);
        assert_eq!(m.held(), 1);
        assert_eq!(push(&mut m, 0, vec![packet(5)], Order::END), [4, 5]);
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn released_events_are_appended_to_those_not_yet_handled() {
        for shards in [1, 2] {
            let mut m = Merger::new(shards);
            let mut out = vec![packet(1)];
            m.push(0, vec![packet(2), packet(3)], Order::END, &mut out);
            for shard in 1..shards {
                m.push(shard, Vec::new(), Order::END, &mut out);
            }
            assert_eq!(uids(&out), [1, 2, 3], "{shards} shards");
        }
    }

    /// One shard's reports: events and watermark, in the order the shard sends them.
    type Reports = Vec<(Vec<FlowEvent>, Order)>;

    /// Scripts every shard's reports as the shard workers make them: packet events up to each
    /// batch, the batch's position as watermark (or, for a flood's 256-event chunks, the last
    /// event's order), then the flush in chunks, then the end.
    fn script(
        shards: usize,
        packets: &[(usize, bool, u8)],
        flush_starts: &[Vec<u64>],
    ) -> Vec<Reports> {
        let mut reports: Vec<Reports> = vec![Vec::new(); shards];
        let mut pending: Vec<Vec<FlowEvent>> = vec![Vec::new(); shards];
        let last = packets.len() as u64;
        for (i, &(shard, two_events, batch_ends)) in packets.iter().enumerate() {
            let seq = i as u64 + 1;
            let shard = shard % shards;
            pending[shard].push(event(
                Order {
                    ts: seq * 100,
                    class: 1,
                    a: seq,
                    b: 0,
                },
                seq * 2,
            ));
            if two_events {
                pending[shard].push(event(
                    Order {
                        ts: seq * 100,
                        class: 1,
                        a: seq,
                        b: 1,
                    },
                    seq * 2 + 1,
                ));
            }
            // Bit 7: the shard reports a chunk ending at this event.
            if batch_ends & 0x80 != 0 {
                let order = pending[shard].last().map(FlowEvent::order);
                if let Some(order) = order {
                    reports[shard].push((std::mem::take(&mut pending[shard]), order));
                }
            }
            // Bit s: shard s gets a batch (maybe empty) ending at this packet.
            for (s, pending) in pending.iter_mut().enumerate() {
                if batch_ends & (1 << s) != 0 {
                    reports[s].push((std::mem::take(pending), reached(seq)));
                }
            }
        }
        for (s, starts) in flush_starts.iter().enumerate().take(shards) {
            reports[s].push((std::mem::take(&mut pending[s]), reached(last)));
            let mut flush: Vec<FlowEvent> = starts
                .iter()
                .enumerate()
                .map(|(i, &start)| flushed(last * 100, start, 1_000_000 + (s * 1000 + i) as u64))
                .collect();
            flush.sort_by_key(FlowEvent::order);
            for chunk in flush.chunks(2) {
                let watermark = chunk.last().map_or(Order::ZERO, FlowEvent::order);
                reports[s].push((chunk.to_vec(), watermark));
            }
            reports[s].push((Vec::new(), Order::END));
        }
        reports
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Whatever the shards' reports and however they interleave, the merger releases every
        /// event exactly once, in the one global order, each as soon as (and not before) every
        /// shard's watermark has passed it.
        #[test]
        fn any_interleaving_releases_everything_once_in_order_and_only_when_safe(
            shards in 1usize..=4,
            packets in proptest::collection::vec((0usize..4, any::<bool>(), any::<u8>()), 0..80),
            flush_starts in proptest::collection::vec(proptest::collection::vec(0u64..50, 0..6), 4),
            picks in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut reports: Vec<std::collections::VecDeque<(Vec<FlowEvent>, Order)>> =
                script(shards, &packets, &flush_starts).into_iter().map(Into::into).collect();
            let mut all: Vec<(Order, u64)> = reports
                .iter()
                .flatten()
                .flat_map(|(events, _)| events.iter().map(|e| (e.order(), uid(e))))
                .collect();
            all.sort();

            let mut m = Merger::new(shards);
            let mut delivered: Vec<(Order, u64)> = Vec::new();
            let mut released: Vec<(Order, u64)> = Vec::new();
            let mut picks = picks.into_iter();
            loop {
                let waiting: Vec<usize> = (0..shards).filter(|&s| !reports[s].is_empty()).collect();
                if waiting.is_empty() {
                    break;
                }
                let shard = waiting[usize::from(picks.next().unwrap_or(0)) % waiting.len()];
                let Some((events, watermark)) = reports[shard].pop_front() else { break };
                delivered.extend(events.iter().map(|e| (e.order(), uid(e))));
                let mut out = Vec::new();
                m.push(shard, events, watermark, &mut out);
                released.extend(out.iter().map(|e| (e.order(), uid(e))));

                let low = m.low_watermark();
                // In order, and never anything a shard could still send an earlier event before.
                prop_assert!(released.windows(2).all(|w| w[0] < w[1]), "out of order or twice");
                prop_assert!(released.iter().all(|&(o, _)| o <= low), "released past {low:?}");
                // Nothing safe is held back.
                let safe = delivered.iter().filter(|&&(o, _)| o <= low).count();
                prop_assert_eq!(released.len(), safe);
                prop_assert_eq!(m.held(), delivered.len() - released.len());
            }
            // End of input: every shard sent Order::END, so everything is out.
            prop_assert_eq!(m.low_watermark(), Order::END);
            prop_assert_eq!(m.held(), 0);
            prop_assert_eq!(released, all);
        }
    }
}
