//! The IPv6 underlay (`docs/underlay.md`), real agents in network
//! namespaces on one bridge:
//!
//! - IPv6 only: an introducer and three nodes on 2001:db8::/64, no IPv4
//!   address on the underlay at all, introducers given as
//!   `[2001:db8::1]:4910` and the default `listen` (dual-stack `::`). They
//!   form a full mesh over IPv6, ping and move 16 MiB intact (length and
//!   SHA-256); every session runs over IPv6, and no agent fails a send.
//! - Mixed: a dual-stack introducer (192.0.2.1 and 2001:db8::1), an
//!   IPv4-only node, an IPv6-only node and a dual-stack node. The
//!   dual-stack node reaches the IPv4-only one over IPv4 and the
//!   IPv6-only one over IPv6, directly. The IPv4-only and IPv6-only nodes
//!   have no common family, so no direct path exists: they reach each
//!   other over a relayed route through a member that has both (the
//!   introducer or the dual-stack node), ping and move 16 MiB intact.
//!   Neither ever tries an address of the family it cannot use (no send
//!   errors), and no agent names an IPv4-mapped address.
//!
//! Needs root; `RINGLAN_SKIP_ROOT_TESTS=1` skips it when not root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ringlan_lab::agents::{open_session, path_kind, remote_ip, serial, Member, World, PORT};
use ringlan_lab::Host;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
/// Hang guard for agents to start, mesh, and for traffic to pass (a
/// relayed route is set up only after direct attempts fail).
const SETTLE: Duration = Duration::from_secs(60);

fn world(network: &str) -> Option<World> {
    World::new(BIN, network, &format!("rl-{network}"), "lan6", SETTLE)
}

/// 2001:db8::IDX.
fn v6(idx: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(idx))
}

/// 192.0.2.IDX.
fn v4(idx: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, idx)
}

/// A host on the underlay with 192.0.2.IDX/24 and/or 2001:db8::IDX/64
/// (without duplicate address detection, so the address is usable at
/// once).
fn host(w: &World, name: &str, idx: u8, ipv4: bool, ipv6: bool) -> Host {
    let ns = w.lab.add_ns(name).expect("namespace");
    let cidr4 = format!("{}/24", v4(idx));
    let port = w
        .lab
        .attach(&w.underlay, &ns, "eth0", ipv4.then_some(cidr4.as_str()))
        .expect("underlay port");
    if ipv6 {
        let cidr6 = format!("{}/64", v6(idx));
        w.lab
            .run(
                &ns,
                &["ip", "-6", "addr", "add", &cidr6, "dev", "eth0", "nodad"],
            )
            .expect("IPv6 address");
    }
    let addr = if ipv4 {
        IpAddr::V4(v4(idx))
    } else {
        IpAddr::V6(v6(idx))
    };
    Host { ns, port, addr }
}

/// A member on a host of the given families; the config's `listen` is the
/// default.
fn member(
    w: &World,
    name: &str,
    idx: u8,
    (ipv4, ipv6): (bool, bool),
    role: &str,
    introducers: &[SocketAddr],
) -> Member {
    let h = host(w, name, idx, ipv4, ipv6);
    w.member_with(name, idx, h, role, introducers, |_| {})
}

/// `m` (whose status is `st`) has an open session with `other`, direct
/// on the LAN, at `ip`.
fn assert_direct(st: &Value, m: &Member, other: &Member, ip: IpAddr) {
    let s = open_session(st, &other.peer())
        .unwrap_or_else(|| panic!("{} has no session with {}: {st}", m.name, other.name));
    assert_eq!(remote_ip(s), Some(ip), "{} -> {}: {s}", m.name, other.name);
    assert_eq!(
        path_kind(s),
        Some("direct-lan"),
        "{} -> {}: {s}",
        m.name,
        other.name
    );
}

/// `nat.reflexive` of a status.
fn reflexive(st: &Value) -> Vec<String> {
    st["nat"]["reflexive"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Datagrams the OS refused to send (`udp_send_error`).
fn send_errors(status: &Value) -> u64 {
    status["drops"]["udp_send_error"].as_u64().unwrap_or(0)
}

/// Checks what every one of `members` says about itself: it listens on
/// both families, names no IPv4-mapped address and had no send error.
fn check_statuses(members: &[&Member]) {
    for m in members {
        let st = m.status().unwrap();
        let text = st.to_string();
        let listen: Vec<&str> = st["listen"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(listen, ["0.0.0.0:4910", "[::]:4910"], "{}: {text}", m.name);
        assert!(
            !text.contains("::ffff:"),
            "{} names an IPv4-mapped address: {text}",
            m.name
        );
        assert_eq!(send_errors(&st), 0, "{} could not send: {text}", m.name);
        eprintln!(
            "{}: {} datagrams to a family it cannot send to not sent (other_family)",
            m.name,
            st["drops"]["other_family"].as_u64().unwrap_or(0)
        );
    }
}

#[test]
fn an_ipv6_only_underlay_carries_ping_and_a_transfer() {
    let _serial = serial();
    let Some(w) = world("v6only") else { return };
    let only6 = (false, true);
    let mut intro = member(&w, "intro", 1, only6, "introducer", &[]);
    let intros = [SocketAddr::from((v6(1), PORT))];
    let mut n1 = member(&w, "n1", 11, only6, "node", &intros);
    let mut n2 = member(&w, "n2", 12, only6, "node", &intros);
    let mut n3 = member(&w, "n3", 13, only6, "node", &intros);
    w.start_mesh(&mut [&mut intro, &mut n1, &mut n2, &mut n3]);
    for (a, b) in [(&n1, &n2), (&n2, &n3), (&n3, &n1)] {
        w.wait_ping(a, b, SETTLE);
    }
    let t = w.transfer(&n1, &n3, 5001, 16);
    assert!(t.intact(), "{t:?}");

    let all = [&intro, &n1, &n2, &n3];
    check_statuses(&all);
    for m in all {
        let st = m.status().unwrap();
        for other in all.iter().filter(|o| o.name != m.name) {
            assert_direct(&st, m, other, IpAddr::V6(v6(other.idx)));
        }
        if m.name != intro.name {
            // The introducer sees each node at its own address (no NAT).
            assert_eq!(
                reflexive(&st),
                [format!("[{}]:{PORT}", v6(m.idx))],
                "{}: {st}",
                m.name
            );
        }
    }
}

#[test]
fn ipv4_only_and_ipv6_only_nodes_reach_each_other_through_a_dual_stack_member() {
    let _serial = serial();
    let Some(w) = world("v6mix") else { return };
    let mut intro = member(&w, "intro", 1, (true, true), "introducer", &[]);
    let intro4 = SocketAddr::from((v4(1), PORT));
    let intro6 = SocketAddr::from((v6(1), PORT));
    let mut only4 = member(&w, "only4", 11, (true, false), "node", &[intro4]);
    let mut only6 = member(&w, "only6", 12, (false, true), "node", &[intro6]);
    let mut dual = member(&w, "dual", 13, (true, true), "node", &[intro4, intro6]);
    w.start_mesh(&mut [&mut intro, &mut only4, &mut only6, &mut dual]);

    // The dual-stack node and the introducer reach each single-stack node
    // directly, over that node's family.
    for m in [&intro, &dual] {
        let st = m.status().unwrap();
        for (other, ip) in [
            (&only4, IpAddr::V4(v4(only4.idx))),
            (&only6, IpAddr::V6(v6(only6.idx))),
        ] {
            assert_direct(&st, m, other, ip);
        }
    }
    // The single-stack nodes share no family: relayed through a member
    // that has both.
    for (a, b) in [(&only4, &only6), (&only6, &only4)] {
        let st = w.wait_session(a, &b.peer(), "relayed", |s| path_kind(s) == Some("relayed"));
        let s = open_session(&st, &b.peer()).unwrap();
        let via = s["path"]["via"].as_str().unwrap_or_default();
        assert!(
            via == intro.name || via == dual.name,
            "{} -> {} relayed via {via}: {s}",
            a.name,
            b.name
        );
        eprintln!("{} -> {}: relayed via {via}", a.name, b.name);
    }
    w.wait_ping(&only4, &only6, SETTLE);
    w.wait_ping(&only6, &only4, SETTLE);
    let t = w.transfer(&only4, &only6, 5002, 16);
    assert!(t.intact(), "{t:?}");
    w.wait_ping(&dual, &only4, SETTLE);
    w.wait_ping(&dual, &only6, SETTLE);

    check_statuses(&[&intro, &only4, &only6, &dual]);
    // Each single-stack node learnt a reflexive address of its own family
    // only; the dual-stack node one of each.
    for (m, want) in [
        (&only4, vec![format!("{}:{PORT}", v4(only4.idx))]),
        (&only6, vec![format!("[{}]:{PORT}", v6(only6.idx))]),
        (
            &dual,
            vec![
                format!("{}:{PORT}", v4(dual.idx)),
                format!("[{}]:{PORT}", v6(dual.idx)),
            ],
        ),
    ] {
        let st = m.status().unwrap();
        assert_eq!(reflexive(&st), want, "{}: {st}", m.name);
    }
}
