//! Where frames come from: capture files (`file`) and live interfaces (`live`, with the
//! TPACKET_V3 ring backend in `tpacket` on Linux).

pub mod file;
pub mod live;
#[cfg(target_os = "linux")]
pub mod tpacket;
