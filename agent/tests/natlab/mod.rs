//! The NAT lab of `nat.rs`: a public segment (198.51.100.0/24) with
//! introducers at .1 and .2 and (for the tests that want a reference) a
//! coturn STUN server at .3, and "sites":
//! private LANs (192.0.2.0/25 and 192.0.2.128/25) behind NAT router
//! namespaces whose public addresses are 198.51.100.10 and up. Every agent
//! has a TAP `rl-nat` at 10.77.0.IDX/24 (the overlay). The lab has no route
//! out of itself: the NAT routers' only other side is the public segment.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::time::Duration;

use std::sync::MutexGuard;

use ringlan_agent::config::Role;
use ringlan_lab::agents::{serial, AgentConfig, Member, World, PORT};
use ringlan_lab::{Host, NatKind, Router, Switch};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
pub const NETWORK: &str = "natlab";
pub const TAP: &str = "rl-nat";
pub const MIB: u64 = 1024 * 1024;
/// Hang guard for agents to start, mesh, punch, and for traffic to pass.
pub const SETTLE: Duration = Duration::from_secs(45);
/// The coturn STUN server on the public segment.
pub const STUN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);

/// 198.51.100.N
pub fn public_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, n))
}

/// The RTMFP address of introducer N (198.51.100.N:4910).
pub fn introducer_addr(n: u8) -> SocketAddr {
    SocketAddr::new(public_ip(n), PORT)
}

/// A private LAN behind a NAT router.
pub struct Site {
    pub name: String,
    pub router: Router,
    pub lan: Switch,
    /// 0 or 128: the LAN is 192.0.2.BASE/25.
    base: u8,
    next_host: Cell<u8>,
}

impl Site {
    pub fn kind(&self) -> NatKind {
        self.router.kind
    }
    pub fn public_ip(&self) -> IpAddr {
        self.router.public_addr()
    }
}

/// Two members `a` (10.77.0.11) and `b` (.21) on sites `a` and `b` behind
/// NATs of the given kinds, joining through introducers `intros` (on the public
/// segment, relaying by default); see [`NatLab::pair`].
pub struct Pair {
    pub sa: Site,
    pub sb: Site,
    pub intros: Vec<Member>,
    pub a: Member,
    pub b: Member,
}

/// The lab: a [`World`] whose underlay switch is the public segment, its
/// sites and its STUN server. Derefs to the world. Holds the test binary's
/// [`serial`] lock until the lab is gone.
pub struct NatLab {
    stun: RefCell<Option<SocketAddr>>,
    sites: Cell<u8>,
    w: World,
    _serial: MutexGuard<'static, ()>,
}

impl Deref for NatLab {
    type Target = World;
    fn deref(&self) -> &World {
        &self.w
    }
}

impl NatLab {
    /// A lab with the public segment; `None` when root tests are skipped.
    pub fn new() -> Option<NatLab> {
        let serial = serial();
        let mut w = World::new(BIN, NETWORK, TAP, "public", SETTLE)?;
        w.ping_wait = Duration::from_millis(500);
        Some(NatLab {
            stun: RefCell::new(None),
            sites: Cell::new(0),
            w,
            _serial: serial,
        })
    }

    /// Starts coturn at 198.51.100.3:3478 (namespace `stun`); agents
    /// created afterwards list it in `stun_servers`.
    pub fn coturn(&self) -> SocketAddr {
        self.coturn_at("stun", STUN_ADDR)
    }

    /// Agents created from now on list no STUN server (the default
    /// config), even though coturn runs.
    pub fn forget_coturn(&self) {
        self.stun.borrow_mut().take();
    }

    /// Starts a coturn STUN server in a new public namespace `name` at `ip`.
    pub fn coturn_at(&self, name: &str, ip: Ipv4Addr) -> SocketAddr {
        let host = self
            .lab
            .host(name, &self.underlay, &format!("{ip}/24"), None)
            .expect("coturn host");
        self.lab
            .coturn(&host.ns, IpAddr::V4(ip))
            .unwrap_or_else(|e| panic!("coturn: {e:#}"));
        let addr = SocketAddr::new(IpAddr::V4(ip), ringlan_lab::STUN_PORT);
        self.stun.borrow_mut().get_or_insert(addr);
        addr
    }

    /// A private LAN behind a NAT router of `kind`. Sites get 192.0.2.0/25,
    /// then 192.0.2.128/25; their routers 198.51.100.10, .11 outside.
    pub fn site(&self, name: &str, kind: NatKind) -> Site {
        let i = self.sites.get();
        assert!(i < 2, "the lab has room for two sites");
        self.sites.set(i + 1);
        let base = i * 128;
        let lan = self.lab.switch(&format!("lan-{name}")).expect("site LAN");
        let router = self
            .lab
            .nat_router(
                &format!("nat-{name}"),
                kind,
                &lan,
                &format!("192.0.2.{}/25", base + 1),
                &self.underlay,
                &format!("198.51.100.{}/24", 10 + i),
            )
            .unwrap_or_else(|e| panic!("NAT router {name}: {e:#}"));
        self.watch_router(&format!("nat-{name}"), &router.ns);
        Site {
            name: name.into(),
            router,
            lan,
            base,
            next_host: Cell::new(10),
        }
    }

    /// An introducer on the public segment at 198.51.100.N (N = 1 or 2),
    /// overlay 10.77.0.N; it lists the introducers `peers` (1, 2) as its own.
    pub fn introducer(&self, name: &str, n: u8, peers: &[u8]) -> Member {
        let host = self.public_host(name, n);
        self.member(name, n, host, Role::Introducer.as_str(), peers, |_| {})
    }

    /// A node on `site`'s LAN (next free host address, gateway the router),
    /// overlay 10.77.0.IDX, joining through introducers `intros` (1, 2).
    pub fn node(&self, name: &str, idx: u8, site: &Site, intros: &[u8]) -> Member {
        self.site_member(name, idx, site, intros, |_| {})
    }

    /// An ordinary node on the public segment at 198.51.100.N (no NAT),
    /// overlay 10.77.0.IDX.
    pub fn public_node(&self, name: &str, n: u8, idx: u8, intros: &[u8]) -> Member {
        let host = self.public_host(name, n);
        self.member(name, idx, host, Role::Node.as_str(), intros, |_| {})
    }

    /// A host on the public segment at 198.51.100.N.
    fn public_host(&self, name: &str, n: u8) -> Host {
        self.lab
            .host(name, &self.underlay, &format!("198.51.100.{n}/24"), None)
            .unwrap_or_else(|e| panic!("host {name}: {e:#}"))
    }

    /// A plain host (no agent) on `site`'s LAN at `cidr`, gateway the router.
    pub fn probe(&self, name: &str, site: &Site, cidr: &str) -> Host {
        self.lab
            .host(name, &site.lan, cidr, Some(site.router.inside_addr))
            .unwrap_or_else(|e| panic!("host {name}: {e:#}"))
    }

    /// A node on `site` configured with a network secret of its own: not a
    /// member of the lab's network.
    pub fn outsider(&self, name: &str, idx: u8, site: &Site, intros: &[u8]) -> Member {
        let other = self.lab.dir().join(format!("{name}.secret"));
        ringlan_lab::agents::make_secret(self.bin(), &other).expect("outsider secret");
        self.site_member(name, idx, site, intros, |c| c.secret_file = other)
    }

    fn site_member(
        &self,
        name: &str,
        idx: u8,
        site: &Site,
        intros: &[u8],
        edit: impl FnOnce(&mut AgentConfig),
    ) -> Member {
        let h = site.next_host.get();
        site.next_host.set(h + 1);
        let host = self.probe(name, site, &format!("192.0.2.{}/25", site.base + h));
        self.member(name, idx, host, Role::Node.as_str(), intros, edit)
    }

    /// A member whose config lists introducers `intros` (1, 2) and the STUN
    /// server, if one runs.
    fn member(
        &self,
        name: &str,
        idx: u8,
        host: Host,
        role: &str,
        intros: &[u8],
        edit: impl FnOnce(&mut AgentConfig),
    ) -> Member {
        let intros: Vec<SocketAddr> = intros.iter().map(|&p| introducer_addr(p)).collect();
        let stun: Vec<SocketAddr> = self.stun.borrow().iter().copied().collect();
        self.member_with(name, idx, host, role, &intros, |c| {
            c.stun_servers = Some(stun);
            edit(c);
        })
    }

    /// Builds a [`Pair`] behind NATs of `kinds` (site `a`, site `b`), with
    /// introducers `intros` (1, 2) that list each other, in the default
    /// config: no STUN server besides the introducers (each answers STUN on
    /// its RTMFP port and on the next one, `listen.stun_alt_port`, which is
    /// what tells a node its NAT's mapping); nothing is started.
    pub fn pair(&self, kinds: [NatKind; 2], intros: &[u8]) -> Pair {
        let sa = self.site("a", kinds[0]);
        let sb = self.site("b", kinds[1]);
        let intros_v: Vec<Member> = intros
            .iter()
            .map(|&n| {
                let peers: Vec<u8> = intros.iter().copied().filter(|&p| p != n).collect();
                self.introducer(&format!("intro{n}"), n, &peers)
            })
            .collect();
        let a = self.node("a", 11, &sa, intros);
        let b = self.node("b", 21, &sb, intros);
        Pair {
            sa,
            sb,
            intros: intros_v,
            a,
            b,
        }
    }

    /// [`NatLab::pair`], started: the introducers in order, then `a`, `b`.
    pub fn started_pair(&self, kinds: [NatKind; 2], intros: &[u8]) -> Pair {
        let mut p = self.pair(kinds, intros);
        for m in p.intros.iter_mut().chain([&mut p.a, &mut p.b]) {
            self.start(m);
        }
        p
    }

    /// Installs counters on a site's router (table `ip rl_natlab`):
    /// `hairpin` counts packets from the inside addressed to the router's
    /// own public address; `forwarded` counts every packet it forwards.
    pub fn router_counters(&self, site: &Site) {
        let public = site.public_ip();
        self.lab
            .nft(
                &site.router.ns,
                &format!(
                    "table ip rl_natlab {{
  counter hairpin {{}}
  counter forwarded {{}}
  chain pre {{ type filter hook prerouting priority raw; policy accept;
    iifname \"in0\" ip daddr {public} counter name \"hairpin\"; }}
  chain count_forward {{ type filter hook forward priority mangle; policy accept;
    counter name \"forwarded\"; }}
}}
"
                ),
            )
            .unwrap_or_else(|e| panic!("router counters: {e:#}"));
    }

    /// (packets, bytes) of a counter made by [`NatLab::router_counters`].
    pub fn router_counter(&self, site: &Site, name: &str) -> (u64, u64) {
        self.lab
            .nft_counter_full(&site.router.ns, "ip", "rl_natlab", name)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }
}
