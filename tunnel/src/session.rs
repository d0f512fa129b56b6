//! One RTMFP session (RFC 7016 3.5): the opening states (IHELLO_SENT,
//! KEYING_SENT), the OPEN state with its flows, timestamps, congestion
//! control, keepalive, address mobility and path MTU discovery, and the
//! closing states. The [`crate::endpoint::Endpoint`] owns sessions and
//! routes datagrams to them; everything here is sans-IO.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::congestion::Congestion;
use crate::crypto::{
    self, Certificate, InitiatorKeying, PacketOpener, PacketSealer, SESSION_HEADER_LEN, TAG_LEN,
};
use crate::flow::{ChunkSink, FlowConfig, FlowSet};
use crate::path::is_route_addr;
use crate::pmtu::{Pmtu, PmtuConfig};
use crate::relay;
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
    /// Our packet sequence space ran out.
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
}

/// A startup candidate address with its own backoff (RFC 7016 3.5.1.1.1).
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub addr: SocketAddr,
    pub next: Instant,
    pub interval: Duration,
}

/// State of an opening session (initiator side).
pub(crate) struct Opening {
    pub epd: Vec<u8>,
    pub tag: [u8; 16],
    pub candidates: Vec<Candidate>,
    pub started: Instant,
    pub keying: Option<Keying>,
}

/// KEYING_SENT details.
pub(crate) struct Keying {
    pub far_cert: Certificate,
    pub cookie: Vec<u8>,
    pub cookie_changed: bool,
    pub keying: InitiatorKeying,
    /// The encoded IIKeying chunk (retransmitted as is).
    pub chunk: Vec<u8>,
    pub next: Instant,
    pub interval: Duration,
}

/// What a responder keeps to answer a retransmitted IIKeying (RFC 7016
/// 3.5.1.1.2 step 2.1).
pub(crate) struct ResponderEcho {
    pub far_session_id: u32,
    pub skic: Vec<u8>,
    /// The encoded RIKeying chunk.
    pub rikeying: Vec<u8>,
}

/// Address-mobility verification (RFC 7016 3.5.4.2).
struct Mobility {
    secret: [u8; 32],
    tx_ts: Option<Instant>,
    rx_ts: u64,
    /// A check ping to send to this address.
    pending: Option<SocketAddr>,
}

const PING_MOBILITY: u8 = 0x4d; // 'M'
const PING_PMTU: u8 = 0x50; // 'P'

/// An RTMFP session.
pub(crate) struct Session {
    pub id: SessionId,
    pub role: Role,
    pub state: SessionState,
    pub state_since: Instant,
    pub created: Instant,
    pub opened: Option<Instant>,
    pub dest: SocketAddr,
    pub send_sid: u32,
    pub far_cert: Option<Certificate>,
    pub opening: Option<Box<Opening>>,
    pub responder_echo: Option<ResponderEcho>,
    sealer: Option<PacketSealer>,
    opener: Option<PacketOpener>,
    ts: Option<Timestamps>,
    cc: Congestion,
    pub flows: FlowSet,
    pmtu: Pmtu,
    /// Ping Replies owed (message copies) and the address each Ping came
    /// from; bounded.
    ping_replies: VecDeque<(SocketAddr, Vec<u8>)>,
    mobility: Mobility,
    keepalive_due: Instant,
    last_recv: Instant,
    ping_outstanding: Option<Instant>,
    rto_deadline: Option<Instant>,
    close_req_due: Option<Instant>,
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
    /// Last packet received from DESTADDR itself.
    last_recv_dest: Instant,
    /// TCR flag for outgoing packets (set by the endpoint, RFC 7016 2.2.4).
    tcr_out: bool,
    /// Encoded chunks queued by the endpoint (FIHello), sent in order.
    control_out: VecDeque<Vec<u8>>,
    pub stats: SessionStats,
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

/// PMTU discovery bounds for a path to `dest`. A relayed route
/// ([`crate::Path::Route`]) adds [`crate::relay::ROUTE_OVERHEAD`]
/// bytes on every hop, whose underlay may be IPv4 or IPv6.
fn pmtu_config(dest: SocketAddr, max_datagram: usize) -> PmtuConfig {
    let base = if is_route_addr(&dest) {
        PmtuConfig {
            max: crate::pmtu::MAX_IPV6_UDP - relay::ROUTE_OVERHEAD,
            ..PmtuConfig::ipv6()
        }
    } else if dest.is_ipv4() {
        PmtuConfig::ipv4()
    } else {
        PmtuConfig::ipv6()
    };
    let max = max_datagram.max(crate::pmtu::BASE_SIZE);
    PmtuConfig {
        max: if is_route_addr(&dest) {
            max.min(base.max)
        } else {
            max
        },
        ..base
    }
}

/// What kind of path an address is, for PMTU purposes.
fn path_class(dest: &SocketAddr) -> u8 {
    if is_route_addr(dest) {
        2
    } else if dest.is_ipv4() {
        0
    } else {
        1
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

/// Passive address mobility never moves a session from a direct path that
/// delivered a packet this recently onto a relayed route: a late packet
/// from a route being replaced must not pull the session back onto it.
const DIRECT_PREFERRED_FOR: Duration = Duration::from_secs(2);

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

/// A [`ChunkSink`] writing chunks straight into the datagram buffer.
pub(crate) struct BufSink<'a> {
    pub buf: &'a mut [u8],
    pub pos: usize,
    pub end: usize,
    pub time_critical: bool,
}

impl ChunkSink for BufSink<'_> {
    fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    fn push(&mut self, chunk: &Chunk<'_>) -> bool {
        let Some(out) = self.buf.get_mut(self.pos..self.end) else {
            return false;
        };
        match chunk.emit(out) {
            Ok(n) => {
                self.pos += n;
                true
            }
            Err(_) => false,
        }
    }

    fn mark_time_critical(&mut self) {
        self.time_critical = true;
    }
}

/// What the endpoint should do after a session processed a packet.
#[derive(Debug, Default)]
pub(crate) struct RecvOutcome {
    /// FIHello chunks to act on: (epd, reply address, tag) copies.
    pub fihellos: Vec<(Vec<u8>, SocketAddr, Vec<u8>)>,
    pub closed: Option<CloseReason>,
}

impl Session {
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
        s.state = SessionState::IHelloSent;
        let mut opening = Opening {
            epd,
            tag,
            candidates: Vec::new(),
            started: now,
            keying: None,
        };
        for &a in candidates {
            add_candidate(&mut opening, now, a, s.cfg.initial_retransmit);
        }
        s.opening = Some(Box::new(opening));
        s
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new_responder(
        id: SessionId,
        now: Instant,
        dest: SocketAddr,
        send_sid: u32,
        far_cert: Certificate,
        sealer: PacketSealer,
        opener: PacketOpener,
        echo: ResponderEcho,
        mob_secret: [u8; 32],
        cfg: SessionConfig,
    ) -> Session {
        let mut s = Session::blank(id, Role::Responder, now, dest, mob_secret, cfg);
        s.send_sid = send_sid;
        s.far_cert = Some(far_cert);
        s.responder_echo = Some(echo);
        s.enter_open(now, sealer, opener);
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
        Session {
            id,
            role,
            state: SessionState::IHelloSent,
            state_since: now,
            created: now,
            opened: None,
            dest,
            send_sid: 0,
            far_cert: None,
            opening: None,
            responder_echo: None,
            sealer: None,
            opener: None,
            ts: None,
            cc: Congestion::new(mss),
            flows: FlowSet::new(cfg.flows.clone()),
            pmtu,
            ping_replies: VecDeque::new(),
            mobility: Mobility {
                secret: mob_secret,
                tx_ts: None,
                rx_ts: 0,
                pending: None,
            },
            keepalive_due: now + cfg.keepalive,
            last_recv: now,
            ping_outstanding: None,
            rto_deadline: None,
            close_req_due: None,
            send_close_ack: false,
            final_close_ack: false,
            pending_pmtu_probe: None,
            pending_keepalive: false,
            silent_rtos: 0,
            stalled: false,
            stall_reported: false,
            last_recv_dest: now,
            tcr_out: false,
            control_out: VecDeque::new(),
            stats: SessionStats::default(),
            cfg,
        }
    }

    /// The session has opened (either role).
    pub fn enter_open(&mut self, now: Instant, sealer: PacketSealer, opener: PacketOpener) {
        self.state = SessionState::Open;
        self.state_since = now;
        self.opened = Some(now);
        self.sealer = Some(sealer);
        self.opener = Some(opener);
        self.ts = Some(Timestamps::new(now));
        self.keepalive_due = now + self.cfg.keepalive;
        self.last_recv = now;
        self.opening = None;
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

    // ----- input --------------------------------------------------------

    /// Decrypt a datagram addressed to this OPEN/closing session in place.
    /// Returns the plain packet range, or None if it does not authenticate.
    pub fn open_packet(&mut self, encrypted: &mut [u8]) -> Option<std::ops::Range<usize>> {
        self.opener.as_mut()?.open(encrypted).ok()
    }

    /// Process a decrypted packet of an established session (RFC 7016
    /// 3.5.2 - 3.5.5, 3.6). `from` is the packet's source address.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &PacketHeader,
        body: crate::wire::ChunkIter<'_>,
        datagram_len: usize,
    ) -> RecvOutcome {
        let mut out = RecvOutcome::default();
        if header.mode != far_mode(self.role) {
            // RFC 7016 2.2.4: ignore packets carrying our own mark.
            return out;
        }
        if !matches!(
            self.state,
            SessionState::Open | SessionState::NearClose | SessionState::FarCloseLinger
        ) {
            return out;
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += datagram_len as u64;
        self.last_recv = now;
        if from == self.dest {
            self.last_recv_dest = now;
        }
        self.silent_rtos = 0;
        self.stalled = false;
        self.stall_reported = false;
        self.ping_outstanding = None;
        if let Some(ts) = self.ts.as_mut() {
            ts.on_packet_received(now, header.timestamp, header.timestamp_echo);
            let ert0 = ts.rtt.ert0();
            self.cc.set_rto(ert0);
            self.flows.set_ert0(ert0);
        }
        self.cc
            .on_packet_received(now, header.time_critical_reverse);
        let open = self.state == SessionState::Open;
        if open {
            self.flows.begin_packet(now);
        }
        for chunk in body {
            let Ok(chunk) = chunk else { break };
            match chunk {
                Chunk::Ping { message } if self.ping_replies.len() < 8 && message.len() <= 1400 => {
                    self.ping_replies.push_back((from, message.to_vec()));
                }
                Chunk::PingReply { message_echo } => {
                    self.handle_ping_reply(now, from, message_echo)
                }
                Chunk::Close => {
                    // RFC 7016 3.5.5.
                    self.send_close_ack = true;
                    if self.state == SessionState::Open {
                        self.set_state(now, SessionState::FarCloseLinger);
                        out.closed = Some(CloseReason::Remote);
                    }
                }
                Chunk::CloseAck => {
                    let was_open = self.state == SessionState::Open;
                    self.set_state(now, SessionState::Closed);
                    self.final_close_ack = false;
                    if was_open {
                        out.closed = Some(CloseReason::Remote);
                    }
                    return out;
                }
                Chunk::FIHello {
                    epd,
                    reply_address,
                    tag,
                } if open && out.fihellos.len() < 4 => {
                    out.fihellos
                        .push((epd.to_vec(), reply_address.addr, tag.to_vec()));
                }
                Chunk::UserData(_)
                | Chunk::NextUserData(_)
                | Chunk::BitmapAck { .. }
                | Chunk::RangeAck { .. }
                | Chunk::BufferProbe { .. }
                | Chunk::FlowException { .. }
                    if open =>
                {
                    self.flows.handle_chunk(now, &chunk);
                }
                _ => {}
            }
        }
        if open {
            self.flows.end_packet(now);
            self.apply_ack_feedback(now);
        }
        // RFC 7016 3.5.4.2: a valid packet from an address other than
        // DESTADDR starts a verification, never an immediate move.
        let sticky = is_route_addr(&from)
            && !is_route_addr(&self.dest)
            && now.saturating_duration_since(self.last_recv_dest) < DIRECT_PREFERRED_FOR;
        if self.state == SessionState::Open && from != self.dest && !sticky {
            let due = self
                .mobility
                .tx_ts
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if due {
                self.mobility.tx_ts = Some(now);
                self.mobility.pending = Some(from);
            }
        }
        out
    }

    fn apply_ack_feedback(&mut self, now: Instant) {
        let s = self.flows.take_ack_summary();
        if s.acks_received > 0 {
            let before = self.flows.outstanding_bytes() + s.acked_bytes + s.lost_bytes;
            self.cc.on_ack(now, s.acked_bytes, before);
            if self.flows.outstanding_bytes() == 0 {
                self.rto_deadline = None;
            } else {
                self.rto_deadline = Some(now + self.ert0());
            }
        }
        if s.any_nack_loss {
            // The lost fragment left at least a round trip ago.
            let rtt = self.srtt().unwrap_or(self.ert0());
            let sent_at = now.checked_sub(rtt).unwrap_or(now);
            self.cc.on_nack_loss(now, s.lost_bytes, sent_at);
        }
    }

    fn handle_ping_reply(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) {
        match msg.first() {
            Some(&PING_MOBILITY) if msg.len() == 1 + 8 + crypto::MOBILITY_MAC_LEN => {
                let ts = u64::from_be_bytes(msg[1..9].try_into().unwrap_or([0; 8]));
                let now_ms = self.ms_since_created(now);
                // Not more than 132 s old, newer than the last accepted.
                if now_ms.saturating_sub(ts) > 132_000 || ts <= self.mobility.rx_ts {
                    return;
                }
                if crypto::mobility_check(&self.mobility.secret, ts, from, &msg[9..]) {
                    self.mobility.rx_ts = ts;
                    if from != self.dest {
                        self.set_dest(now, from);
                    }
                }
            }
            Some(&PING_PMTU) if msg.len() == 5 => {
                let id = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]);
                if self.pmtu.on_probe_acked(now, id).is_some() {
                    self.cc.set_mss(self.max_plain());
                }
            }
            _ => {
                // Keepalive reply: live bidirectional connectivity.
            }
        }
    }

    fn ms_since_created(&self, now: Instant) -> u64 {
        // +1 so that the first check (at creation) is > the initial rx_ts 0.
        now.saturating_duration_since(self.created).as_millis() as u64 + 1
    }

    fn set_state(&mut self, now: Instant, s: SessionState) {
        self.state = s;
        self.state_since = now;
        match s {
            SessionState::NearClose => self.close_req_due = Some(now),
            _ => self.close_req_due = None,
        }
    }

    // ----- commands -----------------------------------------------------

    /// Send the address-mobility check Ping (RFC 7016 3.5.4.2) to `addr`
    /// with the next transmission, regardless of the once-a-second limit:
    /// a verified Ping Reply from `addr` then moves DESTADDR there. Used
    /// when a third party (a forwarder, RFC 7016 3.5.1.5) reports that the
    /// far end is now reachable at `addr`. False unless the session is OPEN.
    pub fn probe_path(&mut self, now: Instant, addr: SocketAddr) -> bool {
        if self.state != SessionState::Open {
            return false;
        }
        self.mobility.tx_ts = Some(now);
        self.mobility.pending = Some(addr);
        true
    }

    /// Change DESTADDR. A change of path kind (IPv4, IPv6, relayed route)
    /// restarts PMTU discovery from its base size for the new path.
    pub fn set_dest(&mut self, now: Instant, addr: SocketAddr) {
        if addr == self.dest {
            return;
        }
        if path_class(&addr) != path_class(&self.dest) {
            self.pmtu = Pmtu::new(now, pmtu_config(addr, self.cfg.max_datagram));
            self.pending_pmtu_probe = None;
            self.cc.set_mss(self.max_plain());
        }
        self.dest = addr;
        self.last_recv_dest = now;
        self.stats.address_changes += 1;
        self.flows.reacknowledge();
    }

    /// Move the session onto the path `addr` at once, without the
    /// verification of RFC 7016 3.5.4.2: for a path this end set up itself
    /// (a relayed route through members it authenticated). Anything in
    /// flight on the old path is retransmitted on the new one and a Ping
    /// goes out so the far end sees the new path. False unless OPEN.
    pub fn migrate(&mut self, now: Instant, addr: SocketAddr) -> bool {
        if self.state != SessionState::Open {
            return false;
        }
        self.set_dest(now, addr);
        self.mobility.pending = None;
        self.silent_rtos = 0;
        self.stalled = false;
        self.stall_reported = false;
        if let Some(ts) = self.ts.as_mut() {
            ts.rtt.reset_backoff();
        }
        if self.flows.outstanding_bytes() > 0 {
            // What was in flight on the old path is lost: resend it now
            // (RFC 7016 3.6.2.6 as for a timeout, without counting one
            // against the new path).
            self.flows.on_retransmit_timeout(now);
            self.rto_deadline = Some(now + self.ert0());
        }
        self.ping_outstanding = None;
        self.keepalive_due = now;
        true
    }

    /// A sealed datagram holding one Ping, for probing paths the session
    /// does not use (birthday punching of a relayed session, `punch`): the
    /// far end answers on the path it arrived by and, as for any packet
    /// from a new address, starts the mobility check of RFC 7016 3.5.4.2.
    /// The same bytes may go to many addresses; the far end accepts one
    /// copy (replay window). `None` unless OPEN.
    pub fn probe_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.state != SessionState::Open {
            return None;
        }
        self.build(now, buf, self.dest, Content::Ping)
            .map(|(_, n)| n)
    }

    /// Whether the path stalled since the last call: data went unanswered
    /// through [`STALL_AFTER_SILENT_RTOS`] timeouts with nothing received.
    pub fn take_stalled(&mut self) -> bool {
        std::mem::take(&mut self.stalled)
    }

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

    // ----- timers -------------------------------------------------------

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        match self.state {
            SessionState::IHelloSent | SessionState::KeyingSent => {
                if let Some(o) = &self.opening {
                    at(Some(o.started + self.cfg.open_timeout));
                    if let Some(k) = &o.keying {
                        at(Some(k.next));
                    } else {
                        for c in &o.candidates {
                            at(Some(c.next));
                        }
                    }
                }
            }
            SessionState::Open => {
                at(Some(self.keepalive_due));
                at(Some(self.last_recv + self.cfg.dead_after));
                at(self.rto_deadline);
                at(self.flows.poll_timeout());
                at(self.pmtu.poll_timeout());
            }
            SessionState::NearClose => {
                at(self.close_req_due);
                at(Some(self.state_since + Duration::from_secs(90)));
            }
            SessionState::FarCloseLinger => at(Some(self.state_since + Duration::from_secs(19))),
            SessionState::Closed | SessionState::OpenFailed => {}
        }
        t
    }

    /// Timer processing. Returns a state change the endpoint reports.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<TimerOutcome> {
        match self.state {
            SessionState::IHelloSent | SessionState::KeyingSent => {
                let started = self.opening.as_ref()?.started;
                if now >= started + self.cfg.open_timeout {
                    self.set_state(now, SessionState::OpenFailed);
                    return Some(TimerOutcome::OpenFailed);
                }
                None
            }
            SessionState::Open => {
                let silent_loss = self.silent_rtos >= DEAD_AFTER_SILENT_RTOS
                    && now.saturating_duration_since(self.last_recv) >= DEAD_AFTER_SILENT_MIN;
                if now >= self.last_recv + self.cfg.dead_after || silent_loss {
                    self.final_close_ack = true;
                    self.set_state(now, SessionState::Closed);
                    return Some(TimerOutcome::Closed(CloseReason::Dead));
                }
                if let Some(d) = self.rto_deadline {
                    if now >= d {
                        // RFC 7016 3.6.2.6.
                        self.stats.retransmit_timeouts += 1;
                        let any_loss = self.flows.on_retransmit_timeout(now);
                        if any_loss {
                            self.silent_rtos += 1;
                            let silence = now.saturating_duration_since(self.last_recv);
                            if self.silent_rtos >= STALL_AFTER_SILENT_RTOS
                                && silence >= STALL_MIN_SILENCE
                                && !self.stall_reported
                            {
                                self.stalled = true;
                                self.stall_reported = true;
                            }
                        }
                        if let Some(ts) = self.ts.as_mut() {
                            if any_loss {
                                ts.rtt.backoff();
                            }
                        }
                        self.cc.on_timeout(now, any_loss);
                        if any_loss {
                            self.pmtu.on_black_hole_suspected(now);
                        }
                        self.rto_deadline = if self.flows.outstanding_bytes() > 0 {
                            Some(now + self.ert0())
                        } else {
                            None
                        };
                        if self.silent_rtos >= DEAD_AFTER_SILENT_RTOS
                            && now.saturating_duration_since(self.last_recv)
                                >= DEAD_AFTER_SILENT_MIN
                        {
                            self.final_close_ack = true;
                            self.set_state(now, SessionState::Closed);
                            return Some(TimerOutcome::Closed(CloseReason::Dead));
                        }
                    }
                }
                if now >= self.keepalive_due {
                    // RFC 7016 3.5.4.1: a keepalive ping when idle, not more
                    // often than once per ERT0; a missing reply backs off ERT0.
                    if self.ping_outstanding.is_some() {
                        if let Some(ts) = self.ts.as_mut() {
                            ts.rtt.backoff();
                        }
                    }
                    self.ping_outstanding = Some(now);
                    let idle = now.saturating_duration_since(self.last_recv);
                    let interval = if idle >= self.cfg.keepalive {
                        // Probe faster once the far end went quiet.
                        self.ert0().max(Duration::from_secs(1))
                    } else {
                        self.cfg.keepalive
                    };
                    self.keepalive_due = now + interval;
                    self.pending_keepalive = true;
                }
                self.flows.handle_timeout(now);
                if self.pmtu.handle_timeout(now).is_some() {
                    self.cc.set_mss(self.max_plain());
                }
                if self.pending_pmtu_probe.is_none() {
                    let ert0 = self.ert0();
                    self.pending_pmtu_probe = self.pmtu.poll_probe(now, ert0);
                }
                None
            }
            SessionState::NearClose => {
                if now >= self.state_since + Duration::from_secs(90) {
                    self.set_state(now, SessionState::Closed);
                    return Some(TimerOutcome::Finished);
                }
                None
            }
            SessionState::FarCloseLinger => {
                if now >= self.state_since + Duration::from_secs(19) {
                    self.set_state(now, SessionState::Closed);
                    return Some(TimerOutcome::Finished);
                }
                None
            }
            _ => None,
        }
    }

    // ----- output -------------------------------------------------------

    /// Build the next datagram of an established session into `buf`, or
    /// None if there is nothing to send now. Returns the destination and
    /// the datagram length.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if self.final_close_ack {
            self.final_close_ack = false;
            return self.build(now, buf, self.dest, Content::CloseAck);
        }
        match self.state {
            SessionState::Open | SessionState::NearClose | SessionState::FarCloseLinger => {}
            _ => return None,
        }
        if let Some(addr) = self.mobility.pending.take() {
            if let Some(r) = self.build(now, buf, addr, Content::MobilityPing(addr)) {
                return Some(r);
            }
        }
        // A Ping that came over another path than DESTADDR is answered on
        // that path: with relayed routes a node is reachable at several
        // addresses, and the mobility check of RFC 7016 3.5.4.2 verifies the
        // path the Ping Reply's source address names, so the reply must
        // travel back the way the Ping came.
        if let Some(pos) = self.ping_replies.iter().position(|(a, _)| *a != self.dest) {
            if let Some((addr, msg)) = self.ping_replies.remove(pos) {
                if let Some(r) = self.build(now, buf, addr, Content::PingReply(&msg)) {
                    return Some(r);
                }
            }
        }
        if let Some(size) = self.pending_pmtu_probe.take() {
            if let Some(r) = self.build(now, buf, self.dest, Content::PmtuProbe(size)) {
                return Some(r);
            }
        }
        self.build(now, buf, self.dest, Content::Normal)
    }

    fn build(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        to: SocketAddr,
        content: Content<'_>,
    ) -> Option<(SocketAddr, usize)> {
        let limit = match content {
            Content::PmtuProbe(p) => p.size,
            _ => self.pmtu.safe_size(),
        }
        .min(buf.len());
        if limit < SESSION_DATAGRAM_OVERHEAD + 16 {
            return None;
        }
        let end = limit - TAG_LEN;
        let mut header = PacketHeader::new(near_mode(self.role));
        if let Some(ts) = self.ts.as_mut() {
            let f = ts.fields_to_send(now);
            header.timestamp = f.timestamp;
            header.timestamp_echo = f.echo;
        }
        header.time_critical_reverse = self.tcr_out;
        let hlen = header.encoded_len();
        let mut sink = BufSink {
            buf,
            pos: PLAIN_OFFSET + hlen,
            end,
            time_critical: false,
        };
        let start_pos = sink.pos;
        let mut data_bytes = 0;
        match content {
            Content::CloseAck => {
                sink.push(&Chunk::CloseAck);
            }
            Content::PingReply(m) => {
                sink.push(&Chunk::PingReply { message_echo: m });
            }
            Content::Ping => {
                sink.push(&Chunk::Ping { message: &[] });
            }
            Content::MobilityPing(addr) => {
                let ts = self.ms_since_created(now);
                let mac = crypto::mobility_mac(&self.mobility.secret, ts, addr);
                let mut msg = [0u8; 1 + 8 + crypto::MOBILITY_MAC_LEN];
                msg[0] = PING_MOBILITY;
                msg[1..9].copy_from_slice(&ts.to_be_bytes());
                msg[9..].copy_from_slice(&mac);
                sink.push(&Chunk::Ping { message: &msg });
            }
            Content::PmtuProbe(p) => {
                // RFC 7016 3.5.4.3: padding first, then the Ping.
                let id = p.id.to_be_bytes();
                let msg = [PING_PMTU, id[0], id[1], id[2], id[3]];
                let ping_len = 3 + msg.len();
                let pad = sink.remaining().saturating_sub(ping_len + 3);
                if pad > 0 {
                    let p0 = sink.pos;
                    sink.buf[p0] = 0xff;
                    sink.buf[p0 + 1] = (pad >> 8) as u8;
                    sink.buf[p0 + 2] = pad as u8;
                    sink.buf[p0 + 3..p0 + 3 + pad].fill(0);
                    sink.pos += 3 + pad;
                }
                sink.push(&Chunk::Ping { message: &msg });
            }
            Content::Normal => {
                if self.send_close_ack {
                    self.send_close_ack = false;
                    sink.push(&Chunk::CloseAck);
                }
                while let Some(c) = self.control_out.front() {
                    if sink.remaining() < c.len() {
                        break;
                    }
                    let p0 = sink.pos;
                    sink.buf[p0..p0 + c.len()].copy_from_slice(c);
                    sink.pos += c.len();
                    self.control_out.pop_front();
                }
                if self.state == SessionState::NearClose {
                    if let Some(due) = self.close_req_due {
                        if now >= due {
                            sink.push(&Chunk::Close);
                            self.close_req_due = Some(now + Duration::from_secs(5));
                        }
                    }
                }
                while let Some((_, m)) = self.ping_replies.front() {
                    if sink.remaining() < m.len() + 3 {
                        break;
                    }
                    let Some((_, m)) = self.ping_replies.pop_front() else {
                        break;
                    };
                    sink.push(&Chunk::PingReply { message_echo: &m });
                }
                if self.pending_keepalive {
                    self.pending_keepalive = false;
                    sink.push(&Chunk::Ping { message: &[] });
                }
                if self.state == SessionState::Open {
                    self.flows.write_acks(now, &mut sink);
                    if self.cc.burst_allows() {
                        let budget = self.cc.send_budget(now, self.flows.outstanding_bytes());
                        if budget > 0 {
                            data_bytes = self.flows.write_data(now, &mut sink, budget);
                        }
                    }
                }
            }
        }
        if sink.pos == start_pos {
            return None;
        }
        header.time_critical = sink.time_critical;
        let plain_end = sink.pos;
        let buf = sink.buf;
        header
            .emit(&mut buf[PLAIN_OFFSET..PLAIN_OFFSET + hlen])
            .ok()?;
        let sealer = self.sealer.as_mut()?;
        let plain_len = plain_end - PLAIN_OFFSET;
        let range = match sealer.seal(
            &mut buf[MULTIPLEX_HEADER_LEN..],
            SESSION_HEADER_LEN,
            plain_len,
        ) {
            Ok(r) => r,
            Err(_) => {
                // Sequence space exhausted: the session cannot continue.
                self.set_state(now, SessionState::Closed);
                return None;
            }
        };
        let total = MULTIPLEX_HEADER_LEN + range.end;
        crate::wire::packet::write_multiplex_header(&mut buf[..total], self.send_sid).ok()?;
        if data_bytes > 0 {
            self.cc
                .on_packet_sent(now, data_bytes, header.time_critical);
            if self.rto_deadline.is_none() {
                self.rto_deadline = Some(now + self.ert0());
            }
        }
        if matches!(content, Content::Normal) {
            self.keepalive_due = self
                .keepalive_due
                .max(now + self.cfg.keepalive.min(Duration::from_secs(1)));
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += total as u64;
        Some((to, total))
    }

    /// Queue an encoded chunk (e.g. an FIHello) for the next packet.
    pub fn queue_chunk(&mut self, chunk: Vec<u8>) {
        if self.is_open() && self.control_out.len() < 64 {
            self.control_out.push_back(chunk);
        }
    }

    /// Set the Time Critical Reverse flag for outgoing packets.
    pub fn set_tcr(&mut self, on: bool) {
        self.tcr_out = on;
    }

    /// Whether `poll_transmit` may produce something right now.
    pub fn wants_transmit(&self, now: Instant) -> bool {
        if self.final_close_ack {
            return true;
        }
        match self.state {
            SessionState::Open => {
                self.mobility.pending.is_some()
                    || self.pending_pmtu_probe.is_some()
                    || self.send_close_ack
                    || !self.ping_replies.is_empty()
                    || !self.control_out.is_empty()
                    || self.pending_keepalive
                    || self.flows.wants_control(now)
                    || (self.flows.has_data_to_send() && self.cc.burst_allows())
            }
            SessionState::NearClose => {
                self.send_close_ack
                    || !self.ping_replies.is_empty()
                    || self.close_req_due.is_some_and(|d| now >= d)
            }
            SessionState::FarCloseLinger => self.send_close_ack || !self.ping_replies.is_empty(),
            _ => false,
        }
    }
}

enum Content<'a> {
    Normal,
    CloseAck,
    /// A Ping alone (a probe of another path).
    Ping,
    PingReply(&'a [u8]),
    MobilityPing(SocketAddr),
    PmtuProbe(crate::pmtu::Probe),
}

/// Timer results the endpoint turns into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerOutcome {
    OpenFailed,
    Closed(CloseReason),
    /// Reached CLOSED after NEARCLOSE / FARCLOSE_LINGER.
    Finished,
}

/// Add a candidate address to an opening session (RFC 7016 3.5.1.1.1).
pub(crate) fn add_candidate(o: &mut Opening, now: Instant, addr: SocketAddr, first: Duration) {
    if o.candidates.iter().any(|c| c.addr == addr) {
        return;
    }
    o.candidates.push(Candidate {
        addr,
        next: now,
        interval: first,
    });
}

/// The backoff of RFC 7016 3.5.1.1.1: multiplicative, plus at least 1.5 s.
pub(crate) fn next_interval(d: Duration) -> Duration {
    (d.mul_f64(1.5) + Duration::from_millis(1500)).min(Duration::from_secs(30))
}
