//! Chunks (RFC 7016 section 2.3). Payload fields borrow from the packet
//! being decoded so that decoding never copies user data.
//!
//! [`Chunk::parse`] decodes one chunk payload, [`Chunk::emit`] writes a
//! whole chunk (3-byte header included). They are exact inverses: `emit`
//! refuses (with [`WireError::Invalid`] or [`WireError::BadLength`]) any
//! value `parse` would reject, so `parse(emit(x)) == x` for everything
//! `emit` accepts, and `emit(parse(bytes)) == bytes` for canonical input
//! (reserved bits zero; padding chunks re-emit as zero-filled type 0x00).

use super::address::{validate_address_list, AddressIter};
use super::cursor::{vlu_bytes_len, Reader, Writer};
use super::option::{option_list_len, OptionIter};
use super::{vlu, Address, WireError};

/// Size of a chunk header: type (1) and length (2).
pub const CHUNK_HEADER_LEN: usize = 3;
/// Largest chunk payload (the 16-bit chunkLength).
pub const MAX_CHUNK_PAYLOAD: usize = u16::MAX as usize;

/// Chunk type codes (section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChunkType {
    PacketFragment = 0x7f,
    IHello = 0x30,
    FIHello = 0x0f,
    RHello = 0x70,
    Redirect = 0x71,
    CookieChange = 0x79,
    IIKeying = 0x38,
    RIKeying = 0x78,
    Ping = 0x01,
    PingReply = 0x41,
    UserData = 0x10,
    NextUserData = 0x11,
    BitmapAck = 0x50,
    RangeAck = 0x51,
    BufferProbe = 0x18,
    FlowException = 0x5e,
    Close = 0x0c,
    CloseAck = 0x4c,
    /// ringlan extension (`docs/crypto-profile.md` 6.3): ask for a rekey.
    Rekey = 0x2b,
    /// ringlan extension: answer a Rekey.
    RekeyAck = 0x6b,
}

impl ChunkType {
    /// The defined chunk type for a code, if any (padding codes excluded).
    pub fn from_u8(code: u8) -> Option<Self> {
        use ChunkType::*;
        Some(match code {
            0x7f => PacketFragment,
            0x30 => IHello,
            0x0f => FIHello,
            0x70 => RHello,
            0x71 => Redirect,
            0x79 => CookieChange,
            0x38 => IIKeying,
            0x78 => RIKeying,
            0x01 => Ping,
            0x41 => PingReply,
            0x10 => UserData,
            0x11 => NextUserData,
            0x50 => BitmapAck,
            0x51 => RangeAck,
            0x18 => BufferProbe,
            0x5e => FlowException,
            0x0c => Close,
            0x4c => CloseAck,
            0x2b => Rekey,
            0x6b => RekeyAck,
            _ => return None,
        })
    }
}

/// Padding chunk type codes (section 2.3).
pub const PADDING_TYPES: [u8; 2] = [0x00, 0xff];

/// User Data fragment control (section 2.3.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FragmentControl {
    Whole = 0,
    Begin = 1,
    End = 2,
    Middle = 3,
}

impl FragmentControl {
    fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => FragmentControl::Whole,
            1 => FragmentControl::Begin,
            2 => FragmentControl::End,
            _ => FragmentControl::Middle,
        }
    }
}

/// One decoded chunk. `Padding` covers the 0x00 and 0xff ignore types;
/// `Unknown` carries any other type, which receivers skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// 2.3.1
    PacketFragment {
        more_fragments: bool,
        packet_id: u64,
        fragment_num: u64,
        fragment: &'a [u8],
    },
    /// 2.3.2
    IHello { epd: &'a [u8], tag: &'a [u8] },
    /// 2.3.3
    FIHello {
        epd: &'a [u8],
        reply_address: Address,
        tag: &'a [u8],
    },
    /// 2.3.4
    RHello {
        tag_echo: &'a [u8],
        cookie: &'a [u8],
        responder_certificate: &'a [u8],
    },
    /// 2.3.5; `addresses` is the raw list of encoded Address entries,
    /// iterate with [`Chunk::redirect_addresses`]. Empty = Implied Redirect.
    Redirect {
        tag_echo: &'a [u8],
        addresses: &'a [u8],
    },
    /// 2.3.6
    CookieChange {
        old_cookie: &'a [u8],
        new_cookie: &'a [u8],
    },
    /// 2.3.7; `signed` is the initiatorSignedParameters byte range. On
    /// emit it must equal the encoding of the other fields (build it with
    /// `write_iikeying_signed` before signing).
    IIKeying {
        initiator_session_id: u32,
        cookie_echo: &'a [u8],
        initiator_certificate: &'a [u8],
        skic: &'a [u8],
        signed: &'a [u8],
        signature: &'a [u8],
    },
    /// 2.3.8; `signed_portion` is the responderSignedParametersPortion. On
    /// emit it must equal the encoding of the other fields (build it with
    /// `write_rikeying_signed_portion` before signing).
    RIKeying {
        responder_session_id: u32,
        skrc: &'a [u8],
        signed_portion: &'a [u8],
        signature: &'a [u8],
    },
    /// 2.3.9
    Ping { message: &'a [u8] },
    /// 2.3.10
    PingReply { message_echo: &'a [u8] },
    /// 2.3.11
    UserData(UserData<'a>),
    /// 2.3.12; flow id, sequence number and FSN are implied by the
    /// preceding (Next) User Data chunk in the same packet.
    NextUserData(NextUserData<'a>),
    /// 2.3.13
    BitmapAck {
        flow_id: u64,
        buffer_blocks_available: u64,
        cumulative_ack: u64,
        bitmap: &'a [u8],
    },
    /// 2.3.14; `ranges` is the raw run-length pairs, iterate with
    /// [`Chunk::ack_ranges`].
    RangeAck {
        flow_id: u64,
        buffer_blocks_available: u64,
        cumulative_ack: u64,
        ranges: &'a [u8],
    },
    /// 2.3.15
    BufferProbe { flow_id: u64 },
    /// 2.3.16
    FlowException { flow_id: u64, exception: u64 },
    /// 2.3.17
    Close,
    /// 2.3.18
    CloseAck,
    /// ringlan extension 0x2b (`docs/crypto-profile.md` 6.3): the sender
    /// asks for the keys of epoch `epoch` and offers its X25519 share.
    Rekey(RekeyFields),
    /// ringlan extension 0x6b: the answer to a Rekey, with the answerer's
    /// share for the same epoch.
    RekeyAck(RekeyFields),
    /// 0x00 / 0xff
    Padding { len: usize },
    /// Any other type code: skipped by receivers.
    Unknown { chunk_type: u8, payload: &'a [u8] },
}

/// Payload of the Rekey and Rekey Ack chunks (`docs/crypto-profile.md`
/// 6.3), exactly 37 bytes: version, epoch (u32), X25519 public key. The
/// version is carried, not checked: a receiver ignores versions it does
/// not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyFields {
    pub version: u8,
    pub epoch: u32,
    pub public: [u8; 32],
}

/// Payload length of Rekey and Rekey Ack.
pub const REKEY_PAYLOAD_LEN: usize = 1 + 4 + 32;

impl RekeyFields {
    fn parse(r: &mut Reader<'_>) -> Result<RekeyFields, WireError> {
        let version = r.u8()?;
        let epoch = r.u32()?;
        let public = r.array::<32>()?;
        Ok(RekeyFields {
            version,
            epoch,
            public,
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.u8(self.version)?;
        w.u32(self.epoch)?;
        w.bytes(&self.public)
    }
}

/// User Data chunk fields (section 2.3.11). `options` is the raw option list
/// including its terminating Marker (empty if the OPT flag is clear).
///
/// Decoding enforces the spec's field rules: `sequence_number > 0`,
/// `fsn_offset <= sequence_number`, and `fsn_offset > 0` unless `abandon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserData<'a> {
    pub fragment_control: FragmentControl,
    pub abandon: bool,
    pub final_: bool,
    pub flow_id: u64,
    pub sequence_number: u64,
    pub fsn_offset: u64,
    pub options: Option<&'a [u8]>,
    pub data: &'a [u8],
}

/// Next User Data chunk fields (section 2.3.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextUserData<'a> {
    pub fragment_control: FragmentControl,
    pub abandon: bool,
    pub final_: bool,
    pub options: Option<&'a [u8]>,
    pub data: &'a [u8],
}

const UD_OPT: u8 = 0x80;
const UD_ABN: u8 = 0x02;
const UD_FIN: u8 = 0x01;
const FRAG_MORE: u8 = 0x80;

fn ud_flags(opt: bool, fra: FragmentControl, abn: bool, fin: bool) -> u8 {
    let mut f = (fra as u8) << 4;
    if opt {
        f |= UD_OPT;
    }
    if abn {
        f |= UD_ABN;
    }
    if fin {
        f |= UD_FIN;
    }
    f
}

fn read_ud_flags(r: &mut Reader<'_>) -> Result<(bool, FragmentControl, bool, bool), WireError> {
    let f = r.u8()?;
    Ok((
        f & UD_OPT != 0,
        FragmentControl::from_bits(f >> 4),
        f & UD_ABN != 0,
        f & UD_FIN != 0,
    ))
}

fn read_ud_tail<'a>(r: &mut Reader<'a>, opt: bool) -> Result<Option<&'a [u8]>, WireError> {
    if !opt {
        return Ok(None);
    }
    let len = option_list_len(r.remaining())?;
    r.bytes(len).map(Some)
}

fn validate_options(options: Option<&[u8]>) -> Result<(), WireError> {
    match options {
        Some(raw) if option_list_len(raw)? != raw.len() => Err(WireError::BadLength),
        _ => Ok(()),
    }
}

fn validate_ud_numbers(seq: u64, fsn_offset: u64, abandon: bool) -> Result<(), WireError> {
    if seq == 0 || fsn_offset > seq || (fsn_offset == 0 && !abandon) {
        return Err(WireError::Invalid);
    }
    Ok(())
}

impl<'a> UserData<'a> {
    /// forwardSequenceNumber = sequenceNumber - fsnOffset (RFC 7016 2.3.11).
    pub fn forward_sequence_number(&self) -> u64 {
        self.sequence_number.saturating_sub(self.fsn_offset)
    }

    /// Iterate the options (none when the OPT flag is clear).
    pub fn options_iter(&self) -> OptionIter<'a> {
        self.options.map_or_else(OptionIter::empty, OptionIter::new)
    }

    /// The full User Data equivalent of a Next User Data chunk that follows
    /// this one: same flow and forward sequence number, next sequence number
    /// (RFC 7016 2.3.12). `None` if the sequence number would overflow.
    pub fn followed_by(&self, next: &NextUserData<'a>) -> Option<UserData<'a>> {
        Some(UserData {
            fragment_control: next.fragment_control,
            abandon: next.abandon,
            final_: next.final_,
            flow_id: self.flow_id,
            sequence_number: self.sequence_number.checked_add(1)?,
            fsn_offset: self.fsn_offset.checked_add(1)?,
            options: next.options,
            data: next.data,
        })
    }
}

impl<'a> NextUserData<'a> {
    /// Iterate the options (none when the OPT flag is clear).
    pub fn options_iter(&self) -> OptionIter<'a> {
        self.options.map_or_else(OptionIter::empty, OptionIter::new)
    }
}

/// Encoded size of IIKeying's initiatorSignedParameters (RFC 7016 2.3.7).
pub fn iikeying_signed_len(cookie_echo: &[u8], initiator_certificate: &[u8], skic: &[u8]) -> usize {
    4 + vlu_bytes_len(cookie_echo) + vlu_bytes_len(initiator_certificate) + vlu_bytes_len(skic)
}

/// Write IIKeying's initiatorSignedParameters (the bytes the initiator
/// signs, RFC 7016 2.3.7) into `out`; returns the bytes written.
pub fn write_iikeying_signed(
    out: &mut [u8],
    initiator_session_id: u32,
    cookie_echo: &[u8],
    initiator_certificate: &[u8],
    skic: &[u8],
) -> Result<usize, WireError> {
    if out.len() < iikeying_signed_len(cookie_echo, initiator_certificate, skic) {
        return Err(WireError::BufferTooSmall);
    }
    let mut w = Writer::new(out);
    w.u32(initiator_session_id)?;
    w.vlu_bytes(cookie_echo)?;
    w.vlu_bytes(initiator_certificate)?;
    w.vlu_bytes(skic)?;
    Ok(w.pos())
}

/// Encoded size of RIKeying's responderSignedParametersPortion (2.3.8).
pub fn rikeying_signed_portion_len(skrc: &[u8]) -> usize {
    4 + vlu_bytes_len(skrc)
}

/// Write RIKeying's responderSignedParametersPortion (RFC 7016 2.3.8); the
/// responder signs it followed by the initiator's skic.
pub fn write_rikeying_signed_portion(
    out: &mut [u8],
    responder_session_id: u32,
    skrc: &[u8],
) -> Result<usize, WireError> {
    if out.len() < rikeying_signed_portion_len(skrc) {
        return Err(WireError::BufferTooSmall);
    }
    let mut w = Writer::new(out);
    w.u32(responder_session_id)?;
    w.vlu_bytes(skrc)?;
    Ok(w.pos())
}

/// Check that `cumulative_ack + 1 + 8 * bitmap.len()` is representable, so
/// every sequence number a Bitmap Ack names fits in a `u64`.
fn validate_bitmap(cumulative_ack: u64, bitmap: &[u8]) -> Result<(), WireError> {
    let bits = (bitmap.len() as u64)
        .checked_mul(8)
        .ok_or(WireError::Invalid)?;
    cumulative_ack
        .checked_add(1)
        .and_then(|c| c.checked_add(bits))
        .map(|_| ())
        .ok_or(WireError::Invalid)
}

fn validate_ranges(cumulative_ack: u64, ranges: &[u8]) -> Result<(), WireError> {
    for r in RangeAckIter::new(cumulative_ack, ranges) {
        r?;
    }
    Ok(())
}

impl<'a> Chunk<'a> {
    /// Decode one chunk from its type code and payload (RFC 7016 2.3).
    /// Trailing bytes in fixed-layout payloads are [`WireError::BadLength`];
    /// an empty packetFragment or User Data breaking the sequence number
    /// rules is [`WireError::Invalid`].
    pub fn parse(chunk_type: u8, payload: &'a [u8]) -> Result<Chunk<'a>, WireError> {
        let mut r = Reader::new(payload);
        let chunk = match chunk_type {
            0x00 | 0xff => return Ok(Chunk::Padding { len: payload.len() }),
            0x7f => {
                let flags = r.u8()?;
                let packet_id = r.vlu()?;
                let fragment_num = r.vlu()?;
                let fragment = r.rest();
                if fragment.is_empty() {
                    // RFC 7016 3.4: MUST discard an empty packetFragment.
                    return Err(WireError::Invalid);
                }
                Chunk::PacketFragment {
                    more_fragments: flags & FRAG_MORE != 0,
                    packet_id,
                    fragment_num,
                    fragment,
                }
            }
            0x30 => Chunk::IHello {
                epd: r.vlu_bytes()?,
                tag: r.rest(),
            },
            0x0f => Chunk::FIHello {
                epd: r.vlu_bytes()?,
                reply_address: Address::read(&mut r)?,
                tag: r.rest(),
            },
            0x70 => Chunk::RHello {
                tag_echo: r.vlu_bytes()?,
                cookie: r.vlu_bytes()?,
                responder_certificate: r.rest(),
            },
            0x71 => {
                let tag_echo = r.vlu_bytes()?;
                let addresses = r.rest();
                validate_address_list(addresses)?;
                Chunk::Redirect {
                    tag_echo,
                    addresses,
                }
            }
            0x79 => Chunk::CookieChange {
                old_cookie: r.vlu_bytes()?,
                new_cookie: r.rest(),
            },
            0x38 => {
                let initiator_session_id = r.u32()?;
                let cookie_echo = r.vlu_bytes()?;
                let initiator_certificate = r.vlu_bytes()?;
                let skic = r.vlu_bytes()?;
                let signed_len = payload.len() - r.len();
                let signed = payload.get(..signed_len).ok_or(WireError::Truncated)?;
                Chunk::IIKeying {
                    initiator_session_id,
                    cookie_echo,
                    initiator_certificate,
                    skic,
                    signed,
                    signature: r.rest(),
                }
            }
            0x78 => {
                let responder_session_id = r.u32()?;
                let skrc = r.vlu_bytes()?;
                let signed_len = payload.len() - r.len();
                let signed_portion = payload.get(..signed_len).ok_or(WireError::Truncated)?;
                Chunk::RIKeying {
                    responder_session_id,
                    skrc,
                    signed_portion,
                    signature: r.rest(),
                }
            }
            0x01 => Chunk::Ping { message: r.rest() },
            0x41 => Chunk::PingReply {
                message_echo: r.rest(),
            },
            0x10 => {
                let (opt, fragment_control, abandon, final_) = read_ud_flags(&mut r)?;
                let flow_id = r.vlu()?;
                let sequence_number = r.vlu()?;
                let fsn_offset = r.vlu()?;
                validate_ud_numbers(sequence_number, fsn_offset, abandon)?;
                let options = read_ud_tail(&mut r, opt)?;
                Chunk::UserData(UserData {
                    fragment_control,
                    abandon,
                    final_,
                    flow_id,
                    sequence_number,
                    fsn_offset,
                    options,
                    data: r.rest(),
                })
            }
            0x11 => {
                let (opt, fragment_control, abandon, final_) = read_ud_flags(&mut r)?;
                let options = read_ud_tail(&mut r, opt)?;
                Chunk::NextUserData(NextUserData {
                    fragment_control,
                    abandon,
                    final_,
                    options,
                    data: r.rest(),
                })
            }
            0x50 => {
                let flow_id = r.vlu()?;
                let buffer_blocks_available = r.vlu()?;
                let cumulative_ack = r.vlu()?;
                let bitmap = r.rest();
                validate_bitmap(cumulative_ack, bitmap)?;
                Chunk::BitmapAck {
                    flow_id,
                    buffer_blocks_available,
                    cumulative_ack,
                    bitmap,
                }
            }
            0x51 => {
                let flow_id = r.vlu()?;
                let buffer_blocks_available = r.vlu()?;
                let cumulative_ack = r.vlu()?;
                let ranges = r.rest();
                validate_ranges(cumulative_ack, ranges)?;
                Chunk::RangeAck {
                    flow_id,
                    buffer_blocks_available,
                    cumulative_ack,
                    ranges,
                }
            }
            0x18 => Chunk::BufferProbe { flow_id: r.vlu()? },
            0x5e => Chunk::FlowException {
                flow_id: r.vlu()?,
                exception: r.vlu()?,
            },
            0x0c => Chunk::Close,
            0x4c => Chunk::CloseAck,
            0x2b => Chunk::Rekey(RekeyFields::parse(&mut r)?),
            0x6b => Chunk::RekeyAck(RekeyFields::parse(&mut r)?),
            other => {
                return Ok(Chunk::Unknown {
                    chunk_type: other,
                    payload,
                })
            }
        };
        if !r.is_empty() {
            return Err(WireError::BadLength);
        }
        Ok(chunk)
    }

    /// The chunk type code this chunk is emitted with.
    pub fn chunk_type(&self) -> u8 {
        match self {
            Chunk::PacketFragment { .. } => ChunkType::PacketFragment as u8,
            Chunk::IHello { .. } => ChunkType::IHello as u8,
            Chunk::FIHello { .. } => ChunkType::FIHello as u8,
            Chunk::RHello { .. } => ChunkType::RHello as u8,
            Chunk::Redirect { .. } => ChunkType::Redirect as u8,
            Chunk::CookieChange { .. } => ChunkType::CookieChange as u8,
            Chunk::IIKeying { .. } => ChunkType::IIKeying as u8,
            Chunk::RIKeying { .. } => ChunkType::RIKeying as u8,
            Chunk::Ping { .. } => ChunkType::Ping as u8,
            Chunk::PingReply { .. } => ChunkType::PingReply as u8,
            Chunk::UserData(_) => ChunkType::UserData as u8,
            Chunk::NextUserData(_) => ChunkType::NextUserData as u8,
            Chunk::BitmapAck { .. } => ChunkType::BitmapAck as u8,
            Chunk::RangeAck { .. } => ChunkType::RangeAck as u8,
            Chunk::BufferProbe { .. } => ChunkType::BufferProbe as u8,
            Chunk::FlowException { .. } => ChunkType::FlowException as u8,
            Chunk::Close => ChunkType::Close as u8,
            Chunk::CloseAck => ChunkType::CloseAck as u8,
            Chunk::Rekey(_) => ChunkType::Rekey as u8,
            Chunk::RekeyAck(_) => ChunkType::RekeyAck as u8,
            Chunk::Padding { .. } => 0x00,
            Chunk::Unknown { chunk_type, .. } => *chunk_type,
        }
    }

    /// Payload size (without the 3-byte chunk header).
    pub fn payload_len(&self) -> usize {
        use vlu::encoded_len as vl;
        match self {
            Chunk::PacketFragment {
                packet_id,
                fragment_num,
                fragment,
                ..
            } => 1 + vl(*packet_id) + vl(*fragment_num) + fragment.len(),
            Chunk::IHello { epd, tag } => vlu_bytes_len(epd) + tag.len(),
            Chunk::FIHello {
                epd,
                reply_address,
                tag,
            } => vlu_bytes_len(epd) + reply_address.encoded_len() + tag.len(),
            Chunk::RHello {
                tag_echo,
                cookie,
                responder_certificate,
            } => vlu_bytes_len(tag_echo) + vlu_bytes_len(cookie) + responder_certificate.len(),
            Chunk::Redirect {
                tag_echo,
                addresses,
            } => vlu_bytes_len(tag_echo) + addresses.len(),
            Chunk::CookieChange {
                old_cookie,
                new_cookie,
            } => vlu_bytes_len(old_cookie) + new_cookie.len(),
            Chunk::IIKeying {
                cookie_echo,
                initiator_certificate,
                skic,
                signature,
                ..
            } => iikeying_signed_len(cookie_echo, initiator_certificate, skic) + signature.len(),
            Chunk::RIKeying {
                skrc, signature, ..
            } => rikeying_signed_portion_len(skrc) + signature.len(),
            Chunk::Ping { message } => message.len(),
            Chunk::PingReply { message_echo } => message_echo.len(),
            Chunk::UserData(ud) => {
                1 + vl(ud.flow_id)
                    + vl(ud.sequence_number)
                    + vl(ud.fsn_offset)
                    + ud.options.map_or(0, <[u8]>::len)
                    + ud.data.len()
            }
            Chunk::NextUserData(n) => 1 + n.options.map_or(0, <[u8]>::len) + n.data.len(),
            Chunk::BitmapAck {
                flow_id,
                buffer_blocks_available,
                cumulative_ack,
                bitmap: tail,
            }
            | Chunk::RangeAck {
                flow_id,
                buffer_blocks_available,
                cumulative_ack,
                ranges: tail,
            } => vl(*flow_id) + vl(*buffer_blocks_available) + vl(*cumulative_ack) + tail.len(),
            Chunk::BufferProbe { flow_id } => vl(*flow_id),
            Chunk::FlowException { flow_id, exception } => vl(*flow_id) + vl(*exception),
            Chunk::Close | Chunk::CloseAck => 0,
            Chunk::Rekey(_) | Chunk::RekeyAck(_) => REKEY_PAYLOAD_LEN,
            Chunk::Padding { len } => *len,
            Chunk::Unknown { payload, .. } => payload.len(),
        }
    }

    /// Encoded size including the 3-byte chunk header.
    pub fn encoded_len(&self) -> usize {
        CHUNK_HEADER_LEN + self.payload_len()
    }

    /// Write the whole chunk (header and payload) at the start of `out`;
    /// returns the bytes written. Fails with [`WireError::BadLength`] if the
    /// payload exceeds 65535 bytes, [`WireError::BufferTooSmall`] if `out`
    /// is too short, and [`WireError::Invalid`] for field values that
    /// [`Chunk::parse`] would reject.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        self.validate()?;
        let payload_len = self.payload_len();
        let len16 = u16::try_from(payload_len).map_err(|_| WireError::BadLength)?;
        if out.len() < CHUNK_HEADER_LEN + payload_len {
            return Err(WireError::BufferTooSmall);
        }
        let mut w = Writer::new(out);
        w.u8(self.chunk_type())?;
        w.u16(len16)?;
        self.write_payload(&mut w)?;
        debug_assert_eq!(w.pos(), CHUNK_HEADER_LEN + payload_len);
        Ok(w.pos())
    }

    fn validate(&self) -> Result<(), WireError> {
        match self {
            Chunk::PacketFragment { fragment: [], .. } => Err(WireError::Invalid),
            Chunk::Redirect { addresses, .. } => validate_address_list(addresses),
            Chunk::IIKeying {
                initiator_session_id,
                cookie_echo,
                initiator_certificate,
                skic,
                signed,
                ..
            } => {
                if signed.len() != iikeying_signed_len(cookie_echo, initiator_certificate, skic) {
                    return Err(WireError::Invalid);
                }
                let mut r = Reader::new(signed);
                let ok = r.u32()? == *initiator_session_id
                    && r.vlu_bytes()? == *cookie_echo
                    && r.vlu_bytes()? == *initiator_certificate
                    && r.vlu_bytes()? == *skic;
                if ok {
                    Ok(())
                } else {
                    Err(WireError::Invalid)
                }
            }
            Chunk::RIKeying {
                responder_session_id,
                skrc,
                signed_portion,
                ..
            } => {
                if signed_portion.len() != rikeying_signed_portion_len(skrc) {
                    return Err(WireError::Invalid);
                }
                let mut r = Reader::new(signed_portion);
                if r.u32()? == *responder_session_id && r.vlu_bytes()? == *skrc {
                    Ok(())
                } else {
                    Err(WireError::Invalid)
                }
            }
            Chunk::UserData(ud) => {
                validate_ud_numbers(ud.sequence_number, ud.fsn_offset, ud.abandon)?;
                validate_options(ud.options)
            }
            Chunk::NextUserData(n) => validate_options(n.options),
            Chunk::BitmapAck {
                cumulative_ack,
                bitmap,
                ..
            } => validate_bitmap(*cumulative_ack, bitmap),
            Chunk::RangeAck {
                cumulative_ack,
                ranges,
                ..
            } => validate_ranges(*cumulative_ack, ranges),
            Chunk::Unknown { chunk_type, .. }
                if ChunkType::from_u8(*chunk_type).is_some()
                    || PADDING_TYPES.contains(chunk_type) =>
            {
                // Would decode as a different variant.
                Err(WireError::Invalid)
            }
            _ => Ok(()),
        }
    }

    fn write_payload(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        match self {
            Chunk::PacketFragment {
                more_fragments,
                packet_id,
                fragment_num,
                fragment,
            } => {
                w.u8(if *more_fragments { FRAG_MORE } else { 0 })?;
                w.vlu(*packet_id)?;
                w.vlu(*fragment_num)?;
                w.bytes(fragment)
            }
            Chunk::IHello { epd, tag } => {
                w.vlu_bytes(epd)?;
                w.bytes(tag)
            }
            Chunk::FIHello {
                epd,
                reply_address,
                tag,
            } => {
                w.vlu_bytes(epd)?;
                reply_address.write(w)?;
                w.bytes(tag)
            }
            Chunk::RHello {
                tag_echo,
                cookie,
                responder_certificate,
            } => {
                w.vlu_bytes(tag_echo)?;
                w.vlu_bytes(cookie)?;
                w.bytes(responder_certificate)
            }
            Chunk::Redirect {
                tag_echo,
                addresses,
            } => {
                w.vlu_bytes(tag_echo)?;
                w.bytes(addresses)
            }
            Chunk::CookieChange {
                old_cookie,
                new_cookie,
            } => {
                w.vlu_bytes(old_cookie)?;
                w.bytes(new_cookie)
            }
            Chunk::IIKeying {
                signed, signature, ..
            } => {
                w.bytes(signed)?;
                w.bytes(signature)
            }
            Chunk::RIKeying {
                signed_portion,
                signature,
                ..
            } => {
                w.bytes(signed_portion)?;
                w.bytes(signature)
            }
            Chunk::Ping { message } => w.bytes(message),
            Chunk::PingReply { message_echo } => w.bytes(message_echo),
            Chunk::UserData(ud) => {
                w.u8(ud_flags(
                    ud.options.is_some(),
                    ud.fragment_control,
                    ud.abandon,
                    ud.final_,
                ))?;
                w.vlu(ud.flow_id)?;
                w.vlu(ud.sequence_number)?;
                w.vlu(ud.fsn_offset)?;
                if let Some(o) = ud.options {
                    w.bytes(o)?;
                }
                w.bytes(ud.data)
            }
            Chunk::NextUserData(n) => {
                w.u8(ud_flags(
                    n.options.is_some(),
                    n.fragment_control,
                    n.abandon,
                    n.final_,
                ))?;
                if let Some(o) = n.options {
                    w.bytes(o)?;
                }
                w.bytes(n.data)
            }
            Chunk::BitmapAck {
                flow_id,
                buffer_blocks_available,
                cumulative_ack,
                bitmap: tail,
            }
            | Chunk::RangeAck {
                flow_id,
                buffer_blocks_available,
                cumulative_ack,
                ranges: tail,
            } => {
                w.vlu(*flow_id)?;
                w.vlu(*buffer_blocks_available)?;
                w.vlu(*cumulative_ack)?;
                w.bytes(tail)
            }
            Chunk::BufferProbe { flow_id } => w.vlu(*flow_id),
            Chunk::FlowException { flow_id, exception } => {
                w.vlu(*flow_id)?;
                w.vlu(*exception)
            }
            Chunk::Close | Chunk::CloseAck => Ok(()),
            Chunk::Rekey(f) | Chunk::RekeyAck(f) => f.write(w),
            Chunk::Padding { len } => w.fill(*len, 0),
            Chunk::Unknown { payload, .. } => w.bytes(payload),
        }
    }

    /// Whether this is a chunk of the flow layer (RFC 7016 2.3.11 - 2.3.16:
    /// User Data, Next User Data, acknowledgements, Buffer Probe, Flow
    /// Exception Report), the only chunks a `FlowSet` reads or writes.
    pub fn is_flow_chunk(&self) -> bool {
        matches!(
            self,
            Chunk::UserData(_)
                | Chunk::NextUserData(_)
                | Chunk::BitmapAck { .. }
                | Chunk::RangeAck { .. }
                | Chunk::BufferProbe { .. }
                | Chunk::FlowException { .. }
        )
    }

    /// Redirect destinations (RFC 7016 2.3.5); `None` for other chunks.
    /// An empty iteration means an Implied Redirect.
    pub fn redirect_addresses(&self) -> Option<AddressIter<'a>> {
        match self {
            Chunk::Redirect { addresses, .. } => Some(AddressIter::new(addresses)),
            _ => None,
        }
    }

    /// Acknowledged ranges after the cumulative ack of a Range Ack
    /// (RFC 7016 2.3.14); `None` for other chunks.
    pub fn ack_ranges(&self) -> Option<RangeAckIter<'a>> {
        match self {
            Chunk::RangeAck {
                cumulative_ack,
                ranges,
                ..
            } => Some(RangeAckIter::new(*cumulative_ack, ranges)),
            _ => None,
        }
    }

    /// Received sequence numbers after the cumulative ack of a Bitmap Ack
    /// (RFC 7016 2.3.13); `None` for other chunks.
    pub fn bitmap_acks(&self) -> Option<BitmapAckIter<'a>> {
        match self {
            Chunk::BitmapAck {
                cumulative_ack,
                bitmap,
                ..
            } => Some(BitmapAckIter::new(*cumulative_ack, bitmap)),
            _ => None,
        }
    }
}

/// Range Ack run-length pairs decoded exactly as the pseudocode of RFC 7016
/// 2.3.14: yields inclusive `(rangeFrom, rangeTo)`. Malformed VLUs or
/// sequence numbers past `u64::MAX` yield one `Err` and end the iteration
/// (never for chunks produced by [`Chunk::parse`], which validates).
#[derive(Debug, Clone)]
pub struct RangeAckIter<'a> {
    cursor: u64,
    rest: Reader<'a>,
}

impl<'a> RangeAckIter<'a> {
    pub fn new(cumulative_ack: u64, ranges: &'a [u8]) -> Self {
        RangeAckIter {
            cursor: cumulative_ack,
            rest: Reader::new(ranges),
        }
    }

    fn step(&mut self) -> Result<(u64, u64), WireError> {
        let holes_minus_one = self.rest.vlu()?;
        let received_minus_one = self.rest.vlu()?;
        let cursor = self.cursor.checked_add(1).ok_or(WireError::Invalid)?;
        let from = cursor
            .checked_add(holes_minus_one)
            .and_then(|v| v.checked_add(1))
            .ok_or(WireError::Invalid)?;
        let to = from
            .checked_add(received_minus_one)
            .ok_or(WireError::Invalid)?;
        self.cursor = to;
        Ok((from, to))
    }
}

impl Iterator for RangeAckIter<'_> {
    type Item = Result<(u64, u64), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.step();
        if item.is_err() {
            self.rest = Reader::new(&[]);
        }
        Some(item)
    }
}

/// Bitmap Ack bit field (RFC 7016 2.3.13): yields each received sequence
/// number in ascending order. Bit 0 (least significant) of the first byte
/// is `cumulative_ack + 2`, the next bit `cumulative_ack + 3`, and so on.
/// A sequence number past `u64::MAX` yields one `Err` and ends iteration.
#[derive(Debug, Clone)]
pub struct BitmapAckIter<'a> {
    cumulative_ack: u64,
    bitmap: &'a [u8],
    bit: u64,
    failed: bool,
}

impl<'a> BitmapAckIter<'a> {
    pub fn new(cumulative_ack: u64, bitmap: &'a [u8]) -> Self {
        BitmapAckIter {
            cumulative_ack,
            bitmap,
            bit: 0,
            failed: false,
        }
    }
}

impl Iterator for BitmapAckIter<'_> {
    type Item = Result<u64, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let byte = usize::try_from(self.bit / 8)
                .ok()
                .and_then(|i| self.bitmap.get(i))?;
            let bit = self.bit;
            self.bit += 1;
            if byte & (1 << (bit % 8)) != 0 {
                let seq = self
                    .cumulative_ack
                    .checked_add(2)
                    .and_then(|s| s.checked_add(bit));
                return match seq {
                    Some(s) => Some(Ok(s)),
                    None => {
                        self.failed = true;
                        Some(Err(WireError::Invalid))
                    }
                };
            }
        }
    }
}

/// Iterator over the raw chunks of a plain packet body (the bytes after the
/// packet header), applying the padding rules of RFC 7016 2.2.4: when fewer
/// than 3 bytes remain, or a chunkLength exceeds what remains, the rest is
/// padding and iteration ends. Yields `(chunk_type, payload)`; never fails.
#[derive(Debug, Clone)]
pub struct RawChunkIter<'a> {
    rest: &'a [u8],
}

impl<'a> RawChunkIter<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        RawChunkIter { rest: body }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for RawChunkIter<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&[chunk_type, l0, l1], body) = self.rest.split_first_chunk::<CHUNK_HEADER_LEN>()?;
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        if len > body.len() {
            // Padding (2.2.4): the rest of the packet is ignored.
            self.rest = &[];
            return None;
        }
        let (payload, rest) = body.split_at(len);
        self.rest = rest;
        Some((chunk_type, payload))
    }
}

/// Iterator over the decoded chunks of a plain packet body (RFC 7016
/// 2.2.4). Yields `Err` at the first chunk that fails to decode, then ends.
/// Padding chunks are yielded as [`Chunk::Padding`]; Next User Data is
/// yielded as is (the flow layer tracks the preceding User Data).
#[derive(Debug, Clone)]
pub struct ChunkIter<'a> {
    raw: RawChunkIter<'a>,
    failed: bool,
}

impl<'a> ChunkIter<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        ChunkIter {
            raw: RawChunkIter::new(body),
            failed: false,
        }
    }
}

impl<'a> Iterator for ChunkIter<'a> {
    type Item = Result<Chunk<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let (t, payload) = self.raw.next()?;
        let item = Chunk::parse(t, payload);
        self.failed = item.is_err();
        Some(item)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::address::tests::arb_address;
    use crate::wire::address::write_address_list;
    use crate::wire::option::{write_option_list, UserDataOption};
    use proptest::prelude::*;

    /// The User Data / Next User Data example of RFC 7016 2.3.12.
    pub(crate) const UD_EXAMPLE: [u8; 24] = [
        0x10, 0x00, 0x07, 0x10, 0x02, 0x05, 0x03, 0x00, 0x01, 0x02, //
        0x11, 0x00, 0x04, 0x30, 0x03, 0x04, 0x05, //
        0x11, 0x00, 0x04, 0x20, 0x06, 0x07, 0x08,
    ];
    /// The Bitmap Ack example of RFC 7016 2.3.13.
    pub(crate) const BITMAP_EXAMPLE: [u8; 8] = [0x50, 0x00, 0x05, 0x05, 0x7f, 0x10, 0x79, 0x06];
    /// The Range Ack example of RFC 7016 2.3.14.
    pub(crate) const RANGE_EXAMPLE: [u8; 10] =
        [0x51, 0x00, 0x07, 0x05, 0x7f, 0x10, 0x00, 0x00, 0x01, 0x03];

    /// Emit into buffers pre-filled with two different marker bytes: equal
    /// results prove every byte was written.
    fn emit_checked(c: &Chunk<'_>) -> Vec<u8> {
        let n = c.encoded_len();
        let mut a = vec![0xaa; n];
        let mut b = vec![0x55; n];
        assert_eq!(c.emit(&mut a), Ok(n), "{c:?}");
        assert_eq!(c.emit(&mut b), Ok(n));
        assert_eq!(a, b, "bytes left unwritten by {c:?}");
        for cut in 0..n {
            assert_eq!(c.emit(&mut vec![0; cut]), Err(WireError::BufferTooSmall));
        }
        a
    }

    fn parse_whole(bytes: &[u8]) -> Result<Chunk<'_>, WireError> {
        let mut it = ChunkIter::new(bytes);
        let c = it.next().ok_or(WireError::Truncated)?;
        assert!(it.next().is_none());
        c
    }

    #[test]
    fn user_data_example() {
        let chunks: Vec<Chunk<'_>> = ChunkIter::new(&UD_EXAMPLE)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chunks.len(), 3);
        let Chunk::UserData(first) = chunks[0] else {
            panic!("{:?}", chunks[0])
        };
        assert_eq!(
            first,
            UserData {
                fragment_control: FragmentControl::Begin,
                abandon: false,
                final_: false,
                flow_id: 2,
                sequence_number: 5,
                fsn_offset: 3,
                options: None,
                data: &[0, 1, 2],
            }
        );
        assert_eq!(first.forward_sequence_number(), 2);
        let Chunk::NextUserData(n1) = chunks[1] else {
            panic!()
        };
        let Chunk::NextUserData(n2) = chunks[2] else {
            panic!()
        };
        assert_eq!(n1.fragment_control, FragmentControl::Middle);
        assert_eq!(n2.fragment_control, FragmentControl::End);
        let second = first.followed_by(&n1).unwrap();
        let third = second.followed_by(&n2).unwrap();
        assert_eq!(
            (
                second.flow_id,
                second.sequence_number,
                second.forward_sequence_number()
            ),
            (2, 6, 2)
        );
        assert_eq!(
            (
                third.flow_id,
                third.sequence_number,
                third.forward_sequence_number()
            ),
            (2, 7, 2)
        );
        let message: Vec<u8> = [first.data, second.data, third.data].concat();
        assert_eq!(message, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let re: Vec<u8> = chunks.iter().flat_map(emit_checked).collect();
        assert_eq!(re, UD_EXAMPLE);
    }

    #[test]
    fn bitmap_ack_example() {
        let c = parse_whole(&BITMAP_EXAMPLE).unwrap();
        assert_eq!(
            c,
            Chunk::BitmapAck {
                flow_id: 5,
                buffer_blocks_available: 127,
                cumulative_ack: 16,
                bitmap: &[0x79, 0x06],
            }
        );
        let seqs: Vec<u64> = c.bitmap_acks().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(seqs, [18, 21, 22, 23, 24, 27, 28]);
        assert_eq!(emit_checked(&c), BITMAP_EXAMPLE);
    }

    #[test]
    fn range_ack_example() {
        let c = parse_whole(&RANGE_EXAMPLE).unwrap();
        assert_eq!(
            c,
            Chunk::RangeAck {
                flow_id: 5,
                buffer_blocks_available: 127,
                cumulative_ack: 16,
                ranges: &[0x00, 0x00, 0x01, 0x03],
            }
        );
        let ranges: Vec<(u64, u64)> = c.ack_ranges().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(ranges, [(18, 18), (21, 24)]);
        assert_eq!(emit_checked(&c), RANGE_EXAMPLE);
        assert_eq!(range_pairs(16, &ranges), [0x00, 0x00, 0x01, 0x03]);
    }

    /// The run-length pairs of a Range Ack (RFC 7016 2.3.14) for inclusive
    /// `ranges` after `cum`, as the flow layer's `SeqSet::write_ranges`
    /// writes them: for the tests' arbitrary acknowledgements.
    fn range_pairs(cum: u64, ranges: &[(u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut cursor = cum;
        for &(from, to) in ranges {
            vlu::push(&mut out, from - cursor - 2);
            vlu::push(&mut out, to - from);
            cursor = to;
        }
        out
    }

    #[test]
    fn malformed_chunks() {
        use WireError::*;
        let cases: &[(u8, &[u8], WireError)] = &[
            (0x7f, &[0x80, 0x01, 0x00], Invalid), // empty fragment
            (0x7f, &[0x80, 0x01], Truncated),     // missing fragmentNum
            (0x30, &[0x05, 1, 2], BadLength),     // epdLength past end
            (
                0x30,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                VluOverflow,
            ),
            (0x0f, &[0x00, 0x00, 1, 2], Truncated), // address cut short
            (0x71, &[0x00, 0x00, 1, 2, 3, 4, 0], Truncated),
            (0x38, &[0, 0, 0, 1, 0x00, 0x00], Truncated), // missing skic
            (0x78, &[0, 0, 1], Truncated),
            (0x10, &[0x00, 0x01, 0x00, 0x00], Invalid), // seq 0
            (0x10, &[0x00, 0x01, 0x05, 0x06], Invalid), // fsnOffset > seq
            (0x10, &[0x00, 0x01, 0x05, 0x00], Invalid), // fsnOffset 0, not abandoned
            (0x10, &[0x80, 0x01, 0x05, 0x01, 0x03, 0x00], BadLength), // option past end
            (0x10, &[0x80, 0x01, 0x05, 0x01], Truncated), // OPT without list
            (0x11, &[0x80, 0x01, 0x07], Truncated),     // list without marker
            (0x50, &[0x01, 0x01], Truncated),
            (
                0x50,
                &[
                    0x01, 0x01, 0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x01,
                ],
                Invalid,
            ),
            (0x51, &[0x01, 0x01, 0x10, 0x00], Truncated), // half a pair
            (
                0x51,
                &[
                    0x01, 0x01, 0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00,
                    0x00,
                ],
                Invalid,
            ),
            (0x18, &[0x01, 0x02], BadLength), // trailing byte
            (0x18, &[], Truncated),
            (0x5e, &[0x01], Truncated),
            (0x0c, &[0x00], BadLength),
            (0x4c, &[0x00], BadLength),
        ];
        for &(t, payload, err) in cases {
            assert_eq!(
                Chunk::parse(t, payload),
                Err(err),
                "type {t:#x} {payload:02x?}"
            );
        }
        // Abandoned with fsnOffset 0 is fine.
        assert!(Chunk::parse(0x10, &[0x02, 0x01, 0x05, 0x00]).is_ok());
    }

    #[test]
    fn rekey_chunks_golden_bytes() {
        let mut public = [0u8; 32];
        for (i, b) in public.iter_mut().enumerate() {
            *b = i as u8;
        }
        let f = RekeyFields {
            version: 1,
            epoch: 0x0102_0304,
            public,
        };
        let mut golden = vec![0x2b, 0x00, 0x25, 0x01, 0x01, 0x02, 0x03, 0x04];
        golden.extend_from_slice(&public);
        assert_eq!(emit_checked(&Chunk::Rekey(f)), golden);
        assert_eq!(Chunk::parse(0x2b, &golden[3..]), Ok(Chunk::Rekey(f)));
        golden[0] = 0x6b;
        assert_eq!(emit_checked(&Chunk::RekeyAck(f)), golden);
        assert_eq!(Chunk::parse(0x6b, &golden[3..]), Ok(Chunk::RekeyAck(f)));
        // Exactly 37 payload bytes.
        assert_eq!(
            Chunk::parse(0x2b, &golden[3..golden.len() - 1]),
            Err(WireError::Truncated)
        );
        let mut long = golden[3..].to_vec();
        long.push(0);
        assert_eq!(Chunk::parse(0x6b, &long), Err(WireError::BadLength));
    }

    #[test]
    fn emit_rejects_what_parse_rejects() {
        let ud = |seq, off, abandon, options| {
            Chunk::UserData(UserData {
                fragment_control: FragmentControl::Whole,
                abandon,
                final_: false,
                flow_id: 1,
                sequence_number: seq,
                fsn_offset: off,
                options,
                data: b"x",
            })
        };
        let mut out = [0u8; 128];
        assert_eq!(ud(0, 0, true, None).emit(&mut out), Err(WireError::Invalid));
        assert_eq!(
            ud(5, 6, false, None).emit(&mut out),
            Err(WireError::Invalid)
        );
        assert_eq!(
            ud(5, 0, false, None).emit(&mut out),
            Err(WireError::Invalid)
        );
        assert_eq!(
            ud(5, 1, false, Some(&[0x01, 0x07])).emit(&mut out),
            Err(WireError::Truncated)
        );
        assert_eq!(
            ud(5, 1, false, Some(&[0x00, 0x00])).emit(&mut out),
            Err(WireError::BadLength)
        );
        assert!(ud(5, 1, false, Some(&[0x00])).emit(&mut out).is_ok());
        let frag = Chunk::PacketFragment {
            more_fragments: false,
            packet_id: 1,
            fragment_num: 0,
            fragment: &[],
        };
        assert_eq!(frag.emit(&mut out), Err(WireError::Invalid));
        let unk = Chunk::Unknown {
            chunk_type: 0x10,
            payload: &[],
        };
        assert_eq!(unk.emit(&mut out), Err(WireError::Invalid));
        let iik = Chunk::IIKeying {
            initiator_session_id: 1,
            cookie_echo: b"c",
            initiator_certificate: b"cert",
            skic: b"k",
            signed: &[0, 0, 0, 1, 1, b'c', 4, b'c', b'e', b'r', b'X', 1, b'k'],
            signature: b"sig",
        };
        assert_eq!(iik.emit(&mut out), Err(WireError::Invalid));
        let big = vec![0u8; 70_000];
        assert_eq!(
            Chunk::Ping { message: &big }.emit(&mut vec![0; 80_000]),
            Err(WireError::BadLength)
        );
    }

    #[test]
    fn padding_rules() {
        // Fewer than three bytes left: padding.
        assert_eq!(ChunkIter::new(&[0x01, 0x00]).count(), 0);
        // chunkLength beyond the packet: padding, iteration ends.
        let body = [0x01, 0x00, 0x00, 0x01, 0x00, 0x05, 0xaa, 0xbb];
        let got: Vec<_> = ChunkIter::new(&body).collect();
        assert_eq!(got, vec![Ok(Chunk::Ping { message: &[] })]);
        // 0xff fill from the encryption layer.
        let mut body = RANGE_EXAMPLE.to_vec();
        body.extend_from_slice(&[0xff; 7]);
        assert_eq!(ChunkIter::new(&body).count(), 1);
        // Explicit padding chunks and unknown types are yielded.
        let body = [
            0x00, 0x00, 0x02, 0, 0, 0x08, 0x00, 0x01, 0x42, 0x0c, 0x00, 0x00,
        ];
        let got: Vec<_> = ChunkIter::new(&body).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![
                Chunk::Padding { len: 2 },
                Chunk::Unknown {
                    chunk_type: 0x08,
                    payload: &[0x42]
                },
                Chunk::Close
            ]
        );
        // The first malformed chunk ends iteration.
        let body = [0x18, 0x00, 0x00, 0x0c, 0x00, 0x00];
        let got: Vec<_> = ChunkIter::new(&body).collect();
        assert_eq!(got, vec![Err(WireError::Truncated)]);
    }

    #[test]
    fn redirect_addresses() {
        let a = "192.0.2.7:4910".parse().unwrap();
        let b = "[2001:db8::9]:1".parse().unwrap();
        let addrs = [
            Address::new(a, crate::wire::AddressOrigin::Reflexive),
            Address::new(b, crate::wire::AddressOrigin::Relay),
        ];
        let mut raw = vec![0u8; 26];
        write_address_list(&mut raw, &addrs).unwrap();
        let c = Chunk::Redirect {
            tag_echo: b"tag",
            addresses: &raw,
        };
        let bytes = emit_checked(&c);
        let back = parse_whole(&bytes).unwrap();
        let got: Vec<_> = back
            .redirect_addresses()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, addrs);
        let implied = Chunk::Redirect {
            tag_echo: b"tag",
            addresses: &[],
        };
        assert_eq!(implied.redirect_addresses().unwrap().count(), 0);
        assert!(c.ack_ranges().is_none() && c.bitmap_acks().is_none());
    }

    fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }

    fn blob(max: usize) -> impl Strategy<Value = &'static [u8]> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(leak)
    }

    fn big() -> impl Strategy<Value = u64> {
        (any::<u64>(), 0u32..64).prop_map(|(v, s)| v >> s)
    }

    fn fra() -> impl Strategy<Value = FragmentControl> {
        (0u8..4).prop_map(FragmentControl::from_bits)
    }

    fn options() -> impl Strategy<Value = Option<&'static [u8]>> {
        proptest::option::of(proptest::collection::vec(
            (big(), proptest::collection::vec(any::<u8>(), 0..20)),
            0..3,
        ))
        .prop_map(|o| {
            o.map(|opts| {
                let typed: Vec<UserDataOption<'_>> = opts
                    .iter()
                    .map(|(t, v)| UserDataOption::Other {
                        option_type: *t,
                        value: v,
                    })
                    .collect();
                let mut buf = vec![0u8; crate::wire::option::option_list_encoded_len(&typed)];
                write_option_list(&mut buf, &typed).unwrap();
                leak(buf)
            })
        })
    }

    /// Valid ack ranges after `cum`: ascending runs with holes between.
    fn ranges_after(cum: u64) -> impl Strategy<Value = Vec<(u64, u64)>> {
        proptest::collection::vec((0u64..300, 0u64..40), 0..8).prop_map(move |pairs| {
            let mut out = Vec::new();
            let mut cursor = cum;
            for (holes, recv) in pairs {
                let from = cursor + 2 + holes;
                let to = from + recv;
                out.push((from, to));
                cursor = to;
            }
            out
        })
    }

    pub(crate) fn arb_chunk() -> impl Strategy<Value = Chunk<'static>> {
        prop_oneof![
            (
                any::<bool>(),
                big(),
                big(),
                blob(64).prop_filter("non-empty", |f| !f.is_empty())
            )
                .prop_map(|(more_fragments, packet_id, fragment_num, fragment)| {
                    Chunk::PacketFragment {
                        more_fragments,
                        packet_id,
                        fragment_num,
                        fragment,
                    }
                }),
            (blob(40), blob(40)).prop_map(|(epd, tag)| Chunk::IHello { epd, tag }),
            (blob(40), arb_address(), blob(40)).prop_map(|(epd, reply_address, tag)| {
                Chunk::FIHello {
                    epd,
                    reply_address,
                    tag,
                }
            }),
            (blob(40), blob(40), blob(200)).prop_map(
                |(tag_echo, cookie, responder_certificate)| Chunk::RHello {
                    tag_echo,
                    cookie,
                    responder_certificate
                }
            ),
            (blob(40), proptest::collection::vec(arb_address(), 0..4)).prop_map(
                |(tag_echo, addrs)| {
                    let mut raw = vec![0u8; crate::wire::address::address_list_encoded_len(&addrs)];
                    write_address_list(&mut raw, &addrs).unwrap();
                    Chunk::Redirect {
                        tag_echo,
                        addresses: leak(raw),
                    }
                }
            ),
            (blob(40), blob(40)).prop_map(|(old_cookie, new_cookie)| Chunk::CookieChange {
                old_cookie,
                new_cookie
            }),
            (any::<u32>(), blob(40), blob(200), blob(40), blob(80)).prop_map(
                |(sid, cookie_echo, initiator_certificate, skic, signature)| {
                    let mut signed =
                        vec![0u8; iikeying_signed_len(cookie_echo, initiator_certificate, skic)];
                    write_iikeying_signed(
                        &mut signed,
                        sid,
                        cookie_echo,
                        initiator_certificate,
                        skic,
                    )
                    .unwrap();
                    Chunk::IIKeying {
                        initiator_session_id: sid,
                        cookie_echo,
                        initiator_certificate,
                        skic,
                        signed: leak(signed),
                        signature,
                    }
                }
            ),
            (any::<u32>(), blob(40), blob(80)).prop_map(|(sid, skrc, signature)| {
                let mut signed = vec![0u8; rikeying_signed_portion_len(skrc)];
                write_rikeying_signed_portion(&mut signed, sid, skrc).unwrap();
                Chunk::RIKeying {
                    responder_session_id: sid,
                    skrc,
                    signed_portion: leak(signed),
                    signature,
                }
            }),
            blob(64).prop_map(|message| Chunk::Ping { message }),
            blob(64).prop_map(|message_echo| Chunk::PingReply { message_echo }),
            (
                fra(),
                any::<bool>(),
                any::<bool>(),
                big(),
                1u64..,
                any::<u64>(),
                options(),
                blob(100)
            )
                .prop_map(
                    |(fragment_control, abandon, final_, flow_id, seq, off, options, data)| {
                        let mut fsn_offset = off % (seq.saturating_add(1)).max(1);
                        if fsn_offset == 0 && !abandon {
                            fsn_offset = 1;
                        }
                        Chunk::UserData(UserData {
                            fragment_control,
                            abandon,
                            final_,
                            flow_id,
                            sequence_number: seq,
                            fsn_offset,
                            options,
                            data,
                        })
                    }
                ),
            (fra(), any::<bool>(), any::<bool>(), options(), blob(100)).prop_map(
                |(fragment_control, abandon, final_, options, data)| Chunk::NextUserData(
                    NextUserData {
                        fragment_control,
                        abandon,
                        final_,
                        options,
                        data
                    }
                )
            ),
            (big(), big(), 0u64..(u64::MAX / 2), blob(30)).prop_map(
                |(flow_id, b, cumulative_ack, bitmap)| {
                    Chunk::BitmapAck {
                        flow_id,
                        buffer_blocks_available: b,
                        cumulative_ack,
                        bitmap,
                    }
                }
            ),
            (big(), big(), 0u64..(u64::MAX / 2)).prop_flat_map(|(flow_id, b, cum)| {
                ranges_after(cum).prop_map(move |ranges| Chunk::RangeAck {
                    flow_id,
                    buffer_blocks_available: b,
                    cumulative_ack: cum,
                    ranges: leak(range_pairs(cum, &ranges)),
                })
            }),
            big().prop_map(|flow_id| Chunk::BufferProbe { flow_id }),
            (big(), big())
                .prop_map(|(flow_id, exception)| Chunk::FlowException { flow_id, exception }),
            Just(Chunk::Close),
            Just(Chunk::CloseAck),
            (any::<u8>(), any::<u32>(), any::<[u8; 32]>(), any::<bool>()).prop_map(
                |(version, epoch, public, ack)| {
                    let f = RekeyFields {
                        version,
                        epoch,
                        public,
                    };
                    if ack {
                        Chunk::RekeyAck(f)
                    } else {
                        Chunk::Rekey(f)
                    }
                }
            ),
            (0usize..40).prop_map(|len| Chunk::Padding { len }),
            (
                any::<u8>().prop_filter("unassigned", |t| ChunkType::from_u8(*t).is_none()
                    && !PADDING_TYPES.contains(t)),
                blob(40)
            )
                .prop_map(|(chunk_type, payload)| Chunk::Unknown {
                    chunk_type,
                    payload
                }),
        ]
    }

    proptest! {
        #[test]
        fn chunk_round_trip(c in arb_chunk()) {
            let bytes = emit_checked(&c);
            prop_assert_eq!(parse_whole(&bytes), Ok(c.clone()));
            // Truncating the payload at every position never panics.
            for cut in 0..bytes.len() {
                let _ = Chunk::parse(bytes[0], &bytes[3..cut.max(3)]);
                let _ = ChunkIter::new(&bytes[..cut]).count();
            }
        }

        #[test]
        fn packet_of_chunks_round_trip(chunks in proptest::collection::vec(arb_chunk(), 0..6)) {
            let bytes: Vec<u8> = chunks.iter().flat_map(emit_checked).collect();
            let got: Vec<Chunk<'_>> = ChunkIter::new(&bytes).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(got, chunks);
        }

        #[test]
        fn range_acks_decode_what_was_acknowledged((cum, ranges) in (0u64..1_000_000).prop_flat_map(|c| (Just(c), ranges_after(c))), flow in big(), b in big()) {
            let pairs = range_pairs(cum, &ranges);
            let c = Chunk::RangeAck {
                flow_id: flow,
                buffer_blocks_available: b,
                cumulative_ack: cum,
                ranges: &pairs,
            };
            let bytes = emit_checked(&c);
            let c = parse_whole(&bytes).unwrap();
            let got: Vec<_> = c.ack_ranges().unwrap().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(&got, &ranges);
        }

        #[test]
        fn arbitrary_payloads_never_panic(t in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(c) = Chunk::parse(t, &payload) {
                let bytes = emit_checked(&c);
                prop_assert_eq!(Chunk::parse(t, &bytes[3..]), Ok(c.clone()));
                let _ = c.ack_ranges().map(|it| it.count());
                let _ = c.bitmap_acks().map(|it| it.count());
                let _ = c.redirect_addresses().map(|it| it.count());
            }
        }
    }
}
