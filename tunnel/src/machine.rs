//! The contract between a sans-IO state machine that speaks UDP and the
//! thing that moves its datagrams: the tokio [`crate::driver::Driver`] in
//! production, a simulated network in tests.
//!
//! [`crate::endpoint::Endpoint`] implements it, and so does the node core
//! (crate `ringlan-node`), which owns an endpoint and adds the overlay and
//! the node's policy on top. The call order is the house rule (quinn-proto,
//! str0m): after every input (`handle_datagram`, `handle_timeout`) drain
//! `poll_transmit` until it returns `None`, then ask `poll_timeout` for the
//! next deadline. `now` is always the first argument; nothing here reads a
//! clock.

use std::net::SocketAddr;
use std::time::Instant;

use crate::endpoint::Transmit;

/// A sans-IO UDP state machine.
pub trait DatagramMachine {
    /// A datagram arrived from `from`. `data` may be decrypted in place.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]);
    /// Write the next datagram to send into `buf` (at least 2048 bytes).
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit>;
    /// The earliest time `handle_timeout` must be called.
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// Time passed: run due timers.
    fn handle_timeout(&mut self, now: Instant);
}

impl DatagramMachine for crate::endpoint::Endpoint {
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &mut [u8]) {
        crate::endpoint::Endpoint::handle_datagram(self, now, from, data)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        crate::endpoint::Endpoint::poll_transmit(self, now, buf)
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        crate::endpoint::Endpoint::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        crate::endpoint::Endpoint::handle_timeout(self, now)
    }
}
