//! Multiplex (RFC 7016 section 2.2.2) and plain packet header (2.2.4).

use super::cursor::{Reader, Writer};
use super::WireError;

/// Size of the multiplex header (the scrambled session id).
pub const MULTIPLEX_HEADER_LEN: usize = 4;

const FLAG_TC: u8 = 0x80;
const FLAG_TCR: u8 = 0x40;
const FLAG_TS: u8 = 0x08;
const FLAG_TSE: u8 = 0x04;
const MODE_MASK: u8 = 0x03;

/// Scramble (or, identically, unscramble) a session id with the first two
/// 32-bit words of the encrypted packet (RFC 7016 2.2.2). A packet shorter
/// than 8 bytes counts as if end-padded with zeros. XOR makes this its own
/// inverse: `scramble(scramble(id, p), p) == id`.
pub fn scramble_session_id(session_id: u32, encrypted_packet: &[u8]) -> u32 {
    let mut first = [0u8; 8];
    for (dst, src) in first.iter_mut().zip(encrypted_packet) {
        *dst = *src;
    }
    let [a0, a1, a2, a3, b0, b1, b2, b3] = first;
    session_id ^ u32::from_be_bytes([a0, a1, a2, a3]) ^ u32::from_be_bytes([b0, b1, b2, b3])
}

/// Split a datagram into its scrambled session id and the encrypted packet
/// (RFC 7016 2.2.2). Unscramble with [`scramble_session_id`].
pub fn split_multiplex(datagram: &[u8]) -> Result<(u32, &[u8]), WireError> {
    let (ssid, encrypted) = datagram
        .split_first_chunk::<MULTIPLEX_HEADER_LEN>()
        .ok_or(WireError::Truncated)?;
    Ok((u32::from_be_bytes(*ssid), encrypted))
}

/// Write the scrambled session id into the first four bytes of `datagram`,
/// whose remaining bytes already hold the encrypted packet (so encryption
/// happens in place after reserving [`MULTIPLEX_HEADER_LEN`] bytes).
pub fn write_multiplex_header(datagram: &mut [u8], session_id: u32) -> Result<(), WireError> {
    let (ssid, encrypted) = datagram
        .split_first_chunk_mut::<MULTIPLEX_HEADER_LEN>()
        .ok_or(WireError::BufferTooSmall)?;
    *ssid = scramble_session_id(session_id, encrypted).to_be_bytes();
    Ok(())
}

/// Packet mode (section 2.2.4). Mode 0 is forbidden and never decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketMode {
    Initiator = 1,
    Responder = 2,
    Startup = 3,
}

impl PacketMode {
    /// The mode bits of a packet's first byte; `None` for the forbidden 0.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits & MODE_MASK {
            1 => Some(PacketMode::Initiator),
            2 => Some(PacketMode::Responder),
            3 => Some(PacketMode::Startup),
            _ => None,
        }
    }
}

/// The plain packet header (section 2.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub time_critical: bool,
    pub time_critical_reverse: bool,
    pub mode: PacketMode,
    pub timestamp: Option<u16>,
    pub timestamp_echo: Option<u16>,
}

impl PacketHeader {
    /// The largest encoded header: flags, timestamp and timestamp echo.
    pub const MAX_LEN: usize = 5;

    /// A header with no flags and no timestamps.
    pub fn new(mode: PacketMode) -> Self {
        PacketHeader {
            time_critical: false,
            time_critical_reverse: false,
            mode,
            timestamp: None,
            timestamp_echo: None,
        }
    }

    /// Decode the header at the start of a plain packet; returns it and the
    /// offset of the first chunk. Mode 0 is [`WireError::Invalid`] (the
    /// packet MUST be discarded); reserved bits are ignored.
    pub fn parse(plain: &[u8]) -> Result<(PacketHeader, usize), WireError> {
        let mut r = Reader::new(plain);
        let flags = r.u8()?;
        let mode = PacketMode::from_bits(flags).ok_or(WireError::Invalid)?;
        let timestamp = if flags & FLAG_TS != 0 {
            Some(r.u16()?)
        } else {
            None
        };
        let timestamp_echo = if flags & FLAG_TSE != 0 {
            Some(r.u16()?)
        } else {
            None
        };
        let header = PacketHeader {
            time_critical: flags & FLAG_TC != 0,
            time_critical_reverse: flags & FLAG_TCR != 0,
            mode,
            timestamp,
            timestamp_echo,
        };
        Ok((header, plain.len() - r.len()))
    }

    /// Encoded size: 1, 3 or 5 bytes.
    pub fn encoded_len(&self) -> usize {
        1 + 2 * usize::from(self.timestamp.is_some())
            + 2 * usize::from(self.timestamp_echo.is_some())
    }

    fn flags(&self) -> u8 {
        let mut f = self.mode as u8;
        if self.time_critical {
            f |= FLAG_TC;
        }
        if self.time_critical_reverse {
            f |= FLAG_TCR;
        }
        if self.timestamp.is_some() {
            f |= FLAG_TS;
        }
        if self.timestamp_echo.is_some() {
            f |= FLAG_TSE;
        }
        f
    }

    /// Encode at the start of `out`; returns the bytes written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < self.encoded_len() {
            return Err(WireError::BufferTooSmall);
        }
        let mut w = Writer::new(out);
        w.u8(self.flags())?;
        if let Some(ts) = self.timestamp {
            w.u16(ts)?;
        }
        if let Some(tse) = self.timestamp_echo {
            w.u16(tse)?;
        }
        Ok(w.pos())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scramble_golden() {
        let pkt = [0x01, 0x02, 0x03, 0x04, 0x10, 0x20, 0x30, 0x40, 0xff];
        let ssid = scramble_session_id(0xdead_beef, &pkt);
        assert_eq!(ssid, 0xdead_beef ^ 0x0102_0304 ^ 0x1020_3040);
        assert_eq!(scramble_session_id(ssid, &pkt), 0xdead_beef);
        // Short packets are zero padded to 8 bytes.
        assert_eq!(
            scramble_session_id(7, &[0x01, 0x02, 0x03, 0x04, 0x05]),
            7 ^ 0x0102_0304 ^ 0x0500_0000
        );
        assert_eq!(scramble_session_id(7, &[]), 7);
        assert_eq!(split_multiplex(&[1, 2, 3]), Err(WireError::Truncated));
        assert_eq!(split_multiplex(&[0, 0, 0, 1]), Ok((1, &[][..])));
    }

    #[test]
    fn header_golden() {
        let h = PacketHeader {
            time_critical: true,
            time_critical_reverse: false,
            mode: PacketMode::Initiator,
            timestamp: Some(0x1234),
            timestamp_echo: None,
        };
        let mut out = [0xaa; 3];
        assert_eq!(h.emit(&mut out), Ok(3));
        assert_eq!(out, [0x89, 0x12, 0x34]);
        assert_eq!(PacketHeader::parse(&out), Ok((h, 3)));
        // Startup header as sent by most implementations: 0x0b + timestamp.
        let (h, n) = PacketHeader::parse(&[0x0b, 0x00, 0x01, 0x30]).unwrap();
        assert_eq!((h.mode, h.timestamp, n), (PacketMode::Startup, Some(1), 3));
        let full = PacketHeader {
            timestamp_echo: Some(7),
            ..h
        };
        assert_eq!(full.encoded_len(), PacketHeader::MAX_LEN);
    }

    #[test]
    fn header_rejects() {
        assert_eq!(PacketHeader::parse(&[]), Err(WireError::Truncated));
        assert_eq!(
            PacketHeader::parse(&[0x0c, 0, 0, 0, 0]),
            Err(WireError::Invalid)
        );
        assert_eq!(
            PacketHeader::parse(&[0x0d, 0, 0, 0]),
            Err(WireError::Truncated)
        );
        assert_eq!(PacketHeader::parse(&[0x09, 0]), Err(WireError::Truncated));
        // Reserved bits are ignored.
        assert_eq!(
            PacketHeader::parse(&[0x31]),
            Ok((PacketHeader::new(PacketMode::Initiator), 1))
        );
    }

    #[test]
    fn multiplex_in_place() {
        let mut dgram = [0xaa, 0xaa, 0xaa, 0xaa, 9, 8, 7, 6, 5, 4, 3, 2, 1];
        write_multiplex_header(&mut dgram, 0x0102_0304).unwrap();
        let (ssid, enc) = split_multiplex(&dgram).unwrap();
        assert_eq!(
            (scramble_session_id(ssid, enc), enc),
            (0x0102_0304, &dgram[4..])
        );
        assert_eq!(split_multiplex(&dgram[..3]), Err(WireError::Truncated));
        assert_eq!(
            write_multiplex_header(&mut [0; 3], 1),
            Err(WireError::BufferTooSmall)
        );
    }

    pub(crate) fn arb_header() -> impl Strategy<Value = PacketHeader> {
        (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![
                Just(PacketMode::Initiator),
                Just(PacketMode::Responder),
                Just(PacketMode::Startup)
            ],
            any::<Option<u16>>(),
            any::<Option<u16>>(),
        )
            .prop_map(|(tc, tcr, mode, ts, tse)| PacketHeader {
                time_critical: tc,
                time_critical_reverse: tcr,
                mode,
                timestamp: ts,
                timestamp_echo: tse,
            })
    }

    proptest! {
        #[test]
        fn header_round_trip(h in arb_header()) {
            let mut out = [0xaa; 5];
            let n = h.emit(&mut out).unwrap();
            prop_assert_eq!(n, h.encoded_len());
            prop_assert_eq!(PacketHeader::parse(&out[..n]), Ok((h, n)));
            for cut in 0..n {
                prop_assert_eq!(PacketHeader::parse(&out[..cut]), Err(WireError::Truncated));
                prop_assert_eq!(h.emit(&mut [0u8; 5][..cut]), Err(WireError::BufferTooSmall));
            }
        }

        #[test]
        fn scramble_is_involution(id in any::<u32>(), pkt in proptest::collection::vec(any::<u8>(), 0..16)) {
            prop_assert_eq!(scramble_session_id(scramble_session_id(id, &pkt), &pkt), id);
            let mut dgram = vec![0u8; 4];
            dgram.extend_from_slice(&pkt);
            write_multiplex_header(&mut dgram, id).unwrap();
            let (ssid, enc) = split_multiplex(&dgram).unwrap();
            prop_assert_eq!(scramble_session_id(ssid, enc), id);
        }
    }
}
