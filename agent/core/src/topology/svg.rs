//! `ringlan topology --format svg`: the ring drawn as a self-contained SVG
//! (inline CSS, no fonts or images from elsewhere), written by hand.
//!
//! - Members sit on a circle at their ring position (0 at the top,
//!   clockwise), pushed apart where ids crowd so no dot covers another
//!   ([`spread`]; the tooltip keeps the true position), each a dot coloured by its NAT kind, with a second ring
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

use super::{PathClass, TopoLink, TopoMember, Topology};
use crate::status::NatBehaviour;

/// Width and height of the drawing.
const WIDTH: f64 = 1130.0;
const HEIGHT: f64 = 700.0;
/// The ring: centre and radius (room for the labels of usual names on
/// either side, the legend on the right).
const CX: f64 = 400.0;
const CY: f64 = 370.0;
const RADIUS: f64 = 240.0;
/// The least distance between two members' dots along the ring, in
/// pixels: a dot is 20 across, so every dot keeps a gap around it and
/// stays clickable (a relay's halo may touch its neighbour's).
const MIN_DOT_SPACING: f64 = 36.0;
/// Where the legend starts.
const LEGEND_X: f64 = 820.0;

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

/// Where to draw members whose ring positions are `positions`: the same
/// places and clockwise order, pushed apart so neighbours are at least
/// `min_gap` (a fraction of the circle; `1/n` when `n` members cannot all
/// have that much) from each other. Node ids are random, so two members
/// may sit a hair apart on the ring and their dots would cover each other.
///
/// A ring that already keeps the gap is drawn as it is. Otherwise each
/// member moves part of the way, by the same fraction `λ` for all, from
/// its position towards an evenly spaced ring in the same order (shifted
/// to the positions' mean offset). A gap `d` then becomes
/// `(1-λ)·d + λ/n`, so the smallest `λ` that lifts every gap to
/// `min_gap` is `max over crowded gaps of (min_gap - d) / (1/n - d)`.
/// Out-of-range or non-finite positions (a topology read from elsewhere)
/// are taken modulo 1, NaN as 0. The result is aligned with the input.
fn spread(positions: &[f64], min_gap: f64) -> Vec<f64> {
    let n = positions.len();
    let norm = |p: f64| {
        if p.is_finite() {
            p.rem_euclid(1.0)
        } else {
            0.0
        }
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| norm(positions[a]).total_cmp(&norm(positions[b])));
    let sorted: Vec<f64> = order.iter().map(|&i| norm(positions[i])).collect();
    let mut out: Vec<f64> = positions.iter().map(|&p| norm(p)).collect();
    if n < 2 {
        return out;
    }
    let even = 1.0 / n as f64;
    let gap = min_gap.min(even);
    let gaps = (0..n).map(|k| {
        if k + 1 < n {
            sorted[k + 1] - sorted[k]
        } else {
            sorted[0] + 1.0 - sorted[n - 1]
        }
    });
    let lambda = gaps
        .filter(|&d| d < gap)
        .map(|d| ((gap - d) / (even - d)).min(1.0))
        .fold(0.0_f64, f64::max);
    if lambda == 0.0 {
        return out;
    }
    let offset = sorted
        .iter()
        .enumerate()
        .map(|(k, p)| p - k as f64 * even)
        .sum::<f64>()
        / n as f64;
    for (k, &i) in order.iter().enumerate() {
        let target = offset + k as f64 * even;
        out[i] = (1.0 - lambda) * sorted[k] + lambda * target;
    }
    out
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

    let positions: Vec<f64> = t.members.iter().map(|m| m.position).collect();
    let drawn = spread(
        &positions,
        MIN_DOT_SPACING / (std::f64::consts::TAU * RADIUS),
    );
    let drawn_at = |id: &str| {
        t.members
            .iter()
            .position(|m| m.node_id == id)
            .map(|i| (&t.members[i], drawn[i]))
    };

    o.push_str("<g class=\"links\">\n");
    for l in &t.links {
        link(&mut o, t, l, &drawn_at);
    }
    o.push_str("</g>\n<g class=\"members\">\n");
    for (m, &shown) in t.members.iter().zip(&drawn) {
        let (x, y) = at(shown, RADIUS);
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
        let (lx, ly) = at(shown, RADIUS + 28.0);
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

/// One link's chord (a relayed one bends towards its relay); `drawn_at`
/// gives a member and where its dot is drawn.
fn link<'t>(
    o: &mut String,
    t: &Topology,
    l: &TopoLink,
    drawn_at: &impl Fn(&str) -> Option<(&'t TopoMember, f64)>,
) {
    let (Some((a, a_at)), Some((b, b_at))) = (drawn_at(&l.a), drawn_at(&l.b)) else {
        return;
    };
    let (ax, ay) = at(a_at, RADIUS);
    let (bx, by) = at(b_at, RADIUS);
    let relay = l
        .via
        .as_deref()
        .filter(|v| *v != l.a && *v != l.b)
        .and_then(drawn_at);
    let class = format!("link kind-{} path-{}", l.kind.as_str(), l.path.as_str());
    let d = match (l.path, relay) {
        (PathClass::Relayed, Some((_, r_at))) => {
            // Control point between the centre and the relay: the curve
            // passes close to the relay's dot.
            let (rx, ry) = at(r_at, RADIUS * 0.9);
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
            Some((_, r_at)) => {
                let (rx, ry) = at(r_at, RADIUS * 0.9);
                let (mx, my) = ((ax + bx) / 2.0, (ay + by) / 2.0);
                (mx + (rx - mx) * 0.75, my + (ry - my) * 0.75)
            }
            None => ((ax + bx) / 2.0, (ay + by) / 2.0),
        };
        let via = relay.map_or("via ?".to_string(), |(r, _)| format!("via {}", r.name));
        let _ = writeln!(
            o,
            "<text class=\"via\" x=\"{mx:.1}\" y=\"{my:.1}\" text-anchor=\"middle\">{}</text>",
            escape(&via)
        );
    }
}

/// One legend entry: a heading, or a sample and its text.
enum Entry {
    Head(&'static str),
    /// A chord sample with these classes.
    Line(&'static str, &'static str),
    /// A member dot with this NAT class.
    Dot(&'static str, &'static str),
    /// A circle with this class around a member.
    Ring(&'static str, &'static str),
    Text(&'static str),
}

const LEGEND: &[Entry] = &[
    Entry::Head("links: path"),
    Entry::Line("kind-long path-direct", "direct (through NAT or public)"),
    Entry::Line("kind-long path-lan", "direct on a shared LAN"),
    Entry::Line("kind-long path-relayed", "relayed (labelled via RELAY)"),
    Entry::Head("links: kind"),
    Entry::Line("kind-ring path-direct", "ring (successor, predecessor)"),
    Entry::Line("kind-long path-direct", "long (Symphony)"),
    Entry::Line("kind-other path-direct", "introducer, on-demand, other"),
    Entry::Head("members: NAT mapping"),
    Entry::Dot(
        "nat-endpoint-independent",
        "endpoint-independent (cone-like, or none)",
    ),
    Entry::Dot("nat-endpoint-dependent", "endpoint-dependent (symmetric)"),
    Entry::Dot("nat-unknown", "unknown"),
    Entry::Ring("relay-ring", "relays for others"),
    Entry::Ring("relay-used", "relaying a drawn link"),
    Entry::Text("bold name: the node that answered"),
];

fn legend(o: &mut String) {
    let x = LEGEND_X;
    let (sample, text) = (x + 20.0, x + 50.0);
    let mut y = 78.0;
    o.push_str("<g class=\"legend-box\">\n");
    for e in LEGEND {
        y += match e {
            Entry::Head(_) => 34.0,
            Entry::Line(..) | Entry::Text(_) => 22.0,
            Entry::Dot(..) | Entry::Ring(..) => 26.0,
        };
        let (sample_svg, label) = match e {
            Entry::Head(h) => {
                let _ = writeln!(
                    o,
                    "<text class=\"legend-head\" x=\"{x}\" y=\"{y}\">{h}</text>"
                );
                continue;
            }
            Entry::Text(t) => (String::new(), *t),
            Entry::Line(class, t) => (
                format!(
                    "<path class=\"link {class}\" d=\"M{x},{y} L{},{y}\"/>",
                    x + 40.0
                ),
                *t,
            ),
            Entry::Dot(class, t) => (
                format!(
                    "<g class=\"{class}\" transform=\"translate({sample},{y})\"><circle class=\"dot\" r=\"8\"/></g>"
                ),
                *t,
            ),
            Entry::Ring(class, t) => (
                format!("<circle class=\"{class}\" cx=\"{sample}\" cy=\"{y}\" r=\"12\"/>"),
                *t,
            ),
        };
        let at = if sample_svg.is_empty() { x } else { text };
        let _ = writeln!(
            o,
            "{sample_svg}<text class=\"legend\" x=\"{at}\" y=\"{}\">{label}</text>",
            y + 4.0
        );
    }
    o.push_str("</g>\n");
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

    /// The drawn positions in the ring order of `positions`, checked to
    /// keep that order, and the smallest gap between neighbours (the last
    /// to the first across the top included).
    fn drawn_gaps(positions: &[f64], min_gap: f64) -> (Vec<f64>, f64) {
        let drawn = spread(positions, min_gap);
        assert_eq!(drawn.len(), positions.len());
        let mut order: Vec<usize> = (0..positions.len()).collect();
        order.sort_by(|&a, &b| positions[a].total_cmp(&positions[b]));
        let q: Vec<f64> = order.iter().map(|&i| drawn[i]).collect();
        let mut least = f64::INFINITY;
        for k in 0..q.len() {
            let d = if k + 1 < q.len() {
                q[k + 1] - q[k]
            } else {
                q[0] + 1.0 - q[k]
            };
            assert!(d > 0.0, "order changed at {k}: {q:?}");
            least = least.min(d);
        }
        (drawn, least)
    }

    #[test]
    fn a_ring_with_room_is_drawn_where_it_is() {
        let p = [0.1, 0.35, 0.6, 0.97];
        assert_eq!(spread(&p, 0.02), p);
        assert_eq!(spread(&[0.5], 0.02), [0.5]);
        assert!(spread(&[], 0.02).is_empty());
    }

    #[test]
    fn members_a_hair_apart_are_pushed_apart_and_the_rest_barely_move() {
        // Two ids 1e-9 of the ring apart (what broke a click in the
        // topology test), and two more across the top.
        let p = [0.300_000_000, 0.300_000_001, 0.62, 0.995];
        let gap = MIN_DOT_SPACING / (std::f64::consts::TAU * RADIUS);
        let (drawn, least) = drawn_gaps(&p, gap);
        assert!(least >= gap - 1e-12, "{least} < {gap}: {drawn:?}");
        for (a, b) in p.iter().zip(&drawn) {
            assert!((a - b).abs() < 0.03, "{p:?} -> {drawn:?}");
        }
        // On the page: the two dots' centres are apart by more than a dot.
        let (ax, ay) = at(drawn[0], RADIUS);
        let (bx, by) = at(drawn[1], RADIUS);
        assert!((ax - bx).hypot(ay - by) > 30.0);
    }

    #[test]
    fn a_crowded_ring_gets_even_spacing_in_ring_order() {
        // 300 members cannot keep 36 px apart on this circle: each gets
        // 1/300 of it, in the order of their ids, some of which coincide.
        let p: Vec<f64> = (0..300u64)
            .map(|i| ((i * 2_654_435_761) % 1000) as f64 / 4000.0)
            .collect();
        let (_, least) = drawn_gaps(&p, 0.02);
        assert!(least >= 1.0 / 300.0 - 1e-12, "{least}");
    }

    #[test]
    fn positions_from_elsewhere_never_break_the_drawing() {
        let p = [f64::NAN, f64::INFINITY, -0.25, 1.5, 0.5];
        let drawn = spread(&p, 0.02);
        assert!(drawn.iter().all(|x| x.is_finite()), "{drawn:?}");
        assert_eq!(drawn[2], 0.75, "taken modulo 1");
        // NaN, infinity (both 0), 1.5 and 0.5 (both 0.5) coincide in
        // pairs and are pushed apart.
        let mut q = drawn.clone();
        q.sort_by(f64::total_cmp);
        assert!(q.windows(2).all(|w| w[1] - w[0] >= 0.02 - 1e-12), "{q:?}");
    }

    #[test]
    fn positions_go_clockwise_from_the_top() {
        let (x, y) = at(0.0, RADIUS);
        assert!((x - CX).abs() < 1e-9 && (y - (CY - RADIUS)).abs() < 1e-9);
        let (x, y) = at(0.25, RADIUS);
        assert!((x - (CX + RADIUS)).abs() < 1e-9 && (y - CY).abs() < 1e-9);
    }
}
