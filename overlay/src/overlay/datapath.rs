//! The data path: what happens to each Ethernet frame. From the TAP, the
//! learning switch picks a node; a linked node gets the frame direct, an
//! unlinked one routed (greedy, hop by hop), and broadcast or unknown
//! unicast goes out as a bounded flood (docs/overlay.md "Bounded flood").
//! From a peer, the frame header says which of the three it is. Routed
//! traffic to one node is counted; past `on_demand_*` a direct link is
//! wanted. No allocation per frame once the output vector has grown.
//!
//! Frames are bound to their sender (docs/overlay.md "Frames bound to
//! their sender"):
//! - a direct frame's source MAC (and, when the peer's policy lists IP
//!   prefixes, its ARP/IPv4/IPv6 source) must be one the peer's
//!   [`SourcePolicy`] allows: one comparison against a short list, no
//!   signature, no allocation;
//! - flood and routed frames carry their origin's key and signature; each
//!   receiver checks them (charged to the sending link's verify budget)
//!   before it dedups (per-origin window), counts the origin's broadcast
//!   budget, learns, delivers or forwards. The first hop checks the source
//!   policy first (cheap), then verifies too, so that an honest node never
//!   forwards what the next hop would refuse;
//! - the switch learns a source MAC only as the origin's policy allows: a
//!   linked origin's policy, else only the origin's auto MAC.

use super::origins::SeqWindow;
use super::{Demand, Event, Link, Overlay, Purpose, RoutedCounters};
use crate::ring;
use crate::source::SourcePolicy;
use crate::switch::{parse_macs, DropReason, Forward, Learn, Mac};
use crate::wire::{signed_message, FloodHeader, FrameHeader, OriginAuth, RoutedHeader};
use ringlan_tunnel::NodeId;
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

/// Placeholder for the signature while the header is being built.
const UNSIGNED: OriginAuth = OriginAuth {
    key: [0; 32],
    sig: [0; 64],
};

/// At most this many end nodes have [`RoutedCounters`]; past it, the entry
/// with the least traffic makes room (the totals in [`Stats`](super::Stats) stay exact).
const MAX_ROUTED_PEERS: usize = 256;

/// Source policies kept for nodes not linked yet, at most.
const MAX_PENDING_POLICIES: usize = 4096;

/// A link's source policy as the data path reads it: the one set from a
/// certificate, else what the peer's `Hello` announced (borrowed: nothing
/// is built per frame).
enum Effective<'a> {
    Set(&'a SourcePolicy),
    Hello { mac: Mac, bridge: bool },
}

impl Effective<'_> {
    fn of(link: &Link) -> Option<Effective<'_>> {
        if let Some(p) = &link.policy {
            return Some(Effective::Set(p));
        }
        let h = link.hello.as_ref()?;
        Some(Effective::Hello {
            mac: h.mac?,
            bridge: h.bridge,
        })
    }

    #[inline]
    fn check(&self, src: Mac, frame: &[u8]) -> Result<(), DropReason> {
        match self {
            Effective::Set(p) => p.check(src, frame),
            Effective::Hello { mac, bridge } => {
                if (*bridge && !src.is_group()) || src == *mac {
                    Ok(())
                } else {
                    Err(DropReason::ForgedMac)
                }
            }
        }
    }

    fn learn(&self) -> Learn {
        match self {
            Effective::Set(p) if p.is_bridge() => Learn::Shared,
            Effective::Hello { bridge: true, .. } => Learn::Shared,
            _ => Learn::Owned,
        }
    }
}

impl Overlay {
    /// Bind `node`'s frames to `policy` (from its certificate), replacing
    /// what its `Hello` announced. Kept until the link goes; set before
    /// the link is up, it applies when it comes up.
    pub fn set_source_policy(&mut self, node: NodeId, mut policy: SourcePolicy) {
        if let crate::source::MacPolicy::Only(l) = &mut policy.macs {
            l.truncate(crate::source::MAX_POLICY_MACS);
        }
        match self.links.get_mut(&node) {
            Some(l) => {
                l.policy = Some(policy);
                self.pin_sources(node);
            }
            None => {
                if self.policies.len() >= MAX_PENDING_POLICIES && !self.policies.contains_key(&node)
                {
                    // Bounded: policies are set just before peer_up.
                    self.policies.clear();
                }
                self.policies.insert(node, policy);
            }
        }
    }

    /// The source policy `node`'s frames are checked against (`None`: no
    /// link, or no `Hello` yet).
    pub fn source_policy(&self, node: NodeId) -> Option<SourcePolicy> {
        match Effective::of(self.links.get(&node)?)? {
            Effective::Set(p) => Some(p.clone()),
            Effective::Hello { bridge: true, .. } => Some(SourcePolicy::any()),
            Effective::Hello { mac, .. } => Some(SourcePolicy::only(mac)),
        }
    }

    /// Pin the MACs a linked non-bridge member may use to it (after its
    /// `Hello` or a new policy).
    pub(super) fn pin_sources(&mut self, node: NodeId) {
        let Some(link) = self.links.get(&node) else {
            return;
        };
        match Effective::of(link) {
            Some(Effective::Set(p)) => match &p.macs {
                crate::source::MacPolicy::Only(l) => self.switch.pin(node, l),
                crate::source::MacPolicy::Any => self.switch.pin(node, &[]),
            },
            Some(Effective::Hello { mac, bridge: false }) => self.switch.pin(node, &[mac]),
            _ => self.switch.pin(node, &[]),
        }
    }

    /// Origins of flood and routed frames currently known (verified).
    pub fn known_origins(&self) -> usize {
        self.origins.len()
    }

    /// The node behind a MAC, as learnt by the switch.
    pub fn lookup_mac(&mut self, now: Instant, mac: Mac) -> Option<NodeId> {
        self.switch.lookup(now, mac)
    }

    /// Point `mac` at `node` because the directory says so (a fresh member
    /// record; the node core answered an ARP or ND question with it, so
    /// frames to `mac` follow at once and should go to `node`, direct or
    /// routed, instead of being flooded until the member's first frame
    /// teaches the switch). Learnt as a shared entry: a pinned MAC or one
    /// another node owns stays where it is. Returns whether the switch
    /// points `mac` at `node` now.
    pub fn learn_mac(&mut self, now: Instant, mac: Mac, node: NodeId) -> bool {
        node != self.cfg.node_id
            && !self.banned.contains(&node)
            && self.switch.learn(now, mac, node, Learn::Shared)
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
                    let h = FrameHeader::Routed(RoutedHeader {
                        origin: self.cfg.node_id,
                        destination: n,
                        hop_limit: self.cfg.route_hop_limit,
                        auth: UNSIGNED,
                    });
                    let Some(header) = self.sign(h, frame) else {
                        return self.cannot_sign();
                    };
                    self.stats.routed_sent += 1;
                    let c = self.routed_entry(n);
                    c.sent_frames += 1;
                    c.sent_bytes += frame.len() as u64;
                    out.push(FrameSend { to: hop, header });
                    return d;
                }
                // No route (no ring links yet): flood it.
                self.flood_from_here(frame, out)
            }
            Forward::Flood => self.flood_from_here(frame, out),
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
        if self.cfg.mac.is_none() {
            return Err(DropReason::NoTap);
        }
        if let Some(frame) = FrameHeader::direct_frame(msg) {
            // The bulk of the traffic: the session names the sender.
            self.direct_from_peer(now, from, frame)?;
            return Ok(Received {
                frame,
                to_tap: true,
            });
        }
        if !self.links.contains_key(&from) {
            return Err(DropReason::NoTap);
        }
        let (header, frame) = FrameHeader::decode(msg).map_err(|_| DropReason::BadHeader)?;
        match header {
            FrameHeader::Direct => self.direct_from_peer(now, from, frame)?,
            FrameHeader::Flood(h) => {
                if h.origin == self.cfg.node_id {
                    self.stats.flood_duplicates += 1;
                    return Err(DropReason::Duplicate);
                }
                if h.origin == from {
                    // First hop: the cheap policy check before a signature
                    // is verified (a forging member spends no budget).
                    self.source_learn(from, frame)?;
                }
                match self.authenticate(now, from, &header, frame) {
                    Err(DropReason::Duplicate) => {
                        self.stats.flood_duplicates += 1;
                        return Err(DropReason::Duplicate);
                    }
                    r => r?,
                }
                // The MAC lives at the origin, not at the forwarder.
                let how = self.source_learn(h.origin, frame)?;
                self.switch_ingress(now, h.origin, frame, how)?;
                if h.hop_limit > 1 {
                    self.plan_flood(&h, h.hop_limit - 1, Some(from), out);
                    self.stats.flood_forwarded += out.len() as u64;
                }
            }
            FrameHeader::Routed(h) => {
                if h.destination != self.cfg.node_id && h.hop_limit <= 1 {
                    return Err(DropReason::Duplicate);
                }
                if h.origin == from {
                    self.source_learn(from, frame)?;
                }
                self.authenticate(now, from, &header, frame)?;
                if h.destination == self.cfg.node_id {
                    let how = self.source_learn(h.origin, frame)?;
                    self.switch_ingress(now, h.origin, frame, how)?;
                    self.stats.routed_delivered += 1;
                    let c = self.routed_entry(h.origin);
                    c.delivered_frames += 1;
                    c.delivered_bytes += frame.len() as u64;
                    return Ok(Received {
                        frame,
                        to_tap: true,
                    });
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

    /// A direct frame from `from`: its source as `from`'s policy allows.
    fn direct_from_peer(
        &mut self,
        now: Instant,
        from: NodeId,
        frame: &[u8],
    ) -> Result<(), DropReason> {
        let Some(link) = self.links.get_mut(&from) else {
            return Err(DropReason::NoTap);
        };
        let Some((_, src)) = parse_macs(frame) else {
            self.switch_ingress(now, from, frame, Learn::No)?;
            return Err(DropReason::Runt);
        };
        let eff = Effective::of(link).ok_or(DropReason::NoTap)?;
        eff.check(src, frame)?;
        let how = eff.learn();
        link.last_traffic = now;
        self.switch_ingress(now, from, frame, how)
    }

    fn switch_ingress(
        &mut self,
        now: Instant,
        origin: NodeId,
        frame: &[u8],
        how: Learn,
    ) -> Result<(), DropReason> {
        match self.switch.ingress(now, origin, frame, how) {
            Some(r) => Err(r),
            None => Ok(()),
        }
    }

    /// Check a flood or routed frame's origin (docs/overlay.md
    /// "Authenticated origins"): the sending link's verify budget, the
    /// key against the origin's node id, the signature; then, for a
    /// flood, the origin's duplicate window and broadcast budget.
    fn authenticate(
        &mut self,
        now: Instant,
        from: NodeId,
        header: &FrameHeader,
        frame: &[u8],
    ) -> Result<(), DropReason> {
        let (origin, auth, seq) = match header {
            FrameHeader::Direct => return Ok(()),
            FrameHeader::Flood(h) => (h.origin, &h.auth, Some(h.seq)),
            FrameHeader::Routed(h) => (h.origin, &h.auth, None),
        };
        if self.cfg.identity.is_none() {
            return Err(DropReason::NoIdentity);
        }
        let budgets = &self.cfg.budgets;
        let link = self.links.get_mut(&from).ok_or(DropReason::NoTap)?;
        if !link.verify.take(now, budgets.verifies_per_link, 1.0) {
            return Err(DropReason::VerifyBudget);
        }
        let signed = signed_message(header, frame);
        let evictions = &mut link.evictions;
        let may_evict = || evictions.take(now, budgets.origin_evictions_per_link, 1.0);
        let Some(o) = self.origins.verify(now, origin, auth, &signed, may_evict)? else {
            // Genuine, from an origin the full table has no room for.
            self.stats.origins_not_kept += 1;
            return Ok(());
        };
        if let Some(seq) = seq {
            let fresh = match &mut o.window {
                Some(w) => w.accept(seq),
                None => {
                    o.window = Some(SeqWindow::new(seq));
                    true
                }
            };
            if !fresh {
                return Err(DropReason::Duplicate);
            }
            if !o.broadcasts.take(now, budgets.broadcasts_per_origin, 1.0) {
                return Err(DropReason::BroadcastBudget);
            }
        }
        Ok(())
    }

    /// How to learn the source MAC of an authenticated frame from
    /// `origin`: as a linked origin's policy allows (a MAC it does not
    /// allow is a forgery the origin signed: dropped), else only the
    /// origin's auto MAC, derivable from its key; any other MAC is
    /// delivered without being learnt.
    fn source_learn(&self, origin: NodeId, frame: &[u8]) -> Result<Learn, DropReason> {
        let Some((_, src)) = parse_macs(frame) else {
            return Ok(Learn::No);
        };
        if let Some(eff) = self.links.get(&origin).and_then(Effective::of) {
            eff.check(src, frame)?;
            return Ok(eff.learn());
        }
        Ok(if self.origins.auto_mac(origin) == Some(src) {
            Learn::Owned
        } else {
            Learn::No
        })
    }

    /// A flood or routed frame this node originates, signed (`None`
    /// without an identity).
    fn sign(&self, header: FrameHeader, frame: &[u8]) -> Option<FrameHeader> {
        let id = self.cfg.identity.as_ref()?;
        Some(header.with_auth(OriginAuth {
            key: id.certificate().public_key(),
            sig: id.sign(&signed_message(&header, frame)),
        }))
    }

    fn cannot_sign(&mut self) -> Forward {
        self.stats.frames_dropped += 1;
        Forward::Drop(DropReason::NoIdentity)
    }

    /// Broadcast a frame from the TAP: sign it under the next sequence
    /// number and plan the bounded flood.
    fn flood_from_here(&mut self, frame: &[u8], out: &mut Vec<FrameSend>) -> Forward {
        self.flood_seq = self.flood_seq.wrapping_add(1);
        let me = self.cfg.node_id;
        let h = FrameHeader::Flood(FloodHeader {
            origin: me,
            seq: self.flood_seq,
            bound: me,
            hop_limit: self.cfg.flood_hop_limit,
            auth: UNSIGNED,
        });
        let Some(FrameHeader::Flood(h)) = self.sign(h, frame) else {
            return self.cannot_sign();
        };
        self.plan_flood(&h, h.hop_limit, None, out);
        Forward::Flood
    }

    /// Bounded flood (docs/overlay.md "Bounded flood"): the frame-taking links
    /// strictly inside the arc (self, bound), in ring order, each with the
    /// sub-arc up to the next one (the last up to `bound`).
    fn plan_flood(
        &mut self,
        h: &FloodHeader,
        hop_limit: u8,
        from: Option<NodeId>,
        out: &mut Vec<FrameSend>,
    ) {
        let (origin, bound) = (h.origin, h.bound);
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
                    bound: sub,
                    hop_limit,
                    ..*h
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

    fn unicast(sim: &Sim, dst: u32, src: u32) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&sim.mac(dst).0);
        f.extend_from_slice(&sim.mac(src).0);
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
        let frame = unicast(&sim, b, a);
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

/// The attacks of issue 11 item 4 against one receiving node: a member
/// forging source MACs, origins and sequence numbers, flooding with
/// random MACs and bad signatures.
#[cfg(test)]
mod attacks {
    use super::*;
    use crate::overlay::Config;
    use crate::source::{auto_mac, IpPrefix, MacPolicy};
    use crate::wire::{Hello, Message, Role};
    use ringlan_tunnel::{Identity, NetworkName, Rng};
    use std::time::Duration;

    fn net() -> NetworkName {
        NetworkName::new("lab").unwrap()
    }

    fn ident(seed: u8) -> Identity {
        Identity::from_secret_key_bytes([seed; 32], &net())
    }

    fn mac(id: &Identity) -> Mac {
        auto_mac(&id.certificate().public_key())
    }

    /// The receiving node (identity 1), with budgets small enough to test.
    fn receiver(t0: Instant) -> Overlay {
        receiver_with(t0, |_| {})
    }

    fn receiver_with(t0: Instant, edit: impl FnOnce(&mut Config)) -> Overlay {
        let me = ident(1);
        let mut cfg = Config::new(me.node_id(), "rx", Role::Node, Some(mac(&me)));
        cfg.identity = Some(me);
        cfg.introducers = vec!["198.51.100.7:4910".parse().unwrap()];
        cfg.budgets.verifies_per_link = crate::Budget::new(50.0, 10.0);
        cfg.budgets.broadcasts_per_origin = crate::Budget::new(20.0, 5.0);
        cfg.switch.max_per_node = 8;
        edit(&mut cfg);
        Overlay::new(t0, cfg, Rng::from_seed([3; 32])).unwrap()
    }

    /// Link `peer` to `o` with a `Hello` announcing its auto MAC.
    fn link(o: &mut Overlay, t: Instant, peer: &Identity, bridge: bool) {
        o.peer_up(t, peer.node_id(), "203.0.113.1:1".parse().ok(), false);
        let h = Message::Hello(Hello {
            node_id: peer.node_id(),
            name: "p".into(),
            role: Role::Node,
            addrs: vec![],
            mac: Some(mac(peer)),
            relays: false,
            bridge,
            symmetric_nat: false,
            aegis_hops: false,
        });
        o.handle_control(t, peer.node_id(), &h.encode().unwrap());
        while o.poll_action().is_some() {}
    }

    /// The receiver with members 2, 3, ... linked (`bridges[i]`: member
    /// `2 + i` announced itself as a bridge), and the members.
    fn with_links<const N: usize>(t0: Instant, bridges: [bool; N]) -> (Overlay, [Identity; N]) {
        let mut o = receiver(t0);
        let peers: [Identity; N] = std::array::from_fn(|i| ident(2 + i as u8));
        for (p, b) in peers.iter().zip(bridges) {
            link(&mut o, t0, p, b);
        }
        (o, peers)
    }

    fn eth(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = dst.0.to_vec();
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f
    }

    fn message(h: FrameHeader, frame: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; h.len()];
        h.encode(&mut m).unwrap();
        m.extend_from_slice(frame);
        m
    }

    /// `h` signed by `signer` (whatever origin it claims), then `frame`.
    fn signed(h: FrameHeader, signer: &Identity, frame: &[u8]) -> Vec<u8> {
        let auth = OriginAuth {
            key: signer.certificate().public_key(),
            sig: signer.sign(&signed_message(&h, frame)),
        };
        message(h.with_auth(auth), frame)
    }

    /// A flood by `signer` claiming `origin`.
    fn flood(origin: NodeId, signer: &Identity, seq: u64, frame: &[u8]) -> Vec<u8> {
        let h = FloodHeader {
            origin,
            seq,
            bound: origin,
            hop_limit: 8,
            auth: UNSIGNED,
        };
        signed(FrameHeader::Flood(h), signer, frame)
    }

    fn routed(origin: NodeId, signer: &Identity, to: NodeId, frame: &[u8]) -> Vec<u8> {
        let h = RoutedHeader {
            origin,
            destination: to,
            hop_limit: 8,
            auth: UNSIGNED,
        };
        signed(FrameHeader::Routed(h), signer, frame)
    }

    fn rx(o: &mut Overlay, t: Instant, from: &Identity, msg: &[u8]) -> Result<bool, DropReason> {
        let mut out = Vec::new();
        o.frame_from_peer(t, from.node_id(), msg, &mut out)
            .map(|r| r.to_tap)
    }

    #[test]
    fn direct_frames_carry_only_the_senders_macs() {
        let t0 = Instant::now();
        let (mut o, [victim, attacker]) = with_links(t0, [false, false]);
        let direct = |f: &[u8]| message(FrameHeader::Direct, f);
        // The gateway attack: the victim's MAC as source.
        let forged = direct(&eth(Mac::BROADCAST, mac(&victim)));
        assert_eq!(
            rx(&mut o, t0, &attacker, &forged),
            Err(DropReason::ForgedMac)
        );
        let own = direct(&eth(Mac::BROADCAST, mac(&attacker)));
        assert_eq!(rx(&mut o, t0, &attacker, &own), Ok(true));
        assert_eq!(o.lookup_mac(t0, mac(&victim)), Some(victim.node_id()));
        // A bridge may use any MAC, but not take a member's pinned one.
        let bridge = ident(4);
        link(&mut o, t0, &bridge, true);
        assert_eq!(rx(&mut o, t0, &bridge, &forged), Ok(true));
        assert_eq!(o.lookup_mac(t0, mac(&victim)), Some(victim.node_id()));
        let site = Mac([2, 0x51, 0, 0, 0, 1]);
        assert_eq!(
            rx(&mut o, t0, &bridge, &direct(&eth(Mac::BROADCAST, site))),
            Ok(true)
        );
        assert_eq!(o.lookup_mac(t0, site), Some(bridge.node_id()));
        // A certificate's policy replaces the Hello's: IP sources checked.
        let mut policy = SourcePolicy::only(mac(&attacker));
        policy.ips = Some(vec![
            IpPrefix::new("10.77.0.3".parse().unwrap(), 32).unwrap()
        ]);
        o.set_source_policy(attacker.node_id(), policy.clone());
        assert_eq!(o.source_policy(attacker.node_id()), Some(policy));
        let mut arp = eth(Mac::BROADCAST, mac(&attacker));
        arp.extend_from_slice(&mac(&attacker).0);
        arp.extend_from_slice(&[10, 77, 0, 1]); // the gateway's IP
        arp.extend_from_slice(&[0; 10]);
        assert_eq!(
            rx(&mut o, t0, &attacker, &direct(&arp)),
            Err(DropReason::ForgedIp)
        );
        arp[28..32].copy_from_slice(&[10, 77, 0, 3]);
        assert_eq!(rx(&mut o, t0, &attacker, &direct(&arp)), Ok(true));
        assert_eq!(
            o.source_policy(bridge.node_id()).map(|p| p.macs),
            Some(MacPolicy::Any)
        );
    }

    #[test]
    fn random_source_macs_at_rate_neither_fill_nor_poison_the_table() {
        let t0 = Instant::now();
        let (mut o, [victim, member, bridge]) = with_links(t0, [false, false, true]);
        let mut rng = Rng::from_seed([9; 32]);
        let (mut forged, mut delivered) = (0, 0);
        for i in 0..10_000u32 {
            let mut m = [0u8; 6];
            rng.fill(&mut m);
            m[0] &= 0xfe;
            if i % 100 == 0 {
                m = mac(&victim).0;
            }
            let f = message(FrameHeader::Direct, &eth(Mac::BROADCAST, Mac(m)));
            let t = t0 + Duration::from_micros(u64::from(i));
            if rx(&mut o, t, &member, &f) == Err(DropReason::ForgedMac) {
                forged += 1;
            }
            if rx(&mut o, t, &bridge, &f) == Ok(true) {
                delivered += 1;
            }
        }
        assert_eq!((forged, delivered), (10_000, 10_000));
        // The bridge holds at most its cap; the victim's MAC stays its own.
        assert!(o.switch.len() <= 8, "{}", o.switch.len());
        assert!(o.switch.counters().over_cap > 9_000);
        assert_eq!(o.lookup_mac(t0, mac(&victim)), Some(victim.node_id()));
    }

    #[test]
    fn flood_and_routed_origins_cannot_be_forged() {
        let t0 = Instant::now();
        let mut o = receiver(t0);
        let me = ident(1);
        let (victim, attacker) = (ident(2), ident(3));
        link(&mut o, t0, &attacker, false);
        let frame = eth(Mac::BROADCAST, mac(&victim));
        // The victim's origin, signed by the attacker's key.
        let f = flood(victim.node_id(), &attacker, 5, &frame);
        assert_eq!(rx(&mut o, t0, &attacker, &f), Err(DropReason::BadOrigin));
        // The victim's key, a signature that is not the victim's.
        let mut f = flood(victim.node_id(), &victim, 5, &frame);
        let sig_at = FrameHeader::MAX_LEN - 64;
        f[sig_at] ^= 1;
        assert_eq!(rx(&mut o, t0, &attacker, &f), Err(DropReason::BadSignature));
        // A genuine flood with its frame swapped.
        let mut f = flood(victim.node_id(), &victim, 5, &frame);
        let end = f.len() - 1;
        f[end] ^= 1;
        assert_eq!(rx(&mut o, t0, &attacker, &f), Err(DropReason::BadSignature));
        // Routed: the same.
        let r = routed(victim.node_id(), &attacker, me.node_id(), &frame);
        assert_eq!(rx(&mut o, t0, &attacker, &r), Err(DropReason::BadOrigin));
        let mut r = routed(victim.node_id(), &victim, me.node_id(), &frame);
        r[FrameHeader::ROUTED_LEN - 1] ^= 1;
        assert_eq!(rx(&mut o, t0, &attacker, &r), Err(DropReason::BadSignature));
        // A routed frame retargeted by a forwarder breaks the signature.
        let mut r = routed(victim.node_id(), &victim, NodeId(77), &frame);
        r[17..33].copy_from_slice(&me.node_id().to_bytes());
        assert_eq!(rx(&mut o, t0, &attacker, &r), Err(DropReason::BadSignature));
        assert_eq!(o.lookup_mac(t0, mac(&victim)), None, "nothing learnt");
        assert_eq!(o.known_origins(), 0, "no entry before a signature verified");
        // The genuine ones, forwarded by the same member, pass: the victim
        // is not linked, so its auto MAC (derived from its key) is learnt.
        let f = flood(victim.node_id(), &victim, 5, &frame);
        assert_eq!(rx(&mut o, t0, &attacker, &f), Ok(true));
        assert_eq!(o.lookup_mac(t0, mac(&victim)), Some(victim.node_id()));
        let r = routed(victim.node_id(), &victim, me.node_id(), &frame);
        assert_eq!(rx(&mut o, t0, &attacker, &r), Ok(true));
        // Signed by its origin, but a MAC that is not the origin's: the
        // frame is delivered, the MAC not learnt.
        let other = Mac([2, 0x77, 0, 0, 0, 1]);
        let f = flood(
            attacker.node_id(),
            &attacker,
            9,
            &eth(Mac::BROADCAST, other),
        );
        assert_eq!(rx(&mut o, t0, &attacker, &f), Err(DropReason::ForgedMac));
        let stranger = ident(5);
        let f = flood(
            stranger.node_id(),
            &stranger,
            1,
            &eth(Mac::BROADCAST, other),
        );
        assert_eq!(rx(&mut o, t0, &attacker, &f), Ok(true));
        assert_eq!(o.lookup_mac(t0, other), None);
    }

    #[test]
    fn future_sequence_numbers_cannot_poison_the_victims_window() {
        let t0 = Instant::now();
        let (mut o, [attacker]) = with_links(t0, [false]);
        let victim = ident(9);
        let frame = eth(Mac::BROADCAST, mac(&victim));
        // Forged floods under the victim's origin and future numbers:
        // refused before they reach the window.
        for s in 100..140 {
            let mut f = flood(victim.node_id(), &victim, s, &frame);
            f[FrameHeader::MAX_LEN - 1] ^= 1;
            assert!(rx(&mut o, t0, &attacker, &f).is_err());
        }
        // Floods of many other origins (keys the attacker minted) fill no
        // shared cache: each has its own window.
        for k in 0..30u8 {
            let minted = ident(100 + k);
            let f = flood(
                minted.node_id(),
                &minted,
                100,
                &eth(Mac::BROADCAST, mac(&minted)),
            );
            let t = t0 + Duration::from_secs(u64::from(k));
            assert_eq!(rx(&mut o, t, &attacker, &f), Ok(true));
        }
        // The victim's own broadcasts all arrive, each once (within its
        // broadcast budget of 20).
        let later = t0 + Duration::from_secs(60);
        for s in 100..118 {
            let f = flood(victim.node_id(), &victim, s, &frame);
            assert_eq!(rx(&mut o, later, &attacker, &f), Ok(true), "seq {s}");
            assert_eq!(rx(&mut o, later, &attacker, &f), Err(DropReason::Duplicate));
        }
    }

    #[test]
    fn budgets_bound_bad_signatures_per_link_and_broadcasts_per_origin() {
        let t0 = Instant::now();
        let (mut o, [honest, attacker]) = with_links(t0, [false, false]);
        let origin = ident(4);
        let frame = eth(Mac::BROADCAST, mac(&origin));
        let mut bad = flood(origin.node_id(), &origin, 1, &frame);
        bad[FrameHeader::MAX_LEN - 1] ^= 1;
        let verdicts: Vec<_> = (0..200).map(|_| rx(&mut o, t0, &attacker, &bad)).collect();
        let spent = verdicts
            .iter()
            .filter(|v| **v == Err(DropReason::VerifyBudget))
            .count();
        assert_eq!(
            spent, 150,
            "50 verifications, then the link's budget is spent"
        );
        // Another link's frames are verified still.
        let good = flood(origin.node_id(), &origin, 1, &frame);
        assert_eq!(rx(&mut o, t0, &honest, &good), Ok(true));
        // One origin's broadcasts: 20 at once, then 5 per second.
        let burst: Vec<_> = (2..40)
            .map(|s| {
                rx(
                    &mut o,
                    t0,
                    &honest,
                    &flood(origin.node_id(), &origin, s, &frame),
                )
            })
            .collect();
        let ok = burst.iter().filter(|v| v.is_ok()).count();
        assert_eq!(ok, 19, "{burst:?}");
        assert!(burst[19..]
            .iter()
            .all(|v| *v == Err(DropReason::BroadcastBudget)));
        let t1 = t0 + Duration::from_secs(1);
        let next: Vec<_> = (40..50)
            .map(|s| {
                rx(
                    &mut o,
                    t1,
                    &honest,
                    &flood(origin.node_id(), &origin, s, &frame),
                )
            })
            .collect();
        assert_eq!(next.iter().filter(|v| v.is_ok()).count(), 5);
        // The attacker's link has refilled by then too: 10 per second.
        let t2 = t0 + Duration::from_secs(2);
        let again: Vec<_> = (0..30).map(|_| rx(&mut o, t2, &attacker, &bad)).collect();
        let verified = again
            .iter()
            .filter(|v| **v == Err(DropReason::BadSignature))
            .count();
        assert_eq!(verified, 20);
    }

    #[test]
    fn minted_origins_cannot_cycle_a_victim_out_of_a_full_origins_table() {
        let t0 = Instant::now();
        let mut o = receiver_with(t0, |c| {
            c.budgets.origins = 4;
            c.budgets.origin_evictions_per_link = crate::Budget::new(1.0, 0.0);
        });
        let attacker = ident(2);
        link(&mut o, t0, &attacker, false);
        let minted = |k: u8, t: Instant, o: &mut Overlay| {
            let m = ident(100 + k);
            let f = flood(m.node_id(), &m, 1, &eth(Mac::BROADCAST, mac(&m)));
            rx(o, t, &attacker, &f)
        };
        for k in 0..3 {
            assert_eq!(minted(k, t0, &mut o), Ok(true));
        }
        let victim = ident(9);
        let t1 = t0 + Duration::from_secs(1);
        let recorded = flood(
            victim.node_id(),
            &victim,
            7,
            &eth(Mac::BROADCAST, mac(&victim)),
        );
        assert_eq!(rx(&mut o, t1, &attacker, &recorded), Ok(true));
        assert_eq!(o.known_origins(), 4);
        // Ten more minted origins: one eviction (the least recently used
        // minted one), then delivered but not remembered.
        let t2 = t0 + Duration::from_secs(2);
        for k in 3..13 {
            assert_eq!(minted(k, t2, &mut o), Ok(true));
        }
        assert_eq!(o.stats().origins_not_kept, 9);
        assert_eq!(o.known_origins(), 4);
        // The victim's window is still there: its recorded flood is not
        // accepted again.
        assert_eq!(
            rx(&mut o, t2, &attacker, &recorded),
            Err(DropReason::Duplicate)
        );
    }

    #[test]
    fn routed_frame_without_a_route_is_dropped_after_its_origin_checks() {
        let t0 = Instant::now();
        let (mut o, [fwd]) = with_links(t0, [false]);
        let origin = ident(4);
        let frame = eth(Mac([2, 0, 0, 0, 0, 9]), mac(&origin));
        let r = routed(origin.node_id(), &origin, NodeId(1234), &frame);
        assert_eq!(rx(&mut o, t0, &fwd, &r), Err(DropReason::NoRoute));
        assert_eq!(o.stats().no_route, 1);
    }
}
