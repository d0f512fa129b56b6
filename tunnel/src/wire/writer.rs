//! Building plain packets in place (RFC 7016 2.2.4, 2.3): a header followed
//! by as many chunks as fit, written straight into the caller's buffer.

use super::chunk::{Chunk, FragmentControl, CHUNK_HEADER_LEN, MAX_CHUNK_PAYLOAD};
use super::cursor::Writer;
use super::option::{option_list_encoded_len, write_option_list, UserDataOption};
use super::{vlu, PacketHeader, WireError};

/// The fields of a User Data chunk other than options and data
/// (RFC 7016 2.3.11), for [`PacketWriter::push_user_data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserDataFields {
    pub fragment_control: FragmentControl,
    pub abandon: bool,
    pub final_: bool,
    pub flow_id: u64,
    pub sequence_number: u64,
    pub fsn_offset: u64,
}

impl UserDataFields {
    fn forward_sequence_number(&self) -> Option<u64> {
        self.sequence_number.checked_sub(self.fsn_offset)
    }

    fn valid(&self) -> bool {
        self.sequence_number > 0
            && self.fsn_offset <= self.sequence_number
            && (self.fsn_offset > 0 || self.abandon)
    }
}

/// The (flow, sequence number, forward sequence number) of the last User
/// Data or Next User Data written, which a Next User Data continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserDataContext {
    flow_id: u64,
    sequence_number: u64,
    fsn: u64,
}

/// Writes one plain packet into `buf[start..start + limit]`: the header on
/// creation, then chunks while they fit. Nothing is allocated.
///
/// User Data written with [`PacketWriter::push_user_data`] is encoded as a
/// Next User Data chunk (RFC 7016 2.3.12) when it directly follows a (Next)
/// User Data chunk of the same flow with the next sequence number and the
/// same forward sequence number. Any other chunk in between resets that
/// context, so packets stay valid for receivers that track context
/// strictly.
pub struct PacketWriter<'b> {
    buf: &'b mut [u8],
    start: usize,
    end: usize,
    pos: usize,
    chunks: usize,
    context: Option<UserDataContext>,
}

impl<'b> PacketWriter<'b> {
    /// Start a packet at `buf[start..]` that may grow to `limit` bytes
    /// (header included), capped by the end of `buf`. Fails with
    /// [`WireError::BufferTooSmall`] if the header itself does not fit.
    pub fn new(
        buf: &'b mut [u8],
        start: usize,
        limit: usize,
        header: &PacketHeader,
    ) -> Result<Self, WireError> {
        let end = start.saturating_add(limit).min(buf.len());
        let window = buf.get_mut(start..end).ok_or(WireError::BufferTooSmall)?;
        let n = header.emit(window)?;
        Ok(PacketWriter {
            buf,
            start,
            end,
            pos: start + n,
            chunks: 0,
            context: None,
        })
    }

    /// Bytes still available for chunks.
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// Length of the plain packet written so far (header included).
    pub fn len(&self) -> usize {
        self.pos - self.start
    }

    /// Whether no chunk has been written yet.
    pub fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    /// Number of chunks written.
    pub fn chunk_count(&self) -> usize {
        self.chunks
    }

    /// The packet written so far.
    pub fn packet(&self) -> &[u8] {
        self.buf.get(self.start..self.pos).unwrap_or(&[])
    }

    /// Finish; returns the offset one past the packet's last byte (so the
    /// plain packet is `buf[start..returned]`).
    pub fn finish(self) -> usize {
        self.pos
    }

    fn window(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.pos..self.end).unwrap_or(&mut [])
    }

    /// Append `chunk` if it fits; returns whether it was written. A chunk
    /// that [`Chunk::emit`] rejects is never written.
    pub fn try_push(&mut self, chunk: &Chunk<'_>) -> bool {
        if chunk.encoded_len() > self.remaining() {
            return false;
        }
        match chunk.emit(self.window()) {
            Ok(n) => {
                self.advance(n);
                self.context = match chunk {
                    Chunk::UserData(ud) => Some(UserDataContext {
                        flow_id: ud.flow_id,
                        sequence_number: ud.sequence_number,
                        fsn: ud.forward_sequence_number(),
                    }),
                    // A Next User Data advances the context by one (2.3.12).
                    Chunk::NextUserData(_) => self.context.and_then(|c| {
                        Some(UserDataContext {
                            sequence_number: c.sequence_number.checked_add(1)?,
                            ..c
                        })
                    }),
                    _ => None,
                };
                true
            }
            Err(_) => false,
        }
    }

    /// Append a chunk produced by `write`, which gets the free space and
    /// returns the bytes it wrote (for example [`super::encode_ack`] or
    /// [`super::encode_ack_truncated`]). Returns `Some(bytes)` on success;
    /// on `Err` nothing is appended.
    pub fn push_with(
        &mut self,
        write: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
    ) -> Option<usize> {
        let remaining = self.remaining();
        match write(self.window()) {
            Ok(n) if n <= remaining => {
                self.advance(n);
                self.context = None;
                Some(n)
            }
            _ => None,
        }
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.chunks += 1;
    }

    fn continues(&self, f: &UserDataFields) -> bool {
        match (self.context, f.forward_sequence_number()) {
            (Some(c), Some(fsn)) => {
                c.flow_id == f.flow_id
                    && c.sequence_number.checked_add(1) == Some(f.sequence_number)
                    && c.fsn == fsn
            }
            _ => false,
        }
    }

    fn user_data_overhead(&self, f: &UserDataFields, options: &[UserDataOption<'_>]) -> usize {
        let opts = if options.is_empty() {
            0
        } else {
            option_list_encoded_len(options)
        };
        let ids = if self.continues(f) {
            0
        } else {
            vlu::encoded_len(f.flow_id)
                + vlu::encoded_len(f.sequence_number)
                + vlu::encoded_len(f.fsn_offset)
        };
        CHUNK_HEADER_LEN + 1 + ids + opts
    }

    /// The most user data bytes a [`PacketWriter::push_user_data`] with
    /// these fields and options could carry right now (0 if even an empty
    /// chunk would not fit).
    pub fn user_data_capacity(&self, f: &UserDataFields, options: &[UserDataOption<'_>]) -> usize {
        let overhead = self.user_data_overhead(f, options);
        self.remaining()
            .saturating_sub(overhead)
            .min(MAX_CHUNK_PAYLOAD.saturating_sub(overhead - CHUNK_HEADER_LEN))
    }

    /// Append a User Data chunk (or, when it continues the previous one, a
    /// Next User Data chunk) built directly from fields, typed options (an
    /// option list is written only if `options` is non-empty) and `data`.
    /// Returns false, writing nothing, if it does not fit or the fields
    /// break RFC 7016 2.3.11 (sequence number 0, fsnOffset greater than the
    /// sequence number, or fsnOffset 0 without abandon).
    pub fn push_user_data(
        &mut self,
        f: &UserDataFields,
        options: &[UserDataOption<'_>],
        data: &[u8],
    ) -> bool {
        if !f.valid() {
            return false;
        }
        let next = self.continues(f);
        let overhead = self.user_data_overhead(f, options);
        let total = match overhead.checked_add(data.len()) {
            Some(t) if t <= self.remaining() && t - CHUNK_HEADER_LEN <= MAX_CHUNK_PAYLOAD => t,
            _ => return false,
        };
        let Ok(len16) = u16::try_from(total - CHUNK_HEADER_LEN) else {
            return false;
        };
        let mut flags = (f.fragment_control as u8) << 4;
        if !options.is_empty() {
            flags |= 0x80;
        }
        if f.abandon {
            flags |= 0x02;
        }
        if f.final_ {
            flags |= 0x01;
        }
        let mut w = Writer::new(self.window());
        let written = (|| -> Result<usize, WireError> {
            w.u8(if next { 0x11 } else { 0x10 })?;
            w.u16(len16)?;
            w.u8(flags)?;
            if !next {
                w.vlu(f.flow_id)?;
                w.vlu(f.sequence_number)?;
                w.vlu(f.fsn_offset)?;
            }
            if !options.is_empty() {
                w.with_rest(|out| write_option_list(out, options))?;
            }
            w.bytes(data)?;
            Ok(w.pos())
        })();
        match written {
            Ok(n) => {
                debug_assert_eq!(n, total);
                self.advance(n);
                self.context = f.forward_sequence_number().map(|fsn| UserDataContext {
                    flow_id: f.flow_id,
                    sequence_number: f.sequence_number,
                    fsn,
                });
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::chunk::tests::UD_EXAMPLE;
    use crate::wire::packet::tests::arb_header;
    use crate::wire::{encode_ack, parse_packet, Chunk, ChunkIter, PacketMode};
    use proptest::prelude::*;

    fn fields(fra: FragmentControl, seq: u64) -> UserDataFields {
        UserDataFields {
            fragment_control: fra,
            abandon: false,
            final_: false,
            flow_id: 2,
            sequence_number: seq,
            fsn_offset: seq - 2,
        }
    }

    #[test]
    fn writes_spec_example_with_next_user_data() {
        let mut buf = [0xaa; 64];
        let header = PacketHeader::new(PacketMode::Initiator);
        let mut w = PacketWriter::new(&mut buf, 4, 100, &header).unwrap();
        assert!(w.is_empty());
        assert!(w.push_user_data(&fields(FragmentControl::Begin, 5), &[], &[0, 1, 2]));
        assert!(w.push_user_data(&fields(FragmentControl::Middle, 6), &[], &[3, 4, 5]));
        assert!(w.push_user_data(&fields(FragmentControl::End, 7), &[], &[6, 7, 8]));
        assert_eq!(w.chunk_count(), 3);
        assert_eq!(w.len(), 1 + UD_EXAMPLE.len());
        let end = w.finish();
        assert_eq!(buf[..4], [0xaa; 4], "bytes before start untouched");
        assert_eq!(buf[4], 0x01);
        assert_eq!(buf[5..end], UD_EXAMPLE);
        assert_eq!(buf[end], 0xaa, "bytes after the packet untouched");

        // Mixing try_push of a Next User Data keeps the context.
        let mut buf2 = [0u8; 64];
        let mut w = PacketWriter::new(&mut buf2, 0, 64, &header).unwrap();
        let chunks: Vec<Chunk<'_>> = ChunkIter::new(&UD_EXAMPLE)
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(w.try_push(&chunks[0]) && w.try_push(&chunks[1]));
        assert!(w.push_user_data(&fields(FragmentControl::End, 7), &[], &[6, 7, 8]));
        let end = w.finish();
        assert_eq!(buf2[1..end], UD_EXAMPLE);
    }

    #[test]
    fn context_resets_and_options() {
        let mut buf = [0u8; 256];
        let header = PacketHeader::new(PacketMode::Responder);
        let mut w = PacketWriter::new(&mut buf, 0, 256, &header).unwrap();
        let opts = [
            UserDataOption::UserMetadata(b"eth"),
            UserDataOption::ReturnFlowAssociation(9),
        ];
        assert!(w.push_user_data(&fields(FragmentControl::Whole, 5), &opts, b"a"));
        assert!(w.push_with(|out| encode_ack(3, 10, 4, &[], out)).is_some());
        // After another chunk the context is gone: full User Data again.
        assert!(w.push_user_data(&fields(FragmentControl::Whole, 6), &[], b"b"));
        // A gap in sequence numbers also needs full User Data.
        assert!(w.push_user_data(&fields(FragmentControl::Whole, 8), &[], b"c"));
        // Invalid fields are refused.
        assert!(!w.push_user_data(&fields(FragmentControl::Whole, 2), &[], b"d"));
        let end = w.finish();
        let (h, chunks) = parse_packet(&buf[..end]).unwrap();
        assert_eq!(h, header);
        let chunks: Vec<Chunk<'_>> = chunks.collect::<Result<_, _>>().unwrap();
        let types: Vec<u8> = chunks.iter().map(Chunk::chunk_type).collect();
        assert_eq!(types, [0x10, 0x51, 0x10, 0x10]);
        let Chunk::UserData(ud) = &chunks[0] else {
            panic!()
        };
        let opts_back: Vec<_> = ud
            .options_iter()
            .map(|r| r.and_then(|(t, v)| UserDataOption::from_raw(t, v)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(opts_back, opts);
    }

    #[test]
    fn respects_limit() {
        let mut buf = [0u8; 64];
        let header = PacketHeader::new(PacketMode::Initiator);
        assert!(PacketWriter::new(&mut buf, 64, 10, &header).is_err());
        let mut w = PacketWriter::new(&mut buf, 10, 20, &header).unwrap();
        assert_eq!(w.remaining(), 19);
        let f = fields(FragmentControl::Whole, 5);
        let cap = w.user_data_capacity(&f, &[]);
        assert_eq!(cap, 19 - 7);
        assert!(!w.push_user_data(&f, &[], &[0; 13]));
        assert!(!w.try_push(&Chunk::Ping { message: &[0; 17] }));
        assert_eq!(w.remaining(), 19);
        assert!(w.push_user_data(&f, &[], &[0; 12]));
        assert_eq!(w.remaining(), 0);
        assert!(!w.try_push(&Chunk::Close));
        assert!(w.push_with(|_| Err(WireError::BufferTooSmall)).is_none());
        assert_eq!(w.finish(), 30);
    }

    proptest! {
        #[test]
        fn writer_packs_chunks(header in arb_header(), chunks in proptest::collection::vec(crate::wire::chunk::tests::arb_chunk(), 0..8), limit in 1usize..600) {
            let mut buf = vec![0u8; 700];
            let Ok(mut w) = PacketWriter::new(&mut buf, 7, limit, &header) else {
                prop_assert!(limit < header.encoded_len());
                return Ok(());
            };
            let mut pushed = Vec::new();
            for c in &chunks {
                let fits = c.encoded_len() <= w.remaining();
                prop_assert_eq!(w.try_push(c), fits);
                if fits {
                    pushed.push(c.clone());
                }
            }
            let end = w.finish();
            prop_assert!(end - 7 <= limit);
            let (h, it) = parse_packet(&buf[7..end]).unwrap();
            prop_assert_eq!(h, header);
            let got: Vec<Chunk<'_>> = it.collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(got, pushed);
            let _ = ChunkIter::new(&[]);
        }
    }
}
