//! The agent's DNS responder (`dns: {listen, domain}`, docs/directory.md
//! "DNS"): answers `A` and `AAAA` queries for `NAME.DOMAIN` with the overlay
//! addresses the directory holds for member `NAME` (its `name:NAME` record).
//! It is authoritative for `DOMAIN` only and not a recursive resolver:
//!
//! | query | answer |
//! |---|---|
//! | `NAME.DOMAIN`, member known, `A` / `AAAA` / `ANY` | its addresses of that family (`NOERROR`, may be empty) |
//! | `NAME.DOMAIN`, member known, any other type | `NOERROR`, no answer (RFC 2308 NODATA) |
//! | `NAME.DOMAIN`, no such member | `NXDOMAIN` |
//! | `DOMAIN` itself | `NOERROR`, no answer |
//! | a name outside `DOMAIN`, a class other than `IN` | `REFUSED` |
//! | directory lookup timed out | `SERVFAIL` |
//! | opcode other than `QUERY` | `NOTIMP` |
//! | a header that decodes but a message that does not, or not one question | `FORMERR` |
//! | a response, or less than a header | nothing |
//!
//! The wire format is hickory-proto's ([`Message`]); this module only
//! decides. [`Zone::handle`] is pure (bytes in, a reply or a directory
//! lookup out) and [`Pending::answer`] turns a lookup result into the reply;
//! [`DnsServer`] is the UDP loop around them. The directory is behind the
//! small [`Directory`] trait: the runtime implements it by asking the node
//! core ([`crate::runtime`]), tests with a table.
//!
//! # Bounds
//!
//! - At most [`MAX_PENDING`] queries wait for the directory at once; beyond
//!   it a query gets `SERVFAIL` at once (counted `overloaded`).
//! - Each source IP may send [`RATE_PER_SOURCE`] queries per second (burst
//!   [`BURST_PER_SOURCE`]); more are dropped without an answer (counted
//!   `rate_limited`), so the responder cannot be used to amplify. At most
//!   [`MAX_SOURCES`] sources are tracked; when full, sources whose bucket
//!   has refilled are forgotten, and a new source that still finds no room
//!   is dropped.
//! - A lookup gets [`LOOKUP_TIMEOUT`]; at most [`MAX_ANSWERS`] addresses
//!   per answer; a reply longer than what the client takes (512 bytes
//!   without EDNS, its EDNS payload size up to [`MAX_UDP_PAYLOAD`]) is sent
//!   truncated (`TC`, no answers).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

/// TTL of the answers: members republish their records every few minutes
/// and an address may change (DHCP), so resolvers should ask again soon.
pub const TTL: u32 = 30;
/// Addresses in one answer at most.
pub const MAX_ANSWERS: usize = 16;
/// Queries waiting for the directory at once.
pub const MAX_PENDING: usize = 256;
/// How long a query waits for the directory before `SERVFAIL`.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Queries per second per source IP (sustained).
pub const RATE_PER_SOURCE: f64 = 50.0;
/// Queries per source IP in a burst.
pub const BURST_PER_SOURCE: f64 = 100.0;
/// Source IPs tracked by the rate limiter.
pub const MAX_SOURCES: usize = 4096;
/// Largest UDP reply, whatever the client's EDNS payload size says (the
/// DNS flag day 2020 value: no IP fragmentation).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Reply size without EDNS (RFC 1035 4.2.1).
const PLAIN_UDP: usize = 512;
/// Receive buffer: larger queries are not DNS queries we answer.
const RECV_BUF: usize = 4096;
/// Time between attempts to bind the listen address (it may appear late,
/// e.g. on the TAP by DHCP).
const BIND_RETRY: Duration = Duration::from_secs(5);

/// What the directory says about a member name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The member and its overlay addresses (possibly none).
    Found(Vec<IpAddr>),
    /// No member of that name.
    NotFound,
    /// No answer in time (the directory is unreachable).
    Unavailable,
}

/// Where member names are looked up.
pub trait Directory: Send + Sync + 'static {
    /// The addresses of member `name` (as the query wrote it).
    fn lookup(&self, name: String) -> impl Future<Output = Lookup> + Send;
}

/// The `resolvectl` commands that point systemd-resolved at the responder
/// for the TAP `iface` (`ringlan resolved-setup`, run by the unit's
/// `ExecStartPost=`): queries for `DOMAIN` names on that link go to
/// `listen`; `~DOMAIN` makes it a routing-only domain (not a search
/// domain).
pub fn resolvectl_commands(iface: &str, listen: SocketAddr, domain: &str) -> [Vec<String>; 2] {
    [
        vec!["dns".into(), iface.into(), listen.to_string()],
        vec!["domain".into(), iface.into(), format!("~{domain}")],
    ]
}

/// A name for the node to resolve (sent by [`NodeDirectory`] to the
/// runtime, which owns the node: [`ringlan_node::Node::resolve_name`]).
#[derive(Debug)]
pub struct Resolve {
    pub name: String,
    pub reply: oneshot::Sender<Lookup>,
}

/// The [`Directory`] of a running node: asks the runtime's task over a
/// channel (bounded: [`MAX_PENDING`] lookups wait at most, so the channel
/// never holds more).
#[derive(Debug, Clone)]
pub struct NodeDirectory(pub mpsc::Sender<Resolve>);

impl Directory for NodeDirectory {
    async fn lookup(&self, name: String) -> Lookup {
        let (reply, answer) = oneshot::channel();
        if self.0.send(Resolve { name, reply }).await.is_err() {
            return Lookup::Unavailable;
        }
        answer.await.unwrap_or(Lookup::Unavailable)
    }
}

/// What to do with one datagram.
#[derive(Debug)]
pub enum Decision {
    /// Send this reply at once.
    Reply(Vec<u8>),
    /// Look the member up, then send [`Pending::answer`].
    Lookup(Pending),
    /// Send nothing (a response, or not even a DNS header).
    Ignore,
}

/// A query waiting for the directory.
#[derive(Debug)]
pub struct Pending {
    /// The member name asked for.
    pub name: String,
    request: Message,
    qtype: RecordType,
}

/// The zone this responder answers for.
#[derive(Debug, Clone)]
pub struct Zone {
    domain: Name,
}

/// Whether `s` is a valid DNS domain for `dns.domain`: dot-separated labels
/// of 1-63 letters, digits and hyphens, not starting or ending with a
/// hyphen, 253 characters at most (a trailing dot is allowed).
pub fn check_domain(s: &str) -> Result<(), String> {
    let expected = "expected a domain such as ringlan or home.example.net";
    let t = s.strip_suffix('.').unwrap_or(s);
    let ok = !t.is_empty()
        && t.len() <= 253
        && t.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a domain name, {expected}"))
    }
}

impl Zone {
    /// The zone for `domain` (checked with [`check_domain`]).
    pub fn new(domain: &str) -> Result<Zone, String> {
        check_domain(domain)?;
        let mut domain = Name::from_ascii(domain)
            .map_err(|e| format!("`{domain}`: {e}"))?
            .to_lowercase();
        domain.set_fqdn(true);
        Ok(Zone { domain })
    }

    /// Decides what to do with the datagram `query` (never panics,
    /// whatever the bytes).
    pub fn handle(&self, query: &[u8]) -> Decision {
        let header = match Header::read(&mut BinDecoder::new(query)) {
            Ok(h) => h,
            Err(_) => return Decision::Ignore,
        };
        if header.metadata.message_type != MessageType::Query {
            return Decision::Ignore;
        }
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => return reply_code(&header.metadata, ResponseCode::FormErr),
        };
        if request.metadata.op_code != OpCode::Query {
            return reply_code(&request.metadata, ResponseCode::NotImp);
        }
        let [q] = request.queries.as_slice() else {
            return reply_code(&request.metadata, ResponseCode::FormErr);
        };
        let qname = q.name();
        if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) || !self.domain.zone_of(qname) {
            return Decision::Reply(encode(&request, ResponseCode::Refused, Vec::new()));
        }
        let here = usize::from(self.domain.num_labels());
        let labels: Vec<&[u8]> = qname.iter().collect();
        let Some(own) = labels.len().checked_sub(here).filter(|n| *n > 0) else {
            // The zone's apex: it exists, it has no addresses.
            return Decision::Reply(encode(&request, ResponseCode::NoError, Vec::new()));
        };
        let name = labels
            .get(..own)
            .unwrap_or_default()
            .iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<Vec<_>>()
            .join(".");
        if !is_member_name(&name) {
            return Decision::Reply(encode(&request, ResponseCode::NXDomain, Vec::new()));
        }
        Decision::Lookup(Pending {
            name,
            qtype: q.query_type(),
            request,
        })
    }
}

/// Node names (`node.name`): 1-63 characters of A-Z, a-z, 0-9, `.`, `_`
/// and `-` (agent/src/config.rs `check_node_name`).
fn is_member_name(s: &str) -> bool {
    crate::config::check_node_name(s).is_ok()
}

impl Pending {
    /// The reply once the directory answered.
    pub fn answer(&self, result: &Lookup) -> Vec<u8> {
        let (code, ips): (_, &[IpAddr]) = match result {
            Lookup::Found(ips) => (ResponseCode::NoError, ips),
            Lookup::NotFound => (ResponseCode::NXDomain, &[]),
            Lookup::Unavailable => (ResponseCode::ServFail, &[]),
        };
        let owner = self
            .request
            .queries
            .first()
            .map(|q| q.name().clone())
            .unwrap_or_default();
        let answers = ips
            .iter()
            .filter_map(|ip| match (ip, self.qtype) {
                (IpAddr::V4(a), RecordType::A | RecordType::ANY) => Some(RData::A(A(*a))),
                (IpAddr::V6(a), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*a))),
                _ => None,
            })
            .take(MAX_ANSWERS)
            .map(|rd| Record::from_rdata(owner.clone(), TTL, rd))
            .collect();
        encode(&self.request, code, answers)
    }

    /// The reply when the directory could not be asked (too many queries
    /// waiting).
    pub fn overloaded(&self) -> Vec<u8> {
        self.answer(&Lookup::Unavailable)
    }
}

fn reply_code(req: &Metadata, code: ResponseCode) -> Decision {
    let mut m = Message::response(req.id, req.op_code);
    m.metadata = Metadata::response_from_request(req);
    m.metadata.response_code = code;
    m.to_vec().map_or(Decision::Ignore, Decision::Reply)
}

/// The reply to `request`: its question, `code`, `answers`; authoritative;
/// EDNS when the request had it; truncated to what the client takes.
fn encode(request: &Message, code: ResponseCode, answers: Vec<Record>) -> Vec<u8> {
    let mut m = Message::response(request.metadata.id, request.metadata.op_code);
    m.metadata = Metadata::response_from_request(&request.metadata);
    m.metadata.authoritative = true;
    m.metadata.response_code = code;
    m.queries = request.queries.clone();
    let limit = match &request.edns {
        Some(e) => {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            m.set_edns(edns);
            usize::from(e.max_payload().clamp(PLAIN_UDP as u16, MAX_UDP_PAYLOAD))
        }
        None => PLAIN_UDP,
    };
    m.answers = answers;
    match m.to_vec() {
        Ok(v) if v.len() <= limit => v,
        _ => {
            m.answers.clear();
            m.metadata.truncation = true;
            m.to_vec().unwrap_or_default()
        }
    }
}

/// Counters of the responder (`ringlan_dns_*_total` in metrics).
#[derive(Debug, Default)]
pub struct DnsStats {
    pub queries: AtomicU64,
    pub answered: AtomicU64,
    pub nxdomain: AtomicU64,
    pub refused: AtomicU64,
    pub servfail: AtomicU64,
    pub rate_limited: AtomicU64,
    pub overloaded: AtomicU64,
}

impl DnsStats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a reply by its response code.
    fn count_reply(&self, reply: &[u8]) {
        let rcode = reply.get(3).map_or(0, |b| b & 0x0f);
        match ResponseCode::from_low(rcode) {
            ResponseCode::NoError => Self::bump(&self.answered),
            ResponseCode::NXDomain => Self::bump(&self.nxdomain),
            ResponseCode::Refused => Self::bump(&self.refused),
            ResponseCode::ServFail => Self::bump(&self.servfail),
            _ => {}
        }
    }
}

/// Per-source token buckets (see the module doc, "Bounds").
#[derive(Debug, Default)]
pub struct RateLimit {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimit {
    /// Whether `src` may send a query at `now` (takes a token if so).
    pub fn allow(&mut self, now: Instant, src: IpAddr) -> bool {
        if !self.buckets.contains_key(&src) && self.buckets.len() >= MAX_SOURCES {
            self.buckets
                .retain(|_, (tokens, at)| refill(*tokens, *at, now) < BURST_PER_SOURCE);
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let (tokens, at) = self.buckets.entry(src).or_insert((BURST_PER_SOURCE, now));
        let t = refill(*tokens, *at, now);
        *at = now;
        if t >= 1.0 {
            *tokens = t - 1.0;
            true
        } else {
            *tokens = t;
            false
        }
    }
}

fn refill(tokens: f64, at: Instant, now: Instant) -> f64 {
    let dt = now.saturating_duration_since(at).as_secs_f64();
    (tokens + dt * RATE_PER_SOURCE).min(BURST_PER_SOURCE)
}

/// The UDP responder.
pub struct DnsServer<D> {
    listen: SocketAddr,
    zone: Zone,
    directory: Arc<D>,
    stats: Arc<DnsStats>,
}

impl<D: Directory> DnsServer<D> {
    pub fn new(listen: SocketAddr, zone: Zone, directory: D) -> Self {
        DnsServer {
            listen,
            zone,
            directory: Arc::new(directory),
            stats: Arc::default(),
        }
    }

    /// The counters, for metrics and tests.
    pub fn stats(&self) -> Arc<DnsStats> {
        self.stats.clone()
    }

    /// Binds the listen address, retrying every few seconds while it is
    /// not there yet (an address on the TAP comes up with the node or by
    /// DHCP); `None` on shutdown.
    async fn bind(&self, shutdown: &mut watch::Receiver<bool>) -> Option<UdpSocket> {
        let mut warned = false;
        loop {
            match UdpSocket::bind(self.listen).await {
                Ok(s) => {
                    tracing::info!(listen = %self.listen, domain = %self.zone.domain, "DNS responder");
                    return Some(s);
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(listen = %self.listen, error = %e, "cannot bind the DNS listen address yet; retrying");
                        warned = true;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(BIND_RETRY) => {}
                _ = crate::wait_for_shutdown(shutdown) => return None,
            }
        }
    }

    /// Answers queries until `shutdown` turns true.
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let Some(socket) = self.bind(&mut shutdown).await else {
            return;
        };
        self.serve_on(socket, shutdown).await
    }

    /// [`DnsServer::serve`] on a bound socket.
    pub async fn serve_on(self, socket: UdpSocket, mut shutdown: watch::Receiver<bool>) {
        let socket = Arc::new(socket);
        let pending = Arc::new(AtomicUsize::new(0));
        let mut limit = RateLimit::default();
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let (n, from) = tokio::select! {
                r = socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(error = %e, "DNS receive failed");
                        continue;
                    }
                },
                _ = crate::wait_for_shutdown(&mut shutdown) => return,
            };
            DnsStats::bump(&self.stats.queries);
            if !limit.allow(Instant::now(), from.ip()) {
                DnsStats::bump(&self.stats.rate_limited);
                continue;
            }
            let Some(query) = buf.get(..n) else { continue };
            match self.zone.handle(query) {
                Decision::Ignore => {}
                Decision::Reply(r) => {
                    self.stats.count_reply(&r);
                    let _ = socket.send_to(&r, from).await;
                }
                Decision::Lookup(p) => {
                    if pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
                        pending.fetch_sub(1, Ordering::AcqRel);
                        DnsStats::bump(&self.stats.overloaded);
                        let r = p.overloaded();
                        self.stats.count_reply(&r);
                        let _ = socket.send_to(&r, from).await;
                        continue;
                    }
                    let (socket, dir, stats, pending) = (
                        socket.clone(),
                        self.directory.clone(),
                        self.stats.clone(),
                        pending.clone(),
                    );
                    tokio::spawn(async move {
                        let result =
                            tokio::time::timeout(LOOKUP_TIMEOUT, dir.lookup(p.name.clone()))
                                .await
                                .unwrap_or(Lookup::Unavailable);
                        pending.fetch_sub(1, Ordering::AcqRel);
                        let r = p.answer(&result);
                        stats.count_reply(&r);
                        let _ = socket.send_to(&r, from).await;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if edns {
            // As dig sends it.
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn parse(r: &[u8]) -> Message {
        Message::from_vec(r).unwrap()
    }

    fn zone() -> Zone {
        Zone::new("Home.Example").unwrap()
    }

    fn lookup(z: &Zone, q: &[u8]) -> Pending {
        match z.handle(q) {
            Decision::Lookup(p) => p,
            d => panic!("expected a lookup, got {d:?}"),
        }
    }

    fn reply(z: &Zone, q: &[u8]) -> Message {
        match z.handle(q) {
            Decision::Reply(r) => parse(&r),
            d => panic!("expected a reply, got {d:?}"),
        }
    }

    fn addrs(m: &Message) -> Vec<IpAddr> {
        m.answers
            .iter()
            .map(|r| match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                d => panic!("unexpected {d:?}"),
            })
            .collect()
    }

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 3));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3));

    #[test]
    fn a_member_name_is_looked_up_and_answered_by_family() {
        let z = zone();
        let p = lookup(&z, &query("laptop.home.example.", RecordType::A, false));
        assert_eq!(p.name, "laptop");
        let m = parse(&p.answer(&Lookup::Found(vec![V4, V6])));
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert!(!m.metadata.recursion_available);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(addrs(&m), vec![V4]);
        assert_eq!(m.answers[0].ttl, TTL);
        assert_eq!(
            m.answers[0].name,
            Name::from_ascii("laptop.home.example.").unwrap()
        );
        assert!(m.edns.is_none());

        // AAAA, with EDNS (echoed), the zone matched case-insensitively and
        // the member name kept as written; a name with dots is one member.
        let p = lookup(&z, &query("Build.Box.HOME.example", RecordType::AAAA, true));
        assert_eq!(p.name, "Build.Box");
        let m = parse(&p.answer(&Lookup::Found(vec![V4, V6])));
        assert_eq!(addrs(&m), vec![V6]);
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), MAX_UDP_PAYLOAD);

        // ANY: both; another type: NODATA.
        let p = lookup(&z, &query("laptop.home.example", RecordType::ANY, false));
        assert_eq!(
            addrs(&parse(&p.answer(&Lookup::Found(vec![V4, V6])))),
            vec![V4, V6]
        );
        let p = lookup(&z, &query("laptop.home.example", RecordType::MX, false));
        let m = parse(&p.answer(&Lookup::Found(vec![V4, V6])));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn unknown_names_other_zones_and_failures() {
        let z = zone();
        let p = lookup(&z, &query("ghost.home.example", RecordType::A, false));
        let m = parse(&p.answer(&Lookup::NotFound));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative && m.answers.is_empty());
        let m = parse(&p.answer(&Lookup::Unavailable));
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(
            parse(&p.overloaded()).metadata.response_code,
            ResponseCode::ServFail
        );

        // Not our zone (a suffix that is not a label boundary included).
        for other in [
            "example.com.",
            "laptop.home.example.net.",
            "laptop.xhome.example.",
        ] {
            let m = reply(&z, &query(other, RecordType::A, false));
            assert_eq!(m.metadata.response_code, ResponseCode::Refused, "{other}");
            assert!(m.answers.is_empty());
        }
        // The apex: exists, no data.
        let m = reply(&z, &query("home.example.", RecordType::A, false));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        // A label no member name can have.
        let odd = Name::from_labels(
            [&b"a*b"[..], b"home", b"example"]
                .into_iter()
                .map(|l| hickory_proto::rr::Label::from_raw_bytes(l).unwrap()),
        )
        .unwrap();
        let mut q = Message::new(7, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(odd, RecordType::A));
        let m = reply(&z, &q.to_vec().unwrap());
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn malformed_queries_get_formerr_or_nothing() {
        let z = zone();
        // Shorter than a header: nothing.
        assert!(matches!(z.handle(&[0x12, 0x34, 0]), Decision::Ignore));
        // A response: nothing.
        let mut r = query("laptop.home.example", RecordType::A, false);
        r[2] |= 0x80;
        assert!(matches!(z.handle(&r), Decision::Ignore));
        // A header claiming a question that is not there: FORMERR.
        let q = query("laptop.home.example", RecordType::A, false);
        let m = reply(&z, &q[..14]);
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // Two questions: FORMERR.
        let mut m2 = parse(&q);
        m2.add_query(Query::query(
            Name::from_ascii("x.home.example").unwrap(),
            RecordType::A,
        ));
        let m = reply(&z, &m2.to_vec().unwrap());
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        // Another opcode: NOTIMP.
        let mut n = parse(&q);
        n.metadata.op_code = OpCode::Notify;
        let m = reply(&z, &n.to_vec().unwrap());
        assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
        // Class CH: REFUSED.
        let mut c = parse(&q);
        c.queries[0].set_query_class(DNSClass::CH);
        let m = reply(&z, &c.to_vec().unwrap());
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random bytes and every truncation of a good
        // query: the handler decides without panicking.
        let z = zone();
        let good = query("laptop.home.example", RecordType::AAAA, true);
        for n in 0..good.len() {
            let _ = z.handle(&good[..n]);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % b.len();
                b[i] = (x >> 32) as u8;
            }
            if let Decision::Lookup(p) = z.handle(&b) {
                let _ = p.answer(&Lookup::Found(vec![V4, V6]));
            }
        }
    }

    #[test]
    fn long_answers_are_truncated_to_what_the_client_takes() {
        // A long zone name: its question and MAX_ANSWERS AAAA records do
        // not fit 512 bytes.
        let long = ["a".repeat(60), "b".repeat(60), "c".repeat(60)].join(".");
        let z = Zone::new(&long).unwrap();
        let name = format!("laptop.{long}");
        let many: Vec<IpAddr> = (0..40u16)
            .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, i)))
            .collect();
        let p = lookup(&z, &query(&name, RecordType::AAAA, false));
        let r = p.answer(&Lookup::Found(many.clone()));
        assert!(r.len() <= PLAIN_UDP);
        let m = parse(&r);
        assert!(m.metadata.truncation && m.answers.is_empty());
        // With EDNS the bounded answer fits.
        let p = lookup(&z, &query(&name, RecordType::AAAA, true));
        let m = parse(&p.answer(&Lookup::Found(many)));
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), MAX_ANSWERS);
    }

    #[test]
    fn the_rate_limit_is_per_source_and_refills() {
        let mut l = RateLimit::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.77.0.9".parse().unwrap();
        let b: IpAddr = "10.77.0.10".parse().unwrap();
        let granted = (0..200).filter(|_| l.allow(t0, a)).count();
        assert_eq!(granted, BURST_PER_SOURCE as usize);
        assert!(l.allow(t0, b));
        assert!(!l.allow(t0, a));
        assert!(l.allow(t0 + Duration::from_secs(1), a));
        // Full of busy sources: a new one is dropped; once they refilled,
        // they are forgotten to make room.
        let mut l = RateLimit::default();
        for i in 0..MAX_SOURCES as u32 {
            assert!(l.allow(t0, IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))));
        }
        assert!(!l.allow(t0, a));
        assert!(l.allow(t0 + Duration::from_secs(10), a));
        assert!(l.buckets.len() <= MAX_SOURCES);
    }

    #[test]
    fn resolvectl_gets_the_link_the_address_and_a_routing_domain() {
        let [dns, domain] =
            resolvectl_commands("rl-home", "[fd77::2]:53".parse().unwrap(), "home.example");
        assert_eq!(dns, ["dns", "rl-home", "[fd77::2]:53"]);
        assert_eq!(domain, ["domain", "rl-home", "~home.example"]);
    }

    #[test]
    fn domains_are_checked() {
        assert!(check_domain("ringlan").is_ok());
        assert!(check_domain("home.example.net.").is_ok());
        for bad in ["", ".", "-a.b", "a..b", "a b", "a_b.c"] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }

    struct Table(HashMap<String, Vec<IpAddr>>);

    impl Directory for Table {
        async fn lookup(&self, name: String) -> Lookup {
            match self.0.get(&name) {
                Some(ips) => Lookup::Found(ips.clone()),
                None => Lookup::NotFound,
            }
        }
    }

    #[tokio::test]
    async fn the_server_answers_over_udp() {
        let table = Table(HashMap::from([("laptop".to_string(), vec![V4, V6])]));
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let server = DnsServer::new(addr, zone(), table);
        let stats = server.stats();
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(server.serve_on(socket, stop));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 1500];
        for (name, code, want) in [
            ("laptop.home.example", ResponseCode::NoError, vec![V4]),
            ("ghost.home.example", ResponseCode::NXDomain, vec![]),
            ("example.org", ResponseCode::Refused, vec![]),
        ] {
            client
                .send_to(&query(name, RecordType::A, false), addr)
                .await
                .unwrap();
            let (n, _) = client.recv_from(&mut buf).await.unwrap();
            let m = parse(&buf[..n]);
            assert_eq!(m.metadata.response_code, code, "{name}");
            assert_eq!(addrs(&m), want);
        }
        assert_eq!(stats.queries.load(Ordering::Relaxed), 3);
        assert_eq!(stats.answered.load(Ordering::Relaxed), 1);
        assert_eq!(stats.nxdomain.load(Ordering::Relaxed), 1);
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }
}
