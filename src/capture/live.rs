//! Live capture from network interfaces: the backends behind one trait, and the capture loop.
//!
//! Two backends: a TPACKET_V3 memory-mapped ring (`tpacket`, Linux, the default) and pnet's
//! AF_PACKET socket (`pnet`, cargo feature `pnet`, the portable fallback); `capture.backend`
//! picks one. The OS sits behind [`LinkReceiver`], so the capture loop runs the same on a real
//! interface and on frames a test hands it. The loop parses each frame into a `PacketMeta` at
//! once and hands batches on; packet bytes never leave this thread. At a full queue it waits
//! (tpacket: the ring holds the packets meanwhile) or drops and counts the batch (pnet), as the
//! agent's queue table says.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};
use portable_atomic::AtomicU64;

use crate::config::{CaptureBackend, CaptureConfig};
use crate::dispatch::WhenFull;
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
        "cannot capture on {name}: its hardware type is {hardware} (ARPHRD); edgewatch captures \
         on Ethernet, loopback, PPP and IP-tunnel interfaces (a Wi-Fi monitor interface is not one)"
    )]
    UnsupportedLink { name: String, hardware: u32 },
    #[error(
        "cannot capture on {name}: this edgewatch was built without the capture backend \
         \"{backend}\" (the tpacket backend is Linux only, pnet needs the cargo feature \"pnet\")"
    )]
    NoBackend { name: String, backend: &'static str },
}

/// One captured frame.
pub struct Frame<'a> {
    /// The frame's bytes, possibly cut short by the backend's snap length.
    pub data: &'a [u8],
    /// Its length on the wire.
    pub wire_len: u32,
    /// When the kernel received it, if the backend says (else the capture loop's clock).
    pub ts: Option<Micros>,
}

/// What the kernel counted for a capture socket since the previous reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames that reached the socket, including the dropped ones.
    pub packets: u64,
    /// Frames dropped because the ring (or socket buffer) was full.
    pub drops: u64,
    /// Times the ring filled up (TPACKET_V3's queue freezes).
    pub freezes: u64,
}

/// A source of raw frames.
pub trait LinkReceiver: Send {
    /// The next frame; `Ok(None)` when none is ready (within the read timeout, or the backend
    /// has nothing more right now), so the caller can hand on a partial batch.
    fn recv(&mut self) -> io::Result<Option<Frame<'_>>>;

    /// The kernel's counters since the last call, when the backend can read them.
    fn kernel_stats(&mut self) -> io::Result<Option<KernelStats>> {
        Ok(None)
    }

    /// The link layer of the frames.
    fn link(&self) -> LinkType {
        LinkType::Ethernet
    }

    /// How full the backend's ring is: blocks the kernel has filled and not had back, of all
    /// its blocks (`None`: the backend has no ring).
    fn ring_fill(&self) -> Option<(usize, usize)> {
        None
    }
}

/// The link layer of the frames a packet socket reads on interface `name`, from its hardware
/// type (`/sys/class/net/NAME/type`, an ARPHRD_* number). Interfaces without a link header (PPP,
/// WireGuard and TUN, IP tunnels) hand over the IP packet itself. Where sysfs cannot say (not
/// Linux), Ethernet.
pub fn interface_link(name: &str) -> Result<LinkType, LiveError> {
    if name.contains('/') {
        return Err(LiveError::NoSuchInterface {
            name: name.to_string(),
            known: "(an interface name has no '/')".to_string(),
        });
    }
    let Ok(text) = std::fs::read_to_string(format!("/sys/class/net/{name}/type")) else {
        return Ok(LinkType::Ethernet);
    };
    match text.trim().parse::<u32>() {
        // ETHER, IEEE802, LOOPBACK (Linux's loopback frames carry an Ethernet header).
        Ok(1 | 6 | 772) | Err(_) => Ok(LinkType::Ethernet),
        // PPP, TUNNEL (ipip), TUNNEL6, SIT, IPGRE, IP6GRE, NONE (TUN, WireGuard).
        Ok(512 | 768 | 769 | 776 | 778 | 823 | 65534) => Ok(LinkType::RawIp),
        Ok(hardware) => Err(LiveError::UnsupportedLink {
            name: name.to_string(),
            hardware,
        }),
    }
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
    link: LinkType,
}

#[cfg(feature = "pnet")]
impl LinkReceiver for PnetReceiver {
    fn recv(&mut self) -> io::Result<Option<Frame<'_>>> {
        match self.rx.next() {
            Ok(data) => Ok(Some(Frame {
                data,
                wire_len: data.len() as u32,
                ts: None,
            })),
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

    fn link(&self) -> LinkType {
        self.link
    }
}

/// How long a capture thread waits for a frame before it checks for shutdown and hands on a
/// partial batch.
pub const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// How often a capture thread reads the kernel's counters (they are also read when it stops).
pub const KERNEL_STATS_PERIOD: Duration = Duration::from_secs(1);

/// Opens an interface for capture with the configured backend: one receiver per capture thread
/// (`capture.threads`, tpacket only; pnet always gives one).
pub fn open(name: &str, cfg: &CaptureConfig) -> Result<Vec<Box<dyn LinkReceiver>>, LiveError> {
    match cfg.backend.resolve() {
        #[cfg(target_os = "linux")]
        CaptureBackend::Tpacket => {
            let ring = super::tpacket::RingSize {
                block_bytes: cfg.ring_block_kib * 1024,
                blocks: cfg.ring_blocks,
            };
            let receivers = super::tpacket::open(name, cfg.promiscuous, ring, cfg.threads)?;
            let link = interface_link(name)?;
            Ok(receivers
                .into_iter()
                .map(|mut r| {
                    r.link = link;
                    Box::new(r) as Box<dyn LinkReceiver>
                })
                .collect())
        }
        #[cfg(feature = "pnet")]
        CaptureBackend::Pnet => Ok(vec![open_pnet(name, cfg.promiscuous)?]),
        #[allow(unreachable_patterns)] // with both backends built, every arm above matches
        backend => Err(LiveError::NoBackend {
            name: name.to_string(),
            backend: backend.name(),
        }),
    }
}

/// Opens an interface with pnet.
#[cfg(feature = "pnet")]
fn open_pnet(name: &str, promiscuous: bool) -> Result<Box<dyn LinkReceiver>, LiveError> {
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
        Ok(pnet_datalink::Channel::Ethernet(_tx, rx)) => Ok(Box::new(PnetReceiver {
            rx,
            link: interface_link(name)?,
        })),
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
    pub kernel_packets: AtomicU64,
    pub kernel_drops: AtomicU64,
    pub kernel_freezes: AtomicU64,
    /// Whether the backend gave the kernel's counters.
    pub kernel_stats: AtomicBool,
    /// The ring's blocks filled and not yet handed back, and all its blocks (0: no ring), as of
    /// the last batch handed on.
    pub ring_filled: AtomicU32,
    pub ring_blocks: AtomicU32,
    pub skipped: [AtomicU64; Skip::ALL.len()],
}

impl CaptureCounters {
    /// The ring's fill as of the last batch handed on: (filled, blocks), `None` without a ring.
    pub fn ring_fill(&self) -> Option<(usize, usize)> {
        let blocks = self.ring_blocks.load(Ordering::Relaxed) as usize;
        (blocks > 0).then(|| (self.ring_filled.load(Ordering::Relaxed) as usize, blocks))
    }

    fn add_kernel(&self, rx: &mut dyn LinkReceiver) {
        // A failed reading is not worth stopping the capture for: the counters say less.
        if let Ok(Some(k)) = rx.kernel_stats() {
            self.kernel_stats.store(true, Ordering::Relaxed);
            self.kernel_packets.fetch_add(k.packets, Ordering::Relaxed);
            self.kernel_drops.fetch_add(k.drops, Ordering::Relaxed);
            self.kernel_freezes.fetch_add(k.freezes, Ordering::Relaxed);
        }
    }
}

/// Reads frames until `stop` is set, handing batches of parsed packets to `out`.
pub fn capture_loop(
    rx: &mut dyn LinkReceiver,
    clock: &dyn Clock,
    batch_size: usize,
    stop: &AtomicBool,
    out: &Sender<Vec<PacketMeta>>,
    when_full: WhenFull,
    counters: &Arc<CaptureCounters>,
) -> io::Result<()> {
    let link = rx.link();
    let mut batch = Vec::with_capacity(batch_size);
    let mut last_send = Instant::now();
    let mut last_kernel_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let got = rx.recv()?;
        let idle = got.is_none();
        if let Some(frame) = got {
            counters.frames.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes
                .fetch_add(u64::from(frame.wire_len), Ordering::Relaxed);
            let ts = frame.ts.unwrap_or_else(|| clock.now());
            match parse_frame(link, ts, frame.data, frame.wire_len) {
                Ok(meta) => batch.push(meta),
                Err(skip) => {
                    counters.skipped[skip.index()].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // A partial batch goes when the receiver has nothing more for now, or after a while.
        let send = batch.len() >= batch_size
            || (!batch.is_empty() && (idle || last_send.elapsed() >= READ_TIMEOUT));
        // The kernel's counters: looked at when idle or once per batch, not per frame.
        if (idle || send) && last_kernel_stats.elapsed() >= KERNEL_STATS_PERIOD {
            last_kernel_stats = Instant::now();
            counters.add_kernel(rx);
        }
        if send {
            last_send = Instant::now();
            if let Some((filled, blocks)) = rx.ring_fill() {
                counters.ring_filled.store(filled as u32, Ordering::Relaxed);
                counters.ring_blocks.store(blocks as u32, Ordering::Relaxed);
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            let sent = match when_full {
                // Shedding looks at parsed packets: the dispatcher's queues do it.
                WhenFull::Block | WhenFull::ShedThenBlock => {
                    out.send(full).map_err(|e| TrySendError::Disconnected(e.0))
                }
                WhenFull::DropNewest => out.try_send(full),
            };
            match sent {
                Ok(()) => {}
                Err(TrySendError::Full(b)) => {
                    counters
                        .queue_drops
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
    }
    if !batch.is_empty() {
        let _ = out.send(batch);
    }
    counters.add_kernel(rx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out a fixed list of frames (each `None` is a quiet read), then sets `stop`.
    struct Script {
        frames: Vec<Option<(Vec<u8>, Option<Micros>)>>,
        next: usize,
        stop: Arc<AtomicBool>,
        kernel: Option<KernelStats>,
    }

    impl LinkReceiver for Script {
        fn recv(&mut self) -> io::Result<Option<Frame<'_>>> {
            let i = self.next;
            self.next += 1;
            if i + 1 >= self.frames.len() {
                self.stop.store(true, Ordering::Relaxed);
            }
            Ok(self
                .frames
                .get(i)
                .and_then(|f| f.as_ref())
                .map(|(data, ts)| Frame {
                    data,
                    wire_len: data.len() as u32 + 100,
                    ts: *ts,
                }))
        }

        fn kernel_stats(&mut self) -> io::Result<Option<KernelStats>> {
            Ok(self.kernel)
        }
    }

    struct FixedClock(Micros);

    impl Clock for FixedClock {
        fn now(&self) -> Micros {
            self.0
        }
    }

    /// An Ethernet + IPv4 + UDP frame, cut after the UDP header.
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0, 0, 128, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x88, 0, 108, 0, 0]);
        f
    }

    #[test]
    fn the_loop_uses_kernel_time_and_counts_what_the_kernel_says() {
        let stop = Arc::new(AtomicBool::new(false));
        let mut rx = Script {
            frames: vec![
                Some((udp_frame(), Some(1_000))),
                Some((udp_frame(), None)),
                None,
                Some((vec![0u8; 10], Some(3_000))),
            ],
            next: 0,
            stop: stop.clone(),
            kernel: Some(KernelStats {
                packets: 7,
                drops: 2,
                freezes: 1,
            }),
        };
        let (tx, out) = crossbeam_channel::bounded(8);
        let counters = Arc::new(CaptureCounters::default());
        capture_loop(
            &mut rx,
            &FixedClock(2_000),
            64,
            &stop,
            &tx,
            WhenFull::DropNewest,
            &counters,
        )
        .unwrap();
        // The quiet read hands on the partial batch at once; the runt frame is skipped.
        let first: Vec<PacketMeta> = out.try_recv().unwrap();
        assert_eq!(
            first.iter().map(|p| p.ts).collect::<Vec<_>>(),
            [1_000, 2_000]
        );
        assert_eq!(first[0].ip_len, 128);
        assert!(out.try_recv().is_err());
        assert_eq!(counters.frames.load(Ordering::Relaxed), 3);
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 2 * 142 + 110);
        assert_eq!(
            counters.skipped[Skip::TruncatedLink.index()].load(Ordering::Relaxed),
            1
        );
        // Read once at the end (the run is shorter than KERNEL_STATS_PERIOD).
        assert!(counters.kernel_stats.load(Ordering::Relaxed));
        assert_eq!(counters.kernel_packets.load(Ordering::Relaxed), 7);
        assert_eq!(counters.kernel_drops.load(Ordering::Relaxed), 2);
        assert_eq!(counters.kernel_freezes.load(Ordering::Relaxed), 1);
    }
}
