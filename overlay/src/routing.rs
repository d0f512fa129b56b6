//! Greedy overlay routing on ring distance with 1-lookahead (Manku, Naor,
//! Wieder, "Know thy neighbor's neighbor", STOC 2004; the routing Symphony
//! uses with its bidirectional links).
//!
//! A node knows its links and, for each, the link's own neighbour list
//! (exchanged in `Neighbours` messages). For a target position it picks the
//! link through which the closest node to the target is reachable in one or
//! two hops, and forwards there only if that makes progress (the best
//! reachable distance is strictly below its own). With consistent views the
//! best reachable distance strictly decreases at every hop, so routing
//! cannot loop; stale views are bounded by the hop limit.

use crate::ring::ring_distance;
use ringlan_tunnel::NodeId;

/// One routing candidate: a link and the link's reported neighbours.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub node: NodeId,
    pub neighbours: &'a [NodeId],
}

/// The next hop from `me` towards position `target`, or `None` when no
/// candidate makes progress (`me` is then the node closest to the target
/// that it can see). Candidates in `exclude` (and their neighbours in
/// `exclude`) are ignored: a lookup passes its path so it never revisits a
/// node. When `in_ring` is false (`me` is not a ring position, e.g. an
/// introducer without TAP) the best candidate is returned whatever its
/// distance.
pub fn next_hop<'a, I>(
    me: NodeId,
    in_ring: bool,
    target: NodeId,
    candidates: I,
    exclude: &[NodeId],
) -> Option<NodeId>
where
    I: IntoIterator<Item = Candidate<'a>>,
{
    // (best distance reachable through the link, direct distance, link)
    let mut best: Option<(u128, u128, NodeId)> = None;
    for c in candidates {
        if c.node == me || exclude.contains(&c.node) {
            continue;
        }
        let direct = ring_distance(c.node, target);
        let mut reach = direct;
        for m in c.neighbours {
            if *m != me && !exclude.contains(m) {
                reach = reach.min(ring_distance(*m, target));
            }
        }
        let key = (reach, direct, c.node);
        if best.is_none_or(|b| key < b) {
            best = Some(key);
        }
    }
    let (reach, _, node) = best?;
    if !in_ring || reach < ring_distance(me, target) {
        Some(node)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(node: u128, n: &[NodeId]) -> Candidate<'_> {
        Candidate {
            node: NodeId(node),
            neighbours: n,
        }
    }

    #[test]
    fn greedy_and_lookahead() {
        let none: [NodeId; 0] = [];
        // Plain greedy: the closer link wins.
        let cands = [c(100, &none), c(500, &none)];
        assert_eq!(
            next_hop(NodeId(0), true, NodeId(450), cands, &[]),
            Some(NodeId(500))
        );
        // No progress: stop here.
        assert_eq!(next_hop(NodeId(440), true, NodeId(450), cands, &[]), None);
        // Not a ring member: always forward to the best.
        assert_eq!(
            next_hop(NodeId(440), false, NodeId(450), cands, &[]),
            Some(NodeId(500))
        );
        // Lookahead: 100's neighbour 449 beats 500 directly.
        let n100 = [NodeId(449)];
        let cands = [c(100, &n100), c(500, &none)];
        assert_eq!(
            next_hop(NodeId(0), true, NodeId(450), cands, &[]),
            Some(NodeId(100))
        );
        // Excluded nodes are neither hops nor lookahead targets.
        assert_eq!(
            next_hop(NodeId(0), true, NodeId(450), cands, &[NodeId(449)]),
            Some(NodeId(500))
        );
        // The target itself is reached with distance 0.
        assert_eq!(
            next_hop(NodeId(0), true, NodeId(500), cands, &[]),
            Some(NodeId(500))
        );
        assert_eq!(next_hop(NodeId(0), true, NodeId(0), cands, &[]), None);
    }

    proptest! {
        /// On a complete ring where every node links to its successor and
        /// predecessor, greedy routing reaches the node nearest the target.
        #[test]
        fn ring_routing_reaches_nearest(ids in proptest::collection::btree_set(any::<u128>(), 2..40),
                                        start: usize, target: u128) {
            let ids: Vec<NodeId> = ids.into_iter().map(NodeId).collect();
            let n = ids.len();
            let neigh: Vec<[NodeId; 2]> = (0..n)
                .map(|i| [ids[(i + 1) % n], ids[(i + n - 1) % n]])
                .collect();
            let target = NodeId(target);
            let mut at = start % n;
            for _ in 0..n {
                let cands = neigh[at].iter().map(|x| {
                    let j = ids.binary_search(x).unwrap();
                    Candidate { node: *x, neighbours: &neigh[j][..] }
                });
                match next_hop(ids[at], true, target, cands, &[]) {
                    Some(x) => at = ids.binary_search(&x).unwrap(),
                    None => break,
                }
            }
            let best = ids.iter().map(|x| ring_distance(*x, target)).min().unwrap();
            prop_assert_eq!(ring_distance(ids[at], target), best);
        }
    }
}
