//! The node runtime: wires the RTMFP endpoint (tunnel driver), the overlay
//! and the TAP together. `ringlan up` ([`crate::up`]) loads the config and
//! identity, opens the TAP and starts the control socket and metrics, then
//! hands everything to [`run`].
//!
//! One task owns everything (no locks on the data path): it waits on the
//! UDP socket and timers (through the driver), the TAP, the overlay's
//! timer, a status tick and shutdown.
//!
//! NAT traversal (RFC 7016 3.5.1.5, 3.5.1.6; DESIGN.md "Introduction"):
//! the node registers its local interface addresses with every peer
//! (overlay `Hello`), learns its reflexive address by STUN from the
//! introducers and `stun_servers` (and classifies its NAT's mapping from
//! two answers), and opens a session to a member with every candidate at
//! once ([`assemble_candidates`]): the member's local addresses, its
//! reflexive addresses, and the introducers and other peers that have a
//! session to it, so a Forwarder relays our IHello and the member's RHello
//! punches its NAT while our IHello to its public address punches ours.
//!
//! Per session two flows go each way (flow metadata names the purpose):
//! - `ringlan/control/1`, reliable: overlay control messages;
//! - `ringlan/frames-vnet/1`, never retransmitted: Ethernet frames (TCP
//!   super-frames included) behind their `virtio_net_hdr` and the
//!   overlay's frame header (late frames are worse than lost ones); see
//!   docs/dataplane.md.
//!
//! TAP data path: one wake-up reads up to [`TAP_BATCH`] frames before the
//! driver is flushed, so their datagrams leave together.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ringlan_overlay::wire::{AddrOrigin, TaggedAddr};
use ringlan_overlay::{self as overlay, FrameHeader, Mac, Overlay};
use ringlan_tunnel::crypto::{self, Identity, NetworkName};
use ringlan_tunnel::driver::{os_seed, Driver};
use ringlan_tunnel::endpoint::{EndpointConfig, Event, SessionInfo, Target, REDIRECT_THRESHOLD};
use ringlan_tunnel::flow::{FlowEvent, FlowId, RecvFlowId, Reliability};
use ringlan_tunnel::punch::{self, Birthday, BirthdayConfig};
use ringlan_tunnel::relay::{self, RelayLimits};
use ringlan_tunnel::session::{OpenFailure, SessionId, SessionState as TState};
use ringlan_tunnel::stun::{self, StunTxId};
use ringlan_tunnel::{NodeId, Rng};
use tokio::sync::watch;

use crate::config::{Config, Role};
use crate::identity::{hex, NetworkSecret, NodeKey};
use crate::routes::{self as routes_mod, Routes};
use crate::status::{
    AddressKind, CarriedRoute, KnownAddress, LinkKind, NatMapping, NatStatus, Neighbour, PathKind,
    RelayStatus, RouteTraffic, RoutedPeer, RoutedStatus, SessionState, SessionStatus, Status,
    StatusBoard, TapStatus, Traffic,
};
use crate::tap::{format_mac, Tap, VnetHdr, TAP_MAX_FRAME, VNET_HDR_LEN};

/// Flow metadata of the control flow.
pub const CONTROL_FLOW: &[u8] = b"ringlan/control/1";
/// Flow metadata of the frame flow. Its messages are `virtio_net_hdr`
/// (10 bytes, little-endian), overlay frame header, Ethernet frame
/// (docs/dataplane.md); it replaced `ringlan/frames/1`, which carried no
/// virtio header.
pub const FRAMES_FLOW: &[u8] = b"ringlan/frames-vnet/1";
/// Frames read from the TAP per wake-up before the driver is flushed.
const TAP_BATCH: usize = 64;
/// Ethernet header plus one VLAN tag on top of the TAP MTU.
const FRAME_OVERHEAD: usize = 18;
/// How often STUN servers (and introducers) are asked for our reflexive
/// address; sooner while none answered yet.
const STUN_PERIOD: Duration = Duration::from_secs(60);
const STUN_RETRY: Duration = Duration::from_secs(10);
/// How often interface addresses are re-read.
const IFSCAN_PERIOD: Duration = Duration::from_secs(10);
/// Open attempts that failed in a row before status says "failed".
const FAILED_AFTER: u32 = 2;

// ---- local addresses and candidates ----------------------------------------

/// An interface address with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalIf {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl LocalIf {
    /// Whether `ip` lies in this interface's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let p = u32::from(self.prefix.min(32));
                let mask = u32::MAX.checked_shl(32 - p).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let p = u32::from(self.prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - p).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// Addresses worth telling peers about: not loopback, link-local,
/// unspecified or multicast.
pub fn usable_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_multicast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The up interfaces' usable addresses (getifaddrs), without `exclude`
/// (the TAP: its addresses are inside the overlay).
pub fn interface_addresses(exclude: &str) -> Vec<LocalIf> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as libc::c_uint == 0 {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() == exclude.as_bytes() {
            continue;
        }
        // SAFETY: the family says which sockaddr type it is; the netmask
        // has the same family when present.
        let (ip, prefix) = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes());
                    let prefix = if ifa.ifa_netmask.is_null() {
                        32
                    } else {
                        let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                        m.sin_addr.s_addr.count_ones() as u8
                    };
                    (ip, prefix)
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let ip = IpAddr::from(a.sin6_addr.s6_addr);
                    let prefix = if ifa.ifa_netmask.is_null() {
                        128
                    } else {
                        let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in6);
                        m.sin6_addr
                            .s6_addr
                            .iter()
                            .map(|b| b.count_ones())
                            .sum::<u32>() as u8
                    };
                    (ip, prefix)
                }
                _ => continue,
            }
        };
        if usable_local(ip) && !out.iter().any(|l: &LocalIf| l.ip == ip) {
            out.push(LocalIf { ip, prefix });
        }
    }
    // SAFETY: `head` came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Our local candidate addresses: `listen` itself when bound to one
/// address, else every interface address of a family the socket serves
/// (an IPv6 wildcard socket also serves IPv4), with the listen port.
pub fn local_candidates(ifs: &[LocalIf], listen: SocketAddr) -> Vec<SocketAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    ifs.iter()
        .filter(|l| listen.is_ipv6() || l.ip.is_ipv4())
        .map(|l| SocketAddr::new(l.ip, listen.port()))
        .collect()
}

/// Whether `ip` is on one of our LANs (a direct LAN path).
pub fn in_local_subnet(ifs: &[LocalIf], ip: IpAddr) -> bool {
    ifs.iter().any(|l| l.contains(ip))
}

/// Every candidate address for a session to a member, in the order they
/// are worth trying (all are tried at once; the first RHello wins):
/// the member's local addresses (same LAN), its reflexive addresses, the
/// rest of what the overlay gave, then forwarders (introducers and peers
/// with a session to it, RFC 7016 3.5.1.5). Our own addresses,
/// duplicates and addresses on `avoid` (our own NAT's public address when
/// the member is on our LAN: no hairpin) are left out; at most
/// [`REDIRECT_THRESHOLD`].
pub fn assemble_candidates(
    member: &[TaggedAddr],
    overlay_addrs: &[SocketAddr],
    forwarders: &[SocketAddr],
    own: &[SocketAddr],
    avoid: &[IpAddr],
) -> Vec<SocketAddr> {
    let local = member
        .iter()
        .filter(|a| a.origin == AddrOrigin::Local)
        .map(|a| a.addr);
    let reflexive = member
        .iter()
        .filter(|a| a.origin == AddrOrigin::Reflexive)
        .map(|a| a.addr);
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in local
        .chain(reflexive)
        .chain(overlay_addrs.iter().copied())
        .chain(forwarders.iter().copied())
    {
        if out.len() >= REDIRECT_THRESHOLD {
            break;
        }
        if !out.contains(&a)
            && !own.contains(&a)
            && !avoid.contains(&a.ip())
            && !a.ip().is_unspecified()
            && a.port() != 0
        {
            out.push(a);
        }
    }
    out
}

/// Reflexive addresses and NAT mapping from the latest STUN answer of
/// each server.
pub fn nat_status(mapped: &BTreeMap<SocketAddr, SocketAddr>) -> NatStatus {
    let obs: Vec<(SocketAddr, SocketAddr)> = mapped.iter().map(|(s, m)| (*s, *m)).collect();
    let mapping = match stun::classify_mapping(&obs) {
        stun::NatMapping::EndpointIndependent => NatMapping::EndpointIndependent,
        stun::NatMapping::EndpointDependent => NatMapping::EndpointDependent,
        stun::NatMapping::Unknown => NatMapping::Unknown,
    };
    let mut reflexive: Vec<SocketAddr> = mapped.values().copied().collect();
    reflexive.sort();
    reflexive.dedup();
    NatStatus { mapping, reflexive }
}

/// Everything the runtime needs, owned.
pub struct NodeContext {
    /// The validated config (the secret and key files were checked).
    pub config: Config,
    /// The node's Ed25519 identity.
    pub key: NodeKey,
    /// The network membership secret.
    pub secret: NetworkSecret,
    /// The open TAP device; dropping it removes the interface.
    pub tap: Tap,
    /// Where to publish status snapshots and per-peer counters; read by the
    /// control socket and the metrics endpoint.
    pub status: Arc<StatusBoard>,
}

/// The status of a node that has its TAP but no sessions.
pub fn initial_status(ctx: &NodeContext) -> Status {
    Status {
        node_id: None,
        node_name: ctx.config.node.name.clone(),
        network: ctx.config.network.name.clone(),
        role: ctx.config.role.into(),
        public_key: hex(&ctx.key.public_key()),
        tap: TapStatus {
            name: ctx.tap.name().to_string(),
            mac: format_mac(&ctx.tap.mac()),
            mtu: ctx.tap.mtu(),
            addresses: ctx
                .config
                .interface
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
        },
        listen: Vec::new(),
        addresses: Vec::new(),
        nat: NatStatus::default(),
        sessions: Vec::new(),
        neighbours: None,
        uptime_secs: 0,
        drops: BTreeMap::new(),
        relay: None,
        routed: RoutedStatus::default(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlowKind {
    Control,
    Frames,
}

/// What the runtime keeps per open session.
struct Peer {
    node: NodeId,
    control: FlowId,
    frames: FlowId,
    recv: HashMap<RecvFlowId, FlowKind>,
    tx: Traffic,
    rx: Traffic,
    drops: BTreeMap<String, u64>,
    opened: Instant,
}

impl Peer {
    fn drop_frame(&mut self, reason: &str) {
        *self.drops.entry(reason.to_string()).or_insert(0) += 1;
    }
}

/// The runtime state of one node.
struct Node {
    driver: Driver,
    overlay: Overlay,
    tap: Tap,
    max_frame: usize,
    peers: HashMap<SessionId, Peer>,
    by_node: HashMap<NodeId, SessionId>,
    /// Sessions opened on the overlay's request: (node, addresses).
    opening: HashMap<SessionId, (Option<NodeId>, Vec<SocketAddr>)>,
    /// Sessions the overlay asked to close (no peer_down back).
    closed_by_overlay: HashSet<SessionId>,
    sends: Vec<overlay::FrameSend>,
    /// Frame buffer: TAP reads land at `HEAD` (virtio header, then the
    /// Ethernet frame at `ETH`), leaving head room to write the frame-flow
    /// message's virtio and overlay headers in front of the frame.
    frame_buf: Vec<u8>,
    /// The virtio header of the frame at `frame_buf[ETH..]`.
    vnet: [u8; VNET_HDR_LEN],
    /// Frames dropped before a session was known (no link, oversize).
    local_drops: BTreeMap<String, u64>,
    ready: bool,
    started: Instant,
    listen: SocketAddr,
    tap_name: String,
    /// Interface addresses (re-read every [`IFSCAN_PERIOD`]).
    ifs: Vec<LocalIf>,
    /// Our local candidates, as given to the overlay.
    local_addrs: Vec<SocketAddr>,
    next_ifscan: Instant,
    /// Introducers and `stun_servers`: asked for our reflexive address.
    stun_servers: Vec<SocketAddr>,
    stun_pending: HashMap<StunTxId, SocketAddr>,
    /// Latest mapped address per server.
    mapped: BTreeMap<SocketAddr, SocketAddr>,
    next_stun: Instant,
    /// Local addresses registered with the endpoint per peer (Redirects).
    peer_addrs: HashMap<NodeId, Vec<SocketAddr>>,
    /// Members listed as unreachable in status, since when.
    unreachable_since: HashMap<NodeId, Instant>,
    /// Relayed flow routes (ends we use, routes we carry).
    routes: Routes,
    /// Birthday punching towards members behind the other kind of NAT
    /// (symmetric vs cone-like; docs/nat.md).
    birthday: Birthday,
    punch_rng: Rng,
    is_introducer: bool,
}

const HEAD: usize = FrameHeader::MAX_LEN;
/// Where the Ethernet frame starts in `frame_buf`.
const ETH: usize = HEAD + VNET_HDR_LEN;

/// Runs the node until `shutdown` turns true. Returns when everything it
/// started has stopped; the TAP is removed when `ctx` is dropped on return.
pub async fn run(ctx: NodeContext, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let cfg = &ctx.config;
    let name = NetworkName::new(&cfg.network.name).context("network name")?;
    let identity = Identity::from_secret_key_bytes(*ctx.key.secret_bytes(), &name);
    let node_id = identity.node_id();
    let secret = crypto::NetworkSecret::from_bytes(*ctx.secret.bytes());
    let mut ecfg = EndpointConfig::new(identity, name, secret);
    ecfg.redirector = cfg.role == Role::Introducer;
    ecfg.stun_responder = cfg.role == Role::Introducer;
    // Keepalives hold NAT mappings; a peer is dead after three missed.
    ecfg.session.keepalive = cfg.keepalive;
    ecfg.session.dead_after = cfg.keepalive * 3;
    ecfg.relay = RelayLimits {
        enabled: cfg.relay.enabled,
        max_routes: cfg.relay.max_routes,
        max_mbps: cfg.relay.max_mbps,
        max_total_mbps: cfg.relay.max_total_mbps,
    };
    let driver = Driver::bind(cfg.listen.socket_addr(), ecfg)
        .await
        .with_context(|| format!("binding UDP {}", cfg.listen.socket_addr()))?;
    let listen = driver.local_addr()?;

    let mut introducers = Vec::new();
    for hp in &cfg.introducers {
        match hp.resolve().await {
            Ok(a) => introducers.extend(a),
            Err(e) => tracing::warn!(introducer = %hp, error = %e, "cannot resolve introducer"),
        }
    }
    let mut stun_servers = introducers.clone();
    for hp in &cfg.stun_servers {
        match hp.resolve().await {
            Ok(a) => stun_servers.extend(a),
            Err(e) => tracing::warn!(server = %hp, error = %e, "cannot resolve STUN server"),
        }
    }
    stun_servers.retain(|a| *a != listen);
    stun_servers.dedup();
    let now = Instant::now();
    let orole = match cfg.role {
        Role::Node => overlay::Role::Node,
        Role::Introducer => overlay::Role::Introducer,
    };
    let mut ocfg = overlay::Config::new(
        node_id,
        cfg.node.name.clone(),
        orole,
        Some(Mac(ctx.tap.mac())),
    );
    ocfg.introducers = introducers;
    ocfg.relays = cfg.relay.enabled;
    let mut ov = Overlay::new(now, ocfg, Rng::from_seed(os_seed()?))
        .map_err(|e| anyhow::anyhow!("overlay config: {e}"))?;
    let tap_name = ctx.tap.name().to_string();
    let ifs = interface_addresses(&tap_name);
    let local_addrs = local_candidates(&ifs, listen);
    ov.set_local_addresses(now, &local_addrs);

    let mut status = initial_status(&ctx);
    status.node_id = Some(node_id.to_string());
    status.listen = vec![listen];
    status.addresses = local_addrs
        .iter()
        .map(|&addr| KnownAddress {
            addr,
            kind: AddressKind::Local,
        })
        .collect();
    ctx.status.publish(status.clone());
    tracing::info!(
        node = %node_id,
        tap = ctx.tap.name(),
        mac = %format_mac(&ctx.tap.mac()),
        role = ctx.config.role.as_str(),
        %listen,
        "node up"
    );

    let NodeContext {
        config: _,
        tap,
        status: board,
        ..
    } = ctx;
    let max_frame = tap.mtu() as usize + FRAME_OVERHEAD;
    let mut node = Node {
        driver,
        overlay: ov,
        tap,
        max_frame,
        peers: HashMap::new(),
        by_node: HashMap::new(),
        opening: HashMap::new(),
        closed_by_overlay: HashSet::new(),
        sends: Vec::new(),
        frame_buf: vec![0u8; ETH + TAP_MAX_FRAME],
        vnet: [0u8; VNET_HDR_LEN],
        local_drops: BTreeMap::new(),
        ready: false,
        started: now,
        listen,
        tap_name,
        ifs,
        local_addrs,
        next_ifscan: now + IFSCAN_PERIOD,
        stun_servers,
        stun_pending: HashMap::new(),
        mapped: BTreeMap::new(),
        next_stun: now,
        peer_addrs: HashMap::new(),
        unreachable_since: HashMap::new(),
        routes: Routes::new(node_id, Rng::from_seed(os_seed()?)),
        birthday: Birthday::new(BirthdayConfig::default()),
        punch_rng: Rng::from_seed(os_seed()?),
        is_introducer: cfg.role == Role::Introducer,
    };
    node.housekeeping(now);
    if cfg.role == Role::Introducer {
        node.ready = true;
        crate::service::notify_ready(&format!("introducer listening on {listen}"));
    }
    node.process_overlay(Instant::now()).await;
    node.driver.flush();

    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Relayed routes react faster than the status tick: a failing punch
    // gets routes RELAY_AFTER after it started, not up to a second later.
    let mut route_tick = tokio::time::interval(routes_mod::TICK);
    route_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let odeadline = node.overlay.poll_timeout();
        let osleep = async {
            match odeadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() { break; }
            }
            ev = node.driver.next_event() => {
                node.handle_event(ev).await;
            }
            r = node.tap.recv(&mut node.frame_buf[HEAD..]) => match r {
                Ok(n) => {
                    node.frame_from_tap(n);
                    node.drain_tap();
                }
                Err(e) => {
                    tracing::error!(error = %e, "TAP read failed");
                    break;
                }
            },
            _ = osleep => {
                node.overlay.handle_timeout(Instant::now());
            }
            _ = tick.tick() => {
                node.housekeeping(Instant::now());
                board.publish(node.status(&status));
            }
            _ = route_tick.tick() => {
                let now = Instant::now();
                node.with_routes(now, |r, cx| r.tick(now, cx));
            }
        }
        node.process_overlay(Instant::now()).await;
        node.driver.flush();
    }

    // Orderly shutdown: tell the overlay neighbours, close every session so
    // peers notice at once, give the Close Requests a moment to leave.
    tracing::info!("node stopping");
    let now = Instant::now();
    node.overlay.leave(now);
    node.process_overlay(now).await;
    node.driver.flush();
    node.driver.endpoint().close_all(now, false);
    node.driver.flush();
    let linger = tokio::time::sleep(std::time::Duration::from_millis(300));
    tokio::pin!(linger);
    loop {
        tokio::select! {
            _ = &mut linger => break,
            _ = node.driver.next_event() => {}
        }
    }
    node.driver.flush();
    board.publish(Status {
        sessions: Vec::new(),
        ..node.status(&status)
    });
    Ok(())
}

impl Node {
    /// A read of `n` bytes (virtio header and frame) sits at
    /// `frame_buf[HEAD..HEAD + n]`.
    fn frame_from_tap(&mut self, n: usize) {
        let now = Instant::now();
        let Some(len) = n.checked_sub(VNET_HDR_LEN) else {
            *self.local_drops.entry("short".into()).or_insert(0) += 1;
            return;
        };
        self.vnet.copy_from_slice(&self.frame_buf[HEAD..ETH]);
        if let Err(r) = VnetHdr::parse(&self.vnet).check(len, self.max_frame) {
            *self.local_drops.entry(r.as_str().into()).or_insert(0) += 1;
            return;
        }
        let frame = &self.frame_buf[ETH..ETH + len];
        self.overlay.frame_from_tap(now, frame, &mut self.sends);
        let sends = std::mem::take(&mut self.sends);
        for s in &sends {
            self.send_frame(now, s, len);
        }
        self.sends = sends;
    }

    /// Reads what else the TAP has queued, up to [`TAP_BATCH`] frames per
    /// wake-up in all, so that the driver flushes their datagrams together.
    fn drain_tap(&mut self) {
        for _ in 1..TAP_BATCH {
            match self.tap.try_recv(&mut self.frame_buf[HEAD..]) {
                Ok(n) => self.frame_from_tap(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "TAP read failed");
                    break;
                }
            }
        }
    }

    /// Send the frame at `frame_buf[ETH..ETH + len]` (virtio header in
    /// `self.vnet`) as one frame-flow message: the virtio header and the
    /// header of `s` are written in place in front of it.
    fn send_frame(&mut self, now: Instant, s: &overlay::FrameSend, len: usize) {
        let Some(&sid) = self.by_node.get(&s.to) else {
            *self.local_drops.entry("no_session".into()).or_insert(0) += 1;
            return;
        };
        let mut hdr = [0u8; HEAD];
        let Ok(h) = s.header.encode(&mut hdr) else {
            return;
        };
        // h <= HEAD, so the message starts at HEAD - h >= 0.
        let start = ETH - h - VNET_HDR_LEN;
        self.frame_buf[ETH - h..ETH].copy_from_slice(&hdr[..h]);
        self.frame_buf[start..ETH - h].copy_from_slice(&self.vnet);
        let Some(peer) = self.peers.get_mut(&sid) else {
            return;
        };
        let msg = &self.frame_buf[start..ETH + len];
        match self
            .driver
            .endpoint()
            .send(now, sid, peer.frames, msg, Reliability::NoRetransmit)
        {
            Ok(()) => {
                peer.tx.frames += 1;
                peer.tx.bytes += len as u64;
            }
            Err(e) => {
                tracing::trace!(error = %e, "frame not queued");
                peer.drop_frame("send_queue");
            }
        }
    }

    async fn handle_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::SessionOpened {
                session,
                peer,
                remote,
                role,
            } => {
                let ep = self.driver.endpoint();
                let (Ok(control), Ok(frames)) = (
                    ep.open_flow(session, CONTROL_FLOW, None),
                    ep.open_flow(session, FRAMES_FLOW, None),
                ) else {
                    tracing::warn!(%peer, "cannot open flows; closing session");
                    ep.close(now, session, false);
                    return;
                };
                let requested = self.opening.remove(&session);
                let is_introducer = requested.as_ref().is_some_and(|(n, _)| n.is_none());
                tracing::info!(peer = %peer, %remote, ?role, is_introducer, "session open");
                if let Some(old) = self.by_node.insert(peer, session) {
                    if old != session {
                        // A newer session replaced an older one to the same node.
                        self.peers.remove(&old);
                        self.driver.endpoint().close(now, old, false);
                        self.closed_by_overlay.insert(old);
                    }
                }
                self.peers.insert(
                    session,
                    Peer {
                        node: peer,
                        control,
                        frames,
                        recv: HashMap::new(),
                        tx: Traffic::default(),
                        rx: Traffic::default(),
                        drops: BTreeMap::new(),
                        opened: now,
                    },
                );
                let direct = (!relay::is_route_addr(&remote)).then_some(remote);
                self.overlay.peer_up(now, peer, direct, is_introducer);
                // Punching towards this member is over once a direct path
                // opened it (a relayed session goes on punching to move).
                if !relay::is_route_addr(&remote) {
                    self.birthday.succeeded(peer);
                    self.driver.stop_punching(remote.ip());
                }
                if !self.ready {
                    self.ready = true;
                    crate::service::notify_ready("first session open");
                }
            }
            Event::SessionFailed { session, reason } => {
                let req = self.opening.remove(&session);
                match reason {
                    OpenFailure::Duplicate(_) => {}
                    _ => {
                        if let Some((node, addrs)) = req {
                            tracing::info!(?node, ?addrs, ?reason, "session failed to open");
                            self.overlay.open_failed(now, node, &addrs);
                        }
                    }
                }
            }
            Event::SessionClosed {
                session,
                peer,
                reason,
            } => {
                tracing::info!(%peer, ?reason, "session closed");
                self.peers.remove(&session);
                let by_overlay = self.closed_by_overlay.remove(&session);
                if self.by_node.get(&peer) == Some(&session) {
                    self.by_node.remove(&peer);
                    if !by_overlay {
                        self.overlay.peer_down(now, peer);
                    }
                }
            }
            Event::AddressChanged { session, from, to } => {
                tracing::info!(?session, %from, %to, "peer address changed");
                // Tell the other links (RFC 7016 3.5.1.5 re-introduction):
                // a peer whose NAT only lets the old address in probes it.
                // Route addresses mean something only here.
                if let Some(node) = self.peers.get(&session).map(|p| p.node) {
                    if self.by_node.get(&node) == Some(&session) {
                        let direct = (!relay::is_route_addr(&to)).then_some(to);
                        self.overlay.peer_moved(now, node, direct);
                        if direct.is_some() && relay::is_route_addr(&from) {
                            // A relayed session went direct.
                            self.birthday.succeeded(node);
                            self.driver.stop_punching(to.ip());
                        }
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
            Event::StunResult { tx, server, mapped } => {
                self.stun_pending.remove(&tx);
                match self.mapped.insert(server, mapped) {
                    Some(old) if old != mapped => {
                        tracing::info!(%server, %old, %mapped, "reflexive address changed");
                        self.overlay.reflexive_changed(now, mapped);
                    }
                    Some(_) => {}
                    None => tracing::info!(%server, %mapped, "reflexive address"),
                }
            }
            Event::StunFailed { tx, server } => {
                self.stun_pending.remove(&tx);
                tracing::debug!(%server, "STUN query unanswered");
            }
            Event::Flow { session, event } => self.handle_flow(now, session, event).await,
        }
    }

    async fn handle_flow(&mut self, now: Instant, session: SessionId, event: FlowEvent) {
        match event {
            FlowEvent::IncomingFlow { flow, metadata, .. } => {
                let kind = match metadata.as_slice() {
                    CONTROL_FLOW => Some(FlowKind::Control),
                    FRAMES_FLOW => Some(FlowKind::Frames),
                    _ => None,
                };
                match (kind, self.peers.get_mut(&session)) {
                    (Some(k), Some(p)) => {
                        p.recv.insert(flow, k);
                    }
                    _ => self.driver.endpoint().reject_flow(session, flow, 1),
                }
            }
            FlowEvent::Message { flow, data } => {
                let Some(p) = self.peers.get_mut(&session) else {
                    self.driver.endpoint().recycle(session, data);
                    return;
                };
                let from = p.node;
                match p.recv.get(&flow) {
                    Some(FlowKind::Control) => {
                        self.overlay.handle_control(now, from, &data);
                        self.sync_peer_addresses(from);
                    }
                    Some(FlowKind::Frames) => self.frame_from_peer(now, session, from, &data).await,
                    None => {}
                }
                self.driver.endpoint().recycle(session, data);
            }
            FlowEvent::RecvFlowComplete { .. }
            | FlowEvent::RecvFlowAborted { .. }
            | FlowEvent::Gap { .. }
            | FlowEvent::SendFlowComplete { .. } => {}
            FlowEvent::SendFlowRejected { flow, code } => {
                tracing::warn!(?session, ?flow, code, "peer rejected a flow");
            }
        }
    }

    /// A frame-flow message: virtio header, overlay frame header, frame.
    async fn frame_from_peer(
        &mut self,
        now: Instant,
        session: SessionId,
        from: NodeId,
        msg: &[u8],
    ) {
        let max = self.max_frame;
        let Some((vnet, rest)) = msg.split_first_chunk::<VNET_HDR_LEN>() else {
            if let Some(p) = self.peers.get_mut(&session) {
                p.drop_frame("short");
            }
            return;
        };
        let result = self
            .overlay
            .frame_from_peer(now, from, rest, &mut self.sends);
        let Some(p) = self.peers.get_mut(&session) else {
            return;
        };
        let (frame, to_tap) = match result {
            Ok(r) => (r.frame, r.to_tap),
            Err(r) => {
                p.drop_frame(&format!("{r:?}").to_lowercase());
                return;
            }
        };
        // Never truncate: a frame our TAP cannot carry is dropped, and only
        // GSO super-frames may exceed the MTU.
        if let Err(r) = VnetHdr::parse(vnet).check(frame.len(), max) {
            p.drop_frame(r.as_str());
            self.sends.clear();
            return;
        }
        let n = frame.len();
        if to_tap {
            p.rx.frames += 1;
            p.rx.bytes += n as u64;
            if let Err(e) = self.tap.send(vnet, frame).await {
                tracing::debug!(error = %e, "TAP write failed");
                p.drop_frame("tap_write");
            }
        }
        if !self.sends.is_empty() {
            // Bounded-flood or routed forwards of the same frame.
            self.vnet = *vnet;
            self.frame_buf[ETH..ETH + n].copy_from_slice(frame);
            let sends = std::mem::take(&mut self.sends);
            for s in &sends {
                self.send_frame(now, s, n);
            }
            self.sends = sends;
        }
    }

    /// Carry out what the overlay asked for.
    async fn process_overlay(&mut self, now: Instant) {
        while let Some(a) = self.overlay.poll_action() {
            match a {
                overlay::Action::OpenSession { node, addrs } => {
                    let target = node.map(Target::Node).unwrap_or(Target::Any);
                    let cands = match node {
                        Some(id) => self.candidates_for(id, &addrs),
                        None => addrs.clone(),
                    };
                    match self.driver.endpoint().connect(now, target, &cands) {
                        Ok(sid) => {
                            if let Some(p) = self.peers.get(&sid) {
                                // Already open: remind the overlay.
                                let remote = self
                                    .driver
                                    .endpoint_ref()
                                    .session_info(sid)
                                    .map(|i| i.remote);
                                if let Some(remote) = remote {
                                    let direct = (!relay::is_route_addr(&remote)).then_some(remote);
                                    self.overlay.peer_up(now, p.node, direct, node.is_none());
                                }
                            } else {
                                self.opening.insert(sid, (node, addrs));
                            }
                        }
                        Err(e) => {
                            tracing::debug!(?node, error = %e, "cannot open session");
                            self.overlay.open_failed(now, node, &addrs);
                        }
                    }
                }
                overlay::Action::CloseSession { node } => {
                    if let Some(sid) = self.by_node.remove(&node) {
                        self.closed_by_overlay.insert(sid);
                        self.peers.remove(&sid);
                        self.driver.endpoint().close(now, sid, false);
                    }
                }
                overlay::Action::ProbePath { node, addr } => {
                    let Some(&sid) = self.by_node.get(&node) else {
                        continue;
                    };
                    let ep = self.driver.endpoint();
                    let remote = ep.session_info(sid).map(|i| i.remote);
                    if remote.is_some_and(|r| r != addr) && ep.probe_path(now, sid, addr) {
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
                other => tracing::info!(event = ?other, "overlay"),
            }
        }
    }

    fn send_control(&mut self, now: Instant, to: NodeId, bytes: &[u8]) {
        let Some(&sid) = self.by_node.get(&to) else {
            tracing::debug!(%to, "control message for a node without session");
            return;
        };
        let Some(p) = self.peers.get(&sid) else {
            return;
        };
        let control = p.control;
        if let Err(e) = self
            .driver
            .endpoint()
            .send(now, sid, control, bytes, Reliability::Reliable)
        {
            tracing::warn!(%to, error = %e, "control message not sent");
        }
    }

    /// Run `f` on the relayed routes with the endpoint and session maps,
    /// then send what it produced.
    fn with_routes(&mut self, now: Instant, f: impl FnOnce(&mut Routes, &mut routes_mod::Ctx<'_>)) {
        let mut cx = routes_mod::Ctx {
            ep: self.driver.endpoint(),
            overlay: &self.overlay,
            by_node: &self.by_node,
            opening: &self.opening,
        };
        f(&mut self.routes, &mut cx);
        for (to, msg) in self.routes.take_outbox() {
            match msg.encode() {
                Ok(bytes) => self.send_control(now, to, &bytes),
                Err(e) => tracing::warn!(%to, error = %e, "route message not encoded"),
            }
        }
        for c in self.routes.take_connects() {
            self.opening
                .entry(c.session)
                .or_insert((Some(c.node), Vec::new()));
        }
    }

    /// Node-wide drops: the endpoint's refused datagrams (`udp_` reason)
    /// and frames dropped before reaching a session.
    fn node_drops(&self) -> BTreeMap<String, u64> {
        let mut d = self.local_drops.clone();
        for (reason, n) in &self.driver.endpoint_ref().stats().drops {
            if *n > 0 {
                d.insert(format!("udp_{}", reason.as_str()), *n);
            }
        }
        let errs = self.driver.send_errors();
        if errs > 0 {
            d.insert("udp_send_error".into(), errs);
        }
        d
    }

    fn status(&self, base: &Status) -> Status {
        let now = Instant::now();
        let ep = self.driver.endpoint_ref();
        let names: HashMap<NodeId, String> = self
            .overlay
            .neighbours()
            .into_iter()
            .filter(|n| !n.name.is_empty())
            .map(|n| (n.node, n.name))
            .collect();
        let mut sessions: Vec<SessionStatus> = self
            .peers
            .iter()
            .filter_map(|(sid, p)| {
                let info: SessionInfo = ep.session_info(*sid)?;
                let drops = p.drops.clone();
                Some(SessionStatus {
                    peer_id: p.node.to_string(),
                    peer_name: names
                        .get(&p.node)
                        .cloned()
                        .or_else(|| self.overlay.member(p.node).map(|m| m.name.clone())),
                    remote: Some(info.remote),
                    path: if let Some(v) = self.routes.view(p.node, info.remote) {
                        let relays: Vec<String> = v
                            .relays
                            .iter()
                            .map(|n| self.node_name(&names, *n))
                            .collect();
                        PathKind::Relayed {
                            via: relays.join(">"),
                            standby: v.standby,
                        }
                    } else if relay::is_route_addr(&info.remote) {
                        PathKind::Relayed {
                            via: "?".into(),
                            standby: 0,
                        }
                    } else if in_local_subnet(&self.ifs, info.remote.ip()) {
                        PathKind::DirectLan
                    } else {
                        PathKind::DirectNat
                    },
                    state: match info.state {
                        TState::IHelloSent | TState::KeyingSent => SessionState::Opening,
                        TState::Open => SessionState::Open,
                        TState::NearClose | TState::FarCloseLinger => SessionState::Closing,
                        TState::Closed | TState::OpenFailed => SessionState::Closed,
                    },
                    rtt_ms: info.srtt.map(|d| d.as_secs_f64() * 1000.0),
                    tx: p.tx,
                    rx: p.rx,
                    drops,
                    age_secs: now.saturating_duration_since(p.opened).as_secs(),
                    reason: if relay::is_route_addr(&info.remote) {
                        Some("no direct path".into())
                    } else {
                        self.lan_hint(p.node, info.remote)
                    },
                })
            })
            .collect();
        for a in self.overlay.open_attempts() {
            if self.by_node.contains_key(&a.node) {
                continue;
            }
            let since = self.unreachable_since.get(&a.node).copied().unwrap_or(now);
            sessions.push(SessionStatus {
                peer_id: a.node.to_string(),
                peer_name: self.overlay.member(a.node).map(|m| m.name.clone()),
                remote: None,
                path: PathKind::None,
                state: if a.failures >= FAILED_AFTER {
                    SessionState::Failed
                } else {
                    SessionState::Opening
                },
                rtt_ms: None,
                tx: Traffic::default(),
                rx: Traffic::default(),
                drops: BTreeMap::new(),
                age_secs: now.saturating_duration_since(since).as_secs(),
                reason: Some("no direct path".into()),
            });
        }
        sessions.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let nat = nat_status(&self.mapped);
        let mut addresses: Vec<KnownAddress> = self
            .local_addrs
            .iter()
            .map(|&addr| KnownAddress {
                addr,
                kind: AddressKind::Local,
            })
            .collect();
        for &addr in &nat.reflexive {
            if !self.local_addrs.contains(&addr) {
                addresses.push(KnownAddress {
                    addr,
                    kind: AddressKind::Reflexive,
                });
            }
        }
        let neighbours = self
            .overlay
            .neighbours()
            .into_iter()
            .map(|n| Neighbour {
                node_id: n.node.to_string(),
                name: (!n.name.is_empty()).then_some(n.name),
                link: match n.kind {
                    overlay::LinkKind::Successor => LinkKind::Successor,
                    overlay::LinkKind::Predecessor => LinkKind::Predecessor,
                    overlay::LinkKind::Introducer => LinkKind::Introducer,
                    overlay::LinkKind::Long => LinkKind::Long,
                    overlay::LinkKind::OnDemand => LinkKind::OnDemand,
                    overlay::LinkKind::Other => LinkKind::Other,
                },
            })
            .collect();
        Status {
            addresses,
            nat,
            sessions,
            neighbours: Some(neighbours),
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            drops: self.node_drops(),
            relay: Some(self.relay_status(now, &names)),
            routed: RoutedStatus {
                peers: self
                    .overlay
                    .routed_counters()
                    .map(|(id, c)| RoutedPeer {
                        peer_id: id.to_string(),
                        peer_name: self
                            .overlay
                            .member(id)
                            .map(|m| m.name.clone())
                            .filter(|n| !n.is_empty()),
                        tx: Traffic {
                            frames: c.sent_frames,
                            bytes: c.sent_bytes,
                        },
                        rx: Traffic {
                            frames: c.delivered_frames,
                            bytes: c.delivered_bytes,
                        },
                    })
                    .collect(),
                forwarded: self.overlay.stats().routed_forwarded,
            },
            ..base.clone()
        }
    }

    /// A node's name for status: from its `Hello`, the member list, or
    /// its short id.
    fn node_name(&self, names: &HashMap<NodeId, String>, n: NodeId) -> String {
        names
            .get(&n)
            .cloned()
            .or_else(|| self.overlay.member(n).map(|m| m.name.clone()))
            .unwrap_or_else(|| n.short())
    }

    /// The routes this node carries, with the endpoint's counters.
    fn relay_status(&self, now: Instant, names: &HashMap<NodeId, String>) -> RelayStatus {
        let ep = self.driver.endpoint_ref();
        let limits = ep.relay_limits();
        let entries: HashMap<u32, ringlan_tunnel::relay::RouteInfo> =
            ep.routes(now).into_iter().map(|i| (i.id, i)).collect();
        let traffic = |id: u32| {
            entries
                .get(&id)
                .map_or(RouteTraffic::default(), |i| RouteTraffic {
                    packets: i.tx.packets,
                    bytes: i.tx.bytes,
                    dropped: i.rx.dropped + i.tx.dropped,
                })
        };
        let name = |n: NodeId| self.node_name(names, n);
        RelayStatus {
            enabled: limits.enabled,
            max_routes: limits.max_routes,
            routes: self
                .routes
                .carried(now)
                .into_iter()
                .map(|c| CarriedRoute {
                    origin: c.origin.to_string(),
                    target: c.target.to_string(),
                    from: name(c.up),
                    to: name(c.down),
                    ready: c.ready,
                    forward: traffic(c.up_in),
                    back: traffic(c.down_in),
                    age_secs: c.age.as_secs(),
                })
                .collect(),
        }
    }

    /// Periodic work on the status tick: re-read interface addresses (and
    /// tell the overlay when they change), ask the STUN servers again,
    /// remember since when members have been unreachable.
    fn housekeeping(&mut self, now: Instant) {
        if now >= self.next_ifscan {
            self.next_ifscan = now + IFSCAN_PERIOD;
            self.ifs = interface_addresses(&self.tap_name);
            let local = local_candidates(&self.ifs, self.listen);
            if local != self.local_addrs {
                tracing::info!(addresses = ?local, "local addresses changed");
                self.local_addrs = local;
                self.overlay.set_local_addresses(now, &self.local_addrs);
            }
        }
        if now >= self.next_stun && !self.stun_servers.is_empty() {
            let answered = !self.mapped.is_empty();
            self.next_stun = now + if answered { STUN_PERIOD } else { STUN_RETRY };
            for i in 0..self.stun_servers.len() {
                let server = self.stun_servers[i];
                if self.stun_pending.values().any(|s| *s == server) {
                    continue;
                }
                match self.driver.endpoint().stun_query(now, server) {
                    Ok(tx) => {
                        self.stun_pending.insert(tx, server);
                    }
                    Err(e) => tracing::debug!(%server, error = %e, "STUN query not sent"),
                }
            }
            self.driver.flush();
        }
        self.birthday_punch(now);
        let attempts = self.overlay.open_attempts();
        self.unreachable_since
            .retain(|n, _| attempts.iter().any(|a| a.node == *n));
        for a in attempts {
            self.unreachable_since.entry(a.node).or_insert(now);
        }
    }

    /// Birthday punching (tunnel `punch`, docs/nat.md): for every session
    /// the overlay asked for that is still in IHELLO_SENT, hand the planner
    /// the member's reflexive address; it answers, by our own NAT's mapping
    /// behaviour, with extra sockets (symmetric side) or a spray of the
    /// member's public IP (cone-like side) once the plain punch has had
    /// its time, in bounded rounds. Only members (the overlay learnt them
    /// from an authenticated session) are ever punched; never on the LAN
    /// or behind our own NAT.
    /// What a birthday punch sends: the IHello of a session still
    /// opening, or a one-Ping probe of a relayed one.
    fn punch_payload(&mut self, now: Instant, session: SessionId) -> Option<Vec<u8>> {
        let ep = self.driver.endpoint();
        ep.ihello_datagram(session)
            .or_else(|| ep.probe_datagram(now, session))
    }

    fn birthday_punch(&mut self, now: Instant) {
        if self.is_introducer {
            return;
        }
        let own = match nat_status(&self.mapped).mapping {
            NatMapping::EndpointIndependent => stun::NatMapping::EndpointIndependent,
            NatMapping::EndpointDependent => stun::NatMapping::EndpointDependent,
            NatMapping::Unknown => stun::NatMapping::Unknown,
        };
        let public: Vec<IpAddr> = self.mapped.values().map(|a| a.ip()).collect();
        let ep = self.driver.endpoint_ref();
        // Sessions still opening, and sessions open over a relayed route
        // (the punch moves them to a direct path).
        let relayed = self.by_node.iter().filter_map(|(node, sid)| {
            let info = ep.session_info(*sid)?;
            (info.state == TState::Open && relay::is_route_addr(&info.remote))
                .then_some((*sid, Some(*node)))
        });
        let opening = self.opening.iter().filter_map(|(sid, (node, _))| {
            let node = (*node)?;
            if self.by_node.contains_key(&node) {
                return None;
            }
            (ep.session_info(*sid)?.state == TState::IHelloSent).then_some((*sid, Some(node)))
        });
        let candidates: Vec<(SessionId, Option<NodeId>)> = opening.chain(relayed).collect();
        let attempts: Vec<punch::Attempt> = candidates
            .iter()
            .filter_map(|(sid, node)| {
                let node = (*node)?;
                let m = self.overlay.member(node)?;
                let on_lan = m.addrs.iter().any(|a| {
                    a.origin == AddrOrigin::Local && in_local_subnet(&self.ifs, a.addr.ip())
                });
                let reflexive = m
                    .addrs
                    .iter()
                    .find(|a| a.origin == AddrOrigin::Reflexive && !relay::is_route_addr(&a.addr))
                    .map(|a| a.addr)
                    .filter(|a| !on_lan && !public.contains(&a.ip()));
                Some(punch::Attempt {
                    peer: node,
                    session: *sid,
                    reflexive,
                })
            })
            .collect();
        let actions = self.birthday.poll(now, own, &attempts, &mut self.punch_rng);
        for a in actions {
            match a {
                punch::Action::OpenSockets {
                    peer,
                    session,
                    dest,
                    count,
                    lifetime,
                } => {
                    let Some(hello) = self.punch_payload(now, session) else {
                        continue;
                    };
                    match self
                        .driver
                        .open_punch_sockets(dest, &hello, count, lifetime)
                    {
                        Ok(n) => {
                            tracing::info!(%peer, %dest, sockets = n, "birthday punch: extra sockets opened")
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "birthday punch: cannot open sockets")
                        }
                    }
                }
                punch::Action::Spray {
                    peer,
                    session,
                    plan,
                } => {
                    let Some(hello) = self.punch_payload(now, session) else {
                        continue;
                    };
                    tracing::info!(%peer, ip = %plan.ip(), probes = plan.remaining(), "birthday punch: spraying");
                    self.driver.spray(plan, hello);
                }
            }
        }
    }

    /// Register a peer's local addresses with the endpoint so Redirects
    /// (introducers) list them next to the observed address.
    fn sync_peer_addresses(&mut self, peer: NodeId) {
        let Some(m) = self.overlay.member(peer) else {
            return;
        };
        let local: Vec<SocketAddr> = m
            .addrs
            .iter()
            .filter(|a| a.origin == AddrOrigin::Local)
            .map(|a| a.addr)
            .collect();
        if self.peer_addrs.get(&peer) != Some(&local) {
            self.driver
                .endpoint()
                .set_peer_addresses(peer, local.clone());
            self.peer_addrs.insert(peer, local);
        }
    }

    /// Candidates for a session to member `id` (see
    /// [`assemble_candidates`]).
    fn candidates_for(&self, id: NodeId, addrs: &[SocketAddr]) -> Vec<SocketAddr> {
        let ep = self.driver.endpoint_ref();
        let forwarders: Vec<SocketAddr> = self
            .overlay
            .forwarders_for(id)
            .into_iter()
            .filter_map(|f| self.by_node.get(&f))
            .filter_map(|sid| ep.session_info(*sid))
            .map(|i| i.remote)
            .collect();
        let member: &[TaggedAddr] = self
            .overlay
            .member(id)
            .map(|m| m.addrs.as_slice())
            .unwrap_or(&[]);
        let mut own = self.local_addrs.clone();
        own.extend(self.mapped.values().copied());
        // Behind our own NAT (its reflexive address has our public IP) and
        // on one of our LANs: the LAN path only, no hairpin through the NAT.
        let public: Vec<IpAddr> = self.mapped.values().map(|a| a.ip()).collect();
        let same_nat = member
            .iter()
            .any(|a| a.origin == AddrOrigin::Reflexive && public.contains(&a.addr.ip()));
        let on_lan = member
            .iter()
            .any(|a| a.origin == AddrOrigin::Local && in_local_subnet(&self.ifs, a.addr.ip()));
        if same_nat && on_lan {
            // Forwarders would answer with Redirects to the public address.
            return assemble_candidates(member, addrs, &[], &own, &public);
        }
        let mut c = assemble_candidates(member, addrs, &forwarders, &own, &[]);
        // Relayed routes already set up to it (RELAY_AFTER a failing punch).
        c.extend(self.routes.addrs_for(id));
        c
    }

    /// A note for a session through NAT to a peer that has a local address
    /// on one of our LANs (a hairpin path; we do not move the session).
    fn lan_hint(&self, peer: NodeId, remote: SocketAddr) -> Option<String> {
        if in_local_subnet(&self.ifs, remote.ip()) {
            return None;
        }
        let m = self.overlay.member(peer)?;
        let lan = m.addrs.iter().find(|a| {
            a.origin == AddrOrigin::Local
                && a.addr != remote
                && in_local_subnet(&self.ifs, a.addr.ip())
        })?;
        Some(format!("LAN address {} not used", lan.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tagged(origin: AddrOrigin, a: &str) -> TaggedAddr {
        TaggedAddr {
            origin,
            addr: sa(a),
        }
    }

    #[test]
    fn candidates_local_first_then_reflexive_then_forwarders() {
        let member = [
            tagged(AddrOrigin::Reflexive, "203.0.113.2:40000"),
            tagged(AddrOrigin::Local, "10.0.2.2:4910"),
            tagged(AddrOrigin::Local, "192.168.1.5:4910"),
        ];
        let overlay = [sa("203.0.113.2:40000"), sa("198.51.100.50:4910")];
        let forwarders = [sa("198.51.100.7:4910"), sa("203.0.113.9:4910")];
        let own = [sa("192.168.1.5:4910")];
        assert_eq!(
            assemble_candidates(&member, &overlay, &forwarders, &own, &[]),
            vec![
                sa("10.0.2.2:4910"),
                sa("203.0.113.2:40000"),
                sa("198.51.100.50:4910"),
                sa("198.51.100.7:4910"),
                sa("203.0.113.9:4910"),
            ]
        );
        // Same NAT as ours: no hairpin to its public address.
        let avoid = ["203.0.113.2".parse().unwrap()];
        assert_eq!(
            assemble_candidates(&member, &overlay, &forwarders, &own, &avoid),
            vec![
                sa("10.0.2.2:4910"),
                sa("198.51.100.50:4910"),
                sa("198.51.100.7:4910"),
                sa("203.0.113.9:4910"),
            ]
        );
    }

    #[test]
    fn candidates_are_capped_and_skip_unusable() {
        let member: Vec<TaggedAddr> = (0..30)
            .map(|i| tagged(AddrOrigin::Local, &format!("10.0.0.{}:4910", i + 1)))
            .collect();
        let fwd = [sa("198.51.100.7:4910")];
        let c = assemble_candidates(&member, &[sa("0.0.0.0:4910")], &fwd, &[], &[]);
        assert_eq!(c.len(), REDIRECT_THRESHOLD);
        assert!(!c.contains(&sa("0.0.0.0:4910")));
        // With few member addresses the forwarder is always included.
        let c = assemble_candidates(&member[..3], &[sa("10.0.0.9:0")], &fwd, &[], &[]);
        assert_eq!(c.len(), 4);
        assert_eq!(c[3], fwd[0]);
    }

    #[test]
    fn subnets_and_local_candidates() {
        let ifs = [
            LocalIf {
                ip: "192.168.1.5".parse().unwrap(),
                prefix: 24,
            },
            LocalIf {
                ip: "2001:db8:1::5".parse().unwrap(),
                prefix: 64,
            },
        ];
        assert!(in_local_subnet(&ifs, "192.168.1.200".parse().unwrap()));
        assert!(!in_local_subnet(&ifs, "192.168.2.1".parse().unwrap()));
        assert!(in_local_subnet(&ifs, "2001:db8:1::99".parse().unwrap()));
        assert!(!in_local_subnet(&ifs, "2001:db8:2::1".parse().unwrap()));
        assert!(!in_local_subnet(
            &ifs,
            "::ffff:192.168.1.1".parse().unwrap()
        ));
        let all = LocalIf {
            ip: "10.0.0.1".parse().unwrap(),
            prefix: 0,
        };
        assert!(all.contains("198.51.100.1".parse().unwrap()));
        assert_eq!(
            local_candidates(&ifs, sa("0.0.0.0:4910")),
            vec![sa("192.168.1.5:4910")]
        );
        assert_eq!(
            local_candidates(&ifs, sa("[::]:4910")),
            vec![sa("192.168.1.5:4910"), sa("[2001:db8:1::5]:4910")]
        );
        assert_eq!(
            local_candidates(&ifs, sa("192.0.2.1:7")),
            vec![sa("192.0.2.1:7")]
        );
        assert!(!usable_local("127.0.0.1".parse().unwrap()));
        assert!(!usable_local("169.254.1.1".parse().unwrap()));
        assert!(!usable_local("fe80::1".parse().unwrap()));
        assert!(!usable_local("::1".parse().unwrap()));
        assert!(usable_local("10.1.2.3".parse().unwrap()));
        assert!(usable_local("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn interface_enumeration_skips_loopback_and_excluded() {
        let all = interface_addresses("");
        assert!(all.iter().all(|l| usable_local(l.ip)));
        assert!(all.iter().all(|l| l.prefix <= 128));
    }

    #[test]
    fn nat_status_from_two_servers() {
        let mut m = BTreeMap::new();
        assert_eq!(nat_status(&m).mapping, NatMapping::Unknown);
        m.insert(sa("198.51.100.7:4910"), sa("203.0.113.1:40000"));
        let n = nat_status(&m);
        assert_eq!(n.mapping, NatMapping::Unknown);
        assert_eq!(n.reflexive, vec![sa("203.0.113.1:40000")]);
        m.insert(sa("198.51.100.8:3478"), sa("203.0.113.1:40000"));
        let n = nat_status(&m);
        assert_eq!(n.mapping, NatMapping::EndpointIndependent);
        assert_eq!(n.reflexive.len(), 1);
        m.insert(sa("198.51.100.8:3478"), sa("203.0.113.1:40001"));
        let n = nat_status(&m);
        assert_eq!(n.mapping, NatMapping::EndpointDependent);
        assert_eq!(n.reflexive.len(), 2);
        let j = serde_json::to_string(&n).unwrap();
        assert!(j.contains(r#""mapping":"endpoint-dependent""#), "{j}");
    }
}
