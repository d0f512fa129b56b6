//! Greedy routing over the links (`crate::routing`, 1-lookahead) and the
//! `Lookup` / `LookupReply` exchange built on it: the join (through an
//! introducer), finding the manager of a drawn long-link position, and
//! resolving the addresses of a node wanted on demand. A lookup records its
//! path; the reply walks it back.

use super::{Event, Link, Overlay, PendingLookup, Purpose, MAX_ATTEMPTS};
use crate::ring;
use crate::routing::{self, Candidate};
use crate::symphony;
use crate::wire::{Lookup, LookupReply, Member, Message, Role, MAX_PATH, MAX_RING_MEMBERS};
use ringlan_tunnel::NodeId;
use std::collections::BTreeMap;
use std::time::Instant;

use super::membership::nearest_members;

/// Most routing candidates examined around a target when a node has very
/// many links (an introducer): the nearest this many on each side.
const WIDE_CANDIDATES: usize = 8;
/// Links above which routing uses only the nearest links to the target.
const WIDE_LINKS: usize = 256;

impl Overlay {
    /// The link a message for ring position `target` goes to next (greedy
    /// with 1-lookahead), or `None` when this node is the closest it
    /// knows of.
    pub fn next_hop(&self, target: NodeId) -> Option<NodeId> {
        self.route(target, &[])
    }

    /// [`Self::next_hop`] for a message that arrived from `from`: never
    /// straight back (stale lookahead lists could otherwise bounce a
    /// message between two nodes until its hop limit).
    pub fn next_hop_from(&self, target: NodeId, from: NodeId) -> Option<NodeId> {
        self.route(target, &[from])
    }

    /// Greedy next hop towards `target` among ring links (1-lookahead),
    /// skipping `exclude`.
    pub(super) fn route(&self, target: NodeId, exclude: &[NodeId]) -> Option<NodeId> {
        let me = self.cfg.node_id;
        let in_ring = self.in_ring();
        if self.links.len() > WIDE_LINKS {
            // Very many links (an introducer): the nearest on each side of
            // the target are the only useful candidates.
            let near = nearest_links(&self.links, target, WIDE_CANDIDATES);
            let cands = near.iter().filter_map(|id| {
                self.links.get(id).map(|l| Candidate {
                    node: *id,
                    neighbours: &l.neighbours,
                })
            });
            return routing::next_hop(me, in_ring, target, cands, exclude);
        }
        let cands = self
            .links
            .iter()
            .filter(|(_, l)| l.takes_frames())
            .map(|(id, l)| Candidate {
                node: *id,
                neighbours: &l.neighbours,
            });
        routing::next_hop(me, in_ring, target, cands, exclude)
    }

    pub(super) fn start_join(&mut self, now: Instant) {
        if self.cfg.role == Role::Introducer
            || self.leaving
            || self.lookups.values().any(|p| p.purpose == Purpose::Join)
        {
            return;
        }
        let me = self.cfg.node_id;
        self.start_lookup(now, me, Purpose::Join);
    }

    /// Send a lookup for `target`. A join goes through an introducer (or,
    /// with none linked, any link); other
    /// lookups are routed from here. When this node is itself the closest,
    /// the lookup is answered locally.
    pub(super) fn start_lookup(
        &mut self,
        now: Instant,
        target: NodeId,
        purpose: Purpose,
    ) -> Option<u64> {
        let nonce = self.rng.u64();
        self.start_lookup_with(now, nonce, target, purpose)
    }

    /// [`Self::start_lookup`] with a nonce chosen by the caller (a long
    /// slot records it first so that a local answer finds the slot).
    pub(super) fn start_lookup_with(
        &mut self,
        now: Instant,
        nonce: u64,
        target: NodeId,
        purpose: Purpose,
    ) -> Option<u64> {
        let me = self.cfg.node_id;
        let hop = if purpose == Purpose::Join {
            // An introducer; with none linked, any member link (a rejoin
            // through the peer cache: any ring member routes the lookup).
            self.introducers
                .iter()
                .find_map(|i| i.node)
                .or_else(|| self.links.keys().next().copied())
        } else {
            self.route(target, &[me])
        };
        self.stats.lookups_started += 1;
        match hop {
            Some(h) => {
                self.lookups.insert(
                    nonce,
                    PendingLookup {
                        purpose,
                        target,
                        sent: now,
                    },
                );
                self.send(
                    h,
                    &Message::Lookup(Lookup {
                        nonce,
                        target,
                        path: vec![me],
                    }),
                );
                Some(nonce)
            }
            None if purpose == Purpose::Join => None,
            None => {
                let members = self.reply_members(target);
                self.lookup_done(
                    now,
                    PendingLookup {
                        purpose,
                        target,
                        sent: now,
                    },
                    nonce,
                    None,
                    members,
                );
                None
            }
        }
    }

    pub(super) fn on_lookup(&mut self, now: Instant, from: NodeId, mut l: Lookup) {
        let _ = now;
        let me = self.cfg.node_id;
        if l.path.last() != Some(&from) || l.path.contains(&me) {
            // Malformed or looping lookup.
            self.stats.bad_control += 1;
            return;
        }
        let hop = if l.path.len() < MAX_PATH {
            self.route(l.target, &l.path)
        } else {
            None
        };
        match hop {
            Some(h) => {
                self.stats.lookups_forwarded += 1;
                l.path.push(me);
                self.send(h, &Message::Lookup(l));
            }
            None => {
                self.stats.lookups_answered += 1;
                let members = self.reply_members(l.target);
                self.send(
                    from,
                    &Message::LookupReply(LookupReply {
                        nonce: l.nonce,
                        target: l.target,
                        path: l.path,
                        members,
                    }),
                );
            }
        }
    }

    pub(super) fn on_lookup_reply(&mut self, now: Instant, from: NodeId, mut r: LookupReply) {
        let me = self.cfg.node_id;
        if r.path.last() != Some(&me) {
            self.stats.bad_control += 1;
            return;
        }
        r.path.pop();
        if let Some(next) = r.path.last().copied() {
            // Walk the reply back; a broken path drops it (the asker
            // retries after its lookup timeout).
            if self.links.contains_key(&next) {
                self.send(next, &Message::LookupReply(r));
            }
            return;
        }
        if let Some(p) = self.lookups.remove(&r.nonce) {
            if p.target == r.target {
                self.lookup_done(now, p, r.nonce, Some(from), r.members);
            }
        }
    }

    /// A lookup of ours was answered with `members` (nearest the target),
    /// delivered by link `from` (`None`: answered from our own table).
    pub(super) fn lookup_done(
        &mut self,
        now: Instant,
        p: PendingLookup,
        nonce: u64,
        from: Option<NodeId>,
        mut members: Vec<Member>,
    ) {
        members.retain(|m| !self.banned.contains(&m.node_id));
        let ring_ids: Vec<NodeId> = members
            .iter()
            .filter(|m| m.has_tap)
            .map(|m| m.node_id)
            .collect();
        match from {
            // Delivered by a link: gossip, within that link's budgets. Its
            // reflexive addresses are the answering node's own
            // observations (it marked the others relayed); the hops that
            // walked the reply back only forward it.
            Some(from) => self.learn_gossip(now, from, members),
            // Answered from our own member table.
            None => {
                for m in members {
                    self.learn(now, m);
                }
            }
        }
        match p.purpose {
            Purpose::Join => {
                if !self.joined {
                    self.joined = true;
                    self.events.push_back(Event::Joined);
                }
            }
            Purpose::Resolve(_) => {}
            Purpose::Long => {
                let me = self.cfg.node_id;
                let Some(slot) = self.long.iter_mut().find(|s| s.lookup == Some(nonce)) else {
                    return;
                };
                slot.lookup = None;
                // The manager of the drawn position: the first ring node at
                // or clockwise after it (Symphony / Chord).
                let owner = ring::owner(slot.pos, ring_ids.iter().copied())
                    .or_else(|| ring::owner(slot.pos, [me]));
                match owner {
                    Some(o) if o != me && !self.forgotten.contains_key(&o) => {
                        slot.node = Some(o);
                        slot.attempts = 0;
                    }
                    _ => {
                        // Managed by this node itself: draw again.
                        slot.attempts += 1;
                        slot.pos = symphony::draw_target(me, self.n_est, &mut self.rng);
                        if slot.attempts >= MAX_ATTEMPTS {
                            slot.retry_at = Some(now + self.cfg.refresh_interval * 6);
                        }
                    }
                }
            }
        }
    }

    /// The members to answer a lookup for `target` with: this node if it
    /// is a ring position, then the ring nodes it knows nearest the target
    /// on each side.
    fn reply_members(&self, target: NodeId) -> Vec<Member> {
        let w = self.cfg.ring_links + 1;
        let mut out = Vec::with_capacity(2 * w + 1);
        if self.in_ring() {
            out.push(self.self_member());
        }
        let mut ids = nearest_members(&self.members, target, w, true);
        ids.extend(nearest_members(&self.members, target, w, false));
        for id in ids {
            if out.len() >= MAX_RING_MEMBERS {
                break;
            }
            if let Some(m) = self.members.get(&id) {
                if !out.iter().any(|x: &Member| x.node_id == id) {
                    out.push(self.gossip_record(&m.info));
                }
            }
        }
        out
    }
}

/// The `k` frame-taking links nearest `pos` on each side.
fn nearest_links(links: &BTreeMap<NodeId, Link>, pos: NodeId, k: usize) -> Vec<NodeId> {
    let tap = |(id, l): (&NodeId, &Link)| l.takes_frames().then_some(*id);
    let mut v: Vec<NodeId> = links
        .range(pos..)
        .chain(links.range(..pos))
        .filter_map(tap)
        .take(k)
        .collect();
    v.extend(
        links
            .range(..pos)
            .rev()
            .chain(links.range(pos..).rev())
            .filter_map(tap)
            .take(k),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::tests::{decode_sends, drain, node};
    use crate::overlay::Action;
    use crate::wire::{AddrOrigin, TaggedAddr};
    use std::net::SocketAddr;
    use std::time::Duration;

    #[test]
    fn join_goes_through_the_introducer_and_links_the_ring() {
        let t0 = Instant::now();
        let mut o = node(t0);
        let intro: SocketAddr = "198.51.100.7:4910".parse().unwrap();
        assert_eq!(
            drain(&mut o),
            vec![Action::OpenSession {
                node: None,
                addrs: vec![intro]
            }]
        );
        // Introducer unreachable: retried after 0.5-1 s, then 1-2 s.
        o.open_failed(t0, None, &[intro]);
        o.handle_timeout(t0 + Duration::from_millis(499));
        assert!(drain(&mut o).is_empty());
        let t1 = o.poll_timeout().unwrap();
        assert!(t1 <= t0 + Duration::from_secs(1));
        o.handle_timeout(t1);
        assert_eq!(drain(&mut o).len(), 1);
        // Up: Hello, then the join lookup for our own id.
        o.peer_up(t1, NodeId(7), Some(intro), true);
        let sent = decode_sends(&drain(&mut o));
        assert!(matches!(sent[0], (NodeId(7), Message::Hello(_))));
        let Some((_, Message::Lookup(l))) = sent.get(1).cloned() else {
            panic!("no lookup: {sent:?}");
        };
        assert_eq!((l.target, l.path.clone()), (NodeId(100), vec![NodeId(100)]));
        assert!(!o.is_joined());
        // The answer names two ring nodes: the node joins and opens both.
        let m = |id: u128, a: &str| Member {
            node_id: NodeId(id),
            name: format!("m{id}"),
            role: Role::Node,
            has_tap: true,
            addrs: vec![TaggedAddr {
                origin: AddrOrigin::Reflexive,
                addr: a.parse().unwrap(),
            }],
        };
        let reply = Message::LookupReply(LookupReply {
            nonce: l.nonce,
            target: l.target,
            path: l.path,
            members: vec![m(200, "203.0.113.2:4910"), m(50, "203.0.113.3:4910")],
        });
        o.handle_control(t1, NodeId(7), &reply.encode().unwrap());
        assert!(o.is_joined());
        let opens: Vec<Action> = drain(&mut o)
            .into_iter()
            .filter(|a| matches!(a, Action::OpenSession { .. }))
            .collect();
        assert_eq!(opens.len(), 2, "{opens:?}");
        assert_eq!(
            o.ring_view(),
            (vec![NodeId(200), NodeId(50)], vec![NodeId(50), NodeId(200)])
        );
        // One open fails: the node is forgotten, gossip cannot bring it back
        // for `forget_for`.
        o.open_failed(t1, Some(NodeId(200)), &[]);
        assert!(o.member(NodeId(200)).is_none());
        let ring = Message::Ring(vec![m(200, "203.0.113.2:4910")]);
        o.peer_up(t1, NodeId(50), "203.0.113.3:4910".parse().ok(), false);
        o.handle_control(t1, NodeId(50), &ring.encode().unwrap());
        assert!(o.member(NodeId(200)).is_none());
        o.handle_timeout(t1 + Duration::from_secs(31));
        o.handle_control(
            t1 + Duration::from_secs(31),
            NodeId(50),
            &ring.encode().unwrap(),
        );
        assert!(o.member(NodeId(200)).is_some());
    }
}
