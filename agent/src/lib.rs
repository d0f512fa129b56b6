//! `ringlan-agent`: the `ringlan` binary's library: config, identity files,
//! TAP device, status model, control socket, metrics endpoint and the node
//! runtime entry point ([`node::run`]).

pub mod config;
pub mod identity;
pub mod status;
pub mod tap;
