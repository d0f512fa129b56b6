//! Session startup (RFC 7016 3.5.1): the initiator's IHello and IIKeying
//! with their retransmissions, the responder's stateless RHello (cookies,
//! 3.5.1.2) and RIKeying, glare (3.5.1.3), Redirects received, and the
//! startup packets themselves (Default Session Key, fragmented when large,
//! 3.4). Split from `mod.rs` because it is the one part of the endpoint
//! that runs before a [`Session`] has keys: everything here is sealed with
//! the Default Session Key and answers strangers, so it carries the
//! amplification and rate limits.

use super::recent::Recent;
use std::net::SocketAddr;
use std::time::Instant;

use super::{
    DropReason, Endpoint, Event, Kind, TransmitKind, AMPLIFICATION_FACTOR, IHELLO_MIN_DATAGRAM,
    STARTUP_MTU,
};
use crate::crypto::{
    self, Certificate, CookieCheck, Epd, Identity, InitiatorKeying, Role, DEFAULT_HEADER_LEN,
    TAG_LEN,
};
use crate::path::Path;
use crate::session::{
    CloseReason, Keying, OpenFailure, ResponderEcho, Session, SessionId, SessionState,
};
use crate::wire::chunk::{
    iikeying_signed_len, rikeying_signed_portion_len, write_iikeying_signed,
    write_rikeying_signed_portion,
};
use crate::wire::fragment::{Fragmenter, ReassemblyOutcome};
use crate::wire::packet::{write_multiplex_header, MULTIPLEX_HEADER_LEN};
use crate::wire::{Chunk, ChunkIter, PacketHeader, PacketMode};
use crate::NodeId;

impl Endpoint {
    /// The IHello datagram (RFC 7016 2.3.2, 3.5.1.1.1) of a session in
    /// IHELLO_SENT, sealed with the Default Session Key and padded like the
    /// endpoint's own IHellos, for the driver to send to addresses the
    /// session does not list as candidates: birthday punching
    /// ([`crate::Birthday`]) sends it from many sockets or to many ports. An
    /// RHello from any address is accepted by its tag (as after a
    /// Forwarder's introduction, 3.5.1.5). `None` unless IHELLO_SENT.
    pub fn ihello_datagram(&mut self, session: SessionId) -> Option<Vec<u8>> {
        let s = self.sessions.get(&session.0)?;
        if s.state() != SessionState::IHelloSent {
            return None;
        }
        let o = s.opening()?;
        let ch = Chunk::IHello {
            epd: &o.epd,
            tag: &o.tag,
        };
        let mut chunk = vec![0u8; ch.encoded_len()];
        ch.emit(&mut chunk).ok()?;
        let before = self.startup_out.len();
        let probe = SocketAddr::from(([0, 0, 0, 0], 0));
        self.queue_startup_raw_padded(
            probe,
            0,
            &[&chunk],
            IHELLO_MIN_DATAGRAM,
            TransmitKind::Opening,
        );
        if self.startup_out.len() != before + 1 {
            // Not queued (queue full) or fragmented (never: an IHello is small).
            while self.startup_out.len() > before {
                self.startup_out.pop_back();
            }
            return None;
        }
        self.startup_out.pop_back().map(|(_, d, _)| d)
    }
    pub(super) fn handle_startup_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        enc: &mut [u8],
        datagram_len: usize,
    ) {
        let Ok(range) = self.default.open(enc) else {
            return self.drop_packet(DropReason::NotMember);
        };
        let plain = enc[range].to_vec();
        self.handle_startup_plain(now, from, &plain, datagram_len, true);
    }
    fn handle_startup_plain(
        &mut self,
        now: Instant,
        from: SocketAddr,
        plain: &[u8],
        datagram_len: usize,
        allow_fragments: bool,
    ) {
        let Ok((header, n)) = PacketHeader::parse(plain) else {
            return self.drop_packet(DropReason::Malformed);
        };
        if header.mode != PacketMode::Startup {
            return self.drop_packet(DropReason::WrongMode);
        }
        for chunk in ChunkIter::new(&plain[n..]) {
            let Ok(chunk) = chunk else {
                self.drop_packet(DropReason::Malformed);
                break;
            };
            match chunk {
                Chunk::IHello { epd, tag } => {
                    // Before the limiter: replays of one captured IHello
                    // from spoofed sources take no startup tokens.
                    if !self.ihellos_seen.admit(now, tag, from) {
                        self.drop_packet(DropReason::ReplayedIHello);
                        continue;
                    }
                    if !self.preauth(now, Kind::Startup, from) {
                        continue;
                    }
                    self.answer_ihello(now, from, epd, tag, datagram_len, true);
                }
                Chunk::RHello {
                    tag_echo,
                    cookie,
                    responder_certificate,
                } => self.handle_rhello(now, from, tag_echo, cookie, responder_certificate),
                Chunk::Redirect {
                    tag_echo,
                    addresses,
                } => self.handle_redirect(now, from, tag_echo, addresses),
                Chunk::IIKeying { .. } => self.handle_iikeying(now, from, &chunk),
                Chunk::PacketFragment { .. } if allow_fragments => {
                    match self
                        .reassembly
                        .insert_chunk(now, from, PacketMode::Startup, &chunk)
                    {
                        ReassemblyOutcome::Complete(p) => {
                            self.handle_startup_plain(now, from, &p, p.len(), false)
                        }
                        ReassemblyOutcome::Discarded(_) => self.drop_packet(DropReason::Malformed),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
    /// IHello (or FIHello as IHello) from `from` (RFC 7016 3.5.1.1.2,
    /// 3.5.1.4, 3.5.1.5).
    pub(super) fn answer_ihello(
        &mut self,
        now: Instant,
        from: SocketAddr,
        epd: &[u8],
        tag: &[u8],
        request_len: usize,
        direct: bool,
    ) {
        let Ok(parsed) = Epd::parse(epd) else {
            return self.drop_packet(DropReason::Malformed);
        };
        let budget = request_len.max(IHELLO_MIN_DATAGRAM) * AMPLIFICATION_FACTOR;
        if parsed.selects(self.cfg.identity.certificate()) {
            let cookie = self.cookies.make(self.now_secs(now), from);
            let cert = self.cfg.identity.certificate().as_bytes().to_vec();
            let chunk = Chunk::RHello {
                tag_echo: tag,
                cookie: &cookie,
                responder_certificate: &cert,
            };
            if self.queue_startup(from, 0, &[chunk], 0, Some(budget)) {
                self.stats.ihellos_answered += 1;
            }
            return;
        }
        if direct {
            self.introduce(from, &parsed, epd, tag, budget);
        }
    }
    fn opening_by_tag(&self, tag: &[u8]) -> Option<u32> {
        self.sessions.values().find_map(|s| {
            let o = s.opening()?;
            (o.tag.as_slice() == tag).then_some(s.id().0)
        })
    }
    fn handle_redirect(&mut self, now: Instant, from: SocketAddr, tag: &[u8], addresses: &[u8]) {
        let Some(sid) = self.opening_by_tag(tag) else {
            return self.drop_packet(DropReason::Unsolicited);
        };
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.state() != SessionState::IHelloSent {
            return;
        }
        let list: Vec<SocketAddr> = if addresses.is_empty() {
            vec![from] // Implied Redirect (2.3.5)
        } else {
            crate::wire::address::AddressIter::new(addresses)
                .filter_map(|a| a.ok().map(|a| a.addr))
                .collect()
        };
        for a in list {
            s.add_candidate(now, a);
        }
    }
    fn handle_rhello(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tag: &[u8],
        cookie: &[u8],
        cert_bytes: &[u8],
    ) {
        let Some(sid) = self.opening_by_tag(tag) else {
            return self.drop_packet(DropReason::Unsolicited);
        };
        let Ok(cert) = Certificate::parse(cert_bytes, &self.cfg.network) else {
            return self.drop_packet(DropReason::BadCertificate);
        };
        if cert.fingerprint() == self.cfg.identity.fingerprint() {
            // Our own RHello (we are at one of our candidates).
            return self.drop_packet(DropReason::Unsolicited);
        }
        let peer = cert.node_id();
        // Duplicate suppression (RFC 7016 3.5.1.1.1 step 1).
        let dup = self.sessions.values().find_map(|s| {
            (s.id().0 != sid
                && matches!(s.state(), SessionState::KeyingSent | SessionState::Open)
                && s.peer() == Some(peer))
            .then_some(s.id())
        });
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if s.state() != SessionState::IHelloSent {
            return;
        }
        let Some(o) = s.opening() else { return };
        if !crypto::epd_matches(&cert, &o.epd) && Epd::parse(&o.epd) != Ok(Epd::Any) {
            return self.drop_packet(DropReason::BadCertificate);
        }
        if let Some(other) = dup {
            s.close(now);
            self.events.push_back(Event::SessionFailed {
                session: SessionId(sid),
                reason: OpenFailure::Duplicate(other),
            });
            return;
        }
        let keying = InitiatorKeying::new(&mut self.rng, self.cfg.identity.session_suites());
        let cookie = cookie.to_vec();
        let Some(chunk) = build_iikeying(&self.cfg.identity, sid, &cookie, &keying) else {
            return;
        };
        let first = self.cfg.session.initial_retransmit;
        let k = Keying::new(now, cert, cookie, keying, chunk, first);
        s.enter_keying(now, from, k);
    }
    /// Responder side of IIKeying (RFC 7016 3.5.1.1.2, 3.5.1.2, 3.5.1.3).
    fn handle_iikeying(&mut self, now: Instant, from: SocketAddr, chunk: &Chunk<'_>) {
        let Chunk::IIKeying {
            initiator_session_id,
            cookie_echo,
            initiator_certificate,
            skic,
            signed,
            signature,
        } = *chunk
        else {
            return;
        };
        // The cookie first: a MAC, and stateless (3.5.1.2). Only then the
        // startup budget, before a reply or a signature check.
        let check = self.cookies.check(self.now_secs(now), from, cookie_echo);
        if check == CookieCheck::Invalid {
            return self.drop_packet(DropReason::BadCookie);
        }
        if !self.preauth(now, Kind::Startup, from) {
            return;
        }
        match check {
            CookieCheck::Invalid => {}
            CookieCheck::WrongAddress => {
                let new_cookie = self.cookies.make(self.now_secs(now), from);
                let c = Chunk::CookieChange {
                    old_cookie: cookie_echo,
                    new_cookie: &new_cookie,
                };
                self.queue_startup(from, initiator_session_id, &[c], 0, None);
                self.stats.cookie_changes_sent += 1;
                return;
            }
            CookieCheck::Valid => {}
        }
        let Ok(cert) = Certificate::parse(initiator_certificate, &self.cfg.network) else {
            return self.drop_packet(DropReason::BadCertificate);
        };
        if crypto::verify_iikeying(&cert, signed, signature).is_err() {
            return self.drop_packet(DropReason::BadSignature);
        }
        let near = self.cfg.identity.certificate().clone();
        if cert.fingerprint() == near.fingerprint() {
            return self.drop_packet(DropReason::BadCertificate);
        }
        let peer = cert.node_id();
        let skic_id = KeyingsSeen::id(skic);
        let echoed = self.sessions.values().find_map(|s| {
            let e = s.responder_echo()?;
            (s.is_open()
                && s.role() == Role::Responder
                && e.far_session_id == initiator_session_id
                && e.skic == skic
                && s.peer() == Some(peer))
            .then(|| e.rikeying.clone())
        });
        if let Some(rik) = echoed {
            self.queue_startup_raw(from, initiator_session_id, &[&rik], None);
            self.stats.rikeyings_resent += 1;
            return;
        }
        // The same IIKeying after its session ended: a replay (the
        // initiator's ephemeral secret is gone with that session).
        if self.keyings_seen.contains(now, &skic_id) {
            return self.drop_packet(DropReason::ReplayedKeying);
        }
        // Glare (3.5.1.3): an opening session toward this identity/address.
        let mut reuse_id = None;
        let glare = self.sessions.values().find_map(|s| {
            let o = s.opening()?;
            let to_it = Epd::parse(&o.epd).is_ok_and(|e| e != Epd::Any && e.selects(&cert))
                || s.far_cert().is_some_and(|c| c.node_id() == peer)
                || (s.state() == SessionState::KeyingSent && s.dest() == from);
            to_it.then_some(s.id().0)
        });
        if let Some(gid) = glare {
            if !crypto::certificate_overrides(&near, &cert) {
                // We prevail: the far end aborts on our IIKeying. If ours
                // is still in IHELLO_SENT, its IHellos may not reach the far
                // end at all (its IIKeying came on a path we have not tried,
                // e.g. one opened by birthday punching): try that address
                // too. It is proven: the cookie echo shows the far end got
                // our RHello there and the IIKeying is signed by it.
                // In KEYING_SENT our IIKeying goes to the address the RHello
                // came from, and that path may have died since (a route
                // torn down, a NAT mapping gone): the far end would then
                // retransmit its IIKeying until the open timeout, each one
                // ignored here. Send ours on the path theirs came on too (one
                // for each of the far end's, which it paces).
                if let Some(s) = self.sessions.get_mut(&gid) {
                    match s.state() {
                        SessionState::IHelloSent if s.add_candidate(now, from) => {
                            self.maybe_opening = true;
                        }
                        SessionState::KeyingSent => {
                            s.keying_also_to(now, from);
                            self.maybe_opening = true;
                        }
                        _ => {}
                    }
                }
                return;
            }
            self.remove_session(gid);
            reuse_id = Some(gid);
        }
        // An OPEN session with this identity or from this address (not a
        // replacement still waiting for confirmation).
        let unconfirmed = &self.unconfirmed;
        let open = self.sessions.values().find_map(|s| {
            (matches!(s.state(), SessionState::Open)
                && !unconfirmed.contains_key(&s.id().0)
                && (s.peer() == Some(peer) || s.dest() == from))
                .then_some(s.id().0)
        });
        let mut replaces = None;
        if let Some(oid) = open {
            let Some(s) = self.sessions.get(&oid) else {
                return;
            };
            let same = s
                .far_cert()
                .is_some_and(|c| crypto::same_identity(c, &cert));
            if !same {
                return;
            }
            // A new session from the same identity: the far end restarted
            // and lost the old one, or this IIKeying is a replay (valid
            // cookie, good signature) whose keys nobody holds. Keep the
            // old session until the new one proves itself with a packet
            // under its keys (`confirm_replacement`); one candidate per
            // peer at a time.
            replaces = Some(oid);
            let stale: Vec<u32> = self
                .unconfirmed
                .keys()
                .copied()
                .filter(|n| self.sessions.get(n).and_then(Session::peer) == Some(peer))
                .collect();
            for n in stale {
                self.remove_session(n);
            }
        }
        if reuse_id.is_none() && self.sessions.len() >= self.cfg.max_sessions {
            return self.drop_packet(DropReason::TooManySessions);
        }
        let supported = self.cfg.identity.session_suites();
        let Ok((skrc, keys)) = crypto::respond(
            &mut self.rng,
            &self.cfg.secret,
            &near,
            supported,
            &cert,
            skic,
        ) else {
            return self.drop_packet(DropReason::BadKeying);
        };
        let id = reuse_id.unwrap_or_else(|| self.alloc_session_id());
        // RIKeying (2.3.8).
        let plen = rikeying_signed_portion_len(&skrc);
        let mut portion = vec![0u8; plen];
        if write_rikeying_signed_portion(&mut portion, id, &skrc).is_err() {
            return;
        }
        let sig = crypto::sign_rikeying(&self.cfg.identity, &portion, skic);
        let rik = Chunk::RIKeying {
            responder_session_id: id,
            skrc: &skrc,
            signed_portion: &portion,
            signature: &sig,
        };
        let mut rik_bytes = vec![0u8; rik.encoded_len()];
        if rik.emit(&mut rik_bytes).is_err() {
            return;
        }
        let mob = self.rng.bytes32();
        let echo = ResponderEcho {
            far_session_id: initiator_session_id,
            skic: skic.to_vec(),
            rikeying: rik_bytes.clone(),
        };
        let s = Session::new_responder(
            SessionId(id),
            now,
            from,
            initiator_session_id,
            cert,
            keys,
            echo,
            mob,
            self.cfg.session.clone(),
        );
        self.insert_session(s);
        self.keyings_seen.insert(now, skic_id);
        self.queue_startup_raw(from, initiator_session_id, &[&rik_bytes], None);
        if let Some(oid) = replaces {
            self.unconfirmed.insert(id, oid);
            return;
        }
        self.announce_responder(id, peer, from);
    }

    /// A responder session is OPEN for the application.
    fn announce_responder(&mut self, id: u32, peer: NodeId, from: SocketAddr) {
        self.by_peer.insert(peer, id);
        self.note_peer_address(id, from);
        self.events.push_back(Event::SessionOpened {
            session: SessionId(id),
            peer,
            path: Path::from_addr(from),
            role: Role::Responder,
        });
    }

    /// A packet opened under the keys of session `sid`: if it is a
    /// replacement waiting for confirmation, the far end holds its keys
    /// (it is no replay): close the old session (Replaced) and announce
    /// the new one.
    pub(super) fn confirm_replacement(&mut self, now: Instant, sid: u32) {
        let Some(old) = self.unconfirmed.remove(&sid) else {
            return;
        };
        let Some((peer, dest)) = self
            .sessions
            .get(&sid)
            .and_then(|s| Some((s.peer()?, s.dest())))
        else {
            return;
        };
        if let Some(o) = self.sessions.get_mut(&old) {
            if o.is_open() {
                o.close_abruptly(now);
                self.session_closed(old, peer, CloseReason::Replaced);
            }
        }
        self.announce_responder(sid, peer, dest);
    }
    /// RIKeying or Cookie Change for a KEYING_SENT session (default key,
    /// our receive session id).
    pub(super) fn handle_keying_reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sid: u32,
        enc: &mut [u8],
    ) {
        let Ok(range) = self.default.open(enc) else {
            return self.drop_packet(DropReason::BadSessionPacket);
        };
        let plain = &enc[range];
        let Ok((header, n)) = PacketHeader::parse(plain) else {
            return self.drop_packet(DropReason::Malformed);
        };
        if header.mode != PacketMode::Startup {
            return self.drop_packet(DropReason::WrongMode);
        }
        for chunk in ChunkIter::new(&plain[n..]) {
            let Ok(chunk) = chunk else { break };
            match chunk {
                Chunk::RIKeying {
                    responder_session_id,
                    skrc,
                    signed_portion,
                    signature,
                } => {
                    let Some(s) = self.sessions.get_mut(&sid) else {
                        return;
                    };
                    let Some(k) = s.keying() else {
                        return;
                    };
                    if crypto::verify_rikeying(
                        &k.far_cert,
                        signed_portion,
                        k.keying.skic(),
                        signature,
                    )
                    .is_err()
                    {
                        return self.drop_packet(DropReason::BadSignature);
                    }
                    let Ok(keys) = k.keying.complete(
                        &self.cfg.secret,
                        self.cfg.identity.certificate(),
                        &k.far_cert,
                        skrc,
                    ) else {
                        return self.drop_packet(DropReason::BadKeying);
                    };
                    if responder_session_id == 0 {
                        return self.drop_packet(DropReason::BadKeying);
                    }
                    s.enter_open(now, responder_session_id, keys);
                    let peer = s.peer().unwrap_or_default();
                    let dest = s.dest();
                    let path = Path::from_addr(dest);
                    let _ = from;
                    self.by_peer.insert(peer, sid);
                    self.note_peer_address(sid, dest);
                    self.events.push_back(Event::SessionOpened {
                        session: SessionId(sid),
                        peer,
                        path,
                        role: Role::Initiator,
                    });
                    return;
                }
                Chunk::CookieChange {
                    old_cookie,
                    new_cookie,
                } => {
                    // RFC 7016 3.5.1.2.
                    let Some(s) = self.sessions.get_mut(&sid) else {
                        return;
                    };
                    let Some(k) = s.keying_mut() else {
                        return;
                    };
                    if k.cookie_changed || k.cookie != old_cookie {
                        continue;
                    }
                    k.cookie = new_cookie.to_vec();
                    k.cookie_changed = true;
                    if let Some(c) = build_iikeying(&self.cfg.identity, sid, &k.cookie, &k.keying) {
                        s.resend_iikeying(now, c);
                    }
                }
                _ => {}
            }
        }
    }
    /// Queue due IHellos and IIKeyings of opening sessions.
    pub(super) fn queue_opening_packets(&mut self, now: Instant) {
        if !self.maybe_opening {
            return;
        }
        let mut opening = false;
        let mut out: Vec<(SocketAddr, Vec<u8>, bool)> = Vec::new();
        for s in self.sessions.values_mut() {
            opening |= s.is_opening();
            s.take_due_startup(now, &mut out);
        }
        self.maybe_opening = opening;
        for (dest, chunk, pad) in out {
            let min = if pad { IHELLO_MIN_DATAGRAM } else { 0 };
            self.queue_startup_raw_padded(dest, 0, &[&chunk], min, TransmitKind::Opening);
        }
    }
    /// Encode and queue a startup packet (Default Session Key, mode 3).
    /// Returns false if it was not sent (amplification budget exceeded).
    pub(super) fn queue_startup(
        &mut self,
        dest: SocketAddr,
        sid: u32,
        chunks: &[Chunk<'_>],
        min_len: usize,
        budget: Option<usize>,
    ) -> bool {
        let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(chunks.len());
        for c in chunks {
            let mut b = vec![0u8; c.encoded_len()];
            if c.emit(&mut b).is_err() {
                return false;
            }
            encoded.push(b);
        }
        let refs: Vec<&[u8]> = encoded.iter().map(|v| v.as_slice()).collect();
        let size = startup_datagram_len(&refs);
        if let Some(b) = budget {
            if size > b {
                self.drop_packet(DropReason::Amplification);
                return false;
            }
        }
        self.queue_startup_raw_padded(dest, sid, &refs, min_len, TransmitKind::Answer);
        true
    }
    fn queue_startup_raw(
        &mut self,
        dest: SocketAddr,
        sid: u32,
        chunks: &[&[u8]],
        _budget: Option<usize>,
    ) {
        self.queue_startup_raw_padded(dest, sid, chunks, 0, TransmitKind::Answer);
    }
    fn queue_startup_raw_padded(
        &mut self,
        dest: SocketAddr,
        sid: u32,
        chunks: &[&[u8]],
        min_len: usize,
        kind: TransmitKind,
    ) {
        if self.startup_out.len() >= 1024 {
            return;
        }
        let header = PacketHeader::new(PacketMode::Startup);
        let mut plain = vec![0u8; header.encoded_len()];
        if header.emit(&mut plain).is_err() {
            return;
        }
        for c in chunks {
            plain.extend_from_slice(c);
        }
        let overhead = MULTIPLEX_HEADER_LEN + DEFAULT_HEADER_LEN + TAG_LEN;
        if plain.len() + overhead < min_len {
            // Padding chunk (type 0xff, 2.3) up to the minimum size.
            let pad = (min_len - plain.len() - overhead).saturating_sub(3);
            plain.push(0xff);
            plain.extend_from_slice(&(pad as u16).to_be_bytes());
            plain.resize(plain.len() + pad, 0);
        }
        if plain.len() + overhead > STARTUP_MTU {
            // RFC 7016 3.4: fragment unavoidably large startup packets.
            let pid = self.next_packet_id;
            self.next_packet_id += 1;
            let max_chunk = STARTUP_MTU - overhead - header.encoded_len();
            let Ok(frags) = Fragmenter::new(&plain, pid, max_chunk) else {
                return;
            };
            let frags: Vec<Vec<u8>> = frags
                .map(|c| {
                    let mut b = vec![0u8; c.encoded_len()];
                    let _ = c.emit(&mut b);
                    b
                })
                .collect();
            for f in frags {
                let mut p = vec![0u8; header.encoded_len()];
                let _ = header.emit(&mut p);
                p.extend_from_slice(&f);
                self.seal_startup(dest, sid, &p, kind);
            }
            return;
        }
        self.seal_startup(dest, sid, &plain, kind);
    }
    fn seal_startup(&mut self, dest: SocketAddr, sid: u32, plain: &[u8], kind: TransmitKind) {
        let start = MULTIPLEX_HEADER_LEN + DEFAULT_HEADER_LEN;
        let mut buf = vec![0u8; start + plain.len() + TAG_LEN];
        buf[start..start + plain.len()].copy_from_slice(plain);
        let Ok(r) = self.default.seal(
            &mut self.rng,
            &mut buf[MULTIPLEX_HEADER_LEN..],
            DEFAULT_HEADER_LEN,
            plain.len(),
        ) else {
            return;
        };
        buf.truncate(MULTIPLEX_HEADER_LEN + r.end);
        if write_multiplex_header(&mut buf, sid).is_err() {
            return;
        }
        self.startup_out.push_back((dest, buf, kind));
    }
}

fn startup_datagram_len(chunks: &[&[u8]]) -> usize {
    MULTIPLEX_HEADER_LEN
        + DEFAULT_HEADER_LEN
        + 1
        + chunks.iter().map(|c| c.len()).sum::<usize>()
        + TAG_LEN
}

/// The IIKeyings that opened sessions, kept for the cookie lifetime (a
/// replayed IIKeying needs a valid cookie, so an older one cannot be
/// replayed at all). Keyed by the SKIC's X25519 public key, unique per
/// handshake. Bounded: entries are made only for signed IIKeyings within
/// the startup budget; past [`KeyingsSeen::CAP`] the oldest is forgotten
/// (a replay of it then meets the replacement rule of `handle_iikeying`).
pub(super) struct KeyingsSeen(Recent<[u8; 32], ()>);

impl Default for KeyingsSeen {
    fn default() -> Self {
        KeyingsSeen(Recent::new(Self::CAP, Self::KEEP))
    }
}

impl KeyingsSeen {
    const CAP: usize = 16_384;
    /// The cookie lifetime, plus its one-second granularity and a margin.
    const KEEP: std::time::Duration = std::time::Duration::from_secs(crypto::COOKIE_LIFETIME + 2);

    fn id(skic: &[u8]) -> [u8; 32] {
        let mut id = [0u8; 32];
        if let Some(p) = skic.get(2..34) {
            id.copy_from_slice(p);
        }
        id
    }

    fn contains(&mut self, now: Instant, id: &[u8; 32]) -> bool {
        self.0.get_mut(now, id).is_some()
    }

    fn insert(&mut self, now: Instant, id: [u8; 32]) {
        self.0.insert(now, id, ());
    }
}

/// The IHello tags answered lately and from where. An initiator sends its
/// IHello (one tag) again from the same address, or from a few (its
/// candidates, birthday-punch sockets behind one NAT); a captured IHello
/// replayed from thousands of spoofed sources is one tag from everywhere.
/// A tag is answered to at most [`IHellosSeen::MAX_SOURCES`] sources within
/// [`IHellosSeen::KEEP`] of its first sight; retransmissions from a source
/// already answered are answered again. At most [`IHellosSeen::CAP`] tags,
/// the oldest forgotten first (an attacker minting fresh tags needs the
/// network's Default Session Key, and then meets the limiter).
pub(super) struct IHellosSeen(Recent<Vec<u8>, Vec<SocketAddr>>);

impl Default for IHellosSeen {
    fn default() -> Self {
        IHellosSeen(Recent::new(Self::CAP, Self::KEEP))
    }
}

impl IHellosSeen {
    pub(super) const CAP: usize = 4096;
    pub(super) const KEEP: std::time::Duration = std::time::Duration::from_secs(30);
    pub(super) const MAX_SOURCES: usize = 8;

    /// Whether an IHello with `tag` from `from` may go on to be answered.
    pub(super) fn admit(&mut self, now: Instant, tag: &[u8], from: SocketAddr) -> bool {
        if let Some(sources) = self.0.get_mut(now, tag) {
            if sources.contains(&from) {
                return true;
            }
            if sources.len() >= Self::MAX_SOURCES {
                return false;
            }
            sources.push(from);
            return true;
        }
        self.0.insert(now, tag.to_vec(), vec![from]);
        true
    }
}

/// Build and sign an IIKeying chunk (RFC 7016 2.3.7).
fn build_iikeying(
    identity: &Identity,
    sid: u32,
    cookie: &[u8],
    keying: &InitiatorKeying,
) -> Option<Vec<u8>> {
    let cert = identity.certificate().as_bytes();
    let skic = keying.skic();
    let mut signed = vec![0u8; iikeying_signed_len(cookie, cert, skic)];
    write_iikeying_signed(&mut signed, sid, cookie, cert, skic).ok()?;
    let sig = crypto::sign_iikeying(identity, &signed);
    let chunk = Chunk::IIKeying {
        initiator_session_id: sid,
        cookie_echo: cookie,
        initiator_certificate: cert,
        skic,
        signed: &signed,
        signature: &sig,
    };
    let mut out = vec![0u8; chunk.encoded_len()];
    chunk.emit(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keyings_are_remembered_for_the_cookie_lifetime_within_a_cap() {
        let t0 = Instant::now();
        let mut seen = KeyingsSeen::default();
        let mut skic = [0u8; 66];
        skic[2] = 1;
        let id = KeyingsSeen::id(&skic);
        assert_eq!(id[0], 1);
        seen.insert(t0, id);
        assert!(seen.contains(t0 + Duration::from_secs(122), &id));
        assert!(!seen.contains(t0 + Duration::from_secs(123), &id));
        // Past the cap the oldest is forgotten first.
        for i in 0..=KeyingsSeen::CAP as u32 {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            seen.insert(t0, id);
        }
        assert_eq!(seen.0.len(), KeyingsSeen::CAP);
        assert!(!seen.contains(t0, &[0u8; 32]));
        let mut last = [0u8; 32];
        last[..4].copy_from_slice(&(KeyingsSeen::CAP as u32).to_be_bytes());
        assert!(seen.contains(t0, &last));
    }

    /// Glare (RFC 7016 3.5.1.3) with the winner already in KEYING_SENT on
    /// a path that died after its RHello came (a relayed route that went
    /// down, a NAT mapping that expired): the loser's IIKeying comes on
    /// another path, and the winner ignores it as the spec says. Unless
    /// the winner sends its own IIKeying on the path the loser's came on
    /// (proven: the cookie echo and the signature), the loser never
    /// learns that it lost, and neither session opens before the open
    /// timeout.
    #[test]
    fn glare_winner_in_keying_sent_answers_on_the_path_the_loser_came_on() {
        use crate::endpoint::back_to_back::{self, End};
        use crate::endpoint::{Endpoint, Target};

        let t0 = Instant::now();
        // `w` prevails in glare, `l` loses.
        let (mut w, mut l) = back_to_back::glare_pair("glare", [41, 42], t0);
        let w_addr: SocketAddr = "198.51.100.10:40000".parse().unwrap();
        // `l` as `w` sees it, on the path that dies and on the one that stays.
        let l_old: SocketAddr = "198.51.100.11:4910".parse().unwrap();
        let l_new: SocketAddr = "203.0.113.7:4911".parse().unwrap();
        let (wid, lid) = (w.node_id(), l.node_id());
        w.connect(t0, Target::Node(lid), &[l_old]).unwrap();
        let mut now = t0;
        // The old path dies as soon as `w` has its RHello (it is then in
        // KEYING_SENT); then `l` opens a session of its own to `w`.
        let old_path_up = std::cell::Cell::new(true);
        let wire = |_, end, dest| match end {
            End::A => (dest == l_new || (dest == l_old && old_path_up.get())).then_some(w_addr),
            End::B => (dest == w_addr).then_some(if old_path_up.get() { l_old } else { l_new }),
        };
        let each_turn = |now, w: &mut Endpoint, l: &mut Endpoint| {
            let keying = |s| w.session_info(s).unwrap().state == SessionState::KeyingSent;
            if old_path_up.get() && w.sessions().any(keying) {
                old_path_up.set(false);
                l.connect(now, Target::Node(wid), &[w_addr]).unwrap();
            }
        };
        let opened = back_to_back::run(&mut now, &mut w, &mut l, 10_000, wire, each_turn);
        assert_eq!(opened, (1, 1), "both ends open exactly one session");
        assert!(now < t0 + Duration::from_secs(5), "took {:?}", now - t0);
        // `w`'s session still points at the dead path; the far end's
        // traffic on the live one moves it there (address mobility, RFC
        // 7016 3.5.4.2) within a keepalive period.
        let opened_at = now;
        let on_live_path = |_, w: &mut Endpoint, _: &mut Endpoint| {
            let s = w.session_for(lid).unwrap();
            w.session_info(s).unwrap().path == l_new
        };
        assert!(back_to_back::run_until(
            &mut now,
            &mut w,
            &mut l,
            100_000,
            wire,
            on_live_path
        ));
        assert!(
            now < opened_at + Duration::from_secs(60),
            "took {:?}",
            now - opened_at
        );
    }
}
