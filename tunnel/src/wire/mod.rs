//! RTMFP wire format (RFC 7016 section 2): elementary types, the multiplex
//! layer, the plain packet header and every chunk; building packets in
//! place ([`PacketWriter`]) and packet fragmentation (section 3.4).
//!
//! Receive path: [`demultiplex`] (session id, encrypted packet), decrypt,
//! then [`parse_packet`] (header, [`ChunkIter`]). Send path:
//! [`PacketWriter`] into a buffer with [`packet::MULTIPLEX_HEADER_LEN`]
//! bytes of headroom, encrypt in place, [`write_multiplex_header`].
//!
//! Each structure has an owned (or borrowing) representation with `parse`
//! and `emit` that are exact inverses. Every decoder is total: it returns
//! `Err(WireError)` or `None` on malformed input, never panics, and never
//! allocates more than the input it was given.

pub mod address;
pub mod chunk;
mod cursor;
pub mod fragment;
pub mod option;
pub mod packet;
pub mod vlu;
pub mod writer;

pub use address::{Address, AddressIter, AddressOrigin};
pub use chunk::{
    encode_ack, encode_ack_truncated, encode_bitmap_ack, encode_range_ack, AckedRanges,
    BitmapAckIter, Chunk, ChunkIter, ChunkType, FragmentControl, NextUserData, RangeAckIter,
    RawChunkIter, UserData,
};
pub use fragment::{DiscardReason, Fragmenter, Reassembler, ReassemblyLimits, ReassemblyOutcome};
pub use option::{OptionIter, UserDataOption};
pub use packet::{
    demultiplex, parse_packet, scramble_session_id, split_multiplex, write_multiplex_header,
    PacketHeader, PacketMode,
};
pub use writer::{PacketWriter, UserDataFields};

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
