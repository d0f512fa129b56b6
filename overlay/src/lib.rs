//! `ringlan-overlay`: which nodes keep sessions (links), how broadcasts
//! spread, and the learning Ethernet switch. Sans-IO: events and messages
//! go in; actions, events and one deadline come out. See `docs/overlay.md`.

pub mod ring;
pub mod switch;
pub mod wire;
