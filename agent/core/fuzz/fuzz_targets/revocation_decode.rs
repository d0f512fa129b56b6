//! Decode arbitrary bytes as a revocation list (`docs/membership.md` 3). A
//! list that decodes re-encodes to the same bytes (the encoding is
//! canonical), and checking its signature never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_node::membership::{RevocationList, SignedBody};

fuzz_target!(|data: &[u8]| {
    let Ok(list) = RevocationList::decode(data) else {
        return;
    };
    let mut bytes = list.body().encode().expect("a decoded body encodes");
    bytes.extend_from_slice(list.signature());
    assert_eq!(bytes, data, "the encoding is canonical");
    let b = list.body();
    let _ = list.check(&b.issuer, &b.network);
    assert!(!list.supersedes(&list));
    if let Some(next) = b.next([], b.issued_at) {
        assert_eq!(next.version, b.version + 1);
        assert_eq!(next.revoked, b.revoked);
    }
});
