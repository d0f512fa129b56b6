//! Option and Option List (RFC 7016 sections 2.1.3, 2.1.4), and the User
//! Data options of section 2.3.11.1.
//!
//! An Option is `L T V`: a VLU length covering the VLU type and the value.
//! A zero length is a Marker, which terminates an Option List.

use super::cursor::{Reader, Writer};
use super::{vlu, WireError};

/// User's Per-Flow Metadata option type (RFC 7016 2.3.11.1.1).
pub const OPT_USER_METADATA: u64 = 0x00;
/// Return Flow Association option type (RFC 7016 2.3.11.1.2).
pub const OPT_RETURN_FLOW_ASSOCIATION: u64 = 0x0a;
/// ringlan's "ack clock" option (no value; a type a receiver may ignore,
/// RFC 7016 2.3.11.1): the sender's burst avoidance counts the packets an
/// acknowledgement newly acknowledges (`congestion`), so its receiver may
/// acknowledge a batch of packets read together with fewer acknowledgements
/// (`flow`, [`crate::flow::ACK_CLOCK_PACKETS`]). `docs/wire-format.md`.
pub const OPT_RINGLAN_ACK_CLOCK: u64 = 0x202b;
/// Option types below this value must be understood by a flow receiver;
/// types at or above it may be ignored (RFC 7016 2.3.11.1).
pub const OPT_MUST_UNDERSTAND_BELOW: u64 = 8192;

/// Iterator over an Option List (RFC 7016 2.1.4) yielding `(type, value)`
/// for each non-empty option. It ends after the Marker; a list that runs
/// out before its Marker, or an option whose length or type does not fit,
/// yields one `Err` and then ends. Bytes after the Marker are not examined.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    rest: Reader<'a>,
    done: bool,
}

impl<'a> OptionIter<'a> {
    /// Iterate the Option List at the start of `list`.
    pub fn new(list: &'a [u8]) -> Self {
        OptionIter {
            rest: Reader::new(list),
            done: false,
        }
    }

    /// An iterator that yields nothing (no option list present).
    pub fn empty() -> Self {
        OptionIter {
            rest: Reader::new(&[]),
            done: true,
        }
    }

    fn next_option(&mut self) -> Result<Option<(u64, &'a [u8])>, WireError> {
        let len = self.rest.vlu()?;
        if len == 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| WireError::BadLength)?;
        let payload = self.rest.bytes(len)?;
        let mut p = Reader::new(payload);
        let option_type = p.vlu().map_err(|e| match e {
            WireError::Truncated => WireError::BadLength,
            e => e,
        })?;
        Ok(Some((option_type, p.rest())))
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<(u64, &'a [u8]), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_option() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Length in bytes of the Option List at the start of `buf`, including its
/// terminating Marker (RFC 7016 2.1.4). User Data uses this to find where
/// its data begins.
pub fn option_list_len(buf: &[u8]) -> Result<usize, WireError> {
    let mut it = OptionIter::new(buf);
    for item in it.by_ref() {
        item?;
    }
    Ok(buf.len() - it.rest.len())
}

/// Encoded size of one non-empty option.
pub fn option_encoded_len(option_type: u64, value_len: usize) -> usize {
    let payload = vlu::encoded_len(option_type) + value_len;
    vlu::encoded_len(payload as u64) + payload
}

/// Write one non-empty option (RFC 7016 2.1.3) at the start of `out`;
/// returns the bytes written.
pub fn write_option(out: &mut [u8], option_type: u64, value: &[u8]) -> Result<usize, WireError> {
    let mut w = Writer::new(out);
    let payload = vlu::encoded_len(option_type) + value.len();
    w.vlu(payload as u64)?;
    w.vlu(option_type)?;
    w.bytes(value)?;
    Ok(w.pos())
}

/// Write a Marker (the empty option that ends a list); returns 1.
pub fn write_marker(out: &mut [u8]) -> Result<usize, WireError> {
    let b = out.first_mut().ok_or(WireError::BufferTooSmall)?;
    *b = 0;
    Ok(1)
}

/// A User Data option (RFC 7016 2.3.11.1), typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDataOption<'a> {
    /// 2.3.11.1.1: the flow's metadata.
    UserMetadata(&'a [u8]),
    /// 2.3.11.1.2: the receive flow this flow answers.
    ReturnFlowAssociation(u64),
    /// Any other option type, carried as is.
    Other { option_type: u64, value: &'a [u8] },
}

impl<'a> UserDataOption<'a> {
    /// Interpret one `(type, value)` from an [`OptionIter`]. A Return Flow
    /// Association whose value is not exactly one VLU is malformed.
    pub fn from_raw(option_type: u64, value: &'a [u8]) -> Result<Self, WireError> {
        Ok(match option_type {
            OPT_USER_METADATA => UserDataOption::UserMetadata(value),
            OPT_RETURN_FLOW_ASSOCIATION => {
                let (flow, n) = vlu::decode(value)?;
                if n != value.len() {
                    return Err(WireError::BadLength);
                }
                UserDataOption::ReturnFlowAssociation(flow)
            }
            _ => UserDataOption::Other { option_type, value },
        })
    }

    /// The option type code.
    pub fn option_type(&self) -> u64 {
        match self {
            UserDataOption::UserMetadata(_) => OPT_USER_METADATA,
            UserDataOption::ReturnFlowAssociation(_) => OPT_RETURN_FLOW_ASSOCIATION,
            UserDataOption::Other { option_type, .. } => *option_type,
        }
    }

    fn value_len(&self) -> usize {
        match self {
            UserDataOption::UserMetadata(v) => v.len(),
            UserDataOption::ReturnFlowAssociation(f) => vlu::encoded_len(*f),
            UserDataOption::Other { value, .. } => value.len(),
        }
    }

    /// Encoded size of this option.
    pub fn encoded_len(&self) -> usize {
        option_encoded_len(self.option_type(), self.value_len())
    }

    /// Write this option at the start of `out`; returns the bytes written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        match self {
            UserDataOption::UserMetadata(v) => write_option(out, OPT_USER_METADATA, v),
            UserDataOption::ReturnFlowAssociation(f) => {
                let mut tmp = [0u8; vlu::MAX_LEN];
                let n = vlu::encode(*f, &mut tmp)?;
                write_option(
                    out,
                    OPT_RETURN_FLOW_ASSOCIATION,
                    tmp.get(..n).unwrap_or(&[]),
                )
            }
            UserDataOption::Other { option_type, value } => write_option(out, *option_type, value),
        }
    }
}

/// Encoded size of a complete Option List holding `options` plus Marker.
pub fn option_list_encoded_len(options: &[UserDataOption<'_>]) -> usize {
    options
        .iter()
        .map(UserDataOption::encoded_len)
        .sum::<usize>()
        + 1
}

/// Write a complete Option List (`options` then a Marker); returns the
/// bytes written.
pub fn write_option_list(
    out: &mut [u8],
    options: &[UserDataOption<'_>],
) -> Result<usize, WireError> {
    let mut pos = 0;
    for opt in options {
        let dst = out.get_mut(pos..).ok_or(WireError::BufferTooSmall)?;
        pos += opt.emit(dst)?;
    }
    let dst = out.get_mut(pos..).ok_or(WireError::BufferTooSmall)?;
    pos += write_marker(dst)?;
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_list() {
        // metadata "ab", return flow 5, marker.
        let bytes = [0x03, 0x00, b'a', b'b', 0x02, 0x0a, 0x05, 0x00];
        let items: Vec<_> = OptionIter::new(&bytes).collect();
        assert_eq!(items, vec![Ok((0x00, &b"ab"[..])), Ok((0x0a, &[0x05][..]))]);
        assert_eq!(option_list_len(&bytes), Ok(bytes.len()));
        // Trailing bytes after the marker are not part of the list.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[1, 2, 3]);
        assert_eq!(option_list_len(&longer), Ok(bytes.len()));

        let opts = [
            UserDataOption::UserMetadata(b"ab"),
            UserDataOption::ReturnFlowAssociation(5),
        ];
        let mut out = [0xaa; 8];
        assert_eq!(option_list_encoded_len(&opts), 8);
        assert_eq!(write_option_list(&mut out, &opts), Ok(8));
        assert_eq!(out, bytes);
        assert_eq!(
            UserDataOption::from_raw(0x0a, &[0x05]),
            Ok(UserDataOption::ReturnFlowAssociation(5))
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(option_list_len(&[]), Err(WireError::Truncated));
        // Missing marker.
        assert_eq!(option_list_len(&[0x01, 0x07]), Err(WireError::Truncated));
        // Length exceeds the list.
        assert_eq!(
            option_list_len(&[0x05, 0x07, 0x00]),
            Err(WireError::BadLength)
        );
        // Type VLU runs past the option's length.
        assert_eq!(
            option_list_len(&[0x01, 0x81, 0x01, 0x00]),
            Err(WireError::BadLength)
        );
        // Iteration yields the error once, then ends.
        let mut it = OptionIter::new(&[0x02, 0x01]);
        assert_eq!(it.next(), Some(Err(WireError::BadLength)));
        assert_eq!(it.next(), None);
        // Return flow value with trailing junk.
        assert_eq!(
            UserDataOption::from_raw(0x0a, &[0x05, 0x00]),
            Err(WireError::BadLength)
        );
        assert_eq!(write_marker(&mut []), Err(WireError::BufferTooSmall));
    }

    #[test]
    fn truncation_never_panics() {
        let opts = [
            UserDataOption::UserMetadata(&[9; 200]),
            UserDataOption::Other {
                option_type: 9000,
                value: b"xyz",
            },
        ];
        let mut buf = vec![0u8; option_list_encoded_len(&opts)];
        write_option_list(&mut buf, &opts).unwrap();
        for cut in 0..buf.len() {
            assert!(option_list_len(&buf[..cut]).is_err());
            let mut small = vec![0u8; cut];
            assert_eq!(
                write_option_list(&mut small, &opts),
                Err(WireError::BufferTooSmall)
            );
        }
    }

    fn arb_option() -> impl Strategy<Value = (u64, Vec<u8>)> {
        (
            any::<u64>(),
            0u32..64,
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(t, s, v)| (t >> s, v))
    }

    proptest! {
        #[test]
        fn round_trip(opts in proptest::collection::vec(arb_option(), 0..6)) {
            let typed: Vec<UserDataOption<'_>> = opts
                .iter()
                .map(|(t, v)| UserDataOption::Other { option_type: *t, value: v })
                .collect();
            let len = option_list_encoded_len(&typed);
            let mut buf = vec![0xaa; len + 2];
            prop_assert_eq!(write_option_list(&mut buf, &typed), Ok(len));
            prop_assert_eq!(option_list_len(&buf), Ok(len));
            let got: Vec<(u64, Vec<u8>)> = OptionIter::new(&buf)
                .map(|r| r.map(|(t, v)| (t, v.to_vec())))
                .collect::<Result<_, _>>()
                .unwrap();
            prop_assert_eq!(got, opts);
        }

        #[test]
        fn typed_round_trip(flow in any::<u64>(), meta in proptest::collection::vec(any::<u8>(), 0..40)) {
            for opt in [UserDataOption::ReturnFlowAssociation(flow), UserDataOption::UserMetadata(&meta)] {
                let mut buf = vec![0xaa; opt.encoded_len()];
                prop_assert_eq!(opt.emit(&mut buf), Ok(buf.len()));
                let (t, v) = OptionIter::new(&buf).next().unwrap().unwrap();
                prop_assert_eq!(UserDataOption::from_raw(t, v), Ok(opt));
            }
        }
    }
}
