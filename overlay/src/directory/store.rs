//! The records one node holds, bounded (`docs/directory.md` "Bounds").
//!
//! A record is kept by key. A newer version replaces an older one; the
//! same version with another content is a conflict and refused (the first
//! one stays: a subject that signs two contents under one version is
//! broken or hostile, and first-come keeps replicas from flapping);
//! expired records are dropped ([`Store::expire`], and never returned).
//!
//! Bounds: at most `max_records` records in total and `max_per_subject`
//! per subject. A new record over the per-subject bound is refused. Over
//! the total bound one record is evicted first, in this order: an expired
//! record; else the record of the subject holding the most records (its
//! soonest-expiring one), never one of this node's own records. When only
//! this node's own records could go, the new record is refused.

use super::{DirKey, Record};
use ringlan_tunnel::NodeId;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// What [`Store::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored (new key, or a newer version replaced the old one).
    Stored,
    /// The same record was already held.
    Unchanged,
    /// An older version than the one held: ignored.
    Stale,
    /// Same version, other content: refused, the held record stays.
    Conflict,
    /// Over the per-subject bound, or the store is full of this node's
    /// own records.
    Full,
    /// The record had expired.
    Expired,
}

/// One held record and when this node stops being responsible for it
/// (set by replication; `None` while responsible).
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) record: Record,
    pub(crate) pos: DirKey,
    /// Dropped at this instant unless the node becomes responsible again.
    pub(crate) drop_at: Option<Instant>,
}

/// The bounded record table.
#[derive(Debug)]
pub struct Store {
    me: NodeId,
    max_records: usize,
    max_per_subject: usize,
    /// By ring position then key (positions collide only by hash collision).
    by_pos: BTreeMap<(DirKey, String), Held>,
    per_subject: HashMap<NodeId, usize>,
}

impl Store {
    pub fn new(me: NodeId, max_records: usize, max_per_subject: usize) -> Store {
        Store {
            me,
            max_records,
            max_per_subject,
            by_pos: BTreeMap::new(),
            per_subject: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_pos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pos.is_empty()
    }

    /// The unexpired record under `key`.
    pub fn get(&self, key: &str, unix_now: u64) -> Option<&Record> {
        self.by_pos
            .get(&(DirKey::of(key), key.to_owned()))
            .map(|h| &h.record)
            .filter(|r| !r.is_expired(unix_now))
    }

    /// The record held under `key`, expired or not.
    pub fn held(&self, key: &str) -> Option<&Record> {
        self.by_pos
            .get(&(DirKey::of(key), key.to_owned()))
            .map(|h| &h.record)
    }

    /// Every held record, by ring position.
    pub fn iter(&self) -> impl Iterator<Item = &Record> + '_ {
        self.by_pos.values().map(|h| &h.record)
    }

    pub(crate) fn held_mut(&mut self) -> impl Iterator<Item = &mut Held> + '_ {
        self.by_pos.values_mut()
    }

    /// Unexpired records whose position lies in the clockwise arc
    /// `(from, to]` (the whole ring when `from == to`), by position from
    /// `from`, keys starting with `prefix`.
    pub fn range<'a>(
        &'a self,
        from: NodeId,
        to: NodeId,
        prefix: &'a str,
        unix_now: u64,
    ) -> impl Iterator<Item = &'a Record> + 'a {
        let after = self
            .by_pos
            .range((DirKey(from), String::new())..)
            .chain(self.by_pos.range(..(DirKey(from), String::new())));
        after
            .map(|(_, h)| h)
            .filter(move |h| crate::ring::between_right_incl(from, h.pos.0, to))
            .map(|h| &h.record)
            .filter(move |r| r.key.starts_with(prefix) && !r.is_expired(unix_now))
    }

    /// Store `r` (already verified by the caller).
    pub fn put(&mut self, r: Record, unix_now: u64) -> PutOutcome {
        if r.is_expired(unix_now) {
            return PutOutcome::Expired;
        }
        let pos = r.dir_key();
        let k = (pos, r.key.clone());
        if let Some(old) = self.by_pos.get(&k).map(|h| &h.record) {
            if r.version < old.version {
                return PutOutcome::Stale;
            }
            if r.version == old.version {
                return if *old == r {
                    PutOutcome::Unchanged
                } else {
                    PutOutcome::Conflict
                };
            }
            let old_subject = old.subject;
            if old_subject != r.subject {
                // The key passes to another subject (e.g. a name taken
                // over after the old record's owner moved on): per-subject
                // counts move with it, within the new subject's bound.
                if self.count(r.subject) >= self.max_per_subject {
                    return PutOutcome::Full;
                }
                self.dec(old_subject);
                *self.per_subject.entry(r.subject).or_insert(0) += 1;
            }
            if let Some(h) = self.by_pos.get_mut(&k) {
                h.record = r;
                h.drop_at = None;
            }
            return PutOutcome::Stored;
        }
        if self.count(r.subject) >= self.max_per_subject {
            return PutOutcome::Full;
        }
        if self.by_pos.len() >= self.max_records && !self.evict_one(unix_now) {
            return PutOutcome::Full;
        }
        *self.per_subject.entry(r.subject).or_insert(0) += 1;
        self.by_pos.insert(
            k,
            Held {
                record: r,
                pos,
                drop_at: None,
            },
        );
        PutOutcome::Stored
    }

    fn count(&self, subject: NodeId) -> usize {
        self.per_subject.get(&subject).copied().unwrap_or(0)
    }

    fn dec(&mut self, subject: NodeId) {
        if let Some(c) = self.per_subject.get_mut(&subject) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_subject.remove(&subject);
            }
        }
    }

    fn remove_key(&mut self, k: &(DirKey, String)) -> Option<Record> {
        let h = self.by_pos.remove(k)?;
        self.dec(h.record.subject);
        Some(h.record)
    }

    /// Make room for one record (the rule in the module doc). False when
    /// nothing may go.
    fn evict_one(&mut self, unix_now: u64) -> bool {
        let expired = self
            .by_pos
            .iter()
            .find(|(_, h)| h.record.is_expired(unix_now))
            .map(|(k, _)| k.clone());
        if let Some(k) = expired {
            self.remove_key(&k);
            return true;
        }
        let me = self.me;
        let Some((&subject, _)) = self
            .per_subject
            .iter()
            .filter(|(s, _)| **s != me)
            .max_by_key(|(s, c)| (**c, **s))
        else {
            return false;
        };
        let victim = self
            .by_pos
            .iter()
            .filter(|(_, h)| h.record.subject == subject)
            .min_by_key(|(_, h)| h.record.expires_unix)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => self.remove_key(&k).is_some(),
            None => false,
        }
    }

    /// Unexpired records whose hand-over grace ended (dropped by the next
    /// [`Store::expire`]).
    pub(crate) fn due(&self, now: Instant, unix_now: u64) -> Vec<Record> {
        self.by_pos
            .values()
            .filter(|h| h.drop_at.is_some_and(|d| now >= d) && !h.record.is_expired(unix_now))
            .map(|h| h.record.clone())
            .collect()
    }

    /// Drop expired records and those whose hand-over grace ended;
    /// returns how many went.
    pub(crate) fn expire(&mut self, now: Instant, unix_now: u64) -> usize {
        let gone: Vec<(DirKey, String)> = self
            .by_pos
            .iter()
            .filter(|(_, h)| h.record.is_expired(unix_now) || h.drop_at.is_some_and(|d| now >= d))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.remove_key(k);
        }
        gone.len()
    }

    /// Records per subject (for tests and status).
    pub fn subjects(&self) -> usize {
        self.per_subject.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(subject: u128, key: &str, version: u64, expires: u64) -> Record {
        Record {
            key: key.into(),
            subject: NodeId(subject),
            public_key: [0; 32],
            version,
            expires_unix: expires,
            body: vec![version as u8],
            signature: [0; 64],
        }
    }

    #[test]
    fn versions_conflicts_and_expiry() {
        let mut s = Store::new(NodeId(1), 10, 4);
        assert_eq!(s.put(rec(2, "a", 5, 100), 0), PutOutcome::Stored);
        assert_eq!(s.put(rec(2, "a", 5, 100), 0), PutOutcome::Unchanged);
        assert_eq!(s.put(rec(2, "a", 4, 100), 0), PutOutcome::Stale);
        let mut other = rec(2, "a", 5, 100);
        other.body = b"other".to_vec();
        assert_eq!(s.put(other, 0), PutOutcome::Conflict);
        assert_eq!(s.get("a", 0).unwrap().body, vec![5]);
        assert_eq!(s.put(rec(2, "a", 6, 100), 0), PutOutcome::Stored);
        assert_eq!(s.get("a", 0).unwrap().version, 6);
        assert_eq!(s.put(rec(2, "b", 1, 10), 20), PutOutcome::Expired);
        assert_eq!(s.put(rec(2, "b", 1, 30), 20), PutOutcome::Stored);
        assert!(
            s.get("b", 30).is_none(),
            "expired records are never returned"
        );
        assert_eq!(s.expire(Instant::now(), 30), 1);
        assert_eq!(s.len(), 1);
        // A key passing to another subject moves the per-subject count.
        assert_eq!(s.put(rec(3, "a", 7, 100), 0), PutOutcome::Stored);
        assert_eq!((s.count(NodeId(2)), s.count(NodeId(3))), (0, 1));
    }

    #[test]
    fn bounds_and_eviction_order() {
        let me = 1;
        let mut s = Store::new(NodeId(me), 6, 3);
        for k in ["m1", "m2", "m3"] {
            assert_eq!(s.put(rec(me, k, 1, 100), 0), PutOutcome::Stored);
        }
        // Per subject: a fourth record of one subject is refused.
        assert_eq!(s.put(rec(me, "m4", 1, 100), 0), PutOutcome::Full);
        assert_eq!(s.put(rec(2, "a1", 1, 50), 0), PutOutcome::Stored);
        assert_eq!(s.put(rec(2, "a2", 1, 40), 0), PutOutcome::Stored);
        assert_eq!(s.put(rec(3, "b1", 1, 5), 0), PutOutcome::Stored);
        // Full: an expired record goes first (b1, expired at 10).
        assert_eq!(s.put(rec(4, "c1", 1, 100), 10), PutOutcome::Stored);
        assert!(s.get("b1", 0).is_none());
        // Then the soonest-expiring record of the subject with the most
        // records, never our own (we hold 3, node 2 holds 2).
        assert_eq!(s.put(rec(5, "d1", 1, 100), 10), PutOutcome::Stored);
        assert!(s.get("a2", 10).is_none() && s.get("a1", 10).is_some());
        assert_eq!(s.len(), 6);
        assert!(s.iter().filter(|r| r.subject == NodeId(me)).count() == 3);
        // Only our own records left to evict: refused.
        let mut s = Store::new(NodeId(me), 2, 3);
        s.put(rec(me, "m1", 1, 100), 0);
        s.put(rec(me, "m2", 1, 100), 0);
        assert_eq!(s.put(rec(2, "x", 1, 100), 0), PutOutcome::Full);
    }

    #[test]
    fn ranges_follow_the_ring() {
        let mut s = Store::new(NodeId(1), 100, 100);
        for i in 0..20 {
            s.put(rec(2, &format!("node:{i}"), 1, 100), 0);
            s.put(rec(2, &format!("name:{i}"), 1, 100), 0);
        }
        let all: Vec<_> = s.range(NodeId(5), NodeId(5), "node:", 0).collect();
        assert_eq!(all.len(), 20);
        // Two arcs that split the ring partition its records.
        let (a, b) = (NodeId(u128::MAX / 3), NodeId(u128::MAX / 3 * 2));
        let x = s.range(a, b, "", 0).count();
        let y = s.range(b, a, "", 0).count();
        assert_eq!(x + y, 40);
        for r in s.range(a, b, "", 0) {
            assert!(crate::ring::between_right_incl(a, r.dir_key().0, b));
        }
    }
}
