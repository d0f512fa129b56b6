//! Rekeying an open session (`docs/crypto-profile.md` 6.3): each rekey is
//! a fresh X25519 exchange carried in Rekey / Rekey Ack chunks inside the
//! session, mixed with the session's chaining key, so the new packet keys
//! depend on both the handshake (who the ends are, the network secret) and
//! a new ephemeral secret (forward secrecy: the keys of an earlier epoch
//! cannot be recomputed from a later state). Sans-IO and deterministic
//! given the [`Rng`].

use std::fmt;

use hkdf::HkdfExtract;
use sha2::Sha256;
use x25519_dalek::{x25519, X25519_BASEPOINT_BYTES};
use zeroize::Zeroizing;

use super::keying::{ChainKey, KeyingError, Role};
use super::label;
use super::network::expand;
use crate::Rng;

/// Version byte of the Rekey and Rekey Ack chunks.
pub const REKEY_VERSION: u8 = 1;

/// One end's ephemeral X25519 key pair for one rekey. The secret is
/// zeroized on drop.
pub struct RekeyShare {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl RekeyShare {
    /// 32 random bytes from `rng` as the X25519 secret (clamped by X25519).
    pub fn new(rng: &mut Rng) -> RekeyShare {
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill(&mut secret[..]);
        let public = x25519(*secret, X25519_BASEPOINT_BYTES);
        RekeyShare { secret, public }
    }

    /// The share with this X25519 secret (known-answer tests).
    #[cfg(test)]
    pub(crate) fn from_secret(secret: [u8; 32]) -> RekeyShare {
        let public = x25519(secret, X25519_BASEPOINT_BYTES);
        RekeyShare {
            secret: Zeroizing::new(secret),
            public,
        }
    }

    /// The public key sent in the Rekey or Rekey Ack chunk.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }
}

impl fmt::Debug for RekeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RekeyShare")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The keys of one epoch, as one end sees them. Zeroized on drop.
pub struct EpochKeys {
    send: Zeroizing<[u8; 32]>,
    recv: Zeroizing<[u8; 32]>,
    chain: ChainKey,
}

impl EpochKeys {
    /// Key for packets we send in this epoch.
    pub fn send_key(&self) -> &[u8; 32] {
        &self.send
    }

    /// Key for packets we receive in this epoch.
    pub fn recv_key(&self) -> &[u8; 32] {
        &self.recv
    }

    /// The chaining key the next rekey starts from (replaces the old one).
    pub fn into_chain(self) -> ChainKey {
        self.chain
    }
}

impl fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EpochKeys(..)")
    }
}

/// The keys of epoch `epoch` (`docs/crypto-profile.md` 6.3):
///
/// ```text
/// DH    = X25519(own share secret, peer public)          refuse if all zero
/// PRK   = HKDF-Extract(salt = CK, IKM = u32(epoch) || E_req || E_ack || DH)
/// K_i2r = HKDF-Expand(PRK, "ringlan/v1 key i2r", 32)
/// K_r2i = HKDF-Expand(PRK, "ringlan/v1 key r2i", 32)
/// CK'   = HKDF-Expand(PRK, "ringlan/v1 chain", 32)
/// ```
///
/// `role` is our role in the session (directions keep the handshake's
/// meaning whoever asked for the rekey); `requested` says whether we sent
/// the Rekey (our public is `E_req`) or answered it (`E_ack`).
pub fn rekey_keys(
    chain: &ChainKey,
    role: Role,
    epoch: u32,
    own: &RekeyShare,
    peer_public: &[u8; 32],
    requested: bool,
) -> Result<EpochKeys, KeyingError> {
    let dh = Zeroizing::new(x25519(*own.secret, *peer_public));
    if dh.iter().fold(0u8, |acc, b| acc | b) == 0 {
        return Err(KeyingError::NonContributory);
    }
    let (e_req, e_ack) = if requested {
        (&own.public, peer_public)
    } else {
        (peer_public, &own.public)
    };
    let mut ex = HkdfExtract::<Sha256>::new(Some(chain.as_bytes()));
    ex.input_ikm(&epoch.to_be_bytes());
    ex.input_ikm(e_req);
    ex.input_ikm(e_ack);
    ex.input_ikm(&dh[..]);
    let (_prk, hk) = ex.finalize();
    let mut i2r = Zeroizing::new([0u8; 32]);
    let mut r2i = Zeroizing::new([0u8; 32]);
    let mut ck = Zeroizing::new([0u8; 32]);
    expand(&hk, &[label::KEY_I2R], &mut i2r[..]);
    expand(&hk, &[label::KEY_R2I], &mut r2i[..]);
    expand(&hk, &[label::CHAIN], &mut ck[..]);
    let (send, recv) = match role {
        Role::Initiator => (i2r, r2i),
        Role::Responder => (r2i, i2r),
    };
    Ok(EpochKeys {
        send,
        recv,
        chain: ChainKey(ck),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ck() -> ChainKey {
        ChainKey::from_bytes([0x33; 32])
    }

    #[test]
    fn both_ends_derive_matching_keys_and_chain() {
        let mut rng = Rng::from_seed([5; 32]);
        let a = RekeyShare::new(&mut rng);
        let b = RekeyShare::new(&mut rng);
        // The responder of the session asks; the initiator answers.
        let ka = rekey_keys(&ck(), Role::Initiator, 1, &a, b.public(), false).unwrap();
        let kb = rekey_keys(&ck(), Role::Responder, 1, &b, a.public(), true).unwrap();
        assert_eq!(ka.send_key(), kb.recv_key());
        assert_eq!(ka.recv_key(), kb.send_key());
        assert_ne!(ka.send_key(), ka.recv_key());
        assert_eq!(ka.into_chain().as_bytes(), kb.into_chain().as_bytes());
    }

    #[test]
    fn every_input_changes_the_keys() {
        let mut rng = Rng::from_seed([6; 32]);
        let a = RekeyShare::new(&mut rng);
        let b = RekeyShare::new(&mut rng);
        let base = rekey_keys(&ck(), Role::Initiator, 1, &a, b.public(), true).unwrap();
        let other_chain = ChainKey::from_bytes([0x34; 32]);
        let variants = [
            rekey_keys(&other_chain, Role::Initiator, 1, &a, b.public(), true).unwrap(),
            rekey_keys(&ck(), Role::Initiator, 2, &a, b.public(), true).unwrap(),
            rekey_keys(&ck(), Role::Initiator, 1, &a, b.public(), false).unwrap(),
        ];
        for v in variants {
            assert_ne!(v.send_key(), base.send_key());
        }
    }

    #[test]
    fn small_order_points_are_refused() {
        let mut rng = Rng::from_seed([7; 32]);
        let a = RekeyShare::new(&mut rng);
        for bad in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert_eq!(
                rekey_keys(&ck(), Role::Initiator, 1, &a, &bad, true).err(),
                Some(KeyingError::NonContributory)
            );
        }
    }
}
