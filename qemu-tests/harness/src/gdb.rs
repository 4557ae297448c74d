//! Asks gdb what an analyst would: the backtrace and registers of the vmcore.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

/// `gdb -batch -ex bt -ex 'info registers rip rsp' <kernel> <vmcore>`; its stdout.
pub fn backtrace(kernel: &Path, vmcore: &Path) -> Result<String> {
    let out = Command::new("gdb")
        .args(["-nx", "-batch", "-ex", "bt", "-ex", "info registers rip rsp"])
        .arg(kernel)
        .arg(vmcore)
        .output()
        .context("run gdb")?;
    // gdb prints its complaints about the core file (a note of the wrong size, a
    // section it cannot map) on stderr; the harness treats them as failures.
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text)
}
