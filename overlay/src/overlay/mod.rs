//! The overlay state machine: Symphony topology, routing, bounded flood and
//! the data path.
//!
//! Inputs: [`Overlay::peer_up`], [`Overlay::peer_down`],
//! [`Overlay::open_failed`], [`Overlay::peer_moved`], [`Overlay::ban`],
//! [`Overlay::reflexive_known`], [`Overlay::reflexive_changed`],
//! [`Overlay::handle_control`],
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
//!
//! One struct, [`Overlay`], holds all the state (this file, with the inputs
//! that touch every concern: construction, the timer, the control-message
//! dispatch, leaving). Its `impl` blocks are spread by concern:
//!
//! | file | decides |
//! |---|---|
//! | `config.rs` | the parameters and what a valid configuration is |
//! | `links.rs` | session life cycle: link up/down, opens to members and introducers, their failures and back-off |
//! | `policy.rs` | which links this node wants (ring, long, on-demand), the Symphony long-link draws, and the caps that bound the links peers ask for |
//! | `membership.rs` | who is known, with which addresses: `Hello`, `Ring` gossip, forgetting and pruning; banned (revoked) nodes |
//! | `lookup.rs` | greedy routing towards a ring position and the `Lookup` exchange (join, long-link managers, on-demand resolution) |
//! | `datapath.rs` | what happens to each Ethernet frame: direct, routed or bounded flood; whose frames are accepted with which source addresses; on-demand traffic counting |
//! | `origins.rs` | the origins of flood and routed frames: verified keys, duplicate windows, broadcast budgets |
//! | `moves.rs` | address mobility: announcing a peer's (or our own) new address and probing reported ones |
//! | `status.rs` | what the overlay reports: counters, neighbours, link counts |
//! | `directory.rs` | the directory on the ring: put/get/scan routing, record acceptance, re-replication (`crate::directory`, docs/directory.md) |

use crate::directory::{DirRequest, Record};
use crate::source::SourcePolicy;
use crate::switch::Switch;
use crate::wire::{
    AddrOrigin, Hello, LinkWant, Member, Message, Role, TaggedAddr, WireError, MAX_ADDRS, MAX_NAME,
};
use ringlan_tunnel::{NodeId, Rng};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod budget;
mod config;
mod datapath;
mod directory;
mod links;
mod lookup;
mod membership;
mod moves;
mod origins;
mod policy;
mod status;
#[cfg(test)]
mod tests;

pub use budget::{Budget, Budgets};
pub use config::{Config, ConfigError};
pub use datapath::{FrameSend, Received};
pub use directory::{DirCounters, RecordCheckFn};
pub use membership::MAX_BANNED;
pub use status::{LinkCounts, LinkKind, Neighbour, OpenAttempt, RoutedCounters, Stats};

use budget::{Bucket, Buckets};
use origins::Origins;
use policy::MAX_ATTEMPTS;

/// The overlay of one node.
#[derive(Debug)]
pub struct Overlay {
    cfg: Config,
    rng: Rng,
    local_addrs: Vec<SocketAddr>,
    /// This node's address as its STUN server sees it
    /// ([`Overlay::reflexive_changed`]), told to every new link.
    own_reflexive: Option<SocketAddr>,
    /// This node's NAT maps endpoint-dependently, by its STUN answers
    /// ([`Overlay::set_symmetric_nat`]); said in every `Hello`.
    symmetric_nat: bool,
    links: BTreeMap<NodeId, Link>,
    /// Known nodes with their addresses: linked peers, the ring nearby,
    /// lookup answers. Pruned to what the policy needs.
    members: BTreeMap<NodeId, MemberState>,
    /// Nodes not to re-learn from gossip before the instant.
    forgotten: BTreeMap<NodeId, Instant>,
    /// Nodes never to learn, open to or link again (`membership.rs`).
    banned: BTreeSet<NodeId>,
    introducers: Vec<IntroducerState>,
    switch: Switch,
    flood_seq: u64,
    /// Origins of flood and routed frames (`origins.rs`).
    origins: Origins,
    /// Source policies set for nodes not linked yet; moved into the link
    /// when it comes up (at most `MAX_PENDING_POLICIES`).
    policies: HashMap<NodeId, SourcePolicy>,
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
    /// Routed traffic per end node (bounded by `MAX_ROUTED_PEERS` in `datapath.rs`).
    routed: BTreeMap<NodeId, RoutedCounters>,
    /// What the last `Neighbours` / `Ring` messages said.
    sent_neighbours: Vec<NodeId>,
    sent_ring: Vec<NodeId>,
    /// Reused scratch for flood target computation.
    scratch: Vec<NodeId>,
    /// Nodes whose opens failed in a row, for status (kept while retries
    /// go on, so status does not flap; cleared when a session comes up).
    failed_opens: BTreeMap<NodeId, u32>,
    /// `ProbePath` actions per destination IP (`Budgets::probes_per_ip`).
    probe_ips: Buckets<std::net::IpAddr>,
    /// When the overlay was made (with `Config::unix_time`, the wall
    /// clock).
    created: Instant,
    /// The directory (`directory.rs`).
    dir: directory::DirState,
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
    /// The answer to [`Overlay::dir_get`] (`record: None`: not found, or
    /// no answer within `lookup_timeout`).
    DirResult {
        request: DirRequest,
        key: String,
        record: Option<Record>,
    },
    /// The result of [`Overlay::dir_scan`]: the `node:` records found,
    /// newest version per key, by key.
    DirScan {
        request: DirRequest,
        records: Vec<Record>,
        complete: bool,
    },
    /// A control message that did not decode (counted, otherwise ignored).
    BadControl {
        from: NodeId,
        error: WireError,
    },
}

#[derive(Debug)]
struct Link {
    /// The address the session runs to; `None` while it runs over a
    /// relayed route (whose address means something only to the agent's
    /// endpoint, never to other nodes).
    direct: Option<SocketAddr>,
    /// The last direct address the session ran to: what this node recorded
    /// as the member's reflexive address, replaced when the session moves
    /// to another direct address. Kept while the session runs relayed.
    observed: Option<SocketAddr>,
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
    /// The peer's `Moved` reports acted on (`Budgets::moved_per_peer`).
    moved: Bucket,
    /// Member records accepted from the peer (`Budgets::gossip_per_peer`).
    gossip: Bucket,
    /// Origin signatures verified on frames from the peer
    /// (`Budgets::verifies_per_link`).
    verify: Bucket,
    /// Origins evicted for origins this peer's frames brought
    /// (`Budgets::origin_evictions_per_link`).
    evictions: Bucket,
    /// Directory messages from the peer (`DirConfig::per_peer`).
    dir: Bucket,
    /// The source policy set by [`Overlay::set_source_policy`]; without
    /// one, the peer's `Hello` decides.
    policy: Option<SourcePolicy>,
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
    /// The last address the member said its own STUN server sees it at
    /// (`Moved` naming itself): recorded in `info`, replaced there by its
    /// next report.
    self_reported: Option<SocketAddr>,
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

impl Overlay {
    /// A new overlay; queues the first introducer opens at once.
    pub fn new(now: Instant, cfg: Config, mut rng: Rng) -> Result<Self, ConfigError> {
        if cfg.name.len() > MAX_NAME {
            return Err(ConfigError::NameTooLong(cfg.name.len()));
        }
        if cfg.ring_links == 0 {
            return Err(ConfigError::NoRingLinks);
        }
        if cfg
            .identity
            .as_ref()
            .is_some_and(|i| i.node_id() != cfg.node_id)
        {
            return Err(ConfigError::IdentityMismatch);
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
            origins: Origins::new(
                cfg.budgets.origins,
                cfg.identity
                    .as_ref()
                    .map(|i| i.certificate().network().clone()),
                cfg.budgets.broadcasts_per_origin,
            ),
            policies: HashMap::new(),
            rng,
            local_addrs: Vec::new(),
            own_reflexive: None,
            symmetric_nat: false,
            links: BTreeMap::new(),
            members: BTreeMap::new(),
            failed_opens: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            banned: BTreeSet::new(),
            introducers,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_refresh: now + cfg.refresh_interval,
            next_keepalive: now + cfg.keepalive_interval,
            joined: false,
            leaving: false,
            stats: Stats::default(),
            probe_ips: Buckets::new(cfg.budgets.probes_per_ip, cfg.budgets.probe_ips),
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
            created: now,
            dir: directory::DirState::new(cfg.node_id, &cfg.directory, cfg.unix_time),
            cfg,
        };
        if o.cfg.role == Role::Introducer {
            o.joined = true;
            o.events.push_back(Event::Joined);
        }
        o.open_introducers(now);
        Ok(o)
    }

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
        self.dir_refresh(now);
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
                self.learn_gossip(now, from, list);
            }
            Message::MemberJoined(m) => {
                self.learn_gossip(now, from, vec![m]);
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
            Message::Moved { node, addr } => self.on_moved(now, from, node, addr),
            Message::DirPut(_)
            | Message::DirGet(_)
            | Message::DirGetReply(_)
            | Message::DirScan(_)
            | Message::DirScanPage(_) => {
                self.on_dir_message(now, from, msg);
                return;
            }
            Message::RouteSetup(_) | Message::RouteReply(_) => {
                // Relayed routes are the agent's (they drive the endpoint).
                self.events.push_back(Event::Route { from, msg });
                return;
            }
        }
        self.run_policy(now);
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
        self.hello_to_every_link();
        self.run_policy(now);
    }

    /// Whether this node's NAT maps endpoint-dependently (its STUN
    /// answers, `classify_mapping`). When that changes every link gets a
    /// fresh `Hello` saying so: a symmetric member does not spend its
    /// birthday-punch rounds on us then ([`Overlay::says_symmetric_nat`]).
    pub fn set_symmetric_nat(&mut self, symmetric: bool) {
        if symmetric == self.symmetric_nat {
            return;
        }
        self.symmetric_nat = symmetric;
        self.hello_to_every_link();
    }

    /// What this node says of itself changed: a fresh `Hello` to every link.
    fn hello_to_every_link(&mut self) {
        let hello = self.hello();
        let to: Vec<NodeId> = self.links.keys().copied().collect();
        for n in to {
            self.send(n, &hello);
        }
    }

    /// Whether linked `node` said in its latest `Hello` that its NAT maps
    /// endpoint-dependently. Its own word about itself: a node that lies
    /// only keeps members from punching towards it.
    pub fn says_symmetric_nat(&self, node: NodeId) -> bool {
        self.links
            .get(&node)
            .and_then(|l| l.hello.as_ref())
            .is_some_and(|h| h.symmetric_nat)
    }

    /// Whether linked `node` said in its latest `Hello` that it takes
    /// AEGIS-128L hop tags: the MAC this node may choose for a route hop
    /// to it (`docs/relay.md`). A node that lies about it only breaks the
    /// routes it is downstream of.
    pub fn says_aegis_hops(&self, node: NodeId) -> bool {
        self.links
            .get(&node)
            .and_then(|l| l.hello.as_ref())
            .is_some_and(|h| h.aegis_hops)
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

    fn hello(&self) -> Message {
        Message::Hello(Hello {
            node_id: self.cfg.node_id,
            name: self.cfg.name.clone(),
            role: self.cfg.role,
            addrs: self.local_addrs.clone(),
            mac: self.cfg.mac,
            relays: self.cfg.relays,
            bridge: self.cfg.bridge,
            symmetric_nat: self.symmetric_nat,
            aegis_hops: self.cfg.aegis_hops,
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
}

/// A delay in [d/2, d) so that retries of many nodes spread out.
fn jitter(rng: &mut Rng, d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * rng.f64())
}
