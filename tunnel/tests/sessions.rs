//! Sessions and flows over the simulated network (RFC 7016 3.5, 3.6):
//! handshake under loss, glare, bulk reliable transfer with loss,
//! reordering and duplication, partially reliable flows, address
//! mobility, open timeout, close, membership, Redirector/Forwarder.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    bulk, config, connect, deliver, messages, opened, pattern, record, send_frames, LinkModel, Net,
};
use ringlan_tunnel::crypto::{Identity, NetworkName, NetworkSecret};
use ringlan_tunnel::Path;
use ringlan_tunnel::Reliability;
use ringlan_tunnel::{CloseReason, OpenFailure, SessionId};
use ringlan_tunnel::{DropReason, EndpointConfig, Event, Target};

#[test]
fn handshake_opens_both_ends_and_names_peers() {
    let mut net = Net::new(1, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (sa, sb) = connect(&mut net, a, b);
    let ia = net.nodes[a].ep.session_info(sa).unwrap();
    let ib = net.nodes[b].ep.session_info(sb).unwrap();
    assert_eq!(ia.peer, Some(net.nodes[b].ep.node_id()));
    assert_eq!(ib.peer, Some(net.nodes[a].ep.node_id()));
    assert_eq!(ia.path, Path::Direct(net.nodes[b].addr));
    assert_eq!(ib.path, Path::Direct(net.nodes[a].addr));
    // Two round trips of 10 ms each way.
    assert!(
        net.elapsed() < Duration::from_millis(100),
        "{:?}",
        net.elapsed()
    );
}

#[test]
fn handshake_completes_at_30_percent_loss() {
    for seed in 0..5 {
        let mut net = Net::new(
            100 + seed,
            LinkModel {
                loss: 0.3,
                ..Default::default()
            },
        );
        let a = net.add(config(1));
        let b = net.add(config(2));
        connect(&mut net, a, b);
    }
}

#[test]
fn silent_peer_fails_at_open_timeout() {
    let mut net = Net::new(2, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    net.nodes[b].up = false;
    let peer = net.nodes[b].ep.node_id();
    let addr = net.nodes[b].addr;
    let now = net.now;
    let s = net.nodes[a]
        .ep
        .connect(now, Target::Node(peer), &[addr])
        .unwrap();
    net.flush(a);
    let failed = |n: &mut Net| {
        n.nodes[a].events.iter().any(|e| {
            matches!(e, Event::SessionFailed { session, reason: OpenFailure::Timeout } if *session == s)
        })
    };
    assert!(net.run_until(Duration::from_secs(200), failed));
    let t = net.elapsed();
    assert!(
        t >= Duration::from_secs(95) && t < Duration::from_secs(96),
        "{t:?}"
    );
    assert!(
        net.nodes[a].ep.sessions().next().is_none(),
        "failed session reaped"
    );
}

#[test]
fn glare_leaves_exactly_one_session() {
    for seed in 0..8 {
        let mut net = Net::new(
            200 + seed,
            LinkModel {
                jitter: Duration::from_millis(5),
                ..Default::default()
            },
        );
        let a = net.add(config(1));
        let b = net.add(config(2));
        let (ida, idb) = (net.nodes[a].ep.node_id(), net.nodes[b].ep.node_id());
        let (adda, addb) = (net.nodes[a].addr, net.nodes[b].addr);
        let now = net.now;
        net.nodes[a]
            .ep
            .connect(now, Target::Node(idb), &[addb])
            .unwrap();
        net.nodes[b]
            .ep
            .connect(now, Target::Node(ida), &[adda])
            .unwrap();
        net.flush(a);
        net.flush(b);
        net.run_for(Duration::from_secs(10));
        for i in [a, b] {
            let open: Vec<_> = net.nodes[i]
                .ep
                .sessions()
                .filter(|s| net.nodes[i].ep.session_info(*s).unwrap().state.as_str() == "open")
                .collect();
            assert_eq!(open.len(), 1, "seed {seed} node {i}: {open:?}");
        }
        // The surviving sessions talk to each other.
        let sa = net.nodes[a].ep.session_for(idb).unwrap();
        let f = net.nodes[a].ep.open_flow(sa, b"glare", None).unwrap();
        let now = net.now;
        net.nodes[a]
            .ep
            .send(now, sa, f, b"hello", Reliability::Reliable)
            .unwrap();
        net.flush(a);
        let mut got = Vec::new();
        net.run_until(Duration::from_secs(5), |n| {
            messages(n, b, &mut got);
            !got.is_empty()
        });
        assert_eq!(got, vec![b"hello".to_vec()], "seed {seed}");
    }
}

/// An endpoint that leaves its packets' encryption to the caller
/// (`set_defer_sealing`, as under a driver's send thread; the simulated
/// network finishes each one, as that thread does) sends exactly the
/// datagrams, byte for byte, of one that seals them itself: the same
/// handshake, the same 4 MiB over a lossy, reordering link, both ends
/// deferring in one run and neither in the other.
#[test]
fn deferred_sealing_sends_the_same_bytes() {
    let run = |defer: bool| {
        let link = LinkModel {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(3),
            loss: 0.02,
            duplicate: 0.01,
            rate: 100_000_000,
            max_queue: Duration::from_millis(50),
            max_datagram: 0,
        };
        let mut net = Net::new(9, link);
        net.keep_wire = true;
        let a = net.add(config(1));
        let b = net.add(config(2));
        for i in [a, b] {
            net.nodes[i].ep.set_defer_sealing(defer);
        }
        let (sa, _sb) = connect(&mut net, a, b);
        let got = bulk(&mut net, a, b, sa, 4 << 20, 16 * 1024);
        assert_eq!(got.len(), 256);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m, &pattern(i as u64, 16 * 1024), "message {i}");
        }
        std::mem::take(&mut net.wire)
    };
    let (sealed, deferred) = (run(false), run(true));
    assert!(sealed.len() > 3000, "{} datagrams", sealed.len());
    assert_eq!(sealed.len(), deferred.len());
    for (i, (x, y)) in sealed.iter().zip(&deferred).enumerate() {
        assert!(
            x == y,
            "datagram {i} differs ({} and {} bytes)",
            x.len(),
            y.len()
        );
    }
}

#[test]
fn reliable_flow_moves_64_mib_at_5_percent_loss_with_reordering_and_duplication() {
    let mut net = Net::new(
        3,
        LinkModel {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(3),
            loss: 0.05,
            duplicate: 0.01,
            rate: 100_000_000,
            max_queue: Duration::from_millis(50),
            max_datagram: 0,
        },
    );
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (sa, _sb) = connect(&mut net, a, b);
    let msg = 16 * 1024;
    let total = 64 << 20;
    let got = bulk(&mut net, a, b, sa, total, msg);
    assert_eq!(got.len(), total / msg);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            m,
            &pattern(i as u64, msg),
            "message {i} corrupt or out of order"
        );
    }
    println!(
        "64 MiB in {:?} virtual; {} datagrams delivered, {} dropped",
        net.elapsed(),
        net.delivered,
        net.dropped
    );
}

#[test]
fn never_retransmit_flow_delivers_at_least_94_percent_at_5_percent_loss() {
    let mut net = Net::new(
        4,
        LinkModel {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(2),
            loss: 0.05,
            ..Default::default()
        },
    );
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (sa, _) = connect(&mut net, a, b);
    let f = net.nodes[a].ep.open_flow(sa, b"frames", None).unwrap();
    // Offered load stays within what a TCP-compatible window allows at 5%
    // loss (frames beyond it would be dropped at the send queue, by design).
    let n = 4_000u64;
    let mut got = Vec::new();
    for i in 0..n {
        let now = net.now;
        net.nodes[a]
            .ep
            .send(now, sa, f, &pattern(i, 1000), Reliability::NoRetransmit)
            .unwrap();
        net.flush(a);
        // One frame every 5 ms of virtual time.
        let t = net.now + Duration::from_millis(5);
        net.run_until(Duration::from_secs(1), |n| n.now >= t);
        messages(&mut net, b, &mut got);
    }
    net.run_for(Duration::from_secs(2));
    messages(&mut net, b, &mut got);
    let share = got.len() as f64 / n as f64;
    let st = net.nodes[a].ep.flow_stats(sa).unwrap();
    let info = net.nodes[a].ep.session_info(sa).unwrap();
    assert!(
        share >= 0.94,
        "delivered {share} {st:?} {info:?} dropped {}",
        net.dropped
    );
    let info = net.nodes[a].ep.session_info(sa).unwrap();
    let _ = info;
    let stats = net.nodes[a].ep.flow_stats(sa).unwrap();
    assert_eq!(
        stats.retransmissions, 0,
        "never-retransmit flow retransmitted"
    );
    // Delivered frames are intact.
    for m in &got {
        assert_eq!(m.len(), 1000);
    }
}

#[test]
fn address_change_mid_transfer_keeps_the_session_and_spoofing_does_not_move_it() {
    let mut net = Net::new(5, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (sa, sb) = connect(&mut net, a, b);
    let f = net.nodes[a].ep.open_flow(sa, b"x", None).unwrap();
    let mut got = Vec::new();
    for i in 0..200u64 {
        if i == 100 {
            // A's NAT rebinds: its packets now come from another address.
            // Deliveries to the new address must reach A too.
            let new: SocketAddr = "203.0.113.9:5000".parse().unwrap();
            net.nodes[a].public_addr = new;
            net.nodes[a].addr = new;
        }
        let now = net.now;
        net.nodes[a]
            .ep
            .send(now, sa, f, &pattern(i, 500), Reliability::Reliable)
            .unwrap();
        net.flush(a);
        net.run_for(Duration::from_millis(20));
        messages(&mut net, b, &mut got);
    }
    net.run_for(Duration::from_secs(2));
    messages(&mut net, b, &mut got);
    assert_eq!(got.len(), 200);
    let info = net.nodes[b].ep.session_info(sb).unwrap();
    assert_eq!(info.path, Path::Direct("203.0.113.9:5000".parse().unwrap()));
    assert!(net.nodes[b]
        .events
        .iter()
        .all(|e| !matches!(e, Event::SessionClosed { .. })));
    // B's window towards A starts over on the new address; A's path did
    // not change.
    assert_eq!(info.congestion.path_restarts, 1);
    let info_a = net.nodes[a].ep.session_info(sa).unwrap();
    assert_eq!(info_a.congestion.path_restarts, 0);

    // A spoofed copy of a valid packet from an address that never answers
    // the verification ping does not move the session.
    net.keep_log = true;
    let now = net.now;
    net.nodes[a]
        .ep
        .send(now, sa, f, b"spoof", Reliability::Reliable)
        .unwrap();
    let mut buf = vec![0u8; 2048];
    let t = net.nodes[a].ep.poll_transmit(net.now, &mut buf).unwrap();
    let pkt = buf[..t.size].to_vec();
    let spoofer: SocketAddr = "198.51.100.66:666".parse().unwrap();
    let now = net.now;
    net.nodes[b]
        .ep
        .handle_datagram(now, spoofer, &mut pkt.clone());
    net.flush(b);
    net.run_for(Duration::from_secs(3));
    let info = net.nodes[b].ep.session_info(sb).unwrap();
    assert_eq!(info.path, Path::Direct("203.0.113.9:5000".parse().unwrap()));
    assert_eq!(info.congestion.path_restarts, 1);
}

#[test]
fn orderly_close_from_either_end_and_abrupt_close() {
    for who in 0..3 {
        let mut net = Net::new(6 + who, LinkModel::default());
        let a = net.add(config(1));
        let b = net.add(config(2));
        let (sa, sb) = connect(&mut net, a, b);
        let now = net.now;
        match who {
            0 => net.nodes[a].ep.close(now, sa, false),
            1 => net.nodes[b].ep.close(now, sb, false),
            _ => net.nodes[a].ep.close(now, sa, true),
        }
        net.flush(a);
        net.flush(b);
        let closed = |n: &Net, i: usize| {
            n.nodes[i]
                .events
                .iter()
                .any(|e| matches!(e, Event::SessionClosed { .. }))
        };
        assert!(net.run_until(Duration::from_secs(2), |n| closed(n, a) && closed(n, b)));
        assert!(net.elapsed() < Duration::from_secs(1));
        // Eventually both ends free the session.
        net.run_for(Duration::from_secs(100));
        assert!(net.nodes[a].ep.sessions().next().is_none(), "case {who}");
        assert!(net.nodes[b].ep.sessions().next().is_none(), "case {who}");
    }
}

#[test]
fn dead_peer_is_detected_by_keepalive() {
    let mut net = Net::new(9, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (sa, _) = connect(&mut net, a, b);
    net.nodes[b].up = false;
    let dead = |n: &mut Net| {
        n.nodes[a].events.iter().any(|e| {
            matches!(e, Event::SessionClosed { session, reason: CloseReason::Dead, .. } if *session == sa)
        })
    };
    assert!(net.run_until(Duration::from_secs(200), dead));
}

#[test]
fn other_network_secret_gets_no_rhello_and_no_session() {
    let mut net = Net::new(10, LinkModel::default());
    let a = net.add(config(1));
    let name = NetworkName::new("test").unwrap();
    let other = EndpointConfig::new(
        Identity::from_secret_key_bytes([9; 32], &name),
        name,
        NetworkSecret::from_bytes([7; 32]),
    );
    let x = net.add(other);
    net.keep_log = true;
    let (ida, adda) = (net.nodes[a].ep.node_id(), net.nodes[a].addr);
    let now = net.now;
    net.nodes[x]
        .ep
        .connect(now, Target::Node(ida), &[adda])
        .unwrap();
    net.nodes[x].ep.connect(now, Target::Any, &[adda]).unwrap();
    net.flush(x);
    net.run_for(Duration::from_secs(20));
    assert!(
        net.log.iter().all(|(from, _, _)| *from != adda),
        "A answered a non-member"
    );
    assert!(opened(&net, a).is_empty() && opened(&net, x).is_empty());
    assert!(
        net.nodes[a]
            .ep
            .stats()
            .drops
            .get(&DropReason::NotMember)
            .copied()
            .unwrap_or(0)
            > 0
    );
}

#[test]
fn rhello_is_no_larger_than_three_times_the_ihello() {
    let mut net = Net::new(11, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    net.keep_log = true;
    connect(&mut net, a, b);
    let (adda, addb) = (net.nodes[a].addr, net.nodes[b].addr);
    let ihello = net
        .log
        .iter()
        .find(|(f, t, _)| *f == adda && *t == addb)
        .unwrap()
        .2;
    let rhello = net
        .log
        .iter()
        .find(|(f, t, _)| *f == addb && *t == adda)
        .unwrap()
        .2;
    assert!(rhello <= 3 * ihello, "ihello {ihello} rhello {rhello}");
}

#[test]
fn bootstrap_by_address_then_introduction_through_forwarder_and_redirector() {
    let mut net = Net::new(12, LinkModel::default());
    let mut icfg = config(10);
    icfg.redirector = true;
    let intro = net.add(icfg);
    let a = net.add(config(1));
    let c = net.add(config(3));
    let iaddr = net.nodes[intro].addr;
    // A and C know the introducer only by address.
    for n in [a, c] {
        let now = net.now;
        net.nodes[n].ep.connect(now, Target::Any, &[iaddr]).unwrap();
        net.flush(n);
    }
    assert!(net.run_until(Duration::from_secs(10), |n| opened(n, intro).len() == 2));
    // A wants C but only knows the introducer's address.
    let idc = net.nodes[c].ep.node_id();
    let now = net.now;
    let s = net.nodes[a]
        .ep
        .connect(now, Target::Node(idc), &[iaddr])
        .unwrap();
    net.flush(a);
    assert!(net.run_until(Duration::from_secs(10), |n| opened(n, a).contains(&s)));
    let info = net.nodes[a].ep.session_info(s).unwrap();
    assert_eq!(info.peer, Some(idc));
    assert_eq!(
        info.path,
        Path::Direct(net.nodes[c].addr),
        "direct path, not via the introducer"
    );
    let st = net.nodes[intro].ep.stats();
    assert!(
        st.fihellos_forwarded >= 1 && st.redirects_sent >= 1,
        "{st:?}"
    );
}

fn state_of(net: &Net, i: usize, s: SessionId) -> Option<&'static str> {
    net.nodes[i].ep.session_info(s).map(|x| x.state.as_str())
}

#[test]
fn cookie_change_when_the_initiator_address_changes_during_the_handshake() {
    // RFC 7016 3.5.1.2: A's IHello came from one address, its IIKeying from
    // another: B answers with an RHello Cookie Change and A re-signs.
    let mut net = Net::new(13, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (idb, addb) = (net.nodes[b].ep.node_id(), net.nodes[b].addr);
    let old = net.nodes[a].addr;
    // Everything A sends from its old address after the IHello is lost:
    // the IIKeying reaches B only from the new address.
    let mut n_old = 0;
    net.drop_filter = Some(Box::new(move |from, to, _| {
        if from == old && to == addb {
            n_old += 1;
            return n_old > 1;
        }
        false
    }));
    let now = net.now;
    let s = net.nodes[a]
        .ep
        .connect(now, Target::Node(idb), &[addb])
        .unwrap();
    net.flush(a);
    assert!(net.run_until(Duration::from_secs(5), |n| state_of(n, a, s)
        == Some("keying-sent")));
    let new: SocketAddr = "203.0.113.77:4910".parse().unwrap();
    net.nodes[a].public_addr = new;
    net.nodes[a].addr = new;
    assert!(net.run_until(Duration::from_secs(20), |n| !opened(n, a).is_empty()));
    assert!(net.nodes[b].ep.stats().cookie_changes_sent >= 1);
    let sb = opened(&net, b)[0];
    assert_eq!(
        net.nodes[b].ep.session_info(sb).unwrap().path,
        Path::Direct(new)
    );
}

#[test]
fn retransmitted_iikeying_is_answered_with_the_stored_rikeying() {
    // Lose B's first RIKeying: A retransmits its IIKeying, B must answer
    // from the OPEN session (3.5.1.1.2 step 2.1), not open a second one.
    let mut net = Net::new(14, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (adda, addb) = (net.nodes[a].addr, net.nodes[b].addr);
    let mut sent = 0;
    net.drop_filter = Some(Box::new(move |from, to, _| {
        if from == addb && to == adda {
            sent += 1;
            // 1st: RHello (keep), 2nd: RIKeying (drop).
            return sent == 2;
        }
        false
    }));
    let idb = net.nodes[b].ep.node_id();
    let now = net.now;
    let s = net.nodes[a]
        .ep
        .connect(now, Target::Node(idb), &[addb])
        .unwrap();
    net.flush(a);
    assert!(net.run_until(Duration::from_secs(20), |n| opened(n, a).contains(&s)));
    assert!(net.nodes[b].ep.stats().rikeyings_resent >= 1);
    assert_eq!(opened(&net, b).len(), 1, "one session at the responder");
    assert_eq!(net.nodes[b].ep.sessions().count(), 1);
}

#[test]
fn duplicate_opening_sessions_to_one_identity_are_suppressed() {
    // 3.5.1.1.1 step 1: two opening sessions (by node id and by address)
    // reach the same certificate; the second is aborted in favour of the
    // first.
    let mut net = Net::new(15, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (idb, addb) = (net.nodes[b].ep.node_id(), net.nodes[b].addr);
    let now = net.now;
    let s1 = net.nodes[a]
        .ep
        .connect(now, Target::Node(idb), &[addb])
        .unwrap();
    let s2 = net.nodes[a].ep.connect(now, Target::Any, &[addb]).unwrap();
    assert_ne!(s1, s2);
    net.flush(a);
    net.run_for(Duration::from_secs(5));
    let open = opened(&net, a);
    assert_eq!(open.len(), 1, "{open:?}");
    let dup = net.nodes[a].events.iter().any(|e| {
        matches!(e, Event::SessionFailed { reason: OpenFailure::Duplicate(other), .. } if *other == open[0])
    });
    assert!(dup, "the other opening session reports Duplicate");
    assert_eq!(opened(&net, b).len(), 1);
}

#[test]
fn path_mtu_discovery_finds_a_smaller_path_and_data_still_flows() {
    let mut net = Net::new(
        16,
        LinkModel {
            max_datagram: 1300,
            ..Default::default()
        },
    );
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (sa, _) = connect(&mut net, a, b);
    // Probes go out on timers; give them a few ERT0s.
    net.run_for(Duration::from_secs(30));
    let pmtu = net.nodes[a].ep.session_info(sa).unwrap().pmtu;
    assert!((1200..=1300).contains(&pmtu), "pmtu {pmtu}");
    let got = bulk(&mut net, a, b, sa, 2 << 20, 4000);
    assert_eq!(got.len(), (2 << 20) / 4000 + 1);
}

/// A path that carries nothing above the base size (1200 bytes): PMTU
/// discovery keeps the base, and fragments of every reliability still fit
/// its packets (RFC 7016 3.6.2.2 with the maximum-size header). Fragments
/// used to be sized for 1200 bytes of chunks, which no 1200-byte datagram
/// holds, and such a path carried no full fragment at all.
#[test]
fn a_path_of_the_base_size_carries_full_fragments() {
    let mut net = Net::new(
        18,
        LinkModel {
            max_datagram: 1200,
            ..Default::default()
        },
    );
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (sa, _) = connect(&mut net, a, b);
    net.run_for(Duration::from_secs(30));
    assert_eq!(net.nodes[a].ep.session_info(sa).unwrap().pmtu, 1200);
    let got = bulk(&mut net, a, b, sa, 1 << 20, 4000);
    assert_eq!(got.len(), (1 << 20) / 4000 + 1);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, m)| *m == pattern(i as u64, 4000)));
    let f = net.nodes[a].ep.open_flow(sa, b"frames", None).unwrap();
    let frames: Vec<Vec<u8>> = (0..20).map(|i| pattern(100 + i, 1425)).collect();
    assert_eq!(send_frames(&mut net, [a, b], sa, f, &frames), frames);
}

#[test]
fn a_peer_that_stops_while_data_is_in_flight_is_declared_dead_within_seconds() {
    // Keepalive-based detection takes `dead_after` (75 s by default); a
    // peer that vanishes while we send to it is noticed from the silent
    // retransmission timeouts instead.
    let mut net = Net::new(17, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (sa, _) = connect(&mut net, a, b);
    let f = net.nodes[a].ep.open_flow(sa, b"frames", None).unwrap();
    // Traffic first, so the session has measured its round trip.
    let mut got = Vec::new();
    for i in 0..50u64 {
        let now = net.now;
        net.nodes[a]
            .ep
            .send(now, sa, f, &pattern(i, 800), Reliability::NoRetransmit)
            .unwrap();
        net.flush(a);
        let t = net.now + Duration::from_millis(20);
        net.run_until(Duration::from_secs(1), |n| n.now >= t);
        messages(&mut net, b, &mut got);
    }
    assert!(got.len() > 40);
    net.nodes[b].up = false;
    let t0 = net.now;
    let dead = |n: &mut Net| {
        n.nodes[a].events.iter().any(|e| {
            matches!(e, Event::SessionClosed { session, reason: CloseReason::Dead, .. } if *session == sa)
        })
    };
    while !dead(&mut net) && net.now - t0 < Duration::from_secs(30) {
        let now = net.now;
        let _ = net.nodes[a]
            .ep
            .send(now, sa, f, b"frame", Reliability::NoRetransmit);
        net.flush(a);
        let t = net.now + Duration::from_millis(50);
        net.run_until(Duration::from_secs(1), |n| n.now >= t);
    }
    let took = net.now - t0;
    let info = net.nodes[a].ep.session_info(sa);
    assert!(dead(&mut net), "not declared dead: {info:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    println!("dead after {took:?}");
}

fn closed(net: &Net, i: usize) -> Vec<(SessionId, CloseReason)> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SessionClosed {
                session, reason, ..
            } => Some((*session, *reason)),
            _ => None,
        })
        .collect()
}

/// Deliver `iikeying` (a captured datagram) from A's address to B twice
/// while A and B have the live session `s2` / `b2`: B keeps it, announces
/// nothing, holds `candidates` unannounced sessions besides it, and the
/// session carries data; after 100 s B has that one session.
fn replay_leaves_the_live_session_alone(
    net: &mut Net,
    (a, b): (usize, usize),
    (s2, b2): (SessionId, SessionId),
    iikeying: &[u8],
    candidates: usize,
) {
    net.take_events(b);
    let (adda, addb) = (net.nodes[a].addr, net.nodes[b].addr);
    for _ in 0..2 {
        net.put(adda, addb, iikeying.to_vec());
        net.run_for(Duration::from_secs(1));
    }
    assert_eq!(closed(net, b), vec![], "the live session survived");
    assert!(opened(net, b).is_empty(), "nothing new announced");
    assert_eq!(net.nodes[b].ep.sessions().count(), 1 + candidates);
    assert_eq!(
        net.nodes[b].ep.session_for(net.nodes[a].ep.node_id()),
        Some(b2)
    );
    assert_eq!(
        deliver(net, a, s2, b, b"after the replay"),
        vec![b"after the replay".to_vec()]
    );
    net.run_for(Duration::from_secs(100));
    assert_eq!(closed(net, b), vec![]);
    assert_eq!(net.nodes[b].ep.sessions().count(), 1);
    assert_eq!(
        net.nodes[b].ep.session_info(b2).unwrap().state,
        ringlan_tunnel::SessionState::Open
    );
}

#[test]
fn a_replayed_iikeying_of_an_ended_session_is_refused() {
    // An on-path attacker keeps A's IIKeying of a first session and, after
    // A replaced that session with a second one, replays it from A's
    // address while its cookie is still valid. B recognises the SKIC of a
    // session it opened: refused, the second session untouched.
    let mut net = Net::new(15, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (adda, addb) = (net.nodes[a].addr, net.nodes[b].addr);
    let log = record(&mut net, adda, addb);
    let (s1, b1) = connect(&mut net, a, b);
    // IHello, then IIKeying.
    let iikeying = log.borrow()[1].clone();
    net.drop_filter = None;
    net.nodes[a].ep.close(net.now, s1, false);
    net.flush(a);
    assert!(net.run_until(Duration::from_secs(5), |n| closed(n, b)
        .contains(&(b1, CloseReason::Remote))));
    net.take_events(a);
    net.take_events(b);
    let (s2, b2) = connect(&mut net, a, b);
    assert_ne!(b1, b2);
    replay_leaves_the_live_session_alone(&mut net, (a, b), (s2, b2), &iikeying, 0);
    let refused = net.nodes[b].ep.stats().drops[&DropReason::ReplayedKeying];
    assert_eq!(refused, 2);
}

#[test]
fn an_iikeying_nobody_holds_the_keys_of_cannot_replace_the_live_session() {
    // A's first IIKeying is lost on the way (an attacker keeps a copy) and
    // A gives up on that handshake; its second one opens a session. The
    // attacker then delivers the first, never seen by B: same identity,
    // valid cookie and signature, keys nobody holds. B keeps the live
    // session until the new one proves itself, which it never does.
    let mut net = Net::new(17, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (adda, addb) = (net.nodes[a].addr, net.nodes[b].addr);
    let kept = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let k = kept.clone();
    let mut n = 0;
    net.drop_filter = Some(Box::new(move |from, to, data| {
        if from == adda && to == addb {
            n += 1;
            if n == 2 {
                k.borrow_mut().push(data.to_vec());
                return true;
            }
        }
        false
    }));
    let idb = net.nodes[b].ep.node_id();
    let now = net.now;
    let s0 = net.nodes[a]
        .ep
        .connect(now, Target::Node(idb), &[addb])
        .unwrap();
    net.flush(a);
    assert!(net.run_until(Duration::from_millis(400), |_| !kept.borrow().is_empty()));
    // A cancels before its IIKeying is due again.
    let now = net.now;
    net.nodes[a].ep.close(now, s0, true);
    net.flush(a);
    net.drop_filter = None;
    net.take_events(a);
    let (s2, b2) = connect(&mut net, a, b);
    let iikeying = kept.borrow()[0].clone();
    // One candidate for both copies (the second gets its RIKeying again).
    replay_leaves_the_live_session_alone(&mut net, (a, b), (s2, b2), &iikeying, 1);
    assert!(!net.nodes[b]
        .ep
        .stats()
        .drops
        .contains_key(&DropReason::ReplayedKeying));
}

#[test]
fn a_restarted_peer_replaces_its_old_session_once_it_proves_its_keys() {
    let mut net = Net::new(16, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (_s1, b1) = connect(&mut net, a, b);
    // A restarts: same identity and address, no memory of the session.
    let now = net.now;
    net.nodes[a].ep =
        ringlan_tunnel::Endpoint::new(now, config(1), ringlan_tunnel::Rng::from_seed([77; 32]));
    net.take_events(a);
    net.take_events(b);
    let idb = net.nodes[b].ep.node_id();
    let addb = net.nodes[b].addr;
    let s2 = net.nodes[a]
        .ep
        .connect(now, Target::Node(idb), &[addb])
        .unwrap();
    net.flush(a);
    assert!(net.run_until(Duration::from_secs(5), |n| !opened(n, b).is_empty()));
    assert!(opened(&net, a).contains(&s2));
    // The old session is closed as replaced before the new one is announced,
    // within a round trip of the new session opening at A.
    let evs: Vec<_> = net.nodes[b]
        .events
        .iter()
        .filter(|e| matches!(e, Event::SessionOpened { .. } | Event::SessionClosed { .. }))
        .collect();
    assert!(
        matches!(evs[..], [Event::SessionClosed { session, reason: CloseReason::Replaced, .. }, Event::SessionOpened { .. }] if *session == b1),
        "{evs:?}"
    );
    assert!(net.elapsed() < Duration::from_secs(1));
}
