//! Feed arbitrary Packet Fragment chunks (RFC 7016 2.3.1, 3.4) into a
//! Reassembler with small limits and check its bounds hold.
//!
//! Input: records of `[control, length, payload[length]]`. Control bits
//! 0-1 pick the source, 2-3 the packet mode (0 = Startup), 4-7 advance the
//! virtual clock by that many 100 ms steps.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringlan_tunnel::fuzzing::{
    Chunk, Fragmenter, PacketMode, Reassembler, ReassemblyLimits, ReassemblyOutcome,
};

fuzz_target!(|data: &[u8]| {
    let limits = ReassemblyLimits {
        max_packets: 3,
        max_buffered_bytes: 600,
        max_fragments_per_packet: 16,
        max_packet_len: 400,
        max_age: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(1),
    };
    let mut r: Reassembler<u8> = Reassembler::new(limits);
    let mut now = Instant::now();
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(100 * u64::from(control >> 4));
        let mode = PacketMode::from_bits(control >> 2).unwrap_or(PacketMode::Startup);
        let Ok(chunk) = Chunk::parse(0x7f, payload) else {
            continue;
        };
        match r.insert_chunk(now, control & 3, mode, &chunk) {
            ReassemblyOutcome::Complete(packet) => {
                assert!(packet.len() <= limits.max_packet_len);
                assert_eq!(PacketMode::from_bits(packet[0]), Some(mode));
                // A reassembled packet fragments and reassembles to itself.
                let mut again: Reassembler<u8> = Reassembler::new(ReassemblyLimits::default());
                let mut got = None;
                for c in Fragmenter::new(&packet, 1, 40).unwrap() {
                    if let ReassemblyOutcome::Complete(p) = again.insert_chunk(now, 0, mode, &c) {
                        got = Some(p);
                    }
                }
                assert_eq!(got.as_ref(), Some(&packet));
            }
            ReassemblyOutcome::Pending | ReassemblyOutcome::Discarded(_) => {}
        }
        assert!(r.len() <= limits.max_packets);
        assert!(r.buffered_bytes() <= limits.max_buffered_bytes);
        if let Some(t) = r.poll_timeout() {
            assert!(t > now);
        }
    }
});
