//! The least a TAP-over-UDP VPN does per byte on this machine: a bench
//! yardstick for `tests/bench/run.sh` (systems `floor`, `floor-aes`,
//! `floor-ack`), not a VPN.
//!
//! It opens a TAP the way the agent does (virtio header, TCP segmentation
//! offload, so the kernel hands over 64 KiB TCP super-frames), cuts each
//! frame into datagrams of a 1500-byte path with an 8-byte header
//! (message number, piece, pieces), sends them with UDP GSO, receives with
//! UDP GRO and writes each message back to its TAP with one `writev`
//! straight from the receive buffers. With `--seal` every datagram is
//! sealed and opened with AES-256-GCM (`ring`, in place), as the agent's
//! are; with `--ack N` the receiver sends one sealed 64-byte datagram back
//! per N datagrams of a receive batch, as RTMFP's receiver acknowledges,
//! which the sender reads and discards. Nothing else: no handshake, no
//! congestion control, no retransmission, no flow or session state, no
//! overlay, one thread. Its CPU per GB, and how fast a TCP stream runs
//! through it between the bench's two namespaces, are what no design of
//! the agent could improve on with the same machine, cipher and path
//! (docs/dataplane.md, "The floor").
//!
//! Usage (root, inside a namespace): `tap_floor --tap NAME --addr CIDR
//! --local IP:PORT --peer IP:PORT [--seal] [--ack N]`; runs until killed.
//! Both ends use the same fixed key: a bench, not a secure channel.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ringlan_agent::config::IpCidr;
use ringlan_agent::tap::{Tap, TapConfig, TAP_MAX_FRAME, VNET_HDR_LEN};

/// UDP payload on a 1500-byte IPv4 path.
const DATAGRAM: usize = 1472;
const HEADER: usize = 8;
const TAG: usize = 16;
/// Message bytes per datagram: header, piece and tag in whole AES blocks.
const PIECE: usize = DATAGRAM - TAG - HEADER;
/// Pieces of the largest frame the TAP gives (what `writev` is handed).
const MAX_PIECES: usize = (VNET_HDR_LEN + TAP_MAX_FRAME).div_ceil(PIECE);
/// A GSO message: at most this many segments (and under 64 KiB).
const MAX_RUN: usize = 44;
/// TAP frames read per wake-up before sending.
const TAP_BATCH: usize = 16;
/// Receive buffers per `recvmmsg` and in the ring they are taken from.
const RX_BATCH: usize = 16;
const RX_RING: usize = 256;
const RX_SLOT: usize = 65536;
const SOCKET_BUFFER: libc::c_int = 4 << 20;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

struct Args {
    tap: String,
    addr: IpCidr,
    local: SocketAddr,
    peer: SocketAddr,
    seal: bool,
    ack_every: usize,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut tap, mut addr, mut local, mut peer, mut seal) = (None, None, None, None, false);
    let mut ack_every = 0;
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--tap" => tap = Some(val()?),
            "--addr" => addr = Some(val()?.parse::<IpCidr>().map_err(|e| e.to_string())?),
            "--local" => local = Some(val()?.parse().map_err(|e| format!("--local: {e}"))?),
            "--peer" => peer = Some(val()?.parse().map_err(|e| format!("--peer: {e}"))?),
            "--seal" => seal = true,
            "--ack" => ack_every = val()?.parse().map_err(|e| format!("--ack: {e}"))?,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Args {
        tap: tap.ok_or("--tap missing")?,
        addr: addr.ok_or("--addr missing")?,
        local: local.ok_or("--local missing")?,
        peer: peer.ok_or("--peer missing")?,
        seal,
        ack_every,
    })
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is a live socket; the option value is an int on the stack.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// AES-256-GCM with a fixed key (this is a bench); the nonce is the
/// direction, message number and piece, so a lost datagram costs nothing
/// but itself.
struct Seal {
    key: LessSafeKey,
    dir: u8,
}

impl Seal {
    fn new(dir: u8) -> Seal {
        let key = UnboundKey::new(&AES_256_GCM, &[0x5a; 32]).expect("32-byte key");
        Seal {
            key: LessSafeKey::new(key),
            dir,
        }
    }

    fn nonce(&self, header: &[u8]) -> Nonce {
        let mut n = [0u8; 12];
        n[0] = self.dir;
        // Acknowledgements (no pieces) number their own nonces.
        n[1] = u8::from(header[6..8] == [0, 0]);
        n[4..10].copy_from_slice(&header[..6]);
        Nonce::assume_unique_for_key(n)
    }

    /// Seals a datagram in place: header in the clear, then the body, then
    /// room for the tag.
    fn seal(&self, datagram: &mut [u8]) {
        let (plain, tag) = datagram.split_at_mut(datagram.len() - TAG);
        let (header, body) = plain.split_at_mut(HEADER);
        let t = self
            .key
            .seal_in_place_separate_tag(self.nonce(header), Aad::empty(), body)
            .expect("seal");
        tag.copy_from_slice(t.as_ref());
    }
}

/// Consecutive datagrams in the send buffer sent as one GSO message:
/// equal segments, the last one possibly shorter (which closes the run).
struct Run {
    start: usize,
    count: usize,
    segment: usize,
    closed: bool,
}

/// The sending half: TAP frames cut into GSO runs.
struct Tx {
    buf: Vec<u8>,
    len: usize,
    runs: Vec<Run>,
    seal: Option<Seal>,
    msg: u32,
    /// Per-flush `sendmmsg` arguments, kept so that a flush allocates
    /// nothing.
    iov: Vec<libc::iovec>,
    cmsg: Vec<[u64; 4]>,
    msgs: Vec<libc::mmsghdr>,
}

impl Tx {
    fn push(&mut self, frame: &[u8]) {
        self.msg = self.msg.wrapping_add(1);
        let pieces = frame.len().div_ceil(PIECE).max(1);
        for (i, piece) in frame.chunks(PIECE).enumerate() {
            let seg = HEADER + piece.len() + if self.seal.is_some() { TAG } else { 0 };
            let at = self.len;
            let b = &mut self.buf[at..at + seg];
            b[..4].copy_from_slice(&self.msg.to_be_bytes());
            b[4..6].copy_from_slice(&(i as u16).to_be_bytes());
            b[6..8].copy_from_slice(&(pieces as u16).to_be_bytes());
            b[HEADER..HEADER + piece.len()].copy_from_slice(piece);
            if let Some(s) = self.seal.as_ref() {
                s.seal(b);
            }
            self.len += seg;
            // A run continues while its segments are equal; a shorter one
            // ends it.
            match self.runs.last_mut() {
                Some(r) if !r.closed && r.count < MAX_RUN && seg <= r.segment => {
                    r.count += 1;
                    r.closed = seg < r.segment;
                }
                _ => self.runs.push(Run {
                    start: at,
                    count: 1,
                    segment: seg,
                    closed: false,
                }),
            }
        }
    }

    fn flush(&mut self, fd: RawFd, peer: &libc::sockaddr_in) -> io::Result<()> {
        if self.runs.is_empty() {
            return Ok(());
        }
        let n = self.runs.len();
        self.iov.clear();
        for (k, r) in self.runs.iter().enumerate() {
            let end = self.runs.get(k + 1).map_or(self.len, |next| next.start);
            self.iov.push(libc::iovec {
                iov_base: self.buf[r.start..].as_mut_ptr().cast(),
                iov_len: end - r.start,
            });
        }
        self.cmsg.clear();
        self.cmsg.resize(n, [0; 4]);
        self.msgs.clear();
        for (k, r) in self.runs.iter().enumerate() {
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (peer as *const libc::sockaddr_in).cast_mut().cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iov = &mut self.iov[k];
            m.msg_hdr.msg_iovlen = 1;
            if r.count > 1 {
                let c = self.cmsg[k].as_mut_ptr().cast::<libc::cmsghdr>();
                // SAFETY: `c` points at 32 zeroed, aligned bytes, room for
                // one cmsg header with a u16.
                unsafe {
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                    libc::CMSG_DATA(c)
                        .cast::<u16>()
                        .write_unaligned(r.segment as u16);
                    m.msg_hdr.msg_controllen = libc::CMSG_SPACE(2) as usize;
                }
                m.msg_hdr.msg_control = c.cast();
            }
            self.msgs.push(m);
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: every header points at live iovecs, address and cmsg.
            let r =
                unsafe { libc::sendmmsg(fd, self.msgs[sent..].as_mut_ptr(), (n - sent) as u32, 0) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    // The socket buffer is full: drop the rest, as a VPN
                    // without a queue of its own would.
                    break;
                }
                return Err(e);
            }
            sent += r as usize;
        }
        self.runs.clear();
        self.len = 0;
        Ok(())
    }
}

/// The receiving half: datagrams in a ring of slots, messages written to
/// the TAP from where they were received.
struct Rx {
    ring: Vec<u8>,
    next: usize,
    open: Option<Seal>,
    /// The message being collected: number, pieces, and where each piece
    /// lies in `ring` (which is never reallocated), ready for `writev`.
    msg: u32,
    pieces: usize,
    parts: Vec<libc::iovec>,
    /// `recvmmsg` calls so far, and the one the message began in: its
    /// slots are taken again after `RX_RING / RX_BATCH` calls.
    calls: u64,
    msg_call: u64,
    dropped: u64,
    /// With `--ack N`: one acknowledgement datagram back per N datagrams
    /// received in a batch (RTMFP's receiver acknowledges as the agent's
    /// does, one per 16 data packets of a receive batch), sealed as the
    /// data is; the other side reads and discards them.
    ack_every: usize,
    ack: Option<Seal>,
    acks_sent: u32,
}

impl Rx {
    /// Counts a datagram or message lost; says so at every power of two.
    fn lost(&mut self) {
        self.dropped += 1;
        if self.dropped.is_power_of_two() {
            eprintln!("tap_floor: {} datagrams or messages lost", self.dropped);
        }
    }

    fn poll(&mut self, fd: RawFd, tap: RawFd, peer: &libc::sockaddr_in) -> io::Result<bool> {
        let first = self.next;
        let mut iov: [libc::iovec; RX_BATCH] = std::array::from_fn(|k| libc::iovec {
            iov_base: self.ring[((first + k) % RX_RING) * RX_SLOT..]
                .as_mut_ptr()
                .cast(),
            iov_len: RX_SLOT,
        });
        let mut cmsg = [[0u64; 8]; RX_BATCH];
        let mut msgs: [libc::mmsghdr; RX_BATCH] = std::array::from_fn(|k| {
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov[k];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = cmsg[k].as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = 64;
            m
        });
        // SAFETY: the headers point at live slots and control buffers.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                RX_BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(false)
            } else {
                Err(e)
            };
        }
        let got = r as usize;
        let mut datagrams = 0usize;
        self.next = (first + got) % RX_RING;
        self.calls += 1;
        for (k, m) in msgs.iter().enumerate().take(got) {
            let slot = (first + k) % RX_RING;
            let len = m.msg_len as usize;
            let mut seg = len;
            // SAFETY: the kernel filled msg_control up to msg_controllen.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                        seg = libc::CMSG_DATA(c).cast::<u16>().read_unaligned() as usize;
                    }
                    c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
                }
            }
            let mut off = 0;
            while off < len {
                let d = seg.min(len - off);
                if self.datagram(slot, off, d, tap)? {
                    datagrams += 1;
                }
                off += d;
            }
        }
        if self.ack_every > 0 && datagrams > 0 {
            self.send_acks(fd, peer, datagrams.div_ceil(self.ack_every))?;
        }
        Ok(true)
    }

    /// `n` 64-byte acknowledgement datagrams in one `sendmmsg`.
    fn send_acks(&mut self, fd: RawFd, peer: &libc::sockaddr_in, n: usize) -> io::Result<()> {
        const ACK: usize = 64;
        let n = n.min(RX_BATCH);
        let mut bufs = [[0u8; ACK]; RX_BATCH];
        for b in bufs.iter_mut().take(n) {
            self.acks_sent = self.acks_sent.wrapping_add(1);
            b[..4].copy_from_slice(&self.acks_sent.to_be_bytes());
            // pieces = 0: an acknowledgement.
            if let Some(s) = self.ack.as_ref() {
                s.seal(b);
            }
        }
        let mut iov: [libc::iovec; RX_BATCH] = std::array::from_fn(|k| libc::iovec {
            iov_base: bufs[k].as_mut_ptr().cast(),
            iov_len: ACK,
        });
        let mut msgs: [libc::mmsghdr; RX_BATCH] = std::array::from_fn(|k| {
            // SAFETY: an all-zero mmsghdr is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (peer as *const libc::sockaddr_in).cast_mut().cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iov = &mut iov[k];
            m.msg_hdr.msg_iovlen = 1;
            m
        });
        // SAFETY: every header points at a live iovec and the address.
        let r = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
        }
        Ok(())
    }

    /// One datagram; true if it carried data (not an acknowledgement).
    fn datagram(&mut self, slot: usize, off: usize, len: usize, tap: RawFd) -> io::Result<bool> {
        let tag = if self.open.is_some() { TAG } else { 0 };
        if len < HEADER + tag {
            self.lost();
            return Ok(false);
        }
        let at = slot * RX_SLOT + off;
        let d = &mut self.ring[at..at + len];
        let msg = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        let piece = usize::from(u16::from_be_bytes([d[4], d[5]]));
        let pieces = usize::from(u16::from_be_bytes([d[6], d[7]]));
        let body = d[HEADER..].as_mut_ptr();
        if let Some(s) = self.open.as_ref() {
            let (header, body) = d.split_at_mut(HEADER);
            if s.key
                .open_in_place(s.nonce(header), Aad::empty(), body)
                .is_err()
            {
                self.lost();
                return Ok(false);
            }
        }
        if pieces == 0 {
            // An acknowledgement: read, opened, and nothing else.
            return Ok(false);
        }
        if pieces > MAX_PIECES {
            // More pieces than any TAP frame is cut into: not ours.
            self.lost();
            return Ok(false);
        }
        if piece == 0 {
            if !self.parts.is_empty() {
                self.lost();
            }
            self.parts.clear();
            self.msg = msg;
            self.pieces = pieces;
            self.msg_call = self.calls;
        } else if msg != self.msg
            || piece != self.parts.len()
            || self.calls - self.msg_call >= (RX_RING / RX_BATCH - 1) as u64
        {
            // A lost or late piece, or one so late that the message's
            // first slots may be in use again: the message is gone.
            self.parts.clear();
            self.lost();
            return Ok(true);
        }
        self.parts.push(libc::iovec {
            iov_base: body.cast(),
            iov_len: len - HEADER - tag,
        });
        if self.parts.len() == self.pieces {
            // SAFETY: the iovecs point into `ring`, which outlives the call.
            let r =
                unsafe { libc::writev(tap, self.parts.as_ptr(), self.parts.len() as libc::c_int) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock {
                    return Err(e);
                }
                self.lost();
            }
            self.parts.clear();
        }
        Ok(true)
    }
}

/// A MAC byte from the interface address, so the two ends differ.
fn mac_byte(a: &IpCidr) -> u8 {
    match a.addr {
        std::net::IpAddr::V4(v4) => v4.octets()[3],
        std::net::IpAddr::V6(v6) => v6.octets()[15],
    }
}

fn run(a: Args) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _enter = rt.enter();
    let tap = Tap::open(&TapConfig {
        name: a.tap.clone(),
        mtu: 1400,
        mac: [0x02, 0x52, 0x4c, 0x46, 0, mac_byte(&a.addr)],
        addresses: vec![a.addr],
    })?;
    let tapf = tap.writer()?;
    let tapfd = tapf.as_raw_fd();
    let sock = UdpSocket::bind(a.local)?;
    sock.set_nonblocking(true)?;
    let fd = sock.as_raw_fd();
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCKET_BUFFER)?;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCKET_BUFFER)?;
    setsockopt(fd, libc::SOL_UDP, UDP_GRO, 1)?;
    let SocketAddr::V4(peer) = a.peer else {
        return Err(io::Error::other("--peer must be IPv4"));
    };
    let peer = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: peer.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*peer.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // Directions: the side with the lower address seals with 1, the other 2.
    let (out_dir, in_dir) = if (a.local.ip(), a.local.port()) < (a.peer.ip(), a.peer.port()) {
        (1, 2)
    } else {
        (2, 1)
    };
    let mut tx = Tx {
        buf: vec![0u8; TAP_BATCH * (TAP_MAX_FRAME + VNET_HDR_LEN).div_ceil(PIECE) * DATAGRAM],
        len: 0,
        runs: Vec::new(),
        seal: a.seal.then(|| Seal::new(out_dir)),
        msg: 0,
        iov: Vec::new(),
        cmsg: Vec::new(),
        msgs: Vec::new(),
    };
    let mut rx = Rx {
        ring: vec![0u8; RX_RING * RX_SLOT],
        next: 0,
        open: a.seal.then(|| Seal::new(in_dir)),
        msg: 0,
        pieces: 0,
        parts: Vec::new(),
        calls: 0,
        msg_call: 0,
        dropped: 0,
        ack_every: a.ack_every,
        // Acknowledgements go the other way: sealed with this side's
        // direction, in a nonce space of their own (pieces = 0).
        ack: a.seal.then(|| Seal::new(out_dir)),
        acks_sent: 0,
    };
    let mut frame = vec![0u8; VNET_HDR_LEN + TAP_MAX_FRAME];
    eprintln!(
        "tap_floor: {} {} -> {} {}",
        a.tap,
        a.local,
        a.peer,
        if a.seal { "AES-256-GCM" } else { "clear" }
    );
    let mut fds = [
        libc::pollfd {
            fd: tapfd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two live descriptors in a stack array.
        check(unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) })?;
        for _ in 0..TAP_BATCH {
            // SAFETY: `frame` is a live buffer of its length.
            let n = unsafe { libc::read(tapfd, frame.as_mut_ptr().cast(), frame.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(e);
            }
            tx.push(&frame[..n as usize]);
        }
        tx.flush(fd, &peer)?;
        while rx.poll(fd, tapfd, &peer)? {}
    }
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tap_floor: {e}\nusage: tap_floor --tap NAME --addr CIDR --local IP:PORT --peer IP:PORT [--seal] [--ack N]");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(a) {
        eprintln!("tap_floor: {e}");
        std::process::exit(1);
    }
}
