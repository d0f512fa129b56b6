//! Control messages: the types (`Hello`, `Member`, `Lookup`, `Ring`,
//! `LinkRequest`, `Moved`, route setup, ...), their encoder and their total
//! decoder. Layout per message in `docs/overlay.md` "Control messages".

use super::reader::Reader;
use super::WireError;
use crate::directory::{valid_key, Record, MAX_KEY};
use crate::switch::Mac;
use ringlan_tunnel::{HopMac, NodeId};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Control format version carried in byte 0.
pub const VERSION: u8 = 1;
/// Longest node name in bytes (UTF-8).
pub const MAX_NAME: usize = 64;
/// Most addresses in one `Hello` or one member entry.
pub const MAX_ADDRS: usize = 16;
/// Most member entries in one `Members` message; an introducer with more
/// members sends several messages.
pub const MAX_MEMBERS: usize = 128;
/// Most ids in one `Neighbours` message.
pub const MAX_NEIGHBOURS: usize = 128;
/// Most hops recorded in a `Lookup` / `LookupReply` path (also the lookup
/// hop limit).
pub const MAX_PATH: usize = 64;
/// Most member entries in one `LookupReply` or `Ring` message.
pub const MAX_RING_MEMBERS: usize = 32;

const T_HELLO: u8 = 0x01;
const T_MEMBERS: u8 = 0x02;
const T_MEMBER_JOINED: u8 = 0x03;
const T_MEMBER_LEFT: u8 = 0x04;
const T_LEAVING: u8 = 0x05;
const T_NEIGHBOURS: u8 = 0x06;
const T_LOOKUP: u8 = 0x07;
const T_LOOKUP_REPLY: u8 = 0x08;
const T_LINK_REQUEST: u8 = 0x09;
const T_LINK_REJECT: u8 = 0x0a;
const T_RING: u8 = 0x0b;
const T_MOVED: u8 = 0x0c;
const T_ROUTE_SETUP: u8 = 0x0d;
const T_ROUTE_REPLY: u8 = 0x0e;
const T_DIR_PUT: u8 = 0x0f;
const T_DIR_GET: u8 = 0x10;
const T_DIR_GET_REPLY: u8 = 0x11;
const T_DIR_SCAN: u8 = 0x12;
const T_DIR_SCAN_PAGE: u8 = 0x13;
/// A `RouteSetup` whose hop uses AEGIS-128L tags: the same fields under a
/// type of its own, sent only to a node whose `Hello` said it takes them
/// (a node that predates it would refuse the type, and never gets it).
const T_ROUTE_SETUP_AEGIS: u8 = 0x14;

/// Most records in one `DirScanPage` (a page of the largest records is
/// about 37 KB; a node holding more sends several parts).
pub const MAX_PAGE_RECORDS: usize = 16;
/// `DirScanPage` flags: the page is the walk's last.
const F_LAST_PAGE: u8 = 0x01;

/// Most relays on one relayed flow route.
pub const MAX_ROUTE_RELAYS: usize = 3;

const F_INTRODUCER: u8 = 0x01;
const F_TAP: u8 = 0x02;
/// `Hello` only: the sender relays routes for members (`relay.enabled`).
const F_RELAY: u8 = 0x04;
/// `Hello` only: the sender bridges a site; its frames may carry any
/// source MAC (`interface.bridge`).
const F_BRIDGE: u8 = 0x08;
/// `Hello` only: the sender is behind an endpoint-dependent ("symmetric")
/// NAT by its own STUN answers. Nodes that predate it ignore the bit.
const F_SYMMETRIC_NAT: u8 = 0x10;
/// `Hello` only: the sender takes AEGIS-128L hop tags on the route hops
/// it is downstream of (`RouteSetup::hop_mac`). Nodes that predate it
/// ignore the bit and are never sent the setup byte that needs it.
const F_AEGIS_HOPS: u8 = 0x20;

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// What a node does in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Node,
    /// Public bootstrap node (docs/overlay.md "Design decisions").
    Introducer,
}

/// How an address of a member was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrOrigin {
    /// Reported by the node itself (an interface address).
    Local = 0,
    /// Observed by the sender of the record as the source of its own
    /// session with the member (the NAT mapping), or by the member itself
    /// (STUN).
    Reflexive = 1,
    /// A reflexive address the sender did not observe itself: it learnt it
    /// from another member's gossip (a third party's claim). Tried as a
    /// candidate, never punched or probed (`docs/overlay.md`).
    Relayed = 2,
}

/// An address with its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaggedAddr {
    pub origin: AddrOrigin,
    pub addr: SocketAddr,
}

/// The first control message each side sends on a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node_id: NodeId,
    pub name: String,
    pub role: Role,
    /// Interface addresses (port = the listening port).
    pub addrs: Vec<SocketAddr>,
    /// The TAP's MAC; `None` for a node without TAP (an introducer may run
    /// without one and then receives no frames).
    pub mac: Option<Mac>,
    /// The sender carries relayed routes for members.
    pub relays: bool,
    /// The sender bridges a site: its frames may carry any source MAC,
    /// not only `mac` (unless its certificate says otherwise).
    pub bridge: bool,
    /// The sender's NAT maps endpoint-dependently (its own word, from its
    /// STUN answers; a fresh `Hello` follows when that changes). A
    /// symmetric node does not birthday-punch a symmetric member: nothing
    /// can meet between two such NATs (docs/nat.md "Coordination").
    pub symmetric_nat: bool,
    /// The sender takes AEGIS-128L hop tags (its CPU has AES instructions):
    /// its upstream neighbour on a route may choose them for their hop.
    pub aegis_hops: bool,
}

/// One entry of the membership list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: NodeId,
    pub name: String,
    pub role: Role,
    /// Whether the member has a TAP (takes frames).
    pub has_tap: bool,
    pub addrs: Vec<TaggedAddr>,
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    /// Introducer -> new member: (part of) the member list.
    Members(Vec<Member>),
    /// Introducer -> members: a member joined or changed its addresses.
    MemberJoined(Member),
    /// Introducer -> members: a member's session to the introducer ended.
    MemberLeft(NodeId),
    /// Polite leave: the sender is shutting down; do not retry it.
    Leaving,
    /// The sender's current links (for 1-lookahead routing).
    Neighbours(Vec<NodeId>),
    /// Find the node managing a ring position (routed greedily, hop by hop).
    Lookup(Lookup),
    /// Answer to a `Lookup`, routed back along the reversed path.
    LookupReply(LookupReply),
    /// The sender wants this session kept as a link of this kind
    /// (`LinkWant::Release`: it no longer needs it).
    LinkRequest(LinkWant),
    /// The receiver refused a `LinkRequest` of this kind.
    LinkReject {
        kind: LinkWant,
        reason: RejectReason,
    },
    /// The sender's ring neighbours (successors then predecessors) with
    /// their addresses, for ring maintenance.
    Ring(Vec<Member>),
    /// `node` is now reachable at `addr` (its NAT renumbered or rebound):
    /// sent by a node whose session with `node` verified the new address
    /// (RFC 7016 3.5.4.2), or by `node` itself when it learns a new
    /// reflexive address. A receiver with a session to `node` at another
    /// address probes `addr` (the forwarder's re-introduction, RFC 7016
    /// 3.5.1.5/3.5.1.6; the probe's Ping Reply does the verification).
    Moved {
        node: NodeId,
        addr: SocketAddr,
    },
    /// Set up a relayed flow route (docs/relay.md "Setup (overlay control
    /// messages)"): sent by the route's origin to its first relay and by
    /// each relay to the next node, always over their own session.
    RouteSetup(RouteSetup),
    /// The answer to a `RouteSetup`, sent back hop by hop.
    RouteReply(RouteReply),
    /// Store a directory record (`docs/directory.md` "Messages").
    DirPut(DirPut),
    /// Find a directory record, routed greedily towards its position.
    DirGet(DirGet),
    /// The answer to a `DirGet`, walked back along its path.
    DirGetReply(DirGetReply),
    /// One step of a scan walking the ring successor by successor.
    DirScan(DirScan),
    /// Records a scan step found, routed greedily to the asker.
    DirScanPage(DirScanPage),
}

/// Why a [`DirPut`] travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PutKind {
    /// From the publisher towards the node succeeding the record's
    /// position (greedy routing, then one hop to the owner).
    Route = 0,
    /// From a responsible node to its successor, which stores it and
    /// passes it on while `copies` > 1.
    Replica = 1,
    /// Handed over after a ring change to a node that became responsible;
    /// stored, not passed on.
    Handover = 2,
}

/// A directory put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirPut {
    pub kind: PutKind,
    /// `Replica`: copies still to make, this one included; 0 otherwise.
    pub copies: u8,
    /// Hops travelled (`Route`), at most `MAX_PATH`.
    pub hops: u8,
    pub record: Record,
}

/// A directory get. `path[0]` asked; every forwarder appends itself (as
/// in [`Lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGet {
    pub nonce: u64,
    pub key: String,
    pub path: Vec<NodeId>,
}

/// The answer to a [`DirGet`] (`record: None`: not found where routing
/// ended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGetReply {
    pub nonce: u64,
    pub key: String,
    /// Still to walk back; the last entry is the next receiver.
    pub path: Vec<NodeId>,
    pub record: Option<Record>,
}

/// A scan step: the receiver reports the `node:` records it holds in the
/// arc `(cursor, receiver]` (or `(cursor, asker]` when that arc holds the
/// asker: the walk is done) and passes the walk on with `cursor` set to
/// itself and `seq + 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirScan {
    pub nonce: u64,
    /// Where pages go (routed greedily to this ring position) and where
    /// the walk ends.
    pub asker: NodeId,
    pub cursor: NodeId,
    pub seq: u16,
}

/// Records found by scan step `seq`, in `parts` parts (`part` counts from
/// 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirScanPage {
    pub nonce: u64,
    pub asker: NodeId,
    pub seq: u16,
    pub part: u8,
    pub parts: u8,
    /// The walk ended with this step.
    pub last: bool,
    /// Hops travelled towards the asker, at most `MAX_PATH`.
    pub hops: u8,
    pub records: Vec<Record>,
}

/// One hop of a route setup request. The sender receives the route's
/// datagrams from the receiver under `id` and chose `key` for this hop
/// (`docs/relay.md`); both travel only inside the encrypted
/// session between the two.
#[derive(Clone, PartialEq, Eq)]
pub struct RouteSetup {
    /// Chosen by the origin; with `origin` it names the route.
    pub nonce: u64,
    pub origin: NodeId,
    pub target: NodeId,
    /// Relays that may still be added after the receiver.
    pub relays_left: u8,
    pub id: u32,
    pub key: [u8; 32],
    /// The relays so far (the sender last, unless it is the origin).
    pub path: Vec<NodeId>,
    /// The MAC of this hop's tags, both ways (`docs/relay.md`): AEGIS-128L
    /// travels as its own message type, which the sender uses only when
    /// the receiver's `Hello` said it takes those tags.
    pub hop_mac: HopMac,
}

impl std::fmt::Debug for RouteSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSetup")
            .field("nonce", &self.nonce)
            .field("origin", &self.origin)
            .field("target", &self.target)
            .field("relays_left", &self.relays_left)
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The answer to a [`RouteSetup`], from the node it was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteReply {
    pub nonce: u64,
    pub origin: NodeId,
    pub outcome: RouteOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOutcome {
    /// Installed: the sender of the reply receives under `id`; `relays`
    /// are the route's relays in order from the origin.
    Accepted {
        id: u32,
        relays: Vec<NodeId>,
    },
    Refused(RouteRefusal),
}

/// Why a route could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteRefusal {
    /// No next hop toward the target within the relay budget.
    NoPath = 1,
    /// The node does not relay.
    RelayDisabled = 2,
    /// The relay carries its maximum of routes.
    Limit = 3,
    /// A hop session went away during setup.
    Gone = 4,
}

/// A lookup for the node managing `target` (Symphony's routing of a join or
/// a long-link draw). `path[0]` is the node that asked; every forwarder
/// appends itself before passing the lookup on, so `path.len()` is the hop
/// count and the reply can walk the path back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Chosen by the asking node; echoed in the reply.
    pub nonce: u64,
    pub target: NodeId,
    pub path: Vec<NodeId>,
}

/// The answer to a [`Lookup`]: the node where greedy routing ended
/// (first, if it is on the ring) and the ring members it knows nearest to
/// the target, with their addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupReply {
    pub nonce: u64,
    pub target: NodeId,
    /// The lookup's path still to walk back (the last entry is the next
    /// receiver; it removes itself before passing the reply on).
    pub path: Vec<NodeId>,
    pub members: Vec<Member>,
}

/// Why a link is wanted (the `kind` byte of `LinkRequest` / `LinkReject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkWant {
    /// Not wanted (any more) by the sender.
    Release = 0,
    /// Ring neighbour (successor or predecessor).
    Ring = 1,
    /// Symphony long-distance link.
    Long = 2,
    /// On-demand link for direct unicast traffic.
    OnDemand = 3,
}

impl LinkWant {
    fn from_u8(b: u8) -> Result<Self, WireError> {
        Ok(match b {
            0 => LinkWant::Release,
            1 => LinkWant::Ring,
            2 => LinkWant::Long,
            3 => LinkWant::OnDemand,
            k => return Err(WireError::BadLinkKind(k)),
        })
    }
}

/// Why a `LinkRequest` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The receiver already has its maximum of incoming links of that kind.
    Capacity = 1,
}

// ------------------------------------------------- composite fields, read

impl Reader<'_> {
    fn name(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        if len > MAX_NAME {
            return Err(WireError::NameTooLong(len));
        }
        let b = self.take(len)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| WireError::BadUtf8)
    }

    fn addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            FAMILY_V4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            f => return Err(WireError::BadFamily(f)),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    fn count(&mut self, what: &'static str, max: usize) -> Result<usize, WireError> {
        let n = usize::from(self.u8()?);
        check_count(what, n, max)?;
        Ok(n)
    }

    fn ids(&mut self, what: &'static str, max: usize) -> Result<Vec<NodeId>, WireError> {
        let n = self.count(what, max)?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.node_id()?);
        }
        Ok(ids)
    }

    fn members(&mut self) -> Result<Vec<Member>, WireError> {
        let n = self.count("members", MAX_RING_MEMBERS)?;
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            ms.push(self.member()?);
        }
        Ok(ms)
    }

    fn member(&mut self) -> Result<Member, WireError> {
        let node_id = self.node_id()?;
        let flags = self.u8()?;
        let name = self.name()?;
        let n = self.count("addresses", MAX_ADDRS)?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let origin = match self.u8()? {
                0 => AddrOrigin::Local,
                1 => AddrOrigin::Reflexive,
                2 => AddrOrigin::Relayed,
                o => return Err(WireError::BadOrigin(o)),
            };
            addrs.push(TaggedAddr {
                origin,
                addr: self.addr()?,
            });
        }
        Ok(Member {
            node_id,
            name,
            role: role_of(flags),
            has_tap: flags & F_TAP != 0,
            addrs,
        })
    }
}

impl Reader<'_> {
    fn dir_key(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        if len > MAX_KEY {
            return Err(WireError::TooMany {
                what: "key bytes",
                count: len,
                max: MAX_KEY,
            });
        }
        let key = std::str::from_utf8(self.take(len)?).map_err(|_| WireError::BadKey)?;
        if !valid_key(key) {
            return Err(WireError::BadKey);
        }
        Ok(key.to_owned())
    }
}

fn put_dir_key(out: &mut Vec<u8>, key: &str) -> Result<(), WireError> {
    if !valid_key(key) {
        return Err(WireError::BadKey);
    }
    // valid_key bounds the length by MAX_KEY < 256.
    out.push(key.len() as u8);
    out.extend_from_slice(key.as_bytes());
    Ok(())
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), WireError> {
    if count > max {
        Err(WireError::TooMany { what, count, max })
    } else {
        Ok(())
    }
}

fn role_of(flags: u8) -> Role {
    if flags & F_INTRODUCER != 0 {
        Role::Introducer
    } else {
        Role::Node
    }
}

fn flags_of(role: Role, has_tap: bool) -> u8 {
    let mut f = 0;
    if role == Role::Introducer {
        f |= F_INTRODUCER;
    }
    if has_tap {
        f |= F_TAP;
    }
    f
}

// ---------------------------------------------------------------- writer

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), WireError> {
    let len = u8::try_from(name.len())
        .ok()
        .filter(|l| usize::from(*l) <= MAX_NAME)
        .ok_or(WireError::NameTooLong(name.len()))?;
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn put_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

fn put_count(out: &mut Vec<u8>, what: &'static str, n: usize, max: usize) -> Result<(), WireError> {
    check_count(what, n, max)?;
    // max <= 255 for every u8 count.
    out.push(u8::try_from(n).map_err(|_| WireError::TooMany {
        what,
        count: n,
        max,
    })?);
    Ok(())
}

fn put_ids(
    out: &mut Vec<u8>,
    what: &'static str,
    ids: &[NodeId],
    max: usize,
) -> Result<(), WireError> {
    put_count(out, what, ids.len(), max)?;
    for id in ids {
        out.extend_from_slice(&id.to_bytes());
    }
    Ok(())
}

fn put_members(out: &mut Vec<u8>, ms: &[Member]) -> Result<(), WireError> {
    put_count(out, "members", ms.len(), MAX_RING_MEMBERS)?;
    for m in ms {
        put_member(out, m)?;
    }
    Ok(())
}

fn put_member(out: &mut Vec<u8>, m: &Member) -> Result<(), WireError> {
    out.extend_from_slice(&m.node_id.to_bytes());
    out.push(flags_of(m.role, m.has_tap));
    put_name(out, &m.name)?;
    put_count(out, "addresses", m.addrs.len(), MAX_ADDRS)?;
    for a in &m.addrs {
        out.push(a.origin as u8);
        put_addr(out, &a.addr);
    }
    Ok(())
}

impl Message {
    /// Encode, appending to `out`. Fails (leaving `out` in an unspecified
    /// but valid state) if a field exceeds its bound.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.push(VERSION);
        match self {
            Message::Hello(h) => {
                out.push(T_HELLO);
                out.extend_from_slice(&h.node_id.to_bytes());
                let relay = if h.relays { F_RELAY } else { 0 };
                let bridge = if h.bridge { F_BRIDGE } else { 0 };
                let symmetric = if h.symmetric_nat { F_SYMMETRIC_NAT } else { 0 };
                let aegis = if h.aegis_hops { F_AEGIS_HOPS } else { 0 };
                out.push(flags_of(h.role, h.mac.is_some()) | relay | bridge | symmetric | aegis);
                if let Some(mac) = h.mac {
                    out.extend_from_slice(&mac.0);
                }
                put_name(out, &h.name)?;
                put_count(out, "addresses", h.addrs.len(), MAX_ADDRS)?;
                for a in &h.addrs {
                    put_addr(out, a);
                }
            }
            Message::Members(ms) => {
                out.push(T_MEMBERS);
                check_count("members", ms.len(), MAX_MEMBERS)?;
                let n = u16::try_from(ms.len()).map_err(|_| WireError::TooMany {
                    what: "members",
                    count: ms.len(),
                    max: MAX_MEMBERS,
                })?;
                out.extend_from_slice(&n.to_be_bytes());
                for m in ms {
                    put_member(out, m)?;
                }
            }
            Message::MemberJoined(m) => {
                out.push(T_MEMBER_JOINED);
                put_member(out, m)?;
            }
            Message::MemberLeft(id) => {
                out.push(T_MEMBER_LEFT);
                out.extend_from_slice(&id.to_bytes());
            }
            Message::Leaving => out.push(T_LEAVING),
            Message::Neighbours(ids) => {
                out.push(T_NEIGHBOURS);
                put_ids(out, "neighbours", ids, MAX_NEIGHBOURS)?;
            }
            Message::Lookup(l) => {
                out.push(T_LOOKUP);
                out.extend_from_slice(&l.nonce.to_be_bytes());
                out.extend_from_slice(&l.target.to_bytes());
                put_ids(out, "path hops", &l.path, MAX_PATH)?;
            }
            Message::LookupReply(r) => {
                out.push(T_LOOKUP_REPLY);
                out.extend_from_slice(&r.nonce.to_be_bytes());
                out.extend_from_slice(&r.target.to_bytes());
                put_ids(out, "path hops", &r.path, MAX_PATH)?;
                put_members(out, &r.members)?;
            }
            Message::LinkRequest(k) => {
                out.push(T_LINK_REQUEST);
                out.push(*k as u8);
            }
            Message::LinkReject { kind, reason } => {
                out.push(T_LINK_REJECT);
                out.push(*kind as u8);
                out.push(*reason as u8);
            }
            Message::Ring(ms) => {
                out.push(T_RING);
                put_members(out, ms)?;
            }
            Message::Moved { node, addr } => {
                out.push(T_MOVED);
                out.extend_from_slice(&node.to_bytes());
                put_addr(out, addr);
            }
            Message::RouteSetup(r) => {
                out.push(match r.hop_mac {
                    HopMac::AesGcm => T_ROUTE_SETUP,
                    HopMac::Aegis128L => T_ROUTE_SETUP_AEGIS,
                });
                out.extend_from_slice(&r.nonce.to_be_bytes());
                out.extend_from_slice(&r.origin.to_bytes());
                out.extend_from_slice(&r.target.to_bytes());
                out.push(r.relays_left);
                out.extend_from_slice(&r.id.to_be_bytes());
                out.extend_from_slice(&r.key);
                put_ids(out, "route relays", &r.path, MAX_ROUTE_RELAYS)?;
            }
            Message::RouteReply(r) => {
                out.push(T_ROUTE_REPLY);
                out.extend_from_slice(&r.nonce.to_be_bytes());
                out.extend_from_slice(&r.origin.to_bytes());
                match &r.outcome {
                    RouteOutcome::Accepted { id, relays } => {
                        out.push(0);
                        out.extend_from_slice(&id.to_be_bytes());
                        put_ids(out, "route relays", relays, MAX_ROUTE_RELAYS)?;
                    }
                    RouteOutcome::Refused(why) => out.push(*why as u8),
                }
            }
            Message::DirPut(p) => {
                out.push(T_DIR_PUT);
                out.push(p.kind as u8);
                out.push(p.copies);
                out.push(p.hops);
                p.record.encode_into(out)?;
            }
            Message::DirGet(g) => {
                out.push(T_DIR_GET);
                out.extend_from_slice(&g.nonce.to_be_bytes());
                put_dir_key(out, &g.key)?;
                put_ids(out, "path hops", &g.path, MAX_PATH)?;
            }
            Message::DirGetReply(r) => {
                out.push(T_DIR_GET_REPLY);
                out.extend_from_slice(&r.nonce.to_be_bytes());
                put_dir_key(out, &r.key)?;
                put_ids(out, "path hops", &r.path, MAX_PATH)?;
                match &r.record {
                    None => out.push(0),
                    Some(rec) => {
                        out.push(1);
                        rec.encode_into(out)?;
                    }
                }
            }
            Message::DirScan(sc) => {
                out.push(T_DIR_SCAN);
                out.extend_from_slice(&sc.nonce.to_be_bytes());
                out.extend_from_slice(&sc.asker.to_bytes());
                out.extend_from_slice(&sc.cursor.to_bytes());
                out.extend_from_slice(&sc.seq.to_be_bytes());
            }
            Message::DirScanPage(p) => {
                out.push(T_DIR_SCAN_PAGE);
                out.extend_from_slice(&p.nonce.to_be_bytes());
                out.extend_from_slice(&p.asker.to_bytes());
                out.extend_from_slice(&p.seq.to_be_bytes());
                out.push(p.part);
                out.push(p.parts);
                out.push(if p.last { F_LAST_PAGE } else { 0 });
                out.push(p.hops);
                put_count(out, "page records", p.records.len(), MAX_PAGE_RECORDS)?;
                for rec in &p.records {
                    rec.encode_into(out)?;
                }
            }
        }
        Ok(())
    }

    /// Encode into a fresh buffer.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut v = Vec::new();
        self.encode_into(&mut v)?;
        Ok(v)
    }

    /// Decode one whole control message.
    pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
        let mut r = Reader::new(buf);
        let v = r.u8()?;
        if v != VERSION {
            return Err(WireError::BadVersion(v));
        }
        let msg = match r.u8()? {
            T_HELLO => {
                let node_id = r.node_id()?;
                let flags = r.u8()?;
                let mac = if flags & F_TAP != 0 {
                    Some(Mac(r.array()?))
                } else {
                    None
                };
                let name = r.name()?;
                let n = r.count("addresses", MAX_ADDRS)?;
                let mut addrs = Vec::with_capacity(n);
                for _ in 0..n {
                    addrs.push(r.addr()?);
                }
                Message::Hello(Hello {
                    node_id,
                    name,
                    role: role_of(flags),
                    addrs,
                    mac,
                    relays: flags & F_RELAY != 0,
                    bridge: flags & F_BRIDGE != 0,
                    symmetric_nat: flags & F_SYMMETRIC_NAT != 0,
                    aegis_hops: flags & F_AEGIS_HOPS != 0,
                })
            }
            T_MEMBERS => {
                let n = usize::from(r.u16()?);
                check_count("members", n, MAX_MEMBERS)?;
                let mut ms = Vec::with_capacity(n);
                for _ in 0..n {
                    ms.push(r.member()?);
                }
                Message::Members(ms)
            }
            T_MEMBER_JOINED => Message::MemberJoined(r.member()?),
            T_MEMBER_LEFT => Message::MemberLeft(r.node_id()?),
            T_LEAVING => Message::Leaving,
            T_NEIGHBOURS => Message::Neighbours(r.ids("neighbours", MAX_NEIGHBOURS)?),
            T_LOOKUP => Message::Lookup(Lookup {
                nonce: r.u64()?,
                target: r.node_id()?,
                path: r.ids("path hops", MAX_PATH)?,
            }),
            T_LOOKUP_REPLY => Message::LookupReply(LookupReply {
                nonce: r.u64()?,
                target: r.node_id()?,
                path: r.ids("path hops", MAX_PATH)?,
                members: r.members()?,
            }),
            T_LINK_REQUEST => Message::LinkRequest(LinkWant::from_u8(r.u8()?)?),
            T_LINK_REJECT => {
                let kind = LinkWant::from_u8(r.u8()?)?;
                let reason = match r.u8()? {
                    1 => RejectReason::Capacity,
                    b => return Err(WireError::BadReason(b)),
                };
                Message::LinkReject { kind, reason }
            }
            T_RING => Message::Ring(r.members()?),
            T_MOVED => Message::Moved {
                node: r.node_id()?,
                addr: r.addr()?,
            },
            t @ (T_ROUTE_SETUP | T_ROUTE_SETUP_AEGIS) => Message::RouteSetup(RouteSetup {
                nonce: r.u64()?,
                origin: r.node_id()?,
                target: r.node_id()?,
                relays_left: r.u8()?,
                id: u32::from_be_bytes(r.array()?),
                key: r.array()?,
                path: r.ids("route relays", MAX_ROUTE_RELAYS)?,
                hop_mac: if t == T_ROUTE_SETUP_AEGIS {
                    HopMac::Aegis128L
                } else {
                    HopMac::AesGcm
                },
            }),
            T_ROUTE_REPLY => {
                let nonce = r.u64()?;
                let origin = r.node_id()?;
                let outcome = match r.u8()? {
                    0 => RouteOutcome::Accepted {
                        id: u32::from_be_bytes(r.array()?),
                        relays: r.ids("route relays", MAX_ROUTE_RELAYS)?,
                    },
                    1 => RouteOutcome::Refused(RouteRefusal::NoPath),
                    2 => RouteOutcome::Refused(RouteRefusal::RelayDisabled),
                    3 => RouteOutcome::Refused(RouteRefusal::Limit),
                    4 => RouteOutcome::Refused(RouteRefusal::Gone),
                    b => return Err(WireError::BadReason(b)),
                };
                Message::RouteReply(RouteReply {
                    nonce,
                    origin,
                    outcome,
                })
            }
            T_DIR_PUT => {
                let kind = match r.u8()? {
                    0 => PutKind::Route,
                    1 => PutKind::Replica,
                    2 => PutKind::Handover,
                    k => return Err(WireError::BadPutKind(k)),
                };
                Message::DirPut(DirPut {
                    kind,
                    copies: r.u8()?,
                    hops: r.u8()?,
                    record: r.record()?,
                })
            }
            T_DIR_GET => Message::DirGet(DirGet {
                nonce: r.u64()?,
                key: r.dir_key()?,
                path: r.ids("path hops", MAX_PATH)?,
            }),
            T_DIR_GET_REPLY => {
                let nonce = r.u64()?;
                let key = r.dir_key()?;
                let path = r.ids("path hops", MAX_PATH)?;
                let record = match r.u8()? {
                    0 => None,
                    1 => Some(r.record()?),
                    b => return Err(WireError::BadPresence(b)),
                };
                Message::DirGetReply(DirGetReply {
                    nonce,
                    key,
                    path,
                    record,
                })
            }
            T_DIR_SCAN => Message::DirScan(DirScan {
                nonce: r.u64()?,
                asker: r.node_id()?,
                cursor: r.node_id()?,
                seq: r.u16()?,
            }),
            T_DIR_SCAN_PAGE => {
                let nonce = r.u64()?;
                let asker = r.node_id()?;
                let seq = r.u16()?;
                let part = r.u8()?;
                let parts = r.u8()?;
                let flags = r.u8()?;
                let hops = r.u8()?;
                let n = r.count("page records", MAX_PAGE_RECORDS)?;
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    records.push(r.record()?);
                }
                Message::DirScanPage(DirScanPage {
                    nonce,
                    asker,
                    seq,
                    part,
                    parts,
                    last: flags & F_LAST_PAGE != 0,
                    hops,
                    records,
                })
            }
            t => return Err(WireError::UnknownType(t)),
        };
        r.finish()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hello_golden_bytes() {
        let m = Message::Hello(Hello {
            node_id: NodeId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            name: "ab".into(),
            role: Role::Introducer,
            addrs: vec![sa("192.0.2.1:4910")],
            mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            relays: false,
            bridge: false,
            symmetric_nat: false,
            aegis_hops: false,
        });
        let b = m.encode().unwrap();
        let mut want = vec![1, 1];
        want.extend(1..=16u8);
        want.extend([
            0x03, 2, 0, 0, 0, 0, 1, 2, b'a', b'b', 1, 4, 192, 0, 2, 1, 0x13, 0x2e,
        ]);
        assert_eq!(b, want);
        assert_eq!(Message::decode(&b).unwrap(), m);
        // The bridge flag is bit 0x08 of the flags byte.
        let Message::Hello(mut h) = m else {
            unreachable!()
        };
        h.bridge = true;
        let b = Message::Hello(h.clone()).encode().unwrap();
        assert_eq!(b[18], 0x03 | 0x08);
        assert_eq!(Message::decode(&b).unwrap(), Message::Hello(h.clone()));
        // Behind a symmetric NAT: bit 0x10.
        h.symmetric_nat = true;
        let b = Message::Hello(h.clone()).encode().unwrap();
        assert_eq!(b[18], 0x03 | 0x08 | 0x10);
        assert_eq!(Message::decode(&b).unwrap(), Message::Hello(h.clone()));
        // Takes AEGIS-128L hop tags: bit 0x20.
        h.aegis_hops = true;
        let b = Message::Hello(h.clone()).encode().unwrap();
        assert_eq!(b[18], 0x03 | 0x08 | 0x10 | 0x20);
        assert_eq!(Message::decode(&b).unwrap(), Message::Hello(h));
    }

    #[test]
    fn moved_golden_bytes() {
        let m = Message::Moved {
            node: NodeId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            addr: sa("198.51.100.20:4910"),
        };
        let b = m.encode().unwrap();
        let mut want = vec![1, 0x0c];
        want.extend(1..=16u8);
        want.extend([4, 198, 51, 100, 20, 0x13, 0x2e]);
        assert_eq!(b, want);
        assert_eq!(Message::decode(&b).unwrap(), m);
        // Truncated, trailing, bad family: errors, never panics.
        for n in 0..b.len() {
            assert!(Message::decode(&b[..n]).is_err());
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(Message::decode(&long), Err(WireError::TrailingBytes(1)));
        let mut fam = b.clone();
        fam[18] = 5;
        assert_eq!(Message::decode(&fam), Err(WireError::BadFamily(5)));
        let v6 = Message::Moved {
            node: NodeId(7),
            addr: sa("[2001:db8::1]:1"),
        };
        let b6 = v6.encode().unwrap();
        assert_eq!(b6.len(), 2 + 16 + 1 + 16 + 2);
        assert_eq!(Message::decode(&b6).unwrap(), v6);
    }

    #[test]
    fn route_messages_golden_bytes() {
        let setup = Message::RouteSetup(RouteSetup {
            nonce: 0x1122_3344_5566_7788,
            origin: NodeId(1),
            target: NodeId(2),
            relays_left: 2,
            id: 0xa1b2_c3d4,
            key: [0x5a; 32],
            path: vec![NodeId(3)],
            hop_mac: HopMac::AesGcm,
        });
        let b = setup.encode().unwrap();
        let mut want = vec![1, 0x0d, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
        want.extend(NodeId(1).to_bytes());
        want.extend(NodeId(2).to_bytes());
        want.extend([2, 0xa1, 0xb2, 0xc3, 0xd4]);
        want.extend([0x5a; 32]);
        want.push(1);
        want.extend(NodeId(3).to_bytes());
        assert_eq!(b, want);
        assert_eq!(Message::decode(&b).unwrap(), setup);
        // The key never shows in logs.
        assert!(!format!("{setup:?}").contains("90, 90"));
        // AEGIS-128L hop tags: the same bytes under type 0x14, which a node
        // of the version before refuses (it is never sent one).
        let Message::RouteSetup(mut aegis) = setup.clone() else {
            unreachable!()
        };
        aegis.hop_mac = HopMac::Aegis128L;
        let aegis = Message::RouteSetup(aegis);
        let b2 = aegis.encode().unwrap();
        assert_eq!(b2[1], 0x14);
        assert_eq!(b2[2..], want[2..]);
        assert_eq!(Message::decode(&b2).unwrap(), aegis);
        let too_long = Message::RouteSetup(RouteSetup {
            nonce: 0,
            origin: NodeId(1),
            target: NodeId(2),
            relays_left: 0,
            id: 1,
            key: [0; 32],
            path: vec![NodeId(3); MAX_ROUTE_RELAYS + 1],
            hop_mac: HopMac::AesGcm,
        });
        assert!(too_long.encode().is_err());
        let refused = Message::RouteReply(RouteReply {
            nonce: 9,
            origin: NodeId(1),
            outcome: RouteOutcome::Refused(RouteRefusal::Limit),
        });
        let b = refused.encode().unwrap();
        assert_eq!(b.len(), 2 + 8 + 16 + 1);
        assert_eq!(b[b.len() - 1], 3);
        assert_eq!(Message::decode(&b).unwrap(), refused);
        let mut bad = b.clone();
        *bad.last_mut().unwrap() = 9;
        assert_eq!(Message::decode(&bad), Err(WireError::BadReason(9)));
    }

    #[test]
    fn member_left_and_leaving_golden() {
        let b = Message::MemberLeft(NodeId(1)).encode().unwrap();
        assert_eq!(b.len(), 18);
        assert_eq!(&b[..2], &[1, 4]);
        assert_eq!(b[17], 1);
        assert_eq!(Message::Leaving.encode().unwrap(), vec![1, 5]);
    }

    #[test]
    fn symphony_messages_golden() {
        let l = Message::Lookup(Lookup {
            nonce: 0x0102,
            target: NodeId(0xAB),
            path: vec![NodeId(1), NodeId(2)],
        });
        let b = l.encode().unwrap();
        assert_eq!(b.len(), 2 + 8 + 16 + 1 + 32);
        assert_eq!(&b[..2], &[1, 7]);
        assert_eq!(&b[8..10], &[1, 2]);
        assert_eq!(b[25], 0xAB);
        assert_eq!(b[26], 2);
        assert_eq!(b[42], 1);
        assert_eq!(b[58], 2);
        assert_eq!(Message::decode(&b).unwrap(), l);
        let r = Message::LookupReply(LookupReply {
            nonce: 7,
            target: NodeId(9),
            path: vec![],
            members: vec![],
        });
        let b = r.encode().unwrap();
        assert_eq!(b.len(), 2 + 8 + 16 + 1 + 1);
        assert_eq!(&b[..2], &[1, 8]);
        assert_eq!(Message::decode(&b).unwrap(), r);
        assert_eq!(
            Message::LinkRequest(LinkWant::Long).encode().unwrap(),
            vec![1, 9, 2]
        );
        let rej = Message::LinkReject {
            kind: LinkWant::Long,
            reason: RejectReason::Capacity,
        };
        assert_eq!(rej.encode().unwrap(), vec![1, 0x0a, 2, 1]);
        assert_eq!(Message::decode(&[1, 0x0a, 2, 1]).unwrap(), rej);
        assert_eq!(Message::Ring(vec![]).encode().unwrap(), vec![1, 0x0b, 0]);
        assert_eq!(Message::decode(&[1, 9, 4]), Err(WireError::BadLinkKind(4)));
        assert_eq!(
            Message::decode(&[1, 0x0a, 2, 0]),
            Err(WireError::BadReason(0))
        );
        // Counts above their bounds are refused before allocating.
        assert!(matches!(
            Message::decode(&[1, 0x0b, 33]),
            Err(WireError::TooMany { .. })
        ));
        let mut b = vec![1, 7];
        b.extend([0u8; 24]);
        b.push(65);
        assert!(matches!(
            Message::decode(&b),
            Err(WireError::TooMany { .. })
        ));
    }

    /// A `Ring` with one member whose only address is relayed (origin 2),
    /// as in the fuzz seed `seed-ring-relayed`; origin 3 is an error.
    #[test]
    fn relayed_address_golden() {
        let mut b = vec![1, 0x0b, 1];
        b.extend(1..=16u8);
        b.extend([2, 1, b'r', 1, 2, 4, 192, 0, 2, 9, 0x13, 0x2e]);
        let m = Message::Ring(vec![Member {
            node_id: NodeId(u128::from_be_bytes(std::array::from_fn(|i| i as u8 + 1))),
            name: "r".into(),
            role: Role::Node,
            has_tap: true,
            addrs: vec![TaggedAddr {
                origin: AddrOrigin::Relayed,
                addr: "192.0.2.9:4910".parse().unwrap(),
            }],
        }]);
        assert_eq!(m.encode().unwrap(), b);
        assert_eq!(Message::decode(&b).unwrap(), m);
        b[23] = 3;
        assert_eq!(Message::decode(&b), Err(WireError::BadOrigin(3)));
    }

    /// The directory messages as in the fuzz seeds `seed-dir-*` and the
    /// examples of docs/directory.md "Messages".
    #[test]
    fn directory_messages_golden() {
        let id16: Vec<u8> = (1..=16u8).collect();
        let rec = Record {
            key: "node:ab".into(),
            subject: NodeId::from_bytes(std::array::from_fn(|i| i as u8 + 1)),
            public_key: [0x11; 32],
            version: 3,
            expires_unix: 1_700_000_000,
            body: vec![1, 2],
            signature: [0x22; 64],
        };
        let rb = rec.encode().unwrap();
        assert_eq!(rb.len(), 1 + 7 + 16 + 32 + 8 + 8 + 2 + 2 + 64);
        let check = |m: Message, want: Vec<u8>| {
            assert_eq!(m.encode().unwrap(), want, "{m:?}");
            assert_eq!(Message::decode(&want).unwrap(), m);
        };
        let mut want = vec![1, 0x0f, 1, 3, 0];
        want.extend(&rb);
        check(
            Message::DirPut(DirPut {
                kind: PutKind::Replica,
                copies: 3,
                hops: 0,
                record: rec.clone(),
            }),
            want,
        );
        let mut want = vec![1, 0x10, 0, 0, 0, 0, 0, 0, 0, 7, 7];
        want.extend(b"name:ab");
        want.push(1);
        want.extend(&id16);
        check(
            Message::DirGet(DirGet {
                nonce: 7,
                key: "name:ab".into(),
                path: vec![rec.subject],
            }),
            want,
        );
        let mut want = vec![1, 0x11, 0, 0, 0, 0, 0, 0, 0, 7, 7];
        want.extend(b"node:ab");
        want.push(1);
        want.extend(&id16);
        want.push(1);
        want.extend(&rb);
        check(
            Message::DirGetReply(DirGetReply {
                nonce: 7,
                key: "node:ab".into(),
                path: vec![rec.subject],
                record: Some(rec.clone()),
            }),
            want,
        );
        let mut want = vec![1, 0x12, 0, 0, 0, 0, 0, 0, 0, 9];
        want.extend(&id16);
        want.extend(17..=32u8);
        want.extend([0, 4]);
        check(
            Message::DirScan(DirScan {
                nonce: 9,
                asker: rec.subject,
                cursor: NodeId::from_bytes(std::array::from_fn(|i| i as u8 + 17)),
                seq: 4,
            }),
            want,
        );
        let mut want = vec![1, 0x13, 0, 0, 0, 0, 0, 0, 0, 9];
        want.extend(&id16);
        want.extend([0, 4, 0, 1, 1, 2, 1]);
        want.extend(&rb);
        let page = DirScanPage {
            nonce: 9,
            asker: rec.subject,
            seq: 4,
            part: 0,
            parts: 1,
            last: true,
            hops: 2,
            records: vec![rec.clone()],
        };
        check(Message::DirScanPage(page.clone()), want.clone());
        // Bad put kind, bad presence byte, too many page records, a key
        // with a space: errors.
        let mut b = Message::DirPut(DirPut {
            kind: PutKind::Route,
            copies: 0,
            hops: 0,
            record: rec.clone(),
        })
        .encode()
        .unwrap();
        b[2] = 3;
        assert_eq!(Message::decode(&b), Err(WireError::BadPutKind(3)));
        let mut b = Message::DirGetReply(DirGetReply {
            nonce: 7,
            key: "k".into(),
            path: vec![],
            record: None,
        })
        .encode()
        .unwrap();
        assert_eq!(b.len(), 2 + 8 + 2 + 1 + 1);
        *b.last_mut().unwrap() = 2;
        assert_eq!(Message::decode(&b), Err(WireError::BadPresence(2)));
        let mut many = want.clone();
        many[32] = (MAX_PAGE_RECORDS + 1) as u8;
        assert!(matches!(
            Message::decode(&many),
            Err(WireError::TooMany { .. })
        ));
        let mut sp = vec![1, 0x10, 0, 0, 0, 0, 0, 0, 0, 7, 3];
        sp.extend(b"a b");
        sp.push(0);
        assert_eq!(Message::decode(&sp), Err(WireError::BadKey));
        let too_many = Message::DirScanPage(DirScanPage {
            records: vec![rec; MAX_PAGE_RECORDS + 1],
            ..page
        });
        assert!(matches!(too_many.encode(), Err(WireError::TooMany { .. })));
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(Message::decode(&[]), Err(WireError::Truncated));
        assert_eq!(Message::decode(&[2, 1]), Err(WireError::BadVersion(2)));
        assert_eq!(
            Message::decode(&[1, 0x7f]),
            Err(WireError::UnknownType(0x7f))
        );
        assert_eq!(
            Message::decode(&[1, 5, 0]),
            Err(WireError::TrailingBytes(1))
        );
        // Members count above the bound is refused before allocating.
        assert!(matches!(
            Message::decode(&[1, 2, 0xff, 0xff]),
            Err(WireError::TooMany { .. })
        ));
        // Hello with a 65-byte name.
        let mut b = vec![1, 1];
        b.extend([0u8; 16]);
        b.extend([0, 65]);
        b.extend([b'a'; 65]);
        b.push(0);
        assert_eq!(Message::decode(&b), Err(WireError::NameTooLong(65)));
        // Invalid UTF-8 name.
        let mut b = vec![1, 1];
        b.extend([0u8; 16]);
        b.extend([0, 1, 0xff, 0]);
        assert_eq!(Message::decode(&b), Err(WireError::BadUtf8));
        // Encoding refuses oversize fields.
        let long = Message::Hello(Hello {
            node_id: NodeId(0),
            name: "x".repeat(65),
            role: Role::Node,
            addrs: vec![],
            mac: None,
            relays: false,
            bridge: false,
            symmetric_nat: false,
            aegis_hops: false,
        });
        assert_eq!(long.encode(), Err(WireError::NameTooLong(65)));
        let many = Message::Neighbours(vec![NodeId(0); MAX_NEIGHBOURS + 1]);
        assert!(matches!(many.encode(), Err(WireError::TooMany { .. })));
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::from((Ipv6Addr::from(ip), p))),
        ]
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-z0-9é-]{0,20}".prop_filter("fits", |s| s.len() <= MAX_NAME)
    }

    fn arb_role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Node), Just(Role::Introducer)]
    }

    fn arb_member() -> impl Strategy<Value = Member> {
        (
            any::<u128>(),
            arb_name(),
            arb_role(),
            any::<bool>(),
            proptest::collection::vec(
                (0..3u8, arb_addr()).prop_map(|(o, addr)| TaggedAddr {
                    origin: match o {
                        0 => AddrOrigin::Local,
                        1 => AddrOrigin::Reflexive,
                        _ => AddrOrigin::Relayed,
                    },
                    addr,
                }),
                0..=MAX_ADDRS,
            ),
        )
            .prop_map(|(id, name, role, has_tap, addrs)| Member {
                node_id: NodeId(id),
                name,
                role,
                has_tap,
                addrs,
            })
    }

    fn arb_want() -> impl Strategy<Value = LinkWant> {
        prop_oneof![
            Just(LinkWant::Release),
            Just(LinkWant::Ring),
            Just(LinkWant::Long),
            Just(LinkWant::OnDemand)
        ]
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            "[!-~]{1,40}",
            any::<u128>(),
            any::<[u8; 32]>(),
            (any::<u64>(), any::<u64>()),
            proptest::collection::vec(any::<u8>(), 0..100),
            any::<[u8; 32]>(),
        )
            .prop_map(|(key, s, public_key, (version, expires_unix), body, sig)| {
                let mut signature = [0u8; 64];
                signature[..32].copy_from_slice(&sig);
                signature[32..].copy_from_slice(&public_key);
                Record {
                    key,
                    subject: NodeId(s),
                    public_key,
                    version,
                    expires_unix,
                    body,
                    signature,
                }
            })
    }

    fn arb_dir_message() -> impl Strategy<Value = Message> {
        let ids = || proptest::collection::vec(any::<u128>().prop_map(NodeId), 0..6);
        prop_oneof![
            (0..3u8, any::<u8>(), any::<u8>(), arb_record()).prop_map(
                |(k, copies, hops, record)| {
                    Message::DirPut(DirPut {
                        kind: match k {
                            0 => PutKind::Route,
                            1 => PutKind::Replica,
                            _ => PutKind::Handover,
                        },
                        copies,
                        hops,
                        record,
                    })
                }
            ),
            (any::<u64>(), "[!-~]{1,96}", ids())
                .prop_map(|(nonce, key, path)| Message::DirGet(DirGet { nonce, key, path })),
            (
                any::<u64>(),
                "[!-~]{1,96}",
                ids(),
                proptest::option::of(arb_record())
            )
                .prop_map(|(nonce, key, path, record)| Message::DirGetReply(
                    DirGetReply {
                        nonce,
                        key,
                        path,
                        record
                    }
                )),
            (any::<u64>(), any::<u128>(), any::<u128>(), any::<u16>()).prop_map(
                |(nonce, a, c, seq)| Message::DirScan(DirScan {
                    nonce,
                    asker: NodeId(a),
                    cursor: NodeId(c),
                    seq
                })
            ),
            (
                (any::<u64>(), any::<u128>(), any::<u16>()),
                (any::<u8>(), any::<u8>(), any::<bool>(), any::<u8>()),
                proptest::collection::vec(arb_record(), 0..4)
            )
                .prop_map(|((nonce, a, seq), (part, parts, last, hops), records)| {
                    Message::DirScanPage(DirScanPage {
                        nonce,
                        asker: NodeId(a),
                        seq,
                        part,
                        parts,
                        last,
                        hops,
                        records,
                    })
                }),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            arb_dir_message(),
            (
                any::<u128>(),
                arb_name(),
                arb_role(),
                proptest::collection::vec(arb_addr(), 0..=MAX_ADDRS),
                proptest::option::of(any::<[u8; 6]>()),
            )
                .prop_map(|(id, name, role, addrs, mac)| Message::Hello(Hello {
                    node_id: NodeId(id),
                    name,
                    role,
                    addrs,
                    relays: mac.is_some_and(|m| m[0] & 1 == 1),
                    bridge: mac.is_some_and(|m| m[1] & 1 == 1),
                    symmetric_nat: mac.is_some_and(|m| m[2] & 1 == 1),
                    aegis_hops: mac.is_some_and(|m| m[3] & 1 == 1),
                    mac: mac.map(Mac),
                })),
            proptest::collection::vec(arb_member(), 0..8).prop_map(Message::Members),
            arb_member().prop_map(Message::MemberJoined),
            any::<u128>().prop_map(|i| Message::MemberLeft(NodeId(i))),
            Just(Message::Leaving),
            proptest::collection::vec(any::<u128>().prop_map(NodeId), 0..=MAX_NEIGHBOURS)
                .prop_map(Message::Neighbours),
            (
                any::<u64>(),
                any::<u128>(),
                proptest::collection::vec(any::<u128>().prop_map(NodeId), 0..=MAX_PATH)
            )
                .prop_map(|(nonce, t, path)| Message::Lookup(Lookup {
                    nonce,
                    target: NodeId(t),
                    path
                })),
            (
                any::<u64>(),
                any::<u128>(),
                proptest::collection::vec(any::<u128>().prop_map(NodeId), 0..8),
                proptest::collection::vec(arb_member(), 0..6)
            )
                .prop_map(|(nonce, t, path, members)| Message::LookupReply(
                    LookupReply {
                        nonce,
                        target: NodeId(t),
                        path,
                        members
                    }
                )),
            arb_want().prop_map(Message::LinkRequest),
            arb_want().prop_map(|kind| Message::LinkReject {
                kind,
                reason: RejectReason::Capacity
            }),
            proptest::collection::vec(arb_member(), 0..6).prop_map(Message::Ring),
            (any::<u128>(), arb_addr()).prop_map(|(n, addr)| Message::Moved {
                node: NodeId(n),
                addr
            }),
            (
                (any::<u64>(), any::<u128>(), any::<u128>(), any::<u8>()),
                (any::<u32>(), any::<[u8; 32]>(), any::<bool>()),
                proptest::collection::vec(any::<u128>().prop_map(NodeId), 0..=MAX_ROUTE_RELAYS)
            )
                .prop_map(|((nonce, o, t, left), (id, key, aegis), path)| {
                    Message::RouteSetup(RouteSetup {
                        nonce,
                        origin: NodeId(o),
                        target: NodeId(t),
                        relays_left: left,
                        id,
                        key,
                        path,
                        hop_mac: if aegis {
                            HopMac::Aegis128L
                        } else {
                            HopMac::AesGcm
                        },
                    })
                }),
            (
                any::<u64>(),
                any::<u128>(),
                proptest::option::of((
                    any::<u32>(),
                    proptest::collection::vec(any::<u128>().prop_map(NodeId), 0..=MAX_ROUTE_RELAYS)
                )),
                1u8..=4
            )
                .prop_map(|(nonce, o, ok, why)| Message::RouteReply(RouteReply {
                    nonce,
                    origin: NodeId(o),
                    outcome: match ok {
                        Some((id, relays)) => RouteOutcome::Accepted { id, relays },
                        None => RouteOutcome::Refused(match why {
                            1 => RouteRefusal::NoPath,
                            2 => RouteRefusal::RelayDisabled,
                            3 => RouteRefusal::Limit,
                            _ => RouteRefusal::Gone,
                        }),
                    },
                })),
        ]
    }

    proptest! {
        #[test]
        fn control_round_trip(m in arb_message()) {
            let b = m.encode().unwrap();
            prop_assert_eq!(Message::decode(&b).unwrap(), m);
            // Every strict prefix is refused (no message is a prefix of another).
            for cut in 0..b.len() {
                prop_assert!(Message::decode(&b[..cut]).is_err());
            }
        }

        #[test]
        fn mutated_messages_never_panic(m in arb_message(), idx: usize, byte: u8) {
            let mut b = m.encode().unwrap();
            if !b.is_empty() {
                let i = idx % b.len();
                b[i] = byte;
            }
            let _ = Message::decode(&b);
        }
    }
}
