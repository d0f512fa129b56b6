//! End-to-end test of the Symphony overlay with real agents: 16 nodes, each
//! in its own namespace on one underlay bridge (192.0.2.0/24), plus one
//! introducer at 192.0.2.1; every agent has a TAP `rl-ring` at 10.77.0.N/24.
//! The introducer has a TAP too, so it is a ring position: the ring has 17
//! members.
//!
//! 17 debug agents on two shared cores are too heavy to build a lab per
//! property, so each test runs phases in order on one lab.
//!
//! Test 1 (phases 1-4, about 8 s):
//!
//! 1. the ring forms: every member lists its 2 nearest ring nodes on each
//!    side (computed here from all node ids) as successor / predecessor
//!    neighbours with open sessions; sessions per node are O(log N), not a
//!    full mesh;
//! 2. `ringlan status` (table) and `--json` show the neighbours and their
//!    link kinds;
//! 3. every pair of the 16 nodes pings over the overlay (120 pairs, in
//!    parallel threads);
//! 4. UDP broadcasts to 10.77.0.255 from one node reach each of the other 15
//!    exactly once (bounded flood, no duplicates).
//!
//! Test 2 (its own lab, agents with `keepalive: 2s`):
//!
//! 5. 4 nodes (fixed seed) are SIGKILLed; within [`REPAIR_BOUND`] every
//!    remaining pair pings again; then the ring re-forms among the
//!    survivors (time printed, hang guard only).
//!
//! Test 3 (its own lab):
//!
//! 6. a bulk TCP stream between two nodes that are not linked starts over
//!    the overlay (routed frames, forwarded by middle hops), an on-demand
//!    session between the two opens, the stream moves to it (its tx grows,
//!    no more routed frames) and completes with matching SHA-256.
//!
//! Waits poll `ringlan status --json` or traffic, with generous hang guards;
//! the only bound asserted is the repair time after the kills, which is the
//! behaviour under test. Needs root; `RINGLAN_SKIP_ROOT_TESTS=1` skips when
//! not root; `RINGLAN_E2E_LOG=debug` raises the agents' log level.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use ringlan_agent::config::Role;
use ringlan_lab::agents::{
    ping_once, serial, sessions, Member, World, LAN_INTRODUCER as INTRODUCER,
};
use ringlan_lab::{wait_for, Lab, SplitMix64};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
/// Number of (non-introducer) nodes.
const NODES: u8 = 16;
/// First node index: node i is 192.0.2.(FIRST+i) / 10.77.0.(FIRST+i).
const FIRST: u8 = 11;
/// `ring_links`: ring neighbours on each side.
const RING_LINKS: usize = 2;
/// Long links at N = 17: round(log2 17) = 4.
const LONG_LINKS: usize = 4;
/// Hang guard for starts, ring formation and traffic.
const SETTLE: Duration = Duration::from_secs(60);
/// After the kills, every surviving pair pings again within this (measured
/// from the first SIGKILL).
const REPAIR_BOUND: Duration = Duration::from_secs(10);
/// Hang guard of the repair phase: long enough to measure a repair that
/// misses [`REPAIR_BOUND`] (the failure message reports the time).
const REPAIR_GUARD: Duration = Duration::from_secs(120);
/// How many nodes are killed, and the seed that picks them.
const KILLS: usize = 4;
const KILL_SEED: u64 = 0x5eed_0016;
/// UDP port of the broadcast test, and how many datagrams are sent.
const BCAST_PORT: u16 = 5353 + 100;
const BCAST_COUNT: usize = 5;
/// Status poll interval (17 `ringlan status` processes per round).
const POLL: Duration = Duration::from_millis(500);

fn neighbours(status: &Value) -> &[Value] {
    status["neighbours"].as_array().map_or(&[], Vec::as_slice)
}

/// Peer ids with an open session.
fn open_peers(status: &Value) -> BTreeSet<String> {
    sessions(status)
        .iter()
        .filter(|s| s["state"] == "open")
        .filter_map(|s| s["peer_id"].as_str().map(str::to_string))
        .collect()
}

/// The link kind of neighbour `id` in `status`.
fn link_of<'a>(status: &'a Value, id: &str) -> Option<&'a str> {
    neighbours(status)
        .iter()
        .find(|n| n["node_id"].as_str() == Some(id))
        .and_then(|n| n["link"].as_str())
}

/// The ring of `ids` (sorted: 32 hex digits sort like the 128-bit
/// positions): for `me`, its `RING_LINKS` successors and predecessors.
fn expected_ring(ids: &[String], me: &str) -> (Vec<String>, Vec<String>) {
    let mut ring: Vec<&String> = ids.iter().collect();
    ring.sort();
    ring.dedup();
    let n = ring.len();
    let Some(pos) = ring.iter().position(|x| x.as_str() == me) else {
        return (Vec::new(), Vec::new());
    };
    let k = RING_LINKS.min(n.saturating_sub(1) / 2);
    let succ = (1..=k).map(|d| ring[(pos + d) % n].clone()).collect();
    let pred = (1..=k).map(|d| ring[(pos + n - d) % n].clone()).collect();
    (succ, pred)
}

/// What is missing for `status` to show the ring of `ids` around itself:
/// `None` when every expected successor / predecessor is a neighbour of that
/// kind with an open session.
fn ring_gap(status: &Value, ids: &[String], me: &str) -> Option<String> {
    let (succ, pred) = expected_ring(ids, me);
    let open = open_peers(status);
    let mut gaps = Vec::new();
    for (want, list) in [("successor", &succ), ("predecessor", &pred)] {
        for id in list.iter() {
            let kind = link_of(status, id);
            if kind != Some(want) || !open.contains(id) {
                gaps.push(format!(
                    "{want} {} is {:?}, session open: {}",
                    &id[..8],
                    kind,
                    open.contains(id)
                ));
            }
        }
    }
    (!gaps.is_empty()).then(|| gaps.join("; "))
}

/// Polls every member's status until each shows its ring; returns the
/// statuses. Errors name every member still missing something.
fn wait_ring(members: &[&Member], within: Duration) -> Result<HashMap<String, Value>> {
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    let deadline = Instant::now() + within;
    loop {
        let mut all = HashMap::new();
        let mut gaps = Vec::new();
        for m in members {
            match m.status() {
                Ok(v) => {
                    if let Some(g) = ring_gap(&v, &ids, &m.id) {
                        gaps.push(format!("{}: {g}", m.name));
                    }
                    all.insert(m.name.clone(), v);
                }
                Err(e) => gaps.push(format!("{}: {e:#}", m.name)),
            }
        }
        if gaps.is_empty() {
            return Ok(all);
        }
        if Instant::now() >= deadline {
            bail!(
                "ring not formed within {within:?}:\n  {}",
                gaps.join("\n  ")
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Pings every unordered pair of `members` in parallel (one thread per
/// source, each pinging the members after it), retrying each failed pair
/// until `within` passes. Returns the time the last pair first answered,
/// or the pairs that never did.
fn ping_all_pairs(
    lab: &Lab,
    members: &[&Member],
    within: Duration,
) -> Result<(Duration, usize), Vec<(String, String)>> {
    let t0 = Instant::now();
    let deadline = t0 + within;
    let last = Mutex::new(Duration::ZERO);
    let failed = Mutex::new(Vec::new());
    let mut pairs = 0;
    std::thread::scope(|s| {
        for (i, a) in members.iter().enumerate() {
            let targets: Vec<&Member> = members[i + 1..].to_vec();
            pairs += targets.len();
            let (last, failed) = (&last, &failed);
            s.spawn(move || {
                let mut pending = targets;
                loop {
                    pending.retain(|b| {
                        !ping_once(lab, &a.host.ns, b.overlay(), Duration::from_secs(1))
                    });
                    if pending.is_empty() {
                        let mut l = last.lock().unwrap();
                        *l = (*l).max(t0.elapsed());
                        return;
                    }
                    if Instant::now() >= deadline {
                        let mut f = failed.lock().unwrap();
                        f.extend(pending.iter().map(|b| (a.name.clone(), b.name.clone())));
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    if failed.is_empty() {
        Ok((last.into_inner().unwrap(), pairs))
    } else {
        Err(failed)
    }
}

/// Binds a UDP receiver on every `to` member, sends `BCAST_COUNT` distinct
/// datagrams to 10.77.0.255 from `from`, and returns per receiver how often
/// each datagram arrived.
fn broadcast_counts(
    lab: &Lab,
    from: &Member,
    to: &[&Member],
) -> Result<BTreeMap<String, [u32; BCAST_COUNT]>> {
    let stop_at = Mutex::new(None::<Instant>);
    let stop_at = std::sync::Arc::new(stop_at);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let mut receivers = Vec::new();
    for m in to {
        let ready = ready_tx.clone();
        let stop_at = stop_at.clone();
        let name = m.name.clone();
        let h = lab.in_ns(&m.host.ns, move || {
            let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, BCAST_PORT)))
                .context("bind receiver")?;
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            ready.send(()).ok();
            let mut counts = [0u32; BCAST_COUNT];
            let mut buf = [0u8; 1500];
            let guard = Instant::now() + SETTLE;
            loop {
                if let Some(t) = *stop_at.lock().unwrap() {
                    if Instant::now() >= t {
                        break;
                    }
                }
                ensure!(Instant::now() < guard, "receiver never told to stop");
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        let msg = &buf[..n];
                        if let Some(i) = msg
                            .strip_prefix(b"ringlan-bcast-")
                            .and_then(|r| std::str::from_utf8(r).ok())
                            .and_then(|r| r.parse::<usize>().ok())
                            .filter(|&i| i < BCAST_COUNT)
                        {
                            counts[i] += 1;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e).context("recv"),
                }
            }
            Ok((name, counts))
        })?;
        receivers.push(h);
    }
    drop(ready_tx);
    for _ in to {
        ready_rx
            .recv_timeout(SETTLE)
            .context("receiver did not bind")?;
    }
    let sender = lab.in_ns(&from.host.ns, || {
        let sock = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
        sock.set_broadcast(true)?;
        let dst = SocketAddr::from((Ipv4Addr::new(10, 77, 0, 255), BCAST_PORT));
        for i in 0..BCAST_COUNT {
            sock.send_to(format!("ringlan-bcast-{i}").as_bytes(), dst)
                .context("send broadcast")?;
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    })?;
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))?;
    // Let late copies (duplicates) arrive before counting.
    *stop_at.lock().unwrap() = Some(Instant::now() + Duration::from_secs(3));
    sent?;
    let mut out = BTreeMap::new();
    for h in receivers {
        let (name, counts) = h
            .join()
            .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        out.insert(name, counts);
    }
    Ok(out)
}

/// The lab: the world and its members, the introducer first. Holds the
/// test binary's [`serial`] lock until the lab is gone.
struct Ring {
    members: Vec<Member>,
    /// When the test began building the lab.
    started: Instant,
    w: World,
    _serial: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Ring {
    type Target = World;
    fn deref(&self) -> &World {
        &self.w
    }
}

/// Builds the lab (introducer + 16 nodes, `keepalive` in every config when
/// given), starts every agent and waits for the ring; returns the world and
/// every member's status at that point.
fn ring_lab(keepalive: Option<&str>) -> Option<(Ring, HashMap<String, Value>)> {
    let serial = serial();
    let t_start = Instant::now();
    let w = World::new(BIN, "ring", "rl-ring", "lan", SETTLE)?;
    let add = |name: &str, idx: u8, role: &str| {
        w.lan_member(name, idx, role, |c| {
            if let Some(k) = keepalive {
                c.extra = format!("keepalive: {k}\n");
            }
        })
    };
    let mut members = vec![add("intro", INTRODUCER, Role::Introducer.as_str())];
    for i in 0..NODES {
        members.push(add(&format!("n{i:02}"), FIRST + i, Role::Node.as_str()));
    }
    for m in &mut members {
        w.start_with_id(m);
    }
    let w = Ring {
        members,
        started: t_start,
        w,
        _serial: serial,
    };
    eprintln!("17 agents started in {:?}", t_start.elapsed());
    let t0 = Instant::now();
    let all: Vec<&Member> = w.members.iter().collect();
    let statuses = wait_ring(&all, SETTLE).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("ring formed {:?} after the last start", t0.elapsed());
    Some((w, statuses))
}

#[test]
fn sixteen_nodes_form_a_log_n_ring_ping_all_pairs_and_flood_exactly_once() {
    let Some((w, statuses)) = ring_lab(None) else {
        return;
    };

    // Memory of idle agents in the 16-node lab (issue: under 20 MiB RSS).
    let mut rss = Vec::new();
    for m in &w.members {
        let p = m.node.proc.clone().expect("started");
        let kib = std::fs::read_to_string(format!("/proc/{}/status", p.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        rss.push(kib);
    }
    let max_kib = rss.iter().copied().max().unwrap_or(0);
    eprintln!(
        "idle agent RSS: max {} KiB, mean {} KiB over {} agents",
        max_kib,
        rss.iter().sum::<u64>() / rss.len().max(1) as u64,
        rss.len()
    );
    assert!(max_kib > 0, "could not read agent RSS");
    assert!(max_kib < 20 * 1024, "an idle agent uses {max_kib} KiB");

    // -- 1. the ring formed (ring_lab); sessions per node ---------------------
    // Sessions per node: O(log N), not a full mesh. The introducer keeps a
    // session with every node that joined through it (docs/overlay.md), so
    // it is left out of the "not a full mesh" count.
    let bound = 2 * (RING_LINKS + RING_LINKS + LONG_LINKS);
    let mut dist = BTreeMap::new();
    let mut below_full = 0;
    let others = w.members.len() - 1;
    for m in &w.members {
        let v = &statuses[&m.name];
        let open = open_peers(v).len();
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for n in neighbours(v) {
            *kinds
                .entry(n["link"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        eprintln!(
            "{:>5} {}: {open:>2} open sessions, links {kinds:?}",
            m.name,
            &m.id[..8]
        );
        *dist.entry(open).or_insert(0) += 1;
        if m.idx != INTRODUCER {
            assert!(
                open <= bound,
                "{} has {open} open sessions > 2 (s + p + k) = {bound}: {v}",
                m.name
            );
            if open < others {
                below_full += 1;
            }
            // Every node keeps its session with the introducer.
            let intro = &w.members[0].id;
            assert!(
                open_peers(v).contains(intro),
                "{} has no open session with the introducer: {v}",
                m.name
            );
        }
    }
    eprintln!("distribution of open sessions per member (count: members): {dist:?}");
    assert!(
        below_full >= usize::from(NODES) * 3 / 4,
        "only {below_full} of {NODES} nodes have fewer than {others} sessions: not O(log N)"
    );

    // -- 2. status shows neighbours and link kinds ------------------------
    let mut kinds_seen = BTreeSet::new();
    for m in &w.members {
        let v = &statuses[&m.name];
        for n in neighbours(v) {
            kinds_seen.insert(n["link"].as_str().unwrap_or("?").to_string());
            assert!(
                n["node_id"].as_str().is_some_and(|s| s.len() == 32),
                "{}: neighbour without a node id: {n}",
                m.name
            );
        }
    }
    eprintln!("link kinds seen: {kinds_seen:?}");
    for k in ["successor", "predecessor", "introducer", "long"] {
        assert!(kinds_seen.contains(k), "no `{k}` link anywhere");
    }
    let ids: Vec<String> = w.members.iter().map(|m| m.id.clone()).collect();
    let names: HashMap<&str, &str> = w
        .members
        .iter()
        .map(|m| (m.id.as_str(), m.name.as_str()))
        .collect();
    for m in &w.members {
        let text = m.status_text();
        assert!(
            text.lines().any(|l| l.starts_with("neighbours: ")),
            "{}: no neighbours section:\n{text}",
            m.name
        );
        let (succ, pred) = expected_ring(&ids, &m.id);
        for (kind, list) in [("successor", succ), ("predecessor", pred)] {
            for id in list {
                let name = names[id.as_str()];
                assert!(
                    text.lines().any(|l| {
                        let cols: Vec<&str> = l.split_whitespace().collect();
                        cols.len() == 3 && cols[0] == &id[..8] && cols[1] == name && cols[2] == kind
                    }),
                    "{}: `ringlan status` has no row `{} {name} {kind}`:\n{text}",
                    m.name,
                    &id[..8]
                );
            }
        }
    }
    eprintln!(
        "----- `ringlan status` of n00:\n{}",
        w.members[1].status_text()
    );

    // -- 3. every pair pings ------------------------------------------------
    let nodes: Vec<&Member> = w.members.iter().filter(|m| m.idx != INTRODUCER).collect();
    match ping_all_pairs(&w.lab, &nodes, SETTLE) {
        Ok((t, pairs)) => eprintln!("all {pairs} pairs answered a ping within {t:?}"),
        Err(failed) => panic!("pairs never answered: {failed:?}"),
    }

    // -- 4. broadcast reaches each node exactly once ------------------------
    let from = nodes[0];
    let to: Vec<&Member> = w.members.iter().filter(|m| m.name != from.name).collect();
    let counts = broadcast_counts(&w.lab, from, &to).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "broadcast from {} (copies of each datagram): {counts:?}",
        from.name
    );
    for m in &nodes[1..] {
        assert_eq!(
            counts[&m.name], [1; BCAST_COUNT],
            "{} did not receive each broadcast exactly once",
            m.name
        );
    }

    eprintln!("total {:?}", w.started.elapsed());
}

#[test]
fn killing_four_of_sixteen_nodes_the_rest_ping_again_within_ten_seconds() {
    // A short keepalive so that dead peers can be noticed in seconds
    // (3 missed keepalives).
    let Some((w, _)) = ring_lab(Some("2s")) else {
        return;
    };
    let nodes: Vec<&Member> = w.members.iter().filter(|m| m.idx != INTRODUCER).collect();
    match ping_all_pairs(&w.lab, &nodes, SETTLE) {
        Ok((t, pairs)) => eprintln!("all {pairs} pairs answered a ping within {t:?}"),
        Err(failed) => panic!("pairs never answered: {failed:?}"),
    }

    // -- 5. kill 4 nodes, the rest repairs ------------------------------------
    let mut rng = SplitMix64(KILL_SEED);
    let mut victims = BTreeSet::new();
    while victims.len() < KILLS {
        // Never the introducer (index 0) nor n00 (index 1).
        let i = 2 + (rng.next_u64() % u64::from(NODES - 1)) as usize;
        victims.insert(i);
    }
    let victim_names: Vec<&str> = victims
        .iter()
        .map(|&i| w.members[i].name.as_str())
        .collect();
    eprintln!("killing {victim_names:?}");
    let t_kill = Instant::now();
    for &i in &victims {
        let p = w.members[i].node.proc.clone().unwrap();
        w.lab.signal(&p, libc::SIGKILL).unwrap();
    }
    for &i in &victims {
        let p = w.members[i].node.proc.clone().unwrap();
        w.lab.wait(&p, SETTLE).unwrap();
    }
    let survivors: Vec<&Member> = w
        .members
        .iter()
        .enumerate()
        .filter(|(i, m)| !victims.contains(i) && m.idx != INTRODUCER)
        .map(|(_, m)| m)
        .collect();
    let ping_start = t_kill.elapsed();
    let (t, pairs) = ping_all_pairs(&w.lab, &survivors, REPAIR_GUARD)
        .unwrap_or_else(|f| panic!("pairs never answered after the kills: {f:?}"));
    let t_repair = ping_start + t;
    eprintln!("after the kills all {pairs} surviving pairs answered a ping within {t_repair:?}");
    let mut ring_members: Vec<&Member> = vec![&w.members[0]];
    ring_members.extend(survivors.iter().copied());
    wait_ring(&ring_members, REPAIR_GUARD).unwrap_or_else(|e| panic!("after the kills: {e:#}"));
    eprintln!(
        "ring among the 13 survivors re-formed {:?} after the kills",
        t_kill.elapsed()
    );
    assert!(
        t_repair <= REPAIR_BOUND,
        "surviving pairs needed {t_repair:?} (> {REPAIR_BOUND:?}) to ping again"
    );
    eprintln!("total {:?}", w.started.elapsed());
}

/// Port of the bulk TCP transfer.
const TCP_PORT: u16 = 5201;
/// After the move to the direct session, the transfer goes on for this
/// many more bytes (all of them on the direct session).
const AFTER_MOVE: u64 = 128 << 20;

/// The routed counters of `status` for end node `id`: (tx frames, rx frames).
fn routed_with(status: &Value, id: &str) -> (u64, u64) {
    status["routed"]["peers"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["peer_id"].as_str() == Some(id)))
        .map_or((0, 0), |p| {
            (
                p["tx"]["frames"].as_u64().unwrap_or(0),
                p["rx"]["frames"].as_u64().unwrap_or(0),
            )
        })
}

/// Frames sent on the open session with `id`, if there is one.
fn session_tx(status: &Value, id: &str) -> Option<u64> {
    sessions(status)
        .iter()
        .find(|s| s["peer_id"].as_str() == Some(id) && s["state"] == "open")
        .and_then(|s| s["tx"]["frames"].as_u64())
}

#[test]
fn bulk_tcp_between_non_neighbours_goes_routed_then_moves_to_a_direct_session() {
    let Some((w, _)) = ring_lab(None) else {
        return;
    };
    let nodes: Vec<&Member> = w.members.iter().filter(|m| m.idx != INTRODUCER).collect();

    // -- 6. two nodes that are not linked, in either direction ------------
    let st: HashMap<String, Value> = nodes
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.status().unwrap_or_else(|e| panic!("{e:#}")),
            )
        })
        .collect();
    let unlinked = |a: &Member, b: &Member| {
        let (sa, sb) = (&st[&a.name], &st[&b.name]);
        !open_peers(sa).contains(&b.id)
            && !open_peers(sb).contains(&a.id)
            && link_of(sa, &b.id).is_none()
            && link_of(sb, &a.id).is_none()
            && sessions(sa)
                .iter()
                .all(|s| s["peer_id"].as_str() != Some(&b.id))
    };
    let (a, b) = nodes
        .iter()
        .flat_map(|a| nodes.iter().map(move |b| (*a, *b)))
        .find(|(a, b)| a.name != b.name && unlinked(a, b))
        .expect("some pair of the 16 nodes is not linked");
    eprintln!(
        "bulk TCP {} ({}) -> {} ({}): not linked",
        a.name,
        &a.id[..8],
        b.name,
        &b.id[..8]
    );
    let before: Vec<u64> = w
        .members
        .iter()
        .map(|m| {
            m.status()
                .map_or(0, |v| v["routed"]["forwarded"].as_u64().unwrap_or(0))
        })
        .collect();

    // -- 7. the transfer starts over the overlay, then moves ---------------
    let job = w
        .lab
        .tcp_stream(&a.host.ns, &b.host.ns, b.overlay(), TCP_PORT, SETTLE * 2)
        .unwrap_or_else(|e| panic!("start TCP stream: {e:#}"));
    let t0 = Instant::now();
    // Wait for the on-demand link with an open session whose tx counter
    // grows between two polls: frames go direct now. Status names a link
    // by its strongest reason, and a long link outranks an on-demand one:
    // in a 16-node ring either end may draw the other as a long link while
    // the stream runs (the overlay then keeps the one session for both),
    // so `long` is a direct session to the same peer too.
    let mut last_tx = None;
    let (routed_at_move, received_at_move) = loop {
        assert!(
            job.is_running(),
            "TCP stream ended early after {} bytes",
            job.received()
        );
        assert!(
            t0.elapsed() < SETTLE,
            "no direct (on-demand) session carrying the stream within {SETTLE:?}: {}",
            a.status().map(|v| v.to_string()).unwrap_or_default()
        );
        let sa = a.status().unwrap_or_else(|e| panic!("{e:#}"));
        let kind = link_of(&sa, &b.id);
        let tx = session_tx(&sa, &b.id);
        if direct_kind(kind) {
            if let (Some(prev), Some(now)) = (last_tx, tx) {
                if now > prev {
                    break (routed_with(&sa, &b.id).0, job.received());
                }
            }
            last_tx = tx;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "on-demand session {} -> {} carries the stream {:?} after the start, \
         after {} KiB received; {routed_at_move} frames went routed before",
        a.name,
        b.name,
        t0.elapsed(),
        received_at_move >> 10
    );
    // (a) frames went routed first, over more than one hop.
    assert!(routed_at_move > 0, "no frame to {} went routed", b.name);
    // (b) the link is on-demand (or long, above) at both ends (b's
    // snapshot may lag by a status tick).
    let sb = wait_for(SETTLE, "the on-demand link at the receiver", || {
        let sb = b.status()?;
        Ok(direct_kind(link_of(&sb, &a.id)).then_some(sb))
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        routed_with(&sb, &a.id).1 > 0,
        "{} got no routed frame from {}: {sb}",
        b.name,
        a.name
    );
    let forwarded: u64 = w
        .members
        .iter()
        .zip(&before)
        .map(|(m, b0)| {
            m.status()
                .map_or(0, |v| v["routed"]["forwarded"].as_u64().unwrap_or(0))
                .saturating_sub(*b0)
        })
        .sum();
    eprintln!("middle hops forwarded {forwarded} routed frames");
    assert!(
        forwarded > 0,
        "no node forwarded a routed frame: not multi-hop"
    );

    // (c) from now on frames go on the direct session, none routed.
    let tx_at_move = session_tx(&a.status().unwrap(), &b.id).unwrap_or(0);
    wait_until_received(&job, received_at_move + AFTER_MOVE);
    // Status snapshots are published on a tick: wait for one taken after
    // the extra bytes went (the session's tx counter moved).
    let sa = wait_for(
        SETTLE,
        "a status with the direct session's tx grown",
        || {
            let sa = a.status()?;
            let tx = session_tx(&sa, &b.id).context("direct session closed")?;
            Ok((tx > tx_at_move).then_some(sa))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let tx_after = session_tx(&sa, &b.id).expect("direct session still open");
    let routed_after = routed_with(&sa, &b.id).0;
    eprintln!(
        "after {} MiB more: direct session tx {tx_at_move} -> {tx_after} frames, \
         routed {routed_at_move} -> {routed_after}",
        AFTER_MOVE >> 20
    );
    assert!(
        tx_after > tx_at_move,
        "direct session tx did not grow: {sa}"
    );
    assert_eq!(
        routed_after, routed_at_move,
        "frames still went routed after the move"
    );
    assert!(direct_kind(link_of(&sa, &b.id)), "{sa}");

    // (d) the stream completes intact.
    let t = job
        .finish()
        .unwrap_or_else(|e| panic!("TCP stream failed: {e:#}"));
    eprintln!(
        "transfer: {} MiB in {:?} ({:.0} Mbit/s), sha256 {}",
        t.bytes_received >> 20,
        t.elapsed,
        t.mbit_per_s(),
        &t.received_sha256[..16]
    );
    assert!(t.intact(), "transfer damaged: {t:?}");
    eprintln!("total {:?}", w.started.elapsed());
}

/// A link between two nodes that are not ring neighbours and carry a
/// stream: on-demand, or long when either end drew the other as a
/// long link meanwhile (status shows the strongest reason only).
fn direct_kind(kind: Option<&str>) -> bool {
    matches!(kind, Some("on-demand" | "long"))
}

/// Waits until the stream's receiver has read `bytes` (hang guard
/// [`SETTLE`]); fails if the stream ends first.
fn wait_until_received(job: &ringlan_lab::TcpStreamJob, bytes: u64) {
    let deadline = Instant::now() + SETTLE;
    while job.received() < bytes {
        assert!(
            job.is_running(),
            "TCP stream ended after {} bytes",
            job.received()
        );
        assert!(
            Instant::now() < deadline,
            "TCP stream stalled at {} bytes",
            job.received()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
