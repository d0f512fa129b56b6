//! Sending on an established session: building one datagram in place
//! (header room reserved, chunks written by a [`ChunkSink`] straight into
//! the buffer, sealed in place), in a fixed order: mobility check Pings
//! (RFC 7016 3.5.4.2), Ping Replies owed on another path, PMTU probes
//! (3.5.4.3), then control (Close Ack, FIHellos, Close, Ping Replies,
//! keepalive) and flow acknowledgements and data (3.6) within the
//! congestion window.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::align::PlainAlign;
use super::timer::Timer;
use super::{
    near_mode, Session, SessionState, CLOSE_REQUEST_INTERVAL, PING_MOBILITY, PING_PMTU,
    PLAIN_OFFSET, SESSION_DATAGRAM_OVERHEAD, STALL_TRACKED_PACKETS,
};
use crate::crypto::{self, SESSION_HEADER_LEN, TAG_LEN};
use crate::flow::ChunkSink;
use crate::wire::packet::MULTIPLEX_HEADER_LEN;
use crate::wire::{Chunk, PacketHeader};

/// A datagram built with its encryption left for later (the driver's send
/// thread; docs/dataplane.md "More than one core"): its sequence number
/// is taken and written, its plain text is in place, and [`finish`]
/// encrypts it and writes the scrambled session ID (RFC 7016 2.2.2, which
/// depends on the ciphertext) in front, giving exactly the bytes the
/// session would have sent.
///
/// [`finish`]: DeferredSeal::finish
#[derive(Clone, Debug)]
pub struct DeferredSeal {
    seal: crypto::PendingSeal,
    session_id: u32,
}

impl DeferredSeal {
    /// Seal the datagram in place (`datagram` is the whole datagram, as
    /// built). A buffer of the wrong size is zeroed rather than sent in
    /// the clear (it cannot happen with the buffer it was built in).
    pub fn finish(&self, datagram: &mut [u8]) {
        let sealed = match datagram
            .get_mut(MULTIPLEX_HEADER_LEN..)
            .map(|p| self.seal.seal(p))
        {
            Some(Ok(r)) => datagram
                .get_mut(..MULTIPLEX_HEADER_LEN + r.end)
                .is_some_and(|d| {
                    crate::wire::packet::write_multiplex_header(d, self.session_id).is_ok()
                }),
            _ => false,
        };
        if !sealed {
            datagram.fill(0);
        }
    }
}

/// A [`ChunkSink`] writing chunks straight into the datagram buffer.
pub(crate) struct BufSink<'a> {
    pub buf: &'a mut [u8],
    pub pos: usize,
    pub end: usize,
    pub time_critical: bool,
}

impl ChunkSink for BufSink<'_> {
    fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    fn push(&mut self, chunk: &Chunk<'_>) -> bool {
        let Some(out) = self.buf.get_mut(self.pos..self.end) else {
            return false;
        };
        match chunk.emit(out) {
            Ok(n) => {
                self.pos += n;
                true
            }
            Err(_) => false,
        }
    }

    fn mark_time_critical(&mut self) {
        self.time_critical = true;
    }
}

pub(super) enum Content<'a> {
    Normal,
    CloseAck,
    /// A Ping alone (a probe of another path).
    Ping,
    PingReply(&'a [u8]),
    MobilityPing(SocketAddr),
    PmtuProbe(crate::pmtu::Probe),
}

impl Session {
    /// Build the next datagram of an established session into `buf`, or
    /// None if there is nothing to send now. Returns the destination and
    /// the datagram length.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(SocketAddr, usize)> {
        if self.final_close_ack {
            self.final_close_ack = false;
            return self.build(now, buf, self.dest, Content::CloseAck);
        }
        match self.state {
            SessionState::Open | SessionState::NearClose | SessionState::FarCloseLinger => {}
            _ => return None,
        }
        if let Some(addr) = self.mobility.pending.take() {
            if let Some(r) = self.build(now, buf, addr, Content::MobilityPing(addr)) {
                return Some(r);
            }
        }
        // A Ping that came over another path than DESTADDR is answered on
        // that path: with relayed routes a node is reachable at several
        // addresses, and the mobility check of RFC 7016 3.5.4.2 verifies the
        // path the Ping Reply's source address names, so the reply must
        // travel back the way the Ping came.
        if let Some(pos) = self.ping_replies.iter().position(|(a, _)| *a != self.dest) {
            if let Some((addr, msg)) = self.ping_replies.remove(pos) {
                if let Some(r) = self.build(now, buf, addr, Content::PingReply(&msg)) {
                    return Some(r);
                }
            }
        }
        if let Some(size) = self.pending_pmtu_probe.take() {
            if let Some(r) = self.build(now, buf, self.dest, Content::PmtuProbe(size)) {
                return Some(r);
            }
        }
        self.build(now, buf, self.dest, Content::Normal)
    }

    pub(super) fn build(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        to: SocketAddr,
        content: Content<'_>,
    ) -> Option<(SocketAddr, usize)> {
        let limit = match content {
            Content::PmtuProbe(p) => p.size,
            _ => self.pmtu.safe_size(),
        }
        .min(buf.len());
        if limit < SESSION_DATAGRAM_OVERHEAD + 16 {
            return None;
        }
        let end = limit - TAG_LEN;
        // A probe is exactly its size; other packets are padded to the
        // cipher's blocks where they have room (`align`).
        let align = match content {
            Content::PmtuProbe(_) => PlainAlign::NONE,
            _ => self.plain_align(),
        };
        let mut header = PacketHeader::new(near_mode(self.role));
        if let Some(ts) = self.ts.as_mut() {
            let f = ts.fields_to_send(now);
            header.timestamp = f.timestamp;
            header.timestamp_echo = f.echo;
        }
        header.time_critical_reverse = self.tcr_out;
        let hlen = header.encoded_len();
        let mut sink = BufSink {
            buf,
            pos: PLAIN_OFFSET + hlen,
            end,
            time_critical: false,
        };
        let start_pos = sink.pos;
        let mut data_bytes = 0;
        match content {
            Content::CloseAck => {
                sink.push(&Chunk::CloseAck);
            }
            Content::PingReply(m) => {
                sink.push(&Chunk::PingReply { message_echo: m });
            }
            Content::Ping => {
                sink.push(&Chunk::Ping { message: &[] });
            }
            Content::MobilityPing(addr) => {
                let ts = self.ms_since_created(now);
                let mac = crypto::mobility_mac(&self.mobility.secret, ts, addr);
                let mut msg = [0u8; 1 + 8 + crypto::MOBILITY_MAC_LEN];
                msg[0] = PING_MOBILITY;
                msg[1..9].copy_from_slice(&ts.to_be_bytes());
                msg[9..].copy_from_slice(&mac);
                sink.push(&Chunk::Ping { message: &msg });
            }
            Content::PmtuProbe(p) => {
                // RFC 7016 3.5.4.3: padding first, then the Ping.
                let id = p.id.to_be_bytes();
                let msg = [PING_PMTU, id[0], id[1], id[2], id[3]];
                let ping_len = 3 + msg.len();
                let pad = sink.remaining().saturating_sub(ping_len + 3);
                if pad > 0 {
                    let p0 = sink.pos;
                    sink.buf[p0] = 0xff;
                    sink.buf[p0 + 1] = (pad >> 8) as u8;
                    sink.buf[p0 + 2] = pad as u8;
                    sink.buf[p0 + 3..p0 + 3 + pad].fill(0);
                    sink.pos += 3 + pad;
                }
                sink.push(&Chunk::Ping { message: &msg });
            }
            Content::Normal => {
                if self.send_close_ack {
                    self.send_close_ack = false;
                    sink.push(&Chunk::CloseAck);
                }
                if let Some(c) = self.rekey.chunk() {
                    if sink.push(&c) {
                        self.rekey.out = None;
                    }
                }
                while let Some(c) = self.control_out.front() {
                    if sink.remaining() < c.len() {
                        break;
                    }
                    let p0 = sink.pos;
                    sink.buf[p0..p0 + c.len()].copy_from_slice(c);
                    sink.pos += c.len();
                    self.control_out.pop_front();
                }
                if self.state == SessionState::NearClose
                    && self.timers.is_expired(Timer::CloseRequest, now)
                {
                    sink.push(&Chunk::Close);
                    self.timers
                        .set(Timer::CloseRequest, now + CLOSE_REQUEST_INTERVAL);
                }
                while let Some((_, m)) = self.ping_replies.front() {
                    if sink.remaining() < m.len() + 3 {
                        break;
                    }
                    let Some((_, m)) = self.ping_replies.pop_front() else {
                        break;
                    };
                    sink.push(&Chunk::PingReply { message_echo: &m });
                }
                if self.pending_keepalive {
                    self.pending_keepalive = false;
                    sink.push(&Chunk::Ping { message: &[] });
                }
                if self.state == SessionState::Open {
                    self.flows.write_acks(now, &mut sink);
                    if self.cc.burst_allows() {
                        let budget = self.cc.send_budget(now, self.flows.outstanding_bytes());
                        if budget > 0 {
                            data_bytes = self.flows.write_data(now, &mut sink, budget);
                        }
                    }
                }
            }
        }
        if sink.pos == start_pos {
            return None;
        }
        header.time_critical = sink.time_critical;
        let buf = sink.buf;
        // RFC 7016 2.2.4: 0xff padding up to the cipher's natural size.
        let plain_end = PLAIN_OFFSET + align.padded(sink.pos - PLAIN_OFFSET, end - PLAIN_OFFSET);
        buf[sink.pos..plain_end].fill(0xff);
        header
            .emit(&mut buf[PLAIN_OFFSET..PLAIN_OFFSET + hlen])
            .ok()?;
        let sealer = self.sealer.as_mut()?;
        let plain_len = plain_end - PLAIN_OFFSET;
        let pkt = &mut buf[MULTIPLEX_HEADER_LEN..];
        // Ordinary packets may leave their encryption to the caller; probes,
        // pings and the final Close Ack are sealed here.
        let defer = self.defer_seal && matches!(content, Content::Normal);
        let sealed = if matches!(content, Content::CloseAck) {
            sealer.seal_final(pkt, SESSION_HEADER_LEN, plain_len)
        } else if defer {
            sealer
                .reserve(pkt, SESSION_HEADER_LEN, plain_len)
                .map(|seal| {
                    let range = seal.range();
                    self.pending_seal = Some(DeferredSeal {
                        seal,
                        session_id: self.send_sid,
                    });
                    range
                })
        } else {
            sealer.seal(pkt, SESSION_HEADER_LEN, plain_len)
        };
        let range = match sealed {
            Ok(r) => r,
            Err(_) => {
                // The send key ran out before a rekey replaced it: close
                // (with an event) from the rekey timer, right away.
                self.rekey.exhausted = true;
                self.timers.set(Timer::Rekey, now);
                return None;
            }
        };
        if sealer.wants_rekey() && self.rekey.is_idle() {
            self.timers.set(Timer::Rekey, now);
        }
        let total = MULTIPLEX_HEADER_LEN + range.end;
        if !defer {
            crate::wire::packet::write_multiplex_header(&mut buf[..total], self.send_sid).ok()?;
        }
        if data_bytes > 0 {
            self.cc
                .on_packet_sent(now, data_bytes, header.time_critical);
            if let Some(at) = self.cc.burst_release_at() {
                self.timers.set(Timer::Burst, at);
            }
            if self.timers.get(Timer::Rto).is_none() {
                self.timers.set(Timer::Rto, now + self.ert0());
            }
            let tsn = self.flows.last_tsn();
            if self.unacked.len() < STALL_TRACKED_PACKETS {
                self.unacked.push_back((tsn, now));
                if self.unacked.len() <= 2 {
                    self.arm_stall_check();
                }
            } else if let Some(last) = self.unacked.back_mut() {
                // Full: the last entry stands for every packet since.
                last.0 = tsn;
            }
        }
        if matches!(content, Content::Normal) {
            let due = self.timers.get(Timer::Keepalive).unwrap_or(now);
            let later = now + self.cfg.keepalive.min(Duration::from_secs(1));
            self.timers.set(Timer::Keepalive, due.max(later));
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += total as u64;
        Some((to, total))
    }

    /// Queue an encoded chunk (e.g. an FIHello) for the next packet.
    pub fn queue_chunk(&mut self, chunk: Vec<u8>) {
        if self.is_open() && self.control_out.len() < 64 {
            self.control_out.push_back(chunk);
        }
    }

    /// Set the Time Critical Reverse flag for outgoing packets.
    pub fn set_tcr(&mut self, on: bool) {
        self.tcr_out = on;
    }

    /// Whether `poll_transmit` may produce something right now; `in_batch`:
    /// a receive batch is being handed in, so obligatory acknowledgements
    /// may wait (`flow::FlowSet::wants_control`).
    pub fn wants_transmit(&self, now: Instant, in_batch: bool) -> bool {
        if self.final_close_ack {
            return true;
        }
        match self.state {
            SessionState::Open => {
                self.mobility.pending.is_some()
                    || self.pending_pmtu_probe.is_some()
                    || self.send_close_ack
                    || !self.ping_replies.is_empty()
                    || !self.control_out.is_empty()
                    || self.rekey.out.is_some()
                    || self.pending_keepalive
                    || self.flows.wants_control(now, in_batch)
                    || (self.flows.has_data_to_send() && self.cc.burst_allows())
            }
            SessionState::NearClose => {
                self.send_close_ack
                    || !self.ping_replies.is_empty()
                    || self.timers.is_expired(Timer::CloseRequest, now)
            }
            SessionState::FarCloseLinger => self.send_close_ack || !self.ping_replies.is_empty(),
            _ => false,
        }
    }
}
