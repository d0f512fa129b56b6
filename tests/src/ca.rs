//! A network CA for tests, driven through the `ringlan` binary as an admin
//! would (`docs/membership.md` 5): `ringlan ca init | sign | revoke` and
//! `ringlan keygen`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _, Result};

/// Runs `bin args...`; its stdout, or an error with its stderr.
fn run(bin: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("run {} {args:?}", bin.display()))?;
    ensure!(
        out.status.success(),
        "ringlan {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn arg(p: &Path) -> Result<&str> {
    p.to_str().context("path is not UTF-8")
}

/// A new node key at `path` (`ringlan keygen -o PATH`); returns its public
/// key (64 hex).
pub fn keygen(bin: &Path, path: &Path) -> Result<String> {
    let out = run(bin, &["keygen", "-o", arg(path)?])?;
    let public = out
        .trim_end()
        .strip_prefix("public key: ")
        .with_context(|| format!("ringlan keygen printed {out:?}"))?;
    Ok(public.to_string())
}

/// A network CA: its key (`NAME.ca`, with the register beside it) and its
/// public key file (`NAME.ca.pub`, what `network.ca` points at).
#[derive(Clone, Debug)]
pub struct TestCa {
    bin: PathBuf,
    pub key: PathBuf,
    pub pub_file: PathBuf,
    /// The CA public key, 64 hex.
    pub public: String,
}

impl TestCa {
    /// `ringlan ca init --network NETWORK --out DIR/NAME.ca`, and the public
    /// key written to `DIR/NAME.ca.pub` as `ringlan ca pub` prints it.
    pub fn init(bin: &Path, dir: &Path, network: &str, name: &str) -> Result<TestCa> {
        let key = dir.join(format!("{name}.ca"));
        let public = run(
            bin,
            &["ca", "init", "--network", network, "--out", arg(&key)?],
        )?
        .trim_end()
        .to_string();
        let pub_file = dir.join(format!("{name}.ca.pub"));
        let printed = run(bin, &["ca", "pub", arg(&key)?])?;
        std::fs::write(&pub_file, format!("# CA {name}\n{printed}"))
            .with_context(|| format!("write {}", pub_file.display()))?;
        Ok(TestCa {
            bin: bin.into(),
            key,
            pub_file,
            public,
        })
    }

    /// `ringlan ca sign --ca KEY --name NODE --key PUBLIC_KEY --out OUT
    /// EXTRA...` (e.g. `--expires 2w`, `--bridge`).
    pub fn sign(&self, node: &str, public_key: &str, out: &Path, extra: &[&str]) -> Result<()> {
        let mut args = vec![
            "ca",
            "sign",
            "--ca",
            arg(&self.key)?,
            "--name",
            node,
            "--key",
            public_key,
            "--out",
            arg(out)?,
            "--force",
        ];
        args.extend_from_slice(extra);
        run(&self.bin, &args).map(drop)
    }

    /// `ringlan ca revoke --ca KEY --out LIST NODE...`; returns what it
    /// printed (`LIST: version N, M revoked`).
    pub fn revoke(&self, list: &Path, nodes: &[&str]) -> Result<String> {
        let mut args = vec!["ca", "revoke", "--ca", arg(&self.key)?, "--out", arg(list)?];
        args.extend_from_slice(nodes);
        run(&self.bin, &args)
    }
}
