//! The driver's TCP streams: datagrams framed on TCP connections, for
//! nodes whose network blocks UDP (docs/tcp.md).
//!
//! The machine sees each stream as a socket ([`SocketId::is_stream`]):
//! streams it connects ([`crate::SocketAction::Connect`]) and streams the
//! driver accepted on its listener ([`Streams::listen`]). One task per
//! connection reads and writes it; the driver's loop stays the only owner
//! of the machine and never blocks on a stream:
//!
//! - **Receiving**: the task deframes ([`crate::stream::Deframer`]) and
//!   hands each datagram to the driver over one bounded channel
//!   ([`EVENTS`] entries); a full channel stalls that task's reads, which
//!   is TCP backpressure on that client only. Each client is held to
//!   [`TcpLimits::rate`] datagrams per second (token bucket; the excess is
//!   dropped, as the pre-authentication limiter drops UDP).
//! - **Sending**: the driver pushes framed datagrams onto the connection's
//!   queue ([`TcpLimits::queue_bytes`]) and returns at once; when it is
//!   full the *oldest* datagrams are dropped (datagrams are loss-tolerant:
//!   RTMFP retransmits control, frames are never retransmitted), so a slow
//!   client can neither block the UDP path nor hold fresh control traffic
//!   behind stale frames.
//! - **Limits**: at most [`TcpLimits::max_clients`] accepted connections
//!   (further ones are closed at once); a connection that receives nothing
//!   for [`TcpLimits::idle`] is closed (sessions send keepalives well
//!   within it); a framing error closes it.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

use crate::machine::SocketId;
use crate::path::canonical_addr;
use crate::stream::{encode_frame, Deframer};

/// Events waiting for the driver, from all streams together.
pub const EVENTS: usize = 1024;

/// Bounds on TCP streams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TcpLimits {
    /// Accepted connections open at once.
    pub max_clients: usize,
    /// Framed bytes queued per connection before the oldest are dropped.
    pub queue_bytes: usize,
    /// A connection that receives nothing for this long is closed.
    pub idle: Duration,
    /// Datagrams per second accepted from one connection.
    pub rate: u32,
    /// Datagrams one connection may send in a burst above the rate.
    pub burst: u32,
    /// An outgoing connection not established within this is given up.
    pub connect_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_clients: 256,
            queue_bytes: 512 * 1024,
            idle: Duration::from_secs(60),
            rate: 20_000,
            burst: 4_000,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What the connection tasks tell the driver.
pub(crate) enum StreamEvent {
    /// The listener accepted a connection as `id`.
    Accepted {
        id: SocketId,
        queue: Arc<SendQueue>,
    },
    Datagram {
        id: SocketId,
        from: SocketAddr,
        data: Vec<u8>,
    },
    Closed {
        id: SocketId,
    },
}

/// A connection's outgoing datagrams, framed, oldest first.
pub(crate) struct SendQueue {
    inner: Mutex<QueueInner>,
    notify: Notify,
    limit: usize,
    dropped: Arc<AtomicU64>,
}

#[derive(Default)]
struct QueueInner {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
    closed: bool,
}

impl SendQueue {
    fn new(limit: usize, dropped: Arc<AtomicU64>) -> SendQueue {
        SendQueue {
            inner: Mutex::new(QueueInner::default()),
            notify: Notify::new(),
            limit,
            dropped,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        // A panicking writer task cannot leave the queue inconsistent
        // (each step is one push or pop).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `datagram`, dropping the oldest queued datagrams to stay
    /// within the limit. False if the datagram cannot be framed or the
    /// connection is closed.
    fn push(&self, datagram: &[u8]) -> bool {
        let mut framed = Vec::with_capacity(datagram.len() + 2);
        if encode_frame(datagram, &mut framed).is_err() {
            return false;
        }
        let mut q = self.lock();
        if q.closed {
            return false;
        }
        while q.bytes + framed.len() > self.limit {
            let Some(old) = q.frames.pop_front() else {
                break;
            };
            q.bytes -= old.len();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.bytes += framed.len();
        q.frames.push_back(framed);
        drop(q);
        self.notify.notify_one();
        true
    }

    fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_one();
    }

    /// Waits for queued datagrams and moves them all into `out`; false
    /// once the queue is closed.
    async fn take(&self, out: &mut Vec<u8>) -> bool {
        loop {
            {
                let mut q = self.lock();
                if q.closed {
                    return false;
                }
                if !q.frames.is_empty() {
                    for f in q.frames.drain(..) {
                        out.extend_from_slice(&f);
                    }
                    q.bytes = 0;
                    return true;
                }
            }
            self.notify.notified().await;
        }
    }
}

/// A token bucket counting datagrams.
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The driver's streams.
pub(crate) struct Streams {
    conns: HashMap<SocketId, Arc<SendQueue>>,
    events_tx: mpsc::Sender<StreamEvent>,
    events: mpsc::Receiver<StreamEvent>,
    listener: Option<tokio::task::AbortHandle>,
    limits: TcpLimits,
    /// Datagrams dropped: queue overflow (oldest first) and rate limit.
    dropped: Arc<AtomicU64>,
}

impl Drop for Streams {
    fn drop(&mut self) {
        if let Some(l) = &self.listener {
            l.abort();
        }
        for q in self.conns.values() {
            q.close();
        }
    }
}

impl Streams {
    pub(crate) fn new() -> Streams {
        let (events_tx, events) = mpsc::channel(EVENTS);
        Streams {
            conns: HashMap::new(),
            events_tx,
            events,
            listener: None,
            limits: TcpLimits::default(),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn open(&self) -> usize {
        self.conns.len()
    }

    /// Starts accepting connections on `listener`.
    pub(crate) fn listen(&mut self, listener: TcpListener, limits: TcpLimits) {
        self.limits = limits;
        let events = self.events_tx.clone();
        let dropped = self.dropped.clone();
        let task = tokio::spawn(accept_loop(listener, events, limits, dropped));
        if let Some(old) = self.listener.replace(task.abort_handle()) {
            old.abort();
        }
    }

    /// Connects `id` to `to` (in the background).
    pub(crate) fn connect(&mut self, id: SocketId, to: SocketAddr) {
        if !id.is_stream() || id >= SocketId::FIRST_ACCEPTED || self.conns.contains_key(&id) {
            tracing::debug!(socket = id.0, "stream id refused");
            return;
        }
        let queue = Arc::new(SendQueue::new(
            self.limits.queue_bytes,
            self.dropped.clone(),
        ));
        self.conns.insert(id, queue.clone());
        let events = self.events_tx.clone();
        let limits = self.limits;
        let dropped = self.dropped.clone();
        tokio::spawn(async move {
            let stream = tokio::time::timeout(limits.connect_timeout, TcpStream::connect(to)).await;
            match stream {
                Ok(Ok(s)) => {
                    tracing::debug!(socket = id.0, %to, "stream connected");
                    run_conn(s, id, to, queue, events.clone(), limits, dropped).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(socket = id.0, %to, error = %e, "stream connect failed")
                }
                Err(_) => tracing::debug!(socket = id.0, %to, "stream connect timed out"),
            }
            let _ = events.send(StreamEvent::Closed { id }).await;
        });
    }

    /// Queues a datagram on stream `id`; false if there is no such stream.
    pub(crate) fn send(&self, id: SocketId, datagram: &[u8]) -> bool {
        self.conns.get(&id).is_some_and(|q| q.push(datagram))
    }

    pub(crate) fn close(&mut self, id: SocketId) {
        if let Some(q) = self.conns.remove(&id) {
            q.close();
        }
    }

    /// The next event (cancel-safe).
    pub(crate) async fn recv(&mut self) -> StreamEvent {
        match self.events.recv().await {
            Some(ev) => ev,
            // We hold a sender: never closed.
            None => std::future::pending().await,
        }
    }

    pub(crate) fn try_recv(&mut self) -> Option<StreamEvent> {
        self.events.try_recv().ok()
    }

    /// Takes an event in: false if it is for a stream already closed
    /// here (it is then ignored). An accepted stream is registered; a
    /// closed one forgotten.
    pub(crate) fn admit(&mut self, ev: &StreamEvent) -> bool {
        match ev {
            StreamEvent::Accepted { id, queue, .. } => {
                self.conns.insert(*id, queue.clone());
                false
            }
            StreamEvent::Datagram { id, .. } => self.conns.contains_key(id),
            StreamEvent::Closed { id } => self.conns.remove(id).is_some(),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    events: mpsc::Sender<StreamEvent>,
    limits: TcpLimits,
    dropped: Arc<AtomicU64>,
) {
    let clients = Arc::new(AtomicUsize::new(0));
    let first = SocketId::FIRST_ACCEPTED.0;
    let mut next = 0u32;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: do not spin.
                tracing::debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if clients.load(Ordering::Relaxed) >= limits.max_clients {
            tracing::debug!(%peer, "TCP client refused: too many clients");
            continue;
        }
        clients.fetch_add(1, Ordering::Relaxed);
        let id = SocketId(first + next % (u32::MAX - first));
        next = next.wrapping_add(1);
        let peer = canonical_addr(peer);
        let queue = Arc::new(SendQueue::new(limits.queue_bytes, dropped.clone()));
        let accepted = StreamEvent::Accepted {
            id,
            queue: queue.clone(),
        };
        if events.send(accepted).await.is_err() {
            return;
        }
        tracing::debug!(socket = id.0, %peer, "TCP client accepted");
        let (events, clients, dropped) = (events.clone(), clients.clone(), dropped.clone());
        tokio::spawn(async move {
            run_conn(stream, id, peer, queue, events.clone(), limits, dropped).await;
            clients.fetch_sub(1, Ordering::Relaxed);
            let _ = events.send(StreamEvent::Closed { id }).await;
        });
    }
}

/// Reads and writes one connection until either side ends it.
async fn run_conn(
    stream: TcpStream,
    id: SocketId,
    from: SocketAddr,
    queue: Arc<SendQueue>,
    events: mpsc::Sender<StreamEvent>,
    limits: TcpLimits,
    dropped: Arc<AtomicU64>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let reader = async {
        let mut deframer = Deframer::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut bucket = Bucket {
            tokens: f64::from(limits.burst),
            last: Instant::now(),
            rate: f64::from(limits.rate),
            burst: f64::from(limits.burst),
        };
        let mut grams = Vec::new();
        loop {
            let n = match tokio::time::timeout(limits.idle, rd.read(&mut buf)).await {
                Ok(Ok(0)) => return "closed by peer".to_string(),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return e.to_string(),
                Err(_) => return "idle".to_string(),
            };
            let r = deframer.feed(&buf[..n], |g| grams.push(g.to_vec()));
            for data in grams.drain(..) {
                if !bucket.take(Instant::now()) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if events
                    .send(StreamEvent::Datagram { id, from, data })
                    .await
                    .is_err()
                {
                    return "driver gone".to_string();
                }
            }
            if let Err(e) = r {
                return e.to_string();
            }
        }
    };
    let writer = async {
        let mut out = Vec::new();
        loop {
            out.clear();
            if !queue.take(&mut out).await {
                return "closed here".to_string();
            }
            if let Err(e) = wr.write_all(&out).await {
                return e.to_string();
            }
        }
    };
    let why = tokio::select! {
        w = reader => w,
        w = writer => w,
    };
    queue.close();
    tracing::debug!(socket = id.0, peer = %from, why, "stream closed");
}

/// Binds a TCP listener on `addr` (the IPv6 wildcard serves IPv4 too
/// where the host's default allows, as on Linux).
pub(crate) async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_the_oldest_datagrams() {
        let dropped = Arc::new(AtomicU64::new(0));
        let q = SendQueue::new(3 * 102, dropped.clone());
        for i in 0..5u8 {
            assert!(q.push(&[i; 100]));
        }
        let inner = q.lock();
        let firsts: Vec<u8> = inner.frames.iter().map(|f| f[2]).collect();
        assert_eq!(firsts, [2, 3, 4]);
        assert_eq!(inner.bytes, 3 * 102);
        drop(inner);
        assert_eq!(dropped.load(Ordering::Relaxed), 2);
        q.close();
        assert!(!q.push(&[9; 10]));
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t = Instant::now();
        let mut b = Bucket {
            tokens: 3.0,
            last: t,
            rate: 10.0,
            burst: 3.0,
        };
        assert_eq!((0..5).filter(|_| b.take(t)).count(), 3);
        assert!(b.take(t + Duration::from_millis(100)));
        assert!(!b.take(t + Duration::from_millis(100)));
    }

    #[tokio::test]
    async fn datagrams_cross_a_stream_both_ways() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = Streams::new();
        server.listen(listener, TcpLimits::default());
        let mut client = Streams::new();
        let cid = SocketId::FIRST_STREAM;
        client.connect(cid, addr);
        assert!(client.send(cid, b"hello"));
        let ev = server.recv().await;
        assert!(!server.admit(&ev));
        let StreamEvent::Accepted { id: sid, .. } = ev else {
            panic!("accepted first");
        };
        assert!(sid >= SocketId::FIRST_ACCEPTED);
        let ev = server.recv().await;
        assert!(server.admit(&ev));
        let StreamEvent::Datagram { id, data, .. } = ev else {
            panic!("then the datagram");
        };
        assert_eq!((id, data.as_slice()), (sid, &b"hello"[..]));
        assert!(server.send(sid, b"back"));
        let ev = client.recv().await;
        assert!(client.admit(&ev));
        let StreamEvent::Datagram { id, from, data } = ev else {
            panic!("a datagram");
        };
        assert_eq!((id, from, data.as_slice()), (cid, addr, &b"back"[..]));
        // Closing here is seen there.
        client.close(cid);
        loop {
            let ev = server.recv().await;
            if let StreamEvent::Closed { id } = ev {
                assert_eq!(id, sid);
                assert!(server.admit(&ev));
                break;
            }
        }
        assert_eq!(server.open(), 0);
    }
}
