//! The machine's interface addresses (`getifaddrs(3)`): the one place the
//! agent reads them. The runtime re-reads them periodically and hands
//! them to the node core ([`ringlan_node::Node::set_interfaces`]), which
//! turns them into candidates.

use std::net::IpAddr;

use ringlan_node::candidates::{usable_local, LocalIf};

/// The up interfaces' usable addresses (getifaddrs), without `exclude`
/// (the TAP: its addresses are inside the overlay).
pub fn interface_addresses(exclude: &str) -> Vec<LocalIf> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as libc::c_uint == 0 {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() == exclude.as_bytes() {
            continue;
        }
        // SAFETY: the family says which sockaddr type it is; the netmask
        // has the same family when present.
        let (ip, prefix) = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    let ip = IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes());
                    let prefix = if ifa.ifa_netmask.is_null() {
                        32
                    } else {
                        let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in);
                        m.sin_addr.s_addr.count_ones() as u8
                    };
                    (ip, prefix)
                }
                libc::AF_INET6 => {
                    let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    let ip = IpAddr::from(a.sin6_addr.s6_addr);
                    let prefix = if ifa.ifa_netmask.is_null() {
                        128
                    } else {
                        let m = &*(ifa.ifa_netmask as *const libc::sockaddr_in6);
                        m.sin6_addr
                            .s6_addr
                            .iter()
                            .map(|b| b.count_ones())
                            .sum::<u32>() as u8
                    };
                    (ip, prefix)
                }
                _ => continue,
            }
        };
        if usable_local(ip) && !out.iter().any(|l: &LocalIf| l.ip == ip) {
            out.push(LocalIf { ip, prefix });
        }
    }
    // SAFETY: `head` came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_enumeration_skips_loopback_and_excluded() {
        let all = interface_addresses("");
        assert!(all.iter().all(|l| usable_local(l.ip)));
        assert!(all.iter().all(|l| l.prefix <= 128));
    }
}
