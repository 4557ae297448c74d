//! The checks a scenario's dump must pass. Each returns an error that says exactly what
//! was wrong, so a failing run points at the byte, the file or the field.

use crate::vmcore::Vmcore;
use anyhow::{Context, Result, bail, ensure};
use netdump_test_pattern::{PAGE, Pattern};
use std::path::Path;

/// Every byte of the pattern region matches, zero pages included.
pub fn pattern_matches(core: &Vmcore, p: &Pattern) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut addr = p.base;
    while addr < p.base + p.len {
        let n = CHUNK.min(p.base + p.len - addr) as usize;
        core.read_phys(addr, &mut buf[..n])?;
        for (i, w) in buf[..n].chunks_exact(8).enumerate() {
            let a = addr + i as u64 * 8;
            let got = u64::from_le_bytes(w.try_into().unwrap());
            let want = p.word(a);
            if got != want {
                let kind = if p.is_zero_page(a) { "zero page" } else { "pattern" };
                bail!("vmcore differs at physical {a:#x} ({kind}): got {got:#018x}, expected {want:#018x}");
            }
        }
        addr += n as u64;
    }
    Ok(())
}

/// For a dump that ended early: every byte of the pattern region is either the
/// pattern's or zero (it never arrived; a packet may have brought part of a page).
/// Returns how many non-zero pattern pages arrived whole.
pub fn pattern_pages_arrived(core: &Vmcore, p: &Pattern) -> Result<u64> {
    let mut page = vec![0u8; PAGE as usize];
    let mut arrived = 0;
    for addr in (p.base..p.base + p.len).step_by(PAGE as usize) {
        core.read_phys(addr, &mut page)?;
        let mut whole = !p.is_zero_page(addr);
        for (i, b) in page.iter().enumerate() {
            let (a, want) = (addr + i as u64, p.byte(addr + i as u64));
            ensure!(
                *b == want || *b == 0,
                "vmcore differs at physical {a:#x}: got {b:#04x}, expected {want:#04x} (or a hole)"
            );
            whole &= *b == want;
        }
        arrived += u64::from(whole);
    }
    Ok(arrived)
}

/// The vmcore is sparse: fewer bytes allocated than its RAM ranges span, by at least
/// the pattern's zero pages (which were never sent).
pub fn is_sparse(path: &Path, p: &Pattern) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let allocated = meta.blocks() * 512;
    let zero_bytes = (p.len / PAGE).checked_div(p.zero_every).map_or(0, |pages| pages * PAGE);
    ensure!(
        allocated + zero_bytes <= meta.size(),
        "vmcore is not sparse: {allocated} bytes allocated of {} (expected at least {zero_bytes} bytes of holes)",
        meta.size()
    );
    Ok(())
}

/// `info.json` says the dump is complete and its CRC verified.
pub fn info_says_complete(info: &serde_json::Value) -> Result<()> {
    let status = info.pointer("/status").and_then(|v| v.as_str()).context("info.json has no status")?;
    ensure!(status == "complete", "info.json status is {status:?}, expected \"complete\"");
    let verified = info.pointer("/crc/verified").and_then(|v| v.as_bool());
    ensure!(verified == Some(true), "info.json crc.verified is {verified:?}");
    Ok(())
}

/// The `log` holds the panic message and the console lines printed before it.
pub fn log_has(log: &str, needles: &[&str]) -> Result<()> {
    for n in needles {
        ensure!(log.contains(n), "log lacks {n:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Writes a minimal ET_CORE with one PT_LOAD holding `data` at `paddr`.
    pub fn tiny_core(path: &Path, paddr: u64, data: &[u8]) {
        let mut f = std::fs::File::create(path).unwrap();
        let mut eh = [0u8; 64];
        eh[..4].copy_from_slice(b"\x7fELF");
        eh[4] = 2;
        eh[5] = 1;
        eh[6] = 1;
        eh[16..18].copy_from_slice(&4u16.to_le_bytes());
        eh[18..20].copy_from_slice(&62u16.to_le_bytes());
        eh[32..40].copy_from_slice(&64u64.to_le_bytes());
        eh[52..54].copy_from_slice(&64u16.to_le_bytes());
        eh[54..56].copy_from_slice(&56u16.to_le_bytes());
        eh[56..58].copy_from_slice(&1u16.to_le_bytes());
        let mut ph = [0u8; 56];
        ph[0..4].copy_from_slice(&1u32.to_le_bytes());
        ph[8..16].copy_from_slice(&4096u64.to_le_bytes());
        ph[16..24].copy_from_slice(&paddr.to_le_bytes());
        ph[24..32].copy_from_slice(&paddr.to_le_bytes());
        ph[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&(data.len() as u64).to_le_bytes());
        f.write_all(&eh).unwrap();
        f.write_all(&ph).unwrap();
        f.write_all(&vec![0u8; 4096 - 120]).unwrap();
        f.write_all(data).unwrap();
    }

    fn pattern_bytes(p: &Pattern) -> Vec<u8> {
        (0..p.len / 8).flat_map(|i| p.word(p.base + i * 8).to_le_bytes()).collect()
    }

    #[test]
    fn checker_accepts_the_pattern_and_rejects_any_single_flipped_byte() {
        let dir = std::env::temp_dir().join(format!("netdump-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = Pattern { base: 0x10_0000, len: 8 * PAGE, seed: 99, zero_every: 3 };
        let good = pattern_bytes(&p);
        let path = dir.join("vmcore");
        tiny_core(&path, p.base, &good);
        pattern_matches(&Vmcore::open(&path).unwrap(), &p).unwrap();
        for at in [0usize, 1, 4095, 2 * 4096 + 17, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            tiny_core(&path, p.base, &bad);
            let err = pattern_matches(&Vmcore::open(&path).unwrap(), &p).unwrap_err().to_string();
            assert!(err.contains(&format!("{:#x}", p.base + (at as u64 & !7))), "{err}");
        }
        // a byte in a zero page that is not zero is caught too
        assert!(p.is_zero_page(p.base + 2 * PAGE));
        let mut bad = good.clone();
        bad[2 * 4096 + 100] = 1;
        tiny_core(&path, p.base, &bad);
        assert!(pattern_matches(&Vmcore::open(&path).unwrap(), &p).unwrap_err().to_string().contains("zero page"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_partial_dump_counts_its_arrived_pages_and_rejects_a_wrong_one() {
        let dir = std::env::temp_dir().join(format!("netdump-check-partial-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = Pattern { base: 0x10_0000, len: 8 * PAGE, seed: 5, zero_every: 3 };
        let mut bytes = pattern_bytes(&p);
        bytes[5 * PAGE as usize - 100..].fill(0); // page 4 arrived in part, 5..8 not at all
        let path = dir.join("vmcore");
        tiny_core(&path, p.base, &bytes);
        // pages 0, 1 and 3 arrived whole; 2 is a zero page
        assert_eq!(pattern_pages_arrived(&Vmcore::open(&path).unwrap(), &p).unwrap(), 3);
        bytes[3 * PAGE as usize + 9] ^= 0x10;
        tiny_core(&path, p.base, &bytes);
        let err = pattern_pages_arrived(&Vmcore::open(&path).unwrap(), &p).unwrap_err().to_string();
        assert!(err.contains(&format!("{:#x}", p.base + 3 * PAGE + 9)), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_range_is_an_error() {
        let dir = std::env::temp_dir().join(format!("netdump-check-miss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = Pattern { base: 0x10_0000, len: 2 * PAGE, seed: 1, zero_every: 0 };
        let path = dir.join("vmcore");
        tiny_core(&path, p.base, &pattern_bytes(&Pattern { len: PAGE, ..p }));
        assert!(pattern_matches(&Vmcore::open(&path).unwrap(), &p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
