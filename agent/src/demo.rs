//! `ringlan demo`: the main job on an embedded default (`docs/design.md`,
//! "CLI").
//!
//! Builds a throw-away network-namespace lab with the `ringlan-lab` harness,
//! writes a config per member with the lab's config writer
//! ([`ringlan_lab::agents::AgentConfig`], see [`render_config`]),
//! starts real agents (this very binary, `ringlan up -c CONFIG`) in the
//! namespaces, waits until their sessions join every member into one virtual
//! LAN, shows `ringlan status` of each, pings and moves a TCP stream across
//! the virtual LAN, and removes everything on exit, on failure and on
//! SIGINT/SIGTERM.
//!
//! The lab is described by a [`Topology`] and built by [`build`]; today every
//! member sits on one underlay bridge. Members behind NAT routers
//! (`Lab::nat_router`) or forced to relay become new [`Site`] variants placed
//! by [`build`]; the rest of the demo reads only the topology and the status
//! of the agents.

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
use ringlan_agent::status::{format_bytes, format_duration, SessionPhase, Status};
use ringlan_lab::agents::AgentConfig;
use ringlan_lab::{Lab, Node};

/// Most nodes `--nodes` accepts (plus the introducer).
pub const MAX_NODES: u8 = 8;
/// The network every demo member joins.
const NETWORK: &str = "demo";
/// TAP device name (the same in every namespace).
const TAP_NAME: &str = "rl-demo";
/// RTMFP UDP port of every member.
const PORT: u16 = 4910;
/// Underlay: one bridge, 192.0.2.0/24 (documentation range, never routed).
const UNDERLAY_PREFIX: u8 = 24;
const OVERLAY_PREFIX: u8 = 24;
/// How long the agents get to join every member into one LAN.
const FORM_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the first ping may take to get through (ARP over the overlay).
const FIRST_PING_TIMEOUT: Duration = Duration::from_secs(20);
const PING_COUNT: u32 = 5;
const TRANSFER_MIB: u64 = 20;
const TRANSFER_PORT: u16 = 5001;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the session counters to show the transfer.
const COUNTER_WAIT: Duration = Duration::from_secs(5);
/// Status poll interval while waiting, and status interval with `--keep`.
const POLL: Duration = Duration::from_millis(250);
const KEEP_INTERVAL: Duration = Duration::from_secs(5);

/// `ringlan demo` options.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keep the lab running after the show, printing status every few
    /// seconds, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Number of nodes besides the introducer.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(1..=MAX_NODES as i64))]
    nodes: u8,
}

// ---------------------------------------------------------------------------
// Topology
// ---------------------------------------------------------------------------

/// Where a member is attached in the underlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Site {
    /// On the shared underlay bridge, reachable by every other member.
    Lan,
}

/// One agent of the demo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node name, namespace suffix and log name.
    pub name: String,
    pub role: Role,
    pub site: Site,
    /// Underlay address (on `eth0`).
    pub underlay: Ipv4Addr,
    /// TAP address inside the virtual LAN.
    pub overlay: Ipv4Addr,
}

/// What the demo builds: the members and where they sit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    pub members: Vec<Member>,
}

impl Topology {
    /// The default: introducer `intro` at 192.0.2.1 / 10.77.0.1 and `nodes`
    /// nodes `node-1..` at 192.0.2.11.. / 10.77.0.2.., all on one bridge.
    pub fn lan(nodes: u8) -> Topology {
        let mut members = vec![Member {
            name: "intro".into(),
            role: Role::Introducer,
            site: Site::Lan,
            underlay: Ipv4Addr::new(192, 0, 2, 1),
            overlay: Ipv4Addr::new(10, 77, 0, 1),
        }];
        for i in 1..=nodes {
            members.push(Member {
                name: format!("node-{i}"),
                role: Role::Node,
                site: Site::Lan,
                underlay: Ipv4Addr::new(192, 0, 2, 10 + i),
                overlay: Ipv4Addr::new(10, 77, 0, 1 + i),
            });
        }
        Topology { members }
    }

    /// Underlay endpoints of the introducers.
    fn introducer_endpoints(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .filter(|m| m.role == Role::Introducer)
            .map(|m| SocketAddr::from((m.underlay, PORT)))
            .collect()
    }

    /// The two members the traffic step uses: the first node and the last
    /// member other than it.
    fn traffic_pair(&self) -> Option<(usize, usize)> {
        let from = self.members.iter().position(|m| m.role == Role::Node)?;
        let to = (0..self.members.len()).rev().find(|&i| i != from)?;
        Some((from, to))
    }
}

/// Files a member's config points at.
pub struct MemberPaths<'a> {
    pub secret_file: &'a Path,
    pub key_file: &'a Path,
    pub socket: &'a Path,
}

/// The config of member `m`: MAC derived from the key, listening on every
/// address, introducers as the topology says, log level info.
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
    bin: PathBuf,
}

/// Set once the show is complete: Ctrl-C afterwards is the normal way out.
static SHOW_DONE: AtomicBool = AtomicBool::new(false);
/// Set when SIGINT/SIGTERM arrived.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The host tools the demo lab runs, with the Debian package of each.
const TOOLS: [(&str, &str); 2] = [("ip", "iproute2"), ("ping", "iputils-ping")];

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
    let topo = Topology::lan(args.nodes);
    let nodes = topo.members.iter().filter(|m| m.role == Role::Node).count();
    println!(
        "ringlan demo: {} agents (1 introducer + {nodes} node{}) join one virtual Ethernet LAN,\n\
         each in its own network namespace on this machine. Everything is removed at the end.",
        topo.members.len(),
        if nodes == 1 { "" } else { "s" }
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
    let result = show(&lab, &topo, &bin, args.keep);
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

/// Steps 1-4 (and the `--keep` loop).
fn show(lab: &Arc<Lab>, topo: &Topology, bin: &Path, keep: bool) -> Result<()> {
    heading(1, "Building the lab");
    let demo = build(lab.clone(), topo, bin)?;

    heading(2, "Starting the agents");
    let mut demo = demo;
    demo.start()?;

    heading(3, "Waiting for the agents to form one LAN");
    let formed = demo.wait_formed(FORM_TIMEOUT)?;
    println!(
        "  all {} members are in one LAN after {:.1} s\n",
        topo.members.len(),
        secs(formed)
    );
    for (m, n) in demo.topo.members.iter().zip(&demo.nodes) {
        println!(
            "---- {} ({}, {}): ringlan status --socket {}",
            m.name,
            m.role.as_str(),
            m.overlay,
            n.socket.display()
        );
        print!("{}", indent(&demo.status_text(n)?));
        println!();
    }

    heading(4, "Traffic across the virtual LAN");
    let traffic = demo.traffic()?;

    println!("\n  after the traffic:");
    print!("{}", indent(&demo.summary_table()));
    SHOW_DONE.store(true, Ordering::SeqCst);

    println!(
        "\nDone: {} agents formed one virtual Ethernet LAN {}/{OVERLAY_PREFIX} over the \
         {}/{UNDERLAY_PREFIX} underlay in {:.1} s;\n{}",
        topo.members.len(),
        Ipv4Addr::new(10, 77, 0, 0),
        Ipv4Addr::new(192, 0, 2, 0),
        secs(formed),
        traffic
    );
    if keep {
        demo.keep_running();
    }
    Ok(())
}

/// Step 1: namespaces, the bridge, keys, the secret and configs.
fn build(lab: Arc<Lab>, topo: &Topology, bin: &Path) -> Result<Demo> {
    println!(
        "  namespaces {}*, one bridge, underlay {}/{UNDERLAY_PREFIX}",
        lab.prefix(),
        Ipv4Addr::new(192, 0, 2, 0)
    );
    let lan = lab.switch("lan").context("create the underlay bridge")?;
    let secret_file = lab.dir().join(format!("{NETWORK}.secret"));
    let secret = NetworkSecret::generate().context("make the network secret")?;
    identity::write_private(&secret_file, secret.bytes(), identity::SECRET_MODE, false)?;

    let mut nodes = Vec::with_capacity(topo.members.len());
    for m in &topo.members {
        let ns = match m.site {
            Site::Lan => {
                let cidr = format!("{}/{UNDERLAY_PREFIX}", m.underlay);
                lab.host(&m.name, &lan, &cidr, None)
                    .with_context(|| format!("create host {}", m.name))?
                    .ns
            }
        };
        let node = lab.node(&ns, &m.name, bin)?;
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
        println!(
            "  {:<7} {:<10}  underlay {:<11}  TAP {TAP_NAME} {}/{OVERLAY_PREFIX}  key {}…",
            m.name,
            m.role.as_str(),
            m.underlay,
            m.overlay,
            &identity::hex(&key.public_key())[..16]
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
            println!("  {:<7} pid {:<7} log {}", n.name, p.pid, p.log.display());
        }
        Ok(())
    }

    /// Fails when an agent has exited.
    fn check_alive(&self) -> Result<()> {
        for n in &self.nodes {
            if let Some(p) = &n.proc {
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

    /// The human `ringlan status --socket PATH` of the re-executed binary.
    fn status_text(&self, n: &Node) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("status")
            .arg("--socket")
            .arg(&n.socket)
            .output()
            .with_context(|| format!("run {} status", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "ringlan status of {} failed: {}",
                n.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Step 3: polls every agent's status until their open sessions connect
    /// all members; prints what happens on the way. Returns the time taken.
    fn wait_formed(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let n = self.nodes.len();
        let mut up = vec![false; n];
        let mut seen_pairs: Vec<(usize, usize)> = Vec::new();
        let mut statuses: Vec<Option<Status>> = vec![None; n];
        println!("  (up to {} s)", timeout.as_secs());
        loop {
            self.check_alive()?;
            for (i, node) in self.nodes.iter().enumerate() {
                if let Ok(s) = self.status(node) {
                    if !up[i] {
                        up[i] = true;
                        println!(
                            "  {:>5.1} s  {} is up (TAP {} {}, control socket answers)",
                            secs(start.elapsed()),
                            node.name,
                            s.tap.name,
                            s.tap.mac
                        );
                    }
                    statuses[i] = Some(s);
                }
            }
            let names: Vec<&str> = self.topo.members.iter().map(|m| m.name.as_str()).collect();
            let edges = open_edges(&statuses, &names);
            for e in &edges {
                let pair = (e.a.min(e.b), e.a.max(e.b));
                if !seen_pairs.contains(&pair) {
                    seen_pairs.push(pair);
                    println!(
                        "  {:>5.1} s  session {} <-> {} open ({}{})",
                        secs(start.elapsed()),
                        names[pair.0],
                        names[pair.1],
                        e.path,
                        e.rtt_ms.map(|r| format!(", {r:.2} ms")).unwrap_or_default()
                    );
                }
            }
            let pairs: Vec<(usize, usize)> = edges.iter().map(|e| (e.a, e.b)).collect();
            let groups = components(n, &pairs);
            if groups.len() == 1 && up.iter().all(|&u| u) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                let largest = groups
                    .iter()
                    .max_by_key(|g| g.len())
                    .cloned()
                    .unwrap_or_default();
                let connected = if largest.len() < 2 {
                    "no two members are connected".to_string()
                } else {
                    let in_largest: Vec<&str> = largest.iter().map(|&i| names[i]).collect();
                    format!(
                        "the largest connected group has {} of {n} members ({})",
                        largest.len(),
                        in_largest.join(", ")
                    )
                };
                bail!(
                    "the agents did not form one LAN within {} s: {}/{n} agents answered on \
                     their control sockets, {} sessions opened, {connected}. The agent logs \
                     follow.",
                    timeout.as_secs(),
                    up.iter().filter(|&&u| u).count(),
                    seen_pairs.len(),
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Step 4: ping and a TCP transfer across the virtual LAN. Returns a
    /// one-paragraph summary.
    fn traffic(&self) -> Result<String> {
        let (fi, ti) = self
            .topo
            .traffic_pair()
            .ok_or_else(|| anyhow!("the topology has no two members"))?;
        let (from, to) = (&self.topo.members[fi], &self.topo.members[ti]);
        let (from_ns, to_ns) = (&self.nodes[fi].ns, &self.nodes[ti].ns);
        let to_ip = IpAddr::V4(to.overlay);

        println!(
            "  ping from {} ({}) to {} ({}) through {TAP_NAME}:",
            from.name, from.overlay, to.name, to.overlay
        );
        // The first ping also resolves the address (ARP is broadcast across
        // the overlay); wait for it before measuring.
        let t = Instant::now();
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
        println!(
            "    first reply after {:.2} s (includes ARP)",
            secs(t.elapsed())
        );
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

        println!(
            "\n  TCP: {TRANSFER_MIB} MiB of pseudo-random bytes from {} to {}:{TRANSFER_PORT}, \
             SHA-256 on both ends:",
            from.name, to.overlay
        );
        let tr = self.lab.tcp_transfer(
            from_ns,
            to_ns,
            to_ip,
            TRANSFER_PORT,
            TRANSFER_MIB,
            TRANSFER_TIMEOUT,
        )?;
        let mib_s = tr.bytes_received as f64 / 1048576.0 / tr.elapsed.as_secs_f64().max(1e-9);
        println!(
            "    {} in {:.2} s = {mib_s:.1} MiB/s ({:.0} Mbit/s)",
            format_bytes(tr.bytes_received),
            secs(tr.elapsed),
            tr.mbit_per_s()
        );
        if !tr.intact() {
            bail!(
                "the transfer arrived damaged: sent {} bytes sha256 {}, received {} bytes \
                 sha256 {}",
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
        // Agents publish session counters periodically; give the sender's a
        // moment to include the transfer before the table shows them.
        let _ = ringlan_lab::wait_until(COUNTER_WAIT, || {
            self.status(&self.nodes[fi])
                .is_ok_and(|s| s.sessions.iter().map(|x| x.tx.bytes).sum::<u64>() >= tr.bytes_sent)
        });
        Ok(format!(
            "ping {} -> {}: {} ({rtt}); {TRANSFER_MIB} MiB over TCP at {mib_s:.1} MiB/s, \
             checksums match.",
            from.name,
            to.name,
            stats.split(", time").next().unwrap_or(stats)
        ))
    }

    /// One line per member: sessions and traffic, from `status --json`.
    fn summary_table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "{:<7}  {:<10}  {:<12}  {:>8}  {:>10}  {:>10}  UPTIME",
            "NAME", "ROLE", "TAP ADDRESS", "SESSIONS", "TX", "RX"
        );
        for (m, n) in self.topo.members.iter().zip(&self.nodes) {
            let line = match self.status(n) {
                Ok(s) => {
                    let open = s
                        .sessions
                        .iter()
                        .filter(|x| x.state == SessionPhase::Open)
                        .count();
                    let tx: u64 = s.sessions.iter().map(|x| x.tx.bytes).sum();
                    let rx: u64 = s.sessions.iter().map(|x| x.rx.bytes).sum();
                    format!(
                        "{:<7}  {:<10}  {:<12}  {:>8}  {:>10}  {:>10}  {}",
                        m.name,
                        m.role.as_str(),
                        format!("{}/{OVERLAY_PREFIX}", m.overlay),
                        format!("{open} open"),
                        format_bytes(tx),
                        format_bytes(rx),
                        format_duration(s.uptime_secs)
                    )
                }
                Err(e) => format!("{:<7}  status unavailable: {e:#}", m.name),
            };
            let _ = writeln!(o, "{line}");
        }
        o
    }

    /// `--keep`: print a status summary every few seconds until Ctrl-C (the
    /// signal thread removes the lab and exits the process).
    fn keep_running(&self) {
        let (from, to) = self.topo.traffic_pair().unwrap_or((0, 0));
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

/// Step 5: stop the agents, delete the namespaces and files, and check
/// nothing with the lab's prefix is left.
fn cleanup(lab: &Lab) -> Result<String> {
    heading(5, "Cleaning up");
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

/// An open session between members `a` and `b`, as `a` reports it.
#[derive(Debug, PartialEq)]
struct Edge {
    a: usize,
    b: usize,
    path: String,
    rtt_ms: Option<f64>,
}

/// The open sessions between members, matched by node id (or by name when
/// a status carries no id).
fn open_edges(statuses: &[Option<Status>], names: &[&str]) -> Vec<Edge> {
    let mut edges = Vec::new();
    for (a, s) in statuses.iter().enumerate() {
        let Some(s) = s else { continue };
        for sess in s.sessions.iter().filter(|x| x.state == SessionPhase::Open) {
            let b = statuses.iter().position(|o| {
                o.as_ref()
                    .is_some_and(|o| o.node_id.as_deref() == Some(sess.peer_id.as_str()))
            });
            let b = b.or_else(|| {
                let pn = sess.peer_name.as_deref()?;
                names.iter().position(|n| *n == pn)
            });
            if let Some(b) = b.filter(|&b| b != a) {
                edges.push(Edge {
                    a,
                    b,
                    path: sess.path.to_string(),
                    rtt_ms: sess.rtt_ms,
                });
            }
        }
    }
    edges
}

/// Connected components of `n` vertices under undirected `edges`.
fn components(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for &(a, b) in edges {
        if a < n && b < n {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            parent[ra] = rb;
        }
    }
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for v in 0..n {
        let r = find(&mut parent, v);
        match groups.iter_mut().find(|(root, _)| *root == r) {
            Some((_, g)) => g.push(v),
            None => groups.push((r, vec![v])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

fn heading(n: u8, title: &str) {
    println!("\n[{n}/5] {title}");
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
    use ringlan_agent::status::{PathKind, SessionStatus, Traffic};

    #[test]
    fn default_topology_addresses() {
        let t = Topology::lan(3);
        let names: Vec<&str> = t.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["intro", "node-1", "node-2", "node-3"]);
        let tap: Vec<String> = t.members.iter().map(|m| m.overlay.to_string()).collect();
        assert_eq!(tap, ["10.77.0.1", "10.77.0.2", "10.77.0.3", "10.77.0.4"]);
        assert_eq!(t.members[0].role, Role::Introducer);
        assert_eq!(t.members[3].underlay, Ipv4Addr::new(192, 0, 2, 13));
        assert_eq!(
            t.introducer_endpoints(),
            [SocketAddr::from(([192, 0, 2, 1], 4910))]
        );
        assert_eq!(t.traffic_pair(), Some((1, 3)));
        assert_eq!(Topology::lan(1).traffic_pair(), Some((1, 0)));
        let big = Topology::lan(MAX_NODES);
        assert_eq!(big.members.len(), 9);
        assert_eq!(big.members[8].overlay, Ipv4Addr::new(10, 77, 0, 9));
    }

    #[test]
    fn template_renders_valid_configs() {
        let t = Topology::lan(2);
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
            match m.role {
                Role::Introducer => {
                    assert!(c.introducers.is_empty());
                    assert_eq!(c.role, Role::Introducer);
                }
                Role::Node => {
                    let intro: Vec<String> = c.introducers.iter().map(|h| h.to_string()).collect();
                    assert_eq!(intro, ["192.0.2.1:4910"]);
                    assert_eq!(c.role, Role::Node);
                }
            }
        }
    }

    fn status(id: &str, name: &str, open_to: &[(&str, SessionPhase)]) -> Status {
        Status {
            node_id: Some(id.into()),
            node_name: name.into(),
            sessions: open_to
                .iter()
                .map(|(peer, state)| SessionStatus {
                    peer_id: (*peer).into(),
                    peer_name: None,
                    remote: None,
                    path: PathKind::DirectLan,
                    state: *state,
                    rtt_ms: Some(0.5),
                    tx: Traffic::default(),
                    rx: Traffic::default(),
                    drops: Default::default(),
                    age_secs: 1,
                    rekeys: 0,
                    reason: None,
                    transport: None,
                })
                .collect(),
            ..Status::default()
        }
    }

    #[test]
    fn mesh_is_formed_when_open_sessions_connect_everyone() {
        use SessionPhase::*;
        let names = ["intro", "node-1", "node-2"];
        let mut st = vec![
            Some(status("i0", "intro", &[("n1", Open), ("n2", Opening)])),
            Some(status("n1", "node-1", &[("i0", Open)])),
            Some(status("n2", "node-2", &[("zz", Open)])),
        ];
        let pairs = |st: &[Option<Status>]| -> Vec<(usize, usize)> {
            open_edges(st, &names).iter().map(|e| (e.a, e.b)).collect()
        };
        // An opening session and an unknown peer do not count.
        assert_eq!(pairs(&st), [(0, 1), (1, 0)]);
        assert_eq!(components(3, &pairs(&st)), [vec![0, 1], vec![2]]);
        // node-2 opens to node-1: one group.
        st[2] = Some(status("n2", "node-2", &[("n1", Open)]));
        assert_eq!(components(3, &pairs(&st)), [vec![0, 1, 2]]);
        // A member without status (not answering) stays alone.
        st[2] = None;
        assert_eq!(components(3, &pairs(&st)).len(), 2);
        // Matching by name when the status has no node id.
        let mut s = status("n2", "node-2", &[]);
        s.sessions = status("x", "x", &[("??", Open)]).sessions;
        s.sessions[0].peer_name = Some("intro".into());
        st[2] = Some(s);
        assert_eq!(components(3, &pairs(&st)), [vec![0, 1, 2]]);
    }

    #[test]
    fn indent_keeps_blank_lines_bare() {
        assert_eq!(indent("a\n\nb\n"), "  a\n\n  b\n");
    }
}
