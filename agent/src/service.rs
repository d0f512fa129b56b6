//! Service-manager integration: logging set-up and systemd notifications.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;

/// Installs the tracing subscriber: level from the config unless `RUST_LOG`
/// is set; no ANSI colours when stderr is not a terminal or when running
/// under systemd (`JOURNAL_STREAM` set), and no timestamps under systemd
/// (journald adds its own).
pub fn init_logging(level: LogLevel) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(level.as_str()),
    };
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = !journal && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if journal {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// Tells systemd the service is ready (`READY=1`), with a status line.
/// Does nothing when `NOTIFY_SOCKET` is not set.
pub fn notify_ready(status: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]) {
        tracing::warn!("sd_notify READY: {e}");
    }
}

/// Tells systemd the service is stopping (`STOPPING=1`).
pub fn notify_stopping() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        tracing::warn!("sd_notify STOPPING: {e}");
    }
}
