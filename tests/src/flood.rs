//! A spoofed-source UDP flood, for tests of the pre-authentication limits
//! (`docs/limits.md`) against real agents.
//!
//! A thread enters a lab namespace (`setns`, which moves only that thread),
//! opens a raw socket of the target's family (`IPPROTO_RAW`: the packets
//! carry their own IPv4 or IPv6 header, so their source addresses are
//! whatever the flood chooses) and sends batches with `sendmmsg` as fast as
//! the machine lets it, until the duration is over or [`Flood::stop`]. Each
//! packet comes from the next source of a prefix (IPv4: the next address;
//! IPv6: the next /64, with a pseudo-random interface id; thousands of
//! distinct sources, each with a pseudo-random source port) and carries the
//! next payload of a mix:
//! STUN binding requests (fresh transaction id each), datagrams given by
//! the test (e.g. a valid IHello, made with the network's secret, for an
//! attacker who holds it) and random garbage.
//!
//! Only the lab: the destination must be a lab address and the sender a lab
//! namespace, whose routes end inside the lab.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::Ns;

/// Packets per `sendmmsg` call.
const BATCH: usize = 64;
/// Room per packet: IP header, UDP header, payload.
const PACKET_ROOM: usize = 1500;
const IP_HDR: usize = 20;
const IP6_HDR: usize = 40;
const UDP_HDR: usize = 8;
/// Most distinct sources walked (IPv6: /64s of the prefix).
const MAX_SOURCES: u64 = 1 << 16;

/// What to send.
#[derive(Debug, Clone)]
pub struct FloodSpec {
    /// IPv4 or IPv6; the sources are of the same family.
    pub target: SocketAddr,
    /// Sources, in turn: IPv4, every address of `source_base/source_prefix`
    /// (8..=30); IPv6, every /64 of it (16..=64), at most 65,536 of them.
    pub source_base: IpAddr,
    pub source_prefix: u8,
    pub duration: Duration,
    /// Datagrams sent as they are, in turn with a STUN binding request and
    /// a random one (each at most 1400 bytes).
    pub payloads: Vec<Vec<u8>>,
}

/// What was sent.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    pub sent: u64,
    /// `sendmmsg` calls that failed (e.g. `ENOBUFS` under load).
    pub errors: u64,
    pub elapsed: Duration,
    /// Distinct source addresses used.
    pub sources: u64,
}

impl FloodReport {
    /// Packets per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A running flood.
pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<FloodReport>>,
}

impl Flood {
    /// Starts flooding from namespace `ns`.
    pub fn start(ns: &Ns, spec: FloodSpec) -> Result<Flood> {
        let ok = match (spec.source_base, spec.target) {
            (IpAddr::V4(_), SocketAddr::V4(_)) => (8..=30).contains(&spec.source_prefix),
            (IpAddr::V6(_), SocketAddr::V6(_)) => (16..=64).contains(&spec.source_prefix),
            _ => bail!("sources and target of different families"),
        };
        if !ok {
            bail!(
                "source prefix /{} out of range (IPv4 8..=30, IPv6 16..=64)",
                spec.source_prefix
            );
        }
        if spec.payloads.iter().any(|p| p.len() > 1400) {
            bail!("flood payloads are at most 1400 bytes");
        }
        let netns = std::fs::File::open(ns.path())
            .with_context(|| format!("open {}", ns.path().display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lab-flood".into())
            .spawn(move || {
                // SAFETY: setns on a file descriptor we own; it moves only
                // this thread into the namespace.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                drop(netns);
                run(&spec, &stop2)
            })
            .context("spawn the flood thread")?;
        Ok(Flood { stop, thread })
    }

    /// Ends the flood now.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits for the flood to end (its duration, or [`Flood::stop`]).
    pub fn finish(self) -> Result<FloodReport> {
        match self.thread.join() {
            Ok(r) => r,
            Err(_) => bail!("the flood thread panicked"),
        }
    }
}

/// A small xorshift generator: the flood needs speed, not quality.
struct Xs(u64);

impl Xs {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Where the flood goes, as `sendmmsg` wants it.
enum Dest {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl Dest {
    fn of(target: SocketAddr) -> Dest {
        match target {
            SocketAddr::V4(t) => Dest::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*t.ip()).to_be(),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(t) => Dest::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: t.ip().octets(),
                },
                sin6_scope_id: 0,
            }),
        }
    }

    fn name(&self) -> (*mut libc::c_void, libc::socklen_t) {
        match self {
            Dest::V4(a) => (
                (a as *const libc::sockaddr_in).cast_mut().cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            Dest::V6(a) => (
                (a as *const libc::sockaddr_in6).cast_mut().cast(),
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// The `n`th source of the spec's prefix (see [`FloodSpec::source_base`]).
fn source(spec: &FloodSpec, n: u64, rng: &mut Xs) -> IpAddr {
    match spec.source_base {
        IpAddr::V4(b) => {
            let hosts = 1u64 << (32 - spec.source_prefix);
            let base = u32::from(b) & !((hosts - 1) as u32);
            // Skip the network and broadcast addresses of the prefix.
            IpAddr::V4(Ipv4Addr::from(base + (1 + n % (hosts - 2)) as u32))
        }
        IpAddr::V6(b) => {
            let nets = 1u128 << (64 - spec.source_prefix).min(16);
            let base = u128::from(b) & !((1u128 << (128 - spec.source_prefix)) - 1);
            let net = (u128::from(n) % nets) << 64;
            IpAddr::V6(Ipv6Addr::from(base | net | u128::from(rng.next() | 1)))
        }
    }
}

fn sources_of(spec: &FloodSpec) -> u64 {
    match spec.source_base {
        IpAddr::V4(_) => (1u64 << (32 - spec.source_prefix)) - 2,
        IpAddr::V6(_) => 1u64 << (64 - spec.source_prefix).min(16),
    }
}

fn run(spec: &FloodSpec, stop: &AtomicBool) -> Result<FloodReport> {
    let family = match spec.target {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let dst = Dest::of(spec.target);
    let (name, namelen) = dst.name();
    let hdr = match spec.target {
        SocketAddr::V4(_) => IP_HDR,
        SocketAddr::V6(_) => IP6_HDR,
    };
    let mut rng = Xs(0x9e37_79b9_7f4a_7c15);
    let mut bufs = vec![[0u8; PACKET_ROOM]; BATCH];
    let mut iovs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
    let kinds = spec.payloads.len() + 2;
    let (mut sent, mut errors, mut n) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    while t0.elapsed() < spec.duration && !stop.load(Ordering::Relaxed) {
        iovs.clear();
        for (i, buf) in bufs.iter_mut().enumerate() {
            let k = n + i as u64;
            let src = source(spec, k, &mut rng);
            let payload_len = {
                let p = &mut buf[hdr + UDP_HDR..];
                match (k % kinds as u64) as usize {
                    0 => stun_request(p, &mut rng),
                    1 => {
                        let len = 60 + (rng.next() % 140) as usize;
                        for b in &mut p[..len] {
                            *b = rng.next() as u8;
                        }
                        len
                    }
                    k => {
                        let d = &spec.payloads[k - 2];
                        p[..d.len()].copy_from_slice(d);
                        d.len()
                    }
                }
            };
            let sport = 1024 + (rng.next() % 60000) as u16;
            let len = headers(buf, src, spec.target, sport, payload_len);
            iovs.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: len,
            });
        }
        msgs.clear();
        for iov in iovs.iter_mut() {
            // SAFETY: an all-zero mmsghdr is valid; the pointers set below
            // outlive the sendmmsg call.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = name;
            m.msg_hdr.msg_namelen = namelen;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            msgs.push(m);
        }
        // SAFETY: msgs holds BATCH valid headers pointing at live buffers.
        let r = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                0,
            )
        };
        if r < 0 {
            errors += 1;
            std::thread::yield_now();
        } else {
            sent += r as u64;
        }
        n += BATCH as u64;
    }
    Ok(FloodReport {
        sent,
        errors,
        elapsed: t0.elapsed(),
        sources: n.min(sources_of(spec)).min(MAX_SOURCES),
    })
}

/// A STUN binding request (RFC 8489: type 0x0001, no attributes, magic
/// cookie, fresh 96-bit transaction id); returns its length.
fn stun_request(p: &mut [u8], rng: &mut Xs) -> usize {
    p[..4].copy_from_slice(&[0x00, 0x01, 0x00, 0x00]);
    p[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    p[8..16].copy_from_slice(&rng.next().to_be_bytes());
    p[16..20].copy_from_slice(&(rng.next() as u32).to_be_bytes());
    20
}

/// Writes the IP and UDP headers in front of a payload of `len` bytes;
/// returns the packet's length. IPv4: the kernel fills the IP checksum and
/// identification, the UDP checksum is 0 (none, allowed over IPv4). IPv6:
/// the UDP checksum is mandatory and computed here.
fn headers(buf: &mut [u8], src: IpAddr, dst: SocketAddr, sport: u16, len: usize) -> usize {
    let udp_len = UDP_HDR + len;
    let hdr = match (src, dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = &mut buf[..IP_HDR];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&((IP_HDR + udp_len) as u16).to_be_bytes());
            ip[4..6].fill(0);
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[8] = 64;
            ip[9] = libc::IPPROTO_UDP as u8;
            ip[10..12].fill(0);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            IP_HDR
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = &mut buf[..IP6_HDR];
            ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
            ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            ip[6] = libc::IPPROTO_UDP as u8;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            IP6_HDR
        }
        _ => unreachable!("FloodSpec checks that the families match"),
    };
    let udp = &mut buf[hdr..hdr + UDP_HDR];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].fill(0);
    if let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst.ip()) {
        let sum = udp6_checksum(&s, &d, &buf[hdr..hdr + udp_len]);
        buf[hdr + 6..hdr + 8].copy_from_slice(&sum.to_be_bytes());
    }
    hdr + udp_len
}

/// The UDP checksum over the IPv6 pseudo-header and the datagram (RFC 8200
/// 8.1), whose checksum field is zero.
fn udp6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, udp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u64::from(w);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(udp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, libc::IPPROTO_UDP as u8]);
    add(udp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
    }
}

/// A valid IHello of network `network` (secret `secret`, as the secret file
/// holds it) addressed to `to`, from a throwaway identity: what an attacker
/// holding the secret replays from spoofed sources (the Default Session Key
/// has no replay window, docs/crypto-profile.md 7.2).
pub fn ihello(network: &str, secret: [u8; 32], to: std::net::SocketAddr) -> Result<Vec<u8>> {
    use ringlan_tunnel::crypto::{Identity, NetworkName, NetworkSecret};
    use ringlan_tunnel::{Endpoint, EndpointConfig, Path, Rng, Target};
    let name = NetworkName::new(network).map_err(|_| anyhow::anyhow!("network name {network}"))?;
    let identity = Identity::from_secret_key_bytes([0x5a; 32], &name);
    let cfg = EndpointConfig::new(identity, name, NetworkSecret::from_bytes(secret));
    let now = Instant::now();
    let mut ep = Endpoint::new(now, cfg, Rng::from_seed([0x5a; 32]));
    let s = ep
        .connect(now, Target::Any, &[Path::Direct(to)])
        .map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    ep.ihello_datagram(s)
        .ok_or_else(|| anyhow::anyhow!("no IHello for a fresh session"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_layout() {
        let mut buf = [0u8; PACKET_ROOM];
        let mut rng = Xs(1);
        let n = stun_request(&mut buf[IP_HDR + UDP_HDR..], &mut rng);
        let dst = SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 4910));
        let len = headers(&mut buf, [203, 0, 113, 9].into(), dst, 5000, n);
        assert_eq!(len, 48);
        assert_eq!(&buf[..2], &[0x45, 0]);
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 48);
        assert_eq!(buf[9], 17);
        assert_eq!(&buf[12..16], &[203, 0, 113, 9]);
        assert_eq!(&buf[16..20], &[198, 51, 100, 1]);
        assert_eq!(u16::from_be_bytes([buf[20], buf[21]]), 5000);
        assert_eq!(u16::from_be_bytes([buf[22], buf[23]]), 4910);
        assert_eq!(u16::from_be_bytes([buf[24], buf[25]]), 28);
        // STUN: binding request, length 0, magic cookie.
        assert_eq!(&buf[28..36], &[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]);
    }

    #[test]
    fn ipv6_packet_layout_and_checksum() {
        let mut buf = [0u8; PACKET_ROOM];
        let mut rng = Xs(1);
        let n = stun_request(&mut buf[IP6_HDR + UDP_HDR..], &mut rng);
        let src: Ipv6Addr = "2001:db8:f::1".parse().unwrap();
        let dst = SocketAddr::from(("2001:db8:100::1".parse::<Ipv6Addr>().unwrap(), 4910));
        let len = headers(&mut buf, IpAddr::V6(src), dst, 5000, n);
        assert_eq!(len, 68);
        assert_eq!(buf[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([buf[4], buf[5]]), 28);
        assert_eq!((buf[6], buf[7]), (17, 64));
        // A datagram with its checksum in place sums to 0xffff.
        let IpAddr::V6(d) = dst.ip() else {
            unreachable!()
        };
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
        };
        add(&src.octets());
        add(&d.octets());
        add(&28u32.to_be_bytes());
        add(&[0, 0, 0, 17]);
        add(&buf[40..68]);
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    #[test]
    fn ipv6_sources_walk_the_64s_of_the_prefix() {
        let spec = FloodSpec {
            target: "[2001:db8:100::1]:4910".parse().unwrap(),
            source_base: "2001:db8:f000::".parse().unwrap(),
            source_prefix: 48,
            duration: Duration::ZERO,
            payloads: Vec::new(),
        };
        let mut rng = Xs(7);
        let a: Vec<Ipv6Addr> = (0..3)
            .map(|n| match source(&spec, n, &mut rng) {
                IpAddr::V6(a) => a,
                IpAddr::V4(_) => unreachable!(),
            })
            .collect();
        for (n, a) in a.iter().enumerate() {
            assert_eq!(a.segments()[..3], [0x2001, 0xdb8, 0xf000], "{a}");
            assert_eq!(a.segments()[3], n as u16, "{a}");
        }
        assert_eq!(sources_of(&spec), 1 << 16);
    }
}
