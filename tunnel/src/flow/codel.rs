//! Late frames: a CoDel head drop (RFC 8289) for
//! [`Reliability::NoRetransmit`](super::Reliability) messages in a sending
//! flow's queue.
//!
//! Frames are never retransmitted, and what they carry (TCP, mostly)
//! retransmits on its own: a frame that arrives late is worth less than
//! one dropped, and a queue that grows under load is delay for everything
//! on the session (a ping shares it with the bulk stream). The TCP inside
//! sees no loss while a queue grows and keeps growing its own window; a
//! drop is the quickest signal it can get.
//!
//! Where the queue stands (measured, docs/dataplane.md "Latency"): not in
//! the flow's send queue, which the agent fills a TAP batch at a time and
//! drains within a few milliseconds, but behind it. On a LAN the session's
//! window grows to megabytes, far more than the path holds, and what it
//! lets out waits in the far agent's UDP receive buffer while that agent
//! is busy; on a slow path it waits in the bottleneck's queue. Either way
//! it shows as the time from sending a fragment to its acknowledgement:
//! [`PathDelay`] keeps the least of it over the last interval or two
//! (a queue that stood for an interval delayed every fragment; jitter and
//! delayed acknowledgements do not raise the least one) above the least
//! over [`MIN_WINDOW`] (the path itself). That standing delay is the
//! sojourn CoDel (RFC 8289 section 5) decides on, at the moment a
//! NoRetransmit message would begin to go out: once it has stayed above
//! [`target`] for a whole [`interval`], the message is abandoned unsent
//! (RFC 7016 3.6.2.7 lets a sender abandon any message), and further ones
//! at `interval / sqrt(count)` while it stays above; a standing delay
//! below the target ends the episode. Messages already begun are
//! finished, and Reliable ones are never dropped.
//!
//! The wait in the flow's own queue does not count: it is the session's
//! window (slow start, a retransmission timeout, burst avoidance), which
//! the window's own growth ends, and dropping there loses frames on lossy
//! paths for nothing (the node scenario with lossy links lost 13 % of its
//! frames instead of 4 %).
//!
//! The interval follows the session's round trip ([`interval`]): the TCP
//! inside needs about one round trip of its own to react to a drop.
//!
//! A standing queue the session does not fill is not its to drain: at a
//! bottleneck shared with a loss-based flow (plain TCP through the same
//! router), that flow keeps the queue standing whatever the session does,
//! the drops never end the episode, CoDel's rate keeps rising, and the
//! TCP inside, answering every drop, starved at 1-3 % of the link against
//! the plain flow's 93 % (`tests/bench/fairness.sh`). So when an episode's
//! drop count reaches [`EPISODE_DROPS_MAX`] without the standing delay
//! falling below the target (a queue the session fills drains after a
//! drop or two, as the TCP inside halves its window), the flow takes the
//! queue for someone else's and drops nothing for [`HOLD`]; then it tries
//! again. Against such a flow the session then competes as the TCP inside
//! does, with loss at the bottleneck, which is what it can do there.
//!
//! The drops count over episodes too, until the standing delay is
//! measured below the target: a TCP inside that answers every drop
//! (cubic, Linux's default) backs off after one until the session sends
//! too little to be measured (only acknowledgements of more than a packet
//! are samples), the episode ends for lack of samples, and the next
//! begins when it comes back; behind a plain cubic flow's 20 ms queue the
//! sessions starved at 0.3 Mbit/s of 200 in episodes of one or two drops.

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

/// Drops in one episode (RFC 8289 `count`, which a new episode soon after
/// the last resumes) after which the standing queue is taken for one the
/// session does not fill (module docs).
pub const EPISODE_DROPS_MAX: u32 = 8;
/// How long late drops then pause: the path's minimum delay is relearnt
/// over this long too.
pub const HOLD: Duration = MIN_WINDOW;

/// How long the least delay from `send` to acknowledgement is kept (a
/// windowed minimum, as BBR keeps its minimum RTT): a path that got
/// longer is learnt within two windows.
pub const MIN_WINDOW: Duration = Duration::from_secs(10);

/// The delay of NoRetransmit fragments from being sent to their
/// acknowledgement: its least value over the last one to two CoDel
/// intervals (a queue that stood for an interval delayed every fragment;
/// jitter and delayed acknowledgements do not raise the least one) above
/// its windowed minimum over [`MIN_WINDOW`] (the path itself).
#[derive(Debug, Clone, Default)]
pub(super) struct PathDelay {
    /// The least sample of the current window, when it began, and the
    /// least of the window before.
    base: Option<Duration>,
    base_start: Option<Instant>,
    base_before: Option<Duration>,
    /// The same over CoDel intervals.
    recent: Option<Duration>,
    recent_start: Option<Instant>,
    recent_before: Option<Duration>,
    /// Every sample smoothed (1/8 gain, as RFC 6298's SRTT), and when the
    /// last came: the round trip shown in the status, to the microsecond
    /// where the RFC 7016 timestamps count 4 ms ticks.
    smoothed: Option<Duration>,
    last_sample: Option<Instant>,
}

impl PathDelay {
    /// A fragment sent once was acknowledged `sample` after it was sent;
    /// `interval` is CoDel's.
    pub(super) fn on_sample(&mut self, now: Instant, sample: Duration, interval: Duration) {
        self.smoothed = Some(self.smoothed.map_or(sample, |s| (s * 7 + sample) / 8));
        self.last_sample = Some(now);
        fn windowed(
            now: Instant,
            sample: Duration,
            len: Duration,
            start: &mut Option<Instant>,
            least: &mut Option<Duration>,
            before: &mut Option<Duration>,
        ) {
            match *start {
                Some(t) if now.saturating_duration_since(t) < len => {
                    *least = Some(least.map_or(sample, |m| m.min(sample)));
                }
                _ => {
                    *before = *least;
                    *least = Some(sample);
                    *start = Some(now);
                }
            }
        }
        windowed(
            now,
            sample,
            MIN_WINDOW,
            &mut self.base_start,
            &mut self.base,
            &mut self.base_before,
        );
        windowed(
            now,
            sample,
            interval,
            &mut self.recent_start,
            &mut self.recent,
            &mut self.recent_before,
        );
    }

    /// The smoothed delay from sending to acknowledgement and when its
    /// last sample came; `None` before the first.
    pub(super) fn smoothed(&self) -> Option<(Duration, Instant)> {
        self.smoothed.zip(self.last_sample)
    }

    /// The standing delay at `now`: the least recent delay above the least
    /// one; `None` when no fragment was acknowledged within the last two
    /// intervals (nothing measured: an idle path holds no queue, and a
    /// session that fell silent cannot tell).
    pub(super) fn standing(&self, now: Instant, interval: Duration) -> Option<Duration> {
        let least = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let fresh = self
            .recent_start
            .is_some_and(|t| now.saturating_duration_since(t) < interval.saturating_mul(2));
        match (
            fresh,
            least(self.recent, self.recent_before),
            least(self.base, self.base_before),
        ) {
            (true, Some(r), Some(b)) => Some(r.saturating_sub(b)),
            _ => None,
        }
    }
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
    /// No drops before this: the standing queue is someone else's (module
    /// docs).
    hold_until: Option<Instant>,
    /// Drops, over episodes, since the standing delay was last measured
    /// below the target (an episode can end because nothing was measured,
    /// which says nothing about the queue).
    undrained: u32,
}

/// What [`Codel::verdict`] decided for a message about to begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Send,
    Drop,
    /// Dropped, and the episode reached [`EPISODE_DROPS_MAX`] drops, or
    /// as many came since the standing delay was last measured below the
    /// target: late drops pause for [`HOLD`].
    DropAndHold,
}

impl Codel {
    /// Nothing is waiting: the next message starts afresh (RFC 8289
    /// `dodequeue` on an empty queue).
    pub(super) fn queue_empty(&mut self) {
        self.first_above = None;
        self.dropping = false;
    }

    /// A message could begin to go out at `now` while frames stand
    /// `sojourn` in the queue: whether to drop it instead (RFC 8289
    /// `dequeue`, one message per call; after a drop call again for the
    /// next one).
    pub(super) fn verdict(
        &mut self,
        now: Instant,
        sojourn: Option<Duration>,
        interval: Duration,
        target: Duration,
    ) -> Verdict {
        if self.hold_until.is_some_and(|t| now < t) {
            return Verdict::Send;
        }
        if sojourn.is_some_and(|s| s < target) {
            self.undrained = 0;
        }
        let above = sojourn.is_some_and(|s| s >= target);
        let ok_to_drop = self.ok_to_drop(now, above, interval);
        if self.dropping {
            if !ok_to_drop {
                self.dropping = false;
                return Verdict::Send;
            }
            match self.drop_next {
                Some(next) if now >= next => {
                    self.count = self.count.saturating_add(1);
                    self.drop_next = Some(control_law(next, self.count, interval));
                    self.dropped(now)
                }
                _ => Verdict::Send,
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
            self.dropped(now)
        } else {
            Verdict::Send
        }
    }

    /// A message is dropped: the verdict, a pause if the drops did not
    /// drain the queue (module docs): [`EPISODE_DROPS_MAX`] in one
    /// episode, or as many since the standing delay was last measured
    /// below the target.
    fn dropped(&mut self, now: Instant) -> Verdict {
        self.undrained = self.undrained.saturating_add(1);
        if self.count >= EPISODE_DROPS_MAX || self.undrained >= EPISODE_DROPS_MAX {
            // Not ours: pause, and start the next episode afresh.
            *self = Codel {
                hold_until: Some(now + HOLD),
                ..Codel::default()
            };
            return Verdict::DropAndHold;
        }
        Verdict::Drop
    }

    /// RFC 8289 `dodequeue`: whether the sojourn, `above` the target now,
    /// has been above it for an interval.
    fn ok_to_drop(&mut self, now: Instant, above: bool, interval: Duration) -> bool {
        if !above {
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

    #[test]
    fn the_smoothed_delay_follows_every_sample() {
        let t = Instant::now();
        let i = Duration::from_millis(10);
        let mut p = PathDelay::default();
        assert_eq!(p.smoothed(), None);
        p.on_sample(t, Duration::from_micros(800), i);
        assert_eq!(p.smoothed(), Some((Duration::from_micros(800), t)));
        let later = t + Duration::from_millis(1);
        p.on_sample(later, Duration::from_micros(1600), i);
        assert_eq!(p.smoothed(), Some((Duration::from_micros(900), later)));
    }

    impl Codel {
        fn should_drop(
            &mut self,
            now: Instant,
            sojourn: Duration,
            i: Duration,
            tg: Duration,
        ) -> bool {
            self.verdict(now, Some(sojourn), i, tg) != Verdict::Send
        }
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn path_delay_is_the_recent_least_delay_above_the_windowed_minimum() {
        let t0 = Instant::now();
        let i = 10 * MS;
        let mut p = PathDelay::default();
        assert_eq!(p.standing(t0, i), None);
        p.on_sample(t0, MS, i);
        assert_eq!(p.standing(t0, i), Some(Duration::ZERO));
        // Jitter (1 to 9 ms) is no standing queue: the least recent sample
        // is near the base.
        for k in 1..=40u32 {
            let jitter = if k % 4 == 0 { MS } else { 9 * MS };
            p.on_sample(t0 + k * MS, jitter, i);
        }
        assert_eq!(p.standing(t0 + 40 * MS, i), Some(Duration::ZERO));
        // A standing queue of 8 ms delays every fragment: after two
        // intervals the least recent delay is 9 ms.
        for k in 41..=70u32 {
            p.on_sample(t0 + k * MS, 9 * MS, i);
        }
        assert_eq!(p.standing(t0 + 70 * MS, i), Some(8 * MS));
        // Nothing acknowledged for two intervals: nothing measured.
        assert_eq!(p.standing(t0 + 95 * MS, i), None);
        // The path gets longer (5 ms base): after two windows the old
        // minimum is forgotten and nothing stands.
        for k in 1..=25u32 {
            let t = t0 + k * Duration::from_secs(1);
            p.on_sample(t, 5 * MS, i);
        }
        assert_eq!(
            p.standing(t0 + Duration::from_secs(25), i),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn interval_and_target_follow_the_round_trip_within_bounds() {
        assert_eq!(interval(None), INTERVAL_MAX);
        assert_eq!(interval(Some(Duration::from_micros(300))), INTERVAL_MIN);
        assert_eq!(interval(Some(30 * MS)), 60 * MS);
        assert_eq!(interval(Some(Duration::from_secs(2))), INTERVAL_MAX);
        assert_eq!(target(INTERVAL_MIN), TARGET_MIN);
        assert_eq!(target(60 * MS), 6 * MS);
    }

    /// Interval 10 ms, target 1 ms; a standing delay of 5 ms seen at the
    /// returned time (never dropped: the interval starts).
    fn above_once() -> (Instant, Duration, Duration, Codel) {
        let t0 = Instant::now();
        let (i, tg) = (10 * MS, MS);
        let mut c = Codel::default();
        assert!(!c.should_drop(t0, 5 * MS, i, tg));
        (t0, i, tg, c)
    }

    #[test]
    fn a_late_message_is_dropped_only_after_an_interval_above_target() {
        let (t0, i, tg, mut c) = above_once();
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
        let (t0, i, tg, mut c) = above_once();
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
        let (t0, i, tg, mut c) = above_once();
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
        assert!(!c.should_drop(t, Duration::ZERO, i, tg));
        assert!(!c.should_drop(t + MS, 5 * MS, i, tg));
        assert!(c.should_drop(t + MS + i, 5 * MS, i, tg));
        assert_eq!(c.count, 3);
    }

    /// A standing queue that the drops never end (someone else's, at a
    /// shared bottleneck): after EPISODE_DROPS_MAX drops the flow pauses for
    /// HOLD, then starts afresh (an interval above target first).
    #[test]
    fn a_queue_the_drops_never_end_pauses_them() {
        let (t0, i, tg, mut c) = above_once();
        let mut t = t0 + i;
        let mut drops = Vec::new();
        let mut holds = 0;
        while t < t0 + 2 * HOLD {
            match c.verdict(t, Some(5 * MS), i, tg) {
                Verdict::Send => {}
                Verdict::Drop => drops.push(t),
                Verdict::DropAndHold => {
                    drops.push(t);
                    holds += 1;
                }
            }
            t += MS / 4;
        }
        let first = drops[..EPISODE_DROPS_MAX as usize].to_vec();
        assert!(first[first.len() - 1] < t0 + 10 * i, "{first:?}");
        assert_eq!(holds, 2);
        let paused = first[first.len() - 1];
        let next = drops[EPISODE_DROPS_MAX as usize];
        assert!(next >= paused + HOLD + i, "{next:?} vs {paused:?}");
        assert_eq!(drops.len(), 2 * EPISODE_DROPS_MAX as usize);
    }

    /// A TCP inside that answers every drop (cubic) behind a queue another
    /// flow keeps standing: after each drop it backs off until the
    /// session sends too little to be measured, the episode ends for lack
    /// of samples after a drop or two, and the next begins when it comes
    /// back; no episode reaches EPISODE_DROPS_MAX. The drops still count
    /// towards the pause while the standing delay is never measured below
    /// the target, so the flow pauses by the EPISODE_DROPS_MAX-th drop.
    #[test]
    fn drops_over_episodes_cut_short_by_silence_pause_them_too() {
        let (t0, i, tg, mut c) = above_once();
        let mut t = t0;
        let mut drops = 0;
        let mut held = false;
        let mut episodes = 0;
        while !held && t < t0 + Duration::from_secs(2) {
            // Traffic: measured 5 ms standing until the episode's first
            // drop, and one more interval.
            let mut dropped = 0;
            while dropped < 2 && t < t0 + Duration::from_secs(2) {
                match c.verdict(t, Some(5 * MS), i, tg) {
                    Verdict::Send => {}
                    Verdict::Drop => dropped += 1,
                    Verdict::DropAndHold => {
                        dropped += 1;
                        held = true;
                        break;
                    }
                }
                t += MS / 4;
            }
            drops += dropped;
            episodes += 1;
            // Silence: nothing measured for five intervals.
            let quiet = t + 5 * i;
            while t < quiet {
                assert_eq!(c.verdict(t, None, i, tg), Verdict::Send);
                t += MS / 4;
            }
        }
        assert!(held, "{drops} drops in {episodes} episodes, no pause");
        assert_eq!(drops, EPISODE_DROPS_MAX);
        assert!(episodes > 1);
        // During the pause nothing is dropped.
        assert_eq!(c.verdict(t, Some(5 * MS), i, tg), Verdict::Send);
        assert_eq!(c.verdict(t + HOLD / 2, Some(5 * MS), i, tg), Verdict::Send);

        // The same episodes with the delay measured below the target in
        // between (a queue the session's drops drained): plain CoDel, no
        // pause.
        let (t0, i, tg, mut c) = above_once();
        let mut t = t0;
        let mut drops = 0;
        while drops < 3 * EPISODE_DROPS_MAX {
            match c.verdict(t, Some(5 * MS), i, tg) {
                Verdict::Send => {}
                Verdict::Drop => {
                    drops += 1;
                    if drops % 2 == 0 {
                        let quiet = t + 5 * i;
                        while t < quiet {
                            let _ = c.verdict(t, Some(Duration::ZERO), i, tg);
                            t += MS / 4;
                        }
                    }
                }
                Verdict::DropAndHold => panic!("paused after {drops} drops"),
            }
            t += MS / 4;
        }
    }
}
