//! Endpoint identity (RFC 7016 3.2): Ed25519 identities, certificates,
//! fingerprints and node ids (`docs/crypto-profile.md` 3), Endpoint Discriminators,
//! and the glare rule (RFC 7016 3.5.1.3).

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use super::network::{NetworkName, MAX_NAME_LEN};
use super::{sha256, SuiteSet};
use crate::{NodeId, Rng};

/// Certificate format version this profile emits and accepts.
pub const CERT_VERSION: u8 = 1;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Fixed part of a certificate: version, suites, public key, name length.
const CERT_FIXED_LEN: usize = 1 + 1 + 32 + 1;
/// Longest certificate.
pub const MAX_CERT_LEN: usize = CERT_FIXED_LEN + MAX_NAME_LEN;

/// EPD type byte: a certificate fingerprint follows (the canonical EPD).
const EPD_ANY: u8 = 0x00;
const EPD_FINGERPRINT: u8 = 0x01;
/// EPD type byte: a node id follows.
const EPD_NODE: u8 = 0x02;
/// Length of a canonical (fingerprint) Endpoint Discriminator.
pub const CANONICAL_EPD_LEN: usize = 1 + 32;
/// Length of a node-id Endpoint Discriminator.
pub const NODE_EPD_LEN: usize = 1 + 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("certificate is truncated")]
    Truncated,
    #[error("certificate has trailing bytes")]
    TrailingBytes,
    #[error("unsupported certificate version {0}")]
    UnsupportedVersion(u8),
    #[error("certificate network name is malformed")]
    BadName,
    #[error("certificate is for another network")]
    WrongNetwork,
    #[error("certificate public key is not a valid Ed25519 key")]
    BadPublicKey,
    #[error("certificate does not offer ChaCha20-Poly1305")]
    NoMandatorySuite,
}

/// A node's certificate (RFC 7016 3.2; format in `docs/crypto-profile.md`):
///
/// ```text
/// 0      1  version (1)
/// 1      1  suites bitmap (bit 0 ChaCha20-Poly1305, mandatory; bit 1 AES-256-GCM)
/// 2      32 Ed25519 public key
/// 34     1  n = network name length, 1..=32
/// 35     n  network name, [a-z0-9-]
/// ```
///
/// The encoding is exact: no trailing bytes, so each identity has one
/// certificate, one fingerprint and one node id.
#[derive(Clone)]
pub struct Certificate {
    bytes: Vec<u8>,
    key: VerifyingKey,
    suites: SuiteSet,
    network: NetworkName,
    fingerprint: [u8; 32],
}

impl Certificate {
    /// Parse `bytes` and require that the certificate belongs to network
    /// `ours`. This is the profile's authenticity test (RFC 7016 3.2):
    /// network membership itself is proven by the network secret, which
    /// keys the startup packets and the session keys.
    pub fn parse(bytes: &[u8], ours: &NetworkName) -> Result<Certificate, CertError> {
        let cert = Certificate::parse_any_network(bytes)?;
        if cert.network != *ours {
            return Err(CertError::WrongNetwork);
        }
        Ok(cert)
    }

    /// Parse `bytes` without checking the network name. Total: any input
    /// gives a certificate or an error.
    pub fn parse_any_network(bytes: &[u8]) -> Result<Certificate, CertError> {
        let (&version, rest) = bytes.split_first().ok_or(CertError::Truncated)?;
        if version != CERT_VERSION {
            return Err(CertError::UnsupportedVersion(version));
        }
        let (&suite_bits, rest) = rest.split_first().ok_or(CertError::Truncated)?;
        let (key_bytes, rest) = rest.split_first_chunk::<32>().ok_or(CertError::Truncated)?;
        let (&name_len, rest) = rest.split_first().ok_or(CertError::Truncated)?;
        let name_len = usize::from(name_len);
        if rest.len() < name_len {
            return Err(CertError::Truncated);
        }
        if rest.len() > name_len {
            return Err(CertError::TrailingBytes);
        }
        let network = NetworkName::from_bytes(rest).map_err(|_| CertError::BadName)?;
        let suites = SuiteSet::from_bits(suite_bits).certified();
        if !suites.contains(super::AeadSuite::ChaCha20Poly1305) {
            return Err(CertError::NoMandatorySuite);
        }
        let key = VerifyingKey::from_bytes(key_bytes).map_err(|_| CertError::BadPublicKey)?;
        // Only canonical, non-small-order encodings: one key, one certificate.
        if key.is_weak() || key.as_bytes() != key_bytes {
            return Err(CertError::BadPublicKey);
        }
        Ok(Certificate {
            bytes: bytes.to_vec(),
            key,
            suites,
            network,
            fingerprint: sha256(&[bytes]),
        })
    }

    /// The certificate a node with Ed25519 public key `key` presents in
    /// `network` when it offers `suites` (ChaCha20-Poly1305 is always
    /// added), e.g. to learn the node id of a key a network CA signed.
    pub fn for_public_key(
        key: &[u8; 32],
        network: &NetworkName,
        suites: SuiteSet,
    ) -> Result<Certificate, CertError> {
        let key = VerifyingKey::from_bytes(key).map_err(|_| CertError::BadPublicKey)?;
        if key.is_weak() {
            return Err(CertError::BadPublicKey);
        }
        let suites = suites.with(super::AeadSuite::ChaCha20Poly1305);
        Ok(Certificate::build(key, network, suites))
    }

    /// `suites` is cut to what a certificate carries ([`SuiteSet::certified`]).
    fn build(key: VerifyingKey, network: &NetworkName, suites: SuiteSet) -> Certificate {
        let suites = suites.certified();
        let name = network.as_bytes();
        let mut bytes = Vec::with_capacity(CERT_FIXED_LEN + name.len());
        bytes.push(CERT_VERSION);
        bytes.push(suites.bits());
        bytes.extend_from_slice(key.as_bytes());
        // NetworkName guarantees 1..=32 bytes.
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name);
        let fingerprint = sha256(&[&bytes]);
        Certificate {
            bytes,
            key,
            suites,
            network: network.clone(),
            fingerprint,
        }
    }

    /// The encoded certificate, as carried in RHello / IIKeying.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn network(&self) -> &NetworkName {
        &self.network
    }

    pub fn suites(&self) -> SuiteSet {
        self.suites
    }

    /// SHA-256 of the certificate bytes.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The first 128 bits of the fingerprint, big-endian.
    pub fn node_id(&self) -> NodeId {
        node_id_of(&self.fingerprint)
    }

    /// Verify an Ed25519 signature by this certificate's owner over `msg`
    /// (RFC 7016 3.2). Uses strict verification (no malleable or small-order
    /// signatures). `sig` of the wrong length is rejected.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <&[u8; SIGNATURE_LEN]>::try_from(sig) else {
            return false;
        };
        self.key
            .verify_strict(msg, &Signature::from_bytes(sig))
            .is_ok()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for Certificate {}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("node_id", &self.node_id())
            .field("network", &self.network)
            .field("suites", &self.suites)
            .finish()
    }
}

fn node_id_of(fingerprint: &[u8; 32]) -> NodeId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&fingerprint[..16]);
    NodeId::from_bytes(id)
}

/// A node's own identity: its Ed25519 signing key and certificate, and
/// the AEAD suites it offers and accepts in session keying (its
/// certificate's, and AEGIS-128L where the CPU runs it in hardware).
/// The signing key is zeroized on drop.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    cert: Certificate,
    session_suites: SuiteSet,
}

impl Identity {
    /// The identity for a stored 32-byte Ed25519 secret key (the agent's key
    /// file), offering every AEAD suite this machine runs well.
    pub fn from_secret_key_bytes(secret: [u8; 32], network: &NetworkName) -> Identity {
        Identity::with_suites(secret, network, SuiteSet::ALL)
    }

    /// As [`Identity::from_secret_key_bytes`] with an explicit suite set;
    /// ChaCha20-Poly1305 is always added, AEGIS-128L dropped on a machine
    /// without AES instructions ([`super::aegis_in_hardware`]).
    pub fn with_suites(secret: [u8; 32], network: &NetworkName, suites: SuiteSet) -> Identity {
        let secret = Zeroizing::new(secret);
        let key = SigningKey::from_bytes(&secret);
        let mut suites = suites.with(super::AeadSuite::ChaCha20Poly1305);
        if !super::aegis_in_hardware() {
            suites = suites.without(super::AeadSuite::Aegis128L);
        }
        let cert = Certificate::build(key.verifying_key(), network, suites);
        Identity {
            key,
            cert,
            session_suites: suites,
        }
    }

    /// The suites this node offers in its SKIC and accepts in an initiator's
    /// (`docs/crypto-profile.md` 2): its certificate's, plus AEGIS-128L
    /// when asked for and run in hardware.
    pub fn session_suites(&self) -> SuiteSet {
        self.session_suites
    }

    /// A fresh identity from 32 bytes drawn from `rng`.
    pub fn generate(rng: &mut Rng, network: &NetworkName) -> Identity {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill(&mut secret[..]);
        Identity::from_secret_key_bytes(*secret, network)
    }

    /// The 32-byte Ed25519 secret key, for writing the key file.
    pub fn secret_key_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    pub fn certificate(&self) -> &Certificate {
        &self.cert
    }

    pub fn node_id(&self) -> NodeId {
        self.cert.node_id()
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        self.cert.fingerprint()
    }

    /// Ed25519 signature over `msg` (RFC 7016 3.2). Protocol signatures go
    /// through [`super::keying::sign_iikeying`] / [`super::keying::sign_rikeying`],
    /// which add the domain-separation prefix.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(msg).to_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EpdError {
    #[error("endpoint discriminator is empty")]
    Empty,
    #[error("unknown endpoint discriminator type {0:#04x}")]
    UnknownType(u8),
    #[error("endpoint discriminator has the wrong length for its type")]
    BadLength,
}

/// An Endpoint Discriminator (RFC 7016 3.2): a type byte and a value.
///
/// - `0x01 || fingerprint (32 bytes)`: selects exactly one certificate. The
///   canonical EPD.
/// - `0x02 || node id (16 bytes, big-endian)`: selects the certificate whose
///   node id is this (what the overlay knows of a ring position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Epd {
    Fingerprint([u8; 32]),
    Node(NodeId),
    /// `0x00` alone: any member of the network reachable at the address the
    /// IHello was sent to. Used to bootstrap to an introducer known only by
    /// address; the RHello's certificate then names who answered.
    Any,
}

impl Epd {
    /// Total: any bytes give an EPD or an error.
    pub fn parse(bytes: &[u8]) -> Result<Epd, EpdError> {
        let (&kind, value) = bytes.split_first().ok_or(EpdError::Empty)?;
        match kind {
            EPD_ANY if value.is_empty() => Ok(Epd::Any),
            EPD_ANY => Err(EpdError::BadLength),
            EPD_FINGERPRINT => <[u8; 32]>::try_from(value)
                .map(Epd::Fingerprint)
                .map_err(|_| EpdError::BadLength),
            EPD_NODE => <[u8; 16]>::try_from(value)
                .map(|b| Epd::Node(NodeId::from_bytes(b)))
                .map_err(|_| EpdError::BadLength),
            other => Err(EpdError::UnknownType(other)),
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            Epd::Fingerprint(fp) => canonical_epd_of(fp).to_vec(),
            Epd::Node(id) => epd_for_node(*id).to_vec(),
            Epd::Any => vec![EPD_ANY],
        }
    }

    /// Whether this EPD selects `cert` (RFC 7016 3.2).
    pub fn selects(&self, cert: &Certificate) -> bool {
        match self {
            Epd::Fingerprint(fp) => *fp == cert.fingerprint(),
            Epd::Node(id) => *id == cert.node_id(),
            Epd::Any => true,
        }
    }
}

fn canonical_epd_of(fp: &[u8; 32]) -> [u8; CANONICAL_EPD_LEN] {
    let mut out = [0u8; CANONICAL_EPD_LEN];
    out[0] = EPD_FINGERPRINT;
    out[1..].copy_from_slice(fp);
    out
}

/// The Canonical Endpoint Discriminator of `cert` (RFC 7016 3.2):
/// `0x01 || SHA-256(cert)`. Distinct identities have distinct ones.
pub fn canonical_epd(cert: &Certificate) -> [u8; CANONICAL_EPD_LEN] {
    canonical_epd_of(&cert.fingerprint())
}

/// The EPD that selects the node with id `id`: `0x02 || id`.
pub fn epd_for_node(id: NodeId) -> [u8; NODE_EPD_LEN] {
    let mut out = [0u8; NODE_EPD_LEN];
    out[0] = EPD_NODE;
    out[1..].copy_from_slice(&id.to_bytes());
    out
}

/// Whether the encoded EPD `epd` selects `cert` (RFC 7016 3.2). A malformed
/// EPD selects nothing. To test whether an EPD selects the local endpoint,
/// pass the local identity's certificate.
pub fn epd_matches(cert: &Certificate, epd: &[u8]) -> bool {
    Epd::parse(epd).is_ok_and(|e| e.selects(cert))
}

/// The glare rule (RFC 7016 3.2 "prevail", 3.5.1.3): on receiving an
/// IIKeying with certificate `far` while opening a session to that address,
/// the far end prevails (near aborts its opening session and answers as
/// Responder) iff `true`. The far end prevails iff its fingerprint is
/// lexicographically smaller than ours. Antisymmetric for distinct
/// certificates; `false` for identical ones (a node never glares with itself).
pub fn certificate_overrides(near: &Certificate, far: &Certificate) -> bool {
    far.fingerprint() < near.fingerprint()
}

/// The spec's second certificate test (RFC 7016 3.2 last bullet,
/// 3.5.1.1.2 step 2): a new incoming session from `incoming` replaces an
/// existing session with `existing` iff they are the same certificate.
pub fn same_identity(existing: &Certificate, incoming: &Certificate) -> bool {
    existing.fingerprint() == incoming.fingerprint()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use proptest::prelude::*;

    fn home() -> NetworkName {
        NetworkName::new("home").unwrap()
    }

    #[test]
    fn certificate_golden_layout_and_round_trip() {
        let id = Identity::from_secret_key_bytes([7; 32], &home());
        let b = id.certificate().as_bytes();
        assert_eq!(b.len(), 35 + 4);
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 0x03);
        assert_eq!(&b[2..34], &id.certificate().public_key());
        assert_eq!(b[34], 4);
        assert_eq!(&b[35..], b"home");
        let parsed = Certificate::parse(b, &home()).unwrap();
        assert_eq!(parsed, *id.certificate());
        assert_eq!(parsed.fingerprint(), sha256(&[b]));
        assert_eq!(parsed.node_id().to_bytes()[..], parsed.fingerprint()[..16]);
        assert_eq!(id.node_id(), parsed.node_id());
        let by_key =
            Certificate::for_public_key(&id.certificate().public_key(), &home(), SuiteSet::ALL)
                .unwrap();
        assert_eq!(by_key, *id.certificate());
        assert_eq!(parsed.suites(), SuiteSet::CERTIFIED);
        assert_eq!(b[1], 0x03, "AEGIS-128L never in a certificate");
        // Same key bytes, same identity.
        let again = Identity::from_secret_key_bytes(*id.secret_key_bytes(), &home());
        assert_eq!(again.node_id(), id.node_id());
    }

    #[test]
    fn certificate_from_another_network_is_rejected() {
        let id = Identity::from_secret_key_bytes([7; 32], &NetworkName::new("work").unwrap());
        let b = id.certificate().as_bytes();
        assert_eq!(Certificate::parse(b, &home()), Err(CertError::WrongNetwork));
        assert!(Certificate::parse_any_network(b).is_ok());
    }

    #[test]
    fn malformed_certificates_are_rejected() {
        let id = Identity::from_secret_key_bytes([7; 32], &home());
        let good = id.certificate().as_bytes().to_vec();
        let mut v = good.clone();
        v[0] = 2;
        assert_eq!(
            Certificate::parse(&v, &home()),
            Err(CertError::UnsupportedVersion(2))
        );
        let mut v = good.clone();
        v[1] = 0x02;
        assert_eq!(
            Certificate::parse(&v, &home()),
            Err(CertError::NoMandatorySuite)
        );
        let mut v = good.clone();
        v.push(0);
        assert_eq!(
            Certificate::parse(&v, &home()),
            Err(CertError::TrailingBytes)
        );
        assert_eq!(
            Certificate::parse(&good[..good.len() - 1], &home()),
            Err(CertError::Truncated)
        );
        let mut v = good.clone();
        v[34] = 0;
        v.truncate(35);
        assert_eq!(Certificate::parse(&v, &home()), Err(CertError::BadName));
        // A small-order point is not an acceptable key.
        let mut v = good.clone();
        v[2..34].copy_from_slice(&[0; 32]);
        v[2] = 1; // the identity point
        assert_eq!(
            Certificate::parse(&v, &home()),
            Err(CertError::BadPublicKey)
        );
        assert_eq!(Certificate::parse(&[], &home()), Err(CertError::Truncated));
    }

    #[test]
    fn chacha_is_always_offered() {
        let id = Identity::with_suites([3; 32], &home(), SuiteSet::from_bits(0));
        assert_eq!(id.certificate().suites(), SuiteSet::CHACHA_ONLY);
    }

    #[test]
    fn signatures_verify_and_reject_tampering() {
        let id = Identity::from_secret_key_bytes([9; 32], &home());
        let other = Identity::from_secret_key_bytes([10; 32], &home());
        let sig = id.sign(b"hello");
        assert!(id.certificate().verify(b"hello", &sig));
        assert!(!id.certificate().verify(b"hellp", &sig));
        assert!(!other.certificate().verify(b"hello", &sig));
        for i in 0..SIGNATURE_LEN {
            let mut bad = sig;
            bad[i] ^= 0x01;
            assert!(!id.certificate().verify(b"hello", &bad), "byte {i}");
        }
        assert!(!id.certificate().verify(b"hello", &sig[..63]));
    }

    #[test]
    fn endpoint_discriminators() {
        let mut rng = Rng::from_seed([1; 32]);
        let a = Identity::generate(&mut rng, &home());
        let b = Identity::generate(&mut rng, &home());
        let ca = a.certificate();
        let epd = canonical_epd(ca);
        assert!(epd_matches(ca, &epd));
        assert!(!epd_matches(b.certificate(), &epd));
        assert_ne!(canonical_epd(b.certificate()), epd);
        let node = epd_for_node(a.node_id());
        assert!(epd_matches(ca, &node));
        assert!(!epd_matches(b.certificate(), &node));
        assert_eq!(Epd::parse(&node).unwrap(), Epd::Node(a.node_id()));
        assert_eq!(Epd::parse(&epd).unwrap().to_vec(), epd.to_vec());
        assert_eq!(Epd::parse(&[]), Err(EpdError::Empty));
        assert_eq!(Epd::parse(&[9, 1]), Err(EpdError::UnknownType(9)));
        assert_eq!(Epd::parse(&epd[..32]), Err(EpdError::BadLength));
        assert!(!epd_matches(ca, &epd[..32]));
    }

    #[test]
    fn glare_rule_is_antisymmetric() {
        let mut rng = Rng::from_seed([2; 32]);
        let ids: Vec<Identity> = (0..8)
            .map(|_| Identity::generate(&mut rng, &home()))
            .collect();
        for a in &ids {
            for b in &ids {
                let (ca, cb) = (a.certificate(), b.certificate());
                if ca == cb {
                    assert!(!certificate_overrides(ca, cb));
                    assert!(same_identity(ca, cb));
                } else {
                    assert_ne!(certificate_overrides(ca, cb), certificate_overrides(cb, ca));
                    assert!(!same_identity(ca, cb));
                }
            }
        }
    }

    proptest! {
        #[test]
        fn certificate_parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Certificate::parse(&bytes, &home());
            let _ = Epd::parse(&bytes);
        }

        #[test]
        fn mutated_certificates_parse_or_fail_cleanly(
            secret in any::<[u8; 32]>(),
            pos in 0usize..39,
            val in any::<u8>(),
        ) {
            let id = Identity::from_secret_key_bytes(secret, &home());
            let mut b = id.certificate().as_bytes().to_vec();
            b[pos] = val;
            if let Ok(c) = Certificate::parse(&b, &home()) {
                prop_assert_eq!(c.as_bytes(), &b[..]);
                prop_assert_eq!(c.fingerprint(), sha256(&[&b]));
            }
        }
    }
}
