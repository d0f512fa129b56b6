//! The member record body: what a node says about itself in the directory
//! (`docs/directory.md` "Member records"). The overlay stores it opaque,
//! signed by the node; this module is its codec.
//!
//! Encoding (big-endian, every length checked):
//!
//! ```text
//! version      u8: 1 without links, 2 with links
//! node id      16 bytes
//! mac          6 bytes (the TAP's MAC)
//! flags        u8: bit 0 relays for others; other bits 0
//! nat          u8: 0 unknown, 1 endpoint-independent, 2 endpoint-dependent
//! published    u64: seconds since the Unix epoch ("last seen")
//! name         u8 length (1..=63) + node name ([A-Za-z0-9._-])
//! certificate  u16 length (0: none; at most MAX_CERT) + encoded certificate
//! ips          u8 count (at most MAX_IPS) + each: u8 family (4 or 6) + address
//! reflexive    u8 count (at most MAX_ADDRS) + each: family + address + u16 port
//! local        u8 count (at most MAX_ADDRS) + the same
//! links        version 2 only: u8 count (1..=MAX_LINKS) + each:
//!                peer   u64: the first 64 bits of the peer's node id
//!                kind   u8: low nibble the link role (0 successor,
//!                       1 predecessor, 2 long, 3 introducer, 4 on-demand,
//!                       5 other), high nibble the path (0 direct through
//!                       NAT or public, 1 direct on a shared subnet (LAN),
//!                       2 relayed)
//!                relay  u8, relayed links only: index in this list of the
//!                       link to the first relay, 0xff when not listed
//! ```
//!
//! A body without links is version 1, byte for byte what nodes before the
//! link lists wrote and read: the node puts its links only in its `node:`
//! record (what `ringlan topology` scans), so its `name:`, `ip:` and `mac:`
//! records stay readable by those nodes. A version-2 body without links is
//! refused (the encoding is canonical).
//!
//! Overlay IPs are unique, in ascending order (the encoding of a set is
//! canonical); link-local addresses (IPv4 169.254.0.0/16, IPv6 fe80::/10)
//! and unspecified ones are never listed: they are not unique across
//! members, so an `ip:` key for them would be a conflict by design.
//! The decoder is total: no panic, allocation bounded by the input.

use std::net::{IpAddr, SocketAddr};

use ringlan_overlay::Mac;
use ringlan_tunnel::NodeId;

use crate::membership::cert::{valid_node_name, MAX_NODE_NAME};
use crate::membership::{put_ip, DecodeError, Reader};
use crate::status::NatBehaviour;

/// The body format version of a body without links.
pub const VERSION: u8 = 1;
/// The body format version of a body with links.
pub const VERSION_LINKS: u8 = 2;
/// Most links a record lists (the node lists its ring links first; see
/// `LinkRole`'s order).
pub const MAX_LINKS: usize = 32;
/// A relayed link whose first relay is not in the list.
const RELAY_NOT_LISTED: u8 = 0xff;
/// Most overlay IPs a record lists (configured first, then learnt).
pub const MAX_IPS: usize = 16;
/// Most reflexive and most local addresses a record lists.
pub const MAX_ADDRS: usize = 8;
/// Longest certificate a record carries (certificates are a few hundred
/// bytes; 32 IPv6 prefixes make the largest about 0.7 KiB).
pub const MAX_CERT: usize = 1024;
/// The largest encoding: fits the overlay's 2048-byte body limit
/// (checked at compile time).
pub const MAX_BODY: usize = 1
    + 16
    + 6
    + 1
    + 1
    + 8
    + 1
    + MAX_NODE_NAME
    + 2
    + MAX_CERT
    + 1
    + MAX_IPS * 17
    + 2 * (1 + MAX_ADDRS * 19)
    + 1
    + MAX_LINKS * 10;

// The largest body fits the overlay's record body limit.
const _: () = assert!(MAX_BODY <= ringlan_overlay::directory::MAX_BODY);

const FLAG_RELAY: u8 = 1;

/// Why a member keeps a link (`ringlan_overlay::LinkKind`), in the order
/// a record lists them when it has more than [`MAX_LINKS`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum LinkRole {
    /// One of its ring successors.
    Successor,
    /// One of its ring predecessors.
    Predecessor,
    /// A Symphony long link (drawn by either end).
    Long,
    /// A session to an introducer.
    Introducer,
    /// A direct session for unicast traffic.
    OnDemand,
    /// Wanted by neither end (closing).
    Other,
}

impl LinkRole {
    const ALL: [LinkRole; 6] = [
        LinkRole::Successor,
        LinkRole::Predecessor,
        LinkRole::Long,
        LinkRole::Introducer,
        LinkRole::OnDemand,
        LinkRole::Other,
    ];
}

/// How a link's packets travel, as its end sees it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum PathClass {
    /// Direct, to an address outside the node's subnets (through NAT or
    /// public addresses).
    Direct,
    /// Direct, to an address on one of the node's subnets.
    Lan,
    /// Over a relayed route.
    Relayed,
}

impl PathClass {
    const ALL: [PathClass; 3] = [PathClass::Direct, PathClass::Lan, PathClass::Relayed];
}

/// One link as its end publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkClaim {
    /// The first 64 bits of the peer's node id (resolved against the
    /// directory's members when drawn).
    pub peer: u64,
    pub role: LinkRole,
    pub path: PathClass,
    /// For a relayed link: the index in the same list of the link to the
    /// first relay (`None`: not listed). Always `None` otherwise.
    pub relay: Option<u8>,
}

impl LinkClaim {
    /// The part of a node id a claim names.
    pub fn prefix(id: NodeId) -> u64 {
        (id.0 >> 64) as u64
    }
}

/// What a member says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberBody {
    pub node_id: NodeId,
    pub name: String,
    /// Its network-CA certificate (encoded), when the network has a CA.
    pub certificate: Option<Vec<u8>>,
    /// Overlay IPs: configured (`interface.addresses`) and learnt from its
    /// own TAP traffic. Ascending, unique, never link-local.
    pub ips: Vec<IpAddr>,
    pub mac: Mac,
    pub nat: NatBehaviour,
    /// Underlay addresses STUN servers saw.
    pub reflexive: Vec<SocketAddr>,
    /// Underlay addresses of its interfaces.
    pub local: Vec<SocketAddr>,
    /// It relays for other members.
    pub relay: bool,
    /// When it published this (seconds since the Unix epoch).
    pub published_unix: u64,
    /// Its current links (only in its `node:` record; at most
    /// [`MAX_LINKS`]).
    pub links: Vec<LinkClaim>,
}

/// Why bytes are not a member record body, or a body cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("member record: {0}")]
    Decode(#[from] DecodeError),
    #[error("member record: bad node name")]
    BadName,
    #[error("member record: unknown flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("member record: unknown NAT kind {0}")]
    UnknownNat(u8),
    #[error("member record: certificate longer than {MAX_CERT} bytes")]
    CertTooLong,
    #[error("member record: more than {MAX_IPS} IPs or {MAX_ADDRS} addresses")]
    TooMany,
    #[error("member record: address family {0}")]
    BadFamily(u8),
    #[error("member record: overlay IPs not ascending, or link-local")]
    IpsNotCanonical,
    #[error("member record: more than {MAX_LINKS} links, or a version-2 body without links")]
    LinkCount,
    #[error("member record: bad link (unknown role or path, or a relay index out of the list)")]
    BadLink,
}

/// Whether an overlay IP may be listed: not unspecified, not link-local,
/// not multicast (see the module doc).
pub fn listable(ip: IpAddr) -> bool {
    !ringlan_overlay::source::exempt(ip) && !ip.is_multicast() && !ip.is_loopback()
}

fn nat_byte(n: NatBehaviour) -> u8 {
    match n {
        NatBehaviour::Unknown => 0,
        NatBehaviour::EndpointIndependent => 1,
        NatBehaviour::EndpointDependent => 2,
    }
}

fn read_ip(r: &mut Reader<'_>) -> Result<IpAddr, BodyError> {
    r.ip().map_err(|e| match e {
        Ok(family) => BodyError::BadFamily(family),
        Err(e) => e.into(),
    })
}

fn read_addrs(r: &mut Reader<'_>) -> Result<Vec<SocketAddr>, BodyError> {
    let n = usize::from(r.u8()?);
    if n > MAX_ADDRS {
        return Err(BodyError::TooMany);
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let ip = read_ip(r)?;
        v.push(SocketAddr::new(ip, r.u16()?));
    }
    Ok(v)
}

impl MemberBody {
    /// The encoding (see the module doc); the lists are cut to their
    /// bounds, the IPs sorted, deduplicated and filtered by [`listable`].
    pub fn encode(&self) -> Result<Vec<u8>, BodyError> {
        if !valid_node_name(self.name.as_bytes()) {
            return Err(BodyError::BadName);
        }
        let cert = self.certificate.as_deref().unwrap_or(&[]);
        if cert.len() > MAX_CERT {
            return Err(BodyError::CertTooLong);
        }
        if self.links.len() > MAX_LINKS {
            return Err(BodyError::LinkCount);
        }
        let mut b = Vec::with_capacity(256 + cert.len() + self.links.len() * 10);
        b.push(if self.links.is_empty() {
            VERSION
        } else {
            VERSION_LINKS
        });
        b.extend_from_slice(&self.node_id.to_bytes());
        b.extend_from_slice(&self.mac.0);
        b.push(if self.relay { FLAG_RELAY } else { 0 });
        b.push(nat_byte(self.nat));
        b.extend_from_slice(&self.published_unix.to_be_bytes());
        b.push(self.name.len() as u8);
        b.extend_from_slice(self.name.as_bytes());
        b.extend_from_slice(&(cert.len() as u16).to_be_bytes());
        b.extend_from_slice(cert);
        let ips = canonical_ips(&self.ips);
        b.push(ips.len() as u8);
        for ip in ips {
            put_ip(&mut b, ip);
        }
        for list in [&self.reflexive, &self.local] {
            let list = &list[..list.len().min(MAX_ADDRS)];
            b.push(list.len() as u8);
            for a in list {
                put_ip(&mut b, a.ip());
                b.extend_from_slice(&a.port().to_be_bytes());
            }
        }
        if !self.links.is_empty() {
            b.push(self.links.len() as u8);
            for (i, l) in self.links.iter().enumerate() {
                b.extend_from_slice(&l.peer.to_be_bytes());
                b.push(l.role as u8 | (l.path as u8) << 4);
                match (l.path, l.relay) {
                    (PathClass::Relayed, None) => b.push(RELAY_NOT_LISTED),
                    (PathClass::Relayed, Some(r))
                        if usize::from(r) < self.links.len() && usize::from(r) != i =>
                    {
                        b.push(r)
                    }
                    (_, None) => {}
                    _ => return Err(BodyError::BadLink),
                }
            }
        }
        Ok(b)
    }

    pub fn decode(bytes: &[u8]) -> Result<MemberBody, BodyError> {
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != VERSION && v != VERSION_LINKS {
            return Err(DecodeError::UnsupportedVersion(v).into());
        }
        let node_id = NodeId::from_bytes(r.array()?);
        let mac = Mac(r.array()?);
        let flags = r.u8()?;
        if flags & !FLAG_RELAY != 0 {
            return Err(BodyError::UnknownFlags(flags & !FLAG_RELAY));
        }
        let nat = match r.u8()? {
            0 => NatBehaviour::Unknown,
            1 => NatBehaviour::EndpointIndependent,
            2 => NatBehaviour::EndpointDependent,
            n => return Err(BodyError::UnknownNat(n)),
        };
        let published_unix = r.u64()?;
        let name = r.short_bytes()?;
        if !valid_node_name(name) {
            return Err(BodyError::BadName);
        }
        // Only ASCII passed the check.
        let name: String = name.iter().map(|&c| char::from(c)).collect();
        let cert_len = usize::from(r.u16()?);
        if cert_len > MAX_CERT {
            return Err(BodyError::CertTooLong);
        }
        let cert = r.bytes(cert_len)?;
        let n = usize::from(r.u8()?);
        if n > MAX_IPS {
            return Err(BodyError::TooMany);
        }
        let mut ips: Vec<IpAddr> = Vec::with_capacity(n);
        for _ in 0..n {
            let ip = read_ip(&mut r)?;
            if !listable(ip) || ips.last().is_some_and(|l| *l >= ip) {
                return Err(BodyError::IpsNotCanonical);
            }
            ips.push(ip);
        }
        let reflexive = read_addrs(&mut r)?;
        let local = read_addrs(&mut r)?;
        let links = if v == VERSION_LINKS {
            read_links(&mut r)?
        } else {
            Vec::new()
        };
        r.finish()?;
        Ok(MemberBody {
            node_id,
            name,
            certificate: (!cert.is_empty()).then(|| cert.to_vec()),
            ips,
            mac,
            nat,
            reflexive,
            local,
            relay: flags & FLAG_RELAY != 0,
            published_unix,
            links,
        })
    }
}

fn read_links(r: &mut Reader<'_>) -> Result<Vec<LinkClaim>, BodyError> {
    let n = usize::from(r.u8()?);
    if n == 0 || n > MAX_LINKS {
        return Err(BodyError::LinkCount);
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let peer = r.u64()?;
        let kind = r.u8()?;
        let role = *LinkRole::ALL
            .get(usize::from(kind & 0x0f))
            .ok_or(BodyError::BadLink)?;
        let path = *PathClass::ALL
            .get(usize::from(kind >> 4))
            .ok_or(BodyError::BadLink)?;
        let relay = match path {
            PathClass::Relayed => match r.u8()? {
                RELAY_NOT_LISTED => None,
                x if usize::from(x) < n && usize::from(x) != i => Some(x),
                _ => return Err(BodyError::BadLink),
            },
            _ => None,
        };
        v.push(LinkClaim {
            peer,
            role,
            path,
            relay,
        });
    }
    Ok(v)
}

/// The IPs as a record lists them: listable, ascending, unique, at most
/// [`MAX_IPS`] (the first ones given win: configured before learnt).
pub fn canonical_ips(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len().min(MAX_IPS));
    for ip in ips.iter().copied().filter(|ip| listable(*ip)) {
        if out.len() == MAX_IPS {
            break;
        }
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out.sort();
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub(crate) fn sample() -> MemberBody {
        MemberBody {
            node_id: NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            name: "laptop".into(),
            certificate: None,
            ips: vec!["10.77.0.2".parse().unwrap(), "fd77::2".parse().unwrap()],
            mac: Mac([0x42, 0x65, 0x61, 0xf6, 0x73, 0x31]),
            nat: NatBehaviour::EndpointIndependent,
            reflexive: vec!["203.0.113.5:61000".parse().unwrap()],
            local: vec!["192.168.1.20:4910".parse().unwrap()],
            relay: true,
            published_unix: 1_800_000_000,
            links: Vec::new(),
        }
    }

    /// [`sample`] with three links: its ring successor on the LAN, a long
    /// link through NAT, and a node reached relayed via the successor.
    pub(crate) fn sample_with_links() -> MemberBody {
        MemberBody {
            links: vec![
                LinkClaim {
                    peer: 0x1111_2222_3333_4444,
                    role: LinkRole::Successor,
                    path: PathClass::Lan,
                    relay: None,
                },
                LinkClaim {
                    peer: 0x5555_6666_7777_8888,
                    role: LinkRole::Long,
                    path: PathClass::Direct,
                    relay: None,
                },
                LinkClaim {
                    peer: 0x9999_aaaa_bbbb_cccc,
                    role: LinkRole::OnDemand,
                    path: PathClass::Relayed,
                    relay: Some(0),
                },
            ],
            ..sample()
        }
    }

    #[test]
    fn links_make_version_two_golden_bytes() {
        let v1 = sample().encode().unwrap();
        let b = sample_with_links().encode().unwrap();
        let mut want = v1.clone();
        want[0] = 2;
        want.push(3);
        want.extend_from_slice(&0x1111_2222_3333_4444u64.to_be_bytes());
        want.push(0x10);
        want.extend_from_slice(&0x5555_6666_7777_8888u64.to_be_bytes());
        want.push(0x02);
        want.extend_from_slice(&0x9999_aaaa_bbbb_ccccu64.to_be_bytes());
        want.extend_from_slice(&[0x24, 0x00]);
        assert_eq!(b, want);
        assert_eq!(MemberBody::decode(&b).unwrap(), sample_with_links());
        // The same body without links is version 1, as before links.
        assert_eq!(v1[0], 1);
        assert_eq!(MemberBody::decode(&v1).unwrap(), sample());
    }

    #[test]
    fn bad_link_lists_are_refused() {
        let good = sample_with_links().encode().unwrap();
        let links_at = sample().encode().unwrap().len();
        // Version 2 with no links, or a version-1 body with a link list.
        let mut empty = sample().encode().unwrap();
        empty[0] = 2;
        empty.push(0);
        assert_eq!(MemberBody::decode(&empty), Err(BodyError::LinkCount));
        let mut v1 = good.clone();
        v1[0] = 1;
        assert!(MemberBody::decode(&v1).is_err());
        // Unknown role, unknown path, relay index out of the list or itself.
        for (at, byte) in [(links_at + 9, 0x06), (links_at + 9, 0x30)] {
            let mut b = good.clone();
            b[at] = byte;
            assert_eq!(MemberBody::decode(&b), Err(BodyError::BadLink), "{byte:#x}");
        }
        let relay_at = good.len() - 1;
        for idx in [2, 3, 0xfe] {
            let mut b = good.clone();
            b[relay_at] = idx;
            assert_eq!(MemberBody::decode(&b), Err(BodyError::BadLink), "{idx}");
        }
        let mut unlisted = good.clone();
        unlisted[relay_at] = 0xff;
        assert_eq!(MemberBody::decode(&unlisted).unwrap().links[2].relay, None);
        // Too many: refused by the encoder and the decoder.
        let mut many = sample_with_links();
        many.links = vec![many.links[0]; MAX_LINKS + 1];
        assert_eq!(many.encode(), Err(BodyError::LinkCount));
        many.links.pop();
        let mut b = many.encode().unwrap();
        b[links_at] = (MAX_LINKS + 1) as u8;
        b.extend_from_slice(&b[b.len() - 9..].to_vec());
        assert_eq!(MemberBody::decode(&b), Err(BodyError::LinkCount));
        // A relay on a link that is not relayed is not encodable.
        let mut odd = sample_with_links();
        odd.links[1].relay = Some(0);
        assert_eq!(odd.encode(), Err(BodyError::BadLink));
        for n in links_at..good.len() {
            assert!(MemberBody::decode(&good[..n]).is_err(), "truncated at {n}");
        }
    }

    #[test]
    fn golden_bytes() {
        let b = sample().encode().unwrap();
        let mut want = vec![1];
        want.extend_from_slice(&0x0123_4567_89ab_cdef_0011_2233_4455_6677u128.to_be_bytes());
        want.extend_from_slice(&[0x42, 0x65, 0x61, 0xf6, 0x73, 0x31, 1, 1]);
        want.extend_from_slice(&1_800_000_000u64.to_be_bytes());
        want.extend_from_slice(b"\x06laptop\x00\x00\x02");
        want.extend_from_slice(&[4, 10, 77, 0, 2, 6, 0xfd, 0x77]);
        want.extend_from_slice(&[0; 13]);
        want.extend_from_slice(&[2, 1, 4, 203, 0, 113, 5, 0xee, 0x48]);
        want.extend_from_slice(&[1, 4, 192, 168, 1, 20, 0x13, 0x2e]);
        assert_eq!(b, want);
        assert_eq!(MemberBody::decode(&b).unwrap(), sample());
    }

    #[test]
    fn ips_are_a_canonical_set_without_link_local() {
        let mut s = sample();
        s.ips = vec![
            "fd77::2".parse().unwrap(),
            "10.77.0.2".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            "169.254.3.4".parse().unwrap(),
            "10.77.0.2".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
        ];
        let d = MemberBody::decode(&s.encode().unwrap()).unwrap();
        assert_eq!(d.ips, sample().ips);
        // A decoder refuses what the encoder never writes.
        let mut b = sample().encode().unwrap();
        let at = b.iter().position(|&x| x == 10).unwrap();
        b[at] = 169;
        b[at + 1] = 254;
        assert_eq!(MemberBody::decode(&b), Err(BodyError::IpsNotCanonical));
    }

    #[test]
    fn the_largest_body_fits_and_bad_inputs_are_refused() {
        let mut s = sample();
        s.name = "n".repeat(MAX_NODE_NAME);
        s.certificate = Some(vec![7; MAX_CERT]);
        s.ips = (0..40u8)
            .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(i))))
            .collect();
        let a: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        s.reflexive = vec![a; 20];
        s.local = vec![a; 20];
        s.links = (0..MAX_LINKS as u64)
            .map(|i| LinkClaim {
                peer: i,
                role: LinkRole::Long,
                path: PathClass::Relayed,
                relay: Some(u8::from(i == 0)),
            })
            .collect();
        let b = s.encode().unwrap();
        assert_eq!(b.len(), MAX_BODY);
        let d = MemberBody::decode(&b).unwrap();
        assert_eq!((d.ips.len(), d.reflexive.len()), (MAX_IPS, MAX_ADDRS));
        s.certificate = Some(vec![7; MAX_CERT + 1]);
        assert_eq!(s.encode(), Err(BodyError::CertTooLong));
        s.certificate = None;
        s.name = "no spaces".into();
        assert_eq!(s.encode(), Err(BodyError::BadName));
        let good = sample().encode().unwrap();
        for n in 0..good.len() {
            assert!(MemberBody::decode(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(MemberBody::decode(&longer).is_err());
        let mut v2 = good.clone();
        v2[0] = 2;
        assert!(MemberBody::decode(&v2).is_err());
        let mut flags = good;
        flags[23] = 0x80;
        assert_eq!(
            MemberBody::decode(&flags),
            Err(BodyError::UnknownFlags(0x80))
        );
    }

    proptest! {
        #[test]
        fn round_trip(
            id in any::<u128>(), mac in any::<[u8; 6]>(), relay in any::<bool>(),
            nat in 0u8..3, published in any::<u64>(), name in "[a-zA-Z0-9._-]{1,63}",
            cert in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
            v4 in proptest::collection::vec(any::<[u8; 4]>(), 0..20),
            ports in proptest::collection::vec(any::<u16>(), 0..10),
            links in proptest::collection::vec((any::<u64>(), 0usize..6, 0usize..3, any::<u8>()), 0..40),
        ) {
            let n = links.len().min(MAX_LINKS);
            let links: Vec<LinkClaim> = links[..n].iter().enumerate().map(|(i, &(peer, role, path, r))| {
                let path = PathClass::ALL[path];
                let r = usize::from(r) % (n + 1);
                LinkClaim {
                    peer,
                    role: LinkRole::ALL[role],
                    path,
                    relay: (path == PathClass::Relayed && r < n && r != i).then_some(r as u8),
                }
            }).collect();
            let body = MemberBody {
                node_id: NodeId(id),
                name,
                certificate: cert,
                ips: v4.iter().map(|a| IpAddr::V4(Ipv4Addr::from(*a))).collect(),
                mac: Mac(mac),
                nat: [NatBehaviour::Unknown, NatBehaviour::EndpointIndependent, NatBehaviour::EndpointDependent][usize::from(nat)],
                reflexive: ports.iter().map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), *p)).collect(),
                local: ports.iter().map(|p| SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), *p)).collect(),
                relay,
                published_unix: published,
                links,
            };
            let b = body.encode().unwrap();
            prop_assert!(b.len() <= MAX_BODY);
            let d = MemberBody::decode(&b).unwrap();
            prop_assert_eq!(&d.ips, &canonical_ips(&body.ips));
            prop_assert_eq!(&d.links, &body.links);
            prop_assert_eq!(d.encode().unwrap(), b);
        }
    }
}
