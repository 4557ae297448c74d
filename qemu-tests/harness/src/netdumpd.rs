//! Runs a real netdumpd on a free loopback port for one scenario.

use anyhow::{bail, Context, Result};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Netdumpd {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
}

/// A UDP port nothing listens on right now.
pub fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Netdumpd {
    /// Starts `bin --listen 127.0.0.1:<free port> --dir <dir> <extra>` and waits until it
    /// has bound its socket.
    pub fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = free_udp_port()?;
        let log = dir.with_extension("netdumpd.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let mut me = Netdumpd { child, port, dir: dir.to_path_buf(), log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = me.child.try_wait()? {
                bail!("netdumpd exited at start ({status}); its log:\n{}", me.log_text());
            }
            // Bound by the server ⇔ we can no longer bind it.
            if UdpSocket::bind(("127.0.0.1", port)).is_err() {
                return Ok(me);
            }
            if Instant::now() > deadline {
                bail!("netdumpd did not bind 127.0.0.1:{port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id (for CPU accounting).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The dump directories of client `name`, oldest first.
    pub fn dumps_of(&self, name: &str) -> Vec<PathBuf> {
        let prefix = format!("{name}-");
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix) && e.path().is_dir())
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }

    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log_text()
    }
}

impl Drop for Netdumpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
