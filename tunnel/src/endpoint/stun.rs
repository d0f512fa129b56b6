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
                StunEvent::Mapped { tx, server, mapped } => {
                    Event::StunResult { tx, server, mapped }
                }
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
                if !self.cfg.stun_responder {
                    return self.drop_packet(DropReason::Unsolicited);
                }
                if !self.preauth(now, Kind::Stun, from) {
                    return;
                }
                let budget = data.len().saturating_mul(AMPLIFICATION_FACTOR);
                match stun::answer_binding(data, from, budget) {
                    Some(resp) if self.startup_out.len() < 1024 => {
                        self.stats.stun_answered += 1;
                        self.startup_out
                            .push_back((from, resp, TransmitKind::Answer));
                    }
                    Some(_) => {}
                    None => self.drop_packet(DropReason::Amplification),
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
}
