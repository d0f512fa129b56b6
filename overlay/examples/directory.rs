//! Directory figures (docs/directory.md "Figures"): joins N nodes in the
//! simulator (real sans-IO overlays, virtual clock), every node publishes
//! four records (`node:`, `name:`, `ip:`, `mac:`), then prints records per
//! node, get success and lookup hops, the same after 10% of the nodes fail
//! at once (and the ring re-replicates), put success after the failure, a
//! scan of the `node:` records, and the messages an ARP request costs
//! through the directory against a flood.
//!
//! `cargo run --release -p ringlan-overlay --example directory -- [N ...] [--k K]`
//! (default N = 1000 10000; `--k` fixes the long-link count, default 4).

use ringlan_overlay::sim::{GetStats, Sim, SimConfig};
use std::time::{Duration, Instant};

fn keys_of(i: u32) -> [String; 4] {
    [
        format!("node:{i:032x}"),
        format!("name:n{i}"),
        format!("ip:10.77.{}.{}", i / 256, i % 256),
        format!("mac:02:00:00:00:{:02x}:{:02x}", i / 256, i % 256),
    ]
}

fn show(what: &str, g: &GetStats) -> String {
    format!(
        "{what}: found {}/{} ({:.2}%), hops mean {:.2} max {}, messages/get {:.2}",
        g.found,
        g.asked,
        100.0 * g.found as f64 / g.asked.max(1) as f64,
        g.mean_hops,
        g.max_hops,
        g.messages_per_get
    )
}

/// `samples` gets of random published keys from random live nodes.
fn sample(sim: &mut Sim, published: &[String], samples: usize, salt: u64) -> Vec<(u32, String)> {
    let live = sim.live();
    let mut x = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..samples)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let asker = live[(x % live.len() as u64) as usize];
            let key = published[((x >> 20) % published.len() as u64) as usize].clone();
            (asker, key)
        })
        .collect()
}

fn run(n: usize, k: usize) {
    let wall = Instant::now();
    let mut cfg = SimConfig::new(n, 13);
    cfg.long_links = Some(k);
    let mut sim = Sim::new(cfg);
    sim.join_all(Duration::from_secs(90));
    println!(
        "N = {n}, k = {k}: joined in {:.0?} wall, ring errors {}",
        wall.elapsed(),
        sim.ring_errors()
    );
    let mut published = Vec::new();
    let mut refused = 0;
    for i in sim.live() {
        for key in keys_of(i) {
            match sim.dir_put(i, &key, vec![0x5a; 120]) {
                Ok(()) => published.push(key),
                Err(_) => refused += 1,
            }
        }
    }
    let m0 = sim.dir_messages;
    sim.run_for(Duration::from_secs(15));
    let (mean, max) = sim.records_per_node();
    println!(
        "  published {} records ({refused} refused), {:.1} directory messages/put; records per node mean {mean:.2} max {max}",
        published.len(),
        (sim.dir_messages - m0) as f64 / published.len().max(1) as f64
    );
    let q = sample(&mut sim, &published, 2000, 1);
    let before = sim.get_many(&q, Duration::from_secs(10));
    println!("  {}", show("get before failure", &before));

    let dead = sim.fail_fraction(0.10);
    let q = sample(&mut sim, &published, 2000, 2);
    let during = sim.get_many(&q, Duration::from_secs(10));
    println!(
        "  {} nodes failed at once; {}",
        dead.len(),
        show("get 0-10 s after", &during)
    );
    sim.run_for(Duration::from_secs(60));
    let q = sample(&mut sim, &published, 2000, 3);
    let after = sim.get_many(&q, Duration::from_secs(10));
    let (mean, max) = sim.records_per_node();
    println!(
        "  ring errors {} after 70 s; {}; records per node mean {mean:.2} max {max}",
        sim.ring_errors(),
        show("get after re-replication", &after)
    );
    // Puts after the failure: each live node republishes its name.
    let mut fresh = Vec::new();
    for i in sim.live() {
        let key = format!("name:n{i}");
        if sim.dir_put(i, &key, vec![0xa5; 120]).is_ok() {
            fresh.push((i, key));
        }
    }
    sim.run_for(Duration::from_secs(10));
    let keys: Vec<String> = fresh.into_iter().map(|(_, k)| k).collect();
    let q = sample(&mut sim, &keys, 2000, 4);
    let put_after = sim.get_many(&q, Duration::from_secs(10));
    println!("  {}", show("put after failure, then get", &put_after));
    let who = sim.live()[0];
    let t = sim.elapsed();
    match sim.dir_scan(who, Duration::from_secs(120)) {
        Some((records, complete)) => println!(
            "  scan of node: records: {} records, complete {complete}, {:.1} s virtual",
            records.len(),
            (sim.elapsed() - t).as_secs_f64()
        ),
        None => println!("  scan: no answer within 120 s"),
    }
    // An ARP request for a member's IP: a flood reaches every node; through
    // the directory it is one get on a cache miss, none on a hit.
    let f = sim.broadcast(who);
    println!(
        "  ARP request: flood {} messages; directory get {:.2} messages (cache miss), 0 (fresh cache)",
        f.messages, after.messages_per_get
    );
    println!("  wall time {:.0?}", wall.elapsed());
}

fn main() {
    let mut sizes = Vec::new();
    let mut k = 4;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--k" {
            k = args.next().and_then(|v| v.parse().ok()).unwrap_or(4);
        } else if let Ok(n) = a.parse() {
            sizes.push(n);
        }
    }
    if sizes.is_empty() {
        sizes = vec![1000, 10000];
    }
    for n in sizes {
        run(n, k);
    }
}
