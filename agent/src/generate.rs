//! `ringlan generate`: the man pages (`clap_mangen`) and shell completion
//! scripts (`clap_complete`) made from the CLI definition itself, so they
//! never drift from `--help`. The Debian package and `packaging/install.sh`
//! run it on the binary they install (see packaging/README.md, "Man pages
//! and completions").
//!
//! Pages: `ringlan.1` and one page per subcommand, git-style
//! (`ringlan-status.1`, `ringlan-ca-sign.1`); hidden subcommands get none.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use clap_complete::Shell;

/// `ringlan --version`: the crate version and the commit it was built from
/// (agent/build.rs: `git rev-parse --short HEAD`, `$RINGLAN_COMMIT`, or
/// `unknown`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RINGLAN_COMMIT"),
    ")"
);

/// The `ringlan generate` subcommands.
#[derive(Debug, Subcommand)]
pub enum GenerateCmd {
    /// Write the man pages: `ringlan.1` to stdout, or with `--out DIR`
    /// every page (`ringlan.1`, `ringlan-SUBCOMMAND.1`) into DIR.
    Man {
        /// Directory to write every page into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write the completion script for SHELL to stdout, or with `--out DIR`
    /// into DIR (bash: `ringlan.bash`, zsh: `_ringlan`, fish:
    /// `ringlan.fish`).
    Completions {
        #[arg(value_name = "SHELL")]
        shell: Shell,
        /// Directory to write the script into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// Runs `ringlan generate` for the CLI `cli` (`Cli::command()`); prints
/// the paths written when `--out` is given.
pub fn run(cmd: GenerateCmd, cli: clap::Command) -> anyhow::Result<()> {
    let written = match cmd {
        GenerateCmd::Man { out: None } => {
            man_page(cli, &mut io::stdout().lock())?;
            Vec::new()
        }
        GenerateCmd::Man { out: Some(dir) } => man_pages(cli, &dir)
            .with_context(|| format!("writing man pages to {}", dir.display()))?,
        GenerateCmd::Completions { shell, out: None } => {
            completions(cli, shell, &mut io::stdout().lock());
            Vec::new()
        }
        GenerateCmd::Completions {
            shell,
            out: Some(dir),
        } => vec![completions_to(cli, shell, &dir)
            .with_context(|| format!("writing {shell} completions to {}", dir.display()))?],
    };
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}

/// Files the packaged agent uses, for the top page (packaging/README.md).
const FILES: &[(&str, &str)] = &[
    (
        "/etc/ringlan/NAME.yaml",
        "config of network NAME, read by the unit ringlan@NAME (ringlan check-config FILE validates it)",
    ),
    (
        "/etc/ringlan/NAME.secret",
        "network secret (ringlan secret -o FILE); mode 0640, group ringlan",
    ),
    (
        "/etc/ringlan/example.yaml.sample",
        "an annotated node config to start from",
    ),
    (
        "/var/lib/ringlan",
        "node keys and revocation lists (the unit's StateDirectory)",
    ),
    (
        "/run/ringlan/NAME.sock",
        "control socket of a running agent (ringlan status)",
    ),
    (
        "/lib/systemd/system/ringlan@.service",
        "the systemd unit: systemctl enable --now ringlan@NAME",
    ),
    (
        "/usr/share/doc/ringlan/examples",
        "example configs: introducer, network CA, IPv6 with metrics, DHCP",
    ),
];

/// Renders the top page, `ringlan(1)`: what clap knows, plus FILES,
/// ENVIRONMENT and SEE ALSO before the VERSION section.
pub fn man_page(cli: clap::Command, w: &mut dyn Write) -> io::Result<()> {
    use clap_mangen::roff::{bold, roman, Roff};
    let mut page = Vec::new();
    clap_mangen::Man::new(cli.disable_help_subcommand(true)).render(&mut page)?;
    let page = String::from_utf8_lossy(&page);
    let mut extra = Roff::new();
    extra.control("SH", ["FILES"]);
    for (path, what) in FILES {
        extra
            .control("TP", [])
            .text([bold(*path)])
            .text([roman(*what)]);
    }
    extra.control("SH", ["ENVIRONMENT"]);
    extra
        .control("TP", [])
        .text([bold("RUST_LOG")])
        .text([roman(
            "log filter (tracing EnvFilter syntax, e.g. debug or ringlan_overlay=trace); \
         overrides log.level of the config",
        )]);
    extra.control("SH", ["SEE ALSO"]);
    extra.text([roman(
        "systemctl(1), journalctl(1); the documentation in /usr/share/doc/ringlan",
    )]);
    // No apostrophes above: the page's own preamble covers the rest.
    let extra = extra.to_roff();
    let at = page.find("\n.SH VERSION").map_or(page.len(), |i| i + 1);
    w.write_all(page[..at].as_bytes())?;
    w.write_all(extra.as_bytes())?;
    w.write_all(page[at..].as_bytes())
}

/// Writes `ringlan.1` and a page for every visible subcommand, at any
/// depth, into `dir`; returns the paths written, top page first.
pub fn man_pages(cli: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(cmd: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        let subs: Vec<clap::Command> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .cloned()
            .collect();
        out.push(clap_mangen::Man::new(cmd).generate_to(dir)?);
        for sub in subs {
            walk(sub, dir, out)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    // `build` names each subcommand `ringlan-sub` (its page's name), and
    // `help` is no command of ours.
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    let top = dir.join("ringlan.1");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&top)?);
    man_page(cli.clone(), &mut f)?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let mut out = vec![top];
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        walk(sub.clone(), dir, &mut out)?;
    }
    Ok(out)
}

/// Writes the completion script for `shell`.
pub fn completions(mut cli: clap::Command, shell: Shell, w: &mut dyn Write) {
    let name = cli.get_name().to_owned();
    clap_complete::generate(shell, &mut cli, name, w);
}

/// Writes the completion script for `shell` into `dir` under the name the
/// shell looks for; returns its path.
pub fn completions_to(mut cli: clap::Command, shell: Shell, dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = cli.get_name().to_owned();
    clap_complete::generate_to(shell, &mut cli, name, dir)
}
