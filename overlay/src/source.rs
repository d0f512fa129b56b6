//! Which source addresses a member's frames may carry (docs/overlay.md
//! "Frames bound to their sender").
//!
//! A member's [`SourcePolicy`] comes from its certificate (the node core
//! calls [`Overlay::set_source_policy`](crate::Overlay::set_source_policy))
//! or, without one, from its `Hello`: the MAC it announced, or any MAC when
//! it announced itself as a bridge. [`SourcePolicy::check`] is the first-hop
//! test on every frame a member sends: one comparison against a short MAC
//! list, and only when the policy lists IP prefixes, a look at the ARP,
//! IPv4 or IPv6 source address.

use crate::switch::{DropReason, Mac, ETH_HEADER_LEN};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most MACs in a [`MacPolicy::Only`] list; longer lists are cut.
pub const MAX_POLICY_MACS: usize = 16;

/// The MAC a node uses with `interface.mac: auto`: derived from its Ed25519
/// public key, so every member can compute any other member's auto MAC.
/// SHA-256 over a label and the key; the first six bytes with the
/// locally administered bit set and the group bit clear.
pub fn auto_mac(public_key: &[u8; 32]) -> Mac {
    let mut h = Sha256::new();
    h.update(b"ringlan tap mac");
    h.update(public_key);
    let d = h.finalize();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    Mac(mac)
}

/// Which source MACs a member may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacPolicy {
    /// These MACs only (at most [`MAX_POLICY_MACS`]).
    Only(Vec<Mac>),
    /// Any unicast MAC: a node that bridges a site.
    Any,
}

/// An IP prefix a member may use as source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// `None` when `len` is longer than the address family allows. Host
    /// bits in `addr` are ignored.
    pub fn new(addr: IpAddr, len: u8) -> Option<IpPrefix> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(IpPrefix { addr, len })
    }

    /// Whether `ip` lies inside the prefix (same family, same leading
    /// `len` bits).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let keep = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                (u32::from(p) ^ u32::from(a)) & keep == 0
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let keep = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                (u128::from(p) ^ u128::from(a)) & keep == 0
            }
            _ => false,
        }
    }
}

/// The source addresses a member's frames may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePolicy {
    pub macs: MacPolicy,
    /// When present, ARP sender, IPv4 and IPv6 source addresses must lie in
    /// one of these prefixes (addresses a host uses before it has one are
    /// exempt: see [`exempt`]).
    pub ips: Option<Vec<IpPrefix>>,
}

impl SourcePolicy {
    /// One MAC, any IP: what a member's `Hello` without the bridge flag
    /// allows.
    pub fn only(mac: Mac) -> SourcePolicy {
        SourcePolicy {
            macs: MacPolicy::Only(vec![mac]),
            ips: None,
        }
    }

    /// Any MAC, any IP: a bridge's `Hello`.
    pub fn any() -> SourcePolicy {
        SourcePolicy {
            macs: MacPolicy::Any,
            ips: None,
        }
    }

    /// Whether the policy allows MACs beyond a fixed list.
    pub fn is_bridge(&self) -> bool {
        self.macs == MacPolicy::Any
    }

    pub fn allows_mac(&self, mac: Mac) -> bool {
        match &self.macs {
            MacPolicy::Any => !mac.is_group(),
            MacPolicy::Only(list) => list.contains(&mac),
        }
    }

    /// The first-hop test: the frame's source MAC, then (with IP prefixes)
    /// its ARP, IPv4 or IPv6 source address. The caller has checked the
    /// frame is at least an Ethernet header long.
    pub fn check(&self, src: Mac, frame: &[u8]) -> Result<(), DropReason> {
        if !self.allows_mac(src) {
            return Err(DropReason::ForgedMac);
        }
        let Some(prefixes) = &self.ips else {
            return Ok(());
        };
        match source_ip(frame) {
            Some(ip) if !exempt(ip) && !prefixes.iter().any(|p| p.contains(ip)) => {
                Err(DropReason::ForgedIp)
            }
            _ => Ok(()),
        }
    }
}

/// Source addresses every host may use whatever its prefixes: `0.0.0.0`
/// (DHCP clients, ARP probes), IPv4 link-local `169.254.0.0/16`, `::`
/// (duplicate address detection) and IPv6 link-local `fe80::/10`
/// (neighbour discovery, router solicitation).
pub fn exempt(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_unspecified() || a.is_link_local(),
        IpAddr::V6(a) => a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The source address a frame claims at layer 3: the ARP sender protocol
/// address (Ethernet/IPv4 ARP), the IPv4 or IPv6 source. One VLAN tag is
/// looked through. `None` for other EtherTypes and short packets (a short
/// packet carries no address to forge; the receiving stack drops it).
pub fn source_ip(frame: &[u8]) -> Option<IpAddr> {
    let mut at = ETH_HEADER_LEN - 2;
    let mut ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    if ethertype == 0x8100 {
        at += 4;
        ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    }
    let l3 = frame.get(at + 2..)?;
    match ethertype {
        0x0800 => {
            let a: [u8; 4] = l3.get(12..16)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        }
        0x0806 => {
            // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4; sender
            // protocol address at 14.
            if l3.get(..6)? != [0, 1, 8, 0, 6, 4] {
                return None;
            }
            let a: [u8; 4] = l3.get(14..18)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(a)))
        }
        0x86dd => {
            let a: [u8; 16] = l3.get(8..24)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Mac = Mac([2, 0, 0, 0, 0, 7]);
    const N: Mac = Mac([2, 0, 0, 0, 0, 8]);

    fn eth(src: Mac, ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = Mac::BROADCAST.0.to_vec();
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn ipv4(src: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0];
        h.extend_from_slice(&src);
        h.extend_from_slice(&[10, 0, 0, 1]);
        h
    }

    fn arp(sender: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&M.0);
        a.extend_from_slice(&sender);
        a.extend_from_slice(&[0; 10]);
        a
    }

    fn ipv6(src: Ipv6Addr) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0, 0, 0, 58, 255];
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&[0; 16]);
        h
    }

    #[test]
    fn auto_mac_is_stable_local_unicast() {
        for seed in 0..32u8 {
            let m = auto_mac(&[seed; 32]);
            assert_eq!(m.0[0] & 0x03, 0x02, "locally administered unicast");
            assert_eq!(m, auto_mac(&[seed; 32]));
        }
        assert_ne!(auto_mac(&[1; 32]), auto_mac(&[2; 32]));
        // Pinned: the agent's TAPs have used this derivation since the start.
        assert_eq!(auto_mac(&[0; 32]).to_string(), "42:65:61:f6:73:31");
    }

    #[test]
    fn macs_only_the_listed_ones_or_any_unicast() {
        let only = SourcePolicy::only(M);
        assert_eq!(only.check(M, &eth(M, 0x0800, &ipv4([1, 2, 3, 4]))), Ok(()));
        assert_eq!(
            only.check(N, &eth(N, 0x0800, &[])),
            Err(DropReason::ForgedMac)
        );
        let any = SourcePolicy::any();
        assert!(any.is_bridge() && !only.is_bridge());
        assert_eq!(any.check(N, &eth(N, 0x0800, &[])), Ok(()));
        assert_eq!(
            any.check(Mac::BROADCAST, &eth(Mac::BROADCAST, 0x0800, &[])),
            Err(DropReason::ForgedMac)
        );
    }

    #[test]
    fn ip_sources_inside_the_prefixes_or_exempt() {
        let p = SourcePolicy {
            macs: MacPolicy::Only(vec![M]),
            ips: Some(vec![
                IpPrefix::new("10.77.0.0".parse().unwrap(), 24).unwrap(),
                IpPrefix::new("fd00::".parse().unwrap(), 64).unwrap(),
            ]),
        };
        let ok = |f: Vec<u8>| p.check(M, &f);
        assert_eq!(ok(eth(M, 0x0800, &ipv4([10, 77, 0, 9]))), Ok(()));
        assert_eq!(
            ok(eth(M, 0x0800, &ipv4([10, 77, 1, 9]))),
            Err(DropReason::ForgedIp)
        );
        assert_eq!(ok(eth(M, 0x0806, &arp([10, 77, 0, 3]))), Ok(()));
        assert_eq!(
            ok(eth(M, 0x0806, &arp([10, 0, 0, 1]))),
            Err(DropReason::ForgedIp)
        );
        assert_eq!(ok(eth(M, 0x0806, &arp([0, 0, 0, 0]))), Ok(()), "ARP probe");
        assert_eq!(ok(eth(M, 0x0800, &ipv4([0, 0, 0, 0]))), Ok(()), "DHCP");
        assert_eq!(ok(eth(M, 0x0800, &ipv4([169, 254, 3, 4]))), Ok(()));
        assert_eq!(
            ok(eth(M, 0x86dd, &ipv6("fd00::5".parse().unwrap()))),
            Ok(())
        );
        assert_eq!(ok(eth(M, 0x86dd, &ipv6("::".parse().unwrap()))), Ok(()));
        assert_eq!(
            ok(eth(M, 0x86dd, &ipv6("fe80::1".parse().unwrap()))),
            Ok(())
        );
        assert_eq!(
            ok(eth(M, 0x86dd, &ipv6("fd01::5".parse().unwrap()))),
            Err(DropReason::ForgedIp)
        );
        // One VLAN tag is looked through.
        let mut tagged = eth(M, 0x8100, &[0, 5, 0x08, 0x00]);
        tagged.extend_from_slice(&ipv4([192, 0, 2, 1]));
        assert_eq!(ok(tagged), Err(DropReason::ForgedIp));
        // Other EtherTypes and truncated packets carry no address.
        assert_eq!(ok(eth(M, 0x88cc, &[1, 2, 3])), Ok(()));
        assert_eq!(ok(eth(M, 0x0800, &[0x45, 0])), Ok(()));
        assert_eq!(source_ip(&[0u8; 13]), None);
    }

    #[test]
    fn prefixes() {
        assert!(IpPrefix::new("10.0.0.0".parse().unwrap(), 33).is_none());
        let all = IpPrefix::new("0.0.0.0".parse().unwrap(), 0).unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let host = IpPrefix::new("2001:db8::1".parse().unwrap(), 128).unwrap();
        assert!(host.contains("2001:db8::1".parse().unwrap()));
        assert!(!host.contains("2001:db8::2".parse().unwrap()));
    }
}
