//! Session congestion control and burst avoidance (RFC 7016 3.5.2,
//! 3.5.2.2), sans-IO.
//!
//! The transmission budget of an OPEN session is a congestion window in
//! bytes of user data in flight, managed as TCP does it (RFC 5681), which
//! RFC 7016 3.5.2 requires ("TCP compatible", "SHOULD NOT be more aggressive
//! than" RFC 5681):
//!
//! - initial window: RFC 5681 3.1 (2, 3 or 4 segments depending on the MSS);
//! - slow start while cwnd < ssthresh, growing by the bytes acknowledged,
//!   at most 2 MSS per acknowledgement (appropriate byte counting, RFC 3465,
//!   L = 2), so the window doubles per round trip;
//! - congestion avoidance: one MSS per window of acknowledged bytes (the
//!   byte-counting form of RFC 5681 3.1), so about one MSS per round trip;
//! - multiplicative decrease to max(cwnd / 2, 2 MSS) when a fragment is
//!   declared lost by negative acknowledgement (RFC 7016 3.6.2.5), at most
//!   once per round trip;
//! - on an ERT0 retransmission timeout with loss (RFC 7016 3.6.2.6):
//!   ssthresh = max(cwnd / 2, 2 MSS), cwnd = 1 MSS (the loss window);
//! - restart after idle (RFC 5681 4.1): when no user data was sent for more
//!   than the retransmission timeout, cwnd = min(cwnd, initial window);
//! - the window only grows while it is in use: an acknowledgement grows it
//!   only if at least half of it was outstanding (the RFC 7661 rule that an
//!   application-limited sender does not inflate its window);
//! - time critical traffic (RFC 7016 3.5.2): while the far end has set the
//!   Time Critical Reverse (TCR) flag within the last 800 ms and this end
//!   is not itself sending time critical (TC) data, slow start is disabled
//!   (as though ssthresh were 0) and the window grows by at most
//!   max(384 bytes, 0.5 % of cwnd) per round trip;
//! - burst avoidance (RFC 7016 3.5.2.2): the DATA_PACKET_COUNT method, at
//!   most six packets with user data between acknowledgements or
//!   retransmission timeouts, plus one packet for each packet's worth of
//!   data the acknowledgement newly acknowledged (at most
//!   [`BURST_ACKED_MAX`]): six packets beyond what the acknowledgement
//!   clock releases. A receiver that acknowledges every second packet, as
//!   the RFC asks, gets about the RFC's six; one that acknowledges a batch
//!   of packets read together with one acknowledgement (`flow`, "ack
//!   clock") keeps the sender's clock without an acknowledgement datagram
//!   per four packets. The RFC's purpose, no burst that fills a large
//!   window while little is outstanding, holds: little outstanding means
//!   little acknowledged, and six packets more. And, beyond the RFC's
//!   optional method, a burst release: when no acknowledgement came within
//!   [`Congestion::burst_release_at`] (two smoothed round trips, at least
//!   [`BURST_RELEASE_MIN`]) of the burst's last packet, the count restarts as on a
//!   timeout. Without it one lost acknowledgement (the receiver acknowledges
//!   a batch of packets with one) stops the session until the
//!   retransmission timeout, at least 250 ms: at 1% loss several times a
//!   second (`tunnel/tests/frames.rs`). The window still bounds what is in
//!   flight, and the packets sent after the release draw the acknowledgement
//!   that restarts the clock, like a tail loss probe (RFC 8985 7).
//!
//! # Frames: a circuit breaker instead of a second loss response
//!
//! Most bytes of a ringlan session are Ethernet frames on a NoRetransmit
//! flow. What they carry (TCP, QUIC, ...) runs its own congestion control
//! end to end and sees a lost frame as its own loss; halving the session's
//! window for the same loss answers it twice, and at random (non-congestive)
//! loss the session's window then follows the square-root law of a Reno
//! sender on top of the inner one: about 0.35 Gbit/s at 1% loss on a
//! 0.4 ms path whatever the inner TCP could do. The UDP usage guidelines
//! for tunnels carrying IP traffic (RFC 8085, with RFC 8084's network
//! transport circuit breakers) ask for exactly this split: the traffic
//! inside is congestion controlled by its own ends, and the tunnel only has
//! to stop traffic that does not respond.
//!
//! So loss of NoRetransmit fragments ([`Congestion::on_frame_loss`],
//! [`Congestion::on_frame_timeout`]) does not halve the window per event.
//! It is measured instead: per measurement window (at least one congestion
//! window and [`BREAKER_MIN_WINDOW_MSS`] segments of data acknowledged or
//! lost, and at least [`BREAKER_MIN_ROUND_TRIPS`] smoothed round trips),
//! when more than 1/[`BREAKER_LOSS_DIVISOR`] of it was frame loss, the
//! window is halved as for a congestion event. Inner traffic that
//! responds to loss never gets there (it backs off first); a flood of
//! unresponsive traffic into a congested path does, and is then held to
//! the share Reno would get at that loss rate. The round trips matter at a
//! drop-tail bottleneck: one overflow drops a burst, often more than a
//! tenth of one round trip's data; measured over one window, the breaker
//! halved the session on top of the inner TCP's own response to the same
//! burst, ten times a second at a 5 ms queue, and the session then got a
//! third of a plain TCP flow's share (docs/dataplane.md, "Fairness").
//! RFC 8084's circuit breakers likewise measure over intervals long
//! against the round trip. Loss of reliable data (the
//! control flows) keeps the RFC 5681 response above, and a timeout with
//! reliable data in flight still collapses the window. Burst avoidance and
//! the window itself stay in force for frames: a frame never leaves before
//! the window has room.
//!
//! Which sessions should carry TCR is an endpoint-wide question: the
//! endpoint sets it on every session for 800 ms after any packet with TC
//! ([`TIME_CRITICAL_HOLD`]).
//!
//! The controller knows nothing about flows: the session reports bytes sent,
//! acknowledged and lost, and asks for a budget before sending.
//!
//! # How a session drives it
//!
//! - every received packet: `on_packet_received(now, header.tcr)`;
//! - after processing the acknowledgement chunks of a packet (RFC 7016
//!   3.6.2.4): `on_ack(now, acked_bytes, outstanding_before)` with the sum
//!   over its flows, even when 0; then, for each fragment declared lost by
//!   3.6.2.5, `on_nack_loss(now, fragment_bytes, fragment_sent_at)`;
//! - whenever ERT0 changes (`RttEstimator::on_timestamp_echo`, `backoff`):
//!   `set_rto(ert0)`;
//! - TIMEOUT_ALARM (3.6.2.6): `RttEstimator::backoff()` if ANY_LOSS, then
//!   `on_timeout(now, any_loss)`;
//! - before assembling user data: `send_budget(now, outstanding)`; a
//!   fragment fits if its size is at most the budget; after sending a
//!   packet with user data: `on_packet_sent(now, user_bytes, header.tc)`;
//! - after a path MTU change: `set_mss(new_payload_size)`.

use std::time::{Duration, Instant};

/// Packets with user data allowed between acknowledgements or timeouts
/// (RFC 7016 3.5.2.2).
pub const BURST_LIMIT_PACKETS: u32 = 6;

/// Packets newly acknowledged by one acknowledgement that count towards
/// the next burst on top of [`BURST_LIMIT_PACKETS`] (module docs): twice
/// what a receiver acknowledging with the ack clock covers per
/// acknowledgement (`flow::ACK_CLOCK_PACKETS`).
pub const BURST_ACKED_MAX: u32 = 32;

/// Shortest wait for an acknowledgement after a full burst before the burst
/// is released (module docs).
pub const BURST_RELEASE_MIN: Duration = Duration::from_millis(2);

/// How long a received TCR (or a sent TC) keeps its effect (RFC 7016 3.5.2:
/// "within the last at least 800 milliseconds").
pub const TIME_CRITICAL_HOLD: Duration = Duration::from_millis(800);

/// Minimum per-round-trip increase allowed under TCR restraint, in bytes
/// (RFC 7016 3.5.2: "384 bytes per round trip or 0.5%").
pub const TCR_MIN_INCREASE: usize = 384;

/// Divisor for the 0.5 % per round trip growth under TCR restraint.
pub const TCR_INCREASE_DIVISOR: usize = 200;

/// Appropriate byte counting limit in slow start, in MSS (RFC 3465, L = 2).
pub const SLOW_START_ABC_LIMIT: usize = 2;

/// The frame-loss circuit breaker trips when more than 1/10 of a
/// measurement window was frame loss (module docs, "Frames").
pub const BREAKER_LOSS_DIVISOR: usize = 10;

/// A breaker measurement window spans at least this many segments of
/// acknowledged or lost data (and at least one congestion window), so one
/// loss in a small window cannot trip it.
pub const BREAKER_MIN_WINDOW_MSS: usize = 32;

/// A breaker measurement window also spans at least this many smoothed
/// round trips, so one congestion event, which the traffic inside answers
/// within its own round trip, is averaged over many (module docs,
/// "Frames").
pub const BREAKER_MIN_ROUND_TRIPS: u32 = 8;

/// RFC 5681 3.1 initial window for a given MSS.
pub fn initial_window(mss: usize) -> usize {
    let mss = mss.max(1);
    if mss > 2190 {
        2 * mss
    } else if mss > 1095 {
        3 * mss
    } else {
        4 * mss
    }
}

/// A snapshot of the controller for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CongestionStats {
    /// Congestion window, bytes.
    pub cwnd: usize,
    /// Slow start threshold, bytes; `None` while still unbounded.
    pub ssthresh: Option<usize>,
    /// Maximum segment size in use, bytes.
    pub mss: usize,
    /// DATA_PACKET_COUNT of RFC 7016 3.5.2.2.
    pub data_packet_count: u32,
    /// Multiplicative decreases caused by negative acknowledgement loss.
    pub loss_reductions: u64,
    /// Retransmission timeouts with loss.
    pub timeouts: u64,
    /// Window restarts after idle.
    pub idle_restarts: u64,
    /// Total bytes acknowledged.
    pub acked_bytes: u64,
    /// Total bytes reported lost by negative acknowledgement.
    pub lost_bytes: u64,
    /// Total bytes of user data reported sent.
    pub sent_bytes: u64,
    /// Total bytes of frames (NoRetransmit) lost, by nack or timeout.
    pub frame_lost_bytes: u64,
    /// Window reductions by the frame-loss circuit breaker.
    pub breaker_trips: u64,
    /// Bursts released without an acknowledgement (module docs).
    pub burst_releases: u64,
    /// Window restarts because the session's path changed
    /// ([`Congestion::path_changed`]).
    pub path_restarts: u64,
}

/// TCP-compatible congestion control for one session (RFC 7016 3.5.2).
#[derive(Clone, Debug)]
pub struct Congestion {
    mss: usize,
    cwnd: usize,
    /// `usize::MAX` means "arbitrarily high" (RFC 5681 3.1).
    ssthresh: usize,
    /// Bytes acknowledged towards the next congestion avoidance increase.
    bytes_acked: usize,
    /// DATA_PACKET_COUNT (RFC 7016 3.5.2.2).
    data_packet_count: u32,
    /// Packets the current burst may hold: [`BURST_LIMIT_PACKETS`] plus
    /// what the last acknowledgement newly acknowledged (module docs).
    burst_limit: u32,
    /// When the burst limit was reached with no acknowledgement since.
    burst_full_at: Option<Instant>,
    /// Smoothed round-trip time, for the burst release.
    srtt: Option<Duration>,
    /// When the window was last reduced; losses of fragments sent before
    /// this are part of that congestion event.
    recovery_start: Option<Instant>,
    /// Whether the last loss event was a timeout with no acknowledgement
    /// since (RFC 5681: ssthresh is not lowered again on repeated timeouts).
    in_timeout: bool,
    last_send: Option<Instant>,
    idle_timeout: Duration,
    last_tcr_rx: Option<Instant>,
    last_tc_tx: Option<Instant>,
    loss_reductions: u64,
    timeouts: u64,
    idle_restarts: u64,
    acked_total: u64,
    lost_total: u64,
    sent_total: u64,
    /// Frame-loss breaker: bytes acknowledged and frame bytes lost in the
    /// current measurement window.
    breaker_acked: usize,
    breaker_lost: usize,
    /// When the current breaker measurement window began.
    breaker_start: Option<Instant>,
    frame_lost_total: u64,
    breaker_trips: u64,
    burst_releases: u64,
    path_restarts: u64,
}

impl Congestion {
    /// A controller for a session whose packets carry at most `mss` bytes of
    /// user data. The window starts at the RFC 5681 initial window.
    pub fn new(mss: usize) -> Self {
        let mss = mss.max(1);
        Congestion {
            mss,
            cwnd: initial_window(mss),
            ssthresh: usize::MAX,
            bytes_acked: 0,
            data_packet_count: 0,
            burst_limit: BURST_LIMIT_PACKETS,
            burst_full_at: None,
            srtt: None,
            recovery_start: None,
            in_timeout: false,
            last_send: None,
            idle_timeout: crate::rtt::INITIAL_ERT0,
            last_tcr_rx: None,
            last_tc_tx: None,
            loss_reductions: 0,
            timeouts: 0,
            idle_restarts: 0,
            acked_total: 0,
            lost_total: 0,
            sent_total: 0,
            breaker_acked: 0,
            breaker_lost: 0,
            breaker_start: None,
            frame_lost_total: 0,
            breaker_trips: 0,
            burst_releases: 0,
            path_restarts: 0,
        }
    }

    /// The session's packets now take another path (another address, not
    /// a NAT's new port for the same one: a failover to a relayed route, a
    /// move back to a direct path, a peer on another network): the window
    /// was learnt on the old path, and a window of megabytes from a LAN
    /// would go at once into a relay or a slower link. Back to the initial
    /// window in slow start, as for a new connection (RFC 5681 3.1; a QUIC
    /// connection that migrates does the same, RFC 9000 9.4). The burst,
    /// the time-critical state and the counters stay.
    pub fn path_changed(&mut self) {
        self.cwnd = initial_window(self.mss);
        self.ssthresh = usize::MAX;
        self.bytes_acked = 0;
        self.recovery_start = None;
        self.in_timeout = false;
        self.breaker_acked = 0;
        self.breaker_lost = 0;
        self.breaker_start = None;
        self.path_restarts += 1;
    }

    /// The congestion window, bytes.
    pub fn window(&self) -> usize {
        self.cwnd
    }

    #[cfg(test)]
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// The slow start threshold; `None` while unbounded.
    pub fn ssthresh(&self) -> Option<usize> {
        (self.ssthresh != usize::MAX).then_some(self.ssthresh)
    }

    /// Bytes of frames lost so far (the `frame_lost_bytes` of
    /// [`Congestion::stats`], without building the whole snapshot).
    pub fn frame_lost_bytes(&self) -> u64 {
        self.frame_lost_total
    }

    /// Set the retransmission timeout used for restart after idle; the
    /// session passes ERT0 whenever it changes.
    pub fn set_rto(&mut self, ert0: Duration) {
        self.idle_timeout = ert0;
    }

    /// The session's smoothed round-trip time, whenever it changes.
    pub fn set_srtt(&mut self, srtt: Option<Duration>) {
        self.srtt = srtt;
    }

    /// When a full burst with no acknowledgement since is released (module
    /// docs); `None` unless the burst limit holds sending back.
    pub fn burst_release_at(&self) -> Option<Instant> {
        let wait = self
            .srtt
            .map_or(BURST_RELEASE_MIN, |s| s.saturating_mul(2))
            .max(BURST_RELEASE_MIN);
        self.burst_full_at.and_then(|t| t.checked_add(wait))
    }

    /// Release the burst limit if its time came (module docs).
    pub fn release_burst(&mut self, now: Instant) {
        if self.burst_release_at().is_some_and(|t| now >= t) {
            self.end_burst(BURST_LIMIT_PACKETS);
            self.burst_releases += 1;
        }
    }

    /// Start a new burst of at most `limit` packets.
    fn end_burst(&mut self, limit: u32) {
        self.data_packet_count = 0;
        self.burst_limit = limit;
        self.burst_full_at = None;
    }

    /// Bytes of user data that may be put in flight now, given `outstanding`
    /// bytes already in flight: the room in the window (after restart after
    /// idle), limited by burst avoidance to what the remaining packets of
    /// the burst can carry, and 0 once the burst is full (RFC 7016
    /// 3.5.2.2, module docs).
    pub fn send_budget(&self, now: Instant, outstanding: usize) -> usize {
        if self.data_packet_count >= self.burst_limit {
            return 0;
        }
        let cwnd = if self.idle_expired(now) {
            self.cwnd.min(initial_window(self.mss))
        } else {
            self.cwnd
        };
        let burst = (self.burst_limit - self.data_packet_count) as usize * self.mss;
        cwnd.saturating_sub(outstanding).min(burst)
    }

    /// Whether another packet with user data may be sent at all under
    /// burst avoidance (RFC 7016 3.5.2.2).
    pub fn burst_allows(&self) -> bool {
        self.data_packet_count < self.burst_limit
    }

    /// A packet containing at least one User Data chunk carrying `bytes` of
    /// user data was sent; `time_critical` if its TC flag was set.
    pub fn on_packet_sent(&mut self, now: Instant, bytes: usize, time_critical: bool) {
        if self.idle_expired(now) {
            let restart = self.cwnd.min(initial_window(self.mss));
            if restart < self.cwnd {
                self.cwnd = restart;
                self.bytes_acked = 0;
                self.idle_restarts += 1;
            }
        }
        self.sent_total = self.sent_total.saturating_add(bytes as u64);
        self.data_packet_count = self.data_packet_count.saturating_add(1);
        if self.data_packet_count >= self.burst_limit && self.burst_full_at.is_none() {
            self.burst_full_at = Some(now);
        }
        self.last_send = Some(now);
        if time_critical {
            self.last_tc_tx = Some(now);
        }
    }

    /// A packet arrived from the far end; `tcr` is its Time Critical Reverse
    /// flag (RFC 7016 2.2.4, 3.5.2).
    pub fn on_packet_received(&mut self, now: Instant, tcr: bool) {
        if tcr {
            self.last_tcr_rx = Some(now);
        }
    }

    /// A packet with at least one acknowledgement chunk was processed;
    /// `acked_bytes` of user data left flight because they were
    /// acknowledged (RFC 7016 3.6.2.4 step 5, summed over the packet's
    /// acknowledgements) and `outstanding_before` were in flight before.
    /// Call it even when nothing new was acknowledged: receipt of an
    /// acknowledgement ends the burst (RFC 7016 3.5.2.2), and the next may
    /// hold six packets plus those it acknowledged (module docs).
    pub fn on_ack(&mut self, now: Instant, acked_bytes: usize, outstanding_before: usize) {
        let acked_packets = acked_bytes.div_ceil(self.mss.max(1));
        let acked_packets = u32::try_from(acked_packets).unwrap_or(u32::MAX);
        self.end_burst(BURST_LIMIT_PACKETS + acked_packets.min(BURST_ACKED_MAX));
        if acked_bytes == 0 {
            return;
        }
        self.in_timeout = false;
        self.acked_total = self.acked_total.saturating_add(acked_bytes as u64);
        self.breaker_acked = self.breaker_acked.saturating_add(acked_bytes);
        if self.breaker_check(now) {
            return;
        }
        // Application limited: the window was not in use, do not grow it.
        if outstanding_before.saturating_mul(2) < self.cwnd {
            return;
        }
        let restrained = self.tcr_restrained(now);
        if !restrained && self.cwnd < self.ssthresh {
            // Slow start with appropriate byte counting (L = 2), or half
            // of what an acknowledgement covering more than four packets
            // acknowledged: the growth per round trip of L = 2 with an
            // acknowledgement per four packets (RFC 5681's one MSS per
            // acknowledgement of every second packet gives the same 1.5x),
            // whatever the receiver's acknowledgement interval.
            let inc = acked_bytes
                .min(SLOW_START_ABC_LIMIT * self.mss)
                .max(acked_bytes / 2);
            self.cwnd = self.cwnd.saturating_add(inc);
            return;
        }
        // Congestion avoidance: one increment per window of acked bytes.
        self.bytes_acked = self.bytes_acked.saturating_add(acked_bytes);
        if self.bytes_acked >= self.cwnd {
            self.bytes_acked -= self.cwnd;
            let inc = if restrained {
                (self.cwnd / TCR_INCREASE_DIVISOR)
                    .max(TCR_MIN_INCREASE)
                    .min(self.mss)
            } else {
                self.mss
            };
            self.cwnd = self.cwnd.saturating_add(inc);
            // One increase per round trip, whatever the size of the ack.
            self.bytes_acked = self.bytes_acked.min(self.cwnd - 1);
        }
    }

    /// A fragment of `lost_bytes`, last transmitted at `sent_at`, was
    /// declared lost after negative acknowledgements (RFC 7016 3.6.2.5).
    ///
    /// The window is halved at most once per round trip: a loss of a
    /// fragment transmitted before the last reduction belongs to the
    /// congestion event already answered (the recovery point of RFC 6582,
    /// expressed in time), so only a fragment sent after it can trigger a
    /// new reduction, and that one is detected at least a round trip
    /// later. Returns whether the window was reduced.
    pub fn on_nack_loss(&mut self, now: Instant, lost_bytes: usize, sent_at: Instant) -> bool {
        if lost_bytes == 0 {
            return false;
        }
        self.lost_total = self.lost_total.saturating_add(lost_bytes as u64);
        if self.recovery_start.is_some_and(|t| sent_at <= t) {
            return false;
        }
        self.reduce(now);
        self.loss_reductions += 1;
        true
    }

    /// `lost_bytes` of frames (fragments of NoRetransmit messages) were
    /// declared lost, by negative acknowledgement or timeout. No window
    /// reduction of its own (module docs, "Frames"): the loss counts
    /// towards the circuit breaker. Returns whether the breaker tripped.
    pub fn on_frame_loss(&mut self, now: Instant, lost_bytes: usize) -> bool {
        self.frame_lost_total = self.frame_lost_total.saturating_add(lost_bytes as u64);
        self.breaker_lost = self.breaker_lost.saturating_add(lost_bytes);
        self.breaker_check(now)
    }

    /// The TIMEOUT_ALARM fired with only frames in flight (RFC 7016
    /// 3.6.2.6; their bytes go to [`Congestion::on_frame_loss`]). It ends
    /// the burst like any timeout; the window is not collapsed: nothing
    /// will be retransmitted, the tail of a burst of frames was lost, and
    /// the traffic inside answers that loss itself. A path that lost
    /// everything is still held back: no acknowledgement means at most one
    /// burst per (backed-off) timeout.
    pub fn on_frame_timeout(&mut self, _now: Instant) {
        self.end_burst(BURST_LIMIT_PACKETS);
    }

    /// Close the breaker's measurement window when it is full; halve the
    /// window if it held more frame loss than the breaker allows. Returns
    /// whether it tripped.
    fn breaker_check(&mut self, now: Instant) -> bool {
        let start = *self.breaker_start.get_or_insert(now);
        let total = self.breaker_acked.saturating_add(self.breaker_lost);
        let span = self.cwnd.max(BREAKER_MIN_WINDOW_MSS * self.mss);
        if total < span {
            return false;
        }
        let min_time = self.srtt.map_or(Duration::ZERO, |s| {
            s.saturating_mul(BREAKER_MIN_ROUND_TRIPS)
        });
        if now.saturating_duration_since(start) < min_time {
            return false;
        }
        let trip = self.breaker_lost.saturating_mul(BREAKER_LOSS_DIVISOR) > total;
        self.breaker_acked = 0;
        self.breaker_lost = 0;
        self.breaker_start = None;
        if trip {
            self.reduce(now);
            self.breaker_trips += 1;
        }
        trip
    }

    /// Multiplicative decrease for one congestion event.
    fn reduce(&mut self, now: Instant) {
        self.ssthresh = (self.cwnd / 2).max(2 * self.mss);
        // Never a "decrease" that grows a window already below 2 MSS.
        self.cwnd = self.cwnd.min(self.ssthresh);
        self.bytes_acked = 0;
        self.recovery_start = Some(now);
    }

    /// The session's TIMEOUT_ALARM fired (RFC 7016 3.6.2.6); `any_loss` if
    /// fragments were in flight. Ends the burst; with loss, collapses the
    /// window to one MSS with ssthresh at half the window (RFC 5681 3.1),
    /// not lowering ssthresh again on back-to-back timeouts.
    pub fn on_timeout(&mut self, now: Instant, any_loss: bool) {
        self.end_burst(BURST_LIMIT_PACKETS);
        if !any_loss {
            return;
        }
        if !self.in_timeout {
            self.ssthresh = (self.cwnd / 2).max(2 * self.mss);
        }
        self.cwnd = self.mss;
        self.bytes_acked = 0;
        self.in_timeout = true;
        self.recovery_start = Some(now);
        self.timeouts += 1;
    }

    /// The packetization size changed (path MTU discovery): keep the window
    /// the same number of segments.
    pub fn set_mss(&mut self, mss: usize) {
        let mss = mss.max(1);
        if mss == self.mss {
            return;
        }
        let scale = |v: usize| -> usize {
            let scaled = (v as u128).saturating_mul(mss as u128) / self.mss as u128;
            usize::try_from(scaled).unwrap_or(usize::MAX)
        };
        self.cwnd = scale(self.cwnd).max(mss);
        if self.ssthresh != usize::MAX {
            self.ssthresh = scale(self.ssthresh).max(2 * mss);
        }
        self.bytes_acked = 0;
        self.mss = mss;
    }

    /// Whether an acknowledgement now would grow the window by slow start.
    #[cfg(test)]
    pub fn in_slow_start(&self, now: Instant) -> bool {
        !self.tcr_restrained(now) && self.cwnd < self.ssthresh
    }

    /// Whether the far end asked this session to yield to time critical
    /// traffic it receives on other sessions (TCR within 800 ms) and this
    /// end is not itself sending time critical data (RFC 7016 3.5.2).
    pub fn tcr_restrained(&self, now: Instant) -> bool {
        let recent = |t: Option<Instant>| {
            t.is_some_and(|t| now.saturating_duration_since(t) < TIME_CRITICAL_HOLD)
        };
        recent(self.last_tcr_rx) && !recent(self.last_tc_tx)
    }

    pub fn stats(&self) -> CongestionStats {
        CongestionStats {
            cwnd: self.cwnd,
            ssthresh: self.ssthresh(),
            mss: self.mss,
            data_packet_count: self.data_packet_count,
            loss_reductions: self.loss_reductions,
            timeouts: self.timeouts,
            idle_restarts: self.idle_restarts,
            acked_bytes: self.acked_total,
            lost_bytes: self.lost_total,
            sent_bytes: self.sent_total,
            frame_lost_bytes: self.frame_lost_total,
            breaker_trips: self.breaker_trips,
            burst_releases: self.burst_releases,
            path_restarts: self.path_restarts,
        }
    }

    fn idle_expired(&self, now: Instant) -> bool {
        self.last_send
            .is_some_and(|t| now.saturating_duration_since(t) > self.idle_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::rtt::{Clock, RttEstimator};
    use std::collections::VecDeque;

    const MSS: usize = 1000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Send full-size packets while the budget allows one.
    fn fill(cc: &mut Congestion, now: Instant, outstanding: &mut usize) {
        while cc.send_budget(now, *outstanding) >= cc.mss() {
            cc.on_packet_sent(now, cc.mss(), false);
            *outstanding += cc.mss();
        }
    }

    /// One ack-clocked round trip: everything outstanding at the start is
    /// acknowledged, two segments per acknowledgement, and the sender
    /// refills after each acknowledgement.
    fn round(cc: &mut Congestion, now: Instant, outstanding: &mut usize) {
        fill(cc, now, outstanding);
        let mut to_ack = *outstanding;
        while to_ack > 0 {
            let chunk = (2 * cc.mss()).min(to_ack);
            let before = *outstanding;
            *outstanding -= chunk;
            to_ack -= chunk;
            cc.on_ack(now, chunk, before);
            fill(cc, now, outstanding);
        }
    }

    /// A controller after four ack-clocked round trips of slow start from
    /// the initial window (64 segments), and the bytes still outstanding.
    fn grown(t: Instant) -> (Congestion, usize) {
        let mut cc = Congestion::new(MSS);
        let mut out = 0;
        rounds(&mut cc, t, &mut out, 4);
        (cc, out)
    }

    /// `n` calls of [`round`].
    fn rounds(cc: &mut Congestion, t: Instant, out: &mut usize, n: usize) {
        for _ in 0..n {
            round(cc, t, out);
        }
    }

    proptest::proptest! {
        /// Whatever the sequence of events, the window stays within
        /// [1 MSS, grown by acks], and the budget within burst and window.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec((0u8..6, 0usize..20_000, 0u64..2_000), 1..200)) {
            let t0 = Instant::now();
            let mut cc = Congestion::new(MSS);
            let mut now = t0;
            let mut outstanding = 0usize;
            for (op, bytes, dt) in ops {
                now += Duration::from_millis(dt);
                let before = cc.window();
                match op {
                    0 => {
                        cc.on_packet_sent(now, MSS, bytes % 7 == 0);
                        outstanding += MSS;
                    }
                    1 => {
                        let acked = bytes.min(outstanding);
                        cc.on_ack(now, acked, outstanding);
                        outstanding -= acked;
                        proptest::prop_assert!(cc.window() <= before + (2 * MSS).max(acked / 2));
                    }
                    2 => {
                        let lost = bytes.min(outstanding);
                        cc.on_nack_loss(now, lost, now - Duration::from_millis(dt));
                        outstanding -= lost;
                        proptest::prop_assert!(cc.window() <= before);
                    }
                    3 => {
                        cc.on_timeout(now, bytes % 2 == 0);
                        outstanding = 0;
                        proptest::prop_assert!(cc.window() <= before);
                    }
                    4 => cc.on_packet_received(now, bytes % 3 == 0),
                    _ => cc.set_rto(Duration::from_millis(250 + dt)),
                }
                proptest::prop_assert!(cc.window() >= cc.mss());
                let budget = cc.send_budget(now, outstanding);
                proptest::prop_assert!(
                    budget <= (BURST_LIMIT_PACKETS + BURST_ACKED_MAX) as usize * MSS
                );
                proptest::prop_assert!(budget <= cc.window().saturating_sub(outstanding));
            }
        }
    }

    #[test]
    fn initial_window_rfc5681() {
        assert_eq!(initial_window(1000), 4000);
        assert_eq!(initial_window(1095), 4380);
        assert_eq!(initial_window(1096), 3288);
        assert_eq!(initial_window(1400), 4200);
        assert_eq!(initial_window(2190), 6570);
        assert_eq!(initial_window(2191), 4382);
        let cc = Congestion::new(1400);
        assert_eq!(cc.window(), 4200);
        assert_eq!(cc.ssthresh(), None);
    }

    #[test]
    fn slow_start_doubles_per_round_trip() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        let mut out = 0;
        let mut w = cc.window();
        for _ in 0..5 {
            assert!(cc.in_slow_start(t));
            round(&mut cc, t, &mut out);
            assert_eq!(cc.window(), 2 * w);
            w = cc.window();
        }
        assert_eq!(cc.window(), 128 * MSS);
    }

    #[test]
    fn slow_start_byte_counting_limit() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        // A stretch acknowledgement of 4 segments grows by at most 2 MSS.
        cc.on_ack(t, 4 * MSS, 4 * MSS);
        assert_eq!(cc.window(), 6 * MSS);
    }

    #[test]
    fn congestion_avoidance_one_mss_per_round_trip() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        let mut out = 0;
        for _ in 0..3 {
            round(&mut cc, t, &mut out);
        }
        assert_eq!(cc.window(), 32 * MSS);
        assert!(cc.on_nack_loss(t, MSS, t));
        assert_eq!(cc.window(), 16 * MSS);
        assert_eq!(cc.ssthresh(), Some(16 * MSS));
        assert!(!cc.in_slow_start(t));
        for i in 1..=5 {
            round(&mut cc, t, &mut out);
            assert_eq!(cc.window(), (16 + i) * MSS);
        }
    }

    #[test]
    fn no_growth_when_application_limited() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        cc.on_ack(t, MSS, MSS);
        assert_eq!(cc.window(), 4 * MSS);
        // Half the window in use is enough.
        cc.on_ack(t, MSS, 2 * MSS);
        assert_eq!(cc.window(), 5 * MSS);
    }

    #[test]
    fn nack_loss_halves_at_most_once_per_round_trip() {
        let t = Instant::now() + ms(1000);
        let mut cc = Congestion::new(MSS);
        let mut out = 0;
        for _ in 0..3 {
            round(&mut cc, t, &mut out);
        }
        assert_eq!(cc.window(), 32 * MSS);
        // A fragment sent 100 ms ago is lost: first congestion event.
        assert!(cc.on_nack_loss(t, MSS, t - ms(100)));
        assert_eq!(cc.window(), 16 * MSS);
        // More losses of fragments sent before the reduction: same event,
        // however late they are detected.
        assert!(!cc.on_nack_loss(t + ms(10), MSS, t - ms(50)));
        assert!(!cc.on_nack_loss(t + ms(300), MSS, t));
        assert_eq!(cc.window(), 16 * MSS);
        // A fragment sent after the reduction: a new event.
        assert!(cc.on_nack_loss(t + ms(100), MSS, t + ms(1)));
        assert_eq!(cc.window(), 8 * MSS);
        assert_eq!(cc.stats().loss_reductions, 2);
        assert_eq!(cc.stats().lost_bytes, 4 * MSS as u64);
        // Never below 2 MSS.
        for i in 2..10 {
            let at = t + ms(100) * i;
            cc.on_nack_loss(at, MSS, at - ms(1));
        }
        assert_eq!(cc.window(), 2 * MSS);
        assert_eq!(cc.ssthresh(), Some(2 * MSS));
        // Zero bytes lost is no loss.
        assert!(!cc.on_nack_loss(t + ms(5000), 0, t + ms(4000)));
    }

    #[test]
    fn timeout_collapses_to_one_segment() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        let mut out = 0;
        for _ in 0..3 {
            round(&mut cc, t, &mut out);
        }
        assert_eq!(cc.window(), 32 * MSS);
        cc.on_timeout(t, true);
        assert_eq!(cc.window(), MSS);
        assert_eq!(cc.ssthresh(), Some(16 * MSS));
        // A back-to-back timeout does not lower ssthresh again.
        cc.on_timeout(t + ms(500), true);
        assert_eq!(cc.window(), MSS);
        assert_eq!(cc.ssthresh(), Some(16 * MSS));
        assert_eq!(cc.stats().timeouts, 2);
        // A loss now must not "decrease" the window upwards to 2 MSS.
        assert!(cc.on_nack_loss(t + ms(600), MSS, t + ms(550)));
        assert_eq!(cc.window(), MSS);
        assert_eq!(cc.ssthresh(), Some(2 * MSS));
        let mut cc = Congestion::new(MSS);
        let mut out = 0;
        for _ in 0..3 {
            round(&mut cc, t, &mut out);
        }
        cc.on_timeout(t, true);
        cc.on_timeout(t + ms(500), true);
        // Slow start again from one segment up to ssthresh.
        let mut out = 0;
        rounds(&mut cc, t, &mut out, 4);
        assert_eq!(cc.window(), 16 * MSS);
        assert!(!cc.in_slow_start(t));
        // A timeout without loss changes no window.
        cc.on_timeout(t, false);
        assert_eq!(cc.window(), 16 * MSS);
        assert_eq!(cc.stats().timeouts, 2);
    }

    #[test]
    fn burst_limit_six_packets_beyond_those_acknowledged() {
        let t = Instant::now();
        let (mut cc, mut out) = grown(t);
        // Everything acknowledged, a huge window: six packets plus at most
        // BURST_ACKED_MAX for what was acknowledged.
        cc.on_ack(t, out, out);
        out = 0;
        let limit = (BURST_LIMIT_PACKETS + BURST_ACKED_MAX) as usize;
        assert!(cc.window() > (limit + 20) * MSS);
        for k in 0..6 {
            assert_eq!(cc.send_budget(t, out), (limit - k) * MSS);
            cc.on_packet_sent(t, 100, false);
            out += 100;
        }
        // Small packets count as packets too.
        assert_eq!(cc.stats().data_packet_count, 6);
        for _ in 6..limit {
            cc.on_packet_sent(t, MSS, false);
            out += MSS;
        }
        assert_eq!(cc.send_budget(t, out), 0);
        assert!(!cc.burst_allows());
        // An acknowledgement of three packets: nine more, with room in the
        // window for many more.
        cc.on_ack(t, 3 * MSS, out);
        out -= 3 * MSS;
        assert!(cc.window() > out + 20 * MSS);
        for k in 0..9 {
            assert_eq!(cc.send_budget(t, out), (9 - k) * MSS);
            cc.on_packet_sent(t, MSS, false);
            out += MSS;
        }
        assert_eq!(cc.send_budget(t, out), 0);
        assert!(!cc.burst_allows());
        let big = cc.window();
        // Any acknowledgement chunk ends the burst, even acking nothing new.
        cc.on_ack(t, 0, 6 * MSS);
        assert_eq!(cc.send_budget(t, 0), 6 * MSS);
        for _ in 0..6 {
            cc.on_packet_sent(t, 10, false);
        }
        assert_eq!(cc.send_budget(t, 0), 0);
        // So does a retransmission timeout.
        cc.on_timeout(t, false);
        assert_eq!(cc.send_budget(t, 0), 6 * MSS);
        assert_eq!(cc.window(), big);
        // The window still binds when smaller than the burst.
        assert_eq!(cc.send_budget(t, big - 2 * MSS), 2 * MSS);
        assert_eq!(cc.send_budget(t, big + 5), 0);
    }

    #[test]
    fn restart_after_idle() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        cc.set_rto(ms(1000));
        let mut out = 0;
        rounds(&mut cc, t, &mut out, 4);
        assert_eq!(cc.window(), 64 * MSS);
        // Everything acknowledged; the sender falls silent.
        cc.on_ack(t, out, out);
        let w = cc.window();
        // Not idle for more than the RTO yet: a full burst allowed (six
        // packets and as many as were acknowledged, at most
        // BURST_ACKED_MAX).
        assert_eq!(
            cc.send_budget(t + ms(1000), 0),
            (BURST_LIMIT_PACKETS + BURST_ACKED_MAX) as usize * MSS
        );
        // Idle longer than the RTO: back to the initial window.
        let later = t + ms(1001);
        assert_eq!(cc.send_budget(later, 0), 4 * MSS);
        cc.on_packet_sent(later, MSS, false);
        assert_eq!(cc.window(), 4 * MSS);
        assert!(w > cc.window());
        assert_eq!(cc.stats().idle_restarts, 1);
        // A small window is not raised by the restart.
        let mut cc = Congestion::new(MSS);
        cc.on_packet_sent(t, MSS, false);
        cc.on_timeout(t, true);
        cc.on_packet_sent(t + ms(10_000), MSS, false);
        assert_eq!(cc.window(), MSS);
        assert_eq!(cc.stats().idle_restarts, 0);
    }

    #[test]
    fn a_new_path_starts_from_the_initial_window_in_slow_start() {
        let t = Instant::now();
        let (mut cc, _) = grown(t);
        cc.on_nack_loss(t, MSS, t);
        assert!(cc.window() > 4 * MSS);
        assert!(cc.ssthresh().is_some());
        cc.path_changed();
        assert_eq!(cc.window(), initial_window(MSS));
        assert_eq!(cc.ssthresh(), None);
        assert!(cc.in_slow_start(t));
        assert_eq!(cc.stats().path_restarts, 1);
        assert_eq!(cc.stats().loss_reductions, 1, "counters stay");
        // And it grows again as on a new connection.
        let mut out = 0;
        round(&mut cc, t + ms(1), &mut out);
        assert!(cc.window() > initial_window(MSS));
    }

    #[test]
    fn time_critical_reverse_disables_slow_start() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        cc.on_packet_received(t, false);
        assert!(!cc.tcr_restrained(t));
        cc.on_packet_received(t, true);
        assert!(cc.tcr_restrained(t));
        assert!(!cc.in_slow_start(t));
        let mut out = 0;
        // Window 4000: 0.5 % is 20 bytes, so the 384 byte floor applies.
        round(&mut cc, t, &mut out);
        assert_eq!(cc.window(), 4 * MSS + 384);
        // Still restrained 799 ms after the last TCR.
        let t1 = t + ms(799);
        assert!(cc.tcr_restrained(t1));
        // 800 ms after: slow start again.
        let t2 = t + ms(800);
        assert!(!cc.tcr_restrained(t2));
        assert!(cc.in_slow_start(t2));
        let w = cc.window();
        cc.on_ack(t2, 2 * MSS, w);
        assert_eq!(cc.window(), w + 2 * MSS);
    }

    #[test]
    fn time_critical_reverse_half_percent_growth() {
        let t = Instant::now();
        let mss = 1400;
        let mut cc = Congestion::new(mss);
        let mut out = 0;
        for _ in 0..5 {
            round(&mut cc, t, &mut out);
        }
        assert_eq!(cc.window(), 134_400);
        cc.on_packet_received(t, true);
        round(&mut cc, t, &mut out);
        // 0.5 % of 134400 = 672 > 384, below one MSS.
        assert_eq!(cc.window(), 134_400 + 672);
        // Unrestrained congestion avoidance would have added a full MSS.
        let mut free = Congestion::new(mss);
        let mut out = 0;
        for _ in 0..5 {
            round(&mut free, t, &mut out);
        }
        free.on_nack_loss(t, mss, t);
        let w = free.window();
        round(&mut free, t, &mut out);
        assert_eq!(free.window(), w + mss);
    }

    #[test]
    fn sending_time_critical_lifts_the_restraint() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        cc.on_packet_received(t, true);
        assert!(cc.tcr_restrained(t));
        cc.on_packet_sent(t, MSS, true);
        assert!(!cc.tcr_restrained(t));
        assert!(cc.in_slow_start(t));
        cc.on_ack(t, 2 * MSS, 4 * MSS);
        assert_eq!(cc.window(), 6 * MSS);
        // TC sending stops mattering 800 ms later, TCR still fresh.
        cc.on_packet_received(t + ms(900), true);
        assert!(cc.tcr_restrained(t + ms(900)));
    }

    #[test]
    fn frame_loss_trips_the_breaker_only_above_a_tenth_of_a_window() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        // The window stays below the breaker's minimum span here.
        let span = BREAKER_MIN_WINDOW_MSS * MSS;
        // 5% of a span lost as frames, the rest acknowledged: no change but
        // the slow-start growth.
        assert!(!cc.on_frame_loss(t, span / 20));
        let w = cc.window();
        cc.on_ack(t, span - span / 20, w);
        assert_eq!(cc.stats().breaker_trips, 0);
        assert_eq!(cc.window(), w + (span - span / 20) / 2);
        assert_eq!(cc.ssthresh(), None);
        // 20% of the next span: halved once, when the span closes.
        let w = cc.window();
        assert!(w < span);
        assert!(!cc.on_frame_loss(t, span / 5));
        cc.on_ack(t, span - span / 5, w);
        assert_eq!(cc.stats().breaker_trips, 1);
        assert_eq!(cc.window(), w / 2);
        assert_eq!(cc.stats().loss_reductions, 0);
        assert_eq!(cc.stats().frame_lost_bytes, (span / 20 + span / 5) as u64);
    }

    /// A controller with smoothed round trip `srtt` after eight ack-clocked
    /// round trips: the controller, the time after them, bytes in flight.
    fn warmed_up(srtt: Duration) -> (Congestion, Instant, usize) {
        let mut now = Instant::now();
        let mut cc = Congestion::new(MSS);
        cc.set_srtt(Some(srtt));
        let mut out = 0;
        for _ in 0..8 {
            round(&mut cc, now, &mut out);
            now += srtt;
        }
        (cc, now, out)
    }

    /// Responsive traffic through a drop-tail queue: a round trip in
    /// twenty loses a burst of 15 % of the window at once (the queue
    /// overflowed), the others lose nothing, about 0.75 % on average. The
    /// traffic inside answers that loss itself; the breaker must not halve
    /// the session window for each such burst (docs/dataplane.md,
    /// "Fairness": at a 5 ms tbf queue it did, ten times a second).
    #[test]
    fn single_loss_bursts_of_responsive_traffic_do_not_trip_the_breaker() {
        let srtt = ms(5);
        let (mut cc, mut now, mut out) = warmed_up(srtt);
        // Out of slow start, as a session is after its first loss.
        assert!(cc.on_nack_loss(now, MSS, now));
        for r in 0..200 {
            if r % 20 == 10 {
                let burst = cc.window() * 15 / 100;
                cc.on_frame_loss(now, burst);
                out -= burst.min(out);
            }
            round(&mut cc, now, &mut out);
            now += srtt;
        }
        assert_eq!(cc.stats().breaker_trips, 0);
        assert!(cc.stats().frame_lost_bytes > 0);
    }

    /// Loss above a tenth that lasts (an unresponsive flood into a full
    /// bottleneck) still trips the breaker, within the measurement window's
    /// round trips, and again for every window it lasts.
    #[test]
    fn sustained_frame_loss_trips_the_breaker_every_window() {
        let srtt = ms(5);
        let (mut cc, mut now, mut out) = warmed_up(srtt);
        let w = cc.window();
        let rounds = 4 * BREAKER_MIN_ROUND_TRIPS;
        for _ in 0..rounds {
            // A fifth of each round trip's window lost, the rest acked.
            let lost = cc.window() / 5;
            cc.on_frame_loss(now, lost);
            out -= lost.min(out);
            round(&mut cc, now, &mut out);
            now += srtt;
        }
        let trips = cc.stats().breaker_trips;
        assert!(trips >= 3, "{trips} trips in {rounds} round trips");
        assert!(cc.window() < w / 4, "window {} from {w}", cc.window());
    }

    #[test]
    fn a_frame_only_timeout_ends_the_burst_but_keeps_the_window() {
        let t = Instant::now();
        let (mut cc, _) = grown(t);
        let w = cc.window();
        while cc.burst_allows() {
            cc.on_packet_sent(t, MSS, false);
        }
        cc.on_frame_timeout(t + ms(300));
        assert!(cc.burst_allows());
        assert_eq!(cc.window(), w);
        // A timeout with reliable data in flight still collapses it.
        cc.on_timeout(t + ms(300), true);
        assert_eq!(cc.window(), MSS);
    }

    #[test]
    fn a_full_burst_is_released_after_two_round_trips_without_an_ack() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        cc.set_srtt(Some(ms(5)));
        for _ in 0..BURST_LIMIT_PACKETS {
            assert_eq!(cc.burst_release_at(), None);
            cc.on_packet_sent(t, MSS, false);
        }
        assert!(!cc.burst_allows());
        assert_eq!(cc.burst_release_at(), Some(t + ms(10)));
        cc.release_burst(t + ms(9));
        assert!(!cc.burst_allows());
        cc.release_burst(t + ms(10));
        assert!(cc.burst_allows());
        assert_eq!(cc.stats().burst_releases, 1);
        // An acknowledgement in time leaves nothing to release.
        for _ in 0..BURST_LIMIT_PACKETS {
            cc.on_packet_sent(t + ms(11), MSS, false);
        }
        cc.on_ack(t + ms(12), MSS, 6 * MSS);
        assert_eq!(cc.burst_release_at(), None);
        // Without an RTT sample, at least BURST_RELEASE_MIN.
        let mut fresh = Congestion::new(MSS);
        for _ in 0..BURST_LIMIT_PACKETS {
            fresh.on_packet_sent(t, MSS, false);
        }
        assert_eq!(fresh.burst_release_at(), Some(t + BURST_RELEASE_MIN));
    }

    #[test]
    fn set_mss_keeps_segments() {
        let t = Instant::now();
        let mut cc = Congestion::new(MSS);
        assert_eq!(cc.window(), 4 * MSS);
        cc.set_mss(1400);
        assert_eq!(cc.window(), 4 * 1400);
        assert_eq!(cc.mss(), 1400);
        cc.on_nack_loss(t, 1, t);
        assert_eq!(cc.ssthresh(), Some(2 * 1400));
        cc.set_mss(700);
        assert_eq!(cc.window(), 2 * 700);
        assert_eq!(cc.ssthresh(), Some(2 * 700));
    }

    /// A sender with this controller and the RFC 7016 3.6.2.5 TSN loss
    /// detection over a bottleneck link with a drop-tail queue.
    struct Sim {
        t0: Instant,
        mss: usize,
        delay_ms: u64,
        queue_cap: usize,
        loss: f64,
        rng: Rng,
        cc: Congestion,
        rtt: RttEstimator,
        next_tsn: u64,
        max_tsn_ack: u64,
        inflight: VecDeque<(u64, u16, u32, u64)>,
        outstanding: usize,
        alarm: Option<u64>,
        queue: VecDeque<(u64, u16)>,
        to_receiver: VecDeque<(u64, u64, u16)>,
        to_sender: VecDeque<(u64, u64, u16)>,
        delivered: u64,
        cwnd_sum: u64,
        cwnd_max: usize,
        samples: u64,
    }

    impl Sim {
        fn new(delay_ms: u64, queue_cap: usize, loss: f64, seed: u8) -> Sim {
            let t0 = Instant::now();
            let mss = 1200;
            Sim {
                t0,
                mss,
                delay_ms,
                queue_cap,
                loss,
                rng: Rng::from_seed([seed; 32]),
                cc: Congestion::new(mss),
                rtt: RttEstimator::new(Clock::new(t0)),
                next_tsn: 1,
                max_tsn_ack: 0,
                inflight: VecDeque::new(),
                outstanding: 0,
                alarm: None,
                queue: VecDeque::new(),
                to_receiver: VecDeque::new(),
                to_sender: VecDeque::new(),
                delivered: 0,
                cwnd_sum: 0,
                cwnd_max: 0,
                samples: 0,
            }
        }

        /// Run `total_ms` with a bottleneck of one packet per millisecond;
        /// count deliveries and window samples from `measure_from_ms`.
        fn run(&mut self, total_ms: u64, measure_from_ms: u64) {
            for ms_now in 0..total_ms {
                let now = self.t0 + ms(ms_now);
                let measuring = ms_now >= measure_from_ms;
                // Acknowledgements arriving at the sender.
                while self.to_sender.front().is_some_and(|a| a.0 <= ms_now) {
                    let Some((_, tsn, echo)) = self.to_sender.pop_front() else {
                        break;
                    };
                    self.cc.on_packet_received(now, false);
                    self.rtt.on_timestamp_echo(now, echo);
                    self.cc.set_rto(self.rtt.ert0());
                    let before = self.outstanding;
                    let mut acked = 0;
                    if let Some(i) = self.inflight.iter().position(|e| e.0 == tsn) {
                        self.inflight.remove(i);
                        acked = self.mss;
                        self.outstanding -= self.mss;
                    }
                    self.max_tsn_ack = self.max_tsn_ack.max(tsn);
                    self.cc.on_ack(now, acked, before);
                    // Negative acknowledgements and loss (3.6.2.5).
                    let max = self.max_tsn_ack;
                    let mut lost = Vec::new();
                    self.inflight.retain_mut(|e| {
                        if e.0 < max {
                            e.2 += 1;
                        }
                        if e.2 >= 3 {
                            lost.push(e.3);
                            false
                        } else {
                            true
                        }
                    });
                    for sent_ms in lost {
                        self.outstanding -= self.mss;
                        let sent_at = self.t0 + ms(sent_ms);
                        self.cc.on_nack_loss(now, self.mss, sent_at);
                    }
                    self.alarm = Some(ms_now + self.rtt.ert0().as_millis() as u64);
                }
                // Timeout alarm (3.6.2.6).
                if self.alarm.is_some_and(|a| a <= ms_now) {
                    self.alarm = None;
                    let any_loss = !self.inflight.is_empty();
                    self.inflight.clear();
                    self.outstanding = 0;
                    if any_loss {
                        self.rtt.backoff();
                        self.cc.set_rto(self.rtt.ert0());
                    }
                    self.cc.on_timeout(now, any_loss);
                }
                // The sender always has data.
                while self.cc.send_budget(now, self.outstanding) >= self.mss {
                    let tsn = self.next_tsn;
                    self.next_tsn += 1;
                    let ts = self.rtt.clock().ticks(now);
                    self.inflight.push_back((tsn, ts, 0, ms_now));
                    self.outstanding += self.mss;
                    self.cc.on_packet_sent(now, self.mss, false);
                    self.alarm = Some(ms_now + self.rtt.ert0().as_millis() as u64);
                    let dropped = self.rng.f64() < self.loss;
                    if !dropped && self.queue.len() < self.queue_cap {
                        self.queue.push_back((tsn, ts));
                    }
                }
                // The bottleneck forwards one packet per millisecond.
                if let Some((tsn, ts)) = self.queue.pop_front() {
                    self.to_receiver
                        .push_back((ms_now + 1 + self.delay_ms, tsn, ts));
                }
                // The receiver acknowledges every packet at once, echoing
                // its timestamp.
                while self.to_receiver.front().is_some_and(|p| p.0 <= ms_now) {
                    let Some((_, tsn, ts)) = self.to_receiver.pop_front() else {
                        break;
                    };
                    if measuring {
                        self.delivered += 1;
                    }
                    self.to_sender.push_back((ms_now + self.delay_ms, tsn, ts));
                }
                if measuring {
                    let w = self.cc.window();
                    self.cwnd_sum += w as u64;
                    self.cwnd_max = self.cwnd_max.max(w);
                    self.samples += 1;
                }
            }
        }

        fn mean_cwnd_packets(&self) -> f64 {
            self.cwnd_sum as f64 / self.samples as f64 / self.mss as f64
        }
    }

    #[test]
    fn simulation_fills_the_link_and_backs_off_under_loss() {
        // 40 ms round trip, one packet per ms: BDP 40 packets; queue 20.
        let total = 20_000;
        let from = 10_000;
        let capacity = (total - from) as f64;

        let mut clean = Sim::new(20, 20, 0.0, 1);
        clean.run(total, from);
        let clean_util = clean.delivered as f64 / capacity;
        assert!(clean_util > 0.9, "utilisation {clean_util}");
        // Queue overflow is the only loss: the window saw-tooths around
        // BDP + queue instead of growing without bound.
        assert!(clean.cc.stats().loss_reductions > 0);
        assert!(clean.cwnd_max <= 2 * 60 * clean.mss, "{}", clean.cwnd_max);
        let srtt = clean.rtt.srtt().expect("measured");
        assert!(srtt >= ms(40) && srtt <= ms(70), "{srtt:?}");

        let mut lossy = Sim::new(20, 20, 0.02, 2);
        lossy.run(total, from);
        let lossy_util = lossy.delivered as f64 / capacity;
        eprintln!(
            "clean {clean_util:.3} cwnd {:.1}, lossy {lossy_util:.3} cwnd {:.1}",
            clean.mean_cwnd_packets(),
            lossy.mean_cwnd_packets()
        );
        assert!(lossy.cc.stats().loss_reductions > clean.cc.stats().loss_reductions);
        assert!(lossy.mean_cwnd_packets() < clean.mean_cwnd_packets() / 2.0);
        assert!(
            lossy_util < clean_util * 0.8,
            "{lossy_util} vs {clean_util}"
        );
        // Backing off is not collapsing: the sender keeps sending.
        assert!(lossy_util > 0.05, "{lossy_util}");
    }

    #[test]
    fn simulation_bursts_stay_bounded() {
        // A deep window meets a tiny queue: burst avoidance keeps every
        // packet train to six packets between acknowledgements.
        let mut sim = Sim::new(5, 1000, 0.0, 3);
        sim.run(3000, 0);
        assert!(sim.cc.stats().data_packet_count <= BURST_LIMIT_PACKETS);
        assert!(sim.delivered > 2500);
    }
}
