//! The `ringlan` binary: check-config messages, keygen and secret files, the
//! network CA (`ca init|pub|sign|revoke`, `cert show`).

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
            "{}:3:16: network.secret_file: {s}: is accessible by others or writable by its \
             group (mode 0644); it must be private: run `chmod 640 {s}`\n",
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
    // Keys are the owner's alone; secrets readable by the service's group.
    for (cmd, file_mode) in [("keygen", 0o600), ("secret", 0o640)] {
        let p = d.path(&format!("sub/{cmd}.out"));
        let ps = p.to_str().unwrap();
        let o = ringlan(&[cmd, "-o", ps]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(mode(&p), file_mode);
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
        assert_eq!(mode(&p), file_mode);
        assert_ne!(std::fs::read_to_string(&p).unwrap(), first);

        // no -o: to stdout
        let o = ringlan(&[cmd]);
        assert!(o.status.success());
        let out = stdout(&o);
        assert_eq!(out.len(), 65, "{out}");
    }
}

/// Runs `ringlan` and returns stdout, failing the test with stderr when it
/// fails.
fn ok(args: &[&str]) -> String {
    let o = ringlan(args);
    assert!(o.status.success(), "ringlan {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// Runs `ringlan`, expecting it to fail; returns stderr.
fn fails(args: &[&str]) -> String {
    let o = ringlan(args);
    assert!(
        !o.status.success(),
        "ringlan {args:?} succeeded: {}",
        stdout(&o)
    );
    stderr(&o)
}

#[test]
fn ca_init_sign_show_revoke() {
    let d = TempDir::new("ca");
    let s = |name: &str| d.path(name).to_str().unwrap().to_string();
    let (ca, cert, list) = (s("home.ca"), s("laptop.cert"), s("revoked.list"));

    let ca_pub = ok(&["ca", "init", "--network", "home", "--out", &ca]);
    let ca_pub = ca_pub.trim_end();
    assert_eq!(ca_pub.len(), 64, "{ca_pub}");
    assert!(ca_pub.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(mode(&d.path("home.ca")), 0o600);
    assert_eq!(ok(&["ca", "pub", &ca]).trim_end(), ca_pub);
    let e = fails(&["ca", "init", "--network", "home", "--out", &ca]);
    assert!(e.contains("already exists"), "{e}");
    let e = fails(&["ca", "init", "--network", "Home!", "--out", &s("x.ca")]);
    assert!(e.contains("--network `Home!`"), "{e}");

    let node = ok(&["keygen", "-o", &s("laptop.key")]);
    let node_pub = node.strip_prefix("public key: ").unwrap().trim_end();
    let signed = ok(&[
        "ca",
        "sign",
        "--ca",
        &ca,
        "--name",
        "laptop",
        "--key",
        node_pub,
        "--ip",
        "fd77::2/128",
        "--ip",
        "10.77.0.2/32",
        "--role",
        "introducer",
        "--role",
        "relay",
        "--expires",
        "30d",
        "--out",
        &cert,
    ]);
    assert!(signed.starts_with("signed laptop (node id "), "{signed}");
    let text = std::fs::read_to_string(&cert).unwrap();
    assert!(
        text.contains("-----BEGIN RINGLAN CERTIFICATE-----"),
        "{text}"
    );

    let shown = ok(&["cert", "show", &cert, "--ca", ca_pub]);
    for want in [
        "name:      laptop",
        "network:   home",
        &format!("key:       {node_pub}"),
        "IPs:       10.77.0.2/32, fd77::2/128",
        "MAC:       auto (",
        "roles:     introducer, relay",
        "(30 days left)",
        "signature: OK",
    ] {
        assert!(shown.contains(want), "missing `{want}` in\n{shown}");
    }
    // The node id printed when signing is the one shown.
    let id = signed.split("node id ").nth(1).unwrap().get(..32).unwrap();
    assert!(shown.contains(&format!("node id:   {id}")), "{shown}");

    // Against another key: BAD and a failure exit.
    let o = ringlan(&["cert", "show", &cert, "--ca", node_pub]);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("signature: BAD"), "{}", stdout(&o));

    // A tampered certificate: the signature no longer verifies.
    let tampered = text.replacen("6c6170746f70", "6c6170746f71", 1); // laptop -> laptoq
    assert_ne!(tampered, text);
    std::fs::write(d.path("tampered.cert"), tampered).unwrap();
    let o = ringlan(&["cert", "show", &s("tampered.cert"), "--ca", ca_pub]);
    assert!(stdout(&o).contains("name:      laptoq"), "{}", stdout(&o));
    assert!(stdout(&o).contains("signature: BAD"), "{}", stdout(&o));
    assert!(!o.status.success());

    // Bad input names the argument or the file.
    let x_cert = s("x.cert");
    let sign_fails = |ca: &str, key: &str, extra: &[&str]| {
        let mut args = vec!["ca", "sign", "--ca", ca, "--name", "x", "--key", key];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", &x_cert]);
        fails(&args)
    };
    let e = sign_fails(&ca, node_pub, &["--ip", "10.77.0.2/24"]);
    assert!(e.contains("--ip `10.77.0.2/24` has host bits set"), "{e}");
    let e = sign_fails(&ca, "abc", &[]);
    assert!(e.contains("--key `abc`"), "{e}");
    let e = sign_fails(&ca, &"0".repeat(64), &[]);
    assert!(e.contains("not a valid Ed25519 public key"), "{e}");
    let e = sign_fails(&s("none.ca"), node_pub, &[]);
    assert!(e.contains("none.ca: CA key does not exist"), "{e}");
    let e = sign_fails(&ca, node_pub, &["--expires", "1y"]);
    assert!(e.contains("`1y` is not a duration"), "{e}");
    let e = fails(&["cert", "show", &s("laptop.key")]);
    assert!(e.contains("laptop.key: not a ringlan certificate"), "{e}");
    assert!(!d.path("x.cert").exists());

    // Revoke by name, then by node id: version 1, then 2.
    let out = ok(&["ca", "revoke", "--ca", &ca, "--out", &list, "laptop"]);
    assert!(out.contains("version 1, 1 revoked"), "{out}");
    let out = ok(&[
        "ca",
        "revoke",
        "--ca",
        &ca,
        "--out",
        &list,
        "00112233445566778899aabbccddeeff",
    ]);
    assert!(out.contains("version 2, 2 revoked"), "{out}");
    // Revoking the same key again (as a certificate file) adds nothing but a version.
    let out = ok(&["ca", "revoke", "--ca", &ca, "--out", &list, &cert]);
    assert!(out.contains("version 3, 2 revoked"), "{out}");
    let shown = ok(&["cert", "show", &list, "--ca", ca_pub]);
    for want in [
        "revocation list",
        "version:   3",
        "node id 00112233445566778899aabbccddeeff",
        &format!("key {node_pub} (node id {id})"),
        "signature: OK",
    ] {
        assert!(shown.contains(want), "missing `{want}` in\n{shown}");
    }
    let e = fails(&["ca", "revoke", "--ca", &ca, "--out", &list, "nobody"]);
    assert!(e.contains("nobody: not a certificate file"), "{e}");

    // Another CA refuses to extend this CA's list and leaves it alone.
    let before = std::fs::read_to_string(&list).unwrap();
    ok(&["ca", "init", "--network", "home", "--out", &s("other.ca")]);
    let e = fails(&[
        "ca",
        "revoke",
        "--ca",
        &s("other.ca"),
        "--out",
        &list,
        &cert,
    ]);
    assert!(e.contains("revoked.list: signed by another CA"), "{e}");
    assert_eq!(std::fs::read_to_string(&list).unwrap(), before);
}
