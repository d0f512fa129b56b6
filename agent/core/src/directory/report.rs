//! What `ringlan members` shows: the model (its JSON is the `--json`
//! output, documented in `docs/directory.md`) and the table.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ringlan_tunnel::NodeId;
use serde::{Deserialize, Serialize};

use super::{Conflict, Member};
use crate::status::{format_duration, ConflictStatus, NatBehaviour};

/// The network's members, as a directory scan found them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersReport {
    /// Every part of the ring answered in time (otherwise some members
    /// may be missing).
    pub complete: bool,
    /// The asking node's clock (seconds since the Unix epoch) when the
    /// scan ended: `last_seen_unix` is relative to it.
    pub now_unix: u64,
    /// By name (ASCII case ignored), then node id.
    pub members: Vec<MemberStatus>,
    /// Names and IPs several members claim.
    pub conflicts: Vec<ConflictStatus>,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    /// 32 hex digits.
    pub node_id: String,
    /// Overlay IPs (configured and learnt), ascending.
    pub addresses: Vec<IpAddr>,
    /// `aa:bb:cc:dd:ee:ff`
    pub mac: String,
    pub nat: NatBehaviour,
    /// Underlay addresses STUN servers saw.
    pub reflexive: Vec<SocketAddr>,
    /// Underlay addresses of its interfaces.
    pub local: Vec<SocketAddr>,
    pub relay: bool,
    /// Its record carries a network-CA certificate.
    pub certificate: bool,
    /// When it last published its record (seconds since the Unix epoch).
    pub last_seen_unix: u64,
    /// When its record expires.
    pub expires_unix: u64,
    /// The node that answered.
    pub this_node: bool,
}

impl MembersReport {
    pub fn new(
        members: &[Member],
        complete: bool,
        now_unix: u64,
        me: NodeId,
        conflicts: impl Iterator<Item = Conflict>,
    ) -> MembersReport {
        MembersReport {
            complete,
            now_unix,
            members: members
                .iter()
                .map(|m| MemberStatus {
                    name: m.body.name.clone(),
                    node_id: m.body.node_id.to_string(),
                    addresses: m.body.ips.clone(),
                    mac: m.body.mac.to_string(),
                    nat: m.body.nat,
                    reflexive: m.body.reflexive.clone(),
                    local: m.body.local.clone(),
                    relay: m.body.relay,
                    certificate: m.body.certificate.is_some(),
                    last_seen_unix: m.body.published_unix,
                    expires_unix: m.expires_unix,
                    this_node: m.body.node_id == me,
                })
                .collect(),
            conflicts: conflicts.map(|c| c.status()).collect(),
        }
    }

    /// The table `ringlan members` prints.
    pub fn render(&self) -> String {
        let mut rows = vec![[
            "NAME".to_string(),
            "NODE".into(),
            "ADDRESSES".into(),
            "MAC".into(),
            "NAT".into(),
            "LAST SEEN".into(),
        ]];
        for m in &self.members {
            let addrs: Vec<String> = m.addresses.iter().map(|a| a.to_string()).collect();
            let ago = self.now_unix.saturating_sub(m.last_seen_unix);
            rows.push([
                if m.this_node {
                    format!("{} (this node)", m.name)
                } else {
                    m.name.clone()
                },
                crate::status::short_id(&m.node_id).to_string(),
                if addrs.is_empty() {
                    "-".into()
                } else {
                    addrs.join(" ")
                },
                m.mac.clone(),
                m.nat.to_string(),
                format!("{} ago", format_duration(ago)),
            ]);
        }
        let mut widths = [0usize; 6];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let mut o = String::new();
        let _ = writeln!(
            o,
            "members: {}{}",
            self.members.len(),
            if self.complete {
                ""
            } else {
                " (incomplete: part of the ring did not answer in time)"
            }
        );
        for r in &rows {
            let mut line = String::new();
            for (i, (c, w)) in r.iter().zip(widths).enumerate() {
                if i + 1 == r.len() {
                    line.push_str(c);
                } else {
                    let _ = write!(line, "{c:<w$}  ");
                }
            }
            let _ = writeln!(o, "{}", line.trim_end());
        }
        for c in &self.conflicts {
            let who: Vec<&str> = c
                .claimants
                .iter()
                .map(|n| crate::status::short_id(n))
                .collect();
            let _ = writeln!(o, "CONFLICT: {} is claimed by {}", c.key, who.join(", "));
        }
        o
    }
}

/// A report with two members: the example the `--json` shape test and
/// the control socket tests share.
pub fn example() -> MembersReport {
    MembersReport {
        complete: true,
        now_unix: 1_796_300_100,
        members: vec![
            MemberStatus {
                name: "desktop".into(),
                node_id: "89abcdef0123456789abcdef01234567".into(),
                addresses: vec!["10.77.0.3".parse().unwrap()],
                mac: "42:65:61:f6:73:31".into(),
                nat: NatBehaviour::EndpointDependent,
                reflexive: vec!["198.51.100.20:40000".parse().unwrap()],
                local: vec!["192.168.1.30:4910".parse().unwrap()],
                relay: false,
                certificate: false,
                last_seen_unix: 1_796_300_000,
                expires_unix: 1_796_300_600,
                this_node: false,
            },
            MemberStatus {
                name: "laptop".into(),
                node_id: "0123456789abcdef0123456789abcdef".into(),
                addresses: vec!["10.77.0.2".parse().unwrap(), "fd77::2".parse().unwrap()],
                mac: "02:11:22:33:44:55".into(),
                nat: NatBehaviour::EndpointIndependent,
                reflexive: vec!["203.0.113.5:61000".parse().unwrap()],
                local: vec!["192.0.2.10:4910".parse().unwrap()],
                relay: true,
                certificate: false,
                last_seen_unix: 1_796_300_090,
                expires_unix: 1_796_300_690,
                this_node: true,
            },
        ],
        conflicts: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `--json` shape, pinned (docs/directory.md shows it).
    #[test]
    fn json_shape() {
        let j = serde_json::to_string(&example()).unwrap();
        assert_eq!(
            j,
            concat!(
                r#"{"complete":true,"now_unix":1796300100,"members":["#,
                r#"{"name":"desktop","node_id":"89abcdef0123456789abcdef01234567","addresses":["10.77.0.3"],"#,
                r#""mac":"42:65:61:f6:73:31","nat":"endpoint-dependent","reflexive":["198.51.100.20:40000"],"#,
                r#""local":["192.168.1.30:4910"],"relay":false,"certificate":false,"last_seen_unix":1796300000,"#,
                r#""expires_unix":1796300600,"this_node":false},"#,
                r#"{"name":"laptop","node_id":"0123456789abcdef0123456789abcdef","addresses":["10.77.0.2","fd77::2"],"#,
                r#""mac":"02:11:22:33:44:55","nat":"endpoint-independent","reflexive":["203.0.113.5:61000"],"#,
                r#""local":["192.0.2.10:4910"],"relay":true,"certificate":false,"last_seen_unix":1796300090,"#,
                r#""expires_unix":1796300690,"this_node":true}],"#,
                r#""conflicts":[]}"#
            )
        );
        let back: MembersReport = serde_json::from_str(&j).unwrap();
        assert_eq!(back, example());
    }

    #[test]
    fn render_golden() {
        let mut r = example();
        r.conflicts.push(ConflictStatus {
            key: "ip:10.77.0.3".into(),
            claimants: vec![
                "89abcdef0123456789abcdef01234567".into(),
                "fedcba9876543210fedcba9876543210".into(),
            ],
        });
        let want = "\
members: 2
NAME                NODE      ADDRESSES          MAC                NAT                   LAST SEEN
desktop             89abcdef  10.77.0.3          42:65:61:f6:73:31  endpoint-dependent    1m40s ago
laptop (this node)  01234567  10.77.0.2 fd77::2  02:11:22:33:44:55  endpoint-independent  10s ago
CONFLICT: ip:10.77.0.3 is claimed by 89abcdef, fedcba98
";
        let got = r.render();
        assert_eq!(got, want, "\n{got}");
        r.complete = false;
        assert!(r
            .render()
            .starts_with("members: 2 (incomplete: part of the ring did not answer in time)\n"));
    }
}
