//! Decode arbitrary text as an armoured certificate or revocation list
//! (`docs/membership.md` 4). What decodes, armoured again, decodes to the
//! same kind and bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_node::membership::armor;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((kind, bytes)) = armor::decode(text) else {
        return;
    };
    let again = armor::encode(kind, &bytes, &[]);
    assert_eq!(armor::decode(&again), Ok((kind, bytes)));
});
