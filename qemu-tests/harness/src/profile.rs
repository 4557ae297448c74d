//! A sampling profiler of a guest under TCG, for `cargo xtask bench`: the instruction
//! pointer read through QEMU's human monitor (`info registers`) every few milliseconds
//! while the dump runs, and mapped to the kernel's functions with `nm`. A sample lands at
//! a translation-block boundary and time spent inside QEMU's device models (an MMIO
//! write that sends a frame) is charged to the instruction that caused it, which is what
//! the guest pays for it.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One `info registers` round trip on the monitor at `socket`: the RIP it shows.
struct Monitor {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Monitor {
    fn connect(socket: &Path, patience: Duration) -> Result<Self> {
        let started = Instant::now();
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(_) if started.elapsed() < patience => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e).with_context(|| format!("connect to QEMU's monitor at {}", socket.display())),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut m = Monitor { stream, buf: Vec::with_capacity(1 << 16) };
        m.until_prompt()?;
        Ok(m)
    }

    fn until_prompt(&mut self) -> Result<()> {
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        while !self.buf.ends_with(b"(qemu) ") {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("QEMU closed its monitor");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    fn rip(&mut self) -> Result<Option<u64>> {
        self.stream.write_all(b"info registers\n")?;
        self.until_prompt()?;
        Ok(parse_rip(&String::from_utf8_lossy(&self.buf)))
    }
}

fn parse_rip(text: &str) -> Option<u64> {
    let at = text.find("RIP=")? + 4;
    u64::from_str_radix(text.get(at..at + 16)?, 16).ok()
}

/// Samples the guest's RIP every `interval` while `sampling()` says so, from the first
/// moment it does until it stops (or QEMU exits).
pub fn sample(socket: &Path, interval: Duration, sampling: impl Fn() -> bool) -> Result<Vec<u64>> {
    let mut monitor = Monitor::connect(socket, Duration::from_secs(10))?;
    let mut rips = vec![];
    let mut started = false;
    loop {
        let now = sampling();
        if started && !now {
            break;
        }
        started |= now;
        if now {
            match monitor.rip() {
                Ok(Some(rip)) => rips.push(rip),
                Ok(None) => {}
                Err(_) => break,
            }
        }
        std::thread::sleep(interval);
    }
    Ok(rips)
}

/// The functions of `kernel` (from `nm`) the samples fell in, most first, as shares.
pub fn by_function(kernel: &Path, rips: &[u64]) -> Result<Vec<(String, f64)>> {
    let out = Command::new("nm").args(["-C", "--defined-only"]).arg(kernel).output().context("run nm")?;
    let mut symbols: Vec<(u64, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ' ');
            let (addr, kind, name) = (p.next()?, p.next()?, p.next()?);
            matches!(kind, "t" | "T" | "w" | "W").then(|| Some((u64::from_str_radix(addr, 16).ok()?, name.to_string())))?
        })
        .collect();
    symbols.sort();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for &rip in rips {
        let i = symbols.partition_point(|(a, _)| *a <= rip);
        let name = if i == 0 { "(outside the kernel)" } else { symbols[i - 1].1.as_str() };
        *counts.entry(name).or_default() += 1;
    }
    let mut v: Vec<(String, f64)> = counts.into_iter().map(|(n, c)| (n.to_string(), c as f64 / rips.len().max(1) as f64)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rip_is_read_from_the_register_dump() {
        let dump = "RAX=0000000000000001 RBX=0000000000000002\r\nRIP=0000000000104cf9 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n(qemu) ";
        assert_eq!(parse_rip(dump), Some(0x104cf9));
        assert_eq!(parse_rip("RIP=zz"), None);
        assert_eq!(parse_rip("(qemu) "), None);
    }
}
