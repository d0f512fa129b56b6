//! The text form of certificates and revocation lists (`docs/membership.md`
//! 4), so they can be mailed, pasted into a terminal or a config:
//!
//! ```text
//! # any lines outside the block are ignored (ringlan writes a summary here)
//! -----BEGIN RINGLAN CERTIFICATE-----
//! 0104686f6d65...            (lowercase hex, 64 characters a line)
//! -----END RINGLAN CERTIFICATE-----
//! ```
//!
//! The label is `RINGLAN CERTIFICATE` or `RINGLAN REVOCATION LIST`. Hex
//! rather than base64: no dependency, and the bytes can be compared with
//! the vectors in the docs by eye.

use std::fmt::Write;

/// What an armoured block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Certificate,
    RevocationList,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Certificate => "RINGLAN CERTIFICATE",
            Kind::RevocationList => "RINGLAN REVOCATION LIST",
        }
    }

    fn from_label(s: &str) -> Option<Kind> {
        [Kind::Certificate, Kind::RevocationList]
            .into_iter()
            .find(|k| k.label() == s)
    }
}

/// Largest payload accepted, in bytes (a full revocation list fits).
pub const MAX_PAYLOAD: usize = 1 << 20;
const LINE: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArmorError {
    #[error("no `-----BEGIN RINGLAN ...-----` line")]
    NoBlock,
    #[error("unknown block `{0}`, expected RINGLAN CERTIFICATE or RINGLAN REVOCATION LIST")]
    UnknownLabel(String),
    #[error("line {0}: not hex")]
    NotHex(usize),
    #[error("no `-----END {0}-----` line")]
    Unterminated(&'static str),
    #[error("more than {MAX_PAYLOAD} bytes")]
    TooLong,
}

/// Armours `bytes`; `comments` become `# ` lines before the block.
pub fn encode(kind: Kind, bytes: &[u8], comments: &[String]) -> String {
    let mut s = String::new();
    for c in comments {
        for line in c.lines() {
            let _ = writeln!(s, "# {line}");
        }
    }
    let _ = writeln!(s, "-----BEGIN {}-----", kind.label());
    for chunk in bytes.chunks(LINE) {
        s.push_str(&super::hex(chunk));
        s.push('\n');
    }
    let _ = writeln!(s, "-----END {}-----", kind.label());
    s
}

/// The first armoured block in `text`; total.
pub fn decode(text: &str) -> Result<(Kind, Vec<u8>), ArmorError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let kind = loop {
        let (_, line) = lines.next().ok_or(ArmorError::NoBlock)?;
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            break Kind::from_label(label)
                .ok_or_else(|| ArmorError::UnknownLabel(label.to_string()))?;
        }
    };
    let end = format!("-----END {}-----", kind.label());
    let mut out = Vec::new();
    for (n, line) in lines {
        if line == end {
            return Ok((kind, out));
        }
        if line.len() % 2 != 0 {
            return Err(ArmorError::NotHex(n));
        }
        if out.len() + line.len() / 2 > MAX_PAYLOAD {
            return Err(ArmorError::TooLong);
        }
        for pair in line.as_bytes().chunks_exact(2) {
            let hi = char::from(pair[0]).to_digit(16);
            let lo = char::from(pair[1]).to_digit(16);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(ArmorError::NotHex(n));
            };
            out.push(u8::try_from(hi * 16 + lo).map_err(|_| ArmorError::NotHex(n))?);
        }
    }
    Err(ArmorError::Unterminated(kind.label()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout() {
        let bytes: Vec<u8> = (0..40).collect();
        let text = encode(Kind::Certificate, &bytes, &["node a".into()]);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("# node a"));
        assert_eq!(lines.next(), Some("-----BEGIN RINGLAN CERTIFICATE-----"));
        assert_eq!(lines.next().map(str::len), Some(64));
        assert_eq!(lines.next(), Some("2021222324252627"));
        assert_eq!(lines.next(), Some("-----END RINGLAN CERTIFICATE-----"));
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn errors() {
        assert_eq!(decode(""), Err(ArmorError::NoBlock));
        assert_eq!(
            decode("-----BEGIN RINGLAN X-----\n"),
            Err(ArmorError::UnknownLabel("RINGLAN X".into()))
        );
        assert_eq!(
            decode("-----BEGIN RINGLAN CERTIFICATE-----\n00\n"),
            Err(ArmorError::Unterminated("RINGLAN CERTIFICATE"))
        );
        assert_eq!(
            decode("x\n-----BEGIN RINGLAN CERTIFICATE-----\n0g\n"),
            Err(ArmorError::NotHex(3))
        );
        assert_eq!(
            decode("-----BEGIN RINGLAN REVOCATION LIST-----\n0\n"),
            Err(ArmorError::NotHex(2))
        );
        // A block ends with its own END line only.
        assert_eq!(
            decode("-----BEGIN RINGLAN CERTIFICATE-----\n-----END RINGLAN REVOCATION LIST-----\n"),
            Err(ArmorError::NotHex(2))
        );
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..300), list: bool) {
            let kind = if list { Kind::RevocationList } else { Kind::Certificate };
            let text = encode(kind, &bytes, &["a\nb".into()]);
            prop_assert_eq!(decode(&text), Ok((kind, bytes.clone())));
            // Pasted with CRLF and indentation.
            let pasted = text.replace('\n', "\r\n  ");
            prop_assert_eq!(decode(&pasted), Ok((kind, bytes)));
        }

        #[test]
        fn total(text in "\\PC{0,200}") {
            let _ = decode(&text);
        }
    }
}
