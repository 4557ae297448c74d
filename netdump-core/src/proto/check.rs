//! The per-packet integrity checks (docs/PROTOCOL.md, "Packet" and "Integrity checks").
//!
//! Every unsealed packet carries a 32-bit check in its header's CRC field, made in two
//! levels: a 32-bit check of the payload, then a check of header bytes 0..20 followed by
//! the payload check (big-endian). The payload check also feeds the stream CRC of FINISH
//! ([`super::StreamCrc`]), so each side hashes a payload once.
//!
//! Two kinds, chosen per packet by the header:
//! - **CRC-32** (IEEE, as zlib): version 1, and version 2 without
//!   [`flags::CHECK_XXH64`](super::flags::CHECK_XXH64).
//! - **XXH64** (xxHash, 64-bit, seed 0), its low 32 bits: a version-2 packet with
//!   `CHECK_XXH64`, which a client sets only when the server granted
//!   [`features::XXH64_CHECK`](super::features::XXH64_CHECK). XXH64 reads the payload
//!   eight bytes at a time with a multiply, a rotate and an add, and no table: under
//!   emulation (QEMU's TCG, where every table load is a soft-MMU access) it costs a
//!   fraction of a table-driven CRC-32.

/// Which check a packet's CRC field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// CRC-32 (IEEE).
    Crc32,
    /// The low 32 bits of XXH64 with seed 0.
    Xxh64,
}

impl Check {
    /// The 32-bit check of `bytes`.
    #[inline(never)]
    pub fn of(self, bytes: &[u8]) -> u32 {
        match self {
            Check::Crc32 => crc32::hash(bytes),
            Check::Xxh64 => xxh64(bytes, 0) as u32,
        }
    }

    /// The header's CRC field: this check of header bytes 0..20 followed by the payload's
    /// check (big-endian).
    pub fn header(self, header_0_20: &[u8], payload_check: u32) -> u32 {
        let mut buf = [0u8; 24];
        buf[..20].copy_from_slice(&header_0_20[..20]);
        buf[20..].copy_from_slice(&payload_check.to_be_bytes());
        self.of(&buf)
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib): crc32fast's with the feature `fast-crc32`
/// (slicing-by-16 tables, PCLMUL where the CPU has it: the server's choice), else a
/// byte-at-a-time table of 1 KiB and a few dozen bytes of code (the kernel's: since
/// XXH64 carries the dump, CRC-32 checks only the server's small replies, and every
/// packet of a session that did not get XXH64).
pub mod crc32 {
    #[cfg(feature = "fast-crc32")]
    pub use crc32fast::{Hasher, hash};

    #[cfg(not(feature = "fast-crc32"))]
    pub use compact::{Hasher, hash};

    #[cfg(not(feature = "fast-crc32"))]
    mod compact {
        const fn table() -> [u32; 256] {
            let mut t = [0u32; 256];
            let mut i = 0;
            while i < 256 {
                let mut c = i as u32;
                let mut k = 0;
                while k < 8 {
                    c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                    k += 1;
                }
                t[i] = c;
                i += 1;
            }
            t
        }
        static TABLE: [u32; 256] = table();

        /// A running CRC-32.
        #[derive(Debug, Clone)]
        pub struct Hasher(u32);

        impl Default for Hasher {
            fn default() -> Self {
                Hasher(!0)
            }
        }

        impl Hasher {
            /// The CRC-32 of nothing yet.
            pub fn new() -> Self {
                Self::default()
            }
            /// Appends `bytes`.
            pub fn update(&mut self, bytes: &[u8]) {
                let mut c = self.0;
                for &b in bytes {
                    c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
                }
                self.0 = c;
            }
            /// The CRC-32 of what was appended.
            pub fn finalize(self) -> u32 {
                !self.0
            }
        }

        /// The CRC-32 of `bytes`.
        pub fn hash(bytes: &[u8]) -> u32 {
            let mut h = Hasher::new();
            h.update(bytes);
            h.finalize()
        }
    }
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

// Always inlined: XXH64 is per packet, and a call per word (what one codegen unit chose
// for the tail loop) also costs 300 bytes.
#[inline(always)]
fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1)
}

fn merge(acc: u64, val: u64) -> u64 {
    (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

/// XXH64 of `data` with `seed`, as the reference implementation (xxHash 0.8) computes it.
///
/// Never inlined: one copy serves the payload and the header checks (a kernel's code size).
#[inline(never)]
pub fn xxh64(data: &[u8], seed: u64) -> u64 {
    let len = data.len() as u64;
    let mut rest = data;
    let mut h = if data.len() >= 32 {
        let mut v = [seed.wrapping_add(P1).wrapping_add(P2), seed.wrapping_add(P2), seed, seed.wrapping_sub(P1)];
        let mut stripes = data.chunks_exact(32);
        for s in &mut stripes {
            for (lane, w) in v.iter_mut().zip(s.chunks_exact(8)) {
                *lane = round(*lane, le64(w));
            }
        }
        rest = stripes.remainder();
        let h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        v.iter().fold(h, |h, &v| merge(h, v))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(len);
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        h = (h ^ round(0, le64(w))).rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    }
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        let w = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        h = (h ^ w.wrapping_mul(P1)).rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h = (h ^ (b as u64).wrapping_mul(P5)).rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 0, 1, 2, ... 255, 0, 1, ... (`n` bytes).
    fn counting(n: usize) -> std::vec::Vec<u8> {
        (0..n).map(|i| i as u8).collect()
    }

    // Known answers of the reference implementation: libxxhash 0.8 (`XXH64(data, len,
    // seed)` through ctypes), for every path of the function — empty, tail bytes only,
    // one and several 32-byte stripes with 8-, 4- and 1-byte tails, a full DATA payload.
    #[test]
    fn matches_the_reference_implementation() {
        assert_eq!(xxh64(b"", 0), 0xef46db3751d8e999);
        assert_eq!(xxh64(b"a", 0), 0xd24ec4f1a98c6e5b);
        assert_eq!(xxh64(b"abc", 0), 0x44bc2cf5ad770999);
        let cases: &[(usize, u64, u64)] = &[
            (3, 0, 0xe5c7bb4533bc65dd),
            (4, 0, 0xffced8604453cc1e),
            (7, 0, 0x14cc643f630c72d2),
            (8, 0, 0x884a173614b81b8d),
            (15, 0, 0xa948f5f0f6abac2d),
            (31, 0, 0xc346d2b59b4d8ee1),
            (32, 0, 0xcbf59c5116ff32b4),
            (33, 0, 0x0c535d1acafb8ead),
            (63, 0, 0xe26aa9e2a95f8e4f),
            (100, 0, 0x6ac1e58032166597),
            (1432, 0, 0xde90cbf10fc0ae71),
            (1432, 0x9e3779b97f4a7c15, 0x6a339ed99732b92d),
        ];
        for &(n, seed, want) in cases {
            assert_eq!(xxh64(&counting(n), seed), want, "{n} counting bytes, seed {seed:#x}");
        }
    }

    // The CRC-32 this build links (compact or crc32fast) against crc32fast, the
    // reference of the CRC-32 tests, on every length around the table's byte steps.
    #[test]
    fn crc32_is_crc32fast() {
        let data = counting(1500);
        for n in (0..64).chain([1432, 1500]) {
            assert_eq!(crc32::hash(&data[..n]), crc32fast::hash(&data[..n]), "{n} bytes");
        }
        let mut h = crc32::Hasher::new();
        h.update(&data[..700]);
        h.update(&data[700..]);
        assert_eq!(h.finalize(), crc32fast::hash(&data));
        assert_eq!(crc32::hash(b"123456789"), 0xcbf43926, "the CRC-32 check value");
    }

    #[test]
    fn the_checks_are_their_functions() {
        let data = counting(1432);
        assert_eq!(Check::Crc32.of(&data), crc32fast::hash(&data));
        assert_eq!(Check::Xxh64.of(&data), xxh64(&data, 0) as u32);
    }
}
