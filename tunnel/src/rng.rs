//! Seeded randomness for the sans-IO core. Protocol logic never reads a
//! thread RNG: the driver seeds this from the OS, tests from a constant.

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};

/// A cryptographically strong, seedable random source.
pub struct Rng(ChaCha20Rng);

impl Rng {
    /// Deterministic generator for tests and simulations.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Rng(ChaCha20Rng::from_seed(seed))
    }

    /// Fill `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf)
    }

    pub fn u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform float in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A fresh 32-byte array.
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.fill(&mut b);
        b
    }
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rng(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_deterministic() {
        let mut a = Rng::from_seed([7; 32]);
        let mut b = Rng::from_seed([7; 32]);
        assert_eq!(a.u64(), b.u64());
        let x = a.f64();
        assert!((0.0..1.0).contains(&x));
        assert_eq!(x, b.f64());
    }
}
