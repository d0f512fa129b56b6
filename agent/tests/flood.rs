//! An outsider floods the introducer with spoofed datagrams for 30 s
//! (`ringlan_lab::flood`: STUN binding requests, replayed valid IHellos as
//! from an attacker holding the network secret, and random garbage, each
//! from the next of 65,534 IPv4 addresses and, at the same time, from the
//! next of 65,536 IPv6 /64s, as fast as the machine sends; the introducer
//! listens dual-stack on `::`)
//! while the network goes on working: a new node joins through the
//! flooded introducer, and two members behind NATs carry a TCP stream
//! while one NAT forgets its mappings. The join succeeds, the stream
//! arrives intact, no agent restarts and the pair's session is the one it
//! had before. The test prints the flood rate it reached and the join
//! time; it asserts no timing (the join waits on a hang guard).
//!
//! The pre-authentication limits this exercises are in `docs/limits.md`.
//! The lab (`natlab/mod.rs`) has no route out: the introducer's default
//! routes (IPv4 and IPv6) point at the flooding host, which forwards
//! nothing, so answers to spoofed sources die there.
//!
//! Needs root; `RINGLAN_SKIP_ROOT_TESTS=1` skips it when not root.

mod natlab;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use natlab::*;
use ringlan_lab::agents::*;
use ringlan_lab::flood::{self, Flood, FloodSpec};
use ringlan_lab::NatKind;
use serde_json::Value;

const FLOOD_FOR: Duration = Duration::from_secs(30);
/// The flooding host on the public segment.
const FLOODER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 250);
/// IPv6 on the public segment: the introducer and the flooding host.
const INTRO6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const FLOODER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0xfa);

/// Node-wide datagrams the endpoint refused or could not use (`udp_*`).
fn udp_drops(status: &Value) -> u64 {
    status["drops"]
        .as_object()
        .map(|d| {
            d.iter()
                .filter(|(k, _)| k.starts_with("udp_"))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// The age of `m`'s open session with `peer` in `m`'s status `st`.
fn session_age(st: &Value, m: &Member, peer: &Member) -> u64 {
    open_session(st, &peer.peer())
        .and_then(|s| s["age_secs"].as_u64())
        .unwrap_or_else(|| panic!("{} has no open session with {}", m.name, peer.name))
}

#[test]
fn the_network_works_through_a_spoofed_flood_of_the_introducer() {
    let Some(w) = NatLab::new() else { return };
    let mut pair = w.pair([NatKind::Masquerade; 2], &[1]);
    let mut c = w.node("c", 12, &pair.sa, &[1]);
    // The introducer listens dual-stack (the default; said here so the
    // test keeps its meaning), so the IPv6 half of the flood reaches its
    // endpoint too.
    let intro_cfg = std::fs::read_to_string(&pair.intros[0].node.config).unwrap();
    assert!(intro_cfg.contains("\nlisten:\n"), "{intro_cfg}");
    pair.intros[0]
        .node
        .write_config(&intro_cfg.replacen("\nlisten:\n", "\nlisten:\n  address: \"::\"\n", 1))
        .unwrap();
    for m in pair.intros.iter_mut().chain([&mut pair.a, &mut pair.b]) {
        w.start(m);
    }
    let (intro, a, b) = (&pair.intros[0], &pair.a, &pair.b);
    w.wait_mesh(&[intro, a, b]);
    w.wait_ping(a, b, SETTLE);

    let flooder = w
        .lab
        .host("flood", &w.underlay, &format!("{FLOODER}/24"), None)
        .expect("flooding host");
    w.lab
        .route(&intro.host.ns, "default", IpAddr::V4(FLOODER))
        .unwrap();
    for (ns, addr) in [(&intro.host.ns, INTRO6), (&flooder.ns, FLOODER6)] {
        let cidr = format!("{addr}/64");
        w.lab
            .run(
                ns,
                &["ip", "-6", "addr", "add", &cidr, "dev", "eth0", "nodad"],
            )
            .unwrap();
    }
    w.lab
        .run(
            &intro.host.ns,
            &[
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                &FLOODER6.to_string(),
            ],
        )
        .unwrap();
    // Counts the IPv6 half arriving at the introducer's host.
    w.lab
        .nft(
            &intro.host.ns,
            "table inet rl_flood {\n\
             \x20 counter v6 {}\n\
             \x20 chain input { type filter hook input priority filter; policy accept;\n\
             \x20   meta nfproto ipv6 udp dport 4910 counter name v6\n\
             \x20 }\n\
             }\n",
        )
        .unwrap();
    let secret = std::fs::read_to_string(&w.secret).unwrap();
    let secret = ringlan_agent::identity::parse_hex32(secret.trim_end()).expect("secret");
    let target = introducer_addr(1);
    let target6 = SocketAddr::from((INTRO6, target.port()));
    let ihello = flood::ihello(NETWORK, secret, target).unwrap();

    let drops_before = udp_drops(&intro.status().unwrap());
    let job = w.stream(a, b, 5007);
    let age_before = session_age(&b.status().unwrap(), b, a);
    let t_flood = Instant::now();
    let f4 = Flood::start(
        &flooder.ns,
        FloodSpec {
            target,
            source_base: Ipv4Addr::new(100, 64, 0, 0).into(),
            source_prefix: 16,
            duration: FLOOD_FOR,
            payloads: vec![ihello.clone()],
        },
    )
    .unwrap();
    let f6 = Flood::start(
        &flooder.ns,
        FloodSpec {
            target: target6,
            source_base: Ipv6Addr::new(0x2001, 0xdb8, 0xf000, 0, 0, 0, 0, 0).into(),
            source_prefix: 48,
            duration: FLOOD_FOR,
            payloads: vec![ihello],
        },
    )
    .unwrap();

    // (a) A new node joins through the flooded introducer.
    std::thread::sleep(Duration::from_secs(2));
    let t_join = Instant::now();
    w.start(&mut c);
    w.wait_open(&c, intro);
    w.wait_open(&c, b);
    let join = t_join.elapsed();

    // (b) a's NAT forgets its mappings while the stream runs.
    let at = job.received();
    w.lab.flush_conntrack(&pair.sa.router.ns).unwrap();
    w.wait_flowing(&job, at, 4 * MIB, "stream flowing after a's NAT flush");

    let (r4, r6) = (f4.finish().unwrap(), f6.finish().unwrap());
    let flood_time = t_flood.elapsed();
    let t = w.finish_stream(job, a, b);
    for (family, r) in [("IPv4", r4), ("IPv6", r6)] {
        eprintln!(
            "flood {family}: {} datagrams from {} sources in {:.1?} = {:.0}/s ({} send errors)",
            r.sent,
            r.sources,
            r.elapsed,
            r.rate(),
            r.errors,
        );
    }
    eprintln!(
        "join through the flooded introducer took {join:.1?}; stream {} MiB intact",
        t.bytes_received / MIB
    );

    // The flood reached the introducer's endpoint.
    let drops = udp_drops(&intro.status().unwrap()) - drops_before;
    eprintln!("introducer: {drops} datagrams refused or dropped during the flood");
    assert!(drops > 0, "the flood never reached the introducer");
    let v6 = w
        .lab
        .nft_counter(&intro.host.ns, "inet", "rl_flood", "v6")
        .unwrap();
    eprintln!("introducer's host: {v6} IPv6 datagrams to the RTMFP port");
    assert!(v6 > 0, "the IPv6 flood never reached the introducer's host");
    // Nothing restarted: every agent still runs, and the pair's session is
    // the one from before the flood.
    for m in [intro, a, b, &c] {
        assert!(w.lab.is_running(&m.proc()), "{} exited", m.name);
    }
    // The introducer listens dual-stack, yet no agent ever names an
    // IPv4-mapped address (the driver keeps them below the node core), and
    // no member failed to send: a mapped address handed to an IPv4-only
    // member was unusable to it (`udp_send_error`) and, after a NAT
    // flush, cost a pair its session.
    for m in [intro, a, b, &c] {
        let st = m.status().unwrap();
        let text = st.to_string();
        assert!(
            !text.contains("::ffff:"),
            "{} names an IPv4-mapped address: {text}",
            m.name
        );
        let errors = st["drops"]["udp_send_error"].as_u64().unwrap_or(0);
        eprintln!("{}: {errors} datagrams the OS refused to send", m.name);
        if m.name != intro.name {
            assert_eq!(errors, 0, "{} could not send: {text}", m.name);
        }
    }
    // A status taken after the flood (one read at once may be a second old).
    let age_after = session_age(&b.node.fresh_status(SETTLE).unwrap(), b, a);
    assert!(
        age_after + 1 >= age_before + flood_time.as_secs(),
        "b's session with a is newer than the flood: age {age_after} s, was {age_before} s \
         {flood_time:?} earlier"
    );
}
