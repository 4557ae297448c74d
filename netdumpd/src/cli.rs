//! Command-line options of the daemon and its admin subcommands.
//!
//! `netdumpd [flags]` (or `netdumpd run [flags]`) runs the server; `netdumpd list`,
//! `show <dump>` and `check-config` look at a dump directory and a configuration. Every
//! setting comes from a flag, else the `--config` file, else its default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ServerConfig;
use crate::config::{
    AnalysisSection, ConfigFile, DedupSection, EncryptionSection, HooksSection, NetconsoleSection, RetentionSection,
};

/// What a client does once its dump is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AfterDumpArg {
    /// Reboot the crashed machine.
    Reboot,
    /// Halt it (keep it as it is for a person to look at).
    Halt,
}

/// netdumpd: receives crash dumps from kernels over UDP and writes vmcores.
///
/// Each crash gets a directory `<DIR>/<client>-<UTC YYYYMMDD-HHMMSS>/` holding
/// `vmcore` (or `vmcore-incomplete`; none when the memory image was skipped), `log`,
/// `registers`, `extra`, `info.json` and `analysis.txt`; registered clients are kept in
/// `<DIR>/clients.json`, the newest dump of each in the link `<DIR>/<client>.last`.
#[derive(Debug, Clone, Parser)]
#[command(name = "netdumpd", version)]
pub struct Cli {
    /// Configuration file (TOML; see contrib/netdumpd.toml). Flags override it.
    #[arg(long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,

    /// Directory for dumps and the client registry (created if missing)
    /// [default: /var/crash/netdump].
    #[arg(long, value_name = "PATH", global = true)]
    pub dir: Option<PathBuf>,

    /// UDP address and port to listen on [default: 0.0.0.0:6666].
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Seconds of silence after which a dump in progress is marked incomplete [default: 60].
    #[arg(long, global = true, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub session_timeout: Option<u64>,

    /// What the client is told to do after its dump [default: reboot].
    #[arg(long, global = true, value_enum)]
    pub after_dump: Option<AfterDumpArg>,

    /// MiB to keep free on the dump file system: a dump that does not fit beside this
    /// reserve gets only its log and registers taken (SKIP_MEMORY) [default: 64].
    #[arg(long, global = true, value_name = "MIB")]
    pub min_free: Option<u64>,

    /// Dumps received at the same time; one more crash is told to abort [default: 16].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_sessions: Option<u64>,

    /// Memory images received at the same time; beyond, a crash sends its log and
    /// registers only [default: 16].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_memory_dumps: Option<u64>,

    /// Hook run when a client registers: `HOOK <client-ip> <name>`.
    #[arg(long, global = true, value_name = "PATH")]
    pub hook_register: Option<PathBuf>,

    /// Hook run when a crash is announced: `HOOK <client-ip> <dump-dir>`; exit status 1
    /// skips the memory image.
    #[arg(long, global = true, value_name = "PATH")]
    pub hook_crash: Option<PathBuf>,

    /// Hook run once when a dump does not fit: `HOOK <client-ip> <dump-dir>`; free space
    /// is checked again after it.
    #[arg(long, global = true, value_name = "PATH")]
    pub hook_nospace: Option<PathBuf>,

    /// Hook run when a dump ended: `HOOK <outcome> <client-ip> <dump-dir>`.
    #[arg(long, global = true, value_name = "PATH")]
    pub hook_finished: Option<PathBuf>,

    /// Seconds the crash and nospace hooks may run (the client waits) [default: 4].
    #[arg(long, global = true, value_name = "SECONDS")]
    pub hook_decision_timeout: Option<u64>,

    /// Seconds the register and finished hooks may run [default: 60].
    #[arg(long, global = true, value_name = "SECONDS")]
    pub hook_timeout: Option<u64>,

    /// Dumps kept per client (oldest removed first).
    #[arg(long, global = true, value_name = "N")]
    pub max_dumps_per_client: Option<usize>,

    /// MiB of dumps kept per client.
    #[arg(long, global = true, value_name = "MIB")]
    pub max_mib_per_client: Option<u64>,

    /// MiB of all dumps kept.
    #[arg(long, global = true, value_name = "MIB")]
    pub max_total_mib: Option<u64>,

    /// Skip the memory image of a crash whose signature has a dump with memory from the
    /// last DAYS days (the occurrence is still recorded). 0 keeps every image.
    #[arg(long, global = true, value_name = "DAYS")]
    pub dedup_days: Option<u64>,

    /// Kernel ELF to analyse every client's dump with (gdb writes analysis.txt).
    #[arg(long, global = true, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Directory of kernel builds: a dump is analysed with the one whose GNU build ID its
    /// vmcore holds.
    #[arg(long, global = true, value_name = "PATH")]
    pub kernel_builds: Option<PathBuf>,

    /// Receive netconsole lines (UDP syslog) here, into `<DIR>/console/<client>.log`.
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    pub netconsole_listen: Option<SocketAddr>,

    /// Log filter, in tracing's env-filter syntax: error, warn, info, debug, trace, or
    /// e.g. `netdumpd=debug`. Defaults to $RUST_LOG, else `info`.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// A private key file for encrypted dumps (`netdumpd keygen`); repeat for several
    /// (key rotation). Added to `[encryption] private_keys`.
    #[arg(long = "private-key", global = true, value_name = "PATH")]
    pub private_keys: Vec<PathBuf>,

    /// Refuse clients that do not encrypt (needs a private key).
    #[arg(long, global = true)]
    pub require_encryption: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Run,
    /// List the dumps: client, dump, status, size, signature, age.
    List {
        /// Machine-readable output (a JSON array, one object per dump).
        #[arg(long)]
        json: bool,
    },
    /// Show one dump: its info, the tail of its log, its analysis. DUMP is a directory
    /// name, a path, or a client name (its newest dump).
    Show {
        /// A dump directory's name, its path, or a client name (its newest dump).
        dump: String,
        /// Lines of the console log to show.
        #[arg(long, default_value_t = 20)]
        lines: usize,
        /// Machine-readable output (one JSON object).
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration: parse it, resolve it with the flags, and look at every
    /// hook, kernel and directory it names. Exits 1 when something is wrong.
    CheckConfig {
        /// Machine-readable output (one JSON object).
        #[arg(long)]
        json: bool,
    },
    /// Make a key pair for encrypted dumps: the private key goes to a new file (0600;
    /// an existing file is never overwritten), the public key, for the kernels'
    /// configuration, is printed.
    Keygen {
        /// The private key file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

impl Cli {
    /// The configuration: defaults, then the file, then the flags.
    pub fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let mut c = ServerConfig::default();
        if let Some(path) = &self.config {
            ConfigFile::load(path)?.apply(&mut c)?;
        }
        self.apply_flags(&mut c)?;
        Ok(c)
    }

    /// The log filter: the flag, else the file's `log_level`.
    pub fn log_level(&self) -> anyhow::Result<Option<String>> {
        if self.log_level.is_some() {
            return Ok(self.log_level.clone());
        }
        match &self.config {
            Some(path) => Ok(ConfigFile::load(path)?.log_level),
            None => Ok(None),
        }
    }

    fn apply_flags(&self, c: &mut ServerConfig) -> anyhow::Result<()> {
        self.as_config_file().apply(c)
    }

    /// The flags given, as the file would say them: one way to apply both.
    fn as_config_file(&self) -> ConfigFile {
        let after_dump = self.after_dump.map(|a| match a {
            AfterDumpArg::Reboot => "reboot".to_string(),
            AfterDumpArg::Halt => "halt".to_string(),
        });
        let policy = self.dedup_days.map(|d| if d == 0 { "keep-all" } else { "skip-memory" }.to_string());
        ConfigFile {
            listen: self.listen,
            dir: self.dir.clone(),
            session_timeout: self.session_timeout,
            after_dump,
            min_free_mib: self.min_free,
            max_sessions: self.max_sessions,
            max_memory_dumps: self.max_memory_dumps,
            progress_interval: None,
            log_level: self.log_level.clone(),
            page_filtering: None,
            hooks: HooksSection {
                register: self.hook_register.clone(),
                crash: self.hook_crash.clone(),
                nospace: self.hook_nospace.clone(),
                finished: self.hook_finished.clone(),
                decision_timeout: self.hook_decision_timeout,
                timeout: self.hook_timeout,
            },
            retention: RetentionSection {
                max_dumps_per_client: self.max_dumps_per_client,
                max_mib_per_client: self.max_mib_per_client,
                max_total_mib: self.max_total_mib,
            },
            dedup: DedupSection { policy, within_days: self.dedup_days.filter(|d| *d > 0) },
            analysis: AnalysisSection {
                kernel: self.kernel.clone(),
                builds: self.kernel_builds.clone(),
                ..AnalysisSection::default()
            },
            netconsole: NetconsoleSection { listen: self.netconsole_listen, ..Default::default() },
            limits: Default::default(),
            encryption: EncryptionSection {
                private_keys: self.private_keys.clone(),
                require_encryption: self.require_encryption.then_some(true),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::DedupPolicy;
    use clap::CommandFactory;
    use netdump_core::proto::AfterDump;
    use std::time::Duration;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_server_defaults() {
        let cli = Cli::parse_from(["netdumpd"]);
        assert_eq!(cli.server_config().unwrap(), ServerConfig::default());
        assert_eq!(cli.log_level, None);
        assert!(cli.command.is_none());
    }

    #[test]
    fn every_flag_reaches_the_config() {
        let cli = Cli::parse_from([
            "netdumpd",
            "--listen",
            "127.0.0.1:7000",
            "--dir",
            "./crash",
            "--session-timeout",
            "5",
            "--after-dump",
            "halt",
            "--min-free",
            "1",
            "--max-sessions",
            "2",
            "--max-memory-dumps",
            "1",
            "--hook-crash",
            "/h/crash",
            "--hook-finished",
            "/h/finished",
            "--hook-decision-timeout",
            "2",
            "--max-dumps-per-client",
            "3",
            "--max-total-mib",
            "10",
            "--dedup-days",
            "2",
            "--kernel",
            "/k.elf",
            "--kernel-builds",
            "/builds",
            "--netconsole-listen",
            "127.0.0.1:5514",
            "--log-level",
            "debug",
            "--private-key",
            "/k/a",
            "--private-key",
            "/k/b",
            "--require-encryption",
        ]);
        let c = cli.server_config().unwrap();
        assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(c.dump_dir, PathBuf::from("./crash"));
        assert_eq!(c.session_timeout, Duration::from_secs(5));
        assert_eq!(c.after_dump, AfterDump::Halt);
        assert_eq!(c.min_free_bytes, 1 << 20);
        assert_eq!(c.max_sessions, 2);
        assert_eq!(c.max_memory_dumps, 1);
        assert_eq!(c.hooks.crash, Some(PathBuf::from("/h/crash")));
        assert_eq!(c.hooks.finished, Some(PathBuf::from("/h/finished")));
        assert_eq!(c.hooks.decision_timeout, Duration::from_secs(2));
        assert_eq!(c.retention.max_dumps_per_client, Some(3));
        assert_eq!(c.retention.max_total_bytes, Some(10 << 20));
        assert_eq!(c.dedup, DedupPolicy::SkipMemoryWithin(Duration::from_secs(2 * 86400)));
        assert_eq!(c.analysis.kernel, Some(PathBuf::from("/k.elf")));
        assert_eq!(c.analysis.builds, Some(PathBuf::from("/builds")));
        assert_eq!(c.syslog_listen, Some("127.0.0.1:5514".parse().unwrap()));
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
        assert_eq!(c.encryption.private_keys, [PathBuf::from("/k/a"), PathBuf::from("/k/b")]);
        assert!(c.encryption.require_encryption);
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = crate::test_dir::TestDir::new("cli-config");
        let file = dir.path().join("n.toml");
        std::fs::write(&file, "dir = \"/from/file\"\nmax_sessions = 3\nlog_level = \"warn\"\n").unwrap();
        let path = file.to_str().unwrap();
        let cli = Cli::parse_from(["netdumpd", "--config", path, "--dir", "/from/flag"]);
        let c = cli.server_config().unwrap();
        assert_eq!((c.dump_dir, c.max_sessions), (PathBuf::from("/from/flag"), 3));
        assert_eq!(cli.log_level().unwrap().as_deref(), Some("warn"));
        // Subcommands take the global options after them too.
        let cli = Cli::parse_from(["netdumpd", "list", "--config", path, "--json"]);
        assert!(matches!(cli.command, Some(Command::List { json: true })));
        assert_eq!(cli.server_config().unwrap().dump_dir, PathBuf::from("/from/file"));
    }

    #[test]
    fn nonsense_is_refused() {
        assert!(Cli::try_parse_from(["netdumpd", "--after-dump", "explode"]).is_err());
        assert!(Cli::try_parse_from(["netdumpd", "--session-timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["netdumpd", "--listen", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["netdumpd", "show"]).is_err(), "show needs a dump");
        let cli = Cli::parse_from(["netdumpd", "--config", "/nonexistent/netdumpd.toml"]);
        assert!(cli.server_config().is_err());
    }

    #[test]
    fn server_flags_work_after_run_as_the_readme_says() {
        let c =
            Cli::try_parse_from(["netdumpd", "run", "--listen", "127.0.0.1:7000", "--session-timeout", "5"]).unwrap();
        assert!(matches!(c.command, Some(Command::Run)));
        let config = c.server_config().unwrap();
        assert_eq!(config.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.session_timeout, std::time::Duration::from_secs(5));
        // And before it, as before.
        let c = Cli::try_parse_from(["netdumpd", "--listen", "127.0.0.1:7001", "run"]).unwrap();
        assert_eq!(c.server_config().unwrap().listen, "127.0.0.1:7001".parse().unwrap());
    }
}
