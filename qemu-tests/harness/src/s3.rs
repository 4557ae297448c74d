//! A real S3-compatible server for the `upload` scenario: `s3s-fs` (crates.io;
//! [`crate::tools::ensure_s3s_fs`] installs it), a process on a free loopback port over
//! a scratch directory, with an access key and secret. A bucket is a directory of it.

use anyhow::{Context, Result, bail};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "netdump-suite-key";
pub const SECRET_KEY: &str = "netdump-suite-secret";

pub struct S3Server {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
}

impl S3Server {
    /// Starts s3s-fs over `root` with an empty `bucket`.
    pub fn start(root: &Path, bucket: &str) -> Result<S3Server> {
        std::fs::create_dir_all(root.join(bucket))?;
        let bin = crate::tools::s3s_fs()
            .with_context(|| format!("s3s-fs is not installed: run `{}`", crate::tools::S3S_FS_INSTALL))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(root.with_extension("log"))?;
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start s3s-fs")?;
        let mut me = S3Server { child, port, root: root.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = me.child.try_wait()? {
                bail!("s3s-fs exited at start ({status})");
            }
            if Instant::now() > deadline {
                bail!("s3s-fs did not listen on 127.0.0.1:{port} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(me)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
