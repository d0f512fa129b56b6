//! Sessions rekey under load, end to end: real agents configured with a
//! short `rekey_interval` carry a 60 s TCP stream. Every byte arrives
//! intact, the pair keeps the session it started with (no re-handshake:
//! its age spans the stream), and the session's keys were replaced many
//! times meanwhile (`rekeys` in `ringlan status --json`). The exchange is
//! specified in docs/crypto-profile.md 6.3.
//!
//! Needs root; `RINGLAN_SKIP_ROOT_TESTS=1` skips it when not root.

use std::time::{Duration, Instant};

use ringlan_lab::agents::{open_session, serial, Member, World};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
const MIB: u64 = 1024 * 1024;
/// Hang guard for agents to start and mesh (not a timing assertion).
const SETTLE: Duration = Duration::from_secs(30);
const STREAM_FOR: Duration = Duration::from_secs(60);
/// The configured interval: about 20 rekeys during the stream.
const REKEY: &str = "rekey_interval: 3s\n";

/// `m`'s open session with `peer` in `m`'s status `st`: (age in seconds,
/// rekeys, bytes received on it). Its packets are sealed with the fastest
/// suite both agents run (AEGIS-128L on a CPU with AES instructions,
/// docs/crypto-profile.md 2), whatever the epoch.
fn session(st: &Value, m: &Member, peer: &Member) -> (u64, u64, u64) {
    let s = open_session(st, &peer.peer())
        .unwrap_or_else(|| panic!("{} has no open session with {}", m.name, peer.name));
    let cipher = if ringlan_tunnel::crypto::aegis_in_hardware() {
        "aegis-128l"
    } else {
        "aes-256-gcm"
    };
    assert_eq!(s["cipher"].as_str(), Some(cipher), "{s}");
    (
        s["age_secs"].as_u64().expect("age_secs"),
        s["rekeys"].as_u64().expect("rekeys"),
        s["rx"]["bytes"].as_u64().expect("rx bytes"),
    )
}

#[test]
fn a_60_second_stream_crosses_many_rekeys_intact_on_one_session() {
    let _serial = serial();
    let Some(w) = World::new(BIN, "rekey", "rl-rekey", "lan", SETTLE) else {
        return;
    };
    let short = |c: &mut ringlan_lab::agents::AgentConfig| c.extra.push_str(REKEY);
    let mut intro = w.lan_member("intro", 1, "introducer", short);
    let mut a = w.lan_member("a", 11, "node", short);
    let mut b = w.lan_member("b", 12, "node", short);
    w.start_mesh(&mut [&mut intro, &mut a, &mut b]);
    w.wait_ping(&a, &b, SETTLE);

    let (age0, rekeys0, _) = session(&b.status().expect("status"), &b, &a);
    let job = w.stream(&a, &b, 5011);
    let t0 = Instant::now();
    while t0.elapsed() < STREAM_FOR {
        let at = job.received();
        // Flowing all along (a stall across a key switch would show here).
        w.wait_flowing(&job, at, MIB, "stream flowing across rekeys");
        std::thread::sleep(Duration::from_secs(1));
    }
    let t = w.finish_stream(job, &a, &b);
    let elapsed = t0.elapsed().as_secs();
    // A status taken after the stream (one read at once may predate its end).
    let fresh = b.node.fresh_status(SETTLE).expect("status");
    let (age1, rekeys1, rx1) = session(&fresh, &b, &a);
    eprintln!(
        "{} MiB in {:?} over one session; its keys replaced {} times",
        t.bytes_received / MIB,
        t.elapsed,
        rekeys1 - rekeys0
    );
    assert!(
        age1 >= age0 + elapsed,
        "b's session with a is newer than the stream: age {age1} s, was {age0} s {elapsed} s ago"
    );
    // The session that is open now carried the whole stream.
    assert!(
        rx1 >= t.bytes_received,
        "b's session with a received {rx1} bytes, the stream {}",
        t.bytes_received
    );
    // Either end rekeys (the initiator after 3 s, the responder after a
    // quarter more); at least a few rekeys in 60 s, whichever led.
    assert!(
        rekeys1 - rekeys0 >= 5,
        "only {} rekeys in {elapsed} s",
        rekeys1 - rekeys0
    );
}
