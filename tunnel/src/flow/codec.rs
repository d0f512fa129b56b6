//! The flow layer's view of the wire codec: chunk sizes it needs before it
//! builds a chunk, and the flow's STARTUP_OPTIONS (RFC 7016 3.6.2.1) as a
//! User Data option list (2.1.3, 2.1.4, 2.3.11.1). Every encoding here is
//! the wire module's ([`crate::wire::vlu`], [`crate::wire::option`]); this
//! file only names what the flow layer uses.

use crate::wire::option::{
    option_list_encoded_len, write_option_list, OptionIter, UserDataOption,
    OPT_MUST_UNDERSTAND_BELOW, OPT_RINGLAN_ACK_CLOCK,
};

pub(crate) use crate::wire::chunk::CHUNK_HEADER_LEN as CHUNK_HEADER;
pub(crate) use crate::wire::vlu::{encoded_len as vlu_len, push as vlu_push};

/// Encode a flow's STARTUP_OPTIONS (RFC 7016 3.6.2.1) as an option list
/// terminated by a Marker (2.1.4), ready to be carried in a User Data chunk:
/// the metadata, the return association if any, and the ack clock option
/// ([`OPT_RINGLAN_ACK_CLOCK`]), which every flow of this implementation
/// carries.
pub(crate) fn encode_startup_options(out: &mut Vec<u8>, metadata: &[u8], assoc: Option<u64>) {
    let meta = UserDataOption::UserMetadata(metadata);
    let clock = UserDataOption::Other {
        option_type: OPT_RINGLAN_ACK_CLOCK,
        value: &[],
    };
    let list: &[UserDataOption<'_>] = match assoc {
        Some(id) => &[meta, UserDataOption::ReturnFlowAssociation(id), clock],
        None => &[meta, clock],
    };
    out.clear();
    out.resize(option_list_encoded_len(list), 0);
    let n = write_option_list(out, list).unwrap_or(0);
    out.truncate(n);
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
    /// The sender's burst avoidance runs on the ack clock
    /// ([`OPT_RINGLAN_ACK_CLOCK`]).
    pub ack_clock: bool,
}

/// Parse an option list up to its Marker. `None` if malformed.
pub(crate) fn parse_options(buf: &[u8]) -> Option<ParsedOptions<'_>> {
    let mut out = ParsedOptions::default();
    for item in OptionIter::new(buf) {
        let (ty, value) = item.ok()?;
        match UserDataOption::from_raw(ty, value).ok()? {
            UserDataOption::UserMetadata(m) if out.metadata.is_none() => out.metadata = Some(m),
            UserDataOption::UserMetadata(_) => {}
            UserDataOption::ReturnFlowAssociation(id) => {
                if out.return_association.is_some() {
                    out.multiple_associations = true;
                }
                out.return_association = Some(id);
            }
            UserDataOption::Other {
                option_type: OPT_RINGLAN_ACK_CLOCK,
                ..
            } => out.ack_clock = true,
            UserDataOption::Other { option_type, .. } => {
                if option_type < OPT_MUST_UNDERSTAND_BELOW {
                    out.unknown_mandatory = true;
                }
            }
        }
    }
    // OptionIter ends without an error only after the Marker.
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn options_round_trip(meta in proptest::collection::vec(any::<u8>(), 0..600), assoc: Option<u64>) {
            let mut v = Vec::new();
            encode_startup_options(&mut v, &meta, assoc);
            let p = parse_options(&v).unwrap();
            prop_assert_eq!(p.metadata, Some(&meta[..]));
            prop_assert_eq!(p.return_association, assoc);
            prop_assert!(!p.unknown_mandatory);
            prop_assert!(p.ack_clock);
        }

        #[test]
        fn parse_options_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_options(&bytes);
        }
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

    #[test]
    fn sizes_match_the_emitted_chunks() {
        use crate::wire::chunk::{NextUserData, UserData};
        use crate::wire::{Chunk, FragmentControl};
        let opts = [0x02, 0x00, 0xaa, 0x00];
        let ud = UserData {
            fragment_control: FragmentControl::Whole,
            abandon: false,
            final_: false,
            flow_id: 300,
            sequence_number: 70_000,
            fsn_offset: 2,
            options: Some(&opts),
            data: b"hello",
        };
        let c = Chunk::UserData(ud);
        assert_eq!(
            user_data_len(300, 70_000, 2, opts.len(), 5),
            c.encoded_len()
        );
        let next = Chunk::NextUserData(NextUserData {
            fragment_control: FragmentControl::Whole,
            abandon: false,
            final_: false,
            options: None,
            data: b"hello",
        });
        assert_eq!(next_user_data_len(0, 5), next.encoded_len());
    }
}
