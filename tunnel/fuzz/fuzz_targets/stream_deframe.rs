//! Feed arbitrary bytes, split at arbitrary points, to the TCP stream
//! deframer (`ringlan_tunnel::stream`): nothing panics, every datagram is
//! 1..=MAX_FRAMED bytes, at most one partial datagram is held, and a
//! stream that failed stays failed.
//!
//! Input: the first byte picks the chunk size (1..=256) the rest is fed in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_tunnel::fuzzing::Deframer;
use ringlan_tunnel::stream::{FRAME_HEADER, MAX_FRAMED};

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let mut d = Deframer::new();
    let mut failed = false;
    for chunk in rest.chunks(usize::from(step) + 1) {
        let r = d.feed(chunk, |g| assert!((1..=MAX_FRAMED).contains(&g.len())));
        assert!(!(failed && r.is_ok()), "a failed stream accepted more");
        failed |= r.is_err();
        assert!(d.pending() < FRAME_HEADER + MAX_FRAMED);
    }
});
