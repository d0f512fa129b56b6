//! The directory on the ring (`docs/directory.md`): signed records stored
//! on the node that succeeds their key on the Symphony ring and replicated
//! on the next `replicas` successors. The ring the overlay already runs is
//! the distributed hash table; nothing here opens a session of its own.
//!
//! | file | decides |
//! |---|---|
//! | `record.rs` | what a record is, its encoding, signature and checks |
//! | `store.rs` | the bounded table of held records: versions, conflicts, expiry, eviction |
//! | `replication.rs` | which nodes are responsible for a position, and what to hand over when the ring changes (pure functions) |
//!
//! The overlay's side (routing puts, gets and scans, re-replication on
//! ring change, the API [`Overlay::dir_put`](crate::Overlay::dir_put),
//! [`Overlay::dir_get`](crate::Overlay::dir_get),
//! [`Overlay::dir_scan`](crate::Overlay::dir_scan)) is in
//! `overlay/directory.rs`.

mod record;
pub mod replication;
mod store;

pub(crate) use record::certificate_of;
pub use record::{
    valid_key, Record, RecordError, MAX_BODY, MAX_KEY, MAX_RECORD_LEN, RECORD_DOMAIN,
};
pub use store::{PutOutcome, Store};

use crate::overlay::Budget;
use ringlan_tunnel::NodeId;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Domain prefix of key hashing.
pub const KEY_DOMAIN: &[u8] = b"ringlan-dir/1";
/// Prefix of the member records a scan enumerates.
pub const NODE_PREFIX: &str = "node:";

/// A record's ring position: the first 128 bits (big-endian) of
/// SHA-256(`"ringlan-dir/1"` || key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirKey(pub NodeId);

impl DirKey {
    pub fn of(key: &str) -> DirKey {
        let mut h = Sha256::new();
        h.update(KEY_DOMAIN);
        h.update(key.as_bytes());
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        DirKey(NodeId::from_bytes(b))
    }

    /// The ring position.
    pub fn position(self) -> NodeId {
        self.0
    }
}

/// A get or scan in flight; echoed in its result event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirRequest(pub u64);

/// Why [`Overlay::dir_put`](crate::Overlay::dir_put) refused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DirError {
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The node has no identity, so no network to check subjects in.
    #[error("the node has no identity")]
    NoIdentity,
    /// The record check ([`Overlay::set_record_check`](crate::Overlay::set_record_check)) refused it.
    #[error("refused by the record check")]
    Refused,
    /// Held here under the same version with another content.
    #[error("another record holds this version")]
    Conflict,
    /// Held here under a newer version.
    #[error("a newer version is held")]
    Stale,
}

/// Directory parameters (`Config::directory`).
#[derive(Debug, Clone, PartialEq)]
pub struct DirConfig {
    /// Successors holding a copy besides the node succeeding the key
    /// (default 3: four copies). Nodes keep at least `replicas + 1` ring
    /// members known on each side to decide what they are responsible
    /// for.
    pub replicas: usize,
    /// Records held at most (default 16,384; about 40 MB at the largest
    /// record size, a few MB for member records).
    pub max_records: usize,
    /// Records held per subject at most (default 16: a member publishes
    /// `node:`, `name:`, `mac:` and one `ip:` per address).
    pub max_per_subject: usize,
    /// A record this node is no longer responsible for is kept this long
    /// after handing it over (default 60 s), so that a get routed on a
    /// stale view still finds it.
    pub handover_grace: Duration,
    /// A scan not complete after this long is reported incomplete
    /// (default 60 s).
    pub scan_timeout: Duration,
    /// Records a scan collects at most (default 4,096); more are counted
    /// and the scan is reported incomplete.
    pub max_scan_records: usize,
    /// Gets and scans of this node in flight at most (default 256); more
    /// are answered at once as not found / incomplete.
    pub max_pending: usize,
    /// Directory messages (puts, gets, scan steps, pages) accepted per
    /// sending link; over it they are dropped and counted.
    pub per_peer: Budget,
}

impl Default for DirConfig {
    fn default() -> Self {
        DirConfig {
            replicas: 3,
            max_records: 16_384,
            max_per_subject: 16,
            handover_grace: Duration::from_secs(60),
            scan_timeout: Duration::from_secs(60),
            max_scan_records: 4096,
            max_pending: 256,
            per_peer: Budget::new(2048.0, 256.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_the_documented_one() {
        // SHA-256("ringlan-dir/1" || "name:alice"), first 16 bytes; the
        // same value is printed in docs/directory.md.
        let k = DirKey::of("name:alice");
        let mut h = Sha256::new();
        h.update(b"ringlan-dir/1name:alice");
        let d = h.finalize();
        assert_eq!(k.0.to_bytes()[..], d[..16]);
        assert_eq!(k.0, NodeId(0x8659_e9fc_fabb_9d72_cedd_5f82_d443_00e8));
        assert_ne!(DirKey::of("name:alice"), DirKey::of("name:bob"));
    }
}
