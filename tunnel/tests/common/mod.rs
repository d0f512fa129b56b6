//! A deterministic, seeded network simulator for sans-IO endpoints: a
//! virtual clock, per-link delay, jitter (reordering), loss, duplication
//! and a bottleneck rate with a bounded queue. `step` jumps to the earliest
//! wake-up (packet arrival or endpoint timer); `run_until` fails on
//! livelock.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ringlan_tunnel::crypto::{Identity, NetworkName, NetworkSecret};
use ringlan_tunnel::Rng;
use ringlan_tunnel::{Endpoint, EndpointConfig, Event};
use ringlan_tunnel::{FlowEvent, Reliability, SessionId, Target};

#[derive(Clone, Debug)]
pub struct LinkModel {
    pub delay: Duration,
    /// Extra uniformly random delay in [0, jitter): reorders packets.
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// Bottleneck in bytes per second (0 = unlimited).
    pub rate: u64,
    /// Max queueing delay at the bottleneck before tail drop.
    pub max_queue: Duration,
    /// Datagrams larger than this are dropped (a path MTU); 0 = no limit.
    pub max_datagram: usize,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            rate: 0,
            max_queue: Duration::from_millis(100),
            max_datagram: 0,
        }
    }
}

pub struct Node {
    pub ep: Endpoint,
    pub addr: SocketAddr,
    pub events: Vec<Event>,
    /// When false the node's transmissions vanish and it receives nothing.
    pub up: bool,
    /// Source address other nodes see (NAT rebinding / mobility).
    pub public_addr: SocketAddr,
    /// The NAT this node sits behind (index into `Net::nats`); its `addr`
    /// is then private, reachable only from behind the same NAT.
    pub nat: Option<usize>,
}

/// A NAT (RFC 4787): endpoint-independent or endpoint-dependent mapping,
/// port-restricted filtering (inbound only from an address:port the
/// mapping has sent to), no hairpinning.
pub struct Nat {
    pub public_ip: IpAddr,
    /// Endpoint-dependent mapping ("symmetric"): a new port per destination.
    pub dependent: bool,
    next_port: u16,
    map: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    rev: HashMap<u16, SocketAddr>,
    /// (public port, remote) -> last outbound datagram.
    perms: HashMap<(u16, SocketAddr), Instant>,
    /// A filter entry lasts this long after the last outbound datagram
    /// (conntrack's UDP timeout).
    pub timeout: Duration,
    /// Inbound datagrams dropped by the filter.
    pub filtered: u64,
}

impl Nat {
    fn outbound(&mut self, now: Instant, inside: SocketAddr, dest: SocketAddr) -> SocketAddr {
        let key = (inside, self.dependent.then_some(dest));
        let port = match self.map.get(&key) {
            Some(&p) => p,
            None => {
                let p = self.next_port;
                self.next_port += 1;
                self.map.insert(key, p);
                self.rev.insert(p, inside);
                p
            }
        };
        self.perms.insert((port, dest), now);
        SocketAddr::new(self.public_ip, port)
    }

    /// The router got a new public address: existing mappings keep their
    /// ports, but everything in the filter (conntrack) is gone and
    /// datagrams to the old address reach nobody.
    pub fn renumber(&mut self, ip: IpAddr) {
        self.public_ip = ip;
        self.perms.clear();
    }

    /// The NAT forgets its mappings (a reboot, or a mapping that timed
    /// out): the next datagram from inside leaves from a new public port.
    pub fn rebind(&mut self) {
        self.map.clear();
        self.rev.clear();
        self.perms.clear();
    }

    fn inbound(&mut self, now: Instant, port: u16, from: SocketAddr) -> Option<SocketAddr> {
        let fresh = self
            .perms
            .get(&(port, from))
            .is_some_and(|t| now.saturating_duration_since(*t) < self.timeout);
        if !fresh {
            self.filtered += 1;
            return None;
        }
        self.rev.get(&port).copied()
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: SocketAddr,
    from: SocketAddr,
    data: Vec<u8>,
}

/// Decides, per datagram (from, to, bytes), whether the network loses it.
pub type DropFilter = Box<dyn FnMut(SocketAddr, SocketAddr, &[u8]) -> bool>;

/// An on-path attacker that watches and injects but cannot drop: per
/// datagram (from, to, bytes), an optional forged copy that reaches the
/// destination ahead of the original (a faster path).
pub type Injector = Box<dyn FnMut(SocketAddr, SocketAddr, &[u8]) -> Option<Vec<u8>>>;

pub struct Net {
    pub now: Instant,
    pub start: Instant,
    pub nodes: Vec<Node>,
    pub link: LinkModel,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    rng: Rng,
    busy_until: HashMap<(SocketAddr, SocketAddr), Instant>,
    pub delivered: u64,
    pub dropped: u64,
    /// Every datagram put on the wire: (from, to, len, first byte after the multiplex header).
    pub log: Vec<(SocketAddr, SocketAddr, usize)>,
    pub keep_log: bool,
    /// Every datagram's bytes, with `keep_wire`.
    pub wire: Vec<Vec<u8>>,
    pub keep_wire: bool,
    /// Drops the datagrams for which it returns true (targeted loss).
    pub drop_filter: Option<DropFilter>,
    pub injector: Option<Injector>,
    buf: Vec<u8>,
    pub nats: Vec<Nat>,
}

pub fn network() -> (NetworkName, NetworkSecret) {
    (
        NetworkName::new("test").unwrap(),
        NetworkSecret::from_bytes([42; 32]),
    )
}

pub fn config(seed: u8) -> EndpointConfig {
    let (name, secret) = network();
    let identity = Identity::from_secret_key_bytes([seed; 32], &name);
    EndpointConfig::new(identity, name, secret)
}

impl Net {
    pub fn new(seed: u64, link: LinkModel) -> Net {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        let now = Instant::now();
        Net {
            now,
            start: now,
            nodes: Vec::new(),
            link,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: Rng::from_seed(s),
            busy_until: HashMap::new(),
            delivered: 0,
            dropped: 0,
            log: Vec::new(),
            keep_log: false,
            wire: Vec::new(),
            keep_wire: false,
            drop_filter: None,
            injector: None,
            buf: vec![0u8; 2048],
            nats: Vec::new(),
        }
    }

    /// Add an endpoint at 192.0.2.<n>:4910; returns its index.
    pub fn add(&mut self, cfg: EndpointConfig) -> usize {
        let i = self.nodes.len();
        let addr: SocketAddr = format!("192.0.2.{}:4910", i + 1).parse().unwrap();
        let mut seed = [0u8; 32];
        seed[0] = i as u8;
        seed[1] = 0x5e;
        let ep = Endpoint::new(self.now, cfg, Rng::from_seed(seed));
        self.nodes.push(Node {
            ep,
            addr,
            events: Vec::new(),
            up: true,
            public_addr: addr,
            nat: None,
        });
        self.flush(i);
        i
    }

    /// Add a NAT with public address 203.0.113.<n>; returns its index.
    pub fn add_nat(&mut self, dependent: bool) -> usize {
        let n = self.nats.len();
        self.nats.push(Nat {
            public_ip: format!("203.0.113.{}", n + 1).parse().unwrap(),
            dependent,
            next_port: 40000,
            map: HashMap::new(),
            rev: HashMap::new(),
            perms: HashMap::new(),
            timeout: Duration::from_secs(30),
            filtered: 0,
        });
        n
    }

    /// Add an endpoint behind NAT `nat` at 10.0.<nat>.<k>:4910.
    pub fn add_behind(&mut self, nat: usize, cfg: EndpointConfig) -> usize {
        let k = self.nodes.iter().filter(|n| n.nat == Some(nat)).count();
        let i = self.add(cfg);
        let addr: SocketAddr = format!("10.0.{}.{}:4910", nat, k + 2).parse().unwrap();
        self.nodes[i].addr = addr;
        self.nodes[i].public_addr = addr;
        self.nodes[i].nat = Some(nat);
        i
    }

    /// The source address datagrams from node `i` to `dest` carry, or
    /// `None` if they cannot get there (a private address behind another
    /// NAT).
    fn source_for(&mut self, i: usize, dest: SocketAddr) -> Option<SocketAddr> {
        let dest_nat = self
            .nodes
            .iter()
            .find(|n| n.addr == dest && n.nat.is_some())
            .map(|n| n.nat);
        let node = &self.nodes[i];
        match (node.nat, dest_nat) {
            (Some(a), Some(b)) => (Some(a) == b).then_some(node.addr),
            (None, Some(_)) => None,
            (Some(a), None) => Some(self.nats[a].outbound(self.now, node.addr, dest)),
            (None, None) => Some(node.public_addr),
        }
    }

    /// Where a datagram to `to` from `from` ends up (through a NAT's
    /// filter when `to` is a NAT's public address).
    fn deliver_to(&mut self, from: SocketAddr, to: SocketAddr) -> Option<usize> {
        if let Some(n) = self.nats.iter().position(|n| n.public_ip == to.ip()) {
            let inside = self.nats[n].inbound(self.now, to.port(), from)?;
            return self.index_of(inside);
        }
        self.index_of(to)
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    /// Drain every transmit of node `i` onto the wire, and its events.
    pub fn flush(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.buf);
        while let Some(t) = self.nodes[i].ep.poll_transmit(self.now, &mut buf) {
            // As a driver with a send thread does (`set_defer_sealing`).
            if let Some(seal) = self.nodes[i].ep.take_pending_seal() {
                seal.finish(&mut buf[..t.size]);
            }
            if !self.nodes[i].up {
                continue;
            }
            let Some(from) = self.source_for(i, t.destination) else {
                self.dropped += 1;
                continue;
            };
            self.put(from, t.destination, buf[..t.size].to_vec());
        }
        self.buf = buf;
        while let Some(ev) = self.nodes[i].ep.poll_event() {
            self.nodes[i].events.push(ev);
        }
    }

    /// Put a datagram on the wire subject to the link model.
    pub fn put(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if self.keep_log {
            self.log.push((from, to, data.len()));
        }
        if self.keep_wire {
            self.wire.push(data.clone());
        }
        if let Some(forged) = self.injector.as_mut().and_then(|f| f(from, to, &data)) {
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at: self.now + self.link.delay / 2,
                seq: self.seq,
                to,
                from,
                data: forged,
            }));
        }
        if let Some(f) = self.drop_filter.as_mut() {
            if f(from, to, &data) {
                self.dropped += 1;
                return;
            }
        }
        if self.link.max_datagram > 0 && data.len() > self.link.max_datagram {
            self.dropped += 1;
            return;
        }
        if self.link.loss > 0.0 && self.rng.f64() < self.link.loss {
            self.dropped += 1;
            return;
        }
        let mut depart = self.now;
        if self.link.rate > 0 {
            let key = (from, to);
            let busy = self
                .busy_until
                .get(&key)
                .copied()
                .unwrap_or(self.now)
                .max(self.now);
            if busy - self.now > self.link.max_queue {
                self.dropped += 1;
                return;
            }
            let ser = Duration::from_secs_f64(data.len() as f64 / self.link.rate as f64);
            depart = busy + ser;
            self.busy_until.insert(key, depart);
        }
        let copies = if self.link.duplicate > 0.0 && self.rng.f64() < self.link.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.link.jitter > Duration::ZERO {
                self.link.jitter.mul_f64(self.rng.f64())
            } else {
                Duration::ZERO
            };
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at: depart + self.link.delay + jitter,
                seq: self.seq,
                to,
                from,
                data: data.clone(),
            }));
        }
    }

    /// The earliest packet arrival or endpoint timer.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let next_pkt = self.queue.peek().map(|r| r.0.at);
        let next_timer = self.nodes.iter().filter_map(|n| n.ep.poll_timeout()).min();
        next_pkt.into_iter().chain(next_timer).min()
    }

    /// Advance to the next wake-up and process it. Returns false if nothing
    /// is scheduled at all.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_wakeup() else {
            return false;
        };
        if next > self.now {
            self.now = next;
        }
        let mut touched = Vec::new();
        while let Some(r) = self.queue.peek() {
            if r.0.at > self.now {
                break;
            }
            let Reverse(p) = self.queue.pop().unwrap();
            let Some(i) = self.deliver_to(p.from, p.to) else {
                continue;
            };
            if !self.nodes[i].up {
                continue;
            }
            let mut data = p.data;
            // As the driver does: a relayed datagram leaves from the
            // buffer it arrived in, rewritten in place.
            let forward = self.nodes[i]
                .ep
                .handle_datagram_in_place(self.now, p.from, &mut data);
            self.delivered += 1;
            touched.push(i);
            if let Some(t) = forward {
                data.truncate(t.size);
                match self.source_for(i, t.destination) {
                    Some(from) => self.put(from, t.destination, data),
                    None => self.dropped += 1,
                }
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i]
                .ep
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
            {
                self.nodes[i].ep.handle_timeout(self.now);
            }
        }
        for i in 0..self.nodes.len() {
            self.flush(i);
        }
        true
    }

    /// Step until `cond` holds or `limit` of virtual time passes.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&mut Net) -> bool) -> bool {
        let deadline = self.now + limit;
        let mut steps: u64 = 0;
        while self.now <= deadline {
            if cond(self) {
                return true;
            }
            if !self.step() {
                return cond(self);
            }
            steps += 1;
            assert!(steps < 50_000_000, "livelock: too many steps");
        }
        cond(self)
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(d, |n| n.now >= end);
    }

    pub fn take_events(&mut self, i: usize) -> Vec<Event> {
        std::mem::take(&mut self.nodes[i].events)
    }
}

// ----- sessions and transfers ------------------------------------------

pub fn opened(net: &Net, i: usize) -> Vec<SessionId> {
    net.nodes[i]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SessionOpened { session, .. } => Some(*session),
            _ => None,
        })
        .collect()
}

pub fn connect(net: &mut Net, a: usize, b: usize) -> (SessionId, SessionId) {
    let peer = net.nodes[b].ep.node_id();
    let addr = net.nodes[b].addr;
    let now = net.now;
    let sa = net.nodes[a]
        .ep
        .connect(now, Target::Node(peer), &[addr])
        .unwrap();
    net.flush(a);
    assert!(
        net.run_until(Duration::from_secs(95), |n| !opened(n, a).is_empty()
            && !opened(n, b).is_empty()),
        "handshake did not complete"
    );
    let sb = opened(net, b)[0];
    assert_eq!(opened(net, a)[0], sa);
    (sa, sb)
}

/// Collect messages delivered on node `i`.
pub fn messages(net: &mut Net, i: usize, out: &mut Vec<Vec<u8>>) {
    for e in net.take_events(i) {
        if let Event::Flow {
            event: FlowEvent::Message { data, .. },
            ..
        } = e
        {
            out.push(data);
        }
    }
}

pub fn pattern(i: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// Send `total` bytes in messages of `msg` bytes over a reliable flow;
/// returns what arrived, in delivery order.
pub fn bulk(
    net: &mut Net,
    a: usize,
    b: usize,
    sa: SessionId,
    total: usize,
    msg: usize,
) -> Vec<Vec<u8>> {
    let f = net.nodes[a].ep.open_flow(sa, b"bulk", None).unwrap();
    let count = total.div_ceil(msg);
    let mut next = 0usize;
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut steps = 0u64;
    while got.len() < count {
        // Keep the send queue fed without exceeding its cap.
        while next < count {
            let now = net.now;
            match net.nodes[a].ep.send(
                now,
                sa,
                f,
                &pattern(next as u64, msg),
                Reliability::Reliable,
            ) {
                Ok(()) => next += 1,
                Err(_) => break,
            }
        }
        net.flush(a);
        assert!(
            net.step(),
            "network went idle with {} of {count} delivered",
            got.len()
        );
        messages(net, b, &mut got);
        steps += 1;
        assert!(
            net.elapsed() < Duration::from_secs(3600),
            "too slow: {} of {count}",
            got.len()
        );
        let _ = steps;
    }
    got
}

/// Send `msg` from node `a` on its session `sa` over a new reliable flow
/// and run until node `b` receives a message (within 2 s); returns what
/// `b` received.
pub fn deliver(net: &mut Net, a: usize, sa: SessionId, b: usize, msg: &[u8]) -> Vec<Vec<u8>> {
    let now = net.now;
    let f = net.nodes[a].ep.open_flow(sa, b"deliver", None).unwrap();
    net.nodes[a]
        .ep
        .send(now, sa, f, msg, Reliability::Reliable)
        .unwrap();
    net.flush(a);
    let mut got = Vec::new();
    assert!(net.run_until(Duration::from_secs(2), |n| {
        messages(n, b, &mut got);
        !got.is_empty()
    }));
    got
}

/// Every datagram A sends to B while `net` runs, recorded in `log`.
pub fn record(
    net: &mut Net,
    from: SocketAddr,
    to: SocketAddr,
) -> std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>> {
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let l = log.clone();
    net.drop_filter = Some(Box::new(move |f, t, data| {
        if f == from && t == to {
            l.borrow_mut().push(data.to_vec());
        }
        false
    }));
    log
}

/// Send `msgs` from node `a` on its flow `flow` as frames (NoRetransmit),
/// 20 ms apart, and run until node `b` has received as many messages
/// (within 5 s after the last); returns what `b` received.
pub fn send_frames(
    net: &mut Net,
    [a, b]: [usize; 2],
    sa: SessionId,
    flow: ringlan_tunnel::FlowId,
    msgs: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for msg in msgs {
        let now = net.now;
        net.nodes[a]
            .ep
            .send(now, sa, flow, msg, Reliability::NoRetransmit)
            .unwrap();
        net.flush(a);
        let t = net.now + Duration::from_millis(20);
        net.run_until(Duration::from_secs(1), |n| n.now >= t);
        messages(net, b, &mut got);
    }
    net.run_until(Duration::from_secs(5), |n| {
        messages(n, b, &mut got);
        got.len() >= msgs.len()
    });
    got
}
