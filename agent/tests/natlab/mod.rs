//! The NAT lab of `nat.rs`: a public segment (198.51.100.0/24) with
//! introducers at .1 and .2 and a coturn STUN server at .3, and "sites":
//! private LANs (192.0.2.0/25 and 192.0.2.128/25) behind NAT router
//! namespaces whose public addresses are 198.51.100.10 and up. Every agent
//! has a TAP `rl-nat` at 10.77.0.IDX/24 (the overlay). The lab has no route
//! out of itself: the NAT routers' only other side is the public segment.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use ringlan_lab::{status_json, wait_for, Host, Lab, NatKind, Node, Ns, Proc, Router, Switch};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
pub const NETWORK: &str = "natlab";
pub const TAP: &str = "rl-nat";
pub const PORT: u16 = 4910;
pub const MIB: u64 = 1024 * 1024;
/// Hang guard for agents to start, mesh, punch, and for traffic to pass.
pub const SETTLE: Duration = Duration::from_secs(45);
/// The coturn STUN server on the public segment.
pub const STUN_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);

static SERIAL: Mutex<()> = Mutex::new(());

/// The tests share two CPU cores and time out on hang guards: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// 198.51.100.N
pub fn public_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, n))
}

/// The RTMFP address of introducer N (198.51.100.N:4910).
pub fn introducer_addr(n: u8) -> SocketAddr {
    SocketAddr::new(public_ip(n), PORT)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Node,
    Introducer,
}

/// One agent of the lab: its host namespace and its ringlan node.
pub struct Member {
    pub name: String,
    pub idx: u8,
    pub host: Host,
    pub node: Node,
    pub role: Role,
}

impl Member {
    /// The TAP address, 10.77.0.IDX.
    pub fn overlay(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, self.idx))
    }

    pub fn status(&self) -> Result<Value> {
        self.node
            .status()
            .with_context(|| format!("status of {}", self.name))
    }

    /// How peers name this member in their `sessions[]`.
    pub fn peer(&self) -> Peer {
        let v = self.status().unwrap_or_else(|e| panic!("{e:#}"));
        Peer {
            name: self.name.clone(),
            id: v["node_id"].as_str().map(str::to_string),
        }
    }

    pub fn proc(&self) -> Proc {
        self.node.proc.clone().expect("member started")
    }
}

/// A peer as it appears in someone's status: by name, or by node id.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub id: Option<String>,
}

impl Peer {
    pub fn is(&self, session: &Value) -> bool {
        session["peer_name"].as_str() == Some(self.name.as_str())
            || self
                .id
                .as_deref()
                .is_some_and(|id| session["peer_id"].as_str() == Some(id))
    }
}

pub fn sessions(status: &Value) -> &[Value] {
    status["sessions"].as_array().map_or(&[], Vec::as_slice)
}

/// The sessions (or not-established entries) with `peer` in `status`.
pub fn entries_with<'a>(status: &'a Value, peer: &Peer) -> Vec<&'a Value> {
    sessions(status).iter().filter(|s| peer.is(s)).collect()
}

/// The open session with `peer`, if any.
pub fn open_session<'a>(status: &'a Value, peer: &Peer) -> Option<&'a Value> {
    sessions(status)
        .iter()
        .find(|s| peer.is(s) && s["state"] == "open")
}

pub fn open_with(status: &Value, peer: &Peer) -> bool {
    open_session(status, peer).is_some()
}

/// A session's path kind: `"direct-lan"`, `"direct-nat"`, `"none"`, ...
/// (`path` is `{"kind": ...}`; a plain string is accepted too).
pub fn path_kind(session: &Value) -> Option<&str> {
    session["path"]
        .as_str()
        .or_else(|| session["path"]["kind"].as_str())
}

/// The IP of a session's remote address.
pub fn remote_ip(session: &Value) -> Option<IpAddr> {
    session["remote"]
        .as_str()?
        .parse::<SocketAddr>()
        .ok()
        .map(|a| a.ip())
}

/// Frames both ways on a session (`tx.frames + rx.frames`).
pub fn frames(session: &Value) -> u64 {
    session["tx"]["frames"].as_u64().unwrap_or(0) + session["rx"]["frames"].as_u64().unwrap_or(0)
}

/// `nat.mapping` of a status (`"endpoint-independent"`, ...).
pub fn nat_mapping(status: &Value) -> Option<&str> {
    status["nat"]["mapping"].as_str()
}

/// A private LAN behind a NAT router.
pub struct Site {
    pub name: String,
    pub router: Router,
    pub lan: Switch,
    /// 0 or 128: the LAN is 192.0.2.BASE/25.
    base: u8,
    next_host: std::cell::Cell<u8>,
}

impl Site {
    pub fn kind(&self) -> NatKind {
        self.router.kind
    }
    pub fn public_ip(&self) -> IpAddr {
        self.router.public_addr()
    }
}

/// The lab: a public segment, the network secret, the members' sockets and
/// the routers (both for the failure report).
pub struct NatLab {
    sockets: RefCell<Vec<(String, PathBuf)>>,
    routers: RefCell<Vec<(String, Ns)>>,
    stun: RefCell<Option<SocketAddr>>,
    sites: std::cell::Cell<u8>,
    pub secret: PathBuf,
    pub public: Switch,
    pub lab: Lab,
}

impl Drop for NatLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("==== nat lab: last status of every member");
            for (name, sock) in self.sockets.borrow().iter() {
                match status_json(Path::new(BIN), sock) {
                    Ok(v) => eprintln!("---- {name}: {v}"),
                    Err(e) => eprintln!("---- {name}: {e:#}"),
                }
            }
            eprintln!("==== nat lab: conntrack tables of the NAT routers");
            for (name, ns) in self.routers.borrow().iter() {
                match self.lab.exec(ns, &["conntrack", "-L", "-p", "udp"]) {
                    Ok(o) => eprintln!(
                        "---- {name}:\n{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    ),
                    Err(e) => eprintln!("---- {name}: {e:#}"),
                }
            }
        }
        // Then the lab drops: process logs, cleanup.
    }
}

impl NatLab {
    /// A lab with the public segment; `None` when root tests are skipped.
    pub fn new() -> Option<NatLab> {
        let lab = Lab::for_test()?;
        let public = lab.switch("public").expect("public segment");
        let secret = lab.dir().join("natlab.secret");
        make_secret(&secret).expect("network secret");
        Some(NatLab {
            sockets: RefCell::new(Vec::new()),
            routers: RefCell::new(Vec::new()),
            stun: RefCell::new(None),
            sites: std::cell::Cell::new(0),
            secret,
            public,
            lab,
        })
    }

    /// Starts coturn at 198.51.100.3:3478 (namespace `stun`); agents
    /// created afterwards list it in `stun_servers`.
    pub fn coturn(&self) -> SocketAddr {
        self.coturn_at("stun", STUN_ADDR)
    }

    /// Starts a coturn STUN server in a new public namespace `name` at `ip`.
    pub fn coturn_at(&self, name: &str, ip: Ipv4Addr) -> SocketAddr {
        let host = self
            .lab
            .host(name, &self.public, &format!("{ip}/24"), None)
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
                &self.public,
                &format!("198.51.100.{}/24", 10 + i),
            )
            .unwrap_or_else(|e| panic!("NAT router {name}: {e:#}"));
        self.routers
            .borrow_mut()
            .push((format!("nat-{name}"), router.ns.clone()));
        Site {
            name: name.into(),
            router,
            lan,
            base,
            next_host: std::cell::Cell::new(10),
        }
    }

    /// An introducer on the public segment at 198.51.100.N (N = 1 or 2),
    /// overlay 10.77.0.N; it lists the introducers `peers` (1, 2) as its own.
    pub fn introducer(&self, name: &str, n: u8, peers: &[u8]) -> Member {
        let host = self
            .lab
            .host(name, &self.public, &format!("198.51.100.{n}/24"), None)
            .unwrap_or_else(|e| panic!("host {name}: {e:#}"));
        let intros: Vec<SocketAddr> = peers.iter().map(|&p| introducer_addr(p)).collect();
        self.member(name, n, host, Role::Introducer, &intros)
    }

    /// A node on `site`'s LAN (next free host address, gateway the router),
    /// overlay 10.77.0.IDX, joining through introducers `intros` (1, 2).
    pub fn node(&self, name: &str, idx: u8, site: &Site, intros: &[u8]) -> Member {
        let h = site.next_host.get();
        site.next_host.set(h + 1);
        let host = self
            .lab
            .host(
                name,
                &site.lan,
                &format!("192.0.2.{}/25", site.base + h),
                Some(site.router.inside_addr),
            )
            .unwrap_or_else(|e| panic!("host {name}: {e:#}"));
        let intros: Vec<SocketAddr> = intros.iter().map(|&p| introducer_addr(p)).collect();
        self.member(name, idx, host, Role::Node, &intros)
    }

    /// An ordinary node on the public segment at 198.51.100.N (no NAT),
    /// overlay 10.77.0.IDX.
    pub fn public_node(&self, name: &str, n: u8, idx: u8, intros: &[u8]) -> Member {
        let host = self
            .lab
            .host(name, &self.public, &format!("198.51.100.{n}/24"), None)
            .unwrap_or_else(|e| panic!("host {name}: {e:#}"));
        let intros: Vec<SocketAddr> = intros.iter().map(|&p| introducer_addr(p)).collect();
        self.member(name, idx, host, Role::Node, &intros)
    }

    /// Appends `yaml` (top-level keys, e.g. `relay:` settings) to a
    /// member's config; takes effect at its next start.
    pub fn add_config(&self, m: &Member, yaml: &str) {
        let mut text = std::fs::read_to_string(&m.node.config)
            .unwrap_or_else(|e| panic!("config of {}: {e}", m.name));
        text.push_str(yaml);
        m.node
            .write_config(&text)
            .unwrap_or_else(|e| panic!("config of {}: {e:#}", m.name));
    }

    /// A node on `site` configured with a network secret of its own: not a
    /// member of the lab's network.
    pub fn outsider(&self, name: &str, idx: u8, site: &Site, intros: &[u8]) -> Member {
        let m = self.node(name, idx, site, intros);
        let other = self.lab.dir().join(format!("{name}.secret"));
        make_secret(&other).expect("outsider secret");
        let text = std::fs::read_to_string(&m.node.config).expect("outsider config");
        let text = text.replace(
            &format!("secret_file: {}", self.secret.display()),
            &format!("secret_file: {}", other.display()),
        );
        m.node.write_config(&text).expect("outsider config");
        m
    }

    fn member(&self, name: &str, idx: u8, host: Host, role: Role, intros: &[SocketAddr]) -> Member {
        let node = self
            .lab
            .node(&host.ns, name, Path::new(BIN))
            .unwrap_or_else(|e| panic!("node {name}: {e:#}"));
        let stun: Vec<SocketAddr> = self.stun.borrow().iter().copied().collect();
        node.write_config(&config_yaml(&node, idx, role, &self.secret, intros, &stun))
            .unwrap_or_else(|e| panic!("config of {name}: {e:#}"));
        self.sockets
            .borrow_mut()
            .push((name.to_string(), node.socket.clone()));
        Member {
            name: name.into(),
            idx,
            host,
            node,
            role,
        }
    }

    /// Starts (or restarts) the agent; waits until its control socket
    /// answers; fails early if the agent exits.
    pub fn start(&self, m: &mut Member) -> Value {
        self.lab
            .start_node(&mut m.node)
            .unwrap_or_else(|e| panic!("start {}: {e:#}", m.name));
        self.wait_answers(m)
    }

    /// Waits until a started member's control socket answers.
    pub fn wait_answers(&self, m: &Member) -> Value {
        let p = m.proc();
        wait_for(SETTLE, "agent answers status", || {
            if let Some(st) = self.lab.try_status(&p)? {
                bail!("{} exited ({st}):\n{}", m.name, self.lab.log(&p));
            }
            Ok(m.node.status().ok())
        })
        .unwrap_or_else(|e| panic!("{}: {e:#}", m.name))
    }

    /// Waits until every member has an open session with every other one.
    pub fn wait_mesh(&self, members: &[&Member]) {
        let peers: Vec<Peer> = members.iter().map(|m| m.peer()).collect();
        for m in members {
            let others: Vec<&Peer> = peers.iter().filter(|p| p.name != m.name).collect();
            m.node
                .wait_status(SETTLE, |v| others.iter().all(|p| open_with(v, p)))
                .unwrap_or_else(|e| {
                    let want: Vec<&str> = others.iter().map(|p| p.name.as_str()).collect();
                    panic!(
                        "{} has no open session with each of {want:?}: {e:#}",
                        m.name
                    )
                });
        }
    }

    /// Waits until `a` lists an open session with `b`; returns that session.
    pub fn wait_open(&self, a: &Member, b: &Member) -> Value {
        let pb = b.peer();
        let st = a
            .node
            .wait_status(SETTLE, |v| open_with(v, &pb))
            .unwrap_or_else(|e| panic!("{} has no open session with {}: {e:#}", a.name, b.name));
        open_session(&st, &pb).cloned().expect("open session")
    }

    /// Waits until a ping from `from` to `to`'s overlay address is answered;
    /// returns how long that took.
    pub fn wait_ping(&self, from: &Member, to: &Member, within: Duration) -> Duration {
        let t0 = Instant::now();
        wait_for(within, "ping answered", || {
            Ok(ping_once(&self.lab, &from.host.ns, to.overlay(), "0.5").then_some(()))
        })
        .unwrap_or_else(|e| {
            panic!(
                "{} -> {} ({}): {e:#} (after {:?})",
                from.name,
                to.name,
                to.overlay(),
                t0.elapsed()
            )
        });
        t0.elapsed()
    }

    /// 100 MiB (or `mib`) of TCP from `a` to `b` over the overlay, checked
    /// byte for byte (length and SHA-256 both sides).
    pub fn transfer(&self, a: &Member, b: &Member, port: u16, mib: u64) -> ringlan_lab::Transfer {
        let t = self
            .lab
            .tcp_transfer(
                &a.host.ns,
                &b.host.ns,
                b.overlay(),
                port,
                mib,
                Duration::from_secs(180),
            )
            .unwrap_or_else(|e| panic!("{mib} MiB {} -> {}: {e:#}", a.name, b.name));
        eprintln!(
            "{mib} MiB {} -> {} over the overlay: {:?}, {:.0} Mbit/s",
            a.name,
            b.name,
            t.elapsed,
            t.mbit_per_s()
        );
        assert_eq!(t.bytes_sent, mib * MIB, "{} -> {}: {t:?}", a.name, b.name);
        assert_eq!(
            t.bytes_received, t.bytes_sent,
            "{} -> {}: {t:?}",
            a.name, b.name
        );
        assert_eq!(
            t.received_sha256, t.sent_sha256,
            "{} -> {}: {t:?}",
            a.name, b.name
        );
        t
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

/// The YAML of a member.
pub fn config_yaml(
    node: &Node,
    idx: u8,
    role: Role,
    secret: &Path,
    intros: &[SocketAddr],
    stun: &[SocketAddr],
) -> String {
    let level = std::env::var("RINGLAN_E2E_LOG").unwrap_or_else(|_| "info".into());
    let list = |v: &[SocketAddr]| {
        let items: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        format!("[{}]", items.join(", "))
    };
    let role = match role {
        Role::Node => "node",
        Role::Introducer => "introducer",
    };
    format!(
        "network:
  name: {NETWORK}
  secret_file: {secret}
node:
  name: {name}
  key_file: {key}
interface:
  name: {TAP}
  mtu: 1400
  addresses: [10.77.0.{idx}/24]
listen:
  port: {PORT}
introducers: {intros}
stun_servers: {stun}
role: {role}
control:
  socket: {socket}
log:
  level: {level}
",
        secret = secret.display(),
        name = node.name,
        key = node.key_file.display(),
        socket = node.socket.display(),
        intros = list(intros),
        stun = list(stun),
    )
}

pub fn make_secret(path: &Path) -> Result<()> {
    let out = Command::new(BIN)
        .args(["secret", "-o"])
        .arg(path)
        .output()
        .context("run ringlan secret")?;
    ensure!(
        out.status.success(),
        "ringlan secret: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// One ping from `ns` to `addr`, waiting up to `wait` seconds (text, e.g.
/// "0.2") for the reply.
pub fn ping_once(lab: &Lab, ns: &Ns, addr: IpAddr, wait: &str) -> bool {
    lab.exec(
        ns,
        &["ping", "-n", "-q", "-c", "1", "-W", wait, &addr.to_string()],
    )
    .is_ok_and(|o| o.status.success())
}
