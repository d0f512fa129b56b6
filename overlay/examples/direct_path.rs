//! Time the overlay's share of the direct data path, the bulk of the
//! traffic: a direct frame from a linked peer (source policy check,
//! learning) and a TAP frame to a linked peer's learnt MAC (switch
//! decision). No signature on either. `cargo run --release -p
//! ringlan-overlay --example direct_path`; figures in docs/dataplane.md.

use ringlan_overlay::wire::{Hello, Message};
use ringlan_overlay::{Config, Mac, Overlay, Role};
use ringlan_tunnel::{NodeId, Rng};
use std::hint::black_box;
use std::time::Instant;

const FRAMES: u32 = 5_000_000;

fn main() {
    let t0 = Instant::now();
    let own = Mac([2, 0, 0, 0, 0, 1]);
    let mut cfg = Config::new(NodeId(100), "a", Role::Node, Some(own));
    cfg.introducers = vec!["198.51.100.7:4910".parse().expect("an address")];
    let mut o = Overlay::new(t0, cfg, Rng::from_seed([1; 32])).expect("a valid config");
    let (peer, pmac) = (NodeId(7), Mac([2, 0, 0, 0, 0, 7]));
    o.peer_up(t0, peer, "203.0.113.1:1".parse().ok(), false);
    let hello = Message::Hello(Hello {
        node_id: peer,
        name: "p".into(),
        role: Role::Node,
        addrs: vec![],
        mac: Some(pmac),
        relays: false,
        bridge: false,
        symmetric_nat: false,
        aegis_hops: false,
    });
    o.handle_control(t0, peer, &hello.encode().expect("a small Hello"));
    while o.poll_action().is_some() {}
    let frame = |dst: Mac, src: Mac| {
        let mut f = dst.0.to_vec();
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45; 1400]);
        f
    };
    let mut msg = vec![0u8]; // direct
    msg.extend_from_slice(&frame(own, pmac));
    let tap = frame(pmac, own);
    let mut out = Vec::new();
    for round in 0..3 {
        let start = Instant::now();
        let mut ok = 0u32;
        for _ in 0..FRAMES {
            ok += u32::from(
                o.frame_from_peer(t0, peer, black_box(&msg), &mut out)
                    .is_ok(),
            );
        }
        let rx = start.elapsed().as_nanos() as f64 / f64::from(FRAMES);
        let start = Instant::now();
        let mut sends = 0usize;
        for _ in 0..FRAMES {
            o.frame_from_tap(t0, black_box(&tap), &mut out);
            sends += out.len();
        }
        let tx = start.elapsed().as_nanos() as f64 / f64::from(FRAMES);
        assert_eq!((ok, sends), (FRAMES, FRAMES as usize));
        println!("round {round}: {rx:.1} ns per direct frame from a peer, {tx:.1} ns per TAP frame to a peer");
    }
}
