//! End-to-end tests of the agent: real `ringlan up` processes in network
//! namespaces built by the lab harness (`ringlan-lab`). Every test builds its
//! own lab: one bridge (the underlay, 192.0.2.0/24), an introducer at
//! 192.0.2.1 and nodes at 192.0.2.N, each with a TAP `rl-e2e` at 10.77.0.N/24
//! (the overlay). Tests wait on `ringlan status --json`, never on fixed
//! sleeps; waits carry generous hang guards, not timing assertions, except
//! where a bound is the behaviour under test (session teardown after
//! SIGTERM). On failure the harness prints the tail of every process log and
//! keeps the lab directory; these tests add every member's last status.
//!
//! Need root (namespaces, TAP); `RINGLAN_SKIP_ROOT_TESTS=1` skips them when
//! not root. `RINGLAN_E2E_LOG=debug` raises the agents' log level.
//!
//! The tests that run agents are serialised (a static mutex): they share the
//! two CPU cores, and the SIGTERM bound should not measure a neighbour's
//! 100 MiB transfer.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use ringlan_lab::{status_json, wait_for, Host, Lab, Node, Switch};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
const NETWORK: &str = "e2e";
const TAP: &str = "rl-e2e";
const PORT: u16 = 4910;
const INTRODUCER: u8 = 1;
const MIB: u64 = 1024 * 1024;
/// Hang guard for agents to start, mesh, and for traffic to pass.
const SETTLE: Duration = Duration::from_secs(30);
/// After SIGTERM, peers must see the session gone within this (measured from
/// the signal). The runtime closes sessions orderly (RFC 7016 3.5.5), which
/// takes about one round trip; this leaves room for a loaded machine.
const CLOSE_BOUND: Duration = Duration::from_secs(2);
/// How long the node with the wrong secret is watched.
const OBSERVE: Duration = Duration::from_secs(5);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Node,
    Introducer,
}

/// One agent of the lab: its host namespace and its ringlan node.
struct Member {
    name: String,
    idx: u8,
    host: Host,
    node: Node,
}

impl Member {
    /// The TAP address, 10.77.0.IDX.
    fn overlay(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, self.idx))
    }

    fn status(&self) -> Result<Value> {
        self.node
            .status()
            .with_context(|| format!("status of {}", self.name))
    }

    /// How peers name this member in their `sessions[]`.
    fn peer(&self) -> Result<Peer> {
        let v = self.status()?;
        Ok(Peer {
            name: self.name.clone(),
            id: v["node_id"].as_str().map(str::to_string),
        })
    }
}

/// A peer as it appears in someone's status: by name, or by node id once
/// the node knows it.
#[derive(Clone, Debug)]
struct Peer {
    name: String,
    id: Option<String>,
}

impl Peer {
    fn is(&self, session: &Value) -> bool {
        session["peer_name"].as_str() == Some(self.name.as_str())
            || self
                .id
                .as_deref()
                .is_some_and(|id| session["peer_id"].as_str() == Some(id))
    }
}

fn sessions(status: &Value) -> &[Value] {
    status["sessions"].as_array().map_or(&[], Vec::as_slice)
}

/// The session with `peer` in `status`, whatever its state.
fn session_with<'a>(status: &'a Value, peer: &Peer) -> Option<&'a Value> {
    sessions(status).iter().find(|s| peer.is(s))
}

fn open_with(status: &Value, peer: &Peer) -> bool {
    sessions(status)
        .iter()
        .any(|s| peer.is(s) && s["state"] == "open")
}

/// A lab with one underlay bridge and the network's secret.
struct World {
    /// Status sockets of every member, for the failure report.
    sockets: RefCell<Vec<(String, PathBuf)>>,
    secret: PathBuf,
    lan: Switch,
    lab: Lab,
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("==== e2e: last status of every member");
            for (name, sock) in self.sockets.borrow().iter() {
                match status_json(Path::new(BIN), sock) {
                    Ok(v) => eprintln!("---- {name}: {v}"),
                    Err(e) => eprintln!("---- {name}: {e:#}"),
                }
            }
        }
        // Then the lab drops: process logs, cleanup.
    }
}

impl World {
    fn new() -> Option<World> {
        let lab = Lab::for_test()?;
        let lan = lab.switch("lan").expect("underlay switch");
        let secret = lab.dir().join("e2e.secret");
        make_secret(&secret).expect("network secret");
        Some(World {
            sockets: RefCell::new(Vec::new()),
            secret,
            lan,
            lab,
        })
    }

    /// A member at 192.0.2.IDX / 10.77.0.IDX with the network's secret.
    fn member(&self, name: &str, idx: u8, role: Role) -> Member {
        self.member_with_secret(name, idx, role, &self.secret)
    }

    fn member_with_secret(&self, name: &str, idx: u8, role: Role, secret: &Path) -> Member {
        let r = (|| -> Result<Member> {
            let host = self
                .lab
                .host(name, &self.lan, &format!("192.0.2.{idx}/24"), None)?;
            let node = self.lab.node(&host.ns, name, Path::new(BIN))?;
            node.write_config(&config_yaml(&node, idx, role, secret))?;
            self.sockets
                .borrow_mut()
                .push((name.to_string(), node.socket.clone()));
            Ok(Member {
                name: name.to_string(),
                idx,
                host,
                node,
            })
        })();
        r.unwrap_or_else(|e| panic!("create member {name}: {e:#}"))
    }

    /// Starts (or restarts) the agent and waits until its control socket
    /// answers; fails early if the agent exits.
    fn start(&self, m: &mut Member) -> Value {
        self.lab
            .start_node(&mut m.node)
            .unwrap_or_else(|e| panic!("start {}: {e:#}", m.name));
        let p = m.node.proc.clone().expect("started");
        wait_for(SETTLE, "agent answers status", || {
            if let Some(st) = self.lab.try_status(&p)? {
                bail!("{} exited ({st}):\n{}", m.name, self.lab.log(&p));
            }
            Ok(m.node.status().ok())
        })
        .unwrap_or_else(|e| panic!("{}: {e:#}", m.name))
    }

    /// Waits until every member has an open session with every other one.
    fn wait_mesh(&self, members: &[&Member]) {
        let peers: Vec<Peer> = members
            .iter()
            .map(|m| m.peer().unwrap_or_else(|e| panic!("{e:#}")))
            .collect();
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

    /// Waits until a ping from `from` to `to`'s overlay address is answered.
    fn wait_ping(&self, from: &Member, to: &Member, within: Duration) {
        let t0 = Instant::now();
        wait_for(within, "ping answered", || {
            Ok(self.lab.ping(&from.host.ns, to.overlay(), 1).then_some(()))
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
    }

    fn ip_link_names(&self, m: &Member) -> Vec<String> {
        link_names(&self.lab, m.host.ns.name())
    }
}

/// The YAML of a member. Line numbers matter for [`bad_configs_fail_cleanly`].
fn config_yaml(node: &Node, idx: u8, role: Role, secret: &Path) -> String {
    let level = std::env::var("RINGLAN_E2E_LOG").unwrap_or_else(|_| "info".into());
    let (role, introducers) = match role {
        Role::Node => ("node", format!("[192.0.2.{INTRODUCER}:{PORT}]")),
        Role::Introducer => ("introducer", "[]".into()),
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
introducers: {introducers}
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
    )
}

fn make_secret(path: &Path) -> Result<()> {
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

/// Interface names in namespace `ns` (`ip -j link`).
fn link_names(lab: &Lab, ns: &str) -> Vec<String> {
    let ns = lab
        .namespaces()
        .into_iter()
        .find(|n| n.name() == ns)
        .expect("lab namespace");
    let out = lab
        .run(&ns, &["ip", "-j", "link", "show"])
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

/// The link-layer address `ns` has resolved for `addr` on the TAP, if any.
fn neighbour_mac(lab: &Lab, m: &Member, addr: IpAddr) -> Option<String> {
    let out = lab
        .run(
            &m.host.ns,
            &["ip", "-j", "neigh", "show", &addr.to_string(), "dev", TAP],
        )
        .ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v.as_array()?
        .iter()
        .find_map(|n| n["lladdr"].as_str().map(str::to_string))
}

/// Packets counted by the named counter of table `inet rl_e2e` in `m`'s
/// namespace.
fn nft_counter(lab: &Lab, m: &Member, name: &str) -> u64 {
    let out = lab
        .run(
            &m.host.ns,
            &["nft", "-j", "list", "counter", "inet", "rl_e2e", name],
        )
        .unwrap_or_else(|e| panic!("{}: {e:#}", m.name));
    let v: Value = serde_json::from_str(&out).expect("nft -j output");
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|o| o["counter"]["packets"].as_u64()))
        .unwrap_or_else(|| panic!("no counter {name} in {}: {out}", m.name))
}

// ---------------------------------------------------------------------------
// 1. Two nodes on one underlay: ping, ARP, 100 MiB intact.
// ---------------------------------------------------------------------------

#[test]
fn two_nodes_ping_resolve_arp_and_carry_100_mib_intact() {
    let _serial = serial();
    let Some(w) = World::new() else { return };
    let mut intro = w.member("intro", INTRODUCER, Role::Introducer);
    let mut n1 = w.member("n1", 11, Role::Node);
    let mut n2 = w.member("n2", 12, Role::Node);
    w.start(&mut intro);
    w.start(&mut n1);
    let s2 = w.start(&mut n2);
    w.wait_mesh(&[&intro, &n1, &n2]);

    w.wait_ping(&n1, &n2, SETTLE);
    w.wait_ping(&n2, &n1, SETTLE);
    let st = w.lab.ping_stats(&n1.host.ns, n2.overlay(), 20).unwrap();
    assert_eq!(
        st.received, st.transmitted,
        "n1 -> n2 after warm-up: {st:?}"
    );

    // ARP crossed the overlay: n1 resolved n2's address to n2's TAP MAC,
    // which is the MAC n2 reports and the TAP really has.
    let mac2 = s2["tap"]["mac"].as_str().expect("tap.mac").to_string();
    assert_eq!(
        neighbour_mac(&w.lab, &n1, n2.overlay()).as_deref(),
        Some(mac2.as_str()),
        "n1's neighbour entry for {}",
        n2.overlay()
    );
    let link = w
        .lab
        .run(&n2.host.ns, &["ip", "-j", "link", "show", "dev", TAP])
        .unwrap();
    let link: Value = serde_json::from_str(&link).unwrap();
    assert_eq!(link[0]["address"], mac2.as_str());

    // 100 MiB of TCP over the overlay, byte for byte.
    let t = w
        .lab
        .tcp_transfer(
            &n1.host.ns,
            &n2.host.ns,
            n2.overlay(),
            5001,
            100,
            Duration::from_secs(180),
        )
        .unwrap_or_else(|e| panic!("100 MiB n1 -> n2: {e:#}"));
    eprintln!(
        "100 MiB n1 -> n2 over the overlay: {:?}, {:.0} Mbit/s",
        t.elapsed,
        t.mbit_per_s()
    );
    assert_eq!(t.bytes_sent, 100 * MIB);
    assert_eq!(t.bytes_received, t.bytes_sent);
    assert_eq!(t.received_sha256, t.sent_sha256);

    // It travelled on the n1-n2 session: n2 counts at least that much from
    // n1 (Ethernet frames carry the TCP payload plus headers).
    let p1 = n1.peer().unwrap();
    n2.node
        .wait_status(SETTLE, |v| {
            session_with(v, &p1)
                .and_then(|s| s["rx"]["bytes"].as_u64())
                .is_some_and(|b| b >= 100 * MIB)
        })
        .unwrap_or_else(|e| panic!("n2's rx counters from n1: {e:#}"));
}

// ---------------------------------------------------------------------------
// 2. A third node joins while traffic flows.
// ---------------------------------------------------------------------------

#[test]
fn third_node_joins_while_traffic_flows() {
    let _serial = serial();
    let Some(w) = World::new() else { return };
    let mut intro = w.member("intro", INTRODUCER, Role::Introducer);
    let mut n1 = w.member("n1", 11, Role::Node);
    let mut n2 = w.member("n2", 12, Role::Node);
    let mut n3 = w.member("n3", 13, Role::Node);
    w.start(&mut intro);
    w.start(&mut n1);
    w.start(&mut n2);
    w.wait_mesh(&[&intro, &n1, &n2]);
    w.wait_ping(&n1, &n2, SETTLE);

    // A TCP stream n1 -> n2 runs until we stop it.
    let job = w
        .lab
        .tcp_stream(
            &n1.host.ns,
            &n2.host.ns,
            n2.overlay(),
            5002,
            Duration::from_secs(180),
        )
        .unwrap();
    wait_for(SETTLE, "stream flowing", || {
        ensure!(job.is_running(), "stream ended early");
        Ok((job.received() > MIB).then_some(()))
    })
    .unwrap_or_else(|e| panic!("n1 -> n2 stream: {e:#}"));

    // n3 joins the LAN meanwhile.
    let before_join = job.received();
    w.start(&mut n3);
    w.wait_mesh(&[&intro, &n1, &n2, &n3]);
    assert!(
        job.is_running(),
        "the n1 -> n2 stream ended while n3 joined"
    );

    // The stream keeps going after the join.
    let after_join = job.received();
    wait_for(SETTLE, "stream still flowing", || {
        ensure!(job.is_running(), "stream ended");
        Ok((job.received() > after_join + MIB).then_some(()))
    })
    .unwrap_or_else(|e| panic!("n1 -> n2 stream after n3 joined: {e:#}"));

    // Every pair, both ways.
    for (a, b) in [(&n1, &n2), (&n1, &n3), (&n2, &n3)] {
        w.wait_ping(a, b, SETTLE);
        w.wait_ping(b, a, SETTLE);
    }

    let t = job
        .finish()
        .unwrap_or_else(|e| panic!("n1 -> n2 stream: {e:#}"));
    eprintln!(
        "stream n1 -> n2: {} MiB in {:?} ({} MiB before n3 started, {} MiB when meshed)",
        t.bytes_received / MIB,
        t.elapsed,
        before_join / MIB,
        after_join / MIB
    );
    assert!(t.intact(), "stream n1 -> n2 damaged: {t:?}");
    assert!(t.bytes_received > after_join);
}

// ---------------------------------------------------------------------------
// 3. SIGKILL and restart rejoin; SIGTERM closes sessions and removes the TAP.
// ---------------------------------------------------------------------------

#[test]
fn killed_agent_rejoins_and_terminated_agent_leaves_cleanly() {
    let _serial = serial();
    let Some(w) = World::new() else { return };
    let mut intro = w.member("intro", INTRODUCER, Role::Introducer);
    let mut n1 = w.member("n1", 11, Role::Node);
    let mut n2 = w.member("n2", 12, Role::Node);
    w.start(&mut intro);
    w.start(&mut n1);
    let first = w.start(&mut n2);
    w.wait_mesh(&[&intro, &n1, &n2]);
    w.wait_ping(&n1, &n2, SETTLE);

    // SIGKILL: no goodbye. The kernel removes the TAP with the process.
    let p = n2.node.proc.clone().unwrap();
    w.lab.signal(&p, libc::SIGKILL).unwrap();
    let st = w.lab.wait(&p, SETTLE).unwrap();
    assert!(!st.success(), "SIGKILLed agent: {st}");

    // Restarted with the same key file: same identity, rejoins, traffic
    // resumes both ways.
    let second = w.start(&mut n2);
    assert_eq!(second["public_key"], first["public_key"]);
    if !first["node_id"].is_null() {
        assert_eq!(second["node_id"], first["node_id"]);
    }
    w.wait_mesh(&[&intro, &n1, &n2]);
    w.wait_ping(&n1, &n2, SETTLE);
    w.wait_ping(&n2, &n1, SETTLE);

    // SIGTERM: orderly close. Peers see the session gone within
    // CLOSE_BOUND of the signal; the TAP disappears; exit status 0.
    let p2 = n2.peer().unwrap();
    let p = n2.node.proc.clone().unwrap();
    let t0 = Instant::now();
    w.lab.signal(&p, libc::SIGTERM).unwrap();
    for peer in [&n1, &intro] {
        let left = CLOSE_BOUND.saturating_sub(t0.elapsed());
        peer.node
            .wait_status(left, |v| !open_with(v, &p2))
            .unwrap_or_else(|e| {
                panic!(
                    "{} still lists an open session with n2 {:?} after SIGTERM: {e:#}",
                    peer.name,
                    t0.elapsed()
                )
            });
        eprintln!(
            "{} saw the session with n2 end {:?} after SIGTERM",
            peer.name,
            t0.elapsed()
        );
    }
    let st = w.lab.wait(&p, SETTLE).unwrap();
    assert!(st.success(), "n2 after SIGTERM: {st}\n{}", w.lab.log(&p));
    let links = w.ip_link_names(&n2);
    assert!(
        !links.iter().any(|l| l == TAP),
        "TAP left behind: {links:?}"
    );
    assert!(
        !n2.node.socket.exists(),
        "control socket left behind: {}",
        n2.node.socket.display()
    );
    assert!(w.lab.log(&p).contains("SIGTERM received"));
    // The rest of the LAN is unaffected.
    let st = w.lab.ping_stats(&n1.host.ns, intro.overlay(), 5).unwrap();
    assert!(st.received > 0, "n1 -> intro after n2 left: {st:?}");
}

// ---------------------------------------------------------------------------
// 4. A node with another secret stays out.
// ---------------------------------------------------------------------------

#[test]
fn node_with_another_secret_never_joins() {
    let _serial = serial();
    let Some(w) = World::new() else { return };
    let mut intro = w.member("intro", INTRODUCER, Role::Introducer);
    let mut n1 = w.member("n1", 11, Role::Node);
    let mut n2 = w.member("n2", 12, Role::Node);
    w.start(&mut intro);
    w.start(&mut n1);
    w.start(&mut n2);
    w.wait_mesh(&[&intro, &n1, &n2]);
    w.wait_ping(&n1, &n2, SETTLE);

    // Same network name, same introducer, same everything but the secret.
    let other = w.lab.dir().join("other.secret");
    make_secret(&other).unwrap();
    let mut rogue = w.member_with_secret("rogue", 66, Role::Node, &other);
    // Underlay counters: the rogue's UDP reaching the introducer, and any
    // UDP a member sends to the rogue (a non-member cannot even elicit a
    // Responder Hello). STUN Binding responses are left out: the introducer
    // is a public STUN server for anyone (magic cookie 0x2112a442 at UDP
    // payload bytes 4..8).
    let rogue_addr = rogue.host.addr;
    for m in [&intro, &n1, &n2] {
        w.lab
            .nft(
                &m.host.ns,
                &format!(
                    "table inet rl_e2e {{
  counter from_rogue {{}}
  counter to_rogue {{}}
  chain input {{ type filter hook input priority filter; policy accept;
    ip saddr {rogue_addr} udp dport {PORT} counter name \"from_rogue\"; }}
  chain output {{ type filter hook output priority filter; policy accept;
    ip daddr {rogue_addr} meta l4proto udp @th,96,32 != 0x2112a442 counter name \"to_rogue\"; }}
}}
"
                ),
            )
            .unwrap();
    }
    w.start(&mut rogue);
    let rp = rogue.peer().unwrap();
    let members = [&intro, &n1, &n2];

    // For a while (the rogue retries its introducer all along): nobody lists
    // it, it has no open session, and its pings go unanswered.
    let t0 = Instant::now();
    let mut rounds = 0;
    while t0.elapsed() < OBSERVE {
        for m in members {
            let v = m.status().unwrap();
            assert!(
                session_with(&v, &rp).is_none(),
                "{} lists the rogue node: {v}",
                m.name
            );
        }
        let v = rogue.status().unwrap();
        assert!(
            sessions(&v).iter().all(|s| s["state"] != "open"),
            "the rogue node has an open session: {v}"
        );
        assert!(
            w.lab.is_running(rogue.node.proc.as_ref().unwrap()),
            "the rogue agent exited; the test needs it running"
        );
        assert!(
            !w.lab.ping(&rogue.host.ns, n1.overlay(), 1),
            "rogue -> n1 ping answered"
        );
        rounds += 1;
    }
    assert!(rounds > 1);

    // Its ARP requests never reached the LAN: no member learnt its address
    // (Linux creates a neighbour entry for the sender of a request it
    // answers), and it resolved nobody.
    for m in members {
        assert_eq!(
            neighbour_mac(&w.lab, m, rogue.overlay()),
            None,
            "{} has a neighbour entry for the rogue node",
            m.name
        );
    }
    assert_eq!(neighbour_mac(&w.lab, &rogue, n1.overlay()), None);

    // The rogue did knock (so the test shows its packets are dropped, not
    // that it never tried), and nobody ever answered it.
    let knocks = nft_counter(&w.lab, &intro, "from_rogue");
    assert!(knocks > 0, "the rogue never sent to the introducer");
    for m in members {
        assert_eq!(
            nft_counter(&w.lab, m, "to_rogue"),
            0,
            "{} sent UDP to the rogue node",
            m.name
        );
    }
    eprintln!("rogue sent {knocks} UDP packets to the introducer, none answered");

    // The members are still fine.
    w.wait_mesh(&members);
    w.wait_ping(&n1, &n2, SETTLE);
}

// ---------------------------------------------------------------------------
// 5. Bad config files: `up` fails with the location, leaves nothing behind.
// ---------------------------------------------------------------------------

#[test]
fn bad_configs_fail_cleanly() {
    let Some(w) = World::new() else { return };
    let good_secret = w.secret.clone();
    let missing = w.lab.dir().join("missing.secret");
    let loose = w.lab.dir().join("loose.secret");
    make_secret(&loose).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (m, l) = (missing.display(), loose.display());

    // (case, secret, edit of the member's YAML, expected `:line:col: message`)
    let cases: [(&str, &Path, (&str, &str), String); 4] = [
        (
            "unknown-key",
            &good_secret,
            ("  mtu: 1400\n", "  mtu: 1400\n  colour: blue\n"),
            ":10:3: unknown field `colour`, expected one of name, mtu, mac, addresses".into(),
        ),
        (
            "bad-cidr",
            &good_secret,
            ("10.77.0.9/24", "10.77.0.9/33"),
            ":10:15: interface.addresses[0]: `33` is not a valid prefix length, expected 0-32"
                .into(),
        ),
        (
            "no-secret",
            &missing,
            ("", ""),
            format!(
                ":3:16: network.secret_file: {m}: file does not exist \
                 (create it with `ringlan secret -o {m}`)"
            ),
        ),
        (
            "loose-secret",
            &loose,
            ("", ""),
            format!(
                ":3:16: network.secret_file: {l}: is readable by group/other (mode 0644); \
                 it must be private: run `chmod 600 {l}`"
            ),
        ),
    ];
    for (case, secret, (from, to), want) in cases {
        let ns = w.lab.add_ns(case).unwrap();
        let node = w.lab.node(&ns, case, Path::new(BIN)).unwrap();
        let yaml = config_yaml(&node, 9, Role::Node, secret);
        assert!(yaml.contains(from), "{case}: edit target missing");
        node.write_config(&yaml.replacen(from, to, 1)).unwrap();
        let bin = BIN.to_string();
        let cfg = node.config.display().to_string();
        let p = w
            .lab
            .spawn(&ns, &format!("up-{case}"), &[&bin, "up", "-c", &cfg])
            .unwrap();
        let st = w
            .lab
            .wait(&p, SETTLE)
            .unwrap_or_else(|e| panic!("{case}: `up` did not fail: {e:#}"));
        let log = w.lab.log(&p);
        assert!(!st.success(), "{case}: `up` succeeded: {log}");
        let want = format!("{cfg}{want}");
        assert!(log.contains(&want), "{case}: want `{want}`, got:\n{log}");
        let links = link_names(&w.lab, ns.name());
        assert_eq!(links, ["lo"], "{case}: left behind in the namespace");
        assert!(!node.key_file.exists(), "{case}: key file created");
        assert!(!node.socket.exists(), "{case}: control socket created");
    }
}
