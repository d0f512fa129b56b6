//! The RTMFP endpoint (RFC 7016 3.3, 3.5.1): one per UDP socket. It
//! demultiplexes datagrams by session id, answers session startup
//! statelessly, acts as Redirector and Forwarder (3.5.1.4 - 3.5.1.6) and
//! owns every [`Session`]. Sans-IO: call [`Endpoint::handle_datagram`] and
//! [`Endpoint::handle_timeout`], issue commands, then drain
//! [`Endpoint::poll_transmit`], [`Endpoint::poll_event`] and read
//! [`Endpoint::poll_timeout`] — after every input, drain outputs until
//! `poll_transmit` returns `None`.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::crypto::{
    self, Certificate, CookieCheck, DefaultCipher, Epd, Identity, InitiatorKeying, NetworkName,
    NetworkSecret, Role, DEFAULT_HEADER_LEN, TAG_LEN,
};
use crate::flow::{FlowEvent, FlowId, RecvFlowId, Reliability, SendError};
use crate::path::{is_route_addr, route_addr, route_id_of, Path, RouteId};
use crate::relay::{
    self, HopKey, RelayLimits, RouteError, RouteInfo, RouteInput, RouteOffer, Routes,
};
use crate::session::{
    add_candidate, next_interval, CloseReason, Keying, OpenFailure, ResponderEcho, Session,
    SessionConfig, SessionId, SessionState, TimerOutcome,
};
use crate::stun::{self, StunClient, StunClientConfig, StunEvent, StunKind, StunTxId};
use crate::wire::address::write_address_list;
use crate::wire::chunk::{
    iikeying_signed_len, rikeying_signed_portion_len, write_iikeying_signed,
    write_rikeying_signed_portion,
};
use crate::wire::fragment::{Fragmenter, Reassembler, ReassemblyLimits, ReassemblyOutcome};
use crate::wire::packet::{
    scramble_session_id, split_multiplex, write_multiplex_header, MULTIPLEX_HEADER_LEN,
};
use crate::wire::{Address, AddressOrigin, Chunk, ChunkIter, PacketHeader, PacketMode};
use crate::{NodeId, Rng};

/// RFC 7016 3.5.1.1.1: at most this many candidate addresses are added
/// from Redirects.
pub const REDIRECT_THRESHOLD: usize = 24;
/// Startup replies are never larger than this factor times the datagram
/// that caused them (no amplification).
pub const AMPLIFICATION_FACTOR: usize = 3;
/// IHello datagrams are padded to at least this size so an RHello fits
/// within [`AMPLIFICATION_FACTOR`].
pub const IHELLO_MIN_DATAGRAM: usize = 160;
/// Startup packets larger than this are sent as Packet Fragments (3.4).
pub const STARTUP_MTU: usize = 1200;

/// Endpoint configuration.
pub struct EndpointConfig {
    pub identity: Identity,
    pub network: NetworkName,
    pub secret: NetworkSecret,
    pub session: SessionConfig,
    /// Answer IHellos for registered nodes with a Redirect (introducers).
    pub redirector: bool,
    /// Forward IHellos for nodes we have an OPEN session with as FIHello
    /// (every node, so ring members can introduce each other).
    pub forwarder: bool,
    /// Answer STUN Binding requests on this port (introducers). Off on
    /// ordinary nodes: a non-member must get no answer at all from them
    /// (port-scan resistance).
    pub stun_responder: bool,
    /// Startup packets answered per source IP: burst and refill per second.
    pub startup_burst: f64,
    pub startup_rate: f64,
    /// Upper bound on sessions (opening + open + closing).
    pub max_sessions: usize,
    /// Relaying for other members (relayed flow routes, [`crate::relay`]).
    pub relay: RelayLimits,
}

impl EndpointConfig {
    pub fn new(identity: Identity, network: NetworkName, secret: NetworkSecret) -> Self {
        EndpointConfig {
            identity,
            network,
            secret,
            session: SessionConfig::default(),
            redirector: false,
            forwarder: true,
            stun_responder: false,
            startup_burst: 32.0,
            startup_rate: 16.0,
            max_sessions: 4096,
            relay: RelayLimits::default(),
        }
    }
}

/// What the endpoint tells the application.
#[derive(Debug)]
pub enum Event {
    /// A session reached OPEN (either role).
    SessionOpened {
        session: SessionId,
        peer: NodeId,
        path: Path,
        role: Role,
    },
    /// An opening session failed.
    SessionFailed {
        session: SessionId,
        reason: OpenFailure,
    },
    /// An OPEN session ended; its flows are gone.
    SessionClosed {
        session: SessionId,
        peer: NodeId,
        reason: CloseReason,
    },
    /// The far end's path changed: a new address verified (RFC 7016
    /// 3.5.4.2), or a move onto or off a relayed route ([`Endpoint::migrate`]).
    AddressChanged {
        session: SessionId,
        from: Path,
        to: Path,
    },
    /// A flow event of a session (incoming flow, message, gap, ...).
    Flow {
        session: SessionId,
        event: FlowEvent,
    },
    /// A STUN Binding query ([`Endpoint::stun_query`]) was answered:
    /// `server` sees this endpoint at `mapped` (its reflexive address).
    StunResult {
        tx: StunTxId,
        server: SocketAddr,
        mapped: SocketAddr,
    },
    /// A STUN Binding query got no usable answer.
    StunFailed { tx: StunTxId, server: SocketAddr },
    /// A route entry (end or transit, [`crate::relay`]) is gone: expired,
    /// closed, or its hop session closed. A session on
    /// [`Path::Route`]`(id)` needs another path.
    RouteClosed { id: RouteId },
    /// An OPEN session's data went unanswered for a while on its current
    /// path (`path`): the application may [`Endpoint::migrate`] it onto
    /// another route before it is declared dead. Reported once per stall.
    PathStalled { session: SessionId, path: Path },
}

/// Why a datagram was dropped. Counted; visible in the agent's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    Malformed,
    UnknownSession,
    /// Failed to authenticate with the Default Session Key: not a member.
    NotMember,
    /// Failed to authenticate with the session keys (or replayed).
    BadSessionPacket,
    RateLimited,
    BadCookie,
    BadCertificate,
    BadSignature,
    BadKeying,
    WrongMode,
    Unsolicited,
    TooManySessions,
    Amplification,
    /// A route datagram that failed its hop check, was over a relay limit,
    /// or had nowhere to go ([`crate::relay::RouteDrop`]).
    Route,
}

impl DropReason {
    pub const ALL: [DropReason; 14] = [
        DropReason::Malformed,
        DropReason::UnknownSession,
        DropReason::NotMember,
        DropReason::BadSessionPacket,
        DropReason::RateLimited,
        DropReason::BadCookie,
        DropReason::BadCertificate,
        DropReason::BadSignature,
        DropReason::BadKeying,
        DropReason::WrongMode,
        DropReason::Unsolicited,
        DropReason::TooManySessions,
        DropReason::Amplification,
        DropReason::Route,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownSession => "unknown_session",
            DropReason::NotMember => "not_member",
            DropReason::BadSessionPacket => "bad_session_packet",
            DropReason::RateLimited => "rate_limited",
            DropReason::BadCookie => "bad_cookie",
            DropReason::BadCertificate => "bad_certificate",
            DropReason::BadSignature => "bad_signature",
            DropReason::BadKeying => "bad_keying",
            DropReason::WrongMode => "wrong_mode",
            DropReason::Unsolicited => "unsolicited",
            DropReason::TooManySessions => "too_many_sessions",
            DropReason::Amplification => "amplification",
            DropReason::Route => "route",
        }
    }
}

/// Endpoint-wide counters.
#[derive(Debug, Clone, Default)]
pub struct EndpointStats {
    pub datagrams_received: u64,
    pub datagrams_sent: u64,
    pub drops: HashMap<DropReason, u64>,
    pub ihellos_answered: u64,
    pub redirects_sent: u64,
    pub fihellos_forwarded: u64,
    /// STUN Binding requests answered (RFC 8489 6.3.1).
    pub stun_answered: u64,
    /// RHello Cookie Changes sent (RFC 7016 3.5.1.2).
    pub cookie_changes_sent: u64,
    /// Stored RIKeyings resent for retransmitted IIKeyings (3.5.1.1.2).
    pub rikeyings_resent: u64,
}

/// Errors of application commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no such session")]
    UnknownSession,
    #[error("session is not open")]
    NotOpen,
    #[error("flow error: {0}")]
    Flow(#[from] crate::flow::OpenError),
    #[error("send error: {0}")]
    Send(#[from] SendError),
    #[error("no candidate addresses")]
    NoCandidates,
    #[error("too many sessions")]
    TooManySessions,
    #[error("STUN: {0}")]
    Stun(#[from] stun::StunError),
}

/// Who a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The node with this id.
    Node(NodeId),
    /// Any member of the network at the candidate addresses (bootstrap to
    /// an introducer known only by address).
    Any,
}

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub size: usize,
}

struct Limiter {
    buckets: HashMap<IpAddr, (f64, Instant)>,
    burst: f64,
    rate: f64,
}

impl Limiter {
    const MAX_SOURCES: usize = 8192;

    fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.buckets.len() >= Self::MAX_SOURCES && !self.buckets.contains_key(&ip) {
            // Forget sources idle long enough to have refilled.
            let full = Duration::from_secs_f64(self.burst / self.rate.max(0.001));
            self.buckets
                .retain(|_, (_, t)| now.saturating_duration_since(*t) < full);
            if self.buckets.len() >= Self::MAX_SOURCES {
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(ip).or_insert((self.burst, now));
        let dt = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + dt * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

use crate::ids::IdMap;

type SessionTable = IdMap<Session>;

/// The RTMFP endpoint.
pub struct Endpoint {
    cfg: EndpointConfig,
    default: DefaultCipher,
    cookies: crypto::CookieJar,
    rng: Rng,
    epoch: Instant,
    sessions: SessionTable,
    order: Vec<u32>,
    /// Some session may be opening (IHELLO_SENT / KEYING_SENT). Sessions
    /// only start in those states (set in `insert_session`), so once a walk
    /// finds none, `queue_opening_packets` can skip the walk until the next
    /// insertion.
    maybe_opening: bool,
    cursor: usize,
    /// Open sessions by peer, for forwarding and duplicate suppression.
    by_peer: HashMap<NodeId, u32>,
    /// Addresses peers reported as their own (for Redirects).
    peer_local_addrs: HashMap<NodeId, Vec<SocketAddr>>,
    startup_out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    limiter: Limiter,
    reassembly: Reassembler<SocketAddr>,
    next_packet_id: u64,
    stats: EndpointStats,
    tcr_until: Option<Instant>,
    stun: StunClient,
    /// Relayed flow routes: ends and transits.
    routes: Routes,
    /// Route datagrams forwarded or generated (keepalives), to send.
    relay_out: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Spare buffers for `relay_out` (no allocation per forwarded packet).
    relay_pool: Vec<Vec<u8>>,
}

impl Endpoint {
    pub fn new(now: Instant, cfg: EndpointConfig, mut rng: Rng) -> Endpoint {
        let default = DefaultCipher::new(&cfg.secret, &cfg.network);
        let cookies = crypto::CookieJar::new(&mut rng);
        let limiter = Limiter {
            buckets: HashMap::new(),
            burst: cfg.startup_burst,
            rate: cfg.startup_rate,
        };
        let routes = Routes::new(cfg.relay.clone());
        Endpoint {
            cfg,
            default,
            cookies,
            rng,
            epoch: now,
            sessions: SessionTable::default(),
            order: Vec::new(),
            maybe_opening: false,
            cursor: 0,
            by_peer: HashMap::new(),
            peer_local_addrs: HashMap::new(),
            startup_out: VecDeque::new(),
            events: VecDeque::new(),
            limiter,
            reassembly: Reassembler::new(ReassemblyLimits::default()),
            next_packet_id: 1,
            stats: EndpointStats::default(),
            tcr_until: None,
            stun: StunClient::new(StunClientConfig::default()),
            routes,
            relay_out: VecDeque::new(),
            relay_pool: Vec::new(),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.cfg.identity.node_id()
    }

    pub fn identity(&self) -> &Identity {
        &self.cfg.identity
    }

    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    fn drop_packet(&mut self, r: DropReason) {
        *self.stats.drops.entry(r).or_insert(0) += 1;
    }

    fn now_secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn alloc_session_id(&mut self) -> u32 {
        loop {
            let id = self.rng.u32();
            if id != 0 && !self.sessions.contains_key(&id) && !self.routes.contains(id) {
                return id;
            }
        }
    }

    fn insert_session(&mut self, s: Session) {
        let id = s.id.0;
        self.maybe_opening |= s.is_opening();
        if self.sessions.insert(id, s).is_none() {
            self.order.push(id);
        }
    }

    fn remove_session(&mut self, id: u32) -> Option<Session> {
        let s = self.sessions.remove(&id)?;
        self.routes.session_closed(id);
        self.push_route_closed();
        self.order.retain(|&x| x != id);
        if let Some(peer) = s.peer() {
            if self.by_peer.get(&peer) == Some(&id) {
                self.by_peer.remove(&peer);
            }
        }
        Some(s)
    }

    // ===== commands ======================================================

    /// Start opening a session (RFC 7016 3.5.1.1.1). If a session to that
    /// node is already open or opening, its handle is returned instead.
    /// Candidates are paths ([`Path`], or plain addresses, which are direct
    /// paths).
    pub fn connect<P: Into<Path> + Copy>(
        &mut self,
        now: Instant,
        target: Target,
        candidates: &[P],
    ) -> Result<SessionId, CommandError> {
        if let Target::Node(id) = target {
            if let Some(&sid) = self.by_peer.get(&id) {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    if s.is_open() {
                        return Ok(SessionId(sid));
                    }
                }
            }
            let existing = self.sessions.values_mut().find(|s| {
                s.is_opening()
                    && s.opening
                        .as_ref()
                        .is_some_and(|o| Epd::parse(&o.epd) == Ok(Epd::Node(id)))
            });
            if let Some(s) = existing {
                let first = self.cfg.session.initial_retransmit;
                if let Some(o) = s.opening.as_mut() {
                    for &a in candidates {
                        if o.candidates.len() < REDIRECT_THRESHOLD {
                            add_candidate(o, now, a.into().to_addr(), first);
                        }
                    }
                }
                return Ok(s.id);
            }
        }
        if candidates.is_empty() {
            return Err(CommandError::NoCandidates);
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(CommandError::TooManySessions);
        }
        let epd = match target {
            Target::Node(id) => crypto::epd_for_node(id).to_vec(),
            Target::Any => Epd::Any.to_vec(),
        };
        let mut tag = [0u8; 16];
        self.rng.fill(&mut tag);
        let id = self.alloc_session_id();
        let mob = self.rng.bytes32();
        let cands: Vec<SocketAddr> = candidates
            .iter()
            .take(REDIRECT_THRESHOLD)
            .map(|&p| p.into().to_addr())
            .collect();
        let s = Session::new_initiator(
            SessionId(id),
            now,
            epd,
            tag,
            &cands,
            mob,
            self.cfg.session.clone(),
        );
        self.insert_session(s);
        Ok(SessionId(id))
    }

    /// Add candidate addresses to an opening session.
    pub fn add_candidates<P: Into<Path> + Copy>(
        &mut self,
        now: Instant,
        session: SessionId,
        paths: &[P],
    ) {
        let first = self.cfg.session.initial_retransmit;
        if let Some(s) = self.sessions.get_mut(&session.0) {
            if s.state == SessionState::IHelloSent {
                if let Some(o) = s.opening.as_mut() {
                    for &p in paths {
                        if o.candidates.len() < REDIRECT_THRESHOLD {
                            add_candidate(o, now, p.into().to_addr(), first);
                        }
                    }
                }
            }
        }
    }

    /// Record the addresses a peer reports as its own, for Redirects
    /// (RFC 7016 3.5.1.6: "MAY record other addresses").
    pub fn set_peer_addresses(&mut self, peer: NodeId, addrs: Vec<SocketAddr>) {
        let mut addrs = addrs;
        addrs.truncate(REDIRECT_THRESHOLD);
        self.peer_local_addrs.insert(peer, addrs);
    }

    /// Ask `server` (a STUN server, or any ringlan endpoint: every endpoint
    /// answers Binding requests on its RTMFP port) which address it sees
    /// us at. The answer arrives as [`Event::StunResult`] or
    /// [`Event::StunFailed`] (RFC 8489 6.2.1 retransmissions included).
    pub fn stun_query(
        &mut self,
        now: Instant,
        server: SocketAddr,
    ) -> Result<StunTxId, CommandError> {
        let tx = self.stun.query(now, &mut self.rng, server)?;
        self.drain_stun();
        Ok(tx)
    }

    /// Move the STUN client's requests to the startup queue and its
    /// results to the event queue.
    fn drain_stun(&mut self) {
        while let Some((dest, req)) = self.stun.poll_transmit() {
            if self.startup_out.len() < 1024 {
                self.startup_out.push_back((dest, req));
            }
        }
        while let Some(ev) = self.stun.poll_event() {
            self.events.push_back(match ev {
                StunEvent::Mapped { tx, server, mapped } => {
                    Event::StunResult { tx, server, mapped }
                }
                StunEvent::Failed { tx, server } => Event::StunFailed { tx, server },
            });
        }
    }

    /// A datagram that [`stun::looks_like_stun`]: answer Binding requests
    /// (rate-limited per source like IHellos, never larger than
    /// [`AMPLIFICATION_FACTOR`] times the request), hand responses to the
    /// client.
    fn handle_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        match stun::classify(data) {
            StunKind::BindingRequest => {
                if !self.cfg.stun_responder {
                    return self.drop_packet(DropReason::Unsolicited);
                }
                if !self.limiter.allow(now, from.ip()) {
                    return self.drop_packet(DropReason::RateLimited);
                }
                let budget = data.len().saturating_mul(AMPLIFICATION_FACTOR);
                match stun::answer_binding(data, from, budget) {
                    Some(resp) if self.startup_out.len() < 1024 => {
                        self.stats.stun_answered += 1;
                        self.startup_out.push_back((from, resp));
                    }
                    Some(_) => {}
                    None => self.drop_packet(DropReason::Amplification),
                }
            }
            StunKind::BindingResponse => {
                if self.stun.handle_response(data) {
                    self.drain_stun();
                } else {
                    self.drop_packet(DropReason::Unsolicited);
                }
            }
            StunKind::Other => self.drop_packet(DropReason::Malformed),
        }
    }

    /// Close a session: orderly (RFC 7016 3.5.5) unless `abrupt`.
    pub fn close(&mut self, now: Instant, session: SessionId, abrupt: bool) {
        let Some(s) = self.sessions.get_mut(&session.0) else {
            return;
        };
        let was_open = s.is_open();
        let opening = s.is_opening();
        if abrupt {
            s.close_abruptly(now);
        } else {
            s.close(now);
        }
        let peer = s.peer();
        if was_open {
            if let Some(peer) = peer {
                self.events.push_back(Event::SessionClosed {
                    session,
                    peer,
                    reason: CloseReason::Local,
                });
                if self.by_peer.get(&peer) == Some(&session.0) {
                    self.by_peer.remove(&peer);
                }
            }
        } else if opening {
            self.events.push_back(Event::SessionFailed {
                session,
                reason: OpenFailure::Cancelled,
            });
        }
    }

    /// Close every session (shutdown). Orderly sessions still need their
    /// Close Requests sent: drain `poll_transmit` afterwards.
    pub fn close_all(&mut self, now: Instant, abrupt: bool) {
        let ids: Vec<u32> = self.order.clone();
        for id in ids {
            self.close(now, SessionId(id), abrupt);
        }
    }

    fn open_session_mut(&mut self, session: SessionId) -> Result<&mut Session, CommandError> {
        let s = self
            .sessions
            .get_mut(&session.0)
            .ok_or(CommandError::UnknownSession)?;
        if !s.is_open() {
            return Err(CommandError::NotOpen);
        }
        Ok(s)
    }

    /// Open a sending flow (RFC 7016 3.6.2.1).
    pub fn open_flow(
        &mut self,
        session: SessionId,
        metadata: &[u8],
        return_association: Option<RecvFlowId>,
    ) -> Result<FlowId, CommandError> {
        let s = self.open_session_mut(session)?;
        Ok(s.flows.open(metadata, return_association)?)
    }

    /// Queue a message on a sending flow (RFC 7016 3.6.2.2).
    pub fn send(
        &mut self,
        now: Instant,
        session: SessionId,
        flow: FlowId,
        data: &[u8],
        reliability: Reliability,
    ) -> Result<(), CommandError> {
        let s = self.open_session_mut(session)?;
        s.flows.send(now, flow, data, reliability)?;
        Ok(())
    }

    /// Finish a sending flow (FIN after the queued messages).
    pub fn close_flow(&mut self, session: SessionId, flow: FlowId) {
        if let Some(s) = self.sessions.get_mut(&session.0) {
            s.flows.close(flow);
        }
    }

    /// Reject a receiving flow with an application exception code.
    pub fn reject_flow(&mut self, session: SessionId, flow: RecvFlowId, code: u64) {
        if let Some(s) = self.sessions.get_mut(&session.0) {
            s.flows.reject(flow, code);
        }
    }

    /// Probe a new path to an OPEN session's far end: send the
    /// address-mobility check Ping (RFC 7016 3.5.4.2) on `path` now,
    /// bypassing its rate limit once. If the far end answers on `path`
    /// the verified Ping Reply moves DESTADDR there and
    /// [`Event::AddressChanged`] follows. This is how a node learns, through
    /// a third party such as an introducer (RFC 7016 3.5.1.5/3.5.1.6), that a
    /// peer's NAT renumbered while its own NAT still filters the peer's new
    /// address. Returns false if the session is unknown or not OPEN.
    pub fn probe_path(&mut self, now: Instant, session: SessionId, path: impl Into<Path>) -> bool {
        let path: Path = path.into();
        self.sessions
            .get_mut(&session.0)
            .is_some_and(|s| s.probe_path(now, path.to_addr()))
    }

    // ----- relayed flow routes (crate::relay) ------------------------------

    fn open_session(&self, session: SessionId) -> Result<(), RouteError> {
        match self.sessions.get(&session.0) {
            Some(s) if s.is_open() && !is_route_addr(&s.dest) => Ok(()),
            _ => Err(RouteError::NoSession),
        }
    }

    fn hop_key(&mut self) -> HopKey {
        HopKey(self.rng.bytes32())
    }

    /// Start a route at its initiating end, first hop over the OPEN direct
    /// session `hop`. Send the offer to that hop's peer in a route setup
    /// request; complete with [`Endpoint::route_finish`] when it answers.
    pub fn route_begin(&mut self, now: Instant, hop: SessionId) -> Result<RouteOffer, RouteError> {
        self.open_session(hop)?;
        let id = self.alloc_session_id();
        let key = self.hop_key();
        self.routes.begin_end(now, id, hop.0, key.clone());
        Ok(RouteOffer {
            id: RouteId(id),
            key,
        })
    }

    /// Relay a route: the upstream node (session `up`) offered `offer`, we
    /// go on to the downstream node over session `down`. Returns the id to
    /// answer upstream with (after [`Endpoint::route_finish`]) and the
    /// offer to send downstream. Refused unless relaying is enabled and
    /// within limits.
    pub fn route_transit(
        &mut self,
        now: Instant,
        up: SessionId,
        offer: &RouteOffer,
        down: SessionId,
    ) -> Result<(RouteId, RouteOffer), RouteError> {
        if !self.cfg.relay.enabled {
            return Err(RouteError::RelayDisabled);
        }
        self.open_session(up)?;
        self.open_session(down)?;
        if up == down {
            return Err(RouteError::NoSession);
        }
        let up_in = self.alloc_session_id();
        let mut down_in = self.alloc_session_id();
        while down_in == up_in {
            down_in = self.alloc_session_id();
        }
        let key = self.hop_key();
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
        self.open_session(up)?;
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
        let before = s.dest;
        if !s.migrate(now, path.to_addr()) {
            return false;
        }
        if before != path.to_addr() {
            self.events.push_back(Event::AddressChanged {
                session,
                from: Path::from_addr(before),
                to: path,
            });
        }
        true
    }

    fn queue_route_keepalive(&mut self, now: Instant, id: u32) {
        let mut buf = self.relay_pool.pop().unwrap_or_default();
        buf.clear();
        buf.resize(relay::ROUTE_OVERHEAD, 0);
        let Some((sid, n)) = self.routes.wrap(now, id, &mut buf, 0) else {
            return;
        };
        let Some(dest) = self.sessions.get(&sid).map(|s| s.dest) else {
            return;
        };
        buf.truncate(n);
        self.relay_out.push_back((dest, buf));
    }

    /// A sealed one-Ping datagram of an OPEN session (see
    /// `Session::probe_datagram`), for the driver to send over paths the
    /// session does not use yet: birthday punching of a relayed session.
    pub fn probe_datagram(&mut self, now: Instant, session: SessionId) -> Option<Vec<u8>> {
        let s = self.sessions.get_mut(&session.0)?;
        let mut buf = vec![0u8; crate::pmtu::BASE_SIZE];
        let n = s.probe_datagram(now, &mut buf)?;
        buf.truncate(n);
        Some(buf)
    }

    /// The IHello datagram (RFC 7016 2.3.2, 3.5.1.1.1) of a session in
    /// IHELLO_SENT, sealed with the Default Session Key and padded like the
    /// endpoint's own IHellos, for the driver to send to addresses the
    /// session does not list as candidates: birthday punching
    /// ([`crate::punch`]) sends it from many sockets or to many ports. An
    /// RHello from any address is accepted by its tag (as after a
    /// Forwarder's introduction, 3.5.1.5). `None` unless IHELLO_SENT.
    pub fn ihello_datagram(&mut self, session: SessionId) -> Option<Vec<u8>> {
        let s = self.sessions.get(&session.0)?;
        if s.state != SessionState::IHelloSent {
            return None;
        }
        let o = s.opening.as_ref()?;
        let ch = Chunk::IHello {
            epd: &o.epd,
            tag: &o.tag,
        };
        let mut chunk = vec![0u8; ch.encoded_len()];
        ch.emit(&mut chunk).ok()?;
        let before = self.startup_out.len();
        let probe = SocketAddr::from(([0, 0, 0, 0], 0));
        self.queue_startup_raw_padded(probe, 0, &[&chunk], IHELLO_MIN_DATAGRAM);
        if self.startup_out.len() != before + 1 {
            // Not queued (queue full) or fragmented (never: an IHello is small).
            while self.startup_out.len() > before {
                self.startup_out.pop_back();
            }
            return None;
        }
        self.startup_out.pop_back().map(|(_, d)| d)
    }

    /// Give a delivered message buffer back for reuse.
    pub fn recycle(&mut self, session: SessionId, buf: Vec<u8>) {
        if let Some(s) = self.sessions.get_mut(&session.0) {
            s.flows.recycle(buf);
        }
    }

    /// Largest message that fits in one packet of this session (for frames
    /// that must never be fragmented across packets).
    pub fn max_unfragmented(&self, session: SessionId) -> Option<usize> {
        let s = self.sessions.get(&session.0)?;
        // Header (5) + chunk header (3) + flow/seq/fsn VLUs (~12) + slack.
        Some(s.max_plain().saturating_sub(32))
    }

    /// Session information for status displays.
    pub fn session_info(&self, session: SessionId) -> Option<SessionInfo> {
        let s = self.sessions.get(&session.0)?;
        Some(SessionInfo {
            id: session,
            peer: s.peer(),
            path: Path::from_addr(s.dest),
            state: s.state,
            role: s.role,
            srtt: s.srtt(),
            ert0: s.ert0(),
            cwnd: s.cwnd(),
            pmtu: s.pmtu(),
            opened: s.opened,
            stats: s.stats,
        })
    }

    /// Flow-layer counters of a session.
    pub fn flow_stats(&self, session: SessionId) -> Option<crate::flow::FlowStats> {
        Some(self.sessions.get(&session.0)?.flows.stats())
    }

    /// Every session's handle.
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.order.iter().map(|&i| SessionId(i))
    }

    /// The open session with `peer`, if any.
    pub fn session_for(&self, peer: NodeId) -> Option<SessionId> {
        self.by_peer.get(&peer).map(|&i| SessionId(i))
    }

    // ===== input =========================================================

    /// Process one received UDP datagram. `data` is modified in place
    /// (decryption).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        self.stats.datagrams_received += 1;
        if stun::looks_like_stun(data) {
            return self.handle_stun(now, from, data);
        }
        self.handle_rtmfp(now, from, data, true);
    }

    /// An RTMFP datagram: from the socket (`outer`), or the end-to-end
    /// packet out of a route datagram (`from` is then the route's address,
    /// and it may not be a route datagram itself).
    fn handle_rtmfp(&mut self, now: Instant, from: SocketAddr, data: &mut [u8], outer: bool) {
        let Ok((ssid, enc)) = split_multiplex(data) else {
            return self.drop_packet(DropReason::Malformed);
        };
        let sid = scramble_session_id(ssid, enc);
        let len = data.len();
        let enc = &mut data[MULTIPLEX_HEADER_LEN..];
        if sid == 0 {
            return self.handle_startup_datagram(now, from, enc, len);
        }
        if outer && !self.sessions.contains_key(&sid) && self.routes.contains(sid) {
            return self.handle_route_datagram(now, sid, data);
        }
        let Some(s) = self.sessions.get_mut(&sid) else {
            return self.drop_packet(DropReason::UnknownSession);
        };
        if s.state == SessionState::KeyingSent {
            return self.handle_keying_reply(now, from, sid, enc);
        }
        let Some(range) = s.open_packet(enc) else {
            return self.drop_packet(DropReason::BadSessionPacket);
        };
        let plain = &enc[range];
        let Ok((header, n)) = PacketHeader::parse(plain) else {
            return self.drop_packet(DropReason::Malformed);
        };
        if header.time_critical {
            self.tcr_until = Some(now + Duration::from_millis(800));
        }
        let body = ChunkIter::new(&plain[n..]);
        let before = s.dest;
        let was_open = s.is_open();
        let out = s.handle_packet(now, from, &header, body, len);
        let after = s.dest;
        let peer = s.peer();
        let is_open = s.is_open();
        if before != after {
            self.events.push_back(Event::AddressChanged {
                session: SessionId(sid),
                from: Path::from_addr(before),
                to: Path::from_addr(after),
            });
        }
        if was_open && !is_open {
            if let Some(peer) = peer {
                self.events.push_back(Event::SessionClosed {
                    session: SessionId(sid),
                    peer,
                    reason: out.closed.unwrap_or(CloseReason::Remote),
                });
                if self.by_peer.get(&peer) == Some(&sid) {
                    self.by_peer.remove(&peer);
                }
            }
        }
        self.drain_flow_events(sid);
        for (epd, reply, tag) in out.fihellos {
            // RFC 7016 3.5.1.1.2: answer an FIHello as an IHello from the
            // reply address. No datagram size to compare with: the FIHello
            // came over an authenticated session, so use the minimum.
            self.answer_ihello(now, reply, &epd, &tag, IHELLO_MIN_DATAGRAM, false);
        }
    }

    /// A datagram for one of our route ids ([`crate::relay`]): deliver
    /// the end-to-end packet, or forward it to the next hop.
    fn handle_route_datagram(&mut self, now: Instant, id: u32, data: &mut [u8]) {
        let sessions = &self.sessions;
        let hop_open = |sid: u32| sessions.get(&sid).is_some_and(Session::is_open);
        match self.routes.input(now, id, data, hop_open) {
            RouteInput::Deliver { id, range } => {
                self.handle_rtmfp(now, route_addr(RouteId(id)), &mut data[range], false)
            }
            RouteInput::Keepalive => {}
            RouteInput::Forward { session } => {
                let Some(dest) = self.sessions.get(&session).map(|s| s.dest) else {
                    return self.drop_packet(DropReason::Route);
                };
                if is_route_addr(&dest) {
                    // Hops run over direct sessions only.
                    return self.drop_packet(DropReason::Route);
                }
                let mut buf = self.relay_pool.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(data);
                self.relay_out.push_back((dest, buf));
            }
            RouteInput::Dropped(_) | RouteInput::NotRoute => self.drop_packet(DropReason::Route),
        }
    }

    fn drain_flow_events(&mut self, sid: u32) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            while let Some(ev) = s.flows.poll_event() {
                self.events.push_back(Event::Flow {
                    session: SessionId(sid),
                    event: ev,
                });
            }
        }
    }

    fn handle_startup_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        enc: &mut [u8],
        datagram_len: usize,
    ) {
        let Ok(range) = self.default.open(enc) else {
            return self.drop_packet(DropReason::NotMember);
        };
        let plain = enc[range].to_vec();
        self.handle_startup_plain(now, from, &plain, datagram_len, true);
    }

    fn handle_startup_plain(
        &mut self,
        now: Instant,
        from: SocketAddr,
        plain: &[u8],
        datagram_len: usize,
        allow_fragments: bool,
    ) {
        let Ok((header, n)) = PacketHeader::parse(plain) else {
            return self.drop_packet(DropReason::Malformed);
        };
        if header.mode != PacketMode::Startup {
            return self.drop_packet(DropReason::WrongMode);
        }
        for chunk in ChunkIter::new(&plain[n..]) {
            let Ok(chunk) = chunk else {
                self.drop_packet(DropReason::Malformed);
                break;
            };
            match chunk {
                Chunk::IHello { epd, tag } => {
                    if !self.limiter.allow(now, from.ip()) {
                        self.drop_packet(DropReason::RateLimited);
                        continue;
                    }
                    self.answer_ihello(now, from, epd, tag, datagram_len, true);
                }
                Chunk::RHello {
                    tag_echo,
                    cookie,
                    responder_certificate,
                } => self.handle_rhello(now, from, tag_echo, cookie, responder_certificate),
                Chunk::Redirect {
                    tag_echo,
                    addresses,
                } => self.handle_redirect(now, from, tag_echo, addresses),
                Chunk::IIKeying { .. } => {
                    if !self.limiter.allow(now, from.ip()) {
                        self.drop_packet(DropReason::RateLimited);
                        continue;
                    }
                    self.handle_iikeying(now, from, &chunk);
                }
                Chunk::PacketFragment { .. } if allow_fragments => {
                    match self
                        .reassembly
                        .insert_chunk(now, from, PacketMode::Startup, &chunk)
                    {
                        ReassemblyOutcome::Complete(p) => {
                            self.handle_startup_plain(now, from, &p, p.len(), false)
                        }
                        ReassemblyOutcome::Discarded(_) => self.drop_packet(DropReason::Malformed),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }

    /// IHello (or FIHello as IHello) from `from` (RFC 7016 3.5.1.1.2,
    /// 3.5.1.4, 3.5.1.5).
    fn answer_ihello(
        &mut self,
        now: Instant,
        from: SocketAddr,
        epd: &[u8],
        tag: &[u8],
        request_len: usize,
        direct: bool,
    ) {
        let Ok(parsed) = Epd::parse(epd) else {
            return self.drop_packet(DropReason::Malformed);
        };
        let budget = request_len.max(IHELLO_MIN_DATAGRAM) * AMPLIFICATION_FACTOR;
        if parsed.selects(self.cfg.identity.certificate()) {
            let cookie = self.cookies.make(self.now_secs(now), from);
            let cert = self.cfg.identity.certificate().as_bytes().to_vec();
            let chunk = Chunk::RHello {
                tag_echo: tag,
                cookie: &cookie,
                responder_certificate: &cert,
            };
            if self.queue_startup(from, 0, &[chunk], 0, Some(budget)) {
                self.stats.ihellos_answered += 1;
            }
            return;
        }
        if !direct {
            return;
        }
        // Not us: Forwarder and/or Redirector for an OPEN session's peer.
        let Some((sid, peer)) = self.find_open_for_epd(&parsed) else {
            return self.drop_packet(DropReason::Unsolicited);
        };
        if self.cfg.forwarder {
            let reply = Address::new(from, AddressOrigin::Reflexive);
            let fihello = Chunk::FIHello {
                epd,
                reply_address: reply,
                tag,
            };
            let mut buf = vec![0u8; fihello.encoded_len()];
            if fihello.emit(&mut buf).is_ok() {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.queue_chunk(buf);
                    self.stats.fihellos_forwarded += 1;
                }
            }
        }
        if self.cfg.redirector {
            let mut addrs = Vec::new();
            if let Some(s) = self.sessions.get(&sid) {
                addrs.push(Address::new(s.dest, AddressOrigin::Reflexive));
            }
            if let Some(l) = self.peer_local_addrs.get(&peer) {
                for &a in l {
                    if !addrs.iter().any(|x| x.addr == a) {
                        addrs.push(Address::new(a, AddressOrigin::Local));
                    }
                }
            }
            // Keep within the amplification budget.
            let fixed = MULTIPLEX_HEADER_LEN + DEFAULT_HEADER_LEN + TAG_LEN + 1 + 3 + 1 + tag.len();
            while !addrs.is_empty()
                && fixed + addrs.iter().map(|a| a.encoded_len()).sum::<usize>() > budget
            {
                addrs.pop();
            }
            let mut list = vec![0u8; addrs.iter().map(|a| a.encoded_len()).sum()];
            if write_address_list(&mut list, &addrs).is_ok() {
                let chunk = Chunk::Redirect {
                    tag_echo: tag,
                    addresses: &list,
                };
                if self.queue_startup(from, 0, &[chunk], 0, Some(budget)) {
                    self.stats.redirects_sent += 1;
                }
            }
        }
    }

    fn find_open_for_epd(&self, epd: &Epd) -> Option<(u32, NodeId)> {
        match epd {
            Epd::Node(id) => {
                let sid = *self.by_peer.get(id)?;
                Some((sid, *id))
            }
            Epd::Fingerprint(_) => self.sessions.values().find_map(|s| {
                let c = s.far_cert.as_ref()?;
                (s.is_open() && epd.selects(c)).then(|| (s.id.0, c.node_id()))
            }),
            Epd::Any => None,
        }
    }

    fn opening_by_tag(&self, tag: &[u8]) -> Option<u32> {
        self.sessions.values().find_map(|s| {
            let o = s.opening.as_ref()?;
            (o.tag.as_slice() == tag).then_some(s.id.0)
        })
    }

    fn handle_redirect(&mut self, now: Instant, from: SocketAddr, tag: &[u8], addresses: &[u8]) {
        let Some(sid) = self.opening_by_tag(tag) else {
            return self.drop_packet(DropReason::Unsolicited);
        };
        let first = self.cfg.session.initial_retransmit;
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.state != SessionState::IHelloSent {
            return;
        }
        let Some(o) = s.opening.as_mut() else { return };
        let list: Vec<SocketAddr> = if addresses.is_empty() {
            vec![from] // Implied Redirect (2.3.5)
        } else {
            crate::wire::address::AddressIter::new(addresses)
                .filter_map(|a| a.ok().map(|a| a.addr))
                .collect()
        };
        for a in list {
            if o.candidates.len() >= REDIRECT_THRESHOLD {
                break;
            }
            add_candidate(o, now, a, first);
        }
    }

    fn handle_rhello(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tag: &[u8],
        cookie: &[u8],
        cert_bytes: &[u8],
    ) {
        let Some(sid) = self.opening_by_tag(tag) else {
            return self.drop_packet(DropReason::Unsolicited);
        };
        let Ok(cert) = Certificate::parse(cert_bytes, &self.cfg.network) else {
            return self.drop_packet(DropReason::BadCertificate);
        };
        if cert.fingerprint() == self.cfg.identity.fingerprint() {
            // Our own RHello (we are at one of our candidates).
            return self.drop_packet(DropReason::Unsolicited);
        }
        let peer = cert.node_id();
        // Duplicate suppression (RFC 7016 3.5.1.1.1 step 1).
        let dup = self.sessions.values().find_map(|s| {
            (s.id.0 != sid
                && matches!(s.state, SessionState::KeyingSent | SessionState::Open)
                && s.peer() == Some(peer))
            .then_some(s.id)
        });
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.state != SessionState::IHelloSent {
            return;
        }
        let Some(o) = s.opening.as_ref() else { return };
        if !crypto::epd_matches(&cert, &o.epd) && Epd::parse(&o.epd) != Ok(Epd::Any) {
            return self.drop_packet(DropReason::BadCertificate);
        }
        if let Some(other) = dup {
            s.close(now);
            self.events.push_back(Event::SessionFailed {
                session: SessionId(sid),
                reason: OpenFailure::Duplicate(other),
            });
            return;
        }
        let keying = InitiatorKeying::new(&mut self.rng, self.cfg.identity.certificate().suites());
        let mut k = Keying {
            far_cert: cert,
            cookie: cookie.to_vec(),
            cookie_changed: false,
            keying,
            chunk: Vec::new(),
            next: now,
            interval: self.cfg.session.initial_retransmit,
        };
        let Some(chunk) = build_iikeying(&self.cfg.identity, sid, &k) else {
            return;
        };
        k.chunk = chunk;
        s.set_dest(now, from);
        s.state = SessionState::KeyingSent;
        s.far_cert = Some(k.far_cert.clone());
        if let Some(o) = s.opening.as_mut() {
            o.keying = Some(k);
        }
    }

    /// Responder side of IIKeying (RFC 7016 3.5.1.1.2, 3.5.1.2, 3.5.1.3).
    fn handle_iikeying(&mut self, now: Instant, from: SocketAddr, chunk: &Chunk<'_>) {
        let Chunk::IIKeying {
            initiator_session_id,
            cookie_echo,
            initiator_certificate,
            skic,
            signed,
            signature,
        } = *chunk
        else {
            return;
        };
        match self.cookies.check(self.now_secs(now), from, cookie_echo) {
            CookieCheck::Invalid => return self.drop_packet(DropReason::BadCookie),
            CookieCheck::WrongAddress => {
                let new_cookie = self.cookies.make(self.now_secs(now), from);
                let c = Chunk::CookieChange {
                    old_cookie: cookie_echo,
                    new_cookie: &new_cookie,
                };
                self.queue_startup(from, initiator_session_id, &[c], 0, None);
                self.stats.cookie_changes_sent += 1;
                return;
            }
            CookieCheck::Valid => {}
        }
        let Ok(cert) = Certificate::parse(initiator_certificate, &self.cfg.network) else {
            return self.drop_packet(DropReason::BadCertificate);
        };
        if crypto::verify_iikeying(&cert, signed, signature).is_err() {
            return self.drop_packet(DropReason::BadSignature);
        }
        let near = self.cfg.identity.certificate().clone();
        if cert.fingerprint() == near.fingerprint() {
            return self.drop_packet(DropReason::BadCertificate);
        }
        let peer = cert.node_id();
        // Glare (3.5.1.3): an opening session toward this identity/address.
        let mut reuse_id = None;
        let glare = self.sessions.values().find_map(|s| {
            let o = s.opening.as_ref()?;
            let to_it = Epd::parse(&o.epd).is_ok_and(|e| e != Epd::Any && e.selects(&cert))
                || s.far_cert.as_ref().is_some_and(|c| c.node_id() == peer)
                || (s.state == SessionState::KeyingSent && s.dest == from);
            to_it.then_some(s.id.0)
        });
        if let Some(gid) = glare {
            if !crypto::certificate_overrides(&near, &cert) {
                // We prevail: the far end aborts on our IIKeying. If ours
                // is still in IHELLO_SENT, its IHellos may not reach the far
                // end at all (its IIKeying came on a path we have not tried,
                // e.g. one opened by birthday punching): try that address
                // too. It is proven: the cookie echo shows the far end got
                // our RHello there and the IIKeying is signed by it.
                let first = self.cfg.session.initial_retransmit;
                if let Some(s) = self.sessions.get_mut(&gid) {
                    if s.state == SessionState::IHelloSent {
                        if let Some(o) = s.opening.as_mut() {
                            if o.candidates.len() < REDIRECT_THRESHOLD {
                                add_candidate(o, now, from, first);
                                self.maybe_opening = true;
                            }
                        }
                    }
                }
                return;
            }
            self.remove_session(gid);
            reuse_id = Some(gid);
        }
        // An OPEN session with this identity or from this address.
        let open = self.sessions.values().find_map(|s| {
            (matches!(s.state, SessionState::Open) && (s.peer() == Some(peer) || s.dest == from))
                .then_some(s.id.0)
        });
        if let Some(oid) = open {
            let Some(s) = self.sessions.get_mut(&oid) else {
                return;
            };
            if let Some(echo) = &s.responder_echo {
                if s.role == Role::Responder
                    && echo.far_session_id == initiator_session_id
                    && echo.skic == skic
                    && s.peer() == Some(peer)
                {
                    // Retransmitted IIKeying: resend the stored RIKeying.
                    let rik = echo.rikeying.clone();
                    let far = echo.far_session_id;
                    self.queue_startup_raw(from, far, &[&rik], None);
                    self.stats.rikeyings_resent += 1;
                    return;
                }
            }
            let same = s
                .far_cert
                .as_ref()
                .is_some_and(|c| crypto::same_identity(c, &cert));
            if !same {
                return;
            }
            // A new session from the same identity: the old one is stale.
            s.close_abruptly(now);
            self.events.push_back(Event::SessionClosed {
                session: SessionId(oid),
                peer,
                reason: CloseReason::Replaced,
            });
            self.by_peer.remove(&peer);
        }
        if reuse_id.is_none() && self.sessions.len() >= self.cfg.max_sessions {
            return self.drop_packet(DropReason::TooManySessions);
        }
        let Ok((skrc, keys)) = crypto::respond(&mut self.rng, &self.cfg.secret, &near, &cert, skic)
        else {
            return self.drop_packet(DropReason::BadKeying);
        };
        let id = reuse_id.unwrap_or_else(|| self.alloc_session_id());
        // RIKeying (2.3.8).
        let plen = rikeying_signed_portion_len(&skrc);
        let mut portion = vec![0u8; plen];
        if write_rikeying_signed_portion(&mut portion, id, &skrc).is_err() {
            return;
        }
        let sig = crypto::sign_rikeying(&self.cfg.identity, &portion, skic);
        let rik = Chunk::RIKeying {
            responder_session_id: id,
            skrc: &skrc,
            signed_portion: &portion,
            signature: &sig,
        };
        let mut rik_bytes = vec![0u8; rik.encoded_len()];
        if rik.emit(&mut rik_bytes).is_err() {
            return;
        }
        let (sealer, opener) = keys.ciphers();
        let mob = self.rng.bytes32();
        let echo = ResponderEcho {
            far_session_id: initiator_session_id,
            skic: skic.to_vec(),
            rikeying: rik_bytes.clone(),
        };
        let s = Session::new_responder(
            SessionId(id),
            now,
            from,
            initiator_session_id,
            cert,
            sealer,
            opener,
            echo,
            mob,
            self.cfg.session.clone(),
        );
        self.insert_session(s);
        self.by_peer.insert(peer, id);
        self.queue_startup_raw(from, initiator_session_id, &[&rik_bytes], None);
        self.events.push_back(Event::SessionOpened {
            session: SessionId(id),
            peer,
            path: Path::from_addr(from),
            role: Role::Responder,
        });
    }

    /// RIKeying or Cookie Change for a KEYING_SENT session (default key,
    /// our receive session id).
    fn handle_keying_reply(&mut self, now: Instant, from: SocketAddr, sid: u32, enc: &mut [u8]) {
        let Ok(range) = self.default.open(enc) else {
            return self.drop_packet(DropReason::BadSessionPacket);
        };
        let plain = &enc[range];
        let Ok((header, n)) = PacketHeader::parse(plain) else {
            return self.drop_packet(DropReason::Malformed);
        };
        if header.mode != PacketMode::Startup {
            return self.drop_packet(DropReason::WrongMode);
        }
        for chunk in ChunkIter::new(&plain[n..]) {
            let Ok(chunk) = chunk else { break };
            match chunk {
                Chunk::RIKeying {
                    responder_session_id,
                    skrc,
                    signed_portion,
                    signature,
                } => {
                    let Some(s) = self.sessions.get_mut(&sid) else {
                        return;
                    };
                    let Some(k) = s.opening.as_ref().and_then(|o| o.keying.as_ref()) else {
                        return;
                    };
                    if crypto::verify_rikeying(
                        &k.far_cert,
                        signed_portion,
                        k.keying.skic(),
                        signature,
                    )
                    .is_err()
                    {
                        return self.drop_packet(DropReason::BadSignature);
                    }
                    let Ok(keys) = k.keying.complete(
                        &self.cfg.secret,
                        self.cfg.identity.certificate(),
                        &k.far_cert,
                        skrc,
                    ) else {
                        return self.drop_packet(DropReason::BadKeying);
                    };
                    if responder_session_id == 0 {
                        return self.drop_packet(DropReason::BadKeying);
                    }
                    let (sealer, opener) = keys.ciphers();
                    s.send_sid = responder_session_id;
                    s.enter_open(now, sealer, opener);
                    let peer = s.peer().unwrap_or_default();
                    let path = Path::from_addr(s.dest);
                    let _ = from;
                    self.by_peer.insert(peer, sid);
                    self.events.push_back(Event::SessionOpened {
                        session: SessionId(sid),
                        peer,
                        path,
                        role: Role::Initiator,
                    });
                    return;
                }
                Chunk::CookieChange {
                    old_cookie,
                    new_cookie,
                } => {
                    // RFC 7016 3.5.1.2.
                    let Some(s) = self.sessions.get_mut(&sid) else {
                        return;
                    };
                    let Some(k) = s.opening.as_mut().and_then(|o| o.keying.as_mut()) else {
                        return;
                    };
                    if k.cookie_changed || k.cookie != old_cookie {
                        continue;
                    }
                    k.cookie = new_cookie.to_vec();
                    k.cookie_changed = true;
                    if let Some(c) = build_iikeying(&self.cfg.identity, sid, k) {
                        k.chunk = c;
                        k.next = now;
                    }
                }
                _ => {}
            }
        }
    }

    // ===== timers ========================================================

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = earliest(self.reassembly.poll_timeout(), self.stun.poll_timeout());
        t = earliest(t, self.routes.poll_timeout());
        for s in self.sessions.values() {
            if let Some(x) = s.poll_timeout() {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        }
        t
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.reassembly.handle_timeout(now);
        if self.routes.poll_timeout().is_some_and(|t| t <= now) {
            self.routes.handle_timeout(now);
            for id in self.routes.take_keepalives() {
                self.queue_route_keepalive(now, id);
            }
            self.push_route_closed();
        }
        if self.stun.poll_timeout().is_some_and(|t| t <= now) {
            self.stun.handle_timeout(now);
            self.drain_stun();
        }
        // The loop only adds events; `order` does not change until `reap`.
        for i in 0..self.order.len() {
            let Some(&id) = self.order.get(i) else { break };
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            let outcome = s.handle_timeout(now);
            let peer = s.peer();
            match outcome {
                Some(TimerOutcome::OpenFailed) => self.events.push_back(Event::SessionFailed {
                    session: SessionId(id),
                    reason: OpenFailure::Timeout,
                }),
                Some(TimerOutcome::Closed(reason)) => {
                    if let Some(peer) = peer {
                        self.events.push_back(Event::SessionClosed {
                            session: SessionId(id),
                            peer,
                            reason,
                        });
                        if self.by_peer.get(&peer) == Some(&id) {
                            self.by_peer.remove(&peer);
                        }
                    }
                }
                Some(TimerOutcome::Finished) | None => {}
            }
            if let Some(s) = self.sessions.get_mut(&id) {
                if s.take_stalled() {
                    self.events.push_back(Event::PathStalled {
                        session: SessionId(id),
                        path: Path::from_addr(s.dest),
                    });
                }
            }
            self.drain_flow_events(id);
        }
        self.reap();
    }

    /// Remove finished sessions; allocates nothing.
    fn reap(&mut self) {
        let mut i = 0;
        while let Some(&id) = self.order.get(i) {
            if self.sessions.get(&id).is_some_and(Session::is_finished) {
                // Removes `order[i]`; the next id moves into slot i.
                self.remove_session(id);
            } else {
                i += 1;
            }
        }
        // Ids in the table but missing from `order` (none expected).
        if self.sessions.len() != self.order.len() {
            self.sessions.retain(|_, s| !s.is_finished());
        }
    }

    // ===== output ========================================================

    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if let Event::SessionClosed { session, .. } = &ev {
            // Routes over a closed hop session are gone with it.
            self.routes.session_closed(session.0);
            self.push_route_closed();
        }
        Some(ev)
    }

    fn push_route_closed(&mut self) {
        for id in self.routes.take_closed() {
            self.events
                .push_back(Event::RouteClosed { id: RouteId(id) });
        }
    }

    /// The next datagram to send, written into `buf` (at least the path
    /// MTU in size, 1500 is plenty).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some((dest, pkt)) = self.relay_out.pop_front() {
            let n = pkt.len().min(buf.len());
            buf[..n].copy_from_slice(&pkt[..n]);
            if self.relay_pool.len() < 256 {
                self.relay_pool.push(pkt);
            }
            self.stats.datagrams_sent += 1;
            return Some(Transmit {
                destination: dest,
                size: n,
            });
        }
        loop {
            let t = self.poll_transmit_inner(now, buf)?;
            let Some(id) = route_id_of(&t.destination) else {
                return Some(t);
            };
            // A packet for a route end: wrap it for the first hop.
            let hop = self.routes.wrap(now, id.0, buf, t.size);
            let dest = hop.and_then(|(sid, n)| Some((self.sessions.get(&sid)?.dest, n)));
            match dest {
                Some((dest, n)) if !is_route_addr(&dest) => {
                    return Some(Transmit {
                        destination: dest,
                        size: n,
                    })
                }
                _ => {
                    self.stats.datagrams_sent -= 1;
                    self.drop_packet(DropReason::Route);
                }
            }
        }
    }

    fn poll_transmit_inner(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.queue_opening_packets(now);
        if let Some((dest, pkt)) = self.startup_out.pop_front() {
            let n = pkt.len().min(buf.len());
            buf[..n].copy_from_slice(&pkt[..n]);
            self.stats.datagrams_sent += 1;
            return Some(Transmit {
                destination: dest,
                size: n,
            });
        }
        let tcr = self.tcr_until.is_some_and(|t| now < t);
        let count = self.order.len();
        let mut finished = false;
        for i in 0..count {
            let idx = (self.cursor + i) % count;
            let id = self.order[idx];
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if !s.wants_transmit(now) {
                finished |= s.is_finished();
                continue;
            }
            s.set_tcr(tcr);
            if let Some((dest, size)) = s.poll_transmit(now, buf) {
                self.cursor = (idx + 1) % count;
                self.stats.datagrams_sent += 1;
                self.drain_flow_events(id);
                return Some(Transmit {
                    destination: dest,
                    size,
                });
            }
            finished |= s.is_finished();
        }
        // Every session was visited: reap only if one has finished.
        if finished {
            self.reap();
        }
        None
    }

    /// Queue due IHellos and IIKeyings of opening sessions.
    fn queue_opening_packets(&mut self, now: Instant) {
        if !self.maybe_opening {
            return;
        }
        let mut opening = false;
        let mut out: Vec<(SocketAddr, u32, Vec<u8>, bool)> = Vec::new();
        for s in self.sessions.values_mut() {
            opening |= s.is_opening();
            let state = s.state;
            let dest = s.dest;
            let Some(o) = s.opening.as_mut() else {
                continue;
            };
            match state {
                SessionState::IHelloSent => {
                    let mut chunk = None;
                    for c in o.candidates.iter_mut() {
                        if c.next <= now {
                            let bytes = chunk.get_or_insert_with(|| {
                                let ch = Chunk::IHello {
                                    epd: &o.epd,
                                    tag: &o.tag,
                                };
                                let mut b = vec![0u8; ch.encoded_len()];
                                let _ = ch.emit(&mut b);
                                b
                            });
                            out.push((c.addr, 0, bytes.clone(), true));
                            c.next = now + c.interval;
                            c.interval = next_interval(c.interval);
                        }
                    }
                }
                SessionState::KeyingSent => {
                    if let Some(k) = o.keying.as_mut() {
                        if k.next <= now {
                            out.push((dest, 0, k.chunk.clone(), false));
                            k.next = now + k.interval;
                            k.interval = next_interval(k.interval);
                        }
                    }
                }
                _ => {}
            }
        }
        self.maybe_opening = opening;
        for (dest, sid, chunk, pad) in out {
            let min = if pad { IHELLO_MIN_DATAGRAM } else { 0 };
            self.queue_startup_raw_padded(dest, sid, &[&chunk], min);
        }
    }

    /// Encode and queue a startup packet (Default Session Key, mode 3).
    /// Returns false if it was not sent (amplification budget exceeded).
    fn queue_startup(
        &mut self,
        dest: SocketAddr,
        sid: u32,
        chunks: &[Chunk<'_>],
        min_len: usize,
        budget: Option<usize>,
    ) -> bool {
        let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(chunks.len());
        for c in chunks {
            let mut b = vec![0u8; c.encoded_len()];
            if c.emit(&mut b).is_err() {
                return false;
            }
            encoded.push(b);
        }
        let refs: Vec<&[u8]> = encoded.iter().map(|v| v.as_slice()).collect();
        let size = startup_datagram_len(&refs);
        if let Some(b) = budget {
            if size > b {
                self.drop_packet(DropReason::Amplification);
                return false;
            }
        }
        self.queue_startup_raw_padded(dest, sid, &refs, min_len);
        true
    }

    fn queue_startup_raw(
        &mut self,
        dest: SocketAddr,
        sid: u32,
        chunks: &[&[u8]],
        _budget: Option<usize>,
    ) {
        self.queue_startup_raw_padded(dest, sid, chunks, 0);
    }

    fn queue_startup_raw_padded(
        &mut self,
        dest: SocketAddr,
        sid: u32,
        chunks: &[&[u8]],
        min_len: usize,
    ) {
        if self.startup_out.len() >= 1024 {
            return;
        }
        let header = PacketHeader::new(PacketMode::Startup);
        let mut plain = vec![0u8; header.encoded_len()];
        if header.emit(&mut plain).is_err() {
            return;
        }
        for c in chunks {
            plain.extend_from_slice(c);
        }
        let overhead = MULTIPLEX_HEADER_LEN + DEFAULT_HEADER_LEN + TAG_LEN;
        if plain.len() + overhead < min_len {
            // Padding chunk (type 0xff, 2.3) up to the minimum size.
            let pad = (min_len - plain.len() - overhead).saturating_sub(3);
            plain.push(0xff);
            plain.extend_from_slice(&(pad as u16).to_be_bytes());
            plain.resize(plain.len() + pad, 0);
        }
        if plain.len() + overhead > STARTUP_MTU {
            // RFC 7016 3.4: fragment unavoidably large startup packets.
            let pid = self.next_packet_id;
            self.next_packet_id += 1;
            let max_chunk = STARTUP_MTU - overhead - header.encoded_len();
            let Ok(frags) = Fragmenter::new(&plain, pid, max_chunk) else {
                return;
            };
            let frags: Vec<Vec<u8>> = frags
                .map(|c| {
                    let mut b = vec![0u8; c.encoded_len()];
                    let _ = c.emit(&mut b);
                    b
                })
                .collect();
            for f in frags {
                let mut p = vec![0u8; header.encoded_len()];
                let _ = header.emit(&mut p);
                p.extend_from_slice(&f);
                self.seal_startup(dest, sid, &p);
            }
            return;
        }
        self.seal_startup(dest, sid, &plain);
    }

    fn seal_startup(&mut self, dest: SocketAddr, sid: u32, plain: &[u8]) {
        let start = MULTIPLEX_HEADER_LEN + DEFAULT_HEADER_LEN;
        let mut buf = vec![0u8; start + plain.len() + TAG_LEN];
        buf[start..start + plain.len()].copy_from_slice(plain);
        let Ok(r) = self.default.seal(
            &mut self.rng,
            &mut buf[MULTIPLEX_HEADER_LEN..],
            DEFAULT_HEADER_LEN,
            plain.len(),
        ) else {
            return;
        };
        buf.truncate(MULTIPLEX_HEADER_LEN + r.end);
        if write_multiplex_header(&mut buf, sid).is_err() {
            return;
        }
        self.startup_out.push_back((dest, buf));
    }
}

/// Status snapshot of one session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: SessionId,
    pub peer: Option<NodeId>,
    /// The path the session's packets take (DESTADDR, RFC 7016 3.5).
    pub path: Path,
    pub state: SessionState,
    pub role: Role,
    pub srtt: Option<Duration>,
    pub ert0: Duration,
    pub cwnd: usize,
    pub pmtu: usize,
    pub opened: Option<Instant>,
    pub stats: crate::session::SessionStats,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn startup_datagram_len(chunks: &[&[u8]]) -> usize {
    MULTIPLEX_HEADER_LEN
        + DEFAULT_HEADER_LEN
        + 1
        + chunks.iter().map(|c| c.len()).sum::<usize>()
        + TAG_LEN
}

/// Build and sign an IIKeying chunk (RFC 7016 2.3.7).
fn build_iikeying(identity: &Identity, sid: u32, k: &Keying) -> Option<Vec<u8>> {
    let cert = identity.certificate().as_bytes();
    let skic = k.keying.skic();
    let mut signed = vec![0u8; iikeying_signed_len(&k.cookie, cert, skic)];
    write_iikeying_signed(&mut signed, sid, &k.cookie, cert, skic).ok()?;
    let sig = crypto::sign_iikeying(identity, &signed);
    let chunk = Chunk::IIKeying {
        initiator_session_id: sid,
        cookie_echo: &k.cookie,
        initiator_certificate: cert,
        skic,
        signed: &signed,
        signature: &sig,
    };
    let mut out = vec![0u8; chunk.encoded_len()];
    chunk.emit(&mut out).ok()?;
    Some(out)
}
