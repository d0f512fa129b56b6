//! The learning Ethernet switch, hardened against members that lie
//! (docs/overlay.md "Frames bound to their sender"):
//!
//! - *Pinned* MACs: a linked member whose source policy lists its MACs
//!   (not a bridge) has them pinned to it. A pinned MAC is never learnt
//!   behind anyone else and never evicted; it goes when the link does.
//! - *Owned* entries: a MAC learnt from a frame whose origin may use only
//!   listed MACs (a non-bridge member, or the auto MAC of an origin known
//!   only by its key) cannot move to another node until it idles out.
//!   A bridge's MACs move freely between bridges (a host moving between
//!   bridged sites), never onto an owned or pinned MAC.
//! - Each node holds at most `max_per_node` learnt entries: a bridge
//!   cannot fill the table; MACs beyond its cap are delivered but not
//!   learnt until some of its entries idle out (O(1), no scan per frame).
//! - The table holds at most `max_entries`; when full, idle entries go
//!   first, then the least recently seen one.

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mac({self})")
    }
}

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Group (broadcast or multicast) address: the I/G bit of the first octet.
    pub fn is_group(self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl std::str::FromStr for Mac {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut m = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut m {
            let p = parts.next().ok_or(())?;
            if p.len() != 2 {
                return Err(());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| ())?;
        }
        if parts.next().is_some() {
            return Err(());
        }
        Ok(Mac(m))
    }
}

use ringlan_tunnel::NodeId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Shortest frame we accept: destination, source and EtherType.
pub const ETH_HEADER_LEN: usize = 14;

/// Destination and source MAC of an Ethernet frame, or `None` for a runt.
pub fn parse_macs(frame: &[u8]) -> Option<(Mac, Mac)> {
    let h = frame.get(..ETH_HEADER_LEN)?;
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(h.get(0..6)?);
    src.copy_from_slice(h.get(6..12)?);
    Some((Mac(dst), Mac(src)))
}

/// Switch parameters.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// An entry not refreshed for this long is forgotten.
    pub idle_timeout: Duration,
    /// Table bound; when full, the least recently seen entry is evicted.
    pub max_entries: usize,
    /// Learnt entries one node may hold (its pinned MACs not counted).
    pub max_per_node: usize,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            idle_timeout: Duration::from_secs(300),
            max_entries: 4096,
            max_per_node: 1024,
        }
    }
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Learnt destination behind this node.
    Unicast(NodeId),
    /// Broadcast, multicast or unknown unicast.
    Flood,
    /// Addressed to our own MAC.
    Local,
    Drop(DropReason),
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// Arrived from the network carrying our own MAC as source (a loop or
    /// a duplicate MAC).
    OwnSource,
    /// Frame from the TAP addressed to the TAP itself.
    ToSelf,
    /// No TAP here, or the frame came from a peer that is not a member.
    NoTap,
    /// Malformed frame-flow header.
    BadHeader,
    /// Flood already seen or hop budget exhausted.
    Duplicate,
    /// Routed frame for a node this one has no route towards.
    NoRoute,
    /// A source MAC the sender's policy does not allow.
    ForgedMac,
    /// An ARP, IPv4 or IPv6 source address outside the sender's prefixes.
    ForgedIp,
    /// A flood or routed frame whose key is not its origin's (the node id
    /// is not the hash of the key's certificate).
    BadOrigin,
    /// A flood or routed frame whose origin signature does not verify.
    BadSignature,
    /// The link's budget of signature verifications is spent.
    VerifyBudget,
    /// The origin's broadcast budget is spent.
    BroadcastBudget,
    /// This node cannot sign (no identity configured), so it sends no
    /// flood or routed frame.
    NoIdentity,
}

impl DropReason {
    /// A fixed label for counters and metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::OwnSource => "ownsource",
            DropReason::ToSelf => "toself",
            DropReason::NoTap => "notap",
            DropReason::BadHeader => "badheader",
            DropReason::Duplicate => "duplicate",
            DropReason::NoRoute => "noroute",
            DropReason::ForgedMac => "forged_mac",
            DropReason::ForgedIp => "forged_ip",
            DropReason::BadOrigin => "bad_origin",
            DropReason::BadSignature => "bad_signature",
            DropReason::VerifyBudget => "verify_budget",
            DropReason::BroadcastBudget => "broadcast_budget",
            DropReason::NoIdentity => "no_identity",
        }
    }
}

/// How a source MAC may be learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Not at all: deliver the frame only.
    No,
    /// Owned by the node: it may use only listed MACs.
    Owned,
    /// Held by a bridge: another bridge may take it over.
    Shared,
}

/// Switch counters (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchCounters {
    pub learned: u64,
    pub moved: u64,
    pub expired: u64,
    pub evicted: u64,
    pub runts: u64,
    pub own_source: u64,
    pub unicast: u64,
    pub flooded: u64,
    pub local: u64,
    /// Learning refused: the MAC is pinned or owned elsewhere.
    pub refused: u64,
    /// Learning skipped: the node holds `max_per_node` entries.
    pub over_cap: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    node: NodeId,
    last_seen: Instant,
    owned: bool,
}

/// MAC learning table: source MAC -> the node it was last seen behind.
#[derive(Debug)]
pub struct Switch {
    cfg: SwitchConfig,
    own: Option<Mac>,
    table: HashMap<Mac, Entry>,
    /// MACs pinned to linked non-bridge members (bounded by the links
    /// times `MAX_POLICY_MACS`).
    pinned: HashMap<Mac, NodeId>,
    /// Learnt entries per node (`max_per_node`).
    per_node: HashMap<NodeId, usize>,
    counters: SwitchCounters,
}

impl Switch {
    /// `own` is the local TAP's MAC (`None` without a TAP).
    pub fn new(cfg: SwitchConfig, own: Option<Mac>) -> Self {
        // Reserve the whole table once: learning never allocates afterwards.
        let table = HashMap::with_capacity(cfg.max_entries.min(1 << 16));
        Switch {
            cfg,
            own,
            table,
            pinned: HashMap::new(),
            per_node: HashMap::new(),
            counters: SwitchCounters::default(),
        }
    }

    pub fn own_mac(&self) -> Option<Mac> {
        self.own
    }

    pub fn counters(&self) -> SwitchCounters {
        self.counters
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn expired(&self, now: Instant, e: &Entry) -> bool {
        now.saturating_duration_since(e.last_seen) >= self.cfg.idle_timeout
    }

    /// Record that `src` was seen behind `node` (`how` says whether the
    /// node owns it). Group addresses and our own MAC are never learnt; a
    /// pinned or owned MAC stays where it is; a shared MAC moves at once.
    /// Returns whether the table now points `src` at `node`.
    pub fn learn(&mut self, now: Instant, src: Mac, node: NodeId, how: Learn) -> bool {
        if how == Learn::No || src.is_group() || Some(src) == self.own || self.cfg.max_entries == 0
        {
            return false;
        }
        if let Some(p) = self.pinned.get(&src) {
            if *p != node {
                self.counters.refused += 1;
            }
            return *p == node;
        }
        let owned = how == Learn::Owned;
        let idle = self.cfg.idle_timeout;
        if let Some(e) = self.table.get_mut(&src) {
            if e.node != node {
                let live = now.saturating_duration_since(e.last_seen) < idle;
                if live && e.owned {
                    // An owned MAC stays with its owner until it idles out.
                    // (An owner takes its MAC back from a bridge at once.)
                    self.counters.refused += 1;
                    return false;
                }
                let old = e.node;
                if self.per_node.get(&node).copied().unwrap_or(0) >= self.cfg.max_per_node {
                    self.counters.over_cap += 1;
                    return false;
                }
                let e = self.table.get_mut(&src).expect("present above");
                e.node = node;
                e.owned = owned;
                self.uncount(old);
                *self.per_node.entry(node).or_insert(0) += 1;
                self.counters.moved += 1;
            }
            if let Some(e) = self.table.get_mut(&src) {
                e.last_seen = now;
            }
            return true;
        }
        if self.per_node.get(&node).copied().unwrap_or(0) >= self.cfg.max_per_node {
            self.counters.over_cap += 1;
            return false;
        }
        if self.table.len() >= self.cfg.max_entries {
            self.expire(now);
        }
        if self.table.len() >= self.cfg.max_entries {
            // O(table) scan, only when the table is full of live entries.
            if let Some((oldest, e)) = self
                .table
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(m, e)| (*m, *e))
            {
                self.table.remove(&oldest);
                self.uncount(e.node);
                self.counters.evicted += 1;
            }
        }
        self.table.insert(
            src,
            Entry {
                node,
                last_seen: now,
                owned,
            },
        );
        *self.per_node.entry(node).or_insert(0) += 1;
        self.counters.learned += 1;
        true
    }

    fn uncount(&mut self, node: NodeId) {
        if let Some(n) = self.per_node.get_mut(&node) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_node.remove(&node);
            }
        }
    }

    /// Pin `macs` to `node` (a linked member that may use only these),
    /// replacing what was pinned to it before. A MAC already pinned to
    /// another node stays there: first come, first served (with a network
    /// CA, the certificates make the lists disjoint).
    pub fn pin(&mut self, node: NodeId, macs: &[Mac]) {
        self.pinned.retain(|m, n| *n != node || macs.contains(m));
        for m in macs {
            if m.is_group() || Some(*m) == self.own {
                continue;
            }
            if self.pinned.get(m).is_some_and(|n| *n != node) {
                self.counters.refused += 1;
                continue;
            }
            self.pinned.insert(*m, node);
            if let Some(e) = self.table.remove(m) {
                self.uncount(e.node);
            }
        }
    }

    /// The node a MAC is pinned to.
    pub fn pinned(&self, mac: Mac) -> Option<NodeId> {
        self.pinned.get(&mac).copied()
    }

    /// The node behind `dst`, if learnt and not idle too long.
    pub fn lookup(&mut self, now: Instant, dst: Mac) -> Option<NodeId> {
        if let Some(n) = self.pinned.get(&dst) {
            return Some(*n);
        }
        let e = *self.table.get(&dst)?;
        if self.expired(now, &e) {
            self.table.remove(&dst);
            self.uncount(e.node);
            self.counters.expired += 1;
            return None;
        }
        Some(e.node)
    }

    /// Forget every entry pointing at `node`, pinned ones included (its
    /// link went away).
    pub fn forget_node(&mut self, node: NodeId) {
        self.table.retain(|_, e| e.node != node);
        self.pinned.retain(|_, n| *n != node);
        self.per_node.remove(&node);
    }

    /// Drop idle entries.
    pub fn expire(&mut self, now: Instant) {
        let idle = self.cfg.idle_timeout;
        let before = self.table.len();
        let per_node = &mut self.per_node;
        self.table.retain(|_, e| {
            let keep = now.saturating_duration_since(e.last_seen) < idle;
            if !keep {
                if let Some(n) = per_node.get_mut(&e.node) {
                    *n = n.saturating_sub(1);
                }
            }
            keep
        });
        self.per_node.retain(|_, n| *n > 0);
        self.counters.expired += (before - self.table.len()) as u64;
    }

    /// Decide where a frame read from the local TAP goes.
    pub fn decide(&mut self, now: Instant, frame: &[u8]) -> Forward {
        let Some((dst, _src)) = parse_macs(frame) else {
            self.counters.runts += 1;
            return Forward::Drop(DropReason::Runt);
        };
        if dst.is_group() {
            self.counters.flooded += 1;
            return Forward::Flood;
        }
        if Some(dst) == self.own {
            self.counters.local += 1;
            return Forward::Local;
        }
        match self.lookup(now, dst) {
            Some(n) => {
                self.counters.unicast += 1;
                Forward::Unicast(n)
            }
            None => {
                self.counters.flooded += 1;
                Forward::Flood
            }
        }
    }

    /// Account for a frame that arrived over the network from (or on
    /// behalf of) `origin`: refuse runts and frames carrying our own source
    /// MAC, learn the source as `how` says. Returns `None` if the frame
    /// should be written to the TAP, or the drop reason.
    pub fn ingress(
        &mut self,
        now: Instant,
        origin: NodeId,
        frame: &[u8],
        how: Learn,
    ) -> Option<DropReason> {
        let Some((_dst, src)) = parse_macs(frame) else {
            self.counters.runts += 1;
            return Some(DropReason::Runt);
        };
        if Some(src) == self.own {
            self.counters.own_source += 1;
            return Some(DropReason::OwnSource);
        }
        self.learn(now, src, origin, how);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 0xa]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 0xb]);
    const OWN: Mac = Mac([2, 0, 0, 0, 0, 0x1]);

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x00, 0x45]);
        f
    }

    fn sw() -> Switch {
        Switch::new(SwitchConfig::default(), Some(OWN))
    }

    /// A switch with a small table and per-node cap.
    fn small(max_entries: usize, max_per_node: usize) -> Switch {
        let cfg = SwitchConfig {
            max_entries,
            max_per_node,
            ..SwitchConfig::default()
        };
        Switch::new(cfg, Some(OWN))
    }

    #[test]
    fn learn_then_unicast() {
        let t = Instant::now();
        let mut s = sw();
        assert_eq!(s.decide(t, &frame(A, OWN)), Forward::Flood);
        assert_eq!(s.ingress(t, NodeId(7), &frame(OWN, A), Learn::Shared), None);
        assert_eq!(s.decide(t, &frame(A, OWN)), Forward::Unicast(NodeId(7)));
        assert_eq!(s.decide(t, &frame(Mac::BROADCAST, OWN)), Forward::Flood);
        assert_eq!(
            s.decide(t, &frame(Mac([0x01, 0, 0x5e, 0, 0, 1]), OWN)),
            Forward::Flood
        );
        assert_eq!(s.decide(t, &frame(OWN, OWN)), Forward::Local);
        let c = s.counters();
        assert_eq!((c.learned, c.unicast, c.flooded, c.local), (1, 1, 3, 1));
    }

    #[test]
    fn entries_expire_after_idle_time() {
        let t = Instant::now();
        let mut s = sw();
        s.learn(t, A, NodeId(1), Learn::Shared);
        assert_eq!(s.lookup(t + Duration::from_secs(299), A), Some(NodeId(1)));
        // Lookups do not refresh an entry; only learning does.
        assert_eq!(s.lookup(t + Duration::from_secs(300), A), None);
        assert_eq!(s.counters().expired, 1);
        s.learn(t, B, NodeId(2), Learn::Shared);
        s.learn(t + Duration::from_secs(200), B, NodeId(2), Learn::Shared);
        assert_eq!(s.lookup(t + Duration::from_secs(450), B), Some(NodeId(2)));
        s.expire(t + Duration::from_secs(500));
        assert!(s.is_empty());
    }

    #[test]
    fn moved_mac_is_relearnt_at_once() {
        let t = Instant::now();
        let mut s = sw();
        s.learn(t, A, NodeId(1), Learn::Shared);
        s.learn(t, A, NodeId(2), Learn::Shared);
        assert_eq!(s.lookup(t, A), Some(NodeId(2)));
        assert_eq!(s.counters().moved, 1);
        assert_eq!(s.len(), 1);
        s.forget_node(NodeId(2));
        assert_eq!(s.lookup(t, A), None);
    }

    #[test]
    fn table_is_bounded_and_evicts_oldest() {
        let t = Instant::now();
        let mut s = small(4, 1024);
        for i in 0..10u8 {
            s.learn(
                t + Duration::from_secs(u64::from(i)),
                Mac([2, 0, 0, 0, 1, i]),
                NodeId(1),
                Learn::Shared,
            );
            assert!(s.len() <= 4);
        }
        assert_eq!(s.counters().evicted, 6);
        let late = t + Duration::from_secs(10);
        assert_eq!(s.lookup(late, Mac([2, 0, 0, 0, 1, 5])), None);
        for i in 6..10u8 {
            assert_eq!(s.lookup(late, Mac([2, 0, 0, 0, 1, i])), Some(NodeId(1)));
        }
    }

    #[test]
    fn group_and_own_sources_are_not_learnt() {
        let t = Instant::now();
        let mut s = sw();
        s.learn(t, Mac::BROADCAST, NodeId(1), Learn::Shared);
        s.learn(t, OWN, NodeId(1), Learn::Shared);
        assert!(s.is_empty());
        assert_eq!(
            s.ingress(t, NodeId(3), &frame(A, OWN), Learn::Shared),
            Some(DropReason::OwnSource)
        );
        assert_eq!(s.counters().own_source, 1);
    }

    #[test]
    fn runts_are_counted_and_dropped() {
        let t = Instant::now();
        let mut s = sw();
        for n in 0..ETH_HEADER_LEN {
            let f = vec![0xffu8; n];
            assert_eq!(s.decide(t, &f), Forward::Drop(DropReason::Runt));
            assert_eq!(
                s.ingress(t, NodeId(1), &f, Learn::Shared),
                Some(DropReason::Runt)
            );
        }
        assert_eq!(s.counters().runts, 2 * ETH_HEADER_LEN as u64);
        assert!(s.is_empty());
    }

    #[test]
    fn pinned_and_owned_macs_stay_with_their_node() {
        let t = Instant::now();
        let mut s = sw();
        s.pin(NodeId(1), &[A]);
        // Nobody else learns a pinned MAC, however it learns.
        assert!(!s.learn(t, A, NodeId(2), Learn::Shared));
        assert!(!s.learn(t, A, NodeId(2), Learn::Owned));
        assert!(s.learn(t, A, NodeId(1), Learn::Owned));
        assert_eq!(s.lookup(t, A), Some(NodeId(1)));
        // A second claimant of the same pin does not get it either.
        s.pin(NodeId(3), &[A, B]);
        assert_eq!(
            (s.pinned(A), s.pinned(B)),
            (Some(NodeId(1)), Some(NodeId(3)))
        );
        assert_eq!(s.counters().refused, 3);
        // Owned: a bridge cannot take it over while it is live...
        let c = Mac([2, 0, 0, 0, 0, 0xc]);
        assert!(s.learn(t, c, NodeId(4), Learn::Owned));
        assert!(!s.learn(t, c, NodeId(5), Learn::Shared));
        assert_eq!(s.lookup(t, c), Some(NodeId(4)));
        // ...but once it idled out, it may.
        let late = t + Duration::from_secs(301);
        assert!(s.learn(late, c, NodeId(5), Learn::Shared));
        // The owner takes a MAC back from a bridge at once.
        assert!(s.learn(late, c, NodeId(4), Learn::Owned));
        assert_eq!(s.lookup(late, c), Some(NodeId(4)));
        // Not learning at all.
        assert!(!s.learn(t, Mac([2, 0, 0, 0, 0, 0xd]), NodeId(4), Learn::No));
        // The link goes: its pins go too.
        s.forget_node(NodeId(1));
        assert_eq!(s.lookup(t, A), None);
        assert!(s.learn(t, A, NodeId(2), Learn::Owned));
    }

    #[test]
    fn one_node_cannot_fill_the_table() {
        let t = Instant::now();
        let mut s = small(64, 8);
        s.learn(t, A, NodeId(1), Learn::Shared);
        for i in 0..=255u8 {
            s.learn(t, Mac([2, 9, 0, 0, 0, i]), NodeId(2), Learn::Shared);
        }
        assert_eq!(s.len(), 9);
        assert_eq!(s.counters().over_cap, 256 - 8);
        assert_eq!(s.counters().evicted, 0);
        assert_eq!(s.lookup(t, A), Some(NodeId(1)));
        // Its entries idle out; then it learns again.
        let late = t + Duration::from_secs(300);
        s.expire(late);
        assert!(s.is_empty());
        assert!(s.learn(late, Mac([2, 9, 0, 0, 1, 0]), NodeId(2), Learn::Shared));
    }

    #[test]
    fn mac_text() {
        assert_eq!(A.to_string(), "02:00:00:00:00:0a");
        assert_eq!("02:00:00:00:00:0a".parse::<Mac>(), Ok(A));
        assert!("02:00:00:00:00".parse::<Mac>().is_err());
        assert!("02:00:00:00:00:0a:01".parse::<Mac>().is_err());
        assert!("zz:00:00:00:00:0a".parse::<Mac>().is_err());
    }
}
