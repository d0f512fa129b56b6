//! Decode arbitrary bytes as a directory record (`docs/directory.md`
//! "Records"): the decoder is total and bounded; a record that decodes
//! re-encodes to the same bytes, and its signature check never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_overlay::directory::Record;
use ringlan_tunnel::NetworkName;

fuzz_target!(|data: &[u8]| {
    let Ok(r) = Record::decode(data) else {
        return;
    };
    let bytes = r
        .encode()
        .expect("a decoded record is within every bound, so it encodes");
    assert_eq!(bytes, data, "the encoding is canonical");
    let net = NetworkName::new("fuzz").expect("a valid network name");
    // Garbage keys and signatures are refused, never a panic.
    let _ = r.verify(&net);
    let _ = r.dir_key();
});
