//! Bounds-checked byte cursors shared by every decoder and encoder in this
//! module. Nothing here indexes unchecked or panics.

use super::{vlu, WireError};

/// Reads fields from a borrowed buffer front to back.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        let (&b, rest) = self.buf.split_first().ok_or(WireError::Truncated)?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(WireError::Truncated)?;
        self.buf = rest;
        Ok(*head)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        self.array::<2>().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        self.array::<4>().map(u32::from_be_bytes)
    }

    pub(crate) fn vlu(&mut self) -> Result<u64, WireError> {
        let (v, n) = vlu::decode(self.buf)?;
        self.buf = self.buf.get(n..).ok_or(WireError::Truncated)?;
        Ok(v)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::BadLength);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A VLU length followed by that many bytes.
    pub(crate) fn vlu_bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.vlu()?;
        let len = usize::try_from(len).map_err(|_| WireError::BadLength)?;
        self.bytes(len)
    }

    /// Everything not yet read (`remainder()` in the spec).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.buf
    }
}

/// Writes fields into a caller buffer front to back.
pub(crate) struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&mut [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::BufferTooSmall)?;
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(WireError::BufferTooSmall)?;
        self.pos = end;
        Ok(dst)
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), WireError> {
        self.bytes(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), WireError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), WireError> {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn vlu(&mut self, v: u64) -> Result<(), WireError> {
        // Most values on the data path (flow ids, offsets, lengths of
        // acknowledgement fields) fit one byte.
        if v < 0x80 {
            return self.u8(v as u8);
        }
        let rest = self
            .buf
            .get_mut(self.pos..)
            .ok_or(WireError::BufferTooSmall)?;
        let n = vlu::encode(v, rest)?;
        self.pos += n;
        Ok(())
    }

    pub(crate) fn bytes(&mut self, src: &[u8]) -> Result<(), WireError> {
        self.take(src.len())?.copy_from_slice(src);
        Ok(())
    }

    pub(crate) fn fill(&mut self, n: usize, v: u8) -> Result<(), WireError> {
        self.take(n)?.fill(v);
        Ok(())
    }

    /// A VLU length followed by the bytes.
    pub(crate) fn vlu_bytes(&mut self, src: &[u8]) -> Result<(), WireError> {
        self.vlu(src.len() as u64)?;
        self.bytes(src)
    }
}

/// Encoded size of a VLU length prefix plus the bytes.
pub(crate) fn vlu_bytes_len(src: &[u8]) -> usize {
    vlu::encoded_len(src.len() as u64) + src.len()
}
