//! A world of whole nodes on the simulated network ([`ringlan_node::sim`]):
//! introducers and nodes with names, test frames injected at their TAPs and
//! checked where they come out ([`Ledger`]), and the questions the
//! scenarios ask of `status`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ringlan_node::sim::frames::{mac, Ledger, Verdict};
use ringlan_node::sim::{HostCtx, HostId, Place, Sim, SiteId};
use ringlan_node::status::{PathKind, SessionPhase, SessionStatus, Status, TapStatus};
use ringlan_node::{LocalIf, Node, NodeSetup, Role};
use ringlan_tunnel::BirthdayConfig;
use ringlan_tunnel::NodeId;
use ringlan_tunnel::RelayLimits;
use ringlan_tunnel::SessionId;

/// Session keepalive (the agent's default).
pub const KEEPALIVE: Duration = Duration::from_secs(25);

/// What a host runs.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    role: Role,
    relay: bool,
    keepalive: Duration,
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
        }
    }

    fn add(&mut self, place: Place, spec: Spec) -> HostId {
        let introducers = self.introducers.clone();
        let h = self
            .sim
            .add_host(place, |ctx| start(&introducers, ctx, &spec));
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
        self.sim.restart(h, |ctx| start(&introducers, ctx, &spec));
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

    /// Move every frame the TAPs wrote into the ledger.
    pub fn collect(&mut self) {
        let hosts: Vec<HostId> = self.sim.hosts().collect();
        for h in hosts {
            for f in self.sim.take_frames(h) {
                self.ledger.receive(h, &f);
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

/// The setup of the node `spec` describes on the host `ctx` describes.
fn setup(introducers: &[SocketAddr], ctx: &HostCtx, spec: &Spec) -> NodeSetup {
    // One key per host, kept across restarts (the same member comes
    // back); the MAC is its auto MAC.
    let key = ringlan_node::sim::frames::key(ctx.host);
    let m = mac(ctx.host);
    NodeSetup {
        network: "sim".into(),
        secret: [0x5e; 32],
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
        keepalive: spec.keepalive,
        relay: RelayLimits {
            enabled: spec.relay,
            ..RelayLimits::default()
        },
        birthday: BirthdayConfig::default(),
        interfaces: vec![LocalIf {
            ip: ctx.ip,
            prefix: ctx.prefix,
        }],
    }
}

fn start(introducers: &[SocketAddr], ctx: &HostCtx, spec: &Spec) -> Node {
    Node::new(ctx.now, setup(introducers, ctx, spec), ctx.seed).expect("valid node setup")
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
