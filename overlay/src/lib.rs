//! `ringlan-overlay`: which nodes keep sessions (links), how broadcasts
//! spread, and the learning Ethernet switch. Sans-IO: events and messages
//! go in; actions, events and one deadline come out. See `docs/overlay.md`.

#![forbid(unsafe_code)]

pub mod directory;
pub mod overlay;
pub mod ring;
pub mod routing;
pub mod sim;
pub mod source;
pub mod switch;
pub mod symphony;
pub mod wire;

pub use crate::directory::{DirConfig, DirError, DirKey, DirRequest, Record, RecordError};
pub use crate::overlay::{
    Action, Budget, Budgets, Config, ConfigError, DirCounters, Event, FrameSend, LinkCounts,
    LinkKind, Neighbour, OpenAttempt, Overlay, Received, RecordCheckFn, RoutedCounters, Stats,
    MAX_BANNED,
};
pub use crate::source::{auto_mac, IpPrefix, MacPolicy, SourcePolicy};
pub use crate::switch::{DropReason, Forward, Learn, Mac, Switch, SwitchConfig};
pub use crate::wire::{FloodHeader, FrameHeader, OriginAuth, Role, RoutedHeader};
