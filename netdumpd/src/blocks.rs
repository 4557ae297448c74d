//! Compressed DATA (feature `COMPRESSED`, docs/PROTOCOL.md "Compressed DATA"): an LZ4
//! block is decoded into a bounded buffer and must give exactly the `raw_len` bytes its
//! sub-header announces; anything else is rejected (and, not acknowledged, resent by the
//! client). The decoder is `lz4_flex`'s safe one: no `unsafe`, no write past the buffer.

use lz4_flex::block::decompress_into;
use netdump_core::proto::{Encoding, MAX_BLOCK};

/// Why a DATA packet's block was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// An LZ4 block from a client that was not granted `COMPRESSED`.
    NotGranted,
    /// Not a valid LZ4 block, or one that decodes to more than [`MAX_BLOCK`] bytes.
    Corrupt,
    /// A valid block whose length is not the announced one.
    WrongLength { announced: usize, decoded: usize },
}

impl std::fmt::Display for BlockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockError::NotGranted => f.write_str("LZ4 block without the COMPRESSED feature"),
            BlockError::Corrupt => f.write_str("LZ4 block does not decode"),
            BlockError::WrongLength { announced, decoded } => {
                write!(f, "LZ4 block decodes to {decoded} bytes, announced {announced}")
            }
        }
    }
}

/// The decoding buffer of one session (allocated at the first block, [`MAX_BLOCK`]).
#[derive(Debug, Default)]
pub struct BlockDecoder {
    buf: Vec<u8>,
}

impl BlockDecoder {
    /// Frees the buffer (the dump ended); a later block would allocate it again.
    pub fn release(&mut self) {
        self.buf = Vec::new();
    }

    /// The section bytes of a DATA packet whose data is `data`: `data` itself when raw,
    /// the decoded block when LZ4 (`granted`: the session may send blocks).
    pub fn section_bytes<'a>(
        &'a mut self,
        encoding: Encoding,
        data: &'a [u8],
        granted: bool,
    ) -> Result<&'a [u8], BlockError> {
        let raw_len = match encoding {
            Encoding::Raw => return Ok(data),
            Encoding::Lz4 { .. } if !granted => return Err(BlockError::NotGranted),
            Encoding::Lz4 { raw_len } => raw_len as usize,
        };
        if self.buf.len() < MAX_BLOCK {
            self.buf = vec![0; MAX_BLOCK];
        }
        let decoded = decompress_into(data, &mut self.buf).map_err(|_| BlockError::Corrupt)?;
        if decoded != raw_len {
            return Err(BlockError::WrongLength { announced: raw_len, decoded });
        }
        Ok(&self.buf[..decoded])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lz4_flex::block::{CompressTable, compress_into_with_table, get_maximum_output_size};

    fn block(input: &[u8]) -> Vec<u8> {
        let mut out = vec![0; get_maximum_output_size(input.len())];
        let n = compress_into_with_table(input, &mut out, &mut CompressTable::small()).unwrap();
        out.truncate(n);
        out
    }

    fn page() -> Vec<u8> {
        (0..4096u32).map(|i| (i / 64) as u8).collect()
    }

    #[test]
    fn a_block_decodes_to_its_announced_bytes() {
        let page = page();
        let b = block(&page);
        assert!(b.len() < 1000);
        let mut d = BlockDecoder::default();
        let got = d.section_bytes(Encoding::Lz4 { raw_len: 4096 }, &b, true).unwrap();
        assert_eq!(got, &page[..]);
    }

    #[test]
    fn raw_data_is_taken_as_it_is() {
        let mut d = BlockDecoder::default();
        assert_eq!(d.section_bytes(Encoding::Raw, b"abc", false).unwrap(), b"abc");
    }

    #[test]
    fn a_block_that_decodes_to_another_length_is_rejected() {
        let b = block(&page());
        let mut d = BlockDecoder::default();
        for announced in [4095, 4097, 1] {
            assert_eq!(
                d.section_bytes(Encoding::Lz4 { raw_len: announced }, &b, true),
                Err(BlockError::WrongLength { announced: announced as usize, decoded: 4096 })
            );
        }
    }

    #[test]
    fn a_corrupt_block_is_rejected() {
        let b = block(&page());
        let mut d = BlockDecoder::default();
        // Cut short: the last sequence's literals are missing.
        let cut = d.section_bytes(Encoding::Lz4 { raw_len: 4096 }, &b[..b.len() - 3], true);
        assert!(cut.is_err(), "{cut:?}");
        // A match offset pointing before the start of the output.
        let bad = [0x0f, 0x00, 0xff, 0xff, 0x00];
        assert_eq!(d.section_bytes(Encoding::Lz4 { raw_len: 19 }, &bad, true), Err(BlockError::Corrupt));
        // A block that decodes to more than the largest block: 70000 zeros.
        let big = block(&vec![0u8; 70_000]);
        assert_eq!(d.section_bytes(Encoding::Lz4 { raw_len: 65536 }, &big, true), Err(BlockError::Corrupt));
    }

    #[test]
    fn a_block_from_a_client_not_granted_compression_is_rejected() {
        let b = block(&page());
        let mut d = BlockDecoder::default();
        assert_eq!(d.section_bytes(Encoding::Lz4 { raw_len: 4096 }, &b, false), Err(BlockError::NotGranted));
    }
}
