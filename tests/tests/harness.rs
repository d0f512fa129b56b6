//! Tests of the lab harness itself, on real network namespaces (need root;
//! `RINGLAN_SKIP_ROOT_TESTS=1` skips them when not root).

use ringlan_lab::{Direction, Host, Lab, NatKind, Natted};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("socket address literal")
}

fn host_lists() -> (String, String) {
    let ns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    (
        String::from_utf8_lossy(&ns.stdout).into_owned(),
        String::from_utf8_lossy(&links.stdout).into_owned(),
    )
}

#[test]
fn two_hosts_on_a_bridge_ping_each_other() {
    let Some(lab) = Lab::for_test() else { return };
    let lan = lab.switch("lan").unwrap();
    let a = lab.host("a", &lan, "192.0.2.10/24", None).unwrap();
    let b = lab.host("b", &lan, "192.0.2.11/24", None).unwrap();
    let ab = lab.ping_stats(&a.ns, b.addr, 3).unwrap();
    assert_eq!((ab.transmitted, ab.received), (3, 3), "a -> b: {ab:?}");
    assert!(ab.avg_rtt.is_some());
    assert!(lab.ping(&b.ns, a.addr, 1));
    // The bridge lives in the switch namespace, not in the host namespace.
    let (_, links) = host_lists();
    assert!(
        !links.contains(lab.prefix()),
        "lab link in host namespace:\n{links}"
    );
    assert!(lab.run(&lan.ns, &["ip", "link", "show", "br0"]).is_ok());
    // No route out of the lab: an address outside the lab is unreachable.
    assert!(!lab.ping(&a.ns, ip("203.0.113.99"), 1));
}

#[test]
fn tcp_transfer_of_20_mib_arrives_intact() {
    let Some(lab) = Lab::for_test() else { return };
    let lan = lab.switch("lan").unwrap();
    let a = lab.host("a", &lan, "192.0.2.10/24", None).unwrap();
    let b = lab.host("b", &lan, "192.0.2.11/24", None).unwrap();
    let t = lab
        .tcp_transfer(&a.ns, &b.ns, b.addr, 5001, 20, Duration::from_secs(60))
        .unwrap();
    assert_eq!(t.bytes_sent, 20 * 1024 * 1024);
    assert_eq!(t.bytes_received, t.bytes_sent);
    assert_eq!(t.received_sha256, t.sent_sha256);
    assert_eq!(t.sent_sha256.len(), 64);
    assert!(t.intact());
}

/// Host `h` behind a NAT router of `kind` asks `n` UDP echoes on the public
/// side (hosts `p0`.. at 198.51.100.10..) from one socket which source
/// address each sees. Returns the NAT, the echo hosts and what they saw.
fn observe_through_nat(lab: &Lab, kind: NatKind, n: u8) -> (Natted, Vec<Host>, Vec<SocketAddr>) {
    let nat = lab
        .natted_host(kind, "192.0.2.1/24", "198.51.100.2/24", "192.0.2.10/24")
        .unwrap();
    let mut hosts = Vec::new();
    let mut echoes = Vec::new();
    for i in 0..n {
        let addr = format!("198.51.100.{}", 10 + i);
        let p = lab
            .host(&format!("p{i}"), &nat.wan, &format!("{addr}/24"), None)
            .unwrap();
        echoes.push(lab.udp_echo(&p.ns, sa(&format!("{addr}:7000"))).unwrap());
        hosts.push(p);
    }
    let targets: Vec<SocketAddr> = echoes.iter().map(|e| e.addr).collect();
    let seen = lab
        .udp_observe(&nat.host.ns, sa("0.0.0.0:40000"), &targets, T)
        .unwrap();
    (nat, hosts, seen)
}

#[test]
fn masquerade_nat_maps_endpoint_independently() {
    let Some(lab) = Lab::for_test() else { return };
    let (nat, p, seen) = observe_through_nat(&lab, NatKind::Masquerade, 2);
    for s in &seen {
        assert_eq!(
            s.ip(),
            nat.router.public_addr(),
            "public side must see the router: {seen:?}"
        );
    }
    assert_eq!(
        seen[0].port(),
        seen[1].port(),
        "masquerade keeps one mapping: {seen:?}"
    );
    // The public side cannot reach the inside network directly.
    assert!(!lab.ping(&p[0].ns, nat.host.addr, 1));
}

#[test]
fn fully_random_nat_maps_per_destination() {
    let Some(lab) = Lab::for_test() else { return };
    let (nat, _, seen) = observe_through_nat(&lab, NatKind::FullyRandom, 3);
    let public = nat.router.public_addr();
    assert!(seen.iter().all(|s| s.ip() == public), "{seen:?}");
    // Three random ports: equal by chance with probability ~ 2^-32.
    let ports: HashSet<u16> = seen.iter().map(|s| s.port()).collect();
    assert!(
        ports.len() >= 2,
        "fully-random must map per destination: {seen:?}"
    );
}

#[test]
fn router_renumbering_changes_the_mapped_address() {
    let Some(lab) = Lab::for_test() else { return };
    let Natted {
        wan,
        router: mut nat,
        host: h,
        ..
    } = lab
        .natted_host(
            NatKind::Masquerade,
            "192.0.2.1/24",
            "198.51.100.2/24",
            "192.0.2.10/24",
        )
        .unwrap();
    let p = lab.host("p", &wan, "198.51.100.10/24", None).unwrap();
    let echo = lab.udp_echo(&p.ns, sa("198.51.100.10:7000")).unwrap();
    let before = lab
        .udp_observe(&h.ns, sa("0.0.0.0:40000"), &[echo.addr], T)
        .unwrap();
    assert_eq!(before[0].ip(), ip("198.51.100.2"));
    lab.set_public_addr(&mut nat, "198.51.100.3/24").unwrap();
    assert_eq!(nat.public_addr(), ip("198.51.100.3"));
    let after = lab
        .udp_observe(&h.ns, sa("0.0.0.0:40000"), &[echo.addr], T)
        .unwrap();
    assert_eq!(
        after[0].ip(),
        ip("198.51.100.3"),
        "before {before:?} after {after:?}"
    );
    lab.flush_conntrack(&nat.ns).unwrap();
}

#[test]
fn loss_injection_drops_roughly_the_configured_share() {
    let Some(lab) = Lab::for_test() else { return };
    let lan = lab.switch("lan").unwrap();
    let a = lab.host("a", &lan, "192.0.2.10/24", None).unwrap();
    let b = lab.host("b", &lan, "192.0.2.11/24", None).unwrap();
    // Resolve ARP first (ARP is never dropped, but keep the count clean).
    assert!(lab.ping(&a.ns, b.addr, 1));
    lab.set_loss(&b.ns, "eth0", Direction::Ingress, 30).unwrap();
    let s = lab.ping_stats(&a.ns, b.addr, 100).unwrap();
    assert_eq!(s.transmitted, 100);
    // Binomial(100, 0.3): 10..=60 lost is outside by > 4 standard deviations.
    assert!(
        (10..=60).contains(&s.lost()),
        "30% rule lost {} of 100",
        s.lost()
    );
    lab.set_loss(&b.ns, "eth0", Direction::Ingress, 0).unwrap();
    let s = lab.ping_stats(&a.ns, b.addr, 20).unwrap();
    assert_eq!(s.lost(), 0, "loss rule removed: {s:?}");
    lab.set_loss(&b.ns, "eth0", Direction::Both, 100).unwrap();
    assert!(!lab.ping(&a.ns, b.addr, 3));
}

#[test]
fn processes_log_and_are_killed() {
    let Some(lab) = Lab::for_test() else { return };
    let ns = lab.add_ns("proc").unwrap();
    let short = lab
        .spawn(
            &ns,
            "echo",
            &["sh", "-c", "echo hello; echo oops >&2; exit 3"],
        )
        .unwrap();
    let st = lab.wait(&short, T).unwrap();
    assert_eq!(st.code(), Some(3));
    let log = lab.log(&short);
    assert!(log.contains("hello") && log.contains("oops"), "{log}");
    // A long runner inside the namespace sees only the namespace's links.
    let long = lab
        .spawn(&ns, "sleeper", &["sh", "-c", "ip -o link; exec sleep 600"])
        .unwrap();
    ringlan_lab::wait_until(T, || lab.log(&long).contains("lo:")).unwrap();
    assert_eq!(
        lab.log(&long).lines().count(),
        1,
        "only lo in a fresh namespace"
    );
    assert!(lab.is_running(&long));
    let st = lab.kill(&long).unwrap();
    assert!(!st.success());
    assert!(!lab.is_running(&long));
}

#[test]
fn drop_removes_everything_even_with_running_processes() {
    let Some(lab) = Lab::for_test() else { return };
    let prefix = lab.prefix().to_string();
    let dir = lab.dir().to_path_buf();
    let Natted { host: h, .. } = lab
        .natted_host(
            NatKind::FullyRandom,
            "192.0.2.1/24",
            "203.0.113.2/24",
            "192.0.2.10/24",
        )
        .unwrap();
    let p = lab.spawn(&h.ns, "sleeper", &["sleep", "600"]).unwrap();
    let (before, _) = host_lists();
    assert!(before.contains(&prefix));
    drop(lab);
    let (ns, links) = host_lists();
    assert!(!ns.contains(&prefix), "namespaces left:\n{ns}");
    assert!(!links.contains(&prefix), "links left:\n{links}");
    assert!(!std::path::Path::new("/proc")
        .join(p.pid.to_string())
        .exists());
    assert!(!dir.exists());
}

#[test]
fn drop_during_panic_still_cleans_up() {
    if !ringlan_lab::is_root() && std::env::var(ringlan_lab::SKIP_ENV).is_ok_and(|v| v == "1") {
        return;
    }
    let prefix = std::sync::Mutex::new(String::new());
    let r = std::panic::catch_unwind(|| {
        let lab = Lab::new().unwrap();
        *prefix.lock().unwrap() = lab.prefix().to_string();
        let ns = lab.add_ns("x").unwrap();
        lab.spawn(
            &ns,
            "talker",
            &["sh", "-c", "echo last words; exec sleep 600"],
        )
        .unwrap();
        panic!("deliberate");
    });
    assert!(r.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(!prefix.is_empty());
    let (ns, _) = host_lists();
    assert!(!ns.contains(&prefix), "namespaces left after panic:\n{ns}");
    // The kept directory (for post-mortem) is removed by the next stale sweep
    // only once this process is gone; remove it here.
    let dir = std::env::temp_dir()
        .join("ringlan-lab")
        .join(prefix.trim_end_matches('-'));
    assert!(dir.join("talker.log").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stale_leftovers_of_dead_owners_are_removed() {
    let Some(lab) = Lab::for_test() else { return };
    // A namespace named like one of a lab whose owner died (pid beyond
    // pid_max cannot be alive).
    let stale = "rl999999999x0-stale";
    let out = Command::new("ip")
        .args(["netns", "add", stale])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Our own live namespaces must survive the sweep.
    let mine = lab.add_ns("live").unwrap();
    // Labs created by tests running in parallel sweep too, so the stale
    // namespace may already be gone; it must be gone after this call.
    Lab::cleanup_stale().unwrap();
    let (ns, _) = host_lists();
    assert!(!ns.contains(stale));
    assert!(ns.contains(mine.name()));
}

#[test]
fn tcp_stream_runs_until_finished_and_signal_reaches_the_process() {
    let Some(lab) = Lab::for_test() else { return };
    let lan = lab.switch("lan").unwrap();
    let a = lab.host("a", &lan, "192.0.2.10/24", None).unwrap();
    let b = lab.host("b", &lan, "192.0.2.11/24", None).unwrap();
    let job = lab
        .tcp_stream(&a.ns, &b.ns, b.addr, 5002, Duration::from_secs(60))
        .unwrap();
    ringlan_lab::wait_until(T, || job.received() > 1024 * 1024).unwrap();
    assert!(job.is_running());
    let t = job.finish().unwrap();
    assert!(t.bytes_sent > 1024 * 1024);
    assert!(t.intact(), "{t:?}");

    let p = lab.spawn(&a.ns, "sleeper", &["sleep", "600"]).unwrap();
    lab.signal(&p, libc::SIGKILL).unwrap();
    let st = lab.wait(&p, T).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    assert!(lab.signal(&p, libc::SIGKILL).is_err(), "already exited");
}
