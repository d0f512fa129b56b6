//! STUN (RFC 8489, formerly RFC 5389) on the RTMFP port: a Binding
//! responder every endpoint runs, a sans-IO Binding client that learns the
//! node's reflexive (server-reflexive, "mapped") address, and the NAT
//! mapping classification of RFC 4787 section 4.1 derived from what two
//! servers saw.
//!
//! The wire codec is the `stun-types` crate; this module only decides
//! what to answer and when to retransmit.
//!
//! Demultiplexing (RFC 8489 section 6.3 / RFC 7983 style): a STUN message
//! starts with two zero bits, has the magic cookie 0x2112A442 at bytes
//! 4..8 and a length field (bytes 2..4) that is a multiple of 4 and equals
//! the datagram length minus the 20-byte header. An RTMFP datagram
//! (RFC 7016 2.2.1) starts with a scrambled session id and an encrypted
//! packet, so all three hold for it only by a 2^-48-ish accident; the
//! endpoint checks [`looks_like_stun`] before RTMFP decoding.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_types::attribute::{
    Attribute, AttributeFromRaw, AttributeStaticType, AttributeType, AttributeWrite,
    AttributeWriteExt, ErrorCode, Fingerprint, MappedSocketAddr, MessageIntegrity,
    MessageIntegritySha256, RawAttribute, UnknownAttributes, Username, XorMappedAddress,
};
use stun_types::message::StunParseError;
use stun_types::message::{
    Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    TransactionId, BINDING, MAGIC_COOKIE,
};

use crate::Rng;

/// The fixed STUN header (RFC 8489 5).
pub const HEADER_LEN: usize = 20;

/// Cheap classification of a received datagram: true if it is shaped like
/// a STUN message (see the module docs). Never panics.
pub fn looks_like_stun(data: &[u8]) -> bool {
    let (Some(&b0), Some(len), Some(cookie)) = (data.first(), data.get(2..4), data.get(4..8))
    else {
        return false;
    };
    if data.len() < HEADER_LEN || b0 & 0xc0 != 0 || cookie != MAGIC_COOKIE.to_be_bytes() {
        return false;
    }
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    len % 4 == 0 && HEADER_LEN.checked_add(len) == Some(data.len())
}

/// What a received STUN message is, after [`looks_like_stun`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunKind {
    /// A Binding request: answer it with [`answer_binding`].
    BindingRequest,
    /// A Binding success or error response: give it to [`StunClient`].
    BindingResponse,
    /// Anything else (indications, other methods, malformed).
    Other,
}

/// Parse `data` far enough to know what it is.
pub fn classify(data: &[u8]) -> StunKind {
    let Ok(msg) = Message::from_bytes(data) else {
        return StunKind::Other;
    };
    if !msg.has_method(BINDING) {
        return StunKind::Other;
    }
    match msg.class() {
        MessageClass::Request => StunKind::BindingRequest,
        MessageClass::Success | MessageClass::Error => StunKind::BindingResponse,
        MessageClass::Indication => StunKind::Other,
    }
}

/// Comprehension-required attributes (RFC 8489 14) a Binding request may
/// carry that we understand (we do not authenticate Binding requests, so
/// credentials are accepted and ignored, as RFC 8489 9 allows for a server
/// without authentication).
const KNOWN_REQUIRED: [AttributeType; 3] = [
    Username::TYPE,
    MessageIntegrity::TYPE,
    MessageIntegritySha256::TYPE,
];

/// OTHER-ADDRESS (RFC 5780 7.4, type 0x802C, comprehension-optional): the
/// server's alternate address, where a second Binding request sees the
/// client's mapping towards another port. ringlan's introducers answer on
/// their RTMFP port and on an alternate port of the same IP; an
/// unspecified IP in the attribute means "the IP you asked" (the
/// introducer may not know its public IP: it often listens on 0.0.0.0),
/// see [`resolve_other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherAddress {
    addr: MappedSocketAddr,
}

impl OtherAddress {
    pub fn new(addr: SocketAddr) -> Self {
        OtherAddress {
            addr: MappedSocketAddr::new(addr),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.addr()
    }
}

impl AttributeStaticType for OtherAddress {
    const TYPE: AttributeType = AttributeType::new(0x802c);
}

impl Attribute for OtherAddress {
    fn get_type(&self) -> AttributeType {
        Self::TYPE
    }
    fn length(&self) -> u16 {
        self.addr.length()
    }
}

impl AttributeWrite for OtherAddress {
    fn to_raw(&self) -> RawAttribute<'_> {
        self.addr.to_raw(Self::TYPE)
    }
    fn write_into_unchecked(&self, dest: &mut [u8]) {
        self.write_header_unchecked(dest);
        if let Some(d) = dest.get_mut(4..) {
            self.addr.write_into_unchecked(d);
        }
    }
}

impl AttributeFromRaw<'_> for OtherAddress {
    fn from_raw_ref(raw: &RawAttribute) -> Result<Self, StunParseError> {
        raw.check_type_and_len(Self::TYPE, 8..=20)?;
        Ok(OtherAddress {
            addr: MappedSocketAddr::from_raw(raw)?,
        })
    }
}

/// Where to send the second Binding request after `server` answered with
/// OTHER-ADDRESS `other`: `other` itself, or with `server`'s IP when
/// `other`'s is unspecified (of either family: a dual-stack responder
/// writes `[::]`). `None` when `other` is unusable (port 0, another address
/// family, or `server` itself).
pub fn resolve_other(server: SocketAddr, other: SocketAddr) -> Option<SocketAddr> {
    let addr = if other.ip().is_unspecified() {
        SocketAddr::new(server.ip(), other.port())
    } else {
        other
    };
    (addr.port() != 0 && addr.is_ipv4() == server.is_ipv4() && addr != server).then_some(addr)
}

/// The answer to a Binding request from `from` (RFC 8489 6.3.1): a success
/// response with XOR-MAPPED-ADDRESS (and OTHER-ADDRESS `other`, RFC 5780
/// 7.4, when given and the answer still fits `max_len`; plus FINGERPRINT
/// if the request had one), or a 420 error listing unknown
/// comprehension-required attributes. `None` if `request` is not a
/// well-formed Binding request or the answer would exceed `max_len` (no
/// amplification).
pub fn answer_binding(
    request: &[u8],
    from: SocketAddr,
    max_len: usize,
    other: Option<SocketAddr>,
) -> Option<Vec<u8>> {
    let with_other = other.and_then(|o| binding_response(request, from, Some(o)));
    match with_other {
        Some(out) if out.len() <= max_len => Some(out),
        _ => binding_response(request, from, None).filter(|out| out.len() <= max_len),
    }
}

fn binding_response(
    request: &[u8],
    from: SocketAddr,
    other: Option<SocketAddr>,
) -> Option<Vec<u8>> {
    let msg = Message::from_bytes(request).ok()?;
    if !msg.has_method(BINDING) || !msg.has_class(MessageClass::Request) {
        return None;
    }
    let tid = msg.transaction_id();
    let unknown: Vec<AttributeType> = msg
        .iter_attributes()
        .map(|(_, a)| a.get_type())
        .filter(|t| t.comprehension_required() && !KNOWN_REQUIRED.contains(t))
        .take(8)
        .collect();
    let out = if unknown.is_empty() {
        let mut out = Message::builder(
            MessageType::from_class_method(MessageClass::Success, BINDING),
            tid,
            MessageWriteVec::with_capacity(64),
        );
        // An IPv4 source is encoded with the IPv4 family even if it was
        // read through a dual-stack socket as IPv4-mapped.
        let from = crate::path::canonical_addr(from);
        out.add_attribute(&XorMappedAddress::new(from, tid)).ok()?;
        if let Some(o) = other {
            out.add_attribute(&OtherAddress::new(o)).ok()?;
        }
        if msg.has_attribute(Fingerprint::TYPE) {
            out.add_fingerprint().ok()?;
        }
        out.finish()
    } else {
        let mut out = Message::builder(
            MessageType::from_class_method(MessageClass::Error, BINDING),
            tid,
            MessageWriteVec::with_capacity(64),
        );
        out.add_attribute(&ErrorCode::new(420, "Unknown Attribute").ok()?)
            .ok()?;
        out.add_attribute(&UnknownAttributes::new(&unknown)).ok()?;
        out.finish()
    };
    Some(out)
}

/// Handle of one Binding transaction (its 96-bit transaction id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StunTxId(pub u128);

/// Client retransmission parameters (RFC 8489 6.2.1, with a smaller cap
/// than Rc = 7: the agent repeats queries periodically anyway).
#[derive(Debug, Clone)]
pub struct StunClientConfig {
    /// Initial RTO (RFC 8489: 500 ms); doubles after each transmission.
    pub rto: Duration,
    /// Transmissions per transaction (Rc).
    pub max_transmissions: u32,
    /// After the last transmission, wait this many initial RTOs (Rm).
    pub final_wait: u32,
    /// Transactions in flight at most.
    pub max_transactions: usize,
}

impl Default for StunClientConfig {
    fn default() -> Self {
        StunClientConfig {
            rto: Duration::from_millis(500),
            max_transmissions: 4,
            final_wait: 4,
            max_transactions: 32,
        }
    }
}

/// What the client reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunEvent {
    /// `server` saw us at `mapped`; it named an alternate address
    /// `other` (OTHER-ADDRESS, RFC 5780 7.4, as sent: see
    /// [`resolve_other`]).
    Mapped {
        tx: StunTxId,
        server: SocketAddr,
        mapped: SocketAddr,
        other: Option<SocketAddr>,
    },
    /// No usable answer: timed out, error response or no mapped address.
    Failed { tx: StunTxId, server: SocketAddr },
}

#[derive(Debug)]
struct Transaction {
    id: TransactionId,
    server: SocketAddr,
    request: Vec<u8>,
    sent: u32,
    next: Instant,
    rto: Duration,
}

/// Errors of a STUN query ([`crate::Endpoint::stun_query`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("too many STUN transactions in flight")]
    TooManyTransactions,
    #[error("cannot encode the STUN request")]
    Encode,
}

/// Sans-IO Binding client (RFC 8489 6.2.1 over UDP). Transaction ids come
/// from the caller's seeded [`Rng`].
#[derive(Debug)]
pub struct StunClient {
    cfg: StunClientConfig,
    txs: Vec<Transaction>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<StunEvent>,
}

impl StunClient {
    pub fn new(cfg: StunClientConfig) -> Self {
        StunClient {
            cfg,
            txs: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Start a Binding transaction to `server`; the first request is ready
    /// in [`StunClient::poll_transmit`] at once.
    pub fn query(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        server: SocketAddr,
    ) -> Result<StunTxId, StunError> {
        if self.txs.len() >= self.cfg.max_transactions {
            return Err(StunError::TooManyTransactions);
        }
        let mut b = [0u8; 16];
        rng.fill(&mut b[4..]);
        let raw = u128::from_be_bytes(b);
        let id = TransactionId::from(raw);
        let mut req = Message::builder(
            MessageType::from_class_method(MessageClass::Request, BINDING),
            id,
            MessageWriteVec::with_capacity(28),
        );
        req.add_fingerprint().map_err(|_| StunError::Encode)?;
        let request = req.finish();
        self.out.push_back((server, request.clone()));
        self.txs.push(Transaction {
            id,
            server,
            request,
            sent: 1,
            next: now + self.cfg.rto,
            rto: self.cfg.rto,
        });
        Ok(StunTxId(raw))
    }

    /// A STUN response (see [`classify`]); returns false if it matches no
    /// transaction (stale, duplicate or forged).
    pub fn handle_response(&mut self, data: &[u8]) -> bool {
        let Ok(msg) = Message::from_bytes(data) else {
            return false;
        };
        if !msg.is_response() || !msg.has_method(BINDING) {
            return false;
        }
        let tid = msg.transaction_id();
        let Some(i) = self.txs.iter().position(|t| t.id == tid) else {
            return false;
        };
        let t = self.txs.swap_remove(i);
        let tx = StunTxId(u128::from(tid));
        let success = msg.has_class(MessageClass::Success);
        let mapped = success
            .then(|| msg.attribute::<XorMappedAddress>().ok())
            .flatten()
            .map(|x| crate::path::canonical_addr(x.addr(tid)));
        let other = success
            .then(|| msg.attribute::<OtherAddress>().ok())
            .flatten()
            .map(|o| crate::path::canonical_addr(o.addr()));
        self.events.push_back(match mapped {
            Some(mapped) => StunEvent::Mapped {
                tx,
                server: t.server,
                mapped,
                other,
            },
            None => StunEvent::Failed {
                tx,
                server: t.server,
            },
        });
        true
    }

    /// The earliest retransmission or give-up time.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.txs.iter().map(|t| t.next).min()
    }

    /// Retransmit due requests (RTO doubling); fail transactions whose
    /// final wait is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        let cfg = &self.cfg;
        let mut i = 0;
        while let Some(t) = self.txs.get_mut(i) {
            if t.next > now {
                i += 1;
                continue;
            }
            if t.sent >= cfg.max_transmissions {
                let t = self.txs.swap_remove(i);
                self.events.push_back(StunEvent::Failed {
                    tx: StunTxId(u128::from(t.id)),
                    server: t.server,
                });
                continue;
            }
            t.sent += 1;
            t.rto = t.rto.saturating_mul(2);
            t.next = if t.sent >= cfg.max_transmissions {
                now + cfg.rto.saturating_mul(cfg.final_wait)
            } else {
                now + t.rto
            };
            self.out.push_back((t.server, t.request.clone()));
            i += 1;
        }
    }

    /// The next request to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<StunEvent> {
        self.events.pop_front()
    }

    /// Transactions in flight.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.txs.len()
    }
}

/// NAT mapping behaviour (RFC 4787 4.1) as far as two servers can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatMapping {
    /// Two servers saw the same mapped address ("cone-like"); also the
    /// result without NAT.
    EndpointIndependent,
    /// Different servers saw different mapped addresses ("symmetric-like"):
    /// a reflexive address is useless to other peers.
    EndpointDependent,
    /// Fewer than two servers of one address family answered.
    Unknown,
}

impl NatMapping {
    pub fn as_str(self) -> &'static str {
        match self {
            NatMapping::EndpointIndependent => "endpoint-independent",
            NatMapping::EndpointDependent => "endpoint-dependent",
            NatMapping::Unknown => "unknown",
        }
    }
}

/// Classify from `(server, mapped)` observations (latest per server). Only
/// servers of the same address family as each other are compared; any two
/// different servers that saw different mapped addresses make the mapping
/// endpoint-dependent.
pub fn classify_mapping(observations: &[(SocketAddr, SocketAddr)]) -> NatMapping {
    let mut result = NatMapping::Unknown;
    for (i, (s1, m1)) in observations.iter().enumerate() {
        for (s2, m2) in observations.iter().skip(i + 1) {
            if s1 == s2 || s1.is_ipv4() != s2.is_ipv4() || m1.is_ipv4() != m2.is_ipv4() {
                continue;
            }
            if m1 != m2 {
                return NatMapping::EndpointDependent;
            }
            result = NatMapping::EndpointIndependent;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// RFC 5769 2.2: sample IPv4 response.
    const RFC5769_V4_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];

    /// RFC 5769 2.3: sample IPv6 response.
    const RFC5769_V6_RESPONSE: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01,
        0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9,
        0x00, 0x08, 0x00, 0x14, 0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9,
        0x7c, 0x82, 0x92, 0xc2, 0x75, 0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb,
        0x0b, 0x4c,
    ];

    /// RFC 5769 2.1: sample request (SOFTWARE, PRIORITY, ICE-CONTROLLED,
    /// USERNAME, MESSAGE-INTEGRITY, FINGERPRINT).
    const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];

    const RFC5769_TID: u128 = 0xb7e7_a701_bc34_d686_fa87_dfae;

    fn client_with_tx(tid: u128, server: SocketAddr) -> StunClient {
        let mut c = StunClient::new(StunClientConfig::default());
        c.txs.push(Transaction {
            id: TransactionId::from(tid),
            server,
            request: Vec::new(),
            sent: 1,
            next: Instant::now(),
            rto: Duration::from_millis(500),
        });
        c
    }

    #[test]
    fn rfc5769_vectors_are_stun_and_classified() {
        for v in [
            &RFC5769_REQUEST[..],
            &RFC5769_V4_RESPONSE[..],
            &RFC5769_V6_RESPONSE[..],
        ] {
            assert!(looks_like_stun(v));
        }
        assert_eq!(classify(&RFC5769_REQUEST), StunKind::BindingRequest);
        assert_eq!(classify(&RFC5769_V4_RESPONSE), StunKind::BindingResponse);
        // A corrupted fingerprint makes the message unusable.
        let mut bad = RFC5769_V4_RESPONSE;
        bad[79] ^= 1;
        assert!(looks_like_stun(&bad));
        assert_eq!(classify(&bad), StunKind::Other);
    }

    #[test]
    fn rfc5769_responses_give_mapped_addresses() {
        let server = sa("198.51.100.1:3478");
        for (v, want) in [
            (&RFC5769_V4_RESPONSE[..], "192.0.2.1:32853"),
            (
                &RFC5769_V6_RESPONSE[..],
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            ),
        ] {
            let mut c = client_with_tx(RFC5769_TID, server);
            assert!(c.handle_response(v));
            assert_eq!(
                c.poll_event(),
                Some(StunEvent::Mapped {
                    tx: StunTxId(RFC5769_TID),
                    server,
                    mapped: sa(want),
                    other: None,
                })
            );
            assert_eq!(c.in_flight(), 0);
            // A duplicate answer matches nothing any more.
            assert!(!c.handle_response(v));
        }
    }

    #[test]
    fn answer_to_rfc5769_request_reflects_the_source() {
        // The request carries PRIORITY (0x0024), comprehension-required and
        // unknown to a plain Binding server: 420 with UNKNOWN-ATTRIBUTES.
        let from = sa("203.0.113.9:40000");
        let r = answer_binding(&RFC5769_REQUEST, from, 300, None).unwrap();
        let m = Message::from_bytes(&r).unwrap();
        assert!(m.has_class(MessageClass::Error));
        assert_eq!(m.attribute::<ErrorCode>().unwrap().code(), 420);
        let u = m.attribute::<UnknownAttributes>().unwrap();
        assert!(u.has_attribute(AttributeType::new(0x0024)));
        assert_eq!(u128::from(m.transaction_id()), RFC5769_TID);
    }

    #[test]
    fn client_request_answered_by_responder() {
        let now = Instant::now();
        let mut rng = Rng::from_seed([7; 32]);
        let mut c = StunClient::new(StunClientConfig::default());
        let server = sa("198.51.100.7:4910");
        let tx = c.query(now, &mut rng, server).unwrap();
        let (to, req) = c.poll_transmit().unwrap();
        assert_eq!(to, server);
        assert!(looks_like_stun(&req));
        assert_eq!(classify(&req), StunKind::BindingRequest);
        for from in [sa("203.0.113.5:61000"), sa("[2001:db8::5]:61000")] {
            let resp = answer_binding(&req, from, req.len() * 3, None).unwrap();
            assert!(
                resp.len() <= req.len() * 2,
                "{} vs {}",
                resp.len(),
                req.len()
            );
            assert!(looks_like_stun(&resp));
            assert_eq!(classify(&resp), StunKind::BindingResponse);
            let mut c2 = client_with_tx(tx.0, server);
            assert!(c2.handle_response(&resp));
            assert_eq!(
                c2.poll_event(),
                Some(StunEvent::Mapped {
                    tx,
                    server,
                    mapped: from,
                    other: None,
                })
            );
        }
        // A source read as IPv4-mapped through a dual-stack socket is
        // answered with the IPv4 family (what an IPv4-only client can use),
        // and a server that encodes it mapped anyway is read as IPv4.
        let resp = answer_binding(&req, sa("[::ffff:203.0.113.5]:61000"), 1000, None).unwrap();
        let m = Message::from_bytes(&resp).unwrap();
        let x = m.attribute::<XorMappedAddress>().unwrap();
        assert_eq!(x.addr(m.transaction_id()), sa("203.0.113.5:61000"));
        let mut b = Message::builder(
            MessageType::from_class_method(MessageClass::Success, BINDING),
            m.transaction_id(),
            MessageWriteVec::with_capacity(64),
        );
        b.add_attribute(&XorMappedAddress::new(
            sa("[::ffff:203.0.113.5]:61000"),
            m.transaction_id(),
        ))
        .unwrap();
        let mut c3 = client_with_tx(tx.0, server);
        assert!(c3.handle_response(&b.finish()));
        assert_eq!(
            c3.poll_event(),
            Some(StunEvent::Mapped {
                tx,
                server,
                mapped: sa("203.0.113.5:61000"),
                other: None,
            })
        );
        // Budget too small: no answer at all.
        assert!(answer_binding(&req, sa("203.0.113.5:1"), 20, None).is_none());
        // A response is not a request.
        let resp = answer_binding(&req, sa("203.0.113.5:1"), 1000, None).unwrap();
        assert!(answer_binding(&resp, sa("203.0.113.5:1"), 1000, None).is_none());
    }

    #[test]
    fn other_address_is_answered_and_read() {
        let now = Instant::now();
        let mut rng = Rng::from_seed([8; 32]);
        let mut c = StunClient::new(StunClientConfig::default());
        let server = sa("198.51.100.7:4910");
        let tx = c.query(now, &mut rng, server).unwrap();
        let (_, req) = c.poll_transmit().unwrap();
        let from = sa("203.0.113.5:61000");
        let other = sa("0.0.0.0:4911");
        let resp = answer_binding(&req, from, req.len() * 3, Some(other)).unwrap();
        // Header, XOR-MAPPED-ADDRESS, OTHER-ADDRESS, FINGERPRINT.
        assert_eq!(resp.len(), 20 + 12 + 12 + 8);
        let m = Message::from_bytes(&resp).unwrap();
        assert_eq!(m.attribute::<OtherAddress>().unwrap().addr(), other);
        assert!(c.handle_response(&resp));
        assert_eq!(
            c.poll_event(),
            Some(StunEvent::Mapped {
                tx,
                server,
                mapped: from,
                other: Some(other),
            })
        );
        assert_eq!(resolve_other(server, other), Some(sa("198.51.100.7:4911")));
        assert_eq!(
            resolve_other(server, sa("198.51.100.9:3479")),
            Some(sa("198.51.100.9:3479"))
        );
        assert_eq!(resolve_other(server, sa("0.0.0.0:4910")), None);
        assert_eq!(resolve_other(server, sa("0.0.0.0:0")), None);
        // A dual-stack responder ([::]) answering an IPv4 client.
        assert_eq!(
            resolve_other(server, sa("[::]:4911")),
            Some(sa("198.51.100.7:4911"))
        );
        assert_eq!(resolve_other(server, sa("[2001:db8::1]:4911")), None);
        // No room for OTHER-ADDRESS within the budget: answered without it
        // (an IPv6 answer to a 20-byte request), never dropped for it.
        let bare = {
            let b = Message::builder(
                MessageType::from_class_method(MessageClass::Request, BINDING),
                TransactionId::from(5u128),
                MessageWriteVec::with_capacity(20),
            );
            b.finish()
        };
        let v6 = sa("[2001:db8::5]:61000");
        let resp = answer_binding(&bare, v6, bare.len() * 3, Some(sa("[::]:4911"))).unwrap();
        let m = Message::from_bytes(&resp).unwrap();
        assert!(m.attribute::<OtherAddress>().is_err());
        assert_eq!(
            m.attribute::<XorMappedAddress>()
                .unwrap()
                .addr(m.transaction_id()),
            v6
        );
        let resp = answer_binding(&bare, from, bare.len() * 3, Some(other)).unwrap();
        let m = Message::from_bytes(&resp).unwrap();
        assert_eq!(m.attribute::<OtherAddress>().unwrap().addr(), other);
    }

    #[test]
    fn retransmissions_double_then_fail() {
        let t0 = Instant::now();
        let mut rng = Rng::from_seed([1; 32]);
        let mut c = StunClient::new(StunClientConfig::default());
        let server = sa("198.51.100.7:3478");
        let tx = c.query(t0, &mut rng, server).unwrap();
        let first = c.poll_transmit().unwrap().1;
        let mut sends = vec![Duration::ZERO];
        while let Some(t) = c.poll_timeout() {
            c.handle_timeout(t);
            while let Some((to, req)) = c.poll_transmit() {
                assert_eq!(to, server);
                assert_eq!(req, first, "retransmissions repeat the request");
                sends.push(t - t0);
            }
        }
        let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 500, 1500, 3500]);
        assert_eq!(c.poll_event(), Some(StunEvent::Failed { tx, server }));
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn transaction_ids_come_from_the_rng_and_differ() {
        let now = Instant::now();
        let mut a = StunClient::new(StunClientConfig::default());
        let mut b = StunClient::new(StunClientConfig::default());
        let s = sa("198.51.100.7:3478");
        let (mut r1, mut r2) = (Rng::from_seed([3; 32]), Rng::from_seed([3; 32]));
        let t1 = a.query(now, &mut r1, s).unwrap();
        let t2 = b.query(now, &mut r2, s).unwrap();
        assert_eq!(t1, t2, "deterministic from the seed");
        let t3 = a.query(now, &mut r1, s).unwrap();
        assert_ne!(t1, t3);
        assert!(t1.0 < (1u128 << 96));
    }

    #[test]
    fn cap_on_transactions() {
        let now = Instant::now();
        let mut rng = Rng::from_seed([3; 32]);
        let mut c = StunClient::new(StunClientConfig {
            max_transactions: 2,
            ..StunClientConfig::default()
        });
        let s = sa("198.51.100.7:3478");
        c.query(now, &mut rng, s).unwrap();
        c.query(now, &mut rng, s).unwrap();
        assert_eq!(
            c.query(now, &mut rng, s),
            Err(StunError::TooManyTransactions)
        );
    }

    #[test]
    fn not_stun() {
        assert!(!looks_like_stun(&[]));
        assert!(!looks_like_stun(&[0u8; 19]));
        let mut v = RFC5769_V4_RESPONSE;
        v[0] |= 0x40;
        assert!(!looks_like_stun(&v));
        let mut v = RFC5769_V4_RESPONSE;
        v[5] ^= 1;
        assert!(!looks_like_stun(&v));
        // Length field inconsistent with the datagram.
        assert!(!looks_like_stun(&RFC5769_V4_RESPONSE[..76]));
        let mut v = RFC5769_V4_RESPONSE.to_vec();
        v.extend_from_slice(&[0; 4]);
        assert!(!looks_like_stun(&v));
        // Garbage never panics the classifier or the responder.
        let mut rng = Rng::from_seed([9; 32]);
        for n in 0..200 {
            let mut g = vec![0u8; 20 + (n % 40) * 4];
            rng.fill(&mut g);
            g[0] &= 0x3f;
            let body = (g.len() - 20) as u16;
            g[2..4].copy_from_slice(&body.to_be_bytes());
            g[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            assert!(looks_like_stun(&g));
            let _ = classify(&g);
            let _ = answer_binding(&g, sa("192.0.2.1:1"), 1000, Some(sa("0.0.0.0:2")));
            let mut c = StunClient::new(StunClientConfig::default());
            assert!(!c.handle_response(&g));
        }
    }

    #[test]
    fn mapping_classification() {
        let s1 = sa("198.51.100.7:4910");
        let s2 = sa("203.0.113.1:3478");
        let s6 = sa("[2001:db8::1]:3478");
        let m1 = sa("192.0.2.200:40000");
        let m2 = sa("192.0.2.200:40001");
        let m6 = sa("[2001:db8::9]:40000");
        use NatMapping::*;
        assert_eq!(classify_mapping(&[]), Unknown);
        assert_eq!(classify_mapping(&[(s1, m1)]), Unknown);
        assert_eq!(classify_mapping(&[(s1, m1), (s1, m2)]), Unknown);
        assert_eq!(classify_mapping(&[(s1, m1), (s6, m6)]), Unknown);
        assert_eq!(classify_mapping(&[(s1, m1), (s2, m1)]), EndpointIndependent);
        assert_eq!(classify_mapping(&[(s1, m1), (s2, m2)]), EndpointDependent);
        assert_eq!(
            classify_mapping(&[(s1, m1), (s6, m6), (s2, m1)]),
            EndpointIndependent
        );
        assert_eq!(EndpointDependent.as_str(), "endpoint-dependent");
    }
}
