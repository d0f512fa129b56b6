//! Two FlowSets over a seeded lossy, reordering, duplicating virtual link
//! with a virtual clock. The "session" here is the minimum the flow layer
//! needs: a fixed congestion window, a fixed ERT0 and TIMEOUT_ALARM.

use super::*;
use crate::wire::chunk::{NextUserData, UserData};
use crate::wire::FragmentControl;
use crate::Rng;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Ud {
        fra: FragmentControl,
        abandon: bool,
        fin: bool,
        flow: u64,
        sn: u64,
        off: u64,
        opts: Option<Vec<u8>>,
        data: Vec<u8>,
    },
    Nud {
        fra: FragmentControl,
        abandon: bool,
        fin: bool,
        opts: Option<Vec<u8>>,
        data: Vec<u8>,
    },
    Bitmap {
        flow: u64,
        blocks: u64,
        cum: u64,
        bits: Vec<u8>,
    },
    Range {
        flow: u64,
        blocks: u64,
        cum: u64,
        ranges: Vec<u8>,
    },
    Probe {
        flow: u64,
    },
    Exc {
        flow: u64,
        code: u64,
    },
}

impl Owned {
    fn from(c: &Chunk<'_>) -> Owned {
        match c {
            Chunk::UserData(u) => Owned::Ud {
                fra: u.fragment_control,
                abandon: u.abandon,
                fin: u.final_,
                flow: u.flow_id,
                sn: u.sequence_number,
                off: u.fsn_offset,
                opts: u.options.map(<[u8]>::to_vec),
                data: u.data.to_vec(),
            },
            Chunk::NextUserData(u) => Owned::Nud {
                fra: u.fragment_control,
                abandon: u.abandon,
                fin: u.final_,
                opts: u.options.map(<[u8]>::to_vec),
                data: u.data.to_vec(),
            },
            Chunk::BitmapAck {
                flow_id,
                buffer_blocks_available,
                cumulative_ack,
                bitmap,
            } => Owned::Bitmap {
                flow: *flow_id,
                blocks: *buffer_blocks_available,
                cum: *cumulative_ack,
                bits: bitmap.to_vec(),
            },
            Chunk::RangeAck {
                flow_id,
                buffer_blocks_available,
                cumulative_ack,
                ranges,
            } => Owned::Range {
                flow: *flow_id,
                blocks: *buffer_blocks_available,
                cum: *cumulative_ack,
                ranges: ranges.to_vec(),
            },
            Chunk::BufferProbe { flow_id } => Owned::Probe { flow: *flow_id },
            Chunk::FlowException { flow_id, exception } => Owned::Exc {
                flow: *flow_id,
                code: *exception,
            },
            other => panic!("flow layer emitted {other:?}"),
        }
    }

    fn chunk(&self) -> Chunk<'_> {
        match self {
            Owned::Ud {
                fra,
                abandon,
                fin,
                flow,
                sn,
                off,
                opts,
                data,
            } => Chunk::UserData(UserData {
                fragment_control: *fra,
                abandon: *abandon,
                final_: *fin,
                flow_id: *flow,
                sequence_number: *sn,
                fsn_offset: *off,
                options: opts.as_deref(),
                data,
            }),
            Owned::Nud {
                fra,
                abandon,
                fin,
                opts,
                data,
            } => Chunk::NextUserData(NextUserData {
                fragment_control: *fra,
                abandon: *abandon,
                final_: *fin,
                options: opts.as_deref(),
                data,
            }),
            Owned::Bitmap {
                flow,
                blocks,
                cum,
                bits,
            } => Chunk::BitmapAck {
                flow_id: *flow,
                buffer_blocks_available: *blocks,
                cumulative_ack: *cum,
                bitmap: bits,
            },
            Owned::Range {
                flow,
                blocks,
                cum,
                ranges,
            } => Chunk::RangeAck {
                flow_id: *flow,
                buffer_blocks_available: *blocks,
                cumulative_ack: *cum,
                ranges,
            },
            Owned::Probe { flow } => Chunk::BufferProbe { flow_id: *flow },
            Owned::Exc { flow, code } => Chunk::FlowException {
                flow_id: *flow,
                exception: *code,
            },
        }
    }
}

struct Sink {
    cap: usize,
    used: usize,
    chunks: Vec<Owned>,
}

impl Sink {
    fn new(cap: usize) -> Sink {
        Sink {
            cap,
            used: 0,
            chunks: Vec::new(),
        }
    }
}

impl ChunkSink for Sink {
    fn remaining(&self) -> usize {
        self.cap - self.used
    }

    fn push(&mut self, chunk: &Chunk<'_>) -> bool {
        assert!(chunk.is_flow_chunk(), "flow chunk: {chunk:?}");
        let size = chunk.encoded_len();
        assert!(size <= self.remaining(), "flow layer overfilled the packet");
        self.used += size;
        self.chunks.push(Owned::from(chunk));
        true
    }
}

struct Link {
    q: Vec<(Instant, u64, Vec<Owned>)>,
    seq: u64,
    loss: f64,
    dup: f64,
    delay: Duration,
    jitter_us: u64,
    /// Probability that a packet gets the random extra delay.
    reorder: f64,
    up: bool,
    packets: u64,
    /// Chunk bytes of each packet that carried user data.
    data_packet_sizes: Vec<usize>,
}

struct Peer {
    fs: FlowSet,
    timeout: Option<Instant>,
    msgs: Vec<(RecvFlowId, Vec<u8>)>,
    events: Vec<FlowEvent>,
}

struct Net {
    now: Instant,
    rng: Rng,
    p: [Peer; 2],
    links: [Link; 2],
    cwnd: usize,
    ert0: Duration,
    mtu: usize,
    /// Extra wake-up so a test can act at a given virtual time.
    horizon: Option<Instant>,
}

const A: usize = 0;
const B: usize = 1;

impl Net {
    fn new(seed: u8, a: FlowConfig, b: FlowConfig, loss: f64, dup: f64, jitter_ms: u64) -> Net {
        let link = || Link {
            q: Vec::new(),
            seq: 0,
            loss,
            dup,
            delay: Duration::from_millis(10),
            jitter_us: jitter_ms * 1000,
            reorder: 1.0,
            up: true,
            packets: 0,
            data_packet_sizes: Vec::new(),
        };
        let peer = |cfg| Peer {
            fs: FlowSet::new(cfg),
            timeout: None,
            msgs: Vec::new(),
            events: Vec::new(),
        };
        let mut p = [peer(a), peer(b)];
        for p in &mut p {
            p.fs.set_ert0(Duration::from_millis(300));
        }
        Net {
            now: Instant::now(),
            rng: Rng::from_seed([seed; 32]),
            p,
            links: [link(), link()],
            cwnd: 64 * 1024,
            ert0: Duration::from_millis(300),
            mtu: 1200,
            horizon: None,
        }
    }

    fn send_from(&mut self, i: usize) {
        for _ in 0..1000 {
            let now = self.now;
            let mut s = Sink::new(self.mtu);
            let p = &mut self.p[i];
            p.fs.write_acks(now, &mut s);
            let budget = self.cwnd.saturating_sub(p.fs.outstanding_bytes());
            let w = p.fs.write_data(now, &mut s, budget);
            if w > 0 {
                p.timeout = Some(now + self.ert0);
            }
            if s.chunks.is_empty() {
                return;
            }
            let l = &mut self.links[i];
            l.packets += 1;
            if w > 0 {
                l.data_packet_sizes.push(s.used);
            }
            if !l.up || self.rng.f64() < l.loss {
                continue;
            }
            let copies = if self.rng.f64() < l.dup { 2 } else { 1 };
            for _ in 0..copies {
                let j = if l.jitter_us > 0 && self.rng.f64() < l.reorder {
                    self.rng.u64() % l.jitter_us
                } else {
                    0
                };
                l.q.push((
                    now + l.delay + Duration::from_micros(j),
                    l.seq,
                    s.chunks.clone(),
                ));
                l.seq += 1;
            }
        }
        panic!("transmit loop did not terminate");
    }

    fn receive(&mut self, i: usize, chunks: &[Owned]) {
        let now = self.now;
        let p = &mut self.p[i];
        p.fs.begin_packet(now);
        for c in chunks {
            p.fs.handle_chunk(now, &c.chunk());
        }
        p.fs.end_packet(now);
        let s = p.fs.take_ack_summary();
        if s.acks_received > 0 {
            p.timeout = (p.fs.outstanding_bytes() > 0).then(|| now + self.ert0);
        }
    }

    fn drain_events(&mut self) {
        for p in &mut self.p {
            while let Some(ev) = p.fs.poll_event() {
                match ev {
                    FlowEvent::Message { flow, data } => {
                        p.msgs.push((flow, data.clone()));
                        p.fs.recycle(data);
                    }
                    e => p.events.push(e),
                }
            }
        }
    }

    /// Process everything due now; returns the next wake-up.
    fn step(&mut self) -> Option<Instant> {
        loop {
            let mut best: Option<(usize, usize)> = None;
            for (li, l) in self.links.iter().enumerate() {
                for (qi, (t, s, _)) in l.q.iter().enumerate() {
                    if *t > self.now {
                        continue;
                    }
                    let better = match best {
                        None => true,
                        Some((bl, bq)) => {
                            let (bt, bs, _) = &self.links[bl].q[bq];
                            (t, s) < (bt, bs)
                        }
                    };
                    if better {
                        best = Some((li, qi));
                    }
                }
            }
            let Some((li, qi)) = best else { break };
            let (_, _, chunks) = self.links[li].q.swap_remove(qi);
            self.receive(1 - li, &chunks);
        }
        let now = self.now;
        for p in &mut self.p {
            if p.timeout.is_some_and(|t| t <= now) {
                p.timeout = None;
                p.fs.on_retransmit_timeout(now);
            }
            if p.fs.poll_timeout().is_some_and(|t| t <= now) {
                p.fs.handle_timeout(now);
            }
        }
        self.drain_events();
        self.send_from(A);
        self.send_from(B);
        self.drain_events();
        let mut next: Option<Instant> = None;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                next = Some(next.map_or(x, |n| n.min(x)));
            }
        };
        for l in &self.links {
            min(l.q.iter().map(|e| e.0).min());
        }
        for p in &self.p {
            min(p.timeout);
            min(p.fs.poll_timeout());
        }
        min(self.horizon.filter(|&h| h > self.now));
        next
    }

    /// Step until `done` or idle; `app` runs before each step. Fails on
    /// livelock (too many steps).
    fn run(&mut self, max_steps: usize, mut app: impl FnMut(&mut Net) -> bool) {
        for _ in 0..max_steps {
            if app(self) {
                return;
            }
            let next = self.step();
            if app(self) {
                return;
            }
            if let Some(t) = next {
                self.now = self.now.max(t);
            }
        }
        panic!("simulation did not finish in {max_steps} steps");
    }

    fn events(&self, i: usize) -> &[FlowEvent] {
        &self.p[i].events
    }
}

fn payload(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

#[test]
fn reliable_bulk_over_lossy_reordering_duplicating_link() {
    let mut net = Net::new(
        1,
        FlowConfig::default(),
        FlowConfig::default(),
        0.05,
        0.03,
        15,
    );
    let flow = net.p[A].fs.open(b"bulk", None).unwrap();
    let mut rng = Rng::from_seed([9; 32]);
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    while total < 2 << 20 {
        let len = (rng.u32() % 9000) as usize;
        let m = payload(&mut rng, len);
        net.p[A]
            .fs
            .send(net.now, flow, &m, Reliability::Reliable)
            .unwrap();
        total += len;
        sent.push(m);
    }
    net.p[A].fs.close(flow);
    net.run(200_000, |n| {
        n.events(A).contains(&FlowEvent::SendFlowComplete { flow })
            && n.events(B)
                .iter()
                .any(|e| matches!(e, FlowEvent::RecvFlowComplete { .. }))
    });
    let got: Vec<Vec<u8>> = net.p[B].msgs.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "messages differ");
    let sa = net.p[A].fs.stats();
    let sb = net.p[B].fs.stats();
    assert!(sa.retransmissions > 0, "5% loss must cause retransmissions");
    assert!(sb.duplicates > 0, "duplication must be suppressed");
    assert_eq!(sb.gaps, 0);
    assert_eq!(net.p[A].fs.queued_bytes(), 0);
    assert_eq!(net.p[A].fs.outstanding_bytes(), 0);
    assert!(
        matches!(net.events(B)[0], FlowEvent::IncomingFlow { ref metadata, .. } if metadata == b"bulk")
    );
    // Linger then reclaim (3.6.2.11, 3.6.3.8).
    assert_eq!(net.p[A].fs.send_flow_count(), 1);
    assert_eq!(net.p[B].fs.recv_flow_count(), 1);
    let later = net.now + Duration::from_secs(131);
    net.now = later;
    net.p[A].fs.handle_timeout(later);
    net.p[B].fs.handle_timeout(later);
    assert_eq!(net.p[A].fs.send_flow_count(), 0);
    assert_eq!(net.p[B].fs.recv_flow_count(), 0);
}

#[test]
fn no_retransmit_flow_delivers_most_and_never_retransmits() {
    let mut net = Net::new(
        2,
        FlowConfig::default(),
        FlowConfig::default(),
        0.05,
        0.01,
        3,
    );
    // Occasional reordering: 1% of packets are late by up to 3 ms.
    net.links[A].reorder = 0.01;
    let flow = net.p[A].fs.open(b"frames", None).unwrap();
    let n_msgs = 4000u32;
    let mut next = 0u32;
    let mut last_send = net.now;
    net.run(200_000, |n| {
        // Pace: 20 frames every millisecond of virtual time.
        if next < n_msgs && n.now >= last_send {
            for _ in 0..20 {
                if next == n_msgs {
                    break;
                }
                let mut m = next.to_be_bytes().to_vec();
                m.resize(1000, 0xab);
                n.p[A]
                    .fs
                    .send(n.now, flow, &m, Reliability::NoRetransmit)
                    .unwrap();
                next += 1;
            }
            last_send = n.now + Duration::from_millis(1);
            if next == n_msgs {
                n.p[A].fs.close(flow);
            }
        }
        n.events(A).contains(&FlowEvent::SendFlowComplete { flow })
    });
    let ids: Vec<u32> = net.p[B]
        .msgs
        .iter()
        .map(|(_, d)| u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    assert!(
        ids.len() * 100 >= n_msgs as usize * 94,
        "delivered {} of {n_msgs}",
        ids.len()
    );
    assert!(ids.len() < n_msgs as usize, "5% loss must lose something");
    let sa = net.p[A].fs.stats();
    assert_eq!(sa.retransmissions, 0);
    assert!(sa.messages_abandoned > 0);
    assert!(net
        .events(B)
        .iter()
        .any(|e| matches!(e, FlowEvent::Gap { .. })));
    assert!(net
        .events(B)
        .iter()
        .any(|e| matches!(e, FlowEvent::RecvFlowComplete { .. })));
}

#[test]
fn deadline_messages_are_abandoned_and_skipped() {
    let mut net = Net::new(3, FlowConfig::default(), FlowConfig::default(), 0.0, 0.0, 0);
    let flow = net.p[A].fs.open(b"rt", None).unwrap();
    let dl = Reliability::Deadline(Duration::from_millis(200));
    net.p[A].fs.send(net.now, flow, b"first", dl).unwrap();
    net.run(1000, |n| n.p[B].msgs.len() == 1);
    // Black out A -> B: these never arrive and expire.
    net.links[A].up = false;
    let big = vec![7u8; 5000];
    net.p[A].fs.send(net.now, flow, b"lost-1", dl).unwrap();
    net.p[A].fs.send(net.now, flow, &big, dl).unwrap();
    let t0 = net.now;
    net.run(10_000, |n| n.now >= t0 + Duration::from_millis(500));
    net.links[A].up = true;
    net.p[A].fs.send(net.now, flow, b"after", dl).unwrap();
    net.p[A].fs.close(flow);
    net.run(10_000, |n| {
        n.events(A).contains(&FlowEvent::SendFlowComplete { flow })
    });
    let got: Vec<&[u8]> = net.p[B].msgs.iter().map(|(_, d)| &d[..]).collect();
    assert_eq!(got, vec![&b"first"[..], &b"after"[..]]);
    assert_eq!(net.p[A].fs.stats().messages_abandoned, 2);
    let ev = net.events(B);
    assert!(ev.iter().any(|e| matches!(e, FlowEvent::Gap { .. })));
    assert!(ev
        .iter()
        .any(|e| matches!(e, FlowEvent::RecvFlowComplete { .. })));
    assert_eq!(net.p[A].fs.queued_bytes(), 0);
}

#[test]
fn large_messages_fragment_and_reassemble() {
    let mut net = Net::new(
        4,
        FlowConfig::default(),
        FlowConfig::default(),
        0.05,
        0.02,
        10,
    );
    let flow = net.p[A].fs.open(b"big", None).unwrap();
    let mut rng = Rng::from_seed([4; 32]);
    let sizes = [100_000usize, 0, 1, 1199, 1200, 5000, 256 * 1024, 3];
    let sent: Vec<Vec<u8>> = sizes.iter().map(|&s| payload(&mut rng, s)).collect();
    for m in &sent {
        net.p[A]
            .fs
            .send(net.now, flow, m, Reliability::Reliable)
            .unwrap();
    }
    assert_eq!(
        net.p[A].fs.send(
            net.now,
            flow,
            &vec![0; 256 * 1024 + 1],
            Reliability::Reliable
        ),
        Err(SendError::TooLarge)
    );
    net.p[A].fs.close(flow);
    net.run(100_000, |n| {
        n.events(A).contains(&FlowEvent::SendFlowComplete { flow })
    });
    let got: Vec<Vec<u8>> = net.p[B].msgs.iter().map(|(_, d)| d.clone()).collect();
    assert!(got == sent);
}

/// NoRetransmit fragments follow the path's chunk space; reliable ones keep
/// the base size. When the path shrinks, frames queued at the larger size
/// are abandoned when they come up (never pushed into a packet that cannot
/// hold them: the sink asserts it), those already in flight are left to
/// arrive, and frames queued after the change flow on.
#[test]
fn no_retransmit_fragments_follow_the_path_and_survive_a_fallback() {
    let base = FlowConfig::default().max_chunk_space;
    let mut net = Net::new(5, FlowConfig::default(), FlowConfig::default(), 0.0, 0.0, 0);
    let path = base + 272; // a 1472-byte datagram's chunk space
    net.mtu = path;
    net.p[A].fs.set_path_chunk_space(path, path);
    let frames = net.p[A].fs.open(b"frames", None).unwrap();
    let bulk = net.p[A].fs.open(b"bulk", None).unwrap();
    // Acknowledged flows: no startup options in the fragment size.
    for f in [frames, bulk] {
        net.p[A]
            .fs
            .send(net.now, f, b"hello", Reliability::Reliable)
            .unwrap();
    }
    net.run(1000, |n| {
        n.p[B].msgs.len() == 2 && n.p[A].fs.queued_bytes() == 0
    });
    let nr = Reliability::NoRetransmit;
    let big = net.p[A].fs.max_unfragmented(frames, nr).unwrap();
    assert_eq!(big, path - 11, "one-byte flow id, sn and offset below 2^21");
    let small = net.p[A]
        .fs
        .max_unfragmented(frames, Reliability::Reliable)
        .unwrap();
    assert_eq!(small, base - 11);
    // A window of four fragments: four frames in flight, the rest queued.
    net.cwnd = 4 * (big + 16);
    let frame = |i: u32| {
        let mut m = i.to_be_bytes().to_vec();
        m.resize(big, 0xab);
        m
    };
    for i in 0..20 {
        net.p[A].fs.send(net.now, frames, &frame(i), nr).unwrap();
    }
    let two = vec![0x5a; 2 * big];
    net.p[A].fs.send(net.now, frames, &two, nr).unwrap();
    let reliable: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 3000]).collect();
    for m in &reliable {
        net.p[A]
            .fs
            .send(net.now, bulk, m, Reliability::Reliable)
            .unwrap();
    }
    net.send_from(A);
    let sent_before = net.p[A].fs.stats().fragments_sent;
    // Black-hole detection fell back to the base size.
    net.mtu = base;
    net.p[A].fs.set_path_chunk_space(base, base);
    assert_eq!(net.p[A].fs.max_unfragmented(frames, nr), Some(small));
    net.cwnd = 64 * 1024;
    net.run(10_000, |n| n.p[A].fs.queued_bytes() == 0);
    // Frames queued now are cut at the base size and arrive.
    let after = vec![0xcd; big];
    for _ in 0..5 {
        net.p[A].fs.send(net.now, frames, &after, nr).unwrap();
    }
    net.p[A].fs.close(frames);
    net.p[A].fs.close(bulk);
    net.run(10_000, |n| {
        n.events(A)
            .iter()
            .filter(|e| matches!(e, FlowEvent::SendFlowComplete { .. }))
            .count()
            == 2
    });
    let got = |len: usize| -> Vec<Vec<u8>> {
        let msgs = net.p[B].msgs.iter().skip(2);
        msgs.filter(|(_, d)| d.len() == len)
            .map(|(_, d)| d.clone())
            .collect()
    };
    // The frames in flight at the fallback arrived (the link kept them);
    // every other frame of the old size was abandoned, none retransmitted.
    let in_flight = got(big).iter().filter(|d| d[0] != 0xcd).count() as u32;
    assert!(
        in_flight > 0 && u64::from(in_flight) < sent_before,
        "{in_flight}"
    );
    let want: Vec<Vec<u8>> = (0..in_flight).map(frame).collect();
    assert_eq!(got(big)[..in_flight as usize], want[..]);
    assert_eq!(got(2 * big), Vec::<Vec<u8>>::new());
    let st = net.p[A].fs.stats();
    assert_eq!(st.abandoned_path_mtu, 21 - u64::from(in_flight));
    assert_eq!(st.retransmissions, 0);
    assert_eq!(got(big)[in_flight as usize..], vec![after.clone(); 5][..]);
    // Reliable data was never touched.
    assert_eq!(got(3000), reliable);
    assert!(net
        .events(B)
        .iter()
        .any(|e| matches!(e, FlowEvent::Gap { .. })));
}

/// Arrival-order delivery over loss and reordering, then also duplication,
/// with messages of one to a dozen fragments: each is delivered once,
/// whole, as soon as it is complete.
#[test]
fn arrival_order_delivery() {
    for (seed, loss, dup, big) in [(5, 0.08, 0.0, 3000), (7, 0.05, 0.05, 14_000)] {
        arrival_order_delivery_with(seed, loss, dup, big);
    }
}

fn arrival_order_delivery_with(seed: u8, loss: f64, dup: f64, big: usize) {
    let b = FlowConfig {
        accept: AcceptPolicy::Auto(Delivery::ArrivalOrder),
        ..FlowConfig::default()
    };
    let mut net = Net::new(seed, FlowConfig::default(), b, loss, dup, 5);
    let flow = net.p[A].fs.open(b"any", None).unwrap();
    let n_msgs = 600u32;
    for i in 0..n_msgs {
        let mut m = i.to_be_bytes().to_vec();
        // Every 7th message spans fragments.
        m.resize(if i % 7 == 0 { big } else { 300 }, i as u8);
        net.p[A]
            .fs
            .send(net.now, flow, &m, Reliability::Reliable)
            .unwrap();
    }
    net.p[A].fs.close(flow);
    net.run(100_000, |n| {
        n.events(A).contains(&FlowEvent::SendFlowComplete { flow })
    });
    let ids: Vec<u32> = net.p[B]
        .msgs
        .iter()
        .map(|(_, d)| u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, (0..n_msgs).collect::<Vec<_>>());
    assert!(ids != sorted, "loss must reorder arrival-order delivery");
    // A message of several fragments, too, overtakes one sent before it
    // as soon as its last fragment is in, not when the flow catches up.
    let overtook = ids
        .iter()
        .enumerate()
        .any(|(k, &i)| i % 7 == 0 && ids[k + 1..].iter().any(|&j| j < i));
    assert!(overtook, "no multi-fragment message was delivered early");
    for (_, d) in &net.p[B].msgs {
        let i = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        assert_eq!(d.len(), if i % 7 == 0 { big } else { 300 });
        assert!(d[4..].iter().all(|&x| x == i as u8));
    }
}

/// Fragments arriving in order go into one buffer, which is delivered as
/// the message: once a flow has delivered a message as large as the ones
/// that follow (the first sets the room a message's buffer is taken
/// with), nothing more is copied together, and every message is intact.
#[test]
fn messages_received_in_order_are_delivered_without_a_second_copy() {
    let b = FlowConfig {
        accept: AcceptPolicy::Auto(Delivery::ArrivalOrder),
        ..FlowConfig::default()
    };
    let mut net = Net::new(9, FlowConfig::default(), b, 0.0, 0.0, 0);
    let flow = net.p[A].fs.open(b"frames", None).unwrap();
    let mut rng = Rng::from_seed([9; 32]);
    let sizes = (0..60).map(|i| {
        if i == 0 {
            60_000
        } else {
            1 + (i * 7919) % 60_000
        }
    });
    let sent: Vec<Vec<u8>> = sizes.map(|n| payload(&mut rng, n)).collect();
    for m in &sent {
        net.p[A]
            .fs
            .send(net.now, flow, m, Reliability::NoRetransmit)
            .unwrap();
    }
    net.run(100_000, |n| n.p[B].msgs.len() == sent.len());
    let got: Vec<Vec<u8>> = net.p[B].msgs.iter().map(|(_, d)| d.clone()).collect();
    assert!(got == sent);
    assert_eq!(net.p[B].fs.stats().reassembly_copied_bytes, 60_000);
}

/// A message's buffer is charged for its room from its first fragment on,
/// so a sender cannot make fragments of a few bytes hold large buffers for
/// the charge of those bytes; and only a message that begins in an empty
/// receive buffer gets one (several, charged ahead of their data, could
/// fill the flow's caps and keep out a fragment it waits for: the lossy
/// `large_messages_fragment_and_reassemble` stalled that way).
#[test]
fn a_message_buffer_is_charged_for_its_room() {
    let now = Instant::now();
    let mut fs = FlowSet::new(FlowConfig {
        accept: AcceptPolicy::Auto(Delivery::ArrivalOrder),
        ..FlowConfig::default()
    });
    let frag = |sn: u64, fra: FragmentControl, off: u64, data: &[u8]| {
        let mut c = ud(1, sn, off, None, data);
        if let Owned::Ud {
            fra: f, opts: o, ..
        } = &mut c
        {
            *f = fra;
            if sn == 1 {
                *o = Some(opts(Some(b"m"), None));
            }
        }
        c
    };
    // A 50,000-byte message in 50 fragments, in order.
    for sn in 1..=50 {
        let fra = match sn {
            1 => FragmentControl::Begin,
            50 => FragmentControl::End,
            _ => FragmentControl::Middle,
        };
        inject(&mut fs, now, &[frag(sn, fra, sn, &[sn as u8; 1000])]);
    }
    let Some(FlowEvent::IncomingFlow { .. }) = fs.poll_event() else {
        panic!("no flow")
    };
    let Some(FlowEvent::Message { data, .. }) = fs.poll_event() else {
        panic!("no message")
    };
    assert_eq!(data.len(), 50_000);
    assert!(data
        .chunks(1000)
        .zip(1u8..)
        .all(|(c, i)| c.iter().all(|&x| x == i)));
    fs.recycle(data);
    assert_eq!(fs.recv_held_total, 0);
    // Messages that begin with one byte and never end: the first, in an
    // empty buffer, takes a message buffer and is charged for all of it;
    // the others wait in fragment buffers.
    for k in 0..100u64 {
        let sn = 51 + 2 * k;
        inject(
            &mut fs,
            now,
            &[frag(sn, FragmentControl::Begin, sn - 50, b"x")],
        );
        let held = fs.recv_buffer_memory();
        assert!(
            held <= fs.recv_held_total,
            "buffers hold {held} bytes, charged {}",
            fs.recv_held_total
        );
        if k == 0 {
            assert!(fs.recv_held_total >= 50_000);
        }
    }
    let cfg = FlowConfig::default();
    assert!(fs.recv_held_total < 50_000 + 100 * (cfg.max_chunk_space + 2 * ENTRY_OVERHEAD) + 16384);
}

#[test]
fn metadata_and_return_association() {
    let mut net = Net::new(6, FlowConfig::default(), FlowConfig::default(), 0.0, 0.0, 0);
    let fa = net.p[A].fs.open(b"request", None).unwrap();
    net.p[A]
        .fs
        .send(net.now, fa, b"ping", Reliability::Reliable)
        .unwrap();
    net.run(1000, |n| n.p[B].msgs.len() == 1);
    let FlowEvent::IncomingFlow {
        flow: rb,
        metadata,
        return_association,
    } = &net.events(B)[0]
    else {
        panic!("no incoming flow")
    };
    let rb = *rb;
    assert_eq!(metadata, b"request");
    assert_eq!(*return_association, None);
    assert_eq!(
        net.p[B].fs.open(b"x", Some(RecvFlowId(999))),
        Err(OpenError::BadReturnAssociation)
    );
    let fb = net.p[B].fs.open(b"response", Some(rb)).unwrap();
    net.p[B]
        .fs
        .send(net.now, fb, b"pong", Reliability::Reliable)
        .unwrap();
    net.run(1000, |n| n.p[A].msgs.len() == 1);
    assert!(net.events(A).iter().any(|e| matches!(e,
        FlowEvent::IncomingFlow { metadata, return_association: Some(f), .. }
            if metadata == b"response" && *f == fa)));
    assert_eq!(net.p[A].msgs[0].1, b"pong");
}

/// Feed one packet of chunks into a FlowSet.
fn inject(fs: &mut FlowSet, now: Instant, chunks: &[Owned]) {
    fs.begin_packet(now);
    for c in chunks {
        fs.handle_chunk(now, &c.chunk());
    }
    fs.end_packet(now);
}

fn ud(flow: u64, sn: u64, off: u64, opts: Option<Vec<u8>>, data: &[u8]) -> Owned {
    Owned::Ud {
        fra: FragmentControl::Whole,
        abandon: false,
        fin: false,
        flow,
        sn,
        off,
        opts,
        data: data.to_vec(),
    }
}

fn opts(meta: Option<&[u8]>, assoc: Option<u64>) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(m) = meta {
        codec::encode_startup_options(&mut v, m, assoc);
    } else {
        if let Some(a) = assoc {
            codec::vlu_push(&mut v, (1 + codec::vlu_len(a)) as u64);
            v.push(0x0a);
            codec::vlu_push(&mut v, a);
        }
        v.push(0);
    }
    v
}

fn acks_of(fs: &mut FlowSet, now: Instant) -> Vec<Owned> {
    let mut s = Sink::new(1200);
    fs.write_acks(now, &mut s);
    s.chunks
}

#[test]
fn flow_without_metadata_is_rejected_with_code_zero() {
    let now = Instant::now();
    let mut fs = FlowSet::new(FlowConfig::default());
    inject(&mut fs, now, &[ud(5, 1, 1, None, b"x")]);
    assert_eq!(fs.poll_event(), None, "not announced");
    let acks = acks_of(&mut fs, now);
    assert_eq!(acks[0], Owned::Exc { flow: 5, code: 0 });
    assert!(matches!(
        acks[1],
        Owned::Bitmap {
            flow: 5,
            cum: 1,
            ..
        }
    ));
    // Options present but without metadata: also rejected.
    inject(&mut fs, now, &[ud(6, 1, 1, Some(opts(None, None)), b"x")]);
    assert_eq!(acks_of(&mut fs, now)[0], Owned::Exc { flow: 6, code: 0 });
    // Unknown option type below 8192: rejected.
    inject(
        &mut fs,
        now,
        &[ud(7, 1, 1, Some(vec![0x02, 0x21, 0x00, 0x00]), b"x")],
    );
    assert_eq!(acks_of(&mut fs, now)[0], Owned::Exc { flow: 7, code: 0 });
    assert_eq!(fs.stats().flows_rejected_auto, 3);
    assert_eq!(fs.poll_event(), None);
}

#[test]
fn bad_return_association_is_rejected() {
    let now = Instant::now();
    let mut fs = FlowSet::new(FlowConfig::default());
    // Names no sending flow of ours.
    inject(
        &mut fs,
        now,
        &[ud(5, 1, 1, Some(opts(Some(b"m"), Some(99))), b"x")],
    );
    assert_eq!(fs.poll_event(), None);
    assert_eq!(acks_of(&mut fs, now)[0], Owned::Exc { flow: 5, code: 0 });
    // Names a sending flow that is CLOSING, not OPEN.
    let mine = fs.open(b"mine", None).unwrap();
    fs.close(mine);
    inject(
        &mut fs,
        now,
        &[ud(6, 1, 1, Some(opts(Some(b"m"), Some(mine.0))), b"x")],
    );
    assert_eq!(fs.poll_event(), None);
    assert_eq!(acks_of(&mut fs, now)[0], Owned::Exc { flow: 6, code: 0 });
    // Names an OPEN sending flow: accepted.
    let open = fs.open(b"open", None).unwrap();
    inject(
        &mut fs,
        now,
        &[ud(7, 1, 1, Some(opts(Some(b"m"), Some(open.0))), b"x")],
    );
    assert!(matches!(fs.poll_event(),
        Some(FlowEvent::IncomingFlow { return_association: Some(f), .. }) if f == open));
}

#[test]
fn application_reject_reaches_sender_and_both_ends_finish() {
    let b = FlowConfig {
        accept: AcceptPolicy::Manual,
        ..FlowConfig::default()
    };
    let mut net = Net::new(7, FlowConfig::default(), b, 0.02, 0.0, 3);
    let flow = net.p[A].fs.open(b"unwanted", None).unwrap();
    for _ in 0..50 {
        net.p[A]
            .fs
            .send(net.now, flow, &[1u8; 2000], Reliability::Reliable)
            .unwrap();
    }
    net.run(1000, |n| !n.events(B).is_empty());
    let FlowEvent::IncomingFlow { flow: rf, .. } = net.events(B)[0] else {
        panic!()
    };
    net.p[B].fs.reject(rf, 7);
    net.run(100_000, |n| {
        n.events(A).contains(&FlowEvent::SendFlowComplete { flow })
    });
    assert!(net
        .events(A)
        .contains(&FlowEvent::SendFlowRejected { flow, code: 7 }));
    assert_eq!(
        net.p[A]
            .fs
            .send(net.now, flow, b"more", Reliability::Reliable),
        Err(SendError::Closed)
    );
    assert!(
        net.p[B].msgs.is_empty(),
        "rejected before acceptance: nothing delivered"
    );
    assert!(net.p[B].fs.stats().exceptions_sent > 0);
    assert_eq!(net.p[A].fs.queued_bytes(), 0);
}

#[test]
fn buffer_probe_while_window_closed_then_reopens() {
    let b = FlowConfig {
        accept: AcceptPolicy::Manual,
        recv_buffer_per_flow: 8 * 1024,
        ..FlowConfig::default()
    };
    let mut net = Net::new(8, FlowConfig::default(), b, 0.0, 0.0, 0);
    let flow = net.p[A].fs.open(b"slow", None).unwrap();
    let mut rng = Rng::from_seed([8; 32]);
    let sent: Vec<Vec<u8>> = (0..40).map(|_| payload(&mut rng, 1500)).collect();
    for m in &sent {
        net.p[A]
            .fs
            .send(net.now, flow, m, Reliability::Reliable)
            .unwrap();
    }
    let t0 = net.now;
    net.horizon = Some(t0 + Duration::from_secs(10));
    net.run(10_000, |n| n.now >= t0 + Duration::from_secs(10));
    assert!(net.p[B].msgs.is_empty());
    let probes = net.p[A].fs.stats().buffer_probes_sent;
    // Immediately on closing, then backing off from 1 s: at 0, 1, 3, 7 s.
    assert!((2..=6).contains(&probes), "probes {probes}");
    // The receiver holds at most its hard cap; the rest waits at the sender.
    assert!(net.p[B].fs.recv_held_total <= 8 * 1024 + 4 * 1024 + 16 * 1024);
    assert!(net.p[A].fs.queued_bytes() > 20_000);
    let FlowEvent::IncomingFlow { flow: rf, .. } = net.events(B)[0] else {
        panic!()
    };
    net.p[B].fs.accept(rf, Delivery::InOrder);
    net.p[A].fs.close(flow);
    net.horizon = None;
    net.run(10_000, |n| {
        n.events(A).contains(&FlowEvent::SendFlowComplete { flow })
    });
    assert!(
        net.now < t0 + Duration::from_secs(11),
        "reopened by the window update"
    );
    let got: Vec<Vec<u8>> = net.p[B].msgs.iter().map(|(_, d)| d.clone()).collect();
    assert!(got == sent);
    assert_eq!(
        net.p[A].fs.stats().buffer_probes_sent,
        probes,
        "no probes once open"
    );
}

#[test]
fn ack_format_is_the_smaller_one_and_cum_ack_covers_fsn() {
    let now = Instant::now();
    let mut fs = FlowSet::new(FlowConfig::default());
    let m = Some(opts(Some(b"m"), None));
    // Dense scattered: 1..=5, 7, 9, 11, 13 -> bitmap 1 byte vs 8 bytes of ranges.
    let mut pkt = vec![ud(1, 1, 1, m.clone(), b"")];
    for sn in [2, 3, 4, 5, 7, 9, 11, 13] {
        pkt.push(ud(1, sn, sn, None, b""));
    }
    inject(&mut fs, now, &pkt);
    let acks = acks_of(&mut fs, now);
    // 7, 9, 11 and 13 wait, each charged for a fragment buffer.
    let cfg = FlowConfig::default();
    let waiting = 4 * (cfg.max_chunk_space + ENTRY_OVERHEAD);
    assert_eq!(
        acks,
        vec![Owned::Bitmap {
            flow: 1,
            blocks: (cfg.recv_buffer_per_flow - waiting).div_ceil(1024) as u64,
            cum: 5,
            bits: vec![0b0101_0101]
        }]
    );
    // Sparse: 1..=5 and 1000 -> ranges (2 bytes + 1) beat 125 bytes of bitmap.
    inject(&mut fs, now, &[ud(1, 1000, 1000, None, b"")]);
    let acks = acks_of(&mut fs, now);
    let Owned::Range { cum, ranges, .. } = &acks[0] else {
        panic!("{acks:?}")
    };
    assert_eq!(*cum, 5);
    let got: Vec<(u64, u64)> = crate::wire::chunk::RangeAckIter::new(*cum, ranges)
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, vec![(7, 7), (9, 9), (11, 11), (13, 13), (1000, 1000)]);
    // A forward sequence number moves cumAck over the holes (3.6.3.4).
    inject(&mut fs, now, &[ud(1, 1001, 3, None, b"")]);
    let acks = acks_of(&mut fs, now);
    let (Owned::Bitmap { cum, .. } | Owned::Range { cum, .. }) = &acks[0] else {
        panic!()
    };
    assert!(*cum >= 998);
    assert_eq!(*cum, 998);
    assert!(fs.stats().gaps > 0);
}

#[test]
fn ack_timing_delayed_and_obligatory() {
    let now = Instant::now();
    let mut fs = FlowSet::new(FlowConfig::default());
    let m = Some(opts(Some(b"m"), None));
    // New flow: immediate.
    inject(&mut fs, now, &[ud(1, 1, 1, m, b"a")]);
    assert!(fs.wants_control(now, false));
    assert_eq!(acks_of(&mut fs, now).len(), 1);
    // One in-order packet: delayed by 200 ms.
    inject(&mut fs, now, &[ud(1, 2, 1, None, b"b")]);
    assert!(!fs.wants_control(now, false));
    assert!(acks_of(&mut fs, now).is_empty());
    assert_eq!(fs.ack_deadline(), Some(now + Duration::from_millis(200)));
    let later = now + Duration::from_millis(200);
    assert!(fs.wants_control(later, false));
    assert_eq!(acks_of(&mut fs, later).len(), 1);
    // Two data packets: obligatory.
    inject(&mut fs, later, &[ud(1, 3, 1, None, b"c")]);
    assert!(!fs.wants_control(later, false));
    inject(&mut fs, later, &[ud(1, 4, 1, None, b"d")]);
    assert!(fs.wants_control(later, false));
    assert_eq!(acks_of(&mut fs, later).len(), 1);
    // A gap: immediate.
    inject(&mut fs, later, &[ud(1, 6, 5, None, b"f")]);
    assert!(fs.wants_control(later, false));
    acks_of(&mut fs, later);
    // A buffer probe: immediate.
    inject(&mut fs, later, &[Owned::Probe { flow: 1 }]);
    assert!(fs.wants_control(later, false));
    // Duplicate: immediate.
    acks_of(&mut fs, later);
    inject(&mut fs, later, &[ud(1, 6, 5, None, b"f")]);
    assert!(fs.wants_control(later, false));
    assert_eq!(fs.stats().duplicates, 1);
}

/// Startup options of a sender without the ack clock option (an older
/// agent): the metadata alone.
fn opts_without_ack_clock(meta: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    codec::vlu_push(&mut v, (1 + meta.len()) as u64);
    v.push(0x00);
    v.extend_from_slice(meta);
    v.push(0);
    v
}

#[test]
fn acks_held_in_a_receive_batch_go_every_fourth_packet_and_at_its_end() {
    let now = Instant::now();
    let mut fs = FlowSet::new(FlowConfig::default());
    let m = Some(opts_without_ack_clock(b"m"));
    inject(&mut fs, now, &[ud(1, 1, 1, m, b"a")]);
    acks_of(&mut fs, now);
    // A gap sets ACK_NOW for every packet (3.6.3.2 steps 8, 14); in a
    // batch the acknowledgement waits for the fourth packet with data.
    for sn in [3, 4, 5] {
        inject(&mut fs, now, &[ud(1, sn, sn - 1, None, b"x")]);
        assert!(!fs.wants_control(now, true), "held after sn {sn}");
        assert!(
            fs.ack_deadline().is_none(),
            "no delayed ack: ACK_NOW is set"
        );
    }
    inject(&mut fs, now, &[ud(1, 6, 5, None, b"x")]);
    assert!(fs.wants_control(now, true), "the fourth packet releases it");
    let acks = acks_of(&mut fs, now);
    let (Owned::Bitmap { cum, .. } | Owned::Range { cum, .. }) = &acks[0] else {
        panic!("{acks:?}")
    };
    assert_eq!(*cum, 1, "sn 2 is still missing");
    // Two more in the batch: held; the batch's end sends them.
    inject(&mut fs, now, &[ud(1, 7, 6, None, b"x")]);
    inject(&mut fs, now, &[ud(1, 8, 7, None, b"x")]);
    assert!(!fs.wants_control(now, true));
    assert!(
        fs.wants_control(now, false),
        "the batch's end sends what was held"
    );
    assert_eq!(acks_of(&mut fs, now).len(), 1);
    assert!(!fs.wants_control(now, false));
    // Outside a batch every packet with a gap is acknowledged at once.
    inject(&mut fs, now, &[ud(1, 9, 8, None, b"x")]);
    assert!(fs.wants_control(now, false));
}

/// A sender whose flows carry the ack clock option gets an acknowledgement
/// per sixteen packets with data in a batch (and at the batch's end);
/// outside a batch, every second packet as before (3.6.3.4.1).
#[test]
fn acks_for_an_ack_clocked_sender_go_every_sixteenth_packet_in_a_batch() {
    let now = Instant::now();
    let mut fs = FlowSet::new(FlowConfig::default());
    let m = Some(opts(Some(b"m"), None));
    assert!(
        codec::parse_options(m.as_deref().unwrap())
            .unwrap()
            .ack_clock
    );
    inject(&mut fs, now, &[ud(1, 1, 1, m, b"a")]);
    acks_of(&mut fs, now);
    for sn in 2..ACK_CLOCK_PACKETS as u64 + 1 {
        inject(&mut fs, now, &[ud(1, sn, sn - 1, None, b"x")]);
        assert!(!fs.wants_control(now, true), "held after sn {sn}");
    }
    inject(&mut fs, now, &[ud(1, 17, 16, None, b"x")]);
    assert!(
        fs.wants_control(now, true),
        "the sixteenth packet releases it"
    );
    assert_eq!(acks_of(&mut fs, now).len(), 1);
    inject(&mut fs, now, &[ud(1, 18, 17, None, b"x")]);
    inject(&mut fs, now, &[ud(1, 19, 18, None, b"x")]);
    assert!(!fs.wants_control(now, true));
    assert!(fs.wants_control(now, false), "the batch's end sends it");
    acks_of(&mut fs, now);
    inject(&mut fs, now, &[ud(1, 20, 19, None, b"x")]);
    assert!(!fs.wants_control(now, false), "one packet: delayed");
    inject(&mut fs, now, &[ud(1, 21, 20, None, b"x")]);
    assert!(
        fs.wants_control(now, false),
        "every second packet outside a batch"
    );
}

#[test]
fn packet_assembly_next_user_data_and_startup_options() {
    let now = Instant::now();
    let mut a = FlowSet::new(FlowConfig::default());
    let mut b = FlowSet::new(FlowConfig::default());
    let f = a.open(b"meta", None).unwrap();
    a.send(now, f, &[5u8; 3000], Reliability::Reliable).unwrap();
    a.send(now, f, b"tail", Reliability::Reliable).unwrap();
    let mut s = Sink::new(5000);
    a.write_data(now, &mut s, usize::MAX);
    let kinds: Vec<_> = s
        .chunks
        .iter()
        .map(|c| match c {
            Owned::Ud {
                opts, fra, sn, off, ..
            } => (true, opts.is_some(), *fra, *sn, *off),
            Owned::Nud { opts, fra, .. } => (false, opts.is_some(), *fra, 0, 0),
            _ => panic!(),
        })
        .collect();
    use FragmentControl::*;
    assert_eq!(
        kinds,
        vec![
            (true, true, Begin, 1, 1),
            (false, false, Middle, 0, 0),
            (false, false, End, 0, 0),
            (false, false, Whole, 0, 0)
        ]
    );
    // Second packet before any ack: options again on the first User Data.
    a.on_retransmit_timeout(now);
    let mut s2 = Sink::new(5000);
    a.write_data(now, &mut s2, usize::MAX);
    assert!(matches!(&s2.chunks[0], Owned::Ud { opts: Some(_), .. }));
    // Deliver and acknowledge: options stop.
    inject(&mut b, now, &s2.chunks);
    let acks = acks_of(&mut b, now);
    inject(&mut a, now, &acks);
    let sum = a.take_ack_summary();
    assert_eq!(sum.acks_received, 1);
    assert_eq!(sum.acked_bytes, s2.used);
    a.send(now, f, b"next", Reliability::Reliable).unwrap();
    let mut s3 = Sink::new(5000);
    a.write_data(now, &mut s3, usize::MAX);
    assert!(matches!(
        &s3.chunks[0],
        Owned::Ud {
            opts: None,
            sn: 5,
            off: 1,
            ..
        }
    ));
    assert_eq!(a.stats().retransmissions, 4);
}

#[test]
fn nack_loss_after_three_and_fsn_update() {
    let now = Instant::now();
    let mut a = FlowSet::new(FlowConfig::default());
    let f = a.open(b"m", None).unwrap();
    for i in 0..6u8 {
        a.send(now, f, &[i; 100], Reliability::NoRetransmit)
            .unwrap();
    }
    // One fragment per packet so each ack can be for a later TSN.
    let mut pkts = Vec::new();
    for _ in 0..6 {
        let mut s = Sink::new(200);
        a.write_data(now, &mut s, usize::MAX);
        pkts.push(s.chunks);
    }
    assert!(a.write_data(now, &mut Sink::new(200), usize::MAX) == 0);
    // Receiver gets 1 and 3..=6 (2 is lost); acks each packet.
    let mut b = FlowSet::new(FlowConfig::default());
    let mut nack_lost = false;
    for (i, p) in pkts.iter().enumerate() {
        if i == 1 {
            continue;
        }
        inject(&mut b, now, p);
        let acks = acks_of(&mut b, now);
        inject(&mut a, now, &acks);
        nack_lost |= a.take_ack_summary().any_nack_loss;
    }
    assert!(nack_lost);
    assert_eq!(a.stats().losses_nack, 1);
    assert_eq!(a.stats().messages_abandoned, 1);
    // Next transmission is an FSN update: abandoned sequence number 2 with
    // fsnOffset 0 (3.6.2.7.1).
    let mut s = Sink::new(1200);
    a.write_data(now, &mut s, usize::MAX);
    assert_eq!(
        s.chunks,
        vec![Owned::Ud {
            fra: FragmentControl::Whole,
            abandon: true,
            fin: false,
            flow: f.0,
            sn: 2,
            off: 0,
            opts: None,
            data: vec![]
        }]
    );
    inject(&mut b, now, &s.chunks);
    let mut delivered = Vec::new();
    while let Some(e) = b.poll_event() {
        if let FlowEvent::Message { data, .. } = e {
            delivered.push(data[0]);
        }
    }
    assert_eq!(delivered, vec![0, 2, 3, 4, 5]);
    assert_eq!(a.stats().retransmissions, 0);
}

#[test]
fn caps_are_enforced() {
    let now = Instant::now();
    let cfg = FlowConfig {
        max_send_flows: 2,
        max_recv_flows: 2,
        max_send_queue_bytes: 10_000,
        max_recv_buffer_total: 20_000,
        recv_buffer_per_flow: 100_000,
        accept: AcceptPolicy::Manual,
        ..FlowConfig::default()
    };
    let mut fs = FlowSet::new(cfg);
    let f1 = fs.open(b"1", None).unwrap();
    fs.open(b"2", None).unwrap();
    assert_eq!(fs.open(b"3", None), Err(OpenError::TooManyFlows));
    assert_eq!(fs.open(&[0; 513], None), Err(OpenError::MetadataTooLarge));
    fs.send(now, f1, &[0; 9000], Reliability::Reliable).unwrap();
    assert_eq!(
        fs.send(now, f1, &[0; 2000], Reliability::Reliable),
        Err(SendError::QueueFull)
    );
    assert_eq!(
        fs.send(
            now,
            f1,
            &[0; 2000],
            Reliability::Deadline(Duration::from_secs(1))
        ),
        Err(SendError::QueueFull)
    );
    fs.send(now, f1, &[0; 2000], Reliability::NoRetransmit)
        .unwrap();
    assert_eq!(fs.stats().drop_send_queue_full, 1);
    assert_eq!(fs.queued_bytes(), 9000);
    // Receiving flows: the third new flow is dropped unacknowledged.
    let m = || Some(opts(Some(b"m"), None));
    inject(&mut fs, now, &[ud(10, 1, 1, m(), b"")]);
    inject(&mut fs, now, &[ud(11, 1, 1, m(), b"")]);
    inject(&mut fs, now, &[ud(12, 1, 1, m(), b"")]);
    assert_eq!(fs.recv_flow_count(), 2);
    assert_eq!(fs.stats().drop_flow_limit, 1);
    // Receive buffer total: flow 10 is suspended (manual accept) and holds
    // at most 20_000 bytes.
    for sn in 2..40 {
        inject(&mut fs, now, &[ud(10, sn, sn - 1, None, &[1; 1000])]);
    }
    assert!(fs.stats().drop_recv_buffer > 0);
    assert!(fs.recv_held_total <= 20_000);
    // Sequence-set ranges cap.
    let mut fs = FlowSet::new(FlowConfig {
        max_recv_ranges: 4,
        ..FlowConfig::default()
    });
    inject(&mut fs, now, &[ud(1, 1, 1, m(), b"")]);
    for sn in [3, 5, 7, 9, 11] {
        inject(&mut fs, now, &[ud(1, sn, sn, None, b"")]);
    }
    assert_eq!(fs.stats().drop_ranges, 2);
}

/// A peer that sends one-byte fragments behind a gap (they wait in the
/// receive buffer for the missing one) makes each hold a fragment buffer:
/// they are charged against the flow's and the session's caps for the
/// memory they hold, not for their byte, so the caps bound memory.
#[test]
fn tiny_fragments_behind_a_gap_are_charged_for_the_memory_they_hold() {
    let now = Instant::now();
    let cfg = FlowConfig::default();
    let mut fs = FlowSet::new(cfg.clone());
    // Sequence number 1 never arrives (fsn 0): everything after it waits.
    inject(
        &mut fs,
        now,
        &[ud(1, 2, 2, Some(opts(Some(b"m"), None)), b"x")],
    );
    for sn in 3..20_000 {
        inject(&mut fs, now, &[ud(1, sn, sn, None, b"x")]);
    }
    let held = fs.recv_buffer_memory();
    assert!(
        held <= fs.recv_held_total,
        "buffers hold {held} bytes, charged {}",
        fs.recv_held_total
    );
    let hard_cap = cfg.recv_buffer_per_flow * 3 / 2 + 16 * 1024;
    assert!(fs.recv_held_total <= hard_cap);
    assert!(fs.stats().drop_recv_buffer > 0);
}

#[test]
fn garbage_chunks_are_counted_not_fatal() {
    let now = Instant::now();
    let mut fs = FlowSet::new(FlowConfig::default());
    let m = Some(opts(Some(b"m"), None));
    // seq 0; fsnOffset 0 without abandon; fsnOffset > seq; bad options;
    // Next User Data without context.
    inject(&mut fs, now, &[ud(1, 0, 0, m.clone(), b"")]);
    inject(&mut fs, now, &[ud(1, 1, 0, m.clone(), b"")]);
    inject(&mut fs, now, &[ud(1, 1, 2, m.clone(), b"")]);
    inject(&mut fs, now, &[ud(1, 1, 1, Some(vec![0x05, 0x00]), b"")]);
    inject(
        &mut fs,
        now,
        &[Owned::Nud {
            fra: FragmentControl::Whole,
            abandon: false,
            fin: false,
            opts: None,
            data: vec![],
        }],
    );
    assert_eq!(fs.stats().drop_malformed, 5);
    assert_eq!(fs.recv_flow_count(), 0);
    // Acks and exceptions for unknown flows are ignored; absurd ack values
    // do not panic.
    let f = fs.open(b"x", None).unwrap();
    fs.send(now, f, b"abc", Reliability::Reliable).unwrap();
    fs.write_data(now, &mut Sink::new(1200), usize::MAX);
    inject(
        &mut fs,
        now,
        &[
            Owned::Range {
                flow: f.0,
                blocks: u64::MAX,
                cum: u64::MAX,
                ranges: vec![0xff, 0xff],
            },
            Owned::Bitmap {
                flow: 77,
                blocks: 0,
                cum: 3,
                bits: vec![0xff],
            },
            Owned::Exc { flow: 78, code: 1 },
        ],
    );
    assert_eq!(fs.outstanding_bytes(), 0);
}

/// A sender offering one 1,000-byte frame every 0.1 ms (every 50th
/// Reliable instead), each sent at once, and acknowledged in pairs
/// `flight(ms)` after it was sent (the path: base delay plus whatever queue
/// stands on it). Returns the time of every late drop and the sequence
/// numbers of the Reliable messages sent.
fn acked_after(flight: impl Fn(u32) -> Duration) -> (Vec<Duration>, Vec<u64>) {
    acked_after_moving(flight, None)
}

/// As [`acked_after`], the session's path changing (`path_changed`) at
/// step `moved` if given.
fn acked_after_moving(
    flight: impl Fn(u32) -> Duration,
    moved: Option<u32>,
) -> (Vec<Duration>, Vec<u64>) {
    let t0 = Instant::now();
    let mut a = FlowSet::new(FlowConfig::default());
    a.set_srtt(Some(Duration::from_micros(200)));
    let f = a.open(b"frames", None).unwrap();
    let step = Duration::from_micros(100);
    // (when acknowledged, sequence number)
    let mut acks: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut drops = Vec::new();
    let mut reliable = Vec::new();
    let mut sent_sn = Vec::new();
    for k in 0..1500u32 {
        let now = t0 + step * k;
        if moved == Some(k) {
            a.path_changed(now);
        }
        while acks.front().is_some_and(|&(t, _)| t <= now) {
            let (_, cum) = acks.pop_front().unwrap();
            a.on_ack(now, f.0, 1024, cum, send::AckBody::Ranges(&[]));
        }
        let rel = if k % 50 == 0 {
            Reliability::Reliable
        } else {
            Reliability::NoRetransmit
        };
        a.send(now, f, &[1; 1000], rel).unwrap();
        let before = a.stats().drop_late;
        let mut s = Sink::new(1 << 20);
        a.write_data(now, &mut s, usize::MAX);
        if a.stats().drop_late > before {
            drops.push(now - t0);
        }
        for c in &s.chunks {
            if let Owned::Ud { sn, data, .. } = c {
                if data.is_empty() {
                    continue;
                }
                sent_sn.push(*sn);
                if k % 50 == 0 {
                    reliable.push(*sn);
                }
            }
        }
        // The receiver acknowledges every second packet.
        if sent_sn.len() >= 2 {
            let cum = *sent_sn.last().unwrap();
            sent_sn.clear();
            let at = now + flight(k);
            // Acknowledgements leave in order.
            let at = acks.back().map_or(at, |&(t, _)| t.max(at));
            acks.push_back((at, cum));
        }
    }
    (drops, reliable)
}

#[test]
fn late_frames_are_dropped_only_while_a_queue_stands_on_the_path() {
    let ms = Duration::from_millis(1);
    let base = Duration::from_micros(200);
    // A clean path, with jitter of up to 3 ms on one acknowledgement in
    // three: no queue stands, nothing is dropped.
    let (drops, reliable) = acked_after(|k| if k % 3 == 0 { base + 3 * ms } else { base });
    assert!(drops.is_empty(), "{drops:?}");
    assert_eq!(reliable.len(), 30);
    // From 50 ms to 100 ms a queue of 5 ms stands on the path: drops
    // begin about an interval (10 ms) after the first delayed
    // acknowledgements come back and come faster (interval / sqrt(count))
    // while it stands; once the queue is gone they stop.
    let queue = |k: u32| {
        if (500..1000).contains(&k) {
            base + 5 * ms
        } else {
            base
        }
    };
    let (drops, reliable) = acked_after(queue);
    assert!(drops.len() >= 5, "{drops:?}");
    assert!(
        drops.iter().all(|&t| t >= 60 * ms && t <= 115 * ms),
        "{drops:?}"
    );
    // Reliable messages are never dropped.
    assert_eq!(reliable.len(), 30);
}

/// A session that moves to a longer path (a direct path of 0.2 ms to a
/// relayed route of 20 ms, a failover) drops no frames as late: the
/// longer round trip is the new path's, not a queue standing on it.
/// Before, the least delay of the old path stayed the base for up to two
/// 10 s windows and the move looked like a standing queue of 20 ms.
#[test]
fn a_longer_path_after_a_move_is_not_a_standing_queue() {
    let ms = Duration::from_millis(1);
    let base = Duration::from_micros(200);
    let path = |k: u32| if k < 500 { base } else { 20 * ms };
    let (drops, reliable) = acked_after_moving(path, Some(500));
    assert!(drops.is_empty(), "{drops:?}");
    assert_eq!(reliable.len(), 30);
    // The same delays without the move: a queue that stands from 50 ms
    // on, and the drops of an episode.
    let (drops, _) = acked_after_moving(path, None);
    assert!(!drops.is_empty());
}

/// What B received and A's flow statistics after A sent 300 messages
/// (single-fragment and multi-fragment ones) over a lossy, duplicating,
/// reordering link, copied (`send`) or handed over (`send_owned`, from a
/// 70,000-byte buffer at varying offsets, as the node hands over TAP
/// reads); for `send_owned` also the distinct buffers the caller held and
/// how many A's pool kept at the end.
fn frames_sent(owned: bool, rel: Reliability) -> (Vec<Vec<u8>>, FlowStats, usize, usize) {
    let mut net = Net::new(
        12,
        FlowConfig::default(),
        FlowConfig::default(),
        0.03,
        0.01,
        3,
    );
    net.links[A].reorder = 0.05;
    let flow = net.p[A].fs.open(b"frames", None).unwrap();
    let mut rng = Rng::from_seed([12; 32]);
    let sent: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let n = if i % 3 == 0 {
                1 + rng.u64() as usize % 1100
            } else {
                2000 + rng.u64() as usize % 60_000
            };
            payload(&mut rng, n)
        })
        .collect();
    let mut buf = vec![0u8; 70_000];
    let mut seen = std::collections::HashSet::new();
    let mut next = 0;
    net.run(400_000, |n| {
        while next < sent.len() && n.p[A].fs.queued_bytes() < 200_000 {
            let m = &sent[next];
            if owned {
                let start = (next * 13) % 200;
                buf[start..start + m.len()].copy_from_slice(m);
                let before = buf.as_ptr();
                seen.insert(before as usize);
                n.p[A]
                    .fs
                    .send_owned(n.now, flow, &mut buf, start..start + m.len(), rel)
                    .unwrap();
                let fragments = n.p[A].fs.max_unfragmented(flow, rel).unwrap() < m.len();
                assert_eq!(buf.as_ptr() != before, fragments, "message {next}");
                assert_eq!(buf.len(), 70_000);
            } else {
                n.p[A].fs.send(n.now, flow, m, rel).unwrap();
            }
            next += 1;
            if next == sent.len() {
                n.p[A].fs.close(flow);
            }
        }
        n.events(A).contains(&FlowEvent::SendFlowComplete { flow })
    });
    let got = net.p[B].msgs.iter().map(|(_, d)| d.clone()).collect();
    (
        got,
        net.p[A].fs.stats(),
        seen.len(),
        net.p[A].fs.pool.frames.len(),
    )
}

/// `send_owned` puts the same chunks on the wire as `send` (the seeded
/// link then loses and delivers the same packets), frames whose fragments
/// are lost are abandoned as a whole either way, and every handed-over
/// buffer comes back: the caller swaps among a few buffers instead of a
/// new one per message.
#[test]
fn owned_frames_cross_like_copied_ones_and_their_buffers_come_back() {
    let (copied, copied_stats, ..) = frames_sent(false, Reliability::NoRetransmit);
    let (got, stats, buffers, kept) = frames_sent(true, Reliability::NoRetransmit);
    assert!(got == copied, "same messages delivered");
    assert_eq!(stats.fragments_sent, copied_stats.fragments_sent);
    assert!(stats.messages_abandoned > 0, "3% loss abandons frames");
    assert_eq!(stats.messages_abandoned, copied_stats.messages_abandoned);
    assert!(
        got.len() < 300 && got.len() > 100,
        "{} delivered",
        got.len()
    );
    assert!(
        (2..=32).contains(&buffers),
        "{buffers} buffers for 200 handed over"
    );
    assert_eq!(
        kept + 1,
        buffers,
        "all but the caller's are back in the pool"
    );
    assert_eq!(stats.frame_buffers_allocated + 1, buffers as u64);
}

/// Reliable messages handed over are retransmitted from the held buffer
/// and all arrive intact.
#[test]
fn owned_reliable_messages_are_retransmitted_from_the_held_buffer() {
    let (copied, ..) = frames_sent(false, Reliability::Reliable);
    let (got, stats, buffers, kept) = frames_sent(true, Reliability::Reliable);
    assert_eq!(got.len(), 300);
    assert!(got == copied);
    assert!(stats.retransmissions > 0);
    assert_eq!(kept + 1, buffers);
}

/// A range outside the buffer, a closed flow and a full queue leave the
/// caller's buffer where it was.
#[test]
fn owned_sends_that_are_refused_keep_the_callers_buffer() {
    let cfg = FlowConfig {
        max_send_queue_bytes: 100_000,
        ..FlowConfig::default()
    };
    let mut fs = FlowSet::new(cfg);
    let now = Instant::now();
    let flow = fs.open(b"frames", None).unwrap();
    let mut buf = vec![7u8; 70_000];
    let p = buf.as_ptr();
    let nr = Reliability::NoRetransmit;
    assert_eq!(
        fs.send_owned(now, flow, &mut buf, 10..70_001, nr),
        Err(SendError::TooLarge)
    );
    fs.send_owned(now, flow, &mut buf, 0..60_000, nr).unwrap();
    assert_ne!(buf.as_ptr(), p, "taken");
    let p = buf.as_ptr();
    assert_eq!(fs.stats().drop_send_queue_full, 0);
    fs.send_owned(now, flow, &mut buf, 0..60_000, nr).unwrap();
    assert_eq!(fs.stats().drop_send_queue_full, 1);
    assert_eq!(buf.as_ptr(), p, "dropped, not taken");
    assert_eq!(
        fs.send_owned(now, flow, &mut buf, 0..60_000, Reliability::Reliable),
        Err(SendError::QueueFull)
    );
    fs.close(flow);
    assert_eq!(
        fs.send_owned(now, flow, &mut buf, 0..100, nr),
        Err(SendError::Closed)
    );
    assert_eq!(buf.as_ptr(), p);
    assert_eq!(fs.queued_bytes(), 60_000);
}

/// A NoRetransmit fragment's bytes are never sent again, so its buffer
/// goes back as soon as it is sent (a handed-over message's when its last
/// fragment is), while its bytes count as queued until the fragment is
/// acknowledged or lost.
#[test]
fn sent_frames_give_their_buffers_back_before_the_acknowledgement() {
    let mut fs = FlowSet::new(FlowConfig::default());
    let now = Instant::now();
    let flow = fs.open(b"frames", None).unwrap();
    let mut buf = vec![1u8; 70_000];
    let nr = Reliability::NoRetransmit;
    fs.send_owned(now, flow, &mut buf, 100..50_100, nr).unwrap();
    fs.send(now, flow, &[2u8; 900], nr).unwrap();
    let mut sink = Sink::new(1200);
    assert!(fs.write_data(now, &mut sink, 1200) > 0);
    assert_eq!(fs.pool.frames.len(), 0, "the message is not all sent");
    let mut packets = 1;
    loop {
        let mut sink = Sink::new(1200);
        if fs.write_data(now, &mut sink, 1200) == 0 {
            break;
        }
        packets += 1;
    }
    assert!(packets > 50_000 / 1200, "{packets} packets");
    assert_eq!(fs.pool.frames.len(), 1, "back once its last fragment went");
    assert_eq!(fs.pool.free.len(), 1, "the copied frame's buffer too");
    assert_eq!(fs.queued_bytes(), 50_900, "counted until acknowledged");
    let lost = fs.on_retransmit_timeout(now);
    assert!(lost.no_retransmit_lost_bytes > 50_000);
    assert_eq!(fs.queued_bytes(), 0);
}

/// Deadlines of several flows: each message is abandoned when its own
/// deadline passes, whichever flow queued it and in whatever order.
#[test]
fn deadlines_of_several_flows_expire_each_in_turn() {
    let mut fs = FlowSet::new(FlowConfig::default());
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let x = fs.open(b"x", None).unwrap();
    let y = fs.open(b"y", None).unwrap();
    fs.send(t0, y, b"late", Reliability::Deadline(ms(200)))
        .unwrap();
    fs.send(t0, x, b"soon", Reliability::Deadline(ms(50)))
        .unwrap();
    fs.send(t0, x, b"never", Reliability::Reliable).unwrap();
    fs.expire_deadlines(t0 + ms(49));
    assert_eq!(fs.stats().messages_abandoned, 0);
    fs.expire_deadlines(t0 + ms(100));
    assert_eq!(fs.stats().messages_abandoned, 1);
    fs.send(t0 + ms(100), x, b"later", Reliability::Deadline(ms(300)))
        .unwrap();
    fs.expire_deadlines(t0 + ms(199));
    assert_eq!(fs.stats().messages_abandoned, 1);
    fs.expire_deadlines(t0 + ms(200));
    assert_eq!(fs.stats().messages_abandoned, 2);
    fs.expire_deadlines(t0 + ms(399));
    assert_eq!(fs.stats().messages_abandoned, 2);
    fs.expire_deadlines(t0 + ms(400));
    assert_eq!(fs.stats().messages_abandoned, 3);
    fs.expire_deadlines(t0 + ms(10_000));
    assert_eq!(fs.stats().messages_abandoned, 3, "the reliable one stays");
}

/// Frames queued back to back fill every packet: the first fragment of
/// each message completes the packet of the one before, behind its short
/// last fragment, so the packets that carry data keep one size (the
/// driver's UDP GSO runs go on across messages; without the fill each of
/// the 60 message boundaries leaves a short packet) and the messages
/// arrive intact. A message queued after the one before was sent starts
/// with a full fragment.
#[test]
fn frames_queued_back_to_back_fill_every_packet() {
    let cfg = FlowConfig::default();
    let mut net = Net::new(13, cfg.clone(), cfg.clone(), 0.0, 0.0, 0);
    net.mtu = cfg.max_chunk_space;
    let flow = net.p[A].fs.open(b"frames", None).unwrap();
    let nr = Reliability::NoRetransmit;
    let frag = net.p[A].fs.max_unfragmented(flow, nr).unwrap();
    let mut rng = Rng::from_seed([13; 32]);
    let sent: Vec<Vec<u8>> = (0..60)
        .map(|_| {
            let n = 2 * frag + rng.u64() as usize % 40_000;
            payload(&mut rng, n)
        })
        .collect();
    let mut buf = vec![0u8; 70_000];
    let mut next = 0;
    net.run(100_000, |n| {
        while next < sent.len() && n.p[A].fs.queued_bytes() < 200_000 {
            let m = &sent[next];
            buf[..m.len()].copy_from_slice(m);
            n.p[A]
                .fs
                .send_owned(n.now, flow, &mut buf, 0..m.len(), nr)
                .unwrap();
            next += 1;
        }
        n.p[B].msgs.len() == sent.len()
    });
    let got: Vec<&Vec<u8>> = net.p[B].msgs.iter().map(|(_, d)| d).collect();
    assert!(got.iter().copied().eq(sent.iter()), "all delivered intact");
    let sizes = &net.links[A].data_packet_sizes;
    let breaks = sizes.windows(2).filter(|w| w[0] != w[1]).count();
    // Where the startup options stop riding along and fragments queued
    // with room for them are sent, a tail too long to fill behind, the
    // last packet.
    assert!(breaks <= 8, "{breaks} size changes: {sizes:?}");
    let full = sizes[sizes.len() / 2];
    assert!(sizes.len() > 1000);

    // Queued into an empty queue, a message's fragments are full again.
    let m = payload(&mut rng, 3 * frag + 100);
    buf[..m.len()].copy_from_slice(&m);
    let before = net.links[A].data_packet_sizes.len();
    net.p[A]
        .fs
        .send_owned(net.now, flow, &mut buf, 0..m.len(), nr)
        .unwrap();
    net.run(10_000, |n| n.p[B].msgs.len() == sent.len() + 1);
    assert_eq!(net.p[B].msgs.last().map(|(_, d)| d), Some(&m));
    let sizes = &net.links[A].data_packet_sizes[before..];
    assert_eq!(sizes.len(), 4);
    assert!(sizes[..3].iter().all(|&s| s == full), "{sizes:?}");
}

/// A budget spent by a frame's last fragment still lets the next frame's
/// first fragment, cut to fill that packet, into it (as a packet's last
/// chunk may overshoot the budget): otherwise that packet and the next,
/// holding only the filler, would both be short. The next packet then
/// waits for budget.
#[test]
fn a_filler_fragment_joins_its_packet_when_the_budget_runs_out_at_the_frame_before() {
    let mut fs = FlowSet::new(FlowConfig::default());
    let now = Instant::now();
    let flow = fs.open(b"frames", None).unwrap();
    let nr = Reliability::NoRetransmit;
    let space = fs.path_space;
    let frag = fs.max_unfragmented(flow, nr).unwrap();
    let mut buf = vec![3u8; 70_000];
    fs.send_owned(now, flow, &mut buf, 0..2 * frag + 300, nr)
        .unwrap();
    fs.send_owned(now, flow, &mut buf, 0..3 * frag, nr).unwrap();
    let mut packet = |budget: usize| {
        let mut sink = Sink::new(space);
        fs.write_data(now, &mut sink, budget);
        sink
    };
    let full = packet(usize::MAX).used;
    assert_eq!(packet(usize::MAX).used, full);
    // Budget for the 300-byte last fragment only.
    let p = packet(1);
    assert_eq!(p.chunks.len(), 2, "last fragment and filler");
    assert!(matches!(
        p.chunks[1],
        Owned::Nud {
            fra: FragmentControl::Begin,
            ..
        }
    ));
    assert_eq!(p.used, full, "the packet is full");
    let q = packet(1);
    assert_eq!(q.chunks.len(), 1);
    assert_eq!(q.used, full);
}
