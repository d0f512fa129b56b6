//! The overlay's parameters, their defaults, and what makes a configuration
//! invalid (checked once, by [`Overlay::new`](super::Overlay::new)).

use super::budget::Budgets;
use crate::directory::DirConfig;
use crate::switch::{Mac, SwitchConfig};
use crate::wire::{Role, MAX_NAME};
use ringlan_tunnel::{Identity, NodeId};
use std::net::SocketAddr;
use std::time::Duration;

/// Overlay parameters.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    /// The node's identity: signs the flood and routed frames it
    /// originates, and names the network whose certificates turn an
    /// origin's key into its node id. Its node id must be `node_id`.
    /// Without it, the node sends no flood or routed frame and drops the
    /// ones it receives (`NoIdentity`): set it on every node with a TAP
    /// (the node core does).
    pub identity: Option<Identity>,
    /// This node bridges a site: its frames may carry any source MAC (said
    /// in `Hello`; a certificate can override what peers allow).
    pub bridge: bool,
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
    /// This node takes AEGIS-128L hop tags on route hops it is downstream
    /// of (said in `Hello`; default: its CPU has AES instructions,
    /// `ringlan_tunnel::crypto::aegis_in_hardware`).
    pub aegis_hops: bool,
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
    /// Budgets on what authenticated peers can make this node do
    /// (`docs/limits.md`).
    pub budgets: Budgets,
    /// Unix seconds (wall clock) at the `now` given to
    /// [`Overlay::new`](super::Overlay::new): directory records carry
    /// absolute expiry times (default 0; the node core sets it).
    pub unix_time: u64,
    /// The directory on the ring (`docs/directory.md`).
    pub directory: DirConfig,
}

impl Config {
    pub fn new(node_id: NodeId, name: impl Into<String>, role: Role, mac: Option<Mac>) -> Self {
        Config {
            node_id,
            identity: None,
            bridge: false,
            name: name.into(),
            role,
            mac,
            introducers: Vec::new(),
            ring_links: 2,
            relays: false,
            aegis_hops: ringlan_tunnel::crypto::aegis_in_hardware(),
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
            budgets: Budgets::default(),
            unix_time: 0,
            directory: DirConfig::default(),
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
    #[error("the identity's node id is not the configured node id")]
    IdentityMismatch,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::tests::rng;
    use crate::overlay::Overlay;
    use std::time::Instant;

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
        let net = ringlan_tunnel::NetworkName::new("lab").unwrap();
        let mut cfg = Config::new(NodeId(1), "i", Role::Introducer, None);
        cfg.identity = Some(Identity::from_secret_key_bytes([3; 32], &net));
        assert_eq!(
            Overlay::new(t0, cfg, rng(1)).err(),
            Some(ConfigError::IdentityMismatch)
        );
    }
}
