//! Handles shared by the whole stack, and the table type keyed by this
//! node's own session and route ids. Every other module may import this
//! one; it imports nothing of the crate.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;

/// A node's identity and ring position: the first 128 bits of the SHA-256
/// fingerprint of its certificate (see `docs/crypto-profile.md`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub u128);

impl NodeId {
    /// The id as 16 big-endian bytes (the order it has in the fingerprint).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    pub fn from_bytes(b: [u8; 16]) -> Self {
        NodeId(u128::from_be_bytes(b))
    }

    /// Short form for logs: the first 8 hex digits.
    pub fn short(self) -> String {
        format!("{:08x}", (self.0 >> 96) as u32)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl std::str::FromStr for NodeId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u128::from_str_radix(s, 16).map(NodeId)
    }
}

/// Handle of a session: the receive session id this end chose (RFC 7016
/// 2.2.2). Never 0; stays the same from `connect` to close, also when glare
/// turns an opening session into a responder session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u32);

/// The id of a relayed flow route entry at this node: the id its far
/// neighbour on the route addresses route datagrams to (`docs/relay.md`).
/// Route ids come from the same random space as this node's session ids
/// (both are the receiver's choice, RFC 7016 2.2.2) and never collide with
/// them. It is a wire value: route setup carries it in the overlay's
/// `RouteSetup`/`RouteReply` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub u32);

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {:08x}", self.0)
    }
}

/// Hasher for the session and route tables. Their keys are our own session
/// and route ids, drawn from the seeded random source (the endpoint's
/// `alloc_session_id`), so a peer cannot choose colliding keys and
/// SipHash's flooding resistance buys nothing; one multiplication
/// (Fibonacci hashing) spreads the bits over the whole word, high bits
/// included, which hashbrown's control bytes use.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A table keyed by our own session or route ids.
pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_text_round_trip() {
        let id = NodeId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(NodeId::from_bytes(id.to_bytes()), id);
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        assert_eq!(id.short(), "01234567");
    }
}
