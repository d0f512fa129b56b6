//! Session life cycle: a link is a session up to a peer. Decides what a
//! session coming up or going down means (introducer found, join started,
//! long slot to look up again, node forgotten for a while), opens sessions to
//! introducers (with back-off) and to members, and answers the agent's
//! questions about which links can forward or relay towards a node.
//!
//! Which links the node *wants* is decided in `policy.rs`.

use super::{jitter, Action, Bucket, Event, Link, Overlay};
use crate::ring;
use crate::wire::{LinkWant, Role, MAX_NEIGHBOURS};
use ringlan_tunnel::NodeId;
use std::net::SocketAddr;
use std::time::Instant;

impl Overlay {
    /// A session to `node` is up (opened by either side). `direct` is the
    /// address the session runs to, or `None` when it runs over a relayed
    /// route (a relayed path is never taken for an address of the node);
    /// `is_introducer` is true when it answers an `OpenSession { node: None,
    /// .. }` to an introducer address. A second session to a node already
    /// linked is ignored.
    pub fn peer_up(
        &mut self,
        now: Instant,
        node: NodeId,
        direct: Option<SocketAddr>,
        is_introducer: bool,
    ) {
        self.failed_opens.remove(&node);
        if node == self.cfg.node_id || self.banned.contains(&node) {
            // Reached ourselves (e.g. our own address in the introducer
            // list), or a banned node.
            self.actions.push_back(Action::CloseSession { node });
            return;
        }
        if is_introducer {
            let idx = self
                .introducers
                .iter()
                .position(|i| i.node.is_none() && Some(i.addr) == direct)
                .or_else(|| {
                    self.introducers
                        .iter()
                        .position(|i| i.node.is_none() && i.pending.is_some())
                });
            if let Some(i) = idx.and_then(|i| self.introducers.get_mut(i)) {
                i.node = Some(node);
                i.pending = None;
                i.retry_at = None;
                i.backoff = self.cfg.retry_initial;
            }
        }
        if let Some(m) = self.members.get_mut(&node) {
            m.pending = None;
        }
        self.forgotten.remove(&node);
        if let Some(l) = self.links.get_mut(&node) {
            l.to_introducer |= is_introducer;
            return;
        }
        self.links.insert(
            node,
            Link {
                direct,
                observed: direct,
                since: now,
                to_introducer: is_introducer,
                hello: None,
                neighbours: Vec::new(),
                peer_want: LinkWant::Release,
                announced: LinkWant::Release,
                last_traffic: now,
                probed: None,
                moved: Bucket::full(now, self.cfg.budgets.moved_per_peer),
                gossip: Bucket::full(now, self.cfg.budgets.gossip_per_peer),
                verify: Bucket::full(now, self.cfg.budgets.verifies_per_link),
                evictions: Bucket::full(now, self.cfg.budgets.origin_evictions_per_link),
                dir: Bucket::full(now, self.cfg.directory.per_peer),
                policy: self.policies.remove(&node),
            },
        );
        let kind = self.link_kind(node);
        self.events.push_back(Event::LinkUp { node, kind });
        let hello = self.hello();
        self.send(node, &hello);
        if direct.is_none() {
            self.tell_reflexive(node);
        }
        if !self.joined {
            // Through the introducer, or, with none linked, through this
            // member (a rejoin from the peer cache, `bootstrap`).
            self.start_join(now);
        }
        self.run_policy(now);
    }

    /// Open sessions to members known from an earlier run (the agent's peer
    /// cache) when no introducer answers: a member of the ring routes the
    /// join lookup as well as an introducer does (`start_join` goes through
    /// any link when no introducer is linked). Each entry is a node id and
    /// its addresses (at most `MAX_ADDRS` used); ourselves, banned nodes,
    /// linked nodes and members with an open in flight are skipped. A
    /// failed open is an ordinary member open failure.
    pub fn bootstrap(&mut self, peers: &[(NodeId, Vec<SocketAddr>)]) {
        if self.leaving {
            return;
        }
        for (node, addrs) in peers {
            let busy = self.members.get(node).is_some_and(|m| m.pending.is_some());
            if *node == self.cfg.node_id
                || self.banned.contains(node)
                || self.links.contains_key(node)
                || busy
                || addrs.is_empty()
            {
                continue;
            }
            self.stats.opens += 1;
            self.actions.push_back(Action::OpenSession {
                node: Some(*node),
                addrs: addrs.iter().take(crate::wire::MAX_ADDRS).copied().collect(),
            });
        }
    }

    /// Replace the introducer addresses (the agent re-resolved their host
    /// names). Introducers at an address still listed keep their state (a
    /// session, a back-off); new addresses are opened at once; a removed
    /// address is no longer retried (a session to it stays a link until it
    /// ends).
    pub fn set_introducers(&mut self, now: Instant, addrs: &[SocketAddr]) {
        self.introducers.retain(|i| addrs.contains(&i.addr));
        for a in addrs {
            if !self.introducers.iter().any(|i| i.addr == *a) {
                self.introducers.push(super::IntroducerState {
                    addr: *a,
                    node: None,
                    pending: None,
                    retry_at: Some(now),
                    backoff: self.cfg.retry_initial,
                });
            }
        }
        self.cfg.introducers = addrs.to_vec();
        self.open_introducers(now);
    }

    /// Introducers with a session up now.
    pub fn introducers_linked(&self) -> usize {
        self.introducers.iter().filter(|i| i.node.is_some()).count()
    }

    /// The last session to `node` is gone.
    pub fn peer_down(&mut self, now: Instant, node: NodeId) {
        let Some(link) = self.links.remove(&node) else {
            return;
        };
        self.switch.forget_node(node);
        self.events.push_back(Event::LinkDown { node });
        for i in self.introducers.iter_mut().filter(|i| i.node == Some(node)) {
            i.node = None;
            i.pending = None;
            i.retry_at = Some(now + jitter(&mut self.rng, i.backoff));
            i.backoff = (i.backoff * 2).min(self.cfg.retry_max);
        }
        self.link_lost(now, node);
        let wanted = link.announced != LinkWant::Release || link.peer_want != LinkWant::Release;
        if self.cfg.role == Role::Introducer || wanted {
            // A failure (not a close of a link nobody wanted): do not take
            // the node back from stale gossip for a while.
            self.forget(now, node);
        }
        self.run_policy(now);
    }

    /// An `OpenSession` failed (unreachable, refused, timed out in the
    /// transport). `node` and `addrs` as in the action.
    pub fn open_failed(&mut self, now: Instant, node: Option<NodeId>, addrs: &[SocketAddr]) {
        match node {
            Some(id) => self.member_open_failed(now, id),
            None => {
                if let Some(idx) = self.introducers.iter().position(|i| {
                    i.node.is_none() && i.pending.is_some() && addrs.contains(&i.addr)
                }) {
                    self.introducer_failed(now, idx);
                }
            }
        }
        self.run_policy(now);
    }

    /// Nodes with a session to us that can forward an IHello to `target`
    /// (RFC 7016 3.5.1.5): introducers (every member keeps a session to
    /// them) and links whose last `Neighbours` list names `target`.
    pub fn forwarders_for(&self, target: NodeId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(id, l)| {
                **id != target && (l.is_introducer() || l.neighbours.contains(&target))
            })
            .map(|(id, _)| *id)
            .collect();
        out.truncate(MAX_NEIGHBOURS);
        out
    }

    /// Links that relay (their `Hello` said so) and can carry a route to
    /// `target`: those with a session to it (introducers, links whose last
    /// `Neighbours` list names it) first, then the other relaying links
    /// nearest to `target` on the ring (a route through them may need more
    /// relays). Never `target` itself.
    pub fn relays_for(&self, target: NodeId) -> Vec<NodeId> {
        let relaying = |l: &Link| l.hello.as_ref().is_some_and(|h| h.relays);
        let mut near: Vec<NodeId> = Vec::new();
        let mut far: Vec<NodeId> = Vec::new();
        for (id, l) in &self.links {
            if *id == target || !relaying(l) {
                continue;
            }
            if l.is_introducer() || l.neighbours.contains(&target) {
                near.push(*id);
            } else {
                far.push(*id);
            }
        }
        far.sort_by_key(|id| ring::ring_distance(*id, target));
        near.extend(far);
        near
    }

    /// Whether `target` is known to have a session with link `via`.
    pub fn reaches(&self, via: NodeId, target: NodeId) -> bool {
        self.links
            .get(&via)
            .is_some_and(|l| l.is_introducer() || l.neighbours.contains(&target))
    }

    pub(super) fn open_introducers(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        for i in &mut self.introducers {
            if i.node.is_none() && i.pending.is_none() && i.retry_at.is_some_and(|r| now >= r) {
                i.pending = Some(now);
                i.retry_at = None;
                self.stats.opens += 1;
                self.actions.push_back(Action::OpenSession {
                    node: None,
                    addrs: vec![i.addr],
                });
            }
        }
    }

    pub(super) fn introducer_failed(&mut self, now: Instant, idx: usize) {
        self.stats.open_failures += 1;
        if let Some(i) = self.introducers.get_mut(idx) {
            i.pending = None;
            i.retry_at = Some(now + jitter(&mut self.rng, i.backoff));
            i.backoff = (i.backoff * 2).min(self.cfg.retry_max);
        }
    }

    pub(super) fn open_member(&mut self, now: Instant, id: NodeId) {
        if self.links.contains_key(&id) || self.leaving || self.banned.contains(&id) {
            return;
        }
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.pending.is_some() {
            return;
        }
        m.pending = Some(now);
        self.stats.opens += 1;
        self.actions.push_back(Action::OpenSession {
            node: Some(id),
            addrs: m.info.addrs.iter().map(|a| a.addr).collect(),
        });
    }

    /// An open to a member failed or timed out: forget it for a while
    /// (it is gone, or unreachable from here).
    pub(super) fn member_open_failed(&mut self, now: Instant, id: NodeId) {
        if self.links.contains_key(&id) {
            if let Some(m) = self.members.get_mut(&id) {
                m.pending = None;
            }
            return;
        }
        if self.members.get(&id).is_some_and(|m| m.pending.is_some()) {
            self.stats.open_failures += 1;
        }
        if self.failed_opens.len() < 1024 || self.failed_opens.contains_key(&id) {
            *self.failed_opens.entry(id).or_insert(0) += 1;
        }
        self.link_lost(now, id);
        self.forget(now, id);
    }

    /// Bookkeeping when a link (or the hope of one) to `node` is gone.
    pub(super) fn link_lost(&mut self, now: Instant, node: NodeId) {
        self.on_demand.remove(&node);
        let retry = now + jitter(&mut self.rng, self.cfg.retry_initial);
        for s in self.long.iter_mut().filter(|s| s.node == Some(node)) {
            // Look the same position up again: its new manager.
            s.node = None;
            s.retry_at = Some(retry);
        }
    }
}
