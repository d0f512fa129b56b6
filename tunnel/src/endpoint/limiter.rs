//! Pre-authentication limits: how much work the endpoint does for
//! datagrams that no session authenticates — STUN Binding requests and
//! RTMFP session startup (IHello, IIKeying; RFC 7016 3.5.1.2 and 5.2
//! "denial of service"). Answering costs a cookie MAC, a signature check
//! or a reply, and the source address of such a datagram is not proven,
//! so a flood (spoofed or not) must buy neither unbounded work nor a
//! lock-out of anyone else. `docs/limits.md` is the user-facing reference.
//!
//! The budgets, each a token bucket (`burst` datagrams at once, `rate`
//! per second; defaults in [`PreAuthLimits::default`]):
//!
//! - **Two kinds, separate budgets.** STUN ([`Kind::Stun`]) and RTMFP
//!   startup ([`Kind::Startup`]) never share a bucket: a flood of 20-byte
//!   STUN requests cannot stop a node from joining, nor the reverse.
//! - **Per prefix.** Sources aggregate by /24 (IPv4) and /64 (IPv6), the
//!   smallest block one customer usually gets: an attacker with a /64 has
//!   one bucket, not 2^64. IPv4-mapped IPv6 sources count as IPv4. Route
//!   addresses (`crate::path`, all in `100::/64`) count per route.
//! - **Global, per kind.** Every answer of a kind also takes a token from
//!   one bucket for the whole endpoint: spoofing from many prefixes bounds
//!   the total work and reflection. A prefix that is out of tokens does not
//!   touch the global bucket, so one noisy prefix cannot drain it.
//! - **Peer addresses.** A datagram from the exact address (IP and port)
//!   where an OPEN session's far end currently is gets its own bucket,
//!   outside the prefix and global budgets: an off-path attacker spoofing a
//!   member's IP (it cannot guess the port of the member's NAT mapping)
//!   cannot lock that member out of new handshakes through this endpoint.
//!   Session traffic itself (session id != 0) never comes here at all.
//! - **Forwarded IHellos.** An FIHello (RFC 7016 3.5.1.5) arrives on an
//!   open session but asks for an RHello to the reply address it names,
//!   which nobody has verified: a forwarder (or whoever feeds it spoofed
//!   IHellos) could otherwise aim our RHellos anywhere. Each FIHello first
//!   takes a token from its forwarding peer's bucket (refused:
//!   [`Refused::Forwarder`]), then is counted like an IHello from the reply
//!   address: that address's startup prefix (or peer allowance) and the
//!   global startup budget. So RHellos towards one prefix, direct and
//!   forwarded together, stay within the prefix's startup budget.
//!
//! The tables are fixed-size ([`BucketTable`]): a keyed hash picks a set of
//! [`WAYS`] slots; a miss takes an empty slot, a slot whose bucket has
//! refilled (forgetting it loses nothing), or evicts by second chance
//! (CLOCK) inside the set. Each datagram costs at most `2 * WAYS` slot
//! probes whatever the table holds; nothing ever scans the table. A new
//! entry starts with a full bucket and unreferenced, so a flood of one-off
//! spoofed sources evicts itself before it evicts sources seen twice.
//! Evicting a drained bucket refills it: that is the price of a fixed
//! table, and why the global budget exists.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::path::route_id_of;
use crate::{NodeId, Rng};

/// Slots per hash set: the most a lookup probes (twice, with eviction).
pub const WAYS: usize = 4;

/// A token bucket's size: up to `burst` datagrams at once, refilled at
/// `rate` per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub burst: f64,
    pub rate: f64,
}

impl Budget {
    pub const fn new(burst: f64, rate: f64) -> Budget {
        Budget { burst, rate }
    }
}

/// Every pre-authentication budget of an endpoint (`docs/limits.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct PreAuthLimits {
    /// STUN Binding requests answered per source prefix.
    pub stun_per_prefix: Budget,
    /// STUN Binding requests answered in total.
    pub stun_global: Budget,
    /// IHellos answered and IIKeyings processed per source prefix.
    pub startup_per_prefix: Budget,
    /// IHellos answered and IIKeyings processed in total.
    pub startup_global: Budget,
    /// Startup packets and STUN requests from the exact address of an OPEN
    /// session's peer (each such address its own bucket).
    pub peer_address: Budget,
    /// Prefix buckets kept per kind (rounded up to a power of two, at
    /// least 4: one set).
    pub prefix_slots: usize,
    /// Peer-address buckets kept.
    pub peer_slots: usize,
    /// FIHellos answered per forwarding peer (before the startup budgets
    /// of the reply address).
    pub fihello_per_forwarder: Budget,
    /// Forwarder buckets kept.
    pub forwarder_slots: usize,
}

impl Default for PreAuthLimits {
    fn default() -> Self {
        PreAuthLimits {
            stun_per_prefix: Budget::new(16.0, 8.0),
            stun_global: Budget::new(512.0, 1024.0),
            startup_per_prefix: Budget::new(64.0, 32.0),
            startup_global: Budget::new(512.0, 512.0),
            peer_address: Budget::new(32.0, 16.0),
            prefix_slots: 4096,
            peer_slots: 1024,
            fihello_per_forwarder: Budget::new(32.0, 16.0),
            forwarder_slots: 256,
        }
    }
}

/// What a pre-authentication datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A STUN Binding request (RFC 8489).
    Stun,
    /// An RTMFP startup chunk: IHello, or IIKeying (RFC 7016 3.5.1).
    Startup,
}

/// Which budget refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Prefix(Kind),
    Global(Kind),
    PeerAddress,
    /// An FIHello over its forwarding peer's budget.
    Forwarder,
}

/// Counters of one bucket table (for tests and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Slots in the table.
    pub capacity: usize,
    /// Slots in use.
    pub entries: usize,
    /// Lookups (one per datagram that reached the table).
    pub lookups: u64,
    /// Slots examined, over all lookups (at most `2 * WAYS` per lookup).
    pub probes: u64,
    /// Entries replaced while their bucket was not yet full again.
    pub evictions: u64,
}

/// Counters of every pre-authentication table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreAuthStats {
    pub stun: TableStats,
    pub startup: TableStats,
    pub peer: TableStats,
    pub forwarder: TableStats,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(now: Instant, b: Budget) -> Bucket {
        Bucket {
            tokens: b.burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant, b: Budget) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * b.rate).min(b.burst);
        self.last = now;
    }

    fn is_full(&self, now: Instant, b: Budget) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + dt * b.rate >= b.burst
    }

    fn take(&mut self, now: Instant, b: Budget) -> bool {
        self.refill(now, b);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Slot<K> {
    key: K,
    bucket: Bucket,
    referenced: bool,
}

/// A fixed-size, set-associative table of token buckets with O(1) lookup
/// and second-chance eviction (see the module doc). Also the node core's
/// per-destination budget (`docs/limits.md` "Unverified destinations").
pub struct BucketTable<K> {
    slots: Vec<Option<Slot<K>>>,
    /// CLOCK hand of each set.
    hands: Vec<u8>,
    /// Secret hash key, so an attacker cannot aim at one set.
    key: [u64; 2],
    budget: Budget,
    stats: TableStats,
}

impl<K: Copy + Eq + Hash> BucketTable<K> {
    /// At least `slots` buckets of `budget` (rounded up to whole sets of
    /// [`WAYS`], a power of two of them); `rng` keys the hash.
    pub fn new(slots: usize, budget: Budget, rng: &mut Rng) -> Self {
        let sets = slots.div_ceil(WAYS).max(1).next_power_of_two();
        BucketTable {
            slots: (0..sets * WAYS).map(|_| None).collect(),
            hands: vec![0; sets],
            key: [rng.u64(), rng.u64()],
            budget,
            stats: TableStats {
                capacity: sets * WAYS,
                ..TableStats::default()
            },
        }
    }

    fn set_of(&self, k: &K) -> usize {
        // SipHash over (secret, key): a keyed hash without a thread RNG.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.key.hash(&mut h);
        k.hash(&mut h);
        (h.finish() as usize) & (self.hands.len() - 1)
    }

    /// The bucket of `k`, inserted full if absent: at most `2 * WAYS`
    /// probes.
    fn bucket(&mut self, now: Instant, k: K) -> &mut Bucket {
        self.stats.lookups += 1;
        let set = self.set_of(&k);
        let base = set * WAYS;
        let mut free = None;
        for i in base..base + WAYS {
            self.stats.probes += 1;
            match &self.slots[i] {
                Some(s) if s.key == k => {
                    let s = self.slots[i].as_mut().expect("slot checked above");
                    s.referenced = true;
                    return &mut s.bucket;
                }
                Some(s) if free.is_none() && s.bucket.is_full(now, self.budget) => free = Some(i),
                None if free.is_none() => free = Some(i),
                None => {}
                Some(_) => {}
            }
        }
        let i = match free {
            Some(i) => {
                if self.slots[i].is_none() {
                    self.stats.entries += 1;
                }
                i
            }
            None => {
                // Second chance: clear referenced bits until an
                // unreferenced slot comes under the hand (within 2 * WAYS).
                let mut hand = usize::from(self.hands[set]);
                let victim = loop {
                    self.stats.probes += 1;
                    let i = base + hand % WAYS;
                    hand = (hand + 1) % WAYS;
                    match &mut self.slots[i] {
                        Some(s) if s.referenced => s.referenced = false,
                        _ => break i,
                    }
                };
                self.hands[set] = hand as u8;
                self.stats.evictions += 1;
                victim
            }
        };
        let slot = self.slots[i].insert(Slot {
            key: k,
            bucket: Bucket::full(now, self.budget),
            referenced: false,
        });
        &mut slot.bucket
    }

    /// Take a token from `k`'s bucket (a new key starts full).
    pub fn take(&mut self, now: Instant, k: K) -> bool {
        let b = self.budget;
        self.bucket(now, k).take(now, b)
    }

    pub fn stats(&self) -> TableStats {
        self.stats
    }
}

/// The key of a source's prefix: /24 for IPv4, /64 for IPv6, the whole
/// address for a route (`crate::path`).
fn prefix_of(from: SocketAddr) -> IpAddr {
    if route_id_of(&from).is_some() {
        return from.ip();
    }
    match from.ip().to_canonical() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) & 0xffff_ff00).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & !u128::from(u64::MAX)).into()),
    }
}

struct KindLimiter {
    prefixes: BucketTable<IpAddr>,
    global: Bucket,
    global_budget: Budget,
}

impl KindLimiter {
    fn new(now: Instant, per_prefix: Budget, global: Budget, slots: usize, rng: &mut Rng) -> Self {
        KindLimiter {
            prefixes: BucketTable::new(slots, per_prefix, rng),
            global: Bucket::full(now, global),
            global_budget: global,
        }
    }

    fn allow(&mut self, now: Instant, kind: Kind, from: SocketAddr) -> Result<(), Refused> {
        let budget = self.prefixes.budget;
        let prefix = self.prefixes.bucket(now, prefix_of(from));
        prefix.refill(now, budget);
        if prefix.tokens < 1.0 {
            return Err(Refused::Prefix(kind));
        }
        if !self.global.take(now, self.global_budget) {
            return Err(Refused::Global(kind));
        }
        prefix.tokens -= 1.0;
        Ok(())
    }
}

/// The endpoint's pre-authentication limiter (module doc).
pub(super) struct PreAuthLimiter {
    stun: KindLimiter,
    startup: KindLimiter,
    peers: BucketTable<SocketAddr>,
    forwarders: BucketTable<NodeId>,
}

impl PreAuthLimiter {
    pub(super) fn new(now: Instant, l: &PreAuthLimits, rng: &mut Rng) -> Self {
        PreAuthLimiter {
            stun: KindLimiter::new(now, l.stun_per_prefix, l.stun_global, l.prefix_slots, rng),
            startup: KindLimiter::new(
                now,
                l.startup_per_prefix,
                l.startup_global,
                l.prefix_slots,
                rng,
            ),
            peers: BucketTable::new(l.peer_slots, l.peer_address, rng),
            forwarders: BucketTable::new(l.forwarder_slots, l.fihello_per_forwarder, rng),
        }
    }

    /// May the endpoint spend work on a `kind` datagram from `from`?
    /// `peer` says `from` is where an OPEN session's far end is.
    pub(super) fn allow(
        &mut self,
        now: Instant,
        kind: Kind,
        from: SocketAddr,
        peer: bool,
    ) -> Result<(), Refused> {
        if peer {
            return if self.peers.take(now, from) {
                Ok(())
            } else {
                Err(Refused::PeerAddress)
            };
        }
        match kind {
            Kind::Stun => self.stun.allow(now, kind, from),
            Kind::Startup => self.startup.allow(now, kind, from),
        }
    }

    /// May the endpoint answer an FIHello that `forwarder` sent, naming
    /// `reply` as the initiator's address? `peer` says `reply` is where an
    /// OPEN session's far end is. The forwarder's token is spent even if
    /// the reply address's budget then refuses: a forwarder pays for what
    /// it forwards.
    pub(super) fn allow_forwarded(
        &mut self,
        now: Instant,
        forwarder: NodeId,
        reply: SocketAddr,
        peer: bool,
    ) -> Result<(), Refused> {
        if !self.forwarders.take(now, forwarder) {
            return Err(Refused::Forwarder);
        }
        self.allow(now, Kind::Startup, reply, peer)
    }

    pub(super) fn stats(&self) -> PreAuthStats {
        PreAuthStats {
            stun: self.stun.prefixes.stats(),
            startup: self.startup.prefixes.stats(),
            peer: self.peers.stats(),
            forwarder: self.forwarders.stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    fn v4(a: u32, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
    }

    fn limiter(now: Instant) -> PreAuthLimiter {
        PreAuthLimiter::new(now, &PreAuthLimits::default(), &mut Rng::from_seed([7; 32]))
    }

    #[test]
    fn fihellos_take_the_forwarders_budget_then_the_reply_prefixs() {
        let t = Instant::now();
        let mut l = limiter(t);
        let d = PreAuthLimits::default();
        let (m, i) = (NodeId(1), NodeId(2));
        // One forwarder, replies spread over many prefixes: its burst.
        let ok = (0..1000u32)
            .filter(|&k| l.allow_forwarded(t, m, v4(k << 8, 1), false).is_ok())
            .count();
        assert_eq!(ok, d.fihello_per_forwarder.burst as usize);
        assert_eq!(
            l.allow_forwarded(t, m, v4(0x0a00_0001, 1), false),
            Err(Refused::Forwarder)
        );
        // Another forwarder has its own bucket, and refills at its rate.
        assert!(l.allow_forwarded(t, i, v4(0x0a00_0001, 1), false).is_ok());
        let later = t + Duration::from_secs(1);
        let ok = (0..1000u32)
            .filter(|&k| l.allow_forwarded(later, m, v4(k << 8, 1), false).is_ok())
            .count();
        assert_eq!(ok, d.fihello_per_forwarder.rate as usize);
        // Forwarded and direct IHellos towards one prefix share its
        // startup budget, whatever the forwarders.
        let victim = 0xc633_6400;
        let mut answered = 0;
        for k in 0..200u32 {
            let fwd = NodeId(1000 + u128::from(k));
            answered += usize::from(
                l.allow_forwarded(t, fwd, v4(victim | (k % 256), 1), false)
                    .is_ok(),
            );
            answered += usize::from(l.allow(t, Kind::Startup, v4(victim, 2), false).is_ok());
        }
        assert_eq!(answered, d.startup_per_prefix.burst as usize);
    }

    #[test]
    fn prefixes_are_slash_24_and_slash_64() {
        let a = prefix_of("198.51.100.7:1".parse().unwrap());
        assert_eq!(a, "198.51.100.0".parse::<IpAddr>().unwrap());
        let b = prefix_of("[2001:db8:1:2:3:4:5:6]:1".parse().unwrap());
        assert_eq!(b, "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        let mapped = prefix_of("[::ffff:198.51.100.9]:1".parse().unwrap());
        assert_eq!(mapped, a, "IPv4-mapped counts as IPv4");
        let r = crate::path::Path::Route(crate::RouteId(77)).to_addr();
        assert_eq!(prefix_of(r), r.ip(), "each route on its own");
    }

    #[test]
    fn one_prefix_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = limiter(t0);
        let b = PreAuthLimits::default().startup_per_prefix;
        let mut ok = 0;
        for i in 0..1000u32 {
            let from = v4(0xc633_6400 | (i & 0xff), 1000 + i as u16);
            ok += l.allow(t0, Kind::Startup, from, false).is_ok() as u32;
        }
        assert_eq!(f64::from(ok), b.burst);
        let t1 = t0 + Duration::from_secs(1);
        let mut later = 0;
        for _ in 0..1000 {
            later += l
                .allow(t1, Kind::Startup, v4(0xc633_6401, 9), false)
                .is_ok() as u32;
        }
        assert_eq!(f64::from(later), b.rate);
    }

    #[test]
    fn one_ipv6_slash_64_is_one_bucket() {
        let t0 = Instant::now();
        let mut l = limiter(t0);
        let mut ok = 0;
        for i in 0..10_000u64 {
            let ip = Ipv6Addr::from((0x2001_0db8_0000_0001u128 << 64) | u128::from(i * 7919));
            let from = SocketAddr::new(IpAddr::V6(ip), 4000);
            ok += l.allow(t0, Kind::Stun, from, false).is_ok() as u32;
        }
        assert_eq!(
            f64::from(ok),
            PreAuthLimits::default().stun_per_prefix.burst
        );
        assert_eq!(l.stats().stun.entries, 1);
    }

    #[test]
    fn stun_and_startup_do_not_share_budgets() {
        let t0 = Instant::now();
        let mut l = limiter(t0);
        // Drain the global STUN budget from many prefixes.
        for i in 0..100_000u32 {
            let _ = l.allow(t0, Kind::Stun, v4(i << 8, 1), false);
        }
        assert_eq!(
            l.allow(t0, Kind::Stun, v4(0xcb00_7101, 1), false),
            Err(Refused::Global(Kind::Stun))
        );
        assert_eq!(
            l.allow(t0, Kind::Startup, v4(0xcb00_7101, 1), false),
            Ok(())
        );
    }

    #[test]
    fn the_global_budget_bounds_many_prefixes() {
        let t0 = Instant::now();
        let mut l = limiter(t0);
        let g = PreAuthLimits::default().startup_global;
        let mut ok = 0u32;
        for i in 0..100_000u32 {
            ok += l.allow(t0, Kind::Startup, v4(i << 8, 1), false).is_ok() as u32;
        }
        assert_eq!(f64::from(ok), g.burst);
        // One second later: at most the global rate more.
        let t1 = t0 + Duration::from_secs(1);
        let mut more = 0u32;
        for i in 0..100_000u32 {
            more += l.allow(t1, Kind::Startup, v4(i << 8, 2), false).is_ok() as u32;
        }
        assert_eq!(f64::from(more), g.rate.min(g.burst));
    }

    #[test]
    fn a_peer_address_has_its_own_allowance() {
        let t0 = Instant::now();
        let mut l = limiter(t0);
        let member = v4(0xcb00_7105, 40001);
        // A spoofer drains the member's prefix (and the same IP, other ports).
        for p in 0..10_000u16 {
            let _ = l.allow(t0, Kind::Startup, v4(0xcb00_7105, p), false);
        }
        assert_eq!(
            l.allow(t0, Kind::Startup, member, false),
            Err(Refused::Prefix(Kind::Startup))
        );
        assert_eq!(l.allow(t0, Kind::Startup, member, true), Ok(()));
        // The allowance is itself bounded.
        let b = PreAuthLimits::default().peer_address;
        let mut ok = 1;
        for _ in 0..1000 {
            ok += l.allow(t0, Kind::Startup, member, true).is_ok() as u32;
        }
        assert_eq!(f64::from(ok), b.burst);
    }

    #[test]
    fn every_lookup_is_constant_work_and_the_table_never_grows() {
        let t0 = Instant::now();
        let mut l = limiter(t0);
        let n = 200_000u64;
        for i in 0..n {
            let t = t0 + Duration::from_micros(i * 50); // 20,000/s
            let _ = l.allow(
                t,
                Kind::Stun,
                v4((i as u32).wrapping_mul(2_654_435_761), 1),
                false,
            );
        }
        let s = l.stats().stun;
        assert_eq!(s.lookups, n, "one lookup per datagram");
        assert!(s.entries <= s.capacity, "{s:?}");
        assert_eq!(s.capacity, PreAuthLimits::default().prefix_slots);
        assert!(s.probes <= s.lookups * 2 * WAYS as u64, "{s:?}");
        assert!(s.evictions <= s.lookups, "{s:?}");
    }

    #[test]
    fn a_source_seen_twice_survives_a_flood_of_one_off_sources() {
        let t0 = Instant::now();
        let mut rng = Rng::from_seed([3; 32]);
        let b = Budget::new(4.0, 0.001);
        let mut t = BucketTable::<u32>::new(64, b, &mut rng);
        // Drain the regular's bucket: a fresh entry would be full again.
        for _ in 0..4 {
            assert!(t.take(t0, 1));
        }
        assert!(!t.take(t0, 1));
        for k in 1000..1200u32 {
            let _ = t.take(t0, k);
            // The regular keeps coming back.
            assert!(!t.take(t0, 1), "the regular was evicted at {k}");
        }
        assert!(t.stats().evictions > 0);
    }
}
