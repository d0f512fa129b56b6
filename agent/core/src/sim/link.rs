//! One link of the simulated network: delay, jitter, loss, duplication and
//! a datagram size limit. A datagram crosses a host's access link, and
//! between sites also each site's WAN link; every link decides on its own.

use std::time::Duration;

use ringlan_tunnel::Rng;

/// How one link treats datagrams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    /// One-way delay.
    pub delay: Duration,
    /// Extra uniformly random delay in [0, jitter): reorders datagrams.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram arrives twice.
    pub duplicate: f64,
    /// Datagrams longer than this are dropped (a path MTU); 0: no limit.
    pub max_datagram: usize,
}

impl LinkModel {
    /// A LAN or access link: 0.5 ms, lossless.
    pub fn lan() -> LinkModel {
        LinkModel {
            delay: Duration::from_micros(500),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            max_datagram: 0,
        }
    }

    /// A site's way into the internet: 10 ms, lossless.
    pub fn wan() -> LinkModel {
        LinkModel {
            delay: Duration::from_millis(10),
            ..LinkModel::lan()
        }
    }

    /// The same link losing `loss` of its datagrams.
    pub fn with_loss(self, loss: f64) -> LinkModel {
        LinkModel { loss, ..self }
    }

    /// The arrival delays of the copies of one `len`-byte datagram: none
    /// if it is lost or too big, two if duplicated.
    pub(super) fn cross(&self, rng: &mut Rng, len: usize, out: &mut Vec<Duration>) -> Crossing {
        out.clear();
        if self.max_datagram > 0 && len > self.max_datagram {
            return Crossing::TooBig;
        }
        if self.loss > 0.0 && rng.f64() < self.loss {
            return Crossing::Lost;
        }
        let copies = if self.duplicate > 0.0 && rng.f64() < self.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if self.jitter > Duration::ZERO {
                self.jitter.mul_f64(rng.f64())
            } else {
                Duration::ZERO
            };
            out.push(self.delay + jitter);
        }
        if copies == 2 {
            Crossing::Duplicated
        } else {
            Crossing::Passed
        }
    }
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel::lan()
    }
}

/// What a link did to a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Crossing {
    Passed,
    Duplicated,
    Lost,
    TooBig,
}
