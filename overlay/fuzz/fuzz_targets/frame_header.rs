//! Split arbitrary bytes into a frame-flow header and the Ethernet frame
//! (`docs/overlay.md` "Bounded flood"). A header that decodes
//! encodes to exactly the bytes it was decoded from, and the frame is the
//! rest of the message. The signed message of any decoded header (what the
//! data path verifies flood and routed frames against) is computed without
//! a panic and does not depend on the fields forwarders rewrite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_overlay::wire::{signed_message, FrameHeader};

fuzz_target!(|data: &[u8]| {
    let Ok((header, frame)) = FrameHeader::decode(data) else {
        return;
    };
    let signed = signed_message(&header, frame);
    let mut forwarded = header;
    match &mut forwarded {
        FrameHeader::Flood(h) => h.hop_limit = h.hop_limit.wrapping_add(1),
        FrameHeader::Routed(h) => h.hop_limit = h.hop_limit.wrapping_add(1),
        FrameHeader::Direct => {}
    }
    assert_eq!(signed, signed_message(&forwarded, frame));
    let n = header.len();
    assert!(n <= FrameHeader::MAX_LEN);
    assert_eq!(n + frame.len(), data.len());
    let mut buf = [0xa5u8; FrameHeader::MAX_LEN + 1];
    assert_eq!(header.encode(&mut buf), Ok(n));
    assert_eq!(&buf[..n], &data[..n], "header re-encodes byte-identical");
    assert_eq!(buf[n], 0xa5, "encode writes only the header");
    assert!(header.encode(&mut buf[..n - 1]).is_err());
    let (h2, f2) = FrameHeader::decode(&buf[..n]).unwrap();
    assert_eq!(h2, header);
    assert!(f2.is_empty());
});
