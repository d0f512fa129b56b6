//! The `virtio_net_hdr` that travels in front of every frame (the TAP is
//! opened with `IFF_VNET_HDR` and TCP offloads; docs/dataplane.md): its
//! codec and the check that decides which frames are carried.

/// Length of the `virtio_net_hdr` in front of every frame on the TAP
/// (without `VIRTIO_NET_F_MRG_RXBUF`, so no `num_buffers` field).
pub const VNET_HDR_LEN: usize = 10;

/// Largest frame (Ethernet header onwards) a read can return: a 64 KiB
/// IP super-frame (IPv6: payload length 65535 plus its 40-byte header)
/// behind an Ethernet header with a VLAN tag, rounded up.
pub const TAP_MAX_FRAME: usize = (64 << 10) + 128;

/// The `virtio_net_hdr` (Virtio 1.1 section 5.1.6, `linux/virtio_net.h`)
/// that precedes each frame on a TAP with `IFF_VNET_HDR`. Fields are
/// little-endian (the kernel's legacy format is host order; ringlan runs on
/// little-endian hosts, docs/dataplane.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// Why a frame (with its virtio header) is not carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// Larger than the TAP MTU allows and not a GSO super-frame, or larger
    /// than any super-frame.
    Oversize,
    /// A GSO type other than TCP over IPv4/IPv6, or a segment size of zero
    /// or beyond the MTU.
    BadVnet,
}

impl FrameCheck {
    /// Drop-counter name.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameCheck::Oversize => "oversize",
            FrameCheck::BadVnet => "bad_vnet",
        }
    }
}

impl VnetHdr {
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
    /// csum_offset` is partial.
    pub const F_NEEDS_CSUM: u8 = 1;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    pub const GSO_TCPV6: u8 = 4;
    /// Flag bit on `gso_type`: the TCP segments carry ECN CWR.
    pub const GSO_ECN: u8 = 0x80;

    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    pub fn emit(&self, out: &mut [u8; VNET_HDR_LEN]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// A GSO super-frame (to be segmented every `gso_size` bytes).
    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }

    /// Whether a frame of `len` bytes (Ethernet header onwards) behind this
    /// header may be carried by a node whose frames are at most
    /// `max_frame` bytes (TAP MTU plus Ethernet header and one VLAN tag).
    /// Frames beyond `max_frame` are legitimate only as TCP GSO
    /// super-frames; the kernel validates the remaining fields on write.
    pub fn check(&self, len: usize, max_frame: usize) -> Result<(), FrameCheck> {
        if !self.is_gso() {
            return if len > max_frame {
                Err(FrameCheck::Oversize)
            } else {
                Ok(())
            };
        }
        match self.gso_type & !Self::GSO_ECN {
            Self::GSO_TCPV4 | Self::GSO_TCPV6 => {}
            _ => return Err(FrameCheck::BadVnet),
        }
        if self.gso_size == 0 || usize::from(self.gso_size) > max_frame {
            return Err(FrameCheck::BadVnet);
        }
        if len > TAP_MAX_FRAME {
            return Err(FrameCheck::Oversize);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnet_header_round_trips_little_endian() {
        let h = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4 | VnetHdr::GSO_ECN,
            hdr_len: 0x0102,
            gso_size: 1348,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0xa5u8; VNET_HDR_LEN];
        h.emit(&mut b);
        assert_eq!(b, [1, 0x81, 2, 1, 0x44, 0x05, 34, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&b), h);
        for seed in 0u8..=255 {
            let b: [u8; VNET_HDR_LEN] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7));
            let mut out = [0u8; VNET_HDR_LEN];
            VnetHdr::parse(&b).emit(&mut out);
            assert_eq!(out, b);
        }
    }

    #[test]
    fn only_tcp_gso_super_frames_may_exceed_the_mtu() {
        let max = 1418;
        let none = VnetHdr::default();
        assert_eq!(none.check(max, max), Ok(()));
        assert_eq!(none.check(max + 1, max), Err(FrameCheck::Oversize));
        let csum = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            ..none
        };
        assert_eq!(csum.check(max + 1, max), Err(FrameCheck::Oversize));
        for t in [
            VnetHdr::GSO_TCPV4,
            VnetHdr::GSO_TCPV6,
            VnetHdr::GSO_TCPV6 | VnetHdr::GSO_ECN,
        ] {
            let g = VnetHdr {
                gso_type: t,
                gso_size: 1348,
                ..csum
            };
            assert!(g.is_gso());
            assert_eq!(g.check(TAP_MAX_FRAME, max), Ok(()), "{g:?}");
            assert_eq!(g.check(TAP_MAX_FRAME + 1, max), Err(FrameCheck::Oversize));
            let zero = VnetHdr { gso_size: 0, ..g };
            assert_eq!(zero.check(3000, max), Err(FrameCheck::BadVnet));
            let big = VnetHdr {
                gso_size: 1419,
                ..g
            };
            assert_eq!(big.check(3000, max), Err(FrameCheck::BadVnet));
        }
        // UDP (3), UDP_L4 (5) and unknown types are not carried.
        for t in [3u8, 5, 2, 0x7f, 0x83] {
            let g = VnetHdr {
                gso_type: t,
                gso_size: 1000,
                ..none
            };
            assert!(g.is_gso());
            assert_eq!(g.check(100, max), Err(FrameCheck::BadVnet), "{g:?}");
        }
        // ECN alone is no GSO type.
        let ecn = VnetHdr {
            gso_type: VnetHdr::GSO_ECN,
            ..none
        };
        assert!(!ecn.is_gso());
    }
}
