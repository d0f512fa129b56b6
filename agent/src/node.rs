//! The node runtime: wires the RTMFP endpoint (tunnel driver), the overlay
//! and the TAP together. `ringlan up` ([`crate::up`]) loads the config and
//! identity, opens the TAP and starts the control socket and metrics, then
//! hands everything to [`run`].
//!
//! One task owns everything (no locks on the data path): it waits on the
//! UDP socket and timers (through the driver), the TAP, the overlay's
//! timer, a status tick and shutdown.
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use ringlan_overlay::{self as overlay, FrameHeader, Mac, Overlay};
use ringlan_tunnel::crypto::{self, Identity, NetworkName};
use ringlan_tunnel::driver::{os_seed, Driver};
use ringlan_tunnel::endpoint::{EndpointConfig, Event, SessionInfo, Target};
use ringlan_tunnel::flow::{FlowEvent, FlowId, RecvFlowId, Reliability};
use ringlan_tunnel::session::{OpenFailure, SessionId, SessionState as TState};
use ringlan_tunnel::{NodeId, Rng};
use tokio::sync::watch;

use crate::config::{Config, Role};
use crate::identity::{hex, NetworkSecret, NodeKey};
use crate::status::{
    AddressKind, KnownAddress, LinkKind, Neighbour, PathKind, SessionState, SessionStatus, Status,
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
        sessions: Vec::new(),
        neighbours: None,
        uptime_secs: 0,
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
    let mut ov = Overlay::new(now, ocfg, Rng::from_seed(os_seed()?))
        .map_err(|e| anyhow::anyhow!("overlay config: {e}"))?;
    if !listen.ip().is_unspecified() {
        ov.set_local_addresses(now, &[listen]);
    }

    let mut status = initial_status(&ctx);
    status.node_id = Some(node_id.to_string());
    status.listen = vec![listen];
    if !listen.ip().is_unspecified() {
        status.addresses.push(KnownAddress {
            addr: listen,
            kind: AddressKind::Local,
        });
    }
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
    };
    if cfg.role == Role::Introducer {
        node.ready = true;
        crate::service::notify_ready(&format!("introducer listening on {listen}"));
    }
    node.process_overlay(Instant::now()).await;
    node.driver.flush();

    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                board.publish(node.status(&status));
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
                self.overlay.peer_up(now, peer, remote, is_introducer);
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
                    Some(FlowKind::Control) => self.overlay.handle_control(now, from, &data),
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
        let frame = match result {
            Ok(f) => f,
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
        p.rx.frames += 1;
        p.rx.bytes += frame.len() as u64;
        let n = frame.len();
        if let Err(e) = self.tap.send(vnet, frame).await {
            tracing::debug!(error = %e, "TAP write failed");
            p.drop_frame("tap_write");
        }
        if !self.sends.is_empty() {
            // Bounded-flood forwards of the same frame.
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
                    match self.driver.endpoint().connect(now, target, &addrs) {
                        Ok(sid) => {
                            if let Some(p) = self.peers.get(&sid) {
                                // Already open: remind the overlay.
                                let remote = self
                                    .driver
                                    .endpoint_ref()
                                    .session_info(sid)
                                    .map(|i| i.remote);
                                if let Some(remote) = remote {
                                    self.overlay.peer_up(now, p.node, remote, node.is_none());
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
                overlay::Action::SendControl { to, bytes } => {
                    let Some(&sid) = self.by_node.get(&to) else {
                        tracing::debug!(%to, "control message for a node without session");
                        continue;
                    };
                    let Some(p) = self.peers.get(&sid) else {
                        continue;
                    };
                    let control = p.control;
                    if let Err(e) = self.driver.endpoint().send(
                        now,
                        sid,
                        control,
                        &bytes,
                        Reliability::Reliable,
                    ) {
                        tracing::warn!(%to, error = %e, "control message not sent");
                    }
                }
            }
        }
        while let Some(ev) = self.overlay.poll_event() {
            match ev {
                overlay::Event::BadControl { from, error } => {
                    tracing::debug!(%from, %error, "bad control message")
                }
                other => tracing::info!(event = ?other, "overlay"),
            }
        }
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
                let mut drops = p.drops.clone();
                for (k, v) in &self.local_drops {
                    *drops.entry(k.clone()).or_insert(0) += v;
                }
                Some(SessionStatus {
                    peer_id: p.node.to_string(),
                    peer_name: names
                        .get(&p.node)
                        .cloned()
                        .or_else(|| self.overlay.member(p.node).map(|m| m.name.clone())),
                    remote: Some(info.remote),
                    path: PathKind::Direct,
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
                })
            })
            .collect();
        sessions.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
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
                    overlay::LinkKind::Other => LinkKind::Long,
                },
            })
            .collect();
        Status {
            sessions,
            neighbours: Some(neighbours),
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            ..base.clone()
        }
    }
}
