//! A directory record: a key, the subject that owns it (its node id and
//! Ed25519 key), a version, an absolute expiry, an opaque body, and the
//! subject's signature over all of it (`docs/directory.md` "Records").
//!
//! Encoding (also inside the `DirPut`, `DirGetReply` and `DirScanPage`
//! control messages), all integers big-endian:
//!
//! ```text
//! [key_len u8][key][subject 16][public_key 32][version u64]
//! [expires_unix u64][body_len u16][body][signature 64]
//! ```
//!
//! The signature covers [`RECORD_DOMAIN`] followed by every field above
//! except the signature, in the same layout. The decoder is total: lengths
//! are bounded ([`MAX_KEY`], [`MAX_BODY`]) before anything is allocated.

use super::DirKey;
use crate::wire::WireError;
use ringlan_tunnel::crypto::{Certificate, NetworkName, SuiteSet};
use ringlan_tunnel::{Identity, NodeId};

/// Longest key in bytes.
pub const MAX_KEY: usize = 96;
/// Longest body in bytes.
pub const MAX_BODY: usize = 2048;
/// Domain separation of record signatures (never a prefix of another
/// signed message of the project: frames sign `ringlan frame v1\0`).
pub const RECORD_DOMAIN: &[u8; 18] = b"ringlan dir rec 1\0";
/// Encoded length of the fixed fields (without key and body).
pub const RECORD_FIXED_LEN: usize = 1 + 16 + 32 + 8 + 8 + 2 + 64;
/// Longest encoded record.
pub const MAX_RECORD_LEN: usize = RECORD_FIXED_LEN + MAX_KEY + MAX_BODY;

/// One signed directory record.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    /// At most [`MAX_KEY`] bytes of printable ASCII without spaces
    /// (`0x21..=0x7e`), not empty, e.g. `node:<32 hex>`, `name:NAME`.
    pub key: String,
    /// The node the record speaks for; it signs it.
    pub subject: NodeId,
    /// The subject's Ed25519 public key: its node id in the network is
    /// the hash of the certificate of this key (checked as for frame
    /// origins, `overlay/origins.rs`).
    pub public_key: [u8; 32],
    /// Newer replaces older; the subject keeps it monotonic.
    pub version: u64,
    /// Unix seconds after which the record is dropped.
    pub expires_unix: u64,
    /// Opaque to the overlay, at most [`MAX_BODY`] bytes.
    pub body: Vec<u8>,
    pub signature: [u8; 64],
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key)
            .field("subject", &self.subject)
            .field("version", &self.version)
            .field("expires_unix", &self.expires_unix)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Why a record is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("key is empty, longer than {MAX_KEY} bytes or not printable ASCII")]
    BadKey,
    #[error("body exceeds {MAX_BODY} bytes")]
    BodyTooLong,
    #[error("the public key does not hash to the subject")]
    WrongSubject,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the record has expired")]
    Expired,
}

/// Whether `key` is a valid record key.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The certificate of `key` in `network` if its node id is `subject`. The
/// node id hashes the RTMFP certificate, whose suite set the key's owner
/// chose: both possible sets are tried.
pub(crate) fn certificate_of(
    network: &NetworkName,
    subject: NodeId,
    key: &[u8; 32],
) -> Option<Certificate> {
    [SuiteSet::ALL, SuiteSet::CHACHA_ONLY]
        .into_iter()
        .filter_map(|s| Certificate::for_public_key(key, network, s).ok())
        .find(|c| c.node_id() == subject)
}

impl Record {
    /// A record for `key` signed by `identity` (its subject).
    pub fn sign(
        identity: &Identity,
        key: impl Into<String>,
        version: u64,
        expires_unix: u64,
        body: Vec<u8>,
    ) -> Result<Record, RecordError> {
        let mut r = Record {
            key: key.into(),
            subject: identity.node_id(),
            public_key: identity.certificate().public_key(),
            version,
            expires_unix,
            body,
            signature: [0; 64],
        };
        r.check_shape()?;
        r.signature = identity.sign(&r.signed_bytes());
        Ok(r)
    }

    /// The record's ring position.
    pub fn dir_key(&self) -> DirKey {
        DirKey::of(&self.key)
    }

    /// Key and body within their bounds.
    pub fn check_shape(&self) -> Result<(), RecordError> {
        if !valid_key(&self.key) {
            return Err(RecordError::BadKey);
        }
        if self.body.len() > MAX_BODY {
            return Err(RecordError::BodyTooLong);
        }
        Ok(())
    }

    /// Whether the record has expired at `unix_now`.
    pub fn is_expired(&self, unix_now: u64) -> bool {
        self.expires_unix <= unix_now
    }

    /// Shape, subject (the key hashes to it in `network`) and signature.
    /// Expiry is the caller's (it knows the time).
    pub fn verify(&self, network: &NetworkName) -> Result<(), RecordError> {
        self.check_shape()?;
        let cert = certificate_of(network, self.subject, &self.public_key)
            .ok_or(RecordError::WrongSubject)?;
        if !cert.verify(&self.signed_bytes(), &self.signature) {
            return Err(RecordError::BadSignature);
        }
        Ok(())
    }

    /// What the subject signs: [`RECORD_DOMAIN`], then the encoding
    /// without the signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RECORD_DOMAIN.len() + self.encoded_len());
        v.extend_from_slice(RECORD_DOMAIN);
        self.put_unsigned(&mut v);
        v
    }

    /// Length of the encoding.
    pub fn encoded_len(&self) -> usize {
        RECORD_FIXED_LEN + self.key.len() + self.body.len()
    }

    fn put_unsigned(&self, out: &mut Vec<u8>) {
        // Shape-checked callers only: the key fits a u8, the body a u16.
        out.push(self.key.len().min(MAX_KEY) as u8);
        out.extend_from_slice(&self.key.as_bytes()[..self.key.len().min(MAX_KEY)]);
        out.extend_from_slice(&self.subject.to_bytes());
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.expires_unix.to_be_bytes());
        let body = &self.body[..self.body.len().min(MAX_BODY)];
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }

    /// Append the encoding to `out`; fails if key or body is out of
    /// bounds.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.check_shape().map_err(|e| match e {
            RecordError::BodyTooLong => WireError::TooMany {
                what: "record body bytes",
                count: self.body.len(),
                max: MAX_BODY,
            },
            _ => WireError::BadKey,
        })?;
        self.put_unsigned(out);
        out.extend_from_slice(&self.signature);
        Ok(())
    }

    /// Encode into a fresh buffer.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut v)?;
        Ok(v)
    }

    /// Decode exactly one record (no trailing bytes).
    pub fn decode(buf: &[u8]) -> Result<Record, WireError> {
        let mut r = crate::wire::Reader::new(buf);
        let rec = r.record()?;
        r.finish()?;
        Ok(rec)
    }
}

impl crate::wire::Reader<'_> {
    /// A record (used by the control decoder).
    pub(crate) fn record(&mut self) -> Result<Record, WireError> {
        let key_len = usize::from(self.u8()?);
        if key_len > MAX_KEY {
            return Err(WireError::TooMany {
                what: "key bytes",
                count: key_len,
                max: MAX_KEY,
            });
        }
        let key = std::str::from_utf8(self.take(key_len)?)
            .map_err(|_| WireError::BadKey)?
            .to_owned();
        if !valid_key(&key) {
            return Err(WireError::BadKey);
        }
        let subject = self.node_id()?;
        let public_key = self.array()?;
        let version = self.u64()?;
        let expires_unix = self.u64()?;
        let body_len = usize::from(self.u16()?);
        if body_len > MAX_BODY {
            return Err(WireError::TooMany {
                what: "record body bytes",
                count: body_len,
                max: MAX_BODY,
            });
        }
        let body = self.take(body_len)?.to_vec();
        let signature = self.array()?;
        Ok(Record {
            key,
            subject,
            public_key,
            version,
            expires_unix,
            body,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net() -> NetworkName {
        NetworkName::new("lab").unwrap()
    }

    #[test]
    fn golden_bytes_and_round_trip() {
        let r = Record {
            key: "name:ab".into(),
            subject: NodeId(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            public_key: [0x11; 32],
            version: 0x0102,
            expires_unix: 1_700_000_000,
            body: vec![0xaa, 0xbb],
            signature: [0x22; 64],
        };
        let b = r.encode().unwrap();
        let mut want = vec![7];
        want.extend(b"name:ab");
        want.extend(1..=16u8);
        want.extend([0x11; 32]);
        want.extend([0, 0, 0, 0, 0, 0, 1, 2]);
        want.extend(1_700_000_000u64.to_be_bytes());
        want.extend([0, 2, 0xaa, 0xbb]);
        want.extend([0x22; 64]);
        assert_eq!(b, want);
        assert_eq!(b.len(), r.encoded_len());
        assert_eq!(Record::decode(&b).unwrap(), r);
        for n in 0..b.len() {
            assert!(Record::decode(&b[..n]).is_err());
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(Record::decode(&long), Err(WireError::TrailingBytes(1)));
        // Key with a space, an empty key, a key of 97 bytes: refused.
        let mut sp = b.clone();
        sp[3] = b' ';
        assert_eq!(Record::decode(&sp), Err(WireError::BadKey));
        assert_eq!(Record::decode(&[0]), Err(WireError::BadKey));
        assert!(matches!(
            Record::decode(&[97]),
            Err(WireError::TooMany { .. })
        ));
        // Body length above the bound: refused before reading it.
        let mut big = vec![1, b'k'];
        big.extend([0u8; 16 + 32 + 16]);
        big.extend(2049u16.to_be_bytes());
        assert!(matches!(
            Record::decode(&big),
            Err(WireError::TooMany { .. })
        ));
    }

    #[test]
    fn signatures_bind_every_field_and_the_subject() {
        let id = Identity::from_secret_key_bytes([5; 32], &net());
        let other = Identity::from_secret_key_bytes([6; 32], &net());
        let r = Record::sign(&id, "node:x", 3, 100, b"body".to_vec()).unwrap();
        assert_eq!(r.verify(&net()), Ok(()));
        assert_eq!(r.subject, id.node_id());
        assert!(r.signed_bytes().starts_with(RECORD_DOMAIN));
        // Another network: the key hashes to another node id.
        let net2 = NetworkName::new("other").unwrap();
        assert_eq!(r.verify(&net2), Err(RecordError::WrongSubject));
        for tamper in 0..5 {
            let mut t = r.clone();
            match tamper {
                0 => t.key.push('y'),
                1 => t.version += 1,
                2 => t.expires_unix += 1,
                3 => t.body.push(0),
                _ => t.signature[0] ^= 1,
            }
            assert_eq!(t.verify(&net()), Err(RecordError::BadSignature), "{tamper}");
        }
        // Another node's key under this subject, or its signature.
        let mut stolen = r.clone();
        stolen.public_key = other.certificate().public_key();
        assert_eq!(stolen.verify(&net()), Err(RecordError::WrongSubject));
        let forged = Record {
            subject: other.node_id(),
            public_key: other.certificate().public_key(),
            ..r.clone()
        };
        assert_eq!(forged.verify(&net()), Err(RecordError::BadSignature));
        assert_eq!(
            Record::sign(&id, "a b", 1, 1, vec![]).err(),
            Some(RecordError::BadKey)
        );
        assert_eq!(
            Record::sign(&id, "k", 1, 1, vec![0; MAX_BODY + 1]).err(),
            Some(RecordError::BodyTooLong)
        );
        assert!(r.is_expired(100) && !r.is_expired(99));
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Record::decode(&b);
        }

        #[test]
        fn round_trip(key in "[!-~]{1,96}", v: u64, e: u64, body in proptest::collection::vec(any::<u8>(), 0..300), sig in proptest::collection::vec(any::<u8>(), 64)) {
            let mut signature = [0u8; 64];
            signature.copy_from_slice(&sig);
            let r = Record { key, subject: NodeId(v as u128 * 3), public_key: [7; 32], version: v, expires_unix: e, body, signature };
            let b = r.encode().unwrap();
            prop_assert_eq!(Record::decode(&b).unwrap(), r);
        }
    }
}
