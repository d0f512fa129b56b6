//! RTMFP wire format (RFC 7016 section 2): elementary types (VLU 2.1.2,
//! options 2.1.3/2.1.4, addresses 2.1.5), the multiplex layer (2.2.2), the
//! plain packet header (2.2.4), every chunk (2.3) and packet fragmentation
//! (3.4).
//!
//! The path production takes:
//!
//! - **Decode** (`endpoint`): [`split_multiplex`] and
//!   [`scramble_session_id`] give the session id and the encrypted packet
//!   (2.2.2); the session's (or the Default Session Key's) opener decrypts
//!   it in place; [`PacketHeader::parse`] reads the header and
//!   [`ChunkIter`] the chunks, stopping at the first malformed one. The
//!   flow layer reads acknowledgements with [`chunk::RangeAckIter`] and
//!   [`chunk::BitmapAckIter`] and option lists with [`OptionIter`].
//! - **Encode** (`session`, `endpoint`): the datagram buffer reserves
//!   [`packet::MULTIPLEX_HEADER_LEN`] plus the session header; each
//!   [`Chunk`] is written in place with [`Chunk::emit`] (the flow layer
//!   through its `ChunkSink`, with payloads such as acknowledgement pairs
//!   built with [`vlu::push`] and option lists with
//!   [`option::write_option_list`]); the [`PacketHeader`] is emitted in
//!   front, the packet sealed in place, and [`write_multiplex_header`]
//!   writes the scrambled session id. Large startup packets are split by
//!   [`Fragmenter`] and put back together by [`Reassembler`].
//!
//! Each structure has an owned (or borrowing) representation with `parse`
//! and `emit` that are exact inverses. Every decoder is total: it returns
//! `Err(WireError)` or `None` on malformed input, never panics, and never
//! allocates more than the input it was given. The RFC's own examples
//! (2.3.12 - 2.3.14) are golden tests in `chunk.rs`.

pub mod address;
pub mod chunk;
mod cursor;
pub mod fragment;
pub mod option;
pub mod packet;
pub mod vlu;

pub use address::{Address, AddressIter, AddressOrigin};
pub use chunk::{Chunk, ChunkIter, FragmentControl, RawChunkIter, RekeyFields, UserData};
pub use fragment::{Fragmenter, Reassembler, ReassemblyLimits, ReassemblyOutcome};
pub use option::{OptionIter, UserDataOption};
pub use packet::{
    scramble_session_id, split_multiplex, write_multiplex_header, PacketHeader, PacketMode,
};
/// Why a wire structure failed to decode. Garbage from the network is counted
/// by reason; these are those reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("input truncated")]
    Truncated,
    #[error("variable length integer exceeds 64 bits")]
    VluOverflow,
    #[error("length field exceeds the enclosing structure")]
    BadLength,
    #[error("field has a value the specification forbids")]
    Invalid,
    #[error("output buffer too small")]
    BufferTooSmall,
}
