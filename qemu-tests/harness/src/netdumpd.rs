//! Runs a real netdumpd on a free loopback port for one scenario.

use anyhow::{Context, Result, bail};
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

/// How many times a log says netdumpd was ready.
fn ready_lines(log: &str) -> usize {
    log.matches("netdumpd ready").count()
}

/// A UDP port nothing listens on right now.
pub fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Netdumpd {
    /// Starts `bin --listen 127.0.0.1:<free port> --dir <dir> <extra>` and waits until it
    /// has bound its socket.
    pub fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Self> {
        // A port free when looked up may be taken by another process (a scenario running
        // beside this one) before netdumpd binds it: then netdumpd says so, and another
        // free port is tried.
        let mut tries = 0;
        loop {
            match Self::start_on(bin, dir, free_udp_port()?, extra, None) {
                Err(e) if tries < 5 && format!("{e:#}").contains("cannot listen") => tries += 1,
                started => return started,
            }
        }
    }

    /// [`start`](Self::start) on a given `port` (a restart takes the same one; the log is
    /// appended to). With `tmpfs_mib`, netdumpd runs in a private mount namespace where
    /// `dir` is a tmpfs of that size — a disk that can fill up — and `self.dir` reaches it
    /// through `/proc/<pid>/root` (needs root, or CAP_SYS_ADMIN).
    pub fn start_on(bin: &Path, dir: &Path, port: u16, extra: &[&str], tmpfs_mib: Option<u64>) -> Result<Self> {
        let dir = &std::path::absolute(dir)?;
        std::fs::create_dir_all(dir)?;
        let log = dir.with_extension("netdumpd.log");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        // The log is appended to by a restart: this server is ready at the next line.
        let ready_before = ready_lines(&std::fs::read_to_string(&log).unwrap_or_default());
        let mut command = Command::new(bin);
        if let Some(mib) = tmpfs_mib {
            command = Command::new("unshare");
            command
                .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg(format!("mount -t tmpfs -o size={mib}m netdump-test \"$0\" && exec \"$@\""))
                .arg(dir)
                .arg(bin);
        }
        let child = command
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
        let view = match tmpfs_mib {
            Some(_) => Path::new("/proc").join(child.id().to_string()).join("root").join(dir.strip_prefix("/")?),
            None => dir.to_path_buf(),
        };
        let mut me = Netdumpd { child, port, dir: view, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = me.child.try_wait()? {
                bail!("netdumpd exited at start ({status}); its log:\n{}", me.log_text());
            }
            // netdumpd logs that it is ready once its socket is bound (a port merely
            // unavailable to us may be another process's).
            if ready_lines(&me.log_text()) > ready_before {
                return Ok(me);
            }
            if Instant::now() > deadline {
                bail!("netdumpd was not ready on 127.0.0.1:{port} within 60 s; its log:\n{}", me.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id (for CPU accounting).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where netdumpd listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server-wide counters as netdumpd last wrote them (`stats.json`: every 2 s while
    /// they change, and on SIGTERM); `None` before the first write.
    pub fn stats(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("stats.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Waits for `stats.json` to satisfy `done`, polling a bounded while: netdumpd rewrites
    /// it at most every 2 s, so counters lag what the log already says. Returns the last
    /// counters read (which may still fail `done` when the bound ran out; the caller's
    /// check then reports the real numbers).
    pub fn stats_when(&self, done: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
        loop {
            let stats = self.stats();
            if stats.as_ref().is_some_and(&done) || std::time::Instant::now() >= deadline {
                return stats;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
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

    /// How the server exited, if it has (`None` while it runs).
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Ends the server as its service manager would: SIGTERM, then up to 10 s for it to
    /// finish what it was doing and exit (SIGKILL after that, and an error). Returns its log.
    pub fn terminate(mut self) -> Result<String> {
        if let Some(status) = self.child.try_wait()? {
            bail!("netdumpd had already exited ({status})");
        }
        let kill = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().context("run kill")?;
        if !kill.success() {
            bail!("kill -TERM {} failed ({kill})", self.child.id());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("netdumpd exited with {status} on SIGTERM");
                }
                return Ok(self.log_text());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("netdumpd did not exit within 10 s of SIGTERM (killed)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
