//! The ringlan Cryptography Profile for RTMFP (see `docs/crypto-profile.md`).
//!
//! RFC 7016 leaves every cryptographic choice to a "Cryptography Profile"
//! (RFC 7016 2.2.3, 3.2, 5). This module is ringlan's:
//!
//! - [`network`]: the network name and the 32-byte network secret, and the
//!   Default Session Key derived from them (RFC 7016 2.2.3).
//! - [`identity`]: Ed25519 identities, certificates, fingerprints, node ids,
//!   Endpoint Discriminators and the glare rule (RFC 7016 3.2, 3.5.1.3).
//! - [`keying`]: the Session Key Initiator / Responder Components (X25519),
//!   the IIKeying / RIKeying signatures and HKDF-SHA256 session key
//!   derivation (RFC 7016 2.3.7, 2.3.8, 3.5.1.1).
//! - [`aead`]: packet protection (ChaCha20-Poly1305 or AES-256-GCM) with an
//!   explicit sequence number and a replay window, and the Default Session
//!   Key cipher for startup packets (RFC 7016 2.2.3).
//! - [`cookie`]: RHello cookies (RFC 7016 3.5.1.1.2, 3.5.1.2) and the address
//!   mobility check value (RFC 7016 3.5.4.2).
//!
//! Everything here is sans-IO and deterministic given the [`crate::Rng`]
//! passed in.

pub mod aead;
pub mod cookie;
pub mod identity;
pub mod keying;
pub mod network;
pub mod rekey;
#[cfg(test)]
mod vectors;

use std::fmt;

pub use aead::{
    DefaultCipher, OpenError, PacketOpener, PacketSealer, PendingSeal, ReplayWindow, SealError,
    AES_256_GCM_PACKET_LIMIT, CHACHA20_POLY1305_PACKET_LIMIT, DEFAULT_HEADER_LEN, DEFAULT_OVERHEAD,
    FINAL_RESERVE, KEY_PHASE_BIT, MAX_HEADER_LEN, MAX_OVERHEAD, REPLAY_WINDOW, SEQUENCE_SPACE,
    SESSION_HEADER_LEN, SESSION_OVERHEAD, TAG_LEN,
};
pub use cookie::{
    mobility_check, mobility_mac, CookieCheck, CookieJar, COOKIE_LEN, COOKIE_LIFETIME,
    MOBILITY_MAC_LEN,
};
pub use identity::{
    canonical_epd, certificate_overrides, epd_for_node, epd_matches, same_identity, CertError,
    Certificate, Epd, EpdError, Identity, CANONICAL_EPD_LEN, CERT_VERSION, MAX_CERT_LEN,
    NODE_EPD_LEN, SIGNATURE_LEN,
};
pub use keying::{
    respond, sign_iikeying, sign_rikeying, verify_iikeying, verify_rikeying, ChainKey,
    InitiatorKeying, KeyingError, Role, SessionKeys, SignatureError, SKIC_LEN, SKRC_LEN,
};
pub use network::{NameError, NetworkName, NetworkSecret, MAX_NAME_LEN};
pub use rekey::{rekey_keys, EpochKeys, RekeyShare, REKEY_VERSION};

/// An AEAD suite for session packets (`docs/crypto-profile.md`, "Suites").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AeadSuite {
    /// ChaCha20-Poly1305 (RFC 8439). Every node supports it.
    ChaCha20Poly1305,
    /// AES-256-GCM. Used only when both ends offer it.
    Aes256Gcm,
    /// AEGIS-128L (draft-irtf-cfrg-aegis-aead), 128-bit tags. Offered only
    /// in the SKIC, never in a certificate, by nodes whose CPU has AES
    /// instructions; used when both ends offer it. About twice as fast as
    /// AES-256-GCM per packet (`docs/crypto-profile.md` 13).
    Aegis128L,
}

impl AeadSuite {
    /// The suite's code on the wire (the SKRC `suite` byte).
    pub const fn code(self) -> u8 {
        match self {
            AeadSuite::ChaCha20Poly1305 => 1,
            AeadSuite::Aes256Gcm => 2,
            AeadSuite::Aegis128L => 3,
        }
    }

    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(AeadSuite::ChaCha20Poly1305),
            2 => Some(AeadSuite::Aes256Gcm),
            3 => Some(AeadSuite::Aegis128L),
            _ => None,
        }
    }

    /// The suite's bit in a [`SuiteSet`].
    pub const fn bit(self) -> u8 {
        match self {
            AeadSuite::ChaCha20Poly1305 => 0x01,
            AeadSuite::Aes256Gcm => 0x02,
            AeadSuite::Aegis128L => 0x04,
        }
    }
}

impl fmt::Display for AeadSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            AeadSuite::ChaCha20Poly1305 => "chacha20-poly1305",
            AeadSuite::Aes256Gcm => "aes-256-gcm",
            AeadSuite::Aegis128L => "aegis-128l",
        })
    }
}

/// Whether this machine runs AEGIS-128L on AES instructions. Without them
/// the library falls back to a software AES (slow, and table lookups are
/// not a constant-time design), so such a node does not offer the suite.
pub fn aegis_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("sse4.1")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// A set of AEAD suites, as carried in SKICs and certificates: bit 0 =
/// ChaCha20-Poly1305, bit 1 = AES-256-GCM, bit 2 = AEGIS-128L (SKICs
/// only: a certificate carries bits 0-1, so that adding a session suite
/// never changes a node's certificate, fingerprint or node id), bits 3-7
/// reserved (sent as zero, ignored on receipt).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SuiteSet(u8);

impl SuiteSet {
    /// Only the mandatory suite.
    pub const CHACHA_ONLY: SuiteSet = SuiteSet(0x01);
    /// ChaCha20-Poly1305 and AES-256-GCM: what a certificate of this
    /// version carries, and what a node of an earlier version offers.
    pub const CERTIFIED: SuiteSet = SuiteSet(0x03);
    /// Every suite (the default for a new identity; AEGIS-128L is dropped
    /// on machines without AES instructions, [`Identity::with_suites`]).
    pub const ALL: SuiteSet = SuiteSet(0x07);

    /// The set encoded by `bits`, with reserved bits dropped.
    pub const fn from_bits(bits: u8) -> Self {
        SuiteSet(bits & SuiteSet::ALL.0)
    }

    /// The set a certificate's suite byte gives: bits 0-1 (the others are
    /// reserved there).
    pub const fn certified(self) -> Self {
        SuiteSet(self.0 & SuiteSet::CERTIFIED.0)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn contains(self, suite: AeadSuite) -> bool {
        self.0 & suite.bit() != 0
    }

    pub const fn with(self, suite: AeadSuite) -> Self {
        SuiteSet(self.0 | suite.bit())
    }

    pub const fn without(self, suite: AeadSuite) -> Self {
        SuiteSet(self.0 & !suite.bit())
    }

    /// The suite two ends use: the first of AEGIS-128L, AES-256-GCM and
    /// ChaCha20-Poly1305 that both sets contain, otherwise none.
    pub const fn negotiate(self, other: SuiteSet) -> Option<AeadSuite> {
        let common = self.0 & other.0;
        if common & AeadSuite::Aegis128L.bit() != 0 {
            Some(AeadSuite::Aegis128L)
        } else if common & AeadSuite::Aes256Gcm.bit() != 0 {
            Some(AeadSuite::Aes256Gcm)
        } else if common & AeadSuite::ChaCha20Poly1305.bit() != 0 {
            Some(AeadSuite::ChaCha20Poly1305)
        } else {
            None
        }
    }
}

impl fmt::Debug for SuiteSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_set();
        for s in [
            AeadSuite::ChaCha20Poly1305,
            AeadSuite::Aes256Gcm,
            AeadSuite::Aegis128L,
        ] {
            if self.contains(s) {
                l.entry(&s);
            }
        }
        l.finish()
    }
}

/// Domain-separation labels; every one is listed in `docs/crypto-profile.md`.
pub(crate) mod label {
    pub const DSK_SALT: &[u8] = b"ringlan/v1";
    pub const DSK_INFO: &[u8] = b"ringlan/v1 default session key";
    pub const TRANSCRIPT: &[u8] = b"ringlan/v1 transcript";
    pub const KEY_I2R: &[u8] = b"ringlan/v1 key i2r";
    pub const KEY_R2I: &[u8] = b"ringlan/v1 key r2i";
    pub const NONCE_I: &[u8] = b"ringlan/v1 nonce initiator";
    pub const NONCE_R: &[u8] = b"ringlan/v1 nonce responder";
    pub const CHAIN: &[u8] = b"ringlan/v1 chain";
    pub const SIG_IIKEYING: &[u8] = b"ringlan/v1 IIKeying\0";
    pub const SIG_RIKEYING: &[u8] = b"ringlan/v1 RIKeying\0";
    pub const COOKIE_ID: &[u8] = b"ringlan/v1 cookie id";
    pub const COOKIE_ADDR: &[u8] = b"ringlan/v1 cookie addr";
    pub const MOBILITY: &[u8] = b"ringlan/v1 mobility";
}

/// SHA-256 of `data` as a plain array.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_aes_only_when_both_offer_it() {
        assert_eq!(
            SuiteSet::CERTIFIED.negotiate(SuiteSet::CERTIFIED),
            Some(AeadSuite::Aes256Gcm)
        );
        assert_eq!(
            SuiteSet::ALL.negotiate(SuiteSet::CHACHA_ONLY),
            Some(AeadSuite::ChaCha20Poly1305)
        );
        assert_eq!(
            SuiteSet::CHACHA_ONLY.negotiate(SuiteSet::ALL),
            Some(AeadSuite::ChaCha20Poly1305)
        );
        let aes_only = SuiteSet::from_bits(0x02);
        assert_eq!(aes_only.negotiate(SuiteSet::CHACHA_ONLY), None);
        assert_eq!(SuiteSet::from_bits(0xff), SuiteSet::ALL);
    }

    #[test]
    fn negotiation_prefers_aegis_then_aes_then_chacha() {
        assert_eq!(
            SuiteSet::ALL.negotiate(SuiteSet::ALL),
            Some(AeadSuite::Aegis128L)
        );
        // A node of the version before AEGIS offers its certificate's set.
        assert_eq!(
            SuiteSet::ALL.negotiate(SuiteSet::CERTIFIED),
            Some(AeadSuite::Aes256Gcm)
        );
        assert_eq!(
            SuiteSet::CERTIFIED.negotiate(SuiteSet::ALL),
            Some(AeadSuite::Aes256Gcm)
        );
        let no_aes = SuiteSet::ALL.without(AeadSuite::Aes256Gcm);
        assert_eq!(
            no_aes.negotiate(SuiteSet::CERTIFIED),
            Some(AeadSuite::ChaCha20Poly1305)
        );
        assert_eq!(no_aes.negotiate(SuiteSet::ALL), Some(AeadSuite::Aegis128L));
        // Certificates carry bits 0-1 only.
        assert_eq!(SuiteSet::ALL.certified(), SuiteSet::CERTIFIED);
        assert_eq!(SuiteSet::from_bits(0xff).certified(), SuiteSet::CERTIFIED);
    }

    #[test]
    fn suite_codes_round_trip() {
        for s in [
            AeadSuite::ChaCha20Poly1305,
            AeadSuite::Aes256Gcm,
            AeadSuite::Aegis128L,
        ] {
            assert_eq!(AeadSuite::from_code(s.code()), Some(s));
            assert_eq!(
                SuiteSet::from_bits(s.bit()).negotiate(SuiteSet::ALL),
                Some(s)
            );
        }
        assert_eq!(AeadSuite::from_code(0), None);
        assert_eq!(AeadSuite::from_code(4), None);
    }
}
