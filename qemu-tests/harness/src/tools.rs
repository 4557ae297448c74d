//! The host tools the suite needs, installed when missing (as root) or named exactly.

use anyhow::{Result, bail};
use std::process::{Command, Stdio};

fn present(cmd: &str) -> bool {
    Command::new(cmd).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes sure `qemu-system-x86_64`, `gdb` and `gdb-multiarch` (the AArch64 vmcore test in
/// netdumpd/tests/deferred.rs) exist: installs them with apt-get when running as root,
/// else fails with the command to run.
pub fn ensure_qemu_and_gdb() -> Result<()> {
    let missing: Vec<&str> =
        [("qemu-system-x86_64", "qemu-system-x86"), ("gdb", "gdb"), ("gdb-multiarch", "gdb-multiarch")]
            .into_iter()
            .filter(|(cmd, _)| !present(cmd))
            .map(|(_, pkg)| pkg)
            .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    if !is_root() {
        bail!("missing {}: run `sudo sh -c '{install}'` and try again", missing.join(", "));
    }
    eprintln!("installing {} (apt-get)", missing.join(", "));
    let ok = Command::new("sh").arg("-c").arg(&install).env("DEBIAN_FRONTEND", "noninteractive").status()?.success();
    if !ok || !present("qemu-system-x86_64") || !present("gdb") || !present("gdb-multiarch") {
        bail!("`{install}` failed; install them and try again");
    }
    Ok(())
}
