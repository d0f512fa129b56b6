//! Micro benchmark: seal + open throughput of the session packet protection
//! for every AEAD suite at 1400-byte plain packets, then the cost of one
//! seal + open by plain-text length around whole 16-byte blocks (why AES
//! packets are padded, `session::align`).
//!
//! `cargo run --release -p ringlan-tunnel --example aead_bench`

use std::time::Instant;

use ringlan_tunnel::crypto::{
    AeadSuite, PacketOpener, PacketSealer, SESSION_HEADER_LEN, SESSION_OVERHEAD,
};

const PLAIN: usize = 1400;
const PACKETS: u64 = 200_000;

/// Seal and open `packets` plain texts of `plain` bytes; seconds taken.
fn run(suite: AeadSuite, plain: usize, packets: u64) -> (f64, u64) {
    let key = [0x5a; 32];
    let mut sealer = PacketSealer::new(suite, &key);
    let mut opener = PacketOpener::new(suite, &key);
    let mut buf = vec![0u8; plain + SESSION_OVERHEAD];
    let start = Instant::now();
    let mut checksum = 0u64;
    for i in 0..packets {
        buf[SESSION_HEADER_LEN] = i as u8;
        let sealed = match sealer.seal(&mut buf, SESSION_HEADER_LEN, plain) {
            Ok(r) => r,
            Err(e) => panic!("seal: {e}"),
        };
        let opened = match opener.open(&mut buf[sealed]) {
            Ok(r) => r,
            Err(e) => panic!("open: {e}"),
        };
        checksum = checksum.wrapping_add(u64::from(buf[opened.start]));
    }
    (start.elapsed().as_secs_f64(), checksum)
}

const SUITES: [AeadSuite; 3] = [
    AeadSuite::ChaCha20Poly1305,
    AeadSuite::Aes256Gcm,
    AeadSuite::Aegis128L,
];

fn main() {
    for suite in SUITES {
        let (secs, checksum) = run(suite, PLAIN, PACKETS);
        let bytes = (PACKETS * PLAIN as u64) as f64;
        println!(
            "{suite:>18}: {:>8.0} packets/s seal+open, {:>6.2} Gbit/s ({:.0} MB/s) of plain data [{checksum}]",
            PACKETS as f64 / secs,
            bytes * 8.0 / secs / 1e9,
            bytes / secs / 1e6,
        );
    }
    println!("seal + open by plain-text length (whole 16-byte blocks marked *), ns:");
    for suite in SUITES {
        let mut line = format!("{suite:>18}:");
        for plain in [64, 72, 80, 1424, 1432, 1436, 1440, 1444, 1456] {
            // Best of three: the least disturbed by other work.
            let best = (0..3)
                .map(|_| run(suite, plain, PACKETS).0)
                .fold(f64::INFINITY, f64::min);
            let mark = if plain % 16 == 0 { "*" } else { "" };
            line += &format!(" {plain}{mark} {:.0}", best * 1e9 / PACKETS as f64);
        }
        println!("{line}");
    }
}
