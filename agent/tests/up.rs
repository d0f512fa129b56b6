//! `ringlan up` end to end, inside a network namespace this test creates:
//! the TAP appears with the derived MAC, `ringlan status` and the metrics
//! endpoint answer, SIGTERM stops the agent, and the control socket and the
//! TAP are gone afterwards.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use ringlan_agent::config::Role;
use ringlan_lab::agents::{make_secret, AgentConfig};
use ringlan_lab::{status_json, wait_for, Lab};

/// Hang guard for the agent to answer (not a timing assertion).
const SETTLE: Duration = Duration::from_secs(20);

#[test]
fn up_status_metrics_and_clean_exit() {
    let Some(lab) = Lab::for_test() else { return };
    let bin = env!("CARGO_BIN_EXE_ringlan");
    let ns = lab.add_ns("up").unwrap();
    let in_ns = |args: &[&str]| lab.exec(&ns, args).unwrap();

    let d = lab.dir();
    let secret = d.join("t.secret");
    make_secret(Path::new(bin), &secret).unwrap();
    let sock = d.join("run/t.sock");
    let key = d.join("state/t.key");
    let cfg = d.join("t.yaml");
    let mut c = AgentConfig::new("t", &secret, "n1", &key, &sock);
    c.tap = "rl-t".into();
    c.mtu = 1300;
    c.addresses = vec!["10.77.3.1/24".into()];
    c.role = Some(Role::Introducer.as_str().into());
    c.extra = "metrics: {listen: 127.0.0.1:9910}\n".into();
    std::fs::write(&cfg, c.render()).unwrap();

    let agent = lab
        .spawn(&ns, "agent", &[bin, "up", "-c", cfg.to_str().unwrap()])
        .unwrap();

    // ready: the control socket answers with the node's status
    let v = wait_for(SETTLE, "ringlan status", || {
        if let Some(st) = lab.try_status(&agent)? {
            bail!("the agent exited ({st}):\n{}", lab.log(&agent));
        }
        Ok(status_json(Path::new(bin), &sock).ok())
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
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
    let link = in_ns(&["ip", "-j", "link", "show", "dev", "rl-t"]);
    assert!(link.status.success());
    let link: serde_json::Value = serde_json::from_slice(&link.stdout).unwrap();
    assert_eq!(link[0]["address"], mac.as_str());
    assert_eq!(link[0]["mtu"], 1300);

    // human status
    let text = ringlan_lab::agents::status_text(Path::new(bin), &sock).unwrap();
    assert!(
        text.contains(&format!("tap       rl-t  {mac}  mtu 1300  10.77.3.1/24")),
        "{text}"
    );

    // metrics, fetched from inside the namespace by a child of this test
    // binary would need a runtime; use bash's /dev/tcp instead.
    let m = in_ns(&[
        "bash",
        "-c",
        "exec 3<>/dev/tcp/127.0.0.1/9910; printf 'GET /metrics HTTP/1.1\\r\\n\\r\\n' >&3; cat <&3",
    ]);
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
    // the connection counters of both local servers
    for socket in ["control", "metrics"] {
        let series = format!("ringlan_socket_timeouts_total{{socket=\"{socket}\"}} ");
        assert!(m.contains(&series), "missing {series} in\n{m}");
    }

    // SIGTERM: clean exit, socket and TAP gone.
    lab.signal(&agent, libc::SIGTERM).unwrap();
    let st = lab.wait(&agent, SETTLE).unwrap();
    let log = lab.log(&agent);
    assert!(st.success(), "agent exit {st}:\n{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(!sock.exists(), "control socket left behind");
    let link = in_ns(&["ip", "link", "show", "dev", "rl-t"]);
    assert!(!link.status.success(), "TAP left behind");
}
