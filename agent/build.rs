//! Puts the commit the binary is built from into `RINGLAN_COMMIT`, which
//! `ringlan --version` prints: `$RINGLAN_COMMIT` when set (a build from a
//! source tarball), else `git rev-parse --short HEAD`, else `unknown`.
//! Reruns when the checked-out commit changes (HEAD, the branch's ref, the
//! directory of branch refs, or packed refs), not on every source change.
//! The directory matters where refs are packed: the branch then has no
//! file of its own until the next commit writes one there.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Absolute path of `name` inside the git directory (worktrees keep HEAD
/// apart from the shared refs; `--git-path` knows which is where).
fn git_path(name: &str) -> Option<String> {
    git(&["rev-parse", "--path-format=absolute", "--git-path", name])
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RINGLAN_COMMIT");
    let commit = match std::env::var("RINGLAN_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        _ => {
            let mut watch = vec![
                git_path("HEAD"),
                git_path("packed-refs"),
                git_path("refs/heads"),
            ];
            if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch.push(git_path(&head_ref));
            }
            // A path that does not exist would make Cargo rerun this script
            // on every build.
            for p in watch.into_iter().flatten() {
                if Path::new(&p).exists() {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=RINGLAN_COMMIT={commit}");
}
