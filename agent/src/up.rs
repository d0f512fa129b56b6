//! `ringlan up`: set everything up, run the node, tear everything down.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, MacSetting};
use crate::control::ControlServer;
use crate::credentials;
use crate::dns::{self, DnsServer, NodeDirectory, Zone};
use crate::identity;
use crate::metrics::MetricsServer;
use crate::runtime::{self, NodeContext};
use crate::status::StatusBoard;
use crate::tap::{derive_mac, Tap, TapConfig};

/// Runs the agent for a checked config (see [`Config::load_and_check`])
/// until SIGTERM or SIGINT. On return the control socket is removed and the
/// TAP is gone.
pub async fn up(config: Config) -> anyhow::Result<()> {
    let secret = identity::read_secret(&config.network.secret_file)?;
    let (key, created) = identity::load_or_create_key(&config.node.key_file)?;
    if created {
        tracing::info!(path = %config.node.key_file.display(), "created a new node key");
    }
    tracing::info!(public_key = %identity::hex(&key.public_key()), "node identity");
    let membership = config.membership()?;
    let revocations = match &membership {
        None => {
            tracing::info!("membership: shared secret (no per-node revocation)");
            None
        }
        Some(m) => {
            tracing::info!(ca = %identity::hex(&m.ca.0), "membership: nodes admitted by certificate");
            runtime::log_certificate(&m.certificate, crate::ca::unix_now(), true);
            let path = config.revocations_path();
            match credentials::read_revocations(&path, &m.ca, &m.network) {
                Ok(Some(list)) => {
                    tracing::info!(
                        version = list.body().version,
                        revoked = list.body().revoked.len(),
                        path = %path.display(),
                        "revocation list"
                    );
                    Some(list)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(
                        "{e}; starting without it (members hand over their newest list)"
                    );
                    None
                }
            }
        }
    };

    let mac = match config.interface.mac {
        MacSetting::Auto => derive_mac(&key.public_key()),
        MacSetting::Fixed(m) => m,
    };
    let tap = Tap::open(&TapConfig {
        name: config.interface.name.clone(),
        mtu: config.interface.mtu,
        mac,
        addresses: config.interface.addresses.clone(),
    })
    .with_context(|| format!("cannot create TAP device {}", config.interface.name))?;

    let board = Arc::new(StatusBoard::new(runtime::starting_status(
        &config,
        &key.public_key(),
        runtime::tap_status(&config, &tap),
    )));
    let (stop_tx, stop_rx) = watch::channel(false);

    let (commands_tx, commands) = mpsc::channel(8);
    let control = ControlServer::bind(&config.control.socket, board.clone())
        .await?
        .with_commands(commands_tx.clone());
    tracing::info!(path = %control.path().display(), "control socket");
    let control_stats = control.stats();
    let control_task = tokio::spawn(control.serve(stop_rx.clone()));

    let metrics_task = match &config.metrics {
        Some(m) => {
            let server = MetricsServer::bind(m.listen, board.clone())
                .await
                .with_context(|| format!("cannot listen on {} for metrics", m.listen))?
                .report("control", control_stats)
                .with_commands(commands_tx.clone());
            tracing::info!(addr = %server.local_addr()?, "metrics endpoint");
            Some(tokio::spawn(server.serve(stop_rx.clone())))
        }
        None => None,
    };
    // The control socket and the metrics endpoint hold the senders.
    drop(commands_tx);

    let (names, dns_task) = match &config.dns {
        Some(d) => {
            let zone = Zone::new(&d.domain).map_err(anyhow::Error::msg)?;
            let (tx, rx) = mpsc::channel(dns::MAX_PENDING);
            let server = DnsServer::new(d.listen, zone, NodeDirectory(tx));
            (Some(rx), Some(tokio::spawn(server.serve(stop_rx.clone()))))
        }
        None => (None, None),
    };

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let signals = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            crate::service::notify_stopping();
            let _ = stop_tx.send(true);
        })
    };

    let ctx = NodeContext {
        config,
        key,
        secret,
        tap,
        status: board,
        membership,
        revocations,
        commands,
        names,
    };
    let result = runtime::run(ctx, stop_rx).await;
    if let Err(e) = &result {
        tracing::error!("node failed: {e:#}");
    }
    let _ = stop_tx.send(true);
    signals.abort();
    let _ = control_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    if let Some(t) = dns_task {
        let _ = t.await;
    }
    tracing::info!("stopped");
    result
}
