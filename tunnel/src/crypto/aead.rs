//! Packet protection (RFC 7016 2.2.3): AEAD with an explicit 64-bit
//! sequence number as nonce and a replay window for sessions, and the
//! Default Session Key cipher for startup packets.
//!
//! Session packet (the "encrypted packet" of RFC 7016 2.2.2):
//!
//! ```text
//! 0        8  sequence number, u64 big-endian
//! 8        n  ciphertext of the plain RTMFP packet (RFC 7016 2.2.4)
//! 8+n     16  AEAD tag
//! ```
//!
//! Startup packet under the Default Session Key:
//!
//! ```text
//! 0       12  random nonce
//! 12       n  ciphertext
//! 12+n    16  AEAD tag
//! ```
//!
//! Everything works in place in the caller's buffer; nothing allocates.

use std::ops::Range;
use std::sync::Arc;

use aegis::aegis128l::Aegis128L;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use zeroize::Zeroizing;

use super::network::{NetworkName, NetworkSecret};
use super::AeadSuite;
use crate::Rng;

/// AEAD tag length (both suites).
pub const TAG_LEN: usize = 16;
/// Header of a session packet: the 8-byte sequence number.
pub const SESSION_HEADER_LEN: usize = 8;
/// Bytes a session packet adds to the plain packet.
pub const SESSION_OVERHEAD: usize = SESSION_HEADER_LEN + TAG_LEN;
/// Header of a Default Session Key packet: the 12-byte random nonce.
pub const DEFAULT_HEADER_LEN: usize = NONCE_LEN;
/// Bytes a Default Session Key packet adds to the plain packet.
pub const DEFAULT_OVERHEAD: usize = DEFAULT_HEADER_LEN + TAG_LEN;
/// Header room that fits either kind of packet.
pub const MAX_HEADER_LEN: usize = DEFAULT_HEADER_LEN;
/// Overhead that fits either kind of packet.
pub const MAX_OVERHEAD: usize = DEFAULT_OVERHEAD;
/// Width of the replay window, in packets.
pub const REPLAY_WINDOW: u64 = 2048;

/// Packets one AES-256-GCM key may seal: 2^32 packets of up to 1500 bytes
/// (< 2^39 blocks) keep the confidentiality advantage below 2^-50.
pub const AES_256_GCM_PACKET_LIMIT: u64 = 1 << 32;
/// Packets one ChaCha20-Poly1305 key may seal: a cap far below the
/// cipher's own limit (2^64 nonces) that no session reaches between two
/// rekeys.
pub const CHACHA20_POLY1305_PACKET_LIMIT: u64 = 1 << 60;
/// Packets one AEGIS-128L key may seal: as for ChaCha20-Poly1305, a cap
/// no session reaches between two rekeys. Its nonces (the sequence field)
/// never repeat, and the cipher's own limits for unique nonces lie far
/// beyond it.
pub const AEGIS_128L_PACKET_LIMIT: u64 = 1 << 60;
/// The key-phase bit of the 8-byte sequence field: the parity of the key
/// epoch (`docs/crypto-profile.md` 7.1, 7.4). The sequence number `q` is the
/// other 63 bits.
pub const KEY_PHASE_BIT: u64 = 1 << 63;
/// Sequence numbers of a session are below this (63 bits).
pub const SEQUENCE_SPACE: u64 = KEY_PHASE_BIT;
/// Packets kept back at the end of every key's budget for the Close Ack
/// a session sends when the key runs out ([`PacketSealer::seal_final`]).
pub const FINAL_RESERVE: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no room before the plain packet for the header")]
    NoHeaderRoom,
    #[error("no room after the plain packet for the tag")]
    NoTagRoom,
    #[error("sequence numbers exhausted for this key")]
    SequenceExhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("packet shorter than header and tag")]
    Truncated,
    #[error("packet sequence number already received")]
    Replayed,
    #[error("packet sequence number is older than the replay window")]
    TooOld,
    #[error("packet failed authentication")]
    Authentication,
}

/// A session key of one suite, ready to seal or open packets. Not boxed:
/// every packet uses it, and an AEGIS-128L session leaving `ring`'s key
/// schedule room unused costs a few hundred bytes per key.
#[allow(clippy::large_enum_variant)]
enum SessionKey {
    /// ChaCha20-Poly1305 or AES-256-GCM (`ring`).
    Ring(LessSafeKey),
    /// AEGIS-128L: the first 16 bytes of the 32-byte session key
    /// (`docs/crypto-profile.md` 6.2, 7.1), zeroized on drop.
    Aegis128L(Zeroizing<[u8; AEGIS_128L_KEY_LEN]>),
}

/// Key length of AEGIS-128L.
const AEGIS_128L_KEY_LEN: usize = 16;

impl SessionKey {
    fn new(suite: AeadSuite, key: &[u8; 32]) -> SessionKey {
        match suite {
            AeadSuite::ChaCha20Poly1305 => {
                SessionKey::Ring(ring_key(&ring::aead::CHACHA20_POLY1305, key))
            }
            AeadSuite::Aes256Gcm => SessionKey::Ring(ring_key(&ring::aead::AES_256_GCM, key)),
            AeadSuite::Aegis128L => {
                let mut k = Zeroizing::new([0u8; AEGIS_128L_KEY_LEN]);
                k.copy_from_slice(&key[..AEGIS_128L_KEY_LEN]);
                SessionKey::Aegis128L(k)
            }
        }
    }

    /// Seal `plain` in place under the nonce of sequence field `wire`;
    /// returns the tag.
    fn seal(&self, wire: u64, plain: &mut [u8]) -> Result<[u8; TAG_LEN], SealError> {
        match self {
            SessionKey::Ring(key) => {
                // ring refuses only inputs longer than the suite's limit (> 256 GiB).
                let tag = key
                    .seal_in_place_separate_tag(seq_nonce(wire), Aad::empty(), plain)
                    .map_err(|_| SealError::NoTagRoom)?;
                let mut t = [0u8; TAG_LEN];
                t.copy_from_slice(tag.as_ref());
                Ok(t)
            }
            SessionKey::Aegis128L(key) => {
                Ok(Aegis128L::<TAG_LEN>::new(key, &aegis_nonce(wire)).encrypt_in_place(plain, &[]))
            }
        }
    }

    /// Authenticate and decrypt `body` (ciphertext and tag) in place under
    /// the nonce of `wire`; returns the plain length.
    fn open(&self, wire: u64, body: &mut [u8]) -> Result<usize, OpenError> {
        match self {
            SessionKey::Ring(key) => Ok(key
                .open_in_place(seq_nonce(wire), Aad::empty(), body)
                .map_err(|_| OpenError::Authentication)?
                .len()),
            SessionKey::Aegis128L(key) => {
                let plain_len = body
                    .len()
                    .checked_sub(TAG_LEN)
                    .ok_or(OpenError::Truncated)?;
                let (cipher, tag) = body.split_at_mut(plain_len);
                let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| OpenError::Truncated)?;
                Aegis128L::<TAG_LEN>::new(key, &aegis_nonce(wire))
                    .decrypt_in_place(cipher, tag, &[])
                    .map_err(|_| OpenError::Authentication)?;
                Ok(plain_len)
            }
        }
    }
}

/// A `ring` key of `alg` (ChaCha20-Poly1305 or AES-256-GCM).
fn ring_key(alg: &'static ring::aead::Algorithm, key: &[u8; 32]) -> LessSafeKey {
    match UnboundKey::new(alg, key) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("both ring suites take 32-byte keys"),
    }
}

/// Nonce of session packet `seq`: four zero bytes, then `seq` big-endian.
/// Keys are per direction and per session, so the pair never repeats.
fn seq_nonce(seq: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// AEGIS-128L's 128-bit nonce of session packet `seq`: eight zero bytes,
/// then `seq` big-endian.
fn aegis_nonce(seq: u64) -> [u8; 16] {
    let mut n = [0u8; 16];
    n[8..].copy_from_slice(&seq.to_be_bytes());
    n
}

/// Check the layout of `buf` for sealing the plain packet at
/// `plain_start..plain_start + plain_len` with `header` bytes in front and a
/// tag behind; returns (packet start, plain end, packet end).
fn layout(
    buf_len: usize,
    header: usize,
    plain_start: usize,
    plain_len: usize,
) -> Result<(usize, usize, usize), SealError> {
    let start = plain_start
        .checked_sub(header)
        .ok_or(SealError::NoHeaderRoom)?;
    let plain_end = plain_start
        .checked_add(plain_len)
        .ok_or(SealError::NoTagRoom)?;
    let end = plain_end.checked_add(TAG_LEN).ok_or(SealError::NoTagRoom)?;
    if end > buf_len {
        return Err(SealError::NoTagRoom);
    }
    Ok((start, plain_end, end))
}

/// Seal `buf[plain_start..plain_end]` in place under sequence field `wire`
/// and write the tag after it.
fn seal_at(
    key: &SessionKey,
    wire: u64,
    buf: &mut [u8],
    plain_start: usize,
    plain_end: usize,
    end: usize,
) -> Result<(), SealError> {
    let (body, rest) = buf.split_at_mut(plain_end);
    let plain = body.get_mut(plain_start..).ok_or(SealError::NoHeaderRoom)?;
    let tag = key.seal(wire, plain)?;
    rest.get_mut(..end - plain_end)
        .ok_or(SealError::NoTagRoom)?
        .copy_from_slice(&tag);
    Ok(())
}

/// The send direction of a session (RFC 7016 2.2.3). Each packet gets the
/// next sequence number; numbers are never reused, not even across a
/// rekey ([`PacketSealer::rekey`] changes the key and flips the key-phase
/// bit, the numbers go on). A key seals at most its limit (the suite's,
/// or lower); sealing stops there and the session must rekey or close.
pub struct PacketSealer {
    /// Shared with [`PendingSeal`]s not yet sealed (another thread may
    /// seal them; the keys are `Send + Sync`).
    key: Arc<SessionKey>,
    suite: AeadSuite,
    next: u64,
    /// Sequence number of the current key's first packet.
    first: u64,
    /// [`KEY_PHASE_BIT`] or 0: the current key's phase.
    phase: u64,
    /// `next` at which [`PacketSealer::seal`] stops (the key's last
    /// sequence number + 1, minus [`FINAL_RESERVE`]).
    limit: u64,
    /// `next` from which [`PacketSealer::wants_rekey`] is true.
    rekey_at: u64,
}

impl PacketSealer {
    pub fn new(suite: AeadSuite, key: &[u8; 32]) -> PacketSealer {
        let mut s = PacketSealer {
            key: Arc::new(SessionKey::new(suite, key)),
            suite,
            next: 0,
            first: 0,
            phase: 0,
            limit: 0,
            rekey_at: 0,
        };
        s.set_budget(u64::MAX, u64::MAX);
        s
    }

    /// The most packets one key of `suite` may seal.
    pub const fn suite_limit(suite: AeadSuite) -> u64 {
        match suite {
            AeadSuite::ChaCha20Poly1305 => CHACHA20_POLY1305_PACKET_LIMIT,
            AeadSuite::Aes256Gcm => AES_256_GCM_PACKET_LIMIT,
            AeadSuite::Aegis128L => AEGIS_128L_PACKET_LIMIT,
        }
    }

    /// Limit the current key to `limit` packets in all (capped by the
    /// suite's limit) and ask for a rekey after `rekey_after` of them,
    /// counted from the key's first packet.
    pub fn set_budget(&mut self, limit: u64, rekey_after: u64) {
        let first = self.key_first();
        let limit = limit.min(Self::suite_limit(self.suite));
        self.limit = first
            .saturating_add(limit.saturating_sub(FINAL_RESERVE))
            .min(SEQUENCE_SPACE - 1);
        self.rekey_at = first.saturating_add(rekey_after).min(self.limit);
    }

    /// Sequence number of the current key's first packet.
    fn key_first(&self) -> u64 {
        self.first
    }

    pub fn suite(&self) -> AeadSuite {
        self.suite
    }

    /// Packets that may still be sealed with this key.
    pub fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.next)
    }

    /// The next sequence number.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// The current key's phase: 0 or 1 (the parity of its epoch).
    pub fn phase(&self) -> u8 {
        (self.phase >> 63) as u8
    }

    /// The current key sealed as many packets as its rekey threshold.
    #[inline]
    pub fn wants_rekey(&self) -> bool {
        self.next >= self.rekey_at
    }

    /// Switch to the next epoch's key (`docs/crypto-profile.md` 7.4): the
    /// key-phase bit flips, sequence numbers go on, the budget is
    /// `limit` / `rekey_after` packets from here.
    pub fn rekey(&mut self, key: &[u8; 32], limit: u64, rekey_after: u64) {
        self.key = Arc::new(SessionKey::new(self.suite, key));
        self.phase ^= KEY_PHASE_BIT;
        self.first = self.next;
        self.set_budget(limit, rekey_after);
    }

    /// Encrypt the plain packet `buf[plain_start..plain_start + plain_len]`
    /// in place. The caller reserves [`SESSION_HEADER_LEN`] bytes before it
    /// and [`TAG_LEN`] bytes after it. Returns where the encrypted packet
    /// (sequence, ciphertext, tag) lies in `buf`.
    pub fn seal(
        &mut self,
        buf: &mut [u8],
        plain_start: usize,
        plain_len: usize,
    ) -> Result<Range<usize>, SealError> {
        self.seal_within(self.limit, buf, plain_start, plain_len)
    }

    /// As [`PacketSealer::seal`], also using the [`FINAL_RESERVE`] kept at
    /// the end of the key's budget: for the Close Ack of a session whose
    /// key ran out.
    pub fn seal_final(
        &mut self,
        buf: &mut [u8],
        plain_start: usize,
        plain_len: usize,
    ) -> Result<Range<usize>, SealError> {
        let limit = self
            .limit
            .saturating_add(FINAL_RESERVE)
            .min(SEQUENCE_SPACE - 1);
        self.seal_within(limit, buf, plain_start, plain_len)
    }

    fn seal_within(
        &mut self,
        limit: u64,
        buf: &mut [u8],
        plain_start: usize,
        plain_len: usize,
    ) -> Result<Range<usize>, SealError> {
        let (wire, start, plain_end, end) =
            self.take_sequence(limit, buf, plain_start, plain_len)?;
        seal_at(&self.key, wire, buf, plain_start, plain_end, end)?;
        Ok(start..end)
    }

    /// Check the layout, take the next sequence number and write it in
    /// front of the plain text: (sequence on the wire, packet start, plain
    /// end, packet end).
    fn take_sequence(
        &mut self,
        limit: u64,
        buf: &mut [u8],
        plain_start: usize,
        plain_len: usize,
    ) -> Result<(u64, usize, usize, usize), SealError> {
        let (start, plain_end, end) =
            layout(buf.len(), SESSION_HEADER_LEN, plain_start, plain_len)?;
        if self.next >= limit {
            return Err(SealError::SequenceExhausted);
        }
        let wire = self.next | self.phase;
        self.next += 1;
        buf[start..plain_start].copy_from_slice(&wire.to_be_bytes());
        Ok((wire, start, plain_end, end))
    }

    /// As [`PacketSealer::seal`] up to the encryption: the packet takes its
    /// sequence number (written in front of the plain text) and the
    /// returned [`PendingSeal`] encrypts it later, on any thread
    /// ([`PendingSeal::seal`] on the same buffer gives exactly the bytes
    /// `seal` would have). Packets must be sealed before they are sent;
    /// each sequence number is still used once.
    pub fn reserve(
        &mut self,
        buf: &mut [u8],
        plain_start: usize,
        plain_len: usize,
    ) -> Result<PendingSeal, SealError> {
        let limit = self.limit;
        let (wire, start, plain_end, end) =
            self.take_sequence(limit, buf, plain_start, plain_len)?;
        Ok(PendingSeal {
            key: Arc::clone(&self.key),
            wire,
            start,
            plain_start,
            plain_end,
            end,
        })
    }

    #[cfg(test)]
    pub(crate) fn set_next_sequence(&mut self, next: u64) {
        self.next = next;
    }
}

/// A session packet with its sequence number taken, still to be encrypted
/// ([`PacketSealer::reserve`]).
#[derive(Clone)]
pub struct PendingSeal {
    key: Arc<SessionKey>,
    wire: u64,
    start: usize,
    plain_start: usize,
    plain_end: usize,
    end: usize,
}

impl PendingSeal {
    /// Encrypt the packet in `buf` (the buffer given to `reserve`, or a
    /// copy of it) in place; returns where the encrypted packet lies.
    pub fn seal(&self, buf: &mut [u8]) -> Result<Range<usize>, SealError> {
        let (plain_start, plain_end, end) = (self.plain_start, self.plain_end, self.end);
        seal_at(&self.key, self.wire, buf, plain_start, plain_end, end)?;
        Ok(self.start..end)
    }

    /// Where the encrypted packet will lie.
    pub fn range(&self) -> Range<usize> {
        self.start..self.end
    }
}

impl std::fmt::Debug for PendingSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSeal")
            .field("sequence", &self.wire)
            .field("range", &self.range())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PacketSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketSealer")
            .field("suite", &self.suite)
            .field("next", &self.next)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

/// A sliding window over received sequence numbers: the highest accepted
/// number and a bitmap of the [`REPLAY_WINDOW`] numbers up to it.
#[derive(Clone)]
pub struct ReplayWindow {
    /// One past the highest accepted sequence number (0: none yet).
    next: u64,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            next: 0,
            bits: [0; (REPLAY_WINDOW / 64) as usize],
        }
    }
}

impl ReplayWindow {
    fn slot(seq: u64) -> (usize, u64) {
        let word = ((seq / 64) % (REPLAY_WINDOW / 64)) as usize;
        (word, 1u64 << (seq % 64))
    }

    /// Whether `seq` may be accepted: newer than anything seen, or inside the
    /// window and not seen before. Does not change the window.
    pub fn check(&self, seq: u64) -> Result<(), OpenError> {
        if seq == u64::MAX {
            // Never sealed by a conforming sender.
            return Err(OpenError::Authentication);
        }
        if seq >= self.next {
            return Ok(());
        }
        if self.next - seq > REPLAY_WINDOW {
            return Err(OpenError::TooOld);
        }
        let (w, m) = Self::slot(seq);
        if self.bits[w] & m != 0 {
            return Err(OpenError::Replayed);
        }
        Ok(())
    }

    /// Record `seq` as received. Call only after [`ReplayWindow::check`]
    /// passed and the packet authenticated.
    pub fn update(&mut self, seq: u64) {
        if seq == u64::MAX {
            return;
        }
        if seq >= self.next {
            if seq - self.next >= REPLAY_WINDOW {
                self.bits = [0; (REPLAY_WINDOW / 64) as usize];
            } else {
                // Clear the slots of next..=seq, whole words where possible.
                let mut s = self.next;
                while s <= seq {
                    let (w, m) = Self::slot(s);
                    if s.is_multiple_of(64) && seq - s >= 63 {
                        self.bits[w] = 0;
                        s += 64;
                    } else {
                        self.bits[w] &= !m;
                        s += 1;
                    }
                }
            }
            self.next = seq + 1;
        }
        let (w, m) = Self::slot(seq);
        self.bits[w] |= m;
    }

    /// The highest accepted sequence number, if any.
    pub fn highest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplayWindow(highest: {:?})", self.highest())
    }
}

/// The receive direction of a session (RFC 7016 2.2.3), with up to two
/// keys: the current one and, in the slot of the other key phase, either
/// the next epoch's key (installed by a rekey, used as soon as the far end
/// switches) or the previous epoch's (kept for reordered packets until the
/// session drops it). The key-phase bit picks the key, so no packet is
/// ever tried with two keys; one replay window spans all epochs.
pub struct PacketOpener {
    key: SessionKey,
    suite: AeadSuite,
    /// [`KEY_PHASE_BIT`] or 0: the phase of `key`.
    phase: u64,
    other: Option<(SessionKey, OtherKey)>,
    /// A packet under the next key arrived and made it current.
    switched: bool,
    window: ReplayWindow,
}

/// What the other-phase slot of a [`PacketOpener`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OtherKey {
    Next,
    Previous,
}

impl PacketOpener {
    pub fn new(suite: AeadSuite, key: &[u8; 32]) -> PacketOpener {
        PacketOpener {
            key: SessionKey::new(suite, key),
            suite,
            phase: 0,
            other: None,
            switched: false,
            window: ReplayWindow::default(),
        }
    }

    pub fn suite(&self) -> AeadSuite {
        self.suite
    }

    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// Accept packets under the next epoch's key from now on (in the other
    /// phase); the previous epoch's key, if still kept, is dropped.
    pub fn install_next(&mut self, key: &[u8; 32]) {
        self.other = Some((SessionKey::new(self.suite, key), OtherKey::Next));
    }

    /// Whether a next key is installed and the far end has not used it yet.
    pub fn has_next(&self) -> bool {
        matches!(self.other, Some((_, OtherKey::Next)))
    }

    /// Whether the previous epoch's key is still accepted.
    pub fn has_previous(&self) -> bool {
        matches!(self.other, Some((_, OtherKey::Previous)))
    }

    /// Stop accepting the previous epoch's key.
    pub fn drop_previous(&mut self) {
        if self.has_previous() {
            self.other = None;
        }
    }

    /// True once after a packet under the next key made it the current one
    /// (the far end switched; the old key is now the previous one).
    #[inline]
    pub fn take_switched(&mut self) -> bool {
        std::mem::take(&mut self.switched)
    }

    /// Authenticate and decrypt an encrypted packet in place; returns where
    /// the plain packet lies in `packet`. Duplicates and packets older than
    /// the window are refused before decryption; the window moves only
    /// after authentication succeeds. On error the contents of `packet` are
    /// unspecified.
    pub fn open(&mut self, packet: &mut [u8]) -> Result<Range<usize>, OpenError> {
        if packet.len() < SESSION_OVERHEAD {
            return Err(OpenError::Truncated);
        }
        let (head, body) = packet.split_at_mut(SESSION_HEADER_LEN);
        let wire = u64::from_be_bytes(head.try_into().map_err(|_| OpenError::Truncated)?);
        let seq = wire & !KEY_PHASE_BIT;
        self.window.check(seq)?;
        let current = wire & KEY_PHASE_BIT == self.phase;
        let key = match (&self.other, current) {
            (_, true) => &self.key,
            (Some((k, _)), false) => k,
            (None, false) => return Err(OpenError::Authentication),
        };
        let plain_len = key.open(wire, body)?;
        self.window.update(seq);
        if !current {
            self.switch_if_next();
        }
        Ok(SESSION_HEADER_LEN..SESSION_HEADER_LEN + plain_len)
    }

    /// A packet under the other key authenticated: if that key is the next
    /// one, it becomes current and the current one previous.
    #[cold]
    fn switch_if_next(&mut self) {
        if let Some((k, OtherKey::Next)) = self.other.take() {
            let old = std::mem::replace(&mut self.key, k);
            self.other = Some((old, OtherKey::Previous));
            self.phase ^= KEY_PHASE_BIT;
            self.switched = true;
        }
    }
}

impl std::fmt::Debug for PacketOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketOpener")
            .field("suite", &self.suite)
            .field("phase", &(self.phase >> 63))
            .field("other", &self.other.as_ref().map(|(_, o)| *o))
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// The Default Session Key cipher (RFC 7016 2.2.3, 5) for session id 0 and
/// the other startup packets: ChaCha20-Poly1305 under the key derived from
/// the network secret and name, with a random 96-bit nonce per packet. It
/// keeps no per-peer state and no replay window: IHello answers are
/// stateless (a replayed IHello gets the same kind of RHello), and a
/// replayed IIKeying or RIKeying is caught by session state (RFC 7016
/// 3.5.1.1.2: a retransmitted IIKeying is answered with the existing
/// RIKeying; a KEYING_SENT session accepts one RIKeying).
pub struct DefaultCipher {
    key: LessSafeKey,
}

impl DefaultCipher {
    pub fn new(secret: &NetworkSecret, name: &NetworkName) -> DefaultCipher {
        let k = secret.default_session_key(name);
        DefaultCipher {
            key: ring_key(&ring::aead::CHACHA20_POLY1305, &k),
        }
    }

    /// As [`PacketSealer::seal`], with [`DEFAULT_HEADER_LEN`] bytes of header
    /// room holding a nonce drawn from `rng`.
    pub fn seal(
        &self,
        rng: &mut Rng,
        buf: &mut [u8],
        plain_start: usize,
        plain_len: usize,
    ) -> Result<Range<usize>, SealError> {
        let (start, plain_end, end) =
            layout(buf.len(), DEFAULT_HEADER_LEN, plain_start, plain_len)?;
        let mut n = [0u8; NONCE_LEN];
        rng.fill(&mut n);
        buf[start..plain_start].copy_from_slice(&n);
        let (body, rest) = buf.split_at_mut(plain_end);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::empty(),
                &mut body[plain_start..],
            )
            .map_err(|_| SealError::NoTagRoom)?;
        rest[..end - plain_end].copy_from_slice(tag.as_ref());
        Ok(start..end)
    }

    /// As [`PacketOpener::open`], without a replay window.
    pub fn open(&self, packet: &mut [u8]) -> Result<Range<usize>, OpenError> {
        if packet.len() < DEFAULT_OVERHEAD {
            return Err(OpenError::Truncated);
        }
        let (head, body) = packet.split_at_mut(DEFAULT_HEADER_LEN);
        let n: [u8; NONCE_LEN] = head.try_into().map_err(|_| OpenError::Truncated)?;
        let plain_len = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(n), Aad::empty(), body)
            .map_err(|_| OpenError::Authentication)?
            .len();
        Ok(DEFAULT_HEADER_LEN..DEFAULT_HEADER_LEN + plain_len)
    }
}

impl std::fmt::Debug for DefaultCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DefaultCipher(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use proptest::prelude::*;

    const SUITES: [AeadSuite; 3] = [
        AeadSuite::ChaCha20Poly1305,
        AeadSuite::Aes256Gcm,
        AeadSuite::Aegis128L,
    ];

    fn pair(suite: AeadSuite) -> (PacketSealer, PacketOpener) {
        (
            PacketSealer::new(suite, &[7; 32]),
            PacketOpener::new(suite, &[7; 32]),
        )
    }

    /// Seal `msg` with 4 bytes of extra room in front (where the SSID goes)
    /// into a buffer pre-filled with a marker; returns the encrypted packet.
    fn seal(s: &mut PacketSealer, msg: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xa5u8; 4 + SESSION_OVERHEAD + msg.len()];
        let ps = 4 + SESSION_HEADER_LEN;
        buf[ps..ps + msg.len()].copy_from_slice(msg);
        let r = s.seal(&mut buf, ps, msg.len()).unwrap();
        assert_eq!(r, 4..buf.len());
        buf[r].to_vec()
    }

    #[test]
    fn round_trip_and_layout() {
        for suite in SUITES {
            let (mut s, mut o) = pair(suite);
            for i in 0..3u64 {
                let msg = format!("packet {i}");
                let mut pkt = seal(&mut s, msg.as_bytes());
                assert_eq!(pkt.len(), msg.len() + SESSION_OVERHEAD);
                assert_eq!(pkt[..8], i.to_be_bytes());
                assert_ne!(&pkt[8..8 + msg.len()], msg.as_bytes());
                let r = o.open(&mut pkt).unwrap();
                assert_eq!(&pkt[r], msg.as_bytes());
            }
            assert_eq!(o.window().highest(), Some(2));
            // Empty plain packets work too.
            let mut pkt = seal(&mut s, b"");
            assert_eq!(o.open(&mut pkt).unwrap(), 8..8);
        }
    }

    /// A packet reserved now and sealed later (on another thread, in the
    /// driver) is byte for byte the packet sealed at once, sequence numbers
    /// go on across both kinds, and a rekey between reserving and sealing
    /// leaves the reserved packet under its own key and phase.
    #[test]
    fn reserved_packets_seal_later_to_the_same_bytes() {
        for suite in SUITES {
            let (mut inline, _) = pair(suite);
            let (mut deferred, mut o) = pair(suite);
            for i in 0..4u64 {
                let msg = format!("packet {i}");
                let want = seal(&mut inline, msg.as_bytes());
                let ps = SESSION_HEADER_LEN + 4;
                let mut buf = vec![0u8; ps + msg.len() + TAG_LEN];
                buf[ps..ps + msg.len()].copy_from_slice(msg.as_bytes());
                let pending = deferred.reserve(&mut buf, ps, msg.len()).unwrap();
                assert_eq!(deferred.next_sequence(), i + 1);
                // On another thread, as the send thread does.
                let (r, buf) = std::thread::spawn(move || {
                    let mut buf = buf;
                    (pending.seal(&mut buf).unwrap(), buf)
                })
                .join()
                .unwrap();
                assert_eq!(buf[r.clone()], want[..], "packet {i}");
                let mut pkt = buf[r].to_vec();
                let opened = o.open(&mut pkt).unwrap();
                assert_eq!(&pkt[opened], msg.as_bytes());
            }
            let mut buf = vec![0u8; SESSION_HEADER_LEN + 4 + 3 + TAG_LEN];
            let before = deferred
                .reserve(&mut buf, SESSION_HEADER_LEN + 4, 3)
                .unwrap();
            deferred.rekey(&[9; 32], u64::MAX, u64::MAX);
            let r = before.seal(&mut buf).unwrap();
            let mut pkt = buf[r].to_vec();
            assert!(
                o.open(&mut pkt).is_ok(),
                "sealed with the key it was reserved under"
            );
        }
    }

    #[test]
    fn suites_do_not_interoperate_with_each_other() {
        for a in SUITES {
            for b in SUITES.into_iter().filter(|b| *b != a) {
                let mut s = PacketSealer::new(a, &[7; 32]);
                let mut o = PacketOpener::new(b, &[7; 32]);
                let mut pkt = seal(&mut s, b"x");
                assert_eq!(
                    o.open(&mut pkt),
                    Err(OpenError::Authentication),
                    "{a} -> {b}"
                );
            }
        }
    }

    /// The AEGIS-128L this build links gives test vector 1 of
    /// draft-irtf-cfrg-aegis-aead (section "AEGIS-128L Test Vectors"), and
    /// a session key uses the first 16 bytes of the 32-byte key: the last
    /// 16 change nothing, the first 16 everything.
    #[test]
    fn aegis_128l_known_answer_and_key_bytes() {
        let mut key = [0u8; 16];
        key[..2].copy_from_slice(&[0x10, 0x01]);
        let mut nonce = [0u8; 16];
        nonce[..3].copy_from_slice(&[0x10, 0x00, 0x02]);
        let mut msg = [0u8; 16];
        let tag = Aegis128L::<TAG_LEN>::new(&key, &nonce).encrypt_in_place(&mut msg, &[]);
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&msg), "c1c0e58bd913006feba00f4b3cc3594e");
        assert_eq!(hex(&tag), "abe0ece80c24868a226a35d16bdae37a");

        let mut tail_changed = [7u8; 32];
        tail_changed[16..].fill(8);
        let mut s = PacketSealer::new(AeadSuite::Aegis128L, &tail_changed);
        let mut o = PacketOpener::new(AeadSuite::Aegis128L, &[7; 32]);
        let mut pkt = seal(&mut s, b"first half");
        assert!(o.open(&mut pkt).is_ok());
        let mut head_changed = [7u8; 32];
        head_changed[15] = 8;
        let mut s = PacketSealer::new(AeadSuite::Aegis128L, &head_changed);
        let mut o = PacketOpener::new(AeadSuite::Aegis128L, &[7; 32]);
        let mut pkt = seal(&mut s, b"first half");
        assert_eq!(o.open(&mut pkt), Err(OpenError::Authentication));
    }

    #[test]
    fn wrong_key_fails() {
        let mut s = PacketSealer::new(AeadSuite::ChaCha20Poly1305, &[7; 32]);
        let mut o = PacketOpener::new(AeadSuite::ChaCha20Poly1305, &[8; 32]);
        let mut pkt = seal(&mut s, b"x");
        assert_eq!(o.open(&mut pkt), Err(OpenError::Authentication));
        assert_eq!(o.window().highest(), None);
    }

    #[test]
    fn tampering_any_byte_fails() {
        for suite in SUITES {
            let (mut s, _) = pair(suite);
            let good = seal(&mut s, b"some plain packet bytes");
            for i in 0..good.len() {
                let mut o = PacketOpener::new(suite, &[7; 32]);
                let mut pkt = good.clone();
                pkt[i] ^= 0x01;
                assert!(o.open(&mut pkt).is_err(), "{suite} byte {i}");
                assert_eq!(o.window().highest(), None);
            }
            let mut o = PacketOpener::new(suite, &[7; 32]);
            let mut pkt = good.clone();
            assert!(o.open(&mut pkt).is_ok());
        }
    }

    #[test]
    fn short_packets_and_bad_layouts() {
        let (mut s, mut o) = pair(AeadSuite::ChaCha20Poly1305);
        assert_eq!(o.open(&mut [0u8; 23]), Err(OpenError::Truncated));
        let mut buf = [0u8; 40];
        assert_eq!(s.seal(&mut buf, 7, 4), Err(SealError::NoHeaderRoom));
        assert_eq!(s.seal(&mut buf, 8, 17), Err(SealError::NoTagRoom));
        assert_eq!(s.seal(&mut buf, 8, usize::MAX), Err(SealError::NoTagRoom));
        assert_eq!(s.seal(&mut buf, 8, 16), Ok(0..40));
    }

    #[test]
    fn replay_window() {
        let (mut s, mut o) = pair(AeadSuite::ChaCha20Poly1305);
        let pkts: Vec<Vec<u8>> = (0..3000).map(|_| seal(&mut s, b"p")).collect();
        let open = |o: &mut PacketOpener, i: usize| o.open(&mut pkts[i].clone()).map(|_| ());
        // Reordering inside the window is fine; duplicates are not.
        assert_eq!(open(&mut o, 5), Ok(()));
        assert_eq!(open(&mut o, 3), Ok(()));
        assert_eq!(open(&mut o, 5), Err(OpenError::Replayed));
        assert_eq!(open(&mut o, 3), Err(OpenError::Replayed));
        assert_eq!(open(&mut o, 4), Ok(()));
        assert_eq!(open(&mut o, 0), Ok(()));
        // Jump ahead: the window is now 5..=2052.
        assert_eq!(open(&mut o, 2052), Ok(()));
        assert_eq!(open(&mut o, 3), Err(OpenError::TooOld));
        assert_eq!(open(&mut o, 4), Err(OpenError::TooOld));
        assert_eq!(open(&mut o, 5), Err(OpenError::Replayed));
        assert_eq!(open(&mut o, 6), Ok(()));
        assert_eq!(open(&mut o, 2051), Ok(()));
        assert_eq!(open(&mut o, 2052), Err(OpenError::Replayed));
        // Far jump clears everything.
        assert_eq!(open(&mut o, 2999), Ok(()));
        assert_eq!(open(&mut o, 2052), Err(OpenError::Replayed));
        assert_eq!(open(&mut o, 951), Err(OpenError::TooOld));
        assert_eq!(open(&mut o, 952), Ok(()));
        assert_eq!(open(&mut o, 2998), Ok(()));
    }

    #[test]
    fn forged_packets_do_not_move_the_window() {
        let (mut s, mut o) = pair(AeadSuite::Aes256Gcm);
        let first = seal(&mut s, b"a");
        assert!(o.open(&mut first.clone()).is_ok());
        // A forged packet claiming a far-ahead sequence number.
        let mut forged = seal(&mut s, b"b");
        forged[..8].copy_from_slice(&100_000u64.to_be_bytes());
        assert_eq!(o.open(&mut forged), Err(OpenError::Authentication));
        assert_eq!(o.window().highest(), Some(0));
        // A forged copy of a not-yet-received packet does not burn its slot.
        let next = seal(&mut s, b"c");
        let mut bad = next.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(o.open(&mut bad), Err(OpenError::Authentication));
        assert!(o.open(&mut next.clone()).is_ok());
        // The never-valid sequence number is refused outright.
        let mut max = next.clone();
        max[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(o.open(&mut max), Err(OpenError::Authentication));
    }

    #[test]
    fn sequence_exhaustion() {
        let (mut s, mut o) = pair(AeadSuite::ChaCha20Poly1305);
        let last = CHACHA20_POLY1305_PACKET_LIMIT - FINAL_RESERVE - 1;
        s.set_next_sequence(last);
        assert_eq!(s.remaining(), 1);
        let mut pkt = seal(&mut s, b"last");
        assert_eq!(pkt[..8], last.to_be_bytes());
        assert!(o.open(&mut pkt).is_ok());
        let mut buf = [0u8; 30];
        assert_eq!(s.seal(&mut buf, 8, 4), Err(SealError::SequenceExhausted));
        assert_eq!(s.seal(&mut buf, 8, 4), Err(SealError::SequenceExhausted));
        // The reserve is for a final Close Ack, then nothing.
        for _ in 0..FINAL_RESERVE {
            assert!(s.seal_final(&mut buf, 8, 4).is_ok());
        }
        assert_eq!(
            s.seal_final(&mut buf, 8, 4),
            Err(SealError::SequenceExhausted)
        );

        let (mut s, _) = pair(AeadSuite::Aes256Gcm);
        s.set_next_sequence(AES_256_GCM_PACKET_LIMIT - FINAL_RESERVE - 1);
        assert!(s.seal(&mut buf, 8, 4).is_ok());
        assert_eq!(s.seal(&mut buf, 8, 4), Err(SealError::SequenceExhausted));
        for _ in 0..FINAL_RESERVE {
            assert!(s.seal_final(&mut buf, 8, 4).is_ok());
        }
        assert_eq!(
            s.seal_final(&mut buf, 8, 4),
            Err(SealError::SequenceExhausted)
        );
    }

    #[test]
    fn a_lower_budget_and_the_rekey_threshold() {
        let (mut s, _) = pair(AeadSuite::ChaCha20Poly1305);
        s.set_budget(10, 3);
        let mut buf = [0u8; 30];
        for i in 0..6 {
            assert_eq!(s.wants_rekey(), i >= 3, "packet {i}");
            s.seal(&mut buf, 8, 4).unwrap();
        }
        assert_eq!(s.remaining(), 0);
        assert_eq!(s.seal(&mut buf, 8, 4), Err(SealError::SequenceExhausted));
        // A rekey gives the new key its own budget; numbers go on.
        s.rekey(&[9; 32], 10, 3);
        assert!(!s.wants_rekey());
        assert_eq!(s.remaining(), 6);
        let r = s.seal(&mut buf, 8, 4).unwrap();
        assert_eq!(buf[r][..8], (6 | KEY_PHASE_BIT).to_be_bytes());
    }

    /// Seal with `s`, open with `o`, return whether it opened.
    fn through(s: &mut PacketSealer, o: &mut PacketOpener, msg: &[u8]) -> Result<(), OpenError> {
        let mut pkt = seal(s, msg);
        let r = o.open(&mut pkt)?;
        assert_eq!(&pkt[r], msg);
        Ok(())
    }

    #[test]
    fn key_phases_across_a_rekey() {
        for suite in SUITES {
            let (mut s, mut o) = pair(suite);
            through(&mut s, &mut o, b"epoch 0").unwrap();
            // The receiver learns the next key first; the old one still works.
            o.install_next(&[8; 32]);
            assert!(o.has_next());
            let late_old = seal(&mut s, b"old, late");
            through(&mut s, &mut o, b"still epoch 0").unwrap();
            assert!(!o.take_switched());
            // The sender switches: phase bit set, sequence numbers go on.
            s.rekey(&[8; 32], u64::MAX, u64::MAX);
            assert_eq!(s.phase(), 1);
            let mut first_new = seal(&mut s, b"epoch 1");
            assert_eq!(first_new[..8], (3 | KEY_PHASE_BIT).to_be_bytes());
            assert!(o.open(&mut first_new).is_ok());
            assert!(o.take_switched());
            assert!(!o.take_switched());
            assert!(o.has_previous());
            // A reordered packet of the old epoch still opens, once.
            let mut l = late_old.clone();
            assert!(o.open(&mut l).is_ok());
            assert_eq!(o.open(&mut late_old.clone()), Err(OpenError::Replayed));
            through(&mut s, &mut o, b"epoch 1 again").unwrap();
            // After the grace period the old key is gone.
            o.drop_previous();
            assert!(!o.has_previous());
            let (mut old_sealer, _) = pair(suite);
            old_sealer.set_next_sequence(100);
            assert_eq!(
                through(&mut old_sealer, &mut o, b"x"),
                Err(OpenError::Authentication)
            );
            // Epoch 2 uses phase 0 again.
            o.install_next(&[10; 32]);
            s.rekey(&[10; 32], u64::MAX, u64::MAX);
            assert_eq!(s.phase(), 0);
            through(&mut s, &mut o, b"epoch 2").unwrap();
            assert!(o.take_switched());
        }
    }

    #[test]
    fn a_flipped_phase_bit_does_not_authenticate() {
        let (mut s, mut o) = pair(AeadSuite::ChaCha20Poly1305);
        o.install_next(&[7; 32]);
        let mut pkt = seal(&mut s, b"x");
        pkt[0] ^= 0x80;
        assert_eq!(o.open(&mut pkt), Err(OpenError::Authentication));
        assert!(o.has_next());
        assert_eq!(o.window().highest(), None);
    }

    fn default_pair() -> (DefaultCipher, DefaultCipher) {
        let secret = NetworkSecret::from_bytes([1; 32]);
        let name = NetworkName::new("home").unwrap();
        (
            DefaultCipher::new(&secret, &name),
            DefaultCipher::new(&secret, &name),
        )
    }

    #[test]
    fn default_cipher_round_trip_and_membership() {
        let mut rng = Rng::from_seed([3; 32]);
        let (a, b) = default_pair();
        let msg = b"\x0b IHello";
        let mut buf = vec![0u8; DEFAULT_OVERHEAD + msg.len()];
        buf[12..12 + msg.len()].copy_from_slice(msg);
        let r = a.seal(&mut rng, &mut buf, 12, msg.len()).unwrap();
        assert_eq!(r, 0..buf.len());
        let good = buf.clone();
        let p = b.open(&mut buf).unwrap();
        assert_eq!(&buf[p], msg);
        // Stateless: the same packet opens again.
        assert!(b.open(&mut good.clone()).is_ok());
        // Another network (secret or name) cannot read it.
        let outsider = DefaultCipher::new(
            &NetworkSecret::from_bytes([2; 32]),
            &NetworkName::new("home").unwrap(),
        );
        assert_eq!(
            outsider.open(&mut good.clone()),
            Err(OpenError::Authentication)
        );
        let other_name = DefaultCipher::new(
            &NetworkSecret::from_bytes([1; 32]),
            &NetworkName::new("work").unwrap(),
        );
        assert_eq!(
            other_name.open(&mut good.clone()),
            Err(OpenError::Authentication)
        );
        for i in 0..good.len() {
            let mut t = good.clone();
            t[i] ^= 0x40;
            assert!(b.open(&mut t).is_err(), "byte {i}");
        }
        assert_eq!(b.open(&mut [0u8; 27]), Err(OpenError::Truncated));
        // Fresh nonce each time.
        let mut buf2 = vec![0u8; DEFAULT_OVERHEAD + msg.len()];
        buf2[12..12 + msg.len()].copy_from_slice(msg);
        a.seal(&mut rng, &mut buf2, 12, msg.len()).unwrap();
        assert_ne!(buf2[..12], good[..12]);
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(
            msg in proptest::collection::vec(any::<u8>(), 0..1500),
            front in 0usize..16,
            which in 0usize..3,
        ) {
            let suite = SUITES[which];
            let (mut s, mut o) = pair(suite);
            let mut buf = vec![0u8; front + SESSION_OVERHEAD + msg.len()];
            let ps = front + SESSION_HEADER_LEN;
            buf[ps..ps + msg.len()].copy_from_slice(&msg);
            let r = s.seal(&mut buf, ps, msg.len()).unwrap();
            prop_assert_eq!(r.clone(), front..buf.len());
            let pkt = &mut buf[r];
            let p = o.open(pkt).unwrap();
            prop_assert_eq!(&pkt[p], &msg[..]);
        }

        #[test]
        fn open_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            for suite in SUITES {
                let (_, mut o) = pair(suite);
                prop_assert!(o.open(&mut bytes.clone()).is_err());
            }
            let (_, d) = default_pair();
            prop_assert!(d.open(&mut bytes.clone()).is_err());
        }

        #[test]
        fn window_matches_a_set_model(seqs in proptest::collection::vec(0u64..5000, 1..300)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            for seq in seqs {
                let highest = seen.iter().next_back().copied();
                let expect = match highest {
                    Some(h) if seq <= h && h - seq >= REPLAY_WINDOW => Err(OpenError::TooOld),
                    _ if seen.contains(&seq) => Err(OpenError::Replayed),
                    _ => Ok(()),
                };
                prop_assert_eq!(w.check(seq), expect);
                if expect.is_ok() {
                    w.update(seq);
                    seen.insert(seq);
                }
            }
        }
    }
}
