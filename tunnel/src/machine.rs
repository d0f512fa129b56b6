//! The contract between a sans-IO state machine that speaks UDP and the
//! thing that moves its datagrams: the tokio [`crate::driver::Driver`] in
//! production, a simulated network in tests.
//!
//! [`crate::endpoint::Endpoint`] implements it (on the main socket only),
//! and so does the node core (crate `ringlan-node`), which owns an endpoint
//! and adds the overlay, NAT traversal and the node's policy on top. The
//! node core may ask its driver for extra sockets (birthday punching); the
//! driver then tells on which socket each datagram arrived, and the machine
//! tells on which socket each datagram leaves.
//!
//! The call order is the house rule (quinn-proto, str0m): after every input
//! (`handle_datagram`, `handle_timeout`) drain `poll_transmit` until it
//! returns `None`, then ask `poll_timeout` for the next deadline. `now` is
//! always the first argument; nothing here reads a clock.

use std::net::SocketAddr;
use std::time::Instant;

/// A socket of the machine. [`SocketId::MAIN`] is the UDP socket bound to
/// the configured listen address; others are extra UDP sockets the machine
/// asked its driver to open, or TCP streams carrying framed datagrams
/// (ids from [`SocketId::FIRST_STREAM`] on, docs/tcp.md): those the machine
/// asked its driver to connect ([`SocketAction::Connect`]) and those the
/// driver accepted on its TCP listener (the driver picks their ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u32);

impl SocketId {
    /// The listening socket.
    pub const MAIN: SocketId = SocketId(0);
    /// The first id of a TCP stream; UDP sockets are numbered below it.
    pub const FIRST_STREAM: SocketId = SocketId(1 << 31);
    /// The first id the driver gives a stream it accepted; below it (and
    /// from [`SocketId::FIRST_STREAM`]) the machine's own connections.
    pub const FIRST_ACCEPTED: SocketId = SocketId(3 << 30);

    /// A TCP stream (connected or accepted), not a UDP socket.
    pub fn is_stream(self) -> bool {
        self >= SocketId::FIRST_STREAM
    }
}

/// A datagram the machine wrote into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// The socket to send it from.
    pub socket: SocketId,
    pub destination: SocketAddr,
    /// Its length at the start of the buffer.
    pub size: usize,
}

/// A socket the machine wants opened or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketAction {
    /// Bind a new ephemeral UDP socket on the main socket's address (same
    /// family, port 0) and know it as `id` from now on. Datagrams arriving
    /// on it are input with this id.
    Open { id: SocketId },
    /// Bind a UDP socket on the main socket's address with the fixed port
    /// `port` (an introducer's alternate STUN port) and know it as `id`.
    /// A bind that fails (the port is taken) is logged; nothing arrives
    /// on `id` then.
    Listen { id: SocketId, port: u16 },
    /// Close the socket `id` (a UDP socket or a stream); the machine sends
    /// nothing more from it.
    Close { id: SocketId },
    /// Connect a TCP stream to `to` and know it as `id` (at or above
    /// [`SocketId::FIRST_STREAM`], below [`SocketId::FIRST_ACCEPTED`]).
    /// Datagrams the machine sends on it are framed on the stream
    /// (`tunnel/src/stream.rs`); datagrams read from it are input with
    /// this id and `from` = `to`. A failed or closed connection is
    /// reported by [`DatagramMachine::handle_socket_closed`].
    Connect {
        id: SocketId,
        to: std::net::SocketAddr,
    },
}

/// A sans-IO UDP state machine.
pub trait DatagramMachine {
    /// The next socket to open or close. The caller drains these before
    /// each round of [`DatagramMachine::poll_transmit`], so a datagram
    /// never names a socket that was not opened.
    fn poll_socket_action(&mut self) -> Option<SocketAction> {
        None
    }
    /// The stream `socket` closed (connection refused or lost, idle, a
    /// framing error, or the peer closed it): nothing more arrives on it
    /// and datagrams sent on it are dropped.
    fn handle_socket_closed(&mut self, _now: Instant, _socket: SocketId) {}
    /// A datagram arrived on `socket` from `from`. `data` may be decrypted
    /// in place.
    fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        data: &mut [u8],
    );
    /// [`DatagramMachine::handle_datagram`] for a driver that can send a
    /// datagram straight from its receive buffer. When the machine
    /// forwards the datagram (a relay: route datagrams are rewritten in
    /// place, same length, `docs/relay.md`), it returns where to, with
    /// `size` = `data.len()`, and the caller sends `data` as it is then,
    /// before reusing the buffer: no copy, no queue. The default handles
    /// the datagram as `handle_datagram` does (forwarded datagrams then
    /// come out of `poll_transmit`, copied), which is what simulators use.
    fn handle_datagram_in_place(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        data: &mut [u8],
    ) -> Option<Outgoing> {
        self.handle_datagram(now, socket, from, data);
        None
    }

    /// A batch of datagrams read together is about to be handed in
    /// (`open` = true) or has been (`false`; the caller then drains
    /// `poll_transmit`). While a batch is open the machine may hold
    /// obligatory acknowledgements for a few packets
    /// ([`crate::flow::FlowSet::wants_control`]). Drivers that hand in one
    /// datagram at a time never call it.
    fn set_receive_batch(&mut self, _open: bool) {}

    /// Leave the encryption of ordinary session datagrams to the caller
    /// (`Endpoint::set_defer_sealing`): only for a driver that takes
    /// [`DatagramMachine::take_pending_seal`] after every datagram and
    /// runs [`crate::DeferredSeal::finish`] on it before sending. Machines
    /// that cannot defer ignore it.
    fn set_defer_sealing(&mut self, _on: bool) {}

    /// What the datagram just returned by `poll_transmit` still needs
    /// before it may be sent; `None`: it is ready.
    fn take_pending_seal(&mut self) -> Option<crate::DeferredSeal> {
        None
    }

    /// Write the next datagram to send into `buf` (at least 2048 bytes).
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Outgoing>;
    /// The earliest time `handle_timeout` must be called.
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// Time passed: run due timers.
    fn handle_timeout(&mut self, now: Instant);
}

/// The bare endpoint lives on the main socket: datagrams from any socket
/// are its input, and everything it sends leaves from the main socket.
impl DatagramMachine for crate::endpoint::Endpoint {
    fn handle_datagram(
        &mut self,
        now: Instant,
        _socket: SocketId,
        from: SocketAddr,
        data: &mut [u8],
    ) {
        crate::endpoint::Endpoint::handle_datagram(self, now, from, data)
    }

    fn handle_datagram_in_place(
        &mut self,
        now: Instant,
        _socket: SocketId,
        from: SocketAddr,
        data: &mut [u8],
    ) -> Option<Outgoing> {
        let t = crate::endpoint::Endpoint::handle_datagram_in_place(self, now, from, data)?;
        Some(Outgoing {
            socket: SocketId::MAIN,
            destination: t.destination,
            size: t.size,
        })
    }
    fn set_receive_batch(&mut self, open: bool) {
        crate::endpoint::Endpoint::set_receive_batch(self, open)
    }
    fn set_defer_sealing(&mut self, on: bool) {
        crate::endpoint::Endpoint::set_defer_sealing(self, on)
    }
    fn take_pending_seal(&mut self) -> Option<crate::DeferredSeal> {
        crate::endpoint::Endpoint::take_pending_seal(self)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Outgoing> {
        let t = crate::endpoint::Endpoint::poll_transmit(self, now, buf)?;
        Some(Outgoing {
            socket: SocketId::MAIN,
            destination: t.destination,
            size: t.size,
        })
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        crate::endpoint::Endpoint::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        crate::endpoint::Endpoint::handle_timeout(self, now)
    }
}
