//! Optional Prometheus endpoint (`metrics.listen`): `GET /metrics` over a
//! minimal HTTP/1.1 responder (one request per connection), and the
//! network's picture:
//!
//! - `GET /`: a small self-contained HTML page (`page.html`, inline CSS and
//!   JavaScript, nothing fetched from elsewhere) that draws the ring from
//!   the two endpoints below every 5 s and lists a member's links when it
//!   is clicked;
//! - `GET /topology.json`: what `ringlan topology --format json` prints;
//! - `GET /topology.svg`: what `ringlan topology --format svg` prints.
//!
//! The topology comes from the node (a directory scan, shared and reused
//! for a few seconds: `crate::scans`), asked through the same command
//! channel as the control socket's (`MetricsServer::with_commands`);
//! without it those two answer `503`.
//!
//! The metrics are the status counters: on every scrape a prometheus-client
//! [`Collector`] takes a [`Status`](crate::status::Status) snapshot and encodes it, so the numbers
//! are exactly those `ringlan status` shows. Per-peer series carry
//! `peer="<short node id>"`.
//!
//! Connections are capped and timed out ([`METRICS_LIMITS`]: 32 at once,
//! 10 s for the request head and for the response, 30 s per connection; see
//! [`crate::serve`]). Over the cap, the oldest connection still waiting for
//! its head is closed; when all are busy, the new one gets a `503` and is
//! closed. A head longer than 8 KiB closes the connection without a reply.
//! The refusals, evictions and timeouts of this endpoint and of the control
//! socket are exported as `ringlan_socket_*_total{socket="..."}`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::control::{ask_node, Command, Commands};
use crate::serve::{Conn, Limits, ServeStats, Server, METRICS_LIMITS};
use crate::status::{short_id, MembershipStatus, SessionPhase, StatusSource};

/// Longest request head accepted.
const MAX_HEAD: usize = 8192;

/// The page `GET /` serves.
pub const PAGE: &str = include_str!("page.html");

/// The reply to a connection refused because every slot is busy.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy\n";

/// The servers whose connection counters are exported, by `socket` label.
type Sockets = Vec<(&'static str, Arc<ServeStats>)>;

struct StatusCollector {
    source: Arc<dyn StatusSource>,
    sockets: Sockets,
}

impl std::fmt::Debug for StatusCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusCollector")
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(0u64);
    let mut m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Vec<(&'static str, String)>, N)>,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(0i64);
    let mut m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels.
fn gauge1(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl StatusCollector {
    fn encode_sockets(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.sockets.is_empty() {
            return Ok(());
        }
        let each = |f: fn(&ServeStats) -> u64| {
            self.sockets
                .iter()
                .map(move |(name, st)| (vec![("socket", name.to_string())], f(st)))
        };
        counter(
            enc,
            "ringlan_socket_refused",
            "Local server connections refused at once because every slot was busy",
            each(ServeStats::refused),
        )?;
        counter(
            enc,
            "ringlan_socket_evicted",
            "Local server connections closed while idle to make room for a new one",
            each(ServeStats::evicted),
        )?;
        counter(
            enc,
            "ringlan_socket_timeouts",
            "Local server connections closed by a read or write timeout or the deadline",
            each(ServeStats::timed_out),
        )
    }
}

impl Collector for StatusCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_sockets(&mut enc)?;
        let s = self.source.snapshot();
        let peer = |id: &str| vec![("peer", short_id(id).to_string())];
        gauge(
            &mut enc,
            "ringlan_info",
            "Node identity (value is always 1)",
            [(
                vec![
                    ("node_id", s.node_id.clone().unwrap_or_default()),
                    ("name", s.node_name.clone()),
                    ("network", s.network.clone()),
                    ("role", s.role.to_string()),
                ],
                1i64,
            )],
        )?;
        gauge1(
            &mut enc,
            "ringlan_uptime_seconds",
            "Seconds since the agent started",
            s.uptime_secs as i64,
        )?;
        if let MembershipStatus::Certificate {
            not_after,
            revocations_version,
            ..
        } = &s.membership
        {
            // Seconds since the epoch fit i64 until the year 292 billion.
            let left = *not_after as i64 - crate::ca::unix_now() as i64;
            gauge1(
                &mut enc,
                "ringlan_certificate_expiry_seconds",
                "Seconds until this node's certificate expires (negative once expired)",
                left,
            )?;
            gauge1(
                &mut enc,
                "ringlan_revocation_list_version",
                "Version of the newest revocation list this node holds (0: none)",
                *revocations_version as i64,
            )?;
        }
        let open = s
            .sessions
            .iter()
            .filter(|x| x.state == SessionPhase::Open)
            .count();
        gauge(
            &mut enc,
            "ringlan_sessions",
            "Sessions by state",
            [
                (vec![("state", "open".to_string())], open as i64),
                (
                    vec![("state", "other".to_string())],
                    (s.sessions.len() - open) as i64,
                ),
            ],
        )?;
        if let Some(n) = &s.neighbours {
            gauge1(
                &mut enc,
                "ringlan_neighbours",
                "Overlay neighbours",
                n.len() as i64,
            )?;
        }
        gauge(
            &mut enc,
            "ringlan_peer_rtt_seconds",
            "Smoothed round-trip time to the peer",
            s.sessions
                .iter()
                .filter_map(|x| x.rtt_ms.map(|r| (peer(&x.peer_id), r / 1000.0))),
        )?;
        gauge(
            &mut enc,
            "ringlan_peer_age_seconds",
            "Age of the session with the peer",
            s.sessions
                .iter()
                .map(|x| (peer(&x.peer_id), x.age_secs as i64)),
        )?;
        let each = |f: fn(&crate::status::SessionStatus) -> u64| {
            s.sessions
                .iter()
                .map(move |x| (peer(&x.peer_id), f(x)))
                .collect::<Vec<_>>()
        };
        counter(
            &mut enc,
            "ringlan_peer_rekeys",
            "Times the session's keys were replaced",
            each(|x| x.rekeys),
        )?;
        counter(
            &mut enc,
            "ringlan_peer_tx_frames",
            "Ethernet frames sent to the peer",
            each(|x| x.tx.frames),
        )?;
        counter(
            &mut enc,
            "ringlan_peer_tx_bytes",
            "Bytes of Ethernet frames sent to the peer",
            each(|x| x.tx.bytes),
        )?;
        counter(
            &mut enc,
            "ringlan_peer_rx_frames",
            "Ethernet frames received from the peer",
            each(|x| x.rx.frames),
        )?;
        counter(
            &mut enc,
            "ringlan_peer_rx_bytes",
            "Bytes of Ethernet frames received from the peer",
            each(|x| x.rx.bytes),
        )?;
        counter(
            &mut enc,
            "ringlan_drops",
            "Datagrams and frames dropped by the node (not per session), by reason",
            s.drops
                .iter()
                .map(|(reason, &n)| (vec![("reason", reason.clone())], n)),
        )?;
        let n = &s.arp_nd;
        for (name, help, v) in [
            (
                "ringlan_arp_answered_locally",
                "ARP requests from the TAP answered by the node from the member directory",
                n.arp_answered_locally,
            ),
            (
                "ringlan_arp_flooded",
                "ARP requests from the TAP flooded to the network (address not in the directory)",
                n.arp_flooded,
            ),
            (
                "ringlan_nd_answered_locally",
                "IPv6 neighbour solicitations from the TAP answered by the node from the member directory",
                n.nd_answered_locally,
            ),
            (
                "ringlan_nd_flooded",
                "IPv6 neighbour solicitations from the TAP flooded to the network",
                n.nd_flooded,
            ),
        ] {
            counter(&mut enc, name, help, [(Vec::new(), v)])?;
        }
        let relayed = s
            .sessions
            .iter()
            .filter(|x| matches!(x.path, crate::status::PathKind::Relayed { .. }))
            .count();
        gauge1(
            &mut enc,
            "ringlan_relayed_sessions",
            "Open sessions carried by relays (no direct path)",
            relayed as i64,
        )?;
        if let Some(r) = &s.relay {
            gauge1(
                &mut enc,
                "ringlan_relay_routes",
                "Routes this node relays for other members",
                r.routes.len() as i64,
            )?;
            let sum = |f: fn(&crate::status::CarriedRoute) -> u64| -> u64 {
                r.routes.iter().map(f).sum()
            };
            // A gauge: routes come and go, and their counters with them.
            gauge(
                &mut enc,
                "ringlan_relay_route_bytes",
                "Bytes forwarded so far on the routes this node relays now, by direction",
                [
                    (
                        vec![("direction", "forward".to_string())],
                        sum(|c| c.forward.bytes) as i64,
                    ),
                    (
                        vec![("direction", "back".to_string())],
                        sum(|c| c.back.bytes) as i64,
                    ),
                ],
            )?;
        }
        counter(
            &mut enc,
            "ringlan_peer_drops",
            "Frames dropped on the session, by reason",
            s.sessions.iter().flat_map(|x| {
                x.drops.iter().map(|(reason, &n)| {
                    (
                        vec![
                            ("peer", short_id(&x.peer_id).to_string()),
                            ("reason", reason.clone()),
                        ],
                        n,
                    )
                })
            }),
        )?;
        Ok(())
    }
}

/// Renders the OpenMetrics text for `source`'s current snapshot.
pub fn render(source: Arc<dyn StatusSource>) -> String {
    render_with(source, Vec::new())
}

/// [`render`] plus the connection counters of `sockets`.
fn render_with(source: Arc<dyn StatusSource>, sockets: Sockets) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(StatusCollector { source, sockets }));
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in
    // our collector and yields a truncated page rather than a panic.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        tracing::error!("encoding metrics: {e}");
    }
    out
}

/// The bound metrics endpoint.
pub struct MetricsServer {
    listener: TcpListener,
    server: Server,
    /// Other servers whose counters are exported besides our own.
    others: Sockets,
    /// Where topology requests go (the node's command channel).
    commands: Option<Commands>,
}

impl MetricsServer {
    pub async fn bind(addr: SocketAddr, source: Arc<dyn StatusSource>) -> io::Result<Self> {
        Ok(MetricsServer {
            listener: TcpListener::bind(addr).await?,
            server: Server::new("metrics", METRICS_LIMITS, BUSY, source),
            others: Vec::new(),
            commands: None,
        })
    }

    /// Replaces [`METRICS_LIMITS`] (tests use short timeouts).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.server.limits = limits;
        self
    }

    /// Also exports `stats` (e.g. [`ControlServer::stats`](crate::control::ControlServer::stats))
    /// with label `socket="<name>"`.
    pub fn report(mut self, name: &'static str, stats: Arc<ServeStats>) -> Self {
        self.others.push((name, stats));
        self
    }

    /// Sends topology requests (`/topology.json`, `/topology.svg`) to
    /// `commands`; without it they are answered `503`.
    pub fn with_commands(mut self, commands: Commands) -> Self {
        self.commands = Some(commands);
        self
    }

    /// Refused, evicted and timed-out connections of this endpoint.
    pub fn stats(&self) -> Arc<ServeStats> {
        self.server.stats.clone()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true.
    pub async fn serve(self, shutdown: watch::Receiver<bool>) {
        let mut sockets = self.others;
        sockets.push(("metrics", self.server.stats.clone()));
        let sockets: Arc<Sockets> = Arc::new(sockets);
        let commands = self.commands;
        let serve_one = move |stream, conn| handle(stream, conn, sockets.clone(), commands.clone());
        crate::serve::accept_loop(&self.listener, self.server, shutdown, serve_one).await
    }
}

async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof in request head",
            ));
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// A response: status line, content type, body.
type Answer = (&'static str, &'static str, String);

/// The topology from the node, rendered by `render`.
async fn topology(
    commands: Option<&Commands>,
    ctype: &'static str,
    render: fn(&ringlan_node::topology::Topology) -> String,
) -> Answer {
    match ask_node(commands, |reply| Command::Topology { reply }).await {
        Ok(t) => ("200 OK", ctype, render(&t)),
        Err(e) => (
            "503 Service Unavailable",
            "text/plain; charset=utf-8",
            format!("{e}\n"),
        ),
    }
}

async fn handle(
    mut stream: TcpStream,
    conn: Conn,
    sockets: Arc<Sockets>,
    commands: Option<Commands>,
) -> io::Result<()> {
    let head = conn.read_request(read_head(&mut stream)).await?;
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body): Answer = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render_with(conn.source().clone(), sockets.to_vec()),
        ),
        ("GET", "/") => ("200 OK", "text/html; charset=utf-8", PAGE.to_string()),
        ("GET", "/topology.json") => {
            topology(commands.as_ref(), "application/json", |t| {
                serde_json::to_string(t).unwrap_or_default()
            })
            .await
        }
        ("GET", "/topology.svg") => {
            topology(
                commands.as_ref(),
                "image/svg+xml",
                ringlan_node::topology::svg::render,
            )
            .await
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    // The page runs only its own inline script and talks only to us.
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_response(async {
        stream.write_all(resp.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::testing::closes_silently_after;
    use crate::serve::Limits;
    use crate::status::StatusBoard;
    use std::time::{Duration, Instant};

    async fn get(addr: SocketAddr, req: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_status_counters() {
        let board = Arc::new(StatusBoard::new(crate::status::example()));
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), board)
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(server.serve(rx));

        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let len: usize = r
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        for want in [
            "# TYPE ringlan_peer_tx_frames counter",
            "ringlan_peer_tx_frames_total{peer=\"89abcdef\"} 1200",
            "ringlan_peer_rx_bytes_total{peer=\"89abcdef\"} 830",
            "ringlan_peer_drops_total{peer=\"fedcba98\",reason=\"no-route\"} 2",
            "ringlan_drops_total{reason=\"udp_not_member\"} 3",
            "ringlan_relayed_sessions 1",
            "ringlan_relay_routes 1",
            "ringlan_relay_route_bytes{direction=\"forward\"} 1400000",
            "ringlan_peer_rtt_seconds{peer=\"89abcdef\"} 0.00074",
            "ringlan_sessions{state=\"open\"} 1",
            "ringlan_neighbours 2",
            "ringlan_uptime_seconds ",
            "ringlan_info{node_id=\"0123456789abcdef0123456789abcdef\",name=\"laptop\",network=\"home\",role=\"node\"} 1",
            "# EOF",
        ] {
            assert!(body.contains(want), "missing `{want}` in\n{body}");
        }

        // The example's certificate and list (network CA mode).
        assert!(
            body.contains("ringlan_revocation_list_version 3\n"),
            "{body}"
        );
        let left: i64 = body
            .lines()
            .find_map(|l| l.strip_prefix("ringlan_certificate_expiry_seconds "))
            .expect("certificate expiry")
            .parse()
            .unwrap();
        let want = 1_827_850_800 - crate::ca::unix_now() as i64;
        assert!((want - 5..=want).contains(&left), "{left} vs {want}");

        let r = get(addr, "GET /nothing HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        // No command channel: the page is there, the topology is not.
        let r = get(addr, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        let r = get(addr, "GET /topology.json HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        let r = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405"), "{r}");

        tx.send(true).unwrap();
        task.await.unwrap();
    }

    async fn start(
        limits: Limits,
        control: Arc<ServeStats>,
    ) -> (SocketAddr, Arc<ServeStats>, watch::Sender<bool>) {
        let board = Arc::new(StatusBoard::new(crate::status::example()));
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), board)
            .await
            .unwrap()
            .with_limits(limits)
            .report("control", control);
        let addr = server.local_addr().unwrap();
        let stats = server.stats();
        let (tx, rx) = watch::channel(false);
        tokio::spawn(server.serve(rx));
        (addr, stats, tx)
    }

    #[tokio::test]
    async fn serves_the_page_and_the_topology_from_the_node() {
        let board = Arc::new(StatusBoard::new(crate::status::example()));
        let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel(4);
        let node = tokio::spawn(async move {
            let mut asked = 0;
            while let Some(Command::Topology { reply }) = cmd_rx.recv().await {
                asked += 1;
                let _ = reply.send(ringlan_node::topology::example());
            }
            asked
        });
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), board)
            .await
            .unwrap()
            .with_commands(cmd_tx);
        let addr = server.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(server.serve(rx));
        let split = |r: &str| {
            let (head, body) = r.split_once("\r\n\r\n").unwrap();
            (head.to_string(), body.to_string())
        };
        let (head, body) = split(&get(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Type: text/html; charset=utf-8"));
        assert!(head.contains("Content-Security-Policy: default-src 'none'"));
        assert_eq!(body, PAGE);
        // Self-contained: nothing loaded from another origin.
        for outside in ["http://", "https://", "src=", "href=", "@import"] {
            assert!(!PAGE.contains(outside), "the page refers to {outside}");
        }
        for fetched in ["/topology.json", "/topology.svg"] {
            assert!(PAGE.contains(fetched), "the page fetches {fetched}");
        }
        let (head, body) = split(&get(addr, "GET /topology.json HTTP/1.1\r\n\r\n").await);
        assert!(head.contains("Content-Type: application/json"), "{head}");
        let t: ringlan_node::topology::Topology = serde_json::from_str(&body).unwrap();
        assert_eq!(t, ringlan_node::topology::example());
        let (head, body) = split(&get(addr, "GET /topology.svg?t=1 HTTP/1.1\r\n\r\n").await);
        assert!(head.contains("Content-Type: image/svg+xml"), "{head}");
        assert_eq!(body, ringlan_node::topology::svg::render(&t));
        tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(node.await.unwrap(), 2);
    }

    #[test]
    fn no_certificate_metrics_without_a_ca() {
        let shared = crate::status::Status {
            membership: MembershipStatus::SharedSecret,
            ..crate::status::example()
        };
        let body = render(Arc::new(StatusBoard::new(shared)));
        assert!(body.contains("ringlan_uptime_seconds"), "{body}");
        assert!(
            !body.contains("ringlan_certificate_expiry_seconds"),
            "{body}"
        );
        assert!(!body.contains("ringlan_revocation_list_version"), "{body}");
    }

    #[test]
    fn busy_reply_is_a_complete_503() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    #[tokio::test]
    async fn idle_connections_over_the_cap_do_not_block_a_scrape() {
        let (addr, stats, _tx) = start(METRICS_LIMITS, Arc::default()).await;
        let mut idle = Vec::new();
        for _ in 0..100 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let t0 = Instant::now();
        let r = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(t0.elapsed() < METRICS_LIMITS.read_timeout);
        // 100 + 1 connections for 32 slots.
        assert_eq!(stats.evicted(), 69);
        assert!(
            r.contains("ringlan_socket_evicted_total{socket=\"metrics\"} 69\n"),
            "{r}"
        );
        for s in &mut idle[..69] {
            closes_silently_after(s, Duration::ZERO).await;
        }
    }

    #[tokio::test]
    async fn trickled_head_times_out_and_is_counted() {
        let limits = Limits {
            read_timeout: Duration::from_millis(300),
            ..METRICS_LIMITS
        };
        let control = Arc::new(ServeStats::default());
        let (addr, stats, _tx) = start(limits, control).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        closes_silently_after(&mut silent, limits.read_timeout).await;

        // One byte every 100 ms: each read is quick, the head is not.
        let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
        let trickle = tokio::spawn(async move {
            for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".iter().cycle() {
                if w.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        closes_silently_after(&mut r, limits.read_timeout).await;
        trickle.abort();
        assert_eq!(stats.timed_out(), 2);

        let r = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        for want in [
            "# TYPE ringlan_socket_timeouts counter",
            "ringlan_socket_timeouts_total{socket=\"metrics\"} 2\n",
            "ringlan_socket_timeouts_total{socket=\"control\"} 0\n",
            "ringlan_socket_refused_total{socket=\"metrics\"} 0\n",
            "ringlan_socket_evicted_total{socket=\"control\"} 0\n",
        ] {
            assert!(r.contains(want), "missing `{want}` in\n{r}");
        }
    }

    #[tokio::test]
    async fn oversized_head_is_refused() {
        let (addr, stats, _tx) = start(METRICS_LIMITS, Arc::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = b"GET /metrics HTTP/1.1\r\n".to_vec();
        req.extend(std::iter::repeat_n(b'x', MAX_HEAD + 100));
        // The server may close (and reset) before it has read it all.
        let _ = s.write_all(&req).await;
        closes_silently_after(&mut s, Duration::ZERO).await;
        assert_eq!(stats.timed_out(), 0);
    }
}
