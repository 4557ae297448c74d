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

/// The S3-compatible server of the upload tests (netdumpd/tests/upload.rs and the
/// `upload` scenario): `s3s-fs`, from crates.io. The version is the newest that builds
/// with the workspace's rust-version.
pub const S3S_FS_INSTALL: &str = "cargo install s3s-fs --version 0.14.1 --features binary --locked";

/// Where `s3s-fs` is: `$S3S_FS`, else on `$PATH`, else in cargo's bin directory.
pub fn s3s_fs() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    if let Some(p) = std::env::var_os("S3S_FS") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join("s3s-fs")).find(|p| p.is_file())
}

/// Makes sure `s3s-fs` is installed: runs [`S3S_FS_INSTALL`] when it is not (no root
/// needed), or fails with that command.
pub fn ensure_s3s_fs() -> Result<()> {
    if s3s_fs().is_some() {
        return Ok(());
    }
    eprintln!("installing s3s-fs, the S3 server of the upload tests: {S3S_FS_INSTALL}");
    let ok = Command::new("sh").arg("-c").arg(S3S_FS_INSTALL).status().is_ok_and(|s| s.success());
    if !ok || s3s_fs().is_none() {
        bail!("s3s-fs is missing and `{S3S_FS_INSTALL}` failed: run it and try again");
    }
    Ok(())
}
