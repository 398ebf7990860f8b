//! A build without the cargo feature `mqtt`: opening refuses every broker, so none of these
//! types is ever made and the agent wires MQTT the same way in every build.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::status::Identity;
use super::{DrainOutcome, MqttError};
use crate::alert::Alert;
use crate::config::MqttConfig;
use crate::signals::Interrupt;
use crate::sink::{AlertSink, JsonLines};
use crate::stats::Stats;

// Never made; fields keep them private to this module.
pub struct Mqtt(());
pub struct MqttSink(());
pub struct PublisherWorker(());
pub struct Publisher(());

const NEVER: &str = "Mqtt::open refuses every broker in a build without MQTT";

impl Mqtt {
    pub fn open(
        _cfg: &MqttConfig,
        url: &str,
        _state_dir: &Path,
        _identity: Identity,
    ) -> Result<Mqtt, MqttError> {
        Err(MqttError::Url(format!(
            "{url}: this edgewatch was built without MQTT support (cargo feature `mqtt`)"
        )))
    }

    pub fn sink(&self, _lines: JsonLines) -> MqttSink {
        unreachable!("{NEVER}")
    }

    pub fn publisher(
        self,
        _stats: Arc<Stats>,
        _interval: Duration,
    ) -> (PublisherWorker, Publisher) {
        unreachable!("{NEVER}")
    }
}

impl AlertSink for MqttSink {
    fn write(&mut self, _alerts: &[Alert]) -> io::Result<()> {
        unreachable!("{NEVER}")
    }

    fn close(&mut self) -> io::Result<()> {
        unreachable!("{NEVER}")
    }
}

impl PublisherWorker {
    pub fn run(self) -> DrainOutcome {
        unreachable!("{NEVER}")
    }
}

impl Publisher {
    pub fn finish(&self, _timeout: Duration, _interrupt: Interrupt) {
        unreachable!("{NEVER}")
    }

    pub fn outcome_after_panic(&self) -> DrainOutcome {
        unreachable!("{NEVER}")
    }
}
