//! The path a session's packets take: straight to a UDP address, or over a
//! relayed flow route (`docs/relay.md`). Every public API that takes or
//! reports a session's far end uses [`Path`], so no caller ever has to
//! tell a route from an address by looking at the address.
//!
//! Inside the endpoint a route path travels as an address in the IPv6
//! discard prefix `100::/64` (RFC 6666): the session logic keyed by
//! address (cookies, RFC 7016 3.5.1.2; the pre-authentication limiter,
//! which counts each route on its own; fragment reassembly, 3.4; address
//! mobility, 3.5.4.2) then runs unchanged
//! over routes, and moving a session between routes, or between a route
//! and a direct address, is an ordinary path change. That encoding is
//! private to this crate: [`Path::to_addr`] and [`Path::from_addr`] are the
//! only place that makes or reads it.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

pub use crate::ids::RouteId;

/// `addr` as every layer above the socket sees it: an IPv4-mapped IPv6
/// address (`[::ffff:198.51.100.10]:4910`, what a dual-stack socket
/// reports for an IPv4 peer) becomes the plain IPv4 address with the same
/// port; everything else is unchanged. The driver applies it to every
/// source address it reads, so IPv4 peers have one address whichever
/// socket they came through, and what is handed to other members
/// (reflexive addresses, STUN answers, `Moved`) is usable by IPv4-only
/// ones.
pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Where a session's packets go and come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Straight to this UDP address (the far end's DESTADDR, RFC 7016 3.5).
    Direct(SocketAddr),
    /// Over the relayed flow route this end knows as `RouteId`: packets are
    /// wrapped in route datagrams for the route's first hop.
    Route(RouteId),
}

impl Path {
    /// The UDP address of a direct path.
    pub fn direct(self) -> Option<SocketAddr> {
        match self {
            Path::Direct(a) => Some(a),
            Path::Route(_) => None,
        }
    }

    /// The route of a relayed path.
    pub fn route(self) -> Option<RouteId> {
        match self {
            Path::Direct(_) => None,
            Path::Route(id) => Some(id),
        }
    }

    /// Whether the path runs over a relayed route.
    pub fn is_relayed(self) -> bool {
        matches!(self, Path::Route(_))
    }

    /// The address that stands for this path inside the endpoint.
    pub(crate) fn to_addr(self) -> SocketAddr {
        match self {
            Path::Direct(a) => a,
            Path::Route(id) => route_addr(id),
        }
    }

    /// The path an endpoint-internal address stands for.
    pub(crate) fn from_addr(addr: SocketAddr) -> Path {
        match route_id_of(&addr) {
            Some(id) => Path::Route(id),
            None => Path::Direct(addr),
        }
    }
}

impl From<SocketAddr> for Path {
    fn from(a: SocketAddr) -> Path {
        Path::Direct(a)
    }
}

impl From<RouteId> for Path {
    fn from(id: RouteId) -> Path {
        Path::Route(id)
    }
}

/// A path equals an address when it is the direct path to that address.
impl PartialEq<SocketAddr> for Path {
    fn eq(&self, other: &SocketAddr) -> bool {
        *self == Path::Direct(*other)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Direct(a) => a.fmt(f),
            Path::Route(id) => id.fmt(f),
        }
    }
}

/// `100::/64`, the IPv6 discard-only prefix (RFC 6666): never a real
/// destination, so no direct path can be mistaken for a route.
const PREFIX: [u16; 4] = [0x0100, 0, 0, 0];
/// Port of every route address (a real datagram never comes from
/// `[100::..]:1`).
const ROUTE_PORT: u16 = 1;

/// The address that stands for route `id` inside the endpoint.
pub(crate) fn route_addr(id: RouteId) -> SocketAddr {
    let ip = Ipv6Addr::new(
        PREFIX[0],
        PREFIX[1],
        PREFIX[2],
        PREFIX[3],
        0,
        0,
        (id.0 >> 16) as u16,
        id.0 as u16,
    );
    SocketAddr::V6(SocketAddrV6::new(ip, ROUTE_PORT, 0, 0))
}

/// The route behind a [`route_addr`], if `addr` is one.
pub(crate) fn route_id_of(addr: &SocketAddr) -> Option<RouteId> {
    match addr {
        SocketAddr::V6(a) if a.ip().segments()[..6] == [PREFIX[0], 0, 0, 0, 0, 0] => {
            if a.port() != ROUTE_PORT {
                return None;
            }
            let s = a.ip().segments();
            Some(RouteId((u32::from(s[6]) << 16) | u32::from(s[7])))
        }
        _ => None,
    }
}

/// Whether an endpoint-internal address stands for a route.
pub(crate) fn is_route_addr(addr: &SocketAddr) -> bool {
    route_id_of(addr).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_paths_round_trip_through_their_address_and_are_never_direct() {
        for id in [1u32, 0x1234_5678, u32::MAX] {
            let p = Path::Route(RouteId(id));
            assert_eq!(Path::from_addr(p.to_addr()), p);
            assert!(p.is_relayed());
            assert_eq!(p.direct(), None);
            assert_eq!(p.route(), Some(RouteId(id)));
        }
        let real: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        assert_eq!(Path::from_addr(real), Path::Direct(real));
        let v4: SocketAddr = "192.0.2.1:1".parse().unwrap();
        assert!(!is_route_addr(&v4));
        assert_eq!(Path::from(v4).direct(), Some(v4));
        assert!(Path::Direct(v4) == v4);
        assert!(Path::Route(RouteId(1)) != route_addr(RouteId(1)));
        // The discard prefix on another port is not a route.
        let other: SocketAddr = "[100::5]:2".parse().unwrap();
        assert!(!is_route_addr(&other));
        assert_eq!(Path::Route(RouteId(0xab)).to_string(), "route 000000ab");
        assert_eq!(Path::Direct(v4).to_string(), "192.0.2.1:1");
    }
}
