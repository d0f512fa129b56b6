//! The overlay's side of the directory (`docs/directory.md`): the API
//! ([`Overlay::dir_put`], [`Overlay::dir_get`], [`Overlay::dir_scan`],
//! [`Overlay::dir_local`]), routing of `DirPut` / `DirGet` / `DirScan` /
//! `DirScanPage`, acceptance of records (signature, subject, expiry, the
//! record check), and re-replication when the ring near this node changes.
//! What a record is, the store and the responsibility rule live in
//! `crate::directory`.
//!
//! Routing reuses the overlay's greedy routing towards a ring position
//! ([`Overlay::route`]). Greedy routing ends at the node closest to the
//! position on either side; when that node is the predecessor it knows
//! the owner (its ring successor, a link) and sends one more hop.

use super::{Event, Overlay};
use crate::directory::{
    replication, DirError, DirKey, DirRequest, PutOutcome, Record, RecordError, NODE_PREFIX,
};
use crate::ring;
use crate::wire::{
    DirGet, DirGetReply, DirPut, DirScan, DirScanPage, Message, PutKind, MAX_PAGE_RECORDS, MAX_PATH,
};
use ringlan_tunnel::NodeId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use super::membership::nearest_after;

/// Steps of one scan tracked at the asker (a walk of N nodes takes about
/// N / 2 steps; pages for further steps make the scan incomplete).
const MAX_SCAN_STEPS: usize = 8192;

/// The extra acceptance check of records ([`Overlay::set_record_check`]):
/// called with the record (its signature and subject already verified)
/// and the current unix time.
pub type RecordCheckFn = Box<dyn Fn(&Record, u64) -> bool + Send>;

/// Directory counters (monotonic), in [`super::Stats::dir`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirCounters {
    /// Records stored (new, or a newer version).
    pub stored: u64,
    /// Older versions than the one held, ignored.
    pub stale: u64,
    /// Same version with another content, refused.
    pub conflicts: u64,
    /// Records whose key does not hash to the subject or whose signature
    /// does not verify (or malformed).
    pub bad_records: u64,
    /// Records the record check refused.
    pub refused: u64,
    /// Records that arrived expired.
    pub expired: u64,
    /// Records refused by a store bound (per subject, or only own records
    /// left to evict).
    pub full: u64,
    /// Directory messages dropped: over the sending link's budget.
    pub over_budget: u64,
    /// Directory messages that could not go on (no route, hop limit,
    /// broken path, malformed path).
    pub undeliverable: u64,
    pub puts_forwarded: u64,
    pub gets_forwarded: u64,
    /// Gets answered here (found or not).
    pub gets_answered: u64,
    /// Records handed over to a node that became responsible.
    pub handovers: u64,
    /// Held records dropped (expired, or no longer responsible after the
    /// grace).
    pub dropped: u64,
    pub scan_pages: u64,
}

/// A holder of the record check (not `Debug` itself).
#[derive(Default)]
pub(super) struct RecordCheck(Option<RecordCheckFn>);

impl std::fmt::Debug for RecordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "RecordCheck(set)"
        } else {
            "RecordCheck(default)"
        })
    }
}

#[derive(Debug)]
pub(super) struct PendingGet {
    key: String,
    sent: Instant,
}

#[derive(Debug)]
pub(super) struct PendingScan {
    sent: Instant,
    /// Parts expected and received per step.
    steps: HashMap<u16, (u8, BTreeSet<u8>)>,
    last: Option<u16>,
    records: BTreeMap<String, Record>,
    /// Records beyond `max_scan_records` were dropped.
    truncated: bool,
}

/// The directory state of one overlay.
#[derive(Debug)]
pub(super) struct DirState {
    pub(super) store: crate::directory::Store,
    pub(super) gets: BTreeMap<u64, PendingGet>,
    pub(super) scans: BTreeMap<u64, PendingScan>,
    pub(super) check: RecordCheck,
    /// The ring near this node when replication last ran, and which of
    /// those nodes were linked then (they got what they are responsible
    /// for).
    view: Vec<NodeId>,
    reached: Vec<NodeId>,
    /// Unix seconds at the last input (for [`Overlay::dir_local`]).
    pub(super) unix_seen: u64,
}

impl DirState {
    pub(super) fn new(me: NodeId, cfg: &crate::directory::DirConfig, unix: u64) -> DirState {
        DirState {
            store: crate::directory::Store::new(me, cfg.max_records, cfg.max_per_subject),
            gets: BTreeMap::new(),
            scans: BTreeMap::new(),
            check: RecordCheck::default(),
            view: Vec::new(),
            reached: Vec::new(),
            unix_seen: unix,
        }
    }
}

impl Overlay {
    /// Unix seconds at `now`: `Config::unix_time` at creation plus the
    /// time elapsed since.
    pub fn unix_now(&self, now: Instant) -> u64 {
        self.cfg
            .unix_time
            .saturating_add(now.saturating_duration_since(self.created).as_secs())
    }

    /// Install the extra acceptance check of records (e.g. "backed by a
    /// valid certificate" with a network CA). Without one, every correctly
    /// self-signed, unexpired record is accepted. Applies to records
    /// stored here, put here, and returned by gets and scans.
    pub fn set_record_check(&mut self, check: RecordCheckFn) {
        self.dir.check = RecordCheck(Some(check));
    }

    /// Publish `record`: checked like any record, stored here when this
    /// node is among its holders, and routed to the node succeeding its
    /// position, which stores it and replicates it on its successors.
    /// `Err` when the record is refused here (the owner republishes a
    /// corrected record; nothing was sent).
    pub fn dir_put(&mut self, now: Instant, record: Record) -> Result<(), DirError> {
        self.dir_tick(now);
        self.check_record(now, &record)?;
        if let Some(o) = self.dir.store.held(&record.key) {
            if o.version > record.version {
                return Err(DirError::Stale);
            }
            if o.version == record.version && *o != record {
                return Err(DirError::Conflict);
            }
        }
        let me = self.cfg.node_id;
        self.route_put(
            now,
            me,
            DirPut {
                kind: PutKind::Route,
                copies: 0,
                hops: 0,
                record,
            },
        );
        Ok(())
    }

    /// Look `key` up. The answer comes as [`Event::DirResult`] with the
    /// returned id: at once when this node holds the record, else after
    /// the routed get returns or `lookup_timeout` passes (then `None`).
    pub fn dir_get(&mut self, now: Instant, key: &str) -> DirRequest {
        self.dir_tick(now);
        let nonce = self.rng.u64();
        let req = DirRequest(nonce);
        let unix = self.unix_now(now);
        if let Some(r) = self.dir.store.get(key, unix) {
            let record = Some(r.clone());
            self.dir_result(req, key.to_owned(), record);
            return req;
        }
        if !crate::directory::valid_key(key)
            || self.dir.gets.len() >= self.cfg.directory.max_pending
        {
            self.dir_result(req, key.to_owned(), None);
            return req;
        }
        let me = self.cfg.node_id;
        let pos = DirKey::of(key).0;
        let hop = self
            .route(pos, &[me])
            .or_else(|| self.owner_hop(pos, &[me]));
        match hop {
            Some(h) => {
                self.dir.gets.insert(
                    nonce,
                    PendingGet {
                        key: key.to_owned(),
                        sent: now,
                    },
                );
                self.send(
                    h,
                    &Message::DirGet(DirGet {
                        nonce,
                        key: key.to_owned(),
                        path: vec![me],
                    }),
                );
            }
            None => self.dir_result(req, key.to_owned(), None),
        }
        req
    }

    /// Enumerate the network's member records (keys starting `node:`) by
    /// walking the ring successor by successor; each step's holder sends
    /// what it holds in its arc. The result comes as [`Event::DirScan`]
    /// with the returned id: `complete` when every step answered within
    /// `scan_timeout` and no record was cut by `max_scan_records`. Needs
    /// this node to be a ring position (pages are routed to it); an
    /// introducer without TAP gets an empty, incomplete result at once.
    pub fn dir_scan(&mut self, now: Instant) -> DirRequest {
        self.dir_tick(now);
        let nonce = self.rng.u64();
        let req = DirRequest(nonce);
        if !self.in_ring() || self.dir.scans.len() >= self.cfg.directory.max_pending {
            self.events.push_back(Event::DirScan {
                request: req,
                records: Vec::new(),
                complete: false,
            });
            return req;
        }
        self.dir.scans.insert(
            nonce,
            PendingScan {
                sent: now,
                steps: HashMap::new(),
                last: None,
                records: BTreeMap::new(),
                truncated: false,
            },
        );
        let me = self.cfg.node_id;
        match self.scan_next() {
            Some(next) => self.send(
                next,
                &Message::DirScan(DirScan {
                    nonce,
                    asker: me,
                    cursor: me,
                    seq: 0,
                }),
            ),
            // Other ring nodes known, none linked yet: nothing to walk.
            None if !nearest_after(&self.members, me, 1, true).is_empty() => {
                self.finish_scan(nonce, false)
            }
            // Alone on the ring: this node holds everything.
            None => self.scan_step(
                now,
                DirScan {
                    nonce,
                    asker: me,
                    cursor: me,
                    seq: 0,
                },
                true,
            ),
        }
        req
    }

    /// The unexpired record held here under `key` (as of the last input).
    pub fn dir_local(&self, key: &str) -> Option<&Record> {
        self.dir.store.get(key, self.dir.unix_seen)
    }

    /// Every record held here (for status), by ring position. May include
    /// records expired since the last refresh tick.
    pub fn dir_records(&self) -> impl Iterator<Item = &Record> + '_ {
        self.dir.store.iter()
    }

    /// Records held here.
    pub fn dir_len(&self) -> usize {
        self.dir.store.len()
    }

    // ------------------------------------------------------------ inputs

    pub(super) fn on_dir_message(&mut self, now: Instant, from: NodeId, msg: Message) {
        self.dir_tick(now);
        let budget = self.cfg.directory.per_peer;
        let Some(link) = self.links.get_mut(&from) else {
            return;
        };
        if !link.dir.take(now, budget, 1.0) {
            self.stats.dir.over_budget += 1;
            return;
        }
        match msg {
            Message::DirPut(p) => match p.kind {
                PutKind::Route => self.route_put(now, from, p),
                PutKind::Replica | PutKind::Handover => self.on_replica(now, from, p),
            },
            Message::DirGet(g) => self.on_dir_get(now, from, g),
            Message::DirGetReply(r) => self.on_dir_get_reply(now, r),
            Message::DirScan(s) => self.scan_step(now, s, false),
            Message::DirScanPage(p) => self.on_scan_page(now, from, p),
            _ => {}
        }
    }

    /// Periodic: expire records, gets and scans; re-replicate when the
    /// ring near this node changed.
    pub(super) fn dir_refresh(&mut self, now: Instant) {
        self.dir_tick(now);
        let unix = self.unix_now(now);
        self.replicate(now);
        // A record leaves only after one last hand-over to the nodes now
        // responsible for it (a hand-over sent when the ring changed may
        // have been lost on a link that closed meanwhile).
        for record in self.dir.store.due(now, unix) {
            let pos = record.dir_key().0;
            let view = self.near_view();
            let to: Vec<NodeId> = replication::responsible(pos, &view, self.cfg.directory.replicas)
                .into_iter()
                .filter(|n| self.links.contains_key(n))
                .collect();
            for n in to {
                self.hand_over(n, record.clone());
            }
        }
        self.stats.dir.dropped += self.dir.store.expire(now, unix) as u64;
        let lt = self.cfg.lookup_timeout;
        let stale: Vec<u64> = self
            .dir
            .gets
            .iter()
            .filter(|(_, g)| now >= g.sent + lt)
            .map(|(n, _)| *n)
            .collect();
        for n in stale {
            if let Some(g) = self.dir.gets.remove(&n) {
                self.dir_result(DirRequest(n), g.key, None);
            }
        }
        let st = self.cfg.directory.scan_timeout;
        let stale: Vec<u64> = self
            .dir
            .scans
            .iter()
            .filter(|(_, s)| now >= s.sent + st)
            .map(|(n, _)| *n)
            .collect();
        for n in stale {
            self.finish_scan(n, false);
        }
    }

    /// This node and its `replicas + 1` nearest ring members on each side,
    /// in ring order.
    fn near_view(&self) -> Vec<NodeId> {
        let (succ, pred) = self.near_ring();
        let mut view: Vec<NodeId> = pred.into_iter().rev().collect();
        view.push(self.cfg.node_id);
        view.extend(succ);
        view
    }

    fn dir_tick(&mut self, now: Instant) {
        self.dir.unix_seen = self.unix_now(now);
    }

    fn dir_result(&mut self, request: DirRequest, key: String, record: Option<Record>) {
        self.events.push_back(Event::DirResult {
            request,
            key,
            record,
        });
    }

    // ------------------------------------------------------- acceptance

    /// Shape, subject, signature, expiry and the record check.
    fn check_record(&self, now: Instant, r: &Record) -> Result<(), DirError> {
        let network = self
            .cfg
            .identity
            .as_ref()
            .map(|i| i.certificate().network())
            .ok_or(DirError::NoIdentity)?;
        r.verify(network)?;
        let unix = self.unix_now(now);
        if r.is_expired(unix) {
            return Err(RecordError::Expired.into());
        }
        if let Some(check) = &self.dir.check.0 {
            if !check(r, unix) {
                return Err(DirError::Refused);
            }
        }
        Ok(())
    }

    /// Check and store; counts the outcome. `Ok(true)`: newly stored.
    fn accept(&mut self, now: Instant, r: Record) -> bool {
        match self.check_record(now, &r) {
            Ok(()) => {}
            Err(DirError::Refused) => {
                self.stats.dir.refused += 1;
                return false;
            }
            Err(DirError::Record(RecordError::Expired)) => {
                self.stats.dir.expired += 1;
                return false;
            }
            Err(_) => {
                self.stats.dir.bad_records += 1;
                return false;
            }
        }
        let pos = r.dir_key().0;
        let unix = self.unix_now(now);
        let key = r.key.clone();
        match self.dir.store.put(r, unix) {
            PutOutcome::Stored => {
                self.stats.dir.stored += 1;
                if !self.responsible_for(pos) {
                    let at = now + self.cfg.directory.handover_grace;
                    self.mark_drop(&key, Some(at));
                }
                true
            }
            PutOutcome::Unchanged => false,
            PutOutcome::Stale => {
                self.stats.dir.stale += 1;
                false
            }
            PutOutcome::Conflict => {
                self.stats.dir.conflicts += 1;
                false
            }
            PutOutcome::Full => {
                self.stats.dir.full += 1;
                false
            }
            PutOutcome::Expired => {
                self.stats.dir.expired += 1;
                false
            }
        }
    }

    fn mark_drop(&mut self, key: &str, at: Option<Instant>) {
        for h in self.dir.store.held_mut().filter(|h| h.record.key == key) {
            h.drop_at = at;
        }
    }

    // ------------------------------------------------------------ routing

    /// Ring positions near this node: its `replicas + 1` nearest known
    /// ring members on each side.
    fn near_ring(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let k = self.cfg.directory.replicas + 1;
        let me = self.cfg.node_id;
        (
            nearest_after(&self.members, me, k, true),
            nearest_after(&self.members, me, k, false),
        )
    }

    fn responsible_for(&self, pos: NodeId) -> bool {
        if !self.in_ring() {
            return false;
        }
        let (_, preds) = self.near_ring();
        replication::is_responsible(self.cfg.node_id, &preds, pos, self.cfg.directory.replicas)
    }

    /// Whether this node succeeds `pos` among the ring nodes it knows (it
    /// owns the position: routing stops here).
    fn owns(&self, pos: NodeId) -> bool {
        if !self.in_ring() {
            return false;
        }
        let me = self.cfg.node_id;
        match nearest_after(&self.members, me, 1, false).first() {
            Some(p) => ring::between_right_incl(*p, pos, me),
            None => true,
        }
    }

    /// Where greedy routing ended here: the owner of `pos` among this node
    /// and the ring members it knows, when that is a link other than
    /// `exclude` (this node being the predecessor of `pos`).
    fn owner_hop(&self, pos: NodeId, exclude: &[NodeId]) -> Option<NodeId> {
        let me = self.cfg.node_id;
        let ring_nodes = self
            .members
            .iter()
            .filter(|(_, m)| m.info.has_tap)
            .map(|(id, _)| *id)
            .chain(self.in_ring().then_some(me));
        let owner = ring::owner(pos, ring_nodes)?;
        (owner != me && self.links.contains_key(&owner) && !exclude.contains(&owner))
            .then_some(owner)
    }

    /// The next node of a replica chain: the nearest linked ring
    /// successor.
    fn chain_next(&self) -> Option<NodeId> {
        let me = self.cfg.node_id;
        nearest_after(&self.members, me, self.cfg.ring_links, true)
            .into_iter()
            .find(|n| self.links.contains_key(n))
    }

    /// A `Route` put from `from` (this node itself when it publishes).
    fn route_put(&mut self, now: Instant, from: NodeId, mut p: DirPut) {
        let me = self.cfg.node_id;
        let pos = p.record.dir_key().0;
        if usize::from(p.hops) >= MAX_PATH {
            self.stats.dir.undeliverable += 1;
            return;
        }
        let exclude = [from, me];
        let hop = if self.owns(pos) {
            None
        } else {
            self.route(pos, &exclude)
                .or_else(|| self.owner_hop(pos, &exclude))
        };
        if let Some(h) = hop {
            if from != me {
                self.stats.dir.puts_forwarded += 1;
            }
            p.hops += 1;
            self.send(h, &Message::DirPut(p));
            return;
        }
        if !self.in_ring() {
            self.stats.dir.undeliverable += 1;
            return;
        }
        // This node succeeds the position (as far as it knows): store and
        // start the replica chain.
        if self.accept(now, p.record.clone()) {
            self.pass_replica(p.record, self.cfg.directory.replicas);
        }
    }

    fn pass_replica(&mut self, record: Record, copies: usize) {
        if copies == 0 {
            return;
        }
        if let Some(next) = self.chain_next() {
            self.send(
                next,
                &Message::DirPut(DirPut {
                    kind: PutKind::Replica,
                    copies: u8::try_from(copies).unwrap_or(u8::MAX),
                    hops: 0,
                    record,
                }),
            );
        }
    }

    fn on_replica(&mut self, now: Instant, _from: NodeId, p: DirPut) {
        if !self.in_ring() {
            self.stats.dir.undeliverable += 1;
            return;
        }
        let record = p.record.clone();
        if !self.accept(now, p.record) {
            return;
        }
        match p.kind {
            PutKind::Replica if p.copies > 1 => {
                self.pass_replica(record, usize::from(p.copies) - 1)
            }
            // New here: the responsible nodes after this one (as far as it
            // knows) may lack it too, e.g. when they joined together with
            // this one and this node's view changed before the record
            // arrived. A node that already holds it stops the chain.
            PutKind::Handover => {
                let me = self.cfg.node_id;
                let pos = record.dir_key().0;
                let view = self.near_view();
                let resp = replication::responsible(pos, &view, self.cfg.directory.replicas);
                let after = resp
                    .iter()
                    .skip_while(|n| **n != me)
                    .skip(1)
                    .copied()
                    .filter(|n| self.links.contains_key(n))
                    .collect::<Vec<_>>();
                for n in after {
                    self.hand_over(n, record.clone());
                }
            }
            _ => {}
        }
    }

    fn on_dir_get(&mut self, now: Instant, from: NodeId, mut g: DirGet) {
        let me = self.cfg.node_id;
        if g.path.last() != Some(&from) || g.path.contains(&me) {
            self.stats.dir.undeliverable += 1;
            return;
        }
        let unix = self.unix_now(now);
        let held = self.dir.store.get(&g.key, unix).cloned();
        let pos = DirKey::of(&g.key).0;
        if held.is_none() && !self.owns(pos) {
            let hop = if g.path.len() < MAX_PATH {
                self.route(pos, &g.path)
                    .or_else(|| self.owner_hop(pos, &g.path))
            } else {
                None
            };
            if let Some(h) = hop {
                self.stats.dir.gets_forwarded += 1;
                g.path.push(me);
                self.send(h, &Message::DirGet(g));
                return;
            }
        }
        self.stats.dir.gets_answered += 1;
        self.send(
            from,
            &Message::DirGetReply(DirGetReply {
                nonce: g.nonce,
                key: g.key,
                path: g.path,
                record: held,
            }),
        );
    }

    fn on_dir_get_reply(&mut self, now: Instant, mut r: DirGetReply) {
        let me = self.cfg.node_id;
        if r.path.last() != Some(&me) {
            self.stats.dir.undeliverable += 1;
            return;
        }
        r.path.pop();
        if let Some(next) = r.path.last().copied() {
            if self.links.contains_key(&next) {
                self.send(next, &Message::DirGetReply(r));
            } else {
                self.stats.dir.undeliverable += 1;
            }
            return;
        }
        let Some(g) = self.dir.gets.get(&r.nonce) else {
            return;
        };
        if g.key != r.key {
            return;
        }
        self.dir.gets.remove(&r.nonce);
        // The answer is checked like a stored record: a hop could have
        // made it up.
        let record = r
            .record
            .filter(|rec| rec.key == r.key && self.check_record(now, rec).is_ok());
        self.dir_result(DirRequest(r.nonce), r.key, record);
    }

    // --------------------------------------------------------------- scan

    /// The next walker of a scan: the farthest linked node among this
    /// node's first `min(ring_links, replicas + 1)` ring successors (it
    /// holds every record between this node and itself).
    fn scan_next(&self) -> Option<NodeId> {
        let me = self.cfg.node_id;
        let k = self
            .cfg
            .ring_links
            .min(self.cfg.directory.replicas + 1)
            .max(1);
        nearest_after(&self.members, me, k, true)
            .into_iter()
            .rev()
            .find(|n| self.links.contains_key(n))
    }

    /// One scan step here: report the arc `(cursor, me]` (clipped at the
    /// asker) and pass the walk on. `alone`: the asker is the only ring
    /// node it knows; its step covers the whole ring.
    fn scan_step(&mut self, now: Instant, s: DirScan, alone: bool) {
        let me = self.cfg.node_id;
        if !self.in_ring() {
            self.stats.dir.undeliverable += 1;
            return;
        }
        let last = alone || ring::between_right_incl(s.cursor, s.asker, me);
        let to = if last { s.asker } else { me };
        let unix = self.unix_now(now);
        let found: Vec<Record> = self
            .dir
            .store
            .range(s.cursor, to, NODE_PREFIX, unix)
            .take(MAX_PAGE_RECORDS * usize::from(u8::MAX))
            .cloned()
            .collect();
        let parts = found.chunks(MAX_PAGE_RECORDS).len().max(1);
        let mut chunks: Vec<Vec<Record>> = found
            .chunks(MAX_PAGE_RECORDS)
            .map(<[Record]>::to_vec)
            .collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        for (i, records) in chunks.into_iter().enumerate() {
            let page = DirScanPage {
                nonce: s.nonce,
                asker: s.asker,
                seq: s.seq,
                part: u8::try_from(i).unwrap_or(u8::MAX),
                parts: u8::try_from(parts).unwrap_or(u8::MAX),
                last,
                hops: 0,
                records,
            };
            self.send_page(now, me, page);
        }
        if last {
            return;
        }
        let Some(seq) = s.seq.checked_add(1) else {
            self.stats.dir.undeliverable += 1;
            return;
        };
        match self.scan_next() {
            Some(next) => self.send(
                next,
                &Message::DirScan(DirScan {
                    nonce: s.nonce,
                    asker: s.asker,
                    cursor: me,
                    seq,
                }),
            ),
            None => self.stats.dir.undeliverable += 1,
        }
    }

    fn send_page(&mut self, now: Instant, from: NodeId, mut p: DirScanPage) {
        let me = self.cfg.node_id;
        if p.asker == me {
            self.take_page(now, p);
            return;
        }
        if usize::from(p.hops) >= MAX_PATH {
            self.stats.dir.undeliverable += 1;
            return;
        }
        match self.route(p.asker, &[from, me]) {
            Some(h) => {
                p.hops += 1;
                self.send(h, &Message::DirScanPage(p));
            }
            None => self.stats.dir.undeliverable += 1,
        }
    }

    fn on_scan_page(&mut self, now: Instant, from: NodeId, p: DirScanPage) {
        if p.parts == 0 || p.part >= p.parts {
            self.stats.dir.undeliverable += 1;
            return;
        }
        self.send_page(now, from, p);
    }

    fn take_page(&mut self, now: Instant, p: DirScanPage) {
        self.stats.dir.scan_pages += 1;
        let max = self.cfg.directory.max_scan_records;
        let checked: Vec<Record> = p
            .records
            .into_iter()
            .filter(|r| r.key.starts_with(NODE_PREFIX) && self.check_record(now, r).is_ok())
            .collect();
        let Some(scan) = self.dir.scans.get_mut(&p.nonce) else {
            return;
        };
        if !scan.steps.contains_key(&p.seq) && scan.steps.len() >= MAX_SCAN_STEPS {
            // More steps than a walk this node can follow: not complete.
            scan.truncated = true;
            return;
        }
        let step = scan
            .steps
            .entry(p.seq)
            .or_insert((p.parts, BTreeSet::new()));
        step.1.insert(p.part);
        if p.last {
            scan.last = Some(p.seq);
        }
        for r in checked {
            let newer = scan
                .records
                .get(&r.key)
                .is_none_or(|old| old.version < r.version);
            if !newer {
                continue;
            }
            if scan.records.len() >= max && !scan.records.contains_key(&r.key) {
                scan.truncated = true;
                continue;
            }
            scan.records.insert(r.key.clone(), r);
        }
        let done = scan.last.is_some_and(|l| {
            (0..=l).all(|s| {
                scan.steps
                    .get(&s)
                    .is_some_and(|(parts, got)| got.len() >= usize::from(*parts))
            })
        });
        if done {
            let complete = !scan.truncated;
            self.finish_scan(p.nonce, complete);
        }
    }

    fn finish_scan(&mut self, nonce: u64, complete: bool) {
        if let Some(s) = self.dir.scans.remove(&nonce) {
            self.events.push_back(Event::DirScan {
                request: DirRequest(nonce),
                records: s.records.into_values().collect(),
                complete: complete && !s.truncated,
            });
        }
    }

    // -------------------------------------------------------- replication

    /// When the ring near this node (or which of it is linked) changed:
    /// hand every held record to the nodes that became responsible for it
    /// (those linked; a node not linked yet gets it when its link comes
    /// up), and schedule the drop of records this node is no longer
    /// responsible for.
    fn replicate(&mut self, now: Instant) {
        if !self.in_ring() {
            return;
        }
        let me = self.cfg.node_id;
        let view = self.near_view();
        let reached: Vec<NodeId> = view
            .iter()
            .copied()
            .filter(|n| self.links.contains_key(n))
            .collect();
        if view == self.dir.view && reached == self.dir.reached {
            return;
        }
        let r = self.cfg.directory.replicas;
        let grace = self.cfg.directory.handover_grace;
        let mut sends: Vec<(NodeId, Record)> = Vec::new();
        let (old_view, old_reached) = (&self.dir.view, &self.dir.reached);
        for h in self.dir.store.held_mut() {
            let (gained, still) =
                replication::handover(me, h.pos.0, old_view, old_reached, &view, r);
            for g in gained.into_iter().filter(|g| reached.contains(g)) {
                sends.push((g, h.record.clone()));
            }
            h.drop_at = match (still, h.drop_at) {
                (true, _) => None,
                (false, Some(at)) => Some(at),
                (false, None) => Some(now + grace),
            };
        }
        self.dir.view = view;
        self.dir.reached = reached;
        for (to, record) in sends {
            self.hand_over(to, record);
        }
    }

    /// Send `record` to `to`, which became responsible for it.
    fn hand_over(&mut self, to: NodeId, record: Record) {
        self.stats.dir.handovers += 1;
        self.send(
            to,
            &Message::DirPut(DirPut {
                kind: PutKind::Handover,
                copies: 0,
                hops: 0,
                record,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::tests::{drain, rng};
    use crate::overlay::Config;
    use crate::switch::Mac;
    use crate::wire::Role;
    use ringlan_tunnel::{Identity, NetworkName};

    fn ident(seed: u8) -> Identity {
        Identity::from_secret_key_bytes([seed; 32], &NetworkName::new("lab").unwrap())
    }

    /// A node with an identity, not joined (no links): it is the only ring
    /// node it knows, so it holds every record itself.
    fn lone(now: Instant, id: &Identity) -> Overlay {
        let mut cfg = Config::new(id.node_id(), "a", Role::Node, Some(Mac([2, 0, 0, 0, 0, 1])));
        cfg.introducers = vec!["198.51.100.7:4910".parse().unwrap()];
        cfg.identity = Some(id.clone());
        cfg.unix_time = 1_000;
        let mut o = Overlay::new(now, cfg, rng(3)).unwrap();
        drain(&mut o);
        o
    }

    fn events(o: &mut Overlay) -> Vec<Event> {
        std::iter::from_fn(|| o.poll_event()).collect()
    }

    #[test]
    fn a_lone_node_stores_answers_and_scans_locally() {
        let t0 = Instant::now();
        let me = ident(1);
        let mut o = lone(t0, &me);
        assert_eq!(o.unix_now(t0 + std::time::Duration::from_secs(5)), 1_005);
        let r = Record::sign(&me, "node:me", 1, 2_000, b"v1".to_vec()).unwrap();
        o.dir_put(t0, r.clone()).unwrap();
        assert_eq!(o.dir_local("node:me"), Some(&r));
        assert_eq!(o.dir_len(), 1);
        let name = Record::sign(&me, "name:a", 1, 2_000, b"n".to_vec()).unwrap();
        o.dir_put(t0, name.clone()).unwrap();
        events(&mut o);
        let req = o.dir_get(t0, "name:a");
        assert_eq!(
            events(&mut o),
            vec![Event::DirResult {
                request: req,
                key: "name:a".into(),
                record: Some(name),
            }]
        );
        let req = o.dir_get(t0, "name:nobody");
        assert_eq!(
            events(&mut o),
            vec![Event::DirResult {
                request: req,
                key: "name:nobody".into(),
                record: None,
            }]
        );
        // The scan walks a ring of one: complete, `node:` records only.
        let req = o.dir_scan(t0);
        assert_eq!(
            events(&mut o),
            vec![Event::DirScan {
                request: req,
                records: vec![r.clone()],
                complete: true,
            }]
        );
        // Versions: same version, other body: conflict; older: stale;
        // newer: replaces.
        let other = Record::sign(&me, "node:me", 1, 2_000, b"other".to_vec()).unwrap();
        assert_eq!(o.dir_put(t0, other), Err(DirError::Conflict));
        let newer = Record::sign(&me, "node:me", 2, 2_000, b"v2".to_vec()).unwrap();
        o.dir_put(t0, newer.clone()).unwrap();
        assert_eq!(o.dir_local("node:me"), Some(&newer));
        assert_eq!(o.dir_put(t0, r), Err(DirError::Stale));
        // Not signed by its subject, expired, refused by the check.
        let mut forged = Record::sign(&ident(2), "node:x", 1, 2_000, vec![]).unwrap();
        forged.body.push(1);
        assert_eq!(
            o.dir_put(t0, forged),
            Err(DirError::Record(RecordError::BadSignature))
        );
        let old = Record::sign(&me, "node:old", 1, 1_000, vec![]).unwrap();
        assert_eq!(
            o.dir_put(t0, old),
            Err(DirError::Record(RecordError::Expired))
        );
        o.set_record_check(Box::new(|r, unix| r.body != b"bad" && unix >= 1_000));
        let bad = Record::sign(&me, "node:bad", 1, 2_000, b"bad".to_vec()).unwrap();
        assert_eq!(o.dir_put(t0, bad), Err(DirError::Refused));
        assert_eq!(o.dir_len(), 2);
        // Records expire at the refresh tick after their expiry.
        let late = t0 + std::time::Duration::from_secs(1_001);
        o.handle_timeout(late);
        assert_eq!(o.dir_len(), 0);
        assert_eq!(o.stats().dir.dropped, 2);
    }
}
