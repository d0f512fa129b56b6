//! Extra UDP sockets for birthday punching, sans-IO ([`crate::punch`],
//! docs/nat.md): the mechanism, not the policy (the node core decides
//! when to punch and whom).
//!
//! [`ExtraSockets`] asks its driver for extra sockets
//! ([`SocketAction`]), sends the punch payload from each, and once a
//! datagram arrives on one from the address it punched towards, *pins*
//! that address to it: from then on every datagram the endpoint sends
//! there leaves through that socket (a per-destination socket override;
//! the endpoint stays address-based and knows no sockets). Extra sockets
//! close after their lifetime, or, once pinned, after [`PINNED_IDLE`]
//! without traffic. Sprays go out from the main socket at the plan's
//! pace, at most [`SPRAY_BURST`] per timeout.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::machine::{Outgoing, SocketAction, SocketId};
use crate::punch::ProbePlan;

/// Most extra sockets open at once.
pub const MAX_PUNCH_SOCKETS: usize = 1024;
/// A pinned extra socket stays open until nothing has arrived on it for
/// this long (well above the session keepalive).
pub const PINNED_IDLE: Duration = Duration::from_secs(300);
/// Probes sent per timeout at most (a late wake-up does not burst).
pub const SPRAY_BURST: usize = 16;

#[derive(Debug)]
struct ExtraSocket {
    id: SocketId,
    dest: SocketAddr,
    expires: Instant,
    pinned: bool,
}

#[derive(Debug)]
struct Spray {
    plan: ProbePlan,
    payload: Arc<[u8]>,
}

/// Extra sockets, pinned destinations and sprays.
#[derive(Debug, Default)]
pub struct ExtraSockets {
    sockets: Vec<ExtraSocket>,
    /// Pinned destinations and the socket that holds each.
    pinned: HashMap<SocketAddr, SocketId>,
    sprays: Vec<Spray>,
    /// Datagrams due now: (socket, destination, payload).
    due: VecDeque<(SocketId, SocketAddr, Arc<[u8]>)>,
    actions: VecDeque<SocketAction>,
    next_id: u32,
    /// Datagrams received on extra sockets so far.
    received: u64,
}

impl ExtraSockets {
    /// Open up to `count` extra sockets towards `dest`, each sending
    /// `payload` once, kept for `lifetime`. Returns how many.
    pub fn open(
        &mut self,
        now: Instant,
        dest: SocketAddr,
        payload: &[u8],
        count: usize,
        lifetime: Duration,
    ) -> usize {
        let room = MAX_PUNCH_SOCKETS.saturating_sub(self.sockets.len());
        let payload: Arc<[u8]> = payload.into();
        let n = count.min(room);
        for _ in 0..n {
            // Ids are never reused while a socket could still be open.
            self.next_id = self.next_id.wrapping_add(1).max(1);
            let id = SocketId(self.next_id);
            self.actions.push_back(SocketAction::Open { id });
            self.due.push_back((id, dest, payload.clone()));
            self.sockets.push(ExtraSocket {
                id,
                dest,
                expires: now + lifetime,
                pinned: false,
            });
        }
        n
    }

    /// Send `payload` from the main socket to every address of `plan`, at
    /// its pace.
    pub fn spray(&mut self, plan: ProbePlan, payload: &[u8]) {
        self.sprays.push(Spray {
            plan,
            payload: payload.into(),
        });
    }

    /// Stop spraying `ip` and close the extra sockets towards `ip` that
    /// carry nothing (the punch succeeded, or was given up).
    pub fn stop(&mut self, ip: IpAddr) {
        self.sprays.retain(|s| s.plan.ip() != ip);
        let actions = &mut self.actions;
        self.sockets.retain(|p| {
            let keep = p.pinned || p.dest.ip() != ip;
            if !keep {
                actions.push_back(SocketAction::Close { id: p.id });
            }
            keep
        });
        self.due
            .retain(|(s, d, _)| *s == SocketId::MAIN || d.ip() != ip);
    }

    /// A datagram arrived on extra socket `socket` from `from`.
    /// Datagrams on the main socket are no news here.
    pub fn received(&mut self, now: Instant, socket: SocketId, from: SocketAddr) {
        if socket == SocketId::MAIN {
            return;
        }
        self.received += 1;
        let Some(p) = self.sockets.iter_mut().find(|p| p.id == socket) else {
            return;
        };
        if from != p.dest {
            return;
        }
        p.expires = p.expires.max(now + PINNED_IDLE);
        if p.pinned {
            return;
        }
        tracing::info!(peer = %from, socket = socket.0, "punched path open");
        p.pinned = true;
        // The newest punched path wins: an older pin to the same peer is
        // most likely dead (its NAT mapping forgotten, which is why we
        // punched again). It is closed, so the two never take turns; if
        // it still worked, the peer follows our new source address by
        // address mobility.
        if let Some(old) = self.pinned.insert(from, socket) {
            tracing::info!(peer = %from, old = old.0, new = socket.0, "punched path replaced");
            self.sockets.retain(|x| x.id != old);
            self.actions.push_back(SocketAction::Close { id: old });
        }
    }

    /// The next datagram of a machine that punches for `endpoint`: due
    /// punch datagrams first, then the endpoint's, each from the socket
    /// its destination is pinned to.
    pub fn poll_transmit(
        &mut self,
        endpoint: &mut crate::Endpoint,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<Outgoing> {
        if let Some(o) = self.poll_probe(buf) {
            return Some(o);
        }
        let t = endpoint.poll_transmit(now, buf)?;
        Some(Outgoing {
            socket: self.socket_for(t.destination),
            destination: t.destination,
            size: t.size,
        })
    }

    /// The socket datagrams to `dest` leave from.
    pub fn socket_for(&self, dest: SocketAddr) -> SocketId {
        if self.pinned.is_empty() {
            return SocketId::MAIN;
        }
        self.pinned.get(&dest).copied().unwrap_or(SocketId::MAIN)
    }

    pub fn poll_action(&mut self) -> Option<SocketAction> {
        self.actions.pop_front()
    }

    /// A due punch datagram, written into `buf`.
    pub fn poll_probe(&mut self, buf: &mut [u8]) -> Option<Outgoing> {
        loop {
            let (socket, destination, payload) = self.due.pop_front()?;
            let Some(dst) = buf.get_mut(..payload.len()) else {
                continue;
            };
            dst.copy_from_slice(&payload);
            return Some(Outgoing {
                socket,
                destination,
                size: payload.len(),
            });
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let spray = self.sprays.iter().filter_map(|s| s.plan.poll_timeout());
        let expiry = self.sockets.iter().map(|p| p.expires);
        spray.chain(expiry).min()
    }

    /// Due probes, expired extra sockets.
    pub fn handle_timeout(&mut self, now: Instant) {
        for s in &mut self.sprays {
            for _ in 0..SPRAY_BURST {
                let Some(a) = s.plan.poll(now) else { break };
                self.due.push_back((SocketId::MAIN, a, s.payload.clone()));
            }
        }
        self.sprays.retain(|s| !s.plan.is_done());
        let before = self.sockets.len();
        let actions = &mut self.actions;
        self.sockets.retain(|p| {
            let keep = p.expires > now;
            if !keep {
                actions.push_back(SocketAction::Close { id: p.id });
            }
            keep
        });
        if self.sockets.len() != before {
            tracing::debug!(
                closed = before - self.sockets.len(),
                open = self.sockets.len(),
                "punch sockets closed"
            );
            let sockets = &self.sockets;
            self.pinned
                .retain(|_, id| sockets.iter().any(|p| p.id == *id));
        }
    }

    /// Extra sockets open now.
    pub fn open_sockets(&self) -> usize {
        self.sockets.len()
    }

    /// Destinations whose datagrams leave through an extra socket.
    pub fn pinned_paths(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.pinned.keys().copied()
    }

    /// Datagrams received on extra sockets so far.
    pub fn received_count(&self) -> u64 {
        self.received
    }

    /// Sprays not finished yet.
    pub fn sprays(&self) -> usize {
        self.sprays.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn extra_sockets_open_send_pin_and_expire() {
        let t0 = Instant::now();
        let mut p = ExtraSockets::default();
        let dest = sa("203.0.113.5:40000");
        assert_eq!(p.open(t0, dest, b"hello", 3, Duration::from_secs(10)), 3);
        let opened: Vec<SocketAction> = std::iter::from_fn(|| p.poll_action()).collect();
        assert_eq!(opened.len(), 3);
        let mut buf = [0u8; 64];
        let mut sent = Vec::new();
        while let Some(o) = p.poll_probe(&mut buf) {
            assert_eq!(&buf[..o.size], b"hello");
            assert_eq!(o.destination, dest);
            sent.push(o.socket);
        }
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|s| *s != SocketId::MAIN));
        // Nothing pinned yet: the endpoint's datagrams use the main socket.
        assert_eq!(p.socket_for(dest), SocketId::MAIN);
        // An answer from elsewhere pins nothing; from dest it pins.
        p.received(t0, sent[1], sa("198.51.100.1:1"));
        assert_eq!(p.socket_for(dest), SocketId::MAIN);
        p.received(t0, sent[1], dest);
        assert_eq!(p.socket_for(dest), sent[1]);
        assert_eq!(p.received_count(), 2);
        // After the lifetime the unpinned ones close; the pinned one lives on.
        p.handle_timeout(t0 + Duration::from_secs(11));
        let closed: Vec<SocketAction> = std::iter::from_fn(|| p.poll_action()).collect();
        assert_eq!(closed.len(), 2);
        assert_eq!(p.open_sockets(), 1);
        assert_eq!(p.socket_for(dest), sent[1]);
        p.handle_timeout(t0 + PINNED_IDLE + Duration::from_secs(1));
        assert_eq!(p.poll_action(), Some(SocketAction::Close { id: sent[1] }));
        assert_eq!(p.socket_for(dest), SocketId::MAIN);
    }

    #[test]
    fn sprays_are_paced_and_stop_on_success() {
        let t0 = Instant::now();
        let mut rng = crate::Rng::from_seed([7; 32]);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let mut p = ExtraSockets::default();
        p.spray(ProbePlan::new(t0, &mut rng, ip, 100, 128), b"probe");
        p.handle_timeout(t0);
        let mut buf = [0u8; 64];
        let burst = std::iter::from_fn(|| p.poll_probe(&mut buf)).count();
        assert!((1..=SPRAY_BURST).contains(&burst), "{burst}");
        assert!(p.poll_timeout().is_some_and(|t| t > t0));
        p.stop(ip);
        assert_eq!(p.sprays(), 0);
        p.handle_timeout(t0 + Duration::from_secs(5));
        assert!(p.poll_probe(&mut buf).is_none());
    }

    #[test]
    fn a_newer_punched_path_replaces_a_dead_pin() {
        let t0 = Instant::now();
        let mut p = ExtraSockets::default();
        let dest = sa("203.0.113.5:40000");
        p.open(t0, dest, b"first", 1, Duration::from_secs(10));
        let old = match p.poll_action() {
            Some(SocketAction::Open { id }) => id,
            other => panic!("{other:?}"),
        };
        p.received(t0, old, dest);
        assert_eq!(p.socket_for(dest), old);
        // The NAT forgot the mapping; a later round punches anew.
        let t1 = t0 + Duration::from_secs(60);
        p.open(t1, dest, b"again", 1, Duration::from_secs(10));
        let new = match p.poll_action() {
            Some(SocketAction::Open { id }) => id,
            other => panic!("{other:?}"),
        };
        assert_eq!(p.socket_for(dest), old, "not before the new path answers");
        p.received(t1, new, dest);
        assert_eq!(p.socket_for(dest), new);
        assert_eq!(p.poll_action(), Some(SocketAction::Close { id: old }));
        assert_eq!(p.open_sockets(), 1);
        // More answers on the new path change nothing.
        p.received(t1, new, dest);
        assert_eq!(p.poll_action(), None);
    }

    #[test]
    fn at_most_max_punch_sockets() {
        let t0 = Instant::now();
        let mut p = ExtraSockets::default();
        let dest = sa("203.0.113.5:40000");
        let n = p.open(
            t0,
            dest,
            b"x",
            MAX_PUNCH_SOCKETS + 10,
            Duration::from_secs(1),
        );
        assert_eq!(n, MAX_PUNCH_SOCKETS);
        assert_eq!(p.open(t0, dest, b"x", 1, Duration::from_secs(1)), 0);
    }
}
