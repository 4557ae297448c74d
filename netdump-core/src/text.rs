//! A fixed-size text buffer for formatting panic messages without an allocator.

/// Collects formatted text up to `N` bytes; the rest is cut at a character boundary.
pub struct TextBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> Default for TextBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TextBuf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        TextBuf { buf: [0; N], len: 0, truncated: false }
    }
    /// The text collected, as UTF-8 bytes (a cut never splits a character): what
    /// [`CrashInfo::panic`](crate::CrashInfo::panic) takes as the panic message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// The text collected.
    pub fn as_str(&self) -> &str {
        // Only whole characters are ever appended.
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
    /// True if text was cut since the last [`clear`](Self::clear).
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
    /// Empties the buffer and forgets an earlier cut, to format the next text into it.
    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }
}

impl<const N: usize> core::fmt::Write for TextBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn cuts_at_a_character_boundary() {
        let mut t = TextBuf::<5>::new();
        write!(t, "ab€cd").unwrap();
        assert_eq!(t.as_str(), "ab€");
        assert!(t.is_truncated());
    }
}
