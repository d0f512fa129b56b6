//! Membership: which nodes this node knows, with which addresses. Learns
//! them from `Hello` (plus the session's own address as reflexive, when the
//! session runs direct), `Ring` gossip and lookup answers; forgets nodes
//! that failed (and ignores gossip about them for `forget_for`) and prunes
//! what the policy no longer needs. Also the periodic `Neighbours` / `Ring`
//! gossip that keeps neighbours' views consistent.

use super::{Event, MemberState, Overlay};
use crate::ring;
use crate::wire::{
    AddrOrigin, Hello, LinkWant, Member, Message, TaggedAddr, MAX_ADDRS, MAX_NEIGHBOURS,
    MAX_RING_MEMBERS,
};
use ringlan_tunnel::NodeId;
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::time::Instant;

impl Overlay {
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
        if m.node_id == self.cfg.node_id {
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
                    },
                );
                self.events.push_back(Event::MemberJoined { node, name });
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
        for m in list {
            self.learn(now, m);
        }
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
                .filter_map(|id| self.members.get(id).map(|m| m.info.clone()))
                .take(MAX_RING_MEMBERS)
                .collect(),
        )
    }

    /// Keep only the members the policy can use: linked peers, opens in
    /// flight, long-link and on-demand targets, and the nearest ring nodes
    /// (twice `ring_links` on each side, for the size estimate).
    pub(super) fn prune_members(&mut self) {
        let w = 2 * self.cfg.ring_links;
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
    use std::net::SocketAddr;

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
