//! Network membership: the network name and the 32-byte network secret
//! (`docs/crypto-profile.md` 1), and the Default Session Key derived from them
//! (RFC 7016 2.2.3, 5).

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::label;
use crate::Rng;

/// Longest network name, in bytes.
pub const MAX_NAME_LEN: usize = 32;

/// A network name: 1-32 characters from `[a-z0-9-]`. It is carried in every
/// certificate and mixed into the Default Session Key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NetworkName(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("network name is empty")]
    Empty,
    #[error("network name is longer than 32 characters")]
    TooLong,
    #[error("network name may only contain a-z, 0-9 and '-'")]
    BadCharacter,
}

impl NetworkName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        Self::from_bytes(name.as_bytes())
    }

    /// Validate a name as found in a certificate.
    pub fn from_bytes(name: &[u8]) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if !name
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        {
            return Err(NameError::BadCharacter);
        }
        // Only ASCII passed the check above.
        Ok(NetworkName(name.iter().map(|&c| char::from(c)).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkName({})", self.0)
    }
}

impl std::str::FromStr for NetworkName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        NetworkName::new(s)
    }
}

/// The 32-byte secret that defines a network (`docs/crypto-profile.md` 1).
/// Zeroized on drop; `Debug` does not print it.
#[derive(Clone)]
pub struct NetworkSecret(Zeroizing<[u8; 32]>);

impl NetworkSecret {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        NetworkSecret(Zeroizing::new(bytes))
    }

    /// A fresh secret (for `ringlan secret`).
    pub fn generate(rng: &mut Rng) -> Self {
        let mut s = NetworkSecret(Zeroizing::new([0; 32]));
        rng.fill(&mut s.0[..]);
        s
    }

    /// The raw secret, for writing the secret file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The Default Session Key of network `name` (RFC 7016 2.2.3):
    /// `HKDF-SHA256(salt = "ringlan/v1", IKM = secret,
    /// info = "ringlan/v1 default session key" || len(name) || name)`, 32 bytes.
    pub fn default_session_key(&self, name: &NetworkName) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(Some(label::DSK_SALT), &self.0[..]);
        let mut okm = Zeroizing::new([0u8; 32]);
        // The name is at most 32 bytes, so the length fits a byte.
        let len = [name.as_bytes().len() as u8];
        expand(&hk, &[label::DSK_INFO, &len, name.as_bytes()], &mut okm[..]);
        okm
    }
}

impl fmt::Debug for NetworkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkSecret(..)")
    }
}

/// HKDF-Expand with `info` given in parts. Outputs here are at most 32
/// bytes, far below HKDF-SHA256's 8160-byte limit, so expansion cannot fail.
pub(crate) fn expand(hk: &Hkdf<Sha256>, info: &[&[u8]], okm: &mut [u8]) {
    if hk.expand_multi_info(info, okm).is_err() {
        unreachable!("HKDF-SHA256 output of {} bytes is within limits", okm.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(NetworkName::new("home").is_ok());
        assert!(NetworkName::new("a-1").is_ok());
        assert_eq!(NetworkName::new(""), Err(NameError::Empty));
        assert_eq!(NetworkName::new(&"a".repeat(33)), Err(NameError::TooLong));
        assert!(NetworkName::new(&"a".repeat(32)).is_ok());
        assert_eq!(NetworkName::new("Home"), Err(NameError::BadCharacter));
        assert_eq!(NetworkName::new("a b"), Err(NameError::BadCharacter));
        assert_eq!(
            NetworkName::from_bytes(&[0xc3, 0xa9]),
            Err(NameError::BadCharacter)
        );
    }

    #[test]
    fn default_key_depends_on_secret_and_name() {
        let s1 = NetworkSecret::from_bytes([1; 32]);
        let s2 = NetworkSecret::from_bytes([2; 32]);
        let home = NetworkName::new("home").unwrap();
        let work = NetworkName::new("work").unwrap();
        let k = s1.default_session_key(&home);
        assert_eq!(*k, *s1.default_session_key(&home));
        assert_ne!(*k, *s2.default_session_key(&home));
        assert_ne!(*k, *s1.default_session_key(&work));
        assert_eq!(format!("{s1:?}"), "NetworkSecret(..)");
    }
}
