//! What the overlay reports about itself, for the agent's status and the
//! simulator's checks: counters, the current links and why each exists,
//! members, the ring view. Getters only; nothing here changes state.

use super::{Config, Link, Overlay};
use crate::ring;
use crate::switch::{Mac, SwitchCounters};
use crate::wire::{LinkWant, Member, Role};
use ringlan_tunnel::NodeId;
use std::net::SocketAddr;
use std::time::Instant;

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
    /// The address the session runs to; `None` while it runs over a
    /// relayed route.
    pub direct: Option<SocketAddr>,
    pub since: Instant,
    pub takes_frames: bool,
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

/// Overlay counters (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bad_control: u64,
    pub frames_from_tap: u64,
    pub frames_from_peers: u64,
    pub frames_dropped: u64,
    pub flood_duplicates: u64,
    /// Genuine flood or routed frames whose origin the full origins table
    /// had no room for (`Budgets::origin_evictions_per_link` spent):
    /// delivered and forwarded without dedup, budget or learning.
    pub origins_not_kept: u64,
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
    /// `Moved` reports ignored: over the sender's `moved_per_peer` budget.
    pub moves_over_budget: u64,
    /// Probes not asked for: over the destination IP's `probes_per_ip`
    /// budget (or no room to track the IP).
    pub probes_over_budget: u64,
    /// Gossiped member records dropped: over the sending link's
    /// `gossip_per_peer` budget.
    pub gossip_over_budget: u64,
    /// Gossiped new members dropped: `unverified_members` already known
    /// without a link.
    pub gossip_over_cap: u64,
    pub switch: SwitchCounters,
    /// The directory (`docs/directory.md`).
    pub dir: super::DirCounters,
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
                direct: l.direct,
                since: l.since,
                takes_frames: l.takes_frames(),
            })
            .collect();
        let me = self.cfg.node_id;
        v.sort_by(|a, b| ring::cmp_clockwise(me, a.node, b.node));
        v
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

    pub(super) fn link_kind(&self, id: NodeId) -> LinkKind {
        let (succ, pred) = self.ring_neighbours(self.cfg.ring_links);
        match self.links.get(&id) {
            Some(l) => self.kind_of(id, l, &succ, &pred),
            None => LinkKind::Other,
        }
    }
}
