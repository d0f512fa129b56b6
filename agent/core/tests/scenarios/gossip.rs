//! A member gossiping fake member records that name a victim's address
//! (not a member): honest nodes send the victim no more than the per-IP
//! budget on unverified destinations (`ringlan_node::reach`,
//! docs/limits.md "Unverified destinations"), and addresses relayed from
//! another member's gossip are never punched.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use ringlan_node::reach::{DEFAULT_BUDGET, DROP_REASON};
use ringlan_node::sim::{HostId, Place};
use ringlan_overlay::wire::{AddrOrigin, Member, Message, Role, TaggedAddr};
use ringlan_tunnel::NodeId;

use crate::world::World;

/// How long the liar gossips.
const ATTACK: Duration = Duration::from_secs(60);

/// Every second, the liar sends each node it has a session with a `Ring`
/// of 32 fresh fake members next to the receiver on the ring (so that the
/// receiver wants them as ring links at once), each "observed" at a port
/// of the victim's IP. Datagrams towards the victim are counted per
/// sender as they cross the internet.
#[test]
fn fake_gossip_naming_a_victim_stays_within_the_per_ip_budget() {
    let mut w = World::new(61);
    let i1 = w.introducer("intro1");
    let i2 = w.introducer("intro2");
    let honest: Vec<HostId> = (0..4)
        .map(|k| w.node(&format!("h{k}"), Place::Internet, false))
        .collect();
    let liar = w.node("liar", Place::Internet, false);
    w.run_for(Duration::from_secs(30));

    let victim: IpAddr = "192.0.2.77".parse().unwrap();
    let sent: Rc<RefCell<BTreeMap<IpAddr, u64>>> = Rc::default();
    let counter = sent.clone();
    w.sim.set_drop_filter(Some(Box::new(move |from, to, _| {
        if to.ip() == victim {
            *counter.borrow_mut().entry(from.ip()).or_default() += 1;
            return true;
        }
        false
    })));
    let mut receivers: Vec<HostId> = honest.clone();
    receivers.extend([i1, i2]);
    let ids: Vec<NodeId> = receivers.iter().map(|h| w.id(*h)).collect();
    for s in 0..ATTACK.as_secs() as u128 {
        w.sim.with(liar, |node, now| {
            for r in &ids {
                let fake: Vec<Member> = (0..32u128)
                    .map(|k| Member {
                        node_id: NodeId(r.0.wrapping_add((s * 32 + k + 1) << 20)),
                        name: format!("fake{s}-{k}"),
                        role: Role::Node,
                        has_tap: true,
                        addrs: vec![TaggedAddr {
                            origin: AddrOrigin::Reflexive,
                            addr: SocketAddr::new(victim, 40_000 + k as u16),
                        }],
                    })
                    .collect();
                node.send_control_message(now, *r, &Message::Ring(fake));
            }
        });
        w.run_for(Duration::from_secs(1));
    }
    // The spray of an attempt started last still runs.
    w.run_for(Duration::from_secs(20));

    let elapsed = (ATTACK + Duration::from_secs(20)).as_secs_f64();
    let bound = (DEFAULT_BUDGET.burst + DEFAULT_BUDGET.rate * elapsed) as u64;
    let sent = sent.borrow();
    let total: u64 = sent.values().sum();
    eprintln!("datagrams to the victim by sender: {sent:?} (bound {bound} each)");
    assert!(total > 0, "the attack made nobody try the victim: no test");
    for h in &receivers {
        let n = sent.get(&w.sim.ip(*h)).copied().unwrap_or(0);
        assert!(
            n <= bound,
            "{} sent {n} datagrams to the victim (budget {bound})",
            w.name(*h)
        );
    }
    let dropped: u64 = receivers
        .iter()
        .filter_map(|h| w.status(*h).drops.get(DROP_REASON).copied())
        .sum();
    assert!(dropped > 0, "nothing counted as {DROP_REASON}");
}
