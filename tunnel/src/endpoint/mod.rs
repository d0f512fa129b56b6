//! The RTMFP endpoint (RFC 7016 3.3, 3.5.1): one per UDP socket. It
//! demultiplexes datagrams by session id, answers session startup
//! statelessly, acts as Redirector and Forwarder (3.5.1.4 - 3.5.1.6) and
//! owns every [`Session`]. Sans-IO: call [`Endpoint::handle_datagram`] and
//! [`Endpoint::handle_timeout`], issue commands, then drain
//! [`Endpoint::poll_transmit`], [`Endpoint::poll_event`] and read
//! [`Endpoint::poll_timeout`] — after every input, drain outputs until
//! `poll_transmit` returns `None`.
//!
//! One struct, [`Endpoint`], with its `impl` blocks spread over files by
//! concern (as smoltcp spreads `Interface`):
//!
//! - this file: configuration, events, the session table, application
//!   commands, the receive demultiplexer, timers and the transmit loop;
//! - `handshake.rs`: session startup (IHello, RHello, IIKeying, RIKeying,
//!   cookies, glare, startup packets and their fragmentation);
//! - `forwarder.rs`: Forwarder and Redirector for third parties;
//! - `relay.rs`: relayed flow routes (route commands, [`Endpoint::migrate`],
//!   delivering, forwarding and wrapping route datagrams);
//! - `stun.rs`: STUN Binding on the RTMFP port;
//! - `limiter.rs`: the pre-authentication limits (STUN and startup budgets
//!   per prefix, global, and per peer address; `docs/limits.md`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[cfg(test)]
pub(crate) mod back_to_back;
mod forwarder;
mod handshake;
mod limiter;
mod recent;
mod relay;
mod stun;

pub use limiter::{BucketTable, Budget, PreAuthLimits, PreAuthStats, TableStats};
use limiter::{Kind, PreAuthLimiter, Refused};

use crate::crypto::{self, DefaultCipher, Epd, Identity, NetworkName, NetworkSecret, Role};
use crate::flow::{Delivery, FlowEvent, FlowId, RecvFlowId, Reliability, SendError};
use crate::ids::IdMap;
use crate::path::{route_id_of, Path, RouteId};
use crate::route_table::{RelayLimits, Routes, ROUTE_HEADER_LEN};
use crate::session::{
    CloseReason, OpenFailure, Session, SessionConfig, SessionId, SessionState, TimerOutcome,
};
use crate::stun::{StunClient, StunClientConfig, StunError, StunTxId};
use crate::wire::fragment::{Reassembler, ReassemblyLimits};
use crate::wire::packet::{scramble_session_id, split_multiplex, MULTIPLEX_HEADER_LEN};
use crate::wire::{ChunkIter, PacketHeader};
use crate::{NodeId, Rng};

pub use crate::session::REDIRECT_THRESHOLD;
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
    /// The alternate address a STUN responder names in its answers
    /// (OTHER-ADDRESS, RFC 5780 7.4; an unspecified IP means "the IP the
    /// client asked", `stun::resolve_other`): where the node answers
    /// Binding requests on a second socket ([`Endpoint::answer_stun`]), so
    /// that a client learns its NAT's mapping behaviour from one server.
    pub stun_other: Option<SocketAddr>,
    /// How much work datagrams without a session may cost (STUN and
    /// session startup budgets, `docs/limits.md`).
    pub limits: PreAuthLimits,
    /// Upper bound on sessions (opening + open + closing).
    pub max_sessions: usize,
    /// Relaying for other members (relayed flow routes, `docs/relay.md`).
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
            stun_other: None,
            limits: PreAuthLimits::default(),
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
    /// `server` sees this endpoint at `mapped` (its reflexive address) and
    /// named `other` as its alternate address (OTHER-ADDRESS as sent; see
    /// `stun::resolve_other`).
    StunResult {
        tx: StunTxId,
        server: SocketAddr,
        mapped: SocketAddr,
        other: Option<SocketAddr>,
    },
    /// A STUN Binding query got no usable answer.
    StunFailed { tx: StunTxId, server: SocketAddr },
    /// A route entry (end or transit, `docs/relay.md`) is gone: expired,
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
    /// A STUN Binding request over its source prefix's budget.
    StunPrefixLimit,
    /// A STUN Binding request over the endpoint's total STUN budget.
    StunGlobalLimit,
    /// An IHello or IIKeying over its source prefix's budget.
    StartupPrefixLimit,
    /// An IHello or IIKeying over the endpoint's total startup budget.
    StartupGlobalLimit,
    /// A STUN or startup datagram from an OPEN session's peer address over
    /// that address's own budget.
    PeerAddressLimit,
    /// An FIHello over its forwarding peer's budget (the RHello it asks
    /// for is not sent).
    ForwarderLimit,
    BadCookie,
    BadCertificate,
    BadSignature,
    BadKeying,
    /// An IIKeying whose SKIC opened a session within the cookie lifetime,
    /// replayed after that session ended (`handshake.rs`).
    ReplayedKeying,
    /// An IHello whose tag was already answered to
    /// [`handshake::IHellosSeen::MAX_SOURCES`] other sources lately: a
    /// replay from spoofed addresses (`handshake.rs`).
    ReplayedIHello,
    WrongMode,
    Unsolicited,
    TooManySessions,
    Amplification,
    /// A route datagram that failed its hop check, was over a relay limit,
    /// or had nowhere to go (counted by reason in the route table).
    Route,
}

impl DropReason {
    pub const ALL: [DropReason; 21] = [
        DropReason::Malformed,
        DropReason::UnknownSession,
        DropReason::NotMember,
        DropReason::BadSessionPacket,
        DropReason::StunPrefixLimit,
        DropReason::StunGlobalLimit,
        DropReason::StartupPrefixLimit,
        DropReason::StartupGlobalLimit,
        DropReason::PeerAddressLimit,
        DropReason::ForwarderLimit,
        DropReason::BadCookie,
        DropReason::BadCertificate,
        DropReason::BadSignature,
        DropReason::BadKeying,
        DropReason::ReplayedKeying,
        DropReason::ReplayedIHello,
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
            DropReason::StunPrefixLimit => "stun_prefix_limit",
            DropReason::StunGlobalLimit => "stun_global_limit",
            DropReason::StartupPrefixLimit => "startup_prefix_limit",
            DropReason::StartupGlobalLimit => "startup_global_limit",
            DropReason::PeerAddressLimit => "peer_address_limit",
            DropReason::ForwarderLimit => "forwarder_limit",
            DropReason::BadCookie => "bad_cookie",
            DropReason::BadCertificate => "bad_certificate",
            DropReason::BadSignature => "bad_signature",
            DropReason::BadKeying => "bad_keying",
            DropReason::ReplayedKeying => "replayed_keying",
            DropReason::ReplayedIHello => "replayed_ihello",
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
    Stun(#[from] StunError),
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
    /// Why it is sent: the runtime may budget what nobody asked for
    /// (`docs/limits.md` "Unverified destinations").
    pub kind: TransmitKind,
}

/// Why the endpoint sends a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransmitKind {
    /// A session packet on the session's current path, relayed route
    /// traffic, or a forwarded IHello (all to a peer with a session).
    Session,
    /// A session packet on a path the session does not run on: an
    /// address-mobility check (RFC 7016 3.5.4.2) of a reported or newly
    /// seen address.
    Probe,
    /// This endpoint starts something: an IHello to a candidate, an
    /// IIKeying (RFC 7016 3.5.1.1), a STUN query.
    Opening,
    /// An answer to a datagram just received: RHello, Redirect, RIKeying,
    /// a STUN answer (within the pre-authentication limits).
    Answer,
}

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
    startup_out: VecDeque<(SocketAddr, Vec<u8>, TransmitKind)>,
    events: VecDeque<Event>,
    limiter: PreAuthLimiter,
    /// Where OPEN sessions' far ends are (address -> session id), for the
    /// peer-address budget. Entries are checked against the session on
    /// use, so a stale one is harmless; pruned when it outgrows the table.
    peer_addrs: HashMap<SocketAddr, u32>,
    reassembly: Reassembler<SocketAddr>,
    next_packet_id: u64,
    stats: EndpointStats,
    tcr_until: Option<Instant>,
    /// A driver's receive batch is being handed in: obligatory
    /// acknowledgements may wait a few packets
    /// ([`Endpoint::set_receive_batch`]).
    receive_batch: bool,
    /// Session packets leave unencrypted, their encryption handed out with
    /// [`Endpoint::take_pending_seal`] ([`Endpoint::set_defer_sealing`]).
    defer_seal: bool,
    /// The seal the datagram just returned by `poll_transmit` still needs.
    pending_seal: Option<crate::session::DeferredSeal>,
    stun: StunClient,
    /// Relayed flow routes: ends and transits.
    routes: Routes,
    /// Route datagrams forwarded or generated (keepalives), to send.
    relay_out: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Inside [`Endpoint::handle_datagram_in_place`]: a datagram to
    /// forward is left in the caller's buffer and its destination noted
    /// in `forward`, instead of being copied to `relay_out`.
    in_place: bool,
    forward: Option<SocketAddr>,
    /// Spare buffers for `relay_out` (no allocation per forwarded packet).
    relay_pool: Vec<Vec<u8>>,
    /// Responder sessions that would replace an OPEN session with the same
    /// identity (new id -> old id), not yet confirmed by a packet under
    /// their keys (`handshake.rs`): unannounced until then, dropped
    /// silently if they never are. At most one per peer.
    unconfirmed: HashMap<u32, u32>,
    /// SKICs of the IIKeyings that opened sessions within the cookie
    /// lifetime: a replay of one is refused (`handshake.rs`).
    keyings_seen: handshake::KeyingsSeen,
    ihellos_seen: handshake::IHellosSeen,
}

impl Endpoint {
    pub fn new(now: Instant, cfg: EndpointConfig, mut rng: Rng) -> Endpoint {
        let default = DefaultCipher::new(&cfg.secret, &cfg.network);
        let cookies = crypto::CookieJar::new(&mut rng);
        let limiter = PreAuthLimiter::new(now, &cfg.limits, &mut rng);
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
            peer_addrs: HashMap::new(),
            reassembly: Reassembler::new(ReassemblyLimits::default()),
            next_packet_id: 1,
            stats: EndpointStats::default(),
            tcr_until: None,
            receive_batch: false,
            defer_seal: false,
            pending_seal: None,
            stun: StunClient::new(StunClientConfig::default()),
            routes,
            relay_out: VecDeque::new(),
            in_place: false,
            forward: None,
            relay_pool: Vec::new(),
            unconfirmed: HashMap::new(),
            keyings_seen: handshake::KeyingsSeen::default(),
            ihellos_seen: handshake::IHellosSeen::default(),
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

    /// Counters of the pre-authentication tables (`docs/limits.md`).
    pub fn preauth_stats(&self) -> PreAuthStats {
        self.limiter.stats()
    }

    /// May the endpoint spend work on a datagram of `kind` from `from`
    /// that no session authenticates? Counts the refusal by reason.
    fn preauth(&mut self, now: Instant, kind: Kind, from: SocketAddr) -> bool {
        let peer = self.is_peer_address(from);
        let r = self.limiter.allow(now, kind, from, peer);
        self.count_refusal(r)
    }

    /// May the endpoint answer an FIHello from `forwarder` that names
    /// `reply` (limiter module doc)? Counts the refusal by reason.
    fn preauth_forwarded(&mut self, now: Instant, forwarder: NodeId, reply: SocketAddr) -> bool {
        let peer = self.is_peer_address(reply);
        let r = self.limiter.allow_forwarded(now, forwarder, reply, peer);
        self.count_refusal(r)
    }

    fn count_refusal(&mut self, r: Result<(), Refused>) -> bool {
        match r {
            Ok(()) => true,
            Err(r) => {
                self.drop_packet(match r {
                    Refused::Prefix(Kind::Stun) => DropReason::StunPrefixLimit,
                    Refused::Global(Kind::Stun) => DropReason::StunGlobalLimit,
                    Refused::Prefix(Kind::Startup) => DropReason::StartupPrefixLimit,
                    Refused::Global(Kind::Startup) => DropReason::StartupGlobalLimit,
                    Refused::PeerAddress => DropReason::PeerAddressLimit,
                    Refused::Forwarder => DropReason::ForwarderLimit,
                });
                false
            }
        }
    }

    /// Whether `from` is where an OPEN session's far end is now.
    fn is_peer_address(&self, from: SocketAddr) -> bool {
        self.peer_addrs.get(&from).is_some_and(|sid| {
            self.sessions
                .get(sid)
                .is_some_and(|s| s.is_open() && s.dest() == from)
        })
    }

    /// An OPEN session's far end is (now) at `addr`.
    fn note_peer_address(&mut self, sid: u32, addr: SocketAddr) {
        self.peer_addrs.insert(addr, sid);
        if self.peer_addrs.len() > 2 * self.cfg.max_sessions + 64 {
            // Amortized: at most once per `max_sessions` insertions, and
            // insertions come only from authenticated events.
            let sessions = &self.sessions;
            self.peer_addrs.retain(|a, sid| {
                sessions
                    .get(sid)
                    .is_some_and(|s| s.is_open() && s.dest() == *a)
            });
        }
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
        let id = s.id().0;
        self.maybe_opening |= s.is_opening();
        if self.sessions.insert(id, s).is_none() {
            self.order.push(id);
        }
    }

    fn remove_session(&mut self, id: u32) -> Option<Session> {
        let s = self.sessions.remove(&id)?;
        self.unconfirmed.remove(&id);
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

    /// An OPEN session ended: report it, and forget it as the peer's
    /// session. The one place that emits [`Event::SessionClosed`].
    fn session_closed(&mut self, sid: u32, peer: NodeId, reason: CloseReason) {
        if self.unconfirmed.remove(&sid).is_some() {
            // Never announced, so never closed either.
            return;
        }
        self.events.push_back(Event::SessionClosed {
            session: SessionId(sid),
            peer,
            reason,
        });
        if self.by_peer.get(&peer) == Some(&sid) {
            self.by_peer.remove(&peer);
        }
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
                    && s.opening()
                        .is_some_and(|o| Epd::parse(&o.epd) == Ok(Epd::Node(id)))
            });
            if let Some(s) = existing {
                for &a in candidates {
                    s.add_candidate(now, a.into().to_addr());
                }
                return Ok(s.id());
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
        if let Some(s) = self.sessions.get_mut(&session.0) {
            if s.state() == SessionState::IHelloSent {
                for &p in paths {
                    s.add_candidate(now, p.into().to_addr());
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
                self.session_closed(session.0, peer, CloseReason::Local);
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
        Ok(s.flows_mut().open(metadata, return_association)?)
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
        s.flows_mut().send(now, flow, data, reliability)?;
        Ok(())
    }

    /// Queue the message `buf[range]` without copying it when it takes
    /// more than one fragment: the session keeps `buf`'s storage and
    /// leaves a buffer of the same length from its pool in its place
    /// (`flow::FlowSet::send_owned`). For a caller that reads each message
    /// into a buffer it can give away, such as a TAP read.
    pub fn send_owned(
        &mut self,
        now: Instant,
        session: SessionId,
        flow: FlowId,
        buf: &mut Vec<u8>,
        range: std::ops::Range<usize>,
        reliability: Reliability,
    ) -> Result<(), CommandError> {
        let s = self.open_session_mut(session)?;
        s.flows_mut()
            .send_owned(now, flow, buf, range, reliability)?;
        Ok(())
    }

    /// Finish a sending flow (FIN after the queued messages).
    pub fn close_flow(&mut self, session: SessionId, flow: FlowId) {
        if let Some(s) = self.sessions.get_mut(&session.0) {
            s.flows_mut().close(flow);
        }
    }

    /// Reject a receiving flow with an application exception code.
    pub fn reject_flow(&mut self, session: SessionId, flow: RecvFlowId, code: u64) {
        if let Some(s) = self.sessions.get_mut(&session.0) {
            s.flows_mut().reject(flow, code);
        }
    }

    /// Choose how a receiving flow hands out its messages (RFC 7016
    /// 3.6.3.3) and resume its delivery if it was held
    /// (`flow::FlowSet::accept`).
    pub fn accept_flow(&mut self, session: SessionId, flow: RecvFlowId, delivery: Delivery) {
        if let Some(s) = self.sessions.get_mut(&session.0) {
            s.flows_mut().accept(flow, delivery);
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

    /// Give a delivered message buffer back for reuse.
    pub fn recycle(&mut self, session: SessionId, buf: Vec<u8>) {
        if let Some(s) = self.sessions.get_mut(&session.0) {
            s.flows_mut().recycle(buf);
        }
    }

    /// Session information for status displays.
    pub fn session_info(&self, session: SessionId) -> Option<SessionInfo> {
        let s = self.sessions.get(&session.0)?;
        Some(SessionInfo {
            id: session,
            peer: s.peer(),
            path: Path::from_addr(s.dest()),
            state: s.state(),
            role: s.role(),
            srtt: s.srtt(),
            measured_rtt: s.flows().measured_rtt(),
            ert0: s.ert0(),
            cwnd: s.cwnd(),
            congestion: s.congestion_stats(),
            in_flight: s.flows().outstanding_bytes(),
            queued: s.flows().queued_bytes(),
            pmtu: s.pmtu(),
            opened: s.opened(),
            key_epoch: s.key_epoch(),
            suite: s.suite(),
            stats: s.stats(),
        })
    }

    /// Bytes of NoRetransmit messages (frames) the session lost so far,
    /// by negative acknowledgement or timeout: a cheap per-frame check of
    /// whether the path loses packets (`docs/dataplane.md`, "Loss").
    pub fn frame_loss(&self, session: SessionId) -> u64 {
        self.sessions
            .get(&session.0)
            .map_or(0, |s| s.frame_lost_bytes())
    }

    /// The largest message with `reliability` that `flow` of `session`
    /// sends as one fragment (in one packet, never cut across packets) if
    /// queued now. NoRetransmit messages (frames) are cut from the
    /// session's current path MTU, so this follows PMTU discovery (1428
    /// bytes on a 1500-byte IPv4 path once the flow's metadata was
    /// acknowledged); the others from the base size (1156 bytes).
    pub fn max_unfragmented(
        &self,
        session: SessionId,
        flow: FlowId,
        reliability: Reliability,
    ) -> Option<usize> {
        self.sessions
            .get(&session.0)?
            .flows()
            .max_unfragmented(flow, reliability)
    }

    /// Flow-layer counters of a session.
    pub fn flow_stats(&self, session: SessionId) -> Option<crate::flow::FlowStats> {
        Some(self.sessions.get(&session.0)?.flows().stats())
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
        if crate::stun::looks_like_stun(data) {
            return self.handle_stun(now, from, data);
        }
        self.handle_rtmfp(now, from, data, true);
    }

    /// [`Endpoint::handle_datagram`] for a caller that can send a datagram
    /// from its receive buffer: a route datagram this node relays is
    /// rewritten in place in `data` (same length: new hop header and tag,
    /// `docs/relay.md`) and its destination returned; the caller sends
    /// `data` as it is then, before reusing the buffer. Nothing is copied
    /// or queued for it. `None`: handled like [`Endpoint::handle_datagram`]
    /// (anything to send comes out of [`Endpoint::poll_transmit`]).
    pub fn handle_datagram_in_place(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &mut [u8],
    ) -> Option<Transmit> {
        self.in_place = true;
        self.handle_datagram(now, from, data);
        self.in_place = false;
        let destination = self.forward.take()?;
        Some(Transmit {
            destination,
            size: data.len(),
            kind: TransmitKind::Session,
        })
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
        if s.state() == SessionState::KeyingSent {
            return self.handle_keying_reply(now, from, sid, enc);
        }
        let Some(range) = s.open_packet(now, enc) else {
            return self.drop_packet(DropReason::BadSessionPacket);
        };
        let plain = &enc[range];
        let Ok((header, n)) = PacketHeader::parse(plain) else {
            return self.drop_packet(DropReason::Malformed);
        };
        if header.time_critical {
            self.tcr_until = Some(now + crate::congestion::TIME_CRITICAL_HOLD);
        }
        let body = ChunkIter::new(&plain[n..]);
        let before = s.dest();
        let was_open = s.is_open();
        let out = s.handle_packet(now, from, &header, body, len, &mut self.rng);
        let after = s.dest();
        let peer = s.peer();
        let is_open = s.is_open();
        if before != after {
            if is_open {
                self.note_peer_address(sid, after);
            }
            self.events.push_back(Event::AddressChanged {
                session: SessionId(sid),
                from: Path::from_addr(before),
                to: Path::from_addr(after),
            });
        }
        if !self.unconfirmed.is_empty() && is_open {
            self.confirm_replacement(now, sid);
        }
        if was_open && !is_open {
            if let Some(peer) = peer {
                let reason = out.closed.unwrap_or(CloseReason::Remote);
                self.session_closed(sid, peer, reason);
            }
        }
        self.drain_flow_events(sid);
        for (epd, reply, tag) in out.fihellos {
            // RFC 7016 3.5.1.1.2: answer an FIHello as an IHello from the
            // reply address, within the forwarder's budget and the reply
            // address's startup budgets (`limiter.rs`). No datagram size
            // to compare with: the FIHello came over an authenticated
            // session, so use the minimum.
            let Some(forwarder) = peer else { continue };
            if !self.preauth_forwarded(now, forwarder, reply) {
                continue;
            }
            self.answer_ihello(now, reply, &epd, &tag, IHELLO_MIN_DATAGRAM, false);
        }
    }

    fn drain_flow_events(&mut self, sid: u32) {
        if let Some(s) = self.sessions.get_mut(&sid) {
            while let Some(ev) = s.flows_mut().poll_event() {
                self.events.push_back(Event::Flow {
                    session: SessionId(sid),
                    event: ev,
                });
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
            let outcome = s.handle_timeout(now, &mut self.rng);
            let peer = s.peer();
            match outcome {
                Some(TimerOutcome::OpenFailed) => self.events.push_back(Event::SessionFailed {
                    session: SessionId(id),
                    reason: OpenFailure::Timeout,
                }),
                Some(TimerOutcome::Closed(reason)) => {
                    if let Some(peer) = peer {
                        self.session_closed(id, peer, reason);
                    }
                }
                Some(TimerOutcome::Finished) | None => {}
            }
            if let Some(s) = self.sessions.get_mut(&id) {
                if s.take_stalled() {
                    self.events.push_back(Event::PathStalled {
                        session: SessionId(id),
                        path: Path::from_addr(s.dest()),
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

    /// A batch of datagrams read together is about to be handed in
    /// (`open`) or has been: while it is open, each session holds its
    /// obligatory acknowledgements until four packets with data arrived
    /// or the batch ends (`flow::FlowSet::wants_control`, which says why).
    /// Drain [`Endpoint::poll_transmit`] after closing the batch.
    pub fn set_receive_batch(&mut self, open: bool) {
        self.receive_batch = open;
    }

    /// Leave the encryption of ordinary session packets on direct paths to
    /// the caller (a driver that seals on another thread): after each
    /// datagram from [`Endpoint::poll_transmit`], [`Endpoint::take_pending_seal`]
    /// gives what it still needs, and the datagram must not be sent before
    /// [`crate::DeferredSeal::finish`] ran on it. Handshake packets,
    /// probes, pings, routed packets and relayed datagrams are always
    /// sealed here.
    pub fn set_defer_sealing(&mut self, on: bool) {
        self.defer_seal = on;
    }

    /// The encryption the datagram just returned by
    /// [`Endpoint::poll_transmit`] still needs (with
    /// [`Endpoint::set_defer_sealing`]); `None`: it is sealed.
    pub fn take_pending_seal(&mut self) -> Option<crate::session::DeferredSeal> {
        self.pending_seal.take()
    }

    /// Whether the datagram just returned still needs its seal.
    pub fn has_pending_seal(&self) -> bool {
        self.pending_seal.is_some()
    }

    /// The next datagram to send, written into `buf` (at least the path
    /// MTU in size, 1500 is plenty).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        // Not taken: the caller dropped that datagram.
        self.pending_seal = None;
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
                kind: TransmitKind::Session,
            });
        }
        loop {
            // A route end builds its packets behind room for the route
            // header, so wrapping moves nothing (`Routes::wrap`).
            let (t, at) = self.poll_transmit_inner(now, buf)?;
            let Some(id) = route_id_of(&t.destination) else {
                if at > 0 {
                    // A probe of a direct path from a routed session.
                    buf.copy_within(at..at + t.size, 0);
                }
                return Some(t);
            };
            if at == 0 {
                // A probe of a route from a direct session.
                let Some(room) = buf.len().checked_sub(ROUTE_HEADER_LEN) else {
                    continue;
                };
                let n = t.size.min(room);
                buf.copy_within(..n, ROUTE_HEADER_LEN);
            }
            if let Some(t) = self.wrap_for_route(now, id, buf, t.size) {
                return Some(t);
            }
        }
    }

    /// The next datagram and where in `buf` it starts: at 0, or at
    /// [`ROUTE_HEADER_LEN`] for a session whose path is a route.
    fn poll_transmit_inner(&mut self, now: Instant, buf: &mut [u8]) -> Option<(Transmit, usize)> {
        self.queue_opening_packets(now);
        if let Some((dest, pkt, kind)) = self.startup_out.pop_front() {
            let mut at = 0;
            if route_id_of(&dest).is_some() && buf.len() >= ROUTE_HEADER_LEN + pkt.len() {
                at = ROUTE_HEADER_LEN;
            }
            let n = pkt.len().min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&pkt[..n]);
            self.stats.datagrams_sent += 1;
            return Some((
                Transmit {
                    destination: dest,
                    size: n,
                    kind,
                },
                at,
            ));
        }
        let tcr = self.tcr_until.is_some_and(|t| now < t);
        let in_batch = self.receive_batch;
        let count = self.order.len();
        let mut finished = false;
        for i in 0..count {
            let idx = (self.cursor + i) % count;
            let id = self.order[idx];
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if !s.wants_transmit(now, in_batch) {
                finished |= s.is_finished();
                continue;
            }
            s.set_tcr(tcr);
            let at = if route_id_of(&s.dest()).is_some() {
                ROUTE_HEADER_LEN
            } else {
                0
            };
            let Some(out) = buf.get_mut(at..) else {
                continue;
            };
            s.defer_seal = self.defer_seal;
            if let Some((dest, size)) = s.poll_transmit(now, out) {
                let kind = if dest == s.dest() {
                    TransmitKind::Session
                } else {
                    TransmitKind::Probe
                };
                if let Some(seal) = s.pending_seal.take() {
                    // Only a packet on a direct path leaves as built.
                    if at == 0 && kind == TransmitKind::Session {
                        self.pending_seal = Some(seal);
                    } else if let Some(d) = out.get_mut(..size) {
                        seal.finish(d);
                    }
                }
                self.cursor = (idx + 1) % count;
                self.stats.datagrams_sent += 1;
                self.drain_flow_events(id);
                return Some((
                    Transmit {
                        destination: dest,
                        size,
                        kind,
                    },
                    at,
                ));
            }
            finished |= s.is_finished();
        }
        // Every session was visited: reap only if one has finished.
        if finished {
            self.reap();
        }
        None
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
    /// SRTT from the packet timestamps (RFC 7016 3.5.2.1): whole 4 ms
    /// ticks, so 0 or 4 ms on a path far shorter.
    pub srtt: Option<Duration>,
    /// The smoothed time from sending user data to its acknowledgement on
    /// the current path, and when it was last sampled (traffic of more
    /// than one packet at a time; `FlowSet::measured_rtt`).
    pub measured_rtt: Option<(Duration, Instant)>,
    pub ert0: Duration,
    pub cwnd: usize,
    pub congestion: crate::congestion::CongestionStats,
    /// User data bytes in flight (OUTSTANDING_BYTES, RFC 7016 3.6.2).
    pub in_flight: usize,
    /// Bytes queued on the session's sending flows, not yet acknowledged.
    pub queued: usize,
    pub pmtu: usize,
    pub opened: Option<Instant>,
    /// The current key epoch: 0 after the handshake, one more per rekey
    /// (`docs/crypto-profile.md` 7.4).
    pub key_epoch: u32,
    /// The AEAD suite the session's packets are sealed with, once keyed
    /// (`docs/crypto-profile.md` 2).
    pub suite: Option<crate::crypto::AeadSuite>,
    pub stats: crate::session::SessionStats,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
