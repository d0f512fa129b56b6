//! The few encodings the flow layer needs in order to size and fill chunks
//! without depending on the wire module's encoders: VLU length and value
//! (RFC 7016 2.1.2), User Data option lists (2.1.3, 2.1.4, 2.3.11.1) and the
//! acknowledgement payloads (2.3.13, 2.3.14). Every reader is total.

use crate::wire::Chunk;

/// Chunk type (1 byte) plus chunkLength (2 bytes), RFC 7016 2.3.
pub(crate) const CHUNK_HEADER: usize = 3;
/// The longest VLU encoding of a 64-bit value.
pub(crate) const VLU_MAX: usize = 10;
/// User Data option type: User's Per-Flow Metadata (2.3.11.1.1).
pub(crate) const OPT_METADATA: u64 = 0x00;
/// User Data option type: Return Flow Association (2.3.11.1.2).
pub(crate) const OPT_RETURN_ASSOCIATION: u64 = 0x0a;

/// Encoded length of `v` as a VLU (RFC 7016 2.1.2).
pub(crate) fn vlu_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    if bits == 0 {
        1
    } else {
        bits.div_ceil(7)
    }
}

/// Append `v` as a VLU.
pub(crate) fn vlu_push(out: &mut Vec<u8>, v: u64) {
    let n = vlu_len(v);
    for i in (0..n).rev() {
        let digit = ((v >> (7 * i)) & 0x7f) as u8;
        let more = if i > 0 { 0x80 } else { 0 };
        out.push(digit | more);
    }
}

/// Read one VLU; `None` if truncated or wider than 64 bits.
pub(crate) fn vlu_read(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate() {
        if v > (u64::MAX >> 7) {
            return None;
        }
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Encode a flow's STARTUP_OPTIONS (RFC 7016 3.6.2.1) as an option list
/// terminated by a Marker (2.1.4), ready to be carried in a User Data chunk.
pub(crate) fn encode_startup_options(out: &mut Vec<u8>, metadata: &[u8], assoc: Option<u64>) {
    out.clear();
    vlu_push(out, (vlu_len(OPT_METADATA) + metadata.len()) as u64);
    vlu_push(out, OPT_METADATA);
    out.extend_from_slice(metadata);
    if let Some(id) = assoc {
        vlu_push(out, (vlu_len(OPT_RETURN_ASSOCIATION) + vlu_len(id)) as u64);
        vlu_push(out, OPT_RETURN_ASSOCIATION);
        vlu_push(out, id);
    }
    out.push(0);
}

/// What a User Data option list says (RFC 7016 2.3.11.1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParsedOptions<'a> {
    pub metadata: Option<&'a [u8]>,
    pub return_association: Option<u64>,
    /// Two Return Flow Association options (forbidden by 2.3.11.1.2).
    pub multiple_associations: bool,
    /// An option not understood with a type code below 8192, which obliges
    /// the receiver to reject the flow (2.3.11.1).
    pub unknown_mandatory: bool,
}

/// Parse an option list up to its Marker. `None` if malformed.
pub(crate) fn parse_options(mut buf: &[u8]) -> Option<ParsedOptions<'_>> {
    let mut out = ParsedOptions::default();
    loop {
        let (len, n) = vlu_read(buf)?;
        buf = buf.get(n..)?;
        if len == 0 {
            return Some(out);
        }
        let len = usize::try_from(len).ok()?;
        let payload = buf.get(..len)?;
        buf = buf.get(len..)?;
        let (ty, tn) = vlu_read(payload)?;
        let value = payload.get(tn..)?;
        match ty {
            OPT_METADATA if out.metadata.is_none() => out.metadata = Some(value),
            OPT_METADATA => {}
            OPT_RETURN_ASSOCIATION => {
                let (id, _) = vlu_read(value)?;
                if out.return_association.is_some() {
                    out.multiple_associations = true;
                }
                out.return_association = Some(id);
            }
            t if t < 8192 => out.unknown_mandatory = true,
            _ => {}
        }
    }
}

/// Exact encoded size of a flow-layer chunk including its 3-byte header
/// (RFC 7016 2.3.11 - 2.3.16). `None` for chunk types the flow layer never
/// emits.
pub fn encoded_len(chunk: &Chunk<'_>) -> Option<usize> {
    let payload = match chunk {
        Chunk::UserData(u) => {
            1 + vlu_len(u.flow_id)
                + vlu_len(u.sequence_number)
                + vlu_len(u.fsn_offset)
                + u.options.map_or(0, <[u8]>::len)
                + u.data.len()
        }
        Chunk::NextUserData(u) => 1 + u.options.map_or(0, <[u8]>::len) + u.data.len(),
        Chunk::BitmapAck {
            flow_id,
            buffer_blocks_available,
            cumulative_ack,
            bitmap,
        } => {
            vlu_len(*flow_id)
                + vlu_len(*buffer_blocks_available)
                + vlu_len(*cumulative_ack)
                + bitmap.len()
        }
        Chunk::RangeAck {
            flow_id,
            buffer_blocks_available,
            cumulative_ack,
            ranges,
        } => {
            vlu_len(*flow_id)
                + vlu_len(*buffer_blocks_available)
                + vlu_len(*cumulative_ack)
                + ranges.len()
        }
        Chunk::BufferProbe { flow_id } => vlu_len(*flow_id),
        Chunk::FlowException { flow_id, exception } => vlu_len(*flow_id) + vlu_len(*exception),
        _ => return None,
    };
    Some(CHUNK_HEADER + payload)
}

/// Size of a User Data chunk with the given fields (RFC 7016 2.3.11).
pub(crate) fn user_data_len(
    flow: u64,
    sn: u64,
    fsn_offset: u64,
    opts: usize,
    data: usize,
) -> usize {
    CHUNK_HEADER + 1 + vlu_len(flow) + vlu_len(sn) + vlu_len(fsn_offset) + opts + data
}

/// Size of a Next User Data chunk (RFC 7016 2.3.12).
pub(crate) fn next_user_data_len(opts: usize, data: usize) -> usize {
    CHUNK_HEADER + 1 + opts + data
}

/// Walk the sequence numbers a Range Ack acknowledges above its cumAck
/// (RFC 7016 2.3.14), as inclusive ranges. Stops silently at malformed or
/// overflowing input (the prefix read so far is still a valid ack).
pub(crate) fn for_each_range(cum: u64, mut ranges: &[u8], mut f: impl FnMut(u64, u64)) {
    let mut cursor = cum;
    while !ranges.is_empty() {
        let Some((holes_m1, n1)) = vlu_read(ranges) else {
            return;
        };
        let Some(rest) = ranges.get(n1..) else { return };
        let Some((recv_m1, n2)) = vlu_read(rest) else {
            return;
        };
        let Some(rest) = rest.get(n2..) else { return };
        ranges = rest;
        let Some(from) = cursor
            .checked_add(1)
            .and_then(|c| c.checked_add(holes_m1))
            .and_then(|c| c.checked_add(1))
        else {
            return;
        };
        let Some(to) = from.checked_add(recv_m1) else {
            return;
        };
        f(from, to);
        cursor = to;
    }
}

/// Walk the sequence numbers a Bitmap Ack acknowledges above its cumAck
/// (RFC 7016 2.3.13): bit 0 of the first byte is cumAck + 2.
pub(crate) fn for_each_bitmap(cum: u64, bitmap: &[u8], mut f: impl FnMut(u64)) {
    let Some(base) = cum.checked_add(2) else {
        return;
    };
    for (j, &byte) in bitmap.iter().enumerate() {
        for bit in 0..8u64 {
            if byte & (1 << bit) != 0 {
                let Some(sn) = (j as u64)
                    .checked_mul(8)
                    .and_then(|o| o.checked_add(bit))
                    .and_then(|o| base.checked_add(o))
                else {
                    return;
                };
                f(sn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vlu_examples() {
        let mut v = Vec::new();
        vlu_push(&mut v, 0);
        vlu_push(&mut v, 127);
        vlu_push(&mut v, 128);
        vlu_push(&mut v, u64::MAX);
        assert_eq!(&v[..4], &[0x00, 0x7f, 0x81, 0x00]);
        assert_eq!(v.len(), 4 + VLU_MAX);
        assert_eq!(vlu_read(&[0x81]), None);
        // 11 bytes of 0xff..0x7f overflow 64 bits.
        let mut big = vec![0xffu8; 10];
        big.push(0x7f);
        assert_eq!(vlu_read(&big), None);
    }

    proptest! {
        #[test]
        fn vlu_round_trip(x: u64) {
            let mut v = Vec::new();
            vlu_push(&mut v, x);
            prop_assert_eq!(v.len(), vlu_len(x));
            prop_assert_eq!(vlu_read(&v), Some((x, v.len())));
        }

        #[test]
        fn options_round_trip(meta in proptest::collection::vec(any::<u8>(), 0..600), assoc: Option<u64>) {
            let mut v = Vec::new();
            encode_startup_options(&mut v, &meta, assoc);
            let p = parse_options(&v).unwrap();
            prop_assert_eq!(p.metadata, Some(&meta[..]));
            prop_assert_eq!(p.return_association, assoc);
            prop_assert!(!p.unknown_mandatory);
        }

        #[test]
        fn parse_options_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_options(&bytes);
            for_each_range(5, &bytes, |_, _| {});
            for_each_bitmap(u64::MAX - 3, &bytes, |_| {});
        }
    }

    #[test]
    fn spec_ack_examples() {
        // RFC 7016 2.3.13 example: 18, 21..24, 27, 28 after cumAck 16.
        let mut got = Vec::new();
        for_each_bitmap(16, &[0x79, 0x06], |sn| got.push(sn));
        assert_eq!(got, vec![18, 21, 22, 23, 24, 27, 28]);
        // RFC 7016 2.3.14 example.
        let mut got = Vec::new();
        for_each_range(16, &[0x00, 0x00, 0x01, 0x03], |a, b| got.push((a, b)));
        assert_eq!(got, vec![(18, 18), (21, 24)]);
    }

    #[test]
    fn unknown_options() {
        // type 0x20 (< 8192) must be flagged; type 8192 ignored.
        let v = [0x02, 0x20, 0xaa, 0x00];
        assert!(parse_options(&v).unwrap().unknown_mandatory);
        let mut v = Vec::new();
        vlu_push(&mut v, 3);
        vlu_push(&mut v, 8192);
        v.push(1);
        v.push(0);
        let p = parse_options(&v).unwrap();
        assert!(!p.unknown_mandatory);
        assert_eq!(p.metadata, None);
        // Missing marker.
        assert_eq!(parse_options(&[0x01, 0x00]), None);
    }
}
