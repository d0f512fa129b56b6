//! `ringlan`: the peer-to-peer overlay VPN agent (see `docs/design.md`,
//! "CLI"). `ringlan demo` is compiled only with the `demo` feature (on by
//! default).

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{CommandFactory as _, Parser, Subcommand};
use ringlan_agent::config::Config;
use ringlan_agent::generate::{self, GenerateCmd};
use ringlan_agent::identity::{self, NetworkSecret, NodeKey};
use ringlan_agent::{ca, control, credentials, service, up};
use ringlan_node::membership::{self, Roles};

#[cfg(feature = "demo")]
mod demo;

#[derive(Parser)]
#[command(
    name = "ringlan",
    version = generate::VERSION,
    about = "Peer-to-peer overlay VPN agent: one virtual Ethernet LAN"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent in the foreground (what systemd runs).
    Up {
        /// Network config file, e.g. /etc/ringlan/home.yaml.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show the status of a running agent.
    Status(AgentQuery),
    /// List the network's members from the directory on the ring (every
    /// member, not only this node's sessions): name, node id, overlay
    /// addresses, MAC, NAT kind, last seen.
    Members(AgentQuery),
    /// Show the network as the agent sees it: members in ring order with
    /// NAT kind and relay capability, and which members are linked (ring,
    /// long, ...) and how (direct, LAN, relayed via whom), from the
    /// directory and the links every member publishes (docs/topology.md).
    Topology(TopologyQuery),
    /// Make a node key (Ed25519); prints the public key.
    Keygen {
        /// Write the key to FILE (mode 0600) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Make a network secret (32 random bytes).
    Secret {
        /// Write the secret to FILE (mode 0600) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// The network CA (offline): make its key, sign node certificates,
    /// revoke nodes (docs/membership.md).
    #[command(subcommand)]
    Ca(CaCmd),
    /// Inspect certificates and revocation lists.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Hand revocation lists to a running agent.
    #[command(subcommand)]
    Revocations(RevocationsCmd),
    /// Point systemd-resolved at the agent's DNS responder for the TAP
    /// (`resolvectl dns` / `resolvectl domain ~DOMAIN`) when the config has
    /// `dns:`; does nothing without it or without resolvectl. The unit runs
    /// it after start (docs/directory.md "DNS").
    ResolvedSetup {
        /// Network config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file (and its secret and key files) without
    /// starting.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Write the man pages or a shell completion script (what the package
    /// installs).
    #[command(subcommand)]
    Generate(GenerateCmd),
    /// Build a throw-away lab of network namespaces on this machine, join
    /// agents behind NATs into one virtual LAN, show punched and relayed
    /// paths and a relay failover, remove it all (needs root).
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Not in this build: it was built without the `demo` feature.
    #[cfg(not(feature = "demo"))]
    #[command(hide = true)]
    Demo {
        /// Ignored.
        #[arg(num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
}

/// Which running agent to ask.
#[derive(clap::Args)]
struct AgentSocket {
    /// Read the control socket path from this config file.
    #[arg(short, long, value_name = "FILE", conflicts_with = "socket")]
    config: Option<PathBuf>,
    /// Control socket path (default: the only socket in /run/ringlan).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

/// Which running agent to ask, and how to print its answer.
#[derive(clap::Args)]
struct AgentQuery {
    #[command(flatten)]
    agent: AgentSocket,
    /// Print the answer as JSON (`members`: the shape in docs/directory.md).
    #[arg(long)]
    json: bool,
}

/// `ringlan topology`: which agent, which format, where to.
#[derive(clap::Args)]
struct TopologyQuery {
    #[command(flatten)]
    agent: AgentSocket,
    /// Output format: a text table, JSON (docs/topology.md), Graphviz DOT
    /// (e.g. `| neato -Tpng`), or a self-contained SVG ring drawing.
    #[arg(long, value_enum, default_value = "text")]
    format: TopologyFormat,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TopologyFormat {
    Text,
    Json,
    Dot,
    Svg,
}

#[derive(Subcommand)]
enum CaCmd {
    /// Make a network CA key (Ed25519, mode 0600) and its register
    /// `CA_KEY.issued`; prints the CA public key.
    Init {
        /// The network's name, as `network.name` in the node configs.
        #[arg(long, value_name = "NAME")]
        network: String,
        /// The CA key file; keep it offline.
        #[arg(long, value_name = "CA_KEY")]
        out: PathBuf,
        /// Overwrite an existing CA key and register.
        #[arg(long)]
        force: bool,
    },
    /// Print the CA public key (64 hex characters).
    Pub {
        #[arg(value_name = "CA_KEY")]
        ca: PathBuf,
    },
    /// Sign a node certificate.
    Sign {
        #[arg(long, value_name = "CA_KEY")]
        ca: PathBuf,
        /// The node's name (1-63 characters of A-Z, a-z, 0-9, ., _ and -).
        #[arg(long, value_name = "NODE")]
        name: String,
        /// The node's public key (64 hex; `ringlan keygen` prints it).
        #[arg(long, value_name = "NODE_PUBLIC_KEY")]
        key: String,
        /// An overlay address or subnet the node may use as source
        /// (e.g. 10.77.0.2/32); repeatable.
        #[arg(long = "ip", value_name = "CIDR")]
        ips: Vec<String>,
        /// The node bridges a site: any source MAC (otherwise only the MAC
        /// derived from its key).
        #[arg(long)]
        bridge: bool,
        /// A role the node may play; repeatable.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<RoleArg>,
        /// Validity from now, e.g. 365d, 12h, 2w.
        #[arg(long, value_name = "DURATION", default_value = "365d",
              value_parser = ca::parse_duration)]
        expires: Duration,
        /// The certificate file to write.
        #[arg(long, value_name = "CERT")]
        out: PathBuf,
        /// Overwrite CERT if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Revoke nodes: create the revocation list LIST (version 1) or extend
    /// it (version + 1), signed by the CA.
    Revoke {
        #[arg(long, value_name = "CA_KEY")]
        ca: PathBuf,
        #[arg(long, value_name = "LIST")]
        out: PathBuf,
        /// A node name (every key signed under it), node id (32 hex),
        /// public key (64 hex) or certificate file.
        #[arg(value_name = "NODE", required = true)]
        nodes: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CertCmd {
    /// Print a certificate or revocation list.
    Show {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Check the signature against this CA public key (64 hex).
        #[arg(long, value_name = "CA_PUBLIC_KEY")]
        ca: Option<String>,
    },
}

#[derive(Subcommand)]
enum RevocationsCmd {
    /// Hand the revocation list LIST (as `ringlan ca revoke` writes it) to
    /// a running agent, which checks it, keeps it and spreads it to every
    /// member.
    Push {
        #[arg(value_name = "LIST")]
        list: PathBuf,
        /// Read the control socket path from this config file.
        #[arg(short, long, value_name = "FILE", conflicts_with = "socket")]
        config: Option<PathBuf>,
        /// Control socket path (default: the only socket in /run/ringlan).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Introducer,
    Relay,
}

/// `ringlan demo` in a binary built without the `demo` feature.
#[cfg(not(feature = "demo"))]
const NO_DEMO: &str = "ringlan demo: this ringlan was built without the `demo` feature \
     (cargo build -p ringlan-agent --features demo)";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Up { config } => cmd_up(&config),
        Cmd::Status(q) => cmd_status(q.agent.config.as_deref(), q.agent.socket, q.json),
        Cmd::Members(q) => cmd_members(q.agent.config.as_deref(), q.agent.socket, q.json),
        Cmd::Topology(q) => cmd_topology(q),
        Cmd::Keygen { output, force } => cmd_keygen(output.as_deref(), force),
        Cmd::Secret { output, force } => cmd_secret(output.as_deref(), force),
        Cmd::Ca(cmd) => cmd_ca(cmd),
        Cmd::Cert(CertCmd::Show { file, ca }) => cmd_cert_show(&file, ca.as_deref()),
        Cmd::Revocations(RevocationsCmd::Push {
            list,
            config,
            socket,
        }) => cmd_revocations_push(&list, config.as_deref(), socket),
        #[cfg(feature = "demo")]
        Cmd::Demo(args) => return demo::run(&args),
        #[cfg(not(feature = "demo"))]
        Cmd::Demo { .. } => {
            eprintln!("{NO_DEMO}");
            return ExitCode::FAILURE;
        }
        Cmd::CheckConfig { file } => return cmd_check_config(&file),
        Cmd::Generate(cmd) => generate::run(cmd, Cli::command()),
        Cmd::ResolvedSetup { config } => cmd_resolved_setup(&config),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringlan: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ringlan resolved-setup`: the `resolvectl` calls for the config's
/// `dns:` (nothing to do without it, or without resolvectl).
fn cmd_resolved_setup(config: &Path) -> anyhow::Result<()> {
    let c = Config::load(config)?;
    let Some(d) = &c.dns else {
        println!("{}: no dns configured", config.display());
        return Ok(());
    };
    for args in ringlan_agent::dns::resolvectl_commands(&c.interface.name, d.listen, &d.domain) {
        let st = match std::process::Command::new("resolvectl")
            .args(&args)
            .status()
        {
            Ok(st) => st,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("resolvectl not found: systemd-resolved is not used here");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        anyhow::ensure!(st.success(), "resolvectl {} failed: {st}", args.join(" "));
        println!("resolvectl {}", args.join(" "));
    }
    Ok(())
}

/// `ringlan check-config`: `FILE: OK` and the membership notes (warnings
/// on stderr), or the error and exit code 1.
fn cmd_check_config(file: &Path) -> ExitCode {
    let checked = Config::load_and_check(file).and_then(|c| {
        let m = c.membership()?;
        Ok((c, m))
    });
    match checked {
        Ok((config, membership)) => {
            println!("{}: OK", file.display());
            for (warning, text) in credentials::notes(&config, membership.as_ref(), ca::unix_now())
            {
                if warning {
                    eprintln!("warning: {text}");
                } else {
                    println!("note: {text}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// One thread: the node's data path is a single task that owns the
/// endpoint, the overlay and the TAP; a multi-threaded runtime only adds
/// cross-thread wake-ups (measured: most of the CPU went to task switches).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn cmd_up(file: &Path) -> anyhow::Result<()> {
    let config = Config::load_and_check(file)?;
    service::init_logging(config.log.level);
    tracing::info!(
        config = %file.display(),
        network = %config.network.name,
        node = %config.node.name,
        version = generate::VERSION,
        "starting"
    );
    runtime()?.block_on(up::up(config))
}

fn default_socket() -> anyhow::Result<PathBuf> {
    let dir = Path::new("/run/ringlan");
    let socks: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    match socks.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no agent socket in {}; is ringlan running? (or give -c FILE / --socket PATH)",
            dir.display()
        ),
        _ => bail!(
            "several agents are running ({} sockets in {}); pick one with -c FILE or --socket PATH",
            socks.len(),
            dir.display()
        ),
    }
}

/// The control socket named by `-c FILE`, `--socket PATH`, or the only one
/// in /run/ringlan.
fn control_socket(config: Option<&Path>, socket: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match (config, socket) {
        (Some(c), _) => Config::load(c)?.control.socket,
        (None, Some(s)) => s,
        (None, None) => default_socket()?,
    })
}

fn cmd_revocations_push(
    list: &Path,
    config: Option<&Path>,
    socket: Option<PathBuf>,
) -> anyhow::Result<()> {
    // A file that is not a list never reaches the agent.
    let list = ca::read_list(list)?;
    let path = control_socket(config, socket)?;
    let version = runtime()?.block_on(control::push_revocations(&path, list.as_bytes()))?;
    println!("revocation list version {version} accepted; spreading to members");
    Ok(())
}

fn cmd_status(config: Option<&Path>, socket: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let path = control_socket(config, socket)?;
    let status = runtime()?.block_on(control::request_status(&path))?;
    print_answer(&status, json, |s| s.render())
}

fn cmd_members(config: Option<&Path>, socket: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let path = control_socket(config, socket)?;
    let report = runtime()?.block_on(control::request_members(&path))?;
    print_answer(&report, json, |r| r.render())
}

fn cmd_topology(q: TopologyQuery) -> anyhow::Result<()> {
    use ringlan_node::topology;
    let path = control_socket(q.agent.config.as_deref(), q.agent.socket)?;
    let t = runtime()?.block_on(control::request_topology(&path))?;
    let out = match q.format {
        TopologyFormat::Text => t.render(),
        TopologyFormat::Json => format!("{}\n", serde_json::to_string_pretty(&t)?),
        TopologyFormat::Dot => topology::dot::render(&t),
        TopologyFormat::Svg => topology::svg::render(&t),
    };
    match q.output {
        Some(file) => std::fs::write(&file, out)
            .with_context(|| format!("cannot write {}", file.display()))?,
        None => print!("{out}"),
    }
    Ok(())
}

/// An agent's answer as pretty JSON, or rendered for people.
fn print_answer<T: serde::Serialize>(
    answer: &T,
    json: bool,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
    } else {
        print!("{}", render(answer));
    }
    Ok(())
}

fn cmd_keygen(output: Option<&Path>, force: bool) -> anyhow::Result<()> {
    let key = NodeKey::generate()?;
    let public = identity::hex(&key.public_key());
    match output {
        Some(path) => {
            identity::write_private(path, key.secret_bytes(), identity::KEY_MODE, force)?;
            println!("public key: {public}");
        }
        None => {
            std::io::stdout().write_all(identity::file_text(key.secret_bytes()).as_bytes())?;
            eprintln!("public key: {public}");
        }
    }
    Ok(())
}

fn cmd_secret(output: Option<&Path>, force: bool) -> anyhow::Result<()> {
    let secret = NetworkSecret::generate()?;
    match output {
        Some(path) => {
            identity::write_private(path, secret.bytes(), identity::SECRET_MODE, force)?;
            eprintln!("wrote network secret to {}", path.display());
        }
        None => std::io::stdout().write_all(identity::file_text(secret.bytes()).as_bytes())?,
    }
    Ok(())
}

fn cmd_ca(cmd: CaCmd) -> anyhow::Result<()> {
    match cmd {
        CaCmd::Init {
            network,
            out,
            force,
        } => {
            let public = ca::init(&network, &out, force)?;
            println!("{}", identity::hex(&public));
            eprintln!(
                "wrote CA key {} (keep it offline) and register {}",
                out.display(),
                ca::register_path(&out).display()
            );
        }
        CaCmd::Pub { ca: key } => println!("{}", identity::hex(&ca::public(&key)?)),
        CaCmd::Sign {
            ca: key,
            name,
            key: node_key,
            ips,
            bridge,
            roles,
            expires,
            out,
            force,
        } => {
            let req = ca::SignRequest {
                name: &name,
                key: &node_key,
                ips: &ips,
                bridge,
                roles: Roles {
                    introducer: roles.iter().any(|r| matches!(r, RoleArg::Introducer)),
                    relay: roles.iter().any(|r| matches!(r, RoleArg::Relay)),
                },
                expires,
            };
            let cert = ca::sign(&key, &req, &out, force, ca::unix_now())?;
            println!(
                "signed {name} (node id {}), expires {}: {}",
                cert.node_id()
                    .map(|id| identity::hex(&id.to_bytes()))
                    .unwrap_or_default(),
                membership::format_utc(cert.body().not_after),
                out.display()
            );
        }
        CaCmd::Revoke {
            ca: key,
            out,
            nodes,
        } => {
            let list = ca::revoke(&key, &out, &nodes, ca::unix_now())?;
            println!(
                "{}: version {}, {} revoked",
                out.display(),
                list.body().version,
                list.body().revoked.len()
            );
        }
    }
    Ok(())
}

fn cmd_cert_show(file: &Path, ca_key: Option<&str>) -> anyhow::Result<()> {
    let ca_key = ca_key
        .map(|s| {
            membership::parse_hex::<32>(s)
                .map(membership::CaKey)
                .ok_or_else(|| anyhow::anyhow!("--ca `{s}`: expected the CA public key, 64 hex characters (`ringlan ca pub`)"))
        })
        .transpose()?;
    let obj = ca::read_object(file)?;
    let (text, ok) = ca::show(&obj, ca_key.as_ref(), ca::unix_now());
    print!("{text}");
    if !ok {
        bail!("{}: signature BAD", file.display());
    }
    Ok(())
}
