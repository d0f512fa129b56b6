//! `ringlan demo` end to end: as root it builds its namespace lab, joins the
//! agents into one LAN, prints every status table and a verified transfer,
//! exits 0 and leaves no namespace or lab directory behind; without root it
//! refuses clearly. A binary built without the `demo` feature says so.

#[cfg(feature = "demo")]
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Output};

#[cfg(feature = "demo")]
use ringlan_lab::{is_root, netns_with_prefix, root_or_skip};

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `cmd` (a `ringlan demo` that must fail); returns stdout and stderr.
fn fails(mut cmd: Command) -> (String, String) {
    let out = cmd.output().expect("run ringlan demo");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

fn demo(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("demo").args(args);
    cmd
}

#[cfg(feature = "demo")]
#[test]
fn demo_forms_a_lan_moves_traffic_and_cleans_up() {
    if !root_or_skip() {
        return;
    }
    let child = Command::new(BIN)
        .arg("demo")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ringlan demo");
    // The harness names everything `rl<pid>x<n>-`, pid = the demo's.
    let prefix = format!("rl{}x", child.id());
    let out = child.wait_with_output().expect("wait for ringlan demo");
    let (stdout, stderr) = text(&out);
    let all = format!("---- stdout\n{stdout}\n---- stderr\n{stderr}");
    assert!(out.status.success(), "demo exited {}:\n{all}", out.status);

    // Steps 1-5 ran, with one human status table per member.
    for step in 1..=5 {
        assert!(
            stdout.contains(&format!("[{step}/5]")),
            "step {step}:\n{all}"
        );
    }
    assert!(stdout.contains(&format!("namespaces {prefix}")), "{all}");
    for name in ["intro", "node-1", "node-2", "node-3"] {
        assert!(
            stdout.contains(&format!("node      {name}  ")),
            "no status of {name}:\n{all}"
        );
    }
    assert_eq!(stdout.matches("\n  sessions: ").count(), 4, "{all}");
    assert!(stdout.contains("network   demo (introducer)"), "{all}");
    assert!(stdout.contains(" open "), "no open session shown:\n{all}");
    // Traffic: ping summary with RTT, verified TCP transfer.
    assert!(stdout.contains("packets transmitted"), "{all}");
    assert!(stdout.contains("rtt min/avg/max/mdev"), "{all}");
    assert!(stdout.contains("MiB/s"), "{all}");
    assert!(stdout.contains("checksums match"), "{all}");

    // Nothing left behind.
    let left = netns_with_prefix(&prefix).expect("ip netns list");
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let dirs = std::fs::read_dir(std::env::temp_dir().join("ringlan-lab"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(dirs.is_empty(), "lab directories left: {dirs:?}");
}

#[cfg(feature = "demo")]
#[test]
fn demo_refuses_without_root() {
    let mut cmd = demo(&[]);
    if is_root() {
        // Run it as `nobody`.
        cmd.uid(65534).gid(65534);
    }
    let (stdout, stderr) = fails(cmd);
    assert!(
        stderr.contains("ringlan demo builds network namespaces and needs root: sudo ringlan demo"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
}

#[cfg(feature = "demo")]
#[test]
fn demo_rejects_more_than_eight_nodes() {
    let (_, stderr) = fails(demo(&["--nodes", "9"]));
    assert!(stderr.contains("1..=8"), "{stderr}");
}

#[cfg(not(feature = "demo"))]
#[test]
fn demo_without_the_feature_says_so() {
    let (stdout, stderr) = fails(demo(&["--nodes", "2"]));
    assert!(
        stderr.contains("built without the `demo` feature"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
}
