//! The learning Ethernet switch.

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
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            idle_timeout: Duration::from_secs(300),
            max_entries: 4096,
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
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    node: NodeId,
    last_seen: Instant,
}

/// MAC learning table: source MAC -> the node it was last seen behind.
#[derive(Debug)]
pub struct Switch {
    cfg: SwitchConfig,
    own: Option<Mac>,
    table: HashMap<Mac, Entry>,
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

    /// Record that `src` was seen behind `node`. Group addresses are never
    /// learnt; a MAC seen behind another node moves there at once.
    pub fn learn(&mut self, now: Instant, src: Mac, node: NodeId) {
        if src.is_group() || Some(src) == self.own || self.cfg.max_entries == 0 {
            return;
        }
        if let Some(e) = self.table.get_mut(&src) {
            if e.node != node {
                e.node = node;
                self.counters.moved += 1;
            }
            e.last_seen = now;
            return;
        }
        if self.table.len() >= self.cfg.max_entries {
            self.expire(now);
        }
        if self.table.len() >= self.cfg.max_entries {
            // O(table) scan, only when the table is full of live entries.
            if let Some(oldest) = self
                .table
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(m, _)| *m)
            {
                self.table.remove(&oldest);
                self.counters.evicted += 1;
            }
        }
        self.table.insert(
            src,
            Entry {
                node,
                last_seen: now,
            },
        );
        self.counters.learned += 1;
    }

    /// The node behind `dst`, if learnt and not idle too long.
    pub fn lookup(&mut self, now: Instant, dst: Mac) -> Option<NodeId> {
        let e = *self.table.get(&dst)?;
        if self.expired(now, &e) {
            self.table.remove(&dst);
            self.counters.expired += 1;
            return None;
        }
        Some(e.node)
    }

    /// Forget every entry pointing at `node` (its link went away).
    pub fn forget_node(&mut self, node: NodeId) {
        self.table.retain(|_, e| e.node != node);
    }

    /// Drop idle entries.
    pub fn expire(&mut self, now: Instant) {
        let idle = self.cfg.idle_timeout;
        let before = self.table.len();
        self.table
            .retain(|_, e| now.saturating_duration_since(e.last_seen) < idle);
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

    /// Account for a frame that arrived from `from` over the network: learn
    /// its source, refuse runts and frames carrying our own source MAC.
    /// Returns `None` if the frame should be written to the TAP, or the drop
    /// reason.
    pub fn ingress(&mut self, now: Instant, from: NodeId, frame: &[u8]) -> Option<DropReason> {
        let Some((_dst, src)) = parse_macs(frame) else {
            self.counters.runts += 1;
            return Some(DropReason::Runt);
        };
        if Some(src) == self.own {
            self.counters.own_source += 1;
            return Some(DropReason::OwnSource);
        }
        self.learn(now, src, from);
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

    #[test]
    fn learn_then_unicast() {
        let t = Instant::now();
        let mut s = sw();
        assert_eq!(s.decide(t, &frame(A, OWN)), Forward::Flood);
        assert_eq!(s.ingress(t, NodeId(7), &frame(OWN, A)), None);
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
        s.learn(t, A, NodeId(1));
        assert_eq!(s.lookup(t + Duration::from_secs(299), A), Some(NodeId(1)));
        // Lookups do not refresh an entry; only learning does.
        assert_eq!(s.lookup(t + Duration::from_secs(300), A), None);
        assert_eq!(s.counters().expired, 1);
        s.learn(t, B, NodeId(2));
        s.learn(t + Duration::from_secs(200), B, NodeId(2));
        assert_eq!(s.lookup(t + Duration::from_secs(450), B), Some(NodeId(2)));
        s.expire(t + Duration::from_secs(500));
        assert!(s.is_empty());
    }

    #[test]
    fn moved_mac_is_relearnt_at_once() {
        let t = Instant::now();
        let mut s = sw();
        s.learn(t, A, NodeId(1));
        s.learn(t, A, NodeId(2));
        assert_eq!(s.lookup(t, A), Some(NodeId(2)));
        assert_eq!(s.counters().moved, 1);
        assert_eq!(s.len(), 1);
        s.forget_node(NodeId(2));
        assert_eq!(s.lookup(t, A), None);
    }

    #[test]
    fn table_is_bounded_and_evicts_oldest() {
        let t = Instant::now();
        let mut s = Switch::new(
            SwitchConfig {
                idle_timeout: Duration::from_secs(300),
                max_entries: 4,
            },
            Some(OWN),
        );
        for i in 0..10u8 {
            s.learn(
                t + Duration::from_secs(u64::from(i)),
                Mac([2, 0, 0, 0, 1, i]),
                NodeId(1),
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
        s.learn(t, Mac::BROADCAST, NodeId(1));
        s.learn(t, OWN, NodeId(1));
        assert!(s.is_empty());
        assert_eq!(
            s.ingress(t, NodeId(3), &frame(A, OWN)),
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
            assert_eq!(s.ingress(t, NodeId(1), &f), Some(DropReason::Runt));
        }
        assert_eq!(s.counters().runts, 2 * ETH_HEADER_LEN as u64);
        assert!(s.is_empty());
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
