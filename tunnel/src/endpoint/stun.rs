//! STUN on the RTMFP port (RFC 8489): Binding requests answered (only when
//! configured as a STUN responder; rate-limited and never larger than
//! [`AMPLIFICATION_FACTOR`] times the request) and the endpoint's own
//! queries ([`Endpoint::stun_query`]), whose answers tell a node its
//! reflexive address. Separate because STUN shares the socket, not the
//! protocol: nothing here touches a session.

use std::net::SocketAddr;
use std::time::Instant;

use super::{CommandError, DropReason, Endpoint, Event, Kind, TransmitKind, AMPLIFICATION_FACTOR};
use crate::stun::{self, StunEvent, StunKind, StunTxId};

impl Endpoint {
    /// Ask `server` (a STUN server, or any ringlan endpoint: every endpoint
    /// answers Binding requests on its RTMFP port) which address it sees
    /// us at. The answer arrives as [`Event::StunResult`] or
    /// [`Event::StunFailed`] (RFC 8489 6.2.1 retransmissions included).
    pub fn stun_query(
        &mut self,
        now: Instant,
        server: SocketAddr,
    ) -> Result<StunTxId, CommandError> {
        let tx = self.stun.query(now, &mut self.rng, server)?;
        self.drain_stun();
        Ok(tx)
    }
    /// Move the STUN client's requests to the startup queue and its
    /// results to the event queue.
    pub(super) fn drain_stun(&mut self) {
        while let Some((dest, req)) = self.stun.poll_transmit() {
            if self.startup_out.len() < 1024 {
                self.startup_out
                    .push_back((dest, req, TransmitKind::Opening));
            }
        }
        while let Some(ev) = self.stun.poll_event() {
            self.events.push_back(match ev {
                StunEvent::Mapped {
                    tx,
                    server,
                    mapped,
                    other,
                } => Event::StunResult {
                    tx,
                    server,
                    mapped,
                    other,
                },
                StunEvent::Failed { tx, server } => Event::StunFailed { tx, server },
            });
        }
    }
    /// A datagram that [`stun::looks_like_stun`]: answer Binding requests
    /// (within the STUN budgets of `limiter.rs`, never larger than
    /// [`AMPLIFICATION_FACTOR`] times the request), hand responses to the
    /// client.
    pub(super) fn handle_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        match stun::classify(data) {
            StunKind::BindingRequest => {
                let other = self.cfg.stun_other;
                if let Some(resp) = self.binding_answer(now, from, data, other) {
                    if self.startup_out.len() < 1024 {
                        self.startup_out
                            .push_back((from, resp, TransmitKind::Answer));
                    }
                }
            }
            StunKind::BindingResponse => {
                if self.stun.handle_response(data) {
                    self.drain_stun();
                } else {
                    self.drop_packet(DropReason::Unsolicited);
                }
            }
            StunKind::Other => self.drop_packet(DropReason::Malformed),
        }
    }

    /// A datagram that arrived on the node's alternate STUN socket
    /// ([`EndpointConfig::stun_other`]): the answer to send back from that
    /// socket, if it is a Binding request this responder answers (the
    /// same STUN budgets as on the RTMFP port, never larger than
    /// [`AMPLIFICATION_FACTOR`] times the request; no OTHER-ADDRESS).
    /// Anything else is dropped and counted.
    pub fn answer_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        if !stun::looks_like_stun(data) || stun::classify(data) != StunKind::BindingRequest {
            self.drop_packet(DropReason::Malformed);
            return None;
        }
        self.binding_answer(now, from, data, None)
    }

    /// The answer to Binding request `data` from `from` within the STUN
    /// budgets (`limiter.rs`) and the amplification bound; counted.
    fn binding_answer(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        other: Option<SocketAddr>,
    ) -> Option<Vec<u8>> {
        if !self.cfg.stun_responder {
            self.drop_packet(DropReason::Unsolicited);
            return None;
        }
        if !self.preauth(now, Kind::Stun, from) {
            return None;
        }
        let budget = data.len().saturating_mul(AMPLIFICATION_FACTOR);
        let Some(resp) = stun::answer_binding(data, from, budget, other) else {
            self.drop_packet(DropReason::Amplification);
            return None;
        };
        self.stats.stun_answered += 1;
        Some(resp)
    }
}
