//! One RTMFP session (RFC 7016 3.5): the opening states (IHELLO_SENT,
//! KEYING_SENT), the OPEN state with its flows, timestamps, congestion
//! control, keepalive, address mobility and path MTU discovery, and the
//! closing states. The endpoint owns sessions and routes datagrams to
//! them; everything here is sans-IO.
//!
//! One struct, [`Session`], its fields private to this module, its `impl`
//! blocks by concern: this file has the state, its one transition function
//! ([`Session::set_state`], which also arms and stops the state's timers),
//! startup bookkeeping and close; `recv.rs` the input of an established
//! session, `send.rs` building datagrams, `align.rs` the padding of their
//! plain text for the cipher, `paths.rs` DESTADDR, mobility and PMTU
//! bounds, `timer.rs` the one timer table.

mod align;
mod paths;
mod recv;
mod rekey;
mod send;
mod timer;

pub use rekey::RekeyConfig;
use rekey::Rekeying;
pub use send::DeferredSeal;

pub(crate) use timer::TimerOutcome;

use align::PlainAlign;
use paths::{pmtu_config, Mobility};
use timer::{Timer, TimerTable, FAR_CLOSE_LINGER_FOR, NEAR_CLOSE_FOR};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::congestion::Congestion;
use crate::crypto::{
    Certificate, InitiatorKeying, PacketOpener, PacketSealer, SessionKeys, SESSION_HEADER_LEN,
    TAG_LEN,
};
use crate::flow::{FlowConfig, FlowSet};
use crate::pmtu::Pmtu;
use crate::rtt::Timestamps;
use crate::wire::packet::MULTIPLEX_HEADER_LEN;
use crate::wire::{Chunk, PacketHeader, PacketMode};
use crate::NodeId;

pub use crate::ids::SessionId;

/// Session states (RFC 7016 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    IHelloSent,
    KeyingSent,
    Open,
    NearClose,
    FarCloseLinger,
    Closed,
    OpenFailed,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::IHelloSent => "ihello-sent",
            SessionState::KeyingSent => "keying-sent",
            SessionState::Open => "open",
            SessionState::NearClose => "near-close",
            SessionState::FarCloseLinger => "far-close-linger",
            SessionState::Closed => "closed",
            SessionState::OpenFailed => "open-failed",
        }
    }
}

/// Which end started the session (RFC 7016 3.5).
pub use crate::crypto::Role;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// We closed it (orderly or abrupt).
    Local,
    /// The far end closed it.
    Remote,
    /// The far end stopped answering keepalive pings.
    Dead,
    /// A new session from the same identity replaced it (RFC 7016
    /// 3.5.1.1.2 step 2.3).
    Replaced,
    /// A send key reached its packet budget or its maximum age without a
    /// successful rekey (`docs/crypto-profile.md` 7.4): the session cannot
    /// send anything more.
    Exhausted,
}

/// Why opening a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// Nothing usable answered before the open timeout (RFC 7016
    /// 3.5.1.1.1: 95 s by default).
    Timeout,
    /// Another session to the same identity exists (RFC 7016 3.5.1.1.1
    /// step 1); use that one.
    Duplicate(SessionId),
    /// The application cancelled it.
    Cancelled,
}

/// Tunables of the session layer.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Ultimate open timeout (RFC 7016 3.5.1.1.1).
    pub open_timeout: Duration,
    /// First IHello/IIKeying retransmission interval; each later interval
    /// is 1.5 times the previous plus 1.5 s (RFC 7016 3.5.1.1.1 "not less
    /// than multiplicative with not less than 1.5 seconds added").
    pub initial_retransmit: Duration,
    /// Keepalive ping interval on an idle session (RFC 7016 3.5.4.1); also
    /// what keeps NAT mappings open.
    pub keepalive: Duration,
    /// Declare the session dead when nothing at all was received for this
    /// long despite keepalives.
    pub dead_after: Duration,
    /// Largest UDP payload we ever send (PMTU discovery upper bound).
    pub max_datagram: usize,
    /// Flow layer limits.
    pub flows: FlowConfig,
    /// When keys are replaced (`docs/crypto-profile.md` 7.4).
    pub rekey: RekeyConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            open_timeout: Duration::from_secs(95),
            initial_retransmit: Duration::from_millis(500),
            keepalive: Duration::from_secs(25),
            dead_after: Duration::from_secs(75),
            max_datagram: 1472,
            flows: FlowConfig::default(),
            rekey: RekeyConfig::default(),
        }
    }
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionStats {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmit_timeouts: u64,
    pub address_changes: u64,
    pub pmtu: usize,
    /// Completed rekeys (`docs/crypto-profile.md` 7.4).
    pub rekeys: u64,
    /// Packet-size checks started because large fragments vanished while
    /// small packets were acknowledged (`pmtu`, size-selective loss).
    pub black_hole_checks: u64,
}

/// A startup candidate address with its own backoff (RFC 7016 3.5.1.1.1).
#[derive(Debug, Clone)]
struct Candidate {
    addr: SocketAddr,
    next: Instant,
    interval: Duration,
}

/// State of an opening session (initiator side).
pub(crate) struct Opening {
    pub epd: Vec<u8>,
    pub tag: [u8; 16],
    candidates: Vec<Candidate>,
    keying: Option<Keying>,
}

/// KEYING_SENT details.
pub(crate) struct Keying {
    pub far_cert: Certificate,
    pub cookie: Vec<u8>,
    pub cookie_changed: bool,
    pub keying: InitiatorKeying,
    /// The encoded IIKeying chunk (retransmitted as is).
    chunk: Vec<u8>,
    next: Instant,
    interval: Duration,
    /// One more address to send the IIKeying to, once, at the next
    /// chance (glare, [`Session::keying_also_to`]).
    also_to: Option<SocketAddr>,
}

impl Keying {
    /// KEYING_SENT state for the IIKeying `chunk`, first sent at `now`.
    pub fn new(
        now: Instant,
        far_cert: Certificate,
        cookie: Vec<u8>,
        keying: InitiatorKeying,
        chunk: Vec<u8>,
        first: Duration,
    ) -> Keying {
        Keying {
            far_cert,
            cookie,
            cookie_changed: false,
            keying,
            chunk,
            next: now,
            interval: first,
            also_to: None,
        }
    }
}

/// What a responder keeps to answer a retransmitted IIKeying (RFC 7016
/// 3.5.1.1.2 step 2.1).
pub(crate) struct ResponderEcho {
    pub far_session_id: u32,
    pub skic: Vec<u8>,
    /// The encoded RIKeying chunk.
    pub rikeying: Vec<u8>,
}

/// First byte of a Ping message: an address-mobility check (3.5.4.2).
const PING_MOBILITY: u8 = 0x4d; // 'M'
/// First byte of a Ping message: a PMTU probe (3.5.4.3).
const PING_PMTU: u8 = 0x50; // 'P'

/// RFC 7016 3.5.1.1.1: at most this many candidate addresses are tried
/// by an opening session (its own and those added from Redirects).
pub const REDIRECT_THRESHOLD: usize = 24;

/// Close Requests in NEARCLOSE are repeated this often (RFC 7016 3.5.5).
const CLOSE_REQUEST_INTERVAL: Duration = Duration::from_secs(5);

/// An RTMFP session.
pub(crate) struct Session {
    id: SessionId,
    role: Role,
    state: SessionState,
    created: Instant,
    opened: Option<Instant>,
    /// DESTADDR (RFC 7016 3.5); a relayed route as its private address
    /// (`crate::path`).
    dest: SocketAddr,
    send_sid: u32,
    far_cert: Option<Certificate>,
    opening: Option<Box<Opening>>,
    responder_echo: Option<ResponderEcho>,
    timers: TimerTable,
    sealer: Option<PacketSealer>,
    /// Leave the encryption of ordinary packets to the caller
    /// (the endpoint takes `pending_seal` after each packet, `DeferredSeal`).
    pub(crate) defer_seal: bool,
    /// The last packet built, still to be sealed (with `defer_seal`).
    pub(crate) pending_seal: Option<DeferredSeal>,
    opener: Option<PacketOpener>,
    rekey: Rekeying,
    ts: Option<Timestamps>,
    cc: Congestion,
    flows: FlowSet,
    pmtu: Pmtu,
    /// Ping Replies owed (message copies) and the address each Ping came
    /// from; bounded.
    ping_replies: VecDeque<(SocketAddr, Vec<u8>)>,
    mobility: Mobility,
    last_recv: Instant,
    ping_outstanding: Option<Instant>,
    send_close_ack: bool,
    /// After an abrupt close the Close Ack still has to go out once.
    final_close_ack: bool,
    pending_pmtu_probe: Option<crate::pmtu::Probe>,
    pending_keepalive: bool,
    /// Retransmission timeouts with loss since the last packet from the
    /// far end: a peer that stopped answering while we had data for it.
    silent_rtos: u32,
    /// A stall was reached and not yet reported (see `take_stalled`).
    stalled: bool,
    /// A stall was reported since the last packet received.
    stall_reported: bool,
    /// Unacknowledged packets with user data, oldest first: the highest
    /// transmission sequence number each carried and when it left (the
    /// early stall check, [`STALL_EARLY_MIN`]); at most
    /// [`STALL_TRACKED_PACKETS`] entries, the last one standing for a run
    /// of packets once they are all taken.
    unacked: VecDeque<(u64, Instant)>,
    /// When the early stall check sent its Ping ([`STALL_PROBE_MIN`]),
    /// until something is received.
    stall_probe: Option<Instant>,
    /// Last packet received from DESTADDR itself.
    last_recv_dest: Instant,
    /// When DESTADDR was last set (opening, a path change): what was sent
    /// before says nothing about the path it is now.
    dest_since: Instant,
    /// TCR flag for outgoing packets (set by the endpoint, RFC 7016 2.2.4).
    tcr_out: bool,
    /// Encoded chunks queued by the endpoint (FIHello), sent in order.
    control_out: VecDeque<Vec<u8>>,
    stats: SessionStats,
    cfg: SessionConfig,
}

/// The far end's mode: packets we accept carry the other role's mark.
fn far_mode(role: Role) -> PacketMode {
    match role {
        Role::Initiator => PacketMode::Responder,
        Role::Responder => PacketMode::Initiator,
    }
}

fn near_mode(role: Role) -> PacketMode {
    match role {
        Role::Initiator => PacketMode::Initiator,
        Role::Responder => PacketMode::Responder,
    }
}

/// Retransmission timeouts in a row, with nothing received, after which the
/// path counts as stalled ([`Session::take_stalled`]): the application may
/// move the session to another route before it is declared dead. One: a
/// needless move to a working standby route costs nothing, a late one
/// stacks up the inner TCP connections' own back-off.
pub(crate) const STALL_AFTER_SILENT_RTOS: u32 = 1;
/// ... and with nothing at all received for this long (an RTO on a path
/// that still delivers acknowledgements is loss, not a stall).
pub(crate) const STALL_MIN_SILENCE: Duration = Duration::from_millis(200);

/// The early stall check ([`Timer::Stall`]): a path counts as stalled
/// when two packets with user data are unacknowledged and nothing came
/// back for four smoothed round trips (at least this long) since the
/// second of them left. A live far end acknowledges every second packet
/// with data at once (RFC 7016 3.6.3.2), so the silence means the path,
/// not a delayed acknowledgement (a lone packet may wait 200 ms for one:
/// that case is left to the retransmission timeout). It comes before the
/// timeout, whose floor (250 ms, 3.5.2.1) is later than the inner TCP
/// connections' own first retransmission (200 ms): moved by then, their
/// first retransmission already takes the new path.
pub(crate) const STALL_EARLY_MIN: Duration = Duration::from_millis(100);
/// On a relayed route, one packet with user data unanswered for four
/// smoothed round trips, at least this long, draws a Ping (answered at
/// once, unlike data, whose acknowledgement may wait 200 ms); the path
/// counts as stalled when the Ping goes unanswered as long again. A
/// session whose last packets before the relay died were all answered but
/// one (the inner TCP's acknowledgement going back, say) is noticed in
/// about 100 ms instead of at the retransmission timeout.
pub(crate) const STALL_PROBE_MIN: Duration = Duration::from_millis(50);
/// Entries for unacknowledged packets with user data kept for the early
/// stall check. Once they are all taken, the last one stands for every
/// packet sent since (the newest one's sequence number, the oldest one's
/// time): every packet in flight stays covered, so acknowledgements that
/// clear the older entries do not leave the rest untracked, and a group's
/// time is never later than its packets'.
pub(crate) const STALL_TRACKED_PACKETS: usize = 16;

/// Passive address mobility never moves a session from a direct path that
/// delivered a packet this recently onto a relayed route: a late packet
/// from a route being replaced must not pull the session back onto it.
pub(super) const DIRECT_PREFERRED_FOR: Duration = Duration::from_secs(2);

/// A session whose data went unacknowledged through this many consecutive
/// retransmission timeouts (ERT0 backing off from 250 ms: about 3 s), with
/// nothing at all received for [`DEAD_AFTER_SILENT_MIN`], is dead: the far
/// end stopped. Idle sessions are covered by keepalives and `dead_after`.
pub(crate) const DEAD_AFTER_SILENT_RTOS: u32 = 5;
pub(crate) const DEAD_AFTER_SILENT_MIN: Duration = Duration::from_secs(4);

/// Bytes before the plain packet in a session datagram.
pub(crate) const PLAIN_OFFSET: usize = MULTIPLEX_HEADER_LEN + SESSION_HEADER_LEN;
/// Bytes a session datagram adds around the plain packet.
pub(crate) const SESSION_DATAGRAM_OVERHEAD: usize = PLAIN_OFFSET + TAG_LEN;

/// Bytes for chunks in a session datagram of `size` bytes (UDP payload)
/// whose plain text is rounded by `align`: what is left after the
/// multiplex and session headers, the tag, the rounding and a maximum-size
/// packet header. Flow fragments are sized against it (RFC 7016 3.6.2.2:
/// "a maximum-size common header"); [`Session::build`] never offers less
/// room than this to the chunks of a packet. Unrounded (`PlainAlign::NONE`)
/// it is the largest fragment; rounded, the size the fragments of a
/// message cut in several are cut to, so that a full one's packet is
/// padded to whole blocks.
pub(crate) const fn chunk_space(size: usize, align: PlainAlign) -> usize {
    align
        .room(size.saturating_sub(SESSION_DATAGRAM_OVERHEAD))
        .saturating_sub(PacketHeader::MAX_LEN)
}

/// [`chunk_space`] of the base size, unrounded: reliable fragments keep
/// their size for retransmission and fit any path (RFC 7016 3.6.2.2).
pub(crate) const BASE_CHUNK_SPACE: usize = chunk_space(crate::pmtu::BASE_SIZE, PlainAlign::NONE);

impl Session {
    /// An initiator session in IHELLO_SENT towards `candidates` (at least
    /// one).
    pub fn new_initiator(
        id: SessionId,
        now: Instant,
        epd: Vec<u8>,
        tag: [u8; 16],
        candidates: &[SocketAddr],
        mob_secret: [u8; 32],
        cfg: SessionConfig,
    ) -> Session {
        let mut s = Session::blank(id, Role::Initiator, now, candidates[0], mob_secret, cfg);
        s.opening = Some(Box::new(Opening {
            epd,
            tag,
            candidates: Vec::new(),
            keying: None,
        }));
        s.set_state(now, SessionState::IHelloSent);
        s.timers.set(Timer::Open, now + s.cfg.open_timeout);
        for &a in candidates {
            s.add_candidate(now, a);
        }
        s
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new_responder(
        id: SessionId,
        now: Instant,
        dest: SocketAddr,
        send_sid: u32,
        far_cert: Certificate,
        keys: SessionKeys,
        echo: ResponderEcho,
        mob_secret: [u8; 32],
        cfg: SessionConfig,
    ) -> Session {
        let mut s = Session::blank(id, Role::Responder, now, dest, mob_secret, cfg);
        s.far_cert = Some(far_cert);
        s.responder_echo = Some(echo);
        s.enter_open(now, send_sid, keys);
        s
    }

    fn blank(
        id: SessionId,
        role: Role,
        now: Instant,
        dest: SocketAddr,
        mob_secret: [u8; 32],
        cfg: SessionConfig,
    ) -> Session {
        let pmtu = Pmtu::new(now, pmtu_config(dest, cfg.max_datagram));
        let mss = pmtu.safe_size().saturating_sub(SESSION_DATAGRAM_OVERHEAD);
        // Reliable fragments must fit every path (FlowConfig::max_chunk_space).
        let mut flow_cfg = cfg.flows.clone();
        flow_cfg.max_chunk_space = flow_cfg.max_chunk_space.min(BASE_CHUNK_SPACE);
        let mut flows = FlowSet::new(flow_cfg);
        let space = chunk_space(pmtu.safe_size(), PlainAlign::NONE);
        flows.set_path_chunk_space(space, space);
        Session {
            id,
            role,
            state: SessionState::IHelloSent,
            created: now,
            opened: None,
            dest,
            send_sid: 0,
            far_cert: None,
            opening: None,
            responder_echo: None,
            timers: TimerTable::default(),
            sealer: None,
            defer_seal: false,
            pending_seal: None,
            opener: None,
            rekey: Rekeying::new(now, cfg.rekey.clone()),
            ts: None,
            cc: Congestion::new(mss),
            flows,
            pmtu,
            ping_replies: VecDeque::new(),
            mobility: Mobility {
                secret: mob_secret,
                tx_ts: None,
                rx_ts: 0,
                pending: None,
            },
            last_recv: now,
            ping_outstanding: None,
            send_close_ack: false,
            final_close_ack: false,
            pending_pmtu_probe: None,
            pending_keepalive: false,
            silent_rtos: 0,
            stalled: false,
            stall_reported: false,
            unacked: VecDeque::with_capacity(STALL_TRACKED_PACKETS),
            stall_probe: None,
            last_recv_dest: now,
            dest_since: now,
            tcr_out: false,
            control_out: VecDeque::new(),
            stats: SessionStats::default(),
            cfg,
        }
    }

    /// The session has opened (either role), sending to the far end's
    /// session id `send_sid` with the session keys.
    pub fn enter_open(&mut self, now: Instant, send_sid: u32, keys: SessionKeys) {
        let (sealer, opener) = keys.ciphers();
        self.send_sid = send_sid;
        self.opened = Some(now);
        self.sealer = Some(sealer);
        self.opener = Some(opener);
        // The suite decides how plain texts are rounded (`align`).
        self.pmtu_changed();
        self.start_epochs(now, keys.chain_key());
        self.ts = Some(Timestamps::new(now));
        self.last_recv = now;
        self.opening = None;
        self.set_state(now, SessionState::Open);
        // The initiator's first packet under the new keys proves to the
        // responder that it holds them (the responder announces the
        // session only then, so a replayed IIKeying can neither replace
        // nor duplicate a live session, `endpoint/handshake.rs`): send one
        // now even when the application has nothing to say yet, and once
        // more a second later if nothing else went.
        if self.role == Role::Initiator {
            self.pending_keepalive = true;
            self.timers
                .set(Timer::Keepalive, now + Duration::from_secs(1));
        }
    }

    /// An RHello from `from` answered our IHello (RFC 7016 3.5.1.1.1):
    /// KEYING_SENT towards it, with the IIKeying in `keying` due now.
    pub fn enter_keying(&mut self, now: Instant, from: SocketAddr, keying: Keying) {
        self.set_dest(now, from);
        self.far_cert = Some(keying.far_cert.clone());
        if let Some(o) = self.opening.as_mut() {
            o.keying = Some(keying);
        }
        self.set_state(now, SessionState::KeyingSent);
    }

    /// The one state transition: records the state and arms the timers
    /// of the state entered (stopping those of the state left).
    fn set_state(&mut self, now: Instant, state: SessionState) {
        self.state = state;
        let open_deadline = self.timers.get(Timer::Open);
        self.timers.stop_all();
        match state {
            SessionState::IHelloSent | SessionState::KeyingSent => {
                if let Some(t) = open_deadline {
                    self.timers.set(Timer::Open, t);
                }
                self.arm_startup();
            }
            SessionState::Open => {
                self.timers.set(Timer::Keepalive, now + self.cfg.keepalive);
                self.arm_idle();
                self.arm_rekey();
            }
            SessionState::NearClose => {
                self.timers.set(Timer::CloseRequest, now);
                self.timers.set(Timer::Linger, now + NEAR_CLOSE_FOR);
            }
            SessionState::FarCloseLinger => {
                self.timers.set(Timer::Linger, now + FAR_CLOSE_LINGER_FOR);
            }
            SessionState::Closed | SessionState::OpenFailed => {}
        }
    }

    /// Arm [`Timer::Startup`] at the next IHello or IIKeying due.
    fn arm_startup(&mut self) {
        let next = self.opening.as_ref().and_then(|o| match &o.keying {
            Some(k) => Some(k.next),
            None => o.candidates.iter().map(|c| c.next).min(),
        });
        match next {
            Some(t) => self.timers.set(Timer::Startup, t),
            None => self.timers.stop(Timer::Startup),
        }
    }

    /// Add a candidate address to an opening session (RFC 7016
    /// 3.5.1.1.1), at most [`REDIRECT_THRESHOLD`] of them. False if it was
    /// not added (known already, or too many).
    pub fn add_candidate(&mut self, now: Instant, addr: SocketAddr) -> bool {
        let first = self.cfg.initial_retransmit;
        let Some(o) = self.opening.as_mut() else {
            return false;
        };
        if o.candidates.len() >= REDIRECT_THRESHOLD || o.candidates.iter().any(|c| c.addr == addr) {
            return false;
        }
        o.candidates.push(Candidate {
            addr,
            next: now,
            interval: first,
        });
        self.arm_startup();
        true
    }

    /// The startup chunks due now (RFC 7016 3.5.1.1.1), each with its
    /// destination and whether it is an IHello (padded by the endpoint),
    /// appended to `out`; their retransmissions are scheduled with the
    /// backoff of [`next_interval`].
    pub fn take_due_startup(&mut self, now: Instant, out: &mut Vec<(SocketAddr, Vec<u8>, bool)>) {
        let dest = self.dest;
        let Some(o) = self.opening.as_mut() else {
            return;
        };
        match self.state {
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
                        out.push((c.addr, bytes.clone(), true));
                        c.next = now + c.interval;
                        c.interval = next_interval(c.interval);
                    }
                }
            }
            SessionState::KeyingSent => {
                if let Some(k) = o.keying.as_mut() {
                    if let Some(a) = k.also_to.take() {
                        out.push((a, k.chunk.clone(), false));
                    }
                    if k.next <= now {
                        out.push((dest, k.chunk.clone(), false));
                        k.next = now + k.interval;
                        k.interval = next_interval(k.interval);
                    }
                }
            }
            _ => {}
        }
        self.arm_startup();
    }

    /// KEYING_SENT: the far end's IIKeying came from `from` while ours
    /// prevails in glare (RFC 7016 3.5.1.3). If `from` is not DESTADDR,
    /// send our IIKeying there too, once and now (the cookie echo and the
    /// signature prove the far end listens there; the path to DESTADDR
    /// may have died since its RHello came), so the far end learns it
    /// lost. DESTADDR stays: a path that died is found and left by the
    /// open session's own means.
    pub fn keying_also_to(&mut self, now: Instant, from: SocketAddr) {
        if self.state != SessionState::KeyingSent || from == self.dest {
            return;
        }
        if let Some(k) = self.opening.as_mut().and_then(|o| o.keying.as_mut()) {
            k.also_to = Some(from);
            self.timers.set(Timer::Startup, now);
        }
    }

    /// KEYING_SENT: the IIKeying changed (a Cookie Change, RFC 7016
    /// 3.5.1.2); send `chunk` now.
    pub fn resend_iikeying(&mut self, now: Instant, chunk: Vec<u8>) {
        if let Some(k) = self.opening.as_mut().and_then(|o| o.keying.as_mut()) {
            k.chunk = chunk;
            k.next = now;
        }
        self.arm_startup();
    }

    // ----- getters --------------------------------------------------------

    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn opened(&self) -> Option<Instant> {
        self.opened
    }

    /// DESTADDR (endpoint-internal form, see `crate::path`).
    pub fn dest(&self) -> SocketAddr {
        self.dest
    }

    pub fn far_cert(&self) -> Option<&Certificate> {
        self.far_cert.as_ref()
    }

    /// IHELLO_SENT / KEYING_SENT details.
    pub fn opening(&self) -> Option<&Opening> {
        self.opening.as_deref()
    }

    /// KEYING_SENT details.
    pub fn keying(&self) -> Option<&Keying> {
        self.opening.as_ref()?.keying.as_ref()
    }

    /// KEYING_SENT details, to update after a Cookie Change (then
    /// [`Session::resend_iikeying`]).
    pub fn keying_mut(&mut self) -> Option<&mut Keying> {
        self.opening.as_mut()?.keying.as_mut()
    }

    pub fn responder_echo(&self) -> Option<&ResponderEcho> {
        self.responder_echo.as_ref()
    }

    pub fn flows(&self) -> &FlowSet {
        &self.flows
    }

    /// The flow set, for the endpoint's flow commands (open, send, close,
    /// reject, recycle) and events.
    pub fn flows_mut(&mut self) -> &mut FlowSet {
        &mut self.flows
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            rekeys: self.rekey.completed,
            ..self.stats
        }
    }

    pub fn peer(&self) -> Option<NodeId> {
        self.far_cert.as_ref().map(|c| c.node_id())
    }

    pub fn is_open(&self) -> bool {
        self.state == SessionState::Open
    }

    pub fn is_opening(&self) -> bool {
        matches!(
            self.state,
            SessionState::IHelloSent | SessionState::KeyingSent
        )
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, SessionState::Closed | SessionState::OpenFailed)
            && !self.final_close_ack
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.ts.as_ref().and_then(|t| t.rtt.srtt())
    }

    pub fn ert0(&self) -> Duration {
        self.ts
            .as_ref()
            .map(|t| t.rtt.ert0())
            .unwrap_or(crate::rtt::INITIAL_ERT0)
    }

    pub fn cwnd(&self) -> usize {
        self.cc.window()
    }

    /// Bytes of frames (NoRetransmit fragments) lost so far.
    pub fn frame_lost_bytes(&self) -> u64 {
        self.cc.frame_lost_bytes()
    }

    /// Congestion controller counters (`docs/dataplane.md`, "Loss").
    pub fn congestion_stats(&self) -> crate::congestion::CongestionStats {
        self.cc.stats()
    }

    pub fn pmtu(&self) -> usize {
        self.pmtu.safe_size()
    }

    /// Payload bytes available for one flow message fragment stream: used
    /// to size what the application may send as one datagram-sized message.
    pub fn max_plain(&self) -> usize {
        self.pmtu
            .safe_size()
            .saturating_sub(SESSION_DATAGRAM_OVERHEAD)
    }

    /// How this session rounds its plain texts now ([`align`]): by the
    /// negotiated suite and the kind of path DESTADDR is.
    pub(crate) fn plain_align(&self) -> PlainAlign {
        PlainAlign::new(self.sealer.as_ref().map(PacketSealer::suite), &self.dest)
    }

    /// The path MTU changed (a probe succeeded, black-hole detection fell
    /// back to the base size, or DESTADDR moved to another kind of path)
    /// or the plain texts' rounding did (the session was keyed):
    /// congestion control's segment size and the flows' fragment size
    /// follow it (RFC 7016 3.5.4.3, 3.6.2.2).
    fn pmtu_changed(&mut self) {
        self.cc.set_mss(self.max_plain());
        let size = self.pmtu.safe_size();
        self.flows.set_path_chunk_space(
            chunk_space(size, PlainAlign::NONE),
            chunk_space(size, self.plain_align()),
        );
    }

    // ----- commands -----------------------------------------------------

    /// Orderly close (RFC 7016 3.5.5): NEARCLOSE, Close Request every 5 s.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            SessionState::Open => self.set_state(now, SessionState::NearClose),
            SessionState::IHelloSent | SessionState::KeyingSent => {
                self.set_state(now, SessionState::OpenFailed)
            }
            _ => {}
        }
    }

    /// Abrupt close: send a Close Ack, then CLOSED.
    pub fn close_abruptly(&mut self, now: Instant) {
        match self.state {
            SessionState::Open | SessionState::NearClose | SessionState::FarCloseLinger => {
                self.final_close_ack = true;
                self.set_state(now, SessionState::Closed);
            }
            SessionState::IHelloSent | SessionState::KeyingSent => {
                self.set_state(now, SessionState::OpenFailed)
            }
            _ => {}
        }
    }
}

/// The backoff of RFC 7016 3.5.1.1.1: multiplicative, plus at least 1.5 s.
pub(crate) fn next_interval(d: Duration) -> Duration {
    (d.mul_f64(1.5) + Duration::from_millis(1500)).min(Duration::from_secs(30))
}
