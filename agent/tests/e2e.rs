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

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ringlan_agent::config::Role;
use ringlan_lab::agents::{
    make_secret, open_session, open_with, serial, sessions, Member, World,
    LAN_INTRODUCER as INTRODUCER, PORT,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
const TAP: &str = "rl-e2e";
const MIB: u64 = 1024 * 1024;
/// Hang guard for agents to start, mesh, and for traffic to pass.
const SETTLE: Duration = Duration::from_secs(30);
/// After SIGTERM, peers must see the session gone within this (measured from
/// the signal). The runtime closes sessions orderly (RFC 7016 3.5.5), which
/// takes about one round trip; this leaves room for a loaded machine.
const CLOSE_BOUND: Duration = Duration::from_secs(2);
/// How long the node with the wrong secret is watched.
const OBSERVE: Duration = Duration::from_secs(5);

/// A lab with one underlay bridge (192.0.2.0/24) and the network's secret.
fn world() -> Option<World> {
    World::new(BIN, "e2e", TAP, "lan", SETTLE)
}

/// A member at 192.0.2.IDX / 10.77.0.IDX with the network's secret.
fn member(w: &World, name: &str, idx: u8, role: Role) -> Member {
    w.lan_member(name, idx, role.as_str(), |_| {})
}

/// The introducer (192.0.2.1) and nodes n1 (.11) and n2 (.12), started,
/// meshed, and n1 pings n2.
fn trio(w: &World) -> (Member, Member, Member) {
    let mut intro = member(w, "intro", INTRODUCER, Role::Introducer);
    let mut n1 = member(w, "n1", 11, Role::Node);
    let mut n2 = member(w, "n2", 12, Role::Node);
    w.start_mesh(&mut [&mut intro, &mut n1, &mut n2]);
    w.wait_ping(&n1, &n2, SETTLE);
    (intro, n1, n2)
}

/// `m`'s underlay interface segments its TCP and UDP super-packets in
/// software before they leave (tso, gso and tx-udp-segmentation off), so
/// each datagram crosses, is dropped or is measured against an MTU on its
/// own, as from a NIC.
fn segment_before_sending(w: &World, m: &Member) {
    let off = [
        "ethtool",
        "-K",
        "eth0",
        "tso",
        "off",
        "gso",
        "off",
        "tx-udp-segmentation",
        "off",
    ];
    w.lab
        .run(&m.host.ns, &off)
        .unwrap_or_else(|e| panic!("ethtool in {}: {e:#}", m.name));
}

/// Packets counted by the named counter of table `inet rl_e2e` in `m`'s
/// namespace.
fn nft_counter(w: &World, m: &Member, name: &str) -> u64 {
    w.lab
        .nft_counter(&m.host.ns, "inet", "rl_e2e", name)
        .unwrap_or_else(|e| panic!("{}: {e:#}", m.name))
}

// ---------------------------------------------------------------------------
// 1. Two nodes on one underlay: ping, ARP, 100 MiB intact.
// ---------------------------------------------------------------------------

#[test]
fn two_nodes_ping_resolve_arp_and_carry_100_mib_intact() {
    let _serial = serial();
    let Some(w) = world() else { return };
    let (_intro, n1, n2) = trio(&w);
    let s2 = n2.status().unwrap();
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
        w.neighbour_mac(&n1, n2.overlay()).as_deref(),
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
    w.transfer(&n1, &n2, 5001, 100);

    // It travelled on the n1-n2 session: n2 counts at least that much from
    // n1 (Ethernet frames carry the TCP payload plus headers).
    w.wait_rx_from(&n2, &n1, 100 * MIB);
}

// ---------------------------------------------------------------------------
// 1b. A lossy underlay: TCP super-frames cut and merged again, intact.
// ---------------------------------------------------------------------------

/// 2% of n1's underlay packets dropped each way (nftables `numgen random`,
/// segmentation offloads off so single packets are lost): once the session
/// has lost a window's worth of frames (`dataplane::CutRule`), n1 cuts its
/// TCP super-frames into single-fragment segments (`vnet::TcpCut`) and n2
/// merges them back before its TAP (`vnet::merge_tcp`); 32 MiB still
/// arrive byte for byte.
#[test]
fn a_lossy_underlay_carries_tcp_intact() {
    let _serial = serial();
    let Some(w) = world() else { return };
    let (_intro, n1, n2) = trio(&w);
    for m in [&n1, &n2] {
        segment_before_sending(&w, m);
    }
    w.lab
        .set_loss(&n1.host.ns, "eth0", ringlan_lab::Direction::Both, 2)
        .unwrap();
    w.transfer(&n1, &n2, 5002, 32);
    w.lab
        .set_loss(&n1.host.ns, "eth0", ringlan_lab::Direction::Both, 0)
        .unwrap();
    // The session did lose frames, cut super-frames into pieces, and
    // never halved its window for the lost frames. The status is published once a second,
    // and the transfer may take less: wait for a snapshot taken after it (one that counts
    // the 32 MiB sent; a frame lost before the transfer already makes the loss count
    // non-zero).
    let st = w.wait_session(&n1, &n2.peer(), "frames lost", |s| {
        s["transport"]["frame_lost_bytes"].as_u64() > Some(0)
            && s["tx"]["bytes"].as_u64() >= Some(32 * MIB)
    });
    let t = &open_session(&st, &n2.peer()).expect("the session")["transport"];
    assert_eq!(t["loss_reductions"].as_u64(), Some(0), "{t}");
    assert!(t["super_frames_cut"].as_u64() > Some(0), "{t}");
    // The acknowledgements n1 wrote to its TAP drew the TCP sender's next
    // segments, read in the same turn (`Tap::read_now`); with a TAP write
    // thread (`io_threads` on a machine with more cores) writes are not
    // on the node's thread and nothing is read after them.
    let io = &st["io"];
    if io["io_threads"] == false {
        assert!(io["tap_reads_after_write"].as_u64() > Some(0), "{io}");
    }
}

/// The underlay's path MTU shrinks to 1300 bytes under a TCP stream and
/// nothing says so (a veth drops longer packets without an ICMP error, like
/// a path whose "fragmentation needed" messages are filtered), while pings
/// keep small packets crossing and being acknowledged, so no retransmission
/// timeout comes. n1 sees its path-sized fragments lost and none
/// acknowledged, verifies its packet size, falls back and searches again
/// (`pmtu`, size-selective loss); the stream goes on and arrives intact.
/// Before, nothing but a retransmission timeout could start that check,
/// and one comes only when every packet vanishes: in the run before the
/// change the stream stood still for about 11 s until one did, and with
/// iperf3 and the same pings in a two-namespace lab none came in 20 s.
#[test]
fn a_path_that_shrinks_without_telling_keeps_carrying_tcp() {
    let _serial = serial();
    let Some(w) = world() else { return };
    let (_intro, n1, n2) = trio(&w);
    // Datagrams leave n1 one by one, as a NIC sends them, so each is
    // measured against n2's MTU on its own.
    segment_before_sending(&w, &n1);
    let sized = w.wait_session(&n1, &n2.peer(), "path MTU found", |s| {
        s["transport"]["pmtu"].as_u64() == Some(1472)
    });
    assert_eq!(
        open_session(&sized, &n2.peer()).unwrap()["transport"]["black_hole_checks"].as_u64(),
        Some(0)
    );
    let overlay = n2.overlay().to_string();
    let pinger = w
        .lab
        .spawn(&n1.host.ns, "ping", &["ping", "-q", "-i", "0.05", &overlay])
        .unwrap();
    let job = w.stream(&n1, &n2, 5004);
    w.lab
        .run(&n2.host.ns, &["ip", "link", "set", "eth0", "mtu", "1300"])
        .unwrap_or_else(|e| panic!("mtu in n2: {e:#}"));
    let at = job.received();
    w.wait_flowing(&job, at, 32 << 20, "stream flowing after the path shrank");
    w.finish_stream(job, &n1, &n2);
    let _ = w.lab.kill(&pinger);
    let st = w.wait_session(&n1, &n2.peer(), "packets fit the path", |s| {
        s["transport"]["pmtu"].as_u64() <= Some(1300)
    });
    let t = &open_session(&st, &n2.peer()).unwrap()["transport"];
    assert!(t["black_hole_checks"].as_u64() >= Some(1), "{t}");
    eprintln!("after the path shrank: {t}");
}

// ---------------------------------------------------------------------------
// 1c. I/O threads (`io_threads: true`).
// ---------------------------------------------------------------------------

/// Two nodes whose datagrams leave from a send thread and whose frames
/// reach the TAP from a TAP write thread (`io_threads: true`) carry pings
/// and 64 MiB of TCP byte for byte; the introducer keeps the default,
/// which is off on a 2-core machine. Status shows which.
#[test]
fn io_threads_carry_tcp_intact() {
    let _serial = serial();
    let Some(w) = world() else { return };
    let on = |c: &mut ringlan_lab::agents::AgentConfig| c.extra.push_str("io_threads: true\n");
    let mut intro = member(&w, "intro", INTRODUCER, Role::Introducer);
    let mut n1 = w.lan_member("n1", 11, Role::Node.as_str(), on);
    let mut n2 = w.lan_member("n2", 12, Role::Node.as_str(), on);
    w.start_mesh(&mut [&mut intro, &mut n1, &mut n2]);
    w.wait_ping(&n1, &n2, SETTLE);
    let threads = |m: &Member| m.status().unwrap()["io"]["io_threads"].as_bool();
    assert_eq!(threads(&n1), Some(true));
    assert_eq!(threads(&n2), Some(true));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(threads(&intro), Some(cores >= 4), "auto on {cores} cores");
    let st = w.lab.ping_stats(&n1.host.ns, n2.overlay(), 10).unwrap();
    assert_eq!(st.received, st.transmitted, "n1 -> n2: {st:?}");
    w.transfer(&n1, &n2, 5003, 64);
    w.wait_rx_from(&n2, &n1, 64 * MIB);
    // The data left through n1's send thread (at most 1,500 bytes a
    // datagram) and reached n2's TAP through its write thread; the status
    // is published once a second. Nothing was refused on the way.
    let deadline = Instant::now() + SETTLE;
    loop {
        let (io1, io2) = (
            n1.status().unwrap()["io"].clone(),
            n2.status().unwrap()["io"].clone(),
        );
        if io1["udp_datagrams_sent"].as_u64() > Some(64 * MIB / 1500)
            && io2["tap_writes"].as_u64() > Some(64 * MIB / 65536)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "too little seen: n1 {io1}, n2 {io2}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for m in [&n1, &n2] {
        let s = m.status().unwrap();
        assert!(
            s["drops"]["udp_send_error"].is_null(),
            "{}: {}",
            m.name,
            s["drops"]
        );
        assert_eq!(s["io"]["tap_write_errors"].as_u64(), Some(0), "{}", m.name);
    }
}

// ---------------------------------------------------------------------------
// 2. A third node joins while traffic flows.
// ---------------------------------------------------------------------------

#[test]
fn third_node_joins_while_traffic_flows() {
    let _serial = serial();
    let Some(w) = world() else { return };
    let (intro, n1, n2) = trio(&w);
    let mut n3 = member(&w, "n3", 13, Role::Node);

    // A TCP stream n1 -> n2 runs until we stop it.
    let job = w.stream(&n1, &n2, 5002);

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
    w.wait_flowing(&job, after_join, MIB, "n1 -> n2 stream after n3 joined");

    // Every pair, both ways.
    for (a, b) in [(&n1, &n2), (&n1, &n3), (&n2, &n3)] {
        w.wait_ping(a, b, SETTLE);
        w.wait_ping(b, a, SETTLE);
    }

    let t = w.finish_stream(job, &n1, &n2);
    eprintln!(
        "({} MiB before n3 started, {} MiB when meshed)",
        before_join / MIB,
        after_join / MIB
    );
    assert!(t.bytes_received > after_join);
}

// ---------------------------------------------------------------------------
// 3. SIGKILL and restart rejoin; SIGTERM closes sessions and removes the TAP.
// ---------------------------------------------------------------------------

#[test]
fn killed_agent_rejoins_and_terminated_agent_leaves_cleanly() {
    let _serial = serial();
    let Some(w) = world() else { return };
    let (intro, n1, mut n2) = trio(&w);
    let first = n2.status().unwrap();

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
    // CLOSE_BOUND of the signal (their status shows it up to a
    // STATUS_PERIOD later); the TAP disappears; exit status 0.
    let p2 = n2.peer();
    let p = n2.node.proc.clone().unwrap();
    let t0 = Instant::now();
    w.lab.signal(&p, libc::SIGTERM).unwrap();
    for peer in [&n1, &intro] {
        let left = (CLOSE_BOUND + ringlan_lab::STATUS_PERIOD).saturating_sub(t0.elapsed());
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
    let links = w.link_names(&n2.host.ns);
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
    let Some(w) = world() else { return };
    let (intro, n1, n2) = trio(&w);

    // Same network name, same introducer, same everything but the secret.
    let other = w.lab.dir().join("other.secret");
    make_secret(w.bin(), &other).unwrap();
    let mut rogue = w.lan_member("rogue", 66, Role::Node.as_str(), |c| {
        c.secret_file = other.clone()
    });
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
    let rp = rogue.peer();
    let members = [&intro, &n1, &n2];

    // For a while (the rogue retries its introducer all along): nobody lists
    // it, it has no open session, and its pings go unanswered.
    let t0 = Instant::now();
    let mut rounds = 0;
    while t0.elapsed() < OBSERVE {
        for m in members {
            let v = m.status().unwrap();
            assert!(
                !sessions(&v).iter().any(|s| rp.is(s)),
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
            w.neighbour_mac(m, rogue.overlay()),
            None,
            "{} has a neighbour entry for the rogue node",
            m.name
        );
    }
    assert_eq!(w.neighbour_mac(&rogue, n1.overlay()), None);

    // The rogue did knock (so the test shows its packets are dropped, not
    // that it never tried), and nobody ever answered it.
    let knocks = nft_counter(&w, &intro, "from_rogue");
    assert!(knocks > 0, "the rogue never sent to the introducer");
    for m in members {
        assert_eq!(
            nft_counter(&w, m, "to_rogue"),
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
    let Some(w) = world() else { return };
    let good_secret = w.secret.clone();
    let missing = w.lab.dir().join("missing.secret");
    let loose = w.lab.dir().join("loose.secret");
    make_secret(w.bin(), &loose).unwrap();
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
                ":3:16: network.secret_file: {l}: is accessible by others or writable by \
                 its group (mode 0644); it must be private: run `chmod 640 {l}`"
            ),
        ),
    ];
    for (case, secret, (from, to), want) in cases {
        let ns = w.lab.add_ns(case).unwrap();
        let node = w.lab.node(&ns, case, Path::new(BIN)).unwrap();
        let intro = SocketAddr::from(([192, 0, 2, INTRODUCER], PORT));
        let mut cfg = w.config(&node, 9, Role::Node.as_str(), &[intro]);
        cfg.secret_file = secret.to_path_buf();
        let yaml = cfg.render();
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
        let links = w.link_names(&ns);
        assert_eq!(links, ["lo"], "{case}: left behind in the namespace");
        assert!(!node.key_file.exists(), "{case}: key file created");
        assert!(!node.socket.exists(), "{case}: control socket created");
    }
}
