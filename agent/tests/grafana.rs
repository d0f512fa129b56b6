//! packaging/grafana-dashboard.json asks only for what `/metrics` has: every
//! metric name in its queries (panels and template variables) is a series
//! the agent's metrics endpoint serves, every label a selector, `by (...)`
//! or legend uses is a label of those series (or `instance`/`job`, which
//! Prometheus adds), and every literal label value a selector matches
//! exists. `/metrics` comes from the agent's real endpoint
//! ([`MetricsServer`], as `ringlan up` binds it) over TCP, serving the
//! status example that has every optional family (network CA, relay,
//! neighbours, drops).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use ringlan_agent::metrics::MetricsServer;
use ringlan_agent::serve::ServeStats;
use ringlan_agent::status::{example, StatusBoard};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Series name -> label -> values seen.
type Series = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

async fn scrape(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// `/metrics` of an endpoint bound like the agent binds it.
async fn metrics_text() -> String {
    let board = Arc::new(StatusBoard::new(example()));
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), board)
        .await
        .unwrap()
        .report("control", Arc::new(ServeStats::default()));
    let addr = server.local_addr().unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server.serve(rx));
    let text = scrape(addr).await;
    tx.send(true).unwrap();
    task.await.unwrap();
    text
}

/// Parses `key="value",...` (values may hold `\"`, `\\`, `\n`).
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').expect("label =");
        let after = after.strip_prefix('"').expect("label value quote");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("closing quote");
            match c {
                '\\' => {
                    let (_, e) = chars.next().expect("escape");
                    value.push(if e == 'n' { '\n' } else { e });
                }
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push((key.trim().to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    out
}

/// The sample lines of an OpenMetrics text.
fn parse_series(text: &str) -> Series {
    let mut series = Series::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.rsplit_once('}').unwrap().0)),
            None => (line.split_whitespace().next().unwrap(), Vec::new()),
        };
        let entry = series.entry(name.to_owned()).or_default();
        for (k, v) in labels {
            entry.entry(k).or_default().insert(v);
        }
    }
    series
}

/// Every PromQL expression of the dashboard, with where it is.
fn queries(dash: &Value) -> Vec<(String, String, Option<String>)> {
    fn panels(list: &Value, out: &mut Vec<(String, String, Option<String>)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("target expr").to_owned();
                let legend = t["legendFormat"].as_str().map(str::to_owned);
                out.push((format!("panel `{title}`"), expr, legend));
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            out.push((format!("variable `{}`", v["name"]), q.to_owned(), None));
            let def = v["definition"].as_str().unwrap();
            out.push((format!("variable `{}`", v["name"]), def.to_owned(), None));
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// `(metric, Some(selector body))` for every `ringlan_*` name in `expr`.
fn metrics_in(expr: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = expr[i..].find("ringlan_") {
        let start = i + at;
        let before_ok = expr[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident(c));
        let len = expr[start..]
            .find(|c: char| !is_ident(c))
            .unwrap_or(expr.len() - start);
        let name = &expr[start..start + len];
        i = start + len;
        if !before_ok {
            continue;
        }
        let selector = expr[i..].strip_prefix('{').map(|rest| {
            let close = rest.find('}').expect("selector closes");
            rest[..close].to_owned()
        });
        out.push((name.to_owned(), selector));
    }
    out
}

/// Label names in every `by (...)` / `without (...)` / `on (...)` of `expr`.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kw in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut i = 0;
        while let Some(at) = expr[i..].find(kw) {
            let start = i + at;
            i = start + kw.len();
            let before_ok = expr[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !is_ident(c));
            let rest = expr[i..].trim_start();
            if !before_ok || !rest.starts_with('(') {
                continue;
            }
            let close = rest.find(')').unwrap();
            out.extend(
                rest[1..close]
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    out
}

/// The labels of the first `by (...)` in `expr`.
fn first_by(expr: &str) -> Option<Vec<String>> {
    let at = expr.find(" by (")?;
    let rest = &expr[at + " by (".len()..];
    let close = rest.find(')')?;
    Some(
        rest[..close]
            .split(',')
            .map(|l| l.trim().to_owned())
            .collect(),
    )
}

/// `label op "value"` matchers of a selector body.
fn matchers(body: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let op_at = rest.find(['=', '!']).expect("matcher op");
        let label = rest[..op_at].trim().to_owned();
        let op_len = if rest[op_at..].starts_with("=~")
            || rest[op_at..].starts_with("!~")
            || rest[op_at..].starts_with("!=")
        {
            2
        } else {
            1
        };
        let op = rest[op_at..op_at + op_len].to_owned();
        let after = rest[op_at + op_len..].trim_start();
        let after = after.strip_prefix('"').expect("matcher value quote");
        let close = after.find('"').expect("matcher value closes");
        out.push((label, op, after[..close].to_owned()));
        rest = after[close + 1..].trim_start_matches([',', ' ']);
    }
    out
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_served() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/grafana-dashboard.json"
    );
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is JSON");
    assert_eq!(dash["uid"], "ringlan-overview");

    let series = parse_series(&metrics_text().await);
    // The scrape itself is whole: identity, sessions, CA, relay, sockets.
    for want in [
        "ringlan_info",
        "ringlan_peer_tx_bytes_total",
        "ringlan_certificate_expiry_seconds",
        "ringlan_relay_routes",
        "ringlan_socket_refused_total",
    ] {
        assert!(series.contains_key(want), "/metrics lacks {want}");
    }

    let queries = queries(&dash);
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (place, expr, legend) in &queries {
        let found = metrics_in(expr);
        if found.is_empty() {
            problems.push(format!("{place}: no ringlan metric in `{expr}`"));
        }
        let mut available: BTreeSet<String> = TARGET_LABELS.map(String::from).into();
        for (name, selector) in &found {
            used.insert(name.clone());
            let Some(labels) = series.get(name) else {
                problems.push(format!("{place}: `{name}` is not in /metrics (`{expr}`)"));
                continue;
            };
            available.extend(labels.keys().cloned());
            for (label, op, value) in selector.iter().flat_map(|s| matchers(s)) {
                if TARGET_LABELS.contains(&label.as_str()) {
                    continue;
                }
                match labels.get(&label) {
                    None => problems.push(format!("{place}: `{name}` has no label `{label}`")),
                    Some(values) if op == "=" && !value.contains('$') => {
                        if !values.contains(&value) {
                            problems.push(format!(
                                "{place}: `{name}{{{label}=\"{value}\"}}` matches nothing; values: {values:?}"
                            ));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        for label in grouping_labels(expr) {
            if !available.contains(&label) {
                problems.push(format!(
                    "{place}: groups by `{label}`, which no series of `{expr}` has"
                ));
            }
        }
        // What the result carries: the outermost aggregation's `by` list
        // (it comes first in these expressions), nothing after an
        // aggregation without one, else the series' labels.
        let result: BTreeSet<String> = match first_by(expr) {
            Some(by) => by.into_iter().collect(),
            None if ["count(", "sum(", "min(", "max(", "avg("]
                .iter()
                .any(|a| expr.starts_with(a)) =>
            {
                BTreeSet::new()
            }
            None => available.clone(),
        };
        for part in legend.iter().flat_map(|l| l.split("{{").skip(1)) {
            let label = part.split_once("}}").expect("legend }}").0.trim();
            if !result.contains(label) {
                problems.push(format!(
                    "{place}: legend uses `{label}`, not a label of `{expr}`"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Sanity of the checker: it saw the names the dashboard is about.
    for want in [
        "ringlan_sessions",
        "ringlan_peer_rtt_seconds",
        "ringlan_drops_total",
        "ringlan_relay_route_bytes",
    ] {
        assert!(used.contains(want), "dashboard queries no {want}: {used:?}");
    }
}

#[test]
fn checker_finds_names_labels_and_groupings() {
    let expr = r#"sum by (instance, peer) (rate(ringlan_peer_tx_bytes_total{instance=~"$instance", peer!="x"}[5m])) / xringlan_no"#;
    assert_eq!(
        metrics_in(expr),
        [(
            "ringlan_peer_tx_bytes_total".to_owned(),
            Some(r#"instance=~"$instance", peer!="x""#.to_owned())
        )]
    );
    assert_eq!(grouping_labels(expr), ["instance", "peer"]);
    assert_eq!(first_by(expr).unwrap(), ["instance", "peer"]);
    assert_eq!(
        matchers(r#"instance=~"$instance", peer!="x",state="open""#),
        [
            ("instance".into(), "=~".into(), "$instance".into()),
            ("peer".into(), "!=".into(), "x".into()),
            ("state".into(), "=".into(), "open".into()),
        ]
    );
    let s = parse_series("# TYPE a gauge\na{x=\"1\",y=\"q\\\"z\"} 3\nb 4\n# EOF\n");
    assert_eq!(s["a"]["y"], BTreeSet::from(["q\"z".to_owned()]));
    assert!(s["b"].is_empty());
}
