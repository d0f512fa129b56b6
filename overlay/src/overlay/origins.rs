//! What this node knows of the origins of flood and routed frames
//! (docs/overlay.md "Authenticated origins"): the key each origin signs
//! with (checked once against its node id, then cached), its duplicate
//! window and its broadcast budget.
//!
//! An entry is made only after a signature by the origin verified, so a
//! member cannot make entries for origins it does not hold keys of. The
//! table holds at most `Budgets::origins` entries; a new origin beyond
//! that evicts the one whose frames were accepted least recently (a scan),
//! within the sending link's `Budgets::origin_evictions_per_link`; past
//! it, the frame is delivered and forwarded but its origin not remembered
//! (no window, no budget, no learning). Keys are cheap to mint: the
//! eviction budget keeps a member from cycling an honest origin out of
//! the table quickly (after which it could replay the origin's recorded
//! floods, each once).

use super::budget::{Bucket, Budget};
use crate::directory::certificate_of;
use crate::source::auto_mac;
use crate::switch::{DropReason, Mac};
use crate::wire::OriginAuth;
use ringlan_tunnel::crypto::{Certificate, NetworkName};
use ringlan_tunnel::NodeId;
use std::collections::HashMap;
use std::time::Instant;

/// Sequence numbers behind the newest one that are still told apart
/// (floods of one origin reordered by up to this many arrive once).
pub(super) const WINDOW: u64 = 128;
/// A sequence number this far from the newest (either way) is a new run
/// of the origin (it restarted and drew a new random start), not a late
/// or early frame.
/// Only the origin can sign its numbers, and a new random start lands
/// within this distance of the old one with probability 2^-31.
pub(super) const NEW_RUN: u64 = 1 << 32;

/// Duplicate suppression for one origin's floods, like a replay window:
/// the newest sequence number and a bitmap of the `WINDOW` before it.
/// The window of the run before a restart is kept too, so frames recorded
/// from the current run cannot be replayed by sending an old run's frame
/// first.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SeqWindow {
    cur: Run,
    prev: Option<Run>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    top: u64,
    /// Bit i: `top - i` was seen.
    seen: u128,
}

impl Run {
    fn start(seq: u64) -> Run {
        Run { top: seq, seen: 1 }
    }

    /// Whether `seq` is within this run: less than `NEW_RUN` ahead of or
    /// behind its newest number.
    fn holds(&self, seq: u64) -> bool {
        self.top.wrapping_sub(seq) < NEW_RUN || seq.wrapping_sub(self.top) < NEW_RUN
    }

    /// True if `seq` is new (and now recorded). Call only if `holds`.
    fn accept(&mut self, seq: u64) -> bool {
        let ahead = seq.wrapping_sub(self.top);
        if ahead != 0 && ahead < NEW_RUN {
            self.seen = if ahead >= 128 { 0 } else { self.seen << ahead };
            self.seen |= 1;
            self.top = seq;
            return true;
        }
        let behind = self.top.wrapping_sub(seq);
        if behind >= WINDOW {
            return false;
        }
        let bit = 1u128 << behind;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

impl SeqWindow {
    pub(super) fn new(seq: u64) -> SeqWindow {
        SeqWindow {
            cur: Run::start(seq),
            prev: None,
        }
    }

    /// True if `seq` was not seen before (and is now recorded).
    pub(super) fn accept(&mut self, seq: u64) -> bool {
        if self.cur.holds(seq) {
            return self.cur.accept(seq);
        }
        if let Some(p) = &mut self.prev {
            if p.holds(seq) {
                // Back to the other run (an old frame, or a replay).
                let ok = p.accept(seq);
                std::mem::swap(&mut self.cur, p);
                return ok;
            }
        }
        self.prev = Some(self.cur);
        self.cur = Run::start(seq);
        true
    }
}

/// One origin: its verified certificate (key and node id), auto MAC,
/// duplicate window and broadcast budget.
#[derive(Debug)]
pub(super) struct Origin {
    cert: Certificate,
    pub(super) auto_mac: Mac,
    pub(super) window: Option<SeqWindow>,
    pub(super) broadcasts: Bucket,
    used: Instant,
}

/// The origins table.
#[derive(Debug)]
pub(super) struct Origins {
    map: HashMap<NodeId, Origin>,
    cap: usize,
    /// The network whose certificates name the keys (`None`: this node
    /// has no identity and checks nothing: every frame is refused).
    network: Option<NetworkName>,
    /// Each new origin's broadcast budget.
    broadcasts: Budget,
}

impl Origins {
    pub(super) fn new(cap: usize, network: Option<NetworkName>, broadcasts: Budget) -> Origins {
        Origins {
            map: HashMap::new(),
            cap,
            network,
            broadcasts,
        }
    }

    /// Check that `auth` names `origin`'s key and that its signature over
    /// `signed` verifies. On success the origin's entry (made or refreshed)
    /// is returned, or `None` when the table is full and `may_evict` (asked
    /// only then) refuses to make room: the frame is genuine but its origin
    /// is not remembered.
    pub(super) fn verify(
        &mut self,
        now: Instant,
        origin: NodeId,
        auth: &OriginAuth,
        signed: &[u8],
        may_evict: impl FnOnce() -> bool,
    ) -> Result<Option<&mut Origin>, DropReason> {
        let known = self
            .map
            .get(&origin)
            .is_some_and(|o| o.cert.public_key() == auth.key);
        if !known {
            let network = self.network.as_ref().ok_or(DropReason::NoIdentity)?;
            let cert = certificate_of(network, origin, &auth.key).ok_or(DropReason::BadOrigin)?;
            if !cert.verify(signed, &auth.sig) {
                return Err(DropReason::BadSignature);
            }
            if !self.map.contains_key(&origin) && self.map.len() >= self.cap {
                if !may_evict() {
                    return Ok(None);
                }
                let lru = self
                    .map
                    .iter()
                    .min_by_key(|(_, o)| o.used)
                    .map(|(id, _)| *id);
                if let Some(id) = lru {
                    self.map.remove(&id);
                }
            }
            let o = Origin {
                auto_mac: auto_mac(&auth.key),
                cert,
                window: None,
                broadcasts: Bucket::full(now, self.broadcasts),
                used: now,
            };
            // A key that replaced the origin's cached one is the same node
            // id, hence the same key: only a hash collision differs.
            self.map.insert(origin, o);
        }
        let o = self.map.get_mut(&origin).ok_or(DropReason::BadOrigin)?;
        if known && !o.cert.verify(signed, &auth.sig) {
            return Err(DropReason::BadSignature);
        }
        o.used = now;
        Ok(Some(o))
    }

    /// The auto MAC of a verified origin.
    pub(super) fn auto_mac(&self, origin: NodeId) -> Option<Mac> {
        self.map.get(&origin).map(|o| o.auto_mac)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model (every number seen, the newest): within one run,
        /// a number is accepted iff it was never accepted and is less than
        /// `WINDOW` behind the newest accepted one.
        #[test]
        fn window_matches_its_model(start: u64, steps in proptest::collection::vec(-200i64..200, 1..400)) {
            let mut w = SeqWindow::new(start);
            let mut seen = std::collections::HashSet::from([start]);
            let mut top = start;
            for d in steps {
                let seq = start.wrapping_add_signed(d);
                let behind = top.wrapping_sub(seq);
                let ahead = seq.wrapping_sub(top);
                let want = !seen.contains(&seq)
                    && (ahead < NEW_RUN || behind < WINDOW);
                prop_assert_eq!(w.accept(seq), want, "seq {} top {}", seq, top);
                if want {
                    seen.insert(seq);
                    if ahead != 0 && ahead < NEW_RUN {
                        top = seq;
                    }
                }
            }
        }
    }

    #[test]
    fn window_accepts_each_number_once_in_any_order() {
        let mut w = SeqWindow::new(1000);
        assert!(!w.accept(1000));
        assert!(w.accept(1002));
        assert!(w.accept(1001));
        assert!(!w.accept(1001));
        assert!(!w.accept(1002));
        // Ahead beyond the bitmap: it restarts; older than the window is
        // refused.
        assert!(w.accept(5000));
        assert!(!w.accept(5000 - WINDOW));
        assert!(w.accept(5000 - WINDOW + 1));
        // Wrapping around u64 is ahead, not behind.
        let mut w = SeqWindow::new(u64::MAX - 1);
        assert!(w.accept(u64::MAX));
        assert!(w.accept(3));
        assert!(!w.accept(u64::MAX));
    }

    #[test]
    fn a_restart_is_a_new_run_and_old_runs_cannot_reopen_the_current_one() {
        let mut w = SeqWindow::new(1 << 60);
        for s in 1..10 {
            assert!(w.accept((1 << 60) + s));
        }
        // The origin restarted with a random start far behind: accepted.
        let new = 77u64;
        assert!(w.accept(new));
        assert!(w.accept(new + 1));
        // Replays of the old run's frames: refused (its window is kept).
        assert!(!w.accept((1 << 60) + 9));
        // ...and the detour did not reopen the current run.
        assert!(!w.accept(new + 1));
        assert!(w.accept(new + 2));
    }

    #[test]
    fn keys_must_hash_to_the_origin_and_signatures_must_verify() {
        let t0 = Instant::now();
        let net = NetworkName::new("lab").unwrap();
        let id = ringlan_tunnel::Identity::from_secret_key_bytes([5; 32], &net);
        let other = ringlan_tunnel::Identity::from_secret_key_bytes([6; 32], &net);
        let budget = Budget::new(4.0, 1.0);
        let msg = b"signed bytes";
        let auth = |i: &ringlan_tunnel::Identity| OriginAuth {
            key: i.certificate().public_key(),
            sig: i.sign(msg),
        };
        let good = auth(&id);
        let mut o = Origins::new(2, Some(net.clone()), budget);
        // Another node's key under this origin's id.
        let stolen = auth(&other);
        assert_eq!(
            o.verify(t0, id.node_id(), &stolen, msg, || true).err(),
            Some(DropReason::BadOrigin)
        );
        // The right key, a signature over something else.
        let wrong = OriginAuth {
            sig: id.sign(b"other bytes"),
            ..good
        };
        assert_eq!(
            o.verify(t0, id.node_id(), &wrong, msg, || true).err(),
            Some(DropReason::BadSignature)
        );
        assert_eq!(o.len(), 0, "no entry before a signature verified");
        let e = o
            .verify(t0, id.node_id(), &good, msg, || true)
            .unwrap()
            .unwrap();
        assert_eq!(e.auto_mac, auto_mac(&good.key));
        // Cached key: the signature is still checked every time.
        assert_eq!(
            o.verify(t0, id.node_id(), &wrong, msg, || true).err(),
            Some(DropReason::BadSignature)
        );
        // A ChaCha-only node's id works too.
        let chacha = ringlan_tunnel::Identity::with_suites(
            [7; 32],
            &net,
            ringlan_tunnel::SuiteSet::CHACHA_ONLY,
        );
        let a = auth(&chacha);
        assert!(o
            .verify(t0, chacha.node_id(), &a, msg, || true)
            .is_ok_and(|e| e.is_some()));
        // Bounded: a third origin evicts the least recently used.
        let later = t0 + std::time::Duration::from_secs(1);
        let a3 = auth(&other);
        // Full, and the link may not evict: verified, not remembered.
        assert!(o
            .verify(later, other.node_id(), &a3, msg, || false)
            .is_ok_and(|e| e.is_none()));
        assert_eq!(o.len(), 2);
        assert_eq!(o.auto_mac(other.node_id()), None);
        // Full, and it may: the least recently used goes.
        assert!(o
            .verify(later, other.node_id(), &a3, msg, || true)
            .is_ok_and(|e| e.is_some()));
        assert_eq!(o.len(), 2);
    }
}
