//! Test traffic for whole nodes: numbered Ethernet frames that carry their
//! own checksum, and a ledger that checks every frame a TAP received
//! against the frames sent: byte-identical to one of them, delivered to
//! the host it was addressed to at most once, and (on lossless links)
//! all of them.
//!
//! Frame layout (after the Ethernet header, EtherType 0x88b5, "local
//! experimental"): source host (u32), destination host (u32, `u32::MAX`
//! for broadcast), sequence number (u32), payload length (u16), payload
//! (pseudo-random, from the numbers above), FNV-1a 64 of everything
//! before it (u64). All big-endian.

use std::collections::{BTreeMap, BTreeSet};

use super::HostId;

/// The EtherType of test frames (IEEE 802 local experimental 1).
pub const ETHERTYPE: u16 = 0x88b5;
/// The destination host of a broadcast frame.
const BROADCAST: u32 = u32::MAX;
const HEADER: usize = 14 + 4 + 4 + 4 + 2;
/// The longest frame [`Ledger::next`] makes: within a TAP MTU of 1400
/// (1414 bytes with the Ethernet header).
pub const MAX_FRAME: usize = HEADER + 1350 + 8;

/// The Ed25519 secret key of a host in the simulation (kept across its
/// restarts: the same member comes back).
pub fn key(h: HostId) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&(h.0 as u64 + 1).to_le_bytes());
    key[8..16].copy_from_slice(b"sim/key ");
    key
}

/// The MAC of a host in the simulation: the auto MAC of its key, as
/// `interface.mac: auto` gives, so that members not linked to it learn it
/// from its signed broadcasts.
pub fn mac(h: HostId) -> [u8; 6] {
    let public = ed25519_dalek::SigningKey::from_bytes(&key(h))
        .verifying_key()
        .to_bytes();
    ringlan_overlay::auto_mac(&public).0
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Build frame `seq` from `src` to `dst` (`None`: broadcast) with
/// `payload` bytes.
pub fn frame(src: HostId, dst: Option<HostId>, seq: u32, payload: u16) -> Vec<u8> {
    let dst_id = dst.map_or(BROADCAST, |d| d.0 as u32);
    let mut f = Vec::with_capacity(HEADER + usize::from(payload) + 8);
    f.extend_from_slice(&dst.map_or([0xff; 6], mac));
    f.extend_from_slice(&mac(src));
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&(src.0 as u32).to_be_bytes());
    f.extend_from_slice(&dst_id.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&payload.to_be_bytes());
    let mut x = fnv1a(&f[14..]) | 1;
    for _ in 0..payload {
        // xorshift64: cheap bytes that differ per frame.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        f.push(x as u8);
    }
    let sum = fnv1a(&f);
    f.extend_from_slice(&sum.to_be_bytes());
    f
}

/// The (source, destination, sequence) of a well-formed test frame whose
/// checksum holds.
pub fn parse(f: &[u8]) -> Option<(HostId, Option<HostId>, u32)> {
    let (body, sum) = f.split_at_checked(f.len().checked_sub(8)?)?;
    if body.len() < HEADER
        || body[12..14] != ETHERTYPE.to_be_bytes()
        || fnv1a(body).to_be_bytes() != sum
    {
        return None;
    }
    let word = |i: usize| u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
    let len = u16::from_be_bytes([body[26], body[27]]);
    if body.len() != HEADER + usize::from(len) {
        return None;
    }
    let dst = word(18);
    let dst = (dst != BROADCAST).then_some(HostId(dst as usize));
    Some((HostId(word(14) as usize), dst, word(22)))
}

/// What the ledger found wrong or missing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Frames received intact and addressed to the receiver, first time.
    pub delivered: u64,
    /// Received again by the same host.
    pub duplicates: u64,
    /// Not a test frame, or its checksum fails.
    pub corrupt: u64,
    /// A well-formed frame that was never sent (or differs from the one
    /// sent under its numbers).
    pub unknown: u64,
    /// Unicast frames that reached another host (a flooding switch does
    /// this before it has learnt the destination; not an error).
    pub stray: u64,
    /// Sent frames some addressee has not received.
    pub missing: u64,
}

impl Verdict {
    /// Nothing corrupt, unknown or duplicated.
    pub fn is_clean(&self) -> bool {
        self.duplicates == 0 && self.corrupt == 0 && self.unknown == 0
    }
}

/// Every test frame sent, and who received which.
#[derive(Debug, Default)]
pub struct Ledger {
    next_seq: BTreeMap<(HostId, Option<HostId>), u32>,
    sent: BTreeMap<(HostId, Option<HostId>, u32), Vec<u8>>,
    /// (receiver, source, destination, seq).
    received: BTreeSet<(HostId, HostId, Option<HostId>, u32)>,
    verdict: Verdict,
}

impl Ledger {
    /// A new frame from `src` to `dst` (`None`: broadcast); its length
    /// varies with its number from 82 to [`MAX_FRAME`] bytes.
    pub fn next(&mut self, src: HostId, dst: Option<HostId>) -> Vec<u8> {
        let seq = self.next_seq.entry((src, dst)).or_insert(0);
        *seq += 1;
        let payload = 46 + (seq.wrapping_mul(7919) % 1305) as u16;
        let f = frame(src, dst, *seq, payload);
        self.sent.insert((src, dst, *seq), f.clone());
        f
    }

    /// Frames sent so far.
    pub fn sent(&self) -> usize {
        self.sent.len()
    }

    /// `host`'s TAP received `f`.
    pub fn receive(&mut self, host: HostId, f: &[u8]) {
        let Some((src, dst, seq)) = parse(f) else {
            self.verdict.corrupt += 1;
            return;
        };
        if self.sent.get(&(src, dst, seq)).map(Vec::as_slice) != Some(f) {
            self.verdict.unknown += 1;
            return;
        }
        if dst.is_some_and(|d| d != host) || src == host {
            self.verdict.stray += 1;
            return;
        }
        if self.received.insert((host, src, dst, seq)) {
            self.verdict.delivered += 1;
        } else {
            self.verdict.duplicates += 1;
        }
    }

    /// Unicast frames from `src` to `dst` not received (yet).
    pub fn missing(&self, src: HostId, dst: HostId) -> usize {
        self.sent
            .range((src, Some(dst), 0)..=(src, Some(dst), u32::MAX))
            .filter(|((s, d, q), _)| !self.received.contains(&(dst, *s, *d, *q)))
            .count()
    }

    /// Unicast frames not received (yet) by their addressee, as
    /// (source, destination, sequence number, length), for failure
    /// messages.
    pub fn missing_frames(&self) -> Vec<(HostId, HostId, u32, usize)> {
        self.sent
            .iter()
            .filter_map(|((s, d, q), f)| {
                let d = (*d)?;
                (!self.received.contains(&(d, *s, Some(d), *q))).then_some((*s, d, *q, f.len()))
            })
            .collect()
    }

    /// Unicast frames from `src` to `dst` received.
    pub fn delivered(&self, src: HostId, dst: HostId) -> usize {
        self.received
            .range((dst, src, Some(dst), 0)..=(dst, src, Some(dst), u32::MAX))
            .count()
    }

    /// The counts so far; `missing` counts unicast frames not yet at
    /// their addressee.
    pub fn verdict(&self) -> Verdict {
        let missing = self
            .sent
            .keys()
            .filter(|(s, d, q)| d.is_some_and(|d| !self.received.contains(&(d, *s, Some(d), *q))))
            .count() as u64;
        Verdict {
            missing,
            ..self.verdict.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_any_flipped_bit_is_caught() {
        let f = frame(HostId(3), Some(HostId(9)), 77, 100);
        assert_eq!(f.len(), HEADER + 100 + 8);
        assert_eq!(parse(&f), Some((HostId(3), Some(HostId(9)), 77)));
        assert_eq!(&f[..6], &mac(HostId(9)));
        assert_eq!(&f[6..12], &mac(HostId(3)));
        for i in 0..f.len() * 8 {
            let mut g = f.clone();
            g[i / 8] ^= 1 << (i % 8);
            let p = parse(&g);
            // A flip in a MAC is not covered; anything else is.
            assert!(i / 8 < 12 || p.is_none(), "bit {i}");
        }
        assert_eq!(parse(&f[..f.len() - 1]), None);
        assert_eq!(parse(&[]), None);
        let b = frame(HostId(1), None, 1, 46);
        assert_eq!(&b[..6], &[0xff; 6]);
        assert_eq!(parse(&b), Some((HostId(1), None, 1)));
    }

    #[test]
    fn the_ledger_counts_deliveries_duplicates_strays_and_forgeries() {
        let (a, b, c) = (HostId(0), HostId(1), HostId(2));
        let mut l = Ledger::default();
        let f1 = l.next(a, Some(b));
        let f2 = l.next(a, Some(b));
        let bc = l.next(a, None);
        assert_ne!(f1.len(), f2.len(), "sizes vary");
        let mut other = Ledger::default();
        let longest = (0..2000).map(|_| other.next(c, Some(a)).len()).max();
        assert_eq!(longest, Some(MAX_FRAME));
        l.receive(b, &f1);
        l.receive(b, &f1);
        l.receive(c, &f1);
        l.receive(b, &bc);
        l.receive(c, &bc);
        l.receive(a, &bc);
        let mut forged = frame(a, Some(b), 2, 10);
        l.receive(b, &forged);
        forged[20] ^= 1;
        l.receive(b, &forged);
        assert_eq!(l.missing(a, b), 1);
        assert_eq!(l.missing_frames(), vec![(a, b, 2, f2.len())]);
        assert_eq!(l.delivered(a, b), 1);
        let v = l.verdict();
        assert_eq!(
            v,
            Verdict {
                delivered: 3,
                duplicates: 1,
                corrupt: 1,
                unknown: 1,
                stray: 2,
                missing: 1,
            }
        );
        assert!(!v.is_clean());
        l.receive(b, &f2);
        assert_eq!(l.missing(a, b), 0);
    }
}
