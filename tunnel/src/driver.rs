//! The thin tokio driver: owns the UDP socket and the timer, feeds the
//! sans-IO [`Endpoint`] and sends what it produces. No protocol logic lives
//! here.
//!
//! Use: issue commands on [`Driver::endpoint`] (connect, open_flow, send,
//! close), then call [`Driver::flush`]; await [`Driver::next_event`] for
//! sessions opening and closing and messages arriving. `next_event` is
//! cancel-safe, so it can sit in a `tokio::select!` next to a TAP read.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;

use crate::endpoint::{Endpoint, EndpointConfig, Event, Transmit};
use crate::Rng;

/// Largest datagram we read; RTMFP packets never exceed the path MTU.
const RECV_BUF: usize = 2048;
/// Datagrams handled per wake-up before events are looked at again.
const RECV_BATCH: usize = 64;

/// A UDP socket driving one [`Endpoint`].
pub struct Driver {
    ep: Endpoint,
    socket: UdpSocket,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// A datagram that met a full socket buffer; sent before anything new.
    pending: Option<Transmit>,
    pending_buf: Vec<u8>,
    send_errors: u64,
}

/// A fresh seed from the OS for the endpoint's random source.
pub fn os_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(seed)
}

impl Driver {
    /// Bind `addr` and start an endpoint on it.
    pub async fn bind(addr: SocketAddr, cfg: EndpointConfig) -> io::Result<Driver> {
        let socket = UdpSocket::bind(addr).await?;
        let ep = Endpoint::new(Instant::now(), cfg, Rng::from_seed(os_seed()?));
        Ok(Driver {
            ep,
            socket,
            rx: vec![0u8; RECV_BUF],
            tx: vec![0u8; RECV_BUF],
            pending: None,
            pending_buf: vec![0u8; RECV_BUF],
            send_errors: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The sans-IO endpoint, for commands and status. Call [`Driver::flush`]
    /// after commands.
    pub fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    pub fn endpoint_ref(&self) -> &Endpoint {
        &self.ep
    }

    /// Datagrams the OS refused (other than a full buffer).
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// Send everything the endpoint has to send now, without waiting. A
    /// datagram that meets a full socket buffer is kept and sent by the
    /// next [`Driver::next_event`].
    pub fn flush(&mut self) {
        let now = Instant::now();
        if !self.try_send_pending() {
            return;
        }
        while let Some(t) = self.ep.poll_transmit(now, &mut self.tx) {
            match self.socket.try_send_to(&self.tx[..t.size], t.destination) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pending_buf[..t.size].copy_from_slice(&self.tx[..t.size]);
                    self.pending = Some(t);
                    return;
                }
                Err(e) => {
                    // Unreachable destinations and the like: the protocol
                    // treats it as loss.
                    self.send_errors += 1;
                    tracing::debug!(dest = %t.destination, error = %e, "send failed");
                }
            }
        }
    }

    fn try_send_pending(&mut self) -> bool {
        let Some(t) = self.pending else { return true };
        match self
            .socket
            .try_send_to(&self.pending_buf[..t.size], t.destination)
        {
            Ok(_) => {
                self.pending = None;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(_) => {
                self.send_errors += 1;
                self.pending = None;
                true
            }
        }
    }

    /// Run the socket and timers until the endpoint has an event.
    /// Cancel-safe: no input is lost if the future is dropped.
    pub async fn next_event(&mut self) -> Event {
        loop {
            if let Some(ev) = self.ep.poll_event() {
                return ev;
            }
            self.flush();
            if let Some(ev) = self.ep.poll_event() {
                return ev;
            }
            let deadline = self.ep.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            let writable = async {
                if self.pending.is_some() {
                    let _ = self.socket.writable().await;
                } else {
                    std::future::pending::<()>().await
                }
            };
            tokio::select! {
                r = self.socket.recv_from(&mut self.rx) => {
                    let now = Instant::now();
                    match r {
                        Ok((n, from)) => self.ep.handle_datagram(now, from, &mut self.rx[..n]),
                        Err(e) => tracing::debug!(error = %e, "recv failed"),
                    }
                    // Drain what else is queued before looking at events.
                    for _ in 1..RECV_BATCH {
                        match self.socket.try_recv_from(&mut self.rx) {
                            Ok((n, from)) => self.ep.handle_datagram(now, from, &mut self.rx[..n]),
                            Err(_) => break,
                        }
                    }
                }
                _ = sleep => {
                    self.ep.handle_timeout(Instant::now());
                }
                _ = writable => {}
            }
        }
    }
}
