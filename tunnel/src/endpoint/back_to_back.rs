//! Test support: two endpoints wired back to back on a virtual clock,
//! with the test deciding per datagram whether it arrives and from which
//! address the receiver sees it (paths that die, NATs, black holes).

use std::net::SocketAddr;
use std::time::Instant;

use super::{Endpoint, Event};
use crate::NodeId;

/// Which end sent a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    A,
    B,
}

/// Run `a` and `b` until each has reported exactly one opened session
/// or nothing is left to do, for at most `turns` turns. `wire(now, end,
/// destination)` says from which address the other end receives a
/// datagram `end` sent to `destination`, or `None` if it is lost;
/// `each_turn(now, a, b)` runs after every exchange (to cut a path, or
/// to open a session later). Every opened session must name the other
/// end as its peer. Returns the sessions opened on each side (`now` is
/// left at the clock's last reading).
pub(crate) fn run(
    now: &mut Instant,
    a: &mut Endpoint,
    b: &mut Endpoint,
    turns: usize,
    wire: impl FnMut(Instant, End, SocketAddr) -> Option<SocketAddr>,
    mut each_turn: impl FnMut(Instant, &mut Endpoint, &mut Endpoint),
) -> (usize, usize) {
    let (aid, bid) = (a.node_id(), b.node_id());
    let mut opened = (0, 0);
    run_until(now, a, b, turns, wire, |now, a, b| {
        each_turn(now, a, b);
        opened.0 += count_opened(a, bid);
        opened.1 += count_opened(b, aid);
        opened == (1, 1)
    });
    opened
}

/// Run `a` and `b` as [`run`] does until `done(now, a, b)`, called after
/// every exchange, says so or nothing is left to do, for at most `turns`
/// turns. Returns whether `done` said so.
pub(crate) fn run_until(
    now: &mut Instant,
    a: &mut Endpoint,
    b: &mut Endpoint,
    turns: usize,
    mut wire: impl FnMut(Instant, End, SocketAddr) -> Option<SocketAddr>,
    mut done: impl FnMut(Instant, &mut Endpoint, &mut Endpoint) -> bool,
) -> bool {
    let mut buf = vec![0u8; 2048];
    for _ in 0..turns {
        let sent_a = deliver(*now, (End::A, &mut *a), &mut *b, &mut wire, &mut buf);
        let sent_b = deliver(*now, (End::B, &mut *b), &mut *a, &mut wire, &mut buf);
        let moved = sent_a || sent_b;
        if done(*now, a, b) {
            return true;
        }
        if !moved {
            let Some(next) = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
            else {
                return false;
            };
            *now = (*now).max(next);
            a.handle_timeout(*now);
            b.handle_timeout(*now);
        }
    }
    false
}

/// Hand everything `from` has to send to `to` where `wire` lets it
/// through; whether anything was sent.
fn deliver(
    now: Instant,
    (end, from): (End, &mut Endpoint),
    to: &mut Endpoint,
    wire: &mut impl FnMut(Instant, End, SocketAddr) -> Option<SocketAddr>,
    buf: &mut [u8],
) -> bool {
    let mut sent = false;
    while let Some(t) = from.poll_transmit(now, buf) {
        sent = true;
        if let Some(src) = wire(now, end, t.destination) {
            let mut d = buf[..t.size].to_vec();
            to.handle_datagram(now, src, &mut d);
        }
    }
    sent
}

fn count_opened(ep: &mut Endpoint, expected_peer: NodeId) -> usize {
    let mut n = 0;
    while let Some(e) = ep.poll_event() {
        if let Event::SessionOpened { peer, .. } = e {
            assert_eq!(peer, expected_peer);
            n += 1;
        }
    }
    n
}

/// Two endpoints of network `network`, the first of which prevails over
/// the second in glare (RFC 7016 3.5.1.3), from key seeds `seeds`.
pub(crate) fn glare_pair(network: &str, seeds: [u8; 2], t0: Instant) -> (Endpoint, Endpoint) {
    use crate::crypto::{certificate_overrides, Identity, NetworkName, NetworkSecret};
    use crate::endpoint::EndpointConfig;
    use crate::Rng;

    let name = NetworkName::new(network).unwrap();
    let mk = |seed: u8| {
        let id = Identity::from_secret_key_bytes([seed; 32], &name);
        EndpointConfig::new(id, name.clone(), NetworkSecret::from_bytes([9; 32]))
    };
    let (ca, cb) = (mk(seeds[0]), mk(seeds[1]));
    let (cw, cl) = if certificate_overrides(cb.identity.certificate(), ca.identity.certificate()) {
        (ca, cb)
    } else {
        (cb, ca)
    };
    let w = Endpoint::new(t0, cw, Rng::from_seed([seeds[0]; 32]));
    let l = Endpoint::new(t0, cl, Rng::from_seed([seeds[1]; 32]));
    (w, l)
}
