//! `ringlan demo`: the main job on an embedded default (`docs/design.md`,
//! "CLI"), in a lab that shows what ringlan is for: members behind NATs.
//!
//! Builds a throw-away network-namespace lab with the `ringlan-lab` harness
//! ([`Topology::standard`], placed by [`build`]):
//!
//! - an "internet" bridge (198.51.100.0/24) with the introducer `intro`
//!   (which relays and answers STUN on a second port, `listen.stun_alt_port`,
//!   so one introducer tells every node its NAT's mapping) and `relay`, a
//!   public node with `relay: {enabled: true}`;
//! - an office LAN behind a cone-like NAT (`masquerade`) with `lan-1` and
//!   `lan-2`, which reach each other on the LAN path;
//! - `cone` behind a cone-like NAT of its own;
//! - `sym-1` and `sym-2`, each behind its own symmetric NAT (`masquerade
//!   fully-random`: a random public port per destination).
//!
//! It writes a config per member with the lab's config writer
//! ([`ringlan_lab::agents::AgentConfig`], see [`render_config`]), starts real
//! agents (this very binary, `ringlan up -c CONFIG`) in the namespaces and
//! then shows, reading only the agents' `status`:
//!
//! 1. the join: one line per member as its session with the introducer
//!    opens, and the NAT mapping each learns by STUN;
//! 2. the paths: `lan-1 <-> lan-2` direct on the LAN, `cone <-> sym-1`
//!    direct through both NATs by birthday punching, `sym-1 <-> sym-2`
//!    relayed (no punch can cross two symmetric NATs) with a standby route,
//!    and `ringlan status` of `sym-1`;
//! 3. the picture: `ringlan topology --format svg` of the introducer,
//!    written to `--svg FILE` (default `ringlan-demo.svg` in the current
//!    directory, the one file the demo leaves behind);
//! 4. a ping and a checksummed TCP transfer through the relay;
//! 5. the relay carrying `sym-1 <-> sym-2` killed (SIGKILL) under a running
//!    TCP stream: the session's path before and after, the longest pause,
//!    the stream intact and a ping afterwards.
//!
//! Everything is removed on exit, on failure and on SIGINT/SIGTERM; the
//! time the show took is printed.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use ringlan_agent::config::Config;
use ringlan_agent::config::Role;
use ringlan_agent::identity::{self, NetworkSecret, NodeKey};
use ringlan_agent::status::{
    format_bytes, format_duration, NatBehaviour, PathKind, SessionPhase, SessionStatus, Status,
};
use ringlan_lab::agents::AgentConfig;
use ringlan_lab::{Lab, NatKind, Node, Proc, Switch, Transfer};

/// The network every demo member joins.
const NETWORK: &str = "demo";
/// TAP device name (the same in every namespace).
const TAP_NAME: &str = "rl-demo";
/// RTMFP UDP port of every member (the introducer answers STUN on it and
/// on the next port, `listen.stun_alt_port`).
const PORT: u16 = 4910;
/// The "internet": one bridge, 198.51.100.0/24 (documentation range).
const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);
const INTERNET_PREFIX: u8 = 24;
/// Each private LAN is a /26 of 192.0.2.0/24 (documentation range).
const SITE_PREFIX: u8 = 26;
const OVERLAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);
const OVERLAY_PREFIX: u8 = 24;

/// The pairs the show is about (member names of [`Topology::standard`]).
const LAN_PAIR: [&str; 2] = ["lan-1", "lan-2"];
const PUNCHED_PAIR: [&str; 2] = ["cone", "sym-1"];
const RELAYED_PAIR: [&str; 2] = ["sym-1", "sym-2"];
/// The public relay: the relayed pair reach it directly, which makes it a
/// link of theirs and so a relay their routes can use besides the
/// introducer (docs/relay.md, "Which relays").
const RELAY: &str = "relay";

/// How long the agents get to join and learn their NAT's mapping.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the three paths get (birthday punching takes 5 to 10 s in the
/// lab, up to three rounds of about 8 s when unlucky; docs/nat.md).
const PATHS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the first ping may take to get through (ARP over the overlay).
const FIRST_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the session gets to leave the killed relay, and the stream to
/// move on.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
const PING_COUNT: u32 = 5;
/// Pings a second that drive the show's pairs: well above what makes a
/// member want an on-demand link (a direct session) to the one it sends
/// to: 64 frames routed to it within 10 s (overlay `on_demand_frames`,
/// `on_demand_interval`), so the session opens after about 1.3 s.
const PINGS_PER_SEC: u32 = 50;
const TRANSFER_MIB: u64 = 16;
const TRANSFER_PORT: u16 = 5001;
const STREAM_PORT: u16 = 5002;
/// The stream must move this much before the kill and again after it.
const STREAM_STEP: u64 = 4 << 20;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the session counters to show the transfer.
const COUNTER_WAIT: Duration = Duration::from_secs(5);
/// Status poll interval while waiting, and status interval with `--keep`.
const POLL: Duration = Duration::from_millis(250);
const KEEP_INTERVAL: Duration = Duration::from_secs(5);
/// The member whose view of the network the picture shows: the
/// introducer, which has a session with every member.
const PICTURE_FROM: &str = "intro";
/// How long the picture may take to name every member: members publish
/// their links at most every 10 s, and a scan takes up to 10 s and is
/// reused for 5 s (docs/topology.md).
const PICTURE_TIMEOUT: Duration = Duration::from_secs(45);

/// `ringlan demo` options.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keep the lab running after the show, printing status every few
    /// seconds, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Where to write the picture of the network (`ringlan topology
    /// --format svg` of one member), the one file the demo leaves behind.
    #[arg(long, value_name = "FILE", default_value = "ringlan-demo.svg")]
    svg: PathBuf,
}

// ---------------------------------------------------------------------------
// Topology
// ---------------------------------------------------------------------------

/// A private LAN behind a NAT router on the internet bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatSite {
    /// The LAN's name; its router's namespace is `nat-NAME`.
    pub name: String,
    pub kind: NatKind,
    /// The LAN, a /[`SITE_PREFIX`]; the router is its first address.
    pub lan: Ipv4Addr,
    /// The router's address on the internet bridge.
    pub public: Ipv4Addr,
}

impl NatSite {
    fn router_inside(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.lan) + 1)
    }
    /// `cone-like NAT (masquerade)` / `symmetric NAT (masquerade fully-random)`.
    fn kind_text(&self) -> &'static str {
        match self.kind {
            NatKind::Masquerade => "cone-like NAT (masquerade)",
            NatKind::FullyRandom => "symmetric NAT (masquerade fully-random)",
        }
    }
}

/// Where a member is attached in the underlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Site {
    /// On the internet bridge, with a public address.
    Public,
    /// On the LAN of `Topology::sites[i]`, its gateway the NAT router.
    Behind(usize),
}

/// One agent of the demo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node name, namespace suffix and log name.
    pub name: String,
    pub role: Role,
    /// `relay: {enabled: true}` on a node (introducers relay by default).
    pub relay: bool,
    pub site: Site,
    /// Underlay address (on `eth0`).
    pub underlay: Ipv4Addr,
    /// TAP address inside the virtual LAN.
    pub overlay: Ipv4Addr,
}

/// What the demo builds: the NAT sites and the members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub sites: Vec<NatSite>,
    pub members: Vec<Member>,
}

impl Topology {
    /// The demo's lab: `intro` (198.51.100.1) and `relay` (.2) on the
    /// internet; `lan-1`, `lan-2` on the office LAN 192.0.2.0/26 behind a
    /// cone-like NAT (198.51.100.10); `cone` on 192.0.2.64/26 behind a
    /// cone-like NAT (.11); `sym-1` on 192.0.2.128/26 and `sym-2` on
    /// 192.0.2.192/26, each behind a symmetric NAT (.12, .13). TAP
    /// addresses 10.77.0.N/24.
    pub fn standard() -> Topology {
        let site = |name: &str, kind, lan: u8, public: u8| NatSite {
            name: name.into(),
            kind,
            lan: Ipv4Addr::new(192, 0, 2, lan),
            public: Ipv4Addr::new(198, 51, 100, public),
        };
        let sites = vec![
            site("office", NatKind::Masquerade, 0, 10),
            site("cone", NatKind::Masquerade, 64, 11),
            site("sym-1", NatKind::FullyRandom, 128, 12),
            site("sym-2", NatKind::FullyRandom, 192, 13),
        ];
        // name, role, relays, site, underlay, last byte of the TAP address
        #[rustfmt::skip]
        let table = [
            ("intro", Role::Introducer, true, Site::Public, [198, 51, 100, 1], 1),
            ("relay", Role::Node, true, Site::Public, [198, 51, 100, 2], 2),
            ("lan-1", Role::Node, false, Site::Behind(0), [192, 0, 2, 11], 11),
            ("lan-2", Role::Node, false, Site::Behind(0), [192, 0, 2, 12], 12),
            ("cone", Role::Node, false, Site::Behind(1), [192, 0, 2, 75], 21),
            ("sym-1", Role::Node, false, Site::Behind(2), [192, 0, 2, 139], 31),
            ("sym-2", Role::Node, false, Site::Behind(3), [192, 0, 2, 203], 32),
        ];
        let members = table
            .into_iter()
            .map(|(name, role, relay, site, underlay, tap)| Member {
                name: name.into(),
                role,
                relay,
                site,
                underlay: Ipv4Addr::from(underlay),
                overlay: Ipv4Addr::new(10, 77, 0, tap),
            })
            .collect();
        Topology { sites, members }
    }

    /// Underlay endpoints of the introducers.
    fn introducer_endpoints(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .filter(|m| m.role == Role::Introducer)
            .map(|m| SocketAddr::from((m.underlay, PORT)))
            .collect()
    }

    /// The index of member `name`.
    fn index(&self, name: &str) -> Result<usize> {
        self.members
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| anyhow!("the topology has no member {name}"))
    }

    /// Indexes of a pair of members.
    fn pair(&self, names: [&str; 2]) -> Result<(usize, usize)> {
        Ok((self.index(names[0])?, self.index(names[1])?))
    }

    /// Where `m` sits, in words.
    fn site_text(&self, m: &Member) -> String {
        match m.site {
            Site::Public => "public".into(),
            Site::Behind(i) => {
                let s = &self.sites[i];
                format!("{} LAN behind a {} at {}", s.name, s.kind_text(), s.public)
            }
        }
    }

    /// The NAT kind `m` sits behind (`None`: public).
    fn nat_kind(&self, m: &Member) -> Option<NatKind> {
        match m.site {
            Site::Public => None,
            Site::Behind(i) => Some(self.sites[i].kind),
        }
    }
}

/// Files a member's config points at.
pub struct MemberPaths<'a> {
    pub secret_file: &'a Path,
    pub key_file: &'a Path,
    pub socket: &'a Path,
}

/// The config of member `m`: MAC derived from the key, listening on every
/// address, the introducers of the topology (no other STUN server: the
/// introducer's second STUN port tells each node its NAT's mapping),
/// relaying as the topology says, log level info.
pub fn render_config(topo: &Topology, m: &Member, paths: &MemberPaths) -> String {
    let mut c = AgentConfig::new(
        NETWORK,
        paths.secret_file,
        &m.name,
        paths.key_file,
        paths.socket,
    );
    c.header = Some(format!(
        "ringlan demo member `{}` (generated by `ringlan demo`)",
        m.name
    ));
    c.tap = TAP_NAME.into();
    c.mac = Some("auto".into());
    c.addresses = vec![format!("{}/{OVERLAY_PREFIX}", m.overlay)];
    c.listen_address = Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    c.port = Some(PORT);
    if m.role == Role::Node {
        c.introducers = topo.introducer_endpoints();
    }
    c.role = Some(m.role.as_str().into());
    c.log_level = Some("info".into());
    if m.role == Role::Node && m.relay {
        c.extra = "relay:\n  enabled: true\n".into();
    }
    c.render()
}

// ---------------------------------------------------------------------------
// The running demo
// ---------------------------------------------------------------------------

/// The lab with one started agent per topology member.
struct Demo {
    lab: Arc<Lab>,
    topo: Topology,
    /// Parallel to `topo.members`.
    nodes: Vec<Node>,
    /// Parallel to `topo.members`: killed on purpose (the relay).
    killed: Vec<bool>,
    /// Pings that run until the end of the show.
    pings: Vec<Proc>,
    bin: PathBuf,
}

/// Set once the show is complete: Ctrl-C afterwards is the normal way out.
static SHOW_DONE: AtomicBool = AtomicBool::new(false);
/// Set when SIGINT/SIGTERM arrived.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The host tools the demo lab runs, with the Debian package of each.
const TOOLS: [(&str, &str); 3] = [
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("nft", "nftables"),
];

/// Make sure the lab's host tools exist. The demo is the "one command" a
/// newcomer runs on a fresh Debian machine as root, so missing packages are
/// installed with apt-get (saying so); elsewhere it says what to install.
fn ensure_tools() -> Result<(), String> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(tool, _)| ringlan_lab::which(tool).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if ringlan_lab::which("apt-get").is_none() {
        return Err(format!("missing host tools: install {list}"));
    }
    println!("Installing the Debian packages the lab needs: {list}");
    let ok = std::process::Command::new("apt-get")
        .args(["update", "-q"])
        .status()
        .is_ok_and(|s| s.success())
        && std::process::Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "could not install {list} with apt-get; install them and retry"
        ))
    }
}

/// `ringlan demo`.
pub fn run(args: &DemoArgs) -> ExitCode {
    // Checked first: a typo should not cost a lab.
    let svg = match picture_path(&args.svg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ringlan demo: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if !ringlan_lab::is_root() {
        eprintln!("ringlan demo builds network namespaces and needs root: sudo ringlan demo");
        return ExitCode::FAILURE;
    }
    if let Err(e) = ensure_tools() {
        eprintln!("ringlan demo: {e}");
        return ExitCode::FAILURE;
    }
    let bin = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ringlan demo: cannot find its own binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let topo = Topology::standard();
    println!(
        "ringlan demo: {} agents join one virtual Ethernet LAN across NATs: an introducer and a\n\
         relay on the internet, two nodes on an office LAN, one behind a cone-like NAT and two\n\
         behind symmetric NATs, each in its own network namespace on this machine. Everything\n\
         is removed at the end.",
        topo.members.len(),
    );

    let lab = match Lab::new() {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("ringlan demo: cannot create the lab: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = install_signal_cleanup(Arc::downgrade(&lab)) {
        eprintln!("ringlan demo: cannot install the Ctrl-C handler: {e:#}");
        lab.shutdown();
        return ExitCode::FAILURE;
    }

    let started = Instant::now();
    let result = show(&lab, &topo, &bin, &svg, args.keep, started);
    if INTERRUPTED.load(Ordering::SeqCst) {
        // The signal thread is removing the lab (whatever `show` returned is
        // a consequence of that) and exits the process when done.
        loop {
            std::thread::park();
        }
    }
    let failed = match &result {
        Ok(()) => false,
        Err(e) => {
            eprintln!("\nringlan demo FAILED: {e:#}\n");
            lab.dump_logs();
            true
        }
    };
    let summary = cleanup(&lab);
    match summary {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!("ringlan demo: cleanup incomplete: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    if failed {
        eprintln!("ringlan demo failed after {:.1} s", secs(started.elapsed()));
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Steps 1-7 (and the `--keep` loop).
fn show(
    lab: &Arc<Lab>,
    topo: &Topology,
    bin: &Path,
    svg: &Path,
    keep: bool,
    started: Instant,
) -> Result<()> {
    heading(1, "Building the lab");
    let mut demo = build(lab.clone(), topo, bin)?;

    heading(2, "Starting the agents");
    demo.start()?;

    heading(
        3,
        "Joining: each member's session with the introducer, and its NAT",
    );
    let joined = demo.wait_joined(JOIN_TIMEOUT)?;
    println!(
        "  all {} members joined after {:.1} s",
        topo.members.len(),
        secs(joined)
    );

    heading(4, "Paths: on the LAN, punched through NATs, relayed");
    let paths = demo.wait_paths(PATHS_TIMEOUT)?;
    let (s1, _) = topo.pair(RELAYED_PAIR)?;
    let n = &demo.nodes[s1];
    println!(
        "\n---- {}: ringlan status --socket {}",
        n.name,
        n.socket.display()
    );
    print!("{}", indent(&demo.status_text(n)?));

    heading(5, "The picture: ringlan topology --format svg");
    demo.picture(topo.index(PICTURE_FROM)?, svg)?;

    heading(6, "Traffic through the relay");
    let traffic = demo.relayed_traffic()?;

    heading(7, "Killing the relay under a running TCP stream");
    let failover = demo.kill_relay()?;
    for p in &demo.pings {
        let _ = lab.kill(p);
    }

    println!("\n  after the show:");
    print!("{}", indent(&demo.summary_table()));
    SHOW_DONE.store(true, Ordering::SeqCst);

    println!(
        "\nDone in {:.1} s: {} agents formed one virtual Ethernet LAN {OVERLAY}/{OVERLAY_PREFIX} \
         across four NATs in {:.1} s;\n{paths}\nthe picture: {};\n{traffic}\n{failover}",
        secs(started.elapsed()),
        topo.members.len(),
        secs(joined),
        svg.display(),
    );
    if keep {
        demo.keep_running();
    }
    Ok(())
}

/// Step 1: namespaces, the bridges, the NAT routers, keys, the secret and
/// configs.
fn build(lab: Arc<Lab>, topo: &Topology, bin: &Path) -> Result<Demo> {
    println!(
        "  namespaces {}*; the internet: a bridge, {INTERNET}/{INTERNET_PREFIX}",
        lab.prefix()
    );
    let internet = lab
        .switch("internet")
        .context("create the internet bridge")?;
    let mut lans: Vec<(Switch, IpAddr)> = Vec::with_capacity(topo.sites.len());
    for s in &topo.sites {
        let lan = lab
            .switch(&format!("lan-{}", s.name))
            .with_context(|| format!("create the {} LAN", s.name))?;
        let router = lab
            .nat_router(
                &format!("nat-{}", s.name),
                s.kind,
                &lan,
                &format!("{}/{SITE_PREFIX}", s.router_inside()),
                &internet,
                &format!("{}/{INTERNET_PREFIX}", s.public),
            )
            .with_context(|| format!("create the {} NAT router", s.name))?;
        println!(
            "  {:<7} LAN {}/{SITE_PREFIX} behind a {}, public {}",
            s.name,
            s.lan,
            s.kind_text(),
            s.public
        );
        lans.push((lan, router.inside_addr));
    }
    let secret_file = lab.dir().join(format!("{NETWORK}.secret"));
    let secret = NetworkSecret::generate().context("make the network secret")?;
    identity::write_private(&secret_file, secret.bytes(), identity::SECRET_MODE, false)?;

    println!();
    let mut nodes = Vec::with_capacity(topo.members.len());
    for m in &topo.members {
        let host = match m.site {
            Site::Public => lab.host(
                &m.name,
                &internet,
                &format!("{}/{INTERNET_PREFIX}", m.underlay),
                None,
            ),
            Site::Behind(i) => {
                let (lan, gateway) = &lans[i];
                lab.host(
                    &m.name,
                    lan,
                    &format!("{}/{SITE_PREFIX}", m.underlay),
                    Some(*gateway),
                )
            }
        }
        .with_context(|| format!("create host {}", m.name))?;
        let node = lab.node(&host.ns, &m.name, bin)?;
        let key = NodeKey::generate().context("make a node key")?;
        identity::write_private(
            &node.key_file,
            key.secret_bytes(),
            identity::KEY_MODE,
            false,
        )?;
        let yaml = render_config(
            topo,
            m,
            &MemberPaths {
                secret_file: &secret_file,
                key_file: &node.key_file,
                socket: &node.socket,
            },
        );
        node.write_config(&yaml)?;
        // Fail here, with the file and line, rather than in an agent log.
        Config::load_and_check(&node.config)?;
        let role = match (m.role, m.relay) {
            (Role::Introducer, _) => "introducer, relays",
            (_, true) => "node, relays",
            _ => "node",
        };
        println!(
            "  {:<6} {:<18}  {:<13}  TAP {}/{OVERLAY_PREFIX}  {}",
            m.name,
            role,
            m.underlay,
            m.overlay,
            topo.site_text(m)
        );
        nodes.push(node);
    }
    println!(
        "  configs, keys, the network secret and logs: {}",
        lab.dir().display()
    );
    Ok(Demo {
        lab,
        topo: topo.clone(),
        killed: vec![false; nodes.len()],
        pings: Vec::new(),
        nodes,
        bin: bin.to_path_buf(),
    })
}

impl Demo {
    /// Step 2: `ringlan up -c CONFIG` in every namespace.
    fn start(&mut self) -> Result<()> {
        println!("  {} up -c CONFIG, in each namespace:", self.bin.display());
        for n in &mut self.nodes {
            self.lab.start_node(n)?;
            let p = n
                .proc
                .as_ref()
                .ok_or_else(|| anyhow!("{} not started", n.name))?;
            println!("  {:<6} pid {:<7} log {}", n.name, p.pid, p.log.display());
        }
        Ok(())
    }

    fn name(&self, i: usize) -> &str {
        &self.topo.members[i].name
    }

    /// `a <-> b`.
    fn pair_name(&self, (a, b): (usize, usize)) -> String {
        format!("{} <-> {}", self.name(a), self.name(b))
    }

    /// Fails when an agent has exited that was not killed on purpose.
    fn check_alive(&self) -> Result<()> {
        for (n, killed) in self.nodes.iter().zip(&self.killed) {
            if let (Some(p), false) = (&n.proc, killed) {
                if let Some(st) = self.lab.try_status(p)? {
                    bail!("agent {} exited ({st})", n.name);
                }
            }
        }
        Ok(())
    }

    fn status(&self, n: &Node) -> Result<Status> {
        serde_json::from_value(n.status()?).context("decode status")
    }

    /// The status of every member that answers (killed ones do not).
    fn poll(&self) -> Vec<Option<Status>> {
        self.nodes
            .iter()
            .zip(&self.killed)
            .map(|(n, &killed)| if killed { None } else { self.status(n).ok() })
            .collect()
    }

    /// `st[a]`'s open session with member `b`.
    fn session<'s>(
        &self,
        st: &'s [Option<Status>],
        a: usize,
        b: usize,
    ) -> Option<&'s SessionStatus> {
        let id = st[b].as_ref().and_then(|s| s.node_id.as_deref());
        open_session_with(st[a].as_ref()?, id, self.name(b))
    }

    /// The member a relay is named by in a `via` list (node name or short
    /// id).
    fn member_named(&self, st: &[Option<Status>], name: &str) -> Option<usize> {
        self.topo
            .members
            .iter()
            .position(|m| m.name == name)
            .or_else(|| {
                st.iter().position(|s| {
                    s.as_ref()
                        .and_then(|s| s.node_id.as_deref())
                        .is_some_and(|id| !name.is_empty() && id.starts_with(name))
                })
            })
    }

    /// Whether `path` runs through member `relay`.
    fn path_uses(&self, path: &PathKind, st: &[Option<Status>], relay: usize) -> bool {
        match path {
            PathKind::Relayed { via, .. } => via
                .split('>')
                .any(|r| self.member_named(st, r) == Some(relay)),
            _ => false,
        }
    }

    /// Whether member `relay`'s status lists a ready route it carries
    /// between members `a` and `b` (either way) whose neighbours are not
    /// `avoid` (a route `relay>avoid` dies with `avoid`).
    fn carries(
        &self,
        st: &[Option<Status>],
        relay: usize,
        a: usize,
        b: usize,
        avoid: usize,
    ) -> bool {
        let id = |i: usize| st[i].as_ref().and_then(|s| s.node_id.as_deref());
        let (Some(ia), Some(ib)) = (id(a), id(b)) else {
            return false;
        };
        st[relay]
            .as_ref()
            .and_then(|s| s.relay.as_ref())
            .is_some_and(|r| {
                r.routes.iter().any(|c| {
                    c.ready
                        && ((c.origin == ia && c.target == ib)
                            || (c.origin == ib && c.target == ia))
                        && [&c.from, &c.to]
                            .iter()
                            .all(|n| self.member_named(st, n) != Some(avoid))
                })
            })
    }

    /// The human `ringlan status --socket PATH` of the re-executed binary.
    fn status_text(&self, n: &Node) -> Result<String> {
        let out = self.ask(n, &["status"])?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// `BIN ARGS... --socket PATH` of member `n` (its control socket, from
    /// this namespace); its stdout, or an error with its stderr.
    fn ask(&self, n: &Node, args: &[&str]) -> Result<Vec<u8>> {
        let what = args.join(" ");
        let out = Command::new(&self.bin)
            .args(args)
            .arg("--socket")
            .arg(&n.socket)
            .output()
            .with_context(|| format!("run {} {what}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "ringlan {what} of {} failed: {}",
                n.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// Step 3: polls every agent's status until each node has an open
    /// session with the introducer and knows its NAT's mapping; prints a
    /// line per member as it gets there. Returns the time taken.
    fn wait_joined(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let n = self.nodes.len();
        let intro = self
            .topo
            .members
            .iter()
            .position(|m| m.role == Role::Introducer)
            .ok_or_else(|| anyhow!("the topology has no introducer"))?;
        let mut joined = vec![false; n];
        let mut nat_known = vec![false; n];
        println!("  (up to {} s)", timeout.as_secs());
        loop {
            self.check_alive()?;
            let st = self.poll();
            for (i, m) in self.topo.members.iter().enumerate() {
                let Some(s) = &st[i] else { continue };
                let t = secs(start.elapsed());
                if !joined[i] {
                    if m.role == Role::Introducer {
                        joined[i] = true;
                        // An introducer asks no STUN server of its own.
                        nat_known[i] = true;
                        println!(
                            "  {t:>5.1} s  {:<6} up: introducer at {}:{PORT} (STUN on :{PORT} and \
                             :{}), relays; TAP {} {}",
                            m.name,
                            m.underlay,
                            PORT + 1,
                            s.tap.name,
                            s.tap.mac
                        );
                    } else if let Some(x) = self.session(&st, i, intro) {
                        joined[i] = true;
                        println!(
                            "  {t:>5.1} s  {:<6} joined: session with {} open ({}{}); TAP {} {}",
                            m.name,
                            self.name(intro),
                            x.path,
                            x.rtt_ms.map(|r| format!(", {r:.2} ms")).unwrap_or_default(),
                            s.tap.name,
                            s.tap.mac
                        );
                    }
                }
                if joined[i] && !nat_known[i] && s.nat.mapping != NatBehaviour::Unknown {
                    nat_known[i] = true;
                    let reflexive: Vec<String> =
                        s.nat.reflexive.iter().map(|a| a.to_string()).collect();
                    println!(
                        "  {t:>5.1} s  {:<6} NAT mapping {}: {}; public address {}",
                        m.name,
                        s.nat.mapping,
                        nat_words(s.nat.mapping, self.topo.nat_kind(m)),
                        if reflexive.is_empty() {
                            "unknown".into()
                        } else {
                            reflexive.join(", ")
                        }
                    );
                }
            }
            if joined.iter().all(|&j| j) && nat_known.iter().all(|&k| k) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                let missing = |v: &[bool]| -> String {
                    let names: Vec<&str> =
                        (0..n).filter(|&i| !v[i]).map(|i| self.name(i)).collect();
                    if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    }
                };
                bail!(
                    "the members did not join within {} s: not joined: {}; NAT mapping unknown: \
                     {}. The agent logs follow.",
                    timeout.as_secs(),
                    missing(&joined),
                    missing(&nat_known)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Step 4: pings across the show's pairs (a direct session opens when
    /// enough traffic wants one, [`PINGS_PER_SEC`]) until `lan-1 <-> lan-2` is direct on the LAN, `sym-1` and
    /// `sym-2` reach the public relay directly, `cone <-> sym-1` is direct
    /// through both NATs and `sym-1 <-> sym-2` relayed with a standby route;
    /// prints each pair's path as it changes. Returns a one-line summary.
    fn wait_paths(&mut self, timeout: Duration) -> Result<String> {
        let mut goals = vec![
            PathGoal::new(self.topo.pair(LAN_PAIR)?, Goal::Lan),
            PathGoal::new(self.topo.pair([RELAYED_PAIR[0], RELAY])?, Goal::Public),
            PathGoal::new(self.topo.pair([RELAYED_PAIR[1], RELAY])?, Goal::Public),
            PathGoal::new(self.topo.pair(PUNCHED_PAIR)?, Goal::Punched),
            PathGoal::new(self.topo.pair(RELAYED_PAIR)?, Goal::Relayed),
        ];
        let mut pings: Vec<Proc> = Vec::new();
        let interval = format!("{}", 1.0 / f64::from(PINGS_PER_SEC));
        let relay = self.topo.index(RELAY)?;
        for g in &goals {
            let (a, b) = g.pair;
            let target = self.topo.members[b].overlay.to_string();
            // The pings to the relay go on until the end of the show: they
            // keep it a link of the relayed pair (should the ring drop it,
            // the traffic brings it back as an on-demand link), and only
            // links relay routes.
            let to_relay = b == relay;
            println!(
                "  ping {} -> {} ({target}), {PINGS_PER_SEC} a second, until {}",
                self.name(a),
                self.name(b),
                if to_relay {
                    "the end of the show (it keeps relay a link of theirs, so a relay for them)"
                } else {
                    g.goal.wanted()
                }
            );
            let p = self.lab.spawn(
                &self.nodes[a].ns,
                &format!("ping-{}-{}", self.name(a), self.name(b)),
                &["ping", "-n", "-q", "-i", &interval, &target],
            )?;
            if to_relay {
                self.pings.push(p);
            } else {
                pings.push(p);
            }
        }
        println!("  (up to {} s)", timeout.as_secs());
        let start = Instant::now();
        let result = loop {
            if let Err(e) = self.check_alive() {
                break Err(e);
            }
            let st = self.poll();
            let t = start.elapsed();
            for g in &mut goals {
                let (a, b) = g.pair;
                let ends = [self.session(&st, a, b), self.session(&st, b, a)];
                let seen = ends[0].map(|x| x.path.to_string());
                if seen.is_some() && seen != g.last {
                    println!(
                        "  {:>5.1} s  {}  {}",
                        secs(t),
                        self.pair_name(g.pair),
                        seen.as_deref().unwrap_or("")
                    );
                    g.last = seen;
                }
                if g.reached.is_none() {
                    if let [Some(x), Some(y)] = ends {
                        if g.goal.holds(&x.path, &y.path) {
                            g.reached = Some(t);
                            println!(
                                "            {}: {}",
                                self.pair_name(g.pair),
                                self.explain(g.goal, a, b, x)
                            );
                        }
                    }
                }
            }
            if goals.iter().all(|g| g.reached.is_some()) {
                break Ok(());
            }
            if t >= timeout {
                // What each end of a pair that did not form says of itself
                // (its sessions and paths, its NAT, drops such as
                // `unverified_ip_budget`): the logs that follow show only
                // the last lines of each agent.
                let ends: std::collections::BTreeSet<usize> = goals
                    .iter()
                    .filter(|g| g.reached.is_none())
                    .flat_map(|g| [g.pair.0, g.pair.1])
                    .collect();
                for i in ends {
                    let n = &self.nodes[i];
                    println!(
                        "\n---- {}: ringlan status --socket {}",
                        n.name,
                        n.socket.display()
                    );
                    match self.status_text(n) {
                        Ok(s) => print!("{}", indent(&s)),
                        Err(e) => println!("  (no status: {e:#})"),
                    }
                }
                let open: Vec<String> = goals
                    .iter()
                    .filter(|g| g.reached.is_none())
                    .map(|g| {
                        format!(
                            "{} is {} (wanted {})",
                            self.pair_name(g.pair),
                            g.last.as_deref().unwrap_or("not open"),
                            g.goal.wanted()
                        )
                    })
                    .collect();
                break Err(anyhow!(
                    "the paths did not form within {} s: {}. The agent logs follow.",
                    timeout.as_secs(),
                    open.join("; ")
                ));
            }
            std::thread::sleep(POLL);
        };
        for p in &pings {
            let _ = self.lab.kill(p);
        }
        result?;
        let parts: Vec<String> = goals
            .iter()
            .map(|g| {
                format!(
                    "{} {} after {:.1} s",
                    self.pair_name(g.pair),
                    g.last.as_deref().unwrap_or(""),
                    secs(g.reached.unwrap_or_default())
                )
            })
            .collect();
        Ok(format!("paths: {}.", parts.join("; ")))
    }

    /// What a reached path goal means, in words.
    fn explain(&self, goal: Goal, a: usize, b: usize, x: &SessionStatus) -> String {
        let remote = x.remote.map(|r| r.to_string()).unwrap_or_default();
        let (ma, mb) = (&self.topo.members[a], &self.topo.members[b]);
        match goal {
            Goal::Lan => format!(
                "direct-lan on both ends: {} and {} share the {} LAN and talk on it \
                 ({} sends to {remote}), not through their NAT",
                ma.name,
                mb.name,
                self.site_name(ma),
                ma.name
            ),
            Goal::Public => format!(
                "direct: {} is public, so {}'s packets through its NAT get answers on the \
                 mapping they made; no punching needed",
                mb.name, ma.name
            ),
            Goal::Punched => format!(
                "direct-nat on both ends: punched through both NATs (birthday punching \
                 meets {}'s symmetric NAT; {} sends to {remote})",
                self.symmetric_one(a, b),
                ma.name
            ),
            Goal::Relayed => format!(
                "relayed on both ends: no punch crosses two symmetric NATs; {} has a standby \
                 route through another relay",
                ma.name
            ),
        }
    }

    fn site_name(&self, m: &Member) -> &str {
        match m.site {
            Site::Public => "public",
            Site::Behind(i) => &self.topo.sites[i].name,
        }
    }

    /// The member of a pair behind a symmetric NAT.
    fn symmetric_one(&self, a: usize, b: usize) -> &str {
        let sym =
            |i: usize| self.topo.nat_kind(&self.topo.members[i]) == Some(NatKind::FullyRandom);
        if sym(a) {
            self.name(a)
        } else if sym(b) {
            self.name(b)
        } else {
            "neither"
        }
    }

    /// Waits for the first ping `a -> b` to get through, then pings
    /// [`PING_COUNT`] times and prints the summary; returns the packet and
    /// RTT summary.
    fn ping(&self, a: usize, b: usize) -> Result<String> {
        let (from, to) = (&self.topo.members[a], &self.topo.members[b]);
        let to_ip = IpAddr::V4(to.overlay);
        let from_ns = &self.nodes[a].ns;
        println!(
            "  ping from {} ({}) to {} ({}) through {TAP_NAME}:",
            from.name, from.overlay, to.name, to.overlay
        );
        // The first ping may also resolve the address (ARP across the
        // overlay); wait for it before measuring.
        ringlan_lab::wait_until(FIRST_PING_TIMEOUT, || {
            self.lab.ping(from_ns, to_ip, 1) || self.check_alive().is_err()
        })
        .map_err(|_| {
            anyhow!(
                "{} cannot reach {} across the virtual LAN within {} s",
                from.name,
                to.overlay,
                FIRST_PING_TIMEOUT.as_secs()
            )
        })?;
        self.check_alive()?;
        let out = self.lab.exec(
            from_ns,
            &[
                "ping",
                "-n",
                "-c",
                &PING_COUNT.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                &to_ip.to_string(),
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("---"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        for l in &summary {
            println!("    {l}");
        }
        let stats = summary
            .iter()
            .find(|l| l.contains("packets transmitted"))
            .copied()
            .unwrap_or("");
        let rtt = summary
            .iter()
            .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.trim().split('/').nth(1))
            .map(|avg| format!("avg RTT {avg} ms"))
            .unwrap_or_else(|| "no RTT".into());
        if !out.status.success() {
            bail!(
                "ping {} -> {} failed: {}{}",
                from.name,
                to.name,
                stats,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(format!(
            "{} ({rtt})",
            stats.split(", time").next().unwrap_or(stats)
        ))
    }

    /// Step 5: `ringlan topology --format svg` of member `from` (this
    /// binary, run like `status`), once it names every member, written to
    /// `path` (owned by the user who ran `sudo`, when one did).
    fn picture(&self, from: usize, path: &Path) -> Result<()> {
        let n = &self.nodes[from];
        println!(
            "  {} topology --format svg --socket {}",
            self.bin.display(),
            n.socket.display()
        );
        let names: Vec<&str> = self.topo.members.iter().map(|m| m.name.as_str()).collect();
        let mut missing: Vec<&str> = names.clone();
        let svg = ringlan_lab::wait_for(PICTURE_TIMEOUT, "a picture naming every member", || {
            self.check_alive()?;
            let svg = self.topology_svg(n)?;
            missing = names
                .iter()
                .filter(|m| !svg.contains(&format!("data-name=\"{m}\"")))
                .copied()
                .collect();
            Ok(missing.is_empty().then_some(svg))
        })
        .with_context(|| format!("the picture lacks {}", missing.join(", ")))?;
        std::fs::write(path, &svg).with_context(|| format!("write {}", path.display()))?;
        give_to_sudo_user(path);
        println!(
            "  the network as {} sees it: {} members on the ring, links and paths by kind\n  \
             wrote {} ({}); open it in a browser",
            n.name,
            names.len(),
            path.display(),
            format_bytes(svg.len() as u64)
        );
        Ok(())
    }

    /// The SVG `ringlan topology --format svg --socket PATH` prints.
    fn topology_svg(&self, n: &Node) -> Result<String> {
        let out = self.ask(n, &["topology", "--format", "svg"])?;
        let svg = String::from_utf8(out).context("the SVG is not UTF-8")?;
        if !svg.contains("<svg") || !svg.trim_end().ends_with("</svg>") {
            bail!("ringlan topology --format svg printed no SVG document");
        }
        Ok(svg)
    }

    /// Step 6: ping and a TCP transfer across the relayed pair; what each
    /// relay carried. Returns a one-line summary.
    fn relayed_traffic(&self) -> Result<String> {
        let (a, b) = self.topo.pair(RELAYED_PAIR)?;
        let ping = self.ping(a, b)?;
        let (from, to) = (&self.topo.members[a], &self.topo.members[b]);
        println!(
            "\n  TCP: {TRANSFER_MIB} MiB of pseudo-random bytes from {} to {}:{TRANSFER_PORT}, \
             SHA-256 on both ends:",
            from.name, to.overlay
        );
        let tr = self.lab.tcp_transfer(
            &self.nodes[a].ns,
            &self.nodes[b].ns,
            IpAddr::V4(to.overlay),
            TRANSFER_PORT,
            TRANSFER_MIB,
            TRANSFER_TIMEOUT,
        )?;
        let rate = check_transfer(&tr)?;
        // Agents publish status every second; give the relays a moment to
        // count the transfer.
        let _ = ringlan_lab::wait_until(COUNTER_WAIT, || {
            self.relays()
                .iter()
                .map(|(_, carried)| *carried)
                .sum::<u64>()
                >= tr.bytes_sent
        });
        for (i, carried) in self.relays() {
            println!(
                "  {:<6} relayed {} so far (status: relay routes, both directions)",
                self.name(i),
                format_bytes(carried)
            );
        }
        Ok(format!(
            "through the relay: ping {} -> {}: {ping}; {TRANSFER_MIB} MiB over TCP at {rate}, \
             checksums match.",
            from.name, to.name
        ))
    }

    /// Bytes each relaying member has carried, both directions, from its
    /// status.
    fn relays(&self) -> Vec<(usize, u64)> {
        let st = self.poll();
        (0..self.nodes.len())
            .filter_map(|i| {
                let r = st[i].as_ref()?.relay.as_ref()?;
                r.enabled.then(|| {
                    let bytes = r
                        .routes
                        .iter()
                        .map(|c| c.forward.bytes + c.back.bytes)
                        .sum();
                    (i, bytes)
                })
            })
            .collect()
    }

    /// Step 7: a TCP stream across the relayed pair; SIGKILL to the relay
    /// its session uses; waits until the session runs on another path and
    /// the stream has moved on, then checks the stream and pings. Returns
    /// a one-line summary.
    fn kill_relay(&mut self) -> Result<String> {
        let (a, b) = self.topo.pair(RELAYED_PAIR)?;
        // Failover needs a standby route through another relay: wait until
        // the session is relayed and a relay other than the one in use
        // carries a route for the pair (its status lists it).
        let mut seen = String::from("no session");
        let (st, victim, standby) = ringlan_lab::wait_for(
            FAILOVER_TIMEOUT,
            "a standby route through the other relay",
            || {
                self.check_alive()?;
                let st = self.poll();
                let Some(x) = self.session(&st, a, b) else {
                    return Ok(None);
                };
                seen = x.path.to_string();
                let PathKind::Relayed { via, .. } = &x.path else {
                    return Ok(None);
                };
                let first = via.split('>').next().unwrap_or_default();
                let Some(victim) = self.member_named(&st, first) else {
                    return Ok(None);
                };
                let standby = (0..self.nodes.len())
                    .find(|&r| r != victim && self.carries(&st, r, a, b, victim));
                Ok(standby.map(|w| (st, victim, w)))
            },
        )
        .with_context(|| {
            format!(
                "{} -> {} ({seen}) has no standby route through another relay to fail over to",
                self.name(a),
                self.name(b)
            )
        })?;
        let x = self
            .session(&st, a, b)
            .ok_or_else(|| anyhow!("{} has no session with {}", self.name(a), self.name(b)))?;
        let before = x.path.clone();
        let tx_before = x.tx.bytes;
        let (from, to) = (&self.topo.members[a], &self.topo.members[b]);
        println!(
            "  before: {} -> {}  {before}; {} carries the standby route",
            from.name,
            to.name,
            self.name(standby)
        );
        let job = self.lab.tcp_stream(
            &self.nodes[a].ns,
            &self.nodes[b].ns,
            IpAddr::V4(to.overlay),
            STREAM_PORT,
            TRANSFER_TIMEOUT,
        )?;
        ringlan_lab::wait_for(FAILOVER_TIMEOUT, "the stream flowing", || {
            if !job.is_running() {
                bail!("the stream ended");
            }
            Ok((job.received() > STREAM_STEP).then_some(()))
        })?;
        println!(
            "  TCP stream {} -> {}:{STREAM_PORT} running ({} so far)",
            from.name,
            to.overlay,
            format_bytes(job.received())
        );
        let proc = self.nodes[victim]
            .proc
            .clone()
            .ok_or_else(|| anyhow!("{} was not started", self.name(victim)))?;
        let what = match self.topo.members[victim].role {
            Role::Introducer => "the introducer, the relay in use",
            Role::Node => "the relay in use",
        };
        println!(
            "  kill -KILL {} ({}: {what}; it closes nothing)",
            proc.pid,
            self.name(victim)
        );
        let killed_at = Instant::now();
        let at = job.received();
        self.lab.signal(&proc, libc::SIGKILL)?;
        self.killed[victim] = true;
        self.lab.wait(&proc, Duration::from_secs(5))?;

        // Sample the stream every 20 ms for its longest pause; poll status
        // for the session's path.
        let mut last = job.received();
        let mut last_at = Instant::now();
        let mut stall = Duration::ZERO;
        let mut next_poll = Instant::now();
        let mut seen = Some(before.to_string());
        let mut moved: Option<(Duration, PathKind)> = None;
        loop {
            let now = job.received();
            if now != last {
                stall = stall.max(last_at.elapsed());
                last = now;
                last_at = Instant::now();
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + POLL;
                self.check_alive()?;
                let st = self.poll();
                if let Some(x) = self.session(&st, a, b) {
                    let path = x.path.to_string();
                    if seen.as_deref() != Some(&path) {
                        println!(
                            "  {:>5.2} s  {} -> {}  {path}",
                            secs(killed_at.elapsed()),
                            from.name,
                            to.name
                        );
                        seen = Some(path);
                    }
                    if moved.is_none() && !self.path_uses(&x.path, &st, victim) {
                        moved = Some((killed_at.elapsed(), x.path.clone()));
                    }
                }
            }
            if moved.is_some() && job.received() > at + STREAM_STEP {
                break;
            }
            if !job.is_running() {
                bail!("the stream ended after the relay died");
            }
            if killed_at.elapsed() >= FAILOVER_TIMEOUT {
                bail!(
                    "{} -> {} did not move on within {} s after {} died: session {}, the \
                     stream moved {} since",
                    from.name,
                    to.name,
                    FAILOVER_TIMEOUT.as_secs(),
                    self.name(victim),
                    seen.as_deref().unwrap_or("gone"),
                    format_bytes(job.received() - at)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (moved_after, after) = moved.unwrap_or((Duration::ZERO, PathKind::None));
        let st = self.poll();
        let same = self
            .session(&st, a, b)
            .is_some_and(|x| x.tx.bytes > tx_before);
        let back = self
            .session(&st, b, a)
            .map(|y| y.path.to_string())
            .unwrap_or_else(|| "no session".into());
        println!(
            "  after:  {} -> {}  {after} ({:.2} s after the kill{}); {} -> {}  {back}",
            from.name,
            to.name,
            secs(moved_after),
            if same {
                ", the same session: its counters went on"
            } else {
                ""
            },
            to.name,
            from.name,
        );
        println!(
            "  the stream's longest pause: {:.2} s; {} moved since the kill",
            secs(stall),
            format_bytes(job.received() - at)
        );
        let tr = job.finish()?;
        println!("  the stream, ended:");
        let rate = check_transfer(&tr)?;
        let ping = self.ping(a, b)?;
        Ok(format!(
            "the relay in use ({}) killed: {} -> {} went from {before} to {after} in {:.2} s, \
             the TCP stream paused at most {:.2} s and arrived intact ({} at {rate}); ping \
             afterwards: {ping}.",
            self.name(victim),
            from.name,
            to.name,
            secs(moved_after),
            secs(stall),
            format_bytes(tr.bytes_received),
        ))
    }

    /// One line per member: sessions and traffic, from `status --json`.
    fn summary_table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{:<6}  {:<10}  {:<14}  {:>8}  {:>10}  {:>10}  UPTIME",
            "NAME", "ROLE", "TAP ADDRESS", "SESSIONS", "TX", "RX"
        );
        for (i, (m, n)) in self.topo.members.iter().zip(&self.nodes).enumerate() {
            let line = if self.killed[i] {
                format!("{:<6}  killed (SIGKILL)", m.name)
            } else {
                match self.status(n) {
                    Ok(s) => {
                        let open = s
                            .sessions
                            .iter()
                            .filter(|x| x.state == SessionPhase::Open)
                            .count();
                        let tx: u64 = s.sessions.iter().map(|x| x.tx.bytes).sum();
                        let rx: u64 = s.sessions.iter().map(|x| x.rx.bytes).sum();
                        format!(
                            "{:<6}  {:<10}  {:<14}  {:>8}  {:>10}  {:>10}  {}",
                            m.name,
                            m.role.as_str(),
                            format!("{}/{OVERLAY_PREFIX}", m.overlay),
                            format!("{open} open"),
                            format_bytes(tx),
                            format_bytes(rx),
                            format_duration(s.uptime_secs)
                        )
                    }
                    Err(e) => format!("{:<6}  status unavailable: {e:#}", m.name),
                }
            };
            let _ = writeln!(o, "{line}");
        }
        o
    }

    /// `--keep`: print a status summary every few seconds until Ctrl-C (the
    /// signal thread removes the lab and exits the process).
    fn keep_running(&self) {
        let (from, to) = self.topo.pair(RELAYED_PAIR).unwrap_or((0, 0));
        println!(
            "\nThe lab keeps running (--keep); press Ctrl-C to remove it. Try, in another terminal:\n  \
             sudo ip netns exec {} ping {}\n  sudo {} status --socket {}",
            self.nodes[from].ns,
            self.topo.members[to].overlay,
            self.bin.display(),
            self.nodes[from].socket.display()
        );
        let start = Instant::now();
        loop {
            std::thread::sleep(KEEP_INTERVAL);
            if INTERRUPTED.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = self.check_alive() {
                if !INTERRUPTED.load(Ordering::SeqCst) {
                    eprintln!("  {e:#}");
                }
                return;
            }
            let table = self.summary_table();
            if INTERRUPTED.load(Ordering::SeqCst) {
                return;
            }
            println!(
                "\n  status at +{}:",
                format_duration(start.elapsed().as_secs())
            );
            print!("{}", indent(&table));
        }
    }
}

/// The last step: stop the agents, delete the namespaces and files, and check
/// nothing with the lab's prefix is left.
fn cleanup(lab: &Lab) -> Result<String> {
    heading(STEPS, "Cleaning up");
    let count = lab.namespaces().len();
    let dir = lab.dir().to_path_buf();
    lab.shutdown();
    let left = ringlan_lab::netns_with_prefix(lab.prefix())?;
    if !left.is_empty() {
        bail!("namespaces left behind: {}", left.join(", "));
    }
    Ok(format!(
        "  stopped the agents, removed {count} namespaces ({}*) and {}",
        lab.prefix(),
        dir.display()
    ))
}

/// SIGINT/SIGTERM: remove the lab from a dedicated thread (the main thread
/// may be blocked in a transfer or a wait) and exit.
fn install_signal_cleanup(lab: Weak<Lab>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Register before returning, so a signal right after is already ours.
    let (mut int, mut term) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            let (name, signo) = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => ("SIGINT", libc::SIGINT),
                    _ = term.recv() => ("SIGTERM", libc::SIGTERM),
                }
            });
            INTERRUPTED.store(true, Ordering::SeqCst);
            // After the show, Ctrl-C is the normal way out (`--keep`);
            // before, the shell convention 128 + signal.
            let code = if SHOW_DONE.load(Ordering::SeqCst) {
                0
            } else {
                128 + signo
            };
            eprintln!("\n{name}: stopping the agents and removing the lab...");
            if let Some(lab) = lab.upgrade() {
                let count = lab.namespaces().len();
                lab.shutdown();
                match ringlan_lab::netns_with_prefix(lab.prefix()) {
                    Ok(left) if left.is_empty() => {
                        eprintln!("removed {count} namespaces ({}*)", lab.prefix())
                    }
                    Ok(left) => eprintln!("namespaces left behind: {}", left.join(", ")),
                    Err(e) => eprintln!("cannot list namespaces: {e:#}"),
                }
            }
            std::process::exit(code);
        })?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `--svg FILE` made absolute; fails unless its directory exists.
fn picture_path(svg: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(svg).with_context(|| format!("--svg {}", svg.display()))?;
    let dir = abs.parent().unwrap_or(Path::new("/"));
    if abs.file_name().is_none() || abs.is_dir() {
        bail!("--svg {}: not a file name", svg.display());
    }
    if !dir.is_dir() {
        bail!(
            "--svg {}: directory {} does not exist",
            svg.display(),
            dir.display()
        );
    }
    Ok(abs)
}

/// Under `sudo`, hands `path` to the user who ran it (`SUDO_UID`,
/// `SUDO_GID`), so the picture in their directory is theirs; best effort.
fn give_to_sudo_user(path: &Path) {
    let id = |k: &str| std::env::var(k).ok()?.parse::<u32>().ok();
    if let (Some(uid), Some(gid)) = (id("SUDO_UID"), id("SUDO_GID")) {
        let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    }
}

/// The path a pair of the show is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Goal {
    /// Direct on the LAN they share.
    Lan,
    /// Direct, the second member being public.
    Public,
    /// Direct through both NATs (punched).
    Punched,
    /// Relayed, with a standby route at the first member.
    Relayed,
}

impl Goal {
    fn wanted(self) -> &'static str {
        match self {
            Goal::Lan => "direct-lan",
            Goal::Public => "direct",
            Goal::Punched => "direct-nat (punched)",
            Goal::Relayed => "relayed with a standby route",
        }
    }

    /// Whether the paths at the two ends (`a`'s, `b`'s) are the goal.
    fn holds(self, a: &PathKind, b: &PathKind) -> bool {
        match self {
            Goal::Lan => *a == PathKind::DirectLan && *b == PathKind::DirectLan,
            Goal::Public => is_direct(a) && is_direct(b),
            Goal::Punched => *a == PathKind::DirectNat && *b == PathKind::DirectNat,
            Goal::Relayed => {
                matches!(a, PathKind::Relayed { standby, .. } if *standby >= 1)
                    && matches!(b, PathKind::Relayed { .. })
            }
        }
    }
}

fn is_direct(p: &PathKind) -> bool {
    matches!(
        p,
        PathKind::Direct | PathKind::DirectLan | PathKind::DirectNat
    )
}

/// A pair of members and what the show waits for.
struct PathGoal {
    pair: (usize, usize),
    goal: Goal,
    /// The path last printed (as the first member sees it).
    last: Option<String>,
    /// When the goal held, from the start of the step.
    reached: Option<Duration>,
}

impl PathGoal {
    fn new(pair: (usize, usize), goal: Goal) -> PathGoal {
        PathGoal {
            pair,
            goal,
            last: None,
            reached: None,
        }
    }
}

/// The open session in `a`'s status with the member of node id `id` (or,
/// without an id, of name `name`).
fn open_session_with<'s>(a: &'s Status, id: Option<&str>, name: &str) -> Option<&'s SessionStatus> {
    a.sessions.iter().find(|s| {
        s.state == SessionPhase::Open
            && match id {
                Some(id) => s.peer_id == id,
                None => s.peer_name.as_deref() == Some(name),
            }
    })
}

/// What a node's NAT mapping says, against what the lab built.
fn nat_words(mapping: NatBehaviour, built: Option<NatKind>) -> String {
    match (mapping, built) {
        (NatBehaviour::EndpointIndependent, None) => "no NAT in the way (public)".into(),
        (NatBehaviour::EndpointIndependent, Some(NatKind::Masquerade)) => {
            "one public port for every destination: a cone-like NAT, as built".into()
        }
        (NatBehaviour::EndpointDependent, Some(NatKind::FullyRandom)) => {
            "a new public port per destination: a symmetric NAT, as built".into()
        }
        (_, built) => format!(
            "NOT what the lab built ({})",
            match built {
                None => "public",
                Some(NatKind::Masquerade) => "a cone-like NAT",
                Some(NatKind::FullyRandom) => "a symmetric NAT",
            }
        ),
    }
}

/// Prints a finished transfer (rate, checksums); fails if it arrived
/// damaged. Returns the rate, e.g. `12.3 MiB/s`.
fn check_transfer(tr: &Transfer) -> Result<String> {
    let mib_s = tr.bytes_received as f64 / 1048576.0 / tr.elapsed.as_secs_f64().max(1e-9);
    println!(
        "    {} in {:.2} s = {mib_s:.1} MiB/s ({:.0} Mbit/s)",
        format_bytes(tr.bytes_received),
        secs(tr.elapsed),
        tr.mbit_per_s()
    );
    if !tr.intact() {
        bail!(
            "the transfer arrived damaged: sent {} bytes sha256 {}, received {} bytes sha256 {}",
            tr.bytes_sent,
            tr.sent_sha256,
            tr.bytes_received,
            tr.received_sha256
        );
    }
    println!(
        "    sha256 sent     {}\n    sha256 received {}\n    checksums match",
        tr.sent_sha256, tr.received_sha256
    );
    Ok(format!("{mib_s:.1} MiB/s"))
}

/// The show's steps, in order (the last one also runs on failure).
const STEPS: u8 = 8;

fn heading(n: u8, title: &str) {
    println!("\n[{n}/{STEPS}] {title}");
}

fn indent(text: &str) -> String {
    text.lines().fold(String::new(), |mut o, l| {
        if l.is_empty() {
            o.push('\n');
        } else {
            let _ = writeln!(o, "  {l}");
        }
        o
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringlan_agent::status::Traffic;

    fn in_subnet(a: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
        let mask = u32::MAX << (32 - prefix);
        u32::from(a) & mask == u32::from(net) & mask
    }

    #[test]
    fn standard_topology_addresses() {
        let t = Topology::standard();
        let names: Vec<&str> = t.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["intro", "relay", "lan-1", "lan-2", "cone", "sym-1", "sym-2"]
        );
        assert_eq!(t.members[0].role, Role::Introducer);
        assert_eq!(
            t.introducer_endpoints(),
            [SocketAddr::from(([198, 51, 100, 1], 4910))]
        );
        // Every address unique; public members on the internet, the others
        // inside their site's LAN, never on the router's address.
        for (i, m) in t.members.iter().enumerate() {
            for o in &t.members[i + 1..] {
                assert_ne!(m.underlay, o.underlay);
                assert_ne!(m.overlay, o.overlay);
            }
            assert!(in_subnet(m.overlay, OVERLAY, OVERLAY_PREFIX));
            match m.site {
                Site::Public => assert!(in_subnet(m.underlay, INTERNET, INTERNET_PREFIX)),
                Site::Behind(s) => {
                    let s = &t.sites[s];
                    assert!(in_subnet(m.underlay, s.lan, SITE_PREFIX), "{m:?}");
                    assert_ne!(m.underlay, s.router_inside());
                }
            }
        }
        // Sites: disjoint LANs, distinct public addresses on the internet.
        for (i, s) in t.sites.iter().enumerate() {
            assert!(in_subnet(s.public, INTERNET, INTERNET_PREFIX));
            assert!(t.members.iter().all(|m| m.underlay != s.public));
            for o in &t.sites[i + 1..] {
                assert!(!in_subnet(s.lan, o.lan, SITE_PREFIX));
                assert_ne!(s.public, o.public);
            }
        }
        // The show's pairs: one LAN, a cone and a symmetric NAT, two
        // symmetric NATs.
        let kind = |n: &str| t.nat_kind(&t.members[t.index(n).unwrap()]);
        let (l1, l2) = t.pair(LAN_PAIR).unwrap();
        assert_eq!(t.members[l1].site, t.members[l2].site);
        assert_eq!(kind(PUNCHED_PAIR[0]), Some(NatKind::Masquerade));
        assert_eq!(kind(PUNCHED_PAIR[1]), Some(NatKind::FullyRandom));
        assert_eq!(kind(RELAYED_PAIR[0]), Some(NatKind::FullyRandom));
        assert_eq!(kind(RELAYED_PAIR[1]), Some(NatKind::FullyRandom));
        assert_ne!(
            t.members[t.index(RELAYED_PAIR[0]).unwrap()].site,
            t.members[t.index(RELAYED_PAIR[1]).unwrap()].site
        );
        // Two relays: the introducer and a public node.
        let relays: Vec<&str> = t
            .members
            .iter()
            .filter(|m| m.relay)
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(relays, ["intro", "relay"]);
        assert!(t.index("nobody").is_err());
    }

    #[test]
    fn template_renders_valid_configs() {
        let t = Topology::standard();
        for m in &t.members {
            let dir = Path::new("/tmp/rl-demo-test").join(&m.name);
            let text = render_config(
                &t,
                m,
                &MemberPaths {
                    secret_file: Path::new("/tmp/rl-demo-test/demo.secret"),
                    key_file: &dir.join("k.key"),
                    socket: &dir.join("s.sock"),
                },
            );
            assert!(
                text.starts_with(&format!("# ringlan demo member `{}`", m.name)),
                "{text}"
            );
            let c = Config::parse(&text, Path::new("demo.yaml"))
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(c.node.name, m.name);
            assert_eq!(c.network.name, NETWORK);
            assert_eq!(c.interface.name, TAP_NAME);
            assert_eq!(
                c.interface.addresses[0].to_string(),
                format!("{}/24", m.overlay)
            );
            assert_eq!(c.control.socket, dir.join("s.sock"));
            assert_eq!(c.listen.port, PORT);
            assert!(c.stun_servers.is_empty(), "{text}");
            assert_eq!(c.relay.enabled, m.relay, "{text}");
            match m.role {
                Role::Introducer => {
                    assert!(c.introducers.is_empty());
                    assert_eq!(c.role, Role::Introducer);
                    assert_eq!(c.listen.stun_alt_port, PORT + 1);
                }
                Role::Node => {
                    let intro: Vec<String> = c.introducers.iter().map(|h| h.to_string()).collect();
                    assert_eq!(intro, ["198.51.100.1:4910"]);
                    assert_eq!(c.role, Role::Node);
                }
            }
        }
    }

    fn session(
        peer: &str,
        name: Option<&str>,
        state: SessionPhase,
        path: PathKind,
    ) -> SessionStatus {
        SessionStatus {
            peer_id: peer.into(),
            peer_name: name.map(Into::into),
            remote: None,
            path,
            state,
            rtt_ms: Some(0.5),
            tx: Traffic::default(),
            rx: Traffic::default(),
            drops: Default::default(),
            age_secs: 1,
            rekeys: 0,
            cipher: None,
            reason: None,
            peer_symmetric_nat: false,
            transport: None,
        }
    }

    #[test]
    fn open_sessions_are_found_by_id_or_name() {
        use SessionPhase::*;
        let s = Status {
            sessions: vec![
                session("aa", Some("a"), Opening, PathKind::Direct),
                session("bb", None, Open, PathKind::DirectLan),
                session("aa", Some("a"), Open, PathKind::DirectNat),
                session("cc", Some("c"), Closing, PathKind::Direct),
            ],
            ..Status::default()
        };
        // The open one of two entries for a peer.
        let a = open_session_with(&s, Some("aa"), "a").unwrap();
        assert_eq!(a.path, PathKind::DirectNat);
        // By id even without a name; a known id never matches by name.
        assert!(open_session_with(&s, Some("bb"), "b").is_some());
        assert!(open_session_with(&s, Some("zz"), "a").is_none());
        // Without an id, by name.
        assert!(open_session_with(&s, None, "a").is_some());
        assert!(open_session_with(&s, None, "b").is_none());
        // Not open: nothing.
        assert!(open_session_with(&s, Some("cc"), "c").is_none());
    }

    #[test]
    fn path_goals() {
        let relayed = |standby| PathKind::Relayed {
            via: "relay".into(),
            standby,
        };
        use PathKind::*;
        assert!(Goal::Lan.holds(&DirectLan, &DirectLan));
        assert!(!Goal::Lan.holds(&DirectLan, &DirectNat));
        assert!(!Goal::Lan.holds(&Direct, &DirectLan));
        assert!(Goal::Public.holds(&DirectNat, &DirectLan));
        assert!(Goal::Public.holds(&Direct, &Direct));
        assert!(!Goal::Public.holds(&DirectNat, &relayed(1)));
        assert!(!Goal::Public.holds(&None, &Direct));
        assert!(Goal::Punched.holds(&DirectNat, &DirectNat));
        assert!(!Goal::Punched.holds(&relayed(1), &DirectNat));
        assert!(!Goal::Punched.holds(&DirectNat, &relayed(0)));
        assert!(Goal::Relayed.holds(&relayed(1), &relayed(0)));
        // The first end needs its standby route.
        assert!(!Goal::Relayed.holds(&relayed(0), &relayed(1)));
        assert!(!Goal::Relayed.holds(&relayed(1), &DirectNat));
    }

    #[test]
    fn nat_words_say_when_the_mapping_is_not_what_was_built() {
        use NatBehaviour::*;
        assert!(nat_words(EndpointIndependent, None).contains("public"));
        assert!(nat_words(EndpointIndependent, Some(NatKind::Masquerade)).ends_with("as built"));
        assert!(nat_words(EndpointDependent, Some(NatKind::FullyRandom)).ends_with("as built"));
        for (m, k) in [
            (EndpointDependent, Some(NatKind::Masquerade)),
            (EndpointIndependent, Some(NatKind::FullyRandom)),
            (EndpointDependent, None),
            (Unknown, Some(NatKind::Masquerade)),
        ] {
            assert!(nat_words(m, k).starts_with("NOT"), "{m:?} {k:?}");
        }
    }

    #[test]
    fn the_picture_path_is_checked_before_the_lab_is_built() {
        let dir = std::env::temp_dir();
        let p = picture_path(&dir.join("x.svg")).unwrap();
        assert_eq!(p, dir.join("x.svg"));
        // Relative to the current directory.
        let p = picture_path(Path::new("ringlan-demo.svg")).unwrap();
        assert!(p.is_absolute() && p.ends_with("ringlan-demo.svg"), "{p:?}");
        let e = picture_path(&dir.join("no-such-dir-rl-demo/x.svg")).unwrap_err();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
        let e = picture_path(&dir).unwrap_err();
        assert!(format!("{e:#}").contains("not a file name"), "{e:#}");
    }

    #[test]
    fn indent_keeps_blank_lines_bare() {
        assert_eq!(indent("a\n\nb\n"), "  a\n\n  b\n");
    }
}
