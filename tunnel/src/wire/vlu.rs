//! Variable Length Unsigned Integer (RFC 7016 section 2.1.2).
//!
//! Seven bits per byte, most significant group first, high bit set on every
//! byte but the last. We handle the full `u64` range (the spec's SHOULD) and
//! accept only the canonical (shortest) encoding: a leading `0x80` byte or a
//! value above `u64::MAX` is [`WireError::VluOverflow`]. This makes
//! `encode(decode(bytes)) == bytes` hold for every accepted input.

use super::WireError;

/// Longest encoding of a `u64`: ceil(64 / 7) bytes.
pub const MAX_LEN: usize = 10;

/// Decode a VLU at the start of `buf`; returns `(value, bytes consumed)`.
pub fn decode(buf: &[u8]) -> Result<(u64, usize), WireError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate() {
        if i == 0 && b == 0x80 {
            // Leading zero digit: overlong, non-canonical.
            return Err(WireError::VluOverflow);
        }
        if value > (u64::MAX >> 7) {
            return Err(WireError::VluOverflow);
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(WireError::Truncated)
}

/// Number of bytes [`encode`] writes for `value` (1 to 10).
pub const fn encoded_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    if bits == 0 {
        1
    } else {
        bits.div_ceil(7)
    }
}

/// Encode `value` at the start of `out`; returns the bytes written.
pub fn encode(value: u64, out: &mut [u8]) -> Result<usize, WireError> {
    let len = encoded_len(value);
    let dst = out.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
    let last = len - 1;
    for (i, byte) in dst.iter_mut().enumerate() {
        let shift = 7 * (last - i);
        let digit = ((value >> shift) & 0x7f) as u8;
        *byte = if i == last { digit } else { digit | 0x80 };
    }
    Ok(len)
}

/// Append `value` to `out` (the flow layer builds acknowledgement payloads
/// and option lists this way).
pub fn push(out: &mut Vec<u8>, value: u64) {
    let mut tmp = [0u8; MAX_LEN];
    let n = encode(value, &mut tmp).unwrap_or(0);
    out.extend_from_slice(tmp.get(..n).unwrap_or(&[]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn push_appends_the_encoding() {
        let mut v = vec![0xee];
        push(&mut v, 0);
        push(&mut v, 127);
        push(&mut v, 128);
        push(&mut v, u64::MAX);
        assert_eq!(&v[..5], &[0xee, 0x00, 0x7f, 0x81, 0x00]);
        assert_eq!(v.len(), 5 + MAX_LEN);
        assert_eq!(decode(&v[5..]), Ok((u64::MAX, MAX_LEN)));
    }

    #[test]
    fn golden() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x81, 0x00]),
            (0x3fff, &[0xff, 0x7f]),
            (0x4000, &[0x81, 0x80, 0x00]),
            (
                u64::MAX,
                &[0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            ),
        ];
        for &(v, bytes) in cases {
            assert_eq!(decode(bytes), Ok((v, bytes.len())), "{v}");
            assert_eq!(encoded_len(v), bytes.len());
            let mut out = [0xaa; MAX_LEN];
            assert_eq!(encode(v, &mut out), Ok(bytes.len()));
            assert_eq!(&out[..bytes.len()], bytes);
            assert!(out[bytes.len()..].iter().all(|&b| b == 0xaa));
        }
    }

    #[test]
    fn rejects_overflow_and_overlong() {
        // 2^64 needs 65 bits.
        let too_big = [0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        assert_eq!(decode(&too_big), Err(WireError::VluOverflow));
        let eleven = [
            0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert_eq!(decode(&eleven), Err(WireError::VluOverflow));
        assert_eq!(decode(&[0x80, 0x01]), Err(WireError::VluOverflow));
        // An endless run of continuation bytes is bounded by the overflow check.
        assert_eq!(decode(&[0xff; 64]), Err(WireError::VluOverflow));
    }

    #[test]
    fn truncation_never_panics() {
        let mut out = [0u8; MAX_LEN];
        let n = encode(u64::MAX, &mut out).unwrap();
        for cut in 0..n {
            assert_eq!(decode(&out[..cut]), Err(WireError::Truncated));
            assert_eq!(
                encode(u64::MAX, &mut out[..cut].to_vec()),
                Err(WireError::BufferTooSmall)
            );
        }
        assert_eq!(decode(&[]), Err(WireError::Truncated));
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<u64>(), shift in 0u32..64, tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            // Spread values over every encoded length.
            let v = v >> shift;
            let mut buf = [0xaa; MAX_LEN + 4];
            let n = encode(v, &mut buf).unwrap();
            prop_assert_eq!(n, encoded_len(v));
            buf[n..n + tail.len()].copy_from_slice(&tail);
            prop_assert_eq!(decode(&buf[..n + tail.len()]), Ok((v, n)));
        }

        #[test]
        fn decode_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok((v, n)) = decode(&bytes) {
                let mut out = [0u8; MAX_LEN];
                let m = encode(v, &mut out).unwrap();
                prop_assert_eq!(&out[..m], &bytes[..n]);
            }
        }
    }
}
