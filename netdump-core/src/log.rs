//! The console log ring the kernel writes into; its last bytes travel with the dump.
//!
//! Lock-free: writers reserve bytes with one atomic add, so a CPU that panics while
//! another is printing never waits. Bytes are stored in `AtomicU8`s, so no `unsafe` is
//! needed and concurrent writers can interleave but never corrupt memory safety.
//! At crash time the dump [`freeze`](ConsoleLog::freeze)s the ring: later writes are
//! dropped (they still reach the serial console), so the log sent is stable.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

/// A ring of the last `N` console bytes. `N` must be a power of two.
pub struct ConsoleLog<const N: usize> {
    bytes: [AtomicU8; N],
    /// Total bytes ever written (the ring holds the last `min(head, N)`).
    head: AtomicUsize,
    frozen: AtomicBool,
}

impl<const N: usize> Default for ConsoleLog<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ConsoleLog<N> {
    /// An empty, unfrozen ring. Panics (at compile time, in a `static`) if `N` is not a power
    /// of two.
    pub const fn new() -> Self {
        assert!(N.is_power_of_two());
        ConsoleLog { bytes: [const { AtomicU8::new(0) }; N], head: AtomicUsize::new(0), frozen: AtomicBool::new(false) }
    }

    /// Appends console output. Never waits and never fails: callable from any CPU, from
    /// an interrupt or from the panic handler, concurrently with other writers (their
    /// bytes may interleave). Once `N` bytes are held the oldest are overwritten; after
    /// [`freeze`](Self::freeze) the bytes are dropped.
    pub fn write(&self, data: &[u8]) {
        if self.frozen.load(Ordering::Relaxed) {
            return;
        }
        let start = self.head.fetch_add(data.len(), Ordering::Relaxed);
        // Only the last N bytes of a huge write can survive anyway.
        let skip = data.len().saturating_sub(N);
        for (i, b) in data[skip..].iter().enumerate() {
            self.bytes[(start + skip + i) % N].store(*b, Ordering::Relaxed);
        }
    }

    /// Stops accepting writes so that the content is stable while it is dumped. One-way:
    /// nothing unfreezes the ring (the dump calls it through [`LogSource::freeze_len`]).
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

/// What the dump needs of a console log, independent of its size.
pub trait LogSource {
    /// Freezes the log and returns how many bytes it holds (at most its capacity).
    fn freeze_len(&self) -> usize;
    /// Copies held bytes starting `offset` bytes after the oldest held byte into `out`;
    /// returns how many were copied (fewer than `out.len()` near the end, 0 past it).
    fn read_at(&self, offset: usize, out: &mut [u8]) -> usize;
}

impl<const N: usize> LogSource for ConsoleLog<N> {
    fn freeze_len(&self) -> usize {
        self.freeze();
        self.head.load(Ordering::SeqCst).min(N)
    }

    fn read_at(&self, offset: usize, out: &mut [u8]) -> usize {
        let head = self.head.load(Ordering::SeqCst);
        let held = head.min(N);
        let oldest = head - held;
        let n = out.len().min(held.saturating_sub(offset));
        for (i, o) in out[..n].iter_mut().enumerate() {
            *o = self.bytes[(oldest + offset + i) % N].load(Ordering::Relaxed);
        }
        n
    }
}

impl<const N: usize> core::fmt::Write for &ConsoleLog<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all<const N: usize>(log: &ConsoleLog<N>) -> Vec<u8> {
        let len = log.freeze_len();
        let mut out = vec![0; len];
        assert_eq!(log.read_at(0, &mut out), len);
        out
    }

    #[test]
    fn keeps_everything_until_full() {
        let log = ConsoleLog::<16>::new();
        log.write(b"hello ");
        log.write(b"world");
        assert_eq!(read_all(&log), b"hello world");
    }

    #[test]
    fn keeps_the_last_n_bytes_after_wrapping() {
        let log = ConsoleLog::<8>::new();
        log.write(b"0123456789");
        log.write(b"ab");
        assert_eq!(read_all(&log), b"456789ab");
        let huge: Vec<u8> = (0..100u8).collect();
        let log = ConsoleLog::<8>::new();
        log.write(&huge);
        assert_eq!(read_all(&log), &huge[92..]);
    }

    #[test]
    fn freezing_drops_later_writes() {
        let log = ConsoleLog::<16>::new();
        log.write(b"before");
        assert_eq!(log.freeze_len(), 6);
        log.write(b"after");
        assert_eq!(read_all(&log), b"before");
    }

    #[test]
    fn reads_from_an_offset() {
        let log = ConsoleLog::<8>::new();
        log.write(b"0123456789");
        let mut out = [0; 4];
        assert_eq!(log.read_at(6, &mut out), 2);
        assert_eq!(&out[..2], b"89");
    }
}
