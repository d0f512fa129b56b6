//! `ringlan-tunnel`: an RTMFP endpoint (RFC 7016) with ringlan's
//! cryptography profile (`docs/crypto-profile.md`) and relayed flow routes
//! (`docs/relay.md`).
//!
//! The protocol core is sans-IO: time and received datagrams go in;
//! datagrams to send, events and the next timer deadline come out
//! ([`DatagramMachine`] states the call order). [`Endpoint`] is the
//! machine; [`driver`] is the thin tokio layer that owns sockets and
//! timers.
//!
//! The crate root exports what a node needs: the endpoint, its
//! configuration, events and commands' types ([`Path`], [`SessionId`],
//! [`FlowId`], ...), the relay and STUN types the node's policy uses, and
//! the birthday-punch planner and its extra sockets. Two modules stay public because they are
//! APIs of their own: [`crypto`] (identities, network secrets, the packet
//! AEAD) and [`driver`]. Everything else is internal; `docs/ARCHITECTURE.md`
//! maps the modules:
//!
//! - `endpoint/`: the [`Endpoint`] (demultiplexing, startup, forwarder,
//!   relay glue, STUN), one struct over several files;
//! - `session/`: one session's state machine with its timer table;
//! - `flow/`: flows (RFC 7016 3.6), `congestion`, `rtt`, `pmtu`;
//! - `wire/`: the codec (RFC 7016 2);
//! - `route_table`: relayed flow route entries; `path`: [`Path`];
//! - `ids`: handles and the id table; `punch` and `extra_sockets`
//!   (birthday punching), `stun`, `rng`.

#![deny(unsafe_code)]

mod congestion;
pub use congestion::CongestionStats;
pub mod crypto;
#[cfg(feature = "driver")]
pub mod driver;
mod endpoint;
mod extra_sockets;
mod flow;
mod ids;
mod machine;
mod path;
mod pmtu;
mod punch;
mod rng;
mod route_table;
mod rtt;
mod session;
pub mod stream;
mod stun;
#[cfg(feature = "driver")]
mod tcp;
mod wire;

pub use crypto::{AeadSuite, Certificate, Identity, NetworkName, NetworkSecret, Role, SuiteSet};
pub use endpoint::{
    BucketTable, Budget, CommandError, DropReason, Endpoint, EndpointConfig, EndpointStats, Event,
    PreAuthLimits, PreAuthStats, SessionInfo, TableStats, Target, Transmit, TransmitKind,
    REDIRECT_THRESHOLD,
};
pub use extra_sockets::ExtraSockets;
pub use flow::{
    AcceptPolicy, Delivery, FlowConfig, FlowEvent, FlowId, FlowStats, OpenError as FlowOpenError,
    RecvFlowId, Reliability, SendError,
};
pub use ids::{NodeId, RouteId, SessionId};
pub use machine::{DatagramMachine, Outgoing, SocketAction, SocketId};
pub use path::{canonical_addr, Path};
pub use punch::{
    Action as PunchAction, Attempt as PunchAttempt, Birthday, BirthdayConfig, ProbePlan,
};
pub use rng::Rng;
pub use route_table::{
    HopKey, HopMac, RelayLimits, RouteCounters, RouteError, RouteInfo, RouteOffer, RouteRole,
    DEFAULT_RELAY_MBPS, DEFAULT_RELAY_ROUTES, DEFAULT_RELAY_ROUTES_PER_ORIGIN,
    DEFAULT_RELAY_ROUTES_PER_TARGET, DEFAULT_RELAY_TOTAL_MBPS, ROUTE_OVERHEAD,
};
pub use session::{
    CloseReason, DeferredSeal, OpenFailure, RekeyConfig, SessionConfig, SessionState, SessionStats,
};
pub use stun::{classify_mapping, looks_like_stun, resolve_other, NatMapping, StunError, StunTxId};

/// The decoders and sub-machines the fuzz targets (`tunnel/fuzz`) drive
/// directly. Not an API: it changes with the internals.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::flow::{ChunkSink, FlowSet};
    pub use crate::route_table::{RouteInput, Routes, ROUTE_HEADER_LEN};
    pub use crate::stream::Deframer;
    pub use crate::wire::packet::MULTIPLEX_HEADER_LEN;
    pub use crate::wire::{
        scramble_session_id, split_multiplex, write_multiplex_header, Address, AddressIter, Chunk,
        ChunkIter, Fragmenter, OptionIter, PacketHeader, PacketMode, RawChunkIter, Reassembler,
        ReassemblyLimits, ReassemblyOutcome, UserData, UserDataOption,
    };
}
