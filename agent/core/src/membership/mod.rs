//! Network membership by certificate: a network CA signs node certificates
//! and revocation lists (`docs/membership.md`).
//!
//! This module is the codec and the checks, nothing else: it never reads
//! the clock (`now` is passed in as seconds since the Unix epoch), a file
//! or the network. Admission in the handshake, spreading revocation lists
//! and binding frames to their sender build on it later (issue 11).
//!
//! - [`cert`]: [`NodeCert`], what the CA says about one node;
//! - [`revocation`]: [`RevocationList`], which nodes the CA has removed;
//! - [`armor`]: the text form of both, for files and pasting;
//! - [`Signed`] / [`SignedBody`]: what both share (a body, then the CA's
//!   signature over a domain string and the body).
//!
//! How a certificate names a node: by its Ed25519 public key, the key
//! whose RTMFP certificate signs the session (`docs/crypto-profile.md` 3).
//! The node id is not in the certificate: it is the first 128 bits of
//! SHA-256 of the node's RTMFP certificate, which also holds the network
//! name and the AEAD suites the node offers, so one key has one node id per
//! network and suite set. [`NodeCert::node_id`] gives the id under the
//! suites an agent offers ([`SuiteSet::ALL`]). Admission compares keys.
//!
//! Both encodings are canonical (one value, one byte string), decoded by
//! total functions (any input gives a value or an error; lengths checked,
//! allocation bounded by the input) and signed by the CA over a
//! domain-separated message, so a signature on one kind of object is never
//! valid for another.
//!
//! [`SuiteSet::ALL`]: ringlan_tunnel::SuiteSet::ALL

pub mod armor;
pub mod cert;
pub mod revocation;
mod signed;
#[cfg(test)]
mod vectors;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use ringlan_tunnel::crypto::NetworkName;

pub use armor::{ArmorError, Kind};
pub use cert::{CertBody, CertError, MacPolicy, NodeCert, Roles};
pub use revocation::{ListBody, ListError, RevocationList, Revoked};
pub use signed::{Signed, SignedBody};

/// Clock skew tolerated when checking validity periods: a certificate is
/// accepted from `not_before - CLOCK_SKEW` until `not_after + CLOCK_SKEW`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The network CA's Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaKey(pub [u8; 32]);

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaKey({})", hex(&self.0))
    }
}

/// Errors shared by both decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated")]
    Truncated,
    #[error("trailing bytes after the encoding")]
    TrailingBytes,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    #[error("malformed network name")]
    BadNetworkName,
    #[error("{0} is not a valid Ed25519 public key")]
    BadKey(&'static str),
}

/// Why a well-formed certificate or revocation list is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("issued by another CA ({0:?})")]
    WrongIssuer(CaKey),
    #[error("bad signature")]
    BadSignature,
    #[error("for another network (`{0}`)")]
    WrongNetwork(NetworkName),
    #[error("not valid before {}", format_utc(*.0))]
    NotYetValid(u64),
    #[error("expired at {}", format_utc(*.0))]
    Expired(u64),
}

/// Every signed object starts with its format version, the network name
/// (a length byte, 1..=32, and the name) and the issuer.
pub(crate) fn encode_head(b: &mut Vec<u8>, version: u8, network: &NetworkName, issuer: &CaKey) {
    let net = network.as_bytes();
    b.push(version);
    // NetworkName guarantees 1..=32 bytes.
    b.push(net.len() as u8);
    b.extend_from_slice(net);
    b.extend_from_slice(&issuer.0);
}

/// An IP prefix in a certificate: the addresses a node may use as source.
/// Canonical: the host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `None` when the prefix is too long for the family or host bits are
    /// set (`10.0.0.1/24`: say `10.0.0.1/32` or `10.0.0.0/24`).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let net = IpNet { addr, prefix };
        (prefix <= net.max_prefix() && net.network() == addr).then_some(net)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn max_prefix(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// `addr` with the host bits cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }

    /// Whether `ip` is inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        IpNet {
            addr: ip,
            prefix: self.prefix,
        }
        .network()
            == self.addr
            && ip.is_ipv4() == self.addr.is_ipv4()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for IpNet {
    type Err = String;
    /// `ADDR/PREFIX`; host bits must be zero.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` has no prefix length (e.g. 10.77.0.2/32)"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("`{p}` is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("`{s}`: prefix length {prefix} is over {max}"));
        }
        IpNet::new(addr, prefix).ok_or_else(|| {
            let net = IpNet { addr, prefix }.network();
            format!("`{s}` has host bits set: say {addr}/{max} for one address or {net}/{prefix} for the subnet")
        })
    }
}

/// An IP address as the certificate and the member record write it: a
/// family byte (4 or 6) and the address.
pub(crate) fn put_ip(b: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            b.push(4);
            b.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b.push(6);
            b.extend_from_slice(&a.octets());
        }
    }
}

/// Reads a byte string front to back; every read checks the length.
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Reader(b)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.0.split_first().ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (a, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*a)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_be_bytes)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(b)
    }

    /// The head written by [`encode_head`]; the issuer must be a valid key.
    pub(crate) fn head(&mut self, version: u8) -> Result<(NetworkName, CaKey), DecodeError> {
        let v = self.u8()?;
        if v != version {
            return Err(DecodeError::UnsupportedVersion(v));
        }
        let network = NetworkName::from_bytes(self.short_bytes()?)
            .map_err(|_| DecodeError::BadNetworkName)?;
        let issuer = self.array::<32>()?;
        if strict_key(&issuer).is_none() {
            return Err(DecodeError::BadKey("issuer"));
        }
        Ok((network, CaKey(issuer)))
    }

    /// An address written by [`put_ip`]; `Err(Ok(family))` for an unknown
    /// family byte.
    pub(crate) fn ip(&mut self) -> Result<IpAddr, Result<u8, DecodeError>> {
        Ok(match self.u8().map_err(Err)? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>().map_err(Err)?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>().map_err(Err)?)),
            f => return Err(Ok(f)),
        })
    }

    /// A length byte and that many bytes.
    pub(crate) fn short_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u8()?;
        self.bytes(usize::from(n))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// An Ed25519 public key as the decoders accept it: a point on the curve,
/// canonically encoded, not of small order (one key, one encoding).
pub(crate) fn strict_key(b: &[u8; 32]) -> Option<VerifyingKey> {
    let key = VerifyingKey::from_bytes(b).ok()?;
    (!key.is_weak() && key.to_edwards().compress().to_bytes() == *b).then_some(key)
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Parses hex of exactly `N` bytes (either case).
pub fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the Unix epoch (proleptic
/// Gregorian calendar, H. Hinnant's `civil_from_days`).
pub fn format_utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // days fits i64: u64::MAX / 86400 < 2^48.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipnet_rules() {
        let n: IpNet = "10.77.0.0/24".parse().unwrap();
        assert!(n.contains("10.77.0.9".parse().unwrap()));
        assert!(!n.contains("10.78.0.9".parse().unwrap()));
        assert!(!n.contains("::a4d:9".parse().unwrap()));
        let e = "10.77.0.2/24".parse::<IpNet>().unwrap_err();
        assert!(
            e.contains("10.77.0.2/32") && e.contains("10.77.0.0/24"),
            "{e}"
        );
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("fd00::/129".parse::<IpNet>().is_err());
        assert!("0.0.0.0/0".parse::<IpNet>().is_ok());
        assert!("fd00::1/128".parse::<IpNet>().is_ok());
        assert_eq!("fd00::/8".parse::<IpNet>().unwrap().to_string(), "fd00::/8");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_798_761_599), "2026-12-31 23:59:59 UTC");
        // Does not panic at the end of the range.
        assert!(!format_utc(u64::MAX).is_empty());
    }

    #[test]
    fn hex_round_trip() {
        let b: [u8; 16] = core::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(parse_hex::<16>(&hex(&b)), Some(b));
        assert_eq!(parse_hex::<16>(&hex(&b).to_uppercase()), Some(b));
        assert_eq!(parse_hex::<16>("00"), None);
        assert_eq!(parse_hex::<1>("+1"), None);
    }
}
