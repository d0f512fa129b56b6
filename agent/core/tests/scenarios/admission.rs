//! Admission by network-CA certificate and revocation lists, whole nodes
//! on the simulated network (`ringlan_node::admission`,
//! docs/membership.md):
//!
//! - members with valid certificates form the network and exchange frames;
//! - a node without a certificate, with an expired or not yet valid one,
//!   one signed by another CA or for another network, or one naming
//!   another key, never gets a session: refused, with the reason on both
//!   ends, counted;
//! - a list pushed on one member reaches every member within seconds and
//!   closes every session with the revoked node, which the overlay then
//!   forgets; the revoked node cannot come back, even restarted;
//! - a large list crosses lossy links, and the largest list the decoder
//!   accepts travels as one message;
//! - a member that was down during the push learns the list when it
//!   returns and refuses the revoked node;
//! - a relay drops the routes of a revoked node;
//! - an admitted peer whose certificate expires is closed;
//! - lists that are not newer, not ours or not lists are refused.

use std::time::Duration;

use ringlan_node::membership::{ListBody, RevocationList, Revoked, SignedBody};
use ringlan_node::sim::{HostId, LinkModel, NatModel};
use ringlan_node::status::{MembershipStatus, PathKind, SessionPhase};
use ringlan_node::PushError;
use ringlan_tunnel::crypto::NetworkName;

use crate::world::{is_relayed, node_key, Cert, World, NETWORK, UNIX_START};

/// Revocation list `version` revoking the keys of `hosts`.
fn list(w: &World, version: u64, hosts: &[HostId]) -> RevocationList {
    let revoked = hosts
        .iter()
        .map(|h| {
            Revoked::Key(
                ed25519_dalek::SigningKey::from_bytes(&node_key(*h))
                    .verifying_key()
                    .to_bytes(),
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    ListBody {
        version,
        revoked,
        ..ListBody::first(NetworkName::new(NETWORK).unwrap(), UNIX_START)
    }
    .sign(w.ca_key())
    .unwrap()
}

/// Whether `a` has an open session with `b` (a member: sessions waiting
/// for admission show as opening).
fn any_session(w: &World, a: HostId, b: HostId) -> bool {
    w.session(a, b).is_some()
}

fn drops(w: &World, h: HostId, label: &str) -> u64 {
    w.status(h).drops.get(label).copied().unwrap_or(0)
}

fn admitted(w: &World, a: HostId, b: HostId) -> bool {
    w.sim.machine(a).overlay().is_linked(w.id(b))
}

/// Introducer and `n` members with valid certificates, every pair linked.
fn network(seed: u64, n: usize) -> (World, HostId, Vec<HostId>) {
    network_on(seed, n, LinkModel::wan())
}

/// [`network`], every host reaching the internet over `access`.
fn network_on(seed: u64, n: usize, access: LinkModel) -> (World, HostId, Vec<HostId>) {
    let mut w = World::with_ca(seed);
    w.keepalive = Duration::from_secs(5);
    w.sim.default_public_access = access;
    let intro = w.introducer("intro");
    let nodes: Vec<HostId> = (0..n)
        .map(|i| w.member(&format!("m{i}"), Cert::Valid))
        .collect();
    let mut all = vec![intro];
    all.extend(&nodes);
    let ring = all.clone();
    w.run_until(Duration::from_secs(120), "ring formed", |w| {
        w.ring_errors(&ring) == 0
    });
    (w, intro, nodes)
}

#[test]
fn members_with_certificates_are_admitted_and_exchange_frames() {
    let (mut w, intro, nodes) = network(0xad_0001, 10);
    let mut all = vec![intro];
    all.extend(&nodes);
    for &h in &all {
        w.send_frames(h, None, 1, Duration::from_millis(5));
    }
    w.exchange(&all, 2);
    let v = w.settle_frames(Duration::from_secs(10));
    assert!(v.is_clean(), "{v:?}");
    assert_eq!(v.missing, 0, "{v:?}");
    for &h in &all {
        let s = w.status(h);
        match &s.membership {
            MembershipStatus::Certificate {
                name,
                days_left,
                revocations_version,
                warning,
                ..
            } => {
                assert_eq!(name, w.name(h));
                assert!((364..=365).contains(days_left), "{days_left}");
                assert_eq!(*revocations_version, 0);
                assert_eq!(warning, &None);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !s.drops.keys().any(|k| k.starts_with("admission_")),
            "{:?}",
            s.drops
        );
        assert!(s.render().contains("membership: certificate "));
        // Every linked peer's certificate is at hand, naming it.
        for &p in &all {
            if p != h && admitted(&w, h, p) {
                let c = w.sim.machine(h).peer_certificate(w.id(p));
                assert_eq!(c.map(|c| c.body().name.as_str()), Some(w.name(p)));
            }
        }
    }
}

#[test]
fn nodes_without_an_acceptable_certificate_are_refused_on_both_ends() {
    let mut w = World::with_ca(0xad_0002);
    let intro = w.introducer("intro");
    let good = w.member("good", Cert::Valid);
    let bad = [
        (w.member("nocert", Cert::NoCa), "no_certificate"),
        (w.member("expired", Cert::Expired), "expired"),
        (w.member("early", Cert::NotYetValid), "not_yet_valid"),
        (w.member("otherca", Cert::OtherCa), "not_our_ca"),
        (w.member("othernet", Cert::OtherNetwork), "other_network"),
        (w.member("otherkey", Cert::OtherKey), "key_mismatch"),
    ];
    w.run_until(Duration::from_secs(30), "good admitted", |w| {
        admitted(w, good, intro) && admitted(w, intro, good)
    });
    w.run_until(Duration::from_secs(30), "every refusal counted", |w| {
        bad.iter()
            .all(|(_, why)| drops(w, intro, &format!("admission_{why}")) >= 1)
    });
    w.run_for(Duration::from_secs(30));
    for (h, why) in bad {
        let name = w.name(h).to_string();
        // The refused node heard why; the node of another CA also
        // refuses the members itself (their certificates are not of its
        // CA), and may have done so first.
        let heard = drops(&w, h, &format!("refused_by_peer_{why}"));
        let own = drops(&w, h, "admission_not_our_ca");
        assert!(
            heard >= 1 || (why == "not_our_ca" && own >= 1),
            "{name}: {:?}",
            w.status(h).drops
        );
        for m in [intro, good] {
            assert!(!admitted(&w, m, h), "{name} admitted by {}", w.name(m));
            assert!(
                !any_session(&w, m, h),
                "{} has a session with {name}",
                w.name(m)
            );
        }
        assert!(
            w.status(h)
                .sessions
                .iter()
                .all(|s| s.state != SessionPhase::Open),
            "{name}: {:?}",
            w.status(h).sessions
        );
        assert_eq!(w.sim.machine(h).overlay().neighbours().len(), 0, "{name}");
    }
    // The CA-less node says so.
    assert_eq!(
        w.status(bad[0].0).membership,
        MembershipStatus::SharedSecret
    );
    assert!(w
        .status(bad[0].0)
        .render()
        .contains("membership: shared secret (no per-node revocation)"));
    // The expired node knows it.
    match w.status(bad[1].0).membership {
        MembershipStatus::Certificate {
            warning: Some(w), ..
        } => assert!(w.contains("expired"), "{w}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pushed_list_reaches_every_member_and_closes_the_revoked_sessions() {
    let (mut w, intro, nodes) = network(0xad_0003, 5);
    let revoked = nodes[4];
    let mut members = vec![intro];
    members.extend(&nodes[..4]);
    assert!(members.iter().any(|m| admitted(&w, *m, revoked)));
    let l = list(&w, 1, &[revoked]);
    let v = w
        .sim
        .with(nodes[0], |n, now| n.push_revocations(now, l.as_bytes()));
    assert_eq!(v, Ok(1));
    let t = w.run_until(
        Duration::from_secs(10),
        "list everywhere, sessions closed",
        |w| {
            members.iter().all(|&m| {
                w.sim.machine(m).revocations().map(|l| l.body().version) == Some(1)
                    && !any_session(w, m, revoked)
            })
        },
    );
    eprintln!("revoked everywhere after {t:?}");
    assert!(t < Duration::from_secs(5), "{t:?}");
    w.run_for(Duration::from_secs(1));
    for &m in &members {
        // Each member was told to keep the list once.
        assert_eq!(w.installed.get(&m), Some(&vec![1]), "{}", w.name(m));
        let o = w.sim.machine(m).overlay();
        assert!(o.is_banned(w.id(revoked)));
        assert!(o.member(w.id(revoked)).is_none());
        match w.status(m).membership {
            MembershipStatus::Certificate {
                revocations_version: 1,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(members
        .iter()
        .any(|m| drops(&w, *m, "admission_revoked") >= 1));
    assert!(drops(&w, revoked, "refused_by_peer_revoked") >= 1);
    // The revoked node knows it is out and has nobody.
    match w.status(revoked).membership {
        MembershipStatus::Certificate {
            warning: Some(w), ..
        } => assert!(w.contains("revoked"), "{w}"),
        other => panic!("{other:?}"),
    }
    // The others still talk.
    w.exchange(&members, 1);
    let v = w.settle_frames(Duration::from_secs(10));
    assert_eq!(v.missing, 0, "{v:?}");

    // Restarted (with the list it kept), it cannot rejoin.
    w.restart(revoked);
    w.run_for(Duration::from_secs(60));
    for &m in &members {
        assert!(!admitted(&w, m, revoked), "{}", w.name(m));
        assert!(!admitted(&w, revoked, m), "{}", w.name(m));
    }
    assert_eq!(
        w.sim.machine(revoked).overlay().neighbours().len(),
        0,
        "{:?}",
        w.status(revoked).sessions
    );
}

/// A list of 2,001 entries (about 66 KB, some 60 packets) over links
/// that lose, duplicate and reorder: it still reaches every member and
/// closes the revoked node's sessions within seconds.
#[test]
fn a_large_list_spreads_over_lossy_links() {
    let lossy = LinkModel {
        loss: 0.03,
        duplicate: 0.01,
        jitter: Duration::from_millis(5),
        ..LinkModel::wan()
    };
    let (mut w, intro, nodes) = network_on(0xad_0009, 6, lossy);
    let mut all = vec![intro];
    all.extend(&nodes);
    let revoked = nodes[5];
    let mut body = list(&w, 1, &[revoked]).body().clone();
    body.revoked.extend((0..2000u32).map(|i| {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        Revoked::Key(key)
    }));
    body.revoked.sort();
    let big = body.sign(w.ca_key()).unwrap();
    assert!(big.as_bytes().len() > 60_000);
    assert_eq!(
        w.sim
            .with(nodes[0], |n, now| n.push_revocations(now, big.as_bytes())),
        Ok(1)
    );
    let members = &all[..6];
    let t = w.run_until(Duration::from_secs(20), "spread over lossy links", |w| {
        members.iter().all(|&m| {
            w.sim.machine(m).revocations().map(|l| l.body().version) == Some(1)
                && !any_session(w, m, revoked)
        })
    });
    eprintln!("a 2,001-entry list everywhere after {t:?}");
    assert!(t < Duration::from_secs(10), "{t:?}");
}

/// The largest list the decoder accepts (8,192 keys, 270 KB: beyond the
/// flow layer's default largest message) travels as one message.
#[test]
fn the_largest_list_travels() {
    let (mut w, intro, nodes) = network(0xad_000a, 2);
    let mut body = list(&w, 1, &[]).body().clone();
    body.revoked = (0..ringlan_node::membership::revocation::MAX_REVOKED as u32)
        .map(|i| {
            let mut key = [0xee; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            Revoked::Key(key)
        })
        .collect();
    let big = body.sign(w.ca_key()).unwrap();
    // The network name is 3 characters, not 32: 29 bytes short of
    // MAX_LIST, still beyond the default 256 KiB.
    assert_eq!(
        big.as_bytes().len() + 29,
        ringlan_node::admission::wire::MAX_LIST
    );
    assert!(big.as_bytes().len() > 256 << 10);
    assert_eq!(
        w.sim
            .with(nodes[0], |n, now| n.push_revocations(now, big.as_bytes())),
        Ok(1)
    );
    w.run_until(Duration::from_secs(10), "the largest list spread", |w| {
        [intro, nodes[1]]
            .iter()
            .all(|&m| w.sim.machine(m).revocations().map(|l| l.body().version) == Some(1))
    });
}

#[test]
fn a_member_down_during_the_push_learns_the_list_on_return() {
    let (mut w, intro, nodes) = network(0xad_0004, 4);
    let (away, revoked) = (nodes[2], nodes[3]);
    w.kill(away);
    w.run_for(Duration::from_secs(20));
    let l = list(&w, 1, &[revoked]);
    assert_eq!(
        w.sim
            .with(nodes[0], |n, now| n.push_revocations(now, l.as_bytes())),
        Ok(1)
    );
    let others = [intro, nodes[0], nodes[1]];
    w.run_until(Duration::from_secs(10), "spread", |w| {
        others.iter().all(|&m| !any_session(w, m, revoked))
    });
    w.restart(away);
    let t = w.run_until(Duration::from_secs(30), "the returning node learns", |w| {
        w.sim.machine(away).revocations().map(|l| l.body().version) == Some(1)
    });
    eprintln!("learnt on return after {t:?}");
    w.run_for(Duration::from_secs(30));
    assert!(!any_session(&w, away, revoked));
    assert!(!admitted(&w, away, revoked));
    assert!(w.sim.machine(away).overlay().is_banned(w.id(revoked)));
    assert!(admitted(&w, away, intro));
    assert_eq!(w.installed.get(&away), Some(&vec![1]));
}

#[test]
fn a_relay_drops_the_routes_of_a_revoked_node() {
    let mut w = World::with_ca(0xad_0005);
    let intro = w.introducer("intro");
    let (a, _) = w.behind("a", NatModel::symmetric());
    let (b, _) = w.behind("b", NatModel::symmetric());
    w.wait_path(a, b, Duration::from_secs(30), is_relayed);
    let carries = |w: &World, h: HostId| {
        let id = w.id(h).to_string();
        w.status(intro)
            .relay
            .is_some_and(|r| r.routes.iter().any(|c| c.origin == id || c.target == id))
    };
    assert!(carries(&w, b), "{:?}", w.status(intro).relay);
    let l = list(&w, 1, &[b]);
    assert_eq!(
        w.sim
            .with(a, |n, now| n.push_revocations(now, l.as_bytes())),
        Ok(1)
    );
    w.run_until(Duration::from_secs(10), "routes of b dropped", |w| {
        !carries(w, b) && !any_session(w, a, b) && !any_session(w, intro, b)
    });
    w.run_for(Duration::from_secs(20));
    assert!(!carries(&w, b));
    assert!(!matches!(w.path(a, b), Some(PathKind::Relayed { .. })));
}

#[test]
fn an_admitted_peer_whose_certificate_expires_is_closed() {
    let mut w = World::with_ca(0xad_0006);
    let intro = w.introducer("intro");
    let short = w.member("short", Cert::ValidFor(120));
    w.run_until(Duration::from_secs(30), "admitted", |w| {
        admitted(w, intro, short)
    });
    // Expiry plus the tolerated clock skew (5 minutes), then a tick.
    w.run_until(Duration::from_secs(600), "closed on expiry", |w| {
        !admitted(w, intro, short) && drops(w, intro, "admission_expired") >= 1
    });
    assert!(w.sim.elapsed() >= Duration::from_secs(120 + 300));
    w.run_for(Duration::from_secs(2));
    assert!(
        drops(&w, short, "refused_by_peer_expired") >= 1,
        "{:?}",
        w.status(short).drops
    );
}

#[test]
fn lists_that_are_not_newer_or_not_ours_are_refused() {
    let (mut w, _intro, nodes) = network(0xad_0007, 1);
    let n = nodes[0];
    let push = |w: &mut World, b: &[u8]| w.sim.with(n, |node, now| node.push_revocations(now, b));
    let v2 = list(&w, 2, &[]);
    assert_eq!(push(&mut w, v2.as_bytes()), Ok(2));
    let v1 = list(&w, 1, &[]);
    assert_eq!(
        push(&mut w, v1.as_bytes()),
        Err(PushError::NotNewer {
            offered: 1,
            current: 2
        })
    );
    assert!(matches!(
        push(&mut w, v2.as_bytes()),
        Err(PushError::NotNewer { .. })
    ));
    // Another CA, another network, garbage.
    let other = ListBody {
        version: 9,
        ..ListBody::first(NetworkName::new(NETWORK).unwrap(), UNIX_START)
    }
    .sign(&ed25519_dalek::SigningKey::from_bytes(&[0x0c; 32]))
    .unwrap();
    let e = push(&mut w, other.as_bytes()).unwrap_err();
    assert!(matches!(e, PushError::Rejected(_)), "{e}");
    let elsewhere = ListBody {
        version: 9,
        ..ListBody::first(NetworkName::new("elsewhere").unwrap(), UNIX_START)
    }
    .sign(w.ca_key())
    .unwrap();
    let e = push(&mut w, elsewhere.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("another network"), "{e}");
    // A flipped signature bit.
    let mut flipped = list(&w, 3, &[]).as_bytes().to_vec();
    *flipped.last_mut().unwrap() ^= 1;
    let e = push(&mut w, &flipped).unwrap_err();
    assert!(e.to_string().contains("bad signature"), "{e}");
    assert!(matches!(
        push(&mut w, b"garbage"),
        Err(PushError::Malformed(_))
    ));
    // The armoured form is accepted.
    let v3 = list(&w, 3, &[]);
    let text = ringlan_node::membership::armor::encode(
        ringlan_node::membership::Kind::RevocationList,
        v3.as_bytes(),
        &[],
    );
    assert_eq!(push(&mut w, text.as_bytes()), Ok(3));
    // A node without a CA keeps no list.
    let mut plain = World::new(0xad_0008);
    let i = plain.introducer("intro");
    assert_eq!(
        plain
            .sim
            .with(i, |node, now| node.push_revocations(now, v3.as_bytes())),
        Err(PushError::NoCa)
    );
}
