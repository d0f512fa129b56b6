//! `ringlan-overlay`: which nodes keep sessions (links), how broadcasts
//! spread, and the learning Ethernet switch. Sans-IO: events and messages
//! go in; actions, events and one deadline come out. See `docs/overlay.md`.

#![forbid(unsafe_code)]

pub mod overlay;
pub mod ring;
pub mod routing;
pub mod sim;
pub mod switch;
pub mod symphony;
pub mod wire;

pub use crate::overlay::{
    Action, Budget, Budgets, Config, ConfigError, Event, FrameSend, LinkCounts, LinkKind,
    Neighbour, OpenAttempt, Overlay, Received, RoutedCounters, Stats, MAX_BANNED,
};
pub use crate::switch::{DropReason, Forward, Mac, Switch, SwitchConfig};
pub use crate::wire::{FloodHeader, FrameHeader, Role, RoutedHeader};
