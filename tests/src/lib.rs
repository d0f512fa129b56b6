//! ringlan-lab: a network-namespace lab for end-to-end tests of ringlan.
//!
//! A [`Lab`] builds throw-away topologies out of Linux network namespaces:
//! hosts, "switches" (a bridge inside its own namespace, never in the host
//! namespace), veth pairs, NAT routers (nftables `masquerade` or
//! `masquerade fully-random`), loss injection (nftables `numgen random` drop
//! rules, since this kernel has no netem) and processes started inside
//! namespaces with per-process log files. Everything it creates carries a
//! per-lab prefix (`rl<pid>x<n>-`) and is removed when the `Lab` is dropped,
//! also when a test panics; [`Lab::cleanup_stale`] removes leftovers of
//! crashed runs whose owning process no longer exists.
//!
//! Every link is created directly inside lab namespaces (`ip link add ...
//! netns A type veth peer name ... netns B`), so nothing ever appears in the
//! host namespace, and deleting a namespace deletes its links. The lab adds no
//! route out of the lab and never touches host interfaces.
//!
//! Traffic helpers ([`Lab::tcp_transfer`], [`Lab::udp_echo`],
//! [`Lab::udp_observe`]) run in threads of the calling process that entered
//! the namespace with `setns(2)` (the network namespace is per thread on
//! Linux), so they need no extra binary or package.
//!
//! The crate root holds the lab itself (names, topology, commands,
//! processes, nodes, cleanup). `traffic.rs` adds the traffic helpers and
//! `stun.rs` coturn and STUN Binding (both as further `impl Lab` blocks).
//! [`agents`] runs real `ringlan` agents in a lab: the config writer,
//! members, status readers and waits that the agent's end-to-end tests and
//! `ringlan demo` share; [`ca`] is a network CA driven through the
//! `ringlan` binary (keys, certificates, revocation lists).
//!
//! See `docs/lab.md`.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod agents;
pub mod ca;
pub mod flood;
mod stun;
mod traffic;

pub use stun::*;
pub use traffic::*;

/// Environment variable that turns "not root" from a test failure into a skip.
pub const SKIP_ENV: &str = "RINGLAN_SKIP_ROOT_TESTS";
/// Environment variable that keeps the lab directory (logs, configs) after drop.
pub const KEEP_ENV: &str = "RINGLAN_LAB_KEEP";
/// Every lab object name starts with this marker, then the owner pid, `x`,
/// a per-process counter and `-`.
const MARK: &str = "rl";
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
/// Poll interval of [`wait_until`] and process waits.
const POLL: Duration = Duration::from_millis(20);
/// Grace period between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Lines of each process log printed by [`Lab::dump_logs`].
const LOG_TAIL_LINES: usize = 40;

// ---------------------------------------------------------------------------
// Names and handles
// ---------------------------------------------------------------------------

/// A network namespace created by a lab (full name, prefix included).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ns(String);

impl Ns {
    /// The full namespace name, as used by `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.0
    }
    /// The bind-mount path of the namespace (`/run/netns/NAME`).
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl fmt::Display for Ns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A learning bridge `br0` inside a dedicated namespace.
#[derive(Clone, Debug)]
pub struct Switch {
    pub ns: Ns,
    pub bridge: String,
}

/// One end of a veth pair attached to a [`Switch`].
#[derive(Clone, Debug)]
pub struct Port {
    /// Namespace of the attached end.
    pub ns: Ns,
    /// Interface name of the attached end (inside `ns`).
    pub ifname: String,
    /// Switch namespace.
    pub switch: Ns,
    /// Interface name of the bridge port (inside `switch`).
    pub switch_port: String,
}

/// A host: a namespace with one interface (`eth0`) on a switch.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: Ns,
    pub port: Port,
    pub addr: IpAddr,
}

/// How a NAT router maps inside endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// nftables `masquerade`: endpoint-independent mapping (source port kept
    /// when free), port-restricted filtering (conntrack only admits replies
    /// from the exact remote endpoint).
    Masquerade,
    /// nftables `masquerade fully-random`: a random port per conntrack entry,
    /// so endpoint-dependent ("symmetric") mapping.
    FullyRandom,
}

/// A NAT router namespace: `in0` on the inside switch, `out0` outside.
#[derive(Clone, Debug)]
pub struct Router {
    pub ns: Ns,
    pub kind: NatKind,
    pub inside: Port,
    pub outside: Port,
    /// Inside address (the gateway of inside hosts).
    pub inside_addr: IpAddr,
    /// Current public address with prefix length, e.g. `198.51.100.2/24`.
    pub public_cidr: String,
}

impl Router {
    /// Current public address.
    pub fn public_addr(&self) -> IpAddr {
        parse_cidr(&self.public_cidr)
            .map(|(a, _)| a)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

/// A host behind a NAT router, from [`Lab::natted_host`].
#[derive(Clone, Debug)]
pub struct Natted {
    pub lan: Switch,
    pub wan: Switch,
    pub router: Router,
    pub host: Host,
}

/// Which traffic of an interface loss injection applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
    Both,
}

/// A process started inside a namespace by [`Lab::spawn`].
#[derive(Clone, Debug)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
    pub ns: Ns,
    /// stdout and stderr, interleaved.
    pub log: PathBuf,
}

/// A ringlan node: a namespace, a config file and (when started) a process.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub ns: Ns,
    /// The `ringlan` binary (tests pass `env!("CARGO_BIN_EXE_ringlan")`).
    pub bin: PathBuf,
    /// Suggested paths inside the lab directory; the config text decides.
    pub config: PathBuf,
    pub socket: PathBuf,
    pub key_file: PathBuf,
    /// Put in front of `BIN up -c CONFIG` (e.g. `setpriv ...` to run the
    /// agent as an unprivileged user); empty by default.
    pub wrapper: Vec<String>,
    pub proc: Option<Proc>,
}

impl Node {
    /// Writes the node's YAML config to [`Node::config`].
    pub fn write_config(&self, yaml: &str) -> Result<()> {
        fs::write(&self.config, yaml).with_context(|| format!("write {}", self.config.display()))
    }
    /// `ringlan status --json --socket SOCKET`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        status_json(&self.bin, &self.socket)
    }
    /// A status taken after this call, normally a [`STATUS_PERIOD`] or more.
    /// The control socket answers from the agent's last snapshot, so a
    /// status read at once can predate what the caller just saw happen.
    /// Consecutive snapshots always differ in `io.wakeups` (the publishing
    /// tick is a wake-up): the second one that differs from the one current
    /// at the call is a period younger than the first, which already
    /// followed the call.
    pub fn fresh_status(&self, timeout: Duration) -> Result<serde_json::Value> {
        let wakeups = |v: &serde_json::Value| v["io"]["wakeups"].as_u64();
        let mut status = self.status()?;
        for _ in 0..2 {
            let seen = wakeups(&status);
            status = self.wait_status(timeout, |v| wakeups(v) != seen)?;
        }
        Ok(status)
    }
    /// Polls `status --json` until `pred` holds; returns the matching status.
    pub fn wait_status(
        &self,
        timeout: Duration,
        pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        wait_status_json(&self.bin, &self.socket, timeout, pred)
    }
}

/// Result of [`Lab::ping_stats`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// Average round-trip time of the replies, if any.
    pub avg_rtt: Option<Duration>,
}

impl PingStats {
    pub fn lost(&self) -> u32 {
        self.transmitted.saturating_sub(self.received)
    }
}

// ---------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------

struct ProcEntry {
    proc: Proc,
    child: Child,
    status: Option<ExitStatus>,
}

#[derive(Default)]
struct State {
    namespaces: Vec<Ns>,
    /// (namespace, interface) of every link end created, for the record:
    /// they all live in lab namespaces and vanish with them.
    links: Vec<(Ns, String)>,
    procs: Vec<ProcEntry>,
    switch_ports: HashMap<Ns, u32>,
    log_names: HashMap<String, u32>,
}

/// A network-namespace lab. All methods take `&self` (state behind a mutex),
/// so a lab can be shared with helper threads.
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    state: Mutex<State>,
}

impl Lab {
    /// Creates an empty lab with a fresh prefix and directory. Fails unless
    /// running as root. Removes stale leftovers of dead processes first.
    pub fn new() -> Result<Lab> {
        if !is_root() {
            bail!(
                "ringlan-lab needs root (network namespaces, nftables): run `sudo tests/run-all.sh` \
                 or the tests as root; set {SKIP_ENV}=1 to skip root tests instead"
            );
        }
        for tool in ["ip", "ping"] {
            if which(tool).is_none() {
                bail!(
                    "`{tool}` not found: apt-get install iproute2 iputils-ping \
                     (tests/run-all.sh does)"
                );
            }
        }
        if let Err(e) = Lab::cleanup_stale() {
            eprintln!("ringlan-lab: stale cleanup failed: {e:#}");
        }
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("{MARK}{}x{n}-", std::process::id());
        let dir = lab_root().join(prefix.trim_end_matches('-'));
        if dir.exists() {
            fs::remove_dir_all(&dir).ok();
        }
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Lab {
            prefix,
            dir,
            stop: Arc::new(AtomicBool::new(false)),
            state: Mutex::new(State::default()),
        })
    }

    /// For tests: `Some(lab)` as root; `None` (skip, with a message) when not
    /// root and `RINGLAN_SKIP_ROOT_TESTS=1`; panics with a clear message
    /// otherwise.
    pub fn for_test() -> Option<Lab> {
        if skip_root_test() {
            return None;
        }
        match Lab::new() {
            Ok(lab) => Some(lab),
            Err(e) => panic!("{e:#}"),
        }
    }

    /// The per-lab name prefix, e.g. `rl4242x0-`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab directory (process logs, configs, sockets).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Namespaces created so far.
    pub fn namespaces(&self) -> Vec<Ns> {
        self.state().namespaces.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock must not stop Drop from cleaning up.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // -- topology ----------------------------------------------------------

    /// Creates namespace `PREFIX+name` with `lo` up.
    pub fn add_ns(&self, name: &str) -> Result<Ns> {
        check_name(name)?;
        let ns = Ns(format!("{}{name}", self.prefix));
        {
            // Under the lock, so a concurrent `shutdown` either sees this
            // namespace or makes us refuse to create it.
            let mut st = self.state();
            self.check_running()?;
            run_host(&["ip", "netns", "add", ns.name()])?;
            st.namespaces.push(ns.clone());
        }
        self.run(&ns, &["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a veth pair `a_if` (in `a`) <-> `b_if` (in `b`), both up.
    pub fn veth(&self, a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> Result<()> {
        check_ifname(a_if)?;
        check_ifname(b_if)?;
        run_host(&[
            "ip",
            "link",
            "add",
            a_if,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ])?;
        {
            let mut st = self.state();
            st.links.push((a.clone(), a_if.to_string()));
            st.links.push((b.clone(), b_if.to_string()));
        }
        self.run(a, &["ip", "link", "set", a_if, "up"])?;
        self.run(b, &["ip", "link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Creates a switch: namespace `PREFIX+sw-name` holding bridge `br0`.
    pub fn switch(&self, name: &str) -> Result<Switch> {
        let ns = self.add_ns(&format!("sw-{name}"))?;
        self.run(
            &ns,
            &[
                "ip",
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        self.state().links.push((ns.clone(), "br0".into()));
        self.run(&ns, &["ip", "link", "set", "br0", "up"])?;
        Ok(Switch {
            ns,
            bridge: "br0".into(),
        })
    }

    /// Connects `ns` to `sw` with a veth pair; the end in `ns` is `ifname`.
    /// `cidr` (e.g. `192.0.2.10/24`) is assigned to it when given.
    pub fn attach(&self, sw: &Switch, ns: &Ns, ifname: &str, cidr: Option<&str>) -> Result<Port> {
        let n = {
            let mut st = self.state();
            let c = st.switch_ports.entry(sw.ns.clone()).or_insert(0);
            *c += 1;
            *c
        };
        let short = ns.name().strip_prefix(&self.prefix).unwrap_or(ns.name());
        let mut port_name = format!("p{n}-{short}");
        port_name.truncate(15);
        self.veth(ns, ifname, &sw.ns, &port_name)?;
        self.run(
            &sw.ns,
            &["ip", "link", "set", &port_name, "master", &sw.bridge],
        )?;
        if let Some(c) = cidr {
            self.add_addr(ns, ifname, c)?;
        }
        Ok(Port {
            ns: ns.clone(),
            ifname: ifname.into(),
            switch: sw.ns.clone(),
            switch_port: port_name,
        })
    }

    /// Creates a host namespace with `eth0` on `sw` at `cidr` and, when
    /// given, a default route via `gateway` (a lab router; the lab has no
    /// route out of itself).
    pub fn host(
        &self,
        name: &str,
        sw: &Switch,
        cidr: &str,
        gateway: Option<IpAddr>,
    ) -> Result<Host> {
        let (addr, _) = parse_cidr(cidr)?;
        let ns = self.add_ns(name)?;
        let port = self.attach(sw, &ns, "eth0", Some(cidr))?;
        if let Some(gw) = gateway {
            self.route(&ns, "default", gw)?;
        }
        Ok(Host { ns, port, addr })
    }

    /// `ip addr add CIDR dev IFNAME` in `ns`.
    pub fn add_addr(&self, ns: &Ns, ifname: &str, cidr: &str) -> Result<()> {
        parse_cidr(cidr)?;
        self.run(ns, &["ip", "addr", "add", cidr, "dev", ifname])
            .map(drop)
    }

    /// `ip route replace DST via VIA` in `ns` (`dst` may be `default`).
    pub fn route(&self, ns: &Ns, dst: &str, via: IpAddr) -> Result<()> {
        self.run(
            ns,
            &["ip", "route", "replace", dst, "via", &via.to_string()],
        )
        .map(drop)
    }

    /// Creates a NAT router namespace `name`: `in0` on `inside` at
    /// `inside_cidr`, `out0` on `outside` at `public_cidr`, forwarding on
    /// (only in this namespace), nftables masquerade of the chosen kind on
    /// `out0`, a forward filter that admits from outside only
    /// established/related traffic, and an input filter that drops new
    /// connections from outside to the router itself, as home routers do.
    /// The input filter matters for hole punching: without it an unsolicited
    /// packet to the router's public address is delivered locally and its
    /// conntrack entry is confirmed, so when the inside host then sends to
    /// that remote endpoint, the masquerade mapping clashes with it and gets
    /// a random port (a simultaneous open would look symmetric). Dropped
    /// before confirmation, the packet leaves no entry.
    pub fn nat_router(
        &self,
        name: &str,
        kind: NatKind,
        inside: &Switch,
        inside_cidr: &str,
        outside: &Switch,
        public_cidr: &str,
    ) -> Result<Router> {
        let (inside_addr, _) = parse_cidr(inside_cidr)?;
        let ns = self.add_ns(name)?;
        let in_port = self.attach(inside, &ns, "in0", Some(inside_cidr))?;
        let out_port = self.attach(outside, &ns, "out0", Some(public_cidr))?;
        self.run(&ns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
        let masq = match kind {
            NatKind::Masquerade => "masquerade",
            NatKind::FullyRandom => "masquerade fully-random",
        };
        self.nft(
            &ns,
            &format!(
                "table ip rl_nat {{\n\
                 \x20 chain nat_post {{ type nat hook postrouting priority srcnat; policy accept; oifname \"out0\" {masq}; }}\n\
                 \x20 chain filter_forward {{ type filter hook forward priority filter; policy drop;\n\
                 \x20   ct state established,related accept\n\
                 \x20   iifname \"in0\" oifname \"out0\" accept\n\
                 \x20 }}\n\
                 \x20 chain filter_input {{ type filter hook input priority filter; policy accept;\n\
                 \x20   iifname \"out0\" ct state new drop\n\
                 \x20 }}\n\
                 }}\n"
            ),
        )?;
        Ok(Router {
            ns,
            kind,
            inside: in_port,
            outside: out_port,
            inside_addr,
            public_cidr: public_cidr.into(),
        })
    }

    /// Switches `lan` and `wan`, a NAT router `nat` of `kind` between them
    /// (`inside_cidr` on the LAN, `public_cidr` outside) and host `h` at
    /// `host_cidr` on the LAN, its default route through the router.
    pub fn natted_host(
        &self,
        kind: NatKind,
        inside_cidr: &str,
        public_cidr: &str,
        host_cidr: &str,
    ) -> Result<Natted> {
        let lan = self.switch("lan")?;
        let wan = self.switch("wan")?;
        let router = self.nat_router("nat", kind, &lan, inside_cidr, &wan, public_cidr)?;
        let host = self.host("h", &lan, host_cidr, Some(router.inside_addr))?;
        Ok(Natted {
            lan,
            wan,
            router,
            host,
        })
    }

    /// Replaces the router's public address (as if the ISP renumbered it)
    /// and flushes conntrack, so every mapping is new.
    pub fn set_public_addr(&self, router: &mut Router, public_cidr: &str) -> Result<()> {
        parse_cidr(public_cidr)?;
        self.run(&router.ns, &["ip", "addr", "flush", "dev", "out0"])?;
        self.add_addr(&router.ns, "out0", public_cidr)?;
        router.public_cidr = public_cidr.into();
        self.flush_conntrack(&router.ns)
    }

    /// Changes the router's NAT behaviour (say, a symmetric-like router
    /// reconfigured to `masquerade`) and flushes conntrack so every new
    /// mapping follows the new rule.
    pub fn set_nat_kind(&self, router: &mut Router, kind: NatKind) -> Result<()> {
        let masq = match kind {
            NatKind::Masquerade => "masquerade",
            NatKind::FullyRandom => "masquerade fully-random",
        };
        self.nft(
            &router.ns,
            &format!(
                "flush chain ip rl_nat nat_post\n\
                 add rule ip rl_nat nat_post oifname \"out0\" {masq}\n"
            ),
        )?;
        router.kind = kind;
        self.flush_conntrack(&router.ns)
    }

    /// Makes `ip` unreachable from behind the router (both directions are
    /// dropped in its forward path), as a firewall would.
    pub fn block(&self, router: &Router, ip: IpAddr) -> Result<()> {
        self.nft(
            &router.ns,
            &format!(
                "table ip rl_block {{\n\
                 \x20 chain blocked {{ type filter hook forward priority filter - 10; policy accept;\n\
                 \x20   ip daddr {ip} drop\n\
                 \x20   ip saddr {ip} drop\n\
                 \x20 }}\n\
                 }}\n"
            ),
        )
    }

    /// `conntrack -F` inside `ns`: forget every NAT mapping.
    pub fn flush_conntrack(&self, ns: &Ns) -> Result<()> {
        let out = self.exec(ns, &["conntrack", "-F"])?;
        // conntrack -F reports "0 flow entries" on stderr and may exit 1 when
        // the table is empty on some versions; only a missing tool is fatal.
        if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("flow entries") {
            bail!(
                "conntrack -F in {ns}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Drops `percent`% of the IP packets crossing `ifname` in `ns`
    /// (nftables netdev `numgen random mod 100 < N drop`; ARP is spared).
    /// Replaces any earlier loss rule on that interface; 0 removes it.
    pub fn set_loss(&self, ns: &Ns, ifname: &str, dir: Direction, percent: u8) -> Result<()> {
        if percent > 100 {
            bail!("loss percent {percent} > 100");
        }
        let table = format!("rl_loss_{}", ifname.replace(['-', '.'], "_"));
        // Delete the old table; it is fine if it does not exist.
        let _ = self.exec(ns, &["nft", "delete", "table", "netdev", &table]);
        if percent == 0 {
            return Ok(());
        }
        let rule = if percent == 100 {
            "meta protocol { ip, ip6 } drop".to_string()
        } else {
            format!("meta protocol {{ ip, ip6 }} numgen random mod 100 < {percent} drop")
        };
        let mut script = format!("table netdev {table} {{\n");
        if matches!(dir, Direction::Ingress | Direction::Both) {
            script += &format!(
                "  chain loss_ingress {{ type filter hook ingress device \"{ifname}\" priority filter; policy accept; {rule}; }}\n"
            );
        }
        if matches!(dir, Direction::Egress | Direction::Both) {
            script += &format!(
                "  chain loss_egress {{ type filter hook egress device \"{ifname}\" priority filter; policy accept; {rule}; }}\n"
            );
        }
        script += "}\n";
        self.nft(ns, &script)
    }

    /// Applies an nftables script inside `ns` (`nft -f -`).
    pub fn nft(&self, ns: &Ns, script: &str) -> Result<()> {
        if which("nft").is_none() {
            bail!("`nft` not found: apt-get install nftables (tests/run-all.sh does)");
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn nft")?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("nft stdin"))?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {ns} failed: {}\nscript:\n{script}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    // -- commands ------------------------------------------------------------

    /// Runs `args` inside `ns` and returns its output, whatever the status.
    pub fn exec(&self, ns: &Ns, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("ip netns exec {ns} {}", args.join(" ")))
    }

    /// Runs `args` inside `ns`; fails with its stderr unless it succeeds.
    /// Returns stdout.
    pub fn run(&self, ns: &Ns, args: &[&str]) -> Result<String> {
        let out = self.exec(ns, args)?;
        if !out.status.success() {
            bail!(
                "`{}` in {ns} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `count` pings (10 ms apart) from `ns` to `addr`.
    pub fn ping_stats(&self, ns: &Ns, addr: IpAddr, count: u32) -> Result<PingStats> {
        let out = self.exec(
            ns,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.01",
                "-W",
                "1",
                &addr.to_string(),
            ],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_ping(&text).ok_or_else(|| {
            anyhow!(
                "cannot parse ping output from {ns}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// True when at least one of `count` pings from `ns` to `addr` is answered.
    pub fn ping(&self, ns: &Ns, addr: IpAddr, count: u32) -> bool {
        self.ping_stats(ns, addr, count)
            .is_ok_and(|s| s.received > 0)
    }

    // -- processes -------------------------------------------------------------

    /// Starts `args` inside `ns` (`ip netns exec NS ARGS...`) in its own
    /// process group, stdout and stderr to `DIR/NAME.log`.
    pub fn spawn(&self, ns: &Ns, name: &str, args: &[&str]) -> Result<Proc> {
        self.spawn_env(ns, name, args, &[])
    }

    /// [`Lab::spawn`] with extra environment variables.
    pub fn spawn_env(
        &self,
        ns: &Ns,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proc> {
        if args.is_empty() {
            bail!("spawn {name}: empty command");
        }
        let mut st = self.state();
        self.check_running()?;
        let n = st.log_names.entry(name.to_string()).or_insert(0);
        *n += 1;
        let file_name = if *n == 1 {
            format!("{name}.log")
        } else {
            format!("{name}.{n}.log")
        };
        let log = self.dir.join(file_name);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {name}: {}", args.join(" ")))?;
        let proc = Proc {
            name: name.into(),
            pid: child.id(),
            ns: ns.clone(),
            log,
        };
        st.procs.push(ProcEntry {
            proc: proc.clone(),
            child,
            status: None,
        });
        Ok(proc)
    }

    /// The exit status if the process has ended (reaping it), else `None`.
    pub fn try_status(&self, p: &Proc) -> Result<Option<ExitStatus>> {
        let mut st = self.state();
        let e = st
            .procs
            .iter_mut()
            .find(|e| e.proc.pid == p.pid)
            .ok_or_else(|| anyhow!("process {} ({}) not started by this lab", p.name, p.pid))?;
        if e.status.is_none() {
            e.status = e.child.try_wait()?;
        }
        Ok(e.status)
    }

    /// True while the process runs.
    pub fn is_running(&self, p: &Proc) -> bool {
        matches!(self.try_status(p), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&self, p: &Proc, timeout: Duration) -> Result<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.try_status(p).ok().flatten();
            status.is_some()
        })
        .with_context(|| format!("process {} ({}) still running", p.name, p.pid))?;
        status.ok_or_else(|| anyhow!("no status"))
    }

    /// SIGTERM to the process group, SIGKILL after a grace period; reaps it.
    pub fn kill(&self, p: &Proc) -> Result<ExitStatus> {
        if let Some(s) = self.try_status(p)? {
            return Ok(s);
        }
        signal_group(p.pid, libc::SIGTERM);
        if let Ok(s) = self.wait(p, KILL_GRACE) {
            return Ok(s);
        }
        signal_group(p.pid, libc::SIGKILL);
        self.wait(p, KILL_GRACE)
    }

    /// Sends `sig` (e.g. `libc::SIGKILL`) to the process's group without
    /// waiting; reap it with [`Lab::wait`].
    pub fn signal(&self, p: &Proc, sig: libc::c_int) -> Result<()> {
        if self.try_status(p)?.is_some() {
            bail!("process {} ({}) has already exited", p.name, p.pid);
        }
        signal_group(p.pid, sig);
        Ok(())
    }

    /// The process's log so far.
    pub fn log(&self, p: &Proc) -> String {
        fs::read(&p.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Prints the tail of every process log to stderr.
    pub fn dump_logs(&self) {
        let procs: Vec<Proc> = self.state().procs.iter().map(|e| e.proc.clone()).collect();
        eprintln!(
            "==== ringlan-lab {}: {} process logs in {}",
            self.prefix,
            procs.len(),
            self.dir.display()
        );
        for p in procs {
            let text = self.log(&p);
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!(
                "---- {} (pid {}, ns {}) last {} lines:",
                p.name,
                p.pid,
                p.ns,
                lines.len() - from
            );
            for l in &lines[from..] {
                eprintln!("  {l}");
            }
        }
        eprintln!("==== end of logs");
    }

    // -- ringlan nodes ---------------------------------------------------------

    /// A node description for `ns`: config, socket and key paths in the lab
    /// directory. Write its config with [`Node::write_config`], then start it
    /// with [`Lab::start_node`].
    pub fn node(&self, ns: &Ns, name: &str, bin: &Path) -> Result<Node> {
        check_name(name)?;
        let d = self.dir.join("nodes").join(name);
        fs::create_dir_all(&d)?;
        Ok(Node {
            name: name.into(),
            ns: ns.clone(),
            bin: bin.into(),
            config: d.join(format!("{name}.yaml")),
            socket: d.join(format!("{name}.sock")),
            key_file: d.join(format!("{name}.key")),
            wrapper: Vec::new(),
            proc: None,
        })
    }

    /// Starts `[WRAPPER...] BIN up -c CONFIG` in the node's namespace
    /// (restarts it when already running).
    pub fn start_node(&self, node: &mut Node) -> Result<()> {
        self.stop_node(node)?;
        let bin = node.bin.to_string_lossy().into_owned();
        let cfg = node.config.to_string_lossy().into_owned();
        let mut args: Vec<&str> = node.wrapper.iter().map(String::as_str).collect();
        args.extend([bin.as_str(), "up", "-c", &cfg]);
        node.proc = Some(self.spawn(&node.ns, &node.name, &args)?);
        Ok(())
    }

    /// Stops the node's process if it runs.
    pub fn stop_node(&self, node: &mut Node) -> Result<()> {
        if let Some(p) = node.proc.take() {
            self.kill(&p)?;
        }
        Ok(())
    }

    // -- nftables counters ---------------------------------------------------

    /// Packets counted so far by the named counter object `name` of nftables
    /// table `family table` in `ns` (`nft -j list counter`).
    pub fn nft_counter(&self, ns: &Ns, family: &str, table: &str, name: &str) -> Result<u64> {
        Ok(self.nft_counter_full(ns, family, table, name)?.0)
    }

    /// Packets and bytes of the named counter (see [`Lab::nft_counter`]).
    pub fn nft_counter_full(
        &self,
        ns: &Ns,
        family: &str,
        table: &str,
        name: &str,
    ) -> Result<(u64, u64)> {
        let out = self.run(ns, &["nft", "-j", "list", "counter", family, table, name])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("nft -j output: {out}"))?;
        v["nftables"]
            .as_array()
            .and_then(|a| {
                a.iter().find_map(|o| {
                    let c = &o["counter"];
                    Some((c["packets"].as_u64()?, c["bytes"].as_u64()?))
                })
            })
            .ok_or_else(|| anyhow!("no counter {family} {table} {name} in {ns}: {out}"))
    }

    // -- cleanup -------------------------------------------------------------

    /// Whether [`Lab::shutdown`] has run (helper threads stop, and the lab
    /// creates no more namespaces or processes).
    pub fn is_shut_down(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn check_running(&self) -> Result<()> {
        if self.is_shut_down() {
            bail!("lab {} is shut down", self.prefix);
        }
        Ok(())
    }

    /// What dropping the lab does, through a shared reference (e.g. from a
    /// signal-handling thread while another thread still uses the lab):
    /// SIGTERM to every process (SIGKILL after a grace period), kill whatever
    /// else runs in lab namespaces, delete the namespaces (which takes their
    /// links) and the lab directory (kept when panicking or with
    /// `RINGLAN_LAB_KEEP`). Runs once; later calls return at once. After it
    /// the lab refuses to create namespaces or start processes.
    pub fn shutdown(&self) {
        let mut st = self.state();
        // Set under the lock: `add_ns` and `spawn_env` check it under the
        // same lock, so nothing is created behind our back.
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        let panicking = std::thread::panicking();
        // SIGTERM everything first, then give all a shared grace period.
        for e in st.procs.iter_mut() {
            if e.status.is_none() {
                e.status = e.child.try_wait().ok().flatten();
            }
            if e.status.is_none() {
                signal_group(e.proc.pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + KILL_GRACE;
        for e in st.procs.iter_mut() {
            while e.status.is_none() {
                e.status = e.child.try_wait().ok().flatten();
                if e.status.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!(
                        "ringlan-lab: {} ({}) ignored SIGTERM, killing",
                        e.proc.name, e.proc.pid
                    );
                    signal_group(e.proc.pid, libc::SIGKILL);
                    e.status = e.child.wait().ok();
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        // Whatever else runs in our namespaces (grandchildren that left the
        // process group) goes too; then the namespaces, which takes their
        // links (every veth end and bridge lives in a lab namespace).
        let namespaces: Vec<Ns> = st.namespaces.drain(..).rev().collect();
        st.links.clear();
        drop(st);
        for ns in &namespaces {
            kill_ns_pids(ns.name());
        }
        for ns in &namespaces {
            if let Err(e) = run_host(&["ip", "netns", "del", ns.name()]) {
                eprintln!("ringlan-lab: cannot delete namespace {ns}: {e:#}");
            }
        }
        let keep = std::env::var_os(KEEP_ENV).is_some();
        if panicking || keep {
            eprintln!("ringlan-lab: kept {}", self.dir.display());
        } else {
            fs::remove_dir_all(&self.dir).ok();
        }
    }

    /// Removes namespaces (killing the processes inside) and lab directories
    /// left by earlier runs whose owner process is gone. Returns the
    /// namespaces removed.
    pub fn cleanup_stale() -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for name in list_netns()? {
            let Some(pid) = owner_pid(&name) else {
                continue;
            };
            if pid_alive(pid) {
                continue;
            }
            kill_ns_pids(&name);
            if run_host(&["ip", "netns", "del", &name]).is_ok() {
                removed.push(name);
            }
        }
        if let Ok(rd) = fs::read_dir(lab_root()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if owner_pid(&name).is_some_and(|p| !pid_alive(p)) {
                    fs::remove_dir_all(e.path()).ok();
                }
            }
        }
        Ok(removed)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------
// Free helpers
// ---------------------------------------------------------------------------

/// Polls `cond` (every 20 ms) until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` until it returns `Some(value)` or `timeout` passes; the error
/// names `what` and the last error `f` returned, if any.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_err {
                Some(e) => e.context(format!("{what}: not within {timeout:?}")),
                None => anyhow!("{what}: not within {timeout:?}"),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// How often an agent publishes the status snapshot the control socket
/// answers from (the runtime's one-second tick).
pub const STATUS_PERIOD: Duration = Duration::from_secs(1);

/// `BIN status --json --socket SOCKET`, parsed.
pub fn status_json(bin: &Path, socket: &Path) -> Result<serde_json::Value> {
    let out = Command::new(bin)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} status --socket {} failed ({}): {}",
            bin.display(),
            socket.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parse status --json output")
}

/// Polls [`status_json`] until `pred` holds; returns the matching status.
/// The error carries the last status seen (or the last error).
pub fn wait_status_json(
    bin: &Path,
    socket: &Path,
    timeout: Duration,
    mut pred: impl FnMut(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    let mut last: Option<serde_json::Value> = None;
    let r = wait_for(timeout, "status predicate", || {
        let v = status_json(bin, socket)?;
        let ok = pred(&v);
        last = Some(v.clone());
        Ok(ok.then_some(v))
    });
    r.map_err(|e| match last {
        Some(v) => e.context(format!("last status of {}: {v}", socket.display())),
        None => e,
    })
}

/// Parses `a.b.c.d/len` (or an IPv6 CIDR).
pub fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8)> {
    let (a, l) = cidr
        .split_once('/')
        .ok_or_else(|| anyhow!("`{cidr}` is not ADDR/LEN"))?;
    let addr: IpAddr = a
        .parse()
        .with_context(|| format!("bad address in `{cidr}`"))?;
    let len: u8 = l
        .parse()
        .with_context(|| format!("bad prefix length in `{cidr}`"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        bail!("prefix length {len} > {max} in `{cidr}`");
    }
    Ok((addr, len))
}

/// For a root test that builds no [`Lab`]: true as root; false (skip, with
/// a message) when not root and `RINGLAN_SKIP_ROOT_TESTS=1`; panics with a
/// clear message otherwise.
pub fn root_or_skip() -> bool {
    if skip_root_test() {
        return false;
    }
    assert!(
        is_root(),
        "this test needs root (network namespaces, TAP); run as root or set {SKIP_ENV}=1"
    );
    true
}

/// Not root and root tests are to be skipped (says so).
fn skip_root_test() -> bool {
    let skip = !is_root() && std::env::var(SKIP_ENV).is_ok_and(|v| v == "1");
    if skip {
        eprintln!("skipping: not root and {SKIP_ENV}=1");
    }
    skip
}

/// Whether the process runs as root (euid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Deterministic pseudo-random bytes (SplitMix64), the payload of
/// [`Lab::tcp_transfer`].
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn remaining(deadline: Instant) -> Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        bail!("timeout");
    }
    Ok(d)
}

fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join().map_err(|_| anyhow!("helper thread panicked"))?
}

fn enter_netns(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: setns on a valid namespace fd; affects only the calling thread
    // (network namespaces are per thread).
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn signal_group(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: plain kill(2) on a process group we created (process_group(0)
    // makes the child's pid its group id); errors (already gone) are ignored.
    unsafe {
        if libc::kill(-pid, sig) != 0 {
            libc::kill(pid, sig);
        }
    }
}

fn kill_ns_pids(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        // Never ourselves (a thread of ours may have entered the namespace).
        if let Ok(p) = pid.parse::<libc::pid_t>() {
            if u32::try_from(p).is_ok_and(|p| p == std::process::id()) {
                continue;
            }
            // SAFETY: kill(2) on a pid that lives in a lab namespace.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
    }
}

fn run_host(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Network namespaces whose name starts with `prefix` (e.g. a lab's
/// [`Lab::prefix`], to check that nothing was left behind).
pub fn netns_with_prefix(prefix: &str) -> Result<Vec<String>> {
    Ok(list_netns()?
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect())
}

fn list_netns() -> Result<Vec<String>> {
    let out = run_host(&["ip", "netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The owner pid encoded in a lab name `rl<pid>x<n>-...` (or `rl<pid>x<n>`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(MARK)?;
    let (pid, rest) = rest.split_once('x')?;
    let counter_end = rest.find('-').unwrap_or(rest.len());
    let counter = &rest[..counter_end];
    if pid.is_empty()
        || counter.is_empty()
        || !pid.bytes().all(|b| b.is_ascii_digit())
        || !counter.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    pid.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn lab_root() -> PathBuf {
    std::env::temp_dir().join("ringlan-lab")
}

/// The path of `tool` on `PATH` (or in /usr/sbin, /sbin).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 24
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("lab object name `{name}` must be 1-24 chars of [a-z0-9-]");
    }
    Ok(())
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
        bail!("interface name `{name}` must be 1-15 chars without '/', ' ' or ':'");
    }
    Ok(())
}

fn parse_ping(text: &str) -> Option<PingStats> {
    // "100 packets transmitted, 71 received, 29% packet loss, time 1012ms"
    // "rtt min/avg/max/mdev = 0.031/0.052/0.097/0.011 ms"
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut parts = line.split(',');
    let transmitted = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let received = parts.next()?.split_whitespace().next()?.parse().ok()?;
    let avg_rtt = text
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1000.0));
    Some(PingStats {
        transmitted,
        received,
        avg_rtt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn owner_pid_parses_only_lab_names() {
        assert_eq!(owner_pid("rl4242x0-sw-lan"), Some(4242));
        assert_eq!(owner_pid("rl4242x13"), Some(4242));
        assert_eq!(owner_pid("rl4242x-a"), None);
        assert_eq!(owner_pid("rlx0-a"), None);
        assert_eq!(owner_pid("rl42a2x0-a"), None);
        assert_eq!(owner_pid("other"), None);
        assert_eq!(owner_pid("rl-home"), None);
    }

    #[test]
    fn ping_summary_parses() {
        let text = "PING 192.0.2.2 (192.0.2.2) 56(84) bytes of data.\n\n--- 192.0.2.2 ping statistics ---\n\
                    100 packets transmitted, 71 received, 29% packet loss, time 1012ms\n\
                    rtt min/avg/max/mdev = 0.031/0.052/0.097/0.011 ms\n";
        let s = parse_ping(text).expect("parses");
        assert_eq!((s.transmitted, s.received, s.lost()), (100, 71, 29));
        assert_eq!(s.avg_rtt, Some(Duration::from_secs_f64(0.052 / 1000.0)));
        let none = "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2003ms\n";
        let s = parse_ping(none).expect("parses");
        assert_eq!((s.received, s.avg_rtt), (0, None));
        assert_eq!(parse_ping("garbage"), None);
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("192.0.2.1/24").unwrap(),
            ("192.0.2.1".parse().unwrap(), 24)
        );
        assert!(parse_cidr("192.0.2.1").is_err());
        assert!(parse_cidr("192.0.2.1/33").is_err());
        assert!(parse_cidr("x/24").is_err());
    }

    #[test]
    fn splitmix_is_deterministic_and_fills_tails() {
        let mut a = SplitMix64(7);
        let mut b = SplitMix64(7);
        let mut x = [0u8; 13];
        let mut y = [0u8; 13];
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(x, [0u8; 13]);
        // Reference value of SplitMix64 seeded with 0 (first output).
        assert_eq!(SplitMix64(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn shutdown_from_another_thread_removes_everything_once() {
        let Some(lab) = Lab::for_test() else { return };
        let lab = Arc::new(lab);
        let ns = lab.add_ns("a").unwrap();
        let p = lab.spawn(&ns, "sleeper", &["sleep", "600"]).unwrap();
        let dir = lab.dir().to_path_buf();
        let other = lab.clone();
        std::thread::spawn(move || other.shutdown()).join().unwrap();
        assert!(lab.is_shut_down());
        assert!(!lab.is_running(&p));
        assert_eq!(
            netns_with_prefix(lab.prefix()).unwrap(),
            Vec::<String>::new()
        );
        assert!(!dir.exists());
        // Refuses to build more, and a second shutdown (Drop) is harmless.
        assert!(lab.add_ns("b").is_err());
        assert!(lab.spawn(&ns, "late", &["true"]).is_err());
        drop(lab);
    }

    #[test]
    fn stun_request_and_rfc5769_response() {
        let txid = [
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ];
        let req = stun_binding_request(&txid);
        assert_eq!(&req[..8], &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42]);
        assert_eq!(&req[8..], &txid);
        // RFC 5769 section 2.2 (sample IPv4 response): SOFTWARE, then
        // XOR-MAPPED-ADDRESS 192.0.2.1:32853, MESSAGE-INTEGRITY, FINGERPRINT.
        let mut msg = vec![0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42];
        msg.extend_from_slice(&txid);
        msg.extend_from_slice(&[0x80, 0x22, 0x00, 0x0b]);
        msg.extend_from_slice(b"test vector ");
        msg.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47]);
        msg.extend_from_slice(&[0xe1, 0x12, 0xa6, 0x43]);
        msg.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
        msg.extend_from_slice(&[
            0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0x18, 0xc1, 0xd2, 0xe8, 0xd3, 0x31, 0x45,
            0x65, 0x5b, 0xe7, 0x82, 0x07, 0x7f,
        ]);
        msg.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96]);
        assert_eq!(msg.len(), 20 + 0x3c);
        let want: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        assert_eq!(parse_stun_binding_response(&msg, &txid), Some(want));
        // Another transaction, a request type, every truncation: nothing,
        // and no panic.
        let mut other = txid;
        other[0] ^= 1;
        assert_eq!(parse_stun_binding_response(&msg, &other), None);
        let mut req_type = msg.clone();
        req_type[1] = 0x01;
        req_type[0] = 0x00;
        assert_eq!(parse_stun_binding_response(&req_type, &txid), None);
        for n in 0..msg.len() {
            let _ = parse_stun_binding_response(&msg[..n], &txid);
        }
        // MAPPED-ADDRESS (not XOR-ed) from old servers.
        let mut old = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        old.extend_from_slice(&txid);
        old.extend_from_slice(&[0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x0d, 0x96]);
        old.extend_from_slice(&[198, 51, 100, 7]);
        assert_eq!(
            parse_stun_binding_response(&old, &txid),
            Some("198.51.100.7:3478".parse().unwrap())
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("nat-1").is_ok());
        assert!(check_name("Bad").is_err());
        assert!(check_name("").is_err());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("eth0").is_ok());
    }
}
