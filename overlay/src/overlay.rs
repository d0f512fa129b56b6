//! The overlay state machine: Symphony topology, routing, bounded flood and
//! the data path.
//!
//! Inputs: [`Overlay::peer_up`], [`Overlay::peer_down`],
//! [`Overlay::open_failed`], [`Overlay::handle_control`],
//! [`Overlay::handle_timeout`], [`Overlay::set_local_addresses`],
//! [`Overlay::leave`] and the data path ([`Overlay::frame_from_tap`],
//! [`Overlay::frame_from_peer`]). Outputs: [`Overlay::poll_action`],
//! [`Overlay::poll_event`], [`Overlay::poll_timeout`]. After every input
//! the caller drains actions and events, then re-arms its timer.
//!
//! Topology (docs/overlay.md "Symphony"): a node joins by routing a
//! `Lookup` for its own id through an introducer, links to the
//! `ring_links` nearest nodes on each side, keeps them with `Ring` gossip,
//! and draws `k ~ log2(n)` long-distance links from the harmonic density
//! (crate::symphony), each found with a routed `Lookup`. No node needs the
//! full membership.

use crate::ring;
use crate::routing::{self, Candidate};
use crate::switch::{DropReason, Forward, Mac, Switch, SwitchConfig, SwitchCounters};
use crate::symphony;
use crate::wire::{
    AddrOrigin, FloodHeader, FrameHeader, Hello, LinkWant, Lookup, LookupReply, Member, Message,
    RejectReason, Role, RoutedHeader, TaggedAddr, WireError, MAX_ADDRS, MAX_NAME, MAX_NEIGHBOURS,
    MAX_PATH, MAX_RING_MEMBERS,
};
use ringlan_tunnel::{NodeId, Rng};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::time::{Duration, Instant};

/// Overlay parameters.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    /// At most [`MAX_NAME`] bytes.
    pub name: String,
    pub role: Role,
    /// The TAP's MAC; `None` runs without TAP (introducers only): such a
    /// node is told no frames and is not a ring position.
    pub mac: Option<Mac>,
    /// Introducer addresses; sessions are opened to each (id unknown until
    /// the session is up) and kept.
    pub introducers: Vec<SocketAddr>,
    /// Successor and predecessor links kept on each side (default 2).
    pub ring_links: usize,
    /// This node carries relayed routes for members (said in `Hello`).
    pub relays: bool,
    /// Bounds on the number `k` of long-distance links, which is otherwise
    /// `round(log2(n))` for the estimated size `n` (defaults 1 and 16; set
    /// both to the same value for a fixed `k`). Incoming long links are
    /// capped at `2 k`.
    pub long_links_min: usize,
    pub long_links_max: usize,
    /// Period of the `Neighbours` and `Ring` messages to every link.
    pub keepalive_interval: Duration,
    /// Period at which the link policy, open deadlines, lookups and the
    /// switch are checked.
    pub refresh_interval: Duration,
    /// An open without `peer_up` for this long counts as failed.
    pub open_timeout: Duration,
    /// A lookup without reply for this long is abandoned (and retried).
    pub lookup_timeout: Duration,
    /// First retry delay after a failed introducer open; doubles up to
    /// `retry_max`. Also the delay before a lost long link is looked up
    /// again.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// A node whose link failed, or whose open failed, is not re-learnt
    /// from other nodes' gossip for this long.
    pub forget_for: Duration,
    /// A link neither end wants is closed once it is this old.
    pub link_grace: Duration,
    /// Hop budget given to a broadcast at its origin. Bounded-flood trees
    /// are deep with few long links: at N = 100,000, k = 4 the simulator
    /// saw depth 54 on a settled ring and 64 (the old default, which cut
    /// off 4 nodes) right after 10% of the nodes failed.
    pub flood_hop_limit: u8,
    /// Hop budget given to a routed unicast frame at its origin.
    pub route_hop_limit: u8,
    /// On-demand links: once the frames (or bytes, 0 = off) routed to one
    /// node within `on_demand_interval` reach these thresholds, a direct
    /// session to it is wanted; it closes after `on_demand_idle` without
    /// direct frames either way.
    pub on_demand_frames: u32,
    pub on_demand_bytes: u64,
    pub on_demand_interval: Duration,
    pub on_demand_idle: Duration,
    pub switch: SwitchConfig,
}

impl Config {
    pub fn new(node_id: NodeId, name: impl Into<String>, role: Role, mac: Option<Mac>) -> Self {
        Config {
            node_id,
            name: name.into(),
            role,
            mac,
            introducers: Vec::new(),
            ring_links: 2,
            relays: false,
            long_links_min: 1,
            long_links_max: 16,
            keepalive_interval: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(5),
            open_timeout: Duration::from_secs(20),
            lookup_timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            forget_for: Duration::from_secs(30),
            link_grace: Duration::from_secs(10),
            flood_hop_limit: 128,
            route_hop_limit: 32,
            on_demand_frames: 64,
            on_demand_bytes: 256 * 1024,
            on_demand_interval: Duration::from_secs(10),
            on_demand_idle: Duration::from_secs(120),
            switch: SwitchConfig::default(),
        }
    }
}

/// Invalid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node name of {0} bytes exceeds {MAX_NAME}")]
    NameTooLong(usize),
    #[error("a node (not an introducer) needs at least one introducer")]
    NoIntroducer,
    #[error("a node (not an introducer) needs a TAP MAC")]
    NoTap,
    #[error("ring_links must be at least 1")]
    NoRingLinks,
}

/// What the agent must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a session. `node: None` is an introducer known only by address;
    /// answer with `peer_up(.., is_introducer = true)` or `open_failed`.
    OpenSession {
        node: Option<NodeId>,
        addrs: Vec<SocketAddr>,
    },
    /// Close the session to `node` (a `peer_down` is not expected back).
    CloseSession { node: NodeId },
    /// Send an encoded control message on the node's reliable control flow.
    SendControl { to: NodeId, bytes: Vec<u8> },
    /// A linked peer reported (`Moved`) that `node` is now reachable at
    /// `addr`: send the session's address-mobility check Ping there
    /// (`Endpoint::probe_path`, RFC 7016 3.5.4.2). A verified reply moves
    /// the session; answer with [`Overlay::peer_moved`].
    ProbePath { node: NodeId, addr: SocketAddr },
}

/// Why a link exists (for status), highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// One of the `ring_links` nearest nodes clockwise.
    Successor,
    /// One of the `ring_links` nearest nodes counter-clockwise.
    Predecessor,
    /// A session to an introducer.
    Introducer,
    /// A Symphony long-distance link (drawn here or by the peer).
    Long,
    /// A direct session for unicast traffic (wanted here or by the peer).
    OnDemand,
    /// Not (or not yet) wanted by either end; closed after `link_grace`.
    Other,
}

/// Something the agent may log or show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The join lookup was answered (or, on an introducer, started): the
    /// node is part of the network.
    Joined,
    /// A node became known (with its addresses).
    MemberJoined {
        node: NodeId,
        name: String,
    },
    /// A known node was forgotten (left, failed, or no longer near).
    MemberLeft {
        node: NodeId,
    },
    LinkUp {
        node: NodeId,
        kind: LinkKind,
    },
    LinkDown {
        node: NodeId,
    },
    /// Unicast traffic to `node` passed the on-demand threshold: a direct
    /// session is being opened (`Action::OpenSession` follows, at once or
    /// after a lookup of its addresses).
    OnDemandWanted {
        node: NodeId,
    },
    /// A relayed-route message (`RouteSetup` / `RouteReply`) from a link,
    /// for the agent's route handling.
    Route {
        from: NodeId,
        msg: Message,
    },
    /// A control message that did not decode (counted, otherwise ignored).
    BadControl {
        from: NodeId,
        error: WireError,
    },
}

/// One entry of [`Overlay::neighbours`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub node: NodeId,
    /// Empty until the peer's `Hello` arrived.
    pub name: String,
    pub kind: LinkKind,
    /// `None` until the peer's `Hello` arrived.
    pub role: Option<Role>,
    pub mac: Option<Mac>,
    pub addr: SocketAddr,
    pub since: Instant,
    pub takes_frames: bool,
}

/// One frame transmission decided by the data path: prepend `header`
/// (encoded with [`FrameHeader::encode`]) to the frame and send it on the
/// frame flow to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSend {
    pub to: NodeId,
    pub header: FrameHeader,
}

/// A frame accepted by [`Overlay::frame_from_peer`]: write `frame` to the
/// TAP when `to_tap`, and send it with each header in `out` to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'m> {
    pub frame: &'m [u8],
    /// False for a routed frame only passing through this node.
    pub to_tap: bool,
}

/// Frames that travelled routed (over the overlay, hop by hop) between this
/// node and one other end node, as opposed to on a direct session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutedCounters {
    /// Frames from the TAP sent routed towards the node, and their bytes.
    pub sent_frames: u64,
    pub sent_bytes: u64,
    /// Routed frames from the node delivered to the TAP here.
    pub delivered_frames: u64,
    pub delivered_bytes: u64,
}

/// Frame-taking links of one node by why they exist (sessions to
/// introducers excluded). See [`Overlay::link_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounts {
    /// Wanted here for the topology: ring neighbours and own long links.
    pub own: usize,
    /// Wanted only by the peer, which holds this node as a ring neighbour.
    pub incoming_ring: usize,
    /// Wanted only by the peer, as one of its long links.
    pub incoming_long: usize,
    /// On-demand links (unicast traffic, wanted by either end).
    pub on_demand: usize,
    /// Wanted by neither end (closed after `link_grace`) or not yet
    /// announced (no `Hello` yet).
    pub idle: usize,
}

impl LinkCounts {
    /// Links that count towards the topology bound
    /// 2 x (successors + predecessors + k): all but on-demand and idle.
    pub fn topology(&self) -> usize {
        self.own + self.incoming_ring + self.incoming_long
    }
}

/// At most this many end nodes have [`RoutedCounters`]; past it, the entry
/// with the least traffic makes room (the totals in [`Stats`] stay exact).
const MAX_ROUTED_PEERS: usize = 256;

/// Overlay counters (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bad_control: u64,
    pub frames_from_tap: u64,
    pub frames_from_peers: u64,
    pub frames_dropped: u64,
    pub flood_duplicates: u64,
    pub flood_forwarded: u64,
    pub routed_sent: u64,
    pub routed_forwarded: u64,
    pub routed_delivered: u64,
    pub no_route: u64,
    pub lookups_started: u64,
    pub lookups_forwarded: u64,
    pub lookups_answered: u64,
    pub link_rejects: u64,
    pub opens: u64,
    pub open_failures: u64,
    /// `Moved` announcements sent (a link's address or our own changed).
    pub moves_announced: u64,
    /// `ProbePath` actions asked for after a peer's `Moved`.
    pub probes: u64,
    pub switch: SwitchCounters,
}

#[derive(Debug)]
struct Link {
    addr: SocketAddr,
    since: Instant,
    to_introducer: bool,
    hello: Option<Hello>,
    /// The peer's last `Neighbours` report (for 1-lookahead).
    neighbours: Vec<NodeId>,
    /// What the peer last said it wants this link for.
    peer_want: LinkWant,
    /// What we last told the peer.
    announced: LinkWant,
    /// Last direct frame either way (on-demand idle detection).
    last_traffic: Instant,
    /// The last `ProbePath` asked for this link (rate limit).
    probed: Option<(SocketAddr, Instant)>,
}

impl Link {
    fn takes_frames(&self) -> bool {
        self.hello.as_ref().is_some_and(|h| h.mac.is_some())
    }

    fn is_introducer(&self) -> bool {
        self.to_introducer
            || self
                .hello
                .as_ref()
                .is_some_and(|h| h.role == Role::Introducer)
    }
}

#[derive(Debug)]
struct MemberState {
    info: Member,
    /// Open in flight since.
    pending: Option<Instant>,
}

#[derive(Debug)]
struct IntroducerState {
    addr: SocketAddr,
    node: Option<NodeId>,
    pending: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// One Symphony long-distance link: a drawn ring position and the node
/// managing it once a lookup found it.
#[derive(Debug, Clone)]
struct LongSlot {
    pos: NodeId,
    node: Option<NodeId>,
    lookup: Option<u64>,
    retry_at: Option<Instant>,
    /// Redraws since the last success (the manager was this node itself or
    /// refused the link).
    attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Join,
    Long,
    /// Find the addresses of a node wanted on demand.
    Resolve(NodeId),
}

#[derive(Debug, Clone, Copy)]
struct PendingLookup {
    purpose: Purpose,
    target: NodeId,
    sent: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Demand {
    start: Instant,
    frames: u32,
    bytes: u64,
}

/// Duplicate suppression for floods: the last `cap` (origin, seq) pairs.
/// Grows on demand (a quiet node holds nothing).
#[derive(Debug)]
struct FloodCache {
    set: HashSet<(NodeId, u64)>,
    order: VecDeque<(NodeId, u64)>,
    cap: usize,
}

impl FloodCache {
    fn new(cap: usize) -> Self {
        FloodCache {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// True if the pair is new (and now remembered).
    fn insert(&mut self, k: (NodeId, u64)) -> bool {
        if !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// Most routing candidates examined around a target when a node has very
/// many links (an introducer): the nearest this many on each side.
const WIDE_CANDIDATES: usize = 8;
/// Links above which routing uses only the nearest links to the target.
const WIDE_LINKS: usize = 256;
/// Redraws of one long slot before it waits for the next refresh.
const MAX_ATTEMPTS: u32 = 4;

/// The overlay of one node.
#[derive(Debug)]
pub struct Overlay {
    cfg: Config,
    rng: Rng,
    local_addrs: Vec<SocketAddr>,
    links: BTreeMap<NodeId, Link>,
    /// Known nodes with their addresses: linked peers, the ring nearby,
    /// lookup answers. Pruned to what the policy needs.
    members: BTreeMap<NodeId, MemberState>,
    /// Nodes not to re-learn from gossip before the instant.
    forgotten: BTreeMap<NodeId, Instant>,
    introducers: Vec<IntroducerState>,
    switch: Switch,
    flood_seq: u64,
    seen: FloodCache,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    next_refresh: Instant,
    next_keepalive: Instant,
    joined: bool,
    leaving: bool,
    stats: Stats,
    /// Estimated network size and the estimate the long links were drawn
    /// with (0: not drawn yet).
    n_est: f64,
    n_drawn: f64,
    long: Vec<LongSlot>,
    lookups: BTreeMap<u64, PendingLookup>,
    /// Unicast traffic per unlinked destination in the current interval.
    demand: HashMap<NodeId, Demand>,
    /// Nodes wanted on demand, with the instant they were wanted.
    on_demand: BTreeMap<NodeId, Instant>,
    /// Routed traffic per end node (bounded by [`MAX_ROUTED_PEERS`]).
    routed: BTreeMap<NodeId, RoutedCounters>,
    /// What the last `Neighbours` / `Ring` messages said.
    sent_neighbours: Vec<NodeId>,
    sent_ring: Vec<NodeId>,
    /// Reused scratch for flood target computation.
    scratch: Vec<NodeId>,
    /// Nodes whose opens failed in a row, for status (kept while retries
    /// go on, so status does not flap; cleared when a session comes up).
    failed_opens: BTreeMap<NodeId, u32>,
}

/// A node the policy wanted a link to but could not reach (for status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAttempt {
    pub node: NodeId,
    /// Open attempts that failed in a row.
    pub failures: u32,
    /// An attempt is in flight now.
    pub pending: bool,
}

impl Overlay {
    /// A new overlay; queues the first introducer opens at once.
    pub fn new(now: Instant, cfg: Config, mut rng: Rng) -> Result<Self, ConfigError> {
        if cfg.name.len() > MAX_NAME {
            return Err(ConfigError::NameTooLong(cfg.name.len()));
        }
        if cfg.ring_links == 0 {
            return Err(ConfigError::NoRingLinks);
        }
        if cfg.role == Role::Node {
            if cfg.introducers.is_empty() {
                return Err(ConfigError::NoIntroducer);
            }
            if cfg.mac.is_none() {
                return Err(ConfigError::NoTap);
            }
        }
        let introducers = cfg
            .introducers
            .iter()
            .map(|a| IntroducerState {
                addr: *a,
                node: None,
                pending: None,
                retry_at: Some(now),
                backoff: cfg.retry_initial,
            })
            .collect();
        let mut o = Overlay {
            switch: Switch::new(cfg.switch.clone(), cfg.mac),
            flood_seq: rng.u64(),
            seen: FloodCache::new(4096),
            rng,
            local_addrs: Vec::new(),
            links: BTreeMap::new(),
            members: BTreeMap::new(),
            failed_opens: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            introducers,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_refresh: now + cfg.refresh_interval,
            next_keepalive: now + cfg.keepalive_interval,
            joined: false,
            leaving: false,
            stats: Stats::default(),
            n_est: 1.0,
            n_drawn: 0.0,
            long: Vec::new(),
            lookups: BTreeMap::new(),
            demand: HashMap::new(),
            on_demand: BTreeMap::new(),
            routed: BTreeMap::new(),
            sent_neighbours: Vec::new(),
            sent_ring: Vec::new(),
            scratch: Vec::new(),
            cfg,
        };
        if o.cfg.role == Role::Introducer {
            o.joined = true;
            o.events.push_back(Event::Joined);
        }
        o.open_introducers(now);
        Ok(o)
    }

    // ------------------------------------------------------------ getters

    pub fn node_id(&self) -> NodeId {
        self.cfg.node_id
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether the node's join lookup was answered (always true on an
    /// introducer).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    pub fn stats(&self) -> Stats {
        Stats {
            switch: self.switch.counters(),
            ..self.stats
        }
    }

    /// Routed traffic between this node and each end node it exchanged
    /// routed frames with (bounded; see [`RoutedCounters`]), by id.
    pub fn routed_counters(&self) -> impl Iterator<Item = (NodeId, RoutedCounters)> + '_ {
        self.routed.iter().map(|(id, c)| (*id, *c))
    }

    /// The counters of `node`, creating them (and evicting the quietest
    /// entry when full). Allocates only for a new end node.
    fn routed_entry(&mut self, node: NodeId) -> &mut RoutedCounters {
        if !self.routed.contains_key(&node) && self.routed.len() >= MAX_ROUTED_PEERS {
            let quietest = self
                .routed
                .iter()
                .min_by_key(|(_, c)| c.sent_frames.saturating_add(c.delivered_frames))
                .map(|(id, _)| *id);
            if let Some(q) = quietest {
                self.routed.remove(&q);
            }
        }
        self.routed.entry(node).or_default()
    }

    /// Every known node (not including this one), by id: linked peers and
    /// the nodes the policy currently cares about.
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members.values().map(|m| &m.info)
    }

    pub fn member(&self, node: NodeId) -> Option<&Member> {
        self.members.get(&node).map(|m| &m.info)
    }

    /// Whether a session to `node` is up.
    pub fn is_linked(&self, node: NodeId) -> bool {
        self.links.contains_key(&node)
    }

    /// Whether this node is a ring position (has a TAP).
    pub fn in_ring(&self) -> bool {
        self.cfg.mac.is_some()
    }

    /// The estimated number of nodes on the ring.
    pub fn estimated_size(&self) -> f64 {
        self.n_est
    }

    /// The nodes currently managing this node's long-link positions.
    pub fn long_links(&self) -> Vec<NodeId> {
        self.long.iter().filter_map(|s| s.node).collect()
    }

    /// The `ring_links` nearest known ring nodes clockwise and
    /// counter-clockwise (nearest first).
    pub fn ring_view(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        self.ring_neighbours(self.cfg.ring_links)
    }

    /// Frame-taking links by why they exist (what this node last announced
    /// and what the peer last asked for).
    pub fn link_counts(&self) -> LinkCounts {
        let mut c = LinkCounts::default();
        for l in self.links.values() {
            if !l.takes_frames() || l.is_introducer() {
                continue;
            }
            match (l.announced, l.peer_want) {
                (LinkWant::OnDemand, _) | (_, LinkWant::OnDemand) => c.on_demand += 1,
                (LinkWant::Ring | LinkWant::Long, _) => c.own += 1,
                (LinkWant::Release, LinkWant::Ring) => c.incoming_ring += 1,
                (LinkWant::Release, LinkWant::Long) => c.incoming_long += 1,
                (LinkWant::Release, LinkWant::Release) => c.idle += 1,
            }
        }
        c
    }

    /// The most topology links ([`LinkCounts::topology`]) this node keeps:
    /// 2 x (successors + predecessors + k), k its current long-link count.
    pub fn link_bound(&self) -> usize {
        2 * (2 * self.cfg.ring_links + self.long_target().max(1))
    }

    /// Current links with their kinds, in ring order from this node.
    pub fn neighbours(&self) -> Vec<Neighbour> {
        let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
        let mut v: Vec<Neighbour> = self
            .links
            .iter()
            .map(|(id, l)| Neighbour {
                node: *id,
                name: l.hello.as_ref().map(|h| h.name.clone()).unwrap_or_default(),
                kind: self.kind_of(*id, l, &succ, &pred),
                role: l.hello.as_ref().map(|h| h.role),
                mac: l.hello.as_ref().and_then(|h| h.mac),
                addr: l.addr,
                since: l.since,
                takes_frames: l.takes_frames(),
            })
            .collect();
        let me = self.cfg.node_id;
        v.sort_by(|a, b| ring::cmp_clockwise(me, a.node, b.node));
        v
    }

    /// The node behind a MAC, as learnt by the switch.
    pub fn lookup_mac(&mut self, now: Instant, mac: Mac) -> Option<NodeId> {
        self.switch.lookup(now, mac)
    }

    /// The link a message for ring position `target` goes to next (greedy
    /// with 1-lookahead), or `None` when this node is the closest it
    /// knows of.
    pub fn next_hop(&self, target: NodeId) -> Option<NodeId> {
        self.route(target, &[])
    }

    /// [`Self::next_hop`] for a message that arrived from `from`: never
    /// straight back (stale lookahead lists could otherwise bounce a
    /// message between two nodes until its hop limit).
    pub fn next_hop_from(&self, target: NodeId, from: NodeId) -> Option<NodeId> {
        self.route(target, &[from])
    }

    // ------------------------------------------------------------ outputs

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The one deadline: call `handle_timeout` at (or after) it. Member
    /// opens, lookups and long-link retries are checked at the refresh
    /// tick (`refresh_interval` granularity).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_refresh.min(self.next_keepalive);
        for i in &self.introducers {
            if i.node.is_none() {
                if let Some(p) = i.pending {
                    t = t.min(p + self.cfg.open_timeout);
                } else if let Some(r) = i.retry_at {
                    t = t.min(r);
                }
            }
        }
        Some(t)
    }

    // ------------------------------------------------------------ inputs

    /// Timers fired: expire opens and lookups, retry, refresh the policy,
    /// keepalive.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.cfg.open_timeout;
        for idx in 0..self.introducers.len() {
            let expired = self
                .introducers
                .get(idx)
                .is_some_and(|i| i.node.is_none() && i.pending.is_some_and(|p| now >= p + timeout));
            if expired {
                self.introducer_failed(now, idx);
            }
        }
        self.open_introducers(now);
        if now >= self.next_refresh {
            self.next_refresh = now + self.cfg.refresh_interval;
            self.refresh(now);
        }
        if now >= self.next_keepalive {
            self.next_keepalive = now + self.cfg.keepalive_interval;
            self.sent_neighbours.clear();
            self.sent_ring.clear();
            self.gossip();
        }
        self.run_policy(now);
    }

    /// A session to `node` is up (opened by either side). `remote_addr` is
    /// the address the session runs to; `is_introducer` is true when it
    /// answers an `OpenSession { node: None, .. }` to an introducer
    /// address. A second session to a node already linked is ignored.
    pub fn peer_up(
        &mut self,
        now: Instant,
        node: NodeId,
        remote_addr: SocketAddr,
        is_introducer: bool,
    ) {
        self.failed_opens.remove(&node);
        if node == self.cfg.node_id {
            // Reached ourselves (e.g. our own address in the introducer list).
            self.actions.push_back(Action::CloseSession { node });
            return;
        }
        if is_introducer {
            let idx = self
                .introducers
                .iter()
                .position(|i| i.node.is_none() && i.addr == remote_addr)
                .or_else(|| {
                    self.introducers
                        .iter()
                        .position(|i| i.node.is_none() && i.pending.is_some())
                });
            if let Some(i) = idx.and_then(|i| self.introducers.get_mut(i)) {
                i.node = Some(node);
                i.pending = None;
                i.retry_at = None;
                i.backoff = self.cfg.retry_initial;
            }
        }
        if let Some(m) = self.members.get_mut(&node) {
            m.pending = None;
        }
        self.forgotten.remove(&node);
        if let Some(l) = self.links.get_mut(&node) {
            l.to_introducer |= is_introducer;
            return;
        }
        self.links.insert(
            node,
            Link {
                addr: remote_addr,
                since: now,
                to_introducer: is_introducer,
                hello: None,
                neighbours: Vec::new(),
                peer_want: LinkWant::Release,
                announced: LinkWant::Release,
                last_traffic: now,
                probed: None,
            },
        );
        let kind = self.link_kind(node);
        self.events.push_back(Event::LinkUp { node, kind });
        let hello = self.hello();
        self.send(node, &hello);
        if is_introducer && !self.joined {
            self.start_join(now);
        }
        self.run_policy(now);
    }

    /// An `OpenSession` failed (unreachable, refused, timed out in the
    /// transport). `node` and `addrs` as in the action.
    pub fn open_failed(&mut self, now: Instant, node: Option<NodeId>, addrs: &[SocketAddr]) {
        match node {
            Some(id) => self.member_open_failed(now, id),
            None => {
                if let Some(idx) = self.introducers.iter().position(|i| {
                    i.node.is_none() && i.pending.is_some() && addrs.contains(&i.addr)
                }) {
                    self.introducer_failed(now, idx);
                }
            }
        }
        self.run_policy(now);
    }

    /// Nodes with a session to us that can forward an IHello to `target`
    /// (RFC 7016 3.5.1.5): introducers (every member keeps a session to
    /// them) and links whose last `Neighbours` list names `target`.
    pub fn forwarders_for(&self, target: NodeId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(id, l)| {
                **id != target && (l.is_introducer() || l.neighbours.contains(&target))
            })
            .map(|(id, _)| *id)
            .collect();
        out.truncate(MAX_NEIGHBOURS);
        out
    }

    /// Links that relay (their `Hello` said so) and can carry a route to
    /// `target`: those with a session to it (introducers, links whose last
    /// `Neighbours` list names it) first, then the other relaying links
    /// nearest to `target` on the ring (a route through them may need more
    /// relays). Never `target` itself.
    pub fn relays_for(&self, target: NodeId) -> Vec<NodeId> {
        let relaying = |l: &Link| l.hello.as_ref().is_some_and(|h| h.relays);
        let mut near: Vec<NodeId> = Vec::new();
        let mut far: Vec<NodeId> = Vec::new();
        for (id, l) in &self.links {
            if *id == target || !relaying(l) {
                continue;
            }
            if l.is_introducer() || l.neighbours.contains(&target) {
                near.push(*id);
            } else {
                far.push(*id);
            }
        }
        far.sort_by_key(|id| ring::ring_distance(*id, target));
        near.extend(far);
        near
    }

    /// Whether `target` is known to have a session with link `via`.
    pub fn reaches(&self, via: NodeId, target: NodeId) -> bool {
        self.links
            .get(&via)
            .is_some_and(|l| l.is_introducer() || l.neighbours.contains(&target))
    }

    /// Nodes whose opens failed and that have no link yet. An entry stays
    /// while retries go on, so status does not flap.
    pub fn open_attempts(&self) -> Vec<OpenAttempt> {
        if self.cfg.role == Role::Introducer {
            return Vec::new();
        }
        self.failed_opens
            .iter()
            .filter(|(id, _)| !self.links.contains_key(id))
            .map(|(id, f)| OpenAttempt {
                node: *id,
                failures: *f,
                pending: self.members.get(id).is_some_and(|m| m.pending.is_some()),
            })
            .collect()
    }

    /// The last session to `node` is gone.
    pub fn peer_down(&mut self, now: Instant, node: NodeId) {
        let Some(link) = self.links.remove(&node) else {
            return;
        };
        self.switch.forget_node(node);
        self.events.push_back(Event::LinkDown { node });
        for i in self.introducers.iter_mut().filter(|i| i.node == Some(node)) {
            i.node = None;
            i.pending = None;
            i.retry_at = Some(now + jitter(&mut self.rng, i.backoff));
            i.backoff = (i.backoff * 2).min(self.cfg.retry_max);
        }
        self.link_lost(now, node);
        let wanted = link.announced != LinkWant::Release || link.peer_want != LinkWant::Release;
        if self.cfg.role == Role::Introducer || wanted {
            // A failure (not a close of a link nobody wanted): do not take
            // the node back from stale gossip for a while.
            self.forget(now, node);
        }
        self.run_policy(now);
    }

    /// A control message from `from` (a node with a session up).
    pub fn handle_control(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(error) => {
                self.stats.bad_control += 1;
                self.events.push_back(Event::BadControl { from, error });
                return;
            }
        };
        if !self.links.contains_key(&from) {
            // Stale message after peer_down: the session is gone.
            return;
        }
        match msg {
            Message::Hello(h) => self.on_hello(now, from, h),
            Message::Members(list) => {
                for m in list {
                    self.learn(now, m);
                }
            }
            Message::MemberJoined(m) => {
                self.learn(now, m);
            }
            Message::MemberLeft(id) => {
                if !self.links.contains_key(&id) {
                    self.remove_member(id);
                }
            }
            Message::Leaving => {
                self.links.remove(&from);
                self.switch.forget_node(from);
                self.events.push_back(Event::LinkDown { node: from });
                self.actions.push_back(Action::CloseSession { node: from });
                self.link_lost(now, from);
                self.forget(now, from);
            }
            Message::Neighbours(mut ids) => {
                if let Some(l) = self.links.get_mut(&from) {
                    ids.retain(|i| *i != from);
                    l.neighbours = ids;
                }
            }
            Message::Lookup(l) => self.on_lookup(now, from, l),
            Message::LookupReply(r) => self.on_lookup_reply(now, from, r),
            Message::LinkRequest(want) => self.on_link_request(now, from, want),
            Message::LinkReject { kind, reason } => self.on_link_reject(now, from, kind, reason),
            Message::Ring(list) => self.on_ring(now, from, list),
            Message::Moved { node, addr } => self.on_moved(now, node, addr),
            Message::RouteSetup(_) | Message::RouteReply(_) => {
                // Relayed routes are the agent's (they drive the endpoint).
                self.events.push_back(Event::Route { from, msg });
                return;
            }
        }
        self.run_policy(now);
    }

    /// The session to `node` moved to `addr` (the transport verified the
    /// new address, RFC 7016 3.5.4.2). Records it and, as the forwarder
    /// that saw the move (RFC 7016 3.5.1.5), tells every other link with
    /// `Moved` so that a peer whose NAT only lets the old address in can
    /// probe the new one.
    pub fn peer_moved(&mut self, now: Instant, node: NodeId, addr: SocketAddr) {
        let Some(link) = self.links.get_mut(&node) else {
            return;
        };
        let old = link.addr;
        link.addr = addr;
        link.probed = None;
        if old == addr {
            return;
        }
        if let Some(m) = self.members.get_mut(&node) {
            let local = m
                .info
                .addrs
                .iter()
                .any(|a| a.origin == AddrOrigin::Local && a.addr == addr);
            m.info
                .addrs
                .retain(|a| !(a.origin == AddrOrigin::Reflexive && a.addr == old));
            if !local && m.info.addrs.len() < MAX_ADDRS {
                m.info.addrs.push(TaggedAddr {
                    origin: AddrOrigin::Reflexive,
                    addr,
                });
            }
        }
        self.stats.moves_announced += 1;
        self.announce_move(node, addr);
        self.run_policy(now);
    }

    /// This node's own reflexive address (STUN) changed: tell every link,
    /// so that peers whose NAT filters the new address probe it.
    pub fn reflexive_changed(&mut self, now: Instant, addr: SocketAddr) {
        self.stats.moves_announced += 1;
        self.announce_move(self.cfg.node_id, addr);
        self.run_policy(now);
    }

    /// `Moved { node, addr }` to every link except `node` itself.
    fn announce_move(&mut self, node: NodeId, addr: SocketAddr) {
        let msg = Message::Moved { node, addr };
        let to: Vec<NodeId> = self.links.keys().copied().filter(|n| *n != node).collect();
        for n in to {
            self.send(n, &msg);
        }
    }

    /// A linked peer says `node` is now at `addr`: probe it if our session
    /// runs elsewhere. At most one probe per address and second, so a
    /// chatty peer cannot turn us into a Ping source; the probe itself
    /// proves nothing until the far end answers it (RFC 7016 3.5.4.2).
    fn on_moved(&mut self, now: Instant, node: NodeId, addr: SocketAddr) {
        if node == self.cfg.node_id {
            return;
        }
        let Some(link) = self.links.get_mut(&node) else {
            return;
        };
        if link.addr == addr {
            return;
        }
        let recent = link.probed.is_some_and(|(a, t)| {
            a == addr && now.saturating_duration_since(t) < Duration::from_secs(1)
        });
        if recent {
            return;
        }
        link.probed = Some((addr, now));
        self.stats.probes += 1;
        self.actions.push_back(Action::ProbePath { node, addr });
    }

    /// This node's interface addresses changed (also call once at start).
    /// Every link gets a fresh `Hello`.
    pub fn set_local_addresses(&mut self, now: Instant, addrs: &[SocketAddr]) {
        let mut v: Vec<SocketAddr> = addrs.to_vec();
        v.truncate(MAX_ADDRS);
        if v == self.local_addrs {
            return;
        }
        self.local_addrs = v;
        let hello = self.hello();
        let to: Vec<NodeId> = self.links.keys().copied().collect();
        for n in to {
            self.send(n, &hello);
        }
        self.run_policy(now);
    }

    /// Polite leave: queue `Leaving` to every link and stop opening
    /// sessions. The agent sends the queued messages, then shuts down.
    pub fn leave(&mut self, _now: Instant) {
        self.leaving = true;
        for i in &mut self.introducers {
            i.retry_at = None;
            i.pending = None;
        }
        let to: Vec<NodeId> = self.links.keys().copied().collect();
        for n in to {
            self.send(n, &Message::Leaving);
        }
    }

    // ------------------------------------------------------------ data path

    /// A frame read from the TAP. Fills `out` (cleared first) with the
    /// transmissions to make; returns the switch decision. No allocation
    /// once `out` has grown to the number of links.
    pub fn frame_from_tap(
        &mut self,
        now: Instant,
        frame: &[u8],
        out: &mut Vec<FrameSend>,
    ) -> Forward {
        out.clear();
        self.stats.frames_from_tap += 1;
        if self.cfg.mac.is_none() {
            self.stats.frames_dropped += 1;
            return Forward::Drop(DropReason::NoTap);
        }
        let d = self.switch.decide(now, frame);
        match d {
            Forward::Unicast(n) => {
                if let Some(l) = self.links.get_mut(&n).filter(|l| l.takes_frames()) {
                    l.last_traffic = now;
                    out.push(FrameSend {
                        to: n,
                        header: FrameHeader::Direct,
                    });
                    return d;
                }
                self.count_demand(now, n, frame.len());
                if let Some(hop) = self.route(n, &[]) {
                    self.stats.routed_sent += 1;
                    let c = self.routed_entry(n);
                    c.sent_frames += 1;
                    c.sent_bytes += frame.len() as u64;
                    out.push(FrameSend {
                        to: hop,
                        header: FrameHeader::Routed(RoutedHeader {
                            origin: self.cfg.node_id,
                            destination: n,
                            hop_limit: self.cfg.route_hop_limit,
                        }),
                    });
                    return d;
                }
                // No route (no ring links yet): flood it.
                self.flood_from_here(out);
                Forward::Flood
            }
            Forward::Flood => {
                self.flood_from_here(out);
                Forward::Flood
            }
            Forward::Local => {
                self.stats.frames_dropped += 1;
                Forward::Drop(DropReason::ToSelf)
            }
            Forward::Drop(_) => {
                self.stats.frames_dropped += 1;
                d
            }
        }
    }

    /// A frame-flow message from `from`. Returns the Ethernet frame and
    /// whether to write it to the TAP, and fills `out` (cleared first) with
    /// the transmissions to make with that same frame (flood forwards, or
    /// the next hop of a routed frame).
    pub fn frame_from_peer<'m>(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: &'m [u8],
        out: &mut Vec<FrameSend>,
    ) -> Result<Received<'m>, DropReason> {
        out.clear();
        self.stats.frames_from_peers += 1;
        let r = self.frame_from_peer_inner(now, from, msg, out);
        if r.is_err() {
            self.stats.frames_dropped += 1;
        }
        r
    }

    fn frame_from_peer_inner<'m>(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: &'m [u8],
        out: &mut Vec<FrameSend>,
    ) -> Result<Received<'m>, DropReason> {
        if self.cfg.mac.is_none() || !self.links.contains_key(&from) {
            return Err(DropReason::NoTap);
        }
        let (header, frame) = FrameHeader::decode(msg).map_err(|_| DropReason::BadHeader)?;
        match header {
            FrameHeader::Direct => {
                if let Some(r) = self.switch.ingress(now, from, frame) {
                    return Err(r);
                }
                if let Some(l) = self.links.get_mut(&from) {
                    l.last_traffic = now;
                }
            }
            FrameHeader::Flood(h) => {
                if h.origin == self.cfg.node_id || !self.seen.insert((h.origin, h.seq)) {
                    self.stats.flood_duplicates += 1;
                    return Err(DropReason::Duplicate);
                }
                // The MAC lives at the origin, not at the forwarder.
                if let Some(r) = self.switch.ingress(now, h.origin, frame) {
                    return Err(r);
                }
                if h.hop_limit > 1 {
                    self.plan_flood(h.origin, h.seq, h.bound, h.hop_limit - 1, Some(from), out);
                    self.stats.flood_forwarded += out.len() as u64;
                }
            }
            FrameHeader::Routed(h) => {
                if h.destination == self.cfg.node_id {
                    if let Some(r) = self.switch.ingress(now, h.origin, frame) {
                        return Err(r);
                    }
                    self.stats.routed_delivered += 1;
                    let c = self.routed_entry(h.origin);
                    c.delivered_frames += 1;
                    c.delivered_bytes += frame.len() as u64;
                    return Ok(Received {
                        frame,
                        to_tap: true,
                    });
                }
                if h.hop_limit <= 1 {
                    return Err(DropReason::Duplicate);
                }
                let Some(hop) = self
                    .links
                    .get(&h.destination)
                    .filter(|l| l.takes_frames())
                    .map(|_| h.destination)
                    .or_else(|| self.route(h.destination, &[from]))
                else {
                    self.stats.no_route += 1;
                    return Err(DropReason::NoRoute);
                };
                self.stats.routed_forwarded += 1;
                out.push(FrameSend {
                    to: hop,
                    header: FrameHeader::Routed(RoutedHeader {
                        hop_limit: h.hop_limit - 1,
                        ..h
                    }),
                });
                return Ok(Received {
                    frame,
                    to_tap: false,
                });
            }
        }
        Ok(Received {
            frame,
            to_tap: true,
        })
    }

    fn flood_from_here(&mut self, out: &mut Vec<FrameSend>) {
        self.flood_seq = self.flood_seq.wrapping_add(1);
        let me = self.cfg.node_id;
        self.seen.insert((me, self.flood_seq));
        self.plan_flood(me, self.flood_seq, me, self.cfg.flood_hop_limit, None, out);
    }

    /// Bounded flood (DESIGN.md "Bounded flood"): the frame-taking links
    /// strictly inside the arc (self, bound), in ring order, each with the
    /// sub-arc up to the next one (the last up to `bound`).
    fn plan_flood(
        &mut self,
        origin: NodeId,
        seq: u64,
        bound: NodeId,
        hop_limit: u8,
        from: Option<NodeId>,
        out: &mut Vec<FrameSend>,
    ) {
        let me = self.cfg.node_id;
        self.scratch.clear();
        self.scratch.extend(
            self.links
                .iter()
                .filter(|(id, l)| {
                    l.takes_frames()
                        && Some(**id) != from
                        && **id != origin
                        && ring::between(me, **id, bound)
                })
                .map(|(id, _)| *id),
        );
        ring::sort_clockwise(me, &mut self.scratch);
        for (i, to) in self.scratch.iter().enumerate() {
            let sub = self.scratch.get(i + 1).copied().unwrap_or(bound);
            out.push(FrameSend {
                to: *to,
                header: FrameHeader::Flood(FloodHeader {
                    origin,
                    seq,
                    bound: sub,
                    hop_limit,
                }),
            });
        }
    }

    /// Count unicast traffic to an unlinked node; past the threshold, want
    /// an on-demand link to it.
    fn count_demand(&mut self, now: Instant, node: NodeId, len: usize) {
        if self.cfg.on_demand_frames == 0 && self.cfg.on_demand_bytes == 0 {
            return;
        }
        if self.on_demand.contains_key(&node) {
            return;
        }
        if self.demand.len() >= 1024 && !self.demand.contains_key(&node) {
            // Bounded: a burst of destinations restarts the count.
            self.demand.clear();
        }
        let interval = self.cfg.on_demand_interval;
        let d = self.demand.entry(node).or_insert(Demand {
            start: now,
            frames: 0,
            bytes: 0,
        });
        if now.saturating_duration_since(d.start) >= interval {
            *d = Demand {
                start: now,
                frames: 0,
                bytes: 0,
            };
        }
        d.frames = d.frames.saturating_add(1);
        d.bytes = d.bytes.saturating_add(len as u64);
        let hit = (self.cfg.on_demand_frames > 0 && d.frames >= self.cfg.on_demand_frames)
            || (self.cfg.on_demand_bytes > 0 && d.bytes >= self.cfg.on_demand_bytes);
        if hit && !self.leaving {
            self.demand.remove(&node);
            self.on_demand.insert(node, now);
            self.events.push_back(Event::OnDemandWanted { node });
            if self.members.contains_key(&node) {
                self.open_member(now, node);
            } else {
                self.start_lookup(now, node, Purpose::Resolve(node));
            }
        }
    }

    // ------------------------------------------------------------ routing

    /// Greedy next hop towards `target` among ring links (1-lookahead),
    /// skipping `exclude`.
    fn route(&self, target: NodeId, exclude: &[NodeId]) -> Option<NodeId> {
        let me = self.cfg.node_id;
        let in_ring = self.in_ring();
        if self.links.len() > WIDE_LINKS {
            // Very many links (an introducer): the nearest on each side of
            // the target are the only useful candidates.
            let near = nearest_links(&self.links, target, WIDE_CANDIDATES);
            let cands = near.iter().filter_map(|id| {
                self.links.get(id).map(|l| Candidate {
                    node: *id,
                    neighbours: &l.neighbours,
                })
            });
            return routing::next_hop(me, in_ring, target, cands, exclude);
        }
        let cands = self
            .links
            .iter()
            .filter(|(_, l)| l.takes_frames())
            .map(|(id, l)| Candidate {
                node: *id,
                neighbours: &l.neighbours,
            });
        routing::next_hop(me, in_ring, target, cands, exclude)
    }

    fn start_join(&mut self, now: Instant) {
        if self.cfg.role == Role::Introducer
            || self.leaving
            || self.lookups.values().any(|p| p.purpose == Purpose::Join)
        {
            return;
        }
        let me = self.cfg.node_id;
        self.start_lookup(now, me, Purpose::Join);
    }

    /// Send a lookup for `target`. A join goes through an introducer; other
    /// lookups are routed from here. When this node is itself the closest,
    /// the lookup is answered locally.
    fn start_lookup(&mut self, now: Instant, target: NodeId, purpose: Purpose) -> Option<u64> {
        let nonce = self.rng.u64();
        self.start_lookup_with(now, nonce, target, purpose)
    }

    /// [`Self::start_lookup`] with a nonce chosen by the caller (a long
    /// slot records it first so that a local answer finds the slot).
    fn start_lookup_with(
        &mut self,
        now: Instant,
        nonce: u64,
        target: NodeId,
        purpose: Purpose,
    ) -> Option<u64> {
        let me = self.cfg.node_id;
        let hop = if purpose == Purpose::Join {
            self.introducers.iter().find_map(|i| i.node)
        } else {
            self.route(target, &[me])
        };
        self.stats.lookups_started += 1;
        match hop {
            Some(h) => {
                self.lookups.insert(
                    nonce,
                    PendingLookup {
                        purpose,
                        target,
                        sent: now,
                    },
                );
                self.send(
                    h,
                    &Message::Lookup(Lookup {
                        nonce,
                        target,
                        path: vec![me],
                    }),
                );
                Some(nonce)
            }
            None if purpose == Purpose::Join => None,
            None => {
                let members = self.reply_members(target);
                self.lookup_done(
                    now,
                    PendingLookup {
                        purpose,
                        target,
                        sent: now,
                    },
                    nonce,
                    members,
                );
                None
            }
        }
    }

    fn on_lookup(&mut self, now: Instant, from: NodeId, mut l: Lookup) {
        let _ = now;
        let me = self.cfg.node_id;
        if l.path.last() != Some(&from) || l.path.contains(&me) {
            // Malformed or looping lookup.
            self.stats.bad_control += 1;
            return;
        }
        let hop = if l.path.len() < MAX_PATH {
            self.route(l.target, &l.path)
        } else {
            None
        };
        match hop {
            Some(h) => {
                self.stats.lookups_forwarded += 1;
                l.path.push(me);
                self.send(h, &Message::Lookup(l));
            }
            None => {
                self.stats.lookups_answered += 1;
                let members = self.reply_members(l.target);
                self.send(
                    from,
                    &Message::LookupReply(LookupReply {
                        nonce: l.nonce,
                        target: l.target,
                        path: l.path,
                        members,
                    }),
                );
            }
        }
    }

    fn on_lookup_reply(&mut self, now: Instant, _from: NodeId, mut r: LookupReply) {
        let me = self.cfg.node_id;
        if r.path.last() != Some(&me) {
            self.stats.bad_control += 1;
            return;
        }
        r.path.pop();
        if let Some(next) = r.path.last().copied() {
            // Walk the reply back; a broken path drops it (the asker
            // retries after its lookup timeout).
            if self.links.contains_key(&next) {
                self.send(next, &Message::LookupReply(r));
            }
            return;
        }
        if let Some(p) = self.lookups.remove(&r.nonce) {
            if p.target == r.target {
                self.lookup_done(now, p, r.nonce, r.members);
            }
        }
    }

    /// A lookup of ours was answered with `members` (nearest the target).
    fn lookup_done(&mut self, now: Instant, p: PendingLookup, nonce: u64, members: Vec<Member>) {
        let ring_ids: Vec<NodeId> = members
            .iter()
            .filter(|m| m.has_tap)
            .map(|m| m.node_id)
            .collect();
        for m in members {
            self.learn(now, m);
        }
        match p.purpose {
            Purpose::Join => {
                if !self.joined {
                    self.joined = true;
                    self.events.push_back(Event::Joined);
                }
            }
            Purpose::Resolve(_) => {}
            Purpose::Long => {
                let me = self.cfg.node_id;
                let Some(slot) = self.long.iter_mut().find(|s| s.lookup == Some(nonce)) else {
                    return;
                };
                slot.lookup = None;
                // The manager of the drawn position: the first ring node at
                // or clockwise after it (Symphony / Chord).
                let owner = ring::owner(slot.pos, ring_ids.iter().copied())
                    .or_else(|| ring::owner(slot.pos, [me]));
                match owner {
                    Some(o) if o != me && !self.forgotten.contains_key(&o) => {
                        slot.node = Some(o);
                        slot.attempts = 0;
                    }
                    _ => {
                        // Managed by this node itself: draw again.
                        slot.attempts += 1;
                        slot.pos = symphony::draw_target(me, self.n_est, &mut self.rng);
                        if slot.attempts >= MAX_ATTEMPTS {
                            slot.retry_at = Some(now + self.cfg.refresh_interval * 6);
                        }
                    }
                }
            }
        }
    }

    /// The members to answer a lookup for `target` with: this node if it
    /// is a ring position, then the ring nodes it knows nearest the target
    /// on each side.
    fn reply_members(&self, target: NodeId) -> Vec<Member> {
        let w = self.cfg.ring_links + 1;
        let mut out = Vec::with_capacity(2 * w + 1);
        if self.in_ring() {
            out.push(self.self_member());
        }
        let mut ids = nearest_members(&self.members, target, w, true);
        ids.extend(nearest_members(&self.members, target, w, false));
        for id in ids {
            if out.len() >= MAX_RING_MEMBERS {
                break;
            }
            if let Some(m) = self.members.get(&id) {
                if !out.iter().any(|x: &Member| x.node_id == id) {
                    out.push(m.info.clone());
                }
            }
        }
        out
    }

    /// The caps on links only the peer wants ("foreign" links), which make
    /// the topology bound hold by construction: every node has at most
    /// `s + p + k` links it wants itself, at most `2k` links peers hold as
    /// long links (incoming long), and at most `s + p + k` foreign links,
    /// so at most 2 x (s + p + k) links besides introducer and on-demand
    /// sessions. Returns (incoming long cap, foreign cap).
    fn link_caps(&self) -> (usize, usize) {
        let k = self.long_target().max(1);
        (2 * k, 2 * self.cfg.ring_links + k)
    }

    /// (incoming long, foreign) links, not counting `except`: links the
    /// peer holds as a long link, and frame-taking links only the peer
    /// wants (as ring or long link).
    fn incoming_counts(&self, except: Option<NodeId>) -> (usize, usize) {
        let mut long = 0;
        let mut foreign = 0;
        for (id, l) in &self.links {
            if Some(*id) == except || l.is_introducer() {
                continue;
            }
            if l.peer_want == LinkWant::Long {
                long += 1;
            }
            if l.announced == LinkWant::Release
                && matches!(l.peer_want, LinkWant::Long | LinkWant::Ring)
            {
                foreign += 1;
            }
        }
        (long, foreign)
    }

    /// Rejects foreign long links (youngest first) while a cap of
    /// [`Self::link_caps`] is exceeded: links become foreign after they
    /// were accepted, when this node stops wanting them itself (a ring
    /// neighbour moved away, a long link was redrawn), so checking
    /// requests alone does not keep the bound.
    fn enforce_link_caps(&mut self) {
        let (long_cap, foreign_cap) = self.link_caps();
        let (mut long, mut foreign) = self.incoming_counts(None);
        while long > long_cap || foreign > foreign_cap {
            let victim = self
                .links
                .iter()
                .filter(|(_, l)| {
                    !l.is_introducer()
                        && l.announced == LinkWant::Release
                        && l.peer_want == LinkWant::Long
                })
                .max_by_key(|(_, l)| l.since)
                .map(|(id, _)| *id);
            let Some(id) = victim else {
                // Only links wanted here or ring links are left.
                return;
            };
            if let Some(l) = self.links.get_mut(&id) {
                l.peer_want = LinkWant::Release;
            }
            long -= 1;
            foreign -= 1;
            self.stats.link_rejects += 1;
            self.send(
                id,
                &Message::LinkReject {
                    kind: LinkWant::Long,
                    reason: RejectReason::Capacity,
                },
            );
        }
    }

    fn on_link_request(&mut self, _now: Instant, from: NodeId, want: LinkWant) {
        let (long_cap, foreign_cap) = self.link_caps();
        let (incoming_long, foreign) = self.incoming_counts(Some(from));
        // Introducers accept every link (they are the bootstrap and keep
        // no topology of their own).
        let full =
            incoming_long >= long_cap || (self.cfg.role == Role::Node && foreign >= foreign_cap);
        let Some(l) = self.links.get_mut(&from) else {
            return;
        };
        if want == LinkWant::Long
            && l.announced == LinkWant::Release
            && (full || self.cfg.mac.is_none())
        {
            l.peer_want = LinkWant::Release;
            self.stats.link_rejects += 1;
            self.send(
                from,
                &Message::LinkReject {
                    kind: want,
                    reason: RejectReason::Capacity,
                },
            );
            return;
        }
        let newly_ring = want == LinkWant::Ring && l.peer_want != LinkWant::Ring;
        l.peer_want = want;
        if newly_ring && self.in_ring() {
            // The peer holds us as a ring neighbour: tell it ours so that
            // it finds any node between us (ring stabilisation).
            let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
            let mut ids = succ;
            ids.extend(pred);
            let msg = Message::Ring(
                ids.iter()
                    .filter_map(|id| self.members.get(id).map(|m| m.info.clone()))
                    .collect(),
            );
            self.send(from, &msg);
        }
    }

    fn on_link_reject(&mut self, now: Instant, from: NodeId, kind: LinkWant, _r: RejectReason) {
        match kind {
            LinkWant::Long => {
                let me = self.cfg.node_id;
                let n = self.n_est;
                let retry = now + jitter(&mut self.rng, self.cfg.retry_initial);
                for s in self.long.iter_mut().filter(|s| s.node == Some(from)) {
                    s.node = None;
                    s.attempts += 1;
                    s.pos = symphony::draw_target(me, n, &mut self.rng);
                    s.retry_at = Some(retry);
                }
            }
            LinkWant::OnDemand => {
                self.on_demand.remove(&from);
            }
            LinkWant::Release | LinkWant::Ring => {}
        }
    }

    // ------------------------------------------------------------ internals

    fn hello(&self) -> Message {
        Message::Hello(Hello {
            node_id: self.cfg.node_id,
            name: self.cfg.name.clone(),
            role: self.cfg.role,
            addrs: self.local_addrs.clone(),
            mac: self.cfg.mac,
            relays: self.cfg.relays,
        })
    }

    fn self_member(&self) -> Member {
        Member {
            node_id: self.cfg.node_id,
            name: self.cfg.name.clone(),
            role: self.cfg.role,
            has_tap: self.cfg.mac.is_some(),
            addrs: self
                .local_addrs
                .iter()
                .map(|a| TaggedAddr {
                    origin: AddrOrigin::Local,
                    addr: *a,
                })
                .collect(),
        }
    }

    fn send(&mut self, to: NodeId, msg: &Message) {
        // Every message we build respects the wire bounds; an encoding
        // error would be a bug here, so it is counted rather than sent.
        match msg.encode() {
            Ok(bytes) => self.actions.push_back(Action::SendControl { to, bytes }),
            Err(_) => self.stats.bad_control += 1,
        }
    }

    fn open_introducers(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        for i in &mut self.introducers {
            if i.node.is_none() && i.pending.is_none() && i.retry_at.is_some_and(|r| now >= r) {
                i.pending = Some(now);
                i.retry_at = None;
                self.stats.opens += 1;
                self.actions.push_back(Action::OpenSession {
                    node: None,
                    addrs: vec![i.addr],
                });
            }
        }
    }

    fn introducer_failed(&mut self, now: Instant, idx: usize) {
        self.stats.open_failures += 1;
        if let Some(i) = self.introducers.get_mut(idx) {
            i.pending = None;
            i.retry_at = Some(now + jitter(&mut self.rng, i.backoff));
            i.backoff = (i.backoff * 2).min(self.cfg.retry_max);
        }
    }

    /// An open to a member failed or timed out: forget it for a while
    /// (it is gone, or unreachable from here).
    fn member_open_failed(&mut self, now: Instant, id: NodeId) {
        if self.links.contains_key(&id) {
            if let Some(m) = self.members.get_mut(&id) {
                m.pending = None;
            }
            return;
        }
        if self.members.get(&id).is_some_and(|m| m.pending.is_some()) {
            self.stats.open_failures += 1;
        }
        if self.failed_opens.len() < 1024 || self.failed_opens.contains_key(&id) {
            *self.failed_opens.entry(id).or_insert(0) += 1;
        }
        self.link_lost(now, id);
        self.forget(now, id);
    }

    /// Bookkeeping when a link (or the hope of one) to `node` is gone.
    fn link_lost(&mut self, now: Instant, node: NodeId) {
        self.on_demand.remove(&node);
        let retry = now + jitter(&mut self.rng, self.cfg.retry_initial);
        for s in self.long.iter_mut().filter(|s| s.node == Some(node)) {
            // Look the same position up again: its new manager.
            s.node = None;
            s.retry_at = Some(retry);
        }
    }

    /// Remove `node` from the members and ignore gossip about it for
    /// `forget_for`.
    fn forget(&mut self, now: Instant, node: NodeId) {
        self.forgotten.insert(node, now + self.cfg.forget_for);
        if !self.links.contains_key(&node) {
            self.remove_member(node);
        }
    }

    fn on_hello(&mut self, now: Instant, from: NodeId, h: Hello) {
        if h.node_id != from {
            // A peer must introduce itself under its session's identity.
            self.stats.bad_control += 1;
            return;
        }
        let Some(link) = self.links.get_mut(&from) else {
            return;
        };
        let remote = link.addr;
        link.hello = Some(h.clone());
        let mut addrs: Vec<TaggedAddr> = h
            .addrs
            .iter()
            .map(|a| TaggedAddr {
                origin: AddrOrigin::Local,
                addr: *a,
            })
            .collect();
        // A relayed session's remote is a route address, meaningful only
        // to this node's endpoint: never an address of the member.
        if !h.addrs.contains(&remote) && !ringlan_tunnel::relay::is_route_addr(&remote) {
            addrs.push(TaggedAddr {
                origin: AddrOrigin::Reflexive,
                addr: remote,
            });
        }
        addrs.truncate(MAX_ADDRS);
        let member = Member {
            node_id: from,
            name: h.name.clone(),
            role: h.role,
            has_tap: h.mac.is_some(),
            addrs,
        };
        self.forgotten.remove(&from);
        self.learn(now, member);
    }

    /// A peer's ring neighbours. Learn them; the peer's view of its own
    /// vicinity also supersedes ours: unlinked members we know strictly
    /// inside the arc it reports, but that it does not list, are gone.
    fn on_ring(&mut self, now: Instant, from: NodeId, list: Vec<Member>) {
        let ids: Vec<NodeId> = list.iter().map(|m| m.node_id).collect();
        for m in list {
            self.learn(now, m);
        }
        let half = 1u128 << 127;
        let far_s = ids
            .iter()
            .copied()
            .filter(|x| ring::clockwise(from, *x) < half)
            .max_by_key(|x| ring::clockwise(from, *x));
        let far_p = ids
            .iter()
            .copied()
            .filter(|x| ring::clockwise(*x, from) < half)
            .max_by_key(|x| ring::clockwise(*x, from));
        let (Some(far_s), Some(far_p)) = (far_s, far_p) else {
            return;
        };
        if ids.len() < 2 * self.cfg.ring_links || far_s == far_p {
            return;
        }
        let stale: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| {
                m.info.has_tap
                    && m.pending.is_none()
                    && !self.links.contains_key(id)
                    && !ids.contains(id)
                    && **id != from
                    && ring::between(far_p, **id, far_s)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.remove_member(id);
        }
    }

    /// Add or update a member (unless it is this node or forgotten).
    fn learn(&mut self, now: Instant, mut m: Member) {
        if m.node_id == self.cfg.node_id {
            return;
        }
        if let Some(until) = self.forgotten.get(&m.node_id) {
            if now < *until && !self.links.contains_key(&m.node_id) {
                return;
            }
        }
        m.addrs.truncate(MAX_ADDRS);
        match self.members.get_mut(&m.node_id) {
            Some(s) => {
                if s.info == m {
                    return;
                }
                // Keep reflexive addresses we observed ourselves.
                for a in &s.info.addrs {
                    if !m.addrs.contains(a) && m.addrs.len() < MAX_ADDRS {
                        m.addrs.push(*a);
                    }
                }
                s.info = m;
            }
            None => {
                let node = m.node_id;
                let name = m.name.clone();
                self.members.insert(
                    node,
                    MemberState {
                        info: m,
                        pending: None,
                    },
                );
                self.events.push_back(Event::MemberJoined { node, name });
            }
        }
    }

    fn remove_member(&mut self, id: NodeId) {
        if self.members.remove(&id).is_some() {
            self.events.push_back(Event::MemberLeft { node: id });
        }
    }

    /// Send `Neighbours` (ring-link ids, for lookahead) to every ring link
    /// and `Ring` (the nearest nodes with addresses) to the ring
    /// neighbours, when they changed since last sent.
    fn gossip(&mut self) {
        if !self.in_ring() {
            return;
        }
        let mut ids: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(_, l)| l.takes_frames())
            .map(|(id, _)| *id)
            .collect();
        ids.truncate(MAX_NEIGHBOURS);
        if ids != self.sent_neighbours {
            let msg = Message::Neighbours(ids.clone());
            for n in &ids {
                self.send(*n, &msg);
            }
            self.sent_neighbours = ids;
        }
        let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
        let mut ring_ids = succ;
        ring_ids.extend(pred);
        if ring_ids != self.sent_ring {
            // To our ring neighbours and to every peer that holds us as
            // one of its ring neighbours.
            let to: Vec<NodeId> = self
                .links
                .iter()
                .filter(|(id, l)| {
                    l.hello.is_some() && (l.peer_want == LinkWant::Ring || ring_ids.contains(id))
                })
                .map(|(id, _)| *id)
                .collect();
            self.sent_ring = ring_ids;
            let msg = self.ring_message();
            for n in to {
                self.send(n, &msg);
            }
        }
    }

    /// `Ring`: this node's ring neighbours with their addresses.
    fn ring_message(&self) -> Message {
        Message::Ring(
            self.sent_ring
                .iter()
                .filter_map(|id| self.members.get(id).map(|m| m.info.clone()))
                .take(MAX_RING_MEMBERS)
                .collect(),
        )
    }

    /// The periodic part of the policy: open and lookup deadlines, idle
    /// on-demand links, member pruning, size estimate, gossip.
    fn refresh(&mut self, now: Instant) {
        self.switch.expire(now);
        self.forgotten.retain(|_, until| now < *until);
        let timeout = self.cfg.open_timeout;
        let expired: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.pending.is_some_and(|p| now >= p + timeout))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.member_open_failed(now, id);
        }
        let lt = self.cfg.lookup_timeout;
        let stale: Vec<(u64, PendingLookup)> = self
            .lookups
            .iter()
            .filter(|(_, p)| now >= p.sent + lt)
            .map(|(n, p)| (*n, *p))
            .collect();
        for (nonce, p) in stale {
            self.lookups.remove(&nonce);
            if p.purpose == Purpose::Long {
                for s in self.long.iter_mut().filter(|s| s.lookup == Some(nonce)) {
                    s.lookup = None;
                }
            }
        }
        // Elapsed give-ups on long slots.
        for s in &mut self.long {
            if s.retry_at.is_some_and(|r| now >= r) {
                s.retry_at = None;
                if s.attempts >= MAX_ATTEMPTS {
                    s.attempts = 0;
                }
            }
        }
        // Idle or never-established on-demand links.
        let idle = self.cfg.on_demand_idle;
        let give_up = self.cfg.open_timeout + self.cfg.lookup_timeout;
        let links = &self.links;
        self.on_demand.retain(|id, since| match links.get(id) {
            Some(l) => now.saturating_duration_since(l.last_traffic) < idle,
            None => now.saturating_duration_since(*since) < give_up,
        });
        self.prune_members();
        if self.in_ring() && self.joined && self.cfg.role == Role::Node {
            let has_ring_link = self
                .links
                .values()
                .any(|l| l.takes_frames() && !l.is_introducer());
            if !has_ring_link && self.members.values().all(|m| m.pending.is_none()) {
                // Isolated (everyone near failed): join again.
                self.start_join(now);
            }
        }
        if !self.joined {
            self.start_join(now);
        }
        self.gossip();
    }

    /// Keep only the members the policy can use: linked peers, opens in
    /// flight, long-link and on-demand targets, and the nearest ring nodes
    /// (twice `ring_links` on each side, for the size estimate).
    fn prune_members(&mut self) {
        let w = 2 * self.cfg.ring_links;
        let me = self.cfg.node_id;
        let mut keep: HashSet<NodeId> = nearest_members(&self.members, me, w, true)
            .into_iter()
            .collect();
        keep.extend(nearest_members(&self.members, me, w, false));
        keep.extend(self.long.iter().filter_map(|s| s.node));
        keep.extend(self.on_demand.keys().copied());
        let links = &self.links;
        let before = self.members.len();
        let mut gone = Vec::new();
        self.members.retain(|id, m| {
            let k = links.contains_key(id) || m.pending.is_some() || keep.contains(id);
            if !k {
                gone.push(*id);
            }
            k
        });
        debug_assert_eq!(before, self.members.len() + gone.len());
        for id in gone {
            self.events.push_back(Event::MemberLeft { node: id });
        }
    }

    /// The `k` nearest ring members (with TAP) clockwise and
    /// counter-clockwise.
    fn ring_neighbours(&self, k: usize) -> (Vec<NodeId>, Vec<NodeId>) {
        let me = self.cfg.node_id;
        (
            nearest_after(&self.members, me, k, true),
            nearest_after(&self.members, me, k, false),
        )
    }

    /// Current number of long links wanted (k).
    fn long_target(&self) -> usize {
        symphony::long_link_count(self.n_est, self.cfg.long_links_min, self.cfg.long_links_max)
    }

    fn kind_of(&self, id: NodeId, l: &Link, succ: &[NodeId], pred: &[NodeId]) -> LinkKind {
        if succ.contains(&id) {
            LinkKind::Successor
        } else if pred.contains(&id) {
            LinkKind::Predecessor
        } else if l.is_introducer() {
            LinkKind::Introducer
        } else if l.peer_want == LinkWant::Long || self.long.iter().any(|s| s.node == Some(id)) {
            LinkKind::Long
        } else if l.peer_want == LinkWant::OnDemand || self.on_demand.contains_key(&id) {
            LinkKind::OnDemand
        } else {
            LinkKind::Other
        }
    }

    fn link_kind(&self, id: NodeId) -> LinkKind {
        let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
        match self.links.get(&id) {
            Some(l) => self.kind_of(id, l, &succ, &pred),
            None => LinkKind::Other,
        }
    }

    fn open_member(&mut self, now: Instant, id: NodeId) {
        if self.links.contains_key(&id) || self.leaving {
            return;
        }
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.pending.is_some() {
            return;
        }
        m.pending = Some(now);
        self.stats.opens += 1;
        self.actions.push_back(Action::OpenSession {
            node: Some(id),
            addrs: m.info.addrs.iter().map(|a| a.addr).collect(),
        });
    }

    /// Size estimate, long-link count and draws (Symphony).
    fn update_long_links(&mut self, now: Instant) {
        let me = self.cfg.node_id;
        let w = 2 * self.cfg.ring_links;
        let succ = nearest_after(&self.members, me, w, true);
        let pred = nearest_after(&self.members, me, w, false);
        self.n_est = symphony::estimate_n(me, &succ, &pred);
        if succ.is_empty() {
            return;
        }
        let ratio = self.n_est / self.n_drawn.max(f64::MIN_POSITIVE);
        if self.n_drawn == 0.0 || !(0.5..2.0).contains(&ratio) {
            // The estimate changed by 2x: redraw every long link.
            self.n_drawn = self.n_est;
            for s in &mut self.long {
                s.pos = symphony::draw_target(me, self.n_est, &mut self.rng);
                s.node = None;
                s.attempts = 0;
                s.retry_at = None;
            }
        }
        let k = self.long_target();
        self.long.truncate(k);
        while self.long.len() < k {
            let pos = symphony::draw_target(me, self.n_est, &mut self.rng);
            self.long.push(LongSlot {
                pos,
                node: None,
                lookup: None,
                retry_at: None,
                attempts: 0,
            });
        }
        for i in 0..self.long.len() {
            let Some(s) = self.long.get(i) else {
                continue;
            };
            if s.node.is_some() || s.lookup.is_some() || s.retry_at.is_some_and(|r| now < r) {
                continue;
            }
            let pos = s.pos;
            let nonce = self.rng.u64();
            if let Some(s) = self.long.get_mut(i) {
                s.lookup = Some(nonce);
            }
            if self
                .start_lookup_with(now, nonce, pos, Purpose::Long)
                .is_none()
            {
                // Answered here: `lookup_done` settled the slot.
                if let Some(s) = self.long.get_mut(i).filter(|s| s.lookup == Some(nonce)) {
                    s.lookup = None;
                }
            }
        }
    }

    /// The link policy: ring neighbours, long links, on-demand links; open
    /// what is missing, tell peers what each link is for, close links
    /// neither end wants. Introducers only accept.
    fn run_policy(&mut self, now: Instant) {
        if self.cfg.role == Role::Introducer || self.leaving {
            return;
        }
        if self.joined && self.in_ring() {
            self.update_long_links(now);
        }
        let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
        let mut want: Vec<(NodeId, LinkWant)> = Vec::new();
        for id in succ.iter().chain(pred.iter()) {
            want.push((*id, LinkWant::Ring));
        }
        for s in &self.long {
            if let Some(n) = s.node {
                if !want.iter().any(|(w, _)| *w == n) {
                    want.push((n, LinkWant::Long));
                }
            }
        }
        for n in self.on_demand.keys() {
            if !want.iter().any(|(w, _)| w == n) {
                want.push((*n, LinkWant::OnDemand));
            }
        }
        for (id, _) in &want {
            if !self.links.contains_key(id) {
                self.open_member(now, *id);
            }
        }
        // Tell peers what their link is for; close what nobody wants.
        let grace = self.cfg.link_grace;
        let mut announce = Vec::new();
        let mut close = Vec::new();
        for (id, l) in self.links.iter_mut() {
            if l.is_introducer() || l.hello.is_none() {
                continue;
            }
            let w = want
                .iter()
                .find(|(n, _)| n == id)
                .map(|(_, w)| *w)
                .unwrap_or(LinkWant::Release);
            if w != l.announced {
                l.announced = w;
                announce.push((*id, w));
            }
            if w == LinkWant::Release
                && l.peer_want == LinkWant::Release
                && now.saturating_duration_since(l.since) >= grace
            {
                close.push(*id);
            }
        }
        for (id, w) in announce {
            self.send(id, &Message::LinkRequest(w));
        }
        self.enforce_link_caps();
        for id in close {
            self.links.remove(&id);
            self.switch.forget_node(id);
            self.events.push_back(Event::LinkDown { node: id });
            self.actions.push_back(Action::CloseSession { node: id });
        }
    }
}

/// The `k` nearest ring members (with TAP) strictly clockwise
/// (`clockwise`) or counter-clockwise of `pos`, nearest first.
fn nearest_after(
    members: &BTreeMap<NodeId, MemberState>,
    pos: NodeId,
    k: usize,
    clockwise: bool,
) -> Vec<NodeId> {
    let tap = |(id, m): (&NodeId, &MemberState)| m.info.has_tap.then_some(*id);
    let v: Vec<NodeId> = if clockwise {
        members
            .range((Bound::Excluded(pos), Bound::Unbounded))
            .chain(members.range(..pos))
            .filter_map(tap)
            .take(k)
            .collect()
    } else {
        members
            .range(..pos)
            .rev()
            .chain(
                members
                    .range((Bound::Excluded(pos), Bound::Unbounded))
                    .rev(),
            )
            .filter_map(tap)
            .take(k)
            .collect()
    };
    v
}

/// Like [`nearest_after`] but a member at `pos` itself counts (clockwise).
fn nearest_members(
    members: &BTreeMap<NodeId, MemberState>,
    pos: NodeId,
    k: usize,
    clockwise: bool,
) -> Vec<NodeId> {
    let mut v = Vec::with_capacity(k + 1);
    if clockwise && members.get(&pos).is_some_and(|m| m.info.has_tap) {
        v.push(pos);
    }
    v.extend(nearest_after(members, pos, k, clockwise));
    v.truncate(k);
    v
}

/// The `k` frame-taking links nearest `pos` on each side.
fn nearest_links(links: &BTreeMap<NodeId, Link>, pos: NodeId, k: usize) -> Vec<NodeId> {
    let tap = |(id, l): (&NodeId, &Link)| l.takes_frames().then_some(*id);
    let mut v: Vec<NodeId> = links
        .range(pos..)
        .chain(links.range(..pos))
        .filter_map(tap)
        .take(k)
        .collect();
    v.extend(
        links
            .range(..pos)
            .rev()
            .chain(links.range(pos..).rev())
            .filter_map(tap)
            .take(k),
    );
    v
}

/// A delay in [d/2, d) so that retries of many nodes spread out.
fn jitter(rng: &mut Rng, d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * rng.f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Sim, SimConfig};

    fn rng(seed: u8) -> Rng {
        Rng::from_seed([seed; 32])
    }

    fn node(now: Instant) -> Overlay {
        let mut cfg = Config::new(NodeId(100), "a", Role::Node, Some(Mac([2, 0, 0, 0, 0, 1])));
        cfg.introducers = vec!["198.51.100.7:4910".parse().unwrap()];
        Overlay::new(now, cfg, rng(9)).unwrap()
    }

    fn drain(o: &mut Overlay) -> Vec<Action> {
        std::iter::from_fn(|| o.poll_action()).collect()
    }

    fn decode_sends(actions: &[Action]) -> Vec<(NodeId, Message)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendControl { to, bytes } => Some((*to, Message::decode(bytes).unwrap())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn join_goes_through_the_introducer_and_links_the_ring() {
        let t0 = Instant::now();
        let mut o = node(t0);
        let intro: SocketAddr = "198.51.100.7:4910".parse().unwrap();
        assert_eq!(
            drain(&mut o),
            vec![Action::OpenSession {
                node: None,
                addrs: vec![intro]
            }]
        );
        // Introducer unreachable: retried after 0.5-1 s, then 1-2 s.
        o.open_failed(t0, None, &[intro]);
        o.handle_timeout(t0 + Duration::from_millis(499));
        assert!(drain(&mut o).is_empty());
        let t1 = o.poll_timeout().unwrap();
        assert!(t1 <= t0 + Duration::from_secs(1));
        o.handle_timeout(t1);
        assert_eq!(drain(&mut o).len(), 1);
        // Up: Hello, then the join lookup for our own id.
        o.peer_up(t1, NodeId(7), intro, true);
        let sent = decode_sends(&drain(&mut o));
        assert!(matches!(sent[0], (NodeId(7), Message::Hello(_))));
        let Some((_, Message::Lookup(l))) = sent.get(1).cloned() else {
            panic!("no lookup: {sent:?}");
        };
        assert_eq!((l.target, l.path.clone()), (NodeId(100), vec![NodeId(100)]));
        assert!(!o.is_joined());
        // The answer names two ring nodes: the node joins and opens both.
        let m = |id: u128, a: &str| Member {
            node_id: NodeId(id),
            name: format!("m{id}"),
            role: Role::Node,
            has_tap: true,
            addrs: vec![TaggedAddr {
                origin: AddrOrigin::Reflexive,
                addr: a.parse().unwrap(),
            }],
        };
        let reply = Message::LookupReply(LookupReply {
            nonce: l.nonce,
            target: l.target,
            path: l.path,
            members: vec![m(200, "203.0.113.2:4910"), m(50, "203.0.113.3:4910")],
        });
        o.handle_control(t1, NodeId(7), &reply.encode().unwrap());
        assert!(o.is_joined());
        let opens: Vec<Action> = drain(&mut o)
            .into_iter()
            .filter(|a| matches!(a, Action::OpenSession { .. }))
            .collect();
        assert_eq!(opens.len(), 2, "{opens:?}");
        assert_eq!(
            o.ring_view(),
            (vec![NodeId(200), NodeId(50)], vec![NodeId(50), NodeId(200)])
        );
        // One open fails: the node is forgotten, gossip cannot bring it back
        // for `forget_for`.
        o.open_failed(t1, Some(NodeId(200)), &[]);
        assert!(o.member(NodeId(200)).is_none());
        let ring = Message::Ring(vec![m(200, "203.0.113.2:4910")]);
        o.peer_up(t1, NodeId(50), "203.0.113.3:4910".parse().unwrap(), false);
        o.handle_control(t1, NodeId(50), &ring.encode().unwrap());
        assert!(o.member(NodeId(200)).is_none());
        o.handle_timeout(t1 + Duration::from_secs(31));
        o.handle_control(
            t1 + Duration::from_secs(31),
            NodeId(50),
            &ring.encode().unwrap(),
        );
        assert!(o.member(NodeId(200)).is_some());
    }

    #[test]
    fn link_requests_capacity_and_release() {
        let t0 = Instant::now();
        let mut o = node(t0);
        drain(&mut o);
        let tap_hello = |id: u128| {
            Message::Hello(Hello {
                node_id: NodeId(id),
                name: "p".into(),
                role: Role::Node,
                addrs: vec![],
                mac: Some(Mac([2, 0, 0, 0, 1, id as u8])),
                relays: false,
            })
            .encode()
            .unwrap()
        };
        // Ring neighbours first (ids next to 100 on both sides), then far
        // nodes asking for long links. k = 1 here (tiny estimate): at most
        // 2 incoming long links on links not wanted here.
        let long = Message::LinkRequest(LinkWant::Long).encode().unwrap();
        for id in [110u128, 120, u128::MAX - 10, u128::MAX - 20] {
            o.peer_up(t0, NodeId(id), "203.0.113.9:1".parse().unwrap(), false);
            o.handle_control(t0, NodeId(id), &tap_hello(id));
        }
        for k in 1..=4u128 {
            let id = k << 120;
            o.peer_up(t0, NodeId(id), "203.0.113.9:1".parse().unwrap(), false);
            o.handle_control(t0, NodeId(id), &tap_hello(id));
            o.handle_control(t0, NodeId(id), &long);
        }
        let sent = decode_sends(&drain(&mut o));
        let rejects: Vec<NodeId> = sent
            .iter()
            .filter(|(_, m)| matches!(m, Message::LinkReject { .. }))
            .map(|(to, _)| *to)
            .collect();
        assert_eq!(
            rejects,
            vec![NodeId(3 << 120), NodeId(4 << 120)],
            "{sent:?}"
        );
        assert_eq!(o.stats().link_rejects, rejects.len() as u64);
        let kinds: Vec<LinkKind> = o.neighbours().iter().map(|n| n.kind).collect();
        assert!(kinds.contains(&LinkKind::Long));
        // A rejected peer that wants nothing is closed after the grace.
        let t1 = t0 + Duration::from_secs(11);
        o.handle_timeout(t1);
        let closed: Vec<NodeId> = drain(&mut o)
            .into_iter()
            .filter_map(|a| match a {
                Action::CloseSession { node } => Some(node),
                _ => None,
            })
            .collect();
        for r in &rejects {
            assert!(closed.contains(r), "{r:?} not closed: {closed:?}");
        }
        // Release from a long peer that we do not want: closed too.
        let rel = Message::LinkRequest(LinkWant::Release).encode().unwrap();
        let keep: Vec<NodeId> = o.neighbours().iter().map(|n| n.node).collect();
        for id in &keep {
            o.handle_control(t1, *id, &rel);
        }
        let (succ, pred) = o.ring_view();
        for n in o.neighbours() {
            assert!(succ.contains(&n.node) || pred.contains(&n.node), "{n:?}");
        }
    }

    #[test]
    fn a_relayed_link_never_makes_its_route_address_a_member_address() {
        let t0 = Instant::now();
        let mut o = node(t0);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        o.peer_up(t0, NodeId(7), sa("198.51.100.7:4910"), true);
        let route = ringlan_tunnel::relay::route_addr(0x1234_5678);
        o.peer_up(t0, NodeId(200), route, false);
        let hello = Message::Hello(Hello {
            node_id: NodeId(200),
            name: "n200".into(),
            role: Role::Node,
            addrs: vec![sa("10.0.0.2:4910")],
            mac: Some(Mac([2, 0, 0, 0, 0, 200])),
            relays: true,
        });
        o.handle_control(t0, NodeId(200), &hello.encode().unwrap());
        let m = o.member(NodeId(200)).unwrap();
        assert!(!m.addrs.iter().any(|a| a.addr == route), "{m:?}");
        assert!(m.addrs.iter().any(|a| a.addr == sa("10.0.0.2:4910")));
        // It relays: a relay candidate for other targets.
        assert!(o.relays_for(NodeId(300)).contains(&NodeId(200)));
        assert!(!o.relays_for(NodeId(200)).contains(&NodeId(200)));
    }

    #[test]
    fn a_verified_move_is_announced_and_a_reported_move_is_probed() {
        let t0 = Instant::now();
        let mut o = node(t0);
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        o.peer_up(t0, NodeId(7), sa("198.51.100.7:4910"), true);
        o.peer_up(t0, NodeId(200), sa("203.0.113.2:4910"), false);
        o.peer_up(t0, NodeId(300), sa("203.0.113.3:4910"), false);
        let hello = |id: u128| {
            Message::Hello(Hello {
                node_id: NodeId(id),
                name: format!("n{id}"),
                role: Role::Node,
                addrs: vec![sa("10.0.0.2:4910")],
                mac: Some(Mac([2, 0, 0, 0, 0, id as u8])),
                relays: false,
            })
            .encode()
            .unwrap()
        };
        o.handle_control(t0, NodeId(200), &hello(200));
        drain(&mut o);

        // Our session with 200 verified a new address: everybody else hears.
        let new = sa("198.51.100.20:4910");
        o.peer_moved(t0, NodeId(200), new);
        let mut moved: Vec<NodeId> = decode_sends(&drain(&mut o))
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::Moved { node, addr } if node == NodeId(200) && addr == new => Some(to),
                _ => None,
            })
            .collect();
        moved.sort();
        assert_eq!(moved, vec![NodeId(7), NodeId(300)]);
        let m = o.member(NodeId(200)).unwrap();
        assert!(m
            .addrs
            .iter()
            .any(|a| a.addr == new && a.origin == AddrOrigin::Reflexive));
        assert!(!m.addrs.iter().any(|a| a.addr == sa("203.0.113.2:4910")));
        // The same address again is no news.
        o.peer_moved(t0, NodeId(200), new);
        assert!(decode_sends(&drain(&mut o)).is_empty());
        assert_eq!(o.stats().moves_announced, 1);

        // A peer reports that 300 moved: probe it, once per second.
        let to = sa("198.51.100.30:4910");
        let report = |node: u128, addr: SocketAddr| {
            Message::Moved {
                node: NodeId(node),
                addr,
            }
            .encode()
            .unwrap()
        };
        o.handle_control(t0, NodeId(7), &report(300, to));
        let probes = |acts: Vec<Action>| -> Vec<Action> {
            acts.into_iter()
                .filter(|a| matches!(a, Action::ProbePath { .. }))
                .collect()
        };
        assert_eq!(
            probes(drain(&mut o)),
            vec![Action::ProbePath {
                node: NodeId(300),
                addr: to
            }]
        );
        o.handle_control(t0, NodeId(7), &report(300, to));
        assert!(probes(drain(&mut o)).is_empty(), "rate limited");
        let t1 = t0 + Duration::from_secs(1);
        o.handle_control(t1, NodeId(7), &report(300, to));
        assert_eq!(probes(drain(&mut o)).len(), 1);
        // Nothing to probe: the session already runs there, the node is
        // not linked, or it is this node.
        o.handle_control(t1, NodeId(7), &report(200, new));
        o.handle_control(t1, NodeId(7), &report(999, to));
        o.handle_control(t1, NodeId(7), &report(100, to));
        assert!(probes(drain(&mut o)).is_empty());
        assert_eq!(o.stats().probes, 2);

        // Our own reflexive address changed: every link hears.
        o.reflexive_changed(t1, sa("198.51.100.99:4910"));
        let own = decode_sends(&drain(&mut o))
            .into_iter()
            .filter(|(_, m)| matches!(m, Message::Moved { node, .. } if *node == NodeId(100)))
            .count();
        assert_eq!(own, 3);
    }

    #[test]
    fn garbage_control_is_counted_not_fatal() {
        let t0 = Instant::now();
        let mut o = node(t0);
        o.peer_up(t0, NodeId(7), "198.51.100.7:4910".parse().unwrap(), true);
        drain(&mut o);
        o.handle_control(t0, NodeId(7), &[1, 0x99, 1, 2, 3]);
        o.handle_control(t0, NodeId(7), &[]);
        assert_eq!(o.stats().bad_control, 2);
        assert!(
            std::iter::from_fn(|| o.poll_event()).any(|e| matches!(e, Event::BadControl { .. }))
        );
        // A Hello claiming another identity is refused.
        let h = Message::Hello(Hello {
            node_id: NodeId(8),
            name: "x".into(),
            role: Role::Node,
            addrs: vec![],
            mac: None,
            relays: false,
        });
        o.handle_control(t0, NodeId(7), &h.encode().unwrap());
        assert!(o.member(NodeId(8)).is_none());
        // A lookup whose path does not end with the sender, or a reply not
        // addressed to us, is refused.
        let bad = Message::Lookup(Lookup {
            nonce: 1,
            target: NodeId(5),
            path: vec![NodeId(9)],
        });
        o.handle_control(t0, NodeId(7), &bad.encode().unwrap());
        let bad = Message::LookupReply(LookupReply {
            nonce: 1,
            target: NodeId(5),
            path: vec![NodeId(9)],
            members: vec![],
        });
        o.handle_control(t0, NodeId(7), &bad.encode().unwrap());
        assert_eq!(o.stats().bad_control, 5);
        // Frames: runts, bad headers and frames from strangers are dropped.
        let mut out = Vec::new();
        assert_eq!(
            o.frame_from_peer(t0, NodeId(7), &[0, 1, 2], &mut out),
            Err(DropReason::Runt)
        );
        assert_eq!(
            o.frame_from_peer(t0, NodeId(7), &[9; 30], &mut out),
            Err(DropReason::BadHeader)
        );
        assert_eq!(
            o.frame_from_peer(t0, NodeId(55), &[0; 30], &mut out),
            Err(DropReason::NoTap)
        );
        // A routed frame for someone else with nowhere to go.
        let mut msg = [0u8; 60];
        let h = FrameHeader::Routed(RoutedHeader {
            origin: NodeId(7),
            destination: NodeId(1234),
            hop_limit: 5,
        });
        h.encode(&mut msg).unwrap();
        assert_eq!(
            o.frame_from_peer(t0, NodeId(7), &msg, &mut out),
            Err(DropReason::NoRoute)
        );
        assert_eq!(
            o.frame_from_tap(t0, &[1, 2], &mut out),
            Forward::Drop(DropReason::Runt)
        );
    }

    #[test]
    fn config_is_checked() {
        let t0 = Instant::now();
        let cfg = Config::new(NodeId(1), "a", Role::Node, Some(Mac([2; 6])));
        assert_eq!(
            Overlay::new(t0, cfg, rng(1)).err(),
            Some(ConfigError::NoIntroducer)
        );
        let cfg = Config::new(NodeId(1), "x".repeat(65), Role::Introducer, None);
        assert_eq!(
            Overlay::new(t0, cfg, rng(1)).err(),
            Some(ConfigError::NameTooLong(65))
        );
        let mut cfg = Config::new(NodeId(1), "i", Role::Introducer, None);
        cfg.ring_links = 0;
        assert_eq!(
            Overlay::new(t0, cfg, rng(1)).err(),
            Some(ConfigError::NoRingLinks)
        );
    }

    fn unicast(dst: u32, src: u32) -> Vec<u8> {
        let mac = |i: u32| {
            let b = i.to_be_bytes();
            [2, 0, b[0], b[1], b[2], b[3]]
        };
        let mut f = Vec::new();
        f.extend_from_slice(&mac(dst));
        f.extend_from_slice(&mac(src));
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 20]);
        f
    }

    #[test]
    fn routed_unicast_then_on_demand_link() {
        let mut sim = Sim::new(SimConfig::new(80, 3));
        sim.join_all(Duration::from_secs(60));
        assert_eq!(sim.ring_errors(), 0);
        // Find a pair without a session.
        let live = sim.live();
        let (a, b) = live
            .iter()
            .flat_map(|a| live.iter().map(move |b| (*a, *b)))
            .find(|(a, b)| a != b && !sim.node(*a).unwrap().is_linked(sim.id(*b)))
            .unwrap();
        // b's broadcast teaches a where b's MAC lives.
        let f = sim.broadcast(b);
        assert_eq!((f.reached, f.duplicates), (f.expected, 0));
        let frame = unicast(b, a);
        let run = sim.send_frame(a, &frame);
        assert_eq!(run.writes.len(), 1, "{run:?}");
        assert_eq!(run.writes.get(&b), Some(&1));
        assert!(run.messages >= 2, "routed over at least two hops");
        assert_eq!(sim.node(b).unwrap().stats().routed_delivered, 1);
        // Past the threshold, a direct session opens; then frames go direct.
        let threshold = sim.node(a).unwrap().config().on_demand_frames;
        for _ in 1..threshold {
            let run = sim.send_frame(a, &frame);
            assert_eq!(run.writes.get(&b), Some(&1));
        }
        sim.run_for(Duration::from_secs(2));
        let ida = sim.id(a);
        let idb = sim.id(b);
        assert!(sim.node(a).unwrap().is_linked(idb));
        let kind = |sim: &Sim, x: u32, y: NodeId| {
            sim.node(x)
                .unwrap()
                .neighbours()
                .into_iter()
                .find(|n| n.node == y)
                .map(|n| n.kind)
        };
        assert_eq!(kind(&sim, a, idb), Some(LinkKind::OnDemand));
        assert_eq!(kind(&sim, b, ida), Some(LinkKind::OnDemand));
        // Every frame before the link went routed, and is counted per end
        // node at both ends; the direct frame after it is not.
        let run = sim.send_frame(a, &frame);
        assert_eq!((run.messages, run.writes.get(&b)), (1, Some(&1)));
        let routed = |sim: &Sim, x: u32, y: NodeId| {
            sim.node(x)
                .unwrap()
                .routed_counters()
                .find(|(n, _)| *n == y)
                .map(|(_, c)| c)
                .unwrap_or_default()
        };
        let frames = u64::from(threshold);
        let bytes = frames * frame.len() as u64;
        assert_eq!(
            routed(&sim, a, idb),
            RoutedCounters {
                sent_frames: frames,
                sent_bytes: bytes,
                ..RoutedCounters::default()
            }
        );
        assert_eq!(
            routed(&sim, b, ida),
            RoutedCounters {
                delivered_frames: frames,
                delivered_bytes: bytes,
                ..RoutedCounters::default()
            }
        );
        // Idle: the on-demand link goes away again.
        sim.run_for(Duration::from_secs(200));
        assert!(!sim.node(a).unwrap().is_linked(idb));
        assert_eq!(sim.ring_errors(), 0);
    }

    #[test]
    fn polite_leave_repairs_the_ring_at_once() {
        let mut sim = Sim::new(SimConfig::new(40, 5));
        sim.join_all(Duration::from_secs(60));
        assert_eq!(sim.ring_errors(), 0);
        let leaver = sim.live()[10];
        let id = sim.id(leaver);
        sim.leave(leaver);
        // Leaving is seen at once (no failure detection delay).
        sim.run_for(Duration::from_secs(2));
        assert_eq!(sim.ring_errors(), 0);
        // Ring gossip (at the next refresh) clears it from the nodes that
        // knew it second-hand.
        sim.run_for(Duration::from_secs(10));
        for i in sim.live() {
            assert!(!sim.node(i).unwrap().is_linked(id));
            assert!(sim.node(i).unwrap().member(id).is_none());
        }
        assert_eq!(sim.all_reach_all(), 0);
        let f = sim.broadcast(sim.live()[0]);
        assert_eq!((f.reached, f.duplicates), (f.expected, 0));
    }
}
