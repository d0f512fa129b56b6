//! `ringlan demo` end to end: as root it builds its lab of NATs, and its
//! output shows every member joining with its NAT classified as built, a
//! direct path on a LAN, direct paths to a public node, a punched path
//! through a cone-like and a symmetric NAT, a relayed pair of symmetric
//! NATs, a checksummed transfer through the relay, the relay in use killed
//! and the session on another path with a stream across it intact; the
//! picture (`ringlan topology --format svg`) written where `--svg` says, with
//! every member in it; it exits
//! 0 and leaves no namespace, lab directory, process or host link behind.
//! Without root it refuses clearly. A binary built without the `demo`
//! feature says so.

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

/// Interface names in the host's network namespace.
#[cfg(feature = "demo")]
fn host_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// Pids of processes whose command line mentions `needle`.
#[cfg(feature = "demo")]
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle)
                .then(|| format!("{}: {cmd}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// The line of `stdout` that contains `what`, or a panic showing all.
#[cfg(feature = "demo")]
fn line_with<'a>(stdout: &'a str, what: &str, all: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line with {what:?}:\n{all}"))
}

#[cfg(feature = "demo")]
#[test]
fn demo_shows_nat_traversal_relays_and_failover_and_cleans_up() {
    if !root_or_skip() {
        return;
    }
    let links_before = host_links();
    let svg_dir = std::env::temp_dir().join(format!("rl-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&svg_dir).unwrap();
    let svg = svg_dir.join("demo.svg");
    let child = Command::new(BIN)
        .arg("demo")
        .arg("--svg")
        .arg(&svg)
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

    // Every step ran.
    for step in 1..=8 {
        assert!(
            stdout.contains(&format!("[{step}/8]")),
            "step {step}:\n{all}"
        );
    }
    assert!(stdout.contains(&format!("namespaces {prefix}")), "{all}");

    // The join: a line per member; every NAT classified as built.
    assert!(
        stdout.contains("intro  up: introducer at 198.51.100.1:4910"),
        "{all}"
    );
    for name in ["relay", "lan-1", "lan-2", "cone", "sym-1", "sym-2"] {
        line_with(
            &stdout,
            &format!("{name:<6} joined: session with intro open"),
            &all,
        );
        line_with(&stdout, &format!("{name:<6} NAT mapping"), &all);
    }
    assert!(!stdout.contains("NOT what the lab built"), "{all}");
    for name in ["cone", "lan-1", "lan-2"] {
        let l = line_with(&stdout, &format!("{name:<6} NAT mapping"), &all);
        assert!(l.contains("endpoint-independent"), "{l}");
    }
    for name in ["sym-1", "sym-2"] {
        let l = line_with(&stdout, &format!("{name:<6} NAT mapping"), &all);
        assert!(l.contains("endpoint-dependent"), "{l}");
    }

    // The paths: direct on the LAN, direct to a public node, punched,
    // relayed.
    line_with(&stdout, "lan-1 <-> lan-2: direct-lan on both ends", &all);
    line_with(&stdout, "sym-1 <-> relay: direct", &all);
    line_with(&stdout, "sym-2 <-> relay: direct", &all);
    let punched = line_with(&stdout, "cone <-> sym-1: direct-nat on both ends", &all);
    assert!(punched.contains("birthday punching"), "{punched}");
    line_with(&stdout, "sym-1 <-> sym-2: relayed on both ends", &all);
    // `ringlan status` of sym-1, with its relayed session.
    assert!(stdout.contains("node      sym-1  "), "{all}");
    assert!(stdout.contains("relayed via "), "{all}");

    // The picture: written where asked, the path printed, every member in
    // it.
    let picture = std::fs::read_to_string(&svg)
        .unwrap_or_else(|e| panic!("no picture at {}: {e}\n{all}", svg.display()));
    std::fs::remove_dir_all(&svg_dir).unwrap();
    line_with(&stdout, &format!("wrote {} (", svg.display()), &all);
    assert!(
        picture.starts_with("<svg") || picture.starts_with("<?xml"),
        "{picture}"
    );
    assert_eq!(
        picture.matches("<g class=\"member ").count(),
        7,
        "{picture}"
    );
    for name in ["intro", "relay", "lan-1", "lan-2", "cone", "sym-1", "sym-2"] {
        assert!(
            picture.contains(&format!("data-name=\"{name}\"")),
            "{name} not in the picture:\n{picture}"
        );
    }

    // Traffic through the relay, intact.
    assert!(stdout.contains("packets transmitted"), "{all}");
    assert!(stdout.contains("rtt min/avg/max/mdev"), "{all}");
    assert!(stdout.contains("MiB/s"), "{all}");

    // The failover: the relay in use killed, the session on another path,
    // the stream across it intact, a ping afterwards.
    let before = line_with(&stdout, "  before: sym-1 -> sym-2  relayed via ", &all);
    let via = before
        .split("relayed via ")
        .nth(1)
        .and_then(|v| v.split(['>', ' ', ';']).next())
        .unwrap_or_default()
        .to_string();
    assert!(via == "relay" || via == "intro", "{before}");
    let killed = line_with(&stdout, "kill -KILL ", &all);
    assert!(killed.contains(&format!("({via}: ")), "{killed}");
    let after = line_with(&stdout, "  after:  sym-1 -> sym-2  ", &all);
    let after_path = after
        .trim_start()
        .trim_start_matches("after:  sym-1 -> sym-2  ");
    assert!(
        !after_path.starts_with(&format!("relayed via {via}")),
        "the session stayed on the killed relay: {after}"
    );
    assert!(
        after_path.starts_with("relayed via ") || after_path.starts_with("direct"),
        "{after}"
    );
    line_with(&stdout, "the stream's longest pause: ", &all);
    assert_eq!(stdout.matches("\n    checksums match").count(), 2, "{all}");
    assert_eq!(stdout.matches("packet loss, time").count(), 2, "{all}");
    assert!(
        stdout.contains(&format!("{via:<6}  killed (SIGKILL)")),
        "{all}"
    );
    let done = line_with(&stdout, "Done in ", &all);
    assert!(done.contains(" s: 7 agents"), "{done}");

    // Nothing left behind: namespaces, the lab directory, processes, links.
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
    let procs = processes_mentioning(&format!("ringlan-lab/{prefix}"));
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let new_links: Vec<String> = host_links()
        .into_iter()
        .filter(|l| !links_before.contains(l))
        .collect();
    assert!(
        new_links.is_empty(),
        "links left in the host: {new_links:?}"
    );
}

#[cfg(feature = "demo")]
#[test]
fn demo_refuses_a_picture_path_in_a_missing_directory() {
    let (stdout, stderr) = fails(demo(&["--svg", "/nonexistent-rl-demo/x.svg"]));
    assert!(
        stderr.contains(
            "--svg /nonexistent-rl-demo/x.svg: directory /nonexistent-rl-demo does not exist"
        ),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
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

#[cfg(not(feature = "demo"))]
#[test]
fn demo_without_the_feature_says_so() {
    let (stdout, stderr) = fails(demo(&["--keep"]));
    assert!(
        stderr.contains("built without the `demo` feature"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
}
