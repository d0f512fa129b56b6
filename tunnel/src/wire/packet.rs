//! Multiplex (2.2.2) and plain packet header (2.2.4).

/// Packet mode (section 2.2.4). Mode 0 is forbidden and never decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketMode {
    Initiator = 1,
    Responder = 2,
    Startup = 3,
}

/// The plain packet header (section 2.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub time_critical: bool,
    pub time_critical_reverse: bool,
    pub mode: PacketMode,
    pub timestamp: Option<u16>,
    pub timestamp_echo: Option<u16>,
}
