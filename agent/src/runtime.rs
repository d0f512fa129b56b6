//! The runtime: the tokio loop that drives the node core
//! ([`ringlan_node::Node`]) and carries out what it asks for. No decisions
//! are made here.
//!
//! `ringlan up` ([`crate::up`]) loads the config and identity, opens the
//! TAP and starts the control socket and metrics, then hands everything to
//! [`run`]. One task owns the node (no locks on the data path); with
//! `io_threads` on (`auto`: on a machine with enough cores) the driver's
//! datagrams are encrypted and sent by a send thread beside it
//! (`Driver::spawn_send_thread`) and frames reach the TAP from a TAP write
//! thread ([`crate::tap_writer`]; docs/dataplane.md "More than one core").
//! The task waits on:
//! - the UDP sockets, TCP streams (the fallback's stream to an introducer;
//!   on a node with `listen.tcp`, the streams it accepts; docs/tcp.md) and
//!   the node's timer, through the tunnel's driver ([`Driver::wait`]),
//!   which feeds datagrams and timeouts to the node and sends what it
//!   produces (batched: sendmmsg/GSO, recvmmsg/GRO);
//! - the TAP: one wake-up reads up to `TAP_BATCH` (64) frames into the read
//!   buffer (with the head room the node writes its headers into) before
//!   the driver is flushed, so their datagrams leave together;
//! - a one-second tick: publish the status snapshot, re-read interface
//!   addresses every `IFSCAN_PERIOD` (10 s), warn once a day while the
//!   node's certificate expires within 30 days (or has expired);
//! - commands from the control socket and the metrics page (a revocation
//!   list: handed to the node, its answer sent back; a members scan or a
//!   topology: a scan started on the node or joined, the answer sent back
//!   when its `NodeEvent::Members` comes; see [`crate::scans`]);
//! - names from the DNS responder ([`crate::dns`]): resolved by the node
//!   (`Node::resolve_name`), the answer sent back when its
//!   `NodeEvent::Resolved` comes;
//! - introducer addresses re-resolved in a task of their own (host names,
//!   every `RESOLVE_PERIOD`, every `RESOLVE_RETRY` while no introducer
//!   session is up), handed to the node (`Node::set_introducers`);
//! - shutdown.
//!
//! The peer cache ([`crate::peer_cache`]): read at start and handed to the
//! node (`Node::add_bootstrap`: it joins through those members when no
//! introducer answers); rewritten every `PEER_CACHE_PERIOD` and at shutdown
//! from the direct sessions the status shows.
//!
//! After every wake-up the node's outputs are drained: frames for the TAP
//! (written, then handed back to the node's buffer pools) and events
//! (readiness, for systemd; a newer revocation list, kept in the state
//! directory). When frames were written here, the TAP is read again at
//! once ([`Tap::read_now`]): what the kernel answered them with (a TCP
//! acknowledgement, the segments a sender's opened window lets out, an
//! echo reply) leaves with the same flush instead of waiting for the next
//! turn of the loop (docs/dataplane.md "Answers leave with the turn").
//! The driver then flushes datagrams.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ringlan_node::membership::{NodeCert, RevocationList};
use ringlan_node::MembershipSetup;
use ringlan_node::{
    IoStatus, MemberRequest, Node, NodeEvent, NodeSetup, Role, Status, TAP_READ_OFFSET,
    TAP_READ_ROOM,
};
use ringlan_tunnel::driver::{os_seed, Driver, TcpLimits};
use ringlan_tunnel::BirthdayConfig;
use ringlan_tunnel::RelayLimits;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{self, Config, Membership};
use crate::control::Command;
use crate::credentials;
use crate::dns;
use crate::identity::{NetworkSecret, NodeKey};
use crate::ifaddrs::interface_addresses;
use crate::peer_cache;
use crate::scans::{Reply, Scans};
use crate::sched;
use crate::status::{StatusBoard, TapStatus};
use crate::tap::{format_mac, Tap};
use crate::tap_writer::TapWriter;

/// Frames read from the TAP per wake-up before the driver is flushed.
const TAP_BATCH: usize = 64;
/// How often interface addresses are re-read.
const IFSCAN_PERIOD: Duration = Duration::from_secs(10);
/// How long Close Requests get to leave on shutdown.
const LINGER: Duration = Duration::from_millis(300);
/// How often the certificate's expiry is looked at again.
const EXPIRY_CHECK_PERIOD: Duration = Duration::from_secs(86_400);
/// How often introducer host names are resolved again.
const RESOLVE_PERIOD: Duration = Duration::from_secs(300);
/// How often they are resolved again while no introducer session is up.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);
/// How often the peer cache is rewritten (when it changed).
const PEER_CACHE_PERIOD: Duration = Duration::from_secs(60);

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
    /// Where to publish status snapshots; read by the control socket and
    /// the metrics endpoint.
    pub status: Arc<StatusBoard>,
    /// With `network.ca`: the CA and this node's certificate
    /// ([`Config::membership`]).
    pub membership: Option<Membership>,
    /// The newest revocation list this node has kept, if any.
    pub revocations: Option<RevocationList>,
    /// Commands from the control socket.
    pub commands: mpsc::Receiver<Command>,
    /// Names from the DNS responder (`dns:` configured).
    pub names: Option<mpsc::Receiver<dns::Resolve>>,
}

/// Logs how this node's certificate stands at `now` (seconds since the Unix
/// epoch). At start an info line, whatever it says (the node core itself
/// warns, once per change, when the certificate is not accepted or expires
/// within 30 days); later, the daily reminder, a warning while that holds.
pub fn log_certificate(cert: &NodeCert, now: u64, at_start: bool) {
    let (text, warning) = credentials::describe(cert, now);
    if at_start {
        tracing::info!("{text}");
    } else if warning {
        tracing::warn!("{text}");
    }
}

impl From<config::Role> for Role {
    fn from(r: config::Role) -> Self {
        match r {
            config::Role::Node => Role::Node,
            config::Role::Introducer => Role::Introducer,
        }
    }
}

/// Resolve `host:port` entries, warning about those that do not resolve.
async fn resolve_all(what: &str, hosts: &[config::HostPort]) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for hp in hosts {
        match hp.resolve().await {
            // As the driver presents sources: IPv4 never IPv4-mapped.
            Ok(a) => out.extend(a.into_iter().map(ringlan_tunnel::canonical_addr)),
            Err(e) => tracing::warn!(%what, host = %hp, error = %e, "cannot resolve"),
        }
    }
    out
}

/// The TAP as the status shows it.
pub fn tap_status(cfg: &Config, tap: &Tap) -> TapStatus {
    TapStatus {
        name: tap.name().to_string(),
        mac: format_mac(&tap.mac()),
        mtu: tap.mtu(),
        addresses: cfg
            .interface
            .addresses
            .iter()
            .map(|a| a.to_string())
            .collect(),
    }
}

/// What the control socket and the metrics endpoint serve from the start
/// until the node's first snapshot: everything the config and the key
/// say (name, network, role, key, TAP), no node id yet (shown as `-`).
/// Resolving the introducers' names can take a while, and a status of
/// empty names and zeros would look like a node that lost its config.
pub fn starting_status(cfg: &Config, public_key: &[u8; 32], tap: TapStatus) -> Status {
    Status {
        node_name: cfg.node.name.clone(),
        network: cfg.network.name.clone(),
        role: cfg.role.into(),
        public_key: crate::identity::hex(public_key),
        tap,
        ..Status::default()
    }
}

/// The node core's setup from the config, the identity and the TAP.
async fn setup(ctx: &NodeContext, listen: std::net::SocketAddr) -> NodeSetup {
    let cfg = &ctx.config;
    let mut introducers = resolve_all("introducer", &cfg.introducers).await;
    let tcp_introducers = resolve_all("introducer", &cfg.tcp_introducers).await;
    // A `tcp://` introducer with no UDP entry of the same IP is an
    // introducer of its own, reached over TCP only (docs/tcp.md).
    for t in &tcp_introducers {
        if !introducers.iter().any(|u| u.ip() == t.ip()) {
            introducers.push(*t);
        }
    }
    NodeSetup {
        network: cfg.network.name.clone(),
        secret: *ctx.secret.bytes(),
        key: *ctx.key.secret_bytes(),
        name: cfg.node.name.clone(),
        role: cfg.role.into(),
        mac: ctx.tap.mac(),
        // Frames may carry other source MACs (a bridged site); with a CA
        // the certificate decides what peers accept.
        bridge: cfg.interface.bridge,
        mtu: ctx.tap.mtu(),
        tap: tap_status(cfg, &ctx.tap),
        listen,
        introducers,
        tcp_introducers,
        stun_servers: resolve_all("STUN server", &cfg.stun_servers).await,
        stun_alt_port: cfg.listen.stun_alt_port,
        keepalive: cfg.keepalive,
        rekey_interval: cfg.rekey_interval,
        relay: RelayLimits {
            enabled: cfg.relay.enabled,
            max_routes: cfg.relay.max_routes,
            max_mbps: cfg.relay.max_mbps,
            max_total_mbps: cfg.relay.max_total_mbps,
            ..RelayLimits::default()
        },
        birthday: BirthdayConfig::default(),
        interfaces: interface_addresses(ctx.tap.name()),
        unix_time: crate::ca::unix_now(),
        membership: ctx.membership.as_ref().map(|m| MembershipSetup {
            ca: m.ca,
            certificate: m.certificate.clone(),
            revocations: ctx.revocations.clone(),
        }),
    }
}

/// Binds the main socket and builds the node for the bound address. The
/// IPv6 wildcard `[::]` (the default) is one dual-stack socket; on a host
/// without IPv6 (the kernel refuses IPv6 sockets) it falls back to
/// `0.0.0.0` with the same port, with a warning.
async fn bind_node(
    bind: std::net::SocketAddr,
    setup: NodeSetup,
    seed: [u8; 32],
) -> anyhow::Result<Driver<Node>> {
    let make = |mut setup: NodeSetup| {
        move |listen| {
            setup.listen = listen;
            Node::new(Instant::now(), setup, seed).map_err(std::io::Error::other)
        }
    };
    match Driver::bind_with(bind, make(setup.clone())).await {
        Err(e)
            if bind.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            let v4 = std::net::SocketAddr::from(([0, 0, 0, 0], bind.port()));
            tracing::warn!(%bind, fallback = %v4, "no IPv6 on this host: listening on IPv4 only");
            Driver::bind_with(v4, make(setup))
                .await
                .with_context(|| format!("binding UDP {v4}"))
        }
        r => r.with_context(|| format!("binding UDP {bind}")),
    }
}

/// The node's status plus what only the runtime knows.
fn snapshot(driver: &Driver<Node>, io: &IoStatus) -> Status {
    let mut s = driver.machine_ref().status(Instant::now());
    let d = driver.io_stats();
    s.io = Some(IoStatus {
        udp_wakeups: d.wakeups,
        udp_send_calls: d.send_calls,
        udp_send_messages: d.send_messages,
        udp_datagrams_sent: d.datagrams_sent,
        udp_recv_calls: d.recv_calls,
        udp_recv_messages: d.recv_messages,
        udp_datagrams_received: d.datagrams_received,
        udp_datagrams_forwarded: d.datagrams_forwarded,
        udp_forwards_dropped: d.forwards_dropped,
        relayed_bytes: driver.machine_ref().endpoint().relayed_bytes(),
        ..io.clone()
    });
    let errs = driver.send_errors();
    if errs > 0 {
        s.drops.insert("udp_send_error".into(), errs);
    }
    if d.forwards_dropped > 0 {
        s.drops
            .insert("udp_forward_full".into(), d.forwards_dropped);
    }
    if io.tap_write_errors > 0 {
        s.drops
            .insert("tap_write_error".into(), io.tap_write_errors);
    }
    let tcp = driver.stream_drops();
    if tcp > 0 {
        s.drops.insert("tcp_stream_drop".into(), tcp);
    }
    s
}

/// DNS lookups waiting for the node's answer. Bounded by the responder
/// ([`dns::MAX_PENDING`] at once) and because every lookup ends (found, not
/// found or timed out in the node).
type Names = HashMap<MemberRequest, oneshot::Sender<dns::Lookup>>;

/// Write the node's frames to the TAP, tell systemd what it should know,
/// keep newer revocation lists at `revocations` (written here, in order, so
/// an older list never overwrites a newer one; a list is rare and small),
/// answer scans.
/// Where frames for the TAP go: written by the node's thread, or handed
/// to the TAP write thread (`io_threads`).
struct TapOut<'a> {
    tap: &'a Tap,
    writer: Option<TapWriter>,
    /// Frames the TAP refused when written here.
    inline_errors: std::cell::Cell<u64>,
}

async fn drain_outputs(
    driver: &mut Driver<Node>,
    tap: &TapOut<'_>,
    revocations: &Path,
    scans: &mut Scans,
    names: &mut Names,
    io: &mut IoStatus,
) {
    let node = driver.machine();
    if let Some(writer) = &tap.writer {
        for w in writer.written() {
            node.recycle(w);
        }
    }
    while let Some(w) = node.poll_tap() {
        io.tap_writes += 1;
        io.tap_bytes += w.frame().len() as u64;
        let w = match &tap.writer {
            Some(writer) => match writer.write(w) {
                Ok(()) => continue,
                Err(w) => w,
            },
            None => w,
        };
        if let Err(e) = tap.tap.send(w.vnet(), w.frame()).await {
            tracing::debug!(error = %e, "TAP write failed");
            tap.inline_errors.set(tap.inline_errors.get() + 1);
        }
        node.recycle(w);
    }
    io.tap_write_errors = tap.inline_errors.get() + tap.writer.as_ref().map_or(0, |w| w.errors());
    while let Some(ev) = node.poll_event() {
        match ev {
            NodeEvent::Ready { reason } => crate::service::notify_ready(&reason),
            NodeEvent::Revocations { list, version } => {
                keep_revocations(revocations, &list, version)
            }
            NodeEvent::Members {
                request,
                members,
                complete,
            } => scans.answered(node, Instant::now(), request, members, complete),
            NodeEvent::Resolved {
                request, member, ..
            } => {
                if let Some(reply) = names.remove(&request) {
                    let _ = reply.send(match member {
                        Some(m) => dns::Lookup::Found(m.body.ips),
                        None => dns::Lookup::NotFound,
                    });
                }
            }
        }
    }
}

/// Hand the node up to `max` frames read from the TAP with `read` (the
/// buffer starts at [`TAP_READ_OFFSET`], the node's head room before it);
/// stops when the TAP is empty (`WouldBlock`) or a read fails. Returns the
/// frames read.
fn feed_tap(
    node: &mut Node,
    tap_buf: &mut Vec<u8>,
    io: &mut IoStatus,
    max: usize,
    mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
) -> usize {
    for k in 0..max {
        match read(&mut tap_buf[TAP_READ_OFFSET..]) {
            Ok(n) => {
                io.tap_reads += 1;
                io.tap_bytes += n as u64;
                node.handle_tap_read(Instant::now(), tap_buf, n);
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::debug!(error = %e, "TAP read failed");
                }
                return k;
            }
        }
    }
    max
}

/// The next name from the DNS responder; pending forever without one.
async fn recv_name(rx: &mut Option<mpsc::Receiver<dns::Resolve>>) -> Option<dns::Resolve> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Rewrites the peer cache at `path` when the direct sessions in `status`
/// change what it holds (`peers`: what it holds now).
fn keep_peers(path: &Path, peers: &mut Vec<peer_cache::Peer>, status: &Status) {
    let merged = peer_cache::merge(status, peers);
    if merged == *peers {
        return;
    }
    match peer_cache::write(path, &merged) {
        Ok(()) => *peers = merged,
        Err(e) => tracing::warn!(path = %path.display(), "cannot keep the peer cache: {e:#}"),
    }
}

/// Replaces the kept revocation list with `list` (version `version`).
fn keep_revocations(path: &Path, list: &[u8], version: u64) {
    let kept = RevocationList::decode(list)
        .map_err(anyhow::Error::from)
        .and_then(|l| credentials::write_revocations(path, &l));
    match kept {
        Ok(()) => tracing::info!(version, path = %path.display(), "revocation list kept"),
        Err(e) => tracing::error!(
            version,
            path = %path.display(),
            "cannot keep the revocation list: {e:#} (members hand it over again after a restart)"
        ),
    }
}

/// Carries out a control-socket command.
fn handle_command(driver: &mut Driver<Node>, cmd: Command, scans: &mut Scans) {
    match cmd {
        Command::PushRevocations { list, reply } => {
            let r = driver
                .machine()
                .push_revocations(Instant::now(), &list)
                .map_err(|e| e.to_string());
            if let Err(e) = &r {
                tracing::warn!("revocation list pushed over the control socket refused: {e}");
            }
            let _ = reply.send(r);
        }
        Command::Members { reply } => {
            scans.ask(driver.machine(), Instant::now(), Reply::Members(reply))
        }
        Command::Topology { reply } => {
            scans.ask(driver.machine(), Instant::now(), Reply::Topology(reply))
        }
    }
}

/// Whether the node's thread (the caller's) may be put in real-time
/// scheduling: the config wants it on a machine with `cores` cores and
/// the system grants it (tried once, then back to normal until the thread
/// carries traffic; `crate::sched`).
fn start_realtime(wanted: config::Realtime, cores: usize) -> bool {
    if !wanted.wanted(cores) {
        return false;
    }
    match sched::make_realtime().and_then(|()| sched::make_normal()) {
        Ok(()) => {
            tracing::info!(
                priority = sched::PRIORITY,
                "the node's thread runs in real-time scheduling (SCHED_RR) while it carries traffic and leaves a core to the rest"
            );
            true
        }
        Err(e) if wanted == config::Realtime::On => {
            tracing::warn!(error = %e, "no real-time scheduling (needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO of 1): normal scheduling");
            false
        }
        Err(e) => {
            tracing::info!(error = %e, "no real-time scheduling: normal scheduling");
            false
        }
    }
}

/// The check of the node's thread's CPU time every 250 ms: real-time while
/// it carries traffic and costs little more CPU per byte than normal
/// scheduling, normal while it idles, is too busy or real-time costs too
/// much (`sched::Guard`); `bytes`: what the thread moved, frames read from
/// and written to the TAP and datagrams forwarded as a relay.
fn keep_realtime(guard: &mut sched::Guard, now: Instant, bytes: u64) {
    match guard.check(now, sched::thread_cpu_time(), bytes) {
        sched::Change::Keep => {}
        sched::Change::Costly => {
            tracing::debug!(
                limit = sched::COST_LIMIT,
                for_secs = sched::JUDGED_FOR.as_secs(),
                "real-time scheduling cost too much CPU per byte: normal scheduling for a while"
            );
        }
        sched::Change::Rest | sched::Change::Compare => {
            if let Err(e) = sched::make_normal() {
                tracing::warn!(error = %e, "cannot return to normal scheduling");
            }
        }
        sched::Change::Demote => {
            tracing::warn!(
                limit = sched::BUSY_LIMIT,
                for_secs = sched::DEMOTED_FOR.as_secs(),
                "the node's thread used most of a core: normal scheduling for a while"
            );
            if let Err(e) = sched::make_normal() {
                tracing::warn!(error = %e, "cannot return to normal scheduling");
            }
        }
        sched::Change::Promote => {
            if let Err(e) = sched::make_realtime() {
                tracing::info!(error = %e, "real-time scheduling not regained");
                guard.promotion_failed(now);
            }
        }
    }
}

/// Runs the node until `shutdown` turns true. Returns when everything it
/// started has stopped; the TAP is removed when `ctx` is dropped on return.
pub async fn run(mut ctx: NodeContext, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let kept = ctx.config.revocations_path();
    let bind = ctx.config.listen.socket_addr();
    let seed = os_seed()?;
    // Resolve first (async), then bind and build the node for the bound
    // address.
    let setup = setup(&ctx, bind).await;
    let mut driver = bind_node(bind, setup, seed).await?;
    let listen = driver.local_addr()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut tap_writer = None;
    if ctx.config.io_threads.enabled(cores) {
        match driver.spawn_send_thread() {
            Ok(()) => tracing::info!(cores, "datagrams are encrypted and sent by a send thread"),
            Err(e) => {
                tracing::warn!(error = %e, "no send thread: datagrams leave from the node's thread")
            }
        }
        match ctx.tap.writer().and_then(TapWriter::spawn) {
            Ok(w) => {
                tracing::info!(cores, "frames reach the TAP from a TAP write thread");
                tap_writer = Some(w);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no TAP write thread: the node's thread writes the TAP")
            }
        }
    }
    if ctx.config.listen.tcp {
        let at = driver
            .listen_tcp(listen, TcpLimits::default())
            .await
            .with_context(|| format!("listening on TCP {listen}"))?;
        tracing::info!(%at, "accepting TCP streams");
    }
    let board = ctx.status.clone();
    let mut realtime = sched::Guard::new(start_realtime(ctx.config.realtime, cores));
    // Set before the first snapshot, which would otherwise say neither.
    let mut io = IoStatus {
        io_threads: driver.has_send_thread() && tap_writer.is_some(),
        realtime: realtime.realtime(),
        ..IoStatus::default()
    };
    board.publish(snapshot(&driver, &io));
    tracing::info!(
        node = %driver.machine_ref().node_id(),
        tap = ctx.tap.name(),
        mac = %format_mac(&ctx.tap.mac()),
        role = ctx.config.role.as_str(),
        %listen,
        "node up"
    );
    let tap = &ctx.tap;
    let to_tap = TapOut {
        tap,
        writer: tap_writer,
        inline_errors: Default::default(),
    };
    let commands = &mut ctx.commands;
    let mut commands_open = true;
    let mut tap_buf = vec![0u8; TAP_READ_ROOM];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_ifscan = Instant::now() + IFSCAN_PERIOD;
    let mut next_expiry_check = Instant::now() + EXPIRY_CHECK_PERIOD;
    let mut scans = Scans::default();
    let mut names = Names::new();
    let mut dns_rx = ctx.names.take();
    // The peer cache: members to rejoin through.
    let peers_path = ctx.config.peers_path();
    let mut peers = peer_cache::read(&peers_path);
    if !peers.is_empty() {
        tracing::info!(peers = peers.len(), path = %peers_path.display(), "peer cache");
        driver
            .machine()
            .add_bootstrap(Instant::now(), peers.clone());
    }
    let mut next_peer_cache = Instant::now() + PEER_CACHE_PERIOD;
    // Introducer host names, resolved again in a task of their own.
    let named = ctx
        .config
        .introducers
        .iter()
        .any(|h| matches!(h.host, config::Host::Name(_)));
    let (resolved_tx, mut resolved) = mpsc::channel::<Vec<std::net::SocketAddr>>(1);
    let mut resolving = false;
    let mut last_resolve = Instant::now();
    drain_outputs(&mut driver, &to_tap, &kept, &mut scans, &mut names, &mut io).await;
    loop {
        tokio::select! {
            r = shutdown.changed() => {
                if r.is_err() || *shutdown.borrow() { break; }
            }
            _ = driver.wait() => {}
            cmd = commands.recv(), if commands_open => match cmd {
                Some(cmd) => handle_command(&mut driver, cmd, &mut scans),
                None => commands_open = false,
            },
            q = recv_name(&mut dns_rx) => match q {
                Some(q) => {
                    let request = driver.machine().resolve_name(Instant::now(), &q.name);
                    names.insert(request, q.reply);
                }
                None => dns_rx = None,
            },
            addrs = resolved.recv() => {
                resolving = false;
                if let Some(addrs) = addrs.filter(|a| !a.is_empty()) {
                    driver.machine().set_introducers(Instant::now(), addrs);
                }
            }
            r = tap.recv(&mut tap_buf[TAP_READ_OFFSET..]) => match r {
                Ok(n) => {
                    io.tap_wakeups += 1;
                    io.tap_reads += 1;
                    io.tap_bytes += n as u64;
                    let node = driver.machine();
                    node.handle_tap_read(Instant::now(), &mut tap_buf, n);
                    // What else the TAP has queued, so the datagrams of
                    // the whole batch leave together.
                    feed_tap(node, &mut tap_buf, &mut io, TAP_BATCH - 1, |b| tap.try_recv(b));
                }
                Err(e) => {
                    tracing::error!(error = %e, "TAP read failed");
                    break;
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= next_ifscan {
                    next_ifscan = now + IFSCAN_PERIOD;
                    let ifs = interface_addresses(tap.name());
                    driver.machine().set_interfaces(now, ifs);
                }
                let stale = now.saturating_duration_since(last_resolve);
                let no_introducer = driver.machine_ref().introducers_linked() == 0;
                if named
                    && !resolving
                    && (stale >= RESOLVE_PERIOD || (no_introducer && stale >= RESOLVE_RETRY))
                {
                    resolving = true;
                    last_resolve = now;
                    let (hosts, tx) = (ctx.config.introducers.clone(), resolved_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(resolve_all("introducer", &hosts).await).await;
                    });
                }
                if now >= next_peer_cache {
                    next_peer_cache = now + PEER_CACHE_PERIOD;
                    keep_peers(&peers_path, &mut peers, &snapshot(&driver, &io));
                }
                if now >= next_expiry_check {
                    next_expiry_check = now + EXPIRY_CHECK_PERIOD;
                    if let Some(m) = &ctx.membership {
                        log_certificate(&m.certificate, crate::ca::unix_now(), false);
                    }
                }
                board.publish(snapshot(&driver, &io));
            }
        }
        io.wakeups += 1;
        let written = io.tap_writes;
        drain_outputs(&mut driver, &to_tap, &kept, &mut scans, &mut names, &mut io).await;
        // Frames written on this thread: their answers leave with this
        // flush (module docs). A TAP write thread writes later, so there
        // is nothing to look for yet.
        if io.tap_writes != written && to_tap.writer.is_none() {
            let node = driver.machine();
            let n = feed_tap(node, &mut tap_buf, &mut io, TAP_BATCH, |b| tap.read_now(b));
            io.tap_reads_after_write += n as u64;
            if n > 0 {
                drain_outputs(&mut driver, &to_tap, &kept, &mut scans, &mut names, &mut io).await;
            }
        }
        driver.flush();
        let now = Instant::now();
        if realtime.due(now) {
            let relayed = driver.machine_ref().endpoint().relayed_bytes();
            keep_realtime(&mut realtime, now, io.tap_bytes + relayed);
            io.realtime = realtime.realtime();
            io.realtime_demotions = realtime.demotions();
            io.realtime_costly = realtime.costly();
            io.realtime_cost_percent = realtime
                .last_cost_ratio()
                .map(|r| (r * 100.0).round().min(f64::from(u32::MAX)) as u32);
        }
    }

    // Orderly shutdown: keep the peers of this run, tell the overlay
    // neighbours, close every session so peers notice at once, give the
    // Close Requests a moment to leave.
    tracing::info!("node stopping");
    keep_peers(&peers_path, &mut peers, &snapshot(&driver, &io));
    let now = Instant::now();
    driver.machine().leave(now);
    driver.flush();
    driver.machine().close_all(now);
    driver.flush();
    let linger = tokio::time::sleep(LINGER);
    tokio::pin!(linger);
    loop {
        tokio::select! {
            _ = &mut linger => break,
            _ = driver.wait() => {}
        }
        drain_outputs(&mut driver, &to_tap, &kept, &mut scans, &mut names, &mut io).await;
    }
    driver.flush();
    board.publish(Status {
        sessions: Vec::new(),
        ..snapshot(&driver, &io)
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_before_the_first_snapshot_names_the_node_and_its_tap() {
        let cfg = Config::parse(
            "network:\n  name: home\n  secret_file: /etc/ringlan/home.secret\n\
             node:\n  name: laptop\n  key_file: /var/lib/ringlan/home.key\n\
             interface:\n  name: rl-home\n  addresses: [10.77.0.2/24]\n\
             introducers: [198.51.100.7:4910]\nrole: node\n",
            Path::new("/etc/ringlan/home.yaml"),
        )
        .unwrap();
        let tap = TapStatus {
            name: "rl-home".into(),
            mac: "02:00:00:00:00:01".into(),
            mtu: 1400,
            addresses: vec!["10.77.0.2/24".into()],
        };
        let s = starting_status(&cfg, &[0xab; 32], tap.clone());
        assert_eq!(s.node_name, "laptop");
        assert_eq!(s.network, "home");
        assert_eq!(s.public_key, "ab".repeat(32));
        assert_eq!(s.tap, tap);
        assert_eq!(s.node_id, None, "no node id until the node runs");
        let text = s.render();
        assert!(text.starts_with("node      laptop  -\n"), "{text}");
        assert!(text.contains("network   home (node)"), "{text}");
        assert!(
            text.contains("tap       rl-home  02:00:00:00:00:01  mtu 1400  10.77.0.2/24"),
            "{text}"
        );
    }
}
