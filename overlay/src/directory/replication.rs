//! Who holds a record: the node succeeding its position on the ring (the
//! same "manager" rule as Symphony and Chord, [`crate::ring::owner`]) and
//! the next `replicas` successors. Pure functions over a node's view of
//! the ring near it (itself and the ring members it knows); with
//! consistent views every node agrees.
//!
//! When the view changes (a join, a leave, a failure), a holder compares
//! the responsible sets before and after for every record it holds, hands
//! the record to each node that became responsible ([`handover`]), and
//! stops being responsible for records whose set no longer holds it
//! (dropped after a grace). Owners republish before expiry; the overlay
//! never republishes others' records.

use crate::ring;
use ringlan_tunnel::NodeId;

/// The nodes responsible for `pos` among `ring` (any order; duplicates
/// allowed): the owner first, then up to `replicas` successors.
pub fn responsible(pos: NodeId, ring: &[NodeId], replicas: usize) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = ring.to_vec();
    // Sorted by clockwise distance from pos: the owner (a node at pos
    // itself, distance 0) first.
    ring::sort_clockwise(pos, &mut v);
    v.dedup();
    v.truncate(replicas + 1);
    v
}

/// Whether `me` is responsible for `pos`, knowing its `preds` (nearest
/// first): `pos` lies in `(p_{replicas+1}, me]`. With fewer predecessors
/// known than that, the known ring is small and `me` holds everything.
pub fn is_responsible(me: NodeId, preds: &[NodeId], pos: NodeId, replicas: usize) -> bool {
    match preds.get(replicas) {
        Some(far) if *far != me => ring::between_right_incl(*far, pos, me),
        _ => true,
    }
}

/// The nodes of the new responsible set of `pos` that did not already get
/// the record: not in the old set, or in it but not reachable then (not
/// in `old_reached`). Also whether `me` is still responsible.
pub fn handover(
    me: NodeId,
    pos: NodeId,
    old_ring: &[NodeId],
    old_reached: &[NodeId],
    new_ring: &[NodeId],
    replicas: usize,
) -> (Vec<NodeId>, bool) {
    let old = responsible(pos, old_ring, replicas);
    let new = responsible(pos, new_ring, replicas);
    let gained = new
        .iter()
        .copied()
        .filter(|n| *n != me && !(old.contains(n) && old_reached.contains(n)))
        .collect();
    (gained, new.contains(&me))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(v: &[u128]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn owner_and_successors() {
        let ring = ids(&[100, 200, 300, 400, 500]);
        assert_eq!(responsible(NodeId(150), &ring, 2), ids(&[200, 300, 400]));
        assert_eq!(responsible(NodeId(200), &ring, 2), ids(&[200, 300, 400]));
        assert_eq!(
            responsible(NodeId(450), &ring, 3),
            ids(&[500, 100, 200, 300])
        );
        assert_eq!(responsible(NodeId(1), &ring, 9).len(), 5);
        // Node 400 with predecessors 300, 200, 100, 500 (r = 2): holds
        // (100, 400].
        let preds = ids(&[300, 200, 100, 500]);
        assert!(is_responsible(NodeId(400), &preds, NodeId(150), 2));
        assert!(is_responsible(NodeId(400), &preds, NodeId(400), 2));
        assert!(!is_responsible(NodeId(400), &preds, NodeId(100), 2));
        assert!(!is_responsible(NodeId(400), &preds, NodeId(450), 2));
        assert!(is_responsible(NodeId(400), &ids(&[300]), NodeId(450), 2));
    }

    #[test]
    fn a_failure_and_a_join_hand_over_to_the_right_nodes() {
        let old = ids(&[100, 200, 300, 400, 500, 600]);
        // 200 fails: for a key at 150 (held by 200, 300, 400 with r = 2),
        // 500 becomes responsible.
        let new = ids(&[100, 300, 400, 500, 600]);
        assert_eq!(
            handover(NodeId(300), NodeId(150), &old, &old, &new, 2),
            (ids(&[500]), true)
        );
        // 400 was responsible but not reachable when the old view was
        // handled: it gets the record now.
        assert_eq!(
            handover(NodeId(300), NodeId(150), &old, &ids(&[500]), &new, 2),
            (ids(&[400, 500]), true)
        );
        // 250 joins: it takes the key at 220 from 300, and 500 is no
        // longer responsible for it.
        let new = ids(&[100, 200, 250, 300, 400, 500, 600]);
        assert_eq!(
            handover(NodeId(500), NodeId(220), &old, &old, &new, 2),
            (ids(&[250]), false)
        );
    }

    proptest! {
        /// `is_responsible` from a node's predecessors agrees with
        /// `responsible` over the whole ring.
        #[test]
        fn local_rule_matches_global(ring in proptest::collection::btree_set(any::<u128>(), 1..30), pos: u128, r in 0usize..5) {
            let ring: Vec<NodeId> = ring.into_iter().map(NodeId).collect();
            let set = responsible(NodeId(pos), &ring, r);
            for me in &ring {
                let preds = ring::predecessors(*me, &ring, r + 1);
                prop_assert_eq!(is_responsible(*me, &preds, NodeId(pos), r), set.contains(me));
            }
        }
    }
}
