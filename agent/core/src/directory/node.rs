//! The node's side of member records: publishing its own, the record
//! check it installs on the overlay, lookups and scans, and the answers
//! the runtime gets ([`NodeEvent::Resolved`], [`NodeEvent::Members`]).

use std::net::IpAddr;
use std::time::Instant;

use ringlan_overlay::{Mac, Record};
use ringlan_tunnel::NodeId;

use super::report::MembersReport;
use super::{
    body, record_fits, Conflict, Member, MemberBody, MemberKey, MemberRequest, FIRST_PUBLISH,
    LIFETIME, LINKS_REPUBLISH, MIN_REPUBLISH, REPUBLISH, SETTLE,
};
use crate::candidates::nat_status;
use crate::status::DirectoryStatus;
use crate::{Node, NodeEvent};

/// Which of our records a publication puts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publish {
    /// Every key (`node:`, `name:`, `mac:`, `ip:`).
    All,
    /// Only `node:` (our links changed).
    NodeRecord,
}

/// What a directory request of the overlay was for.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Resolve {
        request: MemberRequest,
        key: MemberKey,
    },
    Members {
        request: MemberRequest,
    },
    /// One of our own `name:` / `ip:` keys, looked up after publishing:
    /// another subject there is a conflict.
    OwnCheck,
}

impl Node {
    /// Install the record check on the overlay: member records must fit
    /// their key and subject and, with a network CA, be backed by a valid
    /// certificate of an unrevoked member (`directory::record_fits`).
    /// Again whenever a newer revocation list is installed.
    pub(crate) fn install_record_check(&mut self) {
        let ca = self.adm.ca_check();
        self.overlay
            .set_record_check(Box::new(move |r: &Record, unix: u64| {
                record_fits(&r.key, r.subject, &r.public_key, &r.body, ca.as_ref(), unix)
            }));
    }

    /// A frame from our TAP: its source IP, when it carries our MAC, is
    /// one of our overlay addresses.
    pub(crate) fn learn_from_tap(&mut self, now: Instant, frame: &[u8]) {
        if frame.get(6..12) != Some(&self.dir.own_mac.0[..]) {
            return;
        }
        if let Some(ip) = ringlan_overlay::source::source_ip(frame) {
            self.dir.saw_own_ip(now, ip);
        }
    }

    /// Our member record as of `now`.
    pub(crate) fn own_body(&self, now: Instant) -> MemberBody {
        let mut ips = self.dir.own_ips();
        // With a CA, only what the certificate allows (members refuse the
        // whole record otherwise).
        if let Some(policy) = self.adm.own_source_policy() {
            if let Some(prefixes) = &policy.ips {
                ips.retain(|ip| prefixes.iter().any(|p| p.contains(*ip)));
            }
        }
        let nat = nat_status(&self.mapped, &self.alt_mapped);
        MemberBody {
            node_id: self.node_id(),
            name: self.base.node_name.clone(),
            certificate: self.adm.own_certificate().map(|c| c.to_vec()),
            ips: body::canonical_ips(&ips),
            mac: self.dir.own_mac,
            nat: nat.mapping,
            reflexive: nat.reflexive,
            local: self.local_addrs.clone(),
            relay: self.dir.relays,
            published_unix: self.unix_now(now),
            links: crate::topology::claims_of(&self.own_links()),
        }
    }

    /// Every housekeeping tick: learnt IPs expire; publish when due (first
    /// soon after the first session, again once the ring settled, then
    /// every [`REPUBLISH`]) or when the record changed.
    pub(crate) fn directory_tick(&mut self, now: Instant) {
        self.dir.expire_learnt(now);
        let Some(next) = self.dir.next_publish else {
            if self.joined_ring() {
                self.dir.next_publish = Some(now + FIRST_PUBLISH);
            }
            return;
        };
        let since = |d| self.dir.last_publish.is_none_or(|t| now >= t + d);
        let changed = self.dir.dirty && since(MIN_REPUBLISH);
        if now >= next || changed {
            self.publish(now, Publish::All);
        } else if since(LINKS_REPUBLISH) {
            let links = crate::topology::claims_of(&self.own_links());
            if self
                .dir
                .published
                .as_ref()
                .is_some_and(|b| b.links != links)
            {
                self.publish(now, Publish::NodeRecord);
            }
        }
    }

    /// Whether our records can reach their holders: the join answered
    /// and, for a ring position, a ring successor linked (before, a put
    /// would only reach an introducer, which holds no records); an
    /// introducer needs one session.
    fn joined_ring(&self) -> bool {
        if self.peers.open().next().is_none() || !self.overlay.is_joined() {
            return false;
        }
        !self.overlay.in_ring()
            || self
                .overlay
                .neighbours()
                .iter()
                .any(|n| n.kind == ringlan_overlay::LinkKind::Successor)
    }

    /// Publish our records under every key (and look our previous `name:`
    /// and `ip:` keys up: another subject there is a conflict), or only
    /// the `node:` record (our links changed). Only the `node:` record
    /// lists our links: the others stay version-1 bodies that nodes from
    /// before link lists read too (`body` module doc).
    pub(crate) fn publish(&mut self, now: Instant, what: Publish) {
        let unix = self.unix_now(now);
        let body = self.own_body(now);
        let without_links = MemberBody {
            links: Vec::new(),
            ..body.clone()
        };
        let (bytes, plain) = match (body.encode(), without_links.encode()) {
            (Ok(b), Ok(p)) => (b, p),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "own member record not encodable");
                return;
            }
        };
        if let (Publish::All, Some(prev)) = (what, self.dir.published.take()) {
            for k in MemberKey::all_for(&prev) {
                if matches!(k, MemberKey::Name(_) | MemberKey::Ip(_)) {
                    let req = self.overlay.dir_get(now, &k.key());
                    self.dir.pending.insert(req, Pending::OwnCheck);
                }
            }
        }
        let version = self.dir.next_version(unix);
        let expires = unix.saturating_add(LIFETIME.as_secs());
        let mut refused = 0;
        let keys = match what {
            Publish::All => MemberKey::all_for(&body),
            Publish::NodeRecord => vec![MemberKey::Node(body.node_id)],
        };
        for k in keys {
            let key = k.key();
            let content = match k {
                MemberKey::Node(_) => bytes.clone(),
                _ => plain.clone(),
            };
            let put = Record::sign(&self.dir.identity, key.clone(), version, expires, content)
                .map_err(ringlan_overlay::DirError::from)
                .and_then(|r| self.overlay.dir_put(now, r));
            if let Err(e) = put {
                refused += 1;
                tracing::debug!(%key, error = %e, "own record not put");
            }
        }
        tracing::debug!(version, ips = ?body.ips, links = body.links.len(), refused, ?what, "member records published");
        self.dir.last_publish = Some(now);
        if let Publish::All = what {
            self.dir.publications += 1;
            self.dir.next_publish = Some(
                now + if self.dir.publications == 1 {
                    SETTLE
                } else {
                    REPUBLISH
                },
            );
            self.dir.dirty = false;
        }
        self.dir.published = Some(body);
        self.process_overlay(now);
    }

    /// Ask the directory for the network's members (a scan of every
    /// `node:` record, walking the ring); the answer is a
    /// [`NodeEvent::Members`] with the returned id.
    pub fn members(&mut self, now: Instant) -> MemberRequest {
        let request = self.dir.request_id();
        let req = self.overlay.dir_scan(now);
        self.dir.pending.insert(req, Pending::Members { request });
        self.process_overlay(now);
        request
    }

    /// Look a member up by node id, name, IP or MAC; the answer is a
    /// [`NodeEvent::Resolved`] with the returned id (at once for this
    /// node itself and for records held here, else after the routed get
    /// returns or times out).
    pub fn resolve(&mut self, now: Instant, key: MemberKey) -> MemberRequest {
        let request = self.dir.request_id();
        let own = self
            .dir
            .published
            .as_ref()
            .filter(|b| key.fits(b))
            .map(|_| self.own_member(now));
        if let Some(m) = own {
            self.events.push_back(NodeEvent::Resolved {
                request,
                key,
                member: Some(m),
            });
            return request;
        }
        let req = self.overlay.dir_get(now, &key.key());
        self.dir
            .pending
            .insert(req, Pending::Resolve { request, key });
        self.process_overlay(now);
        request
    }

    /// [`Node::resolve`] by name (`NAME` of `NAME.DOMAIN`; ASCII case does
    /// not matter).
    pub fn resolve_name(&mut self, now: Instant, name: &str) -> MemberRequest {
        self.resolve(now, MemberKey::Name(name.to_string()))
    }

    /// What the node knows of `key` without asking anyone: itself, the
    /// records it holds for the directory, the members it fetched. `fresh`:
    /// the record has not expired at `now`.
    pub fn cached_member(&self, now: Instant, key: &MemberKey) -> Option<(Member, bool)> {
        let unix = self.unix_now(now);
        if self.dir.published.as_ref().is_some_and(|b| key.fits(b)) {
            return Some((self.own_member(now), true));
        }
        let held = self
            .overlay
            .dir_local(&key.key())
            .and_then(|r| member_of(r, key));
        let m = match (held, self.dir.cached(key)) {
            (Some(h), Some(c)) if c.body.published_unix > h.body.published_unix => c.clone(),
            (Some(h), _) => h,
            (None, Some(c)) => c.clone(),
            (None, None) => return None,
        };
        let fresh = m.fresh(unix);
        Some((m, fresh))
    }

    /// The MAC of the member the directory binds `ip` to, as far as this
    /// node knows without asking (see [`Node::cached_member`]), and whether
    /// that record is fresh. With a network CA every record was accepted
    /// only with the IP inside its certificate's prefixes.
    pub fn cached_member_by_ip(&self, now: Instant, ip: IpAddr) -> Option<(Mac, bool)> {
        self.cached_member(now, &MemberKey::Ip(ip))
            .map(|(m, fresh)| (m.body.mac, fresh))
    }

    /// This node as a member (its last published record).
    pub(crate) fn own_member(&self, now: Instant) -> Member {
        let body = self
            .dir
            .published
            .clone()
            .unwrap_or_else(|| self.own_body(now));
        let expires_unix = body.published_unix.saturating_add(LIFETIME.as_secs());
        Member { body, expires_unix }
    }

    /// Conflicts noted so far (status).
    pub fn member_conflicts(&self) -> Vec<Conflict> {
        self.dir.conflicts().collect()
    }

    /// The directory part of the status.
    pub(crate) fn directory_status(&self) -> DirectoryStatus {
        DirectoryStatus {
            records_held: self.overlay.dir_len(),
            members_cached: self.dir.cache_len(),
            published_version: self.dir.version,
            learnt_ips: self.dir.learnt.iter().map(|(ip, _)| *ip).collect(),
            conflicts: self.dir.conflicts().map(|c| c.status()).collect(),
        }
    }

    /// The answer to `ringlan members` from a [`NodeEvent::Members`].
    pub fn members_report(
        &self,
        now: Instant,
        members: &[Member],
        complete: bool,
    ) -> MembersReport {
        MembersReport::new(
            members,
            complete,
            self.unix_now(now),
            self.node_id(),
            self.dir.conflicts(),
        )
    }

    /// An overlay directory answer.
    pub(crate) fn directory_event(&mut self, now: Instant, ev: ringlan_overlay::Event) {
        let unix = self.unix_now(now);
        match ev {
            ringlan_overlay::Event::DirResult {
                request,
                key: _,
                record,
            } => match self.dir.pending.remove(&request) {
                Some(Pending::Resolve { request, key }) => {
                    let member = record.as_ref().and_then(|r| member_of(r, &key));
                    if let Some(m) = &member {
                        let found = self.dir.remember(m.clone(), unix);
                        self.log_conflicts(found);
                    }
                    self.events.push_back(NodeEvent::Resolved {
                        request,
                        key,
                        member,
                    });
                }
                Some(Pending::OwnCheck) => {
                    let me = self.node_id();
                    if let Some(r) = record.filter(|r| r.subject != me) {
                        let found = self.dir.conflict(&r.key, [me, r.subject]);
                        self.log_conflicts(found.into_iter().collect());
                    }
                }
                Some(Pending::Members { .. }) | None => {}
            },
            ringlan_overlay::Event::DirScan {
                request,
                records,
                complete,
            } => {
                let Some(Pending::Members { request }) = self.dir.pending.remove(&request) else {
                    return;
                };
                let me = self.node_id();
                let mut members: Vec<Member> = records
                    .iter()
                    .filter_map(|r| member_of(r, &MemberKey::Node(r.subject)))
                    .filter(|m| m.fresh(unix) && m.body.node_id != me)
                    .collect();
                if self.dir.published.is_some() {
                    members.push(self.own_member(now));
                }
                let mut found = Vec::new();
                for m in &members {
                    if m.body.node_id != me {
                        found.extend(self.dir.remember(m.clone(), unix));
                    }
                }
                found.extend(
                    claims(&members)
                        .into_iter()
                        .filter_map(|(key, ids)| self.dir.conflict(&key, ids)),
                );
                self.log_conflicts(found);
                members.sort_by(|a, b| {
                    (a.body.name.to_ascii_lowercase(), a.body.node_id)
                        .cmp(&(b.body.name.to_ascii_lowercase(), b.body.node_id))
                });
                self.events.push_back(NodeEvent::Members {
                    request,
                    members,
                    complete,
                });
            }
            _ => {}
        }
    }

    fn log_conflicts(&self, found: Vec<Conflict>) {
        for c in found {
            let who: Vec<String> = c.claimants.iter().map(|n| n.to_string()).collect();
            tracing::warn!(key = %c.key, claimants = ?who, "directory conflict: several members claim one name or IP");
        }
    }
}

/// The member a record describes, when it fits `key` (the overlay ran the
/// record check already; this decodes and re-checks the binding).
fn member_of(r: &Record, key: &MemberKey) -> Option<Member> {
    let body = MemberBody::decode(&r.body).ok()?;
    let expires_unix = r.expires_unix;
    (body.node_id == r.subject && key.fits(&body) && key.key() == r.key)
        .then_some(Member { body, expires_unix })
}

/// Names and IPs claimed by more than one of `members`.
fn claims(members: &[Member]) -> Vec<(String, Vec<NodeId>)> {
    let mut by: std::collections::BTreeMap<String, Vec<NodeId>> = Default::default();
    for m in members {
        let keys = MemberKey::all_for(&m.body);
        for k in keys
            .iter()
            .filter(|k| matches!(k, MemberKey::Name(_) | MemberKey::Ip(_)))
        {
            by.entry(k.key()).or_default().push(m.body.node_id);
        }
    }
    by.into_iter().filter(|(_, v)| v.len() > 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::body::tests::sample;

    #[test]
    fn claims_finds_shared_names_and_ips_only() {
        let a = Member {
            body: sample(),
            expires_unix: 10,
        };
        let mut b = a.clone();
        b.body.node_id = NodeId(9);
        b.body.mac = Mac([2, 0, 0, 0, 0, 9]);
        b.body.ips = vec!["10.77.0.2".parse().unwrap()];
        b.body.name = "other".into();
        let c = claims(&[a.clone(), b.clone()]);
        assert_eq!(
            c,
            vec![("ip:10.77.0.2".to_string(), vec![a.body.node_id, NodeId(9)])]
        );
        b.body.name = "LAPTOP".into();
        assert_eq!(claims(&[a, b]).len(), 2);
    }
}
