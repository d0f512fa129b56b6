//! The frame-flow header: what precedes each Ethernet frame on the
//! unreliable frame flow, and how the data path knows whether a frame came
//! direct, is part of a bounded flood, or is routed through this node.
//! Layout in `docs/overlay.md` "Frame-flow messages". Encoding writes in
//! place into header room the caller reserved (no allocation per frame).
//!
//! Flood and routed frames travel beyond their first hop, so their origin
//! is not the session peer: they carry the origin's Ed25519 public key and
//! its signature over [`signed_message`] (kind, origin, sequence number or
//! destination, SHA-256 of the frame), which a forwarder cannot change. The
//! fields forwarders rewrite (bound, hop limit) are not signed.

use super::reader::Reader;
use super::WireError;
use ringlan_tunnel::NodeId;
use sha2::{Digest, Sha256};

/// Frame message kinds (byte 0 of a frame-flow message).
const K_DIRECT: u8 = 0x00;
const K_FLOOD: u8 = 0x01;
const K_ROUTED: u8 = 0x02;

/// Prefixed to every signed frame message: no other ringlan signature
/// can be taken for one.
pub const FRAME_DOMAIN: &[u8; 17] = b"ringlan frame v1\0";
/// Length of [`signed_message`]'s output.
pub const SIGNED_LEN: usize = FRAME_DOMAIN.len() + 1 + 16 + 16 + 32;

/// Who sent a flood or routed frame, provably: the origin's Ed25519
/// public key (its node id is the hash of the RTMFP certificate for this
/// key) and its signature over [`signed_message`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginAuth {
    pub key: [u8; 32],
    pub sig: [u8; 64],
}

impl OriginAuth {
    /// Length on the wire.
    pub const LEN: usize = 32 + 64;
}

impl std::fmt::Debug for OriginAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OriginAuth(key {:02x}{:02x}..)",
            self.key[0], self.key[1]
        )
    }
}

/// The bytes the origin of a flood (`seq`) or routed frame (`destination`)
/// signs: [`FRAME_DOMAIN`], kind byte, origin, the 16-byte field (the
/// sequence number as a 128-bit big-endian integer, or the destination),
/// SHA-256 of the Ethernet frame. Fixed size, on the stack: no allocation
/// per signed frame.
pub fn signed_message(header: &FrameHeader, frame: &[u8]) -> [u8; SIGNED_LEN] {
    let (kind, origin, field) = match header {
        FrameHeader::Direct => (K_DIRECT, NodeId(0), 0u128),
        FrameHeader::Flood(h) => (K_FLOOD, h.origin, u128::from(h.seq)),
        FrameHeader::Routed(h) => (K_ROUTED, h.origin, h.destination.0),
    };
    let mut m = [0u8; SIGNED_LEN];
    let d = FRAME_DOMAIN.len();
    m[..d].copy_from_slice(FRAME_DOMAIN);
    m[d] = kind;
    m[d + 1..d + 17].copy_from_slice(&origin.to_bytes());
    m[d + 17..d + 33].copy_from_slice(&field.to_be_bytes());
    m[d + 33..].copy_from_slice(&Sha256::digest(frame));
    m
}

/// The bounded-flood header (docs/overlay.md "Bounded flood"): who
/// broadcast the frame, its sequence number for duplicate suppression, the
/// end of the arc the receiver is responsible for, and the remaining hop
/// budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FloodHeader {
    pub origin: NodeId,
    pub seq: u64,
    /// The receiver forwards only to neighbours strictly inside the
    /// clockwise arc (receiver, bound).
    pub bound: NodeId,
    pub hop_limit: u8,
    pub auth: OriginAuth,
}

/// The header of a unicast frame routed over several overlay hops (greedy
/// on ring distance) because its origin has no session to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoutedHeader {
    /// The node whose TAP sent the frame (where its source MAC lives).
    pub origin: NodeId,
    /// The node to deliver the frame to.
    pub destination: NodeId,
    /// Remaining hop budget; a forwarder decrements it and drops the frame
    /// instead of sending it with 0.
    pub hop_limit: u8,
    pub auth: OriginAuth,
}

/// What precedes the Ethernet frame in a frame-flow message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameHeader {
    /// Sent straight to its consumer; not forwarded further.
    Direct,
    /// Part of a bounded flood.
    Flood(FloodHeader),
    /// Unicast on its way to `destination`, possibly through forwarders.
    Routed(RoutedHeader),
}

impl FrameHeader {
    /// Longest encoded header: kind + 16 + 8 + 16 + 1 + 96 (flood).
    pub const MAX_LEN: usize = 42 + OriginAuth::LEN;
    /// Length of a routed header: kind + 16 + 16 + 1 + 96.
    pub const ROUTED_LEN: usize = 34 + OriginAuth::LEN;

    /// Encoded length of this header.
    pub fn len(&self) -> usize {
        match self {
            FrameHeader::Direct => 1,
            FrameHeader::Flood(_) => Self::MAX_LEN,
            FrameHeader::Routed(_) => Self::ROUTED_LEN,
        }
    }

    /// The header with `auth` as its origin's key and signature (a direct
    /// header carries none and is returned as it is).
    pub fn with_auth(mut self, auth: OriginAuth) -> FrameHeader {
        match &mut self {
            FrameHeader::Flood(h) => h.auth = auth,
            FrameHeader::Routed(h) => h.auth = auth,
            FrameHeader::Direct => {}
        }
        self
    }

    /// Always false: a header is at least one byte. (Present for clippy's
    /// `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Write the header at the start of `out`; returns its length. No
    /// allocation: the caller reserves header room in its frame buffer.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let n = self.len();
        let dst = out.get_mut(..n).ok_or(WireError::BufferTooSmall)?;
        match self {
            FrameHeader::Direct => dst[0] = K_DIRECT,
            FrameHeader::Flood(h) => {
                let mut b = [0u8; Self::MAX_LEN];
                b[0] = K_FLOOD;
                b[1..17].copy_from_slice(&h.origin.to_bytes());
                b[17..25].copy_from_slice(&h.seq.to_be_bytes());
                b[25..41].copy_from_slice(&h.bound.to_bytes());
                b[41] = h.hop_limit;
                b[42..74].copy_from_slice(&h.auth.key);
                b[74..].copy_from_slice(&h.auth.sig);
                dst.copy_from_slice(&b);
            }
            FrameHeader::Routed(h) => {
                let mut b = [0u8; Self::ROUTED_LEN];
                b[0] = K_ROUTED;
                b[1..17].copy_from_slice(&h.origin.to_bytes());
                b[17..33].copy_from_slice(&h.destination.to_bytes());
                b[33] = h.hop_limit;
                b[34..66].copy_from_slice(&h.auth.key);
                b[66..].copy_from_slice(&h.auth.sig);
                dst.copy_from_slice(&b);
            }
        }
        Ok(n)
    }

    /// The Ethernet frame of a direct message (`None` for any other kind):
    /// the data path's fast path, which copies no header.
    #[inline]
    pub fn direct_frame(msg: &[u8]) -> Option<&[u8]> {
        match msg.split_first() {
            Some((&K_DIRECT, frame)) => Some(frame),
            _ => None,
        }
    }

    /// Split a frame-flow message into its header and the Ethernet frame.
    pub fn decode(msg: &[u8]) -> Result<(FrameHeader, &[u8]), WireError> {
        let mut r = Reader::new(msg);
        let auth = |r: &mut Reader| -> Result<OriginAuth, WireError> {
            Ok(OriginAuth {
                key: r.array()?,
                sig: r.array()?,
            })
        };
        let h = match r.u8()? {
            K_DIRECT => FrameHeader::Direct,
            K_FLOOD => FrameHeader::Flood(FloodHeader {
                origin: r.node_id()?,
                seq: r.u64()?,
                bound: r.node_id()?,
                hop_limit: r.u8()?,
                auth: auth(&mut r)?,
            }),
            K_ROUTED => FrameHeader::Routed(RoutedHeader {
                origin: r.node_id()?,
                destination: r.node_id()?,
                hop_limit: r.u8()?,
                auth: auth(&mut r)?,
            }),
            k => return Err(WireError::UnknownFrameKind(k)),
        };
        Ok((h, r.rest()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AUTH: OriginAuth = OriginAuth {
        key: [0x11; 32],
        sig: [0x22; 64],
    };

    #[test]
    fn flood_header_golden_and_marker() {
        let h = FrameHeader::Flood(FloodHeader {
            origin: NodeId(0xAA),
            seq: 0x0102,
            bound: NodeId(0xBB),
            hop_limit: 9,
            auth: AUTH,
        });
        // Pre-fill with a marker to catch bytes never written.
        let mut buf = [0xEEu8; 160];
        let n = h.encode(&mut buf).unwrap();
        assert_eq!(n, 138);
        assert_eq!(buf[0], 1);
        assert_eq!(buf[16], 0xAA);
        assert_eq!(&buf[23..25], &[1, 2]);
        assert_eq!(buf[40], 0xBB);
        assert_eq!(buf[41], 9);
        assert_eq!(&buf[42..74], &[0x11; 32]);
        assert_eq!(&buf[74..138], &[0x22; 64]);
        assert_eq!(buf[138], 0xEE);
        buf[138..144].copy_from_slice(b"frame!");
        let (d, rest) = FrameHeader::decode(&buf[..144]).unwrap();
        assert_eq!(d, h);
        assert_eq!(rest, b"frame!");
        // The unauthenticated layout of before is too short now.
        assert_eq!(FrameHeader::decode(&buf[..42]), Err(WireError::Truncated));
        assert_eq!(FrameHeader::direct_frame(&buf[..144]), None);
        assert_eq!(FrameHeader::Direct.encode(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 0);
        assert_eq!(FrameHeader::direct_frame(&buf[..3]), Some(&buf[1..3]));
        assert_eq!(FrameHeader::direct_frame(&[]), None);
        assert_eq!(h.encode(&mut [0u8; 137]), Err(WireError::BufferTooSmall));
        assert_eq!(FrameHeader::decode(&[]), Err(WireError::Truncated));
        assert_eq!(FrameHeader::decode(&[1, 2, 3]), Err(WireError::Truncated));
        assert_eq!(
            FrameHeader::decode(&[7]),
            Err(WireError::UnknownFrameKind(7))
        );
    }

    #[test]
    fn routed_header_golden_and_marker() {
        let h = FrameHeader::Routed(RoutedHeader {
            origin: NodeId(0xAA),
            destination: NodeId(0xBB),
            hop_limit: 5,
            auth: AUTH,
        });
        let mut buf = [0xEEu8; 140];
        assert_eq!(h.encode(&mut buf).unwrap(), 130);
        assert_eq!(buf[0], 2);
        assert_eq!(buf[16], 0xAA);
        assert_eq!(buf[32], 0xBB);
        assert_eq!(buf[33], 5);
        assert_eq!(&buf[34..66], &[0x11; 32]);
        assert_eq!(&buf[66..130], &[0x22; 64]);
        assert_eq!(buf[130], 0xEE);
        let (d, rest) = FrameHeader::decode(&buf[..132]).unwrap();
        assert_eq!(d, h);
        assert_eq!(rest, &[0xEE, 0xEE]);
        assert_eq!(h.encode(&mut [0u8; 129]), Err(WireError::BufferTooSmall));
        assert_eq!(FrameHeader::decode(&buf[..129]), Err(WireError::Truncated));
    }

    #[test]
    fn signed_message_covers_kind_origin_field_and_frame_not_the_forwarders_fields() {
        let f = FloodHeader {
            origin: NodeId(0xAA),
            seq: 0x0102,
            bound: NodeId(0xBB),
            hop_limit: 9,
            auth: AUTH,
        };
        let m = signed_message(&FrameHeader::Flood(f), b"frame");
        assert_eq!(&m[..17], FRAME_DOMAIN);
        assert_eq!(m[17], K_FLOOD);
        assert_eq!(m[33], 0xAA);
        assert_eq!(&m[48..50], &[1, 2]);
        assert_eq!(&m[50..], Sha256::digest(b"frame").as_slice());
        let forwarded = FloodHeader {
            bound: NodeId(1),
            hop_limit: 3,
            ..f
        };
        assert_eq!(m, signed_message(&FrameHeader::Flood(forwarded), b"frame"));
        let other_seq = FloodHeader { seq: 0x0103, ..f };
        assert_ne!(m, signed_message(&FrameHeader::Flood(other_seq), b"frame"));
        assert_ne!(m, signed_message(&FrameHeader::Flood(f), b"frame?"));
        let r = RoutedHeader {
            origin: NodeId(0xAA),
            destination: NodeId(0x0102),
            hop_limit: 4,
            auth: AUTH,
        };
        let rm = signed_message(&FrameHeader::Routed(r), b"frame");
        assert_eq!(rm[17], K_ROUTED);
        assert_ne!(m, rm, "the kind separates a flood from a routed frame");
        let rm2 = signed_message(
            &FrameHeader::Routed(RoutedHeader { hop_limit: 1, ..r }),
            b"frame",
        );
        assert_eq!(rm, rm2);
    }

    proptest! {
        #[test]
        fn frame_header_round_trip(origin: u128, seq: u64, bound: u128, hop: u8, kind in 0u8..3,
                                   key: [u8; 32], sig in proptest::collection::vec(any::<u8>(), 64),
                                   frame in proptest::collection::vec(any::<u8>(), 0..64)) {
            let auth = OriginAuth { key, sig: sig.try_into().unwrap() };
            let h = match kind {
                0 => FrameHeader::Direct,
                1 => FrameHeader::Flood(FloodHeader { origin: NodeId(origin), seq, bound: NodeId(bound), hop_limit: hop, auth }),
                _ => FrameHeader::Routed(RoutedHeader { origin: NodeId(origin), destination: NodeId(bound), hop_limit: hop, auth }),
            };
            let mut buf = vec![0u8; FrameHeader::MAX_LEN + frame.len()];
            let n = h.encode(&mut buf).unwrap();
            buf.truncate(n);
            buf.extend_from_slice(&frame);
            let (d, rest) = FrameHeader::decode(&buf).unwrap();
            prop_assert_eq!(d, h);
            prop_assert_eq!(rest, &frame[..]);
        }
    }
}
