//! Revocation lists: the nodes a network CA has removed
//! (`docs/membership.md` 3).
//!
//! ```text
//! off  len  field
//! 0    1    format version (1)
//! 1    1    n = network name length, 1..=32
//! 2    n    network name, [a-z0-9-]
//! +0   32   issuer: the CA's Ed25519 public key
//! +32  8    list version, >= 1, big-endian; a newer list has a higher one
//! +40  8    issued at, seconds since the Unix epoch
//! +48  2    k = number of entries, 0..=8192
//! +50  ...  k entries, strictly ascending: kind 1 and a 16-byte node id,
//!           or kind 2 and a 32-byte Ed25519 public key
//! end  64   Ed25519 signature by the issuer over
//!           "ringlan revocation list v1\0" || every byte before it
//! ```
//!
//! Every list is complete: a new version holds every entry of the one
//! before (`ringlan ca revoke` extends the list it is given), so a member
//! only ever keeps the newest list.

use std::collections::BTreeSet;

use ringlan_tunnel::crypto::NetworkName;

use super::cert::NodeCert;
use super::{encode_head, CaKey, DecodeError, Reader, Rejected, Signed, SignedBody};

/// Format version of revocation lists.
pub const VERSION: u8 = 1;
/// Signature domain: prefixed to the body before signing.
pub const DOMAIN: &[u8] = b"ringlan revocation list v1\0";
/// Most entries in one list (a list is at most about 270 KiB).
pub const MAX_REVOKED: usize = 8192;

const KIND_NODE_ID: u8 = 1;
const KIND_KEY: u8 = 2;

/// One revoked node. Ordered as encoded: node ids before keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Revoked {
    /// A node id (one RTMFP certificate of the node).
    NodeId([u8; 16]),
    /// An Ed25519 public key: every certificate and node id of that key.
    Key([u8; 32]),
}

/// The signed content of a revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListBody {
    pub network: NetworkName,
    /// The CA's public key. [`ListBody::sign`] sets it to the signer's.
    pub issuer: CaKey,
    /// >= 1; a list replaces every list with a lower version.
    pub version: u64,
    /// Seconds since the Unix epoch.
    pub issued_at: u64,
    /// Strictly ascending, at most [`MAX_REVOKED`].
    pub revoked: Vec<Revoked>,
}

/// Why bytes are not a revocation list, or a body cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("revocation list: {0}")]
    Decode(#[from] DecodeError),
    #[error("revocation list: version 0")]
    ZeroVersion,
    #[error("revocation list: more than {MAX_REVOKED} entries")]
    TooMany,
    #[error("revocation list: entry kind {0} is neither 1 (node id) nor 2 (key)")]
    BadKind(u8),
    #[error("revocation list: entries not strictly ascending")]
    NotCanonical,
}

impl ListBody {
    /// The first list of a network.
    pub fn first(network: NetworkName, issued_at: u64) -> ListBody {
        ListBody {
            network,
            issuer: CaKey([0; 32]),
            version: 1,
            issued_at,
            revoked: Vec::new(),
        }
    }

    /// The next version: this list's entries and `add`. `None` when the
    /// version cannot grow.
    pub fn next(&self, add: impl IntoIterator<Item = Revoked>, issued_at: u64) -> Option<ListBody> {
        let revoked: BTreeSet<Revoked> = self.revoked.iter().copied().chain(add).collect();
        Some(ListBody {
            network: self.network.clone(),
            issuer: self.issuer,
            version: self.version.checked_add(1)?,
            issued_at,
            revoked: revoked.into_iter().collect(),
        })
    }
}

/// A revocation list with its signature.
pub type RevocationList = Signed<ListBody>;

impl SignedBody for ListBody {
    const DOMAIN: &'static [u8] = DOMAIN;
    type Error = ListError;

    fn issuer(&self) -> CaKey {
        self.issuer
    }

    fn set_issuer(&mut self, ca: CaKey) {
        self.issuer = ca;
    }

    fn network(&self) -> &NetworkName {
        &self.network
    }

    fn encode(&self) -> Result<Vec<u8>, ListError> {
        if self.version == 0 {
            return Err(ListError::ZeroVersion);
        }
        let count = u16::try_from(self.revoked.len())
            .ok()
            .filter(|&n| usize::from(n) <= MAX_REVOKED)
            .ok_or(ListError::TooMany)?;
        if !self.revoked.windows(2).all(|w| w[0] < w[1]) {
            return Err(ListError::NotCanonical);
        }
        let mut b = Vec::with_capacity(100 + 33 * self.revoked.len());
        encode_head(&mut b, VERSION, &self.network, &self.issuer);
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&self.issued_at.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        for r in &self.revoked {
            match r {
                Revoked::NodeId(id) => {
                    b.push(KIND_NODE_ID);
                    b.extend_from_slice(id);
                }
                Revoked::Key(k) => {
                    b.push(KIND_KEY);
                    b.extend_from_slice(k);
                }
            }
        }
        Ok(b)
    }

    fn decode(bytes: &[u8]) -> Result<ListBody, ListError> {
        let mut r = Reader::new(bytes);
        let (network, issuer) = r.head(VERSION)?;
        let list_version = r.u64()?;
        if list_version == 0 {
            return Err(ListError::ZeroVersion);
        }
        let issued_at = r.u64()?;
        let count = usize::from(r.u16()?);
        if count > MAX_REVOKED {
            return Err(ListError::TooMany);
        }
        // Each entry takes at least 17 bytes: never allocate beyond the input.
        let mut revoked: Vec<Revoked> = Vec::with_capacity(count.min(r.remaining() / 17));
        for _ in 0..count {
            let entry = match r.u8()? {
                KIND_NODE_ID => Revoked::NodeId(r.array()?),
                KIND_KEY => Revoked::Key(r.array()?),
                other => return Err(ListError::BadKind(other)),
            };
            if revoked.last().is_some_and(|last| *last >= entry) {
                return Err(ListError::NotCanonical);
            }
            revoked.push(entry);
        }
        r.finish()?;
        Ok(ListBody {
            network,
            issuer,
            version: list_version,
            issued_at,
            revoked,
        })
    }
}

impl RevocationList {
    /// Signed by `ca` for `network`.
    pub fn check(&self, ca: &CaKey, network: &NetworkName) -> Result<(), Rejected> {
        self.check_origin(ca, network)
    }

    /// Whether this list replaces `older`: same CA and network, higher
    /// version. (Both must have passed [`RevocationList::check`].)
    pub fn supersedes(&self, older: &RevocationList) -> bool {
        self.body().issuer == older.body().issuer
            && self.body().network == older.body().network
            && self.body().version > older.body().version
    }

    /// Whether the node with Ed25519 key `key` and node id `node_id` is
    /// revoked.
    pub fn revokes(&self, key: &[u8; 32], node_id: Option<[u8; 16]>) -> bool {
        self.body()
            .revoked
            .binary_search(&Revoked::Key(*key))
            .is_ok()
            || node_id.is_some_and(|id| {
                self.body()
                    .revoked
                    .binary_search(&Revoked::NodeId(id))
                    .is_ok()
            })
    }

    /// Whether the certified node is revoked (by key or by its node id).
    pub fn revokes_cert(&self, cert: &NodeCert) -> bool {
        self.revokes(
            &cert.body().node_key,
            cert.node_id().map(|id| id.to_bytes()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::cert::tests::{arb_network, body, ca, node_key};
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    fn home() -> NetworkName {
        NetworkName::new("home").unwrap()
    }

    #[test]
    fn versions_and_revocation() {
        let ca = ca();
        let pk = CaKey(ca.verifying_key().to_bytes());
        let cert = body().sign(&ca).unwrap();
        let v1 = ListBody::first(home(), 1_800_000_000).sign(&ca).unwrap();
        assert_eq!(v1.check(&pk, &home()), Ok(()));
        assert!(!v1.revokes_cert(&cert));
        let v2 = v1
            .body()
            .next([Revoked::Key(cert.body().node_key)], 1_800_000_100)
            .unwrap()
            .sign(&ca)
            .unwrap();
        assert_eq!(v2.body().version, 2);
        assert!(v2.revokes_cert(&cert));
        assert!(v2.supersedes(&v1));
        assert!(!v1.supersedes(&v2));
        assert!(!v2.supersedes(&v2));
        // By node id only.
        let id = cert.node_id().unwrap().to_bytes();
        let v3 = v2
            .body()
            .next([Revoked::NodeId(id), Revoked::Key(cert.body().node_key)], 0)
            .unwrap()
            .sign(&ca)
            .unwrap();
        assert_eq!(v3.body().revoked.len(), 2, "entries merge");
        assert!(v3.revokes(&node_key(99), Some(id)));
        assert!(!v3.revokes(&node_key(99), None));
        // Another CA's list of the same network and a higher version does
        // not supersede, and does not check.
        let mut foreign_body = v3.body().next([], 0).unwrap();
        foreign_body.revoked.clear();
        let foreign = foreign_body
            .sign(&SigningKey::from_bytes(&[9; 32]))
            .unwrap();
        assert!(!foreign.supersedes(&v3));
        assert!(matches!(
            foreign.check(&pk, &home()),
            Err(Rejected::WrongIssuer(_))
        ));
        assert!(matches!(
            v3.check(&pk, &NetworkName::new("work").unwrap()),
            Err(Rejected::WrongNetwork(_))
        ));
        let mut max = v3.body().clone();
        max.version = u64::MAX;
        assert!(max.next([], 0).is_none());
    }

    #[test]
    fn truncated_extended_or_flipped_fails() {
        let ca = ca();
        let pk = CaKey(ca.verifying_key().to_bytes());
        let list = ListBody::first(home(), 5)
            .next([Revoked::Key(node_key(3)), Revoked::NodeId([4; 16])], 6)
            .unwrap()
            .sign(&ca)
            .unwrap();
        crate::membership::signed::assert_tamper_evident(&list, |l| l.check(&pk, &home()).is_ok());
    }

    #[test]
    fn malformed() {
        let list = ListBody::first(home(), 5)
            .next([Revoked::Key(node_key(3))], 6)
            .unwrap()
            .sign(&ca())
            .unwrap();
        let mut b = list.body().clone();
        b.revoked = vec![Revoked::Key([1; 32]), Revoked::NodeId([1; 16])];
        assert_eq!(b.encode(), Err(ListError::NotCanonical));
        b.revoked = vec![Revoked::NodeId([1; 16]); 2];
        assert_eq!(b.encode(), Err(ListError::NotCanonical));
        b.revoked = (0..=MAX_REVOKED as u32)
            .map(|i| {
                let mut id = [0; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                Revoked::NodeId(id)
            })
            .collect();
        assert_eq!(b.encode(), Err(ListError::TooMany));
        b.revoked.clear();
        b.version = 0;
        assert_eq!(b.encode(), Err(ListError::ZeroVersion));
        // A count beyond the input does not allocate for it.
        let mut bytes = list.body().encode().unwrap();
        let at = bytes.len() - 33 - 2;
        bytes[at..at + 2].copy_from_slice(&8192u16.to_be_bytes());
        assert_eq!(ListBody::decode(&bytes), Err(DecodeError::Truncated.into()));
    }

    fn arb_revoked() -> impl Strategy<Value = Revoked> {
        prop_oneof![
            any::<[u8; 16]>().prop_map(Revoked::NodeId),
            any::<[u8; 32]>().prop_map(Revoked::Key),
        ]
    }

    proptest! {
        #[test]
        fn body_round_trip(
            network in arb_network(),
            version in 1u64..,
            issued_at in any::<u64>(),
            revoked in proptest::collection::btree_set(arb_revoked(), 0..50),
        ) {
            let body = ListBody {
                network,
                issuer: CaKey(node_key(5)),
                version,
                issued_at,
                revoked: revoked.into_iter().collect(),
            };
            let bytes = body.encode().unwrap();
            let again = ListBody::decode(&bytes).unwrap();
            prop_assert_eq!(&again, &body);
            prop_assert_eq!(again.encode().unwrap(), bytes);
        }

        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(l) = RevocationList::decode(&bytes) {
                let mut again = l.body().encode().unwrap();
                again.extend_from_slice(l.signature());
                prop_assert_eq!(again, bytes);
            }
        }
    }
}
