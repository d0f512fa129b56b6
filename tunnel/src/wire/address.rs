//! Internet Socket Address (RFC 7016 section 2.1.5).
//!
//! One flag byte (`IP6`, five reserved bits, two origin bits), the IPv4 or
//! IPv6 address and the port, all big endian. Reserved bits are written as
//! zero and ignored when read. IPv6 flow info and scope id are not carried.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::cursor::{Reader, Writer};
use super::WireError;

const FLAG_INET6: u8 = 0x80;
const ORIGIN_MASK: u8 = 0x03;

/// Origin tag of an address (section 2.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressOrigin {
    Unknown = 0,
    Local = 1,
    Reflexive = 2,
    Relay = 3,
}

impl AddressOrigin {
    /// The two origin bits.
    pub fn from_bits(bits: u8) -> Self {
        match bits & ORIGIN_MASK {
            0 => AddressOrigin::Unknown,
            1 => AddressOrigin::Local,
            2 => AddressOrigin::Reflexive,
            _ => AddressOrigin::Relay,
        }
    }
}

/// An address with its origin tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    pub addr: SocketAddr,
    pub origin: AddressOrigin,
}

impl Address {
    pub fn new(addr: SocketAddr, origin: AddressOrigin) -> Self {
        Address { addr, origin }
    }

    /// Decode an Address at the start of `buf`; returns it and the bytes
    /// consumed (7 for IPv4, 19 for IPv6).
    pub fn parse(buf: &[u8]) -> Result<(Address, usize), WireError> {
        let mut r = Reader::new(buf);
        let address = Self::read(&mut r)?;
        Ok((address, buf.len() - r.len()))
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Address, WireError> {
        let flags = r.u8()?;
        let ip = if flags & FLAG_INET6 != 0 {
            IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))
        };
        let port = r.u16()?;
        Ok(Address {
            addr: SocketAddr::new(ip, port),
            origin: AddressOrigin::from_bits(flags),
        })
    }

    /// Encoded size: 7 bytes for IPv4, 19 for IPv6.
    pub fn encoded_len(&self) -> usize {
        match self.addr {
            SocketAddr::V4(_) => 7,
            SocketAddr::V6(_) => 19,
        }
    }

    /// Encode at the start of `out`; returns the bytes written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        if out.len() < self.encoded_len() {
            return Err(WireError::BufferTooSmall);
        }
        let mut w = Writer::new(out);
        self.write(&mut w)?;
        Ok(w.pos())
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        let origin = self.origin as u8;
        match self.addr.ip() {
            IpAddr::V4(ip) => {
                w.u8(origin)?;
                w.bytes(&ip.octets())?;
            }
            IpAddr::V6(ip) => {
                w.u8(FLAG_INET6 | origin)?;
                w.bytes(&ip.octets())?;
            }
        }
        w.u16(self.addr.port())
    }
}

/// Iterator over a raw list of back-to-back Addresses, such as the
/// redirect destinations of a Redirect chunk (RFC 7016 2.3.5). An address
/// cut short yields one `Err` and ends the iteration.
#[derive(Debug, Clone)]
pub struct AddressIter<'a> {
    rest: Reader<'a>,
}

impl<'a> AddressIter<'a> {
    pub fn new(list: &'a [u8]) -> Self {
        AddressIter {
            rest: Reader::new(list),
        }
    }
}

impl Iterator for AddressIter<'_> {
    type Item = Result<Address, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match Address::read(&mut self.rest) {
            Ok(a) => Some(Ok(a)),
            Err(e) => {
                self.rest = Reader::new(&[]);
                Some(Err(e))
            }
        }
    }
}

/// Check that `list` is a whole number of well-formed Addresses.
pub(crate) fn validate_address_list(list: &[u8]) -> Result<(), WireError> {
    for a in AddressIter::new(list) {
        a?;
    }
    Ok(())
}

/// Encoded size of a list of addresses.
pub fn address_list_encoded_len(addrs: &[Address]) -> usize {
    addrs.iter().map(Address::encoded_len).sum()
}

/// Write `addrs` back to back at the start of `out` (the raw form carried by
/// [`super::Chunk::Redirect`]); returns the bytes written.
pub fn write_address_list(out: &mut [u8], addrs: &[Address]) -> Result<usize, WireError> {
    if out.len() < address_list_encoded_len(addrs) {
        return Err(WireError::BufferTooSmall);
    }
    let mut w = Writer::new(out);
    for a in addrs {
        a.write(&mut w)?;
    }
    Ok(w.pos())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{SocketAddrV4, SocketAddrV6};

    #[test]
    fn golden() {
        let v4 = Address::new("192.0.2.1:4910".parse().unwrap(), AddressOrigin::Reflexive);
        let bytes = [0x02, 192, 0, 2, 1, 0x13, 0x2e];
        let mut out = [0xaa; 7];
        assert_eq!(v4.emit(&mut out), Ok(7));
        assert_eq!(out, bytes);
        assert_eq!(Address::parse(&bytes), Ok((v4, 7)));

        let v6 = Address::new("[2001:db8::1]:80".parse().unwrap(), AddressOrigin::Relay);
        let mut out = [0xaa; 19];
        assert_eq!(v6.emit(&mut out), Ok(19));
        assert_eq!(out[0], 0x83);
        assert_eq!(&out[1..3], &[0x20, 0x01]);
        assert_eq!(&out[17..], &[0, 80]);
        assert_eq!(Address::parse(&out), Ok((v6, 19)));
    }

    #[test]
    fn reserved_bits_ignored() {
        let bytes = [0x7d, 10, 0, 0, 1, 0, 1];
        let (a, n) = Address::parse(&bytes).unwrap();
        assert_eq!(n, 7);
        assert_eq!(a.origin, AddressOrigin::Local);
        let mut out = [0u8; 7];
        a.emit(&mut out).unwrap();
        assert_eq!(out[0], 0x01);
    }

    #[test]
    fn truncation() {
        let v6 = Address::new("[2001:db8::1]:80".parse().unwrap(), AddressOrigin::Local);
        let mut out = [0u8; 19];
        v6.emit(&mut out).unwrap();
        for cut in 0..19 {
            assert_eq!(Address::parse(&out[..cut]), Err(WireError::Truncated));
            assert_eq!(
                v6.emit(&mut [0u8; 19][..cut]),
                Err(WireError::BufferTooSmall)
            );
        }
        let mut it = AddressIter::new(&out[..10]);
        assert_eq!(it.next(), Some(Err(WireError::Truncated)));
        assert_eq!(it.next(), None);
    }

    pub(crate) fn arb_address() -> impl Strategy<Value = Address> {
        let origin = (0u8..4).prop_map(AddressOrigin::from_bits);
        let v4 = (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::V4(SocketAddrV4::new(ip.into(), p)));
        let v6 = (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::V6(SocketAddrV6::new(ip.into(), p, 0, 0)));
        (prop_oneof![v4, v6], origin).prop_map(|(addr, origin)| Address { addr, origin })
    }

    proptest! {
        #[test]
        fn round_trip(addrs in proptest::collection::vec(arb_address(), 0..5)) {
            let len = address_list_encoded_len(&addrs);
            let mut buf = vec![0xaa; len];
            prop_assert_eq!(write_address_list(&mut buf, &addrs), Ok(len));
            let got: Vec<Address> = AddressIter::new(&buf).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(got, addrs);
        }
    }
}
