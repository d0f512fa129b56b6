//! Decode arbitrary bytes as a node certificate (`docs/membership.md` 2).
//! A certificate that decodes re-encodes to the same bytes (the encoding
//! is canonical), and checking its signature never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_node::membership::{CertBody, NodeCert, SignedBody, CLOCK_SKEW};

fuzz_target!(|data: &[u8]| {
    let Ok(cert) = NodeCert::decode(data) else {
        return;
    };
    let mut bytes = cert.body().encode().expect("a decoded body encodes");
    bytes.extend_from_slice(cert.signature());
    assert_eq!(bytes, data, "the encoding is canonical");
    let body = CertBody::decode(&data[..data.len() - 64]).expect("the body decodes alone");
    assert_eq!(&body, cert.body());
    let b = cert.body();
    let _ = cert.check(&b.issuer, &b.network, b.not_before, CLOCK_SKEW);
    let _ = cert.node_id();
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(NodeCert::decode(&longer).is_err(), "no trailing bytes");
});
