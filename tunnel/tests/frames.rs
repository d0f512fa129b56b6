//! Frames (NoRetransmit messages) over lossy and congested paths: the
//! session's loss response (`docs/dataplane.md`, "Loss").

mod common;

use std::time::Duration;

use common::{config, connect, messages, network, pattern, record, send_frames, LinkModel, Net};
use ringlan_tunnel::{EndpointConfig, FlowId, Identity, Reliability, SessionId, SuiteSet};

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

/// A session on a plain Ethernet path whose PMTU discovery found 1472
/// bytes, with a frame flow (NoRetransmit) and a reliable flow whose
/// metadata the far end acknowledged.
fn ethernet_session(seed: u64) -> (Net, [usize; 2], SessionId, [FlowId; 2]) {
    ethernet_session_of(seed, [config(1), config(2)])
}

fn ethernet_session_of(
    seed: u64,
    [ca, cb]: [EndpointConfig; 2],
) -> (Net, [usize; 2], SessionId, [FlowId; 2]) {
    let mut net = Net::new(seed, LinkModel::default());
    let a = net.add(ca);
    let b = net.add(cb);
    let (sa, _) = connect(&mut net, a, b);
    let frames = net.nodes[a].ep.open_flow(sa, b"frames", None).unwrap();
    let bulk = net.nodes[a].ep.open_flow(sa, b"bulk", None).unwrap();
    let now = net.now;
    for (f, rel) in [
        (frames, Reliability::NoRetransmit),
        (bulk, Reliability::Reliable),
    ] {
        net.nodes[a].ep.send(now, sa, f, b"hello", rel).unwrap();
    }
    net.flush(a);
    let mut got = Vec::new();
    assert!(net.run_until(Duration::from_secs(10), |n| {
        messages(n, b, &mut got);
        let info = n.nodes[a].ep.session_info(sa).unwrap();
        got.len() == 2 && info.pmtu == 1472 && info.queued == 0
    }));
    (net, [a, b], sa, [frames, bulk])
}

/// Send `msg` on `flow` and run until it arrives; the sizes of the
/// datagrams A sent to B meanwhile.
fn datagrams_for(
    net: &mut Net,
    [a, b]: [usize; 2],
    sa: SessionId,
    flow: FlowId,
    msg: &[u8],
    rel: Reliability,
) -> Vec<usize> {
    let log = record(net, net.nodes[a].addr, net.nodes[b].addr);
    let now = net.now;
    net.nodes[a].ep.send(now, sa, flow, msg, rel).unwrap();
    net.flush(a);
    let mut got = Vec::new();
    assert!(net.run_until(Duration::from_secs(5), |n| {
        messages(n, b, &mut got);
        !got.is_empty()
    }));
    assert_eq!(got, vec![msg.to_vec()]);
    net.drop_filter = None;
    let sizes = log.borrow().iter().map(Vec::len).collect();
    sizes
}

/// Frames are cut from the discovered path MTU (RFC 7016 3.6.2.2 against
/// 3.5.4.3), not from the base size: a full-size TAP frame (MTU 1400 +
/// Ethernet 14 + virtio 10 + frame header 1) is one datagram, a 64 KiB TCP
/// super-frame takes ceil(65536 / fragment) datagrams. Reliable messages
/// keep the base size.
#[test]
fn frames_are_cut_to_the_path_mtu() {
    let (mut net, ab, sa, [frames, bulk]) = ethernet_session(21);
    let ep = &net.nodes[ab[0]].ep;
    let frag = ep
        .max_unfragmented(sa, frames, Reliability::NoRetransmit)
        .unwrap();
    assert_eq!(frag, 1428);
    let base = ep
        .max_unfragmented(sa, bulk, Reliability::Reliable)
        .unwrap();
    assert_eq!(base, 1156);
    let nr = Reliability::NoRetransmit;
    let one = datagrams_for(&mut net, ab, sa, frames, &pattern(1, 1425), nr);
    assert_eq!(one.len(), 1, "{one:?}");
    let full = datagrams_for(&mut net, ab, sa, frames, &pattern(2, frag), nr);
    assert_eq!(full.len(), 1, "{full:?}");
    assert!(full[0] <= 1472 && full[0] > 1460, "{full:?}");
    let big = datagrams_for(&mut net, ab, sa, frames, &pattern(3, 65536), nr);
    assert_eq!(big.len(), 65536usize.div_ceil(frag), "{big:?}");
    assert_eq!(big.len(), 46);
    assert!(big.iter().all(|&n| n <= 1472));
    let fragments = |net: &Net| net.nodes[ab[0]].ep.flow_stats(sa).unwrap().fragments_sent;
    assert_eq!(fragments(&net), 2 + 1 + 1 + 46, "one fragment per datagram");
    // A reliable message is cut at the base size (its fragments must still
    // fit after a fallback); both fragments share one packet here.
    let rel = Reliability::Reliable;
    let two = datagrams_for(&mut net, ab, sa, bulk, &pattern(4, 1425), rel);
    assert_eq!(fragments(&net), 50 + 2, "{two:?}");
}

/// Bytes of a session datagram around its plain text: scrambled session
/// id, sequence number, AEAD tag.
const AROUND_PLAIN: usize = 4 + 8 + 16;

/// RFC 7016 2.2.4 padding (`session::align`): with AES-256-GCM every
/// datagram's plain text is whole 16-byte blocks where the packet has
/// room. A TCP super-frame as the bench's TAP gives it (48 segments of
/// 1348 bytes with their headers, the virtio header and the frame header)
/// is cut at the rounded size in no more datagrams than at the full size;
/// a 64 KiB message, which would take one more, is cut at the full size;
/// a frame that fits one datagram unrounded still goes in one; small
/// frames are padded. ChaCha20-Poly1305 and AEGIS-128L are never padded.
#[test]
fn aes_packets_are_padded_to_whole_blocks_without_more_datagrams() {
    let nr = Reliability::NoRetransmit;
    let whole_blocks =
        |sizes: &[usize]| sizes.iter().all(|n| (n - AROUND_PLAIN).is_multiple_of(16));
    let with = |seed: u8, suites| {
        let (name, secret) = network();
        let id = Identity::with_suites([seed; 32], &name, suites);
        EndpointConfig::new(id, name, secret)
    };
    let aes = [with(1, SuiteSet::CERTIFIED), with(2, SuiteSet::CERTIFIED)];
    let (mut net, ab, sa, [frames, _]) = ethernet_session_of(23, aes);
    let frag = net.nodes[ab[0]]
        .ep
        .max_unfragmented(sa, frames, nr)
        .unwrap();
    assert_eq!(frag, 1428, "the largest whole fragment is unrounded");
    let tso = datagrams_for(&mut net, ab, sa, frames, &pattern(1, 64_781), nr);
    assert_eq!(tso.len(), 64_781usize.div_ceil(frag), "{tso:?}");
    assert!(whole_blocks(&tso), "{tso:?}");
    assert_eq!(tso[0], 1468, "{tso:?}");
    let big = datagrams_for(&mut net, ab, sa, frames, &pattern(2, 65_536), nr);
    assert_eq!(big.len(), 46, "{big:?}");
    let mtu = datagrams_for(&mut net, ab, sa, frames, &pattern(3, 1425), nr);
    assert_eq!(mtu.len(), 1, "{mtu:?}");
    for len in [1, 60, 64, 100, 1000] {
        let small = datagrams_for(&mut net, ab, sa, frames, &pattern(4, len), nr);
        assert!(whole_blocks(&small), "{len}: {small:?}");
    }

    let mut unpadded = vec![SuiteSet::CHACHA_ONLY];
    if ringlan_tunnel::crypto::aegis_in_hardware() {
        unpadded.push(SuiteSet::ALL);
    }
    for suites in unpadded {
        let ends = [with(1, suites), with(2, suites)];
        let (mut net, ab, sa, [frames, _]) = ethernet_session_of(24, ends);
        let tso = datagrams_for(&mut net, ab, sa, frames, &pattern(5, 64_781), nr);
        assert_eq!(tso.len(), 46, "{suites:?}: {tso:?}");
        assert!(!whole_blocks(&tso), "{suites:?}: {tso:?}");
        let small = datagrams_for(&mut net, ab, sa, frames, &pattern(6, 65), nr);
        assert!(!whole_blocks(&small), "{suites:?}: {small:?}");
    }
}

/// The path shrinks under a full queue of path-sized frames: black-hole
/// detection (a retransmission timeout, then three failed probes of the
/// current size) falls back to the base size. The frames in flight were
/// lost, those still queued are abandoned when they come up
/// (`abandoned_path_mtu`) instead of wedging the flow, reliable data
/// (base-size fragments) all arrives, and frames queued after the fallback
/// are delivered.
#[test]
fn a_path_mtu_fallback_abandons_larger_frames_and_frames_flow_on() {
    let (mut net, [a, b], sa, [frames, bulk]) = ethernet_session(22);
    net.link.max_datagram = 1300;
    let nr = Reliability::NoRetransmit;
    let now = net.now;
    for i in 0..300 {
        let msg = pattern(i, 1425);
        net.nodes[a].ep.send(now, sa, frames, &msg, nr).unwrap();
    }
    let reliable: Vec<Vec<u8>> = (0..50).map(|i| pattern(1000 + i, 3000)).collect();
    for m in &reliable {
        net.nodes[a]
            .ep
            .send(now, sa, bulk, m, Reliability::Reliable)
            .unwrap();
    }
    net.flush(a);
    let mut got = Vec::new();
    assert!(net.run_until(Duration::from_secs(30), |n| {
        messages(n, b, &mut got);
        n.nodes[a].ep.flow_stats(sa).unwrap().abandoned_path_mtu > 0
    }));
    let info = net.nodes[a].ep.session_info(sa).unwrap();
    assert!(info.pmtu < 1472, "fell back: {}", info.pmtu);
    assert!(net.run_until(Duration::from_secs(30), |n| {
        messages(n, b, &mut got);
        n.nodes[a].ep.session_info(sa).unwrap().queued == 0
    }));
    let st = net.nodes[a].ep.flow_stats(sa).unwrap();
    assert!(st.losses_timeout > 0, "frames in flight were lost");
    assert_eq!(st.retransmissions, 0, "reliable data never needed one");
    // Every reliable message, in order; no frame of the old size.
    let old: Vec<&Vec<u8>> = got.iter().filter(|m| m.len() == 1425).collect();
    assert!(
        old.is_empty(),
        "{} frames crossed a 1300-byte path",
        old.len()
    );
    let rel: Vec<Vec<u8>> = got.iter().filter(|m| m.len() == 3000).cloned().collect();
    assert_eq!(rel, reliable);
    // Frames queued from now on fit the path and arrive.
    let want: Vec<Vec<u8>> = (0..20).map(|i| pattern(5000 + i, 1425)).collect();
    assert_eq!(send_frames(&mut net, [a, b], sa, frames, &want), want);
    let info = net.nodes[a].ep.session_info(sa).unwrap();
    assert_eq!(info.state, ringlan_tunnel::SessionState::Open);
    println!("fallback: {st:?}, pmtu now {}", info.pmtu);
}

/// Queue `msgs` as frames from A, run `ms` milliseconds, and add what B
/// received meanwhile to `got`.
fn frames_then_wait(
    net: &mut Net,
    [a, b]: [usize; 2],
    sa: SessionId,
    flow: FlowId,
    msgs: &[Vec<u8>],
    ms: u64,
    got: &mut Vec<Vec<u8>>,
) {
    let now = net.now;
    for m in msgs {
        net.nodes[a]
            .ep
            .send(now, sa, flow, m, Reliability::NoRetransmit)
            .unwrap();
    }
    net.flush(a);
    net.run_for(Duration::from_millis(ms));
    messages(net, b, got);
}

/// The path shrinks while small packets still cross it (a black hole for
/// large packets only, as when ICMP "fragmentation needed" is filtered):
/// small frames keep being acknowledged, so no retransmission timeout
/// comes, but every path-sized frame vanishes. The large fragments lost
/// with none of them acknowledged make the session verify its packet size
/// (one probe), fall back and search again, and large frames arrive again
/// within seconds instead of never.
#[test]
fn a_black_hole_for_large_packets_only_is_found_while_small_ones_flow() {
    let (mut net, [a, b], sa, [frames, _]) = ethernet_session(23);
    net.link.max_datagram = 1300;
    let mut got = Vec::new();
    let mut i = 0u64;
    let start = net.now;
    // A small and a large frame every 20 ms, as an interactive session
    // beside a transfer would send them.
    let fell_back = loop {
        let msgs = [pattern(i, 100), pattern(i, 1425)];
        i += 1;
        frames_then_wait(&mut net, [a, b], sa, frames, &msgs, 20, &mut got);
        if net.nodes[a].ep.session_info(sa).unwrap().pmtu <= 1300 {
            break true;
        }
        if net.now - start > Duration::from_secs(20) {
            break false;
        }
    };
    let info = net.nodes[a].ep.session_info(sa).unwrap();
    let took = net.now - start;
    assert!(fell_back, "still {} bytes after 20 s", info.pmtu);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(info.stats.retransmit_timeouts, 0, "no timeout was needed");
    assert!(info.stats.black_hole_checks >= 1);
    let small = got.iter().filter(|m| m.len() == 100).count();
    assert!(small as u64 >= i * 9 / 10, "{small} of {i} small frames");
    // What was queued drains; then large frames cross again.
    net.run_for(Duration::from_secs(2));
    messages(&mut net, b, &mut got);
    let want: Vec<Vec<u8>> = (0..20).map(|i| pattern(9000 + i, 1425)).collect();
    let after = send_frames(&mut net, [a, b], sa, frames, &want);
    assert!(after == want, "{} of 20 large frames", after.len());
    assert_eq!(info.state, ringlan_tunnel::SessionState::Open);
    println!(
        "fell back after {took:?} to {} bytes, {} check(s)",
        info.pmtu, info.stats.black_hole_checks
    );
}

/// Random loss also loses large fragments in a row now and then. The
/// check it starts costs one probe, which the path carries: the packet
/// size stays, and checks come at most once per `SIZE_CHECK_INTERVAL`.
#[test]
fn random_loss_keeps_the_packet_size() {
    let (mut net, [a, b], sa, [frames, _]) = ethernet_session(24);
    net.link.loss = 0.05;
    let start = net.now;
    let mut got = Vec::new();
    let mut i = 0u64;
    while net.now - start < Duration::from_secs(30) {
        let msgs: Vec<Vec<u8>> = (i..i + 5).map(|i| pattern(i, 1425)).collect();
        i += 5;
        frames_then_wait(&mut net, [a, b], sa, frames, &msgs, 10, &mut got);
        assert_eq!(net.nodes[a].ep.session_info(sa).unwrap().pmtu, 1472);
    }
    let info = net.nodes[a].ep.session_info(sa).unwrap();
    let checks = info.stats.black_hole_checks;
    let lost = info.congestion.frame_lost_bytes;
    println!(
        "{i} frames, {} arrived, {lost} bytes lost, {checks} check(s)",
        got.len()
    );
    assert!(lost > 0, "the link lost frames");
    assert!(checks >= 1, "5% loss makes runs of three");
    assert!(checks <= 4, "{checks} checks in 30 s");
}
