//! The service's privilege model, end to end: agents run as an unprivileged
//! user (`nobody`) holding only `CAP_NET_ADMIN`, as `packaging/ringlan@.service`
//! runs them (`User=ringlan`, `AmbientCapabilities=CAP_NET_ADMIN`,
//! `CapabilityBoundingSet=CAP_NET_ADMIN`). `setpriv` drops everything else
//! before `ringlan up` starts. They create their TAP, read the secret
//! through its group (mode 0640, root-owned), create their key, bind their
//! control socket, join, and carry pings across the overlay.
//!
//! Debian's udev makes `/dev/net/tun` mode 0666 (the kernel checks
//! `CAP_NET_ADMIN` when a device is created); a container may have it 0600.
//! The test gives each agent a private mount namespace in which the node is
//! 0666, as on Debian, without touching the machine's own.
//!
//! Needs root (namespaces, and to hand out the capability);
//! `RINGLAN_SKIP_ROOT_TESTS=1` skips it when not root.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use ringlan_lab::agents::{serial, Member, World};

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
/// `nobody` / `nogroup` on Debian.
const UID: u32 = 65534;
const GID: u32 = 65534;
/// `CAP_NET_ADMIN` is capability 12.
const CAP_NET_ADMIN: u64 = 1 << 12;
/// Hang guard for agents to start and mesh (not a timing assertion).
const SETTLE: Duration = Duration::from_secs(30);

/// The wrapper: a private mount namespace with Debian's `/dev/net/tun`
/// (0666, made in `dir`), then `setpriv`: user and group `nobody`, no
/// supplementary groups, only `CAP_NET_ADMIN` in every set (bounding,
/// inheritable, ambient), no new privileges: what systemd does for the unit.
fn unprivileged(dir: &Path) -> Vec<String> {
    let tun = dir.join("tun");
    let script = format!(
        "mknod -m 0666 {tun} c 10 200 && mount --bind {tun} /dev/net/tun && exec \"$@\"",
        tun = tun.display()
    );
    [
        "unshare",
        "--mount",
        "--propagation=slave",
        "sh",
        "-c",
        &script,
        "sh",
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--bounding-set=-all,+net_admin",
        "--inh-caps=-all,+net_admin",
        "--ambient-caps=-all,+net_admin",
        "--no-new-privs",
        "--",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The member's files (config, key, socket) live in a directory the
/// unprivileged user owns; nothing in it exists yet but the config.
fn hand_over(m: &mut Member) {
    let dir = m.node.config.parent().expect("node directory");
    chown(dir, Some(UID), Some(GID)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    m.node.wrapper = unprivileged(dir);
}

/// `(uid, effective capabilities)` of a running process.
fn credentials(pid: u32) -> (u32, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let uid = field("Uid:").parse().unwrap();
    let caps = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    (uid, caps)
}

#[test]
fn agents_run_as_an_unprivileged_user_with_only_cap_net_admin() {
    let _serial = serial();
    let Some(w) = World::new(BIN, "unpriv", "rl-unpriv", "unpriv", SETTLE) else {
        return;
    };
    // The unprivileged agents must reach their files: the lab directory is
    // traversable, the secret readable through its group only.
    let lab_dir = w.lab.dir();
    let mode = std::fs::metadata(lab_dir).unwrap().permissions().mode();
    std::fs::set_permissions(lab_dir, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
    chown(&w.secret, Some(0), Some(GID)).unwrap();
    std::fs::set_permissions(&w.secret, std::fs::Permissions::from_mode(0o640)).unwrap();

    let mut intro = w.lan_member("intro", 1, "introducer", |_| {});
    let mut a = w.lan_member("a", 2, "node", |_| {});
    std::fs::set_permissions(
        lab_dir.join("nodes"),
        std::fs::Permissions::from_mode(0o711),
    )
    .unwrap();
    for m in [&mut intro, &mut a] {
        hand_over(m);
        w.start_with_id(m);
    }
    w.wait_mesh(&[&intro, &a]);
    w.wait_ping(&a, &intro, SETTLE);

    for m in [&intro, &a] {
        let (uid, caps) = credentials(m.proc().pid);
        assert_eq!(uid, UID, "{} runs as nobody", m.name);
        assert_eq!(
            caps, CAP_NET_ADMIN,
            "{}: effective capabilities {caps:#x}, want only CAP_NET_ADMIN",
            m.name
        );
        // The files the agent made are its own.
        use std::os::unix::fs::MetadataExt;
        let key = std::fs::metadata(&m.node.key_file).unwrap();
        assert_eq!(
            (key.uid(), key.mode() & 0o777),
            (UID, 0o600),
            "{} key",
            m.name
        );
        let sock = std::fs::metadata(&m.node.socket).unwrap();
        assert_eq!(sock.uid(), UID, "{} control socket", m.name);
    }
    // The TAP exists with the derived MAC: status reports it.
    let st = a.status().unwrap();
    assert_eq!(st["tap"]["name"], "rl-unpriv");
    assert!(Path::new(&format!("/proc/{}", a.proc().pid)).exists());
}
