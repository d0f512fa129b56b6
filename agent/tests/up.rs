//! `ringlan up` end to end, inside a network namespace this test creates:
//! the TAP appears with the derived MAC, `ringlan status` and the metrics
//! endpoint answer, SIGTERM stops the agent, and the control socket and the
//! TAP are gone afterwards.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("RINGLAN_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping: not root and RINGLAN_SKIP_ROOT_TESTS=1");
        return false;
    }
    panic!("this test needs root (network namespace, TAP); run as root or set RINGLAN_SKIP_ROOT_TESTS=1");
}

struct Lab {
    ns: String,
    dir: PathBuf,
    agent: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn in_ns(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap()
}

/// Polls `f` until it returns Some; gives up after 20 s (a hung agent, not a
/// timing assertion).
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_status_metrics_and_clean_exit() {
    if !root_or_skip() {
        return;
    }
    let bin = env!("CARGO_BIN_EXE_ringlan");
    let pid = std::process::id();
    let mut lab = Lab {
        ns: format!("rl-up-test-{pid}"),
        dir: std::env::temp_dir().join(format!("ringlan-up-{pid}")),
        agent: None,
    };
    let _ = std::fs::remove_dir_all(&lab.dir);
    std::fs::create_dir_all(&lab.dir).unwrap();
    assert!(Command::new("ip")
        .args(["netns", "add", &lab.ns])
        .status()
        .unwrap()
        .success());
    assert!(in_ns(&lab.ns, &["ip", "link", "set", "lo", "up"])
        .status
        .success());

    let d = &lab.dir;
    let secret = d.join("t.secret");
    assert!(Command::new(bin)
        .args(["secret", "-o", secret.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let sock = d.join("run/t.sock");
    let key = d.join("state/t.key");
    let cfg = d.join("t.yaml");
    std::fs::write(
        &cfg,
        format!(
            "network: {{name: t, secret_file: {}}}
node: {{name: n1, key_file: {}}}
interface: {{name: rl-t, mtu: 1300, addresses: [10.77.3.1/24]}}
role: introducer
control: {{socket: {}}}
metrics: {{listen: 127.0.0.1:9910}}
",
            secret.display(),
            key.display(),
            sock.display()
        ),
    )
    .unwrap();

    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns,
            bin,
            "up",
            "-c",
            cfg.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lab.agent = Some(child);

    // ready: the control socket answers with the node's status
    let status = wait_for("ringlan status", || {
        let o = Command::new(bin)
            .args(["status", "--json", "--socket", sock.to_str().unwrap()])
            .output()
            .unwrap();
        o.status
            .success()
            .then(|| String::from_utf8(o.stdout).unwrap())
    });
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["node_name"], "n1");
    assert_eq!(v["role"], "introducer");
    assert_eq!(v["tap"]["name"], "rl-t");
    assert_eq!(v["tap"]["mtu"], 1300);
    assert_eq!(v["sessions"].as_array().unwrap().len(), 0);
    let mac = v["tap"]["mac"].as_str().unwrap().to_string();

    // the key was created private, and the MAC is derived from it
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pk = ringlan_agent::identity::read_key(&key)
        .unwrap()
        .public_key();
    assert_eq!(
        mac,
        ringlan_agent::tap::format_mac(&ringlan_agent::tap::derive_mac(&pk))
    );
    assert_eq!(v["public_key"], ringlan_agent::identity::hex(&pk));
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // the TAP exists in the namespace
    let link = in_ns(&lab.ns, &["ip", "-j", "link", "show", "dev", "rl-t"]);
    assert!(link.status.success());
    let link: serde_json::Value = serde_json::from_slice(&link.stdout).unwrap();
    assert_eq!(link[0]["address"], mac.as_str());
    assert_eq!(link[0]["mtu"], 1300);

    // human status
    let o = Command::new(bin)
        .args(["status", "--socket", sock.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains(&format!("tap       rl-t  {mac}  mtu 1300  10.77.3.1/24")),
        "{text}"
    );

    // metrics, fetched from inside the namespace by a child of this test
    // binary would need a runtime; use bash's /dev/tcp instead.
    let m = in_ns(
        &lab.ns,
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/9910; printf 'GET /metrics HTTP/1.1\\r\\n\\r\\n' >&3; cat <&3",
        ],
    );
    let m = String::from_utf8_lossy(&m.stdout);
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    let id = v["node_id"].as_str().expect("node id in status");
    assert_eq!(id.len(), 32, "node id is 32 hex digits: {id}");
    assert!(
        m.contains(&format!(
            "ringlan_info{{node_id=\"{id}\",name=\"n1\",network=\"t\",role=\"introducer\"}} 1"
        )),
        "{m}"
    );

    // SIGTERM: clean exit, socket and TAP gone. `ip netns exec` execs the
    // agent, so the child's pid is the agent's.
    let mut child = lab.agent.take().unwrap();
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let st = child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(st.success(), "agent exit {st}:\n{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(!sock.exists(), "control socket left behind");
    let link = in_ns(&lab.ns, &["ip", "link", "show", "dev", "rl-t"]);
    assert!(!link.status.success(), "TAP left behind");
    let _ = std::io::stdout().flush();
}
