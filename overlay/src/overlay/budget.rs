//! Budgets on what authenticated peers can make this node do
//! (`docs/limits.md`, "Budgets after authentication"). A member is
//! authenticated but not trusted: its `Moved` reports make this node send
//! probes to addresses nobody verified, and its gossip fills the member
//! table that the link policy opens sessions from. Each budget is a token
//! bucket (`burst` at once, then `rate` per second) in a bounded table, so
//! neither one peer nor many can make the node send more than the budget
//! to any address, nor hold more than the budget in memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A token bucket's size (`burst` at once, `rate` per second): the same
/// type as the transport's pre-authentication budgets.
pub use ringlan_tunnel::Budget;

/// How long an empty bucket of budget `b` takes to fill again.
fn refill_time(b: Budget) -> Duration {
    if b.rate > 0.0 {
        Duration::from_secs_f64(b.burst / b.rate)
    } else {
        Duration::MAX
    }
}

/// The budgets on authenticated peers (`Config::budgets`).
#[derive(Debug, Clone, PartialEq)]
pub struct Budgets {
    /// `Moved` reports acted on per sending peer.
    pub moved_per_peer: Budget,
    /// `ProbePath` actions per destination IP, whatever asked for them.
    pub probes_per_ip: Budget,
    /// Destination IPs tracked for `probes_per_ip`; a new IP beyond this
    /// (with every tracked IP's bucket still refilling) is not probed.
    pub probe_ips: usize,
    /// Member records (`Ring`, `Members`, `MemberJoined`, `LookupReply`)
    /// accepted per sending link.
    pub gossip_per_peer: Budget,
    /// Members known only from gossip (no link to them) kept at once;
    /// gossip naming a new member beyond this is dropped.
    pub unverified_members: usize,
    /// Flood and routed frames whose origin signature this node verifies,
    /// per sending link (checked before the verification: an Ed25519
    /// verification costs tens of microseconds).
    pub verifies_per_link: Budget,
    /// Broadcasts (floods) accepted per origin, after its signature
    /// verified.
    pub broadcasts_per_origin: Budget,
    /// Origins (of flood and routed frames) whose key, duplicate window
    /// and broadcast budget are kept at once; least recently used first
    /// out.
    pub origins: usize,
    /// Origins evicted from a full `origins` table to make room for a new
    /// one, per link that brought it; past it the new origin's frames are
    /// delivered and forwarded without being remembered.
    pub origin_evictions_per_link: Budget,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            moved_per_peer: Budget::new(16.0, 2.0),
            probes_per_ip: Budget::new(4.0, 1.0),
            probe_ips: 1024,
            gossip_per_peer: Budget::new(256.0, 32.0),
            unverified_members: 1024,
            verifies_per_link: Budget::new(2000.0, 1000.0),
            broadcasts_per_origin: Budget::new(512.0, 100.0),
            origins: 4096,
            origin_evictions_per_link: Budget::new(64.0, 32.0),
        }
    }
}

/// One token bucket (kept by its owner, e.g. per link).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn full(now: Instant, b: Budget) -> Bucket {
        Bucket {
            tokens: b.burst,
            last: now,
        }
    }

    /// Take `n` tokens if the bucket holds them.
    pub(super) fn take(&mut self, now: Instant, b: Budget, n: f64) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * b.rate).min(b.burst);
        self.last = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Token buckets by key, at most `cap` of them. A key whose bucket has
/// had time to fill again is forgotten when the table is full (forgetting
/// it loses nothing); if none has, a new key is refused: the table never
/// grows past `cap`, and an attacker cycling keys gets nothing new.
#[derive(Debug)]
pub(super) struct Buckets<K> {
    budget: Budget,
    cap: usize,
    map: HashMap<K, Bucket>,
}

impl<K: Copy + Eq + Hash> Buckets<K> {
    pub(super) fn new(budget: Budget, cap: usize) -> Self {
        Buckets {
            budget,
            cap,
            map: HashMap::new(),
        }
    }

    /// Take one token from `k`'s bucket.
    pub(super) fn take(&mut self, now: Instant, k: K) -> bool {
        let b = self.budget;
        if !self.map.contains_key(&k) && self.map.len() >= self.cap {
            // Amortized: a sweep frees every full bucket, and only runs
            // when the table is full.
            let full = refill_time(b);
            self.map
                .retain(|_, x| now.saturating_duration_since(x.last) < full);
            if self.map.len() >= self.cap {
                return false;
            }
        }
        self.map
            .entry(k)
            .or_insert(Bucket {
                tokens: b.burst,
                last: now,
            })
            .take(now, b, 1.0)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate_and_the_table_stays_bounded() {
        let t0 = Instant::now();
        let mut b = Buckets::new(Budget::new(4.0, 2.0), 8);
        assert_eq!((0..10).filter(|_| b.take(t0, 1u32)).count(), 4);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| b.take(t1, 1u32)).count(), 2);
        // Eight keys fill the table; a ninth is refused while every
        // bucket is still refilling, admitted once one has refilled.
        for k in 2..9u32 {
            assert!(b.take(t1, k));
        }
        assert!(!b.take(t1, 100));
        assert_eq!(b.len(), 8);
        let t2 = t1 + Duration::from_secs(2);
        assert!(b.take(t2, 100));
        assert!(b.len() <= 8);
    }
}
