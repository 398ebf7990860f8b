//! The whole pipeline through the binary: determinism, the alert format and its schema, the
//! model checks, the config and the CLI contract.

mod common;

use common::frames::*;
use common::*;

fn replay_alerts(capture: &str, extra: &[&str]) -> Vec<String> {
    let capture = data(capture);
    let mut args = vec!["replay", capture.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "replay failed: {}", stderr(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn replay_is_deterministic_across_workers_and_runs() {
    let one = replay_alerts("lab-mini.pcap", &["--workers", "1"]);
    assert!(!one.is_empty(), "the lab capture raises alerts");
    let four = replay_alerts("lab-mini.pcap", &["--workers", "4"]);
    assert_eq!(
        sorted(one.clone()),
        sorted(four),
        "1 and 4 workers give the same alerts"
    );
    let again = replay_alerts("lab-mini.pcap", &["--workers", "1"]);
    assert_eq!(
        one, again,
        "two runs give the same alerts in the same order"
    );
}

#[test]
fn features_are_deterministic_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for workers in ["1", "3"] {
        let out = dir.path().join(format!("f{workers}.csv"));
        let o = run(&[
            "features",
            data("lab-mini.pcap").to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--workers",
            workers,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        outputs.push(std::fs::read_to_string(&out).unwrap());
    }
    assert_eq!(
        outputs[0], outputs[1],
        "feature rows identical, in the same order"
    );
    assert!(
        outputs[0].lines().count() > 1000,
        "one row per evaluation of ~2000 flows"
    );
}

/// One attacker floods one victim with `flows` new flows (TCP SYNs from every source port, then
/// UDP to every port), 10 µs apart, while two other hosts hold an ordinary conversation.
fn single_pair_flood(flows: u32) -> Vec<u8> {
    const T0: u32 = 1_714_564_800;
    let (attacker, victim) = ([10, 9, 0, 66], [10, 9, 0, 10]);
    let mut records = Vec::new();
    for i in 0..flows {
        let us = i * 10;
        let frame = if i % 2 == 0 {
            ipv4_frame(attacker, victim, 6, &tcp(1024 + (i / 2) as u16, 80, 0x02))
        } else {
            ipv4_frame(attacker, victim, 17, &udp(5353, 1024 + (i / 2) as u16, 32))
        };
        records.push(rec(T0 + us / 1_000_000, us % 1_000_000, frame));
        if i % 100 == 0 {
            let (a, b) = ([10, 9, 0, 20], [10, 9, 0, 21]);
            let (src, dst, sport, dport) = if i % 200 == 0 {
                (a, b, 40000, 53)
            } else {
                (b, a, 53, 40000)
            };
            records.push(rec(
                T0 + us / 1_000_000,
                us % 1_000_000 + 1,
                ipv4_frame(src, dst, 17, &udp(sport, dport, 40)),
            ));
        }
    }
    pcap(1, 65535, &records)
}

#[test]
fn a_single_pair_flood_gives_the_same_output_for_any_worker_count() {
    // 3,000 flows of one pair, more than a quarter of max_flows: with 4 workers the pair's flows
    // must not be limited to one worker's quarter of the table.
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("flood.pcap");
    std::fs::write(&capture, single_pair_flood(3_000)).unwrap();
    let cfg = config(
        dir.path(),
        "[flow]\nmax_flows = 4096\n[model]\nthreshold = 0.0\n[alert]\nmax_alerts_per_s = 100000\n",
    );
    let mut outputs = Vec::new();
    for workers in ["1", "2", "4", "8"] {
        let alerts = dir.path().join(format!("alerts-{workers}.jsonl"));
        let csv = dir.path().join(format!("features-{workers}.csv"));
        let common = ["--config", cfg.to_str().unwrap(), "--workers", workers];
        let o = run(&[
            &[
                "replay",
                capture.to_str().unwrap(),
                "--alerts",
                alerts.to_str().unwrap(),
            ][..],
            &common,
        ]
        .concat());
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains("3030 packets, 3001 flows, "),
            "{workers} workers: {err}"
        );
        let o = run(&[
            &[
                "features",
                capture.to_str().unwrap(),
                "-o",
                csv.to_str().unwrap(),
            ][..],
            &common,
        ]
        .concat());
        assert!(o.status.success(), "{}", stderr(&o));
        let features = std::fs::read_to_string(&csv).unwrap();
        assert!(
            !features.contains(",evicted,"),
            "{workers} workers evicted flows"
        );
        outputs.push((workers, std::fs::read_to_string(&alerts).unwrap(), features));
    }
    let (_, alerts, features) = &outputs[0];
    assert!(
        alerts.lines().count() > 0,
        "threshold 0 alerts on the flood"
    );
    // Every flow is evaluated at least once (its probe or its end), one row each.
    let rows = features.lines().count() - 1;
    assert!(rows >= 3001, "{rows} evaluations of 3001 flows");
    for (workers, a, f) in &outputs[1..] {
        assert!(a == alerts, "{workers} workers: other alerts than 1 worker");
        assert!(
            f == features,
            "{workers} workers: other features than 1 worker"
        );
    }
}

#[test]
fn a_spoofed_syn_flood_is_one_flood_alert_about_its_victim() {
    // 20,000 SYNs to one web server, each from another source address and port, 100 µs apart
    // (10,000 per second, 2 s), as hping3 --rand-source sends them; no answers. With the
    // shipped model and default settings.
    const T0: u32 = 1_714_564_800;
    let victim = [10, 9, 0, 10];
    let records: Vec<_> = (0..20_000u32)
        .map(|i| {
            let us = i * 100;
            let src = [100 + (i >> 16) as u8, (i >> 8) as u8, i as u8, 1];
            let frame = ipv4_frame(src, victim, 6, &tcp(1024 + (i % 60000) as u16, 80, 0x02));
            rec(T0 + us / 1_000_000, us % 1_000_000, frame)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("spoofed.pcap");
    std::fs::write(&capture, pcap(1, 65535, &records)).unwrap();
    let alerts = replay_alerts(capture.to_str().unwrap(), &[]);
    let parsed: Vec<serde_json::Value> = alerts
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: std::collections::HashSet<&str> = parsed
        .iter()
        .map(|a| edgewatch(a)["alert_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "one incident: {alerts:#?}");
    let first = &parsed[0];
    assert_eq!(edgewatch(first)["class"], "flood");
    assert_eq!(first["dest_ip"], "10.9.0.10");
    assert_eq!(first["dest_port"], 80);
    assert!(first.get("src_ip").is_none(), "many sources: {first}");
    // Raised in the flood's first second: at its first flows' probe evaluation, 0.5 s on.
    let raised = first["timestamp"].as_str().unwrap();
    assert!(raised.starts_with("2024-05-01T12:00:00."), "{raised}");
    let last = parsed.last().unwrap();
    assert_eq!(edgewatch(last)["final"], true);
    let evidence = &edgewatch(last)["evidence"];
    assert!(evidence["flows"].as_u64().unwrap() > 19_000, "{evidence}");
    assert!(evidence["sources"].as_u64().unwrap() >= 1_000, "{evidence}");
    assert!(evidence.get("top_sources").is_none(), "{evidence}");
    // Once it is alerted, the flood's attempts count there unscored, each decided at its own
    // turn: the alerts do not depend on how the evaluations were batched for the model.
    let one = config(dir.path(), "[model]\nbatch_size = 1\n");
    let one_by_one = replay_alerts(
        capture.to_str().unwrap(),
        &["--config", one.to_str().unwrap()],
    );
    assert_eq!(alerts, one_by_one, "batches of 1 and of 256");
}

#[test]
fn icmp_errors_about_flows_never_seen_make_no_flow() {
    // A capture that holds only the answers to a UDP scan (one direction of the traffic): the
    // victim's port-unreachable errors, each quoting a probe of another port. Each error is
    // evidence about its probe's flow, which is not here; none becomes a flow of its own (it
    // would blame the victim), whatever the number of workers.
    const T0: u32 = 1_714_564_800;
    let (scanner, victim) = ([10, 8, 0, 66], [10, 8, 0, 10]);
    let records: Vec<_> = (0..200u16)
        .map(|i| {
            let probe = ipv4_frame(scanner, victim, 17, &udp(40000, 1000 + i, 0));
            let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
            icmp.extend_from_slice(&probe[14..14 + 28]);
            let us = u32::from(i) * 1000;
            rec(T0, us, ipv4_frame(victim, scanner, 1, &icmp))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("answers.pcap");
    std::fs::write(&capture, pcap(1, 65535, &records)).unwrap();
    for workers in ["1", "4"] {
        let o = run(&["replay", capture.to_str().unwrap(), "--workers", workers]);
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains("replay: 200 packets, 0 flows, 0 alerts, 0 skipped"),
            "{workers} workers: {err}"
        );
    }
}

fn validator(path: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn edgewatch(alert: &serde_json::Value) -> &serde_json::Value {
    &alert["alert"]["context"]["edgewatch"]
}

#[test]
fn alerts_match_our_schema_and_suricatas_and_name_each_episode_once() {
    // docs/alert-schema.json, and Suricata's own EVE schema (tests/data/suricata/README.md).
    let ours = validator("docs/alert-schema.json");
    let suricata = validator("tests/data/suricata/eve-schema.json");
    let lines = replay_alerts("lab-mini.pcap", &[]);
    let alerts: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (line, alert) in lines.iter().zip(&alerts) {
        for (name, v) in [("ours", &ours), ("suricata", &suricata)] {
            let errors: Vec<String> = v.iter_errors(alert).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{name}: {line}: {errors:?}");
        }
    }
    // Each alert's records: update 0, 1, 2, ... with the same id, the last one final, and no
    // record after it; one alert per (behaviour, attacker, victim) in this short capture.
    let mut by_id: std::collections::BTreeMap<String, Vec<&serde_json::Value>> = Default::default();
    for a in &alerts {
        by_id
            .entry(edgewatch(a)["alert_id"].as_str().unwrap().to_string())
            .or_default()
            .push(a);
    }
    let mut episodes = std::collections::HashSet::new();
    for (id, records) in &by_id {
        let updates: Vec<u64> = records
            .iter()
            .map(|a| edgewatch(a)["update"].as_u64().unwrap())
            .collect();
        assert_eq!(
            updates,
            (0..records.len() as u64).collect::<Vec<_>>(),
            "{id}"
        );
        let finals: Vec<bool> = records
            .iter()
            .map(|a| edgewatch(a)["final"].as_bool().unwrap())
            .collect();
        assert_eq!(
            finals.iter().filter(|f| **f).count(),
            1,
            "{id}: one final record"
        );
        assert!(
            finals[finals.len() - 1],
            "{id}: the final record is the last"
        );
        let first = records[0];
        let key = (
            edgewatch(first)["class"].as_str().unwrap().to_string(),
            first["src_ip"].as_str().map(String::from),
            first["dest_ip"].as_str().map(String::from),
        );
        assert!(episodes.insert(key.clone()), "{key:?} alerted twice");
    }
    // The hping3 SYN flood from 10.77.0.66 to port 22: one alert about its victim, evidence in
    // numbers, thousands of flows covered.
    let flood: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| edgewatch(a)["class"] == "flood" && a["dest_ip"] == "10.77.0.10")
        .collect();
    let last = flood.last().expect("the SYN flood is alerted");
    let evidence = &edgewatch(last)["evidence"];
    assert!(edgewatch(last)["count"].as_u64().unwrap() > 1000, "{last}");
    assert!(
        evidence["packets_per_s"].as_f64().unwrap() > 1000.0,
        "{last}"
    );
    assert_eq!(evidence["top_sources"][0]["ip"], "10.77.0.66", "{last}");
    assert!(
        flood.iter().all(|a| a.get("src_port").is_none()),
        "varying source ports are omitted"
    );
    let lines_again = replay_alerts("lab-mini.pcap", &[]);
    assert_eq!(lines, lines_again);
}

#[test]
fn alerts_file_and_summary_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let o = run(&[
        "replay",
        data("lab-mini.pcap").to_str().unwrap(),
        "--alerts",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty(), "alerts went to the file");
    // The summary counts alerts; the file also holds their updates.
    let written = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            let a: serde_json::Value = serde_json::from_str(l).unwrap();
            edgewatch(&a)["alert_id"].as_str().unwrap().to_string()
        })
        .collect::<std::collections::HashSet<_>>()
        .len();
    let err = stderr(&o);
    let summary = err
        .lines()
        .find(|l| l.starts_with("replay: "))
        .expect("summary line");
    assert!(
        summary.contains(&format!(", {written} alerts,")),
        "{summary}"
    );
    assert!(summary.contains("11111 packets"), "{summary}");
    assert!(summary.ends_with("packets/s"), "{summary}");
}

#[test]
fn rate_limit_caps_alerts_and_threshold_override_applies() {
    let dir = tempfile::tempdir().unwrap();
    // Threshold 0 and an alert per evaluation: every evaluation is an alert; one alert per
    // second at most.
    let cfg = config(
        dir.path(),
        "[model]\nthreshold = 0.0\n[alert]\nmode = \"flow\"\nmax_alerts_per_s = 1.0\n",
    );
    let limited = replay_alerts("lab-mini.pcap", &["--config", cfg.to_str().unwrap()]);
    let cfg = config(
        dir.path(),
        "[model]\nthreshold = 0.0\n[alert]\nmode = \"flow\"\nmax_alerts_per_s = 1000000.0\n",
    );
    let all = replay_alerts("lab-mini.pcap", &["--config", cfg.to_str().unwrap()]);
    assert!(
        all.len() > 200,
        "threshold 0 alerts on every evaluation: {}",
        all.len()
    );
    // The capture spans 58 s: one alert per second at most, after a burst of one.
    assert!(limited.len() <= 59, "rate limited to {}", limited.len());
    assert!(
        limited.len() >= 20,
        "the limit still lets alerts through: {}",
        limited.len()
    );
}

#[test]
fn models_are_checked_at_load() {
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/models/");
    let o = run(&[
        "replay",
        data("vlan.pcap").to_str().unwrap(),
        "--model",
        &format!("{models}wrong-schema.onnx"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("was trained on feature schema ew1-60-0000000000000000"),
        "{}",
        stderr(&o)
    );
    let o = run(&["validate", "--model", &format!("{models}wrong-width.onnx")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("expects 60 features, the feature schema has 61"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "validate",
        "--model",
        &format!("{models}../not_a_capture.txt"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a valid ONNX model"),
        "{}",
        stderr(&o)
    );
    // A graph that passes the contract's checks (input width, outputs, metadata) and fails when
    // tract optimizes it: refused at load too.
    let broken = format!("{models}broken-graph.onnx");
    for args in [
        vec![
            "replay",
            data("vlan.pcap").to_str().unwrap(),
            "--model",
            &broken,
        ],
        vec!["validate", "--model", &broken],
    ] {
        let o = run(&args);
        assert_eq!(
            o.status.code(),
            Some(if args[0] == "replay" { 2 } else { 1 })
        );
        assert!(
            stderr(&o).contains("broken-graph.onnx cannot run: ")
                && stderr(&o).contains("broadcast 61 against 60"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    for good in ["baseline-int8.onnx", "score-only.onnx"] {
        let o = run(&["validate", "--model", &format!("{models}{good}")]);
        assert!(o.status.success(), "{good}: {}", stderr(&o));
    }
}

#[test]
fn int8_and_f32_models_raise_the_same_alerts_on_the_lab_capture() {
    let int8 = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/models/baseline-int8.onnx"
    );
    let f32 = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/models/baseline.onnx"
    );
    let f32_alerts = replay_alerts("lab-mini.pcap", &["--model", f32]);
    let int8_alerts = replay_alerts("lab-mini.pcap", &["--model", int8]);
    // Flows alerted per (source, destination, signature): the same pairs and classes, and
    // counts within 1 % or one flow (a flow whose score sits right at the threshold may fall
    // either way). An alert's last record has its count.
    let flows = |alerts: &[String]| {
        let mut last = std::collections::BTreeMap::<String, (String, u64)>::new();
        for l in alerts {
            let a: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = format!(
                "{} {} {}",
                a["src_ip"], a["dest_ip"], a["alert"]["signature"]
            );
            let e = edgewatch(&a);
            let id = e["alert_id"].as_str().unwrap().to_string();
            last.insert(id, (key, e["count"].as_u64().unwrap()));
        }
        let mut m = std::collections::BTreeMap::<String, u64>::new();
        for (key, count) in last.into_values() {
            *m.entry(key).or_default() += count;
        }
        m
    };
    let (f, i) = (flows(&f32_alerts), flows(&int8_alerts));
    assert!(
        !f.is_empty(),
        "the f32 model raises alerts on the lab capture"
    );
    assert_eq!(
        f.keys().collect::<Vec<_>>(),
        i.keys().collect::<Vec<_>>(),
        "int8 {i:?} vs f32 {f:?}"
    );
    for (k, n) in &f {
        assert!(
            n.abs_diff(i[k]) <= (n / 100).max(1),
            "{k}: int8 {} flows, f32 {n}",
            i[k]
        );
    }
}

#[test]
fn generate_config_validates_and_unknown_keys_are_named() {
    let o = run(&["generate-config"]);
    assert!(o.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &String::from_utf8(o.stdout).unwrap());
    let o = run(&["validate", "--config", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("config ok; model "));

    let bad = config(dir.path(), "[flow]\nmax_flowz = 10\n");
    let o = run(&["validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("max_flowz"), "{}", stderr(&o));
    let o = run(&[
        "replay",
        data("vlan.pcap").to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "a broken config is bad input");
}

#[test]
fn schema_json_matches_the_agent() {
    let o = run(&["features", "--schema"]);
    assert!(o.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/feature_schema.json"
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        committed,
        "models/feature_schema.json is stale: regenerate it with `edgewatch features --schema`, then the models"
    );
}

#[test]
fn an_output_that_cannot_be_written_fails_the_run() {
    // The stage that writes stops at the first failed write, and the reader stops with it.
    let pcap = data("lab-mini.pcap");
    for args in [
        ["features", pcap.to_str().unwrap(), "-o", "/dev/full"],
        ["replay", pcap.to_str().unwrap(), "--alerts", "/dev/full"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("edgewatch: error: writing output failed: No space left on device"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}
