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

/// Cuts TCP GSO super-frames into plain frames that each fit one flow
/// fragment (`docs/dataplane.md`, "Loss").
///
/// A super-frame of 64 KiB travels as about 56 fragments of one
/// NoRetransmit message, and the loss of any one of them loses all of it:
/// at 1% packet loss 43% of the super-frames, and the TCP inside sees 40 or
/// more segments vanish at once. Cut into pieces that fit one fragment, a
/// lost packet costs the TCP inside one segment, as on a plain path. The
/// cut is what the kernel's own segmentation (`tcp_gso_segment`) does: the
/// Ethernet, IP and TCP headers are repeated, IPv4 total length, ID (+1
/// per piece) and header checksum and IPv6 payload length are rewritten,
/// the TCP sequence number advances, CWR stays only on the first piece and
/// FIN/PSH only on the last, and the TCP checksum field holds the
/// pseudo-header sum for the piece's length with `F_NEEDS_CSUM`, so the
/// far kernel completes it. Pieces may be shorter than `gso_size` (any
/// segmentation of a TCP stream is valid); the receiving kernel's GRO may
/// merge them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpCut {
    /// Ethernet + IP + TCP header bytes, repeated in every piece.
    hdr_len: usize,
    /// Offset of the IP header (after the Ethernet header).
    l3: usize,
    /// Offset of the TCP header.
    l4: usize,
    v6: bool,
    /// TCP payload bytes per piece.
    piece: usize,
    /// TCP payload bytes of the super-frame.
    payload: usize,
}

impl TcpCut {
    /// How to cut `frame` (Ethernet header onwards, behind `vnet`) into
    /// pieces of at most `max_piece` bytes (Ethernet header onwards), or
    /// `None` when it is not a TCP super-frame this code can cut safely
    /// (no GSO, a VLAN tag, IPv4 options are fine but IPv6 extension
    /// headers are not, headers inconsistent with the virtio header, or
    /// pieces that would carry less than 256 payload bytes).
    pub fn plan(vnet: &VnetHdr, frame: &[u8], max_piece: usize) -> Option<TcpCut> {
        const ETH: usize = 14;
        let kind = vnet.gso_type & !VnetHdr::GSO_ECN;
        if !vnet.is_gso() || vnet.flags & VnetHdr::F_NEEDS_CSUM == 0 {
            return None;
        }
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let (v6, ip_len) = match (kind, ethertype) {
            (VnetHdr::GSO_TCPV4, 0x0800) => {
                let b = *frame.get(ETH)?;
                if b >> 4 != 4 || *frame.get(ETH + 9)? != 6 {
                    return None;
                }
                (false, usize::from(b & 0x0f) * 4)
            }
            (VnetHdr::GSO_TCPV6, 0x86dd) => {
                if *frame.get(ETH)? >> 4 != 6 || *frame.get(ETH + 6)? != 6 {
                    return None;
                }
                (true, 40)
            }
            _ => return None,
        };
        let l4 = ETH + ip_len;
        if ip_len < 20 || usize::from(vnet.csum_start) != l4 || vnet.csum_offset != 16 {
            return None;
        }
        let tcp_len = usize::from(*frame.get(l4 + 12)? >> 4) * 4;
        let hdr_len = l4 + tcp_len;
        if tcp_len < 20 || frame.len() <= hdr_len {
            return None;
        }
        let piece = max_piece
            .checked_sub(hdr_len)?
            .min(usize::from(vnet.gso_size));
        if piece < 256 {
            return None;
        }
        Some(TcpCut {
            hdr_len,
            l3: ETH,
            l4,
            v6,
            piece,
            payload: frame.len() - hdr_len,
        })
    }

    /// Number of pieces.
    pub fn count(&self) -> usize {
        self.payload.div_ceil(self.piece)
    }

    /// Write piece `k` of `frame` into `out` (which must hold
    /// [`TcpCut::piece_len`] bytes); returns its virtio header.
    pub fn write_piece(&self, vnet: &VnetHdr, frame: &[u8], k: usize, out: &mut [u8]) -> VnetHdr {
        let off = k * self.piece;
        let n = self.piece.min(self.payload - off);
        let last = k + 1 == self.count();
        let h = self.hdr_len;
        out[..h].copy_from_slice(&frame[..h]);
        out[h..h + n].copy_from_slice(&frame[h + off..h + off + n]);
        let (l3, l4) = (self.l3, self.l4);
        let tcp_total = h - l4 + n;
        let pseudo = if self.v6 {
            let pl = (tcp_total) as u16;
            out[l3 + 4..l3 + 6].copy_from_slice(&pl.to_be_bytes());
            let mut sum = sum16(&out[l3 + 8..l3 + 40]);
            sum += tcp_total as u32 + 6;
            sum
        } else {
            let total = (l4 - l3 + tcp_total) as u16;
            out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            let id = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]).wrapping_add(k as u16);
            out[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
            out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let c = !fold(sum16(&out[l3..l4]));
            out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            sum16(&out[l3 + 12..l3 + 20]) + tcp_total as u32 + 6
        };
        let seq = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]])
            .wrapping_add(off as u32);
        out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = frame[l4 + 13];
        if k > 0 {
            flags &= !0x80; // CWR
        }
        if !last {
            flags &= !(0x01 | 0x08); // FIN, PSH
        }
        out[l4 + 13] = flags;
        out[l4 + 16..l4 + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
        VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: VnetHdr::GSO_NONE,
            hdr_len: 0,
            gso_size: 0,
            csum_start: vnet.csum_start,
            csum_offset: vnet.csum_offset,
        }
    }

    /// Ethernet + IP + TCP header bytes, repeated in front of every piece.
    pub fn header_len(&self) -> usize {
        self.hdr_len
    }

    /// Length of piece `k`, Ethernet header onwards.
    pub fn piece_len(&self, k: usize) -> usize {
        self.hdr_len + self.piece.min(self.payload - k * self.piece)
    }
}

/// Appends a plain TCP segment to the TCP frame before it in the TAP queue
/// when it continues it, turning the pair into one GSO super-frame: the
/// receiving half of [`TcpCut`] (and of any sender's MSS-sized frames).
/// One TAP write and one trip through the far kernel's stack then carry
/// what took dozens, and the TCP inside acknowledges once per super-frame
/// instead of once per two segments. The rules are those of the kernel's
/// TCP GRO (`tcp_gro_receive`), kept strict: same addresses, ports, IP
/// fields, acknowledgement number, window and options; the next sequence
/// number; ACK (and PSH on the appended segment) as the only flags; every
/// segment but the last of `gso_size`; at most 64 KiB of IP packet.
///
/// `dst` holds the virtio header at `0..VNET_HDR_LEN` and the frame at
/// `dst_frame_at..`; returns whether `src_frame` (behind `src_vnet`) was
/// appended.
pub fn merge_tcp(
    dst: &mut Vec<u8>,
    dst_frame_at: usize,
    src_vnet: &VnetHdr,
    src_frame: &[u8],
) -> bool {
    let Some(hdr) = dst.first_chunk::<VNET_HDR_LEN>() else {
        return false;
    };
    let dst_vnet = VnetHdr::parse(hdr);
    let Some(f) = dst.get(dst_frame_at..) else {
        return false;
    };
    let (Some(a), Some(b)) = (
        Segment::parse(&dst_vnet, f),
        Segment::parse(src_vnet, src_frame),
    ) else {
        return false;
    };
    if src_vnet.is_gso() || a.v6 != b.v6 || a.hdr_len != b.hdr_len {
        return false;
    }
    let (l3, l4, h) = (14, a.l4, a.hdr_len);
    let same = |r: std::ops::Range<usize>| f.get(r.clone()) == src_frame.get(r);
    let ip_same = if a.v6 {
        same(l3..l3 + 4) && same(l3 + 6..l3 + 40)
    } else {
        same(l3..l3 + 2) && same(l3 + 6..l3 + 10) && same(l3 + 12..l3 + 20)
    };
    // Ports, acknowledgement number, data offset, window, options.
    let tcp_same =
        same(l4..l4 + 4) && same(l4 + 8..l4 + 13) && same(l4 + 14..l4 + 16) && same(l4 + 20..h);
    if !same(0..14) || !ip_same || !tcp_same {
        return false;
    }
    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    if a.flags != ACK || (b.flags != ACK && b.flags != ACK | PSH) || f[l4 + 18..l4 + 20] != [0, 0] {
        return false;
    }
    let gso = if dst_vnet.is_gso() {
        usize::from(dst_vnet.gso_size)
    } else {
        a.payload
    };
    if gso == 0
        || a.payload % gso != 0
        || b.payload == 0
        || b.payload > gso
        || b.seq != a.seq.wrapping_add(a.payload as u32)
    {
        return false;
    }
    let ip_len = h - l3 + a.payload + b.payload;
    if ip_len > 0xffff || f.len() + b.payload > TAP_MAX_FRAME {
        return false;
    }
    dst.extend_from_slice(&src_frame[h..]);
    let f = &mut dst[dst_frame_at..];
    let tcp_total = h - l4 + a.payload + b.payload;
    let pseudo = if a.v6 {
        f[l3 + 4..l3 + 6].copy_from_slice(&(tcp_total as u16).to_be_bytes());
        sum16(&f[l3 + 8..l3 + 40]) + tcp_total as u32 + 6
    } else {
        f[l3 + 2..l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        f[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let c = !fold(sum16(&f[l3..l4]));
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        sum16(&f[l3 + 12..l3 + 20]) + tcp_total as u32 + 6
    };
    f[l4 + 13] |= b.flags & PSH;
    f[l4 + 16..l4 + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
    let merged = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: if a.v6 {
            VnetHdr::GSO_TCPV6
        } else {
            VnetHdr::GSO_TCPV4
        },
        hdr_len: h as u16,
        gso_size: gso as u16,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    let mut v = [0u8; VNET_HDR_LEN];
    merged.emit(&mut v);
    dst[..VNET_HDR_LEN].copy_from_slice(&v);
    true
}

/// A TCP segment (or TCP GSO super-frame) [`merge_tcp`] can work with:
/// Ethernet without VLAN tag, IPv4 without options or IPv6 without
/// extension headers, a partial checksum at the TCP header.
struct Segment {
    v6: bool,
    l4: usize,
    hdr_len: usize,
    flags: u8,
    seq: u32,
    payload: usize,
}

impl Segment {
    fn parse(vnet: &VnetHdr, f: &[u8]) -> Option<Segment> {
        if vnet.flags & VnetHdr::F_NEEDS_CSUM == 0 || vnet.csum_offset != 16 {
            return None;
        }
        let kind = vnet.gso_type;
        let v6 = match (u16::from_be_bytes([*f.get(12)?, *f.get(13)?]), kind) {
            (0x0800, VnetHdr::GSO_NONE | VnetHdr::GSO_TCPV4) => {
                if *f.get(14)? != 0x45 || *f.get(14 + 9)? != 6 {
                    return None;
                }
                // Not a fragment.
                if u16::from_be_bytes([*f.get(20)?, *f.get(21)?]) & 0x3fff != 0 {
                    return None;
                }
                false
            }
            (0x86dd, VnetHdr::GSO_NONE | VnetHdr::GSO_TCPV6) => {
                if *f.get(14)? >> 4 != 6 || *f.get(14 + 6)? != 6 {
                    return None;
                }
                true
            }
            _ => return None,
        };
        let l4 = if v6 { 54 } else { 34 };
        if usize::from(vnet.csum_start) != l4 {
            return None;
        }
        let thl = usize::from(*f.get(l4 + 12)? >> 4) * 4;
        let hdr_len = l4 + thl;
        if thl < 20 || f.len() < hdr_len {
            return None;
        }
        // The IP length must match the frame (no Ethernet padding).
        let ip_len = if v6 {
            40 + usize::from(u16::from_be_bytes([f[18], f[19]]))
        } else {
            usize::from(u16::from_be_bytes([f[16], f[17]]))
        };
        if ip_len != f.len() - 14 {
            return None;
        }
        Some(Segment {
            v6,
            l4,
            hdr_len,
            flags: f[l4 + 13],
            seq: u32::from_be_bytes([f[l4 + 4], f[l4 + 5], f[l4 + 6], f[l4 + 7]]),
            payload: f.len() - hdr_len,
        })
    }
}

/// Ones'-complement sum of big-endian 16-bit words (RFC 1071), unfolded.
fn sum16(b: &[u8]) -> u32 {
    let mut sum = 0u32;
    let mut words = b.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [x] = words.remainder() {
        sum += u32::from(*x) << 8;
    }
    sum
}

/// Fold a ones'-complement sum to 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
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

    /// A TCP super-frame as a TAP read gives it: partial checksum (the
    /// pseudo-header sum for the whole length), GSO over `mss`.
    fn super_frame(v6: bool, payload: usize, mss: u16, flags: u8) -> (VnetHdr, Vec<u8>) {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        let tcp_len = 32; // with the timestamp option
        let l3 = f.len();
        if v6 {
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&((tcp_len + payload) as u16).to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24]
                .copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            ip[24..40]
                .copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&ip);
        } else {
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + tcp_len + payload) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
            ip[6] = 0x40;
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&[10, 77, 0, 1]);
            ip[16..20].copy_from_slice(&[10, 77, 0, 2]);
            f.extend_from_slice(&ip);
        }
        let l4 = f.len();
        let mut tcp = vec![0u8; tcp_len];
        tcp[0..2].copy_from_slice(&5201u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&0xffff_f000u32.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = flags;
        tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        f.extend_from_slice(&tcp);
        f.extend((0..payload).map(|i| (i * 7 + i / 251) as u8));
        let _ = l3;
        let vnet = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            gso_type: if v6 {
                VnetHdr::GSO_TCPV6
            } else {
                VnetHdr::GSO_TCPV4
            },
            hdr_len: l4 as u16 + tcp_len as u16,
            gso_size: mss,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        (vnet, f)
    }

    /// The TCP checksum the far kernel computes for a piece with a partial
    /// checksum, and the one computed from scratch: equal when the pseudo-
    /// header sum in the piece is right.
    fn completed_checksum_is_valid(v6: bool, piece: &[u8], l4: usize) -> bool {
        // Kernel completion: fold the sum from csum_start with the field
        // as it is, complement.
        let done = !fold(sum16(&piece[l4..]));
        let mut fresh = piece.to_vec();
        fresh[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let tcp_len = (piece.len() - l4) as u32;
        let pseudo = if v6 {
            sum16(&piece[14 + 8..14 + 40]) + tcp_len + 6
        } else {
            sum16(&piece[14 + 12..14 + 20]) + tcp_len + 6
        };
        let scratch = !fold(pseudo + sum16(&fresh[l4..]));
        done == scratch
    }

    #[test]
    fn a_super_frame_is_cut_into_valid_tcp_segments() {
        for v6 in [false, true] {
            let payload = 10_000;
            // FIN|PSH|ACK|CWR on the super-frame.
            let (vnet, frame) = super_frame(v6, payload, 1348, 0x80 | 0x10 | 0x08 | 0x01);
            let l4 = usize::from(vnet.csum_start);
            let cut = TcpCut::plan(&vnet, &frame, 1170).expect("cuttable");
            let hdr = l4 + 32;
            let piece_payload = (1170 - hdr).min(1348);
            assert_eq!(cut.count(), payload.div_ceil(piece_payload));
            let mut joined = Vec::new();
            let mut out = vec![0u8; 2048];
            for k in 0..cut.count() {
                let n = cut.piece_len(k);
                assert!(n <= 1170);
                let h = cut.write_piece(&vnet, &frame, k, &mut out[..n]);
                let p = &out[..n];
                assert!(!h.is_gso());
                assert_eq!(h.flags, VnetHdr::F_NEEDS_CSUM);
                assert_eq!((h.csum_start, h.csum_offset), (vnet.csum_start, 16));
                assert_eq!(h.check(n, 1418), Ok(()));
                if v6 {
                    assert_eq!(u16::from_be_bytes([p[18], p[19]]) as usize, n - 54);
                } else {
                    assert_eq!(u16::from_be_bytes([p[16], p[17]]) as usize, n - 14);
                    let id = u16::from_be_bytes([p[18], p[19]]);
                    assert_eq!(id, 0xfffeu16.wrapping_add(k as u16));
                    assert_eq!(fold(sum16(&p[14..34])), 0xffff, "IPv4 header checksum");
                }
                let seq = u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]]);
                assert_eq!(seq, 0xffff_f000u32.wrapping_add((k * piece_payload) as u32));
                let flags = p[l4 + 13];
                let last = k + 1 == cut.count();
                assert_eq!(flags & 0x80 != 0, k == 0, "CWR on the first piece only");
                assert_eq!(flags & 0x09 != 0, last, "FIN/PSH on the last piece only");
                assert_eq!(flags & 0x10, 0x10, "ACK on every piece");
                assert!(completed_checksum_is_valid(v6, p, l4));
                // Everything but the rewritten fields is the original header.
                assert_eq!(p[..14], frame[..14]);
                assert_eq!(p[l4 + 20..hdr], frame[l4 + 20..hdr]);
                joined.extend_from_slice(&p[hdr..]);
            }
            assert_eq!(joined, frame[hdr..], "payload intact, in order");
        }
    }

    #[test]
    fn frames_that_cannot_be_cut_safely_are_left_whole() {
        let (vnet, frame) = super_frame(false, 5000, 1348, 0x10);
        assert!(TcpCut::plan(&vnet, &frame, 1170).is_some());
        // Not GSO, or no partial checksum.
        let plain = VnetHdr {
            gso_type: VnetHdr::GSO_NONE,
            gso_size: 0,
            ..vnet
        };
        assert!(TcpCut::plan(&plain, &frame, 1170).is_none());
        let no_csum = VnetHdr { flags: 0, ..vnet };
        assert!(TcpCut::plan(&no_csum, &frame, 1170).is_none());
        // A VLAN tag, a GSO type that does not match the frame.
        let mut vlan = frame.clone();
        vlan[12..14].copy_from_slice(&[0x81, 0x00]);
        assert!(TcpCut::plan(&vnet, &vlan, 1170).is_none());
        let v6_type = VnetHdr {
            gso_type: VnetHdr::GSO_TCPV6,
            ..vnet
        };
        assert!(TcpCut::plan(&v6_type, &frame, 1170).is_none());
        // csum_start not at the TCP header.
        let off = VnetHdr {
            csum_start: vnet.csum_start + 4,
            ..vnet
        };
        assert!(TcpCut::plan(&off, &frame, 1170).is_none());
        // An IPv6 extension header (next header not TCP).
        let (v6, mut f6) = super_frame(true, 5000, 1348, 0x10);
        f6[14 + 6] = 0;
        assert!(TcpCut::plan(&v6, &f6, 1170).is_none());
        // Pieces too small to be worth it, and input cut inside the headers
        // (14 + 20 + 32 bytes) or without payload.
        assert!(TcpCut::plan(&vnet, &frame, 300).is_none());
        for n in 0..=66 {
            assert!(TcpCut::plan(&vnet, &frame[..n], 1170).is_none());
        }
    }

    #[test]
    fn cut_pieces_merge_back_into_the_super_frame() {
        for v6 in [false, true] {
            let (vnet, frame) = super_frame(v6, 20_000, 1348, 0x10 | 0x08);
            let cut = TcpCut::plan(&vnet, &frame, 1200).unwrap();
            let l4 = usize::from(vnet.csum_start);
            let hdr = l4 + 32;
            // The first piece as a TAP write: virtio header, 3 bytes of
            // overlay header, the frame.
            let mut out = vec![0u8; 2048];
            let n = cut.piece_len(0);
            let h = cut.write_piece(&vnet, &frame, 0, &mut out[..n]);
            let mut dst = vec![0u8; VNET_HDR_LEN + 3];
            h.emit((&mut dst[..VNET_HDR_LEN]).try_into().unwrap());
            dst.extend_from_slice(&out[..n]);
            for k in 1..cut.count() {
                let n = cut.piece_len(k);
                let h = cut.write_piece(&vnet, &frame, k, &mut out[..n]);
                assert!(
                    merge_tcp(&mut dst, VNET_HDR_LEN + 3, &h, &out[..n]),
                    "piece {k}"
                );
            }
            let merged = VnetHdr::parse(dst[..VNET_HDR_LEN].try_into().unwrap());
            assert!(merged.is_gso());
            assert_eq!(usize::from(merged.gso_size), cut.piece_len(0) - hdr);
            assert_eq!(usize::from(merged.hdr_len), hdr);
            let f = &dst[VNET_HDR_LEN + 3..];
            assert_eq!(f.len(), frame.len());
            assert_eq!(f[hdr..], frame[hdr..], "payload back in one piece");
            assert_eq!(
                f[l4 + 4..l4 + 8],
                frame[l4 + 4..l4 + 8],
                "first sequence number"
            );
            assert_eq!(f[l4 + 13], 0x10 | 0x08, "PSH from the last piece");
            assert!(completed_checksum_is_valid(v6, f, l4));
            if !v6 {
                assert_eq!(fold(sum16(&f[14..34])), 0xffff);
                assert_eq!(f[16..18], frame[16..18], "IPv4 total length");
            } else {
                assert_eq!(f[18..20], frame[18..20], "IPv6 payload length");
            }
        }
    }

    #[test]
    fn segments_that_do_not_continue_are_not_merged() {
        let (vnet, frame) = super_frame(false, 4000, 1348, 0x10);
        let cut = TcpCut::plan(&vnet, &frame, 1200).unwrap();
        let mut p0 = vec![0u8; cut.piece_len(0)];
        let h0 = cut.write_piece(&vnet, &frame, 0, &mut p0);
        let mut p1 = vec![0u8; cut.piece_len(1)];
        let h1 = cut.write_piece(&vnet, &frame, 1, &mut p1);
        let start = |p: &[u8], h: &VnetHdr| {
            let mut d = vec![0u8; VNET_HDR_LEN];
            h.emit((&mut d[..]).try_into().unwrap());
            d.extend_from_slice(p);
            d
        };
        let l4 = usize::from(vnet.csum_start);
        // In order: merged. Out of order (piece 1 before 0): not.
        assert!(merge_tcp(&mut start(&p0, &h0), VNET_HDR_LEN, &h1, &p1));
        assert!(!merge_tcp(&mut start(&p1, &h1), VNET_HDR_LEN, &h0, &p0));
        // A different port, acknowledgement number, or flags.
        for (at, v) in [(l4, 1u8), (l4 + 9, 1), (l4 + 13, 0x11)] {
            let mut q = p1.clone();
            q[at] ^= v;
            assert!(
                !merge_tcp(&mut start(&p0, &h0), VNET_HDR_LEN, &h1, &q),
                "byte {at}"
            );
        }
        // Garbage never panics.
        for n in 0..p1.len() {
            let _ = merge_tcp(&mut start(&p0, &h0), VNET_HDR_LEN, &h1, &p1[..n]);
            let _ = merge_tcp(
                &mut start(&p0[..n.min(p0.len())], &h0),
                VNET_HDR_LEN,
                &h1,
                &p1,
            );
        }
    }
}
