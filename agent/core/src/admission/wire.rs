//! Messages of the membership flow ([`crate::MEMBERSHIP_FLOW`],
//! `docs/membership.md` "The membership flow").
//!
//! ```text
//! off  len  field
//! 0    1    format version (1)
//! 1    1    type: 1 Credentials, 2 Refused, 3 Revocations
//! 2    ...  body
//!
//! Credentials  8 bytes: the sender's revocation list version, big-endian
//!              (0: none); 2 bytes: certificate length n, big-endian
//!              (0: no certificate); n bytes: the certificate
//!              (docs/membership.md 2), 1..=MAX_CERT bytes
//! Refused      1 byte: reason code (RefuseReason)
//! Revocations  the rest: a revocation list (docs/membership.md 3),
//!              1..=MAX_LIST bytes
//! ```
//!
//! The decoder is total and canonical: any input gives a message or an
//! error, and a decoded message encodes to the same bytes. Certificates
//! and lists travel as bytes; their own decoders and checks run on them
//! (and a malformed one is a reason to refuse, not a decoding error of the
//! message).

use std::fmt;

use crate::membership::revocation::MAX_REVOKED;

/// Format version of membership-flow messages.
pub const VERSION: u8 = 1;
const TYPE_CREDENTIALS: u8 = 1;
const TYPE_REFUSED: u8 = 2;
const TYPE_REVOCATIONS: u8 = 3;

/// Longest certificate a `Credentials` message carries. The largest valid
/// certificate is 1 + 1 + 32 + 32 + 32 + 1 + 63 + 1 + 8 + 8 + 1 + 32 x 18
/// + 64 = 820 bytes.
pub const MAX_CERT: usize = 1024;
/// Longest revocation list a `Revocations` message carries: the largest
/// list the decoder accepts (a 32-character network name and
/// [`MAX_REVOKED`] keys of 33 bytes each).
pub const MAX_LIST: usize = 1 + 1 + 32 + 32 + 8 + 8 + 2 + MAX_REVOKED * 33 + 64;
/// Longest message.
pub const MAX_MESSAGE: usize = 2 + MAX_LIST;

/// Why a node refuses a peer. Codes on the wire; both ends render them as
/// text ([`RefuseReason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefuseReason {
    /// 1: no certificate (or none within the admission timeout).
    NoCertificate,
    /// 2: issued by another CA, or a bad signature.
    NotOurCa,
    /// 3: for another network.
    OtherNetwork,
    /// 4: expired.
    Expired,
    /// 5: not yet valid.
    NotYetValid,
    /// 6: revoked by the newest revocation list.
    Revoked,
    /// 7: the certificate names another key than the one that signed the
    /// session's handshake.
    KeyMismatch,
    /// 8: a certificate or membership message that does not decode.
    Malformed,
    /// 9: more control messages before admission than a node holds.
    Overflow,
    /// A code this version does not know.
    Other(u8),
}

impl RefuseReason {
    /// Every reason this version sends, in code order.
    pub const ALL: [RefuseReason; 9] = [
        RefuseReason::NoCertificate,
        RefuseReason::NotOurCa,
        RefuseReason::OtherNetwork,
        RefuseReason::Expired,
        RefuseReason::NotYetValid,
        RefuseReason::Revoked,
        RefuseReason::KeyMismatch,
        RefuseReason::Malformed,
        RefuseReason::Overflow,
    ];

    pub fn code(self) -> u8 {
        match self {
            RefuseReason::NoCertificate => 1,
            RefuseReason::NotOurCa => 2,
            RefuseReason::OtherNetwork => 3,
            RefuseReason::Expired => 4,
            RefuseReason::NotYetValid => 5,
            RefuseReason::Revoked => 6,
            RefuseReason::KeyMismatch => 7,
            RefuseReason::Malformed => 8,
            RefuseReason::Overflow => 9,
            RefuseReason::Other(c) => c,
        }
    }

    pub fn from_code(c: u8) -> RefuseReason {
        RefuseReason::ALL
            .into_iter()
            .find(|r| r.code() == c)
            .unwrap_or(RefuseReason::Other(c))
    }

    /// A fixed label: counter names (`admission_<label>`) and log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::NoCertificate => "no_certificate",
            RefuseReason::NotOurCa => "not_our_ca",
            RefuseReason::OtherNetwork => "other_network",
            RefuseReason::Expired => "expired",
            RefuseReason::NotYetValid => "not_yet_valid",
            RefuseReason::Revoked => "revoked",
            RefuseReason::KeyMismatch => "key_mismatch",
            RefuseReason::Malformed => "malformed",
            RefuseReason::Overflow => "overflow",
            RefuseReason::Other(_) => "other",
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::NoCertificate => f.write_str("no certificate"),
            RefuseReason::NotOurCa => f.write_str("certificate not signed by this network's CA"),
            RefuseReason::OtherNetwork => f.write_str("certificate for another network"),
            RefuseReason::Expired => f.write_str("certificate expired"),
            RefuseReason::NotYetValid => f.write_str("certificate not yet valid"),
            RefuseReason::Revoked => f.write_str("certificate revoked"),
            RefuseReason::KeyMismatch => {
                f.write_str("certificate names another key than the session's")
            }
            RefuseReason::Malformed => f.write_str("malformed certificate or membership message"),
            RefuseReason::Overflow => f.write_str("too many messages before admission"),
            RefuseReason::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

/// One membership-flow message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Sent by both ends when the session opens.
    Credentials {
        /// The sender's certificate (encoded), if it has one.
        certificate: Option<Vec<u8>>,
        /// The version of the sender's newest revocation list (0: none).
        revocations_version: u64,
    },
    /// The sender refuses the session and closes it.
    Refused { reason: RefuseReason },
    /// A revocation list (encoded).
    Revocations { list: Vec<u8> },
}

/// Why bytes are not a membership message, or a message cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated")]
    Truncated,
    #[error("trailing bytes")]
    TrailingBytes,
    #[error("unsupported version {0}")]
    Version(u8),
    #[error("unknown message type {0}")]
    Type(u8),
    #[error("certificate of {0} bytes (at most {MAX_CERT})")]
    CertLength(usize),
    #[error("revocation list of {0} bytes (1 to {MAX_LIST})")]
    ListLength(usize),
}

impl Message {
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        let mut b = vec![VERSION];
        match self {
            Message::Credentials {
                certificate,
                revocations_version,
            } => {
                b.push(TYPE_CREDENTIALS);
                b.extend_from_slice(&revocations_version.to_be_bytes());
                let cert = certificate.as_deref().unwrap_or(&[]);
                if certificate.as_ref().is_some_and(|c| c.is_empty()) || cert.len() > MAX_CERT {
                    return Err(WireError::CertLength(cert.len()));
                }
                // cert.len() <= MAX_CERT < 2^16.
                b.extend_from_slice(&(cert.len() as u16).to_be_bytes());
                b.extend_from_slice(cert);
            }
            Message::Refused { reason } => {
                b.push(TYPE_REFUSED);
                b.push(reason.code());
            }
            Message::Revocations { list } => {
                if list.is_empty() || list.len() > MAX_LIST {
                    return Err(WireError::ListLength(list.len()));
                }
                b.push(TYPE_REVOCATIONS);
                b.extend_from_slice(list);
            }
        }
        Ok(b)
    }

    /// Total: any input gives a message or an error.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        let [version, kind, body @ ..] = bytes else {
            return Err(WireError::Truncated);
        };
        if *version != VERSION {
            return Err(WireError::Version(*version));
        }
        match *kind {
            TYPE_CREDENTIALS => {
                let (v, rest) = body.split_first_chunk::<8>().ok_or(WireError::Truncated)?;
                let (n, cert) = rest.split_first_chunk::<2>().ok_or(WireError::Truncated)?;
                let n = usize::from(u16::from_be_bytes(*n));
                if n > MAX_CERT {
                    return Err(WireError::CertLength(n));
                }
                match cert.len().cmp(&n) {
                    std::cmp::Ordering::Less => return Err(WireError::Truncated),
                    std::cmp::Ordering::Greater => return Err(WireError::TrailingBytes),
                    std::cmp::Ordering::Equal => {}
                }
                Ok(Message::Credentials {
                    certificate: (n > 0).then(|| cert.to_vec()),
                    revocations_version: u64::from_be_bytes(*v),
                })
            }
            TYPE_REFUSED => match body {
                [code] => Ok(Message::Refused {
                    reason: RefuseReason::from_code(*code),
                }),
                [] => Err(WireError::Truncated),
                _ => Err(WireError::TrailingBytes),
            },
            TYPE_REVOCATIONS => {
                if body.is_empty() || body.len() > MAX_LIST {
                    return Err(WireError::ListLength(body.len()));
                }
                Ok(Message::Revocations {
                    list: body.to_vec(),
                })
            }
            other => Err(WireError::Type(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The examples in docs/membership.md, byte for byte.
    #[test]
    fn golden_bytes() {
        let cases: [(Message, &[u8]); 4] = [
            (
                Message::Credentials {
                    certificate: None,
                    revocations_version: 0,
                },
                &[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ),
            (
                Message::Credentials {
                    certificate: Some(vec![0xc1, 0xc2, 0xc3]),
                    revocations_version: 3,
                },
                &[1, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 3, 0xc1, 0xc2, 0xc3],
            ),
            (
                Message::Refused {
                    reason: RefuseReason::Revoked,
                },
                &[1, 2, 6],
            ),
            (
                Message::Revocations {
                    list: vec![0xaa, 0xbb],
                },
                &[1, 3, 0xaa, 0xbb],
            ),
        ];
        for (m, bytes) in cases {
            assert_eq!(m.encode().unwrap(), bytes, "{m:?}");
            assert_eq!(Message::decode(bytes).unwrap(), m);
        }
    }

    #[test]
    fn malformed_messages_are_errors() {
        use WireError::*;
        let cases: [(&[u8], WireError); 10] = [
            (&[], Truncated),
            (&[1], Truncated),
            (&[2, 2, 6], Version(2)),
            (&[1, 4], Type(4)),
            (&[1, 1, 0, 0, 0, 0, 0, 0, 0], Truncated),
            (&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 9], Truncated),
            (&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], TrailingBytes),
            (
                &[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x04, 0x01],
                CertLength(1025),
            ),
            (&[1, 2, 6, 6], TrailingBytes),
            (&[1, 3], ListLength(0)),
        ];
        for (bytes, e) in cases {
            assert_eq!(Message::decode(bytes), Err(e), "{bytes:?}");
        }
        assert_eq!(Message::decode(&[1, 2]), Err(Truncated));
        let big = vec![0u8; MAX_LIST + 1];
        assert_eq!(
            Message::Revocations { list: big.clone() }.encode(),
            Err(ListLength(MAX_LIST + 1))
        );
        let mut m = vec![1, 3];
        m.extend_from_slice(&big);
        assert_eq!(Message::decode(&m), Err(ListLength(MAX_LIST + 1)));
        assert_eq!(
            Message::Credentials {
                certificate: Some(vec![]),
                revocations_version: 1
            }
            .encode(),
            Err(CertLength(0))
        );
    }

    #[test]
    fn reasons_round_trip_and_render() {
        for r in RefuseReason::ALL {
            assert_eq!(RefuseReason::from_code(r.code()), r);
            assert!(!r.to_string().is_empty());
        }
        assert_eq!(RefuseReason::from_code(0), RefuseReason::Other(0));
        assert_eq!(RefuseReason::from_code(200).to_string(), "reason code 200");
        assert_eq!(RefuseReason::Expired.as_str(), "expired");
    }

    /// The largest list the revocation decoder accepts fits `MAX_LIST`
    /// exactly, and fits a flow message.
    #[test]
    fn max_list_is_the_largest_list() {
        use crate::membership::revocation::{ListBody, Revoked};
        use crate::membership::SignedBody;
        use ringlan_tunnel::crypto::NetworkName;
        let net = NetworkName::new(&"n".repeat(32)).unwrap();
        let body = ListBody {
            revoked: (0..MAX_REVOKED as u32)
                .map(|i| {
                    let mut k = [0u8; 32];
                    k[..4].copy_from_slice(&i.to_be_bytes());
                    Revoked::Key(k)
                })
                .collect(),
            ..ListBody::first(net, 0)
        };
        let ca = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let list = body.sign(&ca).unwrap();
        assert_eq!(list.as_bytes().len(), MAX_LIST);
        let m = Message::Revocations {
            list: list.as_bytes().to_vec(),
        };
        assert_eq!(m.encode().unwrap().len(), MAX_MESSAGE);
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (
                proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=MAX_CERT)),
                any::<u64>()
            )
                .prop_map(|(certificate, revocations_version)| Message::Credentials {
                    certificate,
                    revocations_version
                }),
            any::<u8>().prop_map(|c| Message::Refused {
                reason: RefuseReason::from_code(c)
            }),
            proptest::collection::vec(any::<u8>(), 1..2000)
                .prop_map(|list| Message::Revocations { list }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(m in arb_message()) {
            let b = m.encode().unwrap();
            prop_assert_eq!(Message::decode(&b).unwrap(), m);
        }

        #[test]
        fn decode_is_total_and_canonical(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(m) = Message::decode(&b) {
                prop_assert_eq!(m.encode().unwrap(), b);
            }
        }
    }
}
