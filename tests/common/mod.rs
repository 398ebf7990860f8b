//! Helpers shared by the integration tests: run the real binary, read what it wrote.
#![allow(dead_code)]

pub mod frames;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgewatch")
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("edgewatch runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One row of `edgewatch features` output, with the flow's counts recovered from the features.
#[derive(Debug, Clone)]
pub struct Row {
    pub cols: HashMap<String, String>,
}

impl Row {
    pub fn s(&self, k: &str) -> &str {
        self.cols.get(k).unwrap_or_else(|| panic!("no column {k}"))
    }
    pub fn f(&self, k: &str) -> f64 {
        self.s(k)
            .parse()
            .unwrap_or_else(|_| panic!("column {k} = {:?} is not a number", self.s(k)))
    }
    /// A `*_log1p` feature back as the count it compresses.
    pub fn count(&self, k: &str) -> u64 {
        self.f(k).exp_m1().round() as u64
    }
    pub fn is_final(&self) -> bool {
        matches!(
            self.s("eval_reason"),
            "tcp_end" | "idle" | "evicted" | "flush"
        )
    }
    pub fn endpoints(&self) -> String {
        format!(
            "{} {}:{} -> {}:{}",
            self.s("proto"),
            self.s("src_ip"),
            self.s("src_port"),
            self.s("dest_ip"),
            self.s("dest_port")
        )
    }
}

/// Runs `features` on a capture and returns every row (with extra args, e.g. a config).
pub fn features(capture: &Path, extra: &[&str]) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.csv");
    let mut args = vec![
        "features",
        capture.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "features failed: {}", stderr(&o));
    read_csv(&out)
}

pub fn read_csv(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .expect("header")
        .split(',')
        .map(String::from)
        .collect();
    lines
        .map(|l| {
            let vals: Vec<&str> = l.split(',').collect();
            assert_eq!(vals.len(), header.len(), "row width: {l}");
            Row {
                cols: header
                    .iter()
                    .cloned()
                    .zip(vals.iter().map(|v| v.to_string()))
                    .collect(),
            }
        })
        .collect()
}

/// The final evaluation of each flow, by endpoints.
pub fn final_rows(rows: &[Row]) -> HashMap<String, Row> {
    let mut out = HashMap::new();
    for r in rows.iter().filter(|r| r.is_final()) {
        assert!(
            out.insert(r.endpoints(), r.clone()).is_none(),
            "two final rows for {}",
            r.endpoints()
        );
    }
    out
}

/// Writes a config file into `dir` and returns its path.
pub fn config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("edgewatch.toml");
    std::fs::write(&p, text).unwrap();
    p
}
