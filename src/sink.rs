//! Alert sinks: where finished alert records go. Today: JSON lines to a file or standard output.
//!
//! A sink receives records in order and writes each one as one line. It never blocks the
//! pipeline on anything but its own write.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};

use crate::alert::Alert;

pub trait AlertSink: Send {
    /// Writes a batch of alerts.
    fn write(&mut self, alerts: &[Alert]) -> io::Result<()>;
    /// Flushes and closes.
    fn close(&mut self) -> io::Result<()>;
}

/// JSON lines, one alert per line.
pub struct JsonLines {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl JsonLines {
    /// "-" is standard output; anything else is a file, appended to.
    pub fn open(target: &str) -> io::Result<JsonLines> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(io::stdout())
        } else {
            Box::new(OpenOptions::new().create(true).append(true).open(target)?)
        };
        Ok(JsonLines {
            out: BufWriter::new(out),
        })
    }

    pub fn new(out: Box<dyn Write + Send>) -> JsonLines {
        JsonLines {
            out: BufWriter::new(out),
        }
    }

    /// Writes alerts already serialized (one JSON document each), so that another sink (MQTT)
    /// can send the very same bytes.
    pub fn write_serialized(&mut self, docs: &[Vec<u8>]) -> io::Result<()> {
        for doc in docs {
            self.out.write_all(doc)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }
}

impl AlertSink for JsonLines {
    fn write(&mut self, alerts: &[Alert]) -> io::Result<()> {
        for a in alerts {
            serde_json::to_writer(&mut self.out, a)?;
            self.out.write_all(b"\n")?;
        }
        self.out.flush()
    }

    fn close(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
