//! Birthday punching (the tunnel's planner `Birthday`, docs/nat.md): the
//! policy that decides when, and the extra sockets and sprays it uses.
//!
//! For every session the overlay asked for that is still in IHELLO_SENT,
//! and every session running over a relayed route, the planner gets the
//! member's reflexive address; it answers, by our own NAT's mapping
//! behaviour, with extra sockets (symmetric side) or a spray of the
//! member's public IP (cone-like side) once the plain punch has had its
//! time, in bounded rounds. Only members (the overlay learnt them from an
//! authenticated session) are ever punched, only at a reflexive address
//! (observed by this node or reported by a member as its own observation,
//! never one marked relayed: docs/overlay.md "Address provenance"), and
//! every punch datagram to an unverified IP within that IP's budget
//! ([`crate::reach`]); never on the LAN or behind our own NAT. The payload is the opening session's IHello, or a one-Ping
//! probe of the relayed session (which moves it by address mobility).
//!
//! The extra sockets and sprays themselves are the tunnel's
//! [`ExtraSockets`] (sans-IO: it asks the runtime to open and close
//! sockets and pins a punched path to the socket that opened it).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use ringlan_overlay::wire::AddrOrigin;
use ringlan_tunnel::{
    Birthday, ExtraSockets, NodeId, PunchAction, PunchAttempt, SessionId, SessionState,
};

use crate::candidates::{in_local_subnet, nat_status};
use crate::status::{NatBehaviour, Role};
use crate::Node;

impl Node {
    /// The extra sockets and sprays (tests, status).
    pub fn punch_sockets(&self) -> &ExtraSockets {
        &self.punch
    }

    /// The birthday planner (tests, status).
    pub fn punch_planner(&self) -> &Birthday {
        &self.birthday
    }

    /// A direct path to `node` at `addr` works: no more punching there.
    pub(crate) fn punch_succeeded(&mut self, node: NodeId, addr: SocketAddr) {
        self.birthday.succeeded(node);
        self.punch.stop(addr.ip());
    }

    /// What a birthday punch sends: the IHello of a session still
    /// opening, or a one-Ping probe of a relayed one.
    fn punch_payload(&mut self, now: Instant, session: SessionId) -> Option<Vec<u8>> {
        self.endpoint
            .ihello_datagram(session)
            .or_else(|| self.endpoint.probe_datagram(now, session))
    }

    /// One planner round (every housekeeping tick).
    pub(crate) fn birthday_punch(&mut self, now: Instant) {
        if self.role == Role::Introducer {
            return;
        }
        let own = match nat_status(&self.mapped, &self.alt_mapped).mapping {
            NatBehaviour::EndpointIndependent => ringlan_tunnel::NatMapping::EndpointIndependent,
            NatBehaviour::EndpointDependent => ringlan_tunnel::NatMapping::EndpointDependent,
            NatBehaviour::Unknown => ringlan_tunnel::NatMapping::Unknown,
        };
        let public: Vec<IpAddr> = self.mapped.values().map(|a| a.ip()).collect();
        let ep = &self.endpoint;
        // Sessions still opening, and sessions open over a relayed route
        // (the punch moves them to a direct path).
        let relayed = self.peers.current().filter_map(|(node, sid)| {
            let info = ep.session_info(sid)?;
            (info.state == SessionState::Open && info.path.is_relayed()).then_some((sid, node))
        });
        let opening = self.peers.opening().filter_map(|(sid, o)| {
            let node = o.node?;
            if self.peers.is_connected(node) {
                return None;
            }
            (ep.session_info(sid)?.state == SessionState::IHelloSent).then_some((sid, node))
        });
        // Busiest first: the planner gives its slots (`max_concurrent`) in
        // this order, so a member we talk to goes direct before idle ones.
        // Each with the bytes its session has carried (sent and received).
        let mut candidates: Vec<(SessionId, NodeId, u64)> = opening
            .chain(relayed)
            .map(|(sid, node)| {
                let carried = ep
                    .session_info(sid)
                    .map_or(0, |i| i.stats.bytes_sent + i.stats.bytes_received);
                (sid, node, carried)
            })
            .collect();
        let last = &self.punch_carried;
        candidates.sort_by_key(|&(sid, _, carried)| {
            std::cmp::Reverse(carried.saturating_sub(last.get(&sid).copied().unwrap_or(0)))
        });
        let attempts: Vec<PunchAttempt> = candidates
            .iter()
            .filter_map(|&(sid, node, _)| {
                let m = self.overlay.member(node)?;
                let on_lan = m.addrs.iter().any(|a| {
                    a.origin == AddrOrigin::Local && in_local_subnet(&self.ifs, a.addr.ip())
                });
                let reflexive = m
                    .addrs
                    .iter()
                    .find(|a| a.origin == AddrOrigin::Reflexive && self.families.reach(a.addr))
                    .map(|a| a.addr)
                    .filter(|a| !on_lan && !public.contains(&a.ip()));
                Some(PunchAttempt {
                    peer: node,
                    session: sid,
                    reflexive,
                    peer_symmetric: self.overlay.says_symmetric_nat(node),
                })
            })
            .collect();
        // Kept for the candidates only (bounded by them).
        self.punch_carried = candidates.iter().map(|&(sid, _, c)| (sid, c)).collect();
        let actions = self.birthday.poll(now, own, &attempts, &mut self.punch_rng);
        for a in actions {
            match a {
                PunchAction::OpenSockets {
                    peer,
                    session,
                    dest,
                    count,
                    lifetime,
                } => {
                    let Some(hello) = self.punch_payload(now, session) else {
                        continue;
                    };
                    let n = self.punch.open(now, dest, &hello, count, lifetime);
                    tracing::info!(%peer, %dest, sockets = n, "birthday punch: extra sockets opened");
                }
                PunchAction::Spray {
                    peer,
                    session,
                    plan,
                } => {
                    let Some(hello) = self.punch_payload(now, session) else {
                        continue;
                    };
                    tracing::info!(%peer, ip = %plan.ip(), probes = plan.remaining(), "birthday punch: spraying");
                    self.punch.spray(plan, &hello);
                }
            }
        }
    }
}
