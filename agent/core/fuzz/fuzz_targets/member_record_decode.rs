//! Decode arbitrary bytes as a member record body (`docs/directory.md`
//! "Member records"). A body that decodes re-encodes to the same bytes
//! (the encoding is canonical), and the record check on it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_node::directory::{record_fits, MemberBody, MemberKey};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = MemberBody::decode(data) else {
        let _ = record_fits("name:x", Default::default(), &[0; 32], data, None, 0);
        return;
    };
    assert_eq!(body.encode().expect("a decoded body encodes"), data, "the encoding is canonical");
    for k in MemberKey::all_for(&body) {
        let key = k.key();
        assert_eq!(MemberKey::parse(&key), Some(k));
        assert!(record_fits(&key, body.node_id, &[0; 32], data, None, 0));
    }
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(MemberBody::decode(&longer).is_err(), "no trailing bytes");
});
