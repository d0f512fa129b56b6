//! Sessions and the overlay: what the endpoint's events mean for the peer
//! table, the overlay, the routes and punching, and how the overlay's
//! requests (open or close a session, probe a path, send a control
//! message) are carried out.
//!
//! Per session three flows go each way (flow metadata names the purpose,
//! RFC 7016 3.6.2.1): [`CONTROL_FLOW`] (reliable: overlay control
//! messages), [`FRAMES_FLOW`] (never retransmitted: Ethernet frames) and
//! [`MEMBERSHIP_FLOW`] (reliable: credentials, refusals, revocation lists;
//! `admission`). The overlay hears of a session's peer only once it is
//! admitted (`admission`): before, its frames are dropped and its control
//! messages held.

use std::net::SocketAddr;
use std::time::Instant;

use ringlan_overlay::{self as overlay};
use ringlan_tunnel::{Delivery, FlowEvent, Reliability};
use ringlan_tunnel::{Event, Target};
use ringlan_tunnel::{NodeId, Path};
use ringlan_tunnel::{OpenFailure, SessionId};

use crate::admission::Held;
use crate::peers::{Drops, FlowKind, Opening, Peer};
use crate::routes::{self, RouteControl};
use crate::status::Traffic;
use crate::{Node, CONTROL_FLOW, FRAMES_FLOW, MEMBERSHIP_FLOW};

impl Node {
    /// Handle everything the endpoint has to say, then what the overlay
    /// asks for in turn.
    pub(crate) fn process_endpoint(&mut self, now: Instant) {
        while let Some(ev) = self.endpoint.poll_event() {
            self.handle_event(now, ev);
        }
        self.process_overlay(now);
    }

    fn handle_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::SessionOpened {
                session,
                peer,
                path,
                role,
            } => self.session_opened(now, session, peer, path, role),
            Event::SessionFailed { session, reason } => {
                let asked = self.peers.failed(session);
                if matches!(reason, OpenFailure::Duplicate(_)) {
                    return;
                }
                if let Some(o) = asked {
                    tracing::info!(node = ?o.node, addrs = ?o.addrs, ?reason, "session failed to open");
                    self.overlay.open_failed(now, o.node, &o.addrs);
                }
            }
            Event::SessionClosed {
                session,
                peer,
                reason,
            } => {
                if reason == ringlan_tunnel::CloseReason::Exhausted {
                    // Its keys ran out without a rekey (a peer without
                    // rekeying, or one that stopped answering): worth a look.
                    tracing::warn!(%peer, ?reason, "session closed: keys exhausted without a rekey");
                } else {
                    tracing::info!(%peer, ?reason, "session closed");
                }
                self.gate_gone(session);
                if self.peers.closed(session, peer) {
                    self.overlay.peer_down(now, peer);
                }
            }
            Event::AddressChanged { session, from, to } => {
                tracing::info!(?session, %from, %to, "peer address changed");
                if let Some(a) = to.direct() {
                    self.reach.verified(now, a.ip());
                }
                if let Some(peer) = self.endpoint.session_info(session).and_then(|i| i.peer) {
                    self.with_routes(now, |r, cx| {
                        r.on_session_path(cx, peer, to);
                    });
                }
                // Tell the other links (RFC 7016 3.5.1.5 re-introduction):
                // a peer whose NAT only lets the old address in probes it.
                // A relayed path is recorded as such, never announced.
                let Some(node) = self.peers.get(session).map(|p| p.node) else {
                    return;
                };
                if self.peers.session_of(node) == Some(session) && self.adm.is_admitted(session) {
                    let direct = to.direct();
                    self.overlay.peer_moved(now, node, direct);
                    if let (Some(to), true) = (direct, from.is_relayed()) {
                        // A relayed session went direct.
                        self.punch_succeeded(node, to);
                    }
                }
            }
            Event::RouteClosed { id } => {
                self.with_routes(now, |r, cx| r.on_route_closed(now, cx, id));
            }
            Event::PathStalled { session, path } => {
                tracing::info!(?session, %path, "path stalled");
                self.with_routes(now, |r, cx| r.on_stalled(now, cx, session, path));
            }
            Event::StunResult {
                tx,
                server,
                mapped,
                other,
            } => self.stun_result(now, tx, server, mapped, other),
            Event::StunFailed { tx, server } => {
                self.stun_pending.remove(&tx);
                tracing::debug!(%server, "STUN query unanswered");
            }
            Event::Flow { session, event } => self.handle_flow(now, session, event),
        }
    }

    fn session_opened(
        &mut self,
        now: Instant,
        session: SessionId,
        peer: NodeId,
        path: Path,
        role: ringlan_tunnel::Role,
    ) {
        if let Some(a) = path.direct() {
            // Authenticated traffic came from there (`reach`).
            self.reach.verified(now, a.ip());
        }
        // Over a route, the peer must be the node the route leads to
        // (docs/relay.md "Origins").
        let mut on_its_route = true;
        self.with_routes(now, |r, cx| {
            on_its_route = r.on_session_path(cx, peer, path)
        });
        if !on_its_route {
            self.endpoint.close(now, session, false);
            if let Some(o) = self.peers.failed(session) {
                self.overlay.open_failed(now, o.node, &o.addrs);
            }
            return;
        }
        // Two frame flows: bulk and sparse (`sparse.rs`); a receiver takes
        // every flow named FRAMES_FLOW as frames.
        let (Ok(control), Ok(frames), Ok(membership), Ok(sparse)) = (
            self.endpoint.open_flow(session, CONTROL_FLOW, None),
            self.endpoint.open_flow(session, FRAMES_FLOW, None),
            self.endpoint.open_flow(session, MEMBERSHIP_FLOW, None),
            self.endpoint.open_flow(session, FRAMES_FLOW, None),
        ) else {
            tracing::warn!(%peer, "cannot open flows; closing session");
            self.peers.failed(session);
            self.endpoint.close(now, session, false);
            return;
        };
        let p = Peer {
            node: peer,
            control,
            frames,
            sparse,
            recv: Default::default(),
            tx: Traffic::default(),
            rx: Traffic::default(),
            drops: Drops::new(),
            opened: now,
            cut: Default::default(),
        };
        let (asked, replaced) = self.peers.opened(session, p);
        let is_introducer = asked.is_some_and(|o| o.node.is_none());
        tracing::info!(peer = %peer, %path, ?role, is_introducer, "session open");
        if let Some(old) = replaced {
            // A newer session replaced an older one to the same node.
            self.endpoint.close(now, old, false);
        }
        // Credentials go out; the overlay hears of the peer once admitted.
        self.gate_opened(now, session, peer, membership, is_introducer);
    }

    fn handle_flow(&mut self, now: Instant, session: SessionId, event: FlowEvent) {
        match event {
            FlowEvent::IncomingFlow { flow, metadata, .. } => {
                let kind = match metadata.as_slice() {
                    CONTROL_FLOW => Some(FlowKind::Control),
                    FRAMES_FLOW => Some(FlowKind::Frames),
                    MEMBERSHIP_FLOW => Some(FlowKind::Membership),
                    _ => None,
                };
                match (kind, self.peers.get_mut(session)) {
                    (Some(k), Some(p)) => {
                        p.recv.insert(flow, k);
                        if k == FlowKind::Frames {
                            // Frames are never retransmitted: one lost
                            // fragment must not hold back the frames
                            // behind it until the sender gives it up
                            // (docs/dataplane.md "Frames in arrival order").
                            self.endpoint
                                .accept_flow(session, flow, Delivery::ArrivalOrder);
                        }
                    }
                    _ => self.endpoint.reject_flow(session, flow, 1),
                }
            }
            FlowEvent::Message { flow, data } => {
                let Some(p) = self.peers.get(session) else {
                    self.endpoint.recycle(session, data);
                    return;
                };
                let from = p.node;
                match p.recv.get(&flow) {
                    Some(FlowKind::Control) => {
                        if let Some(data) = self.gate_control(now, session, data) {
                            self.overlay.handle_control(now, from, &data);
                            self.sync_peer_addresses(from);
                            self.endpoint.recycle(session, data);
                        }
                    }
                    Some(FlowKind::Frames) if self.adm.is_admitted(session) => {
                        self.frame_from_peer(now, session, from, data)
                    }
                    Some(FlowKind::Frames) => {
                        if let Some(p) = self.peers.get_mut(session) {
                            p.drop_frame("unadmitted");
                        }
                        self.endpoint.recycle(session, data);
                    }
                    Some(FlowKind::Membership) => {
                        self.membership_message(now, session, &data);
                        self.endpoint.recycle(session, data);
                    }
                    None => self.endpoint.recycle(session, data),
                }
            }
            FlowEvent::SendFlowComplete { flow } => self.gate_flow_complete(now, session, flow),
            FlowEvent::RecvFlowComplete { .. }
            | FlowEvent::RecvFlowAborted { .. }
            | FlowEvent::Gap { .. } => {}
            FlowEvent::SendFlowRejected { flow, code } => {
                if self.is_membership_flow(session, flow) {
                    // An agent older than admission: without a CA it is
                    // admitted all the same.
                    tracing::debug!(?session, code, "peer has no membership flow");
                } else {
                    tracing::warn!(?session, ?flow, code, "peer rejected a flow");
                }
            }
        }
    }

    /// Carry out what the overlay asked for.
    pub(crate) fn process_overlay(&mut self, now: Instant) {
        while let Some(a) = self.overlay.poll_action() {
            match a {
                overlay::Action::OpenSession { node, addrs } => self.open_session(now, node, addrs),
                overlay::Action::CloseSession { node } => {
                    if let Some(sid) = self.peers.close(node) {
                        self.endpoint.close(now, sid, false);
                    }
                }
                overlay::Action::ProbePath { node, addr } => {
                    let Some(sid) = self.peers.session_of(node) else {
                        continue;
                    };
                    let remote = self.endpoint.session_info(sid).map(|i| i.path);
                    if remote.is_some_and(|r| r != addr) && self.endpoint.probe_path(now, sid, addr)
                    {
                        tracing::info!(%node, %addr, "probing a peer's new address");
                    }
                }
                overlay::Action::SendControl { to, bytes } => self.send_control(now, to, &bytes),
            }
        }
        while let Some(ev) = self.overlay.poll_event() {
            match ev {
                overlay::Event::BadControl { from, error } => {
                    tracing::debug!(%from, %error, "bad control message")
                }
                overlay::Event::Route { from, msg } => {
                    self.with_routes(now, |r, cx| r.on_message(now, cx, from, msg));
                }
                ev @ (overlay::Event::DirResult { .. } | overlay::Event::DirScan { .. }) => {
                    self.directory_event(now, ev)
                }
                other => tracing::info!(event = ?other, "overlay"),
            }
        }
    }

    fn open_session(&mut self, now: Instant, node: Option<NodeId>, addrs: Vec<SocketAddr>) {
        // It refused us, or we refused it, a moment ago (an introducer
        // opened by address: every address of it did).
        let held_off = match node {
            Some(id) => self.adm.held_off(now, Held::Node(id)),
            None => {
                !addrs.is_empty() && addrs.iter().all(|a| self.adm.held_off(now, Held::Addr(*a)))
            }
        };
        if held_off {
            tracing::debug!(?node, ?addrs, "no session: refused recently");
            self.overlay.open_failed(now, node, &addrs);
            return;
        }
        let target = node.map(Target::Node).unwrap_or(Target::Any);
        let cands: Vec<Path> = match node {
            Some(id) => self.candidates_for(id, &addrs),
            None => addrs
                .iter()
                .filter(|a| self.families.reach(**a))
                .map(|&a| Path::Direct(a))
                .collect(),
        };
        match self.endpoint.connect(now, target, &cands) {
            Ok(sid) => {
                if let Some(p) = self.peers.get(sid) {
                    // Already open: remind the overlay (once admitted).
                    let peer = p.node;
                    if !self.adm.is_admitted(sid) {
                        return;
                    }
                    if let Some(path) = self.endpoint.session_info(sid).map(|i| i.path) {
                        self.overlay
                            .peer_up(now, peer, path.direct(), node.is_none());
                    }
                } else {
                    self.peers.asked(sid, Opening { node, addrs }, true);
                }
            }
            Err(e) => {
                tracing::debug!(?node, error = %e, "cannot open session");
                self.overlay.open_failed(now, node, &addrs);
            }
        }
    }

    fn send_control(&mut self, now: Instant, to: NodeId, bytes: &[u8]) {
        let Some((sid, p)) = self.peers.current_mut(to) else {
            tracing::debug!(%to, "control message for a node without session");
            return;
        };
        let control = p.control;
        if let Err(e) = self
            .endpoint
            .send(now, sid, control, bytes, Reliability::Reliable)
        {
            tracing::warn!(%to, error = %e, "control message not sent");
        }
    }

    /// Send `msg` as it is to the member `to` on the control flow of the
    /// current session with it (dropped without one). For tests that make
    /// a member misbehave: the node itself only sends what it decided on.
    #[doc(hidden)]
    pub fn send_control_message(&mut self, now: Instant, to: NodeId, msg: &overlay::wire::Message) {
        if let Ok(bytes) = msg.encode() {
            self.send_control(now, to, &bytes);
        }
    }

    /// Run `f` on the relayed routes with the endpoint and the peer table,
    /// then send what it produced.
    pub(crate) fn with_routes(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut RouteControl, &mut routes::Ctx<'_>),
    ) {
        let mut cx = routes::Ctx {
            ep: &mut self.endpoint,
            overlay: &self.overlay,
            peers: &self.peers,
        };
        f(&mut self.routes, &mut cx);
        for (to, msg) in self.routes.take_outbox() {
            match msg.encode() {
                Ok(bytes) => self.send_control(now, to, &bytes),
                Err(e) => tracing::warn!(%to, error = %e, "route message not encoded"),
            }
        }
        for c in self.routes.take_connects() {
            self.peers.asked(
                c.session,
                Opening {
                    node: Some(c.node),
                    addrs: Vec::new(),
                },
                false,
            );
        }
    }

    /// Register a peer's local addresses with the endpoint so Redirects
    /// (introducers) list them next to the observed address.
    pub(crate) fn sync_peer_addresses(&mut self, peer: NodeId) {
        let Some(m) = self.overlay.member(peer) else {
            return;
        };
        let local: Vec<SocketAddr> = m
            .addrs
            .iter()
            .filter(|a| a.origin == overlay::wire::AddrOrigin::Local)
            .map(|a| a.addr)
            .collect();
        if self.peer_addrs.get(&peer) != Some(&local) {
            self.endpoint.set_peer_addresses(peer, local.clone());
            self.peer_addrs.insert(peer, local);
        }
    }
}
