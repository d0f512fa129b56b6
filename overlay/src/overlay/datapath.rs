//! The data path: what happens to each Ethernet frame. From the TAP, the
//! learning switch picks a node; a linked node gets the frame direct, an
//! unlinked one routed (greedy, hop by hop), and broadcast or unknown
//! unicast goes out as a bounded flood (docs/overlay.md "Bounded flood").
//! From a peer, the frame header says which of the three it is. Routed
//! traffic to one node is counted; past `on_demand_*` a direct link is
//! wanted. No allocation per frame once the output vector has grown.

use super::{Demand, Event, Overlay, Purpose, RoutedCounters};
use crate::ring;
use crate::switch::{DropReason, Forward, Mac};
use crate::wire::{FloodHeader, FrameHeader, RoutedHeader};
use ringlan_tunnel::NodeId;
use std::collections::{HashSet, VecDeque};
use std::time::Instant;

/// One frame transmission decided by the data path: prepend `header`
/// (encoded with [`FrameHeader::encode`]) to the frame and send it on the
/// frame flow to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSend {
    pub to: NodeId,
    pub header: FrameHeader,
}

/// A frame accepted by [`Overlay::frame_from_peer`]: write `frame` to the
/// TAP when `to_tap`, and send it with each header in `out` to its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'m> {
    pub frame: &'m [u8],
    /// False for a routed frame only passing through this node.
    pub to_tap: bool,
}

/// At most this many end nodes have [`RoutedCounters`]; past it, the entry
/// with the least traffic makes room (the totals in [`Stats`](super::Stats) stay exact).
const MAX_ROUTED_PEERS: usize = 256;

/// Duplicate suppression for floods: the last `cap` (origin, seq) pairs.
/// Grows on demand (a quiet node holds nothing).
#[derive(Debug)]
pub(super) struct FloodCache {
    set: HashSet<(NodeId, u64)>,
    order: VecDeque<(NodeId, u64)>,
    cap: usize,
}

impl FloodCache {
    pub(super) fn new(cap: usize) -> Self {
        FloodCache {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// True if the pair is new (and now remembered).
    fn insert(&mut self, k: (NodeId, u64)) -> bool {
        if !self.set.insert(k) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

impl Overlay {
    /// The node behind a MAC, as learnt by the switch.
    pub fn lookup_mac(&mut self, now: Instant, mac: Mac) -> Option<NodeId> {
        self.switch.lookup(now, mac)
    }

    /// A frame read from the TAP. Fills `out` (cleared first) with the
    /// transmissions to make; returns the switch decision. No allocation
    /// once `out` has grown to the number of links.
    pub fn frame_from_tap(
        &mut self,
        now: Instant,
        frame: &[u8],
        out: &mut Vec<FrameSend>,
    ) -> Forward {
        out.clear();
        self.stats.frames_from_tap += 1;
        if self.cfg.mac.is_none() {
            self.stats.frames_dropped += 1;
            return Forward::Drop(DropReason::NoTap);
        }
        let d = self.switch.decide(now, frame);
        match d {
            Forward::Unicast(n) => {
                if let Some(l) = self.links.get_mut(&n).filter(|l| l.takes_frames()) {
                    l.last_traffic = now;
                    out.push(FrameSend {
                        to: n,
                        header: FrameHeader::Direct,
                    });
                    return d;
                }
                self.count_demand(now, n, frame.len());
                if let Some(hop) = self.route(n, &[]) {
                    self.stats.routed_sent += 1;
                    let c = self.routed_entry(n);
                    c.sent_frames += 1;
                    c.sent_bytes += frame.len() as u64;
                    out.push(FrameSend {
                        to: hop,
                        header: FrameHeader::Routed(RoutedHeader {
                            origin: self.cfg.node_id,
                            destination: n,
                            hop_limit: self.cfg.route_hop_limit,
                        }),
                    });
                    return d;
                }
                // No route (no ring links yet): flood it.
                self.flood_from_here(out);
                Forward::Flood
            }
            Forward::Flood => {
                self.flood_from_here(out);
                Forward::Flood
            }
            Forward::Local => {
                self.stats.frames_dropped += 1;
                Forward::Drop(DropReason::ToSelf)
            }
            Forward::Drop(_) => {
                self.stats.frames_dropped += 1;
                d
            }
        }
    }

    /// A frame-flow message from `from`. Returns the Ethernet frame and
    /// whether to write it to the TAP, and fills `out` (cleared first) with
    /// the transmissions to make with that same frame (flood forwards, or
    /// the next hop of a routed frame).
    pub fn frame_from_peer<'m>(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: &'m [u8],
        out: &mut Vec<FrameSend>,
    ) -> Result<Received<'m>, DropReason> {
        out.clear();
        self.stats.frames_from_peers += 1;
        let r = self.frame_from_peer_inner(now, from, msg, out);
        if r.is_err() {
            self.stats.frames_dropped += 1;
        }
        r
    }

    fn frame_from_peer_inner<'m>(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: &'m [u8],
        out: &mut Vec<FrameSend>,
    ) -> Result<Received<'m>, DropReason> {
        if self.cfg.mac.is_none() || !self.links.contains_key(&from) {
            return Err(DropReason::NoTap);
        }
        let (header, frame) = FrameHeader::decode(msg).map_err(|_| DropReason::BadHeader)?;
        match header {
            FrameHeader::Direct => {
                if let Some(r) = self.switch.ingress(now, from, frame) {
                    return Err(r);
                }
                if let Some(l) = self.links.get_mut(&from) {
                    l.last_traffic = now;
                }
            }
            FrameHeader::Flood(h) => {
                if h.origin == self.cfg.node_id || !self.seen.insert((h.origin, h.seq)) {
                    self.stats.flood_duplicates += 1;
                    return Err(DropReason::Duplicate);
                }
                // The MAC lives at the origin, not at the forwarder.
                if let Some(r) = self.switch.ingress(now, h.origin, frame) {
                    return Err(r);
                }
                if h.hop_limit > 1 {
                    self.plan_flood(h.origin, h.seq, h.bound, h.hop_limit - 1, Some(from), out);
                    self.stats.flood_forwarded += out.len() as u64;
                }
            }
            FrameHeader::Routed(h) => {
                if h.destination == self.cfg.node_id {
                    if let Some(r) = self.switch.ingress(now, h.origin, frame) {
                        return Err(r);
                    }
                    self.stats.routed_delivered += 1;
                    let c = self.routed_entry(h.origin);
                    c.delivered_frames += 1;
                    c.delivered_bytes += frame.len() as u64;
                    return Ok(Received {
                        frame,
                        to_tap: true,
                    });
                }
                if h.hop_limit <= 1 {
                    return Err(DropReason::Duplicate);
                }
                let Some(hop) = self
                    .links
                    .get(&h.destination)
                    .filter(|l| l.takes_frames())
                    .map(|_| h.destination)
                    .or_else(|| self.route(h.destination, &[from]))
                else {
                    self.stats.no_route += 1;
                    return Err(DropReason::NoRoute);
                };
                self.stats.routed_forwarded += 1;
                out.push(FrameSend {
                    to: hop,
                    header: FrameHeader::Routed(RoutedHeader {
                        hop_limit: h.hop_limit - 1,
                        ..h
                    }),
                });
                return Ok(Received {
                    frame,
                    to_tap: false,
                });
            }
        }
        Ok(Received {
            frame,
            to_tap: true,
        })
    }

    fn flood_from_here(&mut self, out: &mut Vec<FrameSend>) {
        self.flood_seq = self.flood_seq.wrapping_add(1);
        let me = self.cfg.node_id;
        self.seen.insert((me, self.flood_seq));
        self.plan_flood(me, self.flood_seq, me, self.cfg.flood_hop_limit, None, out);
    }

    /// Bounded flood (docs/overlay.md "Bounded flood"): the frame-taking links
    /// strictly inside the arc (self, bound), in ring order, each with the
    /// sub-arc up to the next one (the last up to `bound`).
    fn plan_flood(
        &mut self,
        origin: NodeId,
        seq: u64,
        bound: NodeId,
        hop_limit: u8,
        from: Option<NodeId>,
        out: &mut Vec<FrameSend>,
    ) {
        let me = self.cfg.node_id;
        self.scratch.clear();
        self.scratch.extend(
            self.links
                .iter()
                .filter(|(id, l)| {
                    l.takes_frames()
                        && Some(**id) != from
                        && **id != origin
                        && ring::between(me, **id, bound)
                })
                .map(|(id, _)| *id),
        );
        ring::sort_clockwise(me, &mut self.scratch);
        for (i, to) in self.scratch.iter().enumerate() {
            let sub = self.scratch.get(i + 1).copied().unwrap_or(bound);
            out.push(FrameSend {
                to: *to,
                header: FrameHeader::Flood(FloodHeader {
                    origin,
                    seq,
                    bound: sub,
                    hop_limit,
                }),
            });
        }
    }

    /// Count unicast traffic to an unlinked node; past the threshold, want
    /// an on-demand link to it.
    fn count_demand(&mut self, now: Instant, node: NodeId, len: usize) {
        if self.cfg.on_demand_frames == 0 && self.cfg.on_demand_bytes == 0 {
            return;
        }
        if self.on_demand.contains_key(&node) {
            return;
        }
        if self.demand.len() >= 1024 && !self.demand.contains_key(&node) {
            // Bounded: a burst of destinations restarts the count.
            self.demand.clear();
        }
        let interval = self.cfg.on_demand_interval;
        let d = self.demand.entry(node).or_insert(Demand {
            start: now,
            frames: 0,
            bytes: 0,
        });
        if now.saturating_duration_since(d.start) >= interval {
            *d = Demand {
                start: now,
                frames: 0,
                bytes: 0,
            };
        }
        d.frames = d.frames.saturating_add(1);
        d.bytes = d.bytes.saturating_add(len as u64);
        let hit = (self.cfg.on_demand_frames > 0 && d.frames >= self.cfg.on_demand_frames)
            || (self.cfg.on_demand_bytes > 0 && d.bytes >= self.cfg.on_demand_bytes);
        if hit && !self.leaving {
            self.demand.remove(&node);
            self.on_demand.insert(node, now);
            self.events.push_back(Event::OnDemandWanted { node });
            if self.members.contains_key(&node) {
                self.open_member(now, node);
            } else {
                self.start_lookup(now, node, Purpose::Resolve(node));
            }
        }
    }

    /// The counters of `node`, creating them (and evicting the quietest
    /// entry when full). Allocates only for a new end node.
    fn routed_entry(&mut self, node: NodeId) -> &mut RoutedCounters {
        if !self.routed.contains_key(&node) && self.routed.len() >= MAX_ROUTED_PEERS {
            let quietest = self
                .routed
                .iter()
                .min_by_key(|(_, c)| c.sent_frames.saturating_add(c.delivered_frames))
                .map(|(id, _)| *id);
            if let Some(q) = quietest {
                self.routed.remove(&q);
            }
        }
        self.routed.entry(node).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::LinkKind;
    use crate::sim::{Sim, SimConfig};
    use std::time::Duration;

    fn unicast(dst: u32, src: u32) -> Vec<u8> {
        let mac = |i: u32| {
            let b = i.to_be_bytes();
            [2, 0, b[0], b[1], b[2], b[3]]
        };
        let mut f = Vec::new();
        f.extend_from_slice(&mac(dst));
        f.extend_from_slice(&mac(src));
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 20]);
        f
    }

    #[test]
    fn routed_unicast_then_on_demand_link() {
        let mut sim = Sim::new(SimConfig::new(80, 3));
        sim.join_all(Duration::from_secs(60));
        assert_eq!(sim.ring_errors(), 0);
        // Find a pair without a session.
        let live = sim.live();
        let (a, b) = live
            .iter()
            .flat_map(|a| live.iter().map(move |b| (*a, *b)))
            .find(|(a, b)| a != b && !sim.node(*a).unwrap().is_linked(sim.id(*b)))
            .unwrap();
        // b's broadcast teaches a where b's MAC lives.
        let f = sim.broadcast(b);
        assert_eq!((f.reached, f.duplicates), (f.expected, 0));
        let frame = unicast(b, a);
        let run = sim.send_frame(a, &frame);
        assert_eq!(run.writes.len(), 1, "{run:?}");
        assert_eq!(run.writes.get(&b), Some(&1));
        assert!(run.messages >= 2, "routed over at least two hops");
        assert_eq!(sim.node(b).unwrap().stats().routed_delivered, 1);
        // Past the threshold, a direct session opens; then frames go direct.
        let threshold = sim.node(a).unwrap().config().on_demand_frames;
        for _ in 1..threshold {
            let run = sim.send_frame(a, &frame);
            assert_eq!(run.writes.get(&b), Some(&1));
        }
        sim.run_for(Duration::from_secs(2));
        let ida = sim.id(a);
        let idb = sim.id(b);
        assert!(sim.node(a).unwrap().is_linked(idb));
        let kind = |sim: &Sim, x: u32, y: NodeId| {
            sim.node(x)
                .unwrap()
                .neighbours()
                .into_iter()
                .find(|n| n.node == y)
                .map(|n| n.kind)
        };
        assert_eq!(kind(&sim, a, idb), Some(LinkKind::OnDemand));
        assert_eq!(kind(&sim, b, ida), Some(LinkKind::OnDemand));
        // Every frame before the link went routed, and is counted per end
        // node at both ends; the direct frame after it is not.
        let run = sim.send_frame(a, &frame);
        assert_eq!((run.messages, run.writes.get(&b)), (1, Some(&1)));
        let routed = |sim: &Sim, x: u32, y: NodeId| {
            sim.node(x)
                .unwrap()
                .routed_counters()
                .find(|(n, _)| *n == y)
                .map(|(_, c)| c)
                .unwrap_or_default()
        };
        let frames = u64::from(threshold);
        let bytes = frames * frame.len() as u64;
        assert_eq!(
            routed(&sim, a, idb),
            RoutedCounters {
                sent_frames: frames,
                sent_bytes: bytes,
                ..RoutedCounters::default()
            }
        );
        assert_eq!(
            routed(&sim, b, ida),
            RoutedCounters {
                delivered_frames: frames,
                delivered_bytes: bytes,
                ..RoutedCounters::default()
            }
        );
        // Idle: the on-demand link goes away again.
        sim.run_for(Duration::from_secs(200));
        assert!(!sim.node(a).unwrap().is_linked(idb));
        assert_eq!(sim.ring_errors(), 0);
    }
}
