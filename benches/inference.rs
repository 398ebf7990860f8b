//! Batched inference cost per flow, at several batch sizes: the embedded model, or the ONNX file
//! named by `EDGEWATCH_MODEL`. `cargo bench --bench inference` (plain timing loop; prints ns per
//! flow for each batch size: the median of `ROUNDS` rounds, default 7, with the fastest and the
//! slowest). `ns/flow` is wall time; `cpu ns/flow` (median) is the time the thread spent on a CPU
//! (Linux schedstat), which stays meaningful on a machine busy with other work.

mod common;

use std::hint::black_box;
use std::time::Instant;

use edgewatch::features::FEATURE_COUNT;
use edgewatch::model::Scorer;

/// Nanoseconds this thread has run on a CPU, when the kernel says (Linux).
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Timing rounds per batch size (`ROUNDS`, default 7): a shared machine slows some of them down,
/// so the median is the figure to quote, with the fastest and slowest beside it.
fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(7)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let path = std::env::var("EDGEWATCH_MODEL").unwrap_or_default();
    let mut scorer = Scorer::load(&path).expect("model loads");
    let rows = common::feature_rows(256);
    let rounds = rounds();
    println!(
        "model {} {}; {rounds} rounds per batch size",
        scorer.info().name,
        scorer.info().version
    );
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>12} {:>14}",
        "batch", "ns/flow", "min", "max", "flows/s", "cpu ns/flow"
    );
    for batch in [1usize, 8, 32, 64, 128, 256] {
        let input = &rows[..batch * FEATURE_COUNT];
        for _ in 0..50 {
            black_box(scorer.score(input).unwrap());
        }
        let flows_target = 200_000;
        let iters = (flows_target / batch).max(100);
        let flows = (iters * batch) as f64;
        let (mut wall, mut cpu) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let cpu_started = cpu_ns();
            let started = Instant::now();
            for _ in 0..iters {
                black_box(scorer.score(black_box(input)).unwrap());
            }
            wall.push(started.elapsed().as_nanos() as f64 / flows);
            if let (Some(a), Some(b)) = (cpu_started, cpu_ns()) {
                cpu.push((b - a) as f64 / flows);
            }
        }
        let (min, max) = (
            wall.iter().copied().fold(f64::MAX, f64::min),
            wall.iter().copied().fold(0.0, f64::max),
        );
        let ns = median(&mut wall);
        let cpu = if cpu.len() == rounds {
            format!("{:.0}", median(&mut cpu))
        } else {
            "-".to_string()
        };
        println!(
            "{batch:>6} {ns:>10.0} {min:>10.0} {max:>10.0} {:>12.0} {cpu:>14}",
            1e9 / ns
        );
    }
}
