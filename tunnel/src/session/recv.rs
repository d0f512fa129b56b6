//! Receiving on an established session (RFC 7016 3.5.2 - 3.5.5, 3.6):
//! authenticating a packet, timestamps and RTT, Ping and Ping Reply
//! (keepalive, address mobility 3.5.4.2, PMTU probes 3.5.4.3), Close and
//! Close Ack, FIHellos for the endpoint, and handing flow chunks to the
//! flow set with the acknowledgement feedback for congestion control.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::timer::Timer;
use super::{
    far_mode, CloseReason, Session, SessionState, DIRECT_PREFERRED_FOR, PING_MOBILITY, PING_PMTU,
};
use crate::crypto;
use crate::path::is_route_addr;
use crate::wire::{Chunk, PacketHeader};

/// What the endpoint should do after a session processed a packet.
#[derive(Debug, Default)]
pub(crate) struct RecvOutcome {
    /// FIHello chunks to act on: (epd, reply address, tag) copies.
    pub fihellos: Vec<(Vec<u8>, SocketAddr, Vec<u8>)>,
    pub closed: Option<CloseReason>,
}

impl Session {
    /// Decrypt a datagram addressed to this OPEN/closing session in place.
    /// Returns the plain packet range, or None if it does not authenticate.
    /// A packet under the next epoch's key completes a rekey
    /// (`rekey.rs`).
    pub fn open_packet(
        &mut self,
        now: Instant,
        encrypted: &mut [u8],
    ) -> Option<std::ops::Range<usize>> {
        let opener = self.opener.as_mut()?;
        let range = opener.open(encrypted).ok()?;
        if opener.take_switched() {
            self.on_peer_switched(now);
        }
        Some(range)
    }

    /// Process a decrypted packet of an established session (RFC 7016
    /// 3.5.2 - 3.5.5, 3.6). `from` is the packet's source address.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &PacketHeader,
        body: crate::wire::ChunkIter<'_>,
        datagram_len: usize,
        rng: &mut crate::Rng,
    ) -> RecvOutcome {
        let mut out = RecvOutcome::default();
        if header.mode != far_mode(self.role) {
            // RFC 7016 2.2.4: ignore packets carrying our own mark.
            return out;
        }
        if !matches!(
            self.state,
            SessionState::Open | SessionState::NearClose | SessionState::FarCloseLinger
        ) {
            return out;
        }
        self.stats.packets_received += 1;
        self.stats.bytes_received += datagram_len as u64;
        self.last_recv = now;
        if from == self.dest {
            self.last_recv_dest = now;
        }
        self.silent_rtos = 0;
        self.stalled = false;
        self.stall_reported = false;
        self.timers.stop(Timer::Stall);
        self.stall_probe = None;
        self.ping_outstanding = None;
        self.arm_idle();
        if let Some(ts) = self.ts.as_mut() {
            ts.on_packet_received(now, header.timestamp, header.timestamp_echo);
            let ert0 = ts.rtt.ert0();
            self.cc.set_rto(ert0);
            self.cc.set_srtt(ts.rtt.srtt());
            self.flows.set_ert0(ert0);
            self.flows.set_srtt(ts.rtt.srtt());
        }
        self.cc
            .on_packet_received(now, header.time_critical_reverse);
        let open = self.state == SessionState::Open;
        if open {
            self.flows.begin_packet(now);
        }
        for chunk in body {
            let Ok(chunk) = chunk else { break };
            match chunk {
                Chunk::Ping { message } if self.ping_replies.len() < 8 && message.len() <= 1400 => {
                    self.ping_replies.push_back((from, message.to_vec()));
                }
                Chunk::PingReply { message_echo } => {
                    self.handle_ping_reply(now, from, message_echo)
                }
                Chunk::Close => {
                    // RFC 7016 3.5.5.
                    self.send_close_ack = true;
                    if self.state == SessionState::Open {
                        self.set_state(now, SessionState::FarCloseLinger);
                        out.closed = Some(CloseReason::Remote);
                    }
                }
                Chunk::CloseAck => {
                    let was_open = self.state == SessionState::Open;
                    self.set_state(now, SessionState::Closed);
                    self.final_close_ack = false;
                    if was_open {
                        out.closed = Some(CloseReason::Remote);
                    }
                    return out;
                }
                Chunk::FIHello {
                    epd,
                    reply_address,
                    tag,
                } if open && out.fihellos.len() < 4 => {
                    out.fihellos
                        .push((epd.to_vec(), reply_address.addr, tag.to_vec()));
                }
                Chunk::Rekey(f) if open => self.on_rekey_chunk(now, false, &f, rng),
                Chunk::RekeyAck(f) if open => self.on_rekey_chunk(now, true, &f, rng),
                ref c if open && c.is_flow_chunk() => {
                    self.flows.handle_chunk(now, c);
                }
                _ => {}
            }
        }
        if open {
            self.flows.end_packet(now);
            self.apply_ack_feedback(now);
            self.arm_stall_check();
        }
        // RFC 7016 3.5.4.2: a valid packet from an address other than
        // DESTADDR starts a verification, never an immediate move.
        let sticky = is_route_addr(&from)
            && !is_route_addr(&self.dest)
            && now.saturating_duration_since(self.last_recv_dest) < DIRECT_PREFERRED_FOR;
        if self.state == SessionState::Open && from != self.dest && !sticky {
            let due = self
                .mobility
                .tx_ts
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
            if due {
                self.mobility.tx_ts = Some(now);
                self.mobility.pending = Some(from);
            }
        }
        out
    }

    fn apply_ack_feedback(&mut self, now: Instant) {
        let s = self.flows.take_ack_summary();
        if s.acks_received > 0 {
            let before = self.flows.outstanding_bytes() + s.acked_bytes + s.lost_bytes;
            self.cc.on_ack(now, s.acked_bytes, before);
            self.timers.stop(Timer::Burst);
            if self.flows.outstanding_bytes() == 0 {
                self.timers.stop(Timer::Rto);
            } else {
                self.timers.set(Timer::Rto, now + self.ert0());
            }
        }
        if s.any_reliable_nack_loss {
            // The lost fragment left at least a round trip ago.
            let rtt = self.srtt().unwrap_or(self.ert0());
            let sent_at = now.checked_sub(rtt).unwrap_or(now);
            self.cc
                .on_nack_loss(now, s.lost_bytes - s.no_retransmit_lost_bytes, sent_at);
        }
        if s.no_retransmit_lost_bytes > 0 {
            self.cc.on_frame_loss(now, s.no_retransmit_lost_bytes);
        }
        // Size-selective loss: a path that shrank under the current packet
        // size while small packets still cross it (pmtu module docs).
        if self
            .pmtu
            .on_large_fragments(now, s.large_acked, s.large_lost)
        {
            self.stats.black_hole_checks += 1;
        }
    }

    fn handle_ping_reply(&mut self, now: Instant, from: SocketAddr, msg: &[u8]) {
        match msg.first() {
            Some(&PING_MOBILITY) if msg.len() == 1 + 8 + crypto::MOBILITY_MAC_LEN => {
                let ts = u64::from_be_bytes(msg[1..9].try_into().unwrap_or([0; 8]));
                let now_ms = self.ms_since_created(now);
                // Not more than 132 s old, newer than the last accepted.
                if now_ms.saturating_sub(ts) > 132_000 || ts <= self.mobility.rx_ts {
                    return;
                }
                if crypto::mobility_check(&self.mobility.secret, ts, from, &msg[9..]) {
                    self.mobility.rx_ts = ts;
                    if from != self.dest {
                        self.set_dest(now, from);
                    }
                }
            }
            Some(&PING_PMTU) if msg.len() == 5 => {
                let id = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]);
                if self.pmtu.on_probe_acked(now, id).is_some() {
                    self.pmtu_changed();
                }
            }
            _ => {
                // Keepalive reply: live bidirectional connectivity.
            }
        }
    }
}
