//! The node runtime: what runs between "everything is set up" and
//! "shutdown requested". `ringlan up` ([`crate::up`]) loads the config and
//! identity, opens the TAP and starts the control socket and metrics, then
//! hands everything to [`run`].
//!
//! This is where the tunnel endpoint and the overlay are wired to the TAP.
//! Today it publishes the node's initial status (no sessions yet), reports
//! readiness to systemd and waits for shutdown.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::identity::{hex, NetworkSecret, NodeKey};
use crate::status::{Status, StatusBoard, TapStatus};
use crate::tap::{format_mac, Tap};

/// Everything the runtime needs, owned.
pub struct NodeContext {
    /// The validated config (the secret and key files were checked).
    pub config: Config,
    /// The node's Ed25519 identity.
    pub key: NodeKey,
    /// The network membership secret.
    pub secret: NetworkSecret,
    /// The open TAP device; dropping it removes the interface.
    pub tap: Tap,
    /// Where to publish status snapshots and per-peer counters; read by the
    /// control socket and the metrics endpoint.
    pub status: Arc<StatusBoard>,
}

/// The status of a node that has its TAP but no sessions.
pub fn initial_status(ctx: &NodeContext) -> Status {
    Status {
        node_id: None,
        node_name: ctx.config.node.name.clone(),
        network: ctx.config.network.name.clone(),
        role: ctx.config.role.into(),
        public_key: hex(&ctx.key.public_key()),
        tap: TapStatus {
            name: ctx.tap.name().to_string(),
            mac: format_mac(&ctx.tap.mac()),
            mtu: ctx.tap.mtu(),
            addresses: ctx
                .config
                .interface
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
        },
        listen: Vec::new(),
        addresses: Vec::new(),
        sessions: Vec::new(),
        neighbours: None,
        uptime_secs: 0,
    }
}

/// Runs the node until `shutdown` turns true. Returns when everything it
/// started has stopped; the TAP is removed when `ctx` is dropped on return.
pub async fn run(ctx: NodeContext, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    ctx.status.publish(initial_status(&ctx));
    tracing::info!(
        tap = ctx.tap.name(),
        mac = %format_mac(&ctx.tap.mac()),
        role = ctx.config.role.as_str(),
        "node up"
    );
    crate::service::notify_ready(&format!(
        "{} up on {}",
        ctx.config.node.name,
        ctx.tap.name()
    ));
    crate::wait_for_shutdown(&mut shutdown).await;
    tracing::info!("node stopping");
    Ok(())
}
