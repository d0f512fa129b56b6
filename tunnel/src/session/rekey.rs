//! Rekeying an OPEN session (`docs/crypto-profile.md` 6.3, 7.4): every
//! [`RekeyConfig::interval`] and before a send key reaches its packet
//! budget, the two ends run a fresh X25519 exchange in a Rekey / Rekey Ack
//! chunk pair and move to the next epoch's keys without a pause.
//!
//! Who switches when (`R` asks, `A` answers):
//!
//! 1. `R` sends Rekey(n, E_R) and keeps sending under epoch n-1.
//! 2. `A` derives epoch n, accepts it for receiving (the opener's next key),
//!    answers Rekey Ack(n, E_A), and keeps *sending* under n-1: `R` cannot
//!    read epoch n before the Ack arrives.
//! 3. `R` derives epoch n, sends under it at once (a Ping goes out so the
//!    switch shows even on an idle session) and accepts n for receiving.
//! 4. The first epoch-n packet from `R` tells `A` that `R` has the keys:
//!    `A` sends under n from then on; its first epoch-n packet tells `R`
//!    the same. Each end keeps the old receive key for
//!    [`RekeyConfig::grace`] (reordered packets), then drops it.
//!
//! Lost chunks: `R` resends Rekey with backoff until the Ack comes; `A`
//! answers a repeated Rekey with the same Ack; `R` repeats the Ping until
//! an epoch-n packet arrives. Both ask at once (glare): the session's
//! initiator keeps its request, the responder drops its own and answers.
//!
//! Time trigger: the session's initiator asks `interval` after the current
//! epoch began, the responder a quarter interval later (so normally one
//! end asks). Packet trigger: either end asks once its send key sealed
//! [`RekeyConfig::after_packets`]. A send key older than
//! [`RekeyConfig::max_age`], or one that sealed its whole budget, is never
//! used again: the session closes with [`CloseReason::Exhausted`] (the
//! Close Ack uses the sealer's final reserve), never a silent black hole.
//!
//! One deadline ([`Timer::Rekey`]) covers the triggers, the resends, the
//! grace period and the age limit; the data path only compares the
//! sealer's counter with the threshold.

use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::timer::{Timer, TimerOutcome};
use super::{CloseReason, Session, SessionState};
use crate::crypto::{rekey_keys, ChainKey, RekeyShare, Role, REKEY_VERSION};
use crate::wire::{Chunk, RekeyFields};
use crate::Rng;

/// When sessions rekey (`docs/crypto-profile.md` 7.4).
#[derive(Debug, Clone)]
pub struct RekeyConfig {
    /// Rekey this long after the current keys were made (WireGuard's
    /// REKEY_AFTER_TIME). The session's responder waits a quarter longer.
    pub interval: Duration,
    /// Rekey once a send key sealed this many packets.
    pub after_packets: u64,
    /// A send key seals at most this many packets (lowered to the suite's
    /// limit: AES-256-GCM 2^32, ChaCha20-Poly1305 2^60).
    pub packet_limit: u64,
    /// A send key older than this is never used again: the session closes
    /// (WireGuard's REJECT_AFTER_TIME).
    pub max_age: Duration,
    /// How long the previous epoch's receive key still opens reordered
    /// packets after the far end switched.
    pub grace: Duration,
}

impl Default for RekeyConfig {
    fn default() -> Self {
        RekeyConfig {
            interval: Duration::from_secs(120),
            after_packets: 1 << 30,
            packet_limit: u64::MAX,
            max_age: Duration::from_secs(180),
            grace: Duration::from_secs(10),
        }
    }
}

/// First resend interval of a Rekey or of the confirming Ping (doubled up
/// to [`RETRY_MAX`]); at least the session's ERT0.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(8);

/// Where a session is in the exchange.
pub(super) enum RekeyState {
    Idle,
    /// We sent Rekey(`epoch`) and wait for the Ack.
    Asked {
        epoch: u32,
        share: RekeyShare,
        retry_at: Instant,
        retry: Duration,
    },
    /// We send under the new epoch and wait for a packet of the far end
    /// under it.
    Switched {
        retry_at: Instant,
        retry: Duration,
    },
    /// We answered Rekey(`epoch`) and send under the old epoch until a
    /// packet under the new one arrives; `send` is the new send key.
    Answered {
        epoch: u32,
        asker: [u8; 32],
        own: [u8; 32],
        send: Zeroizing<[u8; 32]>,
    },
}

/// The session's rekeying state.
pub(super) struct Rekeying {
    pub state: RekeyState,
    pub cfg: RekeyConfig,
    /// The chaining key of the current epoch (None before OPEN).
    pub chain: Option<ChainKey>,
    pub epoch: u32,
    /// When the current epoch was made at this end (the time trigger).
    pub epoch_since: Instant,
    /// When our current send key was first used (the age limit).
    pub send_since: Instant,
    pub drop_previous_at: Option<Instant>,
    /// A Rekey (false) or Rekey Ack (true) chunk to send.
    pub out: Option<(bool, RekeyFields)>,
    /// The send key ran out (set by the packet builder).
    pub exhausted: bool,
    pub completed: u64,
}

impl Rekeying {
    pub fn new(now: Instant, cfg: RekeyConfig) -> Rekeying {
        Rekeying {
            state: RekeyState::Idle,
            cfg,
            chain: None,
            epoch: 0,
            epoch_since: now,
            send_since: now,
            drop_previous_at: None,
            out: None,
            exhausted: false,
            completed: 0,
        }
    }

    #[inline]
    pub fn is_idle(&self) -> bool {
        matches!(self.state, RekeyState::Idle)
    }

    /// The chunk to send next, if any.
    pub fn chunk(&self) -> Option<Chunk<'static>> {
        self.out.map(|(ack, f)| {
            if ack {
                Chunk::RekeyAck(f)
            } else {
                Chunk::Rekey(f)
            }
        })
    }
}

fn fields(epoch: u32, public: &[u8; 32]) -> RekeyFields {
    RekeyFields {
        version: REKEY_VERSION,
        epoch,
        public: *public,
    }
}

impl Session {
    /// The epoch-0 chaining key from the handshake; the epoch starts now.
    pub(super) fn start_epochs(&mut self, now: Instant, chain: ChainKey) {
        self.rekey.chain = Some(chain);
        self.rekey.epoch = 0;
        self.rekey.epoch_since = now;
        self.rekey.send_since = now;
        let (limit, after) = (self.rekey.cfg.packet_limit, self.rekey.cfg.after_packets);
        if let Some(s) = self.sealer.as_mut() {
            s.set_budget(limit, after);
        }
    }

    /// The current key epoch (0 after the handshake).
    pub fn key_epoch(&self) -> u32 {
        self.rekey.epoch
    }

    /// The AEAD suite of the session's packets (none before keying).
    pub fn suite(&self) -> Option<crate::crypto::AeadSuite> {
        self.sealer.as_ref().map(crate::crypto::PacketSealer::suite)
    }

    /// When the current epoch's time trigger fires at this end.
    fn rekey_due(&self) -> Instant {
        let i = self.rekey.cfg.interval;
        let wait = match self.role {
            Role::Initiator => i,
            Role::Responder => i + i / 4,
        };
        self.rekey.epoch_since + wait
    }

    /// Arm [`Timer::Rekey`] at the earliest thing the rekeying waits for.
    pub(super) fn arm_rekey(&mut self) {
        if self.state != SessionState::Open || self.rekey.exhausted {
            // Exhausted: the builder armed the timer for now; keep it.
            return;
        }
        let r = &self.rekey;
        let mut at = r.send_since + r.cfg.max_age;
        let mut consider = |t: Instant| at = at.min(t);
        if let Some(t) = r.drop_previous_at {
            consider(t);
        }
        match &r.state {
            RekeyState::Idle if !self.opener.as_ref().is_some_and(|o| o.has_next()) => {
                consider(self.rekey_due());
                if self.sealer.as_ref().is_some_and(|s| s.wants_rekey()) {
                    // The packet trigger: due already.
                    consider(r.epoch_since);
                }
            }
            RekeyState::Asked { retry_at, .. } | RekeyState::Switched { retry_at, .. } => {
                consider(*retry_at)
            }
            _ => {}
        }
        self.timers.set(Timer::Rekey, at);
    }

    fn first_retry(&self) -> Duration {
        self.ert0().clamp(RETRY_MIN, RETRY_MAX)
    }

    /// [`Timer::Rekey`] passed.
    pub(super) fn on_rekey_timer(&mut self, now: Instant, rng: &mut Rng) -> Option<TimerOutcome> {
        if self.state != SessionState::Open {
            // Closing: the key ran out, nothing more can be sent.
            if self.rekey.exhausted {
                self.set_state(now, SessionState::Closed);
                return Some(TimerOutcome::Finished);
            }
            return None;
        }
        if self.rekey.exhausted || now >= self.rekey.send_since + self.rekey.cfg.max_age {
            self.final_close_ack = true;
            self.set_state(now, SessionState::Closed);
            return Some(TimerOutcome::Closed(CloseReason::Exhausted));
        }
        if self.rekey.drop_previous_at.is_some_and(|t| t <= now) {
            self.rekey.drop_previous_at = None;
            if let Some(o) = self.opener.as_mut() {
                o.drop_previous();
            }
        }
        let retry0 = self.first_retry();
        let due = now >= self.rekey_due() || self.sealer.as_ref().is_some_and(|s| s.wants_rekey());
        let pending = self.opener.as_ref().is_some_and(|o| o.has_next());
        match &mut self.rekey.state {
            RekeyState::Idle if due && !pending => {
                let epoch = self.rekey.epoch.wrapping_add(1);
                let share = RekeyShare::new(rng);
                self.rekey.out = Some((false, fields(epoch, share.public())));
                self.rekey.state = RekeyState::Asked {
                    epoch,
                    share,
                    retry_at: now + retry0,
                    retry: retry0,
                };
            }
            RekeyState::Asked {
                epoch,
                share,
                retry_at,
                retry,
            } if *retry_at <= now => {
                *retry = (*retry * 2).min(RETRY_MAX);
                *retry_at = now + *retry;
                self.rekey.out = Some((false, fields(*epoch, share.public())));
            }
            RekeyState::Switched { retry_at, retry } if *retry_at <= now => {
                *retry = (*retry * 2).min(RETRY_MAX);
                *retry_at = now + *retry;
                self.pending_keepalive = true;
            }
            _ => {}
        }
        self.arm_rekey();
        None
    }

    /// A Rekey (`ack` false) or Rekey Ack chunk arrived in an OPEN session.
    pub(super) fn on_rekey_chunk(
        &mut self,
        now: Instant,
        ack: bool,
        f: &RekeyFields,
        rng: &mut Rng,
    ) {
        if f.version != REKEY_VERSION || self.state != SessionState::Open {
            return;
        }
        if ack {
            self.on_rekey_ack(now, f);
        } else {
            self.on_rekey_request(f, rng);
        }
        self.arm_rekey();
    }

    fn on_rekey_request(&mut self, f: &RekeyFields, rng: &mut Rng) {
        let next = self.rekey.epoch.wrapping_add(1);
        let answer = match &self.rekey.state {
            RekeyState::Idle => {
                f.epoch == next && !self.opener.as_ref().is_some_and(|o| o.has_next())
            }
            // Glare: the session's initiator keeps its own request.
            RekeyState::Asked { epoch, .. } => *epoch == f.epoch && self.role == Role::Responder,
            RekeyState::Answered {
                epoch, asker, own, ..
            } => {
                if *epoch == f.epoch && *asker == f.public {
                    // Our Ack was lost: the same answer again.
                    self.rekey.out = Some((true, fields(*epoch, own)));
                }
                false
            }
            RekeyState::Switched { .. } => false,
        };
        if !answer {
            return;
        }
        let Some(chain) = self.rekey.chain.as_ref() else {
            return;
        };
        let share = RekeyShare::new(rng);
        let Ok(keys) = rekey_keys(chain, self.role, f.epoch, &share, &f.public, false) else {
            return;
        };
        if let Some(o) = self.opener.as_mut() {
            o.install_next(keys.recv_key());
        }
        let send = Zeroizing::new(*keys.send_key());
        self.rekey.chain = Some(keys.into_chain());
        self.rekey.epoch = f.epoch;
        self.rekey.drop_previous_at = None;
        self.rekey.out = Some((true, fields(f.epoch, share.public())));
        self.rekey.state = RekeyState::Answered {
            epoch: f.epoch,
            asker: f.public,
            own: *share.public(),
            send,
        };
    }

    fn on_rekey_ack(&mut self, now: Instant, f: &RekeyFields) {
        let RekeyState::Asked { epoch, share, .. } = &self.rekey.state else {
            return;
        };
        if *epoch != f.epoch {
            return;
        }
        let Some(chain) = self.rekey.chain.as_ref() else {
            return;
        };
        let Ok(keys) = rekey_keys(chain, self.role, f.epoch, share, &f.public, true) else {
            return;
        };
        let (limit, after) = (self.rekey.cfg.packet_limit, self.rekey.cfg.after_packets);
        if let Some(s) = self.sealer.as_mut() {
            s.rekey(keys.send_key(), limit, after);
        }
        if let Some(o) = self.opener.as_mut() {
            o.install_next(keys.recv_key());
        }
        self.rekey.chain = Some(keys.into_chain());
        self.rekey.epoch = f.epoch;
        self.rekey.epoch_since = now;
        self.rekey.send_since = now;
        self.rekey.drop_previous_at = None;
        self.rekey.out = None;
        let retry = self.first_retry();
        self.rekey.state = RekeyState::Switched {
            retry_at: now + retry,
            retry,
        };
        // Show the switch even on an idle session.
        self.pending_keepalive = true;
    }

    /// A packet under the next receive key arrived: the far end switched.
    pub(super) fn on_peer_switched(&mut self, now: Instant) {
        match std::mem::replace(&mut self.rekey.state, RekeyState::Idle) {
            RekeyState::Answered { send, .. } => {
                let (limit, after) = (self.rekey.cfg.packet_limit, self.rekey.cfg.after_packets);
                if let Some(s) = self.sealer.as_mut() {
                    s.rekey(&send, limit, after);
                }
                self.rekey.epoch_since = now;
                self.rekey.send_since = now;
                self.rekey.out = None;
            }
            RekeyState::Switched { .. } => {}
            other => {
                // Not waiting for a switch (never happens: the next key
                // is installed only in the two states above).
                self.rekey.state = other;
                return;
            }
        }
        self.rekey.completed += 1;
        self.rekey.drop_previous_at = Some(now + self.rekey.cfg.grace);
        self.arm_rekey();
    }
}
