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
//! Only while it carries traffic: [`Guard`] looks at the thread's CPU
//! time every [`CHECK_EVERY`] (after a wake-up of the loop, so an idle
//! agent is not woken for it). Below [`IDLE_LIMIT`] of a core the thread has
//! normal scheduling (an idle agent competes with nobody, and a woken
//! normal thread lands on the core that woke it, where a real-time one
//! keeps its own core, which may be asleep); from there up to
//! [`BUSY_LIMIT`] it is real-time. A real-time thread that does not sleep
//! takes its core from everything else (the kernel only keeps 5 % of each
//! core for other threads), so above [`BUSY_LIMIT`] over a
//! [`BUSY_WINDOW`] (a flood, or more traffic than one core moves) it
//! returns to normal scheduling for [`DEMOTED_FOR`] before it may be
//! real-time again. Only the node's thread is ever real-time, and threads
//! it starts are not (`SCHED_RESET_ON_FORK`): the runtime's blocking pool,
//! the I/O helper threads and child processes keep normal scheduling.
//!
//! The cost, where cores are contended: a woken real-time thread runs at
//! once and reads what little has arrived, where a normal one ran later
//! and read a larger batch, so each byte takes more wake-ups, and it takes
//! the core from the programs whose traffic it carries. With iperf3 on 2
//! cores that was 5-20 % more CPU per GB; with a sender and receiver that
//! hash their data, twice the CPU per GB and a third less throughput
//! (docs/dataplane.md, "A program that touches its data"). So the guard
//! weighs it: after a [`JUDGE_SPAN`] of real-time scheduling carrying at
//! least [`JUDGE_MIN_BYTES`] (spans count time with traffic only), the
//! thread goes back to normal scheduling
//! for a span and compares its CPU time per byte moved (frames through
//! the TAP, datagrams forwarded as a relay);
//! real-time costing more than [`COST_LIMIT`] times as much gives way to
//! normal scheduling for [`JUDGED_FOR`], after which it is weighed again
//! (so is a real-time thread that was worth it). Judgements and
//! measurements hold across idle spells (transfers that come and go are
//! weighed once, not each at its start). A relay is weighed by the
//! datagrams it forwards: counted by TAP bytes alone it never had enough
//! to judge, and stayed real-time while it carried traffic, waking three
//! to five times as often as with normal scheduling and preempting the
//! ends it shared the cores with (docs/dataplane.md, "Relays, and agents
//! that share the cores").
//!
//! Permission: root or `CAP_SYS_NICE`, or an `RLIMIT_RTPRIO` of at least 1
//! (the packaged service sets `LimitRTPRIO=1`, so the unprivileged service
//! user may). Where neither holds, the agent runs with normal scheduling
//! and says so once.

use std::time::{Duration, Instant};

/// The real-time priority asked for: the lowest, so kernel threads
/// (interrupt threads, migration, watchdogs) keep theirs above it.
pub const PRIORITY: i32 = 1;

/// Share of one core the node's thread may use over a [`BUSY_WINDOW`]
/// and stay real-time.
pub const BUSY_LIMIT: f64 = 0.9;

/// The span [`BUSY_LIMIT`] is measured over: long enough that the start
/// of a stream (a burst of slow start) does not count as too busy.
pub const BUSY_WINDOW: Duration = Duration::from_secs(1);

/// Share of one core below which the node's thread is idle enough for
/// normal scheduling (keepalives and the odd ping use far less; a stream
/// of a few Mbit/s about this much).
pub const IDLE_LIMIT: f64 = 0.02;

/// How often the guard looks at the thread's CPU time: traffic that
/// starts gets real-time scheduling within this.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// How long a thread that went over [`BUSY_LIMIT`] keeps normal
/// scheduling before it tries real-time again.
pub const DEMOTED_FOR: Duration = Duration::from_secs(10);

/// `realtime:` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realtime {
    /// On where a real-time thread leaves a core to the rest: machines
    /// with at least [`Realtime::AUTO_MIN_CORES`] cores (and weighed, as
    /// with `On`). Silently off where the agent lacks the permission.
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

/// Real-time scheduling may cost the node's thread up to this many times
/// the CPU per byte it costs with normal scheduling; above it the thread
/// keeps normal scheduling for [`JUDGED_FOR`] (module docs).
pub const COST_LIMIT: f64 = 1.5;

/// Each of the two measurements a judgement compares (real-time, then
/// normal) spans this much time with traffic (idle spells inside it
/// do not count).
pub const JUDGE_SPAN: Duration = Duration::from_secs(1);

/// A measurement over fewer bytes than this (about 130 Mbit/s over
/// [`JUDGE_SPAN`]) is no judgement: traffic that light costs little either
/// way, and the thread stays real-time.
pub const JUDGE_MIN_BYTES: u64 = 16 << 20;

/// How long a judgement holds before the cost is measured again (the
/// programs sharing the cores change).
pub const JUDGED_FOR: Duration = Duration::from_secs(30);

/// What the guard asks the thread to do after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Leave the scheduling as it is.
    Keep,
    /// Back to normal scheduling: the thread was too busy.
    Demote,
    /// Back to normal scheduling: the thread was idle.
    Rest,
    /// Real-time: the thread carries traffic (and was not demoted within
    /// [`DEMOTED_FOR`]), or real-time was judged worth its cost.
    Promote,
    /// Back to normal scheduling for a [`JUDGE_SPAN`], to measure the CPU
    /// per byte without real-time scheduling.
    Compare,
    /// Stay normal: real-time cost more than [`COST_LIMIT`] times the CPU
    /// per byte of normal scheduling (judged again after [`JUDGED_FOR`]).
    Costly,
}

/// The thread's CPU time and the bytes it moved, at one check.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    /// [`Guard::active`] then.
    active: Duration,
    cpu: Duration,
    bytes: u64,
}

impl Mark {
    /// CPU seconds per byte from this mark to `now`, or `None` for fewer
    /// than [`JUDGE_MIN_BYTES`].
    fn cost(&self, now: Mark) -> Option<f64> {
        let bytes = now.bytes.saturating_sub(self.bytes);
        (bytes >= JUDGE_MIN_BYTES)
            .then(|| now.cpu.saturating_sub(self.cpu).as_secs_f64() / bytes as f64)
    }
}

/// Where the guard is in weighing real-time scheduling's cost.
#[derive(Debug, Clone, Copy)]
enum Judging {
    /// Nothing measured (idle, too busy, or not promoted yet).
    Off,
    /// Real-time since the mark: measuring its cost.
    Realtime(Mark),
    /// Normal since the mark, to compare with the real-time cost (CPU
    /// seconds per byte) measured before.
    Normal(Mark, f64),
    /// Judged then: real-time worth it (`true`) or not.
    Judged(Instant, bool),
}

impl Judging {
    /// After an idle spell at `now`: a judgement holds, and so does a
    /// measurement younger than [`JUDGED_FOR`] (an idle spell adds
    /// neither CPU nor bytes to it): the programs sharing the cores are
    /// the same ones a moment later, and transfers shorter than the two
    /// spans would otherwise never be weighed.
    fn after_idle(self, now: Instant) -> Judging {
        match self {
            Judging::Realtime(m) | Judging::Normal(m, _)
                if now.saturating_duration_since(m.at) >= JUDGED_FOR =>
            {
                Judging::Off
            }
            _ => self,
        }
    }
}

/// Keeps the node's thread real-time only while it carries traffic and
/// leaves a core to the rest (module docs). Sans-IO: the caller passes the
/// time and the thread's CPU time, and changes the scheduling as told.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Real-time scheduling is wanted and was granted once.
    allowed: bool,
    realtime: bool,
    /// The last check: when, and the thread's CPU time then.
    last: Option<(Instant, Duration)>,
    /// Where the current [`BUSY_WINDOW`] began, and the busy share of the
    /// last complete one.
    window: Option<(Instant, Duration)>,
    window_busy: f64,
    demoted_at: Option<Instant>,
    demotions: u64,
    /// Time with traffic (check intervals in which the thread used at
    /// least [`IDLE_LIMIT`] of a core): a judgement's spans are measured
    /// in it, so a span that holds an idle spell still holds a second of
    /// the transfer, not the first check of the next one.
    active: Duration,
    judging: Judging,
    costly: u64,
    /// The last judgement: real-time's CPU per byte as a share of normal
    /// scheduling's.
    last_ratio: Option<f64>,
}

impl Guard {
    /// A guard for a thread with normal scheduling now, which may be made
    /// real-time (`allowed`: wanted, and the system granted it once) or
    /// never.
    pub fn new(allowed: bool) -> Guard {
        Guard {
            allowed,
            realtime: false,
            last: None,
            window: None,
            window_busy: 0.0,
            demoted_at: None,
            demotions: 0,
            active: Duration::ZERO,
            judging: Judging::Off,
            costly: 0,
            last_ratio: None,
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

    /// Times real-time scheduling was judged to cost too much.
    pub fn costly(&self) -> u64 {
        self.costly
    }

    /// Real-time scheduling's CPU per byte over normal scheduling's at the
    /// last judgement (above [`COST_LIMIT`]: judged costly).
    pub fn last_cost_ratio(&self) -> Option<f64> {
        self.last_ratio
    }

    /// Whether a check is due at `now` (the caller reads the thread's CPU
    /// time, a system call, only then).
    pub fn due(&self, now: Instant) -> bool {
        self.allowed
            && self
                .last
                .is_none_or(|(at, _)| now.saturating_duration_since(at) >= CHECK_EVERY)
    }

    /// A check at `now`, the thread having used `cpu` of CPU time and moved
    /// `bytes` (frames read from and written to the TAP, datagrams
    /// forwarded as a relay) since it started.
    /// Checks closer together than [`CHECK_EVERY`] change nothing (the
    /// busy share over a shorter span says little).
    pub fn check(&mut self, now: Instant, cpu: Duration, bytes: u64) -> Change {
        let since = |t: Instant| now.saturating_duration_since(t);
        let share = |(at, used): (Instant, Duration)| {
            let span = now.saturating_duration_since(at).as_secs_f64();
            cpu.saturating_sub(used).as_secs_f64() / span.max(1e-9)
        };
        let Some(last) = self.last else {
            self.last = Some((now, cpu));
            self.window = Some((now, cpu));
            return Change::Keep;
        };
        if now.saturating_duration_since(last.0) < CHECK_EVERY {
            return Change::Keep;
        }
        self.last = Some((now, cpu));
        if !self.allowed {
            return Change::Keep;
        }
        let recent = share(last);
        if recent >= IDLE_LIMIT {
            // An interval longer than a check or two (the first check after
            // an idle spell) had traffic at its end only.
            self.active += since(last.0).min(2 * CHECK_EVERY);
        }
        let mark = Mark {
            at: now,
            active: self.active,
            cpu,
            bytes,
        };
        let traffic_since = |m: Mark| self.active.saturating_sub(m.active);
        let mut too_busy = false;
        if let Some(w) = self.window {
            if now.saturating_duration_since(w.0) >= BUSY_WINDOW {
                self.window_busy = share(w);
                self.window = Some((now, cpu));
                too_busy = self.window_busy > BUSY_LIMIT;
            }
        }
        if self.realtime {
            if too_busy {
                self.realtime = false;
                self.demoted_at = Some(now);
                self.demotions += 1;
                self.judging = Judging::Off;
                return Change::Demote;
            }
            if recent < IDLE_LIMIT {
                self.realtime = false;
                self.judging = self.judging.after_idle(now);
                return Change::Rest;
            }
            match self.judging {
                Judging::Realtime(from) if traffic_since(from) >= JUDGE_SPAN => {
                    match from.cost(mark) {
                        Some(cost) => {
                            self.realtime = false;
                            self.judging = Judging::Normal(mark, cost);
                            return Change::Compare;
                        }
                        // Too little traffic to judge: measure on.
                        None => self.judging = Judging::Realtime(mark),
                    }
                }
                Judging::Judged(at, _) if since(at) >= JUDGED_FOR => {
                    self.judging = Judging::Realtime(mark);
                }
                _ => {}
            }
            return Change::Keep;
        }
        if recent < IDLE_LIMIT {
            self.judging = self.judging.after_idle(now);
            return Change::Keep;
        }
        let cooling = self.demoted_at.is_some_and(|t| since(t) < DEMOTED_FOR);
        if cooling || self.window_busy > BUSY_LIMIT {
            return Change::Keep;
        }
        match self.judging {
            Judging::Normal(from, _) if traffic_since(from) < JUDGE_SPAN => return Change::Keep,
            Judging::Normal(from, realtime) => match from.cost(mark) {
                Some(normal) => {
                    self.last_ratio = Some(realtime / normal.max(f64::MIN_POSITIVE));
                    if realtime > COST_LIMIT * normal {
                        self.judging = Judging::Judged(now, false);
                        self.costly += 1;
                        return Change::Costly;
                    }
                    self.judging = Judging::Judged(now, true);
                }
                // Too few bytes yet (the stream paused): wait for more.
                None if since(from.at) < JUDGED_FOR => return Change::Keep,
                None => self.judging = Judging::Realtime(mark),
            },
            // A measurement that spanned an idle spell goes on.
            Judging::Realtime(_) => {}
            Judging::Judged(at, cheap) if since(at) < JUDGED_FOR => {
                if !cheap {
                    return Change::Keep;
                }
            }
            _ => self.judging = Judging::Realtime(mark),
        }
        self.realtime = true;
        Change::Promote
    }

    /// A promotion the guard asked for could not be made: stay normal and
    /// try again after [`DEMOTED_FOR`] (the permission is checked when the
    /// agent starts; losing it later is unusual, but not fatal).
    pub fn promotion_failed(&mut self, now: Instant) {
        self.realtime = false;
        self.demoted_at = Some(now);
        self.judging = Judging::Off;
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

    #[test]
    fn auto_wants_two_cores() {
        assert!(!Realtime::Auto.wanted(1));
        assert!(Realtime::Auto.wanted(2));
        assert!(Realtime::On.wanted(1));
        assert!(!Realtime::Off.wanted(64));
    }

    /// A guard that saw its first check at `t0` (CPU time 0).
    fn started(t0: Instant) -> Guard {
        let mut g = Guard::new(true);
        assert!(g.due(t0));
        assert_eq!(g.check(t0, Duration::ZERO, 0), Change::Keep);
        g
    }

    /// Checks every [`CHECK_EVERY`] from `from` for `checks` checks, the
    /// thread using `share` of a core; returns the changes and moves `cpu`.
    fn run(
        g: &mut Guard,
        from: Instant,
        checks: u32,
        share: f64,
        cpu: &mut Duration,
    ) -> Vec<Change> {
        run_moving(g, from, checks, (share, 0), (cpu, &mut 0))
    }

    fn keeps(n: usize) -> Vec<Change> {
        vec![Change::Keep; n]
    }

    /// From `from`, at half a core: normal scheduling until [`DEMOTED_FOR`]
    /// after the demotion (or failed promotion) at `from`, then promoted.
    /// Returns when the promotion came.
    fn cools_down_then_promotes(g: &mut Guard, from: Instant, cpu: &mut Duration) -> Instant {
        let cool = (DEMOTED_FOR.as_millis() / CHECK_EVERY.as_millis()) as u32;
        assert_eq!(run(g, from, cool - 1, 0.5, cpu), keeps(cool as usize - 1));
        let at = from + CHECK_EVERY * (cool - 1);
        assert_eq!(run(g, at, 1, 0.5, cpu), vec![Change::Promote]);
        assert!(g.realtime());
        at
    }

    #[test]
    fn an_idle_thread_keeps_normal_scheduling() {
        let t0 = Instant::now();
        let mut g = started(t0);
        let mut cpu = Duration::ZERO;
        // 1 % of a core (keepalives, a ping now and then).
        assert_eq!(run(&mut g, t0, 120, 0.01, &mut cpu), keeps(120));
        assert!(!g.realtime());
        // Not due between checks; due after one.
        assert!(!g.due(t0 + CHECK_EVERY * 120 + CHECK_EVERY / 2));
        assert!(g.due(t0 + CHECK_EVERY * 121));
    }

    #[test]
    fn a_thread_carrying_traffic_is_realtime_within_a_check_until_it_idles() {
        let t0 = Instant::now();
        let mut g = started(t0);
        // Earlier than a check: nothing.
        assert_eq!(
            g.check(t0 + CHECK_EVERY / 2, CHECK_EVERY / 4, 0),
            Change::Keep
        );
        // 80 % of a core: real-time at the first check, for a minute.
        let mut cpu = Duration::ZERO;
        let got = run(&mut g, t0, 240, 0.8, &mut cpu);
        assert_eq!(got[0], Change::Promote);
        assert_eq!(got[1..], keeps(239)[..]);
        assert!(g.realtime());
        // The traffic stops: normal scheduling again at the next check, not
        // counted as a demotion; real-time again as soon as it is back.
        let t1 = t0 + CHECK_EVERY * 240;
        assert_eq!(run(&mut g, t1, 1, 0.001, &mut cpu), vec![Change::Rest]);
        assert!(!g.realtime());
        assert_eq!(g.demotions(), 0);
        assert_eq!(
            run(&mut g, t1 + CHECK_EVERY, 1, 0.5, &mut cpu),
            vec![Change::Promote]
        );
    }

    #[test]
    fn a_burst_shorter_than_the_busy_window_is_not_too_busy() {
        let t0 = Instant::now();
        let mut g = started(t0);
        let mut cpu = Duration::ZERO;
        // 250 ms at 100 % (a stream starting), then 60 %: one window
        // averages 70 %.
        assert_eq!(run(&mut g, t0, 1, 1.0, &mut cpu), vec![Change::Promote]);
        let t1 = t0 + CHECK_EVERY;
        assert_eq!(run(&mut g, t1, 40, 0.6, &mut cpu), keeps(40));
        assert!(g.realtime());
    }

    #[test]
    fn a_busy_thread_is_demoted_then_tried_again() {
        let t0 = Instant::now();
        let mut g = started(t0);
        let mut cpu = Duration::ZERO;
        // 95 % of a core: real-time at once, demoted when the first busy
        // window closes.
        let got = run(&mut g, t0, 4, 0.95, &mut cpu);
        assert_eq!(
            got,
            vec![Change::Promote, Change::Keep, Change::Keep, Change::Demote]
        );
        assert!(!g.realtime());
        assert_eq!(g.demotions(), 1);
        // Normal scheduling for DEMOTED_FOR, whatever the load.
        let t2 = cools_down_then_promotes(&mut g, t0 + CHECK_EVERY * 4, &mut cpu);
        // Busy again for a whole window: demoted again.
        let t3 = t2 + CHECK_EVERY;
        let got = run(&mut g, t3, 8, 1.0, &mut cpu);
        assert!(got.contains(&Change::Demote), "{got:?}");
        assert_eq!(g.demotions(), 2);
        // Still too busy after the cool-down: stays normal.
        let t4 = t3 + CHECK_EVERY * 8;
        assert_eq!(run(&mut g, t4, 80, 1.0, &mut cpu), keeps(80));
        assert!(!g.realtime());
    }

    /// Like [`run`], the thread also moving `per_check` bytes a check.
    fn run_moving(
        g: &mut Guard,
        from: Instant,
        checks: u32,
        (share, per_check): (f64, u64),
        (cpu, bytes): (&mut Duration, &mut u64),
    ) -> Vec<Change> {
        (1..=checks)
            .map(|k| {
                *cpu += CHECK_EVERY.mul_f64(share);
                *bytes += per_check;
                g.check(from + CHECK_EVERY * k, *cpu, *bytes)
            })
            .collect()
    }

    /// Checks in a [`JUDGE_SPAN`].
    const SPAN: u32 = (JUDGE_SPAN.as_millis() / CHECK_EVERY.as_millis()) as u32;
    /// Checks in [`JUDGED_FOR`].
    const HELD: u32 = (JUDGED_FOR.as_millis() / CHECK_EVERY.as_millis()) as u32;
    const MIB8: u64 = 8 << 20;

    /// `n` keeps, then `last`.
    fn then(n: u32, last: Change) -> Vec<Change> {
        let mut v = keeps(n as usize - 1);
        v.push(last);
        v
    }

    /// A guard started at `t0` that sees a stream of 8 MiB a check at
    /// `share` of a core: real-time at the first check, back to normal to
    /// compare a span later. Returns the guard and when it went back.
    fn promoted_then_compared(
        t0: Instant,
        share: f64,
        (cpu, bytes): (&mut Duration, &mut u64),
    ) -> (Guard, Instant) {
        let mut g = started(t0);
        let got = run_moving(&mut g, t0, 1 + SPAN, (share, MIB8), (cpu, bytes));
        assert_eq!(got[0], Change::Promote);
        assert_eq!(got[1..], then(SPAN, Change::Compare)[..]);
        assert!(!g.realtime());
        (g, t0 + CHECK_EVERY * (1 + SPAN))
    }

    #[test]
    fn realtime_that_costs_a_little_more_per_byte_stays() {
        let (mut cpu, mut bytes) = (Duration::ZERO, 0u64);
        // Real-time costs 0.6 of a core for the bytes normal scheduling
        // moves at 0.5: 1.2 times the CPU per byte.
        let (mut g, mut at) = promoted_then_compared(Instant::now(), 0.6, (&mut cpu, &mut bytes));
        assert_eq!(g.last_cost_ratio(), None);
        let got = run_moving(&mut g, at, SPAN, (0.5, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(got, then(SPAN, Change::Promote));
        assert!(g.realtime());
        assert_eq!(g.costly(), 0);
        let ratio = g.last_cost_ratio().unwrap();
        assert!((ratio - 1.2).abs() < 1e-6, "{ratio}");
        // Real-time until the judgement is due again (an idle spell and
        // the next transfer, real-time at once, included), then measured
        // again.
        at += CHECK_EVERY * SPAN;
        let got = run_moving(&mut g, at, 8, (0.001, 0), (&mut cpu, &mut bytes));
        assert_eq!(got, [vec![Change::Rest], keeps(7)].concat());
        at += CHECK_EVERY * 8;
        let got = run_moving(&mut g, at, 1, (0.6, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(got, vec![Change::Promote]);
        at += CHECK_EVERY;
        let got = run_moving(
            &mut g,
            at,
            HELD + SPAN - 9,
            (0.6, MIB8),
            (&mut cpu, &mut bytes),
        );
        assert_eq!(got, then(HELD + SPAN - 9, Change::Compare));
    }

    #[test]
    fn realtime_that_costs_twice_per_byte_gives_way_for_a_while() {
        let (mut cpu, mut bytes) = (Duration::ZERO, 0u64);
        // What a program that needs the cores itself does to a real-time
        // agent: twice the CPU for the same bytes.
        let (mut g, mut at) = promoted_then_compared(Instant::now(), 0.8, (&mut cpu, &mut bytes));
        let got = run_moving(&mut g, at, SPAN, (0.4, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(got, then(SPAN, Change::Costly));
        assert!(!g.realtime());
        assert_eq!((g.costly(), g.demotions()), (1, 0));
        let ratio = g.last_cost_ratio().unwrap();
        assert!((ratio - 2.0).abs() < 1e-6, "{ratio}");
        // Normal scheduling for JUDGED_FOR, an idle spell and the next
        // transfer included, then tried again.
        at += CHECK_EVERY * SPAN;
        let got = run_moving(&mut g, at, 8, (0.001, 0), (&mut cpu, &mut bytes));
        assert_eq!(got, keeps(8));
        at += CHECK_EVERY * 8;
        let got = run_moving(&mut g, at, HELD - 8, (0.4, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(got, then(HELD - 8, Change::Promote));
        // Still costly: gives way again.
        at += CHECK_EVERY * (HELD - 8);
        let got = run_moving(&mut g, at, SPAN, (0.8, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(got, then(SPAN, Change::Compare));
        at += CHECK_EVERY * SPAN;
        let got = run_moving(&mut g, at, SPAN, (0.4, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(got, then(SPAN, Change::Costly));
        assert_eq!(g.costly(), 2);
    }

    #[test]
    fn light_traffic_is_not_weighed_and_a_weighing_spans_an_idle_spell() {
        let t0 = Instant::now();
        let mut g = started(t0);
        let (mut cpu, mut bytes) = (Duration::ZERO, 0u64);
        // 1 MiB a check (under JUDGE_MIN_BYTES a span) at a tenth of a
        // core: real-time, never compared.
        let got = run_moving(&mut g, t0, 200, (0.1, 1 << 20), (&mut cpu, &mut bytes));
        assert_eq!(got, [vec![Change::Promote], keeps(199)].concat());
        // A stream, compared within two spans of its start (the span running when it
        // starts may hold too few of its bytes).
        let mut at = t0 + CHECK_EVERY * 200;
        let mut checks = 0;
        while g.realtime() {
            checks += 1;
            assert!(checks <= 2 * SPAN, "not compared");
            let got = run_moving(&mut g, at, 1, (0.8, MIB8), (&mut cpu, &mut bytes));
            assert_eq!(
                got[0],
                if g.realtime() {
                    Change::Keep
                } else {
                    Change::Compare
                }
            );
            at += CHECK_EVERY;
        }
        // It stops while normal, and the next one (as cheap) completes the
        // comparison: real-time again once the normal span holds a second
        // of traffic (the idle checks do not count).
        let got = run_moving(&mut g, at, 2, (0.001, 0), (&mut cpu, &mut bytes));
        assert_eq!(got, keeps(2));
        at += CHECK_EVERY * 2;
        let got = run_moving(&mut g, at, SPAN, (0.8, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(got, then(SPAN, Change::Promote));
        assert_eq!(g.costly(), 0);
    }

    #[test]
    fn a_real_time_span_broken_by_an_idle_spell_still_holds_a_second_of_traffic() {
        // Short transfers with pauses between them: the real-time half of
        // a judgement must not end on the first check of the next transfer
        // (its start alone would be weighed against a second of normal
        // scheduling).
        let t0 = Instant::now();
        let mut g = started(t0);
        let (mut cpu, mut bytes) = (Duration::ZERO, 0u64);
        let got = run_moving(&mut g, t0, 2, (0.8, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(got, vec![Change::Promote, Change::Keep]);
        let mut at = t0 + CHECK_EVERY * 2;
        let got = run_moving(&mut g, at, 20, (0.001, 0), (&mut cpu, &mut bytes));
        assert_eq!(got, [vec![Change::Rest], keeps(19)].concat());
        at += CHECK_EVERY * 20;
        // Half a second of traffic before the pause, a second after it.
        let got = run_moving(&mut g, at, SPAN - 1, (0.8, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(
            got,
            [vec![Change::Promote], then(SPAN - 2, Change::Compare)].concat()
        );
        assert!(!g.realtime());
        // And the normal half likewise: a pause inside it is not counted.
        at += CHECK_EVERY * (SPAN - 1);
        let got = run_moving(&mut g, at, 2, (0.6, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(got, keeps(2));
        at += CHECK_EVERY * 2;
        let got = run_moving(&mut g, at, 12, (0.001, 0), (&mut cpu, &mut bytes));
        assert_eq!(got, keeps(12));
        at += CHECK_EVERY * 12;
        let got = run_moving(&mut g, at, SPAN - 2, (0.6, MIB8), (&mut cpu, &mut bytes));
        assert_eq!(got, then(SPAN - 2, Change::Promote));
        let ratio = g.last_cost_ratio().unwrap();
        assert!((ratio - 0.8 / 0.6).abs() < 0.05, "{ratio}");
    }

    #[test]
    fn a_failed_promotion_waits_another_period() {
        let t0 = Instant::now();
        let mut g = started(t0);
        let mut cpu = Duration::ZERO;
        assert_eq!(run(&mut g, t0, 1, 0.5, &mut cpu), vec![Change::Promote]);
        g.promotion_failed(t0 + CHECK_EVERY);
        assert!(!g.realtime());
        cools_down_then_promotes(&mut g, t0 + CHECK_EVERY, &mut cpu);
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
    fn a_thread_not_allowed_is_never_promoted() {
        let t0 = Instant::now();
        let mut g = Guard::new(false);
        assert!(!g.due(t0));
        let mut cpu = Duration::ZERO;
        g.check(t0, cpu, 0);
        assert_eq!(run(&mut g, t0, 40, 0.5, &mut cpu), keeps(40));
    }
}
