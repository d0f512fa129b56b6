//! Decode arbitrary bytes as an overlay control message (`docs/overlay.md`,
//! carried on a reliable RTMFP flow, RFC 7016 3.6). A message that decodes
//! re-encodes to the same length (only unknown flag bits may differ), and
//! the encoding decodes to the same message and is canonical (encoding it
//! again gives the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_overlay::wire::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let bytes = msg
        .encode()
        .expect("a decoded message is within every bound, so it encodes");
    assert_eq!(bytes.len(), data.len(), "re-encoding keeps the length");
    let again = Message::decode(&bytes).expect("an encoded message decodes");
    assert_eq!(again, msg);
    assert_eq!(again.encode().unwrap(), bytes, "the encoding is canonical");
    // Appending makes the decoder reject the message (no trailing bytes).
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Message::decode(&longer).is_err());
});
