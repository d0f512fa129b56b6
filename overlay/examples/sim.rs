//! Overlay simulator bench: joins N nodes (real sans-IO `Overlay`s over an
//! in-memory router with latency, virtual clock), lets the ring settle,
//! and prints greedy hop counts, links per node, flood coverage and
//! duplicates, messages per flood, and recovery after 10% of the nodes fail
//! at once.
//!
//! `cargo run --release -p ringlan-overlay --example sim -- [N ...] [--k K]`
//! (default N = 1000 10000 100000, each skipped when the machine lacks
//! the memory; `--k 4` fixes the long-link count, otherwise
//! about log2 of each node's size estimate).

use ringlan_overlay::sim::{Sim, SimConfig};
use std::time::{Duration, Instant};

/// Resident memory now, MiB.
fn rss_mib() -> f64 {
    proc_status_mib("VmRSS:")
}

/// Peak resident memory of the process so far, MiB.
fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM:")
}

fn proc_status_mib(key: &str) -> f64 {
    proc_file_mib("/proc/self/status", key)
}

fn proc_meminfo_mib(key: &str) -> f64 {
    proc_file_mib("/proc/meminfo", key)
}

/// A `key: N kB` line of a /proc file, in MiB (0 when missing).
fn proc_file_mib(path: &str, key: &str) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn floods(sim: &mut Sim, origins: usize) -> String {
    let live = sim.live();
    let (mut reached, mut expected, mut dups, mut msgs, mut depth) = (0, 0, 0, 0, 0);
    for k in 0..origins {
        let o = live[k * live.len() / origins];
        let f = sim.broadcast(o);
        reached += f.reached;
        expected += f.expected;
        dups += f.duplicates;
        msgs += f.messages;
        depth = depth.max(f.depth);
    }
    format!(
        "flood coverage {:.4}% ({reached}/{expected}), duplicates {dups}, messages/flood {:.1} (per node {:.3}), max depth {depth}",
        100.0 * reached as f64 / expected.max(1) as f64,
        msgs as f64 / origins as f64,
        msgs as f64 / expected.max(1) as f64,
    )
}

fn run(n: usize, k: Option<usize>) {
    let wall = Instant::now();
    let mut cfg = SimConfig::new(n, 42);
    cfg.long_links = k;
    // Join at about 200 nodes per virtual second.
    cfg.join_interval = Duration::from_millis(5);
    let mut sim = Sim::new(cfg);
    let every = 2_000_000;
    let last = sim.now() + Duration::from_millis(5) * (n as u32 + 1);
    let mut progress = |s: &Sim| {
        eprintln!(
            "  .. t={:.0}s started {} messages {} rss {:.0} MiB wall {:.0}s",
            s.elapsed().as_secs_f64(),
            s.started(),
            s.control_messages,
            rss_mib(),
            wall.elapsed().as_secs_f64()
        );
    };
    sim.run_until_with(last, every, &mut progress);
    // Settle 120 s (virtual) after the last start. Stopping as soon as the
    // ring is consistent (tried: 30 s after the last start at N = 32,768)
    // left link churn going on (long links redrawn, links closing after
    // their grace) and floods reached 99.97% instead of 100%.
    let settle_until = sim.now() + Duration::from_secs(120);
    sim.run_until_with(settle_until, every, &mut progress);
    let join_wall = wall.elapsed().as_secs_f64();
    let msgs_per_node = sim.control_messages as f64 / n as f64;
    println!(
        "N={n} k={} settled at t={:.0}s (wall {join_wall:.0}s), rss {:.0} MiB ({:.1} KiB/node), control messages {:.0}/node",
        k.map(|k| k.to_string()).unwrap_or("auto".into()),
        sim.elapsed().as_secs_f64(),
        rss_mib(),
        rss_mib() * 1024.0 / n as f64,
        msgs_per_node
    );
    let est: Vec<f64> = sim
        .live()
        .iter()
        .filter_map(|i| sim.node(*i).map(|o| o.estimated_size()))
        .collect();
    let mean_est = est.iter().sum::<f64>() / est.len().max(1) as f64;
    let longs: usize = sim
        .live()
        .iter()
        .filter_map(|i| sim.node(*i).map(|o| o.long_links().len()))
        .sum();
    println!(
        "  ring errors {}, size estimate mean {mean_est:.0}, long links/node {:.2}",
        sim.ring_errors(),
        longs as f64 / n as f64
    );
    let h = sim.hop_stats(20_000);
    println!(
        "  greedy hops: mean {:.2}, p99 {}, max {}, failed {}/{}",
        h.mean, h.p99, h.max, h.failed, h.routes
    );
    let (mean, max) = sim.link_stats();
    println!("  links/node: mean {mean:.2}, max {max}");
    let (mut max_in_long, mut max_foreign, mut over) = (0, 0, 0);
    let (mut bound_min, mut bound_max) = (usize::MAX, 0);
    for i in sim.live() {
        if let Some(o) = sim.node(i) {
            let c = o.link_counts();
            max_in_long = max_in_long.max(c.incoming_long);
            max_foreign = max_foreign.max(c.incoming_long + c.incoming_ring);
            let b = o.link_bound();
            bound_min = bound_min.min(b);
            bound_max = bound_max.max(b);
            if c.topology() > b {
                over += 1;
            }
        }
    }
    println!(
        "  per-node bound 2 x (s + p + k) = {bound_min}..{bound_max}: {over} nodes above it; incoming long links max {max_in_long}, links only the peer wants max {max_foreign}"
    );
    let rejects: u64 = sim
        .live()
        .iter()
        .filter_map(|i| sim.node(*i).map(|o| o.stats().link_rejects))
        .sum();
    println!("  long-link requests refused or taken back (caps): {rejects}");
    println!("  {}", floods(&mut sim, 10));

    let t_fail = Instant::now();
    let victims = sim.fail_fraction(0.10);
    let mut repaired_at = None;
    let mut reach_at = None;
    let mut h = sim.hop_stats(0);
    for step in 1..=24 {
        sim.run_for(Duration::from_secs(5));
        if repaired_at.is_none() && sim.ring_errors() == 0 {
            repaired_at = Some(step * 5);
        }
        if repaired_at.is_some() {
            // All survivors reach all survivors: sampled greedy routes.
            h = sim.hop_stats(20_000);
            if h.failed == 0 {
                reach_at = Some(step * 5);
                break;
            }
        }
    }
    let secs = |s: Option<i32>| {
        s.map(|s| format!("{s}s"))
            .unwrap_or("not within 120s".into())
    };
    println!(
        "  10% failure ({} nodes): ring repaired after {}, every sampled route succeeds after {} (virtual; failure detection {}s), wall {:.0}s",
        victims.len(),
        secs(repaired_at),
        secs(reach_at),
        sim.cfg.detect_after.as_secs(),
        t_fail.elapsed().as_secs_f64()
    );
    println!(
        "  after failure: hops mean {:.2}, p99 {}, failed routes {}/{}; ring errors {}",
        h.mean,
        h.p99,
        h.failed,
        h.routes,
        sim.ring_errors()
    );
    println!("  after failure: {}", floods(&mut sim, 10));
    println!(
        "  wall total {:.0}s, peak rss {:.0} MiB (process so far)",
        wall.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
}

fn main() {
    let mut sizes = Vec::new();
    let mut k = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--k" {
            k = args.next().and_then(|v| v.parse().ok());
        } else if let Ok(n) = a.parse() {
            sizes.push(n);
        }
    }
    if sizes.is_empty() {
        sizes = vec![1000, 10_000, 100_000];
    }
    for n in sizes {
        // Memory permitting: about 32 KiB per node with k = 4, 64 KiB
        // with k = log2 n (measured, see docs/overlay.md).
        let need_mib = n as f64
            * if k.is_some_and(|k| k <= 4) {
                32.0
            } else {
                64.0
            }
            / 1024.0;
        let avail = proc_meminfo_mib("MemAvailable:");
        if avail > 0.0 && need_mib > avail * 0.8 {
            println!("N={n}: skipped, needs about {need_mib:.0} MiB, {avail:.0} MiB available");
            continue;
        }
        run(n, k);
    }
}
