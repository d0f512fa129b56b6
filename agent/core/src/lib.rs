//! `ringlan-node`: the node as one sans-IO state machine.
//!
//! A [`Node`] owns everything a ringlan member decides: the RTMFP endpoint
//! (tunnel), the Symphony overlay, the relayed-route control plane, the
//! candidate and NAT traversal policy (STUN, birthday punching) and the one
//! peer table. It never reads a clock, touches a socket or a device, or
//! spawns: the agent's runtime (or a simulator) feeds it and carries out
//! what it asks for.
//!
//! Inputs (`now` first, always):
//! - datagrams, with the socket they came on ([`DatagramMachine::handle_datagram`]);
//! - frames read from the TAP ([`Node::handle_tap_read`], [`Node::handle_frame`]);
//! - time ([`DatagramMachine::handle_timeout`]);
//! - local interface address changes ([`Node::set_interfaces`]);
//! - commands: [`Node::status`], [`Node::leave`], [`Node::close_all`],
//!   [`Node::push_revocations`], [`Node::add_bootstrap`],
//!   [`Node::set_introducers`].
//!
//! Outputs, drained after every input in this order:
//! - socket actions ([`DatagramMachine::poll_socket_action`]: open or close
//!   an extra socket for birthday punching, connect or close a TCP stream
//!   to an introducer);
//! - datagrams ([`DatagramMachine::poll_transmit`], naming the socket);
//! - TAP writes ([`Node::poll_tap`]; hand each back with [`Node::recycle`]);
//! - events ([`Node::poll_event`]: ready, a newer revocation list to keep);
//! - the next deadline ([`DatagramMachine::poll_timeout`]).
//!
//! Where each decision is made:
//!
//! | file | decides |
//! |---|---|
//! | [`peers`] | who we have a session with (the one peer table) |
//! | [`sessions`] | what a session opening, closing or moving means for the overlay, routes and punching; which flows a session carries |
//! | [`admission`] | whether a session's peer becomes a member (network-CA certificate), refusals, revocation lists received, pushed and spread |
//! | [`dataplane`] | where a frame from the TAP or a peer goes |
//! | [`candidates`] | which addresses to tell members and to try when opening a session; our NAT |
//! | [`punching`] | birthday punching: when, whom, with which payload |
//! | [`neighbour`] | which ARP requests and neighbour solicitations the node answers on its TAP |
//! | [`rejoin`] | when to join through the peer cache instead of introducers |
//! | [`reach`] | how much the node sends of its own accord to an IP it never had authenticated traffic from |
//! | [`routes`] | when a session needs relayed routes, which relays, failover |
//! | [`tcp`] | when to carry datagrams to an introducer over TCP; which stream a datagram to a stream peer leaves on |
//! | [`snapshot`] / [`status`] | what `ringlan status` shows |
//! | [`topology`] | what `ringlan topology` shows: members, their published links and ours, merged; text, DOT and SVG renderings |
//! | [`membership`] | whether a certificate or revocation list is well formed and signed by the network CA |

#![forbid(unsafe_code)]

pub mod admission;
pub mod candidates;
mod config;
pub mod dataplane;
pub mod directory;
pub mod membership;
pub mod neighbour;
pub mod peers;
pub mod punching;
pub mod reach;
pub mod rejoin;
pub mod routes;
pub mod sessions;
pub mod sim;
pub mod snapshot;
pub mod sparse;
pub mod status;
pub mod tcp;
mod timer;
pub mod topology;
pub mod vnet;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use ringlan_overlay::{self as overlay, Mac, Overlay};
use ringlan_tunnel::crypto::{self, Identity, NetworkName};
use ringlan_tunnel::Birthday;
use ringlan_tunnel::ExtraSockets;
use ringlan_tunnel::StunTxId;
use ringlan_tunnel::{
    DatagramMachine, NodeId, Outgoing, Rng, SocketAction, SocketId, TransmitKind,
};
use ringlan_tunnel::{Endpoint, EndpointConfig};

pub use admission::{MembershipSetup, PushError, MEMBERSHIP_FLOW};
pub use candidates::LocalIf;
pub use config::{NodeError, NodeSetup};
pub use dataplane::{TapWrite, TAP_READ_OFFSET, TAP_READ_ROOM};
pub use directory::{Member, MemberBody, MemberKey, MemberRequest};
pub use status::{IoStatus, MembershipStatus, Role, Status};

use crate::admission::Admission;
use crate::candidates::{local_candidates, Families};
use crate::dataplane::DataPlane;
use crate::directory::Directory;
use crate::peers::Peers;
use crate::reach::Reach;
use crate::routes::RouteControl;
use crate::tcp::TcpFallback;
use crate::timer::{Timer, TimerTable};

/// Flow metadata of the control flow (reliable: overlay control messages).
pub const CONTROL_FLOW: &[u8] = b"ringlan/control/1";
/// Flow metadata of the frame flow. Its messages are `virtio_net_hdr`
/// (10 bytes, little-endian), overlay frame header, Ethernet frame
/// (docs/dataplane.md); it replaced `ringlan/frames-vnet/1`, whose flood
/// and routed headers carried no origin signature (and before it
/// `ringlan/frames/1`, without the virtio header). Never retransmitted:
/// late frames are worse than lost ones.
pub const FRAMES_FLOW: &[u8] = b"ringlan/frames-vnet/2";

/// The introducer's alternate STUN socket (`NodeSetup::stun_alt_port`):
/// the last UDP socket id (TCP streams are numbered from
/// [`SocketId::FIRST_STREAM`] on). Birthday punching's extra sockets count
/// up from 1 and would need 2^31 sockets to reach it.
pub const STUN_ALT_SOCKET: SocketId = SocketId(SocketId::FIRST_STREAM.0 - 1);
/// STUN answers queued for the alternate socket at most (the endpoint's
/// STUN budgets bound how fast they come).
const STUN_ALT_QUEUE: usize = 256;

/// Something the runtime should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The node is useful now (an introducer listens; a node has its first
    /// session): time to tell systemd.
    Ready { reason: String },
    /// A newer revocation list was installed (pushed, or from a member):
    /// keep it (the encoded list) in the state directory for the next
    /// start.
    Revocations { list: Vec<u8>, version: u64 },
    /// The answer to [`Node::members`]: every member the directory scan
    /// found (this node included), by name; `complete` when every part
    /// of the ring answered in time.
    Members {
        request: MemberRequest,
        members: Vec<Member>,
        complete: bool,
    },
    /// The answer to [`Node::resolve`] / [`Node::resolve_name`]
    /// (`member: None`: not found, or no answer in time).
    Resolved {
        request: MemberRequest,
        key: MemberKey,
        member: Option<Member>,
    },
}

/// One ringlan member.
pub struct Node {
    endpoint: Endpoint,
    overlay: Overlay,
    peers: Peers,
    routes: RouteControl,
    data: DataPlane,
    punch: ExtraSockets,
    birthday: Birthday,
    punch_rng: Rng,
    /// Bytes each birthday candidate's session had carried at the last
    /// planner round: the busiest attempts get the planner's slots first.
    punch_carried: HashMap<ringlan_tunnel::SessionId, u64>,
    /// TCP fallback to an introducer, and accepted streams' peers.
    tcp: TcpFallback,
    /// The budget on unverified destinations (`reach`).
    reach: Reach,
    timers: TimerTable,
    events: VecDeque<NodeEvent>,
    role: Role,
    ready: bool,
    started: Instant,
    listen: SocketAddr,
    /// Interface addresses, as last given by the runtime.
    ifs: Vec<LocalIf>,
    /// The address families this node can send to (from `listen` and
    /// `ifs`).
    families: Families,
    /// Datagrams not sent because their destination is of a family this
    /// node cannot send to (a Redirect or a peer naming one): the
    /// node-wide drop `other_family`.
    other_family: u64,
    /// Our local candidates, as given to the overlay.
    local_addrs: Vec<SocketAddr>,
    /// Introducers and `stun_servers`: asked for our reflexive address.
    stun_servers: Vec<SocketAddr>,
    stun_pending: HashMap<StunTxId, SocketAddr>,
    /// Latest mapped address per server.
    mapped: BTreeMap<SocketAddr, SocketAddr>,
    /// Alternate addresses the servers named (OTHER-ADDRESS, resolved),
    /// per server: asked too, at most one per server.
    stun_alt_servers: BTreeMap<SocketAddr, SocketAddr>,
    /// Latest mapped address per alternate address: for the NAT's mapping
    /// behaviour only, never a candidate (`candidates::nat_status`).
    alt_mapped: BTreeMap<SocketAddr, SocketAddr>,
    /// Introducers: the socket on the alternate STUN port, if configured.
    stun_alt: Option<SocketId>,
    /// Answers to send from `stun_alt` (at most [`STUN_ALT_QUEUE`]).
    stun_alt_out: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Socket actions of the node itself (before the punch sockets').
    socket_actions: VecDeque<SocketAction>,
    next_stun: Instant,
    /// Local addresses registered with the endpoint per peer (Redirects).
    peer_addrs: HashMap<NodeId, Vec<SocketAddr>>,
    /// Members listed as unreachable in status, since when.
    unreachable_since: HashMap<NodeId, Instant>,
    /// The parts of the status that never change.
    base: Status,
    /// Admission of peers and revocation lists.
    adm: Admission,
    /// Member records: ours, fetched ones, lookups in flight.
    dir: Directory,
    /// The peer cache to rejoin through when no introducer answers.
    rejoin: rejoin::Rejoin,
}

impl Node {
    /// A node that starts joining at `now`; `seed` feeds every random
    /// choice it makes.
    pub fn new(now: Instant, setup: NodeSetup, seed: [u8; 32]) -> Result<Node, NodeError> {
        let name = NetworkName::new(&setup.network).map_err(|_| NodeError::NetworkName)?;
        let identity = Identity::from_secret_key_bytes(setup.key, &name);
        let node_id = identity.node_id();
        let public_key = identity.certificate().public_key();
        let secret = crypto::NetworkSecret::from_bytes(setup.secret);
        let mut ecfg = EndpointConfig::new(identity.clone(), name.clone(), secret);
        let introducer = setup.role == Role::Introducer;
        ecfg.redirector = introducer;
        ecfg.stun_responder = introducer;
        let stun_alt = (introducer && setup.stun_alt_port != 0).then_some(STUN_ALT_SOCKET);
        if stun_alt.is_some() {
            ecfg.stun_other = Some(SocketAddr::new(setup.listen.ip(), setup.stun_alt_port));
        }
        // Keepalives hold NAT mappings; a peer is dead after three missed.
        ecfg.session.keepalive = setup.keepalive;
        ecfg.session.dead_after = setup.keepalive * 3;
        // Rekey on the configured interval; a key is never used past 1.5
        // times it (120 s / 180 s by default, as WireGuard), and the old
        // receive key opens reordered packets for at most half of it.
        let rekey = &mut ecfg.session.rekey;
        rekey.interval = setup.rekey_interval;
        rekey.max_age = setup.rekey_interval * 3 / 2;
        rekey.grace = rekey.grace.min(setup.rekey_interval / 2);
        ecfg.relay = setup.relay.clone();
        // A revocation list travels as one membership-flow message.
        ecfg.session.flows.max_message_size = ecfg
            .session
            .flows
            .max_message_size
            .max(admission::wire::MAX_MESSAGE);
        let mut rng = Rng::from_seed(seed);
        let mut sub_seed = || rng.bytes32();
        let endpoint = Endpoint::new(now, ecfg, Rng::from_seed(sub_seed()));
        let orole = match setup.role {
            Role::Node => overlay::Role::Node,
            Role::Introducer => overlay::Role::Introducer,
        };
        let mut ocfg =
            overlay::Config::new(node_id, setup.name.clone(), orole, Some(Mac(setup.mac)));
        ocfg.introducers = setup.introducers.clone();
        ocfg.relays = setup.relay.enabled;
        // Signs the flood and routed frames this node originates.
        ocfg.identity = Some(identity.clone());
        ocfg.bridge = setup.bridge;
        // Directory records carry absolute expiry times.
        ocfg.unix_time = setup.unix_time;
        ocfg.directory.scan_timeout = directory::SCAN_TIMEOUT;
        let dir = Directory::new(
            identity.clone(),
            Mac(setup.mac),
            setup.relay.enabled,
            setup.overlay_ips(),
        );
        let mut ov = Overlay::new(now, ocfg, Rng::from_seed(sub_seed()))
            .map_err(|e| NodeError::Overlay(e.to_string()))?;
        let local_addrs = local_candidates(&setup.interfaces, setup.listen);
        ov.set_local_addresses(now, &local_addrs);
        let mut stun_servers = setup.introducers.clone();
        stun_servers.extend(setup.stun_servers.iter().copied());
        stun_servers.retain(|a| *a != setup.listen);
        stun_servers.dedup();
        let exempt: Vec<IpAddr> = stun_servers.iter().map(|a| a.ip()).collect();
        let tcp = TcpFallback::new(
            now,
            tcp::targets(&setup.introducers, &setup.tcp_introducers),
            setup.role == Role::Node,
            setup.keepalive,
        );
        let base = setup.base_status(node_id, &public_key);
        let adm = Admission::new(setup.membership, &name, setup.unix_time, public_key);
        let mut node = Node {
            endpoint,
            overlay: ov,
            peers: Peers::default(),
            routes: RouteControl::new(node_id, Rng::from_seed(sub_seed())),
            data: DataPlane::new(setup.mtu, Mac(setup.mac)),
            punch: ExtraSockets::default(),
            birthday: Birthday::new(setup.birthday.clone()),
            punch_rng: Rng::from_seed(sub_seed()),
            punch_carried: HashMap::new(),
            tcp,
            // Seeded last: the other parts keep their seeds.
            reach: Reach::new(
                reach::DEFAULT_BUDGET,
                &exempt,
                &mut Rng::from_seed(sub_seed()),
            ),
            timers: TimerTable::default(),
            events: VecDeque::new(),
            role: setup.role,
            ready: false,
            started: now,
            listen: setup.listen,
            families: Families::of(setup.listen, &setup.interfaces),
            other_family: 0,
            ifs: setup.interfaces,
            local_addrs,
            stun_servers,
            stun_pending: HashMap::new(),
            mapped: BTreeMap::new(),
            stun_alt_servers: BTreeMap::new(),
            alt_mapped: BTreeMap::new(),
            stun_alt,
            stun_alt_out: VecDeque::new(),
            socket_actions: stun_alt
                .map(|id| SocketAction::Listen {
                    id,
                    port: setup.stun_alt_port,
                })
                .into_iter()
                .collect(),
            next_stun: now,
            peer_addrs: HashMap::new(),
            unreachable_since: HashMap::new(),
            base,
            adm,
            dir,
            rejoin: rejoin::Rejoin::default(),
        };
        node.install_record_check();
        node.check_own_certificate(now);
        node.timers.set(Timer::Housekeeping, now);
        node.timers.set(Timer::Routes, now + routes::TICK);
        if introducer {
            node.set_ready(format!("introducer listening on {}", node.listen));
        }
        node.process_overlay(now);
        Ok(node)
    }

    pub fn node_id(&self) -> NodeId {
        self.overlay.node_id()
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The next thing the runtime should know about.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// The interfaces' addresses changed (the runtime re-reads them
    /// periodically): new local candidates go to the overlay.
    pub fn set_interfaces(&mut self, now: Instant, ifs: Vec<LocalIf>) {
        self.ifs = ifs;
        self.families = Families::of(self.listen, &self.ifs);
        let local = local_candidates(&self.ifs, self.listen);
        if local != self.local_addrs {
            tracing::info!(addresses = ?local, "local addresses changed");
            self.local_addrs = local;
            self.overlay.set_local_addresses(now, &self.local_addrs);
            self.process_overlay(now);
        }
    }

    /// Orderly leave: tell the overlay neighbours, then close every
    /// session so peers notice at once.
    pub fn leave(&mut self, now: Instant) {
        self.overlay.leave(now);
        self.process_overlay(now);
    }

    /// Close every session (after [`Node::leave`], before exiting).
    pub fn close_all(&mut self, now: Instant) {
        self.endpoint.close_all(now, false);
    }

    /// The endpoint, for read-only questions (tests, benches).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The overlay, for read-only questions (tests, benches).
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    fn set_ready(&mut self, reason: String) {
        if !self.ready {
            self.ready = true;
            self.events.push_back(NodeEvent::Ready { reason });
        }
    }

    /// Periodic work: ask the STUN servers again, birthday punching,
    /// remember since when members have been unreachable.
    fn housekeeping(&mut self, now: Instant) {
        self.timers
            .set(Timer::Housekeeping, now + timer::HOUSEKEEPING);
        self.stun_tick(now);
        self.tcp.tick(now);
        self.birthday_punch(now);
        let attempts = self.overlay.open_attempts();
        self.unreachable_since
            .retain(|n, _| attempts.iter().any(|a| a.node == *n));
        for a in attempts {
            self.unreachable_since.entry(a.node).or_insert(now);
        }
        self.admission_tick(now);
        self.directory_tick(now);
        self.rejoin_tick(now);
    }
}

impl Node {
    /// A datagram from a socket; with `in_place`, a route datagram to relay
    /// is left in `data` and its destination returned
    /// (`Endpoint::handle_datagram_in_place`).
    fn input(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        data: &mut [u8],
        in_place: bool,
    ) -> Option<ringlan_tunnel::Transmit> {
        if Some(socket) == self.stun_alt {
            if let Some(answer) = self.endpoint.answer_stun(now, from, data) {
                if self.stun_alt_out.len() < STUN_ALT_QUEUE {
                    self.stun_alt_out.push_back((from, answer));
                }
            }
            return None;
        }
        let from = self.tcp.on_datagram(now, socket, from);
        if !socket.is_stream() {
            self.punch.received(now, socket, from);
        }
        let forward = if in_place {
            self.endpoint.handle_datagram_in_place(now, from, data)
        } else {
            self.endpoint.handle_datagram(now, from, data);
            None
        };
        self.process_endpoint(now);
        forward
    }

    /// The socket a session datagram to `destination` leaves from: a TCP
    /// stream to a peer that has one, else a pinned punched socket or the
    /// main one.
    fn outgoing(&mut self, destination: SocketAddr, data: &[u8]) -> Outgoing {
        Outgoing {
            socket: self
                .tcp
                .socket_for(destination, data)
                .unwrap_or_else(|| self.punch.socket_for(destination)),
            destination,
            size: data.len(),
        }
    }
}

impl DatagramMachine for Node {
    fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        data: &mut [u8],
    ) {
        self.input(now, socket, from, data, false);
    }

    /// As `handle_datagram`; a route datagram this node relays stays in
    /// `data` (rewritten in place by the endpoint) and leaves from the
    /// socket the node picks for its destination, as in `poll_transmit`.
    fn handle_datagram_in_place(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        data: &mut [u8],
    ) -> Option<Outgoing> {
        let t = self.input(now, socket, from, data, true)?;
        if !self.families.reach(t.destination) {
            self.other_family += 1;
            return None;
        }
        Some(self.outgoing(t.destination, data))
    }

    fn handle_socket_closed(&mut self, now: Instant, socket: SocketId) {
        self.tcp.on_closed(now, socket);
    }

    fn set_receive_batch(&mut self, open: bool) {
        self.endpoint.set_receive_batch(open);
    }

    /// Punch datagrams first, then the endpoint's, each from the socket
    /// its destination is pinned to; what the node sends of its own accord
    /// (punches, openings, probes) to an unverified IP only within that
    /// IP's budget (`reach`); nothing to a family this node cannot send to
    /// (`other_family`: the kernel would refuse it).
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Outgoing> {
        while let Some((destination, answer)) = self.stun_alt_out.pop_front() {
            let (Some(socket), Some(dst)) = (self.stun_alt, buf.get_mut(..answer.len())) else {
                continue;
            };
            dst.copy_from_slice(&answer);
            return Some(Outgoing {
                socket,
                destination,
                size: answer.len(),
            });
        }
        loop {
            if let Some(o) = self.punch.poll_probe(buf) {
                if !self.families.reach(o.destination) {
                    self.other_family += 1;
                    continue;
                }
                if self.reach.allow(now, o.destination.ip()) {
                    return Some(o);
                }
                continue;
            }
            let t = self.endpoint.poll_transmit(now, buf)?;
            let unsolicited = matches!(t.kind, TransmitKind::Opening | TransmitKind::Probe);
            let dropped = if !self.families.reach(t.destination) {
                self.other_family += 1;
                true
            } else {
                unsolicited && !self.reach.allow(now, t.destination.ip())
            };
            if dropped {
                // Its seal must not follow the next datagram (a punch
                // probe comes before the endpoint is asked again).
                self.endpoint.take_pending_seal();
                continue;
            }
            let data = buf.get_mut(..t.size).unwrap_or_default();
            // The TCP fallback looks at the datagram to choose its socket,
            // and only the main socket's datagrams may leave unsealed
            // (`set_defer_sealing`).
            if self.endpoint.has_pending_seal() && self.tcp.may_carry(t.destination) {
                if let Some(seal) = self.endpoint.take_pending_seal() {
                    seal.finish(data);
                }
            }
            let out = self.outgoing(t.destination, data);
            if out.socket != SocketId::MAIN {
                if let Some(seal) = self.endpoint.take_pending_seal() {
                    seal.finish(data);
                }
            }
            return Some(out);
        }
    }

    fn set_defer_sealing(&mut self, on: bool) {
        self.endpoint.set_defer_sealing(on);
    }

    fn take_pending_seal(&mut self) -> Option<ringlan_tunnel::DeferredSeal> {
        self.endpoint.take_pending_seal()
    }

    fn poll_socket_action(&mut self) -> Option<SocketAction> {
        self.socket_actions
            .pop_front()
            .or_else(|| self.tcp.poll_action())
            .or_else(|| self.punch.poll_action())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.endpoint.poll_timeout(),
            self.overlay.poll_timeout(),
            self.punch.poll_timeout(),
            self.timers.next(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.process_endpoint(now);
        if self.overlay.poll_timeout().is_some_and(|t| t <= now) {
            self.overlay.handle_timeout(now);
            self.process_overlay(now);
        }
        self.punch.handle_timeout(now);
        while let Some(t) = self.timers.expired(now) {
            match t {
                Timer::Housekeeping => self.housekeeping(now),
                Timer::Routes => {
                    self.timers.set(Timer::Routes, now + routes::TICK);
                    self.with_routes(now, |r, cx| r.tick(now, cx));
                }
            }
        }
    }
}
