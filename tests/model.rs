//! The Rust inference pinned to the reference runtime: golden vectors written by
//! models/make_baseline_model.py with onnxruntime, for the f32 and the int8 (QDQ) model.

use edgewatch::features::FEATURE_COUNT;
use edgewatch::model::Scorer;

fn golden() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/models/golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn inputs(g: &serde_json::Value) -> Vec<f32> {
    let rows = g["inputs"].as_array().unwrap();
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(flat.len(), rows.len() * FEATURE_COUNT);
    flat
}

fn worst_gap(scorer: &mut Scorer, x: &[f32], reference: &serde_json::Value) -> f32 {
    let scores = scorer.score(x).unwrap();
    let want: Vec<f32> = reference["score"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(scores.len(), want.len());
    let classes = reference["class"].as_array().unwrap();
    for (i, s) in scores.iter().enumerate() {
        let row: Vec<f64> = classes[i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let best = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
        // Ties between classes may break either way; otherwise the argmax must agree.
        let second = row
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != best)
            .map(|(_, v)| *v)
            .fold(f64::MIN, f64::max);
        if row[best] - second > 0.05 {
            assert_eq!(s.class, Some(best), "row {i}: class");
        }
    }
    scores
        .iter()
        .zip(&want)
        .map(|(s, w)| (s.anomaly - w).abs())
        .fold(0.0, f32::max)
}

#[test]
fn f32_model_matches_onnxruntime() {
    let g = golden();
    let mut scorer = Scorer::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/models/baseline.onnx"
    ))
    .expect("baseline loads");
    assert_eq!(
        scorer.info().classes,
        ["scan", "flood", "bruteforce", "slowdos"]
    );
    let gap = worst_gap(&mut scorer, &inputs(&g), &g["f32"]);
    assert!(gap < 1e-4, "tract f32 vs onnxruntime f32: worst gap {gap}");
}

#[test]
fn int8_model_matches_onnxruntime_and_stays_near_f32() {
    let g = golden();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/models/baseline-int8.onnx"
    );
    let mut scorer = Scorer::load(path).expect("int8 QDQ model loads");
    let x = inputs(&g);
    let gap_ort = worst_gap(&mut scorer, &x, &g["int8"]);
    assert!(
        gap_ort < 0.02,
        "tract int8 vs onnxruntime int8: worst gap {gap_ort}"
    );
    let gap_f32 = worst_gap(&mut scorer, &x, &g["f32"]);
    assert!(
        gap_f32 < 0.05,
        "tract int8 vs f32 reference: worst gap {gap_f32}"
    );
    eprintln!(
        "tract int8 vs onnxruntime int8 worst gap {gap_ort:.5}; vs f32 reference {gap_f32:.5}"
    );
}

#[test]
fn batches_of_any_size_give_the_same_scores() {
    let g = golden();
    let x = inputs(&g);
    let mut scorer = Scorer::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/models/baseline.onnx"
    ))
    .unwrap();
    let all = scorer.score(&x).unwrap();
    for (i, row) in x.chunks(FEATURE_COUNT).enumerate() {
        let one = scorer.score(row).unwrap();
        assert!((one[0].anomaly - all[i].anomaly).abs() < 1e-6);
    }
    assert!(scorer.score(&[]).unwrap().is_empty());
}
