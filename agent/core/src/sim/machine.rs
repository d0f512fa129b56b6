//! What the simulator needs from a machine beyond
//! [`DatagramMachine`]: its events, its socket actions (extra sockets for
//! birthday punching) and the frames it writes to its TAP.

use std::net::SocketAddr;

use ringlan_tunnel::endpoint::{Endpoint, Event};
use ringlan_tunnel::{DatagramMachine, SocketId};

/// A socket action of a machine, performed by the simulated host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketAction {
    /// Bind a new socket `id` to an ephemeral port of the host; `dest` is
    /// where the machine means to send from it.
    Open { id: SocketId, dest: SocketAddr },
    /// Close socket `id` (never [`SocketId::MAIN`]).
    Close { id: SocketId },
}

/// A machine the simulator can host. The simulator drains, after every
/// input and in this order until all are empty: socket actions,
/// datagrams, events, TAP frames (socket actions first, so a machine may
/// open a socket and send from it in one go).
pub trait Machine: DatagramMachine {
    /// What [`Machine::poll_event`] yields; collected per host.
    type Event;
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// The next socket action.
    fn poll_socket(&mut self) -> Option<SocketAction> {
        None
    }
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
