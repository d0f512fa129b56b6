//! Member records: what this node publishes about itself in the
//! directory on the ring, what it learns of other members from it, and
//! the lookups the rest of the agent makes (`docs/directory.md` "Member
//! records").
//!
//! - **Publishing**: the node's [`MemberBody`] (node id, name,
//!   certificate, overlay IPs, MAC, NAT kind, reflexive and local
//!   addresses, relay capability, when) goes into the overlay's directory
//!   under `node:<32 hex id>`, `name:<name, lowercase>`, `ip:<addr>` (each
//!   overlay IP) and `mac:<aa:bb:..>`, each a record signed by the node,
//!   living [`LIFETIME`], first once the node joined the ring, then
//!   republished every [`REPUBLISH`] and soon after its content changes (an IP learnt). Its
//!   `node:` record also lists the node's current links
//!   (`body::LinkClaim`, for `ringlan topology`): when only they changed,
//!   only that record is published again, at most once per
//!   [`LINKS_REPUBLISH`]. Versions are
//!   `unix seconds * 1000 + counter`: monotonic across restarts as long as
//!   the clock is.
//! - **Overlay IPs**: the configured `interface.addresses` plus the source
//!   IPs of the node's own outgoing ARP, IPv4 and IPv6 frames (source MAC
//!   = its TAP's MAC): DHCP and SLAAC addresses are learnt the first time
//!   the host uses them. Link-local and unspecified sources are skipped
//!   (`body::listable`). A learnt IP not seen for [`LEARNT_FOR`] is
//!   dropped; at most [`MAX_LEARNT`] (the least recently seen goes). With
//!   a network CA only IPs inside the certificate's prefixes are
//!   published (members would refuse the record otherwise).
//! - **Acceptance** ([`record_fits`]): the overlay checks the signature and
//!   that the key hashes to the subject; this module adds that the body
//!   names the subject, fits the key it is stored under, and with a CA that
//!   its certificate is valid for this network, names the subject's key,
//!   and allows its MAC and IPs (the same rules as frame binding:
//!   `dataplane::source_policy`).
//! - **Cache**: records the node fetched (lookups, scans) are kept until
//!   they expire, at most [`MAX_CACHED`] members; records the node holds
//!   as a replica are read in place. [`Node::cached_member_by_ip`] and
//!   [`Node::cached_member`] answer from both without a message.
//! - **Conflicts**: two subjects claiming one name or IP, seen in a scan,
//!   a lookup, or when the node checks its own keys after publishing: a
//!   `warn!` once per conflict and a status line; at most
//!   [`MAX_CONFLICTS`] are remembered.

pub mod body;
mod node;
pub mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ringlan_overlay::{DirRequest, Mac};
use ringlan_tunnel::crypto::Identity;
use ringlan_tunnel::NodeId;

pub use body::{BodyError, LinkClaim, LinkRole, MemberBody, PathClass};
pub use report::{MemberStatus, MembersReport};

/// How long a published record lives.
pub const LIFETIME: Duration = Duration::from_secs(600);
/// How often the node publishes its records again.
pub const REPUBLISH: Duration = Duration::from_secs(180);
/// Publishing after a change waits at least this long after the last
/// publication (a burst of learnt IPs makes one publication).
pub const MIN_REPUBLISH: Duration = Duration::from_secs(2);
/// Publishing the `node:` record again because the node's links changed
/// waits at least this long after the last publication: links come and go
/// with the ring, and each publication is a put with three replicas.
pub const LINKS_REPUBLISH: Duration = Duration::from_secs(10);
/// Once the node joined the ring (a successor linked): publish this soon,
/// then again after [`SETTLE`] (the ring is still forming), then every
/// [`REPUBLISH`].
pub const FIRST_PUBLISH: Duration = Duration::from_secs(2);
pub const SETTLE: Duration = Duration::from_secs(20);
/// A learnt IP not used for this long leaves the record.
pub const LEARNT_FOR: Duration = Duration::from_secs(1800);
/// Most learnt IPs kept.
pub const MAX_LEARNT: usize = 8;
/// Most members cached from lookups and scans.
pub const MAX_CACHED: usize = 4096;
/// Most conflicts remembered (status lists them).
pub const MAX_CONFLICTS: usize = 64;
/// A scan for `ringlan members` not complete after this long is reported
/// incomplete (the overlay's `DirConfig::scan_timeout`).
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// A lookup or scan, as the node hands it out; its answer is a
/// [`crate::NodeEvent::Resolved`] or [`crate::NodeEvent::Members`] with
/// the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberRequest(pub u64);

/// A directory key of a member record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberKey {
    Node(NodeId),
    /// Matched without regard to ASCII case.
    Name(String),
    Ip(IpAddr),
    Mac(Mac),
}

impl MemberKey {
    /// The key string in the directory.
    pub fn key(&self) -> String {
        match self {
            MemberKey::Node(id) => format!("node:{id}"),
            MemberKey::Name(n) => format!("name:{}", n.to_ascii_lowercase()),
            MemberKey::Ip(ip) => format!("ip:{ip}"),
            MemberKey::Mac(m) => format!("mac:{m}"),
        }
    }

    /// Whether `body` may be stored under this key: it names this node id,
    /// name, IP or MAC.
    pub fn fits(&self, body: &MemberBody) -> bool {
        match self {
            MemberKey::Node(id) => body.node_id == *id,
            MemberKey::Name(n) => body.name.eq_ignore_ascii_case(n),
            MemberKey::Ip(ip) => body.ips.contains(ip),
            MemberKey::Mac(m) => body.mac == *m,
        }
    }

    /// Parses a key string (`node:`, `name:`, `ip:`, `mac:`); the
    /// canonical form only (what [`MemberKey::key`] writes).
    pub fn parse(key: &str) -> Option<MemberKey> {
        let (kind, v) = key.split_once(':')?;
        let k = match kind {
            "node" if v.len() == 32 => MemberKey::Node(v.parse().ok()?),
            "name" => MemberKey::Name(v.to_string()),
            "ip" => MemberKey::Ip(v.parse().ok()?),
            "mac" => MemberKey::Mac(v.parse().ok()?),
            _ => return None,
        };
        (k.key() == key).then_some(k)
    }

    /// The keys a body is published under.
    pub fn all_for(body: &MemberBody) -> Vec<MemberKey> {
        let mut v = vec![
            MemberKey::Node(body.node_id),
            MemberKey::Name(body.name.to_ascii_lowercase()),
            MemberKey::Mac(body.mac),
        ];
        v.extend(body.ips.iter().map(|ip| MemberKey::Ip(*ip)));
        v
    }
}

/// A member as the directory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub body: MemberBody,
    /// When its record expires (seconds since the Unix epoch).
    pub expires_unix: u64,
}

impl Member {
    /// Its record has not expired at `unix`.
    pub fn fresh(&self, unix: u64) -> bool {
        unix < self.expires_unix
    }
}

/// Whether a record's body may be stored under `key` for `subject`, whose
/// Ed25519 key is `public_key`, at `unix`, given the network CA (`None`:
/// no CA, the signature is the whole check). See the module doc.
pub fn record_fits(
    key: &str,
    subject: NodeId,
    public_key: &[u8; 32],
    body: &[u8],
    ca: Option<&CaCheck>,
    unix: u64,
) -> bool {
    let (Some(k), Ok(b)) = (MemberKey::parse(key), MemberBody::decode(body)) else {
        return false;
    };
    if b.node_id != subject || !k.fits(&b) {
        return false;
    }
    match ca {
        None => true,
        Some(ca) => ca.allows(&b, public_key, unix),
    }
}

/// What a member record must satisfy in a network with a CA.
#[derive(Debug, Clone)]
pub struct CaCheck {
    pub ca: crate::membership::CaKey,
    pub network: ringlan_tunnel::crypto::NetworkName,
    /// Node ids the newest revocation list revokes.
    pub banned: BTreeSet<NodeId>,
}

impl CaCheck {
    /// The body's certificate verifies under the CA for this network at
    /// `unix`, names `public_key`, and allows the body's MAC and IPs.
    pub fn allows(&self, b: &MemberBody, public_key: &[u8; 32], unix: u64) -> bool {
        let Some(cert) = b
            .certificate
            .as_deref()
            .and_then(|c| crate::membership::NodeCert::decode(c).ok())
        else {
            return false;
        };
        if cert
            .check(&self.ca, &self.network, unix, crate::membership::CLOCK_SKEW)
            .is_err()
            || cert.body().node_key != *public_key
            || self.banned.contains(&b.node_id)
        {
            return false;
        }
        let policy = crate::dataplane::source_policy(&cert);
        policy.allows_mac(b.mac)
            && b.ips.iter().all(|ip| {
                policy
                    .ips
                    .as_ref()
                    .is_none_or(|p| p.iter().any(|p| p.contains(*ip)))
            })
    }
}

/// One conflict: a name or IP claimed by several members.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// `name:...` or `ip:...`.
    pub key: String,
    pub claimants: BTreeSet<NodeId>,
}

impl Conflict {
    pub fn status(&self) -> crate::status::ConflictStatus {
        crate::status::ConflictStatus {
            key: self.key.clone(),
            claimants: self.claimants.iter().map(|n| n.to_string()).collect(),
        }
    }
}

/// The node's directory state (see the module doc).
#[derive(Debug)]
pub(crate) struct Directory {
    /// Signs our records.
    identity: Identity,
    /// Our TAP's MAC: frames from it teach us our IPs.
    pub(crate) own_mac: Mac,
    /// We relay for others (`relay.enabled`).
    pub(crate) relays: bool,
    /// Overlay directory requests in flight and what they are for; the
    /// overlay answers each (found, not found, or timed out) and bounds
    /// them (`DirConfig::max_pending`).
    pub(crate) pending: BTreeMap<DirRequest, node::Pending>,
    /// Configured overlay IPs (`interface.addresses`).
    pub(crate) configured: Vec<IpAddr>,
    /// Learnt overlay IPs and when each was last seen.
    pub(crate) learnt: Vec<(IpAddr, Instant)>,
    /// The last IP learnt or refreshed (checked first on every frame).
    last_seen_ip: Option<IpAddr>,
    /// Content changed since the last publication.
    pub(crate) dirty: bool,
    /// Next scheduled publication (`None`: not before the first session).
    pub(crate) next_publish: Option<Instant>,
    pub(crate) last_publish: Option<Instant>,
    /// Publications so far (the schedule: first, settle, then periodic).
    pub(crate) publications: u64,
    /// The version of the last publication.
    pub(crate) version: u64,
    /// The body last published.
    pub(crate) published: Option<MemberBody>,
    /// Members fetched, by node id, and the keys that found them.
    cache: HashMap<NodeId, Member>,
    index: HashMap<String, NodeId>,
    /// name/ip key -> claimants seen.
    conflicts: BTreeMap<String, BTreeSet<NodeId>>,
    pub(crate) next_request: u64,
}

impl Directory {
    pub(crate) fn new(
        identity: Identity,
        own_mac: Mac,
        relays: bool,
        configured: Vec<IpAddr>,
    ) -> Directory {
        Directory {
            identity,
            own_mac,
            relays,
            pending: BTreeMap::new(),
            configured: body::canonical_ips(&configured),
            learnt: Vec::new(),
            last_seen_ip: None,
            dirty: false,
            next_publish: None,
            last_publish: None,
            publications: 0,
            version: 0,
            published: None,
            cache: HashMap::new(),
            index: HashMap::new(),
            conflicts: BTreeMap::new(),
            next_request: 1,
        }
    }

    pub(crate) fn request_id(&mut self) -> MemberRequest {
        let r = MemberRequest(self.next_request);
        self.next_request += 1;
        r
    }

    /// A source IP of our own outgoing frame at `now`: learnt (and the
    /// record marked for republishing) when new and listable.
    pub(crate) fn saw_own_ip(&mut self, now: Instant, ip: IpAddr) {
        if self.last_seen_ip == Some(ip) {
            // Refreshed at most once per second per frame burst: the
            // expiry is half an hour, a second is noise.
            if let Some(e) = self.learnt.iter_mut().find(|(a, _)| *a == ip) {
                if now.saturating_duration_since(e.1) >= Duration::from_secs(1) {
                    e.1 = now;
                }
            }
            return;
        }
        if !body::listable(ip) || self.configured.contains(&ip) {
            return;
        }
        self.last_seen_ip = Some(ip);
        if let Some(e) = self.learnt.iter_mut().find(|(a, _)| *a == ip) {
            e.1 = now;
            return;
        }
        if self.learnt.len() >= MAX_LEARNT {
            let oldest = self
                .learnt
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                self.learnt.swap_remove(i);
            }
        }
        tracing::info!(%ip, "overlay address learnt from the TAP");
        self.learnt.push((ip, now));
        self.dirty = true;
    }

    /// Learnt IPs unused for [`LEARNT_FOR`] go (the record changes).
    pub(crate) fn expire_learnt(&mut self, now: Instant) {
        let before = self.learnt.len();
        self.learnt
            .retain(|(_, t)| now.saturating_duration_since(*t) < LEARNT_FOR);
        if self.learnt.len() != before {
            self.last_seen_ip = None;
            self.dirty = true;
        }
    }

    /// Our overlay IPs: configured, then learnt (the record's order is
    /// ascending; this order decides which are kept past the bound).
    pub(crate) fn own_ips(&self) -> Vec<IpAddr> {
        let mut v = self.configured.clone();
        v.extend(self.learnt.iter().map(|(ip, _)| *ip));
        v
    }

    /// The next record version at `unix`: above the last one, and at least
    /// `unix * 1000`.
    pub(crate) fn next_version(&mut self, unix: u64) -> u64 {
        self.version = (self.version + 1).max(unix.saturating_mul(1000));
        self.version
    }

    /// Keep a member learnt from the directory; conflicts with what is
    /// known are noted. Returns new conflicts (to log once).
    pub(crate) fn remember(&mut self, m: Member, unix: u64) -> Vec<Conflict> {
        if !m.fresh(unix) {
            return Vec::new();
        }
        let id = m.body.node_id;
        if !self.cache.contains_key(&id) && self.cache.len() >= MAX_CACHED {
            self.evict(unix);
        }
        let mut found = Vec::new();
        if let Some(old) = self.cache.get(&id) {
            if old.body.published_unix > m.body.published_unix {
                return found;
            }
            for k in MemberKey::all_for(&old.body) {
                let key = k.key();
                if self.index.get(&key) == Some(&id) {
                    self.index.remove(&key);
                }
            }
        }
        for k in MemberKey::all_for(&m.body) {
            let key = k.key();
            if let Some(other) = self.index.get(&key).copied() {
                if other != id && self.cache.get(&other).is_some_and(|o| o.fresh(unix)) {
                    found.extend(self.conflict(&key, [other, id]));
                }
            }
            self.index.insert(key, id);
        }
        self.cache.insert(id, m);
        found
    }

    /// Note that `claimants` claim `key` (a `name:` or `ip:` key);
    /// returns the conflict when it is new or has a new claimant.
    pub(crate) fn conflict(
        &mut self,
        key: &str,
        claimants: impl IntoIterator<Item = NodeId>,
    ) -> Option<Conflict> {
        if !(key.starts_with("name:") || key.starts_with("ip:")) {
            return None;
        }
        if !self.conflicts.contains_key(key) && self.conflicts.len() >= MAX_CONFLICTS {
            return None;
        }
        let set = self.conflicts.entry(key.to_string()).or_default();
        let before = set.len();
        set.extend(claimants);
        (set.len() > before && set.len() > 1).then(|| Conflict {
            key: key.to_string(),
            claimants: set.clone(),
        })
    }

    pub(crate) fn conflicts(&self) -> impl Iterator<Item = Conflict> + '_ {
        self.conflicts
            .iter()
            .filter(|(_, c)| c.len() > 1)
            .map(|(k, c)| Conflict {
                key: k.clone(),
                claimants: c.clone(),
            })
    }

    /// Expired members first, then the one expiring soonest.
    fn evict(&mut self, unix: u64) {
        let expired: Vec<NodeId> = self
            .cache
            .iter()
            .filter(|(_, m)| !m.fresh(unix))
            .map(|(id, _)| *id)
            .collect();
        let victims = if expired.is_empty() {
            self.cache
                .iter()
                .min_by_key(|(_, m)| m.expires_unix)
                .map(|(id, _)| vec![*id])
                .unwrap_or_default()
        } else {
            expired
        };
        for id in victims {
            if let Some(m) = self.cache.remove(&id) {
                for k in MemberKey::all_for(&m.body) {
                    let key = k.key();
                    if self.index.get(&key) == Some(&id) {
                        self.index.remove(&key);
                    }
                }
            }
        }
    }

    /// The cached member `key` finds (it still fits the key).
    pub(crate) fn cached(&self, key: &MemberKey) -> Option<&Member> {
        let id = match key {
            MemberKey::Node(id) => *id,
            k => *self.index.get(&k.key())?,
        };
        self.cache.get(&id).filter(|m| key.fits(&m.body))
    }

    pub(crate) fn cache_len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use body::tests::sample;

    fn test_dir(configured: Vec<IpAddr>) -> Directory {
        let name = ringlan_tunnel::crypto::NetworkName::new("test").unwrap();
        let id = Identity::from_secret_key_bytes([3; 32], &name);
        Directory::new(id, Mac([2, 0, 0, 0, 0, 1]), false, configured)
    }

    fn member(id: u128, name: &str, ip: &str, published: u64) -> Member {
        let mut b = sample();
        b.node_id = NodeId(id);
        b.name = name.into();
        b.ips = vec![ip.parse().unwrap()];
        b.mac = Mac([2, 0, 0, 0, 0, id as u8]);
        b.published_unix = published;
        Member {
            body: b,
            expires_unix: published + 600,
        }
    }

    #[test]
    fn keys_round_trip_and_fit_their_body() {
        let b = sample();
        let keys = MemberKey::all_for(&b);
        let strings: Vec<String> = keys.iter().map(|k| k.key()).collect();
        assert_eq!(
            strings,
            [
                "node:0123456789abcdef0011223344556677",
                "name:laptop",
                "mac:42:65:61:f6:73:31",
                "ip:10.77.0.2",
                "ip:fd77::2",
            ]
        );
        for k in &keys {
            assert_eq!(MemberKey::parse(&k.key()).as_ref(), Some(k));
            assert!(k.fits(&b));
        }
        // Only the canonical spelling parses.
        for bad in [
            "name:Laptop",
            "ip:010.77.0.2",
            "ip:FD77::2",
            "node:0123",
            "x:y",
            "mac:42-65-61-f6-73-31",
            "nokey",
        ] {
            assert_eq!(MemberKey::parse(bad), None, "{bad}");
        }
        assert!(MemberKey::Name("LAPTOP".into()).fits(&b));
        assert!(!MemberKey::Ip("10.77.0.3".parse().unwrap()).fits(&b));
    }

    #[test]
    fn record_fits_its_key_and_subject() {
        let b = sample();
        let bytes = b.encode().unwrap();
        let pk = [1u8; 32];
        for k in MemberKey::all_for(&b) {
            assert!(record_fits(&k.key(), b.node_id, &pk, &bytes, None, 0));
        }
        // Another subject, another name, an IP it does not list, garbage.
        assert!(!record_fits("name:laptop", NodeId(5), &pk, &bytes, None, 0));
        assert!(!record_fits(
            "name:desktop",
            b.node_id,
            &pk,
            &bytes,
            None,
            0
        ));
        assert!(!record_fits(
            "ip:10.77.0.9",
            b.node_id,
            &pk,
            &bytes,
            None,
            0
        ));
        assert!(!record_fits(
            "name:laptop",
            b.node_id,
            &pk,
            b"junk",
            None,
            0
        ));
        assert!(!record_fits(
            "other:laptop",
            b.node_id,
            &pk,
            &bytes,
            None,
            0
        ));
    }

    #[test]
    fn with_a_ca_the_certificate_must_back_the_record() {
        use crate::membership::cert::tests::{body as cert_body, ca, node_key, NODE_KEY};
        use crate::membership::{parse_hex, CaKey, SignedBody};
        let cb = cert_body();
        let check = CaCheck {
            ca: CaKey(ca().verifying_key().to_bytes()),
            network: cb.network.clone(),
            banned: BTreeSet::new(),
        };
        let pk: [u8; 32] = parse_hex(NODE_KEY).unwrap();
        let unix = cb.not_before + 10;
        let mut b = sample();
        b.ips = vec!["10.77.0.2".parse().unwrap(), "fd77::2".parse().unwrap()];
        b.mac = ringlan_overlay::auto_mac(&pk);
        b.certificate = Some(cb.clone().sign(&ca()).unwrap().as_bytes().to_vec());
        assert!(check.allows(&b, &pk, unix));
        let ok = b.encode().unwrap();
        assert!(record_fits(
            "name:laptop",
            b.node_id,
            &pk,
            &ok,
            Some(&check),
            unix
        ));
        // Without the CA nothing is asked of the certificate.
        assert!(record_fits("name:laptop", b.node_id, &pk, &ok, None, unix));

        let refused = |b: &MemberBody, pk: &[u8; 32], unix: u64| !check.allows(b, pk, unix);
        // No certificate.
        let mut no = b.clone();
        no.certificate = None;
        assert!(refused(&no, &pk, unix));
        assert!(!record_fits(
            "name:laptop",
            b.node_id,
            &pk,
            &no.encode().unwrap(),
            Some(&check),
            unix
        ));
        // A valid certificate, for another key than the record's signer.
        assert!(refused(&b, &node_key(5), unix));
        // Expired, or signed by another CA.
        assert!(refused(&b, &pk, cb.not_after + 86_400));
        let mut other = b.clone();
        other.certificate = Some(
            cb.clone()
                .sign(&ed25519_dalek::SigningKey::from_bytes(&[9; 32]))
                .unwrap()
                .as_bytes()
                .to_vec(),
        );
        assert!(refused(&other, &pk, unix));
        // An IP outside the certificate's prefixes, a MAC not its auto MAC.
        let mut ip = b.clone();
        ip.ips.push("10.77.0.3".parse().unwrap());
        assert!(refused(&ip, &pk, unix));
        let mut mac = b.clone();
        mac.mac = Mac([2, 0, 0, 0, 0, 1]);
        assert!(refused(&mac, &pk, unix));
        // Garbage where the certificate goes.
        let mut junk = b.clone();
        junk.certificate = Some(vec![1, 2, 3]);
        assert!(refused(&junk, &pk, unix));
        // Revoked.
        let mut banned = check.clone();
        banned.banned.insert(b.node_id);
        assert!(!banned.allows(&b, &pk, unix));
    }

    #[test]
    fn learnt_ips_are_bounded_and_expire() {
        let t0 = Instant::now();
        let mut d = test_dir(vec!["10.77.0.2".parse().unwrap()]);
        d.saw_own_ip(t0, "10.77.0.2".parse().unwrap());
        d.saw_own_ip(t0, "169.254.1.1".parse().unwrap());
        d.saw_own_ip(t0, "fe80::1".parse().unwrap());
        assert!(!d.dirty && d.learnt.is_empty(), "configured and link-local");
        for i in 0..(MAX_LEARNT as u8 + 2) {
            let at = t0 + Duration::from_secs(u64::from(i));
            d.saw_own_ip(at, IpAddr::from([10, 0, 0, i]));
        }
        assert!(d.dirty);
        assert_eq!(d.learnt.len(), MAX_LEARNT);
        assert!(!d
            .learnt
            .iter()
            .any(|(ip, _)| *ip == IpAddr::from([10, 0, 0, 0])));
        assert_eq!(d.own_ips()[0], "10.77.0.2".parse::<IpAddr>().unwrap());
        d.dirty = false;
        d.expire_learnt(t0 + LEARNT_FOR + Duration::from_secs(5));
        assert!(d.dirty);
        assert_eq!(d.learnt.len(), MAX_LEARNT - 4);
    }

    #[test]
    fn versions_are_monotonic() {
        let mut d = test_dir(Vec::new());
        assert_eq!(d.next_version(1_800_000_000), 1_800_000_000_000);
        assert_eq!(d.next_version(1_800_000_000), 1_800_000_000_001);
        // A clock step back does not go back.
        assert_eq!(d.next_version(1_700_000_000), 1_800_000_000_002);
        assert_eq!(d.next_version(1_800_000_001), 1_800_000_001_000);
    }

    #[test]
    fn cache_finds_by_every_key_and_notes_conflicts_once() {
        let mut d = test_dir(Vec::new());
        let a = member(1, "alpha", "10.0.0.1", 1000);
        assert!(d.remember(a.clone(), 1000).is_empty());
        for k in MemberKey::all_for(&a.body) {
            assert_eq!(d.cached(&k), Some(&a), "{k:?}");
        }
        // Alpha moved to another IP: the old key no longer finds it.
        let a2 = member(1, "alpha", "10.0.0.9", 1100);
        assert!(d.remember(a2.clone(), 1100).is_empty());
        assert_eq!(d.cached(&MemberKey::Ip("10.0.0.1".parse().unwrap())), None);
        // An older record does not replace a newer one.
        assert!(d.remember(a.clone(), 1100).is_empty());
        assert_eq!(d.cached(&MemberKey::Node(NodeId(1))), Some(&a2));
        // Beta claims alpha's name: one conflict, reported once.
        let b = member(2, "ALPHA", "10.0.0.2", 1200);
        let c = d.remember(b.clone(), 1200);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].key, "name:alpha");
        assert_eq!(c[0].claimants, [NodeId(1), NodeId(2)].into());
        assert!(d.remember(b, 1201).is_empty());
        assert_eq!(d.conflicts().count(), 1);
        // Expired members are not kept.
        assert!(d
            .remember(member(3, "gamma", "10.0.0.3", 0), 700)
            .is_empty());
        assert_eq!(d.cached(&MemberKey::Node(NodeId(3))), None);
    }

    #[test]
    fn cache_is_bounded() {
        let mut d = test_dir(Vec::new());
        for i in 0..(MAX_CACHED as u128 + 10) {
            let ip = format!("10.{}.{}.1", (i >> 8) as u8, i as u8);
            d.remember(member(i + 1, &format!("n{i}"), &ip, 1000 + i as u64), 1000);
        }
        assert_eq!(d.cache_len(), MAX_CACHED);
        assert!(d.index.len() <= MAX_CACHED * 4);
        // The soonest to expire went; the newest is there.
        assert!(d.cached(&MemberKey::Node(NodeId(1))).is_none());
        assert!(d
            .cached(&MemberKey::Node(NodeId(MAX_CACHED as u128 + 10)))
            .is_some());
    }
}
