//! Packet fragmentation (RFC 7016 section 3.4) with the Packet Fragment
//! chunk (2.3.1).
//!
//! Sender: [`Fragmenter`] cuts an unavoidably large plain packet into
//! Packet Fragment chunks borrowing from it, each no larger than a given
//! chunk size; every chunk goes into its own packet with the same mode as
//! the original. Receiver: [`Reassembler`] collects fragments per
//! `(source, packetID)` under hard limits and returns the plain packet once
//! fragments `0..=final` are all present.
//!
//! This path is only for startup packets, so the reassembler allocates
//! (bounded by [`ReassemblyLimits`]); the data path never fragments packets.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::chunk::{Chunk, CHUNK_HEADER_LEN, MAX_CHUNK_PAYLOAD};
use super::{vlu, PacketMode, WireError};

/// Splits a plain packet into Packet Fragment chunks (RFC 7016 3.4).
/// Yields `Chunk::PacketFragment` values numbered from 0, each with an
/// `encoded_len()` of at most `max_chunk_len`, the last with
/// `more_fragments` clear. Concatenating their `fragment` fields gives back
/// the packet.
#[derive(Debug, Clone)]
pub struct Fragmenter<'a> {
    rest: &'a [u8],
    packet_id: u64,
    max_chunk_len: usize,
    next_num: u64,
}

fn fragment_overhead(packet_id: u64, fragment_num: u64) -> usize {
    CHUNK_HEADER_LEN + 1 + vlu::encoded_len(packet_id) + vlu::encoded_len(fragment_num)
}

impl<'a> Fragmenter<'a> {
    /// Fragment `packet` (a whole plain packet, header included) as
    /// `packet_id`, each chunk at most `max_chunk_len` bytes. Fails with
    /// [`WireError::Invalid`] for an empty packet and
    /// [`WireError::BufferTooSmall`] if `max_chunk_len` cannot carry at
    /// least one byte of every fragment.
    pub fn new(packet: &'a [u8], packet_id: u64, max_chunk_len: usize) -> Result<Self, WireError> {
        if packet.is_empty() {
            return Err(WireError::Invalid);
        }
        // There are at most packet.len() fragments; the largest fragment
        // number therefore costs at most encoded_len(packet.len()) bytes.
        if max_chunk_len <= fragment_overhead(packet_id, packet.len() as u64) {
            return Err(WireError::BufferTooSmall);
        }
        Ok(Fragmenter {
            rest: packet,
            packet_id,
            max_chunk_len,
            next_num: 0,
        })
    }

    /// Number of chunks this fragmenter will still yield.
    pub fn remaining_fragments(&self) -> usize {
        self.clone().count()
    }
}

impl<'a> Iterator for Fragmenter<'a> {
    type Item = Chunk<'a>;

    fn next(&mut self) -> Option<Chunk<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let overhead = fragment_overhead(self.packet_id, self.next_num);
        let room = self
            .max_chunk_len
            .saturating_sub(overhead)
            .min(MAX_CHUNK_PAYLOAD - (overhead - CHUNK_HEADER_LEN));
        let take = room.min(self.rest.len()).max(1);
        let (fragment, rest) = self.rest.split_at(take);
        self.rest = rest;
        let chunk = Chunk::PacketFragment {
            more_fragments: !rest.is_empty(),
            packet_id: self.packet_id,
            fragment_num: self.next_num,
            fragment,
        };
        self.next_num += 1;
        Some(chunk)
    }
}

/// Hard limits of a [`Reassembler`] (RFC 7016 3.4: "a receiver SHOULD
/// limit the number of concurrent packet reassembly buffers and the size
/// of each buffer").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Packets being reassembled at once; the oldest is evicted beyond it.
    pub max_packets: usize,
    /// Fragment bytes buffered across all packets; oldest evicted beyond.
    pub max_buffered_bytes: usize,
    /// Fragments per packet: fragment numbers at or above are discarded.
    pub max_fragments_per_packet: u64,
    /// Largest reassembled packet.
    pub max_packet_len: usize,
    /// Total time allowed for one packet (spec: up to 60 s).
    pub max_age: Duration,
    /// A packet with no new fragment for this long has stopped progressing
    /// and is dropped (spec: progressing = a new fragment in the last 1 s).
    pub stall_timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_packets: 32,
            max_buffered_bytes: 256 * 1024,
            max_fragments_per_packet: 64,
            max_packet_len: 64 * 1024,
            max_age: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(1),
        }
    }
}

/// Why a fragment (or a reassembled packet) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// Not a Packet Fragment chunk.
    NotAFragment,
    /// Empty packetFragment (MUST discard, RFC 7016 3.4).
    EmptyFragment,
    /// Fragment number at or above the per-packet fragment limit.
    TooManyFragments,
    /// Packet (or fragment) larger than the configured limits.
    TooLarge,
    /// Fragment in a packet whose mode differs from the first fragment's,
    /// or a reassembled packet whose own mode differs (MUST discard, 3.4).
    ModeMismatch,
    /// Fragment contradicting the final fragment number already known.
    Inconsistent,
}

/// Result of feeding one fragment to a [`Reassembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReassemblyOutcome {
    /// All fragments present: the reassembled plain packet.
    Complete(Vec<u8>),
    /// Stored (or a duplicate); more fragments are needed.
    Pending,
    /// Dropped; nothing stored for this fragment.
    Discarded(DiscardReason),
}

#[derive(Debug)]
struct Partial {
    mode: PacketMode,
    first_seen: Instant,
    last_progress: Instant,
    order: u64,
    fragments: BTreeMap<u64, Vec<u8>>,
    final_num: Option<u64>,
    bytes: usize,
}

impl Partial {
    fn deadline(&self, limits: &ReassemblyLimits) -> Instant {
        let age = self.first_seen.checked_add(limits.max_age);
        let stall = self.last_progress.checked_add(limits.stall_timeout);
        match (age, stall) {
            (Some(a), Some(s)) => a.min(s),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => self.last_progress,
        }
    }
}

/// Reassembles fragmented packets (RFC 7016 3.4). `K` identifies the
/// sender: the socket address for session 0 (as the spec recommends), the
/// session for established sessions. Time only comes in as `now`.
#[derive(Debug)]
pub struct Reassembler<K> {
    limits: ReassemblyLimits,
    packets: HashMap<(K, u64), Partial>,
    buffered: usize,
    next_order: u64,
}

impl<K: Eq + Hash + Clone> Reassembler<K> {
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            packets: HashMap::new(),
            buffered: 0,
            next_order: 0,
        }
    }

    /// Packets currently being reassembled.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Fragment bytes currently buffered.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Earliest time at which [`Reassembler::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.packets
            .values()
            .map(|p| p.deadline(&self.limits))
            .min()
    }

    /// Drop packets older than `max_age` or stalled for `stall_timeout`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let limits = self.limits;
        let mut freed = 0;
        self.packets.retain(|_, p| {
            let keep = now < p.deadline(&limits);
            if !keep {
                freed += p.bytes;
            }
            keep
        });
        self.buffered -= freed;
    }

    fn remove(&mut self, key: &(K, u64)) -> Option<Partial> {
        let p = self.packets.remove(key)?;
        self.buffered -= p.bytes;
        Some(p)
    }

    fn evict_oldest_except(&mut self, keep: &(K, u64)) -> bool {
        let oldest = self
            .packets
            .iter()
            .filter(|(k, _)| *k != keep)
            .min_by_key(|(_, p)| p.order)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => self.remove(&k).is_some(),
            None => false,
        }
    }

    /// Feed a chunk received from `source` in a packet of `mode`; anything
    /// other than a Packet Fragment is [`DiscardReason::NotAFragment`].
    pub fn insert_chunk(
        &mut self,
        now: Instant,
        source: K,
        mode: PacketMode,
        chunk: &Chunk<'_>,
    ) -> ReassemblyOutcome {
        match chunk {
            Chunk::PacketFragment {
                more_fragments,
                packet_id,
                fragment_num,
                fragment,
            } => self.insert(
                now,
                source,
                mode,
                *more_fragments,
                *packet_id,
                *fragment_num,
                fragment,
            ),
            _ => ReassemblyOutcome::Discarded(DiscardReason::NotAFragment),
        }
    }

    /// Feed one fragment received from `source` in a packet of `mode`.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        now: Instant,
        source: K,
        mode: PacketMode,
        more_fragments: bool,
        packet_id: u64,
        fragment_num: u64,
        fragment: &[u8],
    ) -> ReassemblyOutcome {
        use DiscardReason::*;
        use ReassemblyOutcome::Discarded;
        self.handle_timeout(now);
        if fragment.is_empty() {
            return Discarded(EmptyFragment);
        }
        if fragment_num >= self.limits.max_fragments_per_packet {
            return Discarded(TooManyFragments);
        }
        if fragment.len() > self.limits.max_packet_len
            || fragment.len() > self.limits.max_buffered_bytes
        {
            return Discarded(TooLarge);
        }
        let key = (source, packet_id);
        if let Some(p) = self.packets.get(&key) {
            if p.mode != mode {
                return Discarded(ModeMismatch);
            }
            let highest = p.fragments.keys().next_back().copied();
            let contradicts = match p.final_num {
                Some(f) => fragment_num > f || (!more_fragments && fragment_num != f),
                None => !more_fragments && highest.is_some_and(|h| h > fragment_num),
            };
            if contradicts {
                return Discarded(Inconsistent);
            }
            if p.fragments.contains_key(&fragment_num) {
                return ReassemblyOutcome::Pending;
            }
            if p.bytes.saturating_add(fragment.len()) > self.limits.max_packet_len {
                self.remove(&key);
                return Discarded(TooLarge);
            }
        } else {
            while self.packets.len() >= self.limits.max_packets.max(1) {
                if !self.evict_oldest_except(&key) {
                    break;
                }
            }
            let order = self.next_order;
            self.next_order += 1;
            self.packets.insert(
                key.clone(),
                Partial {
                    mode,
                    first_seen: now,
                    last_progress: now,
                    order,
                    fragments: BTreeMap::new(),
                    final_num: None,
                    bytes: 0,
                },
            );
        }
        while self.buffered.saturating_add(fragment.len()) > self.limits.max_buffered_bytes {
            if !self.evict_oldest_except(&key) {
                break;
            }
        }
        if self.buffered.saturating_add(fragment.len()) > self.limits.max_buffered_bytes {
            self.remove(&key);
            return Discarded(TooLarge);
        }
        let Some(p) = self.packets.get_mut(&key) else {
            return ReassemblyOutcome::Pending;
        };
        p.fragments.insert(fragment_num, fragment.to_vec());
        p.bytes += fragment.len();
        p.last_progress = now;
        if !more_fragments {
            p.final_num = Some(fragment_num);
        }
        self.buffered += fragment.len();
        let complete = p
            .final_num
            .is_some_and(|f| p.fragments.len() as u64 == f.saturating_add(1));
        if !complete {
            return ReassemblyOutcome::Pending;
        }
        let Some(p) = self.remove(&key) else {
            return ReassemblyOutcome::Pending;
        };
        let mut packet = Vec::with_capacity(p.bytes);
        for frag in p.fragments.values() {
            packet.extend_from_slice(frag);
        }
        // RFC 7016 3.4: discard a reassembled packet whose mode differs from
        // that of the packets that carried its fragments.
        match packet.first().and_then(|&b| PacketMode::from_bits(b)) {
            Some(m) if m == p.mode => ReassemblyOutcome::Complete(packet),
            _ => Discarded(ModeMismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::chunk::tests::UD_EXAMPLE;
    use proptest::prelude::*;

    fn startup_packet(len: usize) -> Vec<u8> {
        let mut p = vec![0x0b, 0x00, 0x01];
        p.extend((0..len).map(|i| (i * 7) as u8));
        p
    }

    #[test]
    fn split_sizes() {
        let pkt = startup_packet(1000);
        let frags: Vec<_> = Fragmenter::new(&pkt, 300, 200).unwrap().collect();
        assert!(frags.iter().all(|c| c.encoded_len() <= 200));
        assert_eq!(frags.len(), pkt.len().div_ceil(200 - 3 - 1 - 2 - 1));
        let mut joined = Vec::new();
        for (i, c) in frags.iter().enumerate() {
            let Chunk::PacketFragment {
                more_fragments,
                packet_id,
                fragment_num,
                fragment,
            } = c
            else {
                panic!()
            };
            assert_eq!(
                (*packet_id, *fragment_num, *more_fragments),
                (300, i as u64, i + 1 < frags.len())
            );
            joined.extend_from_slice(fragment);
        }
        assert_eq!(joined, pkt);
        assert_eq!(Fragmenter::new(&[], 1, 100).err(), Some(WireError::Invalid));
        assert_eq!(
            Fragmenter::new(&pkt, 1, 7).err(),
            Some(WireError::BufferTooSmall)
        );
        // Tiny chunks still make progress across the VLU size change at 128:
        // two bytes each for fragments 0..128, then one byte each.
        let n = Fragmenter::new(&pkt, 1, 8).unwrap().count();
        assert_eq!(n, 128 + (pkt.len() - 256));
    }

    #[test]
    fn reassemble_in_order_and_timeouts() {
        let t0 = Instant::now();
        let mut r: Reassembler<u8> = Reassembler::new(ReassemblyLimits::default());
        let pkt = startup_packet(500);
        let frags: Vec<_> = Fragmenter::new(&pkt, 9, 120).unwrap().collect();
        let last = frags.len() - 1;
        for (i, c) in frags.iter().enumerate() {
            let out = r.insert_chunk(t0, 1, PacketMode::Startup, c);
            if i < last {
                assert_eq!(out, ReassemblyOutcome::Pending);
            } else {
                assert_eq!(out, ReassemblyOutcome::Complete(pkt.clone()));
            }
        }
        assert!(r.is_empty() && r.buffered_bytes() == 0);

        // A stalled packet expires after stall_timeout.
        assert_eq!(
            r.insert_chunk(t0, 1, PacketMode::Startup, &frags[0]),
            ReassemblyOutcome::Pending
        );
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        r.handle_timeout(t0 + Duration::from_millis(999));
        assert_eq!(r.len(), 1);
        r.handle_timeout(t0 + Duration::from_secs(1));
        assert!(r.is_empty() && r.buffered_bytes() == 0);

        // Progressing packets live up to max_age.
        let mut now = t0;
        for c in &frags[..last] {
            assert_eq!(
                r.insert_chunk(now, 1, PacketMode::Startup, c),
                ReassemblyOutcome::Pending
            );
            now += Duration::from_millis(900);
        }
        assert_eq!(
            r.insert_chunk(now, 1, PacketMode::Startup, &frags[last]),
            ReassemblyOutcome::Complete(pkt)
        );
    }

    #[test]
    fn discards() {
        use DiscardReason::*;
        let t0 = Instant::now();
        let limits = ReassemblyLimits {
            max_packets: 2,
            max_buffered_bytes: 100,
            max_fragments_per_packet: 4,
            max_packet_len: 80,
            ..Default::default()
        };
        let mut r: Reassembler<u8> = Reassembler::new(limits);
        let ins = |r: &mut Reassembler<u8>, src, mode, more, id, num, data: &[u8]| {
            r.insert(t0, src, mode, more, id, num, data)
        };
        assert_eq!(
            ins(&mut r, 1, PacketMode::Startup, true, 1, 0, &[]),
            ReassemblyOutcome::Discarded(EmptyFragment)
        );
        assert_eq!(
            ins(&mut r, 1, PacketMode::Startup, true, 1, 4, &[1]),
            ReassemblyOutcome::Discarded(TooManyFragments)
        );
        assert_eq!(
            ins(&mut r, 1, PacketMode::Startup, true, 1, 0, &[0; 81]),
            ReassemblyOutcome::Discarded(TooLarge)
        );
        assert_eq!(
            ins(&mut r, 1, PacketMode::Startup, true, 1, 0, &[0x0b]),
            ReassemblyOutcome::Pending
        );
        assert_eq!(
            ins(&mut r, 1, PacketMode::Initiator, true, 1, 1, &[1]),
            ReassemblyOutcome::Discarded(ModeMismatch)
        );
        assert_eq!(
            ins(&mut r, 1, PacketMode::Startup, false, 1, 2, &[2]),
            ReassemblyOutcome::Pending
        );
        assert_eq!(
            ins(&mut r, 1, PacketMode::Startup, true, 1, 3, &[3]),
            ReassemblyOutcome::Discarded(Inconsistent)
        );
        assert_eq!(
            ins(&mut r, 1, PacketMode::Startup, false, 1, 1, &[3]),
            ReassemblyOutcome::Discarded(Inconsistent)
        );
        // Duplicate: ignored.
        assert_eq!(
            ins(&mut r, 1, PacketMode::Startup, true, 1, 0, &[0x0b]),
            ReassemblyOutcome::Pending
        );
        // Same packet id from another source is a different packet.
        assert_eq!(
            ins(&mut r, 2, PacketMode::Startup, true, 1, 0, &[0x0b]),
            ReassemblyOutcome::Pending
        );
        assert_eq!(r.len(), 2);
        // A third packet evicts the oldest (source 1).
        assert_eq!(
            ins(&mut r, 3, PacketMode::Startup, false, 1, 0, &[0x0b; 1]),
            ReassemblyOutcome::Complete(vec![0x0b])
        );
        assert_eq!(
            ins(&mut r, 3, PacketMode::Startup, true, 2, 0, &[0x0b; 1]),
            ReassemblyOutcome::Pending
        );
        assert_eq!(r.len(), 2);
        assert_eq!(
            ins(&mut r, 1, PacketMode::Startup, true, 1, 1, &[1]),
            ReassemblyOutcome::Pending
        );
        // Byte budget: 100 total; a 79-byte fragment evicts others.
        assert_eq!(
            ins(&mut r, 4, PacketMode::Startup, true, 1, 0, &[0x0b; 79]),
            ReassemblyOutcome::Pending
        );
        assert!(r.buffered_bytes() <= 100);
        // Reassembled packet whose header mode differs from its carriers.
        assert_eq!(
            ins(&mut r, 5, PacketMode::Initiator, false, 1, 0, &[0x0b]),
            ReassemblyOutcome::Discarded(ModeMismatch)
        );
        assert_eq!(
            r.insert_chunk(t0, 6, PacketMode::Startup, &Chunk::Close),
            ReassemblyOutcome::Discarded(NotAFragment)
        );
        // Per-packet size limit drops the whole packet.
        assert_eq!(
            ins(&mut r, 4, PacketMode::Startup, true, 1, 1, &[0; 2]),
            ReassemblyOutcome::Discarded(TooLarge)
        );
        assert!(r.buffered_bytes() <= 100);
    }

    proptest! {
        #[test]
        fn split_reassemble_any_order(
            body in proptest::collection::vec(any::<u8>(), 1..3000),
            max_chunk in 12usize..400,
            order_seed in proptest::collection::vec(any::<u32>(), 1..200),
            dups in proptest::collection::vec(any::<u16>(), 0..10),
        ) {
            let mut pkt = UD_EXAMPLE.to_vec();
            pkt.insert(0, 0x02);
            pkt.extend_from_slice(&body);
            let frags: Vec<Chunk<'_>> = Fragmenter::new(&pkt, 77, max_chunk).unwrap().collect();
            prop_assume!(frags.len() <= 1000);
            let limits = ReassemblyLimits { max_fragments_per_packet: 1000, max_packet_len: 1 << 20, max_buffered_bytes: 1 << 20, ..Default::default() };
            let mut r: Reassembler<()> = Reassembler::new(limits);
            // Shuffle deterministically from the seed, then add duplicates.
            let mut order: Vec<usize> = (0..frags.len()).collect();
            for (i, s) in order_seed.iter().enumerate() {
                let n = order.len();
                order.swap(i % n, *s as usize % n);
            }
            for d in &dups {
                let n = order.len();
                let at = *d as usize % n;
                order.insert(at, order[*d as usize % n]);
            }
            let t0 = Instant::now();
            let mut done: Option<Vec<u8>> = None;
            let mut emitted = std::collections::HashSet::new();
            for &i in &order {
                let mut buf = vec![0u8; frags[i].encoded_len()];
                frags[i].emit(&mut buf).unwrap();
                let c = Chunk::parse(buf[0], &buf[3..]).unwrap();
                match r.insert_chunk(t0, (), PacketMode::Responder, &c) {
                    // A duplicate arriving after completion may start and
                    // finish a new copy; the content is always the packet.
                    ReassemblyOutcome::Complete(p) => { prop_assert_eq!(&p, &pkt); done = Some(p); }
                    ReassemblyOutcome::Pending => {}
                    other => prop_assert!(false, "{other:?}"),
                }
                emitted.insert(i);
                if emitted.len() == frags.len() { prop_assert!(done.is_some()); }
            }
            prop_assert_eq!(done, Some(pkt));
        }
    }
}
