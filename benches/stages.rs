//! Criterion micro-benchmarks of the replay pipeline's stages, one group each:
//!
//! - `parse`: `parse_frame` over a realistic frame mix, per frame;
//! - `flow`: `FlowTable::process` (and the timers it fires) over those packets, per packet;
//! - `features`: the feature vector of every flow evaluation, alone (`compute`) and with the host
//!   context updates and look-ups the scorer does around it (`host_and_compute`), per evaluation;
//! - `inference`: the model on batches of 1 to 256 feature vectors, per flow.
//!
//! `cargo bench --bench stages` (add a group name, e.g. `-- parse`, to run one group). The frames
//! come from `EDGEWATCH_BENCH_PCAP` when it is set, else from the first 100,000 packets of the
//! bench capture (bench/gen_capture.py, seed 1), written once to `target/bench-stages-100000.pcap`.
//! `EDGEWATCH_MODEL=FILE` benches another model (as `cargo bench --bench inference` does).

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use edgewatch::capture::file::CaptureReader;
use edgewatch::config::Config;
use edgewatch::features::{FEATURE_COUNT, compute};
use edgewatch::flow::{EvalReason, Flow, FlowEvent, FlowTable};
use edgewatch::host::{HostTable, HostView};
use edgewatch::model::Scorer;
use edgewatch::packet::PacketMeta;
use edgewatch::parse::{LinkType, parse_frame};

const PACKETS: usize = 100_000;
/// Packets per dispatcher batch in replay (`capture.batch_size`'s default).
const BATCH: usize = 128;

struct RawFrame {
    link: LinkType,
    ts: u64,
    data: Vec<u8>,
    wire_len: u32,
}

fn capture_path() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGEWATCH_BENCH_PCAP") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let path = target.join(format!("bench-stages-{PACKETS}.pcap"));
    if !path.exists() {
        let status = Command::new("python3")
            .arg(root.join("bench/gen_capture.py"))
            .args(["--packets", &PACKETS.to_string(), "--seed", "1", "-q", "-o"])
            .arg(&path)
            .status()
            .expect("python3 runs bench/gen_capture.py (or set EDGEWATCH_BENCH_PCAP)");
        assert!(status.success(), "bench/gen_capture.py failed");
    }
    path
}

fn load_frames() -> Vec<RawFrame> {
    let path = capture_path();
    let mut reader = CaptureReader::open(&path).expect("the bench capture opens");
    let mut frames = Vec::new();
    while let Some(f) = reader.next_frame() {
        frames.push(RawFrame {
            link: f.link,
            ts: f.ts,
            data: f.data.to_vec(),
            wire_len: f.wire_len,
        });
        if frames.len() == PACKETS {
            break;
        }
    }
    frames
}

/// The frames as the dispatcher hands them on (numbered; the capture has no fragments).
fn packets(frames: &[RawFrame]) -> Vec<PacketMeta> {
    frames
        .iter()
        .filter_map(|f| parse_frame(f.link, f.ts, &f.data, f.wire_len).ok())
        .enumerate()
        .map(|(i, mut p)| {
            p.seq = i as u64 + 1;
            p
        })
        .collect()
}

/// One flow table fed as a replay shard worker feeds it: per batch, its packets, then the
/// timers up to the batch's last packet.
fn run_table(cfg: &Config, packets: &[PacketMeta], events: &mut Vec<FlowEvent>) -> FlowTable {
    let mut table = FlowTable::new(&cfg.flow, cfg.flow.max_flows);
    for batch in packets.chunks(BATCH) {
        for p in batch {
            table.process(p, events);
        }
        table.advance(batch[batch.len() - 1].ts, events);
    }
    table
}

fn bench_parse(c: &mut Criterion, frames: &[RawFrame]) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("parse_frame", |b| {
        b.iter(|| {
            for f in frames {
                let _ = black_box(parse_frame(f.link, f.ts, black_box(&f.data), f.wire_len));
            }
        })
    });
    g.finish();
}

fn bench_flow(c: &mut Criterion, cfg: &Config, packets: &[PacketMeta]) {
    let mut g = c.benchmark_group("flow");
    g.throughput(Throughput::Elements(packets.len() as u64));
    g.sample_size(20);
    g.bench_function("process", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(packets.len() / 4),
            |events| {
                let table = run_table(cfg, packets, events);
                black_box(table.len());
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Every flow evaluation of the packets, with the host views the scorer would give it.
struct Evaluation {
    flow: Flow,
    reason: EvalReason,
    src: [HostView; 2],
    dst: [HostView; 2],
}

/// The scorer's host-context work for one event; returns the views of an evaluation.
fn host_step(hosts: &mut HostTable, e: &FlowEvent) -> Option<[[HostView; 2]; 2]> {
    match e {
        FlowEvent::Start { order, flow } => {
            hosts.flow_started(flow, order.ts);
            None
        }
        FlowEvent::Eval {
            order,
            flow,
            first_outcome,
            ..
        } => {
            if let Some(outcome) = first_outcome {
                hosts.outcome(flow, *outcome, order.ts);
            }
            Some([
                hosts.view(flow.initiator, order.ts),
                hosts.view(flow.responder, order.ts),
            ])
        }
    }
}

fn bench_features(c: &mut Criterion, cfg: &Config, packets: &[PacketMeta]) {
    let mut events = Vec::new();
    let mut table = run_table(cfg, packets, &mut events);
    table.flush(&mut events);
    let mut hosts = HostTable::new(&cfg.host);
    let evals: Vec<Evaluation> = events
        .iter()
        .filter_map(|e| {
            let [src, dst] = host_step(&mut hosts, e)?;
            let FlowEvent::Eval { flow, reason, .. } = e else {
                return None;
            };
            Some(Evaluation {
                flow: *flow,
                reason: *reason,
                src,
                dst,
            })
        })
        .collect();

    let mut g = c.benchmark_group("features");
    g.throughput(Throughput::Elements(evals.len() as u64));
    let mut row = [0f32; FEATURE_COUNT];
    g.bench_function("compute", |b| {
        b.iter(|| {
            for e in &evals {
                compute(&e.flow, e.reason, &e.src, &e.dst, &mut row);
                black_box(&row);
            }
        })
    });
    g.bench_function("host_and_compute", |b| {
        b.iter_batched_ref(
            || HostTable::new(&cfg.host),
            |hosts| {
                for e in &events {
                    if let Some([src, dst]) = host_step(hosts, e)
                        && let FlowEvent::Eval { flow, reason, .. } = e
                    {
                        compute(flow, *reason, &src, &dst, &mut row);
                        black_box(&row);
                    }
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_inference(c: &mut Criterion) {
    let path = std::env::var("EDGEWATCH_MODEL").unwrap_or_default();
    let mut scorer = Scorer::load(&path).expect("model loads");
    let rows = common::feature_rows(256);
    let mut g = c.benchmark_group("inference");
    for batch in [1usize, 8, 32, 64, 128, 256] {
        let input = &rows[..batch * FEATURE_COUNT];
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| black_box(scorer.score(black_box(input)).unwrap()))
        });
    }
    g.finish();
}

fn stages(c: &mut Criterion) {
    let frames = load_frames();
    let cfg = Config::default();
    let packets = packets(&frames);
    bench_parse(c, &frames);
    bench_flow(c, &cfg, &packets);
    bench_features(c, &cfg, &packets);
    bench_inference(c);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = stages
}
criterion_main!(benches);
