//! Directory scans asked for over the control socket (`ringlan members`,
//! `ringlan topology`) and the metrics endpoint's page (`/topology.json`,
//! `/topology.svg`, every few seconds while a browser shows it): one scan
//! at a time, answers shared.
//!
//! - A request while a scan runs joins it: every request waiting for it is
//!   answered when it ends (complete or timed out: the node always answers
//!   a scan).
//! - A topology request within [`TOPOLOGY_REUSE`] of the last scan's end is
//!   answered at once from that scan's members (their published links are
//!   at least this old anyway: a member republishes its links at most once
//!   per `directory::LINKS_REPUBLISH`) and this node's live links, so a page
//!   left open, or several, costs one scan per [`TOPOLOGY_REUSE`], not one
//!   per fetch.
//! - `members` always waits for a scan (joining one in flight).
//!
//! Bounded: the replies waiting are at most the control socket's and the
//! metrics endpoint's connection caps (16 + 32); the last scan's members
//! are at most the overlay's `max_scan_records` (4,096).

use std::time::{Duration, Instant};

use ringlan_node::directory::MembersReport;
use ringlan_node::topology::Topology;
use ringlan_node::{Member, MemberRequest, Node};
use tokio::sync::oneshot;

/// How long a scan's members answer topology requests.
pub const TOPOLOGY_REUSE: Duration = Duration::from_secs(5);

/// Where a scan's answer goes.
#[derive(Debug)]
pub enum Reply {
    Members(oneshot::Sender<MembersReport>),
    Topology(oneshot::Sender<Topology>),
}

/// The scan in flight, the requests waiting for it, and the last one.
#[derive(Debug, Default)]
pub struct Scans {
    in_flight: Option<(MemberRequest, Vec<Reply>)>,
    last: Option<(Instant, Vec<Member>, bool)>,
}

impl Scans {
    /// A request (see the module doc): answered now, or when the scan in
    /// flight or a new one on `node` ends.
    pub fn ask(&mut self, node: &mut Node, now: Instant, reply: Reply) {
        let reply = match reply {
            Reply::Topology(tx) => match &self.last {
                Some((at, members, complete))
                    if now.saturating_duration_since(*at) < TOPOLOGY_REUSE =>
                {
                    let _ = tx.send(node.topology(now, members, *complete));
                    return;
                }
                _ => Reply::Topology(tx),
            },
            r => r,
        };
        match &mut self.in_flight {
            Some((_, waiting)) => waiting.push(reply),
            None => self.in_flight = Some((node.members(now), vec![reply])),
        }
    }

    /// A scan ended (`NodeEvent::Members`): answer everyone waiting for it.
    pub fn answered(
        &mut self,
        node: &Node,
        now: Instant,
        request: MemberRequest,
        members: Vec<Member>,
        complete: bool,
    ) {
        if self.in_flight.as_ref().map(|(r, _)| *r) != Some(request) {
            return;
        }
        let Some((_, waiting)) = self.in_flight.take() else {
            return;
        };
        for reply in waiting {
            match reply {
                Reply::Members(tx) => {
                    let _ = tx.send(node.members_report(now, &members, complete));
                }
                Reply::Topology(tx) => {
                    let _ = tx.send(node.topology(now, &members, complete));
                }
            }
        }
        self.last = Some((now, members, complete));
    }
}
