//! The node's own timers in one table (as quinn-proto's
//! `connection/timer.rs`): both `poll_timeout` and `handle_timeout` read
//! it, so a timer cannot be armed in one place and forgotten in the other.
//! The endpoint, the overlay and the punch sockets keep their own
//! deadlines; [`crate::Node`] exports the earliest of all.

use std::time::{Duration, Instant};

/// How often the node does its periodic work (STUN, birthday punching,
/// unreachable bookkeeping).
pub const HOUSEKEEPING: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// [`HOUSEKEEPING`].
    Housekeeping = 0,
    /// The relayed-route control plane ([`crate::routes::TICK`]).
    Routes = 1,
}

const ALL: [Timer; 2] = [Timer::Housekeeping, Timer::Routes];

#[derive(Debug, Default)]
pub struct TimerTable {
    at: [Option<Instant>; ALL.len()],
}

impl TimerTable {
    pub fn set(&mut self, t: Timer, at: Instant) {
        self.at[t as usize] = Some(at);
    }

    /// The earliest armed timer.
    pub fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// A timer due at `now`, disarmed (call until `None`).
    pub fn expired(&mut self, now: Instant) -> Option<Timer> {
        let t = ALL
            .into_iter()
            .find(|t| self.at[*t as usize].is_some_and(|at| at <= now))?;
        self.at[t as usize] = None;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_fires_each_due_timer_once() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Routes, t0 + Duration::from_millis(250));
        t.set(Timer::Housekeeping, t0 + HOUSEKEEPING);
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(250)));
        assert_eq!(t.expired(t0), None);
        assert_eq!(t.expired(t0 + HOUSEKEEPING), Some(Timer::Housekeeping));
        assert_eq!(t.expired(t0 + HOUSEKEEPING), Some(Timer::Routes));
        assert_eq!(t.expired(t0 + HOUSEKEEPING), None);
        assert_eq!(t.next(), None);
    }
}
