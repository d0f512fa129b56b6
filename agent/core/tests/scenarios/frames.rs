//! Frames bound to their sender: a member whose TAP emits frames with
//! another member's MAC (unicast and broadcast) and random source MACs at
//! a high rate gets none of them past its first hop; every member counts
//! them as `forged_mac` on its session with the attacker; nobody learns a
//! forged MAC (the victim's traffic keeps reaching the victim, and only
//! the victim), and the victim's broadcasts keep arriving everywhere once;
//! with and without a network CA.
//! (Forged flood and routed headers cannot come out of a TAP: the
//! overlay's `datapath::attacks` tests craft them.)

use std::time::Duration;

use ringlan_node::sim::frames::mac;
use ringlan_node::sim::{HostId, Place};
use ringlan_tunnel::Rng;

use crate::world::World;

fn eth(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    // An ARP request claiming 10.77.0.1 (the victim's, say).
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[10, 77, 0, 1, 0, 0, 0, 0, 0, 0, 10, 77, 0, 9]);
    f
}

#[test]
fn a_member_cannot_send_with_another_members_mac() {
    forged_macs_stop_at_the_first_hop(World::new(0x5eed_00f1));
}

/// With a network CA the members' certificates decide (the auto MAC of
/// each key), set on the overlay at admission.
#[test]
fn a_certified_member_cannot_send_with_another_members_mac() {
    forged_macs_stop_at_the_first_hop(World::with_ca(0x5eed_00f2));
}

fn forged_macs_stop_at_the_first_hop(mut w: World) {
    let intro = w.introducer("intro");
    let nodes: Vec<HostId> = (0..5)
        .map(|i| w.node(&format!("n{i}"), Place::Internet, false))
        .collect();
    let (victim, attacker, peer) = (nodes[0], nodes[1], nodes[2]);
    let mut all = vec![intro];
    all.extend(&nodes);
    w.run_until(Duration::from_secs(120), "ring formed", |w| {
        w.ring_errors(&all) == 0
    });
    // Everyone's broadcasts teach the others their MACs.
    for &h in &all {
        w.send_frames(h, None, 1, Duration::from_millis(5));
    }
    let v = w.settle_frames(Duration::from_secs(2));
    assert!(v.is_clean(), "{v:?}");

    // The attacks, from the attacker's TAP.
    let mut rng = Rng::from_seed([7; 32]);
    let forged = [
        eth([0xff; 6], mac(victim)),
        eth(mac(peer), mac(victim)),
        eth(mac(victim), mac(victim)),
    ];
    for _ in 0..20 {
        for f in &forged {
            w.sim.with(attacker, |n, now| n.handle_frame(now, f));
        }
    }
    for _ in 0..2000 {
        let mut m = [0u8; 6];
        rng.fill(&mut m);
        m[0] = (m[0] & 0xfe) | 0x02;
        let f = eth([0xff; 6], m);
        w.sim.with(attacker, |n, now| n.handle_frame(now, &f));
    }
    w.run_for(Duration::from_secs(1));

    // The victim's traffic still goes to the victim, once; its broadcasts
    // reach everyone once.
    w.assert_delivers("after the forgeries", |w| {
        w.send_frames(peer, Some(victim), 5, Duration::from_millis(5));
        w.send_frames(victim, Some(peer), 5, Duration::from_millis(5));
        w.send_frames(victim, None, 3, Duration::from_millis(5));
    });
    let v = w.settle_frames(Duration::from_secs(2));
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(w.ledger.delivered(peer, victim), 5);
    assert_eq!(w.ledger.delivered(victim, peer), 5);

    // Every member the attacker reached counted its frames as forged.
    let mut counted = 0;
    for &h in &all {
        if h == attacker {
            continue;
        }
        if let Some(s) = w.session(h, attacker) {
            let n = s.drops.get("forged_mac").copied().unwrap_or(0);
            assert!(n > 0, "{}: {:?}", w.name(h), s.drops);
            counted += n;
        }
    }
    // (Of the 2,060 frames, those beyond the attacker's send queues never
    // left it.)
    assert!(counted >= 1000, "{counted}");
}
