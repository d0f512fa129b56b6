//! Decode arbitrary bytes as a member record body (`docs/directory.md`
//! "Member records"). A body that decodes re-encodes to the same bytes
//! (the encoding is canonical: version 1 without links, version 2 with at
//! least one), the record check on it never panics, and a topology built
//! from it (its link claims resolved, merged and drawn) never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringlan_node::directory::body::MAX_LINKS;
use ringlan_node::directory::{record_fits, Member, MemberBody, MemberKey};
use ringlan_node::topology;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = MemberBody::decode(data) else {
        let _ = record_fits("name:x", Default::default(), &[0; 32], data, None, 0);
        return;
    };
    assert_eq!(body.encode().expect("a decoded body encodes"), data, "the encoding is canonical");
    assert_eq!(data[0] == 2, !body.links.is_empty(), "version 2 exactly when links");
    assert!(body.links.len() <= MAX_LINKS);
    for k in MemberKey::all_for(&body) {
        let key = k.key();
        assert_eq!(MemberKey::parse(&key), Some(k));
        assert!(record_fits(&key, body.node_id, &[0; 32], data, None, 0));
    }
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(MemberBody::decode(&longer).is_err(), "no trailing bytes");
    // Seen from another node, so its claims are resolved and merged.
    let mut me = body.node_id;
    me.0 = !me.0;
    let member = Member { body, expires_unix: u64::MAX };
    let t = topology::build(0, true, me, &[member], &[]);
    assert_eq!(t.members.len(), 1);
    let _ = topology::svg::render(&t);
    let _ = topology::dot::render(&t);
});
