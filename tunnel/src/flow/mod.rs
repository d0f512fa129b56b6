//! Flows (RFC 7016 section 3.6): sender and receiver state machines.
//!
//! A [`FlowSet`] holds every sending and receiving flow of one session. It
//! is sans-IO: the session feeds it the flow chunks of each received packet
//! and asks it to fill outgoing packets through a [`ChunkSink`]; the
//! session's congestion control grants a byte budget for user data and
//! learns acknowledged and lost bytes from [`FlowSet::take_ack_summary`].
//!
//! # What the session layer does (call order)
//!
//! For every received, decrypted packet of an OPEN session:
//! 1. [`FlowSet::begin_packet`];
//! 2. [`FlowSet::handle_chunk`] for every chunk in order (chunks the flow
//!    layer does not handle are ignored, but passing them keeps the Next
//!    User Data context exact: a Next User Data chunk must directly follow a
//!    (Next) User Data chunk, RFC 7016 2.3.12);
//! 3. [`FlowSet::end_packet`]; then [`FlowSet::take_ack_summary`] to feed
//!    congestion control (acknowledged bytes, losses by negative
//!    acknowledgement) and, if `acks_received > 0`, reset the session's
//!    TIMEOUT_ALARM to ERT0 (3.6.2.6).
//!
//! To transmit, repeatedly build a packet while there is work
//! ([`FlowSet::wants_control`] or [`FlowSet::has_data_to_send`]):
//! 1. [`FlowSet::write_acks`] (obligatory acknowledgements, Flow Exception
//!    Reports and Buffer Probes due now);
//! 2. [`FlowSet::write_data`] with the congestion-control budget; it
//!    piggybacks any acknowledgement still ready (3.6.3.4.6);
//! 3. if `write_data` returned more than 0, (re)arm TIMEOUT_ALARM to ERT0.
//!
//! When TIMEOUT_ALARM fires call [`FlowSet::on_retransmit_timeout`] (3.6.2.6);
//! whenever [`FlowSet::poll_timeout`] passes call [`FlowSet::handle_timeout`].
//! Drain [`FlowSet::poll_event`] after every input. Report the session's
//! current ERT0 with [`FlowSet::set_ert0`] (it paces Buffer Probes) and
//! its smoothed RTT with [`FlowSet::set_srtt`] (it sets the interval of
//! the late-frame drop, [`codel`]).

mod codec;
mod codel;
mod recv;
mod send;
mod seqset;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::Chunk;

use recv::RecvFlow;
use send::SendFlow;

/// A sending flow: the flow identifier this end chose (RFC 7016 3.6.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u64);

/// A receiving flow: the flow identifier the far end chose for its sending
/// flow (RFC 7016 3.6.1.1). A separate type, because both ends pick
/// identifiers independently and the numbers of the two kinds collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecvFlowId(pub u64);

/// Per-message reliability (RFC 7016 3.6.2.7: abandoning data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    /// Retransmitted until acknowledged.
    Reliable,
    /// Retransmitted until acknowledged or until this long after `send`,
    /// then abandoned.
    Deadline(Duration),
    /// Sent once; abandoned as soon as any fragment is lost (three
    /// negative acknowledgements or a retransmission timeout). Ethernet
    /// frames use this mode.
    NoRetransmit,
}

/// How a receiving flow hands complete messages to the user (RFC 7016
/// 3.6.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Original queuing order; gaps left by abandoned messages are
    /// reported with [`FlowEvent::Gap`].
    InOrder,
    /// As soon as each message is complete.
    ArrivalOrder,
}

/// What happens to a new receiving flow before the user has looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptPolicy {
    /// Deliver at once, in the given order.
    Auto(Delivery),
    /// Hold delivery (the flow is suspended, RFC 7016 3.6.3.3) until
    /// [`FlowSet::accept`] or [`FlowSet::reject`].
    Manual,
}

/// Limits and parameters of a [`FlowSet`].
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// Sending flows in OPEN, CLOSING or COMPLETE_LINGER.
    pub max_send_flows: usize,
    /// Receiving flows in OPEN, REJECTED or COMPLETE_LINGER; User Data for
    /// further new flows is dropped (not acknowledged).
    pub max_recv_flows: usize,
    /// User data bytes queued (not yet acknowledged or abandoned) across
    /// all sending flows.
    pub max_send_queue_bytes: usize,
    /// Largest message `send` accepts.
    pub max_message_size: usize,
    /// BUFFER_CAPACITY of each receiving flow (RFC 7016 3.6.3.5).
    pub recv_buffer_per_flow: usize,
    /// Hard cap on received bytes held (reassembly plus delivered but not
    /// yet polled) across all receiving flows; data beyond it is dropped
    /// unacknowledged.
    pub max_recv_buffer_total: usize,
    /// Ranges in a receiving flow's SEQUENCE_SET; a fragment that would
    /// open one more discontinuity is dropped unacknowledged.
    pub max_recv_ranges: usize,
    /// Bytes available for chunks in a packet of the base path MTU (1200
    /// bytes, `pmtu::BASE_SIZE`) with a maximum-size common header (RFC
    /// 7016 3.6.2.2): fragments of [`Reliability::Reliable`] and
    /// [`Reliability::Deadline`] messages are sized so that one fits with
    /// its User Data header and startup options. They keep their size
    /// until acknowledged, so it must fit every path the session may fall
    /// back to: a session lowers larger values to the base size's chunk
    /// space. [`Reliability::NoRetransmit`] fragments are sized from the
    /// session's current path MTU instead
    /// ([`FlowSet::set_path_chunk_space`]).
    pub max_chunk_space: usize,
    pub accept: AcceptPolicy,
    /// Delayed acknowledgement (RFC 7016 3.6.3.4.4: at most 200 ms).
    pub delayed_ack: Duration,
    /// Data buffers kept for reuse.
    pub pool_limit: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_send_flows: 64,
            max_recv_flows: 256,
            max_send_queue_bytes: 4 << 20,
            max_message_size: 256 << 10,
            recv_buffer_per_flow: 1 << 20,
            max_recv_buffer_total: 16 << 20,
            max_recv_ranges: 512,
            max_chunk_space: crate::session::BASE_CHUNK_SPACE,
            accept: AcceptPolicy::Auto(Delivery::InOrder),
            delayed_ack: Duration::from_millis(200),
            pool_limit: 4096,
        }
    }
}

/// Why [`FlowSet::open`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("too many sending flows")]
    TooManyFlows,
    #[error("flow metadata exceeds 512 bytes")]
    MetadataTooLarge,
    #[error("return association does not name an OPEN receiving flow")]
    BadReturnAssociation,
}

/// Why [`FlowSet::send`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no such sending flow")]
    UnknownFlow,
    #[error("flow is closed or was rejected")]
    Closed,
    #[error("message exceeds the maximum message size")]
    TooLarge,
    #[error("send queue is full")]
    QueueFull,
}

/// Where the flow layer puts the chunks of one outgoing packet. The
/// session implements it over its packet writer.
pub trait ChunkSink {
    /// Bytes still free for chunks in the packet being built.
    fn remaining(&self) -> usize;
    /// Append `chunk`; its encoded size is [`Chunk::encoded_len`] and never more
    /// than `remaining()` when the flow layer calls this. Return false if
    /// it did not fit after all (the flow layer then treats the packet as
    /// full and changes no state for that chunk).
    fn push(&mut self, chunk: &Chunk<'_>) -> bool;
    /// The packet carries time critical data (RFC 7016 2.2.4, 3.6.2.3
    /// step 18).
    fn mark_time_critical(&mut self) {}
}

/// Outputs for the user.
#[derive(Debug, PartialEq, Eq)]
pub enum FlowEvent {
    /// A new receiving flow opened (RFC 7016 3.6.3.1 step 9).
    IncomingFlow {
        flow: RecvFlowId,
        metadata: Vec<u8>,
        /// Our sending flow this flow answers (2.3.11.1.2).
        return_association: Option<FlowId>,
    },
    /// One complete message. Give `data` back with [`FlowSet::recycle`] to
    /// avoid allocation.
    Message { flow: RecvFlowId, data: Vec<u8> },
    /// The sender abandoned one or more messages of this flow (3.6.1.2: a
    /// gap indication must reach the user).
    Gap { flow: RecvFlowId },
    /// Every sequence number through the final one arrived and every
    /// complete message was delivered (3.6.3.3, 3.6.3.8).
    RecvFlowComplete { flow: RecvFlowId },
    /// A receiving flow was rejected by the implementation after it had
    /// been announced (an unknown mandatory option, 3.6.3.2 step 4).
    RecvFlowAborted { flow: RecvFlowId },
    /// The receiver reported an exception (3.6.2.10); the flow is closing.
    SendFlowRejected { flow: FlowId, code: u64 },
    /// Every sequence number including the final one was acknowledged
    /// (3.6.2.11); the flow lingers, then its resources are freed.
    SendFlowComplete { flow: FlowId },
}

/// Congestion-control feedback accumulated since the last
/// [`FlowSet::take_ack_summary`] (RFC 7016 3.6.2.4, 3.6.2.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckSummary {
    /// Acknowledgement chunks received for our sending flows.
    pub acks_received: u64,
    /// TRANSMIT_SIZE bytes that left OUTSTANDING_BYTES by acknowledgement.
    pub acked_bytes: usize,
    /// Negative acknowledgements detected.
    pub nacks: u64,
    /// TRANSMIT_SIZE bytes declared lost after three negative
    /// acknowledgements (timeouts are reported by `on_retransmit_timeout`).
    pub lost_bytes: usize,
    /// The part of `lost_bytes` that belonged to
    /// [`Reliability::NoRetransmit`] messages (frames): they are never
    /// sent again, and what they carry has its own loss response.
    pub no_retransmit_lost_bytes: usize,
    pub any_nack_loss: bool,
    /// A fragment of a message that will be retransmitted was declared
    /// lost: the loss that RFC 5681 congestion control answers.
    pub any_reliable_nack_loss: bool,
    /// Fragments in flight acknowledged / declared lost by negative
    /// acknowledgement whose chunk was larger than
    /// [`FlowConfig::max_chunk_space`], i.e. that needed a packet larger
    /// than the size every path carries: the session's evidence of a
    /// black hole for large packets only (`pmtu`, "size-selective loss").
    pub large_acked: u32,
    pub large_lost: u32,
}

/// What a TIMEOUT_ALARM declared lost (RFC 7016 3.6.2.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeoutLoss {
    /// TRANSMIT_SIZE bytes that were in flight.
    pub lost_bytes: usize,
    /// The part of `lost_bytes` of [`Reliability::NoRetransmit`] messages.
    pub no_retransmit_lost_bytes: usize,
    /// When the last of them was (last) sent.
    pub last_sent: Option<Instant>,
}

impl TimeoutLoss {
    /// ANY_LOSS of 3.6.2.6: something was in flight.
    pub fn any(&self) -> bool {
        self.lost_bytes > 0
    }

    /// Something that will be retransmitted was in flight.
    pub fn reliable(&self) -> bool {
        self.lost_bytes > self.no_retransmit_lost_bytes
    }
}

/// Counters, including drops by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub messages_queued: u64,
    pub fragments_sent: u64,
    /// Transmissions of a non-abandoned fragment that was sent before.
    pub retransmissions: u64,
    /// Transmissions of an abandoned fragment (FSN updates, FIN markers).
    pub abandoned_sent: u64,
    pub messages_abandoned: u64,
    pub buffer_probes_sent: u64,
    pub losses_nack: u64,
    pub losses_timeout: u64,
    /// NoRetransmit messages dropped at `send` because the queue was full.
    pub drop_send_queue_full: u64,
    /// NoRetransmit messages abandoned (also counted in
    /// `messages_abandoned`) because the path MTU fell below the size of a
    /// fragment not yet sent ([`FlowSet::set_path_chunk_space`]).
    pub abandoned_path_mtu: u64,
    /// NoRetransmit messages abandoned unsent because they waited in the
    /// queue too long ([`codel`]: a standing queue for an interval).
    pub drop_late: u64,
    /// Times the late-frame drop paused because the standing queue it
    /// answered was not the session's ([`codel`], `EPISODE_DROPS_MAX`).
    pub late_drop_holds: u64,
    /// Messages handed over ([`FlowSet::send_owned`]) whose replacement
    /// buffer had to be allocated because the pool kept none: the first
    /// few, then only when more messages were held at once than the pool
    /// keeps.
    pub frame_buffers_allocated: u64,
    pub messages_delivered: u64,
    pub bytes_delivered: u64,
    pub gaps: u64,
    pub duplicates: u64,
    pub bitmap_acks_sent: u64,
    pub range_acks_sent: u64,
    pub truncated_acks: u64,
    pub exceptions_sent: u64,
    pub flows_rejected_auto: u64,
    /// Incoming fragments dropped: malformed chunk fields or options.
    pub drop_malformed: u64,
    /// ... new flow beyond `max_recv_flows`.
    pub drop_flow_limit: u64,
    /// ... receive buffer caps.
    pub drop_recv_buffer: u64,
    /// ... SEQUENCE_SET range cap.
    pub drop_ranges: u64,
    /// Abandoned incomplete segments discarded from receive buffers.
    pub segments_discarded: u64,
    /// Bytes copied to join the pieces of a message that did not arrive
    /// as one run (out of order, or larger than the flow's messages so
    /// far); a message received in order is delivered in the buffer it
    /// arrived in.
    pub reassembly_copied_bytes: u64,
}

/// Bytes charged per buffered fragment or undelivered message on top of
/// its data (RFC 7016 3.6.3: BUFFERED_SIZE includes storage overhead), so
/// empty fragments cannot grow memory without bound.
const ENTRY_OVERHEAD: usize = 32;
/// Buffers larger than this are not kept for reuse. The largest message
/// of a frame flow (a 64 KiB TCP super-frame with its virtio and overlay
/// headers) fits, so reassembled frames come back through
/// [`FlowSet::recycle`] instead of being freed and allocated again.
const POOL_MAX_CAPACITY: usize = 80 << 10;
/// Buffers with at least this capacity are kept apart from fragment
/// buffers: reassembled messages take them ([`Pool::take_for`]), fragments
/// never do.
const POOL_LARGE: usize = 8 << 10;
/// Large buffers kept per flow set, and as many handed-over message
/// buffers ([`FlowSet::send_owned`]): at most 2 x 32 x 80 KiB = 5 MiB per
/// session, reached only after a burst of large messages each way.
const POOL_LARGE_LIMIT: usize = 32;
/// Packets with data after which an acknowledgement held during a receive
/// batch goes anyway ([`FlowSet::wants_control`]): below the six packets a
/// sender's burst avoidance allows between acknowledgements (RFC 7016
/// 3.5.2.2), so the sender never waits for the batch's end.
pub const ACK_BATCH_PACKETS: u32 = 4;
/// The same for a sender whose flows carry the ack clock option
/// ([`crate::wire::option::OPT_RINGLAN_ACK_CLOCK`]): its burst avoidance
/// lets each acknowledgement release six packets beyond those it newly
/// acknowledges (`congestion`, up to `BURST_ACKED_MAX`, twice this), so an
/// acknowledgement per sixteen packets keeps it sending.
pub const ACK_CLOCK_PACKETS: u32 = 16;
/// RFC 7016 3.6.2.11: sending flow COMPLETE_LINGER.
const SEND_LINGER: Duration = Duration::from_secs(130);
/// RFC 7016 3.6.3.8: receiving flow COMPLETE_LINGER.
const RECV_LINGER: Duration = Duration::from_secs(120);

/// Free list of byte buffers for fragments and messages.
#[derive(Debug)]
struct Pool {
    free: Vec<Vec<u8>>,
    /// Buffers of at least [`POOL_LARGE`] bytes.
    large: Vec<Vec<u8>>,
    limit: usize,
    reserve: usize,
    /// Buffers of messages handed over whole ([`FlowSet::send_owned`]),
    /// kept at their length (not cleared) to be handed back in exchange
    /// for the next one.
    frames: Vec<Vec<u8>>,
}

impl Pool {
    fn take(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.reserve))
    }

    /// The capacity of the buffer [`Pool::take`] would return.
    fn next_capacity(&self) -> usize {
        self.free.last().map_or(self.reserve, Vec::capacity)
    }

    /// An empty buffer with room for `len` bytes, allocated at most once
    /// (never grown while it is filled).
    fn take_for(&mut self, len: usize) -> Vec<u8> {
        if len <= self.reserve {
            // A buffer from before `reserve` grew may be smaller.
            let mut v = self.take();
            v.reserve_exact(len);
            return v;
        }
        let mut v = self.large.pop().unwrap_or_default();
        v.reserve_exact(len);
        v
    }

    /// A buffer of `len` bytes for [`FlowSet::send_owned`]'s caller: a
    /// kept one (its bytes unspecified) or a new zeroed one.
    fn take_frame(&mut self, len: usize) -> Vec<u8> {
        match self.frames.pop() {
            Some(mut v) => {
                v.resize(len, 0);
                v
            }
            None => vec![0; len],
        }
    }

    fn give_frame(&mut self, v: Vec<u8>) {
        if v.capacity() <= POOL_MAX_CAPACITY && self.frames.len() < POOL_LARGE_LIMIT.min(self.limit)
        {
            self.frames.push(v);
        }
    }

    fn give(&mut self, mut v: Vec<u8>) {
        let (list, limit) = if v.capacity() >= POOL_LARGE {
            (&mut self.large, POOL_LARGE_LIMIT.min(self.limit))
        } else {
            (&mut self.free, self.limit)
        };
        if v.capacity() == 0 || v.capacity() > POOL_MAX_CAPACITY || list.len() >= limit {
            return;
        }
        v.clear();
        list.push(v);
    }
}

/// All flows of one session (RFC 7016 3.6) plus the session-wide flow
/// state: TSN bookkeeping (3.6.2.5) and ACK_NOW / RX_DATA_PACKETS /
/// DELACK_ALARM (3.6.3.2, 3.6.3.4).
#[derive(Debug)]
pub struct FlowSet {
    cfg: FlowConfig,
    /// Chunk space of a packet at the session's current path MTU: what
    /// NoRetransmit fragments are sized from.
    path_space: usize,
    /// At most `path_space`: what the fragments of a message are sized
    /// from when that takes no more fragments than `path_space` (the
    /// session rounds it so that a full fragment's packet is whole cipher
    /// blocks, `session::align`).
    cut_space: usize,
    send: BTreeMap<u64, SendFlow>,
    recv: BTreeMap<u64, RecvFlow>,
    next_flow_id: u64,
    rr_cursor: u64,
    pool: Pool,
    send_queue_bytes: usize,
    /// No queued message's deadline is before this (`None`: none has one),
    /// so [`FlowSet::expire_deadlines`] looks at the flows only when it is
    /// due.
    earliest_deadline: Option<Instant>,
    recv_held_total: usize,
    events: VecDeque<FlowEvent>,
    next_tsn: u64,
    max_tsn_ack: u64,
    summary: AckSummary,
    ert0: Duration,
    /// The late-frame drop's interval ([`codel::interval`] of the SRTT).
    codel_interval: Duration,
    /// Delay of NoRetransmit fragments from sending to acknowledgement.
    path_delay: codel::PathDelay,
    /// When the session's path last changed: fragments sent before it
    /// give no delay samples ([`FlowSet::path_changed`]).
    path_since: Option<Instant>,
    ack_now: bool,
    /// The far end's flows carry the ack clock option: acknowledgements in
    /// a receive batch wait for [`ACK_CLOCK_PACKETS`] packets with data.
    peer_ack_clock: bool,
    rx_data_packets: u32,
    delack: Option<Instant>,
    /// Next User Data context: flow, sequence number, FSN of the previous
    /// (Next) User Data chunk in this packet (2.3.12).
    nud: Option<(u64, u64, u64)>,
    pkt_has_data: bool,
    pkt_has_ack: bool,
    scratch: Vec<u8>,
    stats: FlowStats,
}

impl FlowSet {
    pub fn new(config: FlowConfig) -> Self {
        let reserve = config.max_chunk_space;
        let limit = config.pool_limit;
        FlowSet {
            path_space: config.max_chunk_space,
            cut_space: config.max_chunk_space,
            cfg: config,
            send: BTreeMap::new(),
            recv: BTreeMap::new(),
            next_flow_id: 1,
            rr_cursor: 0,
            pool: Pool {
                free: Vec::new(),
                large: Vec::new(),
                limit,
                reserve,
                frames: Vec::new(),
            },
            send_queue_bytes: 0,
            earliest_deadline: None,
            recv_held_total: 0,
            events: VecDeque::new(),
            next_tsn: 1,
            max_tsn_ack: 0,
            summary: AckSummary::default(),
            ert0: Duration::from_secs(3),
            codel_interval: codel::interval(None),
            path_delay: codel::PathDelay::default(),
            path_since: None,
            ack_now: false,
            peer_ack_clock: false,
            rx_data_packets: 0,
            delack: None,
            nud: None,
            pkt_has_data: false,
            pkt_has_ack: false,
            scratch: Vec::new(),
            stats: FlowStats::default(),
        }
    }

    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// Sending flows held (OPEN, CLOSING, COMPLETE_LINGER).
    pub fn send_flow_count(&self) -> usize {
        self.send.len()
    }

    /// Receiving flows held (OPEN, REJECTED, COMPLETE_LINGER).
    pub fn recv_flow_count(&self) -> usize {
        self.recv.len()
    }

    /// The chunk space of a packet at the session's current path MTU (RFC
    /// 7016 3.5.4.3), with a maximum-size common header: NoRetransmit
    /// messages queued from now on are cut into fragments that fit it
    /// (3.6.2.2), so on a 1500-byte Ethernet path a full-size frame is one
    /// fragment. Fragments are per sequence number (3.6.2: each SEND_QUEUE
    /// entry has its own DATA; 3.6.2.3 step 11 checks each chunk against
    /// the path MTU when it is sent), so messages queued at different
    /// times may be cut differently; nothing ties a flow to one size.
    ///
    /// When the path MTU falls (black-hole detection returns to the base
    /// size, or DESTADDR moves to another kind of path), NoRetransmit
    /// fragments queued at the larger size can no longer be sent. Each
    /// such message is abandoned (3.6.2.7: a sender may abandon a message
    /// "at any time and for any reason") when it comes up for sending,
    /// counted in [`FlowStats::abandoned_path_mtu`]; its sequence numbers
    /// then go out as empty abandoned chunks (Forward Sequence Number
    /// updates, 3.6.2.7.1), which fit any packet, so the queue never
    /// stalls on them. Fragments of such a message already in flight are
    /// never retransmitted (NoRetransmit): they are acknowledged or lost
    /// as usual. The traffic inside (TCP) recovers as from any lost frame.
    /// Reliable and Deadline fragments are sized from the base path MTU
    /// and are unaffected.
    ///
    /// `cut` (at most `space`) is what the fragments of a message are
    /// sized from when that does not take more of them than `space`.
    pub fn set_path_chunk_space(&mut self, space: usize, cut: usize) {
        self.path_space = space;
        self.cut_space = cut.min(space);
        // Fragment buffers taken from the pool hold a whole fragment
        // without growing.
        self.pool.reserve = self.pool.reserve.max(space);
    }

    /// The session's current ERT0 (RFC 7016 3.5.2.1); paces Buffer Probes
    /// (3.6.2.9.1).
    pub fn set_ert0(&mut self, ert0: Duration) {
        self.ert0 = ert0;
    }

    /// The session's smoothed RTT (`None` before the first sample): sets
    /// the interval and target of the late-frame drop ([`codel`]).
    pub fn set_srtt(&mut self, srtt: Option<Duration>) {
        self.codel_interval = codel::interval(srtt);
    }

    /// The smoothed time from sending a fragment (sent once) to its
    /// acknowledgement on the current path, and when it was last sampled;
    /// `None` until data was acknowledged there ([`codel::PathDelay`]).
    pub fn measured_rtt(&self) -> Option<(Duration, Instant)> {
        self.path_delay.smoothed()
    }

    /// The session's packets now take another path (DESTADDR changed):
    /// the late-frame drop's delays were the old path's, and a longer new
    /// path (a failover to a relayed route) would look like a queue
    /// standing on it for up to two [`codel::MIN_WINDOW`]s. They start
    /// over, from fragments sent from now on (one sent before and
    /// acknowledged after could make the new path's least delay too
    /// small), and so does every flow's dropping episode.
    pub fn path_changed(&mut self, now: Instant) {
        self.path_delay = codel::PathDelay::default();
        self.path_since = Some(now);
        for f in self.send.values_mut() {
            f.path_changed();
        }
    }

    /// Next output event.
    pub fn poll_event(&mut self) -> Option<FlowEvent> {
        let ev = self.events.pop_front()?;
        if let FlowEvent::Message { flow, data } = &ev {
            let charge = data.len() + ENTRY_OVERHEAD;
            self.recv_held_total = self.recv_held_total.saturating_sub(charge);
            if let Some(f) = self.recv.get_mut(&flow.0) {
                if f.release_held(charge) {
                    self.ack_now = true;
                }
            }
        }
        Some(ev)
    }

    /// Return a message buffer from [`FlowEvent::Message`] for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.give(buf);
    }

    /// Earliest instant at which [`FlowSet::handle_timeout`] or
    /// [`FlowSet::write_acks`] has work: delayed ack, Buffer Probe, message
    /// deadline or end of a linger period. The session's own
    /// TIMEOUT_ALARM (3.6.2.6) is separate.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.delack;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        for f in self.send.values() {
            min(f.next_timer());
        }
        for f in self.recv.values() {
            min(f.linger_end());
        }
        t
    }

    /// The delayed acknowledgement alarm, if set (3.6.3.4.4).
    pub fn ack_deadline(&self) -> Option<Instant> {
        self.delack
    }

    /// Process timers: the delayed-ack alarm (3.6.3.4.4), message deadlines
    /// (3.6.2.7) and linger expiry (3.6.2.11, 3.6.3.8).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.delack.is_some_and(|t| t <= now) {
            self.delack = None;
            self.ack_now = true;
        }
        self.expire_deadlines(now);
        self.send.retain(|_, f| !f.linger_over(now));
        let pool = &mut self.pool;
        let held = &mut self.recv_held_total;
        self.recv.retain(|_, f| {
            if f.linger_end().is_some_and(|t| t <= now) {
                f.release_all(pool, held);
                false
            } else {
                true
            }
        });
    }

    /// Whether a packet should be sent now for acknowledgements, Flow
    /// Exception Reports or Buffer Probes.
    ///
    /// `in_batch`: the driver is in the middle of a batch of datagrams read
    /// together. RFC 7016 3.6.3.4.5 asks for an acknowledgement "as soon
    /// as is practical" once ACK_NOW is set, which happens after every
    /// second packet with data (3.6.3.2) and after *every* packet while
    /// the sequence set has a gap (steps 8 and 14): on a lossy path, where
    /// lost NoRetransmit fragments leave gaps until the sender's next
    /// forward sequence number, that was one acknowledgement datagram
    /// (sealed, sent, received, opened, processed) per data datagram.
    /// Within a batch an obligatory acknowledgement waits until
    /// [`ACK_BATCH_PACKETS`] packets with data arrived since the last one;
    /// the rest goes when the batch ends (the caller asks again with
    /// `false`): at most one acknowledgement per four data packets, which
    /// still lets a sender's burst avoidance (six packets between
    /// acknowledgements, 3.5.2.2) keep sending; per [`ACK_CLOCK_PACKETS`]
    /// when the sender's flows carry the ack clock option (its burst
    /// avoidance counts packets acknowledged). Acknowledgements riding on
    /// user data are never held (3.6.3.4.6).
    pub fn wants_control(&self, now: Instant, in_batch: bool) -> bool {
        let batch = if self.peer_ack_clock {
            ACK_CLOCK_PACKETS
        } else {
            ACK_BATCH_PACKETS
        };
        let ack_now = self.ack_now && (!in_batch || self.rx_data_packets >= batch);
        let ack_due = ack_now || self.delack.is_some_and(|t| t <= now);
        (ack_due && self.recv.values().any(|f| f.should_ack))
            || self.send.values().any(|f| f.probe_due(now))
    }

    /// True if any sending flow marked time critical has queued data: the
    /// session is sending time critical data (RFC 7016 2.2.4, 3.5.2).
    pub fn time_critical(&self) -> bool {
        self.send
            .values()
            .any(|f| f.time_critical && f.has_queued())
    }

    /// Mark a sending flow's data as time critical (RFC 7016 2.2.4).
    pub fn set_time_critical(&mut self, flow: FlowId, on: bool) {
        if let Some(f) = self.send.get_mut(&flow.0) {
            f.time_critical = on;
        }
    }

    /// Start processing one received packet.
    pub fn begin_packet(&mut self, _now: Instant) {
        self.nud = None;
        self.pkt_has_data = false;
        self.pkt_has_ack = false;
    }

    /// Process one chunk of the current packet, in packet order.
    pub fn handle_chunk(&mut self, now: Instant, chunk: &Chunk<'_>) {
        match chunk {
            Chunk::UserData(u) => {
                self.nud = None;
                let Some(fsn) = u.sequence_number.checked_sub(u.fsn_offset) else {
                    self.stats.drop_malformed += 1;
                    return;
                };
                self.pkt_has_data = true;
                self.on_user_data(
                    now,
                    u.flow_id,
                    u.sequence_number,
                    fsn,
                    u.fsn_offset,
                    false,
                    recv::Frag {
                        fra: u.fragment_control,
                        abandon: u.abandon,
                        final_: u.final_,
                        options: u.options,
                        data: u.data,
                    },
                );
                self.nud = Some((u.flow_id, u.sequence_number, fsn));
            }
            Chunk::NextUserData(u) => {
                let Some((flow, prev, fsn)) = self.nud.take() else {
                    self.stats.drop_malformed += 1;
                    return;
                };
                let Some(sn) = prev.checked_add(1) else {
                    self.stats.drop_malformed += 1;
                    return;
                };
                self.pkt_has_data = true;
                self.on_user_data(
                    now,
                    flow,
                    sn,
                    fsn,
                    sn - fsn,
                    true,
                    recv::Frag {
                        fra: u.fragment_control,
                        abandon: u.abandon,
                        final_: u.final_,
                        options: u.options,
                        data: u.data,
                    },
                );
                self.nud = Some((flow, sn, fsn));
            }
            Chunk::BitmapAck {
                flow_id,
                buffer_blocks_available,
                cumulative_ack,
                bitmap,
            } => {
                self.nud = None;
                self.pkt_has_ack = true;
                self.on_ack(
                    now,
                    *flow_id,
                    *buffer_blocks_available,
                    *cumulative_ack,
                    send::AckBody::Bitmap(bitmap),
                );
            }
            Chunk::RangeAck {
                flow_id,
                buffer_blocks_available,
                cumulative_ack,
                ranges,
            } => {
                self.nud = None;
                self.pkt_has_ack = true;
                self.on_ack(
                    now,
                    *flow_id,
                    *buffer_blocks_available,
                    *cumulative_ack,
                    send::AckBody::Ranges(ranges),
                );
            }
            Chunk::BufferProbe { flow_id } => {
                self.nud = None;
                self.on_buffer_probe(*flow_id);
            }
            Chunk::FlowException { flow_id, exception } => {
                self.nud = None;
                self.on_flow_exception(now, *flow_id, *exception);
            }
            Chunk::Padding { .. } => {}
            _ => self.nud = None,
        }
    }

    /// Finish processing one received packet: negative acknowledgement and
    /// loss detection (3.6.2.5), RX_DATA_PACKETS and the delayed-ack alarm
    /// (3.6.3.2).
    pub fn end_packet(&mut self, now: Instant) {
        self.nud = None;
        if self.pkt_has_ack {
            self.detect_nacks(now);
        }
        if self.pkt_has_data {
            self.rx_data_packets = self.rx_data_packets.saturating_add(1);
            if self.rx_data_packets >= 2 {
                self.ack_now = true;
            }
        }
        if !self.ack_now && self.delack.is_none() && self.recv.values().any(|f| f.should_ack) {
            self.delack = Some(now + self.cfg.delayed_ack);
        }
    }

    /// Congestion-control feedback since the previous call.
    pub fn take_ack_summary(&mut self) -> AckSummary {
        std::mem::take(&mut self.summary)
    }
}
