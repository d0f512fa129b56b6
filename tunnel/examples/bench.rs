//! Two endpoints over real UDP on loopback: handshake time, then one
//! reliable flow (RFC 7016 3.6.2) sending as fast as congestion control and
//! the receive window allow. Prints user-data throughput, packets per
//! second and CPU per gigabit, for ChaCha20-Poly1305 and AES-256-GCM.
//!
//! `cargo run --release -p ringlan-tunnel --example bench`
//! (`BENCH_SECONDS`, default 5: the length of each transfer).
//!
//! Each endpoint runs on its own thread with a blocking `std::net`
//! socket whose read timeout follows `Endpoint::poll_timeout`; the sans-IO
//! endpoint is driven exactly as the rules say: after every input, drain
//! `poll_transmit` and `poll_event`. Independent of the tokio driver, so it
//! measures the protocol core plus the kernel's UDP path.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ringlan_tunnel::crypto::{AeadSuite, Identity, NetworkName, NetworkSecret, SuiteSet};
use ringlan_tunnel::endpoint::{Endpoint, EndpointConfig, Event, Target};
use ringlan_tunnel::flow::{FlowEvent, Reliability};
use ringlan_tunnel::Rng;

/// CPU time (user + system) from getrusage(2).
#[cfg(target_os = "linux")]
mod cpu {
    use std::time::Duration;

    #[repr(C)]
    struct Timeval {
        tv_sec: i64,
        tv_usec: i64,
    }

    /// `struct rusage` on 64-bit Linux: two timevals and 14 longs.
    #[repr(C)]
    struct Rusage {
        ru_utime: Timeval,
        ru_stime: Timeval,
        _rest: [i64; 14],
    }

    extern "C" {
        fn getrusage(who: i32, usage: *mut Rusage) -> i32;
    }

    pub const SELF: i32 = 0;
    pub const THREAD: i32 = 1;

    pub fn time(who: i32) -> Duration {
        let mut u = Rusage {
            ru_utime: Timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            ru_stime: Timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            _rest: [0; 14],
        };
        // SAFETY: `u` is a valid, writable `struct rusage` for this
        // platform (x86_64/aarch64 Linux: 2 timevals + 14 longs).
        let rc = unsafe { getrusage(who, &mut u) };
        if rc != 0 {
            return Duration::ZERO;
        }
        let us = |t: &Timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        Duration::from_micros(us(&u.ru_utime) + us(&u.ru_stime))
    }
}

#[cfg(not(target_os = "linux"))]
mod cpu {
    pub const SELF: i32 = 0;
    pub const THREAD: i32 = 1;
    pub fn time(_who: i32) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Set the socket's read timeout to the time until `deadline` (bounded),
/// touching the socket only when the value changes.
fn set_timeout(sock: &UdpSocket, last: &mut Duration, deadline: Option<Instant>) {
    let now = Instant::now();
    let d = deadline
        .map_or(Duration::from_millis(50), |t| {
            t.saturating_duration_since(now)
        })
        .clamp(Duration::from_micros(200), Duration::from_millis(50));
    // Round to 100 us so a busy loop does not call setsockopt every time.
    let d = Duration::from_micros(d.as_micros() as u64 / 100 * 100);
    if d != *last {
        let _ = sock.set_read_timeout(Some(d));
        *last = d;
    }
}

/// Drain transmits onto the socket; returns datagrams sent.
fn flush(ep: &mut Endpoint, sock: &UdpSocket, buf: &mut [u8]) -> u64 {
    let mut n = 0;
    while let Some(t) = ep.poll_transmit(Instant::now(), buf) {
        // Loopback with a full socket buffer drops; RTMFP retransmits.
        let _ = sock.send_to(&buf[..t.size], t.destination);
        n += 1;
    }
    n
}

/// One input step: wait for a datagram or the next timer, feed it in.
/// Returns true if a datagram was handled.
fn step(ep: &mut Endpoint, sock: &UdpSocket, rx: &mut [u8], last_to: &mut Duration) -> bool {
    set_timeout(sock, last_to, ep.poll_timeout());
    let got = match sock.recv_from(rx) {
        Ok((n, from)) => {
            ep.handle_datagram(Instant::now(), from, &mut rx[..n]);
            true
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("recv: {e}"),
    };
    let now = Instant::now();
    if ep.poll_timeout().is_some_and(|t| t <= now) {
        ep.handle_timeout(now);
    }
    got
}

struct SenderReport {
    start: Instant,
    opened: Instant,
    stopped: Instant,
    process_cpu: Duration,
    thread_cpu: Duration,
    datagrams_sent: u64,
    message_size: usize,
    retransmissions: u64,
    losses: u64,
    srtt: Option<Duration>,
    cwnd: usize,
    pmtu: usize,
}

struct ReceiverReport {
    opened: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    bytes: u64,
    messages: u64,
    datagrams: u64,
    thread_cpu: Duration,
}

fn endpoint(seed: u8, suites: SuiteSet) -> Endpoint {
    let name = NetworkName::new("bench").unwrap();
    let secret = NetworkSecret::from_bytes([7; 32]);
    let id = Identity::with_suites([seed; 32], &name, suites);
    let cfg = EndpointConfig::new(id, name, secret);
    Endpoint::new(Instant::now(), cfg, Rng::from_seed([seed; 32]))
}

fn run_sender(
    mut ep: Endpoint,
    sock: UdpSocket,
    peer: SocketAddr,
    peer_id: ringlan_tunnel::NodeId,
    seconds: Duration,
    stop: Arc<AtomicBool>,
) -> SenderReport {
    let mut tx = vec![0u8; 2048];
    let mut rx = vec![0u8; 2048];
    let mut last_to = Duration::ZERO;
    let start = Instant::now();
    let session = ep
        .connect(start, Target::Node(peer_id), &[peer])
        .expect("connect");
    let mut opened = None;
    while opened.is_none() {
        flush(&mut ep, &sock, &mut tx);
        step(&mut ep, &sock, &mut rx, &mut last_to);
        while let Some(ev) = ep.poll_event() {
            match ev {
                Event::SessionOpened { session: s, .. } if s == session => {
                    opened = Some(Instant::now())
                }
                Event::SessionFailed { reason, .. } => panic!("handshake failed: {reason:?}"),
                _ => {}
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "handshake timeout"
        );
    }
    let opened = opened.unwrap();
    let flow = ep.open_flow(session, b"bench", None).expect("open_flow");
    let cpu0 = cpu::time(cpu::SELF);
    let tcpu0 = cpu::time(cpu::THREAD);
    let mut sent = 0u64;
    let mut payload = vec![0x42u8; 64 << 10];
    let mut message_size = 0;
    while opened.elapsed() < seconds {
        // Keep the send queue full: messages sized to fill one packet.
        message_size = ep.max_unfragmented(session).unwrap_or(1200);
        payload.resize(message_size, 0x42);
        while ep
            .send(
                Instant::now(),
                session,
                flow,
                &payload,
                Reliability::Reliable,
            )
            .is_ok()
        {}
        sent += flush(&mut ep, &sock, &mut tx);
        step(&mut ep, &sock, &mut rx, &mut last_to);
        while ep.poll_event().is_some() {}
    }
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let process_cpu = cpu::time(cpu::SELF) - cpu0;
    let thread_cpu = cpu::time(cpu::THREAD) - tcpu0;
    let info = ep.session_info(session).expect("session");
    let fs = ep.flow_stats(session).expect("flow stats");
    SenderReport {
        start,
        opened,
        stopped,
        process_cpu,
        thread_cpu,
        datagrams_sent: sent,
        message_size,
        retransmissions: fs.retransmissions,
        losses: fs.losses_nack + fs.losses_timeout,
        srtt: info.srtt,
        cwnd: info.cwnd,
        pmtu: info.pmtu,
    }
}

fn run_receiver(mut ep: Endpoint, sock: UdpSocket, stop: Arc<AtomicBool>) -> ReceiverReport {
    let mut tx = vec![0u8; 2048];
    let mut rx = vec![0u8; 2048];
    let mut last_to = Duration::ZERO;
    let mut r = ReceiverReport {
        opened: Instant::now(),
        first: None,
        last: None,
        bytes: 0,
        messages: 0,
        datagrams: 0,
        thread_cpu: Duration::ZERO,
    };
    let mut cpu0 = None;
    let mut opened = false;
    while !stop.load(Ordering::Relaxed) {
        if step(&mut ep, &sock, &mut rx, &mut last_to) && r.first.is_some() {
            r.datagrams += 1;
        }
        while let Some(ev) = ep.poll_event() {
            match ev {
                Event::SessionOpened { .. } if !opened => {
                    r.opened = Instant::now();
                    opened = true;
                }
                Event::Flow {
                    session: s,
                    event: FlowEvent::Message { data, .. },
                } => {
                    let now = Instant::now();
                    if r.first.is_none() {
                        r.first = Some(now);
                        cpu0 = Some(cpu::time(cpu::THREAD));
                    } else {
                        r.bytes += data.len() as u64;
                        r.messages += 1;
                    }
                    r.last = Some(now);
                    ep.recycle(s, data);
                }
                _ => {}
            }
        }
        flush(&mut ep, &sock, &mut tx);
    }
    if let Some(c) = cpu0 {
        r.thread_cpu = cpu::time(cpu::THREAD) - c;
    }
    r
}

fn bench(suite: AeadSuite, seconds: Duration) {
    let suites = match suite {
        AeadSuite::ChaCha20Poly1305 => SuiteSet::CHACHA_ONLY,
        AeadSuite::Aes256Gcm => SuiteSet::ALL,
    };
    let a = endpoint(1, suites);
    let b = endpoint(2, suites);
    let b_id = b.node_id();
    let sa = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let sb = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b_addr = sb.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_r = stop.clone();
    let receiver = thread::spawn(move || run_receiver(b, sb, stop_r));
    let stop_s = stop.clone();
    let sender = thread::spawn(move || run_sender(a, sa, b_addr, b_id, seconds, stop_s));
    let s = sender.join().expect("sender thread");
    stop.store(true, Ordering::Relaxed);
    let r = receiver.join().expect("receiver thread");

    let handshake = s.opened - s.start;
    let responder_open = r.opened.saturating_duration_since(s.start);
    let window = match (r.first, r.last) {
        (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let gbits = r.bytes as f64 * 8.0 / 1e9;
    let rate = if window > 0.0 { gbits / window } else { 0.0 };
    let send_window = (s.stopped - s.opened).as_secs_f64();
    println!("{suite:?}:");
    println!(
        "  handshake            {:.3} ms (initiator connect -> both SessionOpened; responder opened at {:.3} ms)",
        handshake.as_secs_f64() * 1e3,
        responder_open.as_secs_f64() * 1e3
    );
    println!(
        "  user data            {:.3} Gbit/s ({} messages of {} bytes, {:.1} MB in {:.2} s)",
        rate,
        r.messages,
        s.message_size,
        r.bytes as f64 / 1e6,
        window
    );
    println!(
        "  packets/s            {:.0} received data-path datagrams, {:.0} sent by the sender",
        if window > 0.0 {
            r.datagrams as f64 / window
        } else {
            0.0
        },
        s.datagrams_sent as f64 / send_window
    );
    let per_gbit = |cpu: Duration| {
        if gbits > 0.0 {
            cpu.as_secs_f64() / gbits
        } else {
            f64::NAN
        }
    };
    println!(
        "  CPU per gigabit      {:.3} s (process, both ends; {:.1}% of one core) = sender {:.3} s + receiver {:.3} s",
        per_gbit(s.process_cpu),
        100.0 * s.process_cpu.as_secs_f64() / send_window,
        per_gbit(s.thread_cpu),
        per_gbit(r.thread_cpu)
    );
    println!(
        "  sender               srtt {:?}, cwnd {} B, pmtu {} B, retransmissions {}, losses {}",
        s.srtt, s.cwnd, s.pmtu, s.retransmissions, s.losses
    );
}

fn main() {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(5.0);
    let seconds = Duration::from_secs_f64(seconds);
    println!(
        "ringlan-tunnel loopback bench: one session, one reliable flow, {:.1} s per suite",
        seconds.as_secs_f64()
    );
    for suite in [AeadSuite::ChaCha20Poly1305, AeadSuite::Aes256Gcm] {
        bench(suite, seconds);
    }
}
