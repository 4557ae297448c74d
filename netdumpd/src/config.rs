//! The configuration file (TOML), `--config PATH`. Every setting may also come from a
//! flag; a flag wins over the file, the file over the default. `contrib/netdumpd.toml`
//! is a commented sample with every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use netdump_core::proto::{AfterDump, SERVER_PORT};
use serde::Deserialize;

use crate::analysis::AnalysisConfig;
use crate::dedup::DedupPolicy;
use crate::hooks::HookConfig;
use crate::limits::Limits;
use crate::retention::RetentionConfig;
use crate::syslog::SyslogLimits;

const MIB: u64 = 1 << 20;

/// How the server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address and UDP port to listen on.
    pub listen: SocketAddr,
    /// Where dumps and the client registry go.
    pub dump_dir: PathBuf,
    /// Silence after which a dump being received is marked incomplete.
    pub session_timeout: Duration,
    /// What FINISH_ACK tells the client to do next.
    pub after_dump: AfterDump,
    /// Free space to leave on the dump file system; a dump that would eat into it
    /// gets SKIP_MEMORY (or ABORT when not even its log fits).
    pub min_free_bytes: u64,
    /// Dumps received at once; one more CRASH gets ABORT (busy).
    pub max_sessions: usize,
    /// Memory images received at once; beyond, a crash gets SKIP_MEMORY (busy): its
    /// log and registers only.
    pub max_memory_dumps: usize,
    /// Hook scripts ([`crate::hooks`]).
    pub hooks: HookConfig,
    /// Limits on the dumps kept ([`crate::retention`]).
    pub retention: RetentionConfig,
    /// What to do with a repeated crash ([`crate::dedup`]).
    pub dedup: DedupPolicy,
    /// Analysis on arrival ([`crate::analysis`]).
    pub analysis: AnalysisConfig,
    /// Where to receive netconsole (syslog) lines, if anywhere ([`crate::syslog`]).
    pub syslog_listen: Option<SocketAddr>,
    /// What syslog senders can make the netconsole receiver hold.
    pub syslog_limits: SyslogLimits,
    /// How often a dump in progress is reported in the server log.
    pub progress_interval: Duration,
    /// What strangers can make the server hold or do ([`crate::limits`]).
    pub limits: Limits,
    /// Encrypted dumps: the server's keys and whether plaintext clients are refused.
    pub encryption: EncryptionConfig,
    /// Grant page filtering (feature `FILTER`) to clients that ask: their dumps leave out
    /// the page classes their kernel excludes. Off: every client sends every page.
    pub page_filtering: bool,
    /// Finished dumps shipped to object storage (`[upload]`), when configured.
    pub upload: Option<crate::upload::UploadConfig>,
    /// The log's format (`log_format`, `--log-format`); `None`: the journal when stderr
    /// is connected to it, else text.
    pub log_format: Option<crate::logging::LogFormat>,
}

/// `[encryption]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptionConfig {
    /// Private key files (`netdumpd keygen`), each 0600. Several: a client names the one
    /// it pinned by its key id, so old and new keys work side by side while kernels move
    /// to a new one.
    pub private_keys: Vec<PathBuf>,
    /// Refuse every client that does not encrypt (version-1 HELLOs, version-2 HELLOs
    /// without the `ENCRYPTED` feature), with the reason in the log and HELLO_ACK.
    pub require_encryption: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], SERVER_PORT)),
            dump_dir: PathBuf::from("/var/crash/netdump"),
            session_timeout: Duration::from_secs(60),
            after_dump: AfterDump::Reboot,
            min_free_bytes: 64 << 20,
            max_sessions: 16,
            max_memory_dumps: 16,
            hooks: HookConfig::default(),
            retention: RetentionConfig::default(),
            dedup: DedupPolicy::default(),
            analysis: AnalysisConfig::default(),
            syslog_listen: None,
            syslog_limits: SyslogLimits::default(),
            progress_interval: Duration::from_secs(10),
            limits: Limits::default(),
            encryption: EncryptionConfig::default(),
            page_filtering: true,
            upload: None,
            log_format: None,
        }
    }
}

/// The file, as written.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub listen: Option<SocketAddr>,
    pub dir: Option<PathBuf>,
    /// Seconds.
    pub session_timeout: Option<u64>,
    /// `reboot` or `halt`.
    pub after_dump: Option<String>,
    pub min_free_mib: Option<u64>,
    pub max_sessions: Option<u64>,
    pub max_memory_dumps: Option<u64>,
    /// Seconds between progress lines of a dump in the log.
    pub progress_interval: Option<u64>,
    pub log_level: Option<String>,
    /// `text`, `json` or `journald` (as `--log-format`).
    pub log_format: Option<crate::logging::LogFormat>,
    /// Grant page filtering to clients that ask (default true).
    pub page_filtering: Option<bool>,
    #[serde(default)]
    pub hooks: HooksSection,
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub dedup: DedupSection,
    #[serde(default)]
    pub analysis: AnalysisSection,
    #[serde(default)]
    pub netconsole: NetconsoleSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub encryption: EncryptionSection,
    #[serde(default)]
    pub upload: UploadSection,
}

/// `[upload]`: finished dumps shipped to an S3-compatible bucket ([`crate::upload`]).
/// Any key set needs `bucket`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSection {
    /// `https://s3.example.net`, `http://127.0.0.1:9000`; none: AWS by region.
    pub endpoint: Option<String>,
    pub bucket: Option<String>,
    /// Keys start `<prefix>/` (default `netdump`; `""` for none).
    pub prefix: Option<String>,
    /// Default `us-east-1`.
    pub region: Option<String>,
    /// This server's name in the keys (default: the host name).
    pub server_name: Option<String>,
    /// TOML with `access_key_id` and `secret_access_key`, mode 0600; none: the
    /// environment's `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub credentials_file: Option<PathBuf>,
    /// Allow a plain `http://` endpoint (default false).
    pub allow_http: Option<bool>,
    /// Multipart part size, at least 5 (default 8).
    pub part_size_mib: Option<u64>,
    /// Longest wait between attempts at a dump's upload (default 300).
    pub max_backoff_seconds: Option<u64>,
    /// How long each request is retried before the attempt fails (default 60).
    pub retry_timeout_seconds: Option<u64>,
    /// How often pending uploads are looked for in the dump directory (default 60).
    pub rescan_seconds: Option<u64>,
}

impl UploadSection {
    fn is_empty(&self) -> bool {
        *self == UploadSection::default()
    }

    fn apply(&self, c: &mut ServerConfig) -> anyhow::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let bucket = match (&self.bucket, &c.upload) {
            (Some(b), _) => b.clone(),
            (None, Some(u)) => u.bucket.clone(),
            (None, None) => anyhow::bail!("upload.bucket is required in [upload]"),
        };
        anyhow::ensure!(!bucket.is_empty(), "upload.bucket must not be empty");
        let mut u = c.upload.take().unwrap_or_else(|| crate::upload::UploadConfig::new(&bucket));
        u.bucket = bucket;
        if self.endpoint.is_some() {
            u.endpoint.clone_from(&self.endpoint);
        }
        if let Some(v) = &self.prefix {
            u.prefix = v.trim_matches('/').to_string();
        }
        if let Some(v) = &self.region {
            u.region = v.clone();
        }
        if let Some(v) = &self.server_name {
            anyhow::ensure!(
                crate::upload::settings::valid_part(v),
                "upload.server_name {v:?}: letters, digits, - _ . only"
            );
            u.server_name = v.clone();
        }
        if self.credentials_file.is_some() {
            u.credentials_file.clone_from(&self.credentials_file);
        }
        if let Some(v) = self.allow_http {
            u.allow_http = v;
        }
        if let Some(v) = self.part_size_mib {
            anyhow::ensure!((5..=4096).contains(&v), "upload.part_size_mib must be 5..=4096");
            u.part_size = (v << 20) as usize;
        }
        if let Some(v) = self.max_backoff_seconds {
            u.max_backoff = Duration::from_secs(v.max(1));
        }
        if let Some(v) = self.retry_timeout_seconds {
            u.request_retry_timeout = Duration::from_secs(v);
        }
        if let Some(v) = self.rescan_seconds {
            u.rescan_interval = Duration::from_secs(v.max(1));
        }
        c.upload = Some(u);
        Ok(())
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionSection {
    /// Private key files; relative paths are taken from the working directory.
    #[serde(default)]
    pub private_keys: Vec<PathBuf>,
    pub require_encryption: Option<bool>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSection {
    pub register: Option<PathBuf>,
    pub crash: Option<PathBuf>,
    pub nospace: Option<PathBuf>,
    pub finished: Option<PathBuf>,
    /// Seconds the crash and nospace hooks may run (the client waits for them).
    pub decision_timeout: Option<u64>,
    /// Seconds the register and finished hooks may run.
    pub timeout: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    pub max_dumps_per_client: Option<usize>,
    pub max_mib_per_client: Option<u64>,
    pub max_total_mib: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSection {
    /// `keep-all` or `skip-memory`.
    pub policy: Option<String>,
    /// For `skip-memory`: a repeat within this many days skips its memory image.
    pub within_days: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSection {
    /// The kernel ELF of clients without their own entry in `kernels`.
    pub kernel: Option<PathBuf>,
    #[serde(default)]
    pub kernels: BTreeMap<String, PathBuf>,
    /// A directory of kernel builds, matched to a dump by GNU build ID.
    pub builds: Option<PathBuf>,
    pub gdb: Option<PathBuf>,
    /// Seconds gdb may run.
    pub timeout: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetconsoleSection {
    /// Where to receive netconsole (syslog) lines, e.g. "0.0.0.0:514".
    pub listen: Option<SocketAddr>,
    /// Clients with a console log at most; lines naming one more are dropped.
    pub max_clients: Option<u64>,
    /// MiB a console log grows to before it is rotated.
    pub max_log_mib: Option<u64>,
}

/// `[limits]`: what a stranger on the network can make the server hold or do
/// ([`crate::limits::Limits`]).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_clients: Option<u64>,
    pub max_retired: Option<u64>,
    pub hellos_per_second: Option<u32>,
    pub hellos_per_source_per_second: Option<u32>,
    pub crashes_per_second: Option<u32>,
    pub max_dump_gib: Option<u64>,
    pub max_hook_processes: Option<u64>,
    pub max_queued_jobs: Option<u64>,
    pub log_lines_per_second: Option<u32>,
    pub max_signatures: Option<u64>,
    pub max_excluded_runs: Option<u64>,
    pub max_receive_mib: Option<u64>,
}

impl LimitsSection {
    fn apply(&self, l: &mut crate::limits::Limits) -> anyhow::Result<()> {
        fn count(name: &str, v: Option<u64>, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<Option<usize>> {
            match v {
                Some(v) if !range.contains(&v) => {
                    anyhow::bail!("limits.{name} must be {}..={}", range.start(), range.end())
                }
                v => Ok(v.map(|v| v as usize)),
            }
        }
        fn rate(name: &str, v: Option<u32>) -> anyhow::Result<Option<u32>> {
            anyhow::ensure!(v != Some(0), "limits.{name} must be at least 1");
            Ok(v)
        }
        if let Some(v) = count("max_clients", self.max_clients, 1..=1 << 20)? {
            l.max_clients = v;
        }
        if let Some(v) = count("max_retired", self.max_retired, 0..=1 << 22)? {
            l.max_retired = v;
        }
        if let Some(v) = rate("hellos_per_second", self.hellos_per_second)? {
            l.hellos_per_second = v;
        }
        if let Some(v) = rate("hellos_per_source_per_second", self.hellos_per_source_per_second)? {
            l.hellos_per_source_per_second = v;
        }
        if let Some(v) = rate("crashes_per_second", self.crashes_per_second)? {
            l.crashes_per_second = v;
        }
        if let Some(v) = self.max_dump_gib {
            anyhow::ensure!(v >= 1, "limits.max_dump_gib must be at least 1");
            l.max_dump_bytes = v.saturating_mul(1 << 30);
        }
        if let Some(v) = count("max_hook_processes", self.max_hook_processes, 1..=256)? {
            l.max_hook_processes = v;
        }
        if let Some(v) = count("max_queued_jobs", self.max_queued_jobs, 1..=1 << 16)? {
            l.max_queued_jobs = v;
        }
        if let Some(v) = rate("log_lines_per_second", self.log_lines_per_second)? {
            l.log_lines_per_second = v;
        }
        if let Some(v) = count("max_signatures", self.max_signatures, 1..=1 << 20)? {
            l.max_signatures = v;
        }
        if let Some(v) = count("max_excluded_runs", self.max_excluded_runs, 1..=1 << 24)? {
            l.max_excluded_runs = v;
        }
        if let Some(v) = count("max_receive_mib", self.max_receive_mib, 1..=1 << 20)? {
            l.max_receive_bytes = (v as u64) << 20;
        }
        Ok(())
    }
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<ConfigFile> {
        Ok(toml::from_str(text)?)
    }

    /// Applies the file's settings on top of `config`.
    pub fn apply(&self, c: &mut ServerConfig) -> anyhow::Result<()> {
        let secs = Duration::from_secs;
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.dir {
            c.dump_dir = v.clone();
        }
        if let Some(v) = self.log_format {
            c.log_format = Some(v);
        }
        if let Some(v) = self.session_timeout {
            anyhow::ensure!(v > 0, "session_timeout must be at least 1 second");
            c.session_timeout = secs(v);
        }
        if let Some(v) = &self.after_dump {
            c.after_dump = parse_after_dump(v)?;
        }
        if let Some(v) = self.min_free_mib {
            c.min_free_bytes = v.saturating_mul(MIB);
        }
        if let Some(v) = self.max_sessions {
            anyhow::ensure!((1..=4096).contains(&v), "max_sessions must be 1..=4096");
            c.max_sessions = v as usize;
        }
        if let Some(v) = self.max_memory_dumps {
            anyhow::ensure!(v >= 1, "max_memory_dumps must be at least 1");
            c.max_memory_dumps = v as usize;
        }
        if let Some(v) = self.progress_interval {
            c.progress_interval = secs(v.max(1));
        }
        if let Some(v) = self.page_filtering {
            c.page_filtering = v;
        }
        let h = &self.hooks;
        let hooks: &mut HookConfig = &mut c.hooks;
        for (slot, v) in [
            (&mut hooks.register, &h.register),
            (&mut hooks.crash, &h.crash),
            (&mut hooks.nospace, &h.nospace),
            (&mut hooks.finished, &h.finished),
        ] {
            if v.is_some() {
                slot.clone_from(v);
            }
        }
        if let Some(v) = h.decision_timeout {
            hooks.decision_timeout = secs(v);
        }
        if let Some(v) = h.timeout {
            hooks.timeout = secs(v);
        }
        let r = &self.retention;
        let retention: &mut RetentionConfig = &mut c.retention;
        if r.max_dumps_per_client.is_some() {
            retention.max_dumps_per_client = r.max_dumps_per_client;
        }
        if let Some(v) = r.max_mib_per_client {
            retention.max_bytes_per_client = Some(v.saturating_mul(MIB));
        }
        if let Some(v) = r.max_total_mib {
            retention.max_total_bytes = Some(v.saturating_mul(MIB));
        }
        if self.dedup.policy.is_some() || self.dedup.within_days.is_some() {
            c.dedup = parse_dedup(self.dedup.policy.as_deref().unwrap_or("skip-memory"), self.dedup.within_days)?;
        }
        let a = &self.analysis;
        let analysis: &mut AnalysisConfig = &mut c.analysis;
        if a.kernel.is_some() {
            analysis.kernel.clone_from(&a.kernel);
        }
        analysis.kernels.extend(a.kernels.iter().map(|(k, v)| (k.clone(), v.clone())));
        if a.builds.is_some() {
            analysis.builds.clone_from(&a.builds);
        }
        if let Some(v) = &a.gdb {
            analysis.gdb = v.clone();
        }
        if let Some(v) = a.timeout {
            analysis.timeout = secs(v);
        }
        if self.netconsole.listen.is_some() {
            c.syslog_listen = self.netconsole.listen;
        }
        if let Some(v) = self.netconsole.max_clients {
            anyhow::ensure!((1..=1 << 20).contains(&v), "netconsole.max_clients must be 1..=1048576");
            c.syslog_limits.max_clients = v as usize;
        }
        if let Some(v) = self.netconsole.max_log_mib {
            anyhow::ensure!(v >= 1, "netconsole.max_log_mib must be at least 1");
            c.syslog_limits.max_log_bytes = v.saturating_mul(MIB);
        }
        self.limits.apply(&mut c.limits)?;
        c.encryption.private_keys.extend(self.encryption.private_keys.iter().cloned());
        if let Some(v) = self.encryption.require_encryption {
            c.encryption.require_encryption = v;
        }
        self.upload.apply(c)?;
        c.retention.keep_until_uploaded = c.upload.is_some();
        Ok(())
    }
}

pub fn parse_after_dump(v: &str) -> anyhow::Result<AfterDump> {
    match v {
        "reboot" => Ok(AfterDump::Reboot),
        "halt" => Ok(AfterDump::Halt),
        other => anyhow::bail!("after_dump must be \"reboot\" or \"halt\", not {other:?}"),
    }
}

/// `keep-all`, or `skip-memory` with a window in days (7 unless given).
pub fn parse_dedup(policy: &str, within_days: Option<u64>) -> anyhow::Result<DedupPolicy> {
    match policy {
        "keep-all" => Ok(DedupPolicy::KeepAll),
        "skip-memory" => Ok(DedupPolicy::SkipMemoryWithin(Duration::from_secs(within_days.unwrap_or(7) * 86400))),
        other => anyhow::bail!("dedup policy must be \"keep-all\" or \"skip-memory\", not {other:?}"),
    }
}

/// What `check-config` finds wrong with a resolved configuration (empty: fine).
/// `require_encryption` with no key: no client could register.
pub const REQUIRE_WITHOUT_KEYS: &str =
    "encryption.require_encryption is set but encryption.private_keys is empty: no client could register";

pub fn problems(c: &ServerConfig) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for (name, path) in [
        ("register", &c.hooks.register),
        ("crash", &c.hooks.crash),
        ("nospace", &c.hooks.nospace),
        ("finished", &c.hooks.finished),
    ] {
        let Some(p) = path else { continue };
        match std::fs::metadata(p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
            Ok(_) => out.push(format!("hooks.{name}: {} is not an executable file", p.display())),
            Err(e) => out.push(format!("hooks.{name}: {}: {e}", p.display())),
        }
    }
    let kernels = c.analysis.kernel.iter().map(|k| ("analysis.kernel".to_string(), k));
    let per_client = c.analysis.kernels.iter().map(|(n, k)| (format!("analysis.kernels.{n}"), k));
    for (what, k) in kernels.chain(per_client) {
        match std::fs::read(k).map(|b| b.starts_with(b"\x7fELF")) {
            Ok(true) => {}
            Ok(false) => out.push(format!("{what}: {} is not an ELF file", k.display())),
            Err(e) => out.push(format!("{what}: {}: {e}", k.display())),
        }
    }
    if let Some(b) = &c.analysis.builds
        && !b.is_dir()
    {
        out.push(format!("analysis.builds: {} is not a directory", b.display()));
    }
    for name in c.analysis.kernels.keys() {
        if !netdump_core::proto::valid_name(name.as_bytes()) {
            out.push(format!("analysis.kernels: {name:?} is not a valid client name"));
        }
    }
    if c.analysis.enabled() && which(&c.analysis.gdb).is_none() {
        out.push(format!("analysis.gdb: {} not found", c.analysis.gdb.display()));
    }
    if let Err(e) = crate::keys::ServerKeys::load(&c.encryption.private_keys) {
        out.push(format!("encryption.private_keys: {e:#}"));
    }
    if c.encryption.require_encryption && c.encryption.private_keys.is_empty() {
        out.push(REQUIRE_WITHOUT_KEYS.to_string());
    }
    if let Some(u) = &c.upload {
        out.extend(u.problems());
    }
    if c.max_memory_dumps > c.max_sessions {
        out.push(format!("max_memory_dumps ({}) exceeds max_sessions ({})", c.max_memory_dumps, c.max_sessions));
    }
    if c.hooks.crash.is_some() || c.hooks.nospace.is_some() {
        let both = c.hooks.decision_timeout * 2;
        if both >= Duration::from_secs(10) {
            out.push(format!(
                "hooks.decision_timeout: crash and nospace hooks may delay the DECISION {} s, not below the client's default announce timeout of 10 s",
                both.as_secs()
            ));
        }
    }
    match std::fs::metadata(&c.dump_dir) {
        Ok(m) if m.is_dir() => {
            if let Err(e) = tempfile_in(&c.dump_dir) {
                out.push(format!("dir: {} is not writable: {e}", c.dump_dir.display()));
            }
        }
        Ok(_) => out.push(format!("dir: {} is not a directory", c.dump_dir.display())),
        // Created at start, if its parent allows.
        Err(_) => {}
    }
    out
}

fn tempfile_in(dir: &Path) -> std::io::Result<()> {
    let p = dir.join(format!(".netdumpd-check-{}", std::process::id()));
    std::fs::write(&p, b"")?;
    std::fs::remove_file(&p)
}

/// The program's path: as given when it has a `/`, else searched in `$PATH`.
fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.exists().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join(program)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_config_parses_and_sets_every_section() {
        let text = include_str!("../contrib/netdumpd.toml");
        let file = ConfigFile::parse(text).unwrap();
        let mut c = ServerConfig::default();
        file.apply(&mut c).unwrap();
        assert_eq!(c.dump_dir, PathBuf::from("/var/lib/netdump"));
        // The sample ships its hooks commented out, so that it passes check-config as is.
        assert_eq!(c.hooks, HookConfig::default());
        assert_eq!(c.retention.max_dumps_per_client, Some(5));
        assert_eq!(c.retention.max_total_bytes, Some(100 << 30));
        assert_eq!(c.dedup, DedupPolicy::SkipMemoryWithin(Duration::from_secs(7 * 86400)));
        assert_eq!(c.syslog_listen, Some("0.0.0.0:514".parse().unwrap()));
        assert_eq!(c.max_memory_dumps, 4);
        // Every limit written out, at its default.
        assert_eq!(c.limits, crate::limits::Limits::default());
        assert_eq!(text.matches("\n[limits]").count(), 1);
        let keys = text.split("\n[limits]").nth(1).unwrap().lines().filter(|l| l.contains(" = ")).count();
        assert_eq!(keys, 12, "one line per field of Limits");
        // Encryption is shown, commented out (a key file must exist to pass check-config).
        assert_eq!(c.encryption, EncryptionConfig::default());
        assert!(text.contains("# private_keys = [") && text.contains("# require_encryption = false"));
    }

    #[test]
    fn the_encryption_section_takes_several_keys_and_the_requirement() {
        let text = "[encryption]\nprivate_keys = [\"/k/old.key\", \"/k/new.key\"]\nrequire_encryption = true\n";
        let mut c = ServerConfig::default();
        ConfigFile::parse(text).unwrap().apply(&mut c).unwrap();
        assert_eq!(c.encryption.private_keys, [PathBuf::from("/k/old.key"), PathBuf::from("/k/new.key")]);
        assert!(c.encryption.require_encryption);
        // Missing files, and a requirement without keys, are problems check-config names.
        let found = problems(&c);
        assert!(found.iter().any(|p| p.starts_with("encryption.private_keys: private key /k/old.key")), "{found:?}");
        let c = ServerConfig {
            encryption: EncryptionConfig { private_keys: vec![], require_encryption: true },
            ..ServerConfig::default()
        };
        assert!(problems(&c).iter().any(|p| p == REQUIRE_WITHOUT_KEYS));
        assert!(ConfigFile::parse("[encryption]\nprivate_key = \"/k\"\n").is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_upload_section_needs_a_bucket_and_keeps_dumps_until_uploaded() {
        assert!(
            ConfigFile::parse("[upload]\nendpoint = \"http://h:1\"\n")
                .unwrap()
                .apply(&mut ServerConfig::default())
                .is_err()
        );
        let text = "[upload]\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"dumps\"\nprefix = \"/fleet/a/\"\n\
                    server_name = \"srv-2\"\nallow_http = true\npart_size_mib = 16\n";
        let mut c = ServerConfig::default();
        ConfigFile::parse(text).unwrap().apply(&mut c).unwrap();
        let u = c.upload.as_ref().unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str(), u.server_name.as_str()), ("dumps", "fleet/a", "srv-2"));
        assert_eq!(u.part_size, 16 << 20);
        assert!(u.allow_http);
        assert!(c.retention.keep_until_uploaded);
        for bad in ["part_size_mib = 1", "server_name = \"a/b\"", "bucket = \"\"", "no_such_key = 1"] {
            let text = format!("[upload]\nbucket = \"b\"\n{bad}\n");
            let bad_config = ConfigFile::parse(&text).and_then(|f| f.apply(&mut ServerConfig::default()));
            assert!(bad_config.is_err(), "{bad}");
        }
        // An empty section is no upload.
        let mut c = ServerConfig::default();
        ConfigFile::parse("[upload]\n").unwrap().apply(&mut c).unwrap();
        assert!(c.upload.is_none() && !c.retention.keep_until_uploaded);
    }

    #[test]
    fn an_empty_file_changes_nothing() {
        let mut c = ServerConfig::default();
        ConfigFile::parse("").unwrap().apply(&mut c).unwrap();
        assert_eq!(c, ServerConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(ConfigFile::parse("lisen = \"0.0.0.0:1\"").is_err());
        assert!(ConfigFile::parse("[hooks]\ncrashh = \"/x\"").is_err());
        let mut c = ServerConfig::default();
        assert!(ConfigFile::parse("after_dump = \"explode\"").unwrap().apply(&mut c).is_err());
        assert!(ConfigFile::parse("[dedup]\npolicy = \"sometimes\"").unwrap().apply(&mut c).is_err());
        assert!(ConfigFile::parse("max_sessions = 0").unwrap().apply(&mut c).is_err());
    }

    #[test]
    fn log_format_is_a_key_with_the_flag_s_values() {
        use crate::logging::LogFormat;
        let mut c = ServerConfig::default();
        assert_eq!(c.log_format, None, "unset: the journal or text, as stderr says");
        ConfigFile::parse("log_format = \"json\"").unwrap().apply(&mut c).unwrap();
        assert_eq!(c.log_format, Some(LogFormat::Json));
        ConfigFile::parse("log_format = \"journald\"").unwrap().apply(&mut c).unwrap();
        assert_eq!(c.log_format, Some(LogFormat::Journald));
        let e = ConfigFile::parse("log_format = \"xml\"").unwrap_err().to_string();
        assert!(e.contains("xml") || e.contains("unknown variant"), "{e}");
    }

    #[test]
    fn problems_name_missing_hooks_and_kernels() {
        let mut c = ServerConfig { dump_dir: std::env::temp_dir(), ..ServerConfig::default() };
        assert_eq!(problems(&c), Vec::<String>::new());
        c.hooks.crash = Some("/nonexistent/crash".into());
        c.analysis.kernel = Some("/nonexistent/kernel".into());
        let p = problems(&c);
        assert!(p.iter().any(|l| l.starts_with("hooks.crash: /nonexistent/crash")), "{p:?}");
        assert!(p.iter().any(|l| l.starts_with("analysis.kernel: /nonexistent/kernel")), "{p:?}");
    }

    #[test]
    fn limits_are_read_and_nonsense_is_refused() {
        let file = ConfigFile::parse("[limits]\nmax_clients = 10\nhellos_per_second = 5\nmax_dump_gib = 2\n").unwrap();
        let mut c = ServerConfig::default();
        file.apply(&mut c).unwrap();
        assert_eq!((c.limits.max_clients, c.limits.hellos_per_second), (10, 5));
        assert_eq!(c.limits.max_dump_bytes, 2 << 30);
        for bad in ["hellos_per_second = 0", "max_clients = 0", "max_hook_processes = 1000", "max_dump_gib = 0"] {
            let file = ConfigFile::parse(&format!("[limits]\n{bad}\n")).unwrap();
            assert!(file.apply(&mut ServerConfig::default()).is_err(), "{bad}");
        }
        assert!(ConfigFile::parse("[limits]\nno_such_limit = 1\n").is_err());
        let file = ConfigFile::parse("[netconsole]\nmax_clients = 7\nmax_log_mib = 2\n").unwrap();
        let mut c = ServerConfig::default();
        file.apply(&mut c).unwrap();
        assert_eq!((c.syslog_limits.max_clients, c.syslog_limits.max_log_bytes), (7, 2 << 20));
    }
}
