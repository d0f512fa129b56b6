//! What `ringlan topology` shows: the network as this node sees it
//! (`docs/topology.md`).
//!
//! - **Members** come from the directory scan `ringlan members` makes
//!   (every `node:` record on the ring): name, node id, NAT kind, relay
//!   capability, overlay IPs, ring position (the node id as a fraction of
//!   the ring).
//! - **Links** come from the members themselves: each publishes the links
//!   it keeps in its `node:` record (`body::LinkClaim`: the peer, why the
//!   link exists, direct / LAN / relayed and the first relay), signed by
//!   it. This node's own links are read live from its overlay links and
//!   sessions ([`Node::own_links`]), so they are always the freshest.
//! - [`build`] merges both into a [`Topology`], a pure function; the
//!   renderers ([`Topology::render`] text, [`dot::render`] Graphviz,
//!   [`svg::render`] a ring drawing) are pure functions of that value, and
//!   its JSON is `ringlan topology --format json` (pinned by
//!   `tests::json_shape`).
//!
//! Merging: a link is one unordered pair of members; either end (or both)
//! may report it. Its kind is the strongest either end gives (ring before
//! long before introducer before on-demand before other: a successor link
//! of one end is a predecessor link of the other, a long link of one end
//! is an incoming long link of the other); its path is the one the
//! freshest report gives (this node's own, live, first; then the most
//! recently published record). Claims naming a node id prefix no member
//! has, or one two members share, are left out: a member can only ever
//! draw its own links.

pub mod dot;
pub mod svg;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Instant;

use ringlan_tunnel::{NodeId, Path, SessionState};
use serde::{Deserialize, Serialize};

use crate::candidates::in_local_subnet;
use crate::directory::body::{LinkClaim, LinkRole, PathClass, MAX_LINKS};
use crate::directory::Member;
use crate::status::{format_duration, short_id, NatBehaviour};
use crate::Node;

/// The network as one node sees it (the `--format json` shape,
/// `docs/topology.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Every part of the ring answered the directory scan in time
    /// (otherwise members and their links may be missing).
    pub complete: bool,
    /// The answering node's clock (seconds since the Unix epoch).
    pub now_unix: u64,
    /// The answering node's id.
    pub this_node: String,
    /// In ring order (ascending node id, i.e. position).
    pub members: Vec<TopoMember>,
    /// Sorted by `a`, then `b`.
    pub links: Vec<TopoLink>,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopoMember {
    pub name: String,
    /// 32 hex digits.
    pub node_id: String,
    /// Where it sits on the ring: its node id as a fraction of the id
    /// space, in `[0, 1)`.
    pub position: f64,
    pub nat: NatBehaviour,
    /// It relays for others (its record says so).
    pub relay: bool,
    /// Some member keeps a link to it as to an introducer.
    pub introducer: bool,
    /// Overlay IPs, ascending.
    pub addresses: Vec<IpAddr>,
    pub this_node: bool,
    /// Found in the directory; `false`: known only from this node's own
    /// session with it (no record found; NAT kind unknown).
    pub listed: bool,
    /// When it last published its record (`None` when not listed).
    pub last_seen_unix: Option<u64>,
}

/// Why two members are linked (the strongest reason either end gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkKind {
    /// Ring successor / predecessor.
    Ring,
    /// A Symphony long link.
    Long,
    /// A session with an introducer.
    Introducer,
    /// A direct session for unicast traffic.
    OnDemand,
    /// Wanted by neither end (closing).
    Other,
}

impl LinkKind {
    fn of(role: LinkRole) -> LinkKind {
        match role {
            LinkRole::Successor | LinkRole::Predecessor => LinkKind::Ring,
            LinkRole::Long => LinkKind::Long,
            LinkRole::Introducer => LinkKind::Introducer,
            LinkRole::OnDemand => LinkKind::OnDemand,
            LinkRole::Other => LinkKind::Other,
        }
    }

    /// The name in JSON, CSS classes and the legend.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Ring => "ring",
            LinkKind::Long => "long",
            LinkKind::Introducer => "introducer",
            LinkKind::OnDemand => "on-demand",
            LinkKind::Other => "other",
        }
    }
}

impl PathClass {
    /// The name in JSON, CSS classes and the legend.
    pub fn as_str(self) -> &'static str {
        match self {
            PathClass::Direct => "direct",
            PathClass::Lan => "lan",
            PathClass::Relayed => "relayed",
        }
    }
}

/// One link between two members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopoLink {
    /// The lower node id of the two.
    pub a: String,
    pub b: String,
    pub kind: LinkKind,
    pub path: PathClass,
    /// The first relay (node id) of a relayed link, when known.
    pub via: Option<String>,
    /// The ends that report it (node ids, ascending).
    pub reported_by: Vec<String>,
}

/// One of this node's links, read live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnLink {
    pub peer: NodeId,
    /// From the peer's `Hello` (empty until it arrived).
    pub name: String,
    pub role: LinkRole,
    pub path: PathClass,
    /// The first relay of a relayed path, when the node knows it.
    pub relay: Option<NodeId>,
}

/// A node id as a fraction of the ring.
pub fn position(id: NodeId) -> f64 {
    // The top 64 bits are precise enough for any drawing.
    (id.0 >> 64) as f64 / 18_446_744_073_709_551_616.0
}

/// The claims a member publishes for `links` (ordered by role, then
/// peer: ring links first), at most [`MAX_LINKS`]; a relay is named by
/// its index when it is in the list.
pub fn claims_of(links: &[OwnLink]) -> Vec<LinkClaim> {
    let kept = &links[..links.len().min(MAX_LINKS)];
    kept.iter()
        .map(|l| LinkClaim {
            peer: LinkClaim::prefix(l.peer),
            role: l.role,
            path: l.path,
            relay: match l.path {
                PathClass::Relayed => l
                    .relay
                    .and_then(|r| kept.iter().position(|k| k.peer == r))
                    .map(|i| i as u8),
                _ => None,
            },
        })
        .collect()
}

/// One end's report of one link, while merging.
struct Claim {
    from: NodeId,
    to: NodeId,
    role: LinkRole,
    path: PathClass,
    via: Option<NodeId>,
    /// Higher is fresher: the record's publication time, `u64::MAX` for
    /// this node's live links.
    fresh: u64,
}

/// The topology from the directory scan's `members` (this node's own
/// record among them or not) and this node's live links `own` (see the
/// module doc for the merge).
pub fn build(
    now_unix: u64,
    complete: bool,
    me: NodeId,
    members: &[Member],
    own: &[OwnLink],
) -> Topology {
    // One record per member: the newest.
    let mut by_id: BTreeMap<NodeId, &Member> = BTreeMap::new();
    for m in members {
        let e = by_id.entry(m.body.node_id).or_insert(m);
        if m.body.published_unix > e.body.published_unix {
            *e = m;
        }
    }
    // Node id prefixes -> members; `None` for a prefix two ids share.
    let mut prefixes: HashMap<u64, Option<NodeId>> = HashMap::new();
    let ids = by_id
        .keys()
        .copied()
        .chain(own.iter().map(|l| l.peer))
        .chain(std::iter::once(me));
    for id in ids {
        let e = prefixes.entry(LinkClaim::prefix(id)).or_insert(Some(id));
        if *e != Some(id) {
            *e = None;
        }
    }
    let resolve = |p: u64| prefixes.get(&p).copied().flatten();
    let mut claims: Vec<Claim> = Vec::new();
    for m in by_id.values().filter(|m| m.body.node_id != me) {
        let from = m.body.node_id;
        for c in &m.body.links {
            let Some(to) = resolve(c.peer).filter(|t| *t != from) else {
                continue;
            };
            let via = c
                .relay
                .and_then(|r| m.body.links.get(usize::from(r)))
                .and_then(|l| resolve(l.peer));
            claims.push(Claim {
                from,
                to,
                role: c.role,
                path: c.path,
                via,
                fresh: m.body.published_unix,
            });
        }
    }
    for l in own.iter().filter(|l| l.peer != me) {
        claims.push(Claim {
            from: me,
            to: l.peer,
            role: l.role,
            path: l.path,
            via: l.relay,
            fresh: u64::MAX,
        });
    }
    let introducers: BTreeSet<NodeId> = claims
        .iter()
        .filter(|c| c.role == LinkRole::Introducer)
        .map(|c| c.to)
        .collect();
    let mut pairs: BTreeMap<(NodeId, NodeId), Vec<&Claim>> = BTreeMap::new();
    for c in &claims {
        pairs
            .entry((c.from.min(c.to), c.from.max(c.to)))
            .or_default()
            .push(c);
    }
    let links = pairs
        .into_iter()
        .filter_map(|((a, b), cs)| {
            let kind = cs.iter().map(|c| LinkKind::of(c.role)).min()?;
            let best = cs.iter().max_by_key(|c| c.fresh)?;
            let reported_by: BTreeSet<NodeId> = cs.iter().map(|c| c.from).collect();
            Some(TopoLink {
                a: a.to_string(),
                b: b.to_string(),
                kind,
                path: best.path,
                via: best.via.map(|v| v.to_string()),
                reported_by: reported_by.iter().map(|n| n.to_string()).collect(),
            })
        })
        .collect();
    let mut topo_members: Vec<TopoMember> = by_id
        .values()
        .map(|m| {
            let id = m.body.node_id;
            TopoMember {
                name: m.body.name.clone(),
                node_id: id.to_string(),
                position: position(id),
                nat: m.body.nat,
                relay: m.body.relay,
                introducer: introducers.contains(&id),
                addresses: m.body.ips.clone(),
                this_node: id == me,
                listed: true,
                last_seen_unix: Some(m.body.published_unix),
            }
        })
        .collect();
    let unlisted: BTreeMap<NodeId, &OwnLink> = own
        .iter()
        .filter(|l| l.peer != me && !by_id.contains_key(&l.peer))
        .map(|l| (l.peer, l))
        .collect();
    for (id, l) in unlisted {
        topo_members.push(TopoMember {
            name: if l.name.is_empty() {
                id.short()
            } else {
                l.name.clone()
            },
            node_id: id.to_string(),
            position: position(id),
            nat: NatBehaviour::Unknown,
            relay: false,
            introducer: introducers.contains(&id),
            addresses: Vec::new(),
            this_node: false,
            listed: false,
            last_seen_unix: None,
        });
    }
    // 32 lowercase hex digits: text order is id order.
    topo_members.sort_by(|x, y| x.node_id.cmp(&y.node_id));
    Topology {
        complete,
        now_unix,
        this_node: me.to_string(),
        members: topo_members,
        links,
    }
}

impl Topology {
    /// The member with node id `id`.
    pub fn member(&self, id: &str) -> Option<&TopoMember> {
        self.members.iter().find(|m| m.node_id == id)
    }

    /// A member's name, or the short id of a node that is not a member.
    pub fn name_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.member(id).map_or(short_id(id), |m| m.name.as_str())
    }

    /// How a link travels, for people: `lan`, `direct`, `relayed via X`.
    pub fn path_text(&self, l: &TopoLink) -> String {
        match (&l.path, &l.via) {
            (PathClass::Relayed, Some(v)) => format!("relayed via {}", self.name_of(v)),
            (PathClass::Relayed, None) => "relayed".into(),
            (p, _) => p.as_str().into(),
        }
    }

    /// The text `ringlan topology` prints: members in ring order, then
    /// the links.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let me = self.name_of(&self.this_node).to_string();
        let _ = writeln!(
            o,
            "topology seen from {me}: {} members, {} links{}",
            self.members.len(),
            self.links.len(),
            if self.complete {
                ""
            } else {
                " (incomplete: part of the ring did not answer in time)"
            }
        );
        let mut rows = vec![[
            "POSITION".to_string(),
            "NAME".into(),
            "NODE".into(),
            "NAT".into(),
            "ROLE".into(),
            "ADDRESSES".into(),
            "LAST SEEN".into(),
        ]];
        for m in &self.members {
            let mut role = Vec::new();
            if m.introducer {
                role.push("introducer");
            }
            if m.relay {
                role.push("relay");
            }
            let addrs: Vec<String> = m.addresses.iter().map(|a| a.to_string()).collect();
            rows.push([
                format!("{:.4}", m.position),
                if m.this_node {
                    format!("{} (this node)", m.name)
                } else {
                    m.name.clone()
                },
                short_id(&m.node_id).to_string(),
                m.nat.to_string(),
                if role.is_empty() {
                    "-".into()
                } else {
                    role.join(",")
                },
                if addrs.is_empty() {
                    "-".into()
                } else {
                    addrs.join(" ")
                },
                match m.last_seen_unix {
                    Some(t) => format!("{} ago", format_duration(self.now_unix.saturating_sub(t))),
                    None => "not listed".into(),
                },
            ]);
        }
        table(&mut o, &rows);
        o.push('\n');
        let mut rows = vec![[
            "LINK".to_string(),
            "KIND".into(),
            "PATH".into(),
            "REPORTED BY".into(),
        ]];
        for l in &self.links {
            let by: Vec<&str> = l.reported_by.iter().map(|r| self.name_of(r)).collect();
            rows.push([
                format!("{} -- {}", self.name_of(&l.a), self.name_of(&l.b)),
                l.kind.as_str().into(),
                self.path_text(l),
                by.join(", "),
            ]);
        }
        table(&mut o, &rows);
        o
    }
}

/// Left-aligned columns, two spaces apart, no trailing blanks.
fn table<const N: usize>(o: &mut String, rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (c, w) in r.iter().zip(widths) {
            let _ = write!(line, "{c:<w$}  ");
        }
        let _ = writeln!(o, "{}", line.trim_end());
    }
}

impl Node {
    /// This node's links now: every overlay link with an open, admitted
    /// session, why it exists and how its packets travel; ordered by role,
    /// then peer (what the `node:` record lists first).
    pub fn own_links(&self) -> Vec<OwnLink> {
        let mut v: Vec<OwnLink> = self
            .overlay
            .neighbours()
            .into_iter()
            .filter_map(|n| {
                let sid = self.peers.session_of(n.node)?;
                let info = self.endpoint.session_info(sid)?;
                if info.state != SessionState::Open || !self.adm.is_admitted(sid) {
                    return None;
                }
                let (path, relay) = match self.routes.view(n.node, info.path) {
                    Some(v) => (PathClass::Relayed, v.relays.first().copied()),
                    None => match info.path {
                        Path::Route(_) => (PathClass::Relayed, None),
                        Path::Direct(a) if in_local_subnet(&self.ifs, a.ip()) => {
                            (PathClass::Lan, None)
                        }
                        Path::Direct(_) => (PathClass::Direct, None),
                    },
                };
                Some(OwnLink {
                    peer: n.node,
                    name: n.name,
                    role: match n.kind {
                        ringlan_overlay::LinkKind::Successor => LinkRole::Successor,
                        ringlan_overlay::LinkKind::Predecessor => LinkRole::Predecessor,
                        ringlan_overlay::LinkKind::Long => LinkRole::Long,
                        ringlan_overlay::LinkKind::Introducer => LinkRole::Introducer,
                        ringlan_overlay::LinkKind::OnDemand => LinkRole::OnDemand,
                        ringlan_overlay::LinkKind::Other => LinkRole::Other,
                    },
                    path,
                    relay,
                })
            })
            .collect();
        v.sort_by_key(|l| (l.role, l.peer));
        v
    }

    /// The answer to `ringlan topology` from a [`crate::NodeEvent::Members`]
    /// scan: its members (this node added when it has not published yet)
    /// with their published links, and this node's live links.
    pub fn topology(&self, now: Instant, members: &[Member], complete: bool) -> Topology {
        let me = self.node_id();
        let mut all = members.to_vec();
        if !all.iter().any(|m| m.body.node_id == me) {
            all.push(self.own_member(now));
        }
        build(self.unix_now(now), complete, me, &all, &self.own_links())
    }
}

/// A topology of four members: three on a LAN with ring and long links,
/// one behind a symmetric NAT reached relayed via the relay-capable
/// introducer. Shared by the shape test, the renderers' tests and the
/// control socket's tests.
pub fn example() -> Topology {
    let id = |s: &str| s.to_string();
    let (intro, laptop, desktop, phone) = (
        id("00000000000000000000000000000001"),
        id("40000000000000000000000000000000"),
        id("80000000000000000000000000000000"),
        id("c0000000000000000000000000000000"),
    );
    let member = |name: &str, node_id: &str, position, nat, ip: &str| TopoMember {
        name: name.into(),
        node_id: node_id.into(),
        position,
        nat,
        relay: false,
        introducer: false,
        addresses: vec![ip.parse().unwrap()],
        this_node: false,
        listed: true,
        last_seen_unix: Some(1_796_300_000),
    };
    let link = |a: &str, b: &str, kind, path, via: Option<&str>, by: &[&str]| TopoLink {
        a: a.into(),
        b: b.into(),
        kind,
        path,
        via: via.map(str::to_string),
        reported_by: by.iter().map(|s| s.to_string()).collect(),
    };
    let mut members = vec![
        member(
            "intro",
            &intro,
            0.0,
            NatBehaviour::EndpointIndependent,
            "10.77.0.1",
        ),
        member(
            "laptop",
            &laptop,
            0.25,
            NatBehaviour::EndpointIndependent,
            "10.77.0.2",
        ),
        member(
            "desktop",
            &desktop,
            0.5,
            NatBehaviour::EndpointIndependent,
            "10.77.0.3",
        ),
        member(
            "phone",
            &phone,
            0.75,
            NatBehaviour::EndpointDependent,
            "10.77.0.4",
        ),
    ];
    members[0].relay = true;
    members[0].introducer = true;
    members[1].this_node = true;
    members[1].last_seen_unix = Some(1_796_300_090);
    Topology {
        complete: true,
        now_unix: 1_796_300_100,
        this_node: laptop.clone(),
        links: vec![
            link(
                &intro,
                &laptop,
                LinkKind::Ring,
                PathClass::Lan,
                None,
                &[&intro, &laptop],
            ),
            link(
                &intro,
                &desktop,
                LinkKind::Long,
                PathClass::Lan,
                None,
                &[&desktop],
            ),
            link(
                &intro,
                &phone,
                LinkKind::Ring,
                PathClass::Direct,
                None,
                &[&intro, &phone],
            ),
            link(
                &laptop,
                &desktop,
                LinkKind::Ring,
                PathClass::Lan,
                None,
                &[&laptop, &desktop],
            ),
            link(
                &desktop,
                &phone,
                LinkKind::Ring,
                PathClass::Relayed,
                Some(&intro),
                &[&desktop, &phone],
            ),
        ],
        members,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::body::tests::sample;

    /// The `--format json` shape, pinned (docs/topology.md shows it).
    #[test]
    fn json_shape() {
        let mut t = example();
        t.members.truncate(2);
        t.links.truncate(1);
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(
            j,
            concat!(
                r#"{"complete":true,"now_unix":1796300100,"this_node":"40000000000000000000000000000000","members":["#,
                r#"{"name":"intro","node_id":"00000000000000000000000000000001","position":0.0,"nat":"endpoint-independent","#,
                r#""relay":true,"introducer":true,"addresses":["10.77.0.1"],"this_node":false,"listed":true,"last_seen_unix":1796300000},"#,
                r#"{"name":"laptop","node_id":"40000000000000000000000000000000","position":0.25,"nat":"endpoint-independent","#,
                r#""relay":false,"introducer":false,"addresses":["10.77.0.2"],"this_node":true,"listed":true,"last_seen_unix":1796300090}],"#,
                r#""links":[{"a":"00000000000000000000000000000001","b":"40000000000000000000000000000000","kind":"ring","path":"lan","#,
                r#""via":null,"reported_by":["00000000000000000000000000000001","40000000000000000000000000000000"]}]}"#
            )
        );
        let back: Topology = serde_json::from_str(&j).unwrap();
        assert_eq!(back, t);
        let relayed = serde_json::to_string(&example().links[4]).unwrap();
        assert!(
            relayed.contains(
                r#""kind":"ring","path":"relayed","via":"00000000000000000000000000000001""#
            ),
            "{relayed}"
        );
    }

    fn member(id: u128, name: &str, published: u64, links: Vec<LinkClaim>) -> Member {
        let mut body = sample();
        body.node_id = NodeId(id);
        body.name = name.into();
        body.published_unix = published;
        body.links = links;
        Member {
            body,
            expires_unix: published + 600,
        }
    }

    fn claim(peer: u128, role: LinkRole, path: PathClass, relay: Option<u8>) -> LinkClaim {
        LinkClaim {
            peer: LinkClaim::prefix(NodeId(peer)),
            role,
            path,
            relay,
        }
    }

    const A: u128 = 0x1000 << 112;
    const B: u128 = 0x5000 << 112;
    const C: u128 = 0x9000 << 112;
    const D: u128 = 0xd000 << 112;

    #[test]
    fn links_merge_both_ends_and_own_links_win() {
        use LinkRole::*;
        use PathClass::*;
        let members = vec![
            // a: b is its successor (LAN), c relayed via b.
            member(
                A,
                "a",
                100,
                vec![
                    claim(B, Successor, Lan, None),
                    claim(C, OnDemand, Relayed, Some(0)),
                ],
            ),
            // b (this node) published something stale about a.
            member(B, "b", 50, vec![claim(A, Predecessor, Direct, None)]),
            // c: a long link to a (it sees it relayed, relay unlisted), a
            // claim about a node nobody knows, and one about itself.
            member(
                C,
                "c",
                120,
                vec![
                    claim(A, Long, Relayed, None),
                    claim(0x7777 << 112, Successor, Lan, None),
                    claim(C, Successor, Lan, None),
                ],
            ),
        ];
        let own = vec![
            OwnLink {
                peer: NodeId(A),
                name: "a".into(),
                role: Predecessor,
                path: Lan,
                relay: None,
            },
            // d has no record: drawn from our session only.
            OwnLink {
                peer: NodeId(D),
                name: "dee".into(),
                role: Introducer,
                path: Direct,
                relay: None,
            },
        ];
        let t = build(200, true, NodeId(B), &members, &own);
        let names: Vec<&str> = t.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "dee"]);
        assert!(t.members[1].this_node);
        assert!(!t.members[3].listed && t.members[3].introducer);
        assert_eq!(t.members[3].nat, NatBehaviour::Unknown);
        assert_eq!(t.members[2].position, 0.5625);
        let got: Vec<(String, String, LinkKind, PathClass, Option<String>, usize)> = t
            .links
            .iter()
            .map(|l| {
                (
                    t.name_of(&l.a).to_string(),
                    t.name_of(&l.b).to_string(),
                    l.kind,
                    l.path,
                    l.via.as_ref().map(|v| t.name_of(v).to_string()),
                    l.reported_by.len(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                // Our live view (LAN) beats our stale record and a's.
                ("a".into(), "b".into(), LinkKind::Ring, Lan, None, 2),
                // c's record is newer than a's: its path wins; the kind is
                // the strongest either end gives.
                ("a".into(), "c".into(), LinkKind::Long, Relayed, None, 2),
                (
                    "b".into(),
                    "dee".into(),
                    LinkKind::Introducer,
                    Direct,
                    None,
                    1
                ),
            ]
        );
        // a alone reports a-c: its relay is resolved through its list.
        let t = build(200, true, NodeId(B), &members[..2], &[]);
        let ac = t.links.iter().find(|l| l.b == NodeId(C).to_string());
        assert!(ac.is_none(), "c is not a member");
        let mut with_c = members.clone();
        with_c[2].body.links.clear();
        let t = build(200, false, NodeId(B), &with_c, &[]);
        let ac = t
            .links
            .iter()
            .find(|l| l.a == NodeId(A).to_string() && l.b == NodeId(C).to_string())
            .unwrap();
        assert_eq!(
            (ac.path, ac.via.as_deref()),
            (Relayed, Some(NodeId(B).to_string().as_str()))
        );
        assert_eq!(t.path_text(ac), "relayed via b");
    }

    #[test]
    fn own_claims_keep_ring_links_first_and_name_relays_by_index() {
        let mut own: Vec<OwnLink> = (0..40u128)
            .map(|i| OwnLink {
                peer: NodeId((i + 1) << 100),
                name: String::new(),
                role: if i < 4 {
                    LinkRole::Successor
                } else {
                    LinkRole::OnDemand
                },
                path: PathClass::Direct,
                relay: None,
            })
            .collect();
        own[5].path = PathClass::Relayed;
        own[5].relay = Some(NodeId(2 << 100));
        own[6].path = PathClass::Relayed;
        own[6].relay = Some(NodeId(40 << 100));
        let c = claims_of(&own);
        assert_eq!(c.len(), MAX_LINKS);
        assert_eq!(c[5].relay, Some(1));
        assert_eq!(c[6].relay, None, "the relay's link is past the bound");
        assert!(c[..4].iter().all(|l| l.role == LinkRole::Successor));
        let mut body = sample();
        body.links = c;
        assert!(body.encode().is_ok());
    }

    #[test]
    fn ambiguous_prefixes_are_dropped() {
        let twin = A | 1;
        let members = vec![
            member(A, "a", 100, vec![]),
            member(twin, "twin", 100, vec![]),
            member(
                B,
                "b",
                100,
                vec![claim(A, LinkRole::Long, PathClass::Lan, None)],
            ),
        ];
        let t = build(200, true, NodeId(B), &members, &[]);
        assert!(t.links.is_empty(), "{:?}", t.links);
    }

    #[test]
    fn render_golden() {
        let want = "\
topology seen from laptop: 4 members, 5 links
POSITION  NAME                NODE      NAT                   ROLE              ADDRESSES  LAST SEEN
0.0000    intro               00000000  endpoint-independent  introducer,relay  10.77.0.1  1m40s ago
0.2500    laptop (this node)  40000000  endpoint-independent  -                 10.77.0.2  10s ago
0.5000    desktop             80000000  endpoint-independent  -                 10.77.0.3  1m40s ago
0.7500    phone               c0000000  endpoint-dependent    -                 10.77.0.4  1m40s ago

LINK               KIND  PATH               REPORTED BY
intro -- laptop    ring  lan                intro, laptop
intro -- desktop   long  lan                desktop
intro -- phone     ring  direct             intro, phone
laptop -- desktop  ring  lan                laptop, desktop
desktop -- phone   ring  relayed via intro  desktop, phone
";
        let got = example().render();
        assert_eq!(got, want, "\n{got}");
    }
}
