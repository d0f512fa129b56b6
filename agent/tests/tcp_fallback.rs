//! TCP fallback (`docs/tcp.md`), real agents in network namespaces on one
//! switch: an introducer (which accepts TCP streams by default), two nodes
//! and a node whose namespace drops every outgoing UDP datagram
//! (nftables).
//!
//! - The blocked node hears nothing over UDP, connects to the introducer
//!   over TCP and carries its datagrams framed on the stream: it joins,
//!   meets every member (the introducer directly over the stream, the
//!   others relayed through the introducer), pings every member both ways
//!   and moves 16 MiB intact.
//! - With a TCP stream running inside the overlay, the drop rule is
//!   removed: a STUN answer over UDP tells the node UDP works again, it
//!   closes the TCP stream, its sessions continue on UDP (the introducer's
//!   by address mobility, the relayed ones go direct) and the stream
//!   inside arrives intact.
//!
//! Needs root; `RINGLAN_SKIP_ROOT_TESTS=1` skips it when not root.

use std::time::Duration;

use ringlan_lab::agents::{open_session, path_kind, serial, World};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
/// Hang guard for agents to start and mesh and for traffic to pass (the
/// fallback starts after 5 s of UDP silence, relayed routes after the
/// direct attempts fail).
const SETTLE: Duration = Duration::from_secs(60);

/// Drops every UDP datagram the namespace sends.
const DROP_UDP: &str = "table inet rl_tcp {\n\
    \x20 counter udp_out {}\n\
    \x20 chain output { type filter hook output priority filter; policy accept;\n\
    \x20   meta l4proto udp counter name udp_out drop\n\
    \x20 }\n\
    }\n";

/// `status.tcp` of a status (the fallback's stream), if any.
fn tcp(st: &Value) -> Option<&Value> {
    st.get("tcp").filter(|t| !t.is_null())
}

#[test]
fn a_node_without_udp_joins_over_tcp_and_moves_to_udp_when_it_works() {
    let _serial = serial();
    let Some(w) = World::new(BIN, "tcpfb", "rl-tcpfb", "lan", SETTLE) else {
        return;
    };
    let mut intro = w.lan_member("intro", 1, "introducer", |_| {});
    let mut n1 = w.lan_member("n1", 11, "node", |_| {});
    let mut n2 = w.lan_member("n2", 12, "node", |_| {});
    let mut blocked = w.lan_member("blocked", 13, "node", |_| {});
    w.lab.nft(&blocked.host.ns, DROP_UDP).expect("drop rule");

    for m in [&mut intro, &mut n1, &mut n2, &mut blocked] {
        w.start(m);
    }
    w.wait_mesh(&[&intro, &n1, &n2, &blocked]);

    // On TCP: the stream to the introducer answered; the introducer's
    // session is the stream, the others are relayed through it.
    let st = blocked
        .node
        .wait_status(SETTLE, |v| tcp(v).is_some_and(|t| t["answered"] == true))
        .unwrap_or_else(|e| panic!("blocked is not on TCP: {e:#}"));
    let t = tcp(&st).unwrap();
    assert_eq!(t["via"], "192.0.2.1:4910", "{st}");
    assert_eq!(t["connected_to"], "192.0.2.1:4910", "{st}");
    for other in [&n1, &n2] {
        let st = w.wait_session(&blocked, &other.peer(), "relayed", |s| {
            path_kind(s) == Some("relayed")
        });
        let s = open_session(&st, &other.peer()).unwrap();
        assert_eq!(s["path"]["via"], "intro", "{s}");
    }
    for other in [&intro, &n1, &n2] {
        w.wait_ping(&blocked, other, SETTLE);
        w.wait_ping(other, &blocked, SETTLE);
    }
    let t = w.transfer(&blocked, &n1, 5001, 16);
    assert!(t.intact(), "{t:?}");
    let dropped = w
        .lab
        .nft_counter(&blocked.host.ns, "inet", "rl_tcp", "udp_out")
        .unwrap();
    assert!(dropped > 0, "the node never tried UDP");
    eprintln!("blocked: {dropped} outgoing UDP datagrams dropped while on TCP");

    // UDP comes back under a running stream.
    let job = w.stream(&blocked, &n2, 5002);
    let before = job.received();
    w.lab
        .nft(&blocked.host.ns, "delete table inet rl_tcp\n")
        .expect("drop rule removed");
    blocked
        .node
        .wait_status(SETTLE, |v| tcp(v).is_none())
        .unwrap_or_else(|e| panic!("blocked stays on TCP: {e:#}"));
    for other in [&n1, &n2] {
        w.wait_session(&blocked, &other.peer(), "direct", |s| {
            path_kind(s).is_some_and(|k| k.starts_with("direct"))
        });
    }
    w.wait_flowing(&job, before, 8 << 20, "stream flowing after the move");
    w.finish_stream(job, &blocked, &n2);
    for other in [&intro, &n1, &n2] {
        w.wait_ping(&blocked, other, SETTLE);
    }
    let st = blocked.status().unwrap();
    let s = open_session(&st, &intro.peer()).unwrap();
    assert!(path_kind(s).is_some_and(|k| k.starts_with("direct")), "{s}");
}
