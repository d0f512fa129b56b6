//! Helpers shared by the overlay's unit tests, and the tests that cross
//! every concern (garbage input, leaving).

use super::*;
use crate::sim::{Sim, SimConfig};
use crate::switch::{DropReason, Forward, Mac};
use crate::wire::{FrameHeader, Lookup, LookupReply, RoutedHeader};

pub(super) fn rng(seed: u8) -> Rng {
    Rng::from_seed([seed; 32])
}

pub(super) fn node(now: Instant) -> Overlay {
    let mut cfg = Config::new(NodeId(100), "a", Role::Node, Some(Mac([2, 0, 0, 0, 0, 1])));
    cfg.introducers = vec!["198.51.100.7:4910".parse().unwrap()];
    Overlay::new(now, cfg, rng(9)).unwrap()
}

/// An encoded `Hello` from ring node `id` (name `n<id>`, a TAP whose MAC
/// ends in `id`) announcing `addrs`.
pub(super) fn tap_hello(id: u128, addrs: &[SocketAddr], relays: bool) -> Vec<u8> {
    Message::Hello(Hello {
        node_id: NodeId(id),
        name: format!("n{id}"),
        role: Role::Node,
        addrs: addrs.to_vec(),
        mac: Some(Mac([2, 0, 0, 0, 0, id as u8])),
        relays,
        bridge: false,
        symmetric_nat: false,
        aegis_hops: false,
    })
    .encode()
    .unwrap()
}

pub(super) fn drain(o: &mut Overlay) -> Vec<Action> {
    std::iter::from_fn(|| o.poll_action()).collect()
}

pub(super) fn decode_sends(actions: &[Action]) -> Vec<(NodeId, Message)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendControl { to, bytes } => Some((*to, Message::decode(bytes).unwrap())),
            _ => None,
        })
        .collect()
}

#[test]
fn garbage_control_is_counted_not_fatal() {
    let t0 = Instant::now();
    let mut o = node(t0);
    o.peer_up(t0, NodeId(7), "198.51.100.7:4910".parse().ok(), true);
    drain(&mut o);
    o.handle_control(t0, NodeId(7), &[1, 0x99, 1, 2, 3]);
    o.handle_control(t0, NodeId(7), &[]);
    assert_eq!(o.stats().bad_control, 2);
    assert!(std::iter::from_fn(|| o.poll_event()).any(|e| matches!(e, Event::BadControl { .. })));
    // A Hello claiming another identity is refused.
    let h = Message::Hello(Hello {
        node_id: NodeId(8),
        name: "x".into(),
        role: Role::Node,
        addrs: vec![],
        mac: None,
        relays: false,
        bridge: false,
        symmetric_nat: false,
        aegis_hops: false,
    });
    o.handle_control(t0, NodeId(7), &h.encode().unwrap());
    assert!(o.member(NodeId(8)).is_none());
    // A lookup whose path does not end with the sender, or a reply not
    // addressed to us, is refused.
    let bad = Message::Lookup(Lookup {
        nonce: 1,
        target: NodeId(5),
        path: vec![NodeId(9)],
    });
    o.handle_control(t0, NodeId(7), &bad.encode().unwrap());
    let bad = Message::LookupReply(LookupReply {
        nonce: 1,
        target: NodeId(5),
        path: vec![NodeId(9)],
        members: vec![],
    });
    o.handle_control(t0, NodeId(7), &bad.encode().unwrap());
    assert_eq!(o.stats().bad_control, 5);
    // Frames: runts, bad headers and frames from strangers are dropped.
    let mut out = Vec::new();
    assert_eq!(
        o.frame_from_peer(t0, NodeId(7), &[0, 1, 2], &mut out),
        Err(DropReason::Runt)
    );
    assert_eq!(
        o.frame_from_peer(t0, NodeId(7), &[9; 30], &mut out),
        Err(DropReason::BadHeader)
    );
    assert_eq!(
        o.frame_from_peer(t0, NodeId(55), &[0; 30], &mut out),
        Err(DropReason::NoTap)
    );
    // A routed frame, which a node without an identity cannot check
    // (routing without a route: `datapath::tests`).
    let mut msg = [0u8; 160];
    let h = FrameHeader::Routed(RoutedHeader {
        origin: NodeId(7),
        destination: NodeId(1234),
        hop_limit: 5,
        auth: crate::wire::OriginAuth {
            key: [1; 32],
            sig: [2; 64],
        },
    });
    h.encode(&mut msg).unwrap();
    assert_eq!(
        o.frame_from_peer(t0, NodeId(7), &msg, &mut out),
        Err(DropReason::NoIdentity)
    );
    assert_eq!(
        o.frame_from_tap(t0, &[1, 2], &mut out),
        Forward::Drop(DropReason::Runt)
    );
}

#[test]
fn polite_leave_repairs_the_ring_at_once() {
    let mut sim = Sim::new(SimConfig::new(40, 5));
    sim.join_all(Duration::from_secs(60));
    assert_eq!(sim.ring_errors(), 0);
    let leaver = sim.live()[10];
    let id = sim.id(leaver);
    sim.leave(leaver);
    // Leaving is seen at once (no failure detection delay).
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.ring_errors(), 0);
    // Ring gossip (at the next refresh) clears it from the nodes that
    // knew it second-hand.
    sim.run_for(Duration::from_secs(10));
    for i in sim.live() {
        assert!(!sim.node(i).unwrap().is_linked(id));
        assert!(sim.node(i).unwrap().member(id).is_none());
    }
    assert_eq!(sim.all_reach_all(), 0);
    let f = sim.broadcast(sim.live()[0]);
    assert_eq!((f.reached, f.duplicates), (f.expected, 0));
}

#[test]
fn without_an_introducer_a_cached_member_routes_the_join() {
    let t0 = Instant::now();
    let mut o = node(t0);
    // The introducer open goes out and times out (it is down).
    let first = drain(&mut o);
    assert!(first
        .iter()
        .any(|a| matches!(a, Action::OpenSession { node: None, .. })));
    let t1 = t0 + o.config().open_timeout;
    o.handle_timeout(t1);
    drain(&mut o);
    assert!(!o.is_joined());
    assert_eq!(o.introducers_linked(), 0);
    // The peer cache: ourselves and an empty entry are skipped.
    let cached: SocketAddr = "192.0.2.50:4910".parse().unwrap();
    o.bootstrap(&[
        (NodeId(100), vec![cached]),
        (NodeId(51), vec![]),
        (NodeId(50), vec![cached]),
    ]);
    let opens = drain(&mut o);
    assert_eq!(
        opens,
        vec![Action::OpenSession {
            node: Some(NodeId(50)),
            addrs: vec![cached],
        }]
    );
    // The member answers: the join lookup for our own id goes to it.
    o.peer_up(t1, NodeId(50), Some(cached), false);
    let sends = decode_sends(&drain(&mut o));
    let nonce = sends
        .iter()
        .find_map(|(to, m)| match m {
            Message::Lookup(l) if *to == NodeId(50) && l.target == NodeId(100) => Some(l.nonce),
            _ => None,
        })
        .expect("join lookup through the cached member");
    // Its answer joins us to the ring.
    let reply = Message::LookupReply(LookupReply {
        nonce,
        target: NodeId(100),
        path: vec![NodeId(100)],
        members: vec![],
    });
    o.handle_control(t1, NodeId(50), &reply.encode().unwrap());
    assert!(o.is_joined());
    // Linked now: a second bootstrap opens nothing.
    o.bootstrap(&[(NodeId(50), vec![cached])]);
    assert!(drain(&mut o)
        .iter()
        .all(|a| !matches!(a, Action::OpenSession { .. })));
}

#[test]
fn introducers_can_be_replaced_while_running() {
    let t0 = Instant::now();
    let mut o = node(t0);
    drain(&mut o);
    let old: SocketAddr = "198.51.100.7:4910".parse().unwrap();
    let new: SocketAddr = "198.51.100.8:4910".parse().unwrap();
    // Unchanged: nothing new is opened.
    o.set_introducers(t0, &[old]);
    assert!(drain(&mut o).is_empty());
    // A new address is opened at once; the old one is no longer retried.
    o.set_introducers(t0, &[new]);
    assert_eq!(
        drain(&mut o),
        vec![Action::OpenSession {
            node: None,
            addrs: vec![new],
        }]
    );
    assert_eq!(o.config().introducers, vec![new]);
    o.peer_up(t0, NodeId(7), Some(new), true);
    assert_eq!(o.introducers_linked(), 1);
    let t1 = t0 + o.config().retry_max * 4;
    o.handle_timeout(t1);
    assert!(drain(&mut o).iter().all(|a| !matches!(
        a,
        Action::OpenSession { node: None, addrs } if addrs.contains(&old)
    )));
}

/// Whether this node's NAT maps endpoint-dependently goes into its `Hello`,
/// and every link gets a fresh one when that changes (a punching member
/// leaves a symmetric one alone). A member's own `Hello` says it of
/// itself; a later `Hello` saying otherwise is believed too.
/// An encoded `Hello` from node 7 (no TAP, no addresses) saying what
/// it says of its NAT and of AEGIS-128L hop tags.
fn n7_hello(symmetric_nat: bool, aegis_hops: bool) -> Vec<u8> {
    Message::Hello(Hello {
        node_id: NodeId(7),
        name: "n7".into(),
        role: Role::Node,
        addrs: vec![],
        mac: None,
        relays: false,
        bridge: false,
        symmetric_nat,
        aegis_hops,
    })
    .encode()
    .unwrap()
}

#[test]
fn the_nat_mapping_is_said_in_hello_and_said_again_when_it_changes() {
    let t0 = Instant::now();
    let mut o = node(t0);
    o.peer_up(t0, NodeId(7), "198.51.100.7:4910".parse().ok(), true);
    let hellos = |o: &mut Overlay| -> Vec<bool> {
        decode_sends(&drain(o))
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::Hello(h) if to == NodeId(7) => Some(h.symmetric_nat),
                _ => None,
            })
            .collect()
    };
    assert_eq!(hellos(&mut o), vec![false]);
    o.set_symmetric_nat(true);
    assert_eq!(hellos(&mut o), vec![true]);
    // Unchanged: nothing sent.
    o.set_symmetric_nat(true);
    assert_eq!(hellos(&mut o), Vec::<bool>::new());
    o.set_symmetric_nat(false);
    assert_eq!(hellos(&mut o), vec![false]);

    let hello = |symmetric_nat| n7_hello(symmetric_nat, false);
    assert!(!o.says_symmetric_nat(NodeId(7)));
    o.handle_control(t0, NodeId(7), &hello(true));
    assert!(o.says_symmetric_nat(NodeId(7)));
    o.handle_control(t0, NodeId(7), &hello(false));
    assert!(!o.says_symmetric_nat(NodeId(7)));
    // Not linked: nothing is known.
    assert!(!o.says_symmetric_nat(NodeId(8)));
}

#[test]
fn aegis_hop_tags_are_said_in_hello_and_read_from_the_peers() {
    let t0 = Instant::now();
    for ours in [false, true] {
        let mut cfg = Config::new(NodeId(100), "a", Role::Node, Some(Mac([2, 0, 0, 0, 0, 1])));
        cfg.introducers = vec!["198.51.100.7:4910".parse().unwrap()];
        cfg.aegis_hops = ours;
        let mut o = Overlay::new(t0, cfg, rng(9)).unwrap();
        o.peer_up(t0, NodeId(7), "198.51.100.7:4910".parse().ok(), true);
        let said: Vec<bool> = decode_sends(&drain(&mut o))
            .into_iter()
            .filter_map(|(to, m)| match m {
                Message::Hello(h) if to == NodeId(7) => Some(h.aegis_hops),
                _ => None,
            })
            .collect();
        assert_eq!(said, vec![ours]);
        let hello = |aegis_hops| n7_hello(false, aegis_hops);
        assert!(!o.says_aegis_hops(NodeId(7)));
        o.handle_control(t0, NodeId(7), &hello(true));
        assert!(o.says_aegis_hops(NodeId(7)));
        o.handle_control(t0, NodeId(7), &hello(false));
        assert!(!o.says_aegis_hops(NodeId(7)));
        assert!(!o.says_aegis_hops(NodeId(8)));
    }
}
