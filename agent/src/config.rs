//! The network config file (one YAML file per network; see `docs/design.md`,
//! "Config").
//!
//! Loading happens in two steps so that the examples in `configs/` can be
//! validated on any machine:
//!
//! 1. [`Config::parse`] / [`Config::load`]: YAML syntax, the schema (unknown
//!    keys are rejected everywhere) and every value (names, ranges, CIDRs,
//!    MAC, `host:port`). No file other than the config itself is touched and
//!    no DNS lookup is made.
//! 2. [`Config::check_files`]: the network secret file exists, is private
//!    (nothing for others, no group write; group read is how the service
//!    user reads it) and well formed; an existing key file
//!    is private and well formed; with `network.ca`, the CA key and the
//!    node's certificate are read and checked against each other, the
//!    network and the node's key ([`Config::membership`]).
//!
//! Every error names `file:line:column`, the key path and what was expected,
//! e.g. `/etc/ringlan/home.yaml:7:9: interface.mtu: 70000 is out of range,
//! expected 576-9000`. Values are deserialized as [`Spanned`] so semantic
//! errors point at the offending value, not just at the file.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use ringlan_node::membership::{hex, CaKey, MacPolicy, NodeCert, Rejected};
use ringlan_tunnel::crypto::NetworkName;

use crate::credentials;
use crate::identity::{self, IdentityError};
pub use crate::sched::Realtime;
use crate::tap::{derive_mac, format_mac};

/// Default UDP port of the RTMFP endpoint.
pub const DEFAULT_PORT: u16 = 4910;
/// Default TAP MTU.
pub const DEFAULT_MTU: u16 = 1400;
/// Smallest and largest accepted TAP MTU.
pub const MTU_RANGE: (u16, u16) = (576, 9000);
/// Default session keepalive: short enough to hold NAT mappings (UDP
/// conntrack entries commonly last 30 s).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(25);
/// Smallest and largest accepted keepalive, in seconds.
pub const KEEPALIVE_RANGE: (u64, u64) = (1, 300);
/// Default time between session rekeys (fresh X25519, docs/crypto-profile.md
/// 6.3), as WireGuard.
pub const DEFAULT_REKEY_INTERVAL: Duration = Duration::from_secs(120);
/// Smallest and largest accepted rekey interval, in seconds: longer would
/// keep keys past what forward secrecy is for; shorter is for tests and
/// the cautious.
pub const REKEY_INTERVAL_RANGE: (u64, u64) = (2, 120);

/// A config error, rendered as `file:line:column: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line and column of the offending value; 0 when unknown
    /// (e.g. the file cannot be read).
    pub line: u32,
    pub column: u32,
    /// Dotted key path (`interface.mtu`, `introducers[1]`), when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Whether the per-packet work that needs no protocol state leaves the
/// node's thread (`io_threads`; docs/dataplane.md "More than one core"):
/// datagrams encrypted and sent by a send thread, frames written to the
/// TAP by a TAP write thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoThreads {
    /// On for machines with at least [`IoThreads::AUTO_MIN_CORES`] cores:
    /// on fewer, the agent's threads share the cores with the programs
    /// whose traffic they carry, and the hand-offs cost more than they
    /// free.
    Auto,
    On,
    Off,
}

impl IoThreads {
    pub const AUTO_MIN_CORES: usize = 4;

    /// Whether to start the helper threads on a machine with `cores` cores.
    pub fn enabled(self, cores: usize) -> bool {
        match self {
            IoThreads::Auto => cores >= Self::AUTO_MIN_CORES,
            IoThreads::On => true,
            IoThreads::Off => false,
        }
    }
}

/// Node role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Node,
    Introducer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Introducer => "introducer",
        }
    }
}

/// Log level (`log.level`); `RUST_LOG` overrides it at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// An interface address with its prefix length, e.g. `10.77.0.2/24` or
/// `fd77::2/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected an address with prefix length such as 10.77.0.2/24 or fd77::2/64";
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` has no prefix length, {expected}"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address, {expected}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| format!("`{p}` is not a valid prefix length, expected 0-{max}"))?;
        Ok(IpCidr { addr, prefix })
    }
}

/// The TAP MAC address setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacSetting {
    /// Stable, derived from the node key (see [`crate::tap::derive_mac`]).
    Auto,
    Fixed([u8; 6]),
}

/// Parses `aa:bb:cc:dd:ee:ff` and requires a unicast, non-zero address.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let expected = "expected `auto` or a unicast MAC address such as 02:00:00:aa:bb:cc";
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in mac.iter_mut() {
        let part = parts.next().unwrap_or("");
        if part.len() != 2 {
            return Err(format!("`{s}` is not a MAC address, {expected}"));
        }
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| format!("`{s}` is not a MAC address, {expected}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("`{s}` is not a MAC address, {expected}"));
    }
    if mac[0] & 1 != 0 {
        return Err(format!("`{s}` is a multicast address, {expected}"));
    }
    if mac == [0; 6] {
        return Err(format!("`{s}` is the zero address, {expected}"));
    }
    Ok(mac)
}

/// A `host:port` endpoint. Names are only checked for syntax here; they are
/// resolved when the agent starts, never during validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.port),
            Host::Ip(a) => write!(f, "{a}:{}", self.port),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

impl HostPort {
    /// Resolves the endpoint (DNS for names) to socket addresses.
    pub async fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        match &self.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(n) => Ok(tokio::net::lookup_host((n.as_str(), self.port))
                .await?
                .collect()),
        }
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected host:port such as 198.51.100.7:4910, [2001:db8::7]:4910 or intro.example.net:4910";
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest
                .split_once("]:")
                .ok_or_else(|| format!("`{s}` is not host:port, {expected}"))?;
            let ip: std::net::Ipv6Addr = h
                .parse()
                .map_err(|_| format!("`{h}` is not an IPv6 address, {expected}"))?;
            (Host::Ip(IpAddr::V6(ip)), p)
        } else {
            let (h, p) = s
                .rsplit_once(':')
                .ok_or_else(|| format!("`{s}` has no port, {expected}"))?;
            if h.contains(':') {
                return Err(format!(
                    "`{s}`: IPv6 addresses must be in brackets, {expected}"
                ));
            }
            let host = match h.parse::<Ipv4Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V4(ip)),
                Err(_) if is_dns_name(h) => Host::Name(h.to_string()),
                Err(_) => return Err(format!("`{h}` is not a host name or address, {expected}")),
            };
            (host, p)
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("`{port}` is not a valid port, expected 1-65535"))?;
        Ok(HostPort { host, port })
    }
}

/// RFC 1123 host name syntax: dot-separated labels of 1-63 letters, digits
/// and hyphens, not starting or ending with a hyphen; 253 chars at most; the
/// last label is not all digits (that would be a malformed IPv4 address).
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let labels_ok = s.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let last_numeric = s
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !last_numeric
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config was read from.
    pub file: PathBuf,
    pub network: NetworkConfig,
    pub node: NodeConfig,
    pub interface: InterfaceConfig,
    pub listen: ListenConfig,
    /// Introducers (plain `host:port` entries of `introducers`).
    pub introducers: Vec<HostPort>,
    /// `tcp://host:port` entries of `introducers`: where the TCP fallback
    /// connects (docs/tcp.md); without one it tries each introducer's UDP
    /// port number over TCP.
    pub tcp_introducers: Vec<HostPort>,
    pub stun_servers: Vec<HostPort>,
    /// Session keepalive interval (`keepalive: 25s`); holds NAT mappings.
    pub keepalive: Duration,
    /// Time between session rekeys (`rekey_interval: 2m`).
    pub rekey_interval: Duration,
    pub role: Role,
    /// I/O helper threads (`io_threads: auto | true | false`).
    pub io_threads: IoThreads,
    /// Real-time scheduling of the node's thread (`realtime: auto | true
    /// | false`; `crate::sched`).
    pub realtime: Realtime,
    /// Carrying relayed flow routes for other members (`relay:`).
    pub relay: RelayConfig,
    pub control: ControlConfig,
    pub metrics: Option<MetricsConfig>,
    /// The DNS responder for member names (`dns:`), off when absent.
    pub dns: Option<DnsConfig>,
    pub log: LogConfig,
    /// Where the values [`Config::check_files`] and [`Config::membership`]
    /// check against files sit in the config, for their errors.
    at: FileChecks,
}

/// Positions (line, column; 0 when the key is absent) of the values checked
/// in step 2.
#[derive(Debug, Clone, Copy, Default)]
struct FileChecks {
    secret: (u32, u32),
    key: (u32, u32),
    ca: (u32, u32),
    certificate: (u32, u32),
    mac: (u32, u32),
    bridge: (u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub name: String,
    pub secret_file: PathBuf,
    /// `network.ca`: the file with the network CA's public key. Set, only
    /// nodes with a certificate from this CA are admitted.
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    pub key_file: PathBuf,
    /// `node.certificate_file`: this node's certificate (required with
    /// `network.ca`, unused without).
    pub certificate_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub mtu: u16,
    pub mac: MacSetting,
    pub addresses: Vec<IpCidr>,
    /// `interface.bridge`: the TAP is bridged to a site, so frames may carry
    /// source MACs other than the TAP's (with a CA, only when the
    /// certificate allows any MAC).
    pub bridge: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// Bind address (default `::`: one dual-stack socket for IPv4 and
    /// IPv6; the runtime falls back to `0.0.0.0` on a host without IPv6;
    /// docs/underlay.md).
    pub address: IpAddr,
    /// UDP port; 0 = ephemeral.
    pub port: u16,
    /// Also accept TCP streams on the same port number (`listen.tcp`;
    /// default: true for an introducer, false for a node): members whose
    /// network blocks UDP carry their datagrams on them (docs/tcp.md).
    pub tcp: bool,
    /// Introducers: the second port on which they answer STUN (RFC 5780
    /// OTHER-ADDRESS), so a node learns its NAT's mapping from one
    /// introducer; default `port` + 1 (off when `port` is 0 or 65535);
    /// 0 = off. Ignored by ordinary nodes.
    pub stun_alt_port: u16,
}

impl ListenConfig {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// `relay: {enabled, max_routes, max_mbps, max_total_mbps}`: whether this
/// node carries relayed routes for other members, and its limits. An
/// introducer relays by default, an ordinary node only when enabled.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    pub enabled: bool,
    /// Routes carried at once.
    pub max_routes: usize,
    /// Bandwidth per route and direction in Mbit/s (0: unlimited).
    pub max_mbps: f64,
    /// Bandwidth over all carried routes in Mbit/s (0: unlimited).
    pub max_total_mbps: f64,
}

/// Default `relay.max_routes`.
pub use ringlan_tunnel::DEFAULT_RELAY_ROUTES;
/// Default `relay.max_mbps` and `relay.max_total_mbps`.
pub use ringlan_tunnel::{DEFAULT_RELAY_MBPS, DEFAULT_RELAY_TOTAL_MBPS};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    pub socket: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// `dns: {listen, domain}`: answer `A`/`AAAA` queries for
/// `NAME.DOMAIN` from the member directory on `listen` (UDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub listen: SocketAddr,
    /// Lower case, without a trailing dot.
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub level: LogLevel,
}

// ---- the schema, as written in YAML -------------------------------------

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    network: S<RawNetwork>,
    #[serde(default)]
    node: Option<S<RawNode>>,
    interface: S<RawInterface>,
    #[serde(default)]
    listen: Option<S<RawListen>>,
    #[serde(default)]
    introducers: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    stun_servers: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    keepalive: Option<S<RawDuration>>,
    #[serde(default)]
    rekey_interval: Option<S<RawDuration>>,
    #[serde(default)]
    role: Option<S<String>>,
    #[serde(default)]
    io_threads: Option<S<RawAutoFlag>>,
    #[serde(default)]
    realtime: Option<S<RawAutoFlag>>,
    #[serde(default)]
    relay: Option<S<RawRelay>>,
    #[serde(default)]
    control: Option<S<RawControl>>,
    #[serde(default)]
    metrics: Option<S<RawMetrics>>,
    #[serde(default)]
    dns: Option<S<RawDns>>,
    #[serde(default)]
    log: Option<S<RawLog>>,
}

/// `auto`, `true` or `false`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAutoFlag {
    Flag(bool),
    /// Not allowed (a count of threads), parsed for a clear error.
    Number(i64),
    Text(String),
}

/// `25s`, `1m`, `1500ms` or a plain number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Secs(i64),
    Text(String),
}

/// Parse a duration written as `25s`, `2m`, `1500ms` or `25`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration, expected e.g. 25s, 2m or 1500ms"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{s}` is too long")),
        _ => Err(format!(
            "`{s}` is not a duration, expected e.g. 25s, 2m or 1500ms"
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: S<String>,
    secret_file: S<String>,
    #[serde(default)]
    ca: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    #[serde(default)]
    name: Option<S<String>>,
    #[serde(default)]
    key_file: Option<S<String>>,
    #[serde(default)]
    certificate_file: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: S<String>,
    #[serde(default)]
    mtu: Option<S<i64>>,
    #[serde(default)]
    mac: Option<S<String>>,
    #[serde(default)]
    addresses: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    bridge: Option<S<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    #[serde(default)]
    address: Option<S<String>>,
    #[serde(default)]
    port: Option<S<i64>>,
    #[serde(default)]
    tcp: Option<S<bool>>,
    stun_alt_port: Option<S<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    #[serde(default)]
    enabled: Option<S<bool>>,
    #[serde(default)]
    max_routes: Option<S<i64>>,
    #[serde(default)]
    max_mbps: Option<S<f64>>,
    #[serde(default)]
    max_total_mbps: Option<S<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    listen: S<String>,
    domain: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: S<String>,
}

// ---- validation ----------------------------------------------------------

struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    /// A duration (`25s`, `2m`, `1500ms`, or a bare number of seconds)
    /// within `(lo, hi)` seconds.
    fn duration_in(
        &self,
        v: &S<RawDuration>,
        key: &str,
        (lo, hi): (u64, u64),
    ) -> Result<Duration, ConfigError> {
        let d = match &v.value {
            RawDuration::Secs(n) => u64::try_from(*n)
                .map(Duration::from_secs)
                .map_err(|_| format!("{n} is negative")),
            RawDuration::Text(t) => parse_duration(t),
        }
        .map_err(|m| self.err(&v.referenced, key, m))?;
        if d < Duration::from_secs(lo) || d > Duration::from_secs(hi) {
            return Err(self.err(
                &v.referenced,
                key,
                format!("{d:?} is out of range, expected {lo}s-{hi}s"),
            ));
        }
        Ok(d)
    }

    fn err(&self, at: &Location, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: at.line() as u32,
            column: at.column() as u32,
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

fn check_path(cx: &Ctx, v: &S<String>, key: &str) -> Result<PathBuf, ConfigError> {
    let p = Path::new(&v.value);
    if !p.is_absolute() {
        return Err(cx.err(
            &v.referenced,
            key,
            format!(
                "`{}` is not an absolute path, expected a path such as /etc/ringlan/...",
                v.value
            ),
        ));
    }
    Ok(p.to_path_buf())
}

/// Network name: 1-32 chars of `[a-z0-9-]`.
pub fn check_network_name(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 32
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "`{s}` is not a valid network name, expected 1-32 characters of a-z, 0-9 and -"
        ));
    }
    Ok(())
}

/// Node name: 1-63 chars of `[A-Za-z0-9._-]` (a host name fits).
pub fn check_node_name(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 63
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "`{s}` is not a valid node name, expected 1-63 characters of A-Z, a-z, 0-9, ., _ and -"
        ));
    }
    Ok(())
}

/// Interface name: 1-15 chars (the kernel's IFNAMSIZ - 1) of
/// `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_interface_name(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 15
        || s == "."
        || s == ".."
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "`{s}` is not a valid interface name, expected 1-15 characters of A-Z, a-z, 0-9, ., _ and -"
        ));
    }
    Ok(())
}

/// The host name of this UTS namespace (what gethostname(2) returns),
/// read without FFI from procfs.
fn hostname() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = raw.trim();
    // Only the first label: `laptop.example.net` -> `laptop`.
    let first = name.split('.').next().unwrap_or(name);
    (!first.is_empty()).then(|| first.to_string())
}

impl Config {
    /// Reads and validates `file` (step 1; see the module docs).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            key: None,
            message: format!("cannot read config file: {e}"),
        })?;
        Config::parse(&text, file)
    }

    /// Reads and validates `file`, then checks the secret and key files
    /// (steps 1 and 2). This is what `ringlan check-config` and `ringlan up`
    /// run.
    pub fn load_and_check(file: &Path) -> Result<Config, ConfigError> {
        let c = Config::load(file)?;
        c.check_files()?;
        Ok(c)
    }

    /// Parses and validates YAML `text`; `file` is used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let cx = Ctx { file };
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
            let inner = e.without_snippet();
            let message = serde_saphyr::MessageFormatter::format_message(
                &serde_saphyr::DefaultMessageFormatter,
                inner,
            )
            .escape_debug()
            .to_string();
            let (line, column) = inner
                .location()
                .map(|l| (l.line() as u32, l.column() as u32))
                .unwrap_or((0, 0));
            ConfigError {
                file: file.to_path_buf(),
                line,
                column,
                key: None,
                message,
            }
        })?;
        Config::validate(&cx, raw)
    }

    fn validate(cx: &Ctx, raw: RawConfig) -> Result<Config, ConfigError> {
        // network
        let net = &raw.network.value;
        check_network_name(&net.name.value)
            .map_err(|m| cx.err(&net.name.referenced, "network.name", m))?;
        let secret_file = check_path(cx, &net.secret_file, "network.secret_file")?;
        let ca = net
            .ca
            .as_ref()
            .map(|v| check_path(cx, v, "network.ca"))
            .transpose()?;
        let network = NetworkConfig {
            name: net.name.value.clone(),
            secret_file,
            ca,
        };
        let mut at = FileChecks {
            secret: loc(&net.secret_file.referenced),
            ca: net.ca.as_ref().map_or((0, 0), |v| loc(&v.referenced)),
            ..FileChecks::default()
        };

        // node
        let raw_node = raw.node.as_ref().map(|n| &n.value);
        let name = match raw_node.and_then(|n| n.name.as_ref()) {
            Some(v) => {
                check_node_name(&v.value).map_err(|m| cx.err(&v.referenced, "node.name", m))?;
                v.value.clone()
            }
            None => {
                let at = raw
                    .node
                    .as_ref()
                    .map(|n| n.referenced)
                    .unwrap_or(raw.network.referenced);
                let h = hostname().ok_or_else(|| {
                    cx.err(
                        &at,
                        "node.name",
                        "not set and the host name is unknown, expected a node name",
                    )
                })?;
                check_node_name(&h).map_err(|m| {
                    cx.err(&at, "node.name", format!("not set, and the host name: {m}"))
                })?;
                h
            }
        };
        let key_file = match raw_node.and_then(|n| n.key_file.as_ref()) {
            Some(v) => {
                at.key = loc(&v.referenced);
                check_path(cx, v, "node.key_file")?
            }
            None => PathBuf::from(format!("/var/lib/ringlan/{}.key", network.name)),
        };
        let certificate_file = match raw_node.and_then(|n| n.certificate_file.as_ref()) {
            Some(v) => {
                at.certificate = loc(&v.referenced);
                Some(check_path(cx, v, "node.certificate_file")?)
            }
            None => None,
        };
        if let (Some(ca), None) = (&net.ca, &certificate_file) {
            return Err(cx.err(
                &ca.referenced,
                "network.ca",
                "set, but node.certificate_file is not: with a CA every node needs a \
                 certificate (`ringlan ca sign`)",
            ));
        }
        let node = NodeConfig {
            name,
            key_file,
            certificate_file,
        };

        // interface
        let i = &raw.interface.value;
        check_interface_name(&i.name.value)
            .map_err(|m| cx.err(&i.name.referenced, "interface.name", m))?;
        let mtu = match &i.mtu {
            Some(v) => {
                let (lo, hi) = MTU_RANGE;
                if v.value < i64::from(lo) || v.value > i64::from(hi) {
                    return Err(cx.err(
                        &v.referenced,
                        "interface.mtu",
                        format!("{} is out of range, expected {lo}-{hi}", v.value),
                    ));
                }
                v.value as u16
            }
            None => DEFAULT_MTU,
        };
        if let Some(v) = &i.mac {
            at.mac = loc(&v.referenced);
        }
        let mac = match &i.mac {
            None => MacSetting::Auto,
            Some(v) if v.value == "auto" => MacSetting::Auto,
            Some(v) => MacSetting::Fixed(
                parse_mac(&v.value).map_err(|m| cx.err(&v.referenced, "interface.mac", m))?,
            ),
        };
        let mut addresses = Vec::new();
        if let Some(list) = &i.addresses {
            for (n, a) in list.value.iter().enumerate() {
                let key = format!("interface.addresses[{n}]");
                addresses.push(
                    a.value
                        .parse::<IpCidr>()
                        .map_err(|m| cx.err(&a.referenced, &key, m))?,
                );
            }
        }
        if let Some(v) = &i.bridge {
            at.bridge = loc(&v.referenced);
        }
        let interface = InterfaceConfig {
            name: i.name.value.clone(),
            mtu,
            mac,
            addresses,
            bridge: i.bridge.as_ref().is_some_and(|v| v.value),
        };

        // listen
        let mut listen = ListenConfig {
            address: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            port: DEFAULT_PORT,
            tcp: false,
            stun_alt_port: 0,
        };
        let mut stun_alt_port = None;
        if let Some(l) = &raw.listen {
            if let Some(a) = &l.value.address {
                listen.address = a.value.parse().map_err(|_| {
                    cx.err(
                        &a.referenced,
                        "listen.address",
                        format!(
                            "`{}` is not an IP address, expected e.g. 0.0.0.0, :: or 192.0.2.1",
                            a.value
                        ),
                    )
                })?;
            }
            if let Some(p) = &l.value.port {
                listen.port = u16::try_from(p.value).map_err(|_| {
                    cx.err(
                        &p.referenced,
                        "listen.port",
                        format!("{} is out of range, expected 0-65535", p.value),
                    )
                })?;
            }
            if let Some(p) = &l.value.stun_alt_port {
                let port = u16::try_from(p.value)
                    .ok()
                    .filter(|&a| a == 0 || a != listen.port);
                stun_alt_port = Some(port.ok_or_else(|| {
                    cx.err(
                        &p.referenced,
                        "listen.stun_alt_port",
                        format!(
                            "{} is not a free second port, expected 0 (off) or 1-65535 other than listen.port",
                            p.value
                        ),
                    )
                })?);
            }
        }
        listen.stun_alt_port = stun_alt_port.unwrap_or(match listen.port {
            0 | u16::MAX => 0,
            p => p + 1,
        });

        // role
        let role = match &raw.role {
            None => Role::Node,
            Some(v) => match v.value.as_str() {
                "node" => Role::Node,
                "introducer" => Role::Introducer,
                other => {
                    return Err(cx.err(
                        &v.referenced,
                        "role",
                        format!("`{other}` is not a role, expected node or introducer"),
                    ))
                }
            },
        };

        // io_threads, realtime: auto (None), true or false
        let auto_flag = |v: &Option<S<RawAutoFlag>>, key: &str| match v.as_ref() {
            None => Ok(None),
            Some(v) => match &v.value {
                RawAutoFlag::Flag(b) => Ok(Some(*b)),
                RawAutoFlag::Text(t) if t == "auto" => Ok(None),
                other => {
                    let shown = match other {
                        RawAutoFlag::Number(n) => n.to_string(),
                        RawAutoFlag::Text(t) => t.clone(),
                        RawAutoFlag::Flag(b) => b.to_string(),
                    };
                    Err(cx.err(
                        &v.referenced,
                        key,
                        format!("`{shown}` is not allowed, expected auto, true or false"),
                    ))
                }
            },
        };
        let io_threads = match auto_flag(&raw.io_threads, "io_threads")? {
            None => IoThreads::Auto,
            Some(true) => IoThreads::On,
            Some(false) => IoThreads::Off,
        };
        let realtime = match auto_flag(&raw.realtime, "realtime")? {
            None => Realtime::Auto,
            Some(true) => Realtime::On,
            Some(false) => Realtime::Off,
        };

        // listen.tcp: an introducer accepts TCP streams unless told not to
        listen.tcp = raw
            .listen
            .as_ref()
            .and_then(|l| l.value.tcp.as_ref())
            .map_or(role == Role::Introducer, |t| t.value);

        // introducers (`tcp://` entries apart), stun_servers
        let host_ports = |list: &Option<S<Vec<S<String>>>>, key: &str, tcp: bool| {
            let mut out = Vec::new();
            if let Some(list) = list {
                for (n, v) in list.value.iter().enumerate() {
                    let key = format!("{key}[{n}]");
                    let (is_tcp, text) = match v.value.strip_prefix("tcp://") {
                        Some(rest) => (true, rest),
                        None => (false, v.value.as_str()),
                    };
                    if is_tcp && key.starts_with("stun_servers") {
                        return Err(cx.err(
                            &v.referenced,
                            &key,
                            "STUN servers are asked over UDP, expected host:port without tcp://",
                        ));
                    }
                    if is_tcp == tcp {
                        out.push(
                            text.parse::<HostPort>()
                                .map_err(|m| cx.err(&v.referenced, &key, m))?,
                        );
                    }
                }
            }
            Ok::<_, ConfigError>(out)
        };
        let introducers = host_ports(&raw.introducers, "introducers", false)?;
        let tcp_introducers = host_ports(&raw.introducers, "introducers", true)?;
        let stun_servers = host_ports(&raw.stun_servers, "stun_servers", false)?;
        if introducers.is_empty() && tcp_introducers.is_empty() && role != Role::Introducer {
            let at = raw
                .introducers
                .as_ref()
                .map(|l| l.referenced)
                .or(raw.role.as_ref().map(|r| r.referenced))
                .unwrap_or(raw.network.referenced);
            return Err(cx.err(
                &at,
                "introducers",
                "no introducer given, expected at least one host:port unless role is introducer",
            ));
        }

        // keepalive, rekey interval
        let keepalive = match &raw.keepalive {
            None => DEFAULT_KEEPALIVE,
            Some(v) => cx.duration_in(v, "keepalive", KEEPALIVE_RANGE)?,
        };
        let rekey_interval = match &raw.rekey_interval {
            None => DEFAULT_REKEY_INTERVAL,
            Some(v) => cx.duration_in(v, "rekey_interval", REKEY_INTERVAL_RANGE)?,
        };

        // relay
        let mut relay = RelayConfig {
            enabled: role == Role::Introducer,
            max_routes: DEFAULT_RELAY_ROUTES,
            max_mbps: DEFAULT_RELAY_MBPS,
            max_total_mbps: DEFAULT_RELAY_TOTAL_MBPS,
        };
        if let Some(r) = &raw.relay {
            let r = &r.value;
            if let Some(e) = &r.enabled {
                relay.enabled = e.value;
            }
            if let Some(m) = &r.max_routes {
                relay.max_routes = usize::try_from(m.value)
                    .ok()
                    .filter(|n| (1..=65_536).contains(n))
                    .ok_or_else(|| {
                        cx.err(
                            &m.referenced,
                            "relay.max_routes",
                            format!("{} is out of range, expected 1-65536", m.value),
                        )
                    })?;
            }
            for (v, key, slot) in [
                (&r.max_mbps, "relay.max_mbps", &mut relay.max_mbps),
                (
                    &r.max_total_mbps,
                    "relay.max_total_mbps",
                    &mut relay.max_total_mbps,
                ),
            ] {
                if let Some(v) = v {
                    if !v.value.is_finite() || v.value < 0.0 {
                        return Err(cx.err(
                            &v.referenced,
                            key,
                            format!(
                                "{} is not a bandwidth, expected Mbit/s >= 0 (0: unlimited)",
                                v.value
                            ),
                        ));
                    }
                    *slot = v.value;
                }
            }
        }

        // control
        let control = match &raw.control {
            Some(c) => ControlConfig {
                socket: check_path(cx, &c.value.socket, "control.socket")?,
            },
            None => ControlConfig {
                socket: PathBuf::from(format!("/run/ringlan/{}.sock", network.name)),
            },
        };

        // metrics
        let metrics = match &raw.metrics {
            Some(m) => {
                let v = &m.value.listen;
                Some(MetricsConfig {
                    listen: v.value.parse().map_err(|_| {
                        cx.err(
                            &v.referenced,
                            "metrics.listen",
                            format!(
                                "`{}` is not an address:port, expected e.g. 127.0.0.1:9910 or [::1]:9910",
                                v.value
                            ),
                        )
                    })?,
                })
            }
            None => None,
        };

        // dns
        let dns = match &raw.dns {
            Some(d) => {
                let (l, dom) = (&d.value.listen, &d.value.domain);
                let listen: SocketAddr = l.value.parse().map_err(|_| {
                    cx.err(
                        &l.referenced,
                        "dns.listen",
                        format!(
                            "`{}` is not an address:port, expected e.g. 10.77.0.2:53 or [fd77::2]:53",
                            l.value
                        ),
                    )
                })?;
                if listen.port() == 0 || listen.ip().is_unspecified() {
                    return Err(cx.err(
                        &l.referenced,
                        "dns.listen",
                        format!(
                            "`{}`: expected a specific address and a port, e.g. 10.77.0.2:53",
                            l.value
                        ),
                    ));
                }
                crate::dns::check_domain(&dom.value)
                    .map_err(|m| cx.err(&dom.referenced, "dns.domain", m))?;
                Some(DnsConfig {
                    listen,
                    domain: dom.value.trim_end_matches('.').to_ascii_lowercase(),
                })
            }
            None => None,
        };

        // log
        let level = match &raw.log {
            None => LogLevel::Info,
            Some(l) => {
                let v = &l.value.level;
                match v.value.as_str() {
                    "error" => LogLevel::Error,
                    "warn" => LogLevel::Warn,
                    "info" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    "trace" => LogLevel::Trace,
                    other => {
                        return Err(cx.err(
                            &v.referenced,
                            "log.level",
                            format!(
                                "`{other}` is not a log level, expected error, warn, info, debug or trace"
                            ),
                        ))
                    }
                }
            }
        };

        Ok(Config {
            file: cx.file.to_path_buf(),
            network,
            node,
            interface,
            listen,
            introducers,
            tcp_introducers,
            stun_servers,
            keepalive,
            rekey_interval,
            role,
            io_threads,
            realtime,
            relay,
            control,
            metrics,
            dns,
            log: LogConfig { level },
            at,
        })
    }

    /// An error at `at` (line, column) about `key`.
    fn err_at(&self, at: (u32, u32), key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: at.0,
            column: at.1,
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// Step 2: the secret file must exist, be private and hold a secret; a
    /// key file, if it already exists, must be private and hold a key (a
    /// missing key file is created by `ringlan up`); with `network.ca`, what
    /// [`Config::membership`] checks.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        identity::read_secret(&self.network.secret_file)
            .map_err(|e| self.err_at(self.at.secret, "network.secret_file", e.to_string()))?;
        if self.node.key_file.exists() {
            identity::read_key(&self.node.key_file)
                .map_err(|e| self.err_at(self.at.key, "node.key_file", e.to_string()))?;
        }
        self.membership()?;
        Ok(())
    }

    /// With `network.ca`: the CA key and this node's certificate, checked
    /// against each other and this config. The certificate must be signed
    /// by the CA for this network and name this node's key (so the key file
    /// must exist: a key made at first start has no certificate); a fixed
    /// `interface.mac` or `interface.bridge: true` needs a certificate that
    /// allows any MAC (`ringlan ca sign --bridge`). The validity period is
    /// not checked here: an expired certificate is a warning (members
    /// refuse the node, which still starts and says why).
    ///
    /// `None` without `network.ca` (membership by the shared secret only).
    pub fn membership(&self) -> Result<Option<Membership>, ConfigError> {
        let Some(ca_file) = &self.network.ca else {
            return Ok(None);
        };
        let ca = credentials::read_ca_key(ca_file)
            .map_err(|m| self.err_at(self.at.ca, "network.ca", m))?;
        // Step 1 made sure a certificate file is set along with the CA.
        let cert_file = self.node.certificate_file.as_ref().ok_or_else(|| {
            self.err_at(
                self.at.ca,
                "network.ca",
                "set, but node.certificate_file is not",
            )
        })?;
        let cert_err = |m: String| self.err_at(self.at.certificate, "node.certificate_file", m);
        let certificate = credentials::read_certificate(cert_file).map_err(cert_err)?;
        let network = NetworkName::new(&self.network.name)
            .map_err(|e| self.err_at((0, 0), "network.name", e.to_string()))?;
        certificate.check_origin(&ca, &network).map_err(|e| {
            cert_err(match e {
                Rejected::WrongIssuer(other) => format!(
                    "{}: signed by another CA ({}), not the one in network.ca ({})",
                    cert_file.display(),
                    hex(&other.0),
                    hex(&ca.0)
                ),
                Rejected::WrongNetwork(other) => format!(
                    "{}: for network `{other}`, not `{network}`",
                    cert_file.display()
                ),
                e => format!("{}: refused: {e}", cert_file.display()),
            })
        })?;
        let key = match identity::read_key(&self.node.key_file) {
            Ok(k) => k,
            Err(IdentityError::Missing { .. }) => {
                return Err(self.err_at(
                    self.at.key,
                    "node.key_file",
                    format!(
                        "{}: file does not exist; with network.ca the certificate names                          the node's key, so make the key first (`ringlan keygen -o {}`)                          and have the CA sign its public key",
                        self.node.key_file.display(),
                        self.node.key_file.display()
                    ),
                ))
            }
            Err(e) => return Err(self.err_at(self.at.key, "node.key_file", e.to_string())),
        };
        let ours = key.public_key();
        if certificate.body().node_key != ours {
            return Err(cert_err(format!(
                "{}: certifies key {}, but node.key_file holds key {}",
                cert_file.display(),
                hex(&certificate.body().node_key),
                hex(&ours)
            )));
        }
        if certificate.body().mac == MacPolicy::Auto {
            let bridge_cert = "have the CA sign a bridge certificate (`ringlan ca sign --bridge`)";
            if let MacSetting::Fixed(_) = self.interface.mac {
                return Err(self.err_at(
                    self.at.mac,
                    "interface.mac",
                    format!(
                        "a fixed MAC, but certificate {} allows only the auto MAC \
                         {}: set `mac: auto`, or {bridge_cert}",
                        cert_file.display(),
                        format_mac(&derive_mac(&ours))
                    ),
                ));
            }
            if self.interface.bridge {
                return Err(self.err_at(
                    self.at.bridge,
                    "interface.bridge",
                    format!(
                        "true, but certificate {} allows only this node's own MAC: \
                         {bridge_cert}",
                        cert_file.display()
                    ),
                ));
            }
        }
        Ok(Some(Membership {
            ca,
            certificate,
            network,
        }))
    }

    /// Where this node keeps the newest revocation list (beside its key).
    pub fn revocations_path(&self) -> PathBuf {
        credentials::revocations_path(&self.node.key_file, &self.network.name)
    }

    /// Where this node keeps its peer cache (beside its key).
    pub fn peers_path(&self) -> PathBuf {
        crate::peer_cache::path(&self.node.key_file, &self.network.name)
    }
}

/// The membership a config sets up with `network.ca` ([`Config::membership`]).
#[derive(Debug, Clone)]
pub struct Membership {
    pub ca: CaKey,
    /// This node's certificate: signed by `ca` for `network`, naming the
    /// node's key (its validity period is not checked).
    pub certificate: NodeCert,
    pub network: NetworkName,
}

fn loc(l: &Location) -> (u32, u32) {
    (l.line() as u32, l.column() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
network:
  name: home
  secret_file: /etc/ringlan/home.secret
node:
  name: laptop
  key_file: /var/lib/ringlan/home.key
interface:
  name: rl-home
  mtu: 1400
  mac: auto
  addresses: [10.77.0.2/24, 'fd77::2/64']
listen:
  port: 4910
introducers: [198.51.100.7:4910, '[2001:db8::7]:4910', intro.example.net:4910]
stun_servers: []
role: node
control:
  socket: /run/ringlan/home.sock
metrics:
  listen: 127.0.0.1:9910
log:
  level: info
";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/ringlan/home.yaml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn dns_is_checked_with_its_position() {
        let with = |dns: &str| GOOD.replace("log:\n", &format!("dns:\n{dns}log:\n"));
        let c = parse(&with("  listen: 10.77.0.2:53\n  domain: Home.Example.\n")).unwrap();
        let d = c.dns.unwrap();
        assert_eq!(d.listen.to_string(), "10.77.0.2:53");
        assert_eq!(d.domain, "home.example");
        assert!(parse(GOOD).unwrap().dns.is_none());
        assert_eq!(
            err(&with("  listen: 10.77.0.2\n  domain: ringlan\n")),
            "/etc/ringlan/home.yaml:22:11: dns.listen: `10.77.0.2` is not an address:port, \
             expected e.g. 10.77.0.2:53 or [fd77::2]:53"
        );
        assert_eq!(
            err(&with("  listen: 0.0.0.0:53\n  domain: ringlan\n")),
            "/etc/ringlan/home.yaml:22:11: dns.listen: `0.0.0.0:53`: expected a specific \
             address and a port, e.g. 10.77.0.2:53"
        );
        assert_eq!(
            err(&with("  listen: 10.77.0.2:53\n  domain: bad_domain\n")),
            "/etc/ringlan/home.yaml:23:11: dns.domain: `bad_domain` is not a domain name, \
             expected a domain such as ringlan or home.example.net"
        );
        let e = err(&with("  listen: 10.77.0.2:53\n"));
        assert!(e.contains("domain"), "{e}");
        let e = err(&with("  listen: 10.77.0.2:53\n  domain: x\n  port: 5\n"));
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn full_example_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.network.name, "home");
        assert_eq!(c.node.name, "laptop");
        assert_eq!(c.interface.mtu, 1400);
        assert_eq!(c.interface.mac, MacSetting::Auto);
        assert_eq!(c.interface.addresses.len(), 2);
        assert_eq!(c.interface.addresses[1].to_string(), "fd77::2/64");
        assert_eq!(c.listen.socket_addr().to_string(), "[::]:4910");
        assert_eq!(c.introducers.len(), 3);
        assert_eq!(c.introducers[1].to_string(), "[2001:db8::7]:4910");
        assert_eq!(
            c.introducers[2].host,
            Host::Name("intro.example.net".into())
        );
        assert_eq!(c.role, Role::Node);
        assert_eq!(c.metrics.unwrap().listen.to_string(), "127.0.0.1:9910");
        assert_eq!(c.log.level, LogLevel::Info);
    }

    #[test]
    fn tcp_listening_by_role_and_tcp_introducer_entries() {
        let c = parse(GOOD).unwrap();
        assert!(!c.listen.tcp, "nodes accept no TCP streams by default");
        assert!(c.tcp_introducers.is_empty());
        let intro = GOOD.replace("role: node", "role: introducer");
        assert!(parse(&intro).unwrap().listen.tcp, "introducers do");
        let off = intro.replace("  port: 4910", "  port: 4910\n  tcp: false");
        assert!(!parse(&off).unwrap().listen.tcp);
        let t = GOOD.replace(
            "intro.example.net:4910]",
            "intro.example.net:4910, 'tcp://198.51.100.7:443']",
        );
        let c = parse(&t).unwrap();
        assert_eq!(c.introducers.len(), 3);
        let tcp: Vec<String> = c.tcp_introducers.iter().map(|h| h.to_string()).collect();
        assert_eq!(tcp, ["198.51.100.7:443"]);
        // Only TCP introducers is enough to join.
        let only = GOOD.replace(
            "introducers: [198.51.100.7:4910, '[2001:db8::7]:4910', intro.example.net:4910]",
            "introducers: ['tcp://intro.example.net:443']",
        );
        let c = parse(&only).unwrap();
        assert!(c.introducers.is_empty());
        assert_eq!(c.tcp_introducers.len(), 1);
        // Errors point at the entry.
        let bad = GOOD.replace(
            "intro.example.net:4910]",
            "intro.example.net:4910, 'tcp://nope']",
        );
        let e = err(&bad);
        assert!(e.contains("introducers[3]"), "{e}");
        let stun = GOOD.replace("stun_servers: []", "stun_servers: ['tcp://192.0.2.9:3478']");
        let e = err(&stun);
        assert!(
            e.contains("stun_servers[0]") && e.contains("over UDP"),
            "{e}"
        );
    }

    #[test]
    fn relay_defaults_by_role_and_limits() {
        let c = parse(GOOD).unwrap();
        assert!(!c.relay.enabled, "ordinary nodes relay only when enabled");
        assert_eq!(c.relay.max_routes, DEFAULT_RELAY_ROUTES);
        assert_eq!(
            (c.relay.max_mbps, c.relay.max_total_mbps),
            (200.0, 1000.0),
            "relayed bandwidth is capped by default"
        );
        let t = GOOD.replace("role: node", "role: introducer");
        assert!(
            parse(&t).unwrap().relay.enabled,
            "introducers relay by default"
        );
        let t = GOOD.replace(
            "role: node",
            "role: node\nrelay:\n  enabled: true\n  max_routes: 8\n  max_mbps: 100\n  max_total_mbps: 250.5",
        );
        let r = parse(&t).unwrap().relay;
        assert_eq!(
            r,
            RelayConfig {
                enabled: true,
                max_routes: 8,
                max_mbps: 100.0,
                max_total_mbps: 250.5
            }
        );
        let t = GOOD.replace("role: node", "role: node\nrelay:\n  max_routes: 0");
        assert!(
            err(&t).contains(":18:15: relay.max_routes: 0 is out of range"),
            "{}",
            err(&t)
        );
        let t = GOOD.replace("role: node", "role: node\nrelay:\n  max_mbps: -1");
        assert!(
            err(&t).contains("relay.max_mbps: -1 is not a bandwidth"),
            "{}",
            err(&t)
        );
        let t = GOOD.replace("role: node", "role: node\nrelay:\n  max_mbps: 0");
        assert_eq!(parse(&t).unwrap().relay.max_mbps, 0.0, "0 lifts the cap");
        let t = GOOD.replace("role: node", "role: node\nrelay:\n  enable: true");
        assert!(err(&t).contains("enable"), "{}", err(&t));
    }

    #[test]
    fn mtu_out_of_range_points_at_value() {
        let t = GOOD.replace("mtu: 1400", "mtu: 70000");
        assert_eq!(
            err(&t),
            "/etc/ringlan/home.yaml:9:8: interface.mtu: 70000 is out of range, expected 576-9000"
        );
    }

    #[test]
    fn unknown_key_is_rejected_with_location() {
        let t = GOOD.replace("  mtu: 1400", "  mtu: 1400\n  colour: blue");
        let e = parse(&t).unwrap_err();
        assert_eq!((e.line, e.column), (10, 3), "{e}");
        assert!(e.message.contains("colour"), "{e}");
        let t = GOOD.replace("role: node", "role: node\nkeep_alive: 25s");
        let e = parse(&t).unwrap_err();
        assert_eq!(e.line, 17, "{e}");
        assert!(e.message.contains("keep_alive"), "{e}");
    }

    #[test]
    fn io_threads_default_forms_and_errors() {
        assert_eq!(parse(GOOD).unwrap().io_threads, IoThreads::Auto);
        for (v, want) in [
            ("auto", IoThreads::Auto),
            ("true", IoThreads::On),
            ("false", IoThreads::Off),
        ] {
            let t = GOOD.replace("role: node", &format!("role: node\nio_threads: {v}"));
            assert_eq!(parse(&t).unwrap().io_threads, want, "{v}");
        }
        for bad in ["2", "many"] {
            let t = GOOD.replace("role: node", &format!("role: node\nio_threads: {bad}"));
            let e = err(&t);
            let want = format!(":17:13: io_threads: `{bad}` is not allowed, expected auto");
            assert!(e.contains(&want), "{e}");
        }
        // auto: helper threads only where cores are free for them.
        assert!(!IoThreads::Auto.enabled(2));
        assert!(IoThreads::Auto.enabled(IoThreads::AUTO_MIN_CORES));
        assert!(IoThreads::On.enabled(1));
        assert!(!IoThreads::Off.enabled(64));
    }

    #[test]
    fn realtime_default_forms_and_errors() {
        assert_eq!(parse(GOOD).unwrap().realtime, Realtime::Auto);
        for (v, want) in [
            ("auto", Realtime::Auto),
            ("true", Realtime::On),
            ("false", Realtime::Off),
        ] {
            let t = GOOD.replace("role: node", &format!("role: node\nrealtime: {v}"));
            assert_eq!(parse(&t).unwrap().realtime, want, "{v}");
        }
        for bad in ["1", "rr"] {
            let t = GOOD.replace("role: node", &format!("role: node\nrealtime: {bad}"));
            let e = err(&t);
            let want = format!(":17:11: realtime: `{bad}` is not allowed, expected auto");
            assert!(e.contains(&want), "{e}");
        }
    }

    #[test]
    fn keepalive_default_and_forms() {
        assert_eq!(parse(GOOD).unwrap().keepalive, DEFAULT_KEEPALIVE);
        for (v, secs) in [("25s", 25), ("2m", 120), ("10", 10), ("'15'", 15)] {
            let t = GOOD.replace("role: node", &format!("role: node\nkeepalive: {v}"));
            assert_eq!(
                parse(&t).unwrap().keepalive,
                Duration::from_secs(secs),
                "{v}"
            );
        }
        let t = GOOD.replace("role: node", "role: node\nkeepalive: 1500ms");
        assert_eq!(parse(&t).unwrap().keepalive, Duration::from_millis(1500));
        let t = GOOD.replace("role: node", "role: node\nkeepalive: 10h");
        let e = err(&t);
        assert!(
            e.contains(":17:12: keepalive: `10h` is not a duration"),
            "{e}"
        );
        let t = GOOD.replace("role: node", "role: node\nkeepalive: 0s");
        assert!(
            err(&t).contains("keepalive: 0ns is out of range"),
            "{}",
            err(&t)
        );
        let t = GOOD.replace("role: node", "role: node\nkeepalive: 301");
        assert!(err(&t).contains("out of range, expected 1s-300s"));
    }

    #[test]
    fn rekey_interval_default_and_range() {
        assert_eq!(parse(GOOD).unwrap().rekey_interval, DEFAULT_REKEY_INTERVAL);
        let t = GOOD.replace("role: node", "role: node\nrekey_interval: 5s");
        assert_eq!(parse(&t).unwrap().rekey_interval, Duration::from_secs(5));
        let t = GOOD.replace("role: node", "role: node\nrekey_interval: 10m");
        let e = err(&t);
        assert!(
            e.contains(":17:17: rekey_interval: 600s is out of range, expected 2s-120s"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_point_at_value() {
        let cases = [
            (
                "name: home",
                "name: Home!",
                "3:9".replace("3:9", "2:9"),
                "network.name",
            ),
            (
                "10.77.0.2/24,",
                "10.77.0.2/33,",
                "11:15".into(),
                "interface.addresses[0]",
            ),
            (
                "mac: auto",
                "mac: 01:00:5e:00:00:01",
                "10:8".into(),
                "interface.mac",
            ),
            (
                "name: rl-home",
                "name: rl-home-much-too-long",
                "8:9".into(),
                "interface.name",
            ),
            ("port: 4910", "port: 70000", "13:9".into(), "listen.port"),
            ("role: node", "role: relay", "16:7".into(), "role"),
            ("level: info", "level: loud", "22:10".into(), "log.level"),
            (
                "198.51.100.7:4910,",
                "198.51.100.7,",
                "14:15".into(),
                "introducers[0]",
            ),
            (
                "listen: 127.0.0.1:9910",
                "listen: localhost:9910",
                "20:11".into(),
                "metrics.listen",
            ),
            (
                "socket: /run/ringlan/home.sock",
                "socket: run/home.sock",
                "18:11".into(),
                "control.socket",
            ),
        ];
        for (from, to, at, key) in cases {
            let t = GOOD.replacen(from, to, 1);
            let e = err(&t);
            let want = format!("/etc/ringlan/home.yaml:{at}: {key}: ");
            assert!(
                e.starts_with(&want),
                "{from} -> {to}: got `{e}`, want prefix `{want}`"
            );
        }
    }

    #[test]
    fn introducer_required_unless_role_is_introducer() {
        let t = GOOD.replace(
            "introducers: [198.51.100.7:4910, '[2001:db8::7]:4910', intro.example.net:4910]",
            "introducers: []",
        );
        let e = err(&t);
        assert!(
            e.starts_with("/etc/ringlan/home.yaml:14:14: introducers: no introducer"),
            "{e}"
        );
        let t = t.replace("role: node", "role: introducer");
        assert_eq!(parse(&t).unwrap().role, Role::Introducer);
    }

    /// The smallest valid config: an introducer with every default.
    const MINIMAL: &str = "\
network: {name: lab, secret_file: /etc/ringlan/lab.secret}
interface: {name: rl-lab}
role: introducer
";

    #[test]
    fn defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.interface.mtu, DEFAULT_MTU);
        assert_eq!(c.listen.port, DEFAULT_PORT);
        // Dual-stack by default.
        assert_eq!(c.listen.socket_addr().to_string(), "[::]:4910");
        assert_eq!(c.listen.stun_alt_port, DEFAULT_PORT + 1);
        assert_eq!(c.node.key_file, Path::new("/var/lib/ringlan/lab.key"));
        assert_eq!(c.control.socket, Path::new("/run/ringlan/lab.sock"));
        assert!(c.metrics.is_none());
        assert!(!c.node.name.is_empty());
    }

    #[test]
    fn stun_alt_port_default_off_and_errors() {
        let with = |listen: &str| format!("{MINIMAL}listen: {listen}\n");
        let alt = |listen: &str| parse(&with(listen)).unwrap().listen.stun_alt_port;
        assert_eq!(alt("{port: 5000}"), 5001);
        assert_eq!(alt("{port: 0}"), 0);
        assert_eq!(alt("{port: 65535}"), 0);
        assert_eq!(alt("{port: 5000, stun_alt_port: 0}"), 0);
        assert_eq!(alt("{port: 5000, stun_alt_port: 3478}"), 3478);
        for bad in [
            "{port: 5000, stun_alt_port: 5000}",
            "{stun_alt_port: 70000}",
        ] {
            let e = err(&with(bad));
            assert!(
                e.contains(":4:") && e.contains("listen.stun_alt_port: "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn missing_required_key_is_an_error() {
        let e = err("interface: {name: rl-x}\nrole: introducer\n");
        assert!(e.contains("network"), "{e}");
    }

    #[test]
    fn membership_keys_parse() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.network.ca, None);
        assert_eq!(c.node.certificate_file, None);
        assert!(!c.interface.bridge);
        assert!(c.membership().unwrap().is_none(), "no CA, no files read");
        let t = GOOD
            .replace(
                "  secret_file: /etc/ringlan/home.secret\n",
                "  secret_file: /etc/ringlan/home.secret\n  ca: /etc/ringlan/home-ca.pub\n",
            )
            .replace(
                "  key_file: /var/lib/ringlan/home.key\n",
                "  key_file: /var/lib/ringlan/home.key\n  certificate_file: /etc/ringlan/laptop.cert\n",
            )
            .replace("  mac: auto\n", "  mac: auto\n  bridge: true\n");
        let c = parse(&t).unwrap();
        assert_eq!(
            c.network.ca.as_deref(),
            Some(Path::new("/etc/ringlan/home-ca.pub"))
        );
        assert_eq!(
            c.node.certificate_file.as_deref(),
            Some(Path::new("/etc/ringlan/laptop.cert"))
        );
        assert!(c.interface.bridge);
        assert_eq!(
            c.revocations_path(),
            Path::new("/var/lib/ringlan/home.revocations")
        );

        // A CA without a certificate; relative paths; a bridge that is not a bool.
        let no_cert = t.replace("  certificate_file: /etc/ringlan/laptop.cert\n", "");
        assert_eq!(
            err(&no_cert),
            "/etc/ringlan/home.yaml:4:7: network.ca: set, but node.certificate_file is not: \
             with a CA every node needs a certificate (`ringlan ca sign`)"
        );
        let e = err(&t.replace("ca: /etc/ringlan/home-ca.pub", "ca: home-ca.pub"));
        assert!(
            e.starts_with(
                "/etc/ringlan/home.yaml:4:7: network.ca: `home-ca.pub` is not an absolute path"
            ),
            "{e}"
        );
        let e = err(&t.replace("certificate_file: /etc", "certificate_file: etc"));
        assert!(
            e.starts_with("/etc/ringlan/home.yaml:8:21: node.certificate_file: "),
            "{e}"
        );
        let e = err(&t.replace("bridge: true", "bridge: sometimes"));
        assert!(e.starts_with("/etc/ringlan/home.yaml:13:11: "), "{e}");
        // A certificate without a CA is allowed (unused).
        let c = parse(&t.replace("  ca: /etc/ringlan/home-ca.pub\n", "")).unwrap();
        assert!(c.membership().unwrap().is_none());
    }

    /// Writes a secret, a node key, the CA key file and a certificate for
    /// the key (signed by CA seed `ca_seed`, network `net`, MAC policy
    /// `mac`) into a fresh directory; returns the config text using them.
    fn membership_files(name: &str, ca_seed: u8, net: &str, mac: MacPolicy) -> (PathBuf, String) {
        use crate::credentials::tests::{ca_pub, tmp};
        use ringlan_node::membership::{armor, Kind};
        let d = tmp(name);
        identity::write_private(
            &d.join("home.secret"),
            &[3; 32],
            identity::SECRET_MODE,
            false,
        )
        .unwrap();
        identity::write_private(&d.join("home.key"), &[4; 32], identity::KEY_MODE, false).unwrap();
        let node_key = identity::NodeKey::from_secret_bytes([4; 32]).public_key();
        std::fs::write(d.join("ca.pub"), format!("{}\n", hex(&ca_pub(7).0))).unwrap();
        let network = NetworkName::new(net).unwrap();
        let cert = crate::credentials::tests::cert(ca_seed, &network, node_key, mac, 0, 1);
        std::fs::write(
            d.join("laptop.cert"),
            armor::encode(Kind::Certificate, cert.as_bytes(), &[]),
        )
        .unwrap();
        let text = format!(
            "network:\n  name: home\n  secret_file: {0}/home.secret\n  ca: {0}/ca.pub\n\
             node:\n  name: laptop\n  key_file: {0}/home.key\n  certificate_file: {0}/laptop.cert\n\
             interface:\n  name: rl-home\n  mac: auto\nrole: introducer\n",
            d.display()
        );
        (d, text)
    }

    #[test]
    fn membership_files_are_checked_against_each_other() {
        let file = Path::new("/x/home.yaml");
        let check_err = |text: &str| {
            Config::parse(text, file)
                .unwrap()
                .check_files()
                .unwrap_err()
                .to_string()
        };
        let (d, text) = membership_files("ok", 7, "home", MacPolicy::Auto);
        let c = Config::parse(&text, file).unwrap();
        c.check_files().unwrap();
        let m = c.membership().unwrap().unwrap();
        assert_eq!(m.ca, crate::credentials::tests::ca_pub(7));
        assert_eq!(m.certificate.body().name, "laptop");
        // Expired long ago: still a valid config (a warning, not an error).
        assert_eq!(m.certificate.body().not_after, 1);

        // A fixed MAC or a bridge needs a bridge certificate.
        let fixed = text.replace("mac: auto", "mac: 02:00:00:00:00:01");
        let e = check_err(&fixed);
        assert!(
            e.starts_with("/x/home.yaml:11:8: interface.mac: a fixed MAC, but certificate "),
            "{e}"
        );
        assert!(e.contains("allows only the auto MAC"), "{e}");
        let bridge = text.replace("mac: auto\n", "mac: auto\n  bridge: true\n");
        let e = check_err(&bridge);
        assert!(
            e.starts_with("/x/home.yaml:12:11: interface.bridge: true, but certificate "),
            "{e}"
        );

        // The node key is not the certified one.
        identity::write_private(&d.join("home.key"), &[5; 32], identity::KEY_MODE, true).unwrap();
        let e = check_err(&text);
        assert!(
            e.starts_with("/x/home.yaml:8:21: node.certificate_file: "),
            "{e}"
        );
        assert!(e.contains("but node.key_file holds key"), "{e}");
        // No key at all.
        std::fs::remove_file(d.join("home.key")).unwrap();
        let e = check_err(&text);
        assert!(e.starts_with("/x/home.yaml:7:13: node.key_file: "), "{e}");
        assert!(e.contains("make the key first"), "{e}");
        // No CA key file.
        std::fs::remove_file(d.join("ca.pub")).unwrap();
        let e = check_err(&text);
        assert!(e.starts_with("/x/home.yaml:4:7: network.ca: "), "{e}");
        assert!(e.contains("ca.pub: file does not exist"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();

        // A bridge certificate allows both.
        let (d, text) = membership_files("bridge", 7, "home", MacPolicy::Any);
        let both = text.replace("mac: auto\n", "mac: 02:00:00:00:00:01\n  bridge: true\n");
        Config::parse(&both, file).unwrap().check_files().unwrap();
        std::fs::remove_dir_all(&d).unwrap();

        // Another CA; another network.
        let (d, text) = membership_files("otherca", 8, "home", MacPolicy::Auto);
        let e = check_err(&text);
        assert!(
            e.starts_with("/x/home.yaml:8:21: node.certificate_file: "),
            "{e}"
        );
        assert!(e.contains("signed by another CA"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
        let (d, text) = membership_files("othernet", 7, "work", MacPolicy::Auto);
        let e = check_err(&text);
        assert!(e.contains("for network `work`, not `home`"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn host_port_syntax() {
        for ok in ["192.0.2.1:1", "[::1]:4910", "a.example:80", "intro-1:4910"] {
            ok.parse::<HostPort>().unwrap();
        }
        for bad in [
            "192.0.2.1",
            "::1:4910",
            "a..b:1",
            "-a:1",
            "1.2.3:5",
            "h:0",
            "h:x",
            "[::1]4910",
        ] {
            assert!(bad.parse::<HostPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidr_and_mac_syntax() {
        assert!("10.0.0.1".parse::<IpCidr>().is_err());
        assert!("fd00::1/129".parse::<IpCidr>().is_err());
        assert_eq!("fd00::1/128".parse::<IpCidr>().unwrap().prefix, 128);
        assert_eq!(
            parse_mac("02:aa:BB:cc:dd:0f").unwrap(),
            [2, 0xaa, 0xbb, 0xcc, 0xdd, 0x0f]
        );
        assert!(parse_mac("02:aa:bb:cc:dd").is_err());
        assert!(parse_mac("02:aa:bb:cc:dd:ee:ff").is_err());
        assert!(parse_mac("03:aa:bb:cc:dd:ee").is_err());
        assert!(parse_mac("00:00:00:00:00:00").is_err());
    }
}
