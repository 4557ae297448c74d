//! LZ4 blocks for DATA (feature `compression`, wire feature `COMPRESSED`): the part of a
//! memory page that one packet can carry, compressed when that carries more of the page
//! than the raw bytes would.
//!
//! The unit is one block per packet, within one page: a lost or rejected packet costs
//! one packet's worth of page, and the server checks each block on its own (it must
//! decode to exactly its `raw_len`). The encoder is `lz4_flex`'s block encoder without
//! `alloc` and without `unsafe`; its hash table and output buffer are preallocated in
//! [`CrashBuffers`](super::CrashBuffers), never on the crash path's stack.

use lz4_flex::block::{CompressTable, compress_into_with_table, get_maximum_output_size};

use crate::memory::PAGE_SIZE;

/// Bytes of the encoder's output buffer: the worst case of one page.
pub const LZ4_SCRATCH: usize = get_maximum_output_size(PAGE_SIZE);

/// Prefix sizes tried when a whole page's block does not fit a packet.
const FIT_ATTEMPTS: usize = 3;

/// The encoder's working memory: a 4096-entry hash table of u16 positions (a block never
/// exceeds a page, so 16-bit positions suffice; `lz4_flex`'s table type reserves room for
/// its 32-bit variant, 16 KiB) and the output buffer: about 20.5 KiB in all.
pub struct Lz4Scratch {
    table: CompressTable,
    out: [u8; LZ4_SCRATCH],
}

impl Default for Lz4Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Lz4Scratch {
    /// Zeroed, usable in a `static` (with `lz4_flex` built without `alloc`, as this
    /// workspace builds it: the table is then an inline array).
    pub const fn new() -> Self {
        Lz4Scratch { table: CompressTable::small(), out: [0; LZ4_SCRATCH] }
    }
}

/// What the encoder made of the bytes offered for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// A block in the first `wire_len` bytes of the packet's data.
    Lz4 {
        /// Input bytes the block encodes (a prefix of the input).
        raw_len: usize,
        /// Bytes of the block.
        wire_len: usize,
    },
    /// A block would carry no more than raw bytes in this packet: send raw.
    Raw,
    /// The whole input does not shrink (random or encrypted memory): send the rest of
    /// this page raw without trying again.
    Incompressible,
}

impl Lz4Scratch {
    /// Encodes a prefix of `input` (at most a page) into `out` (the packet's data room)
    /// when that carries more input than `out.len()` raw bytes would.
    ///
    /// The whole input is tried first; when its block is too big for the packet, up to
    /// [`FIT_ATTEMPTS`] shorter prefixes, each sized from the ratio of the last try.
    pub fn encode(&mut self, input: &[u8], out: &mut [u8]) -> Block {
        let input = &input[..input.len().min(PAGE_SIZE)];
        let room = out.len();
        let Some(mut wire) = self.compress(input) else { return Block::Incompressible };
        if wire >= input.len() {
            return Block::Incompressible;
        }
        let mut take = input.len();
        for _ in 0..=FIT_ATTEMPTS {
            if wire <= room {
                out[..wire].copy_from_slice(&self.out[..wire]);
                return Block::Lz4 { raw_len: take, wire_len: wire };
            }
            // Scale the prefix to the room, with 1/8 slack: blocks do not shrink
            // exactly in proportion.
            take = take * room / wire * 7 / 8;
            if take <= room {
                break;
            }
            match self.compress(&input[..take]) {
                Some(n) => wire = n,
                None => break,
            }
        }
        Block::Raw
    }

    /// The block of `input` in `self.out`: its length.
    fn compress(&mut self, input: &[u8]) -> Option<usize> {
        compress_into_with_table(input, &mut self.out, &mut self.table).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page of text-like bytes: words from a small vocabulary.
    fn text_page() -> [u8; PAGE_SIZE] {
        let words: [&[u8]; 6] = [b"kernel ", b"panic ", b"task ", b"0x0000ffff ", b"sched ", b"\n"];
        let mut page = [0u8; PAGE_SIZE];
        let (mut i, mut w) = (0, 7u32);
        while i < PAGE_SIZE {
            w = w.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let word = words[(w >> 16) as usize % words.len()];
            let n = word.len().min(PAGE_SIZE - i);
            page[i..i + n].copy_from_slice(&word[..n]);
            i += n;
        }
        page
    }

    fn random_page(seed: u64) -> [u8; PAGE_SIZE] {
        let mut page = [0u8; PAGE_SIZE];
        let mut x = seed | 1;
        for b in page.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8;
        }
        page
    }

    #[test]
    fn a_compressible_page_round_trips_through_the_reference_decoder() {
        let mut lz4 = Lz4Scratch::new();
        let page = text_page();
        let mut out = [0u8; 1440];
        let Block::Lz4 { raw_len, wire_len } = lz4.encode(&page, &mut out) else { panic!("text did not compress") };
        assert!(raw_len > out.len(), "the block carries more than raw bytes would: {raw_len}");
        let mut back = vec![0u8; raw_len];
        let n = lz4_flex::block::decompress_into(&out[..wire_len], &mut back).unwrap();
        assert_eq!(n, raw_len);
        assert_eq!(&back[..], &page[..raw_len]);
    }

    #[test]
    fn a_block_too_big_for_the_packet_is_cut_to_a_prefix_that_fits() {
        let mut lz4 = Lz4Scratch::new();
        let page = text_page();
        // A small packet: the whole page's block does not fit.
        let mut out = [0u8; 300];
        let Block::Lz4 { raw_len, wire_len } = lz4.encode(&page, &mut out) else { panic!("no block") };
        assert!(raw_len < PAGE_SIZE && raw_len > 300 && wire_len <= 300, "{raw_len} in {wire_len}");
        let mut back = vec![0u8; raw_len];
        lz4_flex::block::decompress_into(&out[..wire_len], &mut back).unwrap();
        assert_eq!(&back[..], &page[..raw_len]);
    }

    #[test]
    fn random_memory_is_incompressible() {
        let mut lz4 = Lz4Scratch::new();
        let mut out = [0u8; 1440];
        assert_eq!(lz4.encode(&random_page(3), &mut out), Block::Incompressible);
    }

    #[test]
    fn a_block_no_longer_than_the_raw_room_is_sent_raw() {
        let mut lz4 = Lz4Scratch::new();
        // Half random (does not shrink), half zeros (shrinks to nothing): the block of the
        // page is about 2 KiB, and no prefix that fits 1 KiB carries more than 1 KiB.
        let mut page = random_page(9);
        page[PAGE_SIZE / 2..].fill(0);
        let mut out = [0u8; 1024];
        assert_eq!(lz4.encode(&page, &mut out), Block::Raw);
    }

    #[test]
    fn the_scratch_is_a_table_and_a_page_of_output() {
        let size = core::mem::size_of::<Lz4Scratch>();
        assert!(size <= 16384 + LZ4_SCRATCH + 192, "{size}");
    }
}
