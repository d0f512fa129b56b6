//! Floods against the pre-authentication limits (`docs/limits.md`) over
//! the simulated network: spoofed STUN from thousands of IPv4 sources and
//! one IPv6 /64 while a node joins through the introducer; one captured
//! IHello replayed from as many sources (refused before the limiter);
//! IHellos minted with fresh tags "from" a member's public IP while the
//! member uses its open
//! session and, after its NAT mapping changed, opens a new session through
//! the introducer. The flood rates are far above what the old shared
//! 8,192-source table survived (about 4,000 datagrams/s).

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{config, LinkModel, Net};
use ringlan_tunnel::{DropReason, Event, FlowEvent, NodeId, Reliability, SessionId, Target};

/// Spoofed datagrams per second in every flood below.
const FLOOD_RATE: u64 = 20_000;

fn opened_to(net: &Net, i: usize, peer: NodeId) -> Option<SessionId> {
    net.nodes[i].events.iter().find_map(|e| match e {
        Event::SessionOpened {
            session, peer: p, ..
        } if *p == peer => Some(*session),
        _ => None,
    })
}

fn introducer(net: &mut Net) -> usize {
    let mut icfg = config(10);
    icfg.redirector = true;
    icfg.stun_responder = true;
    net.add(icfg)
}

/// A 20-byte STUN Binding request (RFC 8489 5: no attributes).
fn stun_request(tx: u64) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&tx.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m
}

/// Run the network until `cond` holds or `limit` passes, while spoofed
/// datagrams from `spoof(k)` reach node `target` evenly spaced at
/// [`FLOOD_RATE`], interleaved with every other arrival and timer.
/// Returns whether `cond` held, and the number of datagrams sent.
fn flooded(
    net: &mut Net,
    target: usize,
    limit: Duration,
    mut spoof: impl FnMut(u64) -> (SocketAddr, Vec<u8>),
    mut cond: impl FnMut(&mut Net) -> bool,
) -> (bool, u64) {
    let start = net.now;
    let gap = Duration::from_secs(1) / FLOOD_RATE as u32;
    let mut sent = 0u64;
    loop {
        if cond(net) {
            return (true, sent);
        }
        if net.now - start > limit {
            return (false, sent);
        }
        let next_spoof = start + gap * sent as u32;
        match net.next_wakeup() {
            Some(t) if t <= next_spoof => {
                net.step();
            }
            _ => {
                net.now = net.now.max(next_spoof);
                let (from, mut data) = spoof(sent);
                let now = net.now;
                net.nodes[target].ep.handle_datagram(now, from, &mut data);
                net.flush(target);
                sent += 1;
            }
        }
    }
}

/// A spoofed source: an IPv4 address in one of 16,384 /24s, or one of
/// many addresses in a single IPv6 /64.
fn spoofed_source(k: u64, r: u64) -> SocketAddr {
    let port = 1024 + (r % 60_000) as u16;
    if k.is_multiple_of(2) {
        let v4 = 0x6440_0000u32 | (r as u32 & 0x003f_ffff); // 100.64.0.0/10
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(v4)), port)
    } else {
        let iid = r.rotate_left(17);
        let v6 = Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xbad,
            0x64,
            (iid >> 48) as u16,
            (iid >> 32) as u16,
            (iid >> 16) as u16,
            iid as u16,
        );
        SocketAddr::new(IpAddr::V6(v6), port)
    }
}

fn mix(x: u64) -> u64 {
    let x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A valid IHello for `node` sent to `to` (sealed with the Default
/// Session Key), from a throwaway endpoint; its tag is drawn from `k`. The
/// same `k` is a replay of one captured IHello; a fresh `k` per datagram
/// is what an attacker holding the network secret mints (a replayed tag
/// is answered to a few sources only, `a_replayed_ihello_...`).
fn ihello_for(now: Instant, node: NodeId, to: SocketAddr, k: u64) -> Vec<u8> {
    let mut seed = [9u8; 32];
    seed[..8].copy_from_slice(&k.to_le_bytes());
    let mut x = ringlan_tunnel::Endpoint::new(now, config(9), ringlan_tunnel::Rng::from_seed(seed));
    let s = x.connect(now, Target::Node(node), &[to]).unwrap();
    x.ihello_datagram(s).unwrap()
}

fn drops(net: &Net, i: usize, r: DropReason) -> u64 {
    net.nodes[i].ep.stats().drops.get(&r).copied().unwrap_or(0)
}

/// Eight nodes join through an introducer under a spoofed STUN flood
/// from thousands of IPv4 /24s and one IPv6 /64: each must be answered at
/// its first IHello. (With the old shared table of 8,192 sources, a new
/// source found room only when an old entry expired, about one datagram in
/// five at this rate.)
#[test]
fn nodes_join_through_an_introducer_under_a_spoofed_stun_flood() {
    let mut net = Net::new(61, LinkModel::default());
    let intro = introducer(&mut net);
    let joiners: Vec<usize> = (1..=8).map(|k| net.add(config(k))).collect();
    let iaddr = net.nodes[intro].addr;
    let iid = net.nodes[intro].ep.node_id();

    // The flood is on before the joiners start.
    let spoof = |k: u64| (spoofed_source(k, mix(k)), stun_request(k));
    let (_, warm) = flooded(&mut net, intro, Duration::from_secs(2), spoof, |_| false);
    let t0 = net.now;
    for &j in &joiners {
        net.nodes[j].ep.connect(t0, Target::Any, &[iaddr]).unwrap();
        net.flush(j);
    }
    let (joined, sent) = flooded(&mut net, intro, Duration::from_secs(10), spoof, |n| {
        joiners.iter().all(|&j| opened_to(n, j, iid).is_some())
    });
    let took = net.now - t0;
    eprintln!("joined under {FLOOD_RATE} spoofed STUN/s in {took:?}");
    assert!(joined, "no session through the flooded introducer");
    // Unflooded, the handshake takes two round trips (40 ms here); the
    // first IHello must be answered, not a retransmission (1 s later).
    assert!(took < Duration::from_millis(500), "join took {took:?}");
    assert!(warm + sent > 40_000, "flood too small: {}", warm + sent);
    let st = net.nodes[intro].ep.stats();
    // Most of the flood was refused by the STUN budgets, by reason.
    assert!(st.stun_answered < (warm + sent) / 4, "{st:?}");
    let refused = drops(&net, intro, DropReason::StunPrefixLimit)
        + drops(&net, intro, DropReason::StunGlobalLimit);
    assert_eq!(refused + st.stun_answered, warm + sent);
    // The flood never filled the prefix table beyond its fixed size, and
    // each datagram cost at most 2 * WAYS slot probes (O(1)).
    let t = net.nodes[intro].ep.preauth_stats().stun;
    assert!(t.entries <= t.capacity, "{t:?}");
    assert!(t.lookups >= warm + sent - 100, "{t:?}");
    assert!(t.probes <= t.lookups * 8, "{t:?}");
    assert!(t.evictions > 0 && t.evictions <= t.lookups, "{t:?}");
}

/// One captured IHello replayed from thousands of spoofed sources (IPv4
/// /24s and one IPv6 /64) while eight nodes join: the tag is answered to at
/// most `MAX_SOURCES` (8) sources, the replays take no startup tokens (they
/// are refused before the limiter), and every joiner is answered at its
/// first IHello.
#[test]
fn a_replayed_ihello_is_answered_a_few_times_and_takes_no_startup_tokens() {
    let mut net = Net::new(67, LinkModel::default());
    let intro = introducer(&mut net);
    let joiners: Vec<usize> = (1..=8).map(|k| net.add(config(k))).collect();
    let iaddr = net.nodes[intro].addr;
    let iid = net.nodes[intro].ep.node_id();

    let captured = ihello_for(net.now, iid, iaddr, 0);
    let spoof = move |k: u64| (spoofed_source(k, mix(k)), captured.clone());
    let (_, warm) = flooded(
        &mut net,
        intro,
        Duration::from_secs(2),
        spoof.clone(),
        |_| false,
    );
    // Before the joiners: only the replay, answered to 8 sources.
    assert_eq!(net.nodes[intro].ep.stats().ihellos_answered, 8);
    let t0 = net.now;
    for &j in &joiners {
        net.nodes[j].ep.connect(t0, Target::Any, &[iaddr]).unwrap();
        net.flush(j);
    }
    // The flood goes on from further sources (none repeats).
    let further = move |k: u64| spoof(k + warm);
    let (joined, sent) = flooded(&mut net, intro, Duration::from_secs(10), further, |n| {
        joiners.iter().all(|&j| opened_to(n, j, iid).is_some())
    });
    let took = net.now - t0;
    eprintln!("joined under {FLOOD_RATE} replayed IHellos/s in {took:?}");
    assert!(joined, "no session through the flooded introducer");
    assert!(took < Duration::from_millis(500), "join took {took:?}");
    assert!(warm + sent > 40_000, "flood too small: {}", warm + sent);
    let st = net.nodes[intro].ep.stats();
    let replays = drops(&net, intro, DropReason::ReplayedIHello);
    // Every replayed datagram but the first 8 sources' was refused.
    assert_eq!(replays, warm + sent - 8, "{st:?}");
    assert_eq!(
        drops(&net, intro, DropReason::StartupGlobalLimit),
        0,
        "{st:?}"
    );
}

/// A member behind a NAT has an open session with the introducer. An
/// ex-member sends IHellos with fresh tags "from" the member's public IP
/// (the old
/// address of its mapping and random ports) at a high rate: the member's
/// session carries on, and after its NAT mapping changes (new port) it
/// still opens a new session through the introducer.
#[test]
fn spoofed_ihellos_from_a_members_ip_do_not_lock_the_member_out() {
    let mut net = Net::new(62, LinkModel::default());
    let intro = introducer(&mut net);
    let c = net.add(config(3));
    let nat = net.add_nat(false);
    let m = net.add_behind(nat, config(2));
    let iaddr = net.nodes[intro].addr;
    let iid = net.nodes[intro].ep.node_id();
    for n in [c, m] {
        let now = net.now;
        net.nodes[n].ep.connect(now, Target::Any, &[iaddr]).unwrap();
        net.flush(n);
    }
    assert!(net.run_until(Duration::from_secs(10), |n| {
        opened_to(n, c, iid).is_some() && opened_to(n, m, iid).is_some()
    }));
    let sm = opened_to(&net, m, iid).unwrap();
    let mid = net.nodes[m].ep.node_id();
    let s_at_intro = net.nodes[intro].ep.session_for(mid).unwrap();
    let old = net.nodes[intro]
        .ep
        .session_info(s_at_intro)
        .unwrap()
        .path
        .direct()
        .unwrap();

    // Valid IHellos for the introducer (sealed with the Default Session
    // Key), each with a fresh tag: an ex-member minting them.
    let t0 = net.now;
    let member_ip = old.ip();
    let spoof = move |k: u64| {
        let port = if k.is_multiple_of(4) {
            old.port()
        } else {
            1024 + (mix(k) % 60_000) as u16
        };
        (
            SocketAddr::new(member_ip, port),
            ihello_for(t0, iid, iaddr, k),
        )
    };

    // 1. The open session carries on.
    let f = net.nodes[m].ep.open_flow(sm, b"m", None).unwrap();
    for i in 0..20u8 {
        let now = net.now;
        net.nodes[m]
            .ep
            .send(now, sm, f, &[i; 100], Reliability::Reliable)
            .unwrap();
        net.flush(m);
        let wait = Duration::from_millis(if i == 19 { 1000 } else { 100 });
        let (_, _) = flooded(&mut net, intro, wait, spoof, |_| false);
    }
    let delivered = net
        .take_events(intro)
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Flow {
                    event: FlowEvent::Message { .. },
                    ..
                }
            )
        })
        .count();
    assert_eq!(delivered, 20);
    assert!(
        drops(&net, intro, DropReason::StartupPrefixLimit) > 1000,
        "the flood was limited: {:?}",
        net.nodes[intro].ep.stats()
    );
    // Spoofing the member's exact address drains only that address's own
    // allowance.
    assert!(drops(&net, intro, DropReason::PeerAddressLimit) > 0);

    // 2. The member's NAT mapping changes: its session follows (RFC 7016
    // 3.5.4.2) and a new session through the introducer still opens.
    net.nats[nat].rebind();
    let now = net.now;
    net.nodes[m]
        .ep
        .send(now, sm, f, b"moved", Reliability::Reliable)
        .unwrap();
    net.flush(m);
    let (moved, _) = flooded(&mut net, intro, Duration::from_secs(5), spoof, |n| {
        n.nodes[intro]
            .ep
            .session_info(s_at_intro)
            .and_then(|i| i.path.direct())
            .is_some_and(|a| a != old)
    });
    assert!(moved, "the introducer's session did not follow the member");
    let cid = net.nodes[c].ep.node_id();
    let peer_lookups = net.nodes[intro].ep.preauth_stats().peer.lookups;
    let now = net.now;
    net.nodes[m]
        .ep
        .connect(now, Target::Node(cid), &[iaddr])
        .unwrap();
    net.flush(m);
    let (opened, _) = flooded(&mut net, intro, Duration::from_secs(10), spoof, |n| {
        opened_to(n, m, cid).is_some()
    });
    assert!(
        opened,
        "the member was locked out: {:?}",
        net.nodes[intro].ep.stats()
    );
    // Its IHello came from its session's new address: the peer allowance.
    assert!(net.nodes[intro].ep.preauth_stats().peer.lookups > peer_lookups);
    assert!(net.nodes[m]
        .events
        .iter()
        .all(|e| !matches!(e, Event::SessionClosed { .. })));
}

/// A captured IIKeying replayed from 1,000 addresses of one /24: each
/// would earn a Cookie Change (RFC 7016 3.5.1.2, the cookie was made for
/// another address), but only the prefix's burst is answered. Replayed from
/// the initiator's own address (now an open session's peer), it is a
/// retransmission and gets the stored RIKeying from the peer allowance.
#[test]
fn replayed_iikeyings_earn_cookie_changes_only_within_the_prefix_budget() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut net = Net::new(63, LinkModel::default());
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (aaddr, baddr) = (net.nodes[a].addr, net.nodes[b].addr);
    let seen: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let log = seen.clone();
    net.drop_filter = Some(Box::new(move |from, to, data| {
        // IHellos are padded to 160 bytes; an IIKeying carries a
        // certificate, a public key and a signature.
        if from == aaddr && to == baddr && data.len() > 200 {
            log.borrow_mut().push(data.to_vec());
        }
        false
    }));
    let bid = net.nodes[b].ep.node_id();
    let now = net.now;
    net.nodes[a]
        .ep
        .connect(now, Target::Node(bid), &[baddr])
        .unwrap();
    net.flush(a);
    assert!(net.run_until(Duration::from_secs(5), |n| opened_to(n, a, bid).is_some()));
    net.drop_filter = None;
    let iikeying = seen.borrow().first().cloned().expect("an IIKeying");

    let before = net.nodes[b].ep.stats().clone();
    let now = net.now;
    for k in 0..1000u32 {
        let from = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(0xc633_6400 | (k & 0xff))),
            2000 + k as u16,
        );
        net.nodes[b]
            .ep
            .handle_datagram(now, from, &mut iikeying.clone());
    }
    net.nodes[b]
        .ep
        .handle_datagram(now, aaddr, &mut iikeying.clone());
    let st = net.nodes[b].ep.stats();
    let burst = net.nodes[b].ep.config().limits.startup_per_prefix.burst as u64;
    assert_eq!(st.cookie_changes_sent - before.cookie_changes_sent, burst);
    assert_eq!(
        drops(&net, b, DropReason::StartupPrefixLimit),
        1000 - burst,
        "{st:?}"
    );
    assert_eq!(st.rikeyings_resent - before.rikeyings_resent, 1);
    assert_eq!(net.nodes[b].ep.preauth_stats().peer.lookups, 1);
}

/// An attacker floods a member M with IHellos for a target T from
/// thousands of spoofed prefixes; M forwards them to T as FIHellos
/// (RFC 7016 3.5.1.5), each asking T to send an RHello to the spoofed
/// address. T answers only within M's forwarder budget, and another node
/// still opens a session with T through a second forwarder meanwhile
/// (no Redirects anywhere: only the forwarded IHello can reach T).
#[test]
fn a_flood_of_fihellos_through_one_forwarder_is_bounded() {
    let mut net = Net::new(64, LinkModel::default());
    let m = net.add(config(1));
    let i = net.add(config(2));
    let t = net.add(config(3));
    let a = net.add(config(4));
    let (maddr, iaddr) = (net.nodes[m].addr, net.nodes[i].addr);
    let (mid, iid, tid) = (
        net.nodes[m].ep.node_id(),
        net.nodes[i].ep.node_id(),
        net.nodes[t].ep.node_id(),
    );
    for (fwd, fid) in [(maddr, mid), (iaddr, iid)] {
        let now = net.now;
        net.nodes[t]
            .ep
            .connect(now, Target::Node(fid), &[fwd])
            .unwrap();
        net.flush(t);
    }
    assert!(net.run_until(Duration::from_secs(10), |n| {
        opened_to(n, t, mid).is_some() && opened_to(n, t, iid).is_some()
    }));

    // Valid IHellos for T with fresh tags (an ex-member minting them).
    let t0 = net.now;
    let spoof = move |k: u64| (spoofed_source(k, mix(k)), ihello_for(t0, tid, maddr, k));
    let before = net.nodes[t].ep.stats().ihellos_answered;
    let start = net.now;
    let (_, warm) = flooded(&mut net, m, Duration::from_secs(1), spoof, |_| false);
    let now = net.now;
    net.nodes[a]
        .ep
        .connect(now, Target::Node(tid), &[iaddr])
        .unwrap();
    net.flush(a);
    let (opened, sent) = flooded(&mut net, m, Duration::from_secs(10), spoof, |n| {
        opened_to(n, a, tid).is_some()
    });
    assert!(
        opened,
        "no forwarded handshake: {:?}",
        net.nodes[t].ep.stats()
    );
    let elapsed = (net.now - start).as_secs_f64();

    let forwarded = net.nodes[m].ep.stats().fihellos_forwarded;
    assert!(
        forwarded > 500,
        "M forwarded too little to test: {forwarded} of {}",
        warm + sent
    );
    // T answered M's FIHellos within M's budget (plus A's, through I).
    let st = net.nodes[t].ep.stats();
    let b = net.nodes[t].ep.config().limits.fihello_per_forwarder;
    let answered = st.ihellos_answered - before;
    let bound = b.burst + b.rate * elapsed + 8.0;
    eprintln!("M forwarded {forwarded} FIHellos, T answered {answered} in {elapsed:.1} s");
    assert!(
        (answered as f64) <= bound,
        "{answered} RHellos in {elapsed:.1} s, bound {bound}"
    );
    assert!(drops(&net, t, DropReason::ForwarderLimit) > forwarded / 2);
    assert_eq!(
        net.nodes[t].ep.preauth_stats().forwarder.entries,
        2,
        "one bucket per forwarder"
    );
}
