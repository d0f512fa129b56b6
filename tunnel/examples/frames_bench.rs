//! What the endpoint's own work costs per packet on the frame path, without
//! the kernel: two [`Endpoint`]s in one thread hand each other datagrams in
//! memory, batched as the tokio driver batches them (`tunnel/src/driver.rs`:
//! up to 64 datagrams per `sendmmsg`, a receive batch bracketed by
//! `set_receive_batch`, the endpoint's output collected after every
//! datagram handed in).
//!
//! A queues 64 KiB messages on a NoRetransmit flow, as the agent queues the
//! TCP super-frames it reads from the TAP, keeping 1 MiB queued; B accepts
//! the flow in arrival order (as the agent does), takes each delivered
//! message from its events and recycles the buffer. The path is clean and
//! instant, so the figures are the CPU cost of the protocol machinery
//! (fragmenting, packet building, AEAD, acknowledgements, reassembly), not
//! a throughput a network would allow.
//!
//! Printed: data packets A sent and acknowledgement datagrams B sent per
//! 64 KiB message, and the nanoseconds per data packet spent in A (queueing
//! messages, building and sealing packets, taking acknowledgements) and in
//! B (opening, reassembling, acknowledging), with the AEAD's share (the
//! seal or open of a packet of that size, measured alone in the same run),
//! and the payload rate one core would reach for each side.
//!
//! `cargo run --release -p ringlan-tunnel --example frames_bench`
//! (`BENCH_MIB`, default 4096: payload carried per run; `BENCH_RUNS`,
//! default 3; `BENCH_MESSAGE`, default 65536: message size, e.g. 64781 for
//! the TCP super-frames of `tests/bench/run.sh`; `BENCH_POLLUTE`, default 0:
//! bytes written between rounds of the exchange, untimed, as the other
//! programs and the kernel that share the cores of a real run evict the
//! endpoints' data between their turns; `BENCH_SUITE`, default what two
//! agents negotiate here: `aes-256-gcm` or `chacha20-poly1305` to make the
//! endpoints offer no more than that; `BENCH_COPY`, default 0: 1 queues
//! each message with `Endpoint::send`, which copies it, instead of handing
//! its buffer over with `Endpoint::send_owned` as the agent does with its
//! TAP reads).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use ringlan_tunnel::crypto::{AeadSuite, Identity, NetworkName, NetworkSecret, SuiteSet};
use ringlan_tunnel::{
    Delivery, Endpoint, EndpointConfig, Event, FlowEvent, Reliability, Rng, SessionId, Target,
};

/// Message size unless `BENCH_MESSAGE` says otherwise.
const MESSAGE: usize = 65536;
const BACKLOG: usize = 1 << 20;
const BATCH: usize = 64;
const MAX_DATAGRAM: usize = 1500;

fn config(seed: u8) -> EndpointConfig {
    let name = NetworkName::new("frames-bench").expect("network name");
    let secret = NetworkSecret::from_bytes([42; 32]);
    let suites = match std::env::var("BENCH_SUITE").as_deref() {
        Ok("aes-256-gcm") => SuiteSet::CERTIFIED,
        Ok("chacha20-poly1305") => SuiteSet::CHACHA_ONLY,
        _ => SuiteSet::ALL,
    };
    let identity = Identity::with_suites([seed; 32], &name, suites);
    EndpointConfig::new(identity, name, secret)
}

/// One side: its endpoint, address and the time spent in it.
struct Side {
    ep: Endpoint,
    addr: SocketAddr,
    spent: Duration,
    datagrams_sent: u64,
}

impl Side {
    fn new(seed: u8, addr: &str) -> Side {
        let mut s = [0u8; 32];
        s[0] = seed;
        Side {
            ep: Endpoint::new(Instant::now(), config(seed), Rng::from_seed(s)),
            addr: addr.parse().expect("address"),
            spent: Duration::ZERO,
            datagrams_sent: 0,
        }
    }
}

/// Datagrams in flight from one side to the other.
#[derive(Default)]
struct Wire {
    buf: Vec<u8>,
    lens: Vec<usize>,
}

impl Wire {
    fn new() -> Wire {
        Wire {
            buf: vec![0; BATCH * MAX_DATAGRAM],
            lens: Vec::with_capacity(BATCH),
        }
    }
}

/// Collect what `side` has to send (up to a batch) onto `wire`, as the
/// driver's `collect` does. Returns false when the batch is full.
fn collect(side: &mut Side, wire: &mut Wire, now: Instant) -> bool {
    while wire.lens.len() < BATCH {
        let at = wire.lens.len() * MAX_DATAGRAM;
        let Some(t) = side
            .ep
            .poll_transmit(now, &mut wire.buf[at..at + MAX_DATAGRAM])
        else {
            return true;
        };
        if let Some(seal) = side.ep.take_pending_seal() {
            seal.finish(&mut wire.buf[at..at + t.size]);
        }
        wire.lens.push(t.size);
        side.datagrams_sent += 1;
    }
    false
}

/// Hand `wire`'s datagrams to `to` as one receive batch, collecting its
/// output onto `back` after each (timed into `to.spent`).
fn deliver(to: &mut Side, from: SocketAddr, wire: &mut Wire, back: &mut Wire) {
    let t0 = Instant::now();
    to.ep.set_receive_batch(true);
    for (i, &len) in wire.lens.iter().enumerate() {
        let at = i * MAX_DATAGRAM;
        let now = Instant::now();
        to.ep
            .handle_datagram_in_place(now, from, &mut wire.buf[at..at + len]);
        collect(to, back, now);
    }
    to.ep.set_receive_batch(false);
    collect(to, back, Instant::now());
    to.spent += t0.elapsed();
    wire.lens.clear();
}

/// B's events: accept the frames flow in arrival order, count and recycle
/// delivered messages; returns the payload bytes delivered.
fn drain_events(b: &mut Side) -> usize {
    let mut bytes = 0;
    while let Some(ev) = b.ep.poll_event() {
        if let Event::Flow { session, event } = ev {
            match event {
                FlowEvent::IncomingFlow { flow, .. } => {
                    b.ep.accept_flow(session, flow, Delivery::ArrivalOrder)
                }
                FlowEvent::Message { data, .. } => {
                    bytes += data.len();
                    b.ep.recycle(session, data);
                }
                _ => {}
            }
        }
    }
    bytes
}

/// Run both sides' timers that are due.
fn timers(side: &mut Side) {
    let now = Instant::now();
    if side.ep.poll_timeout().is_some_and(|t| t <= now) {
        side.ep.handle_timeout(now);
    }
}

/// Exchange datagrams until `done` holds (handshake, path MTU probes);
/// `done` takes the events.
fn exchange_until(a: &mut Side, b: &mut Side, mut done: impl FnMut(&mut Side, &mut Side) -> bool) {
    let (mut ab, mut ba) = (Wire::new(), Wire::new());
    let limit = Instant::now() + Duration::from_secs(30);
    while !done(a, b) {
        assert!(Instant::now() < limit, "the endpoints did not get there");
        timers(a);
        timers(b);
        collect(a, &mut ab, Instant::now());
        let (a_addr, b_addr) = (a.addr, b.addr);
        deliver(b, a_addr, &mut ab, &mut ba);
        deliver(a, b_addr, &mut ba, &mut ab);
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Figures {
    /// The suite the two endpoints negotiated.
    suite: Option<AeadSuite>,
    packets: u64,
    acks: u64,
    messages: u64,
    a: Duration,
    b: Duration,
    size: usize,
    /// Bytes B copied to join fragments of a message (the rest was
    /// delivered in the buffer it arrived in).
    copied: u64,
}

fn run(mib: usize, message: usize, pollute: usize) -> Figures {
    let mut a = Side::new(1, "192.0.2.1:4910");
    let mut b = Side::new(2, "192.0.2.2:4910");
    let peer = b.ep.node_id();
    let sa =
        a.ep.connect(Instant::now(), Target::Node(peer), &[b.addr])
            .expect("connect");
    let opened = |s: &mut Side| {
        let mut open = false;
        while let Some(ev) = s.ep.poll_event() {
            open |= matches!(ev, Event::SessionOpened { .. });
        }
        open
    };
    let (mut a_open, mut b_open) = (false, false);
    exchange_until(&mut a, &mut b, |a, b| {
        a_open |= opened(a);
        b_open |= opened(b);
        a_open && b_open
    });
    let flow = a.ep.open_flow(sa, b"frames", None).expect("flow");
    let msg = vec![0x5a_u8; message];
    a.ep.send(Instant::now(), sa, flow, &msg, Reliability::NoRetransmit)
        .expect("first frame");
    // Path MTU discovery reaches 1472 bytes (a 1500-byte IPv4 path), and
    // nothing is left in flight: datagrams still on the wires when a phase
    // ends are lost, and a window they fill would stall the measured run
    // until the retransmission timeout.
    exchange_until(&mut a, &mut b, |a, b| {
        drain_events(b);
        while a.ep.poll_event().is_some() {}
        pmtu(a, sa) == 1472 && a.ep.session_info(sa).is_some_and(|i| i.in_flight == 0)
    });
    let size = pmtu(&a, sa);

    let (mut ab, mut ba) = (Wire::new(), Wire::new());
    let total = mib << 20;
    let (mut queued, mut delivered) = (0usize, 0usize);
    let (packets0, acks0) = (a.datagrams_sent, b.datagrams_sent);
    let copied = |b: &Side| {
        b.ep.sessions()
            .filter_map(|s| b.ep.flow_stats(s))
            .map(|f| f.reassembly_copied_bytes)
            .sum::<u64>()
    };
    let copied0 = copied(&b);
    a.spent = Duration::ZERO;
    b.spent = Duration::ZERO;
    let mut messages = 0u64;
    let copy = std::env::var("BENCH_COPY").is_ok_and(|v| v == "1");
    let mut owned = msg.clone();
    let mut dirt = vec![0u8; pollute];
    let mut round = 0u8;
    while delivered < total {
        if !dirt.is_empty() {
            // A read and a write of every cache line (a `fill` of this
            // size may bypass the cache).
            round = round.wrapping_add(1);
            for i in (0..dirt.len()).step_by(64) {
                dirt[i] = dirt[i].wrapping_add(round);
            }
            std::hint::black_box(&dirt);
        }
        timers(&mut a);
        timers(&mut b);
        let t0 = Instant::now();
        while queued < total
            && a.ep.session_info(sa).map_or(0, |i| i.queued) < BACKLOG
            && if copy {
                a.ep.send(t0, sa, flow, &msg, Reliability::NoRetransmit)
            } else {
                a.ep.send_owned(
                    t0,
                    sa,
                    flow,
                    &mut owned,
                    0..message,
                    Reliability::NoRetransmit,
                )
            }
            .is_ok()
        {
            queued += message;
            messages += 1;
        }
        collect(&mut a, &mut ab, Instant::now());
        a.spent += t0.elapsed();
        let (a_addr, b_addr) = (a.addr, b.addr);
        deliver(&mut b, a_addr, &mut ab, &mut ba);
        let t1 = Instant::now();
        delivered += drain_events(&mut b);
        b.spent += t1.elapsed();
        deliver(&mut a, b_addr, &mut ba, &mut ab);
        while a.ep.poll_event().is_some() {}
        if queued >= total
            && a.ep.session_info(sa).map_or(0, |i| i.queued) == 0
            && ab.lens.is_empty()
        {
            // Whatever was lost to the window's edge is not coming.
            let info = a.ep.session_info(sa).expect("session");
            if info.in_flight == 0 {
                break;
            }
        }
    }
    Figures {
        suite: a.ep.session_info(sa).and_then(|i| i.suite),
        packets: a.datagrams_sent - packets0,
        acks: b.datagrams_sent - acks0,
        messages,
        a: a.spent,
        b: b.spent,
        size,
        copied: copied(&b) - copied0,
    }
}

fn pmtu(s: &Side, session: SessionId) -> usize {
    s.ep.session_info(session).map_or(0, |i| i.pmtu)
}

/// ns per seal (`open`: false) or open of a packet of `len` bytes under
/// `suite`, in place, measured alone.
fn aead_ns(suite: AeadSuite, len: usize, open: bool) -> f64 {
    if suite == AeadSuite::Aegis128L {
        return aegis_ns(len, open);
    }
    let alg = match suite {
        AeadSuite::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        _ => &AES_256_GCM,
    };
    let key = LessSafeKey::new(UnboundKey::new(alg, &[7; 32]).expect("key"));
    let n = 200_000;
    let mut buf = vec![0x33u8; len];
    let mut tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from([0u8; 4]),
            &mut buf,
        )
        .expect("seal");
    let sealed = buf.clone();
    let t0 = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
        if open {
            buf.copy_from_slice(&sealed);
            let _ = key.open_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from([0u8; 4]),
                tag,
                &mut buf,
                0..,
            );
        } else {
            tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from([0u8; 4]),
                    &mut buf,
                )
                .expect("seal");
        }
    }
    std::hint::black_box(&tag);
    t0.elapsed().as_nanos() as f64 / n as f64
}

/// [`aead_ns`] for AEGIS-128L.
fn aegis_ns(len: usize, open: bool) -> f64 {
    use aegis::aegis128l::Aegis128L;
    let key = [7u8; 16];
    let n = 200_000;
    let mut buf = vec![0x33u8; len];
    let mut tag = Aegis128L::<16>::new(&key, &[0; 16]).encrypt_in_place(&mut buf, &[]);
    let sealed = buf.clone();
    let t0 = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 16];
        nonce[8..].copy_from_slice(&(i as u64).to_be_bytes());
        if open {
            buf.copy_from_slice(&sealed);
            let _ = Aegis128L::<16>::new(&key, &[0; 16]).decrypt_in_place(&mut buf, &tag, &[]);
        } else {
            tag = Aegis128L::<16>::new(&key, &nonce).encrypt_in_place(&mut buf, &[]);
        }
    }
    std::hint::black_box(&tag);
    t0.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let mib: usize = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let message: usize = std::env::var("BENCH_MESSAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&m| m > 0)
        .unwrap_or(MESSAGE);
    let pollute: usize = std::env::var("BENCH_POLLUTE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    println!(
        "frames_bench: {mib} MiB of {message}-byte NoRetransmit messages per run, in memory, one thread, \
         {pollute} bytes written between rounds"
    );
    for r in 1..=runs {
        let f = run(mib, message, pollute);
        let per = |d: Duration| d.as_nanos() as f64 / f.packets as f64;
        let plain = f.size.saturating_sub(28);
        let suite = f.suite.expect("a keyed session");
        let (seal, open) = (aead_ns(suite, plain, false), aead_ns(suite, plain, true));
        let gbit = |d: Duration| (f.messages as f64 * message as f64 * 8.0) / d.as_secs_f64() / 1e9;
        println!(
            "run {r}: {} B packets, {:.1} data packets and {:.1} acks per message; \
             A {:.0} ns/packet ({suite} seal {:.0}), B {:.0} ns/packet (open {:.0}); \
             one core: A {:.1} Gbit/s, B {:.1} Gbit/s; B copied {:.1} % of the payload \
             joining fragments",
            f.size,
            f.packets as f64 / f.messages as f64,
            f.acks as f64 / f.messages as f64,
            per(f.a),
            seal,
            per(f.b),
            open,
            gbit(f.a),
            gbit(f.b),
            f.copied as f64 * 100.0 / (f.messages as f64 * message as f64),
        );
    }
}
