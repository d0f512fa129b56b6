//! Late frames: a CoDel head drop (RFC 8289) for
//! [`Reliability::NoRetransmit`](super::Reliability) messages in a sending
//! flow's queue.
//!
//! Frames are never retransmitted, and what they carry (TCP, mostly)
//! retransmits on its own: a frame sent late is worth less than one
//! dropped, and a queue that grows under load is delay for everything on
//! the session (a ping shares the queue with the bulk stream). The queue
//! grows when the traffic inside offers more than the session sends (the
//! congestion window, burst avoidance, the agent's CPU): the TCP inside
//! sees no loss and keeps growing its own window. A drop at the head of
//! the queue is the quickest signal it can get.
//!
//! The rule is CoDel's (RFC 8289 section 5): the sojourn time of a
//! message is the time from [`FlowSet::send`](super::FlowSet::send) to the
//! moment its first fragment could go out. Once the sojourn has stayed
//! above [`target`] for a whole [`interval`], the message at the head is
//! abandoned unsent (RFC 7016 3.6.2.7 lets a sender abandon any message),
//! and further ones at `interval / sqrt(count)` while the sojourn stays
//! above the target; a sojourn below the target, or nothing left to send,
//! ends the episode. A single late message, or a burst that drains within
//! an interval, is never dropped. Messages already begun are finished.
//!
//! The interval follows the session's round trip ([`interval`]): the TCP
//! inside needs about one round trip of its own to react to a drop.

use std::time::{Duration, Instant};

/// The shortest interval: a LAN's round trip is far below it, and the
/// TCP inside still needs a few of its own round trips (delayed
/// acknowledgements, a scheduler tick of the hosts) to answer a drop.
pub const INTERVAL_MIN: Duration = Duration::from_millis(10);
/// The longest interval (RFC 8289's default for the Internet).
pub const INTERVAL_MAX: Duration = Duration::from_millis(100);
/// The smallest target: a standing queue of 1 ms is the most the issue's
/// "RTT under load within 1 ms of idle" allows.
pub const TARGET_MIN: Duration = Duration::from_millis(1);

/// The CoDel interval for a session whose smoothed RTT is `srtt` (`None`
/// before the first sample): twice the RTT, within
/// [`INTERVAL_MIN`]..=[`INTERVAL_MAX`].
pub fn interval(srtt: Option<Duration>) -> Duration {
    srtt.map_or(INTERVAL_MAX, |s| s.saturating_mul(2))
        .clamp(INTERVAL_MIN, INTERVAL_MAX)
}

/// The CoDel target for `interval`: a tenth of it (RFC 8289 4.4: 5-10 %
/// of the interval), at least [`TARGET_MIN`].
pub fn target(interval: Duration) -> Duration {
    (interval / 10).max(TARGET_MIN)
}

/// CoDel's state for one queue (RFC 8289 5.2-5.5).
#[derive(Debug, Clone, Default)]
pub(super) struct Codel {
    /// When the sojourn time will have been above the target for an
    /// interval (`first_above_time`).
    first_above: Option<Instant>,
    /// In a dropping episode.
    dropping: bool,
    /// The next drop of the episode (`drop_next`).
    drop_next: Option<Instant>,
    /// Drops in this episode (`count`), and in the last (`lastcount`).
    count: u32,
    last_count: u32,
}

impl Codel {
    /// Nothing is waiting: the next message starts afresh (RFC 8289
    /// `dodequeue` on an empty queue).
    pub(super) fn queue_empty(&mut self) {
        self.first_above = None;
        self.dropping = false;
    }

    /// The message at the head of the queue waited `sojourn` when it could
    /// be sent at `now`: whether to drop it instead (RFC 8289 `dequeue`,
    /// one message per call; after a drop call again for the next one).
    pub(super) fn should_drop(
        &mut self,
        now: Instant,
        sojourn: Duration,
        interval: Duration,
        target: Duration,
    ) -> bool {
        let ok_to_drop = self.ok_to_drop(now, sojourn, interval, target);
        if self.dropping {
            if !ok_to_drop {
                self.dropping = false;
                return false;
            }
            match self.drop_next {
                Some(next) if now >= next => {
                    self.count = self.count.saturating_add(1);
                    self.drop_next = Some(control_law(next, self.count, interval));
                    true
                }
                _ => false,
            }
        } else if ok_to_drop {
            // RFC 8289 5.5: a new episode soon after the last one starts
            // at the drop rate it ended with.
            self.dropping = true;
            let delta = self.count.saturating_sub(self.last_count);
            let recent = self
                .drop_next
                .is_some_and(|d| now.saturating_duration_since(d) < interval.saturating_mul(16));
            self.count = if delta > 1 && recent { delta } else { 1 };
            self.drop_next = Some(control_law(now, self.count, interval));
            self.last_count = self.count;
            true
        } else {
            false
        }
    }

    /// RFC 8289 `dodequeue`: whether the sojourn has been above the target
    /// for an interval.
    fn ok_to_drop(
        &mut self,
        now: Instant,
        sojourn: Duration,
        interval: Duration,
        target: Duration,
    ) -> bool {
        if sojourn < target {
            self.first_above = None;
            return false;
        }
        match self.first_above {
            None => {
                self.first_above = Some(now + interval);
                false
            }
            Some(t) => now >= t,
        }
    }
}

/// RFC 8289 5.4: the next drop, `interval / sqrt(count)` after `t`.
fn control_law(t: Instant, count: u32, interval: Duration) -> Instant {
    t + interval.div_f64(f64::from(count.max(1)).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn interval_and_target_follow_the_round_trip_within_bounds() {
        assert_eq!(interval(None), INTERVAL_MAX);
        assert_eq!(interval(Some(Duration::from_micros(300))), INTERVAL_MIN);
        assert_eq!(interval(Some(30 * MS)), 60 * MS);
        assert_eq!(interval(Some(Duration::from_secs(2))), INTERVAL_MAX);
        assert_eq!(target(INTERVAL_MIN), TARGET_MIN);
        assert_eq!(target(60 * MS), 6 * MS);
    }

    #[test]
    fn a_late_message_is_dropped_only_after_an_interval_above_target() {
        let t0 = Instant::now();
        let (i, tg) = (10 * MS, MS);
        let mut c = Codel::default();
        // Above target, first time: the interval starts.
        assert!(!c.should_drop(t0, 5 * MS, i, tg));
        assert!(!c.should_drop(t0 + 9 * MS, 5 * MS, i, tg));
        // One below target resets it.
        assert!(!c.should_drop(t0 + 9 * MS, MS / 2, i, tg));
        assert!(!c.should_drop(t0 + 11 * MS, 5 * MS, i, tg));
        assert!(!c.should_drop(t0 + 20 * MS, 5 * MS, i, tg));
        // A whole interval above: drop, and the episode begins.
        assert!(c.should_drop(t0 + 21 * MS, 5 * MS, i, tg));
        // The next drop is an interval later (count 1) ...
        assert!(!c.should_drop(t0 + 30 * MS, 5 * MS, i, tg));
        assert!(c.should_drop(t0 + 31 * MS, 5 * MS, i, tg));
        // ... then interval / sqrt(2) later.
        let next = t0 + 31 * MS + i.div_f64(2f64.sqrt());
        assert!(!c.should_drop(next - MS / 10, 5 * MS, i, tg));
        assert!(c.should_drop(next, 5 * MS, i, tg));
        assert_eq!(c.count, 3);
        // Below target: the episode ends, nothing is dropped.
        assert!(!c.should_drop(next + 50 * MS, MS / 2, i, tg));
        assert!(!c.dropping);
    }

    #[test]
    fn an_empty_queue_ends_the_wait_and_the_episode() {
        let t0 = Instant::now();
        let (i, tg) = (10 * MS, MS);
        let mut c = Codel::default();
        assert!(!c.should_drop(t0, 5 * MS, i, tg));
        c.queue_empty();
        // Sparse messages (a ping every 100 ms on an idle session) each
        // start afresh, whatever they waited.
        for k in 1..10u32 {
            assert!(!c.should_drop(t0 + k * 100 * MS, 5 * MS, i, tg));
            c.queue_empty();
        }
        assert_eq!(c.count, 0);
    }

    #[test]
    fn an_episode_soon_after_the_last_resumes_its_drop_rate() {
        let t0 = Instant::now();
        let (i, tg) = (10 * MS, MS);
        let mut c = Codel::default();
        assert!(!c.should_drop(t0, 5 * MS, i, tg));
        let mut t = t0 + i;
        let mut drops = 0;
        while drops < 4 {
            if c.should_drop(t, 5 * MS, i, tg) {
                drops += 1;
            }
            t += MS / 4;
        }
        assert_eq!(c.count, 4);
        // Ends, and a new one begins within 16 intervals: count goes on
        // from the drops of the last episode beyond its start (4 - 1).
        assert!(!c.should_drop(t, 0 * MS, i, tg));
        assert!(!c.should_drop(t + MS, 5 * MS, i, tg));
        assert!(c.should_drop(t + MS + i, 5 * MS, i, tg));
        assert_eq!(c.count, 3);
    }
}
