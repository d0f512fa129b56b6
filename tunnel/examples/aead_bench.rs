//! Micro benchmark: seal + open throughput of the session packet protection
//! for both AEAD suites at 1400-byte plain packets.
//!
//! `cargo run --release -p ringlan-tunnel --example aead_bench`

use std::time::Instant;

use ringlan_tunnel::crypto::{
    AeadSuite, PacketOpener, PacketSealer, SESSION_HEADER_LEN, SESSION_OVERHEAD,
};

const PLAIN: usize = 1400;
const PACKETS: u64 = 200_000;

fn main() {
    for suite in [AeadSuite::ChaCha20Poly1305, AeadSuite::Aes256Gcm] {
        let key = [0x5a; 32];
        let mut sealer = PacketSealer::new(suite, &key);
        let mut opener = PacketOpener::new(suite, &key);
        let mut buf = vec![0u8; PLAIN + SESSION_OVERHEAD];
        let start = Instant::now();
        let mut checksum = 0u64;
        for i in 0..PACKETS {
            buf[SESSION_HEADER_LEN] = i as u8;
            let sealed = match sealer.seal(&mut buf, SESSION_HEADER_LEN, PLAIN) {
                Ok(r) => r,
                Err(e) => panic!("seal: {e}"),
            };
            let plain = match opener.open(&mut buf[sealed]) {
                Ok(r) => r,
                Err(e) => panic!("open: {e}"),
            };
            checksum = checksum.wrapping_add(u64::from(buf[plain.start]));
        }
        let secs = start.elapsed().as_secs_f64();
        let bytes = (PACKETS * PLAIN as u64) as f64;
        println!(
            "{suite:>18}: {:>8.0} packets/s seal+open, {:>6.2} Gbit/s ({:.0} MB/s) of plain data [{checksum}]",
            PACKETS as f64 / secs,
            bytes * 8.0 / secs / 1e9,
            bytes / secs / 1e6,
        );
    }
}
