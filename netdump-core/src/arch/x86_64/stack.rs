//! The crashing stack's code addresses, from the frame-pointer chain: what the CRASH
//! announcement carries for the server's crash signature (docs/PROTOCOL.md, CRASH).
//!
//! The walk follows `rbp`: each frame holds the caller's `rbp` at `[rbp]` and the return
//! address at `[rbp + 8]`. It needs code built with frame pointers
//! (`-C force-frame-pointers=yes`; the precompiled `core` has them). Where a function
//! keeps none, the walk skips it or stops early; it never reads outside what the kernel
//! declared readable and never takes more than [`MAX_FRAMES`] steps.

use crate::proto::MAX_FRAMES;

/// Up to [`MAX_FRAMES`] code addresses, innermost first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackTrace {
    frames: [u64; MAX_FRAMES],
    len: usize,
}

impl Default for StackTrace {
    fn default() -> Self {
        Self::new()
    }
}

impl StackTrace {
    /// An empty trace.
    pub const fn new() -> Self {
        StackTrace { frames: [0; MAX_FRAMES], len: 0 }
    }

    /// Appends a code address (e.g. the faulting `rip`); false when full.
    pub fn push(&mut self, addr: u64) -> bool {
        if self.len == MAX_FRAMES {
            return false;
        }
        self.frames[self.len] = addr;
        self.len += 1;
        true
    }

    /// The addresses recorded, innermost first.
    pub fn as_slice(&self) -> &[u64] {
        &self.frames[..self.len]
    }

    /// Appends the return addresses of the frame-pointer chain that starts at `rbp`,
    /// until the trace is full or the chain ends: a frame pointer that is zero,
    /// misaligned, not `readable`, or not above the previous one (stacks grow down, so
    /// every caller's frame lies higher), or a zero return address.
    ///
    /// # Safety
    /// `readable(addr)` may return true only when the 16 bytes at `addr` can be read
    /// (mapped, no side effects) — typically "inside one of the kernel's stacks, not in a
    /// guard page".
    pub unsafe fn walk_frame_pointers(&mut self, mut rbp: u64, readable: impl Fn(u64) -> bool) {
        while self.len < MAX_FRAMES {
            if rbp == 0 || !rbp.is_multiple_of(8) || rbp.checked_add(16).is_none() || !readable(rbp) {
                return;
            }
            // SAFETY: `rbp` is non-null and 8-byte aligned, and the caller vouched that
            // the 16 bytes at it are readable. Volatile: the values are whatever the
            // crashed code left there, not something the compiler may assume about.
            let (caller_rbp, ret) = unsafe {
                let p = rbp as *const u64;
                (core::ptr::read_volatile(p), core::ptr::read_volatile(p.add(1)))
            };
            if ret == 0 {
                return;
            }
            self.push(ret);
            if caller_rbp <= rbp {
                return;
            }
            rbp = caller_rbp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake stack of `words` u64; frame `i` of `chain` is at word index `chain[i]`.
    fn stack_with_chain(chain: &[usize], words: usize) -> Vec<u64> {
        let mut stack = vec![0u64; words];
        let base = stack.as_ptr() as u64;
        for (i, &at) in chain.iter().enumerate() {
            let caller = chain.get(i + 1).map_or(0, |&c| base + c as u64 * 8);
            stack[at] = caller;
            stack[at + 1] = 0x10_0000 + i as u64 * 0x10;
        }
        stack
    }

    fn inside(stack: &[u64]) -> impl Fn(u64) -> bool + '_ {
        let start = stack.as_ptr() as u64;
        let end = start + stack.len() as u64 * 8;
        move |a| a >= start && a + 16 <= end
    }

    #[test]
    fn follows_the_chain_to_its_end() {
        let stack = stack_with_chain(&[2, 10, 30], 64);
        let mut t = StackTrace::new();
        t.push(0xabc);
        // SAFETY: `inside` admits only addresses within `stack`.
        unsafe { t.walk_frame_pointers(stack.as_ptr() as u64 + 16, inside(&stack)) };
        assert_eq!(t.as_slice(), &[0xabc, 0x10_0000, 0x10_0010, 0x10_0020]);
    }

    #[test]
    fn stops_at_unreadable_looping_or_descending_frames() {
        // The chain leaves the readable area after two frames.
        let mut stack = stack_with_chain(&[2, 10], 64);
        stack[10] = 0x8000_0000_0000; // caller rbp far away
        let mut t = StackTrace::new();
        // SAFETY: as above.
        unsafe { t.walk_frame_pointers(stack.as_ptr() as u64 + 16, inside(&stack)) };
        assert_eq!(t.as_slice(), &[0x10_0000, 0x10_0010]);

        // A frame that points at itself or below ends the walk after its return address.
        let mut stack = stack_with_chain(&[4, 12], 64);
        stack[12] = stack.as_ptr() as u64 + 4 * 8;
        let mut t = StackTrace::new();
        // SAFETY: as above.
        unsafe { t.walk_frame_pointers(stack.as_ptr() as u64 + 32, inside(&stack)) };
        assert_eq!(t.as_slice(), &[0x10_0000, 0x10_0010]);
    }

    #[test]
    fn never_takes_more_than_sixteen_frames() {
        let chain: Vec<usize> = (0..40).map(|i| i * 2).collect();
        let stack = stack_with_chain(&chain, 128);
        let mut t = StackTrace::new();
        // SAFETY: as above.
        unsafe { t.walk_frame_pointers(stack.as_ptr() as u64, inside(&stack)) };
        assert_eq!(t.as_slice().len(), MAX_FRAMES);
        assert!(!t.push(1));
    }

    #[test]
    fn a_misaligned_or_null_frame_pointer_reads_nothing() {
        let mut t = StackTrace::new();
        // SAFETY: null and misaligned frame pointers are refused before `readable` is
        // asked, so nothing is read.
        unsafe {
            t.walk_frame_pointers(0, |_| true);
            t.walk_frame_pointers(0x1003, |_| true);
        }
        assert!(t.as_slice().is_empty());
    }
}
