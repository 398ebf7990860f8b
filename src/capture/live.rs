//! Live capture from network interfaces (pnet's AF_PACKET socket on Linux, cargo feature
//! `pnet`, on by default).
//!
//! The OS sits behind [`LinkReceiver`], so the capture loop runs the same on a real interface
//! and on frames a test hands it. The loop parses each frame into a `PacketMeta` at once and
//! hands batches on; packet bytes never leave this thread. It never blocks on a full queue:
//! the batch is dropped and counted.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};

use crate::packet::{Micros, PacketMeta};
use crate::parse::{LinkType, Skip, parse_frame};

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("no interface named {name} (interfaces here: {known})")]
    NoSuchInterface { name: String, known: String },
    #[error(
        "cannot open a packet socket on {name}: {error}. Capturing needs the capability \
         CAP_NET_RAW, and only that: run the packaged service (systemd or OpenWrt), which grants \
         it to an unprivileged user, or give it to the binary (setcap cap_net_raw+ep \
         $(command -v edgewatch)), or run as root"
    )]
    Permission { name: String, error: io::Error },
    #[error("cannot capture on {name}: {error}")]
    Open { name: String, error: io::Error },
    #[error("interface {name} is not an Ethernet-like interface")]
    NotEthernet { name: String },
    #[error(
        "cannot capture on {name}: this edgewatch was built without a live capture backend \
         (cargo feature \"pnet\"); it can only replay captures"
    )]
    NoBackend { name: String },
}

/// A source of raw frames. `Ok(None)` means nothing arrived within the read timeout.
pub trait LinkReceiver: Send {
    fn recv(&mut self) -> io::Result<Option<&[u8]>>;
}

/// The wall clock, behind a trait so tests can drive time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Micros;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as Micros)
    }
}

#[cfg(feature = "pnet")]
struct PnetReceiver {
    rx: Box<dyn pnet_datalink::DataLinkReceiver>,
}

#[cfg(feature = "pnet")]
impl LinkReceiver for PnetReceiver {
    fn recv(&mut self) -> io::Result<Option<&[u8]>> {
        match self.rx.next() {
            Ok(frame) => Ok(Some(frame)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// How long a capture thread waits for a frame before it checks for shutdown and hands on a
/// partial batch.
pub const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// Opens an interface for capture: a build without a capture backend says so.
#[cfg(not(feature = "pnet"))]
pub fn open(name: &str, _promiscuous: bool) -> Result<Box<dyn LinkReceiver>, LiveError> {
    Err(LiveError::NoBackend {
        name: name.to_string(),
    })
}

/// Opens an interface for capture.
#[cfg(feature = "pnet")]
pub fn open(name: &str, promiscuous: bool) -> Result<Box<dyn LinkReceiver>, LiveError> {
    let interfaces = pnet_datalink::interfaces();
    let Some(iface) = interfaces.iter().find(|i| i.name == name) else {
        let known = interfaces
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(LiveError::NoSuchInterface {
            name: name.to_string(),
            known,
        });
    };
    let config = pnet_datalink::Config {
        read_timeout: Some(READ_TIMEOUT),
        promiscuous,
        read_buffer_size: 65536,
        ..Default::default()
    };
    match pnet_datalink::channel(iface, config) {
        Ok(pnet_datalink::Channel::Ethernet(_tx, rx)) => Ok(Box::new(PnetReceiver { rx })),
        Ok(_) => Err(LiveError::NotEthernet {
            name: name.to_string(),
        }),
        // The OS error is part of the message, not a `source`: printed once.
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => {
            Err(LiveError::Permission {
                name: name.to_string(),
                error,
            })
        }
        Err(error) => Err(LiveError::Open {
            name: name.to_string(),
            error,
        }),
    }
}

/// Counters of one capture thread.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub queue_drops: AtomicU64,
    pub skipped: [AtomicU64; Skip::ALL.len()],
}

/// Reads frames until `stop` is set, handing batches of parsed packets to `out`.
pub fn capture_loop(
    rx: &mut dyn LinkReceiver,
    clock: &dyn Clock,
    batch_size: usize,
    stop: &AtomicBool,
    out: &Sender<Vec<PacketMeta>>,
    counters: &Arc<CaptureCounters>,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(batch_size);
    let mut last_send = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let got = rx.recv()?;
        if let Some(frame) = got {
            counters.frames.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            match parse_frame(LinkType::Ethernet, clock.now(), frame, frame.len() as u32) {
                Ok(meta) => batch.push(meta),
                Err(skip) => {
                    counters.skipped[skip.index()].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if batch.len() >= batch_size || (!batch.is_empty() && last_send.elapsed() >= READ_TIMEOUT) {
            last_send = Instant::now();
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            match out.try_send(full) {
                Ok(()) => {}
                Err(TrySendError::Full(b)) => {
                    counters
                        .queue_drops
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => return Ok(()),
            }
        }
    }
    if !batch.is_empty() {
        let _ = out.send(batch);
    }
    Ok(())
}
