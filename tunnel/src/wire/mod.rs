//! RTMFP wire format (RFC 7016 section 2): elementary types, the multiplex
//! layer, the plain packet header and every chunk.
//!
//! Each structure has an owned (or borrowing) representation with `parse`
//! and `emit` that are exact inverses. Every decoder is total: it returns
//! `Err(WireError)` or `None` on malformed input, never panics, and never
//! allocates more than the input it was given.

pub mod address;
pub mod chunk;
pub mod option;
pub mod packet;
pub mod vlu;

pub use address::{Address, AddressOrigin};
pub use chunk::{Chunk, ChunkType, FragmentControl};
pub use packet::{PacketHeader, PacketMode};

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
