//! A deterministic, seeded network simulator for sans-IO machines on a
//! virtual clock: whole nodes ([`crate::Node`]) or bare endpoints, on
//! hosts with several sockets, on the public internet or in sites (LANs)
//! behind NAT routers.
//!
//! # Why a public module
//!
//! The simulator lives in the node crate, not in a test directory, because
//! it is shared: the node crate's own scenario tests (`tests/`), its unit
//! tests, and other crates (the agent, the lab) may drive whole nodes with
//! it without a copy of it. It is plain sans-IO code without dependencies
//! beyond the tunnel crate and costs nothing where unused.
//!
//! # Model
//!
//! - A **host** ([`HostId`]) has one address, a main socket
//!   ([`SocketId::MAIN`], port [`LISTEN_PORT`]) and the extra sockets its
//!   machine opens ([`SocketAction::Open`]: a fresh ephemeral port, which
//!   behind a NAT gets its own mapping; [`SocketAction::Listen`]: a given
//!   port). It sits on the internet
//!   ([`Place::Internet`], a /24 of its own in 198.18.0.0/15) or in a
//!   site ([`Place::Site`]).
//! - A **site** ([`SiteId`]) is a LAN (`10.N.0.0/24` unless given) behind
//!   a NAT router ([`nat`]: endpoint-independent or endpoint-dependent
//!   mapping, port-restricted filtering, timeouts, rebinding) with a
//!   public address in 203.0.113.0/24 and on. Hosts of one site reach
//!   each other's LAN addresses directly; nobody else can.
//! - **Links** ([`LinkModel`]: delay, jitter, loss, duplication, size
//!   limit): every host has an access link (by default 0.5 ms in a site,
//!   10 ms for a public host), every site a WAN link (10 ms). A
//!   datagram crosses the sender's access link, then (leaving a site) the
//!   NAT and the site's WAN link, then (entering a site) the other site's
//!   WAN link and NAT, and last the receiver's access link; each NAT acts
//!   when the datagram reaches it.
//! - **Hosts die and restart**: [`Sim::kill`] drops the machine and its
//!   sockets; datagrams to it vanish. [`Sim::restart`] builds a new one.
//!
//! # Driving
//!
//! The house rule of [`ringlan_tunnel::DatagramMachine`]: after every input the
//! simulator drains the machine's outputs ([`Machine`] names the order)
//! and reads its next deadline. [`Sim::step`] jumps to the earliest
//! wake-up (a datagram reaching a router or host, or a machine's deadline)
//! and processes everything due then. [`Sim::run_until`] steps until a
//! condition holds and panics with a report when it does not within a
//! virtual-time limit, or when time stops advancing (livelock).
//! Commands go through [`Sim::with`], which flushes the host afterwards.
//!
//! Everything random (loss, jitter, NAT ports, ephemeral ports, the
//! machines' seeds) comes from the simulator's seed: one seed, one run, as
//! far as the machines themselves are deterministic.
//!
//! Not modelled: bandwidth and queues (the tunnel crate's own simulator
//! has a bottleneck), ICMP, IPv6, fragmentation; a NAT never hairpins (it
//! drops datagrams from inside to its own public address).

pub mod frames;
mod link;
mod machine;
pub mod nat;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ringlan_tunnel::{Rng, SocketAction, SocketId};

use link::Crossing;
pub use link::LinkModel;
pub use machine::Machine;
pub use nat::{Filtering, Mapping, Nat, NatCounters, NatModel};

/// The port of every host's main socket.
pub const LISTEN_PORT: u16 = 4910;
/// Steps at one instant before [`Sim::run_until`] calls it a livelock.
const LIVELOCK_STEPS: u64 = 200_000;
/// Largest datagram a machine may write.
const MAX_DATAGRAM: usize = 2048;

/// A host of the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub usize);

/// A site: a LAN behind a NAT router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteId(pub usize);

/// Where a host sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A public address of its own.
    Internet,
    /// On a site's LAN, behind its NAT.
    Site(SiteId),
}

/// What a machine factory gets to build a host's machine.
#[derive(Debug, Clone)]
pub struct HostCtx {
    pub now: Instant,
    pub host: HostId,
    /// The host's (interface) address and prefix length.
    pub ip: IpAddr,
    pub prefix: u8,
    /// The main socket's address.
    pub listen: SocketAddr,
    /// A seed for the machine, derived from the simulator's seed, the host
    /// and its incarnation.
    pub seed: [u8; 32],
    /// 0 for the first machine of the host, then 1, 2, ... per restart.
    pub incarnation: u32,
}

/// Network-wide counters of datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams machines sent.
    pub sent: u64,
    /// Datagrams handed to a machine.
    pub delivered: u64,
    /// Lost by a link's loss model.
    pub lost: u64,
    /// Extra copies made by a link's duplication model.
    pub duplicated: u64,
    /// Larger than a link's `max_datagram`.
    pub too_big: u64,
    /// To an address nobody has, or a private address from elsewhere.
    pub unroutable: u64,
    /// Refused by a NAT (no mapping, filter, hairpin).
    pub nat_dropped: u64,
    /// Dropped by the [`Sim::set_drop_filter`] hook.
    pub dropped_by_filter: u64,
    /// Reached a host that is down.
    pub host_down: u64,
    /// Reached a port with no socket.
    pub port_closed: u64,
    /// A machine sent from a socket it had not opened.
    pub unknown_socket: u64,
}

/// Per-host counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCounters {
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub received_bytes: u64,
    /// Frames the machine wrote to its TAP.
    pub frames: u64,
    pub sockets_opened: u64,
    pub sockets_closed: u64,
    /// TCP streams the machine asked to connect: the simulated network
    /// carries UDP only, so each is refused at once (reported closed).
    pub streams_refused: u64,
}

/// Decides per datagram crossing the internet (public source, public
/// destination, bytes) whether it is dropped.
pub type DropFilter = Box<dyn FnMut(SocketAddr, SocketAddr, &[u8]) -> bool>;

/// Why [`Sim::try_run_until`] stopped without its condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The virtual-time limit passed.
    Timeout,
    /// Time stopped advancing: these hosts' deadlines stay due, or
    /// datagrams circle with zero delay.
    Livelock { due: Vec<HostId> },
}

struct Host<M: Machine> {
    place: Place,
    ip: IpAddr,
    prefix: u8,
    machine: Option<M>,
    sockets: BTreeMap<SocketId, u16>,
    ports: BTreeMap<u16, SocketId>,
    next_port: u16,
    access: LinkModel,
    events: Vec<M::Event>,
    frames: Vec<Vec<u8>>,
    counters: HostCounters,
    deadline: Option<Instant>,
    dirty: bool,
    incarnation: u32,
}

struct Site {
    nat: Nat,
    wan: LinkModel,
    lan: Ipv4Addr,
    prefix: u8,
    hosts: BTreeMap<IpAddr, HostId>,
}

impl Site {
    fn on_lan(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(ip) = ip else {
            return false;
        };
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.lan) & mask
    }
}

/// Where a datagram is going next.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Crossing the sender's access link to its router (or the internet).
    Egress(HostId),
    /// Crossing the internet to its destination's router or host.
    Core,
    /// Crossing a site's WAN link to its NAT.
    Inbound(SiteId),
    /// Crossing the receiver's access link.
    Deliver(HostId),
}

struct InFlight {
    stage: Stage,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

/// The simulated network and its hosts.
pub struct Sim<M: Machine> {
    now: Instant,
    start: Instant,
    seed: u64,
    rng: Rng,
    hosts: Vec<Host<M>>,
    sites: Vec<Site>,
    /// Public host addresses.
    public: BTreeMap<IpAddr, HostId>,
    /// Router public addresses.
    routers: BTreeMap<IpAddr, SiteId>,
    next_router: u32,
    /// Datagrams on links by (arrival, sequence number).
    queue: BTreeMap<(Instant, u64), InFlight>,
    seq: u64,
    counters: Counters,
    drop_filter: Option<DropFilter>,
    delays: Vec<Duration>,
    buf: Vec<u8>,
    /// Access link of hosts added to sites from now on (a LAN).
    pub default_access: LinkModel,
    /// Access link of public hosts added from now on (their way into the
    /// internet, like a site's WAN link).
    pub default_public_access: LinkModel,
    /// WAN link of sites added from now on.
    pub default_wan: LinkModel,
}

impl<M: Machine> Sim<M> {
    pub fn new(seed: u64) -> Sim<M> {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..16].copy_from_slice(b"sim/net ");
        let now = Instant::now();
        Sim {
            now,
            start: now,
            seed,
            rng: Rng::from_seed(s),
            hosts: Vec::new(),
            sites: Vec::new(),
            public: BTreeMap::new(),
            routers: BTreeMap::new(),
            next_router: 0,
            queue: BTreeMap::new(),
            seq: 0,
            counters: Counters::default(),
            drop_filter: None,
            delays: Vec::new(),
            buf: vec![0; MAX_DATAGRAM],
            default_access: LinkModel::lan(),
            default_public_access: LinkModel::wan(),
            default_wan: LinkModel::wan(),
        }
    }

    // ---- building ----------------------------------------------------------

    fn router_ip(&mut self) -> IpAddr {
        let base = u32::from(Ipv4Addr::new(203, 0, 113, 0));
        self.next_router += 1;
        IpAddr::V4(Ipv4Addr::from(base + self.next_router))
    }

    /// A site with LAN `10.N.0.0/24` behind a NAT of `model`.
    pub fn add_site(&mut self, model: NatModel) -> SiteId {
        let n = self.sites.len() as u32 + 1;
        assert!(n < 256, "at most 255 sites with default LANs");
        self.add_site_lan(model, Ipv4Addr::new(10, n as u8, 0, 0), 24)
    }

    /// A site with LAN `lan/prefix` (sites may share a private range).
    pub fn add_site_lan(&mut self, model: NatModel, lan: Ipv4Addr, prefix: u8) -> SiteId {
        let id = SiteId(self.sites.len());
        let ip = self.router_ip();
        self.routers.insert(ip, id);
        self.sites.push(Site {
            nat: Nat::new(model, ip),
            wan: self.default_wan,
            lan,
            prefix,
            hosts: BTreeMap::new(),
        });
        id
    }

    /// A host at `place` whose machine `build` makes.
    pub fn add_host(&mut self, place: Place, build: impl FnOnce(&HostCtx) -> M) -> HostId {
        let id = HostId(self.hosts.len());
        let (ip, prefix) = match place {
            Place::Internet => {
                let k = self.public.len() as u32 + 1;
                assert!(k < 512, "at most 511 public hosts");
                let base = u32::from(Ipv4Addr::new(198, 18, 0, 10));
                let ip = IpAddr::V4(Ipv4Addr::from(base + (k << 8)));
                self.public.insert(ip, id);
                (ip, 24)
            }
            Place::Site(s) => {
                let site = &mut self.sites[s.0];
                let k = site.hosts.len() as u32 + 10;
                let ip = IpAddr::V4(Ipv4Addr::from(u32::from(site.lan) + k));
                assert!(site.on_lan(ip), "site {} is full", s.0);
                site.hosts.insert(ip, id);
                (ip, site.prefix)
            }
        };
        let access = match place {
            Place::Internet => self.default_public_access,
            Place::Site(_) => self.default_access,
        };
        let first_port = 32768 + (self.rng.u32() % 16384) as u16;
        self.hosts.push(Host {
            place,
            ip,
            prefix,
            machine: None,
            sockets: BTreeMap::new(),
            ports: BTreeMap::new(),
            next_port: first_port,
            access,
            events: Vec::new(),
            frames: Vec::new(),
            counters: HostCounters::default(),
            deadline: None,
            dirty: false,
            incarnation: 0,
        });
        self.boot(id, build);
        id
    }

    /// A public host.
    pub fn add_public(&mut self, build: impl FnOnce(&HostCtx) -> M) -> HostId {
        self.add_host(Place::Internet, build)
    }

    fn boot(&mut self, h: HostId, build: impl FnOnce(&HostCtx) -> M) {
        let host = &mut self.hosts[h.0];
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&(h.0 as u64).to_le_bytes());
        seed[16..20].copy_from_slice(&host.incarnation.to_le_bytes());
        seed[20..28].copy_from_slice(b"sim/host");
        let ctx = HostCtx {
            now: self.now,
            host: h,
            ip: host.ip,
            prefix: host.prefix,
            listen: SocketAddr::new(host.ip, LISTEN_PORT),
            seed,
            incarnation: host.incarnation,
        };
        host.sockets.clear();
        host.ports.clear();
        host.sockets.insert(SocketId::MAIN, LISTEN_PORT);
        host.ports.insert(LISTEN_PORT, SocketId::MAIN);
        host.machine = Some(build(&ctx));
        self.flush(h);
    }

    /// Kill a host: its machine and sockets are gone, datagrams to it
    /// vanish, datagrams it sent are still on their way.
    pub fn kill(&mut self, h: HostId) {
        let host = &mut self.hosts[h.0];
        host.machine = None;
        host.sockets.clear();
        host.ports.clear();
        host.deadline = None;
        host.dirty = false;
    }

    /// Start a new machine on host `h` (killing the old one if alive).
    pub fn restart(&mut self, h: HostId, build: impl FnOnce(&HostCtx) -> M) {
        self.kill(h);
        self.hosts[h.0].incarnation += 1;
        self.boot(h, build);
    }

    pub fn set_access(&mut self, h: HostId, link: LinkModel) {
        self.hosts[h.0].access = link;
    }

    pub fn set_wan(&mut self, s: SiteId, link: LinkModel) {
        self.sites[s.0].wan = link;
    }

    /// Drop datagrams crossing the internet for which `f` says so
    /// (targeted loss, blocking a path); `None` removes the hook.
    pub fn set_drop_filter(&mut self, f: Option<DropFilter>) {
        self.drop_filter = f;
    }

    // ---- NAT control ------------------------------------------------------

    pub fn nat(&self, s: SiteId) -> &Nat {
        &self.sites[s.0].nat
    }

    /// Switch a NAT's behaviour for new mappings.
    pub fn set_nat_model(&mut self, s: SiteId, model: NatModel) {
        self.sites[s.0].nat.set_model(model);
    }

    /// Forget every mapping of a NAT (`conntrack -F`).
    pub fn flush_nat(&mut self, s: SiteId) {
        self.sites[s.0].nat.flush();
    }

    /// Give a NAT a new public address (and forget its mappings); returns
    /// the new address.
    pub fn renumber_nat(&mut self, s: SiteId) -> IpAddr {
        let ip = self.router_ip();
        let old = self.sites[s.0].nat.public_ip();
        self.routers.remove(&old);
        self.routers.insert(ip, s);
        self.sites[s.0].nat.renumber(ip);
        ip
    }

    // ---- looking ------------------------------------------------------------

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the simulation began.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn host_counters(&self, h: HostId) -> HostCounters {
        self.hosts[h.0].counters
    }

    pub fn hosts(&self) -> impl Iterator<Item = HostId> {
        (0..self.hosts.len()).map(HostId)
    }

    pub fn place(&self, h: HostId) -> Place {
        self.hosts[h.0].place
    }

    pub fn ip(&self, h: HostId) -> IpAddr {
        self.hosts[h.0].ip
    }

    /// The main socket's (inside) address.
    pub fn addr(&self, h: HostId) -> SocketAddr {
        SocketAddr::new(self.hosts[h.0].ip, LISTEN_PORT)
    }

    /// The (inside) address of an open socket.
    pub fn socket_addr(&self, h: HostId, id: SocketId) -> Option<SocketAddr> {
        let host = &self.hosts[h.0];
        host.sockets.get(&id).map(|p| SocketAddr::new(host.ip, *p))
    }

    /// How many sockets the host has open (the main one included).
    pub fn open_sockets(&self, h: HostId) -> usize {
        self.hosts[h.0].sockets.len()
    }

    /// The address datagrams from `h`'s socket `id` to `dest` carry once
    /// past its NAT, if the NAT has a mapping for them now (the socket's
    /// own address for a public host).
    pub fn public_addr(&self, h: HostId, id: SocketId, dest: SocketAddr) -> Option<SocketAddr> {
        let inside = self.socket_addr(h, id)?;
        match self.hosts[h.0].place {
            Place::Internet => Some(inside),
            Place::Site(s) => self.sites[s.0].nat.mapping_for(self.now, inside, dest),
        }
    }

    pub fn is_up(&self, h: HostId) -> bool {
        self.hosts[h.0].machine.is_some()
    }

    /// The host's machine. Panics if the host is down.
    pub fn machine(&self, h: HostId) -> &M {
        self.hosts[h.0]
            .machine
            .as_ref()
            .unwrap_or_else(|| panic!("host {} is down", h.0))
    }

    /// The host's machine for a command; its outputs are drained before
    /// the next step (or use [`Sim::with`]). Panics if the host is down.
    pub fn machine_mut(&mut self, h: HostId) -> &mut M {
        let host = &mut self.hosts[h.0];
        host.dirty = true;
        host.machine
            .as_mut()
            .unwrap_or_else(|| panic!("host {} is down", h.0))
    }

    /// Run a command on a host's machine at the current time and drain its
    /// outputs. Panics if the host is down.
    pub fn with<R>(&mut self, h: HostId, f: impl FnOnce(&mut M, Instant) -> R) -> R {
        let now = self.now;
        let r = f(self.machine_mut(h), now);
        self.flush(h);
        r
    }

    /// Events the host's machine emitted since the last call.
    pub fn take_events(&mut self, h: HostId) -> Vec<M::Event> {
        std::mem::take(&mut self.hosts[h.0].events)
    }

    pub fn events(&self, h: HostId) -> &[M::Event] {
        &self.hosts[h.0].events
    }

    /// Frames the host's machine wrote to its TAP since the last call.
    pub fn take_frames(&mut self, h: HostId) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.hosts[h.0].frames)
    }

    /// A summary for failure messages: time, counters, hosts and NATs.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "at {:?}: {:?}", self.elapsed(), self.counters);
        for (i, h) in self.hosts.iter().enumerate() {
            let _ = writeln!(
                s,
                "  host {i} {} {:?} up={} sockets={} {:?}",
                h.ip,
                h.place,
                h.machine.is_some(),
                h.sockets.len(),
                h.counters
            );
        }
        for (i, site) in self.sites.iter().enumerate() {
            let _ = writeln!(
                s,
                "  site {i} {} {:?} {:?}",
                site.nat.public_ip(),
                site.nat.model().mapping,
                site.nat.counters()
            );
        }
        s
    }

    // ---- sending ------------------------------------------------------------

    /// Drain a host's machine: socket actions, datagrams, events, frames;
    /// then read its deadline.
    pub fn flush(&mut self, h: HostId) {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let mut progressed = false;
            while let Some(a) = self.hosts[h.0]
                .machine
                .as_mut()
                .and_then(|m| m.poll_socket_action())
            {
                progressed = true;
                self.socket_action(h, a);
            }
            while let Some(t) = self.hosts[h.0]
                .machine
                .as_mut()
                .and_then(|m| m.poll_transmit(now, &mut buf))
            {
                progressed = true;
                let size = t.size.min(buf.len());
                self.send(h, t.socket, t.destination, &buf[..size]);
            }
            if !progressed {
                break;
            }
        }
        self.buf = buf;
        let host = &mut self.hosts[h.0];
        host.dirty = false;
        let Some(m) = host.machine.as_mut() else {
            host.deadline = None;
            return;
        };
        while let Some(e) = m.poll_event() {
            host.events.push(e);
        }
        let mut frame = Vec::new();
        while m.poll_frame(&mut frame) {
            host.counters.frames += 1;
            host.frames.push(std::mem::take(&mut frame));
        }
        host.deadline = m.poll_timeout();
    }

    fn socket_action(&mut self, h: HostId, a: SocketAction) {
        let host = &mut self.hosts[h.0];
        match a {
            SocketAction::Open { id } => {
                if let Some(old) = host.sockets.remove(&id) {
                    host.ports.remove(&old);
                }
                let mut port = host.next_port;
                while port < 1024 || host.ports.contains_key(&port) {
                    port = port.wrapping_add(1);
                }
                host.next_port = port.wrapping_add(1);
                host.sockets.insert(id, port);
                host.ports.insert(port, id);
                host.counters.sockets_opened += 1;
            }
            SocketAction::Listen { id, port } => {
                if port == 0 || host.ports.get(&port).is_some_and(|s| *s != id) {
                    // Taken: the bind fails, as it would on a real host.
                    return;
                }
                if let Some(old) = host.sockets.insert(id, port) {
                    host.ports.remove(&old);
                }
                host.ports.insert(port, id);
                host.counters.sockets_opened += 1;
            }
            SocketAction::Close { id } => {
                if id == SocketId::MAIN {
                    return;
                }
                if let Some(port) = host.sockets.remove(&id) {
                    host.ports.remove(&port);
                    host.counters.sockets_closed += 1;
                }
            }
            SocketAction::Connect { id, .. } => {
                host.counters.streams_refused += 1;
                if let Some(m) = host.machine.as_mut() {
                    m.handle_socket_closed(self.now, id);
                }
            }
        }
    }

    fn send(&mut self, h: HostId, socket: SocketId, to: SocketAddr, data: &[u8]) {
        let host = &mut self.hosts[h.0];
        let Some(port) = host.sockets.get(&socket).copied() else {
            self.counters.unknown_socket += 1;
            return;
        };
        host.counters.sent += 1;
        host.counters.sent_bytes += data.len() as u64;
        self.counters.sent += 1;
        let from = SocketAddr::new(host.ip, port);
        let link = host.access;
        self.cross(link, Stage::Egress(h), from, to, data);
    }

    /// Put a datagram on a link towards `stage`.
    fn cross(
        &mut self,
        link: LinkModel,
        stage: Stage,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
    ) {
        let mut delays = std::mem::take(&mut self.delays);
        match link.cross(&mut self.rng, data.len(), &mut delays) {
            Crossing::Lost => self.counters.lost += 1,
            Crossing::TooBig => self.counters.too_big += 1,
            Crossing::Duplicated => self.counters.duplicated += 1,
            Crossing::Passed => {}
        }
        for d in &delays {
            self.seq += 1;
            let key = (self.now + *d, self.seq);
            self.queue.insert(
                key,
                InFlight {
                    stage,
                    from,
                    to,
                    data: data.to_vec(),
                },
            );
        }
        self.delays = delays;
    }

    /// A datagram reached the end of its current link.
    fn arrive(&mut self, p: InFlight) {
        match p.stage {
            Stage::Egress(h) => match self.hosts[h.0].place {
                Place::Internet => self.core(p.from, p.to, p.data),
                Place::Site(s) => {
                    let site = &mut self.sites[s.0];
                    if site.on_lan(p.to.ip()) {
                        match site.hosts.get(&p.to.ip()).copied() {
                            Some(dst) => {
                                let link = self.hosts[dst.0].access;
                                self.cross(link, Stage::Deliver(dst), p.from, p.to, &p.data);
                            }
                            None => self.counters.unroutable += 1,
                        }
                        return;
                    }
                    let Some(public) = site.nat.outbound(self.now, &mut self.rng, p.from, p.to)
                    else {
                        self.counters.nat_dropped += 1;
                        return;
                    };
                    let link = site.wan;
                    self.cross(link, Stage::Core, public, p.to, &p.data);
                }
            },
            Stage::Core => self.core(p.from, p.to, p.data),
            Stage::Inbound(s) => {
                let site = &mut self.sites[s.0];
                if site.nat.public_ip() != p.to.ip() {
                    // Renumbered while the datagram was on its way.
                    self.counters.unroutable += 1;
                    return;
                }
                let Some(inside) = site.nat.inbound(self.now, p.to.port(), p.from) else {
                    self.counters.nat_dropped += 1;
                    return;
                };
                match site.hosts.get(&inside.ip()).copied() {
                    Some(dst) => {
                        let link = self.hosts[dst.0].access;
                        self.cross(link, Stage::Deliver(dst), p.from, inside, &p.data);
                    }
                    None => self.counters.unroutable += 1,
                }
            }
            Stage::Deliver(h) => self.deliver(h, p.from, p.to, p.data),
        }
    }

    /// A datagram with public addresses crosses the internet.
    fn core(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if let Some(f) = self.drop_filter.as_mut() {
            if f(from, to, &data) {
                self.counters.dropped_by_filter += 1;
                return;
            }
        }
        if let Some(&s) = self.routers.get(&to.ip()) {
            let link = self.sites[s.0].wan;
            self.cross(link, Stage::Inbound(s), from, to, &data);
        } else if let Some(&h) = self.public.get(&to.ip()) {
            let link = self.hosts[h.0].access;
            self.cross(link, Stage::Deliver(h), from, to, &data);
        } else {
            self.counters.unroutable += 1;
        }
    }

    fn deliver(&mut self, h: HostId, from: SocketAddr, to: SocketAddr, mut data: Vec<u8>) {
        let now = self.now;
        let host = &mut self.hosts[h.0];
        let Some(m) = host.machine.as_mut() else {
            self.counters.host_down += 1;
            return;
        };
        let Some(&socket) = host.ports.get(&to.port()) else {
            self.counters.port_closed += 1;
            return;
        };
        host.counters.received += 1;
        host.counters.received_bytes += data.len() as u64;
        self.counters.delivered += 1;
        // As the driver does: a relayed datagram leaves from the buffer it
        // arrived in, rewritten in place.
        let forward = m.handle_datagram_in_place(now, socket, from, &mut data);
        host.dirty = true;
        if let Some(o) = forward {
            let size = o.size.min(data.len());
            self.send(h, o.socket, o.destination, &data[..size]);
        }
    }

    // ---- time -----------------------------------------------------------------

    /// The earliest wake-up: a datagram reaching the end of a link or a
    /// machine's deadline.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let pkt = self.queue.first_key_value().map(|(k, _)| k.0);
        let timer = self.hosts.iter().filter_map(|h| h.deadline).min();
        match (pkt, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn flush_dirty(&mut self) {
        for i in 0..self.hosts.len() {
            if self.hosts[i].dirty {
                self.flush(HostId(i));
            }
        }
    }

    /// Advance to the earliest wake-up (never beyond `limit`) and process
    /// everything due then. Returns false if nothing was due by `limit`
    /// (time then stands at `limit`).
    pub fn step_until(&mut self, limit: Instant) -> bool {
        self.flush_dirty();
        let Some(next) = self.next_wakeup().filter(|t| *t <= limit) else {
            self.now = self.now.max(limit);
            return false;
        };
        self.now = self.now.max(next);
        while self
            .queue
            .first_key_value()
            .is_some_and(|(k, _)| k.0 <= self.now)
        {
            if let Some((_, p)) = self.queue.pop_first() {
                self.arrive(p);
            }
        }
        let now = self.now;
        for host in &mut self.hosts {
            if host.deadline.is_some_and(|t| t <= now) {
                if let Some(m) = host.machine.as_mut() {
                    m.handle_timeout(now);
                    host.dirty = true;
                }
            }
        }
        self.flush_dirty();
        true
    }

    /// Advance to the earliest wake-up and process it; false if nothing is
    /// scheduled at all.
    pub fn step(&mut self) -> bool {
        match self.next_wakeup() {
            Some(t) => self.step_until(t),
            None => {
                self.flush_dirty();
                self.next_wakeup().is_some_and(|t| self.step_until(t))
            }
        }
    }

    /// Step until `cond` holds; the virtual time it took, or why not
    /// within `limit`.
    pub fn try_run_until(
        &mut self,
        limit: Duration,
        mut cond: impl FnMut(&mut Sim<M>) -> bool,
    ) -> Result<Duration, RunError> {
        let begin = self.now;
        let deadline = self.now + limit;
        let mut same_instant = 0u64;
        loop {
            if cond(self) {
                return Ok(self.now - begin);
            }
            if self.now >= deadline {
                return Err(RunError::Timeout);
            }
            let before = self.now;
            self.step_until(deadline);
            if self.now > before {
                same_instant = 0;
                continue;
            }
            same_instant += 1;
            if same_instant > LIVELOCK_STEPS {
                let due = (0..self.hosts.len())
                    .filter(|i| self.hosts[*i].deadline.is_some_and(|t| t <= self.now))
                    .map(HostId)
                    .collect();
                return Err(RunError::Livelock { due });
            }
        }
    }

    /// Step until `cond` holds and return the virtual time it took; panics
    /// with `what` and a report if it does not within `limit` or time
    /// stops advancing.
    pub fn run_until(
        &mut self,
        limit: Duration,
        what: &str,
        cond: impl FnMut(&mut Sim<M>) -> bool,
    ) -> Duration {
        match self.try_run_until(limit, cond) {
            Ok(d) => d,
            Err(e) => panic!("{what}: {e:?} within {limit:?}\n{}", self.report()),
        }
    }

    /// Let `d` of virtual time pass.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        if let Err(RunError::Livelock { due }) = self.try_run_until(d, |s| s.now >= end) {
            panic!("livelock (due: {due:?})\n{}", self.report());
        }
    }
}
