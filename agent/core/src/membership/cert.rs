//! Node certificates: what the network CA says about one node
//! (`docs/membership.md` 2).
//!
//! ```text
//! off  len  field
//! 0    1    format version (1)
//! 1    1    n = network name length, 1..=32
//! 2    n    network name, [a-z0-9-]
//! +0   32   issuer: the CA's Ed25519 public key
//! +32  32   the node's Ed25519 public key
//! +64  1    m = node name length, 1..=63
//! +65  m    node name, [A-Za-z0-9._-]
//! +0   1    flags: bit 0 bridge (any source MAC), bit 1 introducer,
//!           bit 2 relay; the other bits are zero
//! +1   8    not before, seconds since the Unix epoch, big-endian
//! +9   8    not after (expiry), same; not before <= not after
//! +17  1    k = number of IP prefixes, 0..=32
//! +18  ...  k prefixes: family (4 or 6), address (4 or 16 bytes), prefix
//!           length; host bits zero; strictly ascending (IPv4 first)
//! end  64   Ed25519 signature by the issuer over
//!           "ringlan node certificate v1\0" || every byte before it
//! ```
//!
//! The encoding is canonical: a decoded certificate re-encodes to the same
//! bytes, and no two byte strings decode to the same certificate.

use std::time::Duration;

use ringlan_tunnel::crypto::{Certificate, NetworkName};
use ringlan_tunnel::{NodeId, SuiteSet};

use super::{
    encode_head, strict_key, CaKey, DecodeError, IpNet, Reader, Rejected, Signed, SignedBody,
};

/// Format version of node certificates.
pub const VERSION: u8 = 1;
/// Signature domain: prefixed to the body before signing.
pub const DOMAIN: &[u8] = b"ringlan node certificate v1\0";
/// Longest node name, in bytes.
pub const MAX_NODE_NAME: usize = 63;
/// Most IP prefixes in one certificate.
pub const MAX_IPS: usize = 32;

const FLAG_BRIDGE: u8 = 1 << 0;
const FLAG_INTRODUCER: u8 = 1 << 1;
const FLAG_RELAY: u8 = 1 << 2;
const FLAGS_KNOWN: u8 = FLAG_BRIDGE | FLAG_INTRODUCER | FLAG_RELAY;

/// Which source MACs a node's frames may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacPolicy {
    /// Only the MAC the agent derives from the node's public key
    /// (`interface.mac: auto`).
    Auto,
    /// Any unicast MAC: a node that bridges a site (`--bridge`).
    Any,
}

/// Roles the CA allows a node to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles {
    pub introducer: bool,
    pub relay: bool,
}

/// The signed content of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBody {
    pub network: NetworkName,
    /// The CA's public key. [`CertBody::sign`] sets it to the signer's.
    pub issuer: CaKey,
    /// The node's Ed25519 public key: the key that signs its sessions.
    pub node_key: [u8; 32],
    /// The node's name, 1..=63 bytes of `[A-Za-z0-9._-]`.
    pub name: String,
    /// Addresses the node may use as source (empty: no restriction).
    /// Strictly ascending, at most [`MAX_IPS`].
    pub ips: Vec<IpNet>,
    pub mac: MacPolicy,
    pub roles: Roles,
    /// Seconds since the Unix epoch.
    pub not_before: u64,
    /// Seconds since the Unix epoch; `not_before <= not_after`.
    pub not_after: u64,
}

/// Why bytes are not a certificate, or a body cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("certificate: {0}")]
    Decode(#[from] DecodeError),
    #[error("certificate: node name is not 1-63 characters of A-Z, a-z, 0-9, ., _ and -")]
    BadNodeName,
    #[error("certificate: unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    #[error("certificate: expires before it becomes valid")]
    ValidityReversed,
    #[error("certificate: more than {MAX_IPS} IP prefixes")]
    TooManyIps,
    #[error("certificate: IP family byte {0} is neither 4 nor 6")]
    BadIpFamily(u8),
    #[error("certificate: IP prefix length out of range or host bits set")]
    BadIpPrefix,
    #[error("certificate: IP prefixes not strictly ascending")]
    IpsNotCanonical,
}

/// Node names: as `node.name` in the agent's config.
pub fn valid_node_name(name: &[u8]) -> bool {
    (1..=MAX_NODE_NAME).contains(&name.len())
        && name
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A certificate with its signature.
pub type NodeCert = Signed<CertBody>;

impl SignedBody for CertBody {
    const DOMAIN: &'static [u8] = DOMAIN;
    type Error = CertError;

    fn issuer(&self) -> CaKey {
        self.issuer
    }

    fn set_issuer(&mut self, ca: CaKey) {
        self.issuer = ca;
    }

    fn network(&self) -> &NetworkName {
        &self.network
    }

    fn encode(&self) -> Result<Vec<u8>, CertError> {
        if !valid_node_name(self.name.as_bytes()) {
            return Err(CertError::BadNodeName);
        }
        if self.not_after < self.not_before {
            return Err(CertError::ValidityReversed);
        }
        if self.ips.len() > MAX_IPS {
            return Err(CertError::TooManyIps);
        }
        if !self.ips.windows(2).all(|w| w[0] < w[1]) {
            return Err(CertError::IpsNotCanonical);
        }
        let mut b = Vec::with_capacity(200 + 18 * self.ips.len());
        encode_head(&mut b, VERSION, &self.network, &self.issuer);
        b.extend_from_slice(&self.node_key);
        // The name was checked above.
        b.push(self.name.len() as u8);
        b.extend_from_slice(self.name.as_bytes());
        let mut flags = 0;
        if self.mac == MacPolicy::Any {
            flags |= FLAG_BRIDGE;
        }
        if self.roles.introducer {
            flags |= FLAG_INTRODUCER;
        }
        if self.roles.relay {
            flags |= FLAG_RELAY;
        }
        b.push(flags);
        b.extend_from_slice(&self.not_before.to_be_bytes());
        b.extend_from_slice(&self.not_after.to_be_bytes());
        b.push(self.ips.len() as u8);
        for ip in &self.ips {
            super::put_ip(&mut b, ip.addr());
            b.push(ip.prefix());
        }
        Ok(b)
    }

    fn decode(bytes: &[u8]) -> Result<CertBody, CertError> {
        let mut r = Reader::new(bytes);
        let (network, issuer) = r.head(VERSION)?;
        let node_key = r.array::<32>()?;
        let name = r.short_bytes()?;
        if !valid_node_name(name) {
            return Err(CertError::BadNodeName);
        }
        // Only ASCII passed the check above.
        let name = name.iter().map(|&c| char::from(c)).collect();
        let flags = r.u8()?;
        if flags & !FLAGS_KNOWN != 0 {
            return Err(CertError::UnknownFlags(flags & !FLAGS_KNOWN));
        }
        let not_before = r.u64()?;
        let not_after = r.u64()?;
        if not_after < not_before {
            return Err(CertError::ValidityReversed);
        }
        let count = usize::from(r.u8()?);
        if count > MAX_IPS {
            return Err(CertError::TooManyIps);
        }
        // Each prefix takes at least 6 bytes: never allocate beyond the input.
        let mut ips: Vec<IpNet> = Vec::with_capacity(count.min(r.remaining() / 6));
        for _ in 0..count {
            let addr = r.ip().map_err(|e| match e {
                Ok(family) => CertError::BadIpFamily(family),
                Err(e) => e.into(),
            })?;
            let ip = IpNet::new(addr, r.u8()?).ok_or(CertError::BadIpPrefix)?;
            if ips.last().is_some_and(|last| *last >= ip) {
                return Err(CertError::IpsNotCanonical);
            }
            ips.push(ip);
        }
        r.finish()?;
        if strict_key(&node_key).is_none() {
            return Err(DecodeError::BadKey("node key").into());
        }
        Ok(CertBody {
            network,
            issuer,
            node_key,
            name,
            ips,
            mac: if flags & FLAG_BRIDGE != 0 {
                MacPolicy::Any
            } else {
                MacPolicy::Auto
            },
            roles: Roles {
                introducer: flags & FLAG_INTRODUCER != 0,
                relay: flags & FLAG_RELAY != 0,
            },
            not_before,
            not_after,
        })
    }
}

impl NodeCert {
    /// The whole check a member makes (without revocation): signed by `ca`,
    /// for `network`, and valid at `now` (seconds since the Unix epoch)
    /// give or take `skew` (normally [`super::CLOCK_SKEW`]).
    pub fn check(
        &self,
        ca: &CaKey,
        network: &NetworkName,
        now: u64,
        skew: Duration,
    ) -> Result<(), Rejected> {
        self.check_origin(ca, network)?;
        self.check_time(now, skew)
    }

    /// Valid at `now` give or take `skew`.
    pub fn check_time(&self, now: u64, skew: Duration) -> Result<(), Rejected> {
        let skew = skew.as_secs();
        if now.saturating_add(skew) < self.body().not_before {
            return Err(Rejected::NotYetValid(self.body().not_before));
        }
        if now.saturating_sub(skew) > self.body().not_after {
            return Err(Rejected::Expired(self.body().not_after));
        }
        Ok(())
    }

    /// The node id of the certified key when it offers every AEAD suite (as
    /// the agent does): `None` only for a key the decoder would not accept.
    pub fn node_id(&self) -> Option<NodeId> {
        Certificate::for_public_key(&self.body().node_key, &self.body().network, SuiteSet::ALL)
            .ok()
            .map(|c| c.node_id())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::membership::{parse_hex, CLOCK_SKEW};
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;
    use std::net::IpAddr;

    pub(crate) fn ca() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    pub(crate) fn node_key(seed: u8) -> [u8; 32] {
        SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes()
    }

    /// The node of the test vectors: the public key of RFC 8032 7.1 TEST 2.
    pub(crate) const NODE_KEY: &str =
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";

    /// The certificate of the test vectors (`docs/membership.md` 6), unsigned.
    pub(crate) fn body() -> CertBody {
        CertBody {
            network: NetworkName::new("home").unwrap(),
            issuer: CaKey([0; 32]),
            node_key: parse_hex(NODE_KEY).unwrap(),
            name: "laptop".into(),
            ips: vec![
                "10.77.0.2/32".parse().unwrap(),
                "fd77::2/128".parse().unwrap(),
            ],
            mac: MacPolicy::Auto,
            roles: Roles {
                introducer: true,
                relay: false,
            },
            not_before: 1_800_000_000,
            not_after: 1_831_536_000,
        }
    }

    #[test]
    fn sign_decode_check() {
        let cert = body().sign(&ca()).unwrap();
        let again = NodeCert::decode(cert.as_bytes()).unwrap();
        assert_eq!(again, cert);
        let pk = CaKey(ca().verifying_key().to_bytes());
        let home = NetworkName::new("home").unwrap();
        let t = 1_800_000_000 + 86_400;
        assert_eq!(cert.check(&pk, &home, t, CLOCK_SKEW), Ok(()));
        let other = CaKey(node_key(9));
        assert_eq!(
            cert.check(&other, &home, t, CLOCK_SKEW),
            Err(Rejected::WrongIssuer(pk))
        );
        let work = NetworkName::new("work").unwrap();
        assert_eq!(
            cert.check(&pk, &work, t, CLOCK_SKEW),
            Err(Rejected::WrongNetwork(home.clone()))
        );
        // Signed by another key that claims to be the CA: bad signature.
        let forged = body().sign(&SigningKey::from_bytes(&[8; 32])).unwrap();
        let mut claimed = forged.body().clone();
        claimed.issuer = pk;
        let mut bytes = claimed.encode().unwrap();
        bytes.extend_from_slice(forged.signature());
        let forged = NodeCert::decode(&bytes).unwrap();
        assert_eq!(
            forged.check(&pk, &home, t, CLOCK_SKEW),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn validity_with_skew() {
        let cert = body().sign(&ca()).unwrap();
        let (nb, na) = (cert.body().not_before, cert.body().not_after);
        let skew = Duration::from_secs(300);
        assert_eq!(cert.check_time(nb - 300, skew), Ok(()));
        assert_eq!(
            cert.check_time(nb - 301, skew),
            Err(Rejected::NotYetValid(nb))
        );
        assert_eq!(cert.check_time(na + 300, skew), Ok(()));
        assert_eq!(cert.check_time(na + 301, skew), Err(Rejected::Expired(na)));
        assert_eq!(cert.check_time(nb, Duration::ZERO), Ok(()));
        assert_eq!(cert.check_time(na, Duration::ZERO), Ok(()));
        assert_eq!(
            cert.check_time(na + 1, Duration::ZERO),
            Err(Rejected::Expired(na))
        );
        // No overflow at the ends of the range.
        assert!(cert.check_time(u64::MAX, Duration::MAX).is_ok());
        assert!(cert.check_time(0, Duration::MAX).is_ok());
        assert!(cert.check_time(u64::MAX, Duration::ZERO).is_err());
    }

    #[test]
    fn truncated_extended_or_flipped_fails() {
        let cert = body().sign(&ca()).unwrap();
        let pk = CaKey(ca().verifying_key().to_bytes());
        let home = NetworkName::new("home").unwrap();
        let t = 1_800_000_000 + 86_400;
        crate::membership::signed::assert_tamper_evident(&cert, |c| {
            c.check(&pk, &home, t, CLOCK_SKEW).is_ok()
        });
    }

    #[test]
    fn malformed() {
        let body_bytes = body().encode().unwrap();
        let mut v = body_bytes.clone();
        v[0] = 2;
        assert_eq!(
            CertBody::decode(&v),
            Err(DecodeError::UnsupportedVersion(2).into())
        );
        let mut e = body();
        e.ips.reverse();
        assert_eq!(e.encode(), Err(CertError::IpsNotCanonical));
        e.ips = vec!["10.0.0.0/8".parse().unwrap(); 2];
        assert_eq!(e.encode(), Err(CertError::IpsNotCanonical));
        e.ips.clear();
        e.name = "a b".into();
        assert_eq!(e.encode(), Err(CertError::BadNodeName));
        e.name = "x".repeat(64);
        assert_eq!(e.encode(), Err(CertError::BadNodeName));
        e.name = "x".repeat(63);
        e.not_after = e.not_before - 1;
        assert_eq!(e.encode(), Err(CertError::ValidityReversed));
        // The issuer must be a usable key (all-zero is of small order).
        assert_eq!(
            CertBody::decode(&body_bytes),
            Err(DecodeError::BadKey("issuer").into())
        );
    }

    fn arb_ipnet() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, p)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
                let a = u32::from_be_bytes(a) & mask;
                IpNet::new(IpAddr::V4(a.into()), p).unwrap()
            }),
            (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, p)| {
                let mask = u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0);
                let a = u128::from_be_bytes(a) & mask;
                IpNet::new(IpAddr::V6(a.into()), p).unwrap()
            }),
        ]
    }

    pub(crate) fn arb_network() -> impl Strategy<Value = NetworkName> {
        "[a-z0-9-]{1,32}".prop_map(|s| NetworkName::new(&s).unwrap())
    }

    fn arb_body() -> impl Strategy<Value = CertBody> {
        (
            arb_network(),
            1u8..=255,
            "[A-Za-z0-9._-]{1,63}",
            proptest::collection::btree_set(arb_ipnet(), 0..=MAX_IPS),
            any::<(bool, bool, bool)>(),
            any::<(u64, u64)>(),
        )
            .prop_map(
                |(network, seed, name, ips, (bridge, intro, relay), (a, b))| CertBody {
                    network,
                    issuer: CaKey(node_key(seed.wrapping_add(1))),
                    node_key: node_key(seed),
                    name,
                    ips: ips.into_iter().collect(),
                    mac: if bridge {
                        MacPolicy::Any
                    } else {
                        MacPolicy::Auto
                    },
                    roles: Roles {
                        introducer: intro,
                        relay,
                    },
                    not_before: a.min(b),
                    not_after: a.max(b),
                },
            )
    }

    proptest! {
        #[test]
        fn body_round_trip(body in arb_body()) {
            let bytes = body.encode().unwrap();
            let again = CertBody::decode(&bytes).unwrap();
            prop_assert_eq!(&again, &body);
            prop_assert_eq!(again.encode().unwrap(), bytes);
        }

        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(c) = NodeCert::decode(&bytes) {
                let mut again = c.body().encode().unwrap();
                again.extend_from_slice(c.signature());
                prop_assert_eq!(again, bytes);
            }
        }
    }
}
