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

/// An introducer and two members on the internet, with a direct session
/// between the two that has carried frames both ways (each knows the
/// other's MAC).
fn linked_pair(seed: u64) -> (World, HostId, HostId) {
    let mut w = World::new(seed);
    let intro = w.introducer("intro");
    let a = w.node("a", Place::Internet, false);
    let b = w.node("b", Place::Internet, false);
    w.run_until(Duration::from_secs(120), "ring formed", |w| {
        w.ring_errors(&[intro, a, b]) == 0
    });
    w.assert_delivers("warm-up", |w| {
        w.send_frames(a, Some(b), 5, Duration::from_millis(20));
        w.send_frames(b, Some(a), 5, Duration::from_millis(20));
    });
    w.run_for(Duration::from_secs(1));
    assert!(w.session(a, b).is_some(), "a and b have a session");
    (w, a, b)
}

/// Frames are never retransmitted, so a lost one must not hold back the
/// frames behind it: the receiver hands each frame to its TAP as it
/// arrives (arrival-order delivery on the frame flow) instead of waiting,
/// in sequence order, until the sender gives the lost one up (three
/// negative acknowledgements or a retransmission timeout, 250 ms or
/// more). Before, an idle ping behind a lost one took 200 ms.
#[test]
fn a_lost_frame_does_not_hold_back_the_next() {
    use std::cell::Cell;
    use std::rc::Rc;

    use ringlan_node::sim::frames::{frame, parse};

    let (mut w, a, b) = linked_pair(0x5eed_00f3);

    // The underlay loses the next large datagram from a to b: frame 1.
    let (from, to) = (w.sim.addr(a), w.sim.addr(b));
    let dropped = Rc::new(Cell::new(0u32));
    let seen = dropped.clone();
    w.sim.set_drop_filter(Some(Box::new(move |f, t, d| {
        let hit = seen.get() == 0 && f == from && t == to && d.len() >= 1300;
        if hit {
            seen.set(1);
        }
        hit
    })));
    let (f1, f2) = (
        frame(a, Some(b), 1_000_001, 1300),
        frame(a, Some(b), 1_000_002, 1300),
    );
    w.sim.with(a, |n, now| n.handle_frame(now, &f1));
    // Past a's access link (10 ms) to the internet, where the loss is.
    w.sim.run_for(Duration::from_millis(15));
    assert_eq!(dropped.get(), 1, "the datagram with frame 1 was dropped");
    w.sim.set_drop_filter(None);
    w.sim.with(a, |n, now| n.handle_frame(now, &f2));
    // A one-way trip (two 10 ms access links) and some: well before the
    // sender could give frame 1 up.
    w.sim.run_for(Duration::from_millis(60));
    let got: Vec<u32> = w
        .sim
        .take_frames(b)
        .iter()
        .filter_map(|f| parse(f))
        .filter(|&(s, d, _)| s == a && d == Some(b))
        .map(|(_, _, seq)| seq)
        .collect();
    assert_eq!(got, vec![1_000_002], "frame 2 at once, frame 1 lost");
}

/// A ping does not wait behind bulk: small frames that carry no TCP data
/// go on the session's second frame flow (`sparse.rs`), served
/// round-robin with the bulk one, so a ping queued behind megabytes of
/// frames arrives within a round trip or two, while most of the backlog
/// is still on its way.
#[test]
fn a_ping_overtakes_a_bulk_backlog() {
    use ringlan_node::sim::frames::{frame, mac, parse};

    let (mut w, a, b) = linked_pair(0x5eed_00f4);

    // 2,000 frames of about 1,400 bytes (2.8 MB) at once, then a ping.
    const BULK: u32 = 2000;
    for i in 0..BULK {
        let f = frame(a, Some(b), 2_000_000 + i, 1360);
        w.sim.with(a, |n, now| n.handle_frame(now, &f));
    }
    let mut ping = mac(b).to_vec();
    ping.extend_from_slice(&mac(a));
    ping.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 84, 0, 1, 0x40, 0, 64, 1, 0, 0]);
    ping.extend_from_slice(&[10, 77, 0, 1, 10, 77, 0, 2, 8, 0, 0, 0, 0, 7, 0, 1]);
    ping.extend(std::iter::repeat_n(0x5a, 56));
    assert!(ringlan_node::sparse::is_sparse(&ping));
    w.sim.with(a, |n, now| n.handle_frame(now, &ping));

    let (mut bulk, mut bulk_before_ping, mut ping_at) = (0u32, 0u32, None);
    let start = w.sim.now();
    while w.sim.now() - start < Duration::from_secs(20) && bulk < BULK {
        w.sim.run_for(Duration::from_millis(5));
        for f in w.sim.take_frames(b) {
            if f == ping {
                ping_at = Some(w.sim.now() - start);
                bulk_before_ping = bulk;
            } else if parse(&f).is_some_and(|(s, _, seq)| s == a && seq >= 2_000_000) {
                bulk += 1;
            }
        }
    }
    let ping_at = ping_at.expect("the ping arrived");
    let backlog_done = w.sim.now() - start;
    assert_eq!(bulk, BULK, "the backlog arrived too");
    assert!(
        bulk_before_ping < BULK / 4 && ping_at * 4 < backlog_done,
        "the ping came after {bulk_before_ping} bulk frames, at {ping_at:?}; \
         the backlog took {backlog_done:?}"
    );
}

/// A TCP super-frame read from the TAP leaves in the read buffer itself
/// (`Node::handle_tap_read` hands it over, `Endpoint::send_owned`): the
/// caller's buffer is replaced by another of the same length for the next
/// read, and every frame arrives whole though the buffers they were read
/// into go round and are read into again.
#[test]
fn super_frames_read_from_the_tap_are_handed_over_and_arrive_whole() {
    use ringlan_node::sim::frames::{frame, parse};
    use ringlan_node::vnet::{VnetHdr, VNET_HDR_LEN};
    use ringlan_node::{TAP_READ_OFFSET, TAP_READ_ROOM};

    let (mut w, a, b) = linked_pair(0x5eed_00f5);
    const N: u32 = 40;
    let vnet = VnetHdr {
        flags: 0,
        gso_type: VnetHdr::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1400,
        csum_start: 0,
        csum_offset: 0,
    };
    let mut hdr = [0u8; VNET_HDR_LEN];
    vnet.emit(&mut hdr);
    let mut buf = vec![0u8; TAP_READ_ROOM];
    let (mut handed_over, mut buffers) = (0, std::collections::HashSet::new());
    for i in 0..N {
        let f = frame(a, Some(b), 3_000_000 + i, 20_000 + 1000 * i as u16);
        let at = TAP_READ_OFFSET;
        buf[at..at + VNET_HDR_LEN].copy_from_slice(&hdr);
        buf[at + VNET_HDR_LEN..at + VNET_HDR_LEN + f.len()].copy_from_slice(&f);
        let before = buf.as_ptr();
        buffers.insert(before as usize);
        w.sim.with(a, |n, now| {
            n.handle_tap_read(now, &mut buf, VNET_HDR_LEN + f.len())
        });
        assert_eq!(buf.len(), TAP_READ_ROOM);
        handed_over += u32::from(buf.as_ptr() != before);
        w.sim.run_for(Duration::from_millis(50));
    }
    assert_eq!(handed_over, N, "every super-frame left without a copy");
    assert!(buffers.len() < 8, "{} buffers went round", buffers.len());
    w.sim.run_for(Duration::from_secs(1));
    let mut got: Vec<u32> = w
        .sim
        .take_frames(b)
        .iter()
        .filter_map(|f| parse(f))
        .filter(|&(s, d, seq)| s == a && d == Some(b) && seq >= 3_000_000)
        .map(|(_, _, seq)| seq - 3_000_000)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "each frame once, intact");
}
