//! Membership: which nodes this node knows, with which addresses. Learns
//! them from `Hello` (plus the session's own address as reflexive, when the
//! session runs direct), `Ring` gossip and lookup answers; forgets nodes
//! that failed (and ignores gossip about them for `forget_for`) and prunes
//! what the policy no longer needs. Also the periodic `Neighbours` / `Ring`
//! gossip that keeps neighbours' views consistent.
//!
//! Banned nodes ([`Overlay::ban`]: the network CA revoked them) are dropped
//! at once and for good: no link, no member record, never learnt again
//! from gossip or lookup answers, never opened to.

use super::{Action, Event, MemberState, Overlay};
use crate::ring;
use crate::wire::{
    AddrOrigin, Hello, LinkWant, Member, Message, TaggedAddr, MAX_ADDRS, MAX_NEIGHBOURS,
    MAX_RING_MEMBERS,
};
use ringlan_tunnel::NodeId;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::time::Instant;

/// Most nodes [`Overlay::ban`] keeps: the most entries a revocation list
/// holds (`ringlan-node`'s `revocation::MAX_REVOKED`).
pub const MAX_BANNED: usize = 8192;

impl Overlay {
    /// Ban `nodes` for the life of this overlay (their certificates were
    /// revoked): their links go (close the sessions; no `peer_down` is
    /// expected back), they are forgotten, and they are never learnt from
    /// gossip, opened to or linked again (a later [`Overlay::peer_up`] for
    /// one is answered with [`Action::CloseSession`]). This node itself is
    /// never banned. At most [`MAX_BANNED`] nodes; returns false when some
    /// did not fit (the others are banned).
    pub fn ban(&mut self, now: Instant, nodes: impl IntoIterator<Item = NodeId>) -> bool {
        let mut all = true;
        for node in nodes {
            if node == self.cfg.node_id {
                continue;
            }
            if !self.banned.contains(&node) {
                if self.banned.len() >= MAX_BANNED {
                    all = false;
                    continue;
                }
                self.banned.insert(node);
            }
            if self.links.remove(&node).is_some() {
                self.switch.forget_node(node);
                self.events.push_back(Event::LinkDown { node });
                self.actions.push_back(Action::CloseSession { node });
            }
            self.link_lost(now, node);
            self.failed_opens.remove(&node);
            self.forgotten.remove(&node);
            self.remove_member(node);
        }
        self.run_policy(now);
        all
    }

    /// Whether `node` is banned ([`Overlay::ban`]).
    pub fn is_banned(&self, node: NodeId) -> bool {
        self.banned.contains(&node)
    }

    pub(super) fn on_hello(&mut self, now: Instant, from: NodeId, h: Hello) {
        if h.node_id != from {
            // A peer must introduce itself under its session's identity.
            self.stats.bad_control += 1;
            return;
        }
        let Some(link) = self.links.get_mut(&from) else {
            return;
        };
        let direct = link.direct;
        link.hello = Some(h.clone());
        self.pin_sources(from);
        let mut addrs: Vec<TaggedAddr> = h
            .addrs
            .iter()
            .map(|a| TaggedAddr {
                origin: AddrOrigin::Local,
                addr: *a,
            })
            .collect();
        // The session's direct address is the member's reflexive address;
        // a relayed session has none (its path means something only to
        // this node's endpoint).
        if let Some(remote) = direct.filter(|a| !h.addrs.contains(a)) {
            addrs.push(TaggedAddr {
                origin: AddrOrigin::Reflexive,
                addr: remote,
            });
        }
        addrs.truncate(MAX_ADDRS);
        let member = Member {
            node_id: from,
            name: h.name.clone(),
            role: h.role,
            has_tap: h.mac.is_some(),
            addrs,
        };
        self.forgotten.remove(&from);
        self.learn(now, member);
    }

    /// Add or update a member (unless it is this node or forgotten).
    pub(super) fn learn(&mut self, now: Instant, mut m: Member) {
        if m.node_id == self.cfg.node_id || self.banned.contains(&m.node_id) {
            return;
        }
        if let Some(until) = self.forgotten.get(&m.node_id) {
            if now < *until && !self.links.contains_key(&m.node_id) {
                return;
            }
        }
        m.addrs.truncate(MAX_ADDRS);
        match self.members.get_mut(&m.node_id) {
            Some(s) => {
                if s.info == m {
                    return;
                }
                // Keep reflexive addresses we observed ourselves.
                for a in &s.info.addrs {
                    if !m.addrs.contains(a) && m.addrs.len() < MAX_ADDRS {
                        m.addrs.push(*a);
                    }
                }
                s.info = m;
            }
            None => {
                let node = m.node_id;
                let name = m.name.clone();
                self.members.insert(
                    node,
                    MemberState {
                        info: m,
                        pending: None,
                        self_reported: None,
                    },
                );
                self.events.push_back(Event::MemberJoined { node, name });
            }
        }
    }

    /// Member records that link `from` gossiped (`Ring`, `Members`,
    /// `MemberJoined`, or a `LookupReply` it delivered): ids and addresses
    /// a member chose, which the link policy may open sessions to. Each
    /// record takes a token from the link's `gossip_per_peer` budget, and
    /// a new member is kept only while fewer than `unverified_members` are
    /// known without a link (`budget.rs`, `docs/limits.md`). Records over
    /// either bound are dropped and counted.
    pub(super) fn learn_gossip(&mut self, now: Instant, from: NodeId, list: Vec<Member>) {
        let budget = self.cfg.budgets.gossip_per_peer;
        let cap = self.cfg.budgets.unverified_members;
        let links = &self.links;
        let mut unverified = self
            .members
            .keys()
            .filter(|id| !links.contains_key(id))
            .count();
        for m in list {
            if m.node_id == self.cfg.node_id {
                continue;
            }
            let Some(link) = self.links.get_mut(&from) else {
                return;
            };
            if !link.gossip.take(now, budget, 1.0) {
                self.stats.gossip_over_budget += 1;
                continue;
            }
            let id = m.node_id;
            let new = !self.members.contains_key(&id) && !self.links.contains_key(&id);
            if new && unverified >= cap {
                self.stats.gossip_over_cap += 1;
                continue;
            }
            self.learn(now, m);
            if new && self.members.contains_key(&id) {
                unverified += 1;
            }
        }
    }

    pub(super) fn remove_member(&mut self, id: NodeId) {
        if self.members.remove(&id).is_some() {
            self.events.push_back(Event::MemberLeft { node: id });
        }
    }

    /// Remove `node` from the members and ignore gossip about it for
    /// `forget_for`.
    pub(super) fn forget(&mut self, now: Instant, node: NodeId) {
        self.forgotten.insert(node, now + self.cfg.forget_for);
        if !self.links.contains_key(&node) {
            self.remove_member(node);
        }
    }

    /// A peer's ring neighbours. Learn them; the peer's view of its own
    /// vicinity also supersedes ours: unlinked members we know strictly
    /// inside the arc it reports, but that it does not list, are gone.
    pub(super) fn on_ring(&mut self, now: Instant, from: NodeId, list: Vec<Member>) {
        let ids: Vec<NodeId> = list.iter().map(|m| m.node_id).collect();
        self.learn_gossip(now, from, list);
        let half = 1u128 << 127;
        let far_s = ids
            .iter()
            .copied()
            .filter(|x| ring::clockwise(from, *x) < half)
            .max_by_key(|x| ring::clockwise(from, *x));
        let far_p = ids
            .iter()
            .copied()
            .filter(|x| ring::clockwise(*x, from) < half)
            .max_by_key(|x| ring::clockwise(*x, from));
        let (Some(far_s), Some(far_p)) = (far_s, far_p) else {
            return;
        };
        if ids.len() < 2 * self.cfg.ring_links || far_s == far_p {
            return;
        }
        let stale: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| {
                m.info.has_tap
                    && m.pending.is_none()
                    && !self.links.contains_key(id)
                    && !ids.contains(id)
                    && **id != from
                    && ring::between(far_p, **id, far_s)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.remove_member(id);
        }
    }

    /// Send `Neighbours` (ring-link ids, for lookahead) to every ring link
    /// and `Ring` (the nearest nodes with addresses) to the ring
    /// neighbours, when they changed since last sent.
    pub(super) fn gossip(&mut self) {
        if !self.in_ring() {
            return;
        }
        let mut ids: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(_, l)| l.takes_frames())
            .map(|(id, _)| *id)
            .collect();
        ids.truncate(MAX_NEIGHBOURS);
        if ids != self.sent_neighbours {
            let msg = Message::Neighbours(ids.clone());
            for n in &ids {
                self.send(*n, &msg);
            }
            self.sent_neighbours = ids;
        }
        let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
        let mut ring_ids = succ;
        ring_ids.extend(pred);
        if ring_ids != self.sent_ring {
            // To our ring neighbours and to every peer that holds us as
            // one of its ring neighbours.
            let to: Vec<NodeId> = self
                .links
                .iter()
                .filter(|(id, l)| {
                    l.hello.is_some() && (l.peer_want == LinkWant::Ring || ring_ids.contains(id))
                })
                .map(|(id, _)| *id)
                .collect();
            self.sent_ring = ring_ids;
            let msg = self.ring_message();
            for n in to {
                self.send(n, &msg);
            }
        }
    }

    /// `Ring`: this node's ring neighbours with their addresses.
    fn ring_message(&self) -> Message {
        Message::Ring(
            self.sent_ring
                .iter()
                .filter_map(|id| self.members.get(id).map(|m| self.gossip_record(&m.info)))
                .take(MAX_RING_MEMBERS)
                .collect(),
        )
    }

    /// A member record as this node gossips it: a reflexive address stays
    /// reflexive only when it is where this node's own session with the
    /// member runs (its own observation); any other is a third party's
    /// claim and goes out as [`AddrOrigin::Relayed`] (`docs/overlay.md`
    /// "Address provenance"). Each address once.
    pub(super) fn gossip_record(&self, m: &Member) -> Member {
        let observed = self.links.get(&m.node_id).and_then(|l| l.direct);
        let mut addrs: Vec<TaggedAddr> = Vec::with_capacity(m.addrs.len());
        for a in &m.addrs {
            let origin = match a.origin {
                AddrOrigin::Reflexive if observed != Some(a.addr) => AddrOrigin::Relayed,
                o => o,
            };
            if let Some(seen) = addrs.iter_mut().find(|x| x.addr == a.addr) {
                // The stronger claim wins: local, then observed.
                seen.origin = seen.origin.min(origin);
            } else {
                addrs.push(TaggedAddr {
                    origin,
                    addr: a.addr,
                });
            }
        }
        Member { addrs, ..m.clone() }
    }

    /// Keep only the members the policy can use: linked peers, opens in
    /// flight, long-link and on-demand targets, and the nearest ring nodes
    /// (twice `ring_links` on each side, for the size estimate, and at
    /// least `replicas + 1`, for the directory's responsibility rule).
    pub(super) fn prune_members(&mut self) {
        let w = (2 * self.cfg.ring_links).max(self.cfg.directory.replicas + 1);
        let me = self.cfg.node_id;
        let mut keep: HashSet<NodeId> = nearest_members(&self.members, me, w, true)
            .into_iter()
            .collect();
        keep.extend(nearest_members(&self.members, me, w, false));
        keep.extend(self.long.iter().filter_map(|s| s.node));
        keep.extend(self.on_demand.keys().copied());
        let links = &self.links;
        let before = self.members.len();
        let mut gone = Vec::new();
        self.members.retain(|id, m| {
            let k = links.contains_key(id) || m.pending.is_some() || keep.contains(id);
            if !k {
                gone.push(*id);
            }
            k
        });
        debug_assert_eq!(before, self.members.len() + gone.len());
        for id in gone {
            self.events.push_back(Event::MemberLeft { node: id });
        }
    }

    /// The `k` nearest ring members (with TAP) clockwise and
    /// counter-clockwise.
    pub(super) fn ring_neighbours(&self, k: usize) -> (Vec<NodeId>, Vec<NodeId>) {
        let me = self.cfg.node_id;
        (
            nearest_after(&self.members, me, k, true),
            nearest_after(&self.members, me, k, false),
        )
    }
}

/// The `k` nearest ring members (with TAP) strictly clockwise
/// (`clockwise`) or counter-clockwise of `pos`, nearest first.
pub(super) fn nearest_after(
    members: &BTreeMap<NodeId, MemberState>,
    pos: NodeId,
    k: usize,
    clockwise: bool,
) -> Vec<NodeId> {
    let tap = |(id, m): (&NodeId, &MemberState)| m.info.has_tap.then_some(*id);
    let v: Vec<NodeId> = if clockwise {
        members
            .range((Bound::Excluded(pos), Bound::Unbounded))
            .chain(members.range(..pos))
            .filter_map(tap)
            .take(k)
            .collect()
    } else {
        members
            .range(..pos)
            .rev()
            .chain(
                members
                    .range((Bound::Excluded(pos), Bound::Unbounded))
                    .rev(),
            )
            .filter_map(tap)
            .take(k)
            .collect()
    };
    v
}

/// Like [`nearest_after`] but a member at `pos` itself counts (clockwise).
pub(super) fn nearest_members(
    members: &BTreeMap<NodeId, MemberState>,
    pos: NodeId,
    k: usize,
    clockwise: bool,
) -> Vec<NodeId> {
    let mut v = Vec::with_capacity(k + 1);
    if clockwise && members.get(&pos).is_some_and(|m| m.info.has_tap) {
        v.push(pos);
    }
    v.extend(nearest_after(members, pos, k, clockwise));
    v.truncate(k);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::tests::{node, tap_hello};
    use crate::wire::Role;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn member(id: u128) -> Member {
        Member {
            node_id: NodeId(id),
            name: format!("g{id}"),
            role: Role::Node,
            has_tap: true,
            addrs: vec![TaggedAddr {
                origin: AddrOrigin::Reflexive,
                addr: SocketAddr::from(([192, 0, 2, id as u8], 4910)),
            }],
        }
    }

    /// A node linked to introducer 7 and member 8.
    fn linked_to_7_and_8(t0: Instant) -> Overlay {
        let mut o = node(t0);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        o.peer_up(t0, NodeId(7), Some(sa("198.51.100.7:4910")), true);
        o.peer_up(t0, NodeId(8), Some(sa("198.51.100.8:4910")), false);
        o
    }

    fn joined(o: &mut Overlay) -> usize {
        std::iter::from_fn(|| o.poll_event())
            .filter(|e| matches!(e, Event::MemberJoined { .. }))
            .count()
    }

    /// A peer gossiping 1,280 fresh member records at once (ten full
    /// `Members` messages) gets only its `gossip_per_peer` burst accepted,
    /// then its rate; `Ring` and `LookupReply` take from the same bucket;
    /// another peer's gossip is unaffected.
    #[test]
    fn gossip_is_accepted_within_each_peers_budget() {
        let t0 = Instant::now();
        let mut o = linked_to_7_and_8(t0);
        std::iter::from_fn(|| o.poll_event()).for_each(drop);
        let b = o.config().budgets.gossip_per_peer;
        let mut next = 1000u128;
        let mut batch = |n: usize| -> Vec<Member> {
            (0..n)
                .map(|_| {
                    next += 1;
                    member(next)
                })
                .collect()
        };
        for _ in 0..10 {
            let msg = Message::Members(batch(128)).encode().unwrap();
            o.handle_control(t0, NodeId(7), &msg);
        }
        assert_eq!(joined(&mut o), b.burst as usize);
        assert_eq!(o.stats().gossip_over_budget, 1280 - b.burst as u64);
        // Empty bucket: a Ring from the same peer is dropped too.
        let ring = Message::Ring(batch(4)).encode().unwrap();
        o.handle_control(t0, NodeId(7), &ring);
        assert_eq!(joined(&mut o), 0);
        // One second later: the rate's worth.
        let t1 = t0 + Duration::from_secs(1);
        let msg = Message::Members(batch(128)).encode().unwrap();
        o.handle_control(t1, NodeId(7), &msg);
        assert_eq!(joined(&mut o), b.rate as usize);
        // Another link has its own budget.
        let msg = Message::Members(batch(8)).encode().unwrap();
        o.handle_control(t1, NodeId(8), &msg);
        assert_eq!(joined(&mut o), 8);
    }

    /// However many peers gossip, at most `unverified_members` members
    /// without a link are kept at once; linked peers never count.
    #[test]
    fn members_known_only_from_gossip_are_capped() {
        let t0 = Instant::now();
        let mut o = node(t0);
        o.cfg.budgets.unverified_members = 20;
        for p in 1..=5u128 {
            let a = SocketAddr::from(([198, 51, 100, p as u8], 4910));
            o.peer_up(t0, NodeId(p), Some(a), p == 1);
            o.handle_control(t0, NodeId(p), &tap_hello(p, &[], false));
        }
        std::iter::from_fn(|| o.poll_event()).for_each(drop);
        for p in 1..=5u128 {
            let list = (0..10).map(|k| member(1000 + 100 * p + k)).collect();
            o.handle_control(t0, NodeId(p), &Message::Members(list).encode().unwrap());
            let unverified = o
                .members
                .keys()
                .filter(|id| !o.links.contains_key(id))
                .count();
            assert!(unverified <= 20, "{unverified} unverified members");
        }
        assert!(o.stats().gossip_over_cap >= 30, "{:?}", o.stats());
        assert_eq!(o.stats().gossip_over_budget, 0);
        // An update of a known member is not a new member: still accepted.
        let known = *o
            .members
            .keys()
            .find(|id| !o.links.contains_key(id))
            .expect("some gossiped member kept");
        let mut m = member(known.0);
        m.name = "renamed".into();
        o.handle_control(t0, NodeId(2), &Message::Members(vec![m]).encode().unwrap());
        assert_eq!(o.members[&known].info.name, "renamed");
    }

    /// A banned node loses its link and member record at once, is never
    /// learnt again from any gossip, is not linked again when its session
    /// comes up, and the set is bounded.
    #[test]
    fn a_banned_node_is_dropped_and_never_comes_back() {
        let t0 = Instant::now();
        let mut o = linked_to_7_and_8(t0);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        o.handle_control(t0, NodeId(8), &tap_hello(8, &[], false));
        o.handle_control(
            t0,
            NodeId(7),
            &Message::Members(vec![member(9)]).encode().unwrap(),
        );
        assert!(o.member(NodeId(8)).is_some() && o.member(NodeId(9)).is_some());
        std::iter::from_fn(|| o.poll_event()).for_each(drop);
        std::iter::from_fn(|| o.poll_action()).for_each(drop);

        assert!(o.ban(t0, [NodeId(8), NodeId(9)]));
        assert!(o.is_banned(NodeId(8)));
        assert!(!o.is_linked(NodeId(8)));
        assert!(o.member(NodeId(8)).is_none() && o.member(NodeId(9)).is_none());
        let actions: Vec<Action> = std::iter::from_fn(|| o.poll_action()).collect();
        assert!(
            actions.contains(&Action::CloseSession { node: NodeId(8) }),
            "{actions:?}"
        );
        assert!(
            !actions.iter().any(
                |a| matches!(a, Action::OpenSession { node: Some(n), .. } if n.0 == 8 || n.0 == 9)
            ),
            "{actions:?}"
        );
        let events: Vec<Event> = std::iter::from_fn(|| o.poll_event()).collect();
        assert!(events.contains(&Event::LinkDown { node: NodeId(8) }));

        // Gossip, a joined announcement, a ring list, a lookup answer, long
        // after: never learnt again.
        let later = t0 + Duration::from_secs(3600);
        for msg in [
            Message::Members(vec![member(8), member(9)]),
            Message::MemberJoined(member(9)),
            Message::Ring(vec![member(8)]),
        ] {
            o.handle_control(later, NodeId(7), &msg.encode().unwrap());
        }
        assert!(o.member(NodeId(8)).is_none() && o.member(NodeId(9)).is_none());
        // Its session comes up again (it opened one to us): refused.
        o.peer_up(later, NodeId(8), Some(sa("198.51.100.8:4910")), false);
        assert!(!o.is_linked(NodeId(8)));
        let actions: Vec<Action> = std::iter::from_fn(|| o.poll_action()).collect();
        assert!(actions.contains(&Action::CloseSession { node: NodeId(8) }));
        // Never ourselves; bounded.
        assert!(o.ban(later, [NodeId(100)]));
        assert!(!o.is_banned(NodeId(100)));
        assert!(!o.ban(later, (0..MAX_BANNED as u128).map(|k| NodeId(10_000 + k))));
        assert_eq!(o.banned.len(), MAX_BANNED);
        assert!(!o.is_banned(NodeId(10_000 + MAX_BANNED as u128 - 1)));
        assert!(!o.ban(later, [NodeId(1)]));
        assert!(o.ban(later, [NodeId(8)]), "already banned stays banned");
    }

    /// What a node gossips says whose observation each address is: its
    /// own session's address with a member stays reflexive; a reflexive
    /// address it learnt from someone else's gossip goes out relayed.
    #[test]
    fn gossip_marks_third_party_addresses_relayed() {
        let t0 = Instant::now();
        let mut o = linked_to_7_and_8(t0);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        o.handle_control(t0, NodeId(8), &tap_hello(8, &[sa("10.0.0.8:4910")], false));
        // 8 tells us of 9 "at" 192.0.2.9 (its claim); we are not linked to 9.
        o.handle_control(
            t0,
            NodeId(8),
            &Message::Ring(vec![member(9)]).encode().unwrap(),
        );
        let m8 = o.gossip_record(&o.member(NodeId(8)).unwrap().clone());
        let origin =
            |m: &Member, a: &str| m.addrs.iter().find(|x| x.addr == sa(a)).map(|x| x.origin);
        assert_eq!(
            origin(&m8, "198.51.100.8:4910"),
            Some(AddrOrigin::Reflexive)
        );
        assert_eq!(origin(&m8, "10.0.0.8:4910"), Some(AddrOrigin::Local));
        // Stored as 8 said (its observation), gossiped on as relayed.
        let m9 = o.member(NodeId(9)).unwrap().clone();
        assert_eq!(origin(&m9, "192.0.2.9:4910"), Some(AddrOrigin::Reflexive));
        let out = o.gossip_record(&m9);
        assert_eq!(out.addrs.len(), 1);
        assert_eq!(origin(&out, "192.0.2.9:4910"), Some(AddrOrigin::Relayed));
        // Relayed on receipt stays relayed, and the same address reported
        // twice goes out once, with the stronger origin.
        let mut twice = member(10);
        twice.addrs.push(TaggedAddr {
            origin: AddrOrigin::Relayed,
            addr: sa("192.0.2.10:4910"),
        });
        o.handle_control(t0, NodeId(8), &Message::Ring(vec![twice]).encode().unwrap());
        let out = o.gossip_record(&o.member(NodeId(10)).unwrap().clone());
        assert_eq!(out.addrs.len(), 1, "{out:?}");
        assert_eq!(origin(&out, "192.0.2.10:4910"), Some(AddrOrigin::Relayed));
    }

    #[test]
    fn a_relayed_link_never_records_its_path_as_a_member_address() {
        let t0 = Instant::now();
        let mut o = node(t0);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let hello = |id: u128| tap_hello(id, &[sa("10.0.0.2:4910")], true);
        let local = TaggedAddr {
            origin: AddrOrigin::Local,
            addr: sa("10.0.0.2:4910"),
        };
        o.peer_up(t0, NodeId(7), Some(sa("198.51.100.7:4910")), true);
        // 200's session runs over a relayed route: the member has only the
        // addresses it announced itself.
        o.peer_up(t0, NodeId(200), None, false);
        o.handle_control(t0, NodeId(200), &hello(200));
        let m = o.member(NodeId(200)).unwrap();
        assert_eq!(m.addrs, vec![local], "{m:?}");
        let n = o.neighbours().into_iter().find(|n| n.node == NodeId(200));
        assert_eq!(n.map(|n| n.direct), Some(None));
        // The same Hello over a direct session adds the session's address.
        let direct = sa("203.0.113.2:4910");
        o.peer_up(t0, NodeId(201), Some(direct), false);
        o.handle_control(t0, NodeId(201), &hello(201));
        let m = o.member(NodeId(201)).unwrap();
        let reflexive = TaggedAddr {
            origin: AddrOrigin::Reflexive,
            addr: direct,
        };
        assert_eq!(m.addrs, vec![local, reflexive], "{m:?}");
        // It relays: a relay candidate for other targets.
        assert!(o.relays_for(NodeId(300)).contains(&NodeId(200)));
        assert!(!o.relays_for(NodeId(200)).contains(&NodeId(200)));
    }
}
