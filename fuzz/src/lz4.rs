//! `lz4_blocks`: netdumpd's decoding of compressed DATA (`netdumpd::blocks`), and the
//! client's encoder against it.
//!
//! The first byte picks the mode:
//! - bit 0 clear — **decode**: bytes 1..5 are the sub-header's `encoding` byte and the
//!   low 24 bits of `raw length` (big-endian), the rest is the block as a packet would
//!   carry it. The encoding is parsed as netdumpd parses it; a block that passes must have
//!   decoded to exactly its announced length, and those bytes must survive a round trip
//!   through the client's encoder.
//! - bit 0 set — **round trip**: the rest (at most a page) is memory; the client's
//!   encoder (`netdump_core::client::Lz4Scratch`) packs it into a packet of
//!   `64 + byte 1 × 8` bytes, and whatever block it makes must decode, on the server, to
//!   exactly the prefix it claims.

use netdump_core::client::Lz4Scratch;
use netdump_core::proto::{Data, Encoding, Section};
use netdumpd::blocks::{BlockDecoder, BlockError};

/// One input through the target.
pub fn lz4_blocks(input: &[u8]) {
    let Some((&mode, rest)) = input.split_first() else { return };
    if mode & 1 == 0 { decode(rest) } else { round_trip(rest) }
}

fn decode(input: &[u8]) {
    if input.len() < 4 {
        return;
    }
    let (head, block) = input.split_at(4);
    if block.is_empty() {
        return;
    }
    let mut payload = vec![0u8; Data::SUBHEADER_LEN];
    Data::emit_subheader(Section::Memory, 0x1000, &mut payload);
    payload[1] = head[0];
    payload[5..8].copy_from_slice(&head[1..4]);
    payload.extend_from_slice(block);
    let Ok(encoding) = Encoding::parse(&payload) else { return };
    let data = Data::parse(&payload).expect("a DATA with data");
    let mut decoder = BlockDecoder::default();
    let bytes = match decoder.section_bytes(encoding, data.data, true) {
        Ok(bytes) => bytes.to_vec(),
        Err(BlockError::Corrupt | BlockError::WrongLength { .. }) => return,
        Err(BlockError::NotGranted) => unreachable!("granted"),
    };
    assert_eq!(bytes.len(), encoding.section_len(block.len()), "decoded to its announced length");
    if let Encoding::Lz4 { .. } = encoding
        && bytes.len() <= 4096
    {
        round_trip_with(&bytes, 1472);
    }
    // A block never passes for a client that was not granted compression.
    if encoding != Encoding::Raw {
        assert_eq!(decoder.section_bytes(encoding, data.data, false), Err(BlockError::NotGranted));
    }
}

fn round_trip(input: &[u8]) {
    let Some((&size, memory)) = input.split_first() else { return };
    let memory = &memory[..memory.len().min(4096)];
    if memory.is_empty() {
        return;
    }
    round_trip_with(memory, 64 + usize::from(size) * 8);
}

/// Encodes `memory` into a packet of `room` bytes as the client does; a block must
/// decode on the server to the prefix it stands for.
fn round_trip_with(memory: &[u8], room: usize) {
    let mut lz4 = Box::new(Lz4Scratch::new());
    let mut out = vec![0u8; room];
    if let netdump_core::client::Block::Lz4 { raw_len, wire_len } = lz4.encode(memory, &mut out) {
        assert!(wire_len <= room && raw_len <= memory.len() && raw_len > room);
        let mut decoder = BlockDecoder::default();
        let encoding = Encoding::Lz4 { raw_len: raw_len as u32 };
        let bytes = decoder.section_bytes(encoding, &out[..wire_len], true).expect("the client's block decodes");
        assert_eq!(bytes, &memory[..raw_len], "the block decodes to the bytes it was made of");
    }
}

/// Seeds: a page's block, the same announced one byte short, a block cut short, raw
/// data, and round trips of text, zeros and random bytes.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let page: Vec<u8> = (0..4096u32).map(|i| (i / 64) as u8 ^ (i % 7) as u8).collect();
    let mut lz4 = Box::new(Lz4Scratch::new());
    let mut out = vec![0u8; 4096];
    let netdump_core::client::Block::Lz4 { wire_len, .. } = lz4.encode(&page, &mut out) else {
        unreachable!("the seed page compresses")
    };
    let block = &out[..wire_len];
    let decode_seed = |encoding: u8, raw_len: u32, block: &[u8]| {
        let mut v = vec![0u8, encoding];
        v.extend_from_slice(&raw_len.to_be_bytes()[1..]);
        v.extend_from_slice(block);
        v
    };
    let text: Vec<u8> = b"task 17 state S wchan poll_schedule_timeout\n".repeat(60);
    let random: Vec<u8> = (0..2048u64).map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8).collect();
    let trip = |size: u8, memory: &[u8]| [&[1u8, size][..], memory].concat();
    vec![
        ("page-block", decode_seed(1, 4096, block)),
        ("wrong-length", decode_seed(1, 4095, block)),
        ("cut-short", decode_seed(1, 4096, &block[..block.len() - 5])),
        ("raw", decode_seed(0, 0, &page[..100])),
        ("trip-text", trip(172, &text[..2600])),
        ("trip-zeros", trip(20, &[0u8; 4096])),
        ("trip-random", trip(172, &random)),
    ]
}
