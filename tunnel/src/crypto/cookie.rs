//! RHello cookies (RFC 7016 3.5.1.1.2, 3.5.1.2) and the address mobility
//! check value (RFC 7016 3.5.4.2).

use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::label;
use crate::Rng;

type HmacSha256 = Hmac<Sha256>;

/// Length of a cookie.
pub const COOKIE_LEN: usize = 32;
/// Oldest cookie accepted, in seconds (RFC 7016 3.5.1.1.2 asks for at least
/// 95 s, the recommended open timeout).
pub const COOKIE_LIFETIME: u64 = 120;
/// Length of the mobility check value.
pub const MOBILITY_MAC_LEN: usize = 16;

/// Canonical address bytes for MACs: `4 || IPv4 (4) || port (2, BE)` or
/// `6 || IPv6 (16) || port (2, BE)`. IPv4-mapped IPv6 addresses count as
/// IPv4; flow info and scope id are not part of the address.
fn address_bytes(addr: SocketAddr) -> ([u8; 19], usize) {
    let mut out = [0u8; 19];
    let port = addr.port().to_be_bytes();
    let len = match addr.ip().to_canonical() {
        IpAddr::V4(ip) => {
            out[0] = 4;
            out[1..5].copy_from_slice(&ip.octets());
            out[5..7].copy_from_slice(&port);
            7
        }
        IpAddr::V6(ip) => {
            out[0] = 6;
            out[1..17].copy_from_slice(&ip.octets());
            out[17..19].copy_from_slice(&port);
            19
        }
    };
    (out, len)
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for p in parts {
        mac.update(p);
    }
    mac
}

/// Result of checking an echoed cookie (RFC 7016 3.5.1.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieCheck {
    /// Ours, fresh, made for this address.
    Valid,
    /// Ours and fresh, but made for another address: answer with an RHello
    /// Cookie Change (RFC 7016 3.5.1.2).
    WrongAddress,
    /// Not ours, malformed, from the future or expired: ignore the IIKeying.
    Invalid,
}

/// Makes and checks RHello cookies without per-initiator state (RFC 7016
/// 3.5.1.1.2). Layout of a cookie:
///
/// ```text
/// 0   8  t: timestamp, u64 BE seconds (the caller's clock)
/// 8   8  HMAC-SHA256(K, "ringlan/v1 cookie id" || t)[0..8]
/// 16 16  HMAC-SHA256(K, "ringlan/v1 cookie addr" || t || address)[0..16]
/// ```
///
/// The first tag says "ours" independent of the address, the second binds
/// the address. K is random per jar and zeroized on drop.
pub struct CookieJar {
    key: Zeroizing<[u8; 32]>,
}

impl CookieJar {
    pub fn new(rng: &mut Rng) -> CookieJar {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill(&mut key[..]);
        CookieJar { key }
    }

    /// A cookie for an IHello from `initiator` at time `now_secs`. The clock
    /// only has to be monotonic within this jar's lifetime (e.g. seconds
    /// since the endpoint started).
    pub fn make(&self, now_secs: u64, initiator: SocketAddr) -> [u8; COOKIE_LEN] {
        let t = now_secs.to_be_bytes();
        let (a, alen) = address_bytes(initiator);
        let mut c = [0u8; COOKIE_LEN];
        c[..8].copy_from_slice(&t);
        let id = hmac(&self.key, &[label::COOKIE_ID, &t])
            .finalize()
            .into_bytes();
        c[8..16].copy_from_slice(&id[..8]);
        let at = hmac(&self.key, &[label::COOKIE_ADDR, &t, &a[..alen]])
            .finalize()
            .into_bytes();
        c[16..32].copy_from_slice(&at[..16]);
        c
    }

    /// Check a cookie echoed in an IIKeying received from `from`.
    pub fn check(&self, now_secs: u64, from: SocketAddr, cookie: &[u8]) -> CookieCheck {
        let Ok(c) = <&[u8; COOKIE_LEN]>::try_from(cookie) else {
            return CookieCheck::Invalid;
        };
        let (t, rest) = c.split_at(8);
        let (id, addr_tag) = rest.split_at(8);
        if hmac(&self.key, &[label::COOKIE_ID, t])
            .verify_truncated_left(id)
            .is_err()
        {
            return CookieCheck::Invalid;
        }
        let mut tb = [0u8; 8];
        tb.copy_from_slice(t);
        let made = u64::from_be_bytes(tb);
        match now_secs.checked_sub(made) {
            Some(age) if age <= COOKIE_LIFETIME => {}
            _ => return CookieCheck::Invalid,
        }
        let (a, alen) = address_bytes(from);
        match hmac(&self.key, &[label::COOKIE_ADDR, t, &a[..alen]]).verify_truncated_left(addr_tag)
        {
            Ok(()) => CookieCheck::Valid,
            Err(_) => CookieCheck::WrongAddress,
        }
    }
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieJar(..)")
    }
}

/// The mobility check value (RFC 7016 3.5.4.2) for a Ping sent at `ts` to
/// `addr`: `HMAC-SHA256(MOB_SECRET, "ringlan/v1 mobility" || ts (u64 BE) ||
/// address)[0..16]`. MOB_SECRET is 32 random bytes known only to this end.
pub fn mobility_mac(secret: &[u8; 32], ts: u64, addr: SocketAddr) -> [u8; MOBILITY_MAC_LEN] {
    let (a, alen) = address_bytes(addr);
    let full = hmac(secret, &[label::MOBILITY, &ts.to_be_bytes(), &a[..alen]])
        .finalize()
        .into_bytes();
    let mut out = [0u8; MOBILITY_MAC_LEN];
    out.copy_from_slice(&full[..MOBILITY_MAC_LEN]);
    out
}

/// Constant-time check of a mobility value echoed in a Ping Reply from
/// `addr`. The caller still checks the timestamp's age and order.
pub fn mobility_check(secret: &[u8; 32], ts: u64, addr: SocketAddr, mac: &[u8]) -> bool {
    let (a, alen) = address_bytes(addr);
    mac.len() == MOBILITY_MAC_LEN
        && hmac(secret, &[label::MOBILITY, &ts.to_be_bytes(), &a[..alen]])
            .verify_truncated_left(mac)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cookie_valid_expired_wrong_address_forged() {
        let mut rng = Rng::from_seed([4; 32]);
        let jar = CookieJar::new(&mut rng);
        let a = addr("192.0.2.1:4910");
        let c = jar.make(1000, a);
        assert_eq!(c[..8], 1000u64.to_be_bytes());
        assert_eq!(jar.check(1000, a, &c), CookieCheck::Valid);
        assert_eq!(jar.check(1000 + 95, a, &c), CookieCheck::Valid);
        assert_eq!(jar.check(1000 + COOKIE_LIFETIME, a, &c), CookieCheck::Valid);
        assert_eq!(
            jar.check(1000 + COOKIE_LIFETIME + 1, a, &c),
            CookieCheck::Invalid
        );
        assert_eq!(jar.check(999, a, &c), CookieCheck::Invalid);
        assert_eq!(
            jar.check(1010, addr("192.0.2.1:4911"), &c),
            CookieCheck::WrongAddress
        );
        assert_eq!(
            jar.check(1010, addr("[2001:db8::1]:4910"), &c),
            CookieCheck::WrongAddress
        );
        // Expired beats wrong address.
        assert_eq!(
            jar.check(2000, addr("192.0.2.9:1"), &c),
            CookieCheck::Invalid
        );
        // Forged: any flipped bit, another jar, a moved timestamp, wrong length.
        for i in 0..COOKIE_LEN {
            let mut f = c;
            f[i] ^= 0x01;
            let r = jar.check(1000, a, &f);
            if i < 16 {
                assert_eq!(r, CookieCheck::Invalid, "byte {i}");
            } else {
                // The address tag is wrong: looks like a cookie for another address.
                assert_eq!(r, CookieCheck::WrongAddress, "byte {i}");
            }
        }
        let other = CookieJar::new(&mut rng);
        assert_eq!(other.check(1000, a, &c), CookieCheck::Invalid);
        assert_eq!(jar.check(1000, a, &c[..31]), CookieCheck::Invalid);
        assert_eq!(jar.check(1000, a, &[]), CookieCheck::Invalid);
    }

    #[test]
    fn v4_mapped_addresses_are_the_same_address() {
        let mut rng = Rng::from_seed([4; 32]);
        let jar = CookieJar::new(&mut rng);
        let c = jar.make(5, addr("192.0.2.1:4910"));
        assert_eq!(
            jar.check(5, addr("[::ffff:192.0.2.1]:4910"), &c),
            CookieCheck::Valid
        );
    }

    #[test]
    fn mobility_values() {
        let s = [9u8; 32];
        let a = addr("203.0.113.5:4000");
        let m = mobility_mac(&s, 77, a);
        assert!(mobility_check(&s, 77, a, &m));
        assert!(!mobility_check(&s, 78, a, &m));
        assert!(!mobility_check(&s, 77, addr("203.0.113.5:4001"), &m));
        assert!(!mobility_check(&[8u8; 32], 77, a, &m));
        assert!(!mobility_check(&s, 77, a, &m[..15]));
        let mut bad = m;
        bad[15] ^= 1;
        assert!(!mobility_check(&s, 77, a, &bad));
    }

    proptest! {
        #[test]
        fn check_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64), now in any::<u64>()) {
            let mut rng = Rng::from_seed([4; 32]);
            let jar = CookieJar::new(&mut rng);
            let r = jar.check(now, addr("192.0.2.1:1"), &bytes);
            prop_assert_eq!(r, CookieCheck::Invalid);
        }
    }
}
