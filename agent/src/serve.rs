//! The one accept loop behind the control socket and the metrics endpoint:
//! accept until shutdown, one task per connection, a short pause after an
//! accept error (e.g. out of file descriptors) instead of a busy loop.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::status::StatusSource;

/// How long to wait after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listener that hands out connections.
pub trait Accept {
    type Conn: Send + 'static;
    fn accept_conn(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn accept_conn(&self) -> io::Result<Self::Conn> {
        self.accept().await.map(|(s, _)| s)
    }
}

impl Accept for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;
    async fn accept_conn(&self) -> io::Result<Self::Conn> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Accepts connections on `listener` until `shutdown` turns true (or its
/// sender is dropped); each connection is served by `handle` in its own
/// task. `what` names the server in logs.
pub async fn accept_loop<L, H, F>(
    what: &'static str,
    listener: &L,
    source: &Arc<dyn StatusSource>,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    L: Accept,
    H: Fn(L::Conn, Arc<dyn StatusSource>) -> F,
    F: Future<Output = io::Result<()>> + Send + 'static,
{
    loop {
        tokio::select! {
            r = listener.accept_conn() => match r {
                Ok(conn) => {
                    let served = handle(conn, source.clone());
                    tokio::spawn(async move {
                        if let Err(e) = served.await {
                            tracing::debug!("{what} connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("{what} accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = crate::wait_for_shutdown(&mut shutdown) => break,
        }
    }
}
