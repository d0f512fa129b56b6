//! The one accept loop behind the control socket and the metrics endpoint:
//! accept until shutdown, one task per connection, a short pause after an
//! accept error (e.g. out of file descriptors) instead of a busy loop.
//!
//! # Limits
//!
//! Both servers are reachable by processes we do not control (any local root
//! process for the control socket, anyone who can reach `metrics.listen` for
//! the metrics endpoint), so every connection is bounded in number and time
//! ([`Limits`], one set per server):
//!
//! - **Cap.** At most [`Limits::max_conns`] connections are served at once
//!   ([`CONTROL_LIMITS`]: 16, [`METRICS_LIMITS`]: 32). Both servers answer a
//!   request from an in-memory snapshot within milliseconds, so their
//!   legitimate load is a handful of connections: `ringlan status` opens one
//!   per call, a Prometheus server one per scrape (HA pairs and a `curl`
//!   included, 32 is several times what a node ever sees). Each connection
//!   costs a task, a file descriptor, its request buffers (an 8 KiB reader
//!   and a line of at most [`MAX_REQUEST`](crate::control::MAX_REQUEST),
//!   about 530 KiB, for control: a revocation list in hex; a head of at
//!   most 9 KiB for HTTP) and one response, so the caps bound what a flood
//!   of connections can take (16 control lines: under 9 MiB).
//! - **Eviction before refusal.** When the cap is reached, the oldest
//!   connection that is *waiting for a request* (connected but idle, or
//!   trickling bytes) is closed to make room for the new one; only when every
//!   slot is busy answering is the new connection refused at once with a short
//!   "busy" reply written without waiting ([`Server::busy`]; an HTTP `503`
//!   for metrics, an `{"ok":false,...}` line for control). A plain cap would
//!   let anyone hold all slots with idle sockets and re-open them as they time
//!   out, denying service to every honest client; with eviction an attacker
//!   must open `max_conns` connections in the moment (well under a
//!   millisecond locally) between an honest client's connect and its request
//!   to displace it.
//! - **Read timeout.** A whole request (the control line, the HTTP head) must
//!   arrive within [`Limits::read_timeout`] of the server starting to wait for
//!   it: the timer covers the request, not each `read`, so one byte per second
//!   does not keep a connection alive. Between two control requests the same
//!   timeout bounds the idle time.
//! - **Write timeout.** Each response must be taken by the client within
//!   [`Limits::write_timeout`]; a client that stops reading is dropped.
//! - **Deadline.** No connection lives longer than [`Limits::deadline`],
//!   whatever it does (e.g. a control client pipelining requests just inside
//!   both timeouts).
//!
//! Refusals, evictions and timeouts are counted ([`ServeStats`]) and exported
//! as `ringlan_socket_{refused,evicted,timeouts}_total{socket="control"|"metrics"}`.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::status::StatusSource;

/// How long to wait after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bounds on the connections of one server (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_conns: usize,
    /// Time for one whole request to arrive (and idle time between requests).
    pub read_timeout: Duration,
    /// Time for one whole response to be taken by the client.
    pub write_timeout: Duration,
    /// Longest life of a connection.
    pub deadline: Duration,
}

/// The control socket: `ringlan status` sends its one line right after
/// connecting and reads a response of a few KiB; 5 s covers a loaded machine.
/// A client that keeps its connection reconnects after a minute.
pub const CONTROL_LIMITS: Limits = Limits {
    max_conns: 16,
    read_timeout: Duration::from_secs(5),
    write_timeout: Duration::from_secs(5),
    deadline: Duration::from_secs(60),
};

/// The metrics endpoint: one request per connection; 10 s matches
/// Prometheus' default `scrape_timeout`, so a scrape that would fail anyway
/// is the only one cut.
pub const METRICS_LIMITS: Limits = Limits {
    max_conns: 32,
    read_timeout: Duration::from_secs(10),
    write_timeout: Duration::from_secs(10),
    deadline: Duration::from_secs(30),
};

/// What one server is: its name in logs, its limits, the reply written to a
/// connection refused because every slot is busy, the status it serves and
/// its counters.
#[derive(Clone)]
pub struct Server {
    pub name: &'static str,
    pub limits: Limits,
    pub busy: &'static [u8],
    pub source: Arc<dyn StatusSource>,
    pub stats: Arc<ServeStats>,
}

impl Server {
    /// A server with fresh counters.
    pub fn new(
        name: &'static str,
        limits: Limits,
        busy: &'static [u8],
        source: Arc<dyn StatusSource>,
    ) -> Self {
        Server {
            name,
            limits,
            busy,
            source,
            stats: Arc::default(),
        }
    }
}

/// Counters of one server, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct ServeStats {
    refused: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
}

impl ServeStats {
    /// Connections refused at once because every slot was busy answering.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed while waiting for a request, to make room.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections closed by a read or write timeout or the deadline.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// A listener that hands out connections.
pub trait Accept {
    type Conn: Send + 'static;
    fn accept_conn(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
    /// Writes `reply` if the socket takes it right away, then closes.
    fn refuse(conn: Self::Conn, reply: &[u8]);
}

impl Accept for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn accept_conn(&self) -> io::Result<Self::Conn> {
        self.accept().await.map(|(s, _)| s)
    }
    fn refuse(conn: Self::Conn, reply: &[u8]) {
        // The std socket stays non-blocking: one write into an empty send
        // buffer, never a wait.
        if let Ok(s) = conn.into_std() {
            let _ = (&s).write(reply);
        }
    }
}

impl Accept for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;
    async fn accept_conn(&self) -> io::Result<Self::Conn> {
        self.accept().await.map(|(s, _)| s)
    }
    fn refuse(conn: Self::Conn, reply: &[u8]) {
        if let Ok(s) = conn.into_std() {
            let _ = (&s).write(reply);
        }
    }
}

/// What a connection handler gets besides the connection: the status and
/// the timeouts it must read and write under.
pub struct Conn {
    source: Arc<dyn StatusSource>,
    limits: Limits,
    /// True while the handler waits for a request: the accept loop may then
    /// close the connection to make room.
    waiting: Arc<AtomicBool>,
}

impl Conn {
    pub fn source(&self) -> &Arc<dyn StatusSource> {
        &self.source
    }

    /// Waits for one whole request (`read` resolves once it has arrived),
    /// at most [`Limits::read_timeout`]. Meanwhile the connection may be
    /// evicted.
    pub async fn read_request<T>(
        &self,
        read: impl Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        self.waiting.store(true, Ordering::Relaxed);
        let r = tokio::time::timeout(self.limits.read_timeout, read).await;
        self.waiting.store(false, Ordering::Relaxed);
        r.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request not received in time"))?
    }

    /// Writes one response (`write` resolves once it is written), at most
    /// [`Limits::write_timeout`].
    pub async fn write_response<T>(
        &self,
        write: impl Future<Output = io::Result<T>>,
    ) -> io::Result<T> {
        tokio::time::timeout(self.limits.write_timeout, write)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "response not taken in time"))?
    }
}

/// A connection being served.
struct Live {
    task: AbortHandle,
    waiting: Arc<AtomicBool>,
}

/// Accepts connections on `listener` until `shutdown` turns true (or its
/// sender is dropped); each connection is served by `handle` in its own
/// task, under `server`'s limits (see the module doc). Connections still
/// open at shutdown are closed.
pub async fn accept_loop<L, H, F>(
    listener: &L,
    server: Server,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    L: Accept,
    H: Fn(L::Conn, Conn) -> F,
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    let Server {
        name,
        limits,
        busy,
        source,
        stats,
    } = server;
    let mut live: VecDeque<Live> = VecDeque::with_capacity(limits.max_conns);
    loop {
        tokio::select! {
            r = listener.accept_conn() => match r {
                Ok(conn) => {
                    live.retain(|l| !l.task.is_finished());
                    if live.len() >= limits.max_conns {
                        // Oldest first: the one that has wasted its slot longest.
                        match live.iter().position(|l| l.waiting.load(Ordering::Relaxed)) {
                            Some(i) => {
                                if let Some(old) = live.remove(i) {
                                    old.task.abort();
                                }
                                stats.evicted.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!("{name}: at {} connections, closed an idle one", limits.max_conns);
                            }
                            None => {
                                stats.refused.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!("{name}: at {} busy connections, refused one", limits.max_conns);
                                L::refuse(conn, busy);
                                continue;
                            }
                        }
                    }
                    let waiting = Arc::new(AtomicBool::new(true));
                    let served = handle(conn, Conn {
                        source: source.clone(),
                        limits,
                        waiting: waiting.clone(),
                    });
                    let stats = stats.clone();
                    let task = tokio::spawn(async move {
                        let e = match tokio::time::timeout(limits.deadline, served).await {
                            Ok(Ok(())) => return,
                            Ok(Err(e)) => e,
                            Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connection deadline"),
                        };
                        if e.kind() == io::ErrorKind::TimedOut {
                            stats.timed_out.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!("{name} connection: {e}");
                    });
                    live.push_back(Live { task: task.abort_handle(), waiting });
                }
                Err(e) => {
                    tracing::warn!("{name} accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = crate::wait_for_shutdown(&mut shutdown) => break,
        }
    }
    for l in live {
        l.task.abort();
    }
}

/// Helpers for the tests of the servers.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncRead, AsyncReadExt};

    /// Reads until the peer closes (a reset counts as closed), at most 5 s:
    /// what was read and how long that took, or `None` if still open.
    pub(crate) async fn until_closed(
        r: &mut (impl AsyncRead + Unpin),
    ) -> Option<(Vec<u8>, Duration)> {
        let t0 = Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut got)).await;
        read.ok().map(|_| (got, t0.elapsed()))
    }

    /// Asserts that the peer closes without a byte, no sooner than `min`.
    pub(crate) async fn closes_silently_after(r: &mut (impl AsyncRead + Unpin), min: Duration) {
        let (got, waited) = until_closed(r).await.expect("still open after 5 s");
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        assert!(waited >= min, "closed after {waited:?}, before {min:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{closes_silently_after, until_closed};
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const TEST: Limits = Limits {
        max_conns: 2,
        read_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
        deadline: Duration::from_secs(30),
    };

    /// A server whose handler answers `ok\n` to every byte `b` and to
    /// `h` (hold) by keeping the slot busy until the client closes.
    async fn start(limits: Limits) -> (std::net::SocketAddr, Arc<ServeStats>, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let source = Arc::new(crate::status::Status::default);
        let server = Server::new("test", limits, b"busy\n", source);
        let stats = server.stats.clone();
        tokio::spawn(async move {
            accept_loop(
                &listener,
                server,
                rx,
                |mut s: TcpStream, c: Conn| async move {
                    loop {
                        let mut b = [0u8; 1];
                        c.read_request(s.read_exact(&mut b)).await?;
                        if b[0] == b'h' {
                            // Busy: not waiting for a request, so not evictable.
                            let _ = s.read(&mut b).await;
                            return Ok(());
                        }
                        c.write_response(s.write_all(b"ok\n")).await?;
                    }
                },
            )
            .await
        });
        (addr, stats, tx)
    }

    async fn ask(s: &mut TcpStream) -> io::Result<Vec<u8>> {
        s.write_all(b"b").await?;
        let mut r = [0u8; 3];
        s.read_exact(&mut r).await?;
        Ok(r.to_vec())
    }

    #[tokio::test]
    async fn over_cap_idle_connections_are_evicted_oldest_first() {
        let (addr, stats, _tx) = start(TEST).await;
        let mut idle = Vec::new();
        for _ in 0..5 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // The honest client is served; the four oldest idle ones were closed.
        let mut honest = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut honest).await.unwrap(), b"ok\n");
        assert_eq!(stats.evicted(), 4);
        for s in &mut idle[..4] {
            closes_silently_after(s, Duration::ZERO).await;
        }
        assert_eq!(stats.refused(), 0);
    }

    #[tokio::test]
    async fn over_cap_busy_connections_refuse_at_once() {
        let (addr, stats, _tx) = start(TEST).await;
        let mut busy = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            assert_eq!(ask(&mut s).await.unwrap(), b"ok\n");
            s.write_all(b"h").await.unwrap();
            busy.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut late = TcpStream::connect(addr).await.unwrap();
        let (got, _) = until_closed(&mut late).await.unwrap();
        assert_eq!(got, b"busy\n");
        assert_eq!((stats.refused(), stats.evicted()), (1, 0));
        // A freed slot is reused.
        drop(busy.pop());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut s).await.unwrap(), b"ok\n");
    }

    #[tokio::test]
    async fn silent_client_times_out() {
        let (addr, stats, _tx) = start(Limits {
            max_conns: 8,
            ..TEST
        })
        .await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        closes_silently_after(&mut silent, TEST.read_timeout).await;
        assert_eq!(stats.timed_out(), 1);
    }

    #[tokio::test]
    async fn deadline_ends_a_busy_connection() {
        let (addr, stats, _tx) = start(Limits {
            deadline: Duration::from_millis(400),
            ..TEST
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t0 = Instant::now();
        // Every request in time, but the connection as a whole is cut.
        while ask(&mut s).await.is_ok() {
            assert!(t0.elapsed() < Duration::from_secs(3));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(t0.elapsed() >= Duration::from_millis(400));
        assert_eq!(stats.timed_out(), 1);
    }

    #[tokio::test]
    async fn shutdown_closes_open_connections() {
        let (addr, _stats, tx) = start(TEST).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut s).await.unwrap(), b"ok\n");
        s.write_all(b"h").await.unwrap();
        tx.send(true).unwrap();
        closes_silently_after(&mut s, Duration::ZERO).await;
    }
}
