//! End-to-end test of `ringlan topology` and the metrics page
//! (docs/topology.md): four real agents in network namespaces on one
//! underlay bridge (192.0.2.0/24, the introducer at 192.0.2.1, nodes at
//! 192.0.2.N, TAP `rl-topo` at 10.77.0.N/24); n11 serves its metrics
//! endpoint on 127.0.0.1:9464 inside its namespace.
//!
//! - `ringlan topology --format json` on every member lists all four, every
//!   ring link each member keeps (its `ringlan status` neighbours: the
//!   truth) as `ring`, and every link as `lan` (one bridge: all direct on
//!   the LAN); `--format svg` and `--format dot` name every member and draw
//!   one chord / edge per link;
//! - headless Chromium (driven by chromedriver over WebDriver, both run in
//!   n11's namespace, so the page is reached on its loopback) loads the
//!   page `GET /` serves: after its fetch ran, the DOM holds every member's
//!   name; a click on a member opens the side panel with that member's
//!   links and their path kinds; a screenshot is taken and checked to be a
//!   PNG.
//!
//! Waits carry generous hang guards, never timing assertions. Needs root,
//! `chromium` and `chromium-driver` (tests/run-all.sh installs them);
//! `RINGLAN_SKIP_ROOT_TESTS=1` skips it. Every process (agents, chromedriver,
//! Chromium) runs in the lab and is stopped with it, also on failure.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringlan_lab::agents::{serial, Member, World, LAN_INTRODUCER as INTRODUCER};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ringlan");
const TAP: &str = "rl-topo";
/// Hang guard for agents to start and mesh.
const SETTLE: Duration = Duration::from_secs(30);
/// Hang guard for records (with their links) to be published and found.
const DIRECTORY: Duration = Duration::from_secs(90);
/// Where n11's metrics endpoint listens, inside its namespace.
const METRICS: &str = "127.0.0.1:9464";
/// chromedriver's port, inside n11's namespace.
const DRIVER_PORT: u16 = 9515;
/// Hang guard for the browser: start, page load, the page's first fetch.
const BROWSER: Duration = Duration::from_secs(60);

fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `ringlan topology --format FORMAT` of `m` (stdout; `None` when it fails).
fn topology(w: &World, m: &Member, format: &str) -> Option<String> {
    let sock = m.node.socket.to_string_lossy().into_owned();
    w.lab
        .run(
            &m.host.ns,
            &[BIN, "topology", "--format", format, "--socket", &sock],
        )
        .ok()
}

/// The ring links each member keeps (successors in its status), as
/// unordered pairs of node ids.
fn ring_truth(members: &[&Member]) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for m in members {
        let Ok(st) = m.status() else { continue };
        let me = st["node_id"].as_str().unwrap_or_default().to_string();
        for n in st["neighbours"].as_array().into_iter().flatten() {
            if n["link"] == "successor" {
                let peer = n["node_id"].as_str().unwrap_or_default().to_string();
                pairs.insert((me.clone().min(peer.clone()), me.clone().max(peer)));
            }
        }
    }
    pairs
}

/// The `(a, b)` pairs of a topology's links of kind `kind`.
fn links_of(t: &Value, kind: &str) -> BTreeSet<(String, String)> {
    t["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["kind"] == kind)
        .map(|l| {
            (
                l["a"].as_str().unwrap_or_default().to_string(),
                l["b"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn names_in(t: &Value) -> Vec<String> {
    let mut v: Vec<String> = t["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[test]
fn topology_cli_and_page_show_every_member_and_link() {
    let _serial = serial();
    let Some(w) = World::new(BIN, "topo", TAP, "lan", SETTLE) else {
        return;
    };
    let mut intro = w.lan_member("intro", INTRODUCER, "introducer", |_| {});
    let mut nodes: Vec<Member> = (11..=13)
        .map(|i| w.lan_member(&format!("n{i}"), i, "node", |_| {}))
        .collect();
    w.add_config(&nodes[0], &format!("metrics:\n  listen: {METRICS}\n"));
    {
        let mut all: Vec<&mut Member> = vec![&mut intro];
        all.extend(nodes.iter_mut());
        w.start_mesh(&mut all);
    }
    let everyone: Vec<&Member> = std::iter::once(&intro).chain(nodes.iter()).collect();
    let mut want: Vec<String> = everyone.iter().map(|m| m.name.clone()).collect();
    want.sort();

    // 1. JSON on every member: everyone, every ring link, all on the LAN.
    let mut last = Value::Null;
    for m in &everyone {
        let t = wait_for(
            DIRECTORY,
            &format!("{}'s topology has every member and ring link", m.name),
            || {
                let t: Value = serde_json::from_str(&topology(&w, m, "json")?).ok()?;
                let ring = ring_truth(&everyone);
                let ok = names_in(&t) == want
                    && !ring.is_empty()
                    && ring.is_subset(&links_of(&t, "ring"));
                ok.then_some(t)
            },
        );
        assert_eq!(t["complete"], true, "{t}");
        let me: Vec<&Value> = t["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["this_node"] == true)
            .collect();
        assert_eq!(me.len(), 1);
        assert_eq!(me[0]["name"], m.name.as_str());
        for x in t["members"].as_array().unwrap() {
            assert_eq!(x["listed"], true, "{x}");
            let p = x["position"].as_f64().unwrap();
            assert!((0.0..1.0).contains(&p), "{x}");
        }
        for l in t["links"].as_array().unwrap() {
            assert_eq!(
                l["path"], "lan",
                "one bridge: every link direct on the LAN: {l}"
            );
            assert!(l["via"].is_null(), "{l}");
        }
        last = t;
    }
    let links = last["links"].as_array().unwrap().len();

    // 2. SVG and DOT name every member and draw every link once.
    let n11 = &nodes[0];
    let svg_file = w.lab.dir().join("topology.svg");
    let sock = n11.node.socket.to_string_lossy().into_owned();
    let out = svg_file.to_string_lossy().into_owned();
    w.lab
        .run(
            &n11.host.ns,
            &[
                BIN, "topology", "--format", "svg", "--socket", &sock, "-o", &out,
            ],
        )
        .expect("ringlan topology --format svg -o FILE");
    let svg = std::fs::read_to_string(&svg_file).expect("the SVG file");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    for name in &want {
        assert!(
            svg.contains(&format!("data-name=\"{name}\"")),
            "{name} in\n{svg}"
        );
    }
    // The members' links settle at most every 10 s: compare with a JSON
    // taken right after, both from n11.
    let t: Value = serde_json::from_str(&topology(&w, n11, "json").unwrap()).unwrap();
    let drawn = svg.matches(" data-a=\"").count();
    let now = t["links"].as_array().unwrap().len();
    assert!(
        drawn == links || drawn == now,
        "{drawn} chords, {links} / {now} links"
    );
    let dot = topology(&w, n11, "dot").expect("--format dot");
    assert!(dot.starts_with("graph ringlan {"), "{dot}");
    for name in &want {
        assert!(
            dot.contains(&format!("label=\"{name}\\n")),
            "{name} in\n{dot}"
        );
    }
    assert!(dot.matches(" -- ").count() >= ring_truth(&everyone).len());
    let text = topology(&w, n11, "text").expect("--format text");
    assert!(
        text.starts_with("topology seen from n11: 4 members"),
        "{text}"
    );

    // 3. The page in headless Chromium, in n11's namespace.
    page_in_chromium(&w, n11, &want, &last);
}

/// Opens `http://METRICS/` in headless Chromium in `m`'s namespace over
/// WebDriver; checks the DOM, the side panel after a click and a
/// screenshot.
fn page_in_chromium(w: &World, m: &Member, want: &[String], topo: &Value) {
    for tool in ["chromium", "chromedriver"] {
        assert!(
            ringlan_lab::which(tool).is_some(),
            "{tool} not found: apt-get install chromium chromium-driver (tests/run-all.sh does)"
        );
    }
    let profile = w.lab.dir().join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let driver = w
        .lab
        .spawn(
            &m.host.ns,
            "chromedriver",
            &["chromedriver", &format!("--port={DRIVER_PORT}")],
        )
        .expect("start chromedriver");
    // What the panel should list for n12: its links in the topology.
    let n12 = topo["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "n12")
        .unwrap()["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let shot = w.lab.dir().join("topology-page.png");
    let (want, profile2, shot2) = (want.to_vec(), profile.clone(), shot.clone());
    let job = w
        .lab
        .in_ns(&m.host.ns, move || {
            browse(&want, &n12, &profile2, &shot2);
            Ok(())
        })
        .expect("thread in the namespace");
    let r = job.join();
    let _ = w.lab.kill(&driver);
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("browser: {e:#}"),
        Err(p) => std::panic::resume_unwind(p),
    }
    eprintln!("screenshot of the page: {}", shot.display());
}

/// The WebDriver session's steps (runs in the namespace).
fn browse(want: &[String], n12: &str, profile: &std::path::Path, shot: &std::path::Path) {
    let wd = WebDriver::new(DRIVER_PORT);
    // chromedriver listens once it is up.
    wait_for(BROWSER, "chromedriver answers", || wd.get("/status").ok());
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        &format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
    }}});
    let session = wd.post("/session", &caps).expect("new session");
    let id = session["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session id: {session}"))
        .to_string();
    let s = |p: &str| format!("/session/{id}{p}");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wd.post(&s("/url"), &json!({"url": format!("http://{METRICS}/")}))
            .expect("navigate");
        // The DOM, once the page's first fetch drew the ring.
        let names = wait_for(BROWSER, "the page drew every member", || {
            let v = wd
                .post(
                    &s("/execute/sync"),
                    &json!({"script": "return Array.from(document.querySelectorAll('#ring .member')).map(g => g.dataset.name).sort()", "args": []}),
                )
                .ok()?;
            let names: Vec<String> = serde_json::from_value(v).ok()?;
            (names == want).then_some(names)
        });
        assert_eq!(names, want);
        let source = wd.get(&s("/source")).expect("page source");
        let source = source.as_str().unwrap_or_default();
        for name in want {
            assert!(
                source.contains(&format!(">{name}</text>")),
                "{name} not in the DOM"
            );
        }
        assert!(source.contains("class=\"link "), "no chords in the DOM");

        // Click n12: the panel shows its name and its links.
        let el = wd
            .post(
                &s("/element"),
                &json!({"using": "css selector", "value": "#ring .member[data-name='n12'] .dot"}),
            )
            .expect("find n12");
        let eid = el["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element id: {el}"))
            .to_string();
        wd.post(&s(&format!("/element/{eid}/click")), &json!({}))
            .expect("click n12");
        let panel = wait_for(BROWSER, "the panel shows n12", || {
            let v = wd
                .post(
                    &s("/execute/sync"),
                    &json!({"script": "const n = document.getElementById('panel-name'); return n ? {name: n.textContent, links: Array.from(document.querySelectorAll('#panel-links li')).map(li => ({peer: li.dataset.peer, text: li.textContent})), truth: topo.links.filter(l => l.a === arguments[0] || l.b === arguments[0]).map(l => l.a === arguments[0] ? l.b : l.a).sort()} : null", "args": [n12]}),
                )
                .ok()?;
            (v["name"] == "n12").then_some(v)
        });
        let rows = panel["links"].as_array().unwrap();
        let mut peers: Vec<&str> = rows.iter().filter_map(|r| r["peer"].as_str()).collect();
        peers.sort();
        let truth: Vec<&str> = panel["truth"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p.as_str())
            .collect();
        assert!(!rows.is_empty(), "n12 has links: {panel}");
        assert_eq!(peers, truth, "the panel lists n12's links: {panel}");
        for r in rows {
            let text = r["text"].as_str().unwrap_or_default();
            assert!(text.contains("direct (LAN)"), "path kind in {text:?}");
        }

        // A screenshot: a PNG of the window.
        let png = wd.get(&s("/screenshot")).expect("screenshot");
        let png = base64(png.as_str().unwrap_or_default());
        assert!(png.len() > 10_000, "{} bytes", png.len());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
        assert_eq!(&png[12..16], b"IHDR");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert!(width >= 800 && height >= 600, "{width}x{height}");
        std::fs::write(shot, &png).unwrap();
    }));
    let _ = wd.delete(&format!("/session/{id}"));
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// A WebDriver client: one HTTP/1.1 request per connection, JSON bodies,
/// the W3C `{"value": ...}` envelope.
struct WebDriver {
    port: u16,
}

impl WebDriver {
    fn new(port: u16) -> Self {
        WebDriver { port }
    }

    fn get(&self, path: &str) -> Result<Value, String> {
        self.request("GET", path, None)
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.request("POST", path, Some(body))
    }

    fn delete(&self, path: &str) -> Result<Value, String> {
        self.request("DELETE", path, None)
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(BROWSER))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        // chromedriver says `Connection: close` but keeps the connection:
        // read the head, then the body by its length (or its chunks).
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        let at = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed in the head".into());
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
        let mut content = raw[at + 4..].to_vec();
        let length = head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
        let chunked = head.contains("transfer-encoding: chunked")
            || head.contains("transfer-encoding:chunked");
        loop {
            let done = match length {
                Some(n) => content.len() >= n,
                None if chunked => content.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if done {
                break;
            }
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            content.extend_from_slice(&buf[..n]);
        }
        if let Some(n) = length {
            content.truncate(n);
        } else if chunked {
            content = dechunk(&content)?;
        }
        let v: Value = serde_json::from_slice(&content).map_err(|e| {
            format!(
                "{method} {path}: {e}: {}",
                String::from_utf8_lossy(&content)
            )
        })?;
        let value = v["value"].clone();
        if value.get("error").is_some() {
            return Err(format!("{method} {path}: {value}"));
        }
        // New Session answers {"value": {"sessionId": ..., "capabilities": ...}}.
        Ok(value)
    }
}

/// A chunked HTTP body, joined.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let at = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..at])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(out);
        }
        let data = b.get(at + 2..at + 2 + size).ok_or("short chunk")?;
        out.extend_from_slice(data);
        b = b.get(at + 4 + size..).ok_or("short chunk")?;
    }
}

/// Standard base64 (the screenshot), padding and whitespace ignored.
fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn base64_and_chunks_decode() {
    assert_eq!(base64("aGVsbG8gd29ybGQ="), b"hello world");
    assert_eq!(base64("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        dechunk(b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n").unwrap(),
        b"Wikipedia"
    );
}
