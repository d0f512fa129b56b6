//! Decode arbitrary bytes as a membership-flow message
//! (`docs/membership.md` "The membership flow"). A message that decodes
//! re-encodes to the same bytes (the encoding is canonical); the
//! certificate or list it carries goes through its own decoder without a
//! panic, as a node does with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_node::admission::wire::Message;
use ringlan_node::membership::{NodeCert, RevocationList};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::decode(data) else {
        return;
    };
    assert_eq!(
        m.encode().expect("a decoded message encodes"),
        data,
        "the encoding is canonical"
    );
    match &m {
        Message::Credentials {
            certificate: Some(c),
            ..
        } => {
            let _ = NodeCert::decode(c);
        }
        Message::Revocations { list } => {
            let _ = RevocationList::decode(list);
        }
        Message::Refused { reason } => {
            assert!(!reason.to_string().is_empty());
        }
        Message::Credentials { .. } => {}
    }
});
