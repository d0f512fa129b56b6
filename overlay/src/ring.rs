//! Ring arithmetic on 128-bit node ids.
//!
//! The ring is the integers modulo 2^128; a node's id is its position. All
//! distances are measured clockwise (increasing ids, wrapping at 2^128) unless
//! the name says otherwise. Symphony (Manku, Bawa, Raghavan 2003) works in
//! fractions of the ring, hence [`to_fraction`] / [`from_fraction`].

use ringlan_tunnel::NodeId;
use std::cmp::Ordering;

/// 2^128 as an `f64` (exact: a power of two).
const RING_F64: f64 = 340_282_366_920_938_463_463_374_607_431_768_211_456.0;

/// Clockwise distance from `from` to `to`: how far `from` walks with
/// increasing ids to reach `to`. Zero iff the ids are equal.
pub fn clockwise(from: NodeId, to: NodeId) -> u128 {
    to.0.wrapping_sub(from.0)
}

/// Ring distance: the shorter of the two ways round.
pub fn ring_distance(a: NodeId, b: NodeId) -> u128 {
    clockwise(a, b).min(clockwise(b, a))
}

/// Whether `x` lies strictly inside the clockwise arc from `a` to `b`
/// (both ends excluded). When `a == b` the arc is the whole ring except `a`.
pub fn between(a: NodeId, x: NodeId, b: NodeId) -> bool {
    let ax = clockwise(a, x);
    if ax == 0 {
        return false;
    }
    if a == b {
        return true;
    }
    ax < clockwise(a, b)
}

/// Whether `x` lies in the clockwise arc `(a, b]` (right end included).
/// When `a == b` the arc is the whole ring.
pub fn between_right_incl(a: NodeId, x: NodeId, b: NodeId) -> bool {
    x == b || between(a, x, b)
}

/// Order of two nodes by clockwise distance from `origin` (the origin
/// itself, at distance zero, sorts first).
pub fn cmp_clockwise(origin: NodeId, x: NodeId, y: NodeId) -> Ordering {
    clockwise(origin, x).cmp(&clockwise(origin, y))
}

/// Sort `ids` by clockwise position relative to `origin`: the successor
/// first, the predecessor last.
pub fn sort_clockwise(origin: NodeId, ids: &mut [NodeId]) {
    ids.sort_unstable_by(|x, y| cmp_clockwise(origin, *x, *y));
}

/// The successor of position `pos` in `set`: the member with the smallest
/// non-zero clockwise distance from `pos` (a member equal to `pos` is not its
/// own successor). `None` if `set` holds nothing but `pos`.
pub fn successor<I: IntoIterator<Item = NodeId>>(pos: NodeId, set: I) -> Option<NodeId> {
    set.into_iter()
        .filter(|n| *n != pos)
        .min_by_key(|n| clockwise(pos, *n))
}

/// The predecessor of position `pos` in `set`: the member with the smallest
/// non-zero counter-clockwise distance from `pos`.
pub fn predecessor<I: IntoIterator<Item = NodeId>>(pos: NodeId, set: I) -> Option<NodeId> {
    set.into_iter()
        .filter(|n| *n != pos)
        .min_by_key(|n| clockwise(*n, pos))
}

/// The node responsible for position `pos` (Chord/Symphony "manager"): the
/// first member at or clockwise after `pos`.
pub fn owner<I: IntoIterator<Item = NodeId>>(pos: NodeId, set: I) -> Option<NodeId> {
    set.into_iter().min_by_key(|n| clockwise(pos, *n))
}

/// Position as a fraction of the ring in `[0, 1)` (rounded to the nearest
/// `f64`; a value that would round up to 1.0 is returned as the largest
/// `f64` below 1).
pub fn to_fraction(id: NodeId) -> f64 {
    let f = id.0 as f64 / RING_F64;
    if f >= 1.0 {
        1.0 - f64::EPSILON / 2.0
    } else {
        f
    }
}

/// The position at fraction `f` of the ring. `f` is taken modulo 1 (so
/// negative fractions count counter-clockwise); NaN and infinities map to 0.
pub fn from_fraction(f: f64) -> NodeId {
    if !f.is_finite() {
        return NodeId(0);
    }
    let mut r = f.rem_euclid(1.0);
    if r >= 1.0 {
        // rem_euclid can round up to exactly 1.0 for tiny negative inputs.
        r = 0.0;
    }
    // `as` from f64 to u128 saturates and is exact for r * 2^128 < 2^128.
    NodeId((r * RING_F64) as u128)
}

/// The position `fraction` of the ring clockwise from `origin`
/// (Symphony's "self + x" for a long-distance link target).
pub fn offset(origin: NodeId, fraction: f64) -> NodeId {
    NodeId(origin.0.wrapping_add(from_fraction(fraction).0))
}

/// The `k` nearest members of `set` clockwise from `origin` (successors,
/// nearest first), excluding `origin`.
pub fn successors(origin: NodeId, set: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = set.iter().copied().filter(|n| *n != origin).collect();
    sort_clockwise(origin, &mut v);
    v.dedup();
    v.truncate(k);
    v
}

/// The `k` nearest members of `set` counter-clockwise from `origin`
/// (predecessors, nearest first), excluding `origin`.
pub fn predecessors(origin: NodeId, set: &[NodeId], k: usize) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = set.iter().copied().filter(|n| *n != origin).collect();
    v.sort_unstable_by_key(|n| clockwise(*n, origin));
    v.dedup();
    v.truncate(k);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(x: u128) -> NodeId {
        NodeId(x)
    }

    #[test]
    fn distances_wrap() {
        assert_eq!(clockwise(id(10), id(15)), 5);
        assert_eq!(clockwise(id(15), id(10)), u128::MAX - 4);
        assert_eq!(ring_distance(id(15), id(10)), 5);
        assert_eq!(ring_distance(id(u128::MAX), id(1)), 2);
        assert_eq!(clockwise(id(u128::MAX), id(1)), 2);
    }

    #[test]
    fn between_cases() {
        assert!(between(id(10), id(12), id(20)));
        assert!(!between(id(10), id(10), id(20)));
        assert!(!between(id(10), id(20), id(20)));
        assert!(!between(id(10), id(25), id(20)));
        // wrapping arc
        assert!(between(id(u128::MAX - 5), id(2), id(10)));
        assert!(between(id(u128::MAX - 5), id(u128::MAX), id(10)));
        assert!(!between(id(u128::MAX - 5), id(11), id(10)));
        // whole ring
        assert!(between(id(7), id(8), id(7)));
        assert!(!between(id(7), id(7), id(7)));
        assert!(between_right_incl(id(10), id(20), id(20)));
    }

    #[test]
    fn successor_predecessor_owner() {
        let set = [id(100), id(200), id(300)];
        assert_eq!(successor(id(150), set), Some(id(200)));
        assert_eq!(successor(id(300), set), Some(id(100)));
        assert_eq!(successor(id(200), set), Some(id(300)));
        assert_eq!(predecessor(id(150), set), Some(id(100)));
        assert_eq!(predecessor(id(100), set), Some(id(300)));
        assert_eq!(owner(id(200), set), Some(id(200)));
        assert_eq!(owner(id(301), set), Some(id(100)));
        assert_eq!(successor(id(5), [id(5)]), None);
        assert_eq!(successors(id(150), &set, 2), vec![id(200), id(300)]);
        assert_eq!(predecessors(id(150), &set, 2), vec![id(100), id(300)]);
    }

    #[test]
    fn fractions() {
        assert_eq!(to_fraction(id(0)), 0.0);
        assert_eq!(to_fraction(id(1u128 << 127)), 0.5);
        assert_eq!(from_fraction(0.25), id(1u128 << 126));
        assert_eq!(from_fraction(-0.25), id(3u128 << 126));
        assert_eq!(from_fraction(1.0), id(0));
        assert_eq!(from_fraction(f64::NAN), id(0));
        assert!(to_fraction(id(u128::MAX)) < 1.0);
        assert_eq!(offset(id(3u128 << 126), 0.5), id(1u128 << 126));
    }

    proptest! {
        #[test]
        fn distances_are_consistent(a: u128, b: u128) {
            let (a, b) = (id(a), id(b));
            prop_assert_eq!(clockwise(a, b).wrapping_add(clockwise(b, a)), 0);
            prop_assert_eq!(ring_distance(a, b), ring_distance(b, a));
            prop_assert!(ring_distance(a, b) <= 1u128 << 127);
            prop_assert_eq!(ring_distance(a, b) == 0, a == b);
        }

        #[test]
        fn between_partitions_the_ring(a: u128, b: u128, x: u128) {
            let (a, b, x) = (id(a), id(b), id(x));
            prop_assume!(a != b && x != a && x != b);
            // x is on exactly one of the two open arcs between a and b.
            prop_assert!(between(a, x, b) ^ between(b, x, a));
        }

        #[test]
        fn successor_is_nearest_clockwise(pos: u128, set in proptest::collection::vec(any::<u128>(), 1..20)) {
            let set: Vec<NodeId> = set.into_iter().map(id).collect();
            let pos = id(pos);
            if let Some(s) = successor(pos, set.iter().copied()) {
                prop_assert!(set.iter().all(|n| *n == pos || !between(pos, *n, s)));
                let p = predecessor(pos, set.iter().copied()).unwrap();
                prop_assert!(set.iter().all(|n| *n == pos || !between(p, *n, pos)));
            } else {
                prop_assert!(set.iter().all(|n| *n == pos));
            }
        }

        #[test]
        fn sort_clockwise_is_monotone(origin: u128, set in proptest::collection::vec(any::<u128>(), 0..30)) {
            let origin = id(origin);
            let mut v: Vec<NodeId> = set.into_iter().map(id).collect();
            sort_clockwise(origin, &mut v);
            for w in v.windows(2) {
                prop_assert!(clockwise(origin, w[0]) <= clockwise(origin, w[1]));
            }
        }

        #[test]
        fn fraction_round_trip_is_close(x: u128) {
            let back = from_fraction(to_fraction(id(x)));
            // f64 keeps 53 bits: the error is below 2^(128-52).
            prop_assert!(ring_distance(back, id(x)) <= 1u128 << 76);
        }

        #[test]
        fn offset_moves_by_fraction(origin: u128, f in 0.0f64..1.0) {
            let o = id(origin);
            let t = offset(o, f);
            let moved = to_fraction(NodeId(clockwise(o, t)));
            prop_assert!((moved - f).abs() < 1e-12 || (moved - f).abs() > 1.0 - 1e-12);
        }
    }
}
