//! Timestamps, timestamp echo and the retransmission timeout (RFC 7016
//! 3.5.2.1).
//!
//! Three small sans-IO pieces, one per concern, plus [`Timestamps`] which
//! bundles them for a session:
//!
//! - [`Clock`]: the 250 Hz packet timestamp clock (RFC 7016 2.2.4), 4 ms
//!   ticks, low 16 bits, relative to an origin `Instant` chosen by the
//!   session.
//! - [`EchoState`]: the receive side of the Timestamp Echo facility
//!   (TS_RX, TS_RX_TIME, TS_ECHO_TX), which every endpoint MUST implement.
//! - [`RttEstimator`]: the send side (TS_TX, TS_ECHO_RX) and the OPTIONAL
//!   method of 3.5.2.1 for SRTT, RTTVAR, MRT0 and ERT0, including the
//!   exponential backoff on retransmission timeout.
//!
//! Every step follows the numbered steps of RFC 7016 3.5.2.1 literally; the
//! tests check hand-computed sequences.

use std::time::{Duration, Instant};

/// Length of one timestamp tick: the clock runs at 250 Hz (RFC 7016 2.2.4).
pub const TICK: Duration = Duration::from_millis(4);

/// A timestamp echo older than this is no longer sent (RFC 7016 3.5.2.1,
/// step 1).
pub const ECHO_EXPIRY: Duration = Duration::from_secs(128);

/// Initial MRT0 (RFC 7016 3.5.2.1: "Initialize MRT0 to 250 milliseconds").
pub const INITIAL_MRT0: Duration = Duration::from_millis(250);

/// Initial ERT0 before any measurement (RFC 7016 3.5.2.1: "Initialize ERT0
/// to 3 seconds").
pub const INITIAL_ERT0: Duration = Duration::from_secs(3);

/// Floor of ERT0 (RFC 7016 3.5.2.1 step 8; "SHOULD be at least 250 ms").
pub const MIN_ERT0: Duration = Duration::from_millis(250);

/// Allowance for the receiver's delayed acknowledgement, added to MRT0
/// (RFC 7016 3.5.2.1 step 7, 3.6.3.4.4).
pub const ACK_DELAY_ALLOWANCE: Duration = Duration::from_millis(200);

/// Ultimate cap of the exponential ERT0 backoff (RFC 7016 3.5.2.1).
pub const MAX_ERT0_BACKOFF: Duration = Duration::from_secs(10);

/// RTT_TICKS above this are invalid measurements (RFC 7016 3.5.2.1 step 3).
pub const MAX_RTT_TICKS: u16 = 32767;

/// The 250 Hz timestamp clock of a session (RFC 7016 2.2.4: "the low 16
/// bits of the sender's 250 Hz clock ... MAY have its origin at any time in
/// the past").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    pub fn new(origin: Instant) -> Self {
        Clock { origin }
    }

    /// The current send timestamp: whole 4 ms periods since the origin,
    /// modulo 65536. Times before the origin count as the origin.
    pub fn ticks(&self, now: Instant) -> u16 {
        whole_ticks(now.saturating_duration_since(self.origin)) as u16
    }
}

/// Number of whole 4 ms periods in `d` (RFC 7016 3.5.2.1 step 2).
fn whole_ticks(d: Duration) -> u64 {
    // u128 -> u64: 4 ms ticks of any Duration fit comfortably (max about
    // 2^64 s / 4 ms < 2^73, so clamp rather than truncate).
    u64::try_from(d.as_millis() / TICK.as_millis()).unwrap_or(u64::MAX)
}

/// Receive side of the Timestamp Echo facility (RFC 7016 3.5.2.1), which an
/// endpoint MUST implement.
///
/// Created when the session enters OPEN: TS_RX_TIME is negative infinity
/// (`None`), TS_RX and TS_ECHO_TX have no value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoState {
    ts_rx: Option<u16>,
    ts_rx_time: Option<Instant>,
    ts_echo_tx: Option<u16>,
}

impl EchoState {
    pub fn new() -> Self {
        Self::default()
    }

    /// A packet arrived in the OPEN session; `timestamp` is its timestamp
    /// field if timestampPresent was set. If it differs from TS_RX, TS_RX
    /// takes its value and TS_RX_TIME becomes `now`.
    pub fn on_packet_received(&mut self, now: Instant, timestamp: Option<u16>) {
        if let Some(ts) = timestamp {
            if self.ts_rx != Some(ts) {
                self.ts_rx = Some(ts);
                self.ts_rx_time = Some(now);
            }
        }
    }

    /// A packet is about to be sent to the far end: returns the
    /// timestampEcho field to include (and so whether to set
    /// timestampEchoPresent), following steps 1-4 of RFC 7016 3.5.2.1. An
    /// echo is only returned when it differs from the previous one sent.
    pub fn echo_to_send(&mut self, now: Instant) -> Option<u16> {
        // Step 1: TS_RX_TIME is negative infinity until a timestamp arrives,
        // so the elapsed time is then "more than 128 seconds".
        let elapsed = match self.ts_rx_time {
            Some(t) => now.saturating_duration_since(t),
            None => Duration::MAX,
        };
        if elapsed > ECHO_EXPIRY {
            self.ts_rx = None;
            self.ts_echo_tx = None;
            return None;
        }
        let ts_rx = self.ts_rx?;
        // Step 2 and 3.
        let ticks = whole_ticks(elapsed);
        let echo = ts_rx.wrapping_add(ticks as u16);
        // Step 4.
        if self.ts_echo_tx != Some(echo) {
            self.ts_echo_tx = Some(echo);
            Some(echo)
        } else {
            None
        }
    }

    /// TS_RX: the last timestamp received from the far end.
    #[cfg(test)]
    pub fn ts_rx(&self) -> Option<u16> {
        self.ts_rx
    }

    /// TS_ECHO_TX: the last timestamp echo sent to the far end.
    #[cfg(test)]
    pub fn ts_echo_tx(&self) -> Option<u16> {
        self.ts_echo_tx
    }
}

/// Send side of the timestamps and the OPTIONAL RTT / ERT0 method of RFC
/// 7016 3.5.2.1: TS_TX, TS_ECHO_RX, SRTT, RTTVAR, MRT0, ERT0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RttEstimator {
    clock: Clock,
    ts_tx: Option<u16>,
    ts_echo_rx: Option<u16>,
    srtt: Option<Duration>,
    rttvar: Duration,
    mrt0: Duration,
    ert0: Duration,
    latest: Option<Duration>,
    samples: u64,
}

impl RttEstimator {
    /// State of a session entering OPEN, with its timestamp clock.
    pub fn new(clock: Clock) -> Self {
        RttEstimator {
            clock,
            ts_tx: None,
            ts_echo_rx: None,
            srtt: None,
            rttvar: Duration::ZERO,
            mrt0: INITIAL_MRT0,
            ert0: INITIAL_ERT0,
            latest: None,
            samples: 0,
        }
    }

    #[cfg(test)]
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// A packet is about to be sent: returns the timestamp field to include
    /// (set timestampPresent) when the current send timestamp differs from
    /// TS_TX, and records it as TS_TX (RFC 7016 3.5.2.1).
    pub fn timestamp_to_send(&mut self, now: Instant) -> Option<u16> {
        let ts = self.clock.ticks(now);
        if self.ts_tx != Some(ts) {
            self.ts_tx = Some(ts);
            Some(ts)
        } else {
            None
        }
    }

    /// A packet from the far end carried timestampEcho `echo`. Runs steps
    /// 1-8 of RFC 7016 3.5.2.1 and returns the measured RTT if the echo was
    /// new and the measurement valid.
    pub fn on_timestamp_echo(&mut self, now: Instant, echo: u16) -> Option<Duration> {
        if self.ts_echo_rx == Some(echo) {
            return None;
        }
        // Step 1.
        self.ts_echo_rx = Some(echo);
        // Step 2.
        let rtt_ticks = self.clock.ticks(now).wrapping_sub(echo);
        // Step 3.
        if rtt_ticks > MAX_RTT_TICKS {
            return None;
        }
        // Step 4.
        let rtt = TICK * u32::from(rtt_ticks);
        match self.srtt {
            // Step 5.
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
            // Step 6.
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        // Step 7 and 8.
        self.mrt0 = srtt + self.rttvar * 4 + ACK_DELAY_ALLOWANCE;
        self.ert0 = self.mrt0.max(MIN_ERT0);
        self.latest = Some(rtt);
        self.samples += 1;
        Some(rtt)
    }

    /// A retransmission timeout occurred (RFC 7016 3.5.2.1, 3.6.2.6 step
    /// 3): ERT0 = max(min(ERT0 * 1.4142, 10 s), MRT0). Also used when a
    /// keepalive Ping goes unanswered for ERT0 (RFC 7016 3.5.4.1).
    pub fn backoff(&mut self) {
        // Integer arithmetic keeps this exact and deterministic.
        let backoff_ns = self.ert0.as_nanos().saturating_mul(14142) / 10000;
        let backoff = Duration::from_nanos(u64::try_from(backoff_ns).unwrap_or(u64::MAX));
        self.ert0 = backoff.min(MAX_ERT0_BACKOFF).max(self.mrt0);
    }

    /// Forget the retransmission backoff (ERT0 = MRT0): the path changed,
    /// so the timeouts seen on the old one say nothing about the new one.
    pub fn reset_backoff(&mut self) {
        self.ert0 = self.mrt0;
    }

    /// SRTT, once a valid measurement has been made.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// RTTVAR (0 before any measurement).
    #[cfg(test)]
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// MRT0: SRTT + 4 RTTVAR + 200 ms, initially 250 ms.
    #[cfg(test)]
    pub fn mrt0(&self) -> Duration {
        self.mrt0
    }

    /// ERT0: the Effective Retransmission Timeout, initially 3 s.
    pub fn ert0(&self) -> Duration {
        self.ert0
    }

    /// The most recent valid RTT measurement.
    #[cfg(test)]
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }

    /// Number of valid measurements taken.
    #[cfg(test)]
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// A round trip estimate for once-per-round-trip rules (congestion
    /// reduction): SRTT when measured, otherwise ERT0.
    #[cfg(test)]
    pub fn round_trip(&self) -> Duration {
        self.srtt.unwrap_or(self.ert0)
    }
}

/// Per-session timestamp state: the clock, the echo state and the RTT
/// estimator, with one call per received packet and one per sent packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timestamps {
    pub echo: EchoState,
    pub rtt: RttEstimator,
}

/// Timestamp header fields for an outgoing packet (RFC 7016 2.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TimestampFields {
    /// timestamp; `Some` sets timestampPresent.
    pub timestamp: Option<u16>,
    /// timestampEcho; `Some` sets timestampEchoPresent.
    pub echo: Option<u16>,
}

impl Timestamps {
    /// State for a session entering OPEN at `now`; its clock's origin is
    /// `now`.
    pub fn new(now: Instant) -> Self {
        Timestamps {
            echo: EchoState::new(),
            rtt: RttEstimator::new(Clock::new(now)),
        }
    }

    /// A packet of the OPEN session arrived with these header fields.
    /// Returns the RTT measured from its echo, if any.
    pub fn on_packet_received(
        &mut self,
        now: Instant,
        timestamp: Option<u16>,
        echo: Option<u16>,
    ) -> Option<Duration> {
        self.echo.on_packet_received(now, timestamp);
        echo.and_then(|e| self.rtt.on_timestamp_echo(now, e))
    }

    /// The timestamp fields for a packet sent now.
    pub fn fields_to_send(&mut self, now: Instant) -> TimestampFields {
        TimestampFields {
            timestamp: self.rtt.timestamp_to_send(now),
            echo: self.echo.echo_to_send(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    proptest::proptest! {
        /// Within 128 s the echo is TS_RX plus the whole ticks elapsed,
        /// modulo 65536, and it is sent once per distinct value.
        #[test]
        fn echo_is_ts_plus_elapsed_ticks(ts: u16, elapsed_ms in 0u64..=128_000, again_ms in 0u64..4) {
            let t0 = Instant::now();
            let mut e = EchoState::new();
            e.on_packet_received(t0, Some(ts));
            let at = t0 + ms(elapsed_ms);
            let expect = ((u64::from(ts) + elapsed_ms / 4) % 65536) as u16;
            proptest::prop_assert_eq!(e.echo_to_send(at), Some(expect));
            let later = at + ms(again_ms);
            let next = e.echo_to_send(later);
            let same_tick = (elapsed_ms + again_ms) / 4 == elapsed_ms / 4;
            if same_tick || elapsed_ms + again_ms > 128_000 {
                proptest::prop_assert_eq!(next, None);
            } else {
                proptest::prop_assert!(next.is_some());
            }
        }

        /// The estimator measures exactly the tick difference when valid.
        #[test]
        fn rtt_is_tick_difference(now_ticks in 0u32..200_000, echo: u16) {
            let t0 = Instant::now();
            let mut r = RttEstimator::new(Clock::new(t0));
            let now = t0 + TICK * now_ticks;
            let diff = (now_ticks as u16).wrapping_sub(echo);
            let got = r.on_timestamp_echo(now, echo);
            if diff > MAX_RTT_TICKS {
                proptest::prop_assert_eq!(got, None);
                proptest::prop_assert_eq!(r.ert0(), INITIAL_ERT0);
            } else {
                proptest::prop_assert_eq!(got, Some(TICK * u32::from(diff)));
                proptest::prop_assert!(r.ert0() >= MIN_ERT0);
                proptest::prop_assert!(r.ert0() >= r.srtt().unwrap_or_default());
            }
        }
    }

    #[test]
    fn clock_ticks_are_4ms_low_16_bits() {
        let t0 = Instant::now();
        let c = Clock::new(t0);
        assert_eq!(c.ticks(t0), 0);
        assert_eq!(c.ticks(t0 + ms(3)), 0);
        assert_eq!(c.ticks(t0 + ms(4)), 1);
        assert_eq!(c.ticks(t0 + ms(4 * 1000 + 3)), 1000);
        // 65536 ticks = 262.144 s wraps to 0.
        assert_eq!(c.ticks(t0 + ms(262_144)), 0);
        assert_eq!(c.ticks(t0 + ms(262_144 + 8)), 2);
        // Before the origin counts as the origin.
        assert_eq!(Clock::new(t0 + ms(100)).ticks(t0), 0);
    }

    #[test]
    fn echo_none_before_any_timestamp() {
        let t0 = Instant::now();
        let mut e = EchoState::new();
        assert_eq!(e.echo_to_send(t0), None);
        // A packet without timestamp changes nothing.
        e.on_packet_received(t0, None);
        assert_eq!(e.echo_to_send(t0), None);
    }

    #[test]
    fn echo_sequence_by_hand() {
        // Hand-computed from RFC 7016 3.5.2.1 steps 1-4.
        let t0 = Instant::now();
        let mut e = EchoState::new();
        // TS_RX = 100, TS_RX_TIME = t0.
        e.on_packet_received(t0, Some(100));
        // Elapsed 0 -> 0 ticks -> echo 100, differs from none: send.
        assert_eq!(e.echo_to_send(t0), Some(100));
        // Elapsed 3 ms -> 0 whole ticks -> 100 == TS_ECHO_TX: no echo.
        assert_eq!(e.echo_to_send(t0 + ms(3)), None);
        // Elapsed 9 ms -> 2 ticks -> 102.
        assert_eq!(e.echo_to_send(t0 + ms(9)), Some(102));
        assert_eq!(e.echo_to_send(t0 + ms(11)), None);
        // Same timestamp again does not move TS_RX_TIME.
        e.on_packet_received(t0 + ms(20), Some(100));
        // Elapsed 20 ms from t0 -> 5 ticks -> 105.
        assert_eq!(e.echo_to_send(t0 + ms(20)), Some(105));
        // A new timestamp 200 at t0+40: echo 200 + ticks since t0+40.
        e.on_packet_received(t0 + ms(40), Some(200));
        assert_eq!(e.echo_to_send(t0 + ms(44)), Some(201));
        assert_eq!(e.ts_rx(), Some(200));
        assert_eq!(e.ts_echo_tx(), Some(201));
    }

    #[test]
    fn echo_wraps_modulo_65536() {
        let t0 = Instant::now();
        let mut e = EchoState::new();
        e.on_packet_received(t0, Some(65535));
        // 2 ticks later: (65535 + 2) mod 65536 = 1.
        assert_eq!(e.echo_to_send(t0 + ms(8)), Some(1));
    }

    #[test]
    fn echo_expires_after_128_seconds() {
        let t0 = Instant::now();
        let mut e = EchoState::new();
        e.on_packet_received(t0, Some(7));
        // Exactly 128 s is not "more than 128 seconds": 32000 ticks.
        assert_eq!(e.echo_to_send(t0 + ECHO_EXPIRY), Some(7 + 32000));
        // Just past: expired, TS_RX and TS_ECHO_TX cleared.
        assert_eq!(e.echo_to_send(t0 + ECHO_EXPIRY + ms(1)), None);
        assert_eq!(e.ts_rx(), None);
        assert_eq!(e.ts_echo_tx(), None);
        // Still none while nothing new arrives.
        assert_eq!(e.echo_to_send(t0 + ECHO_EXPIRY + ms(100)), None);
        // The same timestamp value again now counts as different from
        // "no value", so it restarts the echo.
        let t1 = t0 + ECHO_EXPIRY + ms(200);
        e.on_packet_received(t1, Some(7));
        assert_eq!(e.echo_to_send(t1 + ms(4)), Some(8));
    }

    #[test]
    fn timestamp_sent_only_when_changed() {
        let t0 = Instant::now();
        let mut r = RttEstimator::new(Clock::new(t0));
        assert_eq!(r.timestamp_to_send(t0), Some(0));
        assert_eq!(r.timestamp_to_send(t0 + ms(3)), None);
        assert_eq!(r.timestamp_to_send(t0 + ms(4)), Some(1));
        assert_eq!(r.timestamp_to_send(t0 + ms(7)), None);
    }

    #[test]
    fn initial_values() {
        let r = RttEstimator::new(Clock::new(Instant::now()));
        assert_eq!(r.srtt(), None);
        assert_eq!(r.rttvar(), Duration::ZERO);
        assert_eq!(r.mrt0(), ms(250));
        assert_eq!(r.ert0(), ms(3000));
        assert_eq!(r.round_trip(), ms(3000));
    }

    #[test]
    fn rtt_steps_by_hand() {
        let t0 = Instant::now();
        let mut r = RttEstimator::new(Clock::new(t0));
        // Now = tick 25 (100 ms), echo of tick 0: RTT_TICKS 25, RTT 100 ms.
        assert_eq!(r.on_timestamp_echo(t0 + ms(100), 0), Some(ms(100)));
        // Step 6: SRTT = 100, RTTVAR = 50; MRT0 = 100 + 200 + 200 = 500.
        assert_eq!(r.srtt(), Some(ms(100)));
        assert_eq!(r.rttvar(), ms(50));
        assert_eq!(r.mrt0(), ms(500));
        assert_eq!(r.ert0(), ms(500));
        // Same echo again: ignored (equal to TS_ECHO_RX).
        assert_eq!(r.on_timestamp_echo(t0 + ms(400), 0), None);
        assert_eq!(r.srtt(), Some(ms(100)));
        // Now tick 100 (400 ms), echo 50: RTT 50 ticks = 200 ms.
        assert_eq!(r.on_timestamp_echo(t0 + ms(400), 50), Some(ms(200)));
        // Step 5: delta 100; RTTVAR = (150 + 100)/4 = 62.5;
        // SRTT = (700 + 200)/8 = 112.5.
        assert_eq!(r.rttvar(), Duration::from_micros(62_500));
        assert_eq!(r.srtt(), Some(Duration::from_micros(112_500)));
        // MRT0 = 112.5 + 250 + 200 = 562.5.
        assert_eq!(r.mrt0(), Duration::from_micros(562_500));
        assert_eq!(r.ert0(), Duration::from_micros(562_500));
        assert_eq!(r.samples(), 2);
    }

    #[test]
    fn invalid_measurement_discarded() {
        let t0 = Instant::now();
        let mut r = RttEstimator::new(Clock::new(t0));
        // Current tick 10, echo 20: (10 - 20) mod 65536 = 65526 > 32767.
        assert_eq!(r.on_timestamp_echo(t0 + ms(40), 20), None);
        assert_eq!(r.srtt(), None);
        assert_eq!(r.ert0(), INITIAL_ERT0);
        // But TS_ECHO_RX was set (step 1), so the same echo is ignored even
        // later when it would be valid.
        assert_eq!(r.on_timestamp_echo(t0 + ms(200), 20), None);
        // Boundary: 32767 ticks is valid, 32768 is not.
        let mut r = RttEstimator::new(Clock::new(t0));
        let now = t0 + TICK * 32768;
        assert_eq!(r.on_timestamp_echo(now, 0), None);
        assert_eq!(r.on_timestamp_echo(now, 1), Some(TICK * 32767));
    }

    #[test]
    fn rtt_wraps_modulo_65536() {
        let t0 = Instant::now();
        let mut r = RttEstimator::new(Clock::new(t0));
        // Current tick 65536 + 5 = 5 (mod), echo 65530: RTT 11 ticks.
        let now = t0 + TICK * (65536 + 5);
        assert_eq!(r.on_timestamp_echo(now, 65530), Some(TICK * 11));
    }

    #[test]
    fn estimator_converges() {
        let t0 = Instant::now();
        let clock = Clock::new(t0);
        let mut r = RttEstimator::new(clock);
        let mut now = t0 + ms(1000);
        // A few slow samples first (400 ms), then a steady 80 ms path.
        for i in 0..205u32 {
            now += ms(10);
            let rtt = if i < 5 { ms(400) } else { ms(80) };
            let _ = r.on_timestamp_echo(now, clock.ticks(now - rtt));
        }
        let srtt = r.srtt().expect("srtt");
        assert!(srtt.abs_diff(ms(80)) < ms(1), "{srtt:?}");
        assert!(r.rttvar() < ms(1), "{:?}", r.rttvar());
        // MRT0 = SRTT + 4 RTTVAR + 200 ms ~ 280 ms.
        assert!(r.mrt0().abs_diff(ms(280)) < ms(5), "{:?}", r.mrt0());
        assert_eq!(r.ert0(), r.mrt0());
        assert_eq!(r.latest(), Some(ms(80)));
    }

    #[test]
    fn ert0_floor_250ms() {
        let t0 = Instant::now();
        let mut r = RttEstimator::new(Clock::new(t0));
        // RTT 0 ticks: SRTT 0, RTTVAR 0, MRT0 = 200 ms, ERT0 = 250 ms.
        assert_eq!(r.on_timestamp_echo(t0 + ms(2), 0), Some(Duration::ZERO));
        assert_eq!(r.mrt0(), ms(200));
        assert_eq!(r.ert0(), ms(250));
    }

    #[test]
    fn backoff_multiplies_caps_and_floors() {
        let t0 = Instant::now();
        let mut r = RttEstimator::new(Clock::new(t0));
        // From the initial 3 s: 4.2426 s, 5.99988... s, ...
        r.backoff();
        assert_eq!(r.ert0(), Duration::from_micros(4_242_600));
        r.backoff();
        assert_eq!(r.ert0(), Duration::from_nanos(5_999_884_920));
        for _ in 0..10 {
            r.backoff();
        }
        assert_eq!(r.ert0(), MAX_ERT0_BACKOFF);

        // Floor MRT0: with a huge measured RTT MRT0 exceeds the cap.
        let mut r = RttEstimator::new(Clock::new(t0));
        // RTT 3000 ticks = 12 s: SRTT 12, RTTVAR 6, MRT0 = 36.2 s.
        assert_eq!(r.on_timestamp_echo(t0 + TICK * 3000, 0), Some(ms(12_000)));
        assert_eq!(r.mrt0(), ms(36_200));
        r.backoff();
        assert_eq!(r.ert0(), ms(36_200));

        // Backoff from the 250 ms floor: 353.55 ms, not below MRT0 (200).
        let mut r = RttEstimator::new(Clock::new(t0));
        r.on_timestamp_echo(t0, 0);
        assert_eq!(r.ert0(), ms(250));
        r.backoff();
        assert_eq!(r.ert0(), Duration::from_micros(353_550));
    }

    #[test]
    fn timestamps_round_trip_between_two_ends() {
        // Two ends, 60 ms one way; each echoes the other's timestamp.
        let t0 = Instant::now();
        let mut a = Timestamps::new(t0);
        let mut b = Timestamps::new(t0 + ms(1234));
        let t0 = t0 + ms(2000);
        let one_way = ms(60);
        let mut now = t0;
        let mut measured = None;
        for _ in 0..20 {
            let fa = a.fields_to_send(now);
            now += one_way;
            b.on_packet_received(now, fa.timestamp, fa.echo);
            now += ms(5); // processing delay at b, echo compensates
            let fb = b.fields_to_send(now);
            now += one_way;
            if let Some(rtt) = a.on_packet_received(now, fb.timestamp, fb.echo) {
                measured = Some(rtt);
            }
            now += ms(17);
        }
        let rtt = measured.expect("measured");
        // 120 ms of flight, quantised to 4 ms ticks on both clocks.
        assert!(rtt >= ms(112) && rtt <= ms(128), "{rtt:?}");
        let srtt = a.rtt.srtt().expect("srtt");
        assert!(srtt >= ms(112) && srtt <= ms(128), "{srtt:?}");
    }
}
