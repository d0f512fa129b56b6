//! Join and ring repair: an introducer and 14 public nodes form the
//! Symphony ring (every member's nearest successor and predecessor linked),
//! a broadcast from each reaches every other member once, every pair
//! exchanges frames; 4 nodes die, the ring re-forms among the
//! rest and every remaining pair exchanges frames again; the dead come
//! back and find their places.

use std::time::Duration;

use ringlan_node::sim::{HostId, Place};

use crate::world::World;

const NODES: usize = 14;
const KILLED: [usize; 4] = [2, 5, 9, 12];

#[test]
fn the_ring_forms_and_repairs_itself_after_kills() {
    let mut w = World::new(0x5eed_0016);
    // Short keepalives, as the netns repair test: dead peers are noticed
    // within three of them.
    w.keepalive = Duration::from_secs(2);
    let intro = w.introducer("intro");
    let nodes: Vec<HostId> = (0..NODES)
        .map(|i| w.node(&format!("n{i}"), Place::Internet, false))
        .collect();
    let mut all = vec![intro];
    all.extend(&nodes);

    let t = w.run_until(Duration::from_secs(120), "ring formed", |w| {
        w.ring_errors(&all) == 0
    });
    eprintln!("ring of {} formed after {t:?}", all.len());
    // Everyone learns everyone's MAC (as ARP would), then every pair
    // talks.
    for &h in &all {
        w.send_frames(h, None, 1, Duration::from_millis(5));
    }
    // The bounded flood brings every broadcast to every other member once.
    let v = w.settle_frames(Duration::from_secs(2));
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(v.delivered as usize, all.len() * (all.len() - 1), "{v:?}");
    w.exchange(&all, 2);
    let v = w.settle_frames(Duration::from_secs(10));
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(v.missing, 0, "{v:?}");
    for &a in &all {
        for &b in &all {
            if a != b {
                assert_eq!(
                    w.ledger.delivered(a, b),
                    2,
                    "{} -> {}",
                    w.name(a),
                    w.name(b)
                );
            }
        }
    }

    let killed: Vec<HostId> = KILLED.iter().map(|&i| nodes[i]).collect();
    for &h in &killed {
        w.kill(h);
    }
    let live: Vec<HostId> = all
        .iter()
        .copied()
        .filter(|h| !killed.contains(h))
        .collect();
    // Repaired: the ring re-formed among the rest, and every live node
    // noticed the dead (otherwise a restarted node is reached over its
    // peers' stale sessions to its previous run, whose packets it cannot
    // read, until those die of missed keepalives).
    let t = w.run_until(Duration::from_secs(60), "ring repaired", |w| {
        w.ring_errors(&live) == 0
            && live
                .iter()
                .all(|&a| killed.iter().all(|&k| w.session(a, k).is_none()))
    });
    eprintln!("ring repaired {t:?} after {} kills", killed.len());
    let before = w.ledger.sent();
    w.exchange(&live, 2);
    let v = w.settle_frames(Duration::from_secs(10));
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(v.missing, 0, "after the kills: {v:?}");
    assert_eq!(w.ledger.sent() - before, live.len() * (live.len() - 1) * 2);

    for &h in &killed {
        w.restart(h);
    }
    w.run_until(Duration::from_secs(120), "the dead came back", |w| {
        w.ring_errors(&all) == 0
    });
    w.exchange(&all, 1);
    let v = w.settle_frames(Duration::from_secs(10));
    assert!(v.is_clean() && v.missing == 0, "{v:?}");
}
