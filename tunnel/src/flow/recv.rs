//! Receiving flows (RFC 7016 3.6.3) and acknowledgements (3.6.3.4).

use std::collections::VecDeque;
use std::time::Instant;

use super::codec::{parse_options, vlu_len, ParsedOptions, CHUNK_HEADER};
use super::send::SendState;
use super::seqset::SeqSet;
use super::{
    AcceptPolicy, ChunkSink, Delivery, FlowEvent, FlowId, FlowSet, FlowStats, Pool, RecvFlowId,
    ENTRY_OVERHEAD, POOL_MAX_CAPACITY, RECV_LINGER,
};
use crate::wire::{Chunk, FragmentControl};

/// The fields of a (Next) User Data chunk the receiver needs.
pub(super) struct Frag<'a> {
    pub fra: FragmentControl,
    pub abandon: bool,
    pub final_: bool,
    pub options: Option<&'a [u8]>,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecvState {
    Open,
    Rejected,
    CompleteLinger(Instant),
}

/// One RECV_BUFFER entry (RFC 7016 3.6.3).
///
/// A fragment that arrives right after the one at the back of the buffer,
/// in the same message, is appended to the buffer of the run it continues
/// (see [`RecvFlow::run`]) and its own entry keeps no data: the entries of
/// a message, joined in order, always give its bytes, and a message that
/// arrived in order is then delivered in the buffer it was received into,
/// without a second copy.
#[derive(Debug)]
struct Buffered {
    sn: u64,
    fra: FragmentControl,
    data: Vec<u8>,
    /// Bytes charged for this entry: [`ENTRY_OVERHEAD`] and the capacity
    /// of its buffer (the memory it holds, however few bytes are in it;
    /// for the first entry of a run, the room the run grows in), or the
    /// overhead alone for an entry whose bytes joined a run.
    charge: usize,
}

#[derive(Debug)]
pub(super) struct RecvFlow {
    id: u64,
    state: RecvState,
    seq: SeqSet,
    final_sn: Option<u64>,
    buf: VecDeque<Buffered>,
    /// Bytes charged for RECV_BUFFER entries.
    frag_bytes: usize,
    /// Bytes charged for delivered messages not yet polled by the user.
    event_bytes: usize,
    capacity: usize,
    prev_rwnd: Option<u64>,
    pub(super) should_ack: bool,
    exception_code: u64,
    delivery: Delivery,
    suspended: bool,
    announced: bool,
    complete_notified: bool,
    /// Where the walk over the message at the front of `buf` stopped last
    /// time: (its first fragment's sequence number, index). Its fragments
    /// up to there do not change while it stays at the front, so the next
    /// walk resumes there instead of starting over for every fragment
    /// that arrives (quadratic in the message's fragments).
    front_walk: Option<(u64, usize)>,
    /// The run of fragments at the back of `buf` that share one buffer:
    /// (the first one's sequence number, the last one's). Fragments in
    /// sequence order of one message join it while its buffer has room.
    run: Option<(u64, u64)>,
    /// The largest message delivered on this flow (at most
    /// [`POOL_MAX_CAPACITY`]): the room a run's buffer is taken with.
    largest_message: usize,
}

/// Borrowed pieces of the FlowSet the delivery code needs.
struct Cx<'a> {
    pool: &'a mut Pool,
    events: &'a mut VecDeque<FlowEvent>,
    stats: &'a mut FlowStats,
    held: &'a mut usize,
}

impl RecvFlow {
    pub(super) fn is_open(&self) -> bool {
        self.state == RecvState::Open
    }

    pub(super) fn linger_end(&self) -> Option<Instant> {
        match self.state {
            RecvState::CompleteLinger(since) => Some(since + RECV_LINGER),
            _ => None,
        }
    }

    fn buffered(&self) -> usize {
        self.frag_bytes + self.event_bytes
    }

    /// RFC 7016 3.6.3.5: bufferBlocksAvailable.
    fn advertise(&self) -> u64 {
        let bytes = self.capacity.saturating_sub(self.buffered());
        let mut blocks = bytes.div_ceil(1024) as u64;
        if blocks == 0 && self.capacity > 0 && !self.suspended {
            blocks = 1;
        }
        blocks
    }

    /// Hard cap on bytes held for this flow; the sender should stay below
    /// `capacity`, the slack covers in-flight data sent against an older
    /// advertisement and the one block always advertised (3.6.3.5).
    fn hard_cap(&self) -> usize {
        self.capacity + self.capacity / 2 + 16 * 1024
    }

    /// The user took a delivered message. Returns true if the window
    /// reopened enough that an unsolicited acknowledgement (a window
    /// update) should go out now.
    pub(super) fn release_held(&mut self, charge: usize) -> bool {
        self.event_bytes = self.event_bytes.saturating_sub(charge);
        self.window_reopened()
    }

    fn window_reopened(&mut self) -> bool {
        let cap_blocks = self.capacity.div_ceil(1024) as u64;
        let now = self.advertise();
        if self.state != RecvState::Rejected
            && self
                .prev_rwnd
                .is_some_and(|p| p * 2 < cap_blocks && now * 2 >= cap_blocks)
        {
            self.should_ack = true;
            return true;
        }
        false
    }

    /// Free every buffered fragment.
    pub(super) fn release_all(&mut self, pool: &mut Pool, held: &mut usize) {
        for b in self.buf.drain(..) {
            *held = held.saturating_sub(b.charge);
            pool.give(b.data);
        }
        self.frag_bytes = 0;
        self.run = None;
    }

    fn emit(&mut self, cx: &mut Cx<'_>, data: Vec<u8>) {
        self.largest_message = self.largest_message.max(data.len().min(POOL_MAX_CAPACITY));
        let charge = data.len() + ENTRY_OVERHEAD;
        self.event_bytes += charge;
        *cx.held += charge;
        cx.stats.messages_delivered += 1;
        cx.stats.bytes_delivered += data.len() as u64;
        cx.events.push_back(FlowEvent::Message {
            flow: RecvFlowId(self.id),
            data,
        });
    }

    /// Remove entries `s..=e`; deliver them as one message if `deliver`,
    /// else discard them. A message received as one run is delivered in
    /// the run's buffer; one in several pieces is copied together.
    fn take_segment(&mut self, cx: &mut Cx<'_>, s: usize, e: usize, deliver: bool) {
        let mut out: Option<Vec<u8>> = None;
        // The message's size, so its buffer is allocated once, not grown
        // fragment by fragment.
        let total = if deliver {
            self.buf.range(s..=e).map(|b| b.data.len()).sum()
        } else {
            0
        };
        for b in self.buf.drain(s..=e) {
            self.frag_bytes = self.frag_bytes.saturating_sub(b.charge);
            *cx.held = cx.held.saturating_sub(b.charge);
            if !deliver {
                cx.pool.give(b.data);
                continue;
            }
            match out.as_mut() {
                None if b.data.capacity() >= total => out = Some(b.data),
                None => {
                    let mut o = cx.pool.take_for(total);
                    o.extend_from_slice(&b.data);
                    cx.stats.reassembly_copied_bytes += b.data.len() as u64;
                    cx.pool.give(b.data);
                    out = Some(o);
                }
                Some(o) => {
                    if !b.data.is_empty() {
                        o.extend_from_slice(&b.data);
                        cx.stats.reassembly_copied_bytes += b.data.len() as u64;
                    }
                    cx.pool.give(b.data);
                }
            }
        }
        match out {
            Some(data) => self.emit(cx, data),
            None if !deliver => cx.stats.segments_discarded += 1,
            None => {}
        }
    }

    /// Index of the last entry of the segment starting at `i`: follow
    /// contiguous Middle/End fragments, stopping after an End.
    fn segment_end(&self, i: usize) -> usize {
        let mut j = i;
        loop {
            let Some(cur) = self.buf.get(j) else { return j };
            if cur.fra == FragmentControl::End {
                return j;
            }
            match self.buf.get(j + 1) {
                Some(n)
                    if n.sn == cur.sn + 1
                        && matches!(n.fra, FragmentControl::Middle | FragmentControl::End) =>
                {
                    j += 1
                }
                _ => return j,
            }
        }
    }

    /// RFC 7016 3.6.3.2 step 11: put a fragment into RECV_BUFFER (the
    /// caller checked the caps for its bytes); returns its index. A
    /// message that begins in an empty buffer gets one buffer for its
    /// fragments in sequence order, taken with room for the largest
    /// message this flow has delivered and charged by that room from its
    /// first fragment on, so a sender cannot make a few-byte fragment hold
    /// a large buffer uncharged. Whatever does not fit (a message larger
    /// than any before, the caps) or arrives out of order gets a buffer of
    /// its own and is copied together on delivery.
    fn buffer(
        &mut self,
        cx: &mut Cx<'_>,
        sn: u64,
        frag: &Frag<'_>,
        held_now: usize,
        max_total: usize,
    ) -> usize {
        use FragmentControl::*;
        let at_back = self.buf.back().is_none_or(|b| b.sn < sn);
        if at_back && matches!(frag.fra, Middle | End) {
            if let Some(head) = self.run_head(sn) {
                let fits = self
                    .buf
                    .get(head)
                    .is_some_and(|h| h.data.capacity() - h.data.len() >= frag.data.len());
                if fits {
                    if let Some(h) = self.buf.get_mut(head) {
                        h.data.extend_from_slice(frag.data);
                    }
                    self.buf.push_back(Buffered {
                        sn,
                        fra: frag.fra,
                        data: Vec::new(),
                        charge: ENTRY_OVERHEAD,
                    });
                    self.frag_bytes += ENTRY_OVERHEAD;
                    *cx.held += ENTRY_OVERHEAD;
                    self.run = Some((self.run.map_or(sn, |r| r.0), sn));
                    return self.buf.len() - 1;
                }
            }
        }
        let room = self.largest_message;
        let run_charge = room + ENTRY_OVERHEAD;
        // One run at a time, begun in an empty buffer, and its room within
        // the slack above the advertised capacity: its charge ahead of its
        // data then never keeps out a fragment the flow waits for (a
        // retransmission into a gap), which several would.
        let fits = |f: &Self, charge: usize| {
            f.buffered() + charge <= f.hard_cap() && held_now + charge <= max_total
        };
        let mut run_buf = None;
        if frag.fra == Begin
            && self.buf.is_empty()
            && room > frag.data.len()
            && room <= self.capacity / 2
            && fits(self, run_charge)
        {
            // A pooled buffer may be larger than asked for: charged (and
            // checked) by what it is.
            let data = cx.pool.take_for(room);
            if fits(self, data.capacity() + ENTRY_OVERHEAD) {
                run_buf = Some(data);
            } else {
                cx.pool.give(data);
            }
        }
        let starts_run = run_buf.is_some();
        let (data, charge) = if let Some(mut data) = run_buf {
            data.extend_from_slice(frag.data);
            let charge = data.capacity() + ENTRY_OVERHEAD;
            (data, charge)
        } else {
            // Charged by the buffer's capacity: a fragment of a few bytes
            // still holds a fragment buffer while it waits.
            let mut data = cx.pool.take();
            data.reserve_exact(frag.data.len());
            data.extend_from_slice(frag.data);
            let charge = data.capacity() + ENTRY_OVERHEAD;
            (data, charge)
        };
        self.run = starts_run.then_some((sn, sn));
        let entry = Buffered {
            sn,
            fra: frag.fra,
            data,
            charge,
        };
        self.frag_bytes += charge;
        *cx.held += charge;
        // In order, the fragment goes at the back (a plain push:
        // `VecDeque::insert` costs more even there).
        if at_back {
            self.buf.push_back(entry);
            self.buf.len() - 1
        } else {
            let p = self.buf.partition_point(|b| b.sn < sn);
            self.buf.insert(p, entry);
            p
        }
    }

    /// Index of the first entry of the run that fragment `sn` would
    /// continue: the run ends at the back of the buffer with `sn - 1`, in
    /// a message not yet ended. `run` is checked here, not kept in step
    /// when entries leave: entries are sorted by distinct sequence
    /// numbers, so an entry `first` at `last - first` places before a
    /// back entry `last` means the run is there whole; and a sequence
    /// number, once taken out (delivered or discarded, at or below the
    /// CSN), never comes back (a duplicate is not buffered).
    fn run_head(&self, sn: u64) -> Option<usize> {
        let (first, last) = self.run?;
        let back = self.buf.back()?;
        if back.sn != last
            || last.checked_add(1) != Some(sn)
            || !matches!(back.fra, FragmentControl::Begin | FragmentControl::Middle)
        {
            return None;
        }
        let span = usize::try_from(last - first).ok()?;
        let head = self.buf.len().checked_sub(span + 1)?;
        (self.buf.get(head)?.sn == first).then_some(head)
    }

    /// RFC 7016 3.6.3.3: deliver complete messages up to the CSN in
    /// order, discarding abandoned segments; then report completion.
    fn deliver(&mut self, cx: &mut Cx<'_>) {
        if self.suspended || self.state == RecvState::Rejected {
            return;
        }
        let csn = self.seq.csn();
        while let Some(first) = self.buf.front() {
            if first.sn > csn {
                break;
            }
            match first.fra {
                FragmentControl::Whole => self.take_segment(cx, 0, 0, true),
                FragmentControl::Middle | FragmentControl::End => {
                    self.take_segment(cx, 0, 0, false)
                }
                FragmentControl::Begin => {
                    let first_sn = first.sn;
                    let from = match self.front_walk {
                        Some((sn, j))
                            if sn == first_sn
                                && self
                                    .buf
                                    .get(j)
                                    .is_some_and(|b| sn.checked_add(j as u64) == Some(b.sn)) =>
                        {
                            j
                        }
                        _ => 0,
                    };
                    let j = self.segment_end(from);
                    self.front_walk = Some((first_sn, j));
                    let Some(last) = self.buf.get(j) else { break };
                    if last.fra == FragmentControl::End {
                        self.take_segment(cx, 0, j, true);
                    } else if last.sn < csn {
                        self.take_segment(cx, 0, j, false);
                    } else {
                        break;
                    }
                }
            }
        }
        if self.announced
            && !self.complete_notified
            && self.buf.is_empty()
            && self.final_sn.is_some_and(|f| csn >= f)
        {
            self.complete_notified = true;
            cx.events.push_back(FlowEvent::RecvFlowComplete {
                flow: RecvFlowId(self.id),
            });
        }
    }

    /// Arrival-order delivery: deliver the message containing buffer
    /// index `p` if it is complete.
    fn deliver_if_complete(&mut self, cx: &mut Cx<'_>, p: usize) {
        let is =
            |b: Option<&Buffered>, f: &[FragmentControl]| b.is_some_and(|b| f.contains(&b.fra));
        let contiguous = |a: Option<&Buffered>, b: Option<&Buffered>| match (a, b) {
            (Some(a), Some(b)) => a.sn + 1 == b.sn,
            _ => false,
        };
        use FragmentControl::*;
        // Forward first: a message whose last fragment has not arrived is
        // not complete, and fragments arriving in order (each one the last
        // in the buffer) then cost one look instead of a walk back over the
        // message so far (quadratic in its fragments).
        let mut e = p;
        while is(self.buf.get(e), &[Begin, Middle])
            && is(self.buf.get(e + 1), &[Middle, End])
            && contiguous(self.buf.get(e), self.buf.get(e + 1))
        {
            e += 1;
        }
        if !is(self.buf.get(e), &[Whole, End]) {
            return;
        }
        let mut s = p;
        while s > 0
            && is(self.buf.get(s), &[Middle, End])
            && is(self.buf.get(s - 1), &[Begin, Middle])
            && contiguous(self.buf.get(s - 1), self.buf.get(s))
        {
            s -= 1;
        }
        let complete = (s == e && is(self.buf.get(s), &[Whole]))
            || (is(self.buf.get(s), &[Begin]) && is(self.buf.get(e), &[End]));
        if complete {
            self.take_segment(cx, s, e, true);
        }
    }

    /// Arrival-order delivery of everything complete (after resuming).
    fn deliver_all_complete(&mut self, cx: &mut Cx<'_>) {
        let mut i = 0;
        while i < self.buf.len() {
            let before = self.buf.len();
            self.deliver_if_complete(cx, i);
            if self.buf.len() == before {
                i += 1;
            }
        }
    }

    fn run_delivery(&mut self, cx: &mut Cx<'_>) {
        if self.delivery == Delivery::ArrivalOrder
            && !self.suspended
            && self.state != RecvState::Rejected
        {
            self.deliver_all_complete(cx);
        }
        self.deliver(cx);
    }

    /// RFC 7016 3.6.3.7 steps 1-4.
    fn reject(&mut self, code: u64, pool: &mut Pool, held: &mut usize) {
        if self.state != RecvState::Open {
            return;
        }
        self.state = RecvState::Rejected;
        self.release_all(pool, held);
        self.exception_code = code;
        self.should_ack = true;
    }
}

impl FlowSet {
    fn cx(&mut self) -> (Cx<'_>, &mut std::collections::BTreeMap<u64, RecvFlow>) {
        (
            Cx {
                pool: &mut self.pool,
                events: &mut self.events,
                stats: &mut self.stats,
                held: &mut self.recv_held_total,
            },
            &mut self.recv,
        )
    }

    /// RFC 7016 3.6.3.1: a User Data chunk for an unknown flow. Returns
    /// false if the flow could not be created.
    fn start_recv_flow(&mut self, flow_id: u64, opts: Option<&ParsedOptions<'_>>) -> bool {
        if self.recv.len() >= self.cfg.max_recv_flows {
            self.stats.drop_flow_limit += 1;
            return false;
        }
        let metadata = opts.and_then(|o| o.metadata);
        let assoc = opts.and_then(|o| o.return_association);
        let assoc_ok = match assoc {
            None => true,
            Some(a) => self
                .send
                .get(&a)
                .is_some_and(|s| s.state == SendState::Open),
        };
        let bad_options = opts.is_some_and(|o| o.unknown_mandatory || o.multiple_associations);
        let (delivery, suspended) = match self.cfg.accept {
            AcceptPolicy::Auto(d) => (d, false),
            AcceptPolicy::Manual => (Delivery::InOrder, true),
        };
        let mut f = RecvFlow {
            id: flow_id,
            state: RecvState::Open,
            seq: SeqSet::new(),
            final_sn: None,
            buf: VecDeque::new(),
            frag_bytes: 0,
            event_bytes: 0,
            capacity: self.cfg.recv_buffer_per_flow,
            prev_rwnd: None,
            should_ack: false,
            exception_code: 0,
            delivery,
            suspended,
            announced: false,
            complete_notified: false,
            front_walk: None,
            run: None,
            largest_message: 0,
        };
        match metadata {
            Some(m) if assoc_ok && !bad_options => {
                f.announced = true;
                self.events.push_back(FlowEvent::IncomingFlow {
                    flow: RecvFlowId(flow_id),
                    metadata: m.to_vec(),
                    return_association: assoc.map(FlowId),
                });
            }
            _ => {
                f.state = RecvState::Rejected;
                self.stats.flows_rejected_auto += 1;
            }
        }
        self.recv.insert(flow_id, f);
        self.ack_now = true;
        true
    }

    /// RFC 7016 3.6.3.2: one (Next) User Data chunk.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_user_data(
        &mut self,
        now: Instant,
        flow_id: u64,
        sn: u64,
        fsn: u64,
        fsn_offset: u64,
        is_next: bool,
        frag: Frag<'_>,
    ) {
        // 2.3.11: sequence numbers start above 0; fsnOffset is 0 only on
        // abandoned fragments.
        if sn == 0 || (!frag.abandon && fsn_offset == 0) {
            self.stats.drop_malformed += 1;
            return;
        }
        let opts = match frag.options {
            None => None,
            Some(o) => match parse_options(o) {
                Some(p) => Some(p),
                None => {
                    self.stats.drop_malformed += 1;
                    return;
                }
            },
        };
        if opts.is_some_and(|o| o.ack_clock) {
            self.peer_ack_clock = true;
        }
        if !self.recv.contains_key(&flow_id) {
            if is_next {
                self.stats.drop_malformed += 1;
                return;
            }
            if !self.start_recv_flow(flow_id, opts.as_ref()) {
                return;
            }
        }
        let max_ranges = self.cfg.max_recv_ranges;
        let max_total = self.cfg.max_recv_buffer_total;
        let held_now = self.recv_held_total;
        let (mut cx, recv) = self.cx();
        let Some(f) = recv.get_mut(&flow_id) else {
            return;
        };

        // Drops happen before any state change, so a dropped fragment is
        // simply not acknowledged and the sender repairs it.
        let seen = f.seq.contains(sn);
        if !seen && f.seq.range_count() >= max_ranges && f.seq.would_add_range(sn, sn) {
            cx.stats.drop_ranges += 1;
            return;
        }
        // What buffering it costs: the buffer it would be copied into
        // (see `buffer`), or less when it joins a run.
        let charge = frag.data.len().max(cx.pool.next_capacity()) + ENTRY_OVERHEAD;
        let will_buffer = f.state == RecvState::Open && !seen && !frag.abandon;
        if will_buffer && (f.buffered() + charge > f.hard_cap() || held_now + charge > max_total) {
            cx.stats.drop_recv_buffer += 1;
            f.should_ack = true;
            return;
        }

        let mut ack_now = false;
        f.should_ack = true; // step 3
        if f.state == RecvState::Open && opts.is_some_and(|o| o.unknown_mandatory) {
            // step 4
            let announced = f.announced;
            f.reject(0, cx.pool, cx.held);
            cx.stats.flows_rejected_auto += 1;
            if announced {
                cx.events.push_back(FlowEvent::RecvFlowAborted {
                    flow: RecvFlowId(flow_id),
                });
            }
        }
        if f.state != RecvState::Open {
            ack_now = true; // step 5
        }
        if f.prev_rwnd.is_some_and(|p| p < 2) {
            ack_now = true; // step 6
        }
        if frag.abandon {
            ack_now = true; // step 7
        }
        if f.seq.has_gaps() {
            ack_now = true; // step 8
        }
        if seen {
            ack_now = true; // step 9
            cx.stats.duplicates += 1;
        }
        if !seen && frag.final_ && f.final_sn.is_none() {
            f.final_sn = Some(sn); // step 10
            ack_now = true;
        }
        // step 11
        let will_buffer = f.state == RecvState::Open && !seen && !frag.abandon;
        let mut inserted_at = None;
        if will_buffer {
            if f.delivery == Delivery::ArrivalOrder
                && !f.suspended
                && frag.fra == FragmentControl::Whole
            {
                let mut data = cx.pool.take();
                data.extend_from_slice(frag.data);
                f.emit(&mut cx, data);
            } else {
                let p = f.buffer(&mut cx, sn, &frag, held_now, max_total);
                inserted_at = Some(p);
            }
        }
        // steps 12, 13
        let covered = f.seq.insert(0, fsn);
        let added = f.seq.insert(sn, sn);
        let gap = covered > 0 || (frag.abandon && added > 0);
        if gap && f.announced && f.state != RecvState::Rejected {
            cx.stats.gaps += 1;
            let flow = RecvFlowId(flow_id);
            if cx.events.back() != Some(&FlowEvent::Gap { flow }) {
                cx.events.push_back(FlowEvent::Gap { flow });
            }
        }
        if f.seq.has_gaps() {
            ack_now = true; // step 14
        }
        // step 16
        if let (Some(p), Delivery::ArrivalOrder, false) = (inserted_at, f.delivery, f.suspended) {
            f.deliver_if_complete(&mut cx, p);
        }
        f.deliver(&mut cx);
        // 3.6.3.4.1: capacity not at least 1024 bytes above BUFFERED_SIZE.
        if f.capacity < f.buffered() + 1024 {
            ack_now = true;
        }
        // 3.6.3.8
        if f.final_sn.is_some_and(|fs| f.seq.csn() >= fs)
            && matches!(f.state, RecvState::Open | RecvState::Rejected)
        {
            if f.state == RecvState::Rejected {
                f.release_all(cx.pool, cx.held);
            }
            f.state = RecvState::CompleteLinger(now);
            f.should_ack = true;
            ack_now = true;
        }
        if ack_now {
            self.ack_now = true;
        }
        // step 15 (delayed-ack alarm) is armed in end_packet.
    }

    /// RFC 7016 3.6.3.6.
    pub(super) fn on_buffer_probe(&mut self, flow_id: u64) {
        if let Some(f) = self.recv.get_mut(&flow_id) {
            f.should_ack = true;
            self.ack_now = true;
        }
    }

    /// Accept a receiving flow: choose its delivery order and resume
    /// delivery (needed with [`AcceptPolicy::Manual`]).
    pub fn accept(&mut self, flow: RecvFlowId, delivery: Delivery) {
        let (mut cx, recv) = self.cx();
        let Some(f) = recv.get_mut(&flow.0) else {
            return;
        };
        f.delivery = delivery;
        f.suspended = false;
        f.run_delivery(&mut cx);
        if f.window_reopened() {
            self.ack_now = true;
        }
    }

    /// Suspend delivery of a receiving flow (RFC 7016 3.6.3.3); its window
    /// closes once its buffer fills (3.6.3.5).
    pub fn suspend(&mut self, flow: RecvFlowId) {
        if let Some(f) = self.recv.get_mut(&flow.0) {
            f.suspended = true;
        }
    }

    /// Resume delivery of a suspended receiving flow.
    pub fn resume(&mut self, flow: RecvFlowId) {
        let (mut cx, recv) = self.cx();
        let Some(f) = recv.get_mut(&flow.0) else {
            return;
        };
        f.suspended = false;
        f.run_delivery(&mut cx);
        if f.window_reopened() {
            self.ack_now = true;
        }
    }

    /// Reject a receiving flow with an application exception code (RFC
    /// 7016 3.6.3.7). A Flow Exception Report precedes every later
    /// acknowledgement of the flow.
    pub fn reject(&mut self, flow: RecvFlowId, code: u64) {
        if let Some(f) = self.recv.get_mut(&flow.0) {
            if f.state == RecvState::Open {
                f.reject(code, &mut self.pool, &mut self.recv_held_total);
                self.ack_now = true;
            }
        }
    }

    /// The session's path changed: acknowledge every receiving flow again
    /// with the next packet, on the new path (acknowledgements sent on the
    /// old one may never arrive, and a sender whose window is full of
    /// unacknowledged data would otherwise wait for its timeout).
    pub fn reacknowledge(&mut self) {
        for f in self.recv.values_mut() {
            f.should_ack = true;
        }
        if !self.recv.is_empty() {
            self.ack_now = true;
        }
    }

    /// Set a receiving flow's BUFFER_CAPACITY (RFC 7016 3.6.3.1 step 9).
    pub fn set_recv_capacity(&mut self, flow: RecvFlowId, bytes: usize) {
        if let Some(f) = self.recv.get_mut(&flow.0) {
            f.capacity = bytes;
            if f.window_reopened() {
                self.ack_now = true;
            }
        }
    }

    /// Write the obligatory acknowledgements (RFC 7016 3.6.3.4.5), each
    /// preceded by a Flow Exception Report for rejected flows
    /// (3.6.3.4.3), and the Buffer Probes due (3.6.2.9.1). Call first when
    /// building a packet; the first acknowledgement is truncated if it
    /// does not fit whole (3.6.3.4.2).
    pub fn write_acks(&mut self, now: Instant, sink: &mut impl ChunkSink) {
        if self.delack.is_some_and(|t| t <= now) {
            self.delack = None;
            self.ack_now = true;
        }
        if self.ack_now {
            self.write_ready_acks(sink, true);
        }
        self.write_probes(now, sink);
    }

    /// RFC 7016 3.6.3.4.6: acknowledgements ride along with user data.
    pub(super) fn piggyback_acks(&mut self, sink: &mut impl ChunkSink) {
        if self.recv.values().any(|f| f.should_ack) {
            self.write_ready_acks(sink, false);
        }
    }

    fn write_ready_acks(&mut self, sink: &mut impl ChunkSink, truncate_first: bool) {
        let mut first = truncate_first;
        for f in self.recv.values_mut() {
            if !f.should_ack {
                continue;
            }
            if !write_ack(f, sink, &mut self.scratch, &mut self.stats, first) {
                break;
            }
            first = false;
        }
        if !self.recv.values().any(|f| f.should_ack) {
            self.ack_now = false;
            self.rx_data_packets = 0;
            self.delack = None;
        }
    }
}

/// RFC 7016 3.6.3.4.3: assemble the acknowledgement of one flow (with a
/// Flow Exception Report first if it is rejected), choosing the more
/// compact of Bitmap Ack and Range Ack. Returns false if it did not fit.
fn write_ack(
    f: &mut RecvFlow,
    sink: &mut impl ChunkSink,
    scratch: &mut Vec<u8>,
    stats: &mut FlowStats,
    allow_truncate: bool,
) -> bool {
    let blocks = f.advertise();
    let cum = f.seq.csn();
    let header = CHUNK_HEADER + vlu_len(f.id) + vlu_len(blocks) + vlu_len(cum);
    let exception = if f.state == RecvState::Rejected {
        CHUNK_HEADER + vlu_len(f.id) + vlu_len(f.exception_code)
    } else {
        0
    };
    let bitmap_len = f.seq.bitmap_payload_len();
    let range_len = f.seq.range_payload_len();
    let use_bitmap = bitmap_len <= range_len;
    let full = bitmap_len.min(range_len);
    let room = sink.remaining();
    let Some(avail) = room.checked_sub(header + exception) else {
        return false;
    };
    let limit = match usize::try_from(full) {
        Ok(n) if n <= avail => n,
        _ if allow_truncate => {
            stats.truncated_acks += 1;
            avail
        }
        _ => return false,
    };
    scratch.clear();
    if use_bitmap {
        f.seq.write_bitmap(scratch, limit);
    } else {
        f.seq.write_ranges(scratch, limit);
    }
    if exception > 0 {
        let chunk = Chunk::FlowException {
            flow_id: f.id,
            exception: f.exception_code,
        };
        if !sink.push(&chunk) {
            return false;
        }
        stats.exceptions_sent += 1;
    }
    let chunk = if use_bitmap {
        Chunk::BitmapAck {
            flow_id: f.id,
            buffer_blocks_available: blocks,
            cumulative_ack: cum,
            bitmap: scratch,
        }
    } else {
        Chunk::RangeAck {
            flow_id: f.id,
            buffer_blocks_available: blocks,
            cumulative_ack: cum,
            ranges: scratch,
        }
    };
    if !sink.push(&chunk) {
        return false;
    }
    if use_bitmap {
        stats.bitmap_acks_sent += 1;
    } else {
        stats.range_acks_sent += 1;
    }
    f.should_ack = false;
    f.prev_rwnd = Some(blocks);
    true
}

impl FlowSet {
    /// Memory the receive buffers' entries hold: their buffers'
    /// capacities. Never more than [`FlowSet::recv_held_bytes`].
    pub fn recv_buffer_memory(&self) -> usize {
        self.recv
            .values()
            .flat_map(|f| f.buf.iter())
            .map(|b| b.data.capacity())
            .sum()
    }

    /// Bytes charged against `max_recv_buffer_total`: receive buffer
    /// entries and delivered messages not yet polled.
    pub fn recv_held_bytes(&self) -> usize {
        self.recv_held_total
    }
}
