//! Drive a whole [`Endpoint`] (RFC 7016 3.5, 3.6) with adversarial
//! datagrams: raw bytes, real packets of a member peer with bytes flipped,
//! startup packets whose plain text the fuzzer writes (sealed with the
//! member Default Session Key, RFC 7016 2.2.3, or with a non-member one),
//! interleaved with real traffic, commands and an advancing virtual clock.
//!
//! Asserts: nothing panics; draining `poll_transmit` terminates; a datagram
//! that did not authenticate (raw bytes, a changed real packet, anything
//! from a non-member) never creates a session nor opens one.
//!
//! Input: byte 0 = setup flags, then records `[kind][len hi][len lo]
//! [data; len]` (len is cut to what is left).
//!
//! Setup flags: bits 0-1 handshake before the records (0 none, 1 A
//! initiates, 2 B initiates, 3 both at once = glare); bit 2 B queues three
//! reliable messages to A after the handshake (not yet delivered); bit 3 A
//! is a Redirector.
//!
//! Record kinds (low nibble; the high nibble is a parameter `p`):
//! * 0 raw: `data` is a datagram to A from source `p & 3`.
//! * 1 mutate: the next real B->A packet, `data` = pairs (index, xor);
//!   `p & 1` also truncates it by `data[0]` bytes; `p & 2` sends it from a
//!   stranger's address.
//! * 2 deliver: up to `max(1, data[0] % 16)` real B->A packets unchanged.
//! * 3 answer: up to `max(1, data[0] % 16)` real A->B packets unchanged.
//! * 4 time: advance the clock by `data` (u16 ms; empty = to the next
//!   timer) and fire due timers.
//! * 5 send: B (p & 4: A) sends `data` on a flow to its peer; reliability
//!   `p & 3` (reliable, 100 ms deadline, no retransmit).
//! * 6 non-member: the next packet of non-member C (which connects to A),
//!   xor-mutated by `data` pairs, to A.
//! * 7 non-member plain: `data` is a startup packet plain text sealed with a
//!   non-member Default Session Key, to A.
//! * 8 member plain: `data` is a plain text sealed with the member Default
//!   Session Key, to A from source `p & 3`, with session id 0 (p & 4 = 0)
//!   or the id of A's first session (receive side of a KEYING_SENT
//!   initiator).
//! * 9 command on A: `p % 6` = connect to B, connect Any to a stranger,
//!   close (orderly), close (abrupt), close the flow to B, close all.
//! * 10 mutate A->B: the next real A->B packet, xor-mutated, to B.
#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringlan_tunnel::crypto::{
    DefaultCipher, Identity, NetworkName, NetworkSecret, DEFAULT_HEADER_LEN, TAG_LEN,
};
use ringlan_tunnel::{DropReason, Endpoint, EndpointConfig, Event, Target};
use ringlan_tunnel::{FlowEvent, FlowId, Reliability};
use ringlan_tunnel::SessionId;
use ringlan_tunnel::fuzzing::{write_multiplex_header, MULTIPLEX_HEADER_LEN};
use ringlan_tunnel::Rng;

const MAX_QUEUE: usize = 256;
/// A drain that produces more datagrams than this is a livelock.
const MAX_DRAIN: usize = 200_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Keys {
    name: NetworkName,
    a: Identity,
    b: Identity,
    c: Identity,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let name = NetworkName::new("fuzz").unwrap();
        Keys {
            a: Identity::from_secret_key_bytes([1; 32], &name),
            b: Identity::from_secret_key_bytes([2; 32], &name),
            c: Identity::from_secret_key_bytes([3; 32], &name),
            name,
        }
    })
}

fn member_secret() -> NetworkSecret {
    NetworkSecret::from_bytes([42; 32])
}

fn other_secret() -> NetworkSecret {
    NetworkSecret::from_bytes([43; 32])
}

#[derive(Default)]
struct Side {
    /// Open sessions by id, as events reported them.
    open: Vec<SessionId>,
    flow: Option<(SessionId, FlowId)>,
}

struct Harness {
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    c: Endpoint,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    c_addr: SocketAddr,
    strangers: [SocketAddr; 2],
    to_a: VecDeque<Vec<u8>>,
    to_b: VecDeque<Vec<u8>>,
    c_to_a: VecDeque<Vec<u8>>,
    sa: Side,
    sb: Side,
    c_started: bool,
    member: DefaultCipher,
    other: DefaultCipher,
    rng: Rng,
    buf: Vec<u8>,
}

fn push_bounded(q: &mut VecDeque<Vec<u8>>, p: Vec<u8>) {
    if q.len() >= MAX_QUEUE {
        q.pop_front();
    }
    q.push_back(p);
}

fn track(side: &mut Side, ep: &mut Endpoint, ev: Event) {
    match ev {
        Event::SessionOpened { session, .. } if !side.open.contains(&session) => {
            side.open.push(session);
        }
        Event::SessionClosed { session, .. } | Event::SessionFailed { session, .. } => {
            side.open.retain(|s| *s != session);
            if side.flow.is_some_and(|(s, _)| s == session) {
                side.flow = None;
            }
        }
        Event::Flow {
            session,
            event: FlowEvent::Message { data, .. },
        } => ep.recycle(session, data),
        _ => {}
    }
}

impl Harness {
    fn new(flags: u8) -> Harness {
        let k = keys();
        let now = Instant::now();
        let mut acfg = EndpointConfig::new(k.a.clone(), k.name.clone(), member_secret());
        acfg.redirector = flags & 8 != 0;
        let bcfg = EndpointConfig::new(k.b.clone(), k.name.clone(), member_secret());
        let ccfg = EndpointConfig::new(k.c.clone(), k.name.clone(), other_secret());
        Harness {
            now,
            a: Endpoint::new(now, acfg, Rng::from_seed([1; 32])),
            b: Endpoint::new(now, bcfg, Rng::from_seed([2; 32])),
            c: Endpoint::new(now, ccfg, Rng::from_seed([3; 32])),
            a_addr: addr("192.0.2.1:4910"),
            b_addr: addr("192.0.2.2:4910"),
            c_addr: addr("198.51.100.3:4910"),
            strangers: [addr("203.0.113.9:1024"), addr("[2001:db8::9]:4910")],
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            c_to_a: VecDeque::new(),
            sa: Side::default(),
            sb: Side::default(),
            c_started: false,
            member: DefaultCipher::new(&member_secret(), &k.name),
            other: DefaultCipher::new(&other_secret(), &k.name),
            rng: Rng::from_seed([9; 32]),
            buf: vec![0u8; 2048],
        }
    }

    fn source(&self, sel: u8) -> SocketAddr {
        match sel & 3 {
            0 => self.b_addr,
            1 => self.strangers[0],
            2 => self.strangers[1],
            _ => self.c_addr,
        }
    }

    /// Drain every endpoint's transmits and events (str0m's rule: after
    /// every input, drain outputs).
    fn drain(&mut self) {
        let now = self.now;
        let mut n = 0;
        while let Some(t) = self.a.poll_transmit(now, &mut self.buf) {
            n += 1;
            assert!(n < MAX_DRAIN, "A: poll_transmit does not terminate");
            assert!(t.size <= self.buf.len());
            if t.destination == self.b_addr {
                push_bounded(&mut self.to_b, self.buf[..t.size].to_vec());
            }
        }
        n = 0;
        while let Some(t) = self.b.poll_transmit(now, &mut self.buf) {
            n += 1;
            assert!(n < MAX_DRAIN, "B: poll_transmit does not terminate");
            if t.destination == self.a_addr {
                push_bounded(&mut self.to_a, self.buf[..t.size].to_vec());
            }
        }
        n = 0;
        while let Some(t) = self.c.poll_transmit(now, &mut self.buf) {
            n += 1;
            assert!(n < MAX_DRAIN, "C: poll_transmit does not terminate");
            if t.destination == self.a_addr {
                push_bounded(&mut self.c_to_a, self.buf[..t.size].to_vec());
            }
        }
        while let Some(ev) = self.a.poll_event() {
            track(&mut self.sa, &mut self.a, ev);
        }
        while let Some(ev) = self.b.poll_event() {
            track(&mut self.sb, &mut self.b, ev);
        }
        while self.c.poll_event().is_some() {}
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        for ep in [&mut self.a, &mut self.b, &mut self.c] {
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
        }
        self.drain();
    }

    fn next_timer(&self) -> Option<Instant> {
        [&self.a, &self.b, &self.c]
            .iter()
            .filter_map(|e| e.poll_timeout())
            .min()
    }

    /// Deliver a datagram to A that did not authenticate and check that it
    /// created no session and opened none.
    fn unauthenticated_to_a(&mut self, from: SocketAddr, mut d: Vec<u8>) {
        let before: Vec<SessionId> = self.a.sessions().collect();
        self.a.handle_datagram(self.now, from, &mut d);
        let after: Vec<SessionId> = self.a.sessions().collect();
        for s in &after {
            assert!(
                before.contains(s),
                "a datagram that did not authenticate created session {s:?}"
            );
        }
        while let Some(ev) = self.a.poll_event() {
            assert!(
                !matches!(ev, Event::SessionOpened { .. }),
                "a datagram that did not authenticate opened a session: {ev:?}"
            );
            track(&mut self.sa, &mut self.a, ev);
        }
        self.drain();
    }

    fn unauthenticated_to_b(&mut self, from: SocketAddr, mut d: Vec<u8>) {
        let before: Vec<SessionId> = self.b.sessions().collect();
        self.b.handle_datagram(self.now, from, &mut d);
        for s in self.b.sessions() {
            assert!(
                before.contains(&s),
                "unauthenticated datagram created {s:?}"
            );
        }
        while let Some(ev) = self.b.poll_event() {
            assert!(!matches!(ev, Event::SessionOpened { .. }), "{ev:?}");
            track(&mut self.sb, &mut self.b, ev);
        }
        self.drain();
    }

    fn deliver_to_a(&mut self, from: SocketAddr, mut d: Vec<u8>) {
        self.a.handle_datagram(self.now, from, &mut d);
        self.drain();
    }

    fn deliver_to_b(&mut self, mut d: Vec<u8>) {
        self.b.handle_datagram(self.now, self.a_addr, &mut d);
        self.drain();
    }

    /// Run real traffic until both ends have an open session (bounded).
    fn handshake(&mut self, mode: u8) {
        let (bid, aid) = (self.b.node_id(), self.a.node_id());
        if mode & 1 != 0 {
            self.a
                .connect(self.now, Target::Node(bid), &[self.b_addr])
                .unwrap();
        }
        if mode & 2 != 0 {
            self.b
                .connect(self.now, Target::Node(aid), &[self.a_addr])
                .unwrap();
        }
        self.drain();
        for _ in 0..400 {
            if !self.sa.open.is_empty() && !self.sb.open.is_empty() {
                return;
            }
            if let Some(p) = self.to_a.pop_front() {
                self.deliver_to_a(self.b_addr, p);
            } else if let Some(p) = self.to_b.pop_front() {
                self.deliver_to_b(p);
            } else if let Some(t) = self.next_timer() {
                self.now = self.now.max(t);
                self.fire_timers();
            } else {
                break;
            }
        }
        panic!("handshake between two members did not complete (mode {mode})");
    }

    fn send(&mut self, from_a: bool, data: &[u8], rel: Reliability) {
        let (ep, side) = if from_a {
            (&mut self.a, &mut self.sa)
        } else {
            (&mut self.b, &mut self.sb)
        };
        if side.flow.is_none() {
            if let Some(&s) = side.open.first() {
                if let Ok(f) = ep.open_flow(s, b"fuzz", None) {
                    side.flow = Some((s, f));
                }
            }
        }
        if let Some((s, f)) = side.flow {
            let _ = ep.send(self.now, s, f, data, rel);
        }
        self.drain();
    }

    /// Seal `plain` as a startup packet with `cipher` under session id
    /// `sid` (RFC 7016 2.2.2, 2.2.3).
    fn seal(&mut self, member: bool, sid: u32, plain: &[u8]) -> Option<Vec<u8>> {
        let start = MULTIPLEX_HEADER_LEN + DEFAULT_HEADER_LEN;
        let mut d = vec![0u8; start + plain.len() + TAG_LEN];
        d[start..start + plain.len()].copy_from_slice(plain);
        let cipher = if member { &self.member } else { &self.other };
        let r = cipher
            .seal(
                &mut self.rng,
                &mut d[MULTIPLEX_HEADER_LEN..],
                DEFAULT_HEADER_LEN,
                plain.len(),
            )
            .ok()?;
        d.truncate(MULTIPLEX_HEADER_LEN + r.end);
        write_multiplex_header(&mut d, sid).ok()?;
        Some(d)
    }
}

/// Apply `(index, xor)` pairs; returns whether the packet changed.
fn mutate(p: &mut Vec<u8>, data: &[u8], truncate: bool) -> bool {
    let original = p.clone();
    if p.is_empty() {
        return false;
    }
    if truncate {
        if let Some(&t) = data.first() {
            let cut = usize::from(t) % p.len();
            p.truncate(p.len() - cut);
        }
    }
    for pair in data.chunks_exact(2) {
        let len = p.len();
        if len == 0 {
            break;
        }
        let i = usize::from(pair[0]) * 7 % len;
        p[i] ^= pair[1];
    }
    *p != original
}

fn not_member_drops(ep: &Endpoint) -> u64 {
    ep.stats()
        .drops
        .get(&DropReason::NotMember)
        .copied()
        .unwrap_or(0)
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, mut rest)) = input.split_first() else {
        return;
    };
    let mut h = Harness::new(flags);
    if flags & 3 != 0 {
        h.handshake(flags & 3);
        if flags & 4 != 0 {
            let msg = vec![0x5a; 3000];
            for _ in 0..3 {
                h.send(false, &msg, Reliability::Reliable);
            }
        }
    }
    while let [kind, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (data, next) = tail.split_at(len);
        rest = next;
        let p = kind >> 4;
        match kind & 0x0f {
            0 => {
                let from = h.source(p);
                h.unauthenticated_to_a(from, data.to_vec());
            }
            1 => {
                h.drain();
                if let Some(mut pkt) = h.to_a.pop_front() {
                    let changed = mutate(&mut pkt, data, p & 1 != 0);
                    let from = if p & 2 != 0 { h.strangers[0] } else { h.b_addr };
                    if changed {
                        h.unauthenticated_to_a(from, pkt);
                    } else {
                        h.deliver_to_a(from, pkt);
                    }
                }
            }
            2 => {
                let n = data.first().map_or(1, |c| usize::from(c % 16).max(1));
                for _ in 0..n {
                    let Some(pkt) = h.to_a.pop_front() else { break };
                    h.deliver_to_a(h.b_addr, pkt);
                }
            }
            3 => {
                let n = data.first().map_or(1, |c| usize::from(c % 16).max(1));
                for _ in 0..n {
                    let Some(pkt) = h.to_b.pop_front() else { break };
                    h.deliver_to_b(pkt);
                }
            }
            4 => {
                let step = match data {
                    [x, y, ..] => Duration::from_millis(u64::from(u16::from_be_bytes([*x, *y]))),
                    [x] => Duration::from_millis(u64::from(*x)),
                    [] => h
                        .next_timer()
                        .map_or(Duration::ZERO, |t| t.saturating_duration_since(h.now)),
                };
                h.now += step;
                h.fire_timers();
            }
            5 => {
                let rel = match p & 3 {
                    0 | 3 => Reliability::Reliable,
                    1 => Reliability::Deadline(Duration::from_millis(100)),
                    _ => Reliability::NoRetransmit,
                };
                h.send(p & 4 != 0, data, rel);
            }
            6 => {
                if !h.c_started {
                    h.c_started = true;
                    let _ = h.c.connect(h.now, Target::Any, &[h.a_addr]);
                    h.drain();
                }
                // A non-member's packets never authenticate, changed or not.
                if let Some(mut pkt) = h.c_to_a.pop_front() {
                    mutate(&mut pkt, data, false);
                    let from = h.c_addr;
                    h.unauthenticated_to_a(from, pkt);
                }
            }
            7 => {
                if let Some(d) = h.seal(false, 0, data) {
                    let before = not_member_drops(&h.a);
                    let from = h.c_addr;
                    h.unauthenticated_to_a(from, d);
                    assert_eq!(
                        not_member_drops(&h.a),
                        before + 1,
                        "a non-member startup packet must be dropped as NotMember"
                    );
                }
            }
            8 => {
                let sid = if p & 4 != 0 {
                    h.a.sessions().next().map_or(0, |s| s.0)
                } else {
                    0
                };
                if let Some(d) = h.seal(true, sid, data) {
                    let from = h.source(p);
                    h.deliver_to_a(from, d);
                }
            }
            9 => {
                let now = h.now;
                let first = h.sa.open.first().copied();
                match p % 6 {
                    0 => {
                        let _ = h.a.connect(now, Target::Node(h.b.node_id()), &[h.b_addr]);
                    }
                    1 => {
                        let _ = h.a.connect(now, Target::Any, &[h.strangers[0]]);
                    }
                    2 | 3 => {
                        if let Some(s) = first.or_else(|| h.a.sessions().next()) {
                            h.a.close(now, s, p % 6 == 3);
                        }
                    }
                    4 => {
                        if let Some((s, f)) = h.sa.flow {
                            h.a.close_flow(s, f);
                        }
                    }
                    _ => h.a.close_all(now, p & 8 != 0),
                }
                h.drain();
            }
            10 => {
                h.drain();
                if let Some(mut pkt) = h.to_b.pop_front() {
                    if mutate(&mut pkt, data, p & 1 != 0) {
                        let from = h.a_addr;
                        h.unauthenticated_to_b(from, pkt);
                    } else {
                        h.deliver_to_b(pkt);
                    }
                }
            }
            _ => {}
        }
    }
});
