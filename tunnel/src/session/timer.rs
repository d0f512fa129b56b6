//! The session's timers: one table of named deadlines ([`Timer`],
//! [`TimerTable`], as quinn-proto's `connection/timer.rs`), armed and
//! stopped by the code that changes what they guard, read by both
//! [`Session::poll_timeout`] and [`Session::handle_timeout`], so the
//! deadline the endpoint is told and the work done when it passes can
//! never disagree.
//!
//! Two kinds of timer share the table. Most are handled here, in
//! `handle_timeout`, in the fixed order of [`Timer::ALL`]. Two are
//! *transmit deadlines* ([`Timer::Startup`], [`Timer::CloseRequest`]): when
//! they pass, a packet is due, and the code that sends it re-arms them (the
//! endpoint's startup queue, `send.rs`); `handle_timeout` leaves them
//! alone. The flow set and PMTU discovery are sans-IO machines with their
//! own deadlines; `poll_timeout` merges theirs with the table's and
//! `handle_timeout` runs them on every call in OPEN.

use std::time::{Duration, Instant};

use crate::path::is_route_addr;
use crate::Rng;

use super::{
    CloseReason, Session, SessionState, DEAD_AFTER_SILENT_MIN, DEAD_AFTER_SILENT_RTOS,
    STALL_AFTER_SILENT_RTOS, STALL_EARLY_MIN, STALL_MIN_SILENCE, STALL_PROBE_MIN,
};

/// A named deadline of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The ultimate open timeout (RFC 7016 3.5.1.1.1; IHELLO_SENT and
    /// KEYING_SENT).
    Open,
    /// Transmit deadline: the next IHello to a candidate or IIKeying
    /// retransmission (3.5.1.1.1).
    Startup,
    /// OPEN: nothing received for `dead_after`, or, with data unanswered
    /// through [`DEAD_AFTER_SILENT_RTOS`] timeouts, for
    /// [`DEAD_AFTER_SILENT_MIN`]: the far end is dead.
    Idle,
    /// OPEN: retransmission timeout of outstanding flow data (3.6.2.6).
    Rto,
    /// OPEN: the next keepalive Ping when idle (3.5.4.1).
    Keepalive,
    /// Transmit deadline: the next Close Request in NEARCLOSE (3.5.5).
    CloseRequest,
    /// The end of NEARCLOSE or FARCLOSE_LINGER (3.5.5): CLOSED.
    Linger,
    /// OPEN: rekeying (`rekey.rs`): the next rekey, a resend, the end of
    /// the previous key's grace period, or the send key's age limit.
    Rekey,
    /// OPEN: a full burst waits for an acknowledgement; at this time it is
    /// released (`congestion.rs`, burst release).
    Burst,
    /// OPEN: the early stall check ([`super::STALL_EARLY_MIN`]).
    Stall,
}

impl Timer {
    /// Every timer, in the order `handle_timeout` handles them.
    pub(super) const ALL: [Timer; 10] = [
        Timer::Open,
        Timer::Startup,
        Timer::Idle,
        Timer::Rto,
        Timer::Keepalive,
        Timer::CloseRequest,
        Timer::Linger,
        Timer::Rekey,
        Timer::Burst,
        Timer::Stall,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Default)]
pub(super) struct TimerTable {
    at: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer.index()] = Some(at);
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.at[timer.index()] = None;
    }

    pub(super) fn stop_all(&mut self) {
        self.at = Default::default();
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Instant> {
        self.at[timer.index()]
    }

    pub(super) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// The earliest armed deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
}

/// Timer results the endpoint turns into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerOutcome {
    OpenFailed,
    Closed(CloseReason),
    /// Reached CLOSED after NEARCLOSE / FARCLOSE_LINGER.
    Finished,
}

/// How long NEARCLOSE lasts at most (RFC 7016 3.5.5: "at least 90
/// seconds" of Close Requests before giving up).
pub(super) const NEAR_CLOSE_FOR: Duration = Duration::from_secs(90);
/// How long FARCLOSE_LINGER lasts (RFC 7016 3.5.5: "at least 19 seconds").
pub(super) const FAR_CLOSE_LINGER_FOR: Duration = Duration::from_secs(19);

impl Session {
    /// The earliest time [`Session::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.timers.next();
        if self.state == SessionState::Open {
            for x in [self.flows.poll_timeout(), self.pmtu.poll_timeout()]
                .into_iter()
                .flatten()
            {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        }
        t
    }

    /// Run the timers that are due. Returns a state change the endpoint
    /// reports.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut Rng) -> Option<TimerOutcome> {
        for timer in Timer::ALL {
            if !self.timers.is_expired(timer, now) {
                continue;
            }
            if let Some(outcome) = self.on_timer(now, timer, rng) {
                return Some(outcome);
            }
        }
        if self.state == SessionState::Open {
            self.flows.handle_timeout(now);
            if self.pmtu.handle_timeout(now).is_some() {
                self.pmtu_changed();
            }
            if self.pending_pmtu_probe.is_none() {
                let ert0 = self.ert0();
                self.pending_pmtu_probe = self.pmtu.poll_probe(now, ert0);
            }
        }
        None
    }

    fn on_timer(&mut self, now: Instant, timer: Timer, rng: &mut Rng) -> Option<TimerOutcome> {
        match timer {
            Timer::Open => {
                self.set_state(now, SessionState::OpenFailed);
                Some(TimerOutcome::OpenFailed)
            }
            // Transmit deadlines: the packet they wait for re-arms them.
            Timer::Startup | Timer::CloseRequest => None,
            Timer::Idle => {
                if now >= self.last_recv + self.cfg.dead_after || self.silent_loss(now) {
                    return Some(self.die(now));
                }
                self.arm_idle();
                None
            }
            Timer::Rto => self.on_retransmit_timeout(now),
            Timer::Keepalive => {
                self.on_keepalive(now);
                None
            }
            Timer::Linger => {
                self.set_state(now, SessionState::Closed);
                Some(TimerOutcome::Finished)
            }
            Timer::Rekey => {
                self.timers.stop(Timer::Rekey);
                self.on_rekey_timer(now, rng)
            }
            Timer::Burst => {
                self.timers.stop(Timer::Burst);
                self.cc.release_burst(now);
                None
            }
            Timer::Stall => {
                self.arm_stall_check();
                if !self.timers.is_expired(Timer::Stall, now) {
                    return None;
                }
                self.timers.stop(Timer::Stall);
                if self.flows.outstanding_bytes() == 0 {
                    // What was in flight was given up (lost without an
                    // acknowledgement past it): nothing left to wait for.
                    self.forget_stall_tracking();
                } else if self.unacked.len() >= 2 || self.stall_probe.is_some() {
                    self.stalled = true;
                    self.stall_reported = true;
                } else {
                    self.stall_probe = Some(now);
                    self.pending_keepalive = true;
                    self.arm_stall_check();
                }
                None
            }
        }
    }

    /// Drop everything the early stall check tracks (packets in flight, its
    /// Ping) and disarm it.
    pub(super) fn forget_stall_tracking(&mut self) {
        self.unacked.clear();
        self.stall_probe = None;
        self.timers.stop(Timer::Stall);
    }

    /// Forget the tracked packets that were acknowledged (or lost below
    /// one that was) and arm the early stall check ([`STALL_EARLY_MIN`]):
    /// four smoothed round trips, at least [`STALL_EARLY_MIN`], after the
    /// second oldest packet still unacknowledged left or after the last
    /// packet received, whichever is later; on a relayed route with one
    /// such packet, [`STALL_PROBE_MIN`] after it (then a Ping goes out)
    /// and as long after the Ping. Not armed before a round trip was
    /// measured, nor again until something is received after a stall.
    pub(super) fn arm_stall_check(&mut self) {
        let acked = self.flows.max_tsn_acked();
        while self.unacked.front().is_some_and(|&(tsn, _)| tsn <= acked) {
            self.unacked.pop_front();
        }
        let at = self.srtt().and_then(|srtt| {
            let rtts = srtt.saturating_mul(4);
            if self.stall_reported {
                None
            } else if let Some(&(_, sent)) = self.unacked.get(1) {
                Some(sent.max(self.last_recv) + rtts.max(STALL_EARLY_MIN))
            } else if !is_route_addr(&self.dest) {
                None
            } else if let Some(ping) = self.stall_probe {
                Some(ping + rtts.max(STALL_PROBE_MIN))
            } else {
                let &(_, sent) = self.unacked.front()?;
                Some(sent.max(self.last_recv) + rtts.max(STALL_PROBE_MIN))
            }
        });
        match at {
            Some(at) => self.timers.set(Timer::Stall, at),
            None => self.timers.stop(Timer::Stall),
        }
    }

    /// Data went unanswered through [`DEAD_AFTER_SILENT_RTOS`] timeouts and
    /// nothing at all came for [`DEAD_AFTER_SILENT_MIN`].
    fn silent_loss(&self, now: Instant) -> bool {
        self.silent_rtos >= DEAD_AFTER_SILENT_RTOS
            && now.saturating_duration_since(self.last_recv) >= DEAD_AFTER_SILENT_MIN
    }

    /// The far end stopped: CLOSED, with a last Close Ack.
    fn die(&mut self, now: Instant) -> TimerOutcome {
        self.final_close_ack = true;
        self.set_state(now, SessionState::Closed);
        TimerOutcome::Closed(CloseReason::Dead)
    }

    /// Arm [`Timer::Idle`] from the last packet received.
    pub(super) fn arm_idle(&mut self) {
        let mut at = self.last_recv + self.cfg.dead_after;
        if self.silent_rtos >= DEAD_AFTER_SILENT_RTOS {
            at = at.min(self.last_recv + DEAD_AFTER_SILENT_MIN);
        }
        self.timers.set(Timer::Idle, at);
    }

    /// RFC 7016 3.6.2.6.
    fn on_retransmit_timeout(&mut self, now: Instant) -> Option<TimerOutcome> {
        self.stats.retransmit_timeouts += 1;
        let loss = self.flows.on_retransmit_timeout(now);
        let any_loss = loss.any();
        if any_loss {
            self.silent_rtos += 1;
            let silence = now.saturating_duration_since(self.last_recv);
            // Only data sent on this path is evidence against it: an end
            // that followed the far end to a new path (address mobility)
            // times out what it sent into the old one.
            let sent_here = loss.last_sent.is_some_and(|t| t >= self.dest_since);
            if self.silent_rtos >= STALL_AFTER_SILENT_RTOS
                && silence >= STALL_MIN_SILENCE
                && sent_here
                && !self.stall_reported
            {
                self.stalled = true;
                self.stall_reported = true;
            }
            if let Some(ts) = self.ts.as_mut() {
                ts.rtt.backoff();
            }
            self.pmtu.on_black_hole_suspected(now);
        }
        if loss.no_retransmit_lost_bytes > 0 {
            self.cc.on_frame_loss(now, loss.no_retransmit_lost_bytes);
        }
        if any_loss && !loss.reliable() {
            self.cc.on_frame_timeout(now);
        } else {
            self.cc.on_timeout(now, any_loss);
        }
        if self.flows.outstanding_bytes() > 0 {
            self.timers.set(Timer::Rto, now + self.ert0());
        } else {
            self.timers.stop(Timer::Rto);
        }
        if self.silent_loss(now) {
            return Some(self.die(now));
        }
        self.arm_idle();
        None
    }

    /// RFC 7016 3.5.4.1: a keepalive ping when idle, not more often than
    /// once per ERT0; a missing reply backs off ERT0.
    fn on_keepalive(&mut self, now: Instant) {
        if self.ping_outstanding.is_some() {
            if let Some(ts) = self.ts.as_mut() {
                ts.rtt.backoff();
            }
        }
        self.ping_outstanding = Some(now);
        let idle = now.saturating_duration_since(self.last_recv);
        let interval = if idle >= self.cfg.keepalive {
            // Probe faster once the far end went quiet.
            self.ert0().max(Duration::from_secs(1))
        } else {
            self.cfg.keepalive
        };
        self.timers.set(Timer::Keepalive, now + interval);
        self.pending_keepalive = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reports_the_earliest_armed_deadline() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Keepalive, t0 + Duration::from_secs(25));
        t.set(Timer::Rto, t0 + Duration::from_millis(250));
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(250)));
        assert!(t.is_expired(Timer::Rto, t0 + Duration::from_millis(250)));
        assert!(!t.is_expired(Timer::Keepalive, t0 + Duration::from_secs(1)));
        t.stop(Timer::Rto);
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(25)));
        t.stop_all();
        assert_eq!(t.next(), None);
    }
}
