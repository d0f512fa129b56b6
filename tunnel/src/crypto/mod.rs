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
}

impl AeadSuite {
    /// The suite's code on the wire (the SKRC `suite` byte).
    pub const fn code(self) -> u8 {
        match self {
            AeadSuite::ChaCha20Poly1305 => 1,
            AeadSuite::Aes256Gcm => 2,
        }
    }

    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(AeadSuite::ChaCha20Poly1305),
            2 => Some(AeadSuite::Aes256Gcm),
            _ => None,
        }
    }

    /// The suite's bit in a [`SuiteSet`].
    pub const fn bit(self) -> u8 {
        match self {
            AeadSuite::ChaCha20Poly1305 => 0x01,
            AeadSuite::Aes256Gcm => 0x02,
        }
    }

    pub(crate) fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            AeadSuite::ChaCha20Poly1305 => &ring::aead::CHACHA20_POLY1305,
            AeadSuite::Aes256Gcm => &ring::aead::AES_256_GCM,
        }
    }
}

impl fmt::Display for AeadSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            AeadSuite::ChaCha20Poly1305 => "chacha20-poly1305",
            AeadSuite::Aes256Gcm => "aes-256-gcm",
        })
    }
}

/// A set of AEAD suites, as carried in certificates and SKICs: bit 0 =
/// ChaCha20-Poly1305, bit 1 = AES-256-GCM, bits 2-7 reserved (sent as zero,
/// ignored on receipt).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SuiteSet(u8);

impl SuiteSet {
    /// Only the mandatory suite.
    pub const CHACHA_ONLY: SuiteSet = SuiteSet(0x01);
    /// Both suites (the default for a new identity).
    pub const ALL: SuiteSet = SuiteSet(0x03);

    /// The set encoded by `bits`, with reserved bits dropped.
    pub const fn from_bits(bits: u8) -> Self {
        SuiteSet(bits & 0x03)
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

    /// The suite two ends use: AES-256-GCM when both sets contain it,
    /// otherwise ChaCha20-Poly1305 when both contain it, otherwise none.
    pub const fn negotiate(self, other: SuiteSet) -> Option<AeadSuite> {
        let common = self.0 & other.0;
        if common & AeadSuite::Aes256Gcm.bit() != 0 {
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
        for s in [AeadSuite::ChaCha20Poly1305, AeadSuite::Aes256Gcm] {
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
            SuiteSet::ALL.negotiate(SuiteSet::ALL),
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
    fn suite_codes_round_trip() {
        for s in [AeadSuite::ChaCha20Poly1305, AeadSuite::Aes256Gcm] {
            assert_eq!(AeadSuite::from_code(s.code()), Some(s));
        }
        assert_eq!(AeadSuite::from_code(0), None);
        assert_eq!(AeadSuite::from_code(3), None);
    }
}
