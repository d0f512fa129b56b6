//! `ringlan`: the peer-to-peer overlay VPN agent (see `docs/design.md`,
//! "CLI"). `ringlan demo` is compiled only with the `demo` feature (on by
//! default).

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use ringlan_agent::config::Config;
use ringlan_agent::identity::{self, NetworkSecret, NodeKey};
use ringlan_agent::{control, service, up};

#[cfg(feature = "demo")]
mod demo;

#[derive(Parser)]
#[command(
    name = "ringlan",
    version,
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
    Status {
        /// Read the control socket path from this config file.
        #[arg(short, long, value_name = "FILE", conflicts_with = "socket")]
        config: Option<PathBuf>,
        /// Control socket path (default: the only socket in /run/ringlan).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
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
    /// Validate a config file (and its secret and key files) without
    /// starting.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Build a throw-away lab of network namespaces on this machine, join
    /// agents into one virtual LAN, show status and traffic, remove it all
    /// (needs root).
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

/// `ringlan demo` in a binary built without the `demo` feature.
#[cfg(not(feature = "demo"))]
const NO_DEMO: &str = "ringlan demo: this ringlan was built without the `demo` feature \
     (cargo build -p ringlan-agent --features demo)";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Up { config } => cmd_up(&config),
        Cmd::Status {
            config,
            socket,
            json,
        } => cmd_status(config.as_deref(), socket, json),
        Cmd::Keygen { output, force } => cmd_keygen(output.as_deref(), force),
        Cmd::Secret { output, force } => cmd_secret(output.as_deref(), force),
        #[cfg(feature = "demo")]
        Cmd::Demo(args) => return demo::run(&args),
        #[cfg(not(feature = "demo"))]
        Cmd::Demo { .. } => {
            eprintln!("{NO_DEMO}");
            return ExitCode::FAILURE;
        }
        Cmd::CheckConfig { file } => match Config::load_and_check(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringlan: {e:#}");
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
        version = env!("CARGO_PKG_VERSION"),
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

fn cmd_status(config: Option<&Path>, socket: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    let path = match (config, socket) {
        (Some(c), _) => Config::load(c)?.control.socket,
        (None, Some(s)) => s,
        (None, None) => default_socket()?,
    };
    let status = runtime()?.block_on(control::request_status(&path))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}

fn cmd_keygen(output: Option<&Path>, force: bool) -> anyhow::Result<()> {
    let key = NodeKey::generate()?;
    let public = identity::hex(&key.public_key());
    match output {
        Some(path) => {
            identity::write_private(path, key.secret_bytes(), force)?;
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
            identity::write_private(path, secret.bytes(), force)?;
            eprintln!("wrote network secret to {}", path.display());
        }
        None => std::io::stdout().write_all(identity::file_text(secret.bytes()).as_bytes())?,
    }
    Ok(())
}
