//! The per-source token bucket that bounds how many startup packets
//! (IHello, IIKeying) and STUN requests the endpoint answers per source IP:
//! answering costs a cookie MAC or a signature check and a reply, so a
//! flood from one address must not buy unbounded work (RFC 7016 3.5.1.2,
//! 5.2 "denial of service").

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub(super) struct Limiter {
    pub(super) buckets: HashMap<IpAddr, (f64, Instant)>,
    pub(super) burst: f64,
    pub(super) rate: f64,
}

impl Limiter {
    const MAX_SOURCES: usize = 8192;

    pub(super) fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.buckets.len() >= Self::MAX_SOURCES && !self.buckets.contains_key(&ip) {
            // Forget sources idle long enough to have refilled.
            let full = Duration::from_secs_f64(self.burst / self.rate.max(0.001));
            self.buckets
                .retain(|_, (_, t)| now.saturating_duration_since(*t) < full);
            if self.buckets.len() >= Self::MAX_SOURCES {
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(ip).or_insert((self.burst, now));
        let dt = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + dt * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
