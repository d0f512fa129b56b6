//! A world of whole nodes on the simulated network ([`ringlan_node::sim`]):
//! introducers and nodes with names, test frames injected at their TAPs and
//! checked where they come out ([`Ledger`]), and the questions the
//! scenarios ask of `status`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ringlan_node::membership::{CaKey, CertBody, MacPolicy, RevocationList, Roles, SignedBody};
use ringlan_node::sim::frames::{mac, Ledger, Verdict};
use ringlan_node::sim::{HostCtx, HostId, Place, Sim, SiteId};
use ringlan_node::status::{PathKind, SessionPhase, SessionStatus, Status, TapStatus};
use ringlan_node::{LocalIf, MembershipSetup, Node, NodeEvent, NodeSetup, Role};
use ringlan_tunnel::crypto::NetworkName;
use ringlan_tunnel::BirthdayConfig;
use ringlan_tunnel::NodeId;
use ringlan_tunnel::RelayLimits;
use ringlan_tunnel::SessionId;

/// The wall clock at the start of every world (2026-12-03 00:00:00 UTC).
pub const UNIX_START: u64 = 1_796_256_000;

/// Session keepalive (the agent's default).
pub const KEEPALIVE: Duration = Duration::from_secs(25);

/// A node's certificate in a world with a network CA
/// ([`World::with_ca`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cert {
    /// Signed by the world's CA for its network, valid for a year.
    Valid,
    /// Valid until `UNIX_START + secs`.
    ValidFor(u64),
    /// No `network.ca` at all: the shared secret only.
    NoCa,
    /// Expired a day before the world started.
    Expired,
    /// Valid from a day after the world started.
    NotYetValid,
    /// Signed by another CA (which the node also trusts).
    OtherCa,
    /// Signed by the world's CA for another network.
    OtherNetwork,
    /// Signed by the world's CA for another node's key.
    OtherKey,
}

/// What a host runs.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    role: Role,
    relay: bool,
    keepalive: Duration,
    cert: Cert,
    /// Introducers: the alternate STUN port (0: off).
    stun_alt_port: u16,
}

/// The network CA of a world and what each node kept.
#[derive(Debug, Clone)]
struct Ca {
    key: SigningKey,
    /// The newest revocation list each host was told to keep
    /// ([`NodeEvent::Revocations`]), given back on restart.
    kept: BTreeMap<HostId, Vec<u8>>,
}

pub struct World {
    pub sim: Sim<Node>,
    pub ledger: Ledger,
    specs: BTreeMap<HostId, Spec>,
    /// Node ids (kept across restarts: the key is).
    ids: BTreeMap<HostId, NodeId>,
    introducers: Vec<SocketAddr>,
    /// Session keepalive of nodes added from now on.
    pub keepalive: Duration,
    ca: Option<Ca>,
    /// Certificate of nodes added from now on (with a CA).
    pub cert: Cert,
    /// Alternate STUN port of introducers added from now on (0: off, the
    /// default here; the agent's default is the listen port + 1).
    pub stun_alt_port: u16,
    /// Revocation list versions each host announced, in order.
    pub installed: BTreeMap<HostId, Vec<u64>>,
    /// Directory answers (members scans, lookups) each host gave.
    dir: BTreeMap<HostId, Vec<NodeEvent>>,
}

impl World {
    pub fn new(seed: u64) -> World {
        World {
            sim: Sim::new(seed),
            ledger: Ledger::default(),
            specs: BTreeMap::new(),
            ids: BTreeMap::new(),
            introducers: Vec::new(),
            keepalive: KEEPALIVE,
            ca: None,
            cert: Cert::Valid,
            stun_alt_port: 0,
            installed: BTreeMap::new(),
            dir: BTreeMap::new(),
        }
    }

    /// A world whose network has a CA: every node added gets a
    /// certificate of kind [`World::cert`].
    pub fn with_ca(seed: u64) -> World {
        let mut w = World::new(seed);
        w.ca = Some(Ca {
            key: SigningKey::from_bytes(&CA_SECRET),
            kept: BTreeMap::new(),
        });
        w
    }

    /// The network CA's signing key.
    pub fn ca_key(&self) -> &SigningKey {
        &self.ca.as_ref().expect("a world with a CA").key
    }

    /// A node of this world with certificate `cert` (public address).
    pub fn member(&mut self, name: &str, cert: Cert) -> HostId {
        let keep = self.cert;
        self.cert = cert;
        let h = self.node(name, Place::Internet, false);
        self.cert = keep;
        h
    }

    fn add(&mut self, place: Place, spec: Spec) -> HostId {
        let introducers = self.introducers.clone();
        let ca = self.ca.clone();
        let unix = UNIX_START + self.sim.elapsed().as_secs();
        let h = self.sim.add_host(place, |ctx| {
            start(&introducers, ca.as_ref(), unix, ctx, &spec)
        });
        self.specs.insert(h, spec);
        self.ids.insert(h, self.sim.machine(h).node_id());
        h
    }

    /// A public introducer (relaying, as by default).
    pub fn introducer(&mut self, name: &str) -> HostId {
        let h = self.add(
            Place::Internet,
            Spec {
                name: name.into(),
                role: Role::Introducer,
                relay: true,
                keepalive: self.keepalive,
                cert: self.cert,
                stun_alt_port: self.stun_alt_port,
            },
        );
        self.introducers.push(self.sim.addr(h));
        h
    }

    /// A node at `place`; `relay`: carries routes for others.
    pub fn node(&mut self, name: &str, place: Place, relay: bool) -> HostId {
        self.add(
            place,
            Spec {
                name: name.into(),
                role: Role::Node,
                relay,
                keepalive: self.keepalive,
                cert: self.cert,
                stun_alt_port: 0,
            },
        )
    }

    /// A node behind a NAT of its own of `model`; returns (host, site).
    pub fn behind(&mut self, name: &str, model: ringlan_node::sim::NatModel) -> (HostId, SiteId) {
        let site = self.sim.add_site(model);
        (self.node(name, Place::Site(site), false), site)
    }

    pub fn kill(&mut self, h: HostId) {
        self.sim.kill(h);
    }

    /// Start host `h` again (same key, name and role; new seed).
    pub fn restart(&mut self, h: HostId) {
        let spec = self.specs[&h].clone();
        let introducers = self.introducers.clone();
        let ca = self.ca.clone();
        let unix = UNIX_START + self.sim.elapsed().as_secs();
        self.sim
            .restart(h, |ctx| start(&introducers, ca.as_ref(), unix, ctx, &spec));
    }

    /// The directory answers host `h` gave so far.
    pub fn dir_events(&self, h: HostId) -> &[NodeEvent] {
        self.dir.get(&h).map_or(&[], |v| v)
    }

    pub fn name(&self, h: HostId) -> &str {
        &self.specs[&h].name
    }

    /// The node id of host `h` (up or not).
    pub fn id(&self, h: HostId) -> NodeId {
        self.ids[&h]
    }

    pub fn status(&self, h: HostId) -> Status {
        self.sim.machine(h).status(self.sim.now())
    }

    /// `a`'s open session with `b`, as status shows it.
    pub fn session(&self, a: HostId, b: HostId) -> Option<SessionStatus> {
        session_of(&self.sim, a, self.id(b))
    }

    /// The endpoint's id of `a`'s session with `b` (changes if the session
    /// is closed and opened again).
    pub fn session_id(&self, a: HostId, b: HostId) -> Option<SessionId> {
        self.sim.machine(a).endpoint().session_for(self.id(b))
    }

    pub fn path(&self, a: HostId, b: HostId) -> Option<PathKind> {
        self.session(a, b).map(|s| s.path)
    }

    /// Put `n` test frames from `a` to `b` (`None`: broadcast) into `a`'s
    /// TAP, one every `every` of virtual time, collecting what the TAPs
    /// write meanwhile.
    pub fn send_frames(&mut self, a: HostId, b: Option<HostId>, n: usize, every: Duration) {
        for _ in 0..n {
            let f = self.ledger.next(a, b);
            self.sim.with(a, |node, now| node.handle_frame(now, &f));
            self.sim.run_for(every);
            self.collect();
        }
    }

    /// Frames both ways between every pair of `hosts`, `n` per direction.
    pub fn exchange(&mut self, hosts: &[HostId], n: usize) {
        for _ in 0..n {
            for &a in hosts {
                for &b in hosts {
                    if a != b {
                        let f = self.ledger.next(a, Some(b));
                        self.sim.with(a, |node, now| node.handle_frame(now, &f));
                    }
                }
            }
            self.sim.run_for(Duration::from_millis(20));
            self.collect();
        }
    }

    /// Move every frame the TAPs wrote into the ledger; keep the
    /// revocation lists nodes were told to keep.
    pub fn collect(&mut self) {
        let hosts: Vec<HostId> = self.sim.hosts().collect();
        for h in hosts {
            for f in self.sim.take_frames(h) {
                self.ledger.receive(h, &f);
            }
            for e in self.sim.take_events(h) {
                match e {
                    NodeEvent::Revocations { list, version } => {
                        self.installed.entry(h).or_default().push(version);
                        if let Some(ca) = self.ca.as_mut() {
                            ca.kept.insert(h, list);
                        }
                    }
                    e @ (NodeEvent::Members { .. } | NodeEvent::Resolved { .. }) => {
                        self.dir.entry(h).or_default().push(e)
                    }
                    NodeEvent::Ready { .. } => {}
                }
            }
        }
    }

    /// Run until every frame sent has arrived (lossless links) and check
    /// that each was intact and arrived once.
    pub fn settle_frames(&mut self, limit: Duration) -> Verdict {
        let end = self.sim.now() + limit;
        loop {
            self.sim.run_for(Duration::from_millis(100));
            self.collect();
            let v = self.ledger.verdict();
            if v.missing == 0 || self.sim.now() >= end {
                return v;
            }
        }
    }

    /// Let what is in flight arrive, run `send`, and check that the frames
    /// it sent all arrived, intact and once (frames lost before, e.g. on
    /// a path that died, stay missing).
    pub fn assert_delivers(&mut self, what: &str, send: impl FnOnce(&mut World)) {
        let before = self.settle_frames(Duration::from_secs(5));
        assert!(before.is_clean(), "{what}: {before:?}");
        send(self);
        let v = self.settle_frames(Duration::from_secs(5));
        assert!(v.is_clean(), "{what}: {v:?}");
        assert_eq!(
            v.missing,
            before.missing,
            "{what}: frames lost: {:?}",
            self.ledger.missing_frames()
        );
    }

    /// Let the network run, collecting frames.
    pub fn run_for(&mut self, d: Duration) {
        self.sim.run_for(d);
        self.collect();
    }

    /// Run until `cond`, panicking with `what` and a report after `limit`.
    pub fn run_until(
        &mut self,
        limit: Duration,
        what: &str,
        mut cond: impl FnMut(&World) -> bool,
    ) -> Duration {
        let start = self.sim.now();
        let end = start + limit;
        loop {
            self.collect();
            if cond(self) {
                return self.sim.now() - start;
            }
            if self.sim.now() >= end {
                let mut report = self.sim.report();
                for h in self.specs.keys() {
                    if self.sim.is_up(*h) {
                        report += &format!("  {}: {:?}\n", self.name(*h), brief(&self.status(*h)));
                    }
                }
                panic!("{what}: not within {limit:?}\n{report}");
            }
            // Status questions are costly: ask every 50 ms of virtual time.
            self.sim
                .run_for(Duration::from_millis(50).min(end - self.sim.now()));
        }
    }

    /// Open session from `a` to `b` on a path `want` accepts.
    pub fn wait_path(
        &mut self,
        a: HostId,
        b: HostId,
        limit: Duration,
        want: impl Fn(&PathKind) -> bool,
    ) -> Duration {
        let what = format!("{} -> {}: path", self.name(a), self.name(b));
        self.run_until(limit, &what, |w| {
            w.session(a, b)
                .is_some_and(|s| s.state == SessionPhase::Open && want(&s.path))
        })
    }

    /// Ring members among `hosts` (all up) whose nearest successor and
    /// predecessor in their ring view are not the true ones (computed from
    /// the ids) or not linked.
    pub fn ring_errors(&self, hosts: &[HostId]) -> usize {
        let mut live: Vec<(NodeId, HostId)> = hosts.iter().map(|h| (self.id(*h), *h)).collect();
        live.sort_unstable();
        let n = live.len();
        (0..n)
            .filter(|k| {
                let (succ, pred) = (live[(k + 1) % n].0, live[(k + n - 1) % n].0);
                let o = self.sim.machine(live[*k].1).overlay();
                let (s, p) = o.ring_view();
                !(s.first() == Some(&succ)
                    && p.first() == Some(&pred)
                    && o.is_linked(succ)
                    && o.is_linked(pred))
            })
            .count()
    }

    /// The public address of `site`'s NAT.
    pub fn nat_ip(&self, site: SiteId) -> IpAddr {
        self.sim.nat(site).public_ip()
    }
}

/// The network of every world.
pub const NETWORK: &str = "sim";
/// The network secret of every world.
pub const SECRET: [u8; 32] = [0x5e; 32];
/// The secret key of the network CA of worlds with one.
const CA_SECRET: [u8; 32] = [0xca; 32];

/// The setup of an introducer with a valid certificate of the CA of
/// [`World::with_ca`], started at the beginning of a simulation: for
/// simulations that host other machines next to nodes.
pub fn introducer_setup(ctx: &HostCtx) -> NodeSetup {
    let ca = Ca {
        key: SigningKey::from_bytes(&CA_SECRET),
        kept: BTreeMap::new(),
    };
    let spec = Spec {
        name: "intro".into(),
        role: Role::Introducer,
        relay: true,
        keepalive: KEEPALIVE,
        cert: Cert::Valid,
        stun_alt_port: 0,
    };
    setup(&[], Some(&ca), UNIX_START, ctx, &spec)
}

/// The secret key of host `h`'s node: one per host, kept across restarts
/// (the same member comes back).
pub fn node_key(h: HostId) -> [u8; 32] {
    ringlan_node::sim::frames::key(h)
}

/// The membership setup of host `h` with certificate `cert`.
fn membership(ca: &Ca, h: HostId, name: &str, cert: Cert) -> Option<MembershipSetup> {
    let day = 86_400;
    let mut signer = ca.key.clone();
    let mut body = CertBody {
        network: NetworkName::new(NETWORK).unwrap(),
        issuer: CaKey([0; 32]),
        node_key: SigningKey::from_bytes(&node_key(h))
            .verifying_key()
            .to_bytes(),
        name: name.into(),
        ips: Vec::new(),
        mac: MacPolicy::Auto,
        roles: Roles::default(),
        not_before: UNIX_START - day,
        not_after: UNIX_START + 365 * day,
    };
    match cert {
        Cert::NoCa => return None,
        Cert::Valid => {}
        Cert::ValidFor(secs) => body.not_after = UNIX_START + secs,
        Cert::Expired => {
            body.not_before = UNIX_START - 365 * day;
            body.not_after = UNIX_START - day;
        }
        Cert::NotYetValid => body.not_before = UNIX_START + day,
        Cert::OtherCa => signer = SigningKey::from_bytes(&[0x0c; 32]),
        Cert::OtherNetwork => body.network = NetworkName::new("elsewhere").unwrap(),
        Cert::OtherKey => {
            body.node_key = SigningKey::from_bytes(&[0x99; 32])
                .verifying_key()
                .to_bytes()
        }
    }
    let certificate = body.sign(&signer).expect("a valid certificate body");
    Some(MembershipSetup {
        ca: CaKey(signer.verifying_key().to_bytes()),
        certificate,
        revocations: ca
            .kept
            .get(&h)
            .map(|b| RevocationList::decode(b).expect("a kept list decodes")),
    })
}

/// The setup of the node `spec` describes on the host `ctx` describes.
fn setup(
    introducers: &[SocketAddr],
    ca: Option<&Ca>,
    unix: u64,
    ctx: &HostCtx,
    spec: &Spec,
) -> NodeSetup {
    let key = node_key(ctx.host);
    let m = mac(ctx.host);
    NodeSetup {
        network: NETWORK.into(),
        secret: SECRET,
        key,
        name: spec.name.clone(),
        role: spec.role,
        mac: m,
        bridge: false,
        mtu: 1400,
        tap: TapStatus {
            name: "rl-sim".into(),
            mac: m
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            mtu: 1400,
            addresses: Vec::new(),
        },
        listen: ctx.listen,
        introducers: introducers
            .iter()
            .copied()
            .filter(|a| *a != ctx.listen)
            .collect(),
        stun_servers: Vec::new(),
        tcp_introducers: Vec::new(),
        stun_alt_port: spec.stun_alt_port,
        keepalive: spec.keepalive,
        rekey_interval: Duration::from_secs(120),
        relay: RelayLimits {
            enabled: spec.relay,
            ..RelayLimits::default()
        },
        birthday: BirthdayConfig::default(),
        interfaces: vec![LocalIf {
            ip: ctx.ip,
            prefix: ctx.prefix,
        }],
        unix_time: unix,
        membership: ca.and_then(|ca| membership(ca, ctx.host, &spec.name, spec.cert)),
    }
}

fn start(
    introducers: &[SocketAddr],
    ca: Option<&Ca>,
    unix: u64,
    ctx: &HostCtx,
    spec: &Spec,
) -> Node {
    Node::new(ctx.now, setup(introducers, ca, unix, ctx, spec), ctx.seed).expect("valid node setup")
}

fn session_of(sim: &Sim<Node>, a: HostId, peer: NodeId) -> Option<SessionStatus> {
    let id = peer.to_string();
    sim.machine(a)
        .status(sim.now())
        .sessions
        .into_iter()
        .find(|s| s.peer_id == id && s.state == SessionPhase::Open)
}

/// Sessions as "peer: path (state)" for failure reports.
fn brief(s: &Status) -> Vec<String> {
    s.sessions
        .iter()
        .map(|x| {
            format!(
                "{}: {} ({:?})",
                x.peer_name.as_deref().unwrap_or(&x.peer_id),
                x.path,
                x.state
            )
        })
        .collect()
}

pub fn is_direct_nat(p: &PathKind) -> bool {
    *p == PathKind::DirectNat
}

pub fn is_relayed(p: &PathKind) -> bool {
    matches!(p, PathKind::Relayed { .. })
}
