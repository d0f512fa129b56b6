//! The overlay state machine and the starter link policy.
//!
//! Inputs: [`Overlay::peer_up`], [`Overlay::peer_down`],
//! [`Overlay::open_failed`], [`Overlay::handle_control`],
//! [`Overlay::handle_timeout`], [`Overlay::set_local_addresses`],
//! [`Overlay::leave`] and the data path ([`Overlay::frame_from_tap`],
//! [`Overlay::frame_from_peer`]). Outputs: [`Overlay::poll_action`],
//! [`Overlay::poll_event`], [`Overlay::poll_timeout`]. After every input
//! the caller drains actions and events, then re-arms its timer.
//!
//! Starter policy (docs/overlay.md): join through the introducers, learn
//! the member list, keep sessions to the `max_links` members nearest on the
//! ring (successors and predecessors alternately) so that the Symphony work
//! only has to add long-distance links to the same path.

use crate::ring;
use crate::switch::{DropReason, Forward, Mac, Switch, SwitchConfig, SwitchCounters};
use crate::wire::{
    AddrOrigin, FloodHeader, FrameHeader, Hello, Member, Message, Role, TaggedAddr, WireError,
    MAX_ADDRS, MAX_MEMBERS, MAX_NAME, MAX_NEIGHBOURS,
};
use ringlan_tunnel::{NodeId, Rng};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Overlay parameters.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    /// At most [`MAX_NAME`] bytes.
    pub name: String,
    pub role: Role,
    /// The TAP's MAC; `None` runs without TAP (introducers only): such a
    /// node is told no frames.
    pub mac: Option<Mac>,
    /// Introducer addresses; sessions are opened to each (id unknown until
    /// the session is up) and kept.
    pub introducers: Vec<SocketAddr>,
    /// Links the policy keeps to members (sessions to introducers come on
    /// top). Default 64.
    pub max_links: usize,
    /// How many links on each side are reported as successor / predecessor.
    pub ring_links: usize,
    /// Period of the `Neighbours` message to every link.
    pub keepalive_interval: Duration,
    /// Period at which the link policy is re-evaluated.
    pub refresh_interval: Duration,
    /// An open without `peer_up` for this long counts as failed.
    pub open_timeout: Duration,
    /// First retry delay after a failed open or a lost link; doubles up to
    /// `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Hop budget given to a broadcast at its origin.
    pub flood_hop_limit: u8,
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
            max_links: 64,
            ring_links: 2,
            keepalive_interval: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(5),
            open_timeout: Duration::from_secs(20),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            flood_hop_limit: 32,
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
}

/// Why a link exists (for status), highest priority first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// One of the `ring_links` nearest members clockwise.
    Successor,
    /// One of the `ring_links` nearest members counter-clockwise.
    Predecessor,
    /// A session to an introducer.
    Introducer,
    Other,
}

/// Something the agent may log or show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Membership list received from an introducer (or, on an introducer,
    /// started): the node is part of the network.
    Joined,
    MemberJoined {
        node: NodeId,
        name: String,
    },
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

/// Overlay counters (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bad_control: u64,
    pub frames_from_tap: u64,
    pub frames_from_peers: u64,
    pub frames_dropped: u64,
    pub flood_duplicates: u64,
    pub flood_forwarded: u64,
    pub opens: u64,
    pub open_failures: u64,
    pub switch: SwitchCounters,
}

#[derive(Debug)]
struct Link {
    addr: SocketAddr,
    since: Instant,
    to_introducer: bool,
    hello: Option<Hello>,
    /// The peer's last `Neighbours` report (for 1-lookahead, later).
    neighbours: Vec<NodeId>,
}

impl Link {
    fn takes_frames(&self) -> bool {
        self.hello.as_ref().is_some_and(|h| h.mac.is_some())
    }
}

#[derive(Debug)]
struct MemberState {
    info: Member,
    /// Open in flight since.
    pending: Option<Instant>,
    /// No new open before.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The introducer said it left while we still had a link.
    left_reported: bool,
    /// Open attempts failed in a row (reset when a session comes up).
    failures: u32,
}

/// A member the policy wants a link to but has not reached (for status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAttempt {
    pub node: NodeId,
    /// Open attempts that failed in a row.
    pub failures: u32,
    /// An attempt is in flight now.
    pub pending: bool,
}

#[derive(Debug)]
struct IntroducerState {
    addr: SocketAddr,
    node: Option<NodeId>,
    pending: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// Duplicate suppression for floods: the last `cap` (origin, seq) pairs.
#[derive(Debug)]
struct FloodCache {
    set: HashSet<(NodeId, u64)>,
    order: VecDeque<(NodeId, u64)>,
    cap: usize,
}

impl FloodCache {
    fn new(cap: usize) -> Self {
        FloodCache {
            set: HashSet::with_capacity(cap + 1),
            order: VecDeque::with_capacity(cap + 1),
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

/// The overlay of one node.
#[derive(Debug)]
pub struct Overlay {
    cfg: Config,
    rng: Rng,
    local_addrs: Vec<SocketAddr>,
    links: BTreeMap<NodeId, Link>,
    members: BTreeMap<NodeId, MemberState>,
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
    /// Reused scratch for flood target computation.
    scratch: Vec<NodeId>,
}

impl Overlay {
    /// A new overlay; queues the first introducer opens at once.
    pub fn new(now: Instant, cfg: Config, mut rng: Rng) -> Result<Self, ConfigError> {
        if cfg.name.len() > MAX_NAME {
            return Err(ConfigError::NameTooLong(cfg.name.len()));
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
            introducers,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_refresh: now + cfg.refresh_interval,
            next_keepalive: now + cfg.keepalive_interval,
            joined: false,
            leaving: false,
            stats: Stats::default(),
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

    /// Whether the node has received a membership list (always true on an
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

    /// Every known member (not including this node), by id.
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

    /// Current links with their kinds, in ring order from this node.
    pub fn neighbours(&self) -> Vec<Neighbour> {
        let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
        let mut v: Vec<Neighbour> = self
            .links
            .iter()
            .map(|(id, l)| Neighbour {
                node: *id,
                name: l.hello.as_ref().map(|h| h.name.clone()).unwrap_or_default(),
                kind: Self::kind_of(*id, l, &succ, &pred),
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

    // ------------------------------------------------------------ outputs

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The one deadline: call `handle_timeout` at (or after) it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_refresh.min(self.next_keepalive);
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = t.min(x);
            }
        };
        for i in &self.introducers {
            if i.node.is_none() {
                consider(i.pending.map(|p| p + self.cfg.open_timeout));
                if i.pending.is_none() {
                    consider(i.retry_at);
                }
            }
        }
        for m in self.members.values() {
            consider(m.pending.map(|p| p + self.cfg.open_timeout));
            // Retry deadlines matter only for members the policy wants; the
            // policy runs at each refresh anyway, so only earlier ones count.
            if m.pending.is_none() {
                consider(m.retry_at);
            }
        }
        Some(t)
    }

    // ------------------------------------------------------------ inputs

    /// Timers fired: expire opens, retry, refresh the policy, keepalive.
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
        let expired: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.pending.is_some_and(|p| now >= p + timeout))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.member_open_failed(now, id);
        }
        self.open_introducers(now);
        // Elapsed back-off: the member may be opened again by the policy.
        for m in self.members.values_mut() {
            if m.retry_at.is_some_and(|r| now >= r) {
                m.retry_at = None;
            }
        }
        if now >= self.next_keepalive {
            self.next_keepalive = now + self.cfg.keepalive_interval;
            self.send_neighbours();
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.cfg.refresh_interval;
            self.switch.expire(now);
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
            m.retry_at = None;
            m.backoff = self.cfg.retry_initial;
            m.left_reported = false;
            m.failures = 0;
        }
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
            },
        );
        let kind = self.link_kind(node);
        self.events.push_back(Event::LinkUp { node, kind });
        let hello = self.hello();
        self.send(node, &hello);
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
    }

    /// The last session to `node` is gone.
    pub fn peer_down(&mut self, now: Instant, node: NodeId) {
        if self.links.remove(&node).is_none() {
            return;
        }
        self.switch.forget_node(node);
        self.events.push_back(Event::LinkDown { node });
        for i in self.introducers.iter_mut().filter(|i| i.node == Some(node)) {
            i.node = None;
            i.pending = None;
            i.retry_at = Some(now + jitter(&mut self.rng, i.backoff));
            i.backoff = (i.backoff * 2).min(self.cfg.retry_max);
        }
        if self.cfg.role == Role::Introducer {
            self.remove_member(node, true);
        } else if self.members.get(&node).is_some_and(|m| m.left_reported) {
            self.remove_member(node, false);
        } else if let Some(m) = self.members.get_mut(&node) {
            m.pending = None;
            m.retry_at = Some(now + jitter(&mut self.rng, m.backoff));
            m.backoff = (m.backoff * 2).min(self.cfg.retry_max);
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
                    self.upsert_member(m);
                }
                let from_introducer = self.links.get(&from).is_some_and(|l| {
                    l.to_introducer || l.hello.as_ref().is_some_and(|h| h.role == Role::Introducer)
                });
                if from_introducer && !self.joined {
                    self.joined = true;
                    self.events.push_back(Event::Joined);
                }
            }
            Message::MemberJoined(m) => {
                self.upsert_member(m);
            }
            Message::MemberLeft(id) => {
                if self.links.contains_key(&id) {
                    if let Some(m) = self.members.get_mut(&id) {
                        m.left_reported = true;
                    }
                } else {
                    self.remove_member(id, false);
                }
            }
            Message::Leaving => {
                self.remove_member(from, self.cfg.role == Role::Introducer);
                self.links.remove(&from);
                self.switch.forget_node(from);
                self.events.push_back(Event::LinkDown { node: from });
                self.actions.push_back(Action::CloseSession { node: from });
            }
            Message::Neighbours(ids) => {
                if let Some(l) = self.links.get_mut(&from) {
                    l.neighbours = ids;
                }
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
            Forward::Unicast(n) if self.links.get(&n).is_some_and(Link::takes_frames) => {
                out.push(FrameSend {
                    to: n,
                    header: FrameHeader::Direct,
                });
                d
            }
            Forward::Unicast(_) | Forward::Flood => {
                // Unknown unicast, group address, or a learnt node we have no
                // link to: bounded flood from here.
                self.flood_seq = self.flood_seq.wrapping_add(1);
                let me = self.cfg.node_id;
                self.seen.insert((me, self.flood_seq));
                let bound = me;
                self.plan_flood(
                    me,
                    self.flood_seq,
                    bound,
                    self.cfg.flood_hop_limit,
                    None,
                    out,
                );
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

    /// A frame-flow message from `from`. Returns the Ethernet frame to write
    /// to the TAP, and fills `out` (cleared first) with the flood
    /// forwards to make with that same frame.
    pub fn frame_from_peer<'m>(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: &'m [u8],
        out: &mut Vec<FrameSend>,
    ) -> Result<&'m [u8], DropReason> {
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
    ) -> Result<&'m [u8], DropReason> {
        if self.cfg.mac.is_none() || !self.links.contains_key(&from) {
            return Err(DropReason::NoTap);
        }
        let (header, frame) = FrameHeader::decode(msg).map_err(|_| DropReason::BadHeader)?;
        match header {
            FrameHeader::Direct => {
                if let Some(r) = self.switch.ingress(now, from, frame) {
                    return Err(r);
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
        }
        Ok(frame)
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

    // ------------------------------------------------------------ internals

    fn hello(&self) -> Message {
        Message::Hello(Hello {
            node_id: self.cfg.node_id,
            name: self.cfg.name.clone(),
            role: self.cfg.role,
            addrs: self.local_addrs.clone(),
            mac: self.cfg.mac,
        })
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

    fn member_open_failed(&mut self, now: Instant, id: NodeId) {
        if let Some(m) = self.members.get_mut(&id) {
            if m.pending.take().is_some() {
                self.stats.open_failures += 1;
                m.failures = m.failures.saturating_add(1);
            }
            m.retry_at = Some(now + jitter(&mut self.rng, m.backoff));
            m.backoff = (m.backoff * 2).min(self.cfg.retry_max);
        }
    }

    fn on_hello(&mut self, _now: Instant, from: NodeId, h: Hello) {
        if h.node_id != from {
            // A peer must introduce itself under its session's identity.
            self.stats.bad_control += 1;
            return;
        }
        let Some(link) = self.links.get_mut(&from) else {
            return;
        };
        let remote = link.addr;
        let first = link.hello.is_none();
        link.hello = Some(h.clone());
        let mut addrs: Vec<TaggedAddr> = h
            .addrs
            .iter()
            .map(|a| TaggedAddr {
                origin: AddrOrigin::Local,
                addr: *a,
            })
            .collect();
        if !h.addrs.contains(&remote) {
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
        let changed = self.upsert_member(member.clone());
        if self.cfg.role != Role::Introducer {
            return;
        }
        if first {
            // The new member gets the list of everybody else.
            let others: Vec<Member> = self
                .members
                .values()
                .filter(|m| m.info.node_id != from)
                .map(|m| m.info.clone())
                .collect();
            if others.is_empty() {
                self.send(from, &Message::Members(Vec::new()));
            }
            for chunk in others.chunks(MAX_MEMBERS) {
                self.send(from, &Message::Members(chunk.to_vec()));
            }
        }
        if changed {
            let to: Vec<NodeId> = self
                .links
                .iter()
                .filter(|(id, l)| **id != from && l.hello.is_some())
                .map(|(id, _)| *id)
                .collect();
            let msg = Message::MemberJoined(member);
            for n in to {
                self.send(n, &msg);
            }
        }
    }

    /// Add or update a member; true if it is new or changed.
    fn upsert_member(&mut self, mut m: Member) -> bool {
        if m.node_id == self.cfg.node_id {
            return false;
        }
        m.addrs.truncate(MAX_ADDRS);
        match self.members.get_mut(&m.node_id) {
            Some(s) => {
                s.left_reported = false;
                if s.info == m {
                    return false;
                }
                // Keep reflexive addresses we observed ourselves.
                for a in &s.info.addrs {
                    if !m.addrs.contains(a) && m.addrs.len() < MAX_ADDRS {
                        m.addrs.push(*a);
                    }
                }
                let changed = s.info != m;
                s.info = m;
                changed
            }
            None => {
                let node = m.node_id;
                let name = m.name.clone();
                self.members.insert(
                    node,
                    MemberState {
                        info: m,
                        pending: None,
                        retry_at: None,
                        backoff: self.cfg.retry_initial,
                        left_reported: false,
                        failures: 0,
                    },
                );
                self.events.push_back(Event::MemberJoined { node, name });
                true
            }
        }
    }

    fn remove_member(&mut self, id: NodeId, announce: bool) {
        if self.members.remove(&id).is_none() {
            return;
        }
        self.events.push_back(Event::MemberLeft { node: id });
        if announce {
            let to: Vec<NodeId> = self
                .links
                .iter()
                .filter(|(n, l)| **n != id && l.hello.is_some())
                .map(|(n, _)| *n)
                .collect();
            for n in to {
                self.send(n, &Message::MemberLeft(id));
            }
        }
    }

    fn send_neighbours(&mut self) {
        let mut ids: Vec<NodeId> = self.links.keys().copied().collect();
        ids.truncate(MAX_NEIGHBOURS);
        let msg = Message::Neighbours(ids.clone());
        for n in ids {
            if self.links.get(&n).is_some_and(|l| l.hello.is_some()) {
                self.send(n, &msg);
            }
        }
    }

    /// Members the policy may link to: those with a TAP.
    fn candidates(&self) -> Vec<NodeId> {
        self.members
            .values()
            .filter(|m| m.info.has_tap)
            .map(|m| m.info.node_id)
            .collect()
    }

    fn ring_neighbours(&self, k: usize) -> (Vec<NodeId>, Vec<NodeId>) {
        let c = self.candidates();
        let me = self.cfg.node_id;
        (ring::successors(me, &c, k), ring::predecessors(me, &c, k))
    }

    /// Nodes with a session to us that can forward an IHello to `target`
    /// (RFC 7016 3.5.1.5): introducers (every member keeps a session to
    /// them) and links whose last `Neighbours` list names `target`.
    pub fn forwarders_for(&self, target: NodeId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(id, l)| {
                **id != target
                    && (l.to_introducer
                        || l.hello.as_ref().is_some_and(|h| h.role == Role::Introducer)
                        || l.neighbours.contains(&target))
            })
            .map(|(id, _)| *id)
            .collect();
        out.truncate(MAX_NEIGHBOURS);
        out
    }

    /// Members the policy wants a link to whose opens have failed at least
    /// once and that have no link yet. An entry stays while retries go on
    /// with back-off, so status does not flap.
    pub fn open_attempts(&self) -> Vec<OpenAttempt> {
        if self.cfg.role == Role::Introducer {
            return Vec::new();
        }
        self.desired_links()
            .into_iter()
            .filter(|id| !self.links.contains_key(id))
            .filter_map(|id| {
                let m = self.members.get(&id)?;
                (m.failures > 0).then_some(OpenAttempt {
                    node: id,
                    failures: m.failures,
                    pending: m.pending.is_some(),
                })
            })
            .collect()
    }

    /// The members the starter policy wants links to: the nearest on the
    /// ring, successors and predecessors alternately, up to `max_links`.
    pub fn desired_links(&self) -> Vec<NodeId> {
        let max = self.cfg.max_links;
        let (succ, pred) = self.ring_neighbours(max);
        let mut want: Vec<NodeId> = Vec::with_capacity(max);
        let mut s = succ.into_iter();
        let mut p = pred.into_iter();
        while want.len() < max {
            let (a, b) = (s.next(), p.next());
            if a.is_none() && b.is_none() {
                break;
            }
            for x in [a, b].into_iter().flatten() {
                if want.len() < max && !want.contains(&x) {
                    want.push(x);
                }
            }
        }
        want
    }

    fn kind_of(id: NodeId, l: &Link, succ: &[NodeId], pred: &[NodeId]) -> LinkKind {
        if succ.contains(&id) {
            LinkKind::Successor
        } else if pred.contains(&id) {
            LinkKind::Predecessor
        } else if l.to_introducer || l.hello.as_ref().is_some_and(|h| h.role == Role::Introducer) {
            LinkKind::Introducer
        } else {
            LinkKind::Other
        }
    }

    fn link_kind(&self, id: NodeId) -> LinkKind {
        let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
        match self.links.get(&id) {
            Some(l) => Self::kind_of(id, l, &succ, &pred),
            None => LinkKind::Other,
        }
    }

    /// The starter link policy: open missing wanted links (respecting
    /// backoff), close surplus unwanted ones. Introducers only accept.
    fn run_policy(&mut self, now: Instant) {
        if self.cfg.role == Role::Introducer || self.leaving {
            return;
        }
        let want = self.desired_links();
        for id in &want {
            if self.links.contains_key(id) {
                continue;
            }
            let Some(m) = self.members.get_mut(id) else {
                continue;
            };
            if m.pending.is_some() || m.retry_at.is_some_and(|r| now < r) {
                continue;
            }
            m.pending = Some(now);
            m.retry_at = None;
            self.stats.opens += 1;
            self.actions.push_back(Action::OpenSession {
                node: Some(*id),
                addrs: m.info.addrs.iter().map(|a| a.addr).collect(),
            });
        }
        // Surplus: links beyond max_links that the policy does not want
        // and that are not introducer sessions; farthest first.
        let is_intro = |l: &Link| {
            l.to_introducer || l.hello.as_ref().is_some_and(|h| h.role == Role::Introducer)
        };
        let member_links = self.links.values().filter(|l| !is_intro(l)).count();
        if member_links > self.cfg.max_links {
            let me = self.cfg.node_id;
            let mut surplus: Vec<NodeId> = self
                .links
                .iter()
                .filter(|(id, l)| !is_intro(l) && !want.contains(id))
                .map(|(id, _)| *id)
                .collect();
            surplus.sort_by_key(|id| std::cmp::Reverse(ring::ring_distance(me, *id)));
            surplus.truncate(member_links - self.cfg.max_links);
            for id in surplus {
                self.links.remove(&id);
                self.switch.forget_node(id);
                self.events.push_back(Event::LinkDown { node: id });
                self.actions.push_back(Action::CloseSession { node: id });
            }
        }
    }
}

/// A delay in [d/2, d) so that retries of many nodes spread out.
fn jitter(rng: &mut Rng, d: Duration) -> Duration {
    d.mul_f64(0.5 + 0.5 * rng.f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    /// An in-process network: sessions are pairs of overlays, control
    /// messages are queued and delivered in order, time is virtual.
    struct Net {
        now: Instant,
        nodes: BTreeMap<NodeId, Overlay>,
        addr: BTreeMap<NodeId, SocketAddr>,
        by_addr: HashMap<SocketAddr, NodeId>,
        sessions: BTreeSet<(NodeId, NodeId)>,
        queue: VecDeque<(NodeId, NodeId, Vec<u8>)>,
        introducer: NodeId,
        macs: BTreeMap<NodeId, Mac>,
    }

    fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
        (a.min(b), a.max(b))
    }

    fn rng(seed: u8) -> Rng {
        Rng::from_seed([seed; 32])
    }

    impl Net {
        fn new(n: usize, max_links: usize, introducer_tap: bool, seed: u8) -> Net {
            let now = Instant::now();
            let mut r = rng(seed);
            let mut net = Net {
                now,
                nodes: BTreeMap::new(),
                addr: BTreeMap::new(),
                by_addr: HashMap::new(),
                sessions: BTreeSet::new(),
                queue: VecDeque::new(),
                introducer: NodeId(0),
                macs: BTreeMap::new(),
            };
            let intro_addr: SocketAddr = "198.51.100.7:4910".parse().unwrap();
            let intro_id = NodeId(u128::from(r.u64()) << 64 | u128::from(r.u64()));
            let intro_mac = introducer_tap.then_some(Mac([2, 0, 0, 0, 0xff, 0xff]));
            let cfg = Config::new(intro_id, "intro", Role::Introducer, intro_mac);
            net.add(intro_id, intro_addr, cfg, seed);
            net.introducer = intro_id;
            for i in 0..n {
                let id = NodeId(u128::from(r.u64()) << 64 | u128::from(r.u64()));
                let addr = SocketAddr::from(([203, 0, 113, (i + 1) as u8], 4910));
                let mac = Mac([2, 0, 0, 0, (i >> 8) as u8, i as u8]);
                let mut cfg = Config::new(id, format!("n{i}"), Role::Node, Some(mac));
                cfg.introducers = vec![intro_addr];
                cfg.max_links = max_links;
                net.add(id, addr, cfg, seed.wrapping_add(i as u8 + 1));
            }
            net
        }

        fn add(&mut self, id: NodeId, addr: SocketAddr, cfg: Config, seed: u8) {
            if let Some(m) = cfg.mac {
                self.macs.insert(id, m);
            }
            let mut o = Overlay::new(self.now, cfg, rng(seed)).unwrap();
            o.set_local_addresses(self.now, &[addr]);
            self.nodes.insert(id, o);
            self.addr.insert(id, addr);
            self.by_addr.insert(addr, id);
        }

        fn ov(&mut self, id: NodeId) -> &mut Overlay {
            self.nodes.get_mut(&id).unwrap()
        }

        fn connect(&mut self, a: NodeId, b: NodeId, a_to_introducer: bool) {
            if !self.sessions.insert(pair(a, b)) {
                return;
            }
            let (now, aa, ba) = (self.now, self.addr[&a], self.addr[&b]);
            self.ov(a).peer_up(now, b, ba, a_to_introducer);
            self.ov(b).peer_up(now, a, aa, false);
        }

        /// Process actions and deliver messages until quiet.
        fn pump(&mut self) {
            for _ in 0..1_000_000 {
                let mut did = false;
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                for id in ids {
                    while let Some(a) = self.ov(id).poll_action() {
                        did = true;
                        self.apply(id, a);
                    }
                    while self.ov(id).poll_event().is_some() {}
                }
                while let Some((from, to, bytes)) = self.queue.pop_front() {
                    did = true;
                    if self.sessions.contains(&pair(from, to)) {
                        let now = self.now;
                        self.ov(to).handle_control(now, from, &bytes);
                    }
                }
                if !did {
                    return;
                }
            }
            panic!("livelock: the network never went quiet");
        }

        fn apply(&mut self, from: NodeId, a: Action) {
            let now = self.now;
            match a {
                Action::OpenSession {
                    node: Some(to),
                    addrs,
                } => {
                    if self.nodes.contains_key(&to) {
                        assert!(addrs.contains(&self.addr[&to]), "open without the address");
                        self.connect(from, to, false);
                    } else {
                        self.ov(from).open_failed(now, Some(to), &addrs);
                    }
                }
                Action::OpenSession { node: None, addrs } => {
                    match self.by_addr.get(&addrs[0]).copied() {
                        Some(to) if self.nodes.contains_key(&to) => self.connect(from, to, true),
                        _ => self.ov(from).open_failed(now, None, &addrs),
                    }
                }
                Action::CloseSession { node } => {
                    if self.sessions.remove(&pair(from, node)) && self.nodes.contains_key(&node) {
                        self.ov(node).peer_down(now, from);
                    }
                }
                Action::SendControl { to, bytes } => {
                    if self.sessions.contains(&pair(from, to)) {
                        self.queue.push_back((from, to, bytes));
                    }
                }
            }
        }

        /// Run timers and traffic up to `until`.
        fn run_until(&mut self, until: Instant) {
            self.pump();
            for _ in 0..100_000 {
                let next = self
                    .nodes
                    .values()
                    .filter_map(|o| o.poll_timeout())
                    .min()
                    .unwrap();
                if next > until {
                    self.now = until;
                    return;
                }
                self.now = self.now.max(next);
                let now = self.now;
                let due: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(_, o)| o.poll_timeout().is_some_and(|t| t <= now))
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    self.ov(id).handle_timeout(now);
                }
                self.pump();
            }
            panic!("timer livelock");
        }

        fn run_for(&mut self, d: Duration) {
            let until = self.now + d;
            self.run_until(until);
        }

        fn kill(&mut self, id: NodeId) {
            self.nodes.remove(&id);
            let now = self.now;
            let gone: Vec<(NodeId, NodeId)> = self
                .sessions
                .iter()
                .filter(|(a, b)| *a == id || *b == id)
                .copied()
                .collect();
            for (a, b) in gone {
                self.sessions.remove(&(a, b));
                let other = if a == id { b } else { a };
                self.ov(other).peer_down(now, id);
            }
        }

        fn tap_nodes(&self) -> Vec<NodeId> {
            self.nodes
                .iter()
                .filter(|(_, o)| o.config().mac.is_some())
                .map(|(id, _)| *id)
                .collect()
        }

        /// The expected policy links of `id`: nearest `max/2` each way.
        fn expected_links(&self, id: NodeId, max: usize) -> BTreeSet<NodeId> {
            let all = self.tap_nodes();
            let k = max / 2;
            let mut s: BTreeSet<NodeId> = ring::successors(id, &all, k).into_iter().collect();
            s.extend(ring::predecessors(id, &all, k));
            s
        }

        fn linked(&self, id: NodeId) -> BTreeSet<NodeId> {
            self.nodes[&id]
                .neighbours()
                .into_iter()
                .filter(|n| n.node != self.introducer || n.takes_frames)
                .map(|n| n.node)
                .collect()
        }

        /// Broadcast a frame from `origin` and deliver every resulting
        /// transmission; returns how often each node wrote it to its TAP.
        fn broadcast(&mut self, origin: NodeId) -> BTreeMap<NodeId, usize> {
            let mut frame = Vec::new();
            frame.extend_from_slice(&Mac::BROADCAST.0);
            frame.extend_from_slice(&self.macs[&origin].0);
            frame.extend_from_slice(&[0x08, 0x06, 0, 1, 2, 3]);
            self.send_frame(origin, &frame)
        }

        fn send_frame(&mut self, origin: NodeId, frame: &[u8]) -> BTreeMap<NodeId, usize> {
            let now = self.now;
            let mut out = Vec::new();
            self.ov(origin).frame_from_tap(now, frame, &mut out);
            let mut work: VecDeque<(NodeId, FrameSend)> =
                out.iter().map(|s| (origin, *s)).collect();
            let mut writes = BTreeMap::new();
            let mut buf = vec![0u8; FrameHeader::MAX_LEN + frame.len()];
            while let Some((from, send)) = work.pop_front() {
                assert!(
                    self.sessions.contains(&pair(from, send.to)),
                    "frame without session"
                );
                let n = send.header.encode(&mut buf).unwrap();
                buf.truncate(n);
                buf.extend_from_slice(frame);
                let mut fwd = Vec::new();
                if let Ok(f) = self.ov(send.to).frame_from_peer(now, from, &buf, &mut fwd) {
                    assert_eq!(f, frame);
                    *writes.entry(send.to).or_insert(0) += 1;
                }
                work.extend(fwd.into_iter().map(|s| (send.to, s)));
            }
            writes
        }
    }

    fn check_converged(net: &Net, max_links: usize) {
        let intro = net.introducer;
        let all: BTreeSet<NodeId> = net.nodes.keys().copied().collect();
        for (id, o) in &net.nodes {
            let members: BTreeSet<NodeId> = o.members().map(|m| m.node_id).collect();
            let mut want = all.clone();
            want.remove(id);
            assert_eq!(members, want, "{id:?} does not know every member");
            if *id == intro {
                continue;
            }
            assert!(o.is_joined());
            assert!(o.is_linked(intro), "{id:?} lost its introducer");
            assert_eq!(
                net.linked(*id),
                net.expected_links(*id, max_links),
                "{id:?} links"
            );
            let tap = net.tap_nodes();
            let succ = ring::successors(*id, &tap, 2);
            let pred = ring::predecessors(*id, &tap, 2);
            for n in o.neighbours() {
                let want = if succ.contains(&n.node) {
                    LinkKind::Successor
                } else if pred.contains(&n.node) {
                    LinkKind::Predecessor
                } else if n.node == intro {
                    LinkKind::Introducer
                } else {
                    LinkKind::Other
                };
                assert_eq!(n.kind, want, "kind of {:?} at {id:?}", n.node);
            }
        }
    }

    #[test]
    fn fifty_nodes_converge_to_ring_neighbours() {
        let mut net = Net::new(50, 8, false, 1);
        net.run_for(Duration::from_secs(60));
        check_converged(&net, 8);
        // The introducer (no TAP) is linked to everybody and gets no frames.
        let intro = net.introducer;
        assert_eq!(net.nodes[&intro].neighbours().len(), 50);
        assert!(net.nodes[&intro]
            .neighbours()
            .iter()
            .all(|n| n.takes_frames));
        let o = net.nodes.keys().copied().find(|n| *n != intro).unwrap();
        assert!(net.nodes[&o]
            .neighbours()
            .iter()
            .any(|n| n.node == intro && !n.takes_frames && n.kind == LinkKind::Introducer));
    }

    #[test]
    fn bounded_flood_reaches_every_node_once() {
        let mut net = Net::new(50, 8, false, 2);
        net.run_for(Duration::from_secs(60));
        let nodes = net.tap_nodes();
        for origin in nodes.iter().take(5).copied() {
            let writes = net.broadcast(origin);
            assert!(!writes.contains_key(&net.introducer));
            assert!(!writes.contains_key(&origin));
            for n in &nodes {
                if *n != origin {
                    assert_eq!(writes.get(n), Some(&1), "{n:?} from {origin:?}");
                }
            }
        }
        // A reply to the origin's MAC is now a known unicast.
        let origin = nodes[0];
        let far = nodes[25];
        let mut reply = Vec::new();
        reply.extend_from_slice(&net.macs[&origin].0);
        reply.extend_from_slice(&net.macs[&far].0);
        reply.extend_from_slice(&[0x08, 0x06, 0, 2]);
        let writes = net.send_frame(far, &reply);
        assert_eq!(writes.get(&origin), Some(&1));
        let now = net.now;
        let origin_mac = net.macs[&origin];
        assert_eq!(net.ov(far).lookup_mac(now, origin_mac), Some(origin));
    }

    #[test]
    fn full_mesh_broadcast_goes_to_each_link_once_without_forwarding() {
        let mut net = Net::new(50, 64, true, 3);
        net.run_for(Duration::from_secs(60));
        let nodes = net.tap_nodes();
        assert_eq!(nodes.len(), 51);
        let origin = nodes[7];
        let linked = net.linked(origin);
        assert_eq!(linked.len(), 50);
        let writes = net.broadcast(origin);
        assert_eq!(writes.keys().copied().collect::<BTreeSet<_>>(), linked);
        assert!(writes.values().all(|c| *c == 1));
        assert!(net.nodes.values().all(|o| o.stats().flood_forwarded == 0));
    }

    #[test]
    fn dead_nodes_are_removed_and_ring_repairs() {
        let mut net = Net::new(50, 8, false, 4);
        net.run_for(Duration::from_secs(60));
        let victims: Vec<NodeId> = net.tap_nodes().into_iter().step_by(10).take(3).collect();
        for v in &victims {
            net.kill(*v);
        }
        net.run_for(Duration::from_secs(60));
        check_converged(&net, 8);
        for o in net.nodes.values() {
            for v in &victims {
                assert!(o.member(*v).is_none());
            }
        }
        // Broadcast still reaches everyone after the repair.
        let origin = net.tap_nodes()[3];
        let writes = net.broadcast(origin);
        assert_eq!(writes.len(), net.tap_nodes().len() - 1);
        assert!(writes.values().all(|c| *c == 1));
    }

    #[test]
    fn polite_leave_and_introducer_restart() {
        let mut net = Net::new(20, 8, false, 5);
        net.run_for(Duration::from_secs(30));
        let leaver = net.tap_nodes()[4];
        let now = net.now;
        net.ov(leaver).leave(now);
        net.pump();
        net.kill(leaver);
        net.run_for(Duration::from_secs(30));
        check_converged(&net, 8);
        // The introducer goes away and comes back: nodes reconnect.
        let intro = net.introducer;
        let cfg = net.nodes[&intro].config().clone();
        let addr = net.addr[&intro];
        net.kill(intro);
        net.run_for(Duration::from_secs(5));
        net.add(intro, addr, cfg, 99);
        net.run_for(Duration::from_secs(120));
        check_converged(&net, 8);
    }

    fn node(now: Instant) -> Overlay {
        let mut cfg = Config::new(NodeId(100), "a", Role::Node, Some(Mac([2, 0, 0, 0, 0, 1])));
        cfg.introducers = vec!["198.51.100.7:4910".parse().unwrap()];
        Overlay::new(now, cfg, rng(9)).unwrap()
    }

    fn drain(o: &mut Overlay) -> Vec<Action> {
        std::iter::from_fn(|| o.poll_action()).collect()
    }

    #[test]
    fn failed_opens_back_off() {
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
        o.open_failed(t1, None, &[intro]);
        o.handle_timeout(t1 + Duration::from_millis(999));
        assert!(drain(&mut o).is_empty());
        o.handle_timeout(t1 + Duration::from_secs(2));
        assert_eq!(drain(&mut o).len(), 1);
        // Now up; a member is learnt and its open fails and backs off.
        let t2 = t1 + Duration::from_secs(2);
        o.peer_up(t2, NodeId(7), intro, true);
        let member = Member {
            node_id: NodeId(200),
            name: "b".into(),
            role: Role::Node,
            has_tap: true,
            addrs: vec![TaggedAddr {
                origin: AddrOrigin::Reflexive,
                addr: "203.0.113.9:4910".parse().unwrap(),
            }],
        };
        let msg = Message::Members(vec![member]).encode().unwrap();
        drain(&mut o);
        o.handle_control(t2, NodeId(7), &msg);
        assert!(o.is_joined());
        let opens = drain(&mut o);
        assert_eq!(
            opens,
            vec![Action::OpenSession {
                node: Some(NodeId(200)),
                addrs: vec!["203.0.113.9:4910".parse().unwrap()]
            }]
        );
        // No answer at all: the open times out after open_timeout.
        o.handle_timeout(t2 + Duration::from_secs(19));
        assert!(drain(&mut o).is_empty());
        let t3 = t2 + Duration::from_secs(20);
        o.handle_timeout(t3);
        assert!(drain(&mut o).is_empty());
        o.handle_timeout(t3 + Duration::from_secs(1));
        assert_eq!(drain(&mut o).len(), 1);
        assert_eq!(o.stats().open_failures, 3);
        // Status: listed once an open failed, and still listed while the
        // retry is in flight (no flapping).
        let want = vec![OpenAttempt {
            node: NodeId(200),
            failures: 1,
            pending: true,
        }];
        assert_eq!(o.open_attempts(), want);
        // Forwarders: the introducer, plus links that have the target as
        // a neighbour.
        assert_eq!(o.forwarders_for(NodeId(200)), vec![NodeId(7)]);
        let t4 = t3 + Duration::from_secs(2);
        o.peer_up(t4, NodeId(300), "203.0.113.30:4910".parse().unwrap(), false);
        let nb = Message::Neighbours(vec![NodeId(200)]).encode().unwrap();
        o.handle_control(t4, NodeId(300), &nb);
        assert_eq!(o.forwarders_for(NodeId(200)), vec![NodeId(7), NodeId(300)]);
        assert_eq!(o.forwarders_for(NodeId(300)), vec![NodeId(7)]);
        o.open_failed(t4, Some(NodeId(200)), &[]);
        assert_eq!(o.open_attempts()[0].failures, 2);
        assert!(!o.open_attempts()[0].pending);
        o.peer_up(t4, NodeId(200), "203.0.113.9:4910".parse().unwrap(), false);
        assert!(o.open_attempts().is_empty());
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
        });
        o.handle_control(t0, NodeId(7), &h.encode().unwrap());
        assert!(o.member(NodeId(8)).is_none());
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
    }
}
