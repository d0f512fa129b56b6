//! The tokio driver over real UDP on loopback: handshake, a flow message
//! each way, orderly close seen by the peer.

use std::time::Duration;

use ringlan_tunnel::crypto::{Identity, NetworkName, NetworkSecret};
use ringlan_tunnel::driver::Driver;
use ringlan_tunnel::{EndpointConfig, Event, Target};
use ringlan_tunnel::{FlowEvent, Reliability};

fn cfg(seed: u8) -> EndpointConfig {
    let name = NetworkName::new("loop").unwrap();
    EndpointConfig::new(
        Identity::from_secret_key_bytes([seed; 32], &name),
        name,
        NetworkSecret::from_bytes([3; 32]),
    )
}

#[tokio::test]
async fn two_drivers_on_loopback_exchange_messages_and_close() {
    let mut a = Driver::bind("127.0.0.1:0".parse().unwrap(), cfg(1))
        .await
        .unwrap();
    let mut b = Driver::bind("127.0.0.1:0".parse().unwrap(), cfg(2))
        .await
        .unwrap();
    let baddr = b.local_addr().unwrap();
    let sa = a
        .endpoint()
        .connect(std::time::Instant::now(), Target::Any, &[baddr])
        .unwrap();
    a.flush();
    let run = async {
        // Drive both until A's session is open and B got the message.
        let mut got = None;
        let mut sb = None;
        let mut sent = false;
        while got.is_none() {
            tokio::select! {
                ev = a.next_event() => {
                    if let Event::SessionOpened { session, .. } = ev {
                        assert_eq!(session, sa);
                        let f = a.endpoint().open_flow(sa, b"test", None).unwrap();
                        a.endpoint().send(std::time::Instant::now(), sa, f, b"ping over udp", Reliability::Reliable).unwrap();
                        a.flush();
                        sent = true;
                    }
                }
                ev = b.next_event() => match ev {
                    Event::SessionOpened { session, .. } => sb = Some(session),
                    Event::Flow { event: FlowEvent::Message { data, .. }, .. } => got = Some(data),
                    _ => {}
                },
            }
        }
        assert!(sent);
        (got.unwrap(), sb.unwrap())
    };
    let (msg, sb) = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("timed out");
    assert_eq!(msg, b"ping over udp");
    // Orderly close from A: B notices at once.
    a.endpoint().close(std::time::Instant::now(), sa, false);
    a.flush();
    let closed = async {
        loop {
            tokio::select! {
                _ = a.next_event() => {}
                ev = b.next_event() => if let Event::SessionClosed { session, .. } = ev {
                    assert_eq!(session, sb);
                    return;
                },
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), closed)
        .await
        .expect("close not seen");
}
