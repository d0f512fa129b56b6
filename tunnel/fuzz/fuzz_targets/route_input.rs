//! Feed arbitrary and mutated route datagrams (`ringlan_tunnel::relay`) to
//! the route table of a relay and of a route end: nothing panics, nothing
//! forged is forwarded or delivered, counters stay consistent.
//!
//! Input: records of `[control, length, payload[length]]`. Control bit 0
//! picks a raw datagram (sent as is to the entry picked by bits 1-2) or a
//! genuine one (the payload wrapped at the route's origin) whose byte
//! `payload[0] % len` is flipped when bit 3 is set (always refused: the hop
//! tag covers the whole datagram); bits 4-7 advance the virtual clock by
//! that many seconds. The first byte's low bit picks the hops' tags
//! (AES-256-GCM or AEGIS-128L).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringlan_tunnel::fuzzing::{RouteInput, Routes, ROUTE_HEADER_LEN};
use ringlan_tunnel::{HopKey, HopMac, RelayLimits, RouteId, RouteOffer};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let mut a = Routes::new(RelayLimits::default());
    let mut r = Routes::new(RelayLimits {
        enabled: true,
        max_mbps: 100.0,
        ..RelayLimits::default()
    });
    let mac = match data.first() {
        Some(b) if b & 1 == 1 => HopMac::Aegis128L,
        _ => HopMac::AesGcm,
    };
    a.begin_end(now, 100, 7, HopKey::new([1; 32], mac));
    let offer = RouteOffer {
        id: RouteId(100),
        key: HopKey::new([1; 32], mac),
    };
    if r
        .begin_transit(now, 200, 201, 8, &offer, 9, &HopKey::new([2; 32], mac))
        .is_err()
    {
        return;
    }
    let _ = r.finish(200, 300);
    let _ = a.finish(100, 200);
    let ids = [100u32, 200, 201, 12345];
    let mut buf = vec![0u8; 2048];
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_secs(u64::from(control >> 4));
        let id = ids[usize::from((control >> 1) & 3)];
        if control & 1 == 0 {
            let mut d = payload.to_vec();
            let out = r.input(now, id, &mut d, |_| true);
            // Without the hop key nothing is forwarded or delivered.
            assert!(matches!(
                out,
                RouteInput::Dropped(_) | RouteInput::NotRoute
            ));
            let _ = a.input(now, id, &mut payload.to_vec(), |_| true);
        } else {
            let Some(room) = buf.get_mut(ROUTE_HEADER_LEN..ROUTE_HEADER_LEN + payload.len()) else {
                continue;
            };
            room.copy_from_slice(payload);
            let Some((_, n)) = a.wrap(now, 100, &mut buf, payload.len()) else {
                continue;
            };
            let mut flipped = false;
            if control & 8 != 0 && n > 0 {
                let i = usize::from(payload.first().copied().unwrap_or(0)) % n;
                buf[i] ^= 0x01;
                flipped = true;
            }
            let out = r.input(now, 200, &mut buf[..n], |_| true);
            if flipped {
                // The hop tag covers every byte of the datagram.
                assert!(!matches!(out, RouteInput::Forward { .. }));
            }
        }
        a.handle_timeout(now);
        r.handle_timeout(now);
        let _ = a.take_keepalives();
        let _ = r.take_closed();
    }
});
