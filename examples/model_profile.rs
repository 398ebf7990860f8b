//! Where a model's inference time goes in tract: the optimized graph node by node, with the share
//! of the run time each node takes at one batch size, and the cost of a fresh tract session per
//! batch against one reused session (what `Scorer` does).
//!
//! `cargo run --release --example model_profile -- [MODEL.onnx] [BATCH]` (default: the embedded
//! model, batch 256). Times are wall clock, summed over many runs; on a busy machine compare
//! shares, not absolute values.

use std::time::{Duration, Instant};

use edgewatch::features::FEATURE_COUNT;
use edgewatch::model::EMBEDDED_MODEL;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bytes = match args.first().filter(|p| !p.is_empty()) {
        Some(path) => std::fs::read(path)?,
        None => EMBEDDED_MODEL.to_vec(),
    };
    let batch: usize = args.get(1).map(|b| b.parse()).transpose()?.unwrap_or(256);

    // The same preparation as `Scorer::from_bytes`.
    let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
    let outputs: Vec<String> = model
        .output_outlets()?
        .iter()
        .map(|o| model.outlet_label(*o).unwrap_or_default().to_string())
        .collect();
    let wanted: Vec<&str> = ["score", "class"]
        .into_iter()
        .filter(|n| outputs.iter().any(|o| o == n))
        .collect();
    model.select_outputs_by_name(&wanted)?;
    let n = model.symbols.sym("N");
    model.set_input_fact(
        0,
        InferenceFact::dt_shape(f32::datum_type(), tvec!(n.to_dim(), FEATURE_COUNT.to_dim())),
    )?;
    let optimized = model.into_optimized()?;
    let plan = optimized.clone().into_runnable()?;

    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let rows: Vec<f32> = (0..batch * FEATURE_COUNT)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 10_000) as f32 / 1000.0
        })
        .collect();
    let input = Tensor::from_shape(&[batch, FEATURE_COUNT], &rows)?;
    let iters = (200_000 / batch).max(200);

    let mut per_node = vec![Duration::ZERO; optimized.nodes().len()];
    let mut state = plan.spawn()?;
    for round in 0..2 {
        // The first round warms up; the second one counts.
        for _ in 0..iters {
            state.run_plan_with_eval(
                tvec!(input.clone().into_tvalue()),
                |ctx, st, node, inputs| {
                    let started = Instant::now();
                    let out = eval(ctx, st, node, inputs);
                    if round == 1 {
                        per_node[node.id] += started.elapsed();
                    }
                    out
                },
            )?;
        }
    }
    let total: Duration = per_node.iter().sum();
    println!(
        "optimized graph, batch {batch}: {} nodes; ns per flow in each node ({iters} runs)",
        optimized.nodes().len()
    );
    for node in optimized.nodes() {
        let t = per_node[node.id];
        let ns = t.as_nanos() as f64 / (iters * batch) as f64;
        let share = 100.0 * t.as_secs_f64() / total.as_secs_f64().max(1e-12);
        println!(
            "{:>3} {:>8.1} {:>5.1}%  {:<22} {:<28} {:?}",
            node.id,
            ns,
            share,
            node.op().name(),
            node.name,
            node.outputs[0].fact
        );
    }
    println!(
        "sum over nodes: {:.0} ns per flow",
        total.as_nanos() as f64 / (iters * batch) as f64
    );

    // Whole runs: a fresh session per batch (`plan.run`) against one reused session.
    let time = |f: &mut dyn FnMut() -> TractResult<()>| -> TractResult<f64> {
        for _ in 0..iters / 4 {
            f()?;
        }
        let started = Instant::now();
        for _ in 0..iters {
            f()?;
        }
        Ok(started.elapsed().as_nanos() as f64 / (iters * batch) as f64)
    };
    let fresh = time(&mut || {
        plan.run(tvec!(input.clone().into_tvalue()))?;
        Ok(())
    })?;
    let reused = time(&mut || {
        state.run(tvec!(input.clone().into_tvalue()))?;
        Ok(())
    })?;
    println!("whole run, ns per flow: fresh session {fresh:.0}, reused session {reused:.0}");
    Ok(())
}
