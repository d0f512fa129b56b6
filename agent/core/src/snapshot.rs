//! Building a status snapshot ([`crate::status::Status`]) from the node's
//! state: sessions with their path (direct on the LAN, direct through NAT,
//! relayed via whom), members we cannot reach, addresses, NAT, overlay
//! neighbours, relaying and routed frames, drops.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ringlan_overlay as overlay;
use ringlan_tunnel::{NodeId, Path, RouteId, RouteInfo, SessionState};

use crate::candidates::{in_local_subnet, nat_status};
use crate::status::{
    AddressKind, CarriedRoute, KnownAddress, NeighbourLink, NeighbourStatus, PathKind, RelayStatus,
    RouteTraffic, RoutedPeer, RoutedStatus, SessionPhase, SessionStatus, Status, Traffic,
};
use crate::Node;

/// Open attempts that failed in a row before status says "failed".
pub const FAILED_AFTER: u32 = 2;

impl Node {
    /// The node's status now.
    pub fn status(&self, now: Instant) -> Status {
        let names: HashMap<NodeId, String> = self
            .overlay
            .neighbours()
            .into_iter()
            .filter(|n| !n.name.is_empty())
            .map(|n| (n.node, n.name))
            .collect();
        let mut sessions: Vec<SessionStatus> = self
            .peers
            .open()
            .filter_map(|(sid, p)| self.session_status(now, &names, sid, p))
            .collect();
        for a in self.overlay.open_attempts() {
            if self.peers.is_connected(a.node) {
                continue;
            }
            let since = self.unreachable_since.get(&a.node).copied().unwrap_or(now);
            sessions.push(SessionStatus {
                peer_id: a.node.to_string(),
                peer_name: self.overlay.member(a.node).map(|m| m.name.clone()),
                remote: None,
                path: PathKind::None,
                state: if a.failures >= FAILED_AFTER {
                    SessionPhase::Failed
                } else {
                    SessionPhase::Opening
                },
                rtt_ms: None,
                tx: Traffic::default(),
                rx: Traffic::default(),
                drops: BTreeMap::new(),
                age_secs: now.saturating_duration_since(since).as_secs(),
                rekeys: 0,
                cipher: None,
                reason: Some("no direct path".into()),
                peer_symmetric_nat: false,
                transport: None,
            });
        }
        sessions.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        let nat = nat_status(&self.mapped, &self.alt_mapped);
        let mut addresses: Vec<KnownAddress> = self
            .local_addrs
            .iter()
            .map(|&addr| KnownAddress {
                addr,
                kind: AddressKind::Local,
            })
            .collect();
        for &addr in &nat.reflexive {
            if !self.local_addrs.contains(&addr) {
                addresses.push(KnownAddress {
                    addr,
                    kind: AddressKind::Reflexive,
                });
            }
        }
        let neighbours = self
            .overlay
            .neighbours()
            .into_iter()
            .map(|n| NeighbourStatus {
                node_id: n.node.to_string(),
                name: (!n.name.is_empty()).then_some(n.name),
                link: match n.kind {
                    overlay::LinkKind::Successor => NeighbourLink::Successor,
                    overlay::LinkKind::Predecessor => NeighbourLink::Predecessor,
                    overlay::LinkKind::Introducer => NeighbourLink::Introducer,
                    overlay::LinkKind::Long => NeighbourLink::Long,
                    overlay::LinkKind::OnDemand => NeighbourLink::OnDemand,
                    overlay::LinkKind::Other => NeighbourLink::Other,
                },
            })
            .collect();
        Status {
            addresses,
            nat,
            sessions,
            neighbours: Some(neighbours),
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            drops: self.node_drops(),
            relay: Some(self.relay_status(now, &names)),
            routed: self.routed_status(),
            arp_nd: self.data.arp_nd,
            membership: self.adm.status(self.unix_now(now)),
            tcp: self.tcp.state().map(|t| crate::status::TcpStatus {
                via: t.via.to_string(),
                connected_to: t.tcp.to_string(),
                answered: t.answered,
            }),
            directory: Some(self.directory_status()),
            ..self.base.clone()
        }
    }

    fn session_status(
        &self,
        now: Instant,
        names: &HashMap<NodeId, String>,
        sid: ringlan_tunnel::SessionId,
        p: &crate::peers::Peer,
    ) -> Option<SessionStatus> {
        let info = self.endpoint.session_info(sid)?;
        let admitted = self.adm.is_admitted(sid);
        Some(SessionStatus {
            peer_id: p.node.to_string(),
            peer_name: names
                .get(&p.node)
                .cloned()
                .or_else(|| self.overlay.member(p.node).map(|m| m.name.clone())),
            remote: info.path.direct(),
            path: if let Some(v) = self.routes.view(p.node, info.path) {
                let relays: Vec<String> =
                    v.relays.iter().map(|n| self.node_name(names, *n)).collect();
                PathKind::Relayed {
                    via: relays.join(">"),
                    standby: v.standby,
                }
            } else {
                match info.path {
                    Path::Route(_) => PathKind::Relayed {
                        via: "?".into(),
                        standby: 0,
                    },
                    Path::Direct(a) if in_local_subnet(&self.ifs, a.ip()) => PathKind::DirectLan,
                    Path::Direct(_) => PathKind::DirectNat,
                }
            },
            state: match info.state {
                SessionState::IHelloSent | SessionState::KeyingSent => SessionPhase::Opening,
                // Open in the transport, not (yet) a member.
                SessionState::Open if !admitted => SessionPhase::Opening,
                SessionState::Open => SessionPhase::Open,
                SessionState::NearClose | SessionState::FarCloseLinger => SessionPhase::Closing,
                SessionState::Closed | SessionState::OpenFailed => SessionPhase::Closed,
            },
            rtt_ms: shown_rtt(now, info.srtt, info.measured_rtt).map(|d| d.as_secs_f64() * 1000.0),
            tx: p.tx,
            rx: p.rx,
            drops: p.drops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            age_secs: now.saturating_duration_since(p.opened).as_secs(),
            rekeys: info.stats.rekeys,
            cipher: info.suite.map(|s| s.to_string()),
            reason: match info.path {
                _ if !admitted => Some("awaiting admission".into()),
                Path::Route(_) => Some("no direct path".into()),
                Path::Direct(a) => self.lan_hint(p.node, a),
            },
            peer_symmetric_nat: self.overlay.says_symmetric_nat(p.node),
            transport: Some(self.transport_status(sid, &info, p.cut.super_frames_cut)),
        })
    }

    fn transport_status(
        &self,
        sid: ringlan_tunnel::SessionId,
        info: &ringlan_tunnel::SessionInfo,
        super_frames_cut: u64,
    ) -> crate::status::TransportStatus {
        let flows = self.endpoint.flow_stats(sid).unwrap_or_default();
        crate::status::TransportStatus {
            cwnd: info.cwnd as u64,
            in_flight: info.in_flight as u64,
            queued: info.queued as u64,
            timeouts: info.stats.retransmit_timeouts,
            loss_reductions: info.congestion.loss_reductions,
            frame_lost_bytes: info.congestion.frame_lost_bytes,
            breaker_trips: info.congestion.breaker_trips,
            burst_releases: info.congestion.burst_releases,
            path_restarts: info.congestion.path_restarts,
            queue_full_drops: flows.drop_send_queue_full,
            pmtu_abandoned: flows.abandoned_path_mtu,
            late_drops: flows.drop_late,
            late_drop_holds: flows.late_drop_holds,
            frame_buffers_allocated: flows.frame_buffers_allocated,
            super_frames_cut,
            pmtu: info.pmtu as u64,
            black_hole_checks: info.stats.black_hole_checks,
        }
    }

    /// Node-wide drops: the endpoint's refused datagrams (`udp_` reason),
    /// frames dropped before reaching a session, the overlay's budget
    /// refusals, datagrams over an unverified IP's budget
    /// (`unverified_ip_budget`, `reach`), datagrams to an address family
    /// this node cannot send to (`other_family`), and peers refused at
    /// admission (`admission_<reason>`, `refused_by_peer_<reason>`).
    fn node_drops(&self) -> BTreeMap<String, u64> {
        let mut d: BTreeMap<String, u64> = self
            .data
            .local_drops
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        for (reason, n) in &self.endpoint.stats().drops {
            if *n > 0 {
                d.insert(format!("udp_{}", reason.as_str()), *n);
            }
        }
        for (reason, n) in self.routes.stats.drops() {
            if n > 0 {
                d.insert(reason.to_string(), n);
            }
        }
        for (reason, n) in overlay_drops(&self.overlay.stats()) {
            if n > 0 {
                d.insert(reason.to_string(), n);
            }
        }
        d.extend(self.adm.drops.iter().map(|(k, v)| (k.clone(), *v)));
        if self.reach.dropped > 0 {
            d.insert(crate::reach::DROP_REASON.to_string(), self.reach.dropped);
        }
        if self.other_family > 0 {
            d.insert("other_family".to_string(), self.other_family);
        }
        d
    }

    /// A node's name for status: from its `Hello`, the member list, or
    /// its short id.
    fn node_name(&self, names: &HashMap<NodeId, String>, n: NodeId) -> String {
        names
            .get(&n)
            .cloned()
            .or_else(|| self.overlay.member(n).map(|m| m.name.clone()))
            .unwrap_or_else(|| n.short())
    }

    /// The routes this node carries, with the endpoint's counters.
    fn relay_status(&self, now: Instant, names: &HashMap<NodeId, String>) -> RelayStatus {
        let limits = self.endpoint.relay_limits();
        let entries: HashMap<RouteId, RouteInfo> = self
            .endpoint
            .routes(now)
            .into_iter()
            .map(|i| (i.id, i))
            .collect();
        let traffic = |id: RouteId| {
            entries
                .get(&id)
                .map_or(RouteTraffic::default(), |i| RouteTraffic {
                    packets: i.tx.packets,
                    bytes: i.tx.bytes,
                    dropped: i.rx.dropped + i.tx.dropped,
                })
        };
        let name = |n: NodeId| self.node_name(names, n);
        RelayStatus {
            enabled: limits.enabled,
            max_routes: limits.max_routes,
            routes: self
                .routes
                .carried(now)
                .into_iter()
                .map(|c| CarriedRoute {
                    origin: c.origin.to_string(),
                    target: c.target.to_string(),
                    from: name(c.up),
                    to: name(c.down),
                    ready: c.ready,
                    forward: traffic(c.up_in),
                    back: traffic(c.down_in),
                    age_secs: c.age.as_secs(),
                    // The entry toward the target receives from upstream
                    // and sends downstream.
                    tags_from: entries.get(&c.up_in).map(|i| i.mac_in.to_string()),
                    tags_to: entries.get(&c.up_in).map(|i| i.mac_out.to_string()),
                })
                .collect(),
        }
    }

    fn routed_status(&self) -> RoutedStatus {
        RoutedStatus {
            peers: self
                .overlay
                .routed_counters()
                .map(|(id, c)| RoutedPeer {
                    peer_id: id.to_string(),
                    peer_name: self
                        .overlay
                        .member(id)
                        .map(|m| m.name.clone())
                        .filter(|n| !n.is_empty()),
                    tx: Traffic {
                        frames: c.sent_frames,
                        bytes: c.sent_bytes,
                    },
                    rx: Traffic {
                        frames: c.delivered_frames,
                        bytes: c.delivered_bytes,
                    },
                })
                .collect(),
            forwarded: self.overlay.stats().routed_forwarded,
        }
    }
}

/// What the overlay refused from members over its budgets
/// (docs/limits.md "Budgets after authentication"), as node-wide drops.
fn overlay_drops(s: &overlay::Stats) -> [(&'static str, u64); 4] {
    [
        ("overlay_moved_over_budget", s.moves_over_budget),
        ("overlay_probes_over_budget", s.probes_over_budget),
        ("overlay_gossip_over_budget", s.gossip_over_budget),
        ("overlay_gossip_over_cap", s.gossip_over_cap),
    ]
}

/// How long a round trip measured from acknowledged traffic stands for the
/// session's in the status after the traffic stopped.
const MEASURED_RTT_FRESH: Duration = Duration::from_secs(60);

/// The round trip the status shows: the one measured from acknowledged
/// traffic (to the microsecond) while it is fresh, else the RFC 7016
/// timestamps' SRTT, which counts 4 ms ticks and so reads 0 or 4 ms on a
/// LAN.
fn shown_rtt(
    now: Instant,
    srtt: Option<Duration>,
    measured: Option<(Duration, Instant)>,
) -> Option<Duration> {
    match measured {
        Some((rtt, at)) if now.saturating_duration_since(at) <= MEASURED_RTT_FRESH => Some(rtt),
        _ => srtt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_shows_the_measured_round_trip_while_it_is_fresh() {
        let t = Instant::now();
        let us = Duration::from_micros;
        let tick = Some(Duration::ZERO);
        assert_eq!(shown_rtt(t, tick, Some((us(350), t))), Some(us(350)));
        let later = t + MEASURED_RTT_FRESH;
        assert_eq!(shown_rtt(later, tick, Some((us(350), t))), Some(us(350)));
        let stale = later + us(1);
        assert_eq!(shown_rtt(stale, tick, Some((us(350), t))), tick);
        assert_eq!(shown_rtt(t, tick, None), tick);
        assert_eq!(shown_rtt(t, None, None), None);
    }

    #[test]
    fn overlay_budget_refusals_are_named_drops() {
        let s = overlay::Stats {
            moves_over_budget: 1,
            probes_over_budget: 2,
            gossip_over_budget: 3,
            gossip_over_cap: 4,
            ..Default::default()
        };
        let d: BTreeMap<&str, u64> = overlay_drops(&s).into_iter().collect();
        assert_eq!(d["overlay_moved_over_budget"], 1);
        assert_eq!(d["overlay_probes_over_budget"], 2);
        assert_eq!(d["overlay_gossip_over_budget"], 3);
        assert_eq!(d["overlay_gossip_over_cap"], 4);
    }
}
