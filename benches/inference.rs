//! Batched inference cost per flow, at several batch sizes: the embedded model, or the ONNX file
//! named by `EDGEWATCH_MODEL`. `cargo bench --bench inference` (plain timing loop; prints ns per
//! flow for each batch size). `ns/flow` is wall time; `cpu ns/flow` is the time the thread spent
//! on a CPU (Linux schedstat), which stays meaningful on a machine busy with other work.

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

fn main() {
    let path = std::env::var("EDGEWATCH_MODEL").unwrap_or_default();
    let mut scorer = Scorer::load(&path).expect("model loads");
    let rows = common::feature_rows(256);
    println!("model {} {}", scorer.info().name, scorer.info().version);
    println!(
        "{:>6} {:>12} {:>12} {:>12}",
        "batch", "ns/flow", "flows/s", "cpu ns/flow"
    );
    for batch in [1usize, 8, 32, 64, 128, 256] {
        let input = &rows[..batch * FEATURE_COUNT];
        for _ in 0..50 {
            black_box(scorer.score(input).unwrap());
        }
        let flows_target = 400_000;
        let iters = (flows_target / batch).max(200);
        let cpu_started = cpu_ns();
        let started = Instant::now();
        for _ in 0..iters {
            black_box(scorer.score(black_box(input)).unwrap());
        }
        let flows = (iters * batch) as f64;
        let ns = started.elapsed().as_nanos() as f64 / flows;
        let cpu = match (cpu_started, cpu_ns()) {
            (Some(a), Some(b)) => format!("{:.0}", (b - a) as f64 / flows),
            _ => "-".to_string(),
        };
        println!("{batch:>6} {ns:>12.0} {:>12.0} {cpu:>12}", 1e9 / ns);
    }
}
