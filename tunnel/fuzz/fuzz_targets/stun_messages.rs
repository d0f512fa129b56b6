//! STUN (RFC 8489) on both sides of an [`Endpoint`]: fuzzed Binding
//! responses to a client with a query in flight (so the transaction id
//! matches and XOR-MAPPED-ADDRESS and OTHER-ADDRESS, RFC 5780 7.4, are
//! decoded), and fuzzed requests to a responder that names an alternate
//! address, on its RTMFP port (`handle_datagram`) and on its second STUN
//! socket (`Endpoint::answer_stun`).
//!
//! Asserts: nothing panics; every answer is at most 3x the request
//! (no amplification); a reported OTHER-ADDRESS resolves without panic.
//!
//! Input: byte 0 = flags (bit 0: write the client's transaction id into
//! bytes 8..20; bit 1: fix the magic cookie and the length field so the
//! datagram is shaped like STUN), then the datagram.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ringlan_tunnel::crypto::{Identity, NetworkName, NetworkSecret};
use ringlan_tunnel::{resolve_other, Endpoint, EndpointConfig, Event, Rng};

const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config(responder: bool) -> EndpointConfig {
    static NAME: OnceLock<NetworkName> = OnceLock::new();
    let name = NAME.get_or_init(|| NetworkName::new("fuzz").unwrap());
    let mut cfg = EndpointConfig::new(
        Identity::from_secret_key_bytes([1; 32], name),
        name.clone(),
        NetworkSecret::from_bytes([9; 32]),
    );
    cfg.stun_responder = responder;
    cfg.stun_other = responder.then(|| addr("0.0.0.0:4911"));
    cfg
}

fn shape(flags: u8, data: &mut [u8], tid: &[u8]) {
    if data.len() >= 20 {
        if flags & 1 != 0 {
            data[8..20].copy_from_slice(tid);
        }
        if flags & 2 != 0 {
            data[0] &= 0x3f;
            let body = ((data.len() - 20) & !3) as u16;
            data[2..4].copy_from_slice(&body.to_be_bytes());
            data[4..8].copy_from_slice(&COOKIE);
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let now = Instant::now();
    let server = addr("198.51.100.7:4910");
    let client_addr = addr("203.0.113.5:40000");
    let mut buf = vec![0u8; 2048];

    // Client: a query in flight, then the fuzzed response.
    let mut client = Endpoint::new(now, config(false), Rng::from_seed([2; 32]));
    client.stun_query(now, server).unwrap();
    let t = client.poll_transmit(now, &mut buf).expect("the request");
    let tid = buf[8..20].to_vec();
    assert_eq!(t.destination, server);
    let mut data = rest.to_vec();
    let len = data.len();
    data.truncate(len - len % 4);
    shape(flags, &mut data, &tid);
    client.handle_datagram(now, server, &mut data);
    while let Some(ev) = client.poll_event() {
        if let Event::StunResult { other: Some(o), .. } = ev {
            let _ = resolve_other(server, o);
        }
    }

    // Responder: on the RTMFP port and on the second STUN socket.
    let mut resp = Endpoint::new(now, config(true), Rng::from_seed([3; 32]));
    let req = data.clone();
    let mut d = data;
    resp.handle_datagram(now, client_addr, &mut d);
    while let Some(t) = resp.poll_transmit(now, &mut buf) {
        assert!(t.size <= req.len() * 3, "{} for {}", t.size, req.len());
    }
    if let Some(a) = resp.answer_stun(now, client_addr, &req) {
        assert!(a.len() <= req.len() * 3, "{} for {}", a.len(), req.len());
    }
});
