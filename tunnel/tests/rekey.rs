//! Rekeying open sessions (`docs/crypto-profile.md` 6.3, 7.4) over the
//! simulated network: transfers across many rekeys with loss, reordering
//! and duplication (nothing lost, duplicated or reordered, the session
//! never changes), rekeys forced by the packet budget, idle sessions,
//! both ends asking at once, and keys that run out closing the session
//! with an event instead of a silent black hole.

mod common;

use std::time::Duration;

use common::{bulk, config, connect, deliver, messages, pattern, LinkModel, Net};
use ringlan_tunnel::{CloseReason, EndpointConfig, Event, RekeyConfig, Reliability, SessionId};

fn with_rekey(seed: u8, rekey: RekeyConfig) -> EndpointConfig {
    let mut cfg = config(seed);
    cfg.session.rekey = rekey;
    cfg
}

fn closes(net: &Net, i: usize) -> Vec<CloseReason> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SessionClosed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn epoch(net: &Net, i: usize, s: SessionId) -> u32 {
    net.nodes[i].ep.session_info(s).unwrap().key_epoch
}

fn rekeys(net: &Net, i: usize, s: SessionId) -> u64 {
    net.nodes[i].ep.session_info(s).unwrap().stats.rekeys
}

/// A session and its peer's, with no close and one open each.
fn assert_same_session(net: &Net, a: usize, b: usize) {
    for i in [a, b] {
        assert_eq!(net.nodes[i].ep.sessions().count(), 1, "node {i}");
        let opened = net.nodes[i]
            .events
            .iter()
            .filter(|e| matches!(e, Event::SessionOpened { .. }))
            .count();
        assert!(opened <= 1, "node {i} opened {opened} sessions");
        assert_eq!(closes(net, i), vec![], "node {i}");
    }
}

fn check_in_order(got: &[Vec<u8>], count: usize, msg: usize) {
    assert_eq!(got.len(), count);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(
            m,
            &pattern(i as u64, msg),
            "message {i} lost, duplicated or reordered"
        );
    }
}

/// A transfer of `total` bytes under `rekey` at 1 MB/s with loss,
/// reordering and duplication; returns the net and both session ends.
fn lossy_transfer(rekey: RekeyConfig, total: usize) -> (Net, SessionId, SessionId) {
    let mut net = Net::new(
        31,
        LinkModel {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(4),
            loss: 0.05,
            duplicate: 0.02,
            rate: 1_000_000,
            max_queue: Duration::from_millis(50),
            max_datagram: 0,
        },
    );
    let a = net.add(with_rekey(1, rekey.clone()));
    let b = net.add(with_rekey(2, rekey));
    let (sa, sb) = connect(&mut net, a, b);
    let msg = 8 * 1024;
    let got = bulk(&mut net, a, b, sa, total, msg);
    check_in_order(&got, total / msg, msg);
    assert_same_session(&net, a, b);
    (net, sa, sb)
}

#[test]
fn a_60_second_transfer_across_many_rekeys_with_loss_reordering_and_duplication_is_intact() {
    let fast = RekeyConfig {
        interval: Duration::from_secs(2),
        max_age: Duration::from_secs(30),
        grace: Duration::from_millis(500),
        ..RekeyConfig::default()
    };
    let total = 26 << 20;
    let (net, sa, sb) = lossy_transfer(fast, total);
    let (ea, eb) = (epoch(&net, 0, sa), epoch(&net, 1, sb));
    let took = net.elapsed();
    // The same transfer without rekeys, as the yardstick for pauses.
    let (plain, _, _) = lossy_transfer(RekeyConfig::default(), total);
    println!(
        "{} MiB in {took:?} ({:?} without rekeys): epochs {ea}/{eb}, rekeys {}/{}",
        total >> 20,
        plain.elapsed(),
        rekeys(&net, 0, sa),
        rekeys(&net, 1, sb)
    );
    assert!(took >= Duration::from_secs(60), "{took:?}");
    assert!(ea >= 28, "only {ea} rekeys in {took:?}");
    assert!(ea.abs_diff(eb) <= 1);
    assert!(rekeys(&net, 0, sa) >= 28 && rekeys(&net, 1, sb) >= 28);
    // No pause: rekeying costs the transfer less than 5% of its time.
    assert!(
        took.as_secs_f64() < plain.elapsed().as_secs_f64() * 1.05,
        "{took:?} against {:?}",
        plain.elapsed()
    );
}

#[test]
fn the_packet_budget_forces_rekeys_before_the_limit() {
    let budget = RekeyConfig {
        after_packets: 200,
        packet_limit: 400,
        ..RekeyConfig::default()
    };
    let mut net = Net::new(32, LinkModel::default());
    let a = net.add(with_rekey(1, budget.clone()));
    let b = net.add(with_rekey(2, budget));
    let (sa, sb) = connect(&mut net, a, b);
    let (msg, total) = (4 * 1024, 4 << 20);
    let got = bulk(&mut net, a, b, sa, total, msg);
    check_in_order(&got, total / msg, msg);
    let sent = net.nodes[a].ep.session_info(sa).unwrap().stats.packets_sent;
    let e = epoch(&net, a, sa);
    // Far less than the 2 minutes of the time trigger: packets alone.
    assert!(net.elapsed() < Duration::from_secs(60));
    assert!(
        u64::from(e) + 1 >= sent / 400,
        "{sent} packets under {} keys of at most 400",
        e + 1
    );
    assert!(epoch(&net, b, sb) >= e.saturating_sub(1));
    assert_same_session(&net, a, b);
}

#[test]
fn idle_sessions_rekey_on_time_and_still_carry_data() {
    let every_second = RekeyConfig {
        interval: Duration::from_secs(1),
        max_age: Duration::from_secs(5),
        ..RekeyConfig::default()
    };
    let mut net = Net::new(33, LinkModel::default());
    let a = net.add(with_rekey(1, every_second.clone()));
    let b = net.add(with_rekey(2, every_second));
    let (sa, sb) = connect(&mut net, a, b);
    net.run_for(Duration::from_secs(20));
    let (ea, eb) = (epoch(&net, a, sa), epoch(&net, b, sb));
    assert!(ea >= 15, "{ea}");
    assert_eq!(ea, eb);
    // The session's initiator asks on time, so the responder never has to.
    let got = deliver(&mut net, b, sb, a, b"still here");
    assert_eq!(got, vec![b"still here".to_vec()]);
    assert_same_session(&net, a, b);
}

#[test]
fn both_ends_asking_at_once_settle_on_one_epoch() {
    // Both ends send as much as they receive and hit the packet trigger
    // at about the same time: the session's initiator keeps its request.
    let budget = RekeyConfig {
        after_packets: 64,
        ..RekeyConfig::default()
    };
    let mut net = Net::new(
        34,
        LinkModel {
            jitter: Duration::from_millis(2),
            loss: 0.02,
            ..LinkModel::default()
        },
    );
    let a = net.add(with_rekey(1, budget.clone()));
    let b = net.add(with_rekey(2, budget));
    let (sa, sb) = connect(&mut net, a, b);
    let fa = net.nodes[a].ep.open_flow(sa, b"ab", None).unwrap();
    let fb = net.nodes[b].ep.open_flow(sb, b"ba", None).unwrap();
    let (count, msg) = (3000usize, 1000usize);
    let (mut next_a, mut next_b) = (0, 0);
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() < count || got_b.len() < count {
        let now = net.now;
        while next_a < count
            && net.nodes[a]
                .ep
                .send(
                    now,
                    sa,
                    fa,
                    &pattern(next_a as u64, msg),
                    Reliability::Reliable,
                )
                .is_ok()
        {
            next_a += 1;
        }
        while next_b < count
            && net.nodes[b]
                .ep
                .send(
                    now,
                    sb,
                    fb,
                    &pattern(next_b as u64, msg),
                    Reliability::Reliable,
                )
                .is_ok()
        {
            next_b += 1;
        }
        net.flush(a);
        net.flush(b);
        assert!(net.step());
        messages(&mut net, b, &mut got_b);
        messages(&mut net, a, &mut got_a);
        assert!(net.elapsed() < Duration::from_secs(120), "stalled");
    }
    check_in_order(&got_b, count, msg);
    check_in_order(&got_a, count, msg);
    let (ea, eb) = (epoch(&net, a, sa), epoch(&net, b, sb));
    assert!(ea >= 20, "{ea}");
    assert!(ea.abs_diff(eb) <= 1);
    assert_same_session(&net, a, b);
}

#[test]
fn a_key_at_its_limit_closes_the_session_with_an_event() {
    // No room to rekey: the rekey threshold is the limit itself.
    let no_room = RekeyConfig {
        after_packets: 100,
        packet_limit: 100,
        ..RekeyConfig::default()
    };
    let mut net = Net::new(35, LinkModel::default());
    let a = net.add(with_rekey(1, no_room));
    let b = net.add(config(2));
    let (sa, _sb) = connect(&mut net, a, b);
    let f = net.nodes[a].ep.open_flow(sa, b"x", None).unwrap();
    for i in 0..500u64 {
        let now = net.now;
        let _ = net.nodes[a]
            .ep
            .send(now, sa, f, &pattern(i, 1000), Reliability::Reliable);
    }
    net.flush(a);
    assert!(
        net.run_until(Duration::from_secs(10), |n| !closes(n, a).is_empty()
            && !closes(n, b).is_empty())
    );
    assert_eq!(closes(&net, a), vec![CloseReason::Exhausted]);
    // The Close Ack sealed from the final reserve tells the far end at once.
    assert_eq!(closes(&net, b), vec![CloseReason::Remote]);
    assert!(
        net.elapsed() < Duration::from_secs(2),
        "{:?}",
        net.elapsed()
    );
    let sent = net.nodes[a].ep.stats().datagrams_sent;
    assert!(sent < 200, "{sent}");
}

#[test]
fn a_rekey_that_cannot_complete_closes_at_the_age_limit() {
    // B's packets stop reaching A: A's Rekey is answered, but the Ack never
    // arrives. Both keys reach their age limit and both ends close with
    // Exhausted, long before keepalives would declare the peer dead.
    let short = RekeyConfig {
        interval: Duration::from_secs(1),
        max_age: Duration::from_secs(4),
        ..RekeyConfig::default()
    };
    let mut net = Net::new(36, LinkModel::default());
    let a = net.add(with_rekey(1, short.clone()));
    let b = net.add(with_rekey(2, short));
    let (_sa, _sb) = connect(&mut net, a, b);
    let opened_at = net.elapsed();
    let (adda, addb) = (net.nodes[a].addr, net.nodes[b].addr);
    net.drop_filter = Some(Box::new(move |from, to, _| from == addb && to == adda));
    assert!(
        net.run_until(Duration::from_secs(30), |n| !closes(n, a).is_empty()
            && !closes(n, b).is_empty())
    );
    assert_eq!(closes(&net, a), vec![CloseReason::Exhausted]);
    assert_eq!(closes(&net, b), vec![CloseReason::Exhausted]);
    let t = net.elapsed() - opened_at;
    assert!(
        t >= Duration::from_secs(4) && t < Duration::from_secs(6),
        "{t:?}"
    );
}

/// An idle session rekeying every second; `lose` picks datagrams to drop
/// once the first rekey is due (from, to, index among those).
fn first_rekey_with_loss(seed: u64, lose: impl Fn(bool, usize) -> bool + 'static) {
    let every_second = RekeyConfig {
        interval: Duration::from_secs(1),
        max_age: Duration::from_secs(30),
        ..RekeyConfig::default()
    };
    let mut net = Net::new(seed, LinkModel::default());
    let a = net.add(with_rekey(1, every_second.clone()));
    let b = net.add(with_rekey(2, every_second));
    let (sa, sb) = connect(&mut net, a, b);
    net.run_for(Duration::from_millis(900));
    assert_eq!(epoch(&net, a, sa), 0);
    let (adda, addb) = (net.nodes[a].addr, net.nodes[b].addr);
    let (mut ab, mut ba) = (0usize, 0usize);
    net.drop_filter = Some(Box::new(move |from, to, _| {
        if from == adda && to == addb {
            ab += 1;
            lose(true, ab - 1)
        } else if from == addb && to == adda {
            ba += 1;
            lose(false, ba - 1)
        } else {
            false
        }
    }));
    assert!(
        net.run_until(Duration::from_millis(900), |n| epoch(n, a, sa) == 1
            && epoch(n, b, sb) == 1
            && rekeys(n, a, sa) == 1
            && rekeys(n, b, sb) == 1)
    );
    assert_same_session(&net, a, b);
}

#[test]
fn a_lost_rekey_is_sent_again() {
    // A's first Rekey and its first resend are lost.
    first_rekey_with_loss(37, |a_to_b, i| a_to_b && i < 2);
}

#[test]
fn a_lost_rekey_ack_is_answered_again_with_the_same_keys() {
    // B's first two Acks are lost: A's resent Rekey gets the same Ack.
    first_rekey_with_loss(38, |a_to_b, i| !a_to_b && i < 2);
}

#[test]
fn a_lost_switch_is_shown_again() {
    // A's first packet under the new keys (the Ping) is lost: B keeps
    // sending under the old keys until A's resent Ping arrives.
    first_rekey_with_loss(39, |a_to_b, i| a_to_b && i == 1);
}
