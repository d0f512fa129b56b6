//! Relayed flow routes over the simulated network: an end-to-end session
//! between two nodes with no direct path runs over a relay, survives the
//! relay's death by moving to another route, and moves to the direct path
//! once one exists — one RTMFP session and one reliable flow throughout.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{config, messages, LinkModel, Net};
use ringlan_tunnel::SessionId;
use ringlan_tunnel::{DropReason, Event, Target};
use ringlan_tunnel::{FlowEvent, FlowId, Reliability};
use ringlan_tunnel::{HopMac, Path, RouteId};
use ringlan_tunnel::{RekeyConfig, RelayLimits, RouteRole, ROUTE_OVERHEAD};

const A: usize = 0;
const R1: usize = 1;
const R2: usize = 2;
const B: usize = 3;

fn opened_with(net: &Net, i: usize, j: usize) -> Option<SessionId> {
    let peer = net.nodes[j].ep.node_id();
    net.nodes[i].ep.session_for(peer).filter(|s| {
        net.nodes[i]
            .ep
            .session_info(*s)
            .is_some_and(|info| info.state == ringlan_tunnel::SessionState::Open)
    })
}

fn connect_direct(net: &mut Net, a: usize, b: usize) -> (SessionId, SessionId) {
    let peer = net.nodes[b].ep.node_id();
    let addr = net.nodes[b].addr;
    let now = net.now;
    net.nodes[a]
        .ep
        .connect(now, Target::Node(peer), &[addr])
        .unwrap();
    net.flush(a);
    assert!(
        net.run_until(Duration::from_secs(30), |n| opened_with(n, a, b).is_some()
            && opened_with(n, b, a).is_some())
    );
    (
        opened_with(net, a, b).unwrap(),
        opened_with(net, b, a).unwrap(),
    )
}

/// The hop tags of [`route_via`]'s routes: AEGIS-128L on the first hop,
/// AES-256-GCM on the second, and so on (a relay between the two kinds
/// checks one and writes the other), so every relayed test runs both.
const HOP_MACS: [HopMac; 2] = [HopMac::Aegis128L, HopMac::AesGcm];

/// Set up a route a -> relays... -> b the way the agents' setup request
/// does, hop by hop over the existing sessions, hop `i`'s tags by
/// [`HOP_MACS`]. Returns the route ids at a and b.
fn route_via(net: &mut Net, a: usize, relays: &[usize], b: usize) -> (RouteId, RouteId) {
    route_via_macs(net, a, relays, b, &HOP_MACS)
}

/// [`route_via`] with hop `i`'s tags by `macs[i % macs.len()]`.
fn route_via_macs(
    net: &mut Net,
    a: usize,
    relays: &[usize],
    b: usize,
    macs: &[HopMac],
) -> (RouteId, RouteId) {
    let now = net.now;
    let mac = |hop: usize| macs[hop % macs.len()];
    let first = opened_with(net, a, relays[0]).unwrap();
    let offer = net.nodes[a].ep.route_begin(now, first, mac(0)).unwrap();
    let mut up = a;
    let mut to_next = offer.clone();
    let mut pending = Vec::new();
    for (i, &r) in relays.iter().enumerate() {
        let next = relays.get(i + 1).copied().unwrap_or(b);
        let r_up = opened_with(net, r, up).unwrap();
        let r_down = opened_with(net, r, next).unwrap();
        let (up_in, down) = net.nodes[r]
            .ep
            .route_transit(now, r_up, &to_next, r_down, mac(i + 1))
            .unwrap();
        pending.push((r, up_in));
        to_next = down;
        up = r;
    }
    let last = opened_with(net, b, up).unwrap();
    let b_id = net.nodes[b].ep.route_accept(now, last, &to_next).unwrap();
    // Answers walk back: each node learns its downstream id.
    let mut next_id = b_id;
    for (r, up_in) in pending.into_iter().rev() {
        net.nodes[r].ep.route_finish(up_in, next_id).unwrap();
        next_id = up_in;
    }
    net.nodes[a].ep.route_finish(offer.id, next_id).unwrap();
    (offer.id, b_id)
}

fn route(net: &mut Net, a: usize, r: usize, b: usize) -> (RouteId, RouteId) {
    route_via(net, a, &[r], b)
}

/// A opens a session to B with `path` as its only candidate; both ends
/// OPEN.
fn open_over(net: &mut Net, path: Path) -> (SessionId, SessionId) {
    let now = net.now;
    let peer = net.nodes[B].ep.node_id();
    net.nodes[A]
        .ep
        .connect(now, Target::Node(peer), &[path])
        .unwrap();
    assert!(
        net.run_until(Duration::from_secs(30), |n| opened_with(n, A, B).is_some()
            && opened_with(n, B, A).is_some())
    );
    (
        opened_with(net, A, B).unwrap(),
        opened_with(net, B, A).unwrap(),
    )
}

fn relay_cfg(seed: u8) -> ringlan_tunnel::EndpointConfig {
    let mut c = config(seed);
    c.relay = RelayLimits {
        enabled: true,
        ..RelayLimits::default()
    };
    c
}

fn lab(loss: f64) -> Net {
    lab_rekeying(loss, RekeyConfig::default())
}

/// The lab with `rekey` on the route's ends A and B.
fn lab_rekeying(loss: f64, rekey: RekeyConfig) -> Net {
    lab_ends(loss, |c| c.session.rekey = rekey.clone())
}

/// The lab with `set` applied to the configuration of the route's ends A
/// and B.
fn lab_ends(loss: f64, set: impl Fn(&mut ringlan_tunnel::EndpointConfig)) -> Net {
    let mut net = Net::new(
        11,
        LinkModel {
            delay: Duration::from_millis(5),
            loss,
            ..LinkModel::default()
        },
    );
    let end = |seed| {
        let mut c = config(seed);
        set(&mut c);
        c
    };
    assert_eq!(net.add(end(1)), A);
    assert_eq!(net.add(relay_cfg(2)), R1);
    assert_eq!(net.add(relay_cfg(3)), R2);
    assert_eq!(net.add(end(4)), B);
    net
}

fn block_direct(net: &mut Net) {
    let a = net.nodes[A].addr;
    let b = net.nodes[B].addr;
    net.drop_filter = Some(Box::new(move |from, to, _| {
        (from == a && to == b) || (from == b && to == a)
    }));
}

fn pattern(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (i.wrapping_mul(31).wrapping_add(k as u64 * 7)) as u8)
        .collect()
}

/// Send message `n` (`len` bytes of [`pattern`]) reliably from node `i`
/// on its session `s`, flow `f`, and flush.
fn send_one(net: &mut Net, i: usize, s: SessionId, f: FlowId, n: u64, len: usize) {
    send_as(net, (i, s, f), n, len, Reliability::Reliable);
}

/// [`send_one`] with reliability `rel`, from node `i` on `(i, s, f)`.
fn send_as(
    net: &mut Net,
    (i, s, f): (usize, SessionId, FlowId),
    n: u64,
    len: usize,
    rel: Reliability,
) {
    let now = net.now;
    net.nodes[i]
        .ep
        .send(now, s, f, &pattern(n, len), rel)
        .unwrap();
    net.flush(i);
}

/// Drives a reliable transfer a -> b message by message and reacts to
/// path events the way the agent does.
struct Transfer {
    sa: SessionId,
    flow: FlowId,
    next: u64,
    got: Vec<Vec<u8>>,
    stalls: Vec<Path>,
    /// When each stall was reported.
    stalled_at: Vec<std::time::Instant>,
    standby: Option<Path>,
}

impl Transfer {
    fn new(net: &mut Net, sa: SessionId) -> Transfer {
        let flow = net.nodes[A].ep.open_flow(sa, b"bulk", None).unwrap();
        Transfer {
            sa,
            flow,
            next: 0,
            got: Vec::new(),
            stalls: Vec::new(),
            stalled_at: Vec::new(),
            standby: None,
        }
    }

    fn run(&mut self, net: &mut Net, until_msgs: usize, limit: Duration) {
        let deadline = net.now + limit;
        while self.got.len() < until_msgs {
            while (self.next as usize) < until_msgs {
                let now = net.now;
                match net.nodes[A].ep.send(
                    now,
                    self.sa,
                    self.flow,
                    &pattern(self.next, 1000),
                    Reliability::Reliable,
                ) {
                    Ok(()) => self.next += 1,
                    Err(_) => break,
                }
            }
            net.flush(A);
            assert!(net.step(), "idle network");
            for e in net.take_events(A) {
                if let Event::PathStalled { session, path } = e {
                    eprintln!("stall at {:?} on {path}", net.elapsed());
                    self.stalls.push(path);
                    self.stalled_at.push(net.now);
                    if let Some(s) = self.standby.take() {
                        let now = net.now;
                        assert!(net.nodes[A].ep.migrate(now, session, s));
                    }
                }
            }
            for e in net.take_events(B) {
                if let Event::AddressChanged { to, .. } = &e {
                    eprintln!("B moved at {:?} to {to}", net.elapsed());
                }
                if let Event::Flow {
                    event: FlowEvent::Message { data, .. },
                    ..
                } = e
                {
                    self.got.push(data);
                }
            }
            assert!(
                net.now < deadline,
                "stuck at {} of {until_msgs}",
                self.got.len()
            );
        }
    }

    fn check(&self) {
        for (i, m) in self.got.iter().enumerate() {
            assert_eq!(m, &pattern(i as u64, 1000), "message {i}");
        }
    }
}

fn remote(net: &Net, i: usize, s: SessionId) -> Path {
    net.nodes[i].ep.session_info(s).unwrap().path
}

fn transit_bytes(net: &Net, r: usize) -> u64 {
    net.nodes[r]
        .ep
        .routes(net.now)
        .iter()
        .filter(|i| matches!(i.role, RouteRole::Transit { .. }))
        .map(|i| i.tx.bytes)
        .sum()
}

#[test]
fn a_session_opens_and_carries_a_reliable_flow_over_a_relay_under_loss() {
    let mut net = lab(0.02);
    let (ra, rb, sa, sb) = relayed_via_r1(&mut net);
    assert_eq!(remote(&net, A, sa), Path::Route(ra));
    assert_eq!(remote(&net, B, sb), Path::Route(rb));
    let mut t = Transfer::new(&mut net, sa);
    t.run(&mut net, 4096, Duration::from_secs(300));
    t.check();
    // Everything went through the relay, whose transit entries counted it.
    assert!(
        transit_bytes(&net, R1) > 4096 * 1000,
        "{}",
        transit_bytes(&net, R1)
    );
    // PMTU on the route leaves room for the route header on every hop.
    let info = net.nodes[A].ep.session_info(sa).unwrap();
    assert!(info.pmtu + ROUTE_OVERHEAD <= 1472, "{}", info.pmtu);
}

/// A session between A and B over a route through R1, no direct path:
/// (A's route id, B's, A's session, B's session).
fn relayed_via_r1(net: &mut Net) -> (RouteId, RouteId, SessionId, SessionId) {
    block_direct(net);
    connect_direct(net, A, R1);
    connect_direct(net, B, R1);
    let (ra, rb) = route(net, A, R1, B);
    // The initiator knows the target only through the route.
    let (sa, sb) = open_over(net, Path::Route(ra));
    (ra, rb, sa, sb)
}

/// A session between A and B over a route through R1, a second route
/// through R2 ready, no direct path: (A's route ids through R1 and R2,
/// B's through R2, A's session, B's session).
fn relayed_with_standby(net: &mut Net) -> (RouteId, RouteId, RouteId, SessionId, SessionId) {
    block_direct(net);
    connect_direct(net, A, R1);
    connect_direct(net, B, R1);
    connect_direct(net, A, R2);
    connect_direct(net, B, R2);
    let (ra1, _) = route(net, A, R1, B);
    let (ra2, rb2) = route(net, A, R2, B);
    let (sa, sb) = open_over(net, Path::Route(ra1));
    (ra1, ra2, rb2, sa, sb)
}

#[test]
fn the_session_moves_to_a_standby_route_when_the_relay_dies_and_then_to_direct() {
    let mut net = lab(0.0);
    let (ra1, ra2, rb2, sa, sb) = relayed_with_standby(&mut net);
    let mut t = Transfer::new(&mut net, sa);
    t.standby = Some(Path::Route(ra2));
    t.run(&mut net, 1000, Duration::from_secs(60));

    // The relay dies mid-transfer: A sees the path stall, moves to the
    // standby route, B follows; no message is lost or duplicated.
    net.nodes[R1].up = false;
    let killed = net.now;
    t.run(&mut net, 3000, Duration::from_secs(60));
    t.check();
    assert_eq!(t.stalls, vec![Path::Route(ra1)]);
    // Reported within the early stall check (four round trips of 20 ms
    // here, at least 100 ms), before the retransmission timeout (at least
    // 250 ms) and so before the first retransmission of a TCP connection
    // inside (200 ms).
    let noticed = t.stalled_at[0] - killed;
    assert!(
        noticed < Duration::from_millis(150),
        "stall after {noticed:?}"
    );
    assert_eq!(remote(&net, A, sa), Path::Route(ra2));
    assert!(net.run_until(Duration::from_secs(5), |n| remote(n, B, sb)
        == Path::Route(rb2)));
    assert!(net.now - killed < Duration::from_secs(10));
    assert!(
        opened_with(&net, A, B) == Some(sa),
        "same session throughout"
    );

    // A direct path appears (say a NAT became cone-like): a probe from A
    // moves both ends onto it, and the transfer goes on.
    net.drop_filter = None;
    let now = net.now;
    let b_addr = net.nodes[B].addr;
    assert!(net.nodes[A].ep.probe_path(now, sa, b_addr));
    t.run(&mut net, 5000, Duration::from_secs(60));
    let ok = net.run_until(Duration::from_secs(10), |n| {
        remote(n, A, sa) == Path::Direct(b_addr)
            && remote(n, B, sb) == Path::Direct(n.nodes[A].addr)
    });
    assert!(
        ok,
        "A at {} B at {}",
        remote(&net, A, sa),
        remote(&net, B, sb)
    );
    let before = transit_bytes(&net, R2);
    t.run(&mut net, 7000, Duration::from_secs(60));
    t.check();
    // Only route keepalives (if any) cross the relay after the move.
    assert!(transit_bytes(&net, R2) - before < 10_000);
    assert_eq!(opened_with(&net, A, B), Some(sa));
}

/// The relay dies while both ends send. A moves to the standby route; B,
/// which sent two messages into the dead route meanwhile, follows A by
/// address mobility. What B sent on the old path says nothing about the
/// new one: B must not report the new path stalled when A then falls
/// silent for a while (in the netns lab B did, 100 ms after following, and
/// moved its session back onto the dead relay's route).
#[test]
fn the_end_that_follows_a_move_does_not_count_what_it_sent_on_the_old_path() {
    let mut net = lab(0.0);
    let (ra1, ra2, rb2, sa, sb) = relayed_with_standby(&mut net);
    let fa = net.nodes[A].ep.open_flow(sa, b"a", None).unwrap();
    let fb = net.nodes[B].ep.open_flow(sb, b"b", None).unwrap();
    let send =
        |net: &mut Net, i: usize, s: SessionId, f: FlowId, n: u64| send_one(net, i, s, f, n, 1000);
    // Both ways for a second (round trips measured); B's last messages
    // are acknowledged before the relay dies.
    for n in 0..200 {
        send(&mut net, A, sa, fa, n);
        if n < 180 {
            send(&mut net, B, sb, fb, n);
        }
        net.run_for(Duration::from_millis(5));
    }
    net.take_events(A);
    net.take_events(B);
    net.nodes[R1].up = false;
    let killed = net.now;
    let mut stalls_b = Vec::new();
    let mut followed = None;
    let mut b_sent = false;
    let mut n = 200;
    while net.now - killed < Duration::from_millis(1500) {
        let t = net.now - killed;
        // A sends until it has moved, then falls silent; B sends two
        // messages 50 ms after the relay died, into the dead route.
        if remote(&net, A, sa) == Path::Route(ra1) {
            send(&mut net, A, sa, fa, n);
            n += 1;
        }
        if t >= Duration::from_millis(50) && !b_sent {
            for _ in 0..2 {
                send(&mut net, B, sb, fb, n);
                n += 1;
            }
            b_sent = true;
        }
        net.run_for(Duration::from_millis(5));
        for e in net.take_events(A) {
            if let Event::PathStalled { session, path } = e {
                assert_eq!(path, Path::Route(ra1));
                let now = net.now;
                assert!(net.nodes[A].ep.migrate(now, session, Path::Route(ra2)));
            }
        }
        for e in net.take_events(B) {
            match e {
                Event::PathStalled { path, .. } => stalls_b.push((net.now - killed, path)),
                Event::AddressChanged { .. } if followed.is_none() => {
                    followed = Some(net.now - killed)
                }
                _ => {}
            }
        }
    }
    assert_eq!(remote(&net, A, sa), Path::Route(ra2));
    assert_eq!(remote(&net, B, sb), Path::Route(rb2));
    let followed = followed.expect("B followed A");
    let after: Vec<_> = stalls_b.iter().filter(|(t, _)| *t >= followed).collect();
    assert!(
        after.is_empty(),
        "B followed at {followed:?}, then stalled: {after:?}"
    );
}

/// The relay dies when everything sent was answered; then one message
/// goes out. Its acknowledgement could be delayed 200 ms by a live far
/// end, so the check pings instead, and the unanswered Ping reports the
/// stall well before the retransmission timeout (at least 250 ms), itself
/// later than the first retransmission of a TCP connection inside.
#[test]
fn one_packet_into_a_dead_route_is_noticed_before_the_timeout() {
    let mut net = lab(0.0);
    let (ra1, _, _, sa, _) = relayed_with_standby(&mut net);
    let flow = net.nodes[A].ep.open_flow(sa, b"one", None).unwrap();
    for i in 0..20u64 {
        send_one(&mut net, A, sa, flow, i, 100);
        net.run_for(Duration::from_millis(50));
    }
    // Everything answered (a lone last packet's acknowledgement is delayed
    // 200 ms).
    net.run_for(Duration::from_millis(500));
    net.take_events(A);
    net.nodes[R1].up = false;
    let now = net.now;
    send_one(&mut net, A, sa, flow, 20, 100);
    let mut stalled = None;
    net.run_until(Duration::from_secs(1), |n| {
        for e in n.take_events(A) {
            if let Event::PathStalled { path, .. } = e {
                stalled.get_or_insert((n.now - now, path));
            }
        }
        stalled.is_some()
    });
    let (after, path) = stalled.expect("no stall");
    assert_eq!(path, Path::Route(ra1));
    assert!(after < Duration::from_millis(200), "stall after {after:?}");
}

#[test]
fn single_messages_answered_by_delayed_acknowledgements_are_not_a_stall() {
    // One message at a time, nothing coming back but the far end's
    // acknowledgement, which it may delay by 200 ms (RFC 7016 3.6.3.4.4):
    // more than the early stall check's 100 ms, so that check must not
    // count a lone packet.
    let mut net = lab(0.0);
    let (ra, _, sa, _) = relayed_via_r1(&mut net);
    let flow = net.nodes[A].ep.open_flow(sa, b"drip", None).unwrap();
    net.run_for(Duration::from_secs(1));
    net.take_events(A);
    let mut got = Vec::new();
    for i in 0..20u64 {
        send_one(&mut net, A, sa, flow, i, 100);
        net.run_for(Duration::from_millis(400));
        for e in net.take_events(A) {
            assert!(
                !matches!(e, Event::PathStalled { .. }),
                "message {i}: {e:?}"
            );
        }
        for e in net.take_events(B) {
            if let Event::Flow {
                event: FlowEvent::Message { data, .. },
                ..
            } = e
            {
                got.push(data);
            }
        }
    }
    assert_eq!(got.len(), 20);
    assert_eq!(remote(&net, A, sa), Path::Route(ra));
}

#[test]
fn a_node_that_does_not_relay_refuses_and_hops_need_open_sessions() {
    let mut net = lab(0.0);
    connect_direct(&mut net, A, B);
    connect_direct(&mut net, A, R1);
    let now = net.now;
    let a_b = opened_with(&net, A, B).unwrap();
    let b_a = opened_with(&net, B, A).unwrap();
    let offer = net.nodes[A]
        .ep
        .route_begin(now, a_b, HopMac::AesGcm)
        .unwrap();
    // B does not relay (relay disabled by default).
    assert_eq!(
        net.nodes[B]
            .ep
            .route_transit(now, b_a, &offer, b_a, HopMac::AesGcm),
        Err(ringlan_tunnel::RouteError::RelayDisabled)
    );
    // R1 relays, but has no session to B.
    let r_a = opened_with(&net, R1, A).unwrap();
    assert_eq!(
        net.nodes[R1]
            .ep
            .route_transit(now, r_a, &offer, SessionId(12345), HopMac::AesGcm),
        Err(ringlan_tunnel::RouteError::NoSession)
    );
    // Garbage at a relay's port changes nothing.
    let from: SocketAddr = "198.51.100.9:777".parse().unwrap();
    let before = net.nodes[R1].ep.routes(now).len();
    for n in 0..64u8 {
        let mut d = vec![n; 20 + n as usize];
        net.nodes[R1].ep.handle_datagram(now, from, &mut d);
    }
    assert_eq!(net.nodes[R1].ep.routes(now).len(), before);
    assert!(opened_with(&net, R1, A).is_some());
}

#[test]
fn a_route_through_two_relays_carries_the_handshake_and_data() {
    let mut net = lab(0.01);
    block_direct(&mut net);
    connect_direct(&mut net, A, R1);
    connect_direct(&mut net, R1, R2);
    connect_direct(&mut net, R2, B);
    let (ra, b_id) = route_via(&mut net, A, &[R1, R2], B);
    // B opens toward A this time, with a direct candidate that cannot
    // work first and the route added later, as the agent does.
    let peer = net.nodes[A].ep.node_id();
    let a_addr = net.nodes[A].addr;
    let now = net.now;
    let sb = net.nodes[B]
        .ep
        .connect(now, Target::Node(peer), &[a_addr])
        .unwrap();
    net.flush(B);
    net.run_for(Duration::from_secs(2));
    let now = net.now;
    net.nodes[B]
        .ep
        .add_candidates(now, sb, &[Path::Route(b_id)]);
    net.flush(B);
    assert!(
        net.run_until(Duration::from_secs(30), |n| opened_with(n, A, B).is_some()
            && opened_with(n, B, A).is_some())
    );
    let sa = opened_with(&net, A, B).unwrap();
    assert_eq!(remote(&net, A, sa), Path::Route(ra));
    let mut t = Transfer::new(&mut net, sa);
    t.run(&mut net, 2000, Duration::from_secs(120));
    t.check();
    assert!(transit_bytes(&net, R1) > 2_000_000 && transit_bytes(&net, R2) > 2_000_000);
}

#[test]
fn a_modified_copy_sent_ahead_of_each_datagram_does_not_stop_a_relayed_transfer() {
    // An attacker on the path A -> R1 that can watch and inject but not
    // drop: ahead of every datagram it sends a copy with one byte of the
    // end-to-end body changed. The hop tag covers the whole datagram, so R1
    // refuses the copies without spending their sequence numbers and
    // forwards the genuine datagrams (issue 12 item 5). Both kinds of hop
    // tag.
    for mac in [HopMac::AesGcm, HopMac::Aegis128L] {
        let mut net = lab(0.0);
        block_direct(&mut net);
        connect_direct(&mut net, A, R1);
        connect_direct(&mut net, B, R1);
        let (ra, _rb) = route_via_macs(&mut net, A, &[R1], B, &[mac]);
        let (sa, _sb) = open_over(&mut net, Path::Route(ra));
        let (a, r1) = (net.nodes[A].addr, net.nodes[R1].addr);
        let forged = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let count = forged.clone();
        net.injector = Some(Box::new(move |from, to, data| {
            if from != a || to != r1 || data.len() < 200 {
                return None;
            }
            count.set(count.get() + 1);
            let mut copy = data.to_vec();
            let mid = copy.len() / 2;
            copy[mid] ^= 0x01;
            Some(copy)
        }));
        let mut t = Transfer::new(&mut net, sa);
        t.run(&mut net, 2000, Duration::from_secs(120));
        t.check();
        assert!(forged.get() >= 2000, "{mac:?}: {}", forged.get());
        let refused = net.nodes[R1].ep.stats().drops[&DropReason::Route];
        assert!(
            refused >= forged.get(),
            "{mac:?}: {refused} of {}",
            forged.get()
        );
        assert!(t.stalls.is_empty(), "{mac:?}: {:?}", t.stalls);
    }
}

/// On a route every hop tags the route header and the whole end-to-end
/// datagram with AES-256-GCM, so the ends pad their plain text (RFC 7016
/// 2.2.4, `session::align`) until what the hop tags cover is whole 16-byte
/// blocks: every route datagram is then a multiple of 16 bytes with its
/// tag, on both hops, for the fragments of a large frame and for a small
/// one alike.
#[test]
fn relayed_datagrams_are_whole_aes_blocks_for_the_hop_tags() {
    let mut net = lab(0.0);
    let (_ra, _rb, sa, _sb) = relayed_via_r1(&mut net);
    route_datagrams_are_whole_blocks(&mut net, sa);
}

/// As above for a session that opened on the direct path (whole blocks of
/// its own plain text) and then moved onto a route: the rounding follows
/// DESTADDR.
#[test]
fn a_session_moved_onto_a_route_pads_for_the_hop_tags() {
    let mut net = lab(0.0);
    connect_direct(&mut net, A, R1);
    connect_direct(&mut net, B, R1);
    let (sa, sb) = connect_direct(&mut net, A, B);
    let (ra, rb) = route(&mut net, A, R1, B);
    let now = net.now;
    // Both ends move, as two agents whose direct path broke do.
    assert!(net.nodes[A].ep.migrate(now, sa, Path::Route(ra)));
    assert!(net.nodes[B].ep.migrate(now, sb, Path::Route(rb)));
    block_direct(&mut net);
    route_datagrams_are_whole_blocks(&mut net, sa);
}

/// A frame queued at once after the move, before anything is known of the
/// route's path MTU: the fragment size the move computed already rounds
/// for the hop tags (the session assigns DESTADDR, then sizes fragments
/// for it). The ends send at most the base size, so no PMTU probe (whose
/// size is exact) crosses the hops and every datagram there is checked.
#[test]
fn a_frame_queued_right_after_a_move_onto_a_route_is_cut_for_the_hop_tags() {
    // The size every path starts at before a PMTU probe succeeds
    // (`pmtu::BASE_SIZE`, RFC 7016 3.5.4.3).
    const BASE_SIZE: usize = 1200;
    let mut net = lab_ends(0.0, |c| c.session.max_datagram = BASE_SIZE);
    connect_direct(&mut net, A, R1);
    connect_direct(&mut net, B, R1);
    let (sa, sb) = connect_direct(&mut net, A, B);
    let (ra, rb) = route(&mut net, A, R1, B);
    // The flow is open and acknowledged (its fragments no longer leave
    // room for its metadata) before the move.
    let frames = net.nodes[A].ep.open_flow(sa, b"frames", None).unwrap();
    let got = deliver_frame(&mut net, (A, sa, frames), 1, 70);
    assert_eq!(got, vec![pattern(1, 70)]);
    net.run_for(Duration::from_millis(200));
    let seen = log_hop_sizes(&mut net);
    let now = net.now;
    assert!(net.nodes[A].ep.migrate(now, sa, Path::Route(ra)));
    assert!(net.nodes[B].ep.migrate(now, sb, Path::Route(rb)));
    let len = 10_000;
    let got = deliver_frame(&mut net, (A, sa, frames), 2, len);
    assert_eq!(got, vec![pattern(2, len)]);
    let carried: Vec<usize> = seen
        .borrow()
        .iter()
        .copied()
        .filter(|&l| l >= 100)
        .collect();
    // Nine datagrams on each hop, whole blocks; the full ones are the
    // largest whole-block route datagram around at most the base size end
    // to end (fragments cut for the direct path's rounding are 8 bytes
    // longer and leave no room to pad for the hop tags).
    let most = BASE_SIZE + ROUTE_OVERHEAD;
    // At least one datagram per hop for each 1,136 bytes of frame: the
    // base size less more than the session's and chunk's headers.
    assert!(
        carried.len() >= 2 * len.div_ceil(BASE_SIZE - 64),
        "{carried:?}"
    );
    assert!(
        carried.iter().all(|&l| l <= most && l % 16 == 0),
        "{carried:?}"
    );
    assert!(carried.contains(&(most / 16 * 16)), "{carried:?}");
}

/// Sends message `n` (`len` bytes of [`pattern`]) on the NoRetransmit flow
/// `at` and runs until B receives a message (within 5 s); returns what B
/// received.
fn deliver_frame(
    net: &mut Net,
    at: (usize, SessionId, FlowId),
    n: u64,
    len: usize,
) -> Vec<Vec<u8>> {
    send_as(net, at, n, len, Reliability::NoRetransmit);
    let mut got = Vec::new();
    assert!(net.run_until(Duration::from_secs(5), |net| {
        messages(net, B, &mut got);
        !got.is_empty()
    }));
    got
}

/// Blocks the direct path between A and B and logs the size of every
/// datagram on the hops A -> R1 and R1 -> B.
fn log_hop_sizes(net: &mut Net) -> std::rc::Rc<std::cell::RefCell<Vec<usize>>> {
    let (a, r1, b) = (net.nodes[A].addr, net.nodes[R1].addr, net.nodes[B].addr);
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = seen.clone();
    net.drop_filter = Some(Box::new(move |from, to, data| {
        if (from == a && to == b) || (from == b && to == a) {
            return true;
        }
        if (from == a && to == r1) || (from == r1 && to == b) {
            log.borrow_mut().push(data.len());
        }
        false
    }));
    seen
}

/// Frames A sends on `sa`, a session over a route through R1 with no
/// direct path, cross both hops as datagrams of whole 16-byte blocks.
fn route_datagrams_are_whole_blocks(net: &mut Net, sa: SessionId) {
    let frames = net.nodes[A].ep.open_flow(sa, b"frames", None).unwrap();
    // PMTU discovery done (no probes of other sizes in the log): the
    // largest end-to-end datagram a route over 1500-byte links carries.
    assert!(net.run_until(Duration::from_secs(30), |n| {
        n.nodes[A].ep.session_info(sa).unwrap().pmtu == 1452 - ROUTE_OVERHEAD
    }));
    let seen = log_hop_sizes(net);
    // Ten fragments of 1,000 bytes take as many datagrams cut at the
    // rounded size as at the full one (else the full size is used).
    for (n, len) in [(1u64, 10_000usize), (2, 70)] {
        seen.borrow_mut().clear();
        let got = deliver_frame(net, (A, sa, frames), n, len);
        assert_eq!(got, vec![pattern(n, len)]);
        let sizes = seen.borrow().clone();
        // Both hops carry the frame's datagrams (and hop-session traffic,
        // whose datagrams are smaller than the smallest frame's here).
        let carried: Vec<usize> = sizes.into_iter().filter(|&l| l >= 100).collect();
        let want = if len > 1000 {
            2 * len.div_ceil(1424)
        } else {
            2
        };
        assert!(carried.len() >= want, "{len}: {carried:?}");
        assert!(carried.iter().all(|l| l % 16 == 0), "{len}: {carried:?}");
    }
}

#[test]
fn a_relayed_session_rekeys_under_a_transfer() {
    let mut net = lab_rekeying(
        0.02,
        RekeyConfig {
            interval: Duration::from_millis(300),
            ..RekeyConfig::default()
        },
    );
    block_direct(&mut net);
    connect_direct(&mut net, A, R1);
    connect_direct(&mut net, B, R1);
    let (ra, _rb) = route(&mut net, A, R1, B);
    let (sa, sb) = open_over(&mut net, Path::Route(ra));
    let mut t = Transfer::new(&mut net, sa);
    t.run(&mut net, 4096, Duration::from_secs(300));
    t.check();
    let (ia, ib) = (
        net.nodes[A].ep.session_info(sa).unwrap(),
        net.nodes[B].ep.session_info(sb).unwrap(),
    );
    assert!(
        ia.key_epoch >= 5,
        "{} rekeys in {:?}",
        ia.key_epoch,
        net.elapsed()
    );
    assert!(ia.key_epoch.abs_diff(ib.key_epoch) <= 1);
    assert_eq!(ia.path, Path::Route(ra));
}
