//! Known-answer vectors for `docs/crypto-profile.md`, "Test vectors". The
//! expected values were checked against an independent implementation
//! (Python `cryptography`), so they pin the byte-level profile.

use super::*;
use crate::Rng;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A (initiator) and B keyed with the ephemeral secrets and nonces of
/// `Rng::from_seed([1; 32])` and `[2; 32]`: the SKIC side, the SKRC, and
/// both ends' session keys.
fn handshake(
    secret: &NetworkSecret,
    a: &Identity,
    b: &Identity,
) -> (InitiatorKeying, [u8; SKRC_LEN], SessionKeys, SessionKeys) {
    let init = InitiatorKeying::new(&mut Rng::from_seed([1; 32]), a.certificate().suites());
    let (skrc, kr) = respond(
        &mut Rng::from_seed([2; 32]),
        secret,
        b.certificate(),
        b.session_suites(),
        a.certificate(),
        init.skic(),
    )
    .unwrap();
    let ki = init
        .complete(secret, a.certificate(), b.certificate(), &skrc)
        .unwrap();
    (init, skrc, ki, kr)
}

#[test]
fn known_answer_vectors() {
    let home = NetworkName::new("home").unwrap();
    let secret = NetworkSecret::from_bytes([0x42; 32]);
    let a = Identity::from_secret_key_bytes([0x11; 32], &home);
    let b = Identity::with_suites([0x22; 32], &home, SuiteSet::CHACHA_ONLY);
    let mut out = vec![
        ("dsk", hex(&secret.default_session_key(&home)[..])),
        ("cert_a", hex(a.certificate().as_bytes())),
        ("cert_b", hex(b.certificate().as_bytes())),
        ("node_id_a", a.node_id().to_string()),
        ("canonical_epd_a", hex(&canonical_epd(a.certificate()))),
    ];

    let (init, skrc, ki, kr) = handshake(&secret, &a, &b);
    out.push(("eph_i", hex(&Rng::from_seed([1; 32]).bytes32())));
    out.push(("eph_r", hex(&Rng::from_seed([2; 32]).bytes32())));
    out.push(("skic", hex(init.skic())));
    out.push(("skrc", hex(&skrc)));
    out.push(("key_i2r", hex(ki.raw_keys().0)));
    out.push(("key_r2i", hex(ki.raw_keys().1)));
    assert_eq!(kr.raw_keys().1, ki.raw_keys().0);
    out.push(("nonce_i", hex(ki.near_nonce())));
    out.push(("nonce_r", hex(ki.far_nonce())));

    let params = b"\x00\x00\x00\x01params";
    out.push(("sig_iikeying", hex(&sign_iikeying(&a, params))));
    out.push((
        "sig_rikeying",
        hex(&sign_rikeying(&b, b"\x00\x00\x00\x02", init.skic())),
    ));

    let (mut sealer, _) = ki.ciphers();
    let mut buf = [0u8; 8 + 5 + 16];
    buf[8..13].copy_from_slice(b"hello");
    let r = sealer.seal(&mut buf, 8, 5).unwrap();
    out.push(("session_packet_0", hex(&buf[r])));

    let mut aes = PacketSealer::new(AeadSuite::Aes256Gcm, &[0x5a; 32]);
    aes.seal(&mut buf, 8, 5).unwrap();
    let mut buf = [0u8; 8 + 5 + 16];
    buf[8..13].copy_from_slice(b"hello");
    let r = aes.seal(&mut buf, 8, 5).unwrap();
    out.push(("aes_packet_1", hex(&buf[r])));

    let mut aegis = PacketSealer::new(AeadSuite::Aegis128L, &[0x5a; 32]);
    aegis.seal(&mut buf, 8, 5).unwrap();
    let mut buf = [0u8; 8 + 5 + 16];
    buf[8..13].copy_from_slice(b"hello");
    let r = aegis.seal(&mut buf, 8, 5).unwrap();
    out.push(("aegis_packet_1", hex(&buf[r])));

    let dc = DefaultCipher::new(&secret, &home);
    let mut rng_d = Rng::from_seed([3; 32]);
    let mut buf = [0u8; 12 + 5 + 16];
    buf[12..17].copy_from_slice(b"hello");
    let r = dc.seal(&mut rng_d, &mut buf, 12, 5).unwrap();
    out.push(("default_packet", hex(&buf[r])));

    let jar = CookieJar::new(&mut Rng::from_seed([4; 32]));
    out.push(("cookie_key", hex(&Rng::from_seed([4; 32]).bytes32())));
    out.push((
        "cookie",
        hex(&jar.make(1000, "192.0.2.1:4910".parse().unwrap())),
    ));
    out.push((
        "mobility",
        hex(&mobility_mac(
            &[9; 32],
            77,
            "[2001:db8::5]:4000".parse().unwrap(),
        )),
    ));

    for (k, v) in &out {
        println!("{k}={v}");
    }
    // The profile lists the same values.
    let doc = profile_vectors();
    for (k, v) in &out {
        assert_eq!(
            doc.get(*k).map(String::as_str),
            Some(v.as_str()),
            "{k} in the profile"
        );
    }
    assert_eq!(out.len(), EXPECTED.len());
    for ((k, v), (ek, ev)) in out.iter().zip(EXPECTED) {
        assert_eq!((*k, v.as_str()), (*ek, *ev));
    }
}

/// The `name hex` lines of the code blocks of `docs/crypto-profile.md`
/// section 12 ("Test vectors"); a line starting with spaces continues the
/// previous value.
fn profile_vectors() -> std::collections::HashMap<String, String> {
    let doc = include_str!("../../../docs/crypto-profile.md");
    let start = doc.find("## 12. Test vectors").expect("section 12");
    let end = doc[start..]
        .find("\n## 13.")
        .map_or(doc.len(), |e| start + e);
    let mut map = std::collections::HashMap::new();
    let mut last: Option<String> = None;
    let mut in_code = false;
    for line in doc[start..end].lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            last = None;
            continue;
        }
        if !in_code {
            continue;
        }
        let mut words = line.split_whitespace();
        match (line.starts_with(' '), words.next(), words.next()) {
            (true, Some(more), None) => {
                let key = last.clone().expect("continuation after a value");
                map.entry(key).and_modify(|v: &mut String| v.push_str(more));
            }
            (false, Some(name), Some(value)) => {
                map.insert(name.to_string(), value.to_string());
                last = Some(name.to_string());
            }
            _ => {}
        }
    }
    map
}

/// The rekey of `docs/crypto-profile.md` 6.3 / 7.4 after the handshake of
/// the vectors above: A (the session's initiator) asks for epoch 1 with
/// X25519 secret 0x61 * 32, B answers with 0x62 * 32; then A's packet
/// number 7 (its eighth), plain "hello", under the new key.
#[test]
fn rekey_vectors_match_the_profile() {
    let home = NetworkName::new("home").unwrap();
    let secret = NetworkSecret::from_bytes([0x42; 32]);
    let a = Identity::from_secret_key_bytes([0x11; 32], &home);
    let b = Identity::with_suites([0x22; 32], &home, SuiteSet::CHACHA_ONLY);
    let (_, _, ki, kr) = handshake(&secret, &a, &b);
    let ask = RekeyShare::from_secret([0x61; 32]);
    let answer = RekeyShare::from_secret([0x62; 32]);
    let ka = rekey_keys(
        &ki.chain_key(),
        Role::Initiator,
        1,
        &ask,
        answer.public(),
        true,
    )
    .unwrap();
    let kb = rekey_keys(
        &kr.chain_key(),
        Role::Responder,
        1,
        &answer,
        ask.public(),
        false,
    )
    .unwrap();
    assert_eq!(ka.send_key(), kb.recv_key());
    assert_eq!(ka.recv_key(), kb.send_key());

    let mut rekey_chunk = [0u8; 40];
    let f = crate::wire::RekeyFields {
        version: REKEY_VERSION,
        epoch: 1,
        public: *ask.public(),
    };
    crate::wire::Chunk::Rekey(f).emit(&mut rekey_chunk).unwrap();
    let mut ack_chunk = [0u8; 40];
    let f = crate::wire::RekeyFields {
        public: *answer.public(),
        ..f
    };
    crate::wire::Chunk::RekeyAck(f)
        .emit(&mut ack_chunk)
        .unwrap();

    let (mut sealer, mut opener) = ki.ciphers();
    sealer.set_next_sequence(7);
    sealer.rekey(ka.send_key(), u64::MAX, u64::MAX);
    let mut buf = [0u8; 8 + 5 + 16];
    buf[8..13].copy_from_slice(b"hello");
    let r = sealer.seal(&mut buf, 8, 5).unwrap();
    let packet = hex(&buf[r.clone()]);
    // B opens it with the next key it installed when it answered.
    let (_, mut b_opener) = kr.ciphers();
    b_opener.install_next(kb.recv_key());
    let p = b_opener.open(&mut buf[r]).unwrap();
    assert_eq!(p, 8..13);
    assert!(b_opener.take_switched());
    opener.install_next(ka.recv_key());

    let out = [
        ("chain_0", hex(ki.chain_key().as_bytes())),
        ("rekey_chunk", hex(&rekey_chunk[..])),
        ("rekey_ack_chunk", hex(&ack_chunk[..])),
        ("key_i2r_1", hex(ka.send_key())),
        ("key_r2i_1", hex(ka.recv_key())),
        ("chain_1", hex(ka.into_chain().as_bytes())),
        ("epoch1_packet_7", packet),
    ];
    assert_eq!(kr.chain_key().as_bytes(), ki.chain_key().as_bytes());
    let doc = profile_vectors();
    for (k, v) in &out {
        println!("{k} {v}");
    }
    for (k, v) in &out {
        assert_eq!(
            doc.get(*k).map(String::as_str),
            Some(v.as_str()),
            "{k} in the profile"
        );
    }
}

/// Inputs: network "home", secret 0x42 * 32; A = Ed25519 secret 0x11 * 32
/// offering both suites; B = 0x22 * 32 offering ChaCha20-Poly1305 only;
/// ephemeral secrets and nonces from `Rng::from_seed([1; 32])` (initiator)
/// and `[2; 32]` (responder).
const EXPECTED: &[(&str, &str)] = &[
    ("dsk", "86aa77288fa32becc8a26892753207fdd3ebf1eabe5d9b8197a8dfac8946ef76"),
    ("cert_a", "0103d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c977873704686f6d65"),
    ("cert_b", "0101a09aa5f47a6759802ff955f8dc2d2a14a5c99d23be97f864127ff9383455a4f004686f6d65"),
    ("node_id_a", "638ccd87cb82d65be3b6e02d11d23637"),
    ("canonical_epd_a", "01638ccd87cb82d65be3b6e02d11d23637d1265cefde5960805fbfc6643a8ac164"),
    ("eph_i", "023f37203a2476c42566a61cc55c3ca875dbb4cc41c0deb789f8e7bf88183638"),
    ("eph_r", "f6a12ca8ffc30a66ca140ccc7276336115819361186d3f535dd99f8eaaca8fce"),
    ("skic", "0103d53b9fea1dd4d570dbe38180767c236456ca6633f103f1aa0637e7b613d252741ecc3686b60ee3b84b6c7d321d70d5c06e9dac63a4d0a79d731b17c0d04d030d"),
    ("skrc", "0101c5c4aede10f07dc551ae692813183793bbcc96f56020f8e11dcb8e48248713387f82dd63f4f75c33da444b72372be3aa43c0027a076bf9675eb7932695d127a4"),
    ("key_i2r", "f36a460a6b57007cacc25c5001c002dcae6957d1f73b8dc29d847cb709f0e423"),
    ("key_r2i", "836e9ac47c869686d39afd354193dd0ee56a0ba520eda116ce8625aef5c300b8"),
    ("nonce_i", "a00d80936b615cc454d71a4a613977527f8b510acd042afef5c31e0b22c588b7"),
    ("nonce_r", "383bdc97be146ae3dd68d165e0c0178496813cc05c098fbddd73e0d9d69c4016"),
    ("sig_iikeying", "182e6a3fe4e835d2a651ee0e20d783173d5c39efeede799b60803874ab906c50adec1baef8e4f142ca4557a2f7aaf65f1b438670f58467b8a7e0caf37b18b90a"),
    ("sig_rikeying", "77864949ccb0492642cea479f96c7848960c890ccefd27a767063afe8c534bdbe3da6bf1e934ca1f20f095e17655db1c6a2b1274fd6de7a5dd23f33ece247201"),
    ("session_packet_0", "00000000000000004828c83435f9c349895c69e331377df76d96d58a3a"),
    ("aes_packet_1", "00000000000000011531a439ab95ad14e4c13f5d953361238ebc1bb982"),
    ("aegis_packet_1", "0000000000000001d55f530634adb4f3854e732cd37dc995ff6957ad36"),
    ("default_packet", "385553aa23a24b14d8bbc2df445e84a6456db6806c8e68fb4694b47a8d5e621302"),
    ("cookie_key", "78774a186003cdaf73dfefce516edeaccb6e387de1e6234aa45f4df00a8b62ad"),
    ("cookie", "00000000000003e89abeb5c5756a3ce505ca7ebaab7707c650a4763870cd3eb9"),
    ("mobility", "2c4d9ee98e7325ad9c129f05859a8830"),
];
