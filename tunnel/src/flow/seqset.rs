//! A receiving flow's SEQUENCE_SET (RFC 7016 3.6.3) as sorted, disjoint,
//! non-adjacent inclusive ranges, and its acknowledgement encodings
//! (2.3.13 Bitmap Ack, 2.3.14 Range Ack, 3.6.3.4.3 choose the smaller).

use super::codec::{vlu_len, vlu_push};

#[derive(Debug, Clone)]
pub(crate) struct SeqSet {
    /// Always non-empty; `ranges[0].0 == 0` (sequence number 0 is never
    /// sent and every FSN is at least 0, so it is always "seen").
    ranges: Vec<(u64, u64)>,
}

impl SeqSet {
    pub fn new() -> Self {
        SeqSet {
            ranges: vec![(0, 0)],
        }
    }

    /// The Cumulative Acknowledgement Sequence Number CSN (3.6.3.3).
    pub fn csn(&self) -> u64 {
        self.ranges.first().map_or(0, |r| r.1)
    }

    /// Highest sequence number in the set.
    pub fn max(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.1)
    }

    pub fn has_gaps(&self) -> bool {
        self.ranges.len() > 1
    }

    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Index of the first range whose end + 1 >= sn.
    fn lower(&self, sn: u64) -> usize {
        self.ranges.partition_point(|r| r.1.saturating_add(1) < sn)
    }

    pub fn contains(&self, sn: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 < sn);
        self.ranges.get(i).is_some_and(|r| r.0 <= sn)
    }

    /// Would inserting `a..=b` create a new range (rather than extend or
    /// merge existing ones)?
    pub fn would_add_range(&self, a: u64, b: u64) -> bool {
        let i = self.lower(a);
        match self.ranges.get(i) {
            Some(r) => r.0 > b.saturating_add(1),
            None => true,
        }
    }

    /// Insert `a..=b`; returns how many sequence numbers were new.
    pub fn insert(&mut self, a: u64, b: u64) -> u64 {
        if a > b {
            return 0;
        }
        let i = self.lower(a);
        let mut new_lo = a;
        let mut new_hi = b;
        let mut covered: u64 = 0;
        let mut j = i;
        while let Some(&(lo, hi)) = self.ranges.get(j) {
            if lo > b.saturating_add(1) {
                break;
            }
            // overlap of [lo,hi] with [a,b]
            let ol = lo.max(a);
            let oh = hi.min(b);
            if ol <= oh {
                covered = covered.saturating_add(oh - ol + 1);
            }
            new_lo = new_lo.min(lo);
            new_hi = new_hi.max(hi);
            j += 1;
        }
        // In order, a fragment extends one range: replace it in place (a
        // `splice` costs more than the rest of the insert).
        match j - i {
            0 => self.ranges.insert(i, (new_lo, new_hi)),
            _ => {
                self.ranges[i] = (new_lo, new_hi);
                self.ranges.drain(i + 1..j);
            }
        }
        (b - a).saturating_add(1).saturating_sub(covered)
    }

    /// Encoded size of the Range Ack payload after cumAck (2.3.14).
    pub fn range_payload_len(&self) -> u64 {
        let mut cursor = self.csn();
        let mut n: u64 = 0;
        for &(lo, hi) in self.ranges.iter().skip(1) {
            n += (vlu_len(lo - cursor - 2) + vlu_len(hi - lo)) as u64;
            cursor = hi;
        }
        n
    }

    /// Encoded size of the Bitmap Ack bit field (2.3.13).
    pub fn bitmap_payload_len(&self) -> u64 {
        if !self.has_gaps() {
            return 0;
        }
        // bits for csn+2 ..= max
        (self.max() - self.csn() - 1).div_ceil(8)
    }

    /// Append the Range Ack pairs, stopping before exceeding `limit` bytes.
    pub fn write_ranges(&self, out: &mut Vec<u8>, limit: usize) {
        let mut cursor = self.csn();
        for &(lo, hi) in self.ranges.iter().skip(1) {
            let h = lo - cursor - 2;
            let r = hi - lo;
            if out.len() + vlu_len(h) + vlu_len(r) > limit {
                return;
            }
            vlu_push(out, h);
            vlu_push(out, r);
            cursor = hi;
        }
    }

    /// Append the bitmap, at most `limit` bytes.
    pub fn write_bitmap(&self, out: &mut Vec<u8>, limit: usize) {
        let len = usize::try_from(self.bitmap_payload_len())
            .unwrap_or(usize::MAX)
            .min(limit);
        if len == 0 {
            return;
        }
        let base = self.csn() + 2;
        let start = out.len();
        out.resize(start + len, 0);
        let end_sn = base.saturating_add(len as u64 * 8); // exclusive
        for &(lo, hi) in self.ranges.iter().skip(1) {
            if lo >= end_sn {
                break;
            }
            let hi = hi.min(end_sn - 1);
            for sn in lo..=hi {
                let bit = (sn - base) as usize;
                if let Some(b) = out.get_mut(start + bit / 8) {
                    *b |= 1 << (bit % 8);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::chunk::{BitmapAckIter, RangeAckIter};
    use proptest::prelude::*;

    #[test]
    fn insert_and_csn() {
        let mut s = SeqSet::new();
        assert_eq!(s.insert(0, 3), 3);
        assert_eq!(s.insert(5, 6), 2);
        assert_eq!(s.csn(), 3);
        assert!(s.has_gaps());
        assert!(s.contains(6) && !s.contains(4));
        assert!(!s.would_add_range(4, 4));
        assert!(s.would_add_range(9, 9));
        assert_eq!(s.insert(4, 4), 1);
        assert_eq!(s.csn(), 6);
        assert!(!s.has_gaps());
        assert_eq!(s.insert(2, 6), 0);
    }

    #[test]
    fn spec_example_sizes() {
        // 0..16, 18, 21..24, 27, 28 (RFC 7016 2.3.13).
        let mut s = SeqSet::new();
        s.insert(0, 16);
        s.insert(18, 18);
        s.insert(21, 24);
        s.insert(27, 28);
        let mut b = Vec::new();
        s.write_bitmap(&mut b, usize::MAX);
        assert_eq!(b, vec![0x79, 0x06]);
        let mut r = Vec::new();
        s.write_ranges(&mut r, usize::MAX);
        assert_eq!(r, vec![0x00, 0x00, 0x01, 0x03, 0x01, 0x01]);
        assert_eq!(s.bitmap_payload_len(), 2);
        assert_eq!(s.range_payload_len(), 6);
    }

    proptest! {
        /// Ranges inserted in any order, overlapping or not: the set holds
        /// exactly their union as sorted, disjoint, non-adjacent ranges,
        /// and each insert reports the numbers it added.
        #[test]
        fn insert_matches_a_model(ins in proptest::collection::vec((1u64..200, 0u64..12), 0..60)) {
            let mut s = SeqSet::new();
            let mut model = std::collections::BTreeSet::from([0u64]);
            for &(a, len) in &ins {
                let b = a + len;
                let new = (a..=b).filter(|x| model.insert(*x)).count() as u64;
                prop_assert_eq!(s.insert(a, b), new);
                for w in s.ranges.windows(2) {
                    prop_assert!(w[0].1 + 1 < w[1].0, "{:?}", s.ranges);
                }
                let got: Vec<u64> = s.ranges.iter().flat_map(|&(lo, hi)| lo..=hi).collect();
                let want: Vec<u64> = model.iter().copied().collect();
                prop_assert_eq!(got, want);
            }
        }

        #[test]
        fn encodings_round_trip(sns in proptest::collection::btree_set(1u64..300, 0..80)) {
            let mut s = SeqSet::new();
            for &sn in &sns {
                s.insert(sn, sn);
            }
            let cum = s.csn();
            let mut expect: Vec<u64> = sns.iter().copied().filter(|&x| x > cum).collect();
            expect.sort();
            let mut b = Vec::new();
            s.write_bitmap(&mut b, usize::MAX);
            prop_assert_eq!(b.len() as u64, s.bitmap_payload_len());
            let got: Vec<u64> = BitmapAckIter::new(cum, &b).map(Result::unwrap).collect();
            prop_assert_eq!(&got, &expect);
            let mut r = Vec::new();
            s.write_ranges(&mut r, usize::MAX);
            prop_assert_eq!(r.len() as u64, s.range_payload_len());
            let mut got = Vec::new();
            for x in RangeAckIter::new(cum, &r) {
                let (a, z) = x.unwrap();
                got.extend(a..=z);
            }
            prop_assert_eq!(&got, &expect);
            for sn in 0..310u64 {
                prop_assert_eq!(s.contains(sn), sn <= cum || sns.contains(&sn));
            }
        }
    }
}
