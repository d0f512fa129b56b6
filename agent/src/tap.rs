//! The TAP device: the node's port on the virtual Ethernet LAN.
//!
//! Built with tun-rs (`DeviceBuilder` with `Layer::L2`, i.e. `IFF_TAP |
//! IFF_NO_PI`), used through its tokio `AsyncDevice`. The device is not
//! persistent: the kernel removes it when the file descriptor is closed, so
//! dropping [`Tap`] removes the interface.
//!
//! Performance options tun-rs offers on Linux that also apply to TAP (not
//! enabled yet; the data path would have to handle them):
//! - `offload(true)` sets `IFF_VNET_HDR` and enables TSO/GSO/checksum
//!   offload: every frame read/written is preceded by a 10-byte
//!   `virtio_net_hdr` (`tun_rs::VIRTIO_NET_HDR_LEN`), and reads may return
//!   up to 64 KiB super-frames that have to be segmented
//!   (`recv_multiple`/`send_multiple` with a `GROTable` do that for IP
//!   packets on TUN; for TAP the Ethernet header follows the virtio header).
//! - `multi_queue(true)` sets `IFF_MULTI_QUEUE`; `try_clone` then opens
//!   further queues of the same interface for per-core readers.
//! - `tx_queue_len(n)` sets the interface's transmit queue length.

use std::io;

use sha2::{Digest, Sha256};
use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

use crate::config::IpCidr;

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

/// A stable MAC derived from 32 key-derived bytes (e.g. the node's public
/// key): the first six bytes of SHA-256("ringlan tap mac" || input), with
/// the first octet forced to a locally administered unicast address
/// (`xxxxxx10`).
pub fn derive_mac(input: &[u8; 32]) -> [u8; 6] {
    let mut h = Sha256::new();
    h.update(b"ringlan tap mac");
    h.update(input);
    let d = h.finalize();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&d[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
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
            .enable(true)
            .build_async()?;
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

    /// Reads one Ethernet frame (no FCS) into `buf`; returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.dev.recv(buf).await
    }

    /// Writes one Ethernet frame.
    pub async fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.dev.send(frame).await
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
            let mut buf = [0u8; 2048];
            let arp = loop {
                let n = tap.recv(&mut buf).await.unwrap();
                let f = &buf[..n];
                // EtherType 0x0806, opcode 1, target IP 10.77.9.7
                if n >= 42
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
            assert_eq!(tap.send(&frame).await.unwrap(), frame.len());
            assert_eq!(rx_packets(), before + 1);

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
        if !is_root() {
            if std::env::var("RINGLAN_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
                eprintln!("skipping tap_in_netns: not root and RINGLAN_SKIP_ROOT_TESTS=1");
                return;
            }
            panic!(
                "tap_in_netns needs root (CAP_NET_ADMIN to create a network namespace and a TAP); \
                 run as root or set RINGLAN_SKIP_ROOT_TESTS=1 to skip"
            );
        }
        let ns = netns_name();
        let st = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {ns}");
        struct Cleanup(String);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let _cleanup = Cleanup(ns.clone());
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(exe)
            .args([
                "--exact",
                "tap::tests::tap_in_netns",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RINGLAN_TAP_CHILD", "1")
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
