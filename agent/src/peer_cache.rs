//! The peer cache: `<state dir>/<network>.peers` (beside the node key and
//! the revocation list), the members this node had direct sessions with and
//! the addresses they ran to. At start the runtime hands it to the node core
//! ([`ringlan_node::Node::add_bootstrap`]), which opens sessions to them
//! when no introducer answers (docs/directory.md "Rejoin").
//!
//! Format: text, one member per line, `NODE_ID ADDR [ADDR ...]` (32 hex
//! digits, then socket addresses such as `198.51.100.7:4910` or
//! `[2001:db8::7]:4910`), newest first; `#` lines are comments. Lines that
//! do not parse are skipped (a hand-edited or truncated file still gives
//! the rest). Bounded: [`MAX_PEERS`] members of [`MAX_PEER_ADDRS`]
//! addresses; a file longer than [`MAX_FILE`] is read only up to it.
//! Written atomically (a temporary file renamed over it, mode 0600).

use std::fs::{self, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ringlan_node::status::{PathKind, SessionPhase, Status};
use ringlan_tunnel::NodeId;

/// Members kept at most.
pub const MAX_PEERS: usize = 64;
/// Addresses kept per member at most.
pub const MAX_PEER_ADDRS: usize = 4;
/// Bytes of the file read at most (64 members of 4 IPv6 addresses fit
/// several times).
pub const MAX_FILE: u64 = 64 * 1024;

/// One cached member.
pub type Peer = (NodeId, Vec<SocketAddr>);

/// Where a node keeps its peer cache: beside its key.
pub fn path(key_file: &Path, network: &str) -> PathBuf {
    key_file
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!("{network}.peers"))
}

/// Parses a node id written as 32 hex digits.
fn parse_id(s: &str) -> Option<NodeId> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    s.parse().ok()
}

/// The members in `text` (see the module doc), bounded.
pub fn parse(text: &str) -> Vec<Peer> {
    let mut out: Vec<Peer> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(id) = words.next().and_then(parse_id) else {
            continue;
        };
        let addrs: Vec<SocketAddr> = words
            .filter_map(|w| w.parse().ok())
            .take(MAX_PEER_ADDRS)
            .collect();
        if addrs.is_empty() || out.iter().any(|p| p.0 == id) {
            continue;
        }
        out.push((id, addrs));
        if out.len() == MAX_PEERS {
            break;
        }
    }
    out
}

/// The file's text for `peers`.
pub fn render(peers: &[Peer]) -> String {
    let mut o = String::from(
        "# ringlan peer cache: members this node had direct sessions with (newest first)\n",
    );
    for (id, addrs) in peers.iter().take(MAX_PEERS) {
        o.push_str(&id.to_string());
        for a in addrs.iter().take(MAX_PEER_ADDRS) {
            o.push(' ');
            o.push_str(&a.to_string());
        }
        o.push('\n');
    }
    o
}

/// The cache at `path` (empty when there is none or it cannot be read).
pub fn read(path: &Path) -> Vec<Peer> {
    let mut text = String::new();
    match fs::File::open(path) {
        Ok(f) => {
            if let Err(e) = f.take(MAX_FILE).read_to_string(&mut text) {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the peer cache");
                return Vec::new();
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the peer cache");
            return Vec::new();
        }
    }
    parse(&text)
}

/// Replaces the cache at `path` with `peers` (atomically, mode 0600).
pub fn write(path: &Path, peers: &[Peer]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| tmp.display().to_string())?;
    f.write_all(render(peers).as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| tmp.display().to_string())?;
    fs::rename(&tmp, path).with_context(|| path.display().to_string())
}

/// The members `status` shows direct, established sessions with, with the
/// address each runs to; then the entries of `old` not among them (their
/// addresses kept), up to [`MAX_PEERS`].
pub fn merge(status: &Status, old: &[Peer]) -> Vec<Peer> {
    let mut out: Vec<Peer> = Vec::new();
    for s in &status.sessions {
        let direct = matches!(
            s.path,
            PathKind::Direct | PathKind::DirectLan | PathKind::DirectNat
        );
        let (Some(remote), true, SessionPhase::Open) = (s.remote, direct, s.state) else {
            continue;
        };
        let Some(id) = parse_id(&s.peer_id) else {
            continue;
        };
        if out.iter().any(|p| p.0 == id) {
            continue;
        }
        // The current address first, then what we knew before.
        let mut addrs = vec![remote];
        if let Some((_, before)) = old.iter().find(|p| p.0 == id) {
            addrs.extend(before.iter().filter(|a| **a != remote).copied());
        }
        addrs.truncate(MAX_PEER_ADDRS);
        out.push((id, addrs));
    }
    for p in old {
        if out.len() >= MAX_PEERS {
            break;
        }
        if !out.iter().any(|q| q.0 == p.0) {
            out.push(p.clone());
        }
    }
    out.truncate(MAX_PEERS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringlan_node::status::{SessionStatus, Traffic};

    fn id(n: u8) -> NodeId {
        NodeId(u128::from_be_bytes([n; 16]))
    }

    fn session(n: u8, remote: &str, path: PathKind, state: SessionPhase) -> SessionStatus {
        SessionStatus {
            peer_id: id(n).to_string(),
            peer_name: None,
            remote: Some(remote.parse().unwrap()),
            path,
            state,
            rtt_ms: None,
            tx: Traffic::default(),
            rx: Traffic::default(),
            drops: Default::default(),
            age_secs: 0,
            rekeys: 0,
            cipher: None,
            reason: None,
            peer_symmetric_nat: false,
            transport: None,
        }
    }

    #[test]
    fn the_file_round_trips_and_skips_what_does_not_parse() {
        let peers = vec![
            (id(1), vec!["198.51.100.7:4910".parse().unwrap()]),
            (
                id(2),
                vec![
                    "[2001:db8::7]:4910".parse().unwrap(),
                    "192.0.2.9:5000".parse().unwrap(),
                ],
            ),
        ];
        let text = render(&peers);
        assert!(text.starts_with('#'));
        assert_eq!(parse(&text), peers);
        let messy = format!(
            "{text}not-an-id 1.2.3.4:5\n{} no-address\n{} 10.0.0.1:1 junk\n{}",
            id(3),
            id(4),
            id(1) // a duplicate, without an address: skipped
        );
        let got = parse(&messy);
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (id(4), vec!["10.0.0.1:1".parse().unwrap()]));
    }

    #[test]
    fn it_is_bounded() {
        let mut text = String::new();
        for n in 0..200u8 {
            text.push_str(&format!("{} ", id(n)));
            for p in 1..10 {
                text.push_str(&format!("10.0.0.{n}:{p} "));
            }
            text.push('\n');
        }
        let got = parse(&text);
        assert_eq!(got.len(), MAX_PEERS);
        assert!(got.iter().all(|p| p.1.len() == MAX_PEER_ADDRS));
    }

    #[test]
    fn direct_established_sessions_come_first_and_old_entries_stay() {
        let status = Status {
            sessions: vec![
                session(1, "192.0.2.1:4910", PathKind::DirectNat, SessionPhase::Open),
                session(
                    2,
                    "192.0.2.2:4910",
                    PathKind::Relayed {
                        via: "x".into(),
                        standby: 0,
                    },
                    SessionPhase::Open,
                ),
                session(
                    3,
                    "192.0.2.3:4910",
                    PathKind::DirectLan,
                    SessionPhase::Opening,
                ),
            ],
            ..Status::default()
        };
        let old = vec![
            (id(4), vec!["192.0.2.4:4910".parse().unwrap()]),
            (id(1), vec!["192.0.2.100:4910".parse().unwrap()]),
        ];
        let got = merge(&status, &old);
        assert_eq!(
            got,
            vec![
                (
                    id(1),
                    vec![
                        "192.0.2.1:4910".parse().unwrap(),
                        "192.0.2.100:4910".parse().unwrap()
                    ]
                ),
                (id(4), vec!["192.0.2.4:4910".parse().unwrap()]),
            ]
        );
    }

    #[test]
    fn write_is_atomic_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ringlan-peers-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = path(&dir.join("home.key"), "home");
        assert_eq!(p, dir.join("home.peers"));
        assert!(read(&p).is_empty());
        let peers = vec![(id(9), vec!["198.51.100.9:4910".parse().unwrap()])];
        write(&p, &peers).unwrap();
        assert_eq!(read(&p), peers);
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.join("home.peers.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
