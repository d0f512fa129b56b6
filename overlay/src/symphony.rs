//! Symphony (Manku, Bawa, Raghavan, "Symphony: Distributed Hashing in a
//! Small World", USITS 2003): network size estimation from the spacing of
//! nearby nodes, the number of long-distance links, and the harmonic draw
//! of their targets.

use crate::ring;
use ringlan_tunnel::{NodeId, Rng};

/// Estimate the number of nodes on the ring from the positions of the
/// nearest known nodes: `succs` clockwise and `preds` counter-clockwise,
/// nearest first, not containing `me`. With `s` successors and `p`
/// predecessors the arc from the farthest predecessor to the farthest
/// successor holds `s + p` gaps, so `n ~ (s + p) / arc` (arc as a fraction
/// of the ring). When the two lists meet (a small ring seen entirely) the
/// count of distinct nodes plus one is exact.
pub fn estimate_n(me: NodeId, succs: &[NodeId], preds: &[NodeId]) -> f64 {
    let (Some(far_s), Some(far_p)) = (succs.last(), preds.last()) else {
        return 1.0 + succs.len() as f64 + preds.len() as f64;
    };
    // The lists overlap or touch when the farthest successor is not
    // strictly before the farthest predecessor going clockwise from me.
    let overlap = succs.iter().any(|s| preds.contains(s))
        || ring::clockwise(me, *far_s) >= ring::clockwise(me, *far_p);
    if overlap {
        let mut all: Vec<NodeId> = succs.iter().chain(preds).copied().collect();
        all.sort_unstable();
        all.dedup();
        return 1.0 + all.len() as f64;
    }
    let gaps = (succs.len() + preds.len()) as f64;
    let arc = ring::to_fraction(NodeId(ring::clockwise(*far_p, *far_s)));
    if arc <= 0.0 {
        return gaps + 1.0;
    }
    (gaps / arc).max(gaps + 1.0)
}

/// Number of long-distance links for an estimated size `n`: about
/// `log2(n)`, clamped to `[min, max]`.
pub fn long_link_count(n: f64, min: usize, max: usize) -> usize {
    let k = if n > 1.0 { n.log2().round() } else { 0.0 };
    // `as` saturates; the clamp keeps it within the configured bounds.
    (k as usize).clamp(min, max.max(min))
}

/// Draw a fraction of the ring from the harmonic density
/// `p(x) = 1 / (x ln n)` on `[1/n, 1]` (natural logarithm). The inverse
/// of its distribution `F(x) = ln(n x) / ln(n)` gives `x = n^(u - 1)` for
/// `u` uniform in `[0, 1)`.
pub fn draw_fraction(n: f64, rng: &mut Rng) -> f64 {
    let n = n.max(2.0);
    let u = rng.f64();
    ((u - 1.0) * n.ln()).exp()
}

/// A long-link target position: `me` plus a harmonic draw, clockwise.
pub fn draw_target(me: NodeId, n: f64, rng: &mut Rng) -> NodeId {
    ring::offset(me, draw_fraction(n, rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u128]) -> Vec<NodeId> {
        v.iter().map(|x| NodeId(*x)).collect()
    }

    #[test]
    fn estimate_from_even_spacing() {
        // 1024 evenly spaced nodes: every gap is 2^118.
        let gap = 1u128 << 118;
        let me = NodeId(5 * gap);
        let succs = ids(&[6 * gap, 7 * gap]);
        let preds = ids(&[4 * gap, 3 * gap]);
        let n = estimate_n(me, &succs, &preds);
        assert!((n - 1024.0).abs() < 1e-6, "{n}");
        // A small ring seen entirely: exact count.
        let me = NodeId(10);
        let n = estimate_n(me, &ids(&[20, 30]), &ids(&[30, 20]));
        assert_eq!(n, 3.0);
        assert_eq!(estimate_n(me, &[], &[]), 1.0);
        assert_eq!(estimate_n(me, &ids(&[20]), &[]), 2.0);
    }

    #[test]
    fn link_counts() {
        assert_eq!(long_link_count(1.0, 1, 16), 1);
        assert_eq!(long_link_count(32768.0, 1, 16), 15);
        assert_eq!(long_link_count(1e9, 1, 16), 16);
        assert_eq!(long_link_count(32768.0, 4, 4), 4);
    }

    #[test]
    fn draws_follow_the_harmonic_density() {
        let mut rng = Rng::from_seed([3; 32]);
        let n = 1024.0f64;
        let draws: Vec<f64> = (0..20_000).map(|_| draw_fraction(n, &mut rng)).collect();
        assert!(draws.iter().all(|x| *x >= 1.0 / n - 1e-12 && *x < 1.0));
        // Equal mass per decade of log_n: a quarter of the draws below
        // n^(-3/4), half below n^(-1/2) (natural-log harmonic density; the
        // log10 variant would put far more mass near 1/n).
        let below = |t: f64| draws.iter().filter(|x| **x < t).count() as f64 / draws.len() as f64;
        assert!((below(n.powf(-0.75)) - 0.25).abs() < 0.02);
        assert!((below(n.powf(-0.5)) - 0.5).abs() < 0.02);
        assert!((below(n.powf(-0.25)) - 0.75).abs() < 0.02);
    }
}
