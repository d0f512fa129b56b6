//! `ringlan-agent`: the `ringlan` binary's library, the thin runtime around
//! the node core (`ringlan-node`): config, identity files, TAP device,
//! interface addresses, the status board, control socket, metrics endpoint
//! and the tokio loop that drives the node ([`runtime::run`]).

#![deny(unsafe_code)]

pub mod ca;
pub mod config;
pub mod control;
pub mod credentials;
pub mod dns;
pub mod generate;
pub mod identity;
#[allow(unsafe_code)] // getifaddrs(3)
pub mod ifaddrs;
pub mod metrics;
pub mod peer_cache;
pub mod runtime;
pub mod scans;
pub mod sched;
pub mod serve;
pub mod service;
pub mod status;
#[allow(unsafe_code)] // TUNSETOFFLOAD and friends on the TAP descriptor
pub mod tap;
pub mod tap_writer;
pub mod up;

/// Resolves once `shutdown` is true or its sender is gone.
pub async fn wait_for_shutdown(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&s| s).await;
}
