//! Anti-replay for explicit nonces (as IPsec's and WireGuard's, RFC 6479): a fixed
//! bitmap of the last [`ReplayWindow::WINDOW`] nonces below the highest seen.

const WORDS: usize = 32;
const BITS: u64 = WORDS as u64 * 64;

/// Which nonces of one direction of a session were received, so that each is accepted at
/// most once.
///
/// A nonce is accepted if it is above every nonce seen so far, or less than
/// [`WINDOW`](Self::WINDOW) below the highest and not seen yet; older ones are refused
/// (their packets were retransmitted long since under new nonces). Packets reordered
/// within the window are accepted. `u64::MAX` is never accepted (Noise reserves it).
///
/// Check with [`check`](Self::check) before decrypting, [`mark`](Self::mark) only
/// after the tag verified (so that a forged packet cannot burn a nonce or move the
/// window); [`check_and_mark`](Self::check_and_mark) does both at once. 264 bytes, no
/// allocation.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// One more than the highest nonce marked; 0 before the first.
    top: u64,
    /// Bit `n % BITS` is set once nonce `n` (within the window) was marked.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// How far below the highest nonce seen a nonce is still accepted: nonces
    /// `highest - WINDOW + 1 ..= highest` are tracked one by one.
    pub const WINDOW: u64 = BITS;

    /// A window that has seen no nonce.
    pub const fn new() -> Self {
        ReplayWindow { top: 0, bits: [0; WORDS] }
    }

    /// The highest nonce marked, if any.
    pub fn highest(&self) -> Option<u64> {
        self.top.checked_sub(1)
    }

    /// True if `nonce` would be accepted: new, and not too old. Changes nothing.
    pub fn check(&self, nonce: u64) -> bool {
        if nonce == u64::MAX {
            false
        } else if nonce >= self.top {
            true
        } else if self.top - nonce > Self::WINDOW {
            false
        } else {
            !self.bit(nonce)
        }
    }

    /// Records `nonce` as received (a nonce [`check`](Self::check) refuses is left as
    /// it is); the window moves up if it is the highest yet.
    pub fn mark(&mut self, nonce: u64) {
        if !self.check(nonce) {
            return;
        }
        if nonce >= self.top {
            // The bits of the nonces now entering the window still describe nonces
            // `BITS` lower, which leave it: clear them.
            if nonce - self.top >= BITS {
                self.bits = [0; WORDS];
            } else {
                for n in self.top..nonce {
                    self.clear_bit(n);
                }
            }
            self.top = nonce + 1;
        }
        let (word, bit) = Self::index(nonce);
        self.bits[word] |= bit;
    }

    /// [`check`](Self::check), then [`mark`](Self::mark) if accepted: for a caller
    /// that has already verified the packet's tag.
    pub fn check_and_mark(&mut self, nonce: u64) -> bool {
        let accepted = self.check(nonce);
        if accepted {
            self.mark(nonce);
        }
        accepted
    }

    fn index(nonce: u64) -> (usize, u64) {
        let i = nonce % BITS;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn bit(&self, nonce: u64) -> bool {
        let (word, bit) = Self::index(nonce);
        self.bits[word] & bit != 0
    }

    fn clear_bit(&mut self, nonce: u64) {
        let (word, bit) = Self::index(nonce);
        self.bits[word] &= !bit;
    }
}
