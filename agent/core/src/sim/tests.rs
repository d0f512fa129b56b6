//! Tests of the simulator itself: NAT mapping and filtering, timeouts,
//! rebinding, LANs, links, kills, the run loop; and bare RTMFP endpoints
//! opening a direct session through two cone-like NATs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlan_tunnel::crypto::{Identity, NetworkName, NetworkSecret};
use ringlan_tunnel::endpoint::{Endpoint, EndpointConfig, Event, Target};
use ringlan_tunnel::session::SessionState;
use ringlan_tunnel::{DatagramMachine, Outgoing, Rng, SocketAction, SocketId};

use super::*;

/// A scripted machine: sends what it is told from the socket it is told,
/// records what arrives, optionally echoes it back on the socket it came
/// by, and may keep a timer due (to provoke a livelock).
#[derive(Default)]
struct Probe {
    out: VecDeque<(SocketId, SocketAddr, Vec<u8>)>,
    actions: VecDeque<SocketAction>,
    got: Vec<(SocketId, SocketAddr, Vec<u8>)>,
    echo: bool,
    stuck_timer: Option<Instant>,
}

impl DatagramMachine for Probe {
    fn poll_socket_action(&mut self) -> Option<SocketAction> {
        self.actions.pop_front()
    }
    fn handle_datagram(&mut self, _: Instant, socket: SocketId, from: SocketAddr, data: &mut [u8]) {
        self.got.push((socket, from, data.to_vec()));
        if self.echo {
            self.out.push_back((socket, from, data.to_vec()));
        }
    }
    fn poll_transmit(&mut self, _: Instant, buf: &mut [u8]) -> Option<Outgoing> {
        let (socket, destination, data) = self.out.pop_front()?;
        buf[..data.len()].copy_from_slice(&data);
        Some(Outgoing {
            socket,
            destination,
            size: data.len(),
        })
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.stuck_timer
    }
    fn handle_timeout(&mut self, _: Instant) {}
}

impl Machine for Probe {
    type Event = ();
    fn poll_event(&mut self) -> Option<()> {
        None
    }
}

fn probe(_: &HostCtx) -> Probe {
    Probe::default()
}

fn echo(_: &HostCtx) -> Probe {
    Probe {
        echo: true,
        ..Probe::default()
    }
}

/// Send `data` from host `h`'s socket `s` to `to`.
fn send(sim: &mut Sim<Probe>, h: HostId, s: SocketId, to: SocketAddr, data: &[u8]) {
    sim.with(h, |p, _| p.out.push_back((s, to, data.to_vec())));
}

fn got(sim: &Sim<Probe>, h: HostId) -> &[(SocketId, SocketAddr, Vec<u8>)] {
    &sim.machine(h).got
}

/// A simulation with one probe host `a` behind a NAT of `model`.
fn behind(seed: u64, model: NatModel) -> (Sim<Probe>, SiteId, HostId) {
    let mut sim = Sim::new(seed);
    let site = sim.add_site(model);
    let a = sim.add_host(Place::Site(site), probe);
    (sim, site, a)
}

fn settle(sim: &mut Sim<Probe>) {
    sim.run_for(Duration::from_millis(200));
}

#[test]
fn cone_nat_keeps_one_port_for_every_destination_and_filters_by_endpoint() {
    let (mut sim, site, a) = behind(1, NatModel::cone());
    let (p, q) = (sim.add_public(echo), sim.add_public(echo));
    let stranger = sim.add_public(probe);
    let (pa, qa) = (sim.addr(p), sim.addr(q));
    send(&mut sim, a, SocketId::MAIN, pa, b"to p");
    send(&mut sim, a, SocketId::MAIN, qa, b"to q");
    settle(&mut sim);
    // Both saw the same public source, the inside port kept.
    let public = sim.nat(site).public_ip();
    let want = SocketAddr::new(public, LISTEN_PORT);
    assert_eq!(got(&sim, p)[0].1, want);
    assert_eq!(got(&sim, q)[0].1, want);
    assert_eq!(sim.public_addr(a, SocketId::MAIN, pa), Some(want));
    // The echoes came back through the filter.
    assert_eq!(got(&sim, a).len(), 2);
    assert_eq!(got(&sim, a)[0].1, pa);
    // Unsolicited: a stranger, and p from another port of its own.
    send(&mut sim, stranger, SocketId::MAIN, want, b"hi");
    sim.with(p, |m, _| {
        m.actions.push_back(SocketAction::Open { id: SocketId(1) })
    });
    send(&mut sim, p, SocketId(1), want, b"other port");
    settle(&mut sim);
    assert_eq!(got(&sim, a).len(), 2, "filtered");
    assert_eq!(sim.nat(site).counters().filtered, 2);
    assert_eq!(sim.counters().nat_dropped, 2);
    assert_eq!(sim.nat(site).counters().mappings, 1);
}

#[test]
fn symmetric_nat_maps_each_destination_to_its_own_port() {
    let (mut sim, site, a) = behind(2, NatModel::symmetric());
    let peers: Vec<HostId> = (0..4).map(|_| sim.add_public(echo)).collect();
    for &p in &peers {
        let to = sim.addr(p);
        send(&mut sim, a, SocketId::MAIN, to, b"x");
    }
    settle(&mut sim);
    let mut seen: Vec<SocketAddr> = peers.iter().map(|&p| got(&sim, p)[0].1).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "a port per destination: {seen:?}");
    assert!(seen.iter().all(|s| s.ip() == sim.nat(site).public_ip()));
    assert_eq!(got(&sim, a).len(), 4, "each mapping admits its own replies");
    // A destination's mapping does not admit another: p0 answers from
    // the port p1's mapping uses.
    let p1_mapping = got(&sim, peers[1]).first().map(|g| g.1).unwrap();
    let p0 = sim.addr(peers[0]);
    send(
        &mut sim,
        peers[0],
        SocketId::MAIN,
        p1_mapping,
        b"wrong mapping",
    );
    settle(&mut sim);
    assert_eq!(got(&sim, a).len(), 4);
    assert_eq!(sim.nat(site).counters().filtered, 1);
    assert_eq!(
        sim.public_addr(a, SocketId::MAIN, p0),
        Some(got(&sim, peers[0])[0].1)
    );
}

#[test]
fn an_extra_socket_gets_its_own_mapping_and_its_own_replies() {
    let (mut sim, _, a) = behind(3, NatModel::cone());
    let p = sim.add_public(echo);
    let to = sim.addr(p);
    sim.with(a, |m, _| {
        m.actions.push_back(SocketAction::Open { id: SocketId(7) });
        m.out.push_back((SocketId(7), to, b"extra".to_vec()));
        m.out.push_back((SocketId::MAIN, to, b"main".to_vec()));
    });
    assert_eq!(sim.open_sockets(a), 2);
    settle(&mut sim);
    let srcs: Vec<SocketAddr> = got(&sim, p).iter().map(|g| g.1).collect();
    assert_eq!(srcs.len(), 2);
    assert_ne!(srcs[0], srcs[1]);
    let back: Vec<(SocketId, Vec<u8>)> = got(&sim, a).iter().map(|g| (g.0, g.2.clone())).collect();
    assert!(back.contains(&(SocketId(7), b"extra".to_vec())));
    assert!(back.contains(&(SocketId::MAIN, b"main".to_vec())));
    // Closed: the reply to it finds no socket.
    sim.with(a, |m, _| {
        m.actions.push_back(SocketAction::Close { id: SocketId(7) });
    });
    send(&mut sim, p, SocketId::MAIN, srcs[0], b"late");
    settle(&mut sim);
    assert_eq!(sim.counters().port_closed, 1);
    // Sending from a socket that is not open is a machine bug, counted.
    send(&mut sim, a, SocketId(7), to, b"bug");
    assert_eq!(sim.counters().unknown_socket, 1);
}

#[test]
fn mappings_time_out_sooner_without_replies() {
    let (mut sim, site, a) = behind(4, NatModel::symmetric());
    let silent = sim.add_public(probe);
    let talker = sim.add_public(echo);
    let (s_addr, t_addr) = (sim.addr(silent), sim.addr(talker));
    send(&mut sim, a, SocketId::MAIN, s_addr, b"1");
    send(&mut sim, a, SocketId::MAIN, t_addr, b"2");
    settle(&mut sim);
    let s_map = got(&sim, silent)[0].1;
    sim.run_for(Duration::from_secs(31));
    assert_eq!(
        sim.public_addr(a, SocketId::MAIN, s_addr),
        None,
        "unreplied: 30 s"
    );
    assert!(
        sim.public_addr(a, SocketId::MAIN, t_addr).is_some(),
        "replied: 120 s"
    );
    send(&mut sim, silent, SocketId::MAIN, s_map, b"too late");
    settle(&mut sim);
    assert_eq!(sim.nat(site).counters().unmapped, 1);
    sim.run_for(Duration::from_secs(90));
    assert_eq!(sim.public_addr(a, SocketId::MAIN, t_addr), None);
    // A new datagram makes a new mapping (a new random port).
    send(&mut sim, a, SocketId::MAIN, s_addr, b"3");
    settle(&mut sim);
    assert_ne!(got(&sim, silent)[1].1, s_map);
}

#[test]
fn rebinding_changes_the_mapping_and_kills_the_old_one() {
    let mut sim = Sim::new(5);
    let cone = sim.add_site(NatModel::cone());
    let sym = sim.add_site(NatModel::symmetric());
    let a = sim.add_host(Place::Site(cone), probe);
    let b = sim.add_host(Place::Site(sym), probe);
    let p = sim.add_public(echo);
    let to = sim.addr(p);
    for h in [a, b] {
        send(&mut sim, h, SocketId::MAIN, to, b"before");
    }
    settle(&mut sim);
    let (a_old, b_old) = (got(&sim, p)[0].1, got(&sim, p)[1].1);
    // The cone router gets a new public address; the symmetric one
    // forgets its mappings.
    let new_ip = sim.renumber_nat(cone);
    assert_ne!(new_ip, a_old.ip());
    sim.flush_nat(sym);
    // Traffic to the old mappings goes nowhere.
    send(&mut sim, p, SocketId::MAIN, a_old, b"old a");
    send(&mut sim, p, SocketId::MAIN, b_old, b"old b");
    settle(&mut sim);
    assert_eq!(got(&sim, a).len(), 1);
    assert_eq!(got(&sim, b).len(), 1);
    assert_eq!(sim.counters().unroutable, 1, "a's old address");
    assert_eq!(sim.nat(sym).counters().unmapped, 1);
    for h in [a, b] {
        send(&mut sim, h, SocketId::MAIN, to, b"after");
    }
    settle(&mut sim);
    let (a_new, b_new) = (got(&sim, p)[2].1, got(&sim, p)[3].1);
    assert_eq!(a_new, SocketAddr::new(new_ip, LISTEN_PORT));
    assert_eq!(b_new.ip(), b_old.ip());
    assert_ne!(b_new.port(), b_old.port());
    assert_eq!(got(&sim, a).len(), 2, "the new mapping works");
}

#[test]
fn lans_are_private_and_the_nat_does_not_hairpin() {
    let mut sim = Sim::new(6);
    let s1 = sim.add_site(NatModel::cone());
    // A second site with the same private range as the first.
    let s2 = sim.add_site_lan(NatModel::cone(), "10.1.0.0".parse().unwrap(), 24);
    let a = sim.add_host(Place::Site(s1), probe);
    let b = sim.add_host(Place::Site(s1), echo);
    let c = sim.add_host(Place::Site(s2), probe);
    let p = sim.add_public(probe);
    assert_eq!(sim.ip(b), "10.1.0.11".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(sim.ip(a), sim.ip(c), "same private address, two LANs");
    let b_addr = sim.addr(b);
    send(&mut sim, a, SocketId::MAIN, b_addr, b"lan");
    settle(&mut sim);
    assert_eq!(got(&sim, b)[0].1, sim.addr(a), "no translation on the LAN");
    assert_eq!(got(&sim, a).len(), 1);
    // c's 10.1.0.11 is nobody; the public host cannot reach a LAN.
    send(&mut sim, c, SocketId::MAIN, b_addr, b"other lan");
    send(&mut sim, p, SocketId::MAIN, b_addr, b"from outside");
    // Hairpin: a to its own router's public address.
    let hairpin = SocketAddr::new(sim.nat(s1).public_ip(), LISTEN_PORT);
    send(&mut sim, a, SocketId::MAIN, hairpin, b"hairpin");
    settle(&mut sim);
    assert_eq!(got(&sim, b).len(), 1);
    assert_eq!(sim.counters().unroutable, 2);
    assert_eq!(sim.nat(s1).counters().hairpin, 1);
    assert_eq!(sim.counters().delivered, 2);
}

#[test]
fn links_lose_duplicate_delay_and_reorder_deterministically() {
    fn run(seed: u64) -> (Vec<Vec<u8>>, Counters, Duration) {
        let mut sim = Sim::new(seed);
        sim.default_public_access = LinkModel {
            delay: Duration::from_millis(5),
            jitter: Duration::from_millis(20),
            loss: 0.2,
            duplicate: 0.1,
            max_datagram: 1000,
        };
        let a = sim.add_public(probe);
        let b = sim.add_public(probe);
        let to = sim.addr(b);
        for i in 0..1000u32 {
            send(&mut sim, a, SocketId::MAIN, to, &i.to_be_bytes());
        }
        send(&mut sim, a, SocketId::MAIN, to, &[0; 1001]);
        let first = sim.run_until(Duration::from_secs(1), "first arrival", |s| {
            !got(s, b).is_empty()
        });
        settle(&mut sim);
        let data = got(&sim, b).iter().map(|g| g.2.clone()).collect();
        (data, sim.counters(), first)
    }
    let (data, c, first) = run(7);
    // Two access links of 5 ms each.
    assert!(first >= Duration::from_millis(10), "{first:?}");
    assert_eq!(c.too_big, 1);
    assert_eq!(data.len() as u64, c.delivered);
    // Each of two links loses 20% and duplicates 10% of what it gets:
    // 1000 * (0.8 * 1.1)^2 = 774 arrive on average.
    assert!((700..850).contains(&data.len()), "{c:?}");
    assert!((300..450).contains(&c.lost), "{c:?}");
    assert!((120..200).contains(&c.duplicated), "{c:?}");
    let mut sorted = data.clone();
    sorted.sort();
    assert_ne!(sorted, data, "jitter reorders");
    assert_eq!(run(7), (data, c, first), "same seed, same run");
    assert_ne!(run(8).0, run(7).0);
}

#[test]
fn a_killed_host_receives_nothing_and_restarts_with_a_new_seed() {
    let mut sim = Sim::new(8);
    let seeds = std::cell::RefCell::new(Vec::new());
    let record = |ctx: &HostCtx| {
        seeds.borrow_mut().push((ctx.incarnation, ctx.seed));
        Probe::default()
    };
    let a = sim.add_public(record);
    let b = sim.add_public(probe);
    let to = sim.addr(a);
    sim.with(a, |m, _| {
        m.actions.push_back(SocketAction::Open { id: SocketId(3) })
    });
    assert_eq!(sim.open_sockets(a), 2);
    sim.kill(a);
    assert!(!sim.is_up(a));
    send(&mut sim, b, SocketId::MAIN, to, b"into the void");
    settle(&mut sim);
    assert_eq!(sim.counters().host_down, 1);
    sim.restart(a, record);
    assert_eq!(
        sim.open_sockets(a),
        1,
        "only the main socket after a restart"
    );
    send(&mut sim, b, SocketId::MAIN, to, b"hello again");
    settle(&mut sim);
    assert_eq!(got(&sim, a).len(), 1);
    let seeds = seeds.into_inner();
    assert_eq!(seeds.len(), 2);
    assert_eq!((seeds[0].0, seeds[1].0), (0, 1));
    assert_ne!(seeds[0].1, seeds[1].1);
}

#[test]
fn run_until_reports_timeouts_and_livelocks() {
    let mut sim: Sim<Probe> = Sim::new(9);
    let a = sim.add_public(probe);
    let start = sim.now();
    assert_eq!(
        sim.try_run_until(Duration::from_secs(5), |_| false),
        Err(RunError::Timeout)
    );
    assert_eq!(
        sim.now() - start,
        Duration::from_secs(5),
        "idle time passes"
    );
    let now = sim.now();
    sim.with(a, |m, _| m.stuck_timer = Some(now));
    assert_eq!(
        sim.try_run_until(Duration::from_secs(5), |_| false),
        Err(RunError::Livelock { due: vec![a] })
    );
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sim.run_until(Duration::from_secs(1), "never", |_| false)
    }));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.starts_with("never: Livelock"), "{msg}");
    assert!(msg.contains("host 0 198.18.1.10"), "{msg}");
}

// ---- bare endpoints ---------------------------------------------------------

fn endpoint(seed: u8, introducer: bool) -> impl FnOnce(&HostCtx) -> Endpoint {
    move |ctx: &HostCtx| {
        let name = NetworkName::new("sim").unwrap();
        let identity = Identity::from_secret_key_bytes([seed; 32], &name);
        let mut cfg = EndpointConfig::new(identity, name, NetworkSecret::from_bytes([7; 32]));
        cfg.redirector = introducer;
        cfg.stun_responder = introducer;
        Endpoint::new(ctx.now, cfg, Rng::from_seed(ctx.seed))
    }
}

fn opened(sim: &Sim<Endpoint>, h: HostId, peer: ringlan_tunnel::NodeId) -> bool {
    sim.machine(h)
        .session_for(peer)
        .and_then(|s| sim.machine(h).session_info(s))
        .is_some_and(|i| i.state == SessionState::Open)
}

#[test]
fn endpoints_behind_cone_nats_open_a_direct_session_through_a_forwarder() {
    let mut sim: Sim<Endpoint> = Sim::new(10);
    let intro = sim.add_public(endpoint(1, true));
    let (sa, sb) = (
        sim.add_site(NatModel::cone()),
        sim.add_site(NatModel::cone()),
    );
    let a = sim.add_host(Place::Site(sa), endpoint(2, false));
    let b = sim.add_host(Place::Site(sb), endpoint(3, false));
    let iaddr = sim.addr(intro);
    let iid = sim.machine(intro).node_id();
    for h in [a, b] {
        sim.with(h, |m, now| m.connect(now, Target::Any, &[iaddr]).unwrap());
    }
    sim.run_until(Duration::from_secs(10), "both at the introducer", |s| {
        opened(s, a, iid) && opened(s, b, iid)
    });
    let (ida, idb) = (sim.machine(a).node_id(), sim.machine(b).node_id());
    // B's public address as the introducer sees it.
    let b_public = sim.public_addr(b, SocketId::MAIN, iaddr).unwrap();
    sim.with(a, |m, now| {
        m.connect(now, Target::Node(idb), &[b_public, iaddr])
            .unwrap()
    });
    let took = sim.run_until(Duration::from_secs(15), "direct session", |s| {
        opened(s, a, idb) && opened(s, b, ida)
    });
    assert!(took < Duration::from_secs(2), "{took:?}");
    let s = sim.machine(a).session_for(idb).unwrap();
    assert_eq!(sim.machine(a).session_info(s).unwrap().remote, b_public);
    assert!(
        sim.nat(sb).counters().filtered >= 1,
        "B's NAT filtered A's first IHello"
    );
    assert!(sim
        .events(a)
        .iter()
        .any(|e| matches!(e, Event::SessionOpened { peer, .. } if *peer == idb)));
}

#[test]
fn a_nat_switched_to_cone_maps_new_destinations_to_one_port() {
    let (mut sim, site, a) = behind(11, NatModel::symmetric());
    let peers: Vec<HostId> = (0..3).map(|_| sim.add_public(probe)).collect();
    let p0 = sim.addr(peers[0]);
    send(&mut sim, a, SocketId::MAIN, p0, b"before");
    settle(&mut sim);
    let old = sim.public_addr(a, SocketId::MAIN, p0).unwrap();
    sim.set_nat_model(site, NatModel::cone());
    for &p in &peers[1..] {
        let to = sim.addr(p);
        send(&mut sim, a, SocketId::MAIN, to, b"after");
    }
    settle(&mut sim);
    let (m1, m2) = (got(&sim, peers[1])[0].1, got(&sim, peers[2])[0].1);
    assert_eq!(m1, m2, "one port for every new destination");
    assert_eq!(m1.port(), LISTEN_PORT, "kept when free");
    // The old endpoint-dependent mapping stays until it times out.
    assert_eq!(sim.public_addr(a, SocketId::MAIN, p0), Some(old));
}

#[test]
fn the_drop_filter_sees_public_addresses_and_drops_what_it_is_told() {
    let (mut sim, site, a) = behind(12, NatModel::cone());
    let (p, q) = (sim.add_public(probe), sim.add_public(probe));
    let public = sim.nat(site).public_ip();
    let blocked = sim.addr(p);
    sim.set_drop_filter(Some(Box::new(move |from, to, data| {
        assert_eq!(from.ip(), public, "translated before the internet");
        to == blocked && data != b"let me through"
    })));
    let q_addr = sim.addr(q);
    send(&mut sim, a, SocketId::MAIN, blocked, b"dropped");
    send(&mut sim, a, SocketId::MAIN, blocked, b"let me through");
    send(&mut sim, a, SocketId::MAIN, q_addr, b"elsewhere");
    settle(&mut sim);
    assert_eq!(sim.counters().dropped_by_filter, 1);
    assert_eq!(got(&sim, p).len(), 1);
    assert_eq!(got(&sim, q).len(), 1);
    sim.set_drop_filter(None);
    send(&mut sim, a, SocketId::MAIN, blocked, b"dropped");
    settle(&mut sim);
    assert_eq!(got(&sim, p).len(), 2);
}
