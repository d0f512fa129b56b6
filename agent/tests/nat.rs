//! NAT traversal end to end: real `ringlan up` agents behind NAT router
//! namespaces of the lab (`natlab/mod.rs` describes the topology):
//! `masquerade` routers (endpoint-independent mapping, port-restricted
//! filtering: "cone-like") and `masquerade fully-random` routers
//! (endpoint-dependent mapping: "symmetric-like"), introducers (and, as a
//! reference for the lab itself, coturn STUN servers) on the public
//! segment. The pairs run in the default config: one introducer, no
//! `stun_servers`; the introducer's second STUN port (OTHER-ADDRESS) is what
//! tells each node its NAT's mapping.
//!
//! What is checked, through `ringlan status --json` and the routers'
//! nftables counters and conntrack tables, never through fixed sleeps:
//! - the lab itself: the two NAT kinds map as documented (seen by two coturn
//!   servers) and an introducer answers STUN on its RTMFP port and on the
//!   next one, and with it alone a node behind a cone-like NAT and one
//!   without NAT classify their mapping as endpoint-independent;
//! - two cone-like NATs: a direct session (path `direct-nat`, remote = the
//!   peer's NAT), introducers carry no frames after setup, ping and 100 MiB
//!   intact;
//! - one NAT: the LAN path (`direct-lan`), no hairpin through the router;
//! - symmetric + cone-like: a direct session (birthday punching) within
//!   20 s of both agents starting, ping and 16 MiB intact, and the pair
//!   keeps pinging after the introducer is killed;
//! - symmetric + symmetric: status says there is no direct path (the session is relayed, `relayed via intro1 (no direct path)`),
//!   and keeps saying so (no flapping);
//! - the public mapping changes mid-transfer (conntrack flush, new public
//!   address): the TCP connection inside the LAN survives;
//! - one of two introducers killed: new nodes join through the other.
//!
//! Need root; `RINGLAN_SKIP_ROOT_TESTS=1` skips them when not root;
//! `RINGLAN_E2E_LOG=debug` raises the agents' log level. Serialised by a
//! static mutex (two CPU cores; hang guards). The `#[ignore]`d benchmark
//! prints join and rebinding-recovery times (`tests/bench/nat.sh`).

mod natlab;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use natlab::*;
use ringlan_lab::agents::*;
use ringlan_lab::{wait_for, NatKind};
use serde_json::Value;

/// Symmetric <-> cone-like: direct within this long of both agents
/// starting, with one introducer and no other STUN server (issue 14).
const DIRECT_WITHIN: Duration = Duration::from_secs(20);
/// How long a "no direct path" verdict is watched for flapping.
const OBSERVE: Duration = Duration::from_secs(10);
/// Frames an introducer may still see per session while two nodes talk
/// directly: broadcasts (ARP) flood to every member, and the introducer has
/// a TAP. The transfers move ~75 000 frames, so this is "none of them".
const STRAY_FRAMES: u64 = 20;

/// Asserts `s` (a session of `who` with `peer`) is a direct NAT-crossing
/// path to `peer_nat`'s public address.
fn assert_direct_nat(who: &str, peer: &str, s: &Value, peer_nat: IpAddr) {
    assert_eq!(
        path_kind(s),
        Some("direct-nat"),
        "{who}'s session with {peer} should be a direct path through NAT: {s}"
    );
    assert_eq!(
        remote_ip(s),
        Some(peer_nat),
        "{who}'s session with {peer} should go to {peer}'s NAT directly: {s}"
    );
}

/// Waits until `a` and `b` each have a direct NAT-crossing session with the
/// other, to the other's site's public address.
fn assert_direct_pair(w: &NatLab, (a, sa): (&Member, &Site), (b, sb): (&Member, &Site)) {
    let s = w.wait_open(a, b);
    assert_direct_nat(&a.name, &b.name, &s, sb.public_ip());
    let s = w.wait_open(b, a);
    assert_direct_nat(&b.name, &a.name, &s, sa.public_ip());
}

/// Runs `traffic`, which moves `mib` MiB from `from` to `to`; checks that
/// it went on the `from`-`to` session (`to` counts at least that much from
/// `from`) and that the introducer's sessions with both carried (almost)
/// none of it.
fn assert_introducer_idle(
    w: &NatLab,
    intro: &Member,
    from: &Member,
    to: &Member,
    mib: u64,
    traffic: impl FnOnce(),
) {
    let (pf, pt) = (from.peer(), to.peer());
    let intro_frames = |v: &Value| -> (u64, u64) {
        let f = |p| entries_with(v, p).iter().map(|s| frames(s)).sum();
        (f(&pf), f(&pt))
    };
    let before = intro_frames(&intro.status().unwrap());
    traffic();
    w.wait_rx_from(to, from, mib * MIB);
    // Status snapshots are published once a second: take one at least a
    // second younger than the transfer's end.
    let after = intro_frames(&w.fresh_status(intro));
    let pair = format!("({}, {})", from.name, to.name);
    eprintln!("introducer frames with {pair}: before {before:?}, after {after:?}");
    assert!(
        after.0 < before.0 + STRAY_FRAMES && after.1 < before.1 + STRAY_FRAMES,
        "the introducer carried {}-{} traffic: frames with {pair} {before:?} -> {after:?}",
        from.name,
        to.name
    );
}

// ---------------------------------------------------------------------------
// 0. The lab: NAT kinds as documented (coturn); the introducer's STUN.
// ---------------------------------------------------------------------------

#[test]
fn lab_nats_map_as_documented() {
    let Some(w) = NatLab::new() else { return };
    let stun1 = w.coturn();
    let stun2 = w.coturn_at("stun2", "198.51.100.4".parse().unwrap());
    let cone = w.site("cone", NatKind::Masquerade);
    let sym = w.site("sym", NatKind::FullyRandom);
    let ha = w.probe("probe-a", &cone, "192.0.2.50/25");
    let hb = w.probe("probe-b", &sym, "192.0.2.150/25");
    let t = Duration::from_secs(10);
    let bind: SocketAddr = "0.0.0.0:4910".parse().unwrap();

    // Cone-like: one mapping whoever asks, the source port kept.
    let seen = w
        .lab
        .stun_binding(&ha.ns, bind, &[stun1, stun2], t)
        .unwrap();
    let want = SocketAddr::new(cone.public_ip(), 4910);
    assert_eq!(seen, [want, want], "masquerade mapping");
    // Symmetric-like: one mapping per destination.
    let seen = w
        .lab
        .stun_binding(&hb.ns, bind, &[stun1, stun2], t)
        .unwrap();
    assert!(
        seen.iter().all(|a| a.ip() == sym.public_ip()),
        "fully-random keeps the address: {seen:?}"
    );
    assert_ne!(seen[0], seen[1], "fully-random: a new port per destination");
}

#[test]
fn introducer_answers_stun_on_its_rtmfp_port() {
    let Some(w) = NatLab::new() else { return };
    let stun1 = w.coturn();
    let cone = w.site("cone", NatKind::Masquerade);
    let ha = w.probe("probe-a", &cone, "192.0.2.50/25");
    let t = Duration::from_secs(10);

    // The introducer answers STUN Binding on its RTMFP port, and on the
    // next port (listen.stun_alt_port), with the same mapping coturn
    // reports (RFC 8489 XOR-MAPPED-ADDRESS).
    let mut intro = w.introducer("intro1", 1, &[]);
    w.start(&mut intro);
    let probe: SocketAddr = "0.0.0.0:5000".parse().unwrap();
    let alt = SocketAddr::new(public_ip(1), PORT + 1);
    let seen = w
        .lab
        .stun_binding(&ha.ns, probe, &[stun1, introducer_addr(1), alt], t)
        .unwrap_or_else(|e| panic!("STUN binding to the introducer's two ports: {e:#}"));
    assert_eq!(seen[0], SocketAddr::new(cone.public_ip(), 5000));
    assert_eq!(seen[1], seen[0], "the introducer's STUN answer");
    assert_eq!(
        seen[2], seen[0],
        "the introducer's answer on its second port"
    );
    // And it still speaks RTMFP on that port: a node joins through it.
    // With this one introducer (and coturn left out of their configs) the
    // node behind the cone-like NAT and one without NAT each know their
    // mapping.
    w.forget_coturn();
    let mut a = w.node("a", 11, &cone, &[1]);
    let mut p = w.public_node("p", 5, 12, &[1]);
    w.start(&mut a);
    w.start(&mut p);
    w.wait_mesh(&[&intro, &a, &p]);
    for m in [&a, &p] {
        m.node
            .wait_status(SETTLE, |v| nat_mapping(v) == Some("endpoint-independent"))
            .unwrap_or_else(|e| panic!("{}: nat.mapping endpoint-independent: {e:#}", m.name));
    }
}

// ---------------------------------------------------------------------------
// 1. Two cone-like NATs: direct session, introducers idle, 100 MiB intact.
// ---------------------------------------------------------------------------

#[test]
fn cone_nats_connect_directly_and_introducers_carry_no_frames() {
    let Some(w) = NatLab::new() else { return };
    let p = w.started_pair([NatKind::Masquerade; 2], &[1]);
    let (intro, a, b, sa, sb) = (&p.intros[0], &p.a, &p.b, &p.sa, &p.sb);
    w.wait_mesh(&[intro, a, b]);

    // Each learnt its reflexive address (STUN: the introducer) and that
    // its NAT maps endpoint-independently (the introducer's second port).
    for (m, site) in [(a, sa), (b, sb)] {
        let want = SocketAddr::new(site.public_ip(), PORT).to_string();
        let st = m
            .node
            .wait_status(SETTLE, |v| {
                nat_mapping(v) == Some("endpoint-independent")
                    && v["nat"]["reflexive"].to_string().contains(&want)
            })
            .unwrap_or_else(|e| {
                panic!(
                    "{}: nat.mapping endpoint-independent with reflexive {want}: {e:#}",
                    m.name
                )
            });
        let addrs = st["addresses"].to_string();
        assert!(
            addrs.contains(&want) && addrs.contains("reflexive"),
            "{} lists its reflexive address {want}: {addrs}",
            m.name
        );
    }

    // The a-b session is direct, from NAT to NAT.
    assert_direct_pair(&w, (a, sa), (b, sb));
    w.wait_ping(a, b, SETTLE);
    w.wait_ping(b, a, SETTLE);

    // Setup is over: from now on the introducer's sessions with a and b
    // carry (almost) nothing.
    assert_introducer_idle(&w, intro, a, b, 100, || {
        let st = w.lab.ping_stats(&a.host.ns, b.overlay(), 50).unwrap();
        assert!(st.received >= 45, "a -> b: {st:?}");
        w.transfer(a, b, 5001, 100);
    });
    // The sessions are still direct.
    let s = w.wait_open(a, b);
    assert_direct_nat("a", "b", &s, sb.public_ip());
}

// ---------------------------------------------------------------------------
// 2. Same NAT: the LAN path, no hairpin.
// ---------------------------------------------------------------------------

#[test]
fn same_nat_uses_the_lan_path_not_a_hairpin() {
    let Some(w) = NatLab::new() else { return };
    let sa = w.site("a", NatKind::Masquerade);
    w.router_counters(&sa);
    let mut intro = w.introducer("intro1", 1, &[]);
    let mut a1 = w.node("a1", 11, &sa, &[1]);
    let mut a2 = w.node("a2", 12, &sa, &[1]);
    w.start(&mut intro);
    w.start(&mut a1);
    w.start(&mut a2);
    w.wait_mesh(&[&intro, &a1, &a2]);

    let lan2 = SocketAddr::new(a2.host.addr, PORT).to_string();
    let lan1 = SocketAddr::new(a1.host.addr, PORT).to_string();
    for (m, other, lan) in [(&a1, &a2, &lan2), (&a2, &a1, &lan1)] {
        let po = other.peer();
        let st = m
            .node
            .wait_status(SETTLE, |v| {
                open_session(v, &po).is_some_and(|s| path_kind(s) == Some("direct-lan"))
            })
            .unwrap_or_else(|e| {
                panic!(
                    "{}'s session with {} is not direct-lan: {e:#}",
                    m.name, other.name
                )
            });
        let s = open_session(&st, &po).unwrap();
        assert_eq!(
            s["remote"].as_str(),
            Some(lan.as_str()),
            "{}'s session with {} uses its LAN address: {s}",
            m.name,
            other.name
        );
    }

    let (hairpin0, _) = w.router_counter(&sa, "hairpin");
    let (_, fwd0) = w.router_counter(&sa, "forwarded");
    w.wait_ping(&a1, &a2, SETTLE);
    w.transfer(&a1, &a2, 5002, 20);
    let (hairpin1, _) = w.router_counter(&sa, "hairpin");
    let (_, fwd1) = w.router_counter(&sa, "forwarded");
    eprintln!(
        "router: {} packets to its public address from inside (total {hairpin1}), \
         {} bytes forwarded during 20 MiB a1 -> a2",
        hairpin1 - hairpin0,
        fwd1 - fwd0
    );
    // Probing a peer's reflexive candidate during setup may touch the
    // router's public address; the traffic itself must not.
    assert!(
        hairpin1 - hairpin0 < STRAY_FRAMES,
        "{} packets from inside to the router's public address (hairpin) during the transfer",
        hairpin1 - hairpin0
    );
    assert!(
        fwd1 - fwd0 < MIB,
        "the router forwarded {} bytes while a1 and a2 moved 20 MiB on their LAN",
        fwd1 - fwd0
    );
}

// ---------------------------------------------------------------------------
// 3. Symmetric + cone-like: still direct.
// ---------------------------------------------------------------------------

/// The hard case of the issue. The symmetric side `s` uses a fresh public
/// port for every destination, and the cone-like side's NAT filters by exact
/// remote endpoint (port-restricted): `c` can only open its filter for ports
/// of `s`'s NAT it knows, and the only one it can learn (from the
/// introducer) belongs to `s`'s mapping towards the introducer. Forwarder
/// introduction alone (RFC 7016 3.5.1.6) therefore cannot pass; birthday
/// punching does (docs/nat.md): `s` sends its IHello from 256 extra sockets
/// to `c`'s public address, `c` sprays its IHello at 1024 random ports of
/// `s`'s public IP, and a hit opens a path both ways on which the session
/// runs. Checked: the session is direct (NAT to NAT, not via the
/// introducer), ping works, and 16 MiB of TCP arrive intact.
#[test]
fn symmetric_and_cone_nat_still_connect_directly() {
    let Some(w) = NatLab::new() else { return };
    // s behind the symmetric-like NAT, c behind the cone-like one.
    let Pair {
        sa: ss,
        sb: sc,
        mut intros,
        a: mut s,
        b: mut c,
    } = w.pair([NatKind::FullyRandom, NatKind::Masquerade], &[1]);
    let mut intro = intros.remove(0);
    w.start(&mut intro);
    let t0 = Instant::now();
    w.start(&mut s);
    w.start(&mut c);
    // Direct within 20 s of both agents starting (the bound).
    let (ps, pc) = (s.peer(), c.peer());
    for (m, p) in [(&s, &pc), (&c, &ps)] {
        let left = DIRECT_WITHIN.saturating_sub(t0.elapsed());
        m.node
            .wait_status(left, |v| {
                open_session(v, p).is_some_and(|x| path_kind(x) == Some("direct-nat"))
            })
            .unwrap_or_else(|e| {
                panic!(
                    "{} has no direct session with {} within {DIRECT_WITHIN:?}: {e:#}",
                    m.name, p.name
                )
            });
    }
    eprintln!(
        "symmetric <-> cone: direct session {:?} after both agents started",
        t0.elapsed()
    );
    w.wait_mesh(&[&intro, &s, &c]);
    let first = w.wait_ping(&s, &c, SETTLE);
    eprintln!(
        "symmetric <-> cone: both agents started -> first ping reply s -> c after {:?} \
         (this ping took {first:?})",
        t0.elapsed()
    );
    for (m, want) in [(&s, "endpoint-dependent"), (&c, "endpoint-independent")] {
        m.node
            .wait_status(SETTLE, |v| nat_mapping(v) == Some(want))
            .unwrap_or_else(|e| panic!("{}: nat.mapping {want}: {e:#}", m.name));
    }
    assert_direct_pair(&w, (&s, &ss), (&c, &sc));
    w.wait_ping(&s, &c, SETTLE);
    w.wait_ping(&c, &s, SETTLE);
    let st = w.lab.ping_stats(&s.host.ns, c.overlay(), 50).unwrap();
    assert!(st.received >= 45, "s -> c: {st:?}");

    // The traffic runs on the s-c session, not through the introducer.
    assert_introducer_idle(&w, &intro, &c, &s, 16, || {
        w.transfer(&c, &s, 5004, 16);
    });
    assert_direct_pair(&w, (&s, &ss), (&c, &sc));

    // The introducer dies without a goodbye: the pair's path does not go
    // through it, so they keep pinging, directly.
    let p = intro.proc();
    w.lab.signal(&p, libc::SIGKILL).unwrap();
    w.lab.wait(&p, SETTLE).unwrap();
    let st = w.lab.ping_stats(&s.host.ns, c.overlay(), 20).unwrap();
    assert!(st.received >= 18, "s -> c without the introducer: {st:?}");
    let st = w.lab.ping_stats(&c.host.ns, s.overlay(), 20).unwrap();
    assert!(st.received >= 18, "c -> s without the introducer: {st:?}");
    assert_direct_pair(&w, (&s, &ss), (&c, &sc));
}

// ---------------------------------------------------------------------------
// 4. Symmetric + symmetric: "no direct path", steadily.
// ---------------------------------------------------------------------------

#[test]
fn symmetric_nats_report_no_direct_path_without_flapping() {
    let Some(w) = NatLab::new() else { return };
    let p = w.started_pair([NatKind::FullyRandom; 2], &[1]);
    let (intro, a, b) = (&p.intros[0], &p.a, &p.b);
    w.wait_mesh(&[intro, a]);
    w.wait_mesh(&[intro, b]);

    for m in [a, b] {
        m.node
            .wait_status(SETTLE, |v| nat_mapping(v) == Some("endpoint-dependent"))
            .unwrap_or_else(|e| panic!("{}: nat.mapping endpoint-dependent: {e:#}", m.name));
    }
    // The overlay wants a-b (two ring members), the punch cannot work: each
    // side reports one entry for the other, carried by a relay (the
    // introducer relays by default), and says there is no direct path.
    let (pa, pb) = (a.peer(), b.peer());
    let no_path = |v: &Value, p: &Peer| -> bool {
        let e = entries_with(v, p);
        e.len() == 1
            && e[0]["state"] == "open"
            && path_kind(e[0]) == Some("relayed")
            && e[0]["reason"] == "no direct path"
    };
    for (m, p) in [(a, &pb), (b, &pa)] {
        m.node
            .wait_status(SETTLE, |v| no_path(v, p))
            .unwrap_or_else(|e| {
                panic!(
                    "{} does not report 'no direct path' to {}: {e:#}",
                    m.name, p.name
                )
            });
    }
    // And it keeps saying so: no direct session, no second entry, no
    // disappearing entry, for a while.
    let t0 = Instant::now();
    let mut samples = 0;
    while t0.elapsed() < OBSERVE {
        for (m, p) in [(a, &pb), (b, &pa)] {
            let v = m.status().unwrap();
            assert!(
                no_path(&v, p),
                "{}'s verdict on {} changed after {:?}: {:?}",
                m.name,
                p.name,
                t0.elapsed(),
                entries_with(&v, p)
            );
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("'no direct path' held for {OBSERVE:?} ({samples} samples on each side)");
    // Clearly: the entry says why, and so does the human status table.
    let v = a.status().unwrap();
    let reason = entries_with(&v, &pb)[0]["reason"].as_str().unwrap_or("");
    assert!(!reason.is_empty(), "a's entry for b gives no reason: {v}");
    let out = std::process::Command::new(BIN)
        .args(["status", "--socket"])
        .arg(&a.node.socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // The row names b, or (when its name is not known here: the overlay
    // knows only ring neighbours by name) starts with b's short id.
    let short = pb.id.as_deref().map(|id| &id[..8]).unwrap_or("-");
    let row = text
        .lines()
        .find(|l| l.contains(" b ") || l.ends_with(" b") || l.starts_with(short));
    assert!(
        row.is_some_and(|l| l.contains("relayed via intro1") && l.contains(reason)),
        "`ringlan status` row for b should say `relayed via intro1 ({reason})`:\n{text}"
    );
    // The introducer still serves both.
    w.wait_mesh(&[intro, a]);
    w.wait_mesh(&[intro, b]);
}

// ---------------------------------------------------------------------------
// 5. The NAT's public mapping changes mid-transfer: TCP survives.
// ---------------------------------------------------------------------------

/// a's NAT renumbering: the introducer's session with a follows a's
/// packets (RFC 7016 3.5.4.2) and announces `Moved { a, new }`; b probes
/// the new address (`Endpoint::probe_path`), which opens b's NAT to it.
#[test]
fn tcp_inside_the_lan_survives_nat_rebinding() {
    let Some(w) = NatLab::new() else { return };
    let mut pair = w.started_pair([NatKind::Masquerade; 2], &[1]);
    let (intro, a, b, sb) = (&pair.intros[0], &pair.a, &pair.b, &pair.sb);
    w.wait_mesh(&[intro, a, b]);
    w.wait_ping(a, b, SETTLE);

    let job = w.stream(a, b, 5003);
    let flowing = |what: &str, from: u64| w.wait_flowing(&job, from, 4 * MIB, what);

    // 1. b's NAT forgets every mapping (conntrack flush).
    let t0 = Instant::now();
    let at = job.received();
    w.lab.flush_conntrack(&sb.router.ns).unwrap();
    flowing("stream flowing after b's NAT flushed its mappings", at);
    eprintln!(
        "stream resumed {:?} after b's conntrack flush",
        t0.elapsed()
    );

    // 2. a's NAT gets a new public address (and forgets its mappings).
    let t0 = Instant::now();
    let at = job.received();
    w.lab
        .set_public_addr(&mut pair.sa.router, "198.51.100.20/24")
        .unwrap();
    flowing(
        "stream flowing after a's NAT changed its public address",
        at,
    );
    eprintln!(
        "stream resumed {:?} after a's NAT moved to {}",
        t0.elapsed(),
        pair.sa.public_ip()
    );

    w.finish_stream(job, a, b);

    // The path is direct again, to a's new public address.
    let pa = a.peer();
    let new_a = pair.sa.public_ip();
    b.node
        .wait_status(SETTLE, |v| {
            open_session(v, &pa)
                .is_some_and(|s| path_kind(s) == Some("direct-nat") && remote_ip(s) == Some(new_a))
        })
        .unwrap_or_else(|e| panic!("b's session with a is not direct to {new_a}: {e:#}"));
}

// ---------------------------------------------------------------------------
// 6. One of two introducers dies: new nodes join through the other.
// ---------------------------------------------------------------------------

#[test]
fn new_nodes_join_through_the_remaining_introducer() {
    let Some(w) = NatLab::new() else { return };
    w.coturn();
    let sa = w.site("a", NatKind::Masquerade);
    let sb = w.site("b", NatKind::Masquerade);
    let mut i1 = w.introducer("intro1", 1, &[2]);
    let mut i2 = w.introducer("intro2", 2, &[1]);
    let mut a = w.node("a", 11, &sa, &[1, 2]);
    w.start(&mut i1);
    w.start(&mut i2);
    w.wait_mesh(&[&i1, &i2]);
    w.start(&mut a);
    w.wait_mesh(&[&i1, &i2, &a]);

    // intro1 dies without a goodbye.
    let pi1 = i1.peer();
    let p = i1.proc();
    w.lab.signal(&p, libc::SIGKILL).unwrap();
    w.lab.wait(&p, SETTLE).unwrap();

    // Two new nodes (one per site) list intro1 first; they join through
    // intro2 and reach a and each other.
    let mut b = w.node("b", 21, &sb, &[1, 2]);
    let mut c = w.node("c", 12, &sa, &[1, 2]);
    w.start(&mut b);
    w.start(&mut c);
    w.wait_mesh(&[&i2, &a, &b, &c]);
    for (x, y) in [(&b, &a), (&c, &b), (&a, &c)] {
        w.wait_ping(x, y, SETTLE);
        w.wait_ping(y, x, SETTLE);
    }
    for m in [&b, &c] {
        let v = m.status().unwrap();
        assert!(
            !open_with(&v, &pi1),
            "{} has an open session with the dead intro1: {v}",
            m.name
        );
    }
}

// ---------------------------------------------------------------------------
// Benchmark (printed, not asserted): time to the first ping across two
// cone-like NATs from both agents started, and recovery after a rebinding.
// ---------------------------------------------------------------------------

#[test]
#[ignore = "benchmark: run with --ignored --nocapture (tests/bench/nat.sh)"]
fn bench_nat_first_ping_and_rebinding_recovery() {
    let Some(w) = NatLab::new() else { return };
    let Pair {
        mut sa,
        mut intros,
        mut a,
        mut b,
        ..
    } = w.pair([NatKind::Masquerade; 2], &[1]);
    let mut intro = intros.remove(0);
    w.start(&mut intro);
    w.wait_answers(&intro);

    let t0 = Instant::now();
    w.lab.start_node(&mut a.node).unwrap();
    w.lab.start_node(&mut b.node).unwrap();
    let first = w.wait_ping(&a, &b, SETTLE);
    let first = first.max(t0.elapsed());
    // Status is published once a second: the path as soon as it shows.
    let s = w.wait_open(&a, &b);
    let direct = path_kind(&s).unwrap_or("?").to_string();
    println!(
        "bench nat: both agents started -> first ping reply a -> b: {first:?} (path {direct})"
    );

    let mut rebinding = Vec::new();
    for (i, addr) in ["198.51.100.20/24", "198.51.100.21/24", "198.51.100.22/24"]
        .iter()
        .enumerate()
    {
        // Traffic must be flowing when the mapping changes.
        w.wait_ping(&a, &b, SETTLE);
        let t = Instant::now();
        w.lab.set_public_addr(&mut sa.router, addr).unwrap();
        let mut pings = 0u32;
        let r = wait_for(SETTLE, "ping after rebinding", || {
            pings += 1;
            Ok(
                ping_once(&w.lab, &a.host.ns, b.overlay(), Duration::from_millis(200))
                    .then_some(()),
            )
        });
        let d = t.elapsed();
        if let Err(e) = r {
            println!("bench nat: rebinding {i} (a's NAT -> {addr}): no recovery: {e:#}");
            break;
        }
        println!("bench nat: rebinding {i} (a's NAT -> {addr}): first ping reply after {d:?} ({pings} pings)");
        rebinding.push(d);
    }
    if rebinding.is_empty() {
        return;
    }
    rebinding.sort();
    println!(
        "bench nat: rebinding recovery median {:?} (min {:?}, max {:?})",
        rebinding[rebinding.len() / 2],
        rebinding[0],
        rebinding[rebinding.len() - 1]
    );
}

// ---------------------------------------------------------------------------
// Benchmark (printed, not asserted): the NAT matrix of docs/nat.md. For each
// pair of NAT kinds (none = a public address, cone-like, symmetric, and two
// nodes behind one cone-like NAT), one introducer and no other STUN server:
// the path the pair ends on and the time from both agents started to it.
// ---------------------------------------------------------------------------

/// Where a member of a matrix pair sits.
#[derive(Clone, Copy, Debug)]
enum Place {
    Public,
    Nat(NatKind),
}

impl Place {
    fn label(self) -> &'static str {
        match self {
            Place::Public => "none (public)",
            Place::Nat(NatKind::Masquerade) => "cone-like",
            Place::Nat(NatKind::FullyRandom) => "symmetric",
        }
    }
}

/// How long the matrix waits for a pair's path to settle.
const MATRIX_SETTLE: Duration = Duration::from_secs(40);

/// Starts a pair at `places` (`same_nat`: both behind one cone-like NAT)
/// and returns (path, time to the first open session on both ends, time
/// to a direct path on both ends if any).
/// Drops every UDP datagram a host sends: with it, the host's agent falls
/// back to TCP (docs/tcp.md).
const DROP_UDP_OUT: &str = "table inet rl_bench_tcp {\n\
    \x20 chain output { type filter hook output priority filter; policy accept;\n\
    \x20   meta l4proto udp drop\n\
    \x20 }\n\
    }\n";

/// One pair of the matrix: the path both ends settle on, when both first
/// had an open session, and when both went direct. With `b_over_tcp`, b's
/// outgoing UDP is dropped (it joins over TCP and cannot go direct, so the
/// pair is measured to its first open session).
fn matrix_pair(
    places: [Place; 2],
    same_nat: bool,
    b_over_tcp: bool,
) -> Option<(String, Duration, Option<Duration>)> {
    let w = NatLab::new()?;
    let mut intro = w.introducer("intro1", 1, &[]);
    w.start(&mut intro);
    w.wait_answers(&intro);
    let shared = same_nat.then(|| w.site("a", NatKind::Masquerade));
    let mut sites = Vec::new();
    let mut members = Vec::new();
    for (i, p) in places.iter().enumerate() {
        let name = ["a", "b"][i];
        let idx = [11, 21][i];
        let m = match (p, &shared) {
            (_, Some(site)) => w.node(name, idx, site, &[1]),
            (Place::Public, None) => w.public_node(name, 5 + i as u8, idx, &[1]),
            (Place::Nat(k), None) => {
                sites.push(w.site(name, *k));
                w.node(name, idx, sites.last().unwrap(), &[1])
            }
        };
        members.push(m);
    }
    if b_over_tcp {
        w.lab
            .nft(&members[1].host.ns, DROP_UDP_OUT)
            .expect("drop rule");
    }
    let t0 = Instant::now();
    for m in members.iter_mut() {
        w.lab.start_node(&mut m.node).unwrap();
    }
    let (a, b) = (&members[0], &members[1]);
    // How each names the other (its node id, once its control socket
    // answers).
    let peer = |x: &Member| -> Option<Peer> {
        let v = x.status().ok()?;
        Some(Peer {
            name: x.name.clone(),
            id: Some(v["node_id"].as_str()?.to_string()),
        })
    };
    let kinds = |x: &Member, p: &Peer| -> Option<String> {
        let v = x.status().ok()?;
        open_session(&v, p).and_then(path_kind).map(str::to_string)
    };
    let mut opened = None;
    let mut direct = None;
    let mut last = String::from("none");
    let (mut pa, mut pb) = (None, None);
    while t0.elapsed() < MATRIX_SETTLE && direct.is_none() {
        pa = pa.or_else(|| peer(a));
        pb = pb.or_else(|| peer(b));
        let k = |x, p: &Option<Peer>| p.as_ref().and_then(|p| kinds(x, p));
        if let (Some(ka), Some(kb)) = (k(a, &pb), k(b, &pa)) {
            opened.get_or_insert(t0.elapsed());
            if ka.starts_with("direct") && kb.starts_with("direct") {
                direct = Some(t0.elapsed());
            }
            last = if ka == kb { ka } else { format!("{ka} / {kb}") };
            if b_over_tcp {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Some((last, opened?, direct))
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture (tests/bench/nat.sh)"]
fn bench_nat_matrix() {
    use NatKind::*;
    let cases: [([Place; 2], bool); 7] = [
        ([Place::Public, Place::Public], false),
        ([Place::Public, Place::Nat(Masquerade)], false),
        ([Place::Public, Place::Nat(FullyRandom)], false),
        ([Place::Nat(Masquerade), Place::Nat(Masquerade)], false),
        ([Place::Nat(Masquerade), Place::Nat(Masquerade)], true),
        ([Place::Nat(FullyRandom), Place::Nat(Masquerade)], false),
        ([Place::Nat(FullyRandom), Place::Nat(FullyRandom)], false),
    ];
    let mut rows = Vec::new();
    for (places, same) in cases {
        let pair = if same {
            "cone-like | cone-like, the same NAT".to_string()
        } else {
            format!("{} | {}", places[0].label(), places[1].label())
        };
        let row = match matrix_pair(places, same, false) {
            None => return, // root tests skipped
            Some((path, opened, direct)) => {
                let to_path = match direct {
                    Some(d) => format!("{path}, {:.1} s", d.as_secs_f64()),
                    None => format!("{path}, {:.1} s (no direct path)", opened.as_secs_f64()),
                };
                let tcp = match matrix_pair(places, same, true) {
                    Some((path, opened, _)) => format!("{path}, {:.1} s", opened.as_secs_f64()),
                    None => format!("no session within {} s", MATRIX_SETTLE.as_secs()),
                };
                format!("| {pair} | {to_path} | {tcp} |")
            }
        };
        println!("bench nat matrix: {row}");
        rows.push(row);
    }
    println!("\n| node a | node b | UDP: path, time from both started | b's UDP blocked (TCP fallback): path, time to a session |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
