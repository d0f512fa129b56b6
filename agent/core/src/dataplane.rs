//! The data plane: where a frame from the TAP or from a peer goes.
//!
//! TAP -> peers: the runtime reads `virtio_net_hdr` + frame into its read
//! buffer at [`TAP_READ_OFFSET`] ([`Node::handle_tap_read`]); the head room
//! in front lets the frame-flow message's virtio and overlay headers be
//! written in place, so the frame is handed to the endpoint without a copy.
//! The overlay's switch decides the peers (learnt MAC, bounded flood,
//! routed hop); each gets one message on its session's frame flow
//! (never retransmitted).
//!
//! Peer -> TAP: a frame-flow message is virtio header, overlay frame
//! header, frame. The overlay decides whether it is ours (a [`TapWrite`]:
//! the message buffer itself, no copy) and where it goes on (flood or
//! routed forwards of the same frame, sent from the node's own buffer).
//! Frames are never truncated: one our TAP cannot carry is dropped, and
//! only TCP GSO super-frames may exceed the MTU.
//!
//! Drops are counted per session (or node-wide before a session is known)
//! under fixed labels.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use ringlan_overlay::{self as overlay, DropReason, FrameHeader, Mac};
use ringlan_tunnel::NodeId;
use ringlan_tunnel::Reliability;
use ringlan_tunnel::SessionId;

use crate::directory::MemberKey;
use crate::membership::{self, NodeCert};
use crate::neighbour::{self, Question};
use crate::peers::Drops;
use crate::status::ArpNdCounters;
use crate::vnet::{TcpCut, VnetHdr, TAP_MAX_FRAME, VNET_HDR_LEN};
use crate::Node;

/// Where the runtime reads a TAP frame (virtio header first) into its
/// buffer: the room in front is for the headers written in place.
pub const TAP_READ_OFFSET: usize = FrameHeader::MAX_LEN;
/// The size of a TAP read buffer: head room, virtio header, largest frame.
pub const TAP_READ_ROOM: usize = TAP_READ_OFFSET + VNET_HDR_LEN + TAP_MAX_FRAME;
/// Where the Ethernet frame starts in a TAP read buffer.
const ETH: usize = TAP_READ_OFFSET + VNET_HDR_LEN;
/// Ethernet header plus one VLAN tag on top of the TAP MTU.
const FRAME_OVERHEAD: usize = 18;
/// TAP writes waiting for the runtime at most: beyond it frames are
/// dropped (`tap_queue`) rather than queued without bound. The runtime
/// drains the queue after every input; one receive batch is far smaller.
pub const MAX_TAP_QUEUE: usize = 4096;
/// Addresses an ARP or ND question went unanswered for, whose member record
/// is being fetched, at most: a question for one of them does not start
/// another lookup within [`REASK`].
pub const MAX_ASKED: usize = 256;
/// Time before a missed address is looked up in the directory again.
pub const REASK: std::time::Duration = std::time::Duration::from_secs(10);
/// How long after a session's last lossy measurement window TCP
/// super-frames to its peer are still cut into single-fragment pieces
/// (`vnet::TcpCut`, [`CutRule`]).
pub const CUT_HOLD: std::time::Duration = std::time::Duration::from_secs(10);
/// Frame bytes a loss measurement window spans ([`CutRule`]): 32 MiB,
/// about 23,000 full fragments, so that at the threshold a window holds
/// about a dozen losses and a path losing a fifth as much almost never
/// reaches it by chance.
pub const CUT_WINDOW: u64 = 32 << 20;
/// The frame loss rate from which TCP super-frames are cut: one lost byte
/// in `CUT_LOSS_PER` sent (0.05 %). Below it a lost super-frame is rare
/// enough that cutting costs more than it saves (docs/dataplane.md, "Loss").
pub const CUT_LOSS_PER: u64 = 2_000;

/// Whether TCP super-frames to a peer are cut into single-fragment frames
/// (docs/dataplane.md, "Loss"). A super-frame is one NoRetransmit message
/// of about 46 fragments and is lost whole when any one of them is; cut,
/// each lost packet costs the TCP inside one segment, but every piece is
/// sealed, sent and merged again on its own (about a fifth more CPU per
/// byte). So pieces are worth it only where packets are lost often: the
/// rule measures the session's frame loss over windows of [`CUT_WINDOW`]
/// bytes sent and cuts for [`CUT_HOLD`] after a window (or a window's
/// worth of lost bytes, however few were sent) at or above one byte in
/// [`CUT_LOSS_PER`].
#[derive(Debug, Default, Clone)]
pub struct CutRule {
    /// The peer's frame bytes sent and the session's frame bytes lost when
    /// the current window opened.
    window_sent: u64,
    window_lost: u64,
    until: Option<Instant>,
    /// TCP super-frames sent as pieces so far (status
    /// `transport.super_frames_cut`).
    pub super_frames_cut: u64,
}

impl CutRule {
    /// Whether to cut the frame sent now. `sent`: frame bytes queued to the
    /// peer so far; `lost`: the session's frame loss counter
    /// (`Endpoint::frame_loss`). Both only grow (one rule per session);
    /// the subtractions saturate all the same.
    pub fn cut(&mut self, now: Instant, sent: u64, lost: u64) -> bool {
        let span = sent.saturating_sub(self.window_sent);
        let lost_in = lost.saturating_sub(self.window_lost);
        let lossy = lost_in.saturating_mul(CUT_LOSS_PER);
        if span >= CUT_WINDOW || lossy >= CUT_WINDOW {
            if lossy >= span {
                self.until = Some(now + CUT_HOLD);
            }
            self.window_sent = sent;
            self.window_lost = lost;
        }
        self.until.is_some_and(|t| now < t)
    }
}

/// A frame for the TAP: the frame-flow message as it arrived (virtio
/// header at the start, the frame at its end). Hand it back with
/// [`Node::recycle`] once written.
#[derive(Debug)]
pub struct TapWrite {
    /// The session whose buffer pool the message came from; `None` for a
    /// frame the node built itself (an ARP or ND answer, `neighbour`).
    session: Option<SessionId>,
    buf: Vec<u8>,
    frame_at: usize,
}

impl TapWrite {
    /// The virtio header to write in front of the frame.
    pub fn vnet(&self) -> &[u8; VNET_HDR_LEN] {
        self.buf
            .first_chunk::<VNET_HDR_LEN>()
            .expect("a TapWrite holds a checked message")
    }

    /// The Ethernet frame.
    pub fn frame(&self) -> &[u8] {
        self.buf.get(self.frame_at..).unwrap_or(&[])
    }
}

/// The data plane's own state.
#[derive(Debug)]
pub(crate) struct DataPlane {
    /// Largest frame carried without GSO.
    max_frame: usize,
    /// Our TAP's MAC (never answered for: our kernel knows its own).
    mac: Mac,
    /// The overlay's forwarding decisions for the frame at hand.
    sends: Vec<overlay::FrameSend>,
    /// Frames forwarded on (flood, routed) and [`Node::handle_frame`]
    /// input live here, laid out like a TAP read buffer.
    buf: Vec<u8>,
    to_tap: VecDeque<TapWrite>,
    /// Frames dropped before a session was known (no link, oversize).
    pub(crate) local_drops: Drops,
    /// ARP requests and neighbour solicitations answered here or flooded.
    pub(crate) arp_nd: ArpNdCounters,
    /// Addresses a question missed for, when their lookup started.
    asked: HashMap<IpAddr, Instant>,
    /// Pieces of a cut TCP super-frame are built here (laid out like a TAP
    /// read buffer).
    cut_buf: Vec<u8>,
}

impl DataPlane {
    pub(crate) fn new(mtu: u16, mac: Mac) -> DataPlane {
        DataPlane {
            max_frame: usize::from(mtu) + FRAME_OVERHEAD,
            mac,
            sends: Vec::new(),
            buf: vec![0u8; TAP_READ_ROOM],
            to_tap: VecDeque::new(),
            local_drops: Drops::new(),
            arp_nd: ArpNdCounters::default(),
            asked: HashMap::new(),
            cut_buf: vec![0u8; TAP_READ_ROOM],
        }
    }

    /// Queues a frame the node built for its own TAP (no virtio offload).
    fn queue_own_frame(&mut self, frame: &[u8]) -> bool {
        if self.to_tap.len() >= MAX_TAP_QUEUE {
            self.drop_local("tap_queue");
            return false;
        }
        let mut buf = vec![0u8; VNET_HDR_LEN];
        buf.extend_from_slice(frame);
        self.to_tap.push_back(TapWrite {
            session: None,
            buf,
            frame_at: VNET_HDR_LEN,
        });
        true
    }

    /// Whether to look `ip` up after a missed question at `now` (and note
    /// it): not within [`REASK`] of the last lookup, and only while fewer
    /// than [`MAX_ASKED`] addresses are being looked up.
    fn ask(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self
            .asked
            .get(&ip)
            .is_some_and(|t| now.saturating_duration_since(*t) < REASK)
        {
            return false;
        }
        if self.asked.len() >= MAX_ASKED {
            self.asked
                .retain(|_, t| now.saturating_duration_since(*t) < REASK);
            if self.asked.len() >= MAX_ASKED {
                return false;
            }
        }
        self.asked.insert(ip, now);
        true
    }

    fn drop_local(&mut self, reason: &'static str) {
        *self.local_drops.entry(reason).or_insert(0) += 1;
    }
}

/// The source policy a node's certificate gives its frames
/// (docs/overlay.md "Frames bound to their sender"): the auto MAC of its
/// key, or any MAC for a bridge; its IP prefixes when it lists any.
/// Set on the overlay when the node is admitted; it replaces what the
/// node's `Hello` announces.
pub fn source_policy(cert: &NodeCert) -> overlay::SourcePolicy {
    let body = cert.body();
    let macs = match body.mac {
        membership::MacPolicy::Auto => {
            overlay::MacPolicy::Only(vec![overlay::auto_mac(&body.node_key)])
        }
        membership::MacPolicy::Any => overlay::MacPolicy::Any,
    };
    let ips = (!body.ips.is_empty()).then(|| {
        body.ips
            .iter()
            .filter_map(|n| overlay::IpPrefix::new(n.addr(), n.prefix()))
            .collect()
    });
    overlay::SourcePolicy { macs, ips }
}

/// The drop-counter label of an overlay drop reason (also the `reason`
/// label of `ringlan_drops_total`).
fn drop_label(r: DropReason) -> &'static str {
    r.label()
}

impl Node {
    /// A TAP read of `n` bytes (virtio header and frame) sits at
    /// `buf[TAP_READ_OFFSET..TAP_READ_OFFSET + n]`; `buf` is the runtime's
    /// read buffer of [`TAP_READ_ROOM`] bytes. The head room in front of
    /// it is overwritten. A frame that leaves as a message of several
    /// fragments takes `buf`'s storage with it (no copy; the endpoint's
    /// `send_owned`), and `buf` then holds another buffer of the same
    /// length for the next read.
    pub fn handle_tap_read(&mut self, now: Instant, buf: &mut Vec<u8>, n: usize) {
        let Some(len) = n.checked_sub(VNET_HDR_LEN) else {
            self.data.drop_local("short");
            return;
        };
        let Some(vnet) = buf.get(TAP_READ_OFFSET..ETH) else {
            self.data.drop_local("short");
            return;
        };
        let vnet: [u8; VNET_HDR_LEN] = vnet
            .try_into()
            .expect("ETH - TAP_READ_OFFSET == VNET_HDR_LEN");
        if let Err(r) = VnetHdr::parse(&vnet).check(len, self.data.max_frame) {
            self.data.drop_local(r.as_str());
            return;
        }
        let Some(frame) = buf.get(ETH..ETH + len) else {
            self.data.drop_local("short");
            return;
        };
        // Our own source IPs go into our member record (`directory`).
        self.learn_from_tap(now, frame);
        if self.answer_neighbour(now, frame) {
            return;
        }
        let mut sends = std::mem::take(&mut self.data.sends);
        self.overlay.frame_from_tap(now, frame, &mut sends);
        let last = sends.len().saturating_sub(1);
        for (k, s) in sends.iter().enumerate() {
            self.send_frame(now, buf, s, len, k == last);
        }
        sends.clear();
        self.data.sends = sends;
        self.process_overlay(now);
    }

    /// An ARP request or neighbour solicitation from our TAP for an
    /// address the member cache binds, fresh, to another member's MAC:
    /// the answer goes to our TAP and the question nowhere (true). Any
    /// other question is counted as flooded and goes on to the switch
    /// (false), as does every other frame; without a fresh record for the
    /// address, its `ip:` record is fetched (at most once per [`REASK`]),
    /// so the kernel's next try is answered here.
    fn answer_neighbour(&mut self, now: Instant, frame: &[u8]) -> bool {
        let Some(q) = neighbour::question(frame) else {
            return false;
        };
        let own = self.data.mac;
        let key = MemberKey::Ip(q.target());
        let cached = self.cached_member(now, &key);
        let fresh = cached.as_ref().is_some_and(|(_, f)| *f);
        let member = cached
            .filter(|(m, fresh)| *fresh && m.body.mac != own && m.body.mac != q.asker())
            .map(|(m, _)| (m.body.mac, m.body.node_id));
        if !fresh && self.data.ask(now, q.target()) {
            // Flooded this time; the kernel asks again within a second or
            // so, and by then the record may be here (one get).
            self.resolve(now, key);
        }
        // A full TAP queue: let the owner answer.
        let answered = member.is_some_and(|(mac, _)| self.data.queue_own_frame(&q.reply(mac)));
        if let (true, Some((mac, node))) = (answered, member) {
            // The asker's frames to `mac` follow: to the member, not a flood.
            self.overlay.learn_mac(now, mac, node);
        }
        let c = &mut self.data.arp_nd;
        let (local, flooded) = match q {
            Question::Arp { .. } => (&mut c.arp_answered_locally, &mut c.arp_flooded),
            Question::Ns { .. } => (&mut c.nd_answered_locally, &mut c.nd_flooded),
        };
        *if answered { local } else { flooded } += 1;
        answered
    }

    /// An Ethernet frame from the TAP without a virtio header (simulators,
    /// tests): copied into the node's own buffer, then as
    /// [`Node::handle_tap_read`].
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        let mut buf = std::mem::take(&mut self.data.buf);
        let n = VNET_HDR_LEN + frame.len();
        match buf.get_mut(TAP_READ_OFFSET..TAP_READ_OFFSET + n) {
            Some(dst) => {
                dst[..VNET_HDR_LEN].fill(0);
                dst[VNET_HDR_LEN..].copy_from_slice(frame);
                self.handle_tap_read(now, &mut buf, n);
            }
            None => self.data.drop_local("oversize"),
        }
        self.data.buf = buf;
    }

    /// The next frame for the TAP.
    pub fn poll_tap(&mut self) -> Option<TapWrite> {
        self.data.to_tap.pop_front()
    }

    /// A written (or abandoned) TAP frame's buffer goes back to its
    /// session's pool.
    pub fn recycle(&mut self, w: TapWrite) {
        if let Some(s) = w.session {
            self.endpoint.recycle(s, w.buf);
        }
    }

    /// Send the frame at `buf[ETH..ETH + len]` (virtio header in front of
    /// it) as one frame-flow message: the header of `s` is written in
    /// place in front of the virtio header, which moves forward by it.
    /// The `last` send of a frame may take `buf`'s storage
    /// ([`Node::handle_tap_read`]).
    fn send_frame(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        s: &overlay::FrameSend,
        len: usize,
        last: bool,
    ) {
        let Some((sid, peer)) = self.peers.current_mut(s.to) else {
            self.data.drop_local("no_session");
            return;
        };
        // A session that loses frames often gets TCP super-frames cut into
        // pieces of one fragment each (CutRule, vnet::TcpCut).
        let lost = self.endpoint.frame_loss(sid);
        if peer.cut.cut(now, peer.tx.bytes, lost) {
            let flow = peer.frames;
            let vnet = buf
                .get(TAP_READ_OFFSET..ETH)
                .and_then(|b| <&[u8; VNET_HDR_LEN]>::try_from(b).ok())
                .map(VnetHdr::parse);
            let room = self
                .endpoint
                .max_unfragmented(sid, flow, Reliability::NoRetransmit);
            if let (Some(vnet), Some(room)) = (vnet, room) {
                let max_piece = room.saturating_sub(VNET_HDR_LEN + s.header.len());
                let frame = &buf[ETH..ETH + len];
                if let Some(cut) = TcpCut::plan(&vnet, frame, max_piece) {
                    peer.cut.super_frames_cut += 1;
                    let mut piece = std::mem::take(&mut self.data.cut_buf);
                    for k in 0..cut.count() {
                        let n = cut.piece_len(k);
                        let h = cut.write_piece(&vnet, frame, k, &mut piece[ETH..ETH + n]);
                        let mut v = [0u8; VNET_HDR_LEN];
                        h.emit(&mut v);
                        piece[TAP_READ_OFFSET..ETH].copy_from_slice(&v);
                        self.send_message(now, &mut piece, s, n, false);
                    }
                    self.data.cut_buf = piece;
                    return;
                }
            }
        }
        self.send_message(now, buf, s, len, last);
    }

    /// Queue one frame laid out in `buf` like a TAP read (virtio header
    /// at [`TAP_READ_OFFSET`], `len` frame bytes after it) on the frame
    /// flow to `s.to`. With `give`, a message of several fragments takes
    /// `buf`'s storage instead of a copy (`Endpoint::send_owned`), and
    /// `buf` holds another buffer of its length after.
    fn send_message(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        s: &overlay::FrameSend,
        len: usize,
        give: bool,
    ) {
        let Some((sid, peer)) = self.peers.current_mut(s.to) else {
            self.data.drop_local("no_session");
            return;
        };
        let mut hdr = [0u8; TAP_READ_OFFSET];
        let Ok(h) = s.header.encode(&mut hdr) else {
            return;
        };
        // h <= TAP_READ_OFFSET, so the message starts at
        // TAP_READ_OFFSET - h >= 0: [vnet | overlay header | frame].
        let start = TAP_READ_OFFSET - h;
        buf.copy_within(TAP_READ_OFFSET..ETH, start);
        buf[start + VNET_HDR_LEN..ETH].copy_from_slice(&hdr[..h]);
        let flow = match buf.get(ETH..ETH + len) {
            Some(frame) if crate::sparse::is_sparse(frame) => peer.sparse,
            _ => peer.frames,
        };
        let sent = if give {
            self.endpoint.send_owned(
                now,
                sid,
                flow,
                buf,
                start..ETH + len,
                Reliability::NoRetransmit,
            )
        } else {
            let msg = &buf[start..ETH + len];
            self.endpoint
                .send(now, sid, flow, msg, Reliability::NoRetransmit)
        };
        match sent {
            Ok(()) => {
                peer.tx.frames += 1;
                peer.tx.bytes += len as u64;
            }
            Err(e) => {
                tracing::trace!(error = %e, "frame not queued");
                peer.drop_frame("send_queue");
            }
        }
        // Restore the virtio header where the next send expects it (after
        // the last send there is none, and `buf` may be another buffer).
        if !give {
            buf.copy_within(start..start + VNET_HDR_LEN, TAP_READ_OFFSET);
        }
    }

    /// A frame-flow message from `from` on `session`.
    pub(crate) fn frame_from_peer(
        &mut self,
        now: Instant,
        session: SessionId,
        from: NodeId,
        msg: Vec<u8>,
    ) {
        let max = self.data.max_frame;
        let mut sends = std::mem::take(&mut self.data.sends);
        let verdict = match msg.split_first_chunk::<VNET_HDR_LEN>() {
            None => Err("short"),
            Some((vnet, rest)) => match self.overlay.frame_from_peer(now, from, rest, &mut sends) {
                Err(r) => Err(drop_label(r)),
                Ok(r) => match VnetHdr::parse(vnet).check(r.frame.len(), max) {
                    Err(c) => Err(c.as_str()),
                    Ok(()) => Ok((msg.len() - r.frame.len(), r.to_tap)),
                },
            },
        };
        let Some(p) = self.peers.get_mut(session) else {
            sends.clear();
            self.data.sends = sends;
            self.endpoint.recycle(session, msg);
            return;
        };
        let (frame_at, to_tap) = match verdict {
            Ok(v) => v,
            Err(reason) => {
                p.drop_frame(reason);
                sends.clear();
                self.data.sends = sends;
                self.endpoint.recycle(session, msg);
                return;
            }
        };
        let n = msg.len() - frame_at;
        if !sends.is_empty() {
            // Bounded-flood or routed forwards of the same frame, from
            // our own buffer laid out like a TAP read.
            let mut buf = std::mem::take(&mut self.data.buf);
            buf[TAP_READ_OFFSET..ETH].copy_from_slice(&msg[..VNET_HDR_LEN]);
            buf[ETH..ETH + n].copy_from_slice(&msg[frame_at..]);
            let last = sends.len() - 1;
            for (k, s) in sends.iter().enumerate() {
                self.send_frame(now, &mut buf, s, n, k == last);
            }
            self.data.buf = buf;
            sends.clear();
        }
        self.data.sends = sends;
        let Some(p) = self.peers.get_mut(session) else {
            self.endpoint.recycle(session, msg);
            return;
        };
        if !to_tap {
            self.endpoint.recycle(session, msg);
            return;
        }
        // A TCP segment that continues the one before it in the queue joins
        // it as a GSO super-frame (vnet::merge_tcp): one TAP write instead
        // of many when the far end cut its super-frames.
        if let Some(back) = self.data.to_tap.back_mut() {
            let vnet = msg.first_chunk::<VNET_HDR_LEN>().map(VnetHdr::parse);
            if back.session == Some(session)
                && vnet.is_some_and(|v| {
                    crate::vnet::merge_tcp(&mut back.buf, back.frame_at, &v, &msg[frame_at..])
                })
            {
                p.rx.frames += 1;
                p.rx.bytes += n as u64;
                self.endpoint.recycle(session, msg);
                return;
            }
        }
        if self.data.to_tap.len() >= MAX_TAP_QUEUE {
            p.drop_frame("tap_queue");
            self.endpoint.recycle(session, msg);
            return;
        }
        p.rx.frames += 1;
        p.rx.bytes += n as u64;
        self.data.to_tap.push_back(TapWrite {
            session: Some(session),
            buf: msg,
            frame_at,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::cert::tests::{body, ca};
    use crate::membership::SignedBody;
    use overlay::{DropReason, Mac};

    /// Feeds `rule` 64 KiB frames, one every 100 us (about 5 Gbit/s), for
    /// `bytes`, with `lost_per` lost bytes counted for every `per` bytes
    /// sent (rounded down, as a loss counter grows by whole fragments: a
    /// fragment of 1,448 bytes each time the share reaches it). Returns
    /// the time and how many frames were cut.
    fn feed(
        rule: &mut CutRule,
        mut now: Instant,
        sent: &mut u64,
        lost: &mut u64,
        bytes: u64,
        (lost_per, per): (u64, u64),
    ) -> (Instant, u64) {
        const FRAME: u64 = 64 << 10;
        const FRAGMENT: u64 = 1_448;
        let mut cut = 0;
        let end = *sent + bytes;
        let mut owed = 0u64;
        while *sent < end {
            *sent += FRAME;
            owed += FRAME * lost_per;
            while owed >= FRAGMENT * per {
                owed -= FRAGMENT * per;
                *lost += FRAGMENT;
            }
            now += std::time::Duration::from_micros(100);
            if rule.cut(now, *sent, *lost) {
                cut += 1;
            }
        }
        (now, cut)
    }

    #[test]
    fn rare_frame_loss_keeps_super_frames_whole() {
        // 1 byte in 10,000 lost (0.01 %), a fifth of the threshold: over
        // 4 GiB not one frame is cut. A single loss alone used to cut for
        // ten seconds.
        let (mut rule, mut sent, mut lost) = (CutRule::default(), 0, 0);
        let (_, cut) = feed(
            &mut rule,
            Instant::now(),
            &mut sent,
            &mut lost,
            4 << 30,
            (1, 10_000),
        );
        assert!(lost > 0);
        assert_eq!(cut, 0);
    }

    #[test]
    fn frequent_frame_loss_cuts_until_it_stops_for_the_hold() {
        let (mut rule, mut sent, mut lost) = (CutRule::default(), 0, 0);
        let t0 = Instant::now();
        // 0.1 % lost, twice the threshold: a window's worth of lost bytes
        // is reached half way through the first window, and cutting starts
        // there.
        let frames = CUT_WINDOW / (64 << 10);
        let (now, cut) = feed(&mut rule, t0, &mut sent, &mut lost, CUT_WINDOW, (1, 1_000));
        assert!(rule.cut(now, sent, lost));
        assert!(
            cut > frames * 2 / 5 && cut < frames * 3 / 5,
            "{cut} of {frames} cut"
        );
        let (now, cut) = feed(
            &mut rule,
            now,
            &mut sent,
            &mut lost,
            4 * CUT_WINDOW,
            (1, 1_000),
        );
        assert_eq!(cut, 4 * frames, "every frame cut while the loss lasts");
        // The path turns clean: frames are still cut for CUT_HOLD after the
        // last lossy window closed, then no more.
        let lossy_until = now + CUT_HOLD;
        let (now, _) = feed(&mut rule, now, &mut sent, &mut lost, CUT_WINDOW, (0, 1));
        assert!(now < lossy_until && rule.cut(now, sent, lost));
        let later = lossy_until + std::time::Duration::from_millis(1);
        assert!(!rule.cut(later, sent + 1, lost));
        // Loss a little under the threshold (0.04 %) does not start it again.
        let (_, cut) = feed(
            &mut rule,
            later,
            &mut sent,
            &mut lost,
            64 * CUT_WINDOW,
            (4, 10_000),
        );
        assert_eq!(cut, 0);
    }

    #[test]
    fn a_window_worth_of_loss_cuts_at_once() {
        // A burst: a dozen fragments lost within the first megabyte cuts
        // without waiting for the window to fill.
        let (mut rule, now) = (CutRule::default(), Instant::now());
        assert!(!rule.cut(now, 1 << 20, 11 * 1_448));
        assert!(rule.cut(now, 1 << 20, 12 * 1_448));
    }

    #[test]
    fn counters_that_start_over_neither_underflow_nor_cut() {
        let (mut rule, now) = (CutRule::default(), Instant::now());
        assert!(!rule.cut(now, CUT_WINDOW - 1, 0));
        // Counters back near zero (they do not, one rule per session; the
        // rule must not care): no underflow, no cut from the old figures,
        // and a window's worth of loss still cuts.
        assert!(!rule.cut(now, 10, 0));
        assert!(!rule.cut(now, CUT_WINDOW, 1_448));
        assert!(rule.cut(now, CUT_WINDOW + 10, 1_448 + 12 * 1_448));
    }

    fn arp(src: Mac, ip: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0; 10]);
        f
    }

    #[test]
    fn a_certificate_binds_the_auto_mac_and_its_prefixes() {
        let b = body();
        let auto = overlay::auto_mac(&b.node_key);
        let cert = b.clone().sign(&ca()).unwrap();
        let p = source_policy(&cert);
        assert_eq!(p.macs, overlay::MacPolicy::Only(vec![auto]));
        assert_eq!(p.check(auto, &arp(auto, [10, 77, 0, 2])), Ok(()));
        assert_eq!(
            p.check(auto, &arp(auto, [10, 77, 0, 1])),
            Err(DropReason::ForgedIp)
        );
        let other = Mac([2, 0, 0, 0, 0, 9]);
        assert_eq!(
            p.check(other, &arp(other, [10, 77, 0, 2])),
            Err(DropReason::ForgedMac)
        );
        // A bridge certificate without prefixes: any unicast MAC, any IP.
        let mut b = body();
        b.mac = membership::MacPolicy::Any;
        b.ips.clear();
        let p = source_policy(&b.sign(&ca()).unwrap());
        assert!(p.is_bridge() && p.ips.is_none());
        assert_eq!(p.check(other, &arp(other, [192, 0, 2, 1])), Ok(()));
    }
}
