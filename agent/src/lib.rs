//! `ringlan-agent`: the `ringlan` binary's library, the thin runtime around
//! the node core (`ringlan-node`): config, identity files, TAP device,
//! interface addresses, the status board, control socket, metrics endpoint
//! and the tokio loop that drives the node ([`runtime::run`]).

pub mod config;
pub mod control;
pub mod identity;
pub mod ifaddrs;
pub mod metrics;
pub mod runtime;
pub mod service;
pub mod status;
pub mod tap;
pub mod up;

/// Resolves once `shutdown` is true or its sender is gone.
pub async fn wait_for_shutdown(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&s| s).await;
}
