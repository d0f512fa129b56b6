//! Admission: which peers become members of this node's overlay, and the
//! revocation lists that spread between them (`docs/membership.md`
//! "Admission" and "Revocation").
//!
//! Every session carries a third flow, [`MEMBERSHIP_FLOW`] (reliable),
//! whose messages are in [`wire`]. When a session opens, both ends send
//! `Credentials` at once: their certificate (if they have one) and the
//! version of their newest revocation list.
//!
//! - **Without a network CA** a peer is admitted at once (the shared
//!   secret is the whole check); `Credentials` still go out, without a
//!   certificate, so a peer with a CA can say why it refuses us.
//! - **With a network CA** a peer is *admitted* only when its certificate
//!   decodes, was signed by our CA for our network, is valid now give or
//!   take [`CLOCK_SKEW`], is not revoked by our newest list, and names the
//!   key that signed the session's handshake (its node id is the
//!   session's peer id). Until then the overlay does not know the peer
//!   (no `peer_up`, so no `Hello`), its frames are dropped (`unadmitted`)
//!   and its control messages are held ([`MAX_HELD`], replayed in order
//!   on admission). No `Credentials` within [`ADMISSION_TIMEOUT`] is
//!   "no certificate".
//! - **Refusing** sends `Refused(reason)`, counts `admission_<reason>`,
//!   logs one line, and closes the session once the refusal was
//!   acknowledged (at most [`REFUSE_LINGER`] later). For
//!   [`REFUSED_FOR`] the node opens no session to the refused node
//!   itself, nor to the address of the refused direct session (an
//!   introducer is opened by address; the overlay hears `open_failed`,
//!   its back-off). A peer's
//!   `Refused` is logged, counted (`refused_by_peer_<reason>`) and closes
//!   the session at once, with the same hold-off.
//! - **Re-checks** on every housekeeping tick: an admitted peer whose
//!   certificate expired is refused (`expired`).
//!
//! Revocation lists: one pushed by the operator ([`Node::push_revocations`])
//! or received on a membership flow is installed when it is signed by our
//! CA for our network and has a higher version than ours; then the runtime
//! hears [`NodeEvent::Revocations`] (to persist it), every session with a
//! revoked node is refused (`revoked`), the overlay bans them
//! ([`ringlan_overlay::Overlay::ban`]), and the list goes to every admitted
//! peer that is not known to hold it (each version crosses each link at
//! most once: a bounded flood). A peer admitted with an older version than
//! ours gets our list at once, so nodes that were offline catch up.

pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use ringlan_tunnel::crypto::{Certificate, NetworkName};
use ringlan_tunnel::{FlowId, NodeId, Path, Reliability, SessionId, SuiteSet};

use crate::membership::{
    armor, format_utc, CaKey, NodeCert, Rejected, RevocationList, Revoked, CLOCK_SKEW,
};
use crate::status::MembershipStatus;
use crate::{Node, NodeEvent};
use wire::{Message, RefuseReason};

/// Flow metadata of the membership flow (reliable: [`wire`] messages).
pub const MEMBERSHIP_FLOW: &[u8] = b"ringlan/membership/1";
/// A peer that sent no acceptable `Credentials` for this long after the
/// session opened is refused ("no certificate").
pub const ADMISSION_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused session is closed once the `Refused` message was
/// acknowledged, or this long after it was sent.
pub const REFUSE_LINGER: Duration = Duration::from_secs(2);
/// No session is opened to a node that refused us, or that we refused,
/// for this long.
pub const REFUSED_FOR: Duration = Duration::from_secs(60);
/// Control messages held per peer before admission; one more refuses the
/// peer (`overflow`). A peer sends a handful (`Hello`, link requests,
/// gossip) before it hears our credentials.
pub const MAX_HELD: usize = 64;
/// Bytes of control messages held per peer before admission.
pub const MAX_HELD_BYTES: usize = 256 << 10;
/// Nodes remembered as refused (the oldest entry goes first).
const MAX_REFUSED_NODES: usize = 1024;
/// Status and the log warn this long before the own certificate expires.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Admission by network-CA certificate (`network.ca` in the agent).
#[derive(Debug, Clone)]
pub struct MembershipSetup {
    /// The network CA's public key.
    pub ca: CaKey,
    /// This node's certificate.
    pub certificate: NodeCert,
    /// The newest revocation list the node kept (its state directory).
    pub revocations: Option<RevocationList>,
}

/// What a refusal holds sessions off from: a node, or the address of a
/// node opened by address (an introducer), whose id the overlay does not
/// know when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Held {
    Node(NodeId),
    Addr(std::net::SocketAddr),
}

/// Why [`Node::push_revocations`] refused a list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("this node has no network CA (network.ca), so it keeps no revocation list")]
    NoCa,
    #[error("not a revocation list: {0}")]
    Malformed(String),
    #[error("revocation list refused: {0}")]
    Rejected(Rejected),
    #[error("revocation list version {offered} is not newer than version {current}, which this node holds")]
    NotNewer { offered: u64, current: u64 },
}

/// A session's admission state.
#[derive(Debug)]
enum GateState {
    /// Waiting for the peer's credentials; its control messages are held.
    Pending {
        since: Instant,
        held: VecDeque<Vec<u8>>,
        held_bytes: usize,
    },
    Admitted,
    /// Refused (by either end); the session closes at `close_at`.
    Refused {
        close_at: Instant,
    },
}

/// One session's membership flow and admission.
#[derive(Debug)]
struct Gate {
    node: NodeId,
    /// Our sending membership flow.
    flow: FlowId,
    state: GateState,
    /// Opened to an introducer known only by address.
    is_introducer: bool,
    /// The peer's certificate, once admitted with a CA.
    cert: Option<NodeCert>,
    /// The newest list version the peer holds, as far as we know.
    peer_version: u64,
}

/// The network CA, our certificate and the newest revocation list.
#[derive(Debug)]
struct CaState {
    ca: CaKey,
    network: NetworkName,
    cert: NodeCert,
    list: Option<RevocationList>,
    /// Node ids the list revokes (its node ids, and the node ids of its
    /// keys under [`SuiteSet::ALL`]).
    banned: BTreeSet<NodeId>,
    /// This node's Ed25519 public key.
    own_key: [u8; 32],
    /// What the own-certificate check said last (logged on change).
    own: OwnState,
}

/// Our own certificate, as last checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnState {
    Good,
    /// Valid, but expires within [`EXPIRY_WARNING`].
    Expiring,
    /// Members refuse it, for this reason.
    Refused(RefuseReason),
}

/// The node's admission state.
#[derive(Debug)]
pub(crate) struct Admission {
    ca: Option<CaState>,
    /// Ordered: what the node sends to several peers goes out in one
    /// order (a seeded simulation runs the same every time).
    gates: BTreeMap<SessionId, Gate>,
    /// Nodes not to open sessions to before the instant.
    refused: HashMap<Held, Instant>,
    /// `admission_<reason>`, `refused_by_peer_<reason>`, `revocations_*`.
    pub(crate) drops: BTreeMap<String, u64>,
    /// Seconds since the Unix epoch at the node's start.
    unix_start: u64,
}

impl Admission {
    /// `own_key`: this node's Ed25519 public key (its certificate must
    /// name it).
    pub(crate) fn new(
        setup: Option<MembershipSetup>,
        network: &NetworkName,
        unix_start: u64,
        own_key: [u8; 32],
    ) -> Admission {
        let ca = setup.map(|m| {
            let list = m.revocations.filter(|l| match l.check(&m.ca, network) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "the kept revocation list is not accepted; ignoring it");
                    false
                }
            });
            let banned = list
                .as_ref()
                .map(|l| banned_ids(l, network))
                .unwrap_or_default();
            CaState {
                ca: m.ca,
                network: network.clone(),
                cert: m.certificate,
                list,
                banned,
                own_key,
                own: OwnState::Good,
            }
        });
        Admission {
            ca,
            gates: BTreeMap::new(),
            refused: HashMap::new(),
            drops: BTreeMap::new(),
            unix_start,
        }
    }

    fn count(&mut self, label: String) {
        *self.drops.entry(label).or_insert(0) += 1;
    }

    /// The version of our newest list (0: none).
    fn version(&self) -> u64 {
        self.ca
            .as_ref()
            .and_then(|c| c.list.as_ref())
            .map_or(0, |l| l.body().version)
    }

    pub(crate) fn is_admitted(&self, session: SessionId) -> bool {
        self.gates
            .get(&session)
            .is_some_and(|g| matches!(g.state, GateState::Admitted))
    }

    /// Whether sessions to `node` (by id, or by address for introducers
    /// known only by address) are held off now.
    pub(crate) fn held_off(&self, now: Instant, node: Held) -> bool {
        self.refused.get(&node).is_some_and(|t| now < *t)
    }

    fn hold_off(&mut self, now: Instant, node: Held) {
        if self.refused.len() >= MAX_REFUSED_NODES && !self.refused.contains_key(&node) {
            self.refused.retain(|_, t| now < *t);
            if self.refused.len() >= MAX_REFUSED_NODES {
                if let Some(oldest) = self
                    .refused
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(n, _)| *n)
                {
                    self.refused.remove(&oldest);
                }
            }
        }
        self.refused.insert(node, now + REFUSED_FOR);
    }

    /// Why our own certificate is not good at `unix` (expired, not yet
    /// valid, revoked), if it is not.
    fn own_problem(&self, unix: u64) -> Option<RefuseReason> {
        let c = self.ca.as_ref()?;
        Some(match c.cert.check(&c.ca, &c.network, unix, CLOCK_SKEW) {
            Err(e) => reason_of(&e),
            Ok(()) if c.cert.body().node_key != c.own_key => RefuseReason::KeyMismatch,
            Ok(()) if c.list.as_ref().is_some_and(|l| l.revokes_cert(&c.cert)) => {
                RefuseReason::Revoked
            }
            Ok(()) => return None,
        })
    }

    /// What member records must satisfy with our CA (`None`: no CA).
    pub(crate) fn ca_check(&self) -> Option<crate::directory::CaCheck> {
        self.ca.as_ref().map(|c| crate::directory::CaCheck {
            ca: c.ca,
            network: c.network.clone(),
            banned: c.banned.clone(),
        })
    }

    /// Our certificate, encoded (`None`: no CA).
    pub(crate) fn own_certificate(&self) -> Option<&[u8]> {
        self.ca.as_ref().map(|c| c.cert.as_bytes())
    }

    /// The sources our certificate allows us (`None`: no CA).
    pub(crate) fn own_source_policy(&self) -> Option<ringlan_overlay::SourcePolicy> {
        self.ca
            .as_ref()
            .map(|c| crate::dataplane::source_policy(&c.cert))
    }

    /// The membership part of the status.
    pub(crate) fn status(&self, unix: u64) -> MembershipStatus {
        let Some(c) = &self.ca else {
            return MembershipStatus::SharedSecret;
        };
        let b = c.cert.body();
        let left = i128::from(b.not_after) - i128::from(unix);
        let days_left = i64::try_from(left.div_euclid(86_400)).unwrap_or(i64::MIN);
        let warning = match self.own_problem(unix) {
            Some(RefuseReason::Expired) => {
                Some("certificate expired: members refuse this node".into())
            }
            Some(RefuseReason::NotYetValid) => Some(format!(
                "certificate not valid before {}: members refuse this node",
                format_utc(b.not_before)
            )),
            Some(RefuseReason::Revoked) => {
                Some("certificate revoked: members refuse this node".into())
            }
            Some(RefuseReason::KeyMismatch) => Some(
                "certificate names another key than this node's: members refuse this node".into(),
            ),
            Some(r) => Some(format!(
                "certificate not accepted ({r}): members refuse this node"
            )),
            None if left < EXPIRY_WARNING.as_secs() as i128 => Some(format!(
                "certificate expires in {days_left} days: sign a new one (ringlan ca sign)"
            )),
            None => None,
        };
        MembershipStatus::Certificate {
            ca: crate::membership::hex(&c.ca.0),
            name: b.name.clone(),
            not_after: b.not_after,
            expires: format_utc(b.not_after),
            days_left,
            revocations_version: self.version(),
            warning,
        }
    }
}

/// The refusal reason for a certificate check failure.
fn reason_of(e: &Rejected) -> RefuseReason {
    match e {
        Rejected::WrongIssuer(_) | Rejected::BadSignature => RefuseReason::NotOurCa,
        Rejected::WrongNetwork(_) => RefuseReason::OtherNetwork,
        Rejected::NotYetValid(_) => RefuseReason::NotYetValid,
        Rejected::Expired(_) => RefuseReason::Expired,
    }
}

/// The node ids a list revokes, in `network` (a key's node id offering
/// every suite, as agents do: the only id admission accepts for it).
fn banned_ids(list: &RevocationList, network: &NetworkName) -> BTreeSet<NodeId> {
    list.body()
        .revoked
        .iter()
        .filter_map(|r| match r {
            Revoked::NodeId(id) => Some(NodeId::from_bytes(*id)),
            Revoked::Key(k) => Certificate::for_public_key(k, network, SuiteSet::ALL)
                .ok()
                .map(|c| c.node_id()),
        })
        .collect()
}

/// A pushed list: the binary encoding, or its armoured text form.
fn decode_pushed(bytes: &[u8]) -> Result<RevocationList, PushError> {
    let armoured = std::str::from_utf8(bytes)
        .ok()
        .filter(|t| t.contains("-----BEGIN "));
    let owned;
    let raw = match armoured {
        Some(text) => {
            let (kind, b) = armor::decode(text).map_err(|e| PushError::Malformed(e.to_string()))?;
            if kind != armor::Kind::RevocationList {
                return Err(PushError::Malformed(format!("a {} block", kind.label())));
            }
            owned = b;
            &owned[..]
        }
        None => bytes,
    };
    RevocationList::decode(raw).map_err(|e| PushError::Malformed(e.to_string()))
}

impl Node {
    /// Seconds since the Unix epoch at `now`.
    pub(crate) fn unix_now(&self, now: Instant) -> u64 {
        self.adm
            .unix_start
            .saturating_add(now.saturating_duration_since(self.started).as_secs())
    }

    /// At start and on every tick: say loudly what is wrong with our own
    /// certificate (expired, not yet valid, revoked) or that it expires
    /// within [`EXPIRY_WARNING`], once per change.
    pub(crate) fn check_own_certificate(&mut self, now: Instant) {
        let unix = self.unix_now(now);
        let problem = self.adm.own_problem(unix);
        let Some(c) = self.adm.ca.as_mut() else {
            return;
        };
        let b = c.cert.body();
        let left = b.not_after.saturating_sub(unix);
        let state = match problem {
            Some(r) => OwnState::Refused(r),
            None if left < EXPIRY_WARNING.as_secs() => OwnState::Expiring,
            None => OwnState::Good,
        };
        if state == c.own {
            return;
        }
        c.own = state;
        match state {
            OwnState::Refused(r) => tracing::warn!(
                name = %b.name,
                expires = %format_utc(b.not_after),
                "OUR CERTIFICATE IS NOT ACCEPTED ({r}): members will refuse this node"
            ),
            OwnState::Expiring => tracing::warn!(
                name = %b.name,
                expires = %format_utc(b.not_after),
                days_left = left / 86_400,
                "our certificate expires soon: sign a new one (ringlan ca sign)"
            ),
            OwnState::Good => {}
        }
    }

    /// A session opened and its flows are up: send our credentials and
    /// admit the peer at once without a CA.
    pub(crate) fn gate_opened(
        &mut self,
        now: Instant,
        session: SessionId,
        node: NodeId,
        flow: FlowId,
        is_introducer: bool,
    ) {
        let creds = Message::Credentials {
            certificate: self.adm.ca.as_ref().map(|c| c.cert.as_bytes().to_vec()),
            revocations_version: self.adm.version(),
        };
        self.adm.gates.insert(
            session,
            Gate {
                node,
                flow,
                state: GateState::Pending {
                    since: now,
                    held: VecDeque::new(),
                    held_bytes: 0,
                },
                is_introducer,
                cert: None,
                peer_version: 0,
            },
        );
        self.send_membership(now, session, &creds);
        match &self.adm.ca {
            None => self.admit(now, session, None),
            Some(c) if c.banned.contains(&node) => self.refuse(now, session, RefuseReason::Revoked),
            Some(_) => {}
        }
    }

    fn send_membership(&mut self, now: Instant, session: SessionId, msg: &Message) {
        let Some(g) = self.adm.gates.get(&session) else {
            return;
        };
        let flow = g.flow;
        let node = g.node;
        let bytes = match msg.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%node, error = %e, "membership message not encoded");
                return;
            }
        };
        if let Err(e) = self
            .endpoint
            .send(now, session, flow, &bytes, Reliability::Reliable)
        {
            tracing::warn!(%node, error = %e, "membership message not sent");
        }
    }

    /// The peer passed (or there is no CA): the overlay hears of it, and
    /// what it sent meanwhile is replayed.
    fn admit(&mut self, now: Instant, session: SessionId, cert: Option<NodeCert>) {
        let Some(g) = self.adm.gates.get_mut(&session) else {
            return;
        };
        let held = match std::mem::replace(&mut g.state, GateState::Admitted) {
            GateState::Pending { held, .. } => held,
            other => {
                g.state = other;
                return;
            }
        };
        g.cert = cert;
        let (node, is_introducer, peer_version) = (g.node, g.is_introducer, g.peer_version);
        let Some(path) = self.endpoint.session_info(session).map(|i| i.path) else {
            return;
        };
        if self.adm.ca.is_some() {
            tracing::info!(peer = %node, %path, "peer admitted");
        }
        if let Some(cert) = self.adm.gates.get(&session).and_then(|g| g.cert.as_ref()) {
            // Its frames carry only the sources its certificate allows.
            let policy = crate::dataplane::source_policy(cert);
            self.overlay.set_source_policy(node, policy);
        }
        self.overlay
            .peer_up(now, node, path.direct(), is_introducer);
        // Punching towards this member is over once a direct path opened
        // it (a relayed session goes on punching to move).
        if let Path::Direct(remote) = path {
            self.punch_succeeded(node, remote);
        }
        self.set_ready("first session open".into());
        for data in held {
            self.overlay.handle_control(now, node, &data);
            self.sync_peer_addresses(node);
            self.endpoint.recycle(session, data);
        }
        if peer_version < self.adm.version() {
            self.send_list(now, session);
        }
    }

    /// Send our list to the peer of `session` (it is known to hold an
    /// older one).
    fn send_list(&mut self, now: Instant, session: SessionId) {
        let Some(list) = self.adm.ca.as_ref().and_then(|c| c.list.as_ref()) else {
            return;
        };
        let version = list.body().version;
        let msg = Message::Revocations {
            list: list.as_bytes().to_vec(),
        };
        self.send_membership(now, session, &msg);
        if let Some(g) = self.adm.gates.get_mut(&session) {
            g.peer_version = g.peer_version.max(version);
        }
    }

    /// Refuse the peer of `session`: tell it why, count, log, and close
    /// the session once the refusal went out.
    fn refuse(&mut self, now: Instant, session: SessionId, reason: RefuseReason) {
        let Some(g) = self.adm.gates.get(&session) else {
            return;
        };
        if matches!(g.state, GateState::Refused { .. }) {
            return;
        }
        let (node, flow, peer_version) = (g.node, g.flow, g.peer_version);
        let addr = self
            .endpoint
            .session_info(session)
            .map_or_else(|| "-".to_string(), |i| i.path.to_string());
        tracing::warn!(peer = %node, %addr, reason = %reason, "refusing peer: {reason}");
        self.adm.count(format!("admission_{}", reason.as_str()));
        if reason == RefuseReason::Revoked && peer_version < self.adm.version() {
            // The list that revokes it: it learns why, and keeps it.
            self.send_list(now, session);
        }
        self.send_membership(now, session, &Message::Refused { reason });
        self.endpoint.close_flow(session, flow);
        self.gate_closed(now, session, now + REFUSE_LINGER);
    }

    /// The session of `session` is refused (by either end): the overlay
    /// loses the peer if it had it, and the session closes at `close_at`.
    fn gate_closed(&mut self, now: Instant, session: SessionId, close_at: Instant) {
        let Some(g) = self.adm.gates.get_mut(&session) else {
            return;
        };
        let was = std::mem::replace(&mut g.state, GateState::Refused { close_at });
        let node = g.node;
        if let GateState::Pending { held, .. } = was {
            for data in held {
                self.endpoint.recycle(session, data);
            }
        }
        self.adm.hold_off(now, Held::Node(node));
        if let Some(addr) = self
            .endpoint
            .session_info(session)
            .and_then(|i| i.path.direct())
        {
            self.adm.hold_off(now, Held::Addr(addr));
        }
        if self.peers.session_of(node) == Some(session) {
            self.peers.close(node);
            // The overlay's link ran on this session (or on the one it
            // replaced, whose close was ours and no news to the overlay).
            if self.overlay.is_linked(node) {
                self.overlay.peer_down(now, node);
            }
        }
        if close_at <= now {
            self.endpoint.close(now, session, false);
        }
    }

    /// A control message from the peer of `session`: handed back when the
    /// peer is admitted, held before, dropped once refused.
    pub(crate) fn gate_control(
        &mut self,
        now: Instant,
        session: SessionId,
        data: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let Some(g) = self.adm.gates.get_mut(&session) else {
            self.endpoint.recycle(session, data);
            return None;
        };
        let overflow = match &mut g.state {
            GateState::Admitted => return Some(data),
            GateState::Refused { .. } => false,
            GateState::Pending {
                held, held_bytes, ..
            } => {
                if held.len() >= MAX_HELD || *held_bytes + data.len() > MAX_HELD_BYTES {
                    true
                } else {
                    *held_bytes += data.len();
                    held.push_back(data);
                    return None;
                }
            }
        };
        self.endpoint.recycle(session, data);
        if overflow {
            self.refuse(now, session, RefuseReason::Overflow);
        }
        None
    }

    /// A membership-flow message from the peer of `session`.
    pub(crate) fn membership_message(&mut self, now: Instant, session: SessionId, data: &[u8]) {
        let Some(g) = self.adm.gates.get(&session) else {
            return;
        };
        let node = g.node;
        let pending = matches!(g.state, GateState::Pending { .. });
        let refused = matches!(g.state, GateState::Refused { .. });
        let msg = match Message::decode(data) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(peer = %node, error = %e, "bad membership message");
                self.adm.count("membership_malformed".into());
                if pending {
                    self.refuse(now, session, RefuseReason::Malformed);
                }
                return;
            }
        };
        match msg {
            Message::Credentials {
                certificate,
                revocations_version,
            } => {
                if let Some(g) = self.adm.gates.get_mut(&session) {
                    g.peer_version = g.peer_version.max(revocations_version);
                }
                if pending {
                    self.check_credentials(now, session, node, certificate.as_deref());
                }
            }
            Message::Refused { reason } => {
                let addr = self
                    .endpoint
                    .session_info(session)
                    .map_or_else(|| "-".to_string(), |i| i.path.to_string());
                tracing::warn!(peer = %node, %addr, reason = %reason, "refused by {node}: {reason}");
                self.adm
                    .count(format!("refused_by_peer_{}", reason.as_str()));
                if !refused {
                    self.gate_closed(now, session, now);
                } else {
                    self.endpoint.close(now, session, false);
                }
            }
            Message::Revocations { list } => {
                if !refused {
                    self.list_received(now, session, node, &list);
                }
            }
        }
    }

    /// The peer's credentials: admit or refuse.
    fn check_credentials(
        &mut self,
        now: Instant,
        session: SessionId,
        node: NodeId,
        certificate: Option<&[u8]>,
    ) {
        let unix = self.unix_now(now);
        let Some(c) = &self.adm.ca else {
            return;
        };
        let verdict = match certificate {
            None => Err(RefuseReason::NoCertificate),
            Some(bytes) => match NodeCert::decode(bytes) {
                Err(_) => Err(RefuseReason::Malformed),
                Ok(cert) => match cert.check(&c.ca, &c.network, unix, CLOCK_SKEW) {
                    Err(e) => Err(reason_of(&e)),
                    Ok(()) if c.banned.contains(&node) => Err(RefuseReason::Revoked),
                    Ok(()) if c.list.as_ref().is_some_and(|l| l.revokes_cert(&cert)) => {
                        Err(RefuseReason::Revoked)
                    }
                    Ok(()) if cert.node_id() != Some(node) => Err(RefuseReason::KeyMismatch),
                    Ok(()) => Ok(cert),
                },
            },
        };
        match verdict {
            Ok(cert) => self.admit(now, session, Some(cert)),
            Err(r) => self.refuse(now, session, r),
        }
    }

    /// A list from a peer: installed if it is newer and ours.
    fn list_received(&mut self, now: Instant, session: SessionId, node: NodeId, bytes: &[u8]) {
        let Some(c) = &self.adm.ca else {
            tracing::debug!(peer = %node, "revocation list from a peer ignored: no network CA");
            return;
        };
        let list = match RevocationList::decode(bytes) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(peer = %node, error = %e, "malformed revocation list from peer");
                self.adm.count("revocations_malformed".into());
                return;
            }
        };
        if let Err(e) = list.check(&c.ca, &c.network) {
            tracing::warn!(peer = %node, error = %e, "revocation list from peer refused");
            self.adm.count("revocations_refused".into());
            return;
        }
        let version = list.body().version;
        if let Some(g) = self.adm.gates.get_mut(&session) {
            g.peer_version = g.peer_version.max(version);
        }
        if c.list.as_ref().is_some_and(|cur| !list.supersedes(cur)) {
            return;
        }
        tracing::info!(peer = %node, version, "newer revocation list from peer");
        self.install_list(now, list);
    }

    /// Hand the node a revocation list (`ringlan revocations push`): the
    /// encoded list or its armoured text. It must be signed by the
    /// network CA for this network and newer than the list held; then it
    /// is installed and spreads to every member. Returns its version.
    pub fn push_revocations(&mut self, now: Instant, bytes: &[u8]) -> Result<u64, PushError> {
        let c = self.adm.ca.as_ref().ok_or(PushError::NoCa)?;
        let list = decode_pushed(bytes)?;
        list.check(&c.ca, &c.network).map_err(PushError::Rejected)?;
        if let Some(cur) = &c.list {
            if !list.supersedes(cur) {
                return Err(PushError::NotNewer {
                    offered: list.body().version,
                    current: cur.body().version,
                });
            }
        }
        let version = list.body().version;
        tracing::info!(version, "revocation list pushed");
        self.install_list(now, list);
        self.process_endpoint(now);
        Ok(version)
    }

    /// Install a checked, newer list: persist (event), refuse revoked
    /// peers, ban them in the overlay, spread the list.
    fn install_list(&mut self, now: Instant, list: RevocationList) {
        let Some(c) = self.adm.ca.as_mut() else {
            return;
        };
        let version = list.body().version;
        c.banned = banned_ids(&list, &c.network);
        let banned: Vec<NodeId> = c.banned.iter().copied().collect();
        tracing::info!(
            version,
            entries = list.body().revoked.len(),
            "revocation list installed"
        );
        self.events.push_back(NodeEvent::Revocations {
            list: list.as_bytes().to_vec(),
            version,
        });
        c.list = Some(list);
        // Records of revoked members are refused from now on.
        self.install_record_check();
        // Says so loudly when the list revokes us.
        self.check_own_certificate(now);
        // Revoked peers first (they hear why), then the overlay forgets
        // them for good.
        let revoked: Vec<SessionId> = self
            .adm
            .gates
            .iter()
            .filter(|(_, g)| !matches!(g.state, GateState::Refused { .. }))
            .filter(|(_, g)| {
                self.adm.ca.as_ref().is_some_and(|c| {
                    c.banned.contains(&g.node)
                        || g.cert.as_ref().is_some_and(|cert| {
                            c.list.as_ref().is_some_and(|l| l.revokes_cert(cert))
                        })
                })
            })
            .map(|(s, _)| *s)
            .collect();
        for s in revoked {
            self.refuse(now, s, RefuseReason::Revoked);
        }
        if !self.overlay.ban(now, banned) {
            tracing::warn!("the overlay's ban list is full: some revoked nodes are not banned");
        }
        let spread: Vec<SessionId> = self
            .adm
            .gates
            .iter()
            .filter(|(_, g)| matches!(g.state, GateState::Admitted) && g.peer_version < version)
            .map(|(s, _)| *s)
            .collect();
        for s in spread {
            self.send_list(now, s);
        }
    }

    /// Periodic checks: admission timeouts, lingering refusals, expired
    /// certificates of admitted peers, our own certificate.
    pub(crate) fn admission_tick(&mut self, now: Instant) {
        let unix = self.unix_now(now);
        let mut timed_out = Vec::new();
        let mut close = Vec::new();
        let mut expired = Vec::new();
        for (s, g) in &self.adm.gates {
            match &g.state {
                GateState::Pending { since, .. } if now >= *since + ADMISSION_TIMEOUT => {
                    timed_out.push(*s)
                }
                GateState::Refused { close_at } if now >= *close_at => close.push(*s),
                GateState::Admitted => {
                    if let Some(Err(e)) = g.cert.as_ref().map(|c| c.check_time(unix, CLOCK_SKEW)) {
                        expired.push((*s, reason_of(&e)));
                    }
                }
                _ => {}
            }
        }
        for s in timed_out {
            self.refuse(now, s, RefuseReason::NoCertificate);
        }
        for (s, r) in expired {
            self.refuse(now, s, r);
        }
        for s in close {
            self.endpoint.close(now, s, false);
        }
        self.adm.refused.retain(|_, t| now < *t);
        self.check_own_certificate(now);
        self.process_endpoint(now);
    }

    /// Our refusal was acknowledged: close the session now.
    pub(crate) fn gate_flow_complete(&mut self, now: Instant, session: SessionId, flow: FlowId) {
        if self
            .adm
            .gates
            .get(&session)
            .is_some_and(|g| g.flow == flow && matches!(g.state, GateState::Refused { .. }))
        {
            self.endpoint.close(now, session, false);
        }
    }

    /// Whether `flow` is our membership flow on `session`.
    pub(crate) fn is_membership_flow(&self, session: SessionId, flow: FlowId) -> bool {
        self.adm.gates.get(&session).is_some_and(|g| g.flow == flow)
    }

    /// The session is gone.
    pub(crate) fn gate_gone(&mut self, session: SessionId) {
        if let Some(g) = self.adm.gates.remove(&session) {
            if let GateState::Pending { held, .. } = g.state {
                for data in held {
                    self.endpoint.recycle(session, data);
                }
            }
        }
    }

    /// The network CA's public key, if the node admits by certificate.
    pub fn network_ca(&self) -> Option<CaKey> {
        self.adm.ca.as_ref().map(|c| c.ca)
    }

    /// The newest revocation list the node holds.
    pub fn revocations(&self) -> Option<&RevocationList> {
        self.adm.ca.as_ref().and_then(|c| c.list.as_ref())
    }

    /// The certificate `node` was admitted with (on its current session),
    /// with a network CA: what the CA allows it (source addresses, MAC
    /// policy, roles).
    pub fn peer_certificate(&self, node: NodeId) -> Option<&NodeCert> {
        let sid = self.peers.session_of(node)?;
        let g = self.adm.gates.get(&sid)?;
        match g.state {
            GateState::Admitted => g.cert.as_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::cert::tests::{body, ca, node_key};
    use crate::membership::{ListBody, SignedBody};

    fn home() -> NetworkName {
        NetworkName::new("home").unwrap()
    }

    fn list(version: u64, revoked: Vec<Revoked>) -> RevocationList {
        ListBody {
            version,
            revoked,
            ..ListBody::first(home(), 1_800_000_000)
        }
        .sign(&ca())
        .unwrap()
    }

    fn admission(revocations: Option<RevocationList>) -> Admission {
        let setup = MembershipSetup {
            ca: CaKey(ca().verifying_key().to_bytes()),
            certificate: body().sign(&ca()).unwrap(),
            revocations,
        };
        Admission::new(Some(setup), &home(), 0, body().node_key)
    }

    fn warning(a: &Admission, unix: u64) -> (i64, Option<String>) {
        match a.status(unix) {
            MembershipStatus::Certificate {
                days_left, warning, ..
            } => (days_left, warning),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_says_what_is_wrong_with_our_certificate() {
        let none = Admission::new(None, &home(), 0, [0; 32]);
        assert_eq!(none.status(0), MembershipStatus::SharedSecret);
        assert_eq!(none.own_problem(0), None);

        let a = admission(None);
        let (nb, na) = (body().not_before, body().not_after);
        let day = 86_400;
        assert_eq!(warning(&a, nb + day), (364, None));
        let (d, w) = warning(&a, na - 10 * day);
        assert_eq!(d, 10);
        assert!(w.unwrap().contains("expires in 10 days"));
        // Within the clock skew: still valid, 0 days left.
        assert_eq!(a.own_problem(na + 60), None);
        let (d, w) = warning(&a, na + 2 * day);
        assert_eq!(d, -2);
        assert!(w.unwrap().contains("expired"));
        assert_eq!(a.own_problem(na + 2 * day), Some(RefuseReason::Expired));
        let (_, w) = warning(&a, nb - day);
        assert!(w.unwrap().contains("not valid before"));
        // A certificate of another key.
        let setup = MembershipSetup {
            ca: CaKey(ca().verifying_key().to_bytes()),
            certificate: body().sign(&ca()).unwrap(),
            revocations: None,
        };
        let other = Admission::new(Some(setup), &home(), 0, node_key(9));
        assert_eq!(other.own_problem(nb + day), Some(RefuseReason::KeyMismatch));

        let revoked = admission(Some(list(4, vec![Revoked::Key(body().node_key)])));
        assert_eq!(revoked.own_problem(nb + day), Some(RefuseReason::Revoked));
        match revoked.status(nb + day) {
            MembershipStatus::Certificate {
                revocations_version: 4,
                warning: Some(w),
                name,
                ..
            } => {
                assert!(w.contains("revoked"), "{w}");
                assert_eq!(name, "laptop");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_kept_list_of_another_ca_is_ignored() {
        let other = ListBody {
            version: 7,
            ..ListBody::first(home(), 0)
        }
        .sign(&ed25519_dalek::SigningKey::from_bytes(&[0x55; 32]))
        .unwrap();
        assert_eq!(admission(Some(other)).version(), 0);
        assert_eq!(admission(Some(list(3, vec![]))).version(), 3);
    }

    #[test]
    fn revoked_keys_and_ids_are_banned_node_ids() {
        let id = [0x11; 16];
        let l = list(1, vec![Revoked::NodeId(id), Revoked::Key(node_key(3))]);
        let banned = banned_ids(&l, &home());
        let key_id = Certificate::for_public_key(&node_key(3), &home(), SuiteSet::ALL)
            .unwrap()
            .node_id();
        assert_eq!(
            banned,
            BTreeSet::from([NodeId::from_bytes(id), key_id]),
            "{banned:?}"
        );
    }

    #[test]
    fn pushed_lists_decode_raw_or_armoured() {
        let l = list(2, vec![]);
        assert_eq!(decode_pushed(l.as_bytes()).unwrap(), l);
        let text = armor::encode(armor::Kind::RevocationList, l.as_bytes(), &["# v2".into()]);
        assert_eq!(decode_pushed(text.as_bytes()).unwrap(), l);
        let cert = body().sign(&ca()).unwrap();
        let text = armor::encode(armor::Kind::Certificate, cert.as_bytes(), &[]);
        let e = decode_pushed(text.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("RINGLAN CERTIFICATE block"), "{e}");
        assert!(matches!(
            decode_pushed(b"# a note\n-----BEGIN nonsense"),
            Err(PushError::Malformed(_))
        ));
        assert!(matches!(
            decode_pushed(&[1, 2, 3]),
            Err(PushError::Malformed(_))
        ));
    }
}
