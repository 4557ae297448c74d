//! Asks gdb what an analyst would: the backtrace and registers of the vmcore.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

/// `gdb -batch -ex bt -ex 'info registers rip rsp' <kernel> <vmcore>`; its stdout.
pub fn backtrace(kernel: &Path, vmcore: &Path) -> Result<String> {
    batch(kernel, vmcore, &["bt", "info registers rip rsp"])
}

/// `gdb -batch -ex <command>… <kernel> <vmcore>`: its stdout, then its stderr.
pub fn batch(kernel: &Path, vmcore: &Path, commands: &[&str]) -> Result<String> {
    let mut gdb = Command::new("gdb");
    gdb.arg("-nx").arg("-batch");
    for c in commands {
        gdb.arg("-ex").arg(c);
    }
    let out = gdb.arg(kernel).arg(vmcore).output().context("run gdb")?;
    // gdb prints its complaints about the core file (a note of the wrong size, a
    // section it cannot map) on stderr; the harness treats them as failures.
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text)
}

/// gdb's `info registers` output as (name, value): every line whose second word is a hex
/// number.
pub fn registers(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?;
            let value = u64::from_str_radix(words.next()?.strip_prefix("0x")?, 16).ok()?;
            Some((name.to_string(), value))
        })
        .collect()
}
