//! A real S3-compatible server for the upload tests: `s3s-fs` (crates.io), started as a
//! process on a loopback port over a scratch directory, with an access key and secret.
//! Its buckets are directories of that root; objects are files in them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "netdump-test-key";
pub const SECRET_KEY: &str = "netdump-test-secret";
pub const BUCKET: &str = "crash-dumps";

/// What installs the server where it is missing (`cargo xtask test` runs it).
pub const INSTALL: &str = "cargo install s3s-fs --version 0.14.1 --features binary --locked";

/// The `s3s-fs` binary: `$S3S_FS`, else on `$PATH`, else in cargo's bin directory.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS") {
        return PathBuf::from(p);
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("s3s-fs (the S3 server of these tests) is not installed: run `{INSTALL}`"))
}

/// An s3s-fs process; killed when dropped.
pub struct S3Server {
    pub root: PathBuf,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl S3Server {
    /// Starts the server over `root` (created, with the bucket [`BUCKET`]) on a free port.
    pub fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut s = S3Server { root: root.to_path_buf(), port, child: None, log: root.with_extension("log") };
        s.restart();
        s
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the process at once (SIGKILL: nothing finishes cleanly).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the process (SIGSTOP): requests wait, unanswered, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("s3s-fs is running").id();
        // SAFETY: kill(2) with our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0, "signal {sig} to s3s-fs");
    }

    /// Starts it again on the same port and root.
    pub fn restart(&mut self) {
        self.kill();
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.port))).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The objects of the bucket (key → size), as the server stores them.
    pub fn objects(&self) -> Vec<(String, u64)> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    let key = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                    out.push((key, e.metadata().unwrap().len()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root.join(BUCKET), &self.root.join(BUCKET), &mut out);
        out.sort();
        out
    }

    /// Whether a multipart upload has begun (s3s-fs keeps its state at the root).
    pub fn multipart_started(&self) -> bool {
        std::fs::read_dir(&self.root).into_iter().flatten().flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(".upload")
        })
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
