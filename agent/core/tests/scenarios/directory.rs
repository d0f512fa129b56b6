//! Member records in the directory on the ring, whole nodes on the
//! simulated network (`ringlan_node::directory`, docs/directory.md
//! "Member records"):
//!
//! - every node learns its overlay IP from its own gratuitous ARP (as a
//!   DHCP client's), publishes its record, and every other node finds it
//!   under all four keys (`node:`, `name:`, `ip:`, `mac:`), fresh in its
//!   cache afterwards; a scan (`ringlan members`) on every node lists every
//!   member, complete;
//! - two nodes claiming one IP show a conflict in status;
//! - with a network CA the records carry certificates and are found the
//!   same way, while a record a member signs without its certificate, or
//!   with another member's, is refused by the node it is put on and
//!   never found.

use std::net::IpAddr;
use std::time::Duration;

use ringlan_node::sim::frames::mac;
use ringlan_node::sim::{HostId, Place};
use ringlan_node::status::NatBehaviour;
use ringlan_node::{MemberBody, MemberKey, NodeEvent};
use ringlan_overlay::wire::{DirPut, Message, PutKind};
use ringlan_overlay::{Mac, Record};
use ringlan_tunnel::crypto::{Identity, NetworkName};
use ringlan_tunnel::NodeId;

use crate::world::{node_key, World, NETWORK, UNIX_START};

/// Records `from` signs about itself claiming the names `forged-nocert`
/// (no certificate) and `forged-othercert` (`other`'s certificate, as
/// `other` publishes it), each as a replica for every link of `from` among
/// `ring` (introducers hold no records).
fn forge(w: &World, from: HostId, other: HostId, ring: &[HostId]) -> Vec<(NodeId, Message)> {
    let now = w.sim.now();
    let (theirs, _) = w
        .sim
        .machine(from)
        .cached_member(now, &MemberKey::Node(w.id(other)))
        .expect("the other member was looked up");
    let unix = UNIX_START + w.sim.elapsed().as_secs();
    let body = |name: &str, certificate: Option<Vec<u8>>| MemberBody {
        node_id: w.id(from),
        name: name.into(),
        certificate,
        ips: Vec::new(),
        mac: Mac(mac(from)),
        nat: NatBehaviour::Unknown,
        reflexive: Vec::new(),
        local: Vec::new(),
        relay: false,
        published_unix: unix,
        links: Vec::new(),
    };
    let identity =
        Identity::from_secret_key_bytes(node_key(from), &NetworkName::new(NETWORK).unwrap());
    let ring: Vec<NodeId> = ring.iter().map(|h| w.id(*h)).collect();
    let links: Vec<NodeId> = w
        .sim
        .machine(from)
        .overlay()
        .neighbours()
        .into_iter()
        .map(|n| n.node)
        .filter(|n| ring.contains(n))
        .collect();
    assert!(!links.is_empty());
    let mut out = Vec::new();
    for b in [
        body("forged-nocert", None),
        body("forged-othercert", theirs.body.certificate.clone()),
    ] {
        let key = MemberKey::Name(b.name.clone()).key();
        let record =
            Record::sign(&identity, key, unix * 1000, unix + 600, b.encode().unwrap()).unwrap();
        for &to in &links {
            out.push((
                to,
                Message::DirPut(DirPut {
                    kind: PutKind::Replica,
                    copies: 1,
                    hops: 0,
                    record: record.clone(),
                }),
            ));
        }
    }
    out
}

/// A gratuitous ARP from `mac` announcing `ip` (what a DHCP client sends
/// once it has its lease).
fn garp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    arp_request(mac, ip, ip)
}

fn ip_of(i: usize) -> [u8; 4] {
    [10, 77, 0, 10 + i as u8]
}

/// An introducer and `n` nodes on the internet, ring formed.
fn network(w: &mut World, n: usize) -> (HostId, Vec<HostId>) {
    let intro = w.introducer("intro");
    let nodes: Vec<HostId> = (0..n)
        .map(|i| w.node(&format!("n{i}"), Place::Internet, false))
        .collect();
    let mut all = vec![intro];
    all.extend(&nodes);
    w.run_until(Duration::from_secs(120), "ring formed", |w| {
        w.ring_errors(&all) == 0
    });
    (intro, nodes)
}

/// Every node announces its IP; run until each published it.
fn announce(w: &mut World, nodes: &[HostId]) {
    for (i, &h) in nodes.iter().enumerate() {
        let f = garp(mac(h), ip_of(i));
        w.sim.with(h, |n, now| n.handle_frame(now, &f));
    }
    let nodes = nodes.to_vec();
    w.run_until(Duration::from_secs(60), "IPs learnt and published", |w| {
        nodes.iter().enumerate().all(|(i, &h)| {
            let d = w.status(h).directory.expect("directory status");
            d.learnt_ips == [IpAddr::from(ip_of(i))] && d.published_version > 0
        })
    });
    // Until the second publication (the ring had settled long before).
    w.run_for(ringlan_node::directory::SETTLE);
}

/// Ask every node for every other node under all four keys; every answer
/// names the right member.
fn everyone_finds_everyone(w: &mut World, nodes: &[HostId]) {
    let mut asked = Vec::new();
    for &a in nodes {
        for (j, &b) in nodes.iter().enumerate() {
            if a == b {
                continue;
            }
            for key in [
                MemberKey::Node(w.id(b)),
                MemberKey::Name(w.name(b).to_uppercase()),
                MemberKey::Ip(ip_of(j).into()),
                MemberKey::Mac(Mac(mac(b))),
            ] {
                let req = w.sim.with(a, |n, now| n.resolve(now, key.clone()));
                asked.push((a, b, j, key, req));
            }
        }
    }
    w.run_until(Duration::from_secs(30), "lookups answered", |w| {
        asked.iter().all(|(a, _, _, _, req)| {
            w.dir_events(*a)
                .iter()
                .any(|e| matches!(e, NodeEvent::Resolved { request, .. } if request == req))
        })
    });
    let mut missing = Vec::new();
    for (a, b, _, key, req) in &asked {
        let found = w.dir_events(*a).iter().any(
            |e| matches!(e, NodeEvent::Resolved { request, member: Some(_), .. } if request == req),
        );
        if !found {
            let holders: Vec<String> = w
                .sim
                .hosts()
                .filter(|h| w.sim.machine(*h).overlay().dir_local(&key.key()).is_some())
                .map(|h| w.name(h).to_string())
                .collect();
            missing.push(format!(
                "{} -> {} {}: held by {holders:?}",
                w.name(*a),
                w.name(*b),
                key.key()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} lookups failed:\n{}",
        missing.len(),
        asked.len(),
        missing.join("\n")
    );
    for (a, b, j, key, req) in &asked {
        let member = w
            .dir_events(*a)
            .iter()
            .find_map(|e| match e {
                NodeEvent::Resolved {
                    request, member, ..
                } if request == req => Some(member.clone()),
                _ => None,
            })
            .unwrap();
        let m = member.expect("found (checked above)");
        assert_eq!(m.body.node_id, w.id(*b), "{key:?}");
        assert_eq!(m.body.name, w.name(*b));
        assert_eq!(m.body.ips, [IpAddr::from(ip_of(*j))]);
        assert_eq!(m.body.mac, Mac(mac(*b)));
        // And the node now knows it without asking (ARP answers).
        let now = w.sim.now();
        assert_eq!(
            w.sim.machine(*a).cached_member_by_ip(now, ip_of(*j).into()),
            Some((Mac(mac(*b)), true))
        );
    }
}

/// `members()` on every node: every member of `names`, complete.
fn everyone_lists_everyone(w: &mut World, nodes: &[HostId], names: &[&str]) {
    let asked: Vec<_> = nodes
        .iter()
        .map(|&a| (a, w.sim.with(a, |n, now| n.members(now))))
        .collect();
    w.run_until(Duration::from_secs(30), "scans answered", |w| {
        asked.iter().all(|(a, req)| {
            w.dir_events(*a)
                .iter()
                .any(|e| matches!(e, NodeEvent::Members { request, .. } if request == req))
        })
    });
    for (a, req) in &asked {
        let (members, complete) = w
            .dir_events(*a)
            .iter()
            .find_map(|e| match e {
                NodeEvent::Members {
                    request,
                    members,
                    complete,
                } if request == req => Some((members.clone(), *complete)),
                _ => None,
            })
            .unwrap();
        let got: Vec<&str> = members.iter().map(|m| m.body.name.as_str()).collect();
        assert_eq!(got, names, "members on {}", w.name(*a));
        assert!(complete, "scan on {} incomplete", w.name(*a));
        let report = w
            .sim
            .machine(*a)
            .members_report(w.sim.now(), &members, complete);
        assert_eq!(report.members.iter().filter(|m| m.this_node).count(), 1);
        // The topology from the same scan: every member, and every ring
        // link each member keeps (its live view: the truth) from the
        // records the members published.
        let topo = w.sim.machine(*a).topology(w.sim.now(), &members, complete);
        let got: Vec<&str> = topo.members.iter().map(|m| m.name.as_str()).collect();
        let mut want = names.to_vec();
        want.sort_by_key(|n| w.sim.hosts().find(|h| w.name(*h) == *n).map(|h| w.id(h)));
        assert_eq!(got, want, "topology members on {}", w.name(*a));
        for h in w.sim.hosts() {
            for l in w.sim.machine(h).own_links() {
                if l.role != ringlan_node::directory::LinkRole::Successor {
                    continue;
                }
                let (x, y) = (w.id(h).min(l.peer), w.id(h).max(l.peer));
                let found = topo
                    .links
                    .iter()
                    .find(|t| t.a == x.to_string() && t.b == y.to_string());
                let found = found.unwrap_or_else(|| {
                    panic!(
                        "{}'s topology lacks the ring link {} -- {}",
                        w.name(*a),
                        w.name(h),
                        l.name
                    )
                });
                assert_eq!(found.kind, ringlan_node::topology::LinkKind::Ring);
                assert_ne!(found.path, ringlan_node::directory::PathClass::Relayed);
            }
        }
    }
}

#[test]
fn every_member_is_found_under_all_four_keys_and_listed() {
    let mut w = World::new(0xd1_0001);
    let (_intro, nodes) = network(&mut w, 6);
    announce(&mut w, &nodes);
    everyone_finds_everyone(&mut w, &nodes);
    everyone_lists_everyone(
        &mut w,
        &nodes,
        &["intro", "n0", "n1", "n2", "n3", "n4", "n5"],
    );
    // No conflicts among honest members.
    for &h in &nodes {
        assert!(w.status(h).directory.unwrap().conflicts.is_empty());
    }

    // n5 takes n0's IP as well: a conflict, shown in status once scans
    // (or n0's own check of its keys) see both.
    let f = garp(mac(nodes[5]), ip_of(0));
    w.sim.with(nodes[5], |n, now| n.handle_frame(now, &f));
    w.run_for(Duration::from_secs(5));
    let nodes2 = nodes.clone();
    w.sim.with(nodes[1], |n, now| n.members(now));
    w.run_until(Duration::from_secs(30), "conflict seen", |w| {
        w.status(nodes2[1])
            .directory
            .unwrap()
            .conflicts
            .iter()
            .any(|c| c.key == "ip:10.77.0.10" && c.claimants.len() == 2)
    });
}

#[test]
fn with_a_ca_records_need_their_own_certificate() {
    let mut w = World::with_ca(0xd1_0002);
    let (_intro, nodes) = network(&mut w, 4);
    announce(&mut w, &nodes);
    everyone_finds_everyone(&mut w, &nodes);

    // n1 signs records about itself without a certificate, and with
    // n2's, and puts them on each of its links directly.
    let forged = forge(&w, nodes[1], nodes[2], &nodes);
    let before: u64 = nodes
        .iter()
        .map(|&h| w.sim.machine(h).overlay().stats().dir.refused)
        .sum();
    for (to, msg) in &forged {
        let to = *to;
        w.sim
            .with(nodes[1], |n, now| n.send_control_message(now, to, msg));
    }
    w.run_for(Duration::from_secs(5));
    let after: u64 = nodes
        .iter()
        .map(|&h| w.sim.machine(h).overlay().stats().dir.refused)
        .sum();
    let stats: Vec<String> = nodes
        .iter()
        .map(|&h| {
            format!(
                "{} {}: {:?}",
                w.name(h),
                w.id(h).short(),
                w.sim.machine(h).overlay().stats().dir
            )
        })
        .collect();
    assert_eq!(
        after - before,
        forged.len() as u64,
        "refused {before} -> {after}; to {:?}\n{}",
        forged.iter().map(|(to, _)| to.short()).collect::<Vec<_>>(),
        stats.join("\n")
    );
    for &h in &nodes {
        for key in ["name:forged-nocert", "name:forged-othercert"] {
            assert!(
                w.sim.machine(h).overlay().dir_local(key).is_none(),
                "{key} held by {}",
                w.name(h)
            );
        }
    }
    // Nobody finds them.
    let reqs: Vec<_> = ["forged-nocert", "forged-othercert"]
        .iter()
        .map(|name| {
            w.sim.with(nodes[3], |n, now| {
                n.resolve(now, MemberKey::Name(name.to_string()))
            })
        })
        .collect();
    let n3 = nodes[3];
    w.run_until(Duration::from_secs(30), "forged lookups answered", |w| {
        reqs.iter().all(|req| {
            w.dir_events(n3)
                .iter()
                .any(|e| matches!(e, NodeEvent::Resolved { request, member: None, .. } if request == req))
        })
    });
}

/// An ARP request from `mac` (`ip`) for `target`.
fn arp_request(mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// Whether `f` is an ARP request for `target`.
fn asks_for(f: &[u8], target: [u8; 4]) -> bool {
    f.get(12..14) == Some(&[8, 6])
        && f.get(20..22) == Some(&[0, 1])
        && f.get(38..42) == Some(&target)
}

/// docs/directory.md "ARP and ND": a miss floods and fetches the member's
/// `ip:` record; the kernel's next request is answered on the asker's own
/// TAP with the member's MAC and reaches no other member.
#[test]
fn an_arp_request_for_a_member_is_answered_on_the_tap_after_one_lookup() {
    let mut w = World::new(31);
    let (_intro, nodes) = network(&mut w, 4);
    announce(&mut w, &nodes);
    let (a, b) = (nodes[0], nodes[1]);
    let ask = arp_request(mac(a), ip_of(0), ip_of(1));
    let replies_on = |w: &mut World, h: HostId| -> Vec<Vec<u8>> {
        w.sim
            .take_frames(h)
            .into_iter()
            .filter(|f| f.get(12..14) == Some(&[8, 6]) && f.get(20..22) == Some(&[0, 2]))
            .collect()
    };
    let others: Vec<HostId> = w.sim.hosts().filter(|h| *h != a).collect();
    let c0 = w.status(a).arp_nd;
    w.sim.with(a, |n, now| n.handle_frame(now, &ask));
    let mut replies = replies_on(&mut w, a);
    let mut c1 = w.status(a).arp_nd;
    if replies.is_empty() {
        // Not held or cached at a (it is not a replica of b's `ip:`
        // record): flooded, and the record is fetched.
        assert_eq!(c1.arp_flooded, c0.arp_flooded + 1);
        w.sim.run_for(Duration::from_secs(5));
        let reached: usize = others
            .iter()
            .map(|h| {
                w.sim
                    .take_frames(*h)
                    .iter()
                    .filter(|f| asks_for(f, ip_of(1)))
                    .count()
            })
            .sum();
        assert!(
            reached > 0,
            "the request a could not answer was not flooded"
        );
        // The kernel's retry.
        w.sim.with(a, |n, now| n.handle_frame(now, &ask));
        replies = replies_on(&mut w, a);
        let c2 = w.status(a).arp_nd;
        assert_eq!(c2.arp_answered_locally, c1.arp_answered_locally + 1);
        assert_eq!(c2.arp_flooded, c1.arp_flooded);
        c1 = c2;
    } else {
        assert_eq!(c1.arp_answered_locally, c0.arp_answered_locally + 1);
        assert_eq!(c1.arp_flooded, c0.arp_flooded);
    }
    assert!(c1.arp_answered_locally > 0);
    assert_eq!(replies.len(), 1, "one ARP reply on a's TAP");
    let r = &replies[0];
    assert_eq!(&r[0..6], &mac(a), "to the asker");
    assert_eq!(&r[6..12], &mac(b), "from b's MAC");
    assert_eq!(&r[22..28], &mac(b), "sender hardware address");
    assert_eq!(&r[28..32], &ip_of(1), "sender protocol address");
    assert_eq!(&r[32..38], &mac(a), "target hardware address");
    assert_eq!(&r[38..42], &ip_of(0), "target protocol address");
    w.sim.run_for(Duration::from_secs(2));
    for h in &others {
        assert!(
            !w.sim.take_frames(*h).iter().any(|f| asks_for(f, ip_of(1))),
            "the answered request reached {}",
            w.name(*h)
        );
    }
}
