//! What crossed the wire: QEMU's `filter-dump` writes every frame the guest's NIC sends
//! and receives to a pcap file; this reads it back and looks for memory in it.
//!
//! The confidentiality check of encrypted dumps: a sample of the pattern's 8-byte words
//! (from pages that are sent, not the zero ones) must appear nowhere in the capture of an
//! encrypted dump, at any byte offset, while the same search over a plaintext dump's
//! capture finds them (the control that proves the search can see memory at all).

use anyhow::{Context, Result, ensure};
use netdump_test_pattern::{PAGE, Pattern};
use std::collections::HashSet;
use std::path::Path;

/// The classic pcap file header: magic, version 2.4, zone, sigfigs, snaplen, link type.
const GLOBAL_HEADER_LEN: usize = 24;
/// Each record: seconds, microseconds, captured length, original length.
const RECORD_HEADER_LEN: usize = 16;
const MAGIC_LE: u32 = 0xa1b2_c3d4;

/// The frames of a pcap file, in capture order.
pub fn frames(pcap: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(pcap).with_context(|| format!("read {}", pcap.display()))?;
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    ensure!(bytes.len() >= GLOBAL_HEADER_LEN, "pcap shorter than its header");
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    ensure!(u32_at(0) == MAGIC_LE, "not a little-endian microsecond pcap (magic {:#x})", u32_at(0));
    let mut at = GLOBAL_HEADER_LEN;
    let mut out = vec![];
    while at < bytes.len() {
        ensure!(at + RECORD_HEADER_LEN <= bytes.len(), "pcap record header cut at {at}");
        let len = u32_at(at + 8) as usize;
        let start = at + RECORD_HEADER_LEN;
        ensure!(start + len <= bytes.len(), "pcap record at {at} runs past the end");
        out.push(bytes[start..start + len].to_vec());
        at = start + len;
    }
    Ok(out)
}

/// `count` distinct 8-byte words of `pattern`, spread evenly over its non-zero pages, as
/// they lie in RAM (little-endian).
pub fn sample_words(pattern: &Pattern, count: usize) -> Vec<[u8; 8]> {
    let sent_words = pages_sent(pattern) * (PAGE / 8);
    // An odd step keeps the sample from landing at the same offset of every page.
    let even = (sent_words / count.max(1) as u64).max(1);
    let step = if even > 1 && even.is_multiple_of(2) { even - 1 } else { even };
    (0..pattern.len / 8)
        .map(|i| pattern.base + i * 8)
        .filter(|&addr| !pattern.is_zero_page(addr))
        .step_by(step as usize)
        .take(count)
        .map(|addr| pattern.word(addr).to_le_bytes())
        .collect()
}

/// How many of `words` occur anywhere in `frames`, at any byte offset.
pub fn words_found(frames: &[Vec<u8>], words: &[[u8; 8]]) -> usize {
    let wanted: HashSet<[u8; 8]> = words.iter().copied().collect();
    let mut seen = HashSet::new();
    for f in frames {
        for w in f.windows(8) {
            let w: [u8; 8] = w.try_into().expect("8 bytes");
            if wanted.contains(&w) {
                seen.insert(w);
            }
        }
    }
    seen.len()
}

/// Pages of `pattern` a dump sends (its non-zero pages).
pub fn pages_sent(pattern: &Pattern) -> u64 {
    (0..pattern.len / PAGE).filter(|p| !pattern.is_zero_page(pattern.base + p * PAGE)).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(frames: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![];
        b.extend_from_slice(&MAGIC_LE.to_le_bytes());
        b.extend_from_slice(&[2, 0, 4, 0]);
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for f in frames {
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(f);
        }
        b
    }

    #[test]
    fn frames_come_back_in_order_and_a_cut_file_is_an_error() {
        let b = pcap(&[b"abc", b"", b"0123456789"]);
        let f = parse(&b).unwrap();
        assert_eq!(f, vec![b"abc".to_vec(), vec![], b"0123456789".to_vec()]);
        assert!(parse(&b[..b.len() - 1]).is_err());
        assert!(parse(&b[..10]).is_err());
    }

    #[test]
    fn a_word_is_found_at_any_offset_and_only_when_present() {
        let p = Pattern { base: 0x10_0000, len: 64 * PAGE, seed: 9, zero_every: 7 };
        let words = sample_words(&p, 1000);
        assert_eq!(words.len(), 1000);
        assert_eq!(words.iter().collect::<HashSet<_>>().len(), 1000, "the sample's words are distinct");
        assert!(words.iter().all(|w| *w != [0; 8]));
        let mut frame = vec![0xeeu8; 3];
        frame.extend_from_slice(&words[10]);
        frame.extend_from_slice(&words[999][..7]);
        assert_eq!(words_found(&[frame.clone()], &words), 1);
        frame.push(words[999][7]);
        assert_eq!(words_found(&[frame], &words), 2);
        assert_eq!(words_found(&[vec![0x55; 5000]], &words), 0);
    }
}
