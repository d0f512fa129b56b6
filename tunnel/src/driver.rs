//! The thin tokio driver: owns the UDP socket and the timer, feeds the
//! sans-IO [`Endpoint`] and sends what it produces. No protocol logic lives
//! here.
//!
//! Use: issue commands on [`Driver::machine`] (for an endpoint:
//! [`Driver::endpoint`]: connect, open_flow, send, close), then call
//! [`Driver::flush`]; await [`Driver::wait`] for the next socket or timer
//! wake-up (or, with a bare endpoint, [`Driver::next_event`] for sessions
//! opening and closing and messages arriving). Both are cancel-safe, so
//! they can sit in a `tokio::select!` next to a TAP read.
//!
//! The data path is batched (the kernel's per-datagram cost dominates a
//! VPN's CPU time): on Linux, datagrams the endpoint produces are
//! collected into a batch and handed to the kernel with one `sendmmsg(2)`;
//! runs of same-destination, same-size datagrams inside it become one UDP
//! GSO message (`UDP_SEGMENT`). Receiving uses `recvmmsg(2)` with UDP GRO,
//! so a burst arrives as a few coalesced buffers that are split back into
//! datagrams here. The socket buffers are enlarged (4 MiB) so bursts are
//! not dropped by the kernel. Elsewhere the driver falls back to one
//! `send_to`/`recv_from` per datagram with the same batch bookkeeping.
//!
//! The driver is generic over the machine it drives
//! ([`DatagramMachine`]): a bare [`Endpoint`] (tests, benches, tools) or
//! the node core. A machine may ask for extra ephemeral sockets
//! ([`SocketAction`], birthday punching); the driver binds them, reads
//! them like the main socket (telling the machine which socket a datagram
//! came on) and sends from the socket each datagram names. Which socket
//! to use, pinning and expiry are the machine's decisions
//! (`ExtraSockets`, `tunnel/src/extra_sockets.rs`).
//!
//! TCP streams (docs/tcp.md): the machine may connect streams
//! ([`SocketAction::Connect`]) and the driver may accept them
//! ([`Driver::listen_tcp`]); each is a socket to the machine
//! ([`SocketId::is_stream`]) whose datagrams travel framed, read and
//! written by a task per connection with bounded, drop-oldest queues, so a
//! stream never blocks the UDP path (`tunnel/src/tcp.rs`).
//!
//! Address families: a socket bound to the IPv6 wildcard `[::]` is made
//! dual-stack (`IPV6_V6ONLY` off, whatever the host's default), so it
//! serves IPv4 too, and the kernel then names IPv4 peers by IPv4-mapped
//! addresses (`[::ffff:198.51.100.10]:4910`). Those never cross this
//! module: every source address read from a socket is normalised to plain
//! IPv4 ([`crate::canonical_addr`]), and an IPv4 destination is mapped back
//! ([`for_socket`]) only when the datagram leaves through an IPv6 socket.
//! Above the driver an IPv4 peer has one address whichever socket it came
//! through, which is what the endpoint hands to others (reflexive
//! addresses, STUN answers, `Moved`) and what IPv4-only members can use.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, SocketAddrV6};
use std::task::Poll;
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::endpoint::{Endpoint, EndpointConfig, Event};
use crate::machine::{DatagramMachine, Outgoing, SocketAction, SocketId};
use crate::path::canonical_addr as canonical;
use crate::session::DeferredSeal;
pub use crate::tcp::TcpLimits;
use crate::tcp::{StreamEvent, Streams};
use crate::Rng;

#[cfg(target_os = "linux")]
mod send_thread;
#[cfg(target_os = "linux")]
use send_thread::SendThread;

/// Without Linux's `sendmmsg` there is no send thread: a type with no
/// values keeps the driver's code the same.
#[cfg(not(target_os = "linux"))]
enum SendThread {}

#[cfg(not(target_os = "linux"))]
impl SendThread {
    fn hand_off(&mut self, _tx: &mut TxBatch) -> bool {
        match *self {}
    }
    async fn returned(&mut self) {
        match *self {}
    }
    fn add_stats(&self, _into: &mut IoStats) {
        match *self {}
    }
    fn errors(&self) -> u64 {
        match *self {}
    }
}

/// Largest datagram the endpoint produces or we accept; RTMFP packets
/// never exceed the path MTU.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams collected before they are handed to the kernel: two GSO
/// messages of 44 full-size datagrams (`sys::MAX_GSO_BYTES`), where 64
/// left a full batch as messages of 40 and 24.
const TX_BATCH: usize = 88;
/// recvmmsg rounds per wake-up before events and timers are looked at.
const RX_ROUNDS: usize = 4;
/// Most extra sockets open at once (further requests are refused).
pub const MAX_EXTRA_SOCKETS: usize = 1024;
/// Datagrams read from one extra socket per wake-up.
const EXTRA_RX_BUDGET: usize = 64;

/// `dest` as a socket of the given family takes it: an IPv4 destination
/// becomes its IPv4-mapped IPv6 form for an IPv6 (dual-stack) socket;
/// anything else unchanged (an IPv6 destination from an IPv4 socket fails
/// at the kernel and is counted as a send error).
pub fn for_socket(dest: SocketAddr, ipv6_socket: bool) -> SocketAddr {
    match dest {
        SocketAddr::V4(a) if ipv6_socket => {
            SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))
        }
        _ => dest,
    }
}

/// A fresh seed from the OS for the endpoint's random source.
pub fn os_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(seed)
}

/// What the driver handed to and took from the kernel on the main UDP
/// socket, since it was bound: how well batching works (datagrams per
/// system call, per GSO/GRO message) and how often the driver woke up.
/// Counters only; reading them costs nothing on the data path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// `Driver::wait` wake-ups (socket, timer, extra socket or stream).
    pub wakeups: u64,
    /// `sendmmsg(2)` calls (one `send_to` each elsewhere), the messages
    /// the kernel took (a GSO message carries several datagrams) and the
    /// datagrams in them.
    pub send_calls: u64,
    pub send_messages: u64,
    pub datagrams_sent: u64,
    /// `recvmmsg(2)` calls that returned data, the messages returned (a
    /// GRO message carries several datagrams) and the datagrams in them.
    pub recv_calls: u64,
    pub recv_messages: u64,
    pub datagrams_received: u64,
    /// Of `datagrams_sent`: relayed datagrams sent straight from the
    /// receive buffer ([`DatagramMachine::handle_datagram_in_place`]).
    pub datagrams_forwarded: u64,
    /// Relayed datagrams lost to a full socket send buffer (the receive
    /// buffer they live in is needed for the next read).
    pub forwards_dropped: u64,
}

/// One datagram in the transmit batch: `buf[offset..offset + len]`.
#[derive(Debug, Clone, Copy)]
struct Queued {
    offset: usize,
    len: usize,
    dest: SocketAddr,
}

/// Datagrams produced by the endpoint and not yet accepted by the kernel.
/// They are packed back to back in `buf`, so a run of equal-size datagrams
/// to one destination is one contiguous GSO buffer.
struct TxBatch {
    buf: Vec<u8>,
    items: Vec<Queued>,
    /// Items still to be encrypted (by index), from a machine that defers
    /// sealing to the send thread ([`DatagramMachine::set_defer_sealing`]).
    seals: Vec<(usize, DeferredSeal)>,
    /// Items before this index were handed to the kernel (or counted as
    /// failed).
    sent: usize,
    used: usize,
    /// UDP GSO is usable (Linux; switched off when the route's device
    /// cannot do it).
    gso: bool,
    /// Datagrams from `sent` on that go out one per message: the kernel
    /// refused them as a GSO message (EINVAL: e.g. a segment above the
    /// route's MTU, which IP fragmentation would carry; EIO: no checksum
    /// offload) or their destination is refused anyway.
    singles: usize,
    /// A GSO message failed with EIO: if the first datagram then goes out
    /// alone, GSO is what the device refuses, so it is switched off.
    eio_suspect: bool,
    /// The socket is IPv6: IPv4 destinations are queued IPv4-mapped.
    ipv6: bool,
    /// `send_calls`, `send_messages`, `datagrams_sent` of [`IoStats`].
    stats: IoStats,
}

impl TxBatch {
    fn new(buf: Vec<u8>, gso: bool, ipv6: bool) -> TxBatch {
        TxBatch {
            buf,
            items: Vec::with_capacity(TX_BATCH),
            seals: Vec::with_capacity(TX_BATCH),
            sent: 0,
            used: 0,
            gso,
            singles: 0,
            eio_suspect: false,
            ipv6,
            stats: IoStats::default(),
        }
    }

    fn is_drained(&self) -> bool {
        self.sent == self.items.len()
    }

    fn reset(&mut self) {
        self.items.clear();
        self.seals.clear();
        self.sent = 0;
        self.used = 0;
        self.singles = 0;
    }

    /// Encrypt the datagrams whose sealing was left to the sender.
    fn seal_all(&mut self) {
        for (i, seal) in self.seals.drain(..) {
            if let Some(q) = self.items.get(i) {
                if let Some(d) = self.buf.get_mut(q.offset..q.offset + q.len) {
                    seal.finish(d);
                }
            }
        }
    }

    /// `n` datagrams from `sent` were handed over (or counted as failed).
    fn advance(&mut self, n: usize) {
        self.sent += n;
        self.singles = self.singles.saturating_sub(n);
    }
}

/// Received datagrams, as the kernel returned them.
struct RxBatch {
    buf: Vec<u8>,
    /// Bytes per slot of `buf`.
    slot: usize,
    slots: usize,
    /// Per message: slot, length, source, GRO segment size (0 = one
    /// datagram).
    meta: Vec<(usize, usize, SocketAddr, usize)>,
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    gro: bool,
    /// `recv_calls`, `recv_messages`, `datagrams_received` of [`IoStats`].
    stats: IoStats,
}

/// An extra socket the machine asked for.
struct Extra {
    id: SocketId,
    socket: UdpSocket,
    /// The same socket (a duplicated descriptor) for sending: a send on
    /// it does not depend on the reactor having seen the socket writable,
    /// which a fresh tokio socket has not.
    tx: std::net::UdpSocket,
}

/// The sockets besides the main one: extra UDP sockets, by id, and TCP
/// streams.
struct Extras {
    sockets: Vec<Extra>,
    index: HashMap<SocketId, usize>,
    buf: Vec<u8>,
    /// They are IPv6 sockets (bound like the main socket).
    ipv6: bool,
    streams: Streams,
}

impl Extras {
    fn get(&self, id: SocketId) -> Option<&Extra> {
        self.index.get(&id).and_then(|&i| self.sockets.get(i))
    }

    /// Bind `id` on the main socket's IP, at `port` (0: ephemeral).
    fn open(&mut self, main: &UdpSocket, id: SocketId, port: u16) -> io::Result<()> {
        if self.sockets.len() >= MAX_EXTRA_SOCKETS {
            return Err(io::Error::other("too many extra sockets"));
        }
        let local = main.local_addr()?;
        let std_socket = sys::bind(SocketAddr::new(local.ip(), port))?;
        sys::enlarge_buffers(&std_socket);
        let tx = std_socket.try_clone()?;
        let socket = UdpSocket::from_std(std_socket)?;
        self.index.insert(id, self.sockets.len());
        self.sockets.push(Extra { id, socket, tx });
        Ok(())
    }

    fn close(&mut self, id: SocketId) {
        let Some(i) = self.index.remove(&id) else {
            return;
        };
        self.sockets.swap_remove(i);
        if let Some(moved) = self.sockets.get(i) {
            self.index.insert(moved.id, i);
        }
    }
}

/// A UDP socket (and the extra sockets it asks for) driving one
/// [`DatagramMachine`].
pub struct Driver<M = Endpoint> {
    machine: M,
    socket: UdpSocket,
    out: Outbox,
    rx: RxBatch,
    /// Relayed datagrams to send from `rx.buf` (offsets into it; `fwd.buf`
    /// is empty but while [`send_forwards`] lends it the receive buffer).
    fwd: TxBatch,
    extras: Extras,
    /// `IoStats::wakeups`.
    wakeups: u64,
}

/// Where the machine's main-socket datagrams go: the transmit batch, and
/// from it the kernel, or the send thread once started
/// ([`Driver::spawn_send_thread`]).
struct Outbox {
    tx: TxBatch,
    /// Datagrams the OS refused (relayed ones included).
    errors: u64,
    thread: Option<SendThread>,
}

impl Outbox {
    /// Hand the queued datagrams to the send thread if there is one, else
    /// to the kernel; the batch is empty afterwards unless every batch is
    /// out or the socket's buffer is full (then false).
    fn dispatch(&mut self, socket: &UdpSocket) -> bool {
        match &mut self.thread {
            Some(t) => t.hand_off(&mut self.tx),
            None => {
                self.tx.seal_all();
                send_queued(socket, &mut self.tx, &mut self.errors)
            }
        }
    }
}

/// Carry out the machine's socket actions, then move its datagrams into
/// the transmit batch (datagrams for extra sockets leave at once), handing
/// full batches to the kernel. Returns false if the socket's buffer is
/// full (what is queued stays queued; the machine keeps the rest).
fn collect<M: DatagramMachine>(
    m: &mut M,
    socket: &UdpSocket,
    out: &mut Outbox,
    extras: &mut Extras,
    now: Instant,
) -> bool {
    loop {
        while let Some(a) = m.poll_socket_action() {
            match a {
                SocketAction::Open { id } => {
                    if let Err(e) = extras.open(socket, id, 0) {
                        tracing::debug!(socket = id.0, error = %e, "extra socket not opened");
                    }
                }
                SocketAction::Close { id } if id.is_stream() => extras.streams.close(id),
                SocketAction::Listen { id, port } => {
                    if let Err(e) = extras.open(socket, id, port) {
                        tracing::warn!(port, error = %e, "cannot bind UDP port");
                    }
                }
                SocketAction::Close { id } => extras.close(id),
                SocketAction::Connect { id, to } => extras.streams.connect(id, to),
            }
        }
        if out.tx.items.len() == TX_BATCH && !out.dispatch(socket) {
            return false;
        }
        let tx = &mut out.tx;
        let off = tx.used;
        let Some(t) = m.poll_transmit(now, &mut tx.buf[off..off + MAX_DATAGRAM]) else {
            return true;
        };
        let seal = m.take_pending_seal();
        if t.socket != SocketId::MAIN || out.thread.is_none() {
            // Only the send thread seals later.
            if let Some(seal) = &seal {
                seal.finish(&mut tx.buf[off..off + t.size]);
            }
        } else if let Some(seal) = seal {
            tx.seals.push((tx.items.len(), seal));
        }
        if t.socket.is_stream() {
            // Queued (a full queue drops its oldest); no stream: loss.
            extras.streams.send(t.socket, &tx.buf[off..off + t.size]);
            continue;
        }
        if t.socket != SocketId::MAIN {
            // One datagram per call; a full buffer or a socket that could
            // not be opened is loss, as for the main socket.
            let sent = match extras.get(t.socket) {
                Some(x) => x.tx.send_to(
                    &tx.buf[off..off + t.size],
                    for_socket(t.destination, extras.ipv6),
                ),
                None => Err(io::Error::other("no such socket")),
            };
            if let Err(e) = sent {
                tracing::trace!(dest = %t.destination, socket = t.socket.0, error = %e, "extra socket send failed");
                out.errors += 1;
            }
            continue;
        }
        tx.items.push(Queued {
            offset: off,
            len: t.size,
            dest: for_socket(t.destination, tx.ipv6),
        });
        tx.used += t.size;
    }
}

/// Hand the queued datagrams to the kernel; the batch is empty afterwards
/// unless the socket's buffer is full (then false).
fn send_queued(socket: &UdpSocket, tx: &mut TxBatch, send_errors: &mut u64) -> bool {
    send_queued_with(tx, send_errors, |tx| {
        socket.try_io(Interest::WRITABLE, || sys::send(socket, tx))
    })
}

/// [`send_queued`] with `send` doing one system call's worth (a
/// `WouldBlock` from it stops the sending, returning false): the GSO
/// fallbacks and error counting, shared with the send thread.
fn send_queued_with(
    tx: &mut TxBatch,
    send_errors: &mut u64,
    mut send: impl FnMut(&mut TxBatch) -> io::Result<usize>,
) -> bool {
    while !tx.is_drained() {
        let r = send(tx);
        match r {
            Ok(n) => {
                tx.stats.send_calls += 1;
                tx.stats.datagrams_sent += n as u64;
                if tx.eio_suspect {
                    tracing::debug!("UDP GSO refused by the device; sending datagrams singly");
                    tx.gso = false;
                    tx.eio_suspect = false;
                }
                tx.advance(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                // The first message of the batch was refused. If it was a
                // GSO message, retry its datagrams one by one: GSO or the
                // destination may be at fault.
                let run = sys::gso_run(tx);
                if run > 1 && sys::is_gso_refusal(&e) {
                    tx.singles = run;
                    tx.eio_suspect = e.raw_os_error() == Some(sys::EIO);
                    continue;
                }
                tx.eio_suspect = false;
                // Unreachable destinations and the like: the protocol
                // treats it as loss.
                let n = run.max(1);
                if let Some(q) = tx.items.get(tx.sent) {
                    tracing::debug!(dest = %q.dest, error = %e, "send failed");
                }
                *send_errors += n as u64;
                tx.advance(n);
            }
        }
    }
    tx.reset();
    true
}

/// Send the relayed datagrams queued in `fwd` straight from the receive
/// buffer they arrived in; what a full socket buffer refuses is dropped
/// (the buffer is read into next) and counted.
fn send_forwards(socket: &UdpSocket, fwd: &mut TxBatch, rx: &mut RxBatch, send_errors: &mut u64) {
    if fwd.items.is_empty() {
        return;
    }
    std::mem::swap(&mut fwd.buf, &mut rx.buf);
    if !send_queued(socket, fwd, send_errors) {
        fwd.stats.forwards_dropped += (fwd.items.len() - fwd.sent) as u64;
        fwd.reset();
    }
    std::mem::swap(&mut fwd.buf, &mut rx.buf);
}

/// Where a datagram the machine forwards from the receive buffer goes:
/// main-socket datagrams join `fwd` (at `offset` in the receive buffer),
/// others leave at once from their extra socket or stream.
fn forward(
    o: Outgoing,
    d: &[u8],
    offset: usize,
    fwd: &mut TxBatch,
    extras: &mut Extras,
    send_errors: &mut u64,
) {
    let Some(d) = d.get(..o.size) else {
        return;
    };
    if o.socket == SocketId::MAIN {
        fwd.items.push(Queued {
            offset,
            len: d.len(),
            dest: for_socket(o.destination, fwd.ipv6),
        });
    } else if o.socket.is_stream() {
        extras.streams.send(o.socket, d);
    } else {
        let sent = match extras.get(o.socket) {
            Some(x) => x.tx.send_to(d, for_socket(o.destination, extras.ipv6)),
            None => Err(io::Error::other("no such socket")),
        };
        if sent.is_err() {
            *send_errors += 1;
        }
    }
}

enum Wake {
    Readable,
    Timer,
    Writable,
    ExtraReadable(usize),
    Stream(StreamEvent),
}

impl Driver<Endpoint> {
    /// Bind `addr` and start an endpoint on it.
    pub async fn bind(addr: SocketAddr, cfg: EndpointConfig) -> io::Result<Driver> {
        let seed = os_seed()?;
        Driver::bind_with(addr, |_| {
            Ok(Endpoint::new(Instant::now(), cfg, Rng::from_seed(seed)))
        })
        .await
    }

    /// The sans-IO endpoint, for commands and status. Call [`Driver::flush`]
    /// after commands.
    pub fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.machine
    }

    pub fn endpoint_ref(&self) -> &Endpoint {
        &self.machine
    }

    /// Run the socket and timers until the endpoint has an event.
    /// Cancel-safe: no input is lost if the future is dropped (a receive
    /// batch is handled completely before any await).
    pub async fn next_event(&mut self) -> Event {
        loop {
            if let Some(ev) = self.machine.poll_event() {
                return ev;
            }
            self.flush();
            if let Some(ev) = self.machine.poll_event() {
                return ev;
            }
            self.wait().await;
        }
    }
}

impl<M: DatagramMachine> Driver<M> {
    /// Bind `addr`, then build the machine for the bound address (`addr`
    /// with port 0 binds an ephemeral port). The IPv6 wildcard `[::]`
    /// binds dual-stack: the one socket serves IPv4 and IPv6 (see the
    /// module doc for how addresses are presented).
    pub async fn bind_with(
        addr: SocketAddr,
        make: impl FnOnce(SocketAddr) -> io::Result<M>,
    ) -> io::Result<Driver<M>> {
        let std_socket = sys::bind(addr)?;
        let caps = sys::configure(&std_socket);
        let socket = UdpSocket::from_std(std_socket)?;
        let local = socket.local_addr()?;
        let machine = make(local)?;
        let slot = if caps.gro {
            sys::GRO_SLOT
        } else {
            MAX_DATAGRAM
        };
        let slots = if caps.gro {
            sys::GRO_SLOTS
        } else {
            sys::RX_SLOTS
        };
        Ok(Driver {
            machine,
            socket,
            out: Outbox {
                tx: TxBatch::new(
                    vec![0u8; TX_BATCH * MAX_DATAGRAM],
                    caps.gso,
                    local.is_ipv6(),
                ),
                errors: 0,
                thread: None,
            },
            fwd: TxBatch::new(Vec::new(), caps.gso, local.is_ipv6()),
            rx: RxBatch {
                buf: vec![0u8; slot * slots],
                slot,
                slots,
                meta: Vec::with_capacity(slots),
                gro: caps.gro,
                stats: IoStats::default(),
            },
            extras: Extras {
                sockets: Vec::new(),
                index: HashMap::new(),
                buf: vec![0u8; MAX_DATAGRAM],
                ipv6: local.is_ipv6(),
                streams: Streams::new(),
            },
            wakeups: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The machine, for commands. Call [`Driver::flush`] after commands.
    pub fn machine(&mut self) -> &mut M {
        &mut self.machine
    }

    pub fn machine_ref(&self) -> &M {
        &self.machine
    }

    /// Datagrams the OS refused (other than a full buffer).
    pub fn send_errors(&self) -> u64 {
        self.out.errors + self.out.thread.as_ref().map_or(0, SendThread::errors)
    }

    /// Send the main socket's datagrams from a thread of its own from now
    /// on (`sendmmsg` beside the thread that drives the machine; see
    /// `driver/send_thread.rs`). Linux only (elsewhere `Unsupported`);
    /// a second call does nothing.
    pub fn spawn_send_thread(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsFd;
            if self.out.thread.is_some() {
                return Ok(());
            }
            let socket = std::net::UdpSocket::from(self.socket.as_fd().try_clone_to_owned()?);
            let batches = (0..send_thread::BATCHES)
                .map(|_| {
                    TxBatch::new(
                        vec![0u8; TX_BATCH * MAX_DATAGRAM],
                        self.out.tx.gso,
                        self.out.tx.ipv6,
                    )
                })
                .collect();
            // The counts so far move to the thread's counters, which only
            // grow from here (batches come back with theirs cleared).
            let so_far = std::mem::take(&mut self.out.tx.stats);
            self.out.thread = Some(SendThread::spawn(socket, batches, so_far)?);
            // The thread encrypts too: the machine leaves it session
            // packets to seal (`TxBatch::seal_all`).
            self.machine.set_defer_sealing(true);
            Ok(())
        }
        #[cfg(not(target_os = "linux"))]
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a send thread needs Linux (sendmmsg)",
        ))
    }

    /// A send thread is running ([`Driver::spawn_send_thread`]).
    pub fn has_send_thread(&self) -> bool {
        self.out.thread.is_some()
    }

    /// Batching and wake-up counters of the main socket.
    pub fn io_stats(&self) -> IoStats {
        let (tx, fwd) = (&self.out.tx.stats, &self.fwd.stats);
        let mut thread = IoStats::default();
        if let Some(t) = &self.out.thread {
            t.add_stats(&mut thread);
        }
        IoStats {
            wakeups: self.wakeups,
            send_calls: tx.send_calls + fwd.send_calls + thread.send_calls,
            send_messages: tx.send_messages + fwd.send_messages + thread.send_messages,
            datagrams_sent: tx.datagrams_sent + fwd.datagrams_sent + thread.datagrams_sent,
            recv_calls: self.rx.stats.recv_calls,
            recv_messages: self.rx.stats.recv_messages,
            datagrams_received: self.rx.stats.datagrams_received,
            datagrams_forwarded: fwd.datagrams_sent,
            forwards_dropped: fwd.forwards_dropped,
        }
    }

    /// Extra sockets open now.
    pub fn extra_sockets(&self) -> usize {
        self.extras.sockets.len()
    }

    /// Accept TCP streams on `addr` (framed datagrams, docs/tcp.md);
    /// each accepted connection is a socket to the machine. Returns the
    /// bound address.
    pub async fn listen_tcp(
        &mut self,
        addr: SocketAddr,
        limits: TcpLimits,
    ) -> io::Result<SocketAddr> {
        let listener = crate::tcp::bind(addr).await?;
        let local = listener.local_addr()?;
        self.extras.streams.listen(listener, limits);
        Ok(local)
    }

    /// TCP streams open now (connected and accepted).
    pub fn streams(&self) -> usize {
        self.extras.streams.open()
    }

    /// Datagrams dropped on TCP streams: a full send queue (oldest first)
    /// or a client above its rate.
    pub fn stream_drops(&self) -> u64 {
        self.extras.streams.dropped()
    }

    /// Feed a stream event, and what else the streams have queued, to the
    /// machine.
    fn receive_streams(&mut self, first: StreamEvent) {
        let mut ev = Some(first);
        for _ in 0..EXTRA_RX_BUDGET {
            let streams = &mut self.extras.streams;
            let Some(e) = ev.take().or_else(|| streams.try_recv()) else {
                break;
            };
            if !streams.admit(&e) {
                continue;
            }
            let now = Instant::now();
            match e {
                StreamEvent::Datagram { id, from, mut data } => {
                    self.machine
                        .handle_datagram(now, id, canonical(from), &mut data)
                }
                StreamEvent::Closed { id } => self.machine.handle_socket_closed(now, id),
                StreamEvent::Accepted { .. } => {}
            }
            self.flush();
        }
    }

    /// Send everything the machine has to send now, without waiting.
    /// Datagrams that meet a full socket buffer are kept and sent by the
    /// next [`Driver::wait`].
    pub fn flush(&mut self) {
        let now = Instant::now();
        let Driver {
            machine,
            socket,
            out,
            extras,
            ..
        } = self;
        if collect(machine, socket, out, extras, now) {
            out.dispatch(socket);
        }
    }

    /// Read what extra socket `i` holds and feed it to the machine.
    fn receive_extra(&mut self, i: usize) {
        let Driver {
            machine,
            socket,
            out,
            extras,
            ..
        } = self;
        let mut draining = collect(machine, socket, out, extras, Instant::now());
        for _ in 0..EXTRA_RX_BUDGET {
            let Some(x) = extras.sockets.get(i) else {
                break;
            };
            let id = x.id;
            let (n, from) = match x.socket.try_recv_from(&mut extras.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "extra socket recv failed");
                    break;
                }
            };
            let now = Instant::now();
            let Some(data) = extras.buf.get_mut(..n) else {
                continue;
            };
            machine.handle_datagram(now, id, canonical(from), data);
            if draining {
                draining = collect(machine, socket, out, extras, now);
            }
        }
        if draining {
            out.dispatch(socket);
        }
    }

    /// Read what the socket holds (a few batches) and feed it to the
    /// machine, one datagram at a time, draining the machine's output
    /// after each into the transmit batch, which goes to the kernel when
    /// full and at the end. Each batch read by one `recvmmsg` is bracketed
    /// by [`DatagramMachine::set_receive_batch`], so obligatory
    /// acknowledgements leave after every fourth data packet and at the
    /// batch's end rather than after every packet (RFC 7016 3.6.3.4.5, "as
    /// soon as is practical"); data the acknowledgements read release
    /// leaves at once. Everything read is handled before returning.
    fn receive(&mut self) {
        let Driver {
            machine,
            socket,
            out,
            rx,
            fwd,
            extras,
            ..
        } = self;
        // False once the socket's send buffer is full (or every batch is
        // with the send thread): the machine keeps its output until the
        // next flush.
        let mut draining = collect(machine, socket, out, extras, Instant::now());
        for _ in 0..RX_ROUNDS {
            let got = match socket.try_io(Interest::READABLE, || sys::recv(socket, rx)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "recv failed");
                    break;
                }
            };
            rx.stats.recv_calls += 1;
            rx.stats.recv_messages += rx.meta.len() as u64;
            machine.set_receive_batch(true);
            for &(i, len, from, seg) in &rx.meta {
                let now = Instant::now();
                let from = canonical(from);
                let start = i * rx.slot;
                let Some(data) = rx.buf.get_mut(start..start + len) else {
                    continue;
                };
                let seg = if seg == 0 { len } else { seg };
                let mut offset = start;
                for d in data.chunks_mut(seg.max(1)) {
                    rx.stats.datagrams_received += 1;
                    let n = d.len();
                    if let Some(o) = machine.handle_datagram_in_place(now, SocketId::MAIN, from, d)
                    {
                        forward(o, d, offset, fwd, extras, &mut out.errors);
                    }
                    offset += n;
                    if draining {
                        draining = collect(machine, socket, out, extras, now);
                    }
                }
            }
            machine.set_receive_batch(false);
            if draining {
                draining = collect(machine, socket, out, extras, Instant::now());
            }
            // Before the receive buffer is read into again.
            send_forwards(socket, fwd, rx, &mut out.errors);
            if got < rx.slots {
                break;
            }
        }
        if draining {
            out.dispatch(socket);
        }
    }

    /// Flush, then wait for one wake-up of the sockets or the machine's
    /// timer and handle it (datagrams read and fed, timers run). What a
    /// timer or a command produces leaves with the caller's next
    /// [`Driver::flush`] or `wait`. Cancel-safe: no input is lost if the
    /// future is dropped (a receive batch is handled completely before
    /// any await).
    pub async fn wait(&mut self) {
        self.flush();
        let deadline = self.machine.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let blocked = !self.out.tx.is_drained();
        let socket = &self.socket;
        let send_thread = &mut self.out.thread;
        let writable = async {
            if blocked {
                match send_thread {
                    Some(t) => t.returned().await,
                    None => {
                        let _ = socket.writable().await;
                    }
                }
            } else {
                std::future::pending::<()>().await
            }
        };
        let extra = &self.extras.sockets;
        let streams = &mut self.extras.streams;
        // Allocation-free: poll every extra socket's readiness.
        let extra_readable = poll_fn(|cx| {
            for (i, x) in extra.iter().enumerate() {
                if x.socket.poll_recv_ready(cx).is_ready() {
                    return Poll::Ready(i);
                }
            }
            Poll::Pending
        });
        let wake = tokio::select! {
            _ = socket.readable() => Wake::Readable,
            _ = sleep => Wake::Timer,
            _ = writable => Wake::Writable,
            i = extra_readable => Wake::ExtraReadable(i),
            ev = streams.recv() => Wake::Stream(ev),
        };
        self.wakeups += 1;
        match wake {
            Wake::Readable => self.receive(),
            Wake::Timer => self.machine.handle_timeout(Instant::now()),
            Wake::Writable => {}
            Wake::ExtraReadable(i) => self.receive_extra(i),
            Wake::Stream(ev) => self.receive_streams(ev),
        }
    }
}

/// A non-blocking UDP socket bound to `addr` with the OS defaults.
fn bind_plain(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// What the socket supports after [`sys::configure`].
struct Caps {
    gso: bool,
    gro: bool,
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // FFI to libc (sendmmsg, recvmmsg, setsockopt): the crate's one exception
mod sys {
    //! Linux: sendmmsg with UDP GSO, recvmmsg with UDP GRO.

    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    use super::{Caps, RxBatch, TxBatch, MAX_DATAGRAM, TX_BATCH};

    /// Socket buffer size asked for (the kernel may grant less).
    const SOCKET_BUFFER: usize = 4 << 20;

    // Not exported by the libc crate for glibc targets (linux/udp.h).
    const UDP_SEGMENT: libc::c_int = 103;
    const UDP_GRO: libc::c_int = 104;
    /// Kernel limit on segments per GSO send (UDP_MAX_SEGMENTS).
    const MAX_SEGMENTS: usize = 64;
    /// Payload bytes per GSO send, under the 64 KiB IP datagram limit
    /// (65,535 bytes with the IPv4 and UDP headers; 44 datagrams of a
    /// 1500-byte path).
    const MAX_GSO_BYTES: usize = 65_000;
    /// Receive slots with GRO and their size (a coalesced buffer holds up
    /// to 64 KiB).
    pub(super) const GRO_SLOTS: usize = 16;
    pub(super) const GRO_SLOT: usize = 1 << 16;
    /// Receive slots without GRO.
    pub(super) const RX_SLOTS: usize = 64;
    /// Room for one cmsg carrying an int (UDP_SEGMENT / UDP_GRO).
    const CMSG_SPACE: usize = 32;

    fn setsockopt_int(
        fd: libc::c_int,
        level: libc::c_int,
        name: libc::c_int,
        v: libc::c_int,
    ) -> bool {
        // SAFETY: `v` lives for the call; the length matches its type.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    }

    /// Enlarge the socket buffers (no GRO: extra sockets are read one
    /// datagram at a time).
    pub(super) fn enlarge_buffers(s: &std::net::UdpSocket) {
        let fd = s.as_raw_fd();
        let size = SOCKET_BUFFER as libc::c_int;
        // The FORCE variants pass rmem_max/wmem_max with CAP_NET_ADMIN
        // (the agent has it); otherwise the capped variant.
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if !setsockopt_int(fd, libc::SOL_SOCKET, force, size) {
                setsockopt_int(fd, libc::SOL_SOCKET, plain, size);
            }
        }
    }

    /// A non-blocking UDP socket bound to `addr`; on the IPv6 wildcard
    /// with `IPV6_V6ONLY` off (dual-stack), whatever the host's default
    /// (`net.ipv6.bindv6only`), so it serves IPv4 as well.
    pub(super) fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
        let SocketAddr::V6(v6) = addr else {
            return super::bind_plain(addr);
        };
        if !v6.ip().is_unspecified() {
            return super::bind_plain(addr);
        }
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh socket nobody else owns; the UdpSocket
        // closes it, also on the error paths below.
        let socket = unsafe { <std::net::UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        if !setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0) {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut name: libc::sockaddr_storage = unsafe { zeroed() };
        let len = write_sockaddr(&addr, &mut name);
        // SAFETY: `name` holds a sockaddr_in6 of `len` bytes.
        let r = unsafe {
            libc::bind(
                fd,
                (&name as *const libc::sockaddr_storage).cast::<libc::sockaddr>(),
                len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }

    /// Enlarge the socket buffers, switch on GRO and find out whether GSO
    /// works. Failures only lose the optimisation.
    pub(super) fn configure(s: &std::net::UdpSocket) -> Caps {
        let fd = s.as_raw_fd();
        enlarge_buffers(s);
        let gro = setsockopt_int(fd, libc::SOL_UDP, UDP_GRO, 1);
        // Probe GSO on a throw-away socket: setting UDP_SEGMENT on ours
        // would make it the default for every send.
        let gso = std::net::UdpSocket::bind(match s.local_addr() {
            Ok(SocketAddr::V6(_)) => "[::1]:0",
            _ => "127.0.0.1:0",
        })
        .is_ok_and(|probe| {
            setsockopt_int(
                probe.as_raw_fd(),
                libc::SOL_UDP,
                UDP_SEGMENT,
                MAX_DATAGRAM as libc::c_int,
            )
        });
        Caps { gso, gro }
    }

    /// Datagrams from `tx.sent` that go out as one message: a run with the
    /// same destination and size (the last may be shorter), back to back
    /// in the buffer, when GSO is on.
    pub(super) fn gso_run(tx: &TxBatch) -> usize {
        let Some(first) = tx.items.get(tx.sent) else {
            return 0;
        };
        if !tx.gso || tx.singles > 0 {
            return 1;
        }
        let mut n = 1;
        let mut bytes = first.len;
        for q in tx.items.iter().skip(tx.sent + 1) {
            if n >= MAX_SEGMENTS
                || q.dest != first.dest
                || q.len > first.len
                || q.offset != first.offset + bytes
                || bytes + q.len > MAX_GSO_BYTES
            {
                break;
            }
            n += 1;
            bytes += q.len;
            if q.len < first.len {
                break;
            }
        }
        n
    }

    pub(super) const EIO: i32 = libc::EIO;

    /// EIO: the route's device cannot segment; EINVAL: a size the kernel
    /// does not accept for GSO (or a destination it refuses anyway).
    pub(super) fn is_gso_refusal(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL))
    }

    fn write_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is large and aligned enough for
                // any sockaddr type.
                let sin = unsafe {
                    &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above.
                let sin6 = unsafe {
                    &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                sin6.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    fn read_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match libc::c_int::from(s.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in (family AF_INET).
                let sin =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6).
                let sin6 =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Block until `s` has room to send or `timeout` passes (the send
    /// thread, after a full socket buffer).
    pub(super) fn wait_writable(s: &impl AsRawFd, timeout: std::time::Duration) {
        let mut p = libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut p, 1, ms) };
    }

    /// One sendmmsg of the queued datagrams from `tx.sent`. Returns how
    /// many datagrams (not messages) the kernel took.
    pub(super) fn send(s: &impl AsRawFd, tx: &mut TxBatch) -> io::Result<usize> {
        // SAFETY (all zeroed): plain C structs for which all-zero is valid.
        let mut msgs: [libc::mmsghdr; TX_BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; TX_BATCH] = unsafe { zeroed() };
        let mut names: [libc::sockaddr_storage; TX_BATCH] = unsafe { zeroed() };
        let mut cmsgs = [[0u64; CMSG_SPACE / 8]; TX_BATCH];
        let mut segs = [0usize; TX_BATCH];
        let saved = (tx.sent, tx.singles);
        let mut m = 0;
        while tx.sent < tx.items.len() && m < TX_BATCH {
            let n = gso_run(tx);
            let first = tx.items[tx.sent];
            let last = tx.items[tx.sent + n - 1];
            let bytes = last.offset + last.len - first.offset;
            iovs[m] = libc::iovec {
                iov_base: tx.buf[first.offset..].as_mut_ptr().cast(),
                iov_len: bytes,
            };
            let hdr = &mut msgs[m].msg_hdr;
            hdr.msg_namelen = write_sockaddr(&first.dest, &mut names[m]);
            hdr.msg_name = (&mut names[m] as *mut libc::sockaddr_storage).cast();
            hdr.msg_iov = &mut iovs[m];
            hdr.msg_iovlen = 1;
            if n > 1 {
                let space = cmsgs[m].as_mut_ptr();
                hdr.msg_control = space.cast();
                // SAFETY: CMSG_SPACE(sizeof(u16)) <= CMSG_SPACE bytes, the
                // buffer is 8-byte aligned; CMSG_FIRSTHDR points into it.
                unsafe {
                    hdr.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
                    let c = libc::CMSG_FIRSTHDR(hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), first.len as u16);
                }
            }
            segs[m] = n;
            tx.advance(n);
            m += 1;
        }
        (tx.sent, tx.singles) = saved;
        // SAFETY: `msgs[..m]` point at live buffers above and in `tx.buf`.
        let r = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), m as libc::c_uint, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        tx.stats.send_messages += r as u64;
        Ok(segs[..(r as usize).min(m)].iter().sum())
    }

    /// One recvmmsg into `rx`; `rx.meta` describes what arrived. Returns
    /// the messages the kernel returned.
    pub(super) fn recv(s: &impl AsRawFd, rx: &mut RxBatch) -> io::Result<usize> {
        rx.meta.clear();
        // SAFETY (all zeroed): plain C structs for which all-zero is valid.
        let mut msgs: [libc::mmsghdr; RX_SLOTS] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; RX_SLOTS] = unsafe { zeroed() };
        let mut names: [libc::sockaddr_storage; RX_SLOTS] = unsafe { zeroed() };
        let mut cmsgs = [[0u64; CMSG_SPACE / 8]; RX_SLOTS];
        let slots = rx.slots.min(RX_SLOTS).min(rx.buf.len() / rx.slot);
        for (i, chunk) in rx.buf.chunks_mut(rx.slot).take(slots).enumerate() {
            iovs[i] = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: chunk.len(),
            };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut iovs[i];
            hdr.msg_iovlen = 1;
            if rx.gro {
                hdr.msg_control = cmsgs[i].as_mut_ptr().cast();
                hdr.msg_controllen = CMSG_SPACE as _;
            }
        }
        // SAFETY: `msgs[..slots]` point at live buffers.
        let r = unsafe {
            libc::recvmmsg(
                s.as_raw_fd(),
                msgs.as_mut_ptr(),
                slots as libc::c_uint,
                0,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = (r as usize).min(slots);
        for i in 0..got {
            let m = &msgs[i];
            let len = m.msg_len as usize;
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                // Larger than any RTMFP packet: garbage.
                continue;
            }
            let Some(from) = read_sockaddr(&names[i]) else {
                continue;
            };
            let mut seg = 0;
            if rx.gro {
                // SAFETY: the kernel filled msg_control with
                // msg_controllen bytes of cmsgs; the CMSG macros stay
                // inside it.
                unsafe {
                    let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                    while !c.is_null() {
                        if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                            seg = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>())
                                as usize;
                        }
                        c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
                    }
                }
            }
            rx.meta.push((i, len, from, seg));
        }
        Ok(got)
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! Portable fallback: one datagram per system call.

    use std::io;

    use super::{Caps, RxBatch, TxBatch, MAX_DATAGRAM};

    pub(super) const GRO_SLOTS: usize = 1;
    pub(super) const GRO_SLOT: usize = MAX_DATAGRAM;
    pub(super) const RX_SLOTS: usize = 1;

    pub(super) fn enlarge_buffers(_s: &std::net::UdpSocket) {}

    /// The OS default for the IPv6 wildcard (dual-stack on most systems).
    pub(super) fn bind(addr: std::net::SocketAddr) -> io::Result<std::net::UdpSocket> {
        super::bind_plain(addr)
    }

    pub(super) fn configure(_s: &std::net::UdpSocket) -> Caps {
        Caps {
            gso: false,
            gro: false,
        }
    }

    pub(super) fn gso_run(tx: &TxBatch) -> usize {
        usize::from(tx.sent < tx.items.len())
    }

    pub(super) const EIO: i32 = 5;

    pub(super) fn is_gso_refusal(_e: &io::Error) -> bool {
        false
    }

    pub(super) fn send(s: &tokio::net::UdpSocket, tx: &mut TxBatch) -> io::Result<usize> {
        let Some(q) = tx.items.get(tx.sent) else {
            return Ok(0);
        };
        s.try_send_to(&tx.buf[q.offset..q.offset + q.len], q.dest)?;
        tx.stats.send_messages += 1;
        Ok(1)
    }

    pub(super) fn recv(s: &tokio::net::UdpSocket, rx: &mut RxBatch) -> io::Result<usize> {
        rx.meta.clear();
        let (n, from) = s.try_recv_from(&mut rx.buf[..rx.slot])?;
        rx.meta.push((0, n, from, 0));
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::crypto::{Identity, NetworkName, NetworkSecret};
    use crate::endpoint::Target;
    use crate::flow::{FlowEvent, Reliability};
    use crate::punch::ProbePlan;

    fn cfg(seed: u8) -> EndpointConfig {
        let name = NetworkName::new("drv").unwrap();
        EndpointConfig::new(
            Identity::from_secret_key_bytes([seed; 32], &name),
            name,
            NetworkSecret::from_bytes([5; 32]),
        )
    }

    #[cfg(target_os = "linux")]
    fn batch(items: &[(usize, SocketAddr)], gso: bool) -> TxBatch {
        let mut tx = TxBatch::new(vec![0u8; TX_BATCH * MAX_DATAGRAM], gso, false);
        for &(len, dest) in items {
            tx.items.push(Queued {
                offset: tx.used,
                len,
                dest,
            });
            tx.used += len;
        }
        tx
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn gso_runs_group_same_destination_and_size() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut tx = batch(
            &[
                (1400, a),
                (1400, a),
                (1400, a),
                (900, a), // shorter: ends the run
                (1400, a),
                (1400, b), // other destination
                (100, b),  // shorter: the run's last segment
                (200, b),
            ],
            true,
        );
        let mut runs = Vec::new();
        while !tx.is_drained() {
            let n = sys::gso_run(&tx);
            runs.push(n);
            tx.sent += n;
        }
        assert_eq!(runs, [4, 1, 2, 1]);
        // Datagrams marked for single sending (after a refused GSO
        // message) go one by one, then grouping resumes.
        let mut tx = batch(&[(1400, a); 5], true);
        tx.singles = 2;
        let mut runs = Vec::new();
        while !tx.is_drained() {
            let n = sys::gso_run(&tx);
            runs.push(n);
            tx.advance(n);
        }
        assert_eq!(runs, [1, 1, 3]);
        // Without GSO every datagram is its own message.
        let tx = batch(&[(1400, a), (1400, a)], false);
        assert_eq!(sys::gso_run(&tx), 1);
        // The run stops at the segment and byte limits.
        let many: Vec<(usize, SocketAddr)> = (0..TX_BATCH).map(|_| (1000, a)).collect();
        let tx = batch(&many, true);
        let n = sys::gso_run(&tx);
        assert!(n * 1000 <= 65_000 && n <= 64, "run {n}");
        assert_eq!(n, 64);
        let big: Vec<(usize, SocketAddr)> = (0..TX_BATCH).map(|_| (1467, a)).collect();
        assert_eq!(sys::gso_run(&batch(&big, true)), 44);
        // Relayed datagrams sit where they were received: a gap in the
        // buffer (another GRO message's slot, a datagram not forwarded)
        // ends the run.
        let mut tx = batch(&[(1400, a); 4], true);
        tx.items[2].offset += 100;
        tx.items[3].offset += 100;
        assert_eq!(sys::gso_run(&tx), 2);
    }

    /// A refused destination inside a GSO run costs only its own
    /// datagrams (counted), keeps GSO on, and does not hold up the rest.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn refused_destination_is_counted_and_gso_stays_on() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_nonblocking(true).unwrap();
        let good = peer.local_addr().unwrap();
        // Port 0 is refused with EINVAL, like a GSO size the kernel rejects.
        let bad: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut tx = batch(&[(100, bad), (100, bad), (100, bad), (50, good)], true);
        let mut errors = 0;
        socket.writable().await.unwrap();
        assert!(send_queued(&socket, &mut tx, &mut errors));
        assert_eq!(errors, 3);
        assert!(tx.gso, "GSO wrongly blamed for a bad address");
        assert!(tx.items.is_empty(), "batch not reset");
        let mut buf = [0u8; 200];
        let mut got = None;
        for _ in 0..100 {
            if let Ok((n, _)) = peer.recv_from(&mut buf) {
                got = Some(n);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(got, Some(50));
    }

    /// A burst far larger than one batch, over real UDP on loopback: every
    /// message arrives intact and in order (exercises sendmmsg/GSO
    /// batches, partial batches, recvmmsg/GRO splitting).
    #[tokio::test]
    async fn bulk_transfer_over_loopback_arrives_complete_and_in_order() {
        bulk_transfer(false).await;
    }

    /// The same with both ends sending from a send thread: nothing lost,
    /// nothing reordered, the counters still add up.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn bulk_transfer_through_send_threads_arrives_complete_and_in_order() {
        bulk_transfer(true).await;
    }

    async fn bulk_transfer(send_threads: bool) {
        let mut a = Driver::bind("127.0.0.1:0".parse().unwrap(), cfg(11))
            .await
            .unwrap();
        let mut b = Driver::bind("127.0.0.1:0".parse().unwrap(), cfg(12))
            .await
            .unwrap();
        if send_threads {
            a.spawn_send_thread().unwrap();
            b.spawn_send_thread().unwrap();
            assert!(a.has_send_thread() && b.has_send_thread());
        }
        let baddr = b.local_addr().unwrap();
        let sa = a
            .endpoint()
            .connect(Instant::now(), Target::Any, &[baddr])
            .unwrap();
        a.flush();
        const COUNT: u32 = 3000;
        let run = async {
            let mut flow = None;
            let mut next_to_send = 0u32;
            let mut received = 0u32;
            while received < COUNT {
                if let Some(f) = flow {
                    while next_to_send < COUNT {
                        let mut msg = vec![(next_to_send % 251) as u8; 1000];
                        msg[..4].copy_from_slice(&next_to_send.to_be_bytes());
                        let r =
                            a.endpoint()
                                .send(Instant::now(), sa, f, &msg, Reliability::Reliable);
                        if r.is_err() {
                            break;
                        }
                        next_to_send += 1;
                    }
                    a.flush();
                }
                tokio::select! {
                    ev = a.next_event() => {
                        if let Event::SessionOpened { session, .. } = ev {
                            assert_eq!(session, sa);
                            flow = Some(a.endpoint().open_flow(sa, b"bulk", None).unwrap());
                        }
                    }
                    ev = b.next_event() => {
                        if let Event::Flow { event: FlowEvent::Message { data, .. }, .. } = ev {
                            let n = u32::from_be_bytes(data[..4].try_into().unwrap());
                            assert_eq!(n, received, "out of order");
                            assert_eq!(data.len(), 1000);
                            assert!(data[4..].iter().all(|&x| x == (n % 251) as u8));
                            received += 1;
                        }
                    }
                    // Refill the send queue as acknowledgements free it.
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
            }
            received
        };
        let got = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("timed out");
        assert_eq!(got, COUNT);
        assert_eq!(a.send_errors(), 0);
        assert_eq!(b.send_errors(), 0);
        // The counters add up: every message one datagram or more, every
        // call one message or more, and all of A's data went out.
        let (sa, sb) = (a.io_stats(), b.io_stats());
        assert!(sa.datagrams_sent >= u64::from(COUNT), "{sa:?}");
        assert!(sb.datagrams_received >= u64::from(COUNT), "{sb:?}");
        for s in [sa, sb] {
            assert!(s.send_calls <= s.send_messages && s.send_messages <= s.datagrams_sent);
            assert!(s.recv_calls <= s.recv_messages && s.recv_messages <= s.datagrams_received);
            assert!(s.wakeups > 0, "{s:?}");
        }
    }

    #[test]
    fn mapped_sources_become_ipv4_and_ipv4_destinations_map_for_ipv6_sockets() {
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            canonical(sa("[::ffff:198.51.100.10]:39831")),
            sa("198.51.100.10:39831")
        );
        for plain in ["198.51.100.10:39831", "[2001:db8::7]:4910", "[::1]:1"] {
            assert_eq!(canonical(sa(plain)), sa(plain));
        }
        // IPv4-compatible (deprecated, ::a.b.c.d) is IPv6, not mapped.
        assert_eq!(canonical(sa("[::c633:640a]:1")), sa("[::c633:640a]:1"));
        assert_eq!(
            for_socket(sa("198.51.100.10:4910"), true),
            sa("[::ffff:198.51.100.10]:4910")
        );
        assert_eq!(
            for_socket(sa("198.51.100.10:4910"), false),
            sa("198.51.100.10:4910")
        );
        assert_eq!(
            for_socket(sa("[2001:db8::7]:4910"), true),
            sa("[2001:db8::7]:4910")
        );
        for a in ["198.51.100.10:4910", "[2001:db8::7]:4910"] {
            assert_eq!(canonical(for_socket(sa(a), true)), sa(a));
        }
    }

    /// An introducer on the IPv6 wildcard serves IPv4 and IPv6 members
    /// through one socket, and above the driver an IPv4 member has its
    /// plain IPv4 address: the session's path, the STUN answer
    /// (XOR-MAPPED-ADDRESS of the IPv4 family) and what the endpoint would
    /// hand out are never IPv4-mapped.
    #[tokio::test]
    async fn a_dual_stack_socket_shows_ipv4_peers_as_plain_ipv4() {
        let mut server_cfg = cfg(31);
        server_cfg.stun_responder = true;
        let any6: SocketAddr = "[::]:0".parse().unwrap();
        let mut s = Driver::bind(any6, server_cfg).await.unwrap();
        let port = s.local_addr().unwrap().port();
        assert!(s.local_addr().unwrap().is_ipv6());
        let mut c4 = Driver::bind("127.0.0.1:0".parse().unwrap(), cfg(32))
            .await
            .unwrap();
        let c4addr = c4.local_addr().unwrap();
        let mut c6 = Driver::bind("[::1]:0".parse().unwrap(), cfg(33))
            .await
            .unwrap();
        let c6addr = c6.local_addr().unwrap();
        let s4: SocketAddr = ([127, 0, 0, 1], port).into();
        let s6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
        let now = Instant::now();
        let stun = c4.endpoint().stun_query(now, s4).unwrap();
        c4.endpoint().connect(now, Target::Any, &[s4]).unwrap();
        c6.endpoint().connect(now, Target::Any, &[s6]).unwrap();
        c4.flush();
        c6.flush();
        let run = async {
            let (mut mapped, mut seen) = (None, Vec::new());
            while mapped.is_none() || seen.len() < 2 {
                tokio::select! {
                    ev = s.next_event() => {
                        if let Event::SessionOpened { path, .. } = ev {
                            seen.push(path.direct().expect("direct"));
                        }
                    }
                    ev = c4.next_event() => {
                        if let Event::StunResult { tx, mapped: m, .. } = ev {
                            assert_eq!(tx, stun);
                            mapped = Some(m);
                        }
                    }
                    _ = c6.next_event() => {}
                }
            }
            (mapped, seen)
        };
        let (mapped, mut seen) = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("timed out");
        assert_eq!(mapped, Some(c4addr));
        seen.sort();
        assert_eq!(seen, vec![c4addr, c6addr]);
        assert_eq!(s.send_errors(), 0);
    }

    /// An endpoint with extra sockets (what the node core does for
    /// birthday punching, without its policy).
    struct Punching {
        ep: Endpoint,
        x: crate::extra_sockets::ExtraSockets,
    }

    impl DatagramMachine for Punching {
        fn handle_datagram(
            &mut self,
            now: Instant,
            socket: SocketId,
            from: SocketAddr,
            data: &mut [u8],
        ) {
            self.x.received(now, socket, from);
            self.ep.handle_datagram(now, from, data);
        }
        fn poll_transmit(
            &mut self,
            now: Instant,
            buf: &mut [u8],
        ) -> Option<crate::machine::Outgoing> {
            self.x.poll_transmit(&mut self.ep, now, buf)
        }
        fn poll_socket_action(&mut self) -> Option<SocketAction> {
            self.x.poll_action()
        }
        fn poll_timeout(&mut self) -> Option<Instant> {
            [self.ep.poll_timeout(), self.x.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.ep.handle_timeout(now);
            self.x.handle_timeout(now);
        }
    }

    async fn punching(seed: u8) -> Driver<Punching> {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Driver::bind_with(lo, |_| {
            Ok(Punching {
                ep: Endpoint::new(Instant::now(), cfg(seed), Rng::from_seed([seed; 32])),
                x: Default::default(),
            })
        })
        .await
        .unwrap()
    }

    async fn next_event(d: &mut Driver<Punching>) -> Event {
        loop {
            if let Some(ev) = d.machine().ep.poll_event() {
                return ev;
            }
            d.wait().await;
        }
    }

    /// Extra sockets on loopback (no NAT, so what is checked is the
    /// driver's part and the socket table's pinning): the "symmetric" side
    /// opens extra sockets and sends its IHello from each towards the
    /// peer; the peer's RHellos come back to those sockets, the first pins
    /// the path, and the whole handshake and a message then run through
    /// that extra socket (the peer sees the session at the extra socket's
    /// port, not the main one). The "cone" side sprays its IHello at a
    /// list of ports of which one is the peer's: the session opens through
    /// the spray.
    #[tokio::test]
    async fn extra_sockets_pin_the_path_and_spray_reaches_the_peer() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut s = punching(21).await;
        let mut c = Driver::bind(lo, cfg(22)).await.unwrap();
        let caddr = c.local_addr().unwrap();
        let saddr = s.local_addr().unwrap();
        // A candidate nobody answers: the IHello only reaches c through
        // the punch.
        let hole = std::net::UdpSocket::bind(lo).unwrap();
        let nowhere = hole.local_addr().unwrap();
        let cnode = c.endpoint().node_id();
        let sid = s
            .machine()
            .ep
            .connect(Instant::now(), Target::Node(cnode), &[nowhere])
            .unwrap();
        s.flush();
        let hello = s.machine().ep.ihello_datagram(sid).expect("IHELLO_SENT");
        let now = Instant::now();
        let n = s
            .machine()
            .x
            .open(now, caddr, &hello, 8, Duration::from_secs(10));
        assert_eq!(n, 8);
        s.flush();
        assert_eq!(s.extra_sockets(), 8);
        let run = async {
            let mut flow = None;
            let mut c_remote = None;
            loop {
                tokio::select! {
                    ev = next_event(&mut s) => {
                        if let Event::SessionOpened { session, path: remote, .. } = ev {
                            assert_eq!(session, sid);
                            assert_eq!(remote, caddr);
                            let ep = &mut s.machine().ep;
                            let f = ep.open_flow(sid, b"punch", None).unwrap();
                            ep.send(Instant::now(), sid, f, b"through the punched path", Reliability::Reliable).unwrap();
                            s.flush();
                            flow = Some(f);
                        }
                    }
                    ev = c.next_event() => match ev {
                        Event::SessionOpened { path: remote, .. } => c_remote = Some(remote),
                        Event::Flow { event: FlowEvent::Message { data, .. }, .. } => {
                            assert_eq!(data, b"through the punched path");
                            return (flow, c_remote);
                        }
                        _ => {}
                    },
                }
            }
        };
        let (flow, c_remote) = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("timed out");
        assert!(flow.is_some());
        let c_remote = c_remote.expect("c saw the session open");
        assert_ne!(c_remote, saddr, "the session must run on an extra socket");
        assert_eq!(
            s.machine_ref().x.pinned_paths().collect::<Vec<_>>(),
            vec![caddr]
        );
        assert!(s.machine_ref().x.received_count() > 0);
        // Unpinned sockets go when punching stops; the pinned one stays.
        s.machine().x.stop(caddr.ip());
        s.flush();
        assert_eq!(s.extra_sockets(), 1);

        // The spray: a third endpoint sprays its IHello at three ports, the
        // last of them c's.
        let mut k = punching(23).await;
        let hole2 = std::net::UdpSocket::bind(lo).unwrap();
        let ksid = k
            .machine()
            .ep
            .connect(
                Instant::now(),
                Target::Node(cnode),
                &[hole2.local_addr().unwrap()],
            )
            .unwrap();
        k.flush();
        let hello = k.machine().ep.ihello_datagram(ksid).unwrap();
        let ports = [
            nowhere.port(),
            hole2.local_addr().unwrap().port(),
            caddr.port(),
        ];
        k.machine().x.spray(
            ProbePlan::from_ports(Instant::now(), lo.ip(), &ports, 100),
            &hello,
        );
        assert_eq!(k.machine_ref().x.sprays(), 1);
        let run = async {
            loop {
                tokio::select! {
                    ev = next_event(&mut k) => {
                        if let Event::SessionOpened { session, path: remote, .. } = ev {
                            assert_eq!(session, ksid);
                            return remote;
                        }
                    }
                    _ = c.next_event() => {}
                }
            }
        };
        let remote = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("spray did not open the session");
        assert_eq!(remote, caddr);
        assert_eq!(k.machine_ref().x.sprays(), 0, "a finished spray is dropped");
        // Not an open session: no IHello to hand out.
        assert!(k.machine().ep.ihello_datagram(ksid).is_none());
    }
}
