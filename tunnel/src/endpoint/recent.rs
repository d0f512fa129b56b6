//! [`Recent`]: what the endpoint saw lately, each key kept for a fixed time
//! after its first sight and at most a fixed number of keys, the oldest
//! forgotten first. Insertion and expiry are O(1) (a map plus a queue in
//! arrival order), so a flood of fresh keys costs no scans.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

pub(super) struct Recent<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<(Instant, K)>,
    cap: usize,
    keep: Duration,
}

impl<K: Hash + Eq + Clone, V> Recent<K, V> {
    pub(super) fn new(cap: usize, keep: Duration) -> Self {
        Recent {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
            keep,
        }
    }

    /// Forget keys older than `keep` (and any beyond `cap`).
    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_duration_since(*t) <= self.keep && self.order.len() <= self.cap {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// The value of `key` if it was seen within `keep`.
    pub(super) fn get_mut<Q>(&mut self, now: Instant, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.expire(now);
        self.map.get_mut(key)
    }

    /// Remember `key` from `now` on (a key already remembered keeps its
    /// first sight and value); at `cap` the oldest key is forgotten.
    pub(super) fn insert(&mut self, now: Instant, key: K, value: V) {
        self.expire(now);
        if self.map.contains_key(&key) {
            return;
        }
        if self.order.len() >= self.cap {
            if let Some((_, old)) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back((now, key.clone()));
        self.map.insert(key, value);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_for_keep_after_first_sight_and_the_oldest_go_first_at_the_cap() {
        let t0 = Instant::now();
        let mut r: Recent<u32, u32> = Recent::new(3, Duration::from_secs(10));
        r.insert(t0, 1, 10);
        // A second insert neither resets the first sight nor the value.
        r.insert(t0 + Duration::from_secs(5), 1, 11);
        assert_eq!(r.get_mut(t0 + Duration::from_secs(10), &1), Some(&mut 10));
        assert_eq!(r.get_mut(t0 + Duration::from_secs(11), &1), None);
        let t1 = t0 + Duration::from_secs(20);
        for k in 2..=5 {
            r.insert(t1, k, k);
        }
        assert_eq!(r.len(), 3);
        assert_eq!(r.get_mut(t1, &2), None);
        assert_eq!(r.get_mut(t1, &5), Some(&mut 5));
    }
}
