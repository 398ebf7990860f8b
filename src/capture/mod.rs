//! Where frames come from: capture files (`file`) and live interfaces (`live`).

pub mod file;
pub mod live;
