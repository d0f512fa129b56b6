//! The status board: where the runtime publishes the node core's status
//! snapshots ([`ringlan_node::status`]), and where the control socket and
//! the metrics endpoint read them ([`StatusSource`]) without touching the
//! node's state.

use std::time::Instant;

use tokio::sync::watch;

pub use ringlan_node::status::*;

/// Anything that can produce the current status snapshot.
pub trait StatusSource: Send + Sync + 'static {
    fn snapshot(&self) -> Status;
}

impl<F> StatusSource for F
where
    F: Fn() -> Status + Send + Sync + 'static,
{
    fn snapshot(&self) -> Status {
        self()
    }
}

/// Where the node runtime publishes its status. Cheap to read; readers get
/// a clone of the latest snapshot with `uptime_secs` filled in.
#[derive(Debug)]
pub struct StatusBoard {
    tx: watch::Sender<Status>,
    started: Instant,
}

impl StatusBoard {
    pub fn new(initial: Status) -> Self {
        StatusBoard {
            tx: watch::Sender::new(initial),
            started: Instant::now(),
        }
    }

    /// Replaces the whole snapshot.
    pub fn publish(&self, status: Status) {
        self.tx.send_replace(status);
    }

    /// Edits the snapshot in place.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        self.tx.send_modify(f);
    }

    /// Inserts or replaces the session with `s.peer_id` (per-peer counters).
    pub fn upsert_session(&self, s: SessionStatus) {
        self.tx.send_modify(
            |st| match st.sessions.iter_mut().find(|x| x.peer_id == s.peer_id) {
                Some(x) => *x = s,
                None => st.sessions.push(s),
            },
        );
    }

    /// Removes the session with this peer id; returns whether it existed.
    pub fn remove_session(&self, peer_id: &str) -> bool {
        let mut found = false;
        self.tx.send_if_modified(|st| {
            let before = st.sessions.len();
            st.sessions.retain(|x| x.peer_id != peer_id);
            found = st.sessions.len() != before;
            found
        });
        found
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.tx.subscribe()
    }
}

impl StatusSource for StatusBoard {
    fn snapshot(&self) -> Status {
        let mut s = self.tx.borrow().clone();
        s.uptime_secs = self.started.elapsed().as_secs();
        s
    }
}

impl<T: StatusSource> StatusSource for std::sync::Arc<T> {
    fn snapshot(&self) -> Status {
        (**self).snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_sessions() {
        let b = StatusBoard::new(Status::default());
        let mut rx = b.subscribe();
        let mut s = example().sessions[0].clone();
        b.upsert_session(s.clone());
        s.tx.frames = 5;
        b.upsert_session(s.clone());
        assert!(rx.has_changed().unwrap());
        let snap = b.snapshot();
        assert_eq!(snap.sessions.len(), 1);
        assert_eq!(snap.sessions[0].tx.frames, 5);
        rx.mark_unchanged();
        assert!(!b.remove_session("nope"));
        assert!(!rx.has_changed().unwrap());
        assert!(b.remove_session(&s.peer_id));
        assert!(b.snapshot().sessions.is_empty());
    }
}
