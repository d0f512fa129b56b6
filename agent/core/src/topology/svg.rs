//! `ringlan topology --format svg`: the ring drawn as a self-contained SVG
//! (inline CSS, no fonts or images from elsewhere), written by hand.
//!
//! - Members sit on a circle at their ring position (0 at the top,
//!   clockwise), each a dot coloured by its NAT kind, with a second ring
//!   around it when it relays for others, its name outside the circle and
//!   the NAT kind under it; this node's name is bold.
//! - Links are chords, one `<path class="link ...">` each: width and
//!   colour by kind (ring thick, long blue, the rest thin grey), the line
//!   by path (direct solid, LAN dashed, relayed dotted orange). A relayed
//!   chord bends towards its relay and is labelled `via NAME`; the relay's
//!   dot gets an orange halo.
//! - A legend explains all of it.
//!
//! Every element a script needs carries data attributes: members
//! `<g class="member" data-id="NODE ID" data-name="NAME">`, links
//! `data-a`, `data-b` (the page served on `metrics.listen` attaches its
//! side panel to them). Text is XML-escaped.

use std::fmt::Write as _;

use super::{PathClass, TopoLink, Topology};
use crate::status::NatBehaviour;

/// Width and height of the drawing.
const WIDTH: f64 = 980.0;
const HEIGHT: f64 = 700.0;
/// The ring: centre and radius.
const CX: f64 = 360.0;
const CY: f64 = 370.0;
const RADIUS: f64 = 250.0;
/// Where the legend starts.
const LEGEND_X: f64 = 720.0;

const STYLE: &str = "\
.rl-bg{fill:#fff}\
.rl-ring{fill:none;stroke:#e5e8ec;stroke-width:18}\
.rl-title{font:bold 16px sans-serif;fill:#222}\
.rl-sub{font:12px sans-serif;fill:#666}\
.link{fill:none;stroke:#34495e;stroke-width:1.6}\
.kind-ring{stroke-width:3.2}\
.kind-long{stroke:#2e86c1;stroke-width:2}\
.kind-introducer,.kind-on-demand,.kind-other{stroke:#95a5a6;stroke-width:1.3}\
.path-lan{stroke-dasharray:9 5}\
.path-relayed{stroke:#e67e22;stroke-dasharray:1 6;stroke-linecap:round}\
.via{font:11px sans-serif;fill:#d35400}\
.member{cursor:pointer}\
.member .dot{stroke:#fff;stroke-width:2}\
.nat-endpoint-independent .dot{fill:#27ae60}\
.nat-endpoint-dependent .dot{fill:#c0392b}\
.nat-unknown .dot{fill:#7f8c8d}\
.relay-ring{fill:none;stroke:#8e44ad;stroke-width:2}\
.relay-used{fill:none;stroke:#e67e22;stroke-width:3;stroke-opacity:.6}\
.name{font:13px sans-serif;fill:#222}\
.this-node .name{font-weight:bold}\
.nat{font:10px sans-serif;fill:#777}\
.legend{font:12px sans-serif;fill:#333}\
.legend-head{font:bold 12px sans-serif;fill:#333}";

/// XML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// A ring position as a point on a circle of radius `r` (0 at the top,
/// clockwise).
fn at(position: f64, r: f64) -> (f64, f64) {
    let a = position * std::f64::consts::TAU - std::f64::consts::FRAC_PI_2;
    (CX + r * a.cos(), CY + r * a.sin())
}

fn nat_short(n: NatBehaviour) -> &'static str {
    match n {
        NatBehaviour::EndpointIndependent => "NAT: endpoint-independent",
        NatBehaviour::EndpointDependent => "NAT: endpoint-dependent",
        NatBehaviour::Unknown => "NAT: unknown",
    }
}

fn nat_class(n: NatBehaviour) -> &'static str {
    match n {
        NatBehaviour::EndpointIndependent => "nat-endpoint-independent",
        NatBehaviour::EndpointDependent => "nat-endpoint-dependent",
        NatBehaviour::Unknown => "nat-unknown",
    }
}

/// The drawing of `t` (see the module doc).
pub fn render(t: &Topology) -> String {
    let mut o = String::with_capacity(4096 + 600 * (t.members.len() + t.links.len()));
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"ringlan-topology\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         font-family=\"sans-serif\">\n<style>{STYLE}</style>\n"
    );
    let _ = writeln!(
        o,
        "<rect class=\"rl-bg\" x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\"/>"
    );
    let me = escape(t.name_of(&t.this_node));
    let _ = writeln!(
        o,
        "<text class=\"rl-title\" x=\"20\" y=\"30\">ringlan: {} members, {} links</text>",
        t.members.len(),
        t.links.len()
    );
    let _ = writeln!(
        o,
        "<text class=\"rl-sub\" x=\"20\" y=\"50\">as seen from {me}{}</text>",
        if t.complete {
            ""
        } else {
            " (incomplete: part of the ring did not answer in time)"
        }
    );
    let _ = writeln!(
        o,
        "<circle class=\"rl-ring\" cx=\"{CX}\" cy=\"{CY}\" r=\"{RADIUS}\"/>"
    );

    // Relays in use get a halo under their dot.
    let mut used: Vec<&str> = t.links.iter().filter_map(|l| l.via.as_deref()).collect();
    used.sort_unstable();
    used.dedup();

    o.push_str("<g class=\"links\">\n");
    for l in &t.links {
        link(&mut o, t, l);
    }
    o.push_str("</g>\n<g class=\"members\">\n");
    for m in &t.members {
        let (x, y) = at(m.position, RADIUS);
        let mut class = format!("member {}", nat_class(m.nat));
        if m.relay {
            class.push_str(" relay");
        }
        if m.this_node {
            class.push_str(" this-node");
        }
        let _ = writeln!(
            o,
            "<g class=\"{class}\" data-id=\"{}\" data-name=\"{}\" transform=\"translate({x:.1},{y:.1})\">",
            escape(&m.node_id),
            escape(&m.name)
        );
        let addrs: Vec<String> = m.addresses.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            o,
            "<title>{} ({}): {}{}{}; position {:.4}{}</title>",
            escape(&m.name),
            escape(&m.node_id),
            nat_short(m.nat),
            if m.relay { ", relays for others" } else { "" },
            if m.introducer { ", introducer" } else { "" },
            m.position,
            if addrs.is_empty() {
                String::new()
            } else {
                format!("; {}", addrs.join(" "))
            }
        );
        if used.contains(&m.node_id.as_str()) {
            o.push_str("<circle class=\"relay-used\" r=\"19\"/>\n");
        }
        if m.relay {
            o.push_str("<circle class=\"relay-ring\" r=\"14\"/>\n");
        }
        o.push_str("<circle class=\"dot\" r=\"10\"/>\n");
        // The label outside the ring, anchored away from it.
        let (lx, ly) = at(m.position, RADIUS + 28.0);
        let (dx, dy) = (lx - x, ly - y);
        let anchor = if dx > 8.0 {
            "start"
        } else if dx < -8.0 {
            "end"
        } else {
            "middle"
        };
        let dy = if dy < -8.0 { dy - 10.0 } else { dy };
        let _ = writeln!(
            o,
            "<text class=\"name\" x=\"{dx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            dy + 4.0,
            escape(&m.name)
        );
        let _ = writeln!(
            o,
            "<text class=\"nat\" x=\"{dx:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}{}</text>",
            dy + 17.0,
            nat_short(m.nat),
            if m.introducer { ", introducer" } else { "" }
        );
        o.push_str("</g>\n");
    }
    o.push_str("</g>\n");
    legend(&mut o);
    o.push_str("</svg>\n");
    o
}

/// One link's chord (a relayed one bends towards its relay).
fn link(o: &mut String, t: &Topology, l: &TopoLink) {
    let (Some(a), Some(b)) = (t.member(&l.a), t.member(&l.b)) else {
        return;
    };
    let (ax, ay) = at(a.position, RADIUS);
    let (bx, by) = at(b.position, RADIUS);
    let relay = l
        .via
        .as_deref()
        .filter(|v| *v != l.a && *v != l.b)
        .and_then(|v| t.member(v));
    let class = format!("link kind-{} path-{}", l.kind.as_str(), l.path.as_str());
    let d = match (l.path, relay) {
        (PathClass::Relayed, Some(r)) => {
            // Control point between the centre and the relay: the curve
            // passes close to the relay's dot.
            let (rx, ry) = at(r.position, RADIUS * 0.9);
            let (cx, cy) = (2.0 * rx - (ax + bx) / 2.0, 2.0 * ry - (ay + by) / 2.0);
            let (cx, cy) = ((cx + rx) / 2.0, (cy + ry) / 2.0);
            format!("M{ax:.1},{ay:.1} Q{cx:.1},{cy:.1} {bx:.1},{by:.1}")
        }
        _ => format!("M{ax:.1},{ay:.1} L{bx:.1},{by:.1}"),
    };
    let _ = writeln!(
        o,
        "<path class=\"{class}\" data-a=\"{}\" data-b=\"{}\" d=\"{d}\"><title>{} -- {}: {}, {}</title></path>",
        escape(&l.a),
        escape(&l.b),
        escape(&a.name),
        escape(&b.name),
        l.kind.as_str(),
        escape(&t.path_text(l))
    );
    if l.path == PathClass::Relayed {
        // The label at the chord's middle (the curve's, for a bent one).
        let (mx, my) = match relay {
            Some(r) => {
                let (rx, ry) = at(r.position, RADIUS * 0.9);
                let (mx, my) = ((ax + bx) / 2.0, (ay + by) / 2.0);
                (mx + (rx - mx) * 0.75, my + (ry - my) * 0.75)
            }
            None => ((ax + bx) / 2.0, (ay + by) / 2.0),
        };
        let via = relay.map_or("via ?".to_string(), |r| format!("via {}", r.name));
        let _ = writeln!(
            o,
            "<text class=\"via\" x=\"{mx:.1}\" y=\"{my:.1}\" text-anchor=\"middle\">{}</text>",
            escape(&via)
        );
    }
}

fn legend(o: &mut String) {
    let x = LEGEND_X;
    let mut y = 100.0;
    let _ = writeln!(
        o,
        "<g class=\"legend-box\"><text class=\"legend-head\" x=\"{x}\" y=\"{y}\">links: path</text>"
    );
    for (class, text) in [
        ("kind-long path-direct", "direct (through NAT or public)"),
        ("kind-long path-lan", "direct on a shared LAN"),
        ("kind-long path-relayed", "relayed (labelled via RELAY)"),
    ] {
        y += 22.0;
        let _ = writeln!(
            o,
            "<path class=\"link {class}\" d=\"M{x},{y} L{:.0},{y}\"/><text class=\"legend\" x=\"{:.0}\" y=\"{:.0}\">{text}</text>",
            x + 40.0,
            x + 50.0,
            y + 4.0
        );
    }
    y += 34.0;
    let _ = writeln!(
        o,
        "<text class=\"legend-head\" x=\"{x}\" y=\"{y}\">links: kind</text>"
    );
    for (class, text) in [
        ("kind-ring", "ring (successor, predecessor)"),
        ("kind-long", "long (Symphony)"),
        ("kind-other", "introducer, on-demand, other"),
    ] {
        y += 22.0;
        let _ = writeln!(
            o,
            "<path class=\"link {class} path-direct\" d=\"M{x},{y} L{:.0},{y}\"/><text class=\"legend\" x=\"{:.0}\" y=\"{:.0}\">{text}</text>",
            x + 40.0,
            x + 50.0,
            y + 4.0
        );
    }
    y += 34.0;
    let _ = writeln!(
        o,
        "<text class=\"legend-head\" x=\"{x}\" y=\"{y}\">members: NAT mapping</text>"
    );
    for (class, text) in [
        (
            "nat-endpoint-independent",
            "endpoint-independent (cone-like, or none)",
        ),
        ("nat-endpoint-dependent", "endpoint-dependent (symmetric)"),
        ("nat-unknown", "unknown"),
    ] {
        y += 24.0;
        let _ = writeln!(
            o,
            "<g class=\"{class}\" transform=\"translate({:.0},{:.0})\"><circle class=\"dot\" r=\"8\"/></g><text class=\"legend\" x=\"{:.0}\" y=\"{:.0}\">{text}</text>",
            x + 20.0,
            y,
            x + 50.0,
            y + 4.0
        );
    }
    y += 28.0;
    let _ = writeln!(
        o,
        "<circle class=\"relay-ring\" cx=\"{:.0}\" cy=\"{y}\" r=\"12\"/><text class=\"legend\" x=\"{:.0}\" y=\"{:.0}\">relays for others</text>",
        x + 20.0,
        x + 50.0,
        y + 4.0
    );
    y += 30.0;
    let _ = writeln!(
        o,
        "<circle class=\"relay-used\" cx=\"{:.0}\" cy=\"{y}\" r=\"12\"/><text class=\"legend\" x=\"{:.0}\" y=\"{:.0}\">relaying a drawn link</text>",
        x + 20.0,
        x + 50.0,
        y + 4.0
    );
    y += 30.0;
    let _ = writeln!(
        o,
        "<text class=\"legend\" x=\"{x}\" y=\"{y}\">bold name: the node that answered</text></g>"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::example;

    fn parse(svg: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}\n{svg}"))
    }

    #[test]
    fn every_member_every_link_and_the_relay_are_drawn() {
        let t = example();
        let svg = render(&t);
        let doc = parse(&svg);
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let with_class = |c: &str| {
            doc.descendants()
                .filter(|n| {
                    n.attribute("class")
                        .is_some_and(|v| v.split(' ').any(|x| x == c))
                })
                .collect::<Vec<_>>()
        };
        // One group per member, its name shown.
        let members = with_class("member");
        assert_eq!(members.len(), t.members.len());
        for m in &t.members {
            let g = members
                .iter()
                .find(|g| g.attribute("data-id") == Some(m.node_id.as_str()))
                .unwrap_or_else(|| panic!("no group for {}", m.name));
            assert_eq!(g.attribute("data-name"), Some(m.name.as_str()));
            let name = g
                .descendants()
                .find(|n| n.attribute("class") == Some("name"))
                .and_then(|n| n.text());
            assert_eq!(name, Some(m.name.as_str()));
        }
        // One chord per link (the legend's samples carry no data-a).
        let chords: Vec<_> = with_class("link")
            .into_iter()
            .filter(|n| n.attribute("data-a").is_some())
            .collect();
        assert_eq!(chords.len(), t.links.len());
        let relayed: Vec<_> = chords
            .iter()
            .filter(|n| n.attribute("class").unwrap().contains("path-relayed"))
            .collect();
        assert_eq!(relayed.len(), 1);
        assert!(relayed[0].attribute("d").unwrap().contains('Q'), "bent");
        // The relay is marked: a label and a halo on intro.
        let via: Vec<_> = with_class("via").iter().filter_map(|n| n.text()).collect();
        assert_eq!(via, ["via intro"]);
        let intro = members
            .iter()
            .find(|g| g.attribute("data-name") == Some("intro"))
            .unwrap();
        assert!(intro
            .descendants()
            .any(|n| n.attribute("class") == Some("relay-used")));
        assert!(intro.attribute("class").unwrap().contains("relay"));
        // NAT kinds are shown per member; this node is marked.
        let phone = members
            .iter()
            .find(|g| g.attribute("data-name") == Some("phone"))
            .unwrap();
        assert!(phone
            .attribute("class")
            .unwrap()
            .contains("nat-endpoint-dependent"));
        assert!(phone
            .descendants()
            .any(|n| n.text() == Some("NAT: endpoint-dependent")));
        assert_eq!(with_class("this-node").len(), 1);
        // No reference to anything outside the document.
        assert!(!svg.contains("href"), "{svg}");
        assert!(!svg.contains("url("), "{svg}");
    }

    #[test]
    fn names_are_escaped_and_odd_topologies_draw() {
        let mut t = example();
        t.members[2].name = "<d&\"'>".into();
        // A relayed link with an unknown relay, a link to a non-member.
        t.links[4].via = None;
        t.links.push(TopoLink {
            a: t.members[0].node_id.clone(),
            b: "ffffffffffffffffffffffffffffffff".into(),
            ..t.links[0].clone()
        });
        t.complete = false;
        let svg = render(&t);
        let doc = parse(&svg);
        assert!(doc
            .descendants()
            .any(|n| n.attribute("data-name") == Some("<d&\"'>")));
        assert!(svg.contains("&lt;d&amp;&quot;&apos;&gt;"));
        assert!(doc.descendants().any(|n| n.text() == Some("via ?")));
        let chords = doc
            .descendants()
            .filter(|n| n.attribute("data-a").is_some())
            .count();
        assert_eq!(
            chords,
            t.links.len() - 1,
            "the non-member's link is left out"
        );
        assert!(svg.contains("incomplete"));
        // Empty and single-member topologies are still documents.
        t.links.clear();
        t.members.truncate(1);
        parse(&render(&t));
        t.members.clear();
        parse(&render(&t));
    }

    #[test]
    fn positions_go_clockwise_from_the_top() {
        let (x, y) = at(0.0, RADIUS);
        assert!((x - CX).abs() < 1e-9 && (y - (CY - RADIUS)).abs() < 1e-9);
        let (x, y) = at(0.25, RADIUS);
        assert!((x - (CX + RADIUS)).abs() < 1e-9 && (y - CY).abs() < 1e-9);
    }
}
