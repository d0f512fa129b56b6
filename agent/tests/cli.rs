//! The `ringlan` binary: check-config messages, keygen and secret files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ringlan_lab::agents::{self, AgentConfig};

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");

fn ringlan(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run ringlan")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("ringlan-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A valid config whose secret lives in `dir`; `secret_file` is line 3,
/// column 16; `mtu` line 9, column 8 (the lab's config writer keeps them
/// there).
fn config_text(dir: &TempDir) -> String {
    let mut c = AgentConfig::new(
        "home",
        &dir.path("home.secret"),
        "laptop",
        &dir.path("home.key"),
        Path::new("/run/ringlan/home.sock"),
    );
    c.addresses = vec!["10.77.0.2/24".into()];
    c.introducers = vec!["198.51.100.7:4910".parse().unwrap()];
    c.render()
}

/// Writes `text` as the config and returns its path.
fn write_config(dir: &TempDir, text: &str) -> PathBuf {
    let p = dir.path("home.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn make_secret(dir: &TempDir) {
    agents::make_secret(Path::new(BIN), &dir.path("home.secret")).unwrap();
}

/// Runs check-config and returns (success, stdout + stderr).
fn check(path: &Path) -> (bool, String) {
    let o = ringlan(&["check-config", path.to_str().unwrap()]);
    (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
}

#[test]
fn check_config_good() {
    let d = TempDir::new("good");
    make_secret(&d);
    let p = write_config(&d, &config_text(&d));
    let (ok, out) = check(&p);
    assert!(ok, "{out}");
    assert_eq!(out, format!("{}: OK\n", p.display()));
}

#[test]
fn check_config_errors_name_file_line_column() {
    let d = TempDir::new("bad");
    make_secret(&d);
    let good = config_text(&d);
    let f = d.path("home.yaml").display().to_string();
    let cases: Vec<(String, String)> = vec![
        (
            good.replace("  mtu: 1400\n", "  mtu: 1400\n  colour: blue\n"),
            format!(
                "{f}:10:3: unknown field `colour`, expected one of name, mtu, mac, addresses\n"
            ),
        ),
        (
            good.replace("10.77.0.2/24", "10.77.0.300/24"),
            format!(
                "{f}:10:15: interface.addresses[0]: `10.77.0.300` is not an IP address, \
                 expected an address with prefix length such as 10.77.0.2/24 or fd77::2/64\n"
            ),
        ),
        (
            good.replace("mtu: 1400", "mtu: 70000"),
            format!("{f}:9:8: interface.mtu: 70000 is out of range, expected 576-9000\n"),
        ),
    ];
    for (text, want) in cases {
        let p = write_config(&d, &text);
        let (ok, out) = check(&p);
        assert!(!ok, "accepted:\n{text}");
        assert_eq!(out, want);
    }
}

#[test]
fn check_config_missing_secret() {
    let d = TempDir::new("nosecret");
    let p = write_config(&d, &config_text(&d));
    let (ok, out) = check(&p);
    assert!(!ok);
    let s = d.path("home.secret").display().to_string();
    assert_eq!(
        out,
        format!(
            "{}:3:16: network.secret_file: {s}: file does not exist (create it with `ringlan secret -o {s}`)\n",
            p.display()
        )
    );
}

#[test]
fn check_config_world_readable_secret() {
    let d = TempDir::new("worldsecret");
    make_secret(&d);
    let s = d.path("home.secret");
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = write_config(&d, &config_text(&d));
    let (ok, out) = check(&p);
    assert!(!ok);
    let s = s.display().to_string();
    assert_eq!(
        out,
        format!(
            "{}:3:16: network.secret_file: {s}: is readable by group/other (mode 0644); \
             it must be private: run `chmod 600 {s}`\n",
            p.display()
        )
    );
}

#[test]
fn check_config_unreadable_file() {
    let d = TempDir::new("nofile");
    let (ok, out) = check(&d.path("nope.yaml"));
    assert!(!ok);
    assert!(out.contains("nope.yaml: cannot read config file"), "{out}");
}

#[test]
fn keygen_and_secret_files() {
    let d = TempDir::new("keygen");
    for cmd in ["keygen", "secret"] {
        let p = d.path(&format!("sub/{cmd}.out"));
        let ps = p.to_str().unwrap();
        let o = ringlan(&[cmd, "-o", ps]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        let first = std::fs::read_to_string(&p).unwrap();
        assert_eq!(first.len(), 65);
        assert!(first.trim_end().bytes().all(|b| b.is_ascii_hexdigit()));
        if cmd == "keygen" {
            let out = stdout(&o);
            let pk = out.strip_prefix("public key: ").unwrap().trim_end();
            assert_eq!(pk.len(), 64, "{out}");
        }

        // refuses to overwrite without --force
        let o = ringlan(&[cmd, "-o", ps]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("already exists (use --force to overwrite)"),
            "{}",
            stderr(&o)
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), first);

        // --force replaces it and makes it private again
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = ringlan(&[cmd, "-o", ps, "--force"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(mode(&p), 0o600);
        assert_ne!(std::fs::read_to_string(&p).unwrap(), first);

        // no -o: to stdout
        let o = ringlan(&[cmd]);
        assert!(o.status.success());
        let out = stdout(&o);
        assert_eq!(out.len(), 65, "{out}");
    }
}
