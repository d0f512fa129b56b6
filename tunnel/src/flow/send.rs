//! Sending flows (RFC 7016 3.6.2).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::codec::{self, encode_startup_options, vlu_len, CHUNK_HEADER};
use super::codel::{self, Codel};
use super::{
    ChunkSink, FlowEvent, FlowId, FlowSet, FlowStats, OpenError, Pool, Reliability, SendError,
    TimeoutLoss, SEND_LINGER,
};
use crate::wire::chunk::{BitmapAckIter, NextUserData, RangeAckIter, UserData};
use crate::wire::{Chunk, FragmentControl};

/// Sequence numbers beyond `NEXT_SN` that [`fragment_size`] allows for:
/// the size it gives holds for every fragment of a message queued now and
/// for messages queued after it until this many more sequence numbers
/// were assigned (or the message's length, when larger), so
/// [`FlowSet::max_unfragmented`] stays true for the pieces of a TCP
/// super-frame cut to it.
const SIZING_HORIZON: u64 = 1 << 16;

/// Data bytes per fragment of a `len`-byte message queued now on `f`, for
/// packets with `space` bytes of chunks. RFC 7016 3.6.2.2: a fragment must
/// fit a packet with a maximum-size User Data header and the
/// STARTUP_OPTIONS. The header's variable fields are bounded by what they
/// can be when sent: the sequence number by `NEXT_SN` plus the message's
/// fragments (at most one per byte, or one), and the fsnOffset by that
/// number minus the current front of SEND_QUEUE plus one, because the FSN
/// is never below the front's sequence number minus one (3.6.2.3) and the
/// front only moves forward. On a 1500-byte IPv4 path (1439 bytes of
/// chunks) this gives 1428 data bytes per fragment until sequence number
/// 2^21 - 2^16, 1427 after it, where the worst-case bound of RFC 7016
/// (ten-byte VLUs) gave 1414.
fn fragment_size(space: usize, f: &SendFlow, len: usize) -> usize {
    let horizon = SIZING_HORIZON.max(u64::try_from(len).unwrap_or(u64::MAX));
    let last_sn = f.next_sn.saturating_add(horizon);
    let max_offset = last_sn.saturating_sub(f.front_sn()).saturating_add(1);
    let header = codec::user_data_len(f.id, last_sn, max_offset, f.startup_options.len(), 0);
    space.saturating_sub(header).max(1)
}

/// The chunk space fragments of a message with reliability `rel` are
/// sized from: NoRetransmit fragments are never sent again, so they may
/// use the current path MTU; the others keep their size for
/// retransmission and use the base path MTU's, which fits every path.
fn chunk_space(cfg: &super::FlowConfig, path_space: usize, rel: Reliability) -> usize {
    match rel {
        Reliability::NoRetransmit => path_space,
        Reliability::Reliable | Reliability::Deadline(_) => cfg.max_chunk_space.min(path_space),
    }
}

/// RFC 7016 3.6.2: the initial RX_BUFFER_SIZE.
const INITIAL_RX_BUFFER: u64 = 65536;
/// RFC 7016 3.6.2.5: a fragment is lost after this many negative
/// acknowledgements.
const NAK_LOSS: u8 = 3;
/// RFC 7016 3.6.2.9.1: probe period bounds.
const PROBE_MIN: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(60);
/// RFC 7016 2.3.11.1.1: metadata SHOULD NOT exceed 512 bytes.
const MAX_METADATA: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SendState {
    Open,
    Closing,
    CompleteLinger(Instant),
}

/// Where a queued fragment's bytes are.
#[derive(Debug)]
enum Payload {
    /// Copied into a buffer of its own ([`FlowSet::send`]).
    Copied(Vec<u8>),
    /// `len` bytes at `start` of the flow's held message `msg`
    /// ([`FlowSet::send_owned`]).
    Held { msg: u64, start: usize, len: usize },
    /// A NoRetransmit fragment sent: its bytes are never needed again and
    /// their buffer went back at once, but until it is acknowledged or
    /// lost its `len` still counts in the send queue's bytes.
    Sent(usize),
    /// Freed: acknowledged, abandoned, or an empty fragment.
    Empty,
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Copied(v) => v.len(),
            Payload::Held { len, .. } | Payload::Sent(len) => *len,
            Payload::Empty => 0,
        }
    }
}

/// A message handed over whole ([`FlowSet::send_owned`]): its fragments
/// are ranges of `buf`, which goes back to the pool when the last of them
/// is freed.
#[derive(Debug)]
struct HeldMsg {
    buf: Vec<u8>,
    /// Fragments not yet freed.
    refs: usize,
}

/// A flow's held messages in the order they were queued; released ones
/// stay as empty placeholders until they reach the front, so a message's
/// place is its id minus `front`. Never longer than the flow's queue: a
/// held message has at least one entry there until it is released.
#[derive(Debug, Default)]
struct Held {
    msgs: VecDeque<HeldMsg>,
    /// Id of `msgs[0]`.
    front: u64,
}

impl Held {
    fn push(&mut self, buf: Vec<u8>, refs: usize) -> u64 {
        let id = self.front + self.msgs.len() as u64;
        self.msgs.push_back(HeldMsg { buf, refs });
        id
    }

    /// Where `msg` is in `msgs`.
    fn slot(&self, msg: u64) -> Option<usize> {
        usize::try_from(msg.checked_sub(self.front)?).ok()
    }

    fn get(&self, msg: u64) -> Option<&HeldMsg> {
        self.msgs.get(self.slot(msg)?)
    }

    fn bytes<'a>(&'a self, p: &'a Payload) -> &'a [u8] {
        match p {
            Payload::Copied(v) => v,
            Payload::Held { msg, start, len } => self
                .get(*msg)
                .and_then(|m| m.buf.get(*start..start.saturating_add(*len)))
                .unwrap_or(&[]),
            Payload::Sent(_) | Payload::Empty => &[],
        }
    }

    /// One fragment of `msg` freed; the last one gives its buffer back.
    fn release(&mut self, msg: u64, pool: &mut Pool) {
        let Some(m) = self.slot(msg).and_then(|i| self.msgs.get_mut(i)) else {
            return;
        };
        m.refs = m.refs.saturating_sub(1);
        if m.refs == 0 {
            pool.give_frame(std::mem::take(&mut m.buf));
        }
        while self.msgs.front().is_some_and(|m| m.refs == 0) {
            self.msgs.pop_front();
            self.front += 1;
        }
    }
}

/// One SEND_QUEUE entry (RFC 7016 3.6.2).
#[derive(Debug)]
pub(super) struct SendEntry {
    sn: u64,
    data: Payload,
    fra: FragmentControl,
    deadline: Option<Instant>,
    /// When a NoRetransmit fragment was sent (its delay to the
    /// acknowledgement, [`codel::PathDelay`]).
    sent_at: Option<Instant>,
    no_retransmit: bool,
    abandoned: bool,
    sent_abandoned: bool,
    ever_sent: bool,
    in_flight: bool,
    /// Acknowledged: logically removed from SEND_QUEUE; kept as a
    /// placeholder until it reaches the front so that queue index =
    /// sequence number - front sequence number.
    acked: bool,
    nak_count: u8,
    transmit_size: usize,
    tsn: u64,
    /// TSN of the first transmission if that was of live data: such first
    /// transmissions go out in sequence order, so it grows along the queue.
    first_tsn: Option<u64>,
}

#[derive(Debug)]
pub(super) struct SendFlow {
    id: u64,
    pub(super) state: SendState,
    startup_options: Vec<u8>,
    queue: VecDeque<SendEntry>,
    /// Messages handed over whole whose fragments are in `queue`.
    held: Held,
    /// Entries in `queue` not acknowledged.
    live: usize,
    outstanding: usize,
    rx_buffer_size: u64,
    next_sn: u64,
    final_sn: Option<u64>,
    exception: bool,
    /// No entry below this sequence number (other than the front) can be
    /// eligible to send.
    scan_sn: u64,
    probe_at: Option<Instant>,
    probe_period: Duration,
    earliest_deadline: Option<Instant>,
    pub(super) time_critical: bool,
    /// The late-frame drop of this flow's NoRetransmit messages.
    codel: Codel,
    /// Fragment size of the last message queued when it took more than
    /// one fragment, else 0 ([`fill_tail`]).
    last_frag: usize,
}

/// Acknowledgement payload beyond cumAck.
pub(super) enum AckBody<'a> {
    Bitmap(&'a [u8]),
    Ranges(&'a [u8]),
}

impl SendFlow {
    fn front_sn(&self) -> u64 {
        self.queue.front().map_or(self.next_sn, |e| e.sn)
    }

    fn index(&self, sn: u64) -> Option<usize> {
        let i = usize::try_from(sn.checked_sub(self.front_sn())?).ok()?;
        (i < self.queue.len()).then_some(i)
    }

    pub(super) fn has_queued(&self) -> bool {
        self.live > 0
    }

    pub(super) fn next_timer(&self) -> Option<Instant> {
        let mut t = self.earliest_deadline;
        if self.probe_wanted() {
            if let Some(p) = self.probe_at {
                t = Some(t.map_or(p, |t| t.min(p)));
            }
        }
        if let SendState::CompleteLinger(since) = self.state {
            let end = since + SEND_LINGER;
            t = Some(t.map_or(end, |t| t.min(end)));
        }
        t
    }

    pub(super) fn linger_over(&self, now: Instant) -> bool {
        matches!(self.state, SendState::CompleteLinger(since) if now >= since + SEND_LINGER)
    }

    /// Suspended (RFC 7016 3.6.2.9.1) with something to send.
    fn probe_wanted(&self) -> bool {
        self.rx_buffer_size == 0 && !self.exception && self.live > 0
    }

    pub(super) fn probe_due(&self, now: Instant) -> bool {
        self.probe_wanted() && self.probe_at.is_some_and(|t| t <= now)
    }

    fn window_open(&self) -> bool {
        self.rx_buffer_size > self.outstanding as u64 || self.exception
    }

    /// RFC 7016 3.6.2.3: eligible to send.
    fn eligible(&self, i: usize) -> bool {
        self.queue.get(i).is_some_and(|e| {
            !e.in_flight && !e.acked && (!e.abandoned || i == 0 || Some(e.sn) == self.final_sn)
        })
    }

    fn find_eligible(&self) -> Option<usize> {
        if self.eligible(0) {
            return Some(0);
        }
        if self.scan_sn >= self.next_sn {
            return None;
        }
        let start = self.index(self.scan_sn).unwrap_or(1).max(1);
        (start..self.queue.len()).find(|&i| self.eligible(i))
    }

    /// Whether the entry after `prev`, the last fragment written to the
    /// packet being built, is the first fragment of a message cut to fill
    /// that packet ([`fill_tail`]) and eligible: it may overshoot the
    /// budget as the packet's last chunk may, so that a budget spent on
    /// the message before does not leave two short packets (this one and
    /// the next, holding only the filler).
    fn fills_packet(&self, prev: Option<u64>) -> bool {
        let Some(p) = prev else {
            return false;
        };
        let (Some(i), Some(j)) = (self.index(p), self.index(p + 1)) else {
            return false;
        };
        self.queue
            .get(i)
            .is_some_and(|e| e.fra == FragmentControl::End)
            && self
                .queue
                .get(j)
                .is_some_and(|e| e.fra == FragmentControl::Begin)
            && self.eligible(j)
    }

    /// The session's path changed: a dropping episode was the old path's.
    pub(super) fn path_changed(&mut self) {
        self.codel = Codel::default();
    }

    fn ready(&self) -> bool {
        self.window_open() && self.find_eligible().is_some()
    }

    /// Whether the message whose first fragment is at queue index `i`,
    /// about to go out, is dropped instead because frames stand in a queue
    /// ([`codel`]): NoRetransmit messages not begun only.
    fn late(&mut self, i: usize, late: &Late) -> codel::Verdict {
        let Some(e) = self.queue.get(i) else {
            return codel::Verdict::Send;
        };
        if !e.no_retransmit
            || e.ever_sent
            || e.abandoned
            || !matches!(e.fra, FragmentControl::Whole | FragmentControl::Begin)
        {
            return codel::Verdict::Send;
        }
        self.codel.verdict(
            late.now,
            late.standing,
            late.interval,
            codel::target(late.interval),
        )
    }

    fn free_data(e: &mut SendEntry, held: &mut Held, pool: &mut Pool, qbytes: &mut usize) {
        *qbytes = qbytes.saturating_sub(e.data.len());
        Self::give_back(std::mem::replace(&mut e.data, Payload::Empty), held, pool);
    }

    /// The buffer behind `p` goes back: its own to the pool, a held
    /// message's share to the message.
    fn give_back(p: Payload, held: &mut Held, pool: &mut Pool) {
        match p {
            Payload::Copied(v) => pool.give(v),
            Payload::Held { msg, .. } => held.release(msg, pool),
            Payload::Sent(_) | Payload::Empty => {}
        }
    }

    /// A NoRetransmit fragment was sent: give its buffer back now (a
    /// handed-over message's once its last fragment is out) instead of
    /// after the acknowledgement, which keeps the buffers in use to those
    /// not yet sent.
    fn release_sent(e: &mut SendEntry, held: &mut Held, pool: &mut Pool) {
        let len = e.data.len();
        Self::give_back(
            std::mem::replace(&mut e.data, Payload::Sent(len)),
            held,
            pool,
        );
    }

    /// RFC 7016 3.6.2.7: abandon every fragment of the message holding
    /// queue index `i`.
    fn abandon_message(
        &mut self,
        i: usize,
        pool: &mut Pool,
        qbytes: &mut usize,
        stats: &mut FlowStats,
    ) {
        let Some(e) = self.queue.get(i) else { return };
        if e.abandoned || e.acked {
            return;
        }
        let mut start = i;
        while start > 0
            && matches!(
                self.queue.get(start).map(|e| e.fra),
                Some(FragmentControl::Middle | FragmentControl::End)
            )
        {
            start -= 1;
        }
        let mut end = i;
        while end + 1 < self.queue.len()
            && matches!(
                self.queue.get(end).map(|e| e.fra),
                Some(FragmentControl::Begin | FragmentControl::Middle)
            )
        {
            end += 1;
        }
        for e in self.queue.range_mut(start..=end) {
            if !e.acked {
                e.abandoned = true;
                Self::free_data(e, &mut self.held, pool, qbytes);
            }
        }
        stats.messages_abandoned += 1;
    }

    /// Remove acknowledged placeholders from the front.
    fn pop_acked(&mut self) {
        while self.queue.front().is_some_and(|e| e.acked) {
            self.queue.pop_front();
        }
    }

    /// RFC 7016 3.6.2.3: trim abandoned messages from the front of the
    /// queue and find the Forward Sequence Number.
    fn trim_and_fsn(&mut self, pool: &mut Pool, qbytes: &mut usize) -> u64 {
        while self.live >= 2 {
            let Some(e) = self.queue.front_mut() else {
                break;
            };
            if e.in_flight || !e.abandoned {
                break;
            }
            Self::free_data(e, &mut self.held, pool, qbytes);
            self.queue.pop_front();
            self.live -= 1;
            self.pop_acked();
        }
        match self.queue.front() {
            None => self.next_sn - 1,
            Some(e) if !e.abandoned => e.sn - 1,
            Some(e) if e.in_flight && !e.sent_abandoned => e.sn - 1,
            Some(e) => e.sn,
        }
    }

    /// A fragment stops being in flight through loss (3.6.2.5, 3.6.2.6).
    /// Returns its TRANSMIT_SIZE and whether it belongs to a NoRetransmit
    /// message (never sent again).
    fn mark_lost(
        &mut self,
        i: usize,
        pool: &mut Pool,
        qbytes: &mut usize,
        stats: &mut FlowStats,
    ) -> (usize, bool) {
        let Some(e) = self.queue.get_mut(i) else {
            return (0, false);
        };
        e.in_flight = false;
        let size = e.transmit_size;
        let sn = e.sn;
        let no_retransmit = e.no_retransmit;
        let nr = e.no_retransmit && !e.abandoned;
        self.outstanding = self.outstanding.saturating_sub(size);
        self.scan_sn = self.scan_sn.min(sn);
        if nr {
            self.abandon_message(i, pool, qbytes, stats);
        }
        (size, no_retransmit)
    }

    /// Iterate the queue indices that may hold entries that were sent:
    /// stops at the first entry never sent and not abandoned (later ones
    /// cannot have been sent before it, 3.6.2.3).
    fn sent_prefix(&self) -> usize {
        self.queue
            .iter()
            .position(|e| !e.ever_sent && !e.abandoned && !e.acked)
            .unwrap_or(self.queue.len())
    }

    /// RFC 7016 3.6.2.11 steps 1-3.
    fn close(&mut self) {
        if self.state != SendState::Open {
            return;
        }
        self.state = SendState::Closing;
        let tail_unsent = self
            .queue
            .back()
            .is_some_and(|e| e.sn == self.next_sn - 1 && !e.ever_sent && !e.acked);
        if tail_unsent {
            self.final_sn = Some(self.next_sn - 1);
        } else {
            let sn = self.next_sn;
            self.next_sn += 1;
            self.queue.push_back(SendEntry {
                sn,
                data: Payload::Empty,
                fra: FragmentControl::Whole,
                deadline: None,
                sent_at: None,
                no_retransmit: false,
                abandoned: true,
                sent_abandoned: false,
                ever_sent: false,
                in_flight: false,
                acked: false,
                nak_count: 0,
                transmit_size: 0,
                tsn: 0,
                first_tsn: None,
            });
            self.live += 1;
            self.final_sn = Some(sn);
        }
        if let Some(f) = self.final_sn {
            self.scan_sn = self.scan_sn.min(f);
        }
    }
}

/// How an admitted message is cut ([`FlowSet::admit`]).
#[derive(Clone, Copy)]
struct Cut {
    /// Data bytes per fragment.
    frag: usize,
    /// Data bytes of the first fragment: `frag`, or less when it fills the
    /// packet of the message queued before ([`fill_tail`]).
    first: usize,
    deadline: Option<Instant>,
}

impl Cut {
    /// Fragments of a `len`-byte message (one when it is empty).
    fn count(&self, len: usize) -> usize {
        if len <= self.first {
            1
        } else {
            1 + (len - self.first).div_ceil(self.frag)
        }
    }

    /// Offset and length of fragment `k` of a `len`-byte message.
    fn piece(&self, k: usize, len: usize) -> (usize, usize) {
        let (start, size) = match k {
            0 => (0, self.first),
            _ => (self.first + (k - 1) * self.frag, self.frag),
        };
        let start = start.min(len);
        (start, size.min(len - start))
    }
}

/// Least data bytes worth a fragment of their own in [`fill_tail`].
const MIN_TAIL_FILL: usize = 64;

/// The first fragment's size for a `len`-byte message cut into
/// `frag`-byte fragments behind what `f` has queued. A message's last
/// fragment is short, and so is the packet that carries it, while every
/// packet before it is full: each message boundary would end a run of
/// equal-sized datagrams, which the driver sends as one UDP GSO message
/// and the receiving kernel hands over as one GRO message
/// (docs/dataplane.md "Packets filled across messages"). When the
/// previous message's last fragment is still unsent, the new message's
/// first fragment is cut to fill the rest of that packet as a Next User
/// Data chunk (RFC 7016 2.3.12), so the packets stay full across messages.
/// That packet's User Data chunk has the header `frag` was sized for
/// (`fragment_size` bounds it), so the two chunks together take no more
/// than one full fragment's. Only behind a last fragment of a message cut
/// the same way (its packet holds nothing before it, the fragment before
/// it having filled one) and for a message of more than one fragment.
///
/// Only NoRetransmit messages (the frames): reliable fragments are sized
/// to fit the base packet size, but a packet may hold more than one of
/// them up to the current path MTU, and cutting them differently puts
/// other pairs together, which a path that shrinks then loses and the
/// flow retransmits (`tunnel/tests/frames.rs`,
/// `a_path_mtu_fallback_abandons_larger_frames_and_frames_flow_on`).
fn fill_tail(f: &SendFlow, frag: usize, len: usize, rel: Reliability) -> usize {
    if rel != Reliability::NoRetransmit || len <= frag || f.last_frag != frag {
        return frag;
    }
    let Some(tail) = f.queue.back() else {
        return frag;
    };
    if tail.fra != FragmentControl::End || tail.ever_sent || tail.abandoned || !tail.no_retransmit {
        return frag;
    }
    let used = tail.data.len() + codec::next_user_data_len(0, 0);
    match frag.checked_sub(used) {
        Some(room) if room >= MIN_TAIL_FILL => room,
        _ => frag,
    }
}

/// What the late-frame drop needs to know while packets are built.
struct Late {
    now: Instant,
    interval: Duration,
    /// The path's standing delay ([`codel::PathDelay::standing`]); `None`
    /// when nothing was measured lately.
    standing: Option<Duration>,
}

impl Late {
    /// `f` has nothing to send: CoDel's episode ends unless the path
    /// still holds a standing queue.
    fn queue_empty(&self, f: &mut SendFlow) {
        if self
            .standing
            .is_none_or(|s| s < codel::target(self.interval))
        {
            f.codel.queue_empty();
        }
    }
}

enum Written {
    /// The flow has nothing more it may send now.
    Idle,
    /// The packet is full or the budget is spent.
    Full,
}

impl FlowSet {
    /// Open a sending flow (RFC 7016 3.6.2.1). `return_association` names
    /// an OPEN receiving flow this flow answers (2.3.11.1.2).
    pub fn open(
        &mut self,
        metadata: &[u8],
        return_association: Option<super::RecvFlowId>,
    ) -> Result<FlowId, OpenError> {
        if metadata.len() > MAX_METADATA {
            return Err(OpenError::MetadataTooLarge);
        }
        if self.send.len() >= self.cfg.max_send_flows {
            return Err(OpenError::TooManyFlows);
        }
        if let Some(r) = return_association {
            if !self.recv.get(&r.0).is_some_and(|f| f.is_open()) {
                return Err(OpenError::BadReturnAssociation);
            }
        }
        let id = self.next_flow_id;
        self.next_flow_id += 1;
        let mut startup_options = Vec::new();
        encode_startup_options(
            &mut startup_options,
            metadata,
            return_association.map(|r| r.0),
        );
        self.send.insert(
            id,
            SendFlow {
                id,
                state: SendState::Open,
                startup_options,
                queue: VecDeque::new(),
                held: Held::default(),
                live: 0,
                outstanding: 0,
                rx_buffer_size: INITIAL_RX_BUFFER,
                next_sn: 1,
                final_sn: None,
                exception: false,
                scan_sn: 1,
                probe_at: None,
                probe_period: PROBE_MIN,
                earliest_deadline: None,
                time_critical: false,
                codel: Codel::default(),
                last_frag: 0,
            },
        );
        Ok(FlowId(id))
    }

    /// Queue one message (RFC 7016 3.6.2.2), copied. A NoRetransmit
    /// message that does not fit the send queue is dropped and counted;
    /// other reliabilities get `QueueFull`.
    pub fn send(
        &mut self,
        now: Instant,
        flow: FlowId,
        data: &[u8],
        rel: Reliability,
    ) -> Result<(), SendError> {
        let Some(cut) = self.admit(now, flow, data.len(), rel)? else {
            return Ok(());
        };
        self.enqueue(flow, data.len(), cut, rel, |pool, start, len| {
            let piece = data.get(start..start + len).unwrap_or(&[]);
            let mut buf = pool.take_for(piece.len());
            buf.extend_from_slice(piece);
            Payload::Copied(buf)
        });
        Ok(())
    }

    /// Queue the message `buf[range]` as [`FlowSet::send`] does, without
    /// copying it when it takes more than one fragment: the flow then keeps
    /// `buf`'s storage, its fragments are ranges of it until they are sent
    /// and acknowledged or abandoned, and `buf` is left holding a buffer
    /// of the same length from the flow set's pool (contents unspecified)
    /// for the caller's next message. A message of one fragment is copied
    /// and `buf` left alone. A range outside `buf` is `TooLarge`.
    pub fn send_owned(
        &mut self,
        now: Instant,
        flow: FlowId,
        buf: &mut Vec<u8>,
        range: std::ops::Range<usize>,
        rel: Reliability,
    ) -> Result<(), SendError> {
        let Some(len) = buf.get(range.clone()).map(<[u8]>::len) else {
            return Err(SendError::TooLarge);
        };
        let Some(cut) = self.admit(now, flow, len, rel)? else {
            return Ok(());
        };
        if len <= cut.frag {
            return self.send(now, flow, &buf[range], rel);
        }
        // `admit` found the flow; looked up again before `buf` is taken.
        let Some(f) = self.send.get_mut(&flow.0) else {
            return Err(SendError::UnknownFlow);
        };
        if self.pool.frames.is_empty() {
            self.stats.frame_buffers_allocated += 1;
        }
        let whole = std::mem::replace(buf, self.pool.take_frame(buf.len()));
        let msg = f.held.push(whole, cut.count(len));
        self.enqueue(flow, len, cut, rel, |_, start, len| Payload::Held {
            msg,
            start: range.start + start,
            len,
        });
        Ok(())
    }

    /// The checks of [`FlowSet::send`] for a `len`-byte message: `None`
    /// when a NoRetransmit message is dropped for a full queue, else how
    /// to cut it.
    fn admit(
        &mut self,
        now: Instant,
        flow: FlowId,
        len: usize,
        rel: Reliability,
    ) -> Result<Option<Cut>, SendError> {
        let f = self.send.get_mut(&flow.0).ok_or(SendError::UnknownFlow)?;
        if f.state != SendState::Open {
            return Err(SendError::Closed);
        }
        if len > self.cfg.max_message_size {
            return Err(SendError::TooLarge);
        }
        if self.send_queue_bytes.saturating_add(len) > self.cfg.max_send_queue_bytes {
            if rel == Reliability::NoRetransmit {
                self.stats.drop_send_queue_full += 1;
                return Ok(None);
            }
            return Err(SendError::QueueFull);
        }
        // Cut at the rounded size (`cut_space`) unless that takes one more
        // fragment than the full size: a message that fits one fragment
        // goes whole.
        let full = fragment_size(chunk_space(&self.cfg, self.path_space, rel), f, len);
        let cut = fragment_size(chunk_space(&self.cfg, self.cut_space, rel), f, len);
        let frag = if len.div_ceil(cut) > len.div_ceil(full) {
            full
        } else {
            cut
        };
        let first = fill_tail(f, frag, len, rel);
        let deadline = match rel {
            Reliability::Deadline(d) => Some(now + d),
            _ => None,
        };
        Ok(Some(Cut {
            frag,
            first,
            deadline,
        }))
    }

    /// Append the fragments of an admitted `len`-byte message to `flow`'s
    /// queue; `piece(pool, start, len)` gives each one's bytes.
    fn enqueue(
        &mut self,
        flow: FlowId,
        len: usize,
        cut: Cut,
        rel: Reliability,
        mut piece: impl FnMut(&mut Pool, usize, usize) -> Payload,
    ) {
        let Some(f) = self.send.get_mut(&flow.0) else {
            return;
        };
        if let Some(d) = cut.deadline {
            f.earliest_deadline = Some(f.earliest_deadline.map_or(d, |e| e.min(d)));
            self.earliest_deadline = Some(self.earliest_deadline.map_or(d, |e| e.min(d)));
        }
        let n = cut.count(len);
        f.last_frag = if n > 1 { cut.frag } else { 0 };
        for k in 0..n {
            let fra = match (n, k) {
                (1, _) => FragmentControl::Whole,
                (_, 0) => FragmentControl::Begin,
                (_, k) if k + 1 == n => FragmentControl::End,
                _ => FragmentControl::Middle,
            };
            let (start, size) = cut.piece(k, len);
            let data = piece(&mut self.pool, start, size);
            let sn = f.next_sn;
            f.next_sn += 1;
            f.queue.push_back(SendEntry {
                sn,
                data,
                fra,
                deadline: cut.deadline,
                sent_at: None,
                no_retransmit: rel == Reliability::NoRetransmit,
                abandoned: false,
                sent_abandoned: false,
                ever_sent: false,
                in_flight: false,
                acked: false,
                nak_count: 0,
                transmit_size: 0,
                tsn: 0,
                first_tsn: None,
            });
            f.live += 1;
        }
        self.send_queue_bytes += len;
        self.stats.messages_queued += 1;
    }

    /// Close a sending flow (RFC 7016 3.6.2.11): the last sequence number
    /// is marked final; queued messages are still delivered.
    pub fn close(&mut self, flow: FlowId) {
        if let Some(f) = self.send.get_mut(&flow.0) {
            f.close();
        }
    }

    /// The largest message with reliability `rel` that `flow` sends as one
    /// fragment (one User Data chunk in one packet, 3.6.2.2) if queued
    /// now; `None` for an unknown flow. For NoRetransmit messages it
    /// follows the path MTU ([`FlowSet::set_path_chunk_space`]); for the
    /// others it is the base size's.
    pub fn max_unfragmented(&self, flow: FlowId, rel: Reliability) -> Option<usize> {
        let f = self.send.get(&flow.0)?;
        Some(fragment_size(
            chunk_space(&self.cfg, self.path_space, rel),
            f,
            0,
        ))
    }

    /// The transmission sequence number (3.6.2.5) of the last fragment
    /// sent, 0 before any.
    pub fn last_tsn(&self) -> u64 {
        self.next_tsn - 1
    }

    /// The highest transmission sequence number acknowledged so far.
    pub fn max_tsn_acked(&self) -> u64 {
        self.max_tsn_ack
    }

    /// Bytes queued on sending flows and not yet acknowledged or abandoned.
    pub fn queued_bytes(&self) -> usize {
        self.send_queue_bytes
    }

    /// OUTSTANDING_BYTES summed over all sending flows (3.6.2).
    pub fn outstanding_bytes(&self) -> usize {
        self.send.values().map(|f| f.outstanding).sum()
    }

    /// Whether some sending flow is ready to transmit (3.6.2.3), ignoring
    /// the congestion budget.
    pub fn has_data_to_send(&self) -> bool {
        self.send.values().any(SendFlow::ready)
    }

    pub(super) fn expire_deadlines(&mut self, now: Instant) {
        // Called for every packet built: most sessions queue no message
        // with a deadline, and then no flow needs a look.
        if self.earliest_deadline.is_none_or(|d| d > now) {
            return;
        }
        let mut earliest: Option<Instant> = None;
        for f in self.send.values_mut() {
            if f.earliest_deadline.is_some_and(|d| d <= now) {
                let mut next: Option<Instant> = None;
                let mut i = 0;
                while i < f.queue.len() {
                    let (dl, live) = match f.queue.get(i) {
                        Some(e) => (e.deadline, !e.abandoned && !e.acked),
                        None => break,
                    };
                    if let (Some(d), true) = (dl, live) {
                        if d <= now {
                            f.abandon_message(
                                i,
                                &mut self.pool,
                                &mut self.send_queue_bytes,
                                &mut self.stats,
                            );
                        } else {
                            next = Some(next.map_or(d, |n| n.min(d)));
                        }
                    }
                    i += 1;
                }
                f.earliest_deadline = next;
            }
            if let Some(d) = f.earliest_deadline {
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
        }
        self.earliest_deadline = earliest;
    }

    /// Fill `sink` with User Data for ready flows (RFC 7016 3.6.2.3),
    /// round-robin between flows, until the packet is full or
    /// `budget_bytes` of chunks have been written (the last chunk may
    /// overshoot the budget). Then piggyback ready acknowledgements
    /// (3.6.3.4.6). Returns the bytes of User Data chunks written.
    pub fn write_data(
        &mut self,
        now: Instant,
        sink: &mut impl ChunkSink,
        budget_bytes: usize,
    ) -> usize {
        self.expire_deadlines(now);
        let mut written = 0usize;
        let cursor = self.rr_cursor;
        let mut first_writer: Option<u64> = None;
        let mut full = false;
        let late = Late {
            now,
            interval: self.codel_interval,
            standing: self.path_delay.standing(now, self.codel_interval),
        };
        let FlowSet {
            send,
            pool,
            send_queue_bytes,
            stats,
            next_tsn,
            path_space,
            ..
        } = self;
        let mut visit = |id: u64, f: &mut SendFlow| -> bool {
            let before = written;
            let r = write_flow(
                &late,
                f,
                sink,
                *path_space,
                budget_bytes,
                &mut written,
                pool,
                send_queue_bytes,
                stats,
                next_tsn,
            );
            if written > before && first_writer.is_none() {
                first_writer = Some(id);
            }
            matches!(r, Written::Full)
        };
        for (&id, f) in send.range_mut(cursor..) {
            if visit(id, f) {
                full = true;
                break;
            }
        }
        if !full {
            for (&id, f) in send.range_mut(..cursor) {
                if visit(id, f) {
                    break;
                }
            }
        }
        if let Some(id) = first_writer {
            self.rr_cursor = id + 1;
        }
        if written > 0 {
            self.piggyback_acks(sink);
        }
        written
    }

    /// RFC 7016 3.6.2.4: an acknowledgement for a sending flow.
    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        flow: u64,
        blocks: u64,
        cum: u64,
        body: AckBody<'_>,
    ) {
        self.summary.acks_received += 1;
        let Some(f) = self.send.get_mut(&flow) else {
            return;
        };
        let pre = f.outstanding;
        f.startup_options.clear();
        let was_open = f.rx_buffer_size > 0;
        f.rx_buffer_size = blocks.saturating_mul(1024);
        if f.rx_buffer_size == 0 {
            if was_open || f.probe_at.is_none() {
                // 3.6.2.9.1: probe at once on the transition to zero.
                f.probe_at = Some(now);
                f.probe_period = PROBE_MIN.max(self.ert0);
            }
        } else {
            f.probe_at = None;
        }
        let last = f.next_sn - 1;
        let mut max_tsn = self.max_tsn_ack;
        let pool = &mut self.pool;
        let qbytes = &mut self.send_queue_bytes;
        let mut delay: Option<Duration> = None;
        let path_since = self.path_since;
        let mut sampled_bytes = 0usize;
        let large = self.cfg.max_chunk_space;
        let mut large_acked = 0u32;
        let mut ack = |f: &mut SendFlow, sn: u64| {
            let Some(i) = f.index(sn) else { return };
            let Some(e) = f.queue.get_mut(i) else { return };
            if e.acked || !(e.in_flight || e.ever_sent || e.abandoned) {
                return;
            }
            if e.in_flight {
                if let Some(d) = min_delay(delay, e, now, path_since) {
                    delay = Some(d);
                    sampled_bytes += e.transmit_size;
                }
                e.in_flight = false;
                f.outstanding = f.outstanding.saturating_sub(e.transmit_size);
                max_tsn = max_tsn.max(e.tsn);
                if e.transmit_size > large {
                    large_acked += 1;
                }
            }
            e.acked = true;
            SendFlow::free_data(e, &mut f.held, pool, qbytes);
            f.live -= 1;
        };
        let front = f.front_sn();
        for sn in front..=cum.min(last) {
            ack(f, sn);
        }
        match body {
            // A malformed tail ends the walk; what was read is still valid.
            AckBody::Ranges(r) => {
                for (a, b) in RangeAckIter::new(cum, r).map_while(Result::ok) {
                    for sn in a.max(front)..=b.min(last) {
                        ack(f, sn);
                    }
                }
            }
            AckBody::Bitmap(b) => {
                for sn in BitmapAckIter::new(cum, b).map_while(Result::ok) {
                    if sn >= front && sn <= last {
                        ack(f, sn)
                    }
                }
            }
        }
        self.max_tsn_ack = max_tsn;
        self.summary.large_acked = self.summary.large_acked.saturating_add(large_acked);
        // Only an acknowledgement of more than one packet's worth was sent
        // at once (the receiver acknowledges every second packet, 3.6.3.4.4);
        // one of a single packet may have waited for the delayed-ack timer.
        if let Some(d) = delay.filter(|_| sampled_bytes > self.cfg.max_chunk_space) {
            self.path_delay.on_sample(now, d, self.codel_interval);
        }
        f.pop_acked();
        self.summary.acked_bytes += pre - f.outstanding;
        if f.state == SendState::Closing && f.queue.is_empty() {
            f.state = SendState::CompleteLinger(now);
            self.events
                .push_back(FlowEvent::SendFlowComplete { flow: FlowId(flow) });
        }
    }

    /// RFC 7016 3.6.2.5: after all acknowledgements of a packet.
    pub(super) fn detect_nacks(&mut self, _now: Instant) {
        let max = self.max_tsn_ack;
        for f in self.send.values_mut() {
            for i in 0..f.queue.len() {
                let Some(e) = f.queue.get_mut(i) else { break };
                if !e.ever_sent && !e.abandoned && !e.acked {
                    break; // the end of the sent prefix
                }
                if e.first_tsn.is_some_and(|t| t >= max) {
                    // This and every later entry were first sent at or
                    // after the highest acknowledged TSN.
                    break;
                }
                if !e.in_flight || e.tsn >= max {
                    continue;
                }
                e.nak_count = e.nak_count.saturating_add(1);
                self.summary.nacks += 1;
                if e.nak_count >= NAK_LOSS {
                    let (size, no_retransmit) = f.mark_lost(
                        i,
                        &mut self.pool,
                        &mut self.send_queue_bytes,
                        &mut self.stats,
                    );
                    self.summary.lost_bytes += size;
                    self.summary.any_nack_loss = true;
                    if size > self.cfg.max_chunk_space {
                        self.summary.large_lost = self.summary.large_lost.saturating_add(1);
                    }
                    if no_retransmit {
                        self.summary.no_retransmit_lost_bytes += size;
                    } else {
                        self.summary.any_reliable_nack_loss = true;
                    }
                    self.stats.losses_nack += 1;
                }
            }
        }
    }

    /// RFC 7016 3.6.2.6: the session's TIMEOUT_ALARM fired. Every fragment
    /// in flight is lost; returns what was lost (ANY_LOSS is
    /// [`TimeoutLoss::any`]). The session performs the ERT0 backoff and
    /// notifies congestion control.
    pub fn on_retransmit_timeout(&mut self, _now: Instant) -> TimeoutLoss {
        let mut loss = TimeoutLoss::default();
        for f in self.send.values_mut() {
            let n = f.sent_prefix();
            for i in 0..n {
                if let Some(e) = f.queue.get(i).filter(|e| e.in_flight) {
                    loss.last_sent = loss.last_sent.max(e.sent_at);
                    let (size, no_retransmit) = f.mark_lost(
                        i,
                        &mut self.pool,
                        &mut self.send_queue_bytes,
                        &mut self.stats,
                    );
                    // A zero-length fragment still counts as ANY_LOSS.
                    let size = size.max(1);
                    loss.lost_bytes += size;
                    if no_retransmit {
                        loss.no_retransmit_lost_bytes += size;
                    }
                    self.stats.losses_timeout += 1;
                }
            }
        }
        loss
    }

    /// RFC 7016 3.6.2.10: the receiver rejected one of our flows.
    pub(super) fn on_flow_exception(&mut self, _now: Instant, flow: u64, code: u64) {
        let Some(f) = self.send.get_mut(&flow) else {
            return;
        };
        if f.state == SendState::Open {
            f.close();
            self.events.push_back(FlowEvent::SendFlowRejected {
                flow: FlowId(flow),
                code,
            });
        }
        if !f.exception {
            f.exception = true;
            for i in 0..f.queue.len() {
                f.abandon_message(
                    i,
                    &mut self.pool,
                    &mut self.send_queue_bytes,
                    &mut self.stats,
                );
            }
        }
    }

    /// Buffer Probes due now (3.6.2.9.1), written by `write_acks`.
    pub(super) fn write_probes(&mut self, now: Instant, sink: &mut impl ChunkSink) {
        let ert0 = self.ert0;
        for f in self.send.values_mut() {
            if !f.probe_due(now) {
                continue;
            }
            let chunk = Chunk::BufferProbe { flow_id: f.id };
            let size = CHUNK_HEADER + vlu_len(f.id);
            if size > sink.remaining() || !sink.push(&chunk) {
                return;
            }
            self.stats.buffer_probes_sent += 1;
            f.probe_at = Some(now + f.probe_period);
            f.probe_period = (f.probe_period * 2).min(PROBE_MAX.max(ert0));
        }
    }
}

/// The least of `delay` and the time since `e` was sent, when `e` is a
/// NoRetransmit fragment (sent once: never retransmitted) and so a clean
/// sample of the path's delay ([`codel::PathDelay`]).
/// `None` when `e` is no such sample (sent more than once, or before the
/// path changed at `path_since`).
fn min_delay(
    delay: Option<Duration>,
    e: &SendEntry,
    now: Instant,
    path_since: Option<Instant>,
) -> Option<Duration> {
    let q = e
        .sent_at
        .filter(|&t| e.first_tsn == Some(e.tsn) && path_since.is_none_or(|p| t >= p))?;
    let d = now.saturating_duration_since(q);
    Some(delay.map_or(d, |x| x.min(d)))
}

/// Assemble User Data chunks of one flow (RFC 7016 3.6.2.3, 3.6.2.3.1,
/// 3.6.2.3.2).
#[allow(clippy::too_many_arguments)]
fn write_flow(
    late: &Late,
    f: &mut SendFlow,
    sink: &mut impl ChunkSink,
    path_space: usize,
    budget: usize,
    written: &mut usize,
    pool: &mut Pool,
    qbytes: &mut usize,
    stats: &mut FlowStats,
    next_tsn: &mut u64,
) -> Written {
    if f.find_eligible().is_none() {
        late.queue_empty(f);
        return Written::Idle;
    }
    if !f.window_open() {
        return Written::Idle;
    }
    let fsn = f.trim_and_fsn(pool, qbytes);
    let mut prev_sn: Option<u64> = None;
    loop {
        if *written >= budget && !f.fills_packet(prev_sn) {
            return Written::Full;
        }
        if !f.window_open() {
            return Written::Idle;
        }
        let Some(i) = f.find_eligible() else {
            late.queue_empty(f);
            return Written::Idle;
        };
        let verdict = f.late(i, late);
        if verdict != codel::Verdict::Send {
            f.abandon_message(i, pool, qbytes, stats);
            stats.drop_late += 1;
            if verdict == codel::Verdict::DropAndHold {
                stats.late_drop_holds += 1;
            }
            continue;
        }
        let final_sn = f.final_sn;
        let id = f.id;
        let opts: Option<&[u8]> = if prev_sn.is_none() && !f.startup_options.is_empty() {
            Some(&f.startup_options)
        } else {
            None
        };
        let Some(e) = f.queue.get(i) else {
            return Written::Idle;
        };
        let data: &[u8] = if e.abandoned {
            &[]
        } else {
            f.held.bytes(&e.data)
        };
        let fin = final_sn == Some(e.sn);
        let next = prev_sn.is_some_and(|p| p + 1 == e.sn);
        if !e.abandoned
            && e.no_retransmit
            && codec::user_data_len(id, e.sn, e.sn - fsn, f.startup_options.len(), data.len())
                > path_space
        {
            // Queued at a larger path MTU than the current one: no packet
            // can carry it any more. Abandon its message (see
            // `FlowSet::set_path_chunk_space`); the sequence number goes
            // out empty on the next round.
            f.abandon_message(i, pool, qbytes, stats);
            stats.abandoned_path_mtu += 1;
            continue;
        }
        let opts_len = opts.map_or(0, <[u8]>::len);
        let size = if next {
            codec::next_user_data_len(opts_len, data.len())
        } else {
            codec::user_data_len(id, e.sn, e.sn - fsn, opts_len, data.len())
        };
        if size > sink.remaining() {
            return Written::Full;
        }
        let pushed = if next {
            sink.push(&Chunk::NextUserData(NextUserData {
                fragment_control: e.fra,
                abandon: e.abandoned,
                final_: fin,
                options: opts,
                data,
            }))
        } else {
            sink.push(&Chunk::UserData(UserData {
                fragment_control: e.fra,
                abandon: e.abandoned,
                final_: fin,
                flow_id: id,
                sequence_number: e.sn,
                fsn_offset: e.sn - fsn,
                options: opts,
                data,
            }))
        };
        if !pushed {
            return Written::Full;
        }
        if f.time_critical {
            sink.mark_time_critical();
        }
        let Some(e) = f.queue.get_mut(i) else {
            return Written::Idle;
        };
        if e.abandoned {
            stats.abandoned_sent += 1;
        } else if e.ever_sent {
            stats.retransmissions += 1;
        }
        stats.fragments_sent += 1;
        if !e.ever_sent && !e.abandoned {
            e.first_tsn = Some(*next_tsn);
            if e.no_retransmit {
                e.sent_at = Some(late.now);
                SendFlow::release_sent(e, &mut f.held, pool);
            }
        }
        e.in_flight = true;
        e.ever_sent = true;
        e.nak_count = 0;
        e.sent_abandoned = e.abandoned;
        e.transmit_size = size;
        e.tsn = *next_tsn;
        *next_tsn += 1;
        let sn = e.sn;
        f.outstanding += size;
        *written += size;
        if i > 0 {
            f.scan_sn = sn + 1;
        }
        prev_sn = Some(sn);
    }
}
