//! The dispatcher: the single point where packets get their order and their shard.
//!
//! It numbers packets, keeps the clock monotonic, attributes later IP fragments to their
//! datagram's ports, and hands batches to the flow shards over bounded channels. Every shard
//! gets a batch (possibly empty) at least every `batch_size × shards` packets, carrying the
//! position reached, so downstream can merge shards deterministically. The agent chooses the
//! shard queues' policy (`agent::Queues`): `Block`, so that a stage that falls behind holds the
//! capture back and the tpacket ring absorbs the burst; `ShedThenBlock`, which first sheds the
//! cheapest packets of a batch that finds its queue full (see [`WhenFull::ShedThenBlock`]);
//! `DropNewest` drops and counts instead.

use std::net::IpAddr;

use crossbeam_channel::{Sender, TrySendError};

use crate::fasthash::FastMap;
use crate::flow::{Order, shard_of};
use crate::packet::{MAX_TS, Micros, PacketKind, PacketMeta};

/// What to do when a queue is full (the agent's `Queues` chooses per queue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room: nothing is lost, and the stage before waits in turn.
    Block,
    /// Live capture under overload: when a batch finds its shard's queue full while the capture
    /// is behind (see [`Dispatcher::set_backlog`]), the dispatcher starts shedding: it takes
    /// TCP SYNs without ACK out of that batch and of every packet it routes after it, but one
    /// in [`SHED_KEEP`] (counted as `shed_syns`), until the capture has caught up; the batch
    /// then waits for room as with `Block`. A queue full for a moment, with the capture keeping
    /// up, only makes it wait. A SYN is where a new flow costs most (a flow created, scored and
    /// put into its hosts' context) and is worth least to keep under a flood of them: a real
    /// client sends it again, and its connection is tracked from its next packets anyway. The
    /// packets of flows already open are never shed, and a flood of SYNs still reaches the
    /// flow tables, one in [`SHED_KEEP`], enough to be alerted. Only the kernel then drops,
    /// at random, when even that is not enough (`kernel_drops`).
    ShedThenBlock,
    /// Drop the batch and count its packets.
    DropNewest,
}

/// Under [`WhenFull::ShedThenBlock`], one shed candidate in this many is kept.
pub const SHED_KEEP: u64 = 8;

/// Whether shedding takes this packet: a bare TCP SYN, but one in [`SHED_KEEP`], chosen by
/// packet number so that the ones kept are spread over a flood.
fn sheds(p: &PacketMeta) -> bool {
    p.is_bare_syn() && !p.seq.is_multiple_of(SHED_KEEP)
}

/// Takes out of `packets` what shedding takes; returns how many went.
fn shed_syns(packets: &mut Vec<PacketMeta>) -> u64 {
    let before = packets.len();
    packets.retain(|p| !sheds(p));
    (before - packets.len()) as u64
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
    /// SYNs shed under [`WhenFull::ShedThenBlock`].
    pub shed_syns: u64,
    /// Times shedding began.
    pub shed_episodes: u64,
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
    /// The capture is falling behind: shedding may begin.
    behind: bool,
    /// Shedding SYNs (see [`WhenFull::ShedThenBlock`]) until the capture has caught up.
    shedding: bool,
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
            behind: false,
            shedding: false,
            counters: DispatchCounters::default(),
        }
    }

    /// Tells how far behind the capture is (live): `waiting` of `capacity`, the blocks of its
    /// ring the kernel has filled (or, without a ring, the batches in its queue to the
    /// dispatcher). Half of it or more is behind, which lets [`WhenFull::ShedThenBlock`] begin
    /// shedding; a quarter or less is caught up, which ends it.
    pub fn set_backlog(&mut self, waiting: usize, capacity: usize) {
        self.behind = waiting * 2 >= capacity;
        if waiting * 4 <= capacity {
            self.shedding = false;
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

    /// Queues a numbered packet for its flow's shard (or sheds it).
    fn route(&mut self, p: PacketMeta) {
        if self.shedding && sheds(&p) {
            self.counters.shed_syns += 1;
            return;
        }
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
            WhenFull::ShedThenBlock if !self.behind => {
                let _ = self.shards[shard].send(batch);
            }
            WhenFull::ShedThenBlock => match self.shards[shard].try_send(batch) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(mut b)) => {
                    if !self.shedding {
                        self.shedding = true;
                        self.counters.shed_episodes += 1;
                    }
                    self.counters.shed_syns += shed_syns(&mut b.packets);
                    let _ = self.shards[shard].send(b);
                }
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Fragment, PROTO_UDP};
    use crossbeam_channel::{Receiver, unbounded};

    /// A dispatcher over `shards` unbounded test channels (the test drains them synchronously).
    fn dispatcher(
        shards: usize,
        batch_size: usize,
        max_fragments: usize,
    ) -> (Dispatcher, Vec<Receiver<Batch>>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..shards).map(|_| unbounded()).unzip();
        let d = Dispatcher::new(txs, batch_size, max_fragments, WhenFull::Block);
        (d, rxs)
    }

    /// Every batch each shard has received so far, in the order it received them.
    fn drain(rxs: &[Receiver<Batch>]) -> Vec<Vec<Batch>> {
        rxs.iter().map(|rx| rx.try_iter().collect()).collect()
    }

    fn udp(ts: Micros, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> PacketMeta {
        PacketMeta {
            ip_len: 1500,
            payload_len: 1472,
            ..PacketMeta::for_test(ts, PROTO_UDP, (src, sport), (dst, dport))
        }
    }

    /// The first fragment of datagram `id`: it carries the ports.
    fn first_fragment(
        ts: Micros,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        id: u32,
    ) -> PacketMeta {
        PacketMeta {
            fragment: Some(Fragment { id, more: true }),
            ..udp(ts, src, sport, dst, dport)
        }
    }

    /// A later fragment of datagram `id`, as the parser makes it: no ports.
    fn later_fragment(ts: Micros, src: [u8; 4], dst: [u8; 4], id: u32, more: bool) -> PacketMeta {
        PacketMeta {
            kind: PacketKind::LaterFragment,
            fragment: Some(Fragment { id, more }),
            ..udp(ts, src, 0, dst, 0)
        }
    }

    const A: [u8; 4] = [192, 0, 2, 1];
    const B: [u8; 4] = [198, 51, 100, 7];

    /// (shard, seq, ts, sport, dport, kind) of every packet dispatched, by packet number.
    fn dispatched(batches: &[Vec<Batch>]) -> Vec<(usize, u64, Micros, u16, u16, PacketKind)> {
        let mut all: Vec<_> = batches
            .iter()
            .enumerate()
            .flat_map(|(shard, bs)| {
                bs.iter().flat_map(move |b| {
                    b.packets
                        .iter()
                        .map(move |p| (shard, p.seq, p.ts, p.sport, p.dport, p.kind))
                })
            })
            .collect();
        all.sort_by_key(|&(_, seq, ..)| seq);
        all
    }

    /// Source ports 1.. of UDP flows from A to B: the first one whose flow lands on `shard`.
    fn port_on_shard(shard: usize, shards: usize) -> u16 {
        (1..)
            .find(|&port| shard_of(&udp(0, A, port, B, 53), shards) == shard)
            .expect("some port lands on every shard")
    }

    #[test]
    fn clock_going_backwards_is_counted_and_held_at_the_last_time() {
        let (mut d, rxs) = dispatcher(1, 100, 16);
        for ts in [1_000, 2_000, 1_500, 500, 2_000, 3_000, 2_999] {
            d.push(udp(ts, A, 1000, B, 53));
        }
        d.flush();
        let times: Vec<Micros> = dispatched(&drain(&rxs)).iter().map(|p| p.2).collect();
        assert_eq!(times, [1_000, 2_000, 2_000, 2_000, 2_000, 3_000, 3_000]);
        // 1_500, 500 and 2_999 went back; the repeated 2_000 did not.
        assert_eq!(d.counters.time_backwards, 3);
        assert_eq!(d.counters.packets, 7);
        assert_eq!(d.reached().ts, 3_000);
    }

    #[test]
    fn tick_moves_the_clock_and_later_packets_cannot_go_behind_it() {
        let (mut d, rxs) = dispatcher(2, 100, 16);
        d.push(udp(1_000, A, 1000, B, 53));
        d.tick(5_000);
        // A tick that goes back does not move the clock back, and is not a packet.
        d.tick(4_000);
        assert_eq!(d.reached().ts, 5_000);
        d.push(udp(4_500, A, 1000, B, 53));
        d.flush();
        let packets = dispatched(&drain(&rxs));
        assert_eq!(
            packets.iter().map(|p| p.2).collect::<Vec<_>>(),
            [1_000, 5_000]
        );
        assert_eq!(d.counters.time_backwards, 1);
    }

    #[test]
    fn timestamps_beyond_max_ts_are_clamped() {
        let (mut d, rxs) = dispatcher(1, 100, 16);
        d.push(udp(u64::MAX, A, 1000, B, 53));
        d.push(udp(MAX_TS + 1, A, 1000, B, 53));
        d.flush();
        let times: Vec<Micros> = dispatched(&drain(&rxs)).iter().map(|p| p.2).collect();
        assert_eq!(times, [MAX_TS, MAX_TS]);
        assert_eq!(d.counters.time_backwards, 0);
    }

    #[test]
    fn packets_are_numbered_from_one_without_gaps() {
        let (mut d, rxs) = dispatcher(3, 2, 16);
        for i in 0..20u16 {
            d.push(udp(u64::from(i) * 10, A, 1000 + i, B, 53));
        }
        d.flush();
        let seqs: Vec<u64> = dispatched(&drain(&rxs)).iter().map(|p| p.1).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());
        assert_eq!(d.reached().a, 20);
    }

    #[test]
    fn both_directions_of_a_flow_go_to_one_shard() {
        let shards = 4;
        let (mut d, rxs) = dispatcher(shards, 1, 16);
        let mut ts = 0;
        for sport in 1000..1064u16 {
            ts += 1;
            d.push(udp(ts, A, sport, B, 53));
            ts += 1;
            d.push(udp(ts, B, 53, A, sport));
        }
        d.flush();
        let batches = drain(&rxs);
        let mut shard_of_flow = std::collections::HashMap::new();
        for &(shard, _, _, sport, dport, _) in &dispatched(&batches) {
            let client_port = if dport == 53 { sport } else { dport };
            let first = *shard_of_flow.entry(client_port).or_insert(shard);
            assert_eq!(
                first, shard,
                "flow from port {client_port} split over shards"
            );
        }
        assert_eq!(shard_of_flow.len(), 64);
        // And the flows do spread: every shard holds some.
        for shard in 0..shards {
            assert!(
                shard_of_flow.values().any(|&s| s == shard),
                "no flow on shard {shard}"
            );
        }
    }

    #[test]
    fn later_fragments_go_to_the_shard_of_their_first_fragment_with_its_ports() {
        let shards = 4;
        let (mut d, rxs) = dispatcher(shards, 100, 16);
        // Datagrams whose flows land on different shards, their fragments interleaved.
        let flows: Vec<(u16, u32)> = (0..shards)
            .map(|s| (port_on_shard(s, shards), 7 + s as u32))
            .collect();
        let mut ts = 0;
        for &(port, id) in &flows {
            ts += 1;
            d.push(first_fragment(ts, A, port, B, 53, id));
        }
        for &(_, id) in &flows {
            ts += 1;
            d.push(later_fragment(ts, A, B, id, true));
        }
        for &(_, id) in flows.iter().rev() {
            ts += 1;
            d.push(later_fragment(ts, A, B, id, false));
        }
        d.flush();
        let packets = dispatched(&drain(&rxs));
        assert_eq!(packets.len(), 3 * shards);
        assert_eq!(d.counters.fragments_unattributed, 0);
        for &(shard, _, _, sport, dport, kind) in &packets {
            let want = flows.iter().position(|&(port, _)| port == sport);
            assert_eq!(
                want,
                Some(shard),
                "fragment with port {sport} on shard {shard}"
            );
            assert_eq!(dport, 53);
            assert_eq!(kind, PacketKind::Normal);
        }
    }

    #[test]
    fn fragments_before_their_first_fragment_are_dropped_and_counted() {
        let (mut d, rxs) = dispatcher(2, 100, 16);
        // Datagram 1: later fragments first (not held: dropped), then its first fragment.
        d.push(later_fragment(1_000, A, B, 1, true));
        d.push(later_fragment(1_100, A, B, 1, false));
        d.push(first_fragment(1_200, A, 4000, B, 53, 1));
        // Same id but another source: a different datagram, not attributed.
        d.push(later_fragment(1_300, B, A, 1, false));
        // Datagram 1's last fragment ends it: a duplicate of it is not attributed any more.
        d.push(later_fragment(1_400, A, B, 1, false));
        d.push(later_fragment(1_500, A, B, 1, false));
        d.flush();
        let packets = dispatched(&drain(&rxs));
        assert_eq!(d.counters.fragments_unattributed, 4);
        assert_eq!(d.counters.packets, 2);
        // Dropped packets take no number: the two sent are 1 and 2, with their own times.
        let kept: Vec<_> = packets.iter().map(|p| (p.1, p.2, p.3, p.4)).collect();
        assert_eq!(kept, [(1, 1_200, 4000, 53), (2, 1_400, 4000, 53)]);
        // The clock still moved with the dropped packets.
        assert_eq!(d.reached().ts, 1_500);
    }

    #[test]
    fn a_full_fragment_table_is_swept_for_expired_datagrams_at_most_once_per_interval() {
        let (mut d, rxs) = dispatcher(1, 100, 2);
        d.push(first_fragment(0, A, 1, B, 53, 1));
        d.push(first_fragment(10, A, 2, B, 53, 2));
        // Full: the sweep drops datagram 1 (older than the TTL) and keeps 2.
        d.push(first_fragment(FRAGMENT_TTL + 1, A, 3, B, 53, 3));
        d.push(later_fragment(FRAGMENT_TTL + 2, A, B, 1, false));
        assert_eq!(d.counters.fragments_unattributed, 1);
        // Datagram 2 has expired too, but the last sweep was less than an interval ago: no
        // sweep, so 4's ports are not kept and 2's still are.
        d.push(first_fragment(FRAGMENT_TTL + 20, A, 4, B, 53, 4));
        d.push(later_fragment(FRAGMENT_TTL + 20, A, B, 4, false));
        assert_eq!(d.counters.fragments_unattributed, 2);
        d.push(later_fragment(FRAGMENT_TTL + 20, A, B, 2, true));
        assert_eq!(d.counters.fragments_unattributed, 2);
        // An interval later the next sweep drops 2 and keeps 3.
        let t = FRAGMENT_TTL + 1 + FRAGMENT_SWEEP;
        d.push(first_fragment(t, A, 5, B, 53, 5));
        d.push(later_fragment(t, A, B, 5, false));
        d.push(later_fragment(t, A, B, 2, false));
        d.push(later_fragment(t, A, B, 3, false));
        assert_eq!(d.counters.fragments_unattributed, 3);
        d.flush();
        let ports: Vec<u16> = dispatched(&drain(&rxs)).iter().map(|p| p.3).collect();
        assert_eq!(ports, [1, 2, 3, 4, 2, 5, 5, 3]);
    }

    #[test]
    fn every_shard_gets_a_batch_with_the_position_every_batch_size_times_shards_packets() {
        let shards = 3;
        let batch_size = 4;
        let (mut d, rxs) = dispatcher(shards, batch_size, 16);
        // All packets of one flow: they land on one shard, the others get nothing but batches.
        let busy = shard_of(&udp(0, A, 1000, B, 53), shards);
        for ts in 1..=(batch_size * shards) as u64 {
            d.push(udp(ts, A, 1000, B, 53));
        }
        let batches = drain(&rxs);
        let want = Order {
            ts: (batch_size * shards) as u64,
            class: 1,
            a: (batch_size * shards) as u64,
            b: u64::MAX,
        };
        for (shard, bs) in batches.iter().enumerate() {
            let last = bs.last().expect("every shard got a batch");
            assert_eq!(last.reached, want, "shard {shard}");
            if shard == busy {
                // Full batches of `batch_size`, then the flush's empty one.
                let sizes: Vec<usize> = bs.iter().map(|b| b.packets.len()).collect();
                assert_eq!(sizes, [4, 4, 4, 0]);
                // Each full batch's position is that of its last packet.
                for b in bs.iter().filter(|b| !b.packets.is_empty()) {
                    assert_eq!(b.reached.a, b.packets.last().map_or(0, |p| p.seq));
                }
            } else {
                assert_eq!(bs.len(), 1, "shard {shard}");
                assert!(last.packets.is_empty());
            }
        }
        // Fewer packets than that: no batch yet (nothing is flushed early).
        d.push(udp(100, A, 1000, B, 53));
        assert!(drain(&rxs).iter().all(Vec::is_empty));
    }

    #[test]
    fn a_tick_sends_every_shard_an_empty_batch_with_the_new_time() {
        let (mut d, rxs) = dispatcher(3, 10, 16);
        d.push(udp(1_000, A, 1000, B, 53));
        d.tick(9_000);
        let batches = drain(&rxs);
        for bs in &batches {
            assert_eq!(bs.len(), 1);
            assert_eq!(
                bs[0].reached,
                Order {
                    ts: 9_000,
                    class: 1,
                    a: 1,
                    b: u64::MAX
                }
            );
        }
        assert_eq!(
            batches.iter().map(|bs| bs[0].packets.len()).sum::<usize>(),
            1
        );
        // A quiet link: ticks alone still carry the position forward, to every shard.
        d.tick(10_000);
        for bs in drain(&rxs) {
            assert_eq!(bs.len(), 1);
            assert!(bs[0].packets.is_empty());
            assert_eq!((bs[0].reached.ts, bs[0].reached.a), (10_000, 1));
        }
    }

    #[test]
    fn shedding_takes_bare_syns_but_one_in_eight_and_nothing_else() {
        use crate::packet::{PROTO_TCP, tcp_flags};
        let tcp = |seq: u64, flags: u8| PacketMeta {
            seq,
            tcp_flags: flags,
            ..PacketMeta::for_test(seq, PROTO_TCP, ([10, 0, 0, 1], 40000), ([10, 0, 0, 2], 80))
        };
        let mut packets: Vec<PacketMeta> = (1..=64)
            .map(|seq| {
                let flags = match seq % 4 {
                    0 | 2 => tcp_flags::SYN,
                    1 => tcp_flags::ACK,
                    _ => tcp_flags::SYN | tcp_flags::ACK,
                };
                tcp(seq, flags)
            })
            .collect();
        packets.push(udp(65, [10, 0, 0, 3], 53, [10, 0, 0, 4], 53));
        assert_eq!(packets.iter().filter(|p| p.is_bare_syn()).count(), 32);
        assert_eq!(shed_syns(&mut packets), 32 - 8);
        let kept: Vec<u64> = packets
            .iter()
            .filter(|p| p.is_bare_syn())
            .map(|p| p.seq)
            .collect();
        assert_eq!(kept, [8, 16, 24, 32, 40, 48, 56, 64]);
        // SYN-ACKs, ACKs and UDP all stay.
        assert_eq!(packets.iter().filter(|p| !p.is_bare_syn()).count(), 33);
    }

    #[test]
    fn drop_newest_counts_the_packets_of_a_batch_that_does_not_fit() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut d = Dispatcher::new(vec![tx], 2, 16, WhenFull::DropNewest);
        for ts in 1..=6 {
            d.push(udp(ts, A, 1000, B, 53));
        }
        // The first batch fits the queue; the next two (2 packets each) are dropped.
        assert_eq!(d.counters.queue_drops, 4);
        assert_eq!(d.counters.packets, 6);
        let got: Vec<Batch> = rx.try_iter().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].packets.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [1, 2]
        );
    }
}
