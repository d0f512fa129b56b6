//! Relayed flow routes, the node's half (docs/relay.md).
//!
//! The tunnel forwards route datagrams (`docs/relay.md`); this
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
//! - **Origins are proven end to end.** A route someone set up towards us
//!   names its origin, but only the hop it came over is authenticated: it
//!   stays unverified (never a candidate, a standby or a reason not to set
//!   up our own) until a session authenticated as that origin (the
//!   handshake proves the key, RFC 7016 3.5.1) runs over it
//!   ([`RouteControl::on_session_path`]). A session of anyone else over it
//!   closes the route and is refused.
//! - **Quotas.** A relay refuses (`RouteRefusal::Limit`) a route beyond
//!   `max_routes_per_origin` for its origin or for the neighbour it came
//!   from, or beyond `max_routes_per_target` for its target
//!   ([`ringlan_tunnel::RelayLimits`]); a target accepts at most
//!   [`ACCEPTED_PER_ORIGIN`] routes per claimed origin and last hop,
//!   [`ACCEPTED_PER_HOP`] per last hop and [`ACCEPTED_MAX`] in all.
//!   Refusals and closed routes are counted ([`RouteStats`]).
//!
//! [`Event::PathStalled`]: ringlan_tunnel::Event::PathStalled

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlan_overlay::wire::{
    Message, RouteOutcome, RouteRefusal, RouteReply, RouteSetup, MAX_ROUTE_RELAYS,
};
use ringlan_overlay::Overlay;
use ringlan_tunnel::{Endpoint, Target};
use ringlan_tunnel::{HopKey, HopMac, RouteError, RouteOffer};
use ringlan_tunnel::{NodeId, Path, Rng, RouteId};
use ringlan_tunnel::{SessionId, SessionState};

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
/// A relayed peer none of whose routes avoids the relays of another gets a
/// route around them at most this often ([`RouteControl::route_around`]).
pub const REROUTE_EVERY: Duration = Duration::from_secs(10);

/// A route of ours that received a datagram this recently may be the one
/// the far end sends on (it follows our packets, and we its, RFC 7016
/// 3.5.4.2), whatever our own session uses: [`RouteControl`] keeps it.
/// Far below the 15 s between keepalives of an unused route.
pub const FAR_END_SENDS_WITHIN: Duration = Duration::from_secs(2);
/// A route a session stalled on is not moved back onto for this long
/// unless its first hop answered since (the stall probes it): after its
/// relay died, the next stall (of the standby, or a spurious one) would
/// otherwise hand the session back to the dead relay until its hop
/// session is declared dead and the route closes.
pub const STALL_AVOID: Duration = Duration::from_secs(30);
/// Routes a target accepts per claimed origin and last hop: the claim is
/// unproven until a session runs, so the quota is keyed by the hop too
/// (a member claiming someone else's routes fills only its own bucket).
pub const ACCEPTED_PER_ORIGIN: usize = 2 * ROUTES_PER_PEER;
/// Routes a target accepts over one last hop (its relay, or the origin
/// itself), whatever origins they claim.
pub const ACCEPTED_PER_HOP: usize = 32;
/// Routes a target accepts in all.
pub const ACCEPTED_MAX: usize = 256;

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
        (info.state == SessionState::Open && !info.path.is_relayed()).then_some(sid)
    }

    /// The tags to ask for on a hop to `node`: AEGIS-128L when its `Hello`
    /// said it takes them (the endpoint falls back to AES-256-GCM where
    /// this machine does not run AEGIS-128L in hardware, and the setup
    /// request says what was chosen), else AES-256-GCM.
    fn hop_mac(&self, node: NodeId) -> HopMac {
        if self.overlay.says_aegis_hops(node) {
            HopMac::Aegis128L
        } else {
            HopMac::AesGcm
        }
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
    fn path_of(&self, node: NodeId) -> Option<(SessionId, Path)> {
        let sid = self.peers.session_of(node)?;
        let info = self.ep.session_info(sid)?;
        (info.state == SessionState::Open).then_some((sid, info.path))
    }
}

/// One route end at this node.
#[derive(Debug, Clone)]
struct End {
    nonce: u64,
    /// The node that set the route up (us, or the peer).
    origin: NodeId,
    /// Our route id: the session runs on `Path::Route(id)`.
    id: RouteId,
    /// The adjacent node on the route.
    hop: NodeId,
    /// The relays, in order from the origin.
    relays: Vec<NodeId>,
    ready: bool,
    /// Known to lead to the peer: we set it up (our session over it
    /// authenticates the peer), or a session authenticated as its claimed
    /// origin ran over it. Only verified routes are used by this end.
    verified: bool,
    since: Instant,
    /// A session over this route stalled: the route is suspect
    /// ([`End::suspect`]).
    stalled: Option<Stall>,
}

/// When a session stalled on a route, and how many packets the session
/// with the route's first hop had received then.
#[derive(Debug, Clone, Copy)]
struct Stall {
    at: Instant,
    hop_received: u64,
}

/// Packets received so far on the session with `hop`, if one is open.
fn hop_received(ep: &Endpoint, hop: NodeId) -> Option<u64> {
    let info = ep.session_info(ep.session_for(hop)?)?;
    (info.state == SessionState::Open).then_some(info.stats.packets_received)
}

impl End {
    fn usable(&self) -> bool {
        self.ready && self.verified
    }

    /// A session stalled on this route within [`STALL_AVOID`] and the
    /// first hop has not answered since: most likely its relay died and
    /// its hop session has not been declared dead yet.
    fn suspect(&self, now: Instant, ep: &Endpoint) -> bool {
        self.stalled.is_some_and(|st| {
            now.saturating_duration_since(st.at) < STALL_AVOID
                && hop_received(ep, self.hop).is_none_or(|n| n <= st.hop_received)
        })
    }
}

/// A route this node relays.
#[derive(Debug, Clone)]
struct Transit {
    target: NodeId,
    up: NodeId,
    down: NodeId,
    /// Our ids: traffic from `up` arrives under `up_in`, from `down` under
    /// `down_in`.
    up_in: RouteId,
    down_in: RouteId,
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
    pub up_in: RouteId,
    pub down_in: RouteId,
    pub age: Duration,
}

/// Counters (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteStats {
    pub setups_sent: u64,
    pub routes_ready: u64,
    /// Setups this node refused (every reason).
    pub refused: u64,
    pub migrations: u64,
    /// Routes set up around the relays of the others
    /// ([`RouteControl::route_around`]).
    pub reroutes: u64,
    pub carried: u64,
    /// Setups refused by a quota (relay or target).
    pub over_quota: u64,
    /// Setups whose origin or relay list does not match the link they
    /// came over, or that repeat a route already set up.
    pub bad_setup: u64,
    /// Routes towards us proven by a session of their claimed origin.
    pub verified: u64,
    /// Routes closed because a session of another node ran over them.
    pub wrong_peer: u64,
}

impl RouteStats {
    /// The counters of refused or closed routes, as node-wide drop
    /// reasons (status and metrics).
    pub fn drops(&self) -> [(&'static str, u64); 3] {
        [
            ("route_over_quota", self.over_quota),
            ("route_bad_setup", self.bad_setup),
            ("route_wrong_peer", self.wrong_peer),
        ]
    }
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
    /// Relayed peers: when a route around the relays in use was last set up
    /// ([`RouteControl::route_around`]).
    rerouted: HashMap<NodeId, Instant>,
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
            rerouted: HashMap::new(),
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

    /// Ready route paths to `peer` (candidates for a session to it).
    pub fn paths_for(&self, peer: NodeId) -> Vec<Path> {
        self.ends
            .get(&peer)
            .map(|v| {
                v.iter()
                    .filter(|e| e.usable())
                    .map(|e| Path::Route(e.id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The route under a relayed session's path, for status.
    pub fn view(&self, peer: NodeId, path: Path) -> Option<RouteView> {
        let id = path.route()?;
        let ends = self.ends.get(&peer)?;
        let e = ends.iter().find(|e| e.id == id)?;
        let mut relays = e.relays.clone();
        if e.origin != self.me {
            relays.reverse();
        }
        Some(RouteView {
            relays,
            standby: ends.iter().filter(|x| x.usable() && x.id != id).count(),
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
        self.rerouted
            .retain(|_, t| now.saturating_duration_since(*t) < REROUTE_EVERY);

        // Abandon setups that were never answered.
        let stale: Vec<(NodeId, RouteId)> = self
            .ends
            .iter()
            .flat_map(|(p, v)| {
                v.iter()
                    .filter(|e| !e.ready && now.saturating_duration_since(e.since) >= SETUP_TIMEOUT)
                    .map(|e| (*p, e.id))
            })
            .collect();
        for (peer, id) in stale {
            tracing::debug!(%peer, %id, "route setup unanswered");
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
            let paths = self.paths_for(node);
            if !paths.is_empty() {
                cx.ep.add_candidates(now, sid, &paths);
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
                Some((sid, Path::Route(id))) => {
                    self.direct_since.remove(&peer);
                    let path = Path::Route(id);
                    if !cx.ep.has_route(id) {
                        self.move_to_standby(now, cx, sid, path, false);
                    }
                    self.ensure(now, cx, peer);
                    self.route_around(now, cx, peer, id);
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
                tracing::info!(%peer, id = %e.id, "route released");
                cx.ep.route_close(e.id);
            }
        }
        self.next_probe.remove(&peer);
    }

    /// Keep [`ROUTES_PER_PEER`] routes (ready or being set up) to `target`.
    fn ensure(&mut self, now: Instant, cx: &mut Ctx<'_>, target: NodeId) {
        // Unverified routes towards us do not count: anyone could have
        // planted them to keep us from setting up our own.
        let have: Vec<NodeId> = self
            .ends
            .get(&target)
            .map(|v| v.iter().filter(|e| e.verified).map(|e| e.hop).collect())
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
            if self.start_route(now, cx, target, hop, left) {
                need -= 1;
            }
        }
    }

    /// A standby route gives failover only if it shares no relay with the
    /// route in use: a second route that went on through the relay of the
    /// first (`[r, intro]` beside `[intro]`: `r` could not reach the peer
    /// when it was set up, or the peer set both up so) dies with it, though
    /// [`RouteControl::ensure`] counts two routes over two first hops. When
    /// no two usable routes to `peer` share no relay, set up one over a
    /// relaying link that reaches the peer itself and is none of the
    /// relays of some usable route, at most once per [`REROUTE_EVERY`].
    /// Once two such routes exist, our own further routes, beyond
    /// [`ROUTES_PER_PEER`], that are neither in use (by this end, or by the
    /// far end: [`FAR_END_SENDS_WITHIN`]) nor one of the two are closed.
    /// (The relays of a route are what its relays said; a lying
    /// relay can at worst keep a standby from being set up here, which the
    /// peer's end of the same check still does.)
    fn route_around(&mut self, now: Instant, cx: &mut Ctx<'_>, peer: NodeId, in_use: RouteId) {
        let Some(ends) = self.ends.get(&peer) else {
            return;
        };
        let usable: Vec<&End> = ends
            .iter()
            .filter(|e| e.usable() && cx.ep.has_route(e.id))
            .collect();
        if let Some((p, q)) = disjoint_pair(&usable, in_use) {
            if usable.len() <= ROUTES_PER_PEER {
                return;
            }
            let far_end_sends = |id: RouteId| {
                cx.ep
                    .route_last_rx(id)
                    .is_some_and(|t| now.saturating_duration_since(t) < FAR_END_SENDS_WITHIN)
            };
            let extra: Vec<RouteId> = usable
                .iter()
                .filter(|e| e.origin == self.me && ![in_use, p, q].contains(&e.id))
                .map(|e| e.id)
                .filter(|id| !far_end_sends(*id))
                .collect();
            for id in extra {
                tracing::info!(%peer, %id, "route closed: two others share no relay");
                cx.ep.route_close(id);
                self.forget_end(peer, id);
            }
            return;
        }
        let pending = ends.iter().any(|e| e.origin == self.me && !e.ready);
        if pending || self.rerouted.contains_key(&peer) {
            return;
        }
        let me = self.me;
        let refused = &self.refused;
        let hop = cx
            .relay_hops(peer, |h| *h != me && !refused.contains_key(&(peer, *h)))
            .into_iter()
            .filter(|h| cx.overlay.reaches(*h, peer))
            .find(|h| {
                usable.iter().any(|e| !e.relays.contains(h))
                    && !usable.iter().any(|e| e.relays == [*h])
            });
        if let Some(hop) = hop {
            self.rerouted.insert(peer, now);
            self.stats.reroutes += 1;
            tracing::info!(%peer, via = %hop, "no two routes share no relay: one around them");
            self.start_route(now, cx, peer, hop, 0);
        }
    }

    /// Set up a route to `target` over the direct link `hop`, allowing
    /// `left` further relays after it.
    fn start_route(
        &mut self,
        now: Instant,
        cx: &mut Ctx<'_>,
        target: NodeId,
        hop: NodeId,
        left: u8,
    ) -> bool {
        let Some(sid) = cx.direct(hop) else {
            return false;
        };
        let offer = match cx.ep.route_begin(now, sid, cx.hop_mac(hop)) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(%hop, error = %e, "cannot start a route");
                return false;
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
            verified: true,
            since: now,
            stalled: None,
        });
        self.outbox.push((
            hop,
            Message::RouteSetup(RouteSetup {
                nonce,
                origin: self.me,
                target,
                relays_left: left,
                id: offer.id.0,
                key: offer.key.bytes,
                path: Vec::new(),
                hop_mac: offer.key.mac,
            }),
        ));
        self.stats.setups_sent += 1;
        tracing::info!(%target, via = %hop, "setting up a relayed route");
        true
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
    pub fn on_stalled(&mut self, now: Instant, cx: &mut Ctx<'_>, session: SessionId, path: Path) {
        // A direct path that stalls is usually loss, not death: the session
        // stays on it (if it died, the session closes and the next open
        // gets routes after RELAY_AFTER). A stalled route hands over to the
        // standby at once, and a new standby is set up.
        if !path.is_relayed() {
            return;
        }
        if let Some(id) = path.route() {
            for e in self.ends.values_mut().flatten().filter(|e| e.id == id) {
                let Some(hop) = cx.ep.session_for(e.hop) else {
                    continue;
                };
                let Some(info) = cx.ep.session_info(hop) else {
                    continue;
                };
                if info.state != SessionState::Open {
                    continue;
                }
                e.stalled = Some(Stall {
                    at: now,
                    hop_received: info.stats.packets_received,
                });
                // A live first hop answers this Ping within a round trip,
                // which clears the suspicion.
                cx.ep.probe_path(now, hop, info.path);
            }
        }
        if !self.move_to_standby(now, cx, session, path, true) {
            if let Some(peer) = cx.ep.session_info(session).and_then(|i| i.peer) {
                self.ensure(now, cx, peer);
            }
        }
    }

    /// Move `session` off `path` onto a ready route, preferring one that
    /// is not suspect ([`End::suspect`]), then one avoiding `path`'s first
    /// hop. After a stall (`after_stall`) a suspect route is no candidate:
    /// the session stays where it is rather than go back to a dead relay.
    /// When `path` is gone, any ready route beats none.
    fn move_to_standby(
        &mut self,
        now: Instant,
        cx: &mut Ctx<'_>,
        session: SessionId,
        path: Path,
        after_stall: bool,
    ) -> bool {
        let Some(peer) = cx.ep.session_info(session).and_then(|i| i.peer) else {
            return false;
        };
        let Some(ends) = self.ends.get(&peer) else {
            return false;
        };
        let bad_hop = path
            .route()
            .and_then(|id| ends.iter().find(|e| e.id == id).map(|e| e.hop));
        let best = ends
            .iter()
            .filter(|e| e.usable() && Path::Route(e.id) != path && cx.ep.has_route(e.id))
            .map(|e| (e, e.suspect(now, cx.ep)))
            .filter(|&(_, suspect)| !(after_stall && suspect))
            .min_by_key(|&(e, suspect)| (suspect, Some(e.hop) == bad_hop));
        let Some((e, _)) = best else {
            return false;
        };
        let to = Path::Route(e.id);
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
    pub fn on_route_closed(&mut self, now: Instant, cx: &mut Ctx<'_>, id: RouteId) {
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
        tracing::info!(%peer, %id, "route closed");
        if let Some((sid, path)) = cx.path_of(peer) {
            if path == Path::Route(id) {
                self.move_to_standby(now, cx, sid, path, false);
            }
        }
    }

    fn forget_end(&mut self, peer: NodeId, id: RouteId) {
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
        // The link it came over is the last relay named, or the origin
        // itself: the one claim a hop can check. A repeated (origin,
        // nonce) would overwrite state (and leak its entry); at the target
        // it is a repeat only over the same link, so that nobody can block
        // a route by claiming its nonce first.
        let consistent = s.path.last().copied().unwrap_or(s.origin) == from;
        let repeated = if s.target == self.me {
            self.ends
                .get(&s.origin)
                .is_some_and(|v| v.iter().any(|e| e.nonce == s.nonce && e.hop == from))
        } else {
            self.transits.contains_key(&(s.origin, s.nonce))
        };
        if !consistent || repeated {
            self.stats.bad_setup += 1;
            return self.refuse(from, &s, RouteRefusal::NoPath);
        }
        let offer = RouteOffer {
            id: RouteId(s.id),
            key: HopKey::new(s.key, s.hop_mac),
        };
        if s.target == self.me {
            return self.accept(now, cx, from, up, &offer, s);
        }
        // A relay.
        if !cx.ep.relay_limits().enabled {
            return self.refuse(from, &s, RouteRefusal::RelayDisabled);
        }
        if s.origin == self.me || s.path.contains(&self.me) || s.path.len() >= MAX_ROUTE_RELAYS {
            return self.refuse(from, &s, RouteRefusal::NoPath);
        }
        if let Some(quota) = self.transit_quota(cx.ep.relay_limits(), from, &s) {
            tracing::info!(origin = %s.origin, target = %s.target, via = %from, quota, "relay quota");
            self.stats.over_quota += 1;
            return self.refuse(from, &s, RouteRefusal::Limit);
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
        let down_mac = cx.hop_mac(next);
        let (up_in, down_offer) = match cx.ep.route_transit(now, up, &offer, down, down_mac) {
            Ok(x) => x,
            Err(RouteError::RelayDisabled) => {
                return self.refuse(from, &s, RouteRefusal::RelayDisabled)
            }
            Err(RouteError::TooManyRoutes) => {
                self.stats.over_quota += 1;
                return self.refuse(from, &s, RouteRefusal::Limit);
            }
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
                id: down_offer.id.0,
                key: down_offer.key.bytes,
                path,
                hop_mac: down_offer.key.mac,
            }),
        ));
    }

    /// The relay quota a new route from the link `from` would exceed, by
    /// name: its origin's, its upstream neighbour's (a member forwarding
    /// routes it claims to carry for others is charged for them), or its
    /// target's.
    fn transit_quota(
        &self,
        limits: &ringlan_tunnel::RelayLimits,
        from: NodeId,
        s: &RouteSetup,
    ) -> Option<&'static str> {
        let count = |f: &dyn Fn(&(NodeId, u64), &Transit) -> bool| {
            self.transits.iter().filter(|(k, t)| f(k, t)).count()
        };
        if count(&|k, _| k.0 == s.origin) >= limits.max_routes_per_origin {
            Some("origin")
        } else if count(&|_, t| t.up == from) >= limits.max_routes_per_origin {
            Some("upstream")
        } else if count(&|_, t| t.target == s.target) >= limits.max_routes_per_target {
            Some("target")
        } else {
            None
        }
    }

    /// The far end: accept a route from `s.origin` (unverified) over the
    /// link `from`, within the target quotas.
    fn accept(
        &mut self,
        now: Instant,
        cx: &mut Ctx<'_>,
        from: NodeId,
        up: SessionId,
        offer: &RouteOffer,
        s: RouteSetup,
    ) {
        let accepted = || self.ends.values().flatten().filter(|e| e.origin != self.me);
        let over = if accepted().count() >= ACCEPTED_MAX {
            Some("all")
        } else if accepted().filter(|e| e.hop == from).count() >= ACCEPTED_PER_HOP {
            Some("hop")
        } else if accepted()
            .filter(|e| e.hop == from && e.origin == s.origin)
            .count()
            >= ACCEPTED_PER_ORIGIN
        {
            Some("origin")
        } else {
            None
        };
        if let Some(quota) = over {
            tracing::info!(origin = %s.origin, via = %from, quota, "route quota");
            self.stats.over_quota += 1;
            return self.refuse(from, &s, RouteRefusal::Limit);
        }
        let Ok(id) = cx.ep.route_accept(now, up, offer) else {
            return self.refuse(from, &s, RouteRefusal::Gone);
        };
        tracing::info!(origin = %s.origin, via = %from, "relayed route accepted");
        self.ends.entry(s.origin).or_default().push(End {
            nonce: s.nonce,
            origin: s.origin,
            id,
            hop: from,
            relays: s.path.clone(),
            ready: true,
            verified: false,
            since: now,
            stalled: None,
        });
        self.stats.routes_ready += 1;
        self.outbox.push((
            from,
            Message::RouteReply(RouteReply {
                nonce: s.nonce,
                origin: s.origin,
                outcome: RouteOutcome::Accepted {
                    id: id.0,
                    relays: s.path,
                },
            }),
        ));
    }

    /// A session with `peer` (authenticated by its handshake) opened on
    /// `path`, or moved onto it. On a route's path the peer must be the
    /// node the route leads to: that proves a route towards us (its claimed
    /// origin is who it says) and makes it usable. Any other peer gets the
    /// route closed and counted; returns false then (the caller refuses a
    /// session that opened over it).
    pub fn on_session_path(&mut self, cx: &mut Ctx<'_>, peer: NodeId, path: Path) -> bool {
        let Some(id) = path.route() else {
            return true;
        };
        let Some((owner, verified)) = self
            .ends
            .iter()
            .find_map(|(p, v)| v.iter().find(|e| e.id == id).map(|e| (*p, e.verified)))
        else {
            return true;
        };
        if owner == peer {
            if !verified {
                self.stats.verified += 1;
                tracing::info!(%peer, %id, "relayed route verified");
                if let Some(e) = self
                    .ends
                    .get_mut(&owner)
                    .and_then(|v| v.iter_mut().find(|e| e.id == id))
                {
                    e.verified = true;
                }
            }
            return true;
        }
        self.stats.wrong_peer += 1;
        tracing::warn!(%peer, route_to = %owner, %id, "a session of another node on a route; closing it");
        cx.ep.route_close(id);
        self.forget_end(owner, id);
        false
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
                RouteOutcome::Accepted { id, relays } => {
                    match cx.ep.route_finish(up_in, RouteId(id)) {
                        Ok(()) => {
                            t.ready = true;
                            self.stats.carried += 1;
                            RouteOutcome::Accepted {
                                id: up_in.0,
                                relays,
                            }
                        }
                        Err(_) => {
                            self.transits.remove(&(r.origin, r.nonce));
                            RouteOutcome::Refused(RouteRefusal::Gone)
                        }
                    }
                }
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
                if cx.ep.route_finish(e.id, RouteId(next)).is_err() {
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
    fn on_ready(&mut self, now: Instant, cx: &mut Ctx<'_>, target: NodeId, id: RouteId) {
        let addr = Path::Route(id);
        if let Some((sid, path)) = cx.path_of(target) {
            let dead = path.route().is_some_and(|p| !cx.ep.has_route(p));
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

/// Two of `usable` routes that share no relay, preferring a pair with
/// `in_use`, then the fewest relays.
fn disjoint_pair(usable: &[&End], in_use: RouteId) -> Option<(RouteId, RouteId)> {
    let mut best: Option<((bool, usize), RouteId, RouteId)> = None;
    for (i, a) in usable.iter().enumerate() {
        for b in &usable[i + 1..] {
            if a.relays.iter().any(|r| b.relays.contains(r)) {
                continue;
            }
            let rank = (
                a.id != in_use && b.id != in_use,
                a.relays.len() + b.relays.len(),
            );
            if best.is_none_or(|(r, _, _)| rank < r) {
                best = Some((rank, a.id, b.id));
            }
        }
    }
    best.map(|(_, a, b)| (a, b))
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
                    id: RouteId(10),
                    hop: NodeId(6),
                    relays: vec![NodeId(5), NodeId(6)],
                    ready: true,
                    verified: true,
                    since: now,
                    stalled: None,
                },
                End {
                    nonce: 2,
                    origin: me,
                    id: RouteId(11),
                    hop: NodeId(7),
                    relays: vec![NodeId(7)],
                    ready: true,
                    verified: true,
                    since: now,
                    stalled: None,
                },
            ],
        );
        let v = r.view(NodeId(2), Path::Route(RouteId(10))).unwrap();
        assert_eq!(v.relays, vec![NodeId(6), NodeId(5)]);
        assert_eq!(v.standby, 1);
        let v = r.view(NodeId(2), Path::Route(RouteId(11))).unwrap();
        assert_eq!(v.relays, vec![NodeId(7)]);
        let direct: SocketAddr = "10.0.0.1:1".parse().unwrap();
        assert!(r.view(NodeId(2), Path::Direct(direct)).is_none());
        assert_eq!(r.paths_for(NodeId(2)).len(), 2);
        assert!(r.paths_for(NodeId(3)).is_empty());
    }

    /// A few endpoints on one lossless LAN, each with this module, a peer
    /// table and an overlay (no node around them): sessions open for real,
    /// route messages go straight to the addressee's `on_message`.
    mod lab {
        use std::collections::VecDeque;

        use ringlan_overlay::{Config, Mac, Overlay};
        use ringlan_tunnel::{
            Endpoint, EndpointConfig, Event, Identity, NetworkName, NetworkSecret, RelayLimits,
        };

        use super::super::*;
        use crate::peers::{Opening, Peer};
        use crate::{CONTROL_FLOW, FRAMES_FLOW};

        pub struct Member {
            pub id: NodeId,
            pub addr: SocketAddr,
            pub ep: Endpoint,
            pub overlay: Overlay,
            pub peers: Peers,
            pub routes: RouteControl,
        }

        pub struct Lab {
            pub now: Instant,
            pub m: Vec<Member>,
            /// Route messages in flight: (from, to, message).
            queue: VecDeque<(NodeId, NodeId, Message)>,
            /// Route messages delivered.
            pub log: Vec<(NodeId, NodeId, Message)>,
        }

        impl Lab {
            /// Members `0..n`; those in `relays` relay within `limits`.
            pub fn new(n: usize, relays: &[usize], limits: RelayLimits) -> Lab {
                let now = Instant::now();
                let name = NetworkName::new("lab").unwrap();
                let m = (0..n)
                    .map(|i| {
                        let identity = Identity::from_secret_key_bytes([i as u8 + 1; 32], &name);
                        let id = identity.node_id();
                        let mut cfg = EndpointConfig::new(
                            identity,
                            name.clone(),
                            NetworkSecret::from_bytes([7; 32]),
                        );
                        cfg.relay = RelayLimits {
                            enabled: relays.contains(&i),
                            ..limits.clone()
                        };
                        let rng = |k: u8| Rng::from_seed([i as u8 * 4 + k; 32]);
                        let mut ocfg = Config::new(
                            id,
                            format!("m{i}"),
                            ringlan_overlay::Role::Node,
                            Some(Mac([2, 0, 0, 0, 0, i as u8])),
                        );
                        // Never polled: the overlay only answers `Ctx` queries.
                        ocfg.introducers = vec![SocketAddr::from(([10, 0, 0, 254], 4000))];
                        Member {
                            id,
                            addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 4000)),
                            ep: Endpoint::new(now, cfg, rng(1)),
                            overlay: Overlay::new(now, ocfg, rng(2)).unwrap(),
                            peers: Peers::default(),
                            routes: RouteControl::new(id, rng(3)),
                        }
                    })
                    .collect();
                Lab {
                    now,
                    m,
                    queue: VecDeque::new(),
                    log: Vec::new(),
                }
            }

            /// [`Lab::new`] with the default relay limits and direct
            /// sessions opened `(from, to)`, in order.
            pub fn linked(n: usize, relays: &[usize], links: &[(usize, usize)]) -> Lab {
                let mut lab = Lab::new(n, relays, RelayLimits::default());
                for &(a, b) in links {
                    lab.link(a, b);
                }
                lab
            }

            pub fn id(&self, i: usize) -> NodeId {
                self.m[i].id
            }

            fn index(&self, id: NodeId) -> usize {
                self.m.iter().position(|m| m.id == id).unwrap()
            }

            /// Run `f` on member `i`'s routes; queue what it sends.
            pub fn with<T>(
                &mut self,
                i: usize,
                f: impl FnOnce(&mut RouteControl, &mut Ctx<'_>, Instant) -> T,
            ) -> T {
                let now = self.now;
                let m = &mut self.m[i];
                let mut cx = Ctx {
                    ep: &mut m.ep,
                    overlay: &m.overlay,
                    peers: &m.peers,
                };
                let out = f(&mut m.routes, &mut cx, now);
                for (to, msg) in m.routes.take_outbox() {
                    self.queue.push_back((m.id, to, msg));
                }
                for c in m.routes.take_connects() {
                    let o = Opening {
                        node: Some(c.node),
                        addrs: Vec::new(),
                    };
                    m.peers.asked(c.session, o, false);
                }
                out
            }

            /// Deliver queued route messages until none is left.
            pub fn deliver(&mut self) {
                while let Some((from, to, msg)) = self.queue.pop_front() {
                    self.log.push((from, to, msg.clone()));
                    let j = self.index(to);
                    self.with(j, |r, cx, now| r.on_message(now, cx, from, msg));
                }
            }

            /// Member `a` opens a direct session to `b`.
            pub fn link(&mut self, a: usize, b: usize) {
                let (id, addr) = (self.id(b), self.m[b].addr);
                let sid = self.m[a]
                    .ep
                    .connect(self.now, Target::Node(id), &[Path::Direct(addr)])
                    .unwrap();
                let o = Opening {
                    node: Some(id),
                    addrs: vec![addr],
                };
                self.m[a].peers.asked(sid, o, true);
                self.run(Duration::from_millis(200));
                assert!(self.m[a].peers.session_of(id).is_some(), "{a} -> {b} open");
            }

            /// Carry datagrams, events and route messages for `d`.
            pub fn run(&mut self, d: Duration) {
                let end = self.now + d;
                let mut buf = vec![0u8; 2048];
                while self.now < end {
                    loop {
                        let mut moved = false;
                        for i in 0..self.m.len() {
                            let from = self.m[i].addr;
                            while let Some(t) = self.m[i].ep.poll_transmit(self.now, &mut buf) {
                                moved = true;
                                let to = self.m.iter().position(|m| m.addr == t.destination);
                                if let Some(j) = to {
                                    let now = self.now;
                                    self.m[j].ep.handle_datagram(now, from, &mut buf[..t.size]);
                                }
                            }
                            self.events(i);
                        }
                        self.deliver();
                        if !moved {
                            break;
                        }
                    }
                    self.now += Duration::from_millis(5);
                    for m in &mut self.m {
                        m.ep.handle_timeout(self.now);
                    }
                }
            }

            /// What the node does with the endpoint's events, as far as
            /// sessions and routes go (`crate::sessions`).
            fn events(&mut self, i: usize) {
                while let Some(ev) = self.m[i].ep.poll_event() {
                    match ev {
                        Event::SessionOpened {
                            session,
                            peer,
                            path,
                            ..
                        } => {
                            if !self.with(i, |r, cx, _| r.on_session_path(cx, peer, path)) {
                                let now = self.now;
                                self.m[i].ep.close(now, session, false);
                                self.m[i].peers.failed(session);
                                continue;
                            }
                            let m = &mut self.m[i];
                            let p = Peer {
                                node: peer,
                                control: m.ep.open_flow(session, CONTROL_FLOW, None).unwrap(),
                                frames: m.ep.open_flow(session, FRAMES_FLOW, None).unwrap(),
                                sparse: m.ep.open_flow(session, FRAMES_FLOW, None).unwrap(),
                                recv: Default::default(),
                                tx: Default::default(),
                                rx: Default::default(),
                                drops: Default::default(),
                                opened: self.now,
                                cut: Default::default(),
                            };
                            m.peers.opened(session, p);
                        }
                        Event::SessionFailed { session, .. } => {
                            self.m[i].peers.failed(session);
                        }
                        Event::SessionClosed { session, peer, .. } => {
                            self.m[i].peers.closed(session, peer);
                        }
                        Event::AddressChanged { session, to, .. } => {
                            let peer = self.m[i].ep.session_info(session).and_then(|s| s.peer);
                            if let Some(peer) = peer {
                                self.with(i, |r, cx, _| r.on_session_path(cx, peer, to));
                            }
                        }
                        Event::RouteClosed { id } => {
                            self.with(i, |r, cx, now| r.on_route_closed(now, cx, id));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    use lab::Lab;
    use ringlan_tunnel::RelayLimits;

    /// Member `from` asks its link `to` for a route from `origin` to
    /// `target` over `path` (the relays before `to`), on a fresh route
    /// entry of its own; returns the answer once every message settled.
    fn ask(
        lab: &mut Lab,
        (from, to): (usize, usize),
        (origin, target): (NodeId, NodeId),
        nonce: u64,
        path: Vec<NodeId>,
    ) -> RouteOutcome {
        let (now, fid, tid) = (lab.now, lab.id(from), lab.id(to));
        let sid = lab.m[from].peers.session_of(tid).unwrap();
        let offer = lab.m[from]
            .ep
            .route_begin(now, sid, HopMac::AesGcm)
            .unwrap();
        let setup = RouteSetup {
            nonce,
            origin,
            target,
            relays_left: 0,
            id: offer.id.0,
            key: offer.key.bytes,
            path,
            hop_mac: offer.key.mac,
        };
        lab.log.clear();
        lab.with(to, |rc, cx, now| {
            rc.on_message(now, cx, fid, Message::RouteSetup(setup))
        });
        lab.deliver();
        lab.log
            .iter()
            .find_map(|(f, t, m)| match m {
                Message::RouteReply(r) if (*f, *t) == (tid, fid) && r.nonce == nonce => {
                    Some(r.outcome.clone())
                }
                _ => None,
            })
            .expect("an answer")
    }

    fn accepted(o: &RouteOutcome) -> bool {
        matches!(o, RouteOutcome::Accepted { .. })
    }

    const LIMIT: RouteOutcome = RouteOutcome::Refused(RouteRefusal::Limit);
    const NO_PATH: RouteOutcome = RouteOutcome::Refused(RouteRefusal::NoPath);

    #[test]
    fn relays_keep_quotas_per_origin_upstream_and_target() {
        // R (0) relays to B (2) for A (1) and C (3), at most 2 routes per
        // origin or upstream neighbour and 3 per target.
        let (r, a, b, c) = (0, 1, 2, 3);
        let limits = RelayLimits {
            max_routes_per_origin: 2,
            max_routes_per_target: 3,
            ..RelayLimits::default()
        };
        let mut lab = Lab::new(4, &[r], limits);
        lab.link(r, b);
        lab.link(a, r);
        lab.link(c, r);
        let (aid, bid, cid) = (lab.id(a), lab.id(b), lab.id(c));
        assert!(accepted(&ask(&mut lab, (a, r), (aid, bid), 1, vec![])));
        assert!(accepted(&ask(&mut lab, (a, r), (aid, bid), 2, vec![])));
        // Origin quota.
        assert_eq!(ask(&mut lab, (a, r), (aid, bid), 3, vec![]), LIMIT);
        // A claims to be C (with no relay before R, the origin is the link).
        assert_eq!(ask(&mut lab, (a, r), (cid, bid), 4, vec![]), NO_PATH);
        // A claims to relay for someone else: charged to A all the same.
        let other = NodeId(0xdead);
        assert_eq!(ask(&mut lab, (a, r), (other, bid), 5, vec![aid]), LIMIT);
        assert!(accepted(&ask(&mut lab, (c, r), (cid, bid), 1, vec![])));
        // The same (origin, nonce) again is refused, not replaced.
        assert_eq!(ask(&mut lab, (c, r), (cid, bid), 1, vec![]), NO_PATH);
        // Target quota: B has 3.
        assert_eq!(ask(&mut lab, (c, r), (cid, bid), 2, vec![]), LIMIT);
        assert_eq!(lab.m[r].routes.carried(lab.now).len(), 3);
        let st = lab.m[r].routes.stats;
        assert_eq!((st.over_quota, st.bad_setup, st.refused), (3, 2, 5));
        let drops = st.drops();
        assert!(drops.contains(&("route_over_quota", 3)), "{drops:?}");
        assert!(drops.contains(&("route_bad_setup", 2)), "{drops:?}");
    }

    #[test]
    fn targets_keep_quotas_per_claimed_origin_and_last_hop() {
        // M (1) floods B (0) with routes it claims to relay, first all
        // "from V" (3), then from made-up origins; V's own route through
        // R (2) is accepted throughout.
        let (b, m, r, v) = (0, 1, 2, 3);
        let mut lab = Lab::linked(4, &[m, r], &[(m, b), (r, b), (v, r)]);
        let (bid, mid, vid) = (lab.id(b), lab.id(m), lab.id(v));
        let mut nonce = 0;
        let mut flood = |lab: &mut Lab, origin: NodeId| {
            nonce += 1;
            ask(lab, (m, b), (origin, bid), nonce, vec![mid])
        };
        for _ in 0..ACCEPTED_PER_ORIGIN {
            assert!(accepted(&flood(&mut lab, vid)));
        }
        assert_eq!(flood(&mut lab, vid), LIMIT);
        assert!(accepted(&ask(&mut lab, (v, r), (vid, bid), 1, vec![])));
        for k in ACCEPTED_PER_ORIGIN..ACCEPTED_PER_HOP {
            assert!(accepted(&flood(&mut lab, NodeId(1000 + k as u128))));
        }
        assert_eq!(flood(&mut lab, NodeId(999)), LIMIT);
        assert!(accepted(&ask(&mut lab, (v, r), (vid, bid), 2, vec![])));
        assert_eq!(lab.m[b].routes.stats.over_quota, 2);
        assert!(lab.m[b].routes.paths_for(vid).is_empty(), "none proven yet");
    }

    /// Member `from` tells its link `relay` that it relays a route from
    /// `origin` to `target` (which `relay` reaches directly), and completes
    /// its own entry with the answer. Returns that entry.
    fn plant(
        lab: &mut Lab,
        (from, relay): (usize, usize),
        origin: NodeId,
        target: NodeId,
    ) -> RouteId {
        let (now, fid, rid) = (lab.now, lab.id(from), lab.id(relay));
        let sid = lab.m[from].peers.session_of(rid).unwrap();
        let planted = lab.m[from]
            .ep
            .route_begin(now, sid, HopMac::AesGcm)
            .unwrap();
        let setup = RouteSetup {
            nonce: 7,
            origin,
            target,
            relays_left: 0,
            id: planted.id.0,
            key: planted.key.bytes,
            path: vec![fid],
            hop_mac: planted.key.mac,
        };
        lab.with(relay, |rc, cx, now| {
            rc.on_message(now, cx, fid, Message::RouteSetup(setup))
        });
        lab.deliver();
        let answer = lab.log.iter().find_map(|(f, t, m)| match m {
            Message::RouteReply(RouteReply {
                outcome: RouteOutcome::Accepted { id, .. },
                ..
            }) if (*f, *t) == (rid, fid) => Some(*id),
            _ => None,
        });
        let next = RouteId(answer.expect("the relay accepted"));
        lab.m[from].ep.route_finish(planted.id, next).unwrap();
        planted.id
    }

    #[test]
    fn a_planted_route_is_no_path_to_its_claimed_origin() {
        // B (0) is the target, R (1) an honest relay, V (2) the victim, X
        // (3) a member that tells R it relays a route from V towards B,
        // so that B's next connection to V would run through X.
        let (b, r, v, x) = (0, 1, 2, 3);
        let mut lab = Lab::linked(4, &[r], &[(r, b), (x, r)]);
        let (bid, vid, xid) = (lab.id(b), lab.id(v), lab.id(x));
        let planted = plant(&mut lab, (x, r), vid, bid);
        let at_b: Vec<RouteId> = lab.m[b].routes.ends[&vid].iter().map(|e| e.id).collect();
        assert_eq!(at_b.len(), 1, "B accepted the route");
        assert!(
            lab.m[b].routes.paths_for(vid).is_empty(),
            "an unproven route is not a candidate for sessions to V"
        );
        // X runs its own session over the route: B refuses the session
        // and closes the route.
        let now = lab.now;
        lab.m[x]
            .ep
            .connect(now, Target::Node(bid), &[Path::Route(planted)])
            .unwrap();
        lab.run(Duration::from_millis(300));
        assert!(!lab.m[b].ep.has_route(at_b[0]));
        assert_eq!(lab.m[b].routes.stats.wrong_peer, 1);
        assert_eq!(lab.m[b].routes.stats.verified, 0);
        assert!(lab.m[b].routes.paths_for(vid).is_empty());
        assert_eq!(lab.m[b].peers.session_of(xid), None, "no session with X");
        let drops = lab.m[b].routes.stats.drops();
        assert!(drops.contains(&("route_wrong_peer", 1)), "{drops:?}");
    }

    #[test]
    fn a_session_moving_onto_a_route_claimed_for_another_closes_it() {
        // V (2) tells R (1) it relays a route from X (3) to B (0), then
        // moves its own (authenticated) session with B onto that route.
        let (b, r, v, x) = (0, 1, 2, 3);
        let mut lab = Lab::linked(4, &[r], &[(r, b), (v, r), (v, b)]);
        let (bid, xid) = (lab.id(b), lab.id(x));
        let planted = plant(&mut lab, (v, r), xid, bid);
        let at_b = lab.m[b].routes.ends[&xid][0].id;
        // Let the direct path go quiet (passive mobility keeps a session
        // on a direct path that delivered in the last 2 s).
        lab.run(Duration::from_secs(3));
        let now = lab.now;
        let sid = lab.m[v].peers.session_of(bid).unwrap();
        assert!(lab.m[v].ep.migrate(now, sid, Path::Route(planted)));
        let control = lab.m[v].peers.get(sid).unwrap().control;
        lab.m[v]
            .ep
            .send(
                now,
                sid,
                control,
                b"moved",
                ringlan_tunnel::Reliability::Reliable,
            )
            .unwrap();
        lab.run(Duration::from_secs(1));
        assert!(!lab.m[b].ep.has_route(at_b), "the route is closed");
        assert_eq!(lab.m[b].routes.stats.wrong_peer, 1);
        assert!(!lab.m[b].routes.ends.contains_key(&xid));
    }

    #[test]
    fn a_route_becomes_a_path_once_its_origin_runs_a_session_over_it() {
        // V (2) sets up a route to B (0) through the relay R (1), then
        // opens its session over it: the handshake proves V to B.
        let (b, r, v) = (0, 1, 2);
        let mut lab = Lab::linked(3, &[r], &[(r, b), (v, r)]);
        let (target, hop) = (lab.id(b), lab.id(r));
        assert!(lab.with(v, |rc, cx, now| rc.start_route(now, cx, target, hop, 0)));
        lab.deliver();
        assert_eq!(lab.m[r].routes.carried(lab.now).len(), 1);
        // Set up, not yet proven at B; V's session starts over it at once.
        let accepted: Vec<RouteId> = lab.m[b].routes.ends[&lab.id(v)]
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(accepted.len(), 1);
        assert!(lab.m[b].routes.paths_for(lab.id(v)).is_empty());
        lab.run(Duration::from_millis(300));
        let sid = lab.m[b]
            .peers
            .session_of(lab.id(v))
            .expect("V's session is open at B");
        assert_eq!(
            lab.m[b].ep.session_info(sid).unwrap().path,
            Path::Route(accepted[0])
        );
        assert_eq!(
            lab.m[b].routes.paths_for(lab.id(v)),
            vec![Path::Route(accepted[0])]
        );
        assert_eq!(lab.m[b].routes.stats.verified, 1);
        assert_eq!(lab.m[b].routes.stats.wrong_peer, 0);
    }

    /// Member `i`'s overlay hears from its link `j` a `Hello` saying
    /// whether `j` takes AEGIS-128L hop tags.
    fn hears_aegis_hops(lab: &mut Lab, i: usize, j: usize, takes: bool) {
        let (now, jid, addr) = (lab.now, lab.id(j), lab.m[j].addr);
        let hello = Message::Hello(ringlan_overlay::wire::Hello {
            node_id: jid,
            name: format!("m{j}"),
            role: ringlan_overlay::Role::Node,
            addrs: vec![addr],
            mac: None,
            relays: false,
            bridge: false,
            symmetric_nat: false,
            aegis_hops: takes,
        })
        .encode()
        .unwrap();
        let o = &mut lab.m[i].overlay;
        o.peer_up(now, jid, Some(addr), true);
        o.handle_control(now, jid, &hello);
        assert_eq!(o.says_aegis_hops(jid), takes);
    }

    #[test]
    fn each_hop_uses_aegis_tags_when_its_downstream_node_takes_them() {
        // V (2) -> R (1) -> B (0); R takes AEGIS-128L hop tags, B does or
        // does not (a node of the version before). The setup request of
        // each hop says what its upstream node chose, R checks one kind
        // and writes the other, and V's session opens over the route.
        let aegis = ringlan_tunnel::crypto::aegis_in_hardware();
        let (b, r, v) = (0, 1, 2);
        for b_takes in [false, true] {
            let mut lab = Lab::linked(3, &[r], &[(r, b), (v, r)]);
            hears_aegis_hops(&mut lab, v, r, true);
            hears_aegis_hops(&mut lab, r, b, b_takes);
            let (target, hop) = (lab.id(b), lab.id(r));
            assert!(lab.with(v, |rc, cx, now| rc.start_route(now, cx, target, hop, 0)));
            lab.deliver();
            let mac = |takes: bool| {
                if takes && aegis {
                    HopMac::Aegis128L
                } else {
                    HopMac::AesGcm
                }
            };
            let setups: Vec<(NodeId, HopMac)> = lab
                .log
                .iter()
                .filter_map(|(_, to, m)| match m {
                    Message::RouteSetup(s) => Some((*to, s.hop_mac)),
                    _ => None,
                })
                .collect();
            assert_eq!(
                setups,
                vec![(lab.id(r), mac(true)), (lab.id(b), mac(b_takes))]
            );
            let carried = lab.m[r].ep.routes(lab.now);
            let toward_b = carried
                .iter()
                .find(|i| i.to == Some(lab.id(b)))
                .expect("R's entry toward B");
            assert_eq!(
                (toward_b.mac_in, toward_b.mac_out),
                (mac(true), mac(b_takes))
            );
            lab.run(Duration::from_millis(300));
            let sid = lab.m[b]
                .peers
                .session_of(lab.id(v))
                .expect("V's session is open at B over the route");
            assert!(lab.m[b].ep.session_info(sid).unwrap().path.is_relayed());
        }
    }
}
