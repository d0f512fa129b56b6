//! Real-time scheduling of the node's thread (config `realtime`;
//! docs/dataplane.md "Waiting for a core").
//!
//! Every frame crosses the node's thread twice (TAP to UDP on one end,
//! UDP to TAP on the other), and each crossing first waits for that
//! thread to get a core. On a loaded machine the programs whose traffic
//! the agent carries keep every core busy, and a woken agent waits its
//! turn behind them: measured on 2 cores during a TCP stream, a ping's
//! round trip through two agents took 1.2 ms (median) of which the
//! sockets' queues held 0.1-0.15 ms; with the agents' threads in the
//! lowest real-time class (`SCHED_RR`, priority 1) it took 0.35-0.4 ms at
//! the same throughput. An in-kernel VPN gets the same for free: its
//! packets are handled in softirq context, ahead of every process.
//!
//! A real-time thread that does not sleep takes its core from everything
//! else (the kernel only keeps 5 % of each core for other threads), so
//! the node's thread is real-time only while it mostly sleeps:
//! [`Guard`] looks at its CPU time every second and, when it used more
//! than [`BUSY_LIMIT`] of a core (a flood, or more traffic than one core
//! moves), returns it to normal scheduling for [`DEMOTED_FOR`], then tries
//! again. Only the node's thread is real-time, and threads it starts
//! later are not (`SCHED_RESET_ON_FORK`): the runtime's blocking pool,
//! the I/O helper threads and child processes keep normal scheduling.
//!
//! Permission: root or `CAP_SYS_NICE`, or an `RLIMIT_RTPRIO` of at least 1
//! (the packaged service sets `LimitRTPRIO=1`, so the unprivileged service
//! user may). Where neither holds, the agent runs with normal scheduling
//! and says so once.

use std::time::{Duration, Instant};

/// The real-time priority asked for: the lowest, so kernel threads
/// (interrupt threads, migration, watchdogs) keep theirs above it.
pub const PRIORITY: i32 = 1;

/// Share of one core the node's thread may use over a [`CHECK_EVERY`]
/// and stay real-time.
pub const BUSY_LIMIT: f64 = 0.9;

/// How often the guard looks at the thread's CPU time.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a thread that went over [`BUSY_LIMIT`] keeps normal
/// scheduling before it tries real-time again.
pub const DEMOTED_FOR: Duration = Duration::from_secs(10);

/// `realtime:` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realtime {
    /// On where a real-time thread leaves a core to the rest: machines
    /// with at least [`Realtime::AUTO_MIN_CORES`] cores. Silently off
    /// where the agent lacks the permission.
    Auto,
    /// On; a warning where the agent lacks the permission.
    On,
    Off,
}

impl Realtime {
    pub const AUTO_MIN_CORES: usize = 2;

    /// Whether to ask for real-time scheduling on a machine with `cores`
    /// cores.
    pub fn wanted(self, cores: usize) -> bool {
        match self {
            Realtime::Auto => cores >= Self::AUTO_MIN_CORES,
            Realtime::On => true,
            Realtime::Off => false,
        }
    }
}

/// What the guard asks the thread to do after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Leave the scheduling as it is.
    Keep,
    /// Back to normal scheduling: the thread was too busy.
    Demote,
    /// Real-time again after [`DEMOTED_FOR`].
    Promote,
}

/// Keeps the node's thread real-time only while it mostly sleeps (module
/// docs). Sans-IO: the caller passes the time and the thread's CPU time.
#[derive(Debug, Clone)]
pub struct Guard {
    realtime: bool,
    /// The last check: when, and the thread's CPU time then.
    last: Option<(Instant, Duration)>,
    demoted_at: Option<Instant>,
    demotions: u64,
}

impl Guard {
    /// A guard for a thread that is real-time now (`realtime`) or not.
    pub fn new(realtime: bool) -> Guard {
        Guard {
            realtime,
            last: None,
            demoted_at: None,
            demotions: 0,
        }
    }

    /// Whether the thread is real-time now.
    pub fn realtime(&self) -> bool {
        self.realtime
    }

    /// Times the thread was returned to normal scheduling.
    pub fn demotions(&self) -> u64 {
        self.demotions
    }

    /// A check at `now`, the thread having used `cpu` of CPU time since it
    /// started. Checks closer together than [`CHECK_EVERY`] change
    /// nothing (the busy share over a shorter span says little).
    pub fn check(&mut self, now: Instant, cpu: Duration) -> Change {
        let Some((at, used)) = self.last else {
            self.last = Some((now, cpu));
            return Change::Keep;
        };
        let span = now.saturating_duration_since(at);
        if span < CHECK_EVERY {
            return Change::Keep;
        }
        self.last = Some((now, cpu));
        if self.realtime {
            let busy = cpu.saturating_sub(used).as_secs_f64() / span.as_secs_f64();
            if busy > BUSY_LIMIT {
                self.realtime = false;
                self.demoted_at = Some(now);
                self.demotions += 1;
                return Change::Demote;
            }
            return Change::Keep;
        }
        match self.demoted_at {
            Some(t) if now.saturating_duration_since(t) >= DEMOTED_FOR => {
                self.realtime = true;
                self.demoted_at = None;
                Change::Promote
            }
            _ => Change::Keep,
        }
    }

    /// A promotion the guard asked for could not be made: stay normal and
    /// try again after [`DEMOTED_FOR`].
    pub fn promotion_failed(&mut self, now: Instant) {
        self.realtime = false;
        self.demoted_at = Some(now);
    }
}

/// Put the calling thread in `SCHED_RR` at [`PRIORITY`], with
/// `SCHED_RESET_ON_FORK` (threads and processes it starts later get
/// normal scheduling).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // sched_setscheduler(2)
pub fn make_realtime() -> std::io::Result<()> {
    set_policy(libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, PRIORITY)
}

/// Return the calling thread to normal scheduling.
#[cfg(target_os = "linux")]
pub fn make_normal() -> std::io::Result<()> {
    set_policy(libc::SCHED_OTHER | libc::SCHED_RESET_ON_FORK, 0)
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // sched_setscheduler(2)
fn set_policy(policy: libc::c_int, priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param for the call; pid 0 is the
    // calling thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's CPU time so far.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // clock_gettime(2)
pub fn thread_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a live timespec the call writes.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(not(target_os = "linux"))]
pub fn make_realtime() -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(not(target_os = "linux"))]
pub fn make_normal() -> std::io::Result<()> {
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn thread_cpu_time() -> Duration {
    Duration::ZERO
}

/// Whether the calling thread is in `SCHED_RR` now.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // sched_getscheduler(2)
pub fn is_realtime() -> bool {
    // SAFETY: no arguments beyond the calling thread's pid 0.
    let p = unsafe { libc::sched_getscheduler(0) };
    p >= 0 && (p & !libc::SCHED_RESET_ON_FORK) == libc::SCHED_RR
}

#[cfg(not(target_os = "linux"))]
pub fn is_realtime() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn auto_wants_two_cores() {
        assert!(!Realtime::Auto.wanted(1));
        assert!(Realtime::Auto.wanted(2));
        assert!(Realtime::On.wanted(1));
        assert!(!Realtime::Off.wanted(64));
    }

    #[test]
    fn a_mostly_sleeping_thread_stays_realtime() {
        let t0 = Instant::now();
        let mut g = Guard::new(true);
        assert_eq!(g.check(t0, Duration::ZERO), Change::Keep);
        // 80 % of a core for a minute: still real-time.
        for k in 1..=60u32 {
            let cpu = S * k * 8 / 10;
            assert_eq!(g.check(t0 + S * k, cpu), Change::Keep, "second {k}");
        }
        assert!(g.realtime());
        assert_eq!(g.demotions(), 0);
    }

    #[test]
    fn a_busy_thread_is_demoted_then_tried_again() {
        let t0 = Instant::now();
        let mut g = Guard::new(true);
        g.check(t0, Duration::ZERO);
        // Half a second in: too early to judge, even at 100 %.
        assert_eq!(g.check(t0 + S / 2, S / 2), Change::Keep);
        // A full second at 95 %: demoted.
        assert_eq!(g.check(t0 + S, S * 95 / 100), Change::Demote);
        assert!(!g.realtime());
        assert_eq!(g.demotions(), 1);
        // Normal scheduling for DEMOTED_FOR, whatever the load.
        let mut cpu = S * 95 / 100;
        for k in 2..=10u32 {
            cpu += S / 10;
            assert_eq!(g.check(t0 + S * k, cpu), Change::Keep, "second {k}");
        }
        assert_eq!(g.check(t0 + S * 11, cpu), Change::Promote);
        assert!(g.realtime());
        // Busy again: demoted again.
        assert_eq!(g.check(t0 + S * 12, cpu + S), Change::Demote);
        assert_eq!(g.demotions(), 2);
    }

    #[test]
    fn a_failed_promotion_waits_another_period() {
        let t0 = Instant::now();
        let mut g = Guard::new(true);
        g.check(t0, Duration::ZERO);
        assert_eq!(g.check(t0 + S, S), Change::Demote);
        assert_eq!(g.check(t0 + S * 11, S), Change::Promote);
        g.promotion_failed(t0 + S * 11);
        assert!(!g.realtime());
        assert_eq!(g.check(t0 + S * 12, S), Change::Keep);
        assert_eq!(g.check(t0 + S * 21, S), Change::Promote);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_calling_thread_goes_realtime_and_back() {
        // On a thread of its own: the test harness's threads stay as they are.
        std::thread::spawn(|| {
            match make_realtime() {
                Ok(()) => {
                    assert!(is_realtime());
                    make_normal().unwrap();
                    assert!(!is_realtime());
                }
                // Without root, CAP_SYS_NICE or RLIMIT_RTPRIO: refused, and
                // nothing changed.
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
                    assert!(!is_realtime());
                }
            }
            // Threads started from a real-time thread get normal scheduling.
            if make_realtime().is_ok() {
                let child = std::thread::spawn(is_realtime).join().unwrap();
                assert!(!child);
                make_normal().unwrap();
            }
            let t0 = thread_cpu_time();
            let mut x = 0u64;
            for i in 0..2_000_000u64 {
                x = x.wrapping_add(std::hint::black_box(i));
            }
            std::hint::black_box(x);
            assert!(thread_cpu_time() > t0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_that_never_was_realtime_is_never_promoted() {
        let t0 = Instant::now();
        let mut g = Guard::new(false);
        for k in 0..30u32 {
            assert_eq!(g.check(t0 + S * k, Duration::ZERO), Change::Keep);
        }
    }
}
