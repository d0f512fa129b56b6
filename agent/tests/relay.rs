//! Relayed flow routes end to end, in the NAT lab of `natlab/mod.rs`: real
//! agents behind `masquerade fully-random` routers (symmetric-like: no
//! punch can work between two of them) reach each other through relays.
//!
//! - two symmetric NATs: a relayed session (status names the relay and
//!   says why), ping, 100 MiB intact; the relay reports the route it
//!   carries with its byte counts; a non-member gets nothing from the relay
//!   and garbage at its port changes nothing;
//! - the relay in use is killed in the middle of a TCP stream: the session
//!   moves to the standby route through the other relay and the stream
//!   completes intact (the interruption is printed);
//! - both NATs become cone-like mid-stream: the session moves to a direct
//!   path without breaking the stream;
//! - no single node reaches both ends (firewalled relays, an introducer
//!   that does not relay): the route goes through two relays.
//!
//! The `#[ignore]`d benchmark prints time to first ping, relayed vs direct
//! throughput, and the relay failover interruption (`tests/bench/relay.sh`).

mod natlab;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use natlab::*;
use ringlan_lab::agents::*;
use ringlan_lab::NatKind;
use serde_json::Value;

const RELAY_ON: &str = "relay:\n  enabled: true\n";
const RELAY_OFF: &str = "relay:\n  enabled: false\n";
/// The bench measures what relaying costs, not the default caps.
const RELAY_UNCAPPED: &str = "relay:\n  max_mbps: 0\n  max_total_mbps: 0\n";

fn relayed_via(s: &Value) -> Option<String> {
    (path_kind(s) == Some("relayed")).then(|| s["path"]["via"].as_str().unwrap_or("").to_string())
}

/// Waits until `a` has an open relayed session with `b`; returns it.
fn wait_relayed(a: &Member, b: &Member) -> Value {
    let pb = b.peer();
    let st = a
        .node
        .wait_status(SETTLE, |v| {
            open_session(v, &pb).is_some_and(|s| relayed_via(s).is_some())
        })
        .unwrap_or_else(|e| panic!("{} has no relayed session with {}: {e:#}", a.name, b.name));
    open_session(&st, &pb).cloned().expect("session")
}

/// Starts `a` and `b`; returns the time from there to the first ping
/// answered a -> b and to a relayed session.
fn start_relayed(w: &NatLab, a: &mut Member, b: &mut Member) -> (Duration, Duration) {
    let t0 = Instant::now();
    w.start(a);
    w.start(b);
    w.wait_ping(a, b, SETTLE);
    let first = t0.elapsed();
    wait_relayed(a, b);
    (first, t0.elapsed())
}

fn carried(v: &Value) -> Vec<Value> {
    v["relay"]["routes"].as_array().cloned().unwrap_or_default()
}

fn carried_bytes(v: &Value) -> u64 {
    carried(v)
        .iter()
        .map(|r| {
            r["forward"]["bytes"].as_u64().unwrap_or(0) + r["back"]["bytes"].as_u64().unwrap_or(0)
        })
        .sum()
}

/// `name` from the environment, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) a process has used so far, from
/// `/proc/PID/stat` (fields 14 and 15, in clock ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count from its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

/// A few timed transfers a -> b and the CPU the agents spent on them.
struct Rounds {
    mbit: Vec<f64>,
    /// Per agent: its name and CPU seconds per GB moved.
    cpu: Vec<(String, f64)>,
}

impl Rounds {
    /// `rounds` transfers of `mib` MiB a -> b, each checked byte for byte;
    /// `relays` are measured too, and those that used no CPU to speak of
    /// (the relay not in use) are left out of the figures.
    fn run(
        w: &NatLab,
        a: &Member,
        b: &Member,
        relays: &[&Member],
        port: u16,
        rounds: usize,
        mib: u64,
    ) -> Rounds {
        let agents: Vec<&Member> = [a, b].into_iter().chain(relays.iter().copied()).collect();
        let before: Vec<f64> = agents.iter().map(|m| cpu_seconds(m.proc().pid)).collect();
        let mbit = (0..rounds)
            .map(|i| w.transfer(a, b, port + i as u16 * 10, mib).mbit_per_s())
            .collect();
        let gb = (rounds as u64 * (mib << 20)) as f64 / 1e9;
        let cpu = agents
            .iter()
            .zip(before)
            .map(|(m, t0)| (m.name.clone(), (cpu_seconds(m.proc().pid) - t0) / gb))
            .filter(|(_, s)| *s > 0.05)
            .collect();
        Rounds { mbit, cpu }
    }

    fn median(&self) -> f64 {
        let mut v = self.mbit.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn throughput(&self) -> String {
        let min = self.mbit.iter().copied().fold(f64::MAX, f64::min);
        let max = self.mbit.iter().copied().fold(0.0, f64::max);
        format!("{:.0} Mbit/s [{min:.0}-{max:.0}]", self.median())
    }

    fn cpu(&self) -> String {
        let each: Vec<String> = self
            .cpu
            .iter()
            .map(|(name, s)| format!("{name} {s:.2}"))
            .collect();
        let total: f64 = self.cpu.iter().map(|(_, s)| s).sum();
        format!("{} (total {total:.2})", each.join(", "))
    }
}

/// Waits until `a`'s session with `b` has a standby route besides the one
/// in use.
fn wait_standby(a: &Member, b: &Member) {
    let pb = b.peer();
    a.node
        .wait_status(SETTLE, |v| {
            open_session(v, &pb).is_some_and(|s| s["path"]["standby"].as_u64().unwrap_or(0) >= 1)
        })
        .unwrap_or_else(|e| panic!("{} has no standby route to {}: {e:#}", a.name, b.name));
}

/// `ringlan status` (the table) of a member.
fn human_status(m: &Member) -> String {
    let out = std::process::Command::new(BIN)
        .args(["status", "--socket"])
        .arg(&m.node.socket)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Samples a stream's progress and returns the longest stretch without
/// any, from now until `done` holds.
fn longest_stall(job: &ringlan_lab::TcpStreamJob, mut done: impl FnMut() -> bool) -> Duration {
    let mut last = job.received();
    let mut last_at = Instant::now();
    let mut worst = Duration::ZERO;
    let t0 = Instant::now();
    while !done() && t0.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_millis(20));
        let now = job.received();
        if now != last {
            worst = worst.max(last_at.elapsed());
            last = now;
            last_at = Instant::now();
        }
    }
    worst.max(last_at.elapsed().min(Duration::from_millis(20)))
}

#[test]
fn symmetric_nats_talk_through_a_relay() {
    let Some(w) = NatLab::new() else { return };
    let Pair {
        sa,
        mut intros,
        mut a,
        mut b,
        ..
    } = w.pair([NatKind::FullyRandom; 2], &[1]);
    let mut intro = intros.remove(0);
    w.start(&mut intro);
    let (first, session) = start_relayed(&w, &mut a, &mut b);
    eprintln!(
        "a -> b across two symmetric NATs: first ping {first:?} (overlay-routed frames), \
         relayed session {session:?} after the agents started"
    );
    w.wait_ping(&b, &a, SETTLE);

    // Status names the relay and why; the session is the only one.
    for (x, y) in [(&a, &b), (&b, &a)] {
        let s = wait_relayed(x, y);
        assert_eq!(relayed_via(&s).as_deref(), Some("intro1"), "{s}");
        assert_eq!(s["reason"], "no direct path", "{s}");
        let v = x.status().unwrap();
        assert_eq!(entries_with(&v, &y.peer()).len(), 1, "{v}");
    }
    let human = human_status(&a);
    assert!(human.contains("relayed via intro1"), "{human}");

    w.transfer(&a, &b, 5001, 100);

    // The relay shows what it carries (status is published every second).
    let v = intro
        .node
        .wait_status(Duration::from_secs(5), |v| carried_bytes(v) > 100 * MIB)
        .unwrap_or_else(|e| panic!("the relay does not count the transfer: {e:#}"));
    assert!(v["relay"]["enabled"].as_bool().unwrap(), "{v}");
    assert!(!carried(&v).is_empty(), "{v}");
    // Both hops' tags are AEGIS-128L between agents that run it in
    // hardware (docs/relay.md), AES-256-GCM elsewhere.
    let tags = if ringlan_tunnel::crypto::aegis_in_hardware() {
        "aegis-128l"
    } else {
        "aes-256-gcm"
    };
    for r in carried(&v) {
        assert_eq!(r["tags_from"].as_str(), Some(tags), "{r}");
        assert_eq!(r["tags_to"].as_str(), Some(tags), "{r}");
    }
    let human = human_status(&intro);
    assert!(human.contains("relay     enabled"), "{human}");

    // A non-member behind a's NAT gets no session with the relay, so no
    // route; garbage at the relay's port changes nothing.
    let mut x = w.outsider("x", 12, &sa, &[1]);
    w.start(&mut x);
    let routes_before = carried(&intro.status().unwrap()).len();
    let relay_addr = introducer_addr(1);
    w.lab
        .in_ns(&b.host.ns, move || -> anyhow::Result<()> {
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            for i in 0..2000usize {
                let len = 1 + i % 1400;
                let d: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                sock.send_to(&d, relay_addr)?;
            }
            Ok(())
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let xs = x.status().unwrap();
    assert!(
        sessions(&xs).iter().all(|s| s["state"] != "open"),
        "the outsider got a session: {xs}"
    );
    let v = intro.status().unwrap();
    assert_eq!(carried(&v).len(), routes_before, "{v}");
    assert!(
        v["drops"]["udp_not_member"].as_u64().unwrap_or(0) > 0,
        "the relay should count the outsider's and the garbage's datagrams: {v}"
    );
    w.wait_ping(&a, &b, Duration::from_secs(5));
}

#[test]
fn a_dying_relay_hands_the_stream_to_another() {
    let Some(w) = NatLab::new() else { return };
    let pair = w.started_pair([NatKind::FullyRandom; 2], &[1, 2]);
    let (i1, i2, a, b) = (&pair.intros[0], &pair.intros[1], &pair.a, &pair.b);
    w.wait_ping(a, b, SETTLE);
    // A standby route is ready before anything fails.
    wait_standby(a, b);
    let pb = b.peer();

    let job = w.stream(a, b, 5002);
    let via = relayed_via(&open_session(&a.status().unwrap(), &pb).cloned().unwrap()).unwrap();
    let (dead, alive) = if via == "intro1" {
        (i1, "intro2")
    } else {
        (i2, "intro1")
    };
    // SIGKILL: the relay vanishes without closing anything.
    eprintln!("killing the relay in use ({via})");
    let killed = Instant::now();
    let at = job.received();
    let tx_before = open_session(&a.status().unwrap(), &pb).unwrap()["tx"]["bytes"]
        .as_u64()
        .unwrap();
    let p = dead.proc();
    w.lab.signal(&p, libc::SIGKILL).unwrap();
    let _ = w.lab.wait(&p, Duration::from_secs(5));
    let stall = longest_stall(&job, || job.received() > at + 16 * MIB);
    assert!(
        job.received() > at + 16 * MIB,
        "the stream did not resume after the relay died"
    );
    eprintln!(
        "relay killed: stream resumed, longest interruption {stall:?} ({:?} to move 16 MiB on)",
        killed.elapsed()
    );
    let s = a
        .node
        .wait_status(SETTLE, |v| {
            open_session(v, &pb).is_some_and(|s| relayed_via(s).as_deref() == Some(alive))
        })
        .unwrap_or_else(|e| panic!("a's session did not move to {alive}: {e:#}"));
    // The same session throughout: its counters went on.
    let s = open_session(&s, &pb).cloned().unwrap();
    assert!(
        s["tx"]["bytes"].as_u64().unwrap() > tx_before,
        "same session throughout: {s} (tx before: {tx_before})"
    );
    w.finish_stream(job, a, b);
}

#[test]
fn a_relayed_pair_moves_to_direct_when_its_nats_become_cone_like() {
    let Some(w) = NatLab::new() else { return };
    let mut pair = w.started_pair([NatKind::FullyRandom; 2], &[1]);
    let (a, b) = (&pair.a, &pair.b);
    w.wait_ping(a, b, SETTLE);
    wait_relayed(a, b);

    let job = w.stream(a, b, 5003);
    let t0 = Instant::now();
    w.lab
        .set_nat_kind(&mut pair.sa.router, NatKind::Masquerade)
        .unwrap();
    w.lab
        .set_nat_kind(&mut pair.sb.router, NatKind::Masquerade)
        .unwrap();
    let (pa, pb) = (a.peer(), b.peer());
    for (x, p, nat) in [(a, &pb, pair.sb.public_ip()), (b, &pa, pair.sa.public_ip())] {
        x.node
            .wait_status(SETTLE, |v| {
                open_session(v, p).is_some_and(|s| {
                    path_kind(s) == Some("direct-nat") && remote_ip(s) == Some(nat)
                })
            })
            .unwrap_or_else(|e| panic!("{}'s session did not go direct: {e:#}", x.name));
    }
    eprintln!(
        "relayed -> direct {:?} after the NATs turned cone-like",
        t0.elapsed()
    );
    let at = job.received();
    w.wait_flowing(&job, at, 8 * MIB, "stream flowing on the direct path");
    w.finish_stream(job, a, b);
}

#[test]
fn a_route_through_two_relays_when_no_single_node_reaches_both_ends() {
    let Some(w) = NatLab::new() else { return };
    let Pair {
        sa,
        sb,
        mut intros,
        mut a,
        mut b,
    } = w.pair([NatKind::FullyRandom; 2], &[1]);
    let mut intro = intros.remove(0);
    w.add_config(&intro, RELAY_OFF);
    let mut r1 = w.public_node("r1", 5, 5, &[1]);
    let mut r2 = w.public_node("r2", 6, 6, &[1]);
    w.add_config(&r1, RELAY_ON);
    w.add_config(&r2, RELAY_ON);
    // a cannot reach r2, b cannot reach r1.
    w.lab.block(&sa.router, public_ip(6)).unwrap();
    w.lab.block(&sb.router, public_ip(5)).unwrap();
    w.start(&mut intro);
    w.start(&mut r1);
    w.start(&mut r2);
    w.wait_mesh(&[&intro, &r1, &r2]);
    w.start(&mut a);
    w.start(&mut b);
    w.wait_ping(&a, &b, SETTLE);
    let s = wait_relayed(&a, &b);
    assert_eq!(relayed_via(&s).as_deref(), Some("r1>r2"), "{s}");
    let s = wait_relayed(&b, &a);
    assert_eq!(relayed_via(&s).as_deref(), Some("r2>r1"), "{s}");
    // The relays publish their status on their own ticks: wait for theirs.
    for r in [&r1, &r2] {
        r.node
            .wait_status(SETTLE, |v| !carried(v).is_empty())
            .unwrap_or_else(|e| panic!("{} carries nothing: {e:#}", r.name));
    }
    assert!(carried(&intro.status().unwrap()).is_empty());
    w.transfer(&a, &b, 5004, 16);
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture (tests/bench/relay.sh)"]
fn bench_relay_first_ping_throughput_and_failover() {
    // At least one transfer of at least 1 MiB: the figures divide by both.
    let rounds: usize = env_or("RELAY_BENCH_ROUNDS", 3).max(1);
    let mib: u64 = env_or("RELAY_BENCH_MIB", 400).max(1);
    // Direct, for reference: two cone-like NATs.
    let direct = {
        let Some(w) = NatLab::new() else { return };
        let p = w.started_pair([NatKind::Masquerade; 2], &[1]);
        w.wait_ping(&p.a, &p.b, SETTLE);
        w.wait_open(&p.a, &p.b);
        // Both sessions get the same few seconds for PMTU discovery.
        std::thread::sleep(Duration::from_secs(5));
        Rounds::run(&w, &p.a, &p.b, &[], 5101, rounds, mib)
    };
    let Some(w) = NatLab::new() else { return };
    let Pair {
        mut intros,
        mut a,
        mut b,
        ..
    } = w.pair([NatKind::FullyRandom; 2], &[1, 2]);
    let (mut i1, mut i2) = (intros.remove(0), intros.remove(0));
    w.add_config(&i1, RELAY_UNCAPPED);
    w.add_config(&i2, RELAY_UNCAPPED);
    w.start(&mut i1);
    w.start(&mut i2);
    w.wait_mesh(&[&i1, &i2]);
    let (first, session) = start_relayed(&w, &mut a, &mut b);
    std::thread::sleep(Duration::from_secs(5));
    let udp_errors = |m: &Member| -> String {
        let out = w.lab.exec(&m.host.ns, &["cat", "/proc/net/snmp"]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
        udp.get(1).map(|l| l.to_string()).unwrap_or_default()
    };
    let relayed = Rounds::run(&w, &a, &b, &[&i1, &i2], 5102, rounds, mib);
    if std::env::var_os("RELAY_BENCH_DEBUG").is_some() {
        for m in [&a, &i1, &i2, &b] {
            eprintln!("{}: {}", m.name, udp_errors(m));
        }
        std::thread::sleep(Duration::from_millis(1100));
        eprintln!("a: {}", a.status().unwrap()["sessions"]);
        for m in [&i1, &i2] {
            let v = m.status().unwrap();
            eprintln!("{}: relay {} drops {}", m.name, v["relay"], v["drops"]);
        }
        // Scheduling and batching of every agent (real-time or not, how
        // often it woke).
        for m in [&a, &i1, &i2, &b] {
            eprintln!("{}: io {}", m.name, m.status().unwrap()["io"]);
        }
    }
    wait_standby(&a, &b);
    let pb = b.peer();
    let job = w.stream(&a, &b, 5103);
    let via = relayed_via(&open_session(&a.status().unwrap(), &pb).cloned().unwrap()).unwrap();
    let dead = if via == "intro1" { &mut i1 } else { &mut i2 };
    let at = job.received();
    let p = dead.proc();
    w.lab.signal(&p, libc::SIGKILL).unwrap();
    let _ = w.lab.wait(&p, Duration::from_secs(5));
    let stall = longest_stall(&job, || job.received() > at + 16 * MIB);
    let t = job.finish().unwrap();
    assert!(t.intact());
    // The transfers' TCP congestion control (namespaces take the host's):
    // it bounds the relayed window where the round trip under load is
    // waiting for a core (docs/relay.md, "Tests and figures").
    let cc = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    println!(
        "relay bench (two symmetric NATs, relays = introducers; {} cores, TCP {cc}):",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  time to first ping from agent start: {first:?}; to the relayed session: {session:?} (goal < 3 s)"
    );
    println!(
        "  throughput ({rounds} x {mib} MiB, median [min-max]): direct (cone NATs) {}, through one relay {}: ratio {:.2} (goal >= 0.9)",
        direct.throughput(),
        relayed.throughput(),
        relayed.median() / direct.median()
    );
    println!(
        "  CPU s per GB moved (user + system, whole transfers): direct {}; relayed {}",
        direct.cpu(),
        relayed.cpu()
    );
    println!("  interruption when the relay in use dies: {stall:?} (goal < 1 s)");
}
