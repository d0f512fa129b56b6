//! TCP fallback, the node's half (docs/tcp.md): when to carry datagrams
//! to an introducer on a TCP stream, and which socket each datagram of a
//! stream peer leaves on.
//!
//! - **Client (role node).** A node that has heard no UDP datagram from
//!   any introducer [`TCP_AFTER`] after starting, or for
//!   [`TcpFallback::silent_after`] later, asks its driver to connect a
//!   stream ([`SocketAction::Connect`]) to an introducer's TCP address (its
//!   UDP address unless `tcp://` names another), one introducer after the
//!   other, one attempt every [`TCP_AFTER`]. While the stream is open,
//!   everything for that introducer's UDP address leaves on it (sessions,
//!   relayed routes through it, forwarded openings) except STUN queries,
//!   which keep probing UDP; datagrams read from it are presented as from
//!   the introducer's UDP address, so the endpoint's session to it does
//!   not notice the transport. Other members reach the node through the
//!   introducer's relay: its direct openings to them get no answer and the
//!   route control (`routes`) sets up relayed routes after `RELAY_AFTER`.
//!   The first UDP datagram from an introducer (a STUN answer: UDP works
//!   again) closes the stream; the sessions then continue on UDP by
//!   address mobility (the introducer sees the node's packets from its UDP
//!   address) and relayed sessions go direct by their usual retries.
//! - **Server (any role).** A datagram on a stream the driver accepted
//!   binds the stream's peer address (the TCP source address, as the
//!   kernel reports it) to that stream; datagrams to that address then
//!   leave on it until it closes. A UDP peer with the same IP and port
//!   number is shadowed while the stream is open (TCP and UDP port spaces
//!   are distinct, so this needs one host using the same number for both);
//!   at most [`MAX_STREAM_PEERS`] bindings are kept.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlan_tunnel::{looks_like_stun, SocketAction, SocketId};

/// No UDP from any introducer this long after starting: try TCP. Also the
/// pause between two connection attempts.
pub const TCP_AFTER: Duration = Duration::from_secs(5);
/// Stream peers (accepted streams) remembered at once; the driver accepts
/// at most `TcpLimits::max_clients` (256) streams.
pub const MAX_STREAM_PEERS: usize = 1024;

/// One introducer as the fallback sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTarget {
    /// Its UDP address: the name its session and routes use.
    pub udp: SocketAddr,
    /// Where to connect the stream.
    pub tcp: SocketAddr,
}

/// The fallback's targets: each introducer at its UDP address; a
/// `tcp://` address replaces the TCP address of the introducer with the
/// same IP, or is a target of its own (named by its TCP address) when no
/// introducer has that IP.
pub fn targets(introducers: &[SocketAddr], tcp: &[SocketAddr]) -> Vec<TcpTarget> {
    let mut out: Vec<TcpTarget> = introducers
        .iter()
        .map(|&udp| TcpTarget { udp, tcp: udp })
        .collect();
    for &t in tcp {
        match out
            .iter_mut()
            .find(|x| x.udp.ip() == t.ip() && x.tcp == x.udp)
        {
            Some(x) => x.tcp = t,
            None => out.push(TcpTarget { udp: t, tcp: t }),
        }
    }
    out
}

/// The stream to an introducer.
#[derive(Debug, Clone, Copy)]
struct Active {
    socket: SocketId,
    target: TcpTarget,
    /// A datagram arrived on it.
    answered: bool,
}

/// The node's TCP fallback and stream peers.
#[derive(Debug)]
pub struct TcpFallback {
    targets: Vec<TcpTarget>,
    /// Fall back at all (role node with introducers).
    enabled: bool,
    started: Instant,
    /// The last UDP datagram from an introducer.
    heard: Option<Instant>,
    /// UDP silence this long (after having heard from an introducer)
    /// sends the node to TCP again.
    silent_after: Duration,
    active: Option<Active>,
    next_attempt: Instant,
    next_target: usize,
    next_id: u32,
    actions: VecDeque<SocketAction>,
    /// Accepted streams by peer address.
    peers: HashMap<SocketAddr, SocketId>,
    /// Streams connected (attempts) and closed because UDP came back.
    pub attempts: u64,
    pub back_to_udp: u64,
}

/// What `ringlan status` shows about the fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpState {
    /// The introducer (UDP name) whose stream carries our datagrams.
    pub via: SocketAddr,
    /// The TCP address connected to.
    pub tcp: SocketAddr,
    /// A datagram came back on it.
    pub answered: bool,
}

impl TcpFallback {
    /// `enabled`: this node falls back (role node). `keepalive`: the
    /// sessions' keepalive interval (an idle session to an introducer
    /// hears from it at least this often).
    pub fn new(now: Instant, targets: Vec<TcpTarget>, enabled: bool, keepalive: Duration) -> Self {
        TcpFallback {
            enabled: enabled && !targets.is_empty(),
            targets,
            started: now,
            heard: None,
            silent_after: (keepalive * 3).max(TCP_AFTER),
            active: None,
            next_attempt: now + TCP_AFTER,
            next_target: 0,
            next_id: 0,
            actions: VecDeque::new(),
            peers: HashMap::new(),
            attempts: 0,
            back_to_udp: 0,
        }
    }

    /// The stream in use, if any.
    pub fn state(&self) -> Option<TcpState> {
        self.active.map(|a| TcpState {
            via: a.target.udp,
            tcp: a.target.tcp,
            answered: a.answered,
        })
    }

    /// Stream peers bound now (introducer side).
    pub fn stream_peers(&self) -> usize {
        self.peers.len()
    }

    pub fn poll_action(&mut self) -> Option<SocketAction> {
        self.actions.pop_front()
    }

    /// A datagram arrived on `socket` from `from`: returns the address to
    /// present it as.
    pub fn on_datagram(&mut self, now: Instant, socket: SocketId, from: SocketAddr) -> SocketAddr {
        if let Some(a) = self.active.as_mut().filter(|a| a.socket == socket) {
            a.answered = true;
            return a.target.udp;
        }
        if socket.is_stream() {
            if self.peers.len() < MAX_STREAM_PEERS || self.peers.contains_key(&from) {
                self.peers.insert(from, socket);
            }
            return from;
        }
        if self.targets.iter().any(|t| t.udp == from) {
            self.heard = Some(now);
            if let Some(a) = self.active.take() {
                tracing::info!(introducer = %a.target.udp, "UDP works again: closing the TCP stream");
                self.actions.push_back(SocketAction::Close { id: a.socket });
                self.back_to_udp += 1;
            }
        }
        from
    }

    /// The stream `socket` closed.
    pub fn on_closed(&mut self, now: Instant, socket: SocketId) {
        if self.active.is_some_and(|a| a.socket == socket) {
            if let Some(a) = self.active.take() {
                tracing::info!(introducer = %a.target.udp, tcp = %a.target.tcp, "TCP stream closed");
            }
            self.next_target += 1;
            self.next_attempt = self.next_attempt.max(now + TCP_AFTER);
        }
        self.peers.retain(|_, s| *s != socket);
    }

    /// The socket a datagram of `data` to `dest` leaves on, if not UDP.
    /// Whether [`TcpFallback::socket_for`] may send to `dest` over a
    /// stream (it then looks at the datagram itself).
    pub fn may_carry(&self, dest: SocketAddr) -> bool {
        self.active.is_some_and(|a| a.target.udp == dest) || self.peers.contains_key(&dest)
    }

    pub fn socket_for(&self, dest: SocketAddr, data: &[u8]) -> Option<SocketId> {
        if let Some(a) = self.active.filter(|a| a.target.udp == dest) {
            // STUN keeps asking over UDP: its answer says UDP works again.
            if !looks_like_stun(data) {
                return Some(a.socket);
            }
            return None;
        }
        self.peers.get(&dest).copied()
    }

    /// Periodic check (housekeeping): connect a stream while UDP is silent.
    pub fn tick(&mut self, now: Instant) {
        if !self.enabled || self.active.is_some() || now < self.next_attempt {
            return;
        }
        let silent = match self.heard {
            None => now >= self.started + TCP_AFTER,
            Some(t) => now.saturating_duration_since(t) >= self.silent_after,
        };
        if !silent {
            return;
        }
        let target = self.targets[self.next_target % self.targets.len()];
        let socket = SocketId(SocketId::FIRST_STREAM.0 + self.next_id % (1 << 30));
        self.next_id = self.next_id.wrapping_add(1);
        self.next_attempt = now + TCP_AFTER;
        self.attempts += 1;
        tracing::info!(introducer = %target.udp, tcp = %target.tcp, "no UDP answer from any introducer: connecting over TCP");
        self.actions.push_back(SocketAction::Connect {
            id: socket,
            to: target.tcp,
        });
        self.active = Some(Active {
            socket,
            target,
            answered: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const STUN: [u8; 20] = [
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];

    fn fallback(now: Instant) -> TcpFallback {
        let targets = vec![
            TcpTarget {
                udp: sa("192.0.2.1:4910"),
                tcp: sa("192.0.2.1:4910"),
            },
            TcpTarget {
                udp: sa("192.0.2.2:4910"),
                tcp: sa("192.0.2.2:443"),
            },
        ];
        TcpFallback::new(now, targets, true, Duration::from_secs(10))
    }

    #[test]
    fn silence_after_start_connects_and_an_answer_on_udp_goes_back() {
        let t0 = Instant::now();
        let mut f = fallback(t0);
        f.tick(t0 + Duration::from_secs(4));
        assert_eq!(f.poll_action(), None);
        f.tick(t0 + TCP_AFTER);
        let Some(SocketAction::Connect { id, to }) = f.poll_action() else {
            panic!("a connect");
        };
        assert!(id.is_stream() && id < SocketId::FIRST_ACCEPTED);
        assert_eq!(to, sa("192.0.2.1:4910"));
        let intro = sa("192.0.2.1:4910");
        // Session traffic to the introducer takes the stream, STUN does not.
        assert_eq!(f.socket_for(intro, &[0x0d; 40]), Some(id));
        assert_eq!(f.socket_for(intro, &STUN), None);
        assert_eq!(f.socket_for(sa("198.51.100.9:4910"), &[1; 40]), None);
        assert_eq!(f.on_datagram(t0 + TCP_AFTER, id, to), intro);
        assert!(f.state().unwrap().answered);
        // A UDP datagram from the introducer: the stream is closed.
        f.on_datagram(t0 + TCP_AFTER * 2, SocketId::MAIN, intro);
        assert_eq!(f.poll_action(), Some(SocketAction::Close { id }));
        assert_eq!(f.state(), None);
        assert_eq!(f.socket_for(intro, &[0x0d; 40]), None);
        // UDP keeps answering: no new stream.
        f.tick(t0 + TCP_AFTER * 3);
        assert_eq!(f.poll_action(), None);
        // Silence again for long enough: back to TCP.
        f.tick(t0 + TCP_AFTER * 2 + Duration::from_secs(30));
        assert!(matches!(
            f.poll_action(),
            Some(SocketAction::Connect { .. })
        ));
    }

    #[test]
    fn a_refused_stream_moves_on_to_the_next_introducer_after_a_pause() {
        let t0 = Instant::now();
        let mut f = fallback(t0);
        f.tick(t0 + TCP_AFTER);
        let Some(SocketAction::Connect { id, .. }) = f.poll_action() else {
            panic!("a connect");
        };
        let t1 = t0 + TCP_AFTER + Duration::from_millis(10);
        f.on_closed(t1, id);
        f.tick(t1);
        assert_eq!(f.poll_action(), None, "a pause between attempts");
        f.tick(t1 + TCP_AFTER);
        let Some(SocketAction::Connect { id: id2, to }) = f.poll_action() else {
            panic!("the next introducer");
        };
        assert_ne!(id2, id);
        assert_eq!(to, sa("192.0.2.2:443"));
        // Its datagrams are presented as from its UDP name.
        assert_eq!(f.on_datagram(t1, id2, to), sa("192.0.2.2:4910"));
    }

    #[test]
    fn accepted_streams_carry_replies_to_their_peer_until_closed() {
        let t0 = Instant::now();
        let mut f = TcpFallback::new(t0, Vec::new(), false, Duration::from_secs(10));
        let peer = sa("203.0.113.5:40001");
        let s = SocketId(SocketId::FIRST_ACCEPTED.0 + 3);
        assert_eq!(f.on_datagram(t0, s, peer), peer);
        assert_eq!(f.socket_for(peer, &[1; 40]), Some(s));
        assert_eq!(f.socket_for(sa("203.0.113.5:40002"), &[1; 40]), None);
        f.on_closed(t0, s);
        assert_eq!(f.socket_for(peer, &[1; 40]), None);
        // Never falls back itself.
        f.tick(t0 + TCP_AFTER * 10);
        assert_eq!(f.poll_action(), None);
    }

    #[test]
    fn stream_peers_are_bounded() {
        let t0 = Instant::now();
        let mut f = TcpFallback::new(t0, Vec::new(), false, Duration::from_secs(10));
        for i in 0..MAX_STREAM_PEERS as u32 + 10 {
            let peer = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 40000));
            f.on_datagram(t0, SocketId(SocketId::FIRST_ACCEPTED.0 + i), peer);
        }
        assert_eq!(f.stream_peers(), MAX_STREAM_PEERS);
    }
}
