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
