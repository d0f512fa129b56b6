//! Decode arbitrary bytes as a multiplexed datagram and as a plain packet
//! (RFC 7016 2.2.2, 2.2.4, 2.3): header, every chunk, every sub-iterator;
//! then check that re-emitting each parsed value parses back equal, and is
//! byte-identical where the encoding has no reserved bits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_tunnel::fuzzing::RawChunkIter;
use ringlan_tunnel::fuzzing::{
    scramble_session_id, split_multiplex, Address, AddressIter, Chunk, OptionIter, PacketHeader,
    UserData, UserDataOption,
};

fn check_options(options: Option<&[u8]>) {
    if let Some(raw) = options {
        for opt in OptionIter::new(raw) {
            let (t, v) = opt.expect("parse validated the option list");
            if let Ok(typed) = UserDataOption::from_raw(t, v) {
                let mut buf = vec![0u8; typed.encoded_len()];
                assert_eq!(typed.emit(&mut buf), Ok(buf.len()));
                let (t2, v2) = OptionIter::new(&buf).next().unwrap().unwrap();
                assert_eq!(UserDataOption::from_raw(t2, v2), Ok(typed));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok((ssid, encrypted)) = split_multiplex(data) {
        let _ = scramble_session_id(ssid, encrypted);
    }
    for a in AddressIter::new(data) {
        let Ok(a) = a else { break };
        let mut buf = [0u8; 19];
        let n = a.emit(&mut buf).unwrap();
        assert_eq!(Address::parse(&buf[..n]), Ok((a, n)));
    }

    let Ok((header, offset)) = PacketHeader::parse(data) else {
        return;
    };
    let mut hb = [0u8; 5];
    let n = header.emit(&mut hb).unwrap();
    assert_eq!(n, offset);
    assert_eq!(PacketHeader::parse(&hb[..n]), Ok((header, n)));

    let mut out = vec![0u8; 3 + 65535];
    let mut last_user_data: Option<UserData<'_>> = None;
    for (chunk_type, payload) in RawChunkIter::new(&data[offset..]) {
        let Ok(chunk) = Chunk::parse(chunk_type, payload) else {
            break;
        };
        match &chunk {
            Chunk::UserData(ud) => {
                check_options(ud.options);
                assert!(ud.forward_sequence_number() <= ud.sequence_number);
                last_user_data = Some(*ud);
            }
            Chunk::NextUserData(next) => {
                check_options(next.options);
                last_user_data = last_user_data.and_then(|p| p.followed_by(next));
            }
            Chunk::BitmapAck { bitmap, .. } => {
                let seqs: Vec<u64> = chunk
                    .bitmap_acks()
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .expect("parse validated the acknowledgement");
                let bits: u32 = bitmap.iter().map(|b| b.count_ones()).sum();
                assert_eq!(seqs.len() as u64, u64::from(bits));
                assert!(seqs.windows(2).all(|w| w[0] < w[1]));
            }
            Chunk::RangeAck { cumulative_ack, .. } => {
                let ranges: Vec<(u64, u64)> = chunk
                    .ack_ranges()
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .expect("parse validated the acknowledgement");
                // Ascending, disjoint, each after a hole (RFC 7016 2.3.14).
                let mut cursor = *cumulative_ack;
                for (from, to) in ranges {
                    assert!(cursor.checked_add(2).is_some_and(|m| from >= m) && to >= from);
                    cursor = to;
                }
            }
            Chunk::Redirect { .. } => {
                for a in chunk.redirect_addresses().unwrap() {
                    a.expect("parse validated the address list");
                }
            }
            _ => {}
        }
        let n = chunk.emit(&mut out).expect("emit of a parsed chunk");
        assert_eq!(n, chunk.encoded_len());
        let reparsed = Chunk::parse(out[0], &out[3..n]).expect("re-parse of an emitted chunk");
        assert_eq!(reparsed, chunk);
        let has_reserved_bits =
            matches!(chunk_type, 0x00 | 0xff | 0x7f | 0x10 | 0x11 | 0x0f | 0x71);
        if !has_reserved_bits {
            assert_eq!(
                &out[3..n],
                payload,
                "canonical chunk re-emits byte-identical"
            );
        }
    }
});
