//! A member sending fake gossip that names a non-member victim's address
//! (issue 12, item 2): real `ringlan up` agents (an introducer and two
//! nodes on the NAT lab's public segment, with coturn so that they know
//! their NAT mapping and would spray), and a liar that holds the network
//! secret but is no agent: a thread enters its namespace and runs a
//! [`ringlan_node::Node`] on a UDP socket with a small loop, joins, and
//! every second sends each node it links to a `Ring` of 32 fresh fake
//! members next to that node on the ring, all "observed" at ports of the
//! victim, a plain host on the same segment. nftables counters in the
//! victim's namespace count what each honest agent sends it; each stays
//! within the per-IP budget on unverified destinations
//! (`ringlan_node::reach`, docs/limits.md "Unverified destinations"), and
//! the agents count the drops (`unverified_ip_budget`).
//!
//! Needs root; `RINGLAN_SKIP_ROOT_TESTS=1` skips it when not root.

mod natlab;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use natlab::*;
use ringlan_lab::agents::PORT;
use ringlan_node::reach::{DEFAULT_BUDGET, DROP_REASON};
use ringlan_node::status::TapStatus;
use ringlan_node::{LocalIf, Node, NodeSetup, Role};
use ringlan_overlay::wire::{AddrOrigin, Member as Record, Message, TaggedAddr};
use ringlan_tunnel::{BirthdayConfig, DatagramMachine, NodeId, RelayLimits, SocketId};

const LIAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 30);
const VICTIM: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 40);
/// How long the liar lies.
const ATTACK: Duration = Duration::from_secs(40);
/// After the last lie: openings and sprays it started still run.
const TAIL: Duration = Duration::from_secs(10);

/// 32 fresh fake member records next to `near` on the ring (round `s`),
/// each at a port of the victim, marked as the sender's own observation.
fn fakes(near: NodeId, s: u128) -> Vec<Record> {
    (0..32u128)
        .map(|k| Record {
            node_id: NodeId(near.0.wrapping_add((s * 32 + k + 1) << 20)),
            name: format!("fake{s}-{k}"),
            role: ringlan_overlay::Role::Node,
            has_tap: true,
            addrs: vec![TaggedAddr {
                origin: AddrOrigin::Reflexive,
                addr: SocketAddr::new(IpAddr::V4(VICTIM), 40_000 + k as u16),
            }],
        })
        .collect()
}

/// The liar: a node run in namespace `ns` on 198.51.100.30:4910 until
/// `stop`, lying from `lie_at` on. Returns how many fake records it sent.
fn liar(ns: PathBuf, secret: [u8; 32], lie_at: Instant, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let f = File::open(&ns).expect("liar namespace");
        // SAFETY: setns on a file descriptor we own; it moves only this
        // thread (network namespaces are per thread).
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let listen = SocketAddr::new(IpAddr::V4(LIAR), PORT);
        let sock = UdpSocket::bind(listen).expect("liar socket");
        let t0 = Instant::now();
        let setup = NodeSetup {
            network: NETWORK.into(),
            secret,
            key: [0x5a; 32],
            name: "liar".into(),
            role: Role::Node,
            mac: [2, 0, 0, 0, 0, 0x30],
            bridge: false,
            mtu: 1400,
            tap: TapStatus {
                name: "none".into(),
                mac: "02:00:00:00:00:30".into(),
                mtu: 1400,
                addresses: Vec::new(),
            },
            listen,
            introducers: vec![introducer_addr(1)],
            stun_servers: Vec::new(),
            tcp_introducers: Vec::new(),
            stun_alt_port: 0,
            keepalive: Duration::from_secs(25),
            rekey_interval: Duration::from_secs(120),
            relay: RelayLimits::default(),
            birthday: BirthdayConfig::default(),
            interfaces: vec![LocalIf {
                ip: IpAddr::V4(LIAR),
                prefix: 24,
            }],
            unix_time: 1_796_256_000,
            membership: None,
        };
        let mut node = Node::new(t0, setup, [0x30; 32]).expect("liar node");
        let mut buf = vec![0u8; 65_536];
        let mut out = vec![0u8; 65_536];
        let mut next_lie = lie_at;
        let mut round = 0u128;
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            // Extra sockets (birthday punching) are never needed here.
            while node.poll_socket_action().is_some() {}
            while let Some(o) = node.poll_transmit(now, &mut out) {
                if o.socket == SocketId::MAIN {
                    let _ = sock.send_to(&out[..o.size], o.destination);
                }
            }
            while let Some(w) = node.poll_tap() {
                node.recycle(w);
            }
            while node.poll_event().is_some() {}
            if now >= next_lie {
                let peers: Vec<NodeId> =
                    node.overlay().neighbours().iter().map(|n| n.node).collect();
                for p in peers {
                    node.send_control_message(now, p, &Message::Ring(fakes(p, round)));
                    sent += 32;
                }
                round += 1;
                next_lie += Duration::from_secs(1);
                continue;
            }
            let wake = node
                .poll_timeout()
                .unwrap_or(now + Duration::from_millis(100))
                .min(next_lie)
                .min(now + Duration::from_millis(100));
            let wait = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            sock.set_read_timeout(Some(wait)).expect("read timeout");
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                node.handle_datagram(Instant::now(), SocketId::MAIN, from, &mut buf[..n]);
            }
            let now = Instant::now();
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
        }
        sent
    })
}

#[test]
fn fake_gossip_naming_a_victim_stays_within_the_budget_on_its_segment() {
    let Some(w) = NatLab::new() else { return };
    w.coturn();
    let mut intro = w.introducer("intro1", 1, &[]);
    let mut h1 = w.public_node("h1", 21, 21, &[1]);
    let mut h2 = w.public_node("h2", 22, 22, &[1]);
    for m in [&mut intro, &mut h1, &mut h2] {
        w.start(m);
    }
    w.wait_mesh(&[&intro, &h1, &h2]);

    let victim = w
        .lab
        .host("victim", &w.underlay, &format!("{VICTIM}/24"), None)
        .expect("victim host");
    let honest = [(&intro, 1u8), (&h1, 21), (&h2, 22)];
    let mut rules = String::new();
    let mut counters = String::new();
    for (_, n) in honest {
        counters += &format!("  counter from_{n} {{}}\n");
        rules += &format!(
            "    ip saddr {} meta l4proto udp counter name \"from_{n}\" drop\n",
            public_ip(n)
        );
    }
    w.lab
        .nft(
            &victim.ns,
            &format!(
                "table inet rl_victim {{
{counters}  chain input {{ type filter hook input priority filter; policy accept;
{rules}  }}
}}
"
            ),
        )
        .unwrap_or_else(|e| panic!("victim counters: {e:#}"));

    let liar_host = w
        .lab
        .host("liar", &w.underlay, &format!("{LIAR}/24"), None)
        .expect("liar host");
    let secret = std::fs::read_to_string(&w.secret).unwrap();
    let secret = ringlan_agent::identity::parse_hex32(secret.trim_end()).expect("secret");
    let stop = Arc::new(AtomicBool::new(false));
    // Time to join and link before the lies start.
    let lie_at = Instant::now() + Duration::from_secs(10);
    let thread = liar(liar_host.ns.path(), secret, lie_at, stop.clone());
    std::thread::sleep(lie_at.saturating_duration_since(Instant::now()) + ATTACK + TAIL);
    stop.store(true, Ordering::Relaxed);
    let lies = thread.join().expect("liar thread");

    let mut total = 0;
    for (m, n) in honest {
        let got = w
            .lab
            .nft_counter(&victim.ns, "inet", "rl_victim", &format!("from_{n}"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        // Everything counted so far was sent since the lies began.
        let elapsed = lie_at.elapsed().as_secs_f64();
        let bound = (DEFAULT_BUDGET.burst + DEFAULT_BUDGET.rate * elapsed) as u64;
        let drops = m.status().unwrap()["drops"][DROP_REASON]
            .as_u64()
            .unwrap_or(0);
        eprintln!(
            "{}: {got} datagrams to the victim (budget {bound}), {drops} dropped",
            m.name
        );
        assert!(
            got <= bound,
            "{} sent the victim {got} datagrams in {elapsed:.0} s (budget {bound})",
            m.name
        );
        total += got;
    }
    eprintln!("the liar sent {lies} fake records");
    assert!(lies > 0, "the liar never linked to anyone");
    assert!(
        total > 0,
        "nobody tried the victim: the attack did not land"
    );
    let dropped: u64 = [&h1, &h2]
        .iter()
        .map(|m| {
            m.status().unwrap()["drops"][DROP_REASON]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert!(dropped > 0, "no node counted {DROP_REASON}");
}
