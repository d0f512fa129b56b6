//! The endpoint as Forwarder and Redirector (RFC 7016 3.5.1.4 - 3.5.1.6):
//! an IHello for another node whose peer has an OPEN session here is
//! forwarded to it as an FIHello, or answered with a Redirect listing the
//! addresses the peer was seen at and reported. This is how members
//! introduce each other across NATs; it is policy about third parties,
//! kept apart from the handshake proper.

use std::net::SocketAddr;

use super::{DropReason, Endpoint};
use crate::crypto::{Epd, DEFAULT_HEADER_LEN, TAG_LEN};
use crate::wire::address::write_address_list;
use crate::wire::packet::MULTIPLEX_HEADER_LEN;
use crate::wire::{Address, AddressOrigin, Chunk};
use crate::NodeId;

impl Endpoint {
    /// An IHello for another node (RFC 7016 3.5.1.4 - 3.5.1.6): Forwarder
    /// and/or Redirector for the peer of an OPEN session.
    pub(super) fn introduce(
        &mut self,
        from: SocketAddr,
        parsed: &Epd,
        epd: &[u8],
        tag: &[u8],
        budget: usize,
    ) {
        let Some((sid, peer)) = self.find_open_for_epd(parsed) else {
            return self.drop_packet(DropReason::Unsolicited);
        };
        if self.cfg.forwarder {
            let reply = Address::new(from, AddressOrigin::Reflexive);
            let fihello = Chunk::FIHello {
                epd,
                reply_address: reply,
                tag,
            };
            let mut buf = vec![0u8; fihello.encoded_len()];
            if fihello.emit(&mut buf).is_ok() {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.queue_chunk(buf);
                    self.stats.fihellos_forwarded += 1;
                }
            }
        }
        if self.cfg.redirector {
            let mut addrs = Vec::new();
            if let Some(s) = self.sessions.get(&sid) {
                addrs.push(Address::new(s.dest(), AddressOrigin::Reflexive));
            }
            if let Some(l) = self.peer_local_addrs.get(&peer) {
                for &a in l {
                    if !addrs.iter().any(|x| x.addr == a) {
                        addrs.push(Address::new(a, AddressOrigin::Local));
                    }
                }
            }
            // Keep within the amplification budget.
            let fixed = MULTIPLEX_HEADER_LEN + DEFAULT_HEADER_LEN + TAG_LEN + 1 + 3 + 1 + tag.len();
            while !addrs.is_empty()
                && fixed + addrs.iter().map(|a| a.encoded_len()).sum::<usize>() > budget
            {
                addrs.pop();
            }
            let mut list = vec![0u8; addrs.iter().map(|a| a.encoded_len()).sum()];
            if write_address_list(&mut list, &addrs).is_ok() {
                let chunk = Chunk::Redirect {
                    tag_echo: tag,
                    addresses: &list,
                };
                if self.queue_startup(from, 0, &[chunk], 0, Some(budget)) {
                    self.stats.redirects_sent += 1;
                }
            }
        }
    }
    fn find_open_for_epd(&self, epd: &Epd) -> Option<(u32, NodeId)> {
        match epd {
            Epd::Node(id) => {
                let sid = *self.by_peer.get(id)?;
                Some((sid, *id))
            }
            Epd::Fingerprint(_) => self.sessions.values().find_map(|s| {
                let c = s.far_cert()?;
                (s.is_open() && epd.selects(c)).then(|| (s.id().0, c.node_id()))
            }),
            Epd::Any => None,
        }
    }
}
