//! The TAP device: the node's port on the virtual Ethernet LAN.
//!
//! Built with tun-rs (`DeviceBuilder` with `Layer::L2`, i.e. `IFF_TAP |
//! IFF_NO_PI`), used through its tokio `AsyncDevice`. The device is not
//! persistent: the kernel removes it when the file descriptor is closed, so
//! dropping [`Tap`] removes the interface.
//!
//! Offloads (docs/dataplane.md): the device is opened with `IFF_VNET_HDR`
//! and the TCP offloads (`TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`), so every
//! frame read or written is preceded by a [`VNET_HDR_LEN`]-byte
//! `virtio_net_hdr` ([`VnetHdr`]) and the kernel may hand us TCP
//! super-frames of up to 64 KiB (GSO) whose checksums are left partial.
//! ringlan carries the header with the frame end to end and writes both on
//! the far side's TAP, where the kernel segments and checksums if it has
//! to. UDP segmentation offload (`TUN_F_USO*`) stays off: kernels before
//! 6.2 cannot take such frames back.
//!
//! Not used yet: `multi_queue(true)` (`IFF_MULTI_QUEUE`; `try_clone` opens
//! further queues of the same interface for per-core readers) and
//! `tx_queue_len(n)`.

use std::io;
use std::io::IoSlice;
use std::os::fd::AsRawFd;

use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

use crate::config::IpCidr;

pub use ringlan_node::vnet::{FrameCheck, VnetHdr, TAP_MAX_FRAME, VNET_HDR_LEN};

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name (at most 15 bytes).
    pub name: String,
    pub mtu: u16,
    pub mac: [u8; 6],
    /// Addresses to assign; may be empty (left unconfigured).
    pub addresses: Vec<IpCidr>,
}

/// A stable MAC derived from the node's public key (`interface.mac:
/// auto`): [`ringlan_overlay::auto_mac`], which lives in the sans-IO
/// overlay so that every member can compute any member's auto MAC.
pub fn derive_mac(input: &[u8; 32]) -> [u8; 6] {
    ringlan_overlay::auto_mac(input).0
}

/// `aa:bb:cc:dd:ee:ff`
pub fn format_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// An open TAP device. Removed from the system when dropped.
pub struct Tap {
    dev: AsyncDevice,
    name: String,
    mtu: u16,
    mac: [u8; 6],
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("mac", &format_mac(&self.mac))
            .finish()
    }
}

impl Tap {
    /// Creates the TAP device, sets MTU and MAC, assigns the addresses and
    /// brings it up. Needs CAP_NET_ADMIN and a tokio runtime.
    pub fn open(cfg: &TapConfig) -> io::Result<Tap> {
        let dev = DeviceBuilder::new()
            .name(cfg.name.as_str())
            .layer(Layer::L2)
            .mtu(cfg.mtu)
            .mac_addr(cfg.mac)
            .offload(true)
            .enable(true)
            .build_async()?;
        // tun-rs also turns on UDP segmentation offload where the kernel
        // has it; keep to TCP so that every Linux peer can write what we
        // read (module docs).
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: the descriptor is a live TUN/TAP fd owned by `dev`;
        // TUNSETOFFLOAD takes the flag word by value.
        let r = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(offloads),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        for a in &cfg.addresses {
            match a.addr {
                std::net::IpAddr::V4(v4) => dev.add_address_v4(v4, a.prefix)?,
                std::net::IpAddr::V6(v6) => dev.add_address_v6(v6, a.prefix)?,
            }
        }
        let name = dev.name()?;
        let mtu = dev.mtu()?;
        let mac = dev.mac_address()?;
        Ok(Tap {
            dev,
            name,
            mtu,
            mac,
        })
    }

    /// Reads one frame into `buf`: the [`VNET_HDR_LEN`]-byte virtio header,
    /// then the Ethernet frame (no FCS); returns the total length. `buf`
    /// should hold `VNET_HDR_LEN + TAP_MAX_FRAME` bytes.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.dev.recv(buf).await
    }

    /// [`Tap::recv`] without waiting: `WouldBlock` when nothing is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.dev.try_recv(buf)
    }

    /// [`Tap::try_recv`] straight from the descriptor, without asking the
    /// runtime whether the TAP is readable. The runtime's readiness is
    /// cleared by the read that found the TAP empty and set again only
    /// when its event loop next polls, but a frame this thread has just
    /// written may already have drawn the kernel's answer (a TCP
    /// acknowledgement, the segments a sender's opened window lets out, an
    /// echo reply), which this read finds at once. `WouldBlock` when
    /// nothing is queued; reading past the runtime's back is harmless, as
    /// its next readiness event for a frame taken here only costs one read
    /// that finds nothing.
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the descriptor is a live, non-blocking TUN/TAP fd owned
        // by `dev`; `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(self.dev.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        // A negative count is an error, any other fits a usize.
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Writes one Ethernet frame behind its virtio header (one `writev`);
    /// returns the bytes written, header included.
    pub async fn send(&self, vnet: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<usize> {
        self.dev
            .send_vectored(&[IoSlice::new(vnet), IoSlice::new(frame)])
            .await
    }

    /// A second descriptor of the TAP (a `dup`), for writing frames from
    /// another thread ([`crate::tap_writer`]). It shares the device's file
    /// status flags, so writes do not block.
    pub fn writer(&self) -> io::Result<std::fs::File> {
        // SAFETY: the descriptor is live (owned by `dev`, which outlives
        // this call); it is only borrowed to be duplicated.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.dev.as_raw_fd()) };
        Ok(std::fs::File::from(fd.try_clone_to_owned()?))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Interface index.
    pub fn if_index(&self) -> io::Result<u32> {
        self.dev.if_index()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::process::Command;

    #[test]
    fn derived_mac_is_local_unicast_and_stable() {
        for seed in 0u8..=255 {
            let m = derive_mac(&[seed; 32]);
            assert_eq!(m[0] & 0x03, 0x02, "{}", format_mac(&m));
            assert_eq!(m, derive_mac(&[seed; 32]));
        }
        assert_ne!(derive_mac(&[1; 32]), derive_mac(&[2; 32]));
        assert_eq!(format_mac(&[2, 0, 0xab, 1, 2, 3]), "02:00:ab:01:02:03");
    }

    /// Name of the throw-away namespace this test process uses.
    fn netns_name() -> String {
        format!("rl-tap-test-{}", std::process::id())
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn ip_json(args: &[&str]) -> serde_json::Value {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ip -j output is JSON")
    }

    /// Runs in the child process, inside the namespace created by
    /// `tap_in_netns`.
    fn tap_body() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let cfg = TapConfig {
                name: "rl-test0".into(),
                mtu: 1380,
                mac: [0x02, 0x11, 0x22, 0x33, 0x44, 0x55],
                addresses: vec![
                    "10.77.9.2/24".parse().unwrap(),
                    "fd77:9::2/64".parse().unwrap(),
                ],
            };
            let tap = Tap::open(&cfg).expect("open TAP");
            assert_eq!(tap.name(), "rl-test0");
            assert_eq!(tap.mtu(), 1380);
            assert_eq!(tap.mac(), cfg.mac);

            let link = ip_json(&["-j", "link", "show", "dev", "rl-test0"]);
            let l = &link[0];
            assert_eq!(l["mtu"], 1380, "{l}");
            assert_eq!(l["address"], "02:11:22:33:44:55", "{l}");
            assert_eq!(l["link_type"], "ether", "{l}");
            assert!(
                l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
                "{l}"
            );
            let addr = ip_json(&["-j", "addr", "show", "dev", "rl-test0"]);
            let infos = addr[0]["addr_info"].as_array().unwrap();
            let has = |local: &str, plen: u64| {
                infos
                    .iter()
                    .any(|i| i["local"] == local && i["prefixlen"] == plen)
            };
            assert!(has("10.77.9.2", 24), "{infos:?}");
            assert!(has("fd77:9::2", 64), "{infos:?}");

            // recv: a UDP datagram to a neighbour on the TAP's subnet makes
            // the kernel send an ARP request for it out of the TAP.
            let sock = std::net::UdpSocket::bind("10.77.9.2:0").unwrap();
            sock.send_to(b"x", "10.77.9.7:9").unwrap();
            let mut buf = vec![0u8; VNET_HDR_LEN + TAP_MAX_FRAME];
            let arp = loop {
                let n = tap.recv(&mut buf).await.unwrap();
                assert!(n >= VNET_HDR_LEN, "{n} bytes: no virtio header");
                let vnet = VnetHdr::parse(buf[..VNET_HDR_LEN].try_into().unwrap());
                assert!(!vnet.is_gso(), "{vnet:?}");
                let f = &buf[VNET_HDR_LEN..n];
                // EtherType 0x0806, opcode 1, target IP 10.77.9.7
                if f.len() >= 42
                    && f[12..14] == [8, 6]
                    && f[20..22] == [0, 1]
                    && f[38..42] == [10, 77, 9, 7]
                {
                    break f.to_vec();
                }
            };
            assert_eq!(&arp[0..6], &[0xff; 6]);
            assert_eq!(&arp[6..12], &cfg.mac);

            // send: a frame written to the TAP is received by the kernel.
            let rx_packets = || {
                let v = ip_json(&["-j", "-s", "link", "show", "dev", "rl-test0"]);
                v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
            };
            let before = rx_packets();
            let mut frame = arp.clone();
            frame[0..6].copy_from_slice(&cfg.mac);
            frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 7]);
            let none = [0u8; VNET_HDR_LEN];
            assert_eq!(
                tap.send(&none, &frame).await.unwrap(),
                VNET_HDR_LEN + frame.len()
            );
            assert_eq!(rx_packets(), before + 1);

            // read_now: nothing queued is WouldBlock; a frame written draws
            // the kernel's answer, which it reads without the event loop
            // (an ARP request for the TAP's own address from a neighbour
            // on its subnet: the ARP reply comes back out of the TAP).
            while tap.read_now(&mut buf).is_ok() {}
            let err = tap.read_now(&mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
            let neighbour = [0x02, 0, 0, 0, 0, 7];
            let mut request = Vec::new();
            request.extend_from_slice(&[0xff; 6]);
            request.extend_from_slice(&neighbour);
            request.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
            request.extend_from_slice(&neighbour);
            request.extend_from_slice(&[10, 77, 9, 7]);
            request.extend_from_slice(&[0; 6]);
            request.extend_from_slice(&[10, 77, 9, 2]);
            tap.send(&none, &request).await.unwrap();
            let is_reply = |f: &[u8]| {
                f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2] && f[0..6] == neighbour
            };
            let reply = (0..1000).find_map(|_| match tap.read_now(&mut buf) {
                Ok(n) if is_reply(&buf[VNET_HDR_LEN..n]) => Some(buf[VNET_HDR_LEN..n].to_vec()),
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The kernel may answer from its softirq thread when
                    // busy: a short wait, never an await.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    None
                }
                Err(e) => panic!("read_now: {e}"),
            });
            let reply = reply.expect("the ARP reply, read without the event loop");
            assert_eq!(&reply[6..12], &cfg.mac, "from the TAP's MAC");
            assert_eq!(&reply[28..32], &[10, 77, 9, 2], "for the TAP's address");

            drop(tap);
            let out = Command::new("ip")
                .args(["link", "show", "dev", "rl-test0"])
                .output()
                .unwrap();
            assert!(!out.status.success(), "rl-test0 still exists after drop");
        });
    }

    /// Creates a TAP in a fresh network namespace: the test binary re-runs
    /// itself (this test only) under `ip netns exec`, with
    /// RINGLAN_TAP_CHILD=1 selecting the body.
    #[test]
    fn tap_in_netns() {
        if std::env::var_os("RINGLAN_TAP_CHILD").is_some() {
            tap_body();
            return;
        }
        run_in_netns("tap::tests::tap_in_netns", &[]);
    }

    /// Two TAPs, one moved into a second namespace, joined by a shuttle
    /// that does what two nodes do: read virtio header and frame from one
    /// TAP, check it, write both to the other. A TCP transfer between the
    /// namespaces arrives intact, and TSO made the kernel hand over
    /// super-frames larger than the MTU (written back whole on the far
    /// side, where the kernel takes them).
    #[test]
    fn gso_super_frames_cross_between_taps() {
        if let Some(peer_ns) = std::env::var_os("RINGLAN_TAP_CHILD") {
            gso_body(peer_ns.to_str().unwrap());
            return;
        }
        run_in_netns("tap::tests::gso_super_frames_cross_between_taps", &["peer"]);
    }

    fn gso_body(peer_ns: &str) {
        const MTU: u16 = 1400;
        const BYTES: usize = 16 << 20;
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let tap0 = Tap::open(&TapConfig {
                name: "rl-gso0".into(),
                mtu: MTU,
                mac: [0x02, 0, 0, 0, 0, 1],
                addresses: vec!["10.77.8.1/24".parse().unwrap()],
            })
            .expect("open rl-gso0");
            let tap1 = Tap::open(&TapConfig {
                name: "rl-gso1".into(),
                mtu: MTU,
                mac: [0x02, 0, 0, 0, 0, 2],
                addresses: vec![],
            })
            .expect("open rl-gso1");
            // The descriptor stays with us; the interface moves.
            ip(&["link", "set", "rl-gso1", "netns", peer_ns]);
            ip(&[
                "-n",
                peer_ns,
                "addr",
                "add",
                "10.77.8.2/24",
                "dev",
                "rl-gso1",
            ]);
            ip(&["-n", peer_ns, "link", "set", "rl-gso1", "up"]);

            let listener = std::net::TcpListener::bind("10.77.8.1:0").unwrap();
            let to = listener.local_addr().unwrap();
            let receiver = std::thread::spawn(move || {
                use std::io::Read;
                let (mut c, _) = listener.accept().unwrap();
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0usize;
                loop {
                    let n = c.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    total += n;
                }
                (total, h.finalize().to_vec())
            });
            let ns_path = format!("/var/run/netns/{peer_ns}");
            let sender = std::thread::spawn(move || {
                use std::io::Write;
                let ns = std::fs::File::open(ns_path).unwrap();
                // SAFETY: a valid namespace fd; setns affects this thread only.
                let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", io::Error::last_os_error());
                let mut c = std::net::TcpStream::connect(to).unwrap();
                let mut h = Sha256::new();
                let mut block = vec![0u8; 1 << 16];
                let mut x: u32 = 0x9e37_79b9;
                for _ in 0..BYTES / block.len() {
                    for b in block.iter_mut() {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        *b = x as u8;
                    }
                    c.write_all(&block).unwrap();
                    h.update(&block);
                }
                h.finalize().to_vec()
            });

            let max_frame = usize::from(MTU) + 18;
            let mut b0 = vec![0u8; VNET_HDR_LEN + TAP_MAX_FRAME];
            let mut b1 = vec![0u8; VNET_HDR_LEN + TAP_MAX_FRAME];
            let (mut gso_frames, mut largest) = (0u64, 0usize);
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
            while !(sender.is_finished() && receiver.is_finished()) {
                let (n, from_peer) = tokio::select! {
                    r = tap0.recv(&mut b0) => (r.unwrap(), false),
                    r = tap1.recv(&mut b1) => (r.unwrap(), true),
                    _ = tick.tick() => continue,
                };
                let (buf, out) = if from_peer {
                    (&b1, &tap0)
                } else {
                    (&b0, &tap1)
                };
                let vnet: &[u8; VNET_HDR_LEN] = buf[..VNET_HDR_LEN].try_into().unwrap();
                let frame = &buf[VNET_HDR_LEN..n];
                let h = VnetHdr::parse(vnet);
                h.check(frame.len(), max_frame)
                    .unwrap_or_else(|e| panic!("{e:?}: {h:?}, {} bytes", frame.len()));
                if h.is_gso() {
                    gso_frames += 1;
                }
                largest = largest.max(frame.len());
                out.send(vnet, frame).await.unwrap();
            }
            let sent = sender.join().unwrap();
            let (total, got) = receiver.join().unwrap();
            assert_eq!(total, BYTES);
            assert_eq!(got, sent, "SHA-256 of the received stream");
            assert!(gso_frames > 0, "no GSO super-frame seen");
            assert!(largest > max_frame, "largest frame {largest} bytes");
            eprintln!("{gso_frames} GSO super-frames, largest {largest} bytes");
        });
    }

    /// Re-runs this test binary (test `name` only) inside a fresh network
    /// namespace, with RINGLAN_TAP_CHILD set to the name of a second fresh
    /// namespace when `extra` asks for one (else to "1"). Both are removed
    /// afterwards.
    fn run_in_netns(name: &str, extra: &[&str]) {
        if !is_root() {
            if std::env::var("RINGLAN_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
                eprintln!("skipping {name}: not root and RINGLAN_SKIP_ROOT_TESTS=1");
                return;
            }
            panic!(
                "{name} needs root (CAP_NET_ADMIN to create a network namespace and a TAP); \
                 run as root or set RINGLAN_SKIP_ROOT_TESTS=1 to skip"
            );
        }
        struct Cleanup(Vec<String>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for ns in &self.0 {
                    let _ = Command::new("ip").args(["netns", "del", ns]).status();
                }
            }
        }
        let ns = format!(
            "{}-{}",
            netns_name(),
            name.rsplit("::").next().unwrap_or("")
        );
        let ns: String = ns.chars().take(60).collect();
        let mut cleanup = Cleanup(Vec::new());
        let mut child_env = "1".to_string();
        for n in std::iter::once(ns.clone()).chain(extra.iter().map(|e| format!("{ns}-{e}"))) {
            let st = Command::new("ip")
                .args(["netns", "add", &n])
                .status()
                .unwrap();
            assert!(st.success(), "ip netns add {n}");
            cleanup.0.push(n.clone());
            if n != ns {
                child_env = n;
            }
        }
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env("RINGLAN_TAP_CHILD", child_env)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(text.contains("1 passed"), "child ran no test:\n{text}");
    }
}
