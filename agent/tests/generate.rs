//! `ringlan --version` names the commit; `ringlan generate` writes a man
//! page for every subcommand `--help` lists (rendered by man(1)) and
//! completion scripts that complete them (bash run for real).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run ringlan")
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "ringlan {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A fresh scratch directory under Cargo's per-test-target temp dir.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("generate-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The subcommands `ringlan PATH... --help` lists, `help` left out.
fn subcommands(path: &[String]) -> Vec<String> {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let help = ok(&args);
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            // "  name   about": two spaces of indent; a wrapped about line
            // is indented further.
            let l = l.strip_prefix("  ")?;
            (!l.starts_with(' ')).then(|| l.split_whitespace().next().unwrap().to_owned())
        })
        .filter(|n| n != "help")
        .collect()
}

/// Every subcommand path at any depth, e.g. ["ca", "sign"].
fn all_subcommands() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        for sub in subcommands(&path) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p.clone());
            out.push(p);
        }
    }
    out
}

#[test]
fn version_names_the_commit() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(manifest)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    let commit = head.unwrap_or_else(|| "unknown".into());
    let want = format!("ringlan {} (commit {commit})\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(ok(&["--version"]), want);
    assert_eq!(ok(&["-V"]), want);
}

#[test]
fn man_pages_for_every_subcommand() {
    let dir = scratch("man");
    let listed = ok(&["generate", "man", "--out", dir.to_str().unwrap()]);
    let subs = all_subcommands();
    assert!(
        subs.iter().any(|p| p == &["ca", "sign"]),
        "nested subcommands: {subs:?}"
    );
    let mut want = vec![dir.join("ringlan.1")];
    want.extend(
        subs.iter()
            .map(|p| dir.join(format!("ringlan-{}.1", p.join("-")))),
    );
    let mut written: Vec<PathBuf> = listed.lines().map(PathBuf::from).collect();
    written.sort();
    want.sort();
    assert_eq!(written, want, "pages written vs subcommands in --help");
    assert!(!dir.join("ringlan-help.1").exists());

    // man(1) renders the top page: every subcommand, the files, the version.
    let top = render(&dir.join("ringlan.1"));
    for sub in subcommands(&[]) {
        assert!(top.contains(&format!("ringlan-{sub}(1)")), "{sub}:\n{top}");
    }
    for want in [
        "NAME",
        "ringlan - Peer-to-peer overlay VPN agent",
        "FILES",
        "/etc/ringlan/NAME.yaml",
        "/var/lib/ringlan",
        "RUST_LOG",
        &format!("v{} (commit ", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(top.contains(want), "missing `{want}` in\n{top}");
    }
    // A subcommand's page has its options.
    let sign = render(&dir.join("ringlan-ca-sign.1"));
    for want in ["--ca", "--name", "--key", "--ip", "--expires"] {
        assert!(sign.contains(want), "missing `{want}` in\n{sign}");
    }
    // Without --out: the top page on stdout, identical to the file.
    assert_eq!(
        ok(&["generate", "man"]),
        std::fs::read_to_string(dir.join("ringlan.1")).unwrap()
    );
}

/// The page as man(1) shows it (plain text, 100 columns).
fn render(page: &Path) -> String {
    let o = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .expect("run man(1): install the `man-db` package");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Hyphens may come out as U+2010 and bold as backspace overstrikes.
    let text = String::from_utf8_lossy(&o.stdout).replace('\u{2010}', "-");
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain
}

/// What bash completes for the command line `words` (the last word is the
/// one being completed), with the script `ringlan generate completions
/// bash` writes.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = words.join(" ");
    let cword = words.len() - 1;
    let prog = format!(
        "source '{}'\n\
         COMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT={}\n\
         _ringlan ringlan '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" "),
        line.len(),
        words[cword],
        words[cword - 1],
    );
    let o = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &prog])
        .output()
        .expect("run bash");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn completions_complete_subcommands_and_values() {
    let dir = scratch("completions");
    let d = dir.to_str().unwrap();
    for (shell, file) in [
        ("bash", "ringlan.bash"),
        ("zsh", "_ringlan"),
        ("fish", "ringlan.fish"),
    ] {
        let out = ok(&["generate", "completions", shell, "--out", d]);
        assert_eq!(out, format!("{}\n", dir.join(file).display()));
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(ok(&["generate", "completions", shell]), text);
        for sub in subcommands(&[]) {
            assert!(text.contains(&sub), "{shell}: no `{sub}`");
        }
    }
    let script = dir.join("ringlan.bash");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(syntax.status.success());

    assert_eq!(bash_complete(&script, &["ringlan", "stat"]), ["status"]);
    assert_eq!(bash_complete(&script, &["ringlan", "ca", "si"]), ["sign"]);
    let mut all = bash_complete(&script, &["ringlan", ""]);
    all.sort();
    let mut want: Vec<String> = subcommands(&[]);
    want.extend(["help".into(), "-h".into(), "--help".into()]);
    want.extend(["-V".into(), "--version".into()]);
    want.sort();
    assert_eq!(all, want);
    let mut shells = bash_complete(&script, &["ringlan", "generate", "completions", ""]);
    shells.retain(|s| !s.starts_with('-'));
    assert_eq!(shells, ["bash", "elvish", "fish", "powershell", "zsh"]);
}
