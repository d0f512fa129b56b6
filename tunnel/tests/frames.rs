//! Frames (NoRetransmit messages) over lossy and congested paths: the
//! session's loss response (`docs/dataplane.md`, "Loss").

mod common;

use std::time::Duration;

use common::{config, connect, messages, pattern, LinkModel, Net};
use ringlan_tunnel::{Reliability, SessionId};

struct Run {
    delivered_bytes: usize,
    secs: f64,
    breaker_trips: u64,
    loss_reductions: u64,
    frame_lost_bytes: u64,
    timeouts: u64,
    burst_releases: u64,
}

/// A greedy source: keeps `backlog` bytes queued on a NoRetransmit flow
/// with messages of `msg` bytes for `secs` of virtual time.
fn greedy(link: LinkModel, seed: u64, msg: usize, backlog: usize, secs: u64) -> Run {
    let mut net = Net::new(seed, link);
    let a = net.add(config(1));
    let b = net.add(config(2));
    let (sa, _sb): (SessionId, SessionId) = connect(&mut net, a, b);
    let f = net.nodes[a].ep.open_flow(sa, b"frames", None).unwrap();
    let start = net.now;
    let end = start + Duration::from_secs(secs);
    let mut got = Vec::new();
    let mut delivered = 0usize;
    let payload = pattern(7, msg);
    while net.now < end {
        loop {
            let q = net.nodes[a].ep.session_info(sa).unwrap().queued;
            if q >= backlog {
                break;
            }
            let now = net.now;
            if net.nodes[a]
                .ep
                .send(now, sa, f, &payload, Reliability::NoRetransmit)
                .is_err()
            {
                break;
            }
        }
        net.flush(a);
        assert!(net.step());
        messages(&mut net, b, &mut got);
        delivered += got.drain(..).map(|m| m.len()).sum::<usize>();
    }
    let info = net.nodes[a].ep.session_info(sa).unwrap();
    Run {
        delivered_bytes: delivered,
        secs: (net.now - start).as_secs_f64(),
        breaker_trips: info.congestion.breaker_trips,
        loss_reductions: info.congestion.loss_reductions,
        frame_lost_bytes: info.congestion.frame_lost_bytes,
        timeouts: info.stats.retransmit_timeouts,
        burst_releases: info.congestion.burst_releases,
    }
}

/// Random (non-congestive) loss on a path with room to spare: the frames'
/// loss is left to the traffic inside them, so the session neither halves
/// its window per lost frame (the Reno response it had before) nor trips
/// the breaker, and a lost acknowledgement does not hold a full burst until
/// the retransmission timeout (the burst release): it delivers about what
/// it delivers without loss, less the lost frames.
#[test]
fn random_loss_does_not_throttle_frames() {
    let path = |loss| LinkModel {
        delay: Duration::from_micros(200),
        loss,
        ..LinkModel::default()
    };
    let clean = greedy(path(0.0), 1, 1400, 1 << 20, 1);
    let lossy = greedy(path(0.01), 1, 1400, 1 << 20, 1);
    assert!(lossy.frame_lost_bytes > 0, "the link lost frames");
    assert_eq!(lossy.loss_reductions, 0);
    assert_eq!(lossy.breaker_trips, 0);
    assert_eq!(lossy.timeouts, 0);
    assert!(lossy.burst_releases > 0, "acknowledgements were lost");
    assert!(
        lossy.delivered_bytes * 10 >= clean.delivered_bytes * 9,
        "1% loss: {} bytes against {} without loss",
        lossy.delivered_bytes,
        clean.delivered_bytes
    );
}

/// A source that does not answer loss (a flood of frames) into a
/// bottleneck with a short queue: the breaker trips and holds the session
/// near the bottleneck's rate instead of losing most of what it sends.
#[test]
fn an_unresponsive_flood_trips_the_breaker() {
    let link = LinkModel {
        delay: Duration::from_micros(200),
        rate: 12_500_000, // 100 Mbit/s
        max_queue: Duration::from_millis(2),
        ..LinkModel::default()
    };
    let r = greedy(link, 2, 1400, 1 << 20, 2);
    assert!(r.breaker_trips > 0);
    let sent = r.delivered_bytes as u64 + r.frame_lost_bytes;
    assert!(
        r.frame_lost_bytes * 5 < sent,
        "lost {} of {} bytes",
        r.frame_lost_bytes,
        sent
    );
    // Most of the bottleneck is used: more than half of 100 Mbit/s.
    assert!(r.delivered_bytes as f64 / r.secs > 6_250_000.0);
}
