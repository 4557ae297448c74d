//! The pattern test kernels write into RAM and the harness expects in the vmcore.
//!
//! Every 8-byte word is a hash of its physical address and a per-run seed, so a byte
//! that lands at the wrong address, a stale page or a page from another run is caught.
//! Inside the pattern region, every `zero_every`-th page is left all-zero (to exercise
//! the protocol's zero-page skipping); those pages must read back as zero.
//!
//! [`Realistic`] is the other image: what a kernel's RAM looks like (code, heap, log
//! text, page cache, user and free pages), for page filtering and compression.
#![cfg_attr(not(test), no_std)]

mod realistic;
pub use realistic::{BLOCK_PAGES, Class, Content, Realistic};

pub const PAGE: u64 = 4096;

/// Where the pattern lives and how it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    pub base: u64,
    pub len: u64,
    pub seed: u64,
    /// Every `zero_every`-th page (counting from the region's first page, the last of
    /// each group) is zero; 0 means no zero pages.
    pub zero_every: u64,
}

impl Pattern {
    /// Whether the page containing `addr` is one of the region's zero pages.
    pub fn is_zero_page(&self, addr: u64) -> bool {
        self.zero_every != 0 && ((addr - self.base) / PAGE) % self.zero_every == self.zero_every - 1
    }

    /// The expected 8-byte word at the 8-aligned address `addr` inside the region.
    pub fn word(&self, addr: u64) -> u64 {
        if self.is_zero_page(addr) {
            return 0;
        }
        let w = mix(addr ^ self.seed.rotate_left(17));
        // Never a whole zero word, so a hole can't pass for data.
        if w == 0 { 1 } else { w }
    }

    /// The expected byte at `addr`.
    pub fn byte(&self, addr: u64) -> u8 {
        self.word(addr & !7).to_le_bytes()[(addr & 7) as usize]
    }

    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr < self.base + self.len
    }
}

/// SplitMix64's finaliser: a fast bijective mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_depend_on_address_and_seed_and_zero_pages_are_zero() {
        let p = Pattern { base: 0x100_0000, len: 16 * PAGE, seed: 7, zero_every: 4 };
        assert_ne!(p.word(0x100_0000), p.word(0x100_0008));
        assert_ne!(p.word(0x100_0000), Pattern { seed: 8, ..p }.word(0x100_0000));
        assert!(p.is_zero_page(0x100_0000 + 3 * PAGE));
        assert!(!p.is_zero_page(0x100_0000 + 4 * PAGE));
        assert_eq!(p.word(0x100_0000 + 3 * PAGE + 8), 0);
        assert_eq!(p.byte(0x100_0001), p.word(0x100_0000).to_le_bytes()[1]);
    }
}
