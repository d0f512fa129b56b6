//! ARP and IPv6 neighbour discovery answered on the TAP
//! (docs/directory.md "ARP and ND").
//!
//! Without help every ARP request and neighbour solicitation a member's
//! kernel sends is flooded to the whole network (N - 1 messages). When the
//! node's member cache binds the asked address, fresh, to a member's MAC
//! (with a network CA: an address its certificate allows), the node writes
//! the reply to its own TAP instead ([`crate::dataplane`]) and nothing
//! leaves the node. Unknown addresses flood as before.
//!
//! This file is pure: [`question`] recognises a request in an Ethernet
//! frame, [`arp_reply`] and [`na_reply`] build the answer. Both are total
//! (checked indexing, no panic on any input).
//!
//! What is answered, and what never is:
//! - ARP (RFC 826): a request (`oper` 1) for IPv4 over Ethernet, untagged.
//!   Not an ARP probe (sender IP 0.0.0.0, RFC 5227 2.1.1: a host checking
//!   whether an address is free must hear the real holder), not a
//!   gratuitous ARP (sender IP = target IP: an announcement, no question).
//! - ND (RFC 4861 7.2.3/7.2.4): a neighbour solicitation, untagged, IPv6
//!   without extension headers, hop limit 255, ICMPv6 checksum valid, from
//!   a unicast source (not `::`: duplicate address detection, same reason
//!   as ARP probes), for a target that is not multicast. The advertisement
//!   goes back to the solicitation's source with the Solicited and
//!   Override flags and the target link-layer address option.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ringlan_overlay::Mac;

const ETH_HDR: usize = 14;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ARP_LEN: usize = 28;
const IPV6_HDR: usize = 40;
const ICMPV6: u8 = 58;
const NS: u8 = 135;
const NA: u8 = 136;
/// Neighbour solicitation body: type, code, checksum, reserved, target.
const NS_LEN: usize = 24;
/// Advertisement: type, code, checksum, flags, target, one 8-byte option.
const NA_LEN: usize = 32;
/// NA flags: Solicited and Override (RFC 4861 4.4).
const NA_SOLICITED_OVERRIDE: u8 = 0x60;
/// ND option: target link-layer address (RFC 4861 4.6.1).
const OPT_TARGET_LLADDR: u8 = 2;

/// An address question read from the TAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// An ARP request from `mac` (`ip`) for `target`.
    Arp {
        mac: Mac,
        ip: Ipv4Addr,
        target: Ipv4Addr,
    },
    /// A neighbour solicitation from `mac` (`ip`) for `target`.
    Ns {
        mac: Mac,
        ip: Ipv6Addr,
        target: Ipv6Addr,
    },
}

impl Question {
    /// The address asked about.
    pub fn target(&self) -> IpAddr {
        match self {
            Question::Arp { target, .. } => IpAddr::V4(*target),
            Question::Ns { target, .. } => IpAddr::V6(*target),
        }
    }

    /// The MAC of the asking host.
    pub fn asker(&self) -> Mac {
        match self {
            Question::Arp { mac, .. } | Question::Ns { mac, .. } => *mac,
        }
    }

    /// The reply saying `target` is at `mac`.
    pub fn reply(&self, mac: Mac) -> Vec<u8> {
        match *self {
            Question::Arp {
                mac: asker,
                ip,
                target,
            } => arp_reply(asker, ip, target, mac),
            Question::Ns {
                mac: asker,
                ip,
                target,
            } => na_reply(asker, ip, target, mac),
        }
    }
}

/// The big-endian `u16` at `at`, if `b` holds it.
pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(*b.get(at..)?.first_chunk::<2>()?))
}

fn mac_at(b: &[u8], at: usize) -> Option<Mac> {
    Some(Mac(*b.get(at..)?.first_chunk::<6>()?))
}

/// The ARP request or neighbour solicitation in `frame`, if it is one this
/// module answers (see the module doc).
pub fn question(frame: &[u8]) -> Option<Question> {
    match u16_at(frame, 12)? {
        ETHERTYPE_ARP => arp_question(frame.get(ETH_HDR..)?),
        ETHERTYPE_IPV6 => ns_question(frame),
        _ => None,
    }
}

fn arp_question(a: &[u8]) -> Option<Question> {
    let a = a.get(..ARP_LEN)?;
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, oper request.
    if a.get(..8)? != [0, 1, 8, 0, 6, 4, 0, 1] {
        return None;
    }
    let mac = mac_at(a, 8)?;
    let ip = Ipv4Addr::from(*a.get(14..)?.first_chunk::<4>()?);
    let target = Ipv4Addr::from(*a.get(24..)?.first_chunk::<4>()?);
    if ip.is_unspecified() || ip == target || mac.0[0] & 1 != 0 {
        return None;
    }
    Some(Question::Arp { mac, ip, target })
}

fn ns_question(frame: &[u8]) -> Option<Question> {
    let mac = mac_at(frame, 6)?;
    let ip6 = frame.get(ETH_HDR..)?;
    let hdr = ip6.get(..IPV6_HDR)?;
    let payload_len = usize::from(u16_at(hdr, 4)?);
    if hdr.first()? >> 4 != 6 || *hdr.get(6)? != ICMPV6 || *hdr.get(7)? != 255 {
        return None;
    }
    let src = Ipv6Addr::from(*hdr.get(8..)?.first_chunk::<16>()?);
    let dst = Ipv6Addr::from(*hdr.get(24..)?.first_chunk::<16>()?);
    let icmp = ip6.get(IPV6_HDR..IPV6_HDR.checked_add(payload_len)?)?;
    if icmp.len() < NS_LEN || *icmp.first()? != NS || *icmp.get(1)? != 0 {
        return None;
    }
    if checksum(&src, &dst, icmp) != 0 {
        return None;
    }
    let target = Ipv6Addr::from(*icmp.get(8..)?.first_chunk::<16>()?);
    if src.is_unspecified() || src.is_multicast() || target.is_multicast() || mac.0[0] & 1 != 0 {
        return None;
    }
    Some(Question::Ns {
        mac,
        ip: src,
        target,
    })
}

/// The ICMPv6 checksum (RFC 4443 2.3) over the pseudo-header and `icmp`;
/// 0 when `icmp` carries a valid one.
fn checksum(src: &Ipv6Addr, dst: &Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let hi = u64::from(c.first().copied().unwrap_or(0));
            let lo = u64::from(c.get(1).copied().unwrap_or(0));
            sum += (hi << 8) | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(icmp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The ARP reply to `asker` (`asker_ip`): `target` is at `mac`.
pub fn arp_reply(asker: Mac, asker_ip: Ipv4Addr, target: Ipv4Addr, mac: Mac) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HDR + ARP_LEN);
    f.extend_from_slice(&asker.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&asker.0);
    f.extend_from_slice(&asker_ip.octets());
    f
}

/// The solicited neighbour advertisement to `asker` (`asker_ip`): `target`
/// is at `mac`.
pub fn na_reply(asker: Mac, asker_ip: Ipv6Addr, target: Ipv6Addr, mac: Mac) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HDR + IPV6_HDR + NA_LEN);
    f.extend_from_slice(&asker.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(NA_LEN as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]);
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&asker_ip.octets());
    let mut icmp = [0u8; NA_LEN];
    icmp[0] = NA;
    icmp[4] = NA_SOLICITED_OVERRIDE;
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = OPT_TARGET_LLADDR;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac.0);
    let c = checksum(&target, &asker_ip, &icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&icmp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv6Type, LinkSlice, NetSlice,
        PacketBuilder, SlicedPacket, TransportSlice,
    };

    const ASKER: Mac = Mac([0x02, 0xaa, 0, 0, 0, 1]);
    const MEMBER: Mac = Mac([0x02, 0xbb, 0, 0, 0, 2]);
    const ASKER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const MEMBER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const ASKER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
    const MEMBER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

    /// An ARP frame encoded by etherparse.
    fn arp(op: ArpOperation, sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let p = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            op,
            &sha.0,
            &spa.octets(),
            &[0; 6],
            &tpa.octets(),
        )
        .unwrap();
        let mut f = Vec::new();
        PacketBuilder::ethernet2(sha.0, [0xff; 6])
            .arp(p)
            .write(&mut f)
            .unwrap();
        f
    }

    /// A neighbour solicitation encoded by etherparse (checksum included),
    /// with the source link-layer address option.
    fn ns(src: Ipv6Addr, target: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
        let t = target.octets();
        let dst = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(t[13]),
            u16::from_be_bytes([t[14], t[15]]),
        );
        // Target, then the source link-layer address option (type 1,
        // length 1 = 8 bytes).
        let mut payload = t.to_vec();
        payload.extend_from_slice(&[1, 1]);
        payload.extend_from_slice(&ASKER.0);
        let mut f = Vec::new();
        PacketBuilder::ethernet2(ASKER.0, [0x33, 0x33, 0xff, t[13], t[14], t[15]])
            .ipv6(src.octets(), dst.octets(), hop_limit)
            .icmpv6(Icmpv6Type::Unknown {
                type_u8: NS,
                code_u8: 0,
                bytes5to8: [0; 4],
            })
            .write(&mut f, &payload)
            .unwrap();
        f
    }

    #[test]
    fn an_arp_request_is_answered_with_a_reply_etherparse_reads() {
        let req = arp(ArpOperation::REQUEST, ASKER, ASKER_IP, MEMBER_IP);
        let q = question(&req).unwrap();
        assert_eq!(
            q,
            Question::Arp {
                mac: ASKER,
                ip: ASKER_IP,
                target: MEMBER_IP
            }
        );
        assert_eq!(q.target(), IpAddr::V4(MEMBER_IP));
        assert_eq!(q.asker(), ASKER);
        let r = q.reply(MEMBER);
        let p = SlicedPacket::from_ethernet(&r).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = p.link else {
            panic!("no Ethernet header")
        };
        assert_eq!(eth.destination(), ASKER.0);
        assert_eq!(eth.source(), MEMBER.0);
        let Some(NetSlice::Arp(a)) = p.net else {
            panic!("not ARP: {:?}", p.net)
        };
        assert_eq!(a.operation(), ArpOperation::REPLY);
        assert_eq!(a.sender_hw_addr(), MEMBER.0);
        assert_eq!(a.sender_protocol_addr(), MEMBER_IP.octets());
        assert_eq!(a.target_hw_addr(), ASKER.0);
        assert_eq!(a.target_protocol_addr(), ASKER_IP.octets());
    }

    #[test]
    fn probes_announcements_replies_and_other_frames_are_not_questions() {
        // ARP probe (RFC 5227): sender IP 0.0.0.0.
        let probe = arp(
            ArpOperation::REQUEST,
            ASKER,
            Ipv4Addr::UNSPECIFIED,
            MEMBER_IP,
        );
        assert_eq!(question(&probe), None);
        // Gratuitous ARP: sender IP = target IP.
        assert_eq!(
            question(&arp(ArpOperation::REQUEST, ASKER, ASKER_IP, ASKER_IP)),
            None
        );
        // A reply.
        assert_eq!(
            question(&arp(ArpOperation::REPLY, ASKER, ASKER_IP, MEMBER_IP)),
            None
        );
        // An IPv4 UDP packet.
        let mut udp = Vec::new();
        PacketBuilder::ethernet2(ASKER.0, MEMBER.0)
            .ipv4(ASKER_IP.octets(), MEMBER_IP.octets(), 64)
            .udp(1, 2)
            .write(&mut udp, b"x")
            .unwrap();
        assert_eq!(question(&udp), None);
        // Every truncation of a request: none panics, only the whole one
        // is a question.
        let req = arp(ArpOperation::REQUEST, ASKER, ASKER_IP, MEMBER_IP);
        for n in 0..req.len() {
            assert_eq!(question(&req[..n]), None, "{n}");
        }
    }

    #[test]
    fn a_neighbour_solicitation_is_answered_with_a_valid_advertisement() {
        let req = ns(ASKER_IP6, MEMBER_IP6, 255);
        let q = question(&req).unwrap();
        assert_eq!(
            q,
            Question::Ns {
                mac: ASKER,
                ip: ASKER_IP6,
                target: MEMBER_IP6
            }
        );
        let r = q.reply(MEMBER);
        let p = SlicedPacket::from_ethernet(&r).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = p.link else {
            panic!("no Ethernet header")
        };
        assert_eq!(eth.destination(), ASKER.0);
        assert_eq!(eth.source(), MEMBER.0);
        let Some(NetSlice::Ipv6(ip)) = &p.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip.header().source_addr(), MEMBER_IP6);
        assert_eq!(ip.header().destination_addr(), ASKER_IP6);
        assert_eq!(ip.header().hop_limit(), 255);
        let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.type_u8(), NA);
        assert_eq!(icmp.code_u8(), 0);
        // etherparse recomputes the checksum over the pseudo-header.
        let expected = icmp
            .icmp_type()
            .calc_checksum(MEMBER_IP6.octets(), ASKER_IP6.octets(), icmp.payload())
            .unwrap();
        assert_eq!(icmp.checksum(), expected);
        let body = icmp.slice();
        assert_eq!(body[4], NA_SOLICITED_OVERRIDE);
        assert_eq!(&body[8..24], &MEMBER_IP6.octets());
        assert_eq!(&body[24..26], &[OPT_TARGET_LLADDR, 1]);
        assert_eq!(&body[26..32], &MEMBER.0);
    }

    #[test]
    fn dad_bad_checksums_and_low_hop_limits_are_not_questions() {
        // Duplicate address detection: source ::.
        assert_eq!(question(&ns(Ipv6Addr::UNSPECIFIED, MEMBER_IP6, 255)), None);
        // Not from a neighbour (hop limit below 255).
        assert_eq!(question(&ns(ASKER_IP6, MEMBER_IP6, 64)), None);
        // A flipped bit in the target: the checksum no longer holds.
        let mut bad = ns(ASKER_IP6, MEMBER_IP6, 255);
        let at = ETH_HDR + IPV6_HDR + 8 + 15;
        bad[at] ^= 1;
        assert_eq!(question(&bad), None);
        let good = ns(ASKER_IP6, MEMBER_IP6, 255);
        for n in 0..good.len() {
            assert_eq!(question(&good[..n]), None, "{n}");
        }
    }
}
