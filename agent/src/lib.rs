//! `ringlan-agent`: the `ringlan` binary's library: config, identity files,
//! TAP device, status model, control socket, metrics endpoint and the node
//! runtime entry point ([`node::run`]).

pub mod config;
pub mod control;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod routes;
pub mod service;
pub mod status;
pub mod tap;
pub mod up;

/// Resolves once `shutdown` is true or its sender is gone.
pub async fn wait_for_shutdown(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&s| s).await;
}
