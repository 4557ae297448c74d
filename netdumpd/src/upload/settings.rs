//! `[upload]`, resolved, and the credentials it names: from a file (mode checked like a
//! private key's) or from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Where and how finished dumps are uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadConfig {
    /// The S3 endpoint URL (`http://127.0.0.1:9000`); `None`: AWS itself, by region.
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Keys start `<prefix>/`; may be empty.
    pub prefix: String,
    pub region: String,
    /// This server's name in the keys (default: the host name).
    pub server_name: String,
    /// A file with `access_key_id` and `secret_access_key` (TOML), mode 0600 or
    /// stricter; `None`: the environment.
    pub credentials_file: Option<PathBuf>,
    /// Plain HTTP to the endpoint (a local test server).
    pub allow_http: bool,
    /// Multipart part size; objects larger than this are uploaded in parts.
    pub part_size: usize,
    /// The longest wait between two attempts at a dump's upload.
    pub max_backoff: Duration,
    /// How long object_store retries one request (connection refused, 5xx) before the
    /// attempt fails and the dump goes back to the queue.
    pub request_retry_timeout: Duration,
    /// How often the dump directory is looked at for uploads left pending.
    pub rescan_interval: Duration,
}

/// The smallest part S3 accepts (but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

impl UploadConfig {
    /// The defaults for a bucket.
    pub fn new(bucket: &str) -> UploadConfig {
        UploadConfig {
            endpoint: None,
            bucket: bucket.to_string(),
            prefix: "netdump".to_string(),
            region: "us-east-1".to_string(),
            server_name: host_name(),
            credentials_file: None,
            allow_http: false,
            part_size: 8 << 20,
            max_backoff: Duration::from_secs(300),
            request_retry_timeout: Duration::from_secs(60),
            rescan_interval: Duration::from_secs(60),
        }
    }

    /// What is wrong with it, for `check-config` (credentials included).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.bucket.is_empty() {
            out.push("upload.bucket: empty".to_string());
        }
        if !valid_part(&self.server_name) {
            out.push(format!(
                "upload.server_name: {:?} is not a valid name (letters, digits, - _ .)",
                self.server_name
            ));
        }
        if self.prefix.split('/').any(|p| p == "." || p == "..") {
            out.push(format!("upload.prefix: {:?} has . or .. parts", self.prefix));
        }
        match &self.endpoint {
            Some(e) if e.starts_with("http://") && !self.allow_http => {
                out.push(format!("upload.endpoint: {e} is plain HTTP; set allow_http = true to allow it"))
            }
            Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) => {
                out.push(format!("upload.endpoint: {e} is not an http:// or https:// URL"))
            }
            _ => {}
        }
        if self.part_size < MIN_PART_SIZE {
            out.push("upload.part_size_mib: must be at least 5".to_string());
        }
        if let Err(e) = Credentials::resolve(self) {
            out.push(format!("upload: {e:#}"));
        }
        out
    }

    /// The key of a dump's directory in the bucket: `<prefix>/<client>/<dump>@<server>`.
    pub fn dump_key(&self, client: &str, dump: &str) -> String {
        let id = format!("{dump}@{}", self.server_name);
        if self.prefix.is_empty() { format!("{client}/{id}") } else { format!("{}/{client}/{id}", self.prefix) }
    }
}

/// A name usable as one key part: letters, digits, `-`, `_`, `.`, not `.` or `..`.
pub fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The host name (gethostname(2)), `netdumpd` when it has none.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is what is passed; the
    // result is NUL-terminated when it fits (checked below by searching for the NUL).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
        String::from_utf8_lossy(&buf[..end]).split('.').next().unwrap_or("").to_string()
    } else {
        String::new()
    };
    if valid_part(&name) { name } else { "netdumpd".to_string() }
}

/// An access key and its secret.
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    /// Where they came from, for the log (never the secret).
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).field("source", &self.source).finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    access_key_id: String,
    secret_access_key: String,
}

impl Credentials {
    /// The credentials file if configured, else `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`.
    pub fn resolve(c: &UploadConfig) -> anyhow::Result<Credentials> {
        match &c.credentials_file {
            Some(path) => Self::load(path),
            None => {
                let id = std::env::var("AWS_ACCESS_KEY_ID").ok().filter(|v| !v.is_empty());
                let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok().filter(|v| !v.is_empty());
                match (id, secret) {
                    (Some(id), Some(secret)) => Ok(Credentials {
                        access_key_id: id,
                        secret_access_key: Zeroizing::new(secret),
                        source: "environment".to_string(),
                    }),
                    _ => bail!(
                        "no credentials: set upload.credentials_file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    ),
                }
            }
        }
    }

    /// Reads a credentials file, refusing one its group or others can read or write.
    pub fn load(path: &Path) -> anyhow::Result<Credentials> {
        let meta = std::fs::metadata(path).with_context(|| format!("credentials file {}", path.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "credentials file {}: mode {:o} lets others than its owner read or change it; chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("credentials file {}", path.display()))?,
        );
        let f: CredentialsFile = toml::from_str(&text).with_context(|| {
            format!("credentials file {}: expected access_key_id = \"…\" and secret_access_key = \"…\"", path.display())
        })?;
        Ok(Credentials {
            access_key_id: f.access_key_id,
            secret_access_key: Zeroizing::new(f.secret_access_key),
            source: path.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn a_credentials_file_must_be_private_and_well_formed() {
        let dir = TestDir::new("upload-creds");
        let path = dir.path().join("s3");
        std::fs::write(&path, "access_key_id = \"AK\"\nsecret_access_key = \"SK\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Credentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::load(&path).unwrap();
        assert_eq!((c.access_key_id.as_str(), c.secret_access_key.as_str()), ("AK", "SK"));
        assert!(!format!("{c:?}").contains("SK"), "the secret is not in Debug");
        std::fs::write(&path, "key = 1\n").unwrap();
        assert!(Credentials::load(&path).is_err());
    }

    #[test]
    fn keys_hold_the_client_the_dump_and_the_server() {
        let mut c = UploadConfig::new("b");
        c.server_name = "srv-1".into();
        assert_eq!(c.dump_key("node", "node-20260101-000000"), "netdump/node/node-20260101-000000@srv-1");
        c.prefix.clear();
        assert_eq!(c.dump_key("node", "d"), "node/d@srv-1");
        assert!(valid_part(&host_name()));
    }

    #[test]
    fn problems_name_plain_http_small_parts_and_bad_names() {
        let mut c = UploadConfig::new("b");
        c.endpoint = Some("http://127.0.0.1:1".into());
        c.part_size = 1 << 20;
        c.server_name = "a/b".into();
        c.credentials_file = Some("/nonexistent/creds".into());
        let p = c.problems();
        for want in ["allow_http", "part_size_mib", "server_name", "credentials file /nonexistent/creds"] {
            assert!(p.iter().any(|l| l.contains(want)), "{want}: {p:?}");
        }
    }
}
