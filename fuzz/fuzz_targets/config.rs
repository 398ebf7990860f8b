//! Config parsing and validation on arbitrary TOML text: an accepted config must hold what
//! validation promises and what start-up relies on (every `*_s` value is a time span that
//! `Duration::from_secs_f64` takes), and an error must name the origin.
#![no_main]

use std::time::Duration;

use edgewatch::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz.toml") {
        Ok(c) => {
            assert!(c.capture.batch_size >= 1 && c.capture.batch_size <= 4096);
            assert!(c.flow.workers <= 64);
            assert!(c.host.long_window_s >= c.host.short_window_s);
            let spans = [
                c.flow.tcp_handshake_timeout_s,
                c.flow.tcp_established_timeout_s,
                c.flow.tcp_closed_timeout_s,
                c.flow.udp_timeout_s,
                c.flow.icmp_timeout_s,
                c.flow.active_timeout_s,
                c.flow.probe_eval_s,
                c.host.short_window_s,
                c.host.long_window_s,
                c.alert.incident_idle_s,
                c.alert.update_interval_s,
                c.output.stats_interval_s,
                c.mqtt.keepalive_s,
                c.mqtt.reconnect_min_s,
                c.mqtt.reconnect_max_s,
            ];
            for s in spans {
                assert!(s > 0.0 && Duration::try_from_secs_f64(s).is_ok(), "{s}");
            }
            assert!(!c.state_dir.is_empty());
            assert!((1..=64).contains(&c.workers()));
        }
        Err(e) => assert!(e.to_string().contains("fuzz.toml"), "{e}"),
    }
});
