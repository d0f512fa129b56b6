//! The control socket: a Unix stream socket (mode 0600, so only root reads
//! the status) speaking newline-delimited JSON.
//!
//! Requests and their responses (`{"ok":false,"error":"..."}` on failure):
//! - `{"cmd":"status"}`: `{"ok":true,"status":{...}}`;
//! - `{"cmd":"revocations-push","list":"HEX"}` (an encoded revocation list,
//!   `docs/membership.md` 3): handed to the node, which checks it, keeps it
//!   and spreads it to every member; `{"ok":true,"version":N}`, or the
//!   node's reason for refusing it (no CA configured, another CA or network,
//!   not newer than the list it has).
//! - `{"cmd":"members"}`: the node scans the directory on the ring;
//!   `{"ok":true,"members":{...}}` (the `ringlan members --json` shape,
//!   `docs/directory.md`), within [`MEMBERS_TIMEOUT`].
//! - `{"cmd":"topology"}`: the network as the node sees it (the same scan,
//!   the members' published links and the node's own);
//!   `{"ok":true,"topology":{...}}` (the `ringlan topology --format json`
//!   shape, `docs/topology.md`), within [`MEMBERS_TIMEOUT`].
//!
//! A connection may send several requests; each gets one response line. A
//! line longer than [`MAX_REQUEST`] (room for the largest revocation list
//! in hex) gets an error and the connection is closed.
//!
//! Connections are capped and timed out ([`CONTROL_LIMITS`]: 16 at once, 5 s
//! per request line and per response, 60 s per connection; see
//! [`crate::serve`]). Over the cap, the oldest connection still waiting for a
//! request is closed; when all are busy, the new one gets
//! `{"ok":false,"error":"busy: ..."}` and is closed.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringlan_node::admission::wire::MAX_LIST;
use ringlan_node::directory::MembersReport;
use ringlan_node::membership::{hex, parse_hex};
use ringlan_node::topology::Topology;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::serve::{Conn, Limits, ServeStats, Server, CONTROL_LIMITS};
use crate::status::{Status, StatusSource};

/// Longest request line accepted: the longest revocation list
/// ([`MAX_LIST`], as the node core's membership flow carries it) in hex and
/// the JSON around it (about 530 KiB).
pub const MAX_REQUEST: usize = 2 * MAX_LIST + 256;

/// How long the control socket waits for the node to take a command.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the control socket waits for a directory scan: the node
/// reports an incomplete scan after `directory::SCAN_TIMEOUT` (10 s).
pub const MEMBERS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// A revocation list for the node: the encoded list as hex.
    RevocationsPush {
        list: String,
    },
    /// The network's members from the directory.
    Members,
    /// The network's members and links as the node sees them.
    Topology,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The version of a revocation list the node accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The network's members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MembersReport>,
    /// The network's members and links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn error(e: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(e.into()),
            ..Response::ok()
        }
    }

    /// A success without content (fill in the answer).
    fn ok() -> Self {
        Response {
            ok: true,
            status: None,
            version: None,
            members: None,
            topology: None,
            error: None,
        }
    }
}

/// What the control socket asks of the node's task (the runtime owns the
/// node; the socket only sends it commands and waits for the answer).
#[derive(Debug)]
pub enum Command {
    /// Take this encoded revocation list; answer with its version or why
    /// it was refused.
    PushRevocations {
        list: Vec<u8>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Scan the directory for the network's members; answer when the
    /// scan ends.
    Members {
        reply: oneshot::Sender<MembersReport>,
    },
    /// The network's members and links (a scan, or the last one when it
    /// is recent: `crate::scans`); answer when it is there.
    Topology { reply: oneshot::Sender<Topology> },
}

/// Where the control socket sends [`Command`]s.
pub type Commands = mpsc::Sender<Command>;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{}: another agent is already listening on this control socket", .0.display())]
    InUse(PathBuf),
    #[error("{}: exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("{}: {error}", .path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("bad response from the agent: {0}")]
    Protocol(String),
    #[error("the agent answered: {0}")]
    Agent(String),
}

/// The bound control socket. The socket file is removed on drop.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    server: Server,
    commands: Option<Commands>,
}

impl ControlServer {
    /// Binds `path` (parent directory created 0700 if missing; a stale
    /// socket left by a dead agent is replaced) and sets mode 0600.
    pub async fn bind(path: &Path, source: Arc<dyn StatusSource>) -> Result<Self, ControlError> {
        let io_err = |error| ControlError::Io {
            path: path.to_path_buf(),
            error,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(io_err)?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(ControlError::InUse(path.to_path_buf()));
                }
                std::fs::remove_file(path).map_err(io_err)?;
            }
            Ok(_) => return Err(ControlError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        let server = ControlServer {
            listener,
            path: path.to_path_buf(),
            server: Server::new("control socket", CONTROL_LIMITS, BUSY, source),
            commands: None,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        Ok(server)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces [`CONTROL_LIMITS`] (tests use short timeouts).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.server.limits = limits;
        self
    }

    /// Sends the requests that need the node (a revocation list) to
    /// `commands`; without it they are answered with an error.
    pub fn with_commands(mut self, commands: Commands) -> Self {
        self.commands = Some(commands);
        self
    }

    /// Refused, evicted and timed-out connections, for the metrics endpoint.
    pub fn stats(&self) -> Arc<ServeStats> {
        self.server.stats.clone()
    }

    /// Accepts connections until `shutdown` turns true (or its sender is
    /// dropped); each connection is served by its own task.
    pub async fn serve(self, shutdown: watch::Receiver<bool>) {
        let commands = self.commands.clone();
        let serve_one = move |stream, conn| handle(stream, conn, commands.clone());
        crate::serve::accept_loop(&self.listener, self.server.clone(), shutdown, serve_one).await
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The reply to a connection refused because every slot is busy.
const BUSY: &[u8] = b"{\"ok\":false,\"error\":\"busy: too many control connections\"}\n";

/// Hex (either case) to bytes.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(parse_hex::<1>).map(|[b]| b))
        .collect()
}

/// Hands a revocation list to the node and words its answer.
async fn serve_push(hex: &str, commands: Option<&Commands>) -> Response {
    let Some(list) = unhex(hex) else {
        return Response::error("bad request: the list is not hex");
    };
    let Some(commands) = commands else {
        return Response::error("this agent takes no commands");
    };
    let (reply, answer) = oneshot::channel();
    if commands
        .send(Command::PushRevocations { list, reply })
        .await
        .is_err()
    {
        return Response::error("the node is not running");
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, answer).await {
        Ok(Ok(Ok(version))) => Response {
            version: Some(version),
            ..Response::ok()
        },
        Ok(Ok(Err(e))) => Response::error(e),
        Ok(Err(_)) => Response::error("the node is not running"),
        Err(_) => Response::error(format!(
            "the node did not answer within {COMMAND_TIMEOUT:?}"
        )),
    }
}

/// Asks the node for something that takes a directory scan (`command`
/// wraps the reply channel); waits at most [`MEMBERS_TIMEOUT`].
pub async fn ask_node<T>(
    commands: Option<&Commands>,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, String> {
    let Some(commands) = commands else {
        return Err("this agent takes no commands".into());
    };
    let (reply, answer) = oneshot::channel();
    if commands.send(command(reply)).await.is_err() {
        return Err("the node is not running".into());
    }
    match tokio::time::timeout(MEMBERS_TIMEOUT, answer).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err("the node is not running".into()),
        Err(_) => Err(format!(
            "the node did not answer within {MEMBERS_TIMEOUT:?}"
        )),
    }
}

/// Asks the node for the network's members.
async fn serve_members(commands: Option<&Commands>) -> Response {
    match ask_node(commands, |reply| Command::Members { reply }).await {
        Ok(report) => Response {
            members: Some(report),
            ..Response::ok()
        },
        Err(e) => Response::error(e),
    }
}

/// Asks the node for the network's topology.
async fn serve_topology(commands: Option<&Commands>) -> Response {
    match ask_node(commands, |reply| Command::Topology { reply }).await {
        Ok(t) => Response {
            topology: Some(t),
            ..Response::ok()
        },
        Err(e) => Response::error(e),
    }
}

async fn handle(stream: UnixStream, conn: Conn, commands: Option<Commands>) -> io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = conn
            .read_request(
                (&mut r)
                    .take(MAX_REQUEST as u64 + 1)
                    .read_until(b'\n', &mut line),
            )
            .await?;
        if n == 0 {
            return Ok(());
        }
        let too_long = line.len() > MAX_REQUEST;
        let resp = if too_long {
            Response::error(format!("request longer than {MAX_REQUEST} bytes"))
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(Request::Status) => Response {
                    status: Some(conn.source().snapshot()),
                    ..Response::ok()
                },
                Ok(Request::RevocationsPush { list }) => serve_push(&list, commands.as_ref()).await,
                Ok(Request::Members) => serve_members(commands.as_ref()).await,
                Ok(Request::Topology) => serve_topology(commands.as_ref()).await,
                Err(e) => Response::error(format!("bad request: {e}")),
            }
        };
        let mut out = serde_json::to_vec(&resp).map_err(io::Error::other)?;
        out.push(b'\n');
        conn.write_response(w.write_all(&out)).await?;
        if too_long {
            return Ok(());
        }
    }
}

/// Client side: asks the agent behind `path` for its status.
pub async fn request_status(path: &Path) -> Result<Status, ControlError> {
    request_status_within(path, CLIENT_TIMEOUT).await
}

/// [`request_status`] with another patience.
pub async fn request_status_within(
    path: &Path,
    limit: std::time::Duration,
) -> Result<Status, ControlError> {
    within(path, limit, ask_status(path)).await
}

/// `answer`, or a timeout error after `limit`.
async fn within<T>(
    path: &Path,
    limit: std::time::Duration,
    answer: impl std::future::Future<Output = Result<T, ControlError>>,
) -> Result<T, ControlError> {
    tokio::time::timeout(limit, answer)
        .await
        .unwrap_or_else(|_| {
            Err(ControlError::Io {
                path: path.to_path_buf(),
                error: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {limit:?}"),
                ),
            })
        })
}

/// How long `ringlan status` waits for the agent to answer (the agent
/// answers from a published snapshot, in milliseconds).
pub const CLIENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One request, one response line; an error response becomes
/// [`ControlError::Agent`].
async fn exchange(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let io_err = |error| ControlError::Io {
        path: path.to_path_buf(),
        error,
    };
    let stream = UnixStream::connect(path).await.map_err(io_err)?;
    let (r, mut w) = stream.into_split();
    let mut req = serde_json::to_vec(req).expect("serializable");
    req.push(b'\n');
    w.write_all(&req).await.map_err(io_err)?;
    let mut line = String::new();
    BufReader::new(r)
        .read_line(&mut line)
        .await
        .map_err(io_err)?;
    let resp: Response =
        serde_json::from_str(&line).map_err(|e| ControlError::Protocol(e.to_string()))?;
    match (resp.ok, &resp.error) {
        (true, _) => Ok(resp),
        (false, Some(e)) => Err(ControlError::Agent(e.clone())),
        (false, None) => Err(ControlError::Protocol(
            "error response without a reason".into(),
        )),
    }
}

async fn ask_status(path: &Path) -> Result<Status, ControlError> {
    exchange(path, &Request::Status)
        .await?
        .status
        .ok_or_else(|| ControlError::Protocol("response without status".into()))
}

/// Client side: hands the encoded revocation list `list` to the agent
/// behind `path`; the version it accepted, or its reason for refusing.
pub async fn push_revocations(path: &Path, list: &[u8]) -> Result<u64, ControlError> {
    let req = Request::RevocationsPush { list: hex(list) };
    within(path, CLIENT_TIMEOUT, exchange(path, &req))
        .await?
        .version
        .ok_or_else(|| ControlError::Protocol("response without version".into()))
}

/// Client side: the network's members, as the agent behind `path` finds
/// them in the directory.
pub async fn request_members(path: &Path) -> Result<MembersReport, ControlError> {
    within(
        path,
        MEMBERS_TIMEOUT + CLIENT_TIMEOUT,
        exchange(path, &Request::Members),
    )
    .await?
    .members
    .ok_or_else(|| ControlError::Protocol("response without members".into()))
}

/// Client side: the network's members and links, as the agent behind
/// `path` sees them.
pub async fn request_topology(path: &Path) -> Result<Topology, ControlError> {
    within(
        path,
        MEMBERS_TIMEOUT + CLIENT_TIMEOUT,
        exchange(path, &Request::Topology),
    )
    .await?
    .topology
    .ok_or_else(|| ControlError::Protocol("response without topology".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_status_client_gives_up_on_a_silent_agent() {
        let dir = std::env::temp_dir().join(format!("ringlan-ctl-silent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("silent.sock");
        let _ = std::fs::remove_file(&path);
        // Accepts, reads, never answers.
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (_conn, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
        });
        let err = request_status_within(&path, std::time::Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no answer within 200ms"), "{err}");
        server.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
    use crate::serve::testing::{closes_silently_after, until_closed};
    use crate::status::StatusBoard;
    use std::time::{Duration, Instant};

    fn sock_path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!("ringlan-ctl-{}-{name}", std::process::id()))
            .join("sub/agent.sock")
    }

    #[tokio::test]
    async fn status_round_trip_and_cleanup() {
        let path = sock_path("rt");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
        let board = Arc::new(StatusBoard::new(crate::status::example()));
        let server = ControlServer::bind(&path, board.clone()).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        // a second agent on the same socket is refused
        assert!(matches!(
            ControlServer::bind(&path, board.clone()).await,
            Err(ControlError::InUse(_))
        ));

        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(server.serve(rx));
        let got = request_status(&path).await.unwrap();
        let mut want = crate::status::example();
        want.uptime_secs = got.uptime_secs;
        assert_eq!(got, want);

        // garbage and several requests on one connection
        let s = UnixStream::connect(&path).await.unwrap();
        let (r, mut w) = s.into_split();
        w.write_all(b"{\"cmd\":\"reboot\"}\n{\"cmd\":\"status\"}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(r).lines();
        let a: Response = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(!a.ok);
        assert!(a.error.unwrap().contains("bad request"));
        let b: Response = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(b.ok && b.status.is_some());

        tx.send(true).unwrap();
        task.await.unwrap();
        assert!(!path.exists(), "socket removed on shutdown");
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }

    /// A bound server on a fresh path (under [`CONTROL_LIMITS`] changed by
    /// `tweak`), its counters, its shutdown switch.
    async fn start(
        name: &str,
        tweak: impl FnOnce(&mut Limits),
    ) -> (PathBuf, Arc<ServeStats>, watch::Sender<bool>) {
        let mut limits = CONTROL_LIMITS;
        tweak(&mut limits);
        let path = sock_path(name);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
        let board = Arc::new(StatusBoard::new(crate::status::example()));
        let server = ControlServer::bind(&path, board)
            .await
            .unwrap()
            .with_limits(limits);
        let stats = server.stats();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(server.serve(rx));
        (path, stats, tx)
    }

    /// The timeout under test, short enough for a unit test.
    const SHORT: Duration = Duration::from_millis(300);

    /// Checks that a well-behaved client is still answered, then stops the
    /// server and removes its directory.
    async fn still_answers_then_stop(path: &Path, stop: watch::Sender<bool>) {
        request_status(path).await.unwrap();
        stop.send(true).unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[tokio::test]
    async fn idle_connections_over_the_cap_do_not_lock_out_status() {
        let (path, stats, tx) = start("cap", |_| {}).await;
        let mut idle = Vec::new();
        for _ in 0..100 {
            idle.push(UnixStream::connect(&path).await.unwrap());
        }
        // The real limits: an honest client is answered at once, not after
        // the idle ones time out.
        let t0 = Instant::now();
        request_status(&path).await.unwrap();
        assert!(t0.elapsed() < CONTROL_LIMITS.read_timeout);
        // 100 + 1 connections for 16 slots: the 85 oldest idle ones were closed.
        assert_eq!(stats.evicted(), 85);
        assert_eq!(stats.refused(), 0);
        for s in &mut idle[..85] {
            closes_silently_after(s, Duration::ZERO).await;
        }
        // The 15 youngest still hold their slots.
        let mut b = [0u8; 1];
        let still = tokio::time::timeout(Duration::from_millis(100), idle[99].read(&mut b)).await;
        assert!(still.is_err(), "young idle connection closed early");
        still_answers_then_stop(&path, tx).await;
    }

    #[tokio::test]
    async fn silent_and_trickling_clients_time_out() {
        let (path, stats, tx) = start("slowloris", |l| l.read_timeout = SHORT).await;
        // Silent: closed once the first line is overdue.
        let mut silent = UnixStream::connect(&path).await.unwrap();
        closes_silently_after(&mut silent, SHORT).await;

        // One byte every 100 ms, never a newline: each read is quick, the
        // line is not.
        let (mut r, mut w) = UnixStream::connect(&path).await.unwrap().into_split();
        let trickle = tokio::spawn(async move {
            while w.write_all(b"{").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        closes_silently_after(&mut r, SHORT).await;
        trickle.abort();
        assert_eq!(stats.timed_out(), 2);

        still_answers_then_stop(&path, tx).await;
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped() {
        let (path, stats, tx) = start("slowreader", |l| l.write_timeout = SHORT).await;
        let s = UnixStream::connect(&path).await.unwrap();
        // Pipelined requests, responses never read: the server's writes
        // block once the socket buffers are full, then it gives up.
        let (_r, mut w) = s.into_split();
        let t0 = Instant::now();
        let failed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = w.write_all(b"{\"cmd\":\"status\"}\n").await {
                    return e;
                }
            }
        })
        .await
        .expect("server still reading after 10 s");
        assert!(
            matches!(
                failed.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ),
            "{failed}"
        );
        assert!(t0.elapsed() >= SHORT);
        assert_eq!(stats.timed_out(), 1);
        still_answers_then_stop(&path, tx).await;
    }

    #[tokio::test]
    async fn oversized_request_gets_an_error_and_is_closed() {
        let (path, stats, tx) = start("big", |_| {}).await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&[b' '; MAX_REQUEST + 100]).await.unwrap();
        let (got, _) = until_closed(&mut s).await.expect("closed");
        let resp: Response = serde_json::from_slice(&got).unwrap();
        assert!(!resp.ok);
        assert_eq!(
            resp.error.unwrap(),
            format!("request longer than {MAX_REQUEST} bytes")
        );
        assert_eq!(stats.timed_out(), 0);
        still_answers_then_stop(&path, tx).await;
    }

    /// A server on `path` sending commands to `commands`; its shutdown
    /// switch and task.
    async fn serve_with_commands(
        path: &Path,
        board: Arc<StatusBoard>,
        commands: Commands,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let server = ControlServer::bind(path, board)
            .await
            .unwrap()
            .with_commands(commands);
        (tx, tokio::spawn(server.serve(rx)))
    }

    #[tokio::test]
    async fn revocation_lists_go_to_the_node_and_its_answer_back() {
        let path = sock_path("push");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
        let board = Arc::new(StatusBoard::new(crate::status::example()));
        let (tx, rx) = watch::channel(false);
        // Without a command channel: an error, not a hang.
        let server = ControlServer::bind(&path, board.clone()).await.unwrap();
        let task = tokio::spawn(server.serve(rx.clone()));
        let e = push_revocations(&path, b"list").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the agent answered: this agent takes no commands"
        );
        tx.send(true).unwrap();
        task.await.unwrap();

        // A node that takes lists starting with 7 and refuses the rest.
        let (cmd_tx, mut cmd_rx) = mpsc::channel(4);
        let node = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(Command::PushRevocations { list, reply }) = cmd_rx.recv().await {
                let answer = match list.first() {
                    Some(7) => Ok(list.len() as u64),
                    _ => Err("revocation list: truncated".to_string()),
                };
                seen.push(list);
                let _ = reply.send(answer);
            }
            seen
        });
        let (tx, task) = serve_with_commands(&path, board, cmd_tx).await;
        // The largest list fits in one request.
        let big = vec![7u8; MAX_LIST];
        assert_eq!(
            push_revocations(&path, &big).await.unwrap(),
            MAX_LIST as u64
        );
        assert_eq!(push_revocations(&path, &[7, 0xab]).await.unwrap(), 2);
        let e = push_revocations(&path, &[1]).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the agent answered: revocation list: truncated"
        );
        // Not hex: refused before the node sees it.
        let s = UnixStream::connect(&path).await.unwrap();
        let (r, mut w) = s.into_split();
        w.write_all(b"{\"cmd\":\"revocations-push\",\"list\":\"7g\"}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(r).lines();
        let a: Response = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(a.error.as_deref(), Some("bad request: the list is not hex"));
        tx.send(true).unwrap();
        task.await.unwrap();
        let seen = node.await.unwrap();
        assert_eq!(seen, vec![big, vec![7, 0xab], vec![1]]);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[tokio::test]
    async fn members_come_from_the_node() {
        let path = sock_path("members");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
        let board = Arc::new(StatusBoard::new(crate::status::example()));
        let (cmd_tx, mut cmd_rx) = mpsc::channel(4);
        let node = tokio::spawn(async move {
            let mut asked = 0;
            while let Some(Command::Members { reply }) = cmd_rx.recv().await {
                asked += 1;
                let _ = reply.send(ringlan_node::directory::report::example());
            }
            asked
        });
        let (tx, task) = serve_with_commands(&path, board, cmd_tx).await;
        let got = request_members(&path).await.unwrap();
        assert_eq!(got, ringlan_node::directory::report::example());
        // The wire form: the report under "members".
        let s = UnixStream::connect(&path).await.unwrap();
        let (r, mut w) = s.into_split();
        w.write_all(b"{\"cmd\":\"members\"}\n").await.unwrap();
        let line = BufReader::new(r)
            .lines()
            .next_line()
            .await
            .unwrap()
            .unwrap();
        assert!(
            line.starts_with(r#"{"ok":true,"members":{"complete":true,"now_unix":1796300100,"members":[{"name":"desktop""#),
            "{line}"
        );
        tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(node.await.unwrap(), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[tokio::test]
    async fn topology_comes_from_the_node() {
        let path = sock_path("topology");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
        let board = Arc::new(StatusBoard::new(crate::status::example()));
        let (cmd_tx, mut cmd_rx) = mpsc::channel(4);
        let node = tokio::spawn(async move {
            let mut asked = 0;
            while let Some(cmd) = cmd_rx.recv().await {
                if let Command::Topology { reply } = cmd {
                    asked += 1;
                    let _ = reply.send(ringlan_node::topology::example());
                }
            }
            asked
        });
        let (tx, task) = serve_with_commands(&path, board, cmd_tx).await;
        let got = request_topology(&path).await.unwrap();
        assert_eq!(got, ringlan_node::topology::example());
        let s = UnixStream::connect(&path).await.unwrap();
        let (r, mut w) = s.into_split();
        w.write_all(b"{\"cmd\":\"topology\"}\n").await.unwrap();
        let line = BufReader::new(r)
            .lines()
            .next_line()
            .await
            .unwrap()
            .unwrap();
        assert!(
            line.starts_with(
                r#"{"ok":true,"topology":{"complete":true,"now_unix":1796300100,"this_node":"#
            ),
            "{line}"
        );
        tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(node.await.unwrap(), 2);
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn busy_reply_is_a_response_line() {
        let (line, rest) = BUSY.split_at(BUSY.len() - 1);
        assert_eq!(rest, b"\n");
        let r: Response = serde_json::from_slice(line).unwrap();
        assert!(!r.ok && r.status.is_none());
        assert!(r.error.unwrap().starts_with("busy: "));
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let path = sock_path("stale");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let f = || crate::status::Status::default();
        let server = ControlServer::bind(&path, Arc::new(f)).await.unwrap();
        drop(server);
        assert!(!path.exists());
        std::fs::write(&path, "x").unwrap();
        assert!(matches!(
            ControlServer::bind(&path, Arc::new(f)).await,
            Err(ControlError::NotASocket(_))
        ));
        std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap()).unwrap();
    }
}
