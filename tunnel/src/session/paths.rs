//! The session's path (DESTADDR, RFC 7016 3.5): address mobility
//! (3.5.4.2: a packet from a new address starts a verification, a verified
//! Ping Reply moves the session), probes of other paths, immediate moves
//! onto a path this end set up ([`Session::migrate`], relayed routes), stall
//! detection, and the PMTU discovery bounds of each kind of path (IPv4,
//! IPv6, relayed route).

use std::net::SocketAddr;
use std::time::Instant;

use super::send::Content;
use super::timer::Timer;
use super::Session;
use super::SessionState;
use crate::path::is_route_addr;
use crate::pmtu::{Pmtu, PmtuConfig};
use crate::route_table::ROUTE_OVERHEAD;

/// Address-mobility verification (RFC 7016 3.5.4.2).
pub(super) struct Mobility {
    pub(super) secret: [u8; 32],
    pub(super) tx_ts: Option<Instant>,
    pub(super) rx_ts: u64,
    /// A check ping to send to this address.
    pub(super) pending: Option<SocketAddr>,
}

/// PMTU discovery bounds for a path to `dest`. A relayed route
/// ([`crate::Path::Route`]) adds [`ROUTE_OVERHEAD`]
/// bytes on every hop, whose underlay may be IPv4 or IPv6.
pub(super) fn pmtu_config(dest: SocketAddr, max_datagram: usize) -> PmtuConfig {
    let base = if is_route_addr(&dest) {
        PmtuConfig {
            max: crate::pmtu::MAX_IPV6_UDP - ROUTE_OVERHEAD,
            ..PmtuConfig::ipv6()
        }
    } else if dest.is_ipv4() {
        PmtuConfig::ipv4()
    } else {
        PmtuConfig::ipv6()
    };
    // Never above the family's 1500-byte-link maximum (IPv6 headers are 20
    // bytes longer than IPv4's): frames are cut to the path size and sent
    // in UDP GSO batches, which the kernel refuses whole (EMSGSIZE) when a
    // segment exceeds the link MTU.
    let max = max_datagram.max(crate::pmtu::BASE_SIZE);
    PmtuConfig {
        max: max.min(base.max),
        ..base
    }
}

/// What kind of path an address is, for PMTU purposes.
fn path_class(dest: &SocketAddr) -> u8 {
    if is_route_addr(dest) {
        2
    } else if dest.is_ipv4() {
        0
    } else {
        1
    }
}

impl Session {
    /// Send the address-mobility check Ping (RFC 7016 3.5.4.2) to `addr`
    /// with the next transmission, regardless of the once-a-second limit:
    /// a verified Ping Reply from `addr` then moves DESTADDR there. Used
    /// when a third party (a forwarder, RFC 7016 3.5.1.5) reports that the
    /// far end is now reachable at `addr`. False unless the session is OPEN.
    /// It does not count against that limit either: a probe must not keep
    /// the session from checking a new address its peer's packets actually
    /// come from (a relayed session probes its peer's direct addresses
    /// every few seconds, and the birthday punch that succeeds shows up as
    /// exactly such packets).
    pub fn probe_path(&mut self, _now: Instant, addr: SocketAddr) -> bool {
        if self.state != SessionState::Open {
            return false;
        }
        self.mobility.pending = Some(addr);
        true
    }

    /// Change DESTADDR. A change of path kind (IPv4, IPv6, relayed route)
    /// restarts PMTU discovery from its base size for the new path.
    pub fn set_dest(&mut self, now: Instant, addr: SocketAddr) {
        if addr == self.dest {
            return;
        }
        let kind_changed = path_class(&addr) != path_class(&self.dest);
        // Another address is another path (a route's address names the
        // route); a NAT's new port for the same address is not.
        if addr.ip() != self.dest.ip() {
            self.cc.path_changed();
        }
        self.dest = addr;
        if kind_changed {
            self.pmtu = Pmtu::new(now, pmtu_config(addr, self.cfg.max_datagram));
            self.pending_pmtu_probe = None;
            // After DESTADDR: a route rounds plain texts for its hop tags.
            self.pmtu_changed();
        }
        self.last_recv_dest = now;
        self.dest_since = now;
        self.stats.address_changes += 1;
        self.flows.reacknowledge();
        self.flows.path_changed(now);
        // Packets that went out on the old path say nothing about the new
        // one (the early stall check would count them against it).
        self.forget_stall_tracking();
    }

    /// Move the session onto the path `addr` at once, without the
    /// verification of RFC 7016 3.5.4.2: for a path this end set up itself
    /// (a relayed route through members it authenticated). Anything in
    /// flight on the old path is retransmitted on the new one and a Ping
    /// goes out so the far end sees the new path. False unless OPEN.
    pub fn migrate(&mut self, now: Instant, addr: SocketAddr) -> bool {
        if self.state != SessionState::Open {
            return false;
        }
        self.set_dest(now, addr);
        self.mobility.pending = None;
        self.silent_rtos = 0;
        self.stalled = false;
        self.stall_reported = false;
        if let Some(ts) = self.ts.as_mut() {
            ts.rtt.reset_backoff();
        }
        if self.flows.outstanding_bytes() > 0 {
            // What was in flight on the old path is lost: resend it now
            // (RFC 7016 3.6.2.6 as for a timeout, without counting one
            // against the new path).
            self.flows.on_retransmit_timeout(now);
            self.timers.set(Timer::Rto, now + self.ert0());
        }
        self.ping_outstanding = None;
        self.arm_idle();
        self.timers.set(Timer::Keepalive, now);
        true
    }

    /// A sealed datagram holding one Ping, for probing paths the session
    /// does not use (birthday punching of a relayed session, `punch`): the
    /// far end answers on the path it arrived by and, as for any packet
    /// from a new address, starts the mobility check of RFC 7016 3.5.4.2.
    /// The same bytes may go to many addresses; the far end accepts one
    /// copy (replay window). `None` unless OPEN.
    pub fn probe_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.state != SessionState::Open {
            return None;
        }
        self.build(now, buf, self.dest, Content::Ping)
            .map(|(_, n)| n)
    }

    /// Whether the path stalled since the last call: data went unanswered
    /// through [`STALL_AFTER_SILENT_RTOS`] timeouts with nothing received.
    pub fn take_stalled(&mut self) -> bool {
        std::mem::take(&mut self.stalled)
    }

    pub(super) fn ms_since_created(&self, now: Instant) -> u64 {
        // +1 so that the first check (at creation) is > the initial rx_ts 0.
        now.saturating_duration_since(self.created).as_millis() as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::pmtu_config;

    /// An IPv6 path never gets probed or filled above 1452 bytes (a
    /// 1500-byte link minus 40 + 8), even with the IPv4 default for the
    /// largest datagram: full-size frames in a GSO batch over IPv6 were
    /// refused by the kernel whole.
    #[test]
    fn the_largest_datagram_follows_the_family() {
        let v4 = "192.0.2.1:4910".parse().unwrap();
        let v6 = "[2001:db8::1]:4910".parse().unwrap();
        assert_eq!(pmtu_config(v4, 1472).max, crate::pmtu::MAX_IPV4_UDP);
        assert_eq!(pmtu_config(v6, 1472).max, crate::pmtu::MAX_IPV6_UDP);
        assert_eq!(pmtu_config(v6, 1300).max, 1300);
        assert_eq!(pmtu_config(v4, 100).max, crate::pmtu::BASE_SIZE);
    }
}
