//! Big-endian field reader and writer over a byte slice, bounds-checked so that a
//! short payload is an error, never a panic.

use super::ProtoError;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).ok_or(ProtoError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(ProtoError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut a = [0; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// The unread rest.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    /// Fails unless everything was read.
    pub fn finish(&self) -> Result<(), ProtoError> {
        if self.pos == self.buf.len() { Ok(()) } else { Err(ProtoError::LengthMismatch) }
    }
}

/// Writer over a buffer the caller sized with the repr's `wire_len()`; writing past
/// the end is a programming error, caught by a debug assertion in tests. In a release
/// build such a write is left out rather than a panic: every field would otherwise carry
/// a bounds check that calls the panic machinery, in every encoder the crash path links
/// (docs/PERFORMANCE.md, "Footprint").
pub(crate) struct Writer<'a> {
    /// What is left to write.
    rest: &'a mut [u8],
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { rest: buf }
    }
    /// The next `n` bytes, advancing past them; `None` when they do not fit.
    fn take(&mut self, n: usize) -> Option<&'a mut [u8]> {
        debug_assert!(n <= self.rest.len(), "{n} bytes written with {} left", self.rest.len());
        let (head, tail) = core::mem::take(&mut self.rest).split_at_mut_checked(n)?;
        self.rest = tail;
        Some(head)
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        if let Some(out) = self.take(b.len()) {
            out.copy_from_slice(b);
        }
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }
    /// Each word big-endian, through [`put_words`]'s one loop.
    pub fn words(&mut self, words: &[u64]) -> &mut Self {
        if let Some(out) = self.take(words.len() * 8) {
            put_words(words, out);
        }
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        if let Some(out) = self.take(n) {
            out.fill(0);
        }
        self
    }
}

/// Writes `words` big-endian at the start of `out`, as many as fit: the one loop behind
/// every register record layout and CRASH's tables, out of line so that no caller gets
/// it unrolled into 32 or 40 stores (docs/PERFORMANCE.md, "Footprint"). They are
/// written once per dump: the word goes through `black_box` so that opt-level 3 keeps
/// the plain loop (its vectorised form was four times the size).
#[inline(never)]
pub(crate) fn put_words(words: &[u64], out: &mut [u8]) {
    for (bytes, word) in out.chunks_exact_mut(8).zip(words) {
        bytes.copy_from_slice(&core::hint::black_box(*word).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_writes_fields_big_endian_in_order() {
        let mut out = [0xa5u8; 17];
        Writer::new(&mut out).u8(1).u16(0x0203).u32(0x0405_0607).u64(0x0809_0a0b_0c0d_0e0f).zeros(1).bytes(&[0x10]);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 0x10]);
    }

    #[test]
    #[should_panic(expected = "written with 3 left")]
    fn writing_past_the_end_is_caught_in_tests() {
        let mut out = [0u8; 7];
        Writer::new(&mut out).u32(1).u32(2);
    }
}
