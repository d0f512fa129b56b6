//! A body signed by the network CA: the encoded body, then a 64-byte
//! Ed25519 signature over a domain string and the body. Shared by
//! certificates and revocation lists.

use ed25519_dalek::{Signature, Signer, SigningKey};

use ringlan_tunnel::crypto::NetworkName;

use super::{strict_key, CaKey, DecodeError, Rejected, SIGNATURE_LEN};

/// What the CA signs: a canonical encoding with a total decoder.
pub trait SignedBody: Sized {
    /// Prefixed to the encoded body before signing: one per kind of object,
    /// so a signature on one kind is never valid for another.
    const DOMAIN: &'static [u8];
    type Error: From<DecodeError>;
    /// The encoding; fails when a field is out of its bounds.
    fn encode(&self) -> Result<Vec<u8>, Self::Error>;
    /// Total: any input gives a body or an error.
    fn decode(bytes: &[u8]) -> Result<Self, Self::Error>;
    fn issuer(&self) -> CaKey;
    fn network(&self) -> &NetworkName;
    fn set_issuer(&mut self, ca: CaKey);

    /// Signs the body with the CA key (setting the issuer to its public
    /// key).
    fn sign(mut self, ca: &SigningKey) -> Result<Signed<Self>, Self::Error> {
        self.set_issuer(CaKey(ca.verifying_key().to_bytes()));
        let mut bytes = self.encode()?;
        let mut msg = Self::DOMAIN.to_vec();
        msg.extend_from_slice(&bytes);
        let signature = ca.sign(&msg).to_bytes();
        bytes.extend_from_slice(&signature);
        Ok(Signed {
            body: self,
            signature,
            bytes,
        })
    }
}

/// A decoded signed object; the signature is checked by
/// [`Signed::signed_by`] (and the `check` of each kind), not by decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<B> {
    body: B,
    signature: [u8; SIGNATURE_LEN],
    bytes: Vec<u8>,
}

impl<B: SignedBody> Signed<B> {
    /// Decodes the body and the trailing signature; total.
    pub fn decode(bytes: &[u8]) -> Result<Self, B::Error> {
        let (body, signature) = bytes
            .split_last_chunk::<SIGNATURE_LEN>()
            .ok_or(DecodeError::Truncated)?;
        Ok(Signed {
            body: B::decode(body)?,
            signature: *signature,
            bytes: bytes.to_vec(),
        })
    }

    /// The encoding, as decoded or signed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn body(&self) -> &B {
        &self.body
    }

    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// Whether `ca` issued and signed this object (strict verification:
    /// RFC 8032 5.1.7 without malleable `S` or small-order points).
    pub fn signed_by(&self, ca: &CaKey) -> bool {
        if self.body.issuer() != *ca {
            return false;
        }
        let Some(key) = strict_key(&ca.0) else {
            return false;
        };
        let mut msg = B::DOMAIN.to_vec();
        msg.extend_from_slice(&self.bytes[..self.bytes.len() - SIGNATURE_LEN]);
        key.verify_strict(&msg, &Signature::from_bytes(&self.signature))
            .is_ok()
    }

    /// Issued and signed by `ca`, for `network`.
    pub fn check_origin(&self, ca: &CaKey, network: &NetworkName) -> Result<(), Rejected> {
        if self.body.issuer() != *ca {
            return Err(Rejected::WrongIssuer(self.body.issuer()));
        }
        if !self.signed_by(ca) {
            return Err(Rejected::BadSignature);
        }
        if self.body.network() != network {
            return Err(Rejected::WrongNetwork(self.body.network().clone()));
        }
        Ok(())
    }
}

/// Test helper for both kinds: no proper prefix and no longer string
/// decodes, and no flipped bit leaves an object that `accepts` takes.
#[cfg(test)]
pub(crate) fn assert_tamper_evident<B>(signed: &Signed<B>, accepts: impl Fn(&Signed<B>) -> bool)
where
    B: SignedBody + PartialEq + std::fmt::Debug,
    B::Error: std::fmt::Debug,
{
    let good = signed.as_bytes();
    assert!(accepts(signed));
    for n in 0..good.len() {
        assert!(
            Signed::<B>::decode(&good[..n]).is_err(),
            "prefix {n} decodes"
        );
    }
    let mut b = good.to_vec();
    b.push(0);
    assert!(Signed::<B>::decode(&b).is_err(), "a trailing byte decodes");
    b.pop();
    for i in 0..b.len() * 8 {
        b[i / 8] ^= 1 << (i % 8);
        if let Ok(s) = Signed::<B>::decode(&b) {
            assert!(!accepts(&s), "bit {i} flipped is still accepted");
        }
        b[i / 8] ^= 1 << (i % 8);
    }
    assert_eq!(&Signed::<B>::decode(&b).unwrap(), signed);
}
