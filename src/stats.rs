//! Counters of every stage, shared for reporting.
//!
//! Each stage counts in its own plain struct on the hot path and publishes a copy here once per
//! batch (a store per counter, never a lock per packet). `snapshot` reads them all for the
//! summary line, the periodic stats log and MQTT.

use std::sync::atomic::Ordering;

use portable_atomic::AtomicU64;
use serde::Serialize;

use crate::parse::Skip;

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Shared counters, one atomic each.
        #[derive(Debug, Default)]
        pub struct Stats {
            $(pub $name: AtomicU64,)*
            pub skipped: [AtomicU64; Skip::ALL.len()],
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct Snapshot {
            $(pub $name: u64,)*
            pub skipped: std::collections::BTreeMap<&'static str, u64>,
        }

        impl Stats {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    skipped: Skip::ALL
                        .iter()
                        .map(|s| (s.name(), self.skipped[s.index()].load(Ordering::Relaxed)))
                        .collect(),
                }
            }
        }
    };
}

counters!(
    // capture
    frames,
    bytes,
    packets,
    time_backwards,
    fragments_unattributed,
    // packets dropped at a full queue: capture -> dispatcher, dispatcher -> flow shards, and both
    capture_queue_drops,
    shard_queue_drops,
    queue_drops,
    // TCP SYNs shed by the dispatcher while the capture was behind, and times it began (live)
    shed_syns,
    shed_episodes,
    kernel_packets,
    kernel_drops,
    kernel_freezes,
    // flow workers
    flows_created,
    flows_active,
    flows_evicted,
    flow_emergencies,
    flow_workers_in_emergency,
    flow_evaluations,
    icmp_errors_attributed,
    icmp_errors_unattributed,
    packets_after_end,
    // scorer
    flows_scored,
    late_scores,
    inference_batches,
    inference_us,
    hosts_tracked,
    hosts_untracked,
    // alerts
    flows_above_threshold,
    alerts_emitted,
    alert_updates,
    alerts_suppressed,
    flows_aggregated,
    flows_unscored,
    incidents_evicted,
    alerts_written,
);

impl Stats {
    pub fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }
}

impl Snapshot {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}
