//! What a node is started with: plain data, already validated and resolved
//! by the agent (YAML, files, DNS names and the TAP live there).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ringlan_tunnel::BirthdayConfig;
use ringlan_tunnel::NodeId;
use ringlan_tunnel::RelayLimits;

use crate::admission::MembershipSetup;
use crate::candidates::LocalIf;
use crate::status::{NatStatus, Role, RoutedStatus, Status, TapStatus};

/// Everything a [`crate::Node`] needs to start.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// Network name (1-32 characters `[a-z0-9-]`).
    pub network: String,
    /// The network membership secret.
    pub secret: [u8; 32],
    /// The node's Ed25519 secret key.
    pub key: [u8; 32],
    /// The node's name (shown to other members).
    pub name: String,
    pub role: Role,
    /// The TAP's MAC address.
    pub mac: [u8; 6],
    /// This node bridges a site (`interface.bridge`): its frames may carry
    /// any source MAC, said in its `Hello` (a network CA's certificate
    /// decides instead when there is one).
    pub bridge: bool,
    /// The TAP's MTU: frames up to this plus an Ethernet header and one
    /// VLAN tag travel; larger ones are dropped (never truncated).
    pub mtu: u16,
    /// The TAP as status shows it.
    pub tap: TapStatus,
    /// The address the main socket is bound to (after binding: port 0 is
    /// resolved).
    pub listen: SocketAddr,
    /// Introducers (resolved).
    pub introducers: Vec<SocketAddr>,
    /// TCP addresses of introducers (`tcp://` entries, resolved) for the
    /// TCP fallback (docs/tcp.md); an introducer without one is tried on
    /// TCP at its UDP address.
    pub tcp_introducers: Vec<SocketAddr>,
    /// Extra STUN servers (resolved); introducers are asked too.
    pub stun_servers: Vec<SocketAddr>,
    /// Introducers only: also answer STUN Binding requests on this port of
    /// the listen address, named in every STUN answer as OTHER-ADDRESS
    /// (RFC 5780 7.4), so a node learns its NAT's mapping behaviour from
    /// one introducer (docs/nat.md "Mapping from one introducer"). 0: off.
    pub stun_alt_port: u16,
    /// Session keepalive; a peer is dead after three missed.
    pub keepalive: Duration,
    /// Time between session rekeys (fresh X25519; keys are never used
    /// past 1.5 times this).
    pub rekey_interval: Duration,
    /// Relaying for other members.
    pub relay: RelayLimits,
    /// Birthday punching knobs (docs/nat.md).
    pub birthday: BirthdayConfig,
    /// The machine's interface addresses at start.
    pub interfaces: Vec<LocalIf>,
    /// Seconds since the Unix epoch at the `now` given to
    /// [`crate::Node::new`]: the node's wall clock is this plus the time
    /// passed since (certificate validity, status).
    pub unix_time: u64,
    /// Admission by network-CA certificate; `None`: the shared secret is
    /// the whole check.
    pub membership: Option<MembershipSetup>,
}

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid network name (1-32 characters a-z, 0-9, -)")]
    NetworkName,
    #[error("overlay config: {0}")]
    Overlay(String),
}

impl NodeSetup {
    /// The configured overlay IPs: the addresses of `tap.addresses`
    /// (`addr/prefix`, as the agent writes them; anything else is
    /// skipped).
    pub(crate) fn overlay_ips(&self) -> Vec<std::net::IpAddr> {
        self.tap
            .addresses
            .iter()
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect()
    }

    /// The parts of the status that never change.
    pub(crate) fn base_status(&self, node_id: NodeId, public_key: &[u8; 32]) -> Status {
        Status {
            node_id: Some(node_id.to_string()),
            node_name: self.name.clone(),
            network: self.network.clone(),
            role: self.role,
            public_key: public_key.iter().map(|b| format!("{b:02x}")).collect(),
            tap: self.tap.clone(),
            listen: crate::candidates::listen_addresses(self.listen),
            addresses: Vec::new(),
            nat: NatStatus::default(),
            sessions: Vec::new(),
            neighbours: None,
            uptime_secs: 0,
            drops: BTreeMap::new(),
            relay: None,
            routed: RoutedStatus::default(),
            arp_nd: Default::default(),
            membership: Default::default(),
            tcp: None,
            directory: None,
            io: None,
        }
    }
}
