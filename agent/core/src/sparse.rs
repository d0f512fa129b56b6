//! Which frames skip the bulk queue: small frames that carry no TCP data
//! go on a session's second frame flow (`Peer::sparse`), which the flow
//! layer serves round-robin with the bulk one (RFC 7016 3.6.2.3), so a
//! ping, a DNS query or a TCP acknowledgement is not queued behind the
//! megabytes a bulk TCP stream keeps in the agent (docs/dataplane.md
//! "Sparse frames first"). The idea is fq_codel's queue for new, sparse
//! flows (RFC 8290) without per-flow state.
//!
//! TCP segments that carry data (and SYN, FIN, RST) stay on the bulk flow
//! whatever their size: moving one ahead of earlier segments of its own
//! connection would reorder that connection. A pure acknowledgement may
//! overtake data of its connection: acknowledgement fields are cumulative
//! and an older one arriving later is ignored.

/// Largest frame (Ethernet header onwards) that counts as sparse: a ping
/// of the default size is 98 bytes, a TCP acknowledgement with SACK
/// blocks under 100, a DNS query well under 256.
pub const SPARSE_MAX_FRAME: usize = 256;

use crate::neighbour::u16_at;

const ETH: usize = 14;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IGMP: u8 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
/// TCP flags that make a segment more than an acknowledgement.
const TCP_SYN_FIN_RST: u8 = 0x02 | 0x01 | 0x04;

/// Whether `frame` (Ethernet header onwards, no FCS) is small and carries
/// no TCP data: ARP; ICMP, ICMPv6, IGMP and UDP over IPv4 or IPv6 (no
/// extension headers); TCP segments with no payload and none of SYN, FIN
/// and RST. One VLAN tag is looked through. Total: any byte string gives
/// an answer.
pub fn is_sparse(frame: &[u8]) -> bool {
    if frame.len() > SPARSE_MAX_FRAME {
        return false;
    }
    let mut l3 = ETH;
    let mut ethertype = u16_at(frame, 12);
    if ethertype == Some(0x8100) {
        l3 += 4;
        ethertype = u16_at(frame, 16);
    }
    match ethertype {
        Some(0x0806) => true,
        Some(0x0800) => {
            let Some(&b) = frame.get(l3) else {
                return false;
            };
            let ihl = usize::from(b & 0x0f) * 4;
            let (Some(total), Some(&proto)) = (u16_at(frame, l3 + 2), frame.get(l3 + 9)) else {
                return false;
            };
            if b >> 4 != 4 || ihl < 20 {
                return false;
            }
            match proto {
                IPPROTO_ICMP | IPPROTO_IGMP | IPPROTO_UDP => true,
                IPPROTO_TCP => pure_ack(frame, l3 + ihl, usize::from(total).saturating_sub(ihl)),
                _ => false,
            }
        }
        Some(0x86dd) => {
            let (Some(&b), Some(payload), Some(&next)) =
                (frame.get(l3), u16_at(frame, l3 + 4), frame.get(l3 + 6))
            else {
                return false;
            };
            if b >> 4 != 6 {
                return false;
            }
            match next {
                IPPROTO_ICMPV6 | IPPROTO_UDP => true,
                IPPROTO_TCP => pure_ack(frame, l3 + 40, usize::from(payload)),
                _ => false,
            }
        }
        _ => false,
    }
}

/// A TCP segment at `l4` of `len` bytes (header and payload, from the IP
/// header's length) with no payload and only ACK/PSH/URG/ECE/CWR flags.
fn pure_ack(frame: &[u8], l4: usize, len: usize) -> bool {
    let (Some(&off), Some(&flags)) = (frame.get(l4 + 12), frame.get(l4 + 13)) else {
        return false;
    };
    let header = usize::from(off >> 4) * 4;
    header >= 20 && len == header && flags & TCP_SYN_FIN_RST == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = eth(0x0800);
        let total = (20 + l4.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0, 10, 77, 0, 1, 10, 77, 0, 2]);
        f.extend_from_slice(l4);
        f
    }

    fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = eth(0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        f.extend_from_slice(&[next, 64]);
        f.extend_from_slice(&[0xfd; 32]);
        f.extend_from_slice(l4);
        f
    }

    /// A TCP header of `words` 32-bit words with `flags`, then `payload`
    /// bytes.
    fn tcp(words: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut t = vec![0u8; usize::from(words) * 4];
        t[12] = words << 4;
        t[13] = flags;
        t.extend(std::iter::repeat_n(0xab, payload));
        t
    }

    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;

    #[test]
    fn small_frames_without_tcp_data_are_sparse() {
        assert!(is_sparse(&ipv4(IPPROTO_ICMP, &[8, 0, 0, 0, 0, 1, 0, 1])));
        assert!(is_sparse(&ipv4(IPPROTO_UDP, &[0; 40])));
        assert!(is_sparse(&ipv6(IPPROTO_ICMPV6, &[128, 0, 0, 0])));
        assert!(is_sparse(&ipv6(IPPROTO_UDP, &[0; 60])));
        let mut arp = eth(0x0806);
        arp.extend_from_slice(&[0; 28]);
        assert!(is_sparse(&arp));
        // Pure acknowledgements, with options (SACK, timestamps).
        assert!(is_sparse(&ipv4(IPPROTO_TCP, &tcp(5, ACK, 0))));
        assert!(is_sparse(&ipv4(IPPROTO_TCP, &tcp(11, ACK | 0x40, 0))));
        assert!(is_sparse(&ipv6(IPPROTO_TCP, &tcp(8, ACK, 0))));
        // Behind a VLAN tag.
        let mut tagged = eth(0x8100);
        tagged.extend_from_slice(&[0, 5, 0x08, 0x00]);
        tagged.extend_from_slice(&ipv4(IPPROTO_ICMP, &[8, 0, 0, 0])[ETH..]);
        assert!(is_sparse(&tagged));
    }

    #[test]
    fn tcp_data_handshakes_and_large_frames_stay_in_the_bulk_queue() {
        assert!(!is_sparse(&ipv4(IPPROTO_TCP, &tcp(5, ACK | PSH, 1))));
        assert!(!is_sparse(&ipv6(IPPROTO_TCP, &tcp(8, ACK, 40))));
        for flag in [0x02, 0x01, 0x04] {
            assert!(!is_sparse(&ipv4(IPPROTO_TCP, &tcp(5, ACK | flag, 0))));
        }
        assert!(!is_sparse(&ipv4(IPPROTO_UDP, &[0; 300])));
        assert!(!is_sparse(&ipv4(IPPROTO_ICMP, &[0; 1400])));
        // Other protocols and ethertypes, IPv6 extension headers.
        assert!(!is_sparse(&ipv4(47, &[0; 20])));
        assert!(!is_sparse(&ipv6(0, &[0; 20])));
        assert!(!is_sparse(&eth(0x88cc)));
    }

    #[test]
    fn truncated_and_inconsistent_frames_are_not_sparse() {
        let ping = ipv4(IPPROTO_ICMP, &[8, 0, 0, 0]);
        for n in 0..=ETH + 9 {
            assert!(!is_sparse(&ping[..n]), "{n} bytes");
        }
        let ack = ipv4(IPPROTO_TCP, &tcp(5, ACK, 0));
        for n in ETH + 20..ack.len() - 6 {
            assert!(!is_sparse(&ack[..n]), "{n} bytes");
        }
        // A TCP header shorter than 20 bytes, or longer than the packet.
        let mut bad = ipv4(IPPROTO_TCP, &tcp(5, ACK, 0));
        bad[ETH + 20 + 12] = 4 << 4;
        assert!(!is_sparse(&bad));
        bad[ETH + 20 + 12] = 15 << 4;
        assert!(!is_sparse(&bad));
        let mut not_v4 = ping.clone();
        not_v4[ETH] = 0x65;
        assert!(!is_sparse(&not_v4));
    }
}
