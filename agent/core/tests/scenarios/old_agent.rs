//! A node with a network CA next to bare endpoints that hold the secret
//! but speak no membership flow (an agent older than admission, or a
//! hostile one): such a peer is never admitted. Its frames are dropped
//! (`unadmitted`), its control messages held and never reach the overlay;
//! it is refused "no certificate" 10 seconds after its session opened, at
//! once when it sends more control messages than a node holds
//! (`overflow`), or a membership message that does not decode
//! (`malformed`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlan_node::admission::ADMISSION_TIMEOUT;
use ringlan_node::sim::{HostId, Machine, Sim};
use ringlan_node::status::SessionPhase;
use ringlan_node::{Node, CONTROL_FLOW, FRAMES_FLOW, MEMBERSHIP_FLOW};
use ringlan_overlay::wire::Message as Control;
use ringlan_tunnel::crypto::{Identity, NetworkName, NetworkSecret};
use ringlan_tunnel::{
    DatagramMachine, Endpoint, EndpointConfig, Event, FlowId, Outgoing, Reliability, Rng,
    SessionId, SocketAction, SocketId, Target,
};

use crate::world::{introducer_setup, NETWORK, SECRET};

/// A node or a bare endpoint on one simulated network.
enum Mixed {
    Node(Box<Node>),
    Bare(Box<Endpoint>),
}

/// A bare endpoint's events (a node's are not looked at here).
#[derive(Debug)]
enum MixedEvent {
    Node,
    Bare(Event),
}

impl DatagramMachine for Mixed {
    fn poll_socket_action(&mut self) -> Option<SocketAction> {
        match self {
            Mixed::Node(n) => n.poll_socket_action(),
            Mixed::Bare(_) => None,
        }
    }
    fn handle_datagram(&mut self, now: Instant, socket: SocketId, from: SocketAddr, d: &mut [u8]) {
        match self {
            Mixed::Node(n) => n.handle_datagram(now, socket, from, d),
            Mixed::Bare(e) => DatagramMachine::handle_datagram(e.as_mut(), now, socket, from, d),
        }
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Outgoing> {
        match self {
            Mixed::Node(n) => n.poll_transmit(now, buf),
            Mixed::Bare(e) => DatagramMachine::poll_transmit(e.as_mut(), now, buf),
        }
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        match self {
            Mixed::Node(n) => n.poll_timeout(),
            Mixed::Bare(e) => DatagramMachine::poll_timeout(e.as_mut()),
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Mixed::Node(n) => n.handle_timeout(now),
            Mixed::Bare(e) => DatagramMachine::handle_timeout(e.as_mut(), now),
        }
    }
}

impl Machine for Mixed {
    type Event = MixedEvent;
    fn poll_event(&mut self) -> Option<MixedEvent> {
        match self {
            Mixed::Node(n) => n.poll_event().map(|_| MixedEvent::Node),
            Mixed::Bare(e) => e.poll_event().map(MixedEvent::Bare),
        }
    }
}

fn node(sim: &Sim<Mixed>, h: HostId) -> &Node {
    match sim.machine(h) {
        Mixed::Node(n) => n,
        Mixed::Bare(_) => panic!("host {h:?} is a bare endpoint"),
    }
}

fn bare(m: &mut Mixed) -> &mut Endpoint {
    match m {
        Mixed::Bare(e) => e,
        Mixed::Node(_) => panic!("not a bare endpoint"),
    }
}

/// A bare endpoint of the network with key `seed`.
fn bare_endpoint(now: Instant, seed: u8) -> Mixed {
    let name = NetworkName::new(NETWORK).unwrap();
    let identity = Identity::from_secret_key_bytes([seed; 32], &name);
    let cfg = EndpointConfig::new(identity, name, NetworkSecret::from_bytes(SECRET));
    Mixed::Bare(Box::new(Endpoint::new(
        now,
        cfg,
        Rng::from_seed([seed; 32]),
    )))
}

/// Opens a session from bare host `b` to `to`; returns it once open.
fn open(sim: &mut Sim<Mixed>, b: HostId, to: SocketAddr) -> SessionId {
    sim.with(b, |m, now| {
        bare(m).connect(now, Target::Any, &[to]).expect("connect")
    });
    let mut opened = None;
    sim.run_until(Duration::from_secs(5), "session open", |s| {
        for e in s.take_events(b) {
            if let MixedEvent::Bare(Event::SessionOpened { session, .. }) = e {
                opened = Some(session);
            }
        }
        opened.is_some()
    });
    opened.unwrap()
}

fn flow(sim: &mut Sim<Mixed>, b: HostId, s: SessionId, metadata: &[u8]) -> FlowId {
    sim.with(b, |m, _| {
        bare(m).open_flow(s, metadata, None).expect("flow")
    })
}

fn send(sim: &mut Sim<Mixed>, b: HostId, s: SessionId, f: FlowId, data: &[u8]) {
    sim.with(b, |m, now| {
        bare(m)
            .send(now, s, f, data, Reliability::Reliable)
            .expect("queued")
    });
}

fn drops(sim: &Sim<Mixed>, h: HostId, label: &str) -> u64 {
    node(sim, h)
        .status(sim.now())
        .drops
        .get(label)
        .copied()
        .unwrap_or(0)
}

fn closed(sim: &mut Sim<Mixed>, b: HostId) -> bool {
    sim.take_events(b)
        .iter()
        .any(|e| matches!(e, MixedEvent::Bare(Event::SessionClosed { .. })))
}

#[test]
fn peers_without_a_membership_flow_are_held_then_refused() {
    let mut sim: Sim<Mixed> = Sim::new(0xad_0100);
    let intro = sim.add_public(|ctx| {
        Mixed::Node(Box::new(
            Node::new(ctx.now, introducer_setup(ctx), ctx.seed).expect("valid setup"),
        ))
    });
    let to = sim.addr(intro);

    // An old agent: control and frame flows, never credentials.
    let old = sim.add_public(|ctx| bare_endpoint(ctx.now, 0x71));
    let s = open(&mut sim, old, to);
    let opened = sim.now();
    let control = flow(&mut sim, old, s, CONTROL_FLOW);
    let frames = flow(&mut sim, old, s, FRAMES_FLOW);
    for _ in 0..3 {
        send(
            &mut sim,
            old,
            s,
            control,
            &Control::Neighbours(Vec::new()).encode().unwrap(),
        );
        send(&mut sim, old, s, frames, &[0u8; 80]);
    }
    sim.run_for(Duration::from_secs(2));
    let old_id = match sim.machine(old) {
        Mixed::Bare(e) => e.node_id().to_string(),
        Mixed::Node(_) => unreachable!("a bare endpoint"),
    };
    let st = node(&sim, intro).status(sim.now());
    let sess = st
        .sessions
        .iter()
        .find(|x| x.peer_id == old_id)
        .expect("the session is listed");
    assert_eq!(sess.state, SessionPhase::Opening, "{sess:?}");
    assert_eq!(sess.reason.as_deref(), Some("awaiting admission"));
    assert_eq!(sess.drops.get("unadmitted"), Some(&3), "{sess:?}");
    assert!(node(&sim, intro).overlay().neighbours().is_empty());

    sim.run_until(ADMISSION_TIMEOUT + Duration::from_secs(5), "refused", |s| {
        closed(s, old)
    });
    let t = sim.now() - opened;
    assert!(t >= ADMISSION_TIMEOUT, "{t:?}");
    assert_eq!(drops(&sim, intro, "admission_no_certificate"), 1);
    assert!(node(&sim, intro).overlay().neighbours().is_empty());

    // Flooding control messages before admission: refused at once.
    let flooder = sim.add_public(|ctx| bare_endpoint(ctx.now, 0x72));
    let s = open(&mut sim, flooder, to);
    let control = flow(&mut sim, flooder, s, CONTROL_FLOW);
    for _ in 0..ringlan_node::admission::MAX_HELD + 1 {
        send(
            &mut sim,
            flooder,
            s,
            control,
            &Control::Neighbours(Vec::new()).encode().unwrap(),
        );
    }
    sim.run_until(Duration::from_secs(5), "overflow", |s| {
        drops(s, intro, "admission_overflow") == 1 && closed(s, flooder)
    });

    // A membership message that does not decode: refused at once.
    let garbler = sim.add_public(|ctx| bare_endpoint(ctx.now, 0x73));
    let s = open(&mut sim, garbler, to);
    let m = flow(&mut sim, garbler, s, MEMBERSHIP_FLOW);
    send(&mut sim, garbler, s, m, &[1, 9, 9]);
    sim.run_until(Duration::from_secs(5), "malformed", |s| {
        drops(s, intro, "admission_malformed") == 1 && closed(s, garbler)
    });
    assert!(node(&sim, intro).overlay().neighbours().is_empty());
}
