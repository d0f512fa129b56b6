//! Chunks (RFC 7016 section 2.3). Payload fields borrow from the packet
//! being decoded so that decoding never copies user data.

use super::Address;

/// Chunk type codes (section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// User Data fragment control (section 2.3.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentControl {
    Whole = 0,
    Begin = 1,
    End = 2,
    Middle = 3,
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
    /// 2.3.7; `signed` is the initiatorSignedParameters byte range.
    IIKeying {
        initiator_session_id: u32,
        cookie_echo: &'a [u8],
        initiator_certificate: &'a [u8],
        skic: &'a [u8],
        signed: &'a [u8],
        signature: &'a [u8],
    },
    /// 2.3.8; `signed_portion` is the responderSignedParametersPortion.
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
    /// 0x00 / 0xff
    Padding { len: usize },
    /// Any other type code: skipped by receivers.
    Unknown { chunk_type: u8, payload: &'a [u8] },
}

/// User Data chunk fields (section 2.3.11). `options` is the raw option list
/// including its terminating Marker (empty if the OPT flag is clear).
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
