//! Datagrams framed on a byte stream: how RTMFP packets cross a TCP
//! connection when UDP is blocked (docs/tcp.md).
//!
//! Each datagram is a 2-byte big-endian length followed by that many
//! bytes; lengths 1..=[`MAX_FRAMED`] are valid. A zero or larger length is
//! a protocol error: the stream is not ours (or is corrupt) and the
//! connection is closed, since framing cannot be recovered after it.
//!
//! [`Deframer`] is the sans-IO decoder: feed it what `read` returned, take
//! whole datagrams out. It never holds more than one partial datagram
//! (`2 + MAX_FRAMED` bytes), whatever it is fed; it is total (no panic on
//! any input; fuzz target `stream_deframe` in `tunnel/fuzz`).

/// Largest datagram carried (the driver's receive limit; RTMFP packets
/// never exceed the path MTU).
pub const MAX_FRAMED: usize = 2048;
/// Bytes of the length prefix.
pub const FRAME_HEADER: usize = 2;

/// The stream carried something that is not a framed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingError {
    /// The length prefix read.
    pub length: usize,
}

impl std::fmt::Display for FramingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "framed datagram of {} bytes (valid: 1..={MAX_FRAMED})",
            self.length
        )
    }
}

impl std::error::Error for FramingError {}

/// Appends `datagram` framed to `out`. Refuses an empty or oversized
/// datagram (nothing appended).
pub fn encode_frame(datagram: &[u8], out: &mut Vec<u8>) -> Result<(), FramingError> {
    let length = datagram.len();
    if length == 0 || length > MAX_FRAMED {
        return Err(FramingError { length });
    }
    out.extend_from_slice(&(length as u16).to_be_bytes());
    out.extend_from_slice(datagram);
    Ok(())
}

/// Splits a byte stream back into datagrams.
#[derive(Debug, Default)]
pub struct Deframer {
    /// Bytes of the datagram being assembled, its header included.
    partial: Vec<u8>,
    /// Set after a framing error: everything further is refused.
    failed: Option<FramingError>,
}

impl Deframer {
    pub fn new() -> Deframer {
        Deframer::default()
    }

    /// Feeds `bytes` and calls `datagram` with every whole datagram they
    /// complete, in order. After an error the deframer refuses everything
    /// (the stream must be closed).
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        mut datagram: impl FnMut(&mut [u8]),
    ) -> Result<(), FramingError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        while !bytes.is_empty() {
            // The header first, then the body; `partial` holds at most one
            // datagram's header and body.
            let need = match self.wanted() {
                Ok(n) => n,
                Err(e) => {
                    self.failed = Some(e);
                    self.partial = Vec::new();
                    return Err(e);
                }
            };
            let take = need.min(bytes.len());
            let (now, rest) = bytes.split_at(take);
            self.partial.extend_from_slice(now);
            bytes = rest;
            if self.partial.len() > FRAME_HEADER && self.wanted() == Ok(0) {
                datagram(&mut self.partial[FRAME_HEADER..]);
                self.partial.clear();
            }
        }
        // A header completed by the last bytes may already be invalid.
        if let Err(e) = self.wanted() {
            self.failed = Some(e);
            self.partial = Vec::new();
            return Err(e);
        }
        Ok(())
    }

    /// Bytes still wanted for the current datagram (header or body).
    fn wanted(&self) -> Result<usize, FramingError> {
        let have = self.partial.len();
        if have < FRAME_HEADER {
            return Ok(FRAME_HEADER - have);
        }
        let length = usize::from(u16::from_be_bytes([self.partial[0], self.partial[1]]));
        if length == 0 || length > MAX_FRAMED {
            return Err(FramingError { length });
        }
        Ok(FRAME_HEADER + length - have)
    }

    /// Bytes held for an incomplete datagram.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &mut Deframer, bytes: &[u8]) -> Result<Vec<Vec<u8>>, FramingError> {
        let mut out = Vec::new();
        d.feed(bytes, |g| out.push(g.to_vec()))?;
        Ok(out)
    }

    #[test]
    fn golden_bytes() {
        let mut out = vec![0xee];
        encode_frame(b"abc", &mut out).unwrap();
        assert_eq!(out, [0xee, 0x00, 0x03, b'a', b'b', b'c']);
    }

    #[test]
    fn frames_split_anywhere_come_back_whole_and_in_order() {
        let mut stream = Vec::new();
        let grams: Vec<Vec<u8>> = (1..40u8).map(|i| vec![i; usize::from(i) * 37]).collect();
        for g in &grams {
            encode_frame(g, &mut stream).unwrap();
        }
        for step in [1, 2, 3, 7, 500, stream.len()] {
            let mut d = Deframer::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                got.extend(all(&mut d, chunk).unwrap());
            }
            assert_eq!(got, grams, "fed {step} bytes at a time");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn largest_datagram_passes_and_one_more_byte_is_refused() {
        let mut stream = Vec::new();
        encode_frame(&[7; MAX_FRAMED], &mut stream).unwrap();
        assert_eq!(
            all(&mut Deframer::new(), &stream).unwrap(),
            vec![vec![7; MAX_FRAMED]]
        );
        let mut out = Vec::new();
        assert_eq!(
            encode_frame(&[7; MAX_FRAMED + 1], &mut out),
            Err(FramingError {
                length: MAX_FRAMED + 1
            })
        );
        assert_eq!(encode_frame(&[], &mut out), Err(FramingError { length: 0 }));
        assert!(out.is_empty());
    }

    #[test]
    fn impossible_lengths_fail_the_stream_for_good() {
        for header in [[0u8, 0], [0x08, 0x01], [0xff, 0xff]] {
            let mut d = Deframer::new();
            assert!(all(&mut d, &header).is_err());
            // Nothing after it is accepted, even a valid frame.
            assert!(all(&mut d, &[0, 1, 9]).is_err());
            assert_eq!(d.pending(), 0);
        }
        // A valid datagram before the bad header is still delivered.
        let mut d = Deframer::new();
        let mut got = Vec::new();
        let r = d.feed(&[0, 1, 42, 0, 0], |g| got.push(g.to_vec()));
        assert!(r.is_err());
        assert_eq!(got, vec![vec![42]]);
    }

    #[test]
    fn memory_is_bounded_by_one_datagram() {
        let mut d = Deframer::new();
        let mut stream = Vec::new();
        encode_frame(&[1; MAX_FRAMED], &mut stream).unwrap();
        all(&mut d, &stream[..stream.len() - 1]).unwrap();
        assert_eq!(d.pending(), FRAME_HEADER + MAX_FRAMED - 1);
        assert!(d.partial.capacity() <= 2 * (FRAME_HEADER + MAX_FRAMED));
    }
}
