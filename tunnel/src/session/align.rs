//! The length of a session packet's plain text, rounded for the cipher
//! (RFC 7016 2.2.4: "A sender's encryption layer MAY pad the end of a
//! packet with bytes with value 0xff such that the resulting packet is a
//! natural and appropriate size for the cipher"; receivers take the 0xff
//! bytes as padding).
//!
//! `ring`'s AES-256-GCM encrypts and hashes whole 16-byte blocks on its
//! fast path and a trailing partial block on a slower one: sealing and
//! opening a 1,440-byte plain text costs about 60 ns less than 1,444 bytes
//! on the bench machine (`examples/aead_bench.rs`, about a tenth of the
//! pair), and a 72-byte one more than an 80-byte one. So a packet's plain
//! text is padded to whole AES blocks where the packet has room, and the
//! fragments of a message cut in several (a 64 KiB TCP super-frame) are
//! sized so that a full one's packet is whole blocks: at most 15 bytes less
//! each (4 on a 1500-byte IPv4 path). A message that fits one packet
//! unrounded (a full-size TAP frame) still goes whole, unpadded.
//! ChaCha20-Poly1305 and AEGIS-128L show no such step and are not padded.
//!
//! On a relayed route the datagram is also tagged by every hop with
//! AES-256-GCM over the route header and the whole end-to-end datagram
//! (`route_table`): two tags per relay and one at each end against one
//! seal and one open end to end. There the plain text is padded so that
//! the bytes the hop tags cover are whole blocks instead.

use std::net::SocketAddr;

use super::SESSION_DATAGRAM_OVERHEAD;
use crate::crypto::AeadSuite;
use crate::path::is_route_addr;
use crate::route_table::ROUTE_HEADER_LEN;

/// The largest block a plain text is rounded to.
pub(crate) const MAX_BLOCK: usize = 16;

/// Plain text lengths are `residue` modulo `block`, when there is room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlainAlign {
    block: usize,
    residue: usize,
}

impl PlainAlign {
    /// No rounding (before keying; ChaCha20-Poly1305 on a direct path).
    pub(crate) const NONE: PlainAlign = PlainAlign {
        block: 1,
        residue: 0,
    };

    /// The rounding for a session sealing with `suite` (`None` before
    /// keying) and sending to `dest`.
    pub(crate) fn new(suite: Option<AeadSuite>, dest: &SocketAddr) -> PlainAlign {
        if is_route_addr(dest) {
            // Hop tags cover the route header and the whole end-to-end
            // datagram: header, plain text and tag.
            let around = (ROUTE_HEADER_LEN + SESSION_DATAGRAM_OVERHEAD) % MAX_BLOCK;
            return PlainAlign {
                block: MAX_BLOCK,
                residue: (MAX_BLOCK - around) % MAX_BLOCK,
            };
        }
        match suite {
            Some(AeadSuite::Aes256Gcm) => PlainAlign {
                block: MAX_BLOCK,
                residue: 0,
            },
            // AEGIS-128L shows no step at 16- or 32-byte lengths
            // (`docs/crypto-profile.md` 13).
            Some(AeadSuite::ChaCha20Poly1305 | AeadSuite::Aegis128L) | None => PlainAlign::NONE,
        }
    }

    /// The plain text a packet with `room` bytes for it carries at most:
    /// the largest length up to `room` that is rounded, or `room` when no
    /// rounded length fits.
    pub(crate) const fn room(self, room: usize) -> usize {
        if room < self.residue {
            return room;
        }
        room - (room - self.residue) % self.block
    }

    /// The length a plain text of `len` bytes is padded to in a packet
    /// with `room` bytes for it: the next rounded length, or `len` when
    /// that does not fit.
    pub(crate) const fn padded(self, len: usize, room: usize) -> usize {
        let short = (self.block - (len + self.block - self.residue) % self.block) % self.block;
        if len + short <= room {
            len + short
        } else {
            len
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{SESSION_HEADER_LEN, TAG_LEN};
    use crate::route_table::{ROUTE_OVERHEAD, ROUTE_TAG_LEN};
    use crate::wire::packet::MULTIPLEX_HEADER_LEN;

    fn direct() -> SocketAddr {
        "192.0.2.1:4910".parse().unwrap()
    }

    fn route() -> SocketAddr {
        crate::path::route_addr(crate::ids::RouteId(7))
    }

    #[test]
    fn aes_plain_text_is_whole_blocks_and_chacha_is_left_alone() {
        let aes = PlainAlign::new(Some(AeadSuite::Aes256Gcm), &direct());
        // A 1500-byte IPv4 path: 1472 - 28 = 1444 bytes of room.
        assert_eq!(aes.room(1444), 1440);
        assert_eq!(aes.room(1440), 1440);
        assert_eq!(aes.padded(1437, 1440), 1440);
        assert_eq!(aes.padded(1440, 1440), 1440);
        assert_eq!(aes.padded(65, 1440), 80);
        assert_eq!(aes.padded(64, 1440), 64);
        // No room for the padding: left as it is.
        assert_eq!(aes.padded(1443, 1444), 1443);
        let chacha = PlainAlign::new(Some(AeadSuite::ChaCha20Poly1305), &direct());
        assert_eq!(chacha, PlainAlign::NONE);
        assert_eq!(chacha.room(1444), 1444);
        assert_eq!(chacha.padded(65, 1444), 65);
        assert_eq!(PlainAlign::new(None, &direct()), PlainAlign::NONE);
    }

    #[test]
    fn on_a_route_the_bytes_each_hop_tags_are_whole_blocks() {
        for suite in [
            None,
            Some(AeadSuite::Aes256Gcm),
            Some(AeadSuite::ChaCha20Poly1305),
        ] {
            let a = PlainAlign::new(suite, &route());
            let tagged = |plain: usize| {
                ROUTE_HEADER_LEN + MULTIPLEX_HEADER_LEN + SESSION_HEADER_LEN + plain + TAG_LEN
            };
            let room = 1452 - ROUTE_OVERHEAD - SESSION_DATAGRAM_OVERHEAD;
            let full = a.room(room);
            assert!(full <= room && room - full < MAX_BLOCK);
            assert_eq!(tagged(full) % MAX_BLOCK, 0, "{suite:?}");
            for len in [1, 50, 100, full - 20] {
                assert_eq!(tagged(a.padded(len, full)) % MAX_BLOCK, 0, "{len}");
            }
            // The route datagram is what the hop tag covers plus the tag.
            assert_eq!(ROUTE_OVERHEAD - ROUTE_TAG_LEN, ROUTE_HEADER_LEN);
        }
    }

    #[test]
    fn rounding_never_grows_a_packet_nor_takes_more_than_a_block() {
        for a in [
            PlainAlign::NONE,
            PlainAlign::new(Some(AeadSuite::Aes256Gcm), &direct()),
            PlainAlign::new(None, &route()),
        ] {
            for room in 0..200 {
                let r = a.room(room);
                assert!(r <= room);
                assert!(room - r < a.block, "{a:?} {room}");
                for len in 0..=r {
                    let p = a.padded(len, r);
                    assert!(p >= len && p <= r && p - len < a.block, "{a:?} {len} {r}");
                }
            }
        }
    }
}
