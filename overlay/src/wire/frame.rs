//! The frame-flow header: what precedes each Ethernet frame on the
//! unreliable frame flow, and how the data path knows whether a frame came
//! direct, is part of a bounded flood, or is routed through this node.
//! Layout in `docs/overlay.md` "Frame-flow messages". Encoding writes in
//! place into header room the caller reserved (no allocation per frame).

use super::reader::Reader;
use super::WireError;
use ringlan_tunnel::NodeId;

/// Frame message kinds (byte 0 of a frame-flow message).
const K_DIRECT: u8 = 0x00;
const K_FLOOD: u8 = 0x01;
const K_ROUTED: u8 = 0x02;

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
    /// Longest encoded header: kind + 16 + 8 + 16 + 1 (flood).
    pub const MAX_LEN: usize = 42;
    /// Length of a routed header: kind + 16 + 16 + 1.
    pub const ROUTED_LEN: usize = 34;

    /// Encoded length of this header.
    pub fn len(&self) -> usize {
        match self {
            FrameHeader::Direct => 1,
            FrameHeader::Flood(_) => Self::MAX_LEN,
            FrameHeader::Routed(_) => Self::ROUTED_LEN,
        }
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
                dst.copy_from_slice(&b);
            }
            FrameHeader::Routed(h) => {
                let mut b = [0u8; Self::ROUTED_LEN];
                b[0] = K_ROUTED;
                b[1..17].copy_from_slice(&h.origin.to_bytes());
                b[17..33].copy_from_slice(&h.destination.to_bytes());
                b[33] = h.hop_limit;
                dst.copy_from_slice(&b);
            }
        }
        Ok(n)
    }

    /// Split a frame-flow message into its header and the Ethernet frame.
    pub fn decode(msg: &[u8]) -> Result<(FrameHeader, &[u8]), WireError> {
        let mut r = Reader::new(msg);
        let h = match r.u8()? {
            K_DIRECT => FrameHeader::Direct,
            K_FLOOD => FrameHeader::Flood(FloodHeader {
                origin: r.node_id()?,
                seq: r.u64()?,
                bound: r.node_id()?,
                hop_limit: r.u8()?,
            }),
            K_ROUTED => FrameHeader::Routed(RoutedHeader {
                origin: r.node_id()?,
                destination: r.node_id()?,
                hop_limit: r.u8()?,
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

    #[test]
    fn flood_header_golden_and_marker() {
        let h = FrameHeader::Flood(FloodHeader {
            origin: NodeId(0xAA),
            seq: 0x0102,
            bound: NodeId(0xBB),
            hop_limit: 9,
        });
        // Pre-fill with a marker to catch bytes never written.
        let mut buf = [0xEEu8; 64];
        let n = h.encode(&mut buf).unwrap();
        assert_eq!(n, 42);
        assert_eq!(buf[0], 1);
        assert_eq!(buf[16], 0xAA);
        assert_eq!(&buf[23..25], &[1, 2]);
        assert_eq!(buf[40], 0xBB);
        assert_eq!(buf[41], 9);
        assert_eq!(buf[42], 0xEE);
        buf[42..48].copy_from_slice(b"frame!");
        let (d, rest) = FrameHeader::decode(&buf[..48]).unwrap();
        assert_eq!(d, h);
        assert_eq!(rest, b"frame!");
        assert_eq!(FrameHeader::Direct.encode(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 0);
        assert_eq!(h.encode(&mut [0u8; 41]), Err(WireError::BufferTooSmall));
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
        });
        let mut buf = [0xEEu8; 40];
        assert_eq!(h.encode(&mut buf).unwrap(), 34);
        assert_eq!(buf[0], 2);
        assert_eq!(buf[16], 0xAA);
        assert_eq!(buf[32], 0xBB);
        assert_eq!(buf[33], 5);
        assert_eq!(buf[34], 0xEE);
        let (d, rest) = FrameHeader::decode(&buf[..36]).unwrap();
        assert_eq!(d, h);
        assert_eq!(rest, &[0xEE, 0xEE]);
        assert_eq!(h.encode(&mut [0u8; 33]), Err(WireError::BufferTooSmall));
        assert_eq!(FrameHeader::decode(&buf[..33]), Err(WireError::Truncated));
    }

    proptest! {
        #[test]
        fn frame_header_round_trip(origin: u128, seq: u64, bound: u128, hop: u8, kind in 0u8..3,
                                   frame in proptest::collection::vec(any::<u8>(), 0..64)) {
            let h = match kind {
                0 => FrameHeader::Direct,
                1 => FrameHeader::Flood(FloodHeader { origin: NodeId(origin), seq, bound: NodeId(bound), hop_limit: hop }),
                _ => FrameHeader::Routed(RoutedHeader { origin: NodeId(origin), destination: NodeId(bound), hop_limit: hop }),
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
