//! Test vectors: a certificate and a revocation list built from fixed keys
//! must encode to the bytes written in `docs/membership.md` (6), and those
//! bytes must decode and verify. Ed25519 signatures are deterministic
//! (RFC 8032 5.1.6), so the signed bytes are fixed too.

use ed25519_dalek::SigningKey;
use ringlan_tunnel::crypto::NetworkName;

use super::cert::tests::{body, NODE_KEY};
use super::*;

const DOC: &str = include_str!("../../../../docs/membership.md");

/// The CA: the secret key of RFC 8032 7.1 TEST 1.
const CA_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
fn ca() -> SigningKey {
    SigningKey::from_bytes(&parse_hex(CA_SECRET).unwrap())
}

fn home() -> NetworkName {
    NetworkName::new("home").unwrap()
}

fn cert() -> NodeCert {
    body().sign(&ca()).unwrap()
}

fn list() -> RevocationList {
    let mut id = [0u8; 16];
    id.copy_from_slice(&parse_hex::<16>("00112233445566778899aabbccddeeff").unwrap());
    ListBody {
        network: home(),
        issuer: CaKey([0; 32]),
        version: 2,
        issued_at: 1_800_086_400,
        revoked: vec![
            Revoked::NodeId(id),
            Revoked::Key(parse_hex(NODE_KEY).unwrap()),
        ],
    }
    .sign(&ca())
    .unwrap()
}

/// The hex in the first fenced block after the line `<!-- vector: NAME -->`.
fn doc_vector(name: &str) -> Vec<u8> {
    let marker = format!("<!-- vector: {name} -->");
    let after = DOC
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/membership.md has no `{marker}`"))
        .1;
    let block = after.split("```").nth(1).expect("a fenced block follows");
    let hex: String = block
        .lines()
        .skip(1) // the fence's info string
        .flat_map(|l| l.split_whitespace())
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn certificate_vector() {
    let cert = cert();
    assert_eq!(
        hex(cert.as_bytes()),
        hex(&doc_vector("certificate")),
        "docs/membership.md is out of date"
    );
    let decoded = NodeCert::decode(&doc_vector("certificate")).unwrap();
    assert_eq!(decoded, cert);
    let pk = CaKey(ca().verifying_key().to_bytes());
    assert_eq!(
        decoded.check(&pk, &home(), 1_800_000_000, CLOCK_SKEW),
        Ok(())
    );
    assert_eq!(
        hex(&decoded.node_id().unwrap().to_bytes()),
        hex(&doc_vector("certificate node id"))
    );
}

#[test]
fn revocation_list_vector() {
    let list = list();
    assert_eq!(
        hex(list.as_bytes()),
        hex(&doc_vector("revocation list")),
        "docs/membership.md is out of date"
    );
    let decoded = RevocationList::decode(&doc_vector("revocation list")).unwrap();
    assert_eq!(decoded, list);
    let pk = CaKey(ca().verifying_key().to_bytes());
    assert_eq!(decoded.check(&pk, &home()), Ok(()));
    assert!(decoded.revokes_cert(&cert()));
}

#[test]
fn armoured_vector_decodes() {
    let text = DOC
        .split_once("<!-- vector: armoured certificate -->")
        .expect("armoured vector")
        .1
        .split("```")
        .nth(1)
        .unwrap();
    assert_eq!(
        armor::decode(text),
        Ok((Kind::Certificate, cert().as_bytes().to_vec()))
    );
}
