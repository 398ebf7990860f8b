//! The dispatcher: the single point where packets get their order and their shard.
//!
//! It numbers packets, keeps the clock monotonic, attributes later IP fragments to their
//! datagram's ports, and hands batches to the flow shards over bounded channels. Every shard
//! gets a batch (possibly empty) at least every `batch_size × shards` packets, carrying the
//! position reached, so downstream can merge shards deterministically. It owns the queue
//! policy: `Block` for replay (nothing lost), `DropNewest` for live capture (never stalls the
//! capture, drops are counted).

use std::net::IpAddr;

use crossbeam_channel::{Sender, TrySendError};

use crate::fasthash::FastMap;
use crate::flow::{Order, shard_of};
use crate::packet::{MAX_TS, Micros, PacketKind, PacketMeta};

/// What to do when a shard's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room (replay: a file can wait, and output must not depend on timing).
    Block,
    /// Drop the batch and count its packets (live: the capture must never stall).
    DropNewest,
}

/// A batch of packets for one shard, and the global position the dispatcher has reached.
#[derive(Debug)]
pub struct Batch {
    pub packets: Vec<PacketMeta>,
    /// Every packet with an order up to this one has been dispatched.
    pub reached: Order,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchCounters {
    pub packets: u64,
    pub time_backwards: u64,
    pub fragments_unattributed: u64,
    pub queue_drops: u64,
}

/// Ports of a fragmented datagram, learned from its first fragment.
#[derive(Clone, Copy)]
struct FragPorts {
    sport: u16,
    dport: u16,
    seen: Micros,
}

/// How long a datagram's ports are kept waiting for its later fragments.
const FRAGMENT_TTL: Micros = 30_000_000;
/// How often a full fragment table is swept for expired datagrams at most.
const FRAGMENT_SWEEP: Micros = 1_000_000;

pub struct Dispatcher {
    shards: Vec<Sender<Batch>>,
    pending: Vec<Vec<PacketMeta>>,
    batch_size: usize,
    when_full: WhenFull,
    seq: u64,
    clock: Micros,
    since_flush: usize,
    fragments: FastMap<(IpAddr, IpAddr, u8, u32), FragPorts>,
    max_fragments: usize,
    /// The packet time before which a full fragment table is not swept again.
    next_sweep: Micros,
    pub counters: DispatchCounters,
}

impl Dispatcher {
    pub fn new(
        shards: Vec<Sender<Batch>>,
        batch_size: usize,
        max_fragments: usize,
        when_full: WhenFull,
    ) -> Dispatcher {
        let pending = shards
            .iter()
            .map(|_| Vec::with_capacity(batch_size))
            .collect();
        Dispatcher {
            shards,
            pending,
            batch_size: batch_size.max(1),
            when_full,
            seq: 0,
            clock: 0,
            since_flush: 0,
            fragments: FastMap::default(),
            max_fragments,
            next_sweep: 0,
            counters: DispatchCounters::default(),
        }
    }

    /// The position reached: the last packet's time and number.
    pub fn reached(&self) -> Order {
        Order {
            ts: self.clock,
            class: 1,
            a: self.seq,
            b: u64::MAX,
        }
    }

    /// Takes one parsed packet.
    pub fn push(&mut self, mut p: PacketMeta) {
        // Packet time plus any configured span (at most a year) must not overflow: the capture
        // reader clamps already; this holds the bound for every source.
        p.ts = p.ts.min(MAX_TS);
        if p.ts < self.clock {
            self.counters.time_backwards += 1;
            p.ts = self.clock;
        }
        self.clock = p.ts;
        if !self.attribute_fragment(&mut p) {
            self.counters.fragments_unattributed += 1;
            return;
        }
        self.seq += 1;
        p.seq = self.seq;
        self.counters.packets += 1;
        self.route(p);
        self.since_flush += 1;
        if self.since_flush >= self.batch_size * self.shards.len() {
            self.flush();
        }
    }

    /// Queues a numbered packet for its flow's shard.
    fn route(&mut self, p: PacketMeta) {
        let shard = shard_of(&p, self.shards.len());
        self.pending[shard].push(p);
        if self.pending[shard].len() >= self.batch_size {
            self.send(shard);
        }
    }

    /// Advances the clock without a packet (live capture when the link is quiet).
    pub fn tick(&mut self, now: Micros) {
        self.clock = self.clock.max(now);
        self.flush();
    }

    /// Sends every shard its batch, even an empty one, so that all shards learn the position.
    pub fn flush(&mut self) {
        for shard in 0..self.shards.len() {
            self.send(shard);
        }
        self.since_flush = 0;
    }

    fn send(&mut self, shard: usize) {
        let packets = std::mem::replace(
            &mut self.pending[shard],
            Vec::with_capacity(self.batch_size),
        );
        let batch = Batch {
            packets,
            reached: self.reached(),
        };
        match self.when_full {
            WhenFull::Block => {
                // A closed channel means the worker is gone; shutdown handles that.
                let _ = self.shards[shard].send(batch);
            }
            WhenFull::DropNewest => match self.shards[shard].try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                    self.counters.queue_drops += b.packets.len() as u64;
                }
            },
        }
    }

    /// Gives later fragments the ports of their first fragment. False: drop the packet.
    fn attribute_fragment(&mut self, p: &mut PacketMeta) -> bool {
        let Some(frag) = p.fragment else { return true };
        let key = (p.src, p.dst, p.proto, frag.id);
        match p.kind {
            PacketKind::LaterFragment => match self.fragments.get(&key).copied() {
                Some(ports) => {
                    p.sport = ports.sport;
                    p.dport = ports.dport;
                    p.kind = PacketKind::Normal;
                    if !frag.more {
                        self.fragments.remove(&key);
                    }
                    true
                }
                None => false,
            },
            _ => {
                // A full table is swept for expired datagrams at most once per sweep interval, so
                // a stream of new first fragments costs one scan per interval, not one per packet.
                if self.fragments.len() >= self.max_fragments && p.ts >= self.next_sweep {
                    let horizon = p.ts.saturating_sub(FRAGMENT_TTL);
                    self.fragments.retain(|_, f| f.seen >= horizon);
                    self.next_sweep = p.ts + FRAGMENT_SWEEP;
                }
                if self.fragments.len() < self.max_fragments {
                    let ports = FragPorts {
                        sport: p.sport,
                        dport: p.dport,
                        seen: p.ts,
                    };
                    self.fragments.insert(key, ports);
                }
                true
            }
        }
    }
}
