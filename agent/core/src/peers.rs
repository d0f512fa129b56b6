//! The one peer table: every session this node asked for or accepted, by
//! session id, with the member it belongs to.
//!
//! A session is in one of three states here:
//! - **opening**: we asked the endpoint for it (the overlay or the route
//!   control plane wants that member, or an introducer by address);
//! - **open**: the endpoint opened it and our three flows are up (the
//!   peer may still await admission, `admission`); the node's
//!   *current* session with a member is the one [`Peers::session_of`]
//!   names (a newer session to the same member replaces an older one);
//! - **closing**: we closed it ourselves (the overlay dropped the link, or
//!   a newer session replaced it), so its close is no news to the overlay.
//!
//! The endpoint keeps the sessions themselves and the overlay keeps links;
//! this table is the only place the node keeps "who is connected", and
//! every change to it goes through the methods below.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use ringlan_tunnel::NodeId;
use ringlan_tunnel::SessionId;
use ringlan_tunnel::{FlowId, RecvFlowId};

use crate::status::Traffic;

/// What a session's incoming flow carries (its metadata says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    /// Overlay control messages (reliable).
    Control,
    /// Ethernet frames (never retransmitted).
    Frames,
    /// Credentials, refusals and revocation lists (reliable).
    Membership,
}

/// Frames dropped on one session, by reason (fixed labels: no allocation
/// per dropped frame).
pub type Drops = std::collections::BTreeMap<&'static str, u64>;

/// An open session with a member.
#[derive(Debug)]
pub struct Peer {
    pub node: NodeId,
    /// Our outgoing flows.
    pub control: FlowId,
    pub frames: FlowId,
    /// A second frame flow for sparse frames (pings, DNS, TCP
    /// acknowledgements: `sparse::is_sparse`), served round-robin with
    /// `frames` so they do not wait behind bulk.
    pub sparse: FlowId,
    /// The peer's flows to us, by what they carry.
    pub recv: HashMap<RecvFlowId, FlowKind>,
    pub tx: Traffic,
    pub rx: Traffic,
    pub drops: Drops,
    pub opened: Instant,
    /// Whether TCP super-frames to this peer are cut into single-fragment
    /// frames: the session's frame loss measured against `tx.bytes`.
    pub cut: crate::dataplane::CutRule,
}

impl Peer {
    pub fn drop_frame(&mut self, reason: &'static str) {
        *self.drops.entry(reason).or_insert(0) += 1;
    }
}

/// A session we asked for and that has not opened yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The member; `None` for an introducer known only by address.
    pub node: Option<NodeId>,
    /// The addresses the overlay gave (told back to it on failure).
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug)]
enum Slot {
    Opening(Opening),
    Open(Peer),
    Closing,
}

/// The peer table.
#[derive(Debug, Default)]
pub struct Peers {
    slots: HashMap<SessionId, Slot>,
    /// The current open session per member.
    by_node: HashMap<NodeId, SessionId>,
}

impl Peers {
    /// The current open session with `node`.
    pub fn session_of(&self, node: NodeId) -> Option<SessionId> {
        self.by_node.get(&node).copied()
    }

    /// The open peer behind `session`.
    pub fn get(&self, session: SessionId) -> Option<&Peer> {
        match self.slots.get(&session)? {
            Slot::Open(p) => Some(p),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, session: SessionId) -> Option<&mut Peer> {
        match self.slots.get_mut(&session)? {
            Slot::Open(p) => Some(p),
            _ => None,
        }
    }

    /// The current session with `to` and its peer.
    pub fn current_mut(&mut self, to: NodeId) -> Option<(SessionId, &mut Peer)> {
        let sid = *self.by_node.get(&to)?;
        self.get_mut(sid).map(|p| (sid, p))
    }

    /// Every open peer.
    pub fn open(&self) -> impl Iterator<Item = (SessionId, &Peer)> + '_ {
        self.slots.iter().filter_map(|(sid, s)| match s {
            Slot::Open(p) => Some((*sid, p)),
            _ => None,
        })
    }

    /// Every current session by member.
    pub fn current(&self) -> impl Iterator<Item = (NodeId, SessionId)> + '_ {
        self.by_node.iter().map(|(n, s)| (*n, *s))
    }

    /// Whether `node` has a current open session.
    pub fn is_connected(&self, node: NodeId) -> bool {
        self.by_node.contains_key(&node)
    }

    /// Sessions still opening.
    pub fn opening(&self) -> impl Iterator<Item = (SessionId, &Opening)> + '_ {
        self.slots.iter().filter_map(|(sid, s)| match s {
            Slot::Opening(o) => Some((*sid, o)),
            _ => None,
        })
    }

    /// A session opening towards `node`.
    pub fn opening_for(&self, node: NodeId) -> Option<SessionId> {
        self.opening()
            .find(|(_, o)| o.node == Some(node))
            .map(|(sid, _)| sid)
    }

    /// We asked for `session`. A session already open or closing stays as
    /// it is; one already opening keeps what it was first asked for unless
    /// `replace`.
    pub fn asked(&mut self, session: SessionId, o: Opening, replace: bool) {
        match self.slots.get_mut(&session) {
            None => {
                self.slots.insert(session, Slot::Opening(o));
            }
            Some(Slot::Opening(old)) if replace => *old = o,
            Some(_) => {}
        }
    }

    /// `session` opened with `peer`. Returns what we had asked for (if we
    /// asked) and the older session to the same member that this one
    /// replaces (now closing: the caller closes it in the endpoint).
    pub fn opened(
        &mut self,
        session: SessionId,
        peer: Peer,
    ) -> (Option<Opening>, Option<SessionId>) {
        let node = peer.node;
        let asked = match self.slots.insert(session, Slot::Open(peer)) {
            Some(Slot::Opening(o)) => Some(o),
            _ => None,
        };
        let replaced = self
            .by_node
            .insert(node, session)
            .filter(|old| *old != session);
        if let Some(old) = replaced {
            self.slots.insert(old, Slot::Closing);
        }
        (asked, replaced)
    }

    /// `session` failed to open: what we had asked for.
    pub fn failed(&mut self, session: SessionId) -> Option<Opening> {
        match self.slots.remove(&session)? {
            Slot::Opening(o) => Some(o),
            other => {
                self.slots.insert(session, other);
                None
            }
        }
    }

    /// We close the current session with `node` ourselves. Returns it.
    pub fn close(&mut self, node: NodeId) -> Option<SessionId> {
        let sid = self.by_node.remove(&node)?;
        self.slots.insert(sid, Slot::Closing);
        Some(sid)
    }

    /// `session` (with `peer`) closed in the endpoint. Returns true when
    /// the overlay should hear of it: it was the member's current session
    /// and we did not close it ourselves.
    pub fn closed(&mut self, session: SessionId, peer: NodeId) -> bool {
        let slot = self.slots.remove(&session);
        let current = self.by_node.get(&peer) == Some(&session);
        if current {
            self.by_node.remove(&peer);
        }
        current && !matches!(slot, Some(Slot::Closing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8, now: Instant) -> Peer {
        Peer {
            node: NodeId::from_bytes([n; 16]),
            control: FlowId(1),
            frames: FlowId(2),
            sparse: FlowId(4),
            recv: HashMap::new(),
            tx: Traffic::default(),
            rx: Traffic::default(),
            drops: Drops::new(),
            opened: now,
            cut: Default::default(),
        }
    }

    #[test]
    fn a_newer_session_replaces_the_older_and_its_close_is_not_news() {
        let now = Instant::now();
        let mut t = Peers::default();
        let a = NodeId::from_bytes([1; 16]);
        t.asked(
            SessionId(1),
            Opening {
                node: Some(a),
                addrs: vec![],
            },
            false,
        );
        assert_eq!(t.opening_for(a), Some(SessionId(1)));
        let (asked, replaced) = t.opened(SessionId(1), peer(1, now));
        assert_eq!(asked.unwrap().node, Some(a));
        assert_eq!(replaced, None);
        assert_eq!(t.session_of(a), Some(SessionId(1)));
        // The member opened one towards us as well.
        let (asked, replaced) = t.opened(SessionId(2), peer(1, now));
        assert_eq!(asked, None);
        assert_eq!(replaced, Some(SessionId(1)));
        assert_eq!(t.session_of(a), Some(SessionId(2)));
        assert!(
            !t.closed(SessionId(1), a),
            "the replaced session's close is ours"
        );
        assert!(
            t.closed(SessionId(2), a),
            "the current session's close is news"
        );
        assert!(!t.is_connected(a));
        assert_eq!(t.open().count(), 0);
    }

    #[test]
    fn closing_ourselves_and_failures() {
        let now = Instant::now();
        let mut t = Peers::default();
        let a = NodeId::from_bytes([1; 16]);
        t.opened(SessionId(7), peer(1, now));
        // A later request for an open session does not turn it back into
        // an opening one.
        t.asked(
            SessionId(7),
            Opening {
                node: Some(a),
                addrs: vec![],
            },
            false,
        );
        assert!(t.get(SessionId(7)).is_some());
        assert_eq!(t.close(a), Some(SessionId(7)));
        assert!(t.get(SessionId(7)).is_none());
        assert!(!t.closed(SessionId(7), a));
        t.asked(
            SessionId(8),
            Opening {
                node: None,
                addrs: vec![],
            },
            false,
        );
        assert_eq!(t.failed(SessionId(8)).unwrap().node, None);
        assert_eq!(t.failed(SessionId(8)), None);
    }
}
