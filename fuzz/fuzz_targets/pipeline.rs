//! Whole records through the pipeline in one thread, as the agent's threads would take them:
//! parse, dispatch (order, fragments, two shards), flow tables (small, so eviction and emergency
//! mode happen), merge, host context, features, the model, the alert engine (threshold 0, so
//! every evaluation reaches it) and the alert encoder.
//!
//! Input: records of [timestamp: 8 bytes, big endian, any value][link type: 1][length: 2][frame],
//! until the input ends. Timestamps are taken as they come (going backwards, past the year 9999,
//! up to u64::MAX), so every clock the capture reader or the kernel could hand on is covered.
//! Checks beyond "no panic": every alert encodes to JSON whose times are RFC 3339 in UTC.
#![no_main]

use std::sync::Mutex;

use crossbeam_channel::{Receiver, bounded};
use edgewatch::alert::Alert;
use edgewatch::incident::AlertEngine;
use edgewatch::config::Config;
use edgewatch::dispatch::{Batch, Dispatcher, WhenFull};
use edgewatch::flow::{FlowTable, Order};
use edgewatch::host::HostTable;
use edgewatch::model::Scorer;
use edgewatch::parse::{LinkType, parse_frame};
use edgewatch::scoring::{Merger, Mode, ScoringStage};
use libfuzzer_sys::fuzz_target;

const SHARDS: usize = 2;

/// The embedded model, loaded once and handed from input to input.
static SCORER: Mutex<Option<Scorer>> = Mutex::new(None);

struct Shards {
    rx: Vec<Receiver<Batch>>,
    tables: Vec<FlowTable>,
    merger: Merger,
}

impl Shards {
    /// Takes every batch the dispatcher has sent through the tables and the merger, into the
    /// scoring stage, as the shard workers and the scorer thread would.
    fn drain(&mut self, stage: &mut ScoringStage, alerts: &mut Vec<Alert>) {
        let mut released = Vec::new();
        for (shard, rx) in self.rx.iter().enumerate() {
            while let Ok(batch) = rx.try_recv() {
                let mut events = Vec::new();
                for p in &batch.packets {
                    self.tables[shard].process(p, &mut events);
                }
                self.tables[shard].advance(batch.reached.ts, &mut events);
                self.merger
                    .push(shard, events, batch.reached, &mut released);
                stage.handle(&mut released, alerts).expect("no output to fail");
            }
        }
        let low = self.merger.low_watermark();
        if low != Order::END {
            stage.settle(low.ts, true, alerts).expect("no output to fail");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = Config::default();
    cfg.flow.max_flows = 64;
    let scorer = SCORER
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_else(|| Scorer::load(&cfg.model.path).expect("the embedded model loads"));
    let engine = AlertEngine::new(&cfg.alert, "fuzz".into(), scorer.info(), 0.0);
    let mut stage = ScoringStage::new(
        HostTable::new(&cfg.host),
        Mode::Alerts {
            scorer,
            engine: Box::new(engine),
            batch_size: 16,
        },
    );
    let (tx, rx): (Vec<_>, Vec<_>) = (0..SHARDS).map(|_| bounded::<Batch>(1024)).unzip();
    let mut dispatcher = Dispatcher::new(tx, 8, 16, WhenFull::DropNewest);
    let mut shards = Shards {
        rx,
        tables: (0..SHARDS)
            .map(|_| FlowTable::new(&cfg.flow, cfg.flow.max_flows / SHARDS))
            .collect(),
        merger: Merger::new(SHARDS),
    };
    let mut alerts = Vec::new();

    let mut rest = data;
    while let [t0, t1, t2, t3, t4, t5, t6, t7, link, l0, l1, tail @ ..] = rest {
        let ts = u64::from_be_bytes([*t0, *t1, *t2, *t3, *t4, *t5, *t6, *t7]);
        let len = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        let link = LinkType::ALL[usize::from(*link) % LinkType::ALL.len()];
        if let Ok(p) = parse_frame(link, ts, frame, frame.len() as u32) {
            dispatcher.push(p);
        }
        shards.drain(&mut stage, &mut alerts);
    }
    dispatcher.flush();
    shards.drain(&mut stage, &mut alerts);
    drop(dispatcher);
    let mut released = Vec::new();
    for shard in 0..SHARDS {
        let mut events = Vec::new();
        shards.tables[shard].flush(&mut events);
        shards.merger.push(shard, events, Order::END, &mut released);
        stage.handle(&mut released, &mut alerts).expect("no output to fail");
    }
    stage.finish(&mut alerts).expect("no output to fail");

    for alert in &alerts {
        let json = serde_json::to_string(alert).expect("an alert encodes");
        for t in [&alert.timestamp, &alert.flow.start, &alert.flow.end] {
            assert_eq!(t.len(), 27, "{json}");
            assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{json}");
        }
    }
    if let Mode::Alerts { scorer, .. } = stage.into_mode() {
        *SCORER.lock().unwrap_or_else(|e| e.into_inner()) = Some(scorer);
    }
});
