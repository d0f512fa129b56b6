//! Relayed flow routes, the node's half (docs/relay.md).
//!
//! The tunnel forwards route datagrams ([`ringlan_tunnel::relay`]); this
//! module decides when a peer needs routes, picks relays, runs the setup
//! protocol and moves sessions between paths:
//!
//! - **When.** A session to a member that has been opening for
//!   [`RELAY_AFTER`] without an answer (the NAT punch is failing) gets
//!   routes, and the route addresses join the opening session's candidates.
//!   A relayed session keeps [`ROUTES_PER_PEER`] routes (one standby) and
//!   keeps trying the peer's direct addresses every [`DIRECT_RETRY`]; once it
//!   is direct again for [`ROUTE_RELEASE`], its routes are closed.
//! - **Which relays.** Links over direct sessions whose `Hello` says they
//!   relay: first those that reach the target (introducers, with whom every
//!   member keeps a session, and links whose neighbour lists name it),
//!   lowest RTT first, each route over another first hop; then the others
//!   nearest to the target on the ring, which extend the route with relays
//!   of their own (up to [`MAX_ROUTE_RELAYS`]). A refusing relay is skipped
//!   for [`REFUSED_BACKOFF`].
//! - **Setup.** `RouteSetup` walks the route over the hops' own sessions
//!   (the control flow): each node installs its entry and offers its route
//!   id and a fresh hop key to the next; `RouteReply` comes back hop by hop.
//!   Relays only ever act for sessions with members (the control flow exists
//!   only on authenticated sessions) and within their `relay:` limits.
//! - **Failover.** A stalled path ([`Event::PathStalled`]) or a closed
//!   route moves the session onto a standby route at once
//!   ([`Endpoint::migrate`]); the far end follows by address mobility.
//!
//! [`Event::PathStalled`]: ringlan_tunnel::endpoint::Event::PathStalled

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlan_overlay::wire::{
    Message, RouteOutcome, RouteRefusal, RouteReply, RouteSetup, MAX_ROUTE_RELAYS,
};
use ringlan_overlay::Overlay;
use ringlan_tunnel::endpoint::{Endpoint, Target};
use ringlan_tunnel::relay::{self, route_addr, route_id_of, HopKey, RouteError, RouteOffer};
use ringlan_tunnel::session::{SessionId, SessionState};
use ringlan_tunnel::{NodeId, Rng};

use crate::peers::Peers;

/// An opening session without answer for this long gets relayed routes
/// (a punch between cone-like NATs answers within a few round trips).
pub const RELAY_AFTER: Duration = Duration::from_millis(700);
/// How often [`RouteControl::tick`] should run.
pub const TICK: Duration = Duration::from_millis(250);
/// Routes kept per relayed peer: one in use, one standby.
pub const ROUTES_PER_PEER: usize = 2;
/// A relayed session probes one of the peer's direct addresses this often.
pub const DIRECT_RETRY: Duration = Duration::from_secs(3);
/// Routes of a session that has been direct this long are closed.
pub const ROUTE_RELEASE: Duration = Duration::from_secs(30);
/// A setup not answered within this is abandoned.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// A relay that refused a route to a target is not asked again for this long.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(20);

/// What the caller passes in: the endpoint and the node's session maps.
pub struct Ctx<'a> {
    pub ep: &'a mut Endpoint,
    pub overlay: &'a Overlay,
    /// The node's peer table (open sessions, sessions being opened).
    pub peers: &'a Peers,
}

impl Ctx<'_> {
    /// Our OPEN session with `node` if its path is direct (hops must be).
    fn direct(&self, node: NodeId) -> Option<SessionId> {
        let sid = self.peers.session_of(node)?;
        let info = self.ep.session_info(sid)?;
        (info.state == SessionState::Open && !relay::is_route_addr(&info.remote)).then_some(sid)
    }

    fn srtt(&self, sid: SessionId) -> Duration {
        self.ep
            .session_info(sid)
            .and_then(|i| i.srtt)
            .unwrap_or(Duration::from_secs(1))
    }

    /// Relaying links over direct sessions that pass `keep`, in the order
    /// to try them for a route to `target`: those that reach it by lowest
    /// RTT, then the others nearest to it on the ring (they extend the
    /// route with relays of their own).
    fn relay_hops(&self, target: NodeId, keep: impl Fn(&NodeId) -> bool) -> Vec<NodeId> {
        let cands: Vec<NodeId> = self
            .overlay
            .relays_for(target)
            .into_iter()
            .filter(|h| keep(h) && self.direct(*h).is_some())
            .collect();
        let mut near: Vec<(Duration, NodeId)> = cands
            .iter()
            .filter(|h| self.overlay.reaches(**h, target))
            .filter_map(|h| self.direct(*h).map(|sid| (self.srtt(sid), *h)))
            .collect();
        near.sort();
        let mut hops: Vec<NodeId> = near.into_iter().map(|(_, h)| h).collect();
        hops.extend(cands.iter().filter(|h| !self.overlay.reaches(**h, target)));
        hops
    }

    fn opening_for(&self, node: NodeId) -> Option<SessionId> {
        self.peers.opening_for(node)
    }

    /// The path of the session with `node`, if one is open.
    fn path_of(&self, node: NodeId) -> Option<(SessionId, SocketAddr)> {
        let sid = self.peers.session_of(node)?;
        let info = self.ep.session_info(sid)?;
        (info.state == SessionState::Open).then_some((sid, info.remote))
    }
}

/// One route end at this node.
#[derive(Debug, Clone)]
struct End {
    nonce: u64,
    /// The node that set the route up (us, or the peer).
    origin: NodeId,
    /// Our route id: the session runs at `route_addr(id)`.
    id: u32,
    /// The adjacent node on the route.
    hop: NodeId,
    /// The relays, in order from the origin.
    relays: Vec<NodeId>,
    ready: bool,
    since: Instant,
}

/// A route this node relays.
#[derive(Debug, Clone)]
struct Transit {
    target: NodeId,
    up: NodeId,
    down: NodeId,
    /// Our ids: traffic from `up` arrives under `up_in`, from `down` under
    /// `down_in`.
    up_in: u32,
    down_in: u32,
    ready: bool,
    since: Instant,
}

/// A session this module wants the node to open (over a route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub node: NodeId,
    pub session: SessionId,
}

/// A relayed session's route, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    pub relays: Vec<NodeId>,
    /// Other ready routes to the same peer.
    pub standby: usize,
}

/// A route this node carries, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedView {
    pub origin: NodeId,
    pub target: NodeId,
    pub up: NodeId,
    pub down: NodeId,
    pub ready: bool,
    pub up_in: u32,
    pub down_in: u32,
    pub age: Duration,
}

/// Counters (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteStats {
    pub setups_sent: u64,
    pub routes_ready: u64,
    pub refused: u64,
    pub migrations: u64,
    pub carried: u64,
}

/// Relayed routes of one node.
pub struct RouteControl {
    me: NodeId,
    rng: Rng,
    ends: BTreeMap<NodeId, Vec<End>>,
    transits: HashMap<(NodeId, u64), Transit>,
    /// Peers whose session has been opening since then.
    want: HashMap<NodeId, Instant>,
    /// Relayed peers: when to probe a direct address next, and which.
    next_probe: HashMap<NodeId, (Instant, usize)>,
    /// Peers whose session is direct, since when (for releasing routes).
    direct_since: HashMap<NodeId, Instant>,
    refused: HashMap<(NodeId, NodeId), Instant>,
    outbox: Vec<(NodeId, Message)>,
    connects: Vec<Connect>,
    pub stats: RouteStats,
}

impl RouteControl {
    pub fn new(me: NodeId, rng: Rng) -> RouteControl {
        RouteControl {
            me,
            rng,
            ends: BTreeMap::new(),
            transits: HashMap::new(),
            want: HashMap::new(),
            next_probe: HashMap::new(),
            direct_since: HashMap::new(),
            refused: HashMap::new(),
            outbox: Vec::new(),
            connects: Vec::new(),
            stats: RouteStats::default(),
        }
    }

    /// Control messages to send: (to, message).
    pub fn take_outbox(&mut self) -> Vec<(NodeId, Message)> {
        std::mem::take(&mut self.outbox)
    }

    /// Sessions started over a ready route (none was opening): the caller
    /// records them as opening for their node.
    pub fn take_connects(&mut self) -> Vec<Connect> {
        std::mem::take(&mut self.connects)
    }

    /// Ready route addresses to `peer` (candidates for a session to it).
    pub fn addrs_for(&self, peer: NodeId) -> Vec<SocketAddr> {
        self.ends
            .get(&peer)
            .map(|v| {
                v.iter()
                    .filter(|e| e.ready)
                    .map(|e| route_addr(e.id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The route under a relayed session's path, for status.
    pub fn view(&self, peer: NodeId, path: SocketAddr) -> Option<RouteView> {
        let id = route_id_of(&path)?;
        let ends = self.ends.get(&peer)?;
        let e = ends.iter().find(|e| e.id == id)?;
        let mut relays = e.relays.clone();
        if e.origin != self.me {
            relays.reverse();
        }
        Some(RouteView {
            relays,
            standby: ends.iter().filter(|x| x.ready && x.id != id).count(),
        })
    }

    /// Routes carried for others, for status.
    pub fn carried(&self, now: Instant) -> Vec<CarriedView> {
        let mut v: Vec<CarriedView> = self
            .transits
            .iter()
            .map(|((origin, _), t)| CarriedView {
                origin: *origin,
                target: t.target,
                up: t.up,
                down: t.down,
                ready: t.ready,
                up_in: t.up_in,
                down_in: t.down_in,
                age: now.saturating_duration_since(t.since),
            })
            .collect();
        v.sort_by_key(|c| (c.origin, c.target, c.up_in));
        v
    }

    // ----- periodic work --------------------------------------------------

    /// Start, keep, retry and release routes. Call every [`TICK`].
    pub fn tick(&mut self, now: Instant, cx: &mut Ctx<'_>) {
        // Who is opening (and since when), who is relayed, who is direct.
        let opening: Vec<NodeId> = cx.peers.opening().filter_map(|(_, o)| o.node).collect();
        self.want
            .retain(|n, _| opening.contains(n) || cx.peers.is_connected(*n));
        for n in &opening {
            if !cx.peers.is_connected(*n) {
                self.want.entry(*n).or_insert(now);
            }
        }
        self.refused
            .retain(|_, t| now.saturating_duration_since(*t) < REFUSED_BACKOFF);

        // Abandon setups that were never answered.
        let stale: Vec<(NodeId, u32)> = self
            .ends
            .iter()
            .flat_map(|(p, v)| {
                v.iter()
                    .filter(|e| !e.ready && now.saturating_duration_since(e.since) >= SETUP_TIMEOUT)
                    .map(|e| (*p, e.id))
            })
            .collect();
        for (peer, id) in stale {
            tracing::debug!(%peer, id, "route setup unanswered");
            cx.ep.route_close(id);
            self.forget_end(peer, id);
        }
        self.transits.retain(|_, t| {
            let keep = t.ready || now.saturating_duration_since(t.since) < SETUP_TIMEOUT;
            if !keep {
                cx.ep.route_close(t.up_in);
            }
            keep
        });
        // Transits whose entries the endpoint expired.
        self.transits
            .retain(|_, t| !t.ready || cx.ep.has_route(t.up_in) || cx.ep.has_route(t.down_in));

        // Ready routes are candidates of every session still opening to
        // their peer (the first add can miss a session that was replaced).
        let opening: Vec<(SessionId, NodeId)> = cx
            .peers
            .opening()
            .filter_map(|(sid, o)| Some((sid, o.node?)))
            .collect();
        for (sid, node) in opening {
            let addrs = self.addrs_for(node);
            if !addrs.is_empty() {
                cx.ep.add_candidates(now, sid, &addrs);
            }
        }

        let peers: Vec<NodeId> = self
            .want
            .keys()
            .chain(self.ends.keys())
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for peer in peers {
            match cx.path_of(peer) {
                Some((sid, path)) if relay::is_route_addr(&path) => {
                    self.direct_since.remove(&peer);
                    if !cx.ep.has_route(route_id_of(&path).unwrap_or(0)) {
                        self.move_to_standby(now, cx, sid, path);
                    }
                    self.ensure(now, cx, peer);
                    self.probe_direct(now, cx, peer, sid);
                }
                Some(_) => {
                    self.next_probe.remove(&peer);
                    let since = *self.direct_since.entry(peer).or_insert(now);
                    if now.saturating_duration_since(since) >= ROUTE_RELEASE {
                        self.release(cx, peer);
                    }
                }
                None => {
                    self.direct_since.remove(&peer);
                    let wanted = self
                        .want
                        .get(&peer)
                        .is_some_and(|t| now.saturating_duration_since(*t) >= RELAY_AFTER);
                    if wanted {
                        self.ensure(now, cx, peer);
                    } else if !self.want.contains_key(&peer) {
                        // Nobody wants this peer any more.
                        self.release(cx, peer);
                    }
                }
            }
        }
    }

    /// Close our ends of every route to `peer` (relays and the far end
    /// expire theirs when the keepalives stop).
    fn release(&mut self, cx: &mut Ctx<'_>, peer: NodeId) {
        if let Some(ends) = self.ends.remove(&peer) {
            for e in ends {
                tracing::info!(%peer, id = e.id, "route released");
                cx.ep.route_close(e.id);
            }
        }
        self.next_probe.remove(&peer);
    }

    /// Keep [`ROUTES_PER_PEER`] routes (ready or being set up) to `target`.
    fn ensure(&mut self, now: Instant, cx: &mut Ctx<'_>, target: NodeId) {
        let have: Vec<NodeId> = self
            .ends
            .get(&target)
            .map(|v| v.iter().map(|e| e.hop).collect())
            .unwrap_or_default();
        let mut need = ROUTES_PER_PEER.saturating_sub(have.len());
        if need == 0 {
            return;
        }
        let hops = cx.relay_hops(target, |h| {
            *h != self.me && !have.contains(h) && !self.refused.contains_key(&(target, *h))
        });
        let left = MAX_ROUTE_RELAYS as u8 - 1;
        for hop in hops {
            if need == 0 {
                break;
            }
            let Some(sid) = cx.direct(hop) else { continue };
            let offer = match cx.ep.route_begin(now, sid) {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(%hop, error = %e, "cannot start a route");
                    continue;
                }
            };
            let nonce = self.rng.u64();
            self.ends.entry(target).or_default().push(End {
                nonce,
                origin: self.me,
                id: offer.id,
                hop,
                relays: Vec::new(),
                ready: false,
                since: now,
            });
            self.outbox.push((
                hop,
                Message::RouteSetup(RouteSetup {
                    nonce,
                    origin: self.me,
                    target,
                    relays_left: left,
                    id: offer.id,
                    key: offer.key.0,
                    path: Vec::new(),
                }),
            ));
            self.stats.setups_sent += 1;
            tracing::info!(%target, via = %hop, "setting up a relayed route");
            need -= 1;
        }
    }

    /// Probe one of a relayed peer's direct addresses (its NAT may have
    /// become punchable); a verified answer moves the session (RFC 7016
    /// 3.5.4.2 address mobility).
    fn probe_direct(&mut self, now: Instant, cx: &mut Ctx<'_>, peer: NodeId, sid: SessionId) {
        let Some(m) = cx.overlay.member(peer) else {
            return;
        };
        let addrs: Vec<SocketAddr> = m.addrs.iter().map(|a| a.addr).collect();
        if addrs.is_empty() {
            return;
        }
        let (due, idx) = self.next_probe.entry(peer).or_insert((now, 0));
        if now < *due {
            return;
        }
        let addr = addrs[*idx % addrs.len()];
        *idx = idx.wrapping_add(1);
        *due = now + DIRECT_RETRY;
        cx.ep.probe_path(now, sid, addr);
    }

    // ----- events -------------------------------------------------------

    /// The session with `peer` stalled on `path`: move it to another ready
    /// route (or make sure routes are being set up).
    pub fn on_stalled(
        &mut self,
        now: Instant,
        cx: &mut Ctx<'_>,
        session: SessionId,
        path: SocketAddr,
    ) {
        // A direct path that stalls is usually loss, not death: the session
        // stays on it (if it died, the session closes and the next open
        // gets routes after RELAY_AFTER). A stalled route hands over to the
        // standby at once, and a new standby is set up.
        if !relay::is_route_addr(&path) {
            return;
        }
        if !self.move_to_standby(now, cx, session, path) {
            if let Some(peer) = cx.ep.session_info(session).and_then(|i| i.peer) {
                self.ensure(now, cx, peer);
            }
        }
    }

    /// Move `session` off `path` onto a ready route avoiding its first hop.
    fn move_to_standby(
        &mut self,
        now: Instant,
        cx: &mut Ctx<'_>,
        session: SessionId,
        path: SocketAddr,
    ) -> bool {
        let Some(peer) = cx.ep.session_info(session).and_then(|i| i.peer) else {
            return false;
        };
        let Some(ends) = self.ends.get(&peer) else {
            return false;
        };
        let bad_hop =
            route_id_of(&path).and_then(|id| ends.iter().find(|e| e.id == id).map(|e| e.hop));
        let mut best: Option<&End> = None;
        for e in ends
            .iter()
            .filter(|e| e.ready && route_addr(e.id) != path && cx.ep.has_route(e.id))
        {
            let better = match best {
                None => true,
                Some(b) => Some(b.hop) == bad_hop && Some(e.hop) != bad_hop,
            };
            if better {
                best = Some(e);
            }
        }
        let Some(e) = best else {
            return false;
        };
        let to = route_addr(e.id);
        let hop = e.hop;
        if cx.ep.migrate(now, session, to) {
            self.stats.migrations += 1;
            tracing::info!(%peer, from = %path, via = %hop, "session moved to a standby route");
            true
        } else {
            false
        }
    }

    /// A route entry is gone (endpoint event).
    pub fn on_route_closed(&mut self, now: Instant, cx: &mut Ctx<'_>, id: u32) {
        self.transits
            .retain(|_, t| t.up_in != id && t.down_in != id);
        let Some(peer) = self
            .ends
            .iter()
            .find(|(_, v)| v.iter().any(|e| e.id == id))
            .map(|(p, _)| *p)
        else {
            return;
        };
        self.forget_end(peer, id);
        tracing::info!(%peer, id, "route closed");
        if let Some((sid, path)) = cx.path_of(peer) {
            if path == route_addr(id) {
                self.move_to_standby(now, cx, sid, path);
            }
        }
    }

    fn forget_end(&mut self, peer: NodeId, id: u32) {
        if let Some(v) = self.ends.get_mut(&peer) {
            v.retain(|e| e.id != id);
            if v.is_empty() {
                self.ends.remove(&peer);
            }
        }
    }

    /// A `RouteSetup` or `RouteReply` from the link `from`.
    pub fn on_message(&mut self, now: Instant, cx: &mut Ctx<'_>, from: NodeId, msg: Message) {
        match msg {
            Message::RouteSetup(s) => self.on_setup(now, cx, from, s),
            Message::RouteReply(r) => self.on_reply(now, cx, from, r),
            _ => {}
        }
    }

    fn refuse(&mut self, to: NodeId, s: &RouteSetup, why: RouteRefusal) {
        self.stats.refused += 1;
        tracing::info!(origin = %s.origin, target = %s.target, ?why, "route refused");
        self.outbox.push((
            to,
            Message::RouteReply(RouteReply {
                nonce: s.nonce,
                origin: s.origin,
                outcome: RouteOutcome::Refused(why),
            }),
        ));
    }

    fn on_setup(&mut self, now: Instant, cx: &mut Ctx<'_>, from: NodeId, s: RouteSetup) {
        let Some(up) = cx.direct(from) else {
            return self.refuse(from, &s, RouteRefusal::Gone);
        };
        let offer = RouteOffer {
            id: s.id,
            key: HopKey(s.key),
        };
        if s.target == self.me {
            // The far end.
            let Ok(id) = cx.ep.route_accept(now, up, &offer) else {
                return self.refuse(from, &s, RouteRefusal::Gone);
            };
            tracing::info!(origin = %s.origin, via = %from, "relayed route accepted");
            let ends = self.ends.entry(s.origin).or_default();
            ends.retain(|e| e.nonce != s.nonce || e.origin != s.origin);
            ends.push(End {
                nonce: s.nonce,
                origin: s.origin,
                id,
                hop: from,
                relays: s.path.clone(),
                ready: true,
                since: now,
            });
            self.stats.routes_ready += 1;
            self.outbox.push((
                from,
                Message::RouteReply(RouteReply {
                    nonce: s.nonce,
                    origin: s.origin,
                    outcome: RouteOutcome::Accepted { id, relays: s.path },
                }),
            ));
            return;
        }
        // A relay.
        if !cx.ep.relay_limits().enabled {
            return self.refuse(from, &s, RouteRefusal::RelayDisabled);
        }
        if s.origin == self.me || s.path.contains(&self.me) || s.path.len() >= MAX_ROUTE_RELAYS {
            return self.refuse(from, &s, RouteRefusal::NoPath);
        }
        let excluded =
            |n: &NodeId| *n == s.origin || *n == from || *n == self.me || s.path.contains(n);
        let next = if cx.direct(s.target).is_some() {
            Some((s.target, s.relays_left))
        } else if s.relays_left > 0 {
            cx.relay_hops(s.target, |h| !excluded(h))
                .first()
                .copied()
                .map(|h| (h, s.relays_left - 1))
        } else {
            None
        };
        let Some((next, left)) = next else {
            return self.refuse(from, &s, RouteRefusal::NoPath);
        };
        let Some(down) = cx.direct(next) else {
            return self.refuse(from, &s, RouteRefusal::NoPath);
        };
        let (up_in, down_offer) = match cx.ep.route_transit(now, up, &offer, down) {
            Ok(x) => x,
            Err(RouteError::RelayDisabled) => {
                return self.refuse(from, &s, RouteRefusal::RelayDisabled)
            }
            Err(RouteError::TooManyRoutes) => return self.refuse(from, &s, RouteRefusal::Limit),
            Err(_) => return self.refuse(from, &s, RouteRefusal::Gone),
        };
        let mut path = s.path.clone();
        path.push(self.me);
        self.transits.insert(
            (s.origin, s.nonce),
            Transit {
                target: s.target,
                up: from,
                down: next,
                up_in,
                down_in: down_offer.id,
                ready: false,
                since: now,
            },
        );
        tracing::info!(origin = %s.origin, target = %s.target, %next, "relaying a route");
        self.outbox.push((
            next,
            Message::RouteSetup(RouteSetup {
                nonce: s.nonce,
                origin: s.origin,
                target: s.target,
                relays_left: left,
                id: down_offer.id,
                key: down_offer.key.0,
                path,
            }),
        ));
    }

    fn on_reply(&mut self, now: Instant, cx: &mut Ctx<'_>, from: NodeId, r: RouteReply) {
        // A relay passing the answer back.
        if let Some(t) = self.transits.get_mut(&(r.origin, r.nonce)) {
            if t.down != from || t.ready {
                return;
            }
            let up = t.up;
            let up_in = t.up_in;
            let outcome = match r.outcome {
                RouteOutcome::Accepted { id, relays } => match cx.ep.route_finish(up_in, id) {
                    Ok(()) => {
                        t.ready = true;
                        self.stats.carried += 1;
                        RouteOutcome::Accepted { id: up_in, relays }
                    }
                    Err(_) => {
                        self.transits.remove(&(r.origin, r.nonce));
                        RouteOutcome::Refused(RouteRefusal::Gone)
                    }
                },
                RouteOutcome::Refused(why) => {
                    cx.ep.route_close(up_in);
                    self.transits.remove(&(r.origin, r.nonce));
                    RouteOutcome::Refused(why)
                }
            };
            self.outbox.push((
                up,
                Message::RouteReply(RouteReply {
                    nonce: r.nonce,
                    origin: r.origin,
                    outcome,
                }),
            ));
            return;
        }
        if r.origin != self.me {
            return;
        }
        // Our own setup answered.
        let Some((target, idx)) = self.ends.iter().find_map(|(p, v)| {
            v.iter()
                .position(|e| {
                    e.nonce == r.nonce && e.origin == self.me && e.hop == from && !e.ready
                })
                .map(|i| (*p, i))
        }) else {
            return;
        };
        match r.outcome {
            RouteOutcome::Accepted { id: next, relays } => {
                let Some(e) = self.ends.get_mut(&target).and_then(|v| v.get_mut(idx)) else {
                    return;
                };
                if cx.ep.route_finish(e.id, next).is_err() {
                    let id = e.id;
                    self.forget_end(target, id);
                    return;
                }
                e.ready = true;
                e.relays = relays;
                let id = e.id;
                self.stats.routes_ready += 1;
                tracing::info!(%target, relays = ?e.relays, "relayed route ready");
                self.on_ready(now, cx, target, id);
            }
            RouteOutcome::Refused(why) => {
                let id = self
                    .ends
                    .get(&target)
                    .and_then(|v| v.get(idx))
                    .map(|e| e.id);
                if let Some(id) = id {
                    cx.ep.route_close(id);
                    self.forget_end(target, id);
                }
                self.refused.insert((target, from), now);
                tracing::info!(%target, via = %from, ?why, "relayed route refused");
            }
        }
    }

    /// A route to `target` became usable.
    fn on_ready(&mut self, now: Instant, cx: &mut Ctx<'_>, target: NodeId, id: u32) {
        let addr = route_addr(id);
        if let Some((sid, path)) = cx.path_of(target) {
            let dead = route_id_of(&path).is_some_and(|p| !cx.ep.has_route(p));
            if dead {
                cx.ep.migrate(now, sid, addr);
            }
            return;
        }
        if let Some(sid) = cx.opening_for(target) {
            cx.ep.add_candidates(now, sid, &[addr]);
            return;
        }
        if let Ok(session) = cx.ep.connect(now, Target::Node(target), &[addr]) {
            self.connects.push(Connect {
                node: target,
                session,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_orders_relays_from_this_end() {
        let me = NodeId(1);
        let mut r = RouteControl::new(me, Rng::from_seed([1; 32]));
        let now = Instant::now();
        // A route set up by the peer (2) through relays 5 then 6: from
        // here the first relay is 6.
        r.ends.insert(
            NodeId(2),
            vec![
                End {
                    nonce: 1,
                    origin: NodeId(2),
                    id: 10,
                    hop: NodeId(6),
                    relays: vec![NodeId(5), NodeId(6)],
                    ready: true,
                    since: now,
                },
                End {
                    nonce: 2,
                    origin: me,
                    id: 11,
                    hop: NodeId(7),
                    relays: vec![NodeId(7)],
                    ready: true,
                    since: now,
                },
            ],
        );
        let v = r.view(NodeId(2), route_addr(10)).unwrap();
        assert_eq!(v.relays, vec![NodeId(6), NodeId(5)]);
        assert_eq!(v.standby, 1);
        let v = r.view(NodeId(2), route_addr(11)).unwrap();
        assert_eq!(v.relays, vec![NodeId(7)]);
        assert!(r.view(NodeId(2), "10.0.0.1:1".parse().unwrap()).is_none());
        assert_eq!(r.addrs_for(NodeId(2)).len(), 2);
        assert!(r.addrs_for(NodeId(3)).is_empty());
    }
}
