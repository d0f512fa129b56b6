//! Relayed flow routes at this endpoint (`docs/relay.md`): the commands that
//! set up, finish and close route entries, moving a session onto a path
//! ([`Endpoint::migrate`]), and carrying datagrams: delivering the
//! end-to-end packet of a route datagram, forwarding it to the next hop,
//! wrapping a session's packets for a route's first hop, and route
//! keepalives. The route table itself (hop keys, replay windows, limits)
//! is `crate::route_table`; this file is the glue between it and the sessions.

use std::time::Instant;

use super::{DropReason, Endpoint, Event, Transmit, TransmitKind};
use crate::path::{is_route_addr, route_addr, Path, RouteId};
use crate::route_table::{
    HopKey, HopMac, RelayLimits, RouteError, RouteInfo, RouteInput, RouteOffer, ROUTE_OVERHEAD,
};
use crate::session::{Session, SessionId};

impl Endpoint {
    fn hop_session(&self, session: SessionId) -> Result<(), RouteError> {
        match self.sessions.get(&session.0) {
            Some(s) if s.is_open() && !is_route_addr(&s.dest()) => Ok(()),
            _ => Err(RouteError::NoSession),
        }
    }
    /// A fresh key for a hop whose tags use `mac`: AEGIS-128L only where
    /// this machine runs it in hardware (the caller asks for it when the
    /// hop's downstream node takes it).
    fn hop_key(&mut self, mac: HopMac) -> HopKey {
        let mac = match mac {
            HopMac::Aegis128L if crate::crypto::aegis_in_hardware() => HopMac::Aegis128L,
            _ => HopMac::AesGcm,
        };
        HopKey::new(self.rng.bytes32(), mac)
    }
    /// Start a route at its initiating end, first hop over the OPEN direct
    /// session `hop`, its tags by `mac` if this node runs it (the offer
    /// says which). Send the offer to that hop's peer in a route setup
    /// request; complete with [`Endpoint::route_finish`] when it answers.
    pub fn route_begin(
        &mut self,
        now: Instant,
        hop: SessionId,
        mac: HopMac,
    ) -> Result<RouteOffer, RouteError> {
        self.hop_session(hop)?;
        let id = self.alloc_session_id();
        let key = self.hop_key(mac);
        self.routes.begin_end(now, id, hop.0, key.clone());
        Ok(RouteOffer {
            id: RouteId(id),
            key,
        })
    }
    /// Relay a route: the upstream node (session `up`) offered `offer`, we
    /// go on to the downstream node over session `down`, that hop's tags by
    /// `down_mac` if this node runs it. Returns the id to answer upstream
    /// with (after [`Endpoint::route_finish`]) and the offer to send
    /// downstream. Refused unless relaying is enabled and within limits.
    pub fn route_transit(
        &mut self,
        now: Instant,
        up: SessionId,
        offer: &RouteOffer,
        down: SessionId,
        down_mac: HopMac,
    ) -> Result<(RouteId, RouteOffer), RouteError> {
        if !self.cfg.relay.enabled {
            return Err(RouteError::RelayDisabled);
        }
        self.hop_session(up)?;
        self.hop_session(down)?;
        if up == down {
            return Err(RouteError::NoSession);
        }
        let up_in = self.alloc_session_id();
        let mut down_in = self.alloc_session_id();
        while down_in == up_in {
            down_in = self.alloc_session_id();
        }
        let key = self.hop_key(down_mac);
        self.routes
            .begin_transit(now, up_in, down_in, up.0, offer, down.0, &key)?;
        Ok((
            RouteId(up_in),
            RouteOffer {
                id: RouteId(down_in),
                key,
            },
        ))
    }
    /// The route's far end: the upstream node (session `up`) offered
    /// `offer`. Returns our id to answer with; the session to the
    /// initiator runs on [`Path::Route`] of it.
    pub fn route_accept(
        &mut self,
        now: Instant,
        up: SessionId,
        offer: &RouteOffer,
    ) -> Result<RouteId, RouteError> {
        self.hop_session(up)?;
        let id = self.alloc_session_id();
        self.routes.accept_end(now, id, up.0, offer);
        Ok(RouteId(id))
    }
    /// The downstream node answered route `id` with `next_id`: the route
    /// entry is complete (an end: packets on [`Path::Route`]`(id)` now flow).
    pub fn route_finish(&mut self, id: RouteId, next_id: RouteId) -> Result<(), RouteError> {
        self.routes.finish(id.0, next_id.0)
    }
    /// Tear down route entry `id` (with its other direction at a relay).
    pub fn route_close(&mut self, id: RouteId) {
        self.routes.remove(id.0);
        self.push_route_closed();
    }
    /// Every route entry, for status.
    pub fn routes(&self, now: Instant) -> Vec<RouteInfo> {
        self.routes
            .infos(now, |sid| self.sessions.get(&sid).and_then(Session::peer))
    }
    /// Whether route entry `id` exists.
    pub fn has_route(&self, id: RouteId) -> bool {
        self.routes.contains(id.0)
    }
    /// When route entry `id` last received a datagram (the far end's
    /// traffic or keepalive at a route's end).
    pub fn route_last_rx(&self, id: RouteId) -> Option<Instant> {
        self.routes.last_rx(id.0)
    }
    /// Bytes this endpoint forwarded as a relay so far (routes that
    /// closed included).
    pub fn relayed_bytes(&self) -> u64 {
        self.routes.forwarded_bytes()
    }
    /// Relay limits in force.
    pub fn relay_limits(&self) -> &RelayLimits {
        self.routes.limits()
    }
    /// Move an OPEN session onto `path` at once (a route this node set up
    /// or accepted, or a direct address): see `Session::migrate`. Anything
    /// unacknowledged is resent on the new path. False if the session is
    /// not OPEN or `path` is a route that does not exist here.
    pub fn migrate(&mut self, now: Instant, session: SessionId, path: impl Into<Path>) -> bool {
        let path: Path = path.into();
        if path.route().is_some_and(|id| !self.routes.contains(id.0)) {
            return false;
        }
        let Some(s) = self.sessions.get_mut(&session.0) else {
            return false;
        };
        let before = s.dest();
        if !s.migrate(now, path.to_addr()) {
            return false;
        }
        if before != path.to_addr() {
            self.note_peer_address(session.0, path.to_addr());
            self.events.push_back(Event::AddressChanged {
                session,
                from: Path::from_addr(before),
                to: path,
            });
        }
        true
    }
    pub(super) fn queue_route_keepalive(&mut self, now: Instant, id: u32) {
        let mut buf = self.relay_pool.pop().unwrap_or_default();
        buf.clear();
        buf.resize(ROUTE_OVERHEAD, 0);
        let Some((sid, n)) = self.routes.wrap(now, id, &mut buf, 0) else {
            return;
        };
        let Some(dest) = self.sessions.get(&sid).map(|s| s.dest()) else {
            return;
        };
        buf.truncate(n);
        self.relay_out.push_back((dest, buf));
    }
    /// A session packet of `size` bytes at `buf[ROUTE_HEADER_LEN..]` for a
    /// route end: wrap it in place for the route's first hop
    /// (`docs/relay.md`). `None` (and
    /// counted as a drop) if the route or its hop session is gone.
    pub(super) fn wrap_for_route(
        &mut self,
        now: Instant,
        id: RouteId,
        buf: &mut [u8],
        size: usize,
    ) -> Option<Transmit> {
        let hop = self.routes.wrap(now, id.0, buf, size);
        let dest = hop.and_then(|(sid, n)| Some((self.sessions.get(&sid)?.dest(), n)));
        match dest {
            Some((dest, n)) if !is_route_addr(&dest) => Some(Transmit {
                destination: dest,
                size: n,
                kind: TransmitKind::Session,
            }),
            _ => {
                self.stats.datagrams_sent -= 1;
                self.drop_packet(DropReason::Route);
                None
            }
        }
    }
    /// A datagram for one of our route ids ([`crate::route_table`]): deliver
    /// the end-to-end packet, or forward it to the next hop.
    pub(super) fn handle_route_datagram(&mut self, now: Instant, id: u32, data: &mut [u8]) {
        let sessions = &self.sessions;
        let hop_open = |sid: u32| sessions.get(&sid).is_some_and(Session::is_open);
        match self.routes.input(now, id, data, hop_open) {
            RouteInput::Deliver { id, range } => {
                self.handle_rtmfp(now, route_addr(RouteId(id)), &mut data[range], false)
            }
            RouteInput::Keepalive => {}
            RouteInput::Forward { session } => {
                let Some(dest) = self.sessions.get(&session).map(|s| s.dest()) else {
                    return self.drop_packet(DropReason::Route);
                };
                if is_route_addr(&dest) {
                    // Hops run over direct sessions only.
                    return self.drop_packet(DropReason::Route);
                }
                if self.in_place {
                    // The caller sends `data` itself, rewritten in place.
                    self.stats.datagrams_sent += 1;
                    self.forward = Some(dest);
                    return;
                }
                let mut buf = self.relay_pool.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(data);
                self.relay_out.push_back((dest, buf));
            }
            RouteInput::Dropped(_) | RouteInput::NotRoute => self.drop_packet(DropReason::Route),
        }
    }
    pub(super) fn push_route_closed(&mut self) {
        for id in self.routes.take_closed() {
            self.events
                .push_back(Event::RouteClosed { id: RouteId(id) });
        }
    }
}
