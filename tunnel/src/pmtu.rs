//! Path MTU discovery with padding probes (RFC 7016 3.5.4.3, after RFC
//! 4821), sans-IO.
//!
//! A probe is a packet of the OPEN session padded to exactly the probed
//! size with a Padding chunk (type 0x00 or 0xff) followed by a Ping chunk
//! whose message identifies the probe ("the Ping chunk SHOULD come after the
//! Padding chunk, to guard against a false positive response in case the
//! probe packet is truncated"). The matching Ping Reply acknowledges the
//! size; no reply within the probe timeout (ERT0) is a failed attempt.
//!
//! Sizes are whole UDP payloads: the encrypted RTMFP packet including its
//! scrambled session id. Chosen values (see [`PmtuConfig`]):
//!
//! - base 1200 bytes: the size used from the start and after a fallback.
//!   It fits every IPv6 path (1280 minimum link MTU - 40 - 8 = 1232) and
//!   typical tunnels, so it needs no probing;
//! - maximum 1472 (1500-byte Ethernet minus IPv4 and UDP headers) or 1452
//!   for IPv6; never exceeded;
//! - the search first tries the maximum (most paths are plain Ethernet),
//!   then bisects between the largest acknowledged and smallest failed
//!   size until they are closer than 4 bytes;
//! - a size fails after 3 unanswered probes (RFC 4821 MAX_PROBES), so one
//!   random loss does not shrink the MTU;
//! - after the search, the maximum is re-probed every 600 s (RFC 4821
//!   suggests 10 minutes) in case the path grew;
//! - black hole detection: when the session suspects that packets of the
//!   current size vanish, the current size is verified with a probe; if it
//!   fails, the size falls back to the base and the search restarts below
//!   the failed size. Two signs raise the suspicion: a retransmission
//!   timeout with loss (nothing gets through), and size-selective loss
//!   ([`Pmtu::on_large_fragments`]): [`LARGE_LOSSES_TO_CHECK`] fragments
//!   that needed a packet above the base size declared lost with none of
//!   them acknowledged in between. The second is what a path that shrank
//!   below the current size looks like while small packets (acknowledgements,
//!   pings, small frames beside the large ones) still cross it and keep the
//!   timeout away; without it such a session lost every large frame for
//!   good (RFC 4821 names the same failure). Random loss also makes such
//!   runs now and then; the check it starts costs one probe and succeeds,
//!   so it is taken at most once per [`SIZE_CHECK_INTERVAL`], and only of
//!   a settled size (a search under way has its size freshly answered).
//!
//! Probe loss is not congestion: the session must not report it to the
//! congestion controller (RFC 4821 7.4). At most one probe is in flight.

use std::time::{Duration, Instant};

/// Packet size used before any probe succeeds and after a fallback.
pub const BASE_SIZE: usize = 1200;
/// Largest UDP payload on a 1500-byte IPv4 path (1500 - 20 - 8).
pub const MAX_IPV4_UDP: usize = 1472;
/// Largest UDP payload on a 1500-byte IPv6 path (1500 - 40 - 8).
pub const MAX_IPV6_UDP: usize = 1452;

/// Large fragments lost in a row (none acknowledged in between) that make
/// the session verify its packet size (module docs).
pub const LARGE_LOSSES_TO_CHECK: u32 = 3;
/// Shortest time between two checks started by size-selective loss.
pub const SIZE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Tunable values of the discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmtuConfig {
    /// Starting and fallback size, assumed to always work.
    pub base: usize,
    /// Largest size ever probed or used.
    pub max: usize,
    /// Stop bisecting once the bounds are closer than this.
    pub granularity: usize,
    /// Unanswered probes of one size before it counts as failed.
    pub max_attempts: u32,
    /// Time after a finished search before the maximum is probed again.
    pub reprobe_interval: Duration,
}

impl PmtuConfig {
    /// Defaults for a session over IPv4.
    pub fn ipv4() -> Self {
        PmtuConfig {
            base: BASE_SIZE,
            max: MAX_IPV4_UDP,
            granularity: 4,
            max_attempts: 3,
            reprobe_interval: Duration::from_secs(600),
        }
    }

    /// Defaults for a session over IPv6.
    pub fn ipv6() -> Self {
        PmtuConfig {
            max: MAX_IPV6_UDP,
            ..Self::ipv4()
        }
    }
}

impl Default for PmtuConfig {
    fn default() -> Self {
        Self::ipv4()
    }
}

/// A probe to send: pad a packet to exactly `size` bytes of UDP payload and
/// put a Ping carrying `id` after the padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub id: u32,
    pub size: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Bisecting for the largest working size.
    Search,
    /// Checking that the current size still works.
    Verify,
    /// Settled until the next re-probe.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InFlight {
    id: u32,
    size: usize,
    deadline: Instant,
}

/// Path MTU discovery state of one session (RFC 7016 3.5.4.3).
#[derive(Clone, Debug)]
pub struct Pmtu {
    cfg: PmtuConfig,
    phase: Phase,
    /// Largest size known to work: what data packets may use.
    safe: usize,
    /// Largest size not known to fail.
    high: usize,
    /// Whether this search already tried `cfg.max`.
    tried_max: bool,
    /// Unanswered attempts of the current candidate.
    attempts: u32,
    in_flight: Option<InFlight>,
    /// Earliest time the next probe is due (when none is in flight).
    next_probe_at: Option<Instant>,
    next_id: u32,
    probes_sent: u64,
    /// Fragments too large for the base size declared lost since one was
    /// last acknowledged.
    large_lost_run: u32,
    /// When size-selective loss last started a check.
    size_checked_at: Option<Instant>,
}

impl Pmtu {
    /// Discovery for a session opened at `now`; the first probe is due at
    /// once. A `max` below `base` is raised to `base` (nothing to search).
    pub fn new(now: Instant, cfg: PmtuConfig) -> Self {
        let mut cfg = cfg;
        cfg.base = cfg.base.max(1);
        cfg.max = cfg.max.max(cfg.base);
        cfg.granularity = cfg.granularity.max(1);
        cfg.max_attempts = cfg.max_attempts.max(1);
        Pmtu {
            cfg,
            phase: Phase::Search,
            safe: cfg.base,
            high: cfg.max,
            tried_max: false,
            attempts: 0,
            in_flight: None,
            next_probe_at: Some(now),
            next_id: 1,
            probes_sent: 0,
            large_lost_run: 0,
            size_checked_at: None,
        }
    }

    #[cfg(test)]
    pub fn config(&self) -> &PmtuConfig {
        &self.cfg
    }

    /// The largest packet (UDP payload bytes) known to cross the path.
    pub fn safe_size(&self) -> usize {
        self.safe
    }

    /// Whether the search has settled (until the next re-probe).
    #[cfg(test)]
    pub fn is_settled(&self) -> bool {
        self.phase == Phase::Done
    }

    #[cfg(test)]
    pub fn probes_sent(&self) -> u64 {
        self.probes_sent
    }

    /// The next probe to send now, if one is due. `timeout` is how long to
    /// wait for its Ping Reply (ERT0). The probe is recorded as in flight.
    pub fn poll_probe(&mut self, now: Instant, timeout: Duration) -> Option<Probe> {
        if self.in_flight.is_some() || self.next_probe_at.is_none_or(|t| now < t) {
            return None;
        }
        if self.phase == Phase::Done {
            // Re-probe: the path may have grown.
            self.phase = Phase::Search;
            self.high = self.cfg.max;
            self.tried_max = false;
            self.attempts = 0;
        }
        let size = match self.phase {
            Phase::Verify => self.safe,
            _ => match self.candidate() {
                Some(size) => size,
                None => {
                    self.settle(now);
                    return None;
                }
            },
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.in_flight = Some(InFlight {
            id,
            size,
            deadline: now + timeout,
        });
        self.next_probe_at = None;
        self.probes_sent += 1;
        Some(Probe { id, size })
    }

    /// The Ping Reply for probe `id` arrived. Returns the new safe size if
    /// it grew.
    pub fn on_probe_acked(&mut self, now: Instant, id: u32) -> Option<usize> {
        let probe = self.in_flight.filter(|p| p.id == id)?;
        self.in_flight = None;
        self.attempts = 0;
        self.next_probe_at = Some(now);
        match self.phase {
            Phase::Verify => {
                self.settle(now);
                None
            }
            _ => {
                if probe.size == self.cfg.max {
                    self.tried_max = true;
                }
                (probe.size > self.safe).then(|| {
                    self.safe = probe.size;
                    self.safe
                })
            }
        }
    }

    /// Timer input: an unanswered probe past its deadline counts as one
    /// failed attempt; after `max_attempts` its size failed. Returns the
    /// new safe size if it fell back.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<usize> {
        let probe = self.in_flight.filter(|p| p.deadline <= now)?;
        self.in_flight = None;
        self.next_probe_at = Some(now);
        self.attempts += 1;
        if self.attempts < self.cfg.max_attempts {
            return None;
        }
        self.attempts = 0;
        match self.phase {
            Phase::Verify => {
                // The current size vanished: fall back, search below it.
                self.phase = Phase::Search;
                self.safe = self.cfg.base;
                self.high = probe.size.saturating_sub(1).max(self.cfg.base);
                self.tried_max = true;
                Some(self.safe)
            }
            _ => {
                if probe.size == self.cfg.max {
                    self.tried_max = true;
                }
                self.high = probe.size.saturating_sub(1).max(self.safe);
                None
            }
        }
    }

    /// The session suspects a black hole: data packets of the current size
    /// time out (RFC 7016 3.6.2.6 timeout with loss). Verifies the current
    /// size with a probe, unless it is the base size.
    pub fn on_black_hole_suspected(&mut self, now: Instant) {
        if self.phase == Phase::Verify || self.safe <= self.cfg.base {
            return;
        }
        self.phase = Phase::Verify;
        self.in_flight = None;
        self.attempts = 0;
        self.next_probe_at = Some(now);
    }

    /// What one acknowledgement told of fragments too large for the base
    /// size: `acked` of those in flight acknowledged, `lost` declared lost.
    /// [`LARGE_LOSSES_TO_CHECK`] lost with none acknowledged in between
    /// (module docs) start a check; returns whether one started.
    pub fn on_large_fragments(&mut self, now: Instant, acked: u32, lost: u32) -> bool {
        if acked > 0 {
            self.large_lost_run = 0;
        }
        self.large_lost_run = self.large_lost_run.saturating_add(lost);
        if self.large_lost_run < LARGE_LOSSES_TO_CHECK {
            return false;
        }
        self.large_lost_run = 0;
        self.on_large_packets_lost(now)
    }

    /// A run of large fragments was lost: verifies the settled size as
    /// [`Pmtu::on_black_hole_suspected`] does, at most once per
    /// [`SIZE_CHECK_INTERVAL`]; returns whether a check started.
    fn on_large_packets_lost(&mut self, now: Instant) -> bool {
        let recent = self
            .size_checked_at
            .is_some_and(|t| now.saturating_duration_since(t) < SIZE_CHECK_INTERVAL);
        // Only a settled size: a search under way has just had its size
        // answered, and a check would end the search where it stands.
        if recent || self.phase != Phase::Done || self.safe <= self.cfg.base {
            return false;
        }
        self.size_checked_at = Some(now);
        self.on_black_hole_suspected(now);
        true
    }

    /// The earliest time `handle_timeout` or `poll_probe` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.in_flight {
            Some(p) => Some(p.deadline),
            None => self.next_probe_at,
        }
    }

    /// The next size to try in the search, or `None` when done.
    fn candidate(&self) -> Option<usize> {
        if !self.tried_max && self.cfg.max > self.safe {
            return Some(self.cfg.max);
        }
        let gap = self.high.checked_sub(self.safe)?;
        if gap < self.cfg.granularity {
            return None;
        }
        Some(self.safe + gap.div_ceil(2))
    }

    fn settle(&mut self, now: Instant) {
        self.phase = Phase::Done;
        self.attempts = 0;
        self.next_probe_at = Some(now + self.cfg.reprobe_interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const TIMEOUT: Duration = Duration::from_millis(300);

    /// A simulated path: probes up to `mtu` bytes come back after 50 ms,
    /// larger ones vanish; `loss` drops any probe at random.
    struct Path {
        mtu: usize,
        loss: f64,
        rng: Rng,
    }

    impl Path {
        fn new(mtu: usize) -> Path {
            Path {
                mtu,
                loss: 0.0,
                rng: Rng::from_seed([9; 32]),
            }
        }
    }

    /// Drive discovery for `budget` of virtual time; returns the time.
    fn drive(p: &mut Pmtu, path: &mut Path, mut now: Instant, budget: Duration) -> Instant {
        let end = now + budget;
        while now < end {
            p.handle_timeout(now);
            if let Some(probe) = p.poll_probe(now, TIMEOUT) {
                assert!(probe.size <= p.config().max);
                let lost = path.rng.f64() < path.loss;
                if probe.size <= path.mtu && !lost {
                    now += Duration::from_millis(50);
                    p.on_probe_acked(now, probe.id);
                    continue;
                }
            }
            match p.poll_timeout() {
                Some(t) if t > now && t <= end => now = t,
                Some(t) if t <= now => {}
                _ => now = end,
            }
        }
        now
    }

    /// A search from `t` over a loss-free path of `mtu` bytes, run until
    /// settled: the discovery, the path and the time then.
    fn settled(t: Instant, mtu: usize) -> (Pmtu, Path, Instant) {
        let mut p = Pmtu::new(t, PmtuConfig::ipv4());
        let mut path = Path::new(mtu);
        let now = drive(&mut p, &mut path, t, Duration::from_secs(10));
        assert!(p.is_settled());
        (p, path, now)
    }

    proptest::proptest! {
        /// On a loss-free path of any MTU the search settles on the largest
        /// usable size, to within the granularity, never above the path or
        /// the maximum.
        #[test]
        fn settles_on_path_mtu(mtu in 800usize..2000) {
            let t = Instant::now();
            let mut p = Pmtu::new(t, PmtuConfig::ipv4());
            drive(&mut p, &mut Path::new(mtu), t, Duration::from_secs(60));
            proptest::prop_assert!(p.is_settled());
            let safe = p.safe_size();
            let usable = mtu.min(MAX_IPV4_UDP);
            if usable < BASE_SIZE {
                proptest::prop_assert_eq!(safe, BASE_SIZE);
            } else {
                proptest::prop_assert!(safe <= usable && safe + 4 > usable);
            }
        }
    }

    #[test]
    fn defaults() {
        let c = PmtuConfig::default();
        assert_eq!((c.base, c.max, c.max_attempts), (1200, 1472, 3));
        assert_eq!(PmtuConfig::ipv6().max, 1452);
        let p = Pmtu::new(Instant::now(), c);
        assert_eq!(p.safe_size(), 1200);
        assert!(!p.is_settled());
    }

    #[test]
    fn full_ethernet_path_needs_one_probe() {
        let t = Instant::now();
        let mut p = Pmtu::new(t, PmtuConfig::ipv4());
        let probe = p.poll_probe(t, TIMEOUT).expect("probe due");
        assert_eq!(probe.size, 1472);
        // Only one probe in flight.
        assert_eq!(p.poll_probe(t, TIMEOUT), None);
        assert_eq!(p.poll_timeout(), Some(t + TIMEOUT));
        assert_eq!(p.on_probe_acked(t, probe.id), Some(1472));
        assert_eq!(p.poll_probe(t, TIMEOUT), None);
        assert!(p.is_settled());
        assert_eq!(p.safe_size(), 1472);
        assert_eq!(p.probes_sent(), 1);
        assert_eq!(p.poll_timeout(), Some(t + Duration::from_secs(600)));
    }

    #[test]
    fn search_converges_to_path_mtu() {
        for mtu in [1201, 1280, 1350, 1400, 1420, 1471] {
            let t = Instant::now();
            let mut p = Pmtu::new(t, PmtuConfig::ipv4());
            let mut path = Path::new(mtu);
            drive(&mut p, &mut path, t, Duration::from_secs(60));
            assert!(p.is_settled(), "mtu {mtu}");
            let safe = p.safe_size();
            assert!(safe <= mtu && safe + 4 > mtu, "mtu {mtu}: safe {safe}");
            // Each failed size costs 3 probes; bisection over 272 bytes.
            assert!(p.probes_sent() <= 40, "{}", p.probes_sent());
        }
    }

    #[test]
    fn path_below_base_keeps_base() {
        let t = Instant::now();
        let mut p = Pmtu::new(t, PmtuConfig::ipv4());
        let mut path = Path::new(1100);
        drive(&mut p, &mut path, t, Duration::from_secs(60));
        assert!(p.is_settled());
        assert_eq!(p.safe_size(), 1200);
    }

    #[test]
    fn one_lost_probe_is_not_a_failure() {
        let t = Instant::now();
        let mut p = Pmtu::new(t, PmtuConfig::ipv4());
        let first = p.poll_probe(t, TIMEOUT).expect("probe");
        assert_eq!(p.handle_timeout(t + TIMEOUT), None);
        let retry = p.poll_probe(t + TIMEOUT, TIMEOUT).expect("retry");
        assert_eq!(retry.size, first.size);
        assert_ne!(retry.id, first.id);
        // A late reply to the first attempt is stale and ignored.
        assert_eq!(p.on_probe_acked(t + TIMEOUT, first.id), None);
        assert_eq!(p.on_probe_acked(t + TIMEOUT, retry.id), Some(1472));
        // With random probe loss the search still converges.
        let mut p = Pmtu::new(t, PmtuConfig::ipv4());
        let mut path = Path::new(1400);
        path.loss = 0.2;
        drive(&mut p, &mut path, t, Duration::from_secs(120));
        assert!(p.is_settled());
        assert!(p.safe_size() <= 1400 && p.safe_size() > 1300);
    }

    #[test]
    fn early_timeout_call_does_nothing() {
        let t = Instant::now();
        let mut p = Pmtu::new(t, PmtuConfig::ipv4());
        let probe = p.poll_probe(t, TIMEOUT).expect("probe");
        assert_eq!(p.handle_timeout(t + TIMEOUT / 2), None);
        assert_eq!(p.on_probe_acked(t, probe.id), Some(1472));
    }

    #[test]
    fn falls_back_when_path_shrinks() {
        let (mut p, mut path, now) = settled(Instant::now(), 1500);
        assert_eq!(p.safe_size(), 1472);
        // The route changes; data starts timing out.
        path.mtu = 1300;
        p.on_black_hole_suspected(now);
        let probe = p.poll_probe(now, TIMEOUT).expect("verify probe");
        assert_eq!(probe.size, 1472);
        let mut fell_back = None;
        let mut at = now;
        for _ in 0..3 {
            at += TIMEOUT;
            fell_back = fell_back.or(p.handle_timeout(at));
            if fell_back.is_none() {
                let retry = p.poll_probe(at, TIMEOUT).expect("retry");
                assert_eq!(retry.size, 1472);
            }
        }
        assert_eq!(fell_back, Some(1200));
        assert_eq!(p.safe_size(), 1200);
        // And searches again below the failed size.
        drive(&mut p, &mut path, at, Duration::from_secs(60));
        assert!(p.is_settled());
        let safe = p.safe_size();
        assert!(safe <= 1300 && safe + 4 > 1300, "{safe}");
    }

    #[test]
    fn verify_success_keeps_size() {
        let t = Instant::now();
        let mut p = Pmtu::new(t, PmtuConfig::ipv4());
        let mut path = Path::new(1400);
        let now = drive(&mut p, &mut path, t, Duration::from_secs(30));
        let safe = p.safe_size();
        p.on_black_hole_suspected(now);
        let probe = p.poll_probe(now, TIMEOUT).expect("verify");
        assert_eq!(probe.size, safe);
        assert_eq!(p.on_probe_acked(now, probe.id), None);
        assert!(p.is_settled());
        assert_eq!(p.safe_size(), safe);
        // At the base size there is nothing to verify.
        let mut q = Pmtu::new(t, PmtuConfig::ipv4());
        drive(&mut q, &mut Path::new(1000), t, Duration::from_secs(30));
        q.on_black_hole_suspected(now);
        assert!(q.is_settled());
    }

    #[test]
    fn reprobes_and_finds_a_larger_path() {
        let t = Instant::now();
        let mut p = Pmtu::new(t, PmtuConfig::ipv4());
        let mut path = Path::new(1300);
        let now = drive(&mut p, &mut path, t, Duration::from_secs(30));
        assert!(p.safe_size() <= 1300);
        path.mtu = 9000;
        // Nothing before the re-probe interval.
        let now = drive(&mut p, &mut path, now, Duration::from_secs(500));
        assert!(p.safe_size() <= 1300);
        drive(&mut p, &mut path, now, Duration::from_secs(200));
        // Never above the configured maximum.
        assert_eq!(p.safe_size(), 1472);
    }

    #[test]
    fn max_below_base_never_probes() {
        let t = Instant::now();
        let cfg = PmtuConfig {
            max: 1000,
            ..PmtuConfig::ipv4()
        };
        let mut p = Pmtu::new(t, cfg);
        assert_eq!(p.poll_probe(t, TIMEOUT), None);
        assert!(p.is_settled());
        assert_eq!(p.safe_size(), 1200);
    }

    #[test]
    fn size_selective_loss_verifies_at_most_once_per_interval() {
        let t = Instant::now();
        let mut p = Pmtu::new(t, PmtuConfig::ipv4());
        // Not while the search is under way, even with its size answered.
        let first = p.poll_probe(t, TIMEOUT).unwrap();
        p.on_probe_acked(t, first.id);
        assert_eq!(p.safe_size(), 1472);
        assert!(!p.is_settled());
        assert!(!p.on_large_packets_lost(t));
        let mut path = Path::new(1472);
        let t = drive(&mut p, &mut path, t, Duration::from_secs(10));
        assert!(p.is_settled());
        assert_eq!(p.safe_size(), 1472);
        // A check: one probe of the current size, answered, size kept.
        assert!(p.on_large_packets_lost(t));
        assert_eq!(p.poll_probe(t, TIMEOUT).map(|x| x.size), Some(1472));
        assert!(!p.on_large_packets_lost(t), "one check at a time");
        let id = p.in_flight.map(|x| x.id).unwrap();
        assert_eq!(p.on_probe_acked(t + TIMEOUT / 2, id), None);
        assert!(p.is_settled());
        assert_eq!(p.safe_size(), 1472);
        // Held off for SIZE_CHECK_INTERVAL from the last one.
        assert!(!p.on_large_packets_lost(t + SIZE_CHECK_INTERVAL / 2));
        assert!(p.poll_probe(t + SIZE_CHECK_INTERVAL / 2, TIMEOUT).is_none());
        assert!(p.on_large_packets_lost(t + SIZE_CHECK_INTERVAL));
        // This time the path shrank: three failed probes fall back.
        path.mtu = 1300;
        drive(
            &mut p,
            &mut path,
            t + SIZE_CHECK_INTERVAL,
            Duration::from_secs(30),
        );
        assert!(
            p.safe_size() <= 1300 && p.safe_size() > 1250,
            "{}",
            p.safe_size()
        );
        // Nothing to check at the base size.
        let mut base = Pmtu::new(t, PmtuConfig::ipv4());
        assert!(!base.on_large_packets_lost(t));
    }

    #[test]
    fn a_check_needs_three_large_losses_with_none_acknowledged_between() {
        let (mut p, _, t) = settled(Instant::now(), 1472);
        // Two lost, then one acknowledged: the run starts over, however
        // many small packets and losses come with it.
        assert!(!p.on_large_fragments(t, 0, 2));
        assert!(!p.on_large_fragments(t, 1, 2));
        assert!(!p.on_large_fragments(t, 0, 0));
        assert!(p.poll_probe(t, TIMEOUT).is_none());
        // The third in a row (in one acknowledgement or several) checks.
        assert!(p.on_large_fragments(t, 0, 1));
        let probe = p.poll_probe(t, TIMEOUT).unwrap();
        assert_eq!(probe.size, 1472);
        assert_eq!(p.on_probe_acked(t, probe.id), None);
        assert!(p.is_settled());
        // The run starts over after a check, taken or held off.
        assert!(!p.on_large_fragments(t, 0, 3), "held off");
        let later = t + SIZE_CHECK_INTERVAL;
        assert!(!p.on_large_fragments(later, 0, 2));
        assert!(p.on_large_fragments(later, 0, 1));
        // Many at once count as many.
        let (mut q, _, t) = settled(t, 1472);
        assert!(q.on_large_fragments(t, 0, u32::MAX));
    }
}
