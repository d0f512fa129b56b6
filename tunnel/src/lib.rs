//! `ringlan-tunnel`: an RTMFP endpoint (RFC 7016) with ringlan's
//! cryptography profile.
//!
//! The protocol core is sans-IO: time and received datagrams go in;
//! datagrams to send, events and the next timer deadline come out. The
//! `driver` module is the thin tokio layer that owns sockets and timers.

pub mod congestion;
pub mod crypto;
pub mod driver;
pub mod endpoint;
pub mod extra_sockets;
pub mod flow;
pub mod id;
pub mod machine;
pub mod pmtu;
pub mod punch;
pub mod relay;
pub mod rng;
pub mod rtt;
pub mod session;
pub mod stun;
pub mod wire;

pub use id::NodeId;
pub use machine::{DatagramMachine, Outgoing, SocketAction, SocketId};
pub use rng::Rng;
