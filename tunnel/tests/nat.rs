//! NAT traversal over the simulated network: two endpoints behind NATs
//! (endpoint-independent mapping, port-restricted filtering) open a
//! direct session through an introducer's Forwarder (RFC 7016 3.5.1.5,
//! 3.5.1.6: the FIHello makes the target's RHello punch its NAT while the
//! initiator's IHello to the target's public address punches its own);
//! same-LAN nodes use the local address; a non-member's IHello is never
//! forwarded; STUN over real UDP through the tokio driver.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{config, LinkModel, Net};
use ringlan_tunnel::crypto::{Identity, NetworkName, NetworkSecret};
use ringlan_tunnel::driver::Driver;
use ringlan_tunnel::Path;
use ringlan_tunnel::{DropReason, EndpointConfig, Event, Target};
use ringlan_tunnel::{FlowEvent, Reliability};
use ringlan_tunnel::{SessionId, SessionState};
use stun_types::attribute::XorMappedAddress;
use stun_types::message::{
    Message, MessageClass, MessageWrite, MessageWriteExt, MessageWriteVec, BINDING,
};

fn opened_to(net: &Net, i: usize, peer: ringlan_tunnel::NodeId) -> Option<SessionId> {
    net.nodes[i].events.iter().find_map(|e| match e {
        Event::SessionOpened {
            session, peer: p, ..
        } if *p == peer => Some(*session),
        _ => None,
    })
}

/// An introducer (public) and `join` nodes connected to it by address;
/// returns the introducer's index.
fn with_introducer(net: &mut Net, join: &[usize], intro: usize) {
    let iaddr = net.nodes[intro].addr;
    let iid = net.nodes[intro].ep.node_id();
    for &n in join {
        let now = net.now;
        net.nodes[n].ep.connect(now, Target::Any, &[iaddr]).unwrap();
        net.flush(n);
    }
    assert!(net.run_until(Duration::from_secs(10), |net| join
        .iter()
        .all(|&n| opened_to(net, n, iid).is_some())));
}

fn introducer(net: &mut Net) -> usize {
    let mut icfg = config(10);
    icfg.redirector = true;
    icfg.stun_responder = true;
    net.add(icfg)
}

/// The address the introducer's session to `n` runs to (its reflexive
/// address as the overlay would report it).
fn observed(net: &Net, intro: usize, n: usize) -> SocketAddr {
    let id = net.nodes[n].ep.node_id();
    let s = net.nodes[intro].ep.session_for(id).unwrap();
    let path = net.nodes[intro].ep.session_info(s).unwrap().path;
    path.direct().expect("a direct path")
}

#[test]
fn two_nodes_behind_cone_nats_open_a_direct_session_through_the_forwarder() {
    let mut net = Net::new(21, LinkModel::default());
    let intro = introducer(&mut net);
    let na = net.add_nat(false);
    let nb = net.add_nat(false);
    let a = net.add_behind(na, config(1));
    let b = net.add_behind(nb, config(2));
    with_introducer(&mut net, &[a, b], intro);
    let (ida, idb) = (net.nodes[a].ep.node_id(), net.nodes[b].ep.node_id());
    let b_public = observed(&net, intro, b);
    assert_eq!(b_public.ip(), net.nats[nb].public_ip);
    let b_local = net.nodes[b].addr;
    // B registered its local address with the introducer (overlay Hello).
    net.nodes[intro].ep.set_peer_addresses(idb, vec![b_local]);
    let iaddr = net.nodes[intro].addr;
    let now = net.now;
    // All candidates at once: B's local address (unreachable from here),
    // its public address and the introducer (Forwarder).
    let s = net.nodes[a]
        .ep
        .connect(now, Target::Node(idb), &[b_local, b_public, iaddr])
        .unwrap();
    net.flush(a);
    assert!(
        net.run_until(Duration::from_secs(15), |n| opened_to(n, a, idb) == Some(s)
            && opened_to(n, b, ida).is_some()),
        "no direct session through the NATs"
    );
    let info = net.nodes[a].ep.session_info(s).unwrap();
    assert_eq!(
        info.path,
        Path::Direct(b_public),
        "direct to B's public mapping"
    );
    let sb = opened_to(&net, b, ida).unwrap();
    assert_eq!(
        net.nodes[b]
            .ep
            .session_info(sb)
            .unwrap()
            .path
            .direct()
            .unwrap()
            .ip(),
        net.nats[na].public_ip
    );
    let st = net.nodes[intro].ep.stats().clone();
    assert!(st.fihellos_forwarded >= 1, "{st:?}");
    assert!(
        net.nats[nb].filtered >= 1,
        "B's NAT filtered A's first IHello"
    );

    // Data flows both ways over the punched path.
    let now = net.now;
    let f = net.nodes[a].ep.open_flow(s, b"nat", None).unwrap();
    net.nodes[a]
        .ep
        .send(now, s, f, b"through two NATs", Reliability::Reliable)
        .unwrap();
    net.flush(a);
    let got = |n: &mut Net| {
        n.nodes[b].events.iter().any(|e| {
            matches!(e, Event::Flow { event: FlowEvent::Message { data, .. }, .. }
                if data == b"through two NATs")
        })
    };
    assert!(net.run_until(Duration::from_secs(5), got));

    // Keepalives (25 s) hold the NAT filter entries (30 s) over a long
    // idle period: B can still reach A afterwards.
    net.run_for(Duration::from_secs(300));
    assert_eq!(
        net.nodes[a].ep.session_info(s).unwrap().state,
        SessionState::Open
    );
    let now = net.now;
    let fb = net.nodes[b].ep.open_flow(sb, b"back", None).unwrap();
    net.nodes[b]
        .ep
        .send(now, sb, fb, b"still open", Reliability::Reliable)
        .unwrap();
    net.flush(b);
    let back = |n: &mut Net| {
        n.nodes[a].events.iter().any(|e| {
            matches!(e, Event::Flow { event: FlowEvent::Message { data, .. }, .. }
                if data == b"still open")
        })
    };
    assert!(net.run_until(Duration::from_secs(5), back));
}

/// A's NAT renumbers (new public address, conntrack gone). The introducer
/// follows at once (RFC 7016 3.5.4.2: A's packets arrive from a new
/// address, a verified Ping moves DESTADDR), but B's port-restricted NAT
/// drops A's packets from the new address and B keeps sending to the dead
/// old one: the direct session is stuck. Once B is told A's new address
/// (by the introducer, in the overlay) and probes it with
/// `probe_path`, the check Ping opens B's NAT, A's Ping Reply verifies
/// the path and both directions flow again.
#[test]
fn a_probe_to_the_new_address_recovers_a_session_after_nat_renumbering() {
    let mut net = Net::new(28, LinkModel::default());
    let intro = introducer(&mut net);
    let na = net.add_nat(false);
    let nb = net.add_nat(false);
    let a = net.add_behind(na, config(1));
    let b = net.add_behind(nb, config(2));
    with_introducer(&mut net, &[a, b], intro);
    let (ida, idb) = (net.nodes[a].ep.node_id(), net.nodes[b].ep.node_id());
    let b_public = observed(&net, intro, b);
    let a_old = observed(&net, intro, a);
    let iaddr = net.nodes[intro].addr;
    let now = net.now;
    let sa = net.nodes[a]
        .ep
        .connect(now, Target::Node(idb), &[b_public, iaddr])
        .unwrap();
    net.flush(a);
    assert!(
        net.run_until(Duration::from_secs(15), |n| opened_to(n, a, idb)
            == Some(sa)
            && opened_to(n, b, ida).is_some())
    );
    let sb = opened_to(&net, b, ida).unwrap();
    assert_eq!(
        net.nodes[b].ep.session_info(sb).unwrap().path,
        Path::Direct(a_old)
    );

    net.nats[na].renumber("198.51.100.20".parse().unwrap());
    net.take_events(intro);
    net.take_events(b);
    let now = net.now;
    let fa = net.nodes[a].ep.open_flow(sa, b"a", None).unwrap();
    net.nodes[a]
        .ep
        .send(now, sa, fa, b"from a", Reliability::Reliable)
        .unwrap();
    let fb = net.nodes[b].ep.open_flow(sb, b"b", None).unwrap();
    net.nodes[b]
        .ep
        .send(now, sb, fb, b"from b", Reliability::Reliable)
        .unwrap();
    // The introducer hears from A (keepalive) and follows it.
    let now = net.now;
    let si = net.nodes[a]
        .ep
        .session_for(net.nodes[intro].ep.node_id())
        .unwrap();
    let fi = net.nodes[a].ep.open_flow(si, b"i", None).unwrap();
    net.nodes[a]
        .ep
        .send(now, si, fi, b"hello introducer", Reliability::Reliable)
        .unwrap();
    net.flush(a);
    net.flush(b);
    let got = |n: &Net, i: usize, what: &[u8]| {
        n.nodes[i].events.iter().any(|e| {
            matches!(e, Event::Flow { event: FlowEvent::Message { data, .. }, .. }
                if data == what)
        })
    };
    assert!(net.run_until(Duration::from_secs(5), |n| observed(n, intro, a) != a_old));
    let a_new = observed(&net, intro, a);
    assert_eq!(a_new.ip().to_string(), "198.51.100.20");
    assert!(net.nodes[intro].events.iter().any(
        |e| matches!(e, Event::AddressChanged { from, to, .. } if *from == Path::Direct(a_old) && *to == Path::Direct(a_new))
    ));

    // Without a probe B stays stuck on the dead address (for a while: with
    // data in flight and nothing coming back it would declare A dead after
    // a few seconds, so the probe has to come quickly).
    net.run_for(Duration::from_secs(2));
    assert_eq!(
        net.nodes[b].ep.session_info(sb).unwrap().path,
        Path::Direct(a_old)
    );
    assert!(!got(&net, a, b"from b"));
    assert!(!got(&net, b, b"from a"));
    assert!(net.nats[nb].filtered > 0, "B's NAT drops A's new address");

    // The introducer tells B where A went; B probes it.
    let now = net.now;
    assert!(net.nodes[b].ep.probe_path(now, sb, a_new));
    net.flush(b);
    assert!(
        net.run_until(Duration::from_secs(10), |n| got(n, a, b"from b")
            && got(n, b, b"from a"))
    );
    assert_eq!(
        net.nodes[b].ep.session_info(sb).unwrap().path,
        Path::Direct(a_new)
    );
    assert!(net.nodes[b].events.iter().any(
        |e| matches!(e, Event::AddressChanged { session, to, .. } if *session == sb && *to == Path::Direct(a_new))
    ));
    assert_eq!(
        net.nodes[a].ep.session_info(sa).unwrap().state,
        SessionState::Open
    );
}

#[test]
fn probe_path_needs_an_open_session() {
    let mut net = Net::new(29, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let baddr = net.nodes[b].addr;
    let now = net.now;
    let s = net.nodes[a].ep.connect(now, Target::Any, &[baddr]).unwrap();
    assert!(!net.nodes[a].ep.probe_path(now, s, baddr), "still opening");
    let idb = net.nodes[b].ep.node_id();
    assert!(net.run_until(Duration::from_secs(5), |n| opened_to(n, a, idb).is_some()));
    let now = net.now;
    assert!(net.nodes[a].ep.probe_path(now, s, baddr));
    net.nodes[a].ep.close(now, s, false);
    assert!(!net.nodes[a].ep.probe_path(now, s, baddr), "closing");
}

#[test]
fn without_keepalives_the_nat_forgets_the_path() {
    let mut net = Net::new(27, LinkModel::default());
    let intro = introducer(&mut net);
    let na = net.add_nat(false);
    let nb = net.add_nat(false);
    let slow = |seed| {
        let mut c = config(seed);
        c.session.keepalive = Duration::from_secs(60);
        c.session.dead_after = Duration::from_secs(400);
        c
    };
    let a = net.add_behind(na, slow(1));
    let b = net.add_behind(nb, slow(2));
    with_introducer(&mut net, &[a, b], intro);
    let (ida, idb) = (net.nodes[a].ep.node_id(), net.nodes[b].ep.node_id());
    let b_public = observed(&net, intro, b);
    let iaddr = net.nodes[intro].addr;
    let now = net.now;
    net.nodes[a]
        .ep
        .connect(now, Target::Node(idb), &[b_public, iaddr])
        .unwrap();
    net.flush(a);
    assert!(net.run_until(Duration::from_secs(15), |n| opened_to(n, b, ida).is_some()));
    let before = net.nats[na].filtered + net.nats[nb].filtered;
    net.run_for(Duration::from_secs(200));
    assert!(
        net.nats[na].filtered + net.nats[nb].filtered > before,
        "a 60 s keepalive outlives a 30 s NAT entry"
    );
}

#[test]
fn without_the_forwarder_the_port_restricted_nat_stays_closed() {
    let mut net = Net::new(22, LinkModel::default());
    let intro = introducer(&mut net);
    let na = net.add_nat(false);
    let nb = net.add_nat(false);
    let a = net.add_behind(na, config(1));
    let b = net.add_behind(nb, config(2));
    with_introducer(&mut net, &[a, b], intro);
    let idb = net.nodes[b].ep.node_id();
    let b_public = observed(&net, intro, b);
    let now = net.now;
    let s = net.nodes[a]
        .ep
        .connect(now, Target::Node(idb), &[b_public])
        .unwrap();
    net.flush(a);
    net.run_for(Duration::from_secs(20));
    assert!(opened_to(&net, a, idb).is_none());
    assert!(net.nats[nb].filtered > 0);
    let info = net.nodes[a].ep.session_info(s).unwrap();
    assert_eq!(info.state, SessionState::IHelloSent, "still knocking");
}

#[test]
fn same_lan_nodes_use_the_local_address() {
    let mut net = Net::new(23, LinkModel::default());
    let intro = introducer(&mut net);
    let nat = net.add_nat(false);
    let a = net.add_behind(nat, config(1));
    let c = net.add_behind(nat, config(3));
    with_introducer(&mut net, &[a, c], intro);
    let idc = net.nodes[c].ep.node_id();
    let c_public = observed(&net, intro, c);
    let c_local = net.nodes[c].addr;
    net.nodes[intro].ep.set_peer_addresses(idc, vec![c_local]);
    let iaddr = net.nodes[intro].addr;
    let now = net.now;
    let s = net.nodes[a]
        .ep
        .connect(now, Target::Node(idc), &[c_local, c_public, iaddr])
        .unwrap();
    net.flush(a);
    assert!(net.run_until(Duration::from_secs(10), |n| opened_to(n, a, idc) == Some(s)));
    assert_eq!(
        net.nodes[a].ep.session_info(s).unwrap().path,
        Path::Direct(c_local)
    );
}

#[test]
fn an_ihello_from_a_non_member_is_not_forwarded() {
    let mut net = Net::new(24, LinkModel::default());
    let intro = introducer(&mut net);
    let b = net.add(config(2));
    with_introducer(&mut net, &[b], intro);
    let idb = net.nodes[b].ep.node_id();
    let name = NetworkName::new("test").unwrap();
    let rogue = net.add(EndpointConfig::new(
        Identity::from_secret_key_bytes([9; 32], &name),
        name,
        NetworkSecret::from_bytes([7; 32]),
    ));
    let iaddr = net.nodes[intro].addr;
    let now = net.now;
    net.nodes[rogue]
        .ep
        .connect(now, Target::Node(idb), &[iaddr])
        .unwrap();
    net.flush(rogue);
    net.run_for(Duration::from_secs(20));
    let st = net.nodes[intro].ep.stats().clone();
    assert_eq!(st.fihellos_forwarded, 0, "{st:?}");
    assert_eq!(st.redirects_sent, 0, "{st:?}");
    assert!(st.drops.get(&DropReason::NotMember).copied().unwrap_or(0) > 0);
    assert!(opened_to(&net, rogue, idb).is_none());

    // The same request from a member is forwarded.
    let a = net.add(config(1));
    with_introducer(&mut net, &[a], intro);
    let now = net.now;
    net.nodes[a]
        .ep
        .connect(now, Target::Node(idb), &[iaddr])
        .unwrap();
    net.flush(a);
    assert!(net.run_until(Duration::from_secs(10), |n| opened_to(n, a, idb).is_some()));
    assert!(net.nodes[intro].ep.stats().fihellos_forwarded >= 1);
}

#[test]
fn stun_query_between_simulated_endpoints_learns_the_nat_mapping() {
    let mut net = Net::new(25, LinkModel::default());
    let stun_server = |seed| {
        let mut c = config(seed);
        c.stun_responder = true;
        c
    };
    let s1 = net.add(stun_server(10));
    let s2 = net.add(stun_server(11));
    let cone = net.add_nat(false);
    let sym = net.add_nat(true);
    let a = net.add_behind(cone, config(1));
    let b = net.add_behind(sym, config(2));
    let mut seen = std::collections::HashMap::new();
    for n in [a, b] {
        for s in [s1, s2] {
            let now = net.now;
            let server = net.nodes[s].addr;
            net.nodes[n].ep.stun_query(now, server).unwrap();
            net.flush(n);
        }
    }
    net.run_until(Duration::from_secs(10), |net| {
        for n in [a, b] {
            for e in std::mem::take(&mut net.nodes[n].events) {
                if let Event::StunResult { server, mapped, .. } = e {
                    seen.entry(n)
                        .or_insert_with(Vec::new)
                        .push((server, mapped));
                }
            }
        }
        seen.values().map(|v| v.len()).sum::<usize>() == 4
    });
    use ringlan_tunnel::{classify_mapping, NatMapping};
    assert_eq!(classify_mapping(&seen[&a]), NatMapping::EndpointIndependent);
    assert_eq!(classify_mapping(&seen[&b]), NatMapping::EndpointDependent);
    assert!(seen[&a]
        .iter()
        .all(|(_, m)| m.ip() == net.nats[cone].public_ip));
    assert!(net.nodes[s1].ep.stats().stun_answered >= 2);
}

#[test]
fn stun_query_without_answer_fails() {
    let mut net = Net::new(26, LinkModel::default());
    let a = net.add(config(1));
    let now = net.now;
    let nowhere: SocketAddr = "198.51.100.99:3478".parse().unwrap();
    let tx = net.nodes[a].ep.stun_query(now, nowhere).unwrap();
    net.flush(a);
    assert!(
        net.run_until(Duration::from_secs(30), |n| n.nodes[a].events.iter().any(
            |e| matches!(e, Event::StunFailed { tx: t, server } if *t == tx && *server == nowhere)
        ))
    );
}

fn binding_request() -> Vec<u8> {
    let mut req = Message::builder_request(BINDING, MessageWriteVec::new());
    req.add_fingerprint().unwrap();
    req.finish()
}

#[tokio::test]
async fn driver_answers_a_binding_request_from_a_plain_udp_socket() {
    let name = NetworkName::new("loop").unwrap();
    let mut cfg = EndpointConfig::new(
        Identity::from_secret_key_bytes([1; 32], &name),
        name,
        NetworkSecret::from_bytes([3; 32]),
    );
    cfg.stun_responder = true;
    let mut d = Driver::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let daddr = d.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let me = sock.local_addr().unwrap();
        let req = binding_request();
        sock.send_to(&req, daddr).unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(from, daddr);
        let msg = Message::from_bytes(&buf[..n]).unwrap();
        assert!(msg.has_class(MessageClass::Success));
        let req_msg = Message::from_bytes(&req).unwrap();
        assert_eq!(msg.transaction_id(), req_msg.transaction_id());
        let x = msg.attribute::<XorMappedAddress>().unwrap();
        assert_eq!(x.addr(msg.transaction_id()), me);
        assert!(n <= 2 * req.len(), "response {n} request {}", req.len());
    });
    let drive = async {
        loop {
            let _ = d.next_event().await;
        }
    };
    tokio::select! {
        _ = drive => {}
        _ = async {
            while !client.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } => {}
    }
    client.join().unwrap();
    assert_eq!(d.endpoint_ref().stats().stun_answered, 1);
}

#[tokio::test]
async fn driver_stun_query_against_another_driver() {
    let mk = |seed| {
        let name = NetworkName::new("loop").unwrap();
        let mut c = EndpointConfig::new(
            Identity::from_secret_key_bytes([seed; 32], &name),
            name,
            NetworkSecret::from_bytes([3; 32]),
        );
        c.stun_responder = true;
        c
    };
    let mut a = Driver::bind("127.0.0.1:0".parse().unwrap(), mk(1))
        .await
        .unwrap();
    let mut s = Driver::bind("127.0.0.1:0".parse().unwrap(), mk(2))
        .await
        .unwrap();
    let saddr = s.local_addr().unwrap();
    let aaddr = a.local_addr().unwrap();
    let tx = a.endpoint().stun_query(Instant::now(), saddr).unwrap();
    a.flush();
    let run = async {
        loop {
            tokio::select! {
                ev = a.next_event() => {
                    if let Event::StunResult { tx: t, server, mapped, .. } = ev {
                        return (t, server, mapped);
                    }
                }
                _ = s.next_event() => {}
            }
        }
    };
    let (t, server, mapped) = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("no STUN answer");
    assert_eq!((t, server, mapped), (tx, saddr, aaddr));
}

#[test]
fn ordinary_nodes_do_not_answer_stun() {
    let mut net = Net::new(27, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let now = net.now;
    let addr_b = net.nodes[b].addr;
    let tx = net.nodes[a].ep.stun_query(now, addr_b).unwrap();
    net.flush(a);
    assert!(net.run_until(Duration::from_secs(30), |n| n.nodes[a]
        .events
        .iter()
        .any(|e| matches!(e, Event::StunFailed { tx: t, .. } if *t == tx))));
    assert_eq!(net.nodes[b].ep.stats().stun_answered, 0);
}
