//! Address mobility (RFC 7016 3.5.4.2, 3.5.1.5): when a session to a peer
//! moves to a new verified address, or this node's own reflexive address
//! changes, every other link hears `Moved`; when a peer reports that a
//! linked node moved, this node asks the agent to probe the new address
//! (rate-limited), which moves the session only if the far end answers.

use super::{Action, Overlay};
use crate::wire::{AddrOrigin, Message, TaggedAddr, MAX_ADDRS};
use ringlan_tunnel::NodeId;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

impl Overlay {
    /// The session to `node` moved to another path (the transport verified
    /// it, RFC 7016 3.5.4.2): `direct` is its new address, or `None` when
    /// it now runs over a relayed route. A new direct address replaces the
    /// member's reflexive address and, as the forwarder that saw the move
    /// (RFC 7016 3.5.1.5), this node tells every other link with `Moved` so
    /// that a peer whose NAT only lets the old address in can probe the new
    /// one. A move onto a relayed route only marks the link relayed: there
    /// is no address to tell, and the member keeps its addresses.
    pub fn peer_moved(&mut self, now: Instant, node: NodeId, direct: Option<SocketAddr>) {
        let Some(link) = self.links.get_mut(&node) else {
            return;
        };
        link.direct = direct;
        link.probed = None;
        let Some(addr) = direct else {
            return;
        };
        let old = link.observed.replace(addr);
        if old == Some(addr) {
            return;
        }
        if let Some(m) = self.members.get_mut(&node) {
            let local = m
                .info
                .addrs
                .iter()
                .any(|a| a.origin == AddrOrigin::Local && a.addr == addr);
            m.info
                .addrs
                .retain(|a| !(a.origin == AddrOrigin::Reflexive && Some(a.addr) == old));
            if !local && m.info.addrs.len() < MAX_ADDRS {
                m.info.addrs.push(TaggedAddr {
                    origin: AddrOrigin::Reflexive,
                    addr,
                });
            }
        }
        self.stats.moves_announced += 1;
        self.announce_move(node, addr);
        self.run_policy(now);
    }

    /// This node's own reflexive address (STUN) changed: tell every link,
    /// so that peers whose NAT filters the new address probe it.
    pub fn reflexive_changed(&mut self, now: Instant, addr: SocketAddr) {
        self.own_reflexive = Some(addr);
        self.stats.moves_announced += 1;
        self.announce_move(self.cfg.node_id, addr);
        self.run_policy(now);
    }

    /// This node's reflexive address (STUN) is first known: links over a
    /// relayed route hear it now, later ones when they come up (after the
    /// `Hello`). A peer relayed to us never observes our address, and
    /// birthday punching needs it (a cone-like peer sprays our public IP, a
    /// symmetric one aims its extra sockets at it). Links over a direct
    /// path observe it themselves; a `Moved` would only make them probe it
    /// (a hairpin through our NAT for a peer on our LAN).
    pub fn reflexive_known(&mut self, addr: SocketAddr) {
        if self.own_reflexive.is_some() {
            return;
        }
        self.own_reflexive = Some(addr);
        let relayed: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(_, l)| l.direct.is_none())
            .map(|(n, _)| *n)
            .collect();
        for n in relayed {
            self.tell_reflexive(n);
        }
    }

    /// `Moved` of ourselves at our reflexive address to the link `to`,
    /// unless it is an address we listen on (no NAT in the way: the
    /// `Hello` lists it already).
    pub(super) fn tell_reflexive(&mut self, to: NodeId) {
        let Some(addr) = self.own_reflexive else {
            return;
        };
        if self.local_addrs.contains(&addr) {
            return;
        }
        let me = self.cfg.node_id;
        self.send(to, &Message::Moved { node: me, addr });
    }

    /// `Moved { node, addr }` to every link except `node` itself.
    fn announce_move(&mut self, node: NodeId, addr: SocketAddr) {
        let msg = Message::Moved { node, addr };
        let to: Vec<NodeId> = self.links.keys().copied().filter(|n| *n != node).collect();
        for n in to {
            self.send(n, &msg);
        }
    }

    /// A member says where its own STUN server sees it: its own
    /// observation, kept as a reflexive address of its record (what
    /// birthday punching aims at; docs/overlay.md "Address provenance").
    /// Its new word replaces its old one (its NAT gave it another public
    /// address, and punching would aim at the first one it finds), unless
    /// this node observed the old one itself. Whoever else it is gossiped
    /// to gets it as relayed.
    fn self_reported(&mut self, node: NodeId, addr: SocketAddr) {
        let observed = self.links.get(&node).and_then(|l| l.observed);
        let Some(m) = self.members.get_mut(&node) else {
            return;
        };
        let old = m.self_reported.replace(addr);
        let addrs = &mut m.info.addrs;
        if let Some(old) = old.filter(|o| *o != addr && Some(*o) != observed) {
            addrs.retain(|a| !(a.origin == AddrOrigin::Reflexive && a.addr == old));
        }
        let known = addrs
            .iter()
            .any(|a| a.addr == addr && a.origin == AddrOrigin::Reflexive);
        if !known && addrs.len() < MAX_ADDRS {
            addrs.push(TaggedAddr {
                origin: AddrOrigin::Reflexive,
                addr,
            });
        }
    }

    /// Peer `from` says `node` is now at `addr`: probe it if our session
    /// runs elsewhere (another address, or a relayed route). A chatty or
    /// hostile peer cannot turn us into a Ping source: at most one probe
    /// per address and second, each peer's reports within its
    /// `moved_per_peer` budget, and every probe within its destination
    /// IP's `probes_per_ip` budget (`budget.rs`). The probe itself proves
    /// nothing until the far end answers it (RFC 7016 3.5.4.2).
    pub(super) fn on_moved(&mut self, now: Instant, from: NodeId, node: NodeId, addr: SocketAddr) {
        if node == self.cfg.node_id || !self.links.contains_key(&node) {
            return;
        }
        let moved = self.cfg.budgets.moved_per_peer;
        let Some(sender) = self.links.get_mut(&from) else {
            return;
        };
        if !sender.moved.take(now, moved, 1.0) {
            self.stats.moves_over_budget += 1;
            return;
        }
        if from == node {
            self.self_reported(node, addr);
        }
        let Some(link) = self.links.get_mut(&node) else {
            return;
        };
        if link.direct == Some(addr) {
            return;
        }
        let recent = link.probed.is_some_and(|(a, t)| {
            a == addr && now.saturating_duration_since(t) < Duration::from_secs(1)
        });
        if recent {
            return;
        }
        if !self.probe_ips.take(now, addr.ip().to_canonical()) {
            self.stats.probes_over_budget += 1;
            return;
        }
        link.probed = Some((addr, now));
        self.stats.probes += 1;
        self.actions.push_back(Action::ProbePath { node, addr });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::tests::{decode_sends, drain, node, tap_hello};

    #[test]
    fn a_verified_move_is_announced_and_a_reported_move_is_probed() {
        let t0 = Instant::now();
        let mut o = node(t0);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        o.peer_up(t0, NodeId(7), Some(sa("198.51.100.7:4910")), true);
        o.peer_up(t0, NodeId(200), Some(sa("203.0.113.2:4910")), false);
        o.peer_up(t0, NodeId(300), Some(sa("203.0.113.3:4910")), false);
        let hello = |id: u128| tap_hello(id, &[sa("10.0.0.2:4910")], false);
        o.handle_control(t0, NodeId(200), &hello(200));
        drain(&mut o);

        // Our session with 200 verified a new address: everybody else hears.
        let new = sa("198.51.100.20:4910");
        o.peer_moved(t0, NodeId(200), Some(new));
        let mut moved: Vec<NodeId> = decode_sends(&drain(&mut o))
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::Moved { node, addr } if node == NodeId(200) && addr == new => Some(to),
                _ => None,
            })
            .collect();
        moved.sort();
        assert_eq!(moved, vec![NodeId(7), NodeId(300)]);
        let m = o.member(NodeId(200)).unwrap();
        assert!(m
            .addrs
            .iter()
            .any(|a| a.addr == new && a.origin == AddrOrigin::Reflexive));
        assert!(!m.addrs.iter().any(|a| a.addr == sa("203.0.113.2:4910")));
        // The same address again is no news.
        o.peer_moved(t0, NodeId(200), Some(new));
        assert!(decode_sends(&drain(&mut o)).is_empty());
        assert_eq!(o.stats().moves_announced, 1);

        // A peer reports that 300 moved: probe it, once per second.
        let to = sa("198.51.100.30:4910");
        let report = |node: u128, addr: SocketAddr| {
            Message::Moved {
                node: NodeId(node),
                addr,
            }
            .encode()
            .unwrap()
        };
        o.handle_control(t0, NodeId(7), &report(300, to));
        let probes = |acts: Vec<Action>| -> Vec<Action> {
            acts.into_iter()
                .filter(|a| matches!(a, Action::ProbePath { .. }))
                .collect()
        };
        assert_eq!(
            probes(drain(&mut o)),
            vec![Action::ProbePath {
                node: NodeId(300),
                addr: to
            }]
        );
        o.handle_control(t0, NodeId(7), &report(300, to));
        assert!(probes(drain(&mut o)).is_empty(), "rate limited");
        let t1 = t0 + Duration::from_secs(1);
        o.handle_control(t1, NodeId(7), &report(300, to));
        assert_eq!(probes(drain(&mut o)).len(), 1);
        // Nothing to probe: the session already runs there, the node is
        // not linked, or it is this node.
        o.handle_control(t1, NodeId(7), &report(200, new));
        o.handle_control(t1, NodeId(7), &report(999, to));
        o.handle_control(t1, NodeId(7), &report(100, to));
        assert!(probes(drain(&mut o)).is_empty());
        assert_eq!(o.stats().probes, 2);

        // Our own reflexive address changed: every link hears.
        o.reflexive_changed(t1, sa("198.51.100.99:4910"));
        let own = decode_sends(&drain(&mut o))
            .into_iter()
            .filter(|(_, m)| matches!(m, Message::Moved { node, .. } if *node == NodeId(100)))
            .count();
        assert_eq!(own, 3);
    }

    fn probes(acts: Vec<Action>) -> usize {
        acts.iter()
            .filter(|a| matches!(a, Action::ProbePath { .. }))
            .count()
    }

    /// Member `id` linked over a relayed route, its `Hello` in (one LAN
    /// address), the actions drained.
    fn relayed_member(o: &mut Overlay, now: Instant, id: u128) {
        o.peer_up(now, NodeId(id), None, false);
        let here: SocketAddr = "10.3.0.3:4910".parse().unwrap();
        o.handle_control(now, NodeId(id), &tap_hello(id, &[here], false));
        drain(o);
    }

    fn moved(node: u128, addr: SocketAddr) -> Vec<u8> {
        Message::Moved {
            node: NodeId(node),
            addr,
        }
        .encode()
        .unwrap()
    }

    /// One peer sends 1,000 `Moved` with distinct addresses (distinct IPs,
    /// so the per-IP budget does not help): only its `moved_per_peer`
    /// burst turns into probes, then its rate.
    #[test]
    fn a_peer_flooding_moved_gets_only_its_budget_of_probes() {
        let t0 = Instant::now();
        let mut o = node(t0);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        o.peer_up(t0, NodeId(7), Some(sa("198.51.100.7:4910")), true);
        o.peer_up(t0, NodeId(300), Some(sa("203.0.113.3:4910")), false);
        drain(&mut o);
        let b = o.config().budgets.moved_per_peer;
        let addr = |k: u32| SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + k), 4910));
        for k in 0..1000 {
            o.handle_control(t0, NodeId(7), &moved(300, addr(k)));
        }
        assert_eq!(probes(drain(&mut o)), b.burst as usize);
        assert_eq!(o.stats().probes, b.burst as u64);
        assert_eq!(o.stats().moves_over_budget, 1000 - b.burst as u64);
        // Ten seconds later: the burst again at most (it refilled), not
        // the whole flood.
        let t1 = t0 + Duration::from_secs(10);
        for k in 1000..2000 {
            o.handle_control(t1, NodeId(7), &moved(300, addr(k)));
        }
        assert_eq!(probes(drain(&mut o)), b.burst as usize);
        // Another peer's report is not affected by 7's flood.
        o.peer_up(t1, NodeId(200), Some(sa("203.0.113.2:4910")), false);
        drain(&mut o);
        o.handle_control(t1, NodeId(200), &moved(300, sa("192.0.2.1:4910")));
        assert_eq!(probes(drain(&mut o)), 1);
    }

    /// Many peers each report a linked node at another port of one victim
    /// IP: the victim gets at most its `probes_per_ip` budget of probes.
    #[test]
    fn probes_to_one_ip_stay_within_its_budget_whoever_asks() {
        let t0 = Instant::now();
        let mut o = node(t0);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        for p in 1..=50u128 {
            let a = SocketAddr::from(([203, 0, 113, p as u8], 4910));
            o.peer_up(t0, NodeId(1000 + p), Some(a), false);
        }
        o.peer_up(t0, NodeId(300), Some(sa("198.51.100.3:4910")), false);
        drain(&mut o);
        let b = o.config().budgets.probes_per_ip;
        for p in 1..=50u128 {
            for port in 0..20u16 {
                let victim = SocketAddr::from(([192, 0, 2, 9], 1000 + port * 50 + p as u16));
                o.handle_control(t0, NodeId(1000 + p), &moved(300, victim));
            }
        }
        assert_eq!(probes(drain(&mut o)), b.burst as usize);
        assert!(o.stats().probes_over_budget > 0);
        let t1 = t0 + Duration::from_secs(1);
        o.handle_control(t1, NodeId(1001), &moved(300, sa("192.0.2.9:7")));
        assert_eq!(probes(drain(&mut o)), 1, "refilled at its rate");
    }

    #[test]
    fn a_move_onto_a_relay_is_recorded_but_not_announced() {
        let t0 = Instant::now();
        let mut o = node(t0);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let first = sa("203.0.113.2:4910");
        o.peer_up(t0, NodeId(7), Some(sa("198.51.100.7:4910")), true);
        o.peer_up(t0, NodeId(200), Some(first), false);
        o.handle_control(t0, NodeId(200), &tap_hello(200, &[], false));
        drain(&mut o);
        let direct = |o: &Overlay| {
            o.neighbours()
                .into_iter()
                .find(|n| n.node == NodeId(200))
                .and_then(|n| n.direct)
        };
        let reflexive = |o: &Overlay| -> Vec<SocketAddr> {
            o.member(NodeId(200))
                .map(|m| m.addrs.iter().map(|a| a.addr).collect())
                .unwrap_or_default()
        };
        assert_eq!(direct(&o), Some(first));

        // Onto a relayed route: nothing to tell, the member keeps the
        // address it was last seen at.
        o.peer_moved(t0, NodeId(200), None);
        assert!(decode_sends(&drain(&mut o)).is_empty());
        assert_eq!(o.stats().moves_announced, 0);
        assert_eq!(direct(&o), None);
        assert_eq!(reflexive(&o), vec![first]);

        // A peer reports 200 at its old address: the session runs
        // relayed, so that address is worth a probe.
        let report = Message::Moved {
            node: NodeId(200),
            addr: first,
        };
        o.handle_control(t0, NodeId(7), &report.encode().unwrap());
        assert_eq!(
            drain(&mut o),
            vec![Action::ProbePath {
                node: NodeId(200),
                addr: first
            }]
        );

        // Back to direct at a new address: it replaces the old one and is
        // announced to the other links.
        let new = sa("198.51.100.20:4910");
        o.peer_moved(t0, NodeId(200), Some(new));
        let moved: Vec<(NodeId, Message)> = decode_sends(&drain(&mut o));
        assert_eq!(
            moved,
            vec![(
                NodeId(7),
                Message::Moved {
                    node: NodeId(200),
                    addr: new
                }
            )]
        );
        assert_eq!(direct(&o), Some(new));
        assert_eq!(reflexive(&o), vec![new]);
    }

    /// A member behind a NAT tells each new link its own STUN-observed
    /// address: a node whose session with it runs over a relay never
    /// observes it, and a member record gossiped by a third party carries
    /// it only as relayed (never punched), so without this a cone-like
    /// node could not spray the IP of a symmetric one it is relayed to
    /// unless some node linked to both happened to gossip the record. The
    /// receiver keeps the member's own claim about itself as reflexive; a
    /// `Moved` naming someone else records nothing.
    #[test]
    fn a_member_tells_new_links_its_own_reflexive_address() {
        let t0 = Instant::now();
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let mut o = node(t0);
        o.set_local_addresses(t0, &[sa("10.0.0.1:4910")]);
        o.peer_up(t0, NodeId(7), Some(sa("198.51.100.7:4910")), true);
        // Not known yet: nothing to tell.
        assert!(!decode_sends(&drain(&mut o))
            .iter()
            .any(|(_, m)| matches!(m, Message::Moved { .. })));
        let own = sa("203.0.113.1:61000");
        o.reflexive_known(own);
        let told = |o: &mut Overlay| -> Vec<NodeId> {
            decode_sends(&drain(o))
                .into_iter()
                .filter_map(|(to, m)| match m {
                    Message::Moved { node, addr } if node == NodeId(100) && addr == own => Some(to),
                    _ => None,
                })
                .collect()
        };
        // The introducer's session is direct: it observes it itself.
        assert!(told(&mut o).is_empty());
        // A link up later over a relayed route hears it right after the
        // Hello; one over a direct path does not (a peer on our LAN would
        // only probe it, a hairpin through our NAT).
        o.peer_up(t0, NodeId(200), None, false);
        assert_eq!(told(&mut o), vec![NodeId(200)]);
        o.peer_up(t0, NodeId(201), Some(sa("10.0.0.2:4910")), false);
        assert!(told(&mut o).is_empty());

        // The receiving side: 300 is linked over a relayed route (no direct
        // address) and says in its Hello only where it listens.
        o.peer_up(t0, NodeId(300), None, false);
        drain(&mut o);
        o.handle_control(
            t0,
            NodeId(300),
            &tap_hello(300, &[sa("10.3.0.3:4910")], false),
        );
        let reflexive = |o: &Overlay, id: u128| -> Vec<SocketAddr> {
            o.member(NodeId(id))
                .unwrap()
                .addrs
                .iter()
                .filter(|a| a.origin == AddrOrigin::Reflexive)
                .map(|a| a.addr)
                .collect()
        };
        assert!(reflexive(&o, 300).is_empty());
        let its = sa("203.0.113.3:5000");
        o.handle_control(t0, NodeId(300), &moved(300, its));
        assert_eq!(reflexive(&o, 300), vec![its]);
        // Told again: once.
        o.handle_control(t0, NodeId(300), &moved(300, its));
        assert_eq!(reflexive(&o, 300), vec![its]);
        // 200 naming 300's address is no observation of its own.
        o.handle_control(t0, NodeId(200), &moved(300, sa("203.0.113.9:5000")));
        assert_eq!(reflexive(&o, 300), vec![its]);
        // A node with no NAT in the way (its reflexive address is one it
        // listens on) has nothing to tell.
        let mut p = node(t0);
        p.set_local_addresses(t0, &[sa("198.51.100.5:4910")]);
        p.reflexive_known(sa("198.51.100.5:4910"));
        drain(&mut p);
        p.peer_up(t0, NodeId(200), None, false);
        assert!(!decode_sends(&drain(&mut p))
            .iter()
            .any(|(_, m)| matches!(m, Message::Moved { .. })));
    }

    /// A member claiming address after address as its own (each a
    /// `Moved` naming itself): only those within its `moved_per_peer`
    /// budget are taken, and its record never holds more than
    /// `MAX_ADDRS` addresses, whatever it claims (what the nodes relayed
    /// to it then punch stays within each IP's budget on unverified
    /// destinations, `agent/core/src/reach.rs`).
    #[test]
    fn a_member_claiming_many_addresses_of_its_own_stays_within_bounds() {
        let t0 = Instant::now();
        let mut o = node(t0);
        relayed_member(&mut o, t0, 300);
        for i in 0..1000u32 {
            let addr = SocketAddr::from(([203, 0, (i >> 8) as u8, i as u8], 5000));
            o.handle_control(t0, NodeId(300), &moved(300, addr));
        }
        let b = o.config().budgets.moved_per_peer;
        assert_eq!(o.stats().moves_over_budget, 1000 - b.burst as u64);
        // Each claim replaces the one before: the record holds the last
        // accepted one besides the member's own `Hello`.
        let m = o.member(NodeId(300)).unwrap();
        assert!(m.addrs.len() <= MAX_ADDRS, "{}", m.addrs.len());
        let claimed: Vec<_> = m
            .addrs
            .iter()
            .filter(|a| a.origin == AddrOrigin::Reflexive)
            .map(|a| a.addr)
            .collect();
        let last = b.burst as u32 - 1;
        let last = SocketAddr::from(([203, 0, (last >> 8) as u8, last as u8], 5000));
        assert_eq!(claimed, vec![last]);
    }

    /// A member behind a NAT that gave it a new public address reports the
    /// new one: the old one is gone from its record (birthday punching
    /// aims at the first reflexive address), while an address this node
    /// observed itself stays.
    #[test]
    fn a_members_new_word_on_its_own_address_replaces_its_old_one() {
        let t0 = Instant::now();
        let mut o = node(t0);
        relayed_member(&mut o, t0, 300);
        let old: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let new: SocketAddr = "203.0.113.9:41234".parse().unwrap();
        let reflexive = |o: &Overlay| -> Vec<SocketAddr> {
            let m = o.member(NodeId(300)).unwrap();
            let r = m.addrs.iter().filter(|a| a.origin == AddrOrigin::Reflexive);
            r.map(|a| a.addr).collect()
        };
        o.handle_control(t0, NodeId(300), &moved(300, old));
        assert_eq!(reflexive(&o), vec![old]);
        let t1 = t0 + Duration::from_secs(60);
        o.handle_control(t1, NodeId(300), &moved(300, new));
        assert_eq!(reflexive(&o), vec![new]);

        // Observed on a direct session, then reported: the observation stays.
        let seen: SocketAddr = "198.51.100.4:4000".parse().unwrap();
        o.peer_up(t1, NodeId(301), Some(seen), false);
        let here: SocketAddr = "10.3.0.4:4910".parse().unwrap();
        o.handle_control(t1, NodeId(301), &tap_hello(301, &[here], false));
        drain(&mut o);
        o.handle_control(t1, NodeId(301), &moved(301, seen));
        let t2 = t1 + Duration::from_secs(60);
        o.handle_control(t2, NodeId(301), &moved(301, new));
        let m = o.member(NodeId(301)).unwrap();
        assert!(m
            .addrs
            .iter()
            .any(|a| a.origin == AddrOrigin::Reflexive && a.addr == seen));
    }
}
