//! Unverified destinations (`docs/limits.md` "Unverified destinations"):
//! what this node sends, of its own accord, to IP addresses it never had
//! authenticated traffic from.
//!
//! Members tell the node where other members are (gossip, `Moved`), and
//! a member may lie: an address it names can be anyone's. Whatever made
//! the node send there — an IHello or IIKeying to a candidate, a birthday
//! spray or extra-socket punch, an address-mobility probe — every such
//! datagram to an IP that is not *verified* takes a token from that IP's
//! bucket ([`DEFAULT_BUDGET`]: enough for one birthday round towards a
//! genuine member) and is dropped without one (counted as the node-wide
//! drop [`DROP_REASON`]). An IP is verified once a session authenticated
//! traffic from it: a session opened or moved there (the remote address
//! of a direct path). Introducers and STUN servers (configured) are exempt;
//! answers to datagrams received (`TransmitKind::Answer`) and session
//! traffic on its own path are not budgeted here (the endpoint's
//! pre-authentication limits bound the answers).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use ringlan_tunnel::{BucketTable, Budget, Rng};

/// The per-IP budget: 1,100 datagrams at once (one birthday round of
/// 1,024 probes or 256 extra sockets, plus the IHellos of an attempt),
/// then 4 per second (full again after about 4.6 minutes).
pub const DEFAULT_BUDGET: Budget = Budget::new(1100.0, 4.0);
/// Destination IPs with a bucket (a fixed table, second-chance eviction).
pub const BUCKETS: usize = 4096;
/// Verified IPs remembered (the least recently verified is forgotten).
pub const VERIFIED: usize = 4096;
/// The node-wide drop reason (`ringlan status`, `ringlan_drops_total`).
pub const DROP_REASON: &str = "unverified_ip_budget";

/// The budget on unverified destinations.
pub(crate) struct Reach {
    buckets: BucketTable<IpAddr>,
    /// Verified IPs and when they were last verified.
    verified: HashMap<IpAddr, Instant>,
    exempt: Vec<IpAddr>,
    /// Datagrams dropped for want of a token.
    pub(crate) dropped: u64,
}

impl Reach {
    pub(crate) fn new(budget: Budget, exempt: &[IpAddr], rng: &mut Rng) -> Reach {
        Reach {
            buckets: BucketTable::new(BUCKETS, budget, rng),
            verified: HashMap::new(),
            exempt: exempt.iter().map(|ip| ip.to_canonical()).collect(),
            dropped: 0,
        }
    }

    /// A session authenticated traffic from `ip`.
    pub(crate) fn verified(&mut self, now: Instant, ip: IpAddr) {
        let ip = ip.to_canonical();
        if self.verified.len() >= VERIFIED && !self.verified.contains_key(&ip) {
            // Rare (a session opening on a new IP) and bounded: a scan.
            if let Some(oldest) = self
                .verified
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| *k)
            {
                self.verified.remove(&oldest);
            }
        }
        self.verified.insert(ip, now);
    }

    /// Whether an unsolicited datagram may go to `ip` now (a token taken
    /// if it is not verified); counts a refusal.
    pub(crate) fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.verified.contains_key(&ip) || self.exempt.contains(&ip) {
            return true;
        }
        let ok = self.buckets.take(now, ip);
        if !ok {
            self.dropped += 1;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unverified_ips_get_their_budget_verified_and_exempt_ones_everything() {
        let t0 = Instant::now();
        let mut rng = Rng::from_seed([7; 32]);
        let mut r = Reach::new(Budget::new(10.0, 2.0), &[ip("198.51.100.7")], &mut rng);
        let victim = ip("192.0.2.1");
        assert_eq!((0..100).filter(|_| r.allow(t0, victim)).count(), 10);
        assert_eq!(r.dropped, 90);
        // IPv4-mapped IPv6 is the same IP.
        assert!(!r.allow(t0, ip("::ffff:192.0.2.1")));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| r.allow(t1, victim)).count(), 2);
        // Another IP has its own bucket; introducers and verified IPs none.
        assert!(r.allow(t1, ip("192.0.2.2")));
        assert!((0..100).all(|_| r.allow(t1, ip("::ffff:198.51.100.7"))));
        r.verified(t1, ip("::ffff:192.0.2.1"));
        assert!((0..100).all(|_| r.allow(t1, victim)));
    }

    #[test]
    fn the_verified_set_is_bounded_oldest_out() {
        let t0 = Instant::now();
        let mut rng = Rng::from_seed([7; 32]);
        let mut r = Reach::new(Budget::new(0.0, 0.0), &[], &mut rng);
        for k in 0..=VERIFIED as u32 {
            r.verified(
                t0 + Duration::from_millis(u64::from(k)),
                IpAddr::from(k.to_be_bytes()),
            );
        }
        assert_eq!(r.verified.len(), VERIFIED);
        assert!(!r.allow(t0, IpAddr::from(0u32.to_be_bytes())));
        assert!(r.allow(t0, IpAddr::from(1u32.to_be_bytes())));
    }
}
