//! A NAT router's translation table, after RFC 4787 and Linux netfilter.
//!
//! A *mapping* binds an inside transport address (host address and socket
//! port) to a public port of the router. Its [`Mapping`] behaviour decides
//! which outbound datagrams share it:
//!
//! - [`Mapping::EndpointIndependent`] (RFC 4787 4.1, Linux `masquerade`):
//!   one public port per inside address, whatever the destination; the
//!   inside port is kept when free ([`NatModel::preserve_port`]);
//! - [`Mapping::EndpointDependent`] (Linux `masquerade fully-random`, the
//!   "symmetric" NAT): a fresh random public port in 1024..=65535 per
//!   (inside address, destination).
//!
//! Each mapping remembers the remote endpoints it sent to (*permissions*,
//! conntrack entries). [`Filtering`] (RFC 4787 5) decides which inbound
//! datagrams a mapping admits: from anyone, from an address it sent to,
//! or only from the exact address and port it sent to (port-restricted,
//! what Linux conntrack does). A permission lasts [`NatModel::udp_timeout`]
//! (30 s, `nf_conntrack_udp_timeout`) after the last datagram, or
//! [`NatModel::stream_timeout`] (120 s, `nf_conntrack_udp_timeout_stream`)
//! once traffic has gone both ways; a mapping whose permissions all
//! expired is gone and its port free again.
//!
//! Rebinding: [`Nat::flush`] forgets every mapping (`conntrack -F`, a
//! router reboot) and [`Nat::renumber`] also gives the router a new
//! public address (an ISP address change). No hairpinning: a datagram
//! from inside to the router's own public address is dropped (Linux does
//! not loop it back without extra rules).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ringlan_tunnel::Rng;

/// How outbound datagrams share a public port (RFC 4787 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// One public port per inside address ("cone-like").
    EndpointIndependent,
    /// One public port per (inside address, destination) ("symmetric").
    EndpointDependent,
}

/// Which inbound datagrams a mapping admits (RFC 4787 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtering {
    /// From anyone ("full cone").
    EndpointIndependent,
    /// From any port of an address the mapping sent to.
    AddressDependent,
    /// Only from an address and port the mapping sent to (Linux conntrack).
    AddressAndPortDependent,
}

/// A NAT's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatModel {
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// Keep the inside port as the public port when it is free (Linux
    /// masquerade without `random`).
    pub preserve_port: bool,
    /// A permission's lifetime after its last datagram while only one
    /// direction has been seen.
    pub udp_timeout: Duration,
    /// A permission's lifetime after its last datagram once both
    /// directions have been seen.
    pub stream_timeout: Duration,
}

impl NatModel {
    /// Linux `masquerade`: endpoint-independent mapping with port
    /// preservation, port-restricted filtering.
    pub fn cone() -> NatModel {
        NatModel {
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::AddressAndPortDependent,
            preserve_port: true,
            udp_timeout: Duration::from_secs(30),
            stream_timeout: Duration::from_secs(120),
        }
    }

    /// Linux `masquerade fully-random`: endpoint-dependent mapping with a
    /// random port per destination, port-restricted filtering.
    pub fn symmetric() -> NatModel {
        NatModel {
            mapping: Mapping::EndpointDependent,
            preserve_port: false,
            ..NatModel::cone()
        }
    }
}

/// What the NAT did with datagrams, for assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Mappings created.
    pub mappings: u64,
    /// Mappings that expired (all permissions timed out).
    pub expired: u64,
    /// Outbound datagrams translated.
    pub outbound: u64,
    /// Inbound datagrams admitted and translated.
    pub inbound: u64,
    /// Inbound datagrams to a port with a mapping that the filter refused.
    pub filtered: u64,
    /// Inbound datagrams to a port without a mapping.
    pub unmapped: u64,
    /// Datagrams from inside to the router's own public address.
    pub hairpin: u64,
}

#[derive(Debug, Clone, Copy)]
struct Permission {
    last: Instant,
    /// Traffic came back from this remote: the longer timeout applies.
    replied: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    inside: SocketAddr,
    /// The destination for an endpoint-dependent mapping.
    dest: Option<SocketAddr>,
    perms: BTreeMap<SocketAddr, Permission>,
}

/// One NAT router: its public address, model and translation table.
#[derive(Debug)]
pub struct Nat {
    model: NatModel,
    public_ip: IpAddr,
    /// Public port -> mapping.
    entries: BTreeMap<u16, Entry>,
    /// (inside, destination for endpoint-dependent) -> public port.
    by_inside: BTreeMap<(SocketAddr, Option<SocketAddr>), u16>,
    counters: NatCounters,
}

impl Nat {
    pub(super) fn new(model: NatModel, public_ip: IpAddr) -> Nat {
        Nat {
            model,
            public_ip,
            entries: BTreeMap::new(),
            by_inside: BTreeMap::new(),
            counters: NatCounters::default(),
        }
    }

    pub fn public_ip(&self) -> IpAddr {
        self.public_ip
    }

    pub fn model(&self) -> NatModel {
        self.model
    }

    pub fn counters(&self) -> NatCounters {
        self.counters
    }

    /// Change the behaviour for mappings made from now on; the existing
    /// ones stay (an nftables rule replaced, conntrack kept).
    pub fn set_model(&mut self, model: NatModel) {
        self.model = model;
    }

    /// Forget every mapping (`conntrack -F`).
    pub fn flush(&mut self) {
        self.entries.clear();
        self.by_inside.clear();
    }

    /// A new public address; every mapping is forgotten with the old one.
    pub fn renumber(&mut self, ip: IpAddr) {
        self.public_ip = ip;
        self.flush();
    }

    /// The live mappings as (public address, inside address, destination
    /// of an endpoint-dependent mapping).
    pub fn mappings(
        &self,
        now: Instant,
    ) -> impl Iterator<Item = (SocketAddr, SocketAddr, Option<SocketAddr>)> + '_ {
        self.entries
            .iter()
            .filter(move |(_, e)| self.alive(now, e))
            .map(|(port, e)| (SocketAddr::new(self.public_ip, *port), e.inside, e.dest))
    }

    /// The public address datagrams from `inside` to `dest` would carry
    /// now, if a mapping for them exists.
    pub fn mapping_for(
        &self,
        now: Instant,
        inside: SocketAddr,
        dest: SocketAddr,
    ) -> Option<SocketAddr> {
        self.lookup(now, inside, dest)
            .map(|p| SocketAddr::new(self.public_ip, p))
    }

    fn key_dest(&self, dest: SocketAddr) -> Option<SocketAddr> {
        match self.model.mapping {
            Mapping::EndpointIndependent => None,
            Mapping::EndpointDependent => Some(dest),
        }
    }

    fn fresh(&self, now: Instant, p: &Permission) -> bool {
        let ttl = if p.replied {
            self.model.stream_timeout
        } else {
            self.model.udp_timeout
        };
        now.saturating_duration_since(p.last) < ttl
    }

    fn alive(&self, now: Instant, e: &Entry) -> bool {
        e.perms.values().any(|p| self.fresh(now, p))
    }

    /// Drop the mapping on `port` if it expired; whether one is left.
    fn expire(&mut self, now: Instant, port: u16) -> bool {
        let Some(e) = self.entries.get(&port) else {
            return false;
        };
        if self.alive(now, e) {
            return true;
        }
        let key = (e.inside, e.dest);
        self.entries.remove(&port);
        if self.by_inside.get(&key) == Some(&port) {
            self.by_inside.remove(&key);
        }
        self.counters.expired += 1;
        false
    }

    /// The live mapping datagrams from `inside` to `dest` use: one made
    /// for this destination, else the endpoint-independent one if the
    /// model is endpoint-independent or it has a permission for `dest`.
    /// Conntrack keeps using an entry when the rules change, so after
    /// [`Nat::set_model`] old destinations keep their mappings.
    fn lookup(&self, now: Instant, inside: SocketAddr, dest: SocketAddr) -> Option<u16> {
        let live = |key| {
            let port = *self.by_inside.get(&key)?;
            let e = self.entries.get(&port)?;
            self.alive(now, e).then_some((port, e))
        };
        if let Some((p, _)) = live((inside, Some(dest))) {
            return Some(p);
        }
        let (p, e) = live((inside, None))?;
        let usable = self.model.mapping == Mapping::EndpointIndependent
            || e.perms.get(&dest).is_some_and(|perm| self.fresh(now, perm));
        usable.then_some(p)
    }

    fn free_port(&self, rng: &mut Rng, want: Option<u16>) -> Option<u16> {
        if let Some(p) = want.filter(|p| !self.entries.contains_key(p)) {
            return Some(p);
        }
        // Random probing, then a scan: the table is never near full in
        // the scenarios, but a full table must not loop forever.
        for _ in 0..64 {
            let p = 1024 + (rng.u32() % (65536 - 1024)) as u16;
            if !self.entries.contains_key(&p) {
                return Some(p);
            }
        }
        (1024..=u16::MAX).find(|p| !self.entries.contains_key(p))
    }

    /// Translate an outbound datagram from `inside` to `dest`: the public
    /// source address it leaves with, or `None` if the table is full or
    /// `dest` is the router itself (no hairpinning).
    pub(super) fn outbound(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        inside: SocketAddr,
        dest: SocketAddr,
    ) -> Option<SocketAddr> {
        if dest.ip() == self.public_ip {
            self.counters.hairpin += 1;
            return None;
        }
        let key = (inside, self.key_dest(dest));
        let port = match self.lookup(now, inside, dest) {
            Some(p) => p,
            None => {
                // Free the ports of this address's expired mappings.
                for k in [(inside, Some(dest)), (inside, None)] {
                    if let Some(p) = self.by_inside.get(&k).copied() {
                        self.expire(now, p);
                    }
                }
                let want = self.model.preserve_port.then_some(inside.port());
                let p = self.free_port(rng, want)?;
                self.entries.insert(
                    p,
                    Entry {
                        inside,
                        dest: key.1,
                        perms: BTreeMap::new(),
                    },
                );
                self.by_inside.insert(key, p);
                self.counters.mappings += 1;
                p
            }
        };
        let e = self.entries.get_mut(&port)?;
        let replied = e.perms.get(&dest).is_some_and(|p| p.replied);
        e.perms.insert(dest, Permission { last: now, replied });
        self.counters.outbound += 1;
        Some(SocketAddr::new(self.public_ip, port))
    }

    /// Admit an inbound datagram from `from` to public `port`: the inside
    /// address it goes to, or `None` if there is no mapping or the filter
    /// refuses it.
    pub(super) fn inbound(
        &mut self,
        now: Instant,
        port: u16,
        from: SocketAddr,
    ) -> Option<SocketAddr> {
        if !self.expire(now, port) {
            self.counters.unmapped += 1;
            return None;
        }
        let (filtering, e) = (self.model.filtering, &self.entries[&port]);
        let admitted = match filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => e
                .perms
                .iter()
                .any(|(r, p)| r.ip() == from.ip() && self.fresh(now, p)),
            Filtering::AddressAndPortDependent => {
                e.perms.get(&from).is_some_and(|p| self.fresh(now, p))
            }
        };
        if !admitted {
            self.counters.filtered += 1;
            return None;
        }
        let e = self.entries.get_mut(&port)?;
        e.perms.insert(
            from,
            Permission {
                last: now,
                replied: true,
            },
        );
        self.counters.inbound += 1;
        Some(e.inside)
    }
}
