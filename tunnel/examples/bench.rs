//! Loopback benchmark of what the agent runs: two [`Driver`]s (the tokio
//! UDP driver with its batched sendmmsg/recvmmsg, GSO/GRO path), each on
//! its own thread with a current-thread tokio runtime, talk over real UDP
//! on 127.0.0.1. One session, one reliable flow (RFC 7016 3.6.2) kept
//! full by the sender, so throughput is what congestion control, the
//! receive window, the crypto and the kernel allow.
//!
//! Printed per AEAD suite (ChaCha20-Poly1305, AES-256-GCM, AEGIS-128L):
//! - handshake: initiator `connect` until both ends report SessionOpened
//!   (RFC 7016 3.5.1, four startup packets over loopback);
//! - user data: message bytes delivered to the receiver per second (the
//!   first message starts the clock), in Gbit/s;
//! - packets/s: datagrams the receiving endpoint took in and the sending
//!   endpoint produced (data-path packets, not syscalls);
//! - CPU per gigabit: process CPU time (getrusage, user + system, both
//!   threads, kernel UDP work included) per gigabit of user data, and the
//!   two threads' shares;
//! - retransmissions and losses of the sender's flow, and the kernel's UDP
//!   RcvbufErrors/SndbufErrors increase from /proc/net/snmp during the
//!   run (host-wide counters: other traffic on the host counts too).
//!
//! The load average is printed with each suite: the figures are only
//! comparable at similar load.
//!
//! `cargo run --release -p ringlan-tunnel --example bench`
//! (`BENCH_SECONDS`, default 5: the length of each transfer;
//! `BENCH_RUNS`, default 1: repetitions of each suite;
//! `BENCH_SEND_THREADS=1`: each driver sends from a thread of its own,
//! `Driver::spawn_send_thread`, so each end uses up to two cores).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use ringlan_tunnel::crypto::{AeadSuite, Identity, NetworkName, NetworkSecret, SuiteSet};
use ringlan_tunnel::driver::Driver;
use ringlan_tunnel::NodeId;
use ringlan_tunnel::{EndpointConfig, Event, Target};
use ringlan_tunnel::{FlowEvent, Reliability};

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

/// UDP counters from /proc/net/snmp: (RcvbufErrors, SndbufErrors).
fn udp_buffer_errors() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some((get("RcvbufErrors")?, get("SndbufErrors")?))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn config(seed: u8, suites: SuiteSet) -> EndpointConfig {
    let name = NetworkName::new("bench").unwrap();
    let secret = NetworkSecret::from_bytes([7; 32]);
    let id = Identity::with_suites([seed; 32], &name, suites);
    EndpointConfig::new(id, name, secret)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
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
    send_errors: u64,
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

/// `BENCH_SEND_THREADS=1`: send from a thread of its own.
fn maybe_send_thread(d: &mut Driver) {
    if std::env::var("BENCH_SEND_THREADS").is_ok_and(|v| v == "1") {
        d.spawn_send_thread().expect("send thread");
    }
}

async fn run_sender(
    cfg: EndpointConfig,
    peer: SocketAddr,
    peer_id: NodeId,
    seconds: Duration,
    stop: Arc<AtomicBool>,
) -> SenderReport {
    let mut d = Driver::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .expect("bind");
    maybe_send_thread(&mut d);
    let start = Instant::now();
    let session = d
        .endpoint()
        .connect(start, Target::Node(peer_id), &[peer])
        .expect("connect");
    d.flush();
    let opened = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match d.next_event().await {
                Event::SessionOpened { session: s, .. } if s == session => {
                    return Instant::now();
                }
                Event::SessionFailed { reason, .. } => panic!("handshake failed: {reason:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("handshake timeout");
    let flow = d
        .endpoint()
        .open_flow(session, b"bench", None)
        .expect("open_flow");
    let cpu0 = cpu::time(cpu::SELF);
    let tcpu0 = cpu::time(cpu::THREAD);
    let sent0 = d.endpoint_ref().stats().datagrams_sent;
    let mut message_size = 0;
    let mut payload = Vec::new();
    // The send queue (4 MiB) lasts several milliseconds at the target
    // rate; refilling it every millisecond keeps it from running dry.
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while opened.elapsed() < seconds {
        // Messages sized to fill one packet.
        message_size = d
            .endpoint_ref()
            .max_unfragmented(session, flow, Reliability::Reliable)
            .unwrap_or(1200);
        payload.resize(message_size, 0x42);
        let ep = d.endpoint();
        let now = Instant::now();
        while ep
            .send(now, session, flow, &payload, Reliability::Reliable)
            .is_ok()
        {}
        d.flush();
        tokio::select! {
            _ = d.next_event() => {}
            _ = tick.tick() => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let process_cpu = cpu::time(cpu::SELF) - cpu0;
    let thread_cpu = cpu::time(cpu::THREAD) - tcpu0;
    let ep = d.endpoint_ref();
    let info = ep.session_info(session).expect("session");
    let fs = ep.flow_stats(session).expect("flow stats");
    SenderReport {
        start,
        opened,
        stopped,
        process_cpu,
        thread_cpu,
        datagrams_sent: ep.stats().datagrams_sent - sent0,
        message_size,
        retransmissions: fs.retransmissions,
        losses: fs.losses_nack + fs.losses_timeout,
        srtt: info.srtt,
        cwnd: info.cwnd,
        pmtu: info.pmtu,
        send_errors: d.send_errors(),
    }
}

async fn run_receiver(
    cfg: EndpointConfig,
    addr: mpsc::Sender<SocketAddr>,
    stop: Arc<AtomicBool>,
) -> ReceiverReport {
    let mut d = Driver::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .expect("bind");
    maybe_send_thread(&mut d);
    addr.send(d.local_addr().unwrap()).expect("main thread");
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
    let mut received0 = 0;
    let mut opened = false;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !stop.load(Ordering::Relaxed) {
        let ev = tokio::select! {
            ev = d.next_event() => ev,
            _ = tick.tick() => continue,
        };
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
                    received0 = d.endpoint_ref().stats().datagrams_received;
                } else {
                    r.bytes += data.len() as u64;
                    r.messages += 1;
                }
                r.last = Some(now);
                d.endpoint().recycle(s, data);
            }
            _ => {}
        }
    }
    r.datagrams = d.endpoint_ref().stats().datagrams_received - received0;
    if let Some(c) = cpu0 {
        r.thread_cpu = cpu::time(cpu::THREAD) - c;
    }
    r
}

fn bench(suite: AeadSuite, seconds: Duration) {
    let suites = match suite {
        AeadSuite::ChaCha20Poly1305 => SuiteSet::CHACHA_ONLY,
        AeadSuite::Aes256Gcm => SuiteSet::CERTIFIED,
        AeadSuite::Aegis128L => SuiteSet::ALL,
    };
    let a = config(1, suites);
    let b = config(2, suites);
    let b_id = b.identity.node_id();
    let load = load_average();
    let errs0 = udp_buffer_errors();
    let stop = Arc::new(AtomicBool::new(false));
    let (addr_tx, addr_rx) = mpsc::channel();
    let stop_r = stop.clone();
    let receiver = thread::spawn(move || runtime().block_on(run_receiver(b, addr_tx, stop_r)));
    let b_addr = addr_rx.recv().expect("receiver bound");
    let stop_s = stop.clone();
    let sender =
        thread::spawn(move || runtime().block_on(run_sender(a, b_addr, b_id, seconds, stop_s)));
    let s = sender.join().expect("sender thread");
    stop.store(true, Ordering::Relaxed);
    let r = receiver.join().expect("receiver thread");
    let errs1 = udp_buffer_errors();

    let handshake = s.opened - s.start;
    let responder_open = r.opened.saturating_duration_since(s.start);
    let window = match (r.first, r.last) {
        (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let gbits = r.bytes as f64 * 8.0 / 1e9;
    let rate = if window > 0.0 { gbits / window } else { 0.0 };
    let send_window = (s.stopped - s.opened).as_secs_f64();
    println!("{suite:?} (load average {load}):");
    println!(
        "  handshake            {:.3} ms (initiator connect -> SessionOpened; responder opened at {:.3} ms)",
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
        "  packets/s            {:.0} datagrams received by the receiver, {:.0} sent by the sender",
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
        "  CPU per gigabit      {:.3} s (process, both ends; {:.0}% of one core) = sender {:.3} s + receiver {:.3} s",
        per_gbit(s.process_cpu),
        100.0 * s.process_cpu.as_secs_f64() / send_window,
        per_gbit(s.thread_cpu),
        per_gbit(r.thread_cpu)
    );
    println!(
        "  sender               srtt {:?}, cwnd {} B, pmtu {} B, retransmissions {}, losses {}, send errors {}",
        s.srtt, s.cwnd, s.pmtu, s.retransmissions, s.losses, s.send_errors
    );
    if let (Some((r0, s0)), Some((r1, s1))) = (errs0, errs1) {
        println!(
            "  kernel UDP           RcvbufErrors +{}, SndbufErrors +{} (host-wide)",
            r1.saturating_sub(r0),
            s1.saturating_sub(s0)
        );
    }
}

fn main() {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
    };
    let seconds = Duration::from_secs_f64(env("BENCH_SECONDS").unwrap_or(5.0));
    let runs = env("BENCH_RUNS").unwrap_or(1.0) as usize;
    println!(
        "ringlan-tunnel loopback bench (tokio Driver): one session, one reliable flow, {:.1} s per suite, send threads {}",
        seconds.as_secs_f64(),
        if std::env::var("BENCH_SEND_THREADS").is_ok_and(|v| v == "1") { "on" } else { "off" }
    );
    for _ in 0..runs {
        for suite in [
            AeadSuite::ChaCha20Poly1305,
            AeadSuite::Aes256Gcm,
            AeadSuite::Aegis128L,
        ] {
            bench(suite, seconds);
        }
    }
}
