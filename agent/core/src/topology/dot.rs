//! `ringlan topology --format dot`: the topology as a Graphviz graph.
//!
//! Members are nodes pinned on a circle by ring position (`pos="x,y!"`,
//! for `neato -n` or `neato`; `dot` ignores positions), filled by NAT
//! kind, a double outline for members that relay; links are undirected
//! edges styled like the SVG (ring bold, long blue, others grey; direct
//! solid, LAN dashed, relayed dotted orange labelled `via NAME`). Render
//! with `ringlan topology --format dot | neato -Tpng > ring.png`.

use std::fmt::Write as _;

use super::{LinkKind, PathClass, Topology};
use crate::status::NatBehaviour;

/// A DOT quoted string's content.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// The graph of `t` (see the module doc).
pub fn render(t: &Topology) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "graph ringlan {{");
    let _ = writeln!(
        o,
        "  graph [layout=neato, overlap=true, splines=true, label=\"ringlan: {} members, {} links, as seen from {}{}\", labelloc=t, fontname=\"Helvetica\"];",
        t.members.len(),
        t.links.len(),
        escape(t.name_of(&t.this_node)),
        if t.complete { "" } else { " (incomplete)" }
    );
    let _ = writeln!(
        o,
        "  node [shape=circle, style=filled, fontname=\"Helvetica\", fontsize=10, fontcolor=white, width=0.9, fixedsize=true];"
    );
    let _ = writeln!(o, "  edge [fontname=\"Helvetica\", fontsize=9];");
    for m in &t.members {
        // Inches: a ring of radius 3 around the origin, 0 at the top,
        // clockwise.
        let a = m.position * std::f64::consts::TAU;
        let (x, y) = (3.0 * a.sin(), 3.0 * a.cos());
        let color = match m.nat {
            NatBehaviour::EndpointIndependent => "#27ae60",
            NatBehaviour::EndpointDependent => "#c0392b",
            NatBehaviour::Unknown => "#7f8c8d",
        };
        let nat = match m.nat {
            NatBehaviour::EndpointIndependent => "EI NAT",
            NatBehaviour::EndpointDependent => "ED NAT",
            NatBehaviour::Unknown => "NAT ?",
        };
        let _ = writeln!(
            o,
            "  \"{}\" [label=\"{}\\n{nat}\", tooltip=\"{} {}\", pos=\"{x:.2},{y:.2}!\", fillcolor=\"{color}\"{}{}];",
            escape(&m.node_id),
            escape(&m.name),
            escape(&m.name),
            escape(&m.node_id),
            if m.relay { ", peripheries=2" } else { "" },
            if m.this_node { ", penwidth=3" } else { "" },
        );
    }
    for l in &t.links {
        let (color, width) = match l.kind {
            LinkKind::Ring => ("#34495e", 2.5),
            LinkKind::Long => ("#2e86c1", 1.5),
            _ => ("#95a5a6", 1.0),
        };
        let (style, color) = match l.path {
            PathClass::Direct => ("solid", color),
            PathClass::Lan => ("dashed", color),
            PathClass::Relayed => ("dotted", "#e67e22"),
        };
        let label = match l.path {
            PathClass::Relayed => format!(
                ", label=\"via {}\"",
                escape(l.via.as_deref().map_or("?", |v| t.name_of(v)))
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "  \"{}\" -- \"{}\" [style={style}, color=\"{color}\", penwidth={width}, tooltip=\"{} {}\"{label}];",
            escape(&l.a),
            escape(&l.b),
            l.kind.as_str(),
            l.path.as_str(),
        );
    }
    o.push_str("}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::example;

    #[test]
    fn every_member_and_link_with_its_style() {
        let t = example();
        let dot = render(&t);
        assert!(dot.starts_with("graph ringlan {\n") && dot.ends_with("}\n"));
        for m in &t.members {
            assert!(
                dot.contains(&format!("\"{}\" [label=\"{}\\n", m.node_id, m.name)),
                "{dot}"
            );
        }
        let edges: Vec<&str> = dot.lines().filter(|l| l.contains(" -- ")).collect();
        assert_eq!(edges.len(), t.links.len());
        assert_eq!(
            edges.iter().filter(|e| e.contains("style=dotted")).count(),
            1
        );
        assert!(edges
            .iter()
            .any(|e| e.contains("style=dotted") && e.contains("label=\"via intro\"")));
        assert_eq!(
            edges.iter().filter(|e| e.contains("style=dashed")).count(),
            3
        );
        assert!(dot.contains("peripheries=2"), "intro relays");
        assert!(dot.contains("fillcolor=\"#c0392b\""), "phone: symmetric");
        // Balanced braces and quotes on every line.
        for line in dot.lines() {
            let unescaped = line.replace("\\\\", "").replace("\\\"", "");
            assert_eq!(unescaped.matches('"').count() % 2, 0, "{line}");
        }
    }

    #[test]
    fn quotes_in_names_are_escaped() {
        let mut t = example();
        t.members[0].name = "a\"b\\c".into();
        let dot = render(&t);
        assert!(dot.contains("label=\"a\\\"b\\\\c\\n"), "{dot}");
    }
}
