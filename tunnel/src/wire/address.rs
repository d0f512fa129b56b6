//! Internet Socket Address (RFC 7016 section 2.1.5).

use std::net::SocketAddr;

/// Origin tag of an address (section 2.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressOrigin {
    Unknown = 0,
    Local = 1,
    Reflexive = 2,
    Relay = 3,
}

/// An address with its origin tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    pub addr: SocketAddr,
    pub origin: AddressOrigin,
}
