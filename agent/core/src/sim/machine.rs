//! What the simulator needs from a machine beyond [`DatagramMachine`]
//! (datagrams, timers, extra sockets for birthday punching): its events
//! and the frames it writes to its TAP.

use ringlan_tunnel::endpoint::{Endpoint, Event};
use ringlan_tunnel::DatagramMachine;

use crate::{Node, NodeEvent};

/// A machine the simulator can host. The simulator drains, after every
/// input and in this order until all are empty: socket actions
/// ([`DatagramMachine::poll_socket_action`]), datagrams, events, TAP
/// frames (socket actions first, so a machine may open a socket and send
/// from it in one go).
pub trait Machine: DatagramMachine {
    /// What [`Machine::poll_event`] yields; collected per host.
    type Event;
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// The next frame written to the TAP, appended to `out` (whose
    /// previous contents the simulator cleared); false if none.
    fn poll_frame(&mut self, out: &mut Vec<u8>) -> bool {
        let _ = out;
        false
    }
}

/// A bare endpoint: main socket only, no TAP.
impl Machine for Endpoint {
    type Event = Event;
    fn poll_event(&mut self) -> Option<Event> {
        Endpoint::poll_event(self)
    }
}

/// A whole node: extra sockets, TAP frames, node events.
impl Machine for Node {
    type Event = NodeEvent;
    fn poll_event(&mut self) -> Option<NodeEvent> {
        Node::poll_event(self)
    }
    fn poll_frame(&mut self, out: &mut Vec<u8>) -> bool {
        let Some(w) = self.poll_tap() else {
            return false;
        };
        out.extend_from_slice(w.frame());
        self.recycle(w);
        true
    }
}
