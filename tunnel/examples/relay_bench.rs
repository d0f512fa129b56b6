//! What forwarding a route datagram costs a relay (`docs/relay.md`), and
//! what the hop tag's coverage of the whole datagram adds (issue 12 item
//! 5), measured in one run.
//!
//! 1. The relay's forward path as it is: `Routes::input` on a transit
//!    entry (window check, hop tag verify over the whole datagram, limits,
//!    header and tag rewritten for the next hop), per datagram, for
//!    1400-byte end-to-end packets, then for 1412-byte ones, whose hop
//!    tags cover whole AES blocks (the size the ends send on a route over
//!    1500-byte links, `session::align`). The datagrams are wrapped by the
//!    route's origin beforehand, outside the timing.
//! 2. The two tags per forwarded datagram alone: as the relay makes them
//!    (the datagram copied and sealed as AES-256-GCM plaintext, the tag
//!    kept), the alternatives (the datagram as associated data of
//!    AES-256-GCM, i.e. GMAC, or of ChaCha20-Poly1305), and the GMAC over
//!    the 36 bytes the tag covered before (header, length, the end-to-end
//!    tag): (1) minus the difference between the first and the last is
//!    what the forward path would cost with the old tag.
//!
//! 3. The forward path of (1) with AEGIS-128L hop tags (a hop between two
//!    nodes that run it, `route_table::HopMac`).
//!
//! `cargo run --release -p ringlan-tunnel --example relay_bench`
//! (`BENCH_PACKETS`, default 2,000,000).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use ringlan_tunnel::fuzzing::{RouteInput, Routes, ROUTE_HEADER_LEN};
use ringlan_tunnel::{HopKey, HopMac, RelayLimits, RouteId, RouteOffer, ROUTE_OVERHEAD};

const PLAIN: usize = 1400;
/// The end-to-end packet the ends send on a route over 1500-byte links:
/// padded so that the hop tags cover whole AES blocks (`session::align`).
const PLAIN_WHOLE_BLOCKS: usize = 1412;
const BATCH: usize = 4096;

fn forward_path(packets: usize, plain: usize, mac: HopMac) -> Duration {
    let t0 = Instant::now();
    let mut origin = Routes::new(RelayLimits::default());
    // No bandwidth caps: the bench measures the work per datagram.
    let mut relay = Routes::new(RelayLimits {
        enabled: true,
        max_mbps: 0.0,
        max_total_mbps: 0.0,
        ..RelayLimits::default()
    });
    origin.begin_end(t0, 100, 7, HopKey::new([1; 32], mac));
    let offer = RouteOffer {
        id: RouteId(100),
        key: HopKey::new([1; 32], mac),
    };
    relay
        .begin_transit(t0, 200, 201, 8, &offer, 9, &HopKey::new([2; 32], mac))
        .expect("transit entry");
    relay.finish(200, 300).expect("finish transit");
    origin.finish(100, 200).expect("finish end");
    let mut pool = vec![vec![0u8; plain + ROUTE_OVERHEAD]; BATCH];
    let mut lens = vec![0usize; BATCH];
    let mut spent = Duration::ZERO;
    let mut done = 0;
    while done < packets {
        let now = Instant::now();
        for (buf, len) in pool.iter_mut().zip(lens.iter_mut()) {
            buf[ROUTE_HEADER_LEN..ROUTE_HEADER_LEN + plain].fill(0x5a);
            *len = origin.wrap(now, 100, buf, plain).expect("wrap").1;
        }
        let start = Instant::now();
        for (buf, len) in pool.iter_mut().zip(&lens) {
            match relay.input(now, 200, &mut buf[..*len], |_| true) {
                RouteInput::Forward { .. } => {}
                other => panic!("not forwarded: {other:?}"),
            }
        }
        spent += start.elapsed();
        done += BATCH;
    }
    spent / done as u32
}

/// Two tags per forwarded datagram (verify on the way in, seal on the
/// way out): `aad_len` bytes hashed as associated data (GMAC), or, with
/// `copy`, `len` bytes copied and sealed as plaintext (the relay's hop tag).
fn tag_pair(
    alg: &'static ring::aead::Algorithm,
    len: usize,
    copy: bool,
    packets: usize,
) -> Duration {
    let key = LessSafeKey::new(UnboundKey::new(alg, &[7; 32]).expect("key"));
    let data = vec![0x5au8; len];
    let mut scratch = vec![0u8; len];
    let start = Instant::now();
    for i in 0..packets as u64 {
        for k in 0..2u64 {
            let mut n = [0u8; 12];
            n[4..].copy_from_slice(&(2 * i + k).to_be_bytes());
            let nonce = Nonce::assume_unique_for_key(n);
            let tag = if copy {
                scratch.copy_from_slice(black_box(&data));
                key.seal_in_place_separate_tag(nonce, Aad::empty(), &mut scratch)
            } else {
                key.seal_in_place_separate_tag(nonce, Aad::from(black_box(&data[..])), &mut [])
            }
            .expect("seal");
            let _ = black_box(tag);
        }
    }
    start.elapsed() / packets as u32
}

fn main() {
    let packets: usize = std::env::var("BENCH_PACKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "relay forward, {PLAIN}-byte end-to-end packets, {packets} datagrams (load {})",
        load.split_whitespace().next().unwrap_or("?")
    );
    let path = forward_path(packets, PLAIN, HopMac::AesGcm);
    let aligned = forward_path(packets, PLAIN_WHOLE_BLOCKS, HopMac::AesGcm);
    let aegis = forward_path(packets, PLAIN_WHOLE_BLOCKS, HopMac::Aegis128L);
    let whole = 12 + PLAIN;
    let now_tags = tag_pair(&AES_256_GCM, whole, true, packets);
    let gmac = tag_pair(&AES_256_GCM, whole, false, packets);
    let poly = tag_pair(&CHACHA20_POLY1305, whole, false, packets);
    let old_tags = tag_pair(&AES_256_GCM, 12 + 4 + 16, false, packets);
    let old = path.saturating_sub(now_tags.saturating_sub(old_tags));
    let gbps = |d: Duration| PLAIN as f64 * 8.0 / d.as_secs_f64() / 1e9;
    println!(
        "  forward path, whole-datagram hop tag: {:>6.0} ns/datagram ({:.1} Gbit/s of end-to-end packets on one core)",
        path.as_nanos(),
        gbps(path)
    );
    println!(
        "  the same, {PLAIN_WHOLE_BLOCKS}-byte end-to-end packets (the hop tags over whole AES blocks): {:>6.0} ns/datagram",
        aligned.as_nanos()
    );
    println!(
        "  the same with AEGIS-128L hop tags: {:>6.0} ns/datagram ({:.1} Gbit/s)",
        aegis.as_nanos(),
        gbps(aegis)
    );
    println!("  two tags per datagram over {whole} bytes:");
    println!(
        "    AES-256-GCM sealing a copy (used): {:>6.0} ns",
        now_tags.as_nanos()
    );
    println!(
        "    AES-256-GCM, datagram as AAD:      {:>6.0} ns",
        gmac.as_nanos()
    );
    println!(
        "    ChaCha20-Poly1305, datagram as AAD:{:>6.0} ns",
        poly.as_nanos()
    );
    println!(
        "    before: AES-256-GCM over 36 bytes: {:>6.0} ns",
        old_tags.as_nanos()
    );
    println!(
        "  forward path with the old tag (est.): {:>6.0} ns/datagram ({:.1} Gbit/s); whole coverage costs {:.0}% more per datagram",
        old.as_nanos(),
        gbps(old),
        100.0 * (path.as_secs_f64() - old.as_secs_f64()) / old.as_secs_f64()
    );
}
