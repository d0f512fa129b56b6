//! Real `ringlan` agents in a [`Lab`]: the pieces every end-to-end test of
//! the agent (and `ringlan demo`) shares.
//!
//! - [`AgentConfig`]: the one writer of agent config files. Keys come in a
//!   fixed order, so a config without the optional parts has
//!   `network.secret_file` on line 3 (value at column 16), `interface.mtu`
//!   on line 9 and `interface.addresses` on line 10; tests of config error
//!   messages rely on those positions. The membership keys (`network.ca`,
//!   `node.certificate_file`, `interface.bridge`) come right after their
//!   sections' other keys when set, and move what follows down a line each.
//! - [`make_secret`]: a network secret file written by `ringlan secret`.
//! - [`World`]: a lab with one underlay switch, the network's secret and
//!   its members ([`Member`]); it starts agents, waits for sessions and
//!   pings over the overlay, and on a panic prints every member's last
//!   status (and the conntrack tables of registered NAT routers) before the
//!   lab prints the process logs.
//! - Readers of `ringlan status --json` ([`Peer`], [`sessions`],
//!   [`open_session`], [`path_kind`], ...).
//! - [`serial`]: one agent test at a time per test binary (two shared CPU
//!   cores; hang guards).
//!
//! Every member has a TAP at 10.77.0.IDX/24 (the overlay); where it sits in
//! the underlay is the test's choice (a [`Host`] on some switch).

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use crate::{status_json, wait_for, Host, Lab, Node, Ns, Proc, Switch, TcpStreamJob, Transfer};

/// RTMFP UDP port of every lab agent.
pub const PORT: u16 = 4910;
/// Environment variable with the agents' log level (default `info`).
pub const LOG_ENV: &str = "RINGLAN_E2E_LOG";
/// Underlay of [`World::lan_member`]: 192.0.2.IDX/24, the introducer at .1.
pub const LAN_INTRODUCER: u8 = 1;

static SERIAL: Mutex<()> = Mutex::new(());

/// The agent tests of one test binary share two CPU cores and time out on
/// hang guards: one at a time. A panicking test does not poison the rest.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The config file of one agent; [`AgentConfig::render`] writes it.
/// `None` fields are left out (the agent's default applies).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// A comment on the first line.
    pub header: Option<String>,
    pub network: String,
    pub secret_file: PathBuf,
    /// `network.ca`: the CA public key file.
    pub ca: Option<PathBuf>,
    pub name: String,
    pub key_file: PathBuf,
    /// `node.certificate_file`.
    pub certificate_file: Option<PathBuf>,
    pub tap: String,
    pub mtu: u16,
    /// `interface.mac` (e.g. `auto`).
    pub mac: Option<String>,
    /// `interface.bridge`.
    pub bridge: Option<bool>,
    /// TAP addresses with prefix length.
    pub addresses: Vec<String>,
    pub listen_address: Option<IpAddr>,
    pub port: Option<u16>,
    pub introducers: Vec<SocketAddr>,
    pub stun_servers: Option<Vec<SocketAddr>>,
    /// `role`: `node` or `introducer`.
    pub role: Option<String>,
    pub socket: PathBuf,
    pub log_level: Option<String>,
    /// Further top-level keys, appended as they are.
    pub extra: String,
}

impl AgentConfig {
    /// A config with the given files, MTU 1400 and nothing optional.
    pub fn new(
        network: &str,
        secret_file: &Path,
        name: &str,
        key_file: &Path,
        socket: &Path,
    ) -> Self {
        AgentConfig {
            header: None,
            network: network.into(),
            secret_file: secret_file.into(),
            ca: None,
            name: name.into(),
            key_file: key_file.into(),
            certificate_file: None,
            tap: format!("rl-{network}"),
            mtu: 1400,
            mac: None,
            bridge: None,
            addresses: Vec::new(),
            listen_address: None,
            port: None,
            introducers: Vec::new(),
            stun_servers: None,
            role: None,
            socket: socket.into(),
            log_level: None,
            extra: String::new(),
        }
    }

    /// The YAML text.
    pub fn render(&self) -> String {
        // IPv6 addresses quoted: `[2001:db8::1]:4910` is not a plain YAML
        // scalar (a flow sequence).
        let list = |v: &[SocketAddr]| {
            let items: Vec<String> = v
                .iter()
                .map(|a| match a {
                    SocketAddr::V4(_) => a.to_string(),
                    SocketAddr::V6(_) => format!("'{a}'"),
                })
                .collect();
            format!("[{}]", items.join(", "))
        };
        let mut o = String::new();
        if let Some(h) = &self.header {
            let _ = writeln!(o, "# {h}");
        }
        let _ = write!(
            o,
            "network:\n  name: {}\n  secret_file: {}\n",
            self.network,
            self.secret_file.display(),
        );
        if let Some(ca) = &self.ca {
            let _ = writeln!(o, "  ca: {}", ca.display());
        }
        let _ = write!(
            o,
            "node:\n  name: {}\n  key_file: {}\n",
            self.name,
            self.key_file.display(),
        );
        if let Some(cert) = &self.certificate_file {
            let _ = writeln!(o, "  certificate_file: {}", cert.display());
        }
        let _ = write!(o, "interface:\n  name: {}\n  mtu: {}\n", self.tap, self.mtu);
        if let Some(mac) = &self.mac {
            let _ = writeln!(o, "  mac: {mac}");
        }
        if let Some(b) = self.bridge {
            let _ = writeln!(o, "  bridge: {b}");
        }
        let _ = writeln!(o, "  addresses: [{}]", self.addresses.join(", "));
        if self.listen_address.is_some() || self.port.is_some() {
            o.push_str("listen:\n");
            if let Some(a) = self.listen_address {
                // Quoted: an IPv6 address such as `::` is not a plain YAML scalar.
                let _ = writeln!(o, "  address: \"{a}\"");
            }
            if let Some(p) = self.port {
                let _ = writeln!(o, "  port: {p}");
            }
        }
        let _ = writeln!(o, "introducers: {}", list(&self.introducers));
        if let Some(s) = &self.stun_servers {
            let _ = writeln!(o, "stun_servers: {}", list(s));
        }
        if let Some(r) = &self.role {
            let _ = writeln!(o, "role: {r}");
        }
        let _ = writeln!(o, "control:\n  socket: {}", self.socket.display());
        if let Some(l) = &self.log_level {
            let _ = writeln!(o, "log:\n  level: {l}");
        }
        o.push_str(&self.extra);
        o
    }
}

/// Writes a fresh network secret to `path` with `BIN secret -o PATH`.
pub fn make_secret(bin: &Path, path: &Path) -> Result<()> {
    let out = Command::new(bin)
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

/// One ping from `ns` to `addr`, waiting up to `wait` for the reply.
pub fn ping_once(lab: &Lab, ns: &Ns, addr: IpAddr, wait: Duration) -> bool {
    let wait = wait.as_secs_f64().to_string();
    lab.exec(
        ns,
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            &wait,
            &addr.to_string(),
        ],
    )
    .is_ok_and(|o| o.status.success())
}

/// `BIN status --socket SOCKET`: the human table.
pub fn status_text(bin: &Path, socket: &Path) -> Result<String> {
    let out = Command::new(bin)
        .args(["status", "--socket"])
        .arg(socket)
        .output()
        .with_context(|| format!("run {} status", bin.display()))?;
    ensure!(
        out.status.success(),
        "ringlan status --socket {}: {}",
        socket.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------
// Members and their status
// ---------------------------------------------------------------------------

/// One agent of a [`World`]: its host namespace and its ringlan node.
pub struct Member {
    pub name: String,
    pub idx: u8,
    pub host: Host,
    pub node: Node,
    /// The node id, once a start saw it in the status.
    pub id: String,
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

    /// The running agent.
    pub fn proc(&self) -> Proc {
        self.node.proc.clone().expect("member started")
    }

    /// `ringlan status` (the table).
    pub fn status_text(&self) -> String {
        status_text(&self.node.bin, &self.node.socket)
            .unwrap_or_else(|e| panic!("{}: {e:#}", self.name))
    }
}

/// A peer as it appears in someone's status: by name, or by node id once
/// the node knows it.
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

/// `sessions[]` of a status.
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

/// A session's path kind: `"direct-lan"`, `"direct-nat"`, `"relayed"`, ...
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

// ---------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------

/// A lab with one underlay switch, the network's secret and its members.
pub struct World {
    bin: PathBuf,
    pub network: String,
    pub tap: String,
    pub secret: PathBuf,
    /// Hang guard for agents to start, mesh and for traffic to pass.
    pub settle: Duration,
    /// How long each ping of [`World::wait_ping`] waits for its reply.
    pub ping_wait: Duration,
    /// Status sockets of every member, for the failure report.
    sockets: RefCell<Vec<(String, PathBuf)>>,
    /// NAT routers whose conntrack tables the failure report shows.
    routers: RefCell<Vec<(String, Ns)>>,
    pub underlay: Switch,
    pub lab: Lab,
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let net = &self.network;
            eprintln!("==== {net}: last status of every member");
            for (name, sock) in self.sockets.borrow().iter() {
                match status_json(&self.bin, sock) {
                    Ok(v) => eprintln!("---- {name}: {v}"),
                    Err(e) => eprintln!("---- {name}: {e:#}"),
                }
            }
            let routers = self.routers.borrow();
            if !routers.is_empty() {
                eprintln!("==== {net}: conntrack tables of the NAT routers");
            }
            for (name, ns) in routers.iter() {
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

impl World {
    /// A lab (`None` when root tests are skipped) with the underlay switch
    /// `switch`, the secret `DIR/NETWORK.secret` and agents `bin` whose TAP
    /// is `tap`.
    pub fn new(
        bin: &str,
        network: &str,
        tap: &str,
        switch: &str,
        settle: Duration,
    ) -> Option<World> {
        let lab = Lab::for_test()?;
        let underlay = lab.switch(switch).expect("underlay switch");
        let secret = lab.dir().join(format!("{network}.secret"));
        make_secret(Path::new(bin), &secret).expect("network secret");
        Some(World {
            bin: bin.into(),
            network: network.into(),
            tap: tap.into(),
            secret,
            settle,
            ping_wait: Duration::from_secs(1),
            sockets: RefCell::new(Vec::new()),
            routers: RefCell::new(Vec::new()),
            underlay,
            lab,
        })
    }

    /// The `ringlan` binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Shows `ns`'s conntrack table in the failure report.
    pub fn watch_router(&self, name: &str, ns: &Ns) {
        self.routers.borrow_mut().push((name.into(), ns.clone()));
    }

    /// The config of member `idx` on `node`: the network's secret, TAP
    /// 10.77.0.IDX/24, port [`PORT`], `introducers`, log level from
    /// [`LOG_ENV`]. `role` is `node` or `introducer`.
    pub fn config(
        &self,
        node: &Node,
        idx: u8,
        role: &str,
        introducers: &[SocketAddr],
    ) -> AgentConfig {
        let mut c = AgentConfig::new(
            &self.network,
            &self.secret,
            &node.name,
            &node.key_file,
            &node.socket,
        );
        c.tap = self.tap.clone();
        c.addresses = vec![format!("10.77.0.{idx}/24")];
        c.port = Some(PORT);
        c.introducers = introducers.to_vec();
        c.role = Some(role.into());
        c.log_level = Some(std::env::var(LOG_ENV).unwrap_or_else(|_| "info".into()));
        c
    }

    /// A member on `host` with [`World::config`], changed by `edit`; not
    /// started.
    pub fn member_with(
        &self,
        name: &str,
        idx: u8,
        host: Host,
        role: &str,
        introducers: &[SocketAddr],
        edit: impl FnOnce(&mut AgentConfig),
    ) -> Member {
        let node = self
            .lab
            .node(&host.ns, name, &self.bin)
            .unwrap_or_else(|e| panic!("node {name}: {e:#}"));
        let mut c = self.config(&node, idx, role, introducers);
        edit(&mut c);
        node.write_config(&c.render())
            .unwrap_or_else(|e| panic!("config of {name}: {e:#}"));
        self.sockets
            .borrow_mut()
            .push((name.to_string(), node.socket.clone()));
        Member {
            name: name.into(),
            idx,
            host,
            node,
            id: String::new(),
        }
    }

    /// A member at 192.0.2.IDX/24 on the underlay switch, overlay
    /// 10.77.0.IDX, joining through the introducer at 192.0.2.1 (an
    /// introducer lists none); `edit` changes its config.
    pub fn lan_member(
        &self,
        name: &str,
        idx: u8,
        role: &str,
        edit: impl FnOnce(&mut AgentConfig),
    ) -> Member {
        let host = self
            .lab
            .host(name, &self.underlay, &format!("192.0.2.{idx}/24"), None)
            .unwrap_or_else(|e| panic!("host {name}: {e:#}"));
        let intro = SocketAddr::from((Ipv4Addr::new(192, 0, 2, LAN_INTRODUCER), PORT));
        let intros: &[SocketAddr] = if role == "introducer" { &[] } else { &[intro] };
        self.member_with(name, idx, host, role, intros, edit)
    }

    /// The introducer `intro` at [`LAN_INTRODUCER`] and the nodes `nIDX`
    /// for each IDX in `nodes`, [`World::lan_member`]s with the default
    /// config; not started.
    pub fn lan_introducer_and_nodes(
        &self,
        nodes: std::ops::RangeInclusive<u8>,
    ) -> (Member, Vec<Member>) {
        let intro = self.lan_member("intro", LAN_INTRODUCER, "introducer", |_| {});
        let nodes = nodes
            .map(|i| self.lan_member(&format!("n{i}"), i, "node", |_| {}))
            .collect();
        (intro, nodes)
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

    /// Starts (or restarts) the agent; waits until its control socket
    /// answers; fails early if the agent exits.
    pub fn start(&self, m: &mut Member) -> Value {
        self.start_until(m, |_| true)
    }

    /// [`World::start`], then also waits until the status has the node id.
    pub fn start_with_id(&self, m: &mut Member) -> Value {
        self.start_until(m, |v| v["node_id"].is_string())
    }

    fn start_until(&self, m: &mut Member, ready: impl Fn(&Value) -> bool) -> Value {
        self.lab
            .start_node(&mut m.node)
            .unwrap_or_else(|e| panic!("start {}: {e:#}", m.name));
        let v = self.wait_answers_until(m, ready);
        if let Some(id) = v["node_id"].as_str() {
            m.id = id.to_string();
        }
        v
    }

    /// Waits until a started member's control socket answers.
    pub fn wait_answers(&self, m: &Member) -> Value {
        self.wait_answers_until(m, |_| true)
    }

    fn wait_answers_until(&self, m: &Member, ready: impl Fn(&Value) -> bool) -> Value {
        let p = m.proc();
        wait_for(self.settle, "agent answers status", || {
            if let Some(st) = self.lab.try_status(&p)? {
                bail!("{} exited ({st}):\n{}", m.name, self.lab.log(&p));
            }
            Ok(m.node.status().ok().filter(&ready))
        })
        .unwrap_or_else(|e| panic!("{}: {e:#}", m.name))
    }

    /// Waits until every member has an open session with every other one.
    pub fn wait_mesh(&self, members: &[&Member]) {
        let peers: Vec<Peer> = members.iter().map(|m| m.peer()).collect();
        for m in members {
            let others: Vec<&Peer> = peers.iter().filter(|p| p.name != m.name).collect();
            m.node
                .wait_status(self.settle, |v| others.iter().all(|p| open_with(v, p)))
                .unwrap_or_else(|e| {
                    let want: Vec<&str> = others.iter().map(|p| p.name.as_str()).collect();
                    panic!(
                        "{} has no open session with each of {want:?}: {e:#}",
                        m.name
                    )
                });
        }
    }

    /// Starts `members` in order and waits until they form a full mesh.
    pub fn start_mesh(&self, members: &mut [&mut Member]) {
        for m in members.iter_mut() {
            self.start(m);
        }
        let all: Vec<&Member> = members.iter().map(|m| &**m).collect();
        self.wait_mesh(&all);
    }

    /// Waits until `a` lists an open session with `b`; returns that session.
    pub fn wait_open(&self, a: &Member, b: &Member) -> Value {
        let pb = b.peer();
        let st = a
            .node
            .wait_status(self.settle, |v| open_with(v, &pb))
            .unwrap_or_else(|e| panic!("{} has no open session with {}: {e:#}", a.name, b.name));
        open_session(&st, &pb).cloned().expect("open session")
    }

    /// Waits until `m`'s open session with `peer` satisfies `pred`; returns
    /// that status. `what` names the wait in the failure message.
    pub fn wait_session(
        &self,
        m: &Member,
        peer: &Peer,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        m.node
            .wait_status(self.settle, |v| open_session(v, peer).is_some_and(&pred))
            .unwrap_or_else(|e| panic!("{}'s session with {}: {what}: {e:#}", m.name, peer.name))
    }

    /// Waits until a ping from `from` to `to`'s overlay address is answered;
    /// returns how long that took.
    pub fn wait_ping(&self, from: &Member, to: &Member, within: Duration) -> Duration {
        let t0 = Instant::now();
        wait_for(within, "ping answered", || {
            Ok(ping_once(&self.lab, &from.host.ns, to.overlay(), self.ping_wait).then_some(()))
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

    /// `mib` MiB of TCP from `a` to `b` over the overlay, checked byte for
    /// byte (length and SHA-256 both sides).
    pub fn transfer(&self, a: &Member, b: &Member, port: u16, mib: u64) -> Transfer {
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
        assert_eq!(t.bytes_sent, mib << 20, "{} -> {}: {t:?}", a.name, b.name);
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

    /// A TCP stream from `a` to `b` over the overlay (hang guard 150 s),
    /// once more than 8 MiB went by.
    pub fn stream(&self, a: &Member, b: &Member, port: u16) -> TcpStreamJob {
        let job = self
            .lab
            .tcp_stream(
                &a.host.ns,
                &b.host.ns,
                b.overlay(),
                port,
                Duration::from_secs(150),
            )
            .unwrap_or_else(|e| panic!("stream {} -> {}: {e:#}", a.name, b.name));
        self.wait_flowing(&job, 0, 8 << 20, "stream flowing");
        job
    }

    /// Waits until the stream has received more than `from + more` bytes;
    /// fails if it ends first. `what` names the wait in the failure.
    pub fn wait_flowing(&self, job: &TcpStreamJob, from: u64, more: u64, what: &str) {
        wait_for(self.settle, what, || {
            ensure!(job.is_running(), "the stream ended");
            Ok((job.received() > from + more).then_some(()))
        })
        .unwrap_or_else(|e| panic!("{what}: {e:#} ({} MiB received)", job.received() >> 20));
    }

    /// Ends a stream from [`World::stream`]: prints how much went in how
    /// long and checks it arrived intact.
    pub fn finish_stream(&self, job: TcpStreamJob, a: &Member, b: &Member) -> Transfer {
        let t = job
            .finish()
            .unwrap_or_else(|e| panic!("stream {} -> {}: {e:#}", a.name, b.name));
        eprintln!(
            "stream {} -> {}: {} MiB in {:?}",
            a.name,
            b.name,
            t.bytes_received >> 20,
            t.elapsed
        );
        assert!(t.intact(), "stream {} -> {} damaged: {t:?}", a.name, b.name);
        t
    }

    /// Waits until `m`'s open session with `from` has received at least
    /// `bytes` (the traffic went on that session).
    pub fn wait_rx_from(&self, m: &Member, from: &Member, bytes: u64) {
        let p = from.peer();
        m.node
            .wait_status(self.settle, |v| {
                open_session(v, &p)
                    .and_then(|s| s["rx"]["bytes"].as_u64())
                    .is_some_and(|n| n >= bytes)
            })
            .unwrap_or_else(|e| panic!("{}'s rx counters from {}: {e:#}", m.name, from.name));
    }

    /// A status of `m` taken after this call, about a second or more
    /// ([`crate::Node::fresh_status`]).
    pub fn fresh_status(&self, m: &Member) -> Value {
        m.node
            .fresh_status(self.settle)
            .unwrap_or_else(|e| panic!("{}: {e:#}", m.name))
    }

    /// Interface names in `ns` (`ip -j link`).
    pub fn link_names(&self, ns: &Ns) -> Vec<String> {
        let out = self
            .lab
            .run(ns, &["ip", "-j", "link", "show"])
            .expect("ip link");
        let v: Value = serde_json::from_str(&out).expect("ip -j link output");
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The link-layer address `m` has resolved for `addr` on its TAP, if any.
    pub fn neighbour_mac(&self, m: &Member, addr: IpAddr) -> Option<String> {
        let out = self
            .lab
            .run(
                &m.host.ns,
                &[
                    "ip",
                    "-j",
                    "neigh",
                    "show",
                    &addr.to_string(),
                    "dev",
                    &self.tap,
                ],
            )
            .ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        v.as_array()?
            .iter()
            .find_map(|n| n["lladdr"].as_str().map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_stay_on_their_lines() {
        let mut c = AgentConfig::new(
            "home",
            Path::new("/s/home.secret"),
            "laptop",
            Path::new("/s/home.key"),
            Path::new("/run/ringlan/home.sock"),
        );
        c.addresses = vec!["10.77.0.2/24".into()];
        c.introducers = vec!["198.51.100.7:4910".parse().unwrap()];
        let text = c.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "  secret_file: /s/home.secret");
        assert_eq!(lines[2].find("/s"), Some(15), "value at column 16");
        assert_eq!(lines[8], "  mtu: 1400");
        assert_eq!(lines[9], "  addresses: [10.77.0.2/24]");
        assert_eq!(lines[10], "introducers: [198.51.100.7:4910]");
        assert_eq!(
            lines[11..],
            ["control:", "  socket: /run/ringlan/home.sock"]
        );

        c.header = Some("hello".into());
        c.mac = Some("auto".into());
        c.listen_address = Some("0.0.0.0".parse().unwrap());
        c.port = Some(PORT);
        c.stun_servers = Some(Vec::new());
        c.role = Some("introducer".into());
        c.log_level = Some("info".into());
        c.extra = "keepalive: 2s\n".into();
        c.ca = Some("/s/home-ca.pub".into());
        c.certificate_file = Some("/s/laptop.cert".into());
        c.bridge = Some(false);
        c.introducers.push("[2001:db8::1]:4910".parse().unwrap());
        let text = c.render();
        for want in [
            "# hello\nnetwork:\n",
            "  secret_file: /s/home.secret\n  ca: /s/home-ca.pub\nnode:\n",
            "  key_file: /s/home.key\n  certificate_file: /s/laptop.cert\ninterface:\n",
            "  mtu: 1400\n  mac: auto\n  bridge: false\n  addresses:",
            "listen:\n  address: \"0.0.0.0\"\n  port: 4910\nintroducers:",
            "introducers: [198.51.100.7:4910, '[2001:db8::1]:4910']\n",
            "stun_servers: []\nrole: introducer\ncontrol:",
            "log:\n  level: info\nkeepalive: 2s\n",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
    }
}
