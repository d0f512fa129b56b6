//! Session keying (RFC 7016 2.3.7, 2.3.8, 3.5.1.1; `docs/crypto-profile.md` 6):
//! X25519 ephemeral keys in the Session Key Initiator / Responder Components,
//! Ed25519 signatures over the signed parameters, and HKDF-SHA256 to
//! per-direction packet keys, with the network secret mixed in.

use std::fmt;

use hkdf::HkdfExtract;
use sha2::Sha256;
use x25519_dalek::{x25519, X25519_BASEPOINT_BYTES};
use zeroize::Zeroizing;

use super::aead::{PacketOpener, PacketSealer};
use super::identity::{Certificate, Identity, SIGNATURE_LEN};
use super::network::{expand, NetworkSecret};
use super::{label, sha256, AeadSuite, SuiteSet};
use crate::Rng;

/// Version byte of SKIC and SKRC.
const COMPONENT_VERSION: u8 = 1;
/// Length of a Session Key Initiator Component.
pub const SKIC_LEN: usize = 1 + 1 + 32 + 32;
/// Length of a Session Key Responder Component.
pub const SKRC_LEN: usize = 1 + 1 + 32 + 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyingError {
    #[error("session key component has the wrong length")]
    BadLength,
    #[error("unsupported session key component version {0}")]
    UnsupportedVersion(u8),
    #[error("no AEAD suite in common")]
    NoCommonSuite,
    #[error("responder chose an AEAD suite the negotiation rule does not give")]
    UnexpectedSuite,
    #[error("X25519 result is all zero (small-order public key)")]
    NonContributory,
}

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct SignatureError;

/// Which end of the session this is (RFC 7016 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Initiator,
    Responder,
}

/// A decoded SKIC or SKRC: `version || suites-or-suite || X25519 public || nonce`.
struct Component<'a> {
    suite_byte: u8,
    public: &'a [u8; 32],
}

fn parse_component(bytes: &[u8]) -> Result<Component<'_>, KeyingError> {
    let b: &[u8; SKIC_LEN] = bytes.try_into().map_err(|_| KeyingError::BadLength)?;
    let (&version, rest) = b.split_first().ok_or(KeyingError::BadLength)?;
    if version != COMPONENT_VERSION {
        return Err(KeyingError::UnsupportedVersion(version));
    }
    let (&suite_byte, rest) = rest.split_first().ok_or(KeyingError::BadLength)?;
    let (public, _nonce) = rest
        .split_first_chunk::<32>()
        .ok_or(KeyingError::BadLength)?;
    Ok(Component { suite_byte, public })
}

/// A fresh ephemeral X25519 key pair and its component bytes.
fn make_component(rng: &mut Rng, suite_byte: u8) -> (Zeroizing<[u8; 32]>, [u8; SKIC_LEN]) {
    let mut secret = Zeroizing::new([0u8; 32]);
    rng.fill(&mut secret[..]);
    let public = x25519(*secret, X25519_BASEPOINT_BYTES);
    let mut c = [0u8; SKIC_LEN];
    c[0] = COMPONENT_VERSION;
    c[1] = suite_byte;
    c[2..34].copy_from_slice(&public);
    rng.fill(&mut c[34..66]);
    (secret, c)
}

/// The initiator's half of session keying (RFC 7016 3.5.1.1.1): an ephemeral
/// X25519 key, kept (zeroized on drop) until the RIKeying arrives, so the
/// IIKeying can be resent or re-signed after a Cookie Change with the same
/// SKIC.
pub struct InitiatorKeying {
    secret: Zeroizing<[u8; 32]>,
    skic: [u8; SKIC_LEN],
}

impl InitiatorKeying {
    /// A new SKIC offering `offered` (normally the near certificate's suites).
    pub fn new(rng: &mut Rng, offered: SuiteSet) -> InitiatorKeying {
        let (secret, skic) = make_component(rng, offered.bits());
        InitiatorKeying { secret, skic }
    }

    /// The Session Key Initiator Component bytes for the IIKeying.
    pub fn skic(&self) -> &[u8; SKIC_LEN] {
        &self.skic
    }

    /// Combine with the responder's SKRC from a verified RIKeying (RFC 7016
    /// 3.5.1.1.1). `near` is our certificate, `far` the responder's (from the
    /// RHello). Fails unless the SKRC is well formed, its suite is one the
    /// negotiation rule allows (`docs/crypto-profile.md` 2: AEGIS-128L if our
    /// SKIC offered it, which no certificate says, else the rule's choice for
    /// our offer and the responder's certificate), and the X25519 result is
    /// contributory.
    pub fn complete(
        &self,
        secret: &NetworkSecret,
        near: &Certificate,
        far: &Certificate,
        skrc: &[u8],
    ) -> Result<SessionKeys, KeyingError> {
        let c = parse_component(skrc)?;
        let offered = SuiteSet::from_bits(self.skic[1]);
        let by_certificate = offered
            .negotiate(far.suites())
            .ok_or(KeyingError::NoCommonSuite)?;
        let expected = match AeadSuite::from_code(c.suite_byte) {
            Some(AeadSuite::Aegis128L) if offered.contains(AeadSuite::Aegis128L) => {
                AeadSuite::Aegis128L
            }
            Some(s) if s == by_certificate => s,
            _ => return Err(KeyingError::UnexpectedSuite),
        };
        let dh = Zeroizing::new(x25519(*self.secret, *c.public));
        derive(
            Role::Initiator,
            expected,
            secret,
            &dh,
            near,
            far,
            &self.skic,
            skrc,
        )
    }
}

impl fmt::Debug for InitiatorKeying {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InitiatorKeying(..)")
    }
}

/// The responder's half (RFC 7016 3.5.1.1.2): given the initiator's SKIC
/// from an IIKeying whose signature verified, make the SKRC and the session
/// keys. `near` is our certificate, `supported` the suites we accept
/// ([`crate::crypto::Identity::session_suites`]), `far` the initiator's
/// certificate. The suite is the first of AEGIS-128L, AES-256-GCM and
/// ChaCha20-Poly1305 that both offer. The ephemeral secret is dropped
/// (zeroized) on return.
pub fn respond(
    rng: &mut Rng,
    secret: &NetworkSecret,
    near: &Certificate,
    supported: SuiteSet,
    far: &Certificate,
    skic: &[u8],
) -> Result<([u8; SKRC_LEN], SessionKeys), KeyingError> {
    let c = parse_component(skic)?;
    let suite = SuiteSet::from_bits(c.suite_byte)
        .negotiate(supported)
        .ok_or(KeyingError::NoCommonSuite)?;
    let (eph, skrc) = make_component(rng, suite.code());
    let dh = Zeroizing::new(x25519(*eph, *c.public));
    let keys = derive(Role::Responder, suite, secret, &dh, far, near, skic, &skrc)?;
    Ok((skrc, keys))
}

/// HKDF-SHA256 key schedule (`docs/crypto-profile.md`, "Key derivation").
#[allow(clippy::too_many_arguments)]
fn derive(
    role: Role,
    suite: AeadSuite,
    secret: &NetworkSecret,
    dh: &[u8; 32],
    initiator: &Certificate,
    responder: &Certificate,
    skic: &[u8],
    skrc: &[u8],
) -> Result<SessionKeys, KeyingError> {
    if dh.iter().fold(0u8, |acc, b| acc | b) == 0 {
        return Err(KeyingError::NonContributory);
    }
    let th = sha256(&[
        label::TRANSCRIPT,
        &initiator.fingerprint(),
        &responder.fingerprint(),
        skic,
        skrc,
    ]);
    let mut ex = HkdfExtract::<Sha256>::new(Some(&th));
    ex.input_ikm(secret.as_bytes());
    ex.input_ikm(dh);
    let (_prk, hk) = ex.finalize();
    let mut i2r = Zeroizing::new([0u8; 32]);
    let mut r2i = Zeroizing::new([0u8; 32]);
    let mut n_i = Zeroizing::new([0u8; 32]);
    let mut n_r = Zeroizing::new([0u8; 32]);
    let mut chain = Zeroizing::new([0u8; 32]);
    expand(&hk, &[label::KEY_I2R], &mut i2r[..]);
    expand(&hk, &[label::KEY_R2I], &mut r2i[..]);
    expand(&hk, &[label::NONCE_I], &mut n_i[..]);
    expand(&hk, &[label::NONCE_R], &mut n_r[..]);
    expand(&hk, &[label::CHAIN], &mut chain[..]);
    let chain = ChainKey(chain);
    Ok(match role {
        Role::Initiator => SessionKeys {
            role,
            suite,
            send: i2r,
            recv: r2i,
            near_nonce: n_i,
            far_nonce: n_r,
            chain,
        },
        Role::Responder => SessionKeys {
            role,
            suite,
            send: r2i,
            recv: i2r,
            near_nonce: n_r,
            far_nonce: n_i,
            chain,
        },
    })
}

/// The shared session keys and nonces of one end (RFC 7016 3.5). All fields
/// are zeroized on drop.
pub struct SessionKeys {
    role: Role,
    suite: AeadSuite,
    send: Zeroizing<[u8; 32]>,
    recv: Zeroizing<[u8; 32]>,
    near_nonce: Zeroizing<[u8; 32]>,
    far_nonce: Zeroizing<[u8; 32]>,
    chain: ChainKey,
}

/// The chaining key `CK` of a session (`docs/crypto-profile.md` 6.2, 6.3):
/// the secret each rekey starts from, replaced by every rekey. Zeroized on
/// drop.
pub struct ChainKey(pub(crate) Zeroizing<[u8; 32]>);

impl ChainKey {
    #[cfg(test)]
    pub(crate) fn from_bytes(b: [u8; 32]) -> ChainKey {
        ChainKey(Zeroizing::new(b))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl SessionKeys {
    pub fn role(&self) -> Role {
        self.role
    }

    pub fn suite(&self) -> AeadSuite {
        self.suite
    }

    /// Our session nonce (RFC 7016 3.5): equal to the far end's far nonce.
    /// Secret to the two ends; usable for application-layer challenges.
    pub fn near_nonce(&self) -> &[u8; 32] {
        &self.near_nonce
    }

    /// The far end's session nonce.
    pub fn far_nonce(&self) -> &[u8; 32] {
        &self.far_nonce
    }

    /// The chaining key the session's first rekey starts from.
    pub fn chain_key(&self) -> ChainKey {
        ChainKey(self.chain.0.clone())
    }

    /// The packet protection for this session: sealer for what we send,
    /// opener for what we receive.
    pub fn ciphers(&self) -> (PacketSealer, PacketOpener) {
        (
            PacketSealer::new(self.suite, &self.send),
            PacketOpener::new(self.suite, &self.recv),
        )
    }
}

#[cfg(test)]
impl SessionKeys {
    /// (send key, receive key) for known-answer tests.
    pub(crate) fn raw_keys(&self) -> (&[u8; 32], &[u8; 32]) {
        (&self.send, &self.recv)
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("role", &self.role)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

fn prefixed(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let len = prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(prefix);
    for p in parts {
        m.extend_from_slice(p);
    }
    m
}

/// The IIKeying signature (RFC 7016 2.3.7): Ed25519 over
/// `"ringlan/v1 IIKeying\0" || initiatorSignedParameters`, where the signed
/// parameters are the IIKeying payload bytes up to the signature.
pub fn sign_iikeying(id: &Identity, signed_parameters: &[u8]) -> [u8; SIGNATURE_LEN] {
    id.sign(&prefixed(label::SIG_IIKEYING, &[signed_parameters]))
}

/// Verify an IIKeying signature by the owner of `cert`.
pub fn verify_iikeying(
    cert: &Certificate,
    signed_parameters: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let msg = prefixed(label::SIG_IIKEYING, &[signed_parameters]);
    cert.verify(&msg, signature)
        .then_some(())
        .ok_or(SignatureError)
}

/// The RIKeying signature (RFC 7016 2.3.8): Ed25519 over
/// `"ringlan/v1 RIKeying\0" || responderSignedParametersPortion || SKIC`.
pub fn sign_rikeying(id: &Identity, portion: &[u8], skic: &[u8]) -> [u8; SIGNATURE_LEN] {
    id.sign(&prefixed(label::SIG_RIKEYING, &[portion, skic]))
}

/// Verify an RIKeying signature by the owner of `cert`; `skic` is the one
/// we sent.
pub fn verify_rikeying(
    cert: &Certificate,
    portion: &[u8],
    skic: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let msg = prefixed(label::SIG_RIKEYING, &[portion, skic]);
    cert.verify(&msg, signature)
        .then_some(())
        .ok_or(SignatureError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::network::NetworkName;
    use crate::crypto::OpenError;

    fn home() -> NetworkName {
        NetworkName::new("home").unwrap()
    }

    struct Pair {
        rng: Rng,
        secret: NetworkSecret,
        a: Identity,
        b: Identity,
    }

    fn pair(a_suites: SuiteSet, b_suites: SuiteSet) -> Pair {
        let mut rng = Rng::from_seed([5; 32]);
        let a = Identity::with_suites(rng.bytes32(), &home(), a_suites);
        let b = Identity::with_suites(rng.bytes32(), &home(), b_suites);
        Pair {
            rng,
            secret: NetworkSecret::from_bytes([42; 32]),
            a,
            b,
        }
    }

    /// The suite two nodes of this version use on this machine.
    fn best() -> AeadSuite {
        if crate::crypto::aegis_in_hardware() {
            AeadSuite::Aegis128L
        } else {
            AeadSuite::Aes256Gcm
        }
    }

    /// A offers `offered` in its SKIC, B accepts `supported`: B's SKRC and
    /// both ends' keys.
    fn keyed(
        p: &mut Pair,
        offered: SuiteSet,
        supported: SuiteSet,
    ) -> Result<([u8; SKRC_LEN], SessionKeys, SessionKeys), KeyingError> {
        let init = InitiatorKeying::new(&mut p.rng, offered);
        let (skrc, kr) = respond(
            &mut p.rng,
            &p.secret,
            p.b.certificate(),
            supported,
            p.a.certificate(),
            init.skic(),
        )?;
        let ki = init.complete(&p.secret, p.a.certificate(), p.b.certificate(), &skrc)?;
        Ok((skrc, ki, kr))
    }

    #[test]
    fn aegis_is_used_only_when_both_ends_offer_it() {
        if !crate::crypto::aegis_in_hardware() {
            eprintln!("no AES instructions here: AEGIS-128L is never offered");
            return;
        }
        let mut p = pair(SuiteSet::ALL, SuiteSet::ALL);
        let (a, b) = (p.a.session_suites(), p.b.session_suites());
        assert!(a.contains(AeadSuite::Aegis128L));
        // Certificates never carry it: ids do not change with the suite.
        assert_eq!(p.a.certificate().suites(), SuiteSet::CERTIFIED);
        let (skrc, ki, kr) = keyed(&mut p, a, b).unwrap();
        assert_eq!(skrc[1], AeadSuite::Aegis128L.code());
        assert_eq!(
            (ki.suite(), kr.suite()),
            (AeadSuite::Aegis128L, AeadSuite::Aegis128L)
        );
        exchange(&ki, &kr);
        // A responder of the version before AEGIS (it accepts what its
        // certificate says) and an initiator of that version (it offers
        // what its certificate says): AES-256-GCM, as before.
        for (offered, supported) in [(a, SuiteSet::CERTIFIED), (SuiteSet::CERTIFIED, b)] {
            let (skrc, ki, kr) = keyed(&mut p, offered, supported).unwrap();
            assert_eq!(skrc[1], AeadSuite::Aes256Gcm.code());
            assert_eq!(ki.suite(), AeadSuite::Aes256Gcm);
            exchange(&ki, &kr);
        }
        // A node that asked for ChaCha20-Poly1305 only offers nothing else.
        let c = Identity::with_suites([9; 32], &home(), SuiteSet::CHACHA_ONLY);
        assert_eq!(c.session_suites(), SuiteSet::CHACHA_ONLY);
    }

    #[test]
    fn aegis_not_offered_is_refused() {
        let mut p = pair(SuiteSet::ALL, SuiteSet::ALL);
        let init = InitiatorKeying::new(&mut p.rng, SuiteSet::CERTIFIED);
        let (mut skrc, _) = respond(
            &mut p.rng,
            &p.secret,
            p.b.certificate(),
            SuiteSet::ALL,
            p.a.certificate(),
            init.skic(),
        )
        .unwrap();
        assert_eq!(skrc[1], AeadSuite::Aes256Gcm.code());
        skrc[1] = AeadSuite::Aegis128L.code();
        assert_eq!(
            init.complete(&p.secret, p.a.certificate(), p.b.certificate(), &skrc)
                .unwrap_err(),
            KeyingError::UnexpectedSuite
        );
        // Nor is it accepted from a certificate: a certificate's suite byte
        // with bit 2 set gives the certified suites only.
        let mut bytes = p.b.certificate().as_bytes().to_vec();
        bytes[1] |= AeadSuite::Aegis128L.bit();
        let cert = Certificate::parse(&bytes, &home()).unwrap();
        assert_eq!(cert.suites(), SuiteSet::CERTIFIED);
    }

    /// Both directions carry a packet; returns the negotiated suite.
    fn exchange(ki: &SessionKeys, kr: &SessionKeys) {
        let (mut si, mut oi) = ki.ciphers();
        let (mut sr, mut or) = kr.ciphers();
        for (s, o, msg) in [
            (&mut si, &mut or, b"initiator to responder".as_slice()),
            (&mut sr, &mut oi, b"responder to initiator".as_slice()),
        ] {
            let mut buf = vec![0u8; 8 + msg.len() + 16];
            buf[8..8 + msg.len()].copy_from_slice(msg);
            let r = s.seal(&mut buf, 8, msg.len()).unwrap();
            let p = o.open(&mut buf[r]).unwrap();
            assert_eq!(&buf[p], msg);
        }
        // A packet does not open in the direction it was sent (no reflection).
        let mut buf = [0u8; 8 + 3 + 16];
        let r = si.seal(&mut buf, 8, 3).unwrap();
        assert_eq!(oi.open(&mut buf[r]), Err(OpenError::Authentication));
    }

    #[test]
    fn handshake_derives_matching_keys() {
        let mut p = pair(SuiteSet::ALL, SuiteSet::ALL);
        let init = InitiatorKeying::new(&mut p.rng, p.a.session_suites());
        let (skrc, kr) = respond(
            &mut p.rng,
            &p.secret,
            p.b.certificate(),
            p.b.session_suites(),
            p.a.certificate(),
            init.skic(),
        )
        .unwrap();
        let ki = init
            .complete(&p.secret, p.a.certificate(), p.b.certificate(), &skrc)
            .unwrap();
        assert_eq!(ki.role(), Role::Initiator);
        assert_eq!(kr.role(), Role::Responder);
        assert_eq!(ki.suite(), best());
        assert_eq!(kr.suite(), best());
        assert_eq!(*ki.send, *kr.recv);
        assert_eq!(*ki.recv, *kr.send);
        assert_ne!(*ki.send, *ki.recv);
        assert_eq!(ki.near_nonce(), kr.far_nonce());
        assert_eq!(ki.far_nonce(), kr.near_nonce());
        exchange(&ki, &kr);
    }

    #[test]
    fn suites_negotiate_both_ways() {
        for (a, b) in [
            (SuiteSet::ALL, SuiteSet::CHACHA_ONLY),
            (SuiteSet::CHACHA_ONLY, SuiteSet::ALL),
            (SuiteSet::CHACHA_ONLY, SuiteSet::CHACHA_ONLY),
        ] {
            let mut p = pair(a, b);
            let init = InitiatorKeying::new(&mut p.rng, p.a.certificate().suites());
            let (skrc, kr) = respond(
                &mut p.rng,
                &p.secret,
                p.b.certificate(),
                p.b.session_suites(),
                p.a.certificate(),
                init.skic(),
            )
            .unwrap();
            assert_eq!(skrc[1], AeadSuite::ChaCha20Poly1305.code());
            let ki = init
                .complete(&p.secret, p.a.certificate(), p.b.certificate(), &skrc)
                .unwrap();
            assert_eq!(ki.suite(), AeadSuite::ChaCha20Poly1305);
            exchange(&ki, &kr);
        }
    }

    #[test]
    fn downgraded_or_unoffered_suite_is_refused() {
        let mut p = pair(SuiteSet::ALL, SuiteSet::ALL);
        let init = InitiatorKeying::new(&mut p.rng, SuiteSet::ALL);
        let (mut skrc, _) = respond(
            &mut p.rng,
            &p.secret,
            p.b.certificate(),
            p.b.session_suites(),
            p.a.certificate(),
            init.skic(),
        )
        .unwrap();
        skrc[1] = AeadSuite::ChaCha20Poly1305.code();
        assert_eq!(
            init.complete(&p.secret, p.a.certificate(), p.b.certificate(), &skrc)
                .unwrap_err(),
            KeyingError::UnexpectedSuite
        );
        // An SKIC offering nothing we support.
        let bad = InitiatorKeying::new(&mut p.rng, SuiteSet::from_bits(0));
        assert_eq!(
            respond(
                &mut p.rng,
                &p.secret,
                p.b.certificate(),
                p.b.session_suites(),
                p.a.certificate(),
                bad.skic()
            )
            .unwrap_err(),
            KeyingError::NoCommonSuite
        );
    }

    #[test]
    fn wrong_network_secret_cannot_talk() {
        let mut p = pair(SuiteSet::ALL, SuiteSet::ALL);
        let init = InitiatorKeying::new(&mut p.rng, SuiteSet::ALL);
        let (skrc, kr) = respond(
            &mut p.rng,
            &p.secret,
            p.b.certificate(),
            p.b.session_suites(),
            p.a.certificate(),
            init.skic(),
        )
        .unwrap();
        let outsider = NetworkSecret::from_bytes([43; 32]);
        let ki = init
            .complete(&outsider, p.a.certificate(), p.b.certificate(), &skrc)
            .unwrap();
        let (mut s, _) = ki.ciphers();
        let (_, mut o) = kr.ciphers();
        let mut buf = [0u8; 8 + 5 + 16];
        let r = s.seal(&mut buf, 8, 5).unwrap();
        assert_eq!(o.open(&mut buf[r]), Err(OpenError::Authentication));
    }

    #[test]
    fn components_are_validated() {
        let mut p = pair(SuiteSet::ALL, SuiteSet::ALL);
        let init = InitiatorKeying::new(&mut p.rng, SuiteSet::ALL);
        let mut skic = *init.skic();
        let respond_to = |rng: &mut Rng, skic: &[u8]| {
            respond(
                rng,
                &p.secret,
                p.b.certificate(),
                p.b.session_suites(),
                p.a.certificate(),
                skic,
            )
            .map(|_| ())
        };
        assert_eq!(
            respond_to(&mut p.rng, &skic[..65]),
            Err(KeyingError::BadLength)
        );
        skic[0] = 2;
        assert_eq!(
            respond_to(&mut p.rng, &skic),
            Err(KeyingError::UnsupportedVersion(2))
        );
        skic[0] = 1;
        // The all-zero point (small order) gives an all-zero shared secret.
        skic[2..34].copy_from_slice(&[0; 32]);
        assert_eq!(
            respond_to(&mut p.rng, &skic),
            Err(KeyingError::NonContributory)
        );
    }

    #[test]
    fn keying_signatures() {
        let p = pair(SuiteSet::ALL, SuiteSet::ALL);
        let (ca, cb) = (p.a.certificate(), p.b.certificate());
        let params = b"\x00\x00\x00\x07 signed parameters";
        let sig = sign_iikeying(&p.a, params);
        assert_eq!(verify_iikeying(ca, params, &sig), Ok(()));
        assert_eq!(verify_iikeying(cb, params, &sig), Err(SignatureError));
        for i in 0..params.len() {
            let mut m = params.to_vec();
            m[i] ^= 0x80;
            assert_eq!(verify_iikeying(ca, &m, &sig), Err(SignatureError));
        }
        // Domain separation: an IIKeying signature is not an RIKeying one,
        // nor a plain signature over the same bytes.
        assert_eq!(verify_rikeying(ca, params, b"", &sig), Err(SignatureError));
        assert!(!ca.verify(params, &sig));

        let skic = [9u8; SKIC_LEN];
        let portion = b"\x00\x00\x00\x09portion";
        let sig = sign_rikeying(&p.b, portion, &skic);
        assert_eq!(verify_rikeying(cb, portion, &skic, &sig), Ok(()));
        let mut other_skic = skic;
        other_skic[40] ^= 1;
        assert_eq!(
            verify_rikeying(cb, portion, &other_skic, &sig),
            Err(SignatureError)
        );
        assert_eq!(
            verify_rikeying(cb, b"\x00\x00\x00\x08portion", &skic, &sig),
            Err(SignatureError)
        );
        assert_eq!(verify_iikeying(cb, portion, &sig), Err(SignatureError));
    }
}
