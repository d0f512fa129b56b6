//! The status model: what `ringlan status` shows, what the control socket
//! returns as JSON and what the metrics endpoint exports.
//!
//! The node core builds snapshots ([`crate::Node::status`]); the agent
//! publishes them to its status board, where the control socket and the
//! metrics endpoint read them without touching the node's state.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A snapshot of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Node id (32 hex digits), once the crypto profile has computed it.
    pub node_id: Option<String>,
    pub node_name: String,
    pub network: String,
    pub role: Role,
    /// Ed25519 public key, 64 hex digits.
    pub public_key: String,
    pub tap: TapStatus,
    /// Local sockets the RTMFP endpoint is bound to.
    pub listen: Vec<SocketAddr>,
    /// Addresses this node is known by (local interface addresses,
    /// reflexive addresses learnt from STUN or introducers).
    pub addresses: Vec<KnownAddress>,
    /// NAT behaviour as seen through STUN (introducers and `stun_servers`).
    #[serde(default)]
    pub nat: NatStatus,
    pub sessions: Vec<SessionStatus>,
    /// Overlay neighbours; `None` until the overlay reports them.
    pub neighbours: Option<Vec<NeighbourStatus>>,
    pub uptime_secs: u64,
    /// Node-wide drops by reason: datagrams the endpoint refused
    /// (`udp_*`: not a member, malformed, replayed, rate limited, ...) and
    /// frames that had no session to go to.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// Relaying for other members (`None` before the node runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayStatus>,
    /// Frames that travelled over the overlay (routed hop by hop) instead
    /// of on a direct session.
    #[serde(default)]
    pub routed: RoutedStatus,
    /// ARP requests and neighbour solicitations read from the TAP: answered
    /// here from the member directory, or flooded.
    #[serde(default)]
    pub arp_nd: ArpNdCounters,
    /// How members are admitted: the shared secret alone, or certificates
    /// of a network CA.
    #[serde(default)]
    pub membership: MembershipStatus,
    /// The TCP fallback in use: UDP to the introducers is silent and this
    /// node's datagrams travel on a TCP stream (docs/tcp.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpStatus>,
    /// Member records (`docs/directory.md`): what this node holds and
    /// publishes, name and IP conflicts (`None` before the node runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryStatus>,
    /// The runtime's system calls and wake-ups (JSON only; `None` in the
    /// node core's own snapshots): what the data path costs the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<IoStatus>,
}

/// Counters of the agent runtime's I/O since start (`docs/dataplane.md`
/// "Where the CPU goes"): datagrams per `sendmmsg`/`recvmmsg` call and per
/// GSO/GRO message, frames per TAP wake-up, wake-ups of the event loop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoStatus {
    /// Wake-ups of the event loop (any source).
    pub wakeups: u64,
    /// Wake-ups of the UDP driver (sockets, the node's timer, streams).
    pub udp_wakeups: u64,
    pub udp_send_calls: u64,
    pub udp_send_messages: u64,
    pub udp_datagrams_sent: u64,
    pub udp_recv_calls: u64,
    pub udp_recv_messages: u64,
    pub udp_datagrams_received: u64,
    /// Of the datagrams sent: relayed ones sent straight from the receive
    /// buffer; relayed ones lost to a full socket buffer.
    #[serde(default)]
    pub udp_datagrams_forwarded: u64,
    #[serde(default)]
    pub udp_forwards_dropped: u64,
    /// TAP wake-ups, frames read (in them and right after writes), frames
    /// written.
    pub tap_wakeups: u64,
    pub tap_reads: u64,
    pub tap_writes: u64,
    /// Of the frames read: those read right after this node wrote frames
    /// to the TAP, in the same turn of its loop (the kernel's answers to
    /// them, sent with that turn's datagrams).
    #[serde(default)]
    pub tap_reads_after_write: u64,
    /// Bytes of the frames read from and written to the TAP.
    #[serde(default)]
    pub tap_bytes: u64,
    /// Bytes of the datagrams this node forwarded as a relay.
    #[serde(default)]
    pub relayed_bytes: u64,
    /// Frames the TAP refused.
    #[serde(default)]
    pub tap_write_errors: u64,
    /// Datagrams leave from a send thread and frames reach the TAP from a
    /// TAP write thread (the config's `io_threads`).
    #[serde(default)]
    pub io_threads: bool,
    /// The node's thread runs in real-time scheduling now (the config's
    /// `realtime`; docs/dataplane.md "Waiting for a core").
    #[serde(default)]
    pub realtime: bool,
    /// Times it went back to normal scheduling for using more than 90 %
    /// of a core.
    #[serde(default)]
    pub realtime_demotions: u64,
    /// Times real-time scheduling was judged to cost too much CPU per
    /// byte (normal scheduling for 30 s each).
    #[serde(default)]
    pub realtime_costly: u64,
    /// At the last of those judgements: real-time scheduling's CPU per
    /// byte in percent of normal scheduling's (over 150: costly).
    #[serde(default)]
    pub realtime_cost_percent: Option<u32>,
}

/// The stream the TCP fallback uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpStatus {
    /// The introducer (its UDP address) the stream goes to.
    pub via: String,
    /// The TCP address connected to.
    pub connected_to: String,
    /// A datagram came back on it.
    pub answered: bool,
}

/// This node in the directory of member records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryStatus {
    /// Records held here for the directory (any member's).
    pub records_held: usize,
    /// Members fetched by lookups and scans, cached until they expire.
    pub members_cached: usize,
    /// The version of our last published member record (0: not yet).
    pub published_version: u64,
    /// Our overlay IPs learnt from our own TAP traffic (DHCP, SLAAC, ...).
    pub learnt_ips: Vec<std::net::IpAddr>,
    /// Names and IPs several members claim.
    pub conflicts: Vec<ConflictStatus>,
}

/// A name (`name:...`) or IP (`ip:...`) claimed by several members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictStatus {
    pub key: String,
    /// Node ids, 32 hex digits each.
    pub claimants: Vec<String>,
}

/// How this node admits members (`docs/membership.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum MembershipStatus {
    /// The network secret is the whole check (no `network.ca`).
    #[default]
    SharedSecret,
    /// Admission by certificates of a network CA.
    Certificate {
        /// The CA's public key, 64 hex digits.
        ca: String,
        /// The name in our certificate.
        name: String,
        /// Expiry of our certificate, seconds since the Unix epoch.
        not_after: u64,
        /// The same as `YYYY-MM-DD HH:MM:SS UTC`.
        expires: String,
        /// Whole days until expiry (negative once expired).
        days_left: i64,
        /// Version of the newest revocation list held (0: none).
        revocations_version: u64,
        /// What is wrong: expired, not yet valid, revoked, or expiring
        /// within 30 days.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
    },
}

impl fmt::Display for MembershipStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipStatus::SharedSecret => f.write_str("shared secret (no per-node revocation)"),
            MembershipStatus::Certificate {
                ca,
                name,
                expires,
                days_left,
                revocations_version,
                ..
            } => {
                write!(
                    f,
                    "certificate {name} from CA {}, expires {expires} ({days_left} days left), ",
                    short_id(ca)
                )?;
                match revocations_version {
                    0 => f.write_str("no revocation list"),
                    v => write!(f, "revocation list version {v}"),
                }
            }
        }
    }
}

/// This node as a relay: its policy and the routes it carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayStatus {
    pub enabled: bool,
    pub max_routes: usize,
    pub routes: Vec<CarriedRoute>,
}

/// One route this node relays: `origin` set it up toward `target`;
/// packets arrive from `from` and leave to `to` (and back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarriedRoute {
    pub origin: String,
    pub target: String,
    pub from: String,
    pub to: String,
    /// Setup answered by the far end.
    pub ready: bool,
    /// Origin -> target.
    pub forward: RouteTraffic,
    /// Target -> origin.
    pub back: RouteTraffic,
    pub age_secs: u64,
    /// The tags of the hops from the upstream and to the downstream
    /// neighbour (`aes-256-gcm` or `aegis-128l`, docs/relay.md), JSON only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_to: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTraffic {
    pub packets: u64,
    pub bytes: u64,
    /// Refused: failed hop check, over the limit, or no next hop.
    pub dropped: u64,
}

/// ARP requests and IPv6 neighbour solicitations read from the TAP
/// (docs/directory.md "ARP and ND"): answered by the node from a fresh
/// member record, or flooded to the network as before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpNdCounters {
    pub arp_answered_locally: u64,
    pub arp_flooded: u64,
    pub nd_answered_locally: u64,
    pub nd_flooded: u64,
}

/// Routed (multi-hop overlay) traffic of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedStatus {
    /// Per end node: frames from our TAP sent routed to it (`tx`) and
    /// routed frames from it written to our TAP (`rx`).
    pub peers: Vec<RoutedPeer>,
    /// Routed frames of other nodes this node passed on (a middle hop).
    pub forwarded: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedPeer {
    /// End node id, 32 hex digits.
    pub peer_id: String,
    pub peer_name: Option<String>,
    pub tx: Traffic,
    pub rx: Traffic,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Node,
    Introducer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Node => "node",
            Role::Introducer => "introducer",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TapStatus {
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`
    pub mac: String,
    pub mtu: u16,
    /// `addr/prefix`
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownAddress {
    pub addr: SocketAddr,
    pub kind: AddressKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressKind {
    Local,
    Reflexive,
}

impl fmt::Display for AddressKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressKind::Local => "local",
            AddressKind::Reflexive => "reflexive",
        })
    }
}

/// NAT mapping behaviour (RFC 4787 4.1), from comparing the reflexive
/// addresses two different servers saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatBehaviour {
    /// Same mapped address towards different servers ("cone-like"), or no
    /// NAT at all.
    EndpointIndependent,
    /// Different mapped addresses per server ("symmetric-like").
    EndpointDependent,
    /// Fewer than two servers answered.
    #[default]
    Unknown,
}

impl fmt::Display for NatBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NatBehaviour::EndpointIndependent => "endpoint-independent",
            NatBehaviour::EndpointDependent => "endpoint-dependent",
            NatBehaviour::Unknown => "unknown",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatStatus {
    pub mapping: NatBehaviour,
    /// Reflexive addresses servers reported (distinct).
    pub reflexive: Vec<SocketAddr>,
}

/// How a session's packets travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PathKind {
    /// Direct, how it was reached not (yet) classified.
    Direct,
    /// Direct on the same LAN (local addresses).
    DirectLan,
    /// Direct through NAT (punched, reflexive addresses).
    DirectNat,
    /// Through relays: `via` names them from this end, `>`-separated
    /// (node name or short id); `standby` counts further ready routes.
    Relayed {
        via: String,
        #[serde(default)]
        standby: usize,
    },
    /// No path (yet): a member the overlay wants but cannot reach.
    None,
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathKind::Direct => f.write_str("direct"),
            PathKind::DirectLan => f.write_str("direct-lan"),
            PathKind::DirectNat => f.write_str("direct-nat"),
            PathKind::Relayed { via, standby: 0 } => write!(f, "relayed via {via}"),
            PathKind::Relayed { via, standby } => write!(f, "relayed via {via} (+{standby})"),
            PathKind::None => f.write_str("none"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionPhase {
    /// Handshake in progress (RFC 7016 3.5.1).
    Opening,
    Open,
    /// Close requested (RFC 7016 3.5.5).
    Closing,
    Closed,
    /// Repeated open attempts failed; retries continue with back-off.
    Failed,
}

impl fmt::Display for SessionPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionPhase::Opening => "opening",
            SessionPhase::Open => "open",
            SessionPhase::Closing => "closing",
            SessionPhase::Closed => "closed",
            SessionPhase::Failed => "failed",
        })
    }
}

/// Frames and bytes in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub frames: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// Peer node id, 32 hex digits.
    pub peer_id: String,
    pub peer_name: Option<String>,
    pub remote: Option<SocketAddr>,
    pub path: PathKind,
    pub state: SessionPhase,
    pub rtt_ms: Option<f64>,
    /// Towards the peer.
    pub tx: Traffic,
    /// From the peer.
    pub rx: Traffic,
    /// Dropped frames by reason.
    pub drops: BTreeMap<String, u64>,
    pub age_secs: u64,
    /// Times the session's keys were replaced (rekeyed every two minutes,
    /// docs/crypto-profile.md 6.3).
    #[serde(default)]
    pub rekeys: u64,
    /// The AEAD suite sealing the session's packets, e.g. `aegis-128l`
    /// (JSON only; absent before keying; docs/crypto-profile.md 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    /// Why there is no session (entries with path `none`), e.g.
    /// "no direct path".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The peer said in its `Hello` that its NAT maps endpoint-dependently
    /// (in JSON only when true; the text table adds it to the PATH cell):
    /// with ours symmetric too, why the pair stays relayed (docs/nat.md
    /// "Coordination").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub peer_symmetric_nat: bool,
    /// The session's transport state (JSON only): congestion window,
    /// queues, losses (`docs/dataplane.md`, "Loss").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportStatus>,
}

/// RTMFP transport figures of one session (RFC 7016 3.5.2, 3.6.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportStatus {
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// User data in flight, bytes.
    pub in_flight: u64,
    /// Queued on the sending flows (frames waiting for the window), bytes.
    pub queued: u64,
    /// Retransmission timeouts (TIMEOUT_ALARM).
    pub timeouts: u64,
    /// Window halvings for lost reliable data.
    pub loss_reductions: u64,
    /// Bytes of frames lost on the way (never retransmitted).
    pub frame_lost_bytes: u64,
    /// Window halvings by the frame-loss circuit breaker.
    pub breaker_trips: u64,
    /// Full bursts released after a lost acknowledgement.
    #[serde(default)]
    pub burst_releases: u64,
    /// Times the window started over because the session's path changed
    /// (a failover, a move back to a direct path, a peer's new address).
    #[serde(default)]
    pub path_restarts: u64,
    /// Frames dropped because the sending queue was full.
    pub queue_full_drops: u64,
    /// Frames abandoned unsent because the path MTU fell below their
    /// fragments' size (frames are cut from the path MTU; a PMTU fallback
    /// leaves those queued at the larger size unsendable).
    #[serde(default)]
    pub pmtu_abandoned: u64,
    /// Frames dropped unsent because they waited too long in the sending
    /// queue (a standing queue; docs/dataplane.md "Latency").
    #[serde(default)]
    pub late_drops: u64,
    /// Times the late-frame drop paused because the standing queue was
    /// not the session's own (a bottleneck shared with other traffic;
    /// docs/dataplane.md "Fairness").
    #[serde(default)]
    pub late_drop_holds: u64,
    /// Frames handed over without a copy whose buffer had to be allocated
    /// (the session's pool kept none): a few at first, then only when
    /// more super-frames waited at once than the pool keeps
    /// (docs/dataplane.md "One copy on the sender").
    #[serde(default)]
    pub frame_buffers_allocated: u64,
    /// TCP super-frames sent cut into single-fragment pieces because the
    /// path loses packets often (docs/dataplane.md "Loss").
    #[serde(default)]
    pub super_frames_cut: u64,
    /// Size of the session's packets (UDP payload bytes) from path MTU
    /// discovery (RFC 7016 3.5.4.3; 1200 until a probe of a larger size
    /// is answered).
    #[serde(default)]
    pub pmtu: u64,
    /// Packet-size checks started because large packets vanished while
    /// small ones were acknowledged (a path that shrank without telling;
    /// docs/dataplane.md "A path that shrinks").
    #[serde(default)]
    pub black_hole_checks: u64,
}

/// Overlay link kinds (Symphony: ring links, long-distance links; plus
/// on-demand links and the introducer a node joined through).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NeighbourLink {
    Successor,
    Predecessor,
    Long,
    OnDemand,
    Introducer,
    /// Linked but not (or no longer) wanted by the topology.
    Other,
}

impl fmt::Display for NeighbourLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NeighbourLink::Successor => "successor",
            NeighbourLink::Predecessor => "predecessor",
            NeighbourLink::Long => "long",
            NeighbourLink::OnDemand => "on-demand",
            NeighbourLink::Introducer => "introducer",
            NeighbourLink::Other => "other",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourStatus {
    pub node_id: String,
    pub name: Option<String>,
    pub link: NeighbourLink,
}

/// The first 8 hex digits of a node id (same form as `NodeId::short`).
pub fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The PATH cell of a session row: the path, then why there is no
/// direct one when known (`reason`) and whether the peer said its NAT maps
/// endpoint-dependently (`peer_symmetric_nat`, docs/nat.md "Coordination").
fn path_cell(s: &SessionStatus) -> String {
    let mut notes: Vec<&str> = Vec::new();
    if let Some(r) = &s.reason {
        notes.push(r);
    }
    if s.peer_symmetric_nat {
        notes.push("peer's NAT symmetric");
    }
    if notes.is_empty() {
        s.path.to_string()
    } else {
        format!("{} ({})", s.path, notes.join("; "))
    }
}

// ---- human rendering ----------------------------------------------------

/// `1h02m03s`, `3m07s`, `45s`, `2d04h`.
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in UNITS.iter().skip(1) {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Renders rows as columns separated by two spaces, without trailing
/// blanks.
fn table(out: &mut String, header: &[(&str, Align)], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|(h, _)| h.chars().count()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let heads: Vec<String> = header.iter().map(|(h, _)| h.to_string()).collect();
    for r in std::iter::once(&heads).chain(rows) {
        let mut line = String::new();
        for (i, ((c, (_, align)), w)) in r.iter().zip(header).zip(&width).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = w.saturating_sub(c.chars().count());
            match align {
                Align::Left => {
                    line.push_str(c);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(c);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

impl Status {
    /// The human form of `ringlan status`.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let dash = |s: Option<&str>| s.unwrap_or("-").to_string();
        let _ = writeln!(
            o,
            "node      {}  {}",
            self.node_name,
            dash(self.node_id.as_deref())
        );
        let _ = writeln!(o, "network   {} ({})", self.network, self.role);
        let _ = writeln!(o, "key       {}", self.public_key);
        let mut tap = format!(
            "tap       {}  {}  mtu {}",
            self.tap.name, self.tap.mac, self.tap.mtu
        );
        for a in &self.tap.addresses {
            tap.push_str("  ");
            tap.push_str(a);
        }
        let _ = writeln!(o, "{tap}");
        let listen: Vec<String> = self.listen.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            o,
            "listen    {}",
            if listen.is_empty() {
                "-".into()
            } else {
                listen.join(", ")
            }
        );
        let addrs: Vec<String> = self
            .addresses
            .iter()
            .map(|a| format!("{} ({})", a.addr, a.kind))
            .collect();
        let _ = writeln!(
            o,
            "addresses {}",
            if addrs.is_empty() {
                "-".into()
            } else {
                addrs.join(", ")
            }
        );
        let mut nat = self.nat.mapping.to_string();
        if !self.nat.reflexive.is_empty() {
            let r: Vec<String> = self.nat.reflexive.iter().map(|a| a.to_string()).collect();
            nat.push_str(&format!(" ({})", r.join(", ")));
        }
        let _ = writeln!(o, "nat       {nat}");
        if let Some(t) = &self.tcp {
            let _ = writeln!(
                o,
                "tcp       via {} (tcp {}), {}",
                t.via,
                t.connected_to,
                if t.answered { "answered" } else { "connecting" }
            );
        }
        let _ = writeln!(o, "uptime    {}", format_duration(self.uptime_secs));
        let _ = writeln!(o, "membership: {}", self.membership);
        if let MembershipStatus::Certificate {
            warning: Some(w), ..
        } = &self.membership
        {
            let _ = writeln!(o, "WARNING: {w}");
        }
        if let Some(d) = &self.directory {
            let _ = writeln!(
                o,
                "directory {} records held, {} members cached, published version {}{}",
                d.records_held,
                d.members_cached,
                d.published_version,
                if d.learnt_ips.is_empty() {
                    String::new()
                } else {
                    let ips: Vec<String> = d.learnt_ips.iter().map(|i| i.to_string()).collect();
                    format!(", learnt {}", ips.join(" "))
                }
            );
            for c in &d.conflicts {
                let who: Vec<&str> = c.claimants.iter().map(|n| short_id(n)).collect();
                let _ = writeln!(
                    o,
                    "CONFLICT: {} is claimed by {} members: {}",
                    c.key,
                    c.claimants.len(),
                    who.join(", ")
                );
            }
        }
        if !self.drops.is_empty() {
            let d: Vec<String> = self.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(o, "drops     {}", d.join(", "));
        }
        let n = &self.arp_nd;
        if *n != ArpNdCounters::default() {
            let _ = writeln!(
                o,
                "arp/nd    ARP {} answered here, {} flooded; ND {} answered here, {} flooded",
                n.arp_answered_locally, n.arp_flooded, n.nd_answered_locally, n.nd_flooded
            );
        }

        if let Some(r) = &self.relay {
            let _ = writeln!(
                o,
                "relay     {}, {} of {} routes",
                if r.enabled { "enabled" } else { "disabled" },
                r.routes.len(),
                r.max_routes
            );
            for c in &r.routes {
                let _ = writeln!(
                    o,
                    "  {} -> {}  via {} -> {}  {}  fwd {} pkts {}  back {} pkts {}  dropped {}  {}",
                    short_id(&c.origin),
                    short_id(&c.target),
                    c.from,
                    c.to,
                    if c.ready { "ready" } else { "setting up" },
                    c.forward.packets,
                    format_bytes(c.forward.bytes),
                    c.back.packets,
                    format_bytes(c.back.bytes),
                    c.forward.dropped + c.back.dropped,
                    format_duration(c.age_secs),
                );
            }
        }

        o.push('\n');
        let _ = writeln!(o, "sessions: {}", self.sessions.len());
        if !self.sessions.is_empty() {
            use Align::*;
            let rows: Vec<Vec<String>> = self
                .sessions
                .iter()
                .map(|s| {
                    let drops: u64 = s.drops.values().sum();
                    let drops = if s.drops.is_empty() {
                        "0".to_string()
                    } else {
                        let reasons: Vec<String> =
                            s.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        format!("{drops} ({})", reasons.join(","))
                    };
                    vec![
                        short_id(&s.peer_id).to_string(),
                        dash(s.peer_name.as_deref()),
                        s.remote.map_or("-".into(), |a| a.to_string()),
                        path_cell(s),
                        s.state.to_string(),
                        s.rtt_ms.map_or("-".into(), |r| format!("{r:.1} ms")),
                        s.tx.frames.to_string(),
                        format_bytes(s.tx.bytes),
                        s.rx.frames.to_string(),
                        format_bytes(s.rx.bytes),
                        drops,
                        format_duration(s.age_secs),
                    ]
                })
                .collect();
            table(
                &mut o,
                &[
                    ("PEER", Left),
                    ("NAME", Left),
                    ("REMOTE", Left),
                    ("PATH", Left),
                    ("STATE", Left),
                    ("RTT", Right),
                    ("TX FRAMES", Right),
                    ("TX BYTES", Right),
                    ("RX FRAMES", Right),
                    ("RX BYTES", Right),
                    ("DROPS", Left),
                    ("AGE", Right),
                ],
                &rows,
            );
        }
        if !self.routed.peers.is_empty() || self.routed.forwarded > 0 {
            o.push('\n');
            let _ = writeln!(
                o,
                "routed: {} end nodes, {} frames forwarded for others",
                self.routed.peers.len(),
                self.routed.forwarded
            );
            if !self.routed.peers.is_empty() {
                use Align::*;
                let rows: Vec<Vec<String>> = self
                    .routed
                    .peers
                    .iter()
                    .map(|r| {
                        vec![
                            short_id(&r.peer_id).to_string(),
                            dash(r.peer_name.as_deref()),
                            r.tx.frames.to_string(),
                            format_bytes(r.tx.bytes),
                            r.rx.frames.to_string(),
                            format_bytes(r.rx.bytes),
                        ]
                    })
                    .collect();
                table(
                    &mut o,
                    &[
                        ("PEER", Left),
                        ("NAME", Left),
                        ("TX FRAMES", Right),
                        ("TX BYTES", Right),
                        ("RX FRAMES", Right),
                        ("RX BYTES", Right),
                    ],
                    &rows,
                );
            }
        }
        if let Some(n) = &self.neighbours {
            o.push('\n');
            let _ = writeln!(o, "neighbours: {}", n.len());
            if !n.is_empty() {
                let rows: Vec<Vec<String>> = n
                    .iter()
                    .map(|n| {
                        vec![
                            short_id(&n.node_id).to_string(),
                            dash(n.name.as_deref()),
                            n.link.to_string(),
                        ]
                    })
                    .collect();
                table(
                    &mut o,
                    &[
                        ("PEER", Align::Left),
                        ("NAME", Align::Left),
                        ("LINK", Align::Left),
                    ],
                    &rows,
                );
            }
        }
        o
    }
}

/// A status with two sessions and three neighbours: the example the
/// control socket, metrics and rendering tests share.
pub fn example() -> Status {
    Status {
        node_id: Some("0123456789abcdef0123456789abcdef".into()),
        node_name: "laptop".into(),
        network: "home".into(),
        role: Role::Node,
        public_key: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".into(),
        tap: TapStatus {
            name: "rl-home".into(),
            mac: "02:11:22:33:44:55".into(),
            mtu: 1400,
            addresses: vec!["10.77.0.2/24".into(), "fd77::2/64".into()],
        },
        listen: vec!["0.0.0.0:4910".parse().unwrap()],
        addresses: vec![
            KnownAddress {
                addr: "192.0.2.10:4910".parse().unwrap(),
                kind: AddressKind::Local,
            },
            KnownAddress {
                addr: "203.0.113.5:61000".parse().unwrap(),
                kind: AddressKind::Reflexive,
            },
        ],
        nat: NatStatus {
            mapping: NatBehaviour::EndpointIndependent,
            reflexive: vec!["203.0.113.5:61000".parse().unwrap()],
        },
        sessions: vec![
            SessionStatus {
                peer_id: "89abcdef0123456789abcdef01234567".into(),
                peer_name: Some("desktop".into()),
                remote: Some("198.51.100.20:4910".parse().unwrap()),
                path: PathKind::DirectLan,
                state: SessionPhase::Open,
                rtt_ms: Some(0.74),
                tx: Traffic {
                    frames: 1200,
                    bytes: 1_500_000,
                },
                rx: Traffic {
                    frames: 980,
                    bytes: 830,
                },
                drops: BTreeMap::new(),
                age_secs: 3723,
                rekeys: 31,
                cipher: None,
                reason: None,
                peer_symmetric_nat: false,
                transport: Some(TransportStatus {
                    cwnd: 262_144,
                    in_flight: 65_536,
                    queued: 4_096,
                    timeouts: 2,
                    loss_reductions: 1,
                    frame_lost_bytes: 14_000,
                    breaker_trips: 0,
                    burst_releases: 5,
                    path_restarts: 1,
                    queue_full_drops: 3,
                    pmtu_abandoned: 1,
                    late_drops: 7,
                    late_drop_holds: 1,
                    frame_buffers_allocated: 2,
                    super_frames_cut: 0,
                    pmtu: 1472,
                    black_hole_checks: 1,
                }),
            },
            SessionStatus {
                peer_id: "fedcba9876543210fedcba9876543210".into(),
                peer_name: None,
                remote: None,
                path: PathKind::Relayed {
                    via: "intro1".into(),
                    standby: 0,
                },
                state: SessionPhase::Opening,
                rtt_ms: None,
                tx: Traffic::default(),
                rx: Traffic::default(),
                drops: BTreeMap::from([("mtu".into(), 1), ("no-route".into(), 2)]),
                age_secs: 7,
                rekeys: 0,
                cipher: None,
                reason: None,
                peer_symmetric_nat: false,
                transport: None,
            },
        ],
        neighbours: Some(vec![
            NeighbourStatus {
                node_id: "89abcdef0123456789abcdef01234567".into(),
                name: Some("desktop".into()),
                link: NeighbourLink::Successor,
            },
            NeighbourStatus {
                node_id: "fedcba9876543210fedcba9876543210".into(),
                name: None,
                link: NeighbourLink::Long,
            },
        ]),
        uptime_secs: 90061,
        drops: BTreeMap::from([("udp_not_member".to_string(), 3)]),
        relay: Some(RelayStatus {
            enabled: true,
            max_routes: 64,
            routes: vec![CarriedRoute {
                origin: "89abcdef0123456789abcdef01234567".into(),
                target: "fedcba9876543210fedcba9876543210".into(),
                from: "desktop".into(),
                to: "fedcba98".into(),
                ready: true,
                forward: RouteTraffic {
                    packets: 1000,
                    bytes: 1_400_000,
                    dropped: 1,
                },
                back: RouteTraffic {
                    packets: 500,
                    bytes: 40_000,
                    dropped: 0,
                },
                age_secs: 65,
                tags_from: Some("aegis-128l".into()),
                tags_to: Some("aes-256-gcm".into()),
            }],
        }),
        arp_nd: ArpNdCounters {
            arp_answered_locally: 7,
            arp_flooded: 2,
            nd_answered_locally: 3,
            nd_flooded: 1,
        },
        routed: RoutedStatus {
            peers: vec![RoutedPeer {
                peer_id: "13579bdf13579bdf13579bdf13579bdf".into(),
                peer_name: Some("far".into()),
                tx: Traffic {
                    frames: 64,
                    bytes: 90_112,
                },
                rx: Traffic {
                    frames: 60,
                    bytes: 3_960,
                },
            }],
            forwarded: 17,
        },
        membership: MembershipStatus::Certificate {
            ca: "5f2a1c0e5f2a1c0e5f2a1c0e5f2a1c0e5f2a1c0e5f2a1c0e5f2a1c0e5f2a1c0e".into(),
            name: "laptop".into(),
            not_after: 1_827_850_800,
            expires: "2027-12-03 16:20:00 UTC".into(),
            days_left: 365,
            revocations_version: 3,
            warning: None,
        },
        tcp: None,
        directory: Some(DirectoryStatus {
            records_held: 12,
            members_cached: 4,
            published_version: 1_796_300_000_000,
            learnt_ips: vec!["10.77.0.99".parse().unwrap()],
            conflicts: vec![ConflictStatus {
                key: "name:printer".into(),
                claimants: vec![
                    "13579bdf13579bdf13579bdf13579bdf".into(),
                    "2468ace02468ace02468ace02468ace0".into(),
                ],
            }],
        }),
        io: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::status::example as sample;

    #[test]
    fn render_golden() {
        let want = "\
node      laptop  0123456789abcdef0123456789abcdef
network   home (node)
key       d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a
tap       rl-home  02:11:22:33:44:55  mtu 1400  10.77.0.2/24  fd77::2/64
listen    0.0.0.0:4910
addresses 192.0.2.10:4910 (local), 203.0.113.5:61000 (reflexive)
nat       endpoint-independent (203.0.113.5:61000)
uptime    1d01h
membership: certificate laptop from CA 5f2a1c0e, expires 2027-12-03 16:20:00 UTC (365 days left), revocation list version 3
directory 12 records held, 4 members cached, published version 1796300000000, learnt 10.77.0.99
CONFLICT: name:printer is claimed by 2 members: 13579bdf, 2468ace0
drops     udp_not_member 3
arp/nd    ARP 7 answered here, 2 flooded; ND 3 answered here, 1 flooded
relay     enabled, 1 of 64 routes
  89abcdef -> fedcba98  via desktop -> fedcba98  ready  fwd 1000 pkts 1.3 MiB  back 500 pkts 39.1 KiB  dropped 1  1m05s

sessions: 2
PEER      NAME     REMOTE              PATH                STATE       RTT  TX FRAMES  TX BYTES  RX FRAMES  RX BYTES  DROPS                      AGE
89abcdef  desktop  198.51.100.20:4910  direct-lan          open     0.7 ms       1200   1.4 MiB        980     830 B  0                     1h02m03s
fedcba98  -        -                   relayed via intro1  opening       -          0       0 B          0       0 B  3 (mtu=1,no-route=2)        7s

routed: 1 end nodes, 17 frames forwarded for others
PEER      NAME  TX FRAMES  TX BYTES  RX FRAMES  RX BYTES
13579bdf  far          64  88.0 KiB         60   3.9 KiB

neighbours: 2
PEER      NAME     LINK
89abcdef  desktop  successor
fedcba98  -        long
";
        let got = sample().render();
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn the_tcp_fallback_is_shown_only_while_in_use() {
        let plain = example();
        assert!(!plain.render().contains("tcp       "));
        assert!(!serde_json::to_string(&plain).unwrap().contains("\"tcp\""));
        let on_tcp = Status {
            tcp: Some(TcpStatus {
                via: "198.51.100.7:4910".into(),
                connected_to: "198.51.100.7:443".into(),
                answered: true,
            }),
            ..example()
        };
        assert!(on_tcp
            .render()
            .contains("tcp       via 198.51.100.7:4910 (tcp 198.51.100.7:443), answered\n"));
        let j = serde_json::to_string(&on_tcp).unwrap();
        assert!(
            j.contains(r#""tcp":{"via":"198.51.100.7:4910","connected_to":"198.51.100.7:443","answered":true}"#),
            "{j}"
        );
        let back: Status = serde_json::from_str(&j).unwrap();
        assert_eq!(back, on_tcp);
    }

    #[test]
    fn render_without_sessions_or_neighbours() {
        let s = Status {
            node_name: "n".into(),
            ..Status::default()
        };
        let r = s.render();
        assert!(r.contains("sessions: 0\n"), "{r}");
        assert!(!r.contains("neighbours"), "{r}");
        assert!(r.starts_with("node      n  -\n"), "{r}");
    }

    #[test]
    fn json_round_trip_and_shape() {
        let s = sample();
        let j = serde_json::to_string(&s).unwrap();
        assert!(
            j.contains(r#""path":{"kind":"relayed","via":"intro1","standby":0}"#),
            "{j}"
        );
        assert!(j.contains(r#""path":{"kind":"direct-lan"}"#), "{j}");
        assert!(j.contains(r#""link":"successor""#), "{j}");
        assert!(j.contains(r#""forwarded":17"#), "{j}");
        assert!(
            j.contains(
                r#""nat":{"mapping":"endpoint-independent","reflexive":["203.0.113.5:61000"]}"#
            ),
            "{j}"
        );
        assert!(!j.contains("reason"), "{j}");
        assert!(
            j.contains(r#""membership":{"mode":"certificate","ca":"5f2a1c0e"#),
            "{j}"
        );
        assert!(
            j.contains(r#""days_left":365,"revocations_version":3}"#),
            "{j}"
        );
        assert!(
            j.contains(r#""directory":{"records_held":12,"members_cached":4,"published_version":1796300000000,"learnt_ips":["10.77.0.99"],"conflicts":[{"key":"name:printer","claimants":["13579bdf13579bdf13579bdf13579bdf","2468ace02468ace02468ace02468ace0"]}]}"#),
            "{j}"
        );
        let back: Status = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn membership_modes_render_and_serialise() {
        let s = Status::default();
        assert!(
            s.render()
                .contains("\nmembership: shared secret (no per-node revocation)\n"),
            "{}",
            s.render()
        );
        let j = serde_json::to_string(&s).unwrap();
        assert!(
            j.contains(r#""membership":{"mode":"shared-secret"}"#),
            "{j}"
        );
        // A status without the field (an older agent) reads as shared
        // secret.
        let old = j.replace(r#","membership":{"mode":"shared-secret"}"#, "");
        assert!(!old.contains("membership"));
        assert_eq!(serde_json::from_str::<Status>(&old).unwrap(), s);
        let expiring = Status {
            membership: MembershipStatus::Certificate {
                ca: "ab".repeat(32),
                name: "n1".into(),
                not_after: 0,
                expires: "1970-01-01 00:00:00 UTC".into(),
                days_left: 12,
                revocations_version: 0,
                warning: Some("certificate expires in 12 days".into()),
            },
            ..Status::default()
        };
        let r = expiring.render();
        assert!(
            r.contains("membership: certificate n1 from CA abababab, expires 1970-01-01 00:00:00 UTC (12 days left), no revocation list\nWARNING: certificate expires in 12 days\n"),
            "{r}"
        );
        let j = serde_json::to_string(&expiring).unwrap();
        assert!(
            j.contains(r#""warning":"certificate expires in 12 days""#),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<Status>(&j).unwrap(), expiring);
    }

    #[test]
    fn unreachable_member_shape() {
        let s = SessionStatus {
            peer_id: "fedcba9876543210fedcba9876543210".into(),
            peer_name: Some("far".into()),
            remote: None,
            path: PathKind::None,
            state: SessionPhase::Failed,
            rtt_ms: None,
            tx: Traffic::default(),
            rx: Traffic::default(),
            drops: BTreeMap::new(),
            age_secs: 40,
            rekeys: 0,
            cipher: None,
            reason: Some("no direct path".into()),
            peer_symmetric_nat: true,
            transport: None,
        };
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains(r#""path":{"kind":"none"}"#), "{j}");
        assert!(j.contains(r#""state":"failed""#), "{j}");
        assert!(j.contains(r#""reason":"no direct path""#), "{j}");
        // Present only when the peer said so.
        assert!(j.contains(r#""peer_symmetric_nat":true"#), "{j}");
        let quiet = SessionStatus {
            peer_symmetric_nat: false,
            ..s.clone()
        };
        let q = serde_json::to_string(&quiet).unwrap();
        assert!(!q.contains("peer_symmetric_nat"), "{q}");
        let st = Status {
            sessions: vec![s],
            ..Status::default()
        };
        let r = st.render();
        assert!(
            r.contains("none (no direct path; peer's NAT symmetric)  failed"),
            "{r}"
        );
        let st = Status {
            sessions: vec![quiet],
            ..Status::default()
        };
        let r = st.render();
        assert!(r.contains("none (no direct path)  failed"), "{r}");
        assert!(r.contains("nat       unknown\n"), "{r}");
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(187), "3m07s");
        assert_eq!(format_duration(3723), "1h02m03s");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
    }
}
