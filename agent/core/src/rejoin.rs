//! Rejoining without introducers (docs/directory.md "Rejoin").
//!
//! The agent keeps the addresses of members it had direct sessions with
//! (its peer cache) and hands them over at start ([`Node::add_bootstrap`]).
//! When the node has not joined [`BOOTSTRAP_DELAY`] after it started (no
//! introducer answered), the overlay opens sessions to them
//! ([`ringlan_overlay::Overlay::bootstrap`]); the first that comes up routes
//! the join lookup, as an introducer would. Repeated every
//! [`BOOTSTRAP_RETRY`] while the node is not joined. Introducer addresses
//! can be replaced while running ([`Node::set_introducers`]: the agent
//! re-resolves their host names).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlan_tunnel::NodeId;

use crate::Node;

/// How long the introducers get before the peer cache is tried.
pub const BOOTSTRAP_DELAY: Duration = Duration::from_secs(5);
/// Time between two rounds of opens to the peer cache while not joined.
pub const BOOTSTRAP_RETRY: Duration = Duration::from_secs(30);
/// Peers kept for bootstrapping at most (the agent's cache holds no more).
pub const MAX_BOOTSTRAP: usize = 64;

/// The peers to rejoin through and when to try them next.
#[derive(Debug, Default)]
pub(crate) struct Rejoin {
    peers: Vec<(NodeId, Vec<SocketAddr>)>,
    next: Option<Instant>,
}

impl Node {
    /// Members to open sessions to when no introducer answers (the agent's
    /// peer cache, newest first; at most [`MAX_BOOTSTRAP`] are kept).
    /// Tried [`BOOTSTRAP_DELAY`] after the node started if it has not
    /// joined by then, and again every [`BOOTSTRAP_RETRY`] until it has.
    pub fn add_bootstrap(&mut self, now: Instant, peers: Vec<(NodeId, Vec<SocketAddr>)>) {
        let me = self.node_id();
        for p in peers {
            if p.0 != me
                && self.rejoin.peers.len() < MAX_BOOTSTRAP
                && !self.rejoin.peers.iter().any(|q| q.0 == p.0)
            {
                self.rejoin.peers.push(p);
            }
        }
        if self.rejoin.next.is_none() && !self.rejoin.peers.is_empty() {
            self.rejoin.next = Some((self.started + BOOTSTRAP_DELAY).max(now));
        }
    }

    /// Replace the introducer addresses (re-resolved host names): the
    /// overlay opens new ones at once, and they are asked for our reflexive
    /// address like the old ones were.
    pub fn set_introducers(&mut self, now: Instant, addrs: Vec<SocketAddr>) {
        let old = self.overlay.config().introducers.clone();
        if old == addrs {
            return;
        }
        tracing::info!(?addrs, "introducer addresses changed");
        self.stun_servers.retain(|a| !old.contains(a));
        let mut servers: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| *a != self.listen)
            .collect();
        servers.extend(self.stun_servers.iter().copied());
        servers.dedup();
        self.stun_servers = servers;
        self.overlay.set_introducers(now, &addrs);
        self.process_overlay(now);
    }

    /// Introducers with a session up now.
    pub fn introducers_linked(&self) -> usize {
        self.overlay.introducers_linked()
    }

    /// Housekeeping: open sessions to the peer cache while not joined.
    pub(crate) fn rejoin_tick(&mut self, now: Instant) {
        let Some(next) = self.rejoin.next else {
            return;
        };
        if self.overlay.is_joined() || now < next {
            return;
        }
        self.rejoin.next = Some(now + BOOTSTRAP_RETRY);
        tracing::info!(
            peers = self.rejoin.peers.len(),
            "no introducer answered: joining through members of the peer cache"
        );
        self.overlay.bootstrap(&self.rejoin.peers);
        self.process_overlay(now);
    }
}
