//! Local addresses, candidates and our NAT: what this node tells members
//! about itself, and which addresses it tries when it opens a session.
//!
//! NAT traversal (RFC 7016 3.5.1.5, 3.5.1.6; docs/nat.md): the node
//! registers its local interface addresses with every peer (overlay
//! `Hello`), learns its reflexive address by STUN from the introducers and
//! `stun_servers` (and classifies its NAT's mapping from two answers), and
//! opens a session to a member with every candidate at once
//! ([`assemble_candidates`]): the member's local addresses, its reflexive
//! addresses, and the introducers and other peers that have a session to
//! it, so a Forwarder relays our IHello and the member's RHello punches its
//! NAT while our IHello to its public address punches ours.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ringlan_overlay::wire::{AddrOrigin, TaggedAddr};
use ringlan_tunnel::REDIRECT_THRESHOLD;

use ringlan_tunnel::{NodeId, Path, StunTxId};

use crate::status::{NatBehaviour, NatStatus};
use crate::Node;

/// How often STUN servers (and introducers) are asked for our reflexive
/// address; sooner while none answered yet.
pub const STUN_PERIOD: Duration = Duration::from_secs(60);
pub const STUN_RETRY: Duration = Duration::from_secs(10);

/// An interface address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalIf {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl LocalIf {
    /// Whether `ip` lies in this interface's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let p = u32::from(self.prefix.min(32));
                let mask = u32::MAX.checked_shl(32 - p).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let p = u32::from(self.prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - p).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// Addresses worth telling peers about: not loopback, link-local,
/// unspecified or multicast.
pub fn usable_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_multicast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Our local candidate addresses: `listen` itself when bound to one
/// address, else every interface address of a family the socket serves
/// (an IPv6 wildcard socket also serves IPv4), with the listen port.
pub fn local_candidates(ifs: &[LocalIf], listen: SocketAddr) -> Vec<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    ifs.iter()
        .filter(|l| listen.is_ipv6() || l.ip.is_ipv4())
        .map(|l| SocketAddr::new(l.ip, listen.port()))
        .collect()
}

/// The addresses the main socket serves, as status shows them: the
/// dual-stack IPv6 wildcard `[::]:P` serves `0.0.0.0:P` and `[::]:P`; any
/// other bind address only itself.
pub fn listen_addresses(listen: SocketAddr) -> Vec<SocketAddr> {
    if listen.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        vec![
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), listen.port()),
            listen,
        ]
    } else {
        vec![listen]
    }
}

/// The address families this node can send to (docs/underlay.md): a
/// socket bound to one address serves that address's family, `0.0.0.0`
/// IPv4; the dual-stack `[::]` the families the machine has a usable
/// interface address of (both while none is known). Candidates, STUN
/// servers and punch targets of another family are never tried: the
/// kernel would refuse them (`udp_send_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Families {
    pub fn of(listen: SocketAddr, ifs: &[LocalIf]) -> Families {
        match listen.ip() {
            IpAddr::V4(_) => Families {
                ipv4: true,
                ipv6: false,
            },
            IpAddr::V6(a) if !a.is_unspecified() => Families {
                ipv4: false,
                ipv6: true,
            },
            IpAddr::V6(_) => {
                let ipv4 = ifs.iter().any(|l| l.ip.is_ipv4());
                let ipv6 = ifs.iter().any(|l| l.ip.is_ipv6());
                if ipv4 || ipv6 {
                    Families { ipv4, ipv6 }
                } else {
                    Families {
                        ipv4: true,
                        ipv6: true,
                    }
                }
            }
        }
    }

    /// Whether this node can send to `addr`.
    pub fn reach(self, addr: SocketAddr) -> bool {
        match addr.ip().to_canonical() {
            IpAddr::V4(_) => self.ipv4,
            IpAddr::V6(_) => self.ipv6,
        }
    }
}

/// Whether `ip` is on one of our LANs (a direct LAN path).
pub fn in_local_subnet(ifs: &[LocalIf], ip: IpAddr) -> bool {
    ifs.iter().any(|l| l.contains(ip))
}

/// Every candidate address for a session to a member, in the order they
/// are worth trying (all are tried at once; the first RHello wins):
/// the member's local addresses (same LAN), its reflexive addresses, the
/// rest of what the overlay gave, then forwarders (introducers and peers
/// with a session to it, RFC 7016 3.5.1.5). Our own addresses,
/// duplicates and addresses on `avoid` (our own NAT's public address when
/// the member is on our LAN: no hairpin) are left out; at most
/// [`REDIRECT_THRESHOLD`].
pub fn assemble_candidates(
    member: &[TaggedAddr],
    overlay_addrs: &[SocketAddr],
    forwarders: &[SocketAddr],
    own: &[SocketAddr],
    avoid: &[IpAddr],
) -> Vec<SocketAddr> {
    let local = member
        .iter()
        .filter(|a| a.origin == AddrOrigin::Local)
        .map(|a| a.addr);
    let reflexive = member
        .iter()
        .filter(|a| a.origin == AddrOrigin::Reflexive)
        .map(|a| a.addr);
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in local
        .chain(reflexive)
        .chain(overlay_addrs.iter().copied())
        .chain(forwarders.iter().copied())
    {
        if out.len() >= REDIRECT_THRESHOLD {
            break;
        }
        if !out.contains(&a)
            && !own.contains(&a)
            && !avoid.contains(&a.ip())
            && !a.ip().is_unspecified()
            && a.port() != 0
        {
            out.push(a);
        }
    }
    out
}

/// Reflexive addresses (`mapped`) and NAT mapping from the latest STUN
/// answer of each server, and of each server's alternate address
/// (`alt`: RFC 5780 OTHER-ADDRESS; only classified, never a reflexive
/// address: a symmetric NAT's mapping towards it is of no use to peers).
pub fn nat_status(
    mapped: &BTreeMap<SocketAddr, SocketAddr>,
    alt: &BTreeMap<SocketAddr, SocketAddr>,
) -> NatStatus {
    let obs: Vec<(SocketAddr, SocketAddr)> = mapped
        .iter()
        .chain(alt.iter())
        .map(|(s, m)| (*s, *m))
        .collect();
    let mapping = match ringlan_tunnel::classify_mapping(&obs) {
        ringlan_tunnel::NatMapping::EndpointIndependent => NatBehaviour::EndpointIndependent,
        ringlan_tunnel::NatMapping::EndpointDependent => NatBehaviour::EndpointDependent,
        ringlan_tunnel::NatMapping::Unknown => NatBehaviour::Unknown,
    };
    let mut reflexive: Vec<SocketAddr> = mapped.values().copied().collect();
    reflexive.sort();
    reflexive.dedup();
    NatStatus { mapping, reflexive }
}

impl Node {
    /// Candidates for a session to member `id` (see
    /// [`assemble_candidates`]), of the families this node can send to.
    pub(crate) fn candidates_for(&self, id: NodeId, addrs: &[SocketAddr]) -> Vec<Path> {
        let fam = self.families;
        let addrs: Vec<SocketAddr> = addrs.iter().copied().filter(|a| fam.reach(*a)).collect();
        let addrs = addrs.as_slice();
        let (forwarders, relayed_forwarders): (Vec<Path>, Vec<Path>) = self
            .overlay
            .forwarders_for(id)
            .into_iter()
            .filter_map(|f| self.peers.session_of(f))
            .filter_map(|sid| self.endpoint.session_info(sid))
            .map(|i| i.path)
            .partition(|p| !p.is_relayed());
        let forwarders: Vec<SocketAddr> = forwarders
            .iter()
            .filter_map(|p| p.direct())
            .filter(|a| fam.reach(*a))
            .collect();
        let member: Vec<TaggedAddr> = self
            .overlay
            .member(id)
            .map(|m| m.addrs.as_slice())
            .unwrap_or(&[])
            .iter()
            .filter(|a| fam.reach(a.addr))
            .copied()
            .collect();
        let member = member.as_slice();
        let mut own = self.local_addrs.clone();
        own.extend(self.mapped.values().copied());
        // Behind our own NAT (its reflexive address has our public IP) and
        // on one of our LANs: the LAN path only, no hairpin through the NAT.
        let public: Vec<IpAddr> = self.mapped.values().map(|a| a.ip()).collect();
        let same_nat = member
            .iter()
            .any(|a| a.origin == AddrOrigin::Reflexive && public.contains(&a.addr.ip()));
        let on_lan = member
            .iter()
            .any(|a| a.origin == AddrOrigin::Local && in_local_subnet(&self.ifs, a.addr.ip()));
        if same_nat && on_lan {
            // Forwarders would answer with Redirects to the public address.
            return assemble_candidates(member, addrs, &[], &own, &public)
                .into_iter()
                .map(Path::Direct)
                .collect();
        }
        let mut c: Vec<Path> = assemble_candidates(member, addrs, &forwarders, &own, &[])
            .into_iter()
            .map(Path::Direct)
            .collect();
        // Forwarders this node reaches only over a relayed route.
        c.extend(relayed_forwarders);
        // Relayed routes already set up to it (RELAY_AFTER a failing punch).
        c.extend(self.routes.paths_for(id));
        c
    }

    /// A note for a session through NAT to a peer that has a local address
    /// on one of our LANs (a hairpin path; we do not move the session).
    pub(crate) fn lan_hint(&self, peer: NodeId, remote: SocketAddr) -> Option<String> {
        if in_local_subnet(&self.ifs, remote.ip()) {
            return None;
        }
        let m = self.overlay.member(peer)?;
        let lan = m.addrs.iter().find(|a| {
            a.origin == AddrOrigin::Local
                && a.addr != remote
                && in_local_subnet(&self.ifs, a.addr.ip())
        })?;
        Some(format!("LAN address {} not used", lan.addr))
    }

    /// Ask the STUN servers (introducers and `stun_servers`, and the
    /// alternate addresses they named) for our reflexive address: every
    /// [`STUN_PERIOD`], every [`STUN_RETRY`] while none has answered yet.
    pub(crate) fn stun_tick(&mut self, now: Instant) {
        if now < self.next_stun || self.stun_servers.is_empty() {
            return;
        }
        let answered = !self.mapped.is_empty();
        self.next_stun = now + if answered { STUN_PERIOD } else { STUN_RETRY };
        let alts: Vec<SocketAddr> = self.stun_alt_servers.values().copied().collect();
        for server in self.stun_servers.clone().into_iter().chain(alts) {
            self.stun_ask(now, server);
        }
    }

    /// One Binding query to `server`, unless one is in flight or the
    /// socket cannot reach its address family.
    fn stun_ask(&mut self, now: Instant, server: SocketAddr) {
        if !self.families.reach(server) || self.stun_pending.values().any(|s| *s == server) {
            return;
        }
        match self.endpoint.stun_query(now, server) {
            Ok(tx) => {
                self.stun_pending.insert(tx, server);
            }
            Err(e) => tracing::debug!(%server, error = %e, "STUN query not sent"),
        }
    }

    /// `server` sees us at `mapped` and named `other` (OTHER-ADDRESS) as
    /// its alternate address: a configured server's answer is our
    /// reflexive address, and its alternate address is asked at once; an
    /// alternate address's answer only tells our NAT's mapping behaviour
    /// (with one introducer, the two answers are all there is: docs/nat.md
    /// "Mapping from one introducer").
    pub(crate) fn stun_result(
        &mut self,
        now: Instant,
        tx: StunTxId,
        server: SocketAddr,
        mapped: SocketAddr,
        other: Option<SocketAddr>,
    ) {
        self.stun_pending.remove(&tx);
        if !self.stun_servers.contains(&server) {
            if self.stun_alt_servers.values().any(|a| *a == server)
                && self.alt_mapped.insert(server, mapped) != Some(mapped)
            {
                tracing::debug!(alternate = %server, %mapped, "mapping towards an alternate STUN address");
                self.tell_nat_mapping();
            }
            return;
        }
        match self.mapped.insert(server, mapped) {
            Some(old) if old != mapped => {
                tracing::info!(%server, %old, %mapped, "reflexive address changed");
                self.overlay.reflexive_changed(now, mapped);
            }
            Some(_) => {}
            None => {
                tracing::info!(%server, %mapped, "reflexive address");
                // Members relayed to us punch towards it.
                self.overlay.reflexive_known(mapped);
            }
        }
        let alt = other.and_then(|o| ringlan_tunnel::resolve_other(server, o));
        let alt = alt.filter(|a| !self.stun_servers.contains(a));
        match alt {
            Some(a) if self.stun_alt_servers.get(&server) != Some(&a) => {
                if let Some(old) = self.stun_alt_servers.insert(server, a) {
                    self.alt_mapped.remove(&old);
                }
                self.stun_ask(now, a);
            }
            Some(_) => {}
            None => {
                if let Some(old) = self.stun_alt_servers.remove(&server) {
                    self.alt_mapped.remove(&old);
                }
            }
        }
        self.tell_nat_mapping();
    }

    /// Our members learn from our `Hello` whether our NAT maps
    /// endpoint-dependently, so that a symmetric member does not spend
    /// birthday-punch rounds on us ([`ringlan_tunnel::PunchAttempt`]).
    fn tell_nat_mapping(&mut self) {
        let symmetric =
            nat_status(&self.mapped, &self.alt_mapped).mapping == NatBehaviour::EndpointDependent;
        self.overlay.set_symmetric_nat(symmetric);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tagged(origin: AddrOrigin, a: &str) -> TaggedAddr {
        TaggedAddr {
            origin,
            addr: sa(a),
        }
    }

    #[test]
    fn candidates_local_first_then_reflexive_then_forwarders() {
        let member = [
            tagged(AddrOrigin::Reflexive, "203.0.113.2:40000"),
            tagged(AddrOrigin::Local, "10.0.2.2:4910"),
            tagged(AddrOrigin::Local, "192.168.1.5:4910"),
        ];
        let overlay = [sa("203.0.113.2:40000"), sa("198.51.100.50:4910")];
        let forwarders = [sa("198.51.100.7:4910"), sa("203.0.113.9:4910")];
        let own = [sa("192.168.1.5:4910")];
        assert_eq!(
            assemble_candidates(&member, &overlay, &forwarders, &own, &[]),
            vec![
                sa("10.0.2.2:4910"),
                sa("203.0.113.2:40000"),
                sa("198.51.100.50:4910"),
                sa("198.51.100.7:4910"),
                sa("203.0.113.9:4910"),
            ]
        );
        // Same NAT as ours: no hairpin to its public address.
        let avoid = ["203.0.113.2".parse().unwrap()];
        assert_eq!(
            assemble_candidates(&member, &overlay, &forwarders, &own, &avoid),
            vec![
                sa("10.0.2.2:4910"),
                sa("198.51.100.50:4910"),
                sa("198.51.100.7:4910"),
                sa("203.0.113.9:4910"),
            ]
        );
    }

    #[test]
    fn candidates_are_capped_and_skip_unusable() {
        let member: Vec<TaggedAddr> = (0..30)
            .map(|i| tagged(AddrOrigin::Local, &format!("10.0.0.{}:4910", i + 1)))
            .collect();
        let fwd = [sa("198.51.100.7:4910")];
        let c = assemble_candidates(&member, &[sa("0.0.0.0:4910")], &fwd, &[], &[]);
        assert_eq!(c.len(), REDIRECT_THRESHOLD);
        assert!(!c.contains(&sa("0.0.0.0:4910")));
        // With few member addresses the forwarder is always included.
        let c = assemble_candidates(&member[..3], &[sa("10.0.0.9:0")], &fwd, &[], &[]);
        assert_eq!(c.len(), 4);
        assert_eq!(c[3], fwd[0]);
    }

    #[test]
    fn subnets_and_local_candidates() {
        let ifs = [
            LocalIf {
                ip: "192.168.1.5".parse().unwrap(),
                prefix: 24,
            },
            LocalIf {
                ip: "2001:db8:1::5".parse().unwrap(),
                prefix: 64,
            },
        ];
        assert!(in_local_subnet(&ifs, "192.168.1.200".parse().unwrap()));
        assert!(!in_local_subnet(&ifs, "192.168.2.1".parse().unwrap()));
        assert!(in_local_subnet(&ifs, "2001:db8:1::99".parse().unwrap()));
        assert!(!in_local_subnet(&ifs, "2001:db8:2::1".parse().unwrap()));
        assert!(!in_local_subnet(
            &ifs,
            "::ffff:192.168.1.1".parse().unwrap()
        ));
        let all = LocalIf {
            ip: "10.0.0.1".parse().unwrap(),
            prefix: 0,
        };
        assert!(all.contains("198.51.100.1".parse().unwrap()));
        assert_eq!(
            local_candidates(&ifs, sa("0.0.0.0:4910")),
            vec![sa("192.168.1.5:4910")]
        );
        assert_eq!(
            local_candidates(&ifs, sa("[::]:4910")),
            vec![sa("192.168.1.5:4910"), sa("[2001:db8:1::5]:4910")]
        );
        assert_eq!(
            local_candidates(&ifs, sa("192.0.2.1:7")),
            vec![sa("192.0.2.1:7")]
        );
        assert!(!usable_local("127.0.0.1".parse().unwrap()));
        assert!(!usable_local("169.254.1.1".parse().unwrap()));
        assert!(!usable_local("fe80::1".parse().unwrap()));
        assert!(!usable_local("::1".parse().unwrap()));
        assert!(usable_local("10.1.2.3".parse().unwrap()));
        assert!(usable_local("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn families_follow_the_socket_and_the_interfaces() {
        let ifs = |list: &[&str]| -> Vec<LocalIf> {
            list.iter()
                .map(|s| LocalIf {
                    ip: s.parse().unwrap(),
                    prefix: 64,
                })
                .collect()
        };
        let (a4, a6) = (sa("198.51.100.7:4910"), sa("[2001:db8::7]:4910"));
        let both = ifs(&["192.0.2.11", "2001:db8::11"]);
        let cases = [
            (sa("0.0.0.0:4910"), both.clone(), true, false),
            (sa("192.0.2.11:4910"), both.clone(), true, false),
            (sa("[2001:db8::11]:4910"), both.clone(), false, true),
            (sa("[::]:4910"), both, true, true),
            (sa("[::]:4910"), ifs(&["192.0.2.11"]), true, false),
            (sa("[::]:4910"), ifs(&["2001:db8::11"]), false, true),
            (sa("[::]:4910"), Vec::new(), true, true),
        ];
        for (listen, ifs, ipv4, ipv6) in cases {
            let f = Families::of(listen, &ifs);
            assert_eq!((f.reach(a4), f.reach(a6)), (ipv4, ipv6), "{listen} {ifs:?}");
            // An IPv4-mapped address counts as IPv4.
            assert_eq!(f.reach(sa("[::ffff:198.51.100.7]:4910")), ipv4);
        }
        assert_eq!(
            listen_addresses(sa("[::]:4910")),
            vec![sa("0.0.0.0:4910"), sa("[::]:4910")]
        );
        assert_eq!(
            listen_addresses(sa("0.0.0.0:4910")),
            vec![sa("0.0.0.0:4910")]
        );
        assert_eq!(
            listen_addresses(sa("[2001:db8::1]:7")),
            vec![sa("[2001:db8::1]:7")]
        );
    }

    /// A node with an IPv4 and an IPv6 introducer: over an IPv4 socket it
    /// talks (session openings, STUN) only to the IPv4 one, over a
    /// dual-stack socket on an IPv6-only host only to the IPv6 one, and
    /// over a dual-stack socket with both families to both; nothing is
    /// dropped as `other_family` on the way (nothing of the wrong family
    /// was even produced).
    #[test]
    fn a_node_sends_only_to_the_families_it_can_use() {
        use ringlan_tunnel::{BirthdayConfig, DatagramMachine, RelayLimits};

        use crate::status::TapStatus;
        use crate::{NodeSetup, Role};

        let intro4 = sa("198.51.100.7:4910");
        let intro6 = sa("[2001:db8::7]:4910");
        let setup = |listen: &str, ifs: &[&str]| NodeSetup {
            network: "fam".into(),
            secret: [5; 32],
            key: [9; 32],
            name: "n".into(),
            role: Role::Node,
            mac: [2, 0, 0, 0, 0, 1],
            bridge: false,
            mtu: 1400,
            tap: TapStatus {
                name: "rl-fam".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: 1400,
                addresses: Vec::new(),
            },
            listen: sa(listen),
            introducers: vec![intro4, intro6],
            stun_servers: Vec::new(),
            tcp_introducers: Vec::new(),
            stun_alt_port: 0,
            keepalive: Duration::from_secs(25),
            rekey_interval: Duration::from_secs(120),
            relay: RelayLimits::default(),
            birthday: BirthdayConfig::default(),
            interfaces: ifs
                .iter()
                .map(|ip| LocalIf {
                    ip: ip.parse().unwrap(),
                    prefix: 64,
                })
                .collect(),
            unix_time: 1_800_000_000,
            membership: None,
        };
        let cases = [
            ("0.0.0.0:4910", vec!["192.0.2.11"], vec![intro4]),
            ("[::]:4910", vec!["2001:db8::11"], vec![intro6]),
            (
                "[::]:4910",
                vec!["192.0.2.11", "2001:db8::11"],
                vec![intro4, intro6],
            ),
        ];
        for (listen, ifs, want) in cases {
            let t0 = Instant::now();
            let mut node = Node::new(t0, setup(listen, &ifs), [3; 32]).unwrap();
            let mut buf = vec![0u8; 2048];
            let mut sent = Vec::new();
            // Over a few seconds of retransmissions and STUN retries.
            for step in 0..40 {
                let now = t0 + Duration::from_millis(250 * step);
                node.handle_timeout(now);
                while let Some(o) = node.poll_transmit(now, &mut buf) {
                    if !sent.contains(&o.destination) {
                        sent.push(o.destination);
                    }
                }
            }
            sent.sort();
            assert_eq!(sent, want, "{listen} {ifs:?}");
            let st = node.status(t0 + Duration::from_secs(10));
            assert!(
                !st.drops.contains_key("other_family"),
                "{listen}: {:?}",
                st.drops
            );
        }
    }

    #[test]
    fn nat_status_from_two_servers() {
        let mut m = BTreeMap::new();
        let none = BTreeMap::new();
        assert_eq!(nat_status(&m, &none).mapping, NatBehaviour::Unknown);
        m.insert(sa("198.51.100.7:4910"), sa("203.0.113.1:40000"));
        let n = nat_status(&m, &none);
        assert_eq!(n.mapping, NatBehaviour::Unknown);
        assert_eq!(n.reflexive, vec![sa("203.0.113.1:40000")]);
        m.insert(sa("198.51.100.8:3478"), sa("203.0.113.1:40000"));
        let n = nat_status(&m, &none);
        assert_eq!(n.mapping, NatBehaviour::EndpointIndependent);
        assert_eq!(n.reflexive.len(), 1);
        m.insert(sa("198.51.100.8:3478"), sa("203.0.113.1:40001"));
        let n = nat_status(&m, &none);
        assert_eq!(n.mapping, NatBehaviour::EndpointDependent);
        assert_eq!(n.reflexive.len(), 2);
        let j = serde_json::to_string(&n).unwrap();
        assert!(j.contains(r#""mapping":"endpoint-dependent""#), "{j}");
    }

    #[test]
    fn nat_status_from_one_server_and_its_alternate_port() {
        let mut m = BTreeMap::new();
        let mut alt = BTreeMap::new();
        m.insert(sa("198.51.100.7:4910"), sa("203.0.113.1:40000"));
        alt.insert(sa("198.51.100.7:4911"), sa("203.0.113.1:40000"));
        let n = nat_status(&m, &alt);
        assert_eq!(n.mapping, NatBehaviour::EndpointIndependent);
        alt.insert(sa("198.51.100.7:4911"), sa("203.0.113.1:51234"));
        let n = nat_status(&m, &alt);
        assert_eq!(n.mapping, NatBehaviour::EndpointDependent);
        // The mapping towards the alternate port is not a reflexive address.
        assert_eq!(n.reflexive, vec![sa("203.0.113.1:40000")]);
    }
}
