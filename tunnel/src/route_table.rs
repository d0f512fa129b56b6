//! The route table of relayed flow routes: the forwarding state that
//! carries one end-to-end RTMFP session over one or more relay nodes
//! (`docs/relay.md` has the whole design: setup messages, policy, status).
//!
//! A route is a chain of *hops* between adjacent nodes that already share
//! an OPEN, authenticated session. The route is set up by a request that
//! walks the chain over those sessions (the agent's control flow carries it;
//! see `ringlan_overlay::wire::RouteSetup`), each hop's upstream node
//! choosing a fresh random [`HopKey`] and telling the downstream node in that
//! encrypted request, each node telling its upstream neighbour the *route id*
//! under which it wants to receive. Nothing is issued by a third party: the
//! hop sessions authenticate the setup, and the hop keys authenticate every
//! forwarded datagram.
//!
//! ## Route datagram (one hop)
//!
//! ```text
//!  0      4               12                        n-16      n
//!  | sid  | hop sequence  | end-to-end RTMFP packet  | hop tag |
//! ```
//!
//! - `sid`: the receiving node's route id, scrambled with the next two words
//!   exactly like an RTMFP session id (RFC 7016 2.2.2), so a route datagram
//!   demultiplexes like any session packet. Route ids come from the same
//!   space as the receiver's session ids and never collide with them.
//! - hop sequence: 64-bit big-endian counter per hop and direction, the
//!   nonce of the tag and the replay-window index.
//! - the end-to-end packet is the session's datagram, unchanged: still
//!   encrypted and authenticated with the end-to-end session keys, so a
//!   relay can neither read nor forge it.
//! - hop tag: the AES-256-GCM tag of the whole datagram before the tag
//!   (header and end-to-end packet) sealed as plaintext (`hop_tag`), key
//!   derived from the hop key for this direction, nonce `0u32 || sequence`. It must cover every byte: a relay's replay window
//!   takes each sequence number once, so if a modified copy could pass the
//!   tag, an attacker who can only watch and inject would send one ahead of
//!   each genuine datagram and the relay would drop the genuine one as a
//!   replay (issue 12 item 5). Cost: `examples/relay_bench.rs`.
//!
//! A relay checks the tag and the replay window of the incoming hop, then
//! rewrites the 12-byte header and the tag for the outgoing hop in place
//! (the driver then sends it from its receive buffer, `docs/relay.md`):
//! forwarding costs two hop tags over the datagram, never a decryption. A datagram
//! whose inner packet is empty is a route keepalive: it refreshes every
//! entry on the way and is consumed by the far end.
//!
//! The ends see a route as a path, [`crate::Path::Route`]: the session logic
//! (address mobility, RFC 7016 3.5.4.2, cookies, PMTU) runs unchanged over
//! routes, and moving a session between routes or between a route and a
//! direct address is a path change (see [`crate::path`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aegis::aegis128l::Aegis128L;
use hkdf::Hkdf;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::ReplayWindow;
use crate::ids::{IdMap, RouteId};
use crate::wire::scramble_session_id;
use crate::NodeId;

/// Bytes before the end-to-end packet in a route datagram.
pub const ROUTE_HEADER_LEN: usize = 12;
/// Bytes of the hop tag after the end-to-end packet.
pub const ROUTE_TAG_LEN: usize = 16;
/// Bytes a route adds to every end-to-end datagram (whatever its hop count:
/// relays rewrite in place).
pub const ROUTE_OVERHEAD: usize = ROUTE_HEADER_LEN + ROUTE_TAG_LEN;

/// How long an entry may go without receiving anything before it is
/// removed (ends send [`ROUTE_KEEPALIVE`]s well within this).
pub const ROUTE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An end sends a keepalive along a route it has not sent on for this long.
pub const ROUTE_KEEPALIVE: Duration = Duration::from_secs(15);
/// A route still waiting for its downstream answer is removed after this.
pub const ROUTE_PENDING_TIMEOUT: Duration = Duration::from_secs(10);

/// The secret of one hop, chosen at random by the hop's upstream node and
/// sent to the downstream node inside the (encrypted) route setup request.
/// It also names the MAC of the hop's tags ([`HopMac`]), which the
/// upstream node chose for both directions.
#[derive(Clone, PartialEq, Eq)]
pub struct HopKey {
    pub bytes: [u8; 32],
    pub mac: HopMac,
}

impl HopKey {
    pub fn new(bytes: [u8; 32], mac: HopMac) -> HopKey {
        HopKey { bytes, mac }
    }
}

impl Drop for HopKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// The MAC of one hop's tags. AES-256-GCM is what every node runs; a hop
/// uses AEGIS-128L when its downstream node said in its `Hello` that it
/// takes it (a node with AES instructions, `crypto::aegis_in_hardware`)
/// and the upstream node runs it too: the upstream node then says so in
/// the route setup request (`docs/relay.md`, "Route datagram").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HopMac {
    /// The AES-256-GCM tag of the datagram sealed as plaintext.
    #[default]
    AesGcm,
    /// The AEGIS-128L tag of the datagram as associated data, empty
    /// message: about a third of the AES-256-GCM tag's cost here.
    Aegis128L,
}

impl std::fmt::Display for HopMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            HopMac::AesGcm => "aes-256-gcm",
            HopMac::Aegis128L => "aegis-128l",
        })
    }
}

impl std::fmt::Debug for HopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HopKey(..)")
    }
}

/// What one side of a hop offers the other: the route id it receives
/// under, and (from the upstream side) the hop key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOffer {
    pub id: RouteId,
    pub key: HopKey,
}

/// Which way a hop key protects: from the hop's upstream node to its
/// downstream node, or back.
#[derive(Clone, Copy)]
enum Dir {
    Down,
    Up,
}

/// A hop direction's tag key.
#[allow(clippy::large_enum_variant)] // used per datagram: not boxed
enum TagKey {
    AesGcm(LessSafeKey),
    /// Zeroized on drop.
    Aegis128L(Zeroizing<[u8; 16]>),
}

impl TagKey {
    fn mac(&self) -> HopMac {
        match self {
            TagKey::AesGcm(_) => HopMac::AesGcm,
            TagKey::Aegis128L(_) => HopMac::Aegis128L,
        }
    }
}

fn derive(key: &HopKey, dir: Dir) -> TagKey {
    let hk = Hkdf::<Sha256>::new(Some(b"ringlan/v1 hop"), &key.bytes);
    match key.mac {
        HopMac::AesGcm => {
            let mut okm = [0u8; 32];
            let label: &[u8] = match dir {
                Dir::Down => b"ringlan/v1 hop down",
                Dir::Up => b"ringlan/v1 hop up",
            };
            // 32 bytes are always a valid HKDF-SHA256 output length.
            let _ = hk.expand(label, &mut okm);
            let unbound = UnboundKey::new(&AES_256_GCM, &okm);
            okm.zeroize();
            match unbound {
                Ok(k) => TagKey::AesGcm(LessSafeKey::new(k)),
                // AES_256_GCM takes exactly 32-byte keys.
                Err(_) => unreachable!("AES-256-GCM key length"),
            }
        }
        HopMac::Aegis128L => {
            let mut okm = Zeroizing::new([0u8; 16]);
            let label: &[u8] = match dir {
                Dir::Down => b"ringlan/v1 hop aegis down",
                Dir::Up => b"ringlan/v1 hop aegis up",
            };
            // 16 bytes are always a valid HKDF-SHA256 output length.
            let _ = hk.expand(label, &mut okm[..]);
            TagKey::Aegis128L(okm)
        }
    }
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// The sending side of a hop in one direction.
struct HopOut {
    /// Our session with the next node (its address is the hop's address).
    session: u32,
    /// The next node's route id (0 while the route is pending).
    id: u32,
    key: TagKey,
    seq: u64,
}

impl HopOut {
    /// Write header and tag around the `len`-byte end-to-end packet at
    /// `buf[ROUTE_HEADER_LEN..]`. Returns the datagram length.
    fn seal(&mut self, buf: &mut [u8], len: usize, scratch: &mut Vec<u8>) -> Option<usize> {
        let total = ROUTE_OVERHEAD.checked_add(len)?;
        if buf.len() < total || self.seq == u64::MAX {
            return None;
        }
        let seq = self.seq;
        self.seq += 1;
        buf[4..12].copy_from_slice(&seq.to_be_bytes());
        let sid = scramble_session_id(self.id, &buf[4..]);
        buf[..4].copy_from_slice(&sid.to_be_bytes());
        let (body, tag_out) = buf[..total].split_at_mut(ROUTE_HEADER_LEN + len);
        tag_out.copy_from_slice(&hop_tag(&self.key, seq, body, scratch)?);
        Some(total)
    }
}

/// The hop tag of `body` (header and end-to-end packet).
///
/// AES-256-GCM: the tag of `body` sealed as plaintext with an empty AAD,
/// nonce `0u32 || seq`; the ciphertext (in `scratch`, a copy) is thrown
/// away. Verifying a tag is recomputing it, so a valid tag for a body not
/// tagged before under that key and nonce would be a GCM forgery (the body
/// maps one to one to a ciphertext). Sealing a copy is GCM's fast path
/// (AES and GHASH interleaved); hashing the body as AAD costs more than
/// twice as much (`examples/relay_bench.rs`). `scratch` keeps its capacity:
/// no allocation per datagram.
///
/// AEGIS-128L: the tag of an empty message with `body` as associated data,
/// nonce `0u64 || seq` (an AEAD with nothing to encrypt is a MAC of its
/// associated data under a nonce used once); no copy.
fn hop_tag(
    key: &TagKey,
    seq: u64,
    body: &[u8],
    scratch: &mut Vec<u8>,
) -> Option<[u8; ROUTE_TAG_LEN]> {
    match key {
        TagKey::AesGcm(key) => {
            scratch.clear();
            scratch.extend_from_slice(body);
            let tag = key
                .seal_in_place_separate_tag(nonce(seq), Aad::empty(), &mut scratch[..])
                .ok()?;
            let mut out = [0u8; ROUTE_TAG_LEN];
            out.copy_from_slice(tag.as_ref());
            Some(out)
        }
        TagKey::Aegis128L(key) => {
            let mut n = [0u8; 16];
            n[8..].copy_from_slice(&seq.to_be_bytes());
            Some(Aegis128L::<ROUTE_TAG_LEN>::new(key, &n).encrypt_in_place(&mut [], body))
        }
    }
}

/// The receiving side of a hop in one direction.
struct HopIn {
    key: TagKey,
    window: ReplayWindow,
}

impl HopIn {
    /// Authenticate a whole route datagram; on success the replay window
    /// records it.
    fn open(&mut self, datagram: &[u8], scratch: &mut Vec<u8>) -> Result<(), RouteDrop> {
        if datagram.len() < ROUTE_OVERHEAD {
            return Err(RouteDrop::Malformed);
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&datagram[4..12]);
        let seq = u64::from_be_bytes(seq);
        self.window.check(seq).map_err(|_| RouteDrop::Replayed)?;
        let (body, tag) = datagram.split_at(datagram.len() - ROUTE_TAG_LEN);
        let expected = hop_tag(&self.key, seq, body, scratch).ok_or(RouteDrop::BadTag)?;
        // Constant time: no early exit on the first differing byte.
        let diff = expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(RouteDrop::BadTag);
        }
        self.window.update(seq);
        Ok(())
    }
}

/// Why a route datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteDrop {
    Malformed,
    /// The hop tag did not verify (not from the hop's other node).
    BadTag,
    Replayed,
    /// The route is still being set up.
    Pending,
    /// Over the route's bandwidth limit.
    RateLimited,
    /// The next hop's session is gone.
    NoHop,
}

/// Token bucket in bytes (per-route and total relay bandwidth limits).
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(now: Instant, mbps: f64) -> Option<Bucket> {
        if mbps <= 0.0 {
            return None;
        }
        let rate = mbps * 1e6 / 8.0;
        // A quarter second of traffic, at least a few full datagrams.
        let burst = (rate / 4.0).max(64.0 * 1500.0);
        Some(Bucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        })
    }

    fn take(&mut self, now: Instant, bytes: usize) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// Relay policy (`relay:` in the agent's config; `docs/relay.md` "Limits").
///
/// The route table enforces `enabled`, `max_routes` and the bandwidth
/// caps; the per-origin and per-target quotas are the node's to enforce
/// (only it knows who set a route up and where it goes), refusing with
/// `RouteRefusal::Limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayLimits {
    /// Carry routes for other members at all.
    pub enabled: bool,
    /// Routes carried at once (each is two entries, one per direction).
    pub max_routes: usize,
    /// Routes carried at once for one origin, and (counted separately)
    /// for one upstream neighbour: one member cannot hold every slot.
    pub max_routes_per_origin: usize,
    /// Routes carried at once towards one target.
    pub max_routes_per_target: usize,
    /// Bandwidth per route and direction, Mbit/s (0: unlimited).
    pub max_mbps: f64,
    /// Bandwidth over all carried routes, Mbit/s (0: unlimited).
    pub max_total_mbps: f64,
}

/// Default [`RelayLimits::max_routes`].
pub const DEFAULT_RELAY_ROUTES: usize = 64;
/// Default [`RelayLimits::max_routes_per_origin`]: a quarter of the
/// slots (eight relayed peers with a standby route each).
pub const DEFAULT_RELAY_ROUTES_PER_ORIGIN: usize = 16;
/// Default [`RelayLimits::max_routes_per_target`].
pub const DEFAULT_RELAY_ROUTES_PER_TARGET: usize = 16;
/// Default [`RelayLimits::max_mbps`]: well above a home uplink, far below
/// what one route could otherwise take of a relay's link.
pub const DEFAULT_RELAY_MBPS: f64 = 200.0;
/// Default [`RelayLimits::max_total_mbps`].
pub const DEFAULT_RELAY_TOTAL_MBPS: f64 = 1000.0;

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            enabled: false,
            max_routes: DEFAULT_RELAY_ROUTES,
            max_routes_per_origin: DEFAULT_RELAY_ROUTES_PER_ORIGIN,
            max_routes_per_target: DEFAULT_RELAY_ROUTES_PER_TARGET,
            max_mbps: DEFAULT_RELAY_MBPS,
            max_total_mbps: DEFAULT_RELAY_TOTAL_MBPS,
        }
    }
}

/// Why a route could not be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("this node does not relay")]
    RelayDisabled,
    #[error("relay route limit reached")]
    TooManyRoutes,
    #[error("no open session for that hop")]
    NoSession,
    #[error("unknown or already completed route")]
    UnknownRoute,
}

/// Traffic counters of one route entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteCounters {
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRole {
    /// One end of a route: packets of a session on path
    /// [`crate::Path::Route`]`(id)` leave through `hop`, packets arriving
    /// are the session's.
    End,
    /// A relay's entry for one direction; `partner` is the entry for the
    /// other direction.
    Transit { partner: RouteId },
}

/// A route entry as shown to status.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// Our route id (receive side).
    pub id: RouteId,
    pub role: RouteRole,
    /// The node we receive from on this entry.
    pub from: Option<NodeId>,
    /// The node we send to.
    pub to: Option<NodeId>,
    pub pending: bool,
    /// Received on this entry.
    pub rx: RouteCounters,
    /// Sent by this entry (forwarded or, at an end, wrapped).
    pub tx: RouteCounters,
    pub age: Duration,
    /// The tags of the hop we receive from, and of the hop we send to.
    pub mac_in: HopMac,
    pub mac_out: HopMac,
}

struct Entry {
    role: RouteRole,
    hop_in: HopIn,
    /// Our session with the node we receive from (its teardown removes us).
    in_session: u32,
    out: HopOut,
    rx: RouteCounters,
    tx: RouteCounters,
    bucket: Option<Bucket>,
    created: Instant,
    last_rx: Instant,
    last_tx: Instant,
}

impl Entry {
    /// An entry receiving over session `in_session` with `open`, sending
    /// over `out_session` to route id `out_id` (0: pending) with `seal`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        now: Instant,
        role: RouteRole,
        in_session: u32,
        open: TagKey,
        out_session: u32,
        out_id: u32,
        seal: TagKey,
        bucket: Option<Bucket>,
    ) -> Entry {
        Entry {
            role,
            hop_in: HopIn {
                key: open,
                window: ReplayWindow::default(),
            },
            in_session,
            out: HopOut {
                session: out_session,
                id: out_id,
                key: seal,
                seq: 0,
            },
            rx: RouteCounters::default(),
            tx: RouteCounters::default(),
            bucket,
            created: now,
            last_rx: now,
            last_tx: now,
        }
    }

    fn pending(&self) -> bool {
        self.out.id == 0
    }
}

/// Result of [`Routes::input`].
#[derive(Debug, PartialEq, Eq)]
pub enum RouteInput {
    /// Not a route id: not ours to handle.
    NotRoute,
    /// The end-to-end packet at `data[range]` arrived on route `id` (path
    /// [`crate::Path::Route`]`(id)`).
    Deliver {
        id: u32,
        range: std::ops::Range<usize>,
    },
    /// A keepalive: consumed.
    Keepalive,
    /// `data` was rewritten for the next hop: send it over `session`.
    Forward {
        session: u32,
    },
    Dropped(RouteDrop),
}

/// The route table of one endpoint (sans-IO).
pub struct Routes {
    /// By our route id (the per-packet lookup: the session table's hasher).
    entries: IdMap<Entry>,
    limits: RelayLimits,
    /// The total bandwidth bucket, made on first use (`Some(None)`: no
    /// total limit).
    total: Option<Option<Bucket>>,
    transit_routes: usize,
    /// Bytes of every datagram forwarded for others since the table was
    /// made (routes that closed included).
    forwarded_bytes: u64,
    drops: HashMap<RouteDrop, u64>,
    /// Ends whose keepalive is due, collected by `handle_timeout`.
    keepalives_due: Vec<u32>,
    closed: Vec<u32>,
    /// Where hop tags are computed (`hop_tag`).
    scratch: Vec<u8>,
}

impl Routes {
    pub fn new(limits: RelayLimits) -> Routes {
        Routes {
            entries: IdMap::default(),
            limits,
            total: None,
            transit_routes: 0,
            forwarded_bytes: 0,
            drops: HashMap::new(),
            keepalives_due: Vec::new(),
            closed: Vec::new(),
            scratch: Vec::with_capacity(2048),
        }
    }

    pub fn limits(&self) -> &RelayLimits {
        &self.limits
    }

    pub fn set_limits(&mut self, limits: RelayLimits) {
        self.limits = limits;
        self.total = None;
    }

    pub fn contains(&self, id: u32) -> bool {
        self.entries.contains_key(&id)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn drops(&self) -> &HashMap<RouteDrop, u64> {
        &self.drops
    }

    /// Routes this node carries for others.
    pub fn transit_count(&self) -> usize {
        self.transit_routes
    }

    /// Bytes forwarded for others so far, over every route this table
    /// has carried (the per-route counters go with their routes).
    pub fn forwarded_bytes(&self) -> u64 {
        self.forwarded_bytes
    }

    fn drop_reason(&mut self, r: RouteDrop) -> RouteInput {
        *self.drops.entry(r).or_insert(0) += 1;
        RouteInput::Dropped(r)
    }

    /// The initiating end: a pending end entry whose first hop goes over
    /// session `hop`. `id` must be unused (the endpoint allocates it).
    /// Returns the key to send to the first relay with `id`.
    pub fn begin_end(&mut self, now: Instant, id: u32, hop: u32, key: HopKey) {
        let open = derive(&key, Dir::Up);
        let seal = derive(&key, Dir::Down);
        let e = Entry::new(now, RouteRole::End, hop, open, hop, 0, seal, None);
        self.entries.insert(id, e);
    }

    /// The answering end: the upstream node (over session `hop`) offered
    /// `offer`; we receive under `id`. Complete at once.
    pub fn accept_end(&mut self, now: Instant, id: u32, hop: u32, offer: &RouteOffer) {
        let open = derive(&offer.key, Dir::Down);
        let seal = derive(&offer.key, Dir::Up);
        let e = Entry::new(now, RouteRole::End, hop, open, hop, offer.id.0, seal, None);
        self.entries.insert(id, e);
    }

    /// A relay: the upstream node (session `up`) offered `offer`; we go on
    /// over session `down` with a fresh `down_key`. `up_in` is the id we
    /// answer upstream with (pending until [`Routes::finish`] names the
    /// downstream id), `down_in` the id we offer downstream.
    #[allow(clippy::too_many_arguments)]
    pub fn begin_transit(
        &mut self,
        now: Instant,
        up_in: u32,
        down_in: u32,
        up: u32,
        offer: &RouteOffer,
        down: u32,
        down_key: &HopKey,
    ) -> Result<(), RouteError> {
        if !self.limits.enabled {
            return Err(RouteError::RelayDisabled);
        }
        if self.transit_routes >= self.limits.max_routes {
            return Err(RouteError::TooManyRoutes);
        }
        let bucket = Bucket::new(now, self.limits.max_mbps);
        // Upstream -> downstream: receive with the upstream hop's key,
        // send with ours (the downstream id comes with `finish`).
        let toward_down = Entry::new(
            now,
            RouteRole::Transit {
                partner: RouteId(down_in),
            },
            up,
            derive(&offer.key, Dir::Down),
            down,
            0,
            derive(down_key, Dir::Down),
            bucket.clone(),
        );
        let toward_up = Entry::new(
            now,
            RouteRole::Transit {
                partner: RouteId(up_in),
            },
            down,
            derive(down_key, Dir::Up),
            up,
            offer.id.0,
            derive(&offer.key, Dir::Up),
            bucket,
        );
        self.entries.insert(up_in, toward_down);
        self.entries.insert(down_in, toward_up);
        self.transit_routes += 1;
        Ok(())
    }

    /// The downstream node answered: it receives under `next_id`. Completes
    /// a pending end or transit entry.
    pub fn finish(&mut self, id: u32, next_id: u32) -> Result<(), RouteError> {
        match self.entries.get_mut(&id) {
            Some(e) if e.pending() && next_id != 0 => {
                e.out.id = next_id;
                Ok(())
            }
            _ => Err(RouteError::UnknownRoute),
        }
    }

    /// When entry `id` last received a datagram (data or keepalive).
    pub fn last_rx(&self, id: u32) -> Option<Instant> {
        self.entries.get(&id).map(|e| e.last_rx)
    }

    /// Remove entry `id` (and a transit's partner).
    pub fn remove(&mut self, id: u32) {
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        self.closed.push(id);
        if let RouteRole::Transit { partner } = e.role {
            if self.entries.remove(&partner.0).is_some() {
                self.closed.push(partner.0);
            }
            self.transit_routes = self.transit_routes.saturating_sub(1);
        }
    }

    /// A session closed: every entry using it goes.
    pub fn session_closed(&mut self, session: u32) {
        let gone: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, e)| e.in_session == session || e.out.session == session)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.remove(id);
        }
    }

    /// Entries removed since the last call (for `Event::RouteClosed`).
    pub fn take_closed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.closed)
    }

    /// Process a received datagram whose unscrambled id is `id`.
    /// `session_of` resolves a hop session's current peer address check:
    /// forwarding needs the next hop's session to exist.
    pub fn input(
        &mut self,
        now: Instant,
        id: u32,
        data: &mut [u8],
        session_exists: impl Fn(u32) -> bool,
    ) -> RouteInput {
        let Some(e) = self.entries.get_mut(&id) else {
            return RouteInput::NotRoute;
        };
        if let Err(r) = e.hop_in.open(data, &mut self.scratch) {
            e.rx.dropped += 1;
            return self.drop_reason(r);
        }
        e.last_rx = now;
        e.rx.packets += 1;
        e.rx.bytes += data.len() as u64;
        let inner = ROUTE_HEADER_LEN..data.len() - ROUTE_TAG_LEN;
        match e.role {
            RouteRole::End => {
                if inner.is_empty() {
                    RouteInput::Keepalive
                } else {
                    RouteInput::Deliver { id, range: inner }
                }
            }
            RouteRole::Transit { .. } => {
                if e.pending() {
                    e.tx.dropped += 1;
                    return self.drop_reason(RouteDrop::Pending);
                }
                if !session_exists(e.out.session) {
                    e.tx.dropped += 1;
                    return self.drop_reason(RouteDrop::NoHop);
                }
                let len = data.len();
                if self.total.is_none() {
                    self.total = Some(Bucket::new(now, self.limits.max_total_mbps));
                }
                // `Some(None)`: no total limit.
                let total = match self.total.as_mut() {
                    Some(Some(b)) => b.take(now, len),
                    _ => true,
                };
                let per_route = e.bucket.as_mut().is_none_or(|b| b.take(now, len));
                if !(total && per_route) {
                    e.tx.dropped += 1;
                    return self.drop_reason(RouteDrop::RateLimited);
                }
                let n = inner.len();
                match e.out.seal(data, n, &mut self.scratch) {
                    Some(_) => {
                        e.last_tx = now;
                        e.tx.packets += 1;
                        e.tx.bytes += len as u64;
                        self.forwarded_bytes += len as u64;
                        RouteInput::Forward {
                            session: e.out.session,
                        }
                    }
                    None => {
                        e.tx.dropped += 1;
                        self.drop_reason(RouteDrop::Malformed)
                    }
                }
            }
        }
    }

    /// Wrap the `len`-byte end-to-end datagram at
    /// `buf[ROUTE_HEADER_LEN..ROUTE_HEADER_LEN + len]` (the endpoint builds
    /// route ends' packets there) for route end `id`: writes header and tag
    /// around it, moving nothing. Returns the hop session to send over and
    /// the datagram length.
    pub fn wrap(
        &mut self,
        now: Instant,
        id: u32,
        buf: &mut [u8],
        len: usize,
    ) -> Option<(u32, usize)> {
        let e = self.entries.get_mut(&id)?;
        if e.role != RouteRole::End || e.pending() || buf.len() < len + ROUTE_OVERHEAD {
            return None;
        }
        let n = e.out.seal(buf, len, &mut self.scratch)?;
        e.last_tx = now;
        e.tx.packets += 1;
        e.tx.bytes += n as u64;
        Some((e.out.session, n))
    }

    /// Route ends due for a keepalive (sent on nothing for
    /// [`ROUTE_KEEPALIVE`]) and removal of idle or stale entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (id, e) in &self.entries {
            let stale = if e.pending() {
                now.saturating_duration_since(e.created) >= ROUTE_PENDING_TIMEOUT
            } else {
                now.saturating_duration_since(e.last_rx) >= ROUTE_IDLE_TIMEOUT
            };
            if stale {
                gone.push(*id);
            } else if e.role == RouteRole::End
                && !e.pending()
                && now.saturating_duration_since(e.last_tx) >= ROUTE_KEEPALIVE
            {
                self.keepalives_due.push(*id);
            }
        }
        for id in gone {
            self.remove(id);
        }
    }

    /// The next time [`Routes::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .values()
            .map(|e| {
                if e.pending() {
                    e.created + ROUTE_PENDING_TIMEOUT
                } else if e.role == RouteRole::End {
                    (e.last_tx + ROUTE_KEEPALIVE).min(e.last_rx + ROUTE_IDLE_TIMEOUT)
                } else {
                    e.last_rx + ROUTE_IDLE_TIMEOUT
                }
            })
            .min()
    }

    /// Route ends whose keepalive is due (drained).
    pub fn take_keepalives(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.keepalives_due)
    }

    /// Status view of every entry; `peer_of` names a session's peer.
    pub fn infos(&self, now: Instant, peer_of: impl Fn(u32) -> Option<NodeId>) -> Vec<RouteInfo> {
        let mut v: Vec<RouteInfo> = self
            .entries
            .iter()
            .map(|(id, e)| RouteInfo {
                id: RouteId(*id),
                role: e.role,
                from: peer_of(e.in_session),
                to: peer_of(e.out.session),
                pending: e.pending(),
                rx: e.rx,
                tx: e.tx,
                age: now.saturating_duration_since(e.created),
                mac_in: e.hop_in.key.mac(),
                mac_out: e.out.key.mac(),
            })
            .collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// The hop session an end entry sends over.
    pub fn end_hop(&self, id: u32) -> Option<u32> {
        self.entries
            .get(&id)
            .filter(|e| e.role == RouteRole::End)
            .map(|e| e.out.session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> HopKey {
        HopKey::new([b; 32], HopMac::AesGcm)
    }

    /// A - R - B over one relay: ids and keys exchanged as the setup would.
    struct Chain {
        a: Routes,
        r: Routes,
        b: Routes,
        a_id: u32,
        r_up: u32,
        r_down: u32,
        b_id: u32,
    }

    // Session numbers: at A the hop to R is 7; at R the session with A is 8
    // and with B 9; at B the session with R is 10.
    /// See `the_aegis_hop_tag_is_the_tag_of_the_datagram_as_associated_data`.
    const AEGIS_HOP_TAG_VECTOR: &str = "0a4b07ef501bb63f2afdc200bd21b5b6";

    /// Every pair of hop tags a route A - R - B can have.
    const MAC_PAIRS: [[HopMac; 2]; 4] = [
        [HopMac::AesGcm, HopMac::AesGcm],
        [HopMac::Aegis128L, HopMac::Aegis128L],
        [HopMac::Aegis128L, HopMac::AesGcm],
        [HopMac::AesGcm, HopMac::Aegis128L],
    ];

    fn chain(now: Instant) -> Chain {
        chain_macs(now, [HopMac::AesGcm; 2])
    }

    /// [`chain`] with the tags of hop A - R and R - B by `macs`.
    fn chain_macs(now: Instant, macs: [HopMac; 2]) -> Chain {
        let key = |b: u8| HopKey::new([b; 32], macs[usize::from(b) - 1]);
        let limits = RelayLimits {
            enabled: true,
            ..RelayLimits::default()
        };
        let mut a = Routes::new(RelayLimits::default());
        let mut r = Routes::new(limits);
        let mut b = Routes::new(RelayLimits::default());
        let (a_id, r_up, r_down, b_id) = (100, 200, 201, 300);
        a.begin_end(now, a_id, 7, key(1));
        let offer_a = RouteOffer {
            id: RouteId(a_id),
            key: key(1),
        };
        r.begin_transit(now, r_up, r_down, 8, &offer_a, 9, &key(2))
            .unwrap();
        let offer_r = RouteOffer {
            id: RouteId(r_down),
            key: key(2),
        };
        b.accept_end(now, b_id, 10, &offer_r);
        r.finish(r_up, b_id).unwrap();
        a.finish(a_id, r_up).unwrap();
        Chain {
            a,
            r,
            b,
            a_id,
            r_up,
            r_down,
            b_id,
        }
    }

    fn unscrambled(d: &[u8]) -> u32 {
        let ssid = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        scramble_session_id(ssid, &d[4..])
    }

    #[test]
    fn packets_cross_one_relay_both_ways_unchanged() {
        let now = Instant::now();
        for macs in MAC_PAIRS {
            let mut c = chain_macs(now, macs);
            let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
            let mut buf = vec![0u8; 2048];
            buf[ROUTE_HEADER_LEN..ROUTE_HEADER_LEN + payload.len()].copy_from_slice(&payload);
            let (hop, n) = c.a.wrap(now, c.a_id, &mut buf, payload.len()).unwrap();
            assert_eq!(hop, 7);
            assert_eq!(n, payload.len() + ROUTE_OVERHEAD);
            let d = &mut buf[..n];
            assert_eq!(unscrambled(d), c.r_up);
            assert_eq!(
                c.r.input(now, c.r_up, d, |_| true),
                RouteInput::Forward { session: 9 }
            );
            assert_eq!(unscrambled(d), c.b_id);
            match c.b.input(now, c.b_id, d, |_| true) {
                RouteInput::Deliver { id, range } => {
                    assert_eq!(id, c.b_id);
                    assert_eq!(&d[range], &payload[..]);
                }
                other => panic!("{other:?}"),
            }
            // And back.
            let mut buf = vec![0u8; 2048];
            buf[ROUTE_HEADER_LEN..ROUTE_HEADER_LEN + 5].copy_from_slice(b"hello");
            let (hop, n) = c.b.wrap(now, c.b_id, &mut buf, 5).unwrap();
            assert_eq!(hop, 10);
            let d = &mut buf[..n];
            assert_eq!(unscrambled(d), c.r_down);
            assert_eq!(
                c.r.input(now, c.r_down, d, |_| true),
                RouteInput::Forward { session: 8 }
            );
            match c.a.input(now, c.a_id, d, |_| true) {
                RouteInput::Deliver { range, .. } => assert_eq!(&d[range], b"hello"),
                other => panic!("{other:?}"),
            }
            // The relay counts what it forwarded, and keeps the count when the
            // route goes; the ends forwarded nothing.
            let both = (payload.len() + 5 + 2 * ROUTE_OVERHEAD) as u64;
            assert_eq!(c.r.forwarded_bytes(), both);
            c.r.remove(c.r_up);
            assert!(!c.r.contains(c.r_up));
            assert_eq!(c.r.forwarded_bytes(), both);
            assert_eq!((c.a.forwarded_bytes(), c.b.forwarded_bytes()), (0, 0));
        }
    }

    #[test]
    fn tampered_replayed_and_misrouted_datagrams_are_dropped() {
        let now = Instant::now();
        for macs in MAC_PAIRS {
            let mut c = chain_macs(now, macs);
            let mut buf = vec![0u8; 2048];
            buf[ROUTE_HEADER_LEN..ROUTE_HEADER_LEN + 10].copy_from_slice(b"0123456789");
            let (_, n) = c.a.wrap(now, c.a_id, &mut buf, 10).unwrap();
            let original = buf[..n].to_vec();
            // Any flipped bit fails the hop tag.
            for i in 4..n {
                let mut d = original.clone();
                d[i] ^= 0x10;
                assert_eq!(
                    c.r.input(now, c.r_up, &mut d, |_| true),
                    RouteInput::Dropped(RouteDrop::BadTag),
                    "byte {i}"
                );
            }
            // A longer packet: every byte is covered, so a modified copy sent
            // ahead of the genuine datagram is refused and does not burn its
            // sequence number: the genuine one still goes through, once.
            let mut big = vec![0u8; 2048];
            let (_, m) = c.a.wrap(now, c.a_id, &mut big, 300).unwrap();
            let genuine = big[..m].to_vec();
            let mut big_bad = 0u64;
            for i in 4..m {
                big_bad += 1;
                let mut d = genuine.clone();
                d[i] ^= 0x01;
                assert_eq!(
                    c.r.input(now, c.r_up, &mut d, |_| true),
                    RouteInput::Dropped(RouteDrop::BadTag),
                    "byte {i}"
                );
            }
            let mut d = genuine.clone();
            assert!(matches!(
                c.r.input(now, c.r_up, &mut d, |_| true),
                RouteInput::Forward { .. }
            ));
            let mut d = genuine.clone();
            assert_eq!(
                c.r.input(now, c.r_up, &mut d, |_| true),
                RouteInput::Dropped(RouteDrop::Replayed)
            );
            // Sent to the wrong entry (other direction's key): refused.
            let mut d = original.clone();
            assert_eq!(
                c.r.input(now, c.r_down, &mut d, |_| true),
                RouteInput::Dropped(RouteDrop::BadTag)
            );
            // Truncated.
            let mut d = original[..20].to_vec();
            assert_eq!(
                c.r.input(now, c.r_up, &mut d, |_| true),
                RouteInput::Dropped(RouteDrop::Malformed)
            );
            // Genuine once, then a replay.
            let mut d = original.clone();
            assert!(matches!(
                c.r.input(now, c.r_up, &mut d, |_| true),
                RouteInput::Forward { .. }
            ));
            let mut d = original.clone();
            assert_eq!(
                c.r.input(now, c.r_up, &mut d, |_| true),
                RouteInput::Dropped(RouteDrop::Replayed)
            );
            assert_eq!(
                c.r.drops()[&RouteDrop::BadTag],
                (n - 4) as u64 + 1 + big_bad
            );
            // Only the two genuine datagrams count as forwarded.
            assert_eq!(c.r.forwarded_bytes(), (n + m) as u64);
            // Unknown ids are not routes at all.
            let mut d = original.clone();
            assert_eq!(
                c.r.input(now, 12345, &mut d, |_| true),
                RouteInput::NotRoute
            );
        }
    }

    /// A hop whose two ends disagree on the tags passes nothing.
    #[test]
    fn a_hop_with_the_other_kind_of_tags_passes_nothing() {
        let now = Instant::now();
        let mut a = Routes::new(RelayLimits::default());
        let mut b = Routes::new(RelayLimits::default());
        a.begin_end(now, 100, 7, HopKey::new([1; 32], HopMac::Aegis128L));
        let offer = RouteOffer {
            id: RouteId(100),
            key: HopKey::new([1; 32], HopMac::AesGcm),
        };
        b.accept_end(now, 300, 10, &offer);
        a.finish(100, 300).unwrap();
        let mut buf = vec![0u8; 2048];
        let (_, n) = a.wrap(now, 100, &mut buf, 100).unwrap();
        assert_eq!(
            b.input(now, 300, &mut buf[..n], |_| true),
            RouteInput::Dropped(RouteDrop::BadTag)
        );
    }

    #[test]
    fn the_aegis_hop_tag_is_the_tag_of_the_datagram_as_associated_data() {
        // Checked with the `aegis` crate's pure-Rust AEGIS-128L (separate
        // code from the C library linked here) and Python's HKDF:
        // Aegis128L(HKDF-SHA256(salt "ringlan/v1 hop", 0x01 * 32,
        // "ringlan/v1 hop aegis down", 16), 0u64 || u64(5)).encrypt("",
        // ad = bytes 0..40).tag.
        let key = derive(&HopKey::new([1; 32], HopMac::Aegis128L), Dir::Down);
        let body: Vec<u8> = (0..40).collect();
        let tag = hop_tag(&key, 5, &body, &mut Vec::new()).unwrap();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, AEGIS_HOP_TAG_VECTOR);
        // The two directions' keys differ.
        let up = derive(&HopKey::new([1; 32], HopMac::Aegis128L), Dir::Up);
        assert_ne!(hop_tag(&up, 5, &body, &mut Vec::new()).unwrap(), tag);
    }

    #[test]
    fn the_hop_tag_is_the_gcm_tag_of_the_datagram_sealed_as_plaintext() {
        // Checked with Python `cryptography`: AESGCM(HKDF-SHA256(salt
        // "ringlan/v1 hop", 0x01 * 32, "ringlan/v1 hop down")).encrypt(
        // 0u32 || u64(5), bytes 0..40, None)[-16:].
        let key = derive(&HopKey::new([1; 32], HopMac::AesGcm), Dir::Down);
        let body: Vec<u8> = (0..40).collect();
        let mut scratch = Vec::new();
        let tag = hop_tag(&key, 5, &body, &mut scratch).unwrap();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "45ce76808000a6e73099129df9ba55a2");
        // The body itself is left alone.
        assert_eq!(body, (0..40).collect::<Vec<u8>>());
    }

    #[test]
    fn an_outsider_without_the_hop_key_cannot_inject() {
        let now = Instant::now();
        let mut c = chain(now);
        // An outsider knows the route id (it can watch the wire) and builds
        // a datagram with a key of its own.
        let mut forger = HopOut {
            session: 0,
            id: c.r_up,
            key: derive(&key(9), Dir::Down),
            seq: 1_000,
        };
        let mut buf = vec![0u8; 64];
        let n = forger.seal(&mut buf, 20, &mut Vec::new()).unwrap();
        assert_eq!(
            c.r.input(now, c.r_up, &mut buf[..n], |_| true),
            RouteInput::Dropped(RouteDrop::BadTag)
        );
    }

    #[test]
    fn pending_routes_drop_and_relay_policy_is_enforced() {
        let now = Instant::now();
        let mut off = Routes::new(RelayLimits::default());
        let offer = RouteOffer {
            id: RouteId(1),
            key: key(1),
        };
        assert_eq!(
            off.begin_transit(now, 2, 3, 1, &offer, 2, &key(2)),
            Err(RouteError::RelayDisabled)
        );
        let mut one = Routes::new(RelayLimits {
            enabled: true,
            max_routes: 1,
            ..RelayLimits::default()
        });
        one.begin_transit(now, 2, 3, 1, &offer, 2, &key(2)).unwrap();
        assert_eq!(
            one.begin_transit(now, 4, 5, 1, &offer, 2, &key(2)),
            Err(RouteError::TooManyRoutes)
        );
        assert_eq!(one.transit_count(), 1);
        // Upstream -> downstream is pending until `finish`.
        let mut a = Routes::new(RelayLimits::default());
        a.begin_end(now, 9, 1, key(1));
        a.finish(9, 2).unwrap();
        let mut buf = vec![0u8; 128];
        let (_, n) = a.wrap(now, 9, &mut buf, 10).unwrap();
        assert_eq!(
            one.input(now, 2, &mut buf[..n], |_| true),
            RouteInput::Dropped(RouteDrop::Pending)
        );
        assert_eq!(one.finish(2, 0), Err(RouteError::UnknownRoute));
        one.finish(2, 77).unwrap();
        assert_eq!(one.finish(2, 78), Err(RouteError::UnknownRoute));
        // Removing one direction removes both.
        one.remove(3);
        assert!(!one.contains(2) && !one.contains(3));
        assert_eq!(one.transit_count(), 0);
        let mut closed = one.take_closed();
        closed.sort();
        assert_eq!(closed, vec![2, 3]);
    }

    #[test]
    fn per_route_bandwidth_limit_drops_the_excess() {
        let now = Instant::now();
        let mut c = chain(now);
        c.r.set_limits(RelayLimits {
            enabled: true,
            max_mbps: 8.0, // 1 MB/s: burst 250 kB
            ..RelayLimits::default()
        });
        // Re-create the transit with the new limits.
        c.r.remove(c.r_up);
        let offer_a = RouteOffer {
            id: RouteId(c.a_id),
            key: key(1),
        };
        c.r.begin_transit(now, c.r_up, c.r_down, 8, &offer_a, 9, &key(2))
            .unwrap();
        c.r.finish(c.r_up, c.b_id).unwrap();
        let mut forwarded = 0;
        let mut limited = 0;
        for _ in 0..400 {
            let mut buf = vec![0u8; 2048];
            let (_, n) = c.a.wrap(now, c.a_id, &mut buf, 1200).unwrap();
            match c.r.input(now, c.r_up, &mut buf[..n], |_| true) {
                RouteInput::Forward { .. } => forwarded += 1,
                RouteInput::Dropped(RouteDrop::RateLimited) => limited += 1,
                other => panic!("{other:?}"),
            }
        }
        // 250 kB of burst at 1228 bytes each: about 200 pass at one instant.
        assert!((190..=210).contains(&forwarded), "{forwarded}");
        assert_eq!(forwarded + limited, 400);
        // A second later the bucket refilled.
        let later = now + Duration::from_secs(1);
        let mut buf = vec![0u8; 2048];
        let (_, n) = c.a.wrap(later, c.a_id, &mut buf, 1200).unwrap();
        assert!(matches!(
            c.r.input(later, c.r_up, &mut buf[..n], |_| true),
            RouteInput::Forward { .. }
        ));
    }

    #[test]
    fn default_limits_cap_a_route() {
        // Without any `relay:` bandwidth setting a route still has a cap:
        // DEFAULT_RELAY_MBPS (200 Mbit/s, a quarter second of burst:
        // 6.25 MB) per route and direction.
        let now = Instant::now();
        let mut c = chain(now);
        assert_eq!(c.r.limits().max_mbps, DEFAULT_RELAY_MBPS);
        let mut forwarded = 0usize;
        let mut limited = 0;
        let mut buf = vec![0u8; 2048];
        for _ in 0..6000 {
            let (_, n) = c.a.wrap(now, c.a_id, &mut buf, 1200).unwrap();
            match c.r.input(now, c.r_up, &mut buf[..n], |_| true) {
                RouteInput::Forward { .. } => forwarded += 1,
                RouteInput::Dropped(RouteDrop::RateLimited) => limited += 1,
                other => panic!("{other:?}"),
            }
        }
        let burst = DEFAULT_RELAY_MBPS * 1e6 / 8.0 / 4.0;
        let expect = (burst / 1228.0) as usize;
        assert!(forwarded.abs_diff(expect) <= 1, "{forwarded} vs {expect}");
        assert_eq!(forwarded + limited, 6000);
    }

    #[test]
    fn keepalives_refresh_and_idle_routes_expire() {
        let t0 = Instant::now();
        let mut c = chain(t0);
        let t1 = t0 + ROUTE_KEEPALIVE;
        c.a.handle_timeout(t1);
        assert_eq!(c.a.take_keepalives(), vec![c.a_id]);
        let mut buf = vec![0u8; 64];
        let (_, n) = c.a.wrap(t1, c.a_id, &mut buf, 0).unwrap();
        assert!(matches!(
            c.r.input(t1, c.r_up, &mut buf[..n], |_| true),
            RouteInput::Forward { .. }
        ));
        assert_eq!(
            c.b.input(t1, c.b_id, &mut buf[..n], |_| true),
            RouteInput::Keepalive
        );
        // The relay's A->B entry was refreshed at t1, its B->A entry not:
        // at t0 + idle the stale direction goes, taking its partner along.
        let t2 = t0 + ROUTE_IDLE_TIMEOUT;
        c.r.handle_timeout(t2);
        assert!(!c.r.contains(c.r_up) && !c.r.contains(c.r_down));
        assert!(c.r.poll_timeout().is_none());
        // A pending route that never completes goes after the pending timeout.
        let mut p = Routes::new(RelayLimits::default());
        p.begin_end(t0, 5, 1, key(3));
        p.handle_timeout(t0 + ROUTE_PENDING_TIMEOUT);
        assert!(!p.contains(5));
        assert_eq!(p.take_closed(), vec![5]);
    }

    #[test]
    fn a_closed_hop_session_removes_its_routes() {
        let now = Instant::now();
        let mut c = chain(now);
        c.r.session_closed(9);
        assert!(!c.r.contains(c.r_up) && !c.r.contains(c.r_down));
        c.a.session_closed(7);
        assert!(!c.a.contains(c.a_id));
        assert_eq!(c.b.end_hop(c.b_id), Some(10));
    }

    #[test]
    fn garbage_never_panics() {
        let now = Instant::now();
        let mut c = chain(now);
        let mut rng = crate::Rng::from_seed([7; 32]);
        for len in 0..200 {
            let mut d = vec![0u8; len];
            rng.fill(&mut d);
            for id in [c.a_id, c.r_up, c.r_down, c.b_id, 1] {
                let r = c.r.input(now, id, &mut d.clone(), |_| true);
                assert!(matches!(r, RouteInput::Dropped(_) | RouteInput::NotRoute));
            }
        }
    }
}
