//! The link policy: which links this node wants and why. Ring neighbours
//! (`ring_links` on each side), Symphony long links (`k = round(log2(n))`
//! drawn from the harmonic density, re-drawn when the size estimate moves
//! by 2x) and on-demand links; what each link is for is announced with
//! `LinkRequest`, links neither end wants are closed after `link_grace`.
//! The caps on links only the peer wants (`link_caps`) keep every node at
//! most 2 x (successors + predecessors + k) topology links.

use super::{jitter, Action, Event, LongSlot, Overlay, Purpose};
use crate::symphony;
use crate::wire::{LinkWant, Message, RejectReason, Role};
use ringlan_tunnel::NodeId;
use std::time::Instant;

use super::membership::nearest_after;

/// Redraws of one long slot before it waits for the next refresh.
pub(super) const MAX_ATTEMPTS: u32 = 4;

impl Overlay {
    /// The link policy: ring neighbours, long links, on-demand links; open
    /// what is missing, tell peers what each link is for, close links
    /// neither end wants. Introducers only accept.
    pub(super) fn run_policy(&mut self, now: Instant) {
        if self.cfg.role == Role::Introducer || self.leaving {
            return;
        }
        if self.joined && self.in_ring() {
            self.update_long_links(now);
        }
        let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
        let mut want: Vec<(NodeId, LinkWant)> = Vec::new();
        for id in succ.iter().chain(pred.iter()) {
            want.push((*id, LinkWant::Ring));
        }
        for s in &self.long {
            if let Some(n) = s.node {
                if !want.iter().any(|(w, _)| *w == n) {
                    want.push((n, LinkWant::Long));
                }
            }
        }
        for n in self.on_demand.keys() {
            if !want.iter().any(|(w, _)| w == n) {
                want.push((*n, LinkWant::OnDemand));
            }
        }
        for (id, _) in &want {
            if !self.links.contains_key(id) {
                self.open_member(now, *id);
            }
        }
        // Tell peers what their link is for; close what nobody wants.
        let grace = self.cfg.link_grace;
        let mut announce = Vec::new();
        let mut close = Vec::new();
        for (id, l) in self.links.iter_mut() {
            if l.is_introducer() || l.hello.is_none() {
                continue;
            }
            let w = want
                .iter()
                .find(|(n, _)| n == id)
                .map(|(_, w)| *w)
                .unwrap_or(LinkWant::Release);
            if w != l.announced {
                l.announced = w;
                announce.push((*id, w));
            }
            if w == LinkWant::Release
                && l.peer_want == LinkWant::Release
                && now.saturating_duration_since(l.since) >= grace
            {
                close.push(*id);
            }
        }
        for (id, w) in announce {
            self.send(id, &Message::LinkRequest(w));
        }
        self.enforce_link_caps();
        for id in close {
            self.links.remove(&id);
            self.switch.forget_node(id);
            self.events.push_back(Event::LinkDown { node: id });
            self.actions.push_back(Action::CloseSession { node: id });
        }
    }

    /// Size estimate, long-link count and draws (Symphony).
    fn update_long_links(&mut self, now: Instant) {
        let me = self.cfg.node_id;
        let w = 2 * self.cfg.ring_links;
        let succ = nearest_after(&self.members, me, w, true);
        let pred = nearest_after(&self.members, me, w, false);
        self.n_est = symphony::estimate_n(me, &succ, &pred);
        if succ.is_empty() {
            return;
        }
        let ratio = self.n_est / self.n_drawn.max(f64::MIN_POSITIVE);
        if self.n_drawn == 0.0 || !(0.5..2.0).contains(&ratio) {
            // The estimate changed by 2x: redraw every long link.
            self.n_drawn = self.n_est;
            for s in &mut self.long {
                s.pos = symphony::draw_target(me, self.n_est, &mut self.rng);
                s.node = None;
                s.attempts = 0;
                s.retry_at = None;
            }
        }
        let k = self.long_target();
        self.long.truncate(k);
        while self.long.len() < k {
            let pos = symphony::draw_target(me, self.n_est, &mut self.rng);
            self.long.push(LongSlot {
                pos,
                node: None,
                lookup: None,
                retry_at: None,
                attempts: 0,
            });
        }
        for i in 0..self.long.len() {
            let Some(s) = self.long.get(i) else {
                continue;
            };
            if s.node.is_some() || s.lookup.is_some() || s.retry_at.is_some_and(|r| now < r) {
                continue;
            }
            let pos = s.pos;
            let nonce = self.rng.u64();
            if let Some(s) = self.long.get_mut(i) {
                s.lookup = Some(nonce);
            }
            if self
                .start_lookup_with(now, nonce, pos, Purpose::Long)
                .is_none()
            {
                // Answered here: `lookup_done` settled the slot.
                if let Some(s) = self.long.get_mut(i).filter(|s| s.lookup == Some(nonce)) {
                    s.lookup = None;
                }
            }
        }
    }

    /// Current number of long links wanted (k).
    pub(super) fn long_target(&self) -> usize {
        symphony::long_link_count(self.n_est, self.cfg.long_links_min, self.cfg.long_links_max)
    }

    /// The caps on links only the peer wants ("foreign" links), which make
    /// the topology bound hold by construction: every node has at most
    /// `s + p + k` links it wants itself, at most `2k` links peers hold as
    /// long links (incoming long), and at most `s + p + k` foreign links,
    /// so at most 2 x (s + p + k) links besides introducer and on-demand
    /// sessions. Returns (incoming long cap, foreign cap).
    fn link_caps(&self) -> (usize, usize) {
        let k = self.long_target().max(1);
        (2 * k, 2 * self.cfg.ring_links + k)
    }

    /// (incoming long, foreign) links, not counting `except`: links the
    /// peer holds as a long link, and frame-taking links only the peer
    /// wants (as ring or long link).
    fn incoming_counts(&self, except: Option<NodeId>) -> (usize, usize) {
        let mut long = 0;
        let mut foreign = 0;
        for (id, l) in &self.links {
            if Some(*id) == except || l.is_introducer() {
                continue;
            }
            if l.peer_want == LinkWant::Long {
                long += 1;
            }
            if l.announced == LinkWant::Release
                && matches!(l.peer_want, LinkWant::Long | LinkWant::Ring)
            {
                foreign += 1;
            }
        }
        (long, foreign)
    }

    /// Rejects foreign long links (youngest first) while a cap of
    /// [`Self::link_caps`] is exceeded: links become foreign after they
    /// were accepted, when this node stops wanting them itself (a ring
    /// neighbour moved away, a long link was redrawn), so checking
    /// requests alone does not keep the bound.
    fn enforce_link_caps(&mut self) {
        let (long_cap, foreign_cap) = self.link_caps();
        let (mut long, mut foreign) = self.incoming_counts(None);
        while long > long_cap || foreign > foreign_cap {
            let victim = self
                .links
                .iter()
                .filter(|(_, l)| {
                    !l.is_introducer()
                        && l.announced == LinkWant::Release
                        && l.peer_want == LinkWant::Long
                })
                .max_by_key(|(_, l)| l.since)
                .map(|(id, _)| *id);
            let Some(id) = victim else {
                // Only links wanted here or ring links are left.
                return;
            };
            if let Some(l) = self.links.get_mut(&id) {
                l.peer_want = LinkWant::Release;
            }
            long -= 1;
            foreign -= 1;
            self.stats.link_rejects += 1;
            self.send(
                id,
                &Message::LinkReject {
                    kind: LinkWant::Long,
                    reason: RejectReason::Capacity,
                },
            );
        }
    }

    pub(super) fn on_link_request(&mut self, _now: Instant, from: NodeId, want: LinkWant) {
        let (long_cap, foreign_cap) = self.link_caps();
        let (incoming_long, foreign) = self.incoming_counts(Some(from));
        // Introducers accept every link (they are the bootstrap and keep
        // no topology of their own).
        let full =
            incoming_long >= long_cap || (self.cfg.role == Role::Node && foreign >= foreign_cap);
        let Some(l) = self.links.get_mut(&from) else {
            return;
        };
        if want == LinkWant::Long
            && l.announced == LinkWant::Release
            && (full || self.cfg.mac.is_none())
        {
            l.peer_want = LinkWant::Release;
            self.stats.link_rejects += 1;
            self.send(
                from,
                &Message::LinkReject {
                    kind: want,
                    reason: RejectReason::Capacity,
                },
            );
            return;
        }
        let newly_ring = want == LinkWant::Ring && l.peer_want != LinkWant::Ring;
        l.peer_want = want;
        if newly_ring && self.in_ring() {
            // The peer holds us as a ring neighbour: tell it ours so that
            // it finds any node between us (ring stabilisation).
            let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
            let mut ids = succ;
            ids.extend(pred);
            let msg = Message::Ring(
                ids.iter()
                    .filter_map(|id| self.members.get(id).map(|m| m.info.clone()))
                    .collect(),
            );
            self.send(from, &msg);
        }
    }

    pub(super) fn on_link_reject(
        &mut self,
        now: Instant,
        from: NodeId,
        kind: LinkWant,
        _r: RejectReason,
    ) {
        match kind {
            LinkWant::Long => {
                let me = self.cfg.node_id;
                let n = self.n_est;
                let retry = now + jitter(&mut self.rng, self.cfg.retry_initial);
                for s in self.long.iter_mut().filter(|s| s.node == Some(from)) {
                    s.node = None;
                    s.attempts += 1;
                    s.pos = symphony::draw_target(me, n, &mut self.rng);
                    s.retry_at = Some(retry);
                }
            }
            LinkWant::OnDemand => {
                self.on_demand.remove(&from);
            }
            LinkWant::Release | LinkWant::Ring => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::tests::{decode_sends, drain, node};
    use crate::overlay::LinkKind;
    use crate::switch::Mac;
    use crate::wire::Hello;
    use std::time::Duration;

    #[test]
    fn link_requests_capacity_and_release() {
        let t0 = Instant::now();
        let mut o = node(t0);
        drain(&mut o);
        let tap_hello = |id: u128| {
            Message::Hello(Hello {
                node_id: NodeId(id),
                name: "p".into(),
                role: Role::Node,
                addrs: vec![],
                mac: Some(Mac([2, 0, 0, 0, 1, id as u8])),
                relays: false,
                bridge: false,
                symmetric_nat: false,
                aegis_hops: false,
            })
            .encode()
            .unwrap()
        };
        // Ring neighbours first (ids next to 100 on both sides), then far
        // nodes asking for long links. k = 1 here (tiny estimate): at most
        // 2 incoming long links on links not wanted here.
        let long = Message::LinkRequest(LinkWant::Long).encode().unwrap();
        for id in [110u128, 120, u128::MAX - 10, u128::MAX - 20] {
            o.peer_up(t0, NodeId(id), "203.0.113.9:1".parse().ok(), false);
            o.handle_control(t0, NodeId(id), &tap_hello(id));
        }
        for k in 1..=4u128 {
            let id = k << 120;
            o.peer_up(t0, NodeId(id), "203.0.113.9:1".parse().ok(), false);
            o.handle_control(t0, NodeId(id), &tap_hello(id));
            o.handle_control(t0, NodeId(id), &long);
        }
        let sent = decode_sends(&drain(&mut o));
        let rejects: Vec<NodeId> = sent
            .iter()
            .filter(|(_, m)| matches!(m, Message::LinkReject { .. }))
            .map(|(to, _)| *to)
            .collect();
        assert_eq!(
            rejects,
            vec![NodeId(3 << 120), NodeId(4 << 120)],
            "{sent:?}"
        );
        assert_eq!(o.stats().link_rejects, rejects.len() as u64);
        let kinds: Vec<LinkKind> = o.neighbours().iter().map(|n| n.kind).collect();
        assert!(kinds.contains(&LinkKind::Long));
        // A rejected peer that wants nothing is closed after the grace.
        let t1 = t0 + Duration::from_secs(11);
        o.handle_timeout(t1);
        let closed: Vec<NodeId> = drain(&mut o)
            .into_iter()
            .filter_map(|a| match a {
                Action::CloseSession { node } => Some(node),
                _ => None,
            })
            .collect();
        for r in &rejects {
            assert!(closed.contains(r), "{r:?} not closed: {closed:?}");
        }
        // Release from a long peer that we do not want: closed too.
        let rel = Message::LinkRequest(LinkWant::Release).encode().unwrap();
        let keep: Vec<NodeId> = o.neighbours().iter().map(|n| n.node).collect();
        for id in &keep {
            o.handle_control(t1, *id, &rel);
        }
        let (succ, pred) = o.ring_view();
        for n in o.neighbours() {
            assert!(succ.contains(&n.node) || pred.contains(&n.node), "{n:?}");
        }
    }
}
