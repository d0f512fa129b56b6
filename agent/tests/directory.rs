//! End-to-end test of the directory on the ring (docs/directory.md): five
//! real agents in network namespaces (the lab of `agent/tests/e2e.rs`: one
//! underlay bridge 192.0.2.0/24, the introducer at 192.0.2.1, nodes at
//! 192.0.2.N, TAP `rl-dir` at 10.77.0.N/24; every member runs the DNS
//! responder on its TAP address for the domain `dir.test`).
//!
//! - `ringlan members --json` on every member lists all five;
//! - `dig` from one member to another's responder for a third member's name
//!   gets the third's overlay address; an unknown name gets NXDOMAIN;
//! - an ARP request for a known member's address is answered by the asking
//!   node itself: an nftables `arp` counter on a fourth member's TAP sees no
//!   request for that address, and the asking node's `arp_answered_locally`
//!   grows;
//! - a node restarted while the only introducer is down joins the ring again
//!   through its peer cache.
//!
//! Waits carry generous hang guards, never timing assertions. Needs root and
//! `dig` (Debian `bind9-dnsutils`); `RINGLAN_SKIP_ROOT_TESTS=1` skips it.

use std::time::{Duration, Instant};

use ringlan_lab::agents::{open_with, serial, Member, World};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
const TAP: &str = "rl-dir";
const DOMAIN: &str = "dir.test";
/// Hang guard for agents to start and mesh.
const SETTLE: Duration = Duration::from_secs(30);
/// Hang guard for records to be published, replicated and found.
const DIRECTORY: Duration = Duration::from_secs(90);

fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `ringlan members --json` of `m`, parsed (`None` when it fails).
fn members(w: &World, m: &Member) -> Option<Value> {
    let sock = m.node.socket.to_string_lossy().into_owned();
    let out = w
        .lab
        .run(&m.host.ns, &[BIN, "members", "--json", "--socket", &sock])
        .ok()?;
    serde_json::from_str(&out).ok()
}

/// The names `ringlan members --json` lists.
fn member_names(v: &Value) -> Vec<String> {
    let mut names: Vec<String> = v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `dig` in `from`'s namespace at `server`'s responder for `name` (A):
/// the whole output.
fn dig(w: &World, from: &Member, server: &Member, name: &str) -> String {
    let at = format!("@{}", server.overlay());
    w.lab
        .run(
            &from.host.ns,
            &["dig", "+time=2", "+tries=2", &at, name, "A"],
        )
        .unwrap_or_else(|e| format!("dig failed: {e:#}"))
}

fn arp_nd(w: &World, m: &Member, key: &str) -> u64 {
    w.fresh_status(m)["arp_nd"][key].as_u64().unwrap_or(0)
}

#[test]
fn members_names_arp_and_rejoin_through_the_directory() {
    let _serial = serial();
    let Some(w) = World::new(BIN, "dir", TAP, "lan", SETTLE) else {
        return;
    };
    // Without dig the DNS step below would only time out.
    assert!(
        std::process::Command::new("dig").arg("-v").output().is_ok(),
        "dig is not installed (Debian package bind9-dnsutils; tests/run-all.sh installs it)"
    );
    let (mut intro, mut nodes) = w.lan_introducer_and_nodes(11..=14);
    for m in std::iter::once(&intro).chain(nodes.iter()) {
        w.add_config(
            m,
            &format!("dns:\n  listen: {}:53\n  domain: {DOMAIN}\n", m.overlay()),
        );
    }
    {
        let mut all: Vec<&mut Member> = vec![&mut intro];
        all.extend(nodes.iter_mut());
        w.start_mesh(&mut all);
    }
    let everyone: Vec<&Member> = std::iter::once(&intro).chain(nodes.iter()).collect();
    let mut want: Vec<String> = everyone.iter().map(|m| m.name.clone()).collect();
    want.sort();

    // 1. `ringlan members` on every member lists all five.
    for m in &everyone {
        let got = wait_for(
            DIRECTORY,
            &format!("{} lists all five members", m.name),
            || members(&w, m).filter(|v| member_names(v) == want),
        );
        let listed = got["members"].as_array().unwrap();
        for other in &everyone {
            let entry = listed
                .iter()
                .find(|e| e["name"] == other.name.as_str())
                .unwrap();
            assert!(
                entry["addresses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a.as_str() == Some(&other.overlay().to_string())),
                "{} lists {} without {}: {entry}",
                m.name,
                other.name,
                other.overlay()
            );
        }
    }

    // 2. DNS: n11 asks n12's responder for n13 and for a name nobody has.
    let (n11, n12, n13, n14) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    let name = format!("{}.{DOMAIN}", n13.name);
    let out = wait_for(DIRECTORY, "n12's responder answers n13's address", || {
        let out = dig(&w, n11, n12, &name);
        out.contains(&n13.overlay().to_string()).then_some(out)
    });
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains(" aa"), "authoritative: {out}");
    let out = dig(&w, n11, n12, &format!("nobody.{DOMAIN}"));
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    let out = dig(&w, n11, n12, "example.org");
    assert!(out.contains("status: REFUSED"), "{out}");

    // 3. ARP: n14 counts ARP requests for n13's address reaching its TAP;
    // n11 forgets n13's MAC and pings it.
    let target = n13.overlay().to_string();
    let rules = format!(
        "table arp rl_dir {{\n counter asked {{}}\n counter any {{}}\n chain in {{\n  type filter hook input priority 0; policy accept;\n  iifname \"{TAP}\" arp operation request counter name any\n  iifname \"{TAP}\" arp operation request arp daddr ip {target} counter name asked\n }}\n}}\n"
    );
    let file = w.lab.dir().join("arp.nft");
    std::fs::write(&file, rules).unwrap();
    w.lab
        .run(&n14.host.ns, &["nft", "-f", &file.to_string_lossy()])
        .unwrap();
    // Control: a request for an address no member has is flooded, and
    // n14's counter sees it.
    let unknown = "10.77.0.99";
    let _ = w
        .lab
        .run(&n11.host.ns, &["ping", "-c", "1", "-W", "1", unknown]);
    wait_for(SETTLE, "the flooded ARP request reaches n14's TAP", || {
        (w.lab
            .nft_counter(&n14.host.ns, "arp", "rl_dir", "any")
            .ok()?
            > 0)
        .then_some(())
    });
    let answered_before = arp_nd(&w, n11, "arp_answered_locally");
    let _ = w
        .lab
        .run(&n11.host.ns, &["ip", "neigh", "flush", "dev", TAP]);
    w.wait_ping(n11, n13, SETTLE);
    assert!(
        arp_nd(&w, n11, "arp_answered_locally") > answered_before,
        "n11 answered no ARP request itself: {}",
        w.fresh_status(n11)["arp_nd"]
    );
    let asked = w
        .lab
        .nft_counter(&n14.host.ns, "arp", "rl_dir", "asked")
        .unwrap();
    assert_eq!(
        asked, 0,
        "an ARP request for {target} reached n14's TAP (it should be answered by n11)"
    );
    assert_eq!(
        w.neighbour_mac(n11, n13.overlay()).as_deref(),
        w.fresh_status(n13)["tap"]["mac"].as_str(),
        "n11's neighbour entry for n13"
    );

    // 4. Rejoin: the introducer goes down, n14 restarts; it comes back
    // through the members in its peer cache (written when it stopped).
    w.lab.stop_node(&mut intro.node).unwrap();
    let n14 = &mut nodes[3];
    w.lab.stop_node(&mut n14.node).unwrap();
    let cache = std::fs::read_to_string(n14.node.key_file.with_file_name("dir.peers"))
        .expect("n14's peer cache");
    assert!(
        cache.lines().filter(|l| !l.starts_with('#')).count() >= 2,
        "{cache}"
    );
    w.start(n14);
    let n14 = &nodes[3];
    for other in &nodes[..3] {
        let peer = other.peer();
        wait_for(
            SETTLE * 2,
            &format!("n14 rejoins and opens a session with {}", other.name),
            || open_with(&n14.status().ok()?, &peer).then_some(()),
        );
    }
    w.wait_ping(n14, &nodes[0], SETTLE);
}
